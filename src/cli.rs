//! The command line: argument parsing, prompts, exit codes. Errors become `anyhow` here and
//! nowhere deeper.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::apply::{ApplyOptions, ApplyReport, Outcome, Status};
use crate::config::TargetConfig;
use crate::engine::{stale_reasons, Engine, Observation};
use crate::manifest::{self, Manifest};
use crate::plan::render::{render, render_drift, Format};
use crate::plan::{Plan, PlanOptions};
use crate::redact::redact;
use crate::resource::Address;

/// Exit code for "the plan has changes" (Terraform's -detailed-exitcode convention).
const EXIT_CHANGES: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "ofctl",
    version,
    about = "Declarative reconcile engine for the OpenFrame control plane"
)]
struct Cli {
    /// Log filter (error, warn, info, debug, trace or a tracing directive).
    #[arg(long, global = true, env = "OFCTL_LOG", default_value = "warn")]
    log_level: String,
    /// Log lines as text for people, or as JSON objects one per line for log shippers.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "OFCTL_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Colour in plans and logs: auto colours a terminal unless NO_COLOR is set.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    color: ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a manifest folder: YAML, schema, placeholders. Exit 0 valid, 1 invalid.
    Validate(Inputs),
    /// Show what apply would change. Exit 0 no changes, 2 changes pending, 1 error.
    Plan(PlanArgs),
    /// Apply a manifest folder or a saved plan. Exit 0 success, 1 failure.
    Apply(ApplyArgs),
    /// Report where live state differs from the manifest. Exit 0 none, 2 drift, 1 error.
    Drift(DriftArgs),
    /// Reconcile continuously (file changes + interval) and serve the HTTP API.
    Watch(WatchArgs),
    /// Write live objects out as manifest YAML (to adopt an existing cluster).
    Export(ExportArgs),
    /// Serve API-faithful emulators of the Pinot controller, Kafka Connect and Tactical RMM.
    Sandbox(SandboxArgs),
    /// Print the shell completion script for SHELL to stdout.
    Completions(CompletionsArgs),
    /// Write the man pages (ofctl.1 and one per command, e.g. ofctl-plan.1) into a folder.
    Man(ManArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to colour a stream: `auto` colours a terminal unless `NO_COLOR` is set to a
    /// non-empty value (no-color.org); the flag given explicitly wins over `NO_COLOR`.
    fn paints(self, terminal: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

/// The global output choices every command honours.
#[derive(Debug, Clone, Copy)]
struct Ui {
    log_format: LogFormat,
    color: ColorChoice,
}

impl Ui {
    fn stdout_color(self) -> bool {
        self.color.paints(std::io::stdout().is_terminal())
    }
}

#[derive(Args, Debug)]
struct CompletionsArgs {
    /// The shell to complete for (bash, zsh, fish, elvish or powershell).
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
struct ManArgs {
    /// Folder to write the pages into (created if missing), e.g. ~/.local/share/man/man1.
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Target config to read from.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: PathBuf,
    /// Kinds to export (repeatable; default: every kind whose system the config names).
    #[arg(long = "kind", value_name = "KIND")]
    kinds: Vec<String>,
    /// Folder to write one file per kind into (default: stdout).
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct SandboxArgs {
    /// Pinot controller listen address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pinot: std::net::SocketAddr,
    /// Kafka Connect listen address.
    #[arg(long, default_value = "127.0.0.1:8083")]
    connect: std::net::SocketAddr,
    /// Tactical RMM listen address.
    #[arg(long, default_value = "127.0.0.1:8000")]
    tactical: std::net::SocketAddr,
    /// The X-API-KEY the Tactical RMM emulator accepts.
    #[arg(long, env = "OFCTL_SANDBOX_TACTICAL_API_KEY", hide_env_values = true)]
    tactical_api_key: String,
    /// Added to every response (e.g. 5ms), for benchmarks.
    #[arg(long, value_parser = crate::duration::parse, default_value = "0s")]
    latency: Duration,
    /// Fraction of requests answered with the system's 500.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Fraction of Kafka Connect writes answered with a rebalance 409.
    #[arg(long, default_value_t = 0.0)]
    rebalance_rate: f64,
    /// Fraction of connections closed without a response (half of them after the request was
    /// handled: a write is made but its answer lost).
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Seed for the fault draws, for reproducible runs.
    #[arg(long)]
    seed: Option<u64>,
    /// Inject faults into writes only (GET and HEAD are always answered).
    #[arg(long)]
    faults_writes_only: bool,
}

#[derive(Args, Debug)]
struct DriftArgs {
    #[command(flatten)]
    inputs: Inputs,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Args, Debug)]
struct WatchArgs {
    /// Manifest folder; repeat for several tenants, each with the ofctl.toml in its folder.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "DIR",
        required_unless_present = "tenants_dir"
    )]
    dirs: Vec<PathBuf>,
    /// Folder with one subfolder per tenant (each a manifest folder with its ofctl.toml);
    /// subfolders added or removed while running are picked up without a restart.
    #[arg(long, value_name = "DIR")]
    tenants_dir: Option<PathBuf>,
    /// Target config (only with a single -f).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Reconcile interval for every tenant (default: each config's [watch] interval, 60s).
    #[arg(long, value_parser = crate::duration::parse)]
    interval: Option<Duration>,
    /// Address of the platform API, `/v1/*` (default: `[api] listen`, else 127.0.0.1:8095).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Address of the management port: /management/v1/health, /healthz, /readyz, /metrics
    /// (default: `[api] management_listen`, else 127.0.0.1:8096).
    #[arg(long, value_name = "ADDR")]
    management_listen: Option<std::net::SocketAddr>,
}

#[derive(Args, Debug, Clone)]
struct Inputs {
    /// Manifest folder.
    #[arg(short = 'f', long = "file", value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Target config (default: ofctl.toml in the manifest folder).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Set a variable for `${name}` placeholders (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    vars: Vec<(String, String)>,
}

#[derive(Args, Debug, Clone)]
struct ChangeOptions {
    /// Delete objects that ofctl manages but the manifest no longer declares.
    #[arg(long)]
    prune: bool,
    /// Allow changes that delete and recreate objects (they lose data), and in-place updates
    /// that put data at risk (a connector whose topic.prefix moves re-snapshots).
    #[arg(long)]
    allow_replace: bool,
    /// With --prune: also prune a system for which the manifest declares nothing (refused by
    /// default, since an emptied or half-synced folder looks just like that).
    #[arg(long, requires = "prune")]
    allow_empty: bool,
    /// With --prune: refuse a prune of more objects than N [default: `[watch] max_deletes`
    /// of the target config, 3 unless set].
    #[arg(long, value_name = "N", requires = "prune")]
    max_deletes: Option<usize>,
    /// Plan only this resource and what it depends on (Kind/name as the plan prints it;
    /// repeatable). With --prune, only a targeted object is ever deleted.
    #[arg(long = "target", value_name = "KIND/NAME", value_parser = parse_address)]
    targets: Vec<Address>,
}

impl ChangeOptions {
    fn plan_options(&self, config: &crate::config::TargetConfig) -> PlanOptions {
        PlanOptions {
            prune: self.prune,
            allow_replace: self.allow_replace,
            allow_empty: self.allow_empty,
            max_deletes: Some(self.max_deletes.unwrap_or(config.watch().max_deletes)),
            targets: self.targets(),
        }
    }

    /// `--target` values, sorted and each once.
    fn targets(&self) -> Vec<Address> {
        let mut targets = self.targets.clone();
        targets.sort();
        targets.dedup();
        targets
    }
}

fn parse_address(s: &str) -> Result<Address, String> {
    Address::parse(s).ok_or_else(|| format!("`{s}` is not Kind/name (e.g. NatsStream/ORDERS)"))
}

#[derive(Args, Debug)]
struct PlanArgs {
    #[command(flatten)]
    inputs: Inputs,
    #[command(flatten)]
    changes: ChangeOptions,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Save the plan for `ofctl apply PLANFILE`.
    #[arg(short = 'o', long = "out", value_name = "PLANFILE")]
    out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ApplyArgs {
    /// A plan saved by `ofctl plan -o`; applied only if live state has not changed since.
    #[arg(value_name = "PLANFILE")]
    plan_file: Option<PathBuf>,
    #[command(flatten)]
    inputs: Inputs,
    #[command(flatten)]
    changes: ChangeOptions,
    /// Do not ask for confirmation.
    #[arg(long)]
    auto_approve: bool,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))
}

/// `--color` as given on the command line, read before clap parses it: clap prints help and
/// usage errors while parsing, and they follow the flag too (`NO_COLOR` they honour already).
fn color_arg() -> Option<clap::ColorChoice> {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map_while(|a| a.into_string().ok())
        .take_while(|a| a != "--")
        .collect();
    let value = args.iter().enumerate().rev().find_map(|(i, a)| {
        a.strip_prefix("--color=")
            .or_else(|| (a == "--color").then(|| args.get(i + 1).map(String::as_str))?)
    })?;
    Some(match ColorChoice::from_str(value, true).ok()? {
        ColorChoice::Auto => clap::ColorChoice::Auto,
        ColorChoice::Always => clap::ColorChoice::Always,
        ColorChoice::Never => clap::ColorChoice::Never,
    })
}

pub fn main() -> ExitCode {
    let mut command = Cli::command();
    if let Some(choice) = color_arg() {
        command = command.color(choice);
    }
    let cli = Cli::from_arg_matches(&command.get_matches())
        .unwrap_or_else(|e| e.format(&mut Cli::command()).exit());
    let ui = Ui {
        log_format: cli.log_format,
        color: cli.color,
    };
    init_logging(&cli.log_level, ui);
    // A panic message may hold a value the panicking code was handling: mask it like any other
    // output (the location and the message, redacted; no backtrace, which has no values).
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{}", redact(&format!("ofctl panicked: {info}")));
    }));
    // `watch` waits on servers nearly all the time (a thousand tenants take about a tenth of
    // a core): one thread runs it with no hand-offs between threads, which cost more than
    // the work they spread (README, watch benchmark). `TOKIO_WORKER_THREADS` asks for a
    // multi-threaded runtime with that many workers instead. The one-shot commands keep one
    // worker per core for the CPU work of large plans.
    let one_thread = matches!(cli.command, Command::Watch(_))
        && std::env::var_os("TOKIO_WORKER_THREADS").is_none();
    let mut builder = if one_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command, ui)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            match ui.log_format {
                LogFormat::Text => eprintln!("{}", redact(&format!("error: {e:#}"))),
                // A log shipper reads stderr: the error is one more JSON line (redacted by
                // the log writer).
                LogFormat::Json => tracing::error!("{e:#}"),
            }
            ExitCode::from(1)
        }
    }
}

fn init_logging(filter: &str, ui: Ui) {
    // The NATS client logs every (re)connect at info; that is noise in ofctl's own info log.
    // Audit lines and where watch listens are shown at any level unless the filter names
    // their targets (e.g. `warn,ofctl::audit=off`).
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "async_nats=warn,{}=info,{}=info,{filter}",
        crate::watch::AUDIT_TARGET,
        crate::watch::SERVE_TARGET
    ))
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match ui.log_format {
        LogFormat::Text => builder
            .with_writer(|| crate::redact::RedactingWriter)
            .with_ansi(ui.color.paints(std::io::stderr().is_terminal()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_writer(|| crate::redact::RedactingJsonWriter)
            .with_ansi(false)
            .try_init(),
    };
}

async fn run(command: Command, ui: Ui) -> anyhow::Result<u8> {
    match command {
        Command::Validate(inputs) => validate(&inputs),
        Command::Plan(args) => plan(args, ui).await,
        Command::Apply(args) => apply(args, ui).await,
        Command::Drift(args) => drift(args, ui).await,
        Command::Watch(args) => watch(args, ui).await,
        Command::Sandbox(args) => sandbox(args, ui).await,
        Command::Export(args) => export(args).await,
        Command::Completions(args) => {
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "ofctl",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Command::Man(args) => man(&args),
    }
}

fn man(args: &ManArgs) -> anyhow::Result<u8> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create the man page folder {}", args.out.display()))?;
    clap_mangen::generate_to(Cli::command(), &args.out)
        .with_context(|| format!("cannot write man pages into {}", args.out.display()))?;
    eprintln!(
        "Wrote the ofctl man pages into {}; `man ofctl` finds them when that folder is the man1 folder of a MANPATH entry (e.g. ~/.local/share/man/man1).",
        args.out.display()
    );
    Ok(0)
}

fn manifest_dir(inputs: &Inputs) -> PathBuf {
    inputs.dir.clone().unwrap_or_else(|| PathBuf::from("."))
}

fn load_config(inputs: &Inputs, dir: &Path) -> anyhow::Result<TargetConfig> {
    let mut config = match &inputs.config {
        Some(path) => crate::registry::load_config(path, true)?,
        None => crate::registry::load_config(&dir.join("ofctl.toml"), false)?,
    };
    for (k, v) in &inputs.vars {
        config
            .variables
            .insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    Ok(config)
}

/// Loads config and manifest; manifest errors are printed in full and yield `Ok(None)`.
fn load(inputs: &Inputs) -> anyhow::Result<Option<(TargetConfig, Manifest)>> {
    let dir = manifest_dir(inputs);
    let config = load_config(inputs, &dir)?;
    match manifest::load(&dir, &config.variables) {
        Ok(m) => Ok(Some((config, m))),
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{}", redact(&format!("error: {e}")));
            }
            eprintln!(
                "{} error(s) in the manifest; nothing was applied.",
                errors.0.len()
            );
            Ok(None)
        }
    }
}

fn validate(inputs: &Inputs) -> anyhow::Result<u8> {
    Ok(match load(inputs)? {
        Some((_, m)) => {
            println!(
                "{}: {} resources, valid.",
                m.dir.display(),
                m.resources.len()
            );
            0
        }
        None => 1,
    })
}

async fn observe(
    engine: &mut Engine,
    manifest: Manifest,
    prune: bool,
) -> anyhow::Result<Observation> {
    let started = Instant::now();
    let obs = engine.observe(manifest, prune).await?;
    tracing::info!(
        "read live state in {:?}: {}",
        started.elapsed(),
        serde_json::to_string(&engine.requests()).unwrap_or_default()
    );
    Ok(obs)
}

async fn plan(args: PlanArgs, ui: Ui) -> anyhow::Result<u8> {
    let Some((config, manifest)) = load(&args.inputs)? else {
        return Ok(1);
    };
    let config_path = config.path.clone();
    let options = args.changes.plan_options(&config);
    let mut engine = Engine::new(config);
    let obs = observe(&mut engine, manifest, options.prune).await?;
    let plan = engine.plan(&obs, &options, config_path)?;
    print!(
        "{}",
        render(
            &plan,
            args.format,
            ui.stdout_color() && args.format == Format::Text
        )
    );
    if let Some(out) = &args.out {
        let text = crate::redact::to_json(&plan)?;
        std::fs::write(out, text.as_bytes())
            .with_context(|| format!("cannot write plan file {}", out.display()))?;
        eprintln!(
            "Saved the plan to {}. Apply it with: ofctl apply {}",
            out.display(),
            out.display()
        );
    }
    Ok(if plan.summary.pending() > 0 {
        EXIT_CHANGES
    } else {
        0
    })
}

async fn drift(args: DriftArgs, ui: Ui) -> anyhow::Result<u8> {
    let Some((config, manifest)) = load(&args.inputs)? else {
        return Ok(1);
    };
    let config_path = config.path.clone();
    let mut engine = Engine::new(config);
    let obs = observe(&mut engine, manifest, false).await?;
    let plan = engine.plan(&obs, &PlanOptions::default(), config_path)?;
    print!(
        "{}",
        render_drift(
            &plan,
            args.format,
            ui.stdout_color() && args.format == Format::Text
        )
    );
    Ok(if plan.summary.pending() > 0 {
        EXIT_CHANGES
    } else {
        0
    })
}

async fn watch(args: WatchArgs, ui: Ui) -> anyhow::Result<u8> {
    if args.config.is_some() && (args.dirs.len() > 1 || args.tenants_dir.is_some()) {
        bail!("-c applies to one manifest folder; with several -f or --tenants-dir, each folder needs its own ofctl.toml");
    }
    let targets = args
        .dirs
        .iter()
        .map(|dir| crate::watch::Target {
            dir: dir.clone(),
            config: args.config.clone(),
        })
        .collect();
    let shared = Arc::new(crate::watch::Shared::default());
    let token = shared.shutdown.clone();
    let cancel = cancel_on_signal(ui);
    tokio::spawn(async move {
        while !cancel.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        token.cancel();
    });
    crate::watch::run(
        crate::watch::WatchOptions {
            targets,
            tenants_dir: args.tenants_dir,
            listen: args.listen,
            management_listen: args.management_listen,
            interval: args.interval,
        },
        shared,
    )
    .await?;
    notice(ui, "ofctl watch: stopped");
    Ok(0)
}

async fn export(args: ExportArgs) -> anyhow::Result<u8> {
    for k in &args.kinds {
        if crate::registry::kind_info(k).is_none() {
            bail!("unknown kind `{k}`");
        }
    }
    let config = crate::registry::load_config(&args.config, true)?;
    let mut engine = Engine::new(config);
    let objects = engine.read_all(&args.kinds).await?;
    let mut files: std::collections::BTreeMap<String, String> = Default::default();
    let mut env = Vec::new();
    for (address, spec) in &objects {
        let info = crate::registry::kind_info(&address.kind).context("kind from the registry")?;
        let e = crate::export::document(address, info, spec);
        let file = files.entry(address.kind.clone()).or_insert_with(|| {
            "# yaml-language-server: $schema=https://ofctl.openframe.io/schema/v1/manifest.schema.json\n".to_string()
        });
        file.push_str("---\n");
        file.push_str(&e.yaml);
        env.extend(e.env);
    }
    match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for (kind, text) in &files {
                let path = dir.join(format!("{}.yaml", kind.to_ascii_lowercase()));
                std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            eprintln!("Exported {} objects into {}.", objects.len(), dir.display());
        }
        None => files.values().for_each(|t| print!("{t}")),
    }
    if !env.is_empty() {
        eprintln!("Secret values were not exported; set these before planning the export:");
        for name in env {
            eprintln!("  {name}");
        }
    }
    Ok(0)
}

async fn sandbox(args: SandboxArgs, ui: Ui) -> anyhow::Result<u8> {
    crate::redact::register(&args.tactical_api_key);
    let sandbox = crate::sandbox::start(crate::sandbox::SandboxOptions {
        pinot: args.pinot,
        connect: args.connect,
        tactical: args.tactical,
        tactical_api_key: args.tactical_api_key,
        faults: crate::sandbox::FaultConfig {
            latency: args.latency,
            error_rate: args.error_rate,
            rebalance_rate: args.rebalance_rate,
            drop_rate: args.drop_rate,
            seed: args.seed,
            writes_only: args.faults_writes_only,
        },
    })
    .await
    .context("cannot start the sandbox")?;
    println!("pinot controller  {}", sandbox.pinot_url);
    println!("kafka connect     {}", sandbox.connect_url);
    println!("tactical rmm      {}", sandbox.tactical_url);
    let stop = cancel_on_signal(ui);
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sandbox.shutdown().await?;
    Ok(0)
}

fn confirm() -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to apply without confirmation: stdin is not a terminal; pass --auto-approve"
        );
    }
    print!("\nDo you want to perform these actions? Only 'yes' will be accepted: ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// A line about the process itself (interrupted, stopped) on stderr; with JSON logs it is one
/// more JSON line, so a log shipper reads nothing else. Shown at any log level, like the line
/// saying where watch listens.
fn notice(ui: Ui, text: &str) {
    match ui.log_format {
        LogFormat::Text => eprintln!("{text}"),
        LogFormat::Json => tracing::info!(target: crate::watch::SERVE_TARGET, "{text}"),
    }
}

/// Stops new changes from starting on SIGINT or SIGTERM; running ones finish.
fn cancel_on_signal(ui: Ui) -> Arc<AtomicBool> {
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let terminated = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminated => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        notice(
            ui,
            "interrupted: finishing work in flight, starting nothing new",
        );
        flag.store(true, Ordering::SeqCst);
    });
    cancel
}

fn print_outcome(o: &Outcome) {
    let verb = match o.action {
        crate::plan::Action::Create => "create",
        crate::plan::Action::Update => "update",
        crate::plan::Action::Replace => "replace",
        crate::plan::Action::Delete => "delete",
        crate::plan::Action::Noop => "noop",
    };
    let line = match &o.status {
        Status::Done => format!("  ✓ {} {verb}d ({} ms)", o.address, o.elapsed_ms),
        Status::Failed(e) => format!(
            "  ✗ {} {verb} FAILED after {} attempt(s): {e}",
            o.address, o.attempts
        ),
        Status::NotAttempted(why) => format!("  - {} {verb} not attempted: {why}", o.address),
    };
    eprintln!("{}", redact(&line));
}

/// How long an apply runs before its progress line appears.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

/// The "Applying: 3/10 changes done" line at the bottom of stderr while an apply runs: only
/// when stderr is a terminal and logs are text, and only once the apply has taken
/// [`PROGRESS_AFTER`]. The per-change lines print above it.
struct Progress {
    bar: ProgressBar,
    reveal: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(changes: usize, ui: Ui) -> Self {
        let bar = ProgressBar::with_draw_target(Some(changes as u64), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} Applying: {pos}/{len} changes done, {elapsed} elapsed",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let shown = ui.log_format == LogFormat::Text && std::io::stderr().is_terminal();
        let reveal = shown.then(|| {
            let bar = bar.clone();
            tokio::spawn(async move {
                tokio::time::sleep(PROGRESS_AFTER).await;
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar.enable_steady_tick(Duration::from_millis(100));
            })
        });
        Self { bar, reveal }
    }

    fn finish(self) {
        if let Some(reveal) = self.reveal {
            reveal.abort();
        }
        self.bar.finish_and_clear();
    }
}

fn summarize(report: &ApplyReport) -> u8 {
    let done = report.count(|s| *s == Status::Done);
    let failed = report.count(|s| matches!(s, Status::Failed(_)));
    let skipped = report.count(|s| matches!(s, Status::NotAttempted(_)));
    if report.succeeded() {
        println!("Apply complete: {done} change(s) made.");
        return 0;
    }
    println!("Apply FAILED: {done} change(s) made, {failed} failed, {skipped} not attempted.");
    for o in &report.outcomes {
        match &o.status {
            Status::Done => println!("  made:          {} ({})", o.address, o.action.as_str()),
            Status::Failed(e) => println!(
                "  failed:        {} ({}): {}",
                o.address,
                o.action.as_str(),
                redact(e)
            ),
            Status::NotAttempted(why) => println!(
                "  not attempted: {} ({}): {why}",
                o.address,
                o.action.as_str()
            ),
        }
    }
    println!("Fix the cause and re-run: ofctl only plans what is still different, so a re-run converges.");
    1
}

async fn apply(args: ApplyArgs, ui: Ui) -> anyhow::Result<u8> {
    let saved: Option<Plan> = match &args.plan_file {
        Some(path) => Some(Plan::read_file(path)?),
        None => None,
    };
    if let (Some(path), false) = (&args.plan_file, args.changes.targets.is_empty()) {
        bail!(
            "--target cannot be combined with the saved plan {}: a plan records its own targets; plan again with `ofctl plan --target ... -o FILE`",
            path.display()
        );
    }
    let mut inputs = args.inputs.clone();
    if let Some(plan) = &saved {
        inputs.dir.get_or_insert_with(|| plan.manifest_dir.clone());
        if inputs.config.is_none() {
            inputs.config = plan.config_path.clone();
        }
    }
    let Some((config, manifest)) = load(&inputs)? else {
        return Ok(1);
    };
    let options = match &saved {
        Some(plan) => plan.options.clone(),
        None => args.changes.plan_options(&config),
    };
    let engine_config = config.engine().clone();
    let config_path = config.path.clone();
    let mut engine = Engine::new(config);
    let obs = match observe(&mut engine, manifest, options.prune).await {
        Ok(obs) => obs,
        Err(e) => {
            eprintln!("{}", redact(&format!("error: {e:#}")));
            eprintln!(
                "Nothing was applied: live state could not be read, so no change was started."
            );
            return Ok(1);
        }
    };
    let fresh = engine.plan(&obs, &options, config_path)?;
    let plan = match saved {
        Some(saved) => {
            let reasons = stale_reasons(&saved, &fresh);
            if !reasons.is_empty() {
                eprintln!("error: the saved plan is stale; nothing was applied:");
                for r in &reasons {
                    eprintln!("  {}", redact(r));
                }
                eprintln!("Run ofctl plan again and review the new plan.");
                return Ok(1);
            }
            saved
        }
        None => {
            print!("{}", render(&fresh, Format::Text, ui.stdout_color()));
            fresh
        }
    };
    if plan.has_blocked() {
        eprintln!(
            "error: the plan has {} refused change(s); nothing was applied.",
            plan.summary.blocked
        );
        return Ok(1);
    }
    if plan.summary.pending() == 0 {
        if args.plan_file.is_some() {
            println!("No changes. Live state matches the manifest.");
        }
        return Ok(0);
    }
    if args.plan_file.is_none() && !args.auto_approve && !confirm()? {
        println!("Apply cancelled.");
        return Ok(1);
    }
    let apply_options = ApplyOptions {
        concurrency: engine_config.concurrency,
        max_attempts: engine_config.max_attempts,
        retry_base: Duration::from_millis(engine_config.retry_base_ms),
        cancel: cancel_on_signal(ui),
    };
    let started = Instant::now();
    let progress = Progress::start(plan.summary.pending(), ui);
    let bar = &progress.bar;
    let report = engine
        .apply(&plan.changes, &obs, &apply_options, &|o| {
            bar.suspend(|| print_outcome(o));
            bar.inc(1);
        })
        .await;
    progress.finish();
    let report = report?;
    tracing::info!(
        "applied in {:?}: {}",
        started.elapsed(),
        serde_json::to_string(&engine.requests()).unwrap_or_default()
    );
    Ok(summarize(&report))
}
