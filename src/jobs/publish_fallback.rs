//! Update-publish fallback: agents and the client configuration whose update was written but
//! not announced on NATS get another attempt soon, not only at the next reconcile interval.
//!
//! The repair itself is the engine's: such a document plans as `publish pending`, and applying
//! it publishes once (the Mongo provider's bookkeeping). This job selects what the platform's
//! fallback selected (openframe.md §10): the client configuration and the ENABLED agents whose
//! `publishState` is null (never announced: it marks them pending, as the later platform's
//! initializers did) or pending with attempts left, and asks the tenant loop for a pass; past
//! `max_attempts` it says so once per run, loudly, and counts it in metrics instead of retrying
//! silently forever.

use std::sync::Arc;

use crate::providers::mongo::PlatformDatabase;
use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use tokio::sync::Notify;

use super::{Job, JobError};
use crate::metrics::Metrics;
use crate::providers::mongo::{
    never_published, open_database, pending_state, publish_retry_due, AGENTS_COLLECTION,
    CLIENT_COLLECTION, CLIENT_ID, ENABLED,
};

pub struct PublishFallback {
    db: PlatformDatabase,
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
        let unpublished = doc! {"$or": [{"publishState": null}, {"publishState.published": false}]};
        for (collection, filter) in [
            (CLIENT_COLLECTION, doc! {"_id": CLIENT_ID}),
            (AGENTS_COLLECTION, doc! {"status": ENABLED}),
        ] {
            let mut query = filter;
            query.extend(unpublished.clone());
            let found = |e: mongodb::error::Error| JobError(format!("find in {collection}: {e}"));
            let documents = self.db.collection::<Document>(collection);
            let pending: Vec<Document> = documents
                .find(query)
                .await
                .map_err(found)?
                .try_collect()
                .await
                .map_err(found)?;
            for d in pending {
                let id = d.get("_id").cloned().unwrap_or(mongodb::bson::Bson::Null);
                let shown = id.to_string();
                if never_published(&d) {
                    // Pending from now on, unless another writer got there first.
                    documents
                        .update_one(
                            doc! {"_id": id, "$or": [{"publishState": null}, {"publishState": {"$exists": false}}]},
                            doc! {"$set": {"publishState": pending_state(None)}},
                        )
                        .await
                        .map_err(|e| JobError(format!("update in {collection}: {e}")))?;
                    retry.push(shown);
                } else if publish_retry_due(&d, i64::from(self.max_attempts)) {
                    retry.push(shown);
                } else {
                    exhausted.push(shown);
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
