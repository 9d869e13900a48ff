//! Kafka Connect connectors end to end through the real `ofctl` binary. One scenario runs
//! against a real Kafka Connect 3.9 with Debezium 3.0.7 capturing a real PostgreSQL (started
//! with `scripts/dev-stack.sh up --with-connect`) and against the in-process emulator.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use ofctl::sandbox::Sandbox;
use serde_json::{json, Value};
use support::{emulators, endpoint_config, ofctl, tools_dir, DevStack, ManifestDir, Run};

const NAME: &str = "e2e-pg";
/// The environment variable the manifest takes the database password from.
const PASSWORD_ENV: &str = "OFCTL_E2E_PG_PASSWORD";

/// PostgreSQL as Debezium reaches it.
#[derive(Clone)]
struct Pg {
    host: String,
    port: String,
    user: String,
    password: String,
    db: String,
}

/// Where the scenario runs.
struct Target {
    what: &'static str,
    connect_url: String,
    pg: Pg,
    /// Writes the server itself counted (the emulator's stats), to cross-check ofctl's count.
    server_writes: Option<Box<dyn Fn() -> u64 + Send + Sync>>,
}

impl Target {
    fn config(&self) -> String {
        format!(
            "{}\n[variables]\nPG_HOST = \"{}\"\nPG_PORT = \"{}\"\nPG_USER = \"{}\"\nPG_DB = \"{}\"\n",
            endpoint_config("connect", &self.connect_url),
            self.pg.host,
            self.pg.port,
            self.pg.user,
            self.pg.db
        )
    }

    /// Runs ofctl with request logging and the password in its environment, and checks that
    /// the password is nowhere in what it printed.
    fn ofctl(&self, args: &[&str]) -> Run {
        let run = ofctl(
            args,
            &[("OFCTL_LOG", "info"), (PASSWORD_ENV, &self.pg.password)],
        );
        assert!(
            !run.stdout.contains(&self.pg.password) && !run.stderr.contains(&self.pg.password),
            "the password was printed: {run:?}"
        );
        run
    }
}

/// A Debezium Postgres connector on the table the test prepared.
fn connector(state: &str, poll_ms: u32) -> String {
    format!(
        r#"apiVersion: ofctl.openframe.io/v1
kind: KafkaConnector
metadata:
  name: {NAME}
spec:
  state: {state}
  config:
    connector.class: io.debezium.connector.postgresql.PostgresConnector
    tasks.max: 1
    database.hostname: ${{PG_HOST}}
    database.port: ${{PG_PORT}}
    database.user: ${{PG_USER}}
    database.password: ${{env:{PASSWORD_ENV}}}
    database.dbname: ${{PG_DB}}
    plugin.name: pgoutput
    topic.prefix: e2e
    table.include.list: public.items
    slot.name: dbz_slot_e2e
    publication.name: dbz_pub_e2e
    publication.autocreate.mode: disabled
    poll.interval.ms: {poll_ms}
    tombstones.on.delete: false
"#
    )
}

fn writes(run: &Run) -> u64 {
    run.logged_requests("applied in")["connect"]["writes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no connect writes counted: {run:?}"))
}

/// The only pending change of a plan.
fn single_change(plan: &Value) -> &Value {
    let pending: Vec<&Value> = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["action"] != "noop")
        .collect();
    assert_eq!(pending.len(), 1, "{plan:#}");
    pending[0]
}

async fn get(url: &str) -> Value {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// Polls the connector's status until it and all its tasks are in `state` (a stopped one has
/// none); returns how long that took.
async fn wait_for(url: &str, state: &str) -> Duration {
    let started = Instant::now();
    let status_url = format!("{url}/connectors/{NAME}/status");
    let mut last = Value::Null;
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(response) = reqwest::get(&status_url).await {
            if response.status().is_success() {
                last = response.json().await.unwrap_or(Value::Null);
                let tasks = last["tasks"].as_array().cloned().unwrap_or_default();
                let tasks_ok = if state == "STOPPED" {
                    tasks.is_empty()
                } else {
                    !tasks.is_empty() && tasks.iter().all(|t| t["state"] == state)
                };
                if last["connector"]["state"] == state && tasks_ok {
                    return started.elapsed();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{NAME} did not reach {state} within 60 s; last status: {last}");
}

/// Create → RUNNING, no-op re-plan, one config change = one PUT, pause, resume, prune.
async fn scenario(t: &Target) {
    let url = t.connect_url.as_str();
    let m = ManifestDir::new();
    m.write("ofctl.toml", &t.config())
        .write("connector.yaml", &connector("running", 500));
    let server_writes = || t.server_writes.as_ref().map(|f| f());

    let plan = t.ofctl(&["plan", "-f", m.arg(), "--format", "json"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let p = plan.json();
    assert_eq!(p["summary"]["create"], 1, "{p:#}");
    let create = single_change(&p);
    assert_eq!(create["address"], format!("KafkaConnector/{NAME}"));
    let config_diff = create["diff"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == "config")
        .expect("config in the create diff");
    assert_eq!(config_diff["after"]["database.password"], "(sensitive)");
    assert_eq!(config_diff["after"]["tasks.max"], "1");

    let started = Instant::now();
    let apply = t.ofctl(&["apply", "-f", m.arg(), "--auto-approve"]);
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_eq!(writes(&apply), 1, "{apply:?}");
    let running = wait_for(url, "RUNNING").await;
    eprintln!(
        "{}: create applied in {:?}, RUNNING {:?} later",
        t.what,
        started.elapsed() - running,
        running
    );
    let live = get(&format!("{url}/connectors/{NAME}/config")).await;
    assert_eq!(live["name"], NAME);
    assert_eq!(live["tombstones.on.delete"], "false");
    assert_eq!(
        live["ofctl.openframe.io/managed-by"],
        "ofctl/default/default"
    );

    // Unchanged manifest: the connector and its status read by name (not the whole cluster's
    // list), nothing to do.
    let noop = t.ofctl(&["plan", "-f", m.arg()]);
    assert_eq!(noop.code, 0, "{noop:?}");
    assert!(noop.stdout.contains("No changes"), "{noop:?}");
    assert_eq!(
        noop.logged_requests("read live state in")["connect"],
        json!({"reads": 2, "writes": 0}),
        "{noop:?}"
    );

    // One config key changed: one update that restarts, and exactly one PUT.
    m.write("connector.yaml", &connector("running", 1000));
    let plan = t.ofctl(&["plan", "-f", m.arg(), "--format", "json"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let p = plan.json();
    assert_eq!(p["summary"]["update"], 1, "{p:#}");
    let update = single_change(&p);
    assert_eq!(update["risk"], "restarts", "{update:#}");
    assert_eq!(
        update["diff"],
        json!([{"pointer": "/config/poll.interval.ms", "path": "config[\"poll.interval.ms\"]",
                            "op": "change", "before": "500", "after": "1000"}])
    );
    let before = server_writes();
    let started = Instant::now();
    let apply = t.ofctl(&["apply", "-f", m.arg(), "--auto-approve"]);
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_eq!(writes(&apply), 1, "{apply:?}");
    if let (Some(b), Some(a)) = (before, server_writes()) {
        assert_eq!(a - b, 1, "the server saw {} writes", a - b);
    }
    let restarted = wait_for(url, "RUNNING").await;
    eprintln!(
        "{}: config update applied in {:?}, RUNNING {:?} later",
        t.what,
        started.elapsed() - restarted,
        restarted
    );
    let live = get(&format!("{url}/connectors/{NAME}/config")).await;
    assert_eq!(live["poll.interval.ms"], "1000");
    assert_eq!(t.ofctl(&["plan", "-f", m.arg()]).code, 0);

    // State only: pause and resume, no config write.
    for (state, live_state) in [("paused", "PAUSED"), ("running", "RUNNING")] {
        m.write("connector.yaml", &connector(state, 1000));
        let plan = t.ofctl(&["plan", "-f", m.arg(), "--format", "json"]);
        assert_eq!(plan.code, 2, "{plan:?}");
        let p = plan.json();
        let change = single_change(&p);
        assert_eq!(change["action"], "update", "{change:#}");
        assert_eq!(change["risk"], "safe", "{change:#}");
        assert_eq!(change["diff"].as_array().unwrap().len(), 1, "{change:#}");
        assert_eq!(change["diff"][0]["path"], "state");
        assert_eq!(change["diff"][0]["after"], state);
        let started = Instant::now();
        let apply = t.ofctl(&["apply", "-f", m.arg(), "--auto-approve"]);
        assert_eq!(apply.code, 0, "{apply:?}");
        assert_eq!(writes(&apply), 1, "{apply:?}");
        let took = wait_for(url, live_state).await;
        eprintln!(
            "{}: {state} applied in {:?}, {live_state} {took:?} later",
            t.what,
            started.elapsed() - took
        );
        assert_eq!(t.ofctl(&["plan", "-f", m.arg()]).code, 0);
    }

    // Removed from the manifest: only --prune deletes it (ofctl marked it as its own).
    m.remove("connector.yaml");
    let plan = t.ofctl(&["plan", "-f", m.arg()]);
    assert_eq!(plan.code, 0, "{plan:?}");
    // It was the manifest's last connector: an emptied folder looks just like this, so the
    // prune is refused unless --allow-empty says it is meant.
    let refused = t.ofctl(&["apply", "-f", m.arg(), "--prune", "--auto-approve"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stdout.contains("--allow-empty"), "{refused:?}");
    assert_ne!(
        get(&format!("{url}/connectors")).await,
        json!([]),
        "{refused:?}"
    );
    let prune = t.ofctl(&[
        "apply",
        "-f",
        m.arg(),
        "--prune",
        "--allow-empty",
        "--auto-approve",
    ]);
    assert_eq!(prune.code, 0, "{prune:?}");
    assert_eq!(writes(&prune), 1, "{prune:?}");
    let names = get(&format!("{url}/connectors")).await;
    assert_eq!(names, json!([]), "{prune:?}");
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The source table, a replication role and the publication Debezium reads.
fn prepare_postgres(stack: &DevStack, password: &str) {
    let sql = format!(
        "CREATE TABLE public.items (id serial PRIMARY KEY, name text);
         CREATE ROLE ofctl_cdc WITH LOGIN REPLICATION PASSWORD '{password}';
         GRANT SELECT ON public.items TO ofctl_cdc;
         CREATE PUBLICATION dbz_pub_e2e FOR TABLE public.items;"
    );
    let out = Command::new(format!("{PG_BIN}/psql"))
        .args(["-h", stack.var("OFCTL_POSTGRES_HOST")])
        .args(["-p", stack.var("OFCTL_POSTGRES_PORT")])
        .args(["-U", stack.var("OFCTL_POSTGRES_USER")])
        .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", &sql])
        .env("PGPASSWORD", stack.var("OFCTL_POSTGRES_PASSWORD"))
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs when asked for (`OFCTL_TEST_CONNECT=1`, and then a stack that cannot start is a
/// failure) or when the Connect jars are installed (`scripts/dev-stack.sh install connect`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kafka_connect_with_debezium_postgres() {
    let required = std::env::var("OFCTL_TEST_CONNECT").as_deref() == Ok("1");
    if !required && !tools_dir().join("connect-libs").is_dir() {
        eprintln!(
            "note: skipping the real Kafka Connect test: no {} (run `scripts/dev-stack.sh install connect`, or set OFCTL_TEST_CONNECT=1)",
            tools_dir().join("connect-libs").display()
        );
        return;
    }
    let started = Instant::now();
    let stack = tokio::task::spawn_blocking(|| DevStack::up(&["--with-connect"]))
        .await
        .expect("dev-stack task")
        .unwrap_or_else(|e| panic!("the Kafka Connect stack did not start: {e}"));
    eprintln!("real connect: stack up in {:?}", started.elapsed());
    let password = format!(
        "e2e-pw-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    prepare_postgres(&stack, &password);
    let target = Target {
        what: "real connect",
        connect_url: stack.var("OFCTL_CONNECT_URL").to_string(),
        pg: Pg {
            host: stack.var("OFCTL_POSTGRES_HOST").to_string(),
            port: stack.var("OFCTL_POSTGRES_PORT").to_string(),
            user: "ofctl_cdc".into(),
            password,
            db: "postgres".into(),
        },
        server_writes: None,
    };
    let worker = get(&target.connect_url).await;
    assert_eq!(worker["version"], "3.9.0", "{worker}");
    let plugins = get(&format!("{}/connector-plugins", target.connect_url)).await;
    assert!(
        plugins.as_array().unwrap().iter().any(|p| p["class"]
            == "io.debezium.connector.postgresql.PostgresConnector"
            && p["version"] == "3.0.7.Final"),
        "{plugins}"
    );

    // Debezium checks the database login when Connect validates a create: a wrong password is
    // refused up front (what desired-state/ofctl.toml relies on), and not printed either.
    let wrong = Target {
        what: "real connect, wrong password",
        connect_url: target.connect_url.clone(),
        pg: Pg {
            password: format!("{}-wrong", target.pg.password),
            ..target.pg.clone()
        },
        server_writes: None,
    };
    let m = ManifestDir::new();
    m.write("ofctl.toml", &wrong.config())
        .write("connector.yaml", &connector("running", 500));
    let refused = wrong.ofctl(&["apply", "-f", m.arg(), "--auto-approve"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stdout
            .contains("returned 400: Connector configuration is invalid")
            && refused
                .stdout
                .contains("password authentication failed for user \"ofctl_cdc\""),
        "{refused:?}"
    );
    assert_eq!(writes(&refused), 1, "a 400 is not retried: {refused:?}");

    scenario(&target).await;
    eprintln!("real connect: whole test {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// The in-process emulator (ofctl::sandbox). The tests run on a multi-threaded runtime: the
// emulator serves from one worker while the test blocks another waiting for `ofctl`.

fn emulated(sb: &Sandbox, password: &str) -> Target {
    let stats = sb.stats.clone();
    Target {
        what: "emulator",
        connect_url: sb.connect_url.clone(),
        pg: Pg {
            host: "127.0.0.1".into(),
            port: "5432".into(),
            user: "ofctl_cdc".into(),
            password: password.into(),
            db: "postgres".into(),
        },
        server_writes: Some(Box::new(move || stats.snapshot().connect.writes)),
    }
}

async fn post(url: &str) {
    let response = reqwest::Client::new()
        .post(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    assert!(
        response.status().is_success(),
        "POST {url}: {}",
        response.status()
    );
}

/// Creates the scenario's connector in `state` through ofctl.
fn create(t: &Target, m: &ManifestDir, state: &str) -> Run {
    m.write("ofctl.toml", &t.config())
        .write("connector.yaml", &connector(state, 500));
    let apply = t.ofctl(&["apply", "-f", m.arg(), "--auto-approve"]);
    assert_eq!(apply.code, 0, "{apply:?}");
    apply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_kafka_connect() {
    let sb = emulators(None, Default::default()).await;
    scenario(&emulated(&sb, "emulator-secret-pw-1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_conflicts_are_retried_until_the_write_lands() {
    let sb = emulators(None, Default::default()).await;
    let t = emulated(&sb, "emulator-secret-pw-2");
    let url = t.connect_url.as_str();
    let m = ManifestDir::new();
    m.write("ofctl.toml", &t.config())
        .write("connector.yaml", &connector("running", 500));

    // apis.md §2.5: the next forwarded writes answer 409 "stale configuration" (a worker
    // behind on the config topic; its non-forwarded reads by name are still served).
    post(&format!(
        "{url}/__sandbox/rebalance?count=2&writes_only=true"
    ))
    .await;
    let apply = t.ofctl(&["apply", "-f", m.arg(), "--auto-approve"]);
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_eq!(apply.stderr.matches("retrying in").count(), 2, "{apply:?}");
    assert!(
        apply
            .stderr
            .contains("returned 409: Cannot complete request momentarily"),
        "{apply:?}"
    );
    assert_eq!(
        writes(&apply),
        3,
        "two refused POSTs and the one that landed: {apply:?}"
    );
    wait_for(url, "RUNNING").await;

    post(&format!(
        "{url}/__sandbox/rebalance?count=1&writes_only=true"
    ))
    .await;
    m.write("connector.yaml", &connector("running", 1000));
    let before = sb.stats.snapshot().connect.writes;
    let apply = t.ofctl(&["apply", "-f", m.arg(), "--auto-approve"]);
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_eq!(apply.stderr.matches("retrying in").count(), 1, "{apply:?}");
    assert_eq!(sb.stats.snapshot().connect.writes - before, 2, "{apply:?}");
    let live = get(&format!("{url}/connectors/{NAME}/config")).await;
    assert_eq!(live["poll.interval.ms"], "1000");
    assert_eq!(t.ofctl(&["plan", "-f", m.arg()]).code, 0);

    // During a rebalance a read by name answers 500 "a rebalance is expected" (not
    // forwarded): retried like the writes, and the plan still comes out right.
    post(&format!("{url}/__sandbox/rebalance?count=2")).await;
    let plan = t.ofctl(&["plan", "-f", m.arg()]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(plan.stdout.contains("No changes"), "{plan:?}");
    assert_eq!(
        plan.logged_requests("read live state in")["connect"],
        json!({"reads": 4, "writes": 0}),
        "two refused GETs, then the connector and its status: {plan:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_compared_but_never_printed() {
    let sb = emulators(None, Default::default()).await;
    let (old, new) = ("emulator-old-secret-pw", "emulator-new-secret-pw");
    let mut t = emulated(&sb, old);
    let url = t.connect_url.clone();
    let m = ManifestDir::new();
    m.write("ofctl.toml", &t.config())
        .write("connector.yaml", &connector("running", 500));
    let clean = |what: &str, text: &str| {
        for secret in [old, new] {
            assert!(
                !text.contains(secret),
                "{what} contains a password:\n{text}"
            );
        }
    };
    let saved = m.path().join("create.plan.json");
    let saved_arg = saved.to_str().unwrap();
    for format in ["text", "json", "markdown"] {
        let plan = t.ofctl(&["plan", "-f", m.arg(), "--format", format, "-o", saved_arg]);
        assert_eq!(plan.code, 2, "{plan:?}");
        assert!(plan.stdout.contains("(sensitive)"), "{format}: {plan:?}");
        clean(format, &plan.stdout);
        clean("saved plan", &std::fs::read_to_string(&saved).unwrap());
    }
    let apply = t.ofctl(&["apply", saved_arg]);
    assert_eq!(apply.code, 0, "{apply:?}");
    // It was sent, of course: Connect stores it (and returns it in clear text, apis.md §2.7).
    let live = get(&format!("{url}/connectors/{NAME}/config")).await;
    assert_eq!(live["database.password"], old);

    // A new password is an update of that one field, shown without either value.
    t.pg.password = new.into();
    let plan = t.ofctl(&["plan", "-f", m.arg(), "--format", "json"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    clean("json", &plan.stdout);
    let p = plan.json();
    let change = single_change(&p);
    assert_eq!(change["action"], "update");
    assert_eq!(change["risk"], "restarts");
    assert_eq!(
        change["diff"],
        json!([{"pointer": "/config/database.password", "path": "config[\"database.password\"]",
                "op": "change", "sensitive": true}])
    );
    let text = t.ofctl(&["plan", "-f", m.arg()]);
    clean("text", &text.stdout);
    assert!(
        text.stdout
            .contains("~ config[\"database.password\"] = (sensitive) (value changed)"),
        "{text:?}"
    );
    let md = t.ofctl(&["plan", "-f", m.arg(), "--format", "markdown"]);
    clean("markdown", &md.stdout);
    assert!(md.stdout.contains("🟠 restarts"), "{md:?}");
    let saved = m.path().join("update.plan.json");
    let saved_arg = saved.to_str().unwrap();
    let plan = t.ofctl(&["plan", "-f", m.arg(), "-o", saved_arg]);
    assert_eq!(plan.code, 2, "{plan:?}");
    clean("saved plan", &std::fs::read_to_string(&saved).unwrap());

    let apply = t.ofctl(&["apply", saved_arg]);
    assert_eq!(apply.code, 0, "{apply:?}");
    clean("apply", &(apply.stdout.clone() + &apply.stderr));
    let live = get(&format!("{url}/connectors/{NAME}/config")).await;
    assert_eq!(live["database.password"], new);
    assert_eq!(t.ofctl(&["plan", "-f", m.arg()]).code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_instances_are_noted_without_planning_a_change() {
    let sb = emulators(None, Default::default()).await;
    let t = emulated(&sb, "emulator-secret-pw-3");
    let url = t.connect_url.as_str();
    let m = ManifestDir::new();
    create(&t, &m, "running");
    post(&format!("{url}/__sandbox/connectors/{NAME}/tasks/0/fail")).await;

    let plan = t.ofctl(&["plan", "-f", m.arg()]);
    assert_eq!(plan.code, 0, "a failure is not a change: {plan:?}");
    assert!(
        plan.stdout.contains("Notes on unchanged resources:"),
        "{plan:?}"
    );
    assert!(
        plan.stdout.contains(&format!(
            "# KafkaConnector/{NAME}: task 0 is FAILED: org.apache.kafka.connect.errors.ConnectException: An exception occurred in the change event producer."
        )),
        "{plan:?}"
    );
    assert!(
        !plan.stdout.contains("\tat io.debezium"),
        "only the first trace line: {plan:?}"
    );

    post(&format!("{url}/__sandbox/connectors/{NAME}/fail")).await;
    let p = t.ofctl(&["plan", "-f", m.arg(), "--format", "json"]).json();
    let notes = p["changes"][0]["notes"].as_array().expect("notes");
    assert_eq!(p["changes"][0]["action"], "noop", "{p:#}");
    assert!(notes[0].as_str().unwrap().starts_with("the connector is FAILED: org.apache.kafka.connect.errors.ConnectException: sandbox: injected connector failure"), "{p:#}");
    assert!(
        notes[1].as_str().unwrap().starts_with("task 0 is FAILED"),
        "{p:#}"
    );
    assert!(
        notes[2]
            .as_str()
            .unwrap()
            .contains("restart?includeTasks=true&onlyFailed=true"),
        "{p:#}"
    );
}

/// The platform's own config history: the Tactical RMM connector as its register job shipped it
/// on 2025-09-17 and on 2025-10-30, where `topic.prefix` moved from `trmm_clients_users` to
/// `trmm`. Kafka Connect changes that in place; the plan says it is an update that risks a
/// re-snapshot, and it needs the same approval as a replace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_prefix_change_from_the_platform_history_is_an_approved_in_place_update() {
    let fixtures = support::platform_fixtures("debezium");
    let sb = emulators(None, Default::default()).await;
    let m = ManifestDir::new();
    m.write(
        "ofctl.toml",
        &format!(
            "[connect]\nurl = \"{}\"\n[variables]\nPOSTGRES_HOST = \"tactical-postgres\"\nPOSTGRES_PORT = \"5432\"\nPOSTGRES_USER = \"tactical\"\nPOSTGRES_PASSWORD = \"${{env:{PASSWORD_ENV}}}\"\nPOSTGRES_DB = \"tacticalrmm\"\n",
            sb.connect_url
        ),
    )
    .write(
        "connector.yaml",
        "apiVersion: ofctl.openframe.io/v1\nkind: KafkaConnector\nmetadata:\n  name: tactical-rmm-psql-connector\nspecFile: connector.json\n",
    );
    let version = |dir: &str| {
        std::fs::read_to_string(fixtures.join(dir).join("tactical-rmm-psql-connector.json"))
            .expect("read the connector fixture")
    };
    let password = "trmm-db-Secret-8";
    let run = |args: &[&str]| {
        let run = ofctl(args, &[("OFCTL_LOG", "info"), (PASSWORD_ENV, password)]);
        assert!(!run.stdout.contains(password) && !run.stderr.contains(password));
        run
    };
    m.write("connector.json", &version("2025-09-17_tenant-530144fc"));
    assert_eq!(run(&["apply", "-f", m.arg(), "--auto-approve"]).code, 0);
    m.write("connector.json", &version("2025-10-30_tenant-0e700b2a"));

    let p = run(&["plan", "-f", m.arg(), "--format", "json"]).json();
    let change = single_change(&p);
    assert_eq!(change["action"], "update", "{change:#}");
    assert_eq!(change["risk"], "destructive");
    let reason = change["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("config[\"topic.prefix\"] \"trmm_clients_users\" -> \"trmm\"")
            && reason.contains("re-snapshot")
            && reason.contains("in place"),
        "{reason}"
    );
    let blocked = change["blocked"].as_str().expect("needs approval");
    assert!(blocked.contains("--allow-replace"), "{blocked}");

    let refused = run(&["apply", "-f", m.arg(), "--auto-approve"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("nothing was applied"),
        "{refused:?}"
    );
    let apply = run(&["apply", "-f", m.arg(), "--auto-approve", "--allow-replace"]);
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_eq!(writes(&apply), 1, "one config PUT, no delete: {apply:?}");
    let live = get(&format!(
        "{}/connectors/tactical-rmm-psql-connector/config",
        sb.connect_url
    ))
    .await;
    assert_eq!(live["topic.prefix"], "trmm");
    assert_eq!(run(&["plan", "-f", m.arg()]).code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_in_its_target_state() {
    let sb = emulators(None, Default::default()).await;
    let t = emulated(&sb, "emulator-secret-pw-5");
    for (state, live) in [("paused", "PAUSED"), ("stopped", "STOPPED")] {
        let m = ManifestDir::new();
        // One POST with KIP-980 `initial_state`: it never runs in between.
        assert_eq!(writes(&create(&t, &m, state)), 1);
        wait_for(&t.connect_url, live).await;
        assert_eq!(t.ofctl(&["plan", "-f", m.arg()]).code, 0);
        let deleted = reqwest::Client::new()
            .delete(format!("{}/connectors/{NAME}", t.connect_url))
            .send()
            .await
            .expect("delete");
        assert_eq!(deleted.status(), 204);
    }
}

/// desired-state/connect with desired-state/ofctl.toml (its endpoint from OFCTL_CONNECT_URL).
fn platform_connectors() -> ManifestDir {
    let m = ManifestDir::new();
    m.copy_from("desired-state/connect");
    std::fs::copy(
        support::repo_root().join("desired-state/ofctl.toml"),
        m.path().join("ofctl.toml"),
    )
    .expect("copy ofctl.toml");
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platforms_connectors_converge() {
    let sb = emulators(None, Default::default()).await;
    let m = platform_connectors();
    let env = [
        ("OFCTL_CONNECT_URL", sb.connect_url.as_str()),
        ("OFCTL_LOG", "info"),
    ];

    let plan = ofctl(&["plan", "-f", m.arg(), "--format", "json"], &env);
    assert_eq!(plan.code, 2, "{plan:?}");
    assert_eq!(plan.json()["summary"]["create"], 4, "{plan:?}");
    let apply = ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &env);
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_eq!(writes(&apply), 4, "{apply:?}");
    let again = ofctl(&["plan", "-f", m.arg()], &env);
    assert_eq!(again.code, 0, "{again:?}");
    // Four connectors, each and its status by name.
    assert_eq!(
        again.logged_requests("read live state in")["connect"],
        json!({"reads": 8, "writes": 0})
    );
    for run in [&plan, &apply, &again] {
        assert!(!run.stdout.contains("dev-only-password"), "{run:?}");
        assert!(!run.stderr.contains("dev-only-password"), "{run:?}");
    }
    // The numbers of the platform's files are stored as strings; a re-plan still matches.
    let live = get(&format!(
        "{}/connectors/fleet-mysql-connector/config",
        sb.connect_url
    ))
    .await;
    assert_eq!(live["topic.creation.default.partitions"], "1");
    assert_eq!(live["database.include.list"], "fleet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_live_connectors_plans_as_a_noop() {
    let sb = emulators(None, Default::default()).await;
    let m = platform_connectors();
    let url = [("OFCTL_CONNECT_URL", sb.connect_url.as_str())];
    assert_eq!(
        ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &url).code,
        0
    );

    let out = ManifestDir::new();
    let config = m.path().join("ofctl.toml");
    let export = ofctl(
        &[
            "export",
            "-c",
            config.to_str().unwrap(),
            "--kind",
            "KafkaConnector",
            "-o",
            out.arg(),
        ],
        &url,
    );
    assert_eq!(export.code, 0, "{export:?}");
    let yaml = std::fs::read_to_string(out.path().join("kafkaconnector.yaml")).expect("export");
    assert!(!yaml.contains("dev-only-password"), "{yaml}");

    // Secrets come back as `${env:...}`: give each the live value, as an operator would.
    let mut env: Vec<(String, String)> = Vec::new();
    for doc in yaml_rust2::YamlLoader::load_from_str(&yaml).expect("exported YAML") {
        // The file opens with a comment and `---`: an empty first document.
        let Some(name) = doc["metadata"]["name"].as_str() else {
            continue;
        };
        let live = get(&format!("{}/connectors/{name}/config", sb.connect_url)).await;
        for (key, value) in doc["spec"]["config"].as_hash().expect("config") {
            let value = value.as_str().unwrap_or_default();
            if let Some(var) = value
                .strip_prefix("${env:")
                .and_then(|v| v.strip_suffix('}'))
            {
                let key = key.as_str().expect("key");
                env.push((
                    var.to_string(),
                    live[key].as_str().expect("live").to_string(),
                ));
            }
        }
    }
    assert_eq!(
        env.len(),
        4,
        "three passwords and a connection string: {env:?}"
    );
    out.write("ofctl.toml", &endpoint_config("connect", &sb.connect_url));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let plan = ofctl(&["plan", "-f", out.arg(), "--format", "json"], &env);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert_eq!(plan.json()["summary"]["noop"], 4, "{plan:?}");
}
