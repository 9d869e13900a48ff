//! Update messages over NATS JetStream, published exactly once per real change (openframe.md
//! §9, §10).
//!
//! The document is written with `publishState.published = false` first, then the message is
//! published with a JetStream ack, then `published = true` is recorded. A crash in between
//! leaves a visible pending state that the next run repairs; before publishing again it looks
//! at the last message on the subject, and if that is the very message (same `Nats-Msg-Id`),
//! it only records it.

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, Bson, Document};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::document::{self, PUBLISH_STATE};
use super::messages::{Message, CLIENT_SUBJECT, CLIENT_UPDATE_STREAM, TOOL_UPDATE_STREAM};
use super::store::Store;
use super::TIMEOUT;
use crate::json::digest;
use crate::provider::{ProviderError, RequestCount, RequestCounter};
use crate::shared;

pub(super) struct Publisher {
    /// NATS URL, or why there is none (only an error when a publish is due).
    nats_url: Result<String, String>,
    /// Shared with every provider of the process that publishes to the same URL.
    nats: Arc<OnceCell<async_nats::jetstream::Context>>,
    counter: RequestCounter,
}

impl Publisher {
    pub(super) fn new(nats_url: Result<String, String>) -> Self {
        let nats = shared::lazy(nats_url.as_deref().unwrap_or(""));
        Self {
            nats_url,
            nats,
            counter: RequestCounter::default(),
        }
    }

    pub(super) fn requests(&self) -> RequestCount {
        self.counter.snapshot()
    }

    async fn jetstream(&self) -> Result<&async_nats::jetstream::Context, ProviderError> {
        let url = self
            .nats_url
            .as_ref()
            .map_err(|e| ProviderError::permanent(e.clone()))?;
        self.nats
            .get_or_try_init(|| async {
                let options = async_nats::ConnectOptions::new();
                let client = crate::provider::nats_client::with_url_credentials(options, url)
                    .connection_timeout(Duration::from_secs(3))
                    .request_timeout(Some(TIMEOUT))
                    .connect(url.as_str())
                    .await
                    .map_err(|e| {
                        ProviderError::transient(format!(
                            "cannot connect to NATS at {}: {e}",
                            crate::redact::redact(url)
                        ))
                    })?;
                Ok(async_nats::jetstream::new(client))
            })
            .await
    }

    /// True when the last message on `subject` is this very message (a previous run published
    /// it and stopped before recording it).
    async fn already_published(&self, subject: &str, msg_id: &str) -> Result<bool, ProviderError> {
        let js = self.jetstream().await?;
        self.counter.read();
        let Ok(stream) = js.stream_by_subject(subject).await else {
            return Ok(false);
        };
        let Ok(stream) = js.get_stream_no_info(&stream).await else {
            return Ok(false);
        };
        self.counter.read();
        Ok(
            match stream.get_last_raw_message_by_subject(subject).await {
                Ok(m) => m
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .is_some_and(|v| v.as_str() == msg_id),
                Err(_) => false,
            },
        )
    }

    async fn publish_message(
        &self,
        subject: &str,
        payload: &Value,
        msg_id: &str,
    ) -> Result<(), ProviderError> {
        use async_nats::jetstream::context::PublishErrorKind as K;
        let js = self.jetstream().await?;
        let mut headers = async_nats::HeaderMap::new();
        // The platform sent no id; one here lets JetStream drop a retried duplicate.
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
        let body = serde_json::to_vec(payload).unwrap_or_default();
        self.counter.write();
        let map = |e: async_nats::jetstream::context::PublishError| match e.kind() {
            K::StreamNotFound => ProviderError::permanent(format!(
                "no JetStream stream captures {subject} (declare the platform's {} stream)",
                if subject == CLIENT_SUBJECT {
                    CLIENT_UPDATE_STREAM
                } else {
                    TOOL_UPDATE_STREAM
                }
            )),
            _ => ProviderError::transient(format!("publish to {subject}: {e}")),
        };
        js.publish_with_headers(subject.to_string(), headers, body.into())
            .await
            .map_err(map)?
            .await
            .map_err(map)?;
        Ok(())
    }

    /// Pending → publish → published for one document (openframe.md §9 bookkeeping).
    /// `doc` is the document as it will be stored; `current` what is stored now.
    pub(super) async fn write_and_publish(
        &self,
        store: &Store,
        collection: &str,
        mut doc: Document,
        current: Option<&Document>,
        message: &Message,
    ) -> Result<(), ProviderError> {
        let Message { subject, payload } = message;
        let repairing = current.is_some_and(document::publish_pending);
        let state = pending_state(current);
        let msg_id = message_id(subject, payload, &state);
        doc.insert(PUBLISH_STATE, state);
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        store.replace(collection, doc).await?;
        if !(repairing && self.already_published(subject, &msg_id).await?) {
            self.publish_message(subject, payload, &msg_id).await?;
        }
        store
            .set(
                collection,
                &id,
                doc! {"publishState.published": true, "publishState.publishedAt": document::now()},
            )
            .await
    }

    /// Stores an agent or the client configuration: through the publish bookkeeping when a
    /// message is due or the stored one is still pending, else as a plain full replace that
    /// keeps the stored publishState.
    pub(super) async fn store_followed(
        &self,
        store: &Store,
        collection: &str,
        doc: Document,
        current: Option<&Document>,
        publish_due: bool,
        message: &Message,
    ) -> Result<(), ProviderError> {
        let pending = current.is_some_and(document::publish_pending);
        if publish_due || pending {
            return self
                .write_and_publish(store, collection, doc, current, message)
                .await;
        }
        let mut doc = doc;
        if let Some(state) = current.and_then(|c| c.get(PUBLISH_STATE)) {
            doc.insert(PUBLISH_STATE, state.clone());
        }
        store.replace(collection, doc).await
    }
}

/// The state written before publishing (the platform's `nonPublished(current)`): a fresh
/// `{published:false, publishedAt:null, attempts:0}` after a completed publish, otherwise the
/// same with `attempts + 1` and `publishedAt` kept.
pub fn pending_state(current: Option<&Document>) -> Document {
    let state = current.and_then(|d| d.get_document(PUBLISH_STATE).ok().map(|s| (d, s)));
    match state {
        Some((d, s)) if s.get_bool("published").ok() == Some(false) => {
            let attempts = document::publish_attempts(d);
            let mut next = doc! {
                "published": false,
                "publishedAt": s.get("publishedAt").cloned().unwrap_or(Bson::Null),
            };
            next.insert(
                "attempts",
                i32::try_from(attempts + 1)
                    .map(Bson::Int32)
                    .unwrap_or(Bson::Int64(attempts + 1)),
            );
            next
        }
        _ => doc! {"published": false, "publishedAt": Bson::Null, "attempts": 0},
    }
}

/// Identifies one logical publish: the same subject, payload and pending state (its
/// `publishedAt`, unchanged by retries) give the same id, so JetStream's duplicate window and
/// the repair check both recognise a retry, while the same payload published again after a
/// later change (A → B → A) gets a new id.
pub fn message_id(subject: &str, payload: &Value, state: &Document) -> String {
    let since = state
        .get("publishedAt")
        .map(document::to_json)
        .unwrap_or(Value::Null);
    format!(
        "ofctl-{}",
        digest(&json!({"subject": subject, "payload": payload, "since": since}))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_state_arithmetic() {
        let fresh = pending_state(None);
        assert_eq!(fresh.get_i32("attempts").unwrap(), 0);
        assert!(!fresh.get_bool("published").unwrap());
        let retry = pending_state(Some(&doc! {"publishState": {
        "published": false, "publishedAt": Bson::Null, "attempts": 2}}));
        assert_eq!(retry.get_i32("attempts").unwrap(), 3);
        let after_success = pending_state(Some(&doc! {"publishState": {
        "published": true, "attempts": 4}}));
        assert_eq!(after_success.get_i32("attempts").unwrap(), 0);
    }

    #[test]
    fn message_ids_are_stable_across_retries_only() {
        let p = json!({"version": "1"});
        let s1 = pending_state(None);
        let s2 = pending_state(Some(&doc! {"publishState": s1.clone()}));
        assert_eq!(message_id("s", &p, &s1), message_id("s", &p, &s2));
        let later =
            doc! {"published": false, "publishedAt": mongodb::bson::DateTime::now(), "attempts": 0};
        assert_ne!(message_id("s", &p, &s1), message_id("s", &p, &later));
    }
}
