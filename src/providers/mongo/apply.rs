//! What each kind writes: one create or update per operation, as the platform's services
//! wrote it, with the update messages it calls for. Platform documents are never deleted.

use mongodb::bson::{doc, oid::ObjectId, Bson};
use serde_json::{Map, Value};

use super::crypto::generate_secret;
use super::document::{self, version, PUBLISH_MARKER};
use super::kinds::{
    AGENTS_COLLECTION, AGENT_CLASS, CLIENT_CLASS, CLIENT_COLLECTION, CLIENT_ID,
    RELEASES_COLLECTION, RELEASE_CLASS, SECRETS_COLLECTION, SECRET_CLASS, TOOLS_COLLECTION,
    TOOL_CLASS,
};
use super::messages::{agent_change, Message};
use super::platform::is_release_agent;
use super::MongoProvider;
use crate::provider::{OpAction, Operation, ProviderError};

impl MongoProvider {
    pub(super) async fn apply_tool(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        let doc = document::build(
            Bson::String(op.name.to_string()),
            op.desired.unwrap_or(&Value::Null),
            TOOL_CLASS,
        );
        match op.action {
            // The controller's save is a full replace (openframe.md §6).
            OpAction::Create => self.store.insert(TOOLS_COLLECTION, doc).await,
            OpAction::Update => self.store.replace(TOOLS_COLLECTION, doc).await,
            OpAction::Delete => Err(not_deleted(op)),
        }
    }

    pub(super) async fn apply_agent(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        let id = Bson::String(op.name.to_string());
        let mut content = object(op.desired);
        content.shift_remove(PUBLISH_MARKER);
        let release = is_release_agent(&Value::Object(content.clone()));
        let current = match op.action {
            OpAction::Delete => return Err(not_deleted(op)),
            OpAction::Create => None,
            OpAction::Update => self.store.find_one(AGENTS_COLLECTION, &id).await?,
        };
        if release {
            // The version of a release agent belongs to ReleaseVersion: keep what is stored
            // now (it may have moved since planning), or start at the stored release version.
            let version = match &current {
                Some(c) => c.get_str("version").ok().map(str::to_string),
                None => self.store.stored_release_version().await?,
            };
            match version {
                Some(v) => content.insert("version".into(), Value::String(v)),
                None => content.shift_remove("version"),
            };
        }
        let content = Value::Object(content);
        let doc = document::build(id, &content, AGENT_CLASS);
        let Some(current) = current else {
            // A new agent is saved as it is and announces nothing (§7).
            return self.store.replace(AGENTS_COLLECTION, doc).await;
        };
        let before = document::live_spec(&current, self.max_publish_attempts);
        let due = agent_change(&before, &content).is_some();
        let message = Message::agent(op.name, &content);
        self.publisher
            .store_followed(
                &self.store,
                AGENTS_COLLECTION,
                doc,
                Some(&current),
                due,
                &message,
            )
            .await
    }

    pub(super) async fn apply_client(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        let id = Bson::String(CLIENT_ID.to_string());
        let mut content = object(op.desired);
        content.shift_remove(PUBLISH_MARKER);
        let current = match op.action {
            OpAction::Delete => return Err(not_deleted(op)),
            OpAction::Create => None,
            OpAction::Update => self.store.find_one(CLIENT_COLLECTION, &id).await?,
        };
        // The stored version wins (§8); a new document starts at the stored release version.
        let stored = match &current {
            Some(c) => c.get_str("version").ok().map(str::to_string),
            None => self.store.stored_release_version().await?,
        };
        let before_version = current
            .as_ref()
            .and_then(|c| c.get_str("version").ok())
            .map(str::to_string);
        if let Some(v) = stored.filter(|v| !v.is_empty()) {
            content.insert("version".into(), Value::String(v));
        }
        let content = Value::Object(content);
        let mut doc = document::build(id, &content, CLIENT_CLASS);
        // Spring auditing: createdAt once, updatedAt on every save.
        let created = current
            .as_ref()
            .and_then(|c| c.get(document::CREATED_AT).cloned())
            .unwrap_or_else(document::now);
        doc.insert(document::CREATED_AT, created);
        doc.insert(document::UPDATED_AT, document::now());
        let Some(current) = current else {
            return self.store.replace(CLIENT_COLLECTION, doc).await;
        };
        let due = version(&content).is_some() && version(&content) != before_version.as_deref();
        let message = Message::client(&content);
        self.publisher
            .store_followed(
                &self.store,
                CLIENT_COLLECTION,
                doc,
                Some(&current),
                due,
                &message,
            )
            .await
    }

    /// Stores the release version, then brings every follower (the client configuration and
    /// every agent with `releaseVersion: true`) to it, publishing each exactly once. Followers
    /// are read now, not at planning, so agents written earlier in this apply are included
    /// and a follower already repaired by its own change is not published twice.
    pub(super) async fn apply_release(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        if op.action == OpAction::Delete {
            return Err(not_deleted(op));
        }
        let version = op
            .desired
            .and_then(version)
            .ok_or_else(|| ProviderError::permanent("ReleaseVersion needs spec.version"))?
            .to_string();
        match self.store.release_document().await? {
            Some(existing) => {
                let id = existing.get("_id").cloned().unwrap_or(Bson::Null);
                if existing.get_str("version").ok() != Some(version.as_str()) {
                    self.store
                        .set(
                            RELEASES_COLLECTION,
                            &id,
                            doc! {"version": &version, "updatedAt": document::now()},
                        )
                        .await?;
                }
            }
            None => {
                let mut doc = doc! {
                    "_id": ObjectId::new(),
                    "version": &version,
                    "createdAt": document::now(),
                    "updatedAt": document::now(),
                };
                doc.insert(document::CLASS, RELEASE_CLASS);
                self.store.insert(RELEASES_COLLECTION, doc).await?;
            }
        }
        let followers = [
            (CLIENT_COLLECTION, doc! {"_id": CLIENT_ID}),
            (AGENTS_COLLECTION, doc! {"releaseVersion": true}),
        ];
        for (collection, filter) in followers {
            for current in self.store.find(collection, filter, None).await? {
                let stored = current.get_str("version").ok();
                if stored == Some(version.as_str())
                    && !document::publish_retry_due(&current, self.max_publish_attempts)
                {
                    continue;
                }
                let mut doc = current.clone();
                doc.insert("version", &version);
                if collection == CLIENT_COLLECTION {
                    doc.insert(document::UPDATED_AT, document::now());
                }
                let content = document::live_spec(&doc, self.max_publish_attempts);
                let message = if collection == CLIENT_COLLECTION {
                    Message::client(&content)
                } else {
                    Message::agent(&document::id_string(&doc).unwrap_or_default(), &content)
                };
                self.publisher
                    .write_and_publish(&self.store, collection, doc, Some(&current), &message)
                    .await?;
            }
        }
        Ok(())
    }

    /// Ensures one registration secret exists; never overwrites one (openframe.md §12).
    pub(super) async fn apply_secret(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        if op.action != OpAction::Create {
            return Err(not_deleted(op));
        }
        if !self
            .store
            .find(SECRETS_COLLECTION, doc! {}, None)
            .await?
            .is_empty()
        {
            return Ok(());
        }
        let key = self
            .encryption
            .as_ref()
            .map_err(|e| ProviderError::permanent(e.clone()))?;
        let plaintext = generate_secret();
        let mut doc = doc! {
            "_id": ObjectId::new(),
            "secretKey": key.encrypt(&plaintext),
            "createdAt": document::now(),
            "active": true,
        };
        doc.insert(document::CLASS, SECRET_CLASS);
        self.store.insert(SECRETS_COLLECTION, doc).await
    }
}

fn not_deleted(op: Operation<'_>) -> ProviderError {
    ProviderError::permanent(format!(
        "{}/{}: ofctl does not {} platform documents of this kind",
        op.kind,
        op.name,
        match op.action {
            OpAction::Delete => "delete",
            _ => "overwrite",
        }
    ))
}

fn object(value: Option<&Value>) -> Map<String, Value> {
    value
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}
