//! The HTTP listener (SPEC §7–§8, §11): `POST /webhooks/stripe`, `/healthz` (the process is up),
//! `/readyz` (catalog loaded and the store answers), `/metrics` (Prometheus) and OFREP
//! (`/ofrep/v1/…`, [`crate::openfeature::ofrep`]).
//!
//! Webhook statuses: 200 once the event is durably recorded (applied, duplicate, stale,
//! pending a tenant, or failed to map — those are stored for replay); 400 for a missing or bad
//! signature, a timestamp outside tolerance, a body that is not an event or the wrong mode
//! (nothing stored), or an event carrying a NUL character (stored as failed: no retry can make
//! it storable); 413 over the body limit; 503 when the store cannot commit, so Stripe retries.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::sync::mpsc;

use crate::clock::host_unix_now;
use crate::listener::Admitted;
use crate::service::{Service, ServiceError};
use crate::shutdown::Shutdown;
use crate::{stripe, telemetry, trace};

/// Webhook settings: endpoint secrets (several during a rotation), mode, body limit, and how
/// long a sender may take to send the body.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub secrets: Vec<String>,
    pub livemode: bool,
    pub body_limit: usize,
    pub body_timeout: Duration,
    /// A span per delivery when exporting traces (continuing the sender's `traceparent`).
    pub tracing: crate::trace::Tracing,
}

/// Serve HTTP/1.1 on admitted connections until shutdown, then drain in-flight requests.
/// A request's headers must arrive within `header_timeout` of the connection waiting for them
/// (which also closes idle keep-alive connections after that long).
pub async fn serve(
    mut conns: mpsc::Receiver<Admitted>,
    app: Router,
    header_timeout: Duration,
    mut stop: Shutdown,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    loop {
        let conn = tokio::select! {
            _ = stop.fired() => break,
            c = conns.recv() => match c {
                Some(c) => c,
                None => break,
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let served = graceful.watch(http.serve_connection(TokioIo::new(conn), service));
        tokio::spawn(async move {
            if let Err(e) = served.await {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
}

#[derive(Clone)]
struct AppState {
    service: Arc<Service>,
    webhook: Arc<WebhookConfig>,
}

pub fn router(service: Arc<Service>, webhook: WebhookConfig, ofrep: crate::openfeature::ofrep::Ofrep) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/webhooks/stripe", post(stripe_webhook).layer(webhook.tracing.http_layer()))
        .with_state(AppState { service, webhook: Arc::new(webhook) })
        .merge(crate::openfeature::ofrep::router(ofrep))
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

/// The body, read within the limit and the time allowed: a sender that trickles its body or
/// sends too much is answered (408, 413) instead of holding the connection.
async fn read_body(body: Body, cfg: &WebhookConfig) -> Result<Bytes, Response> {
    let read = axum::body::to_bytes(body, cfg.body_limit);
    match tokio::time::timeout(cfg.body_timeout, read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(if e.into_inner().is::<http_body_util::LengthLimitError>() {
            reply(StatusCode::PAYLOAD_TOO_LARGE, json!({ "error": "body over the limit" }))
        } else {
            reply(StatusCode::BAD_REQUEST, json!({ "error": "body could not be read" }))
        }),
        Err(_) => Err(reply(StatusCode::REQUEST_TIMEOUT, json!({ "error": "body not received in time" }))),
    }
}

#[tracing::instrument(name = "stripe_webhook", skip_all, fields(event_id))]
async fn stripe_webhook(State(s): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let body = match read_body(body, &s.webhook).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if s.webhook.secrets.is_empty() {
        // Misconfiguration: answer 503 so Stripe keeps the event until an operator fixes it.
        return reply(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "no webhook endpoint secret configured" }));
    }
    let Ok(payload) = std::str::from_utf8(&body) else {
        metrics::counter!(telemetry::WEBHOOK_REJECTED, "reason" => "not_utf8").increment(1);
        return reply(StatusCode::BAD_REQUEST, json!({ "error": "body is not UTF-8" }));
    };
    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let verified = match stripe::verify(payload, header, &s.webhook.secrets, host_unix_now(), s.webhook.livemode) {
        Ok(v) => v,
        Err(rejection) => {
            tracing::warn!(error = %rejection, "stripe webhook rejected");
            metrics::counter!(telemetry::WEBHOOK_REJECTED, "reason" => rejection_label(&rejection)).increment(1);
            return reply(StatusCode::BAD_REQUEST, json!({ "error": rejection.to_string() }));
        }
    };
    tracing::Span::current().record("event_id", verified.envelope.id.as_str());
    trace::record_event_id(&verified.envelope.id);
    // A NUL can never be stored as data: keep the event (as failed, for the record) and refuse it.
    let status = if verified.has_nul { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    match s.service.apply_stripe(&verified.envelope, verified.event, None).await {
        Ok(o) => {
            if let Some(tenant) = &o.tenant_id {
                trace::record_tenant(tenant);
            }
            reply(
                status,
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
