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
use crate::lock::{Acquired, LockMode};
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
/// progress finishes (or reaches its deadline) and releases its lock. A tick whose lock cannot
/// be taken does not run: counted `skipped` with the reason, and the next tick asks again.
pub async fn schedule(
    job: Arc<dyn Job>,
    timing: JobTiming,
    tenant: String,
    locks: LockMode,
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
        let acquired = locks.acquire(name, timing.lock_at_most_for, at_least).await;
        if let Some(reason) = acquired.skip_reason() {
            metrics.job_skipped(&tenant, name, reason);
            continue;
        }
        let lost = match &acquired {
            Acquired::Held(g) => g.lost(),
            _ => tokio_util::sync::CancellationToken::new(),
        };
        let limit = crate::lock::work_deadline(timing.lock_at_most_for);
        let outcome = tokio::select! {
            r = tokio::time::timeout(limit, job.run()) => r.map_err(|_| JobError(format!(
                "stopped after {} ms, 90 % of lock_at_most_for; raise [jobs.<name>] lock_at_most_for if runs need longer",
                limit.as_millis()
            ))).and_then(|r| r),
            _ = lost.cancelled() => Err(JobError("stopped: its lock was lost".into())),
        };
        match outcome {
            Ok(summary) => {
                tracing::info!(tenant = %tenant, job = name, "{}", crate::redact::redact(&summary));
                metrics.job_run(&tenant, name, "ok");
            }
            Err(e) => {
                tracing::error!(tenant = %tenant, job = name, "{}", crate::redact::redact(&e.0));
                metrics.job_run(&tenant, name, "error");
            }
        }
        locks.release(acquired, name).await;
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
