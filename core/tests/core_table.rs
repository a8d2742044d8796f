//! Table tests of the pure core (SPEC §3): `resolve` + `decide` on the example catalog.
//!
//! Every scenario builds a `TenantState` by hand, resolves it at a fixed instant and checks the
//! decisions, the plan choice, the lifecycle phase and `valid_until`.

use std::sync::{Arc, LazyLock};

use entitlements_core::catalog::{Catalog, Edition, FeatureKind, Interval, Period, Value};
use entitlements_core::decide::{Decision, Intent, Reason, Upgrade, decide};
use entitlements_core::lifecycle::{NoticeKind, Phase};
use entitlements_core::resolve::{PlanSource, ResolvedTenant, Source, resolve};
use entitlements_core::tenant::{
    AddOnGrant, DAY, GrantOrigin, Override, PlanAssignment, Subscription, SubscriptionStatus, TenantState, Trial,
    UnixTime,
};
use entitlements_core::usage::period_at;

/// 2026-01-01T00:00:00Z.
const JAN_1: UnixTime = 1_767_225_600;
/// 2026-02-01T00:00:00Z: the end of the January usage period.
const FEB_1: UnixTime = JAN_1 + 31 * DAY;
/// 2026-03-01T00:00:00Z.
const MAR_1: UnixTime = FEB_1 + 28 * DAY;
/// 2026-01-10T12:00:00Z: "now" for most scenarios.
const NOW: UnixTime = JAN_1 + 9 * DAY + DAY / 2;

static CATALOG: LazyLock<Arc<Catalog>> = LazyLock::new(|| {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/catalog.toml")).unwrap();
    Arc::new(Catalog::from_toml(&src, &|_| None).expect("example catalog is valid"))
});

fn catalog() -> Arc<Catalog> {
    Arc::clone(&CATALOG)
}

fn tenant() -> TenantState {
    TenantState { tenant_id: "acme".into(), known: true, revision: 1, ..Default::default() }
}

fn subscription(id: &str, status: SubscriptionStatus, plan: &str, seats: Option<i64>) -> Subscription {
    Subscription {
        id: id.into(),
        status,
        plan: Some(plan.into()),
        interval: Some(Interval::Month),
        seats,
        trial_end: None,
        current_period_start: Some(NOW - 5 * DAY),
        current_period_end: Some(NOW + 25 * DAY),
        cancel_at_period_end: false,
        last_event_created: NOW - 5 * DAY,
        last_event_id: format!("evt_{id}"),
    }
}

fn assignment(plan: &str, expires_at: Option<UnixTime>) -> PlanAssignment {
    PlanAssignment {
        plan: plan.into(),
        actor: "support@vendor".into(),
        rationale: "contract".into(),
        assigned_at: NOW - DAY,
        expires_at,
    }
}

fn grant(addon: &str, quantity: i64, expires_at: Option<UnixTime>) -> AddOnGrant {
    AddOnGrant {
        addon: addon.into(),
        quantity,
        origin: GrantOrigin::Manual,
        actor: "support@vendor".into(),
        rationale: "courtesy".into(),
        granted_at: NOW - DAY,
        expires_at,
    }
}

fn override_(feature: &str, value: Value, expires_at: Option<UnixTime>) -> Override {
    Override {
        feature: feature.into(),
        value,
        actor: "support@vendor".into(),
        rationale: "ticket 42".into(),
        set_at: NOW - DAY,
        expires_at,
    }
}

fn premium_by_subscription() -> TenantState {
    TenantState {
        subscriptions: vec![subscription("sub_prem", SubscriptionStatus::Active, "premium", None)],
        ..tenant()
    }
}

fn premium_by_assignment() -> TenantState {
    TenantState { plan_assignments: vec![assignment("premium", None)], ..tenant() }
}

fn pro_by_subscription() -> TenantState {
    TenantState { subscriptions: vec![subscription("sub_pro", SubscriptionStatus::Active, "pro", None)], ..tenant() }
}

/// A write check of one unit with nothing used.
fn check(r: &ResolvedTenant, feature: &str) -> Decision {
    decide(r, feature, 1, Intent::Write, 0)
}

#[track_caller]
fn assert_allowed(d: &Decision, reason: Reason) {
    assert!(d.allowed, "expected allowed ({reason:?}), got {d:?}");
    assert_eq!(d.reason, reason, "{d:?}");
    assert_eq!(d.shadow_denial, None, "{d:?}");
}

#[track_caller]
fn assert_denied(d: &Decision, reason: Reason, upgrade: Option<Upgrade>) {
    assert!(!d.allowed, "expected denied ({reason:?}), got {d:?}");
    assert_eq!(d.reason, reason, "{d:?}");
    assert_eq!(d.upgrade, upgrade, "{d:?}");
}

fn plan_hint(p: &str) -> Option<Upgrade> {
    Some(Upgrade::Plan(p.into()))
}

fn addon_hint(a: &str) -> Option<Upgrade> {
    Some(Upgrade::AddOn(a.into()))
}

// ---------------------------------------------------------------- add-ons

#[test]
fn premium_without_addons_is_denied_addon_features() {
    let c = catalog();
    for (name, state, source) in [
        ("subscription", premium_by_subscription(), PlanSource::Subscription),
        ("manual assignment", premium_by_assignment(), PlanSource::ManualAssignment),
    ] {
        let r = resolve(&c, &state, NOW);
        assert_eq!(r.plan_key(), "premium", "{name}");
        assert_eq!(r.plan.source, source, "{name}");
        assert_eq!(r.lifecycle.phase, Phase::Active, "{name}");

        assert_denied(&check(&r, "teams_integration"), Reason::AddOnRequired, addon_hint("teams"));
        assert_denied(&check(&r, "entra_sync"), Reason::AddOnRequired, addon_hint("enterprise"));
        assert_denied(&check(&r, "ai_assistant"), Reason::AddOnRequired, addon_hint("ai_assistant"));
        // Read intent does not change a plan denial.
        let d = decide(&r, "teams_integration", 1, Intent::Read, 0);
        assert_denied(&d, Reason::AddOnRequired, addon_hint("teams"));

        // What premium does include.
        let d = check(&r, "audit_log");
        assert_allowed(&d, Reason::Granted);
        assert_eq!(d.source, Some(Source::Plan));
    }
}

#[test]
fn a_plan_never_implies_an_addon_even_enterprise() {
    let c = catalog();
    let state = TenantState { plan_assignments: vec![assignment("enterprise", None)], ..tenant() };
    let r = resolve(&c, &state, NOW);
    assert_eq!(r.plan_key(), "enterprise");
    assert_denied(&check(&r, "teams_integration"), Reason::AddOnRequired, addon_hint("teams"));
    assert_denied(&check(&r, "entra_sync"), Reason::AddOnRequired, addon_hint("enterprise"));
    assert_allowed(&check(&r, "sso"), Reason::Granted);
}

#[test]
fn manual_teams_grant_allows_teams_but_not_entra() {
    let c = catalog();
    for base in [premium_by_subscription(), premium_by_assignment(), tenant()] {
        let mut state = base;
        state.addon_grants.push(grant("teams", 1, None));
        let r = resolve(&c, &state, NOW);
        let d = check(&r, "teams_integration");
        assert_allowed(&d, Reason::Granted);
        assert_eq!(d.source, Some(Source::AddOn));
        assert_eq!(d.value, Some(Value::Bool(true)));
        assert_denied(&check(&r, "entra_sync"), Reason::AddOnRequired, addon_hint("enterprise"));
    }
}

#[test]
fn addon_grant_expiry_and_stripe_origin() {
    let c = catalog();
    // A manual grant that expires in two days: valid_until is its expiry.
    let mut state = premium_by_subscription();
    state.addon_grants.push(grant("teams", 1, Some(NOW + 2 * DAY)));
    let r = resolve(&c, &state, NOW);
    assert_allowed(&check(&r, "teams_integration"), Reason::Granted);
    assert_eq!(r.valid_until, Some(NOW + 2 * DAY));
    let later = resolve(&c, &state, NOW + 2 * DAY);
    assert_denied(&check(&later, "teams_integration"), Reason::AddOnRequired, addon_hint("teams"));
    assert_eq!(later.valid_until, Some(FEB_1));

    // A Stripe subscription item is active exactly while its subscription entitles.
    let stripe_grant = AddOnGrant {
        origin: GrantOrigin::Stripe { subscription_id: "sub_prem".into(), item_id: "si_1".into() },
        ..grant("enterprise", 1, None)
    };
    let mut state = premium_by_subscription();
    state.addon_grants.push(stripe_grant.clone());
    let r = resolve(&c, &state, NOW);
    let d = check(&r, "entra_sync");
    assert_allowed(&d, Reason::Granted);
    assert_eq!(d.source, Some(Source::AddOn));

    let mut canceled = state.clone();
    canceled.subscriptions[0].status = SubscriptionStatus::Canceled;
    let r = resolve(&c, &canceled, NOW);
    assert_eq!(r.plan_key(), "free");
    assert_denied(&check(&r, "entra_sync"), Reason::AddOnRequired, addon_hint("enterprise"));
}

#[test]
fn numeric_addon_grants_stack_times_quantity() {
    let c = catalog();
    let mut state = pro_by_subscription();
    state.addon_grants.push(grant("ai_assistant", 2, None));
    state.addon_grants.push(grant("ai_assistant", 1, None));
    let r = resolve(&c, &state, NOW);
    let d = decide(&r, "ai_requests", 1, Intent::Write, 2_999);
    assert_allowed(&d, Reason::Granted);
    assert_eq!(d.limit(), Some(3_000));
    assert_eq!(d.source, Some(Source::AddOn));
    assert_eq!(d.remaining, Some(1));
    let d = decide(&r, "ai_requests", 1, Intent::Write, 3_000);
    assert_denied(&d, Reason::LimitExceeded, addon_hint("ai_assistant"));

    // Zero quantity grants nothing; unknown add-ons are ignored.
    let mut state = pro_by_subscription();
    state.addon_grants.push(grant("ai_assistant", 0, None));
    state.addon_grants.push(grant("no_such_addon", 1, None));
    let r = resolve(&c, &state, NOW);
    assert_denied(&check(&r, "ai_assistant"), Reason::AddOnRequired, addon_hint("ai_assistant"));
    assert_denied(&check(&r, "ai_requests"), Reason::LimitExceeded, addon_hint("ai_assistant"));
}

// ---------------------------------------------------------------- edition

#[test]
fn ce_edition_allows_everything() {
    let c = Arc::new((*catalog()).clone().with_edition(Edition::Ce));
    let states = [
        ("free", tenant()),
        ("unknown", TenantState::unknown("nobody")),
        ("archived", TenantState { archived: true, ..tenant() }),
        (
            "hard locked trial",
            TenantState { trial: Some(Trial { start: NOW - 30 * DAY, end: NOW - 16 * DAY }), ..tenant() },
        ),
        (
            "disabled by override",
            TenantState {
                overrides: vec![override_("audit_log", Value::Bool(false), None)],
                ..premium_by_subscription()
            },
        ),
    ];
    for (name, state) in states {
        let r = resolve(&c, &state, NOW);
        assert_eq!(r.edition(), Edition::Ce);
        for f in &c.features {
            for intent in [Intent::Read, Intent::Write] {
                let d = decide(&r, &f.key, 1_000_000, intent, 1_000_000);
                assert_allowed(&d, Reason::EditionBypass);
                assert_eq!(d.source, Some(Source::Edition), "{name} {}", f.key);
            }
        }
        let d = check(&r, "not_a_feature");
        assert_allowed(&d, Reason::EditionBypass);
    }
}

// ---------------------------------------------------------------- overrides

#[test]
fn override_false_disables_and_expired_override_has_no_effect() {
    let c = catalog();
    let base = pro_by_subscription();
    assert_allowed(&check(&resolve(&c, &base, NOW), "invoice_designer"), Reason::Granted);

    // Unexpired override to false.
    let mut state = base.clone();
    state.overrides.push(override_("invoice_designer", Value::Bool(false), Some(NOW + 3 * DAY)));
    let r = resolve(&c, &state, NOW);
    let d = check(&r, "invoice_designer");
    assert_denied(&d, Reason::DisabledByOverride, None);
    assert_eq!(d.source, Some(Source::Override));
    assert!(r.features[c.feature_idx("invoice_designer").unwrap()].overridden);
    assert_eq!(r.valid_until, Some(NOW + 3 * DAY));

    // The same override, evaluated at and after its expiry: no effect at all.
    for at in [NOW + 3 * DAY, NOW + 4 * DAY] {
        let with = resolve(&c, &state, at);
        let without = resolve(&c, &base, at);
        for f in &c.features {
            assert_eq!(check(&with, &f.key), check(&without, &f.key), "{} at {at}", f.key);
        }
        assert_eq!(with.valid_until, without.valid_until);
    }

    // An override already expired at evaluation time.
    let mut state = base.clone();
    state.overrides.push(override_("invoice_designer", Value::Bool(false), Some(NOW - 1)));
    let r = resolve(&c, &state, NOW);
    let d = check(&r, "invoice_designer");
    assert_allowed(&d, Reason::Granted);
    assert_eq!(d.source, Some(Source::Plan));
    assert_eq!(r.valid_until, resolve(&c, &base, NOW).valid_until);
}

#[test]
fn overrides_raise_and_lower_numeric_values() {
    let c = catalog();
    let mut state = tenant();
    state.overrides.push(override_("seats", Value::Number(50), None));
    state.overrides.push(override_("review_packs", Value::Unlimited, None));
    state.overrides.push(override_("max_file_mb", Value::Number(1), None));
    state.overrides.push(override_("sso", Value::Bool(true), None));
    // A value that does not fit the kind is ignored.
    state.overrides.push(override_("audit_log", Value::Number(3), None));
    let r = resolve(&c, &state, NOW);

    let d = decide(&r, "seats", 1, Intent::Write, 49);
    assert_allowed(&d, Reason::Granted);
    assert_eq!((d.limit(), d.source), (Some(50), Some(Source::Override)));
    let d = decide(&r, "review_packs", 1, Intent::Write, 1_000_000);
    assert_allowed(&d, Reason::Granted);
    assert!(d.unlimited());
    assert_eq!(d.remaining, None);
    // Lowered: denied, and no upgrade hint (a plan would not lift an override).
    let d = decide(&r, "max_file_mb", 2, Intent::Write, 0);
    assert_denied(&d, Reason::LimitExceeded, None);
    let d = check(&r, "sso");
    assert_allowed(&d, Reason::Granted);
    assert_eq!(d.source, Some(Source::Override));
    assert_denied(&check(&r, "audit_log"), Reason::NotInPlan, plan_hint("premium"));
}

// ---------------------------------------------------------------- lifecycle

/// 2026-01-03T00:00:00Z: start of the product-led trial.
const TRIAL_START: UnixTime = JAN_1 + 2 * DAY;

#[test]
fn product_trial_timeline() {
    let c = catalog();
    let start = TRIAL_START;
    let end = start + 14 * DAY;
    let state = TenantState { trial: Some(Trial { start, end }), ..tenant() };

    struct Row {
        day: i64,
        phase: Phase,
        plan: &'static str,
        source: PlanSource,
        notice: Option<(NoticeKind, i64)>,
        valid_until: UnixTime,
    }
    let rows = [
        Row {
            day: 0,
            phase: Phase::Trialing,
            plan: "premium",
            source: PlanSource::ProductTrial,
            notice: None,
            valid_until: start + DAY,
        },
        Row {
            day: 6,
            phase: Phase::Trialing,
            plan: "premium",
            source: PlanSource::ProductTrial,
            notice: None,
            valid_until: start + 7 * DAY,
        },
        Row {
            day: 7,
            phase: Phase::Trialing,
            plan: "premium",
            source: PlanSource::ProductTrial,
            notice: Some((NoticeKind::TrialEnding, 7)),
            valid_until: start + 8 * DAY,
        },
        Row {
            day: 11,
            phase: Phase::Trialing,
            plan: "premium",
            source: PlanSource::ProductTrial,
            notice: Some((NoticeKind::TrialEnding, 3)),
            valid_until: start + 12 * DAY,
        },
        Row {
            day: 13,
            phase: Phase::Trialing,
            plan: "premium",
            source: PlanSource::ProductTrial,
            notice: Some((NoticeKind::TrialEnding, 1)),
            valid_until: end,
        },
        Row {
            day: 14,
            phase: Phase::TrialExpired,
            plan: "premium",
            source: PlanSource::ProductTrial,
            notice: Some((NoticeKind::TrialExpired, 0)),
            // The notice counts the days to hard lock down: it changes at the next day boundary.
            valid_until: end + DAY,
        },
        Row {
            day: 21,
            phase: Phase::HardLocked,
            plan: "free",
            source: PlanSource::Default,
            notice: Some((NoticeKind::HardLocked, 0)),
            valid_until: FEB_1,
        },
        Row {
            day: 43,
            phase: Phase::HardLocked,
            plan: "free",
            source: PlanSource::Default,
            notice: Some((NoticeKind::HardLocked, 0)),
            valid_until: end + 30 * DAY,
        },
        Row {
            day: 44,
            phase: Phase::Archived,
            plan: "free",
            source: PlanSource::Default,
            notice: Some((NoticeKind::TenantArchived, 0)),
            valid_until: MAR_1,
        },
    ];
    for row in rows {
        let now = start + row.day * DAY;
        let r = resolve(&c, &state, now);
        let ctx = format!("day {}", row.day);
        assert_eq!(r.lifecycle.phase, row.phase, "{ctx}");
        assert_eq!(r.plan_key(), row.plan, "{ctx}");
        assert_eq!(r.plan.source, row.source, "{ctx}");
        assert_eq!(r.lifecycle.trial_end, Some(end), "{ctx}");
        assert_eq!(r.lifecycle.hard_lock_at, Some(end + 7 * DAY), "{ctx}");
        assert_eq!(r.lifecycle.archive_at, Some(end + 30 * DAY), "{ctx}");
        let notice = r.lifecycle.notices.first().map(|n| (n.kind, n.days_left));
        assert_eq!(notice, row.notice, "{ctx}: {:?}", r.lifecycle.notices);
        assert!(r.lifecycle.notices.len() <= 1, "{ctx}");
        assert_eq!(r.valid_until, Some(row.valid_until), "{ctx}");

        let write = check(&r, "max_file_mb");
        let read = decide(&r, "max_file_mb", 1, Intent::Read, 0);
        let premium_feature = check(&r, "audit_log");
        match row.phase {
            Phase::Trialing | Phase::TrialExpired => {
                assert_allowed(&write, Reason::Granted);
                assert_allowed(&read, Reason::Granted);
                assert_allowed(&premium_feature, Reason::Granted);
                assert_eq!(premium_feature.source, Some(Source::Plan), "{ctx}");
                assert_eq!(write.limit(), Some(500), "{ctx}");
            }
            Phase::HardLocked => {
                assert_denied(&write, Reason::HardLocked, None);
                assert_allowed(&read, Reason::Granted);
                assert_eq!(read.limit(), Some(10), "{ctx}: the trial plan no longer applies");
                assert_denied(&premium_feature, Reason::HardLocked, None);
                // Reads are decided by the default plan (SPEC §3.2: the trial plan ends at hard lock).
                let d = decide(&r, "audit_log", 1, Intent::Read, 0);
                assert_denied(&d, Reason::NotInPlan, plan_hint("premium"));
            }
            Phase::Archived => {
                assert_denied(&write, Reason::TenantArchived, None);
                assert_denied(&read, Reason::TenantArchived, None);
                for f in &c.features {
                    for intent in [Intent::Read, Intent::Write] {
                        assert_denied(&decide(&r, &f.key, 1, intent, 0), Reason::TenantArchived, None);
                    }
                }
            }
            other => panic!("{ctx}: unexpected phase {other:?}"),
        }
    }
}

#[test]
fn product_trial_thresholds_are_exact() {
    let c = catalog();
    let start = TRIAL_START;
    let end = start + 14 * DAY;
    let state = TenantState { trial: Some(Trial { start, end }), ..tenant() };
    let phase = |t: UnixTime| resolve(&c, &state, t).lifecycle.phase;
    assert_eq!(phase(end - 1), Phase::Trialing);
    assert_eq!(phase(end), Phase::TrialExpired);
    assert_eq!(phase(end + 7 * DAY - 1), Phase::TrialExpired);
    assert_eq!(phase(end + 7 * DAY), Phase::HardLocked);
    assert_eq!(phase(end + 30 * DAY - 1), Phase::HardLocked);
    assert_eq!(phase(end + 30 * DAY), Phase::Archived);
    // 7 days and one second left: no notice yet, and it appears exactly at the 7-day mark.
    let r = resolve(&c, &state, end - 7 * DAY - 1);
    assert!(r.lifecycle.notices.is_empty());
    assert_eq!(r.valid_until, Some(end - 7 * DAY));
    let r = resolve(&c, &state, end - 7 * DAY);
    assert_eq!(r.lifecycle.notices[0].kind, NoticeKind::TrialEnding);
}

#[test]
fn a_purchase_ends_the_product_trial_lifecycle() {
    let c = catalog();
    let start = TRIAL_START;
    let state = TenantState {
        trial: Some(Trial { start, end: start + 14 * DAY }),
        subscriptions: vec![subscription("sub_pro", SubscriptionStatus::Active, "pro", None)],
        ..tenant()
    };
    let r = resolve(&c, &state, start + 25 * DAY); // would be hard-locked without the purchase
    assert_eq!(r.lifecycle.phase, Phase::Active);
    assert_eq!(r.plan_key(), "pro");
    assert_allowed(&check(&r, "invoice_designer"), Reason::Granted);
}

#[test]
fn archived_flag_denies_everything() {
    let c = catalog();
    let state = TenantState { archived: true, ..premium_by_subscription() };
    let r = resolve(&c, &state, NOW);
    assert_eq!(r.lifecycle.phase, Phase::Archived);
    for f in &c.features {
        assert_denied(&decide(&r, &f.key, 1, Intent::Read, 0), Reason::TenantArchived, None);
    }
    // Shadow enforcement does not soften lifecycle locks.
    assert!(!check(&r, "new_dashboard").allowed);
}

#[test]
fn stripe_trial_subscription_is_trialing() {
    let c = catalog();
    let trial_end = NOW + 5 * DAY;
    let mut sub = subscription("sub_trial", SubscriptionStatus::Trialing, "premium", None);
    sub.trial_end = Some(trial_end);
    let state = TenantState { subscriptions: vec![sub], ..tenant() };
    let r = resolve(&c, &state, NOW);
    assert_eq!(r.lifecycle.phase, Phase::Trialing);
    assert_eq!(r.plan_key(), "premium");
    assert_eq!(r.plan.source, PlanSource::Subscription);
    assert_eq!(r.lifecycle.days_left, Some(5));
    assert_eq!(r.lifecycle.notices.len(), 1);
    assert_eq!(r.lifecycle.notices[0].kind, NoticeKind::TrialEnding);
    assert_eq!(r.lifecycle.notices[0].days_left, 5);
    assert_eq!(r.valid_until, Some(NOW + DAY), "next days_left tick");
    assert_allowed(&check(&r, "audit_log"), Reason::Granted);

    // A Pro customer on a Premium trial is Premium; when the trial is canceled they revert to Pro.
    let mut trial = subscription("sub_trial", SubscriptionStatus::Trialing, "premium", None);
    trial.trial_end = Some(trial_end);
    let mut state = TenantState {
        subscriptions: vec![subscription("sub_pro", SubscriptionStatus::Active, "pro", None), trial],
        ..tenant()
    };
    let r = resolve(&c, &state, NOW);
    assert_eq!(r.plan_key(), "premium");
    assert_eq!(r.lifecycle.phase, Phase::Trialing);
    state.subscriptions[1].status = SubscriptionStatus::Canceled;
    let r = resolve(&c, &state, NOW);
    assert_eq!(r.plan_key(), "pro");
    assert_eq!(r.lifecycle.phase, Phase::Active);
    assert_denied(&check(&r, "audit_log"), Reason::NotInPlan, plan_hint("premium"));
}

#[test]
fn past_due_is_allowed_with_a_notice() {
    let c = catalog();
    let state = TenantState {
        subscriptions: vec![subscription("sub_pro", SubscriptionStatus::PastDue, "pro", None)],
        ..tenant()
    };
    let r = resolve(&c, &state, NOW);
    assert_eq!(r.lifecycle.phase, Phase::PastDue);
    assert_eq!(r.plan_key(), "pro");
    let notice = &r.lifecycle.notices[0];
    assert_eq!(notice.kind, NoticeKind::PaymentPastDue);
    assert!(!notice.dismissible);
    for intent in [Intent::Read, Intent::Write] {
        assert_allowed(&decide(&r, "invoice_designer", 1, intent, 0), Reason::Granted);
    }
}

#[test]
fn non_entitling_statuses_fall_back_to_default() {
    let c = catalog();
    for status in [
        SubscriptionStatus::Unpaid,
        SubscriptionStatus::Canceled,
        SubscriptionStatus::Incomplete,
        SubscriptionStatus::IncompleteExpired,
        SubscriptionStatus::Paused,
    ] {
        let state = TenantState { subscriptions: vec![subscription("s", status, "premium", None)], ..tenant() };
        let r = resolve(&c, &state, NOW);
        assert_eq!(r.plan_key(), "free", "{status:?}");
        assert_eq!(r.plan.source, PlanSource::Default, "{status:?}");
        assert_denied(&check(&r, "invoice_designer"), Reason::NotInPlan, plan_hint("pro"));
    }
    for status in [SubscriptionStatus::Trialing, SubscriptionStatus::Active, SubscriptionStatus::PastDue] {
        let state = TenantState { subscriptions: vec![subscription("s", status, "premium", None)], ..tenant() };
        assert_eq!(resolve(&c, &state, NOW).plan_key(), "premium", "{status:?}");
    }
}

// ---------------------------------------------------------------- unknowns

#[test]
fn unknown_feature_fails_closed() {
    let c = catalog();
    for state in [tenant(), premium_by_subscription(), TenantState::unknown("x")] {
        let r = resolve(&c, &state, NOW);
        let d = check(&r, "teleportation");
        assert_denied(&d, Reason::UnknownFeature, None);
        assert_eq!((d.feature, d.kind, d.value), (None, None, None));
    }
}

#[test]
fn unknown_tenant_resolves_to_the_default_plan() {
    let c = catalog();
    let r = resolve(&c, &TenantState::unknown("nobody"), NOW);
    assert!(!r.known);
    assert_eq!(r.plan_key(), "free");
    assert_eq!(r.plan.source, PlanSource::UnknownTenant);
    assert_eq!(r.lifecycle.phase, Phase::Active);
    let d = decide(&r, "seats", 1, Intent::Write, 2);
    assert_allowed(&d, Reason::Granted);
    assert_eq!(d.source, Some(Source::DefaultPlan));
    assert_eq!(d.limit(), Some(3));
    assert_denied(&check(&r, "invoice_designer"), Reason::NotInPlan, plan_hint("pro"));
    assert_eq!(r.valid_until, Some(FEB_1), "only the usage period ends");

    // A known tenant without anything is the default plan too, reported as such.
    let r = resolve(&c, &tenant(), NOW);
    assert_eq!(r.plan.source, PlanSource::Default);
}

// ---------------------------------------------------------------- plans and limits

#[test]
fn enterprise_assignment_with_expiry_then_fallback() {
    let c = catalog();
    let expires = NOW + 3 * DAY;
    let state =
        TenantState { plan_assignments: vec![assignment("enterprise", Some(expires))], ..pro_by_subscription() };

    let r = resolve(&c, &state, NOW);
    assert_eq!(r.plan_key(), "enterprise");
    assert_eq!(r.plan.source, PlanSource::ManualAssignment);
    assert_eq!(r.valid_until, Some(expires));
    for feature in ["seats", "review_packs"] {
        let d = decide(&r, feature, 1, Intent::Write, 1_000_000);
        assert_allowed(&d, Reason::Granted);
        assert!(d.unlimited(), "{feature}: {d:?}");
        assert_eq!((d.limit(), d.remaining), (None, None));
    }
    assert_allowed(&check(&r, "sso"), Reason::Granted);

    // At expiry: back to the Pro subscription.
    for at in [expires, expires + DAY] {
        let r = resolve(&c, &state, at);
        assert_eq!(r.plan_key(), "pro");
        assert_eq!(r.plan.source, PlanSource::Subscription);
        assert_eq!(decide(&r, "seats", 1, Intent::Write, 0).limit(), Some(5));
        let d = decide(&r, "review_packs", 1, Intent::Write, 50);
        assert_denied(&d, Reason::LimitExceeded, plan_hint("premium"));
        assert_eq!(d.limit(), Some(50));
        assert_denied(&check(&r, "sso"), Reason::NotInPlan, plan_hint("enterprise"));
    }

    // Without a subscription it falls back to the default plan.
    let state = TenantState { plan_assignments: vec![assignment("enterprise", Some(expires))], ..tenant() };
    let r = resolve(&c, &state, expires);
    assert_eq!((r.plan_key(), r.plan.source), ("free", PlanSource::Default));
}

#[test]
fn highest_rank_source_wins() {
    let c = catalog();
    let state = TenantState {
        subscriptions: vec![
            subscription("a", SubscriptionStatus::Active, "pro", None),
            subscription("b", SubscriptionStatus::Canceled, "enterprise", None),
            subscription("c", SubscriptionStatus::Active, "no_such_plan", None),
        ],
        plan_assignments: vec![assignment("premium", None), assignment("enterprise", Some(NOW - 1))],
        ..tenant()
    };
    let r = resolve(&c, &state, NOW);
    assert_eq!((r.plan_key(), r.plan.source), ("premium", PlanSource::ManualAssignment));
}

#[test]
fn counter_limit_with_used() {
    let c = catalog();
    let r = resolve(&c, &tenant(), NOW); // free: review_packs = 5 / month
    let january = period_at(Period::Month, NOW, None);
    assert_eq!((january.start, january.end), (JAN_1, Some(FEB_1)));

    struct Row {
        used: i64,
        quantity: i64,
        allowed: bool,
        remaining: i64,
        upgrade: Option<Upgrade>,
    }
    let rows = [
        Row { used: 0, quantity: 1, allowed: true, remaining: 5, upgrade: None },
        Row { used: 4, quantity: 1, allowed: true, remaining: 1, upgrade: None },
        Row { used: 0, quantity: 5, allowed: true, remaining: 5, upgrade: None },
        Row { used: 4, quantity: 2, allowed: false, remaining: 1, upgrade: plan_hint("pro") },
        Row { used: 5, quantity: 1, allowed: false, remaining: 0, upgrade: plan_hint("pro") },
        Row { used: 7, quantity: 1, allowed: false, remaining: 0, upgrade: plan_hint("pro") },
        Row { used: 60, quantity: 1, allowed: false, remaining: 0, upgrade: plan_hint("premium") },
        Row { used: 300, quantity: 1, allowed: false, remaining: 0, upgrade: plan_hint("enterprise") },
        Row { used: i64::MAX, quantity: 1, allowed: false, remaining: 0, upgrade: plan_hint("enterprise") },
    ];
    for row in rows {
        let d = decide(&r, "review_packs", row.quantity, Intent::Write, row.used);
        let ctx = format!("used {} quantity {}: {d:?}", row.used, row.quantity);
        assert_eq!(d.allowed, row.allowed, "{ctx}");
        let reason = if row.allowed { Reason::Granted } else { Reason::LimitExceeded };
        assert_eq!(d.reason, reason, "{ctx}");
        assert_eq!(d.limit(), Some(5), "{ctx}");
        assert_eq!(d.used, Some(row.used), "{ctx}");
        assert_eq!(d.remaining, Some(row.remaining), "{ctx}");
        assert_eq!(d.upgrade, row.upgrade, "{ctx}");
        assert_eq!(d.kind, Some(FeatureKind::Counter(Period::Month)), "{ctx}");
        assert_eq!(d.period, Some(january), "{ctx}");
    }
}

#[test]
fn config_value_bounds_quantity() {
    let c = catalog();
    let r = resolve(&c, &pro_by_subscription(), NOW); // pro: max_file_mb = 100
    let d = decide(&r, "max_file_mb", 100, Intent::Write, 0);
    assert_allowed(&d, Reason::Granted);
    assert_eq!((d.used, d.remaining), (None, None), "config is not metered");
    // `used` is ignored for config features.
    assert!(decide(&r, "max_file_mb", 100, Intent::Write, 1_000).allowed);
    assert_denied(&decide(&r, "max_file_mb", 101, Intent::Write, 0), Reason::LimitExceeded, plan_hint("premium"));
    assert_denied(&decide(&r, "max_file_mb", 501, Intent::Write, 0), Reason::LimitExceeded, plan_hint("enterprise"));
    assert_denied(&decide(&r, "max_file_mb", 2_001, Intent::Write, 0), Reason::LimitExceeded, None);
}

#[test]
fn seats_gauge_from_a_pro_subscription() {
    let c = catalog();
    let state = TenantState {
        subscriptions: vec![subscription("sub_pro", SubscriptionStatus::Active, "pro", Some(12))],
        ..tenant()
    };
    let r = resolve(&c, &state, NOW);
    let d = decide(&r, "seats", 1, Intent::Write, 11);
    assert_allowed(&d, Reason::Granted);
    assert_eq!(d.limit(), Some(12));
    assert_eq!(d.remaining, Some(1));
    assert_eq!(d.kind, Some(FeatureKind::Gauge));
    assert_eq!(d.source, Some(Source::Plan));
    let d = decide(&r, "seats", 1, Intent::Write, 12);
    assert!(!d.allowed);
    assert_eq!(d.reason, Reason::LimitExceeded);
    assert_eq!((d.limit(), d.used, d.remaining), (Some(12), Some(12), Some(0)));

    // Without a seat quantity the plan's own value applies; Enterprise is not seat-priced.
    let r = resolve(&c, &pro_by_subscription(), NOW);
    assert_eq!(decide(&r, "seats", 1, Intent::Write, 0).limit(), Some(5));
    let state = TenantState {
        subscriptions: vec![subscription("sub_ent", SubscriptionStatus::Active, "enterprise", Some(12))],
        ..tenant()
    };
    assert!(decide(&resolve(&c, &state, NOW), "seats", 1, Intent::Write, 0).unlimited());
    // The seat quantity comes from the chosen subscription only, not from an assignment.
    let state = TenantState { plan_assignments: vec![assignment("pro", None)], ..tenant() };
    assert_eq!(decide(&resolve(&c, &state, NOW), "seats", 1, Intent::Write, 0).limit(), Some(5));
}

#[test]
fn shadow_feature_reports_would_be_denial() {
    let c = catalog();
    let r = resolve(&c, &tenant(), NOW);
    let d = check(&r, "new_dashboard");
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.reason, Reason::Shadow);
    assert_eq!(d.shadow_denial, Some(Reason::NotInPlan));
    assert_eq!(d.upgrade, plan_hint("premium"));

    let r = resolve(&c, &premium_by_subscription(), NOW);
    let d = check(&r, "new_dashboard");
    assert_allowed(&d, Reason::Granted);
}

#[test]
fn upgrade_hints_name_the_lowest_plan_above_else_an_addon() {
    let c = catalog();
    struct Row {
        state: TenantState,
        feature: &'static str,
        quantity: i64,
        used: i64,
        reason: Reason,
        upgrade: Option<Upgrade>,
    }
    let rows = [
        Row {
            state: tenant(),
            feature: "invoice_designer",
            quantity: 1,
            used: 0,
            reason: Reason::NotInPlan,
            upgrade: plan_hint("pro"),
        },
        Row {
            state: tenant(),
            feature: "audit_log",
            quantity: 1,
            used: 0,
            reason: Reason::NotInPlan,
            upgrade: plan_hint("premium"),
        },
        Row {
            state: tenant(),
            feature: "sso",
            quantity: 1,
            used: 0,
            reason: Reason::NotInPlan,
            upgrade: plan_hint("enterprise"),
        },
        Row {
            state: pro_by_subscription(),
            feature: "audit_log",
            quantity: 1,
            used: 0,
            reason: Reason::NotInPlan,
            upgrade: plan_hint("premium"),
        },
        Row {
            state: premium_by_subscription(),
            feature: "sso",
            quantity: 1,
            used: 0,
            reason: Reason::NotInPlan,
            upgrade: plan_hint("enterprise"),
        },
        Row {
            state: tenant(),
            feature: "teams_integration",
            quantity: 1,
            used: 0,
            reason: Reason::AddOnRequired,
            upgrade: addon_hint("teams"),
        },
        Row {
            state: tenant(),
            feature: "ai_assistant",
            quantity: 1,
            used: 0,
            reason: Reason::AddOnRequired,
            upgrade: addon_hint("ai_assistant"),
        },
        Row {
            state: tenant(),
            feature: "ai_requests",
            quantity: 1,
            used: 0,
            reason: Reason::LimitExceeded,
            upgrade: addon_hint("ai_assistant"),
        },
        Row {
            state: tenant(),
            feature: "max_file_mb",
            quantity: 11,
            used: 0,
            reason: Reason::LimitExceeded,
            upgrade: plan_hint("pro"),
        },
        Row {
            state: tenant(),
            feature: "seats",
            quantity: 1,
            used: 3,
            reason: Reason::LimitExceeded,
            upgrade: plan_hint("pro"),
        },
        Row {
            state: tenant(),
            feature: "seats",
            quantity: 1,
            used: 10,
            reason: Reason::LimitExceeded,
            upgrade: plan_hint("enterprise"),
        },
    ];
    for row in rows {
        let r = resolve(&c, &row.state, NOW);
        let d = decide(&r, row.feature, row.quantity, Intent::Write, row.used);
        assert_denied(&d, row.reason, row.upgrade);
    }
}

#[test]
fn valid_until_is_the_next_threshold() {
    let c = catalog();
    // Nothing expires: the usage period end.
    assert_eq!(resolve(&c, &pro_by_subscription(), NOW).valid_until, Some(FEB_1));
    // The earliest of several expiries, ignoring expired ones and ones past the period end.
    let state = TenantState {
        plan_assignments: vec![assignment("enterprise", Some(NOW + 10 * DAY)), assignment("premium", Some(NOW - DAY))],
        addon_grants: vec![grant("teams", 1, Some(NOW + 4 * DAY)), grant("enterprise", 1, Some(NOW + 40 * DAY))],
        overrides: vec![
            override_("sso", Value::Bool(false), Some(NOW + 6 * DAY)),
            override_("sso", Value::Bool(true), Some(NOW - 5)),
        ],
        ..pro_by_subscription()
    };
    let r = resolve(&c, &state, NOW);
    assert_eq!(r.valid_until, Some(NOW + 4 * DAY));
    let r = resolve(&c, &state, NOW + 4 * DAY);
    assert_eq!(r.valid_until, Some(NOW + 6 * DAY));
    let r = resolve(&c, &state, NOW + 6 * DAY);
    assert_eq!(r.valid_until, Some(NOW + 10 * DAY));
    let r = resolve(&c, &state, NOW + 10 * DAY);
    assert_eq!(r.valid_until, Some(FEB_1));
    let r = resolve(&c, &state, FEB_1);
    assert_eq!(r.valid_until, Some(NOW + 40 * DAY));
    // Valid_until is never the evaluation instant itself.
    let r = resolve(&c, &state, FEB_1 - 1);
    assert_eq!(r.valid_until, Some(FEB_1));
}
