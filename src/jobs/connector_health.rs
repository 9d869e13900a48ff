//! Connector health: restart FAILED connectors and tasks, with a backoff that resets once a
//! connector has been healthy for a while, a cap on attempts that is said out loud (and written
//! to Mongo `connector_alerts` as the platform did), and a reconcile when an expected connector
//! is missing from Connect. Expected are the manifest's connectors and those of every enabled
//! tool stored in Mongo; an empty list while connectors are expected is first taken for an
//! outage (as the platform's job did, openframe.md §5.4) and only re-created once confirmed.
//!
//! Differences from the platform's job (openframe.md §5.3–5.4) on purpose: connector-level
//! FAILED counts; one KIP-745 call restarts the connector and only its failed tasks; the count
//! resets after `healthy_reset` (Strimzi's never does: strimzi#7891); the state lives in Redis
//! when available, so replicas that take turns share one backoff.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use crate::providers::mongo::PlatformDatabase;
use async_trait::async_trait;
use mongodb::bson::{doc, oid::ObjectId, Document};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;

use super::{Job, JobError};
use crate::config::ConnectorHealthConfig;
use crate::engine::Engine;
use crate::kind::System;
use crate::metrics::{ConnectorLabels, Metrics};
use crate::provider::http::{HttpClient, Tls};
use crate::provider::ReadPass;

/// Traces that a restart cannot fix (openframe.md §5.4): restarting would only spin.
const NON_RECOVERABLE: &[&str] = &[
    "org.apache.kafka.common.config.ConfigException",
    "java.lang.ClassNotFoundException",
    "java.lang.NoClassDefFoundError",
    "org.apache.kafka.common.errors.InvalidConfigurationException",
    "io.debezium.DebeziumException: Access denied",
    "io.debezium.DebeziumException: Authentication failed",
];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct RestartState {
    restarts: u32,
    last_restart_ms: Option<i64>,
    healthy_since_ms: Option<i64>,
    gave_up: bool,
    /// An open `connector_alerts` document exists for this episode.
    #[serde(default)]
    alerted: bool,
}

/// Where restart counts live: Redis (shared by replicas) or this process.
enum Store {
    Redis {
        conn: ConnectionManager,
        key: String,
    },
    Memory(Mutex<HashMap<String, RestartState>>),
}

impl Store {
    async fn load(&self) -> Result<HashMap<String, RestartState>, JobError> {
        match self {
            Store::Memory(m) => Ok(m.lock().map(|m| m.clone()).unwrap_or_default()),
            Store::Redis { conn, key } => {
                let raw: HashMap<String, String> = conn
                    .clone()
                    .hgetall(key)
                    .await
                    .map_err(|e| JobError(format!("reading restart state: {e}")))?;
                Ok(raw
                    .into_iter()
                    .filter_map(|(k, v)| serde_json::from_str(&v).ok().map(|s| (k, s)))
                    .collect())
            }
        }
    }

    async fn save(&self, name: &str, state: &RestartState) -> Result<(), JobError> {
        match self {
            Store::Memory(m) => {
                if let Ok(mut m) = m.lock() {
                    m.insert(name.to_string(), state.clone());
                }
                Ok(())
            }
            Store::Redis { conn, key } => {
                let json = serde_json::to_string(state).unwrap_or_default();
                conn.clone()
                    .hset::<_, _, _, ()>(key, name, json)
                    .await
                    .map_err(|e| JobError(format!("saving restart state: {e}")))
            }
        }
    }
}

pub struct ConnectorHealth {
    http: HttpClient,
    settings: ConnectorHealthConfig,
    store: Store,
    tenant: String,
    metrics: Arc<Metrics>,
    /// KafkaConnector names the manifest declares (kept current by the tenant loop).
    declared: Arc<RwLock<Vec<String>>>,
    reconcile_now: Arc<Notify>,
    /// Reads the tools stored in Mongo, whose enabled ones' connectors are expected too.
    tools: Option<tokio::sync::Mutex<Engine>>,
    /// Where alerts go (`connector_alerts`), when the target has Mongo.
    alerts: Option<PlatformDatabase>,
}

/// The platform's alert documents (openframe.md §5.4; `ConnectorAlert` in
/// `com.openframe.data.document.connector`).
pub const ALERTS_COLLECTION: &str = "connector_alerts";
const ALERT_CLASS: &str = "com.openframe.data.document.connector.ConnectorAlert";
pub const MAX_RETRIES_EXCEEDED: &str = "MAX_RETRIES_EXCEEDED";
pub const NON_RECOVERABLE_ERROR: &str = "NON_RECOVERABLE_ERROR";

impl ConnectorHealth {
    /// `tools` (an engine on the tenant's target config) adds the connectors of the enabled
    /// tools stored in Mongo to the expected ones; `alerts` receives `connector_alerts`.
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        connect_url: &str,
        tls: &Tls,
        redis_url: Option<&str>,
        settings: ConnectorHealthConfig,
        tenant: String,
        metrics: Arc<Metrics>,
        declared: Arc<RwLock<Vec<String>>>,
        reconcile_now: Arc<Notify>,
        tools: Option<Engine>,
        alerts: Option<PlatformDatabase>,
    ) -> Result<Self, JobError> {
        // The job sends its requests one after another.
        let http = HttpClient::new(System::Connect, connect_url, &[], 1, tls)
            .map_err(|e| JobError(e.message))?;
        let store = match redis_url {
            Some(url) => {
                let client = redis::Client::open(url).map_err(|e| JobError(e.to_string()))?;
                let conn = ConnectionManager::new(client)
                    .await
                    .map_err(|e| JobError(e.to_string()))?;
                Store::Redis {
                    conn,
                    key: format!("of:{{{tenant}}}:ofctl:connector-health"),
                }
            }
            None => Store::Memory(Mutex::new(HashMap::new())),
        };
        Ok(Self {
            http,
            settings,
            store,
            tenant,
            metrics,
            declared,
            reconcile_now,
            tools: tools.map(tokio::sync::Mutex::new),
            alerts,
        })
    }

    /// Every connector's status, by name (`GET /connectors?expand=status`).
    async fn statuses(&self) -> Result<BTreeMap<String, Value>, JobError> {
        let path = "/connectors?expand=status";
        let response = self
            .http
            .send(Method::GET, path, None)
            .await
            .map_err(|e| JobError(e.message))?;
        if !response.is_success() {
            return Err(JobError(
                self.http
                    .status_error(&Method::GET, path, &response)
                    .message,
            ));
        }
        Ok(response
            .body
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.get("status").cloned().unwrap_or(Value::Null)))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The connectors that should exist: the manifest's and the enabled stored tools'.
    async fn expected(&self) -> Result<BTreeSet<String>, JobError> {
        let mut expected: BTreeSet<String> = self
            .declared
            .read()
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default();
        if let Some(engine) = &self.tools {
            let stored = engine
                .lock()
                .await
                .stored_tool_connectors(&ReadPass::default())
                .await
                .map_err(|e| JobError(format!("reading the registered tools: {e}")))?;
            expected.extend(stored.into_iter().map(|c| c.address.name));
        }
        Ok(expected)
    }

    /// Writes an open alert for `name` unless one of this type is open already.
    async fn alert(
        &self,
        name: &str,
        error_type: &str,
        message: &str,
        attempts: u32,
    ) -> Result<(), JobError> {
        let Some(db) = &self.alerts else {
            return Ok(());
        };
        let alerts = db.collection::<Document>(ALERTS_COLLECTION);
        let open = doc! {"connectorName": name, "errorType": error_type, "resolved": false};
        let failed = |e: mongodb::error::Error| JobError(format!("{ALERTS_COLLECTION}: {e}"));
        if alerts.find_one(open).await.map_err(failed)?.is_some() {
            return Ok(());
        }
        alerts
            .insert_one(doc! {
                "_id": ObjectId::new(),
                "tenantId": &self.tenant,
                "connectorName": name,
                "errorType": error_type,
                "errorMessage": crate::redact::redact(message).to_string(),
                "attempts": i64::from(attempts),
                "createdAt": mongodb::bson::DateTime::now(),
                "resolved": false,
                "_class": ALERT_CLASS,
            })
            .await
            .map_err(failed)?;
        Ok(())
    }

    /// Marks every open alert of `name` resolved.
    async fn resolve_alerts(&self, name: &str) -> Result<(), JobError> {
        let Some(db) = &self.alerts else {
            return Ok(());
        };
        db.collection::<Document>(ALERTS_COLLECTION)
            .update_many(
                doc! {"connectorName": name, "resolved": false},
                doc! {"$set": {"resolved": true, "resolvedAt": mongodb::bson::DateTime::now()}},
            )
            .await
            .map_err(|e| JobError(format!("{ALERTS_COLLECTION}: {e}")))?;
        Ok(())
    }

    /// A FAILED connector, or the ids and traces of its FAILED tasks.
    fn failures(status: &Value) -> Option<(Vec<i64>, Vec<String>)> {
        let mut traces = Vec::new();
        let connector_failed =
            status.pointer("/connector/state").and_then(Value::as_str) == Some("FAILED");
        if connector_failed {
            if let Some(t) = status.pointer("/connector/trace").and_then(Value::as_str) {
                traces.push(t.to_string());
            }
        }
        let mut tasks = Vec::new();
        for task in status
            .get("tasks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if task.get("state").and_then(Value::as_str) == Some("FAILED") {
                tasks.push(task.get("id").and_then(Value::as_i64).unwrap_or(-1));
                if let Some(t) = task.get("trace").and_then(Value::as_str) {
                    traces.push(t.to_string());
                }
            }
        }
        (connector_failed || !tasks.is_empty()).then_some((tasks, traces))
    }

    async fn restart(&self, name: &str) -> Result<(), JobError> {
        let path = format!("/connectors/{name}/restart?includeTasks=true&onlyFailed=true");
        let response = self
            .http
            .send(Method::POST, &path, None)
            .await
            .map_err(|e| JobError(e.message))?;
        if response.is_success() {
            Ok(())
        } else {
            Err(JobError(
                self.http
                    .status_error(&Method::POST, &path, &response)
                    .message,
            ))
        }
    }
}

#[async_trait]
impl Job for ConnectorHealth {
    fn lock_name(&self) -> &'static str {
        "debeziumHealthCheck"
    }

    async fn run(&self) -> Result<String, JobError> {
        let expected = self.expected().await?;
        let mut statuses = self.statuses().await?;
        if statuses.is_empty() && !expected.is_empty() {
            // A worker that has not read its config topic yet answers the same as one that
            // lost its connectors: recreating on the first sight could race the real ones back.
            let wait = self.settings.outage_recheck.min(self.settings.interval / 2);
            tracing::warn!(tenant = %self.tenant, "Kafka Connect lists no connectors while {} are expected: treated as an outage, asking again in {wait:?}", expected.len());
            self.metrics.error(&self.tenant, "connect_outage");
            tokio::time::sleep(wait).await;
            statuses = self.statuses().await?;
            if statuses.is_empty() {
                tracing::warn!(tenant = %self.tenant, "Kafka Connect still lists no connectors: they are lost, reconciling {}", expected.iter().cloned().collect::<Vec<_>>().join(", "));
                self.reconcile_now.notify_one();
                return Ok(format!(
                    "0 connectors, {} expected: Kafka Connect lost them, reconciling",
                    expected.len()
                ));
            }
        }
        let mut states = self.store.load().await?;
        let now = chrono::Utc::now().timestamp_millis();
        let (mut restarted, mut unhealthy) = (0, 0);
        for (name, status) in &statuses {
            let state = states.entry(name.clone()).or_default();
            let before = state.clone();
            match Self::failures(status) {
                Some((tasks, traces)) => {
                    unhealthy += 1;
                    state.healthy_since_ms = None;
                    let first_line = traces
                        .first()
                        .and_then(|t| t.lines().next())
                        .unwrap_or("no trace");
                    if traces
                        .iter()
                        .any(|t| NON_RECOVERABLE.iter().any(|n| t.contains(n)))
                    {
                        tracing::error!(tenant = %self.tenant, connector = %name, "FAILED with a non-recoverable error, not restarting: {first_line}");
                        self.metrics
                            .error(&self.tenant, "connector_non_recoverable");
                        self.alert(name, NON_RECOVERABLE_ERROR, first_line, state.restarts)
                            .await?;
                        state.alerted = true;
                    } else if state.restarts >= self.settings.max_restarts {
                        if !state.gave_up {
                            tracing::error!(tenant = %self.tenant, connector = %name, "still FAILED after {} restarts; giving up until it is healthy again: {first_line}", state.restarts);
                            self.metrics.error(&self.tenant, "connector_gave_up");
                            self.alert(name, MAX_RETRIES_EXCEEDED, first_line, state.restarts)
                                .await?;
                            state.gave_up = true;
                            state.alerted = true;
                        }
                    } else {
                        let wait =
                            self.settings.backoff.as_millis() as i64 * i64::from(state.restarts);
                        let due = state.last_restart_ms.is_none_or(|t| now - t >= wait);
                        if due {
                            self.restart(name).await?;
                            state.restarts += 1;
                            state.last_restart_ms = Some(now);
                            restarted += 1;
                            self.metrics
                                .connector_restarts
                                .get_or_create(&ConnectorLabels {
                                    tenant: self.tenant.clone(),
                                    connector: name.clone(),
                                })
                                .inc();
                            tracing::warn!(tenant = %self.tenant, connector = %name, failed_tasks = ?tasks, "restarted (attempt {}/{}): {first_line}", state.restarts, self.settings.max_restarts);
                        }
                    }
                }
                None if state.restarts > 0 || state.gave_up || state.alerted => {
                    if state.alerted {
                        self.resolve_alerts(name).await?;
                        tracing::info!(tenant = %self.tenant, connector = %name, "healthy again; its alerts are resolved");
                        state.alerted = false;
                    }
                    let since = *state.healthy_since_ms.get_or_insert(now);
                    if now - since >= self.settings.healthy_reset.as_millis() as i64 {
                        tracing::info!(tenant = %self.tenant, connector = %name, "healthy again; restart count reset");
                        *state = RestartState::default();
                    }
                }
                None => {}
            }
            if *state != before {
                self.store.save(name, state).await?;
            }
        }
        let missing: Vec<String> = expected
            .iter()
            .filter(|n| !statuses.contains_key(*n))
            .cloned()
            .collect();
        if !missing.is_empty() {
            tracing::warn!(tenant = %self.tenant, "expected connectors missing from Kafka Connect, reconciling: {}", missing.join(", "));
            self.reconcile_now.notify_one();
        }
        Ok(format!(
            "{} connectors, {unhealthy} unhealthy, {restarted} restarted, {} missing",
            statuses.len(),
            missing.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failures_count_connector_and_task_states() {
        let ok =
            json!({"connector": {"state": "RUNNING"}, "tasks": [{"id": 0, "state": "RUNNING"}]});
        assert!(ConnectorHealth::failures(&ok).is_none());
        let task = json!({"connector": {"state": "RUNNING"}, "tasks": [{"id": 1, "state": "FAILED", "trace": "boom\nat x"}]});
        assert_eq!(
            ConnectorHealth::failures(&task),
            Some((vec![1], vec!["boom\nat x".into()]))
        );
        let conn = json!({"connector": {"state": "FAILED"}, "tasks": []});
        assert_eq!(ConnectorHealth::failures(&conn), Some((vec![], vec![])));
    }
}
