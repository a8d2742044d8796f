//! Relay (sidecar) mode and operations (SPEC §8): a central server and a relay in front of it,
//! a webhook on the central server reflected by the relay, the central server killed and
//! restarted under the relay, `/metrics`, the optional data-plane token, and TLS.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::http::get;
use common::stripe::{checkout_session, event, post_event};
use common::*;
use entitlements::config::ServeArgs;
use entitlements::pb::entitlement_service_client::EntitlementServiceClient;
use entitlements::pb::*;
use entitlements::server::{self, Running};
use tonic::Request;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const TOKEN: &str = "relay-admin-token";
const SECRET: &str = "whsec_relay";

fn central_args(db: &str, grpc: SocketAddr) -> ServeArgs {
    ServeArgs {
        grpc_addr: grpc,
        admin_token: Some(TOKEN.into()),
        stripe_webhook_secrets: vec![SECRET.into()],
        max_ttl: Duration::from_secs(300),
        watch_heartbeat: Duration::from_millis(200),
        ..ServeArgs::local(catalog_path(), db)
    }
}

fn relay_args(upstream: SocketAddr) -> ServeArgs {
    ServeArgs {
        upstream: Some(format!("http://{upstream}")),
        admin_token: Some(TOKEN.into()),
        max_ttl: Duration::from_secs(300),
        stale_if_error: Duration::from_secs(300),
        ..ServeArgs::local(catalog_path(), "")
    }
}

fn authed<T>(msg: T) -> Request<T> {
    with_token(TOKEN, msg)
}

async fn client(r: &Running) -> DataClient {
    data_client(r.grpc_addr).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_follows_its_upstream_and_survives_its_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("central.db").display().to_string();
    let central_addr = free_addr();
    let central = server::start(&central_args(&db, central_addr)).await.expect("central");
    let relay = server::start(&relay_args(central_addr)).await.expect("relay");
    let mut r = client(&relay).await;

    // The relay answers like the central service, from its own cache.
    let d = check(&mut r, "acme", "teams_integration").await;
    assert_eq!(d.reason(), Reason::AddonRequired);

    // A webhook on the central service reaches the relay through Watch.
    let body = event(
        "evt_relay_1",
        "checkout.session.completed",
        now(),
        checkout_session("cs_r1", "cus_r1", "sub_r1", Some("acme"), Some("teams")),
    );
    let (status, reply) = post_event(central.http_addr, &body, SECRET).await;
    assert_eq!(status, 200, "{reply}");
    let (_, took) = eventually(&mut r, "acme", "teams_integration", |d| d.allowed).await;
    println!("webhook on central → visible on relay after {took:?}");

    // Admin changes and usage reports through the relay are forwarded upstream.
    let mut ra = admin_client(relay.grpc_addr).await;
    let grant = GrantAddOnRequest {
        tenant_id: "acme".into(),
        actor: "ops".into(),
        rationale: "via relay".into(),
        addon: "ai_assistant".into(),
        ..Default::default()
    };
    let rev = ra.grant_add_on(authed(grant)).await.expect("forwarded grant").into_inner().revision;
    assert!(check(&mut r, "acme", "ai_assistant").await.allowed);
    let mut ca = admin_client(central_addr).await;
    let t = ca.get_tenant(authed(GetTenantRequest { tenant_id: "acme".into() })).await.expect("get").into_inner();
    assert_eq!(t.tenant.expect("tenant").revision, rev, "the central service committed it");
    let usage = RecordUsageRequest {
        tenant_id: "acme".into(),
        feature: "review_packs".into(),
        value: 2,
        mode: UsageMode::Delta as i32,
        idempotency_key: "relay-1".into(),
        enforce: true,
    };
    assert!(r.record_usage(usage).await.expect("forwarded usage").into_inner().applied);
    let mut c = client(&central).await;
    assert_eq!(check(&mut c, "acme", "review_packs").await.used, Some(2));

    // Kill the central service: the relay keeps answering the tenants it knows…
    central.stop().await.expect("stop central");
    for _ in 0..3 {
        let d = check(&mut r, "acme", "teams_integration").await;
        assert!(d.allowed && !d.fallback, "{d:?}");
    }
    // …and answers unknown ones from the catalog's fallback values.
    assert!(check(&mut r, "stranger", "max_file_mb").await.fallback);

    // Restart it on the same address: the relay recovers the stream by itself.
    let central = server::start(&central_args(&db, central_addr)).await.expect("central again");
    let mut ca = admin_client(central_addr).await;
    let grant = GrantAddOnRequest {
        tenant_id: "acme".into(),
        actor: "ops".into(),
        rationale: "after restart".into(),
        addon: "enterprise".into(),
        ..Default::default()
    };
    ca.grant_add_on(authed(grant)).await.expect("grant on central");
    eventually(&mut r, "acme", "entra_sync", |d| d.allowed).await;
    assert!(!check(&mut r, "stranger", "max_file_mb").await.fallback, "served from the upstream again");

    // Operators see what it is doing.
    let (status, metrics) = get(central.http_addr, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "entitlements_decision_duration_seconds_bucket",
        "entitlements_decisions_total",
        "entitlements_cache_hits_total",
        "entitlements_cache_misses_total",
        "entitlements_webhook_events_total",
        "entitlements_invalidations_total",
        "entitlements_stale_answers_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
    relay.stop().await.expect("stop relay");
    central.stop().await.expect("stop central");
}

#[tokio::test]
async fn the_data_plane_token_is_enforced_when_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ServeArgs {
        data_token: Some("data-secret".into()),
        ..ServeArgs::local(catalog_path(), dir.path().join("d.db").display().to_string())
    };
    let s = server::start(&args).await.expect("server");
    let mut c = client(&s).await;
    let req = || CheckRequest { tenant_id: "t".into(), feature: "seats".into(), ..Default::default() };
    assert_eq!(c.check(req()).await.expect_err("no token").code(), tonic::Code::Unauthenticated);
    assert!(c.check(with_token("data-secret", req())).await.is_ok());
    s.stop().await.expect("stop");
}

#[tokio::test]
async fn grpc_over_tls() {
    let _ = tonic::transport::channel::ClientTlsConfig::new();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, key.cert.pem()).expect("write");
    std::fs::write(&key_path, key.signing_key.serialize_pem()).expect("write");
    let args = ServeArgs {
        tls_cert: Some(cert_path),
        tls_key: Some(key_path),
        ..ServeArgs::local(catalog_path(), dir.path().join("tls.db").display().to_string())
    };
    let s = server::start(&args).await.expect("server");
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(key.cert.pem())).domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{}", s.grpc_addr.port()))
        .expect("url")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("TLS connect");
    let mut c = EntitlementServiceClient::new(channel);
    let d = c
        .check(CheckRequest { tenant_id: "t".into(), feature: "seats".into(), ..Default::default() })
        .await
        .expect("check over TLS");
    assert!(d.into_inner().decision.expect("decision").allowed);
    // Plaintext is refused.
    let plain = EntitlementServiceClient::connect(format!("http://{}", s.grpc_addr)).await;
    if let Ok(mut p) = plain {
        assert!(
            p.check(CheckRequest { tenant_id: "t".into(), feature: "seats".into(), ..Default::default() })
                .await
                .is_err()
        );
    }
    s.stop().await.expect("stop");
}
