//! Making a script from the manifest and one read from Tactical RMM comparable.
//!
//! Both sides are put in one full form: every field a user can set, with the model's default
//! filled in where a side leaves it out (apis.md §3, "Script object"). A default is then the same
//! whether TRMM printed it, an older TRMM sent `null`, or the manifest omitted it, and removing a
//! field from the manifest diffs as a readable change back to the default
//! (`default_timeout: 30 -> 90`) rather than as a bare removal.

use serde_json::{json, Map, Value};

/// `[managed by <owner>]` (the owner `ofctl/<tenant>/<environment>`, plain `ofctl` before
/// markers named the tenant) is appended to the description of every script ofctl writes, so
/// `--prune` can tell this tenant's scripts from the ones people made in the UI. The
/// description is the least intrusive field that TRMM stores and returns verbatim: `category`
/// groups scripts in the UI and is user data, `env_vars` and `args` reach the script at run
/// time, `syntax` is shown as usage help.
const MARKER_OPEN: &str = "[managed by ";

/// Fields a user can set, with the model defaults TRMM fills in (apis.md §3).
fn defaults() -> [(&'static str, Value); 9] {
    [
        ("description", json!("")),
        ("shell", json!("powershell")),
        ("category", Value::Null),
        ("args", json!([])),
        ("env_vars", json!([])),
        ("default_timeout", json!(90)),
        ("supported_platforms", json!([])),
        ("run_as_user", json!(false)),
        ("hidden", json!(false)),
    ]
}

/// `description` as ofctl writes it: the user's text with `owner`'s marker appended.
pub fn with_marker(description: &str, owner: &str) -> String {
    if description.is_empty() {
        format!("{MARKER_OPEN}{owner}]")
    } else {
        format!("{description} {MARKER_OPEN}{owner}]")
    }
}

/// The inverse of [`with_marker`]: the user's text, and the owner the marker names (if any).
fn strip_marker(description: &str) -> (&str, Option<&str>) {
    let marked = description.strip_suffix(']').and_then(|rest| {
        let at = rest.rfind(MARKER_OPEN)?;
        let owner = &rest[at + MARKER_OPEN.len()..];
        (owner == "ofctl" || owner.starts_with("ofctl/")).then_some((&rest[..at], owner))
    });
    match marked {
        Some((text, owner)) => (text.strip_suffix(' ').unwrap_or(text), Some(owner)),
        None => (description, None),
    }
}

/// Fills defaults and canonicalizes values; anything that is not a settable field (id,
/// script_type, script_hash, favorite, syntax, filename) is dropped. Text fields and list items
/// are trimmed the way DRF's `CharField` stores them; `script_body` is the one field TRMM keeps
/// verbatim (`trim_whitespace: False`), so it is compared exactly.
fn canonical(source: &Map<String, Value>) -> (Value, Option<String>) {
    let mut out = Map::new();
    let mut marker = None;
    for (field, default) in defaults() {
        let value = match (field, source.get(field)) {
            (_, None | Some(Value::Null)) => default,
            ("description", Some(Value::String(text))) => {
                let (text, owner) = strip_marker(text.trim());
                marker = owner.map(str::to_string);
                json!(text.trim())
            }
            // The UI files both under "Unassigned".
            ("category", Some(Value::String(text))) if text.trim().is_empty() => Value::Null,
            ("category", Some(Value::String(text))) => json!(text.trim()),
            ("args" | "env_vars", Some(Value::Array(items))) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => json!(text.trim()),
                    other => other.clone(),
                })
                .collect(),
            (_, Some(v)) => v.clone(),
        };
        out.insert(field.to_string(), value);
    }
    if let Some(body) = source.get("script_body") {
        let body = if body.is_null() {
            json!("")
        } else {
            body.clone()
        };
        out.insert("script_body".into(), body);
    }
    (Value::Object(out), marker)
}

/// A script as `GET /scripts/{id}/` (or, without the body, the list) returns it → comparable
/// spec, and the owner its marker names.
pub fn normalize_live(script: &Value) -> (Value, Option<String>) {
    canonical(&script.as_object().cloned().unwrap_or_default())
}

/// Manifest spec → comparable spec. A marker typed into the manifest is not the user's text
/// either, so it is stripped the same way.
pub fn normalize_desired(spec: &Value) -> Value {
    canonical(&spec.as_object().cloned().unwrap_or_default()).0
}

/// The `PUT /scripts/{id}/` body: only the fields that differ (TRMM updates partially), plus the
/// marker when this tenant adopts a script it did not create (or marked the old way).
pub fn update_body(
    desired: &Value,
    live: &Value,
    managed: bool,
    owner: &str,
) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(fields) = desired.as_object() {
        for (field, value) in fields {
            if !live
                .get(field)
                .is_some_and(|l| crate::json::values_equal(l, value))
            {
                body.insert(field.clone(), value.clone());
            }
        }
    }
    if body.contains_key("description") || !managed {
        let text = desired
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("");
        body.insert("description".into(), json!(with_marker(text, owner)));
    }
    body
}

/// The `POST /scripts/` body: every field, so the script does not depend on TRMM's defaults.
pub fn create_body(name: &str, desired: &Value, owner: &str) -> Map<String, Value> {
    let mut body = desired.as_object().cloned().unwrap_or_default();
    let text = body
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    body.insert("name".into(), json!(name));
    body.insert("description".into(), json!(with_marker(&text, owner)));
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /scripts/{id}/` for the script the management service provisioned (apis.md §3
    /// field list; openframe.md §13 values; the Java SDK sent `null` lists).
    fn live_detail() -> Value {
        json!({
            "id": 41, "name": "OpenFrame Client Latest Update",
            "description": "OpenFrame Client update to latest version [managed by ofctl]",
            "shell": "powershell", "args": null, "category": "OpenFrame", "favorite": false,
            "script_body": "Write-Host hi\r\n", "script_hash": "abc", "default_timeout": 30,
            "syntax": "", "filename": null, "hidden": false, "supported_platforms": null,
            "run_as_user": false, "env_vars": null
        })
    }

    #[test]
    fn provisioned_script_matches_the_manifest_that_declares_it() {
        // Provisioned before markers named the tenant: the old marker is still recognized.
        let (live, marker) = normalize_live(&live_detail());
        assert_eq!(marker.as_deref(), Some("ofctl"));
        let desired = normalize_desired(&json!({
            "description": "OpenFrame Client update to latest version",
            "shell": "powershell", "category": "OpenFrame", "default_timeout": 30,
            "run_as_user": false, "script_body": "Write-Host hi\r\n"
        }));
        assert_eq!(live, desired);
        assert_eq!(live["args"], json!([]));
        assert_eq!(
            live["description"],
            "OpenFrame Client update to latest version"
        );
        assert!(live.get("script_hash").is_none() && live.get("favorite").is_none());
    }

    #[test]
    fn body_whitespace_counts_and_defaults_fill_in() {
        let (live, _) = normalize_live(&live_detail());
        let desired = normalize_desired(&json!({"script_body": "Write-Host hi\n"}));
        assert_ne!(live["script_body"], desired["script_body"]);
        assert_eq!(desired["default_timeout"], 90);
        assert_eq!(desired["shell"], "powershell");
        assert_eq!(desired["category"], Value::Null);
    }

    #[test]
    fn text_is_trimmed_like_drf_but_the_body_is_not() {
        let desired = normalize_desired(&json!({
            "description": " spaced ", "category": "  ", "args": [" -Silent "],
            "env_vars": ["A=1 "], "script_body": "  body\n\n"
        }));
        assert_eq!(desired["description"], "spaced");
        assert_eq!(desired["category"], Value::Null);
        assert_eq!(desired["args"], json!(["-Silent"]));
        assert_eq!(desired["env_vars"], json!(["A=1"]));
        assert_eq!(desired["script_body"], "  body\n\n");
    }

    #[test]
    fn marker_round_trips_and_unmarked_scripts_are_not_owned() {
        for text in ["", "does things", "ends with space "] {
            let written = with_marker(text, "ofctl/t/e");
            let (back, owner) = strip_marker(&written);
            assert_eq!(owner, Some("ofctl/t/e"));
            assert_eq!(back, text);
        }
        let (spec, marker) = normalize_live(&json!({"description": "made in the UI"}));
        assert_eq!(marker, None);
        let (spec2, marker) = normalize_live(&json!({"description": "notes [managed by Bob]"}));
        assert_eq!(
            (marker, &spec2["description"]),
            (None, &json!("notes [managed by Bob]"))
        );
        assert_eq!(spec["description"], "made in the UI");
        assert_eq!(
            normalize_live(&json!({"description": null, "category": ""})).0["category"],
            Value::Null
        );
    }

    #[test]
    fn update_sends_only_changed_fields_and_adopts_with_the_marker() {
        let (live, _) = normalize_live(&live_detail());
        let mut desired = live.clone();
        desired["default_timeout"] = json!(60);
        let body = update_body(&desired, &live, true, "ofctl/t/e");
        assert_eq!(Value::Object(body), json!({"default_timeout": 60}));

        desired["description"] = json!("new text");
        let body = update_body(&desired, &live, true, "ofctl/t/e");
        assert_eq!(body["description"], "new text [managed by ofctl/t/e]");

        let body = update_body(&live, &live, false, "ofctl/t/e");
        assert_eq!(
            Value::Object(body),
            json!({"description": "OpenFrame Client update to latest version [managed by ofctl/t/e]"})
        );
    }

    #[test]
    fn create_sends_every_field_with_name_and_marker() {
        let desired = normalize_desired(&json!({"script_body": "echo", "shell": "shell"}));
        let body = create_body("s", &desired, "ofctl/t/e");
        assert_eq!(body["name"], "s");
        assert_eq!(body["description"], "[managed by ofctl/t/e]");
        assert_eq!(body["shell"], "shell");
        assert_eq!(body["default_timeout"], 90);
        assert_eq!(body.len(), 11);
    }
}
