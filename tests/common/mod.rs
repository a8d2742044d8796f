//! Shared helpers for the integration tests that need PostgreSQL, HTTP or Stripe events.
#![allow(dead_code)]

use std::path::PathBuf;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The PostgreSQL URL of the test suite, or `None` (skip) — unless CI requires PostgreSQL, in
/// which case a missing URL fails the test.
pub fn postgres_url() -> Option<String> {
    match std::env::var("ENTITLEMENTS_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("ENTITLEMENTS_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "ENTITLEMENTS_REQUIRE_POSTGRES=1 but ENTITLEMENTS_TEST_POSTGRES_URL is not set"
            );
            eprintln!("skipped: set ENTITLEMENTS_TEST_POSTGRES_URL to run the PostgreSQL tests");
            None
        }
    }
}

/// Replace the database name of a PostgreSQL URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let prefix = base.rsplit_once('/').map_or(base, |(p, _)| p);
    match query {
        Some(q) => format!("{prefix}/{db}?{q}"),
        None => format!("{prefix}/{db}"),
    }
}

/// A fresh, empty database for one test; returns its URL.
pub async fn fresh_database(url: &str, prefix: &str) -> String {
    use sqlx::Connection;
    let name = format!("{prefix}_{:016x}", rand_u64());
    let mut admin = sqlx::PgConnection::connect(url).await.expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create database");
    with_database(url, &name)
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(entitlements::clock::unix_nanos());
    h.finish()
}

pub fn catalog_path() -> PathBuf {
    concat!(env!("CARGO_MANIFEST_DIR"), "/examples/catalog.toml").into()
}

/// `shared/stripe-fixtures`: beside the clone in CI, or named by `ENTITLEMENTS_STRIPE_FIXTURES`.
pub fn fixtures_dir() -> PathBuf {
    let candidates = [
        std::env::var("ENTITLEMENTS_STRIPE_FIXTURES").ok().map(PathBuf::from),
        Some(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/stripe-fixtures"))),
        Some(PathBuf::from("/work/shared/stripe-fixtures")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("subscription.json").exists())
        .expect("shared/stripe-fixtures not found")
}

pub fn fixture(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures_dir().join(name)).expect("read fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// An event envelope (from the fixture) around `object`.
pub fn event(id: &str, event_type: &str, created: i64, object: serde_json::Value) -> String {
    let mut e = fixture("event_envelope.json");
    e["id"] = id.into();
    e["type"] = event_type.into();
    e["created"] = created.into();
    e["livemode"] = false.into();
    e["data"] = serde_json::json!({ "object": object });
    e.to_string()
}

/// A `checkout.session.completed` object in subscription mode.
pub fn checkout_session(
    session: &str,
    tenant: &str,
    customer: &str,
    subscription: &str,
    addon: Option<&str>,
) -> serde_json::Value {
    let mut s = fixture("checkout_session.json");
    s["id"] = session.into();
    s["mode"] = "subscription".into();
    s["status"] = "complete".into();
    s["payment_status"] = "paid".into();
    s["customer"] = customer.into();
    s["subscription"] = subscription.into();
    let mut md = serde_json::json!({ "tenant_id": tenant });
    if let Some(a) = addon {
        md["addon"] = a.into();
    }
    s["metadata"] = md;
    s
}

/// `Stripe-Signature` the way Stripe computes it: HMAC-SHA256 over `t.body`.
pub fn sign(body: &str, secret: &str, t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn now() -> i64 {
    entitlements::service::unix_now()
}

/// A minimal HTTP/1.1 request over TCP; returns (status, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    s.write_all(body.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// POST a signed Stripe event to `/webhooks/stripe`.
pub async fn post_event(addr: std::net::SocketAddr, body: &str, secret: &str) -> (u16, String) {
    let sig = sign(body, secret, now());
    http(addr, "POST", "/webhooks/stripe", &[("Stripe-Signature", &sig), ("Content-Type", "application/json")], body)
        .await
}

/// A request with `authorization: Bearer <token>`.
pub fn with_token<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    r
}

type DataClient = entitlements::pb::entitlement_service_client::EntitlementServiceClient<tonic::transport::Channel>;

pub async fn check(c: &mut DataClient, tenant: &str, feature: &str) -> entitlements::pb::Decision {
    let req =
        entitlements::pb::CheckRequest { tenant_id: tenant.into(), feature: feature.into(), ..Default::default() };
    c.check(req).await.expect("check").into_inner().decision.expect("decision")
}

/// Poll (no timing assertion: only a generous deadline) until `pred` holds; the decision and
/// how long it took.
pub async fn eventually(
    c: &mut DataClient,
    tenant: &str,
    feature: &str,
    pred: impl Fn(&entitlements::pb::Decision) -> bool,
) -> (entitlements::pb::Decision, std::time::Duration) {
    let start = entitlements::clock::monotonic();
    loop {
        let d = check(c, tenant, feature).await;
        if pred(&d) {
            return (d, start.elapsed());
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "condition never held; last decision {d:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
