//! Kafka Connect connectors (the platform's Debezium CDC sources), through Connect's REST API
//! (apis.md §2).
//!
//! A read of the declared connectors GETs each one's info and status while they fit one round
//! of concurrent requests; a larger read, or a prune, makes one bulk read
//! (`GET /connectors?expand=info&expand=status`, KIP-465) of every connector's config and
//! status. Reads keep the answers as sent until they must be compared (`Fetched::Answers`). A
//! write is made only when something differs, because every `PUT …/config` restarts the
//! connector and its tasks even when nothing changed (§2.7).

mod normalize;

use async_trait::async_trait;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::kind::{Compare, Effect, FieldRule, Finding, KindInfo, System, Trigger};
use crate::provider::http::{HttpClient, Response, Tls};
use crate::provider::section::{self, Section, SectionInfo};
use crate::provider::{
    Answer, Answers, Fetched, OpAction, Operation, Provider, ProviderError, ReadPass, ReadScope,
    RequestCount,
};
use crate::resource::Observed;

use crate::provider::owner::Owner;
pub use normalize::{check_spec, normalize_desired, normalize_live, wire_config, OWNER_KEY};

/// `[connect]` of the target config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectSection {
    url: String,
}

/// `[connect] url`: the Kafka Connect REST API.
pub const SECTION: SectionInfo = SectionInfo {
    system: System::Connect,
    name: "connect",
    endpoint_key: "url",
    check: |config| Section::<ConnectSection>::read(config, &SECTION).map(drop),
    endpoint: |config| section::endpoint(config, &SECTION, |s: &ConnectSection| &s.url),
};

pub const KIND: &str = "KafkaConnector";

pub static KINDS: [KindInfo; 1] = [KindInfo {
    kind: KIND,
    system: System::Connect,
    // Connect stores exactly the submitted map (no defaults merged, §2.7), and a config PUT
    // replaces it whole: a key the manifest dropped is a real removal.
    compare: Compare::Exact,
    field_rules: &[FieldRule {
        path: "/config",
        trigger: Trigger::AnyChange,
        effect: Effect::Restarts,
        reason: "every config write restarts the connector and its tasks",
    }],
    // apis.md §2.8: Debezium's PASSWORD-typed keys all name a password (`database.password`,
    // the ssl keystore/truststore passwords), as do `sasl.jaas.config` and
    // `mongodb.connection.string`: the key rule every kind shares covers them.
    sensitive: &[],
    interpolate_spec_file: true,
}];

/// Characters left as they are in a connector name used as a path segment.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Every connector with its config and status (KIP-465).
const LIST_PATH: &str = "/connectors?expand=info&expand=status";

fn connector_path(name: &str, suffix: &str) -> String {
    format!(
        "/connectors/{}{suffix}",
        utf8_percent_encode(name, PATH_SEGMENT)
    )
}

/// Whether a Connect error is worth retrying (apis.md §2.5): the 409s of a rebalance or a
/// missing leader, the 500 a non-forwarding GET gives for the same condition, and timeouts.
/// Other 500s are Connect's mapping of a ConnectException (an unknown connector class, a
/// Debezium validation that threw): retrying them only repeats the same answer.
pub fn is_transient(status: u16, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    let rebalancing = [
        "rebalance",
        "no known leader",
        "conflicting operation",
        "stale configuration",
    ]
    .iter()
    .any(|p| m.contains(p));
    match status {
        409 => rebalancing,
        500 => rebalancing || m.contains("timed out"),
        429 | 502..=504 => true,
        _ => false,
    }
}

pub struct ConnectProvider {
    http: HttpClient,
    /// Marks connectors as this tenant's: only these are ever pruned.
    owner: Owner,
}

impl ConnectProvider {
    /// A provider sending at most `concurrency` requests at a time.
    pub fn new(
        url: &str,
        concurrency: usize,
        owner: Owner,
        tls: &Tls,
    ) -> Result<Self, ProviderError> {
        Ok(Self {
            http: HttpClient::new(System::Connect, url, &[], concurrency, tls)?,
            owner,
        })
    }

    /// One request; any non-2xx status becomes an error carrying Connect's `message`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, ProviderError> {
        let response = self.http.send(method.clone(), path, body).await?;
        if response.is_success() {
            Ok(response)
        } else {
            Err(error(&method, path, &response))
        }
    }

    /// The answers for `names` one by one, when they take no more than one round of
    /// concurrent requests: the expanded list holds every connector of the cluster (all
    /// tenants' on a shared Connect, megabytes a pass), two GETs per declared connector do not
    /// grow with the cluster.
    async fn fetch_named(
        &self,
        pass: &ReadPass,
        names: &[String],
    ) -> Result<Answers, ProviderError> {
        // (Owned names: a borrowed one trips rustc's higher-ranked lifetime check on the
        // `Send` future, as in Pinot's table read.)
        let answers: Vec<Vec<(String, Answer)>> = self
            .http
            .read_each(names.iter().cloned().map(|name| async move {
                let info_path = connector_path(&name, "");
                let info = self.get(pass, &info_path).await?;
                let mut answers = Vec::new();
                if info.status != 404 {
                    let status_path = connector_path(&name, "/status");
                    answers.push((status_path.clone(), self.get(pass, &status_path).await?));
                }
                answers.push((info_path, info));
                Ok::<_, ProviderError>(answers)
            }))
            .await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// A GET of a fetch, whose 404 means the connector does not exist.
    async fn get(&self, pass: &ReadPass, path: &str) -> Result<Answer, ProviderError> {
        self.http
            .answer_in(pass, path, |answer| match answer.status {
                404 | 200..=299 => Ok(()),
                _ => Err(error(&Method::GET, path, &answer.response())),
            })
            .await
    }

    /// The connectors of [`Self::fetch_named`]'s answers.
    fn observe_named(&self, names: &[String], answers: &Answers) -> Vec<Observed> {
        let found = |path: &str| {
            answers
                .get(path)
                .filter(|a| a.status != 404)
                .map(Answer::json)
        };
        names
            .iter()
            .filter_map(|name| {
                let info = found(&connector_path(name, ""))?;
                // Deleted between the two GETs: observed without a status, as the list shows
                // a connector whose status is not known yet.
                let status = found(&connector_path(name, "/status"));
                Some(self.observed(name, &info, status.as_ref()))
            })
            .collect()
    }

    /// The connectors of the expanded list's answer (`names` only, unless `all`).
    fn observe_list(
        &self,
        names: &[String],
        all: bool,
        list: &Answer,
    ) -> Result<Vec<Observed>, ProviderError> {
        let body = list.json();
        let Some(connectors) = body.as_object() else {
            return Err(ProviderError::permanent(format!(
                "connect GET {LIST_PATH}: expected a map of connectors (Kafka Connect 2.3+, KIP-465), got {body}"
            )));
        };
        let mut observed = Vec::new();
        for (name, entry) in connectors {
            if !all && !names.contains(name) {
                continue;
            }
            let Some(info) = entry.get("info") else {
                return Err(ProviderError::permanent(format!(
                    "connect GET {LIST_PATH}: connector {name} came without its `info`"
                )));
            };
            observed.push(self.observed(name, info, entry.get("status")));
        }
        Ok(observed)
    }

    fn observed(&self, name: &str, info: &Value, status: Option<&Value>) -> Observed {
        let live = normalize_live(name, info, status);
        let (managed, mut notes) = self.owner.observe(live.marker.as_deref());
        notes.extend(live.notes);
        Observed {
            name: name.to_string(),
            spec: live.spec,
            managed,
            notes,
        }
    }

    async fn create(&self, name: &str, desired: &Value) -> Result<(), ProviderError> {
        let state = normalize::state_of(desired);
        let mut body =
            json!({ "name": name, "config": wire_config(name, desired, self.owner.value()) });
        // KIP-980 (3.7+). Left out for `running`, the default, so older workers accept it too.
        if state != normalize::RUNNING {
            body["initial_state"] = json!(state.to_ascii_uppercase());
        }
        let path = "/connectors";
        let response = self.http.send(Method::POST, path, Some(&body)).await?;
        if response.is_success() {
            return Ok(());
        }
        // An earlier attempt whose answer was lost may have created it: that is success if
        // what exists is what was asked for.
        if response.status == 409 && !is_transient(409, &response.message()) {
            let existing = self
                .call(Method::GET, &connector_path(name, "/config"), None)
                .await?;
            let created = normalize_desired(&json!({ "config": existing.body, "state": state }));
            if created == normalize_desired(desired) {
                return Ok(());
            }
        }
        Err(error(&Method::POST, path, &response))
    }

    async fn update(&self, name: &str, desired: &Value, live: &Value) -> Result<(), ProviderError> {
        if desired.get("config") != live.get("config") {
            // The target state survives a config PUT (apis.md §2.2), so it is set afterwards.
            self.call(
                Method::PUT,
                &connector_path(name, "/config"),
                Some(&wire_config(name, desired, self.owner.value())),
            )
            .await?;
        }
        let state = normalize::state_of(desired);
        if state != normalize::state_of(live) {
            let verb = match state {
                "paused" => "/pause",
                "stopped" => "/stop",
                _ => "/resume",
            };
            self.call(Method::PUT, &connector_path(name, verb), None)
                .await?;
        }
        Ok(())
    }
}

fn error(method: &Method, path: &str, response: &Response) -> ProviderError {
    let text = response.message();
    let message = format!(
        "connect {method} {path} returned {}: {text}",
        response.status
    );
    if is_transient(response.status, &text) {
        ProviderError::transient(message)
    } else {
        ProviderError::permanent(message)
    }
}

#[async_trait]
impl Provider for ConnectProvider {
    fn system(&self) -> System {
        System::Connect
    }

    async fn read(&self, kind: &str, scope: ReadScope<'_>) -> Result<Vec<Observed>, ProviderError> {
        self.fetch(kind, scope)
            .await?
            .into_observed(self, kind, scope.names, scope.all)
    }

    async fn fetch(&self, _kind: &str, scope: ReadScope<'_>) -> Result<Fetched, ProviderError> {
        if !scope.all && scope.names.len() <= self.http.concurrency() {
            return Ok(Fetched::Answers(
                self.fetch_named(scope.pass, scope.names).await?,
            ));
        }
        let response = self.http.answer(Method::GET, LIST_PATH).await?;
        if !(200..300).contains(&response.status) {
            return Err(error(&Method::GET, LIST_PATH, &response.response()));
        }
        Ok(Fetched::Answers(Answers::from([(
            LIST_PATH.to_string(),
            response,
        )])))
    }

    fn observe(
        &self,
        _kind: &str,
        names: &[String],
        all: bool,
        answers: &Answers,
    ) -> Result<Vec<Observed>, ProviderError> {
        match answers.get(LIST_PATH) {
            Some(list) => self.observe_list(names, all, list),
            None => Ok(self.observe_named(names, answers)),
        }
    }

    fn normalize_desired(&self, _kind: &str, _name: &str, spec: &Value) -> Result<Value, String> {
        Ok(normalize_desired(spec))
    }

    fn findings(&self, _kind: &str, desired: &Value, live: &Value) -> Vec<Finding> {
        let prefix = "/config/topic.prefix";
        let (before, after) = (live.pointer(prefix), desired.pointer(prefix));
        if before == after {
            return Vec::new();
        }
        let shown = |v: Option<&Value>| v.map_or_else(|| "(unset)".to_string(), Value::to_string);
        vec![Finding {
            effect: Effect::DataRisk,
            reason: format!(
                "config[\"topic.prefix\"] {} -> {}: Kafka Connect changes it in place (the connector keeps its name and the source offsets stored under it, as a delete and recreate would too), but Debezium names every topic after it: the connector writes to new topics and may re-snapshot its tables into them, and consumers of the old topics stop receiving events (DBZ-4014)",
                shown(before),
                shown(after)
            ),
        }]
    }

    async fn apply(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        let missing = |what: &str| {
            ProviderError::permanent(format!("{} {}: no {what} spec given", op.kind, op.name))
        };
        match op.action {
            OpAction::Create => {
                let desired = op.desired.ok_or_else(|| missing("desired"))?;
                self.create(op.name, desired).await
            }
            OpAction::Update => {
                let desired = op.desired.ok_or_else(|| missing("desired"))?;
                let live = op.live.ok_or_else(|| missing("live"))?;
                self.update(op.name, desired, live).await
            }
            OpAction::Delete => {
                let path = connector_path(op.name, "");
                let response = self.http.send(Method::DELETE, &path, None).await?;
                // 404: already gone (e.g. a retry after an answer that was lost).
                if response.is_success() || response.status == 404 {
                    Ok(())
                } else {
                    Err(error(&Method::DELETE, &path, &response))
                }
            }
        }
    }

    fn requests(&self) -> RequestCount {
        self.http.requests()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebalance_answers_are_transient_and_others_are_not() {
        // apis.md §2.5, verbatim messages.
        for (status, msg) in [
            (409, "Cannot complete request momentarily due to stale configuration (typically caused by a concurrent config change)"),
            (409, "Cannot complete request momentarily due to no known leader URL, likely because a rebalance was underway."),
            (409, "Cannot complete request because of a conflicting operation (e.g. worker rebalance)"),
            (500, "Request cannot be completed because a rebalance is expected"),
            (500, "Request timed out"),
            (503, "Service Unavailable"),
        ] {
            assert!(is_transient(status, msg), "{status} {msg}");
        }
        for (status, msg) in [
            (409, "Connector pg already exists"),
            (
                400,
                "Connector configuration is invalid and contains the following 1 error(s):",
            ),
            (404, "Connector pg not found"),
            (
                500,
                "Failed to find any class that implements Connector and which name matches x",
            ),
        ] {
            assert!(!is_transient(status, msg), "{status} {msg}");
        }
    }

    #[test]
    fn names_are_path_segments() {
        assert_eq!(
            connector_path("a b/c", "/config"),
            "/connectors/a%20b%2Fc/config"
        );
        assert_eq!(
            connector_path("fleet-mysql_v1.2", ""),
            "/connectors/fleet-mysql_v1.2"
        );
    }

    #[test]
    fn sensitive_keys_cover_debezium_secrets() {
        let info = &KINDS[0];
        for key in [
            "database.password",
            "mongodb.password",
            "database.sslpassword",
            "database.ssl.keystore.password",
            "database.ssl.truststore.password",
            "mongodb.ssl.keystore.password",
            "mongodb.connection.string",
            "connection.password",
            "producer.override.sasl.jaas.config",
        ] {
            assert!(info.is_sensitive(&format!("/config/{key}")), "{key}");
        }
        for key in [
            "database.user",
            "database.hostname",
            "topic.prefix",
            "connector.class",
        ] {
            assert!(!info.is_sensitive(&format!("/config/{key}")), "{key}");
        }
    }

    #[test]
    fn topic_prefix_change_is_a_data_risk_finding() {
        let p = ConnectProvider::new(
            "http://127.0.0.1:1",
            1,
            Owner::new("t", "e"),
            &Tls::default(),
        )
        .unwrap();
        let live = json!({"config": {"topic.prefix": "trmm", "a": "1"}, "state": "running"});
        let same = json!({"config": {"topic.prefix": "trmm", "a": "2"}, "state": "running"});
        assert!(p.findings(KIND, &same, &live).is_empty());
        let moved = json!({"config": {"topic.prefix": "trmm2"}, "state": "running"});
        let f = p.findings(KIND, &moved, &live);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].effect, Effect::DataRisk);
        assert!(
            f[0].reason.contains("\"trmm\" -> \"trmm2\""),
            "{}",
            f[0].reason
        );
        assert!(f[0].reason.contains("offsets"), "{}", f[0].reason);
    }
}
