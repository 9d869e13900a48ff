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
    out.add(
        "saved plan file",
        std::fs::read_to_string(&saved).expect("plan file"),
    );
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
