//! End-to-end tests over real TCP: a tonic client against the server started in-process on
//! ephemeral ports with a fresh SQLite file, plus the real binary for the CLI.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::http::get;
use common::*;
use entitlements::config::ServeArgs;
use entitlements::pb::{self, *};
use entitlements::server::{self, Running};
use tonic::transport::Channel;
use tonic::{Code, Request};

struct Harness {
    running: Running,
    data: DataClient,
    admin: AdminClient,
    _dir: tempfile::TempDir,
}

const TOKEN: &str = "test-admin-token";

async fn start() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ServeArgs {
        admin_token: Some(TOKEN.into()),
        max_ttl: Duration::from_secs(300),
        ..ServeArgs::local(catalog_path(), dir.path().join("e2e.db").display().to_string())
    };
    let running = server::start(&args).await.expect("server starts");
    let data = data_client(running.grpc_addr).await;
    let admin = admin_client(running.grpc_addr).await;
    Harness { running, data, admin, _dir: dir }
}

fn authed<T>(msg: T) -> Request<T> {
    with_token(TOKEN, msg)
}

impl Harness {
    async fn check(&mut self, tenant: &str, feature: &str) -> pb::Decision {
        check(&mut self.data, tenant, feature).await
    }

    fn loads(&self) -> u64 {
        self.running.service.stats.store_loads.load(Ordering::Relaxed)
    }

    async fn revision(&mut self, tenant: &str) -> u64 {
        let t = self.admin.get_tenant(authed(GetTenantRequest { tenant_id: tenant.into() })).await.expect("get");
        t.into_inner().tenant.map_or(0, |t| t.revision)
    }

    async fn audit_len(&mut self, tenant: &str) -> usize {
        let r = self.admin.list_audit_events(authed(ListAuditEventsRequest {
            tenant_id: tenant.into(),
            page_size: 500,
            page_token: String::new(),
        }));
        r.await.expect("audit").into_inner().events.len()
    }
}

#[tokio::test]
async fn cache_hit_touches_no_store() {
    let mut h = start().await;
    let first = h.check("acme", "invoice_designer").await;
    assert!(!first.allowed);
    let loads = h.loads();
    assert_eq!(loads, 1, "the first check loads the tenant once");
    for _ in 0..50 {
        let d = h.check("acme", "invoice_designer").await;
        assert_eq!(d, first);
    }
    assert_eq!(h.loads(), loads, "cache hits must not touch the store");
    assert!(h.running.service.stats.cache_hits.load(Ordering::Relaxed) >= 50);
    h.running.stop().await.expect("stop");
}

#[tokio::test]
async fn admin_mutation_is_visible_to_the_next_check() {
    let mut h = start().await;
    assert_eq!(h.check("acme", "teams_integration").await.reason(), Reason::AddonRequired);
    let grant = GrantAddOnRequest {
        tenant_id: "acme".into(),
        actor: "alice".into(),
        rationale: "courtesy".into(),
        addon: "teams".into(),
        ..Default::default()
    };
    let rev = h.admin.grant_add_on(authed(grant)).await.expect("grant").into_inner().revision;
    let d = h.check("acme", "teams_integration").await;
    assert!(d.allowed);
    assert_eq!(d.source(), pb::Source::Addon);
    assert_eq!(d.revision, rev);
    assert!(!h.check("acme", "entra_sync").await.allowed);

    let revoke = RevokeAddOnRequest {
        tenant_id: "acme".into(),
        actor: "alice".into(),
        rationale: "ended".into(),
        addon: "teams".into(),
    };
    let rev2 = h.admin.revoke_add_on(authed(revoke)).await.expect("revoke").into_inner().revision;
    assert!(rev2 > rev);
    // min_revision: read-your-writes even if something had been cached in between.
    let req = CheckRequest {
        tenant_id: "acme".into(),
        feature: "teams_integration".into(),
        min_revision: Some(rev2),
        ..Default::default()
    };
    let d = h.data.check(req).await.expect("check").into_inner().decision.expect("decision");
    assert!(!d.allowed);
    assert_eq!(d.revision, rev2);
    assert_eq!(h.audit_len("acme").await, 2);
    h.running.stop().await.expect("stop");
}

#[tokio::test]
async fn trial_threshold_is_crossed_by_time_alone() {
    let mut h = start().await;
    // The 7-days-left warning starts two seconds from now.
    let end = now() + 7 * 86_400 + 2;
    let put = PutTenantRequest {
        tenant_id: "trial-co".into(),
        actor: "signup".into(),
        rationale: "self-serve signup".into(),
        trial_start: ts(end - 14 * 86_400),
        trial_end: ts(end),
        ..Default::default()
    };
    h.admin.put_tenant(authed(put)).await.expect("put");
    let before = h.check("trial-co", "audit_log").await;
    assert!(before.allowed, "the trial plan (premium) includes audit_log");
    assert_eq!(before.phase(), Phase::Trialing);
    assert!(before.notices.is_empty());
    let loads = h.loads();
    let revision = h.revision("trial-co").await;
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let after = h.check("trial-co", "audit_log").await;
    assert_eq!(after.notices.len(), 1, "{after:?}");
    assert_eq!(after.notices[0].kind(), NoticeKind::TrialEnding);
    assert_eq!(after.notices[0].days_left, 7);
    assert_eq!(h.loads(), loads + 1, "the entry expired at valid_until and was reloaded once");
    assert_eq!(h.revision("trial-co").await, revision, "no write happened");
    h.running.stop().await.expect("stop");
}

#[tokio::test]
async fn a_check_sees_usage_recorded_a_moment_before() {
    let mut h = start().await;
    for i in 0..5 {
        let r = RecordUsageRequest {
            tenant_id: "u1".into(),
            feature: "review_packs".into(),
            value: 1,
            mode: UsageMode::Delta as i32,
            idempotency_key: format!("k{i}"),
            enforce: true,
        };
        assert!(h.data.record_usage(r).await.expect("record").into_inner().applied);
    }
    let d = h.check("u1", "review_packs").await;
    assert!(!d.allowed, "free allows 5 review packs a month");
    assert_eq!((d.limit, d.used, d.remaining), (Some(5), Some(5), Some(0)));
    assert_eq!(d.reason(), Reason::LimitExceeded);
    assert_eq!(d.upgrade.map(|u| u.key), Some("pro".to_string()));
    // Enforced report beyond the limit is refused atomically; a replay returns the original.
    let over = RecordUsageRequest {
        tenant_id: "u1".into(),
        feature: "review_packs".into(),
        value: 1,
        mode: UsageMode::Delta as i32,
        idempotency_key: "k-over".into(),
        enforce: true,
    };
    let r = h.data.record_usage(over.clone()).await.expect("record").into_inner();
    assert!(!r.applied && !r.duplicate);
    assert_eq!(r.reason(), Reason::LimitExceeded);
    let again = h.data.record_usage(over).await.expect("record").into_inner();
    assert!(again.duplicate && !again.applied);
    assert_eq!(again.used, 5);
    h.running.stop().await.expect("stop");
}

/// Issue 12's defect: an `Explain` preview of next month wrote next month's usage (0) into the
/// cache the hot path reads, and today's `Check` and `Usage` answered with it.
#[tokio::test]
async fn a_preview_never_changes_todays_answers() {
    let mut h = start().await;
    for i in 0..3 {
        let r = RecordUsageRequest {
            tenant_id: "p1".into(),
            feature: "review_packs".into(),
            value: 1,
            mode: UsageMode::Delta as i32,
            idempotency_key: format!("k{i}"),
            enforce: false,
        };
        h.data.record_usage(r).await.expect("record");
    }
    assert_eq!(h.check("p1", "review_packs").await.used, Some(3));
    let preview = ExplainRequest { tenant_id: "p1".into(), at: ts(now() + 40 * 86_400), ..Default::default() };
    h.data.explain(preview).await.expect("explain next month");
    assert_eq!(h.check("p1", "review_packs").await.used, Some(3), "today's Check is unchanged");
    let usage = UsageRequest { tenant_id: "p1".into(), features: vec!["review_packs".into()] };
    let lines = h.data.usage(usage).await.expect("usage").into_inner().usage;
    assert_eq!(lines.first().map(|u| u.used), Some(3), "today's Usage is unchanged");
    h.running.stop().await.expect("stop");
}

#[tokio::test]
async fn bad_input_is_invalid_argument_and_changes_nothing() {
    let mut h = start().await;
    let grant = GrantAddOnRequest {
        tenant_id: "t1".into(),
        actor: "a".into(),
        rationale: "r".into(),
        addon: "teams".into(),
        ..Default::default()
    };
    h.admin.grant_add_on(authed(grant)).await.expect("grant");
    let record = RecordUsageRequest {
        tenant_id: "t1".into(),
        feature: "review_packs".into(),
        value: 2,
        mode: UsageMode::Delta as i32,
        idempotency_key: "first".into(),
        enforce: false,
    };
    h.data.record_usage(record.clone()).await.expect("record");
    let rev = h.revision("t1").await;
    let audit = h.audit_len("t1").await;

    let expect_invalid = |res: Result<tonic::Status, ()>, field: &str| {
        let status = res.expect("an error status");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "message {:?} should name {field}", status.message());
    };
    for bad in ["", &"x".repeat(129), "a b", "naïve", "semi;colon"] {
        let req = CheckRequest { tenant_id: bad.into(), feature: "seats".into(), ..Default::default() };
        expect_invalid(h.data.check(req).await.map(|_| ()).err().ok_or(()), "tenant_id");
    }
    let neg =
        CheckRequest { tenant_id: "t1".into(), feature: "seats".into(), quantity: Some(-1), ..Default::default() };
    expect_invalid(h.data.check(neg).await.err().ok_or(()), "quantity");
    let set_counter = RecordUsageRequest { mode: UsageMode::Set as i32, idempotency_key: "s".into(), ..record.clone() };
    expect_invalid(h.data.record_usage(set_counter).await.err().ok_or(()), "mode");
    let no_key = RecordUsageRequest { idempotency_key: String::new(), ..record.clone() };
    expect_invalid(h.data.record_usage(no_key).await.err().ok_or(()), "idempotency_key");
    let overflow = RecordUsageRequest { value: i64::MAX, idempotency_key: "huge".into(), ..record.clone() };
    expect_invalid(h.data.record_usage(overflow).await.err().ok_or(()), "value");
    let no_rationale = SetOverrideRequest {
        tenant_id: "t1".into(),
        actor: "a".into(),
        feature: "seats".into(),
        value: Some(set_override_request::Value::Number(50)),
        ..Default::default()
    };
    expect_invalid(h.admin.set_override(authed(no_rationale)).await.err().ok_or(()), "rationale");
    let wrong_kind = SetOverrideRequest {
        tenant_id: "t1".into(),
        actor: "a".into(),
        rationale: "r".into(),
        feature: "seats".into(),
        value: Some(set_override_request::Value::Enabled(true)),
        ..Default::default()
    };
    expect_invalid(h.admin.set_override(authed(wrong_kind)).await.err().ok_or(()), "value");
    let bad_plan = AssignPlanRequest {
        tenant_id: "t1".into(),
        actor: "a".into(),
        rationale: "r".into(),
        plan: "platinum".into(),
        ..Default::default()
    };
    expect_invalid(h.admin.assign_plan(authed(bad_plan)).await.err().ok_or(()), "plan");
    let bad_addon = GrantAddOnRequest {
        tenant_id: "t1".into(),
        actor: "a".into(),
        rationale: "r".into(),
        addon: "sso_pack".into(),
        ..Default::default()
    };
    expect_invalid(h.admin.grant_add_on(authed(bad_addon)).await.err().ok_or(()), "addon");
    let unknown_feature_usage = RecordUsageRequest { feature: "nope".into(), ..record.clone() };
    expect_invalid(h.data.record_usage(unknown_feature_usage).await.err().ok_or(()), "feature");

    assert_eq!(h.revision("t1").await, rev, "nothing changed");
    assert_eq!(h.audit_len("t1").await, audit, "nothing audited");
    let usage = h
        .data
        .usage(UsageRequest { tenant_id: "t1".into(), features: vec!["review_packs".into()] })
        .await
        .expect("usage");
    assert_eq!(usage.into_inner().usage[0].used, 2, "usage unchanged");
    // An unknown feature in Check is data, not an error.
    let d = h.check("t1", "no_such_feature").await;
    assert!(!d.allowed);
    assert_eq!(d.reason(), Reason::UnknownFeature);
    h.running.stop().await.expect("stop");
}

#[tokio::test]
async fn admin_plane_requires_the_token() {
    let mut h = start().await;
    let req = || GetTenantRequest { tenant_id: "t1".into() };
    let status = h.admin.get_tenant(req()).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let wrong = with_token("nope", req());
    assert_eq!(h.admin.get_tenant(wrong).await.expect_err("wrong token").code(), Code::Unauthenticated);
    let mut basic = Request::new(req());
    basic.metadata_mut().insert("authorization", format!("Basic {TOKEN}").parse().expect("header"));
    assert_eq!(h.admin.get_tenant(basic).await.expect_err("wrong scheme").code(), Code::Unauthenticated);
    assert!(h.admin.get_tenant(authed(req())).await.is_ok());
    h.running.stop().await.expect("stop");
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let h = start().await;
    let url = format!("http://{}", h.running.grpc_addr);
    let channel = Channel::from_shared(url).expect("url").connect().await.expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let r = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("health");
    assert_eq!(r.into_inner().status(), tonic_health::pb::health_check_response::ServingStatus::Serving);

    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl.server_reflection_info(tokio_stream::iter(vec![req])).await.expect("reflection").into_inner();
    let msg = stream.message().await.expect("message").expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else { panic!("unexpected {msg:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "entitlements.v1.EntitlementService",
        "entitlements.v1.AdminService",
        "grpc.health.v1.Health",
        "flagd.evaluation.v1.Service",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    // `get` requires an `HTTP/1.1` status line.
    let (status, body) = get(h.running.http_addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    h.running.stop().await.expect("stop");
}

#[test]
fn catalog_check_reports_every_problem_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        "default_plan = \"gold\"\n[features.flag]\nkind = \"boolean\"\n[plans.a]\nrank = 1\nfeatures = { flag = 7, nope = true }\n[plans.b]\nrank = 1\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_entitlements"))
        .args(["catalog", "check"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "1:16: default_plan: unknown plan `gold`",
        "6:21: plans.a.features.flag",
        "6:31: plans.a.features.nope: unknown feature",
        "plans.b.rank: rank 1 is also",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_entitlements"))
        .args(["catalog", "check"])
        .arg(catalog_path())
        .output()
        .expect("run");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}
