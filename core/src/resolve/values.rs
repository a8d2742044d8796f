//! Steps 2–4 of resolution: each feature's value from the chosen plan (and its seats), stacked
//! add-on grants, then overrides (SPEC §3.2–3.4).

use crate::catalog::{Catalog, FeatureIdx, FeatureKind, Plan, Value};
use crate::tenant::{AddOnGrant, GrantOrigin, Subscription, TenantState, UnixTime};
use crate::usage::{UsagePeriod, period_at};

use super::plan::PlanChoice;
use super::trace::Trace;
use super::{Horizon, live};

/// Where a feature's effective value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Plan,
    AddOn,
    Override,
    DefaultPlan,
    Edition,
    Fallback,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Plan => "PLAN",
            Source::AddOn => "ADDON",
            Source::Override => "OVERRIDE",
            Source::DefaultPlan => "DEFAULT_PLAN",
            Source::Edition => "EDITION",
            Source::Fallback => "FALLBACK",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedFeature {
    pub value: Value,
    pub source: Source,
    /// An override set the value (a `false` then denies with `DISABLED_BY_OVERRIDE`).
    pub overridden: bool,
    /// Counters: the usage period containing the evaluation time.
    pub period: Option<UsagePeriod>,
}

/// A seat-priced plan's seats feature, the subscription giving the quantity, and that quantity.
/// Shared with the trace so both agree on when seats replace the plan's value.
pub(super) fn seats<'s>(plan: &Plan, sub: Option<&'s Subscription>) -> Option<(FeatureIdx, &'s Subscription, i64)> {
    let feature = plan.seats_feature?;
    let sub = sub?;
    Some((feature, sub, sub.seats?.max(0)))
}

/// Steps 2–3a: the plan's values (seats from the subscription) and each counter's usage period.
pub(super) fn from_plan(
    catalog: &Catalog,
    plan: &PlanChoice,
    sub: Option<&Subscription>,
    billing: Option<(UnixTime, UnixTime)>,
    now: UnixTime,
) -> Vec<ResolvedFeature> {
    let plan_def = &catalog.plans_by_rank()[plan.idx];
    let source = if plan.source.is_default() { Source::DefaultPlan } else { Source::Plan };
    let seats = seats(plan_def, sub);
    catalog
        .features
        .iter()
        .enumerate()
        .map(|(fi, f)| {
            let value = match seats {
                Some((seats_fi, _, quantity)) if seats_fi == fi => Value::Number(quantity),
                _ => plan_def.values[fi],
            };
            let period = match f.kind {
                FeatureKind::Counter(p) => Some(period_at(p, now, billing)),
                _ => None,
            };
            ResolvedFeature { value, source, overridden: false, period }
        })
        .collect()
}

/// What one add-on grant gives, borrowed from the catalog rather than copied.
enum Grants<'c> {
    AddOn(&'c [(FeatureIdx, Value)]),
    /// A Stripe Entitlements lookup key naming a boolean feature directly.
    Feature([(FeatureIdx, Value); 1]),
}

impl Grants<'_> {
    fn as_slice(&self) -> &[(FeatureIdx, Value)] {
        match self {
            Grants::AddOn(grants) => grants,
            Grants::Feature(one) => one,
        }
    }
}

/// An add-on's grants; a Stripe Entitlements lookup key may also name a boolean feature.
fn grants<'c>(catalog: &'c Catalog, g: &AddOnGrant) -> Option<Grants<'c>> {
    match (catalog.addon(&g.addon), &g.origin) {
        (Some(addon), _) => Some(Grants::AddOn(&addon.grants)),
        (None, GrantOrigin::StripeEntitlement { .. }) => catalog
            .feature_idx(&g.addon)
            .filter(|&fi| catalog.features[fi].kind == FeatureKind::Boolean)
            .map(|fi| Grants::Feature([(fi, Value::Bool(true))])),
        (None, _) => None,
    }
}

/// A grant from a Stripe subscription item counts only while that subscription entitles.
fn subscription_entitles(state: &TenantState, origin: &GrantOrigin) -> bool {
    match origin {
        GrantOrigin::Stripe { subscription_id, .. } => {
            state.subscriptions.iter().any(|s| &s.id == subscription_id && s.status.entitles())
        }
        GrantOrigin::Manual | GrantOrigin::StripeEntitlement { .. } => true,
    }
}

/// The add-ons a tenant has now: every grant that counts (unexpired, from a subscription that
/// entitles, quantity above zero), in key order, once each. The same test as [`add_addons`].
pub fn active_addons<'a>(catalog: &Catalog, state: &'a TenantState, now: UnixTime) -> Vec<&'a str> {
    let mut keys: Vec<&str> = state
        .addon_grants
        .iter()
        .filter(|g| catalog.addon(&g.addon).is_some() && counts(state, g, now))
        .map(|g| g.addon.as_str())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

fn counts(state: &TenantState, g: &AddOnGrant, now: UnixTime) -> bool {
    live(g.expires_at, now) && subscription_entitles(state, &g.origin) && g.quantity > 0
}

/// Step 3b: live add-on grants stack onto the plan's values, times their quantity. The source
/// becomes the add-on only where the plan itself gave nothing.
pub(super) fn add_addons(
    catalog: &Catalog,
    state: &TenantState,
    now: UnixTime,
    features: &mut [ResolvedFeature],
    mut trace: Option<&mut Trace>,
    horizon: &mut Horizon,
) {
    let base_truthy: Vec<bool> = features.iter().map(|f| f.value.is_truthy()).collect();
    for g in &state.addon_grants {
        let unexpired = live(g.expires_at, now);
        let sub_ok = subscription_entitles(state, &g.origin);
        let Some(grants) = grants(catalog, g) else {
            continue;
        };
        let applied = counts(state, g, now);
        if applied {
            horizon.include(g.expires_at);
            for &(fi, grant) in grants.as_slice() {
                let add = grant.times(g.quantity);
                let f = &mut features[fi];
                f.value = f.value.stack(add);
                if !base_truthy[fi] && add.is_truthy() {
                    f.source = Source::AddOn;
                }
            }
        }
        if let Some(t) = trace.as_deref_mut() {
            t.record_addon(g, grants.as_slice(), unexpired, sub_ok, applied);
        }
    }
}

/// Step 4: an unexpired override whose value fits the feature's kind replaces the value.
pub(super) fn apply_overrides(
    catalog: &Catalog,
    state: &TenantState,
    now: UnixTime,
    features: &mut [ResolvedFeature],
    mut trace: Option<&mut Trace>,
    horizon: &mut Horizon,
) {
    for o in &state.overrides {
        let Some(fi) = catalog.feature_idx(&o.feature) else {
            continue;
        };
        let fits = o.value.fits(catalog.features[fi].kind);
        let applied = live(o.expires_at, now) && fits;
        if applied {
            horizon.include(o.expires_at);
            let f = &mut features[fi];
            f.value = o.value;
            f.source = Source::Override;
            f.overridden = true;
        }
        if let Some(t) = trace.as_deref_mut() {
            t.record_override(fi, o, fits, applied);
        }
    }
}
