//! The endpoints the platform's other services call on the original service (openframe.md §6,
//! §8): integrated tools and the cluster release version. Writes go through the same engine
//! as a reconcile pass (read live, plan, apply the pending changes in order, report each one),
//! so a failed connector is an error status here, not a log line behind a 200.
//!
//! Shared ownership: the manifest stays the source of truth for what it declares. A POST whose
//! content equals the declared resource (as the engine normalizes both) is accepted and changes
//! nothing the manifest would not; a POST that would change a manifest-owned value is refused
//! with 409 naming the file, line and fields, since the next reconcile pass would undo it.
//! Annotating that resource `ofctl.openframe.io/drift-policy: ignore` (or `report`) hands it to
//! this API. Tools the manifest does not declare belong to this API entirely.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{apply_changes, policy_of, DriftPolicy, Shared, TenantHandle, TenantView};
use crate::apply::Status;
use crate::engine::EngineError;
use crate::lock::Acquired;
use crate::manifest::Manifest;
use crate::plan::{Action, PlanOptions};
use crate::providers::mongo;
use crate::resource::{Address, Resource, Span};

/// How long a write waits for the tenant's reconcile lock (a pass in progress here or on
/// another replica) before answering 503. The register jobs retry (curl --retry 5).
const LOCK_WAIT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
pub struct TenantQuery {
    tenant: Option<String>,
}

/// What happened to one change of an API write.
#[derive(Serialize)]
struct ChangeResult {
    address: String,
    action: &'static str,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// An error answer in the platform's envelope, `{"status":"error","message":...}`, with the
/// changes made before it (if any) so a caller knows what is already done.
pub struct ApiError {
    status: StatusCode,
    message: String,
    changes: Vec<ChangeResult>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            changes: Vec::new(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"status": "error", "message": self.message});
        if !self.changes.is_empty() {
            body["changes"] = serde_json::to_value(&self.changes).unwrap_or_default();
        }
        success_or_error(self.status, body)
    }
}

/// Every answer leaves through here: secrets masked, whatever a server echoed.
fn success_or_error(status: StatusCode, mut body: Value) -> Response {
    crate::redact::redact_value(&mut body);
    (status, Json(body)).into_response()
}

async fn tenant(shared: &Shared, query: &TenantQuery) -> Result<Arc<TenantHandle>, ApiError> {
    let handles = shared.handles.read().await;
    match &query.tenant {
        Some(id) => handles.get(id).cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown tenant `{id}`; this server reconciles: {}",
                    handles.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        }),
        None if handles.len() == 1 => Ok(handles.values().next().cloned().expect("one handle")),
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "this server reconciles several tenants ({}); choose one with ?tenant=ID",
                handles.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

fn engine_error(e: EngineError) -> ApiError {
    let status = match &e {
        EngineError::Desired { .. } => StatusCode::BAD_REQUEST,
        EngineError::Read { .. } => StatusCode::SERVICE_UNAVAILABLE,
        // The API plans without --target: an unknown target cannot come from a request.
        EngineError::Config(_) | EngineError::StalePlan(_) | EngineError::Target(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    ApiError::new(status, e.to_string())
}

/// The tool as the platform's API shows it: the document with `id`, secrets masked.
fn tool_json(id: &str, spec: &Value) -> Value {
    let mut spec = spec.clone();
    if let Some(info) = crate::registry::kind_info(mongo::TOOL) {
        info.mask_sensitive(&mut spec);
    }
    let mut tool = serde_json::Map::new();
    tool.insert("id".into(), Value::String(id.to_string()));
    if let Value::Object(fields) = spec {
        tool.extend(fields);
    }
    Value::Object(tool)
}

async fn live_tools(view: &TenantView) -> Result<Vec<(String, Value)>, ApiError> {
    let mut engine = view.engine.clone();
    Ok(engine
        .read_all(&[mongo::TOOL.to_string()])
        .await
        .map_err(engine_error)?
        .into_iter()
        .map(|(address, spec)| (address.name, spec))
        .collect())
}

pub async fn list_tools(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<TenantQuery>,
) -> Result<Response, ApiError> {
    let view = tenant(&shared, &query).await?.view();
    let tools: Vec<Value> = live_tools(&view)
        .await?
        .iter()
        .map(|(id, spec)| tool_json(id, spec))
        .collect();
    Ok(success_or_error(
        StatusCode::OK,
        json!({"status": "success", "tools": tools}),
    ))
}

/// By `_id`; a tool whose `type` is `id` answers too, since the original looked tools up by
/// type (openframe.md §6) and callers may rely on it.
pub async fn get_tool(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<TenantQuery>,
) -> Result<Response, ApiError> {
    let view = tenant(&shared, &query).await?.view();
    let tools = live_tools(&view).await?;
    let found = tools.iter().find(|(name, _)| *name == id).or_else(|| {
        tools
            .iter()
            .find(|(_, spec)| spec.get("type").and_then(Value::as_str) == Some(id.as_str()))
    });
    match found {
        Some((name, spec)) => Ok(success_or_error(
            StatusCode::OK,
            json!({"status": "success", "tool": tool_json(name, spec)}),
        )),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "Tool not found")),
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// Checks a spec like a manifest document's (JSON Schema, then the kind's own rules); the
/// error names each field, as `prefix` + its path.
fn validate(kind: &str, name: &str, spec: &Value, prefix: &str) -> Result<(), ApiError> {
    let mut problems = crate::manifest::schema::validate_spec(kind, spec);
    if problems.is_empty() {
        problems = crate::registry::check_spec(kind, name, spec);
    }
    if problems.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = problems
        .iter()
        .map(|(ptr, msg)| {
            let field = crate::path::display(&format!("{prefix}{ptr}"));
            if field.is_empty() {
                msg.clone()
            } else {
                format!("{field}: {msg}")
            }
        })
        .collect();
    Err(ApiError::new(StatusCode::BAD_REQUEST, lines.join("; ")))
}

/// A resource built from a request body, validated. Its values are not registered as secrets
/// (a caller could otherwise blank out any text in logs and metrics): secret keys are masked
/// by name, and inline forms (`password=...`) wherever they are printed.
fn resource_from_request(kind: &str, name: &str, spec: Value) -> Result<Resource, ApiError> {
    validate(kind, name, &spec, "")?;
    Ok(Resource {
        address: Address::new(kind, name),
        labels: Default::default(),
        annotations: Default::default(),
        spec,
        depends_on: Vec::new(),
        source: Span {
            file: "(HTTP API request)".into(),
            line: 0,
        },
    })
}

/// Shared ownership with the manifest. A request for a resource the manifest declares (and
/// heals) is compared with the declared resource after the normalization the engine applies to
/// both (the tool's `id` and forced `enabled: true` included): equal, it goes on and is a no-op
/// wherever live state already matches; different, it is refused with 409 naming the file, the
/// line and each differing field (never a value), since the next reconcile pass would undo it.
fn check_manifest_ownership(view: &TenantView, resources: &[Resource]) -> Result<(), ApiError> {
    let Some(manifest) = view.manifest.as_deref().map(super::PackedManifest::unpack) else {
        return Ok(());
    };
    let mut engine = view.engine.clone();
    let mut conflicts = Vec::new();
    for r in resources {
        let Some(declared) = manifest.get(&r.address) else {
            continue;
        };
        if policy_of(&r.address, &manifest) != DriftPolicy::Heal {
            continue;
        }
        let fields = differing_fields(
            &r.address.kind,
            &engine.normalize(r).map_err(engine_error)?,
            &engine.normalize(declared).map_err(engine_error)?,
        );
        if !fields.is_empty() {
            conflicts.push(format!(
                "{} is declared at {} and this request changes {}",
                r.address,
                declared.source,
                fields.join(", ")
            ));
        }
    }
    if conflicts.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "{}; the manifest owns these values and the next reconcile pass would undo this request. Change the manifest (or the environment variables it reads) to match, or annotate the resource `ofctl.openframe.io/drift-policy: ignore` to hand it to this API",
            conflicts.join("; ")
        ),
    ))
}

/// The readable paths of the fields where two normalized specs of `kind` differ (either way).
fn differing_fields(kind: &str, requested: &Value, declared: &Value) -> Vec<String> {
    let Some(info) = crate::registry::kind_info(kind) else {
        return Vec::new();
    };
    let mut fields: Vec<String> = crate::plan::diff::diff(requested, declared, info)
        .into_iter()
        .chain(crate::plan::diff::diff(declared, requested, info))
        .map(|d| d.path)
        .collect();
    fields.sort();
    fields.dedup();
    fields
}

/// Plans `resources` against live state and applies what differs, under the tenant's locks.
async fn apply_resources(
    shared: &Arc<Shared>,
    handle: &Arc<TenantHandle>,
    resources: Vec<Resource>,
) -> Result<Vec<ChangeResult>, ApiError> {
    let view = handle.view();
    check_manifest_ownership(&view, &resources)?;
    // Detached from the request: a client that disconnects drops the handler's future, not
    // this task, so the write runs to its end and the lock is released (and renewed meanwhile).
    let (shared, handle) = (Arc::clone(shared), Arc::clone(handle));
    let work = tokio::spawn(async move {
        let _in_process = handle.gate.lock().await;
        let at_most = view.config.watch().lock_at_most_for;
        let deadline = Instant::now() + LOCK_WAIT;
        let acquired = loop {
            match view
                .locks
                .acquire(super::RECONCILE_LOCK, at_most, Duration::ZERO)
                .await
            {
                Acquired::Busy if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Acquired::Busy => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "tenant `{}` is being reconciled by another replica; retry shortly",
                            handle.id
                        ),
                    ))
                }
                Acquired::Unavailable(why) => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                        "the lock service (Redis) is not reachable, so nothing was changed: {why}"
                    ),
                    ))
                }
                held => break held,
            }
        };
        let result = plan_and_apply(&shared, &view, &handle, resources).await;
        view.locks.release(acquired, "an API write").await;
        result
    });
    work.await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the write stopped abnormally: {e}"),
        )
    })?
}

async fn plan_and_apply(
    shared: &Shared,
    view: &TenantView,
    handle: &TenantHandle,
    resources: Vec<Resource>,
) -> Result<Vec<ChangeResult>, ApiError> {
    let mut engine = view.engine.clone();
    let manifest = Manifest {
        dir: view.manifest_dir.clone(),
        resources,
    };
    let obs = engine
        .observe(manifest, false)
        .await
        .map_err(engine_error)?;
    let plan = engine
        .plan(&obs, &PlanOptions::default(), None)
        .map_err(engine_error)?;
    let refused: Vec<String> = plan
        .pending()
        .filter_map(|c| Some(format!("{}: {}", c.address, c.blocked.as_ref()?)))
        .collect();
    if !refused.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("refused, nothing was changed: {}", refused.join("; ")),
        ));
    }
    let pending: Vec<_> = plan.pending().cloned().collect();
    let mut results: Vec<ChangeResult> = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Noop)
        .map(|c| ChangeResult {
            address: c.address.to_string(),
            action: c.action.as_str(),
            result: "unchanged",
            error: None,
        })
        .collect();
    if pending.is_empty() {
        return Ok(results);
    }
    let report = apply_changes(
        &mut engine,
        &pending,
        &obs,
        &handle.id,
        shared,
        &shared.shutdown,
    )
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let mut failures = Vec::new();
    for o in &report.outcomes {
        let (result, error) = match &o.status {
            Status::Done => ("done", None),
            Status::Failed(e) => ("failed", Some(e.clone())),
            Status::NotAttempted(why) => ("not attempted", Some(why.clone())),
        };
        if let Some(e) = &error {
            failures.push(format!("{} {} {result}: {e}", o.address, o.action.as_str()));
        }
        results.push(ChangeResult {
            address: o.address.to_string(),
            action: o.action.as_str(),
            result,
            error,
        });
    }
    if failures.is_empty() {
        return Ok(results);
    }
    Err(ApiError {
        status: StatusCode::BAD_GATEWAY,
        message: format!(
            "{} of {} changes did not complete (the others were made; retrying converges): {}",
            failures.len(),
            report.outcomes.len(),
            failures.join("; ")
        ),
        changes: results,
    })
}

/// `POST /v1/tools/{id}` with `{"tool": {...}}`: the tool document and each of its connectors.
/// As the original, `id` comes from the path and `enabled` is forced true.
pub async fn save_tool(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<TenantQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let handle = tenant(&shared, &query).await?;
    let body = parse_body(&body)?;
    let Some(Value::Object(mut tool)) = body.get("tool").cloned() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body must be {\"tool\": {...}} (an IntegratedTool object under `tool`)",
        ));
    };
    if body.as_object().is_some_and(|o| o.len() > 1) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body must hold only `tool`",
        ));
    }
    tool.insert("id".into(), Value::String(id.clone()));
    tool.insert("enabled".into(), Value::Bool(true));
    let resource = resource_from_request(mongo::TOOL, &id, json!({ "tool": tool }))?;
    let mut resources = crate::registry::expand(&resource).map_err(|(ptr, msg)| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{}: {msg}", crate::path::display(&ptr)),
        )
    })?;
    for (i, c) in resources.iter().enumerate() {
        validate(
            &c.address.kind,
            &c.address.name,
            &c.spec,
            &format!("/tool/debeziumConnectors/{i}"),
        )?;
    }
    let api = handle
        .view()
        .config
        .api()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    super::auth::check_connector_classes(
        &api,
        resources.iter().map(|c| (c.address.name.as_str(), &c.spec)),
    )
    .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    resources.insert(0, resource);
    let changes = apply_resources(&shared, &handle, resources).await?;
    let view = handle.view();
    let saved = live_tools(&view)
        .await?
        .into_iter()
        .find(|(name, _)| *name == id)
        .map(|(name, spec)| tool_json(&name, &spec));
    Ok(success_or_error(
        StatusCode::OK,
        json!({"status": "success", "tool": saved, "changes": changes}),
    ))
}

/// `POST /v1/cluster-registrations` with `{"imageTagVersion": "x.y.z"}`: the ReleaseVersion,
/// which moves the client configuration and every release agent and publishes each once.
pub async fn register_cluster(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<TenantQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let handle = tenant(&shared, &query).await?;
    let body = parse_body(&body)?;
    let version = match body.get("imageTagVersion") {
        Some(Value::String(v)) => {
            super::auth::check_release_tag(v)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
            v.clone()
        }
        found => {
            let message = match found {
                Some(other) => {
                    format!("imageTagVersion must be a version string without spaces, not {other}")
                }
                None => "the body must be {\"imageTagVersion\": \"x.y.z\"}".to_string(),
            };
            return Err(ApiError::new(StatusCode::BAD_REQUEST, message));
        }
    };
    let resource = resource_from_request(
        mongo::RELEASE,
        mongo::RELEASE_NAME,
        json!({ "version": version }),
    )?;
    let changes = apply_resources(&shared, &handle, vec![resource]).await?;
    Ok(success_or_error(
        StatusCode::OK,
        json!({"status": "success", "imageTagVersion": version, "changes": changes}),
    ))
}
