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
use crate::provider::{Provider, ProviderError, ReadScope, RequestReport};
use crate::resource::{Address, Observed, Span};

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

pub struct Engine {
    pub config: TargetConfig,
    providers: BTreeMap<System, Arc<dyn Provider>>,
}

impl Engine {
    pub fn new(config: TargetConfig) -> Self {
        Self {
            config,
            providers: BTreeMap::new(),
        }
    }

    /// The provider for `system`, connecting lazily from the target config.
    fn provider(&mut self, system: System) -> Result<Arc<dyn Provider>, EngineError> {
        if let Some(p) = self.providers.get(&system) {
            return Ok(Arc::clone(p));
        }
        let p = crate::registry::build(system, &self.config)?;
        self.providers.insert(system, Arc::clone(&p));
        Ok(p)
    }

    pub fn requests(&self) -> RequestReport {
        self.providers
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
        let mut kinds: BTreeSet<&'static str> = BTreeSet::new();
        for r in &manifest.resources {
            if let Some(info) = crate::registry::kind_info(&r.address.kind) {
                kinds.insert(info.kind);
            }
        }
        if prune {
            for info in crate::registry::all_kinds() {
                if self.config.endpoint(info.system).is_ok() {
                    kinds.insert(info.kind);
                }
            }
        }
        let tuning = self.config.engine();
        let (retry_base, max_attempts) = (
            std::time::Duration::from_millis(tuning.retry_base_ms),
            tuning.max_attempts,
        );
        // Every read starts first, on its own task: the desired specs are normalized, and each
        // kind's live objects processed, while the slower reads are still in flight.
        let mut reads = JoinSet::new();
        for &kind in &kinds {
            let info = crate::registry::kind_info(kind).expect("kind comes from the registry");
            let provider = self.provider(info.system)?;
            let names: Vec<String> = manifest
                .resources
                .iter()
                .filter(|r| r.address.kind == kind)
                .map(|r| r.address.name.clone())
                .collect();
            reads.spawn(async move {
                let read = || async {
                    provider
                        .read(
                            kind,
                            ReadScope {
                                names: &names,
                                all: prune,
                            },
                        )
                        .await
                };
                let observed = read
                    .retry(apply::backoff(retry_base, max_attempts))
                    .when(|e: &ProviderError| e.transient)
                    .await
                    .map_err(|error| EngineError::Read {
                        kind: kind.to_string(),
                        system: info.system,
                        error,
                    })?;
                Ok::<_, EngineError>((kind, provider, observed))
            });
        }
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
        let mut live = BTreeMap::new();
        let mut depends_on: BTreeMap<Address, Vec<Address>> = BTreeMap::new();
        let mut notes = BTreeMap::new();
        // In the order reads finish; an error ends the observation (dropping the set aborts the
        // other reads).
        while let Some(joined) = reads.join_next().await {
            let (kind, provider, observed) = match joined {
                Ok(result) => result?,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            for o in observed {
                let address = Address::new(kind, o.name.clone());
                // Live values are not registered as secrets: API callers and anyone with access
                // to a system write them, and the registry masks text everywhere. Live secrets
                // (Connect returns passwords in clear, apis.md §2.7) are masked by their keys,
                // and where a server echoes them inline (`password=...`).
                match desired.get_mut(&address) {
                    Some(spec) => {
                        let (merged, mut n) = provider.merge_live(kind, spec, &o.spec);
                        *spec = merged;
                        n.extend(o.notes.iter().cloned());
                        if !n.is_empty() {
                            notes.insert(address.clone(), n);
                        }
                    }
                    None => {
                        let deps = provider.dependencies(kind, &o.name, &o.spec);
                        depends_on.insert(address.clone(), deps);
                    }
                }
                live.insert(address, o);
            }
        }
        for r in &manifest.resources {
            let spec = &desired[&r.address];
            let mut deps = r.depends_on.clone();
            if let Ok(p) = self.provider(
                crate::registry::kind_info(&r.address.kind)
                    .map(|k| k.system)
                    .unwrap_or(System::Nats),
            ) {
                for d in p.dependencies(&r.address.kind, &r.address.name, spec) {
                    if desired.contains_key(&d) && !deps.contains(&d) {
                        deps.push(d);
                    }
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

    pub fn plan(
        &mut self,
        obs: &Observation,
        options: &PlanOptions,
        config_path: Option<PathBuf>,
    ) -> Result<Plan, EngineError> {
        let mut changes = Vec::new();
        let digests =
            plan::Digests::new(std::env::var_os(PLAN_KEY_ENV).map(|k| k.into_encoded_bytes()));
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
                    digests: &digests,
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
            for (address, o) in &obs.live {
                if o.managed && !obs.desired.contains_key(address) && !retained.contains(address) {
                    let info = crate::registry::kind_info(&address.kind).expect("a live kind");
                    let deps = obs.depends_on.get(address).cloned().unwrap_or_default();
                    let fingerprint = digests.of(&o.spec, info);
                    changes.push(plan::prune_change(address.clone(), fingerprint, deps));
                }
            }
        }
        changes.sort_by(|a, b| a.address.cmp(&b.address));
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
    /// Every live object of `kinds` (all kinds with an endpoint configured when empty),
    /// normalized, for `ofctl export`.
    pub async fn read_all(
        &mut self,
        kinds: &[String],
    ) -> Result<Vec<(Address, Value)>, EngineError> {
        let mut out = Vec::new();
        for info in crate::registry::all_kinds() {
            let wanted = if kinds.is_empty() {
                self.config.endpoint(info.system).is_ok()
            } else {
                kinds.iter().any(|k| k == info.kind)
            };
            if !wanted {
                continue;
            }
            let provider = self.provider(info.system)?;
            let observed = provider
                .read(
                    info.kind,
                    ReadScope {
                        names: &[],
                        all: true,
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
