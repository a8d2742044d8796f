//! What Explain records beside the resolution (SPEC §4): every plan candidate and every
//! contribution to every feature, applied or not, and why not. Only written when a trace is
//! asked for; the values themselves are computed in [`super::plan`] and [`super::values`].

use crate::catalog::{Catalog, FeatureIdx, Value};
use crate::tenant::{AddOnGrant, GrantOrigin, Override, PlanAssignment, Subscription, UnixTime};

use super::plan::{PlanChoice, PlanSource};
use super::values::{ResolvedFeature, seats};

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

impl Trace {
    /// A subscription naming `plan` (at rank index `idx`, if the catalog knows it).
    pub(super) fn record_subscription(&mut self, sub: &Subscription, plan: &str, idx: Option<usize>, origin: String) {
        let note = match (idx, sub.status.entitles()) {
            (None, _) => format!("plan `{plan}` is not in the catalog"),
            (_, false) => format!("status `{}` does not entitle", sub.status.as_str()),
            _ if sub.cancel_at_period_end => "cancels at period end; entitles until then".into(),
            _ => String::new(),
        };
        self.candidates.push(PlanCandidate {
            plan: plan.to_string(),
            source: PlanSource::Subscription,
            origin,
            entitles: sub.status.entitles() && idx.is_some(),
            note,
        });
    }

    /// A manual plan assignment (at rank index `idx`, if the catalog knows its plan).
    pub(super) fn record_assignment(
        &mut self,
        a: &PlanAssignment,
        idx: Option<usize>,
        unexpired: bool,
        origin: String,
    ) {
        let note = match (idx, unexpired) {
            (None, _) => format!("plan `{}` is not in the catalog", a.plan),
            (_, false) => "expired".into(),
            _ => String::new(),
        };
        self.candidates.push(PlanCandidate {
            plan: a.plan.clone(),
            source: PlanSource::ManualAssignment,
            origin,
            entitles: unexpired && idx.is_some(),
            note,
        });
    }

    /// Starts the contributions: one per feature from the chosen plan (or its seats), with the
    /// value `features` holds before add-ons.
    pub(super) fn record_plan(
        &mut self,
        catalog: &Catalog,
        plan: &PlanChoice,
        features: &[ResolvedFeature],
        sub: Option<&Subscription>,
    ) {
        self.contributions = vec![Vec::new(); catalog.features.len()];
        let plan_def = &catalog.plans_by_rank()[plan.idx];
        let seats = seats(plan_def, sub);
        let plan_kind = if plan.source.is_default() { ContributionKind::DefaultPlan } else { ContributionKind::Plan };
        for (fi, f) in features.iter().enumerate() {
            let (kind, origin) = match seats {
                Some((seats_fi, sub, _)) if seats_fi == fi => {
                    (ContributionKind::Seats, format!("seat quantity of stripe subscription {}", sub.id))
                }
                _ => (plan_kind, plan.origin.clone()),
            };
            self.contributions[fi].push(Contribution {
                kind,
                key: plan_def.key.clone(),
                value: f.value,
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
    }

    /// One add-on grant: a contribution to each feature it touches, applied or not.
    pub(super) fn record_addon(
        &mut self,
        g: &AddOnGrant,
        grants: &[(FeatureIdx, Value)],
        unexpired: bool,
        sub_ok: bool,
        applied: bool,
    ) {
        let origin = match &g.origin {
            // Who granted it is the contribution's `actor` (blanked on the open plane).
            GrantOrigin::Manual => "manual grant".to_string(),
            GrantOrigin::Stripe { subscription_id, item_id } => {
                format!("stripe subscription {subscription_id} item {item_id}")
            }
            GrantOrigin::StripeEntitlement { lookup_key } => format!("stripe entitlement {lookup_key}"),
        };
        for &(fi, grant) in grants {
            let note = if !unexpired {
                "expired".to_string()
            } else if !sub_ok {
                "its subscription does not entitle".to_string()
            } else {
                String::new()
            };
            self.contributions[fi].push(Contribution {
                kind: ContributionKind::AddOn,
                key: g.addon.clone(),
                value: grant.times(g.quantity),
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

    /// An override of feature `fi`; an applied one marks everything applied before it replaced.
    pub(super) fn record_override(&mut self, fi: FeatureIdx, o: &Override, fits: bool, applied: bool) {
        if applied {
            for c in &mut self.contributions[fi] {
                if c.applied {
                    c.applied = false;
                    c.note = "replaced by an override".into();
                }
            }
        }
        self.contributions[fi].push(Contribution {
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
