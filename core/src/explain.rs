//! Explain (SPEC §4): why a tenant gets what it gets. Built from [`resolve_traced`] and
//! [`decide_idx`] — the very functions `Check` uses — so the two can never disagree.

use std::sync::Arc;

use crate::catalog::{Catalog, FeatureIdx, Value};
use crate::decide::{Decision, Intent, Reason, Upgrade, decide_idx};
use crate::lifecycle::{Phase, days_left};
use crate::resolve::{Contribution, ContributionKind, PlanCandidate, ResolvedTenant, Trace, resolve_traced};
use crate::tenant::{Change, SubscriptionStatus, TenantState, UnixTime};

#[derive(Debug, Clone)]
pub struct FeatureExplanation {
    pub feature: FeatureIdx,
    pub effective: Value,
    pub decision: Decision,
    pub contributions: Vec<Contribution>,
    pub last_change: Option<Change>,
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferStatus {
    pub key: String,
    pub plan: String,
    pub days: i64,
    pub open: bool,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Explanation {
    pub resolved: ResolvedTenant,
    pub candidates: Vec<PlanCandidate>,
    pub features: Vec<FeatureExplanation>,
    pub offers: Vec<OfferStatus>,
}

/// Explain `features` (all when `None`) at `now`. `usage` gives the current usage per feature.
pub fn explain(
    catalog: &Arc<Catalog>,
    state: &TenantState,
    now: UnixTime,
    features: Option<&[FeatureIdx]>,
    usage: &dyn Fn(FeatureIdx) -> i64,
) -> Explanation {
    let mut trace = Trace::default();
    let resolved = resolve_traced(catalog, state, now, Some(&mut trace));
    let all: Vec<FeatureIdx> = (0..catalog.features.len()).collect();
    let wanted = features.unwrap_or(&all);
    let features = wanted
        .iter()
        .map(|&fi| {
            let decision = decide_idx(&resolved, fi, 1, Intent::Write, usage(fi));
            let contributions = std::mem::take(&mut trace.contributions[fi]);
            let last_change = contributions
                .iter()
                .filter(|c| c.granted_at.is_some() && !c.actor.is_empty())
                .max_by_key(|c| c.granted_at)
                .map(|c| Change {
                    actor: c.actor.clone(),
                    at: c.granted_at.unwrap_or_default(),
                    rationale: c.rationale.clone(),
                    origin: c.origin.clone(),
                })
                .or_else(|| state.last_change.clone());
            let summary = summarize(catalog, &resolved, fi, &decision, &contributions);
            FeatureExplanation {
                feature: fi,
                effective: resolved.features[fi].value,
                decision,
                contributions,
                last_change,
                summary,
            }
        })
        .collect();
    Explanation { offers: trial_offers(catalog, state, &resolved), resolved, candidates: trace.candidates, features }
}

fn summarize(c: &Catalog, r: &ResolvedTenant, fi: FeatureIdx, d: &Decision, contributions: &[Contribution]) -> String {
    let key = &c.features[fi].key;
    let applied: Vec<String> = contributions
        .iter()
        .filter(|x| x.applied)
        .map(|x| match x.kind {
            ContributionKind::Plan => format!("plan {} gives {}", x.key, x.value),
            ContributionKind::DefaultPlan => format!("default plan {} gives {}", x.key, x.value),
            ContributionKind::Seats => format!("{} seats from the subscription", x.value),
            ContributionKind::AddOn => format!("add-on {} ×{} adds {}", x.key, x.quantity, x.value),
            // Who and why are the contribution's own fields: the open plane blanks them.
            ContributionKind::Override => format!("override to {}", x.value),
        })
        .collect();
    let verdict = match (d.allowed, d.reason) {
        (true, Reason::Shadow) => format!("allowed (shadow: would be {})", d.shadow_denial.map_or("", Reason::as_str)),
        (true, reason) => format!("allowed ({})", reason.as_str()),
        (false, reason) => format!("denied ({})", reason.as_str()),
    };
    let usage = match (d.used, d.value) {
        (Some(u), Some(v)) => format!(", {u} of {v} used"),
        _ => String::new(),
    };
    let hint = match &d.upgrade {
        Some(Upgrade::Plan(p)) => format!("; plan {p} would allow it"),
        Some(Upgrade::AddOn(a)) => format!("; add-on {a} would allow it"),
        None => String::new(),
    };
    let phase = match r.lifecycle.phase {
        Phase::Active | Phase::Trialing | Phase::PastDue => String::new(),
        p => format!(" [{}]", p.as_str()),
    };
    format!(
        "{key}: {verdict}{usage} — {}{hint}{phase}",
        if applied.is_empty() { "nothing grants it".into() } else { applied.join(", ") }
    )
}

/// Which catalog trial offers the tenant may start now, and why not for the others.
pub fn trial_offers(c: &Catalog, state: &TenantState, r: &ResolvedTenant) -> Vec<OfferStatus> {
    let paying: Vec<&str> = state
        .subscriptions
        .iter()
        .filter(|s| matches!(s.status, SubscriptionStatus::Active | SubscriptionStatus::PastDue))
        .filter_map(|s| s.plan.as_deref())
        .collect();
    let trialing = state.subscriptions.iter().any(|s| s.status == SubscriptionStatus::Trialing);
    let current = &c.plans_by_rank()[r.plan.idx];
    c.trial_offers
        .iter()
        .map(|o| {
            let offered_rank = c.plan(&o.plan).map_or(i64::MAX, |p| p.rank);
            let why_not = if trialing && o.not_while_trialing {
                Some("not offered while a trial is running".to_string())
            } else if current.rank >= offered_rank {
                Some(format!("already on {} (rank {} ≥ {})", current.key, current.rank, offered_rank))
            } else if !o.requires_paid_plan.is_empty()
                && !o.requires_paid_plan.iter().any(|p| paying.contains(&p.as_str()))
            {
                Some(format!("requires a paid subscription to {}", o.requires_paid_plan.join(" or ")))
            } else {
                None
            };
            OfferStatus {
                key: o.key.clone(),
                plan: o.plan.clone(),
                days: o.days,
                open: why_not.is_none(),
                reason: why_not.unwrap_or_default(),
            }
        })
        .collect()
}

/// One-line lifecycle summary for Explain.
pub fn lifecycle_summary(r: &ResolvedTenant) -> String {
    let l = &r.lifecycle;
    match (l.phase, l.trial_end) {
        (Phase::Trialing, Some(end)) => {
            format!("trialing, {} day(s) left (ends {end})", days_left(end, r.evaluated_at))
        }
        _ => l.summary(r.evaluated_at),
    }
}
