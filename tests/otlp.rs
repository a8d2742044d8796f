//! Traces (SPEC §8): with `--otlp-endpoint`, every RPC and webhook delivery is a span that
//! continues the caller's `traceparent` and reaches an OTLP/gRPC receiver (started here, the
//! `opentelemetry-proto` `TraceService`); without it, nothing is exported.
//!
//! Each server owns its trace pipeline (no global subscriber or provider), so both tests run
//! side by side in this process, each with its own receiver.

mod common;

use std::net::SocketAddr;

use common::{catalog_path, data_client, rand_u64};
use entitlements::config::ServeArgs;
use entitlements::pb::CheckRequest;
use entitlements::server::{self, Running};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio::sync::mpsc;
use tonic::transport::server::TcpIncoming;

const CHECK: &str = "/entitlements.v1.EntitlementService/Check";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP/gRPC trace receiver: every export request lands in the channel.
struct Receiver(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn receiver() -> (SocketAddr, mpsc::UnboundedReceiver<ExportTraceServiceRequest>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let addr = listener.local_addr().expect("receiver addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let serve = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Receiver(tx)))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(serve);
    (addr, rx)
}

/// A server configured through the command line, as an operator would.
async fn start(dir: &tempfile::TempDir, extra: &[String]) -> Running {
    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }
    let mut argv = vec![
        "serve".to_string(),
        format!("--catalog={}", catalog_path().display()),
        format!("--database-url={}", dir.path().join(format!("{:x}.db", rand_u64())).display()),
        "--grpc-addr=127.0.0.1:0".into(),
        "--http-addr=127.0.0.1:0".into(),
        "--stripe-webhook-secret=whsec_otlp_test".into(),
    ];
    argv.extend(extra.iter().cloned());
    let args = <Serve as clap::Parser>::try_parse_from(argv).unwrap_or_else(|e| panic!("serve flags: {e}")).args;
    server::start(&args).await.expect("server starts")
}

fn new_trace_id() -> String {
    format!("{:016x}{:016x}", rand_u64(), rand_u64())
}

/// A `Check` carrying `traceparent: 00-<trace>-<PARENT_SPAN>-01` (sampled).
async fn traced_check(addr: SocketAddr, trace: &str, tenant: &str) {
    let mut client = data_client(addr).await;
    let mut req = tonic::Request::new(CheckRequest {
        tenant_id: tenant.into(),
        feature: "teams_integration".into(),
        ..Default::default()
    });
    let header = format!("00-{trace}-{PARENT_SPAN}-01");
    req.metadata_mut().insert("traceparent", header.parse().expect("traceparent header"));
    client.check(req).await.expect("check");
}

/// Every span received so far, with its resource's `service.name`.
fn received(rx: &mut mpsc::UnboundedReceiver<ExportTraceServiceRequest>) -> Vec<(String, Span)> {
    let mut out = Vec::new();
    while let Ok(req) = rx.try_recv() {
        for rs in req.resource_spans {
            let service = rs.resource.as_ref().and_then(|r| attr_of(&r.attributes, "service.name")).unwrap_or_default();
            for ss in rs.scope_spans {
                out.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
    }
    out
}

fn attr_of(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str) -> Option<String> {
    let value = attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}

fn attr(span: &Span, key: &str) -> Option<String> {
    attr_of(&span.attributes, key)
}

fn with_trace<'a>(spans: &'a [(String, Span)], trace: &str) -> Vec<&'a (String, Span)> {
    spans.iter().filter(|(_, s)| hex(&s.trace_id) == trace).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_check_is_a_span_of_the_callers_trace_at_the_receiver() {
    let (otlp, mut rx) = receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&dir, &[format!("--otlp-endpoint=http://{otlp}")]).await;
    let (trace, other) = (new_trace_id(), new_trace_id());
    // The first Check loads the tenant (a miss); the second is answered from the cache.
    traced_check(running.grpc_addr, &trace, "acme").await;
    traced_check(running.grpc_addr, &trace, "acme").await;
    // A webhook delivery without a valid signature: a span all the same, outcome 400.
    let traceparent = format!("00-{other}-{PARENT_SPAN}-01");
    let (status, _) =
        common::http::post(running.http_addr, "/webhooks/stripe", &[("traceparent", traceparent)], b"{}").await;
    assert_eq!(status, 400);
    // Graceful shutdown exports what is buffered.
    running.stop().await.expect("stop");

    let spans = received(&mut rx);
    let checks = with_trace(&spans, &trace);
    assert_eq!(checks.len(), 2, "two Check spans in trace {trace}; received {spans:#?}");
    for (service, span) in &checks {
        assert_eq!(service, "entitlements");
        assert_eq!(span.name, CHECK.trim_start_matches('/'));
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(hex(&span.parent_span_id), PARENT_SPAN, "continues the caller's span");
        assert_eq!(attr(span, "method").as_deref(), Some(CHECK));
        assert_eq!(attr(span, "tenant").as_deref(), Some("acme"));
        assert_eq!(attr(span, "outcome").as_deref(), Some("OK"));
    }
    let cache: Vec<_> = checks.iter().map(|(_, s)| attr(s, "cache")).collect();
    assert!(cache.contains(&Some("miss".into())) && cache.contains(&Some("hit".into())), "cache: {cache:?}");
    let miss = checks.iter().find(|(_, s)| attr(s, "cache").as_deref() == Some("miss")).expect("the miss");
    let store_us = miss.1.attributes.iter().find(|kv| kv.key == "store_us").and_then(|kv| kv.value.as_ref());
    assert!(
        matches!(store_us.and_then(|v| v.value.as_ref()), Some(Value::IntValue(us)) if *us >= 0),
        "store time on the miss, in µs: {store_us:?}"
    );

    let hooks = with_trace(&spans, &other);
    assert_eq!(hooks.len(), 1, "one webhook span in trace {other}; received {spans:#?}");
    assert_eq!(hooks[0].1.name, "POST /webhooks/stripe");
    assert_eq!(attr(&hooks[0].1, "outcome").as_deref(), Some("400"));
    assert_eq!(attr(&hooks[0].1, "method").as_deref(), Some("/webhooks/stripe"));
    // A trace nobody sent has no spans (the lookup can fail).
    assert!(with_trace(&spans, &new_trace_id()).is_empty());
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported() {
    let (otlp, mut rx) = receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Two servers in one process: one exporting to the receiver, one with tracing off.
    let exporting = start(&dir, &[format!("--otlp-endpoint=http://{otlp}")]).await;
    let silent = start(&dir, &[]).await;
    let (seen, unseen) = (new_trace_id(), new_trace_id());
    traced_check(silent.grpc_addr, &unseen, "acme").await;
    traced_check(exporting.grpc_addr, &seen, "acme").await;
    silent.stop().await.expect("stop");
    exporting.stop().await.expect("stop");

    let spans = received(&mut rx);
    assert_eq!(with_trace(&spans, &seen).len(), 1, "the exporting server's Check arrives; received {spans:#?}");
    assert!(with_trace(&spans, &unseen).is_empty(), "the server without --otlp-endpoint exported {spans:#?}");
}
