//! A throwaway OTLP/gRPC trace sink: accepts `ExportTraceServiceRequest`s, counts the spans and
//! prints a line per second (and the first span it sees), so tracing can be tried and measured
//! without a collector.
//!
//! `cargo run --release --example otlp_sink -- [ADDR]` (default `127.0.0.1:4317`), then start the
//! server with `--otlp-endpoint http://ADDR`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

struct Sink {
    spans: Arc<AtomicU64>,
    shown: AtomicBool,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let req = req.into_inner();
        let spans = req.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans);
        let mut n = 0;
        for span in spans {
            n += 1;
            if !self.shown.swap(true, Ordering::Relaxed) {
                println!("first span: {span:?}");
            }
        }
        self.spans.fetch_add(n, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:4317").parse()?;
    let counter = Arc::new(AtomicU64::new(0));
    let sink = Sink { spans: Arc::clone(&counter), shown: AtomicBool::new(false) };
    tokio::spawn(async move {
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let total = counter.load(Ordering::Relaxed);
            if total != last {
                println!("{} spans/s, {total} in all", total - last);
                last = total;
            }
        }
    });
    println!("OTLP/gRPC trace sink on {addr}");
    tonic::transport::Server::builder().add_service(TraceServiceServer::new(sink)).serve(addr).await?;
    Ok(())
}
