//! Benchmarks of the pure core and of the cache-hit path without transport (SPEC §9: `decide`
//! ≤ 2 µs p99; a cache hit ≤ 5 µs).
//!
//! `resolve` runs on a cache miss; `decide` runs on every `Check`; `cache_hit` is
//! `Service::check` on a cached tenant. After criterion, p50/p99 of single calls are printed. Run with
//! `cargo bench --bench core` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use entitlements::catalog::{Catalog, Interval, Value};
use entitlements::clock::monotonic;
use entitlements::command::Command;
use entitlements::decide::{Intent, decide, decide_idx};
use entitlements::resolve::resolve;
use entitlements::service::Service;
use entitlements::store::Stores;
use entitlements::store::sql::SqlStore;
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

    cache_hit(c);
    percentiles(&resolved);
}

/// A `Service` over SQLite in a temporary directory, with one paying tenant cached.
fn cached_service(rt: &tokio::runtime::Runtime) -> (Arc<Service>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let service = rt.block_on(async {
        let store = SqlStore::connect(&url).await.expect("sqlite");
        store.migrate().await.expect("migrate");
        let service = Arc::new(Service::new(
            catalog(),
            Stores::sql(store),
            10_000,
            Duration::from_secs(3600),
            Duration::from_secs(60),
        ));
        for m in [
            Command::AssignPlan { plan: "premium".into(), expires_at: None },
            Command::GrantAddOn { addon: "teams".into(), quantity: 1, expires_at: None },
            Command::GrantAddOn { addon: "ai_assistant".into(), quantity: 1, expires_at: None },
        ] {
            service.mutate("acme", m, "bench", "cache-hit bench").await.expect("seed");
        }
        // Load it once: every measured call below is a hit.
        service.check("acme", "ai_requests", None, Intent::Write, None).await.expect("warm");
        service
    });
    (service, dir)
}

/// The cache-hit path without transport: `Service::check` on a cached tenant (moka lookup,
/// revision floors, usage cache for metered features, decide). SPEC §9: ≤ 5 µs.
fn cache_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (service, _dir) = cached_service(&rt);
    let mut g = c.benchmark_group("cache_hit");
    for feature in ["teams_integration", "ai_requests", "no_such_feature"] {
        g.bench_function(feature, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = monotonic();
                    for _ in 0..iters {
                        black_box(service.check("acme", black_box(feature), None, Intent::Write, None).await.ok());
                    }
                    started.elapsed()
                })
            })
        });
    }
    g.finish();
}

/// Criterion reports means; the budget is a p99. Time 200k single calls of each and print the tail.
fn percentiles(resolved: &entitlements::resolve::ResolvedTenant) {
    fn report(name: &str, mut one: impl FnMut()) {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
        for _ in 0..20_000 {
            one();
        }
        for _ in 0..200_000 {
            let t = monotonic();
            one();
            let _ = h.record(t.elapsed().as_nanos() as u64);
        }
        println!(
            "{name:<32} p50 {:>6} ns  p99 {:>6} ns  p99.9 {:>6} ns  max {:>8} ns  (200k calls, incl. ~20 ns timer)",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
    report("decide/boolean", || {
        black_box(decide(black_box(resolved), black_box("teams_integration"), 1, Intent::Write, 0));
    });
    report("decide/counter", || {
        black_box(decide(black_box(resolved), black_box("review_packs"), 1, Intent::Write, 120));
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (service, _dir) = cached_service(&rt);
    for feature in ["teams_integration", "ai_requests"] {
        report(&format!("cache_hit/{feature}"), || {
            black_box(rt.block_on(service.check("acme", feature, None, Intent::Write, None)).ok());
        });
    }
}

criterion_group!(core, benches);
criterion_main!(core);
