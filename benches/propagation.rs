//! How fast does a change reach the other side? (SPEC §9: webhook on replica A → `Check` on
//! replica B, p99 ≤ 100 ms.) Two paths, real servers on loopback, real transports:
//!
//! - `relay`: a signed Stripe webhook on a central server (SQLite) → a `Check` on a relay in
//!   front of it (invalidated through `Watch`).
//! - `replicas`: an admin grant on replica A → a `Check` on replica B, both on one PostgreSQL
//!   (invalidated through LISTEN/NOTIFY). Needs `ENTITLEMENTS_TEST_POSTGRES_URL`; skipped otherwise.
//!
//! Each round changes one tenant on the writer and polls the reader every 200 µs until the
//! decision flips; the time from the writer's reply to the first flipped decision is recorded.
//!
//! `cargo bench --bench propagation` (optional: `-- --rounds 200`).

use std::time::{Duration, Instant};

use entitlements::config::ServeArgs;
use entitlements::pb::admin_service_client::AdminServiceClient;
use entitlements::pb::entitlement_service_client::EntitlementServiceClient;
use entitlements::pb::*;
use entitlements::server;
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tonic::Request;
use tonic::transport::Channel;

const TOKEN: &str = "bench-token";
const SECRET: &str = "whsec_bench";

fn catalog() -> std::path::PathBuf {
    concat!(env!("CARGO_MANIFEST_DIR"), "/examples/catalog.toml").into()
}

fn fixtures() -> std::path::PathBuf {
    let here = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/stripe-fixtures"));
    if here.exists() { here } else { "/work/shared/stripe-fixtures".into() }
}

fn fixture(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("shared/stripe-fixtures");
    serde_json::from_str(&text).expect("json")
}

/// A signed `checkout.session.completed` buying (or, for a deleted subscription, ending) teams.
fn checkout_event(n: u32, tenant: &str) -> String {
    let mut s = fixture("checkout_session.json");
    s["id"] = format!("cs_bench_{n}").into();
    s["mode"] = "subscription".into();
    s["customer"] = format!("cus_bench_{tenant}").into();
    s["subscription"] = format!("sub_bench_{n}").into();
    s["metadata"] = serde_json::json!({ "tenant_id": tenant, "addon": "teams" });
    let mut e = fixture("event_envelope.json");
    e["id"] = format!("evt_bench_{n}").into();
    e["type"] = "checkout.session.completed".into();
    e["created"] = entitlements::clock::unix_now().into();
    e["livemode"] = false.into();
    e["data"] = serde_json::json!({ "object": s });
    e.to_string()
}

async fn post_signed(addr: std::net::SocketAddr, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = entitlements::clock::unix_now();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("{t}.{body}").as_bytes());
    let sig = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nStripe-Signature: {sig}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

async fn allowed(c: &mut EntitlementServiceClient<Channel>, tenant: &str, feature: &str) -> bool {
    let req = CheckRequest { tenant_id: tenant.into(), feature: feature.into(), ..Default::default() };
    c.check(req).await.ok().and_then(|r| r.into_inner().decision).is_some_and(|d| d.allowed)
}

/// Poll until allowed; the elapsed time since `since`.
async fn until_allowed(
    c: &mut EntitlementServiceClient<Channel>,
    tenant: &str,
    feature: &str,
    since: Instant,
) -> Duration {
    loop {
        if allowed(c, tenant, feature).await {
            return since.elapsed();
        }
        assert!(since.elapsed() < Duration::from_secs(10), "change never arrived");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn report(label: &str, h: &Histogram<u64>) {
    println!(
        "{label}: n={} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.9) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
}

fn args(db: &str) -> ServeArgs {
    ServeArgs {
        admin_token: Some(TOKEN.into()),
        stripe_webhook_secrets: vec![SECRET.into()],
        max_ttl: Duration::from_secs(600),
        ..ServeArgs::local(catalog(), db)
    }
}

async fn relay_path(rounds: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let central = server::start(&args(&dir.path().join("c.db").display().to_string())).await.expect("central");
    let relay_args = ServeArgs { upstream: Some(format!("http://{}", central.grpc_addr)), ..args("") };
    let relay = server::start(&relay_args).await.expect("relay");
    let mut r = EntitlementServiceClient::connect(format!("http://{}", relay.grpc_addr)).await.expect("connect");
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for n in 0..rounds {
        let tenant = format!("relay-{n}");
        assert!(!allowed(&mut r, &tenant, "teams_integration").await); // cached on the relay
        let body = checkout_event(n, &tenant);
        let status = post_signed(central.http_addr, &body).await;
        assert_eq!(status, 200);
        let since = entitlements::clock::monotonic();
        let took = until_allowed(&mut r, &tenant, "teams_integration", since).await;
        h.record(took.as_micros() as u64).expect("record");
    }
    report("webhook on central -> Check on relay (Watch)", &h);
    relay.stop().await.expect("stop");
    central.stop().await.expect("stop");
}

async fn replicas_path(rounds: u32, url: &str) {
    use sqlx::Connection;
    let name = format!("bench_prop_{}", std::process::id());
    let mut admin_conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin_conn).await.expect("create");
    let db = format!("{}/{name}", url.rsplit_once('/').map_or(url, |(p, _)| p));
    let a = server::start(&args(&db)).await.expect("replica a");
    let b = server::start(&args(&db)).await.expect("replica b");
    let mut admin = AdminServiceClient::connect(format!("http://{}", a.grpc_addr)).await.expect("connect");
    let mut rb = EntitlementServiceClient::connect(format!("http://{}", b.grpc_addr)).await.expect("connect");
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for n in 0..rounds {
        let tenant = format!("rep-{n}");
        assert!(!allowed(&mut rb, &tenant, "teams_integration").await); // cached on B
        let mut req = Request::new(GrantAddOnRequest {
            tenant_id: tenant.clone(),
            actor: "bench".into(),
            rationale: "propagation benchmark".into(),
            addon: "teams".into(),
            ..Default::default()
        });
        req.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().expect("header"));
        admin.grant_add_on(req).await.expect("grant on A");
        let since = entitlements::clock::monotonic();
        let took = until_allowed(&mut rb, &tenant, "teams_integration", since).await;
        h.record(took.as_micros() as u64).expect("record");
    }
    report("admin grant on replica A -> Check on replica B (PostgreSQL NOTIFY)", &h);
    a.stop().await.expect("stop");
    b.stop().await.expect("stop");
    let _ =
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&mut admin_conn).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let rounds = argv
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| argv.get(i + 1))
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    if argv.iter().any(|a| a == "--list") {
        return;
    }
    relay_path(rounds).await;
    match std::env::var("ENTITLEMENTS_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => replicas_path(rounds, &url).await,
        _ => println!("replicas: skipped (set ENTITLEMENTS_TEST_POSTGRES_URL)"),
    }
}
