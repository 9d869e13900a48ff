//! Making a topic from the manifest and one read from the brokers comparable, and working out
//! which admin calls an update needs.
//!
//! Both sides have the same three fields: `partitions`, `replication_factor`, and `config`
//! holding only the topic's own overrides (what `describe_configs` reports with source
//! DYNAMIC_TOPIC_CONFIG), all values as strings the way Kafka stores them. Broker defaults are
//! never part of the spec, so a manifest that sets nothing compares equal to a topic that
//! overrides nothing.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::kind::Effect;
use crate::kind::Finding;

/// Kafka's own limit (`Topic.MAX_NAME_LENGTH`) and legal characters.
const MAX_NAME_LENGTH: usize = 249;

/// Why a name is not a legal Kafka topic name, if it is not.
pub fn check_name(name: &str) -> Result<(), String> {
    if name == "." || name == ".." {
        return Err(format!("`{name}` is not a legal Kafka topic name"));
    }
    if name.len() > MAX_NAME_LENGTH {
        return Err(format!(
            "a Kafka topic name has at most {MAX_NAME_LENGTH} characters; `{name}` has {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{name}`: Kafka topic names may only contain ASCII letters, digits, `.`, `_` and `-` (found `{c}`)"
        ));
    }
    Ok(())
}

/// A count given as a number or a numeric string (a `${env:...}` placeholder resolves to one).
fn count(spec: &Value, field: &str) -> Result<i64, String> {
    let value = spec
        .get(field)
        .ok_or_else(|| format!("`{field}` is required"))?;
    let n = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match n {
        Some(n) if n >= 1 && n <= i64::from(i32::MAX) => Ok(n),
        _ => Err(format!("`{field}` must be a whole number ≥ 1, got {value}")),
    }
}

/// Kafka config values are strings; numbers and booleans are written the way Kafka prints them.
fn config_value(key: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!(
            "config[\"{key}\"] must be a string, number or boolean, got {other}"
        )),
    }
}

/// Manifest spec → comparable spec.
pub fn normalize_desired(name: &str, spec: &Value) -> Result<Value, String> {
    check_name(name)?;
    let mut config = Map::new();
    if let Some(map) = spec.get("config").and_then(Value::as_object) {
        // Sorted, so the spec reads the same whatever order the manifest used.
        let sorted: BTreeMap<_, _> = map.iter().collect();
        for (key, value) in sorted {
            config.insert(key.clone(), json!(config_value(key, value)?));
        }
    }
    Ok(json!({
        "partitions": count(spec, "partitions")?,
        "replication_factor": count(spec, "replication_factor")?,
        "config": config,
    }))
}

/// Live topic → comparable spec. `overrides` are the topic's own config entries.
pub fn live_spec(
    partitions: usize,
    replication_factor: usize,
    overrides: &[(String, String)],
) -> Value {
    let sorted: BTreeMap<_, _> = overrides.iter().map(|(k, v)| (k, v)).collect();
    let config: Map<String, Value> = sorted
        .into_iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "partitions": partitions,
        "replication_factor": replication_factor,
        "config": config,
    })
}

fn partitions(spec: &Value) -> i64 {
    spec.get("partitions").and_then(Value::as_i64).unwrap_or(0)
}

/// The config overrides of a normalized spec.
pub fn config_of(spec: &Value) -> Vec<(String, String)> {
    spec.get("config")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// A partition count can only grow (CreatePartitions); fewer partitions means a new topic.
pub fn findings(desired: &Value, live: &Value) -> Vec<Finding> {
    let (want, have) = (partitions(desired), partitions(live));
    if want < have {
        vec![Finding {
            effect: Effect::Replace,
            reason: format!(
                "partitions: Kafka cannot reduce a topic's partitions ({have} → {want}); only deleting and recreating the topic can, which loses its messages"
            ),
        }]
    } else {
        Vec::new()
    }
}

/// The admin calls an in-place update needs.
#[derive(Debug, PartialEq, Eq)]
pub struct UpdateSteps {
    /// CreatePartitions to this total.
    pub grow_to: Option<usize>,
    /// AlterConfigs with this complete set: the non-incremental call replaces every override
    /// of the topic, so everything the manifest wants is sent, and what it dropped goes back to
    /// the broker default.
    pub set_config: Option<Vec<(String, String)>>,
}

pub fn update_steps(desired: &Value, live: &Value) -> UpdateSteps {
    let (want, have) = (partitions(desired), partitions(live));
    UpdateSteps {
        grow_to: (want > have).then(|| usize::try_from(want).unwrap_or(0)),
        set_config: (desired.get("config") != live.get("config")).then(|| config_of(desired)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debezium_topic_defaults_normalize_to_strings() {
        // openframe.md §5: `topic.creation.default.*` written as JSON numbers or strings.
        let spec = json!({
            "partitions": 10, "replication_factor": "1",
            "config": {"compression.type": "lz4", "cleanup.policy": "compact",
                       "retention.ms": 604800000, "preallocate": false}
        });
        let desired = normalize_desired("tactical-rmm.postgres.events", &spec).unwrap();
        assert_eq!(
            desired,
            json!({"partitions": 10, "replication_factor": 1, "config": {
                "cleanup.policy": "compact", "compression.type": "lz4",
                "preallocate": "false", "retention.ms": "604800000"}})
        );
        let live = live_spec(
            10,
            1,
            &[
                ("retention.ms".into(), "604800000".into()),
                ("compression.type".into(), "lz4".into()),
                ("preallocate".into(), "false".into()),
                ("cleanup.policy".into(), "compact".into()),
            ],
        );
        assert_eq!(crate::json::digest(&desired), crate::json::digest(&live));
    }

    #[test]
    fn names_and_counts_are_checked() {
        assert!(check_name("fleet.query_results.events").is_ok());
        assert!(check_name("bad topic").unwrap_err().contains("` `"));
        assert!(check_name("..").is_err());
        assert!(check_name(&"x".repeat(250)).is_err());
        let err = normalize_desired("t", &json!({"partitions": 0, "replication_factor": 1}));
        assert!(err.unwrap_err().contains("partitions"));
        let err = normalize_desired("t", &json!({"partitions": 3}));
        assert!(err.unwrap_err().contains("replication_factor"));
        let err = normalize_desired(
            "t",
            &json!({"partitions": 3, "replication_factor": 1, "config": {"a": null}}),
        );
        assert!(err.unwrap_err().contains("config[\"a\"]"));
    }

    #[test]
    fn fewer_partitions_is_a_replace_more_is_an_update() {
        let live = live_spec(6, 1, &[]);
        let fewer =
            normalize_desired("t", &json!({"partitions": 3, "replication_factor": 1})).unwrap();
        let f = findings(&fewer, &live);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].effect, Effect::Replace);
        assert!(f[0].reason.contains("6 → 3"), "{}", f[0].reason);

        let more =
            normalize_desired("t", &json!({"partitions": 9, "replication_factor": 1})).unwrap();
        assert!(findings(&more, &live).is_empty());
        assert_eq!(
            update_steps(&more, &live),
            UpdateSteps {
                grow_to: Some(9),
                set_config: None
            }
        );
    }

    #[test]
    fn a_config_change_sends_the_whole_desired_set() {
        let live = live_spec(
            3,
            1,
            &[
                ("cleanup.policy".into(), "compact".into()),
                ("retention.ms".into(), "1000".into()),
            ],
        );
        let desired = normalize_desired(
            "t",
            &json!({"partitions": 3, "replication_factor": 1,
                    "config": {"cleanup.policy": "compact", "compression.type": "lz4"}}),
        )
        .unwrap();
        assert_eq!(
            update_steps(&desired, &live),
            UpdateSteps {
                grow_to: None,
                set_config: Some(vec![
                    ("cleanup.policy".into(), "compact".into()),
                    ("compression.type".into(), "lz4".into()),
                ]),
            }
        );
    }
}
