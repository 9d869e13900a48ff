//! Tactical RMM scripts end to end: the real ofctl binary against the in-process Tactical RMM
//! emulator (`ofctl::sandbox`, apis.md §3).
//!
//! Multi-threaded runtime: `ofctl()` blocks its thread while the emulator serves on another.

mod support;

use ofctl::sandbox::Sandbox;
use serde_json::{json, Value};
use support::{emulators, endpoint_config, ofctl, ManifestDir, Run};

const NAME: &str = "OpenFrame Client Latest Update";
const ADDRESS: &str = "TacticalScript/OpenFrame Client Latest Update";
/// Distinctive, so a leak anywhere in the output is found by a plain search.
const API_KEY: &str = "trmm-key-7f3a9c0e5b21d846";

const ENV: [(&str, &str); 1] = [("OFCTL_TACTICAL_API_KEY", API_KEY)];

fn run(args: &[&str]) -> Run {
    let run = ofctl(args, &ENV);
    for output in [&run.stdout, &run.stderr] {
        assert!(!output.contains(API_KEY), "the API key leaked: {run:?}");
    }
    run
}

fn script(name: &str, spec: &str) -> String {
    format!("apiVersion: ofctl.openframe.io/v1\nkind: TacticalScript\nmetadata:\n  name: {name}\nspec:\n{spec}\n---\n")
}

/// The Tactical RMM API, as a person or another tool would use it out of band.
struct Trmm {
    url: String,
    http: reqwest::Client,
}

impl Trmm {
    fn new(sandbox: &Sandbox) -> Self {
        Self {
            url: sandbox.tactical_url.clone(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("X-API-KEY", API_KEY);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("tactical request");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.expect("json")
    }

    async fn list(&self) -> Vec<Value> {
        let all = self
            .send(
                reqwest::Method::GET,
                "/scripts/?showCommunityScripts=true&showHiddenScripts=true",
                None,
            )
            .await;
        all.as_array().expect("array").clone()
    }

    async fn named(&self, name: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for s in self.list().await.into_iter().filter(|s| s["name"] == name) {
            out.push(self.detail(s["id"].as_u64().unwrap()).await);
        }
        out
    }

    async fn detail(&self, id: u64) -> Value {
        self.send(reqwest::Method::GET, &format!("/scripts/{id}/"), None)
            .await
    }

    async fn builtins(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for s in self
            .list()
            .await
            .into_iter()
            .filter(|s| s["script_type"] == "builtin")
        {
            out.push(self.detail(s["id"].as_u64().unwrap()).await);
        }
        out
    }

    async fn add(&self, body: Value) {
        self.send(reqwest::Method::POST, "/scripts/", Some(body))
            .await;
    }
}

/// The desired-state folder for Tactical, pointed at the emulator.
fn desired_state(sandbox: &Sandbox) -> ManifestDir {
    let m = ManifestDir::new();
    m.copy_from("desired-state/tactical").write(
        "ofctl.toml",
        &endpoint_config("tactical", &sandbox.tactical_url),
    );
    m
}

fn body_file() -> String {
    std::fs::read_to_string(
        support::repo_root().join("desired-state/tactical/openframe-client-update.ps1"),
    )
    .expect("script body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_state_creates_once_then_a_noop_plan_reads_twice_and_writes_nothing() {
    let sandbox = emulators(Some(API_KEY), Default::default()).await;
    let trmm = Trmm::new(&sandbox);
    let builtins = trmm.builtins().await;
    let m = desired_state(&sandbox);

    let plan = run(&["plan", "-f", m.arg(), "--format", "json"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let p = plan.json();
    assert_eq!(p["summary"]["create"], 1, "{plan:?}");
    assert_eq!(p["changes"][0]["address"], ADDRESS);

    let apply = run(&["apply", "-f", m.arg(), "--auto-approve"]);
    assert_eq!(apply.code, 0, "{apply:?}");
    let live = trmm.named(NAME).await;
    assert_eq!(live.len(), 1);
    let s = &live[0];
    // openframe.md §13 / script-configs.json, plus ofctl's ownership tag.
    assert_eq!(
        s["description"],
        "OpenFrame Client update to latest version [managed by ofctl/default/default]"
    );
    assert_eq!(s["shell"], "powershell");
    assert_eq!(s["category"], "OpenFrame");
    assert_eq!(s["default_timeout"], 30);
    assert_eq!(s["run_as_user"], false);
    assert_eq!(s["hidden"], false);
    assert_eq!(
        s["script_body"].as_str().unwrap(),
        body_file(),
        "the body is stored byte for byte"
    );

    sandbox.stats.reset();
    let again = run(&["plan", "-f", m.arg(), "--log-level", "info"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("No changes"), "{again:?}");
    // One list, one detail for the one declared script; nothing written.
    let stats = sandbox.stats.snapshot().tactical;
    assert_eq!((stats.reads, stats.writes), (2, 0), "{stats:?}");
    assert_eq!(
        again.logged_requests("read live state in")["tactical"],
        json!({"reads": 2, "writes": 0})
    );

    assert_eq!(
        trmm.builtins().await,
        builtins,
        "community scripts are never touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_edit_is_one_update_with_a_line_diff() {
    let sandbox = emulators(Some(API_KEY), Default::default()).await;
    let trmm = Trmm::new(&sandbox);
    let m = desired_state(&sandbox);
    assert_eq!(run(&["apply", "-f", m.arg(), "--auto-approve"]).code, 0);

    let edited = body_file().replace("Version = \"1.0.0\"", "Version = \"1.0.1\"");
    assert_ne!(edited, body_file());
    m.write("openframe-client-update.ps1", &edited);

    let plan = run(&["plan", "-f", m.arg(), "--format", "json"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let p = plan.json();
    assert_eq!(p["summary"]["update"], 1, "{plan:?}");
    let c = &p["changes"][0];
    assert_eq!(c["action"], "update");
    let paths: Vec<_> = c["diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].clone())
        .collect();
    assert_eq!(paths, vec![json!("script_body")], "{c:#}");

    let text = run(&["plan", "-f", m.arg()]);
    assert_eq!(text.code, 2, "{text:?}");
    for expected in [
        &format!("~ {ADDRESS}"),
        "~ script_body: <<",
        "--- live",
        "+++ desired",
        "@@",
        "-    Version = \"1.0.0\"",
        "+    Version = \"1.0.1\"",
        "Plan: 0 to create, 1 to update, 0 to replace, 0 to delete, 0 unchanged.",
    ] {
        assert!(
            text.stdout.contains(expected),
            "`{expected}` missing:\n{}",
            text.stdout
        );
    }
    // Only the changed lines and their context, not the whole 400-line body.
    assert!(text.stdout.lines().count() < 30, "{}", text.stdout);

    let apply = run(&["apply", "-f", m.arg(), "--auto-approve"]);
    assert_eq!(apply.code, 0, "{apply:?}");
    let live = trmm.named(NAME).await;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["script_body"].as_str().unwrap(), edited);
    assert_eq!(
        live[0]["default_timeout"], 30,
        "a partial update leaves other fields alone"
    );
    assert_eq!(run(&["plan", "-f", m.arg()]).code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_script_hidden_out_of_band_is_found_not_duplicated() {
    let sandbox = emulators(Some(API_KEY), Default::default()).await;
    let trmm = Trmm::new(&sandbox);
    let m = desired_state(&sandbox);
    assert_eq!(run(&["apply", "-f", m.arg(), "--auto-approve"]).code, 0);
    let id = trmm.named(NAME).await[0]["id"].as_u64().unwrap();
    trmm.send(
        reqwest::Method::PUT,
        &format!("/scripts/{id}/"),
        Some(json!({"hidden": true})),
    )
    .await;

    let plan = run(&["plan", "-f", m.arg(), "--format", "json"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let p = plan.json();
    assert_eq!(p["summary"]["create"], 0, "{plan:?}");
    let c = &p["changes"][0];
    assert_eq!(c["action"], "update");
    assert_eq!(c["diff"][0]["path"], "hidden");
    assert_eq!(
        (
            c["diff"][0]["before"].clone(),
            c["diff"][0]["after"].clone()
        ),
        (json!(true), json!(false))
    );

    assert_eq!(run(&["apply", "-f", m.arg(), "--auto-approve"]).code, 0);
    let live = trmm.named(NAME).await;
    assert_eq!(live.len(), 1, "{live:#?}");
    assert_eq!(live[0]["id"], id);
    assert_eq!(live[0]["hidden"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_and_ambiguous_names_are_errors() {
    let sandbox = emulators(Some(API_KEY), Default::default()).await;
    let trmm = Trmm::new(&sandbox);
    let builtins = trmm.builtins().await;
    let builtin = &builtins[0];
    let m = ManifestDir::new();
    m.write(
        "ofctl.toml",
        &endpoint_config("tactical", &sandbox.tactical_url),
    )
    .write(
        "s.yaml",
        &script(
            builtin["name"].as_str().unwrap(),
            "  script_body: echo mine",
        ),
    );
    let plan = run(&["plan", "-f", m.arg()]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(
        plan.stderr
            .contains(&format!("community (builtin) script id {}", builtin["id"])),
        "{plan:?}"
    );
    let apply = run(&["apply", "-f", m.arg(), "--auto-approve"]);
    assert_eq!(apply.code, 1, "{apply:?}");
    assert_eq!(trmm.builtins().await, builtins);

    // Two user scripts with one name: ofctl will not guess which is meant.
    for _ in 0..2 {
        trmm.add(json!({"name": "Twice", "script_body": "echo", "shell": "cmd"}))
            .await;
    }
    let ids: Vec<String> = trmm
        .named("Twice")
        .await
        .iter()
        .map(|s| s["id"].to_string())
        .collect();
    m.write(
        "s.yaml",
        &script("Twice", "  script_body: echo\n  shell: cmd"),
    );
    let plan = run(&["plan", "-f", m.arg()]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(
        plan.stderr.contains(&format!("ids {}", ids.join(", "))),
        "{plan:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_is_a_clear_401_and_no_key_is_ever_printed() {
    let sandbox = emulators(Some(API_KEY), Default::default()).await;
    let m = desired_state(&sandbox);
    // env_vars are treated as secret too.
    m.write(
        "extra.yaml",
        &script(
            "With env",
            "  script_body: echo $TOKEN\n  shell: shell\n  env_vars: [\"TOKEN=env-secret-5521\"]",
        ),
    );

    let wrong = "trmm-wrong-key-0042";
    let plan = ofctl(
        &["plan", "-f", m.arg()],
        &[("OFCTL_TACTICAL_API_KEY", wrong)],
    );
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(plan.stderr.contains("401"), "{plan:?}");
    assert!(plan.stderr.contains("[tactical] api_key"), "{plan:?}");
    assert!(
        !plan.stderr.contains(wrong) && !plan.stdout.contains(wrong),
        "{plan:?}"
    );

    let unset = ofctl(&["plan", "-f", m.arg()], &[]);
    assert_eq!(unset.code, 1, "{unset:?}");
    assert!(unset.stderr.contains("OFCTL_TACTICAL_API_KEY"), "{unset:?}");

    let planfile = m.path().join("plan.json");
    let planfile = planfile.to_str().unwrap();
    let mut outputs = Vec::new();
    for format in ["text", "json", "markdown"] {
        let plan = run(&["plan", "-f", m.arg(), "--format", format, "-o", planfile]);
        assert_eq!(plan.code, 2, "{plan:?}");
        outputs.push(plan.stdout);
        outputs.push(std::fs::read_to_string(planfile).unwrap());
    }
    let apply = run(&["apply", planfile, "--log-level", "debug"]);
    assert_eq!(apply.code, 0, "{apply:?}");
    outputs.extend([apply.stdout, apply.stderr]);
    for out in &outputs {
        assert!(!out.contains(API_KEY), "{out}");
        assert!(!out.contains("env-secret-5521"), "{out}");
    }
    assert!(
        outputs[2].contains("env_vars"),
        "the env_vars change is shown, without its value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_plan_is_a_no_op_and_exports_no_secret() {
    let sandbox = emulators(Some(API_KEY), Default::default()).await;
    let trmm = Trmm::new(&sandbox);
    let m = desired_state(&sandbox);
    assert_eq!(run(&["apply", "-f", m.arg(), "--auto-approve"]).code, 0);
    trmm.add(json!({
        "name": "Made in the UI", "shell": "python", "script_body": "import os\n\n  print(os.environ['T'])  \n",
        "env_vars": ["T=ui-secret-9917"], "supported_platforms": ["linux", "darwin"], "category": ""
    }))
    .await;

    let out = ManifestDir::new();
    let cfg = m.path().join("ofctl.toml");
    let export = run(&[
        "export",
        "-c",
        cfg.to_str().unwrap(),
        "--kind",
        "TacticalScript",
        "-o",
        out.arg(),
    ]);
    assert_eq!(export.code, 0, "{export:?}");
    let text = std::fs::read_to_string(out.path().join("tacticalscript.yaml")).unwrap();
    assert!(
        text.contains(NAME) && text.contains("Made in the UI"),
        "{text}"
    );
    assert!(
        !text.contains("Community") && !text.contains("ui-secret-9917"),
        "{text}"
    );
    // The one secret became an env placeholder; provide it as an operator would.
    let secret_env = export
        .stderr
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("OFCTL_SECRET_"))
        .unwrap_or_else(|| panic!("{export:?}"))
        .to_string();

    out.write(
        "ofctl.toml",
        &endpoint_config("tactical", &sandbox.tactical_url),
    );
    let plan = ofctl(
        &["plan", "-f", out.arg()],
        &[ENV[0], (secret_env.as_str(), "T=ui-secret-9917")],
    );
    assert_eq!(plan.code, 0, "{plan:?}\n{text}");
}

/// Replicas share a tenant's work but not their processes' script lists (each process keeps
/// one for up to 5 s): a create planned from a list read before another replica made the
/// script finds it in a fresh list and adds no second one (names are not unique in TRMM).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_planned_before_another_replica_made_the_script_adds_no_second_one() {
    use ofctl::provider::{OpAction, Operation, ReadPass, ReadScope};
    let sandbox = emulators(Some(API_KEY), Default::default()).await;
    let trmm = Trmm::new(&sandbox);
    let m = desired_state(&sandbox);
    let config = ofctl::config::TargetConfig::parse(
        &format!("[tactical]\nurl = \"{}\"\n", sandbox.tactical_url),
        std::path::Path::new("ofctl.toml"),
    )
    .unwrap();
    let provider = ofctl::registry::build_tactical(&config, (None, Some(API_KEY.into()))).unwrap();
    let manifest = ofctl::manifest::load(m.path(), &config.variables).unwrap();
    let declared = manifest
        .resources
        .iter()
        .find(|r| r.address.kind == "TacticalScript")
        .expect("the shipped script");
    let desired = provider
        .normalize_desired("TacticalScript", NAME, &declared.spec)
        .unwrap();

    // This replica reads: no script yet.
    let names = [NAME.to_string()];
    let pass = ReadPass::default();
    let scope = ReadScope {
        names: &names,
        all: false,
        pass: &pass,
    };
    assert!(provider
        .read("TacticalScript", scope)
        .await
        .unwrap()
        .is_empty());
    // Another replica (another process) creates it meanwhile.
    let other = run(&["apply", "-f", m.arg(), "--auto-approve"]);
    assert_eq!(other.code, 0, "{other:?}");
    assert_eq!(trmm.named(NAME).await.len(), 1);
    // This replica's create, planned from its read, finds that one.
    provider
        .apply(Operation {
            kind: "TacticalScript",
            name: NAME,
            action: OpAction::Create,
            desired: Some(&desired),
            live: None,
            force: false,
        })
        .await
        .unwrap();
    assert_eq!(trmm.named(NAME).await.len(), 1, "a second script was added");
}
