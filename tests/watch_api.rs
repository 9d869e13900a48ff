//! The platform endpoints of `ofctl watch` (`/v1/tools`, `/v1/cluster-registrations`) against
//! a real Mongo-wire server, Redis and NATS, and the Kafka Connect emulator: writes go through
//! the engine, connector failures are error statuses, the manifest keeps ownership of what it
//! declares, and secrets never leave.

mod support;

use std::time::Duration;

use mongodb::bson::{doc, Document};
use serde_json::{json, Value};
use support::{api_client, mongo, nats, redis, stream, ManifestDir, Watch, API_SECTION};

const PASSWORD: &str = "Tool-Pa55word-7f3a91";
const DB_PASSWORD: &str = "Db-Pa55word-c04e2b";

fn config(nats: &str, mongo: &str, connect: &str, redis: &str) -> String {
    format!(
        "tenant = \"t1\"\n[nats]\nurl = \"{nats}\"\n[mongo]\nuri = \"{mongo}\"\n[connect]\nurl = \"{connect}\"\n\
         [redis]\nurl = \"{redis}\"\n[watch]\ninterval = \"1s\"\ndebounce = \"100ms\"\nprune = true\n{API_SECTION}"
    )
}

fn connector(name: &str, class: &str) -> Value {
    json!({"name": name, "config": {
        "connector.class": class,
        "database.hostname": "trmm-db", "database.port": "5432", "database.user": "tactical",
        "database.password": DB_PASSWORD, "database.dbname": "tacticalrmm",
        "topic.prefix": "trmm", "plugin.name": "pgoutput", "tasks.max": "1"}})
}

fn tactical_tool(connectors: Vec<Value>) -> Value {
    json!({"tool": {
        "name": "Tactical RMM",
        "type": "TACTICAL_RMM",
        "toolType": "TACTICAL_RMM",
        "credentials": {"username": "admin", "password": PASSWORD},
        "debeziumConnectors": connectors
    }})
}

async fn post(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value, String) {
    let resp = api_client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("watch API answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

async fn get_json(url: &str) -> (u16, Value, String) {
    let resp = api_client()
        .get(url)
        .send()
        .await
        .expect("watch API answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

fn results(body: &Value) -> Vec<(String, String)> {
    body["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["address"].as_str().unwrap_or_default().to_string(),
                c["result"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn document(uri: &str, collection: &str, id: &str) -> Option<Document> {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    client
        .database("openframe")
        .collection::<Document>(collection)
        .find_one(doc! {"_id": id})
        .await
        .unwrap()
}

async fn connector_exists(connect: &str, name: &str) -> bool {
    reqwest::get(format!("{connect}/connectors/{name}/config"))
        .await
        .unwrap()
        .status()
        .is_success()
}

#[tokio::test]
async fn tools_and_cluster_registration_go_through_the_engine() {
    let sandbox = ofctl::sandbox::start(Default::default()).await.unwrap();
    let connect = sandbox.connect_url.clone();
    let (_n, nats_url) = nats();
    let (_r, redis_url) = redis();
    let (_m, mongo_uri) = mongo();
    let m = ManifestDir::new();
    m.write("ofctl.toml", &config(&nats_url, &mongo_uri, &connect, &redis_url))
        .write("s.yaml", &stream("TOOL_UPDATE", "  subjects: [machine.*.tool-update]"))
        .write(
            "tool.yaml",
            "apiVersion: ofctl.openframe.io/v1\nkind: IntegratedTool\nmetadata:\n  name: declared\nspec:\n  name: Declared tool\n",
        )
        // Prune only touches a system the manifest declares something for (an emptied folder
        // must not wipe it), so the manifest declares one connector of its own.
        .write(
            "c.yaml",
            "apiVersion: ofctl.openframe.io/v1\nkind: KafkaConnector\nmetadata:\n  name: declared-pg\nspec:\n  config:\n    connector.class: io.debezium.connector.postgresql.PostgresConnector\n    database.hostname: h\n    database.user: u\n    database.dbname: d\n    topic.prefix: declared\n",
        );
    let watch = Watch::start(&["-f", m.arg()]);
    let ready = Watch::until(Duration::from_secs(20), || async {
        watch.get("/readyz").await.0 == 200
    })
    .await;
    assert!(ready.is_some(), "{}", watch.log());
    let api = watch.api.clone();

    // The manifest's tool is listed as the platform listed tools.
    let (code, body, _) = get_json(&format!("{api}/v1/tools")).await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "success");
    assert_eq!(
        body["tools"],
        json!([{"id": "declared", "name": "Declared tool", "enabled": true}])
    );

    // A register job's POST: the tool document and its connector, each reported.
    let tool = tactical_tool(vec![connector(
        "trmm-pg",
        "io.debezium.connector.postgresql.PostgresConnector",
    )]);
    let url = format!("{api}/v1/tools/tactical-rmm");
    let (code, body, text) = post(&url, tool.to_string()).await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(body["status"], "success");
    assert_eq!(
        results(&body),
        vec![
            ("IntegratedTool/tactical-rmm".into(), "done".into()),
            ("KafkaConnector/trmm-pg".into(), "done".into()),
        ]
    );
    assert_eq!(body["tool"]["id"], "tactical-rmm");
    assert_eq!(body["tool"]["enabled"], true);
    assert_eq!(body["tool"]["credentials"]["password"], "(sensitive)");
    assert!(connector_exists(&connect, "trmm-pg").await);
    let stored = document(&mongo_uri, "integrated_tools", "tactical-rmm")
        .await
        .expect("tool stored");
    // Stored as the platform reads it (in clear: the platform's own schema, §15.7).
    assert_eq!(
        stored
            .get_document("credentials")
            .unwrap()
            .get_str("password")
            .unwrap(),
        PASSWORD
    );
    assert!(stored.get_bool("enabled").unwrap());

    // The same request again changes nothing (the original re-sent everything every time).
    let (code, body, text) = post(&url, tool.to_string()).await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        results(&body),
        vec![
            ("IntegratedTool/tactical-rmm".into(), "unchanged".into()),
            ("KafkaConnector/trmm-pg".into(), "unchanged".into()),
        ]
    );

    // Lookups by id, by type (the original's quirk, kept for callers), and a miss.
    let (code, body, _) = get_json(&url).await;
    assert_eq!(code, 200);
    assert_eq!(body["tool"]["name"], "Tactical RMM");
    let (code, body, _) = get_json(&format!("{api}/v1/tools/TACTICAL_RMM")).await;
    assert_eq!((code, &body["tool"]["id"]), (200, &json!("tactical-rmm")));
    let (code, body, _) = get_json(&format!("{api}/v1/tools/nope")).await;
    assert_eq!(
        (code, body),
        (404, json!({"status": "error", "message": "Tool not found"}))
    );

    // A connector Kafka Connect refuses: an error status naming it, the tool itself saved.
    let broken = tactical_tool(vec![
        connector(
            "trmm-pg",
            "io.debezium.connector.postgresql.PostgresConnector",
        ),
        connector(
            "trmm-broken",
            "io.debezium.connector.nosuch.NoSuchConnector",
        ),
    ]);
    let (code, body, text) = post(&url, broken.to_string()).await;
    assert_eq!(code, 502, "{text}");
    assert_eq!(body["status"], "error");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("KafkaConnector/trmm-broken create failed")
            && message.contains("NoSuchConnector"),
        "{message}"
    );
    assert_eq!(
        results(&body),
        vec![
            ("KafkaConnector/trmm-pg".into(), "unchanged".into()),
            ("IntegratedTool/tactical-rmm".into(), "done".into()),
            ("KafkaConnector/trmm-broken".into(), "failed".into()),
        ]
    );
    assert!(!connector_exists(&connect, "trmm-broken").await);

    // Bad bodies: 400 with the field named, nothing written.
    for (body, expected) in [
        ("not json", "not valid JSON"),
        ("{\"name\": \"x\"}", "must be {\"tool\": {...}}"),
        ("{\"tool\": {\"nmae\": \"x\"}}", "nmae"),
        (
            "{\"tool\": {\"debeziumConnectors\": [{\"name\": \"c\"}]}}",
            "tool.debeziumConnectors[0]",
        ),
    ] {
        let (code, answer, text) = post(&format!("{api}/v1/tools/other"), body).await;
        assert_eq!(code, 400, "{body}: {text}");
        assert_eq!(answer["status"], "error");
        assert!(
            answer["message"].as_str().unwrap().contains(expected),
            "{body}: {text}"
        );
    }
    assert!(document(&mongo_uri, "integrated_tools", "other")
        .await
        .is_none());

    // The manifest owns what it declares: the next pass would undo the request.
    let (code, body, text) = post(
        &format!("{api}/v1/tools/declared"),
        json!({"tool": {"name": "Renamed"}}).to_string(),
    )
    .await;
    assert_eq!(code, 409, "{text}");
    assert!(
        body["message"].as_str().unwrap().contains("tool.yaml:"),
        "{text}"
    );

    // Cluster registration sets the release version through the engine, once.
    let reg = format!("{api}/v1/cluster-registrations");
    let (code, body, text) = post(&reg, json!({"imageTagVersion": "1.4.2"}).to_string()).await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        results(&body),
        vec![("ReleaseVersion/cluster".into(), "done".into())]
    );
    let release = document(&mongo_uri, "release_versions", "cluster").await;
    let versions: Vec<String> = {
        let client = mongodb::Client::with_uri_str(&mongo_uri).await.unwrap();
        let mut cursor = client
            .database("openframe")
            .collection::<Document>("release_versions")
            .find(doc! {})
            .await
            .unwrap();
        let mut out = Vec::new();
        while cursor.advance().await.unwrap() {
            let d = cursor.deserialize_current().unwrap();
            out.push(d.get_str("version").unwrap().to_string());
        }
        out
    };
    assert_eq!(versions, vec!["1.4.2".to_string()], "{release:?}");
    let (code, body, _) = post(&reg, json!({"imageTagVersion": "1.4.2"}).to_string()).await;
    assert_eq!(code, 200);
    assert_eq!(
        results(&body),
        vec![("ReleaseVersion/cluster".into(), "unchanged".into())]
    );
    for bad in [
        "{}",
        "{\"imageTagVersion\": 7}",
        "{\"imageTagVersion\": \" \"}",
    ] {
        let (code, _, text) = post(&reg, bad).await;
        assert_eq!(code, 400, "{bad}: {text}");
    }
    let (code, _, _) = get_json(&format!("{api}/v1/tools?tenant=nope")).await;
    assert_eq!(code, 404);

    // Prune (on in this target) leaves the connectors of API-registered tools alone, while a
    // managed connector nothing declares or uses goes.
    let orphan = json!({"name": "orphan", "config": {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": "h", "database.user": "u", "database.dbname": "d",
        "topic.prefix": "o", "ofctl.openframe.io/managed-by": "ofctl/t1/default"}});
    let resp = reqwest::Client::new()
        .post(format!("{connect}/connectors"))
        .json(&orphan)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let pruned = Watch::until(Duration::from_secs(10), || async {
        !connector_exists(&connect, "orphan").await
    })
    .await;
    assert!(pruned.is_some(), "orphan not pruned:\n{}", watch.log());
    assert!(connector_exists(&connect, "trmm-pg").await);

    // Secrets never leave: not in answers (checked above), not in the log, not in metrics.
    let (_, metrics) = watch.get("/metrics").await;
    for output in [watch.log(), metrics] {
        assert!(!output.contains(PASSWORD) && !output.contains(DB_PASSWORD));
    }
    assert!(
        watch.log().contains("KafkaConnector/trmm-pg create: done"),
        "{}",
        watch.log()
    );
}
