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
use std::sync::{Arc, LazyLock};
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

/// A held lock; give it back with [`Locks::release_all`]. While it is held a task renews it (the
/// owner compared first), and [`LockGuard::lost`] fires if it turns out to be someone else's.
pub struct LockGuard {
    pub key: String,
    value: String,
    acquired: Instant,
    at_least: Duration,
    lost: CancellationToken,
    renew: tokio::task::JoinHandle<()>,
    /// Set by [`Locks::release_all`]; a guard dropped without it (a panic, a cancelled future)
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
            if let Err(e) = locks.release_keys(&[(key.clone(), value, remaining)]).await {
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
        match self.acquire_all(&[(name, at_least)], at_most).await {
            Ok(mut each) => each.pop().expect("one lock asked for, one taken"),
            Err(NotAcquired::Busy(_)) => Acquired::Busy,
            Err(NotAcquired::Unavailable(why)) => Acquired::Unavailable(why),
        }
    }

    /// [`LockMode::acquire`] of several locks (name, lockAtLeastFor), all or none, in one round
    /// trip: one `Held` (or `Unlocked`) per name, or why none was taken.
    pub async fn acquire_all(
        &self,
        names: &[(&str, Duration)],
        at_most: Duration,
    ) -> Result<Vec<Acquired>, NotAcquired> {
        match self {
            LockMode::Unlocked => Ok(names.iter().map(|_| Acquired::Unlocked).collect()),
            LockMode::Broken(why) => Err(NotAcquired::Unavailable(why.clone())),
            LockMode::Redis(locks) => match locks.try_acquire_all(names, at_most).await {
                Ok(Ok(guards)) => Ok(guards
                    .into_iter()
                    .map(|g| Acquired::Held(Box::new(g)))
                    .collect()),
                Ok(Err(busy)) => Err(NotAcquired::Busy(busy)),
                Err(e) => Err(NotAcquired::Unavailable(e.to_string())),
            },
        }
    }

    /// Gives back what [`LockMode::acquire`] took; a failure is only logged (the lock then
    /// expires after lockAtMostFor).
    pub async fn release(&self, acquired: Acquired, what: &str) {
        self.release_all(vec![acquired], what).await;
    }

    /// Gives back what [`LockMode::acquire_all`] took, in one round trip; a failure is only
    /// logged. Returns, per lock, whether it stays in Redis for the rest of its lockAtLeastFor,
    /// so its holder can give it up early ([`Resting::give_up`]).
    pub async fn release_all(&self, acquired: Vec<Acquired>, what: &str) -> Vec<Option<Resting>> {
        let LockMode::Redis(locks) = self else {
            return acquired.iter().map(|_| None).collect();
        };
        let mut resting = Vec::new();
        let mut guards = Vec::new();
        for a in acquired {
            let Acquired::Held(guard) = a else {
                resting.push(None);
                continue;
            };
            resting.push((!guard.remaining_at_least().is_zero()).then(|| Resting {
                locks: (**locks).clone(),
                key: guard.key.clone(),
                value: guard.value.clone(),
            }));
            guards.push(*guard);
        }
        match locks.release_all(guards).await {
            Ok(()) => resting,
            Err(e) => {
                tracing::warn!("releasing the lock of {what}: {e}");
                resting.iter().map(|_| None).collect()
            }
        }
    }
}

/// Why [`LockMode::acquire_all`] took none of the locks.
#[derive(Debug)]
pub enum NotAcquired {
    /// The lock at this index is held elsewhere.
    Busy(usize),
    /// The lock service cannot be asked (fail closed).
    Unavailable(String),
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
            .release_keys(&[(self.key.clone(), self.value, Duration::ZERO)])
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

    /// Takes the locks `names` (each with its lockAtLeastFor) all or none, in one round trip:
    /// `Err(i)` when `names[i]` is held elsewhere, and then none is taken. A tenant's keys share
    /// their hash tag, so this works on Redis Cluster too.
    pub async fn try_acquire_all(
        &self,
        names: &[(&str, Duration)],
        at_most: Duration,
    ) -> Result<Result<Vec<LockGuard>, usize>, LockError> {
        let keys: Vec<String> = names
            .iter()
            .map(|(name, _)| format!("{}{name}", self.prefix))
            .collect();
        let value = lock_value(chrono::Utc::now(), &self.host);
        let result = self.set_all_nx(&keys, &value, at_most).await;
        if let Some(busy) = self.observe(result)? {
            return Ok(Err(busy));
        }
        let acquired = Instant::now();
        Ok(Ok(keys
            .into_iter()
            .zip(names)
            .map(|(key, (_, at_least))| {
                let lost = CancellationToken::new();
                let renew = tokio::spawn(renew(
                    self.clone(),
                    key.clone(),
                    value.clone(),
                    at_most,
                    lost.clone(),
                ));
                LockGuard {
                    key,
                    value: value.clone(),
                    acquired,
                    at_least: *at_least,
                    lost,
                    renew,
                    locks: Some(self.clone()),
                }
            })
            .collect()))
    }

    /// `SET NX PX` of every key, all or none: the index of the first key held elsewhere, after
    /// deleting the ones this call set before it.
    async fn set_all_nx(
        &self,
        keys: &[String],
        value: &str,
        at_most: Duration,
    ) -> Result<Option<usize>, LockError> {
        static SET_ALL_NX: LazyLock<Script> = LazyLock::new(|| {
            Script::new(
                r"for i, key in ipairs(KEYS) do
                    if not redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
                      for j = 1, i - 1 do redis.call('DEL', KEYS[j]) end
                      return i
                    end
                  end
                  return 0",
            )
        });
        let mut invocation = SET_ALL_NX.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation
            .arg(value)
            .arg(lease(at_most).as_millis().max(1) as u64);
        let mut conn = self.connection().await?;
        let busy: usize = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(busy.checked_sub(1))
    }

    /// Extends the lock to `ttl` from now if it still holds `value`; `false` if it is not ours
    /// any more.
    async fn extend(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, LockError> {
        static EXTEND: LazyLock<Script> = LazyLock::new(|| {
            Script::new(
                r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
                  return redis.call('PEXPIRE', KEYS[1], ARGV[2])",
            )
        });
        let mut conn = self.connection().await?;
        let extended: i64 = EXTEND
            .key(key)
            .arg(value)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(extended == 1)
    }

    /// Gives back `guards` in one round trip (see [`Locks::release_keys`]).
    pub async fn release_all(&self, guards: Vec<LockGuard>) -> Result<(), LockError> {
        let held: Vec<(String, String, Duration)> = guards
            .into_iter()
            .map(|mut guard| {
                guard.renew.abort();
                guard.locks = None;
                let remaining = guard.remaining_at_least();
                (
                    std::mem::take(&mut guard.key),
                    std::mem::take(&mut guard.value),
                    remaining,
                )
            })
            .collect();
        self.release_keys(&held).await
    }

    /// For each `(key, value, remaining)`: deletes `key` if it still holds `value`, or shortens
    /// it to `remaining` (what is left of lockAtLeastFor); a key holding another value (a peer
    /// took it after ours expired) is left alone.
    async fn release_keys(&self, held: &[(String, String, Duration)]) -> Result<(), LockError> {
        static RELEASE: LazyLock<Script> = LazyLock::new(|| {
            Script::new(
                r"for i, key in ipairs(KEYS) do
                    local value, rest = ARGV[2 * i - 1], tonumber(ARGV[2 * i])
                    if redis.call('GET', key) == value then
                      if rest > 0 then
                        redis.call('SET', key, value, 'XX', 'PX', rest)
                      else
                        redis.call('DEL', key)
                      end
                    end
                  end
                  return 0",
            )
        });
        if held.is_empty() {
            return Ok(());
        }
        let mut invocation = RELEASE.prepare_invoke();
        for (key, value, remaining) in held {
            invocation
                .key(key)
                .arg(value)
                .arg(remaining.as_millis() as u64);
        }
        let mut conn = self.connection().await?;
        let _: i64 = invocation
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
