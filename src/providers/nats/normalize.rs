//! Making a stream config from the manifest and one read from the server comparable.
//!
//! Both sides are reduced to the fields that differ from the server's defaults (apis.md §4.2):
//! a default is the same whether the server printed it, an older server omitted it, or the
//! user wrote it out. What is left is exactly what the user cares about.

use serde_json::{json, Map, Value};

use crate::provider::owner::OWNER_KEY;

const NANOS_PER_SEC: i64 = 1_000_000_000;
/// `StreamDefaultDuplicatesWindow`.
const DEFAULT_DUPLICATE_WINDOW: i64 = 120 * NANOS_PER_SEC;

/// Server defaults for fields that are always present in stream info.
fn default_of(field: &str) -> Option<Value> {
    Some(match field {
        "retention" => json!("limits"),
        "storage" => json!("file"),
        "discard" => json!("old"),
        "compression" => json!("none"),
        "max_consumers" | "max_msgs" | "max_bytes" | "max_msgs_per_subject" | "max_msg_size" => {
            json!(-1)
        }
        "max_age" | "first_seq" | "subject_delete_marker_ttl" => json!(0),
        "num_replicas" => json!(1),
        "description" | "template_owner" => json!(""),
        "consumer_limits" | "metadata" => json!({}),
        "no_ack"
        | "allow_direct"
        | "mirror_direct"
        | "discard_new_per_subject"
        | "sealed"
        | "deny_delete"
        | "deny_purge"
        | "allow_rollup_hdrs"
        | "allow_msg_ttl"
        | "allow_msg_counter"
        | "allow_atomic"
        | "allow_msg_schedules"
        | "allow_batched" => json!(false),
        _ => return None,
    })
}

/// Fields a user can set; anything else the server reports is its own business.
const KNOWN_FIELDS: &[&str] = &[
    "description",
    "subjects",
    "retention",
    "max_consumers",
    "max_msgs",
    "max_bytes",
    "max_age",
    "max_msgs_per_subject",
    "max_msg_size",
    "discard",
    "storage",
    "num_replicas",
    "no_ack",
    "duplicate_window",
    "placement",
    "mirror",
    "sources",
    "compression",
    "first_seq",
    "subject_transform",
    "republish",
    "allow_direct",
    "mirror_direct",
    "discard_new_per_subject",
    "sealed",
    "deny_delete",
    "deny_purge",
    "allow_rollup_hdrs",
    "consumer_limits",
    "metadata",
    "allow_msg_ttl",
    "subject_delete_marker_ttl",
    "allow_msg_counter",
    "allow_atomic",
    "allow_msg_schedules",
    "persist_mode",
    "allow_batched",
];

fn is_default(field: &str, value: &Value, config: &Map<String, Value>, name: &str) -> bool {
    match field {
        "duplicate_window" => value.as_i64() == Some(default_duplicate_window(config)),
        "subjects" => {
            let derived = config.get("mirror").is_none() && config.get("sources").is_none();
            derived && *value == json!([name])
        }
        // -1 and 0 both mean "unlimited" for these limits (the server rewrites 0 to -1).
        "max_consumers" | "max_msgs" | "max_bytes" | "max_msgs_per_subject" | "max_msg_size" => {
            matches!(value.as_i64(), Some(-1 | 0))
        }
        _ => default_of(field).is_some_and(|d| numbers_equal(&d, value) || d == *value),
    }
}

fn numbers_equal(a: &Value, b: &Value) -> bool {
    matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
}

fn default_duplicate_window(config: &Map<String, Value>) -> i64 {
    let max_age = config.get("max_age").and_then(Value::as_i64).unwrap_or(0);
    if max_age > 0 && max_age < DEFAULT_DUPLICATE_WINDOW {
        max_age
    } else {
        DEFAULT_DUPLICATE_WINDOW
    }
}

fn strip_defaults(name: &str, mut config: Map<String, Value>) -> Value {
    if let Some(Value::Object(meta)) = config.get_mut("metadata") {
        meta.retain(|k, _| !k.starts_with("_nats.") && k != OWNER_KEY);
    }
    let snapshot = config.clone();
    config.retain(|k, v| KNOWN_FIELDS.contains(&k.as_str()) && !is_default(k, v, &snapshot, name));
    Value::Object(config)
}

/// Live stream config → comparable spec, and the ownership marker it carries.
pub fn normalize_live(name: &str, config: &Value) -> (Value, Option<String>) {
    let marker = config
        .pointer(&format!("/metadata/{}", crate::path::escape(OWNER_KEY)))
        .and_then(Value::as_str)
        .map(str::to_string);
    let map = config.as_object().cloned().unwrap_or_default();
    (strip_defaults(name, map), marker)
}

/// Manifest spec → comparable spec (durations in nanoseconds, defaults stripped).
pub fn normalize_desired(name: &str, spec: &Value) -> Result<Value, String> {
    let mut map = spec.as_object().cloned().unwrap_or_default();
    for field in ["max_age", "duplicate_window"] {
        if let Some(Value::String(text)) = map.get(field) {
            let nanos = crate::duration::parse_nanos(text).map_err(|e| format!("{field}: {e}"))?;
            map.insert(field.into(), json!(nanos));
        }
    }
    Ok(strip_defaults(name, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_info_of_a_default_stream_reduces_to_subjects() {
        // What nats-server 2.15 returns for a stream created with only subjects.
        let live = json!({
            "name": "TOOL_UPDATE", "subjects": ["machine.*.tool.*.update"], "retention": "limits",
            "max_consumers": -1, "max_msgs": -1, "max_bytes": -1, "max_age": 0,
            "max_msgs_per_subject": -1, "max_msg_size": -1, "discard": "old", "storage": "file",
            "num_replicas": 1, "duplicate_window": 120_000_000_000i64, "compression": "none",
            "allow_direct": false, "mirror_direct": false, "sealed": false, "deny_delete": false,
            "deny_purge": false, "allow_rollup_hdrs": false, "consumer_limits": {},
            "metadata": {"_nats.req.level": "0", "_nats.ver": "2.15.1", "_nats.level": "2",
                         "ofctl.openframe.io/managed-by": "ofctl/t/e"},
            "some_future_field": 7
        });
        let (spec, marker) = normalize_live("TOOL_UPDATE", &live);
        assert_eq!(marker.as_deref(), Some("ofctl/t/e"));
        assert_eq!(spec, json!({"subjects": ["machine.*.tool.*.update"]}));
        let desired = normalize_desired(
            "TOOL_UPDATE",
            &json!({"subjects": ["machine.*.tool.*.update"], "storage": "file", "retention": "limits"}),
        )
        .unwrap();
        assert_eq!(desired, spec);
    }

    #[test]
    fn durations_and_derived_duplicate_window() {
        // max_age of 1 minute makes the server's duplicate window 1 minute too.
        let live = json!({"max_age": 60 * NANOS_PER_SEC, "duplicate_window": 60 * NANOS_PER_SEC});
        let (spec, _) = normalize_live("S", &live);
        assert_eq!(spec, json!({"max_age": 60 * NANOS_PER_SEC}));
        assert_eq!(
            normalize_desired("S", &json!({"max_age": "1m"})).unwrap(),
            spec
        );
    }

    #[test]
    fn non_default_values_survive() {
        let (spec, marker) = normalize_live(
            "S",
            &json!({"storage": "memory", "max_msgs": 0, "subjects": ["S"]}),
        );
        assert_eq!(marker, None);
        assert_eq!(spec, json!({"storage": "memory"}));
    }
}
