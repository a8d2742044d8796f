//! `resolve(catalog, tenant_state, now) -> ResolvedTenant` (SPEC §3.1–3.6). Pure.
//!
//! The same function feeds Explain: with a [`Trace`] it also records every contribution and
//! plan candidate, so an explanation can never disagree with a decision.
//!
//! `plan` chooses the plan and lifecycle, `values` computes each feature's value from it,
//! add-ons and overrides, and `trace` records what Explain shows. Without a trace nothing is
//! recorded and no explanation text is built.

mod plan;
mod trace;
mod values;

use std::sync::Arc;

use crate::catalog::{Catalog, Edition, FeatureKind, Period, Value};
use crate::lifecycle::LifecycleState;
use crate::tenant::{TenantState, UnixTime};

pub use plan::{PlanChoice, PlanSource};
pub use trace::{Contribution, ContributionKind, PlanCandidate, Trace};
pub use values::{ResolvedFeature, Source, active_addons};

/// Everything needed to decide any check for one tenant, until `valid_until`.
#[derive(Debug, Clone)]
pub struct ResolvedTenant {
    pub catalog: Arc<Catalog>,
    /// Shared, not copied, by the usage cache's keys.
    pub tenant_id: Arc<str>,
    pub known: bool,
    pub revision: u64,
    pub evaluated_at: UnixTime,
    pub plan: PlanChoice,
    pub lifecycle: LifecycleState,
    /// Indexed by [`crate::catalog::FeatureIdx`].
    pub features: Vec<ResolvedFeature>,
    /// The earliest future instant at which any input changes the result.
    pub valid_until: Option<UnixTime>,
    /// Answered from catalog fallback values (store unreachable).
    pub fallback: bool,
}

impl ResolvedTenant {
    pub fn plan_key(&self) -> &str {
        &self.catalog.plans_by_rank()[self.plan.idx].key
    }
    pub fn edition(&self) -> Edition {
        self.catalog.edition
    }
}

fn live(expires_at: Option<UnixTime>, now: UnixTime) -> bool {
    expires_at.is_none_or(|e| now < e)
}

/// The earliest future instant at which some input of the resolution changes: `valid_until`.
struct Horizon {
    now: UnixTime,
    until: Option<UnixTime>,
}

impl Horizon {
    fn new(now: UnixTime) -> Self {
        Horizon { now, until: None }
    }

    /// Take `t` into account if it is still to come.
    fn include(&mut self, t: Option<UnixTime>) {
        if let Some(t) = t.filter(|&t| t > self.now) {
            self.until = Some(self.until.map_or(t, |v| v.min(t)));
        }
    }
}

/// Resolve a tenant's entitlements at `now`.
pub fn resolve(catalog: &Arc<Catalog>, state: &TenantState, now: UnixTime) -> ResolvedTenant {
    resolve_traced(catalog, state, now, None)
}

/// [`resolve`], recording contributions and plan candidates into `trace` when given.
pub fn resolve_traced(
    catalog: &Arc<Catalog>,
    state: &TenantState,
    now: UnixTime,
    mut trace: Option<&mut Trace>,
) -> ResolvedTenant {
    let mut horizon = Horizon::new(now);

    // 1. Plan: the highest-rank entitling source.
    let chosen = plan::choose(catalog, state, now, trace.as_deref_mut(), &mut horizon);
    horizon.include(chosen.lifecycle.next_change);
    let billing = chosen.subscription.and_then(|s| Some((s.current_period_start?, s.current_period_end?)));

    // 2–3. Plan values, seats, add-ons.
    let mut features = values::from_plan(catalog, &chosen.plan, chosen.subscription, billing, now);
    if let Some(t) = trace.as_deref_mut() {
        t.record_plan(catalog, &chosen.plan, &features, chosen.subscription);
    }
    values::add_addons(catalog, state, now, &mut features, trace.as_deref_mut(), &mut horizon);

    // 4. Overrides replace the value while unexpired.
    values::apply_overrides(catalog, state, now, &mut features, trace, &mut horizon);

    // 6. Usage periods end: counters reset.
    for f in &features {
        if let Some(p) = f.period {
            horizon.include(p.end);
        }
    }
    // A billing period that has not started yet (the calendar month stands in) starts later.
    if catalog.features.iter().any(|f| f.kind == FeatureKind::Counter(Period::BillingPeriod)) {
        horizon.include(billing.map(|(start, _)| start));
    }

    ResolvedTenant {
        catalog: Arc::clone(catalog),
        tenant_id: Arc::from(state.tenant_id.as_str()),
        known: state.known,
        revision: state.revision,
        evaluated_at: now,
        plan: chosen.plan,
        lifecycle: chosen.lifecycle,
        features,
        valid_until: horizon.until,
        fallback: false,
    }
}

/// The tenant as the catalog's fallback values describe it, for when the store is unreachable
/// and nothing is cached. Features without a fallback value are denied (fail closed).
pub fn fallback(catalog: &Arc<Catalog>, tenant_id: &str, now: UnixTime) -> ResolvedTenant {
    let mut r = resolve(catalog, &TenantState::unknown(tenant_id), now);
    for (f, def) in r.features.iter_mut().zip(&catalog.features) {
        f.value = def.fallback.unwrap_or(Value::zero(def.kind));
        f.source = Source::Fallback;
    }
    r.fallback = true;
    r
}
