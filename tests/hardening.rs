//! Hardening (issue 13): each numbered case of the issue, over the real interfaces — gRPC over
//! TCP, HTTP to the webhook, raw TCP for the connection rules — each failing on the code before
//! the fix. PostgreSQL's side of the NUL rule is in the store conformance suite (`text`).

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::http::get;
use common::stripe::*;
use common::*;
use entitlements::config::ServeArgs;
use entitlements::pb::{self, extend_trial_request::Until};
use entitlements::server::{self, Running};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const ADMIN: &str = "hardening-admin-token";
const RELAY: &str = "hardening-relay-token";
const DATA: &str = "hardening-data-token";
const SECRET: &str = "whsec_hardening";

fn args(dir: &Path) -> ServeArgs {
    ServeArgs {
        admin_token: Some(ADMIN.into()),
        relay_token: Some(RELAY.into()),
        stripe_webhook_secrets: vec![SECRET.into()],
        ..ServeArgs::local(catalog_path(), db_path(dir))
    }
}

fn db_path(dir: &Path) -> String {
    dir.join("hardening.db").display().to_string()
}

async fn start(args: &ServeArgs) -> Running {
    server::start(args).await.unwrap_or_else(|e| panic!("server starts: {e}"))
}

fn admin<T>(msg: T) -> Request<T> {
    with_token(ADMIN, msg)
}

async fn put_tenant(a: &mut AdminClient, tenant: &str, customer: &str) -> u64 {
    let req = pb::PutTenantRequest {
        tenant_id: tenant.into(),
        actor: "Ada Lovelace".into(),
        rationale: "contract 42, signed by the CFO".into(),
        stripe_customer_id: customer.into(),
        trial_start: ts(now()),
        ..Default::default()
    };
    a.put_tenant(admin(req)).await.expect("put tenant").into_inner().revision
}

fn assert_invalid(r: Result<impl std::fmt::Debug, Status>, field: &str) {
    let e = r.expect_err("must be refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains(field), "the message names `{field}`: {:?}", e.message());
}

// ------------------------------------------------------------------ 1. nothing private on the open plane

#[tokio::test]
async fn open_data_plane_shows_no_billing_identity_names_or_feed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&args(dir.path())).await;
    let mut a = admin_client(running.grpc_addr).await;
    let mut d = data_client(running.grpc_addr).await;
    put_tenant(&mut a, "acme", "cus_secret").await;
    let grant = pb::GrantAddOnRequest {
        tenant_id: "acme".into(),
        actor: "Ada Lovelace".into(),
        rationale: "goodwill after outage".into(),
        addon: "teams".into(),
        ..Default::default()
    };
    a.grant_add_on(admin(grant)).await.expect("grant");

    // Full tenant state and the change feed: a relay's credential (or the admin's) only.
    let state = pb::GetTenantStateRequest { tenant_id: "acme".into() };
    let e = d.get_tenant_state(state.clone()).await.expect_err("no credential");
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = d.watch(pb::WatchRequest::default()).await.expect_err("no credential");
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = d.get_tenant_state(with_token("wrong", state.clone())).await.expect_err("wrong credential");
    assert_eq!(e.code(), Code::Unauthenticated);
    let full = d.get_tenant_state(with_token(RELAY, state)).await.expect("relay token").into_inner();
    assert_eq!(full.tenant.expect("tenant").stripe_customer_id, "cus_secret");
    d.watch(with_token(RELAY, pb::WatchRequest::default())).await.expect("relay token opens the feed");

    // Explain answers anyone, without people's names or rationale.
    let explain = pb::ExplainRequest { tenant_id: "acme".into(), ..Default::default() };
    let open = d.explain(explain.clone()).await.expect("explain").into_inner();
    let text = format!("{open:?}");
    for private in ["Ada Lovelace", "goodwill", "contract 42", "cus_secret"] {
        assert!(!text.contains(private), "open Explain shows {private:?}");
    }
    let names = d.explain(with_token(ADMIN, explain)).await.expect("explain").into_inner();
    assert!(format!("{names:?}").contains("goodwill after outage"), "the admin credential sees why");
    running.stop().await.expect("stop");
}

// ------------------------------------------------------------------ 2 and 6. a held SQLite write lock

/// Hold SQLite's write lock from outside the server until the returned connection rolls back.
async fn hold_write_lock(db: &str) -> sqlx::SqliteConnection {
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{db}")).await.expect("open the database");
    sqlx::query("BEGIN IMMEDIATE").execute(&mut c).await.expect("take the write lock");
    c
}

#[tokio::test]
async fn health_and_reflection_are_never_shed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ServeArgs {
        max_concurrent_requests: 1,
        // The blocked write below holds the one slot for up to 8 s (two fifths of this).
        request_timeout: Duration::from_secs(20),
        ..args(dir.path())
    };
    let running = start(&args).await;
    let mut d = data_client(running.grpc_addr).await;
    let mut lock = hold_write_lock(&db_path(dir.path())).await;
    let put = pb::PutTenantRequest {
        tenant_id: "busy".into(),
        actor: "ops".into(),
        rationale: "waits for the write lock".into(),
        ..Default::default()
    };
    let mut blocked = admin_client(running.grpc_addr).await;
    let write = tokio::spawn(async move { blocked.put_tenant(admin(put)).await });
    // The data plane is saturated: its next request is shed at once...
    let shed = eventually_shed(&mut d).await;
    assert_eq!(shed.code(), Code::ResourceExhausted);
    // ...but health still answers.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.grpc_addr)).expect("url");
    let mut health = HealthClient::new(channel.connect().await.expect("connect"));
    for service in ["", "entitlements.v1.EntitlementService"] {
        let r = health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await;
        assert_eq!(r.expect("health is not shed").into_inner().status(), ServingStatus::Serving);
    }
    sqlx::query("ROLLBACK").execute(&mut lock).await.expect("release");
    write.await.expect("join").expect("the write completes once the lock is released");
    running.stop().await.expect("stop");
}

/// Check until the server sheds one (the blocked write may take a moment to take the slot).
async fn eventually_shed(d: &mut DataClient) -> Status {
    for _ in 0..200 {
        let req = pb::CheckRequest { tenant_id: "t".into(), feature: "sso".into(), ..Default::default() };
        if let Err(e) = d.check(req).await {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the data plane was never saturated");
}

#[tokio::test]
async fn sqlite_busy_is_unavailable_before_the_request_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&args(dir.path())).await;
    let mut a = admin_client(running.grpc_addr).await;
    let mut lock = hold_write_lock(&db_path(dir.path())).await;
    let req = pb::PutTenantRequest {
        tenant_id: "locked".into(),
        actor: "ops".into(),
        rationale: "test".into(),
        ..Default::default()
    };
    let e = a.put_tenant(admin(req)).await.expect_err("the write lock is held");
    assert_eq!(e.code(), Code::Unavailable, "retryable, not the deadline's CANCELLED: {e:?}");
    sqlx::query("ROLLBACK").execute(&mut lock).await.expect("release");
    running.stop().await.expect("stop");
}

// ------------------------------------------------------------------ 3. NUL

#[tokio::test]
async fn nul_is_refused_naming_the_field_and_a_webhook_is_stored_as_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&args(dir.path())).await;
    let mut a = admin_client(running.grpc_addr).await;
    let mut d = data_client(running.grpc_addr).await;
    let put = |actor: &str, rationale: &str, customer: &str| pb::PutTenantRequest {
        tenant_id: "nul".into(),
        actor: actor.into(),
        rationale: rationale.into(),
        stripe_customer_id: customer.into(),
        ..Default::default()
    };
    assert_invalid(a.put_tenant(admin(put("a\0b", "r", ""))).await, "actor");
    assert_invalid(a.put_tenant(admin(put("a", "r\0", ""))).await, "rationale");
    assert_invalid(a.put_tenant(admin(put("a", "r", "cus_\0"))).await, "stripe_customer_id");
    let report = pb::RecordUsageRequest {
        tenant_id: "nul".into(),
        feature: "ai_requests".into(),
        value: 1,
        mode: pb::UsageMode::Delta as i32,
        idempotency_key: "key\0".into(),
        ..Default::default()
    };
    assert_invalid(d.record_usage(report).await, "idempotency_key");

    put_tenant(&mut a, "nul", "cus_nul").await;
    let cs = checkout_session("cs_nul", "cus_nul", "sub_nul", Some("nul"), Some("tea\u{0}ms"));
    let body = event("evt_nul", "checkout.session.completed", now(), cs);
    assert!(body.contains("\\u0000"), "the body carries an escaped NUL");
    let (status, reply) = post_event(running.http_addr, &body, SECRET).await;
    assert_eq!(status, 400, "{reply}");
    let again = post_event(running.http_addr, &body, SECRET).await;
    assert_eq!(again.0, 400, "a retry is refused the same way, never 503: {}", again.1);
    let list = pb::ListStripeEventsRequest { status: "failed".into(), ..Default::default() };
    let events = a.list_stripe_events(admin(list)).await.expect("list").into_inner().events;
    let stored = events.iter().find(|e| e.id == "evt_nul").expect("the event is stored");
    assert!(stored.error.contains("NUL"), "{stored:?}");
    running.stop().await.expect("stop");
}

// ------------------------------------------------------------------ 4. a relay with a credential per plane

#[tokio::test]
async fn relay_uses_a_credential_per_plane_and_is_not_ready_without_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let central = start(&ServeArgs { data_token: Some(DATA.into()), ..args(dir.path()) }).await;
    let mut a = admin_client(central.grpc_addr).await;
    put_tenant(&mut a, "acme", "cus_1").await;
    let upstream = format!("http://{}", central.grpc_addr);
    let relay_args = |token: &str| ServeArgs {
        upstream: Some(upstream.clone()),
        upstream_token: Some(token.into()),
        upstream_admin_token: Some(ADMIN.into()),
        admin_token: Some("relay-local-admin".into()),
        ..ServeArgs::local(catalog_path(), "unused")
    };
    let relay = start(&relay_args(RELAY)).await;
    let mut rd = data_client(relay.grpc_addr).await;
    let d = check(&mut rd, "acme", "sso").await;
    assert!(!d.fallback, "the relay loads from the central server: {d:?}");
    // A forwarded admin change goes with the admin credential.
    let mut ra = admin_client(relay.grpc_addr).await;
    let grant = pb::GrantAddOnRequest {
        tenant_id: "acme".into(),
        actor: "ops".into(),
        rationale: "forwarded".into(),
        addon: "teams".into(),
        ..Default::default()
    };
    ra.grant_add_on(with_token("relay-local-admin", grant)).await.expect("forwarded admin call");
    eventually(&mut rd, "acme", "teams_integration", |d| d.allowed).await;

    // A relay whose credential the central server refuses says it is not ready.
    let wrong = start(&relay_args("not-the-token")).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", wrong.grpc_addr)).expect("url");
    let mut health = HealthClient::new(channel.connect().await.expect("connect"));
    let r = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
    assert_eq!(r.expect("health").into_inner().status(), ServingStatus::NotServing);
    let (status, _) = get(wrong.http_addr, "/readyz").await;
    assert_eq!(status, 503);
    for s in [wrong, relay, central] {
        s.stop().await.expect("stop");
    }
}

// ------------------------------------------------------------------ 5. no connection that lingers

/// Whether the server closes `s` within `deadline` (a generous bound, not a measurement).
async fn closed_within(s: &mut TcpStream, deadline: Duration) -> (bool, String) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(deadline, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (closed, String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test]
async fn silent_half_open_and_trickling_connections_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ServeArgs {
        handshake_timeout: Duration::from_millis(300),
        http_header_timeout: Duration::from_millis(500),
        webhook_body_timeout: Duration::from_millis(500),
        ..args(dir.path())
    };
    let running = start(&args).await;
    let bound = Duration::from_secs(10);
    for addr in [running.http_addr, running.grpc_addr] {
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        assert!(closed_within(&mut silent, bound).await.0, "a silent connection to {addr} is closed");
    }
    let mut partial_head = TcpStream::connect(running.http_addr).await.expect("connect");
    partial_head.write_all(b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    assert!(closed_within(&mut partial_head, bound).await.0, "a request head that never ends is closed");
    let mut partial_body = TcpStream::connect(running.http_addr).await.expect("connect");
    let head = "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"id\":";
    partial_body.write_all(head.as_bytes()).await.expect("write");
    let (closed, reply) = closed_within(&mut partial_body, bound).await;
    assert!(closed && reply.starts_with("HTTP/1.1 408"), "a body that never ends: {reply:?}");
    // A connection that speaks is served as before.
    assert_eq!(get(running.http_addr, "/healthz").await.0, 200);
    running.stop().await.expect("stop");
}

#[tokio::test]
async fn idle_grpc_connections_are_closed_and_a_watch_keeps_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ServeArgs {
        grpc_idle_timeout: Duration::from_millis(500),
        watch_heartbeat: Duration::from_millis(100),
        ..args(dir.path())
    };
    let running = start(&args).await;
    // An HTTP/2 connection that says hello (preface, SETTINGS) and then makes no call.
    let mut idle = TcpStream::connect(running.grpc_addr).await.expect("connect");
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.expect("preface");
    assert!(closed_within(&mut idle, Duration::from_secs(10)).await.0, "an idle gRPC connection is closed");
    // A connection with a call in flight (an open Watch) is not idle, however long it lasts.
    let mut d = data_client(running.grpc_addr).await;
    let mut watch = d.watch(with_token(RELAY, pb::WatchRequest::default())).await.expect("watch").into_inner();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..3 {
        let msg = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.expect("in time");
        assert!(msg.expect("the stream is alive").is_some(), "heartbeats keep coming");
    }
    // And a client whose connection was closed while idle simply reconnects for its next call.
    let mut c = data_client(running.grpc_addr).await;
    check(&mut c, "t", "sso").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut ok = false;
    for _ in 0..3 {
        let req = pb::CheckRequest { tenant_id: "t".into(), feature: "sso".into(), ..Default::default() };
        if c.check(req).await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "the next call goes through on a new connection");
    running.stop().await.expect("stop");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ServeArgs { max_connections: 2, handshake_timeout: Duration::from_secs(30), ..args(dir.path()) };
    let running = start(&args).await;
    let held: Vec<TcpStream> = vec![
        TcpStream::connect(running.http_addr).await.expect("1"),
        TcpStream::connect(running.http_addr).await.expect("2"),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(running.http_addr).await.expect("3");
    assert!(closed_within(&mut third, Duration::from_secs(10)).await.0, "the third connection is closed");
    drop(held);
    let mut served = false;
    for _ in 0..100 {
        let mut s = TcpStream::connect(running.http_addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
        let (_, reply) = closed_within(&mut s, Duration::from_secs(10)).await;
        if reply.starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "freed slots admit new connections");
    running.stop().await.expect("stop");
}

// ------------------------------------------------------------------ 7, 8, 9, 10. input

#[tokio::test]
async fn errors_quote_only_a_prefix_of_the_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&args(dir.path())).await;
    let mut d = data_client(running.grpc_addr).await;
    let huge = "f".repeat(1 << 20);
    let req = pb::ExplainRequest { tenant_id: "t".into(), features: vec![huge.clone()], ..Default::default() };
    let e = d.explain(req).await.expect_err("unknown feature");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().len() < 300, "grpc-message is {} bytes", e.message().len());
    let usage = pb::UsageRequest { tenant_id: "t".into(), features: vec![huge] };
    let e = d.usage(usage).await.expect_err("unknown feature");
    assert!(e.message().len() < 300, "grpc-message is {} bytes", e.message().len());
    running.stop().await.expect("stop");
}

#[tokio::test]
async fn timestamps_out_of_range_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&args(dir.path())).await;
    let mut a = admin_client(running.grpc_addr).await;
    let mut d = data_client(running.grpc_addr).await;
    put_tenant(&mut a, "time", "").await;
    let explain = pb::ExplainRequest { tenant_id: "time".into(), at: ts(i64::MAX), ..Default::default() };
    assert_invalid(d.explain(explain).await, "at");
    let explain = pb::ExplainRequest { tenant_id: "time".into(), at: ts(-1), ..Default::default() };
    assert_invalid(d.explain(explain).await, "at");
    let extend = |until: Until| pb::ExtendTrialRequest {
        tenant_id: "time".into(),
        actor: "ops".into(),
        rationale: "r".into(),
        until: Some(until),
    };
    let year_10000 = 253_402_300_800;
    assert_invalid(a.extend_trial(admin(extend(Until::TrialEnd(pb_ts(year_10000))))).await, "trial_end");
    a.extend_trial(admin(extend(Until::Days(3000)))).await.expect("one long extension is fine");
    // However often it is extended, a trial ends at most ten years from now.
    assert_invalid(a.extend_trial(admin(extend(Until::Days(3000)))).await, "days");
    let grant = pb::GrantAddOnRequest {
        tenant_id: "time".into(),
        actor: "ops".into(),
        rationale: "r".into(),
        addon: "teams".into(),
        expires_at: ts(i64::MAX),
        ..Default::default()
    };
    assert_invalid(a.grant_add_on(admin(grant)).await, "expires_at");
    running.stop().await.expect("stop");
}

fn pb_ts(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// Sends bytes as they are, to see what the server makes of a message that does not decode.
#[derive(Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        prost::bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use prost::bytes::Buf;
        let v = buf.chunk().to_vec();
        buf.advance(v.len());
        Ok(Some(v))
    }
}

#[tokio::test]
async fn a_message_that_does_not_decode_is_invalid_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&args(dir.path())).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.grpc_addr)).expect("url");
    let mut grpc = tonic::client::Grpc::new(channel.connect().await.expect("connect"));
    for method in ["/entitlements.v1.EntitlementService/Check", "/entitlements.v1.AdminService/PutTenant"] {
        grpc.ready().await.expect("ready");
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
        // Field 1 with wire type 7, which does not exist.
        let e = grpc.unary(admin(vec![0x0f, 0xff, 0xff]), path, RawCodec).await.expect_err("garbage");
        assert_eq!(e.code(), Code::InvalidArgument, "{method}: {e:?}");
    }
    running.stop().await.expect("stop");
}

#[tokio::test]
async fn an_unreachable_min_revision_costs_one_reload_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&args(dir.path())).await;
    let mut a = admin_client(running.grpc_addr).await;
    let mut d = data_client(running.grpc_addr).await;
    let rev = put_tenant(&mut a, "rev", "").await;
    let loads = || running.service.stats.store_loads.load(Ordering::Relaxed);
    for _ in 0..2 {
        let before = loads();
        let req = pb::CheckRequest {
            tenant_id: "rev".into(),
            feature: "sso".into(),
            min_revision: Some(rev + 1000),
            ..Default::default()
        };
        let e = d.check(req).await.expect_err("revision not reached");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains(&format!("revision {}", rev + 1000)), "{}", e.message());
        assert_eq!(loads() - before, 1, "one reload per call");
    }
    let reachable = pb::CheckRequest {
        tenant_id: "rev".into(),
        feature: "sso".into(),
        min_revision: Some(rev),
        ..Default::default()
    };
    d.check(reachable).await.expect("a reached revision answers");
    running.stop().await.expect("stop");
}
