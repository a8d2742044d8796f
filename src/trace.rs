//! Traces (SPEC §8): one span per gRPC RPC and one per Stripe webhook delivery, continuing the
//! caller's W3C `traceparent`, exported over OTLP/gRPC when `--otlp-endpoint` is set.
//!
//! Each server owns its pipeline: a tracer provider and a private `tracing` dispatcher (a
//! registry with the OpenTelemetry layer only). The request span is created in that dispatcher,
//! not in the process's log subscriber, so logs stay as they are, nothing is global, and two
//! servers in one process (tests) export independently. Handlers and the service add fields
//! through [`record_tenant`], [`record_cache`], … which reach the request's span through a
//! task-local the layer sets for the request's duration.
//!
//! Off (the default) there is no provider and no dispatcher: the layer passes requests
//! through (one branch per request and per body frame) and every `record_*` returns after one
//! relaxed atomic load. `Check` is the hot path, measured in instructions per request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tokio::task::futures::TaskLocalFuture;
use tracing::field::Empty;
use tracing::{Dispatch, Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// The `service.name` of every exported span.
pub const SERVICE_NAME: &str = "entitlements";
/// The target of the request spans: the pipeline's dispatcher registers interest in this
/// target only, so it never turns on anyone else's `debug!`/`trace!` callsites.
const TARGET: &str = "entitlements::trace";

/// Set once any server in the process exports: until then `record_*` is one load and a branch.
static ON: AtomicBool = AtomicBool::new(false);

tokio::task_local! {
    /// The span of the request being served on this task (set only while exporting).
    static REQUEST: Span;
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// A server's trace pipeline, or nothing (tracing off). Cheap to clone.
#[derive(Clone, Default)]
pub struct Tracing {
    pipeline: Option<Arc<Pipeline>>,
}

struct Pipeline {
    provider: SdkTracerProvider,
    dispatch: Dispatch,
    propagator: TraceContextPropagator,
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing").field("exporting", &self.pipeline.is_some()).finish()
    }
}

impl Tracing {
    /// Tracing off: the layers pass requests through.
    pub fn off() -> Tracing {
        Tracing::default()
    }

    /// Export to `endpoint` (OTLP/gRPC), sampling `ratio` of new traces; a caller's sampling
    /// decision (the `traceparent` flag) is followed. `None` or empty: off. Must run inside a
    /// Tokio runtime: the exporter's channel lives on it.
    pub fn start(endpoint: Option<&str>, ratio: f64) -> Result<Tracing, TraceError> {
        let Some(endpoint) = endpoint.map(str::trim).filter(|e| !e.is_empty()) else {
            return Ok(Tracing::off());
        };
        let exporter = SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio.clamp(0.0, 1.0))));
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler)
            .with_resource(Resource::builder().with_service_name(SERVICE_NAME).build())
            .build();
        let otel = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SERVICE_NAME))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_filter(Targets::new().with_target(TARGET, Level::INFO));
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(otel));
        ON.store(true, Ordering::Relaxed);
        let pipeline = Pipeline { provider, dispatch, propagator: TraceContextPropagator::new() };
        Ok(Tracing { pipeline: Some(Arc::new(pipeline)) })
    }

    pub fn exporting(&self) -> bool {
        self.pipeline.is_some()
    }

    /// The tower layer for the gRPC server: the outcome is the `grpc-status`.
    pub fn grpc_layer(&self) -> TraceLayer {
        TraceLayer { pipeline: self.pipeline.clone(), protocol: Protocol::Grpc }
    }

    /// The tower layer for an HTTP route: the outcome is the HTTP status.
    pub fn http_layer(&self) -> TraceLayer {
        TraceLayer { pipeline: self.pipeline.clone(), protocol: Protocol::Http }
    }

    /// Export what is buffered and stop the provider (graceful shutdown). The SDK blocks while
    /// the exporter, which runs on this runtime, sends: so it runs on a blocking thread.
    pub async fn shutdown(&self) {
        let Some(p) = &self.pipeline else { return };
        let provider = p.provider.clone();
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "trace export did not shut down cleanly"),
            Err(e) => tracing::warn!(error = %e, "trace export shutdown task failed"),
        }
    }
}

impl Pipeline {
    /// The request's span, in the pipeline's dispatcher, child of the caller's `traceparent`.
    fn open<B>(&self, req: &http::Request<B>, protocol: Protocol) -> Span {
        let path = req.uri().path();
        let span = tracing::dispatcher::with_default(&self.dispatch, || match protocol {
            Protocol::Grpc => request_span(path.trim_start_matches('/'), path),
            Protocol::Http => request_span(&format!("{} {path}", req.method()), path),
        });
        let parent = self.propagator.extract(&Headers(req.headers()));
        // A malformed or absent `traceparent` leaves an empty context: the span is a new root.
        let _ = span.set_parent(parent);
        span
    }
}

/// The one span callsite: every field a request may record is declared here (a field that is
/// never recorded is not exported).
fn request_span(name: &str, method: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = Empty,
        method,
        tenant = Empty,
        outcome = Empty,
        cache = Empty,
        store_us = Empty,
        event_id = Empty,
    )
}

/// `traceparent`/`tracestate` from HTTP (and so HTTP/2 gRPC) headers.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

// ------------------------------------------------------------------ fields, from handlers

/// Run `f` on the current request's span, if this task serves one and tracing is on.
#[inline]
fn with_request(f: impl FnOnce(&Span)) {
    if ON.load(Ordering::Relaxed) {
        let _ = REQUEST.try_with(f);
    }
}

/// The tenant the request is about.
#[inline]
pub fn record_tenant(tenant: &str) {
    with_request(|s| {
        s.record("tenant", tenant);
    });
}

/// How the tenant cache answered: `hit`, `miss`, `stale` or `fallback`.
#[inline]
pub fn record_cache(outcome: &'static str) {
    with_request(|s| {
        s.record("cache", outcome);
    });
}

/// Time spent loading the tenant from the store (or upstream) on a miss.
#[inline]
pub fn record_store_time(took: Duration) {
    with_request(|s| {
        // i64: exported as an integer attribute (u64 values are exported as strings).
        s.record("store_us", i64::try_from(took.as_micros()).unwrap_or(i64::MAX));
    });
}

/// The Stripe event a webhook delivery carried.
#[inline]
pub fn record_event_id(id: &str) {
    with_request(|s| {
        s.record("event_id", id);
    });
}

// ------------------------------------------------------------------ the tower layer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Grpc,
    Http,
}

/// Opens a span per request (when exporting) and closes it when the response body ends.
#[derive(Clone)]
pub struct TraceLayer {
    pipeline: Option<Arc<Pipeline>>,
    protocol: Protocol,
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> TraceService<S> {
        TraceService { inner, pipeline: self.pipeline.clone(), protocol: self.protocol }
    }
}

#[derive(Clone)]
pub struct TraceService<S> {
    inner: S,
    pipeline: Option<Arc<Pipeline>>,
    protocol: Protocol,
}

impl<S, B, RB> tower::Service<http::Request<B>> for TraceService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = http::Response<TracedBody<RB>>;
    type Error = S::Error;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(pipeline) = &self.pipeline else {
            return TraceFuture::Plain { fut: self.inner.call(req) };
        };
        let span = pipeline.open(&req, self.protocol);
        let inner = &mut self.inner;
        let fut = REQUEST.sync_scope(span.clone(), || inner.call(req));
        TraceFuture::Traced { fut: REQUEST.scope(span.clone(), fut), span: Some(span), protocol: self.protocol }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future; when traced, run with the request span as task-local.
    #[project = TraceFutureProj]
    pub enum TraceFuture<F> {
        Plain { #[pin] fut: F },
        Traced { #[pin] fut: TaskLocalFuture<Span, F>, span: Option<Span>, protocol: Protocol },
    }
}

impl<F, RB, E> Future for TraceFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = Result<http::Response<TracedBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            TraceFutureProj::Plain { fut } => fut.poll(cx).map_ok(|r| r.map(|inner| TracedBody { inner, span: None })),
            TraceFutureProj::Traced { fut, span, protocol } => {
                let result = ready!(fut.poll(cx));
                let span = span.take().unwrap_or_else(Span::none);
                Poll::Ready(match result {
                    Ok(response) => Ok(traced_response(response, span, *protocol)),
                    Err(e) => {
                        // The error becomes a status outside this layer (tonic's recovery).
                        span.record("outcome", "ERROR");
                        span.record("otel.status_code", "ERROR");
                        Err(e)
                    }
                })
            }
        }
    }
}

/// Record what the response head says, and hand the span to the body, which ends it.
fn traced_response<RB>(response: http::Response<RB>, span: Span, protocol: Protocol) -> http::Response<TracedBody<RB>> {
    match protocol {
        Protocol::Http => {
            let status = response.status();
            span.record("outcome", status.as_str());
            if status.is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
        }
        // A trailers-only response (an error before any message) carries its status here.
        Protocol::Grpc => record_grpc_status(&span, response.headers()),
    }
    response.map(|inner| TracedBody { inner, span: Some(span) })
}

fn record_grpc_status(span: &Span, headers: &http::HeaderMap) {
    let Some(value) = headers.get("grpc-status") else { return };
    let code = tonic::Code::from_bytes(value.as_bytes());
    span.record("outcome", code_name(code));
    // Server faults, as OpenTelemetry's gRPC conventions count them; client errors are not.
    if matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    ) {
        span.record("otel.status_code", "ERROR");
    }
}

/// The canonical name of a gRPC status code (what operators grep for).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

pin_project_lite::pin_project! {
    /// The response body; when traced it holds the request span until the last frame (a
    /// unary gRPC answer's status arrives in its trailers), so the span covers the whole RPC,
    /// streams included.
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        span: Option<Span>,
    }
}

impl<B: Body> Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(span) = this.span.as_ref() {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(trailers) = f.trailers_ref() {
                        record_grpc_status(span, trailers);
                    }
                }
                Some(Err(_)) => {
                    span.record("otel.status_code", "ERROR");
                }
                None => *this.span = None,
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
