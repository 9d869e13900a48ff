//! Making a connector from the manifest and one read from Kafka Connect comparable.
//!
//! Both sides become `{"config": {string: string}, "state": "running"|"paused"|"stopped"}`:
//! Connect stores configs as `Map<String,String>` and injects `name` (apis.md §2.7), and
//! Confluent Platform adds `__internal.*` keys (peers.md §1.3), so all of that is evened out.

use serde_json::{json, Map, Value};

/// The ownership marker goes in the connector config: Connect passes unknown keys through to
/// the connector, which ignores them.
pub use crate::provider::owner::OWNER_KEY;

pub const RUNNING: &str = "running";

/// A config value as Connect stores and returns it: `10` → `"10"`, `true` → `"true"`.
fn as_config_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Keys that are not the user's config: the injected `name`, server-internal keys and
/// ofctl's own marker.
fn is_injected(key: &str) -> bool {
    key == "name" || key.starts_with("__internal.") || key == OWNER_KEY
}

fn comparable_config(config: Option<&Value>) -> Map<String, Value> {
    config
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !is_injected(k))
                .map(|(k, v)| (k.clone(), Value::String(as_config_string(v))))
                .collect()
        })
        .unwrap_or_default()
}

/// Manifest spec (inline, or the platform's `{name, config}` file) → comparable spec.
pub fn normalize_desired(spec: &Value) -> Value {
    let state = spec.get("state").and_then(Value::as_str).unwrap_or(RUNNING);
    json!({ "config": comparable_config(spec.get("config")), "state": state })
}

/// What the bulk read says about one connector: comparable spec, ownership, health notes.
pub struct Live {
    pub spec: Value,
    /// The ownership marker in its config, if any.
    pub marker: Option<String>,
    pub notes: Vec<String>,
}

/// `info` is a ConnectorInfo (`{name, config, tasks, type}`), `status` the status object of
/// apis.md §2.3 (absent when Connect has none yet).
pub fn normalize_live(name: &str, info: &Value, status: Option<&Value>) -> Live {
    let raw = info.get("config");
    let marker = raw
        .and_then(|c| c.get(OWNER_KEY))
        .and_then(Value::as_str)
        .map(str::to_string);
    let (state, notes) = match status {
        Some(s) => state_and_notes(name, s),
        None => (
            RUNNING,
            vec!["Kafka Connect reports no status for it yet".to_string()],
        ),
    };
    Live {
        spec: json!({ "config": comparable_config(raw), "state": state }),
        marker,
        notes,
    }
}

/// The target state a status shows, and what is wrong with the connector or its tasks.
///
/// Only RUNNING, PAUSED and STOPPED are target states. FAILED, UNASSIGNED and RESTARTING
/// are what happened to a connector meant to run, so they read as `running` (no change is
/// planned for them) and are reported as notes instead: Kafka Connect never restarts a
/// FAILED connector or task by itself (apis.md §2.3), and the plan is where an operator
/// should learn about it.
fn state_and_notes(name: &str, status: &Value) -> (&'static str, Vec<String>) {
    let mut notes = Vec::new();
    let connector = status
        .pointer("/connector/state")
        .and_then(Value::as_str)
        .unwrap_or("UNKNOWN");
    let state = match connector {
        "PAUSED" => "paused",
        "STOPPED" => "stopped",
        "RUNNING" => RUNNING,
        other => {
            notes.push(unhealthy("the connector", other, status.get("connector")));
            RUNNING
        }
    };
    for task in status
        .get("tasks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let task_state = task
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("UNKNOWN");
        if matches!(task_state, "RUNNING" | "PAUSED") {
            continue;
        }
        let id = task.get("id").map(as_config_string).unwrap_or_default();
        notes.push(unhealthy(&format!("task {id}"), task_state, Some(task)));
    }
    if notes.iter().any(|n| n.contains("FAILED")) {
        notes.push(format!(
            "Kafka Connect does not restart failed instances: POST /connectors/{name}/restart?includeTasks=true&onlyFailed=true"
        ));
    }
    (state, notes)
}

fn unhealthy(what: &str, state: &str, entry: Option<&Value>) -> String {
    // The first line of a Java trace is the exception and its message; the rest is frames.
    let cause = entry
        .and_then(|e| e.get("trace"))
        .and_then(Value::as_str)
        .and_then(|t| t.lines().next())
        .map(|line| {
            let short: String = line.chars().take(300).collect();
            format!(": {short}")
        })
        .unwrap_or_default();
    format!("{what} is {state}{cause}")
}

/// The config map sent to Connect: every value a string, plus `name` (Connect wants it in
/// the body as well as the path, openframe.md §5.4) and this tenant's ownership marker.
pub fn wire_config(name: &str, desired: &Value, owner: &str) -> Value {
    let mut config = comparable_config(desired.get("config"));
    config.insert("name".into(), json!(name));
    config.insert(OWNER_KEY.into(), json!(owner));
    Value::Object(config)
}

/// A spec's desired target state (`running` unless set).
pub fn state_of(spec: &Value) -> &str {
    spec.get("state").and_then(Value::as_str).unwrap_or(RUNNING)
}

/// Names inside the spec must be the connector's name: the platform's `{name, config}` files
/// carry one at the top, and Connect rejects a `config.name` that differs from the path.
pub fn check_spec(name: &str, spec: &Value) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    for pointer in ["/name", "/config/name"] {
        if let Some(value) = spec.pointer(pointer) {
            let inner = as_config_string(value);
            if inner != name {
                errors.push((
                    pointer.to_string(),
                    format!(
                        "the connector name here is `{inner}` but metadata.name is `{name}`; they must be equal (Kafka Connect has one name per connector)"
                    ),
                ));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_config_reduces_to_the_users_strings() {
        // What Kafka Connect 3.9 returns in `info` for a connector created with numbers.
        let info = json!({
            "name": "pg",
            "config": {
                "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
                "topic.creation.default.partitions": "10",
                "name": "pg",
                "__internal.config.version": "1",
                "ofctl.openframe.io/managed-by": "ofctl"
            },
            "tasks": [{"connector": "pg", "task": 0}],
            "type": "source"
        });
        let status = json!({"name": "pg", "connector": {"state": "RUNNING", "worker_id": "w"},
                            "tasks": [{"id": 0, "state": "RUNNING", "worker_id": "w"}], "type": "source"});
        let live = normalize_live("pg", &info, Some(&status));
        assert_eq!(live.marker.as_deref(), Some("ofctl"));
        assert!(live.notes.is_empty(), "{:?}", live.notes);
        let desired = normalize_desired(&json!({
            "name": "pg",
            "config": {
                "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
                "topic.creation.default.partitions": 10
            }
        }));
        assert_eq!(desired, live.spec);
        assert_eq!(desired["state"], "running");
    }

    #[test]
    fn numbers_and_booleans_become_strings() {
        let d = normalize_desired(
            &json!({"config": {"a": 1, "b": true, "c": 1.5, "d": "x"}, "state": "paused"}),
        );
        assert_eq!(
            d,
            json!({"config": {"a": "1", "b": "true", "c": "1.5", "d": "x"}, "state": "paused"})
        );
    }

    #[test]
    fn target_states_and_failures() {
        let info = json!({"config": {"connector.class": "C"}});
        let status = |c: &str, tasks: Value| json!({"connector": {"state": c}, "tasks": tasks});
        for (c, want) in [
            ("PAUSED", "paused"),
            ("STOPPED", "stopped"),
            ("RUNNING", "running"),
        ] {
            let live = normalize_live("x", &info, Some(&status(c, json!([]))));
            assert_eq!(live.spec["state"], want);
            assert!(live.notes.is_empty());
            assert_eq!(live.marker, None);
        }
        let failed = status(
            "RUNNING",
            json!([{"id": 0, "state": "FAILED", "trace": "org.apache.kafka.connect.errors.ConnectException: boom\n\tat x.y"}]),
        );
        let live = normalize_live("x", &info, Some(&failed));
        assert_eq!(live.spec["state"], "running");
        assert_eq!(
            live.notes[0],
            "task 0 is FAILED: org.apache.kafka.connect.errors.ConnectException: boom"
        );
        assert!(live.notes[1].contains("/connectors/x/restart?includeTasks=true&onlyFailed=true"));
        let unassigned = normalize_live("x", &info, Some(&status("UNASSIGNED", json!([]))));
        assert_eq!(unassigned.spec["state"], "running");
        assert_eq!(unassigned.notes, vec!["the connector is UNASSIGNED"]);
        let none = normalize_live("x", &info, None);
        assert_eq!(none.spec["state"], "running");
        assert_eq!(none.notes.len(), 1);
    }

    #[test]
    fn wire_config_carries_name_and_marker() {
        let w = wire_config(
            "pg",
            &json!({"config": {"tasks.max": 1}, "state": "running"}),
            "ofctl/t/e",
        );
        assert_eq!(
            w,
            json!({"tasks.max": "1", "name": "pg", "ofctl.openframe.io/managed-by": "ofctl/t/e"})
        );
    }

    #[test]
    fn names_inside_the_spec_must_match() {
        assert!(check_spec("pg", &json!({"name": "pg", "config": {"name": "pg"}})).is_empty());
        let errs = check_spec("pg", &json!({"name": "other", "config": {"name": "x"}}));
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].0, "/name");
        assert!(errs[0].1.contains("`other`") && errs[0].1.contains("`pg`"));
        assert_eq!(errs[1].0, "/config/name");
    }
}
