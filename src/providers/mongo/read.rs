//! What each kind reads: its documents (each collection found once per observation), the
//! release version with the followers out of step, whether a registration secret exists.

use mongodb::bson::{doc, Document};
use mongodb::options::FindOptions;
use serde_json::{Map, Value};

use super::document::{self, FOLLOWERS_MARKER};
use super::kinds::{
    AGENT, AGENTS_COLLECTION, CLIENT, CLIENT_COLLECTION, CLIENT_ID, RELEASE_NAME,
    SECRETS_COLLECTION,
};
use super::MongoProvider;
use crate::provider::{ProviderError, ReadScope};
use crate::resource::Observed;

impl MongoProvider {
    pub(super) async fn read_by_id(
        &self,
        collection: &str,
        scope: ReadScope<'_>,
    ) -> Result<Vec<Observed>, ProviderError> {
        Ok(self
            .store
            .find_all(scope.pass, collection)
            .await?
            .iter()
            .filter(|d| {
                scope.all
                    || document::id_string(d).is_some_and(|id| scope.names.contains(&id))
            })
            .filter_map(|d| {
                let gave_up = document::publish_pending(d)
                    && !document::publish_retryable(d, self.max_publish_attempts);
                Some(Observed {
                    name: document::id_string(d)?,
                    spec: document::live_spec(d, self.max_publish_attempts),
                    // Platform documents carry no ownership marker ofctl could add without
                    // changing them, so nothing here is ever pruned.
                    managed: false,
                    notes: gave_up
                        .then(|| {
                            format!(
                                "its update message was never published: gave up after {} retries ([jobs.publish_fallback] max_attempts); its next change publishes again",
                                document::publish_attempts(d)
                            )
                        })
                        .into_iter()
                        .collect(),
                })
            })
            .collect())
    }

    /// The release version plus the documents that follow it and are out of step.
    pub(super) async fn read_release(
        &self,
        scope: ReadScope<'_>,
    ) -> Result<Vec<Observed>, ProviderError> {
        let Some(release) = self.store.release_document().await? else {
            return Ok(Vec::new());
        };
        let version = release.get_str("version").unwrap_or_default().to_string();
        let mut pending = Vec::new();
        let out_of_step = |d: &Document| {
            let v = d.get_str("version").unwrap_or_default();
            if v != version {
                Some(format!(
                    "version {}",
                    if v.is_empty() { "(unset)" } else { v }
                ))
            } else if document::publish_retry_due(d, self.max_publish_attempts) {
                Some("publish pending".to_string())
            } else {
                None
            }
        };
        let clients = self.store.find_all(scope.pass, CLIENT_COLLECTION).await?;
        for d in clients
            .iter()
            .filter(|d| document::id_string(d).as_deref() == Some(CLIENT_ID))
        {
            if let Some(why) = out_of_step(d) {
                pending.push(format!("{CLIENT}/{CLIENT_ID}: {why}"));
            }
        }
        let agents = self.store.find_all(scope.pass, AGENTS_COLLECTION).await?;
        for d in agents
            .iter()
            .filter(|d| d.get_bool("releaseVersion") == Ok(true))
        {
            if let (Some(id), Some(why)) = (document::id_string(d), out_of_step(d)) {
                pending.push(format!("{AGENT}/{id}: {why}"));
            }
        }
        let mut spec = Map::new();
        spec.insert("version".into(), Value::String(version));
        if !pending.is_empty() {
            spec.insert(
                FOLLOWERS_MARKER.into(),
                Value::Array(pending.into_iter().map(Value::String).collect()),
            );
        }
        let name = scope
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| RELEASE_NAME.to_string());
        Ok(vec![Observed {
            name,
            spec: Value::Object(spec),
            managed: false,
            notes: Vec::new(),
        }])
    }

    /// Whether a registration secret exists: any document means one does (the platform's own
    /// test, §12). Its value is never read into a spec.
    pub(super) async fn read_secret(
        &self,
        scope: ReadScope<'_>,
    ) -> Result<Vec<Observed>, ProviderError> {
        let exists = !self
            .store
            .find(
                SECRETS_COLLECTION,
                doc! {},
                Some(
                    FindOptions::builder()
                        .limit(1)
                        .projection(doc! {"_id": 1})
                        .build(),
                ),
            )
            .await?
            .is_empty();
        Ok(if exists {
            scope
                .names
                .iter()
                .map(|n| Observed {
                    name: n.clone(),
                    spec: Value::Object(Map::new()),
                    managed: false,
                    notes: Vec::new(),
                })
                .collect()
        } else {
            Vec::new()
        })
    }
}
