//! The HTTP listener (SPEC §7–§8): `POST /webhooks/stripe`, `/healthz` (the process is up),
//! `/readyz` (catalog loaded and the store answers) and `/metrics` (Prometheus).
//!
//! Webhook statuses: 200 once the event is durably recorded (applied, duplicate, stale,
//! pending a tenant, or failed to map — those are stored for replay); 400 for a missing or bad
//! signature, a timestamp outside tolerance, a body that is not an event or the wrong mode
//! (nothing stored); 413 over the body limit; 503 when the store cannot commit, so Stripe retries.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::clock::unix_now;
use crate::service::{Service, ServiceError};
use crate::{stripe, telemetry, trace};

/// Webhook settings: endpoint secrets (several during a rotation), mode, body limit.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub secrets: Vec<String>,
    pub livemode: bool,
    pub body_limit: usize,
    /// A span per delivery when exporting traces (continuing the sender's `traceparent`).
    pub tracing: crate::trace::Tracing,
}

#[derive(Clone)]
struct AppState {
    service: Arc<Service>,
    webhook: Arc<WebhookConfig>,
}

pub fn router(service: Arc<Service>, webhook: WebhookConfig) -> Router {
    let limit = webhook.body_limit;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/webhooks/stripe",
            // Two layers leave the error type in between to inference: it is Infallible.
            post(stripe_webhook)
                .layer::<_, Infallible>(DefaultBodyLimit::max(limit))
                .layer(webhook.tracing.http_layer()),
        )
        .with_state(AppState { service, webhook: Arc::new(webhook) })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.service.ready().await {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
    }
}

async fn metrics(State(s): State<AppState>) -> String {
    metrics::gauge!(telemetry::CACHE_SIZE).set(s.service.cache().entry_count() as f64);
    s.service.stats.publish();
    telemetry::render()
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

#[tracing::instrument(name = "stripe_webhook", skip_all, fields(event_id))]
async fn stripe_webhook(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if s.webhook.secrets.is_empty() {
        // Misconfiguration: answer 503 so Stripe keeps the event until an operator fixes it.
        return reply(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "no webhook endpoint secret configured" }));
    }
    let Ok(payload) = std::str::from_utf8(&body) else {
        metrics::counter!(telemetry::WEBHOOK_REJECTED, "reason" => "not_utf8").increment(1);
        return reply(StatusCode::BAD_REQUEST, json!({ "error": "body is not UTF-8" }));
    };
    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let verified = match stripe::verify(payload, header, &s.webhook.secrets, unix_now(), s.webhook.livemode) {
        Ok(v) => v,
        Err(rejection) => {
            tracing::warn!(error = %rejection, "stripe webhook rejected");
            metrics::counter!(telemetry::WEBHOOK_REJECTED, "reason" => rejection_label(&rejection)).increment(1);
            return reply(StatusCode::BAD_REQUEST, json!({ "error": rejection.to_string() }));
        }
    };
    tracing::Span::current().record("event_id", verified.envelope.id.as_str());
    trace::record_event_id(&verified.envelope.id);
    match s.service.apply_stripe(&verified.envelope, verified.event, None).await {
        Ok(o) => {
            if let Some(tenant) = &o.tenant_id {
                trace::record_tenant(tenant);
            }
            reply(
                StatusCode::OK,
                json!({
                    "id": verified.envelope.id,
                    "status": if o.duplicate { "duplicate" } else { o.status.as_str() },
                    "tenant_id": o.tenant_id,
                    "revision": o.revision,
                    "error": o.error,
                }),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "stripe event not committed; asking Stripe to retry");
            let status = match e {
                ServiceError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            reply(status, json!({ "error": e.to_string() }))
        }
    }
}

fn rejection_label(r: &stripe::Rejection) -> &'static str {
    match r {
        stripe::Rejection::MissingSignature => "missing_signature",
        stripe::Rejection::BadHeader => "bad_header",
        stripe::Rejection::BadSignature => "bad_signature",
        stripe::Rejection::BadTimestamp(_) => "bad_timestamp",
        stripe::Rejection::NotAnEvent(_) => "not_an_event",
        stripe::Rejection::LivemodeMismatch(_) => "livemode",
    }
}
