//! Kafka topics end to end: the real ofctl binary against a real Kafka-protocol broker
//! (noida-db, docs/services.md) through librdkafka's admin API.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use serde_json::{json, Value};
use support::{kafka, ofctl, ManifestDir};

const DEVICES_TOPIC: &str = "openframe.oss-tenant.kafka.topics.inbound.devices-topic.name";
const TOOL_EVENTS_TOPIC: &str =
    "openframe.oss-tenant.kafka.topics.inbound.integrated-tool-events.name";

fn config(brokers: &str) -> String {
    format!(
        "[kafka]\nbrokers = \"{brokers}\"\n\n[variables]\n\"{DEVICES_TOPIC}\" = \"devices-topic\"\n\"{TOOL_EVENTS_TOPIC}\" = \"${{env:OFCTL_TEST_TOOL_EVENTS_TOPIC:-integrated-tool.events.pinot}}\"\n"
    )
}

fn topic(name: &str, spec: &str) -> String {
    format!("apiVersion: ofctl.openframe.io/v1\nkind: KafkaTopic\nmetadata:\n  name: {name}\nspec:\n{spec}\n")
}

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client")
}

/// What the broker says about a topic: partition count and its own config overrides.
async fn live(brokers: &str, name: &str) -> Option<(usize, BTreeMap<String, String>)> {
    let admin = admin(brokers);
    let metadata = admin
        .inner()
        .fetch_metadata(Some(name), Duration::from_secs(5))
        .expect("metadata");
    let t = metadata.topics().iter().find(|t| t.name() == name)?;
    if t.error().is_some() {
        return None;
    }
    let partitions = t.partitions().len();
    let configs = admin
        .describe_configs(&[ResourceSpecifier::Topic(name)], &AdminOptions::new())
        .await
        .expect("describe_configs");
    let resource = configs.into_iter().next()?.ok()?;
    let overrides = resource
        .entries
        .into_iter()
        .filter(|e| e.source == ConfigSource::DynamicTopic)
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    Some((partitions, overrides))
}

fn change<'a>(plan: &'a Value, address: &str) -> &'a Value {
    plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["address"] == address)
        .unwrap_or_else(|| panic!("{address} not in plan: {plan:#}"))
}

#[tokio::test]
async fn desired_state_creates_then_converges_with_two_reads() {
    let (_server, brokers) = kafka();
    let m = ManifestDir::new();
    m.copy_from("desired-state/kafka")
        .write("ofctl.toml", &config(&brokers));
    let env = [("OFCTL_TEST_TOOL_EVENTS_TOPIC", "tool-events.test")];

    let plan = ofctl(&["plan", "-f", m.arg(), "--format", "json"], &env);
    assert_eq!(plan.code, 2, "{plan:?}");
    let p = plan.json();
    assert_eq!(p["summary"]["create"], 9, "{plan:?}");
    // Names from [variables], including one taken from the environment.
    change(&p, "KafkaTopic/devices-topic");
    change(&p, "KafkaTopic/tool-events.test");

    let apply = ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &env);
    assert_eq!(apply.code, 0, "{apply:?}");
    let (partitions, config) = live(&brokers, "tactical-rmm.postgres.events")
        .await
        .expect("topic exists");
    assert_eq!(partitions, 10);
    assert_eq!(
        config.get("cleanup.policy").map(String::as_str),
        Some("compact")
    );
    assert_eq!(
        config.get("compression.type").map(String::as_str),
        Some("lz4")
    );
    assert_eq!(
        live(&brokers, "fleet.query_results.events")
            .await
            .unwrap()
            .0,
        1
    );
    let (partitions, config) = live(&brokers, "tool-events.test").await.unwrap();
    assert_eq!((partitions, config.len()), (10, 0));

    // Unchanged manifest: no changes, one metadata and one DescribeConfigs request, no writes.
    let again = ofctl(&["plan", "-f", m.arg(), "--log-level", "info"], &env);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("No changes"), "{again:?}");
    assert_eq!(
        again.logged_requests("read live state in")["kafka"],
        json!({"reads": 2, "writes": 0}),
        "{again:?}"
    );
}

#[tokio::test]
async fn partitions_grow_in_place_and_shrinking_is_a_refused_replace() {
    let (_server, brokers) = kafka();
    let m = ManifestDir::new();
    let spec = |n: u32| {
        format!("  partitions: {n}\n  replication_factor: 1\n  config: {{cleanup.policy: compact}}")
    };
    m.write("ofctl.toml", &config(&brokers))
        .write("t.yaml", &topic("events", &spec(3)));
    assert_eq!(
        ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]).code,
        0
    );
    assert_eq!(live(&brokers, "events").await.unwrap().0, 3);

    m.write("t.yaml", &topic("events", &spec(6)));
    let plan = ofctl(&["plan", "-f", m.arg(), "--format", "json"], &[]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let c = change(&plan.json(), "KafkaTopic/events").clone();
    assert_eq!(c["action"], "update");
    assert_eq!(c["diff"][0]["path"], "partitions");
    assert_eq!(
        (
            c["diff"][0]["before"].clone(),
            c["diff"][0]["after"].clone()
        ),
        (json!(3), json!(6))
    );
    let apply = ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]);
    assert_eq!(apply.code, 0, "{apply:?}");
    let (partitions, config) = live(&brokers, "events").await.unwrap();
    assert_eq!(partitions, 6);
    assert_eq!(
        config.get("cleanup.policy").map(String::as_str),
        Some("compact")
    );
    assert_eq!(ofctl(&["plan", "-f", m.arg()], &[]).code, 0);

    // 6 → 3: Kafka cannot, so it is a replace, refused without --allow-replace.
    m.write("t.yaml", &topic("events", &spec(3)));
    let plan = ofctl(&["plan", "-f", m.arg(), "--format", "json"], &[]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let c = change(&plan.json(), "KafkaTopic/events").clone();
    assert_eq!(c["action"], "replace");
    assert_eq!(c["risk"], "destructive");
    assert!(c["reasons"][0].as_str().unwrap().contains("6 → 3"), "{c:#}");
    assert!(
        c["blocked"].as_str().unwrap().contains("--allow-replace"),
        "{c:#}"
    );
    let text = ofctl(&["plan", "-f", m.arg()], &[]);
    assert!(text.stdout.contains("REFUSED"), "{text:?}");
    let apply = ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]);
    assert_eq!(apply.code, 1, "{apply:?}");
    assert_eq!(
        live(&brokers, "events").await.unwrap().0,
        6,
        "refused replace must not touch the topic"
    );

    let apply = ofctl(
        &["apply", "-f", m.arg(), "--auto-approve", "--allow-replace"],
        &[],
    );
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_eq!(live(&brokers, "events").await.unwrap().0, 3);
    assert_eq!(ofctl(&["plan", "-f", m.arg()], &[]).code, 0);
}

#[tokio::test]
async fn config_changes_send_the_whole_set_and_replication_changes_are_refused() {
    let (_server, brokers) = kafka();
    let m = ManifestDir::new();
    m.write("ofctl.toml", &config(&brokers)).write(
        "t.yaml",
        &topic(
            "cfg",
            "  partitions: 2\n  replication_factor: 1\n  config: {cleanup.policy: compact, compression.type: lz4}",
        ),
    );
    assert_eq!(
        ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]).code,
        0
    );

    // Add a numeric override and drop compression.type: one update, and afterwards the topic
    // has exactly the manifest's overrides (compression.type back to the broker default).
    m.write(
        "t.yaml",
        &topic(
            "cfg",
            "  partitions: 2\n  replication_factor: 1\n  config: {cleanup.policy: compact, retention.ms: 86400000}",
        ),
    );
    let plan = ofctl(&["plan", "-f", m.arg(), "--format", "json"], &[]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let p = plan.json();
    let c = change(&p, "KafkaTopic/cfg");
    assert_eq!(c["action"], "update");
    let paths: Vec<_> = c["diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["path"].as_str().unwrap(), d["op"].as_str().unwrap()))
        .collect();
    assert_eq!(
        paths,
        vec![
            ("config[\"retention.ms\"]", "add"),
            ("config[\"compression.type\"]", "remove")
        ],
        "{c:#}"
    );
    let apply = ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]);
    assert_eq!(apply.code, 0, "{apply:?}");
    let (_, config) = live(&brokers, "cfg").await.unwrap();
    assert_eq!(
        config,
        BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("retention.ms".to_string(), "86400000".to_string()),
        ])
    );
    assert_eq!(ofctl(&["plan", "-f", m.arg()], &[]).code, 0);

    m.write(
        "t.yaml",
        &topic(
            "cfg",
            "  partitions: 2\n  replication_factor: 3\n  config: {cleanup.policy: compact, retention.ms: 86400000}",
        ),
    );
    let plan = ofctl(&["plan", "-f", m.arg(), "--format", "json"], &[]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let p = plan.json();
    let c = change(&p, "KafkaTopic/cfg");
    assert_eq!(c["action"], "replace");
    assert!(
        c["reasons"][0]
            .as_str()
            .unwrap()
            .contains("replication_factor"),
        "{c:#}"
    );
    assert!(c["blocked"].is_string(), "{c:#}");
}

#[tokio::test]
async fn topics_are_never_pruned_and_internal_topics_are_invisible() {
    let (_server, brokers) = kafka();
    let m = ManifestDir::new();
    m.write("ofctl.toml", &config(&brokers))
        .write(
            "a.yaml",
            &topic("keep", "  partitions: 1\n  replication_factor: 1"),
        )
        .write(
            "b.yaml",
            &topic("dropped", "  partitions: 1\n  replication_factor: 1"),
        );
    assert_eq!(
        ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]).code,
        0
    );
    // Somebody else's topic.
    let results = admin(&brokers)
        .create_topics(
            [&NewTopic::new("foreign", 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");

    m.remove("b.yaml");
    let plan = ofctl(&["plan", "-f", m.arg(), "--format", "json", "--prune"], &[]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let p = plan.json();
    let addresses: Vec<_> = p["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, vec!["KafkaTopic/keep"], "{p:#}");
    assert_eq!(
        ofctl(&["apply", "-f", m.arg(), "--auto-approve", "--prune"], &[]).code,
        0
    );
    for t in ["keep", "dropped", "foreign"] {
        assert!(live(&brokers, t).await.is_some(), "{t} must still exist");
    }
}

#[test]
fn bad_names_are_manifest_errors() {
    let m = ManifestDir::new();
    m.write("ofctl.toml", &config("127.0.0.1:1")).write(
        "a.yaml",
        &topic(
            "${no.such.variable}",
            "  partitions: 1\n  replication_factor: 1",
        ),
    );
    let run = ofctl(&["validate", "-f", m.arg()], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("a.yaml:4:"), "{run:?}");
    assert!(run.stderr.contains("metadata.name"), "{run:?}");
    assert!(run.stderr.contains("no.such.variable"), "{run:?}");

    m.write(
        "a.yaml",
        &topic("has space", "  partitions: 1\n  replication_factor: 1"),
    );
    let run = ofctl(&["plan", "-f", m.arg()], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("a.yaml:1: KafkaTopic/has space"),
        "{run:?}"
    );
    assert!(run.stderr.contains("ASCII letters"), "{run:?}");
}

#[test]
fn unreachable_brokers_are_a_clear_error() {
    let port = support::free_port();
    let m = ManifestDir::new();
    m.write("ofctl.toml", &config(&format!("127.0.0.1:{port}")))
        .write(
            "a.yaml",
            &topic("t", "  partitions: 1\n  replication_factor: 1"),
        );
    let plan = ofctl(&["plan", "-f", m.arg()], &[]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(
        plan.stderr.contains("cannot read KafkaTopic from kafka"),
        "{plan:?}"
    );
    assert!(
        plan.stderr.contains(&format!("127.0.0.1:{port}")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn export_then_plan_is_a_no_op() {
    let (_server, brokers) = kafka();
    let m = ManifestDir::new();
    m.copy_from("desired-state/kafka")
        .write("ofctl.toml", &config(&brokers));
    assert_eq!(
        ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]).code,
        0
    );

    let out = ManifestDir::new();
    let cfg = m.path().join("ofctl.toml");
    let export = ofctl(
        &[
            "export",
            "-c",
            cfg.to_str().unwrap(),
            "--kind",
            "KafkaTopic",
            "-o",
            out.arg(),
        ],
        &[],
    );
    assert_eq!(export.code, 0, "{export:?}");
    let text = std::fs::read_to_string(out.path().join("kafkatopic.yaml")).unwrap();
    assert!(text.contains("name: meshcentral.mongodb.events"), "{text}");
    assert!(!text.contains("__consumer_offsets"), "{text}");
    out.write("ofctl.toml", &config(&brokers));
    let plan = ofctl(&["plan", "-f", out.arg(), "--format", "json"], &[]);
    assert_eq!(plan.code, 0, "{plan:?}\n{text}");
    assert_eq!(plan.json()["summary"]["noop"], 9);
}

/// Applies racing to create the same topics (as a retry whose first answer was lost does):
/// the one that finds `TopicAlreadyExists` with the asked-for topic succeeds too.
#[tokio::test]
async fn a_create_that_finds_the_asked_for_topic_already_there_succeeds() {
    let (_server, brokers) = kafka();
    for round in 0..10 {
        let m = ManifestDir::new();
        m.write("ofctl.toml", &config(&brokers));
        let names: Vec<String> = (0..8).map(|i| format!("race-{round}-{i}")).collect();
        for n in &names {
            m.write(
                &format!("{n}.yaml"),
                &topic(
                    n,
                    "  partitions: 2\n  replication_factor: 1\n  config:\n    retention.ms: 3600000",
                ),
            );
        }
        let dir = m.arg().to_string();
        let started: Vec<_> = (0..3)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || ofctl(&["apply", "-f", &dir, "--auto-approve"], &[]))
            })
            .collect();
        let runs: Vec<_> = started.into_iter().map(|h| h.join().unwrap()).collect();
        // Every apply must succeed; the round proves something once two of them both
        // planned (and so sent) every create.
        for r in &runs {
            assert_eq!(r.code, 0, "{r:?}");
        }
        for n in &names {
            assert_eq!(live(&brokers, n).await.map(|l| l.0), Some(2), "{n}");
        }
        let creators = runs
            .iter()
            .filter(|r| {
                names.iter().all(|n| {
                    r.stdout
                        .contains(&format!("KafkaTopic/{n} will be created"))
                })
            })
            .count();
        if creators < 2 {
            eprintln!("round {round}: the applies did not overlap, trying again");
            continue;
        }
        eprintln!(
            "round {round}: {creators} applies planned and sent the 8 creates; all succeeded"
        );
        return;
    }
    panic!("in 10 rounds no two applies planned the same creates at once");
}
