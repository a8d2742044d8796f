//! OFREP, the OpenFeature Remote Evaluation Protocol (open-feature/protocol,
//! `service/openapi.yaml`, core 0.1.0) on the HTTP port: `POST /ofrep/v1/evaluate/flags/{key}`
//! and the bulk `POST /ofrep/v1/evaluate/flags` with `ETag` / `If-None-Match`.
//!
//! Statuses: 200 an evaluation (a denial too: `value: false`); 400 a context or body the
//! evaluation cannot use (`TARGETING_KEY_MISSING`, `INVALID_CONTEXT`, `PARSE_ERROR`); 401 no or
//! a wrong data-plane token (`Authorization: Bearer` or `X-API-Key`); 404 `FLAG_NOT_FOUND`; 429
//! with `Retry-After` when the data plane sheds (the gRPC planes' permits, shared); 503 when the
//! store cannot answer.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value as Json, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{EvalError, Evaluation, FlagValue};
use crate::grpc::BearerAuth;
use crate::service::{Service, ServiceError};

/// A context is small; anything larger is not one.
const BODY_LIMIT: usize = 64 * 1024;

/// What the OFREP routes need: the service, the data plane's credential (`None`: open) and
/// the data plane's permits.
#[derive(Clone)]
pub struct Ofrep {
    pub service: Arc<Service>,
    pub auth: Option<BearerAuth>,
    pub permits: Arc<Semaphore>,
}

pub fn router(state: Ofrep) -> Router {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(evaluate_flag))
        .route("/ofrep/v1/evaluate/flags", post(evaluate_flags))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

fn reply(status: StatusCode, body: Json) -> Response {
    (status, axum::Json(body)).into_response()
}

impl Ofrep {
    /// Authenticate, then take a permit: shed at once (429) rather than queue.
    fn admit(&self, headers: &HeaderMap) -> Result<OwnedSemaphorePermit, Box<Response>> {
        if let Some(auth) = &self.auth
            && let Err(e) = auth.verify_http(headers)
        {
            let mut r = reply(StatusCode::UNAUTHORIZED, json!({ "errorDetails": e.to_string() }));
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Err(Box::new(r));
        }
        Arc::clone(&self.permits).try_acquire_owned().map_err(|_| {
            metrics::counter!(crate::telemetry::OFREP_SHED).increment(1);
            let mut r = reply(StatusCode::TOO_MANY_REQUESTS, json!({ "errorDetails": "overloaded: retry later" }));
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Box::new(r)
        })
    }
}

/// The request's `context` (an empty body: none, so no targeting key).
fn context(body: &[u8]) -> Result<Map<String, Json>, EvalError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let parsed: Json = serde_json::from_slice(body).map_err(|e| EvalError::Parse(e.to_string()))?;
    match parsed {
        Json::Object(mut o) => match o.remove("context") {
            None | Some(Json::Null) => Ok(Map::new()),
            Some(Json::Object(c)) => Ok(c),
            Some(_) => Err(EvalError::InvalidContext("context must be an object".into())),
        },
        _ => Err(EvalError::Parse("expected an object with a context".into())),
    }
}

fn success(e: &Evaluation) -> Json {
    let value = match &e.value {
        FlagValue::Bool(b) => json!(b),
        FlagValue::Int(i) => json!(i),
        FlagValue::Str(s) => json!(s),
        FlagValue::Object(o) => Json::Object(o.clone()),
    };
    json!({ "key": e.key, "value": value, "reason": e.reason, "variant": e.variant, "metadata": e.metadata })
}

/// The one mapping of evaluation errors to OFREP statuses. `key`: the flag of a single
/// evaluation (a bulk failure names none).
fn failure(key: Option<&str>, e: EvalError) -> Response {
    let status = match &e {
        EvalError::FlagNotFound(_) => StatusCode::NOT_FOUND,
        EvalError::TargetingKeyMissing
        | EvalError::InvalidContext(_)
        | EvalError::TypeMismatch(_)
        | EvalError::Parse(_) => StatusCode::BAD_REQUEST,
        EvalError::Service(s) => return service_failure(s),
    };
    let mut body = json!({ "errorCode": e.code(), "errorDetails": e.to_string() });
    if let (Some(k), Some(o)) = (key, body.as_object_mut()) {
        o.insert("key".into(), json!(k));
    }
    reply(status, body)
}

fn service_failure(e: &ServiceError) -> Response {
    let status = match e {
        ServiceError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        ServiceError::Refused { code: tonic::Code::Unauthenticated, .. } => StatusCode::UNAUTHORIZED,
        ServiceError::Refused { code: tonic::Code::PermissionDenied, .. } => StatusCode::FORBIDDEN,
        ServiceError::Refused { .. } => StatusCode::BAD_REQUEST,
        ServiceError::Unavailable(_) | ServiceError::RevisionNotReached { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::Internal(m) => {
            tracing::error!(error = %m, "internal error");
            return reply(StatusCode::INTERNAL_SERVER_ERROR, json!({ "errorDetails": "internal error" }));
        }
    };
    reply(status, json!({ "errorDetails": e.to_string() }))
}

async fn evaluate_flag(State(s): State<Ofrep>, Path(key): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let _permit = match s.admit(&headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let ctx = match context(&body) {
        Ok(c) => c,
        Err(e) => return failure(Some(&key), e),
    };
    match super::evaluate(&s.service, &key, None, &ctx).await {
        Ok(e) => reply(StatusCode::OK, success(&e)),
        Err(e) => failure(Some(&key), e),
    }
}

/// `If-None-Match` lists the tag (or is `*`); weak tags compare by their opaque part.
fn matches(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').map(str::trim).any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag))
}

async fn evaluate_flags(State(s): State<Ofrep>, headers: HeaderMap, body: Bytes) -> Response {
    let _permit = match s.admit(&headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let result = match context(&body) {
        Ok(ctx) => super::evaluate_all(&s.service, &ctx).await,
        Err(e) => Err(e),
    };
    let (evaluations, tag) = match result {
        Ok(r) => r,
        Err(e) => return failure(None, e),
    };
    let Ok(etag) = HeaderValue::from_str(&tag) else {
        return reply(StatusCode::INTERNAL_SERVER_ERROR, json!({ "errorDetails": "internal error" }));
    };
    let mut r = if matches(&headers, &tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        reply(StatusCode::OK, json!({ "flags": evaluations.iter().map(success).collect::<Vec<_>>() }))
    };
    r.headers_mut().insert(header::ETAG, etag);
    r
}
