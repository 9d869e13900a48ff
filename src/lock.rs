//! Redis locks compatible with the platform's ShedLock keys (openframe.md §10), so ofctl
//! replicas (and, during a migration, the Java service) run each job once.
//!
//! Key `of:{<tenant>}:job-lock:<environment>:<name>` (the braces are a literal Redis Cluster
//! hash tag), value `ADDED:<instant>@<host>`, acquired with `SET NX PX lockAtMostFor`. Release
//! honours lockAtLeastFor: delete if it has passed, otherwise shorten the expiry to what is left
//! of it. Unlike ShedLock, release only touches the key while it still holds our value, so a
//! replica whose lock expired never deletes the lock a peer took since.

use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::Script;

#[derive(Debug, thiserror::Error)]
#[error("redis at {url}: {source}")]
pub struct LockError {
    url: String,
    source: redis::RedisError,
}

#[derive(Clone)]
pub struct Locks {
    conn: ConnectionManager,
    prefix: String,
    holder: String,
    url: String,
}

/// A held lock; give it back with [`Locks::release`].
#[derive(Debug)]
pub struct LockGuard {
    pub key: String,
    value: String,
    acquired: Instant,
    at_least: Duration,
}

pub fn lock_key(tenant: &str, environment: &str, name: &str) -> String {
    format!("of:{{{tenant}}}:job-lock:{environment}:{name}")
}

impl Locks {
    pub async fn connect(url: &str, tenant: &str, environment: &str) -> Result<Self, LockError> {
        let err = |source| LockError {
            url: crate::redact::redact(url).into_owned(),
            source,
        };
        let client = redis::Client::open(url).map_err(err)?;
        let conn = ConnectionManager::new(client).await.map_err(err)?;
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        Ok(Self {
            conn,
            prefix: lock_key(tenant, environment, ""),
            holder: format!("{host}#{}", std::process::id()),
            url: crate::redact::redact(url).into_owned(),
        })
    }

    fn err(&self, source: redis::RedisError) -> LockError {
        LockError {
            url: self.url.clone(),
            source,
        }
    }

    /// Takes the lock if nobody holds it; `None` means another replica has it (skip this run).
    pub async fn try_acquire(
        &self,
        name: &str,
        at_most: Duration,
        at_least: Duration,
    ) -> Result<Option<LockGuard>, LockError> {
        let key = format!("{}{name}", self.prefix);
        let value = format!(
            "ADDED:{}@{}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            self.holder
        );
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .arg("NX")
            .arg("PX")
            .arg(at_most.as_millis().max(1) as u64)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(set.map(|_| LockGuard {
            key,
            value,
            acquired: Instant::now(),
            at_least,
        }))
    }

    pub async fn release(&self, guard: LockGuard) -> Result<(), LockError> {
        let remaining = guard.at_least.saturating_sub(guard.acquired.elapsed());
        let script = Script::new(
            r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
              if tonumber(ARGV[2]) > 0 then
                return redis.call('SET', KEYS[1], ARGV[1], 'XX', 'PX', ARGV[2]) and 1 or 0
              end
              return redis.call('DEL', KEYS[1])",
        );
        let mut conn = self.conn.clone();
        let _: i64 = script
            .key(&guard.key)
            .arg(&guard.value)
            .arg(remaining.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
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
}
