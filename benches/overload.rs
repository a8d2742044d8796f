//! Overload (SPEC §8): offered load far above what the server admits. Requests beyond
//! `--max-concurrent-requests` must be rejected fast (`RESOURCE_EXHAUSTED`) while accepted
//! checks keep a bounded p99, instead of everything queueing.
//!
//! The server runs in this process (loopback TCP) with a deliberately small limit; 16
//! connections × 64 in-flight streams hammer cached `Check`s for a few seconds.
//!
//! `cargo bench --bench overload` (optional: `-- --limit 16 --seconds 5`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use entitlements::config::ServeArgs;
use entitlements::pb::CheckRequest;
use entitlements::pb::entitlement_service_client::EntitlementServiceClient;
use hdrhistogram::Histogram;
use tokio::sync::Mutex;

fn arg(argv: &[String], name: &str, default: u64) -> u64 {
    argv.iter().position(|a| a == name).and_then(|i| argv.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.iter().any(|a| a == "--list") {
        return;
    }
    let limit = arg(&argv, "--limit", 16) as usize;
    let seconds = arg(&argv, "--seconds", 5);
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ServeArgs {
        max_concurrent_requests: limit,
        ..ServeArgs::local(
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/catalog.toml"),
            dir.path().join("o.db").display().to_string(),
        )
    };
    let s = entitlements::server::start(&args).await.expect("server");
    let url = format!("http://{}", s.grpc_addr);
    let ok = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("h")));
    let shed = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("h")));
    let other = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..16 {
        let client = EntitlementServiceClient::connect(url.clone()).await.expect("connect");
        for st in 0..64 {
            let (mut client, ok, shed, other, stop) =
                (client.clone(), ok.clone(), shed.clone(), other.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let tenant = format!("t{}", (c * 64 + st) % 100);
                let (mut lok, mut lshed) = (Histogram::<u64>::new(3).expect("h"), Histogram::<u64>::new(3).expect("h"));
                while !stop.load(Ordering::Relaxed) {
                    let started = entitlements::clock::monotonic();
                    let req = CheckRequest {
                        tenant_id: tenant.clone(),
                        feature: "invoice_designer".into(),
                        ..Default::default()
                    };
                    let r = client.check(req).await;
                    let us = started.elapsed().as_micros() as u64;
                    match r {
                        Ok(_) => lok.record(us).expect("record"),
                        Err(e) if e.code() == tonic::Code::ResourceExhausted => lshed.record(us).expect("record"),
                        Err(_) => {
                            other.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                ok.lock().await.add(&lok).expect("add");
                shed.lock().await.add(&lshed).expect("add");
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let show = |label: &str, h: &Histogram<u64>| {
        println!(
            "{label}: n={} ({:.0}/s) p50={}µs p99={}µs p99.9={}µs max={}µs",
            h.len(),
            h.len() as f64 / seconds as f64,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    };
    println!("offered: 16 connections x 64 in-flight streams = 1024 concurrent; admitted at once: {limit}");
    show("accepted", &*ok.lock().await);
    show("shed (RESOURCE_EXHAUSTED)", &*shed.lock().await);
    println!("other errors: {}", other.load(Ordering::Relaxed));
    s.stop().await.expect("stop");
}
