//! The provider API: what every live system's provider implements and shares.
//!
//! A provider reads live objects, normalizes them, and applies one change. Diffing, ordering,
//! retries, redaction and rendering belong to the engine. Providers depend on this module and
//! the pure layers below it, never on each other or on the engine (scripts/check-layers.py).

pub mod http;
pub mod nats_client;
pub mod owner;
pub mod section;

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::kind::{Finding, System};
use crate::resource::{Address, Observed};

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    /// Worth retrying: the target was unreachable, overloaded or rebalancing.
    pub transient: bool,
    /// A write reached the target but no answer came back (timeout, connection lost): the
    /// change may have been made. Always transient; the apply report says so.
    pub unanswered: bool,
    pub message: String,
}

impl ProviderError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            transient: true,
            unanswered: false,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            transient: false,
            unanswered: false,
            message: message.into(),
        }
    }

    /// A write sent without an answer coming back.
    pub fn unanswered(message: impl Into<String>) -> Self {
        Self {
            transient: true,
            unanswered: true,
            message: message.into(),
        }
    }
}

/// One answer of a live system, as it was sent: the status and the body's bytes.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: bytes::Bytes,
}

impl Answer {
    /// The body as JSON: `null` when empty, a JSON string of the text when it is not JSON.
    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
        }
    }
}

/// The answers of one kind's fetch, by request (e.g. `GET /connectors/x`).
pub type Answers = BTreeMap<String, Answer>;

/// What [`Provider::fetch`] got for one kind.
#[derive(Debug)]
pub enum Fetched {
    /// Read and normalized at once.
    Observed(Vec<Observed>),
    /// The answers as sent, which [`Provider::observe`] turns into observed objects. Equal
    /// answers observe the same, so a watch pass whose answers equal those of the last pass
    /// that planned no change stops before parsing and normalizing them. Only for answers that
    /// stay the same while the objects do: Pinot's configs and Connect's connectors, not NATS's
    /// stream info, whose message counts change with every message (its normalized specs do
    /// not, so NATS returns observed objects and keeps the shortcut).
    Answers(Answers),
}

impl Fetched {
    /// The observed objects, normalized from the answers where the provider fetched answers.
    pub fn into_observed(
        self,
        provider: &dyn Provider,
        kind: &str,
        names: &[String],
        all: bool,
    ) -> Result<Vec<Observed>, ProviderError> {
        match self {
            Fetched::Observed(observed) => Ok(observed),
            Fetched::Answers(answers) => provider.observe(kind, names, all, &answers),
        }
    }
}

/// Which live objects a read must return.
#[derive(Debug, Clone, Copy)]
pub struct ReadScope<'a> {
    /// Names the manifest declares.
    pub names: &'a [String],
    /// Also return every other object the provider can see (for `--prune` and export).
    pub all: bool,
    /// The observation this read belongs to (see [`ReadPass`]).
    pub pass: &'a ReadPass,
}

type FetchedOnce = tokio::sync::OnceCell<Arc<dyn Any + Send + Sync>>;

/// What the reads of one observation share. A provider whose kinds read the same live data
/// (Mongo's release version looks at the client configuration and the agents, which are kinds
/// of their own) fetches it once per observation instead of once per kind. A pass lives only
/// as long as one observation, so a later observation sees every write made since; a read
/// that must see the system as it is now (a check before a write) uses a fresh one.
#[derive(Default)]
pub struct ReadPass {
    fetched: std::sync::Mutex<BTreeMap<(TypeId, String), Arc<FetchedOnce>>>,
}

impl std::fmt::Debug for ReadPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadPass").finish_non_exhaustive()
    }
}

impl ReadPass {
    /// What `fetch` returns for `key`, fetched once in this pass: concurrent callers wait for
    /// the first one's answer; an error is not kept (the next caller, or a retry, fetches again).
    /// `key` names the data within the provider's system, e.g. `mongo/integrated_tools`.
    pub async fn once<T, E, Fut>(&self, key: &str, fetch: impl FnOnce() -> Fut) -> Result<Arc<T>, E>
    where
        T: Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let cell = Arc::clone(
            self.fetched
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry((TypeId::of::<T>(), key.to_string()))
                .or_default(),
        );
        let value = cell
            .get_or_try_init(|| async {
                let fetched: Arc<dyn Any + Send + Sync> = Arc::new(fetch().await?);
                Ok(fetched)
            })
            .await?;
        Ok(Arc::clone(value)
            .downcast::<T>()
            .unwrap_or_else(|_| unreachable!("entries are keyed by their type")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpAction {
    Create,
    Update,
    Delete,
}

/// One change for a provider to make.
#[derive(Debug, Clone, Copy)]
pub struct Operation<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub action: OpAction,
    /// Normalized desired spec (create, update).
    pub desired: Option<&'a Value>,
    /// Normalized live spec (update, delete).
    pub live: Option<&'a Value>,
    /// Send the target's force flag for a change it would otherwise reject.
    pub force: bool,
}

/// Requests sent to a live system, for figures and for the no-op-plan-sends-no-writes rule.
#[derive(Debug, Default)]
pub struct RequestCounter {
    reads: AtomicU64,
    writes: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct RequestCount {
    pub reads: u64,
    pub writes: u64,
}

impl RequestCounter {
    pub fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RequestCount {
        RequestCount {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    fn system(&self) -> System;

    /// Live objects of `kind`, normalized so that an unchanged manifest compares equal.
    async fn read(&self, kind: &str, scope: ReadScope<'_>) -> Result<Vec<Observed>, ProviderError>;

    /// What [`Provider::read`] returns, or the answers it would normalize (see [`Fetched`]):
    /// a provider whose normalizing costs more than its requests returns answers, and
    /// implements [`Provider::observe`] and its `read` as `fetch` then `observe`.
    async fn fetch(&self, kind: &str, scope: ReadScope<'_>) -> Result<Fetched, ProviderError> {
        Ok(Fetched::Observed(self.read(kind, scope).await?))
    }

    /// The live objects of `kind` in `answers`, which [`Provider::fetch`] returned for the
    /// same names and `all`: normalized exactly as `read` would have.
    fn observe(
        &self,
        kind: &str,
        _names: &[String],
        _all: bool,
        _answers: &Answers,
    ) -> Result<Vec<Observed>, ProviderError> {
        Err(ProviderError::permanent(format!(
            "{}: {kind} is read, not fetched as answers",
            self.system()
        )))
    }

    /// The desired spec in the same normalized form as `read` returns (server defaults filled).
    fn normalize_desired(&self, _kind: &str, _name: &str, spec: &Value) -> Result<Value, String> {
        Ok(spec.clone())
    }

    /// Applies the platform's rules that keep live values the manifest does not decide (e.g. a
    /// release agent keeps its stored version), with a note for the plan per rule applied.
    fn merge_live(&self, _kind: &str, desired: &Value, _live: &Value) -> (Value, Vec<String>) {
        (desired.clone(), Vec::new())
    }

    /// Verdicts that depend on the values themselves (e.g. a Pinot column removed).
    fn findings(&self, _kind: &str, _desired: &Value, _live: &Value) -> Vec<Finding> {
        Vec::new()
    }

    /// Objects that a live object of `kind` outside the manifest still uses, so `--prune`
    /// leaves them alone (e.g. the connectors of a tool registered through the HTTP API).
    fn retains(&self, _kind: &str, _live: &Value) -> Vec<Address> {
        Vec::new()
    }

    /// Other resources this one needs to exist first (e.g. a table's schema).
    fn dependencies(&self, _kind: &str, _name: &str, _spec: &Value) -> Vec<Address> {
        Vec::new()
    }

    async fn apply(&self, op: Operation<'_>) -> Result<(), ProviderError>;

    fn requests(&self) -> RequestCount;
}

/// Request counts per system, for reports.
pub type RequestReport = BTreeMap<System, RequestCount>;

#[cfg(test)]
mod tests {
    use super::ReadPass;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_pass_fetches_each_key_once_and_keeps_no_error() {
        let pass = ReadPass::default();
        let fetches = AtomicUsize::new(0);
        let fetch = |n: u32| {
            let fetches = &fetches;
            move || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok::<_, String>(n)
            }
        };
        // Concurrent callers of one key share the first fetch.
        let (a, b) = tokio::join!(pass.once("k", fetch(1)), pass.once("k", fetch(2)));
        assert_eq!((*a.unwrap(), *b.unwrap()), (1, 1));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Another key, or another type under the same key, is fetched on its own.
        assert_eq!(*pass.once("j", fetch(3)).await.unwrap(), 3);
        let text = pass
            .once("k", || async { Ok::<_, String>("text".to_string()) })
            .await
            .unwrap();
        assert_eq!(*text, "text");
        // A failed fetch is not kept: the next caller fetches again.
        let failed = pass
            .once::<u32, _, _>("e", || async { Err("down".to_string()) })
            .await;
        assert_eq!(failed.unwrap_err(), "down");
        assert_eq!(*pass.once("e", fetch(4)).await.unwrap(), 4);
        // A new pass sees new data.
        assert_eq!(*ReadPass::default().once("k", fetch(5)).await.unwrap(), 5);
    }
}
