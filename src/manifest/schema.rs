//! The manifest JSON Schema (`schema/manifest.schema.json`), embedded in the binary.

use std::collections::HashMap;
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

fn compile(root: Value) -> Validator {
    jsonschema::validator_for(&root).expect("embedded schema compiles")
}

/// Checks apiVersion, kind, metadata and the spec/specFile choice (not the spec body).
pub fn validate_envelope(doc: &Value) -> Vec<(String, String)> {
    static ENVELOPE: OnceLock<Validator> = OnceLock::new();
    let validator = ENVELOPE.get_or_init(|| {
        let mut root = schema().clone();
        if let Some(obj) = root.as_object_mut() {
            obj.remove("allOf");
        }
        compile(root)
    });
    collect(validator, doc)
}

/// Checks a spec against its kind's definition `#/$defs/<Kind>Spec`.
pub fn validate_spec(kind: &str, spec: &Value) -> Vec<(String, String)> {
    static SPECS: OnceLock<HashMap<String, Validator>> = OnceLock::new();
    let validators = SPECS.get_or_init(|| {
        crate::providers::all_kinds()
            .iter()
            .map(|k| {
                let root = json!({
                    "$ref": format!("#/$defs/{}Spec", k.kind),
                    "$defs": schema()["$defs"].clone(),
                });
                (k.kind.to_string(), compile(root))
            })
            .collect()
    });
    match validators.get(kind) {
        Some(v) => collect(v, spec),
        None => Vec::new(),
    }
}

/// Errors as (JSON pointer, message), pointing unknown fields at the field itself.
fn collect(validator: &Validator, instance: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for err in validator.iter_errors(instance) {
        let ptr = err.instance_path.to_string();
        match &err.kind {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for field in unexpected {
                    out.push((
                        format!("{ptr}/{}", crate::path::escape(field)),
                        format!("unknown field `{field}`"),
                    ));
                }
            }
            ValidationErrorKind::OneOfNotValid { .. } if ptr.is_empty() => out.push((
                ptr,
                "a document needs exactly one of `spec` (inline) or `specFile` (a JSON file)"
                    .into(),
            )),
            _ => out.push((ptr, shorten(&err.to_string()))),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// jsonschema echoes the offending value; a whole spec echoed back would bury the message.
fn shorten(message: &str) -> String {
    if message.chars().count() > 200 {
        format!("{}…", message.chars().take(200).collect::<String>())
    } else {
        message.to_string()
    }
}
