//! `resolve(catalog, tenant_state, now) -> ResolvedTenant` (SPEC §3.1–3.6). Pure.
//!
//! The same function feeds Explain: with a [`Trace`] it also records every contribution and
//! plan candidate, so an explanation can never disagree with a decision.

use std::sync::Arc;

use crate::catalog::{Catalog, Edition, FeatureKind, Value};
use crate::lifecycle::{self, LifecycleState};
use crate::tenant::{GrantOrigin, SubscriptionStatus, TenantState, UnixTime};
use crate::usage::{UsagePeriod, period_at};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanSource {
    Subscription,
    ManualAssignment,
    ProductTrial,
    Default,
    UnknownTenant,
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanChoice {
    /// Index into [`Catalog::plans_by_rank`].
    pub idx: usize,
    pub source: PlanSource,
    /// Human description of the source, e.g. `stripe subscription sub_123 (active)`.
    pub origin: String,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContributionKind {
    Plan,
    DefaultPlan,
    Seats,
    AddOn,
    Override,
}

/// One input to a feature's value, as Explain shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    pub kind: ContributionKind,
    pub key: String,
    pub value: Value,
    pub quantity: i64,
    pub origin: String,
    pub actor: String,
    pub rationale: String,
    pub granted_at: Option<UnixTime>,
    pub expires_at: Option<UnixTime>,
    pub applied: bool,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlanCandidate {
    pub plan: String,
    pub source: PlanSource,
    pub origin: String,
    pub entitles: bool,
    pub note: String,
}

/// What Explain records beside the resolution.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub candidates: Vec<PlanCandidate>,
    /// Indexed by feature.
    pub contributions: Vec<Vec<Contribution>>,
}

fn live(expires_at: Option<UnixTime>, now: UnixTime) -> bool {
    expires_at.is_none_or(|e| now < e)
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
    let mut valid_until: Option<UnixTime> = None;
    let mut horizon = |t: Option<UnixTime>| {
        if let Some(t) = t.filter(|&t| t > now) {
            valid_until = Some(valid_until.map_or(t, |v| v.min(t)));
        }
    };

    // 1. Plan: the highest-rank entitling source.
    let mut best: Option<(usize, PlanSource, String, Option<usize>)> = None; // (plan idx, source, origin, subscription idx)
    let mut consider = |idx: usize, source: PlanSource, origin: String, sub: Option<usize>| {
        let better = best.as_ref().is_none_or(|(b, ..)| idx > *b);
        if better {
            best = Some((idx, source, origin, sub));
        }
    };
    let plan_idx = |key: &str| catalog.plans_by_rank().iter().position(|p| p.key == key);
    for (si, sub) in state.subscriptions.iter().enumerate() {
        let Some(plan) = &sub.plan else { continue };
        // Which subscription, and which Stripe event last set it (and when).
        let origin = format!(
            "stripe subscription {} ({}; last event {} at {})",
            sub.id,
            sub.status.as_str(),
            sub.last_event_id,
            sub.last_event_created
        );
        let idx = plan_idx(plan);
        let entitles = sub.status.entitles() && idx.is_some();
        if let Some(t) = trace.as_deref_mut() {
            let note = match (idx, sub.status.entitles()) {
                (None, _) => format!("plan `{plan}` is not in the catalog"),
                (_, false) => format!("status `{}` does not entitle", sub.status.as_str()),
                _ if sub.cancel_at_period_end => "cancels at period end; entitles until then".into(),
                _ => String::new(),
            };
            t.candidates.push(PlanCandidate {
                plan: plan.clone(),
                source: PlanSource::Subscription,
                origin: origin.clone(),
                entitles,
                note,
            });
        }
        if let (true, Some(idx)) = (entitles, idx) {
            consider(idx, PlanSource::Subscription, origin, Some(si));
        }
    }
    for a in &state.plan_assignments {
        let origin = format!("manual assignment by {}: {}", a.actor, a.rationale);
        let idx = plan_idx(&a.plan);
        let unexpired = live(a.expires_at, now);
        if let Some(t) = trace.as_deref_mut() {
            let note = match (idx, unexpired) {
                (None, _) => format!("plan `{}` is not in the catalog", a.plan),
                (_, false) => "expired".into(),
                _ => String::new(),
            };
            t.candidates.push(PlanCandidate {
                plan: a.plan.clone(),
                source: PlanSource::ManualAssignment,
                origin: origin.clone(),
                entitles: unexpired && idx.is_some(),
                note,
            });
        }
        if let (true, Some(idx)) = (unexpired, idx) {
            horizon(a.expires_at);
            consider(idx, PlanSource::ManualAssignment, origin, None);
        }
    }

    let policy = &catalog.lifecycle;
    let any_past_due = state.subscriptions.iter().any(|s| s.status == SubscriptionStatus::PastDue);
    let (plan, lifecycle, chosen_sub) = if state.archived {
        let idx = best.as_ref().map_or_else(|| plan_idx(&catalog.default_plan).unwrap_or(0), |b| b.0);
        let source = best.as_ref().map_or(PlanSource::Default, |b| b.1);
        let origin = best.as_ref().map_or_else(|| "archived".to_string(), |b| b.2.clone());
        (PlanChoice { idx, source, origin }, lifecycle::archived_by_flag(), None)
    } else if let Some((idx, source, origin, sub)) = best {
        let lc = if any_past_due {
            lifecycle::past_due()
        } else if let Some(s) =
            sub.map(|i| &state.subscriptions[i]).filter(|s| s.status == SubscriptionStatus::Trialing)
        {
            lifecycle::stripe_trial(policy, s.trial_end, now)
        } else {
            LifecycleState::active()
        };
        (PlanChoice { idx, source, origin }, lc, sub)
    } else {
        let default_idx = plan_idx(&catalog.default_plan).unwrap_or(0);
        let default_source = if state.known { PlanSource::Default } else { PlanSource::UnknownTenant };
        match state.trial {
            Some(trial) => {
                let lc = lifecycle::product_trial(policy, trial.start, trial.end, now);
                let trial_idx = policy.trial_plan.as_deref().and_then(plan_idx);
                let choice = match trial_idx {
                    Some(idx) if lc.trial_grants_plan() => {
                        PlanChoice { idx, source: PlanSource::ProductTrial, origin: "product-led free trial".into() }
                    }
                    _ => PlanChoice {
                        idx: default_idx,
                        source: default_source,
                        origin: "no entitling subscription or assignment".into(),
                    },
                };
                (choice, lc, None)
            }
            None => {
                let origin = if state.known { "no entitling subscription or assignment" } else { "unknown tenant" };
                (
                    PlanChoice { idx: default_idx, source: default_source, origin: origin.into() },
                    LifecycleState::active(),
                    None,
                )
            }
        }
    };
    horizon(lifecycle.next_change);
    let plan_def = &catalog.plans_by_rank()[plan.idx];
    let plan_source = match plan.source {
        PlanSource::Default | PlanSource::UnknownTenant => Source::DefaultPlan,
        _ => Source::Plan,
    };
    let chosen_sub = chosen_sub.map(|i| &state.subscriptions[i]);
    let billing = chosen_sub.and_then(|s| Some((s.current_period_start?, s.current_period_end?)));

    if let Some(t) = trace.as_deref_mut() {
        t.contributions = vec![Vec::new(); catalog.features.len()];
    }

    // 2–3. Plan values, seats, add-ons.
    let mut features: Vec<ResolvedFeature> = catalog
        .features
        .iter()
        .enumerate()
        .map(|(fi, f)| {
            let mut value = plan_def.values[fi];
            let mut kind =
                if plan_source == Source::DefaultPlan { ContributionKind::DefaultPlan } else { ContributionKind::Plan };
            let mut origin = plan.origin.clone();
            if plan_def.seats_feature == Some(fi)
                && let Some((sub, seats)) = chosen_sub.and_then(|s| Some((s, s.seats?)))
            {
                value = Value::Number(seats.max(0));
                kind = ContributionKind::Seats;
                origin = format!("seat quantity of stripe subscription {}", sub.id);
            }
            if let Some(t) = trace.as_deref_mut() {
                t.contributions[fi].push(Contribution {
                    kind,
                    key: plan_def.key.clone(),
                    value,
                    quantity: 1,
                    origin,
                    actor: String::new(),
                    rationale: String::new(),
                    granted_at: None,
                    expires_at: None,
                    applied: true,
                    note: String::new(),
                });
            }
            let period = match f.kind {
                FeatureKind::Counter(p) => Some(period_at(p, now, billing)),
                _ => None,
            };
            ResolvedFeature { value, source: plan_source, overridden: false, period }
        })
        .collect();
    let base_truthy: Vec<bool> = features.iter().map(|f| f.value.is_truthy()).collect();

    for g in &state.addon_grants {
        let unexpired = live(g.expires_at, now);
        let (sub_ok, origin) = match &g.origin {
            GrantOrigin::Manual => (true, format!("manual grant by {}", g.actor)),
            GrantOrigin::Stripe { subscription_id, item_id } => {
                let ok = state.subscriptions.iter().any(|s| &s.id == subscription_id && s.status.entitles());
                (ok, format!("stripe subscription {subscription_id} item {item_id}"))
            }
            GrantOrigin::StripeEntitlement { lookup_key } => (true, format!("stripe entitlement {lookup_key}")),
        };
        // An add-on's grants; a Stripe Entitlements lookup key may also name a boolean feature.
        let grants: Option<Vec<(usize, Value)>> = match (catalog.addon(&g.addon), &g.origin) {
            (Some(addon), _) => Some(addon.grants.clone()),
            (None, GrantOrigin::StripeEntitlement { .. }) => catalog
                .feature_idx(&g.addon)
                .filter(|&fi| catalog.features[fi].kind == FeatureKind::Boolean)
                .map(|fi| vec![(fi, Value::Bool(true))]),
            (None, _) => None,
        };
        let applied = unexpired && sub_ok && grants.is_some() && g.quantity > 0;
        if applied {
            horizon(g.expires_at);
        }
        let Some(grants) = grants else {
            continue;
        };
        for (fi, grant) in grants {
            let add = grant.times(g.quantity);
            if applied {
                let f = &mut features[fi];
                f.value = f.value.stack(add);
                if !base_truthy[fi] && add.is_truthy() {
                    f.source = Source::AddOn;
                }
            }
            if let Some(t) = trace.as_deref_mut() {
                let note = if !unexpired {
                    "expired".to_string()
                } else if !sub_ok {
                    "its subscription does not entitle".to_string()
                } else {
                    String::new()
                };
                t.contributions[fi].push(Contribution {
                    kind: ContributionKind::AddOn,
                    key: g.addon.clone(),
                    value: add,
                    quantity: g.quantity,
                    origin: origin.clone(),
                    actor: g.actor.clone(),
                    rationale: g.rationale.clone(),
                    granted_at: Some(g.granted_at),
                    expires_at: g.expires_at,
                    applied,
                    note,
                });
            }
        }
    }

    // 4. Overrides replace the value while unexpired.
    for o in &state.overrides {
        let Some(fi) = catalog.feature_idx(&o.feature) else {
            continue;
        };
        let fits = o.value.fits(catalog.features[fi].kind);
        let applied = live(o.expires_at, now) && fits;
        if applied {
            horizon(o.expires_at);
            let f = &mut features[fi];
            f.value = o.value;
            f.source = Source::Override;
            f.overridden = true;
        }
        if let Some(t) = trace.as_deref_mut() {
            if applied {
                for c in &mut t.contributions[fi] {
                    if c.applied {
                        c.applied = false;
                        c.note = "replaced by an override".into();
                    }
                }
            }
            t.contributions[fi].push(Contribution {
                kind: ContributionKind::Override,
                key: o.feature.clone(),
                value: o.value,
                quantity: 1,
                origin: "manual override".into(),
                actor: o.actor.clone(),
                rationale: o.rationale.clone(),
                granted_at: Some(o.set_at),
                expires_at: o.expires_at,
                applied,
                note: if !fits {
                    "value does not fit the feature kind".into()
                } else if !applied {
                    "expired".into()
                } else {
                    String::new()
                },
            });
        }
    }

    // 6. Usage periods end: counters reset.
    for f in &features {
        if let Some(p) = f.period {
            horizon(p.end);
        }
    }
    // A billing period that has not started yet (the calendar month stands in) starts later.
    if catalog.features.iter().any(|f| f.kind == FeatureKind::Counter(crate::catalog::Period::BillingPeriod)) {
        horizon(billing.map(|(start, _)| start));
    }

    ResolvedTenant {
        catalog: Arc::clone(catalog),
        tenant_id: Arc::from(state.tenant_id.as_str()),
        known: state.known,
        revision: state.revision,
        evaluated_at: now,
        plan,
        lifecycle,
        features,
        valid_until,
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
