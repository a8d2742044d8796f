//! Helpers shared by the integration tests: the running server and its clients, PostgreSQL
//! databases, raw HTTP ([`http`]) and Stripe deliveries ([`stripe`]).
//!
//! Each test binary includes this module with `mod common;` and uses only part of it.
#![allow(dead_code)]

pub mod http;
pub mod lifecycle;
pub mod stripe;

use std::net::SocketAddr;
use std::path::PathBuf;

use entitlements::pb::admin_service_client::AdminServiceClient;
use entitlements::pb::entitlement_service_client::EntitlementServiceClient;
use tonic::transport::Channel;

// ------------------------------------------------------------------ prerequisites

/// The variable naming the PostgreSQL server of the PostgreSQL tests.
pub const POSTGRES_URL_VAR: &str = "ENTITLEMENTS_TEST_POSTGRES_URL";

/// The PostgreSQL server URL of a test that needs PostgreSQL. Such a test is `#[ignore]`d, so
/// it only runs when asked for (`-- --ignored`): then a missing URL is a failure, not a skip.
pub fn require_postgres_url() -> String {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
        _ => panic!(
            "this test needs PostgreSQL but {POSTGRES_URL_VAR} is not set: set it to a server this \
             test may create databases on, e.g. {POSTGRES_URL_VAR}=postgres://postgres@127.0.0.1:5432/test"
        ),
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
    let mut admin = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to PostgreSQL at {url} ({POSTGRES_URL_VAR}): {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {url}: {e}"));
    with_database(url, &name)
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(entitlements::clock::unix_nanos());
    h.finish()
}

// ------------------------------------------------------------------ the server and its clients

pub fn catalog_path() -> PathBuf {
    concat!(env!("CARGO_MANIFEST_DIR"), "/examples/catalog.toml").into()
}

/// A local address nobody listens on (yet).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr")
}

pub fn now() -> i64 {
    entitlements::clock::unix_now()
}

pub fn ts(t: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: t, nanos: 0 })
}

pub type DataClient = EntitlementServiceClient<Channel>;
pub type AdminClient = AdminServiceClient<Channel>;

/// A data-plane client of the server whose gRPC address is `addr`.
pub async fn data_client(addr: SocketAddr) -> DataClient {
    EntitlementServiceClient::connect(format!("http://{addr}")).await.expect("connect data plane")
}

/// An admin-plane client of the server whose gRPC address is `addr`.
pub async fn admin_client(addr: SocketAddr) -> AdminClient {
    AdminServiceClient::connect(format!("http://{addr}")).await.expect("connect admin plane")
}

/// A request with `authorization: Bearer <token>`.
pub fn with_token<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    r
}

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
