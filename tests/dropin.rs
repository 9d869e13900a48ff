//! `ofctl watch` as a drop-in for the management service: the shipped desired state over the
//! local stack (real NATS, Redis, Mongo-wire and Kafka-wire servers, the Pinot / Kafka Connect /
//! Tactical RMM emulators), the platform's register jobs replayed exactly as they run (the
//! newest body of every tool in the fixtures, `curl --retry 5 --retry-delay 2
//! --retry-all-errors`, JSON body, no token), then the release job, then `ofctl plan`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{
    desired_state, env_refs, kafka, mongo, nats, ofctl, platform_env, redis, Watch,
    DESIRED_STATE_SECRETS,
};

const API_KEY: &str = "tactical-Api-Key-2";
const RELEASE: &str = "1.7.3";

fn secret(name: &str) -> &'static str {
    DESIRED_STATE_SECRETS
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("{name} is a desired-state secret"))
}

/// The newest body of each tool the register jobs post (the fixture folders are named by date,
/// so the last folder holding a file name has its newest version).
fn newest_register_bodies() -> BTreeMap<String, PathBuf> {
    let root = support::platform_fixtures("integrated-tools");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("read integrated-tools fixtures")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut newest = BTreeMap::new();
    for dir in dirs {
        for file in std::fs::read_dir(&dir)
            .expect("read fixture folder")
            .flatten()
        {
            let name = file.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                newest.insert(name, file.path());
            }
        }
    }
    newest
}

/// What the register jobs' environment puts into each `${VAR}`: the in-cluster values the shipped
/// `desired-state/ofctl.toml` defaults to, and the credentials the test gives both sides. A job's
/// variables are its own; the three tools the manifest declares get the values of their databases.
fn job_variables(tool: &str) -> BTreeMap<&'static str, String> {
    let mut vars: BTreeMap<&'static str, String> = [
        ("AUTHENTIK_BOOTSTRAP_EMAIL", "akadmin@example.test"),
        ("AUTHENTIK_BOOTSTRAP_PASSWORD", "authentik-Pw-8"),
        ("AUTHENTIK_BOOTSTRAP_TOKEN", "authentik-Token-9"),
        ("CASSANDRA_USER", "cassandra"),
        ("CASSANDRA_PASSWORD", "cassandra-Pw-10"),
        ("GRAFANA_USER", "admin"),
        ("GRAFANA_PASSWORD", "grafana-Pw-11"),
        ("MONGO_USERNAME", "openframe"),
        ("MONGO_PASSWORD", "mongo-Pw-12"),
        ("SERVICE_USER", "service"),
        ("SERVICE_PASS", "nats-Pw-13"),
        ("REDIS_HOST", "redis.datasources.svc.cluster.local"),
        ("REDIS_PORT", "6379"),
        (
            "POSTGRES_HOST",
            "postgres.integrated-tools.svc.cluster.local",
        ),
        ("POSTGRES_PORT", "5432"),
        ("POSTGRES_USER", "postgres"),
        ("POSTGRES_PASSWORD", "postgres-Pw-14"),
        ("POSTGRES_DB", "postgres"),
        ("MYSQL_USER", "mysql"),
        ("MYSQL_PASSWORD", "mysql-Pw-15"),
        ("MYSQL_DATABASE", "mysql"),
        ("MONGODB_HOST", "mongodb.integrated-tools.svc.cluster.local"),
        ("MONGODB_PORT", "27017"),
        ("MONGO_INITDB_ROOT_USERNAME", "root"),
        ("MONGO_INITDB_ROOT_PASSWORD", "mongo-root-Pw-16"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    let own: Vec<(&'static str, &str)> = match tool {
        "tactical-rmm.json" => vec![
            ("TRMM_USER", secret("OFCTL_TRMM_USER")),
            ("TRMM_PASS", secret("OFCTL_TRMM_PASSWORD")),
            ("TACTICAL_API_KEY", API_KEY),
            (
                "POSTGRES_HOST",
                "tactical-postgres.integrated-tools.svc.cluster.local",
            ),
            ("POSTGRES_USER", "tactical"),
            ("POSTGRES_PASSWORD", secret("OFCTL_TRMM_DB_PASSWORD")),
            ("POSTGRES_DB", "tacticalrmm"),
        ],
        "fleetmdm-server.json" => vec![
            ("FLEET_SETUP_ADMIN_EMAIL", secret("OFCTL_FLEET_ADMIN_EMAIL")),
            (
                "FLEET_SETUP_ADMIN_PASSWORD",
                secret("OFCTL_FLEET_ADMIN_PASSWORD"),
            ),
            (
                "FLEET_MYSQL_HOST",
                "fleetmdm-mysql-0.fleetmdm-mysql.integrated-tools.svc.cluster.local",
            ),
            ("FLEET_MYSQL_PORT", "3306"),
            ("MYSQL_USER", "fleet"),
            ("MYSQL_PASSWORD", secret("OFCTL_FLEET_DB_PASSWORD")),
            ("MYSQL_DATABASE", "fleet"),
        ],
        "meshcentral-server.json" => vec![
            ("MESH_USER", secret("OFCTL_MESH_USER")),
            ("MESH_PASS", secret("OFCTL_MESH_PASSWORD")),
            (
                "MONGODB_HOST",
                "meshcentral-mongodb.integrated-tools.svc.cluster.local",
            ),
            ("MONGO_INITDB_ROOT_USERNAME", "admin"),
            (
                "MONGO_INITDB_ROOT_PASSWORD",
                secret("OFCTL_MESH_MONGO_PASSWORD"),
            ),
        ],
        _ => Vec::new(),
    };
    vars.extend(own.into_iter().map(|(k, v)| (k, v.to_string())));
    vars
}

/// The body with every `${VAR}` filled; an unknown variable fails the test, naming it.
fn filled(path: &Path, vars: &BTreeMap<&'static str, String>) -> String {
    let text = std::fs::read_to_string(path).expect("read fixture");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed placeholder") + start;
        let name = &rest[start + 2..end];
        let value = vars
            .get(name)
            .unwrap_or_else(|| panic!("{}: no value for ${{{name}}}", path.display()));
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// One request as the register jobs send it; returns (status, body).
fn curl_post(url: &str, body: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--retry",
            "5",
            "--retry-delay",
            "2",
            "--retry-all-errors",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            "-w",
            "\n%{http_code}",
            url,
        ])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), answer.to_string())
}

/// The id a register job posts to: its body's `id`, as a URL path segment.
fn path_id(body: &str) -> String {
    let v: Value = serde_json::from_str(body).expect("fixture body is JSON");
    let id = v["tool"]["id"].as_str().expect("tool.id").to_string();
    id.replace(' ', "%20")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_jobs_and_the_release_job_replay_against_the_shipped_desired_state() {
    let bodies = newest_register_bodies();
    assert!(bodies.len() >= 40, "{} fixture tools", bodies.len());
    let sandbox = ofctl::sandbox::start(ofctl::sandbox::SandboxOptions {
        tactical_api_key: API_KEY.into(),
        ..Default::default()
    })
    .await
    .expect("start the emulators");
    let (_n, nats_url) = nats();
    let (_k, brokers) = kafka();
    let (_m, mongo_uri) = mongo();
    let (_r, redis_url) = redis();
    let m = desired_state();
    // The register jobs send no token: the API's explicit opt-in, as a deployment for them sets it.
    let config = m.path().join("ofctl.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("\n[api]\n"),
        "the shipped config has an [api] table"
    );
    std::fs::write(
        &config,
        text.replacen("\n[api]\n", "\n[api]\nallow_unauthenticated = true\n", 1),
    )
    .unwrap();
    let mut env = platform_env(&sandbox, API_KEY, &nats_url, &brokers, &mongo_uri);
    env.push(("OFCTL_REDIS_URL".into(), redis_url));
    // The release version the deployment gives ofctl and the release job alike (one Helm value).
    env.push(("OFCTL_RELEASE_VERSION".into(), RELEASE.into()));
    let env = env_refs(&env);

    let watch = Watch::start_with_env(&["-f", m.arg(), "--interval", "1h"], &env);
    // The jobs poll the management port's health before they POST.
    let health = format!("{}/management/v1/health", watch.management);
    let ready = Watch::until(Duration::from_secs(60), || async {
        reqwest::get(&health)
            .await
            .is_ok_and(|r| r.status().as_u16() == 200)
    })
    .await;
    assert!(ready.is_some(), "{}", watch.log());
    let (_, drift) = watch.get("/v1/drift").await;
    let drift: Value = serde_json::from_str(&drift).unwrap();
    assert_eq!(drift["default"]["drift"], serde_json::json!([]), "{drift}");

    // Every register job, in the fixtures' order, exactly as the jobs send it.
    let mut answers = Vec::new();
    for (file, path) in &bodies {
        let body = filled(path, &job_variables(file));
        let url = format!("{}/v1/tools/{}", watch.api, path_id(&body));
        let (code, answer) = curl_post(&url, &body);
        answers.push((file.clone(), code, answer));
    }
    let failed: Vec<_> = answers.iter().filter(|(_, code, _)| *code != 200).collect();
    assert!(failed.is_empty(), "{failed:#?}\n{}", watch.log());
    // The declared tools were already as the jobs register them: nothing changed.
    let tactical = &answers
        .iter()
        .find(|(f, _, _)| f == "tactical-rmm.json")
        .unwrap()
        .2;
    let tactical: Value = serde_json::from_str(tactical).unwrap();
    for change in tactical["changes"].as_array().unwrap() {
        assert_eq!(change["result"], "unchanged", "{tactical}");
    }

    // The release job.
    let (code, answer) = curl_post(
        &format!("{}/v1/cluster-registrations", watch.api),
        &format!("{{\"imageTagVersion\": \"{RELEASE}\"}}"),
    );
    assert_eq!(code, 200, "{answer}");

    // Every tool is listed, credentials masked.
    let (code, list) = watch.get("/v1/tools").await;
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(
        list["tools"].as_array().unwrap().len(),
        bodies.len(),
        "{list}"
    );

    // The manifest's next plan has nothing to do.
    let plan = ofctl(&["plan", "-f", m.arg()], &env);
    assert_eq!(plan.code, 0, "{plan:?}");

    // A job body that would change a manifest-owned value is refused, naming the file and the
    // field, never the value; the release job with another version likewise.
    let mut vars = job_variables("tactical-rmm.json");
    vars.insert("TRMM_PASS", "a-Different-Pw-99".into());
    let body = filled(&bodies["tactical-rmm.json"], &vars);
    let (code, answer) = curl_post(&format!("{}/v1/tools/tactical-rmm", watch.api), &body);
    assert_eq!(code, 409, "{answer}");
    assert!(
        answer.contains("mongo/tools.yaml:")
            && answer.contains("credentials.password")
            && !answer.contains("a-Different-Pw-99"),
        "{answer}"
    );
    let (code, answer) = curl_post(
        &format!("{}/v1/cluster-registrations", watch.api),
        "{\"imageTagVersion\": \"9.9.9\"}",
    );
    assert_eq!(code, 409, "{answer}");
    assert!(
        answer.contains("mongo/platform.yaml:") && answer.contains("version"),
        "{answer}"
    );
    let plan = ofctl(&["plan", "-f", m.arg()], &env);
    assert_eq!(plan.code, 0, "{plan:?}");
    for secret in [secret("OFCTL_TRMM_PASSWORD"), API_KEY, "authentik-Pw-8"] {
        assert!(!watch.log().contains(secret), "a secret in the log");
    }
}

fn pg_connector(name: &str) -> Value {
    serde_json::json!({"name": name, "config": {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": "db", "database.port": "5432", "database.user": "u",
        "database.password": "Db-Secret-3e1", "database.dbname": "d",
        "topic.prefix": name.replace('-', "_"), "plugin.name": "pgoutput", "tasks.max": "1"}})
}

async fn connector_names(connect: &str) -> Vec<String> {
    reqwest::get(format!("{connect}/connectors"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Tools in Mongo are desired state too: the connectors of every enabled tool (registered
/// through the API, or written by the Java service) come back when Kafka Connect loses them,
/// within the first health run after the loss; an empty list is first taken for an outage;
/// a disabled tool's connector is never created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_emptied_gets_every_enabled_tools_connectors_back_within_one_health_interval() {
    const INTERVAL_S: u64 = 3;
    const RECHECK_S: u64 = 1;
    let sandbox = ofctl::sandbox::start(Default::default()).await.unwrap();
    let connect = sandbox.connect_url.clone();
    let (_m, mongo_uri) = mongo();
    let (_r, redis_url) = redis();
    let m = support::ManifestDir::new();
    m.write(
        "ofctl.toml",
        &format!(
            "tenant = \"t1\"\n[mongo]\nuri = \"{mongo_uri}\"\n[connect]\nurl = \"{connect}\"\n[redis]\nurl = \"{redis_url}\"\n\
             [api]\nallow_unauthenticated = true\n[watch]\ninterval = \"1h\"\n[jobs.connector_health]\ninterval = \"{INTERVAL_S}s\"\noutage_recheck = \"{RECHECK_S}s\"\nlock_at_least_for = \"200ms\"\n"
        ),
    )
    .write(
        "connector.yaml",
        &format!(
            "apiVersion: ofctl.openframe.io/v1\nkind: KafkaConnector\nmetadata:\n  name: declared-pg\nspec:\n  config: {}\n",
            pg_connector("declared-pg")["config"]
        ),
    );
    // As the Java service left them: one enabled tool with a connector, one disabled.
    let db = mongodb::Client::with_uri_str(&mongo_uri)
        .await
        .unwrap()
        .database("openframe");
    let tools = db.collection::<mongodb::bson::Document>("integrated_tools");
    for (id, enabled) in [("java-tool", true), ("off-tool", false)] {
        let connectors = vec![mongodb::bson::to_bson(&pg_connector(&format!("{id}-pg"))).unwrap()];
        tools
            .insert_one(mongodb::bson::doc! {
                "_id": id, "name": id, "enabled": enabled,
                "debeziumConnectors": connectors,
                "_class": "com.openframe.data.document.tool.IntegratedTool",
            })
            .await
            .unwrap();
    }
    let watch = Watch::start(&["-f", m.arg()]);
    let ready = Watch::until(Duration::from_secs(20), || async {
        watch.get("/readyz").await.0 == 200
    })
    .await;
    assert!(ready.is_some(), "{}", watch.log());
    let body = serde_json::json!({"tool": {"name": "API tool", "debeziumConnectors": [pg_connector("api-tool-pg")]}});
    let (code, answer) = curl_post(
        &format!("{}/v1/tools/api-tool", watch.api),
        &body.to_string(),
    );
    assert_eq!(code, 200, "{answer}");
    let expected = ["api-tool-pg", "declared-pg", "java-tool-pg"];
    let all_there = || async {
        let names = connector_names(&connect).await;
        expected.iter().all(|n| names.iter().any(|x| x == n))
    };
    assert!(
        Watch::until(Duration::from_secs(10), all_there)
            .await
            .is_some(),
        "{:?}\n{}",
        connector_names(&connect).await,
        watch.log()
    );

    // Kafka Connect loses every connector.
    for name in connector_names(&connect).await {
        let resp = reqwest::Client::new()
            .delete(format!("{connect}/connectors/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204);
    }
    assert!(connector_names(&connect).await.is_empty());
    let back = Watch::until(Duration::from_secs(30), all_there).await;
    let back = back.unwrap_or_else(|| panic!("not restored:\n{}", watch.log()));
    eprintln!("connectors restored {back:?} after Kafka Connect lost them (health interval {INTERVAL_S}s, outage re-check {RECHECK_S}s)");
    // The first health tick after the loss (≤ one interval), its confirmation, and a pass.
    assert!(
        back <= Duration::from_secs(INTERVAL_S + RECHECK_S + 2),
        "restored after {back:?}"
    );
    let log = watch.log();
    assert!(log.contains("treated as an outage"), "{log}");
    assert!(log.contains("they are lost, reconciling"), "{log}");
    assert!(
        !connector_names(&connect)
            .await
            .contains(&"off-tool-pg".to_string()),
        "a disabled tool's connector was created"
    );
    assert!(!log.contains("Db-Secret-3e1"), "a secret in the log");
}

/// A JSON file as the Java service stored it: `id` as `_id`, the class's defaults written for
/// every field the file leaves out (primitive booleans `false`, `installationType` STANDARD),
/// a completed publishState and Spring's `_class`.
fn java_document(file: &Value, class: &str, defaults: &[(&str, Value)]) -> mongodb::bson::Document {
    fn fill(v: &mut Value, path: &[&str], default: &Value) {
        match path {
            [] => {}
            ["*", rest @ ..] => {
                for item in v.as_array_mut().into_iter().flatten() {
                    fill(item, rest, default);
                }
            }
            [key] => {
                if let Some(o) = v.as_object_mut() {
                    o.entry(key.to_string()).or_insert(default.clone());
                }
            }
            [key, rest @ ..] => {
                if let Some(inner) = v.get_mut(*key) {
                    fill(inner, rest, default);
                }
            }
        }
    }
    let mut v = file.clone();
    for (path, default) in defaults {
        fill(&mut v, &path.split('/').collect::<Vec<_>>(), default);
    }
    let mut map = v.as_object().unwrap().clone();
    let id = map.shift_remove("id").unwrap();
    let mut doc = mongodb::bson::doc! {"_id": mongodb::bson::to_bson(&id).unwrap()};
    for (k, v) in map {
        doc.insert(k, mongodb::bson::to_bson(&v).unwrap());
    }
    doc.insert(
        "publishState",
        mongodb::bson::doc! {"published": true, "publishedAt": mongodb::bson::DateTime::now(), "attempts": 0},
    );
    doc.insert("_class", class);
    doc
}

/// Documents the Java service wrote, class defaults included (openframe.md §7, §8), plan as
/// no-ops against the manifest files they came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_written_documents_with_class_defaults_plan_as_noops() {
    let (_n, nats_url) = nats();
    let (_m, mongo_uri) = mongo();
    let dir = support::ManifestDir::new();
    dir.write(
        "ofctl.toml",
        &format!("[nats]\nurl = \"{nats_url}\"\n[mongo]\nuri = \"{mongo_uri}\"\n"),
    )
    .write(
        "agents.yaml",
        &std::fs::read_to_string(support::repo_root().join("desired-state/mongo/agents.yaml"))
            .unwrap(),
    )
    .write(
        "client.yaml",
        "apiVersion: ofctl.openframe.io/v1\nkind: ClientConfiguration\nmetadata:\n  name: default\nspecFile: client-configuration.json\n",
    )
    .write(
        "client-configuration.json",
        &std::fs::read_to_string(
            support::repo_root().join("desired-state/mongo/client-configuration.json"),
        )
        .unwrap(),
    );
    let db = mongodb::Client::with_uri_str(&mongo_uri)
        .await
        .unwrap()
        .database("openframe");
    let agent_defaults = [
        ("releaseVersion", Value::Bool(false)),
        ("allowVersionUpdate", Value::Bool(false)),
        ("allowConfigurationUpdate", Value::Bool(false)),
        (
            "downloadConfigurations/*/installationType",
            "STANDARD".into(),
        ),
        ("assets/*/executable", Value::Bool(false)),
        (
            "assets/*/downloadConfigurations/*/installationType",
            "STANDARD".into(),
        ),
    ];
    let agents_dir = support::repo_root().join("desired-state/mongo/agents");
    let mut files: Vec<_> = std::fs::read_dir(&agents_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        dir.write(
            &format!("agents/{}", path.file_name().unwrap().to_string_lossy()),
            &text,
        );
        let file: Value = serde_json::from_str(&text).unwrap();
        db.collection::<mongodb::bson::Document>("integrated_tool_agents")
            .insert_one(java_document(
                &file,
                "com.openframe.data.document.toolagent.IntegratedToolAgent",
                &agent_defaults,
            ))
            .await
            .unwrap();
    }
    let client: Value = serde_json::from_str(
        &std::fs::read_to_string(
            support::repo_root().join("desired-state/mongo/client-configuration.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut client_doc = java_document(
        &client,
        "com.openframe.data.document.clientconfiguration.OpenFrameClientConfiguration",
        &[(
            "downloadConfiguration/*/installationType",
            "STANDARD".into(),
        )],
    );
    client_doc.insert("createdAt", mongodb::bson::DateTime::now());
    client_doc.insert("updatedAt", mongodb::bson::DateTime::now());
    db.collection::<mongodb::bson::Document>("openframe_client_configuration")
        .insert_one(client_doc)
        .await
        .unwrap();

    let plan = ofctl(&["plan", "-f", dir.arg(), "--format", "json"], &[]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert_eq!(plan.json()["summary"]["noop"], files.len() + 1, "{plan:?}");
}

/// `[tactical]` without an API key (and here without a URL): ofctl reads both from the
/// `tactical-rmm` tool document as the register job stored it, as the Java service did, and
/// never prints the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tactical_address_and_key_come_from_the_tool_document() {
    let sandbox = ofctl::sandbox::start(ofctl::sandbox::SandboxOptions {
        tactical_api_key: API_KEY.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (_m, mongo_uri) = mongo();
    let dir = support::ManifestDir::new();
    dir.write(
        "ofctl.toml",
        &format!(
            "[mongo]\nuri = \"{mongo_uri}\"\n[tactical]\nurl = \"${{env:OFCTL_TACTICAL_URL:-}}\"\n"
        ),
    )
    .write(
        "scripts.yaml",
        &std::fs::read_to_string(support::repo_root().join("desired-state/tactical/scripts.yaml"))
            .unwrap(),
    )
    .write(
        "openframe-client-update.ps1",
        &std::fs::read_to_string(
            support::repo_root().join("desired-state/tactical/openframe-client-update.ps1"),
        )
        .unwrap(),
    );
    // The register job's body, its API address pointed at the emulator.
    let (host, port) = sandbox.tactical_url.rsplit_once(':').expect("host:port");
    let mut vars = job_variables("tactical-rmm.json");
    let body = filled(&newest_register_bodies()["tactical-rmm.json"], &vars);
    let store = |body: String, host: String, port: String| {
        let mongo_uri = mongo_uri.clone();
        async move {
            let mut tool: Value = serde_json::from_str(&body).unwrap();
            let tool = tool["tool"].take();
            let mut doc = mongodb::bson::to_document(&tool).unwrap();
            doc.remove("id");
            doc.insert("_id", "tactical-rmm");
            let urls = doc.get_array_mut("toolUrls").unwrap();
            for u in urls.iter_mut() {
                let u = u.as_document_mut().unwrap();
                if u.get_str("type").unwrap() == "API" {
                    u.insert("url", host.clone());
                    u.insert("port", port.clone());
                }
            }
            let tools = mongodb::Client::with_uri_str(&mongo_uri)
                .await
                .unwrap()
                .database("openframe")
                .collection::<mongodb::bson::Document>("integrated_tools");
            tools
                .replace_one(mongodb::bson::doc! {"_id": "tactical-rmm"}, doc)
                .upsert(true)
                .await
                .unwrap();
        }
    };
    store(body, host.to_string(), port.to_string()).await;
    let env = [("OFCTL_LOG", "debug")];
    let plan = ofctl(&["plan", "-f", dir.arg()], &env);
    assert_eq!(plan.code, 2, "{plan:?}");
    let apply = ofctl(&["apply", "-f", dir.arg(), "--auto-approve"], &env);
    assert_eq!(apply.code, 0, "{apply:?}");
    let again = ofctl(&["plan", "-f", dir.arg()], &env);
    assert_eq!(again.code, 0, "{again:?}");
    for run in [&plan, &apply, &again] {
        assert!(
            !run.stdout.contains(API_KEY) && !run.stderr.contains(API_KEY),
            "the key was printed: {run:?}"
        );
    }

    // A document with a key Tactical rejects: the error says so, without the key.
    vars.insert("TACTICAL_API_KEY", "wrong-Key-77".into());
    let body = filled(&newest_register_bodies()["tactical-rmm.json"], &vars);
    store(body, host.to_string(), port.to_string()).await;
    let refused = ofctl(&["plan", "-f", dir.arg()], &env);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("API key was rejected") && !refused.stderr.contains("wrong-Key-77"),
        "{refused:?}"
    );

    // No document and no config: the error names the key to set.
    mongodb::Client::with_uri_str(&mongo_uri)
        .await
        .unwrap()
        .database("openframe")
        .collection::<mongodb::bson::Document>("integrated_tools")
        .delete_many(mongodb::bson::doc! {})
        .await
        .unwrap();
    let missing = ofctl(&["plan", "-f", dir.arg()], &env);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("tactical.url"), "{missing:?}");
}
