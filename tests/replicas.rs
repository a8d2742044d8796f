//! Several replicas sharing one PostgreSQL (SPEC §5–§6): two real server processes, push
//! invalidation over LISTEN/NOTIFY, listener reconnects, atomic usage across replicas, and a
//! store outage (through a TCP proxy we can cut) with recovery and no lost writes.
//!
//! Every test here needs PostgreSQL, so each is `#[ignore]`d: `cargo test` lists them as ignored.
//! Run them with a server they may create databases on (a missing URL fails them):
//!
//! ```sh
//! ENTITLEMENTS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo test --test replicas -- --ignored
//! ```

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::http::get;
use common::stripe::{checkout_session, event, post_event};
use common::*;
use entitlements::config::ServeArgs;
use entitlements::pb::*;
use tokio::net::{TcpListener, TcpStream};
use tonic::Request;
use tonic::transport::Channel;

const TOKEN: &str = "replica-token";
const SECRET: &str = "whsec_replicas";

struct Replica {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spawn_replica(db: &str) -> Replica {
    let (grpc, http) = (free_addr(), free_addr());
    let child = Command::new(env!("CARGO_BIN_EXE_entitlements"))
        .arg("serve")
        .arg("--catalog")
        .arg(catalog_path())
        .args(["--database-url", db, "--admin-token", TOKEN, "--stripe-webhook-secret", SECRET, "--max-ttl", "300s"])
        .args(["--grpc-addr", &grpc.to_string(), "--http-addr", &http.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn server");
    let replica = Replica { child, grpc, http };
    let deadline = entitlements::clock::monotonic() + Duration::from_secs(30);
    loop {
        if let Ok(ch) = Channel::from_shared(format!("http://{grpc}")).expect("url").connect().await {
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
            if h.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.is_ok() {
                return replica;
            }
        }
        assert!(entitlements::clock::monotonic() < deadline, "replica on {grpc} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn authed<T>(msg: T) -> Request<T> {
    with_token(TOKEN, msg)
}

fn grant(tenant: &str, addon: &str) -> GrantAddOnRequest {
    GrantAddOnRequest {
        tenant_id: tenant.into(),
        actor: "ops".into(),
        rationale: "replica test".into(),
        addon: addon.into(),
        ..Default::default()
    }
}

async fn metric(http: SocketAddr, name: &str) -> f64 {
    let (_, body) = get(http, "/metrics").await;
    body.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set ENTITLEMENTS_TEST_POSTGRES_URL and run with -- --ignored"]
async fn a_change_on_one_replica_reaches_the_other() {
    let url = require_postgres_url();
    let db = fresh_database(&url, "replicas").await;
    let a = spawn_replica(&db).await;
    let b = spawn_replica(&db).await;
    let (mut da, mut db_) = (data_client(a.grpc).await, data_client(b.grpc).await);
    let mut aa = admin_client(a.grpc).await;

    // B caches a denial, then A grants: B must notice through NOTIFY, not through expiry.
    assert!(!check(&mut db_, "acme", "teams_integration").await.allowed);
    aa.grant_add_on(authed(grant("acme", "teams"))).await.expect("grant on A");
    let (d, _) = eventually(&mut db_, "acme", "teams_integration", |d| d.allowed).await;
    assert_eq!(d.source(), Source::Addon);

    // A signed webhook to A: an Enterprise (Entra sync) add-on bought through checkout.
    assert!(!check(&mut db_, "acme", "entra_sync").await.allowed);
    let body = event(
        "evt_rep_1",
        "checkout.session.completed",
        now(),
        checkout_session("cs_rep_1", "cus_rep", "sub_rep_1", Some("acme"), Some("enterprise")),
    );
    let (status, reply) = post_event(a.http, &body, SECRET).await;
    assert_eq!(status, 200, "{reply}");
    eventually(&mut db_, "acme", "entra_sync", |d| d.allowed).await;
    assert!(check(&mut da, "acme", "entra_sync").await.allowed);
    assert!(metric(b.http, "entitlements_invalidations_received_total").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set ENTITLEMENTS_TEST_POSTGRES_URL and run with -- --ignored"]
async fn a_replica_whose_listener_drops_flushes_and_listens_again() {
    let url = require_postgres_url();
    let db = fresh_database(&url, "replicas").await;
    let a = spawn_replica(&db).await;
    let b = spawn_replica(&db).await;
    let mut db_ = data_client(b.grpc).await;
    let mut aa = admin_client(a.grpc).await;
    assert!(!check(&mut db_, "t-listen", "teams_integration").await.allowed);
    let flushes_before = metric(b.http, "entitlements_invalidation_listener_flushes_total").await;

    // Kill B's listening connection from the database side.
    use sqlx::Connection;
    let mut pg = sqlx::PgConnection::connect(&db).await.expect("connect");
    let name = entitlements::invalidation::listener_name(b.grpc.port());
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) t",
    )
    .bind(&name)
    .fetch_one(&mut pg)
    .await
    .expect("terminate");
    assert_eq!(killed, 1, "exactly one listener connection named {name}");

    let deadline = entitlements::clock::monotonic() + Duration::from_secs(20);
    while metric(b.http, "entitlements_invalidation_listener_flushes_total").await <= flushes_before {
        assert!(entitlements::clock::monotonic() < deadline, "B never noticed its listener was gone");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Listening again: a change made afterwards still reaches B.
    aa.grant_add_on(authed(grant("t-listen", "teams"))).await.expect("grant on A");
    eventually(&mut db_, "t-listen", "teams_integration", |d| d.allowed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set ENTITLEMENTS_TEST_POSTGRES_URL and run with -- --ignored"]
async fn enforced_usage_never_over_grants_across_replicas() {
    let url = require_postgres_url();
    let db = fresh_database(&url, "replicas").await;
    let a = spawn_replica(&db).await;
    let b = spawn_replica(&db).await;
    let mut aa = admin_client(a.grpc).await;
    let over = SetOverrideRequest {
        tenant_id: "usage-co".into(),
        actor: "ops".into(),
        rationale: "limit of exactly 100 for the test".into(),
        feature: "review_packs".into(),
        value: Some(set_override_request::Value::Number(100)),
        ..Default::default()
    };
    aa.set_override(authed(over)).await.expect("override");
    let mut db_ = data_client(b.grpc).await;
    eventually(&mut db_, "usage-co", "review_packs", |d| d.limit == Some(100)).await;

    let report = |key: String| RecordUsageRequest {
        tenant_id: "usage-co".into(),
        feature: "review_packs".into(),
        value: 1,
        mode: UsageMode::Delta as i32,
        idempotency_key: key,
        enforce: true,
    };
    let mut tasks = Vec::new();
    for (r, addr) in [(0, a.grpc), (1, b.grpc)] {
        let client = data_client(addr).await;
        for i in 0..200 {
            let mut c = client.clone();
            let req = report(format!("r{r}-{i}"));
            tasks.push(tokio::spawn(async move { c.record_usage(req).await.expect("record").into_inner() }));
        }
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("join"));
    }
    let applied = results.iter().filter(|r| r.applied).count();
    assert_eq!(applied, 100, "exactly the limit is applied");
    assert_eq!(results.iter().filter(|r| !r.applied && r.reason() == Reason::LimitExceeded).count(), 300);
    let mut da = data_client(a.grpc).await;
    let usage = da
        .usage(UsageRequest { tenant_id: "usage-co".into(), features: vec!["review_packs".into()] })
        .await
        .expect("usage");
    assert_eq!(usage.into_inner().usage[0].used, 100);
    // Replaying any key returns the original result, from either replica.
    for (i, original) in results.iter().enumerate().step_by(37) {
        let (r, n) = (i / 200, i % 200);
        let mut c = if i % 2 == 0 { data_client(a.grpc).await } else { data_client(b.grpc).await };
        let again = c.record_usage(report(format!("r{r}-{n}"))).await.expect("replay").into_inner();
        assert!(again.duplicate);
        assert_eq!((again.applied, again.used), (original.applied, original.used));
    }
}

/// A TCP proxy to PostgreSQL that a test can cut (refuse + drop connections) and restore.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(tx);
        let (up2, gen2) = (Arc::clone(&up), Arc::clone(&generation));
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound); // refused: closed at once
                    continue;
                }
                let mut cut = gen2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, up, generation }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn pg_target(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split(['/', '?']).next().unwrap_or(rest);
    let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
    let hostport = if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:5432") };
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport.parse().expect("host:port of the PostgreSQL URL")
}

fn through(url: &str, proxy: SocketAddr) -> String {
    let target = pg_target(url);
    url.replacen(&format!("{}", target.port()), &proxy.port().to_string(), 1).replacen("localhost", "127.0.0.1", 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set ENTITLEMENTS_TEST_POSTGRES_URL and run with -- --ignored"]
async fn a_store_outage_is_survived_and_nothing_accepted_is_lost() {
    let url = require_postgres_url();
    let db = fresh_database(&url, "outage").await;
    let proxy = Proxy::start(pg_target(&db)).await;
    let via_proxy = through(&db, proxy.addr);
    assert_ne!(via_proxy, db);

    // One server whose catalog has fallbacks (the example), one whose catalog has none.
    let dir = tempfile::tempdir().expect("tempdir");
    let no_fallback = dir.path().join("no-fallback.toml");
    let text = std::fs::read_to_string(catalog_path()).expect("catalog");
    std::fs::write(&no_fallback, text.lines().filter(|l| !l.starts_with("fallback")).collect::<Vec<_>>().join("\n"))
        .expect("write");
    let args = |catalog: std::path::PathBuf| ServeArgs {
        admin_token: Some(TOKEN.into()),
        stripe_webhook_secrets: vec![SECRET.into()],
        max_ttl: Duration::from_secs(300),
        stale_if_error: Duration::from_secs(300),
        ..ServeArgs::local(catalog, via_proxy.clone())
    };
    let s = entitlements::server::start(&args(catalog_path())).await.expect("server");
    let s2 = entitlements::server::start(&args(no_fallback)).await.expect("server without fallbacks");
    let (mut d, mut d2) = (data_client(s.grpc_addr).await, data_client(s2.grpc_addr).await);
    let mut adm = admin_client(s.grpc_addr).await;

    adm.grant_add_on(authed(grant("cached-co", "teams"))).await.expect("grant");
    assert!(check(&mut d, "cached-co", "teams_integration").await.allowed);

    proxy.down();
    // Cached tenants keep being answered.
    for _ in 0..5 {
        let dd = check(&mut d, "cached-co", "teams_integration").await;
        assert!(dd.allowed && !dd.fallback);
    }
    // Uncached: the catalog's fallback values…
    let fb = check(&mut d, "never-seen", "max_file_mb").await;
    assert!(fb.fallback, "{fb:?}");
    assert_eq!(fb.limit, Some(10));
    let fb = check(&mut d, "never-seen", "invoice_designer").await;
    assert!(fb.fallback && !fb.allowed);
    // …or UNAVAILABLE when the catalog defines none.
    let req = CheckRequest { tenant_id: "never-seen".into(), feature: "max_file_mb".into(), ..Default::default() };
    assert_eq!(d2.check(req).await.expect_err("no fallback").code(), tonic::Code::Unavailable);
    // Writes are refused, never half-applied: the webhook answers 5xx so Stripe retries.
    let body = event(
        "evt_outage_1",
        "checkout.session.completed",
        now(),
        checkout_session("cs_out", "cus_out", "sub_out", Some("cached-co"), Some("enterprise")),
    );
    let (status, reply) = post_event(s.http_addr, &body, SECRET).await;
    assert!((500..600).contains(&status), "{status} {reply}");
    let err = adm.grant_add_on(authed(grant("cached-co", "ai_assistant"))).await.expect_err("store down");
    assert_eq!(err.code(), tonic::Code::Unavailable);

    proxy.up();
    // Stripe's retry of the same delivery now succeeds; nothing accepted is missing.
    let deadline = entitlements::clock::monotonic() + Duration::from_secs(20);
    loop {
        let (status, reply) = post_event(s.http_addr, &body, SECRET).await;
        if status == 200 {
            assert!(reply.contains("applied"), "{reply}");
            break;
        }
        assert!(entitlements::clock::monotonic() < deadline, "store never came back: {status} {reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(check(&mut d, "cached-co", "entra_sync").await.allowed);
    adm.grant_add_on(authed(grant("cached-co", "ai_assistant"))).await.expect("grant after recovery");
    assert!(check(&mut d, "cached-co", "ai_assistant").await.allowed);
    let fresh = check(&mut d, "never-seen", "max_file_mb").await;
    assert!(!fresh.fallback);
    let t = adm.get_tenant(authed(GetTenantRequest { tenant_id: "cached-co".into() })).await.expect("get").into_inner();
    let addons: Vec<String> = t.tenant.expect("tenant").addon_grants.into_iter().map(|g| g.addon).collect();
    for want in ["teams", "enterprise", "ai_assistant"] {
        assert!(addons.iter().any(|a| a == want), "{want} missing from {addons:?}");
    }
    s.stop().await.expect("stop");
    s2.stop().await.expect("stop");
}

/// Two replicas on one PostgreSQL walk a 14-day trial (injected clock, both following the same
/// offset file): both run the notice task and the webhook worker, yet each notice is made once
/// in total — once on either replica's `Watch` (NOTIFY reaches both) and once at the receiver,
/// which verifies every signature with Python's `standardwebhooks`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set ENTITLEMENTS_TEST_POSTGRES_URL and run with -- --ignored"]
async fn two_replicas_make_each_lifecycle_notice_once() {
    use common::lifecycle::*;
    let url = require_postgres_url();
    require_python_standardwebhooks();
    let db = fresh_database(&url, "notices").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = dir.path().join("clock-offset");
    set_clock(&clock, 0);
    std::fs::write(&clock, "0").expect("clock");
    let receiver = Receiver::start(dir.path(), 1);
    let hooks = receiver.config(dir.path());
    let a = spawn_server(&db, free_addr(), free_addr(), &clock, &hooks).await;
    let b = spawn_server(&db, free_addr(), free_addr(), &clock, &hooks).await;
    let (on_a, on_b) = (Watcher::start(a.grpc).await, Watcher::start(b.grpc).await);

    start_trial(b.grpc, "twin-co").await;
    let want = trial_timeline();
    for (i, days) in TIMELINE_DAYS.iter().enumerate() {
        set_clock(&clock, *days);
        assert_eq!(kinds(&on_a.wait_for(i + 1).await), want[..=i]);
        assert_eq!(kinds(&on_b.wait_for(i + 1).await), want[..=i]);
    }
    wait_for_webhooks(&receiver, "twin-co", want.len()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(kinds(&on_a.seen()), want, "each notice once on replica A's Watch");
    assert_eq!(kinds(&on_b.seen()), want, "each notice once on replica B's Watch");
    assert_eq!(accepted_notices(&receiver, "twin-co"), expected_webhook_notices(), "each notice delivered once");
    assert!(receiver.requests().iter().all(|r| r["verified"] == true));
    let (_, ma) = get(a.http, "/metrics").await;
    let (_, mb) = get(b.http, "/metrics").await;
    let made = |m: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with("entitlements_lifecycle_notices_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(made(&ma) + made(&mb), want.len() as f64, "made once in total across the replicas");
}
