//! Update-publish fallback: agents and the client configuration whose update was written but
//! not announced on NATS get another attempt soon, not only at the next reconcile interval.
//!
//! The repair itself is the engine's: such a document plans as `publish pending`, and applying
//! it publishes once (the Mongo provider's bookkeeping). This job finds pending documents
//! (`publishState.published == false`) and asks the tenant loop for a pass while any has
//! attempts left; past `max_attempts` it says so once per run, loudly, and counts it in
//! metrics instead of retrying silently forever.

use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Database;
use tokio::sync::Notify;

use super::{Job, JobError};
use crate::metrics::Metrics;
use crate::providers::mongo::{
    open_database, publish_retryable, AGENTS_COLLECTION, CLIENT_COLLECTION,
};

pub struct PublishFallback {
    db: Database,
    max_attempts: u32,
    tenant: String,
    metrics: Arc<Metrics>,
    reconcile_now: Arc<Notify>,
}

impl PublishFallback {
    pub async fn new(
        mongo_uri: &str,
        database: Option<String>,
        max_attempts: u32,
        tenant: String,
        metrics: Arc<Metrics>,
        reconcile_now: Arc<Notify>,
    ) -> Result<Self, JobError> {
        let db = open_database(mongo_uri, database)
            .await
            .map_err(|e| JobError(e.message))?;
        Ok(Self {
            db,
            max_attempts,
            tenant,
            metrics,
            reconcile_now,
        })
    }
}

#[async_trait]
impl Job for PublishFallback {
    fn lock_name(&self) -> &'static str {
        "agentVersionUpdatePublishFallback"
    }

    async fn run(&self) -> Result<String, JobError> {
        let (mut retry, mut exhausted) = (Vec::new(), Vec::new());
        for collection in [AGENTS_COLLECTION, CLIENT_COLLECTION] {
            let pending: Vec<Document> = self
                .db
                .collection::<Document>(collection)
                .find(doc! {"publishState.published": false})
                .await
                .map_err(|e| JobError(format!("find in {collection}: {e}")))?
                .try_collect()
                .await
                .map_err(|e| JobError(format!("find in {collection}: {e}")))?;
            for d in pending {
                let id = d.get("_id").map(|v| v.to_string()).unwrap_or_default();
                if publish_retryable(&d, i64::from(self.max_attempts)) {
                    retry.push(id);
                } else {
                    exhausted.push(id);
                }
            }
        }
        if !exhausted.is_empty() {
            tracing::error!(tenant = %self.tenant, "update never published after {} attempts: {}", self.max_attempts, exhausted.join(", "));
            self.metrics.error(&self.tenant, "publish_exhausted");
        }
        if !retry.is_empty() {
            self.reconcile_now.notify_one();
        }
        Ok(format!(
            "{} pending publishes retried, {} out of attempts",
            retry.len(),
            exhausted.len()
        ))
    }
}
