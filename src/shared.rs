//! Connections shared by every provider in the process that reaches the same endpoint.
//!
//! Watch mode runs one engine per tenant, and tenants usually share the platform's NATS,
//! MongoDB and Kafka. One client per endpoint instead of one per tenant keeps a thousand
//! tenants to a handful of connections (and librdkafka's threads, which each client starts,
//! to one set). Entries are weak: a client lives as long as a provider uses it, so a tenant
//! whose config moved to another endpoint does not keep the old connection open.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

type Entries = HashMap<(TypeId, String), Weak<dyn Any + Send + Sync>>;

static ENTRIES: Mutex<Option<Entries>> = Mutex::new(None);

/// The process's one `T` for `key` (an endpoint and whatever else selects a connection),
/// made by `make` when no provider holds one.
pub fn get_or_make<T: Send + Sync + 'static, E>(
    key: &str,
    make: impl FnOnce() -> Result<T, E>,
) -> Result<Arc<T>, E> {
    let mut guard = ENTRIES.lock().unwrap_or_else(|e| e.into_inner());
    let entries = guard.get_or_insert_with(HashMap::new);
    let id = (TypeId::of::<T>(), key.to_string());
    if let Some(live) = entries.get(&id).and_then(Weak::upgrade) {
        if let Ok(shared) = live.downcast::<T>() {
            return Ok(shared);
        }
    }
    entries.retain(|_, weak| weak.strong_count() > 0);
    let made = Arc::new(make()?);
    let erased: Arc<dyn Any + Send + Sync> = made.clone();
    entries.insert(id, Arc::downgrade(&erased));
    Ok(made)
}

/// The process's one `T` for `key`, starting from `T::default()` (an empty connection slot,
/// a flag) when no one holds it.
pub fn default<T: Default + Send + Sync + 'static>(key: &str) -> Arc<T> {
    get_or_make(key, || Ok::<_, std::convert::Infallible>(T::default()))
        .unwrap_or_else(|never| match never {})
}

/// The process's one lazily connected `T` for `key`: every provider holding it shares the
/// first successful connection (a failed attempt leaves it empty for the next one to retry).
pub fn lazy<T: Send + Sync + 'static>(key: &str) -> Arc<tokio::sync::OnceCell<T>> {
    default(key)
}

/// A list read from a system many tenants share (a Kafka cluster's topics, a Tactical RMM's
/// scripts) that every tenant's pass can use for a moment: fetched at most once per `max_age`
/// for all holders, callers arriving during a fetch wait for its answer, and dropped by
/// [`Snapshot::invalidate`] after a write, so a read after a write sees it. Without it, each
/// tenant's pass would read the whole list, which grows with the number of tenants.
pub struct Snapshot<T> {
    slot: tokio::sync::Mutex<Option<(Instant, Arc<T>)>>,
}

impl<T> Default for Snapshot<T> {
    fn default() -> Self {
        Self {
            slot: tokio::sync::Mutex::new(None),
        }
    }
}

impl<T> Snapshot<T> {
    /// The value fetched less than `max_age` ago, or a new one from `fetch` (an error is not
    /// kept: the next caller fetches again).
    pub async fn get<E, Fut>(
        &self,
        max_age: Duration,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<Arc<T>, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((at, value)) = &*slot {
            if at.elapsed() < max_age {
                return Ok(Arc::clone(value));
            }
        }
        let value = Arc::new(fetch().await?);
        *slot = Some((Instant::now(), Arc::clone(&value)));
        Ok(value)
    }

    pub async fn invalidate(&self) {
        *self.slot.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_key_while_someone_holds_it() {
        let made = std::sync::atomic::AtomicUsize::new(0);
        let make = || {
            made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, ()>(String::from("client"))
        };
        let a = get_or_make::<String, ()>("shared-test://a", make).unwrap();
        let b = get_or_make::<String, ()>("shared-test://a", make).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = get_or_make::<String, ()>("shared-test://c", make).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        // Another type under the same key is another entry.
        let n = get_or_make::<u8, ()>("shared-test://a", || Ok(7)).unwrap();
        assert_eq!(*n, 7);
        drop((a, b));
        let again = get_or_make::<String, ()>("shared-test://a", make).unwrap();
        assert_eq!(*again, "client");
        assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_snapshot_is_fetched_once_per_max_age_and_again_after_invalidate() {
        let fetches = std::sync::atomic::AtomicUsize::new(0);
        let fetch =
            || async { Ok::<_, ()>(fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst)) };
        let snapshot = Snapshot::<usize>::default();
        let long = Duration::from_secs(3600);
        assert_eq!(*snapshot.get(long, fetch).await.unwrap(), 0);
        assert_eq!(*snapshot.get(long, fetch).await.unwrap(), 0);
        snapshot.invalidate().await;
        assert_eq!(*snapshot.get(long, fetch).await.unwrap(), 1);
        assert_eq!(*snapshot.get(Duration::ZERO, fetch).await.unwrap(), 2);
        // A failed fetch is its caller's error; the next caller fetches again.
        assert!(snapshot
            .get(Duration::ZERO, || async { Err::<usize, _>(()) })
            .await
            .is_err());
        assert_eq!(*snapshot.get(Duration::ZERO, fetch).await.unwrap(), 3);
    }
}
