//! Property tests of the pure core (SPEC §3, §10).
//!
//! Tenant states are arbitrary: any number of subscriptions in any Stripe status with any plan
//! (including one the catalog does not know), manual plan assignments and add-on grants with or
//! without expiry, overrides with values fitting the feature kind, an optional product-led trial,
//! the archived flag, and an arbitrary evaluation instant. All times are generated relative to
//! `now`, clustered around it, so that every lifecycle phase and expiry is exercised.
//!
//! Two catalogs are used: the example catalog, and the same catalog with the counters switched to
//! `billing_period` / `never` periods so that billing-period resolution is covered as well.

use std::sync::{Arc, LazyLock};

use entitlements_core::catalog::{Catalog, Edition, FeatureIdx, FeatureKind, Interval, Value};
use entitlements_core::decide::{Decision, Intent, Reason, decide, decide_idx};
use entitlements_core::explain;
use entitlements_core::resolve::{ResolvedTenant, resolve};
use entitlements_core::tenant::{
    AddOnGrant, DAY, GrantOrigin, Override, PlanAssignment, Subscription, SubscriptionStatus, TenantState, Trial,
    UnixTime,
};
use proptest::prelude::*;
use proptest::sample::select;

fn example_source() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/catalog.toml")).unwrap()
}

static CATALOGS: LazyLock<Vec<Arc<Catalog>>> = LazyLock::new(|| {
    let src = example_source();
    let billing = src
        .replace(
            "[features.review_packs]\nkind = \"counter\"\nperiod = \"month\"",
            "[features.review_packs]\nkind = \"counter\"\nperiod = \"billing_period\"",
        )
        .replace(
            "[features.ai_requests]\nkind = \"counter\"\nperiod = \"month\"",
            "[features.ai_requests]\nkind = \"counter\"\nperiod = \"never\"",
        );
    assert_ne!(src, billing, "the example catalog changed shape; update the billing variant");
    let example = Catalog::from_toml(&src, &|_| None).expect("example catalog");
    let billing = Catalog::from_toml(&billing, &|_| None).expect("billing-period variant");
    vec![Arc::new(example), Arc::new(billing)]
});

const STATUSES: [SubscriptionStatus; 8] = [
    SubscriptionStatus::Trialing,
    SubscriptionStatus::Active,
    SubscriptionStatus::PastDue,
    SubscriptionStatus::Unpaid,
    SubscriptionStatus::Canceled,
    SubscriptionStatus::Incomplete,
    SubscriptionStatus::IncompleteExpired,
    SubscriptionStatus::Paused,
];

/// Plan keys a subscription or assignment may carry: the catalog's and one it does not know.
const PLAN_KEYS: [&str; 5] = ["free", "pro", "premium", "enterprise", "legacy_gold"];
const ADDON_KEYS: [&str; 3] = ["teams", "enterprise", "ai_assistant"];
const QUANTITIES: [i64; 6] = [0, 1, 2, 11, 101, 2_001];
const INTENTS: [Intent; 2] = [Intent::Read, Intent::Write];

/// An offset in seconds from `now`: mostly whole days (to hit thresholds exactly), sometimes
/// arbitrary seconds, sometimes exactly 0 or ±1.
fn offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => (-60i64..=60).prop_map(|d| d * DAY),
        4 => -60 * DAY..=60 * DAY,
        1 => select(vec![-1i64, 0, 1]),
    ]
}

fn future_offset() -> impl Strategy<Value = i64> {
    prop_oneof![(1i64..=60).prop_map(|d| d * DAY), 1..=60 * DAY]
}

/// 2020-01-01 .. 2030-01-01.
fn instant() -> impl Strategy<Value = UnixTime> {
    1_577_836_800i64..1_893_456_000
}

#[derive(Debug, Clone)]
struct RawSub {
    status: SubscriptionStatus,
    plan: Option<&'static str>,
    seats: Option<i64>,
    trial_end: Option<i64>,
    period: Option<(i64, i64)>,
    cancel_at_period_end: bool,
}

fn raw_sub() -> impl Strategy<Value = RawSub> {
    (
        select(STATUSES.to_vec()),
        proptest::option::weighted(0.9, select(PLAN_KEYS.to_vec())),
        proptest::option::of(0i64..40),
        proptest::option::of(offset()),
        proptest::option::of((offset(), 1i64..=40)),
        any::<bool>(),
    )
        .prop_map(|(status, plan, seats, trial_end, period, cancel_at_period_end)| RawSub {
            status,
            plan,
            seats,
            trial_end,
            period: period.map(|(start, days)| (start, start + days * DAY)),
            cancel_at_period_end,
        })
}

#[derive(Debug, Clone)]
struct RawGrant {
    addon: &'static str,
    quantity: i64,
    /// `Some(i)`: a Stripe item of subscription `i` (modulo the number of subscriptions).
    stripe_sub: Option<usize>,
    expires: Option<i64>,
}

fn raw_grant() -> impl Strategy<Value = RawGrant> {
    (
        prop_oneof![9 => select(ADDON_KEYS.to_vec()), 1 => Just("retired_addon")],
        -1i64..=3,
        proptest::option::of(0usize..4),
        proptest::option::of(offset()),
    )
        .prop_map(|(addon, quantity, stripe_sub, expires)| RawGrant { addon, quantity, stripe_sub, expires })
}

/// A feature index (into the example catalog, whose features both catalogs share), and a value
/// that fits the feature kind most of the time.
#[derive(Debug, Clone)]
struct RawOverride {
    feature: Option<usize>,
    value_pick: (bool, i64, u8),
    expires: Option<i64>,
}

fn raw_override() -> impl Strategy<Value = RawOverride> {
    (
        proptest::option::weighted(0.95, 0usize..64),
        (any::<bool>(), prop_oneof![0i64..=12, 0i64..=3_000], 0u8..20),
        proptest::option::of(offset()),
    )
        .prop_map(|(feature, value_pick, expires)| RawOverride { feature, value_pick, expires })
}

#[derive(Debug, Clone)]
struct RawState {
    known: bool,
    archived: bool,
    trial: Option<(i64, i64)>,
    subs: Vec<RawSub>,
    assignments: Vec<(&'static str, Option<i64>)>,
    grants: Vec<RawGrant>,
    overrides: Vec<RawOverride>,
}

fn raw_state() -> impl Strategy<Value = RawState> {
    (
        proptest::bool::weighted(0.9),
        proptest::bool::weighted(0.05),
        proptest::option::of((-60 * DAY..=DAY, prop_oneof![Just(14 * DAY), 0..=30 * DAY])),
        proptest::collection::vec(raw_sub(), 0..=3),
        proptest::collection::vec((select(PLAN_KEYS.to_vec()), proptest::option::of(offset())), 0..=2),
        proptest::collection::vec(raw_grant(), 0..=3),
        proptest::collection::vec(raw_override(), 0..=3),
    )
        .prop_map(|(known, archived, trial, subs, assignments, grants, overrides)| RawState {
            known,
            archived,
            trial,
            subs,
            assignments,
            grants,
            overrides,
        })
}

fn override_value(kind: FeatureKind, (b, n, pick): (bool, i64, u8)) -> Value {
    match (kind.is_numeric(), pick) {
        // Occasionally a value that does not fit the kind (resolve must ignore it).
        (_, 0) if kind.is_numeric() => Value::Bool(b),
        (_, 0) => Value::Number(n),
        (true, 1..=3) => Value::Unlimited,
        (true, _) => Value::Number(n),
        (false, _) => Value::Bool(b),
    }
}

fn build_state(c: &Catalog, raw: &RawState, now: UnixTime) -> TenantState {
    let subscriptions: Vec<Subscription> = raw
        .subs
        .iter()
        .enumerate()
        .map(|(i, s)| Subscription {
            id: format!("sub_{i}"),
            status: s.status,
            plan: s.plan.map(str::to_string),
            interval: Some(if i % 2 == 0 { Interval::Month } else { Interval::Year }),
            seats: s.seats,
            trial_end: s.trial_end.map(|o| now + o),
            current_period_start: s.period.map(|(a, _)| now + a),
            current_period_end: s.period.map(|(_, b)| now + b),
            cancel_at_period_end: s.cancel_at_period_end,
            last_event_created: now - DAY,
            last_event_id: format!("evt_{i}"),
        })
        .collect();
    let plan_assignments = raw
        .assignments
        .iter()
        .map(|&(plan, expires)| PlanAssignment {
            plan: plan.into(),
            actor: "ops".into(),
            rationale: "contract".into(),
            assigned_at: now - 10 * DAY,
            expires_at: expires.map(|o| now + o),
        })
        .collect();
    let addon_grants = raw
        .grants
        .iter()
        .enumerate()
        .map(|(i, g)| AddOnGrant {
            addon: g.addon.into(),
            quantity: g.quantity,
            origin: match g.stripe_sub {
                // A dangling subscription id when there is none: the grant must not apply.
                Some(k) => GrantOrigin::Stripe {
                    subscription_id: if subscriptions.is_empty() {
                        "sub_gone".into()
                    } else {
                        format!("sub_{}", k % subscriptions.len())
                    },
                    item_id: format!("si_{i}"),
                },
                None => GrantOrigin::Manual,
            },
            actor: "ops".into(),
            rationale: "courtesy".into(),
            granted_at: now - 3 * DAY,
            expires_at: g.expires.map(|o| now + o),
        })
        .collect();
    let overrides = raw
        .overrides
        .iter()
        .map(|o| match o.feature {
            Some(k) => {
                let f = &c.features[k % c.features.len()];
                Override {
                    feature: f.key.clone(),
                    value: override_value(f.kind, o.value_pick),
                    actor: "ops".into(),
                    rationale: "ticket".into(),
                    set_at: now - DAY,
                    expires_at: o.expires.map(|e| now + e),
                }
            }
            None => Override {
                feature: "removed_feature".into(),
                value: Value::Bool(true),
                actor: "ops".into(),
                rationale: "stale".into(),
                set_at: now - DAY,
                expires_at: None,
            },
        })
        .collect();
    TenantState {
        tenant_id: "t-1".into(),
        known: raw.known,
        revision: 7,
        stripe_customer_id: raw.known.then(|| "cus_1".into()),
        trial: raw.trial.map(|(start, len)| Trial { start: now + start, end: now + start + len }),
        archived: raw.archived,
        subscriptions,
        plan_assignments,
        addon_grants,
        overrides,
        last_change: None,
    }
}

/// A catalog, a tenant state and the evaluation instant.
fn scenario() -> impl Strategy<Value = (Arc<Catalog>, TenantState, UnixTime)> {
    (0usize..CATALOGS.len(), raw_state(), instant()).prop_map(|(ci, raw, now)| {
        let c = Arc::clone(&CATALOGS[ci]);
        let state = build_state(&c, &raw, now);
        (c, state, now)
    })
}

/// Usage values per feature: small, at typical limits, or huge.
fn usage() -> impl Strategy<Value = Vec<i64>> {
    proptest::collection::vec(prop_oneof![0i64..=12, select(vec![49, 50, 199, 200, 999, 1_000, 10_000, i64::MAX])], 16)
}

fn used_of(usage: &[i64], fi: FeatureIdx) -> i64 {
    usage[fi % usage.len()]
}

/// Every (feature, intent, quantity) decision, in a fixed order, plus an unknown feature.
fn all_decisions(r: &ResolvedTenant, usage: &[i64]) -> Vec<(String, Intent, i64, Decision)> {
    let mut out = Vec::new();
    for (fi, f) in r.catalog.features.iter().enumerate() {
        for intent in INTENTS {
            for q in QUANTITIES {
                out.push((f.key.clone(), intent, q, decide_idx(r, fi, q, intent, used_of(usage, fi))));
            }
        }
    }
    out.push(("no_such_feature".into(), Intent::Write, 1, decide(r, "no_such_feature", 1, Intent::Write, 0)));
    out
}

/// Instants strictly between `now` and `valid_until` (or well into the future when `None`).
fn instants_before(now: UnixTime, valid_until: Option<UnixTime>, fractions: &[u32]) -> Vec<UnixTime> {
    let end = valid_until.unwrap_or(now + 800 * DAY);
    let span = end - now; // >= 1
    let mut out = vec![now, end - 1, now + 1, now + DAY - 1, now + DAY];
    out.extend(fractions.iter().map(|&f| now + ((span as i128 * i128::from(f)) / (1i128 << 32)) as i64));
    out.retain(|&t| t >= now && t < end);
    out.sort_unstable();
    out.dedup();
    out
}

/// 512 cases by default; `PROPTEST_CASES` raises it (e.g. `PROPTEST_CASES=20000`).
fn config() -> ProptestConfig {
    let default = ProptestConfig::default();
    // No failure-persistence file: shrunk failures are printed, and the known ones are pinned
    // as plain tests at the end of this file.
    ProptestConfig { cases: default.cases.max(512), failure_persistence: None, ..default }
}

proptest! {
    #![proptest_config(config())]

    /// (a) Adding an active add-on grant never turns an allowed decision into a denial.
    #[test]
    fn adding_an_addon_never_removes_access(
        (c, state, now) in scenario(),
        addon in select(ADDON_KEYS.to_vec()),
        quantity in 1i64..=3,
        expires in proptest::option::of(future_offset()),
        via_stripe in any::<bool>(),
        usage in usage(),
    ) {
        let before = resolve(&c, &state, now);
        let mut with = state.clone();
        // A Stripe item of an entitling subscription is as active as a manual grant.
        let entitling = with.subscriptions.iter().find(|s| s.status.entitles()).map(|s| s.id.clone());
        let origin = match entitling {
            Some(subscription_id) if via_stripe => GrantOrigin::Stripe { subscription_id, item_id: "si_new".into() },
            _ => GrantOrigin::Manual,
        };
        with.addon_grants.push(AddOnGrant {
            addon: addon.into(),
            quantity,
            origin,
            actor: "ops".into(),
            rationale: "upsell".into(),
            granted_at: now,
            expires_at: expires.map(|o| now + o),
        });
        let after = resolve(&c, &with, now);
        prop_assert_eq!(before.plan.idx, after.plan.idx);
        prop_assert_eq!(before.lifecycle.phase, after.lifecycle.phase);
        for ((key, intent, q, b), (_, _, _, a)) in all_decisions(&before, &usage).into_iter().zip(all_decisions(&after, &usage)) {
            prop_assert!(
                !b.allowed || a.allowed,
                "adding add-on {} turned {} ({:?}, quantity {}) from allowed into {:?}\nbefore: {:?}\nafter: {:?}",
                addon, key, intent, q, a.reason, b, a
            );
            // The effective value never goes down either.
            if let (Some(vb), Some(va)) = (b.value, a.value) {
                let grew = match (vb, va) {
                    (Value::Bool(x), Value::Bool(y)) => !x || y,
                    (_, Value::Unlimited) => true,
                    (Value::Number(x), Value::Number(y)) => x <= y,
                    _ => false,
                };
                prop_assert!(grew, "{}: value went from {:?} to {:?}", key, vb, va);
            }
        }
    }

    /// (b) The community edition allows every feature, whatever the tenant state.
    #[test]
    fn ce_allows_everything((c, state, now) in scenario(), usage in usage()) {
        let ce = Arc::new((*c).clone().with_edition(Edition::Ce));
        let r = resolve(&ce, &state, now);
        for (key, intent, q, d) in all_decisions(&r, &usage) {
            prop_assert!(d.allowed, "{} {:?} {}: {:?}", key, intent, q, d);
            prop_assert_eq!(d.reason, Reason::EditionBypass);
            prop_assert_eq!(d.shadow_denial, None);
        }
    }

    /// (c) An expired override (`expires_at <= now`) changes no decision.
    #[test]
    fn an_expired_override_has_no_effect(
        (c, state, now) in scenario(),
        fi in any::<prop::sample::Index>(),
        value_pick in (any::<bool>(), 0i64..=3_000, 0u8..20),
        age in prop_oneof![Just(0i64), 1..=90 * DAY],
        usage in usage(),
    ) {
        let fi = fi.index(c.features.len());
        let f = &c.features[fi];
        let mut with = state.clone();
        with.overrides.push(Override {
            feature: f.key.clone(),
            value: override_value(f.kind, value_pick),
            actor: "ops".into(),
            rationale: "expired".into(),
            set_at: now - age - DAY,
            expires_at: Some(now - age),
        });
        let without = resolve(&c, &state, now);
        let with = resolve(&c, &with, now);
        prop_assert_eq!(all_decisions(&without, &usage), all_decisions(&with, &usage));
        prop_assert_eq!(without.valid_until, with.valid_until);
        prop_assert_eq!(&without.features, &with.features);
    }

    /// (d) `valid_until`, when set, is strictly in the future.
    #[test]
    fn valid_until_is_in_the_future((c, state, now) in scenario()) {
        let r = resolve(&c, &state, now);
        prop_assert_eq!(r.evaluated_at, now);
        if let Some(v) = r.valid_until {
            prop_assert!(v > now, "valid_until {} <= now {}", v, now);
        }
    }

    /// (e) Explain and Check agree, feature by feature, for the same usage.
    #[test]
    fn explain_agrees_with_check((c, state, now) in scenario(), usage in usage(), subset in proptest::collection::vec(any::<prop::sample::Index>(), 0..4)) {
        let used = |fi: FeatureIdx| used_of(&usage, fi);
        let resolved = resolve(&c, &state, now);
        let e = explain::explain(&c, &state, now, None, &used);
        prop_assert_eq!(e.features.len(), c.features.len());
        prop_assert_eq!(&e.resolved.plan, &resolved.plan);
        prop_assert_eq!(&e.resolved.lifecycle, &resolved.lifecycle);
        prop_assert_eq!(e.resolved.valid_until, resolved.valid_until);
        for fe in &e.features {
            let check = decide_idx(&resolved, fe.feature, 1, Intent::Write, used(fe.feature));
            prop_assert_eq!(&fe.decision, &check, "feature {}", c.features[fe.feature].key);
            prop_assert_eq!(fe.effective, resolved.features[fe.feature].value);
            // Applied contributions exist exactly when something grants a value.
            prop_assert!(!fe.contributions.is_empty());
        }
        // A subset of features explains the same way, in request order.
        let wanted: Vec<FeatureIdx> = subset.iter().map(|i| i.index(c.features.len())).collect();
        let part = explain::explain(&c, &state, now, Some(&wanted), &used);
        prop_assert_eq!(part.features.iter().map(|f| f.feature).collect::<Vec<_>>(), wanted.clone());
        for fe in &part.features {
            let check = decide_idx(&resolved, fe.feature, 1, Intent::Write, used(fe.feature));
            prop_assert_eq!(&fe.decision, &check);
        }
    }

    /// (f) Resolving at any instant strictly before `valid_until` gives the same decisions (and
    /// the same plan, phase and `valid_until`) as at `evaluated_at`: expiring a cache entry at
    /// `valid_until` is enough for time-based transitions to take effect.
    #[test]
    fn nothing_changes_before_valid_until(
        (c, state, now) in scenario(),
        fractions in proptest::collection::vec(any::<u32>(), 3),
        usage in usage(),
    ) {
        let r0 = resolve(&c, &state, now);
        let d0 = all_decisions(&r0, &usage);
        for t in instants_before(now, r0.valid_until, &fractions) {
            let rt = resolve(&c, &state, t);
            prop_assert_eq!(rt.plan_key(), r0.plan_key(), "plan at {} (now {}, valid_until {:?})", t, now, r0.valid_until);
            prop_assert_eq!(rt.lifecycle.phase, r0.lifecycle.phase, "phase at {} (now {}, valid_until {:?})", t, now, r0.valid_until);
            let dt = all_decisions(&rt, &usage);
            for ((key, intent, q, a), (_, _, _, b)) in d0.iter().zip(&dt) {
                prop_assert_eq!(
                    a, b,
                    "{} {:?} quantity {}: decision at {} differs from the one at now={} (valid_until {:?})",
                    key, intent, q, t, now, r0.valid_until
                );
            }
            prop_assert_eq!(rt.valid_until, r0.valid_until, "valid_until moved at {} (now {})", t, now);
        }
    }

    /// (g) The lifecycle notices (sent with every decision, SPEC §4) are also stable until
    /// `valid_until`, or a cached entry would show stale text.
    #[test]
    fn notices_are_stable_before_valid_until(
        (c, state, now) in scenario(),
        fractions in proptest::collection::vec(any::<u32>(), 3),
    ) {
        let r0 = resolve(&c, &state, now);
        for t in instants_before(now, r0.valid_until, &fractions) {
            let rt = resolve(&c, &state, t);
            prop_assert_eq!(
                &rt.lifecycle.notices, &r0.lifecycle.notices,
                "notices at {} differ from the ones at now={} (valid_until {:?}, phase {:?})",
                t, now, r0.valid_until, r0.lifecycle.phase
            );
        }
    }

    /// Resolving is deterministic, and add-on grants stack commutatively: their order and the
    /// order of plan assignments do not matter. (Subscriptions are left in place: between two
    /// entitling subscriptions to the same plan the first one listed wins, which decides the seat
    /// quantity, billing period and Stripe-trial phase, so the store must list them in a stable order.)
    #[test]
    fn resolve_is_deterministic((c, state, now) in scenario(), usage in usage()) {
        let a = resolve(&c, &state, now);
        let b = resolve(&c, &state, now);
        prop_assert_eq!(all_decisions(&a, &usage), all_decisions(&b, &usage));
        prop_assert_eq!(a.valid_until, b.valid_until);
        let mut reordered = state.clone();
        reordered.addon_grants.reverse();
        reordered.plan_assignments.reverse();
        let r = resolve(&c, &reordered, now);
        prop_assert_eq!(r.plan_key(), a.plan_key());
        prop_assert_eq!(r.valid_until, a.valid_until);
        prop_assert_eq!(&r.lifecycle, &a.lifecycle);
        prop_assert_eq!(all_decisions(&r, &usage), all_decisions(&a, &usage));
    }
}

// ---------------------------------------------------------------- minimal reproductions
//
// Shrunk counterexamples of properties (f) and (g), pinned as plain tests.

/// 2020-01-01T00:00:00Z.
const T0: UnixTime = 1_577_836_800;

fn subscription_with_period(plan: &str, start: UnixTime, end: UnixTime) -> Subscription {
    Subscription {
        id: "sub_0".into(),
        status: SubscriptionStatus::Active,
        plan: Some(plan.into()),
        interval: Some(Interval::Month),
        seats: None,
        trial_end: None,
        current_period_start: Some(start),
        current_period_end: Some(end),
        cancel_at_period_end: false,
        last_event_created: T0 - DAY,
        last_event_id: "evt_0".into(),
    }
}

/// (f): a `billing_period` counter whose subscription period starts after `now` uses the calendar
/// month until then, but `valid_until` ignores the period start, so a cache entry keeps the
/// month period (and its usage bucket) after the billing period has begun.
#[test]
fn billing_period_starting_after_now_is_a_threshold() {
    let c = Arc::clone(&CATALOGS[1]);
    let fi = c.feature_idx("review_packs").unwrap();
    let state = TenantState {
        tenant_id: "t".into(),
        known: true,
        subscriptions: vec![subscription_with_period("pro", T0 + DAY, T0 + 31 * DAY)],
        ..Default::default()
    };
    let r0 = resolve(&c, &state, T0);
    let r1 = resolve(&c, &state, T0 + DAY);
    let p0 = r0.features[fi].period.unwrap();
    let p1 = r1.features[fi].period.unwrap();
    assert_ne!(p0, p1, "the usage period changes at the billing period start");
    let valid_until = r0.valid_until.unwrap();
    assert!(
        valid_until <= T0 + DAY,
        "valid_until {valid_until} is after the billing period start {} (period {p0:?} -> {p1:?})",
        T0 + DAY
    );
}

/// (g): in the soft-lock week the TRIAL_EXPIRED notice counts the days to hard lock, so
/// `valid_until` must be the next day boundary, not the hard-lock instant — otherwise a cached
/// notice would keep saying "within 7 day(s)".
#[test]
fn trial_expired_notice_is_stable_until_valid_until() {
    let c = Arc::clone(&CATALOGS[0]);
    let state = TenantState {
        tenant_id: "t".into(),
        known: true,
        trial: Some(Trial { start: T0 - 14 * DAY, end: T0 }),
        ..Default::default()
    };
    let r0 = resolve(&c, &state, T0);
    let valid_until = r0.valid_until.unwrap();
    assert!(valid_until <= T0 + DAY, "valid_until {valid_until} lets the countdown go stale");
    let r1 = resolve(&c, &state, valid_until - 1);
    assert_eq!(r0.lifecycle.notices, r1.lifecycle.notices, "valid_until {valid_until}");
    let r2 = resolve(&c, &state, T0 + DAY);
    assert_ne!(r0.lifecycle.notices, r2.lifecycle.notices, "the countdown moves a day later");
}
