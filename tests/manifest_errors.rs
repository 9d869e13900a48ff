//! Bad manifests: every error names the file, the line and the field, and nothing is applied.
//! No server is needed: loading fails before any connection is made.

mod support;

use support::{ofctl, stream, ManifestDir};

const CONFIG: &str = "[nats]\nurl = \"nats://127.0.0.1:1\"\n";

fn check(m: &ManifestDir, expected: &[&str]) {
    for cmd in ["validate", "plan"] {
        let run = ofctl(&[cmd, "-f", m.arg()], &[]);
        assert_eq!(run.code, 1, "{cmd}: {run:?}");
        for e in expected {
            assert!(
                run.stderr.contains(e),
                "{cmd}: expected `{e}` in stderr: {run:?}"
            );
        }
    }
    let apply = ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]);
    assert_eq!(apply.code, 1, "{apply:?}");
    assert!(apply.stderr.contains("nothing was applied"), "{apply:?}");
}

#[test]
fn broken_yaml_names_file_and_line() {
    let m = ManifestDir::new();
    m.write("ofctl.toml", CONFIG).write(
        "bad.yaml",
        "apiVersion: ofctl.openframe.io/v1\nkind: NatsStream\nmetadata:\n  name: A\nspec:\n  subjects: [a.>\n  storage: file\n",
    );
    check(&m, &["bad.yaml:7:", "invalid YAML"]);
}

#[test]
fn schema_violations_name_line_and_field() {
    let m = ManifestDir::new();
    m.write("ofctl.toml", CONFIG).write(
        "s.yaml",
        &(stream("A", "  subjects: [a.>]\n  storage: disk")
            + &stream("B", "  subjects: [b.>]\n  max_msg: 10")),
    );
    check(
        &m,
        &[
            "s.yaml:7:",
            "spec.storage",
            "\"disk\" is not one of",
            "s.yaml:15:",
            "spec.max_msg",
            "unknown field `max_msg`",
        ],
    );
}

#[test]
fn errors_inside_one_form_of_a_spec_name_the_field() {
    // An IntegratedTool spec is the tool or the request body `{tool: ...}`: a typo inside the
    // body is reported at the field, not as "matches neither form".
    let m = ManifestDir::new();
    m.write("ofctl.toml", CONFIG).write(
        "t.yaml",
        "apiVersion: ofctl.openframe.io/v1\nkind: IntegratedTool\nmetadata:\n  name: x\nspec:\n  tool:\n    nmae: X\n",
    );
    check(
        &m,
        &[
            "t.yaml:7:",
            "spec.tool.nmae",
            "unknown field `nmae`; did you mean `name`?",
        ],
    );
}

#[test]
fn unresolved_placeholder_names_it() {
    let m = ManifestDir::new();
    m.write("ofctl.toml", CONFIG)
        .write("p.yaml", &stream("A", "  subjects:\n    - \"${region}.>\""));
    check(&m, &["p.yaml:7:", "spec.subjects[0]", "`${region}`"]);
    // The same manifest is valid once the variable is given.
    let run = ofctl(&["validate", "-f", m.arg(), "--var", "region=eu"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn unknown_kind_and_duplicates() {
    let m = ManifestDir::new();
    m.write("ofctl.toml", CONFIG)
        .write("a.yaml", &stream("A", "  subjects: [a.>]"))
        .write("b.yaml", &(stream("A", "  subjects: [b.>]") + "apiVersion: ofctl.openframe.io/v1\nkind: NatStream\nmetadata: {name: X}\nspec: {}\n"));
    check(
        &m,
        &[
            "b.yaml:4:",
            "duplicate resource NatsStream/A: already declared at",
            "a.yaml:1",
            "b.yaml:9:",
            "unknown kind `NatStream`",
        ],
    );
}

#[test]
fn missing_spec_and_bad_api_version() {
    let m = ManifestDir::new();
    m.write("ofctl.toml", CONFIG).write(
        "a.yaml",
        "apiVersion: v1\nkind: NatsStream\nmetadata:\n  name: A\n",
    );
    check(&m, &["a.yaml:1:", "apiVersion", "exactly one of `spec`"]);
}

#[test]
fn valid_manifests_validate() {
    for dir in ["desired-state", "examples/basic"] {
        let run = ofctl(
            &[
                "validate",
                "-f",
                &format!("{}/{dir}", env!("CARGO_MANIFEST_DIR")),
            ],
            support::DESIRED_STATE_SECRETS,
        );
        assert_eq!(run.code, 0, "{dir}: {run:?}");
    }
}
