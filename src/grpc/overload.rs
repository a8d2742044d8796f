//! Overload protection for our two planes only: beyond the global concurrency limit their
//! requests are shed at once (`RESOURCE_EXHAUSTED`) instead of queueing. The standard gRPC
//! services (health, reflection: every path under `/grpc.`) always pass: a saturated pod must
//! still answer its probes, or the orchestrator restarts it and the overload spreads.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::codegen::http;
use tower::limit::{ConcurrencyLimit, GlobalConcurrencyLimitLayer};
use tower::load_shed::LoadShed;
use tower::util::Oneshot;
use tower::{BoxError, Layer, Service, ServiceExt};

/// Shed our planes' requests beyond `max` in flight; never the standard services.
#[derive(Clone)]
pub struct PlaneLimitLayer {
    limit: GlobalConcurrencyLimitLayer,
}

impl PlaneLimitLayer {
    /// A limit whose permits are shared with OFREP's HTTP handlers: one budget for the data
    /// plane, whichever port a request comes in on.
    pub fn shared(permits: Arc<Semaphore>) -> PlaneLimitLayer {
        PlaneLimitLayer { limit: GlobalConcurrencyLimitLayer::with_semaphore(permits) }
    }
}

/// The permits of a plane limit of `max` requests in flight.
pub fn plane_permits(max: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(max.max(1)))
}

impl<S: Clone> Layer<S> for PlaneLimitLayer {
    type Service = PlaneLimit<S>;

    fn layer(&self, inner: S) -> PlaneLimit<S> {
        PlaneLimit { limited: LoadShed::new(self.limit.layer(inner.clone())), open: inner }
    }
}

#[derive(Clone)]
pub struct PlaneLimit<S> {
    open: S,
    limited: LoadShed<ConcurrencyLimit<S>>,
}

/// Health (`/grpc.health.v1.Health/…`) and reflection (`/grpc.reflection.…`).
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.")
}

impl<S, B> Service<http::Request<B>> for PlaneLimit<S>
where
    S: Service<http::Request<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = PlaneFuture<S::Future, Oneshot<LoadShed<ConcurrencyLimit<S>>, http::Request<B>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.open.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if exempt(req.uri().path()) {
            PlaneFuture::Open { f: self.open.call(req) }
        } else {
            // The limit takes its permit in `poll_ready`; a clone shares the global semaphore.
            PlaneFuture::Limited { f: self.limited.clone().oneshot(req) }
        }
    }
}

pin_project_lite::pin_project! {
    #[project = PlaneFutureProj]
    pub enum PlaneFuture<A, B> {
        Open { #[pin] f: A },
        Limited { #[pin] f: B },
    }
}

impl<A, B, T, EA, EB> Future for PlaneFuture<A, B>
where
    A: Future<Output = Result<T, EA>>,
    B: Future<Output = Result<T, EB>>,
    EA: Into<BoxError>,
    EB: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            PlaneFutureProj::Open { f } => f.poll(cx).map_err(Into::into),
            PlaneFutureProj::Limited { f } => f.poll(cx).map_err(Into::into),
        }
    }
}
