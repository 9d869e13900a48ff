//! Secrets: distinctive passwords, API keys and credentials in URLs are set for the platform's
//! desired state, then every output ofctl produces is searched for them — plans in every
//! format, saved plan files, apply and drift reports, exports, debug and trace logs, the watch
//! API and its log, and error paths where a server or a client library echoes a secret.
//!
//! Each set secret ends in `Qz9<x>`: that tail cannot occur in a hex digest, so a search for
//! `Qz9` also finds a secret that leaked in part. The registration secret ofctl generates is
//! read back from Mongo (decrypted as the platform does) and searched for as well.

mod support;

use std::time::Duration;

use ofctl::sandbox::{self, Sandbox, SandboxOptions};
use serde_json::{json, Value};
use support::{desired_state, env_refs, kafka, ofctl, platform_env, ManifestDir, Run, Watch};

const TRMM_DB_PASSWORD: &str = "s3cr3t-PW-trmm-Qz91";
/// A quote and a backslash: JSON output escapes them, so a leak would not match verbatim.
const FLEET_DB_PASSWORD: &str = "fl33t\"PW\\Qz92";
/// Inside the MeshCentral connector's `mongodb.connection.string`.
const MESH_MONGO_PASSWORD: &str = "m3sh-PW-Qz93";
const TACTICAL_API_KEY: &str = "tk-API-7c1e-Qz94";
const NATS_PASSWORD: &str = "n4ts-PW-Qz95";
/// Basic-auth credentials in the Kafka Connect URL (sent as an `Authorization` header).
const CONNECT_PASSWORD: &str = "c0nn3ct-PW-Qz96";
const WRONG_API_KEY: &str = "tk-API-wrong-Qz97";
/// In the Mongo URI (SecantusDB with `--auth`).
const MONGO_PASSWORD: &str = "m0ng0-PW-Qz98";
/// The platform's security.encryption.password (≥ 32 characters) and salt (hex).
const ENCRYPTION_PASSWORD: &str = "enc-PW-0123456789abcdef-012345-Qz99";
const ENCRYPTION_SALT: &str = "a1b2c3d4e5f60718";
/// The tools' admin credentials, stored in the integrated tool documents.
const TRMM_PASSWORD: &str = "trmm-admin-PW-Qz9A";
const FLEET_ADMIN_PASSWORD: &str = "fleet-admin-PW-Qz9B";
const MESH_PASSWORD: &str = "mesh-admin-PW-Qz9C";

const SECRETS: [&str; 13] = [
    TRMM_DB_PASSWORD,
    FLEET_DB_PASSWORD,
    MESH_MONGO_PASSWORD,
    TACTICAL_API_KEY,
    NATS_PASSWORD,
    CONNECT_PASSWORD,
    WRONG_API_KEY,
    MONGO_PASSWORD,
    ENCRYPTION_PASSWORD,
    ENCRYPTION_SALT,
    TRMM_PASSWORD,
    FLEET_ADMIN_PASSWORD,
    MESH_PASSWORD,
];

/// Every form a secret could take in an output: as is, JSON-escaped, and the base64 of the
/// basic-auth header built from a URL's credentials; `extra` are secrets learnt during the test.
fn forms(extra: &[String]) -> Vec<String> {
    let mut forms = vec!["Qz9".to_string()];
    for s in SECRETS
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
    {
        forms.push(s.to_string());
        let json = serde_json::to_string(s).expect("a JSON string");
        forms.push(json.trim_matches('"').to_string());
    }
    forms.push(base64(&format!("admin:{CONNECT_PASSWORD}")));
    forms.sort();
    forms.dedup();
    forms
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    while out.len() % 4 != 0 {
        out.push('=');
    }
    out
}

/// Everything ofctl printed or wrote, by where it came from.
#[derive(Default)]
struct Outputs(Vec<(String, String)>);

impl Outputs {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.0.push((what.into(), text.into()));
    }

    fn run(&mut self, what: &str, run: &Run) {
        self.add(format!("{what} (stdout)"), run.stdout.clone());
        self.add(format!("{what} (stderr)"), run.stderr.clone());
    }

    fn files(&mut self, what: &str, dir: &std::path::Path) {
        for entry in std::fs::read_dir(dir).expect("read folder").flatten() {
            let text = std::fs::read_to_string(entry.path()).expect("read file");
            self.add(format!("{what} {}", entry.path().display()), text);
        }
    }

    /// Zero hits, or every hit with some context.
    fn assert_clean(&self, extra: &[String]) {
        let forms = forms(extra);
        let mut leaks = Vec::new();
        for (what, text) in &self.0 {
            for form in &forms {
                if let Some(at) = text.find(form.as_str()) {
                    let from = text[..at]
                        .char_indices()
                        .rev()
                        .nth(80)
                        .map_or(0, |(i, _)| i);
                    let to = (at + form.len() + 80).min(text.len());
                    let to = (to..=text.len())
                        .find(|&i| text.is_char_boundary(i))
                        .unwrap_or(text.len());
                    leaks.push(format!("{what}: `{form}` in …{}…", &text[from..to]));
                }
            }
        }
        let bytes: usize = self.0.iter().map(|(_, t)| t.len()).sum();
        eprintln!(
            "secrets: searched {} outputs ({bytes} bytes) for {} forms of {} secrets: {} hit(s)",
            self.0.len(),
            forms.len(),
            SECRETS.len() + extra.len(),
            leaks.len()
        );
        assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    }
}

/// A Kafka Connect stand-in that refuses every connector the way Connect refuses a config it
/// cannot place: `Connector config {…} contains no connector type`, the whole submitted map
/// printed with Java's `Map.toString()` (apis.md §2.6) — passwords included.
async fn echoing_connect() -> String {
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::{Json, Router};
    let app = Router::new().route(
        "/connectors",
        get(|| async { Json(json!({})) }).post(|Json(body): Json<Value>| async move {
            let entries: Vec<String> = body["config"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            (
                StatusCode::BAD_REQUEST,
                Json(json!({
                    "error_code": 400,
                    "message": format!("Connector config {{{}}} contains no connector type", entries.join(", "))
                })),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// `http://host:port` with `admin:CONNECT_PASSWORD@` in front of the host.
fn with_credentials(url: &str) -> String {
    url.replacen("http://", &format!("http://admin:{CONNECT_PASSWORD}@"), 1)
}

struct Platform {
    sb: Sandbox,
    _nats: support::Server,
    _kafka: support::Server,
    _mongo: (support::Server, tempfile::TempDir),
    mongo_uri: String,
    m: ManifestDir,
    env: Vec<(String, String)>,
}

/// SecantusDB requiring SCRAM authentication, with user `admin` (password [`MONGO_PASSWORD`]):
/// the user is created over a first, open start, then the server restarts with `--auth`.
async fn mongo_with_password() -> (support::Server, tempfile::TempDir, String) {
    let store = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    // Synced on commit: the user must survive the kill that ends this first start.
    let mut open = support::secantus(store.path(), port, &["--sync-on-commit"]);
    let client =
        mongodb::Client::with_uri_str(format!("mongodb://127.0.0.1:{port}/?directConnection=true"))
            .await
            .expect("connect");
    client
        .database("admin")
        .run_command(mongodb::bson::doc! {
            "createUser": "admin",
            "pwd": MONGO_PASSWORD,
            "roles": [{"role": "root", "db": "admin"}],
        })
        .await
        .expect("createUser");
    drop(client);
    open.stop();
    let server = support::secantus(store.path(), port, &["--auth"]);
    let uri = format!(
        "mongodb://admin:{MONGO_PASSWORD}@127.0.0.1:{port}/openframe?directConnection=true&authSource=admin"
    );
    (server, store, uri)
}

/// The registration secret ofctl generated, decrypted the way the platform decrypts it, by an
/// independent implementation.
async fn registration_secret(mongo_uri: &str) -> String {
    let client = mongodb::Client::with_uri_str(mongo_uri)
        .await
        .expect("connect to Mongo");
    let stored = client
        .database("openframe")
        .collection::<mongodb::bson::Document>("agent_registration_secrets")
        .find_one(mongodb::bson::doc! {})
        .await
        .expect("find")
        .expect("a registration secret");
    let ciphertext = stored.get_str("secretKey").expect("secretKey");
    let plain = support::decrypt_with_python(ciphertext, ENCRYPTION_PASSWORD, ENCRYPTION_SALT);
    assert_eq!(plain.len(), 32, "{plain}");
    plain
}

impl Platform {
    async fn start() -> Platform {
        let sb = sandbox::start(SandboxOptions {
            tactical_api_key: TACTICAL_API_KEY.into(),
            ..SandboxOptions::default()
        })
        .await
        .expect("start the sandbox");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("js");
        let nats = support::nats_server(
            dir,
            &store,
            support::free_port(),
            &["--user", "ofctl", "--pass", NATS_PASSWORD],
        );
        let nats_url = format!("nats://ofctl:{NATS_PASSWORD}@127.0.0.1:{}", nats.port);
        let (kafka, brokers) = kafka();
        let (mongo, store, mongo_uri) = mongo_with_password().await;
        let mut env = platform_env(&sb, TACTICAL_API_KEY, &nats_url, &brokers, &mongo_uri);
        for (name, value) in [
            ("OFCTL_CONNECT_URL", with_credentials(&sb.connect_url)),
            ("OFCTL_TRMM_DB_PASSWORD", TRMM_DB_PASSWORD.into()),
            ("OFCTL_FLEET_DB_PASSWORD", FLEET_DB_PASSWORD.into()),
            ("OFCTL_MESH_MONGO_PASSWORD", MESH_MONGO_PASSWORD.into()),
            ("OFCTL_ENCRYPTION_PASSWORD", ENCRYPTION_PASSWORD.into()),
            ("OFCTL_ENCRYPTION_SALT", ENCRYPTION_SALT.into()),
            ("OFCTL_TRMM_PASSWORD", TRMM_PASSWORD.into()),
            ("OFCTL_FLEET_ADMIN_PASSWORD", FLEET_ADMIN_PASSWORD.into()),
            ("OFCTL_MESH_PASSWORD", MESH_PASSWORD.into()),
            // As on the local stack: a user name that is also a word ofctl prints.
            ("OFCTL_TRMM_USER", "tactical".into()),
        ] {
            env.retain(|(k, _)| k != name);
            env.push((name.to_string(), value));
        }
        Platform {
            sb,
            _nats: nats,
            _kafka: kafka,
            _mongo: (mongo, store),
            mongo_uri,
            m: desired_state(),
            env,
        }
    }

    /// The environment with some variables replaced.
    fn env_with(&self, changes: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        for (name, value) in changes {
            env.retain(|(k, _)| k != name);
            env.push((name.to_string(), value.to_string()));
        }
        env
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_output() {
    let p = Platform::start().await;
    let mut out = Outputs::default();
    let dir = p.m.arg();
    let env = env_refs(&p.env);
    let debug: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .chain([("OFCTL_LOG", "debug")])
        .collect();
    let trace: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .chain([("OFCTL_LOG", "trace")])
        .collect();

    let run = ofctl(&["validate", "-f", dir], &env);
    assert_eq!(run.code, 0, "{run:?}");
    out.run("validate", &run);
    for format in ["text", "json", "markdown"] {
        let run = ofctl(&["plan", "-f", dir, "--format", format], &debug);
        assert_eq!(run.code, 2, "{run:?}");
        out.run(&format!("plan --format {format}, debug log"), &run);
    }
    let saved = p.m.path().join("saved-plan.json");
    let run = ofctl(&["plan", "-f", dir, "-o", saved.to_str().unwrap()], &env);
    assert_eq!(run.code, 2, "{run:?}");
    out.run("plan -o", &run);
    let saved_text = std::fs::read_to_string(&saved).expect("plan file");
    // Only what holds a secret is masked in text: the TRMM user name `tactical` (under the
    // tool's `credentials`) is not, or every resource named after it would be mangled and the
    // saved plan refused as stale.
    assert!(
        saved_text.contains("\"tactical-rmm-psql-connector\""),
        "a connector's name was masked in the saved plan"
    );
    out.add("saved plan file", saved_text);
    let run = ofctl(&["apply", saved.to_str().unwrap()], &trace);
    assert_eq!(run.code, 0, "{run:?}");
    out.run("apply PLANFILE, trace log", &run);

    // The secrets were really in play: Connect stores the passwords as sent (apis.md §2.7).
    let live: Value = reqwest::get(format!(
        "{}/connectors/fleet-mysql-connector/config",
        p.sb.connect_url
    ))
    .await
    .expect("GET config")
    .json()
    .await
    .expect("JSON");
    assert_eq!(live["database.password"], FLEET_DB_PASSWORD);

    let run = ofctl(&["plan", "-f", dir], &trace);
    assert_eq!(run.code, 0, "{run:?}");
    // The same: the system of that name stays readable in the request figures.
    assert!(
        run.stderr.contains("\"tactical\":{\"reads\""),
        "the word `tactical` was masked: {run:?}"
    );
    out.run("plan (no-op), trace log", &run);
    let run = ofctl(&["apply", "-f", dir, "--auto-approve"], &debug);
    assert_eq!(run.code, 0, "{run:?}");
    out.run("apply (no-op), debug log", &run);
    for format in ["text", "json", "markdown"] {
        let run = ofctl(&["drift", "-f", dir, "--format", format], &debug);
        assert_eq!(run.code, 0, "{run:?}");
        out.run(&format!("drift --format {format}"), &run);
    }

    // Out-of-band edits, so that drift and plans show changes next to the secrets.
    let http = reqwest::Client::new();
    let config_url = format!(
        "{}/connectors/tactical-rmm-psql-connector/config",
        p.sb.connect_url
    );
    let mut config: Value = http
        .get(&config_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    config["database.password"] = json!("changed-out-of-band");
    config["heartbeat.interval.ms"] = json!("20000");
    let put = http.put(&config_url).json(&config).send().await.unwrap();
    assert!(put.status().is_success());
    for format in ["text", "json", "markdown"] {
        let run = ofctl(&["drift", "-f", dir, "--format", format], &debug);
        assert_eq!(run.code, 2, "{run:?}");
        out.run(&format!("drift with changes --format {format}"), &run);
        let run = ofctl(&["plan", "-f", dir, "--format", format], &env);
        assert_eq!(run.code, 2, "{run:?}");
        out.run(&format!("plan with changes --format {format}"), &run);
    }
    let run = ofctl(&["apply", "-f", dir, "--auto-approve"], &trace);
    assert_eq!(run.code, 0, "{run:?}");
    out.run("apply (update), trace log", &run);

    let exported = ManifestDir::new();
    let config = p.m.path().join("ofctl.toml");
    let config = config.to_str().unwrap();
    let run = ofctl(&["export", "-c", config], &debug);
    assert_eq!(run.code, 0, "{run:?}");
    out.run("export to stdout, debug log", &run);
    let run = ofctl(&["export", "-c", config, "-o", exported.arg()], &env);
    assert_eq!(run.code, 0, "{run:?}");
    out.run("export -o", &run);
    out.files("exported file", exported.path());

    // Error paths where a secret is echoed. A client library's error carries the URL and its
    // credentials (connection refused), a server echoes the config it refused, a wrong API key
    // is rejected.
    let closed = support::free_port();
    let env_down = p.env_with(&[
        (
            "OFCTL_MONGO_URI",
            &format!("mongodb://admin:{MONGO_PASSWORD}@127.0.0.1:{closed}/openframe?directConnection=true"),
        ),
        (
            "OFCTL_NATS_URL",
            &format!("nats://ofctl:{NATS_PASSWORD}@127.0.0.1:{closed}"),
        ),
        (
            "OFCTL_CONNECT_URL",
            &with_credentials(&format!("http://127.0.0.1:{closed}")),
        ),
        ("OFCTL_LOG", "debug"),
    ]);
    let run = ofctl(&["plan", "-f", dir], &env_refs(&env_down));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("cannot"), "{run:?}");
    out.run("plan, NATS and Connect refusing connections", &run);
    let run = ofctl(
        &["apply", "-f", dir, "--auto-approve"],
        &env_refs(&env_down),
    );
    assert_eq!(run.code, 1, "{run:?}");
    out.run("apply, NATS and Connect refusing connections", &run);

    let env_wrong = p.env_with(&[
        ("OFCTL_TACTICAL_API_KEY", WRONG_API_KEY),
        ("OFCTL_LOG", "trace"),
    ]);
    let run = ofctl(&["plan", "-f", dir], &env_refs(&env_wrong));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("the API key was rejected"), "{run:?}");
    out.run("plan, wrong Tactical API key", &run);

    let echoing = echoing_connect().await;
    let env_echo = p.env_with(&[("OFCTL_CONNECT_URL", &echoing), ("OFCTL_LOG", "debug")]);
    let run = ofctl(
        &["apply", "-f", dir, "--auto-approve"],
        &env_refs(&env_echo),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("contains no connector type")
            && run.stdout.contains("database.password=(sensitive)"),
        "the refusal is shown, its secrets masked: {run:?}"
    );
    out.run("apply, Connect echoing the refused config", &run);

    // Watch mode against the same echoing Connect: its HTTP API and its log. The shipped
    // config locks through Redis (no lock service, no reconcile).
    let (_redis, redis_url) = support::redis();
    let env_echo = p.env_with(&[
        ("OFCTL_CONNECT_URL", &echoing),
        ("OFCTL_LOG", "debug"),
        ("OFCTL_REDIS_URL", &redis_url),
    ]);
    let mut watch = Watch::start_with_env(&["-f", dir, "--interval", "1h"], &env_refs(&env_echo));
    let ready = Watch::until(Duration::from_secs(30), || async {
        watch.get("/readyz").await.0 == 200
    })
    .await;
    assert!(ready.is_some(), "{}", watch.log());
    for path in ["/healthz", "/readyz", "/metrics", "/v1/drift"] {
        let (status, body) = watch.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        out.add(format!("watch GET {path}"), body);
    }
    let (_, drift) = watch.get("/v1/drift").await;
    assert!(drift.contains("contains no connector type"), "{drift}");
    assert_eq!(watch.terminate(), Some(0));
    out.add("watch log (debug)", watch.log());

    let registration = registration_secret(&p.mongo_uri).await;
    out.assert_clean(&[registration]);
}

#[test]
fn base64_matches_the_standard_encoding() {
    assert_eq!(
        base64("admin:c0nn3ct-PW-Qz96"),
        "YWRtaW46YzBubjNjdC1QVy1Rejk2"
    );
    assert_eq!(base64("a"), "YQ==");
    assert_eq!(base64("ab"), "YWI=");
}

const SCRIPT_KEY: &str = "tk-API-limits-0001";

/// A folder `manifest/` (the manifest) inside a temporary one that also holds `outside.txt`
/// and `outside.json`, with an ofctl.toml for the sandbox's Tactical RMM and Kafka Connect.
struct Limits {
    root: tempfile::TempDir,
}

impl Limits {
    fn new(sb: &Sandbox, config_extra: &str) -> Limits {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("manifest")).expect("mkdir");
        std::fs::write(root.path().join("outside.txt"), "echo outside-Qz9O").expect("write");
        std::fs::write(
            root.path().join("outside.json"),
            r#"{"config": {"connector.class": "io.debezium.connector.postgresql.PostgresConnector", "database.password": "outside-Qz9J"}}"#,
        )
        .expect("write");
        // The target config is the operator's: it reads any environment variable.
        let config = format!(
            "[tactical]\nurl = \"{}\"\napi_key = \"${{env:LIMITS_TEST_TRMM_KEY}}\"\n[connect]\nurl = \"{}\"\n{config_extra}",
            sb.tactical_url, sb.connect_url
        );
        let l = Limits { root };
        l.write("ofctl.toml", &config);
        // A valid resource next to the offending one: nothing at all may be applied.
        l.write(
            "a-valid.yaml",
            &script_doc("Valid", "  script_body: echo fine\n  shell: shell"),
        );
        l
    }

    fn dir(&self) -> std::path::PathBuf {
        self.root.path().join("manifest")
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir().join(name), text).expect("write manifest file");
    }

    fn apply(&self, env: &[(&str, &str)]) -> Run {
        let dir = self.dir();
        let mut all = vec![("LIMITS_TEST_TRMM_KEY", SCRIPT_KEY)];
        all.extend_from_slice(env);
        ofctl(
            &["apply", "-f", dir.to_str().unwrap(), "--auto-approve"],
            &all,
        )
    }
}

fn script_doc(name: &str, spec: &str) -> String {
    format!("apiVersion: ofctl.openframe.io/v1\nkind: TacticalScript\nmetadata:\n  name: {name}\nspec:\n{spec}\n")
}

/// Writes counted by the sandbox's Tactical RMM and Kafka Connect.
fn sandbox_writes(sb: &Sandbox) -> u64 {
    let s = sb.stats.snapshot();
    s.tactical.writes + s.connect.writes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_reads_only_inside_its_folder_and_allowed_env() {
    let sb = sandbox::start(SandboxOptions {
        tactical_api_key: SCRIPT_KEY.into(),
        ..SandboxOptions::default()
    })
    .await
    .expect("start the sandbox");
    // (file, document, what the error must say), the offending field on line 7 of the file.
    let body =
        |value: &str| script_doc("Reader", &format!("  shell: shell\n  script_body: {value}"));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "dotdot.yaml",
            body("${file:../outside.txt}"),
            "is outside the manifest folder",
        ),
        (
            "absolute.yaml",
            body("${file:/etc/hostname}"),
            "an absolute path; a manifest may only read files inside its folder",
        ),
        (
            "symlink.yaml",
            body("${file:link.ps1}"),
            "is outside the manifest folder",
        ),
        (
            "env.yaml",
            body("${env:LIMITS_TEST_TRMM_KEY}"),
            "a manifest may only read environment variables matching OFCTL_*",
        ),
        ("big.yaml", body("${file:big.ps1}"), "over the 1 MiB limit"),
    ];
    for (file, doc, says) in &cases {
        let l = Limits::new(&sb, "");
        l.write(file, doc);
        std::os::unix::fs::symlink(l.root.path().join("outside.txt"), l.dir().join("link.ps1"))
            .expect("symlink");
        std::fs::write(l.dir().join("big.ps1"), "#".repeat(1024 * 1024 + 1)).expect("write");
        let run = l.apply(&[]);
        assert_eq!(run.code, 1, "{file}: {run:?}");
        let at = format!("{}:7:", l.dir().join(file).display());
        assert!(
            run.stderr.contains(&at) && run.stderr.contains(says),
            "{file}: the error names {at} and says `{says}`: {run:?}"
        );
        assert!(run.stderr.contains("nothing was applied"), "{run:?}");
        assert!(!run.stderr.contains(SCRIPT_KEY), "{run:?}");
        assert!(!format!("{run:?}").contains("Qz9O"), "{run:?}");
        assert_eq!(sandbox_writes(&sb), 0, "{file}: nothing is applied");
    }

    // `specFile:` has the same limit; the error points at the YAML's `specFile` line.
    let l = Limits::new(&sb, "");
    l.write(
        "connector.yaml",
        "apiVersion: ofctl.openframe.io/v1\nkind: KafkaConnector\nmetadata:\n  name: c\nspecFile: ../outside.json\n",
    );
    let run = l.apply(&[]);
    assert_eq!(run.code, 1, "{run:?}");
    let at = format!("{}:5:", l.dir().join("connector.yaml").display());
    assert!(
        run.stderr.contains(&at) && run.stderr.contains("is outside the manifest folder"),
        "{run:?}"
    );
    assert!(!format!("{run:?}").contains("Qz9J"), "{run:?}");
    assert_eq!(sandbox_writes(&sb), 0);

    // What the operator allows: files inside the folder (through `..` that stays inside), and
    // the names `[manifest] allowed_env` lists. The same manifest then applies.
    let l = Limits::new(&sb, "[manifest]\nallowed_env = [\"LIMITS_TEST_*\"]\n");
    std::fs::create_dir(l.dir().join("scripts")).expect("mkdir");
    std::fs::write(l.dir().join("body.ps1"), "echo inside").expect("write");
    l.write(
        "scripts/reader.yaml",
        &script_doc(
            "Reader",
            "  shell: shell\n  script_body: ${file:../body.ps1}\n  args: [\"${env:LIMITS_TEST_ARG}\"]",
        ),
    );
    let run = l.apply(&[("LIMITS_TEST_ARG", "--verbose")]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        sandbox_writes(&sb) >= 2,
        "both scripts were created: {run:?}"
    );
}

/// Secrets of the connector below: at keys that name a secret (three forms of key), and a
/// password inside a JDBC URL at a key that does not.
const API_TOKEN: &str = "api-T0KEN-Qz9D";
const AWS_SECRET: &str = "aws-S3CRET-Qz9E";
const KEYSTORE_PASSWORD: &str = "ks-PASS-Qz9F";
const JDBC_PASSWORD: &str = "jdbc-PW-Qz9G";
/// At a key only `[redact] extra_keys` names.
const VAULT_REF: &str = "vault-REF-Qz9K";
const CONNECTOR_SECRETS: [&str; 5] = [
    API_TOKEN,
    AWS_SECRET,
    KEYSTORE_PASSWORD,
    JDBC_PASSWORD,
    VAULT_REF,
];

/// An integrated tool whose Debezium connector holds those secrets (the token from the
/// environment, the others written out, as a careless manifest would).
fn secret_tool() -> String {
    format!(
        r#"apiVersion: ofctl.openframe.io/v1
kind: IntegratedTool
metadata:
  name: secret-tool
spec:
  tool:
    id: secret-tool
    toolType: SECRET_TOOL
    name: Secret Tool
    enabled: true
    debeziumConnectors:
      - name: cdc-secrets
        config:
          connector.class: io.debezium.connector.postgresql.PostgresConnector
          tasks.max: "1"
          database.hostname: db
          database.port: "5432"
          database.user: app
          database.dbname: app
          plugin.name: pgoutput
          topic.prefix: sec
          some.api.token: ${{env:OFCTL_TEST_API_TOKEN}}
          aws.secret.access.key: {AWS_SECRET}
          ssl.keystore.password: {KEYSTORE_PASSWORD}
          connection.url: "jdbc:postgresql://db:5432/app?user=app&password={JDBC_PASSWORD}&ssl=true"
          transforms.vault.ref: {VAULT_REF}
"#
    )
}

/// The `desired_digest` of each change of a saved plan, by address.
fn digests(plan_file: &std::path::Path) -> Vec<(String, String)> {
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(plan_file).expect("plan file"))
        .expect("JSON");
    plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["address"].as_str().unwrap_or_default().to_string(),
                c["desired_digest"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_secrets_named_by_key_or_in_a_url_never_show() {
    let sb = sandbox::start(SandboxOptions::default())
        .await
        .expect("start the sandbox");
    let (_mongo, mongo_uri) = support::mongo();
    let m = ManifestDir::new();
    m.write(
        "ofctl.toml",
        &format!(
            "tenant = \"t1\"\n[mongo]\nuri = \"{mongo_uri}\"\n[connect]\nurl = \"{}\"\n[api]\nallow_unauthenticated = true\n[redact]\nextra_keys = [\"vault.ref\"]\n",
            sb.connect_url
        ),
    )
    .write("tool.yaml", &secret_tool());
    let dir = m.arg();
    let env = [("OFCTL_TEST_API_TOKEN", API_TOKEN)];
    let debug = [("OFCTL_TEST_API_TOKEN", API_TOKEN), ("OFCTL_LOG", "debug")];
    let mut out = Outputs::default();

    for format in ["text", "json", "markdown"] {
        let run = ofctl(&["plan", "-f", dir, "--format", format], &debug);
        assert_eq!(run.code, 2, "{run:?}");
        out.run(&format!("plan --format {format}, debug log"), &run);
    }
    let saved = m.path().join("saved-plan.json");
    let saved_arg = saved.to_str().unwrap();
    let run = ofctl(&["plan", "-f", dir, "-o", saved_arg], &env);
    assert_eq!(run.code, 2, "{run:?}");
    out.add("saved plan file", std::fs::read_to_string(&saved).unwrap());

    // Without a key, no secret enters a digest: another token gives the same digests.
    let other = m.path().join("other-token.json");
    let run = ofctl(
        &["plan", "-f", dir, "-o", other.to_str().unwrap()],
        &[("OFCTL_TEST_API_TOKEN", "another-token-value")],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(digests(&saved), digests(&other));

    // With OFCTL_PLAN_KEY, digests are keyed (HMAC) and cover the secrets: a changed secret,
    // another key or no key make the saved plan stale.
    let keyed = m.path().join("keyed.json");
    let keyed_arg = keyed.to_str().unwrap();
    let with_key = |key: &'static str, token: &'static str| {
        [("OFCTL_TEST_API_TOKEN", token), ("OFCTL_PLAN_KEY", key)]
    };
    let run = ofctl(
        &["plan", "-f", dir, "-o", keyed_arg],
        &with_key("k-1", API_TOKEN),
    );
    assert_eq!(run.code, 2, "{run:?}");
    out.add(
        "saved keyed plan file",
        std::fs::read_to_string(&keyed).unwrap(),
    );
    let keyed_digests = digests(&keyed);
    assert!(
        keyed_digests.iter().all(|(_, d)| d.starts_with("hmac:")),
        "{keyed_digests:?}"
    );
    let changed = m.path().join("keyed-changed.json");
    let run = ofctl(
        &["plan", "-f", dir, "-o", changed.to_str().unwrap()],
        &with_key("k-1", "another-token-value"),
    );
    assert_eq!(run.code, 2, "{run:?}");
    let connector = |d: &[(String, String)]| {
        d.iter()
            .find(|(a, _)| a == "KafkaConnector/cdc-secrets")
            .map(|(_, d)| d.clone())
            .expect("the connector is planned")
    };
    assert_ne!(connector(&keyed_digests), connector(&digests(&changed)));
    for (env, says) in [
        (
            with_key("k-1", "another-token-value"),
            "the manifest or its variables changed since planning",
        ),
        (with_key("k-2", API_TOKEN), "OFCTL_PLAN_KEY"),
    ] {
        let run = ofctl(&["apply", keyed_arg], &env);
        assert_eq!(run.code, 1, "{run:?}");
        assert!(run.stderr.contains(says), "{says}: {run:?}");
        out.run("apply of a stale keyed plan", &run);
    }
    let run = ofctl(&["apply", keyed_arg], &env);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("the plan was saved with OFCTL_PLAN_KEY set and it is not set now"),
        "{run:?}"
    );
    assert_eq!(sandbox_writes(&sb), 0, "stale plans apply nothing");

    let run = ofctl(
        &["apply", keyed_arg],
        &[
            ("OFCTL_TEST_API_TOKEN", API_TOKEN),
            ("OFCTL_PLAN_KEY", "k-1"),
            ("OFCTL_LOG", "debug"),
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    out.run("apply PLANFILE, debug log", &run);
    // The secrets were really written.
    let live: Value = reqwest::get(format!("{}/connectors/cdc-secrets/config", sb.connect_url))
        .await
        .expect("GET config")
        .json()
        .await
        .expect("JSON");
    assert_eq!(live["some.api.token"], API_TOKEN);
    assert_eq!(live["transforms.vault.ref"], VAULT_REF);
    assert!(live["connection.url"]
        .as_str()
        .is_some_and(|u| u.contains(JDBC_PASSWORD)));

    // Drift: secrets and the URL changed out of band, next to a visible change.
    let mut config = live.clone();
    config["ssl.keystore.password"] = json!("changed-Qz9H");
    config["connection.url"] =
        json!("jdbc:postgresql://db:5432/app?user=app&password=changed-Qz9I");
    config["topic.prefix"] = json!("sec");
    config["tasks.max"] = json!("2");
    let put = reqwest::Client::new()
        .put(format!("{}/connectors/cdc-secrets/config", sb.connect_url))
        .json(&config)
        .send()
        .await
        .expect("PUT");
    assert!(put.status().is_success(), "{put:?}");
    for format in ["text", "json", "markdown"] {
        let run = ofctl(&["drift", "-f", dir, "--format", format], &debug);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stdout.contains("tasks.max"), "{run:?}");
        out.run(&format!("drift --format {format}, debug log"), &run);
    }

    let exported = ManifestDir::new();
    let config_path = m.path().join("ofctl.toml");
    let config_arg = config_path.to_str().unwrap();
    let run = ofctl(
        &["export", "-c", config_arg, "--kind", "KafkaConnector"],
        &debug,
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("cdc-secrets"), "{run:?}");
    out.run("export, debug log", &run);
    let run = ofctl(&["export", "-c", config_arg, "-o", exported.arg()], &env);
    assert_eq!(run.code, 0, "{run:?}");
    out.files("exported file", exported.path());

    // The platform API lists the tool with its connector; a caller's value cannot become a
    // secret that blanks text out of logs and metrics.
    let mut watch = Watch::start_with_env(&["-f", dir, "--interval", "1h"], &debug);
    let ready = Watch::until(Duration::from_secs(30), || async {
        watch.get("/readyz").await.0 == 200
    })
    .await;
    assert!(ready.is_some(), "{}", watch.log());
    let tools = reqwest::get(format!("{}/v1/tools", watch.api))
        .await
        .expect("GET /v1/tools");
    assert_eq!(tools.status(), 200);
    let tools = tools.text().await.unwrap();
    assert!(
        tools.contains("cdc-secrets") && tools.contains("(sensitive)"),
        "{tools}"
    );
    out.add("GET /v1/tools", tools);
    let post = reqwest::Client::new()
        .post(format!("{}/v1/tools/api-tool", watch.api))
        .header("content-type", "application/json")
        .body(
            json!({"tool": {"name": "API tool", "toolType": "API_TOOL",
                "credentials": {"username": "u", "password": "reconcile_passes"}}})
            .to_string(),
        )
        .send()
        .await
        .expect("POST /v1/tools/api-tool");
    assert_eq!(post.status(), 200, "{}", watch.log());
    let (status, metrics) = watch.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("reconcile_passes"), "{metrics}");
    assert!(!metrics.contains("(sensitive)"), "{metrics}");
    let (_, listed) = (
        (),
        reqwest::get(format!("{}/v1/tools", watch.api))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(
        listed.contains("api-tool") && !listed.contains("\"reconcile_passes\""),
        "the API tool's password is masked by its key: {listed}"
    );
    out.add("GET /v1/tools after POST", listed);
    assert_eq!(watch.terminate(), Some(0));
    out.add("watch log (debug)", watch.log());

    let extra: Vec<String> = CONNECTOR_SECRETS.iter().map(|s| s.to_string()).collect();
    out.assert_clean(&extra);
}

/// Runs `openssl` with `args` in `dir`, failing the test with its output if it fails.
#[test]
fn a_private_ca_is_trusted_through_tls_ca_file() {
    // A private CA and a certificate it signed for 127.0.0.1.
    let pki = tempfile::tempdir().expect("tempdir");
    let p = pki.path();
    support::write_test_pki(p);

    // A Pinot controller over HTTPS that has the declared schema, exactly.
    let schema = json!({"schemaName": "devices", "dimensionFieldSpecs": [{"name": "a", "dataType": "STRING"}]});
    let www = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(www.path().join("schemas")).expect("mkdir");
    std::fs::write(www.path().join("schemas/devices"), schema.to_string()).expect("write");
    let server = support::https_file_server(www, &p.join("server.pem"), &p.join("server.key"));

    let m = ManifestDir::new();
    m.write(
        "schema.yaml",
        &format!(
            "apiVersion: ofctl.openframe.io/v1\nkind: PinotSchema\nmetadata:\n  name: devices\nspec: {schema}\n"
        ),
    );
    let config = format!("[pinot]\nurl = \"https://127.0.0.1:{}\"\n", server.port);
    m.write("ofctl.toml", &config);
    let run = ofctl(&["plan", "-f", m.arg()], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("certificate") && run.stderr.contains("[tls] ca_file"),
        "an untrusted certificate is named, with the setting that trusts its CA: {run:?}"
    );
    let ca = p.join("ca.pem");
    m.write(
        "ofctl.toml",
        &format!("{config}[tls]\nca_file = \"{}\"\n", ca.display()),
    );
    let run = ofctl(&["plan", "-f", m.arg()], &[]);
    assert_eq!(run.code, 0, "read over HTTPS, nothing to change: {run:?}");
    assert!(run.stdout.contains("No changes"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_never_follows_a_redirect() {
    use axum::http::HeaderMap;
    use std::sync::{Arc, Mutex};
    // Where a redirect would lead: it records every X-API-KEY it is sent.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = Arc::clone(&seen);
    let elsewhere = axum::Router::new().fallback(move |headers: HeaderMap| {
        let record = Arc::clone(&record);
        async move {
            if let Some(key) = headers.get("x-api-key") {
                record
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(key.as_bytes()).into_owned());
            }
            axum::Json(json!([]))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, elsewhere).await });
    // The configured "Tactical RMM": redirects everything there.
    let to = target.clone();
    let redirecting = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let location = format!("{to}{uri}");
        async move { axum::response::Redirect::permanent(&location) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirecting).await });

    let m = ManifestDir::new();
    m.write(
        "ofctl.toml",
        &format!("[tactical]\nurl = \"{url}\"\napi_key = \"${{env:OFCTL_TACTICAL_API_KEY}}\"\n"),
    )
    .write(
        "s.yaml",
        &script_doc("S", "  script_body: echo\n  shell: shell"),
    );
    let run = ofctl(
        &["apply", "-f", m.arg(), "--auto-approve"],
        &[("OFCTL_TACTICAL_API_KEY", TACTICAL_API_KEY)],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("the server redirected (308) to {target}/scripts/"))
            && run.stderr.contains("ofctl does not follow redirects")
            && run.stderr.contains("`[tactical] url`"),
        "{run:?}"
    );
    assert!(!format!("{run:?}").contains(TACTICAL_API_KEY), "{run:?}");
    assert!(seen.lock().unwrap().is_empty(), "the key went elsewhere");
}
