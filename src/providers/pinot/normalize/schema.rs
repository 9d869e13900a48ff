//! Schemas (apis.md §1.2): the canonical form of a schema and its columns, and the changes
//! the controller refuses or rewrites.

use serde_json::{json, Value};

use super::{as_bool, check_name, strip_defaults, Obj};

/// Column sections of a schema and the `fieldType` Pinot reports for their columns.
const FIELD_SECTIONS: [(&str, &str); 4] = [
    ("dimensionFieldSpecs", "DIMENSION"),
    ("metricFieldSpecs", "METRIC"),
    ("dateTimeFieldSpecs", "DATE_TIME"),
    ("complexFieldSpecs", "COMPLEX"),
];
const TIME_SECTION: (&str, &str) = ("timeFieldSpec", "TIME");

/// The default null value `FieldSpec` uses for a column type, which GET leaves out.
fn is_type_default_null(field_type: &str, data_type: &str, v: &Value) -> bool {
    let text = match v {
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    };
    let number = text.parse::<f64>().ok();
    match (field_type, data_type) {
        (_, "BYTES") => text.is_empty(),
        ("METRIC", _) => number == Some(0.0),
        (_, "INT") => number == Some(f64::from(i32::MIN)),
        (_, "LONG") => number == Some(i64::MIN as f64),
        (_, "FLOAT" | "DOUBLE") => number == Some(f64::NEG_INFINITY) || text == "-Infinity",
        (_, "BIG_DECIMAL" | "TIMESTAMP") => number == Some(0.0),
        (_, "BOOLEAN") => number == Some(0.0) || text.eq_ignore_ascii_case("false"),
        _ => text == "null",
    }
}

/// One column as `Schema.toJsonObject` prints it: `fieldType` always, `singleValueField` only
/// when false, `notNull` only when true, `defaultNullValue` and `maxLength` only when not the
/// default.
fn canonical_field(field: &Value, field_type: &str) -> Value {
    let Some(obj) = field.as_object() else {
        return field.clone();
    };
    // Key order as GET prints it (name, dataType, fieldType, …), so a column list reads the
    // same on both sides of a diff.
    let mut out = Obj::new();
    for key in ["name", "dataType"] {
        if let Some(v) = obj.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    out.insert("fieldType".into(), json!(field_type));
    for (k, v) in obj {
        out.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let data_type = obj
        .get("dataType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    strip_defaults(
        &mut out,
        &[
            ("singleValueField", json!(true)),
            ("notNull", json!(false)),
            ("maxLength", json!(512)),
        ],
    );
    if out
        .get("defaultNullValue")
        .is_some_and(|v| v.is_null() || is_type_default_null(field_type, data_type, v))
    {
        out.remove("defaultNullValue");
    }
    Value::Object(out)
}

/// The schema in the form GET returns it, minus the always-printed
/// `enableColumnBasedNullHandling: false`.
pub fn canonical_schema(spec: &Value) -> Value {
    let Some(obj) = spec.as_object() else {
        return spec.clone();
    };
    let mut out = obj.clone();
    strip_defaults(
        &mut out,
        &[
            ("enableColumnBasedNullHandling", json!(false)),
            ("description", json!("")),
            ("tags", json!([])),
            ("primaryKeyColumns", json!([])),
        ],
    );
    for (key, field_type) in FIELD_SECTIONS {
        match out.get_mut(key) {
            Some(Value::Array(fields)) if fields.is_empty() => {
                out.remove(key);
            }
            Some(Value::Array(fields)) => {
                for f in fields.iter_mut() {
                    *f = canonical_field(f, field_type);
                }
            }
            Some(Value::Null) => {
                out.remove(key);
            }
            _ => {}
        }
    }
    let (key, field_type) = TIME_SECTION;
    match out.get_mut(key) {
        Some(Value::Null) => {
            out.remove(key);
        }
        Some(f) => *f = canonical_field(f, field_type),
        None => {}
    }
    Value::Object(out)
}

/// Manifest schema → canonical; `schemaName` must be `metadata.name` (filled in when absent).
pub fn normalize_desired_schema(name: &str, spec: &Value) -> Result<Value, String> {
    check_name("metadata.name", name)?;
    let mut obj = spec
        .as_object()
        .cloned()
        .ok_or("a Pinot schema must be a JSON object")?;
    match obj.get("schemaName") {
        None | Some(Value::Null) => {
            obj.insert("schemaName".into(), json!(name));
        }
        Some(Value::String(s)) if s == name => {}
        Some(other) => {
            return Err(format!(
                "spec.schemaName {other} does not match metadata.name `{name}`: a Pinot schema is addressed by its name"
            ))
        }
    }
    Ok(canonical_schema(&Value::Object(obj)))
}

/// A column as the compatibility rule sees it (`FieldSpec.isBackwardCompatibleWith`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column<'a> {
    name: &'a str,
    data_type: &'a str,
    single_value: bool,
}

/// Every column of a canonical schema, whatever its section.
fn columns(schema: &Value) -> Vec<Column<'_>> {
    fn column(spec: &Value) -> Option<Column<'_>> {
        Some(Column {
            name: spec.get("name")?.as_str()?,
            data_type: spec
                .get("dataType")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            single_value: spec.get("singleValueField").and_then(as_bool) != Some(false),
        })
    }
    let mut out: Vec<Column<'_>> = FIELD_SECTIONS
        .iter()
        .filter_map(|(key, _)| schema.get(*key).and_then(Value::as_array))
        .flatten()
        .filter_map(column)
        .collect();
    out.extend(schema.get(TIME_SECTION.0).and_then(column));
    out
}

/// Why Pinot would reject `desired` as an update of `live` (`Schema.isBackwardCompatibleWith`,
/// apis.md §1.2): a removed column, a changed `dataType` or `singleValueField`, or changed
/// primary keys when there were some.
pub fn schema_incompatibilities(desired: &Value, live: &Value) -> Vec<String> {
    let new = columns(desired);
    let mut reasons = Vec::new();
    for old in columns(live) {
        match new.iter().find(|c| c.name == old.name) {
            None => reasons.push(format!(
                "column {} removed (Pinot only allows adding columns)",
                old.name
            )),
            Some(c) => {
                if c.data_type != old.data_type {
                    reasons.push(format!(
                        "column {} dataType changed from {} to {}",
                        old.name, old.data_type, c.data_type
                    ));
                }
                if c.single_value != old.single_value {
                    let shape = |sv: bool| if sv { "single-value" } else { "multi-value" };
                    reasons.push(format!(
                        "column {} changed from {} to {}",
                        old.name,
                        shape(old.single_value),
                        shape(c.single_value)
                    ));
                }
            }
        }
    }
    let (old_pk, new_pk) = (
        live.get("primaryKeyColumns"),
        desired.get("primaryKeyColumns"),
    );
    if old_pk.is_some() && old_pk != new_pk {
        let show = |v: Option<&Value>| v.map_or_else(|| "[]".to_string(), Value::to_string);
        reasons.push(format!(
            "primaryKeyColumns changed from {} to {}",
            show(old_pk),
            show(new_pk)
        ));
    }
    reasons
}

/// `updateBooleanFieldsIfNeeded` (apis.md §1.2): a column stored as STRING that the manifest
/// declares BOOLEAN is silently kept STRING by the controller, so the desired side keeps it too.
/// Returns the columns it rewrote.
pub fn keep_legacy_boolean_columns(desired: &mut Value, live: &Value) -> Vec<String> {
    let strings: Vec<&str> = columns(live)
        .into_iter()
        .filter(|c| c.data_type == "STRING")
        .map(|c| c.name)
        .collect();
    let mut kept = Vec::new();
    let Some(obj) = desired.as_object_mut() else {
        return kept;
    };
    for (key, _) in FIELD_SECTIONS.iter().chain([&TIME_SECTION]) {
        let fields: Vec<&mut Value> = match obj.get_mut(*key) {
            Some(Value::Array(list)) => list.iter_mut().collect(),
            Some(v @ Value::Object(_)) => vec![v],
            _ => continue,
        };
        for f in fields {
            let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
            if f.get("dataType") == Some(&json!("BOOLEAN")) && strings.contains(&name) {
                kept.push(name.to_string());
                f["dataType"] = json!("STRING");
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::super::shipped;
    use super::*;

    #[test]
    fn shipped_schema_equals_what_get_returns() {
        let desired = normalize_desired_schema("devices", &shipped("schema-devices.json")).unwrap();
        // GET /schemas/devices after POSTing the file (apis.md §1.2): fieldType on every column,
        // singleValueField only when false, enableColumnBasedNullHandling always.
        let dim =
            |name: &str| json!({"name": name, "dataType": "STRING", "fieldType": "DIMENSION"});
        let mv = |name: &str| json!({"name": name, "dataType": "STRING", "fieldType": "DIMENSION", "singleValueField": false});
        let live = json!({
            "schemaName": "devices",
            "enableColumnBasedNullHandling": false,
            "dimensionFieldSpecs": [
                dim("tenantId"), dim("machineId"), dim("status"), dim("deviceType"), dim("osType"),
                dim("organizationId"), mv("tags"), mv("tagKeyValues")
            ],
            "dateTimeFieldSpecs": [{
                "name": "ingestionTime", "dataType": "LONG", "fieldType": "DATE_TIME",
                "format": "1:MILLISECONDS:EPOCH", "granularity": "1:MILLISECONDS"
            }],
            "primaryKeyColumns": ["machineId"]
        });
        assert_eq!(canonical_schema(&live), desired);
        // Idempotent: what is sent normalizes to itself.
        assert_eq!(canonical_schema(&desired), desired);
    }

    #[test]
    fn schema_name_is_filled_or_must_match() {
        let spec = json!({"dimensionFieldSpecs": [{"name": "a", "dataType": "INT"}]});
        let n = normalize_desired_schema("x", &spec).unwrap();
        assert_eq!(n["schemaName"], "x");
        let err = normalize_desired_schema("x", &json!({"schemaName": "y"})).unwrap_err();
        assert!(err.contains("does not match metadata.name `x`"), "{err}");
    }

    #[test]
    fn default_null_values_and_lengths_are_defaults() {
        let field = |extra: Value| {
            let mut f = json!({"name": "c", "dataType": "INT"});
            f.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            canonical_field(&f, "DIMENSION")
        };
        assert!(field(json!({"defaultNullValue": -2147483648i64}))
            .get("defaultNullValue")
            .is_none());
        assert_eq!(field(json!({"defaultNullValue": 0}))["defaultNullValue"], 0);
        assert!(field(json!({"maxLength": 512, "notNull": false}))
            .get("maxLength")
            .is_none());
        let metric = canonical_field(
            &json!({"name": "m", "dataType": "DOUBLE", "defaultNullValue": 0.0}),
            "METRIC",
        );
        assert!(metric.get("defaultNullValue").is_none());
        let s = canonical_field(
            &json!({"name": "s", "dataType": "STRING", "defaultNullValue": "null", "singleValueField": "true"}),
            "DIMENSION",
        );
        assert_eq!(
            s,
            json!({"name": "s", "dataType": "STRING", "fieldType": "DIMENSION"})
        );
    }

    #[test]
    fn schema_incompatibilities_name_the_column() {
        let v = |extra: &str| -> Value {
            normalize_desired_schema("devices", &serde_json::from_str(extra).unwrap()).unwrap()
        };
        let live = normalize_desired_schema("devices", &shipped("schema-devices.json")).unwrap();
        // Adding a column is compatible.
        let mut added = live.clone();
        added["dimensionFieldSpecs"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "site", "dataType": "STRING", "fieldType": "DIMENSION"}));
        assert!(schema_incompatibilities(&added, &live).is_empty());
        // Removing one, changing a type or the shape, or the primary key is not.
        let mut changed = live.clone();
        let dims = changed["dimensionFieldSpecs"].as_array_mut().unwrap();
        dims.retain(|c| c["name"] != "osType");
        dims[0]["dataType"] = json!("INT");
        dims.iter_mut()
            .find(|c| c["name"] == "tags")
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove("singleValueField");
        changed["primaryKeyColumns"] = json!(["machineId", "tenantId"]);
        let reasons = schema_incompatibilities(&changed, &live);
        assert_eq!(
            reasons,
            vec![
                "column tenantId dataType changed from STRING to INT",
                "column osType removed (Pinot only allows adding columns)",
                "column tags changed from multi-value to single-value",
                r#"primaryKeyColumns changed from ["machineId"] to ["machineId","tenantId"]"#,
            ]
        );
        // Moving a column between sections with the same type passes Pinot's check.
        let a = v(r#"{"dimensionFieldSpecs": [{"name": "n", "dataType": "LONG"}]}"#);
        let b = v(r#"{"metricFieldSpecs": [{"name": "n", "dataType": "LONG"}]}"#);
        assert!(schema_incompatibilities(&b, &a).is_empty());
        // Adding a primary key where there was none is allowed.
        let pk = v(
            r#"{"dimensionFieldSpecs": [{"name": "n", "dataType": "LONG"}], "primaryKeyColumns": ["n"]}"#,
        );
        assert!(schema_incompatibilities(&pk, &a).is_empty());
    }

    #[test]
    fn legacy_string_columns_stay_string() {
        let live = json!({"dimensionFieldSpecs": [{"name": "flag", "dataType": "STRING", "fieldType": "DIMENSION"}]});
        let mut desired = json!({"dimensionFieldSpecs": [{"name": "flag", "dataType": "BOOLEAN", "fieldType": "DIMENSION"}]});
        assert_eq!(
            keep_legacy_boolean_columns(&mut desired, &live),
            vec!["flag"]
        );
        assert_eq!(desired, live);
    }
}
