//! The manifest JSON Schema (`schema/manifest.schema.json`), embedded in the binary.

use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::Validator;
use serde_json::{json, Value};

pub const MANIFEST_SCHEMA: &str = include_str!("../../schema/manifest.schema.json");

fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_json::from_str(MANIFEST_SCHEMA).expect("embedded schema is valid JSON")
    })
}

/// Roots carry the schema's `$schema` (draft 2019-09): the schema uses nothing 2020-12 added,
/// and jsonschema compiles 2020-12 `$ref`s through its dynamic-scope path at about five times
/// the memory (`ofctl validate` peaked at 122 MB RSS that way, 24 MB this way).
fn compile(root: &Value) -> Validator {
    jsonschema::validator_for(root).expect("embedded schema compiles")
}

/// Checks apiVersion, kind, metadata and the spec/specFile choice (not the spec body).
pub fn validate_envelope(doc: &Value) -> Vec<(String, String)> {
    static ENVELOPE: OnceLock<(Value, Validator)> = OnceLock::new();
    let (root, validator) = ENVELOPE.get_or_init(|| {
        let mut root = schema().clone();
        if let Some(obj) = root.as_object_mut() {
            obj.remove("allOf");
        }
        let validator = compile(&root);
        (root, validator)
    });
    collect(root, validator, doc, Checked::Envelope)
}

/// Checks a spec against its kind's definition `#/$defs/<Kind>Spec`.
///
/// One validator serves every kind (`{kind, spec}` dispatched by `if`/`then`): compiling the
/// shared definitions once per kind cost tens of megabytes in every process.
pub fn validate_spec(kind: &str, spec: &Value) -> Vec<(String, String)> {
    static SPECS: OnceLock<(Value, Validator)> = OnceLock::new();
    let (root, validator) = SPECS.get_or_init(|| {
        let by_kind: Vec<Value> = crate::registry::all_kinds()
            .iter()
            .map(|k| {
                json!({
                    "if": { "properties": { "kind": { "const": k.kind } } },
                    "then": { "properties": { "spec": { "$ref": format!("#/$defs/{}Spec", k.kind) } } },
                })
            })
            .collect();
        let root = json!({
            "$schema": schema()["$schema"].clone(),
            "allOf": by_kind,
            "$defs": schema()["$defs"].clone(),
        });
        let validator = compile(&root);
        (root, validator)
    });
    if crate::registry::kind_info(kind).is_none() {
        return Vec::new();
    }
    collect(
        root,
        validator,
        &json!({ "kind": kind, "spec": spec }),
        Checked::Spec,
    )
    .into_iter()
    .map(|(ptr, message)| {
        let ptr = ptr.strip_prefix("/spec").unwrap_or(&ptr).to_string();
        (ptr, message)
    })
    .collect()
}

/// Which document a validator checks: the envelope's `oneOf` is the spec/specFile choice.
#[derive(Clone, Copy, PartialEq)]
enum Checked {
    Envelope,
    Spec,
}

/// Errors as (JSON pointer, message), pointing unknown fields at the field itself and saying
/// what would be accepted instead.
fn collect(
    root: &Value,
    validator: &Validator,
    instance: &Value,
    checked: Checked,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for err in validator.iter_errors(instance) {
        explain(root, &err, checked, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

fn explain(
    root: &Value,
    err: &jsonschema::ValidationError<'_>,
    checked: Checked,
    out: &mut Vec<(String, String)>,
) {
    let ptr = err.instance_path.to_string();
    // The keyword's path minus the keyword: the (sub)schema the value failed against.
    let subschema = err
        .schema_path
        .as_str()
        .rsplit_once('/')
        .and_then(|(parent, _)| schema_at(root, parent));
    match &err.kind {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed: Vec<&str> = subschema
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object)
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            for field in unexpected {
                out.push((
                    format!("{ptr}/{}", crate::path::escape(field)),
                    unknown_field(field, &allowed),
                ));
            }
        }
        ValidationErrorKind::OneOfNotValid { .. }
            if ptr.is_empty() && checked == Checked::Envelope =>
        {
            out.push((
                ptr,
                "a document needs exactly one of `spec` (inline) or `specFile` (a JSON file)"
                    .into(),
            ))
        }
        // A `oneOf` of forms told apart by a field (e.g. a tool body, bare or under `tool`):
        // when exactly one form failed only in the value's fields, that is the form meant, and
        // its errors say what is wrong.
        ValidationErrorKind::OneOfNotValid { context }
            if context.iter().filter(|b| form_fits(b, &ptr)).count() == 1 =>
        {
            let meant = context
                .iter()
                .find(|b| form_fits(b, &ptr))
                .expect("counted one");
            for e in meant {
                explain(root, e, checked, out);
            }
        }
        // "is not valid under any of the schemas listed in the 'oneOf' keyword" and a
        // regex do not say what is valid; the definition's description does (e.g. the
        // duration forms).
        ValidationErrorKind::OneOfNotValid { .. }
        | ValidationErrorKind::AnyOf { .. }
        | ValidationErrorKind::Pattern { .. } => {
            match subschema
                .and_then(|s| s.get("description"))
                .and_then(Value::as_str)
            {
                Some(description) => out.push((
                    ptr,
                    shorten(&format!("{} is not valid: {description}", err.instance)),
                )),
                None => out.push((ptr, shorten(&err.to_string()))),
            }
        }
        _ => out.push((ptr, shorten(&err.to_string()))),
    }
}

/// Whether a `oneOf` branch failed only inside the value at `ptr` (in its fields), not on the
/// value itself (its type, a pattern, a required or forbidden field).
fn form_fits(errors: &[jsonschema::ValidationError<'_>], ptr: &str) -> bool {
    errors.iter().all(|e| {
        e.instance_path.to_string() != ptr
            || matches!(e.kind, ValidationErrorKind::AdditionalProperties { .. })
    })
}

/// The subschema at a validator's keyword path (`/$ref/properties/max_age/$ref`), following
/// each `$ref` within `root`.
fn schema_at<'s>(root: &'s Value, keyword_path: &str) -> Option<&'s Value> {
    let mut node = root;
    for segment in keyword_path.split('/').skip(1) {
        node = if segment == "$ref" {
            let target = node.get("$ref")?.as_str()?.strip_prefix('#')?;
            root.pointer(target)?
        } else {
            node.pointer(&format!("/{segment}"))?
        };
    }
    Some(node)
}

/// "unknown field `max_msg`; did you mean `max_msgs`?", else the fields the object takes.
fn unknown_field(field: &str, allowed: &[&str]) -> String {
    // Case and separators are the usual slips (maxMsgs, max-msgs for max_msgs).
    let fold = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let folded = fold(field);
    let closest = allowed
        .iter()
        .map(|a| (strsim::damerau_levenshtein(&folded, &fold(a)), *a))
        .min();
    match closest {
        Some((distance, name)) if distance <= (folded.chars().count() / 3).max(1) => {
            format!("unknown field `{field}`; did you mean `{name}`?")
        }
        _ if allowed.is_empty() => format!("unknown field `{field}`"),
        _ => format!(
            "unknown field `{field}`; allowed fields: {}",
            allowed.join(", ")
        ),
    }
}

/// jsonschema echoes the offending value; a whole spec echoed back would bury the message.
fn shorten(message: &str) -> String {
    if message.chars().count() > 200 {
        format!("{}…", message.chars().take(200).collect::<String>())
    } else {
        message.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_suggest_the_closest() {
        let allowed = ["max_msgs", "max_bytes", "storage", "subjects"];
        assert_eq!(
            unknown_field("max_msg", &allowed),
            "unknown field `max_msg`; did you mean `max_msgs`?"
        );
        assert_eq!(
            unknown_field("maxBytes", &allowed),
            "unknown field `maxBytes`; did you mean `max_bytes`?"
        );
        assert_eq!(
            unknown_field("storge", &allowed),
            "unknown field `storge`; did you mean `storage`?"
        );
        assert_eq!(
            unknown_field("replicas", &allowed),
            "unknown field `replicas`; allowed fields: max_msgs, max_bytes, storage, subjects"
        );
        assert_eq!(unknown_field("x", &[]), "unknown field `x`");
    }

    #[test]
    fn errors_of_the_form_meant_are_reported_not_the_one_of() {
        let errors = validate_spec("IntegratedTool", &json!({"tool": {"nmae": "x"}}));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "/tool/nmae");
        assert!(errors[0].1.contains("did you mean `name`"), "{errors:?}");
        let errors = validate_spec("IntegratedTool", &json!({"nmae": "x"}));
        assert_eq!(errors[0].0, "/nmae", "{errors:?}");
    }

    #[test]
    fn unknown_fields_are_checked_against_their_own_object() {
        let spec = validate_spec("NatsStream", &json!({"subjects": ["a"], "max_msg": 1}));
        assert_eq!(
            spec,
            vec![(
                "/max_msg".to_string(),
                "unknown field `max_msg`; did you mean `max_msgs`?".to_string()
            )]
        );
        let doc = json!({
            "apiVersion": "ofctl.openframe.io/v1",
            "kind": "NatsStream",
            "metadata": {"name": "a", "label": {}},
            "spec": {},
        });
        assert_eq!(
            validate_envelope(&doc),
            vec![(
                "/metadata/label".to_string(),
                "unknown field `label`; did you mean `labels`?".to_string()
            )]
        );
    }

    #[test]
    fn pattern_errors_say_what_is_valid() {
        let errors = validate_spec("NatsStream", &json!({"subjects": ["a b"]}));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "/subjects/0");
        assert!(
            errors[0]
                .1
                .starts_with("\"a b\" is not valid: A subject without spaces"),
            "{errors:?}"
        );
    }

    #[test]
    fn one_of_errors_say_what_is_valid() {
        let errors = validate_spec("NatsStream", &json!({"max_age": "5 minutes"}));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "/max_age");
        assert!(
            errors[0]
                .1
                .starts_with("\"5 minutes\" is not valid: A duration:"),
            "{errors:?}"
        );
    }
}
