//! Benchmarks of the pure core (SPEC §9: `decide` on a cached tenant ≤ 2 µs p99 in-process).
//!
//! `resolve` runs on a cache miss; `decide` runs on every `Check`. Run with
//! `cargo bench --bench core` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use entitlements::catalog::{Catalog, Interval, Value};
use entitlements::decide::{Intent, decide, decide_idx};
use entitlements::resolve::resolve;
use entitlements::tenant::{
    AddOnGrant, DAY, GrantOrigin, Override, Subscription, SubscriptionStatus, TenantState, UnixTime,
};

/// 2026-01-10T12:00:00Z.
const NOW: UnixTime = 1_768_046_400;

fn catalog() -> Arc<Catalog> {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/catalog.toml")).unwrap();
    Arc::new(Catalog::from_toml(&src, &|_| None).expect("example catalog is valid"))
}

/// A realistic paying tenant: a seat-priced Premium subscription, the Teams add-on bought through
/// Stripe, a manual AI-assistant grant with an expiry, and one override with an expiry.
fn tenant() -> TenantState {
    TenantState {
        tenant_id: "acme-corp:eu.1".into(),
        known: true,
        revision: 42,
        stripe_customer_id: Some("cus_N1x2y3".into()),
        subscriptions: vec![Subscription {
            id: "sub_1Pz".into(),
            status: SubscriptionStatus::Active,
            plan: Some("premium".into()),
            interval: Some(Interval::Year),
            seats: Some(25),
            trial_end: None,
            current_period_start: Some(NOW - 40 * DAY),
            current_period_end: Some(NOW + 325 * DAY),
            cancel_at_period_end: false,
            last_event_created: NOW - 40 * DAY,
            last_event_id: "evt_1Pz".into(),
        }],
        addon_grants: vec![
            AddOnGrant {
                addon: "teams".into(),
                quantity: 1,
                origin: GrantOrigin::Stripe { subscription_id: "sub_1Pz".into(), item_id: "si_teams".into() },
                actor: "stripe".into(),
                rationale: "checkout".into(),
                granted_at: NOW - 40 * DAY,
                expires_at: None,
            },
            AddOnGrant {
                addon: "ai_assistant".into(),
                quantity: 2,
                origin: GrantOrigin::Manual,
                actor: "support@vendor".into(),
                rationale: "pilot".into(),
                granted_at: NOW - 3 * DAY,
                expires_at: Some(NOW + 27 * DAY),
            },
        ],
        overrides: vec![Override {
            feature: "max_file_mb".into(),
            value: Value::Number(1_000),
            actor: "support@vendor".into(),
            rationale: "large scans".into(),
            set_at: NOW - DAY,
            expires_at: Some(NOW + 60 * DAY),
        }],
        ..Default::default()
    }
}

fn benches(c: &mut Criterion) {
    let catalog = catalog();
    let state = tenant();

    c.bench_function("resolve/realistic_tenant", |b| {
        b.iter(|| resolve(black_box(&catalog), black_box(&state), black_box(NOW)))
    });

    let resolved = resolve(&catalog, &state, NOW);
    assert!(decide(&resolved, "teams_integration", 1, Intent::Write, 0).allowed);
    assert!(decide(&resolved, "review_packs", 1, Intent::Write, 10).allowed);

    let mut g = c.benchmark_group("decide");
    g.bench_function("boolean", |b| {
        b.iter(|| {
            decide(black_box(&resolved), black_box("teams_integration"), black_box(1), Intent::Write, black_box(0))
        })
    });
    g.bench_function("counter", |b| {
        b.iter(|| decide(black_box(&resolved), black_box("review_packs"), black_box(1), Intent::Write, black_box(120)))
    });
    g.bench_function("counter_denied_with_hint", |b| {
        b.iter(|| decide(black_box(&resolved), black_box("review_packs"), black_box(1), Intent::Write, black_box(200)))
    });
    g.bench_function("unknown_feature", |b| {
        b.iter(|| decide(black_box(&resolved), black_box("no_such_feature"), black_box(1), Intent::Write, black_box(0)))
    });
    let fi = catalog.feature_idx("teams_integration").unwrap();
    g.bench_function("boolean_by_index", |b| {
        b.iter(|| decide_idx(black_box(&resolved), black_box(fi), black_box(1), Intent::Write, black_box(0)))
    });
    g.finish();
}

criterion_group!(core, benches);
criterion_main!(core);
