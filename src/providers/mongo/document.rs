//! Mongo documents ⇄ the JSON specs the engine compares, written the way Spring Data MongoDB
//! writes the platform's documents (openframe.md §6–8, §12).
//!
//! Spring Data never writes a null field and adds `_class` to every document; integers that
//! fit are `Int32` (Jackson reads small JSON integers as `Integer`); dates are BSON dates.

use mongodb::bson::{Bson, DateTime, Document};
use serde_json::{Map, Value};

/// Fields ofctl never diffs: the id (it is the resource name), Spring's type hint, the
/// platform's publish bookkeeping and Spring auditing timestamps.
pub const ID: &str = "_id";
pub const CLASS: &str = "_class";
pub const PUBLISH_STATE: &str = "publishState";
pub const CREATED_AT: &str = "createdAt";
pub const UPDATED_AT: &str = "updatedAt";

/// Synthetic field on a normalized live spec whose last update was written but whose update
/// message was never acknowledged. The manifest never has it, so the plan shows it as a change.
pub const PUBLISH_MARKER: &str = "publish";
pub const PUBLISH_PENDING: &str = "pending";
/// Synthetic field on the live ReleaseVersion: documents that follow the release version but
/// do not carry it yet (or whose update is unpublished). The manifest never has it.
pub const FOLLOWERS_MARKER: &str = "followersPending";
/// The agent status the platform's fallback publishes for (`IntegratedToolAgent.status`).
pub const ENABLED: &str = "ENABLED";

/// JSON → BSON as Spring would store the same value.
pub fn to_bson(value: &Value) -> Bson {
    match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i32::try_from(i).map(Bson::Int32).unwrap_or(Bson::Int64(i)),
            None => Bson::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(to_bson).collect()),
        Value::Object(map) => Bson::Document(to_document(map)),
    }
}

pub fn to_document(map: &Map<String, Value>) -> Document {
    map.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), to_bson(v)))
        .collect()
}

/// BSON → JSON: numbers as numbers, dates as RFC 3339, ids as hex; anything exotic as
/// relaxed Extended JSON (never produced by the platform for these collections).
pub fn to_json(value: &Bson) -> Value {
    match value {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Int32(i) => Value::from(*i),
        Bson::Int64(i) => Value::from(*i),
        Bson::Double(f) if f.fract() == 0.0 && f.abs() < 9e15 => Value::from(*f as i64),
        Bson::Double(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Bson::String(s) => Value::String(s.clone()),
        Bson::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Bson::Document(doc) => Value::Object(document_to_map(doc)),
        Bson::ObjectId(id) => Value::String(id.to_hex()),
        Bson::DateTime(d) => Value::String(
            d.try_to_rfc3339_string()
                .unwrap_or_else(|_| d.timestamp_millis().to_string()),
        ),
        other => other.clone().into_relaxed_extjson(),
    }
}

pub fn document_to_map(doc: &Document) -> Map<String, Value> {
    doc.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()
}

/// Removes null members (Spring writes none), recursively.
pub fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Whether the document's last update message is still unpublished (`publishState.published`
/// is false). A missing publishState means "never asked to publish" (a new agent), not pending.
pub fn publish_pending(doc: &Document) -> bool {
    doc.get_document(PUBLISH_STATE)
        .ok()
        .and_then(|s| s.get_bool("published").ok())
        == Some(false)
}

/// How many times the pending update was retried (`publishState.attempts`).
pub fn publish_attempts(doc: &Document) -> i64 {
    match doc
        .get_document(PUBLISH_STATE)
        .ok()
        .and_then(|s| s.get("attempts"))
    {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        _ => 0,
    }
}

/// Pending and still worth retrying: like the platform's fallback, ofctl gives up after
/// `max_attempts` retries, until a new change to the document starts the count again.
pub fn publish_retryable(doc: &Document, max_attempts: i64) -> bool {
    publish_pending(doc) && publish_attempts(doc) < max_attempts
}

/// Values the platform's document classes write although no file sets them (openframe.md §7,
/// §8): primitive booleans as `false`, `installationType` as its default STANDARD. Paths are
/// object keys, `*` any list element.
pub const AGENT_CLASS_DEFAULTS: &[(&[&str], bool, &str)] = &[
    (&["releaseVersion"], true, "false"),
    (&["allowVersionUpdate"], true, "false"),
    (&["allowConfigurationUpdate"], true, "false"),
    (
        &["downloadConfigurations", "*", "installationType"],
        false,
        "STANDARD",
    ),
    (&["assets", "*", "executable"], true, "false"),
    (
        &[
            "assets",
            "*",
            "downloadConfigurations",
            "*",
            "installationType",
        ],
        false,
        "STANDARD",
    ),
];
pub const CLIENT_CLASS_DEFAULTS: &[(&[&str], bool, &str)] = &[
    (
        &["downloadConfiguration", "*", "installationType"],
        false,
        "STANDARD",
    ),
    (
        &["downloadConfigurations", "*", "installationType"],
        false,
        "STANDARD",
    ),
];

/// Where the manifest leaves out a field that a document the Java service wrote carries with its
/// class default (`defaults`: path, whether the value is a boolean, the value), the stored
/// default is kept: such a document plans as a no-op and an update writes it back unchanged.
/// Lists are followed element by element when both sides have the same length.
pub fn adopt_class_defaults(desired: &mut Value, live: &Value, defaults: &[(&[&str], bool, &str)]) {
    fn walk(desired: &mut Value, live: &Value, path: &[&str], default: &Value) {
        match path {
            [] => {}
            ["*", rest @ ..] => {
                if let (Value::Array(d), Value::Array(l)) = (desired, live) {
                    if d.len() == l.len() {
                        for (d, l) in d.iter_mut().zip(l) {
                            walk(d, l, rest, default);
                        }
                    }
                }
            }
            [key, rest @ ..] => {
                let (Value::Object(d), Some(l)) = (desired, live.get(*key)) else {
                    return;
                };
                if rest.is_empty() {
                    if !d.contains_key(*key) && l == default {
                        d.insert((*key).to_string(), l.clone());
                    }
                } else if let Some(d) = d.get_mut(*key) {
                    walk(d, l, rest, default);
                }
            }
        }
    }
    for (path, boolean, value) in defaults {
        let default = if *boolean {
            Value::Bool(*value == "true")
        } else {
            Value::String((*value).to_string())
        };
        walk(desired, live, path, &default);
    }
}

/// Whether a publish is retried (by the next pass, which the fallback job asks for), as the
/// platform's fallback decides (openframe.md §10): pending with attempts left, and for an agent
/// (the documents with a `status`) only when it is ENABLED.
pub fn publish_retry_due(doc: &Document, max_attempts: i64) -> bool {
    publish_retryable(doc, max_attempts) && doc.get_str("status").map_or(true, |s| s == ENABLED)
}

/// The platform's fallback also publishes a document whose `publishState` is null or missing
/// (a new agent saved without an announcement, §7, §10).
pub fn never_published(doc: &Document) -> bool {
    matches!(doc.get(PUBLISH_STATE), None | Some(Bson::Null))
}

/// A live document as a spec: the bookkeeping fields removed, plus the pending marker while
/// the publish is to be retried.
pub fn live_spec(doc: &Document, max_attempts: i64) -> Value {
    let mut map = document_to_map(doc);
    for key in [ID, CLASS, PUBLISH_STATE, CREATED_AT, UPDATED_AT] {
        map.shift_remove(key);
    }
    if publish_retry_due(doc, max_attempts) {
        map.insert(PUBLISH_MARKER.into(), Value::String(PUBLISH_PENDING.into()));
    }
    Value::Object(map)
}

/// The version a document carries, if any (an empty string counts as none).
pub fn version(v: &Value) -> Option<&str> {
    v.get("version")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The document's `_id` as a string (agents, tools and the client configuration use strings).
pub fn id_string(doc: &Document) -> Option<String> {
    match doc.get(ID)? {
        Bson::String(s) => Some(s.clone()),
        Bson::ObjectId(id) => Some(id.to_hex()),
        _ => None,
    }
}

/// Takes `id` out of a manifest body: it must agree with `metadata.name`, which is the `_id`.
pub fn take_id(spec: &mut Map<String, Value>, name: &str) -> Result<(), String> {
    match spec.shift_remove("id") {
        None => Ok(()),
        Some(Value::String(id)) if id == name => Ok(()),
        Some(other) => Err(format!(
            "`id` is {other} but metadata.name is `{name}`; they must agree (the name is the document _id)"
        )),
    }
}

/// The document to write: `_id`, the content, then `_class` (Spring writes it last).
pub fn build(id: Bson, content: &Value, class: &str) -> Document {
    let mut doc = Document::new();
    doc.insert(ID, id);
    if let Value::Object(map) = content {
        for (k, v) in to_document(map) {
            if k != PUBLISH_MARKER {
                doc.insert(k, v);
            }
        }
    }
    doc.insert(CLASS, class);
    doc
}

pub fn now() -> Bson {
    Bson::DateTime(DateTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;
    use serde_json::json;

    #[test]
    fn integers_are_int32_when_they_fit_and_nulls_are_dropped() {
        let d = to_document(
            json!({"a": 30, "b": 5_000_000_000i64, "c": 1.5, "d": null, "e": [{"x": 1}]})
                .as_object()
                .unwrap(),
        );
        assert_eq!(d.get("a"), Some(&Bson::Int32(30)));
        assert_eq!(d.get("b"), Some(&Bson::Int64(5_000_000_000)));
        assert_eq!(d.get("c"), Some(&Bson::Double(1.5)));
        assert!(!d.contains_key("d"));
        assert_eq!(
            to_json(&Bson::Document(d)),
            json!({"a": 30, "b": 5_000_000_000i64, "c": 1.5, "e": [{"x": 1}]})
        );
    }

    #[test]
    fn live_spec_hides_bookkeeping_and_marks_pending() {
        let d = doc! {
            "_id": "fleetmdm-agent", "version": "1.0.0",
            "publishState": {"published": false, "attempts": 0}, "_class": "x",
        };
        assert_eq!(
            live_spec(&d, 5),
            json!({"version": "1.0.0", "publish": "pending"})
        );
        let done = doc! {"_id": "a", "publishState": {"published": true, "attempts": 0}};
        assert_eq!(live_spec(&done, 5), json!({}));
        assert!(!publish_pending(&doc! {"_id": "new"}));
    }

    #[test]
    fn java_class_defaults_are_kept_where_the_manifest_is_silent() {
        let live = json!({
            "version": "1", "releaseVersion": false, "allowVersionUpdate": false,
            "allowConfigurationUpdate": false,
            "downloadConfigurations": [{"os": "windows", "installationType": "STANDARD"}],
            "assets": [{"id": "osqueryd", "executable": false,
                        "downloadConfigurations": [{"os": "macos", "installationType": "STANDARD"}]}]
        });
        let mut desired = json!({
            "version": "1",
            "downloadConfigurations": [{"os": "windows"}],
            "assets": [{"id": "osqueryd", "downloadConfigurations": [{"os": "macos"}]}]
        });
        adopt_class_defaults(&mut desired, &live, AGENT_CLASS_DEFAULTS);
        assert_eq!(desired, live);
        // A value the manifest sets, or a stored value that is not the default, still differs.
        let mut set =
            json!({"allowVersionUpdate": true, "downloadConfigurations": [{"os": "windows"}]});
        let gui = json!({"allowVersionUpdate": false, "downloadConfigurations": [{"os": "windows", "installationType": "GUI_APP"}]});
        adopt_class_defaults(&mut set, &gui, AGENT_CLASS_DEFAULTS);
        assert_eq!(
            set,
            json!({"allowVersionUpdate": true, "downloadConfigurations": [{"os": "windows"}]})
        );
    }

    #[test]
    fn the_fallback_covers_enabled_agents_and_never_published_documents() {
        let pending = |status: &str| doc! {"_id": "a", "status": status, "publishState": {"published": false, "attempts": 0}};
        assert!(publish_retry_due(&pending("ENABLED"), 5));
        assert!(!publish_retry_due(&pending("DISABLED"), 5));
        assert_eq!(
            live_spec(&pending("DISABLED"), 5),
            json!({"status": "DISABLED"})
        );
        // The client configuration has no status.
        assert!(publish_retry_due(
            &doc! {"_id": "default", "publishState": {"published": false, "attempts": 1}},
            5
        ));
        assert!(never_published(&doc! {"_id": "a"}));
        assert!(never_published(
            &doc! {"_id": "a", "publishState": Bson::Null}
        ));
        assert!(!never_published(&pending("ENABLED")));
    }

    #[test]
    fn a_publish_retried_max_attempts_times_is_given_up() {
        let d = |attempts: i32| doc! {"_id": "a", "publishState": {"published": false, "attempts": attempts}};
        assert!(publish_retryable(&d(4), 5));
        assert!(!publish_retryable(&d(5), 5));
        assert!(publish_pending(&d(5)));
        assert_eq!(live_spec(&d(5), 5), json!({}));
        assert_eq!(publish_attempts(&d(3)), 3);
    }

    #[test]
    fn build_orders_id_content_class() {
        let d = build(
            Bson::String("t".into()),
            &json!({"name": "n", "publish": "pending"}),
            "C",
        );
        let keys: Vec<_> = d.keys().cloned().collect();
        assert_eq!(keys, ["_id", "name", "_class"]);
    }

    #[test]
    fn id_must_match_name() {
        let mut m = json!({"id": "a", "x": 1}).as_object().unwrap().clone();
        take_id(&mut m, "a").unwrap();
        assert_eq!(Value::Object(m), json!({"x": 1}));
        let mut m = json!({"id": "b"}).as_object().unwrap().clone();
        assert!(take_id(&mut m, "a").unwrap_err().contains("metadata.name"));
    }
}
