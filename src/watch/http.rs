//! The HTTP API of `ofctl watch` (the original service's port, 8095).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::platform_api;
use super::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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
        .with_state(shared)
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

async fn drift(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    // Apply errors are kept as the provider reported them, and a server may echo a secret in
    // one (Kafka Connect prints a refused config whole).
    let mut tenants = serde_json::to_value(&*shared.tenants.read().await).unwrap_or_default();
    crate::redact::redact_value(&mut tenants);
    Json(tenants)
}

/// Serves until shutdown.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let token = shared.shutdown.clone();
    let app = router(shared);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await
    {
        tracing::error!("HTTP API stopped: {e}");
    }
}
