//! The one-way flow: manifest + live state → plan → apply. The CLI and watch mode both drive
//! this; neither has diff or apply logic of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use backon::Retryable;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::apply::{self, ApplyOptions, ApplyReport, Outcome, Work};
use crate::config::{ConfigError, TargetConfig};
use crate::kind::System;
use crate::manifest::Manifest;
use crate::plan::{self, Action, Change, Declared, Plan, PlanOptions, Summary, FORMAT_VERSION};
use crate::provider::{Fetched, Provider, ProviderError, ReadPass, ReadScope, RequestReport};
use crate::resource::{Address, Observed, Resource, Span};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    // Not named `source`: thiserror would make it the error's cause as well, and the CLI's
    // `{:#}` would then print the provider's message twice.
    #[error("cannot read {kind} from {system}: {error}")]
    Read {
        kind: String,
        system: System,
        error: ProviderError,
    },
    #[error("{span}: {address}: {message}")]
    Desired {
        address: Address,
        span: Span,
        message: String,
    },
    #[error("{0}")]
    StalePlan(String),
    #[error(transparent)]
    Target(#[from] plan::target::UnknownTarget),
}

/// Desired and live state side by side, everything a plan is computed from.
pub struct Observation {
    pub manifest: Manifest,
    /// Normalized desired specs.
    pub desired: BTreeMap<Address, Value>,
    /// Normalized live objects of every kind read.
    pub live: BTreeMap<Address, Observed>,
    /// Edges from explicit `dependsOn` and from provider rules, restricted to known objects.
    pub depends_on: BTreeMap<Address, Vec<Address>>,
    /// Notes from [`Provider::merge_live`] and [`Observed::notes`], shown with each change.
    pub notes: BTreeMap<Address, Vec<String>>,
}

/// One kind's read: what its provider observed.
struct KindRead {
    kind: &'static str,
    provider: Arc<dyn Provider>,
    observed: Vec<Observed>,
}

/// One kind's fetch: the objects its provider observed, or the answers it got for them.
struct KindFetch {
    kind: &'static str,
    provider: Arc<dyn Provider>,
    names: Vec<String>,
    all: bool,
    fetched: Fetched,
}

impl KindFetch {
    /// The kind's observed objects, normalized from its answers if it fetched answers.
    fn observe(self) -> Result<KindRead, EngineError> {
        let KindFetch {
            kind,
            provider,
            names,
            all,
            fetched,
        } = self;
        let observed = fetched
            .into_observed(provider.as_ref(), kind, &names, all)
            .map_err(|error| EngineError::Read {
                kind: kind.to_string(),
                system: provider.system(),
                error,
            })?;
        Ok(KindRead {
            kind,
            provider,
            observed,
        })
    }
}

fn joined_fetch(
    joined: Result<Result<KindFetch, EngineError>, tokio::task::JoinError>,
) -> Result<KindFetch, EngineError> {
    match joined {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Live state as [`Engine::read_live`] fetched it: every kind's objects or answers, in a
/// fixed order, not yet normalized where they are answers.
pub struct LiveState {
    kinds: Vec<KindFetch>,
}

impl LiveState {
    /// Feeds everything fetched to `digester`: each observed object (kind, name, spec,
    /// ownership, notes) and each answer (request, status, body as sent). Two fetches that feed
    /// the same are the same live state: a provider observes equal answers alike.
    pub fn digest_into(&self, digester: &mut crate::json::Digester) {
        for read in &self.kinds {
            digester.text(read.kind);
            match &read.fetched {
                Fetched::Observed(observed) => {
                    for o in observed {
                        digester.text(&o.name);
                        digester.value(&o.spec);
                        digester.text(if o.managed { "managed" } else { "unmanaged" });
                        for note in &o.notes {
                            digester.text(note);
                        }
                        digester.text("");
                    }
                }
                Fetched::Answers(answers) => {
                    for (request, answer) in answers {
                        digester.text(request);
                        digester.text(&answer.status.to_string());
                        digester.bytes(&answer.body);
                    }
                }
            }
        }
    }
}

/// An observation being put together: the desired specs, and the live objects as reads come in.
struct Compared {
    desired: BTreeMap<Address, Value>,
    live: BTreeMap<Address, Observed>,
    depends_on: BTreeMap<Address, Vec<Address>>,
    notes: BTreeMap<Address, Vec<String>>,
}

impl Compared {
    fn new(desired: BTreeMap<Address, Value>) -> Self {
        Self {
            desired,
            live: BTreeMap::new(),
            depends_on: BTreeMap::new(),
            notes: BTreeMap::new(),
        }
    }

    /// A kind's live objects: a declared one's desired spec takes what the platform's rules
    /// keep from it ([`Provider::merge_live`]); another's dependencies are noted for prune order.
    fn add(&mut self, read: KindRead) {
        let KindRead {
            kind,
            provider,
            observed,
        } = read;
        for o in observed {
            let address = Address::new(kind, o.name.clone());
            // Live values are not registered as secrets: API callers and anyone with access
            // to a system write them, and the registry masks text everywhere. Live secrets
            // (Connect returns passwords in clear, apis.md §2.7) are masked by their keys,
            // and where a server echoes them inline (`password=...`).
            match self.desired.get_mut(&address) {
                Some(spec) => {
                    let (merged, mut n) = provider.merge_live(kind, spec, &o.spec);
                    *spec = merged;
                    n.extend(o.notes.iter().cloned());
                    if !n.is_empty() {
                        self.notes.insert(address.clone(), n);
                    }
                }
                None => {
                    let deps = provider.dependencies(kind, &o.name, &o.spec);
                    self.depends_on.insert(address.clone(), deps);
                }
            }
            self.live.insert(address, o);
        }
    }
}

/// Makes the provider of a system from the target config: [`crate::registry::build`], or a
/// test double.
pub type ProviderBuilder =
    Arc<dyn Fn(System, &TargetConfig) -> Result<Arc<dyn Provider>, ConfigError> + Send + Sync>;

/// Runs the flow for one target config. Cloning is cheap and shares the providers, so their
/// connections: watch mode keeps one engine per tenant across passes, and its API requests
/// use clones of it instead of connecting anew.
#[derive(Clone)]
pub struct Engine {
    pub config: TargetConfig,
    build: ProviderBuilder,
    providers: Arc<std::sync::Mutex<BTreeMap<System, Arc<dyn Provider>>>>,
    /// Digest of the stored tools whose secrets [`Engine::stored_tool_connectors`] registered
    /// last.
    registered_tools: Arc<std::sync::Mutex<Option<String>>>,
}

impl Engine {
    pub fn new(config: TargetConfig) -> Self {
        Self::with_builder(config, Arc::new(crate::registry::build))
    }

    /// An engine whose providers come from `build` (tests inject doubles here).
    pub fn with_builder(config: TargetConfig, build: ProviderBuilder) -> Self {
        Self {
            config,
            build,
            providers: Default::default(),
            registered_tools: Default::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, BTreeMap<System, Arc<dyn Provider>>> {
        self.providers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The provider for `system`, connecting lazily from the target config.
    fn provider(&mut self, system: System) -> Result<Arc<dyn Provider>, EngineError> {
        let mut cache = self.cache();
        if let Some(p) = cache.get(&system) {
            return Ok(Arc::clone(p));
        }
        let p = (self.build)(system, &self.config)?;
        cache.insert(system, Arc::clone(&p));
        Ok(p)
    }

    /// The provider of a resource's kind (the kind was validated when the manifest loaded).
    fn provider_of(&mut self, kind: &str) -> Result<Arc<dyn Provider>, EngineError> {
        let info = crate::registry::kind_info(kind).expect("validated kind");
        self.provider(info.system)
    }

    pub fn requests(&self) -> RequestReport {
        self.cache()
            .iter()
            .map(|(s, p)| (*s, p.requests()))
            .collect()
    }

    /// Reads live state for every kind the manifest uses (and, with `prune`, every kind of
    /// the systems the target config names) and normalizes both sides.
    pub async fn observe(
        &mut self,
        manifest: Manifest,
        prune: bool,
    ) -> Result<Observation, EngineError> {
        let pass = Arc::new(ReadPass::default());
        let declared: Vec<&Address> = manifest.resources.iter().map(|r| &r.address).collect();
        // The desired specs are normalized, and each kind's live objects processed, while the
        // slower reads are still in flight.
        let mut reads = self.start_reads(&pass, &declared, prune).await?;
        let mut compared = Compared::new(self.normalize_all(&manifest)?);
        // In the order reads finish; an error ends the observation (dropping the set aborts the
        // other reads).
        while let Some(joined) = reads.join_next().await {
            compared.add(joined_fetch(joined)?.observe()?);
        }
        self.finish(manifest, compared)
    }

    /// The live half of an observation: reads every kind of `declared` (and, with `prune`,
    /// every kind of the systems the target config names), without the manifest's specs.
    /// [`Engine::compare`] turns it into the [`Observation`] `observe` would have made.
    pub async fn read_live(
        &mut self,
        pass: &Arc<ReadPass>,
        declared: &[&Address],
        prune: bool,
    ) -> Result<LiveState, EngineError> {
        let mut reads = self.start_reads(pass, declared, prune).await?;
        let mut kinds = Vec::new();
        while let Some(joined) = reads.join_next().await {
            kinds.push(joined_fetch(joined)?);
        }
        // Completion order varies; the digest must not (answers are already keyed by request).
        kinds.sort_by_key(|read| read.kind);
        for read in &mut kinds {
            if let Fetched::Observed(observed) = &mut read.fetched {
                observed.sort_by(|a, b| a.name.cmp(&b.name));
            }
        }
        Ok(LiveState { kinds })
    }

    /// The observation of `manifest` against `live` (read for the same resources).
    pub fn compare(
        &mut self,
        manifest: Manifest,
        live: LiveState,
    ) -> Result<Observation, EngineError> {
        let mut compared = Compared::new(self.normalize_all(&manifest)?);
        for read in live.kinds {
            compared.add(read.observe()?);
        }
        self.finish(manifest, compared)
    }

    /// Starts one read per kind (retried while its errors are transient), each on its own task.
    async fn start_reads(
        &mut self,
        pass: &Arc<ReadPass>,
        declared: &[&Address],
        prune: bool,
    ) -> Result<JoinSet<Result<KindFetch, EngineError>>, EngineError> {
        let mut kinds: BTreeSet<&'static str> = BTreeSet::new();
        for address in declared {
            if let Some(info) = crate::registry::kind_info(&address.kind) {
                kinds.insert(info.kind);
            }
        }
        if prune {
            for info in crate::registry::all_kinds() {
                if crate::registry::endpoint(info.system, &self.config).is_ok() {
                    kinds.insert(info.kind);
                }
            }
        }
        if kinds
            .iter()
            .any(|k| crate::registry::kind_info(k).is_some_and(|i| i.system == System::Tactical))
        {
            self.tactical_from_tool_document(pass).await?;
        }
        let tuning = self.config.engine();
        let (retry_base, max_attempts) = (
            std::time::Duration::from_millis(tuning.retry_base_ms),
            tuning.max_attempts,
        );
        let mut reads = JoinSet::new();
        for &kind in &kinds {
            let info = crate::registry::kind_info(kind).expect("kind comes from the registry");
            let provider = self.provider(info.system)?;
            let names: Vec<String> = declared
                .iter()
                .filter(|a| a.kind == kind)
                .map(|a| a.name.clone())
                .collect();
            let pass = Arc::clone(pass);
            reads.spawn(async move {
                let fetch = || async {
                    provider
                        .fetch(
                            kind,
                            ReadScope {
                                names: &names,
                                all: prune,
                                pass: &pass,
                            },
                        )
                        .await
                };
                let fetched = fetch
                    .retry(apply::backoff(retry_base, max_attempts))
                    .when(|e: &ProviderError| e.transient)
                    .await
                    .map_err(|error| EngineError::Read {
                        kind: kind.to_string(),
                        system: info.system,
                        error,
                    })?;
                Ok::<_, EngineError>(KindFetch {
                    kind,
                    provider,
                    names,
                    all: prune,
                    fetched,
                })
            });
        }
        Ok(reads)
    }

    /// Every resource's desired spec, normalized by its provider.
    fn normalize_all(
        &mut self,
        manifest: &Manifest,
    ) -> Result<BTreeMap<Address, Value>, EngineError> {
        let mut desired = BTreeMap::new();
        for r in &manifest.resources {
            let info = crate::registry::kind_info(&r.address.kind).expect("validated kind");
            let spec = self
                .provider(info.system)?
                .normalize_desired(info.kind, &r.address.name, &r.spec)
                .map_err(|message| EngineError::Desired {
                    address: r.address.clone(),
                    span: r.source.clone(),
                    message,
                })?;
            desired.insert(r.address.clone(), spec);
        }
        Ok(desired)
    }

    /// The observation, once every read is in: the dependencies of the declared resources.
    fn finish(
        &mut self,
        manifest: Manifest,
        compared: Compared,
    ) -> Result<Observation, EngineError> {
        let Compared {
            desired,
            live,
            mut depends_on,
            notes,
        } = compared;
        for r in &manifest.resources {
            let spec = &desired[&r.address];
            let mut deps = r.depends_on.clone();
            let provider = self.provider_of(&r.address.kind)?;
            for d in provider.dependencies(&r.address.kind, &r.address.name, spec) {
                if desired.contains_key(&d) && !deps.contains(&d) {
                    deps.push(d);
                }
            }
            depends_on.insert(r.address.clone(), deps);
        }
        Ok(Observation {
            manifest,
            desired,
            live,
            depends_on,
            notes,
        })
    }

    /// The plan from `obs`, with the digests that let a saved plan be refused when live state
    /// or the manifest changed since (see [`plan::Digests`]).
    pub fn plan(
        &mut self,
        obs: &Observation,
        options: &PlanOptions,
        config_path: Option<PathBuf>,
    ) -> Result<Plan, EngineError> {
        let digests =
            plan::Digests::new(std::env::var_os(PLAN_KEY_ENV).map(|k| k.into_encoded_bytes()));
        self.plan_with(obs, options, config_path, Some(&digests))
    }

    /// The plan from `obs` for a caller that applies it at once from the same observation and
    /// never saves or shows its digests (a watch pass): digesting copies and hashes every
    /// spec, most of a steady-state pass's planning.
    pub fn plan_to_apply_now(
        &mut self,
        obs: &Observation,
        options: &PlanOptions,
    ) -> Result<Plan, EngineError> {
        self.plan_with(obs, options, None, None)
    }

    fn plan_with(
        &mut self,
        obs: &Observation,
        options: &PlanOptions,
        config_path: Option<PathBuf>,
        digests: Option<&plan::Digests>,
    ) -> Result<Plan, EngineError> {
        let mut changes = Vec::new();
        for r in &obs.manifest.resources {
            let info = crate::registry::kind_info(&r.address.kind).expect("validated kind");
            let provider = self.provider(info.system)?;
            let desired = &obs.desired[&r.address];
            let live = obs.live.get(&r.address).map(|o| &o.spec);
            let findings = live
                .map(|l| provider.findings(&r.address.kind, desired, l))
                .unwrap_or_default();
            changes.push(plan::classify(
                Declared {
                    digests,
                    resource: r,
                    info,
                    desired,
                    live,
                    findings,
                    notes: obs.notes.get(&r.address).cloned().unwrap_or_default(),
                    depends_on: obs.depends_on.get(&r.address).cloned().unwrap_or_default(),
                },
                options,
            ));
        }
        if options.prune {
            let mut retained = BTreeSet::new();
            for (address, o) in &obs.live {
                if obs.desired.contains_key(address) {
                    continue;
                }
                if let Some(info) = crate::registry::kind_info(&address.kind) {
                    retained.extend(self.provider(info.system)?.retains(info.kind, &o.spec));
                }
            }
            let mut prunes = Vec::new();
            for (address, o) in &obs.live {
                if o.managed && !obs.desired.contains_key(address) && !retained.contains(address) {
                    let info = crate::registry::kind_info(&address.kind).expect("a live kind");
                    let deps = obs.depends_on.get(address).cloned().unwrap_or_default();
                    let fingerprint = digests.map(|d| d.of(&o.spec, info));
                    prunes.push(plan::prune_change(address.clone(), fingerprint, deps));
                }
            }
            let system_of =
                |a: &Address| crate::registry::kind_info(&a.kind).map(|info| info.system);
            let declared: BTreeSet<System> = obs.desired.keys().filter_map(system_of).collect();
            plan::guard_prunes(
                &mut prunes,
                &|a| {
                    system_of(a)
                        .filter(|s| !declared.contains(s))
                        .map(|s| s.to_string())
                },
                options,
            );
            changes.extend(prunes);
        }
        changes.sort_by(|a, b| a.address.cmp(&b.address));
        if !options.targets.is_empty() {
            changes = plan::target::select(changes, &options.targets, options.prune)?;
        }
        Ok(Plan {
            format_version: FORMAT_VERSION.to_string(),
            created_at: chrono::Utc::now().to_rfc3339(),
            manifest_dir: obs.manifest.dir.clone(),
            config_path,
            options: options.clone(),
            summary: Summary::of(&changes),
            changes,
        })
    }

    /// Applies `changes` (already checked to be current) using the specs in `obs`.
    pub async fn apply(
        &mut self,
        changes: &[Change],
        obs: &Observation,
        options: &ApplyOptions,
        on_outcome: &(dyn Fn(&Outcome) + Send + Sync),
    ) -> Result<ApplyReport, EngineError> {
        let mut work = Vec::new();
        for c in changes.iter().filter(|c| c.action != Action::Noop) {
            let info = crate::registry::kind_info(&c.address.kind).expect("planned kind is known");
            work.push(Work {
                change: c.clone(),
                system: info.system,
                provider: self.provider(info.system)?,
                desired: obs.desired.get(&c.address).cloned(),
                live: obs.live.get(&c.address).map(|o| o.spec.clone()),
            });
        }
        Ok(apply::execute(work, options, on_outcome).await)
    }
}

impl Engine {
    /// `resource`'s spec normalized as [`Engine::observe`] normalizes the manifest's, without
    /// reading anything (e.g. to compare an API request with what the manifest declares).
    pub fn normalize(&mut self, resource: &Resource) -> Result<Value, EngineError> {
        let info = crate::registry::kind_info(&resource.address.kind).ok_or_else(|| {
            EngineError::Desired {
                address: resource.address.clone(),
                span: resource.source.clone(),
                message: format!("unknown kind `{}`", resource.address.kind),
            }
        })?;
        self.provider(info.system)?
            .normalize_desired(info.kind, &resource.address.name, &resource.spec)
            .map_err(|message| EngineError::Desired {
                address: resource.address.clone(),
                span: resource.source.clone(),
                message,
            })
    }

    /// Builds the Tactical RMM provider when `[tactical]` lacks its URL or API key (or has an
    /// empty one) and Mongo is configured: the `tactical-rmm` tool document supplies them, as the
    /// Java service read them. The key is registered as a secret before anything can print it.
    /// Without such a document the provider is built from the config alone, and its error
    /// names the missing key.
    async fn tactical_from_tool_document(&mut self, pass: &ReadPass) -> Result<(), EngineError> {
        use crate::providers::{mongo, tactical};
        let configured = crate::registry::endpoint(System::Tactical, &self.config)
            .is_ok_and(|u| !u.trim().is_empty())
            && matches!(tactical::api_key(&self.config), Ok(Some(k)) if !k.is_empty());
        if configured
            || self.cache().contains_key(&System::Tactical)
            || crate::registry::endpoint(System::Mongo, &self.config).is_err()
        {
            return Ok(());
        }
        let names = [mongo::tools::TACTICAL_TOOL_ID.to_string()];
        let tool = self
            .provider(System::Mongo)?
            .read(
                mongo::TOOL,
                ReadScope {
                    names: &names,
                    all: false,
                    pass,
                },
            )
            .await
            .map_err(|error| EngineError::Read {
                kind: mongo::TOOL.to_string(),
                system: System::Mongo,
                error,
            })?
            .into_iter()
            .find(|o| o.name == names[0]);
        let Some(tool) = tool else {
            return Ok(());
        };
        let (url, key) = mongo::tools::tactical_access(&tool.spec);
        if let Some(key) = &key {
            crate::redact::register(key);
        }
        let provider = crate::registry::build_tactical(&self.config, (url, key))?;
        self.cache().insert(System::Tactical, provider);
        Ok(())
    }

    /// The connectors of every *enabled* IntegratedTool stored live, whoever wrote it (a
    /// register job through the API, the Java service, a manifest), as `KafkaConnector`
    /// resources whose source names the document: the platform expects a connector for each,
    /// whatever declared the tool (openframe.md §5.4). Their secrets are registered for
    /// masking. A document whose connectors are malformed is skipped with a warning.
    /// `pass` is the observation the caller makes next, which reads the same tools.
    pub async fn stored_tool_connectors(
        &mut self,
        pass: &ReadPass,
    ) -> Result<Vec<Resource>, EngineError> {
        use crate::providers::mongo;
        let (Some(tool_info), Some(connector_info)) = (
            crate::registry::kind_info(mongo::TOOL),
            crate::registry::kind_info(mongo::tools::CONNECTOR_KIND),
        ) else {
            return Ok(Vec::new());
        };
        if crate::registry::endpoint(tool_info.system, &self.config).is_err() {
            return Ok(Vec::new());
        }
        let enabled: Vec<(Address, Value)> = self
            .read_all_in(pass, &[mongo::TOOL.to_string()])
            .await?
            .into_iter()
            .filter(|(_, spec)| spec.get("enabled") == Some(&Value::Bool(true)))
            .collect();
        // The registry keeps what it is given for the process's life: tools unchanged since
        // their secrets were registered need not be walked again (most passes).
        let mut digester = crate::json::Digester::default();
        for (address, spec) in &enabled {
            digester.text(&address.name);
            digester.value(spec);
        }
        let digest = digester.finish();
        let mut registered = self
            .registered_tools
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let register = registered.as_deref() != Some(digest.as_str());
        let mut out = Vec::new();
        for (address, spec) in enabled {
            if register {
                crate::redact::register_sensitive(&spec, &|ptr| tool_info.is_sensitive(ptr));
            }
            let tool = Resource {
                source: Span {
                    file: format!("(MongoDB {}/{})", mongo::TOOLS_COLLECTION, address.name).into(),
                    line: 0,
                },
                address,
                labels: Default::default(),
                annotations: Default::default(),
                spec,
                depends_on: Vec::new(),
            };
            match crate::registry::expand(&tool) {
                Ok(connectors) => out.extend(connectors.into_iter().map(|mut c| {
                    if register {
                        crate::redact::register_sensitive(&c.spec, &|ptr| {
                            connector_info.is_sensitive(ptr)
                        });
                    }
                    // The tool is live already: nothing to wait for.
                    c.depends_on.clear();
                    c
                })),
                Err((ptr, message)) => tracing::warn!(
                    "{}: {}: {message}; its connectors are not reconciled",
                    tool.source,
                    crate::path::display(&ptr)
                ),
            }
        }
        *registered = Some(digest);
        Ok(out)
    }

    /// Every live object of `kinds` (all kinds with an endpoint configured when empty),
    /// normalized, for `ofctl export`.
    pub async fn read_all(
        &mut self,
        kinds: &[String],
    ) -> Result<Vec<(Address, Value)>, EngineError> {
        self.read_all_in(&ReadPass::default(), kinds).await
    }

    async fn read_all_in(
        &mut self,
        pass: &ReadPass,
        kinds: &[String],
    ) -> Result<Vec<(Address, Value)>, EngineError> {
        let mut out = Vec::new();
        for info in crate::registry::all_kinds() {
            let wanted = if kinds.is_empty() {
                crate::registry::endpoint(info.system, &self.config).is_ok()
            } else {
                kinds.iter().any(|k| k == info.kind)
            };
            if !wanted {
                continue;
            }
            if info.system == System::Tactical {
                self.tactical_from_tool_document(pass).await?;
            }
            let provider = self.provider(info.system)?;
            let observed = provider
                .read(
                    info.kind,
                    ReadScope {
                        names: &[],
                        all: true,
                        pass,
                    },
                )
                .await
                .map_err(|error| EngineError::Read {
                    kind: info.kind.to_string(),
                    system: info.system,
                    error,
                })?;
            out.extend(
                observed
                    .into_iter()
                    .map(|o| (Address::new(info.kind, o.name), o.spec)),
            );
        }
        Ok(out)
    }
}

/// The environment variable holding the operator's key for plan digests (see
/// [`plan::Digests`]).
pub const PLAN_KEY_ENV: &str = "OFCTL_PLAN_KEY";

/// Compares a saved plan with a fresh one computed from the same manifest and current live
/// state. Any difference means the saved plan no longer describes what apply would do.
pub fn stale_reasons(saved: &Plan, fresh: &Plan) -> Vec<String> {
    let index = |p: &Plan| -> BTreeMap<Address, Change> {
        p.changes
            .iter()
            .map(|c| (c.address.clone(), c.clone()))
            .collect()
    };
    let (old, new) = (index(saved), index(fresh));
    let keyed = |p: &Plan| {
        p.changes.iter().any(|c| {
            [&c.desired_digest, &c.live_fingerprint].iter().any(|d| {
                d.as_deref()
                    .is_some_and(|d| d.starts_with(crate::json::KEYED_PREFIX))
            })
        })
    };
    let (saved_keyed, fresh_keyed) = (keyed(saved), keyed(fresh));
    if saved_keyed != fresh_keyed && !saved.changes.is_empty() && !fresh.changes.is_empty() {
        let (then, now) = if saved_keyed {
            ("set", "is not")
        } else {
            ("not set", "is")
        };
        return vec![format!(
            "the plan was saved with {PLAN_KEY_ENV} {then} and it {now} set now; apply with the same {PLAN_KEY_ENV} as the plan"
        )];
    }
    // A keyed digest also differs under another key.
    let key_hint = if fresh_keyed {
        format!(" (or {PLAN_KEY_ENV} is not the key the plan was saved with)")
    } else {
        String::new()
    };
    let mut reasons = Vec::new();
    for address in old.keys().chain(new.keys()).collect::<BTreeSet<_>>() {
        match (old.get(address), new.get(address)) {
            (Some(o), Some(n)) => {
                if o.live_fingerprint != n.live_fingerprint {
                    reasons.push(format!(
                        "{address}: the live object changed since planning ({} → {}){key_hint}",
                        o.live_fingerprint.as_deref().unwrap_or("absent"),
                        n.live_fingerprint.as_deref().unwrap_or("absent")
                    ));
                } else if o.desired_digest != n.desired_digest {
                    reasons.push(format!(
                        "{address}: the manifest or its variables changed since planning{key_hint}"
                    ));
                } else if o.action != n.action || o.blocked != n.blocked {
                    reasons.push(format!(
                        "{address}: planned as {} but would now be {}",
                        o.action.as_str(),
                        n.action.as_str()
                    ));
                }
            }
            (Some(_), None) => reasons.push(format!("{address}: no longer part of the plan")),
            (None, Some(n)) => reasons.push(format!(
                "{address}: not in the saved plan but now needs {}",
                n.action.as_str()
            )),
            (None, None) => {}
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    //! The engine alone, with an in-memory NATS provider: ordering, retries, refusals and
    //! staleness without a server.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;
    use serde_json::json;

    use super::*;
    use crate::apply::Status;
    use crate::provider::{OpAction, Operation, RequestCount, RequestCounter};
    use crate::resource::Resource;

    const KIND: &str = "NatsStream";

    /// Streams in a map; the first `transient_failures` writes fail as a dropped connection.
    #[derive(Default)]
    struct Streams {
        live: Mutex<BTreeMap<String, Value>>,
        writes: Mutex<Vec<String>>,
        transient_failures: AtomicUsize,
        counter: RequestCounter,
    }

    #[async_trait]
    impl Provider for Streams {
        fn system(&self) -> System {
            System::Nats
        }

        async fn read(
            &self,
            _kind: &str,
            scope: ReadScope<'_>,
        ) -> Result<Vec<Observed>, ProviderError> {
            self.counter.read();
            let live = self.live.lock().unwrap();
            Ok(live
                .iter()
                .filter(|(name, _)| scope.all || scope.names.contains(name))
                .map(|(name, spec)| Observed {
                    name: name.clone(),
                    spec: spec.clone(),
                    managed: true,
                    notes: Vec::new(),
                })
                .collect())
        }

        fn dependencies(&self, _kind: &str, _name: &str, spec: &Value) -> Vec<Address> {
            spec["after"]
                .as_str()
                .map(|n| vec![Address::new(KIND, n)])
                .unwrap_or_default()
        }

        async fn apply(&self, op: Operation<'_>) -> Result<(), ProviderError> {
            self.counter.write();
            let left = self.transient_failures.load(Ordering::SeqCst);
            if left > 0 {
                self.transient_failures.store(left - 1, Ordering::SeqCst);
                return Err(ProviderError::transient("connection reset"));
            }
            let mut live = self.live.lock().unwrap();
            match op.action {
                OpAction::Create | OpAction::Update => {
                    live.insert(op.name.to_string(), op.desired.unwrap().clone());
                }
                OpAction::Delete => {
                    live.remove(op.name);
                }
            }
            self.writes
                .lock()
                .unwrap()
                .push(format!("{:?} {}", op.action, op.name));
            Ok(())
        }

        fn requests(&self) -> RequestCount {
            self.counter.snapshot()
        }
    }

    fn engine(streams: &Arc<Streams>) -> Engine {
        let provider = Arc::clone(streams);
        Engine::with_builder(
            TargetConfig::default(),
            Arc::new(move |_, _| Ok(Arc::clone(&provider) as Arc<dyn Provider>)),
        )
    }

    /// Stored tools' secrets (their own and their connectors') are registered for masking,
    /// and registered again when a tool changes: passes over unchanged tools skip the walk.
    #[tokio::test]
    async fn stored_tools_secrets_are_registered_again_when_a_tool_changes() {
        let tools = Arc::new(Streams::default());
        let tool = |secret: &str| {
            json!({
                "enabled": true,
                "credentials": {"password": secret},
                "debeziumConnectors": [
                    {"name": "c1", "config": {"database.password": format!("{secret}-db")}}
                ]
            })
        };
        let set = |secret: &str| tools.live.lock().unwrap().insert("t1".into(), tool(secret));
        let config = TargetConfig::parse(
            "[mongo]\nuri = \"mongodb://127.0.0.1:1/of\"\n",
            std::path::Path::new("ofctl.toml"),
        )
        .unwrap();
        let provider = Arc::clone(&tools);
        let mut e = Engine::with_builder(
            config,
            Arc::new(move |_, _| Ok(Arc::clone(&provider) as Arc<dyn Provider>)),
        );
        let shown = |text: &str| crate::redact::redact(text).into_owned();
        for secret in ["first-stored-secret-9f3a", "second-stored-secret-77b1"] {
            set(secret);
            for _ in 0..2 {
                let connectors = e
                    .stored_tool_connectors(&ReadPass::default())
                    .await
                    .unwrap();
                assert_eq!(connectors.len(), 1);
            }
            assert_eq!(shown(&format!("a {secret} b")), "a (sensitive) b");
            assert_eq!(shown(&format!("{secret}-db")), "(sensitive)");
        }
    }

    fn manifest(specs: &[(&str, Value)]) -> Manifest {
        Manifest {
            dir: PathBuf::from("m"),
            resources: specs
                .iter()
                .enumerate()
                .map(|(i, (name, spec))| Resource {
                    address: Address::new(KIND, *name),
                    labels: Default::default(),
                    annotations: Default::default(),
                    spec: spec.clone(),
                    depends_on: Vec::new(),
                    source: Span {
                        file: PathBuf::from("m/streams.yaml"),
                        line: 1 + 5 * i,
                    },
                })
                .collect(),
        }
    }

    fn options() -> ApplyOptions {
        ApplyOptions {
            retry_base: std::time::Duration::from_millis(1),
            ..Default::default()
        }
    }

    async fn plan_of(engine: &mut Engine, m: Manifest, o: &PlanOptions) -> (Observation, Plan) {
        let obs = engine.observe(m, o.prune).await.unwrap();
        let plan = engine.plan(&obs, o, None).unwrap();
        (obs, plan)
    }

    #[tokio::test]
    async fn creates_follow_dependencies_and_a_second_plan_is_a_noop() {
        let streams = Arc::new(Streams::default());
        let mut e = engine(&streams);
        let m = || {
            manifest(&[
                ("a", json!({"subjects": ["a"], "after": "b"})),
                ("b", json!({"subjects": ["b"], "after": "c"})),
                ("c", json!({"subjects": ["c"]})),
            ])
        };
        let (obs, plan) = plan_of(&mut e, m(), &PlanOptions::default()).await;
        assert_eq!(plan.summary.create, 3);
        let pending: Vec<Change> = plan.pending().cloned().collect();
        let report = e.apply(&pending, &obs, &options(), &|_| {}).await.unwrap();
        assert!(report.outcomes.iter().all(|o| o.status == Status::Done));
        assert_eq!(
            *streams.writes.lock().unwrap(),
            ["Create c", "Create b", "Create a"]
        );
        let (_, again) = plan_of(&mut e, m(), &PlanOptions::default()).await;
        assert_eq!(again.pending().count(), 0);
        // The engine's clones share its providers: one read per kind and pass, counted once.
        let clone = e.clone();
        assert_eq!(clone.requests(), e.requests());
        assert_eq!(e.requests()[&System::Nats].writes, 3);
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_the_attempts_run_out() {
        let streams = Arc::new(Streams::default());
        streams.transient_failures.store(2, Ordering::SeqCst);
        let mut e = engine(&streams);
        let (obs, plan) = plan_of(
            &mut e,
            manifest(&[("a", json!({"subjects": ["a"]}))]),
            &PlanOptions::default(),
        )
        .await;
        let pending: Vec<Change> = plan.pending().cloned().collect();
        let report = e.apply(&pending, &obs, &options(), &|_| {}).await.unwrap();
        assert_eq!(report.outcomes[0].status, Status::Done);
        assert_eq!(report.outcomes[0].attempts, 3);

        streams.transient_failures.store(100, Ordering::SeqCst);
        let (obs, plan) = plan_of(
            &mut e,
            manifest(&[("b", json!({"subjects": ["b"]}))]),
            &PlanOptions::default(),
        )
        .await;
        let pending: Vec<Change> = plan.pending().cloned().collect();
        let limited = ApplyOptions {
            max_attempts: 4,
            ..options()
        };
        let report = e.apply(&pending, &obs, &limited, &|_| {}).await.unwrap();
        assert!(
            matches!(&report.outcomes[0].status, Status::Failed(m) if m.contains("connection reset"))
        );
        assert_eq!(report.outcomes[0].attempts, 4);
        assert!(!streams.live.lock().unwrap().contains_key("b"));
    }

    #[tokio::test]
    async fn a_replace_is_refused_unless_allowed_and_prune_takes_only_what_left() {
        let streams = Arc::new(Streams::default());
        streams.live.lock().unwrap().extend([
            (
                "a".to_string(),
                json!({"subjects": ["a"], "storage": "file"}),
            ),
            ("gone".to_string(), json!({"subjects": ["g"]})),
        ]);
        let mut e = engine(&streams);
        let m = || manifest(&[("a", json!({"subjects": ["a"], "storage": "memory"}))]);
        let (_, plan) = plan_of(&mut e, m(), &PlanOptions::default()).await;
        let a = &plan.changes[0];
        assert_eq!(a.action, Action::Replace);
        assert!(a.reasons[0].contains("storage type"), "{a:?}");
        assert!(
            a.blocked.as_deref().unwrap().contains("--allow-replace"),
            "{a:?}"
        );
        assert_eq!(plan.changes.len(), 1, "no delete without prune");

        let o = PlanOptions {
            prune: true,
            allow_replace: true,
            allow_empty: true,
            ..Default::default()
        };
        let (_, plan) = plan_of(&mut e, m(), &o).await;
        let actions: Vec<_> = plan
            .changes
            .iter()
            .map(|c| (c.address.name.as_str(), c.action, c.blocked.is_some()))
            .collect();
        assert_eq!(
            actions,
            [
                ("a", Action::Replace, false),
                ("gone", Action::Delete, false)
            ]
        );
    }

    #[tokio::test]
    async fn a_saved_plan_goes_stale_when_live_state_moves() {
        let streams = Arc::new(Streams::default());
        let mut e = engine(&streams);
        let m = || manifest(&[("a", json!({"subjects": ["a"]}))]);
        let (_, saved) = plan_of(&mut e, m(), &PlanOptions::default()).await;
        let (_, fresh) = plan_of(&mut e, m(), &PlanOptions::default()).await;
        assert!(stale_reasons(&saved, &fresh).is_empty());
        streams
            .live
            .lock()
            .unwrap()
            .insert("a".into(), json!({"subjects": ["x"]}));
        let (_, fresh) = plan_of(&mut e, m(), &PlanOptions::default()).await;
        let reasons = stale_reasons(&saved, &fresh);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].contains("NatsStream/a"), "{reasons:?}");
    }
}
