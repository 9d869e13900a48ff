//! KafkaConnector manifests: the platform's connector files load as shipped, broken ones are
//! reported with file and line, and names must agree. No server is needed.

mod support;

use std::path::{Path, PathBuf};

use support::{ofctl, platform_fixtures, ManifestDir};

const CONFIG: &str = "[connect]\nurl = \"http://127.0.0.1:1\"\n";

fn connector_doc(name: &str, spec_file: &str) -> String {
    format!(
        "apiVersion: ofctl.openframe.io/v1\nkind: KafkaConnector\nmetadata:\n  name: {name}\nspecFile: {spec_file}\n---\n"
    )
}

/// Every `*.json` / `*.json.invalid` connector fixture, by file name.
fn fixtures(suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let root = platform_fixtures("debezium");
    for dir in std::fs::read_dir(&root)
        .expect("debezium fixtures")
        .flatten()
    {
        for file in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = file.path();
            if path.to_string_lossy().ends_with(suffix) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `${NAME}` placeholders of a fixture (the register jobs' shell variables).
fn placeholders(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(n, _)| n.to_string()))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_valid_platform_fixture_loads_as_a_spec_file() {
    let files = fixtures(".json");
    assert_eq!(files.len(), 15, "{files:?}");
    // One ofctl run per fixture (versions of one connector share its name), side by side.
    std::thread::scope(|s| {
        for path in &files {
            s.spawn(move || validate_fixture(path));
        }
    });
}

fn validate_fixture(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let name = serde_json::from_str::<serde_json::Value>(&text).unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let m = ManifestDir::new();
    m.write("ofctl.toml", CONFIG)
        .write("c.json", &text)
        .write("c.yaml", &connector_doc(&name, "c.json"));
    let vars: Vec<String> = placeholders(&text)
        .into_iter()
        .map(|n| format!("{n}=x"))
        .collect();
    let mut args = vec!["validate", "-f", m.arg()];
    for v in &vars {
        args.extend(["--var", v.as_str()]);
    }
    let run = ofctl(&args, &[]);
    assert_eq!(run.code, 0, "{}: {run:?}", path.display());
}

#[test]
fn broken_platform_fixtures_name_file_line_and_column() {
    let files = fixtures(".json.invalid");
    assert_eq!(files.len(), 2, "{files:?}");
    let m = ManifestDir::new();
    m.write("ofctl.toml", CONFIG);
    let mut docs = String::new();
    for path in &files {
        let file = path.file_name().unwrap().to_str().unwrap();
        m.write(file, &std::fs::read_to_string(path).unwrap());
        let name = file.trim_end_matches(".json.invalid");
        docs += &connector_doc(name, file);
    }
    m.write("connectors.yaml", &docs);
    for cmd in ["validate", "plan"] {
        let run = ofctl(&[cmd, "-f", m.arg()], &[]);
        assert_eq!(run.code, 1, "{run:?}");
        // tenant@530144fc: a missing comma after line 12, found at the next key.
        assert!(
            run.stderr.contains(
                "meshcentral-mongo-connector.json.invalid:13:5: invalid JSON: expected `,` or `}`"
            ),
            "{run:?}"
        );
        // tenant@9c190cd7: a stray `"` after the table list on line 14.
        assert!(
            run.stderr.contains(
                "fleet-mysql-connector.json.invalid:14:122: invalid JSON: expected `,` or `}`"
            ),
            "{run:?}"
        );
        assert!(run.stderr.contains("2 error(s) in the manifest"), "{run:?}");
    }
}

#[test]
fn a_spec_file_name_that_differs_from_metadata_name_is_an_error_at_its_line() {
    let m = ManifestDir::new();
    m.write("ofctl.toml", CONFIG)
        .write(
            "pg.json",
            "{\n  \"name\": \"trmm-psql-connector\",\n  \"config\": {\n    \"connector.class\": \"io.debezium.connector.postgresql.PostgresConnector\",\n    \"name\": \"trmm-psql-connector\"\n  }\n}\n",
        )
        .write("c.yaml", &connector_doc("tactical-rmm-psql-connector", "pg.json"));
    let run = ofctl(&["validate", "-f", m.arg()], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("pg.json:2:11: spec.name: the connector name here is `trmm-psql-connector` but metadata.name is `tactical-rmm-psql-connector`"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("pg.json:5:13: spec.config.name:"),
        "{run:?}"
    );
}

#[test]
fn inline_specs_are_checked_against_the_schema() {
    let m = ManifestDir::new();
    m.write("ofctl.toml", CONFIG).write(
        "c.yaml",
        "apiVersion: ofctl.openframe.io/v1\nkind: KafkaConnector\nmetadata:\n  name: a\nspec:\n  state: halted\n  config:\n    tasks.max: 1\n    topic.prefix: has space\n    table.include.list: [a, b]\n",
    );
    let run = ofctl(&["validate", "-f", m.arg()], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    for expected in [
        "c.yaml:6:",
        "spec.state",
        "c.yaml:7:",
        "\"connector.class\" is a required property",
        "c.yaml:9:",
        "spec.config[\"topic.prefix\"]",
        "c.yaml:10:",
        "spec.config[\"table.include.list\"]",
    ] {
        assert!(run.stderr.contains(expected), "`{expected}`: {run:?}");
    }
}
