//! Kafka Connect 3.9 worker emulator with the Debezium source connectors (apis.md §2).
//!
//! One worker, no real tasks: connector and task states follow the target state (RUNNING, PAUSED,
//! STOPPED) and the admin endpoints under `/__sandbox/` inject failures and rebalances.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::{query_get, query_pairs};

/// Connector config as the worker stores it: `Map<String, String>`, insertion-ordered. Values
/// are JSON strings, or null only transiently (null never passes validation).
type Config = Map<String, Value>;

const REBALANCE_CONFLICT: &str = "Cannot complete request momentarily due to stale configuration (typically caused by a concurrent config change)";
const REBALANCE_EXPECTED: &str = "Request cannot be completed because a rebalance is expected";
/// KIP-745 restarts run asynchronously; instances show RESTARTING for this long.
const RESTART_DELAY: Duration = Duration::from_millis(50);
/// All three Debezium connectors return exactly one task config whatever `tasks.max` says
/// (apis.md §2.8; `MongoDbConnector.taskConfigs` returns `List.of(taskConfig)` as well).
const TASKS_PER_CONNECTOR: usize = 1;
const DEBEZIUM_VERSION: &str = "3.0.8.Final";

/// apis.md §2.1 envelope: `{"error_code": N, "message": "..."}`.
pub(crate) struct ConnectError(StatusCode, String);

impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        let body = json!({"error_code": self.0.as_u16(), "message": self.1});
        (self.0, Json(body)).into_response()
    }
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> ConnectError {
    ConnectError(status, message.into())
}

type Res = Result<Response, ConnectError>;

pub(crate) fn rebalance_conflict() -> Response {
    error(StatusCode::CONFLICT, REBALANCE_CONFLICT).into_response()
}

enum Rebalance {
    /// `completeOrForwardRequest`: 409.
    Conflict,
    /// `completeRequest` (GET connector / config): 500, apis.md §2.5 quirk.
    Expected,
}

/// Which requests a rebalance affects: forwarded writes get 409; pause/resume write the target
/// state directly without forwarding, and validation never touches the herder's config.
fn rebalance_kind(method: &Method, path: &str) -> Option<Rebalance> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segments.first() != Some(&"connectors") {
        return None;
    }
    if method == Method::GET || method == Method::HEAD {
        return matches!(segments.as_slice(), [_, _] | [_, _, "config"])
            .then_some(Rebalance::Expected);
    }
    match segments.as_slice() {
        [_, _, "pause" | "resume"] => None,
        _ => Some(Rebalance::Conflict),
    }
}

pub(crate) fn is_forwarded_write(method: &Method, path: &str) -> bool {
    matches!(rebalance_kind(method, path), Some(Rebalance::Conflict))
}

// ---------------------------------------------------------------------------------------------
// Plugins and config validation (apis.md §2.6, §2.8)

#[derive(Clone, Copy, PartialEq, Eq)]
enum Type {
    String,
    Int,
    Long,
    Boolean,
    Password,
    List,
    Class,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::String => "STRING",
            Type::Int => "INT",
            Type::Long => "LONG",
            Type::Boolean => "BOOLEAN",
            Type::Password => "PASSWORD",
            Type::List => "LIST",
            Type::Class => "CLASS",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    None,
    Required,
    /// Required, and only alphanumerics, `-`, `.`, `_` (Debezium hostname / topic name validators).
    RequiredName,
    /// Debezium's connection-string validator.
    ConnectionString,
    /// `ConnectorConfig.NAME_CONFIG`: required, non-empty.
    ConnectorName,
    /// `tasks.max`: INT, at least 1.
    TasksMax,
}

/// A `ConfigKey`; `debezium` selects Debezium's `Field` messages over Kafka's `ConfigDef` ones.
struct Key {
    name: &'static str,
    ty: Type,
    default: Option<&'static str>,
    group: &'static str,
    check: Check,
    debezium: bool,
}

#[rustfmt::skip]
const fn connect_key(name: &'static str, ty: Type, default: Option<&'static str>, group: &'static str, check: Check) -> Key {
    Key { name, ty, default, group, check, debezium: false }
}

#[rustfmt::skip]
const fn dbz(name: &'static str, ty: Type, default: Option<&'static str>, group: &'static str, check: Check) -> Key {
    Key { name, ty, default, group, check, debezium: true }
}

/// `ConnectorConfig` / `SourceConnectorConfig` keys every connector is validated against (subset).
#[rustfmt::skip]
const CONNECT_KEYS: &[Key] = &[
    connect_key("name", Type::String, None, "Common", Check::ConnectorName),
    connect_key("connector.class", Type::String, None, "Common", Check::Required),
    connect_key("tasks.max", Type::Int, Some("1"), "Common", Check::TasksMax),
    connect_key("tasks.max.enforce", Type::Boolean, Some("true"), "Common", Check::None),
    connect_key("key.converter", Type::Class, None, "Common", Check::None),
    connect_key("value.converter", Type::Class, None, "Common", Check::None),
    connect_key("header.converter", Type::Class, Some("org.apache.kafka.connect.storage.SimpleHeaderConverter"), "Common", Check::None),
    connect_key("config.action.reload", Type::String, Some("restart"), "Common", Check::None),
    connect_key("transforms", Type::List, Some(""), "Transforms", Check::None),
    connect_key("predicates", Type::List, Some(""), "Predicates", Check::None),
    connect_key("errors.retry.timeout", Type::Long, Some("0"), "Error Handling", Check::None),
    connect_key("errors.retry.delay.max.ms", Type::Long, Some("60000"), "Error Handling", Check::None),
    connect_key("errors.tolerance", Type::String, Some("none"), "Error Handling", Check::None),
    connect_key("errors.log.enable", Type::Boolean, Some("false"), "Error Handling", Check::None),
    connect_key("errors.log.include.messages", Type::Boolean, Some("false"), "Error Handling", Check::None),
    connect_key("topic.creation.groups", Type::List, Some(""), "Topic Creation", Check::None),
    connect_key("exactly.once.support", Type::String, Some("requested"), "Exactly Once Support", Check::None),
    connect_key("transaction.boundary", Type::String, Some("poll"), "Exactly Once Support", Check::None),
    connect_key("offsets.storage.topic", Type::String, None, "offsets.topic", Check::None),
];

/// `CommonConnectorConfig` keys shared by the three connectors.
#[rustfmt::skip]
const DEBEZIUM_COMMON: &[Key] = &[
    dbz("topic.prefix", Type::String, None, "Connection", Check::RequiredName),
    dbz("snapshot.mode", Type::String, Some("initial"), "Connector", Check::None),
    dbz("tombstones.on.delete", Type::Boolean, Some("true"), "Connector", Check::None),
    dbz("max.batch.size", Type::Int, Some("2048"), "Connector", Check::None),
    dbz("max.queue.size", Type::Int, Some("8192"), "Connector", Check::None),
    dbz("poll.interval.ms", Type::Long, Some("500"), "Connector", Check::None),
    dbz("signal.data.collection", Type::String, None, "Connector", Check::None),
    dbz("topic.naming.strategy", Type::Class, Some("io.debezium.schema.SchemaTopicNamingStrategy"), "Connector", Check::None),
    dbz("skipped.operations", Type::List, Some("t"), "Connector", Check::None),
    dbz("provide.transaction.metadata", Type::Boolean, Some("false"), "Connector", Check::None),
    dbz("heartbeat.interval.ms", Type::Int, Some("0"), "Connector", Check::None),
];

#[rustfmt::skip]
const POSTGRES_KEYS: &[Key] = &[
    dbz("database.hostname", Type::String, None, "Connection", Check::RequiredName),
    dbz("database.port", Type::Int, Some("5432"), "Connection", Check::None),
    dbz("database.user", Type::String, None, "Connection", Check::Required),
    dbz("database.password", Type::Password, None, "Connection", Check::None),
    dbz("database.dbname", Type::String, None, "Connection", Check::Required),
    dbz("database.sslmode", Type::String, Some("prefer"), "Connection", Check::None),
    dbz("database.sslpassword", Type::Password, None, "Connection", Check::None),
    dbz("plugin.name", Type::String, Some("decoderbufs"), "Connection", Check::None),
    dbz("slot.name", Type::String, Some("debezium"), "Connection", Check::None),
    dbz("slot.drop.on.stop", Type::Boolean, Some("false"), "Connection", Check::None),
    dbz("publication.name", Type::String, Some("dbz_publication"), "Connection", Check::None),
    dbz("publication.autocreate.mode", Type::String, Some("all_tables"), "Connection", Check::None),
    dbz("schema.include.list", Type::List, None, "Filters", Check::None),
    dbz("schema.exclude.list", Type::List, None, "Filters", Check::None),
    dbz("table.include.list", Type::List, None, "Filters", Check::None),
    dbz("table.exclude.list", Type::List, None, "Filters", Check::None),
    dbz("column.include.list", Type::List, None, "Filters", Check::None),
    dbz("column.exclude.list", Type::List, None, "Filters", Check::None),
    dbz("heartbeat.action.query", Type::String, None, "Connector", Check::None),
];

#[rustfmt::skip]
const MYSQL_KEYS: &[Key] = &[
    dbz("database.hostname", Type::String, None, "Connection", Check::RequiredName),
    dbz("database.port", Type::Int, Some("3306"), "Connection", Check::None),
    dbz("database.user", Type::String, None, "Connection", Check::Required),
    dbz("database.password", Type::Password, None, "Connection", Check::None),
    dbz("database.server.id", Type::Long, None, "Connection", Check::Required),
    dbz("database.ssl.mode", Type::String, Some("preferred"), "Connection", Check::None),
    dbz("database.ssl.keystore.password", Type::Password, None, "Connection", Check::None),
    dbz("database.ssl.truststore.password", Type::Password, None, "Connection", Check::None),
    dbz("schema.history.internal.kafka.bootstrap.servers", Type::String, None, "History Storage", Check::Required),
    dbz("schema.history.internal.kafka.topic", Type::String, None, "History Storage", Check::Required),
    dbz("database.include.list", Type::List, None, "Filters", Check::None),
    dbz("database.exclude.list", Type::List, None, "Filters", Check::None),
    dbz("table.include.list", Type::List, None, "Filters", Check::None),
    dbz("table.exclude.list", Type::List, None, "Filters", Check::None),
    dbz("include.schema.changes", Type::Boolean, Some("true"), "Connector", Check::None),
    dbz("snapshot.locking.mode", Type::String, Some("minimal"), "Connector", Check::None),
];

#[rustfmt::skip]
const MONGODB_KEYS: &[Key] = &[
    dbz("mongodb.connection.string", Type::String, None, "Connection", Check::ConnectionString),
    dbz("mongodb.user", Type::String, None, "Connection", Check::None),
    dbz("mongodb.password", Type::Password, None, "Connection", Check::None),
    dbz("mongodb.authsource", Type::String, Some("admin"), "Connection", Check::None),
    dbz("mongodb.ssl.enabled", Type::Boolean, Some("false"), "Connection", Check::None),
    dbz("mongodb.ssl.keystore.password", Type::Password, None, "Connection", Check::None),
    dbz("mongodb.ssl.truststore.password", Type::Password, None, "Connection", Check::None),
    dbz("database.include.list", Type::List, None, "Filters", Check::None),
    dbz("database.exclude.list", Type::List, None, "Filters", Check::None),
    dbz("collection.include.list", Type::List, None, "Filters", Check::None),
    dbz("collection.exclude.list", Type::List, None, "Filters", Check::None),
    dbz("field.exclude.list", Type::List, None, "Filters", Check::None),
    dbz("capture.mode", Type::String, Some("change_streams_update_full"), "Connector", Check::None),
    dbz("capture.scope", Type::String, Some("deployment"), "Connector", Check::None),
];

pub(crate) struct Plugin {
    class: &'static str,
    task_class: &'static str,
    keys: &'static [Key],
}

const PLUGINS: &[Plugin] = &[
    Plugin {
        class: "io.debezium.connector.mongodb.MongoDbConnector",
        task_class: "io.debezium.connector.mongodb.MongoDbConnectorTask",
        keys: MONGODB_KEYS,
    },
    Plugin {
        class: "io.debezium.connector.mysql.MySqlConnector",
        task_class: "io.debezium.connector.mysql.MySqlConnectorTask",
        keys: MYSQL_KEYS,
    },
    Plugin {
        class: "io.debezium.connector.postgresql.PostgresConnector",
        task_class: "io.debezium.connector.postgresql.PostgresConnectorTask",
        keys: POSTGRES_KEYS,
    },
];

/// `PluginUtils.prunedName`: the alias without the `Connector` suffix.
fn pruned(name: &str) -> &str {
    match name.strip_suffix("Connector") {
        Some(p) if !p.is_empty() => p,
        _ => name,
    }
}

/// Plugins resolve by full class name, simple name, or alias (apis.md §2.6).
fn resolve_plugin(name: &str) -> Option<&'static Plugin> {
    PLUGINS.iter().find(|p| {
        let simple = p.class.rsplit('.').next().unwrap_or(p.class);
        name == p.class || name == simple || name == pruned(simple)
    })
}

impl Plugin {
    fn keys(&self) -> impl Iterator<Item = &'static Key> {
        CONNECT_KEYS
            .iter()
            .chain(self.keys.iter())
            .chain(DEBEZIUM_COMMON.iter())
    }
}

struct Checked {
    key: &'static Key,
    value: Option<String>,
    errors: Vec<String>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `AbstractHerder.validateConnectorConfig` for the modelled keys.
fn validate(plugin: &Plugin, config: &Config) -> Vec<Checked> {
    plugin
        .keys()
        .map(|key| {
            let raw = config.get(key.name);
            let text = raw.and_then(Value::as_str);
            let blank = text.is_none_or(|t| t.trim().is_empty());
            let dbz_invalid = |problem: String| format!("The '{}' value is invalid: {problem}", key.name);
            let mut errors = Vec::new();
            if raw == Some(&Value::Null) {
                errors.push("Null value can not be supplied as the configuration value.".to_owned());
            }
            match (key.check, text) {
                (Check::Required | Check::RequiredName, _) if key.debezium && blank => {
                    errors.push(dbz_invalid("A value is required".into()))
                }
                (Check::RequiredName, Some(t)) if !valid_name(t) => errors.push(dbz_invalid(format!(
                    "{t} has invalid format (only the underscore, hyphen, dot and alphanumeric characters are allowed)"
                ))),
                (Check::ConnectionString, _) if blank => {
                    errors.push(dbz_invalid("Missing connection string".into()))
                }
                (Check::Required | Check::ConnectorName, None) if raw.is_none() => errors.push(format!(
                    "Missing required configuration \"{}\" which has no default value.",
                    key.name
                )),
                (Check::ConnectorName, Some("")) => errors
                    .push("Invalid value  for configuration name: String must be non-empty".into()),
                (Check::TasksMax, Some(t)) => match t.trim().parse::<i32>() {
                    Err(_) => errors.push(format!(
                        "Invalid value {t} for configuration tasks.max: Not a number of type INT"
                    )),
                    Ok(n) if n < 1 => errors.push(format!(
                        "Invalid value {n} for configuration tasks.max: Value must be at least 1"
                    )),
                    Ok(_) => {}
                },
                _ => {}
            }
            let value = match text {
                // `Password.toString()`, apis.md §2.6.
                Some(_) if key.ty == Type::Password => Some("[hidden]".to_owned()),
                Some(t) => Some(t.to_owned()),
                None if raw.is_some() => None,
                None => key.default.map(str::to_owned),
            };
            Checked { key, value, errors }
        })
        .collect()
}

fn groups(plugin: &Plugin) -> Vec<&'static str> {
    let mut groups = Vec::new();
    for key in plugin.keys() {
        if !groups.contains(&key.group) {
            groups.push(key.group);
        }
    }
    groups
}

/// `ConfigKeyInfo`; note `order` (not `order_in_group`), apis.md §2.6.
fn definition(plugin: &Plugin, key: &Key) -> Value {
    let order = plugin
        .keys()
        .filter(|k| k.group == key.group)
        .position(|k| k.name == key.name)
        .map_or(0, |i| i + 1);
    let required = key.default.is_none() && !matches!(key.check, Check::None | Check::TasksMax);
    json!({
        "name": key.name,
        "type": key.ty.name(),
        "required": required,
        "default_value": key.default,
        "importance": if required { "HIGH" } else { "MEDIUM" },
        "documentation": "",
        "group": key.group,
        "width": "MEDIUM",
        "display_name": key.name,
        "dependents": [],
        "order": order,
    })
}

fn config_infos(plugin: &Plugin, checked: &[Checked]) -> Value {
    let configs: Vec<Value> = checked
        .iter()
        .map(|c| {
            json!({
                "definition": definition(plugin, c.key),
                "value": {
                    "name": c.key.name,
                    "value": c.value,
                    "recommended_values": [],
                    "errors": c.errors,
                    "visible": true,
                },
            })
        })
        .collect();
    json!({
        "name": plugin.class,
        "error_count": checked.iter().map(|c| c.errors.len()).sum::<usize>(),
        "groups": groups(plugin),
        "configs": configs,
    })
}

/// `Map.toString()` as it appears in Connect error messages.
fn java_map(config: &Config) -> String {
    let entries: Vec<String> = config
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("null")))
        .collect();
    format!("{{{}}}", entries.join(", "))
}

fn no_connector_type(config: &Config) -> ConnectError {
    error(
        StatusCode::BAD_REQUEST,
        format!(
            "Connector config {} contains no connector type",
            java_map(config)
        ),
    )
}

fn unknown_class(class: &str) -> ConnectError {
    // Upstream lists full `PluginDesc` entries; class names are enough to act on.
    let available: Vec<&str> = PLUGINS.iter().map(|p| p.class).collect();
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "Failed to find any class that implements Connector and which name matches {class}, available connectors are: {}",
            available.join(", ")
        ),
    )
}

/// The validation POST /connectors and PUT/PATCH config run before writing (apis.md §2.6).
fn check_config(config: &Config) -> Result<&'static Plugin, ConnectError> {
    let class = match config.get("connector.class") {
        Some(Value::String(c)) => c,
        _ => return Err(no_connector_type(config)),
    };
    let plugin = resolve_plugin(class).ok_or_else(|| unknown_class(class))?;
    let errors: Vec<String> = validate(plugin, config)
        .into_iter()
        .flat_map(|c| c.errors)
        .collect();
    if errors.is_empty() {
        return Ok(plugin);
    }
    Err(error(
        StatusCode::BAD_REQUEST,
        format!(
            "Connector configuration is invalid and contains the following {} error(s):\n{}\nYou can also find the above list of errors at the endpoint `/connector-plugins/{{connectorType}}/config/validate`",
            errors.len(),
            errors.join("\n")
        ),
    ))
}

// ---------------------------------------------------------------------------------------------
// Request bodies. Jackson failures are not WebApplicationExceptions, so ConnectExceptionMapper
// turns them into 500s.

fn parse_json(body: &Bytes) -> Result<Value, ConnectError> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Binds a JSON object to `Map<String, String>`: scalars become their text (apis.md §2.7).
fn to_config(value: &Value) -> Result<Config, ConnectError> {
    let Value::Object(map) = value else {
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "Cannot deserialize value of type `java.util.LinkedHashMap<java.lang.String,java.lang.String>` from {} value",
                json_kind(value)
            ),
        ));
    };
    map.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(_) | Value::Null => v.clone(),
                Value::Number(n) => n.to_string().into(),
                Value::Bool(b) => b.to_string().into(),
                other => {
                    return Err(error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "Cannot deserialize value of type `java.lang.String` from {} value",
                            json_kind(other)
                        ),
                    ))
                }
            };
            Ok((k.clone(), v))
        })
        .collect()
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "Object",
        Value::Array(_) => "Array",
        Value::String(_) => "String",
        Value::Number(_) => "Number",
        Value::Bool(_) => "Boolean",
        Value::Null => "Null",
    }
}

/// `checkAndPutConnectorConfigName`.
fn put_name(name: &str, config: &mut Config) -> Result<(), ConnectError> {
    match config.get("name").and_then(Value::as_str) {
        Some(included) if included != name => Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "Connector name configuration ({included}) doesn't match connector name in the URL ({name})"
            ),
        )),
        Some(_) => Ok(()),
        None => {
            config.insert("name".into(), name.into());
            Ok(())
        }
    }
}

/// Jersey's `@DefaultValue("false") boolean` query parameters.
fn query_flag(pairs: &[(String, String)], key: &str) -> bool {
    query_get(pairs, key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

// ---------------------------------------------------------------------------------------------
// Cluster state (apis.md §2.3)

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Running,
    Paused,
    Stopped,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Paused,
    Failed,
    Restarting,
    Stopped,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Running => "RUNNING",
            Phase::Paused => "PAUSED",
            Phase::Failed => "FAILED",
            Phase::Restarting => "RESTARTING",
            Phase::Stopped => "STOPPED",
        }
    }
}

#[derive(Clone)]
struct Instance {
    state: Phase,
    trace: Option<String>,
    /// When a RESTARTING instance comes back up.
    back_at: Option<Instant>,
}

impl Instance {
    fn new(state: Phase) -> Self {
        Self {
            state,
            trace: None,
            back_at: None,
        }
    }

    fn restart(&mut self, back_at: Instant) {
        *self = Self {
            state: Phase::Restarting,
            trace: None,
            back_at: Some(back_at),
        };
    }

    fn fail(&mut self, trace: &str) {
        *self = Self {
            state: Phase::Failed,
            trace: Some(trace.to_owned()),
            back_at: None,
        };
    }

    /// Follows a target-state change unless it is down (FAILED is never restarted
    /// automatically) or mid-restart (it settles into the new target later).
    fn follow(&mut self, state: Phase) {
        if !matches!(self.state, Phase::Failed | Phase::Restarting) {
            self.state = state;
        }
    }

    fn json(&self, id: Option<usize>, worker_id: &str) -> Value {
        let mut out = Map::new();
        if let Some(id) = id {
            out.insert("id".into(), id.into());
        }
        out.insert("state".into(), self.state.name().into());
        out.insert("worker_id".into(), worker_id.into());
        // `@JsonInclude(NON_EMPTY)`: only failed instances carry a trace.
        if let Some(trace) = &self.trace {
            out.insert("trace".into(), trace.clone().into());
        }
        out.into()
    }
}

struct Connector {
    config: Config,
    plugin: &'static Plugin,
    target: Target,
    connector: Instance,
    tasks: Vec<Instance>,
}

impl Connector {
    fn new(config: Config, plugin: &'static Plugin, target: Target) -> Self {
        let mut c = Self {
            config,
            plugin,
            target,
            connector: Instance::new(Phase::Running),
            tasks: Vec::new(),
        };
        c.connector = Instance::new(c.steady_connector());
        c.start_tasks();
        c
    }

    fn steady_connector(&self) -> Phase {
        match self.target {
            Target::Running => Phase::Running,
            Target::Paused => Phase::Paused,
            Target::Stopped => Phase::Stopped,
        }
    }

    fn steady_task(&self) -> Phase {
        match self.target {
            Target::Paused => Phase::Paused,
            _ => Phase::Running,
        }
    }

    /// A STOPPED connector has an empty task-config list (KIP-875).
    fn start_tasks(&mut self) {
        let count = if self.target == Target::Stopped {
            0
        } else {
            TASKS_PER_CONNECTOR
        };
        self.tasks = vec![Instance::new(self.steady_task()); count];
    }

    fn settle(&mut self, now: Instant) {
        let (conn, task) = (self.steady_connector(), self.steady_task());
        let done = |i: &Instance| i.back_at.is_some_and(|t| t <= now);
        if done(&self.connector) {
            self.connector = Instance::new(conn);
        }
        for t in self.tasks.iter_mut().filter(|t| done(t)) {
            *t = Instance::new(task);
        }
    }

    fn set_target(&mut self, target: Target) {
        self.target = target;
        if target == Target::Stopped {
            self.tasks.clear();
            self.connector = Instance::new(Phase::Stopped);
            return;
        }
        self.connector.follow(self.steady_connector());
        if self.tasks.is_empty() {
            self.start_tasks();
        } else {
            let state = self.steady_task();
            self.tasks.iter_mut().for_each(|t| t.follow(state));
        }
    }

    /// A config write restarts the connector and regenerates its tasks; the target state stays.
    fn reconfigure(&mut self, config: Config, plugin: &'static Plugin) {
        self.config = config;
        self.plugin = plugin;
        self.connector = Instance::new(self.steady_connector());
        self.start_tasks();
    }

    fn status(&self, name: &str, worker_id: &str) -> Value {
        let tasks: Vec<Value> = self
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| t.json(Some(i), worker_id))
            .collect();
        json!({
            "name": name,
            "connector": self.connector.json(None, worker_id),
            "tasks": tasks,
            "type": "source",
        })
    }

    fn info(&self, name: &str) -> Value {
        let tasks: Vec<Value> = (0..self.tasks.len())
            .map(|i| json!({"connector": name, "task": i}))
            .collect();
        json!({"name": name, "config": self.config, "tasks": tasks, "type": "source"})
    }
}

struct Cluster {
    worker_id: String,
    connectors: BTreeMap<String, Connector>,
    /// Requests still to be failed by an admin-triggered rebalance.
    pending_rebalances: u32,
    /// The window is a stale worker config rather than a rebalance: only forwarded writes fail.
    stale_writes_only: bool,
}

/// Shared worker state; clone freely.
#[derive(Clone)]
pub struct ConnectState(Arc<Mutex<Cluster>>);

impl ConnectState {
    /// `worker_id` is what status objects report, e.g. `127.0.0.1:8083`.
    pub fn new(worker_id: impl Into<String>) -> Self {
        Self(Arc::new(Mutex::new(Cluster {
            worker_id: worker_id.into(),
            connectors: BTreeMap::new(),
            pending_rebalances: 0,
            stale_writes_only: false,
        })))
    }

    /// Locks the cluster with every finished restart already applied.
    fn lock(&self) -> MutexGuard<'_, Cluster> {
        let mut cluster = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        cluster.connectors.values_mut().for_each(|c| c.settle(now));
        cluster
    }
}

fn connector_not_found(name: &str) -> ConnectError {
    error(StatusCode::NOT_FOUND, format!("Connector {name} not found"))
}

pub fn router(state: ConnectState) -> Router {
    Router::new()
        .route("/", get(worker_info))
        .route("/connectors", get(list_connectors).post(create_connector))
        .route(
            "/connectors/{name}",
            get(get_connector).delete(delete_connector),
        )
        .route(
            "/connectors/{name}/config",
            get(get_config).put(put_config).patch(patch_config),
        )
        .route("/connectors/{name}/status", get(connector_status))
        .route("/connectors/{name}/tasks", get(list_tasks))
        .route("/connectors/{name}/tasks/{task}/status", get(task_status))
        .route(
            "/connectors/{name}/tasks/{task}/restart",
            post(restart_task),
        )
        .route("/connectors/{name}/pause", put(pause))
        .route("/connectors/{name}/resume", put(resume))
        .route("/connectors/{name}/stop", put(stop))
        .route("/connectors/{name}/restart", post(restart_connector))
        .route("/connector-plugins", get(list_plugins))
        .route("/connector-plugins/{plugin}/config", get(plugin_config))
        .route(
            "/connector-plugins/{plugin}/config/validate",
            put(validate_config),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "HTTP 404 Not Found") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "HTTP 405 Method Not Allowed",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rebalance_guard,
        ))
        .with_state(state)
}

/// Serves the rebalance window opened by `POST /__sandbox/rebalance`.
async fn rebalance_guard(State(s): State<ConnectState>, req: Request, next: Next) -> Response {
    if let Some(kind) = rebalance_kind(req.method(), req.uri().path()) {
        let hit = {
            let mut cluster = s.lock();
            let spared = cluster.stale_writes_only && matches!(kind, Rebalance::Expected);
            let hit = cluster.pending_rebalances > 0 && !spared;
            if hit {
                cluster.pending_rebalances -= 1;
            }
            hit
        };
        if hit {
            return match kind {
                Rebalance::Conflict => rebalance_conflict(),
                Rebalance::Expected => {
                    error(StatusCode::INTERNAL_SERVER_ERROR, REBALANCE_EXPECTED).into_response()
                }
            };
        }
    }
    next.run(req).await
}

async fn worker_info() -> Json<Value> {
    Json(json!({
        "version": "3.9.0",
        "commit": "a60e31147e6b01ee",
        "kafka_cluster_id": "sNQdF0ZCR2qwOQ8ZbLwpEw",
    }))
}

async fn list_connectors(State(s): State<ConnectState>, RawQuery(query): RawQuery) -> Json<Value> {
    let pairs = query_pairs(query.as_deref());
    let expand: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "expand")
        .map(|(_, v)| v.as_str())
        .collect();
    let cluster = s.lock();
    if expand.is_empty() {
        return Json(
            cluster
                .connectors
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .into(),
        );
    }
    // KIP-465: any `expand` switches to a map; unknown expansions are ignored.
    let map: Map<String, Value> = cluster
        .connectors
        .iter()
        .map(|(name, c)| {
            let mut entry = Map::new();
            if expand.contains(&"status") {
                entry.insert("status".into(), c.status(name, &cluster.worker_id));
            }
            if expand.contains(&"info") {
                entry.insert("info".into(), c.info(name));
            }
            (name.clone(), entry.into())
        })
        .collect();
    Json(map.into())
}

fn created(name: &str, info: Value) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/connectors/{name}"))],
        Json(info),
    )
        .into_response()
}

async fn create_connector(State(s): State<ConnectState>, body: Bytes) -> Res {
    let request = parse_json(&body)?;
    let Value::Object(request) = request else {
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "Cannot deserialize value of type `org.apache.kafka.connect.runtime.rest.entities.CreateConnectorRequest` from {} value",
                json_kind(&request)
            ),
        ));
    };
    // apis.md §2.2: the name is trimmed; a missing name is empty and fails validation.
    let name = match request.get("name") {
        Some(Value::String(n)) => n.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let target = match request.get("initial_state") {
        None | Some(Value::Null) => Target::Running,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("running") => Target::Running,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("paused") => Target::Paused,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("stopped") => Target::Stopped,
        Some(other) => {
            let shown = other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_uppercase);
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "Cannot construct instance of `org.apache.kafka.connect.runtime.rest.entities.CreateConnectorRequest$InitialState`, problem: No enum constant org.apache.kafka.connect.runtime.rest.entities.CreateConnectorRequest.InitialState.{shown}"
                ),
            ));
        }
    };
    let mut config = match request.get("config") {
        Some(Value::Null) | None => {
            // The resource dereferences the missing map: an NPE, mapped to 500.
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Cannot invoke \"java.util.Map.get(Object)\" because \"connectorConfig\" is null",
            ));
        }
        Some(config) => to_config(config)?,
    };
    put_name(&name, &mut config)?;
    // DistributedHerder validates before it looks for an existing connector.
    let plugin = check_config(&config)?;
    let mut cluster = s.lock();
    if cluster.connectors.contains_key(&name) {
        return Err(error(
            StatusCode::CONFLICT,
            format!("Connector {name} already exists"),
        ));
    }
    let connector = Connector::new(config, plugin, target);
    // Tasks are generated asynchronously, so the creation response lists none.
    let mut info = connector.info(&name);
    info["tasks"] = json!([]);
    cluster.connectors.insert(name.clone(), connector);
    Ok(created(&name, info))
}

async fn get_connector(State(s): State<ConnectState>, Path(name): Path<String>) -> Res {
    let cluster = s.lock();
    let c = cluster
        .connectors
        .get(&name)
        .ok_or_else(|| connector_not_found(&name))?;
    Ok(Json(c.info(&name)).into_response())
}

async fn delete_connector(State(s): State<ConnectState>, Path(name): Path<String>) -> Res {
    match s.lock().connectors.remove(&name) {
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        None => Err(connector_not_found(&name)),
    }
}

async fn get_config(State(s): State<ConnectState>, Path(name): Path<String>) -> Res {
    let cluster = s.lock();
    let c = cluster
        .connectors
        .get(&name)
        .ok_or_else(|| connector_not_found(&name))?;
    Ok(Json(c.config.clone()).into_response())
}

async fn put_config(State(s): State<ConnectState>, Path(name): Path<String>, body: Bytes) -> Res {
    let mut config = to_config(&parse_json(&body)?)?;
    put_name(&name, &mut config)?;
    let plugin = check_config(&config)?;
    let mut cluster = s.lock();
    // Upsert: an existing connector keeps its target state, a new one starts RUNNING (§2.2).
    if let Some(c) = cluster.connectors.get_mut(&name) {
        c.reconfigure(config, plugin);
        return Ok(Json(c.info(&name)).into_response());
    }
    let connector = Connector::new(config, plugin, Target::Running);
    let mut info = connector.info(&name);
    info["tasks"] = json!([]);
    cluster.connectors.insert(name.clone(), connector);
    Ok(created(&name, info))
}

async fn patch_config(State(s): State<ConnectState>, Path(name): Path<String>, body: Bytes) -> Res {
    let patch = to_config(&parse_json(&body)?)?;
    let mut cluster = s.lock();
    let c = cluster
        .connectors
        .get_mut(&name)
        .ok_or_else(|| connector_not_found(&name))?;
    let mut config = c.config.clone();
    for (k, v) in patch {
        if v.is_null() {
            config.shift_remove(&k);
        } else {
            config.insert(k, v);
        }
    }
    put_name(&name, &mut config)?;
    let plugin = check_config(&config)?;
    c.reconfigure(config, plugin);
    Ok(Json(c.info(&name)).into_response())
}

async fn connector_status(State(s): State<ConnectState>, Path(name): Path<String>) -> Res {
    let cluster = s.lock();
    let c = cluster.connectors.get(&name).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("No status found for connector {name}"),
        )
    })?;
    Ok(Json(c.status(&name, &cluster.worker_id)).into_response())
}

async fn list_tasks(State(s): State<ConnectState>, Path(name): Path<String>) -> Res {
    let cluster = s.lock();
    let c = cluster
        .connectors
        .get(&name)
        .ok_or_else(|| connector_not_found(&name))?;
    let tasks: Vec<Value> = (0..c.tasks.len())
        .map(|i| {
            let mut config = c.config.clone();
            config.insert("task.class".into(), c.plugin.task_class.into());
            json!({"id": {"connector": name, "task": i}, "config": config})
        })
        .collect();
    Ok(Json(tasks).into_response())
}

/// Path task ids are `int` parameters: a non-number fails conversion, which JAX-RS reports as 404.
fn task_id(raw: &str) -> Result<usize, ConnectError> {
    raw.parse()
        .map_err(|_| error(StatusCode::NOT_FOUND, "HTTP 404 Not Found"))
}

async fn task_status(
    State(s): State<ConnectState>,
    Path((name, task)): Path<(String, String)>,
) -> Res {
    let id = task_id(&task)?;
    let cluster = s.lock();
    let t = cluster
        .connectors
        .get(&name)
        .and_then(|c| c.tasks.get(id))
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!("No status found for task {name}-{id}"),
            )
        })?;
    Ok(Json(t.json(Some(id), &cluster.worker_id)).into_response())
}

async fn restart_task(
    State(s): State<ConnectState>,
    Path((name, task)): Path<(String, String)>,
) -> Res {
    let id = task_id(&task)?;
    let mut cluster = s.lock();
    let c = cluster
        .connectors
        .get_mut(&name)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("Unknown connector: {name}")))?;
    let state = c.steady_task();
    let t = c
        .tasks
        .get_mut(id)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("Unknown task: {name}-{id}")))?;
    *t = Instance::new(state);
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn set_target(s: &ConnectState, name: &str, target: Target) -> Result<(), ConnectError> {
    let mut cluster = s.lock();
    let c = cluster
        .connectors
        .get_mut(name)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("Unknown connector {name}")))?;
    c.set_target(target);
    Ok(())
}

async fn pause(State(s): State<ConnectState>, Path(name): Path<String>) -> Res {
    set_target(&s, &name, Target::Paused)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn resume(State(s): State<ConnectState>, Path(name): Path<String>) -> Res {
    set_target(&s, &name, Target::Running)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn stop(State(s): State<ConnectState>, Path(name): Path<String>) -> Res {
    set_target(&s, &name, Target::Stopped)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// KIP-745 (apis.md §2.4).
async fn restart_connector(
    State(s): State<ConnectState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Res {
    let pairs = query_pairs(query.as_deref());
    let (include_tasks, only_failed) = (
        query_flag(&pairs, "includeTasks"),
        query_flag(&pairs, "onlyFailed"),
    );
    let mut cluster = s.lock();
    let worker_id = cluster.worker_id.clone();
    let c = cluster
        .connectors
        .get_mut(&name)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("Unknown connector: {name}")))?;
    if !include_tasks && !only_failed {
        // Legacy form: the Connector instance only, synchronously.
        c.connector = Instance::new(c.steady_connector());
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let back_at = Instant::now() + RESTART_DELAY;
    if !only_failed || c.connector.state == Phase::Failed {
        c.connector.restart(back_at);
    }
    if include_tasks {
        for t in &mut c.tasks {
            if !only_failed || t.state == Phase::Failed {
                t.restart(back_at);
            }
        }
    }
    Ok((StatusCode::ACCEPTED, Json(c.status(&name, &worker_id))).into_response())
}

async fn list_plugins() -> Json<Value> {
    let plugins: Vec<Value> = PLUGINS
        .iter()
        .map(|p| json!({"class": p.class, "type": "source", "version": DEBEZIUM_VERSION}))
        .collect();
    Json(plugins.into())
}

async fn plugin_config(Path(plugin): Path<String>) -> Res {
    let p = resolve_plugin(&plugin).ok_or_else(|| {
        // Wording is a guess; apis.md does not cover unknown plugins here.
        error(StatusCode::NOT_FOUND, format!("Unknown plugin {plugin}."))
    })?;
    let defs: Vec<Value> = p
        .keys
        .iter()
        .chain(DEBEZIUM_COMMON)
        .map(|k| definition(p, k))
        .collect();
    Ok(Json(defs).into_response())
}

async fn validate_config(Path(plugin): Path<String>, body: Bytes) -> Res {
    let config = to_config(&parse_json(&body)?)?;
    let class = match config.get("connector.class") {
        Some(Value::String(c)) => c,
        _ => return Err(no_connector_type(&config)),
    };
    if !pruned(class).ends_with(pruned(&plugin)) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("Included connector type {class} does not match request type {plugin}"),
        ));
    }
    let p = resolve_plugin(class).ok_or_else(|| unknown_class(class))?;
    Ok(Json(config_infos(p, &validate(p, &config))).into_response())
}

// ---------------------------------------------------------------------------------------------
// Test-only admin endpoints (not faulted, not counted).

const TASK_TRACE: &str = "org.apache.kafka.connect.errors.ConnectException: An exception occurred in the change event producer. This connector will be stopped.\n\tat io.debezium.pipeline.ErrorHandler.setProducerThrowable(ErrorHandler.java:67)\n\tat io.debezium.pipeline.ChangeEventSourceCoordinator.executeChangeEventSources(ChangeEventSourceCoordinator.java:272)\nCaused by: org.apache.kafka.connect.errors.ConnectException: sandbox: injected task failure\n";
const CONNECTOR_TRACE: &str = "org.apache.kafka.connect.errors.ConnectException: sandbox: injected connector failure\n\tat io.debezium.connector.common.BaseSourceConnector.start(BaseSourceConnector.java:41)\n\tat org.apache.kafka.connect.runtime.WorkerConnector.doStart(WorkerConnector.java:190)\n";

/// `POST /__sandbox/connectors/{n}/fail`, `POST /__sandbox/connectors/{n}/tasks/{id}/fail`,
/// `POST /__sandbox/rebalance?count=N`.
pub fn admin_router(state: ConnectState) -> Router {
    Router::new()
        .route("/__sandbox/connectors/{name}/fail", post(fail_connector))
        .route(
            "/__sandbox/connectors/{name}/tasks/{task}/fail",
            post(fail_task),
        )
        .route("/__sandbox/rebalance", post(start_rebalance))
        .with_state(state)
}

async fn fail_connector(State(s): State<ConnectState>, Path(name): Path<String>) -> Res {
    let mut cluster = s.lock();
    let worker_id = cluster.worker_id.clone();
    let c = cluster
        .connectors
        .get_mut(&name)
        .ok_or_else(|| connector_not_found(&name))?;
    c.connector.fail(CONNECTOR_TRACE);
    Ok(Json(c.status(&name, &worker_id)).into_response())
}

async fn fail_task(
    State(s): State<ConnectState>,
    Path((name, task)): Path<(String, String)>,
) -> Res {
    let id = task_id(&task)?;
    let mut cluster = s.lock();
    let worker_id = cluster.worker_id.clone();
    let c = cluster
        .connectors
        .get_mut(&name)
        .ok_or_else(|| connector_not_found(&name))?;
    let t = c
        .tasks
        .get_mut(id)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("Unknown task: {name}-{id}")))?;
    t.fail(TASK_TRACE);
    Ok(Json(c.status(&name, &worker_id)).into_response())
}

/// The next `count` (default 1) affected requests fail as during a rebalance: forwarded writes
/// with 409, `GET /connectors/{n}` and `GET /connectors/{n}/config` with 500. With
/// `writes_only=true`, as on a worker whose config is stale while no rebalance is due
/// (`completeOrForwardRequest` refuses, `completeRequest` serves): only the writes fail.
async fn start_rebalance(State(s): State<ConnectState>, RawQuery(query): RawQuery) -> Res {
    let pairs = query_pairs(query.as_deref());
    let count = match query_get(&pairs, "count") {
        None => 1,
        Some(c) => c
            .parse::<u32>()
            .map_err(|_| error(StatusCode::BAD_REQUEST, format!("invalid count '{c}'")))?,
    };
    let writes_only = query_get(&pairs, "writes_only") == Some("true");
    let mut cluster = s.lock();
    cluster.pending_rebalances = count;
    cluster.stale_writes_only = writes_only;
    Ok(Json(json!({ "pending": count, "writes_only": writes_only })).into_response())
}
