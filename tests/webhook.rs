//! The Stripe webhook listener end to end (issue 3, SPEC §7): real HTTP/1.1 POSTs to the running
//! listener, signed the way Stripe signs (`Stripe-Signature: t=…,v1=HMAC-SHA256(secret, "t.body")`),
//! with events built from the shapes in `shared/stripe-fixtures/` (values edited, shapes kept; the
//! builders, the signing and the HTTP client are in `tests/common/`).
//! The effects are read back over real gRPC: `Check`, `Explain`, `AdminService.GetTenant`,
//! `ListStripeEvents`, `ReplayStripeEvent`, and `/metrics` over HTTP.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::http::{get, post};
use common::stripe::*;
use common::*;
use entitlements::config::ServeArgs;
use entitlements::pb::{self, *};
use entitlements::server::{self, Running};
use entitlements::tenant::DAY;
use serde_json::{Value, json};
use tonic::{Code, Request};

const TOKEN: &str = "webhook-test-admin-token";
const SECRET: &str = "whsec_current";
const NEXT_SECRET: &str = "whsec_next";
const RETIRED_SECRET: &str = "whsec_old";
const BODY_LIMIT: usize = 262_144;

// ------------------------------------------------------------------ harness

fn json_body(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {body:?}"))
}

struct Harness {
    running: Running,
    data: DataClient,
    admin: AdminClient,
    http: SocketAddr,
}

fn authed<T>(msg: T) -> Request<T> {
    with_token(TOKEN, msg)
}

impl Harness {
    async fn start(catalog: &Path, db: &Path) -> Harness {
        let args = ServeArgs {
            admin_token: Some(TOKEN.into()),
            stripe_webhook_secrets: vec![SECRET.into(), NEXT_SECRET.into()],
            ..ServeArgs::local(catalog, db.display().to_string())
        };
        let running = server::start(&args).await.expect("server starts");
        let data = data_client(running.grpc_addr).await;
        let admin = admin_client(running.grpc_addr).await;
        let http = running.http_addr;
        Harness { running, data, admin, http }
    }

    /// A server on the example catalog and a fresh SQLite file.
    async fn fresh() -> (Harness, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = Harness::start(&catalog_path(), &dir.path().join("webhook.db")).await;
        (h, dir)
    }

    async fn stop(self) {
        self.running.stop().await.expect("stop");
    }

    /// POST a body signed with the current secret, now.
    async fn deliver_raw(&self, body: &str) -> (u16, Value) {
        let (status, reply) = post_event(self.http, body, SECRET).await;
        (status, json_body(&reply))
    }

    /// Deliver and expect a 2xx; returns the reply (`status`, `revision`, `error`…).
    async fn deliver(&self, body: &str) -> Value {
        let (status, reply) = self.deliver_raw(body).await;
        assert_eq!(status, 200, "webhook reply: {reply}");
        reply
    }

    /// Deliver and expect a 2xx with this outcome.
    async fn deliver_expect(&self, body: &str, outcome: &str) -> Value {
        let reply = self.deliver(body).await;
        assert_eq!(reply["status"], outcome, "webhook reply: {reply}");
        reply
    }

    async fn check_q(&mut self, tenant: &str, feature: &str, quantity: Option<i64>) -> pb::Decision {
        let req = CheckRequest { tenant_id: tenant.into(), feature: feature.into(), quantity, ..Default::default() };
        self.data.check(req).await.expect("check").into_inner().decision.expect("decision")
    }

    async fn check(&mut self, tenant: &str, feature: &str) -> pb::Decision {
        self.check_q(tenant, feature, None).await
    }

    /// With the admin token: these tests read who made each change and why, which the open
    /// data plane blanks (SPEC §4).
    async fn explain_at(&mut self, tenant: &str, at: Option<i64>) -> ExplainResponse {
        let req = ExplainRequest { tenant_id: tenant.into(), features: vec![], at: at.and_then(ts) };
        self.data.explain(authed(req)).await.expect("explain").into_inner()
    }

    async fn explain(&mut self, tenant: &str) -> ExplainResponse {
        self.explain_at(tenant, None).await
    }

    async fn revision(&mut self, tenant: &str) -> u64 {
        let r = self.admin.get_tenant(authed(GetTenantRequest { tenant_id: tenant.into() })).await.expect("get tenant");
        r.into_inner().tenant.map_or(0, |t| t.revision)
    }

    async fn stripe_events(&mut self, tenant: &str, status: &str) -> Vec<pb::StripeEvent> {
        let req = ListStripeEventsRequest { tenant_id: tenant.into(), status: status.into(), page_size: 500 };
        self.admin.list_stripe_events(authed(req)).await.expect("list stripe events").into_inner().events
    }

    async fn stored_event(&mut self, id: &str) -> pb::StripeEvent {
        let all = self.stripe_events("", "").await;
        all.into_iter().find(|e| e.id == id).unwrap_or_else(|| panic!("event {id} is not stored"))
    }

    async fn put_tenant(&mut self, tenant: &str, customer: &str) -> u64 {
        let req = PutTenantRequest {
            tenant_id: tenant.into(),
            actor: "ops".into(),
            rationale: "link the Stripe customer".into(),
            stripe_customer_id: customer.into(),
            ..Default::default()
        };
        self.admin.put_tenant(authed(req)).await.expect("put tenant").into_inner().revision
    }

    /// What must not change: the revision and the full Explain at a fixed time.
    async fn snapshot(&mut self, tenant: &str, at: i64) -> (u64, ExplainResponse) {
        (self.revision(tenant).await, self.explain_at(tenant, Some(at)).await)
    }
}

fn feature<'a>(e: &'a ExplainResponse, key: &str) -> &'a FeatureExplanation {
    e.features.iter().find(|f| f.feature == key).unwrap_or_else(|| panic!("Explain has no feature {key}"))
}

fn plan(e: &ExplainResponse) -> &PlanExplanation {
    e.plan.as_ref().expect("plan explanation")
}

fn lifecycle(e: &ExplainResponse) -> &Lifecycle {
    e.lifecycle.as_ref().expect("lifecycle")
}

fn offer<'a>(e: &'a ExplainResponse, key: &str) -> &'a TrialOffer {
    e.trial_offers
        .iter()
        .find(|o| o.key == key)
        .unwrap_or_else(|| panic!("Explain lists no trial offer {key}: {:?}", e.trial_offers))
}

/// The applied add-on contributions of `addon` to `feature`.
fn applied_addon<'a>(e: &'a ExplainResponse, feature_key: &str, addon: &str) -> Vec<&'a Contribution> {
    feature(e, feature_key)
        .contributions
        .iter()
        .filter(|c| c.kind() == ContributionKind::Addon && c.key == addon && c.applied)
        .collect()
}

fn has_notice(notices: &[Notice], kind: NoticeKind) -> bool {
    notices.iter().any(|n| n.kind() == kind)
}

// ------------------------------------------------------------------ tests

/// A rejected delivery: its name, headers, body and the expected status.
type Case<'a> = (&'a str, Vec<(&'a str, String)>, String, u16);

/// Add-on bought through Checkout (`metadata.addon = teams`): allowed right after the 2xx, with
/// Explain naming the subscription and event; the subscription's deletion takes it away again.
#[tokio::test]
async fn addon_checkout_grants_and_subscription_deletion_revokes() {
    let (mut h, _dir) = Harness::fresh().await;
    let t = "acme-addon";
    // Cache a denial first: the webhook must make every replica forget it.
    let before = h.check(t, "teams_integration").await;
    assert!(!before.allowed);
    assert_eq!(before.reason(), Reason::AddonRequired);

    let created = now() - 100;
    let body = event(
        "evt_checkout_teams",
        "checkout.session.completed",
        created,
        checkout_session("cs_test_teams", "cus_addon", "sub_teams", Some(t), Some("teams")),
    );
    let reply = h.deliver_expect(&body, "applied").await;
    assert_eq!(reply["tenant_id"], t);
    let rev = reply["revision"].as_u64().expect("revision in the reply");

    let d = h.check(t, "teams_integration").await;
    assert!(d.allowed, "teams_integration must be allowed right after the 2xx: {d:?}");
    assert_eq!(d.source(), pb::Source::Addon);
    assert_eq!(d.revision, rev);
    assert!(!h.check(t, "entra_sync").await.allowed, "only the bought add-on");
    assert_eq!(h.check(t, "invoice_designer").await.reason(), Reason::NotInPlan, "an add-on never implies a plan");

    // Explain: which subscription and which event granted it, and when.
    let e = h.explain(t).await;
    let grants = applied_addon(&e, "teams_integration", "teams");
    assert_eq!(grants.len(), 1, "{:?}", feature(&e, "teams_integration").contributions);
    assert!(grants[0].origin.contains("sub_teams"), "origin names the subscription: {:?}", grants[0]);
    assert!(grants[0].rationale.contains("evt_checkout_teams"), "rationale names the event: {:?}", grants[0]);
    assert_eq!(grants[0].granted_at, ts(created), "granted at the event's time");
    assert_eq!(grants[0].actor, "stripe");
    let last = e.last_change.as_ref().expect("last change");
    assert_eq!(last.origin, "evt_checkout_teams");

    // Cancel: the subscription (carrying the teams item) is deleted.
    let deleted = subscription("sub_teams", "cus_addon", Some(t), "canceled", &[("price_teams_monthly", 1)], None);
    h.deliver_expect(&event("evt_teams_deleted", "customer.subscription.deleted", created + 50, deleted), "applied")
        .await;
    let d = h.check(t, "teams_integration").await;
    assert!(!d.allowed, "denied again after the cancellation: {d:?}");
    assert_eq!(d.reason(), Reason::AddonRequired);
    let e = h.explain(t).await;
    assert!(applied_addon(&e, "teams_integration", "teams").is_empty());
    h.stop().await;
}

/// Pro trial → converted → Premium trial on top → trial canceled → payment failed → paid →
/// deleted: plan, phase, notices and trial offers follow every step.
#[tokio::test]
async fn subscription_lifecycle_plan_phase_and_trial_offers() {
    let (mut h, _dir) = Harness::fresh().await;
    let t = "acme-life";
    let c = "cus_life";
    let base = now() - 1000;
    let pro = |status: &str, trial_end: Option<i64>| {
        subscription("sub_pro", c, Some(t), status, &[("price_pro_monthly", 1)], trial_end)
    };

    // 1. A 7-day Pro trial.
    let trial_end = now() + 7 * DAY;
    h.deliver_expect(
        &event("evt_pro_created", "customer.subscription.created", base, pro("trialing", Some(trial_end))),
        "applied",
    )
    .await;
    let e = h.explain(t).await;
    assert!(e.known);
    assert_eq!(plan(&e).key, "pro");
    assert_eq!(plan(&e).source(), PlanSource::Subscription);
    assert!(plan(&e).origin.contains("sub_pro"), "plan origin names the subscription: {}", plan(&e).origin);
    assert!(plan(&e).candidates.iter().any(|c| c.origin.contains("sub_pro") && c.entitles));
    assert_eq!(lifecycle(&e).phase(), Phase::Trialing);
    assert_eq!(lifecycle(&e).trial_days_left, 7);
    assert_eq!(lifecycle(&e).trial_end, ts(trial_end));
    assert!(has_notice(&e.notices, NoticeKind::TrialEnding), "7 days left warns: {:?}", e.notices);
    assert!(
        e.subscriptions
            .iter()
            .any(|s| s.id == "sub_pro" && s.last_event_id == "evt_pro_created" && s.last_event_created == ts(base))
    );
    let o = offer(&e, "premium_trial");
    assert!(!o.open, "no Premium trial during a Pro trial");
    assert!(!o.reason.is_empty(), "a closed offer says why");
    let d = h.check(t, "invoice_designer").await;
    assert!(d.allowed);
    assert_eq!(d.phase(), Phase::Trialing);

    // 2. Converted.
    h.deliver_expect(
        &event("evt_pro_active", "customer.subscription.updated", base + 10, pro("active", None)),
        "applied",
    )
    .await;
    let e = h.explain(t).await;
    assert_eq!(plan(&e).key, "pro");
    assert_eq!(lifecycle(&e).phase(), Phase::Active);
    assert!(e.notices.is_empty(), "{:?}", e.notices);
    let o = offer(&e, "premium_trial");
    assert!(o.open, "a paying Pro customer is offered the Premium trial: {o:?}");
    assert_eq!(o.plan, "premium");
    assert_eq!(o.days, 30);

    // 3. A 30-day Premium trial as a second subscription.
    let premium_end = now() + 30 * DAY;
    let premium = |status: &str| {
        subscription("sub_premium", c, Some(t), status, &[("price_premium_monthly", 1)], Some(premium_end))
    };
    h.deliver_expect(
        &event("evt_premium_created", "customer.subscription.created", base + 20, premium("trialing")),
        "applied",
    )
    .await;
    let e = h.explain(t).await;
    assert_eq!(plan(&e).key, "premium");
    assert!(plan(&e).origin.contains("sub_premium"), "{}", plan(&e).origin);
    assert_eq!(lifecycle(&e).phase(), Phase::Trialing);
    assert_eq!(lifecycle(&e).trial_days_left, 30);
    assert!(!offer(&e, "premium_trial").open, "not offered to a tenant on a Premium trial");
    assert!(!offer(&e, "premium_trial").reason.is_empty());
    assert!(h.check(t, "audit_log").await.allowed, "premium feature during the Premium trial");

    // 4. The Premium trial is canceled: back to Pro.
    h.deliver_expect(
        &event("evt_premium_deleted", "customer.subscription.deleted", base + 30, premium("canceled")),
        "applied",
    )
    .await;
    let e = h.explain(t).await;
    assert_eq!(plan(&e).key, "pro");
    assert!(plan(&e).origin.contains("sub_pro"));
    assert_eq!(lifecycle(&e).phase(), Phase::Active);
    let d = h.check(t, "audit_log").await;
    assert!(!d.allowed);
    assert_eq!(d.reason(), Reason::NotInPlan);

    // 5. A failed payment: past due, a non-dismissible notice, still allowed.
    h.deliver_expect(
        &event("evt_inv_failed", "invoice.payment_failed", base + 40, invoice("in_fail", c, "sub_pro", false)),
        "applied",
    )
    .await;
    let e = h.explain(t).await;
    assert_eq!(plan(&e).key, "pro");
    assert_eq!(lifecycle(&e).phase(), Phase::PastDue);
    let n = e.notices.iter().find(|n| n.kind() == NoticeKind::PaymentPastDue).expect("PAYMENT_PAST_DUE notice");
    assert!(!n.dismissible);
    let d = h.check(t, "invoice_designer").await;
    assert!(d.allowed, "past due keeps access: {d:?}");
    assert_eq!(d.phase(), Phase::PastDue);
    assert!(has_notice(&d.notices, NoticeKind::PaymentPastDue));

    // 6. Paid: active again.
    h.deliver_expect(
        &event("evt_inv_paid", "invoice.paid", base + 45, invoice("in_paid", c, "sub_pro", true)),
        "applied",
    )
    .await;
    let e = h.explain(t).await;
    assert_eq!(lifecycle(&e).phase(), Phase::Active);
    assert!(!has_notice(&e.notices, NoticeKind::PaymentPastDue));

    // 7. Deleted: the default plan.
    h.deliver_expect(
        &event("evt_pro_deleted", "customer.subscription.deleted", base + 50, pro("canceled", None)),
        "applied",
    )
    .await;
    let e = h.explain(t).await;
    assert_eq!(plan(&e).key, "free");
    assert_eq!(plan(&e).source(), PlanSource::Default);
    assert_eq!(lifecycle(&e).phase(), Phase::Active);
    let d = h.check(t, "invoice_designer").await;
    assert!(!d.allowed);
    assert_eq!(d.plan, "free");
    h.stop().await;
}

/// A paying Premium customer is not offered the Premium trial; a Pro customer is, once active.
#[tokio::test]
async fn trial_offers_follow_stripe_state() {
    let (mut h, _dir) = Harness::fresh().await;
    let base = now() - 500;
    // No subscription at all: requires a paid Pro subscription.
    let e = h.explain("nobody").await;
    let o = offer(&e, "premium_trial");
    assert!(!o.open);
    assert!(!o.reason.is_empty());

    let premium =
        subscription("sub_prem_paid", "cus_prem", Some("prem-co"), "active", &[("price_premium_annual", 1)], None);
    h.deliver_expect(&event("evt_prem_paid", "customer.subscription.created", base, premium), "applied").await;
    let e = h.explain("prem-co").await;
    assert_eq!(plan(&e).key, "premium");
    let o = offer(&e, "premium_trial");
    assert!(!o.open, "already on Premium: {o:?}");
    assert!(!o.reason.is_empty());

    let pro_trial = subscription(
        "sub_pro_t",
        "cus_pro_t",
        Some("pro-co"),
        "trialing",
        &[("price_pro_annual", 1)],
        Some(now() + 7 * DAY),
    );
    h.deliver_expect(&event("evt_pro_t1", "customer.subscription.created", base, pro_trial), "applied").await;
    let o = offer(&h.explain("pro-co").await, "premium_trial").clone();
    assert!(!o.open, "trialing Pro: {o:?}");
    assert!(o.reason.contains("trial"), "the reason names the running trial: {o:?}");
    let pro_active = subscription("sub_pro_t", "cus_pro_t", Some("pro-co"), "active", &[("price_pro_annual", 1)], None);
    h.deliver_expect(&event("evt_pro_t2", "customer.subscription.updated", base + 1, pro_active), "applied").await;
    let o = offer(&h.explain("pro-co").await, "premium_trial").clone();
    assert!(o.open, "active Pro: {o:?}");
    assert!(o.reason.is_empty());
    h.stop().await;
}

/// Annual and monthly prices of one plan entitle the same; a seat price's quantity is the seat
/// limit; add-on prices map monthly and annual alike.
#[tokio::test]
async fn prices_map_intervals_and_seats() {
    let (mut h, _dir) = Harness::fresh().await;
    let base = now() - 500;
    let monthly = subscription(
        "sub_m",
        "cus_m",
        Some("monthly-co"),
        "active",
        &[("price_pro_monthly", 1), ("price_teams_monthly", 1)],
        None,
    );
    let annual = subscription(
        "sub_a",
        "cus_a",
        Some("annual-co"),
        "active",
        &[("price_pro_annual", 1), ("price_teams_annual", 1)],
        None,
    );
    h.deliver_expect(&event("evt_m", "customer.subscription.created", base, monthly), "applied").await;
    h.deliver_expect(&event("evt_a", "customer.subscription.created", base, annual), "applied").await;
    let at = now();
    let m = h.explain_at("monthly-co", Some(at)).await;
    let a = h.explain_at("annual-co", Some(at)).await;
    assert_eq!(plan(&m).key, "pro");
    assert_eq!(plan(&a).key, "pro");
    let view = |e: &ExplainResponse| {
        e.features
            .iter()
            .map(|f| {
                let d = f.decision.as_ref().expect("decision");
                (f.feature.clone(), f.effective, d.allowed, d.reason, d.limit)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(view(&m), view(&a), "monthly and annual Pro (+ Teams) give the same entitlements");
    assert!(
        feature(&a, "teams_integration").effective == Some(pb::Value { value: Some(pb::value::Value::Enabled(true)) })
    );
    let interval = |e: &ExplainResponse| e.subscriptions.iter().map(|s| s.interval.clone()).collect::<Vec<_>>();
    assert_eq!(interval(&m), vec!["month".to_string()]);
    assert_eq!(interval(&a), vec!["year".to_string()]);

    // Per-seat Pro with 12 seats.
    let seats =
        subscription("sub_seats", "cus_seats", Some("seats-co"), "active", &[("price_pro_seat_monthly", 12)], None);
    h.deliver_expect(&event("evt_seats", "customer.subscription.created", base, seats), "applied").await;
    let d = h.check_q("seats-co", "seats", Some(12)).await;
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.limit, Some(12));
    assert_eq!(d.plan, "pro");
    let d = h.check_q("seats-co", "seats", Some(13)).await;
    assert!(!d.allowed);
    assert_eq!(d.reason(), Reason::LimitExceeded);
    assert_eq!(d.limit, Some(12));
    let e = h.explain("seats-co").await;
    let seat = feature(&e, "seats")
        .contributions
        .iter()
        .find(|c| c.kind() == ContributionKind::Seats)
        .expect("seats contribution");
    assert!(seat.origin.contains("sub_seats"), "{seat:?}");
    assert!(seat.applied);

    // Base price plus a seat component with quantity 12.
    let both = subscription(
        "sub_base_seats",
        "cus_bs",
        Some("base-seats-co"),
        "active",
        &[("price_pro_monthly", 1), ("price_pro_seat_monthly", 12)],
        None,
    );
    h.deliver_expect(&event("evt_base_seats", "customer.subscription.created", base, both), "applied").await;
    let d = h.check_q("base-seats-co", "seats", Some(12)).await;
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.limit, Some(12));
    h.stop().await;
}

/// An unknown price grants nothing: the stored event is `failed` with an error naming the price,
/// and both webhook metrics count it.
#[tokio::test]
async fn unknown_price_grants_nothing_and_is_visible() {
    let (mut h, _dir) = Harness::fresh().await;
    let t = "mystery-co";
    h.put_tenant(t, "cus_mystery").await;
    let at = now();
    let (rev, before) = h.snapshot(t, at).await;

    let s = subscription("sub_mystery", "cus_mystery", Some(t), "active", &[("price_does_not_exist", 1)], None);
    let reply =
        h.deliver_expect(&event("evt_unknown_price", "customer.subscription.created", now() - 10, s), "failed").await;
    assert!(reply["error"].as_str().is_some_and(|e| e.contains("price_does_not_exist")), "{reply}");
    // A known plan price beside an unknown add-on price: no silent partial grant either.
    let mixed = subscription(
        "sub_mixed",
        "cus_mystery",
        Some(t),
        "active",
        &[("price_premium_monthly", 1), ("price_mystery_addon", 2)],
        None,
    );
    let reply =
        h.deliver_expect(&event("evt_mixed_price", "customer.subscription.created", now() - 10, mixed), "failed").await;
    assert!(reply["error"].as_str().is_some_and(|e| e.contains("price_mystery_addon")), "{reply}");

    assert_eq!(h.snapshot(t, at).await, (rev, before.clone()), "nothing granted, nothing changed");
    let d = h.check(t, "invoice_designer").await;
    assert!(!d.allowed);
    assert_eq!(d.plan, "free");

    // A checkout naming an add-on the catalog does not know.
    let cs = checkout_session("cs_unknown_addon", "cus_mystery", "sub_mystery_cs", Some(t), Some("teamz"));
    let reply =
        h.deliver_expect(&event("evt_unknown_addon", "checkout.session.completed", now() - 10, cs), "failed").await;
    assert!(reply["error"].as_str().is_some_and(|e| e.contains("teamz")), "{reply}");
    assert_eq!(h.snapshot(t, at).await, (rev, before), "an unknown add-on key grants nothing");

    let failed = h.stripe_events("", "failed").await;
    let ev = failed.iter().find(|e| e.id == "evt_unknown_price").expect("stored as failed");
    assert_eq!(ev.status, "failed");
    assert!(ev.error.contains("price_does_not_exist"), "{ev:?}");
    assert_eq!(ev.event_type, "customer.subscription.created");
    assert!(failed.iter().any(|e| e.id == "evt_mixed_price" && e.error.contains("price_mystery_addon")));

    let (status, metrics) = get(h.http, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("entitlements_webhook_mapping_errors_total"), "{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("entitlements_webhook_events_total{") && l.contains("outcome=\"failed\"")),
        "{metrics}"
    );
    h.stop().await;
}

/// The grant recorded from a checkout session and the one from the subscription's own events are
/// one grant, in either order; the subscription's deletion ends it.
#[tokio::test]
async fn checkout_and_subscription_grants_converge_in_either_order() {
    let (mut h, _dir) = Harness::fresh().await;
    let base = now() - 500;
    for (order, t) in [("checkout-first", "conv-a"), ("subscription-first", "conv-b")] {
        let sub_id = format!("sub_{t}");
        let customer = format!("cus_{t}");
        let cs = event(
            &format!("evt_cs_{t}"),
            "checkout.session.completed",
            base,
            checkout_session(&format!("cs_{t}"), &customer, &sub_id, Some(t), Some("teams")),
        );
        let items = [("price_pro_monthly", 1), ("price_teams_monthly", 1)];
        let created = event(
            &format!("evt_created_{t}"),
            "customer.subscription.created",
            base,
            subscription(&sub_id, &customer, Some(t), "active", &items, None),
        );
        let bodies = if order == "checkout-first" { [&cs, &created] } else { [&created, &cs] };
        for b in bodies {
            h.deliver_expect(b, "applied").await;
        }
        let e = h.explain(t).await;
        let grants = applied_addon(&e, "teams_integration", "teams");
        assert_eq!(
            grants.len(),
            1,
            "{order}: one applied teams contribution, got {:?}",
            feature(&e, "teams_integration").contributions
        );
        assert_eq!(grants[0].quantity, 1, "{order}: quantity not double-counted");
        assert!(grants[0].origin.contains(&sub_id), "{order}: {:?}", grants[0]);
        assert!(h.check(t, "teams_integration").await.allowed, "{order}");
        assert_eq!(plan(&e).key, "pro");

        // Redelivering the checkout under a new event id still does not stack.
        let again = event(
            &format!("evt_cs2_{t}"),
            "checkout.session.completed",
            base + 1,
            checkout_session(&format!("cs_{t}"), &customer, &sub_id, Some(t), Some("teams")),
        );
        h.deliver(&again).await;
        let e = h.explain(t).await;
        assert_eq!(applied_addon(&e, "teams_integration", "teams").len(), 1, "{order}: after a second checkout event");

        let deleted = event(
            &format!("evt_deleted_{t}"),
            "customer.subscription.deleted",
            base + 60,
            subscription(&sub_id, &customer, Some(t), "canceled", &items, None),
        );
        h.deliver_expect(&deleted, "applied").await;
        let e = h.explain(t).await;
        assert!(applied_addon(&e, "teams_integration", "teams").is_empty(), "{order}: cancellation ends the grant");
        assert!(!h.check(t, "teams_integration").await.allowed, "{order}");
        assert_eq!(plan(&e).key, "free");
    }
    h.stop().await;
}

/// Same event id twice: acknowledged as a duplicate, nothing changes. Stripe's ordering is not
/// guaranteed: `created` arriving after `updated`, and an older `updated` after a newer one, are
/// stale and change nothing.
#[tokio::test]
async fn duplicate_and_reordered_deliveries_change_nothing() {
    let (mut h, _dir) = Harness::fresh().await;
    let base = now() - 500;
    let t = "order-co";
    let c = "cus_order";
    let at = now();
    let sub = |status: &str, price: &str| subscription("sub_order", c, Some(t), status, &[(price, 1)], None);

    // Reordered: `updated` (newer, active premium) arrives before `created` (older, trialing pro).
    let updated = event("evt_upd", "customer.subscription.updated", base + 10, sub("active", "price_premium_monthly"));
    let r = h.deliver_expect(&updated, "applied").await;
    let rev = r["revision"].as_u64().expect("revision");
    let snap = h.snapshot(t, at).await;
    assert_eq!(snap.0, rev);
    assert_eq!(plan(&snap.1).key, "premium");

    // Duplicate delivery of the very same event (a fresh signature, as Stripe retries).
    let dup = h.deliver_expect(&updated, "duplicate").await;
    assert_eq!(dup["id"], "evt_upd");
    assert_eq!(h.snapshot(t, at).await, snap, "a duplicate changes nothing");

    let trialing =
        subscription("sub_order", c, Some(t), "trialing", &[("price_pro_monthly", 1)], Some(now() + 7 * DAY));
    let created = event("evt_created", "customer.subscription.created", base, trialing);
    let r = h.deliver_expect(&created, "stale").await;
    assert_eq!(r["tenant_id"], t);
    assert_eq!(h.snapshot(t, at).await, snap, "an older `created` does not undo the newer `updated`");

    // An older `updated` after the newer one.
    let older = event("evt_upd_older", "customer.subscription.updated", base + 5, sub("past_due", "price_pro_monthly"));
    h.deliver_expect(&older, "stale").await;
    assert_eq!(h.snapshot(t, at).await, snap, "an older `updated` does not undo a newer one");

    // Same second, status moving backwards (active → trialing): stale by the documented rule.
    let same_second =
        subscription("sub_order", c, Some(t), "trialing", &[("price_pro_monthly", 1)], Some(now() + 7 * DAY));
    h.deliver_expect(&event("evt_same_second", "customer.subscription.updated", base + 10, same_second), "stale").await;
    assert_eq!(h.snapshot(t, at).await, snap, "at equal `created`, a status never moves backwards");

    let stored = h.stripe_events(t, "stale").await;
    for id in ["evt_created", "evt_upd_older", "evt_same_second"] {
        assert!(stored.iter().any(|e| e.id == id), "{id} stored as stale: {stored:?}");
    }

    // A newer event still applies.
    h.deliver_expect(
        &event("evt_upd_newer", "customer.subscription.updated", base + 20, sub("canceled", "price_premium_monthly")),
        "applied",
    )
    .await;
    assert_eq!(plan(&h.explain(t).await).key, "free");
    assert!(h.revision(t).await > rev);
    h.stop().await;
}

/// Every malformed or unauthenticated delivery gets its status and leaves the state exactly as it
/// was; the stored event list does not grow. Afterwards the same event, delivered properly,
/// applies (so none of the rejected deliveries was recorded, not even as a duplicate).
#[tokio::test]
async fn rejected_deliveries_leave_state_untouched() {
    let (mut h, _dir) = Harness::fresh().await;
    let base = now() - 500;
    let t = "guarded-co";
    let c = "cus_guarded";
    let active = subscription(
        "sub_guarded",
        c,
        Some(t),
        "active",
        &[("price_pro_monthly", 1), ("price_teams_monthly", 1)],
        None,
    );
    h.deliver_expect(&event("evt_guarded_created", "customer.subscription.created", base, active), "applied").await;
    let at = now();
    let snap = h.snapshot(t, at).await;
    assert_eq!(plan(&snap.1).key, "pro");
    let stored_before = h.stripe_events("", "").await.len();

    // The event every rejected delivery carries: it would cancel the subscription.
    let canceled = subscription(
        "sub_guarded",
        c,
        Some(t),
        "canceled",
        &[("price_pro_monthly", 1), ("price_teams_monthly", 1)],
        None,
    );
    let body = event("evt_guarded_canceled", "customer.subscription.deleted", base + 100, canceled.clone());
    let n = now();
    let good = sign(SECRET, n, &body);
    let tampered = {
        // Flip one hex digit of the v1 signature.
        let (head, sig) = good.split_once("v1=").expect("v1");
        let mut chars: Vec<char> = sig.chars().collect();
        chars[0] = if chars[0] == '0' { '1' } else { '0' };
        format!("{head}v1={}", chars.into_iter().collect::<String>())
    };
    let truncated = &body[..body.len() / 2];
    let mut big = canceled.clone();
    big["metadata"]["padding"] = json!("x".repeat(BODY_LIMIT + 1024));
    let oversized = event("evt_guarded_canceled", "customer.subscription.deleted", base + 100, big);
    assert!(oversized.len() > BODY_LIMIT);
    let mut live = serde_json::from_str::<Value>(&body).expect("json");
    live["livemode"] = json!(true);
    let live = serde_json::to_string(&live).expect("json");

    let cases: Vec<Case> = vec![
        ("bad signature", vec![("Stripe-Signature", tampered)], body.clone(), 400),
        ("signed for another body", vec![("Stripe-Signature", sign(SECRET, n, "{}"))], body.clone(), 400),
        ("retired secret", vec![("Stripe-Signature", sign(RETIRED_SECRET, n, &body))], body.clone(), 400),
        ("timestamp 10 minutes old", vec![("Stripe-Signature", sign(SECRET, n - 600, &body))], body.clone(), 400),
        ("timestamp just outside 300 s", vec![("Stripe-Signature", sign(SECRET, n - 320, &body))], body.clone(), 400),
        ("timestamp 10 minutes ahead", vec![("Stripe-Signature", sign(SECRET, n + 600, &body))], body.clone(), 400),
        ("missing header", vec![], body.clone(), 400),
        ("empty header", vec![("Stripe-Signature", String::new())], body.clone(), 400),
        ("garbage header", vec![("Stripe-Signature", "not-a-signature".into())], body.clone(), 400),
        ("truncated JSON, signed", vec![("Stripe-Signature", sign(SECRET, n, truncated))], truncated.to_string(), 400),
        (
            "livemode event on a test-mode endpoint",
            vec![("Stripe-Signature", sign(SECRET, n, &live))],
            live.clone(),
            400,
        ),
        ("body over the size limit", vec![("Stripe-Signature", sign(SECRET, n, &oversized))], oversized.clone(), 413),
    ];
    for (name, headers, payload, expected) in &cases {
        let (status, reply) = post(h.http, "/webhooks/stripe", headers, payload.as_bytes()).await;
        assert_eq!(status, *expected, "{name}: {reply}");
        assert_eq!(h.snapshot(t, at).await, snap, "{name}: state changed");
        assert_eq!(h.stripe_events("", "").await.len(), stored_before, "{name}: something was stored");
    }
    assert!(h.check(t, "teams_integration").await.allowed);

    // A signature by the next secret of a rotation is accepted, also several v1 signatures in one
    // header (Stripe signs with each of the endpoint's secrets) and a timestamp inside tolerance.
    let t_ok = now() - 250;
    let stripe_rolled = format!(
        "{},v1={}",
        sign(RETIRED_SECRET, t_ok, &body),
        sign(NEXT_SECRET, t_ok, &body).split_once("v1=").expect("v1").1
    );
    let (status, reply) =
        post(h.http, "/webhooks/stripe", &[("Stripe-Signature", stripe_rolled)], body.as_bytes()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(json_body(&reply)["status"], "applied", "{reply}");
    assert_eq!(plan(&h.explain(t).await).key, "free");
    assert!(!h.check(t, "teams_integration").await.allowed);
    h.stop().await;
}

/// An event for a customer no tenant claims is stored (`pending_tenant`) and applied once
/// `PutTenant` gives a tenant that Stripe customer id.
#[tokio::test]
async fn event_for_unknown_customer_waits_for_its_tenant() {
    let (mut h, _dir) = Harness::fresh().await;
    let t = "late-co";
    let s = subscription(
        "sub_late",
        "cus_late",
        None,
        "active",
        &[("price_premium_monthly", 1), ("price_ai_assistant_monthly", 1)],
        None,
    );
    let r =
        h.deliver_expect(&event("evt_late", "customer.subscription.created", now() - 100, s), "pending_tenant").await;
    assert!(r["revision"].is_null(), "{r}");
    let pending = h.stripe_events("", "pending_tenant").await;
    let ev = pending.iter().find(|e| e.id == "evt_late").expect("stored as pending");
    assert_eq!(ev.customer_id, "cus_late");
    let d = h.check(t, "audit_log").await;
    assert!(!d.allowed);
    assert_eq!(d.plan, "free");

    h.put_tenant(t, "cus_late").await;
    let d = h.check(t, "audit_log").await;
    assert!(d.allowed, "applied once the tenant claims the customer: {d:?}");
    assert_eq!(d.plan, "premium");
    assert!(h.check(t, "ai_assistant").await.allowed);
    let ev = h.stored_event("evt_late").await;
    assert_eq!(ev.status, "applied");
    assert_eq!(ev.tenant_id, t);
    let e = h.explain(t).await;
    assert!(plan(&e).origin.contains("sub_late"));
    h.stop().await;
}

/// The store cannot commit (another connection holds SQLite's write lock past the busy timeout):
/// the webhook answers 5xx and records nothing; once the lock is gone, the same delivery applies.
#[tokio::test]
async fn store_unavailable_answers_5xx_and_the_retry_applies() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("locked.db");
    let mut h = Harness::start(&catalog_path(), &db).await;
    let t = "locked-co";
    let c = "cus_locked";
    let base = now() - 500;
    h.deliver_expect(
        &event(
            "evt_locked_1",
            "customer.subscription.created",
            base,
            subscription("sub_locked", c, Some(t), "active", &[("price_pro_monthly", 1)], None),
        ),
        "applied",
    )
    .await;
    let at = now();
    let snap = h.snapshot(t, at).await;

    let body = event(
        "evt_locked_2",
        "customer.subscription.updated",
        base + 10,
        subscription(
            "sub_locked",
            c,
            Some(t),
            "active",
            &[("price_premium_monthly", 1), ("price_teams_monthly", 1)],
            None,
        ),
    );
    let mut blocker =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.expect("second connection");
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut blocker).await.expect("take the write lock");
    let (status, reply) = h.deliver_raw(&body).await;
    assert!((500..600).contains(&status), "a write that cannot commit must answer 5xx, got {status}: {reply}");
    assert_eq!(status, 503, "{reply}");
    sqlx::query("ROLLBACK").execute(&mut blocker).await.expect("release the lock");
    blocker.close().await.expect("close");

    assert_eq!(h.snapshot(t, at).await, snap, "nothing half-applied");
    assert!(
        h.stripe_events("", "").await.iter().all(|e| e.id != "evt_locked_2"),
        "the failed delivery is not recorded"
    );
    // Stripe retries the same delivery (a fresh signature): it applies, nothing was lost.
    h.deliver_expect(&body, "applied").await;
    let e = h.explain(t).await;
    assert_eq!(plan(&e).key, "premium");
    assert_eq!(e.revision, snap.0 + 1);
    assert!(h.check(t, "teams_integration").await.allowed);
    assert!(h.check(t, "audit_log").await.allowed);
    h.stop().await;
}

/// A price the catalog lacks fails; after the catalog is fixed, an operator replays the stored
/// event (audited, with actor and rationale) and the entitlement is granted.
#[tokio::test]
async fn replay_after_catalog_fix_grants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("replay.db");
    let full = std::fs::read_to_string(catalog_path()).expect("read catalog");
    let block = "[[prices]]\nid = \"${STRIPE_AI_ASSISTANT_MONTHLY_PRICE_ID:-price_ai_assistant_monthly}\"\naddon = \"ai_assistant\"\ninterval = \"month\"\n";
    assert!(full.contains(block), "examples/catalog.toml changed: update this test's price block");
    let broken = dir.path().join("catalog-missing-price.toml");
    std::fs::write(&broken, full.replace(block, "")).expect("write catalog");

    let t = "replay-co";
    let s = subscription("sub_ai", "cus_ai", Some(t), "active", &[("price_ai_assistant_monthly", 1)], None);
    let body = event("evt_ai", "customer.subscription.created", now() - 100, s);
    let mut h = Harness::start(&broken, &db).await;
    let r = h.deliver_expect(&body, "failed").await;
    assert!(r["error"].as_str().is_some_and(|e| e.contains("price_ai_assistant_monthly")), "{r}");
    assert!(!h.check(t, "ai_assistant").await.allowed);
    h.stop().await;

    let mut h = Harness::start(&catalog_path(), &db).await;
    let ev = h.stored_event("evt_ai").await;
    assert_eq!(ev.status, "failed");
    assert!(ev.error.contains("price_ai_assistant_monthly"));
    assert!(!h.check(t, "ai_assistant").await.allowed);
    // Redelivery is a duplicate: replay is the operator's tool.
    h.deliver_expect(&body, "duplicate").await;

    let missing = ReplayStripeEventRequest { event_id: "evt_ai".into(), actor: "ops".into(), rationale: String::new() };
    let err = h.admin.replay_stripe_event(authed(missing)).await.expect_err("rationale is required");
    assert_eq!(err.code(), Code::InvalidArgument);
    let unauthenticated = h
        .admin
        .replay_stripe_event(ReplayStripeEventRequest {
            event_id: "evt_ai".into(),
            actor: "ops".into(),
            rationale: "x".into(),
        })
        .await;
    assert_eq!(unauthenticated.expect_err("token required").code(), Code::Unauthenticated);

    let req = ReplayStripeEventRequest {
        event_id: "evt_ai".into(),
        actor: "ops-alice".into(),
        rationale: "added the AI assistant monthly price".into(),
    };
    let r = h.admin.replay_stripe_event(authed(req)).await.expect("replay").into_inner();
    let ev = r.event.expect("event");
    assert_eq!(ev.status, "applied", "{ev:?}");
    assert!(r.revision > 0);
    let d = h.check(t, "ai_assistant").await;
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.revision, r.revision);
    let e = h.explain(t).await;
    let grants = applied_addon(&e, "ai_assistant", "ai_assistant");
    assert_eq!(grants.len(), 1);
    assert!(grants[0].origin.contains("sub_ai"));
    let last = e.last_change.as_ref().expect("last change");
    assert_eq!(last.actor, "ops-alice");
    assert_eq!(last.origin, "evt_ai");

    // An applied event is not replayed again.
    let again = ReplayStripeEventRequest { event_id: "evt_ai".into(), actor: "ops".into(), rationale: "again".into() };
    assert_eq!(
        h.admin.replay_stripe_event(authed(again)).await.expect_err("already applied").code(),
        Code::InvalidArgument
    );
    h.stop().await;
}

/// Stripe retries concurrently with itself: the same event delivered at once several times is
/// applied exactly once; different events for one tenant all land (no lost update).
#[tokio::test]
async fn concurrent_deliveries_apply_once() {
    let (mut h, _dir) = Harness::fresh().await;
    let t = "race-co";
    let base = now() - 500;
    let body = event(
        "evt_race",
        "customer.subscription.created",
        base,
        subscription("sub_race", "cus_race", Some(t), "active", &[("price_pro_monthly", 1)], None),
    );
    let replies = futures_join(&h, vec![body.clone(); 6]).await;
    let applied = replies.iter().filter(|r| r["status"] == "applied").count();
    let duplicates = replies.iter().filter(|r| r["status"] == "duplicate").count();
    assert_eq!((applied, duplicates), (1, 5), "{replies:?}");
    assert_eq!(h.revision(t).await, 1);

    // Three add-on subscriptions for the same tenant at once: all three grants are there.
    let bodies: Vec<String> = ["price_teams_monthly", "price_enterprise_addon_monthly", "price_ai_assistant_annual"]
        .iter()
        .enumerate()
        .map(|(i, price)| {
            event(
                &format!("evt_race_{i}"),
                "customer.subscription.created",
                base,
                subscription(&format!("sub_race_{i}"), "cus_race", Some(t), "active", &[(price, 1)], None),
            )
        })
        .collect();
    let replies = futures_join(&h, bodies).await;
    assert!(replies.iter().all(|r| r["status"] == "applied"), "{replies:?}");
    assert_eq!(h.revision(t).await, 4);
    for f in ["teams_integration", "entra_sync", "ai_assistant", "invoice_designer"] {
        assert!(h.check(t, f).await.allowed, "{f}");
    }
    h.stop().await;
}

async fn futures_join(h: &Harness, bodies: Vec<String>) -> Vec<Value> {
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|b| {
            let addr = h.http;
            tokio::spawn(async move {
                let (status, reply) = post_event(addr, &b, SECRET).await;
                assert_eq!(status, 200, "{reply}");
                json_body(&reply)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("delivery task"));
    }
    out
}

/// `trial_will_end`, `paused`, `resumed`, `past_due` via `updated`, and `cancel_at_period_end`.
#[tokio::test]
async fn other_subscription_events() {
    let (mut h, _dir) = Harness::fresh().await;
    let t = "misc-co";
    let c = "cus_misc";
    let base = now() - 500;
    let sub = |status: &str, trial_end: Option<i64>| {
        subscription("sub_misc", c, Some(t), status, &[("price_premium_monthly", 1)], trial_end)
    };

    let end = now() + 3 * DAY;
    h.deliver_expect(
        &event("evt_misc_1", "customer.subscription.trial_will_end", base, sub("trialing", Some(end))),
        "applied",
    )
    .await;
    let e = h.explain(t).await;
    assert_eq!(plan(&e).key, "premium");
    assert_eq!(lifecycle(&e).phase(), Phase::Trialing);
    assert_eq!(lifecycle(&e).trial_days_left, 3);
    let n = e.notices.iter().find(|n| n.kind() == NoticeKind::TrialEnding).expect("TRIAL_ENDING");
    assert_eq!(n.days_left, 3);

    h.deliver_expect(
        &event("evt_misc_2", "customer.subscription.updated", base + 10, sub("past_due", None)),
        "applied",
    )
    .await;
    let d = h.check(t, "audit_log").await;
    assert!(d.allowed);
    assert_eq!(d.phase(), Phase::PastDue);
    assert!(has_notice(&d.notices, NoticeKind::PaymentPastDue));

    h.deliver_expect(&event("evt_misc_3", "customer.subscription.paused", base + 20, sub("paused", None)), "applied")
        .await;
    let d = h.check(t, "audit_log").await;
    assert!(!d.allowed, "a paused subscription does not entitle: {d:?}");
    assert_eq!(d.plan, "free");
    let e = h.explain(t).await;
    let cand = plan(&e).candidates.iter().find(|c| c.origin.contains("sub_misc")).expect("candidate");
    assert!(!cand.entitles);
    assert!(cand.note.contains("paused"), "{cand:?}");

    h.deliver_expect(&event("evt_misc_4", "customer.subscription.resumed", base + 30, sub("active", None)), "applied")
        .await;
    assert!(h.check(t, "audit_log").await.allowed);

    let mut canceling = sub("active", None);
    canceling["cancel_at_period_end"] = json!(true);
    h.deliver_expect(&event("evt_misc_5", "customer.subscription.updated", base + 40, canceling), "applied").await;
    let e = h.explain(t).await;
    assert_eq!(plan(&e).key, "premium", "cancel_at_period_end entitles until the period ends");
    assert!(e.subscriptions.iter().any(|s| s.id == "sub_misc" && s.cancel_at_period_end));
    let cand = plan(&e).candidates.iter().find(|c| c.origin.contains("sub_misc")).expect("candidate");
    assert!(cand.entitles);
    assert!(!cand.note.is_empty(), "Explain shows the pending cancellation: {cand:?}");

    h.deliver_expect(&event("evt_misc_6", "customer.subscription.updated", base + 50, sub("unpaid", None)), "applied")
        .await;
    assert_eq!(h.check(t, "audit_log").await.plan, "free", "unpaid does not entitle");
    h.stop().await;
}

/// Several events wait for one customer; they apply in `created` order whatever the delivery order.
#[tokio::test]
async fn pending_events_apply_in_order() {
    let (mut h, _dir) = Harness::fresh().await;
    let base = now() - 500;
    let sub = |status: &str| subscription("sub_wait", "cus_wait", None, status, &[("price_pro_monthly", 1)], None);
    // Delivered newest first.
    h.deliver_expect(&event("evt_wait_2", "customer.subscription.updated", base + 10, sub("active")), "pending_tenant")
        .await;
    h.deliver_expect(&event("evt_wait_1", "customer.subscription.created", base, sub("incomplete")), "pending_tenant")
        .await;
    h.put_tenant("wait-co", "cus_wait").await;
    let e = h.explain("wait-co").await;
    assert_eq!(plan(&e).key, "pro");
    let s = e.subscriptions.iter().find(|s| s.id == "sub_wait").expect("subscription");
    assert_eq!(s.status, "active");
    assert_eq!(s.last_event_id, "evt_wait_2");
    for id in ["evt_wait_1", "evt_wait_2"] {
        assert_eq!(h.stored_event(id).await.status, "applied", "{id}");
    }
    h.stop().await;
}

/// A numeric add-on (AI assistant: 1000 `ai_requests` × quantity) bought through Checkout with
/// quantity 3 on the subscription item: the limit is 3000 in either order, never 4000 or 6000.
#[tokio::test]
async fn numeric_addon_quantity_is_not_double_counted() {
    let (mut h, _dir) = Harness::fresh().await;
    let base = now() - 500;
    for (order, t) in [("checkout-first", "ai-a"), ("subscription-first", "ai-b")] {
        let sub_id = format!("sub_{t}");
        let customer = format!("cus_{t}");
        let cs = event(
            &format!("evt_cs_{t}"),
            "checkout.session.completed",
            base,
            checkout_session(&format!("cs_{t}"), &customer, &sub_id, Some(t), Some("ai_assistant")),
        );
        let sub = subscription(&sub_id, &customer, Some(t), "active", &[("price_ai_assistant_monthly", 3)], None);
        let created = event(&format!("evt_created_{t}"), "customer.subscription.created", base, sub);
        let bodies = if order == "checkout-first" { [&cs, &created] } else { [&created, &cs] };
        for b in bodies {
            h.deliver_expect(b, "applied").await;
        }
        let d = h.check(t, "ai_requests").await;
        assert!(d.allowed, "{order}: {d:?}");
        assert_eq!(d.limit, Some(3000), "{order}: quantity 3 × 1000, counted once");
        let e = h.explain(t).await;
        let grants = applied_addon(&e, "ai_requests", "ai_assistant");
        assert_eq!(grants.len(), 1, "{order}: {:?}", feature(&e, "ai_requests").contributions);
        assert_eq!(grants[0].quantity, 3, "{order}");
    }
    h.stop().await;
}

/// A pending event also applies when a later event names the tenant for that customer
/// (`metadata.tenant_id` on a checkout session links the customer).
#[tokio::test]
async fn pending_event_applies_when_a_later_event_links_the_customer() {
    let (mut h, _dir) = Harness::fresh().await;
    let base = now() - 500;
    let t = "linked-co";
    let sub = subscription("sub_link", "cus_link", None, "active", &[("price_premium_monthly", 1)], None);
    h.deliver_expect(&event("evt_link_sub", "customer.subscription.created", base, sub), "pending_tenant").await;
    assert_eq!(h.check(t, "audit_log").await.plan, "free");
    // An add-on bought for the same customer, this time with the tenant named.
    let cs = checkout_session("cs_link", "cus_link", "sub_link_addon", Some(t), Some("teams"));
    h.deliver_expect(&event("evt_link_cs", "checkout.session.completed", base + 10, cs), "applied").await;
    let e = h.explain(t).await;
    assert_eq!(plan(&e).key, "premium", "the waiting subscription event applied once the customer was linked");
    assert_eq!(h.stored_event("evt_link_sub").await.status, "applied");
    assert!(h.check(t, "teams_integration").await.allowed);
    assert!(h.check(t, "audit_log").await.allowed);
    h.stop().await;
}

/// Verified events this service does not act on (a payment-mode checkout) are acknowledged
/// and stored as `ignored`, and change nothing.
#[tokio::test]
async fn ignored_event_changes_nothing() {
    let (mut h, _dir) = Harness::fresh().await;
    let t = "quiet-co";
    h.put_tenant(t, "cus_quiet").await;
    let at = now();
    let snap = h.snapshot(t, at).await;
    let mut cs = checkout_session("cs_payment", "cus_quiet", "sub_none", Some(t), Some("teams"));
    cs["mode"] = json!("payment");
    cs["subscription"] = Value::Null;
    h.deliver_expect(&event("evt_payment_mode", "checkout.session.completed", now() - 10, cs), "ignored").await;
    assert_eq!(h.snapshot(t, at).await, snap);
    assert_eq!(h.stored_event("evt_payment_mode").await.status, "ignored");
    assert!(!h.check(t, "teams_integration").await.allowed);
    h.stop().await;
}

/// SPEC §7: "An event for an unknown customer is stored and applied when the tenant appears — not
/// dropped." That holds for a failed-payment invoice too: the tenant that later claims the
/// customer must end up past due.
#[tokio::test]
async fn invoice_for_unknown_customer_waits_for_its_tenant() {
    let (mut h, _dir) = Harness::fresh().await;
    let base = now() - 500;
    let t = "late-payer";
    let c = "cus_late_payer";
    let sub = subscription("sub_late_payer", c, None, "active", &[("price_pro_monthly", 1)], None);
    h.deliver_expect(&event("evt_lp_sub", "customer.subscription.created", base, sub), "pending_tenant").await;
    let failed = invoice("in_late_payer", c, "sub_late_payer", false);
    let reply = h.deliver(&event("evt_lp_invoice", "invoice.payment_failed", base + 10, failed)).await;
    assert_eq!(
        reply["status"], "pending_tenant",
        "an invoice of an unknown customer must be kept, not ignored: {reply}"
    );
    h.put_tenant(t, c).await;
    let e = h.explain(t).await;
    assert_eq!(plan(&e).key, "pro");
    assert_eq!(lifecycle(&e).phase(), Phase::PastDue, "the failed payment applied after the subscription");
    assert!(has_notice(&e.notices, NoticeKind::PaymentPastDue));
    assert_eq!(h.stored_event("evt_lp_invoice").await.status, "applied");
    h.stop().await;
}
