//! The HTTP listener (SPEC §7–§8): `/healthz` (the process is up) and `/readyz` (catalog loaded
//! and the store answers). The Stripe webhook and `/metrics` mount here as well.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::service::Service;

pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(service)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(service): State<Arc<Service>>) -> (StatusCode, &'static str) {
    if service.ready().await {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
    }
}
