//! One conformance suite for every registered kind: the same scenarios, through the real
//! `ofctl` binary, against each kind's real server (nats-server, the Kafka-wire broker
//! noida-db, the MongoDB-wire SecantusDB) or emulator (`ofctl::sandbox` for Pinot, Kafka
//! Connect and Tactical RMM):
//!
//! 1. create: a plan of creates only, applied;
//! 2. no-op: the re-plan is empty;
//! 3. update: one changed field is one in-place update at that field, applied, converged;
//! 4. export round trip: `ofctl export --kind K` lists exactly the declared objects, and a
//!    plan of the export (secrets given back through the variables it names) is a no-op;
//! 5. secrets masked: a changed secret is shown as a sensitive change in every format, and
//!    neither value appears in any output;
//! 6. prune: a removed object is deleted by `--prune` only, and never an object somebody
//!    else made (or, for kinds ofctl never deletes, nothing is deleted);
//! 7. bad spec: a schema violation is reported with file:line and the field, before any
//!    server is contacted.
//!
//! [`CASES`] is the table: where a scenario does not apply to a kind it says so, with the
//! reason, and [`the_table_covers_every_registered_kind`] fails when a kind is registered
//! without a row. Every ofctl run of the suite checks that no secret or backend credential
//! reached its output.

mod support;

use std::collections::BTreeSet;

use ofctl::sandbox::Sandbox;
use serde_json::{json, Value};
use support::{ofctl, ManifestDir, Run, Server};

/// Values the suite puts in secret fields; each is distinctive, so a plain search finds a leak.
const SECRET_A: &str = "conformance-Secret-A-4417";
const SECRET_B: &str = "conformance-Secret-B-9052";
const TACTICAL_API_KEY: &str = "conformance-trmm-key-61c2";

/// Where a kind's objects live.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Nats,
    Kafka,
    Mongo,
    Pinot,
    Connect,
    Tactical,
}

/// Whether `--prune` may delete a kind's objects.
enum Prune {
    /// Objects ofctl made carry its owner marker: a removed one is deleted by `--prune`, and
    /// an object made out of band (by [`foreign`]) is left alone.
    Managed,
    /// ofctl never deletes objects of this kind; `--prune` plans no delete. The reason.
    Never(&'static str),
}

/// A secret field of the kind, or why it has none.
enum Secret {
    At {
        /// The diff pointer of the secret field (a change there must be marked sensitive).
        pointer: &'static str,
        /// The field's whole value around a secret (what export turns into a variable).
        value: fn(&str) -> String,
    },
    NotApplicable(&'static str),
}

/// How an export round trip goes for a kind.
enum Export {
    /// `ofctl export` lists exactly the declared objects, and planning them is a no-op.
    RoundTrip,
    /// Export lists no object of the kind. The reason.
    Nothing(&'static str),
}

fn plain(secret: &str) -> String {
    secret.to_string()
}

fn env_entry(secret: &str) -> String {
    format!("TOKEN={secret}")
}

fn jaas(secret: &str) -> String {
    format!("org.apache.kafka.common.security.plain.PlainLoginModule required username=\"pinot\" password=\"{secret}\";")
}

/// An in-place update of the kind, or why it has none.
enum Update {
    /// The diff `path` the variant-2 document changes.
    At(&'static str),
    NotApplicable(&'static str),
}

struct Case {
    kind: &'static str,
    backend: Backend,
    /// Two objects (the first kept, the second removed in the prune scenario), or one for a
    /// singleton kind.
    names: &'static [&'static str],
    /// The manifest documents of one object: `version` 1 as created, 2 updated; `secret` goes
    /// into the kind's secret field when it has one. A document may carry what the object
    /// needs besides itself (a table's schema), planned with it.
    doc: fn(name: &str, version: u8, secret: &str) -> String,
    update: Update,
    export: Export,
    secret: Secret,
    prune: Prune,
    /// A document the schema rejects, and what the error must name (file:line and field).
    bad: (&'static str, &'static [&'static str]),
}

const HEADER: &str = "apiVersion: ofctl.openframe.io/v1";

fn resource(kind: &str, name: &str, body: &str) -> String {
    format!("{HEADER}\nkind: {kind}\nmetadata:\n  name: {name}\n{body}---\n")
}

fn nats_stream(name: &str, version: u8, _: &str) -> String {
    let subject = name.to_ascii_lowercase();
    resource(
        "NatsStream",
        name,
        &format!("spec:\n  subjects: [{subject}.v{version}.>]\n"),
    )
}

fn kafka_topic(name: &str, version: u8, _: &str) -> String {
    resource(
        "KafkaTopic",
        name,
        &format!("spec:\n  partitions: {version}\n  replication_factor: 1\n  config: {{cleanup.policy: compact}}\n"),
    )
}

fn kafka_connector(name: &str, version: u8, secret: &str) -> String {
    resource(
        "KafkaConnector",
        name,
        &format!(
            "spec:\n  config:\n    connector.class: io.debezium.connector.postgresql.PostgresConnector\n    tasks.max: 1\n    database.hostname: db.local\n    database.port: 5432\n    database.user: cdc\n    database.password: {secret}\n    database.dbname: app\n    plugin.name: pgoutput\n    topic.prefix: {name}\n    poll.interval.ms: {version}000\n"
        ),
    )
}

/// A schema with one column (two from version 2 on).
fn schema_doc(raw: &str, columns: u8) -> String {
    let mut spec =
        "spec:\n  dimensionFieldSpecs:\n  - {name: device, dataType: STRING}\n".to_string();
    if columns > 1 {
        spec.push_str("  - {name: site, dataType: STRING}\n");
    }
    spec.push_str("  dateTimeFieldSpecs:\n  - {name: ts, dataType: LONG, format: 1:MILLISECONDS:EPOCH, granularity: 1:MILLISECONDS}\n");
    resource("PinotSchema", raw, &spec)
}

/// An OFFLINE table of `raw`'s schema; `retention` days, and a Kafka client credential.
fn table_doc(raw: &str, retention: u8, secret: &str) -> String {
    resource(
        "PinotTable",
        &format!("{raw}_OFFLINE"),
        &format!(
            "spec:\n  segmentsConfig: {{timeColumnName: ts, replication: \"1\", retentionTimeUnit: DAYS, retentionTimeValue: \"{retention}\"}}\n  tableIndexConfig:\n    loadMode: MMAP\n    streamConfigs:\n      stream.kafka.consumer.prop.sasl.jaas.config: '{}'\n",
            jaas(secret)
        ),
    )
}

/// A schema and a table that uses it: Pinot ties a schema's ownership to its tables.
fn pinot_schema(name: &str, version: u8, secret: &str) -> String {
    schema_doc(name, version) + &table_doc(name, 1, secret)
}

fn pinot_table(name: &str, version: u8, secret: &str) -> String {
    let raw = name.trim_end_matches("_OFFLINE");
    schema_doc(raw, 1) + &table_doc(raw, version, secret)
}

fn tactical_script(name: &str, version: u8, secret: &str) -> String {
    resource(
        "TacticalScript",
        name,
        &format!(
            "spec:\n  script_body: echo {version}\n  shell: shell\n  env_vars: [\"{}\"]\n",
            env_entry(secret)
        ),
    )
}

fn integrated_tool(name: &str, version: u8, secret: &str) -> String {
    resource(
        "IntegratedTool",
        name,
        &format!("spec:\n  tool:\n    id: {name}\n    name: Tool v{version}\n    toolType: CONFORMANCE\n    credentials: {{password: {secret}}}\n"),
    )
}

fn tool_agent(name: &str, version: u8, _: &str) -> String {
    let status = if version == 1 { "ENABLED" } else { "DISABLED" };
    resource(
        "ToolAgent",
        name,
        &format!("spec:\n  toolId: {name}\n  status: {status}\n  sessionType: SERVICE\n"),
    )
}

fn client_configuration(name: &str, version: u8, _: &str) -> String {
    resource(
        "ClientConfiguration",
        name,
        &format!("spec:\n  version: 0.1.0\n  downloadConfiguration:\n  - {{os: linux, fileName: client-v{version}.tar.gz}}\n"),
    )
}

fn release_version(name: &str, version: u8, _: &str) -> String {
    resource(
        "ReleaseVersion",
        name,
        &format!("spec:\n  version: 0.{version}.0\n"),
    )
}

fn registration_secret(name: &str, _: u8, _: &str) -> String {
    resource("RegistrationSecret", name, "spec: {}\n")
}

const PLATFORM_DOCUMENTS: &str =
    "platform documents carry no owner marker ofctl could add without changing them, so ofctl never deletes one";
const SINGLETON: &str = "a singleton: the platform reads this one document, so it is never deleted";

static CASES: &[Case] = &[
    Case {
        kind: "NatsStream",
        backend: Backend::Nats,
        names: &["CONF_KEEP", "CONF_GONE"],
        doc: nats_stream,
        update: Update::At("subjects"),
        export: Export::RoundTrip,
        secret: Secret::NotApplicable("a stream config has no secret field"),
        prune: Prune::Managed,
        bad: (
            "kind: NatsStream\nmetadata:\n  name: BAD\nspec:\n  subjects: [bad.>]\n  storage: floppy\n",
            &["bad.yaml:7:", "spec.storage"],
        ),
    },
    Case {
        kind: "KafkaTopic",
        backend: Backend::Kafka,
        names: &["conf.keep", "conf.gone"],
        doc: kafka_topic,
        update: Update::At("partitions"),
        export: Export::RoundTrip,
        secret: Secret::NotApplicable("a topic's config overrides hold no secrets"),
        prune: Prune::Never(
            "a topic can carry no owner marker and deleting one loses its messages: ofctl never deletes a topic",
        ),
        bad: (
            "kind: KafkaTopic\nmetadata:\n  name: bad\nspec:\n  partitions: many\n  replication_factor: 1\n",
            &["bad.yaml:6:", "spec.partitions"],
        ),
    },
    Case {
        kind: "KafkaConnector",
        backend: Backend::Connect,
        names: &["conf-keep", "conf-gone"],
        doc: kafka_connector,
        update: Update::At("config[\"poll.interval.ms\"]"),
        export: Export::RoundTrip,
        secret: Secret::At {
            pointer: "/config/database.password",
            value: plain,
        },
        prune: Prune::Managed,
        bad: (
            "kind: KafkaConnector\nmetadata:\n  name: bad\nspec:\n  state: halted\n  config: {connector.class: io.debezium.connector.postgresql.PostgresConnector}\n",
            &["bad.yaml:6:", "spec.state"],
        ),
    },
    Case {
        kind: "PinotSchema",
        backend: Backend::Pinot,
        names: &["confkeep", "confgone"],
        doc: pinot_schema,
        update: Update::At("dimensionFieldSpecs"),
        export: Export::RoundTrip,
        secret: Secret::NotApplicable("a schema holds column definitions only"),
        prune: Prune::Managed,
        bad: (
            "kind: PinotSchema\nmetadata:\n  name: bad\nspec:\n  dimensionFieldSpecs: {name: a}\n",
            &["bad.yaml:6:", "spec.dimensionFieldSpecs"],
        ),
    },
    Case {
        kind: "PinotTable",
        backend: Backend::Pinot,
        names: &["confkeep_OFFLINE", "confgone_OFFLINE"],
        doc: pinot_table,
        update: Update::At("segmentsConfig.retentionTimeValue"),
        export: Export::RoundTrip,
        secret: Secret::At {
            pointer: "/tableIndexConfig/streamConfigs/stream.kafka.consumer.prop.sasl.jaas.config",
            value: jaas,
        },
        prune: Prune::Managed,
        bad: (
            "kind: PinotTable\nmetadata:\n  name: bad_OFFLINE\nspec:\n  tableType: SIDEWAYS\n  segmentsConfig: {}\n  tableIndexConfig: {}\n",
            &["bad.yaml:6:", "spec.tableType"],
        ),
    },
    Case {
        kind: "TacticalScript",
        backend: Backend::Tactical,
        names: &["Conformance keep", "Conformance gone"],
        doc: tactical_script,
        update: Update::At("script_body"),
        export: Export::RoundTrip,
        secret: Secret::At {
            pointer: "/env_vars",
            value: env_entry,
        },
        prune: Prune::Managed,
        bad: (
            "kind: TacticalScript\nmetadata:\n  name: Bad\nspec:\n  script_body: echo\n  shell: fish\n",
            &["bad.yaml:7:", "spec.shell"],
        ),
    },
    Case {
        kind: "IntegratedTool",
        backend: Backend::Mongo,
        names: &["conf-keep", "conf-gone"],
        doc: integrated_tool,
        update: Update::At("name"),
        export: Export::RoundTrip,
        secret: Secret::At {
            pointer: "/credentials/password",
            value: plain,
        },
        prune: Prune::Never(PLATFORM_DOCUMENTS),
        bad: (
            "kind: IntegratedTool\nmetadata:\n  name: bad\nspec:\n  tool:\n    id: bad\n    layerOrder: first\n",
            &["bad.yaml:8:", "spec.tool.layerOrder"],
        ),
    },
    Case {
        kind: "ToolAgent",
        backend: Backend::Mongo,
        names: &["conf-keep", "conf-gone"],
        doc: tool_agent,
        update: Update::At("status"),
        export: Export::RoundTrip,
        secret: Secret::NotApplicable(
            "an agent document holds download and command data only (its ${...} strings are resolved on the device)",
        ),
        prune: Prune::Never(PLATFORM_DOCUMENTS),
        bad: (
            "kind: ToolAgent\nmetadata:\n  name: bad\nspec:\n  status: ON\n",
            &["bad.yaml:6:", "spec.status"],
        ),
    },
    Case {
        kind: "ClientConfiguration",
        backend: Backend::Mongo,
        names: &["default"],
        doc: client_configuration,
        update: Update::At("downloadConfiguration"),
        export: Export::RoundTrip,
        secret: Secret::NotApplicable("the client configuration holds download data only"),
        prune: Prune::Never(SINGLETON),
        bad: (
            "kind: ClientConfiguration\nmetadata:\n  name: default\nspec:\n  downloadConfiguration: linux\n",
            &["bad.yaml:6:", "spec.downloadConfiguration"],
        ),
    },
    Case {
        kind: "ReleaseVersion",
        backend: Backend::Mongo,
        names: &["cluster"],
        doc: release_version,
        update: Update::At("version"),
        export: Export::RoundTrip,
        secret: Secret::NotApplicable("a release version is a version string"),
        prune: Prune::Never(SINGLETON),
        bad: (
            "kind: ReleaseVersion\nmetadata:\n  name: cluster\nspec:\n  version: \"\"\n",
            &["bad.yaml:6:", "spec.version"],
        ),
    },
    Case {
        kind: "RegistrationSecret",
        backend: Backend::Mongo,
        names: &["agent-registration"],
        doc: registration_secret,
        export: Export::Nothing(
            "only the secret's existence is read (its value is stored encrypted), so there is nothing to export",
        ),
        update: Update::NotApplicable(
            "its spec has no fields: the secret is generated once and never overwritten",
        ),
        secret: Secret::NotApplicable(
            "the manifest holds no secret: the value is generated and stored encrypted (tests/mongo_platform.rs decrypts it and checks no output shows it)",
        ),
        prune: Prune::Never(SINGLETON),
        bad: (
            "kind: RegistrationSecret\nmetadata:\n  name: agent-registration\nspec:\n  secretKey: mine\n",
            &["bad.yaml:6:", "spec", "secretKey"],
        ),
    },
];

// ---------------------------------------------------------------------------------------------
// Backends

/// A started backend: its servers (stopped when dropped), ofctl's target config for it, the
/// environment ofctl runs with, and credentials that must never be printed.
struct Live {
    servers: Vec<Server>,
    _sandbox: Option<Sandbox>,
    url: String,
    config: String,
    env: Vec<(String, String)>,
    credentials: Vec<String>,
}

impl Live {
    async fn start(backend: Backend) -> Live {
        let mut live = Live {
            servers: Vec::new(),
            _sandbox: None,
            url: String::new(),
            config: String::new(),
            env: Vec::new(),
            credentials: Vec::new(),
        };
        let system = match backend {
            Backend::Nats => {
                let (server, url) = support::nats();
                live.servers.push(server);
                live.url = url;
                "nats"
            }
            Backend::Kafka => {
                let (server, brokers) = support::kafka();
                live.servers.push(server);
                live.url = brokers;
                "kafka"
            }
            Backend::Mongo => {
                let (server, uri) = support::mongo();
                for (name, value) in support::DESIRED_STATE_SECRETS {
                    if name.starts_with("OFCTL_ENCRYPTION_") {
                        live.env.push((name.to_string(), value.to_string()));
                        live.credentials.push(value.to_string());
                    }
                }
                live.servers.push(server);
                live.url = uri;
                "mongo"
            }
            Backend::Pinot | Backend::Connect | Backend::Tactical => {
                let sandbox = support::emulators(Some(TACTICAL_API_KEY), Default::default()).await;
                let (system, url) = match backend {
                    Backend::Pinot => ("pinot", &sandbox.pinot_url),
                    Backend::Connect => ("connect", &sandbox.connect_url),
                    _ => ("tactical", &sandbox.tactical_url),
                };
                live.url = url.clone();
                live.env
                    .push(("OFCTL_TACTICAL_API_KEY".into(), TACTICAL_API_KEY.into()));
                live.credentials.push(TACTICAL_API_KEY.into());
                live._sandbox = Some(sandbox);
                system
            }
        };
        live.config = support::endpoint_config(system, &live.url);
        live
    }

    /// Runs ofctl with the backend's environment (and `extra`), and checks that no secret of
    /// the suite and no credential appears in what it printed.
    fn ofctl(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let mut env: Vec<(&str, &str)> = support::env_refs(&self.env);
        env.extend_from_slice(extra);
        let run = ofctl(args, &env);
        for secret in [SECRET_A, SECRET_B]
            .into_iter()
            .chain(self.credentials.iter().map(String::as_str))
        {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "ofctl {args:?} printed a secret: {run:?}"
            );
        }
        run
    }

    fn plan_json(&self, m: &ManifestDir, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["plan", "-f", m.arg(), "--format", "json"];
        args.extend_from_slice(extra);
        let run = self.ofctl(&args, &[]);
        assert!(run.code == 0 || run.code == 2, "{run:?}");
        (run.code, run.json())
    }

    fn apply(&self, m: &ManifestDir, extra: &[&str]) {
        let mut args = vec!["apply", "-f", m.arg(), "--auto-approve"];
        args.extend_from_slice(extra);
        let run = self.ofctl(&args, &[]);
        assert_eq!(run.code, 0, "{run:?}");
    }

    fn converged(&self, m: &ManifestDir) {
        let run = self.ofctl(&["plan", "-f", m.arg()], &[]);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.contains("No changes"), "{run:?}");
    }

    /// The names of the live objects of `kind`, as `ofctl export` lists them.
    fn exported(&self, m: &ManifestDir, kind: &str) -> BTreeSet<String> {
        let config = m.path().join("ofctl.toml");
        let run = self.ofctl(
            &["export", "-c", config.to_str().unwrap(), "--kind", kind],
            &[],
        );
        assert_eq!(run.code, 0, "{run:?}");
        names_of(kind, &run.stdout)
    }
}

/// Makes an object of `case`'s kind the way somebody else would (through the system's own
/// API, without ofctl's owner marker); its name, or `None` for kinds where the suite makes none.
async fn foreign(case: &Case, live: &Live) -> Option<String> {
    let post = |path: &str, body: Value| {
        let url = format!("{}{path}", live.url);
        async move {
            let response = reqwest::Client::new()
                .post(&url)
                .header("X-API-KEY", TACTICAL_API_KEY)
                .json(&body)
                .send()
                .await
                .expect("request to the emulator");
            let status = response.status();
            assert!(status.is_success(), "POST {url}: {status}");
        }
    };
    match case.backend {
        Backend::Nats => {
            let client = async_nats::connect(live.url.as_str())
                .await
                .expect("connect");
            async_nats::jetstream::new(client)
                .create_stream(async_nats::jetstream::stream::Config {
                    name: "FOREIGN".into(),
                    subjects: vec!["foreign.>".into()],
                    ..Default::default()
                })
                .await
                .expect("create a foreign stream");
            Some("FOREIGN".into())
        }
        Backend::Kafka => {
            use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
            let admin: AdminClient<rdkafka::client::DefaultClientContext> =
                rdkafka::config::ClientConfig::new()
                    .set("bootstrap.servers", &live.url)
                    .create()
                    .expect("admin client");
            let results = admin
                .create_topics(
                    [&NewTopic::new("foreign", 1, TopicReplication::Fixed(1))],
                    &AdminOptions::new(),
                )
                .await
                .expect("create topics");
            assert!(results[0].is_ok(), "{results:?}");
            Some("foreign".into())
        }
        Backend::Pinot => {
            post(
                "/schemas",
                json!({"schemaName": "other", "dimensionFieldSpecs": [{"name": "a", "dataType": "STRING"}]}),
            )
            .await;
            post(
                "/tables",
                json!({"tableName": "other", "tableType": "OFFLINE",
                       "segmentsConfig": {"replication": "1"}, "tableIndexConfig": {}}),
            )
            .await;
            Some(if case.kind == "PinotSchema" {
                "other".into()
            } else {
                "other_OFFLINE".into()
            })
        }
        Backend::Connect => {
            post(
                "/connectors",
                json!({"name": "foreign", "config": {
                    "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
                    "database.hostname": "db.local", "database.user": "cdc",
                    "database.password": "foreign-pw", "database.dbname": "app",
                    "plugin.name": "pgoutput", "topic.prefix": "foreign"}}),
            )
            .await;
            Some("foreign".into())
        }
        Backend::Tactical => {
            post(
                "/scripts/",
                json!({"name": "Made in the UI", "script_body": "dir", "shell": "cmd"}),
            )
            .await;
            Some("Made in the UI".into())
        }
        // Platform documents are never pruned, whoever made them.
        Backend::Mongo => None,
    }
}

/// `Kind/name` of every document in a YAML stream.
fn addresses(yaml: &str) -> Vec<String> {
    yaml_rust2::YamlLoader::load_from_str(yaml)
        .unwrap_or_else(|e| panic!("not YAML ({e}):\n{yaml}"))
        .iter()
        .filter_map(|doc| {
            Some(format!(
                "{}/{}",
                doc["kind"].as_str()?,
                doc["metadata"]["name"].as_str()?
            ))
        })
        .collect()
}

/// The names of the `kind` documents of an export, each once (an object listed twice, e.g. a
/// duplicate made by a retried create, fails).
fn names_of(kind: &str, yaml: &str) -> BTreeSet<String> {
    let names: Vec<String> = addresses(yaml)
        .into_iter()
        .filter_map(|a| a.strip_prefix(&format!("{kind}/")).map(str::to_string))
        .collect();
    let unique: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(unique.len(), names.len(), "{kind}: listed twice: {names:?}");
    unique
}

/// (address, action) of every change of a JSON plan that is not a no-op.
fn pending(plan: &Value) -> BTreeSet<(String, String)> {
    plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["action"] != "noop")
        .map(|c| {
            (
                c["address"].as_str().unwrap().to_string(),
                c["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The scenarios

fn file_of(name: &str) -> String {
    format!("{}.yaml", name.replace(' ', "-").to_ascii_lowercase())
}

async fn conformance(kind: &str) {
    let case = CASES
        .iter()
        .find(|c| c.kind == kind)
        .unwrap_or_else(|| panic!("{kind} has no row in CASES"));
    let live = Live::start(case.backend).await;
    let m = ManifestDir::new();
    m.write("ofctl.toml", &live.config);
    let address = |name: &str| format!("{kind}/{name}");
    let mut all = BTreeSet::new();
    for name in case.names {
        let doc = (case.doc)(name, 1, SECRET_A);
        all.extend(addresses(&doc));
        m.write(&file_of(name), &doc);
    }

    // 1. Create: every address of the manifest is created, nothing else is planned.
    let (code, plan) = live.plan_json(&m, &[]);
    assert_eq!(code, 2, "{kind}: {plan:#}");
    let creates: BTreeSet<_> = all.iter().map(|a| (a.clone(), "create".into())).collect();
    assert_eq!(pending(&plan), creates, "{kind}: {plan:#}");
    live.apply(&m, &[]);

    // 2. No-op.
    live.converged(&m);

    // 3. Update in place.
    let first = case.names[0];
    match case.update {
        Update::At(path) => {
            m.write(&file_of(first), &(case.doc)(first, 2, SECRET_A));
            let (code, plan) = live.plan_json(&m, &[]);
            assert_eq!(code, 2, "{kind}: {plan:#}");
            assert_eq!(
                pending(&plan),
                BTreeSet::from([(address(first), "update".to_string())]),
                "{kind}: {plan:#}"
            );
            let change = support::change(&plan, &address(first));
            let paths: Vec<&str> = change["diff"]
                .as_array()
                .expect("diff")
                .iter()
                .map(|d| d["path"].as_str().unwrap())
                .collect();
            assert_eq!(paths, vec![path], "{kind}: {change:#}");
            assert!(change.get("blocked").is_none(), "{kind}: {change:#}");
            live.apply(&m, &[]);
            live.converged(&m);
        }
        Update::NotApplicable(reason) => eprintln!("{kind}: no update scenario: {reason}"),
    }

    // 4. Export round trip: exactly the declared objects, and their export plans as a no-op.
    let declared: BTreeSet<String> = all
        .iter()
        .filter_map(|a| a.strip_prefix(&format!("{kind}/")).map(str::to_string))
        .collect();
    match case.export {
        Export::RoundTrip => export_round_trip(case, &live, &m, &declared),
        Export::Nothing(reason) => {
            eprintln!("{kind}: export lists nothing: {reason}");
            assert!(live.exported(&m, kind).is_empty(), "{kind}");
        }
    }

    // 5. Secrets masked: a changed secret is a sensitive change, and no value is printed
    // (`Live::ofctl` checks every output for both values).
    match case.secret {
        Secret::At { pointer, .. } => {
            let version = if matches!(case.update, Update::At(_)) {
                2
            } else {
                1
            };
            m.write(&file_of(first), &(case.doc)(first, version, SECRET_B));
            let mut plan = Value::Null;
            for format in ["text", "json", "markdown"] {
                let run = live.ofctl(&["plan", "-f", m.arg(), "--format", format], &[]);
                assert_eq!(run.code, 2, "{kind} {format}: {run:?}");
                if format == "json" {
                    plan = run.json();
                }
            }
            let change = support::change(&plan, &address(first));
            let diff = change["diff"]
                .as_array()
                .expect("diff")
                .iter()
                .find(|d| d["pointer"] == pointer)
                .unwrap_or_else(|| panic!("{kind}: no change at {pointer}: {change:#}"));
            assert_eq!(diff["sensitive"], true, "{kind}: {diff:#}");
            assert!(
                diff.get("before").is_none() && diff.get("after").is_none(),
                "{diff:#}"
            );
            live.apply(&m, &[]);
            live.converged(&m);
        }
        Secret::NotApplicable(reason) => eprintln!("{kind}: no secret scenario: {reason}"),
    }

    // 6. Prune: only with --prune, only what ofctl made (or, for kinds ofctl never deletes,
    // nothing). The last object leaves the manifest (a singleton's only one: the manifest is
    // then empty).
    let foreign = foreign(case, &live).await;
    let removed = *case.names.last().expect("a name");
    let removed_doc = std::fs::read_to_string(m.path().join(file_of(removed))).expect("read");
    let removed_addresses: BTreeSet<String> = addresses(&removed_doc).into_iter().collect();
    m.remove(&file_of(removed));
    let (code, plan) = live.plan_json(&m, &[]);
    assert_eq!(
        code, 0,
        "{kind}: nothing is deleted without --prune: {plan:#}"
    );
    let (code, plan) = live.plan_json(&m, &["--prune"]);
    let mut expected_live: BTreeSet<String> = declared.clone();
    expected_live.extend(foreign.clone());
    match case.prune {
        Prune::Managed => {
            assert_eq!(code, 2, "{kind}: {plan:#}");
            let deletes: BTreeSet<_> = removed_addresses
                .iter()
                .map(|a| (a.clone(), "delete".to_string()))
                .collect();
            assert_eq!(pending(&plan), deletes, "{kind}: {plan:#}");
            expected_live.remove(removed);
        }
        Prune::Never(reason) => {
            eprintln!("{kind}: --prune deletes nothing: {reason}");
            assert_eq!(code, 0, "{kind}: {plan:#}");
            // Only what the manifest still declares is planned: nothing the system keeps for
            // itself, nothing removed, nothing made out of band.
            let planned: BTreeSet<String> = plan["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["address"].as_str().unwrap().to_string())
                .collect();
            let kept: BTreeSet<String> = all.difference(&removed_addresses).cloned().collect();
            assert_eq!(planned, kept, "{kind}: {plan:#}");
        }
    }
    live.apply(&m, &["--prune"]);
    if matches!(case.export, Export::RoundTrip) {
        assert_eq!(live.exported(&m, kind), expected_live, "{kind}");
    }
    let (code, plan) = live.plan_json(&m, &["--prune"]);
    assert_eq!(code, 0, "{kind}: {plan:#}");
    if let Prune::Never(_) = case.prune {
        // Declared again, the object is found as it was: nothing to create.
        m.write(&file_of(removed), &removed_doc);
        let (code, plan) = live.plan_json(&m, &[]);
        assert_eq!(code, 0, "{kind}: {plan:#}");
    }

    // 7. A bad spec: file:line and the field, from `validate` (no server is asked) and from
    // `plan`, which stops at loading the manifest.
    let (bad, expected) = case.bad;
    m.write("bad.yaml", &format!("{HEADER}\n{bad}"));
    for command in ["validate", "plan"] {
        let run = live.ofctl(&[command, "-f", m.arg()], &[]);
        assert_eq!(run.code, 1, "{kind} {command}: {run:?}");
        for e in expected {
            assert!(
                run.stderr.contains(e),
                "{kind} {command}: `{e}` missing: {run:?}"
            );
        }
    }
}

/// Exports the kind, checks the export lists exactly `declared`, and plans the export (its
/// secrets given back through the variables export names) as a no-op.
fn export_round_trip(case: &Case, live: &Live, m: &ManifestDir, declared: &BTreeSet<String>) {
    let kind = case.kind;
    let out = ManifestDir::new();
    let config = m.path().join("ofctl.toml");
    let export = live.ofctl(
        &[
            "export",
            "-c",
            config.to_str().unwrap(),
            "--kind",
            kind,
            "-o",
            out.arg(),
        ],
        &[],
    );
    assert_eq!(export.code, 0, "{export:?}");
    let file = out
        .path()
        .join(format!("{}.yaml", kind.to_ascii_lowercase()));
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{kind}: no {} ({e}): {export:?}", file.display()));
    assert_eq!(&names_of(kind, &text), declared, "{kind}: {text}");
    assert!(
        !text.contains(SECRET_A),
        "{kind}: a secret was exported: {text}"
    );
    // Each secret became an `${env:...}` placeholder; give it back as an operator would.
    let vars: Vec<&str> = export
        .stderr
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("OFCTL_SECRET_"))
        .collect();
    let secret = match case.secret {
        Secret::At { value, .. } => {
            assert_eq!(
                vars.len(),
                declared.len(),
                "{kind}: one per object: {export:?}"
            );
            value(SECRET_A)
        }
        Secret::NotApplicable(_) => {
            assert!(vars.is_empty(), "{kind}: {export:?}");
            String::new()
        }
    };
    let env: Vec<(&str, &str)> = vars.iter().map(|v| (*v, secret.as_str())).collect();
    out.write("ofctl.toml", &live.config);
    let plan = live.ofctl(&["plan", "-f", out.arg(), "--format", "json"], &env);
    assert_eq!(plan.code, 0, "{kind}: {plan:?}\n{text}");
    assert_eq!(
        plan.json()["summary"]["noop"],
        json!(declared.len()),
        "{plan:?}"
    );
}

#[test]
fn the_table_covers_every_registered_kind() {
    let registered: BTreeSet<&str> = ofctl::registry::all_kinds()
        .iter()
        .map(|k| k.kind)
        .collect();
    let table: Vec<&str> = CASES.iter().map(|c| c.kind).collect();
    assert_eq!(
        table.iter().copied().collect::<BTreeSet<_>>(),
        registered,
        "every registered kind needs one row in CASES (and a #[tokio::test] calling conformance)"
    );
    assert_eq!(table.len(), registered.len(), "one row per kind: {table:?}");
    assert_eq!(
        TESTED,
        table.as_slice(),
        "one test per row, in the table's order"
    );
    // The table agrees with the registry about secret fields: a row's secret is one the kind
    // masks, and a row without one belongs to a kind with no secret fields of its own (keys
    // that name a secret are masked in every kind; the Mongo kinds are not checked).
    for case in CASES {
        let info = ofctl::registry::kind_info(case.kind).expect("registered");
        match case.secret {
            Secret::At { pointer, .. } => {
                assert!(info.is_sensitive(pointer), "{}: {pointer}", case.kind)
            }
            Secret::NotApplicable(_) if !matches!(case.backend, Backend::Mongo) => assert!(
                info.sensitive.is_empty(),
                "{} masks fields but its row says it has no secret",
                case.kind
            ),
            Secret::NotApplicable(_) => {}
        }
    }
}

/// One test per row (each with its own servers, so they run side by side), and the list of
/// kinds they cover, which [`the_table_covers_every_registered_kind`] compares with the table.
macro_rules! conformance_tests {
    ($($test:ident: $kind:literal,)*) => {
        const TESTED: &[&str] = &[$($kind),*];
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                conformance($kind).await;
            }
        )*
    };
}

conformance_tests! {
    nats_stream_conforms: "NatsStream",
    kafka_topic_conforms: "KafkaTopic",
    kafka_connector_conforms: "KafkaConnector",
    pinot_schema_conforms: "PinotSchema",
    pinot_table_conforms: "PinotTable",
    tactical_script_conforms: "TacticalScript",
    integrated_tool_conforms: "IntegratedTool",
    tool_agent_conforms: "ToolAgent",
    client_configuration_conforms: "ClientConfiguration",
    release_version_conforms: "ReleaseVersion",
    registration_secret_conforms: "RegistrationSecret",
}
