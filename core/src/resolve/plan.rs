//! Step 1 of resolution: which plan the tenant is on, by what right, and in which lifecycle
//! phase (SPEC §3.1, §3.5).

use crate::catalog::{Catalog, Lifecycle};
use crate::lifecycle::{self, LifecycleState};
use crate::tenant::{PlanAssignment, Subscription, SubscriptionStatus, TenantState, UnixTime};

use super::trace::Trace;
use super::{Horizon, live};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanSource {
    Subscription,
    ManualAssignment,
    ProductTrial,
    Default,
    UnknownTenant,
}

impl PlanSource {
    /// The tenant fell back to the catalog's default plan rather than being given one.
    pub(super) fn is_default(self) -> bool {
        matches!(self, PlanSource::Default | PlanSource::UnknownTenant)
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

/// The outcome of step 1.
pub(super) struct Chosen<'s> {
    pub(super) plan: PlanChoice,
    pub(super) lifecycle: LifecycleState,
    /// The subscription that entitles to the plan: seats and billing period come from it.
    pub(super) subscription: Option<&'s Subscription>,
}

/// What entitles a tenant to a plan. Kept by reference so the non-traced path formats only
/// the winner's origin.
#[derive(Clone, Copy)]
enum Entitler<'s> {
    Subscription(&'s Subscription),
    Assignment(&'s PlanAssignment),
}

impl<'s> Entitler<'s> {
    fn choice(self, idx: usize) -> PlanChoice {
        match self {
            Entitler::Subscription(s) => {
                PlanChoice { idx, source: PlanSource::Subscription, origin: subscription_origin(s) }
            }
            Entitler::Assignment(a) => {
                PlanChoice { idx, source: PlanSource::ManualAssignment, origin: assignment_origin(a) }
            }
        }
    }

    fn subscription(self) -> Option<&'s Subscription> {
        match self {
            Entitler::Subscription(s) => Some(s),
            Entitler::Assignment(_) => None,
        }
    }
}

/// The highest-rank entitling source so far, with its plan's index by rank.
struct Best<'s> {
    idx: usize,
    by: Entitler<'s>,
}

/// Which subscription, and which Stripe event last set it (and when).
fn subscription_origin(sub: &Subscription) -> String {
    format!(
        "stripe subscription {} ({}; last event {} at {})",
        sub.id,
        sub.status.as_str(),
        sub.last_event_id,
        sub.last_event_created
    )
}

/// No names or rationale here: origins are shown on the open data plane (SPEC §4); who assigned
/// the plan and why is admin-plane data (`GetTenant`, the audit log).
fn assignment_origin(a: &PlanAssignment) -> String {
    match a.expires_at {
        Some(t) => format!("manual assignment of {} (until {t})", a.plan),
        None => format!("manual assignment of {}", a.plan),
    }
}

/// A plan key's index in [`Catalog::plans_by_rank`].
fn rank_idx(catalog: &Catalog, key: &str) -> Option<usize> {
    catalog.plans_by_rank().iter().position(|p| p.key == key)
}

/// Step 1: the plan, its origin and the lifecycle state; candidates go into `trace`.
pub(super) fn choose<'s>(
    catalog: &Catalog,
    state: &'s TenantState,
    now: UnixTime,
    trace: Option<&mut Trace>,
    horizon: &mut Horizon,
) -> Chosen<'s> {
    let best = best_entitling(catalog, state, now, trace, horizon);
    if state.archived {
        let plan = match best {
            Some(b) => b.by.choice(b.idx),
            None => PlanChoice {
                idx: rank_idx(catalog, &catalog.default_plan).unwrap_or(0),
                source: PlanSource::Default,
                origin: "archived".to_string(),
            },
        };
        Chosen { plan, lifecycle: lifecycle::archived_by_flag(), subscription: None }
    } else if let Some(best) = best {
        entitled(&catalog.lifecycle, state, now, best)
    } else {
        unentitled(catalog, state, now)
    }
}

/// Every subscription, then every manual assignment, as a candidate; the first of the highest
/// rank wins.
fn best_entitling<'s>(
    catalog: &Catalog,
    state: &'s TenantState,
    now: UnixTime,
    mut trace: Option<&mut Trace>,
    horizon: &mut Horizon,
) -> Option<Best<'s>> {
    let mut best: Option<Best<'s>> = None;
    let mut consider = |idx: usize, by: Entitler<'s>| {
        if best.as_ref().is_none_or(|b| idx > b.idx) {
            best = Some(Best { idx, by });
        }
    };
    for sub in &state.subscriptions {
        let Some(plan) = &sub.plan else { continue };
        let idx = rank_idx(catalog, plan);
        if let Some(t) = trace.as_deref_mut() {
            t.record_subscription(sub, plan, idx, subscription_origin(sub));
        }
        if let (true, Some(idx)) = (sub.status.entitles(), idx) {
            consider(idx, Entitler::Subscription(sub));
        }
    }
    for a in &state.plan_assignments {
        let idx = rank_idx(catalog, &a.plan);
        let unexpired = live(a.expires_at, now);
        if let Some(t) = trace.as_deref_mut() {
            t.record_assignment(a, idx, unexpired, assignment_origin(a));
        }
        if let (true, Some(idx)) = (unexpired, idx) {
            horizon.include(a.expires_at);
            consider(idx, Entitler::Assignment(a));
        }
    }
    best
}

/// An entitling source won: past due (any subscription) beats a Stripe trial beats active.
fn entitled<'s>(policy: &Lifecycle, state: &'s TenantState, now: UnixTime, best: Best<'s>) -> Chosen<'s> {
    let subscription = best.by.subscription();
    let lifecycle = if state.subscriptions.iter().any(|s| s.status == SubscriptionStatus::PastDue) {
        lifecycle::past_due()
    } else if let Some(s) = subscription.filter(|s| s.status == SubscriptionStatus::Trialing) {
        lifecycle::stripe_trial(policy, s.trial_end, now)
    } else {
        LifecycleState::active()
    };
    Chosen { plan: best.by.choice(best.idx), lifecycle, subscription }
}

/// Nothing entitles: the product-led trial's plan while it grants one, else the default plan.
fn unentitled<'s>(catalog: &Catalog, state: &TenantState, now: UnixTime) -> Chosen<'s> {
    let policy = &catalog.lifecycle;
    let default_idx = rank_idx(catalog, &catalog.default_plan).unwrap_or(0);
    let default_source = if state.known { PlanSource::Default } else { PlanSource::UnknownTenant };
    let (plan, lifecycle) = match state.trial {
        Some(trial) => {
            let lc = lifecycle::product_trial(policy, trial.start, trial.end, now);
            let trial_idx = policy.trial_plan.as_deref().and_then(|key| rank_idx(catalog, key));
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
            (choice, lc)
        }
        None => {
            let origin = if state.known { "no entitling subscription or assignment" } else { "unknown tenant" };
            (PlanChoice { idx: default_idx, source: default_source, origin: origin.into() }, LifecycleState::active())
        }
    };
    Chosen { plan, lifecycle, subscription: None }
}
