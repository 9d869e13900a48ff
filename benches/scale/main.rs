//! Scale benchmark: `cargo bench --bench scale` (a plain program, `harness = false`).
//!
//! For each N (100, 500, 2000; `OFCTL_BENCH_SIZES=100,500` to choose), a fresh child process
//! (this program with `--one N`, so that peak RSS is per N) starts a real nats-server and a
//! real Kafka-protocol broker (noida-db) from `$OFCTL_TOOLS_DIR` (default `<repo>/.tools`),
//! and `ofctl sandbox` (the Pinot, Kafka Connect and Tactical RMM emulators) in its own
//! process with 5 ms added to every request. It generates a manifest of N mixed resources
//! ([`generate::Mix`]) and measures, driving `ofctl::engine::Engine` in-process:
//!
//! * **cold plan** — a new engine (new connections, nothing cached) observes and plans the
//!   manifest against empty systems (everything is a create);
//! * **apply** — the creates of that plan;
//! * **no-op plan** — a new engine observes and plans again: no changes, and no writes;
//! * the **baselines** ([`baseline`]) — one read per resource, serially and 10 at a time.
//!
//! Plans exclude loading the manifest (reported separately as `load_ms`); plans and the
//! parallel baseline are run [`REPEAT`] times and the median reported.
//!
//! The **lower bound** ([`lower_bound`]) is the fewest round trips any client needs given the
//! APIs' bulk reads, and its time is that of the longest chain of round trips one system
//! needs when every round trip costs [`LATENCY`] and [`CONCURRENCY`] requests are in flight
//! per system (ofctl's `[engine] concurrency`, set to the same value in the generated
//! config). `vs_bound` is plan time / that time.
//!
//! The last lines printed are one per N:
//! `N=… plan_ms=… requests=… lower_bound=… vs_serial=…x vs_par10=…x vs_bound=…x rss_mb=…`,
//! about the no-op plan, the steady state CI plans against and the one the baselines read.

#[path = "../../tests/support/mod.rs"]
mod support;

mod baseline;
mod generate;

use std::collections::BTreeMap;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use ofctl::apply::{ApplyOptions, Status};
use ofctl::config::TargetConfig;
use ofctl::engine::Engine;
use ofctl::kind::System;
use ofctl::manifest::Manifest;
use ofctl::plan::{Plan, PlanOptions};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use baseline::Read;
use generate::Mix;

const DEFAULT_SIZES: [usize; 3] = [100, 500, 2000];
/// Added by the emulators to every request.
const LATENCY: Duration = Duration::from_millis(5);
/// Requests in flight per live system: ofctl's `[engine] concurrency` in the generated config,
/// and the concurrency the lower bound assumes. Terraform's default parallelism is also 10.
const CONCURRENCY: usize = 10;
/// Terraform's default `-parallelism`.
const TERRAFORM_PARALLELISM: usize = 10;
/// JetStream answers `STREAM.LIST` in pages of at most 256 streams (`JSApiListLimit`).
const NATS_PAGE: usize = 256;
/// Runs of each plan and of the parallel baseline; the median is reported.
const REPEAT: usize = 3;
const TACTICAL_API_KEY: &str = "bench-api-key";
const RESULT_PREFIX: &str = "RESULT ";
/// Tactical's script list, as ofctl reads it.
const TACTICAL_LIST: &str = "/scripts/?showCommunityScripts=true&showHiddenScripts=true";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` (and `--all-targets`) runs this
    // program without it. Like criterion's test mode, do no heavy work then: the benchmark
    // starts servers and takes minutes.
    if !args.iter().any(|a| a == "--bench" || a == "--one") {
        println!("scale: not run (no --bench argument); run it with `cargo bench --bench scale`");
        return ExitCode::SUCCESS;
    }
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--bench")
        .collect();
    let result = match args.as_slice() {
        ["--one", n] => match n.parse() {
            Ok(n) => one(n),
            Err(_) => Err(format!("--one takes a number, got {n}")),
        },
        [] => all(),
        other => Err(format!(
            "usage: scale [--one N] (got {other:?}); sizes come from OFCTL_BENCH_SIZES"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Figures of one measured step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Step {
    ms: f64,
    /// Requests per system: [reads, writes].
    requests: BTreeMap<String, [u64; 2]>,
    /// Peak RSS of the benchmark process during the step.
    rss_mb: f64,
}

impl Step {
    fn reads(&self) -> u64 {
        self.requests.values().map(|r| r[0]).sum()
    }

    fn writes(&self) -> u64 {
        self.requests.values().map(|r| r[1]).sum()
    }

    fn total(&self) -> u64 {
        self.reads() + self.writes()
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Bound {
    round_trips: u64,
    ms: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Report {
    n: usize,
    mix: Mix,
    load_ms: f64,
    cold: Step,
    cold_bound: Bound,
    apply: Step,
    noop: Step,
    noop_bound: Bound,
    serial: Step,
    par10: Step,
    /// The lower bound's requests alone, measured ([`baseline`]).
    floor: Step,
    peak_rss_mb: f64,
}

// ---------------------------------------------------------------- all sizes (parent)

fn all() -> Result<(), String> {
    let sizes: Vec<usize> = match std::env::var("OFCTL_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .map_err(|_| format!("OFCTL_BENCH_SIZES: bad size `{s}`"))
            })
            .collect::<Result<_, _>>()?,
        Err(_) => DEFAULT_SIZES.to_vec(),
    };
    let exe = std::env::current_exe().map_err(err)?;
    let mut reports = Vec::new();
    for n in sizes {
        // A fresh process per N: peak RSS is per N, and no N inherits another's connections.
        let out = Command::new(&exe)
            .args(["--one", &n.to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        if !out.status.success() {
            return Err(format!("N={n} failed ({})", out.status));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix(RESULT_PREFIX))
            .ok_or_else(|| format!("N={n}: no result line in:\n{stdout}"))?;
        reports.push(serde_json::from_str::<Report>(line).map_err(err)?);
    }
    print_tables(&reports);
    Ok(())
}

fn by_system(step: &Step) -> String {
    step.requests
        .iter()
        .map(|(s, [r, w])| format!("{s} {r}/{w}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_tables(reports: &[Report]) {
    println!();
    println!("Plans and apply (requests: all systems; lower bound: round trips; bound: ms at {} ms/request, {CONCURRENCY} in flight per system)", LATENCY.as_millis());
    println!();
    println!("| N | load ms | cold plan ms | requests | lower bound | bound ms | apply ms | requests (writes) | no-op plan ms | requests | writes | lower bound | bound ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        println!(
            "| {} | {:.0} | {:.0} | {} | {} | {:.0} | {:.0} | {} ({}) | {:.0} | {} | {} | {} | {:.0} |",
            r.n,
            r.load_ms,
            r.cold.ms,
            r.cold.total(),
            r.cold_bound.round_trips,
            r.cold_bound.ms,
            r.apply.ms,
            r.apply.total(),
            r.apply.writes(),
            r.noop.ms,
            r.noop.total(),
            r.noop.writes(),
            r.noop_bound.round_trips,
            r.noop_bound.ms,
        );
    }
    println!();
    println!("No-op plan against the baselines (one read per resource; serial, and {TERRAFORM_PARALLELISM} in flight in total)");
    println!();
    println!("| N | plan ms | bound ms | floor ms | serial ms | parallel-10 ms | vs serial | vs parallel-10 | vs bound | vs floor | RSS MB: plan / apply / peak |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1}x | {:.1}x | {:.2}x | {:.2}x | {:.0} / {:.0} / {:.0} |",
            r.n,
            r.noop.ms,
            r.noop_bound.ms,
            r.floor.ms,
            r.serial.ms,
            r.par10.ms,
            r.serial.ms / r.noop.ms,
            r.par10.ms / r.noop.ms,
            r.noop.ms / r.noop_bound.ms,
            r.noop.ms / r.floor.ms,
            r.noop.rss_mb,
            r.apply.rss_mb,
            r.peak_rss_mb,
        );
    }
    println!();
    for r in reports {
        println!("N={} mix: {:?}", r.n, r.mix);
        println!(
            "  cold plan requests (reads/writes): {}",
            by_system(&r.cold)
        );
        println!("  apply requests: {}", by_system(&r.apply));
        println!("  no-op plan requests: {}", by_system(&r.noop));
        println!("  serial baseline requests: {}", by_system(&r.serial));
        println!("  floor requests: {}", by_system(&r.floor));
    }
    println!();
    for r in reports {
        println!(
            "N={} plan_ms={:.0} requests={} lower_bound={} vs_serial={:.1}x vs_par10={:.1}x vs_bound={:.2}x rss_mb={:.0}",
            r.n,
            r.noop.ms,
            r.noop.total(),
            r.noop_bound.round_trips,
            r.serial.ms / r.noop.ms,
            r.par10.ms / r.noop.ms,
            r.noop.ms / r.noop_bound.ms,
            r.peak_rss_mb,
        );
    }
}

// ---------------------------------------------------------------- the lower bound

/// The fewest round trips a client needs to learn the live state of `mix` (`populated`: every
/// declared object exists; otherwise none does), and how long they take at [`LATENCY`] with
/// [`CONCURRENCY`] in flight per system, systems in parallel:
///
/// * NATS: `STREAM.LIST` pages of 256 (full configs); after the first, pages can overlap.
/// * Kafka: one metadata request (every topic), then one DescribeConfigs for the declared
///   topics that exist (none when none exists).
/// * Kafka Connect: one `GET /connectors?expand=info&expand=status`.
/// * Tactical RMM: one list, then one `GET /scripts/{id}/` per declared script that exists
///   (the list carries no script body).
/// * Pinot: no bulk read of configs: one GET per declared schema and per table when they
///   exist; when none does, `GET /schemas` and `GET /tables` (names only) prove it in two.
///
/// NATS and Kafka are real local servers without injected latency; they are counted as if
/// they had it, which never changes the maximum here (Pinot or Tactical sets it).
fn lower_bound(mix: &Mix, populated: bool) -> Bound {
    let stages = |k: usize| k.div_ceil(CONCURRENCY);
    let pages = mix.streams.div_ceil(NATS_PAGE).max(1);
    let pinot_objects = 2 * mix.tables;
    // (round trips, longest chain of round trips) per system.
    let systems = [
        (pages, 1 + stages(pages - 1)),
        if populated && mix.topics > 0 {
            (2, 2)
        } else {
            (1, 1)
        },
        (1, 1),
        if populated {
            (1 + mix.scripts, 1 + stages(mix.scripts))
        } else {
            (1, 1)
        },
        if populated {
            (pinot_objects, stages(pinot_objects))
        } else {
            (pinot_objects.min(2), 1)
        },
    ];
    let chain = systems.iter().map(|s| s.1).max().unwrap_or(0);
    Bound {
        round_trips: systems.iter().map(|s| s.0 as u64).sum(),
        ms: chain as f64 * LATENCY.as_secs_f64() * 1000.0,
    }
}

// ---------------------------------------------------------------- one N (child process)

fn one(n: usize) -> Result<(), String> {
    // Read by the generated ofctl.toml (`${env:...}`); set before any thread starts.
    std::env::set_var("OFCTL_BENCH_TACTICAL_API_KEY", TACTICAL_API_KEY);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let report = runtime.block_on(measure(n))?;
    let line = serde_json::to_string(&report).map_err(|e| e.to_string())?;
    println!("{RESULT_PREFIX}{line}");
    Ok(())
}

async fn measure(n: usize) -> Result<Report, String> {
    let mix = Mix::of(n);
    eprintln!("N={n}: starting nats-server, noida-db and ofctl sandbox (latency {LATENCY:?})");
    let (_nats, nats_url) = support::nats();
    let (_kafka, brokers) = support::kafka();
    let latency = format!("{}ms", LATENCY.as_millis());
    let (_sandbox, urls) = support::sandbox_process(&latency, TACTICAL_API_KEY);
    let stats = SandboxStats::new(&urls);

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    generate::write(
        dir.path(),
        &mix,
        &generate::Endpoints {
            nats: &nats_url,
            kafka: &brokers,
            pinot: &urls.pinot,
            connect: &urls.connect,
            tactical: &urls.tactical,
            concurrency: CONCURRENCY,
        },
    )
    .map_err(|e| format!("writing the manifest: {e}"))?;

    reset_peak_rss();
    let started = Instant::now();
    let config = TargetConfig::load(&dir.path().join("ofctl.toml"), true).map_err(err)?;
    let manifest = ofctl::manifest::load(dir.path(), &config.variables).map_err(err)?;
    let load_ms = ms(started.elapsed());
    let load_rss_mb = peak_rss_mb();
    if manifest.resources.len() != n || mix.total() != n {
        return Err(format!(
            "generated {} resources for N={n}, loaded {}",
            mix.total(),
            manifest.resources.len()
        ));
    }
    eprintln!("N={n}: {mix:?}, loaded in {load_ms:.0} ms");

    // Cold plan: nothing exists yet.
    let (cold, (mut engine, obs, plan)) =
        median_of(REPEAT, || plan_once(&config, &manifest, &stats)).await?;
    let creates = plan.summary.create;
    if creates != n || cold.writes() != 0 {
        return Err(format!(
            "cold plan: expected {n} creates and no writes, got {:?} and {} writes",
            plan.summary,
            cold.writes()
        ));
    }
    eprintln!(
        "N={n}: cold plan {:.0} ms, {} requests",
        cold.ms,
        cold.total()
    );

    // Apply the creates with the engine that planned them.
    let before = engine.requests();
    stats.reset().await?;
    reset_peak_rss();
    let engine_config = config.engine().clone();
    let options = ApplyOptions {
        concurrency: engine_config.concurrency,
        max_attempts: engine_config.max_attempts,
        retry_base: Duration::from_millis(engine_config.retry_base_ms),
        ..ApplyOptions::default()
    };
    let started = Instant::now();
    let report = engine
        .apply(&plan.changes, &obs, &options, &|_| {})
        .await
        .map_err(err)?;
    let apply = Step {
        ms: ms(started.elapsed()),
        requests: counts(&stats.get().await?, &engine, Some(&before)),
        rss_mb: peak_rss_mb(),
    };
    if let Some(o) = report.outcomes.iter().find(|o| o.status != Status::Done) {
        return Err(format!(
            "apply: {} did not succeed: {:?}",
            o.address, o.status
        ));
    }
    eprintln!(
        "N={n}: applied {} creates in {:.0} ms",
        report.outcomes.len(),
        apply.ms
    );
    drop((engine, obs, plan));

    // No-op plan: everything exists and matches.
    let (noop, (_, _, plan)) = median_of(REPEAT, || plan_once(&config, &manifest, &stats)).await?;
    if plan.summary.pending() != 0 || noop.writes() != 0 {
        return Err(format!(
            "no-op plan: expected no changes and no writes, got {:?} and {} writes",
            plan.summary,
            noop.writes()
        ));
    }
    eprintln!(
        "N={n}: no-op plan {:.0} ms, {} requests",
        noop.ms,
        noop.total()
    );

    // Baselines, against the same populated systems.
    let ids = script_ids(&urls).await?;
    let reads = baseline_schedule(&mix, &urls, &ids)?;
    let targets = baseline::Targets {
        nats: &nats_url,
        kafka: &brokers,
        tactical_api_key: TACTICAL_API_KEY,
    };
    let (serial, _) = median_of(1, || baseline_once(&reads, &targets, 1, &stats)).await?;
    eprintln!("N={n}: serial baseline {:.0} ms", serial.ms);
    let (par10, _) = median_of(REPEAT, || {
        baseline_once(&reads, &targets, TERRAFORM_PARALLELISM, &stats)
    })
    .await?;
    eprintln!("N={n}: parallel-10 baseline {:.0} ms", par10.ms);
    let floor_reads = floor_schedule(&mix, &urls, &ids)?;
    let (floor, _) = median_of(REPEAT, || {
        baseline_once(&floor_reads, &targets, CONCURRENCY, &stats)
    })
    .await?;
    let noop_bound = lower_bound(&mix, true);
    if floor.total() != noop_bound.round_trips {
        return Err(format!(
            "the floor sent {} requests, the lower bound says {}",
            floor.total(),
            noop_bound.round_trips
        ));
    }
    eprintln!(
        "N={n}: floor {:.0} ms, {} requests",
        floor.ms,
        floor.total()
    );

    Ok(Report {
        n,
        mix,
        load_ms,
        cold_bound: lower_bound(&mix, false),
        noop_bound,
        peak_rss_mb: [
            load_rss_mb,
            cold.rss_mb,
            apply.rss_mb,
            noop.rss_mb,
            serial.rss_mb,
            par10.rss_mb,
            floor.rss_mb,
        ]
        .into_iter()
        .fold(0.0, f64::max),
        cold,
        apply,
        noop,
        serial,
        par10,
        floor,
    })
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `f` `times` times; returns the step with the median time, and the last run's value.
async fn median_of<T, F, Fut>(times: usize, mut f: F) -> Result<(Step, T), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(Step, T), String>>,
{
    let mut steps = Vec::new();
    let mut last = None;
    for _ in 0..times.max(1) {
        let (step, value) = f().await?;
        steps.push(step);
        last = Some(value);
    }
    steps.sort_by(|a, b| a.ms.total_cmp(&b.ms));
    let step = steps.swap_remove(steps.len() / 2);
    Ok((step, last.ok_or("no run")?))
}

/// A plan by a new engine: observe + plan, timed, with the requests it sent.
async fn plan_once(
    config: &TargetConfig,
    manifest: &Manifest,
    stats: &SandboxStats,
) -> Result<(Step, (Engine, ofctl::engine::Observation, Plan)), String> {
    let manifest = manifest.clone();
    stats.reset().await?;
    reset_peak_rss();
    let started = Instant::now();
    let mut engine = Engine::new(config.clone());
    let obs = engine.observe(manifest, false).await.map_err(err)?;
    let plan = engine
        .plan(&obs, &PlanOptions::default(), None)
        .map_err(err)?;
    let step = Step {
        ms: ms(started.elapsed()),
        requests: counts(&stats.get().await?, &engine, None),
        rss_mb: peak_rss_mb(),
    };
    Ok((step, (engine, obs, plan)))
}

async fn baseline_once(
    schedule: &baseline::Schedule,
    targets: &baseline::Targets<'_>,
    parallelism: usize,
    stats: &SandboxStats,
) -> Result<(Step, ()), String> {
    stats.reset().await?;
    reset_peak_rss();
    let run = baseline::run(schedule, targets, parallelism).await?;
    let mut requests = sandbox_counts(&stats.get().await?);
    requests.insert("nats".into(), [run.nats, 0]);
    requests.insert("kafka".into(), [run.kafka, 0]);
    Ok((
        Step {
            ms: ms(run.elapsed),
            requests,
            rss_mb: peak_rss_mb(),
        },
        (),
    ))
}

/// Tactical script ids by name (Terraform keeps them in its state), looked up outside the
/// timed runs.
async fn script_ids(urls: &support::SandboxUrls) -> Result<BTreeMap<String, u64>, String> {
    let list: Value = reqwest::Client::new()
        .get(format!("{}{TACTICAL_LIST}", urls.tactical))
        .header("x-api-key", TACTICAL_API_KEY)
        .send()
        .await
        .map_err(err)?
        .json()
        .await
        .map_err(err)?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s.get("name")?.as_str()?.to_string(), s.get("id")?.as_u64()?)))
        .collect())
}

fn http(url: String) -> Read {
    Read::Http {
        url,
        tactical: false,
    }
}

/// Pinot: one GET per schema and per table.
fn pinot_reads(mix: &Mix, urls: &support::SandboxUrls) -> Vec<Read> {
    let mut reads = Vec::new();
    for i in 0..mix.tables {
        let name = generate::schema(i);
        reads.push(http(format!("{}/schemas/{name}", urls.pinot)));
        let kind = generate::table_type(i, mix).to_ascii_lowercase();
        reads.push(http(format!("{}/tables/{name}?type={kind}", urls.pinot)));
    }
    reads
}

/// Tactical: one GET per script, by id.
fn script_reads(
    mix: &Mix,
    urls: &support::SandboxUrls,
    ids: &BTreeMap<String, u64>,
) -> Result<Vec<Read>, String> {
    (0..mix.scripts)
        .map(|i| {
            let name = generate::script(i);
            let id = ids
                .get(&name)
                .ok_or_else(|| format!("script {name} is not in Tactical's list"))?;
            Ok(Read::Http {
                url: format!("{}/scripts/{id}/", urls.tactical),
                tactical: true,
            })
        })
        .collect()
}

/// The baselines' reads: one per declared resource, as one stage.
fn baseline_schedule(
    mix: &Mix,
    urls: &support::SandboxUrls,
    ids: &BTreeMap<String, u64>,
) -> Result<baseline::Schedule, String> {
    let mut reads = Vec::new();
    reads.extend((0..mix.streams).map(|i| Read::Stream(generate::stream(i))));
    reads.extend((0..mix.topics).map(|i| Read::Topic(generate::topic(i))));
    reads.extend((0..mix.connectors).map(|i| {
        http(format!(
            "{}/connectors/{}",
            urls.connect,
            generate::connector(i)
        ))
    }));
    reads.extend(pinot_reads(mix, urls));
    reads.extend(script_reads(mix, urls, ids)?);
    Ok(vec![vec![reads]])
}

/// The floor's reads: exactly the lower bound's requests against the populated systems
/// ([`lower_bound`]), per system and in its stages.
fn floor_schedule(
    mix: &Mix,
    urls: &support::SandboxUrls,
    ids: &BTreeMap<String, u64>,
) -> Result<baseline::Schedule, String> {
    let mut pages =
        (0..mix.streams.div_ceil(NATS_PAGE).max(1)).map(|p| Read::StreamPage(p * NATS_PAGE));
    let first_page: Vec<Read> = pages.next().into_iter().collect();
    let topics = (0..mix.topics).map(generate::topic).collect();
    Ok(vec![
        vec![first_page, pages.collect()],
        vec![vec![Read::AllTopics], vec![Read::TopicConfigs(topics)]],
        vec![vec![http(format!(
            "{}/connectors?expand=info&expand=status",
            urls.connect
        ))]],
        vec![
            vec![Read::Http {
                url: format!("{}{TACTICAL_LIST}", urls.tactical),
                tactical: true,
            }],
            script_reads(mix, urls, ids)?,
        ],
        vec![pinot_reads(mix, urls)],
    ])
}

// ---------------------------------------------------------------- request counts

/// The emulators' own request counters (`/__sandbox/stats`, not themselves counted).
struct SandboxStats {
    http: reqwest::Client,
    url: String,
}

impl SandboxStats {
    fn new(urls: &support::SandboxUrls) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: format!("{}/__sandbox/stats", urls.pinot),
        }
    }

    async fn reset(&self) -> Result<(), String> {
        self.http
            .post(format!("{}/reset", self.url))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map(drop)
            .map_err(|e| format!("resetting sandbox stats: {e}"))
    }

    async fn get(&self) -> Result<Value, String> {
        self.http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("sandbox stats: {e}"))?
            .json()
            .await
            .map_err(|e| format!("sandbox stats: {e}"))
    }
}

fn sandbox_counts(stats: &Value) -> BTreeMap<String, [u64; 2]> {
    ["pinot", "connect", "tactical"]
        .iter()
        .map(|s| {
            let n = |k: &str| stats[s][k].as_u64().unwrap_or(0);
            (s.to_string(), [n("reads"), n("writes")])
        })
        .collect()
}

/// Emulator counts for Pinot, Connect and Tactical (server side), and ofctl's own counters for
/// NATS and Kafka, since `before` (or since the engine was made).
fn counts(
    stats: &Value,
    engine: &Engine,
    before: Option<&ofctl::providers::RequestReport>,
) -> BTreeMap<String, [u64; 2]> {
    let mut out = sandbox_counts(stats);
    let now = engine.requests();
    for system in [System::Nats, System::Kafka] {
        let count = |r: Option<&ofctl::providers::RequestReport>| {
            r.and_then(|r| r.get(&system)).copied().unwrap_or_default()
        };
        let (a, b) = (count(Some(&now)), count(before));
        out.insert(system.to_string(), [a.reads - b.reads, a.writes - b.writes]);
    }
    out
}

// ---------------------------------------------------------------- memory

/// Resets the kernel's peak-RSS mark of this process (`/proc/self/clear_refs`, Linux ≥ 4.0).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn status_kb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak RSS since the last [`reset_peak_rss`].
fn peak_rss_mb() -> f64 {
    status_kb("VmHWM:").unwrap_or(0.0) / 1024.0
}
