//! Making Pinot schemas and table configs from the manifest and from the controller comparable.
//!
//! Both sides go through the same canonical form: the server-added defaults of apis.md §1.2
//! (schema) and §1.5 (table config) are removed when they hold the default value, values are put
//! in the type Pinot's model stores them in (`replication` is a string, `Map<String, String>`
//! values are strings, assignment counts are integers), and deprecated spellings are rewritten
//! the way the controller rewrites them (`comparisonColumn`, `indexType`). Applying one function
//! to both sides means a default is the same whether the controller printed it, an older
//! release omitted it, or the user wrote it out — and the result is still a valid config,
//! because it is also what ofctl sends.
//!
//! Why the kinds compare `Exact` rather than `DesiredSubset`: a subset compare cannot see a
//! field the manifest dropped (the platform's logs table lost `upsertConfig`, `sortedColumn`
//! and `realtimeSegmentConfig` between two releases), so the live table would silently keep it.
//! With defaults stripped, removals show as removals. The one thing a subset compare does
//! better — tolerating a primitive default that a newer Pinot emits and this list does not know
//! (§1.5 names "several false flags" without listing them) — is kept by
//! [`adopt_server_zeroes`], which the provider runs in `merge_live`.
//!
//! `schema` and `table` hold each kind's rules; the Jackson-like coercions both use are here.

mod schema;
mod table;

use serde_json::{Map, Value};

pub use schema::{
    canonical_schema, keep_legacy_boolean_columns, normalize_desired_schema,
    schema_incompatibilities,
};
pub use table::{
    adopt_server_zeroes, canonical_table, kafka_topics, normalize_desired_table, owner_marker,
    server_defaults, split_table_name, table_incompatibilities, OFFLINE, REALTIME,
};

type Obj = Map<String, Value>;

/// Names Pinot accepts and that are safe in a URL path segment as they are (alphanumerics,
/// `-`, `_`, and `.` for a database prefix).
fn check_name(what: &str, name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.contains("__")
    {
        Ok(())
    } else {
        Err(format!(
            "{what} `{name}` is not a valid Pinot name (letters, digits, `-`, `_`, `.`; no `__`)"
        ))
    }
}

/// Jackson's lenient boolean binding: JSON booleans or the strings "true"/"false".
fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// `value` in the JSON type of `like` when Jackson would coerce it (`"false"` into a boolean
/// field, `"2"` into an int field); otherwise unchanged.
fn coerce_like(value: &Value, like: &Value) -> Value {
    let Value::String(s) = value else {
        return value.clone();
    };
    let coerced = match like {
        Value::Bool(_) => as_bool(value).map(Value::from),
        Value::Number(n) if n.is_f64() => s.trim().parse::<f64>().ok().map(Value::from),
        Value::Number(_) => s.trim().parse::<i64>().ok().map(Value::from),
        _ => None,
    };
    coerced.unwrap_or_else(|| value.clone())
}

/// Removes the keys that hold their default, and coerces the others to the default's type.
fn strip_defaults(obj: &mut Obj, defaults: &[(&str, Value)]) {
    for (key, default) in defaults {
        let Some(v) = obj.get_mut(*key) else { continue };
        *v = coerce_like(v, default);
        if v.is_null() || crate::json::values_equal(v, default) {
            obj.remove(*key);
        }
    }
}

/// The shipped desired-state JSON with its placeholders resolved as ofctl.toml's defaults
/// resolve them, for the tests of both kinds.
#[cfg(test)]
fn shipped(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("desired-state/pinot")
        .join(file);
    let raw: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut vars = crate::interpolate::Variables::new();
    for (k, v) in [
        ("pinot.tables.devices.name", "devices"),
        ("pinot.tables.logs.name", "logs"),
        ("pinot.tables.devices.replication", "2"),
        ("pinot.tables.logs.replication", "2"),
        (
            "openframe.oss-tenant.kafka.topics.inbound.devices-topic.name",
            "devices-topic",
        ),
        (
            "openframe.oss-tenant.kafka.topics.inbound.integrated-tool-events.name",
            "integrated-tool.events.pinot",
        ),
        ("spring.oss-tenant.kafka.bootstrap-servers", "kafka:9092"),
    ] {
        vars.insert(k, Value::from(v));
    }
    vars.resolve_value(&raw).unwrap()
}
