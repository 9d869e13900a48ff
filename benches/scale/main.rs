//! Scale benchmark: `cargo bench --bench scale` (a plain program, `harness = false`).
//!
//! For each N (100, 500, 2000; `OFCTL_BENCH_SIZES=100,500` to choose), a fresh child process
//! (this program with `--one N`, so that peak RSS is per N) starts a real nats-server, a real
//! Kafka-protocol broker (noida-db) and a MongoDB-wire server (SecantusDB) from
//! `$OFCTL_TOOLS_DIR` (default `<repo>/.tools`), and `ofctl sandbox` (the Pinot, Kafka Connect
//! and Tactical RMM emulators) in its own process with [`LATENCY`] added to every request. It
//! generates a manifest of N mixed resources ([`generate::Mix`]) and measures, driving
//! `ofctl::engine::Engine` in-process with `[engine] concurrency` = [`CONCURRENCY`]:
//!
//! * **cold plan**: a new engine (new connections, nothing cached) observes and plans against
//!   empty systems, so everything is a create. This is `plan_ms` on the last lines;
//! * **apply**: the creates of that plan;
//! * **no-op plan**: a new engine observes and plans again; it must find no change and send
//!   no write (the plan CI runs in the steady state);
//! * **baselines** ([`baseline`]): one read per resource, serially and with 10 in flight in
//!   all (Terraform's `-parallelism` 1 and 10), against the same systems as each plan: empty
//!   for the cold plan (every read answers "not found"), populated for the no-op plan;
//! * **floor** ([`baseline`]): only the lower bound's requests, sent by a client that does
//!   nothing else, with [`CONCURRENCY`] in flight per system.
//!
//! A plan's time is observe + plan; loading the manifest is reported apart (`load_ms`). Plans,
//! the parallel baseline and the floor run [`REPEAT`] times, and the median is reported.
//! Requests are counted by the emulators (Pinot, Connect, Tactical) and by ofctl's own
//! counters (NATS, Kafka, MongoDB).
//!
//! **Lower bound** ([`lower_bound`], [`bound_formula`]): the fewest round trips any client
//! needs to learn the live state, given the APIs' bulk reads, in the systems' actual state.
//! Its **time** (`bound ms`) is [`LATENCY`] times the longest chain of round trips one system
//! needs with [`CONCURRENCY`] requests in flight per system, systems in parallel.
//! `vs_bound` = plan time / that time. The bound counts round trips only: the CPU a plan
//! spends normalizing and diffing N resources is not in it, and the emulators' round trip is
//! longer than the latency they inject (timer granularity, their own work, a busy machine),
//! so even the floor lands above the bound; `vs floor` = plan time / floor time is ofctl's
//! overhead over the round trips themselves.
//!
//! Peak RSS is read from `/proc/self/status` (VmHWM), reset before each step through
//! `/proc/self/clear_refs`.
//!
//! The last lines printed are one per N, about the cold plan:
//! `N=… plan_ms=… requests=… lower_bound=… vs_serial=…x vs_par10=…x vs_bound=…x rss_mb=…`
//! (`rss_mb`: the peak over loading, the cold plan, the apply and the no-op plan).

#[path = "../../tests/support/mod.rs"]
mod support;

mod baseline;
mod generate;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use ofctl::apply::{ApplyOptions, Status};
use ofctl::config::TargetConfig;
use ofctl::engine::Engine;
use ofctl::kind::System;
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
const REPEAT: usize = 5;
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

/// One read per resource (serially, and [`TERRAFORM_PARALLELISM`] in flight), and the lower
/// bound's requests alone, against the systems in the state a plan saw.
#[derive(Debug, Serialize, Deserialize)]
struct Baselines {
    serial: Step,
    par10: Step,
    floor: Step,
}

#[derive(Debug, Serialize, Deserialize)]
struct Report {
    n: usize,
    mix: Mix,
    load_ms: f64,
    load_rss_mb: f64,
    emulator_rtt_ms: f64,
    cold: Step,
    cold_bound: Bound,
    cold_base: Baselines,
    apply: Step,
    noop: Step,
    noop_bound: Bound,
    noop_base: Baselines,
}

impl Report {
    /// Peak RSS over ofctl's own steps: loading, both plans and the apply.
    fn rss_mb(&self) -> f64 {
        [
            self.load_rss_mb,
            self.cold.rss_mb,
            self.apply.rss_mb,
            self.noop.rss_mb,
        ]
        .into_iter()
        .fold(0.0, f64::max)
    }
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

/// How the lower bound is computed ([`lower_bound`]), printed with the results.
fn bound_formula() -> String {
    let (latency, concurrency) = (LATENCY.as_millis(), CONCURRENCY);
    format!(
        "\
Lower bound: the fewest round trips any client needs to learn the live state of the declared
resources, given each API's bulk reads, in the state the systems are in. Its time (bound ms) is
{latency} ms x the longest chain of round trips one system needs with {concurrency} requests in flight per system
(ofctl's [engine] concurrency here), systems in parallel; stages(k) = ceil(k / {concurrency}).
  NATS        1 STREAM.LIST page of {NATS_PAGE} full configs, then the other pages at once:
              pages = ceil(streams / {NATS_PAGE}) (1 when none exists); chain 1 + stages(pages - 1)
  Kafka       1 metadata request (every topic); when declared topics exist, 1 DescribeConfigs
              for them, sent alongside: chain 1
  Connect     1 GET /connectors?expand=info&expand=status: chain 1
  Tactical    1 list of scripts (no bodies), then 1 GET per declared script that exists:
              chain 1 + stages(scripts), or 1 when none exists
  Pinot       no bulk read of configs: 1 GET per declared schema and per table when they exist,
              chain stages(2 x tables); when none exists, GET /schemas and GET /tables (names)
              prove it: 2 requests, chain 1
  MongoDB     1 find of the tool agents: chain 1
vs_bound = plan ms / bound ms. The bound has no CPU in it (normalizing, diffing and classifying
N resources), and the floor (these requests alone, measured) shows what the round trips cost on
this machine."
    )
}

fn print_tables(reports: &[Report]) {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!();
    println!("{}", bound_formula());
    println!();
    println!("Summary. Cold plan: a new engine against empty systems (everything a create); baselines: one read per resource against the same empty systems, serially and {TERRAFORM_PARALLELISM} in flight in all. No-op plan: after the apply.");
    println!();
    println!("| N | cold plan ms | requests | lower bound | bound ms | vs bound | serial ms | parallel-10 ms | vs serial | vs parallel-10 | apply ms | writes | no-op plan ms | no-op writes | peak RSS MB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        let base = &r.cold_base;
        println!(
            "| {} | {:.0} | {} | {} | {:.0} | {:.1}x | {:.0} | {:.0} | {:.0}x | {:.1}x | {:.0} | {} | {:.0} | {} | {:.0} |",
            r.n,
            r.cold.ms,
            r.cold.total(),
            r.cold_bound.round_trips,
            r.cold_bound.ms,
            ratio(r.cold.ms, r.cold_bound.ms),
            base.serial.ms,
            base.par10.ms,
            ratio(base.serial.ms, r.cold.ms),
            ratio(base.par10.ms, r.cold.ms),
            r.apply.ms,
            r.apply.writes(),
            r.noop.ms,
            r.noop.writes(),
            r.rss_mb(),
        );
    }
    type Pick = fn(&Report) -> (&Step, &Bound, &Baselines);
    let plans: [(&str, Pick); 2] = [
        (
            "Cold plan (empty systems), with the floor (the lower bound's requests alone)",
            |r| (&r.cold, &r.cold_bound, &r.cold_base),
        ),
        ("No-op plan (populated systems; must send no write)", |r| {
            (&r.noop, &r.noop_bound, &r.noop_base)
        }),
    ];
    for (title, pick) in plans {
        println!();
        println!("{title}");
        println!();
        println!("| N | plan ms | requests | lower bound | writes | bound ms | floor ms | emulator round trip ms | serial ms | parallel-10 ms | vs serial | vs parallel-10 | vs bound | vs floor |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in reports {
            let (plan, bound, base) = pick(r);
            println!(
                "| {} | {:.0} | {} | {} | {} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.1}x | {:.1}x | {:.2}x | {:.2}x |",
                r.n,
                plan.ms,
                plan.total(),
                bound.round_trips,
                plan.writes(),
                bound.ms,
                base.floor.ms,
                r.emulator_rtt_ms,
                base.serial.ms,
                base.par10.ms,
                ratio(base.serial.ms, plan.ms),
                ratio(base.par10.ms, plan.ms),
                ratio(plan.ms, bound.ms),
                ratio(plan.ms, base.floor.ms),
            );
        }
    }
    println!();
    println!(
        "Peak RSS of the benchmark process, MB (servers and emulators run in their own processes)."
    );
    println!();
    println!("| N | manifest load | cold plan | apply | no-op plan | baselines |");
    println!("|---|---|---|---|---|---|");
    for r in reports {
        let baselines = [&r.cold_base, &r.noop_base]
            .iter()
            .flat_map(|b| [b.serial.rss_mb, b.par10.rss_mb, b.floor.rss_mb])
            .fold(0.0, f64::max);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.n, r.load_rss_mb, r.cold.rss_mb, r.apply.rss_mb, r.noop.rss_mb, baselines,
        );
    }
    println!();
    for r in reports {
        println!("N={} mix: {:?}", r.n, r.mix);
        println!(
            "  requests per system (reads/writes): cold plan {}",
            by_system(&r.cold)
        );
        println!("  cold floor {}", by_system(&r.cold_base.floor));
        println!("  cold serial baseline {}", by_system(&r.cold_base.serial));
        println!("  apply {}", by_system(&r.apply));
        println!("  no-op plan {}", by_system(&r.noop));
        println!("  no-op floor {}", by_system(&r.noop_base.floor));
        println!("  no-op serial baseline {}", by_system(&r.noop_base.serial));
    }
    println!();
    for r in reports {
        println!(
            "N={} plan_ms={:.0} requests={} lower_bound={} vs_serial={:.1}x vs_par10={:.1}x vs_bound={:.2}x rss_mb={:.0}",
            r.n,
            r.cold.ms,
            r.cold.total(),
            r.cold_bound.round_trips,
            ratio(r.cold_base.serial.ms, r.cold.ms),
            ratio(r.cold_base.par10.ms, r.cold.ms),
            ratio(r.cold.ms, r.cold_bound.ms),
            r.rss_mb(),
        );
    }
}

// ---------------------------------------------------------------- the lower bound

/// The fewest round trips a client needs to learn the live state of `mix` (`populated`: every
/// declared object exists; otherwise none does), and how long they take at [`LATENCY`] with
/// [`CONCURRENCY`] in flight per system, systems in parallel ([`bound_formula`]).
///
/// ofctl itself sends two more on a populated Pinot (it lists names first when the declared
/// objects need more than one round of GETs, which is what makes the cold plan two requests),
/// and reads Kafka configs after the metadata rather than alongside.
fn lower_bound(mix: &Mix, populated: bool) -> Bound {
    let stages = |k: usize| k.div_ceil(CONCURRENCY);
    // (round trips, longest chain of round trips) per system; none for a system the manifest
    // declares nothing in, which ofctl does not read.
    let state = |p: (usize, usize), e: (usize, usize)| if populated { p } else { e };
    let read = |declared: usize, s: (usize, usize)| if declared == 0 { (0, 0) } else { s };
    let pages = mix.streams.div_ceil(NATS_PAGE);
    let systems = [
        read(
            mix.streams,
            state((pages, 1 + stages(pages.saturating_sub(1))), (1, 1)),
        ),
        read(mix.topics, state((2, 1), (1, 1))),
        read(mix.connectors, (1, 1)),
        read(
            mix.scripts,
            state((1 + mix.scripts, 1 + stages(mix.scripts)), (1, 1)),
        ),
        read(
            mix.tables,
            state((2 * mix.tables, stages(2 * mix.tables)), (2, 1)),
        ),
        read(mix.agents, (1, 1)),
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
    let (_mongo, mongo_uri) = support::mongo();
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
            mongo: &mongo_uri,
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
    // Each plan loads its own copy (untimed), as the CLI does: none is kept across steps.
    drop(manifest);
    let emulator_rtt_ms = emulator_rtt_ms(&urls).await?;

    let targets = baseline::Targets {
        nats: &nats_url,
        kafka: &brokers,
        mongo: &mongo_uri,
        tactical_api_key: TACTICAL_API_KEY,
    };

    // Cold plan: nothing exists yet.
    let (cold, (mut engine, obs, plan)) =
        median_of(REPEAT, || plan_once(dir.path(), &config, &stats)).await?;
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
    let cold_bound = lower_bound(&mix, false);
    let cold_base = baselines(
        n,
        &State {
            mix: &mix,
            urls: &urls,
            script_ids: &absent_script_ids(&mix),
            populated: false,
        },
        &targets,
        &stats,
        &cold_bound,
    )
    .await?;

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
    let (noop, (_, _, plan)) = median_of(REPEAT, || plan_once(dir.path(), &config, &stats)).await?;
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
    drop(plan);
    let noop_bound = lower_bound(&mix, true);
    let noop_base = baselines(
        n,
        &State {
            mix: &mix,
            urls: &urls,
            script_ids: &script_ids(&urls).await?,
            populated: true,
        },
        &targets,
        &stats,
        &noop_bound,
    )
    .await?;

    Ok(Report {
        n,
        mix,
        load_ms,
        load_rss_mb,
        emulator_rtt_ms,
        cold,
        cold_bound,
        cold_base,
        apply,
        noop,
        noop_bound,
        noop_base,
    })
}

/// The systems' state a plan saw, as the baselines need it.
struct State<'a> {
    mix: &'a Mix,
    urls: &'a support::SandboxUrls,
    /// Tactical script ids by name.
    script_ids: &'a BTreeMap<String, u64>,
    /// Every declared object exists; otherwise none does.
    populated: bool,
}

/// The serial and parallel-10 baselines and the floor, against `state`; the floor must send
/// exactly `bound`'s requests.
async fn baselines(
    n: usize,
    state: &State<'_>,
    targets: &baseline::Targets<'_>,
    stats: &SandboxStats,
    bound: &Bound,
) -> Result<Baselines, String> {
    let which = if state.populated { "no-op" } else { "cold" };
    let reads = baseline_schedule(state)?;
    let (serial, _) = median_of(1, || baseline_once(&reads, targets, 1, state, stats)).await?;
    eprintln!("N={n}: {which} serial baseline {:.0} ms", serial.ms);
    let (par10, _) = median_of(REPEAT, || {
        baseline_once(&reads, targets, TERRAFORM_PARALLELISM, state, stats)
    })
    .await?;
    eprintln!("N={n}: {which} parallel-10 baseline {:.0} ms", par10.ms);
    let floor_reads = floor_schedule(state)?;
    let (floor, _) = median_of(REPEAT, || {
        baseline_once(&floor_reads, targets, CONCURRENCY, state, stats)
    })
    .await?;
    if floor.total() != bound.round_trips {
        return Err(format!(
            "the {which} floor sent {} requests, the lower bound says {}",
            floor.total(),
            bound.round_trips
        ));
    }
    eprintln!(
        "N={n}: {which} floor {:.0} ms, {} requests",
        floor.ms,
        floor.total()
    );
    Ok(Baselines {
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
        // The previous run's state goes before the next run starts, or it would count in
        // that run's peak RSS.
        drop(last.take());
        let (step, value) = f().await?;
        steps.push(step);
        last = Some(value);
    }
    steps.sort_by(|a, b| a.ms.total_cmp(&b.ms));
    let step = steps.swap_remove(steps.len() / 2);
    Ok((step, last.ok_or("no run")?))
}

/// A plan by a new engine: observe + plan, timed, with the requests it sent. The manifest is
/// loaded first, untimed but inside the step's peak RSS (a CLI plan holds it too).
async fn plan_once(
    dir: &Path,
    config: &TargetConfig,
    stats: &SandboxStats,
) -> Result<(Step, (Engine, ofctl::engine::Observation, Plan)), String> {
    stats.reset().await?;
    reset_peak_rss();
    let manifest = ofctl::manifest::load(dir, &config.variables).map_err(err)?;
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
    state: &State<'_>,
    stats: &SandboxStats,
) -> Result<(Step, ()), String> {
    stats.reset().await?;
    reset_peak_rss();
    let run = baseline::run(schedule, targets, parallelism, state.populated).await?;
    let mut requests = sandbox_counts(&stats.get().await?);
    requests.insert("nats".into(), [run.nats, 0]);
    requests.insert("kafka".into(), [run.kafka, 0]);
    requests.insert("mongo".into(), [run.mongo, 0]);
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

/// Ids no Tactical script has, for the cold baselines: one GET per script by id costs the same
/// round trip whether the script exists or not.
fn absent_script_ids(mix: &Mix) -> BTreeMap<String, u64> {
    (0..mix.scripts)
        .map(|i| (generate::script(i), 1_000_000 + i as u64))
        .collect()
}

fn http(url: String) -> Read {
    Read::Http {
        url,
        tactical: false,
    }
}

fn list(url: String, tactical: bool) -> Read {
    Read::List { url, tactical }
}

/// Pinot: one GET per schema and per table.
fn pinot_reads(state: &State<'_>) -> Vec<Read> {
    let (mix, pinot) = (state.mix, &state.urls.pinot);
    let mut reads = Vec::new();
    for i in 0..mix.tables {
        let name = generate::schema(i);
        reads.push(http(format!("{pinot}/schemas/{name}")));
        let kind = generate::table_type(i, mix).to_ascii_lowercase();
        reads.push(http(format!("{pinot}/tables/{name}?type={kind}")));
    }
    reads
}

/// Tactical: one GET per script, by id.
fn script_reads(state: &State<'_>) -> Result<Vec<Read>, String> {
    (0..state.mix.scripts)
        .map(|i| {
            let name = generate::script(i);
            let id = state
                .script_ids
                .get(&name)
                .ok_or_else(|| format!("script {name} is not in Tactical's list"))?;
            Ok(Read::Http {
                url: format!("{}/scripts/{id}/", state.urls.tactical),
                tactical: true,
            })
        })
        .collect()
}

/// The baselines' reads: one per declared resource, as one stage.
fn baseline_schedule(state: &State<'_>) -> Result<baseline::Schedule, String> {
    let mix = state.mix;
    let mut reads = Vec::new();
    reads.extend((0..mix.streams).map(|i| Read::Stream(generate::stream(i))));
    reads.extend((0..mix.topics).map(|i| Read::Topic(generate::topic(i))));
    reads.extend((0..mix.connectors).map(|i| {
        http(format!(
            "{}/connectors/{}",
            state.urls.connect,
            generate::connector(i)
        ))
    }));
    reads.extend(pinot_reads(state));
    reads.extend((0..mix.agents).map(|i| Read::Agent(generate::agent(i))));
    reads.extend(script_reads(state)?);
    Ok(vec![vec![reads]])
}

/// The floor's reads: exactly the lower bound's requests ([`lower_bound`]) in `state`, per
/// system and in its stages.
fn floor_schedule(state: &State<'_>) -> Result<baseline::Schedule, String> {
    let (mix, urls) = (state.mix, state.urls);
    let pages = if state.populated {
        mix.streams.div_ceil(NATS_PAGE)
    } else {
        1
    };
    let mut pages = (0..pages).map(|p| Read::StreamPage(p * NATS_PAGE));
    let first_page: Vec<Read> = pages.next().into_iter().collect();
    let mut kafka = vec![Read::AllTopics];
    if state.populated {
        kafka.push(Read::TopicConfigs(
            (0..mix.topics).map(generate::topic).collect(),
        ));
    }
    let scripts_list = list(format!("{}{TACTICAL_LIST}", urls.tactical), true);
    let tactical = if state.populated {
        vec![vec![scripts_list], script_reads(state)?]
    } else {
        vec![vec![scripts_list]]
    };
    let pinot = if state.populated {
        pinot_reads(state)
    } else {
        vec![
            list(format!("{}/schemas", urls.pinot), false),
            list(format!("{}/tables", urls.pinot), false),
        ]
    };
    // A system the manifest declares nothing in is not read (as in the bound).
    let systems = [
        (mix.streams, vec![first_page, pages.collect()]),
        (mix.topics, vec![kafka]),
        (
            mix.connectors,
            vec![vec![list(
                format!("{}/connectors?expand=info&expand=status", urls.connect),
                false,
            )]],
        ),
        (mix.scripts, tactical),
        (mix.tables, vec![pinot]),
        (
            mix.agents,
            vec![vec![Read::Agents(
                (0..mix.agents).map(generate::agent).collect(),
            )]],
        ),
    ];
    Ok(systems
        .into_iter()
        .filter(|(declared, _)| *declared > 0)
        .map(|(_, stages)| stages)
        .collect())
}

// ---------------------------------------------------------------- request counts

/// Median time of one request to the Pinot emulator, alone (40 in a row): the injected
/// [`LATENCY`] plus what the emulator and this machine add to it.
async fn emulator_rtt_ms(urls: &support::SandboxUrls) -> Result<f64, String> {
    let http = reqwest::Client::new();
    let mut times = Vec::new();
    for _ in 0..40 {
        let started = Instant::now();
        http.get(format!("{}/schemas", urls.pinot))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("emulator round trip: {e}"))?;
        times.push(ms(started.elapsed()));
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

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
/// NATS, Kafka and MongoDB, since `before` (or since the engine was made).
fn counts(
    stats: &Value,
    engine: &Engine,
    before: Option<&ofctl::provider::RequestReport>,
) -> BTreeMap<String, [u64; 2]> {
    let mut out = sandbox_counts(stats);
    let now = engine.requests();
    for system in [System::Nats, System::Kafka, System::Mongo] {
        let count = |r: Option<&ofctl::provider::RequestReport>| {
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
