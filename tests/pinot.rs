//! Pinot schemas and tables end to end: the real ofctl binary against the in-process Pinot
//! controller emulator (`ofctl::sandbox`, apis.md §1).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ofctl::sandbox::{FaultConfig, Sandbox};
use serde_json::{json, Value};
use support::{change, emulators, ofctl, repo_root, ManifestDir, Run};

const DEFAULT_URL: &str =
    "${env:OFCTL_PINOT_URL:-http://pinot-controller.datasources.svc.cluster.local:9000}";

/// The repo's target config aimed at the emulator: its `[pinot]` section (url replaced) and its
/// `[variables]`, which feed the placeholders. Other systems are left out, so `--prune` reads
/// only Pinot.
fn target_config(url: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("desired-state/ofctl.toml"))
        .expect("read desired-state/ofctl.toml");
    let section = |name: &str| -> String {
        let start = text
            .find(&format!("\n[{name}]\n"))
            .unwrap_or_else(|| panic!("desired-state/ofctl.toml has no [{name}]"));
        let rest = &text[start + 1..];
        let end = rest[1..].find("\n[").map_or(rest.len(), |i| i + 2);
        rest[..end].to_string()
    };
    let pinot = section("pinot");
    assert!(
        pinot.contains(DEFAULT_URL),
        "desired-state/ofctl.toml [pinot] url changed"
    );
    format!(
        "{}\n{}",
        pinot.replace(DEFAULT_URL, url),
        section("variables")
    )
}

/// desired-state/pinot as a manifest folder pointed at `url`.
fn desired_state(url: &str) -> ManifestDir {
    let m = ManifestDir::new();
    m.copy_from("desired-state/pinot")
        .write("ofctl.toml", &target_config(url));
    m
}

fn plan_json(m: &ManifestDir, extra: &[&str]) -> (Run, Value) {
    let mut args = vec!["plan", "-f", m.arg(), "--format", "json"];
    args.extend(extra);
    let run = ofctl(&args, &[]);
    assert!(run.code == 0 || run.code == 2, "{run:?}");
    let plan = run.json();
    (run, plan)
}

fn apply(m: &ManifestDir, extra: &[&str]) -> Run {
    let mut args = vec!["apply", "-f", m.arg(), "--auto-approve"];
    args.extend(extra);
    ofctl(&args, &[])
}

fn pointers(change: &Value) -> BTreeSet<String> {
    change["diff"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|f| f["pointer"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn http(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request to the emulator");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn get(sb: &Sandbox, path: &str) -> (u16, Value) {
    http(
        reqwest::Method::GET,
        format!("{}{path}", sb.pinot_url),
        None,
    )
    .await
}

/// Deletes the logs REALTIME table out of band, as somebody using the controller would.
async fn delete_logs_table(sb: &Sandbox) {
    let (status, _) = http(
        reqwest::Method::DELETE,
        format!("{}/tables/logs?type=realtime", sb.pinot_url),
        None,
    )
    .await;
    assert_eq!(status, 200);
}

fn edit_json(m: &ManifestDir, file: &str, edit: impl FnOnce(&mut Value)) {
    let path = m.path().join(file);
    let mut value: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read spec file")).unwrap();
    edit(&mut value);
    m.write(file, &serde_json::to_string_pretty(&value).unwrap());
}

fn columns(schema: &Value) -> Vec<String> {
    schema["dimensionFieldSpecs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_state_creates_then_plans_as_a_noop_with_four_reads() {
    let sb = emulators(None, Default::default()).await;
    let m = desired_state(&sb.pinot_url);

    let (_, plan) = plan_json(&m, &[]);
    assert_eq!(plan["summary"]["create"], 4, "{plan:#}");
    let devices = change(&plan, "PinotTable/devices_REALTIME");
    assert_eq!(devices["action"], "create");
    assert_eq!(devices["depends_on"], json!(["PinotSchema/devices"]));

    let run = apply(&m, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let (status, live) = get(&sb, "/tables/devices?type=realtime").await;
    assert_eq!(status, 200, "{live}");
    let table = &live["REALTIME"];
    assert_eq!(
        table["metadata"]["customConfigs"]["ofctl.openframe.io/managed-by"],
        "ofctl/default/default"
    );
    assert_eq!(table["tableName"], "devices_REALTIME");
    assert_eq!(table["segmentsConfig"]["replication"], "1");
    assert_eq!(
        table["tableIndexConfig"]["streamConfigs"]["stream.kafka.topic.name"],
        "devices-topic"
    );
    let (status, schema) = get(&sb, "/schemas/logs").await;
    assert_eq!(status, 200);
    assert!(columns(&schema).contains(&"tenantId".to_string()));

    // The shipped JSON round-trips through the controller's defaults: nothing to do, and
    // planning sends one GET per declared object and no write.
    let before = sb.stats.snapshot().pinot;
    let started = std::time::Instant::now();
    let again = ofctl(&["plan", "-f", m.arg()], &[]);
    let elapsed = started.elapsed();
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("No changes"), "{again:?}");
    let after = sb.stats.snapshot().pinot;
    assert_eq!(after.reads - before.reads, 4, "GETs for a no-op plan");
    assert_eq!(after.writes, before.writes, "a plan never writes");
    eprintln!("no-op plan of desired-state/pinot: 4 GETs, {elapsed:?}");
}

/// More declared objects than one round of concurrent GETs (here 4 at 1 in flight): the names
/// are listed first, so a first plan sends the two lists only, and a later plan GETs only the
/// objects that exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_declared_objects_are_listed_before_they_are_read() {
    let sb = emulators(None, Default::default()).await;
    let m = desired_state(&sb.pinot_url);
    m.write(
        "ofctl.toml",
        &format!(
            "[engine]\nconcurrency = 1\n\n{}",
            target_config(&sb.pinot_url)
        ),
    );
    let reads = || sb.stats.snapshot().pinot.reads;

    let before = reads();
    let (_, plan) = plan_json(&m, &[]);
    assert_eq!(plan["summary"]["create"], 4, "{plan:#}");
    assert_eq!(reads() - before, 2, "GET /schemas and GET /tables only");

    assert_eq!(apply(&m, &[]).code, 0);
    delete_logs_table(&sb).await;

    let before = reads();
    let (run, plan) = plan_json(&m, &[]);
    assert_eq!(run.code, 2);
    assert_eq!(plan["summary"]["create"], 1, "{plan:#}");
    assert_eq!(plan["summary"]["noop"], 3, "{plan:#}");
    assert_eq!(
        change(&plan, "PinotTable/logs_REALTIME")["action"],
        "create"
    );
    // The two lists, both schemas, and the one table left.
    assert_eq!(reads() - before, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_column_updates_in_place_and_removing_it_is_refused_until_forced() {
    let sb = emulators(None, Default::default()).await;
    let m = desired_state(&sb.pinot_url);
    assert_eq!(apply(&m, &[]).code, 0);

    edit_json(&m, "schema-devices.json", |s| {
        s["dimensionFieldSpecs"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "site", "dataType": "STRING", "singleValueField": true}));
    });
    let (run, plan) = plan_json(&m, &[]);
    assert_eq!(run.code, 2);
    assert_eq!(plan["summary"]["update"], 1, "{plan:#}");
    let c = change(&plan, "PinotSchema/devices");
    assert_eq!(c["action"], "update");
    assert!(c.get("blocked").is_none(), "{c:#}");
    assert_eq!(
        pointers(c),
        BTreeSet::from(["/dimensionFieldSpecs".to_string()])
    );
    assert_eq!(apply(&m, &[]).code, 0);
    let (_, live) = get(&sb, "/schemas/devices").await;
    assert!(columns(&live).contains(&"site".to_string()), "{live}");
    assert_eq!(ofctl(&["plan", "-f", m.arg()], &[]).code, 0);

    // Removing it again: refused with the column named, and apply writes nothing.
    edit_json(&m, "schema-devices.json", |s| {
        s["dimensionFieldSpecs"]
            .as_array_mut()
            .unwrap()
            .retain(|c| c["name"] != "site");
    });
    let (_, plan) = plan_json(&m, &[]);
    let c = change(&plan, "PinotSchema/devices");
    assert_eq!(c["action"], "update");
    assert!(
        c["blocked"]
            .as_str()
            .unwrap()
            .contains("ofctl.openframe.io/force"),
        "{c:#}"
    );
    assert_eq!(
        c["reasons"],
        json!(["column site removed (Pinot only allows adding columns)"])
    );
    let writes = sb.stats.snapshot().pinot.writes;
    let run = apply(&m, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("refused"), "{run:?}");
    assert_eq!(sb.stats.snapshot().pinot.writes, writes, "nothing applied");
    let (_, live) = get(&sb, "/schemas/devices").await;
    assert!(columns(&live).contains(&"site".to_string()));

    // The force annotation sends force=true and the column goes.
    let yaml = std::fs::read_to_string(m.path().join("pinot.yaml")).unwrap();
    m.write(
        "pinot.yaml",
        &yaml.replacen(
            "  name: devices\n",
            "  name: devices\n  annotations: {ofctl.openframe.io/force: \"true\"}\n",
            1,
        ),
    );
    let (_, plan) = plan_json(&m, &[]);
    let c = change(&plan, "PinotSchema/devices");
    assert_eq!(c["force"], true, "{c:#}");
    assert!(c.get("blocked").is_none());
    let run = apply(&m, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let (_, live) = get(&sb, "/schemas/devices").await;
    assert!(!columns(&live).contains(&"site".to_string()), "{live}");
    assert_eq!(ofctl(&["plan", "-f", m.arg()], &[]).code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_deleted_out_of_band_is_recreated() {
    let sb = emulators(None, Default::default()).await;
    let m = desired_state(&sb.pinot_url);
    assert_eq!(apply(&m, &[]).code, 0);
    delete_logs_table(&sb).await;

    let (run, plan) = plan_json(&m, &[]);
    assert_eq!(run.code, 2);
    assert_eq!(plan["summary"]["create"], 1, "{plan:#}");
    assert_eq!(plan["summary"]["noop"], 3);
    assert_eq!(
        change(&plan, "PinotTable/logs_REALTIME")["action"],
        "create"
    );
    assert_eq!(apply(&m, &[]).code, 0);
    let (status, live) = get(&sb, "/tables/logs?type=realtime").await;
    assert_eq!(status, 200);
    assert_eq!(
        live["REALTIME"]["metadata"]["customConfigs"]["ofctl.openframe.io/managed-by"],
        "ofctl/default/default"
    );
    assert_eq!(ofctl(&["plan", "-f", m.arg()], &[]).code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_name_that_disagrees_with_its_spec_is_a_manifest_error() {
    let sb = emulators(None, Default::default()).await;
    let m = desired_state(&sb.pinot_url);
    let yaml = std::fs::read_to_string(m.path().join("pinot.yaml")).unwrap();
    m.write(
        "pinot.yaml",
        &yaml.replace("name: logs_REALTIME", "name: logs_OFFLINE"),
    );
    let run = ofctl(&["plan", "-f", m.arg()], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("pinot.yaml:"), "{run:?}");
    assert!(
        run.stderr
            .contains("spec.tableType \"REALTIME\" does not match metadata.name `logs_OFFLINE`"),
        "{run:?}"
    );
    // The engine starts its reads while it normalizes the manifest, so a few GETs may have
    // gone out before the error ended the run; nothing is ever written.
    assert_eq!(sb.stats.snapshot().pinot.writes, 0, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_config_fails_once_with_pinots_message() {
    let sb = emulators(None, Default::default()).await;
    let m = desired_state(&sb.pinot_url);
    assert_eq!(apply(&m, &[]).code, 0);
    edit_json(&m, "table-config-logs-realtime.json", |t| {
        t["tableIndexConfig"]["invertedIndexColumns"]
            .as_array_mut()
            .unwrap()
            .push(json!("nope"));
    });
    let writes = sb.stats.snapshot().pinot.writes;
    let run = apply(&m, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    // 400 is permanent: one attempt, and the controller's own words.
    assert_eq!(sb.stats.snapshot().pinot.writes - writes, 1);
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(output.contains("returned 400"), "{run:?}");
    assert!(
        output.contains("Column Name nope defined in invertedIndexColumns must be a valid column defined in the schema"),
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried() {
    let sb = emulators(
        None,
        FaultConfig {
            error_rate: 1.0,
            ..Default::default()
        },
    )
    .await;
    let m = ManifestDir::new();
    m.write("ofctl.toml", &target_config(&sb.pinot_url)).write(
        "s.yaml",
        "apiVersion: ofctl.openframe.io/v1\nkind: PinotSchema\nmetadata:\n  name: s\nspec:\n  dimensionFieldSpecs: [{name: a, dataType: STRING}]\n",
    );
    let run = ofctl(&["plan", "-f", m.arg()], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("returned 500"), "{run:?}");
    // 5xx is transient: the read was attempted `[engine] max_attempts` (5) times.
    assert_eq!(sb.stats.snapshot().pinot.faults, 5);
}

// ---------------------------------------------------------------------------------------------
// Fixture replay: every upstream version of the platform's Pinot JSON, in date order.

/// Fixture files (relative to the pinot folder) whose name is one of `names`, by commit date.
fn series(dir: &Path, names: &[&str]) -> Vec<String> {
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).expect("read INDEX.tsv");
    let mut rows: Vec<(String, String)> = index
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("file\t"))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let file = *cols.first()?;
            let date = *cols.get(3)?;
            let name = file.rsplit('/').next()?;
            names
                .contains(&name)
                .then(|| (date.to_string(), file.to_string()))
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, f)| f).collect()
}

/// Paths (JSON pointers) where two canonical specs differ; lists and scalars are leaves.
fn changed_paths(new: &Value, old: &Value, ptr: &str, out: &mut BTreeSet<String>) {
    match (new, old) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let child = format!("{ptr}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => changed_paths(x, y, &child, out),
                    _ => {
                        out.insert(child);
                    }
                }
            }
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => {}
        _ if new == old => {}
        _ => {
            out.insert(ptr.to_string());
        }
    }
}

/// Independent of the provider: does Pinot refuse `new` as a schema update of `old` (§1.2)?
fn schema_step_incompatible(new: &Value, old: &Value) -> bool {
    let cols = |s: &Value| -> BTreeMap<String, (String, bool)> {
        [
            "dimensionFieldSpecs",
            "metricFieldSpecs",
            "dateTimeFieldSpecs",
        ]
        .iter()
        .flat_map(|k| s[*k].as_array().cloned().unwrap_or_default())
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                (
                    c["dataType"].as_str().unwrap_or_default().to_string(),
                    c["singleValueField"] != false,
                ),
            )
        })
        .collect()
    };
    let (n, o) = (cols(new), cols(old));
    let pk_changed = old.get("primaryKeyColumns").is_some()
        && old["primaryKeyColumns"] != new["primaryKeyColumns"];
    pk_changed || o.iter().any(|(name, col)| n.get(name) != Some(col))
}

struct Replay<'a> {
    sb: &'a Sandbox,
    fixtures: PathBuf,
    vars: ofctl::interpolate::Variables,
}

impl Replay<'_> {
    fn canonical(&self, kind: &str, name: &str, file: &str) -> Value {
        let raw: Value = serde_json::from_str(
            &std::fs::read_to_string(self.fixtures.join(file)).expect("read fixture"),
        )
        .expect("fixture is JSON");
        let resolved = self.vars.resolve_value(&raw).expect("placeholders resolve");
        match kind {
            "PinotSchema" => ofctl::providers::pinot::normalize_desired_schema(name, &resolved),
            _ => ofctl::providers::pinot::normalize_desired_table(name, &resolved),
        }
        .expect("fixture normalizes")
    }

    /// Applies each version in turn and checks that planning version N+1 over version N shows
    /// exactly their differences (and a refusal when Pinot would refuse).
    fn run(&self, kind: &str, name: &str, versions: &[String], schema_file: Option<&str>) {
        assert!(
            versions.len() >= 2,
            "{name}: expected several versions, got {versions:?}"
        );
        let m = ManifestDir::new();
        m.write("ofctl.toml", &target_config(&self.sb.pinot_url));
        let mut yaml = String::new();
        if let Some(schema) = schema_file {
            std::fs::copy(self.fixtures.join(schema), m.path().join("schema.json"))
                .expect("copy schema fixture");
            let (raw, _) = name.split_once('_').expect("table name");
            yaml.push_str(&format!(
                "apiVersion: ofctl.openframe.io/v1\nkind: PinotSchema\nmetadata:\n  name: {raw}\nspecFile: schema.json\n---\n"
            ));
        }
        let doc = |force: bool| {
            let annotations = if force {
                "  annotations: {ofctl.openframe.io/force: \"true\"}\n"
            } else {
                ""
            };
            format!(
                "{yaml}apiVersion: ofctl.openframe.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\n{annotations}specFile: spec.json\n"
            )
        };
        let address = format!("{kind}/{name}");
        for (i, file) in versions.iter().enumerate() {
            std::fs::copy(self.fixtures.join(file), m.path().join("spec.json"))
                .expect("copy fixture");
            m.write("manifest.yaml", &doc(false));
            let mut force = false;
            if i > 0 {
                let prev = &versions[i - 1];
                let (new, old) = (
                    self.canonical(kind, name, file),
                    self.canonical(kind, name, prev),
                );
                let mut expected = BTreeSet::new();
                changed_paths(&new, &old, "", &mut expected);
                let (_, plan) = plan_json(&m, &[]);
                let c = change(&plan, &address);
                assert_eq!(pointers(c), expected, "{prev} -> {file}: {c:#}");
                let action = if expected.is_empty() {
                    "noop"
                } else {
                    "update"
                };
                assert_eq!(c["action"], action, "{prev} -> {file}");
                let incompatible = kind == "PinotSchema" && schema_step_incompatible(&new, &old);
                if incompatible {
                    assert!(c["blocked"].is_string(), "{prev} -> {file}: {c:#}");
                    assert!(!c["reasons"].as_array().unwrap().is_empty(), "{c:#}");
                    m.write("manifest.yaml", &doc(true));
                    force = true;
                } else {
                    assert!(c.get("blocked").is_none(), "{prev} -> {file}: {c:#}");
                }
                eprintln!(
                    "{address}: {prev} -> {file}: {} field(s) changed{}",
                    expected.len(),
                    if incompatible {
                        ", refused until forced"
                    } else {
                        ""
                    }
                );
            }
            let run = apply(&m, &[]);
            assert_eq!(run.code, 0, "apply {file} (force: {force}): {run:?}");
            let again = ofctl(&["plan", "-f", m.arg()], &[]);
            assert_eq!(
                again.code, 0,
                "{file} does not re-plan as a no-op: {again:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_replay_plans_exactly_the_upstream_differences() {
    let fixtures = support::platform_fixtures("pinot");
    let sb = emulators(None, Default::default()).await;
    let config =
        ofctl::config::TargetConfig::parse(&target_config(&sb.pinot_url), Path::new("ofctl.toml"))
            .expect("target config parses");
    let replay = Replay {
        sb: &sb,
        fixtures: fixtures.clone(),
        vars: config.variables,
    };
    let newest = |name: &str| series(&fixtures, &[name]).pop().expect("a version");
    replay.run(
        "PinotSchema",
        "devices",
        &series(&fixtures, &["schema-devices.json"]),
        None,
    );
    replay.run(
        "PinotSchema",
        "logs",
        &series(&fixtures, &["schema-logs.json"]),
        None,
    );
    replay.run(
        "PinotTable",
        "devices_REALTIME",
        &series(&fixtures, &["table-config-devices.json"]),
        Some(&newest("schema-devices.json")),
    );
    // The logs REALTIME table: `table-config-logs.json` until 2026-01-13, then
    // `table-config-logs-realtime.json` (openframe.md §3).
    replay.run(
        "PinotTable",
        "logs_REALTIME",
        &series(
            &fixtures,
            &["table-config-logs.json", "table-config-logs-realtime.json"],
        ),
        Some(&newest("schema-logs.json")),
    );
}

/// Pinot deletes a schema an OFFLINE table still uses (§1.2), so the provider looks at the
/// schema's tables as they are now and refuses; once the tables are gone, the delete goes
/// through. Through the provider: a plan never deletes a schema before its managed tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_is_not_deleted_while_a_table_uses_it() {
    use ofctl::provider::{OpAction, Operation};
    let sb = emulators(None, Default::default()).await;
    let m = desired_state(&sb.pinot_url);
    let run = apply(&m, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let config = ofctl::config::TargetConfig::parse(
        &target_config(&sb.pinot_url),
        &m.path().join("ofctl.toml"),
    )
    .unwrap();
    let provider = ofctl::registry::build(ofctl::kind::System::Pinot, &config).unwrap();
    let delete = |name| Operation {
        kind: "PinotSchema",
        name,
        action: OpAction::Delete,
        desired: None,
        live: None,
        force: false,
    };

    let err = provider.apply(delete("logs")).await.unwrap_err();
    assert!(!err.transient, "{err:?}");
    assert_eq!(
        err.message,
        "cannot delete schema logs: table(s) logs_REALTIME still use it"
    );
    assert_eq!(get(&sb, "/schemas/logs").await.0, 200);

    delete_logs_table(&sb).await;
    provider.apply(delete("logs")).await.unwrap();
    assert_eq!(get(&sb, "/schemas/logs").await.0, 404);
}
