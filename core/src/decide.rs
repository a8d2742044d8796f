//! `decide(resolved, feature, quantity, intent, used) -> Decision` (SPEC §3). Pure and cheap:
//! the hot path of every `Check`. A denial is data, never an error.

use crate::catalog::{Catalog, Edition, Enforcement, FeatureIdx, FeatureKind, Value};
use crate::lifecycle::Phase;
use crate::resolve::{ResolvedTenant, Source};
use crate::usage::{self, UsagePeriod};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Intent {
    Read,
    #[default]
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Granted,
    EditionBypass,
    UnknownFeature,
    TenantArchived,
    HardLocked,
    AddOnRequired,
    DisabledByOverride,
    NotInPlan,
    LimitExceeded,
    /// Allowed only because the gate is in shadow enforcement.
    Shadow,
}

impl Reason {
    /// Every reason, in declaration order: `r as usize` indexes it.
    pub const ALL: [Reason; 10] = [
        Reason::Granted,
        Reason::EditionBypass,
        Reason::UnknownFeature,
        Reason::TenantArchived,
        Reason::HardLocked,
        Reason::AddOnRequired,
        Reason::DisabledByOverride,
        Reason::NotInPlan,
        Reason::LimitExceeded,
        Reason::Shadow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Granted => "GRANTED",
            Reason::EditionBypass => "EDITION_BYPASS",
            Reason::UnknownFeature => "UNKNOWN_FEATURE",
            Reason::TenantArchived => "TENANT_ARCHIVED",
            Reason::HardLocked => "HARD_LOCKED",
            Reason::AddOnRequired => "ADDON_REQUIRED",
            Reason::DisabledByOverride => "DISABLED_BY_OVERRIDE",
            Reason::NotInPlan => "NOT_IN_PLAN",
            Reason::LimitExceeded => "LIMIT_EXCEEDED",
            Reason::Shadow => "SHADOW",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    Plan(String),
    AddOn(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    pub source: Option<Source>,
    pub feature: Option<FeatureIdx>,
    pub kind: Option<FeatureKind>,
    pub quantity: i64,
    /// The effective value (numeric limit or boolean).
    pub value: Option<Value>,
    pub used: Option<i64>,
    pub remaining: Option<i64>,
    pub upgrade: Option<Upgrade>,
    pub shadow_denial: Option<Reason>,
    pub period: Option<UsagePeriod>,
}

impl Decision {
    pub fn limit(&self) -> Option<i64> {
        match self.value {
            Some(Value::Number(n)) if self.kind.is_some_and(FeatureKind::is_numeric) => Some(n),
            _ => None,
        }
    }
    pub fn unlimited(&self) -> bool {
        self.value == Some(Value::Unlimited)
    }
}

/// Decide one check. `used` is the tenant's current usage of a metered feature (ignored
/// otherwise); `quantity` is what the request wants to consume or the size it asks about.
pub fn decide(r: &ResolvedTenant, feature: &str, quantity: i64, intent: Intent, used: i64) -> Decision {
    let catalog = &*r.catalog;
    let Some(fi) = catalog.feature_idx(feature) else {
        let bypass = catalog.edition == Edition::Ce;
        return Decision {
            allowed: bypass,
            reason: if bypass { Reason::EditionBypass } else { Reason::UnknownFeature },
            source: bypass.then_some(Source::Edition),
            feature: None,
            kind: None,
            quantity,
            value: None,
            used: None,
            remaining: None,
            upgrade: None,
            shadow_denial: None,
            period: None,
        };
    };
    decide_idx(r, fi, quantity, intent, used)
}

/// Whether a usage report is recorded, and against which limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGate {
    /// Enforced, and the feature's gate (locks, edition, plan) refuses any use.
    Refuse(Reason),
    /// Record it; `limit` is the enforced limit (`None`: not enforced, or unlimited).
    Record { limit: Option<i64> },
}

/// The gate part of a decision (locks, edition, shadow) decides whether a report is enforced,
/// and a granted numeric value is its limit.
pub fn usage_gate(r: &ResolvedTenant, fi: FeatureIdx, enforce: bool) -> UsageGate {
    let gate = decide_idx(r, fi, 0, Intent::Write, 0);
    if enforce && !gate.allowed {
        return UsageGate::Refuse(gate.reason);
    }
    match (enforce, gate.reason, r.features[fi].value) {
        (true, Reason::Granted, Value::Number(n)) => UsageGate::Record { limit: Some(n) },
        _ => UsageGate::Record { limit: None },
    }
}

/// [`decide`] for a feature already looked up.
pub fn decide_idx(r: &ResolvedTenant, fi: FeatureIdx, quantity: i64, intent: Intent, used: i64) -> Decision {
    let catalog = &*r.catalog;
    let def = &catalog.features[fi];
    let f = &r.features[fi];
    let metered = def.kind.is_metered();
    let mut d = Decision {
        allowed: true,
        reason: Reason::Granted,
        source: Some(f.source),
        feature: Some(fi),
        kind: Some(def.kind),
        quantity,
        value: Some(f.value),
        used: metered.then_some(used),
        remaining: if metered { usage::remaining(f.value, used) } else { None },
        upgrade: None,
        shadow_denial: None,
        period: f.period,
    };

    if catalog.edition == Edition::Ce {
        d.reason = Reason::EditionBypass;
        d.source = Some(Source::Edition);
        return d;
    }
    // Lifecycle locks are tenant-wide and are not subject to a feature's shadow rollout.
    match (r.lifecycle.phase, intent) {
        (Phase::Archived, _) => return deny(d, Reason::TenantArchived),
        (Phase::HardLocked, Intent::Write) => return deny(d, Reason::HardLocked),
        _ => {}
    }

    let denial = match def.kind {
        FeatureKind::Boolean => match f.value {
            v if v.is_truthy() => None,
            _ if f.overridden => Some(Reason::DisabledByOverride),
            _ if def.addon_only => Some(Reason::AddOnRequired),
            _ => Some(Reason::NotInPlan),
        },
        FeatureKind::Config => (!usage::fits(f.value, 0, quantity)).then_some(Reason::LimitExceeded),
        FeatureKind::Gauge | FeatureKind::Counter(_) => {
            (!usage::fits(f.value, used, quantity)).then_some(Reason::LimitExceeded)
        }
    };
    let Some(reason) = denial else { return d };
    if !f.overridden {
        d.upgrade = upgrade_hint(catalog, r.plan.idx, fi, f.value, if metered { used } else { 0 }, quantity);
    }
    if def.enforcement == Enforcement::Shadow {
        d.shadow_denial = Some(reason);
        d.reason = Reason::Shadow;
        return d;
    }
    d.allowed = false;
    d.reason = reason;
    d
}

fn deny(mut d: Decision, reason: Reason) -> Decision {
    d.allowed = false;
    d.reason = reason;
    d
}

/// The lowest-rank plan above the current one that would allow it, else an add-on that would.
fn upgrade_hint(
    c: &Catalog,
    plan_idx: usize,
    fi: FeatureIdx,
    current: Value,
    used: i64,
    quantity: i64,
) -> Option<Upgrade> {
    let allows = |v: Value| match v {
        Value::Bool(b) => b,
        v => usage::fits(v, used, quantity),
    };
    if let Some(p) = c.plans_by_rank().iter().skip(plan_idx + 1).find(|p| allows(p.values[fi])) {
        return Some(Upgrade::Plan(p.key.clone()));
    }
    c.addons
        .iter()
        .find(|a| a.grants.iter().any(|&(i, v)| i == fi && allows(current.stack(v))))
        .map(|a| Upgrade::AddOn(a.key.clone()))
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn reason_all_is_indexed_by_discriminant() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.as_str());
        }
    }
}
