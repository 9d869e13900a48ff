//! Redis locks compatible with the platform's ShedLock keys (openframe.md §10), so ofctl
//! replicas (and, during a migration, the Java service) run each job once.
//!
//! Key `of:{<tenant>}:job-lock:<environment>:<name>` (the braces are a literal Redis Cluster
//! hash tag), value exactly as ShedLock writes it, `ADDED:<ISO instant, milliseconds>Z@<host>`,
//! acquired with `SET NX PX` (two thirds of lockAtMostFor, renewed while the work runs, so a
//! dead holder's lock is gone within lockAtMostFor). Release honours lockAtLeastFor: delete if it has
//! passed, otherwise shorten the expiry to what is left of it. Unlike ShedLock, release and
//! renewal only touch the key while it still holds our value, so a replica whose lock expired
//! never deletes or extends the lock a peer took since.
//!
//! Fail closed: with `[redis]` configured, a lock that cannot be taken (Redis down, the URL
//! does not resolve) means the work does not run. The connection is made lazily and remade by
//! itself; an outage is logged once when it starts and once when it ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio_util::sync::CancellationToken;

/// How long one Redis command (or connecting) may take before the lock counts as unavailable.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[error("redis at {url}: {source}")]
pub struct LockError {
    url: String,
    source: redis::RedisError,
}

/// The lock service of one tenant: Redis, connected on first use and reconnected by itself.
#[derive(Clone)]
pub struct Locks {
    /// The process's one multiplexed connection per Redis URL, made on first use: tenants'
    /// locks share it (see [`crate::shared`]).
    conn: Arc<tokio::sync::Mutex<Option<ConnectionManager>>>,
    client: redis::Client,
    prefix: String,
    host: String,
    url: String,
    /// Set while Redis is unreachable, so an outage is logged once, not per attempt or tenant.
    outage: Arc<AtomicBool>,
}

/// A held lock; give it back with [`Locks::release`]. While it is held a task renews it (the
/// owner compared first), and [`LockGuard::lost`] fires if it turns out to be someone else's.
pub struct LockGuard {
    pub key: String,
    value: String,
    acquired: Instant,
    at_least: Duration,
    lost: CancellationToken,
    renew: tokio::task::JoinHandle<()>,
    /// Set by [`Locks::release`]; a guard dropped without it (a panic, a cancelled future)
    /// releases from a task of its own, so no exit path strands the lock.
    locks: Option<Locks>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard").field("key", &self.key).finish()
    }
}

impl LockGuard {
    /// Cancelled when a renewal found the key no longer holds our value (it expired and a peer
    /// took it, or Redis lost it): stop starting work.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.renew.abort();
        let (Some(locks), Ok(runtime)) = (self.locks.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let (key, value) = (self.key.clone(), self.value.clone());
        let remaining = self.remaining_at_least();
        runtime.spawn(async move {
            if let Err(e) = locks.release_key(&key, &value, remaining).await {
                tracing::warn!("releasing lock {key} after its work ended abnormally: {e}");
            }
        });
    }
}

impl LockGuard {
    fn remaining_at_least(&self) -> Duration {
        self.at_least.saturating_sub(self.acquired.elapsed())
    }
}

/// What [`LockMode::acquire`] found.
#[derive(Debug)]
pub enum Acquired {
    /// The lock is ours until released.
    Held(Box<LockGuard>),
    /// No `[redis]`: a single replica runs unlocked.
    Unlocked,
    /// Another replica (or the Java service) holds it: skip this run.
    Busy,
    /// The lock service cannot be asked: skip this run (fail closed). Carries the reason.
    Unavailable(String),
}

impl Acquired {
    /// The metric reason of a skipped run, `None` when the work may run.
    pub fn skip_reason(&self) -> Option<&'static str> {
        match self {
            Acquired::Held(_) | Acquired::Unlocked => None,
            Acquired::Busy => Some("locked_elsewhere"),
            Acquired::Unavailable(_) => Some("lock_unavailable"),
        }
    }
}

/// How a tenant's work is locked, decided from its target config.
#[derive(Clone)]
pub enum LockMode {
    /// No `[redis]` section: one replica, unlocked.
    Unlocked,
    Redis(Box<Locks>),
    /// `[redis]` is configured but unusable (its URL does not resolve or parse): nothing runs.
    Broken(String),
}

impl LockMode {
    /// From a target's `[redis] url` (`None` when the section is absent).
    pub fn new<E: std::fmt::Display>(
        url: Option<Result<String, E>>,
        tenant: &str,
        environment: &str,
    ) -> Self {
        match url {
            None => LockMode::Unlocked,
            Some(Err(e)) => LockMode::Broken(e.to_string()),
            Some(Ok(url)) => match Locks::new(&url, tenant, environment) {
                Ok(l) => LockMode::Redis(Box::new(l)),
                Err(e) => LockMode::Broken(e.to_string()),
            },
        }
    }

    pub async fn acquire(&self, name: &str, at_most: Duration, at_least: Duration) -> Acquired {
        match self {
            LockMode::Unlocked => Acquired::Unlocked,
            LockMode::Broken(why) => Acquired::Unavailable(why.clone()),
            LockMode::Redis(locks) => match locks.try_acquire(name, at_most, at_least).await {
                Ok(Some(g)) => Acquired::Held(Box::new(g)),
                Ok(None) => Acquired::Busy,
                Err(e) => Acquired::Unavailable(e.to_string()),
            },
        }
    }

    /// Gives back what [`LockMode::acquire`] took; a failure is only logged (the lock then
    /// expires after lockAtMostFor).
    pub async fn release(&self, acquired: Acquired, what: &str) {
        self.release_to_rest(acquired, what).await;
    }

    /// [`LockMode::release`], returning the lock when it stays in Redis for the rest of its
    /// lockAtLeastFor, so its holder can give it up early ([`Resting::give_up`]).
    pub async fn release_to_rest(&self, acquired: Acquired, what: &str) -> Option<Resting> {
        let (LockMode::Redis(locks), Acquired::Held(guard)) = (self, acquired) else {
            return None;
        };
        let resting = (!guard.remaining_at_least().is_zero()).then(|| Resting {
            locks: (**locks).clone(),
            key: guard.key.clone(),
            value: guard.value.clone(),
        });
        match locks.release(*guard).await {
            Ok(()) => resting,
            Err(e) => {
                tracing::warn!("releasing the lock of {what}: {e}");
                None
            }
        }
    }
}

/// A released lock resting out its lockAtLeastFor.
pub struct Resting {
    locks: Locks,
    key: String,
    value: String,
}

impl Resting {
    /// Deletes the lock now if it still holds our value (a peer's lock is left alone).
    pub async fn give_up(self) {
        if let Err(e) = self
            .locks
            .release_key(&self.key, &self.value, Duration::ZERO)
            .await
        {
            tracing::warn!("giving up the rest of lock {}: {e}", self.key);
        }
    }
}

/// The part of `lock_at_most_for` a pass or job may use: after it no new change starts (a
/// pass) or the run is stopped (a job), so work never outlives the lock that covers it.
pub fn work_deadline(lock_at_most_for: Duration) -> Duration {
    lock_at_most_for.mul_f64(0.9)
}

pub fn lock_key(tenant: &str, environment: &str, name: &str) -> String {
    format!("of:{{{tenant}}}:job-lock:{environment}:{name}")
}

/// The value ShedLock's RedisLockProvider writes: `ADDED:<instant, 3 fraction digits>Z@<host>`.
pub fn lock_value(now: chrono::DateTime<chrono::Utc>, host: &str) -> String {
    format!(
        "ADDED:{}@{host}",
        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
}

impl Locks {
    /// Parses `url` (`redis://` or `rediss://`); connects on first use.
    pub fn new(url: &str, tenant: &str, environment: &str) -> Result<Self, LockError> {
        let shown = crate::redact::redact(url).into_owned();
        let client = redis::Client::open(url).map_err(|source| LockError {
            url: shown.clone(),
            source,
        })?;
        let key = format!("redis#{url}");
        Ok(Self {
            conn: crate::shared::default(&key),
            client,
            prefix: lock_key(tenant, environment, ""),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            url: shown,
            outage: crate::shared::default(&key),
        })
    }

    fn err(&self, source: redis::RedisError) -> LockError {
        LockError {
            url: self.url.clone(),
            source,
        }
    }

    /// Notes the outcome of a Redis call: logs the start and the end of an outage once each.
    fn observe<T>(&self, result: Result<T, LockError>) -> Result<T, LockError> {
        match &result {
            Ok(_) => {
                if self.outage.swap(false, Ordering::SeqCst) {
                    tracing::info!("lock service back ({}): locked work resumes", self.url);
                }
            }
            Err(e) => {
                if !self.outage.swap(true, Ordering::SeqCst) {
                    tracing::error!(
                        "lock service unavailable, so no pass or job runs until it is back: {e}"
                    );
                }
            }
        }
        result
    }

    async fn connection(&self) -> Result<ConnectionManager, LockError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(|e| self.err(e))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Takes the lock if nobody holds it; `None` means another replica has it (skip this run).
    pub async fn try_acquire(
        &self,
        name: &str,
        at_most: Duration,
        at_least: Duration,
    ) -> Result<Option<LockGuard>, LockError> {
        let result = self.set_nx(name, at_most).await;
        let (key, value) = match self.observe(result)? {
            Some(held) => held,
            None => return Ok(None),
        };
        let lost = CancellationToken::new();
        let renew = tokio::spawn(renew(
            self.clone(),
            key.clone(),
            value.clone(),
            at_most,
            lost.clone(),
        ));
        Ok(Some(LockGuard {
            key,
            value,
            acquired: Instant::now(),
            at_least,
            lost,
            renew,
            locks: Some(self.clone()),
        }))
    }

    async fn set_nx(
        &self,
        name: &str,
        at_most: Duration,
    ) -> Result<Option<(String, String)>, LockError> {
        let key = format!("{}{name}", self.prefix);
        let value = lock_value(chrono::Utc::now(), &self.host);
        let mut conn = self.connection().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .arg("NX")
            .arg("PX")
            .arg(lease(at_most).as_millis().max(1) as u64)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(set.map(|_| (key, value)))
    }

    /// Extends the lock to `ttl` from now if it still holds `value`; `false` if it is not ours
    /// any more.
    async fn extend(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, LockError> {
        let script = Script::new(
            r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
              return redis.call('PEXPIRE', KEYS[1], ARGV[2])",
        );
        let mut conn = self.connection().await?;
        let extended: i64 = script
            .key(key)
            .arg(value)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(extended == 1)
    }

    pub async fn release(&self, mut guard: LockGuard) -> Result<(), LockError> {
        guard.renew.abort();
        guard.locks = None;
        self.release_key(&guard.key, &guard.value, guard.remaining_at_least())
            .await
    }

    /// Deletes `key` if it still holds `value`, or shortens it to `remaining` (lockAtLeastFor).
    async fn release_key(
        &self,
        key: &str,
        value: &str,
        remaining: Duration,
    ) -> Result<(), LockError> {
        let script = Script::new(
            r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
              if tonumber(ARGV[2]) > 0 then
                return redis.call('SET', KEYS[1], ARGV[1], 'XX', 'PX', ARGV[2]) and 1 or 0
              end
              return redis.call('DEL', KEYS[1])",
        );
        let mut conn = self.connection().await?;
        let _: i64 = script
            .key(key)
            .arg(value)
            .arg(remaining.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// How long a held lock lives in Redis from its acquisition or last renewal: two thirds of
/// `lock_at_most_for`, so the lock of a replica that dies expires at most that long after it,
/// and a peer trying every interval (≤ a third of `lock_at_most_for`) takes over within
/// `lock_at_most_for`.
fn lease(at_most: Duration) -> Duration {
    at_most * 2 / 3
}

/// Renews a held lock every quarter of `at_most` (to a full [`lease`] from then) for as long as
/// its work runs; one failed renewal is survived (retried at the next turn, the lock still
/// valid). Finding the key held by someone else cancels `lost`.
async fn renew(
    locks: Locks,
    key: String,
    value: String,
    at_most: Duration,
    lost: CancellationToken,
) {
    let every = (at_most / 4).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        match locks.extend(&key, &value, lease(at_most)).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!("lock {key} is no longer ours: stopping the work it covered");
                lost.cancel();
                return;
            }
            Err(e) => tracing::warn!("renewing lock {key}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_match_the_platform_shedlock_layout() {
        assert_eq!(
            super::lock_key("default", "default", "debeziumHealthCheck"),
            "of:{default}:job-lock:default:debeziumHealthCheck"
        );
    }

    #[tokio::test]
    async fn without_a_usable_lock_service_nothing_may_run() {
        use super::{Acquired, LockMode};
        use std::time::Duration;
        let at = (Duration::from_secs(5), Duration::ZERO);
        // No [redis]: a single replica runs unlocked.
        let none: Option<Result<String, String>> = None;
        let mode = LockMode::new(none, "t", "e");
        assert!(matches!(
            mode.acquire("j", at.0, at.1).await,
            Acquired::Unlocked
        ));
        // [redis] url that does not resolve: never run.
        let mode = LockMode::new(
            Some(Err::<String, _>("`redis.url`: OFCTL_REDIS is not set")),
            "t",
            "e",
        );
        let got = mode.acquire("j", at.0, at.1).await;
        assert_eq!(got.skip_reason(), Some("lock_unavailable"));
        // Redis not listening: never run, and the answer comes within the command timeout.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mode = LockMode::new(
            Some(Ok::<_, String>(format!("redis://127.0.0.1:{port}"))),
            "t",
            "e",
        );
        let started = std::time::Instant::now();
        let got = mode.acquire("j", at.0, at.1).await;
        assert_eq!(got.skip_reason(), Some("lock_unavailable"), "{got:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // rediss:// is understood (TLS through rustls), not refused as unknown.
        let mode = LockMode::new(
            Some(Ok::<_, String>("rediss://redis.example:6380".into())),
            "t",
            "e",
        );
        assert!(matches!(mode, LockMode::Redis(_)));
    }

    #[test]
    fn values_match_shedlock_exactly() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-02-26T15:40:27.123456789Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            super::lock_value(at, "ofctl-0"),
            "ADDED:2026-02-26T15:40:27.123Z@ofctl-0"
        );
    }
}
