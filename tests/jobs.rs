//! Scheduled jobs in `ofctl watch`: connector health against the Kafka Connect emulator, and
//! exactly-once scheduling across replicas through real Redis.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{metric, redis, ManifestDir, Watch};

fn job_config(connect: &str, redis: &str) -> String {
    format!(
        "tenant = \"t1\"\n[connect]\nurl = \"{connect}\"\n[redis]\nurl = \"{redis}\"\n[watch]\ninterval = \"1h\"\n\
         [jobs.connector_health]\ninterval = \"1s\"\nbackoff = \"1s\"\nhealthy_reset = \"2s\"\nlock_at_least_for = \"200ms\"\nmax_restarts = 3\n"
    )
}

async fn create_connector(connect: &str, name: &str) {
    let body = json!({"name": name, "config": {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": "db", "database.user": "u", "database.password": "p",
        "database.dbname": "d", "topic.prefix": "t", "plugin.name": "pgoutput"}});
    let resp = reqwest::Client::new()
        .post(format!("{connect}/connectors"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
}

async fn task_state(connect: &str, name: &str) -> String {
    let status: Value = reqwest::get(format!("{connect}/connectors/{name}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["tasks"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn restart_state(redis_url: &str, name: &str) -> Option<Value> {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let raw: Option<String> = redis::cmd("HGET")
        .arg("of:{t1}:ofctl:connector-health")
        .arg(name)
        .query_async(&mut conn)
        .await
        .unwrap();
    raw.and_then(|r| serde_json::from_str(&r).ok())
}

#[tokio::test]
async fn failed_task_is_restarted_and_backoff_resets_once_healthy() {
    let sandbox = ofctl::sandbox::start(Default::default()).await.unwrap();
    let connect = sandbox.connect_url.clone();
    let (_r, redis_url) = redis();
    create_connector(&connect, "pg").await;
    let m = ManifestDir::new();
    m.write("ofctl.toml", &job_config(&connect, &redis_url));
    let fail = || async {
        let r = reqwest::Client::new()
            .post(format!("{connect}/__sandbox/connectors/pg/tasks/0/fail"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    };
    fail().await;
    assert_eq!(task_state(&connect, "pg").await, "FAILED");

    let watch = Watch::start(&["-f", m.arg()]);
    let restarted = Watch::until(Duration::from_secs(10), || async {
        task_state(&connect, "pg").await == "RUNNING"
    })
    .await;
    assert!(restarted.is_some(), "{}", watch.log());
    let (_, metrics) = watch.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "ofctl_connector_restarts_total{tenant=\"t1\",connector=\"pg\"}"
        ),
        1,
        "{metrics}"
    );
    assert_eq!(
        restart_state(&redis_url, "pg").await.unwrap()["restarts"],
        1
    );
    assert!(
        watch.log().contains("restarted (attempt 1/3)"),
        "{}",
        watch.log()
    );

    // Healthy for longer than healthy_reset: the count starts again from zero.
    let reset = Watch::until(Duration::from_secs(10), || async {
        restart_state(&redis_url, "pg")
            .await
            .is_some_and(|s| s["restarts"] == 0)
    })
    .await;
    assert!(reset.is_some(), "{}", watch.log());

    // So the next failure is restarted at once, as attempt 1 again.
    fail().await;
    let again = Watch::until(Duration::from_secs(10), || async {
        task_state(&connect, "pg").await == "RUNNING"
    })
    .await;
    assert!(again.is_some(), "{}", watch.log());
    let (_, metrics) = watch.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "ofctl_connector_restarts_total{tenant=\"t1\",connector=\"pg\"}"
        ),
        2
    );
    assert_eq!(
        watch.log().matches("restarted (attempt 1/3)").count(),
        2,
        "{}",
        watch.log()
    );
}

// Multi-threaded: the in-process emulator must keep answering while this thread blocks in
// `terminate()`, or a job run caught by the SIGTERM waits for its request to time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_run_each_job_once_per_interval() {
    let sandbox = ofctl::sandbox::start(Default::default()).await.unwrap();
    let (_r, redis_url) = redis();
    let m = ManifestDir::new();
    m.write("ofctl.toml", &job_config(&sandbox.connect_url, &redis_url));
    let mut a = Watch::start(&["-f", m.arg()]);
    let mut b = Watch::start(&["-f", m.arg()]);
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let runs = |m: &str, result: &str| {
        metric(m, &format!("ofctl_job_runs_total{{tenant=\"t1\",job=\"debeziumHealthCheck\",result=\"{result}\"}}"))
    };
    let (ma, mb) = (a.get("/metrics").await.1, b.get("/metrics").await.1);
    let (ok, skipped) = (
        runs(&ma, "ok") + runs(&mb, "ok"),
        runs(&ma, "skipped") + runs(&mb, "skipped"),
    );
    let ticks_a = runs(&ma, "ok") + runs(&ma, "skipped");
    let ticks_b = runs(&mb, "ok") + runs(&mb, "skipped");
    eprintln!("job runs: ok {ok}, skipped {skipped}, ticks {ticks_a}/{ticks_b}");
    assert!(ticks_a >= 5 && ticks_b >= 5, "{ma}\n{mb}");
    // Every tick ran the job on exactly one replica (ticks seen by a replica that started a
    // little later or stopped a little earlier can differ by one).
    assert!(
        ok.abs_diff(ticks_a.max(ticks_b)) <= 1,
        "ok {ok}, ticks {ticks_a}/{ticks_b}\n{ma}\n{mb}"
    );
    assert!(ok + skipped >= ticks_a + ticks_b - 1);
    assert_eq!(runs(&ma, "error") + runs(&mb, "error"), 0);
    assert_eq!(a.terminate(), Some(0));
    assert_eq!(b.terminate(), Some(0));
}

async fn stats_totals(mongo_uri: &str) -> (i64, i64, i64) {
    use futures::TryStreamExt;
    let db = ofctl::providers::mongo::open_database(mongo_uri, None)
        .await
        .unwrap();
    let docs: Vec<mongodb::bson::Document> = db
        .collection::<mongodb::bson::Document>("api_key_stats")
        .find(mongodb::bson::doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let sum = |f: &str| {
        docs.iter()
            .map(|d| {
                d.get_i64(f)
                    .or_else(|_| d.get_i32(f).map(i64::from))
                    .unwrap_or(0)
            })
            .sum()
    };
    (
        sum("totalRequests"),
        sum("successfulRequests"),
        sum("failedRequests"),
    )
}

#[tokio::test]
async fn api_key_stats_written_during_syncs_are_neither_lost_nor_doubled() {
    use ofctl::jobs::Job;
    use redis::AsyncCommands;
    let (_r, redis_url) = redis();
    let (_m, mongo_uri) = support::mongo();
    let sync = ofctl::jobs::api_key_stats::ApiKeyStatsSync::new(&redis_url, &mongo_uri, None, "t1")
        .await
        .unwrap();
    // The gateway's writes (openframe.md §11): chained commands, not a transaction.
    let writer = {
        let url = redis_url.clone();
        tokio::spawn(async move {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let mut written = 0i64;
            for i in 0..1500 {
                let key = format!("of:{{t1}}:stats:key-{}", i % 7);
                let _: i64 = conn.hincr(&key, "total", 1).await.unwrap();
                let field = if i % 5 == 0 { "failed" } else { "success" };
                let _: i64 = conn.hincr(&key, field, 1).await.unwrap();
                let _: () = conn
                    .hset(
                        &key,
                        "lastUsed",
                        format!("2026-11-23T10:00:{:02}.123456789", i % 60),
                    )
                    .await
                    .unwrap();
                let _: bool = conn.expire(&key, 3600).await.unwrap();
                written += 1;
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            written
        })
    };
    let mut runs = 0;
    while !writer.is_finished() {
        sync.run().await.unwrap();
        runs += 1;
    }
    let written = writer.await.unwrap();
    sync.run().await.unwrap();
    let (total, ok, failed) = stats_totals(&mongo_uri).await;
    eprintln!("{runs} syncs during {written} writes");
    assert!(runs > 1, "the syncs must overlap the writes");
    assert_eq!(total, written);
    assert_eq!(ok + failed, written);
    assert_eq!(failed, 300);

    // A crash after the Mongo update but before the DEL leaves the processing key behind:
    // the next run finishes it without counting it again.
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = conn
        .hincr("of:{t1}:stats:key-crash", "total", 5)
        .await
        .unwrap();
    sync.run().await.unwrap();
    let db = ofctl::providers::mongo::open_database(&mongo_uri, None)
        .await
        .unwrap();
    let doc = db
        .collection::<mongodb::bson::Document>("api_key_stats")
        .find_one(mongodb::bson::doc! {"_id": "key-crash"})
        .await
        .unwrap()
        .unwrap();
    let batch = doc.get_str("lastSyncBatch").unwrap().to_string();
    let _: i64 = conn
        .hincr(
            format!("of:{{t1}}:stats-sync:key-crash:{batch}"),
            "total",
            5,
        )
        .await
        .unwrap();
    sync.run().await.unwrap();
    assert_eq!(stats_totals(&mongo_uri).await.0, written + 5);
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("of:{t1}:stats*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

async fn tool_update_messages(nats_url: &str) -> u64 {
    let client = async_nats::connect(nats_url).await.unwrap();
    let msg = client
        .request("$JS.API.STREAM.INFO.TOOL_UPDATE", "".into())
        .await
        .unwrap();
    let info: Value = serde_json::from_slice(&msg.payload).unwrap();
    info["state"]["messages"].as_u64().unwrap_or(0)
}

async fn set_publish_state(mongo_uri: &str, state: mongodb::bson::Document) {
    let client = mongodb::Client::with_uri_str(mongo_uri).await.unwrap();
    client
        .database("openframe")
        .collection::<mongodb::bson::Document>("integrated_tool_agents")
        .update_one(
            mongodb::bson::doc! {"_id": "fleetmdm-agent"},
            mongodb::bson::doc! {"$set": {"publishState": state}},
        )
        .await
        .unwrap();
}

async fn published(mongo_uri: &str) -> Option<bool> {
    let client = mongodb::Client::with_uri_str(mongo_uri).await.unwrap();
    let doc = client
        .database("openframe")
        .collection::<mongodb::bson::Document>("integrated_tool_agents")
        .find_one(mongodb::bson::doc! {"_id": "fleetmdm-agent"})
        .await
        .unwrap()?;
    doc.get_document("publishState")
        .ok()?
        .get_bool("published")
        .ok()
}

#[tokio::test]
async fn unpublished_updates_are_republished_once_until_attempts_run_out() {
    let (_n, nats_url) = support::nats();
    let (_m, mongo_uri) = support::mongo();
    let (_r, redis_url) = redis();
    let m = ManifestDir::new();
    m.write(
        "ofctl.toml",
        &format!(
            "tenant = \"t1\"\n[nats]\nurl = \"{nats_url}\"\n[mongo]\nuri = \"{mongo_uri}\"\n[redis]\nurl = \"{redis_url}\"\n\
             [watch]\ninterval = \"1h\"\n[jobs.api_key_stats]\nenabled = false\n\
             [jobs.publish_fallback]\ninterval = \"1s\"\nlock_at_least_for = \"100ms\"\nmax_attempts = 3\n"
        ),
    )
    .write(
        "streams.yaml",
        &support::stream("TOOL_UPDATE", "  subjects: [\"machine.*.tool.*.update\"]"),
    );
    shipped_agent(&m, "agents.yaml", "fleetmdm-agent");
    // DISABLED: the platform's fallback never publishes it, pending or never published.
    shipped_agent(&m, "disabled.yaml", "tacticalrmm-agent");
    let watch = Watch::start(&["-f", m.arg()]);
    let ready = Watch::until(Duration::from_secs(20), || async {
        watch.get("/readyz").await.0 == 200
    })
    .await;
    assert!(ready.is_some(), "{}", watch.log());
    // A new agent is stored without an announcement (openframe.md §7), its publishState null;
    // the platform's fallback counts that as unpublished and announces it once (§10).
    let announced = Watch::until(Duration::from_secs(10), || async {
        published(&mongo_uri).await == Some(true)
    })
    .await;
    assert!(announced.is_some(), "{}", watch.log());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(tool_update_messages(&nats_url).await, 1);
    let client = mongodb::Client::with_uri_str(&mongo_uri).await.unwrap();
    let agents = client
        .database("openframe")
        .collection::<mongodb::bson::Document>("integrated_tool_agents");
    let disabled = agents
        .find_one(mongodb::bson::doc! {"_id": "tacticalrmm-agent"})
        .await
        .unwrap()
        .expect("the disabled agent is stored");
    assert!(
        matches!(
            disabled.get("publishState"),
            None | Some(mongodb::bson::Bson::Null)
        ),
        "{disabled:?}"
    );
    agents
        .update_one(
            mongodb::bson::doc! {"_id": "tacticalrmm-agent"},
            mongodb::bson::doc! {"$set": {"publishState": {"published": false, "publishedAt": null, "attempts": 0}}},
        )
        .await
        .unwrap();

    // What a writer that died between its write and its publish leaves behind: the fallback
    // job finds it within its interval (the reconcile interval is an hour) and it is published
    // exactly once.
    set_publish_state(
        &mongo_uri,
        mongodb::bson::doc! {"published": false, "publishedAt": null, "attempts": 0},
    )
    .await;
    let repaired = Watch::until(Duration::from_secs(10), || async {
        published(&mongo_uri).await == Some(true)
    })
    .await;
    assert!(repaired.is_some(), "{}", watch.log());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The last message on its subject is the very one the fallback announced above (same
    // Nats-Msg-Id): the repair only records it. The DISABLED agent's pending update is never
    // published.
    assert_eq!(tool_update_messages(&nats_url).await, 1);
    let (_, metrics) = watch.get("/metrics").await;
    assert!(
        metric(
            &metrics,
            "ofctl_reconcile_passes_total{tenant=\"t1\",trigger=\"job\",result=\"ok\"}"
        ) >= 1,
        "{metrics}"
    );

    // Out of attempts: no more retries, said loudly and counted.
    set_publish_state(
        &mongo_uri,
        mongodb::bson::doc! {"published": false, "publishedAt": null, "attempts": 3},
    )
    .await;
    let reported = Watch::until(Duration::from_secs(10), || async {
        watch
            .log()
            .contains("update never published after 3 attempts")
    })
    .await;
    assert!(reported.is_some(), "{}", watch.log());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(tool_update_messages(&nats_url).await, 1);
    assert_eq!(published(&mongo_uri).await, Some(false));
    let (_, metrics) = watch.get("/metrics").await;
    assert!(
        metric(
            &metrics,
            "ofctl_errors_total{tenant=\"t1\",kind=\"publish_exhausted\"}"
        ) >= 1,
        "{metrics}"
    );
    // A plan shows why nothing is done about it.
    let plan = support::ofctl(&["plan", "-f", m.arg()], &[]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(plan.stdout.contains("gave up after 3 retries"), "{plan:?}");
}

#[tokio::test]
async fn a_job_enabled_by_a_config_edit_starts_without_a_restart() {
    let sandbox = ofctl::sandbox::start(Default::default()).await.unwrap();
    let connect = sandbox.connect_url.clone();
    let (_r, redis_url) = redis();
    create_connector(&connect, "pg").await;
    let m = ManifestDir::new();
    let enabled = job_config(&connect, &redis_url);
    let disabled = enabled.replace(
        "[jobs.connector_health]\n",
        "[jobs.connector_health]\nenabled = false\n",
    );
    m.write("ofctl.toml", &disabled);
    reqwest::Client::new()
        .post(format!("{connect}/__sandbox/connectors/pg/tasks/0/fail"))
        .send()
        .await
        .unwrap();
    let watch = Watch::start(&["-f", m.arg()]);
    let ready = Watch::until(Duration::from_secs(10), || async {
        watch.get("/readyz").await.0 == 200
    })
    .await;
    assert!(ready.is_some(), "{}", watch.log());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(task_state(&connect, "pg").await, "FAILED", "job is off");

    m.write("ofctl.toml", &enabled);
    let restarted = Watch::until(Duration::from_secs(10), || async {
        task_state(&connect, "pg").await == "RUNNING"
    })
    .await;
    assert!(restarted.is_some(), "{}", watch.log());
    assert!(watch
        .log()
        .contains("target config changed: restarting the scheduled jobs"));
}

async fn alerts(mongo_uri: &str) -> Vec<mongodb::bson::Document> {
    let client = mongodb::Client::with_uri_str(mongo_uri).await.unwrap();
    let mut cursor = client
        .database("openframe")
        .collection::<mongodb::bson::Document>("connector_alerts")
        .find(mongodb::bson::doc! {})
        .await
        .unwrap();
    let mut out = Vec::new();
    while cursor.advance().await.unwrap() {
        out.push(cursor.deserialize_current().unwrap());
    }
    out
}

/// A connector still FAILED after `max_restarts` gets one `connector_alerts` document
/// (MAX_RETRIES_EXCEEDED, as the platform's later job wrote it), resolved once it is healthy.
#[tokio::test]
async fn a_connector_that_stays_failed_is_alerted_and_resolved_when_healthy() {
    let sandbox = ofctl::sandbox::start(Default::default()).await.unwrap();
    let connect = sandbox.connect_url.clone();
    let (_r, redis_url) = redis();
    let (_m, mongo_uri) = support::mongo();
    create_connector(&connect, "pg").await;
    let m = ManifestDir::new();
    m.write(
        "ofctl.toml",
        &format!(
            "tenant = \"t1\"\n[connect]\nurl = \"{connect}\"\n[mongo]\nuri = \"{mongo_uri}\"\n[redis]\nurl = \"{redis_url}\"\n[watch]\ninterval = \"1h\"\n\
             [jobs.api_key_stats]\nenabled = false\n[jobs.publish_fallback]\nenabled = false\n\
             [jobs.connector_health]\ninterval = \"1s\"\nbackoff = \"1s\"\nhealthy_reset = \"1h\"\nlock_at_least_for = \"200ms\"\nmax_restarts = 2\n"
        ),
    );
    let fail = || async {
        let r = reqwest::Client::new()
            .post(format!("{connect}/__sandbox/connectors/pg/tasks/0/fail"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    };
    fail().await;
    let watch = Watch::start(&["-f", m.arg()]);
    // Each restart brings it back; it fails again at once, until the job gives up.
    let alerted = Watch::until(Duration::from_secs(30), || async {
        if task_state(&connect, "pg").await == "RUNNING" {
            fail().await;
        }
        !alerts(&mongo_uri).await.is_empty()
    })
    .await;
    assert!(alerted.is_some(), "{}", watch.log());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let open = alerts(&mongo_uri).await;
    assert_eq!(open.len(), 1, "one alert per episode: {open:?}");
    let alert = &open[0];
    assert_eq!(alert.get_str("connectorName").unwrap(), "pg");
    assert_eq!(alert.get_str("errorType").unwrap(), "MAX_RETRIES_EXCEEDED");
    assert_eq!(alert.get_str("tenantId").unwrap(), "t1");
    assert_eq!(alert.get_i64("attempts").unwrap(), 2);
    assert!(!alert.get_bool("resolved").unwrap());
    assert_eq!(
        alert.get_str("_class").unwrap(),
        "com.openframe.data.document.connector.ConnectorAlert"
    );
    assert!(alert.get_datetime("createdAt").is_ok());

    // An operator fixes it: the next run resolves the alert.
    let r = reqwest::Client::new()
        .post(format!(
            "{connect}/connectors/pg/restart?includeTasks=true&onlyFailed=true"
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let resolved = Watch::until(Duration::from_secs(10), || async {
        alerts(&mongo_uri)
            .await
            .iter()
            .all(|a| a.get_bool("resolved") == Ok(true) && a.get_datetime("resolvedAt").is_ok())
    })
    .await;
    assert!(
        resolved.is_some(),
        "{:?}\n{}",
        alerts(&mongo_uri).await,
        watch.log()
    );
}

/// Declares the shipped ToolAgent `name` in `file`, with its spec file from desired-state/.
fn shipped_agent(m: &ManifestDir, file: &str, name: &str) {
    m.write(
        file,
        &format!("apiVersion: ofctl.openframe.io/v1\nkind: ToolAgent\nmetadata:\n  name: {name}\nspecFile: agents/{name}.json\n"),
    )
    .write(
        &format!("agents/{name}.json"),
        &std::fs::read_to_string(
            support::repo_root().join(format!("desired-state/mongo/agents/{name}.json")),
        )
        .unwrap(),
    );
}
