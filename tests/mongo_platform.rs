//! Platform documents in MongoDB end to end: the real ofctl binary against a real Mongo-wire
//! server (SecantusDB) and a real nats-server, counting the update messages JetStream stored.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use mongodb::bson::{doc, Bson, Document};
use serde_json::{json, Map, Value};
use support::{change, mongo, nats, ofctl, ManifestDir, Run, Server, DESIRED_STATE_SECRETS};

/// Real NATS and Mongo-wire servers, plus the sandbox's Kafka Connect emulator for the
/// connectors a tool carries (used once the build has the KafkaConnector kind). The sandbox runs
/// on the test's runtime, so tests using it run on a multi-threaded one.
struct Stack {
    _nats: Server,
    _mongo: Server,
    sandbox: ofctl::sandbox::Sandbox,
    nats_url: String,
    mongo_uri: String,
}

impl Stack {
    async fn start() -> Self {
        let (n, nats_url) = nats();
        let (m, mongo_uri) = mongo();
        let sandbox = support::emulators(None, Default::default()).await;
        Self {
            _nats: n,
            _mongo: m,
            sandbox,
            nats_url,
            mongo_uri,
        }
    }

    /// Environment for `desired-state/ofctl.toml`: endpoints, credentials, release version.
    fn env(&self, release: &str) -> Vec<(&str, String)> {
        let mut env: Vec<(&str, String)> = DESIRED_STATE_SECRETS
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .collect();
        env.push(("OFCTL_NATS_URL", self.nats_url.clone()));
        env.push(("OFCTL_MONGO_URI", self.mongo_uri.clone()));
        env.push(("OFCTL_RELEASE_VERSION", release.to_string()));
        env.push(("OFCTL_CONNECT_URL", self.sandbox.connect_url.clone()));
        env
    }

    fn run(&self, args: &[&str], release: &str) -> Run {
        let env = self.env(release);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ofctl(args, &env)
    }

    async fn db(&self) -> mongodb::Database {
        mongodb::Client::with_uri_str(&self.mongo_uri)
            .await
            .expect("connect to test mongo")
            .database("openframe")
    }
}

/// The NATS and Mongo parts of `desired-state/` (and the Connect part, whose connectors the
/// tools also carry) with its target config.
fn platform_manifest() -> ManifestDir {
    let m = ManifestDir::new();
    for part in ["nats", "mongo", "connect"] {
        m.copy_from(&format!("desired-state/{part}"));
    }
    std::fs::copy(
        support::repo_root().join("desired-state/ofctl.toml"),
        m.path().join("ofctl.toml"),
    )
    .expect("copy ofctl.toml");
    m
}

/// A document as JSON (relaxed Extended JSON: dates as `{"$date": ...}`).
fn as_json(doc: &Document) -> Value {
    Bson::Document(doc.clone()).into_relaxed_extjson()
}

async fn find(db: &mongodb::Database, collection: &str, filter: Document) -> Vec<Document> {
    use futures::TryStreamExt;
    db.collection::<Document>(collection)
        .find(filter)
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("cursor")
}

async fn one(db: &mongodb::Database, collection: &str, id: &str) -> Document {
    find(db, collection, doc! {"_id": id})
        .await
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{collection}/{id} missing"))
}

/// Message count per subject in a JetStream stream.
async fn subject_counts(url: &str, stream: &str) -> BTreeMap<String, u64> {
    let client = async_nats::connect(url).await.expect("connect");
    let msg = client
        .request(
            format!("$JS.API.STREAM.INFO.{stream}"),
            serde_json::to_vec(&json!({"subjects_filter": ">"}))
                .unwrap()
                .into(),
        )
        .await
        .expect("stream info");
    let info: Value = serde_json::from_slice(&msg.payload).expect("json");
    assert!(info.get("error").is_none(), "{info}");
    info["state"]["subjects"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

async fn count(url: &str, stream: &str, subject: &str) -> u64 {
    subject_counts(url, stream)
        .await
        .get(subject)
        .copied()
        .unwrap_or(0)
}

async fn total(url: &str, stream: &str) -> u64 {
    subject_counts(url, stream).await.values().sum()
}

/// The last message on a subject, as JSON.
async fn last_message(url: &str, stream: &str, subject: &str) -> Value {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.expect("connect"));
    let stream = js.get_stream(stream).await.expect("stream");
    let msg = stream
        .get_last_raw_message_by_subject(subject)
        .await
        .expect("a message on the subject");
    serde_json::from_slice(&msg.payload).expect("json payload")
}

fn read_json(path: &Path) -> Map<String, Value> {
    serde_json::from_str::<Value>(&std::fs::read_to_string(path).expect("read"))
        .expect("json")
        .as_object()
        .cloned()
        .expect("object")
}

/// What the platform stores for an agent/client file: `id` becomes `_id`, `_class` added.
fn expected_doc(mut body: Map<String, Value>, class: &str) -> Map<String, Value> {
    let id = body.shift_remove("id").expect("id");
    let mut out = Map::new();
    out.insert("_id".into(), id);
    out.extend(body);
    out.insert("_class".into(), json!(class));
    out
}

/// A stored document without what the platform adds on its own (bookkeeping, auditing).
fn content(doc: &Document) -> Map<String, Value> {
    let mut v = as_json(doc).as_object().cloned().expect("object");
    for k in ["publishState", "createdAt", "updatedAt"] {
        v.shift_remove(k);
    }
    v
}

fn sorted(m: Map<String, Value>) -> BTreeMap<String, Value> {
    m.into_iter().collect()
}

const AGENT_CLASS: &str = "com.openframe.data.document.toolagent.IntegratedToolAgent";
const CLIENT_CLASS: &str =
    "com.openframe.data.document.clientconfiguration.OpenFrameClientConfiguration";

fn secret(name: &str) -> &'static str {
    DESIRED_STATE_SECRETS
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| *v)
        .expect("known secret")
}

/// A desired-state tool file with its placeholders resolved as the test environment and the
/// config's defaults resolve them.
fn resolved_tool(path: &Path) -> Map<String, Value> {
    let mut text = std::fs::read_to_string(path).expect("read tool");
    for (k, v) in DESIRED_STATE_SECRETS {
        text = text.replace(&format!("${{env:{k}}}"), v);
    }
    let defaults = [
        (
            "TRMM_DB_HOST",
            "tactical-postgres.integrated-tools.svc.cluster.local",
        ),
        ("TRMM_DB_PORT", "5432"),
        ("TRMM_DB_USER", "tactical"),
        ("TRMM_DB_NAME", "tacticalrmm"),
        ("TRMM_DB_PASSWORD", secret("OFCTL_TRMM_DB_PASSWORD")),
        (
            "FLEET_DB_HOST",
            "fleetmdm-mysql-0.fleetmdm-mysql.integrated-tools.svc.cluster.local",
        ),
        ("FLEET_DB_PORT", "3306"),
        ("FLEET_DB_USER", "fleet"),
        ("FLEET_DB_NAME", "fleet"),
        ("FLEET_DB_PASSWORD", secret("OFCTL_FLEET_DB_PASSWORD")),
        (
            "MESH_MONGO_HOST",
            "meshcentral-mongodb.integrated-tools.svc.cluster.local",
        ),
        ("MESH_MONGO_PORT", "27017"),
        ("MESH_MONGO_USER", "admin"),
        ("MESH_MONGO_PASSWORD", secret("OFCTL_MESH_MONGO_PASSWORD")),
        (
            "KAFKA_BOOTSTRAP_SERVERS",
            "kafka-broker-headless.datasources.svc.cluster.local:9092",
        ),
    ];
    for (k, v) in defaults {
        text = text.replace(&format!("${{{k}}}"), v);
    }
    assert!(!text.contains("${"), "unresolved placeholder in {text}");
    let body: Value = serde_json::from_str(&text).expect("json");
    body["tool"].as_object().cloned().expect("tool body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_state_is_stored_as_the_platform_expects_and_replans_as_a_noop() {
    let stack = Stack::start().await;
    let m = platform_manifest();

    let plan = stack.run(&["plan", "-f", m.arg(), "--format", "json"], "0.1.0");
    assert_eq!(plan.code, 2, "{plan:?}");
    let p = plan.json();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for c in p["changes"].as_array().unwrap() {
        assert_eq!(c["action"], "create", "{c}");
        let address = c["address"].as_str().unwrap();
        *kinds
            .entry(address.split('/').next().unwrap().to_string())
            .or_default() += 1;
    }
    // Each tool's connectors are planned as KafkaConnector resources after their tool, when
    // this build has that kind; otherwise they live in the tool documents only.
    let connectors = [
        ("tactical-rmm-psql-connector", "tactical-rmm"),
        ("tactical-rmm-psql-task-result-connector", "tactical-rmm"),
        ("fleet-mysql-connector", "fleetmdm-server"),
        ("meshcentral-mongo-connector", "meshcentral-server"),
    ];
    if ofctl::registry::kind_info("KafkaConnector").is_some() {
        assert_eq!(kinds.remove("KafkaConnector"), Some(connectors.len()));
        for (name, tool) in connectors {
            let c = change(&p, &format!("KafkaConnector/{name}"));
            assert!(
                c["depends_on"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(format!("IntegratedTool/{tool}"))),
                "{c}"
            );
        }
    }
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("ClientConfiguration".to_string(), 1),
            ("IntegratedTool".to_string(), 3),
            ("NatsStream".to_string(), 5),
            ("RegistrationSecret".to_string(), 1),
            ("ReleaseVersion".to_string(), 1),
            ("ToolAgent".to_string(), 4),
        ]),
        "{plan:?}"
    );
    // Credentials never reach any output.
    for format in ["text", "json", "markdown"] {
        let out = stack.run(&["plan", "-f", m.arg(), "--format", format], "0.1.0");
        for (name, value) in DESIRED_STATE_SECRETS {
            if name.contains("PASSWORD") || name.contains("KEY") {
                assert!(!out.stdout.contains(value), "{name} leaked in {format}");
            }
        }
    }
    assert_eq!(
        change(&p, "IntegratedTool/tactical-rmm")["diff"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["path"] == "credentials")
            .expect("credentials diff")["sensitive"],
        true
    );

    let apply = stack.run(&["apply", "-f", m.arg(), "--auto-approve"], "0.1.0");
    assert_eq!(apply.code, 0, "{apply:?}");
    // A no-op plan finds in each of the five collections once (the release version's
    // followers, the client configuration and the agents, come from the same finds as those
    // kinds; the Tactical key's tool document from the tools') and writes nothing.
    let env = stack.env("0.1.0");
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("OFCTL_LOG", "info"));
    let again = ofctl(&["plan", "-f", m.arg()], &env);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("No changes"), "{again:?}");
    assert!(
        again.stderr.contains(r#""mongo":{"reads":5,"writes":0}"#),
        "{again:?}"
    );

    let db = stack.db().await;
    let ds = support::repo_root().join("desired-state/mongo");
    // Agents: the platform's file field for field, `_id` from `id`, `_class`; the release
    // agent gets the release version.
    for (file, id) in [
        ("fleetmdm-agent", "fleetmdm-agent"),
        ("meshcentral-agent", "meshcentral-agent"),
        ("tacticalrmm-agent", "tacticalrmm-agent"),
        ("openframe-chat-agent", "openframe-chat"),
    ] {
        let mut expected = expected_doc(
            read_json(&ds.join(format!("agents/{file}.json"))),
            AGENT_CLASS,
        );
        if id == "openframe-chat" {
            expected.insert("version".into(), json!("0.1.0"));
        }
        let stored = one(&db, "integrated_tool_agents", id).await;
        assert_eq!(sorted(content(&stored)), sorted(expected), "{id}");
        // Verbatim device-side placeholders and link templates.
        assert!(as_json(&stored).to_string().contains("${client.serverUrl}"));
        assert!(as_json(&stored).to_string().contains("{version}"));
        assert!(
            stored.get("publishState").is_none(),
            "new agents publish nothing"
        );
    }
    // Client configuration: the file plus the release version and Spring auditing dates.
    let client = one(&db, "openframe_client_configuration", "default").await;
    let mut expected = expected_doc(
        read_json(&ds.join("client-configuration.json")),
        CLIENT_CLASS,
    );
    expected.insert("version".into(), json!("0.1.0"));
    assert_eq!(sorted(content(&client)), sorted(expected));
    assert!(matches!(client.get("createdAt"), Some(Bson::DateTime(_))));
    assert!(matches!(client.get("updatedAt"), Some(Bson::DateTime(_))));
    // Tools: the register job's `tool` body, resolved, with `_id` and `_class`.
    for id in ["tactical-rmm", "fleetmdm-server", "meshcentral-server"] {
        let expected = expected_doc(
            resolved_tool(&ds.join(format!("tools/{id}.json"))),
            "com.openframe.data.document.tool.IntegratedTool",
        );
        let stored = one(&db, "integrated_tools", id).await;
        assert_eq!(sorted(content(&stored)), sorted(expected), "{id}");
    }
    let tactical = one(&db, "integrated_tools", "tactical-rmm").await;
    assert!(
        matches!(tactical.get_document("credentials").unwrap().get("password"), Some(Bson::String(s)) if s == secret("OFCTL_TRMM_PASSWORD"))
    );
    assert!(matches!(tactical.get("layerOrder"), Some(Bson::Int32(3))));
    // Release version: one document, as ReleaseVersionService stored it.
    let releases = find(&db, "release_versions", doc! {}).await;
    assert_eq!(releases.len(), 1);
    assert!(matches!(releases[0].get("_id"), Some(Bson::ObjectId(_))));
    assert_eq!(releases[0].get_str("version").unwrap(), "0.1.0");
    assert_eq!(
        releases[0].get_str("_class").unwrap(),
        "com.openframe.data.document.version.ReleaseVersion"
    );
    assert!(matches!(
        releases[0].get("createdAt"),
        Some(Bson::DateTime(_))
    ));
    // Registration secret: encrypted the way the platform decrypts it.
    let secrets = find(&db, "agent_registration_secrets", doc! {}).await;
    assert_eq!(secrets.len(), 1);
    let s = &secrets[0];
    assert!(s.get_bool("active").unwrap());
    assert_eq!(
        s.get_str("_class").unwrap(),
        "com.openframe.data.document.agent.AgentRegistrationSecret"
    );
    let stored_key = s.get_str("secretKey").unwrap().to_string();
    let plain = support::decrypt_with_python(
        &stored_key,
        secret("OFCTL_ENCRYPTION_PASSWORD"),
        secret("OFCTL_ENCRYPTION_SALT"),
    );
    assert_eq!(plain.len(), 32, "24 bytes as padded URL-safe Base64");
    assert!(plain
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert!(!apply.stdout.contains(&plain) && !apply.stderr.contains(&plain));

    // Creating documents announces nothing; a second apply changes nothing, not the secret.
    assert_eq!(total(&stack.nats_url, "TOOL_UPDATE").await, 0);
    assert_eq!(total(&stack.nats_url, "CLIENT_UPDATE").await, 0);
    let apply = stack.run(&["apply", "-f", m.arg(), "--auto-approve"], "0.1.0");
    assert_eq!(apply.code, 0, "{apply:?}");
    let secrets = find(&db, "agent_registration_secrets", doc! {}).await;
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].get_str("secretKey").unwrap(), stored_key);
}

/// desired-state plus a second release agent, applied at release 0.1.0.
async fn platform_at_0_1_0(stack: &Stack) -> ManifestDir {
    let m = platform_manifest();
    let chat = std::fs::read_to_string(m.path().join("agents/openframe-chat-agent.json"))
        .unwrap()
        .replace("\"openframe-chat\"", "\"second-release-agent\"");
    m.write("agents/second-release-agent.json", &chat).write(
        "second.yaml",
        "apiVersion: ofctl.openframe.io/v1\nkind: ToolAgent\nmetadata:\n  name: second-release-agent\nspecFile: agents/second-release-agent.json\n",
    );
    let apply = stack.run(&["apply", "-f", m.arg(), "--auto-approve"], "0.1.0");
    assert_eq!(apply.code, 0, "{apply:?}");
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_bump_publishes_the_client_and_each_release_agent_once() {
    let stack = Stack::start().await;
    let m = platform_at_0_1_0(&stack).await;
    let url = &stack.nats_url;

    let plan = stack.run(&["plan", "-f", m.arg(), "--format", "json"], "0.3.0");
    assert_eq!(plan.code, 2, "{plan:?}");
    let p = plan.json();
    assert_eq!(
        p["summary"]["update"], 1,
        "only the release version changes: {plan:?}"
    );
    let release = change(&p, "ReleaseVersion/cluster");
    assert_eq!(release["diff"][0]["before"], "0.1.0");
    assert_eq!(release["diff"][0]["after"], "0.3.0");
    assert!(
        release["notes"][0]
            .as_str()
            .unwrap()
            .contains("publishes each once"),
        "{release}"
    );

    let apply = stack.run(&["apply", "-f", m.arg(), "--auto-approve"], "0.3.0");
    assert_eq!(apply.code, 0, "{apply:?}");
    let tools = subject_counts(url, "TOOL_UPDATE").await;
    assert_eq!(
        tools,
        BTreeMap::from([
            ("machine.all.tool.openframe-chat.update".to_string(), 1),
            (
                "machine.all.tool.second-release-agent.update".to_string(),
                1
            ),
        ])
    );
    assert_eq!(
        subject_counts(url, "CLIENT_UPDATE").await,
        BTreeMap::from([("machine.all.client-update".to_string(), 1)])
    );
    let client = last_message(url, "CLIENT_UPDATE", "machine.all.client-update").await;
    assert_eq!(client["version"], "0.3.0");
    assert_eq!(
        client["downloadConfigurations"][0],
        json!({
            "os": "windows",
            "fileName": "openframe-client_windows.zip",
            "agentFileName": "openframe-client.exe",
            "link": "https://github.com/flamingo-stack/openframe-oss-tenant/releases/download/0.3.0/openframe-client_windows.zip",
            "installationType": "STANDARD",
            "bundleId": null,
            "serviceName": null
        })
    );
    let chat = last_message(url, "TOOL_UPDATE", "machine.all.tool.openframe-chat.update").await;
    assert_eq!(chat["toolAgentId"], "openframe-chat");
    assert_eq!(chat["version"], "0.3.0");
    assert_eq!(chat["sessionType"], "USER");
    assert!(chat["downloadConfigurations"][1]["link"]
        .as_str()
        .unwrap()
        .contains("/download/0.3.0/openframe-chat_macos.tar.gz"));

    let db = stack.db().await;
    for (collection, id) in [
        ("integrated_tool_agents", "openframe-chat"),
        ("integrated_tool_agents", "second-release-agent"),
        ("openframe_client_configuration", "default"),
    ] {
        let d = one(&db, collection, id).await;
        assert_eq!(d.get_str("version").unwrap(), "0.3.0", "{id}");
        let state = d.get_document("publishState").unwrap();
        assert!(state.get_bool("published").unwrap(), "{id}");
        assert_eq!(state.get_i32("attempts").unwrap(), 0);
        assert!(matches!(state.get("publishedAt"), Some(Bson::DateTime(_))));
    }
    // Non-release agents keep their own versions and were not announced.
    assert_eq!(
        one(&db, "integrated_tool_agents", "fleetmdm-agent")
            .await
            .get_str("version")
            .unwrap(),
        "0.2.0"
    );

    // Converged: nothing to plan, and applying again publishes nothing.
    let again = stack.run(&["plan", "-f", m.arg()], "0.3.0");
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(
        stack
            .run(&["apply", "-f", m.arg(), "--auto-approve"], "0.3.0")
            .code,
        0
    );
    assert_eq!(total(url, "TOOL_UPDATE").await, 2);
    assert_eq!(total(url, "CLIENT_UPDATE").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_write_and_publish_is_repaired_by_the_next_apply_exactly_once() {
    let stack = Stack::start().await;
    let m = platform_at_0_1_0(&stack).await;
    let url = &stack.nats_url;
    assert_eq!(
        stack
            .run(&["apply", "-f", m.arg(), "--auto-approve"], "0.3.0")
            .code,
        0
    );
    let db = stack.db().await;
    let agents = db.collection::<Document>("integrated_tool_agents");

    // 1. The write happened, the publish did not: fleetmdm-agent's document says pending.
    agents
        .update_one(
            doc! {"_id": "fleetmdm-agent"},
            doc! {"$set": {"publishState": {"published": false, "publishedAt": Bson::Null, "attempts": 0}}},
        )
        .await
        .unwrap();
    let plan = stack.run(&["plan", "-f", m.arg(), "--format", "json"], "0.3.0");
    assert_eq!(plan.code, 2, "{plan:?}");
    let p = plan.json();
    assert_eq!(p["summary"]["update"], 1, "{plan:?}");
    let c = change(&p, "ToolAgent/fleetmdm-agent");
    assert_eq!(
        c["diff"],
        json!([{"pointer": "/publish", "path": "publish", "op": "remove", "before": "pending"}])
    );
    assert!(
        c["notes"][0]
            .as_str()
            .unwrap()
            .starts_with("publish pending"),
        "{c}"
    );
    let text = stack.run(&["plan", "-f", m.arg()], "0.3.0");
    assert!(text.stdout.contains("publish pending"), "{text:?}");

    let apply = stack.run(&["apply", "-f", m.arg(), "--auto-approve"], "0.3.0");
    assert_eq!(apply.code, 0, "{apply:?}");
    let subject = "machine.all.tool.fleetmdm-agent.update";
    assert_eq!(count(url, "TOOL_UPDATE", subject).await, 1);
    let msg = last_message(url, "TOOL_UPDATE", subject).await;
    assert_eq!(msg["version"], "0.2.0");
    assert_eq!(msg["assets"][0]["assetId"], "osqueryd");
    assert_eq!(
        msg["assets"][0]["downloadConfigurations"][0]["link"],
        "https://github.com/flamingo-stack/osquery/releases/download/0.0.6/osquery-windows-amd64.zip"
    );
    let state = one(&db, "integrated_tool_agents", "fleetmdm-agent").await;
    let state = state.get_document("publishState").unwrap();
    assert!(state.get_bool("published").unwrap());
    assert_eq!(
        state.get_i32("attempts").unwrap(),
        1,
        "one retry of the lost publish"
    );
    assert_eq!(stack.run(&["plan", "-f", m.arg()], "0.3.0").code, 0);

    // 2. The publish landed but was not recorded: the document is back in exactly the state
    // the release bump wrote before publishing. The repair finds its own message (same
    // Nats-Msg-Id) as the last on the subject and only records it. The release version sees
    // the same pending follower; between them there is still no second message.
    agents
        .update_one(
            doc! {"_id": "openframe-chat"},
            doc! {"$set": {"publishState": {"published": false, "publishedAt": Bson::Null, "attempts": 0}}},
        )
        .await
        .unwrap();
    let plan = stack.run(&["plan", "-f", m.arg(), "--format", "json"], "0.3.0");
    let p = plan.json();
    assert_eq!(p["summary"]["update"], 2, "{plan:?}");
    assert_eq!(
        change(&p, "ReleaseVersion/cluster")["diff"][0]["before"],
        json!(["ToolAgent/openframe-chat: publish pending"])
    );
    let before = total(url, "TOOL_UPDATE").await;
    let apply = stack.run(&["apply", "-f", m.arg(), "--auto-approve"], "0.3.0");
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_eq!(total(url, "TOOL_UPDATE").await, before, "no duplicate");
    let chat = one(&db, "integrated_tool_agents", "openframe-chat").await;
    assert!(chat
        .get_document("publishState")
        .unwrap()
        .get_bool("published")
        .unwrap());
    assert_eq!(stack.run(&["plan", "-f", m.arg()], "0.3.0").code, 0);
    assert_eq!(total(url, "CLIENT_UPDATE").await, 1);
}

/// The fields whose values differ between two agent bodies (added, removed or changed).
fn changed_fields(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The platform's reason to announce (openframe.md §7): a non-release agent whose version
/// changed to a real one, or whose asset (present on both sides, versions on both) changed.
fn publishes(before: &Map<String, Value>, after: &Map<String, Value>) -> bool {
    if after.get("releaseVersion") == Some(&json!(true)) {
        return false;
    }
    let v = |m: &Map<String, Value>| m.get("version").and_then(Value::as_str).map(str::to_string);
    if v(after).is_some() && v(after) != v(before) {
        return true;
    }
    let assets = |m: &Map<String, Value>| -> BTreeMap<String, String> {
        m.get("assets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| {
                Some((
                    a["id"].as_str()?.to_string(),
                    a["version"].as_str()?.to_string(),
                ))
            })
            .collect()
    };
    let old = assets(before);
    assets(after)
        .iter()
        .any(|(id, ver)| old.get(id).is_some_and(|o| o != ver))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_each_agents_history_changes_exactly_its_fields_and_publishes_once_per_version() {
    let fixtures = support::platform_fixtures("agents");
    let stack = Stack::start().await;
    let m = ManifestDir::new();
    m.copy_from("desired-state/nats").write(
        "ofctl.toml",
        &format!(
            "[nats]\nurl = \"{}\"\n[mongo]\nuri = \"{}\"\n",
            stack.nats_url, stack.mongo_uri
        ),
    );
    assert_eq!(
        ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]).code,
        0
    );
    let db = stack.db().await;
    let mut dirs: Vec<_> = std::fs::read_dir(&fixtures)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.path())
        .collect();
    // Directory names are `<date>_<repo>-<sha>`: their order is the date order.
    dirs.sort();
    let mut totals = BTreeMap::new();
    for (file, id) in [
        ("fleetmdm-agent.json", "fleetmdm-agent"),
        ("meshcentral-agent.json", "meshcentral-agent"),
        ("tacticalrmm-agent.json", "tacticalrmm-agent"),
        ("openframe-chat-agent.json", "openframe-chat"),
    ] {
        let subject = format!("machine.all.tool.{id}.update");
        let mut stored: Option<Map<String, Value>> = None;
        let mut published = 0;
        for dir in dirs.iter().filter(|d| d.join(file).exists()) {
            let step = dir.file_name().unwrap().to_string_lossy().to_string();
            std::fs::copy(dir.join(file), m.path().join("agent.json")).unwrap();
            m.write(
                "agent.yaml",
                &format!("apiVersion: ofctl.openframe.io/v1\nkind: ToolAgent\nmetadata:\n  name: {id}\nspecFile: agent.json\n"),
            );
            let mut body = read_json(&dir.join(file));
            body.shift_remove("id");
            // A release agent keeps the version it has.
            if body.get("releaseVersion") == Some(&json!(true)) {
                match stored.as_ref().and_then(|s| s.get("version")).cloned() {
                    Some(v) => body.insert("version".into(), v),
                    None => body.shift_remove("version"),
                };
            }
            let plan = ofctl(&["plan", "-f", m.arg(), "--format", "json"], &[]);
            let p = plan.json();
            let c = change(&p, &format!("ToolAgent/{id}"));
            let expect_publish = match &stored {
                None => {
                    assert_eq!(c["action"], "create", "{step}");
                    false
                }
                Some(before) => {
                    let want = changed_fields(before, &body);
                    let got: Vec<String> = c["diff"]
                        .as_array()
                        .map(|d| {
                            d.iter()
                                .map(|d| d["path"].as_str().unwrap().to_string())
                                .collect()
                        })
                        .unwrap_or_default();
                    let mut got_sorted = got.clone();
                    got_sorted.sort();
                    assert_eq!(got_sorted, want, "{id} at {step}");
                    assert_eq!(plan.code, if want.is_empty() { 0 } else { 2 }, "{step}");
                    publishes(before, &body)
                }
            };
            let apply = ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]);
            assert_eq!(apply.code, 0, "{id} at {step}: {apply:?}");
            if expect_publish {
                published += 1;
                let msg = last_message(&stack.nats_url, "TOOL_UPDATE", &subject).await;
                assert_eq!(msg["version"], body["version"], "{id} at {step}");
            }
            assert_eq!(
                count(&stack.nats_url, "TOOL_UPDATE", &subject).await,
                published,
                "{id} at {step}"
            );
            // The stored document is the file, field for field.
            let doc = one(&db, "integrated_tool_agents", id).await;
            let mut expected = Map::new();
            expected.insert("_id".into(), json!(id));
            expected.extend(body.clone());
            expected.insert("_class".into(), json!(AGENT_CLASS));
            assert_eq!(sorted(content(&doc)), sorted(expected), "{id} at {step}");
            assert_eq!(
                ofctl(&["plan", "-f", m.arg()], &[]).code,
                0,
                "{id} at {step}: converged"
            );
            stored = Some(body);
        }
        totals.insert(id, published);
    }
    eprintln!("update messages per agent over its fixture history: {totals:?}");
    assert_eq!(
        totals,
        BTreeMap::from([
            ("fleetmdm-agent", 7),
            ("meshcentral-agent", 12),
            ("openframe-chat", 2),
            ("tacticalrmm-agent", 7),
        ])
    );
    assert_eq!(total(&stack.nats_url, "TOOL_UPDATE").await, 28);
    assert_eq!(total(&stack.nats_url, "CLIENT_UPDATE").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_connectors_under_the_old_key_are_converted_and_both_keys_are_an_error() {
    let stack = Stack::start().await;
    let m = ManifestDir::new();
    m.write(
        "ofctl.toml",
        &format!(
            "[mongo]\nuri = \"{}\"\n[connect]\nurl = \"{}\"\n",
            stack.mongo_uri, stack.sandbox.connect_url
        ),
    );
    let tool = |body: &str| {
        format!("apiVersion: ofctl.openframe.io/v1\nkind: IntegratedTool\nmetadata:\n  name: old-tool\nspec:\n  tool:\n    id: old-tool\n    name: Old\n{body}")
    };
    m.write(
        "t.yaml",
        &tool(concat!(
            "    debeziumConnector:\n      name: c1\n      config:\n",
            "        connector.class: io.debezium.connector.postgresql.PostgresConnector\n",
            "        database.hostname: db.local\n        database.port: \"5432\"\n",
            "        database.user: u\n        database.password: db-Secret-9\n",
            "        database.dbname: d\n        plugin.name: pgoutput\n        topic.prefix: old\n",
        )),
    );
    let apply = ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]);
    assert_eq!(apply.code, 0, "{apply:?}");
    assert!(!apply.stdout.contains("db-Secret-9"), "{apply:?}");
    let doc = one(&stack.db().await, "integrated_tools", "old-tool").await;
    assert!(doc.get("debeziumConnector").is_none());
    let list = doc.get_array("debeziumConnectors").unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0].as_document().unwrap().get_str("name").unwrap(),
        "c1"
    );
    assert!(doc.get_bool("enabled").unwrap());

    // Declared on its own as well: fine with the same config, an error with another one.
    if ofctl::registry::kind_info("KafkaConnector").is_some() {
        let text = std::fs::read_to_string(m.path().join("t.yaml")).unwrap();
        let config = "{connector.class: io.debezium.connector.postgresql.PostgresConnector, database.hostname: db.local, database.port: \"5432\", database.user: u, database.password: db-Secret-9, database.dbname: d, plugin.name: pgoutput, topic.prefix: old}";
        let connector = |config: &str| {
            format!("apiVersion: ofctl.openframe.io/v1\nkind: KafkaConnector\nmetadata:\n  name: c1\nspec:\n  config: {config}\n")
        };
        m.write("c.yaml", &connector(config));
        let plan = ofctl(&["plan", "-f", m.arg()], &[]);
        assert_eq!(
            plan.code, 0,
            "the same connector, already applied: {plan:?}"
        );
        m.write(
            "c.yaml",
            &connector(&config.replace("topic.prefix: old", "topic.prefix: other")),
        );
        let plan = ofctl(&["plan", "-f", m.arg()], &[]);
        assert_eq!(plan.code, 1, "{plan:?}");
        assert!(plan.stderr.contains("keep one source"), "{plan:?}");
        m.remove("c.yaml");
        assert!(text.contains("debeziumConnector"));
    }
    m.write(
        "t.yaml",
        &tool("    debeziumConnector: {name: a, config: {}}\n    debeziumConnectors: []\n"),
    );
    let plan = ofctl(&["plan", "-f", m.arg()], &[]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(plan.stderr.contains("debeziumConnector"), "{plan:?}");
    assert!(plan.stderr.contains("keep only"), "{plan:?}");
}
