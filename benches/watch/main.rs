//! Watch benchmark: `cargo bench --bench watch` (a plain program, `harness = false`).
//!
//! Starts the local stack's real servers the way the tests do (tests/support: nats-server,
//! redis-server, the MongoDB-wire server SecantusDB, the Kafka-wire broker noida-db, and
//! `ofctl sandbox` for Pinot, Kafka Connect and Tactical RMM with [`LATENCY`] per request),
//! generates N tenants each the shape of the shipped `desired-state/` ([`generate_tenant`]:
//! names made distinct per tenant), and runs one release `ofctl watch --tenants-dir` on them
//! with the given interval. Once every tenant has finished its first pass (`/readyz`) it waits
//! [`SETTLE_INTERVALS`] intervals (the first interval passes are spread over one interval),
//! then measures over a window of [`WINDOW_INTERVALS`] intervals:
//!
//! * `cpu_pct`: the watch process's user + system CPU over the window, in % of one core;
//! * `rss_mb`, `threads`: the largest resident set and thread count sampled in the window;
//! * `lag_p99_ms`: the 99th percentile of how late interval passes started past their due
//!   time, from the `ofctl_pass_lag_seconds` histogram (so it is the upper bound of the
//!   bucket the percentile falls in);
//! * `passes`: reconcile passes in the window (all tenants), and `min_per_tenant`: the fewest
//!   passes any one tenant had (every tenant must have one per interval).
//!
//! The scheduled jobs are switched off in the generated configs: the figures are those of
//! the reconcile loops. The last line is
//! `tenants=N cpu_pct=… rss_mb=… threads=… lag_p99_ms=… passes=…`.
//!
//! With `OFCTL_BENCH_REPLICAS=2`, two replicas share the tenants through their locks: after
//! the same settling it counts each replica's passes over the window (ok, and skipped because
//! the other held the lock), then stops one (SIGTERM) and measures how long until the other
//! has run a pass of every tenant:
//! `replicas=2 tenants=N a_ok=… b_ok=… skipped=… a_stop_s=… handover_s=…`, where `a_stop_s` is
//! how long the stopped replica took to exit (past 20 s the harness kills it).
//!
//! Settings: `OFCTL_BENCH_TENANTS` (default 1000), `OFCTL_BENCH_INTERVAL` (default `60s`).

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use support::Watch;

const DEFAULT_TENANTS: usize = 1000;
const DEFAULT_INTERVAL: &str = "60s";
/// Added by the emulators to every request (as in the scale benchmark).
const LATENCY: &str = "5ms";
/// Intervals to wait after every tenant's first pass before measuring.
const SETTLE_INTERVALS: f64 = 1.5;
/// Intervals measured.
const WINDOW_INTERVALS: f64 = 2.0;
/// How often RSS and threads are sampled in the window.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const TACTICAL_API_KEY: &str = "tactical-Api-Key-2";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` (and `--all-targets`) runs this
    // program without it: do no heavy work then (the benchmark takes minutes).
    if !args.iter().any(|a| a == "--bench") {
        println!("watch: not run (no --bench argument); run it with `cargo bench --bench watch`");
        return ExitCode::SUCCESS;
    }
    match settings().and_then(|(n, interval)| run(n, interval)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("watch: {e}");
            ExitCode::FAILURE
        }
    }
}

fn settings() -> Result<(usize, Duration), String> {
    let n = match std::env::var("OFCTL_BENCH_TENANTS") {
        Ok(v) => v.parse().ok().filter(|n| *n > 0).ok_or(format!(
            "OFCTL_BENCH_TENANTS must be a number above 0, got `{v}`"
        ))?,
        Err(_) => DEFAULT_TENANTS,
    };
    let interval = std::env::var("OFCTL_BENCH_INTERVAL").unwrap_or(DEFAULT_INTERVAL.into());
    let interval = ofctl::duration::parse(&interval)
        .map_err(|e| format!("OFCTL_BENCH_INTERVAL: {e} (e.g. `60s`)"))?;
    Ok((n, interval))
}

fn run(n: usize, interval: Duration) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio: {e}"))?;
    let (_nats, nats_url) = support::nats();
    let (_redis, redis_url) = support::redis();
    let (_mongo, mongo_uri) = support::mongo();
    let (_kafka, brokers) = support::kafka();
    let (_sandbox, urls) = support::sandbox_process(LATENCY, TACTICAL_API_KEY);
    let root = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let generated = Instant::now();
    for i in 0..n {
        generate_tenant(root.path(), i, &mongo_uri)?;
    }
    eprintln!(
        "watch: {n} tenants generated in {:?} under {}",
        generated.elapsed(),
        root.path().display()
    );
    let mut env: Vec<(&str, &str)> = support::DESIRED_STATE_SECRETS.to_vec();
    env.extend([
        ("OFCTL_NATS_URL", nats_url.as_str()),
        ("OFCTL_PINOT_URL", urls.pinot.as_str()),
        ("OFCTL_CONNECT_URL", urls.connect.as_str()),
        ("OFCTL_TACTICAL_URL", urls.tactical.as_str()),
        ("OFCTL_TACTICAL_API_KEY", TACTICAL_API_KEY),
        ("OFCTL_KAFKA_BROKERS", brokers.as_str()),
        ("OFCTL_REDIS_URL", redis_url.as_str()),
        // The default log level of a deployment: a line per pass is not part of the cost.
        ("OFCTL_LOG", "warn"),
    ]);
    let interval_arg = format!("{}ms", interval.as_millis());
    let root_arg = root.path().to_str().ok_or("non-UTF-8 temp path")?;
    let started = Instant::now();
    let args = ["--tenants-dir", root_arg, "--interval", &interval_arg];
    let watch = Watch::start_with_env(&args, &env);
    if std::env::var("OFCTL_BENCH_REPLICAS").is_ok_and(|r| r == "2") {
        let other = Watch::start_with_env(&args, &env);
        return runtime.block_on(two_replicas(watch, other, n, interval));
    }
    runtime.block_on(measure(&watch, n, interval, started))
}

async fn measure(
    watch: &Watch,
    n: usize,
    interval: Duration,
    started: Instant,
) -> Result<(), String> {
    // Every tenant's first pass: creates everything in empty systems.
    let ready_limit = Duration::from_secs(60) + Duration::from_millis(500) * n as u32;
    let ready = Watch::until(ready_limit, || async {
        watch.get("/readyz").await.0 == 200
    })
    .await;
    if ready.is_none() {
        return Err(format!(
            "not ready within {ready_limit:?} (every tenant's first pass); last log lines:\n{}",
            tail(&watch.log(), 30)
        ));
    }
    eprintln!(
        "watch: all {n} tenants through their first pass after {:?}",
        started.elapsed()
    );
    tokio::time::sleep(interval.mul_f64(SETTLE_INTERVALS)).await;

    let pid = watch.pid();
    let window = interval.mul_f64(WINDOW_INTERVALS);
    let load_before = loadavg();
    let (_, before) = watch.get("/metrics").await;
    let cpu_before = cpu_ticks(pid)?;
    let t0 = Instant::now();
    let (mut rss_max, mut threads_max) = (0.0f64, 0u64);
    while t0.elapsed() < window {
        let (rss, threads) = proc_status(pid)?;
        rss_max = rss_max.max(rss);
        threads_max = threads_max.max(threads);
        tokio::time::sleep(SAMPLE_EVERY.min(window.saturating_sub(t0.elapsed()))).await;
    }
    let cpu_after = cpu_ticks(pid)?;
    let elapsed = t0.elapsed();
    let (_, after) = watch.get("/metrics").await;
    let load_after = loadavg();

    let cpu_pct = (cpu_after - cpu_before) as f64 / clock_ticks() / elapsed.as_secs_f64() * 100.0;
    let passes = per_tenant_passes(&after, &before);
    let total: u64 = passes.values().map(|(ok, _)| ok).sum();
    let not_ok: u64 = passes.values().map(|(_, other)| other).sum();
    let min_per_tenant = if passes.len() < n {
        0
    } else {
        passes.values().map(|(ok, _)| *ok).min().unwrap_or(0)
    };
    let lag = lag_p99_ms(&after, &before);
    eprintln!(
        "watch: window {elapsed:?} ({WINDOW_INTERVALS} intervals of {interval:?}); {total} ok passes, \
         {not_ok} skipped or failed, fewest per tenant {min_per_tenant} (expected {WINDOW_INTERVALS} each); \
         load average {load_before} before, {load_after} after (2 cores shared)"
    );
    if not_ok > 0 {
        eprintln!("watch: last log lines:\n{}", tail(&watch.log(), 20));
    }
    println!(
        "tenants={n} cpu_pct={cpu_pct:.1} rss_mb={rss_max:.0} threads={threads_max} lag_p99_ms={lag} passes={total} min_per_tenant={min_per_tenant}"
    );
    Ok(())
}

async fn two_replicas(mut a: Watch, b: Watch, n: usize, interval: Duration) -> Result<(), String> {
    let ready_limit = Duration::from_secs(60) + Duration::from_millis(500) * n as u32;
    for w in [&a, &b] {
        if Watch::until(ready_limit, || async { w.get("/readyz").await.0 == 200 })
            .await
            .is_none()
        {
            return Err(format!(
                "a replica was not ready within {ready_limit:?}:\n{}",
                tail(&w.log(), 30)
            ));
        }
    }
    tokio::time::sleep(interval.mul_f64(SETTLE_INTERVALS)).await;
    let window = interval.mul_f64(WINDOW_INTERVALS);
    let (before_a, before_b) = (a.get("/metrics").await.1, b.get("/metrics").await.1);
    tokio::time::sleep(window).await;
    let (after_a, after_b) = (a.get("/metrics").await.1, b.get("/metrics").await.1);
    let sum = |m: &BTreeMap<String, (u64, u64)>| -> (u64, u64) {
        m.values()
            .fold((0, 0), |(o, s), (ok, other)| (o + ok, s + other))
    };
    let (a_ok, a_skipped) = sum(&per_tenant_passes(&after_a, &before_a));
    let (b_ok, b_skipped) = sum(&per_tenant_passes(&after_b, &before_b));
    // Stop one replica; the other must then pass every tenant.
    let (_, at_stop) = b.get("/metrics").await;
    let stopped = Instant::now();
    a.terminate();
    // The harness waits 20 s for SIGTERM, then kills: a kill leaves the locks of A's passes in
    // flight until lock_at_most_for, so how long A took to stop says which one happened.
    let a_stop_s = stopped.elapsed().as_secs_f64();
    let limit = interval * 3;
    // Scraped once a second: a thousand tenants' metrics are large, and B is being measured.
    let mut handover = format!("over_{}", limit.as_secs());
    let mut waiting = n;
    while stopped.elapsed() < limit {
        let (_, now) = b.get("/metrics").await;
        let passes = per_tenant_passes(&now, &at_stop);
        waiting = n.saturating_sub(passes.values().filter(|(ok, _)| *ok > 0).count());
        if waiting == 0 {
            handover = format!("{:.1}", stopped.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if waiting > 0 {
        eprintln!(
            "watch: {waiting} tenants not passed by B; its last log lines:\n{}",
            tail(&b.log(), 20)
        );
    }
    eprintln!(
        "watch: window {window:?}: replica A {a_ok} ok passes, {a_skipped} skipped; replica B {b_ok} ok, {b_skipped} skipped; \
         every tenant passed by B within {handover} s of stopping A; load average {}",
        loadavg()
    );
    println!(
        "replicas=2 tenants={n} a_ok={a_ok} b_ok={b_ok} skipped={} a_stop_s={a_stop_s:.1} handover_s={handover}",
        a_skipped + b_skipped
    );
    Ok(())
}

/// Tenant `i`: a copy of `desired-state/` whose names are made distinct: NATS streams (and
/// their subjects, which JetStream does not let two streams share), Kafka topics, Kafka
/// Connect connectors, Pinot schemas and tables, and the Tactical RMM script get a per-tenant
/// suffix or prefix; the MongoDB documents (tools, agents, platform documents) go to a
/// database of their own per tenant, as their ids are the platform's fixed ids.
/// The shipped config's `[redis]` reads `OFCTL_REDIS_URL` (set for the watch process) and its
/// scheduled jobs are switched off: the figures are the reconcile loops'.
fn generate_tenant(root: &Path, i: usize, mongo_uri: &str) -> Result<(), String> {
    let id = format!("t{i:04}");
    let dir = root.join(&id);
    copy_renamed(&support::repo_root().join("desired-state"), &dir, &id)?;
    let config_path = dir.join("ofctl.toml");
    let config = std::fs::read_to_string(&config_path)
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let database_uri = mongo_uri.replace("/openframe?", &format!("/of_{id}?"));
    let mut out = String::new();
    let mut section = String::new();
    for line in config.lines() {
        if let Some(name) = line.strip_prefix('[') {
            section = name.split(']').next().unwrap_or_default().to_string();
        }
        let line = match line.split_once(" = ") {
            Some(("enabled", _)) if section.starts_with("jobs.") => "enabled = false".to_string(),
            Some(("tenant", _)) => format!("tenant = \"{id}\""),
            Some(("uri", _)) => format!("uri = \"{database_uri}\""),
            Some(("\"pinot.tables.devices.name\"", _)) => {
                format!("\"pinot.tables.devices.name\" = \"devices_{id}\"")
            }
            Some(("\"pinot.tables.logs.name\"", _)) => {
                format!("\"pinot.tables.logs.name\" = \"logs_{id}\"")
            }
            Some(("\"openframe.oss-tenant.kafka.topics.inbound.devices-topic.name\"", _)) => {
                format!("\"openframe.oss-tenant.kafka.topics.inbound.devices-topic.name\" = \"{id}.devices-topic\"")
            }
            Some((
                "\"openframe.oss-tenant.kafka.topics.inbound.integrated-tool-events.name\"",
                _,
            )) => {
                format!("\"openframe.oss-tenant.kafka.topics.inbound.integrated-tool-events.name\" = \"{id}.integrated-tool.events.pinot\"")
            }
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    std::fs::write(&config_path, out).map_err(|e| format!("{}: {e}", config_path.display()))
}

/// Copies `from` to `to`, renaming the `metadata.name` of each YAML document (and the name in
/// a connector's JSON) by its folder's rule (see [`generate_tenant`]), prefixing NATS subjects.
fn copy_renamed(from: &Path, to: &Path, id: &str) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for entry in entries.flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_renamed(&src, &dst, id)?;
            continue;
        }
        let folder = from.file_name().and_then(|f| f.to_str()).unwrap_or("");
        let connector = folder == "connect" && src.extension().is_some_and(|e| e == "json");
        if src.extension().is_some_and(|e| e == "yaml") || connector {
            let text =
                std::fs::read_to_string(&src).map_err(|e| format!("{}: {e}", src.display()))?;
            let renamed: String = text
                .lines()
                .map(|line| rename_line(folder, line, id) + "\n")
                .collect();
            std::fs::write(&dst, renamed)
        } else {
            std::fs::copy(&src, &dst).map(|_| ())
        }
        .map_err(|e| format!("{}: {e}", dst.display()))?;
    }
    Ok(())
}

fn rename_line(folder: &str, line: &str, id: &str) -> String {
    // A connector's JSON repeats its name.
    if let Some(name) = line.strip_prefix("  \"name\": \"") {
        if folder == "connect" {
            return line.replacen(name, &name.replacen('"', &format!("-{id}\""), 1), 1);
        }
    }
    if let Some(name) = line.strip_prefix("  name: ") {
        let renamed = match folder {
            "nats" => format!("{name}_{}", id.to_uppercase()),
            "kafka" if !name.starts_with("${") => format!("{id}.{name}"),
            "connect" => format!("{name}-{id}"),
            "pinot" => name
                .replacen("devices", &format!("devices_{id}"), 1)
                .replacen("logs", &format!("logs_{id}"), 1),
            "tactical" => format!("{name} {id}"),
            _ => name.to_string(),
        };
        return format!("  name: {renamed}");
    }
    if folder == "nats" {
        return line.replace("subjects: [\"", &format!("subjects: [\"{id}."));
    }
    line.to_string()
}

/// Passes per tenant between two scrapes: (ok, skipped or failed).
fn per_tenant_passes(after: &str, before: &str) -> BTreeMap<String, (u64, u64)> {
    let counts = |text: &str| -> BTreeMap<(String, bool), u64> {
        let mut out = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| l.starts_with("ofctl_reconcile_passes_total{"))
        {
            let tenant = label(line, "tenant").unwrap_or_default();
            let ok = label(line, "result").as_deref() == Some("ok");
            *out.entry((tenant, ok)).or_default() += value(line) as u64;
        }
        out
    };
    let (a, b) = (counts(after), counts(before));
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for ((tenant, ok), n) in a {
        let delta = n.saturating_sub(b.get(&(tenant.clone(), ok)).copied().unwrap_or(0));
        let entry = out.entry(tenant).or_default();
        if ok {
            entry.0 += delta;
        } else {
            entry.1 += delta;
        }
    }
    out
}

/// The upper bound (ms) of the histogram bucket holding the 99th percentile of the lags
/// observed between two scrapes; `inf` past the last bucket, `none` with no observation.
fn lag_p99_ms(after: &str, before: &str) -> String {
    let buckets = |text: &str| -> Vec<(String, f64)> {
        text.lines()
            .filter(|l| l.starts_with("ofctl_pass_lag_seconds_bucket{"))
            .map(|l| (label(l, "le").unwrap_or_default(), value(l)))
            .collect()
    };
    let (a, b) = (buckets(after), buckets(before));
    let delta: Vec<(String, f64)> = a
        .iter()
        .map(|(le, n)| {
            let was = b.iter().find(|(l, _)| l == le).map_or(0.0, |(_, v)| *v);
            (le.clone(), n - was)
        })
        .collect();
    let Some(total) = delta.last().map(|(_, n)| *n).filter(|n| *n > 0.0) else {
        return "none".into();
    };
    delta
        .iter()
        .find(|(_, n)| *n >= 0.99 * total)
        .map(|(le, _)| match le.parse::<f64>() {
            Ok(s) => format!("{:.0}", s * 1000.0),
            Err(_) => "inf".into(),
        })
        .unwrap_or_else(|| "inf".into())
}

fn label(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_string())
}

fn value(line: &str) -> f64 {
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("the watch process is gone: /proc/{pid}/stat: {e}"))?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap_or(0) + 2..]
        .split(' ')
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat(5); index 0 here is field 3.
    Ok(tick(11) + tick(12))
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident set (MB) and thread count of `pid`.
fn proc_status(pid: u32) -> Result<(f64, u64), String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("the watch process is gone: /proc/{pid}/status: {e}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:") as f64 / 1024.0, field("Threads:")))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
