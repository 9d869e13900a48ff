//! NATS JetStream streams end to end: the real ofctl binary against a real nats-server.

mod support;

use serde_json::{json, Value};
use support::{endpoint_config, nats, ofctl, stream, stream_config, ManifestDir};

async fn js(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(url)
        .await
        .expect("connect to test nats");
    async_nats::jetstream::new(client)
}

fn actions(plan: &Value) -> Vec<(String, String)> {
    plan["changes"]
        .as_array()
        .expect("changes array")
        .iter()
        .map(|c| {
            (
                c["address"].as_str().unwrap().to_string(),
                c["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn desired_state_creates_then_converges_then_updates_in_place() {
    let (_server, url) = nats();
    let m = ManifestDir::new();
    m.copy_from("desired-state/nats")
        .write("ofctl.toml", &endpoint_config("nats", &url));

    let plan = ofctl(&["plan", "-f", m.arg(), "--format", "json"], &[]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let p = plan.json();
    assert_eq!(p["summary"]["create"], 5, "{plan:?}");
    let created: Vec<_> = actions(&p).into_iter().map(|(a, _)| a).collect();
    for s in [
        "TOOL_INSTALLATION",
        "CLIENT_UPDATE",
        "TOOL_UPDATE",
        "TOOL_CONNECTIONS",
        "INSTALLED_AGENTS",
    ] {
        assert!(created.contains(&format!("NatsStream/{s}")), "{created:?}");
    }

    let apply = ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]);
    assert_eq!(apply.code, 0, "{apply:?}");
    let live = stream_config(&url, "TOOL_UPDATE")
        .await
        .expect("stream exists");
    assert_eq!(live["subjects"], json!(["machine.*.tool.*.update"]));
    assert_eq!(live["storage"], "file");
    assert_eq!(
        live["metadata"]["ofctl.openframe.io/managed-by"],
        "ofctl/default/default"
    );

    let again = ofctl(&["plan", "-f", m.arg()], &[]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("No changes"), "{again:?}");

    // A subject change is an in-place update.
    let text = std::fs::read_to_string(m.path().join("streams.yaml")).unwrap();
    m.write(
        "streams.yaml",
        &text.replace("machine.*.client-update", "machine.*.client-update.v2"),
    );
    let plan = ofctl(&["plan", "-f", m.arg(), "--format", "json"], &[]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let p = plan.json();
    assert_eq!(p["summary"]["update"], 1);
    assert_eq!(p["summary"]["noop"], 4);
    let change = p["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == "update")
        .unwrap();
    assert_eq!(change["address"], "NatsStream/CLIENT_UPDATE");
    assert_eq!(change["diff"][0]["path"], "subjects");
    assert_eq!(
        change["diff"][0]["after"],
        json!(["machine.*.client-update.v2"])
    );
    let apply = ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]);
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_eq!(
        stream_config(&url, "CLIENT_UPDATE").await.unwrap()["subjects"],
        json!(["machine.*.client-update.v2"])
    );
    assert_eq!(ofctl(&["plan", "-f", m.arg()], &[]).code, 0);
}

#[tokio::test]
async fn storage_change_is_a_refused_replace_unless_allowed() {
    let (_server, url) = nats();
    let m = ManifestDir::new();
    m.write("ofctl.toml", &endpoint_config("nats", &url)).write(
        "s.yaml",
        &stream("DATA", "  subjects: [data.>]\n  storage: file"),
    );
    assert_eq!(
        ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]).code,
        0
    );
    // Put a message in, so the test can see that a refused replace keeps it.
    js(&url)
        .await
        .publish("data.x", "payload".into())
        .await
        .unwrap()
        .await
        .unwrap();

    m.write(
        "s.yaml",
        &stream("DATA", "  subjects: [data.>]\n  storage: memory"),
    );
    let plan = ofctl(&["plan", "-f", m.arg(), "--format", "json"], &[]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let c = &plan.json()["changes"][0];
    assert_eq!(c["action"], "replace");
    assert!(c["blocked"].as_str().unwrap().contains("--allow-replace"));
    assert!(c["reasons"][0].as_str().unwrap().contains("storage"));

    let apply = ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]);
    assert_eq!(apply.code, 1, "{apply:?}");
    assert!(apply.stderr.contains("refused"), "{apply:?}");
    let mut info = js(&url).await.get_stream("DATA").await.unwrap();
    assert_eq!(
        info.info().await.unwrap().state.messages,
        1,
        "refused replace must not touch data"
    );

    let apply = ofctl(
        &["apply", "-f", m.arg(), "--auto-approve", "--allow-replace"],
        &[],
    );
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_eq!(
        stream_config(&url, "DATA").await.unwrap()["storage"],
        "memory"
    );
    assert_eq!(ofctl(&["plan", "-f", m.arg()], &[]).code, 0);

    // The per-resource annotation allows it too.
    m.write(
        "s.yaml",
        "apiVersion: ofctl.openframe.io/v1\nkind: NatsStream\nmetadata:\n  name: DATA\n  annotations:\n    ofctl.openframe.io/allow-replace: \"true\"\nspec:\n  subjects: [data.>]\n  retention: workqueue\n  storage: memory\n",
    );
    let apply = ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]);
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_eq!(
        stream_config(&url, "DATA").await.unwrap()["retention"],
        "workqueue"
    );
}

#[tokio::test]
async fn out_of_band_deletion_is_recreated() {
    let (_server, url) = nats();
    let m = ManifestDir::new();
    m.copy_from("desired-state/nats")
        .write("ofctl.toml", &endpoint_config("nats", &url));
    assert_eq!(
        ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]).code,
        0
    );

    js(&url)
        .await
        .delete_stream("TOOL_CONNECTIONS")
        .await
        .unwrap();
    let plan = ofctl(&["plan", "-f", m.arg(), "--format", "json"], &[]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let p = plan.json();
    assert_eq!(p["summary"]["create"], 1);
    assert!(actions(&p).contains(&("NatsStream/TOOL_CONNECTIONS".into(), "create".into())));
    assert_eq!(
        ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]).code,
        0
    );
    assert!(stream_config(&url, "TOOL_CONNECTIONS").await.is_some());
}

#[tokio::test]
async fn saved_plan_applies_exactly_or_is_refused_when_stale() {
    let (_server, url) = nats();
    let m = ManifestDir::new();
    m.copy_from("desired-state/nats")
        .write("ofctl.toml", &endpoint_config("nats", &url));
    let planfile = m.path().join("plan.json");
    let planfile = planfile.to_str().unwrap();

    let plan = ofctl(&["plan", "-f", m.arg(), "-o", planfile], &[]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let apply = ofctl(&["apply", planfile], &[]);
    assert_eq!(apply.code, 0, "{apply:?}");
    assert!(apply.stdout.contains("5 change(s) made"), "{apply:?}");

    // Plan an update, then change the stream out of band before applying.
    let text = std::fs::read_to_string(m.path().join("streams.yaml")).unwrap();
    m.write(
        "streams.yaml",
        &text.replace("machine.*.installed-agent", "machine.*.installed-agent.v2"),
    );
    assert_eq!(ofctl(&["plan", "-f", m.arg(), "-o", planfile], &[]).code, 2);
    let client = async_nats::connect(url.as_str()).await.unwrap();
    let mut cfg = stream_config(&url, "TOOL_UPDATE").await.unwrap();
    cfg["subjects"] = json!(["somebody.else.>"]);
    let resp = client
        .request(
            "$JS.API.STREAM.UPDATE.TOOL_UPDATE",
            serde_json::to_vec(&cfg).unwrap().into(),
        )
        .await
        .unwrap();
    assert!(serde_json::from_slice::<Value>(&resp.payload)
        .unwrap()
        .get("error")
        .is_none());

    let apply = ofctl(&["apply", planfile], &[]);
    assert_eq!(apply.code, 1, "{apply:?}");
    assert!(apply.stderr.contains("stale"), "{apply:?}");
    assert!(apply.stderr.contains("NatsStream/TOOL_UPDATE"), "{apply:?}");
    // Nothing from the stale plan was applied.
    assert_eq!(
        stream_config(&url, "INSTALLED_AGENTS").await.unwrap()["subjects"],
        json!(["machine.*.installed-agent"])
    );

    // A fresh plan covers both and applies.
    assert_eq!(ofctl(&["plan", "-f", m.arg(), "-o", planfile], &[]).code, 2);
    assert_eq!(ofctl(&["apply", planfile], &[]).code, 0);
    assert_eq!(ofctl(&["plan", "-f", m.arg()], &[]).code, 0);
}

#[test]
fn unreachable_server_is_a_clear_error() {
    let port = support::free_port();
    support::assert_unreachable_is_a_clear_error(
        &endpoint_config("nats", &format!("nats://127.0.0.1:{port}")),
        &stream("S", "  subjects: [s.>]"),
        "NatsStream",
        "nats",
        port,
    );
}

#[tokio::test]
async fn json_plan_matches_its_published_schema() {
    let (_server, url) = nats();
    let m = ManifestDir::new();
    m.copy_from("desired-state/nats")
        .write("ofctl.toml", &endpoint_config("nats", &url));
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(support::repo_root().join("schema/plan.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("plan schema compiles");
    for step in 0..2 {
        let plan = ofctl(&["plan", "-f", m.arg(), "--format", "json"], &[]);
        let doc = plan.json();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "step {step}: {errors:?}\n{plan:?}");
        if step == 0 {
            assert_eq!(
                ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]).code,
                0
            );
        }
    }
}
