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
use crate::provider::{OpAction, Operation, Provider, ProviderError};
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

/// One operation with retries. An error is marked `unanswered` when any attempt went
/// unanswered, not only the last: that attempt may have made the change.
async fn run_op(
    provider: &Arc<dyn Provider>,
    op: Operation<'_>,
    options: &ApplyOptions,
    attempts: &AtomicUsize,
) -> Result<(), ProviderError> {
    let unanswered = AtomicBool::new(false);
    (|| async {
        attempts.fetch_add(1, Ordering::Relaxed);
        let result = provider.apply(op).await;
        if result.as_ref().is_err_and(|e| e.unanswered) {
            unanswered.store(true, Ordering::Relaxed);
        }
        result
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
    .map_err(|mut e| {
        e.unanswered |= unanswered.load(Ordering::Relaxed);
        e
    })
}

/// Carries out one change; a replace is a delete followed by a create. The error says whether
/// its last cause was transient (the system kept failing through every retry).
async fn run_change(
    w: &Work,
    options: &ApplyOptions,
    attempts: &AtomicUsize,
) -> Result<(), (String, bool)> {
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
            let unknown = if e.unanswered {
                " (an attempt got no answer: the change may or may not have been made)"
            } else {
                ""
            };
            return Err((format!("{e}{unknown}{done}"), e.transient));
        }
    }
    Ok(())
}

/// What became of a change that was started.
enum Ran {
    Done,
    Failed(String),
    /// Its system had stopped answering before its turn came.
    Skipped(String),
}

/// Per system, the first change that failed through every retry for a transient cause. Once a
/// system has failed like that it is down for this apply: the changes still waiting for it are
/// not started (a dead server would otherwise cost every one of them all its attempts, minutes
/// before the report), and a re-run picks them up.
type Failing = Arc<std::sync::Mutex<BTreeMap<System, Address>>>;

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
    let failing: Failing = Arc::default();
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
                let failing = Arc::clone(&failing);
                running.spawn(async move {
                    let _permit = limit.acquire_owned().await;
                    let down = |f: &Failing| {
                        f.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get(&w.system)
                            .cloned()
                    };
                    if let Some(first) = down(&failing) {
                        let why = format!(
                            "{} stopped answering ({first} failed through every retry)",
                            w.system
                        );
                        return (i, Ran::Skipped(why), 0, Duration::ZERO);
                    }
                    let started = Instant::now();
                    let attempts = AtomicUsize::new(0);
                    let ran = match run_change(&w, &options, &attempts).await {
                        Ok(()) => Ran::Done,
                        Err((e, transient)) => {
                            if transient {
                                failing
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .entry(w.system)
                                    .or_insert_with(|| w.change.address.clone());
                            }
                            Ran::Failed(e)
                        }
                    };
                    (i, ran, attempts.load(Ordering::Relaxed), started.elapsed())
                });
            }
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (i, ran, attempts, elapsed) = match joined {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("apply task panicked: {e}");
                continue;
            }
        };
        state[i] = State::Finished(matches!(ran, Ran::Done));
        let o = Outcome {
            address: work[i].change.address.clone(),
            action: work[i].change.action,
            status: match ran {
                Ran::Done => Status::Done,
                Ran::Failed(e) => Status::Failed(e),
                Ran::Skipped(why) => Status::NotAttempted(why),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{ReadScope, RequestCount};
    use crate::resource::Observed;
    use async_trait::async_trait;
    use serde_json::json;

    /// A provider whose every write fails (transiently or not), or succeeds.
    struct Fake {
        system: System,
        fails: Option<bool>,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Provider for Fake {
        fn system(&self) -> System {
            self.system
        }

        async fn read(&self, _: &str, _: ReadScope<'_>) -> Result<Vec<Observed>, ProviderError> {
            Ok(Vec::new())
        }

        async fn apply(&self, _: Operation<'_>) -> Result<(), ProviderError> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            match self.fails {
                // The first write goes out and its answer is lost; then the server is gone.
                Some(true) if call == 0 => Err(ProviderError::unanswered("timed out")),
                Some(true) => Err(ProviderError::transient("connection refused")),
                Some(false) => Err(ProviderError::permanent("400 bad config")),
                None => Ok(()),
            }
        }

        fn requests(&self) -> RequestCount {
            RequestCount::default()
        }
    }

    fn fake(system: System, fails: Option<bool>) -> Arc<Fake> {
        Arc::new(Fake {
            system,
            fails,
            calls: AtomicUsize::new(0),
        })
    }

    fn work(provider: &Arc<Fake>, n: usize) -> Vec<Work> {
        (0..n)
            .map(|i| Work {
                change: crate::plan::prune_change(
                    Address::new("NatsStream", format!("{:?}{i}", provider.system)),
                    Some(crate::json::digest(&json!({}))),
                    Vec::new(),
                ),
                system: provider.system,
                provider: Arc::clone(provider) as Arc<dyn Provider>,
                desired: None,
                live: Some(json!({})),
            })
            .collect()
    }

    fn options() -> ApplyOptions {
        ApplyOptions {
            concurrency: 2,
            max_attempts: 2,
            retry_base: Duration::from_millis(1),
            ..ApplyOptions::default()
        }
    }

    #[tokio::test]
    async fn a_system_failing_through_every_retry_gets_no_new_changes() {
        let (down, up) = (fake(System::Nats, Some(true)), fake(System::Pinot, None));
        let mut all = work(&down, 6);
        all.extend(work(&up, 2));
        let report = execute(all, &options(), &|_| {}).await;
        assert_eq!(report.count(|s| matches!(s, Status::Failed(_))), 2);
        assert_eq!(
            report.count(|s| *s == Status::Done),
            2,
            "other systems go on"
        );
        let skipped: Vec<&Outcome> = report
            .outcomes
            .iter()
            .filter(|o| matches!(o.status, Status::NotAttempted(_)))
            .collect();
        assert_eq!(skipped.len(), 4);
        for o in skipped {
            assert_eq!(o.attempts, 0);
            assert!(
                matches!(&o.status, Status::NotAttempted(why) if why.starts_with("nats stopped answering (NatsStream/Nats")),
                "{o:?}"
            );
        }
        assert_eq!(
            down.calls.load(Ordering::SeqCst),
            4,
            "2 changes × 2 attempts"
        );
        // Only the change whose first attempt went unanswered may have been made.
        let unknown: Vec<bool> = report
            .outcomes
            .iter()
            .filter_map(|o| match &o.status {
                Status::Failed(e) => Some(e.contains("may or may not have been made")),
                _ => None,
            })
            .collect();
        assert_eq!(unknown.iter().filter(|u| **u).count(), 1, "{report:?}");
    }

    #[tokio::test]
    async fn permanent_failures_do_not_stop_the_others() {
        let refused = fake(System::Nats, Some(false));
        let report = execute(work(&refused, 5), &options(), &|_| {}).await;
        assert_eq!(report.count(|s| matches!(s, Status::Failed(_))), 5);
        assert_eq!(refused.calls.load(Ordering::SeqCst), 5, "not retried");
    }
}
