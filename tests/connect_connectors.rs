//! Kafka Connect connectors end to end through the real `ofctl` binary. One scenario runs
//! against a real Kafka Connect 3.9 with Debezium 3.0.7 capturing a real PostgreSQL (started
//! with `scripts/dev-stack.sh up --with-connect`) and against the in-process emulator.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{ofctl, tools_dir, DevStack, ManifestDir, Run};

const NAME: &str = "e2e-pg";
/// The environment variable the manifest takes the database password from.
const PASSWORD_ENV: &str = "OFCTL_E2E_PG_PASSWORD";

/// PostgreSQL as Debezium reaches it.
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
            "[connect]\nurl = \"{}\"\n\n[variables]\nPG_HOST = \"{}\"\nPG_PORT = \"{}\"\nPG_USER = \"{}\"\nPG_DB = \"{}\"\n",
            self.connect_url, self.pg.host, self.pg.port, self.pg.user, self.pg.db
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
    assert_eq!(live["ofctl.openframe.io/managed-by"], "ofctl");

    // Unchanged manifest: one bulk read, nothing to do.
    let noop = t.ofctl(&["plan", "-f", m.arg()]);
    assert_eq!(noop.code, 0, "{noop:?}");
    assert!(noop.stdout.contains("No changes"), "{noop:?}");
    assert_eq!(
        noop.logged_requests("read live state in")["connect"],
        serde_json::json!({"reads": 1, "writes": 0}),
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
        serde_json::json!([{"pointer": "/config/poll.interval.ms", "path": "config[\"poll.interval.ms\"]",
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
    let prune = t.ofctl(&["apply", "-f", m.arg(), "--prune", "--auto-approve"]);
    assert_eq!(prune.code, 0, "{prune:?}");
    assert_eq!(writes(&prune), 1, "{prune:?}");
    let names = get(&format!("{url}/connectors")).await;
    assert_eq!(names, serde_json::json!([]), "{prune:?}");
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
    scenario(&target).await;
    eprintln!("real connect: whole test {:?}", started.elapsed());
}
