//! The platform's scheduled jobs, run by `ofctl watch` per tenant. Each run takes the job's
//! Redis lock (the platform's ShedLock names), so several replicas run each job once.
//!
//! Ticks are aligned to multiples of the interval since the Unix epoch: every replica wakes at
//! the same instant, exactly one wins the lock, and the lock outlives the contention window.
//! With free-running timers two replicas out of phase would each find the lock expired and
//! run the job twice per interval.

pub mod api_key_stats;
pub mod connector_health;
pub mod publish_fallback;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::config::JobTiming;
use crate::lock::Locks;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JobError(pub String);

#[async_trait]
pub trait Job: Send + Sync {
    /// The lock name, compatible with the platform's (e.g. `debeziumHealthCheck`).
    fn lock_name(&self) -> &'static str;

    /// One run; returns a one-line summary for the log.
    async fn run(&self) -> Result<String, JobError>;
}

/// Time until the next multiple of `interval` since the epoch.
fn until_next_tick(interval: Duration) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let period = interval.as_nanos().max(1);
    let into = now.as_nanos() % period;
    Duration::from_nanos((period - into) as u64)
}

/// Runs `job` on its schedule until `stop` (shutdown, or a new target config); a run in
/// progress finishes and releases its lock.
pub async fn schedule(
    job: Arc<dyn Job>,
    timing: JobTiming,
    tenant: String,
    locks: Option<Locks>,
    metrics: Arc<Metrics>,
    stop: tokio_util::sync::CancellationToken,
) {
    // Held at least half an interval at most, so the winner's lock never blocks its own next
    // tick, and at least the configured time so peers waking late still see it.
    let at_least = timing.lock_at_least_for.min(timing.interval / 2);
    let name = job.lock_name();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(until_next_tick(timing.interval)) => {}
        }
        let guard = match &locks {
            Some(l) => match l.try_acquire(name, timing.lock_at_most_for, at_least).await {
                Ok(Some(g)) => Some(g),
                Ok(None) => {
                    metrics.job_run(&tenant, name, "skipped");
                    continue;
                }
                Err(e) => {
                    tracing::error!(tenant = %tenant, job = name, "not run: {e}");
                    metrics.job_run(&tenant, name, "error");
                    continue;
                }
            },
            None => None,
        };
        match job.run().await {
            Ok(summary) => {
                tracing::info!(tenant = %tenant, job = name, "{}", crate::redact::redact(&summary));
                metrics.job_run(&tenant, name, "ok");
            }
            Err(e) => {
                tracing::error!(tenant = %tenant, job = name, "{}", crate::redact::redact(&e.0));
                metrics.job_run(&tenant, name, "error");
            }
        }
        if let (Some(l), Some(g)) = (&locks, guard) {
            if let Err(e) = l.release(g).await {
                tracing::warn!(tenant = %tenant, job = name, "releasing lock: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_align_to_the_interval() {
        let interval = Duration::from_secs(60);
        let wait = until_next_tick(interval);
        assert!(wait > Duration::ZERO && wait <= interval);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let at = (now + wait).as_secs_f64() / 60.0;
        assert!((at - at.round()).abs() < 0.01, "{at}");
    }
}
