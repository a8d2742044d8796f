//! `Check` and `CheckBatch`: the intent in, the decision out. [`decision`] runs on every check:
//! it clones only the strings the message owns and allocates nothing else but the notices.

use super::ts;
use crate::catalog::FeatureKind;
use crate::command::{Invalid, invalid};
use crate::decide::{Decision, Intent, Reason, Upgrade};
use crate::lifecycle::{Notice, NoticeKind, Phase};
use crate::pb;
use crate::resolve::{ResolvedTenant, Source};
use crate::service::CheckItem;

/// `INTENT_UNSPECIFIED` is a write.
pub fn intent(raw: i32) -> Result<Intent, Invalid> {
    match pb::Intent::try_from(raw) {
        Ok(pb::Intent::Read) => Ok(Intent::Read),
        Ok(pb::Intent::Write | pb::Intent::Unspecified) => Ok(Intent::Write),
        Err(_) => Err(invalid("intent", format!("unknown value {raw}"))),
    }
}

impl TryFrom<pb::CheckBatchItem> for CheckItem {
    type Error = Invalid;

    fn try_from(i: pb::CheckBatchItem) -> Result<CheckItem, Invalid> {
        Ok(CheckItem { feature: i.feature, quantity: i.quantity, intent: intent(i.intent)? })
    }
}

impl From<Reason> for pb::Reason {
    fn from(r: Reason) -> pb::Reason {
        match r {
            Reason::Granted => pb::Reason::Granted,
            Reason::EditionBypass => pb::Reason::EditionBypass,
            Reason::UnknownFeature => pb::Reason::UnknownFeature,
            Reason::TenantArchived => pb::Reason::TenantArchived,
            Reason::HardLocked => pb::Reason::HardLocked,
            Reason::AddOnRequired => pb::Reason::AddonRequired,
            Reason::DisabledByOverride => pb::Reason::DisabledByOverride,
            Reason::NotInPlan => pb::Reason::NotInPlan,
            Reason::LimitExceeded => pb::Reason::LimitExceeded,
            Reason::Shadow => pb::Reason::Shadow,
        }
    }
}

impl From<Source> for pb::Source {
    fn from(s: Source) -> pb::Source {
        match s {
            Source::Plan => pb::Source::Plan,
            Source::AddOn => pb::Source::Addon,
            Source::Override => pb::Source::Override,
            Source::DefaultPlan => pb::Source::DefaultPlan,
            Source::Edition => pb::Source::Edition,
            Source::Fallback => pb::Source::Fallback,
        }
    }
}

impl From<FeatureKind> for pb::FeatureKind {
    fn from(k: FeatureKind) -> pb::FeatureKind {
        match k {
            FeatureKind::Boolean => pb::FeatureKind::Boolean,
            FeatureKind::Config => pb::FeatureKind::Config,
            FeatureKind::Gauge => pb::FeatureKind::Gauge,
            FeatureKind::Counter(_) => pb::FeatureKind::Counter,
        }
    }
}

impl From<Phase> for pb::Phase {
    fn from(p: Phase) -> pb::Phase {
        match p {
            Phase::Active => pb::Phase::Active,
            Phase::Trialing => pb::Phase::Trialing,
            Phase::TrialExpired => pb::Phase::TrialExpired,
            Phase::HardLocked => pb::Phase::HardLocked,
            Phase::Archived => pb::Phase::Archived,
            Phase::PastDue => pb::Phase::PastDue,
        }
    }
}

impl From<NoticeKind> for pb::NoticeKind {
    fn from(k: NoticeKind) -> pb::NoticeKind {
        match k {
            NoticeKind::TrialEnding => pb::NoticeKind::TrialEnding,
            NoticeKind::TrialExpired => pb::NoticeKind::TrialExpired,
            NoticeKind::HardLocked => pb::NoticeKind::HardLocked,
            NoticeKind::PaymentPastDue => pb::NoticeKind::PaymentPastDue,
            NoticeKind::TenantArchived => pb::NoticeKind::TenantArchived,
        }
    }
}

impl From<&Notice> for pb::Notice {
    fn from(n: &Notice) -> pb::Notice {
        pb::Notice {
            kind: pb::NoticeKind::from(n.kind) as i32,
            message: n.message.clone(),
            at: (n.at != 0).then(|| ts(n.at)),
            dismissible: n.dismissible,
            days_left: n.days_left,
        }
    }
}

impl From<&Upgrade> for pb::Upgrade {
    fn from(u: &Upgrade) -> pb::Upgrade {
        match u {
            Upgrade::Plan(k) => pb::Upgrade { kind: pb::UpgradeKind::Plan as i32, key: k.clone() },
            Upgrade::AddOn(k) => pb::Upgrade { kind: pb::UpgradeKind::Addon as i32, key: k.clone() },
        }
    }
}

/// A core decision plus the tenant-level facts every `Decision` message carries.
pub fn decision(r: &ResolvedTenant, d: &Decision) -> pb::Decision {
    let feature = d.feature.map(|fi| r.catalog.features[fi].key.clone()).unwrap_or_default();
    pb::Decision {
        allowed: d.allowed,
        reason: pb::Reason::from(d.reason) as i32,
        source: d.source.map_or(pb::Source::Unspecified, pb::Source::from) as i32,
        feature,
        kind: d.kind.map_or(pb::FeatureKind::Unspecified, pb::FeatureKind::from) as i32,
        limit: d.limit(),
        used: d.used,
        remaining: d.remaining,
        unlimited: d.unlimited(),
        notices: r.lifecycle.notices.iter().map(pb::Notice::from).collect(),
        upgrade: d.upgrade.as_ref().map(pb::Upgrade::from),
        shadow_denial: d.shadow_denial.map_or(pb::Reason::Unspecified, pb::Reason::from) as i32,
        revision: r.revision,
        plan: r.plan_key().to_string(),
        phase: pb::Phase::from(r.lifecycle.phase) as i32,
        fallback: r.fallback,
        period_start: d.period.map(|p| ts(p.start)),
        resets_at: d.period.and_then(|p| p.end).map(ts),
        quantity: d.quantity,
    }
}

/// Decisions for unknown features still name the feature the caller asked about.
pub fn decision_for(r: &ResolvedTenant, d: &Decision, asked: &str) -> pb::Decision {
    let mut out = decision(r, d);
    if out.feature.is_empty() {
        out.feature = asked.to_string();
    }
    out
}

pub fn check_response(r: &ResolvedTenant, d: &Decision, asked: &str) -> pb::CheckResponse {
    pb::CheckResponse { decision: Some(decision_for(r, d, asked)) }
}

/// One decision per item, in request order.
pub fn check_batch_response(r: &ResolvedTenant, ds: &[Decision], items: &[CheckItem]) -> pb::CheckBatchResponse {
    pb::CheckBatchResponse { decisions: ds.iter().zip(items).map(|(d, i)| decision_for(r, d, &i.feature)).collect() }
}
