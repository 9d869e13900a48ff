//! Apache Pinot controller emulator (apis.md §1). Emulates release **1.5.1**: schemas always carry
//! `enableColumnBasedNullHandling`, `metadata` is optional, PUT /schemas accepts `force`, and the
//! 1.5 `tableIndexConfig` defaults and upsert backward-compatibility checks apply.
//!
//! Configs are kept as JSON already normalized to what GET returns, so every comparison (backward
//! compatibility, no-op updates) happens on the server's view, like ZK-stored configs upstream.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::{query_get, query_pairs};

type Obj = Map<String, Value>;

const OFFLINE: &str = "OFFLINE";
const REALTIME: &str = "REALTIME";
const DEFAULT_TENANT: &str = "DefaultTenant";
/// `controller.table.min.replicas` of a single-node controller.
const MIN_REPLICAS: i64 = 1;

/// Schemas by name and table configs by name-with-type, both in their GET form.
#[derive(Clone, Default)]
pub struct PinotState(Arc<Mutex<Store>>);

#[derive(Default)]
struct Store {
    schemas: BTreeMap<String, Obj>,
    tables: BTreeMap<String, Obj>,
}

impl PinotState {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn router(state: PinotState) -> Router {
    Router::new()
        .route("/schemas", get(list_schemas).post(add_schema))
        .route("/schemas/info", get(schemas_info))
        .route("/schemas/validate", post(validate_schema))
        .route(
            "/schemas/{name}",
            get(get_schema).put(update_schema).delete(delete_schema),
        )
        .route("/tables", get(list_tables).post(add_table))
        .route("/tables/validate", post(validate_table))
        .route(
            "/tables/{name}",
            get(get_table).put(update_table).delete(delete_table),
        )
        .route("/tableConfigs", get(list_table_configs))
        .route("/tableConfigs/{name}", get(get_table_configs))
        // Jersey's own NotFound/NotAllowed exceptions also go through the mapper (§1.1).
        .fallback(|| async { error(StatusCode::NOT_FOUND, "HTTP 404 Not Found") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "HTTP 405 Method Not Allowed",
            )
        })
        .with_state(state)
}

/// apis.md §1.1: `WebApplicationExceptionMapper` envelope.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({"code": status.as_u16(), "error": message.into()});
    (status, Json(body)).into_response()
}

struct PinotError(StatusCode, String);

impl IntoResponse for PinotError {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

type Res = Result<Response, PinotError>;

fn fail(status: StatusCode, message: impl Into<String>) -> PinotError {
    PinotError(status, message.into())
}

fn bad(message: impl Into<String>) -> PinotError {
    fail(StatusCode::BAD_REQUEST, message)
}

fn ok(body: Value) -> Res {
    Ok(Json(body).into_response())
}

/// apis.md §1.1: `ConfigSuccessResponse`.
fn config_success(unrecognized: Obj, status: String) -> Res {
    ok(json!({"unrecognizedProperties": unrecognized, "status": status}))
}

/// Boolean query params are `Boolean.parseBoolean`: only "true" (any case) is true.
fn query_bool(query: &Option<String>, key: &str, default: bool) -> bool {
    let pairs = query_pairs(query.as_deref());
    query_get(&pairs, key).map_or(default, |v| v.eq_ignore_ascii_case("true"))
}

/// The JSON text of a request: the body itself, or the single file part of a multipart upload
/// (schemas accept both, apis.md §1.2).
fn payload(headers: &HeaderMap, body: &Bytes) -> Result<String, PinotError> {
    let text = String::from_utf8_lossy(body).into_owned();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("multipart/form-data") {
        return Ok(text);
    }
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"'))
        .ok_or_else(|| bad("Missing multipart boundary"))?;
    let delimiter = format!("--{boundary}");
    let parts: Vec<&str> = text
        .split(delimiter.as_str())
        .skip(1)
        .take_while(|p| !p.starts_with("--"))
        .collect();
    match parts.as_slice() {
        [part] => Ok(part
            .split_once("\r\n\r\n")
            .map_or("", |(_, content)| content)
            .trim_end_matches("\r\n")
            .to_owned()),
        // Guess: upstream rejects other part counts with a 400; exact wording not in apis.md.
        _ => Err(bad("Exactly one file is expected in the multipart request")),
    }
}

/// `obj[key]` without the panic `Map`'s `Index` has for missing keys.
fn field<'a>(obj: &'a Obj, key: &str) -> &'a Value {
    obj.get(key).unwrap_or(&Value::Null)
}

/// Keys a config model knows; anything else is echoed back as `$.key` (apis.md §1.1).
fn unrecognized(raw: &Obj, known: &[&str]) -> Obj {
    raw.iter()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .map(|(k, v)| (format!("$.{k}"), v.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Schemas (apis.md §1.2)

const SCHEMA_KEYS: &[&str] = &[
    "schemaName",
    "description",
    "tags",
    "enableColumnBasedNullHandling",
    "dimensionFieldSpecs",
    "metricFieldSpecs",
    "timeFieldSpec",
    "dateTimeFieldSpecs",
    "complexFieldSpecs",
    "primaryKeyColumns",
];

/// Field-spec keys carried over verbatim after the normalized ones.
const FIELD_PASSTHROUGH: &[&str] = &[
    "maxLengthExceedStrategy",
    "virtualColumnProvider",
    "transformFunction",
    "description",
    "tags",
    "format",
    "granularity",
    "sampleValue",
    "incomingGranularitySpec",
    "outgoingGranularitySpec",
    "childFieldSpecs",
];

const DATA_TYPES: &[&str] = &[
    "INT",
    "LONG",
    "FLOAT",
    "DOUBLE",
    "BIG_DECIMAL",
    "BOOLEAN",
    "TIMESTAMP",
    "STRING",
    "JSON",
    "BYTES",
    "STRUCT",
    "MAP",
    "LIST",
    "UNKNOWN",
];

const EMPTY_SCHEMA_NAME: &str = "Invalid schema. Reason: 'schemaName' should not be null or empty";

enum SchemaError {
    /// Jackson could not bind the JSON to `Schema`.
    Malformed,
    /// `SchemaUtils.validate` rejected it.
    Invalid(String),
}

struct ParsedSchema {
    name: String,
    schema: Obj,
    unrecognized: Obj,
}

fn parse_schema(text: &str) -> Result<ParsedSchema, PinotError> {
    let malformed = || bad(format!("Invalid schema config json string: {text}"));
    let raw = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(raw)) => raw,
        _ => return Err(malformed()),
    };
    let schema = normalize_schema(&raw).map_err(|e| match e {
        SchemaError::Malformed => malformed(),
        SchemaError::Invalid(reason) if reason == EMPTY_SCHEMA_NAME => bad(reason),
        SchemaError::Invalid(reason) => bad(format!(
            "Invalid schema: {}. Reason: {reason}",
            raw.get("schemaName").and_then(Value::as_str).unwrap_or("")
        )),
    })?;
    Ok(ParsedSchema {
        name: field(&schema, "schemaName")
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        unrecognized: unrecognized(&raw, SCHEMA_KEYS),
        schema,
    })
}

/// Rebuilds the schema the way `Schema.toJsonObject` serializes it (apis.md §1.2 [DIFF]).
fn normalize_schema(raw: &Obj) -> Result<Obj, SchemaError> {
    let name = match raw.get("schemaName") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(SchemaError::Malformed),
    };
    let mut out = Obj::new();
    out.insert("schemaName".into(), name.into());
    if let Some(d) = raw.get("description").and_then(Value::as_str) {
        if !d.is_empty() {
            out.insert("description".into(), d.into());
        }
    }
    if let Some(tags) = raw.get("tags").and_then(Value::as_array) {
        if !tags.is_empty() {
            out.insert("tags".into(), tags.clone().into());
        }
    }
    let null_handling = match raw.get("enableColumnBasedNullHandling") {
        None | Some(Value::Null) => false,
        Some(v) => as_bool(v).ok_or(SchemaError::Malformed)?,
    };
    out.insert("enableColumnBasedNullHandling".into(), null_handling.into());

    let mut seen = HashSet::new();
    for (section, field_type) in [
        ("dimensionFieldSpecs", "DIMENSION"),
        ("metricFieldSpecs", "METRIC"),
        ("timeFieldSpec", "TIME"),
        ("dateTimeFieldSpecs", "DATE_TIME"),
        ("complexFieldSpecs", "COMPLEX"),
    ] {
        match raw.get(section) {
            None | Some(Value::Null) => {}
            Some(spec @ Value::Object(_)) if field_type == "TIME" => {
                let field = normalize_field(spec, field_type, &mut seen)?;
                out.insert(section.into(), field.into());
            }
            Some(Value::Array(specs)) if field_type != "TIME" => {
                let fields = specs
                    .iter()
                    .map(|s| normalize_field(s, field_type, &mut seen).map(Value::Object))
                    .collect::<Result<Vec<_>, _>>()?;
                if !fields.is_empty() {
                    out.insert(section.into(), fields.into());
                }
            }
            Some(_) => return Err(SchemaError::Malformed),
        }
    }
    match raw.get("primaryKeyColumns") {
        None | Some(Value::Null) => {}
        Some(Value::Array(cols)) if cols.iter().all(Value::is_string) => {
            if let Some(missing) = cols
                .iter()
                .find(|c| !seen.contains(c.as_str().unwrap_or("")))
            {
                // Guess at the wording; apis.md only says invalid schemas get a 400.
                return Err(SchemaError::Invalid(format!(
                    "Primary key column: {} is not present in the schema",
                    missing.as_str().unwrap_or("")
                )));
            }
            if !cols.is_empty() {
                out.insert("primaryKeyColumns".into(), cols.clone().into());
            }
        }
        Some(_) => return Err(SchemaError::Malformed),
    }
    if name.is_empty() {
        return Err(SchemaError::Invalid(EMPTY_SCHEMA_NAME.into()));
    }
    Ok(out)
}

fn normalize_field(
    spec: &Value,
    field_type: &str,
    seen: &mut HashSet<String>,
) -> Result<Obj, SchemaError> {
    let spec = spec.as_object().ok_or(SchemaError::Malformed)?;
    let name = spec
        .get("name")
        .and_then(Value::as_str)
        .ok_or(SchemaError::Malformed)?;
    let data_type = spec
        .get("dataType")
        .and_then(Value::as_str)
        .filter(|t| DATA_TYPES.contains(t))
        .ok_or(SchemaError::Malformed)?;
    // `Schema.addField`: "Field spec already exists for column" while binding.
    if !seen.insert(name.to_owned()) {
        return Err(SchemaError::Malformed);
    }
    let allowed: &[&str] = match field_type {
        "METRIC" => &["INT", "LONG", "FLOAT", "DOUBLE", "BIG_DECIMAL", "BYTES"],
        "COMPLEX" => &["STRUCT", "MAP", "LIST"],
        _ => &[
            "INT",
            "LONG",
            "FLOAT",
            "DOUBLE",
            "BIG_DECIMAL",
            "BOOLEAN",
            "TIMESTAMP",
            "STRING",
            "JSON",
            "BYTES",
        ],
    };
    if !allowed.contains(&data_type) {
        let kind = match field_type {
            "METRIC" | "COMPLEX" => field_type,
            _ => "DIMENSION/TIME",
        };
        return Err(SchemaError::Invalid(format!(
            "Unsupported data type: {data_type} in {kind} field"
        )));
    }

    let mut out = Obj::new();
    out.insert("name".into(), name.into());
    out.insert("dataType".into(), data_type.into());
    out.insert("fieldType".into(), field_type.into());
    let flag = |key: &str| match spec.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_bool(v).map(Some).ok_or(SchemaError::Malformed),
    };
    if flag("singleValueField")? == Some(false) {
        out.insert("singleValueField".into(), false.into());
    }
    if flag("notNull")? == Some(true) {
        out.insert("notNull".into(), true.into());
    }
    if let Some(v) = spec.get("defaultNullValue").filter(|v| !v.is_null()) {
        let value = default_null_value(v, data_type).ok_or(SchemaError::Malformed)?;
        if value != type_default_null_value(field_type, data_type) {
            out.insert("defaultNullValue".into(), value);
        }
    }
    match spec.get("maxLength").and_then(Value::as_i64) {
        Some(512) | None => {}
        Some(n) => {
            out.insert("maxLength".into(), n.into());
        }
    }
    for key in FIELD_PASSTHROUGH {
        if let Some(v) = spec.get(*key).filter(|v| !v.is_null()) {
            out.insert((*key).into(), v.clone());
        }
    }
    let needs: &[&str] = match field_type {
        "DATE_TIME" => &["format", "granularity"],
        "TIME" => &["incomingGranularitySpec"],
        _ => &[],
    };
    if needs.iter().any(|k| !out.contains_key(*k)) {
        return Err(SchemaError::Malformed);
    }
    Ok(out)
}

/// `FieldSpec` stores the default in the column's stored type and serializes it as such.
fn default_null_value(v: &Value, data_type: &str) -> Option<Value> {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match data_type {
        "INT" | "LONG" | "TIMESTAMP" => text.trim().parse::<i64>().ok().map(Value::from),
        "BOOLEAN" => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(1.into()),
            _ => Some(0.into()),
        },
        "FLOAT" | "DOUBLE" | "BIG_DECIMAL" => text.trim().parse::<f64>().ok().map(Value::from),
        _ => Some(Value::String(text)),
    }
}

fn type_default_null_value(field_type: &str, data_type: &str) -> Value {
    match (field_type, data_type) {
        (_, "BYTES") => "".into(),
        ("METRIC", "INT" | "LONG") => 0.into(),
        ("METRIC", _) => 0.0.into(),
        (_, "INT") => i32::MIN.into(),
        (_, "LONG") => i64::MIN.into(),
        (_, "FLOAT" | "DOUBLE") => f64::NEG_INFINITY.into(),
        (_, "BIG_DECIMAL") => 0.0.into(),
        (_, "BOOLEAN" | "TIMESTAMP") => 0.into(),
        _ => "null".into(),
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

/// Every column as (name, dataType, singleValue) — the only attributes the compatibility rule reads.
fn columns(schema: &Obj) -> Vec<(&str, &str, bool)> {
    let mut out = Vec::new();
    for section in [
        "dimensionFieldSpecs",
        "metricFieldSpecs",
        "dateTimeFieldSpecs",
        "complexFieldSpecs",
    ] {
        for spec in schema
            .get(section)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push(column(spec));
        }
    }
    if let Some(time) = schema.get("timeFieldSpec") {
        out.push(column(time));
    }
    out
}

fn column(spec: &Value) -> (&str, &str, bool) {
    (
        spec["name"].as_str().unwrap_or_default(),
        spec["dataType"].as_str().unwrap_or_default(),
        spec.get("singleValueField") != Some(&Value::Bool(false)),
    )
}

/// `updateBooleanFieldsIfNeeded`: a stored STRING column sent as BOOLEAN stays STRING (§1.2 [DIFF]).
fn keep_legacy_boolean_columns(old: &Obj, new: &mut Obj) {
    let strings: HashSet<String> = columns(old)
        .into_iter()
        .filter(|(_, t, _)| *t == "STRING")
        .map(|(n, _, _)| n.to_owned())
        .collect();
    for spec in new.values_mut().filter_map(Value::as_array_mut).flatten() {
        let is_legacy = spec["dataType"] == "BOOLEAN"
            && spec["name"].as_str().is_some_and(|n| strings.contains(n));
        if let (true, Some(spec)) = (is_legacy, spec.as_object_mut()) {
            spec.insert("dataType".into(), "STRING".into());
        }
    }
}

/// `Schema.isBackwardCompatibleWith`: the reasons an update is rejected (§1.2).
fn schema_incompatibilities(old: &Obj, new: &Obj) -> Vec<String> {
    let (old_cols, new_cols) = (columns(old), columns(new));
    let mut reasons = Vec::new();
    let missing: Vec<&str> = old_cols
        .iter()
        .filter(|(n, _, _)| !new_cols.iter().any(|(m, _, _)| m == n))
        .map(|(n, _, _)| *n)
        .collect();
    if !missing.is_empty() {
        reasons.push(format!("Missing columns: [{}]", missing.join(", ")));
    }
    let changed: Vec<String> = old_cols
        .iter()
        .filter_map(|(n, t, sv)| {
            let (_, t2, sv2) = new_cols.iter().find(|(m, _, _)| m == n)?;
            (t != t2 || sv != sv2)
                .then(|| format!("{n} (dataType: {t} -> {t2}, singleValueField: {sv} -> {sv2})"))
        })
        .collect();
    if !changed.is_empty() {
        reasons.push(format!(
            "Incompatible field specifications: [{}]",
            changed.join(", ")
        ));
    }
    let (old_pk, new_pk) = (old.get("primaryKeyColumns"), new.get("primaryKeyColumns"));
    if old_pk.is_some() && old_pk != new_pk {
        let show = |v: Option<&Value>| v.map_or("[]".to_owned(), Value::to_string);
        reasons.push(format!(
            "Primary key columns changed: {} -> {}",
            show(old_pk),
            show(new_pk)
        ));
    }
    reasons
}

/// Shared update path of `POST /schemas` (override) and `PUT /schemas/{name}`.
fn update_schema_in(store: &mut Store, mut schema: Obj, force: bool) -> Result<(), PinotError> {
    let name = field(&schema, "schemaName")
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let Some(old) = store.schemas.get(&name) else {
        return Err(fail(
            StatusCode::NOT_FOUND,
            format!("Failed to find schema {name}"),
        ));
    };
    keep_legacy_boolean_columns(old, &mut schema);
    if *old == schema {
        return Ok(());
    }
    let reasons = schema_incompatibilities(old, &schema);
    if !reasons.is_empty() && !force {
        // 1.5+ surfaces the nested reasons; their exact layout is a guess.
        return Err(bad(format!(
            "Backward incompatible schema {name}. Only allow adding new columns. Reason: {}",
            reasons.join("; ")
        )));
    }
    store.schemas.insert(name, schema);
    Ok(())
}

async fn list_schemas(State(s): State<PinotState>) -> Json<Vec<String>> {
    Json(s.lock().schemas.keys().cloned().collect())
}

async fn schemas_info(State(s): State<PinotState>) -> Json<Value> {
    let store = s.lock();
    let count = |schema: &Obj, key: &str| {
        schema
            .get(key)
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    let info: Vec<Value> = store
        .schemas
        .iter()
        .map(|(name, schema)| {
            json!({
                "schemaName": name,
                "numDimensionFields": count(schema, "dimensionFieldSpecs"),
                "numDateTimeFields": count(schema, "dateTimeFieldSpecs"),
                "numMetricFields": count(schema, "metricFieldSpecs"),
                "numComplexFields": count(schema, "complexFieldSpecs"),
            })
        })
        .collect();
    Json(info.into())
}

async fn get_schema(State(s): State<PinotState>, Path(name): Path<String>) -> Res {
    match s.lock().schemas.get(&name) {
        Some(schema) => ok(schema.clone().into()),
        None => Err(fail(StatusCode::NOT_FOUND, "Schema not found")),
    }
}

async fn add_schema(
    State(s): State<PinotState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Res {
    let override_existing = query_bool(&query, "override", true);
    let force = query_bool(&query, "force", false);
    let parsed = parse_schema(&payload(&headers, &body)?)?;
    let mut store = s.lock();
    if store.schemas.contains_key(&parsed.name) {
        if !override_existing {
            return Err(fail(
                StatusCode::CONFLICT,
                format!("Schema: {} already exists", parsed.name),
            ));
        }
        update_schema_in(&mut store, parsed.schema, force)?;
    } else {
        store.schemas.insert(parsed.name.clone(), parsed.schema);
    }
    config_success(
        parsed.unrecognized,
        format!("{} successfully added", parsed.name),
    )
}

async fn update_schema(
    State(s): State<PinotState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Res {
    let reload = query_bool(&query, "reload", false);
    let force = query_bool(&query, "force", false);
    let parsed = parse_schema(&payload(&headers, &body)?)?;
    if parsed.name != name {
        // Wording beyond "Schema name mismatch…" is a guess.
        return Err(bad(format!(
            "Schema name mismatch for uploaded schema, in path: {name}, in body: {}",
            parsed.name
        )));
    }
    let mut store = s.lock();
    update_schema_in(&mut store, parsed.schema, force)?;
    let has_table = [OFFLINE, REALTIME]
        .iter()
        .any(|t| store.tables.contains_key(&with_type(&name, t)));
    if reload && !has_table {
        return Err(fail(
            StatusCode::NOT_FOUND,
            format!("Failed to find table {name} to reload"),
        ));
    }
    config_success(parsed.unrecognized, format!("{name} successfully added"))
}

async fn delete_schema(State(s): State<PinotState>, Path(name): Path<String>) -> Res {
    let mut store = s.lock();
    if !store.schemas.contains_key(&name) {
        return Err(fail(
            StatusCode::NOT_FOUND,
            format!("Schema {name} not found"),
        ));
    }
    // Only REALTIME tables are checked upstream (a TODO in the source), apis.md §1.2.
    let realtime = with_type(&name, REALTIME);
    if store.tables.contains_key(&realtime) {
        return Err(fail(
            StatusCode::CONFLICT,
            format!("Cannot delete schema {name}, as it is associated with table {realtime}"),
        ));
    }
    store.schemas.remove(&name);
    ok(json!({"status": format!("Schema {name} deleted")}))
}

async fn validate_schema(headers: HeaderMap, body: Bytes) -> Res {
    let parsed = parse_schema(&payload(&headers, &body)?)?;
    let mut out = parsed.schema;
    out.insert("unrecognizedProperties".into(), parsed.unrecognized.into());
    ok(out.into())
}

// ---------------------------------------------------------------------------------------------
// Tables (apis.md §1.3, defaults §1.5)

/// Jackson creator-property order of `TableConfig`, which is also its serialization order.
const TABLE_KEYS: &[&str] = &[
    "tableName",
    "tableType",
    "segmentsConfig",
    "tenants",
    "tableIndexConfig",
    "metadata",
    "quota",
    "task",
    "routing",
    "query",
    "instanceAssignmentConfigMap",
    "fieldConfigList",
    "upsertConfig",
    "dedupConfig",
    "dimensionTableConfig",
    "ingestionConfig",
    "tierConfigs",
    "isDimTable",
    "tunerConfigs",
    "instancePartitionsMap",
    "segmentAssignmentConfigMap",
    "tierOverwrites",
];

use crate::providers::pinot::server_defaults;

/// Primitive fields of `IndexingConfig` in 1.5.1, always serialized (§1.5).
fn index_defaults() -> Vec<(&'static str, Value)> {
    server_defaults(&["tableIndexConfig"])
}

fn upsert_defaults() -> Vec<(&'static str, Value)> {
    server_defaults(&["upsertConfig", "upsertConfigCompared"])
}

struct ParsedTable {
    /// Name with type suffix.
    name: String,
    raw_name: String,
    kind: &'static str,
    config: Obj,
    unrecognized: Obj,
}

/// Jackson's message when the `TableConfig` creator rejects its arguments.
fn construct_error(problem: &str) -> PinotError {
    bad(format!(
        "Cannot construct instance of `org.apache.pinot.spi.config.table.TableConfig`, problem: {problem}"
    ))
}

fn parse_table(text: &str) -> Result<ParsedTable, PinotError> {
    let raw = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(raw)) => raw,
        Ok(other) => {
            return Err(bad(format!(
                "Cannot deserialize value of type `org.apache.pinot.spi.config.table.TableConfig` from {} value",
                json_kind(&other)
            )))
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    let raw_table_name = match raw.get("tableName") {
        Some(Value::String(n)) => n.as_str(),
        _ => return Err(construct_error("'tableName' must be configured")),
    };
    if raw_table_name.contains("__") {
        return Err(construct_error(
            "'tableName' cannot contain double underscore ('__')",
        ));
    }
    let kind = match raw.get("tableType").and_then(Value::as_str) {
        None => return Err(construct_error("'tableType' must be configured")),
        Some(t) if t.eq_ignore_ascii_case(OFFLINE) => OFFLINE,
        Some(t) if t.eq_ignore_ascii_case(REALTIME) => REALTIME,
        Some(t) => {
            return Err(construct_error(&format!(
                "No enum constant org.apache.pinot.spi.config.table.TableType.{}",
                t.to_uppercase()
            )))
        }
    };
    for key in ["segmentsConfig", "tableIndexConfig"] {
        if !raw.get(key).is_some_and(Value::is_object) {
            return Err(construct_error(&format!("'{key}' must be configured")));
        }
    }
    let name = with_type(raw_table_name, kind);
    let config = normalize_table(&raw, &name, kind);
    Ok(ParsedTable {
        raw_name: raw_name(&name).to_owned(),
        name,
        kind,
        config,
        unrecognized: unrecognized(&raw, TABLE_KEYS),
    })
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "Array",
        Value::String(_) => "String",
        Value::Number(_) => "Number",
        Value::Bool(_) => "Boolean",
        _ => "Null",
    }
}

/// `TableNameBuilder.tableNameWithType`: appends the suffix unless it is already there.
fn with_type(name: &str, kind: &str) -> String {
    let suffix = format!("_{kind}");
    if name.ends_with(&suffix) {
        name.to_owned()
    } else {
        format!("{name}{suffix}")
    }
}

fn raw_name(name: &str) -> &str {
    name.strip_suffix("_OFFLINE")
        .or_else(|| name.strip_suffix("_REALTIME"))
        .unwrap_or(name)
}

fn type_of(name: &str) -> Option<&'static str> {
    if name.ends_with("_OFFLINE") {
        Some(OFFLINE)
    } else if name.ends_with("_REALTIME") {
        Some(REALTIME)
    } else {
        None
    }
}

/// Serializes the config the way the stored `TableConfig` comes back from GET (§1.5 [DIFF]),
/// minus the create/update-only steps (tenant fill, min replicas) that `/tables/validate` skips.
fn normalize_table(raw: &Obj, name: &str, kind: &str) -> Obj {
    let mut out = Obj::new();
    for key in TABLE_KEYS {
        let value = raw.get(*key).filter(|v| !v.is_null()).cloned();
        let value = match *key {
            "tableName" => Some(name.into()),
            "tableType" => Some(kind.into()),
            "isDimTable" => Some(value.as_ref().and_then(as_bool).unwrap_or(false).into()),
            "tenants" => Some(value.unwrap_or_else(|| json!({}))),
            "metadata" => Some(value.unwrap_or_else(|| json!({"customConfigs": {}}))),
            _ => value,
        };
        let Some(mut value) = value else { continue };
        if let Value::Object(obj) = &mut value {
            normalize_section(key, obj);
        }
        if let ("fieldConfigList", Value::Array(list)) = (*key, &mut value) {
            for field in list.iter_mut().filter_map(Value::as_object_mut) {
                fill(field, &[("encodingType", "DICTIONARY".into())]);
                let types = match field.remove("indexType") {
                    Some(Value::String(t)) => json!([t]),
                    _ => json!([]),
                };
                field.entry("indexTypes").or_insert(types);
                stringify_child(field, "properties");
            }
        }
        out.insert((*key).into(), value);
    }
    out
}

fn normalize_section(key: &str, obj: &mut Obj) {
    match key {
        "segmentsConfig" => {
            // `replication` & co. are Strings in the model: numbers come back quoted.
            for k in ["replication", "replicasPerPartition", "retentionTimeValue"] {
                stringify_entry(obj, k);
            }
            fill(obj, &[("minimizeDataMovement", false.into())]);
        }
        "tableIndexConfig" => {
            fill(obj, &index_defaults());
            stringify_child(obj, "streamConfigs");
        }
        "metadata" => stringify_child(obj, "customConfigs"),
        "task" => {
            if let Some(Value::Object(types)) = obj.get_mut("taskTypeConfigsMap") {
                for cfg in types.values_mut().filter_map(Value::as_object_mut) {
                    stringify_all(cfg);
                }
            }
        }
        "upsertConfig" => {
            // Deprecated single-column setter, folded into the list (no getter serializes it back).
            if let Some(col) = obj.remove("comparisonColumn").filter(|c| !c.is_null()) {
                obj.entry("comparisonColumns").or_insert(json!([col]));
            }
            fill(obj, &upsert_defaults());
        }
        "dedupConfig" => fill(
            obj,
            &[
                ("dedupEnabled", true.into()),
                ("hashFunction", "NONE".into()),
                ("metadataTTL", 0.0.into()),
            ],
        ),
        "ingestionConfig" => {
            fill(
                obj,
                &[
                    ("continueOnError", false.into()),
                    ("rowTimeValueCheck", false.into()),
                    ("segmentTimeValueCheck", true.into()),
                ],
            );
            for (sub, defaults, maps) in [
                (
                    "streamIngestionConfig",
                    ("columnMajorSegmentBuilderEnabled", true),
                    "streamConfigMaps",
                ),
                (
                    "batchIngestionConfig",
                    ("consistentDataPush", false),
                    "batchConfigMaps",
                ),
            ] {
                if let Some(Value::Object(sub)) = obj.get_mut(sub) {
                    fill(sub, &[(defaults.0, defaults.1.into())]);
                    if let Some(Value::Array(list)) = sub.get_mut(maps) {
                        list.iter_mut()
                            .filter_map(Value::as_object_mut)
                            .for_each(stringify_all);
                    }
                }
            }
        }
        "instanceAssignmentConfigMap" => {
            // Integer/boolean fields of the assignment model: quoted values come back unquoted.
            for cfg in obj.values_mut().filter_map(Value::as_object_mut) {
                for part in ["tagPoolConfig", "replicaGroupPartitionConfig"] {
                    if let Some(Value::Object(part)) = cfg.get_mut(part) {
                        for v in part.values_mut() {
                            coerce_scalar(v);
                        }
                    }
                }
                if let Some(v) = cfg.get_mut("minimizeDataMovement") {
                    coerce_scalar(v);
                }
            }
        }
        _ => {}
    }
}

/// Adds missing primitive defaults; present values are coerced to the default's JSON type the
/// way Jackson coerces `"true"` into a boolean field.
fn fill(obj: &mut Obj, defaults: &[(&str, Value)]) {
    for (key, default) in defaults {
        match obj.get_mut(*key) {
            None => {
                obj.insert((*key).into(), default.clone());
            }
            Some(v) if v.is_null() => *v = default.clone(),
            Some(v) => {
                if let Value::String(s) = v {
                    let coerced = match default {
                        Value::Bool(_) => as_bool(&Value::String(s.clone())).map(Value::from),
                        Value::Number(n) if n.is_f64() => s.parse::<f64>().ok().map(Value::from),
                        Value::Number(_) => s.parse::<i64>().ok().map(Value::from),
                        _ => None,
                    };
                    if let Some(c) = coerced {
                        *v = c;
                    }
                }
            }
        }
    }
}

fn coerce_scalar(v: &mut Value) {
    if let Value::String(s) = v {
        if let Ok(n) = s.parse::<i64>() {
            *v = n.into();
        } else if let Some(b) = as_bool(v) {
            *v = b.into();
        }
    }
}

fn stringify_entry(obj: &mut Obj, key: &str) {
    if let Some(v) = obj.get_mut(key) {
        if v.is_number() || v.is_boolean() {
            *v = v.to_string().into();
        }
    }
}

/// `Map<String, String>` fields: Jackson turns scalar values into their text.
fn stringify_all(obj: &mut Obj) {
    let keys: Vec<String> = obj.keys().cloned().collect();
    for k in keys {
        stringify_entry(obj, &k);
    }
}

fn stringify_child(obj: &mut Obj, key: &str) {
    if let Some(Value::Object(child)) = obj.get_mut(key) {
        stringify_all(child);
    }
}

/// Steps that only create/update run (§1.5): single-tenant default fill and `ensureMinReplicas`.
fn finalize_for_write(parsed: &mut ParsedTable) -> Result<(), PinotError> {
    if let Some(Value::Object(tenants)) = parsed.config.get_mut("tenants") {
        for role in ["broker", "server"] {
            if !tenants.get(role).is_some_and(Value::is_string) {
                tenants.insert(role.into(), DEFAULT_TENANT.into());
            }
        }
    }
    if let Some(Value::Object(segments)) = parsed.config.get_mut("segmentsConfig") {
        let replication = match segments.get("replication").and_then(Value::as_str) {
            None => MIN_REPLICAS,
            Some(r) => r.trim().parse::<i64>().map_err(|_| {
                bad(format!(
                    "Invalid table config: {} with error: For input string: \"{r}\"",
                    parsed.name
                ))
            })?,
        };
        segments.insert(
            "replication".into(),
            replication.max(MIN_REPLICAS).to_string().into(),
        );
    }
    Ok(())
}

fn schema_columns(schema: &Obj) -> HashSet<String> {
    columns(schema)
        .into_iter()
        .map(|(n, _, _)| n.to_owned())
        .collect()
}

/// A subset of `TableConfigUtils.validate`: the checks a declarative config most often trips.
/// Messages follow upstream where known; see the report for guessed wording.
fn check_table(t: &ParsedTable, schema: &Obj) -> Result<(), String> {
    let cfg = &t.config;
    let cols = schema_columns(schema);
    let time_column = field(cfg, "segmentsConfig")
        .get("timeColumnName")
        .and_then(Value::as_str);
    match time_column {
        None if t.kind == REALTIME => {
            return Err("'timeColumnName' cannot be null in REALTIME table config".into())
        }
        Some(tc) if !cols.contains(tc) => {
            return Err(format!(
                "Cannot find valid fieldSpec for timeColumn: {tc} from the table config: {}, in the schema: {}",
                t.name,
                field(schema, "schemaName").as_str().unwrap_or_default()
            ))
        }
        _ => {}
    }
    if t.kind == REALTIME {
        let in_index = field(cfg, "tableIndexConfig")
            .get("streamConfigs")
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty());
        let in_ingestion = cfg
            .get("ingestionConfig")
            .and_then(|i| i.get("streamIngestionConfig"))
            .and_then(|s| s.get("streamConfigMaps"))
            .and_then(Value::as_array)
            .is_some_and(|l| !l.is_empty());
        if !in_index && !in_ingestion {
            return Err(format!(
                "Could not find streamConfigs for REALTIME table: {}",
                t.name
            ));
        }
    }
    let index = field(cfg, "tableIndexConfig");
    for list in [
        "invertedIndexColumns",
        "noDictionaryColumns",
        "rangeIndexColumns",
        "sortedColumn",
        "bloomFilterColumns",
        "textIndexColumns",
        "jsonIndexColumns",
    ] {
        let names = index
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        if let Some(c) = names.filter_map(Value::as_str).find(|c| !cols.contains(*c)) {
            return Err(format!(
                "Column Name {c} defined in {list} must be a valid column defined in the schema"
            ));
        }
    }
    let upsert = cfg.get("upsertConfig").is_some_and(|u| u["mode"] != "NONE");
    let dedup = cfg
        .get("dedupConfig")
        .is_some_and(|d| d["dedupEnabled"] == true);
    if upsert || dedup {
        if t.kind != REALTIME {
            return Err("Upsert/Dedup table is for realtime table only.".into());
        }
        if schema.get("primaryKeyColumns").is_none() {
            return Err("Upsert/Dedup table must have primary key columns in the schema".into());
        }
        let routing = cfg
            .get("routing")
            .and_then(|r| r.get("instanceSelectorType"))
            .and_then(Value::as_str);
        if routing != Some("strictReplicaGroup") {
            return Err(
                "Upsert/Dedup table must use strict replica-group (i.e. strictReplicaGroup) based routing"
                    .into(),
            );
        }
    }
    Ok(())
}

/// `TableConfigUtils.validateBackwardCompatibility` as of 1.5.1 (§1.3).
fn table_incompatibilities(old: &Obj, new: &Obj) -> Vec<String> {
    let time = |c: &Obj| field(c, "segmentsConfig").get("timeColumnName").cloned();
    let mut out = Vec::new();
    let enabled = |c: &Obj| {
        c.get("upsertConfig")
            .filter(|u| u["mode"] != "NONE")
            .cloned()
    };
    if let (Some(a), Some(b)) = (enabled(old), enabled(new)) {
        for k in [
            "mode",
            "hashFunction",
            "comparisonColumns",
            "dropOutOfOrderRecord",
            "outOfOrderRecordColumn",
            "partialUpsertStrategies",
            "defaultPartialUpsertStrategy",
        ] {
            if a.get(k) != b.get(k) {
                out.push(format!("upsertConfig.{k}"));
            }
        }
        let implicit = a.get("comparisonColumns").is_none() && b.get("comparisonColumns").is_none();
        if implicit && time(old) != time(new) {
            out.push("segmentsConfig.timeColumnName".into());
        }
    }
    let dedup = |c: &Obj| {
        c.get("dedupConfig")
            .filter(|d| d["dedupEnabled"] == true)
            .cloned()
    };
    if let (Some(a), Some(b)) = (dedup(old), dedup(new)) {
        for k in ["hashFunction", "dedupTimeColumn"] {
            if a.get(k) != b.get(k) {
                out.push(format!("dedupConfig.{k}"));
            }
        }
        let implicit = a.get("dedupTimeColumn").is_none() && b.get("dedupTimeColumn").is_none();
        if implicit && time(old) != time(new) {
            out.push("segmentsConfig.timeColumnName".into());
        }
    }
    out
}

async fn list_tables(State(s): State<PinotState>, RawQuery(query): RawQuery) -> Res {
    let pairs = query_pairs(query.as_deref());
    let store = s.lock();
    let mut names: Vec<String> = match query_get(&pairs, "type").map(str::to_ascii_lowercase) {
        None => store
            .tables
            .keys()
            .map(|n| raw_name(n).to_owned())
            .collect(),
        Some(t) if t == "offline" || t == "realtime" => store
            .tables
            .keys()
            .filter(|n| type_of(n).is_some_and(|k| k.eq_ignore_ascii_case(&t)))
            .cloned()
            .collect(),
        Some(t) if t == "dimension" => store
            .tables
            .iter()
            .filter(|(_, c)| field(c, "isDimTable") == true)
            .map(|(n, _)| n.clone())
            .collect(),
        Some(t) => return Err(bad(format!("Illegal table type '{t}'"))),
    };
    names.sort();
    names.dedup();
    if query_get(&pairs, "sortAsc") == Some("false") {
        names.reverse();
    }
    ok(json!({ "tables": names }))
}

async fn get_table(
    State(s): State<PinotState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Res {
    let pairs = query_pairs(query.as_deref());
    let wanted = query_get(&pairs, "type");
    let store = s.lock();
    let mut out = Obj::new();
    for kind in [OFFLINE, REALTIME] {
        if wanted.is_some_and(|w| !w.eq_ignore_ascii_case(kind)) {
            continue;
        }
        if let Some(cfg) = store.tables.get(&with_type(&name, kind)) {
            out.insert(kind.into(), cfg.clone().into());
        }
    }
    if out.is_empty() {
        let shown = match wanted {
            Some(w) => with_type(&name, &w.to_ascii_uppercase()),
            None => name,
        };
        return Err(fail(
            StatusCode::NOT_FOUND,
            format!("Table {shown} does not exist"),
        ));
    }
    ok(out.into())
}

async fn add_table(State(s): State<PinotState>, body: Bytes) -> Res {
    let mut parsed = parse_table(&String::from_utf8_lossy(&body))?;
    let mut store = s.lock();
    // apis.md §1.3 order: parse → exists (409) → schema (400) → validation (400) → write.
    if store.tables.contains_key(&parsed.name) {
        return Err(fail(
            StatusCode::CONFLICT,
            format!(
                "Table config for {} already exists. If this is unexpected, try deleting the table to remove all metadata associated with it.",
                parsed.name
            ),
        ));
    }
    let Some(schema) = store.schemas.get(&parsed.raw_name) else {
        return Err(bad(format!(
            "Failed to find schema for table: {}",
            parsed.name
        )));
    };
    check_table(&parsed, schema).map_err(|e| {
        bad(format!(
            "Invalid table config: {} with error: {e}",
            parsed.name
        ))
    })?;
    finalize_for_write(&mut parsed)?;
    let status = format!("Table {} successfully added", parsed.name);
    store.tables.insert(parsed.name, parsed.config);
    config_success(parsed.unrecognized, status)
}

async fn update_table(
    State(s): State<PinotState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Res {
    let force = query_bool(&query, "force", false);
    let mut parsed = parse_table(&String::from_utf8_lossy(&body))?;
    let requested = with_type(&name, parsed.kind);
    if requested != parsed.name {
        return Err(bad(format!(
            "Request table {requested} does not match table name in the body {}",
            parsed.name
        )));
    }
    let mut store = s.lock();
    // Validation (schema included) runs before the existence check, apis.md §1.3.
    let invalid = |e: String| bad(format!("Invalid table config: {name} with error: {e}"));
    let schema = store
        .schemas
        .get(&parsed.raw_name)
        .ok_or_else(|| invalid(format!("Failed to find schema for table: {}", parsed.name)))?;
    check_table(&parsed, schema).map_err(invalid)?;
    let Some(old) = store.tables.get(&parsed.name) else {
        return Err(fail(
            StatusCode::NOT_FOUND,
            format!("Table {} does not exist", parsed.name),
        ));
    };
    finalize_for_write(&mut parsed)?;
    let violations = table_incompatibilities(old, &parsed.config);
    if !violations.is_empty() && !force {
        return Err(bad(format!(
            "Failed to update configuration for {name} due to: Failed to update table '{}': Cannot modify [{}] as it may lead to data inconsistencies. Please create a new table instead.",
            parsed.name,
            violations.join(", ")
        )));
    }
    store.tables.insert(parsed.name, parsed.config);
    config_success(
        parsed.unrecognized,
        format!("Table config updated for {name}"),
    )
}

async fn delete_table(
    State(s): State<PinotState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Res {
    let pairs = query_pairs(query.as_deref());
    let kind = match query_get(&pairs, "type") {
        None => type_of(&name),
        Some(t) if t.eq_ignore_ascii_case(OFFLINE) => Some(OFFLINE),
        Some(t) if t.eq_ignore_ascii_case(REALTIME) => Some(REALTIME),
        Some(t) => return Err(bad(format!("Illegal table type '{t}'"))),
    };
    let raw = raw_name(&name);
    let mut store = s.lock();
    let deleted: Vec<String> = [OFFLINE, REALTIME]
        .into_iter()
        .filter(|k| kind.is_none_or(|want| want == *k))
        .map(|k| with_type(raw, k))
        .filter(|n| store.tables.remove(n).is_some())
        .collect();
    if deleted.is_empty() {
        return Err(fail(
            StatusCode::NOT_FOUND,
            format!(
                "Table '{name}' with type {} does not exist",
                kind.unwrap_or("null")
            ),
        ));
    }
    ok(json!({"status": format!("Tables: [{}] deleted", deleted.join(", "))}))
}

async fn validate_table(State(s): State<PinotState>, body: Bytes) -> Res {
    let parsed = parse_table(&String::from_utf8_lossy(&body))?;
    let invalid = |e: String| bad(format!("Invalid table config: {}. {e}", parsed.name));
    let store = s.lock();
    let schema = store
        .schemas
        .get(&parsed.raw_name)
        .ok_or_else(|| invalid(format!("Failed to find schema for table: {}", parsed.name)))?;
    check_table(&parsed, schema).map_err(invalid)?;
    let mut out = Obj::new();
    out.insert(parsed.kind.into(), parsed.config.into());
    out.insert("unrecognizedProperties".into(), parsed.unrecognized.into());
    ok(out.into())
}

// ---------------------------------------------------------------------------------------------
// /tableConfigs (apis.md §1.4) — read side only.

async fn list_table_configs(State(s): State<PinotState>) -> Json<Vec<String>> {
    let store = s.lock();
    let names: std::collections::BTreeSet<String> = store
        .tables
        .keys()
        .map(|n| raw_name(n).to_owned())
        .collect();
    Json(names.into_iter().collect())
}

async fn get_table_configs(State(s): State<PinotState>, Path(name): Path<String>) -> Res {
    let store = s.lock();
    let Some(schema) = store.schemas.get(&name) else {
        // NotFoundException swallowed by a catch-all: 500, apis.md §1.4.
        return Err(fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Schema does not exist for table {name} Use POST to create it first."),
        ));
    };
    let mut out = Obj::new();
    out.insert("tableName".into(), name.clone().into());
    out.insert("schema".into(), schema.clone().into());
    for (key, kind) in [("offline", OFFLINE), ("realtime", REALTIME)] {
        if let Some(cfg) = store.tables.get(&with_type(&name, kind)) {
            out.insert(key.into(), cfg.clone().into());
        }
    }
    ok(out.into())
}
