//! Executing a plan: dependency order, bounded concurrency per system, retries with backoff,
//! and an honest account of what was done, what failed and what was never attempted.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::kind::System;
use crate::plan::{Action, Change};
use crate::providers::{OpAction, Operation, Provider, ProviderError};
use crate::resource::Address;

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Concurrent changes per live system.
    pub concurrency: usize,
    /// Attempts per operation, counting the first.
    pub max_attempts: usize,
    pub retry_base: Duration,
    /// Set to stop starting new changes (SIGINT, SIGTERM); running ones finish.
    pub cancel: Arc<AtomicBool>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            max_attempts: 5,
            retry_base: Duration::from_millis(200),
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// One planned change with what is needed to carry it out.
pub struct Work {
    pub change: Change,
    pub system: System,
    pub provider: Arc<dyn Provider>,
    pub desired: Option<Value>,
    pub live: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum Status {
    Done,
    Failed(String),
    NotAttempted(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub address: Address,
    pub action: Action,
    #[serde(flatten)]
    pub status: Status,
    pub attempts: usize,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    pub outcomes: Vec<Outcome>,
}

impl ApplyReport {
    pub fn count(&self, pred: impl Fn(&Status) -> bool) -> usize {
        self.outcomes.iter().filter(|o| pred(&o.status)).count()
    }

    pub fn succeeded(&self) -> bool {
        self.outcomes.iter().all(|o| o.status == Status::Done)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Running,
    Finished(bool),
}

/// Edges: `waits_for[i]` lists the work items that must succeed before item `i` starts.
fn dependency_edges(work: &[Work]) -> Vec<Vec<usize>> {
    let index: HashMap<&Address, usize> = work
        .iter()
        .enumerate()
        .map(|(i, w)| (&w.change.address, i))
        .collect();
    work.iter()
        .map(|w| {
            if w.change.action == Action::Delete {
                // Deletes run in reverse: a dependency goes after everything that needs it.
                work.iter()
                    .enumerate()
                    .filter(|(_, other)| {
                        other.change.action == Action::Delete
                            && other.change.depends_on.contains(&w.change.address)
                    })
                    .map(|(i, _)| i)
                    .collect()
            } else {
                w.change
                    .depends_on
                    .iter()
                    .filter_map(|a| index.get(a).copied())
                    .filter(|&i| work[i].change.action != Action::Delete)
                    .collect()
            }
        })
        .collect()
}

/// The retry schedule for transient failures, for writes and reads alike (`[engine]`
/// `retry_base_ms` and `max_attempts`, the first attempt included).
pub fn backoff(retry_base: Duration, max_attempts: usize) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(retry_base)
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(max_attempts.saturating_sub(1))
        .with_jitter()
}

async fn run_op(
    provider: &Arc<dyn Provider>,
    op: Operation<'_>,
    options: &ApplyOptions,
    attempts: &AtomicUsize,
) -> Result<(), ProviderError> {
    (|| async {
        attempts.fetch_add(1, Ordering::Relaxed);
        provider.apply(op).await
    })
    .retry(backoff(options.retry_base, options.max_attempts))
    .when(|e: &ProviderError| e.transient)
    .notify(|e, after| {
        tracing::warn!(
            target: "ofctl::apply",
            "{} {}/{}: {e}; retrying in {after:?}",
            match op.action {
                OpAction::Create => "create",
                OpAction::Update => "update",
                OpAction::Delete => "delete",
            },
            op.kind,
            op.name
        )
    })
    .await
}

/// Carries out one change; a replace is a delete followed by a create.
async fn run_change(
    w: &Work,
    options: &ApplyOptions,
    attempts: &AtomicUsize,
) -> Result<(), String> {
    let c = &w.change;
    let op = |action| Operation {
        kind: &c.address.kind,
        name: &c.address.name,
        action,
        desired: w.desired.as_ref(),
        live: w.live.as_ref(),
        force: c.force,
    };
    let steps: &[OpAction] = match c.action {
        Action::Create => &[OpAction::Create],
        Action::Update => &[OpAction::Update],
        Action::Delete => &[OpAction::Delete],
        Action::Replace => &[OpAction::Delete, OpAction::Create],
        Action::Noop => &[],
    };
    for (i, step) in steps.iter().enumerate() {
        if let Err(e) = run_op(&w.provider, op(*step), options, attempts).await {
            let done = if i > 0 {
                " (it was deleted but not recreated; re-run apply to create it)"
            } else {
                ""
            };
            return Err(format!("{e}{done}"));
        }
    }
    Ok(())
}

/// Runs the work in dependency order and reports every item's fate.
pub async fn execute(
    work: Vec<Work>,
    options: &ApplyOptions,
    on_outcome: &(dyn Fn(&Outcome) + Send + Sync),
) -> ApplyReport {
    let edges = dependency_edges(&work);
    let work: Vec<Arc<Work>> = work.into_iter().map(Arc::new).collect();
    let mut state = vec![State::Pending; work.len()];
    let mut outcomes: Vec<Option<Outcome>> = vec![None; work.len()];
    let mut limits: BTreeMap<System, Arc<Semaphore>> = BTreeMap::new();
    let mut running = JoinSet::new();

    loop {
        let cancelled = options.cancel.load(Ordering::SeqCst);
        for i in 0..work.len() {
            if state[i] != State::Pending {
                continue;
            }
            let blocker = edges[i]
                .iter()
                .find(|&&d| matches!(state[d], State::Finished(false)));
            let skip_reason = if cancelled {
                Some("interrupted before it started".to_string())
            } else {
                blocker.map(|&d| {
                    format!(
                        "depends on {}, which did not succeed",
                        work[d].change.address
                    )
                })
            };
            if let Some(reason) = skip_reason {
                state[i] = State::Finished(false);
                let o = Outcome {
                    address: work[i].change.address.clone(),
                    action: work[i].change.action,
                    status: Status::NotAttempted(reason),
                    attempts: 0,
                    elapsed_ms: 0,
                };
                on_outcome(&o);
                outcomes[i] = Some(o);
                continue;
            }
            if edges[i].iter().all(|&d| state[d] == State::Finished(true)) {
                state[i] = State::Running;
                let w = Arc::clone(&work[i]);
                let limit = Arc::clone(
                    limits
                        .entry(w.system)
                        .or_insert_with(|| Arc::new(Semaphore::new(options.concurrency.max(1)))),
                );
                let options = options.clone();
                running.spawn(async move {
                    let _permit = limit.acquire_owned().await;
                    let started = Instant::now();
                    let attempts = AtomicUsize::new(0);
                    let result = run_change(&w, &options, &attempts).await;
                    (
                        i,
                        result,
                        attempts.load(Ordering::Relaxed),
                        started.elapsed(),
                    )
                });
            }
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (i, result, attempts, elapsed) = match joined {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("apply task panicked: {e}");
                continue;
            }
        };
        state[i] = State::Finished(result.is_ok());
        let o = Outcome {
            address: work[i].change.address.clone(),
            action: work[i].change.action,
            status: match result {
                Ok(()) => Status::Done,
                Err(e) => Status::Failed(e),
            },
            attempts,
            elapsed_ms: elapsed.as_millis() as u64,
        };
        on_outcome(&o);
        outcomes[i] = Some(o);
    }
    for (i, slot) in outcomes.iter_mut().enumerate() {
        if slot.is_none() {
            *slot = Some(Outcome {
                address: work[i].change.address.clone(),
                action: work[i].change.action,
                status: Status::NotAttempted("part of a dependency cycle".into()),
                attempts: 0,
                elapsed_ms: 0,
            });
        }
    }
    ApplyReport {
        outcomes: outcomes.into_iter().flatten().collect(),
    }
}
