//! The two listeners of `ofctl watch` and what guards the platform API, through the real binary
//! against the Pinot emulator (slowed down, so the first pass is seen in progress), a real
//! Mongo-wire server and the Kafka Connect emulator: tokens and scopes, the closed default,
//! the explicit unauthenticated opt-in, content type, size, input rules, and the audit log.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{mongo, ManifestDir, Watch, API_SECTION, API_TOKEN};

const READ_TOKEN: &str = "read-only-token-9d81c4a7e2";

const SCHEMA: &str = "apiVersion: ofctl.openframe.io/v1\nkind: PinotSchema\nmetadata:\n  name: s\nspec:\n  dimensionFieldSpecs: [{name: a, dataType: STRING}]\n";

async fn request(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().request(method, url).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.expect("the API answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    )
}

async fn get(url: &str, token: Option<&str>) -> (u16, Value, reqwest::header::HeaderMap) {
    request(reqwest::Method::GET, url, token, None, Vec::new()).await
}

async fn post_json(url: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let (status, body, _) = request(
        reqwest::Method::POST,
        url,
        token,
        Some("application/json"),
        body.to_string().into_bytes(),
    )
    .await;
    (status, body)
}

#[tokio::test]
async fn tokens_scopes_limits_and_the_management_port() {
    let mut options = ofctl::sandbox::SandboxOptions::default();
    options.faults.latency = Duration::from_millis(1500);
    let sandbox = ofctl::sandbox::start(options).await.unwrap();
    let m = ManifestDir::new();
    m.write(
        "ofctl.toml",
        &format!(
            "tenant = \"t1\"\n[pinot]\nurl = \"{}\"\n[watch]\ninterval = \"1h\"\n{API_SECTION}\
             [[api.tokens]]\nid = \"dashboards\"\ntoken = \"${{env:OFCTL_READ_TOKEN}}\"\nscope = \"read\"\n",
            sandbox.pinot_url
        ),
    )
    .write("schema.yaml", SCHEMA);
    let watch = Watch::start_with_env(&["-f", m.arg()], &[("OFCTL_READ_TOKEN", READ_TOKEN)]);
    let health = format!("{}/management/v1/health", watch.management);

    // The first pass is still reading the (slow) Pinot controller: not healthy yet, and the
    // answer says which tenant is starting.
    let (status, body, _) = get(&health, None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "DOWN", "{body}");
    assert_eq!(body["tenants"]["t1"], "STARTING", "{body}");
    let up = Watch::until(Duration::from_secs(30), || async {
        get(&health, None).await.0 == 200
    })
    .await;
    assert!(up.is_some(), "{}", watch.log());
    assert_eq!(get(&health, None).await.1, json!({"status": "UP"}));

    // The management port needs no token and serves no /v1; the API port serves only /v1.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _, _) = get(&format!("{}{path}", watch.management), None).await;
        assert_eq!(status, 200, "{path}");
        let (status, _, _) = get(&format!("{}{path}", watch.api), Some(API_TOKEN)).await;
        assert_eq!(status, 404, "{path} on the API port");
    }
    let (status, _, _) = get(&format!("{}/v1/drift", watch.management), None).await;
    assert_eq!(status, 404);

    // No token, a wrong one: 401 with the challenge and a JSON error.
    let drift = format!("{}/v1/drift", watch.api);
    let (status, body, headers) = get(&drift, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"ofctl\"");
    assert_eq!(body["status"], "error");
    let (status, _, headers) = get(&drift, Some("not-the-token-at-all-0000")).await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    // An unknown tenant tells a stranger nothing about the tenants that exist.
    let (status, body, _) = get(&format!("{drift}?tenant=nope"), None).await;
    assert_eq!(status, 401);
    assert!(!body.to_string().contains("t1"), "{body}");

    // The right tokens read; only the write-scoped one may write.
    let (status, body, _) = get(&drift, Some(API_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("t1").is_some(), "{body}");
    assert_eq!(get(&drift, Some(READ_TOKEN)).await.0, 200);
    let register = format!("{}/v1/cluster-registrations", watch.api);
    let release = json!({"imageTagVersion": "1.2.3"});
    let (status, body) = post_json(&register, Some(READ_TOKEN), &release).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("dashboards"),
        "{body}"
    );

    // Writes carry JSON of bounded size.
    let (status, body, _) = request(
        reqwest::Method::POST,
        &register,
        Some(API_TOKEN),
        Some("text/plain"),
        release.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 415, "{body}");
    let (status, body, _) = request(
        reqwest::Method::POST,
        &register,
        Some(API_TOKEN),
        None,
        release.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 415, "{body}");
    let big = format!(
        "{{\"imageTagVersion\": \"{}\"}}",
        "1".repeat(1024 * 1024 + 1)
    );
    let (status, body, _) = request(
        reqwest::Method::POST,
        &register,
        Some(API_TOKEN),
        Some("application/json"),
        big.into_bytes(),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    // A release tag flows into agents' download links: it must look like one.
    for bad in ["../../evil", "1.0 beta", "1.0/x"] {
        let (status, body) =
            post_json(&register, Some(API_TOKEN), &json!({"imageTagVersion": bad})).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("release tag"),
            "{body}"
        );
    }

    // One audit line per write, naming the peer and the token id, never a token's value.
    let log = watch.log();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("audit:")).collect();
    assert_eq!(audit.len(), 7, "one line per write:\n{log}");
    assert!(
        audit.iter().any(|l| l.contains("token_id=dashboards")
            && l.contains("POST /v1/cluster-registrations -> 403")
            && l.contains("peer=127.0.0.1:")),
        "{log}"
    );
    assert!(audit
        .iter()
        .any(|l| l.contains("token_id=default") && l.contains("-> 415")));
    for secret in [API_TOKEN, READ_TOKEN] {
        assert!(
            !log.contains(secret),
            "a token value reached the log:\n{log}"
        );
    }
}

#[tokio::test]
async fn without_a_token_the_api_is_closed_and_the_opt_in_opens_it() {
    let sandbox = ofctl::sandbox::start(Default::default()).await.unwrap();
    let (_m, mongo_uri) = mongo();
    let base = format!(
        "tenant = \"t1\"\n[mongo]\nuri = \"{mongo_uri}\"\n[connect]\nurl = \"{}\"\n[watch]\ninterval = \"1h\"\n",
        sandbox.connect_url
    );
    let tool = json!({"tool": {"name": "Grafana", "type": "GRAFANA", "toolType": "GRAFANA",
        "debeziumConnectors": [{"name": "files", "config": {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
            "file": "/etc/passwd", "topic": "loot"}}]}});

    // Nothing configured: 403 naming the setting, whatever token is sent.
    let closed = ManifestDir::new();
    closed.write("ofctl.toml", &base);
    let watch = Watch::start(&["-f", closed.arg()]);
    for token in [None, Some(API_TOKEN)] {
        let (status, body) =
            post_json(&format!("{}/v1/tools/grafana", watch.api), token, &tool).await;
        assert_eq!(status, 403, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("[api] token") && message.contains("allow_unauthenticated"),
            "{message}"
        );
    }
    assert!(
        watch.log().contains("no [api] token configured"),
        "{}",
        watch.log()
    );
    drop(watch);

    // The original's open API, as an explicit opt-in that is logged at start: no token needed,
    // and the input rules still hold (a connector class outside the Debezium families).
    let open = ManifestDir::new();
    open.write(
        "ofctl.toml",
        &format!("{base}[api]\nallow_unauthenticated = true\n"),
    );
    let watch = Watch::start(&["-f", open.arg()]);
    assert!(
        watch.log().contains("allow_unauthenticated = true"),
        "{}",
        watch.log()
    );
    let url = format!("{}/v1/tools/grafana", watch.api);
    let (status, body) = post_json(&url, None, &tool).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("connector.class `org.apache.kafka.connect.file.FileStreamSourceConnector` is not allowed"),
        "{body}"
    );
    let mut allowed = tool.clone();
    allowed["tool"]["debeziumConnectors"][0]["config"] = json!({
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": "grafana-db", "database.user": "grafana",
        "database.dbname": "grafana", "topic.prefix": "grafana"});
    let (status, body) = post_json(&url, None, &allowed).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = get(&url, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tool"]["name"], "Grafana", "{body}");
    assert!(
        watch.log().lines().any(|l| l.contains("token_id=anonymous")
            && l.contains("audit: POST /v1/tools/grafana -> 200")),
        "{}",
        watch.log()
    );
}
