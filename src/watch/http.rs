//! The two listeners of `ofctl watch`, as the original service had them: the platform API on
//! 8095 (`/v1/*` only, authenticated, bounded) and the management port on 8096 (health,
//! readiness, metrics: no authentication and nothing that writes).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;

use super::auth::{self, Principal};
use super::platform_api;
use super::Shared;

/// Longest an API request may take before it is answered 408 (a write that already started
/// is not cut short by this: it runs to its end on its own task).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// API requests served at once; more wait their turn.
const MAX_IN_FLIGHT: usize = 32;

/// `/v1/*`: the platform endpoints and drift, behind [`auth::authorize`].
pub fn api_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/drift", get(drift))
        .route("/v1/tools", get(platform_api::list_tools))
        .route(
            "/v1/tools/{id}",
            get(platform_api::get_tool).post(platform_api::save_tool),
        )
        .route(
            "/v1/cluster-registrations",
            post(platform_api::register_cluster),
        )
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            auth::authorize,
        ))
        .layer(DefaultBodyLimit::max(auth::MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            MAX_IN_FLIGHT,
        ))
        .with_state(shared)
}

/// The management port: what probes and Prometheus read.
pub fn management_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/management/v1/health", get(health))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// The path the platform's register jobs poll before they POST (Spring's actuator shape).
async fn health(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.ready().await {
        return (StatusCode::OK, Json(json!({"status": "UP"})));
    }
    let tenants: serde_json::Map<String, serde_json::Value> = shared
        .tenants
        .read()
        .await
        .iter()
        .map(|(id, t)| {
            let state = if t.passes > 0 { "UP" } else { "STARTING" };
            (id.clone(), json!(state))
        })
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "DOWN", "tenants": tenants})),
    )
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.ready().await {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "first reconcile pass not finished\n",
        )
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::redact::redact(&shared.metrics.render()).into_owned(),
    )
}

/// Drift of the tenants the caller may read.
async fn drift(
    State(shared): State<Arc<Shared>>,
    Extension(principal): Extension<Principal>,
) -> impl IntoResponse {
    let tenants = shared.tenants.read().await;
    let visible: std::collections::BTreeMap<_, _> = tenants
        .iter()
        .filter(|(id, _)| principal.readable.contains(*id))
        .collect();
    // Apply errors are kept as the provider reported them, and a server may echo a secret in
    // one (Kafka Connect prints a refused config whole).
    let mut body = serde_json::to_value(&visible).unwrap_or_default();
    crate::redact::redact_value(&mut body);
    Json(body)
}

/// Serves `router` until shutdown; the peer address reaches the audit log.
pub async fn serve(listener: tokio::net::TcpListener, router: Router, shared: Arc<Shared>) {
    let token = shared.shutdown.clone();
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service)
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await
    {
        tracing::error!("HTTP listener stopped: {e}");
    }
}
