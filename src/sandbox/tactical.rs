//! Tactical RMM scripts API emulator (apis.md §3): TRMM 1.5.1 on Django 4.2 / DRF 3.15.
//!
//! Field handling mirrors the DRF `ModelSerializer` TRMM builds from the `Script` model: partial
//! validation, CharField whitespace trimming (except `script_body`, which TRMM marks
//! `trim_whitespace: False`), DRF's coercions and its error messages.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::query_pairs;

const SHELLS: &[&str] = &["powershell", "cmd", "python", "shell", "nushell", "deno"];
const BUILTIN: &str = "builtin";
const USER_DEFINED: &str = "userdefined";

#[derive(Clone)]
struct Script {
    id: u64,
    name: String,
    description: Option<String>,
    shell: String,
    script_type: &'static str,
    /// `ArrayField`s: a JSON array, or null (the columns are nullable).
    args: Value,
    env_vars: Value,
    supported_platforms: Value,
    category: Option<String>,
    favorite: bool,
    script_body: String,
    default_timeout: i64,
    syntax: Option<String>,
    filename: Option<String>,
    hidden: bool,
    run_as_user: bool,
    /// Only community scripts have one; stored for fidelity but never serialized (apis.md §3).
    #[allow(dead_code)]
    guid: Option<&'static str>,
}

impl Script {
    /// Model defaults (apis.md §3 "Script object").
    fn new(id: u64) -> Self {
        Self {
            id,
            name: String::new(),
            description: Some(String::new()),
            shell: "powershell".into(),
            script_type: USER_DEFINED,
            args: json!([]),
            env_vars: json!([]),
            supported_platforms: json!([]),
            category: None,
            favorite: false,
            script_body: String::new(),
            default_timeout: 90,
            syntax: None,
            filename: None,
            hidden: false,
            run_as_user: false,
            guid: None,
        }
    }

    /// `ScriptTableSerializer`: no `script_body`.
    fn table_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "script_type": self.script_type,
            "shell": self.shell,
            "args": self.args,
            "category": self.category,
            "favorite": self.favorite,
            "default_timeout": self.default_timeout,
            "syntax": self.syntax,
            "filename": self.filename,
            "hidden": self.hidden,
            "supported_platforms": self.supported_platforms,
            "run_as_user": self.run_as_user,
            "env_vars": self.env_vars,
        })
    }

    /// `ScriptSerializer`: no `script_type`, no `guid`.
    fn detail_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "shell": self.shell,
            "args": self.args,
            "category": self.category,
            "favorite": self.favorite,
            "script_body": self.script_body,
            // Approximation: upstream uses HMAC-SHA256 keyed with Django's SECRET_KEY over the
            // snippet-expanded body; a plain SHA-256 keeps the "changes with the body" property.
            "script_hash": hex::encode(Sha256::digest(self.script_body.as_bytes())),
            "default_timeout": self.default_timeout,
            "syntax": self.syntax,
            "filename": self.filename,
            "hidden": self.hidden,
            "supported_platforms": self.supported_platforms,
            "run_as_user": self.run_as_user,
            "env_vars": self.env_vars,
        })
    }
}

struct Store {
    next_id: u64,
    scripts: BTreeMap<u64, Script>,
}

struct Inner {
    api_key: String,
    store: Mutex<Store>,
}

/// Script store plus the single accepted API key; seeded with three community scripts.
#[derive(Clone)]
pub struct TacticalState(Arc<Inner>);

impl TacticalState {
    pub fn new(api_key: impl Into<String>) -> Self {
        // (guid, filename, name, description, shell, supported_platforms)
        type Seed = (
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            &'static [&'static str],
        );
        let seeds: [Seed; 3] = [
            (
                "3b8e2f52-1c36-4d5e-9a7b-2f1e0c9d8a41",
                "Win_Windows_Update_Reset.ps1",
                "Windows Update - Reset Components",
                "Stops update services, clears SoftwareDistribution and restarts them",
                "powershell",
                &["windows"],
            ),
            (
                "7c1d9e44-8b2a-4f67-b3c5-5e6a7d8f9b02",
                "Win_Disk_Cleanup_Temp.bat",
                "Disk Cleanup - Remove Temp Files",
                "Deletes files from the system and user temp folders",
                "cmd",
                &["windows"],
            ),
            (
                "e2a4c6f8-0b1d-4e3f-8a5c-7d9e1f2a3b63",
                "Linux_Check_Pending_Reboot.sh",
                "Check Pending Reboot",
                "Exits 1 when /var/run/reboot-required exists",
                "shell",
                &["linux"],
            ),
        ];
        let scripts = seeds
            .iter()
            .zip(1..)
            .map(
                |(&(guid, filename, name, description, shell, platforms), id)| {
                    let script = Script {
                        name: name.into(),
                        description: Some(description.into()),
                        shell: shell.into(),
                        script_type: BUILTIN,
                        category: Some("Community".into()),
                        script_body: format!("# {name}\n# sandbox community script\n"),
                        filename: Some(filename.into()),
                        supported_platforms: json!(platforms),
                        syntax: Some(String::new()),
                        guid: Some(guid),
                        ..Script::new(id)
                    };
                    (id, script)
                },
            )
            .collect();
        Self(Arc::new(Inner {
            api_key: api_key.into(),
            store: Mutex::new(Store {
                next_id: 4,
                scripts,
            }),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.0.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// DRF authentication: knox first (it owns `WWW-Authenticate: Token`), then `X-API-KEY`.
    fn authenticate(&self, headers: &HeaderMap) -> Result<(), Reject> {
        let header_str = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let knox = header_str(header::AUTHORIZATION.as_str())
            .and_then(|a| a.split_whitespace().next())
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("token"));
        match header_str("x-api-key").filter(|k| !k.is_empty()) {
            // The sandbox issues no knox tokens, so any presented one is unknown.
            _ if knox => Err(Reject::Unauthorized("Invalid token.")),
            Some(key) if key == self.0.api_key => Ok(()),
            Some(_) => Err(Reject::Unauthorized("Invalid token.")),
            None => Err(Reject::Unauthorized(
                "Authentication credentials were not provided.",
            )),
        }
    }
}

/// Every way a request is turned away, rendered the way Django/DRF would.
enum Reject {
    /// Django's stock 404 page (DEBUG=False): unmatched URLs never reach DRF.
    NotFoundPage,
    /// DRF authentication failure; knox supplies the `WWW-Authenticate` challenge.
    Unauthorized(&'static str),
    /// A DRF JSON response.
    Drf(StatusCode, Value),
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        match self {
            Reject::NotFoundPage => (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                "<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n</body>\n</html>\n",
            )
                .into_response(),
            Reject::Unauthorized(detail) => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Token")],
                Json(json!({ "detail": detail })),
            )
                .into_response(),
            Reject::Drf(status, body) => (status, Json(body)).into_response(),
        }
    }
}

fn no_script() -> Reject {
    Reject::Drf(
        StatusCode::NOT_FOUND,
        json!({"detail": "No Script matches the given query."}),
    )
}

type Res = Result<Response, Reject>;

pub fn router(state: TacticalState) -> Router {
    Router::new()
        .route(
            "/scripts/",
            get(list_scripts).post(add_script).fallback(not_allowed),
        )
        .route(
            "/scripts/{id}/",
            get(get_script)
                .put(update_script)
                .delete(delete_script)
                .fallback(not_allowed_on_script),
        )
        .route("/scripts", any(missing_slash))
        .route("/scripts/{id}", any(missing_slash))
        .fallback(|| async { Reject::NotFoundPage })
        .with_state(state)
}

/// `APPEND_SLASH`: GET/HEAD are redirected; other methods cannot be, and 404 like Django.
async fn missing_slash(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let id_ok = path
        .strip_prefix("/scripts/")
        .is_none_or(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    if !id_ok || !(method == Method::GET || method == Method::HEAD) {
        return Reject::NotFoundPage.into_response();
    }
    let location = match uri.query() {
        Some(q) => format!("{path}/?{q}"),
        None => format!("{path}/"),
    };
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, location)],
    )
        .into_response()
}

/// `<int:pk>` only matches digits; anything else is an unmatched URL. A digit string too large
/// for the id column simply finds nothing.
fn script_id(raw: &str) -> Result<Option<u64>, Reject> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reject::NotFoundPage);
    }
    Ok(raw.parse().ok())
}

fn method_not_allowed(method: &Method) -> Reject {
    Reject::Drf(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({ "detail": format!("Method \"{method}\" not allowed.") }),
    )
}

/// DRF authenticates before dispatching, so a wrong method still needs credentials.
async fn not_allowed(State(s): State<TacticalState>, method: Method, headers: HeaderMap) -> Res {
    s.authenticate(&headers)?;
    Err(method_not_allowed(&method))
}

async fn not_allowed_on_script(
    State(s): State<TacticalState>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Res {
    script_id(&id)?;
    s.authenticate(&headers)?;
    Err(method_not_allowed(&method))
}

async fn list_scripts(
    State(s): State<TacticalState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Res {
    s.authenticate(&headers)?;
    let pairs = query_pairs(query.as_deref());
    // `QueryDict.get` returns the last value of a repeated parameter.
    let param = |key: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    // Literal string tests from `GetAddScripts.get` (apis.md §3 [EMU]): only "false" hides
    // community scripts and only "true" shows hidden ones.
    let community = param("showCommunityScripts").is_none_or(|v| !v.is_empty() && v != "false");
    let hidden = param("showHiddenScripts") == Some("true");
    let store = s.lock();
    let mut scripts: Vec<&Script> = store
        .scripts
        .values()
        .filter(|sc| community || sc.script_type == USER_DEFINED)
        .filter(|sc| hidden || !sc.hidden)
        .collect();
    // `order_by("category")` on Postgres: NULLs last; ties keep primary-key order here.
    scripts.sort_by(|a, b| match (&a.category, &b.category) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let body: Vec<Value> = scripts.iter().map(|sc| sc.table_json()).collect();
    Ok(Json(body).into_response())
}

/// DRF's `JSONParser` plus the serializer's "expected a dictionary" check.
fn parse_body(body: &Bytes) -> Result<Map<String, Value>, Reject> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Reject::Drf(
            StatusCode::BAD_REQUEST,
            json!({"non_field_errors": [format!(
                "Invalid data. Expected a dictionary, but got {}.",
                py_type(&other)
            )]}),
        )),
        Err(e) => Err(Reject::Drf(
            StatusCode::BAD_REQUEST,
            json!({ "detail": format!("JSON parse error - {e}") }),
        )),
    }
}

async fn add_script(State(s): State<TacticalState>, headers: HeaderMap, body: Bytes) -> Res {
    s.authenticate(&headers)?;
    let data = parse_body(&body)?;
    let mut store = s.lock();
    let mut script = Script::new(store.next_id);
    apply(&mut script, &data)?;
    store.next_id += 1;
    let message = format!("{} was added!", script.name);
    store.scripts.insert(script.id, script);
    // 200 with a bare JSON string; the id is not returned (apis.md §3).
    Ok(Json(message).into_response())
}

async fn get_script(
    State(s): State<TacticalState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Res {
    let id = script_id(&id)?;
    s.authenticate(&headers)?;
    let store = s.lock();
    let script = id
        .and_then(|id| store.scripts.get(&id))
        .ok_or_else(no_script)?;
    Ok(Json(script.detail_json()).into_response())
}

async fn update_script(
    State(s): State<TacticalState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Res {
    let id = script_id(&id)?;
    s.authenticate(&headers)?;
    let mut store = s.lock();
    let script = id
        .and_then(|id| store.scripts.get_mut(&id))
        .ok_or_else(no_script)?;
    let mut data = parse_body(&body)?;
    if script.script_type == BUILTIN {
        // Community scripts only take `favorite`, else `hidden`; everything else is dropped.
        let allowed = ["favorite", "hidden"]
            .into_iter()
            .find_map(|k| data.get(k).map(|v| (k, v.clone())));
        let Some((key, value)) = allowed else {
            return Err(Reject::Drf(
                StatusCode::BAD_REQUEST,
                json!("Community scripts cannot be edited."),
            ));
        };
        data = Map::from_iter([(key.to_owned(), value)]);
    }
    let mut updated = script.clone();
    apply(&mut updated, &data)?;
    *script = updated;
    Ok(Json(format!("{} was edited!", script.name)).into_response())
}

async fn delete_script(
    State(s): State<TacticalState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Res {
    let id = script_id(&id)?;
    s.authenticate(&headers)?;
    let mut store = s.lock();
    let Some(script) = id.and_then(|id| store.scripts.remove(&id)) else {
        return Err(no_script());
    };
    if script.script_type == BUILTIN {
        store.scripts.insert(script.id, script);
        return Err(Reject::Drf(
            StatusCode::BAD_REQUEST,
            json!("Community scripts cannot be deleted"),
        ));
    }
    Ok(Json(format!("{} was deleted!", script.name)).into_response())
}

// ---------------------------------------------------------------------------------------------
// DRF field semantics

type FieldResult<T> = Result<T, Value>;

fn field_error(message: impl Into<String>) -> Value {
    json!([message.into()])
}

fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// `str(value)` the way Python prints JSON-decoded scalars.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

struct CharRules {
    null: bool,
    blank: bool,
    max: Option<usize>,
    trim: bool,
}

/// Nullable, blankable, trimmed: `TextField(null=True, blank=True)` and friends.
const OPTIONAL_TEXT: CharRules = CharRules {
    null: true,
    blank: true,
    max: None,
    trim: true,
};

fn char_field(v: &Value, rules: &CharRules) -> FieldResult<Option<String>> {
    let text = match v {
        Value::Null if rules.null => return Ok(None),
        Value::Null => return Err(field_error("This field may not be null.")),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(field_error("Not a valid string.")),
    };
    let text = if rules.trim {
        text.trim().to_owned()
    } else {
        text
    };
    if text.is_empty() && !rules.blank {
        return Err(field_error("This field may not be blank."));
    }
    if let Some(max) = rules.max.filter(|m| text.chars().count() > *m) {
        return Err(field_error(format!(
            "Ensure this field has no more than {max} characters."
        )));
    }
    Ok(Some(text))
}

fn choice_field(v: &Value) -> FieldResult<String> {
    if v.is_null() {
        return Err(field_error("This field may not be null."));
    }
    let text = py_str(v);
    if SHELLS.contains(&text.as_str()) {
        Ok(text)
    } else {
        Err(field_error(format!("\"{text}\" is not a valid choice.")))
    }
}

fn list_field(v: &Value, child: &CharRules) -> FieldResult<Value> {
    let items = match v {
        Value::Null => return Ok(Value::Null),
        Value::Array(items) => items,
        other => {
            return Err(field_error(format!(
                "Expected a list of items but got type \"{}\".",
                py_type(other)
            )))
        }
    };
    let mut out = Vec::with_capacity(items.len());
    let mut errors = Map::new();
    for (i, item) in items.iter().enumerate() {
        match char_field(item, child) {
            Ok(s) => out.push(s.map_or(Value::Null, Value::String)),
            Err(e) => {
                errors.insert(i.to_string(), e);
            }
        }
    }
    if errors.is_empty() {
        Ok(out.into())
    } else {
        Err(errors.into())
    }
}

/// `PositiveIntegerField` → `IntegerField(min_value=0, max_value=2147483647)`.
fn int_field(v: &Value) -> FieldResult<i64> {
    let invalid = || field_error("A valid integer is required.");
    let n = match v {
        Value::Null => return Err(field_error("This field may not be null.")),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i,
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e18 => f as i64,
            _ => return Err(invalid()),
        },
        // DRF strips a trailing `.0*` before `int()`.
        Value::String(s) => {
            let s = s.trim();
            let s = s.find('.').map_or(s, |dot| {
                if s[dot + 1..].bytes().all(|b| b == b'0') {
                    &s[..dot]
                } else {
                    s
                }
            });
            s.parse().map_err(|_| invalid())?
        }
        _ => return Err(invalid()),
    };
    if n < 0 {
        return Err(field_error(
            "Ensure this value is greater than or equal to 0.",
        ));
    }
    if n > 2_147_483_647 {
        return Err(field_error(
            "Ensure this value is less than or equal to 2147483647.",
        ));
    }
    Ok(n)
}

/// `BooleanField` with DRF's TRUE_VALUES / FALSE_VALUES.
fn bool_field(v: &Value) -> FieldResult<bool> {
    match v {
        Value::Null => Err(field_error("This field may not be null.")),
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_f64() == Some(1.0) => Ok(true),
        Value::Number(n) if n.as_f64() == Some(0.0) => Ok(false),
        Value::String(s) => match s.as_str() {
            "t" | "T" | "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on"
            | "On" | "ON" | "1" => Ok(true),
            "f" | "F" | "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off"
            | "Off" | "OFF" | "0" => Ok(false),
            _ => Err(field_error("Must be a valid boolean.")),
        },
        _ => Err(field_error("Must be a valid boolean.")),
    }
}

/// Partial `ScriptSerializer` validation + save. Read-only (`id`, `script_hash`), non-serializer
/// (`script_type`, `guid`) and unknown keys are ignored; errors come back keyed in field order.
fn apply(script: &mut Script, data: &Map<String, Value>) -> Result<(), Reject> {
    let mut errors = Map::new();
    let mut record = |field: &str, result: FieldResult<()>| {
        if let Err(e) = result {
            errors.insert(field.to_owned(), e);
        }
    };
    let text = |max| CharRules {
        max,
        ..OPTIONAL_TEXT
    };
    for (field, v) in data
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "id" | "script_hash"))
    {
        let result = match field.as_str() {
            "name" => char_field(
                v,
                &CharRules {
                    null: false,
                    blank: false,
                    max: Some(255),
                    trim: true,
                },
            )
            .map(|n| script.name = n.unwrap_or_default()),
            "description" => char_field(v, &OPTIONAL_TEXT).map(|d| script.description = d),
            "shell" => choice_field(v).map(|sh| script.shell = sh),
            "category" => char_field(v, &text(Some(100))).map(|c| script.category = c),
            "script_body" => char_field(
                v,
                &CharRules {
                    null: false,
                    blank: true,
                    max: None,
                    trim: false,
                },
            )
            .map(|b| script.script_body = b.unwrap_or_default()),
            "syntax" => char_field(v, &OPTIONAL_TEXT).map(|sx| script.syntax = sx),
            "filename" => char_field(v, &text(Some(255))).map(|f| script.filename = f),
            "args" => list_field(v, &OPTIONAL_TEXT).map(|a| script.args = a),
            "env_vars" => list_field(v, &OPTIONAL_TEXT).map(|e| script.env_vars = e),
            "supported_platforms" => {
                let child = CharRules {
                    null: false,
                    blank: false,
                    max: Some(20),
                    trim: true,
                };
                list_field(v, &child).map(|p| script.supported_platforms = p)
            }
            "default_timeout" => int_field(v).map(|t| script.default_timeout = t),
            "favorite" => bool_field(v).map(|b| script.favorite = b),
            "hidden" => bool_field(v).map(|b| script.hidden = b),
            "run_as_user" => bool_field(v).map(|b| script.run_as_user = b),
            _ => Ok(()),
        };
        record(field, result);
    }
    if errors.is_empty() {
        return Ok(());
    }
    // DRF reports errors in serializer field order.
    const ORDER: &[&str] = &[
        "name",
        "description",
        "shell",
        "args",
        "category",
        "favorite",
        "script_body",
        "default_timeout",
        "syntax",
        "filename",
        "hidden",
        "supported_platforms",
        "run_as_user",
        "env_vars",
    ];
    let ordered: Map<String, Value> = ORDER
        .iter()
        .filter_map(|f| errors.get(*f).map(|e| ((*f).to_owned(), e.clone())))
        .collect();
    Err(Reject::Drf(StatusCode::BAD_REQUEST, ordered.into()))
}
