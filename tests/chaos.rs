//! Chaos suite: several `ofctl watch` replicas (the real binary) against real nats-server,
//! Redis and the MongoDB-wire server, with faults injected: Redis killed and restarted, the
//! lock holder killed with SIGKILL, a client that hangs up mid-write, a manifest folder emptied
//! or half removed, a tenant loop that panics. Intervals are short (1 s) so the file runs in
//! well under three minutes; each test prints the figures it measured.
//!
//! URLs the tests hit on each replica: `/readyz` and `/metrics` on the management port,
//! `/v1/drift` and `POST /v1/tools/{id}` on the API port (with the harness's token).

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::{
    api_client, metric, mongo, nats, ofctl, redis, redis_on, redis_tls, sandbox_process, stream,
    stream_config, ManifestDir, Watch, API_SECTION, API_TOKEN,
};

/// Log filter for replicas: info, plus the reconcile lock's taken/releasing events.
const LOG: (&str, &str) = ("OFCTL_LOG", "info,ofctl::watch=debug");

fn reconcile_key(tenant: &str) -> String {
    format!("of:{{{tenant}}}:job-lock:default:ofctlReconcile")
}

async fn metric_sum(replicas: &[Watch], prefix: &str) -> u64 {
    let mut total = 0;
    for r in replicas {
        total += metric(&r.get("/metrics").await.1, prefix);
    }
    total
}

async fn all_ready(replicas: &[Watch], limit: Duration) -> bool {
    Watch::until(limit, || async {
        for r in replicas {
            if r.get("/readyz").await.0 != 200 {
                return false;
            }
        }
        true
    })
    .await
    .is_some()
}

fn logs(replicas: &[Watch]) -> String {
    replicas
        .iter()
        .enumerate()
        .map(|(i, r)| format!("--- replica {i} ---\n{}", r.log()))
        .collect()
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn redis_get(url: &str, key: &str) -> Option<String> {
    let mut c = redis_conn(url).await;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

async fn lock_keys(url: &str) -> Vec<String> {
    let mut c = redis_conn(url).await;
    redis::cmd("KEYS")
        .arg("of:*job-lock*")
        .query_async(&mut c)
        .await
        .unwrap()
}

async fn stream_exists(url: &str, name: &str) -> bool {
    stream_config(url, name).await.is_some()
}

async fn delete_stream(url: &str, name: &str) {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    js.delete_stream(name).await.unwrap();
}

/// Periods of holding a tenant's reconcile lock, from a replica's log: each `taken` line to the
/// following `releasing` line (both inside the real hold), as seconds since the epoch.
fn lock_holds(log: &str) -> Vec<(f64, f64)> {
    let at = |line: &str| {
        let ts = line.split_whitespace().next()?;
        let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
        Some(t.timestamp_micros() as f64 / 1e6)
    };
    let mut holds = Vec::new();
    let mut taken = None;
    for line in log.lines() {
        if line.contains("reconcile lock taken") {
            taken = at(line);
        } else if line.contains("reconcile lock releasing") {
            if let (Some(start), Some(end)) = (taken.take(), at(line)) {
                holds.push((start, end));
            }
        }
    }
    holds
}

fn epoch_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn base_config(tenant: &str, nats: &str, redis: &str) -> String {
    format!(
        "tenant = \"{tenant}\"\n[nats]\nurl = \"{nats}\"\n[redis]\nurl = \"{redis}\"\n{API_SECTION}\
         [watch]\ninterval = \"1s\"\ndebounce = \"100ms\"\nlock_at_most_for = \"5s\"\n"
    )
}

/// The API-key stats job every second (it needs Redis and Mongo); the other jobs off.
fn stats_job(mongo: &str, at_least: &str) -> String {
    format!(
        "[mongo]\nuri = \"{mongo}\"\n[jobs.publish_fallback]\nenabled = false\n\
         [jobs.api_key_stats]\ninterval = \"1s\"\nlock_at_most_for = \"5s\"\nlock_at_least_for = \"{at_least}\"\n"
    )
}

const STATS_OK: &str = "ofctl_job_runs_total{tenant=\"t1\",job=\"apiKeyStatsSync\",result=\"ok\"}";
const STATS_SKIPPED: &str =
    "ofctl_job_runs_total{tenant=\"t1\",job=\"apiKeyStatsSync\",result=\"skipped\"}";
const PASSES_OK: &str = "ofctl_reconcile_passes_total{tenant=\"t1\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_run_each_job_once_per_interval_and_one_pass_at_a_time() {
    let (_n, nats_url) = nats();
    let (_r, redis_url) = redis();
    let (_m, mongo_uri) = mongo();
    let m = ManifestDir::new();
    m.write(
        "ofctl.toml",
        &format!(
            "{}{}",
            base_config("t1", &nats_url, &redis_url),
            stats_job(&mongo_uri, "1s")
        ),
    )
    .write("s.yaml", &stream("ORDERS", "  subjects: [orders.>]"));
    let replicas: Vec<Watch> = (0..3)
        .map(|_| Watch::start_with_env(&["-f", m.arg()], &[LOG]))
        .collect();
    assert!(
        all_ready(&replicas, Duration::from_secs(30)).await,
        "{}",
        logs(&replicas)
    );

    let (ok0, skipped0) = (
        metric_sum(&replicas, STATS_OK).await,
        metric_sum(&replicas, STATS_SKIPPED).await,
    );
    let t0 = epoch_secs();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let t1 = epoch_secs();
    let (ok1, skipped1) = (
        metric_sum(&replicas, STATS_OK).await,
        metric_sum(&replicas, STATS_SKIPPED).await,
    );
    let ticks = (t1.floor() - t0.floor()) as i64;
    let runs = (ok1 - ok0) as i64;
    eprintln!(
        "{ticks} one-second ticks: {runs} job runs across 3 replicas, {} skipped as locked",
        skipped1 - skipped0
    );
    assert!(
        (runs - ticks).abs() <= 1,
        "{runs} runs in {ticks} ticks\n{}",
        logs(&replicas)
    );
    assert!(
        skipped1 - skipped0 >= ticks as u64,
        "the other replicas contended for each tick"
    );

    // Reconcile passes: the lock holds of all replicas never overlap.
    let mut holds: Vec<(f64, f64, usize)> = replicas
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            lock_holds(&r.log())
                .into_iter()
                .map(move |(s, e)| (s, e, i))
        })
        .collect();
    holds.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(holds.len() >= 10, "{} passes held the lock", holds.len());
    let holders: std::collections::BTreeSet<usize> = holds.iter().map(|h| h.2).collect();
    for pair in holds.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "replica {} took the lock at {} while replica {} held it until {}",
            pair[1].2,
            pair[1].0,
            pair[0].2,
            pair[0].1
        );
    }
    eprintln!(
        "{} reconcile passes, {} replicas took turns, none overlapping",
        holds.len(),
        holders.len()
    );
}

/// Interval passes that ran (`ok`) per tenant, from a replica's metrics.
async fn interval_passes(replica: &Watch, tenants: &[String]) -> Vec<u64> {
    let (_, metrics) = replica.get("/metrics").await;
    tenants
        .iter()
        .map(|t| {
            metric(
                &metrics,
                &format!("ofctl_reconcile_passes_total{{tenant=\"{t}\",trigger=\"interval\",result=\"ok\"}}"),
            )
        })
        .collect()
}

/// Two replicas of twelve tenants: an interval pass takes the tenant's turn for half the
/// interval, so together the replicas pass each tenant about once per interval (without turns
/// each would pass every tenant), both get a share, and when one stops (giving up its turns)
/// the other passes every tenant within about an interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_split_the_tenants_and_one_takes_them_all_when_the_other_stops() {
    let (_n, nats_url) = nats();
    let (_r, redis_url) = redis();
    let root = ManifestDir::new();
    let tenants: Vec<String> = (0..12).map(|i| format!("t{i:02}")).collect();
    for (i, t) in tenants.iter().enumerate() {
        root.write(
            &format!("{t}/ofctl.toml"),
            &base_config(t, &nats_url, &redis_url),
        )
        .write(
            &format!("{t}/s.yaml"),
            &stream(&format!("SPLIT{i}"), &format!("  subjects: [split{i}.>]")),
        );
    }
    let mut replicas: Vec<Watch> = (0..2)
        .map(|_| Watch::start_with_env(&["--tenants-dir", root.arg()], &[LOG]))
        .collect();
    assert!(
        all_ready(&replicas, Duration::from_secs(30)).await,
        "{}",
        logs(&replicas)
    );
    // The first interval passes fall anywhere in [interval/2, 3·interval/2) (interval 1 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut before = Vec::new();
    for r in &replicas {
        before.push(interval_passes(r, &tenants).await);
    }
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut shares = Vec::new();
    for (r, was) in replicas.iter().zip(&before) {
        let now = interval_passes(r, &tenants).await;
        shares.push(now.iter().zip(was).map(|(n, w)| n - w).sum::<u64>());
    }
    let due = tenants.len() as f64 * window.elapsed().as_secs_f64();
    let total: u64 = shares.iter().sum();
    eprintln!(
        "{} tenants, {:.1} s: {due:.0} interval passes due, replicas ran {shares:?}",
        tenants.len(),
        window.elapsed().as_secs_f64()
    );
    assert!(
        (0.6 * due..=1.4 * due).contains(&(total as f64)),
        "about one pass per tenant per interval in all, not one per replica: {shares:?} of {due:.0} due\n{}",
        logs(&replicas)
    );
    assert!(
        shares.iter().all(|s| *s as f64 >= 0.1 * due),
        "both replicas get a share: {shares:?}"
    );
    let took_turns = metric_sum(
        &replicas,
        "ofctl_skipped_runs_total{tenant=\"t00\",work=\"reconcile\",reason=\"passed_elsewhere\"}",
    )
    .await;
    assert!(took_turns > 0, "{}", logs(&replicas));

    // Stopping one hands every tenant to the other.
    let at_stop = interval_passes(&replicas[1], &tenants).await;
    assert_eq!(replicas[0].terminate(), Some(0), "{}", replicas[0].log());
    let stopped = Instant::now();
    let handover = Watch::until(Duration::from_secs(6), || async {
        let now = interval_passes(&replicas[1], &tenants).await;
        now.iter().zip(&at_stop).all(|(n, w)| n > w)
    })
    .await;
    assert!(
        handover.is_some(),
        "after the other stopped, not every tenant was passed: {:?} -> {:?}\n{}",
        at_stop,
        interval_passes(&replicas[1], &tenants).await,
        replicas[1].log()
    );
    eprintln!(
        "every tenant passed by the remaining replica {:.1} s after the other stopped",
        stopped.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_stops_every_pass_and_job_and_all_resume_after_it() {
    let (_n, nats_url) = nats();
    let (mut redis_server, redis_url) = redis();
    let port = redis_server.port;
    let (_m, mongo_uri) = mongo();
    let m = ManifestDir::new();
    m.write(
        "ofctl.toml",
        &format!(
            "{}{}",
            base_config("t1", &nats_url, &redis_url),
            stats_job(&mongo_uri, "0s")
        ),
    )
    .write("s.yaml", &stream("ORDERS", "  subjects: [orders.>]"));
    let mut replicas: Vec<Watch> = (0..2)
        .map(|_| Watch::start_with_env(&["-f", m.arg()], &[LOG]))
        .collect();
    assert!(
        all_ready(&replicas, Duration::from_secs(30)).await,
        "{}",
        logs(&replicas)
    );
    assert!(stream_exists(&nats_url, "ORDERS").await);

    redis_server.stop();
    // Work in flight when Redis died finishes; after that nothing may run.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    delete_stream(&nats_url, "ORDERS").await;
    let passes = metric_sum(
        &replicas,
        &format!("{PASSES_OK},trigger=\"interval\",result=\"ok\"}}"),
    )
    .await;
    let jobs = metric_sum(&replicas, STATS_OK).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !stream_exists(&nats_url, "ORDERS").await,
        "a pass ran without its lock:\n{}",
        logs(&replicas)
    );
    assert_eq!(
        metric_sum(
            &replicas,
            &format!("{PASSES_OK},trigger=\"interval\",result=\"ok\"}}")
        )
        .await,
        passes
    );
    assert_eq!(
        metric_sum(&replicas, STATS_OK).await,
        jobs,
        "a job ran unlocked"
    );
    for (i, r) in replicas.iter().enumerate() {
        let (_, metrics) = r.get("/metrics").await;
        for work in ["reconcile", "apiKeyStatsSync"] {
            assert!(
                metric(
                    &metrics,
                    &format!("ofctl_skipped_runs_total{{tenant=\"t1\",work=\"{work}\",reason=\"lock_unavailable\"}}")
                ) > 0,
                "replica {i}: {work} not counted as skipped:\n{metrics}"
            );
        }
        assert_eq!(
            r.log().matches("lock service unavailable").count(),
            1,
            "replica {i} logs the outage once:\n{}",
            r.log()
        );
    }

    let _redis_again = redis_on(port);
    let back = Instant::now();
    let healed = Watch::until(Duration::from_secs(10), || async {
        stream_exists(&nats_url, "ORDERS").await
    })
    .await;
    assert!(healed.is_some(), "{}", logs(&replicas));
    // Each replica's first successful lock request after the outage logs "lock service back";
    // from then on it takes or contends for every lock again.
    let mut resumed = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        let took = Watch::until(Duration::from_secs(10), || async {
            r.log().contains("lock service back")
        })
        .await;
        assert!(took.is_some(), "replica {i} did not resume:\n{}", r.log());
        resumed.push(back.elapsed());
    }
    let jobs_back = Watch::until(Duration::from_secs(5), || async {
        metric_sum(&replicas, STATS_OK).await > jobs
    })
    .await;
    assert!(jobs_back.is_some(), "{}", logs(&replicas));
    eprintln!(
        "Redis back: the deleted stream healed after {:?}, replicas resumed after {resumed:?}, a job ran again after {:?}",
        healed.unwrap(),
        back.elapsed()
    );
    assert!(
        resumed.iter().all(|t| *t < Duration::from_secs(3)),
        "{resumed:?}"
    );

    for r in &mut replicas {
        assert_eq!(r.terminate(), Some(0), "{}", r.log());
    }
    assert_eq!(lock_keys(&redis_url).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_lock_holder_hands_the_tenant_over_within_lock_at_most_for() {
    // Kafka Connect answering after 1.5 s makes every pass hold the lock for seconds.
    let (_sandbox, urls) = sandbox_process("1500ms", "unused-key-0123456789");
    let (_r, redis_url) = redis();
    let at_most = Duration::from_secs(6);
    let m = ManifestDir::new();
    m.write(
        "ofctl.toml",
        &format!(
            "tenant = \"t1\"\n[connect]\nurl = \"{}\"\n[redis]\nurl = \"{redis_url}\"\n\
             [jobs.connector_health]\nenabled = false\n\
             [watch]\ninterval = \"1s\"\nlock_at_most_for = \"6s\"\n",
            urls.connect
        ),
    )
    .write(
        "c.yaml",
        "apiVersion: ofctl.openframe.io/v1\nkind: KafkaConnector\nmetadata:\n  name: pg\nspec:\n  config:\n    connector.class: io.debezium.connector.postgresql.PostgresConnector\n    database.hostname: h\n    database.user: u\n    database.dbname: d\n    topic.prefix: pg\n",
    );
    let holder = Watch::start_with_env(&["-f", m.arg()], &[LOG]);
    assert!(
        all_ready(std::slice::from_ref(&holder), Duration::from_secs(30)).await,
        "{}",
        holder.log()
    );
    let peer = Watch::start_with_env(&["-f", m.arg()], &[LOG]);
    assert!(
        all_ready(std::slice::from_ref(&peer), Duration::from_secs(30)).await,
        "{}",
        peer.log()
    );
    // Wait for a moment when the first replica is inside a pass, holding the lock.
    let key = reconcile_key("t1");
    let held = std::cell::RefCell::new(None);
    let inside = Watch::until(Duration::from_secs(20), || async {
        let log = holder.log();
        let inside = log.matches("reconcile lock taken").count()
            > log.matches("reconcile lock releasing").count();
        let value = redis_get(&redis_url, &key).await;
        let found = value.is_some();
        *held.borrow_mut() = value;
        inside && found
    })
    .await;
    assert!(inside.is_some(), "{}", holder.log());
    let held = held.into_inner().unwrap();
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let shape = regex_lite(&held, &host);
    assert!(shape, "not ShedLock's value format: {held}");
    let peer_passes = peer.log().matches("reconcile lock taken").count();

    std::process::Command::new("kill")
        .args(["-9", &holder.pid().to_string()])
        .status()
        .unwrap();
    let killed = Instant::now();
    let took = Watch::until(at_most + Duration::from_secs(5), || async {
        peer.log().matches("reconcile lock taken").count() > peer_passes
    })
    .await;
    let took = took.unwrap_or_else(|| panic!("no takeover:\n{}", peer.log()));
    eprintln!(
        "kill -9 of the lock holder: the peer took the tenant after {took:?} (lock_at_most_for {at_most:?}, interval 1 s)"
    );
    assert!(killed.elapsed() >= took);
    assert!(took <= at_most, "{took:?}\n{}", peer.log());
}

/// `ADDED:<yyyy-mm-ddThh:mm:ss.mmm>Z@<host>`, ShedLock's RedisLockProvider value.
fn regex_lite(value: &str, host: &str) -> bool {
    let Some(rest) = value.strip_prefix("ADDED:") else {
        return false;
    };
    let Some((instant, at)) = rest.split_once("Z@") else {
        return false;
    };
    at == host
        && instant.len() == 23
        && chrono::NaiveDateTime::parse_from_str(instant, "%Y-%m-%dT%H:%M:%S%.3f").is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_mid_write_neither_aborts_it_nor_strands_the_lock() {
    let (_sandbox, urls) = sandbox_process("400ms", "unused-key-0123456789");
    let (_n, nats_url) = nats();
    let (_r, redis_url) = redis();
    let (_m, mongo_uri) = mongo();
    let m = ManifestDir::new();
    m.write(
        "ofctl.toml",
        &format!(
            "tenant = \"t1\"\n[nats]\nurl = \"{nats_url}\"\n[mongo]\nuri = \"{mongo_uri}\"\n\
             [connect]\nurl = \"{}\"\n[redis]\nurl = \"{redis_url}\"\n\
             [jobs.connector_health]\nenabled = false\n[jobs.publish_fallback]\nenabled = false\n\
             {API_SECTION}[watch]\ninterval = \"1s\"\nlock_at_most_for = \"60s\"\n",
            urls.connect
        ),
    )
    .write(
        "s.yaml",
        &stream("TOOL_UPDATE", "  subjects: [machine.*.tool-update]"),
    );
    let watch = Watch::start_with_env(&["-f", m.arg()], &[LOG]);
    assert!(
        all_ready(std::slice::from_ref(&watch), Duration::from_secs(30)).await,
        "{}",
        watch.log()
    );
    let tool = json!({"tool": {
        "name": "Tactical RMM", "type": "TACTICAL_RMM", "toolType": "TACTICAL_RMM",
        "debeziumConnectors": [{"name": "trmm-pg", "config": {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "database.hostname": "trmm-db", "database.user": "tactical",
            "database.dbname": "tacticalrmm", "topic.prefix": "trmm"}}]
    }});
    let url = format!("{}/v1/tools/tactical-rmm", watch.api);
    // The client gives up after 300 ms, well inside the write (each Connect call takes 400 ms).
    let hung_up = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .post(&url)
        .bearer_auth(API_TOKEN)
        .json(&tool)
        .send()
        .await;
    assert!(hung_up.is_err(), "the request was meant to be cut off");
    let sent = Instant::now();
    let done = Watch::until(Duration::from_secs(20), || async {
        reqwest::get(format!("{}/connectors/trmm-pg/config", urls.connect))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(
        done.is_some(),
        "the write stopped with its client:\n{}",
        watch.log()
    );
    let stored = mongodb::Client::with_uri_str(&mongo_uri)
        .await
        .unwrap()
        .database("openframe")
        .collection::<mongodb::bson::Document>("integrated_tools")
        .find_one(mongodb::bson::doc! {"_id": "tactical-rmm"})
        .await
        .unwrap();
    assert!(stored.is_some(), "tool document not written");
    eprintln!(
        "client hung up after 300 ms; the write completed {:?} later",
        sent.elapsed()
    );

    // The lock was released (a stranded one would hold for 60 s and answer 503 after 10 s),
    // and the retry finds nothing to do.
    let retry_started = Instant::now();
    let resp = api_client().post(&url).json(&tool).send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}\n{}", watch.log());
    let results: Vec<&str> = body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["unchanged", "unchanged"], "{body}");
    eprintln!(
        "the retry answered 200 (no-op) in {:?}",
        retry_started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_never_wipes_a_tenant_and_never_touches_another() {
    let (_n, nats_url) = nats();
    let (_r, redis_url) = redis();
    let a = ManifestDir::new();
    let b = ManifestDir::new();
    let prune = "prune = true\nmax_deletes = 3\n";
    a.write(
        "ofctl.toml",
        &format!("{}{prune}", base_config("a", &nats_url, &redis_url)),
    );
    b.write(
        "ofctl.toml",
        &format!("{}{prune}", base_config("b", &nats_url, &redis_url)),
    )
    .write("b.yaml", &stream("B1", "  subjects: [b1.>]"));
    let names: Vec<String> = (1..=6).map(|i| format!("A{i}")).collect();
    let file = |n: &str| format!("{n}.yaml");
    let spec = |n: &str| stream(n, &format!("  subjects: [{}.>]", n.to_lowercase()));
    for n in &names {
        a.write(&file(n), &spec(n));
    }
    // A stream marked the old way (before markers named the tenant): adopted, never deleted.
    let js = async_nats::jetstream::new(async_nats::connect(nats_url.as_str()).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "LEGACY".into(),
        subjects: vec!["legacy.>".into()],
        metadata: [(
            "ofctl.openframe.io/managed-by".to_string(),
            "ofctl".to_string(),
        )]
        .into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let watch = Watch::start_with_env(&["-f", a.arg(), "-f", b.arg()], &[LOG]);
    assert!(
        all_ready(std::slice::from_ref(&watch), Duration::from_secs(30)).await,
        "{}",
        watch.log()
    );
    let marker =
        |info: Option<Value>| info.unwrap()["metadata"]["ofctl.openframe.io/managed-by"].clone();
    assert_eq!(
        marker(stream_config(&nats_url, "A1").await),
        "ofctl/a/default"
    );
    assert_eq!(
        marker(stream_config(&nats_url, "B1").await),
        "ofctl/b/default"
    );
    let all = |expect: Vec<&'static str>| {
        let nats_url = nats_url.clone();
        async move {
            for n in expect {
                if !stream_exists(&nats_url, n).await {
                    return Err(n);
                }
            }
            Ok(())
        }
    };
    let drift_reasons = || async {
        let (_, text) = watch.get("/v1/drift").await;
        let drift: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        drift["a"]["drift"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| d["reason"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    let everything = vec!["A1", "A2", "A3", "A4", "A5", "A6", "B1", "LEGACY"];

    // 1. The folder emptied (a ConfigMap remount, git-sync mid-way): nothing is deleted.
    for n in &names {
        a.remove(&file(n));
    }
    let refused = Watch::until(Duration::from_secs(10), || async {
        drift_reasons()
            .await
            .iter()
            .any(|r| r.contains("declares nothing for"))
    })
    .await;
    assert!(refused.is_some(), "{}", watch.log());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(all(everything.clone()).await, Ok(()), "{}", watch.log());

    // 2. Four of six removed, more than max_deletes = 3: refused whole, nothing deleted.
    for n in &names[..2] {
        a.write(&file(n), &spec(n));
    }
    let refused = Watch::until(Duration::from_secs(10), || async {
        drift_reasons()
            .await
            .iter()
            .any(|r| r.contains("more than the limit of 3"))
    })
    .await;
    assert!(refused.is_some(), "{}", watch.log());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(all(everything.clone()).await, Ok(()), "{}", watch.log());

    // 3. Three removed: deleted, but only once a second pass over the same manifest agrees.
    a.write(&file("A3"), &spec("A3"));
    let changed = Instant::now();
    let waited_with_streams_present = std::cell::Cell::new(false);
    let deleted = Watch::until(Duration::from_secs(15), || async {
        let waiting = drift_reasons()
            .await
            .iter()
            .any(|r| r.contains("waits for the next pass"));
        if waiting && all(vec!["A4", "A5", "A6"]).await.is_ok() {
            waited_with_streams_present.set(true);
        }
        let mut gone = true;
        for n in ["A4", "A5", "A6"] {
            gone &= !stream_exists(&nats_url, n).await;
        }
        gone
    })
    .await;
    assert!(deleted.is_some(), "{}", watch.log());
    assert!(
        waited_with_streams_present.get(),
        "the first pass deleted at once:\n{}",
        watch.log()
    );
    eprintln!(
        "prune of 3 streams done {:?} after the files went (two passes at a 1 s interval)",
        changed.elapsed()
    );
    assert_eq!(
        all(vec!["A1", "A2", "A3", "B1", "LEGACY"]).await,
        Ok(()),
        "{}",
        watch.log()
    );

    // Declared by a tenant, the old-style stream is adopted by a plan that says so.
    let adopt = ManifestDir::new();
    adopt
        .write(
            "ofctl.toml",
            &format!("tenant = \"a\"\n[nats]\nurl = \"{nats_url}\"\n"),
        )
        .write("l.yaml", &stream("LEGACY", "  subjects: [legacy.>]"));
    let plan = ofctl(&["plan", "-f", adopt.arg(), "--format", "json"], &[]);
    let plan: Value = serde_json::from_str(&plan.stdout).expect("plan JSON");
    let notes = plan["changes"][0]["notes"].to_string();
    assert!(
        notes.contains("old ownership marker") && notes.contains("ofctl/a/default"),
        "{plan:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_file_events_neither_postpones_the_pass_forever_nor_delays_shutdown() {
    let (_n, nats_url) = nats();
    let (_r, redis_url) = redis();
    let m = ManifestDir::new();
    m.write(
        "ofctl.toml",
        &format!(
            "tenant = \"t1\"\n[nats]\nurl = \"{nats_url}\"\n[redis]\nurl = \"{redis_url}\"\n\
             [watch]\ninterval = \"1h\"\ndebounce = \"500ms\"\n"
        ),
    )
    .write("s.yaml", &stream("ORDERS", "  subjects: [orders.>]"));
    let mut watch = Watch::start_with_env(&["-f", m.arg()], &[LOG]);
    assert!(
        all_ready(std::slice::from_ref(&watch), Duration::from_secs(30)).await,
        "{}",
        watch.log()
    );
    // An edit, then a file touched every 100 ms: never 500 ms of quiet. The debounce ceiling
    // (10 × debounce, 5 s here) still lets the pass run during the storm.
    m.write("s.yaml", &stream("ORDERS", "  subjects: [orders.v2.>]"));
    let calm = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storm = {
        let (dir, calm) = (m.path().to_path_buf(), std::sync::Arc::clone(&calm));
        std::thread::spawn(move || {
            for i in 0..150 {
                if calm.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                std::fs::write(dir.join("notes.txt"), format!("{i}")).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let applied = Watch::until(Duration::from_secs(9), || async {
        stream_config(&nats_url, "ORDERS")
            .await
            .map(|c| c["subjects"].clone())
            == Some(json!(["orders.v2.>"]))
    })
    .await;
    assert!(!storm.is_finished(), "the storm ended before the check");
    let applied =
        applied.unwrap_or_else(|| panic!("pass postponed by the storm:\n{}", watch.log()));
    eprintln!("edit applied {applied:?} into a storm of file events (debounce 500 ms)");

    // The storm goes on, so the loop is in its next debounce wait (up to 5 s): shutdown
    // interrupts it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    assert_eq!(watch.terminate(), Some(0), "{}", watch.log());
    let took = started.elapsed();
    calm.store(true, std::sync::atomic::Ordering::SeqCst);
    storm.join().unwrap();
    eprintln!("SIGTERM during the storm: exited in {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_loop_that_panics_is_restarted_and_readiness_follows() {
    let (_n, nats_url) = nats();
    let (_r, redis_url) = redis();
    let m = ManifestDir::new();
    m.write("ofctl.toml", &base_config("t1", &nats_url, &redis_url))
        .write("s.yaml", &stream("ORDERS", "  subjects: [orders.>]"));
    let watch = Watch::start_with_env(&["-f", m.arg()], &[LOG, ("OFCTL_TEST_PANIC_TENANT", "t1")]);
    // Ready after the first pass, unready while the loop is down, ready again once restarted.
    let mut seen: Vec<u16> = Vec::new();
    let started = Instant::now();
    let mut down_for = None;
    let mut down_since = None;
    while started.elapsed() < Duration::from_secs(20) {
        let code = watch.get("/readyz").await.0;
        if seen.last() != Some(&code) {
            seen.push(code);
            match code {
                503 if seen.contains(&200) => down_since = Some(Instant::now()),
                200 => down_for = down_since.map(|s: Instant| s.elapsed()),
                _ => {}
            }
        }
        if seen.ends_with(&[200, 503, 200]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        seen.ends_with(&[200, 503, 200]),
        "readiness went {seen:?}\n{}",
        watch.log()
    );
    eprintln!("tenant loop panicked: unready for {down_for:?}, then restarted and ready");
    let (_, metrics) = watch.get("/metrics").await;
    assert_eq!(
        metric(&metrics, "ofctl_tenant_loop_restarts_total{tenant=\"t1\"}"),
        1
    );
    assert!(
        watch.log().contains("the tenant loop died"),
        "{}",
        watch.log()
    );
    // The restarted loop works: an out-of-band delete is healed.
    delete_stream(&nats_url, "ORDERS").await;
    let healed = Watch::until(Duration::from_secs(10), || async {
        stream_exists(&nats_url, "ORDERS").await
    })
    .await;
    assert!(healed.is_some(), "{}", watch.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shedlock_and_ofctl_block_each_other_on_the_same_lock() {
    let (_r, redis_url) = redis();
    let (_m, mongo_uri) = mongo();
    let key = "of:{t1}:job-lock:default:apiKeyStatsSync";
    // The Java service (ShedLock) holds the job's lock for 4 s.
    let java = "ADDED:2026-02-26T15:40:27.123Z@management-service-0";
    let mut c = redis_conn(&redis_url).await;
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(java)
        .arg("PX")
        .arg(4000)
        .query_async(&mut c)
        .await
        .unwrap();
    let m = ManifestDir::new();
    m.write(
        "ofctl.toml",
        &format!(
            "tenant = \"t1\"\n[redis]\nurl = \"{redis_url}\"\n[mongo]\nuri = \"{mongo_uri}\"\n\
             [jobs.publish_fallback]\nenabled = false\n\
             [jobs.api_key_stats]\ninterval = \"2s\"\nlock_at_most_for = \"5s\"\nlock_at_least_for = \"1s\"\n"
        ),
    );
    let watch = Watch::start_with_env(&["-f", m.arg()], &[LOG]);
    let blocked = Watch::until(Duration::from_secs(4), || async {
        metric(&watch.get("/metrics").await.1, STATS_SKIPPED) > 0
    })
    .await;
    assert!(blocked.is_some(), "{}", watch.log());
    if redis_get(&redis_url, key).await.as_deref() == Some(java) {
        assert_eq!(metric(&watch.get("/metrics").await.1, STATS_OK), 0);
    }
    let ran = Watch::until(Duration::from_secs(8), || async {
        metric(&watch.get("/metrics").await.1, STATS_OK) > 0
    })
    .await;
    assert!(ran.is_some(), "{}", watch.log());

    // Vice versa: while ofctl holds it (ShedLock's exact value), ShedLock's SET NX fails.
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let attempted = std::cell::Cell::new(false);
    let checked = Watch::until(Duration::from_secs(10), || async {
        let mut c = redis_conn(&redis_url).await;
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        let value = redis_get(&redis_url, key).await;
        if ttl < 300 || value.as_deref().is_none_or(|v| v == java) {
            return false;
        }
        let value = value.unwrap();
        assert!(regex_lite(&value, &host), "not ShedLock's format: {value}");
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(java)
            .arg("NX")
            .arg("PX")
            .arg(5000)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(set, None, "ShedLock took a lock ofctl held");
        attempted.set(true);
        true
    })
    .await;
    assert!(checked.is_some() && attempted.get(), "{}", watch.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_work_over_rediss_tls() {
    let (_n, nats_url) = nats();
    let (_r, rediss_url, ca) = redis_tls();
    let m = ManifestDir::new();
    m.write("ofctl.toml", &base_config("t1", &nats_url, &rediss_url))
        .write("s.yaml", &stream("ORDERS", "  subjects: [orders.>]"));
    // The server's CA is trusted the way an operator adds one: SSL_CERT_FILE.
    let ca = ca.to_string_lossy().into_owned();
    let watch = Watch::start_with_env(&["-f", m.arg()], &[LOG, ("SSL_CERT_FILE", &ca)]);
    // With [redis] set, a pass only runs once it holds its lock, so a created stream and ok
    // passes prove the lock went over TLS.
    let locked = Watch::until(Duration::from_secs(20), || async {
        metric(
            &watch.get("/metrics").await.1,
            &format!("{PASSES_OK},trigger=\"interval\",result=\"ok\"}}"),
        ) > 0
    })
    .await;
    assert!(locked.is_some(), "{}", watch.log());
    assert!(stream_exists(&nats_url, "ORDERS").await);
    assert!(
        watch.log().contains("reconcile lock taken"),
        "{}",
        watch.log()
    );
    assert!(
        !watch.log().contains("lock service unavailable"),
        "{}",
        watch.log()
    );
}
