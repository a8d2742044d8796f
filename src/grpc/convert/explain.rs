//! The `Explain` answer: plan choice, lifecycle, and every contribution to every feature.

use super::{decision, opt_ts, ts};
use crate::catalog::Enforcement;
use crate::explain::{Explanation, FeatureExplanation, OfferStatus, lifecycle_summary};
use crate::pb;
use crate::resolve::{Contribution, ContributionKind, PlanCandidate, PlanSource, ResolvedTenant};
use crate::tenant::TenantState;

impl From<PlanSource> for pb::PlanSource {
    fn from(s: PlanSource) -> pb::PlanSource {
        match s {
            PlanSource::Subscription => pb::PlanSource::Subscription,
            PlanSource::ManualAssignment => pb::PlanSource::ManualAssignment,
            PlanSource::ProductTrial => pb::PlanSource::ProductTrial,
            PlanSource::Default => pb::PlanSource::Default,
            PlanSource::UnknownTenant => pb::PlanSource::UnknownTenant,
        }
    }
}

impl From<ContributionKind> for pb::ContributionKind {
    fn from(k: ContributionKind) -> pb::ContributionKind {
        match k {
            ContributionKind::Plan => pb::ContributionKind::Plan,
            ContributionKind::DefaultPlan => pb::ContributionKind::DefaultPlan,
            ContributionKind::Seats => pb::ContributionKind::Seats,
            ContributionKind::AddOn => pb::ContributionKind::Addon,
            ContributionKind::Override => pb::ContributionKind::Override,
        }
    }
}

impl From<&Contribution> for pb::Contribution {
    fn from(c: &Contribution) -> pb::Contribution {
        pb::Contribution {
            kind: pb::ContributionKind::from(c.kind) as i32,
            key: c.key.clone(),
            value: Some(c.value.into()),
            quantity: c.quantity,
            origin: c.origin.clone(),
            actor: c.actor.clone(),
            rationale: c.rationale.clone(),
            granted_at: opt_ts(c.granted_at),
            expires_at: opt_ts(c.expires_at),
            applied: c.applied,
            note: c.note.clone(),
        }
    }
}

impl From<&PlanCandidate> for pb::PlanCandidate {
    fn from(c: &PlanCandidate) -> pb::PlanCandidate {
        pb::PlanCandidate {
            plan: c.plan.clone(),
            source: pb::PlanSource::from(c.source) as i32,
            origin: c.origin.clone(),
            entitles: c.entitles,
            note: c.note.clone(),
        }
    }
}

impl From<&OfferStatus> for pb::TrialOffer {
    fn from(o: &OfferStatus) -> pb::TrialOffer {
        pb::TrialOffer {
            key: o.key.clone(),
            plan: o.plan.clone(),
            days: o.days,
            open: o.open,
            reason: o.reason.clone(),
        }
    }
}

fn feature(r: &ResolvedTenant, f: &FeatureExplanation) -> pb::FeatureExplanation {
    let def = &r.catalog.features[f.feature];
    pb::FeatureExplanation {
        feature: def.key.clone(),
        kind: pb::FeatureKind::from(def.kind) as i32,
        effective: Some(f.effective.into()),
        decision: Some(decision(r, &f.decision)),
        contributions: f.contributions.iter().map(pb::Contribution::from).collect(),
        last_change: f.last_change.as_ref().map(pb::Change::from),
        summary: f.summary.clone(),
        shadow: def.enforcement == Enforcement::Shadow,
    }
}

fn lifecycle(r: &ResolvedTenant) -> pb::Lifecycle {
    let lc = &r.lifecycle;
    pb::Lifecycle {
        phase: pb::Phase::from(lc.phase) as i32,
        trial_start: opt_ts(lc.trial_start),
        trial_end: opt_ts(lc.trial_end),
        trial_days_left: lc.days_left.unwrap_or_default(),
        soft_lock_at: opt_ts(lc.soft_lock_at),
        hard_lock_at: opt_ts(lc.hard_lock_at),
        archive_at: opt_ts(lc.archive_at),
        summary: lifecycle_summary(r),
    }
}

/// `state` is the stored state the explanation was computed from.
pub fn explain(e: &Explanation, state: &TenantState) -> pb::ExplainResponse {
    let r = &e.resolved;
    let catalog = &r.catalog;
    let plan_def = &catalog.plans_by_rank()[r.plan.idx];
    pb::ExplainResponse {
        tenant_id: r.tenant_id.to_string(),
        known: r.known,
        revision: r.revision,
        edition: catalog.edition.to_string(),
        evaluated_at: Some(ts(r.evaluated_at)),
        plan: Some(pb::PlanExplanation {
            key: plan_def.key.clone(),
            name: plan_def.name.clone(),
            rank: plan_def.rank,
            source: pb::PlanSource::from(r.plan.source) as i32,
            origin: r.plan.origin.clone(),
            candidates: e.candidates.iter().map(pb::PlanCandidate::from).collect(),
            summary: format!("{} (rank {}) from {}", plan_def.key, plan_def.rank, r.plan.origin),
        }),
        lifecycle: Some(lifecycle(r)),
        notices: r.lifecycle.notices.iter().map(pb::Notice::from).collect(),
        valid_until: opt_ts(r.valid_until),
        features: e.features.iter().map(|f| feature(r, f)).collect(),
        trial_offers: e.offers.iter().map(pb::TrialOffer::from).collect(),
        last_change: state.last_change.as_ref().map(pb::Change::from),
        subscriptions: state.subscriptions.iter().map(pb::Subscription::from).collect(),
    }
}

/// The open data plane's `Explain`: who made each change and why are people's names and
/// free text, shown only to a relay's or an admin's credential (SPEC §4). What changed, when,
/// from which source and until when stays.
pub fn without_people(e: &mut pb::ExplainResponse) {
    let forget = |c: &mut pb::Change| {
        c.actor.clear();
        c.rationale.clear();
    };
    e.last_change.iter_mut().for_each(forget);
    for f in &mut e.features {
        f.last_change.iter_mut().for_each(forget);
        for c in &mut f.contributions {
            c.actor.clear();
            c.rationale.clear();
        }
    }
}
