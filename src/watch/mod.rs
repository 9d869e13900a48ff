//! `ofctl watch`: the long-running form. Each tenant (a manifest folder with its target
//! config) is reconciled on file changes (debounced) and on a jittered interval, through the
//! same engine as `ofctl apply`; a Redis lock per tenant keeps replicas from reconciling the
//! same tenant at once. One tenant's failure never stalls another: each runs in its own task,
//! and a loop that dies is restarted with backoff (reported unready while it is down).
//!
//! Tenants come from repeated `-f` folders and from the subfolders of `--tenants-dir`, which is
//! rescanned on file events (and every [`RESCAN_EVERY`]): a new subfolder starts a tenant, a
//! removed one stops its loop (its locks released) and drops it from readiness and metrics.
//! One file watcher serves every tenant ([`files`]); a tenant's first interval pass falls at a
//! random point of its interval, so a thousand tenants started together do not stay in step,
//! and at most [`MAX_CONCURRENT_PASSES`] passes run at once.
//!
//! With `[redis]` configured, a pass whose lock cannot be taken does not run (fail closed). A
//! pass starts no change after 90 % of `lock_at_most_for`, and its lock is renewed while it
//! runs. Replicas share the tenants through a second lock, the tenant's interval turn: an
//! interval pass takes it and leaves it resting for half the interval, so a peer whose interval
//! pass falls in that half skips it; each tenant is then passed about once per interval by
//! whichever replica's schedule comes first after the rest, which splits the tenants about
//! evenly. File and job passes need only the reconcile lock. A stopping loop gives its resting
//! turn up, so a peer takes the tenant at its next interval pass.
//!
//! With `prune = true` a delete happens only when two consecutive passes over the same
//! manifest plan it, and the engine's prune guards (empty systems, `max_deletes`) apply.

mod auth;
mod files;
mod packed;
pub use auth::AUDIT_TARGET;
/// Log target of the line saying where `ofctl watch` listens (shown by default).
pub const SERVE_TARGET: &str = "ofctl::serve";
pub mod http;
mod platform_api;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;
use tokio::sync::{Notify, RwLock, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::apply::{ApplyOptions, Status};
use crate::config::{ConfigError, TargetConfig};
use crate::engine::Engine;
use crate::lock::{Acquired, LockMode, NotAcquired, Resting};
use crate::manifest::{self, Manifest};
use crate::metrics::{ChangeLabels, Metrics, PassLabels, TenantLabels};
use crate::plan::{Action, Change, PlanOptions};
use crate::provider::ReadPass;
use crate::resource::{annotations, Address};
use packed::PackedManifest;

/// Name of the per-tenant reconcile lock (beside the platform's job locks).
pub const RECONCILE_LOCK: &str = "ofctlReconcile";

/// Name of the per-tenant lock an interval pass also takes and leaves to rest for half the
/// interval (ShedLock's lockAtLeastFor): replicas then take turns instead of each passing
/// every tenant, and which replica's turn comes first decides, so tenants split about evenly.
pub const INTERVAL_TURN_LOCK: &str = "ofctlIntervalTurn";

/// Skip reason of an interval pass whose turn another replica took within the last half
/// interval.
const PASSED_ELSEWHERE: &str = "passed_elsewhere";

/// First wait before restarting a tenant loop that died; doubles up to [`RESTART_MAX`].
const RESTART_MIN: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(60);

/// Passes of this process running at once (the rest wait for a slot; the wait counts as lag).
pub const MAX_CONCURRENT_PASSES: usize = 32;

/// `--tenants-dir` is rescanned this long after the last event in it, and at least this often.
const RESCAN_DEBOUNCE: Duration = Duration::from_millis(500);
const RESCAN_EVERY: Duration = Duration::from_secs(30);

/// How long interval passes go on the file watcher's word alone before comparing a watched
/// tenant's files with their last good load (a stat per file): the net for a lost event.
const FILES_RECHECK_EVERY: Duration = Duration::from_secs(300);

/// TEST ONLY: `OFCTL_TEST_PANIC_TENANT=<tenant>` makes that tenant's loop panic once, at the
/// start of its second pass, so tests can prove supervision and readiness. Read here only.
const TEST_PANIC_ENV: &str = "OFCTL_TEST_PANIC_TENANT";

/// Whether the test-only fault of [`TEST_PANIC_ENV`] is due for `tenant` (once per process).
fn test_panic_due(tenant: &str) -> bool {
    static FIRED: AtomicBool = AtomicBool::new(false);
    std::env::var(TEST_PANIC_ENV).is_ok_and(|t| t == tenant) && !FIRED.swap(true, Ordering::SeqCst)
}

/// The longest a burst of file events may postpone a pass: a steady stream of events (a
/// sync tool rewriting files) must not hold reconciling off forever.
fn debounce_ceiling(debounce: Duration) -> Duration {
    (debounce * 10).max(Duration::from_secs(2))
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("two targets are both tenant `{0}`; each tenant needs its own target config")]
    DuplicateTenant(String),
    // The I/O errors are in the message, not a `source`: the CLI prints the chain, which would
    // say them twice.
    #[error("cannot list the tenants folder {dir} (--tenants-dir): {cause}; check that it exists and is readable")]
    TenantsDir { dir: PathBuf, cause: std::io::Error },
    #[error("cannot listen on {addr}: {cause}; stop what holds it or choose another address (--listen, --management-listen, or `[api] listen`, `management_listen`)")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("tenants disagree on `[api] {key}` ({found}); one process has one listener: set it in one place, or pass --{flag}")]
    ListenConflict {
        key: &'static str,
        flag: &'static str,
        /// Both addresses and the tenants that set them.
        found: String,
    },
}

/// One tenant: a manifest folder and its target config.
#[derive(Debug, Clone)]
pub struct Target {
    pub dir: PathBuf,
    pub config: Option<PathBuf>,
}

impl Target {
    fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| self.dir.join("ofctl.toml"))
    }

    fn load_config(&self) -> Result<TargetConfig, ConfigError> {
        crate::registry::load_config(&self.config_path(), self.config.is_some())
    }
}

/// Where the platform API and the management port listen unless told otherwise (the original
/// service's ports, on loopback: exposing them is a decision, not a default).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8095";
pub const DEFAULT_MANAGEMENT_LISTEN: &str = "127.0.0.1:8096";

pub struct WatchOptions {
    pub targets: Vec<Target>,
    /// Each subfolder is a tenant (a manifest folder with its ofctl.toml), picked up and
    /// dropped while running.
    pub tenants_dir: Option<PathBuf>,
    /// `--listen`; else the tenants' `[api] listen`; else [`DEFAULT_LISTEN`].
    pub listen: Option<SocketAddr>,
    /// `--management-listen`; else `[api] management_listen`; else [`DEFAULT_MANAGEMENT_LISTEN`].
    pub management_listen: Option<SocketAddr>,
    /// Overrides every target's `[watch] interval`.
    pub interval: Option<Duration>,
}

/// What drift policy says about one resource's pending change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftPolicy {
    Heal,
    Report,
    Ignore,
}

#[derive(Debug, Clone, Serialize)]
pub struct DriftItem {
    pub address: String,
    pub action: Action,
    pub policy: DriftPolicy,
    /// Why it was not healed: report-only, refused, or the apply error.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PassRecord {
    pub trigger: &'static str,
    pub finished_at: String,
    pub duration_ms: u64,
    pub applied: usize,
    pub failed: usize,
    /// The lock was held elsewhere or could not be taken, so this pass did nothing.
    pub skipped: bool,
    pub error: Option<String>,
}

/// What the HTTP API shows of a tenant.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TenantStatus {
    pub manifest_dir: PathBuf,
    pub passes: u64,
    pub last_pass: Option<PassRecord>,
    /// Set while the manifest on disk fails validation (the last good one stays in force).
    pub manifest_error: Option<String>,
    pub drift: Vec<DriftItem>,
    /// When the pass that found `drift` finished. With several replicas a tenant's passes
    /// go to whichever takes its turn, so the replica with the latest time has the current
    /// drift (`ofctl_drift_resources` is only kept by the replica that passed last).
    pub drift_as_of: Option<String>,
    /// The loop is up and has finished a pass since it (re)started.
    pub ready: bool,
    /// Times the loop died and was restarted.
    pub loop_restarts: u64,
}

/// What the HTTP API works with for one tenant: the config and last good manifest its loop
/// currently uses, and the gate that keeps an API apply and a reconcile pass of this process
/// from running at once (the Redis lock does the same across replicas).
pub struct TenantHandle {
    pub id: String,
    view: std::sync::RwLock<TenantView>,
    gate: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
pub struct TenantView {
    pub config: TargetConfig,
    pub manifest_dir: PathBuf,
    /// The last manifest that validated (none before the first good load); the loop's own.
    pub manifest: Option<Arc<PackedManifest>>,
    pub locks: LockMode,
    /// A clone of the loop's engine: API requests reuse its connections.
    pub engine: Engine,
}

impl TenantHandle {
    pub fn view(&self) -> TenantView {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_view(&self, view: TenantView) {
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = view;
    }
}

/// State shared by the tenant loops and the HTTP API.
#[derive(Default)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub tenants: RwLock<BTreeMap<String, TenantStatus>>,
    pub handles: RwLock<BTreeMap<String, Arc<TenantHandle>>>,
    pub shutdown: CancellationToken,
}

impl Shared {
    /// Ready while every tenant loop is up and has finished a pass since it (re)started.
    pub async fn ready(&self) -> bool {
        let tenants = self.tenants.read().await;
        !tenants.is_empty() && tenants.values().all(|t| t.ready)
    }
}

fn policy_of(address: &crate::resource::Address, manifest: &Manifest) -> DriftPolicy {
    match manifest
        .get(address)
        .and_then(|r| r.annotations.get(annotations::DRIFT_POLICY))
        .map(String::as_str)
    {
        Some("report") => DriftPolicy::Report,
        Some("ignore") => DriftPolicy::Ignore,
        _ => DriftPolicy::Heal,
    }
}

/// What every tenant loop of a process shares besides [`Shared`].
#[derive(Clone)]
struct LoopContext {
    shared: Arc<Shared>,
    interval_override: Option<Duration>,
    /// [`MAX_CONCURRENT_PASSES`] slots, given once the listeners are bound (see [`run`]).
    passes: Arc<Semaphore>,
}

struct TenantLoop {
    id: String,
    target: Target,
    shared: Arc<Shared>,
    /// Cancelled at shutdown or when the tenant is removed.
    stop: CancellationToken,
    /// File events of this tenant (from the process's one watcher).
    files: Arc<Notify>,
    passes_gate: Arc<Semaphore>,
    handle: Arc<TenantHandle>,
    config: TargetConfig,
    /// The last manifest that validated; a broken edit never replaces it. Shared with the
    /// tenant's [`TenantView`] (one copy per tenant).
    manifest: Option<Arc<PackedManifest>>,
    engine: Engine,
    locks: LockMode,
    interval_override: Option<Duration>,
    /// KafkaConnector names of the last good manifest, for the connector health job.
    declared_connectors: Arc<std::sync::RwLock<Vec<String>>>,
    /// A job asks for a reconcile pass now (e.g. a declared connector went missing).
    reconcile_now: Arc<tokio::sync::Notify>,
    /// Stops the jobs started from the config whose digest is `jobs_digest`.
    jobs_stop: CancellationToken,
    jobs_digest: String,
    /// Cancelled when this incarnation of the loop ends (shutdown, or it died): stops its jobs.
    life: CancellationToken,
    /// Deletes the last pass planned, with the digest of its desired state: a delete is applied
    /// only when the next pass over the same manifest plans it again.
    planned_deletes: Option<(String, BTreeSet<Address>)>,
    /// The files as they were when last loaded without error.
    loaded: Option<Fingerprint>,
    /// Whether the process's file watcher watches this tenant's files.
    files_watched: bool,
    /// When the files were last compared with `loaded`.
    files_checked: Instant,
    /// The last interval turn this loop took, while it may still rest: given up when the loop
    /// stops, so a peer takes the tenant at its next turn instead of after the rest.
    resting_turn: Option<Resting>,
    /// What the last pass that planned no change was computed from (see [`Unchanged`]).
    unchanged: Option<Unchanged>,
}

/// The inputs of a pass that planned no change. A plan is a function of the manifest, the
/// engine (the target config), the registered connectors and the live state, so a later pass
/// whose inputs are all the same would plan no change either: it stops after reading, without
/// unpacking, normalizing and comparing (most of a steady-state pass's CPU). The manifest is
/// held, so `Arc::ptr_eq` cannot mistake a new one for it; the engine is replaced only with
/// the config, which drops this.
struct Unchanged {
    manifest: Arc<PackedManifest>,
    /// Digest of the registered connectors and of everything the reads returned.
    inputs: String,
}

/// Path, size and modification time of every file of a target (its manifest folder and its
/// config), sorted: taken before a load, equal fingerprints mean the files were not changed
/// since. `None` when a file cannot be listed (the load then runs and reports it).
#[derive(PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, u64, std::time::SystemTime)>);

impl Fingerprint {
    fn of(target: &Target) -> Option<Self> {
        fn walk(
            dir: &Path,
            out: &mut Vec<(PathBuf, u64, std::time::SystemTime)>,
        ) -> std::io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    walk(&entry.path(), out)?;
                } else {
                    // Through symlinks: a mounted ConfigMap's files are links into a folder
                    // that is swapped on update.
                    let meta = std::fs::metadata(entry.path())?;
                    out.push((entry.path(), meta.len(), meta.modified()?));
                }
            }
            Ok(())
        }
        let mut files = Vec::new();
        walk(&target.dir, &mut files).ok()?;
        let config = target.config_path();
        let meta = std::fs::metadata(&config).ok()?;
        files.push((config, meta.len(), meta.modified().ok()?));
        files.sort();
        Some(Self(files))
    }
}

/// How a target's work is locked: Redis when `[redis]` is set, unlocked otherwise.
fn lock_mode(config: &TargetConfig) -> LockMode {
    let tenant = config.tenant().unwrap_or_else(|_| "default".into());
    let env = config.environment().unwrap_or_else(|_| "default".into());
    LockMode::new(config.redis_url(), &tenant, &env)
}

impl TenantLoop {
    /// The interval as configured (or overridden), before jitter.
    fn base_interval(&self) -> Duration {
        self.interval_override
            .unwrap_or(self.config.watch().interval)
    }

    fn interval(&self) -> Duration {
        let base = self.base_interval();
        let jitter = self.config.watch().jitter;
        let factor = 1.0 + rand::thread_rng().gen_range(-jitter..=jitter);
        base.mul_f64(factor.max(0.05))
    }

    /// The reconcile lock, and for an interval pass the tenant's turn, which stays taken for
    /// half the interval: a peer whose interval pass comes within it skips (its turn was
    /// taken), and the tenant goes to whichever replica comes first after it.
    async fn take_pass_locks(&self, trigger: &str, at_most: Duration) -> PassLocks {
        let mut names = vec![(RECONCILE_LOCK, Duration::ZERO)];
        if trigger == "interval" {
            names.push((INTERVAL_TURN_LOCK, self.base_interval() / 2));
        }
        PassLocks(self.locks.acquire_all(&names, at_most).await)
    }

    /// Says once, when the loop starts or its config changes, what locking will not do.
    fn announce_locks(&self) {
        match &self.locks {
            LockMode::Unlocked => {
                tracing::warn!(tenant = %self.id, "no [redis] in the target config: passes and jobs run unlocked, so run a single replica (or set [redis] url)")
            }
            LockMode::Broken(why) => {
                tracing::error!(tenant = %self.id, "[redis] is configured but unusable, so no pass or job runs until it is fixed: {}", crate::redact::redact(why))
            }
            LockMode::Redis(_) => {}
        }
    }

    /// Re-reads the target config and the manifest; keeps the last good ones on error.
    fn reload(&mut self) -> Result<(), String> {
        // A config that was read from a file and is now gone (a folder being removed or
        // re-synced) is not an empty config: no endpoints, no locks and no API token.
        if let Some(path) = self.config.path.as_ref().filter(|p| !p.exists()) {
            return Err(format!(
                "target config {} is gone; keeping the last good one",
                path.display()
            ));
        }
        match self.target.load_config() {
            // The same text: the engine keeps its config, and so does the loop unless a value
            // differs (a variable may read a file, `${file:...}`, which the manifest sees at its
            // next load), so that the loop, the engine and the API view share one copy (a
            // second was tens of KB a tenant).
            Ok(config) if config.source_digest == self.config.source_digest => {
                if config.variables != self.config.variables {
                    self.config = config;
                }
            }
            Ok(config) => {
                self.engine = Engine::new(config.clone());
                self.unchanged = None;
                self.locks = lock_mode(&config);
                self.announce_locks();
                self.config = config;
            }
            Err(e) => return Err(format!("target config: {e}")),
        }
        match manifest::load(&self.target.dir, &self.config.variables) {
            Ok(m) => {
                let connectors = m
                    .resources
                    .iter()
                    .filter(|r| r.address.kind == "KafkaConnector")
                    .map(|r| r.address.name.clone())
                    .collect();
                if let Ok(mut d) = self.declared_connectors.write() {
                    *d = connectors;
                }
                self.manifest = Some(Arc::new(PackedManifest::pack(m)));
                Ok(())
            }
            Err(errors) => Err(errors.to_string()),
        }
    }

    /// One pass; `due` is when an interval pass was due (the wait past it is recorded as lag).
    async fn pass(&mut self, trigger: &'static str, due: Option<Instant>) -> PassRecord {
        let gate = Arc::clone(&self.passes_gate);
        let _slot = tokio::select! {
            slot = gate.acquire() => slot.ok(),
            _ = self.stop.cancelled() => None,
        };
        let started = Instant::now();
        if let Some(due) = due {
            self.shared
                .metrics
                .pass_lag
                .observe(started.saturating_duration_since(due).as_secs_f64());
        }
        // A file event (a "file" pass) and startup always re-read the files. An interval or job
        // pass trusts the file watcher while it watches this tenant and the last load was good;
        // at least every FILES_RECHECK_EVERY it compares the files' sizes and times with the
        // last good load's instead (in case an event was lost), and re-reads if they differ.
        let routine = matches!(trigger, "interval" | "job");
        let trusted = routine
            && self.files_watched
            && self.loaded.is_some()
            && self.files_checked.elapsed() < FILES_RECHECK_EVERY;
        let (unchanged, reload) = if trusted {
            (true, Ok(()))
        } else {
            let files = Fingerprint::of(&self.target);
            self.files_checked = Instant::now();
            let unchanged = routine && files.is_some() && files == self.loaded;
            let reload = if unchanged { Ok(()) } else { self.reload() };
            self.loaded = if reload.is_ok() { files } else { None };
            (unchanged, reload)
        };
        let manifest_error = reload.as_ref().err().cloned();
        if let Some(e) = &manifest_error {
            tracing::error!(tenant = %self.id, "manifest not applied, keeping the last good one:\n{}", crate::redact::redact(e));
            self.shared.metrics.error(&self.id, "manifest");
        }
        let mut record = PassRecord {
            trigger,
            finished_at: String::new(),
            duration_ms: 0,
            applied: 0,
            failed: 0,
            skipped: false,
            error: manifest_error.clone(),
        };
        let mut drift = Vec::new();
        if !unchanged {
            self.handle.set_view(TenantView {
                config: self.config.clone(),
                manifest_dir: self.target.dir.clone(),
                manifest: self.manifest.clone(),
                locks: self.locks.clone(),
                engine: self.engine.clone(),
            });
        }
        if let Some(packed) = self.manifest.clone() {
            let handle = Arc::clone(&self.handle);
            let _in_process = handle.gate.lock().await;
            let at_most = self.config.watch().lock_at_most_for;
            let locks = self.take_pass_locks(trigger, at_most).await;
            if let Some(reason) = locks.skip_reason() {
                // No lock, no reconcile: two replicas applying at once is worse than a late pass.
                record.skipped = true;
                if let Some(why) = locks.unavailable() {
                    record.error = Some(format!("not run, the lock service is unavailable: {why}"));
                }
                if reason == PASSED_ELSEWHERE {
                    // The replica that took this turn reports the tenant's drift; a figure
                    // kept here would go stale.
                    self.shared.metrics.forget_drift(&self.id);
                }
                self.shared.metrics.skipped(&self.id, "reconcile", reason);
            } else {
                tracing::debug!(tenant = %self.id, "reconcile lock taken");
                let stop = work_stop(&self.stop, locks.pass(), at_most, &self.id);
                if let Err(e) = self
                    .reconcile(&packed, &mut record, &mut drift, &stop)
                    .await
                {
                    tracing::error!(tenant = %self.id, "{}", crate::redact::redact(&e));
                    self.shared.metrics.error(&self.id, "reconcile");
                    record.error = Some(e);
                }
                stop.cancel();
                tracing::debug!(tenant = %self.id, "reconcile lock releasing");
            }
            if let Some(turn) = locks.release(&self.locks).await {
                self.resting_turn = Some(turn);
            }
        }
        record.duration_ms = started.elapsed().as_millis() as u64;
        record.finished_at = chrono::Utc::now().to_rfc3339();
        let result = if record.skipped {
            "skipped"
        } else if record.error.is_some() || record.failed > 0 {
            "error"
        } else {
            "ok"
        };
        self.shared
            .metrics
            .passes
            .get_or_create(&PassLabels {
                tenant: self.id.clone(),
                trigger: trigger.to_string(),
                result: result.to_string(),
            })
            .inc();
        let mut tenants = self.shared.tenants.write().await;
        let status = tenants.entry(self.id.clone()).or_default();
        status.manifest_dir = self.target.dir.clone();
        status.passes += 1;
        status.ready = true;
        status.manifest_error = manifest_error;
        if !record.skipped {
            self.shared
                .metrics
                .drift
                .get_or_create(&TenantLabels {
                    tenant: self.id.clone(),
                })
                .set(drift.len() as i64);
            status.drift = drift;
            status.drift_as_of = Some(record.finished_at.clone());
        }
        status.last_pass = Some(record.clone());
        record
    }

    async fn reconcile(
        &mut self,
        packed: &Arc<PackedManifest>,
        record: &mut PassRecord,
        drift: &mut Vec<DriftItem>,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let watch = self.config.watch();
        let options = PlanOptions {
            prune: watch.prune,
            // Watch mode never replaces on a flag: only a resource's own annotation allows it.
            allow_replace: false,
            allow_empty: false,
            max_deletes: Some(watch.max_deletes),
            targets: Vec::new(),
        };
        // One read pass: the tools read for their connectors are not read again as resources.
        let pass = Arc::new(ReadPass::default());
        let registered = self.registered_connectors(&pass, packed).await;
        let mut declared: Vec<&Address> = packed.addresses().collect();
        declared.extend(registered.iter().map(|r| &r.address));
        let live = tokio::select! {
            live = self.engine.read_live(&pass, &declared, options.prune) => live.map_err(|e| e.to_string())?,
            _ = stop.cancelled() => return Err(
                "reading live state did not finish before the pass's deadline (90 % of [watch] lock_at_most_for) or shutdown; nothing was changed".into()
            ),
        };
        let mut inputs = crate::json::Digester::default();
        for r in &registered {
            inputs.text(&r.address.to_string());
            inputs.value(&r.spec);
        }
        live.digest_into(&mut inputs);
        let inputs = inputs.finish();
        if self
            .unchanged
            .as_ref()
            .is_some_and(|u| Arc::ptr_eq(&u.manifest, packed) && u.inputs == inputs)
        {
            tracing::debug!(tenant = %self.id, "live state as the last pass found it, which planned no change: nothing to compare");
            return Ok(());
        }
        self.unchanged = None;
        let mut manifest = packed.unpack();
        let mut registered_addresses = BTreeSet::new();
        for r in registered {
            registered_addresses.insert(r.address.clone());
            manifest.resources.push(r);
        }
        let obs = self
            .engine
            .compare(manifest, live)
            .map_err(|e| e.to_string())?;
        let plan = self
            .engine
            .plan_to_apply_now(&obs, &options)
            .map_err(|e| e.to_string())?;
        if plan.pending().next().is_none() {
            self.unchanged = Some(Unchanged {
                manifest: Arc::clone(packed),
                inputs,
            });
        }
        let confirmed = self.confirm_deletes(&obs, &plan);
        let mut heal = Vec::new();
        for change in plan.pending() {
            let policy = policy_of(&change.address, &obs.manifest);
            let registered_change =
                registered_addresses.contains(&change.address) && change.action != Action::Create;
            let reason = match (policy, &change.blocked) {
                (DriftPolicy::Ignore, _) => continue,
                _ if registered_change => "registered with its tool through the API: created when missing, otherwise changed only by the tool's next POST /v1/tools/{id}".to_string(),
                (DriftPolicy::Report, _) => "drift policy is report-only".to_string(),
                (DriftPolicy::Heal, Some(why)) => format!("refused: {why}"),
                (DriftPolicy::Heal, None)
                    if change.action == Action::Delete && !confirmed.contains(&change.address) =>
                {
                    "delete waits for the next pass over the same manifest to plan it again".into()
                }
                (DriftPolicy::Heal, None) => {
                    heal.push(change.clone());
                    continue;
                }
            };
            tracing::warn!(tenant = %self.id, "drift not healed: {} ({}): {reason}", change.address, change.action.as_str());
            drift.push(DriftItem {
                address: change.address.to_string(),
                action: change.action,
                policy,
                reason,
            });
        }
        if heal.is_empty() {
            return Ok(());
        }
        let report =
            apply_changes(&mut self.engine, &heal, &obs, &self.id, &self.shared, stop).await?;
        for o in &report.outcomes {
            let reason = match &o.status {
                Status::Done => {
                    record.applied += 1;
                    continue;
                }
                Status::Failed(e) => {
                    record.failed += 1;
                    format!("apply failed: {e}")
                }
                Status::NotAttempted(why) => format!("not attempted: {why}"),
            };
            drift.push(DriftItem {
                address: o.address.to_string(),
                action: o.action,
                policy: DriftPolicy::Heal,
                reason,
            });
        }
        Ok(())
    }

    /// The connectors of the enabled tools stored in Mongo that the manifest does not declare
    /// (registered by the platform's jobs through the API): they are desired too, so a
    /// connector Kafka Connect lost is created again; being desired, they are never pruned.
    /// Mongo unreadable: none, with an error.
    async fn registered_connectors(
        &mut self,
        pass: &ReadPass,
        packed: &PackedManifest,
    ) -> Vec<crate::resource::Resource> {
        let stored = match self.engine.stored_tool_connectors(pass).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(tenant = %self.id, "connectors of registered tools not reconciled this pass: {}", crate::redact::redact(&e.to_string()));
                self.shared.metrics.error(&self.id, "registered_tools");
                Vec::new()
            }
        };
        let declared: BTreeSet<&Address> = packed.addresses().collect();
        let mut registered: Vec<crate::resource::Resource> = Vec::new();
        for c in stored {
            if !declared.contains(&c.address) && !registered.iter().any(|r| r.address == c.address)
            {
                registered.push(c);
            }
        }
        if let Ok(mut d) = self.declared_connectors.write() {
            for r in &registered {
                if !d.contains(&r.address.name) {
                    d.push(r.address.name.clone());
                }
            }
        }
        registered
    }

    /// The deletes of `plan` that the previous pass also planned over the same desired state;
    /// remembers this pass's for the next one.
    fn confirm_deletes(
        &mut self,
        obs: &crate::engine::Observation,
        plan: &crate::plan::Plan,
    ) -> BTreeSet<Address> {
        let deletes: BTreeSet<Address> = plan
            .pending()
            .filter(|c| c.action == Action::Delete && c.blocked.is_none())
            .map(|c| c.address.clone())
            .collect();
        if deletes.is_empty() {
            // Nothing to confirm next pass either; skips digesting the whole desired state.
            self.planned_deletes = None;
            return deletes;
        }
        let desired: serde_json::Map<String, serde_json::Value> = obs
            .desired
            .iter()
            .map(|(a, v)| (a.to_string(), v.clone()))
            .collect();
        let digest = crate::json::digest(&serde_json::Value::Object(desired));
        let confirmed = match &self.planned_deletes {
            Some((previous, planned)) if *previous == digest => {
                deletes.intersection(planned).cloned().collect()
            }
            _ => BTreeSet::new(),
        };
        self.planned_deletes = Some((digest, deletes));
        confirmed
    }

    /// Starts the scheduled jobs this target's config enables and has the systems for, stopping
    /// those started from an earlier config first (each finishes a run in progress).
    async fn start_jobs(&mut self) -> Vec<tokio::task::JoinHandle<()>> {
        use crate::providers::mongo;
        self.jobs_stop.cancel();
        self.jobs_stop = self.life.child_token();
        self.jobs_digest = self.config.source_digest.clone();
        let config = self.config.jobs().clone();
        let redis = self.config.redis_url().and_then(Result::ok);
        let mut jobs: Vec<(Arc<dyn crate::jobs::Job>, crate::config::JobTiming)> = Vec::new();
        if config.connector_health.enabled {
            if let Ok(url) = crate::registry::endpoint(crate::kind::System::Connect, &self.config) {
                // With Mongo: the stored tools' connectors are expected too, and alerts go there.
                let (tools, alerts) = match mongo::database_address(&self.config) {
                    Ok((uri, database)) => match mongo::open_database(&uri, database).await {
                        Ok(db) => (Some(self.engine.clone()), Some(db)),
                        Err(e) => {
                            tracing::error!(tenant = %self.id, "connector health job without Mongo (no registered tools, no alerts): {}", e.message);
                            (None, None)
                        }
                    },
                    Err(_) => (None, None),
                };
                let job = match crate::provider::http::Tls::from_config(&self.config) {
                    Ok(tls) => {
                        crate::jobs::connector_health::ConnectorHealth::new(
                            &url,
                            &tls,
                            redis.as_deref(),
                            config.connector_health.clone(),
                            self.id.clone(),
                            Arc::clone(&self.shared.metrics),
                            Arc::clone(&self.declared_connectors),
                            Arc::clone(&self.reconcile_now),
                            tools,
                            alerts,
                        )
                        .await
                    }
                    Err(e) => Err(crate::jobs::JobError(e.to_string())),
                };
                match job {
                    Ok(job) => jobs.push((Arc::new(job), config.connector_health.timing())),
                    Err(e) => {
                        tracing::error!(tenant = %self.id, "connector health job not started: {e}")
                    }
                }
            }
        }
        if config.api_key_stats.enabled {
            let mongo = mongo::database_address(&self.config);
            if let (Some(redis_url), Ok((mongo_uri, database))) = (redis.as_deref(), mongo) {
                let tenant = self.config.tenant().unwrap_or_else(|_| self.id.clone());
                match crate::jobs::api_key_stats::ApiKeyStatsSync::new(
                    redis_url, &mongo_uri, database, &tenant,
                )
                .await
                {
                    Ok(job) => jobs.push((Arc::new(job), config.api_key_stats.timing())),
                    Err(e) => {
                        tracing::error!(tenant = %self.id, "API-key stats job not started: {e}")
                    }
                }
            }
        }
        if config.publish_fallback.enabled {
            if let Ok((mongo_uri, database)) = mongo::database_address(&self.config) {
                match crate::jobs::publish_fallback::PublishFallback::new(
                    &mongo_uri,
                    database,
                    config.publish_fallback.max_attempts,
                    self.id.clone(),
                    Arc::clone(&self.shared.metrics),
                    Arc::clone(&self.reconcile_now),
                )
                .await
                {
                    Ok(job) => jobs.push((Arc::new(job), config.publish_fallback.timing())),
                    Err(e) => {
                        tracing::error!(tenant = %self.id, "publish fallback job not started: {e}")
                    }
                }
            }
        }
        jobs.into_iter()
            .map(|(job, timing)| {
                tokio::spawn(crate::jobs::schedule(
                    job,
                    timing,
                    self.id.clone(),
                    self.locks.clone(),
                    Arc::clone(&self.shared.metrics),
                    self.jobs_stop.clone(),
                ))
            })
            .collect()
    }

    /// Boxed: an async fn keeps its arguments and their moved copies side by side, and a
    /// thousand loops wait at once.
    async fn run(mut self: Box<Self>) {
        // Nothing of a tenant runs before the process's listeners are bound (see [`run`]).
        tokio::select! {
            _ = self.passes_gate.acquire() => {}
            _ = self.stop.cancelled() => return,
        }
        let mut trigger = "startup";
        let mut due = None;
        self.announce_locks();
        let mut jobs = Box::pin(self.start_jobs()).await;
        let mut passes = 0u64;
        loop {
            if passes == 1 && test_panic_due(&self.id) {
                panic!("{TEST_PANIC_ENV}: test-only fault in tenant `{}`", self.id);
            }
            // Boxed: an idle loop (a thousand of them wait at once) then holds a small future,
            // not the largest state a pass goes through.
            let record = Box::pin(self.pass(trigger, due)).await;
            passes += 1;
            if self.config.source_digest != self.jobs_digest {
                tracing::info!(tenant = %self.id, "target config changed: restarting the scheduled jobs");
                // The stopped jobs end at their next tick; their handles need no keeping.
                jobs.retain(|job| !job.is_finished());
                jobs.extend(Box::pin(self.start_jobs()).await);
            }
            tracing::info!(
                tenant = %self.id,
                trigger = record.trigger,
                applied = record.applied,
                failed = record.failed,
                skipped = record.skipped,
                "reconcile pass finished in {} ms",
                record.duration_ms
            );
            // The first interval pass falls anywhere in [interval/2, 3·interval/2): tenants
            // started together spread over a whole interval instead of firing in step.
            let wait = if passes == 1 {
                self.interval()
                    .mul_f64(0.5 + rand::thread_rng().gen_range(0.0..1.0))
            } else {
                self.interval()
            };
            let next = Instant::now() + wait;
            due = None;
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep_until(next.into()) => {
                    trigger = "interval";
                    due = Some(next);
                }
                _ = self.reconcile_now.notified() => trigger = "job",
                _ = self.files.notified() => {
                    // Editors save in bursts (temp file, rename, chmod): wait for quiet, but
                    // no longer than the ceiling, and not past shutdown.
                    let debounce = self.config.watch().debounce;
                    let ceiling = tokio::time::sleep(debounce_ceiling(debounce));
                    tokio::pin!(ceiling);
                    loop {
                        tokio::select! {
                            _ = self.stop.cancelled() => break,
                            _ = &mut ceiling => break,
                            _ = tokio::time::sleep(debounce) => break,
                            _ = self.files.notified() => {}
                        }
                    }
                    if self.stop.is_cancelled() {
                        break;
                    }
                    trigger = "file";
                }
            }
        }
        if let Some(turn) = self.resting_turn.take() {
            turn.give_up().await;
        }
        for job in jobs {
            let _ = job.await;
        }
    }
}

/// The locks of one pass: the reconcile lock, which keeps two passes (or a pass and an API
/// write) of a tenant from running at once, and for an interval pass its turn; taken together
/// or not at all.
struct PassLocks(Result<Vec<Acquired>, NotAcquired>);

impl PassLocks {
    /// Why the pass may not run, `None` when it may.
    fn skip_reason(&self) -> Option<&'static str> {
        match &self.0 {
            Ok(_) => None,
            Err(NotAcquired::Busy(0)) => Acquired::Busy.skip_reason(),
            Err(NotAcquired::Busy(_)) => Some(PASSED_ELSEWHERE),
            Err(NotAcquired::Unavailable(_)) => Some("lock_unavailable"),
        }
    }

    /// Why the lock service could not be asked, if that is why the pass may not run.
    fn unavailable(&self) -> Option<&str> {
        match &self.0 {
            Err(NotAcquired::Unavailable(why)) => Some(why),
            _ => None,
        }
    }

    /// The reconcile lock, when taken.
    fn pass(&self) -> Option<&Acquired> {
        self.0.as_ref().ok().and_then(|each| each.first())
    }

    /// Gives both back: the reconcile lock is free at once; a taken turn rests out its half
    /// interval and is returned, to be given up if the loop stops before then.
    async fn release(self, locks: &LockMode) -> Option<Resting> {
        let Ok(each) = self.0 else {
            return None;
        };
        let resting = locks.release_all(each, "the reconcile pass").await;
        resting.into_iter().nth(1).flatten()
    }
}

/// A token that stops the work a lock covers: at its deadline (90 % of `at_most`), when the
/// lock turns out to be lost, or when `until` is (shutdown, tenant removed). Cancel it when the
/// work is done.
fn work_stop(
    until: &CancellationToken,
    acquired: Option<&Acquired>,
    at_most: Duration,
    tenant: &str,
) -> CancellationToken {
    let stop = until.child_token();
    let lost = match acquired {
        Some(Acquired::Held(g)) => g.lost(),
        _ => CancellationToken::new(),
    };
    let deadline = crate::lock::work_deadline(at_most);
    let (token, tenant) = (stop.clone(), tenant.to_string());
    tokio::spawn(async move {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = lost.cancelled() => {}
            _ = tokio::time::sleep(deadline) => tracing::warn!(
                tenant = %tenant,
                "the pass reached its deadline ({} ms, 90 % of lock_at_most_for): no further change starts",
                deadline.as_millis()
            ),
        }
        token.cancel();
    });
    stop
}

/// Applies `changes` as a tenant's loop or its HTTP API does: the target's engine tuning, no new
/// change started once `stop` is cancelled (shutdown, deadline), a log line and a metric per
/// outcome.
async fn apply_changes(
    engine: &mut Engine,
    changes: &[Change],
    obs: &crate::engine::Observation,
    tenant: &str,
    shared: &Shared,
    stop: &CancellationToken,
) -> Result<crate::apply::ApplyReport, String> {
    let tuning = engine.config.engine().clone();
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = {
        let cancel = Arc::clone(&cancel);
        let token = stop.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            cancel.store(true, Ordering::SeqCst);
        })
    };
    let options = ApplyOptions {
        concurrency: tuning.concurrency,
        max_attempts: tuning.max_attempts,
        retry_base: Duration::from_millis(tuning.retry_base_ms),
        cancel,
    };
    let report = engine
        .apply(changes, obs, &options, &|o| {
            let line = match &o.status {
                Status::Done => format!("{} {}: done", o.address, o.action.as_str()),
                Status::Failed(e) => {
                    format!("{} {}: FAILED: {e}", o.address, o.action.as_str())
                }
                Status::NotAttempted(why) => {
                    format!("{} {}: not attempted: {why}", o.address, o.action.as_str())
                }
            };
            tracing::info!(tenant = %tenant, "{}", crate::redact::redact(&line));
        })
        .await
        .map_err(|e| e.to_string());
    stop.abort();
    let report = report?;
    for o in &report.outcomes {
        let result = match &o.status {
            Status::Done => "ok",
            Status::Failed(_) => "failed",
            Status::NotAttempted(_) => "not_attempted",
        };
        shared
            .metrics
            .changes
            .get_or_create(&ChangeLabels {
                tenant: tenant.to_string(),
                action: o.action.as_str().to_string(),
                result: result.to_string(),
            })
            .inc();
    }
    Ok(report)
}

/// Runs a tenant's loop until `stop` (shutdown, tenant removed), restarting it with backoff
/// whenever it dies (a panic): the tenant is unready and its jobs are stopped while it is down.
async fn supervise(
    target: Target,
    handle: Arc<TenantHandle>,
    ctx: LoopContext,
    stop: CancellationToken,
    files: Arc<Notify>,
    files_watched: bool,
) {
    let LoopContext {
        shared,
        interval_override,
        passes,
    } = ctx;
    let id = handle.id.clone();
    let mut backoff = RESTART_MIN;
    loop {
        let config = target
            .load_config()
            .unwrap_or_else(|_| handle.view().config);
        let life = stop.child_token();
        let tenant_loop = TenantLoop {
            id: id.clone(),
            target: target.clone(),
            shared: Arc::clone(&shared),
            stop: stop.clone(),
            files: Arc::clone(&files),
            passes_gate: Arc::clone(&passes),
            handle: Arc::clone(&handle),
            engine: Engine::new(config.clone()),
            locks: lock_mode(&config),
            config,
            manifest: None,
            interval_override,
            declared_connectors: Default::default(),
            reconcile_now: Default::default(),
            jobs_stop: CancellationToken::new(),
            jobs_digest: String::new(),
            life: life.clone(),
            planned_deletes: None,
            loaded: None,
            files_watched,
            files_checked: Instant::now(),
            resting_turn: None,
            unchanged: None,
        };
        let started = Instant::now();
        let run = Box::new(tenant_loop).run();
        tracing::trace!(tenant = %id, "tenant loop future: {} bytes", std::mem::size_of_val(&run));
        let ended = tokio::spawn(run).await;
        life.cancel();
        let Err(died) = ended else { return };
        if stop.is_cancelled() || !died.is_panic() {
            return;
        }
        let cause = died.into_panic();
        let cause = cause
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| cause.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        if started.elapsed() > RESTART_MAX {
            backoff = RESTART_MIN;
        }
        if let Some(status) = shared.tenants.write().await.get_mut(&id) {
            status.ready = false;
            status.loop_restarts += 1;
        }
        shared
            .metrics
            .loop_restarts
            .get_or_create(&TenantLabels { tenant: id.clone() })
            .inc();
        shared.metrics.error(&id, "loop_died");
        tracing::error!(tenant = %id, "the tenant loop died ({}); restarting it in {backoff:?}", crate::redact::redact(&cause));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RESTART_MAX);
    }
}

fn tenant_id(config: &TargetConfig, dir: &Path) -> String {
    config
        .tenant()
        .unwrap_or_else(|_| dir.display().to_string())
}

/// A tenant loop this process runs.
struct Running {
    id: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    route: Option<files::RouteId>,
}

/// The tenants of this process: started from `-f` and `--tenants-dir`, stopped when their
/// folder leaves the tenants folder.
struct Fleet {
    ctx: LoopContext,
    router: Option<files::FileRouter>,
    /// By manifest folder.
    running: BTreeMap<PathBuf, Running>,
    /// Subfolders of `--tenants-dir` that could not start, with why (logged once per reason)
    /// and the route that rescans when they change.
    refused: BTreeMap<PathBuf, (String, Option<files::RouteId>)>,
    rescan: Arc<Notify>,
}

impl Fleet {
    /// Starts a tenant's loop; refuses a tenant id that already runs.
    async fn start(&mut self, target: Target, config: TargetConfig) -> Result<(), WatchError> {
        let shared = &self.ctx.shared;
        let id = tenant_id(&config, &target.dir);
        if shared.handles.read().await.contains_key(&id) {
            return Err(WatchError::DuplicateTenant(id));
        }
        let api = config.api()?;
        if api.allow_unauthenticated {
            tracing::warn!(tenant = %id, "[api] allow_unauthenticated = true: anyone who reaches the API port may write this tenant's tools and release version; keep the port behind a NetworkPolicy");
        } else if api.tokens.is_empty() {
            tracing::warn!(tenant = %id, "no [api] token configured: /v1/* answers 403 for this tenant (set `[api] token = \"${{env:OFCTL_API_TOKEN}}\"`)");
        }
        shared.tenants.write().await.insert(
            id.clone(),
            TenantStatus {
                manifest_dir: target.dir.clone(),
                ..Default::default()
            },
        );
        let handle = Arc::new(TenantHandle {
            id: id.clone(),
            view: std::sync::RwLock::new(TenantView {
                manifest_dir: target.dir.clone(),
                manifest: None,
                locks: lock_mode(&config),
                engine: Engine::new(config.clone()),
                config,
            }),
            gate: Default::default(),
        });
        shared
            .handles
            .write()
            .await
            .insert(id.clone(), Arc::clone(&handle));
        let files = Arc::new(Notify::new());
        let route = self.router.as_ref().and_then(|router| {
            router
                .add(
                    Some((&target.dir, true)),
                    Some(&target.config_path()),
                    Arc::clone(&files),
                )
                .map_err(|e| tracing::error!(tenant = %id, "file watching is off for this tenant (passes still run on the interval): {e}"))
                .ok()
        });
        let stop = shared.shutdown.child_token();
        let dir = target.dir.clone();
        let task = tokio::spawn(supervise(
            target,
            handle,
            self.ctx.clone(),
            stop.clone(),
            files,
            route.is_some(),
        ));
        self.running.insert(
            dir,
            Running {
                id,
                stop,
                task,
                route,
            },
        );
        Ok(())
    }

    /// Stops a tenant's loop (a pass in progress starts no further change and releases its
    /// lock) and forgets it: status, readiness, API handle, metrics, file route.
    async fn stop(&mut self, dir: &Path) {
        let Some(running) = self.running.remove(dir) else {
            return;
        };
        running.stop.cancel();
        let _ = running.task.await;
        let shared = &self.ctx.shared;
        shared.tenants.write().await.remove(&running.id);
        shared.handles.write().await.remove(&running.id);
        shared.metrics.forget_tenant(&running.id);
        if let (Some(router), Some(route)) = (&self.router, running.route) {
            router.remove(route);
        }
        tracing::info!(tenant = %running.id, "tenant removed: its folder {} is gone", dir.display());
    }

    /// Starts the subfolders of `root` that do not run yet and stops the tenants whose folder
    /// is gone. A subfolder whose config does not load (or whose tenant id is taken) is
    /// retried at the next rescan; changes inside it trigger one.
    async fn scan(&mut self, root: &Path) -> Result<(), WatchError> {
        let listing = std::fs::read_dir(root).map_err(|cause| WatchError::TenantsDir {
            dir: root.to_path_buf(),
            cause,
        })?;
        let mut present = BTreeSet::new();
        for entry in listing.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            present.insert(entry.path());
        }
        let gone: Vec<PathBuf> = self
            .running
            .keys()
            .filter(|d| d.starts_with(root) && !present.contains(*d))
            .cloned()
            .collect();
        for dir in gone {
            self.stop(&dir).await;
        }
        let refused_gone: Vec<PathBuf> = self
            .refused
            .keys()
            .filter(|d| !present.contains(*d))
            .cloned()
            .collect();
        for dir in refused_gone {
            self.forget_refused(&dir);
        }
        for dir in present {
            if self.running.contains_key(&dir) {
                continue;
            }
            let target = Target {
                dir: dir.clone(),
                config: None,
            };
            // Without its own config a folder is not a tenant yet (it may be being copied in).
            if !target.config_path().is_file() {
                self.refuse(dir, "it has no ofctl.toml yet".into());
                continue;
            }
            let started = match target.load_config() {
                Ok(config) => self.start(target, config).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match started {
                Ok(()) => {
                    self.forget_refused(&dir);
                    tracing::info!("tenant folder {} started", dir.display());
                }
                Err(e) => self.refuse(dir, e),
            }
        }
        Ok(())
    }

    /// Waits for every loop to end (after shutdown).
    async fn stop_all(&mut self) {
        for (_, running) in std::mem::take(&mut self.running) {
            running.stop.cancel();
            let _ = running.task.await;
        }
    }

    fn refuse(&mut self, dir: PathBuf, why: String) {
        if self.refused.get(&dir).is_some_and(|(w, _)| *w == why) {
            return;
        }
        tracing::error!(
            "tenant folder {} not started (retried when it changes): {}",
            dir.display(),
            crate::redact::redact(&why)
        );
        let route = match self.refused.remove(&dir) {
            Some((_, route)) => route,
            None => self.router.as_ref().and_then(|router| {
                router
                    .add(Some((&dir, true)), None, Arc::clone(&self.rescan))
                    .ok()
            }),
        };
        self.refused.insert(dir, (why, route));
    }

    fn forget_refused(&mut self, dir: &Path) {
        if let Some((_, Some(route))) = self.refused.remove(dir) {
            if let Some(router) = &self.router {
                router.remove(route);
            }
        }
    }
}

/// The address a listener binds: the flag, else the one address the tenants' configs agree
/// on, else the default.
fn listen_address(
    flag: Option<SocketAddr>,
    configured: &[(String, Option<SocketAddr>)],
    default: &str,
    key: &'static str,
    flag_name: &'static str,
) -> Result<SocketAddr, WatchError> {
    if let Some(addr) = flag {
        return Ok(addr);
    }
    let mut chosen: Option<(&String, SocketAddr)> = None;
    for (tenant, addr) in configured {
        let Some(addr) = addr else { continue };
        match chosen {
            Some((first_tenant, first)) if first != *addr => {
                return Err(WatchError::ListenConflict {
                    key,
                    flag: flag_name,
                    found: format!("{first} in {first_tenant}, {addr} in {tenant}"),
                })
            }
            _ => chosen = Some((tenant, *addr)),
        }
    }
    Ok(chosen.map_or_else(|| default.parse().expect("valid default"), |(_, a)| a))
}

/// Binds the platform API and the management port, at the flags' addresses or those the
/// tenants started so far agree on.
async fn listeners(
    options: &WatchOptions,
    shared: &Shared,
) -> Result<(tokio::net::TcpListener, tokio::net::TcpListener), WatchError> {
    let (mut listens, mut management_listens) = (Vec::new(), Vec::new());
    for (id, handle) in shared.handles.read().await.iter() {
        let api = handle.view().config.api()?;
        listens.push((id.clone(), api.listen));
        management_listens.push((id.clone(), api.management_listen));
    }
    let api_addr = listen_address(options.listen, &listens, DEFAULT_LISTEN, "listen", "listen")?;
    let management_addr = listen_address(
        options.management_listen,
        &management_listens,
        DEFAULT_MANAGEMENT_LISTEN,
        "management_listen",
        "management-listen",
    )?;
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|cause| WatchError::Listen { addr, cause })
    };
    let api = bind(api_addr).await?;
    let management = bind(management_addr).await?;
    tracing::info!(target: SERVE_TARGET, "platform API on http://{api_addr}/v1, management on http://{management_addr}/management/v1/health");
    Ok((api, management))
}

/// Runs until `shared.shutdown` is cancelled: the tenant loops and both HTTP listeners.
pub async fn run(options: WatchOptions, shared: Arc<Shared>) -> Result<(), WatchError> {
    let router = files::FileRouter::new()
        .map_err(|e| {
            tracing::error!("file watching is off (passes still run on the interval): {e}")
        })
        .ok();
    let rescan = Arc::new(Notify::new());
    let mut fleet = Fleet {
        ctx: LoopContext {
            shared: Arc::clone(&shared),
            interval_override: options.interval,
            // No slot until both listeners are bound: tenants start first, since their configs
            // may choose the addresses, but none runs a pass or a job before then, so a port
            // already taken ends the process before anything was read or changed (and a
            // thousand tenants' outgoing connections cannot take a port meant for a listener).
            passes: Arc::new(Semaphore::new(0)),
        },
        router,
        running: BTreeMap::new(),
        refused: BTreeMap::new(),
        rescan: Arc::clone(&rescan),
    };
    for target in &options.targets {
        let config = target.load_config()?;
        if let Err(e) = fleet.start(target.clone(), config).await {
            shared.shutdown.cancel();
            fleet.stop_all().await;
            return Err(e);
        }
    }
    let root_route = match (&options.tenants_dir, &fleet.router) {
        (Some(root), Some(router)) => router
            .add(Some((root, false)), None, Arc::clone(&rescan))
            .map_err(|e| tracing::error!("new tenant folders are noticed every {RESCAN_EVERY:?} only: cannot watch {}: {e}", root.display()))
            .ok(),
        _ => None,
    };
    if let Some(root) = &options.tenants_dir {
        if let Err(e) = fleet.scan(root).await {
            shared.shutdown.cancel();
            fleet.stop_all().await;
            return Err(e);
        }
    }
    let (api, management) = match listeners(&options, &shared).await {
        Ok(bound) => bound,
        Err(e) => {
            shared.shutdown.cancel();
            fleet.stop_all().await;
            return Err(e);
        }
    };
    fleet.ctx.passes.add_permits(MAX_CONCURRENT_PASSES);
    let api_server = tokio::spawn(http::serve(
        api,
        http::api_router(Arc::clone(&shared)),
        Arc::clone(&shared),
    ));
    let management_server = tokio::spawn(http::serve(
        management,
        http::management_router(Arc::clone(&shared)),
        Arc::clone(&shared),
    ));
    if let Some(root) = &options.tenants_dir {
        loop {
            tokio::select! {
                _ = shared.shutdown.cancelled() => break,
                _ = rescan.notified() => {
                    // Wait for the burst (a folder copied in) to end.
                    loop {
                        tokio::select! {
                            _ = shared.shutdown.cancelled() => break,
                            _ = tokio::time::sleep(RESCAN_DEBOUNCE) => break,
                            _ = rescan.notified() => {}
                        }
                    }
                }
                _ = tokio::time::sleep(RESCAN_EVERY) => {}
            }
            if shared.shutdown.is_cancelled() {
                break;
            }
            if let Err(e) = fleet.scan(root).await {
                tracing::error!("{e}");
            }
        }
    }
    if let (Some(router), Some(route)) = (&fleet.router, root_route) {
        router.remove(route);
    }
    let _ = tokio::join!(api_server, management_server);
    fleet.stop_all().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_changes_with_any_file_of_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target {
            dir: dir.path().to_path_buf(),
            config: None,
        };
        std::fs::write(dir.path().join("ofctl.toml"), "tenant = \"a\"\n").unwrap();
        std::fs::create_dir(dir.path().join("nats")).unwrap();
        std::fs::write(dir.path().join("nats/s.yaml"), "one").unwrap();
        let first = Fingerprint::of(&target).unwrap();
        assert!(Fingerprint::of(&target) == Some(Fingerprint(first.0.clone())));

        // Same size, later time (filesystems keep at least 10 ms of mtime resolution).
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(dir.path().join("nats/s.yaml"), "two").unwrap();
        let rewritten = Fingerprint::of(&target).unwrap();
        assert!(rewritten != first);

        std::fs::write(dir.path().join("nats/t.yaml"), "two").unwrap();
        let added = Fingerprint::of(&target).unwrap();
        assert!(added != rewritten);

        std::fs::write(dir.path().join("ofctl.toml"), "tenant = \"bb\"\n").unwrap();
        assert!(Fingerprint::of(&target).unwrap() != added);

        std::fs::remove_file(dir.path().join("ofctl.toml")).unwrap();
        assert!(
            Fingerprint::of(&target).is_none(),
            "a missing config always reloads"
        );
    }
}
