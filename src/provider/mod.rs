//! The provider API: what every live system's provider implements and shares.
//!
//! A provider reads live objects, normalizes them, and applies one change. Diffing, ordering,
//! retries, redaction and rendering belong to the engine. Providers depend on this module and
//! the pure layers below it, never on each other or on the engine (scripts/check-layers.py).

pub mod http;
pub mod nats_client;
pub mod owner;
pub mod section;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Which live objects a read must return.
#[derive(Debug, Clone, Copy)]
pub struct ReadScope<'a> {
    /// Names the manifest declares.
    pub names: &'a [String],
    /// Also return every other object the provider can see (for `--prune` and export).
    pub all: bool,
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
