//! Field-level differences between a normalized desired spec and a normalized live one.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json::values_equal;
use crate::kind::{Compare, KindInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffOp {
    Add,
    Remove,
    Change,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDiff {
    /// JSON pointer into `spec`.
    pub pointer: String,
    /// The same, readable: `config["database.password"]`.
    pub path: String,
    pub op: DiffOp,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub before: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub after: Option<Value>,
    /// The values are secret: `before`/`after` are withheld everywhere.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
}

/// A side that is present is `Some` even when it is JSON null: `None` means the field does not
/// exist on that side, and a saved plan must read back showing the same diff.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Differences from `live` to `desired`. Lists are compared whole: element-wise diffs of
/// reordered lists mislead more than they help.
pub fn diff(desired: &Value, live: &Value, info: &KindInfo) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    walk(desired, live, &mut String::new(), info, &mut out);
    out
}

fn entry(
    info: &KindInfo,
    pointer: String,
    op: DiffOp,
    before: Option<&Value>,
    after: Option<&Value>,
) -> FieldDiff {
    let sensitive = info.is_sensitive(&pointer);
    let shown = |v: Option<&Value>| {
        if sensitive {
            None
        } else {
            v.map(|v| scrub(v, &pointer, info))
        }
    };
    FieldDiff {
        path: crate::path::display(&pointer),
        before: shown(before),
        after: shown(after),
        pointer,
        op,
        sensitive,
    }
}

/// A copy of `value` (found at `pointer`) with every sensitive value inside it masked: a whole
/// object added at once (a created connector's `config`) must not carry its password along.
fn scrub(value: &Value, pointer: &str, info: &KindInfo) -> Value {
    let child = |key: &str, v: &Value| {
        let ptr = format!("{pointer}/{}", crate::path::escape(key));
        if info.is_sensitive(&ptr) {
            Value::String(crate::redact::MASK.to_string())
        } else {
            scrub(v, &ptr, info)
        }
    };
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), child(k, v))).collect())
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| child(&i.to_string(), v))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Appends one key to a JSON pointer.
fn push_key(ptr: &mut String, key: &str) {
    ptr.push('/');
    if key.contains(['~', '/']) {
        ptr.push_str(&crate::path::escape(key));
    } else {
        ptr.push_str(key);
    }
}

/// `ptr` is one buffer for the whole walk (extended and cut back per key): a plan walks every
/// field of every spec, and most of them are equal.
fn walk(
    desired: &Value,
    live: &Value,
    ptr: &mut String,
    info: &KindInfo,
    out: &mut Vec<FieldDiff>,
) {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            for (key, dv) in d {
                let len = ptr.len();
                push_key(ptr, key);
                match l.get(key) {
                    Some(lv) => walk(dv, lv, ptr, info, out),
                    None => out.push(entry(info, ptr.clone(), DiffOp::Add, None, Some(dv))),
                }
                ptr.truncate(len);
            }
            if info.compare == Compare::Exact {
                for (key, lv) in l {
                    if !d.contains_key(key) {
                        let len = ptr.len();
                        push_key(ptr, key);
                        out.push(entry(info, ptr.clone(), DiffOp::Remove, Some(lv), None));
                        ptr.truncate(len);
                    }
                }
            }
        }
        _ if values_equal(desired, live) => {}
        _ => out.push(entry(
            info,
            ptr.clone(),
            DiffOp::Change,
            Some(live),
            Some(desired),
        )),
    }
}

/// The value at `pointer` on each side of a diff, for rule evaluation.
pub fn sides<'a>(
    desired: &'a Value,
    live: &'a Value,
    pointer: &str,
) -> (Option<&'a Value>, Option<&'a Value>) {
    (live.pointer(pointer), desired.pointer(pointer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::System;
    use serde_json::json;

    const EXACT: KindInfo = KindInfo {
        kind: "T",
        system: System::Nats,
        compare: Compare::Exact,
        field_rules: &[],
        sensitive: &[],
        interpolate_spec_file: true,
    };
    const SUBSET: KindInfo = KindInfo {
        compare: Compare::DesiredSubset,
        ..EXACT
    };

    #[test]
    fn exact_reports_adds_changes_and_removals() {
        let d = json!({"a": 1, "b": {"c": [1, 2]}, "n": 1.0});
        let l = json!({"b": {"c": [2, 1]}, "x": true, "n": 1});
        let diffs = diff(&d, &l, &EXACT);
        let ops: Vec<_> = diffs.iter().map(|f| (f.path.as_str(), f.op)).collect();
        assert_eq!(
            ops,
            vec![
                ("a", DiffOp::Add),
                ("b.c", DiffOp::Change),
                ("x", DiffOp::Remove)
            ]
        );
    }

    #[test]
    fn subset_ignores_server_added_fields() {
        let d = json!({"a": {"b": 1}});
        let l = json!({"a": {"b": 1, "server": 2}, "other": 3});
        assert!(diff(&d, &l, &SUBSET).is_empty());
    }

    #[test]
    fn null_sides_survive_a_saved_plan() {
        let diffs = diff(&json!({"a": null}), &json!({}), &EXACT);
        assert_eq!(diffs[0].after, Some(Value::Null));
        let text = serde_json::to_string(&diffs).unwrap();
        assert_eq!(
            serde_json::from_str::<Vec<FieldDiff>>(&text).unwrap(),
            diffs
        );
    }

    #[test]
    fn sensitive_values_are_withheld() {
        let d = json!({"config": {"database.password": "new"}});
        let l = json!({"config": {"database.password": "old"}});
        let diffs = diff(&d, &l, &EXACT);
        assert_eq!(diffs.len(), 1);
        assert!(diffs[0].sensitive);
        assert!(diffs[0].before.is_none() && diffs[0].after.is_none());
        assert!(!serde_json::to_string(&diffs).unwrap().contains("new"));
    }

    #[test]
    fn sensitive_values_inside_an_added_object_are_masked() {
        let d = json!({"config": {"database.user": "u", "database.password": "hunter2-secret"}});
        let diffs = diff(&d, &json!({}), &EXACT);
        assert_eq!(diffs.len(), 1);
        assert_eq!(diffs[0].pointer, "/config");
        assert_eq!(
            diffs[0].after,
            Some(json!({"database.user": "u", "database.password": crate::redact::MASK}))
        );
        assert!(!serde_json::to_string(&diffs).unwrap().contains("hunter2"));
    }
}
