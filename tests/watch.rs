//! `ofctl watch` against real NATS and Redis: file changes, interval healing, drift policy,
//! broken manifests, locks and graceful shutdown.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{free_port, nats, ofctl, redis, stream, ManifestDir, Watch, API_SECTION, API_TOKEN};

fn config(nats: &str, redis: &str, interval: &str) -> String {
    tenant_config("t1", nats, redis, interval)
}

fn tenant_config(tenant: &str, nats: &str, redis: &str, interval: &str) -> String {
    format!(
        "tenant = \"{tenant}\"\n[nats]\nurl = \"{nats}\"\n[redis]\nurl = \"{redis}\"\n[watch]\ninterval = \"{interval}\"\ndebounce = \"100ms\"\n{API_SECTION}"
    )
}

async fn subjects(url: &str, name: &str) -> Option<Value> {
    support::stream_config(url, name)
        .await?
        .get("subjects")
        .cloned()
}

/// How long until the stream `name` has the subjects `want`, if within 5 s.
async fn until_subjects(url: &str, name: &str, want: Value) -> Option<Duration> {
    Watch::until(Duration::from_secs(5), || {
        let want = want.clone();
        async move { subjects(url, name).await == Some(want) }
    })
    .await
}

/// How long until `watch` has logged `more` passes that stopped after reading (their inputs
/// those of the last pass that planned no change), if within 10 s.
async fn until_skips(watch: &Watch, more: usize) -> Option<Duration> {
    let skips = || {
        watch
            .log()
            .matches("which planned no change: nothing to compare")
            .count()
    };
    let from = skips();
    Watch::until(Duration::from_secs(10), move || async move {
        skips() >= from + more
    })
    .await
}

async fn redis_query<T: redis::FromRedisValue>(url: &str, cmd: &redis::Cmd) -> T {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    cmd.query_async(&mut conn).await.unwrap()
}

async fn redis_keys(url: &str) -> Vec<String> {
    redis_query(url, redis::cmd("KEYS").arg("*")).await
}

#[tokio::test]
async fn file_edits_are_applied_and_deletions_healed() {
    let (_n, nats_url) = nats();
    let (_r, redis_url) = redis();
    let m = ManifestDir::new();
    m.write("ofctl.toml", &config(&nats_url, &redis_url, "2s"))
        .write("s.yaml", &stream("ORDERS", "  subjects: [orders.>]"));
    let mut watch = Watch::start(&["-f", m.arg()]);
    let ready = Watch::until(Duration::from_secs(10), || async {
        watch.get("/readyz").await.0 == 200
    })
    .await;
    assert!(ready.is_some(), "{}", watch.log());
    assert_eq!(
        subjects(&nats_url, "ORDERS").await,
        Some(json!(["orders.>"]))
    );

    // An edit is applied promptly (the closing note reports the measured reaction time).
    m.write("s.yaml", &stream("ORDERS", "  subjects: [orders.v2.>]"));
    let took = until_subjects(&nats_url, "ORDERS", json!(["orders.v2.>"])).await;
    let took = took.unwrap_or_else(|| panic!("edit not applied:\n{}", watch.log()));
    eprintln!("file change applied after {took:?}");

    // Out-of-band deletion is healed by the interval pass.
    let js = async_nats::jetstream::new(async_nats::connect(nats_url.as_str()).await.unwrap());
    js.delete_stream("ORDERS").await.unwrap();
    let healed = Watch::until(Duration::from_secs(6), || async {
        subjects(&nats_url, "ORDERS").await.is_some()
    })
    .await;
    assert!(
        healed.is_some(),
        "deleted stream not recreated within one interval:\n{}",
        watch.log()
    );

    let (_, metrics) = watch.get("/metrics").await;
    assert!(
        metrics.contains(
            "ofctl_reconcile_passes_total{tenant=\"t1\",trigger=\"interval\",result=\"ok\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "ofctl_changes_applied_total{tenant=\"t1\",action=\"create\",result=\"ok\"} 2"
        ),
        "{metrics}"
    );

    // SIGTERM: exit 0, and no lock left behind.
    assert_eq!(watch.terminate(), Some(0), "{}", watch.log());
    assert!(redis_keys(&redis_url).await.is_empty());
}

/// A pass whose inputs are those of the last pass that planned no change stops after reading
/// (it would plan no change again), yet a change to live state, to the manifest or to the config
/// is still acted on at once: each is an input.
#[tokio::test]
async fn unchanged_passes_stop_after_reading_and_any_change_is_still_reconciled() {
    let (_n, nats_url) = nats();
    let (_r, redis_url) = redis();
    let m = ManifestDir::new();
    m.write("ofctl.toml", &config(&nats_url, &redis_url, "1s"))
        .write("s.yaml", &stream("PAYMENTS", "  subjects: [payments.>]"));
    let watch = Watch::start_with_env(&["-f", m.arg()], &[("OFCTL_LOG", "ofctl=debug")]);
    assert!(until_skips(&watch, 2).await.is_some(), "{}", watch.log());

    // Live state changed out of band: healed by the next interval pass.
    let js = async_nats::jetstream::new(async_nats::connect(nats_url.as_str()).await.unwrap());
    let mut edited = js
        .get_stream("PAYMENTS")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    edited.subjects = vec!["elsewhere.>".into()];
    js.update_stream(&edited).await.unwrap();
    let healed = until_subjects(&nats_url, "PAYMENTS", json!(["payments.>"])).await;
    assert!(healed.is_some(), "live edit not healed:\n{}", watch.log());
    assert!(until_skips(&watch, 2).await.is_some(), "{}", watch.log());

    // The manifest changed while live state did not: applied.
    let with_suffix = |suffix: &str| {
        format!(
            "{}\n[variables]\nsuffix = \"{suffix}\"\n",
            config(&nats_url, &redis_url, "1s")
        )
    };
    m.write("ofctl.toml", &with_suffix("v2")).write(
        "s.yaml",
        &stream("PAYMENTS", "  subjects: [\"payments.${suffix}.>\"]"),
    );
    let applied = until_subjects(&nats_url, "PAYMENTS", json!(["payments.v2.>"])).await;
    assert!(
        applied.is_some(),
        "manifest edit not applied:\n{}",
        watch.log()
    );
    assert!(until_skips(&watch, 2).await.is_some(), "{}", watch.log());

    // Only the config changed (the variable the manifest uses): applied.
    m.write("ofctl.toml", &with_suffix("v3"));
    let applied = until_subjects(&nats_url, "PAYMENTS", json!(["payments.v3.>"])).await;
    assert!(
        applied.is_some(),
        "config edit not applied:\n{}",
        watch.log()
    );

    // The config's text unchanged, but a variable it reads from a file (`${file:...}`, e.g. a
    // mounted secret) changed: the manifest's next load sees the new value.
    let outside = tempfile::tempdir().unwrap();
    let value = outside.path().join("suffix");
    std::fs::write(&value, "v4").unwrap();
    m.write(
        "ofctl.toml",
        &with_suffix(&format!("${{file:{}}}", value.display())),
    );
    let applied = until_subjects(&nats_url, "PAYMENTS", json!(["payments.v4.>"])).await;
    assert!(applied.is_some(), "{}", watch.log());
    std::fs::write(&value, "v5").unwrap();
    m.write(
        "s.yaml",
        &stream("PAYMENTS", "  subjects: [\"payments.${suffix}.>\"]"),
    );
    let applied = until_subjects(&nats_url, "PAYMENTS", json!(["payments.v5.>"])).await;
    assert!(
        applied.is_some(),
        "a variable's new value not applied:\n{}",
        watch.log()
    );
}

#[tokio::test]
async fn report_only_drift_is_reported_not_healed_and_broken_manifests_keep_the_last_good() {
    let (_n, nats_url) = nats();
    let (_r, redis_url) = redis();
    let m = ManifestDir::new();
    let reported = "apiVersion: ofctl.openframe.io/v1\nkind: NatsStream\nmetadata:\n  name: AUDIT\n  annotations:\n    ofctl.openframe.io/drift-policy: report\nspec:\n  subjects: [audit.>]\n";
    m.write("ofctl.toml", &config(&nats_url, &redis_url, "1s"))
        .write("a.yaml", reported)
        .write("b.yaml", &stream("KEPT", "  subjects: [kept.>]"));
    let watch = Watch::start(&["-f", m.arg()]);
    assert!(Watch::until(Duration::from_secs(10), || async {
        watch.get("/readyz").await.0 == 200
    })
    .await
    .is_some());

    // AUDIT is report-only: never created, shown as drift.
    let (_, drift) = watch.get("/v1/drift").await;
    let drift: Value = serde_json::from_str(&drift).unwrap();
    let items = drift["t1"]["drift"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{drift}");
    assert_eq!(items[0]["address"], "NatsStream/AUDIT");
    assert_eq!(items[0]["policy"], "report");
    assert!(subjects(&nats_url, "AUDIT").await.is_none());
    assert!(subjects(&nats_url, "KEPT").await.is_some());
    let (_, metrics) = watch.get("/metrics").await;
    assert!(
        metrics.contains("ofctl_drift_resources{tenant=\"t1\"} 1"),
        "{metrics}"
    );

    // A broken edit is reported and not applied; the last good manifest stays in force.
    m.write("b.yaml", "apiVersion: ofctl.openframe.io/v1\nkind: NatsStream\nmetadata: {name: KEPT}\nspec:\n  subjects: [kept.v2.>\n");
    let reported_error = Watch::until(Duration::from_secs(5), || async {
        let (_, d) = watch.get("/v1/drift").await;
        d.contains("invalid YAML")
    })
    .await;
    assert!(reported_error.is_some(), "{}", watch.log());
    let js = async_nats::jetstream::new(async_nats::connect(nats_url.as_str()).await.unwrap());
    js.delete_stream("KEPT").await.unwrap();
    let healed = Watch::until(Duration::from_secs(5), || async {
        subjects(&nats_url, "KEPT").await.is_some()
    })
    .await;
    assert!(
        healed.is_some(),
        "last good manifest must keep healing:\n{}",
        watch.log()
    );
    assert_eq!(subjects(&nats_url, "KEPT").await, Some(json!(["kept.>"])));

    // Fixing the file clears the error and applies the edit.
    m.write("b.yaml", &stream("KEPT", "  subjects: [kept.v2.>]"));
    let fixed = until_subjects(&nats_url, "KEPT", json!(["kept.v2.>"])).await;
    assert!(fixed.is_some(), "{}", watch.log());
    assert!(watch.log().contains("manifest not applied"));
}

#[tokio::test]
async fn replicas_share_a_tenant_through_its_lock() {
    let (_n, nats_url) = nats();
    let (_r, redis_url) = redis();
    let m = ManifestDir::new();
    m.write("ofctl.toml", &config(&nats_url, &redis_url, "300ms"))
        .write("s.yaml", &stream("SHARED", "  subjects: [shared.>]"));
    let mut a = Watch::start(&["-f", m.arg()]);
    let mut b = Watch::start(&["-f", m.arg()]);
    let created = Watch::until(Duration::from_secs(15), || async {
        subjects(&nats_url, "SHARED").await.is_some()
    })
    .await;
    assert!(created.is_some(), "{}\n{}", a.log(), b.log());
    // Each replica skips passes while the other holds the tenant's lock; both keep
    // reconciling, and neither ever fails on the other's work.
    let ok = |m: &str| {
        m.lines()
            .filter(|l| {
                l.starts_with("ofctl_reconcile_passes_total") && l.contains("result=\"ok\"")
            })
            .count()
    };
    let both = Watch::until(Duration::from_secs(15), || async {
        ok(&a.get("/metrics").await.1) > 0 && ok(&b.get("/metrics").await.1) > 0
    })
    .await;
    assert!(both.is_some(), "{}\n{}", a.log(), b.log());
    for w in [&a, &b] {
        let (_, m) = w.get("/metrics").await;
        assert!(!m.contains("result=\"error\""), "{m}\n{}", w.log());
    }
    assert_eq!(a.terminate(), Some(0));
    assert_eq!(b.terminate(), Some(0));
    assert!(
        redis_keys(&redis_url).await.is_empty(),
        "locks released on shutdown"
    );
}

/// An interval pass leaves the tenant's turn resting for half the interval (a peer's interval
/// pass within it skips); a replica that stops gives its turn up at once, so a peer need not
/// wait out the rest.
#[tokio::test]
async fn an_interval_turn_rests_and_is_given_up_at_shutdown() {
    let (_n, nats_url) = nats();
    let (_r, redis_url) = redis();
    let m = ManifestDir::new();
    m.write("ofctl.toml", &config(&nats_url, &redis_url, "4s"))
        .write("s.yaml", &stream("TURNS", "  subjects: [turns.>]"));
    let mut watch = Watch::start(&["-f", m.arg()]);
    let interval_pass =
        "ofctl_reconcile_passes_total{tenant=\"t1\",trigger=\"interval\",result=\"ok\"}";
    let passed = Watch::until(Duration::from_secs(15), || async {
        support::metric(&watch.get("/metrics").await.1, interval_pass) > 0
    })
    .await;
    assert!(passed.is_some(), "{}", watch.log());
    let turn = "of:{t1}:job-lock:default:ofctlIntervalTurn".to_string();
    // Resting: two seconds from the pass's start.
    assert!(
        redis_keys(&redis_url).await.contains(&turn),
        "{:?}",
        redis_keys(&redis_url).await
    );
    let stopping = std::time::Instant::now();
    assert_eq!(watch.terminate(), Some(0));
    let keys = redis_keys(&redis_url).await;
    assert!(
        !keys.contains(&turn),
        "turn still held {:?} after the replica stopped: {keys:?}",
        stopping.elapsed()
    );
}

async fn pttl(url: &str, key: &str) -> i64 {
    redis_query(url, redis::cmd("PTTL").arg(key)).await
}

/// A pass's locks (the reconcile lock and its turn) are taken in one round trip, all or none:
/// with the turn held elsewhere the reconcile lock is not left behind. Given back together,
/// each keeps its own lockAtLeastFor.
#[tokio::test]
async fn locks_taken_together_are_all_or_none_and_each_rests_its_own_time() {
    use ofctl::lock::{Acquired, LockMode, NotAcquired};
    let (_r, url) = redis();
    let replica = || LockMode::new(Some(Ok::<_, String>(url.clone())), "t1", "default");
    let (mine, peer) = (replica(), replica());
    let at_most = Duration::from_secs(60);
    let names = [("pass", Duration::ZERO), ("turn", Duration::from_secs(30))];
    let key = |name: &str| format!("of:{{t1}}:job-lock:default:{name}");

    let peers_turn = peer.acquire("turn", at_most, Duration::ZERO).await;
    assert!(matches!(peers_turn, Acquired::Held(_)));
    let refused = mine.acquire_all(&names, at_most).await;
    assert!(matches!(refused, Err(NotAcquired::Busy(1))), "{refused:?}");
    assert_eq!(redis_keys(&url).await, vec![key("turn")]);
    peer.release(peers_turn, "the peer's turn").await;

    let each = mine.acquire_all(&names, at_most).await.unwrap();
    assert!(
        each.iter().all(|a| matches!(a, Acquired::Held(_))),
        "{each:?}"
    );
    let busy = peer.acquire_all(&names, at_most).await;
    assert!(matches!(busy, Err(NotAcquired::Busy(0))), "{busy:?}");

    let mut resting = mine.release_all(each, "the pass").await;
    assert!(resting[0].is_none());
    assert_eq!(redis_keys(&url).await, vec![key("turn")]);
    let left = pttl(&url, &key("turn")).await;
    assert!((25_000..=30_000).contains(&left), "turn rests {left} ms");
    resting
        .pop()
        .flatten()
        .expect("the turn rests")
        .give_up()
        .await;
    assert!(redis_keys(&url).await.is_empty());
}

/// `--tenants-dir`: a subfolder added while running becomes a tenant (even when its config
/// arrives after its manifest), edits reach the right tenant through the one file watcher, and
/// a removed subfolder's loop stops, releases its lock and leaves readiness and the metrics.
#[tokio::test]
async fn tenant_folders_are_picked_up_and_dropped_while_running() {
    let (_n, nats_url) = nats();
    let (_r, redis_url) = redis();
    let root = ManifestDir::new();
    let folder_config = |id: &str| tenant_config(id, &nats_url, &redis_url, "60s");
    root.write("alpha/ofctl.toml", &folder_config("alpha"))
        .write("alpha/s.yaml", &stream("ALPHA", "  subjects: [alpha.>]"));
    let mut watch = Watch::start(&["--tenants-dir", root.arg()]);
    let ready = Watch::until(Duration::from_secs(10), || async {
        watch.get("/readyz").await.0 == 200
    })
    .await;
    assert!(ready.is_some(), "{}", watch.log());
    assert_eq!(subjects(&nats_url, "ALPHA").await, Some(json!(["alpha.>"])));

    // A new folder, its manifest first and its config a moment later (as a copy would).
    root.write("beta/s.yaml", &stream("BETA", "  subjects: [beta.>]"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    root.write("beta/ofctl.toml", &folder_config("beta"));
    let started = Watch::until(Duration::from_secs(10), || async {
        subjects(&nats_url, "BETA").await == Some(json!(["beta.>"]))
    })
    .await;
    assert!(
        started.is_some(),
        "new tenant folder not picked up:\n{}",
        watch.log()
    );
    let both_ready = Watch::until(Duration::from_secs(10), || async {
        let (code, _) = watch.get("/readyz").await;
        let (_, drift) = watch.get("/v1/drift").await;
        code == 200 && drift.contains("\"alpha\"") && drift.contains("\"beta\"")
    })
    .await;
    assert!(both_ready.is_some(), "{}", watch.log());

    // Each tenant's edits reach that tenant (the interval is 60 s: only a file event explains it).
    root.write("alpha/s.yaml", &stream("ALPHA", "  subjects: [alpha.v2.>]"));
    root.write("beta/s.yaml", &stream("BETA", "  subjects: [beta.v2.>]"));
    let edited = Watch::until(Duration::from_secs(5), || async {
        subjects(&nats_url, "ALPHA").await == Some(json!(["alpha.v2.>"]))
            && subjects(&nats_url, "BETA").await == Some(json!(["beta.v2.>"]))
    })
    .await;
    assert!(edited.is_some(), "edits not applied:\n{}", watch.log());

    // Removing a folder stops that tenant only: gone from /v1/drift, /readyz and the metrics,
    // no lock of it left in Redis; the other tenant still reacts to its files.
    let (_, before) = watch.get("/metrics").await;
    assert!(
        before.contains("ofctl_drift_resources{tenant=\"alpha\"}"),
        "{before}"
    );
    std::fs::remove_dir_all(root.path().join("alpha")).unwrap();
    let removed = Watch::until(Duration::from_secs(10), || async {
        let (_, drift) = watch.get("/v1/drift").await;
        !drift.contains("\"alpha\"") && drift.contains("\"beta\"")
    })
    .await;
    assert!(
        removed.is_some(),
        "removed tenant still listed:\n{}",
        watch.log()
    );
    assert!(watch.log().contains("tenant removed"), "{}", watch.log());
    let (_, metrics) = watch.get("/metrics").await;
    assert!(!metrics.contains("tenant=\"alpha\"}"), "{metrics}");
    assert!(
        metrics.contains("ofctl_drift_resources{tenant=\"beta\"}"),
        "{metrics}"
    );
    assert_eq!(watch.get("/readyz").await.0, 200, "{}", watch.log());
    let keys = redis_keys(&redis_url).await;
    assert!(!keys.iter().any(|k| k.contains("alpha")), "{keys:?}");
    root.write("beta/s.yaml", &stream("BETA", "  subjects: [beta.v3.>]"));
    let still = until_subjects(&nats_url, "BETA", json!(["beta.v3.>"])).await;
    assert!(still.is_some(), "{}", watch.log());

    assert_eq!(watch.terminate(), Some(0), "{}", watch.log());
    assert!(redis_keys(&redis_url).await.is_empty());
}

#[tokio::test]
async fn a_port_already_taken_ends_watch_before_any_tenant_reads_or_changes_anything() {
    let (_n, nats_url) = nats();
    let (_r, redis_url) = redis();
    // Enough tenants that starting them yields to the runtime (tokio's cooperative budget):
    // a loop that may run then would read, and could change, before the listeners are bound.
    const TENANTS: usize = 300;
    let root = ManifestDir::new();
    for i in 0..TENANTS {
        let config = tenant_config(&format!("early{i}"), &nats_url, &redis_url, "1s");
        root.write(&format!("early{i}/ofctl.toml"), &config).write(
            &format!("early{i}/s.yaml"),
            &stream(&format!("EARLY{i}"), &format!("  subjects: [early{i}.>]")),
        );
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let management = format!("127.0.0.1:{}", free_port());
    let run = ofctl(
        &[
            "watch",
            "--listen",
            &listen,
            "--management-listen",
            &management,
            "--tenants-dir",
            root.arg(),
        ],
        &[("OFCTL_API_TOKEN", API_TOKEN), ("OFCTL_LOG", "ofctl=debug")],
    );
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains(&format!("cannot listen on {listen}")),
        "{run:?}"
    );
    // The cause once (not again from the error's chain), and what to do.
    assert_eq!(run.stderr.matches("os error 98").count(), 1, "{run:?}");
    assert!(run.stderr.contains("choose another address"), "{run:?}");
    // The tenants were set up (their configs may choose the addresses) and stopped without a
    // pass: no line of their own, nothing created.
    assert!(!run.stderr.contains("tenant=early"), "{run:?}");
    let js = async_nats::jetstream::new(async_nats::connect(nats_url.as_str()).await.unwrap());
    let streams: Vec<String> = futures::TryStreamExt::try_collect(js.stream_names())
        .await
        .unwrap();
    assert!(streams.is_empty(), "{streams:?}\n{run:?}");
}

/// Pinot's and Connect's watch passes fetch answers as sent (`provider::Fetched::Answers`): a
/// pass whose answers equal those of the last pass that planned no change stops before parsing
/// them, and an edit made out of band changes an answer, so it is still healed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_over_unchanged_answers_stop_early_and_out_of_band_edits_of_tables_and_connectors_are_healed(
) {
    let sb = support::emulators(None, Default::default()).await;
    let (_r, redis_url) = redis();
    let m = ManifestDir::new();
    let header = "apiVersion: ofctl.openframe.io/v1";
    m.write(
        "ofctl.toml",
        &format!(
            "tenant = \"t1\"\n[pinot]\nurl = \"{}\"\n[connect]\nurl = \"{}\"\n[redis]\nurl = \"{redis_url}\"\n[watch]\ninterval = \"1s\"\ndebounce = \"100ms\"\n{API_SECTION}",
            sb.pinot_url, sb.connect_url
        ),
    )
    .write(
        "r.yaml",
        &format!(
            "{header}\nkind: PinotSchema\nmetadata:\n  name: app\nspec:\n  dimensionFieldSpecs:\n  - {{name: device, dataType: STRING}}\n  dateTimeFieldSpecs:\n  - {{name: ts, dataType: LONG, format: 1:MILLISECONDS:EPOCH, granularity: 1:MILLISECONDS}}\n---\n\
             {header}\nkind: PinotTable\nmetadata:\n  name: app_OFFLINE\nspec:\n  segmentsConfig: {{timeColumnName: ts, replication: \"1\", retentionTimeUnit: DAYS, retentionTimeValue: \"1\"}}\n  tableIndexConfig: {{loadMode: MMAP}}\n---\n\
             {header}\nkind: KafkaConnector\nmetadata:\n  name: cdc\nspec:\n  config:\n    connector.class: io.debezium.connector.postgresql.PostgresConnector\n    tasks.max: 1\n    database.hostname: db.local\n    database.port: 5432\n    database.user: cdc\n    database.dbname: app\n    topic.prefix: cdc\n    poll.interval.ms: 1000\n"
        ),
    );
    let watch = Watch::start_with_env(&["-f", m.arg()], &[("OFCTL_LOG", "ofctl=debug")]);
    assert!(until_skips(&watch, 2).await.is_some(), "{}", watch.log());

    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let put = |url: String, body: Value| {
        let http = http.clone();
        async move {
            let response = http.put(url).json(&body).send().await.unwrap();
            assert!(response.status().is_success(), "{response:?}");
        }
    };

    // A connector's config edited out of band: the next interval pass puts it back.
    let config_url = format!("{}/connectors/cdc/config", sb.connect_url);
    let mut config = get(config_url.clone()).await;
    config["poll.interval.ms"] = json!("9000");
    put(config_url.clone(), config).await;
    let healed = Watch::until(Duration::from_secs(5), || async {
        get(config_url.clone()).await["poll.interval.ms"] == json!("1000")
    })
    .await;
    assert!(
        healed.is_some(),
        "connector edit not healed:\n{}",
        watch.log()
    );
    assert!(until_skips(&watch, 2).await.is_some(), "{}", watch.log());

    // A table's retention edited out of band: put back too.
    let table_url = format!("{}/tables/app?type=offline", sb.pinot_url);
    let retention =
        |tables: Value| tables["OFFLINE"]["segmentsConfig"]["retentionTimeValue"].clone();
    let mut table = get(table_url.clone()).await["OFFLINE"].clone();
    table["segmentsConfig"]["retentionTimeValue"] = json!("9");
    put(format!("{}/tables/app_OFFLINE", sb.pinot_url), table).await;
    assert_eq!(retention(get(table_url.clone()).await), json!("9"));
    let healed = Watch::until(Duration::from_secs(5), || async {
        retention(get(table_url.clone()).await) == json!("1")
    })
    .await;
    assert!(healed.is_some(), "table edit not healed:\n{}", watch.log());
    assert!(until_skips(&watch, 2).await.is_some(), "{}", watch.log());
}
