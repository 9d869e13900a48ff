//! Kafka topics end to end: the real ofctl binary against a real Kafka-protocol broker
//! (noida-db, docs/services.md) through librdkafka's admin API.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ConfigSource, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use serde_json::json;
use support::{change, kafka, ofctl, ManifestDir};

const DEVICES_TOPIC: &str = "openframe.oss-tenant.kafka.topics.inbound.devices-topic.name";
const TOOL_EVENTS_TOPIC: &str =
    "openframe.oss-tenant.kafka.topics.inbound.integrated-tool-events.name";

/// The broker, and the `[variables]` desired-state/kafka names its topics with.
fn config(brokers: &str) -> String {
    format!(
        "{}\n[variables]\n\"{DEVICES_TOPIC}\" = \"devices-topic\"\n\"{TOOL_EVENTS_TOPIC}\" = \"${{env:OFCTL_TEST_TOOL_EVENTS_TOPIC:-integrated-tool.events.pinot}}\"\n",
        support::endpoint_config("kafka", brokers)
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
    support::assert_unreachable_is_a_clear_error(
        &config(&format!("127.0.0.1:{port}")),
        &topic("t", "  partitions: 1\n  replication_factor: 1"),
        "KafkaTopic",
        "kafka",
        port,
    );
}

/// A create whose first answer was lost is retried (the engine retries unanswered writes): the
/// retry meets `TopicAlreadyExists` and succeeds when the topic is the one asked for, while a
/// topic that differs stays an error. Through the provider against the real broker, so the
/// lost answer is certain rather than a race between processes.
#[tokio::test]
async fn a_create_that_finds_the_asked_for_topic_already_there_succeeds() {
    use ofctl::provider::{OpAction, Operation, Provider};
    let (_server, brokers) = kafka();
    let provider = ofctl::providers::kafka::KafkaProvider::new(&brokers).unwrap();
    let spec = |partitions: u32| {
        provider
            .normalize_desired(
                "KafkaTopic",
                "retried",
                &json!({"partitions": partitions, "replication_factor": 1,
                        "config": {"retention.ms": "3600000"}}),
            )
            .unwrap()
    };
    let (asked, other) = (spec(2), spec(3));
    let create = |desired| Operation {
        kind: "KafkaTopic",
        name: "retried",
        action: OpAction::Create,
        desired: Some(desired),
        live: None,
        force: false,
    };
    provider
        .apply(create(&asked))
        .await
        .expect("the first create");
    provider
        .apply(create(&asked))
        .await
        .expect("the retried create finds the asked-for topic");
    let err = provider
        .apply(create(&other))
        .await
        .expect_err("a different topic in the way is not success");
    assert!(err.message.contains("retried"), "{err}");
    assert_eq!(live(&brokers, "retried").await.map(|l| l.0), Some(2));
}

/// Tenants on the same brokers share one fetch of the cluster's topic list (at most one per
/// 5 s), and a write through the client drops it, so a read right after sees the write.
#[tokio::test]
async fn tenants_share_the_topic_list_and_a_write_refreshes_it() {
    use ofctl::provider::{OpAction, Operation, Provider, ReadPass, ReadScope};
    let (_server, brokers) = kafka();
    let (a, b) = (
        ofctl::providers::kafka::KafkaProvider::new(&brokers).unwrap(),
        ofctl::providers::kafka::KafkaProvider::new(&brokers).unwrap(),
    );
    let names = vec!["shared.list".to_string()];
    let pass = ReadPass::default();
    let scope = ReadScope {
        names: &names,
        all: false,
        pass: &pass,
    };
    assert!(a.read("KafkaTopic", scope).await.unwrap().is_empty());
    assert!(b.read("KafkaTopic", scope).await.unwrap().is_empty());
    // A's read fetched the list; B's, moments later, used it (no DescribeConfigs either:
    // nothing declared exists).
    assert_eq!((a.requests().reads, b.requests().reads), (1, 0));

    let desired = a
        .normalize_desired(
            "KafkaTopic",
            "shared.list",
            &json!({"partitions": 3, "replication_factor": 1}),
        )
        .unwrap();
    a.apply(Operation {
        kind: "KafkaTopic",
        name: "shared.list",
        action: OpAction::Create,
        desired: Some(&desired),
        live: None,
        force: false,
    })
    .await
    .expect("create");
    let seen = b.read("KafkaTopic", scope).await.unwrap();
    assert_eq!(
        seen.len(),
        1,
        "a read right after the create must see it: {seen:?}"
    );
    assert_eq!(seen[0].spec["partitions"], 3, "{:?}", seen[0].spec);
}
