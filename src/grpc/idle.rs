//! Marks a gRPC connection busy while a call is in flight on it — from the request until its
//! response body ends, so an open `Watch` stream keeps its connection — for the idle timeout
//! that `listener` enforces. Calls on a connection we did not admit (none, today) pass as they are.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use tonic::codegen::http;
use tonic::transport::server::TlsConnectInfo;

use crate::listener::{Busy, ConnectionInfo};

#[derive(Clone, Copy, Default)]
pub struct ActivityLayer;

impl<S> tower::Layer<S> for ActivityLayer {
    type Service = Activity<S>;

    fn layer(&self, inner: S) -> Activity<S> {
        Activity { inner }
    }
}

#[derive(Clone)]
pub struct Activity<S> {
    inner: S,
}

/// The connection's activity, with or without TLS in between.
fn busy<B>(req: &http::Request<B>) -> Option<Busy> {
    let ext = req.extensions();
    let info = ext.get::<ConnectionInfo>().or_else(|| ext.get::<TlsConnectInfo<ConnectionInfo>>().map(|t| t.get_ref()));
    info.map(|i| i.activity.busy())
}

impl<S, B, RB> tower::Service<http::Request<B>> for Activity<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = http::Response<BusyBody<RB>>;
    type Error = S::Error;
    type Future = BusyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let busy = busy(&req);
        BusyFuture { fut: self.inner.call(req), busy }
    }
}

pin_project_lite::pin_project! {
    pub struct BusyFuture<F> {
        #[pin]
        fut: F,
        busy: Option<Busy>,
    }
}

impl<F, RB, E> Future for BusyFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = Result<http::Response<BusyBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.fut.poll(cx));
        let busy = this.busy.take();
        Poll::Ready(response.map(|r| r.map(|inner| BusyBody { inner, _busy: busy })))
    }
}

pin_project_lite::pin_project! {
    /// The response body; the connection stays busy until it is dropped.
    pub struct BusyBody<B> {
        #[pin]
        inner: B,
        _busy: Option<Busy>,
    }
}

impl<B: Body> Body for BusyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
