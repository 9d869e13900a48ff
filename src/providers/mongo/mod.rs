//! Platform state in MongoDB (openframe.md §6–9, §12): integrated tools, tool agents, the
//! client configuration, the cluster release version and the agent registration secret,
//! written exactly as the platform's Spring Data documents (collection, `_id`, field names,
//! `_class`), with update messages published once per real change over NATS JetStream.
//!
//! Rules the platform applied in code are data here: `merge_live` keeps what the manifest
//! does not decide (a release agent's version, the client version) and says so in the plan;
//! the publish bookkeeping (`publishState`) is hidden from the diff except when an update was
//! written but never published, which shows as `publish: pending` until an apply repairs it.
//!
//! Where things are: `kinds` (the kinds as data), `section` (`[mongo]` of the target config),
//! `store` (reads and writes in MongoDB), `document` (documents ⇄ specs), `messages` (what
//! the update messages say), `publisher` (publishing them over NATS, exactly once),
//! `platform` (the platform's rules on values), `read` and `apply` (what each kind reads and
//! writes), `tools` (an integrated tool's connectors), `crypto` (the registration secret).
//! This file wires them into the [`Provider`].

mod apply;
mod crypto;
mod document;
mod kinds;
mod messages;
mod platform;
mod publisher;
mod read;
mod section;
mod store;
pub mod tools;

pub use document::{never_published, publish_attempts, publish_retry_due, ENABLED};
pub use kinds::*;
pub use publisher::pending_state;
pub use section::{database_address, SECTION};
pub use store::{open_database, PlatformDatabase};

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::config::{ConfigError, TargetConfig};
use crate::kind::System;
use crate::provider::{Operation, Provider, ProviderError, ReadScope, RequestCount};
use crate::resource::{Address, Observed, Resource};
use crypto::EncryptionKey;
use publisher::Publisher;
use section::Settings;
use store::Store;

/// How long MongoDB and NATS may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Extra resources a manifest resource stands for: a tool's connectors (see
/// [`tools::connector_resources`]).
pub fn expand(resource: &Resource) -> Result<Vec<Resource>, (String, String)> {
    if resource.address.kind != TOOL {
        return Ok(Vec::new());
    }
    tools::connector_resources(resource)
}

pub struct MongoProvider {
    store: Store,
    publisher: Publisher,
    /// The platform's encryption settings, or why they are unusable (only an error when a
    /// registration secret must be created).
    encryption: Result<EncryptionKey, String>,
    /// Retries of an unpublished update before giving up (`[jobs.publish_fallback]
    /// max_attempts`, the platform's maxPublishAttempts).
    max_publish_attempts: i64,
}

impl MongoProvider {
    /// The provider of `[mongo]`, publishing to `nats_url` (`[nats] url`, which the registry
    /// reads: only a publish fails without it).
    pub fn new(
        config: &TargetConfig,
        nats_url: Result<String, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let settings = Settings::from_config(config)?;
        let nats_url = nats_url.map_err(|e| format!("publishing update messages needs NATS: {e}"));
        Ok(Self {
            store: Store::new(settings.uri, settings.database),
            publisher: Publisher::new(nats_url),
            encryption: settings.encryption,
            max_publish_attempts: i64::from(config.jobs().publish_fallback.max_attempts),
        })
    }
}

#[async_trait]
impl Provider for MongoProvider {
    fn system(&self) -> System {
        System::Mongo
    }

    async fn read(&self, kind: &str, scope: ReadScope<'_>) -> Result<Vec<Observed>, ProviderError> {
        match kind {
            TOOL => self.read_by_id(TOOLS_COLLECTION, scope).await,
            AGENT => self.read_by_id(AGENTS_COLLECTION, scope).await,
            CLIENT => self.read_by_id(CLIENT_COLLECTION, scope).await,
            RELEASE => self.read_release(scope).await,
            SECRET => self.read_secret(scope).await,
            other => Err(ProviderError::permanent(format!(
                "mongo: unknown kind {other}"
            ))),
        }
    }

    fn normalize_desired(&self, kind: &str, name: &str, spec: &Value) -> Result<Value, String> {
        platform::normalize_desired(kind, name, spec)
    }

    fn merge_live(&self, kind: &str, desired: &Value, live: &Value) -> (Value, Vec<String>) {
        platform::merge_live(kind, desired, live)
    }

    fn retains(&self, kind: &str, live: &Value) -> Vec<Address> {
        if kind != TOOL {
            return Vec::new();
        }
        tools::connector_names(live)
            .into_iter()
            .map(|n| Address::new(tools::CONNECTOR_KIND, n))
            .collect()
    }

    fn dependencies(&self, kind: &str, _name: &str, spec: &Value) -> Vec<Address> {
        platform::dependencies(kind, spec)
    }

    async fn apply(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        match op.kind {
            TOOL => self.apply_tool(op).await,
            AGENT => self.apply_agent(op).await,
            CLIENT => self.apply_client(op).await,
            RELEASE => self.apply_release(op).await,
            SECRET => self.apply_secret(op).await,
            other => Err(ProviderError::permanent(format!(
                "mongo: unknown kind {other}"
            ))),
        }
    }

    /// MongoDB's requests and NATS's (publishes and the checks before them), together.
    fn requests(&self) -> RequestCount {
        let (store, publisher) = (self.store.requests(), self.publisher.requests());
        RequestCount {
            reads: store.reads + publisher.reads,
            writes: store.writes + publisher.writes,
        }
    }
}
