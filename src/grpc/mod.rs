//! gRPC (SPEC §4): the two tonic services, conversions between core types and protobuf, and —
//! in one place — the mapping of errors to gRPC statuses.

mod admin;
mod data;
pub mod state;

pub use admin::AdminApi;
pub use data::DataApi;

use std::sync::Arc;

use prost_types::Timestamp;
use subtle::ConstantTimeEq;
use tonic::Status;

use crate::catalog::{FeatureKind, Value};
use crate::decide::{Decision, Intent, Reason, Upgrade};
use crate::lifecycle::{Notice, NoticeKind, Phase};
use crate::pb;
use crate::resolve::{ResolvedTenant, Source};
use crate::service::ServiceError;
use crate::tenant::UnixTime;

/// The one mapping of service errors to gRPC statuses. Denials never get here: they are data.
impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        match e {
            ServiceError::InvalidArgument(_) => Status::invalid_argument(e.to_string()),
            ServiceError::Unavailable(_) => Status::unavailable(e.to_string()),
            ServiceError::Refused { code, message } => Status::new(code, message),
            ServiceError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

pub fn ts(t: UnixTime) -> Timestamp {
    Timestamp { seconds: t, nanos: 0 }
}

pub fn opt_ts(t: Option<UnixTime>) -> Option<Timestamp> {
    t.map(ts)
}

pub fn from_ts(t: &Timestamp) -> UnixTime {
    t.seconds
}

pub fn intent(raw: i32) -> Result<Intent, Status> {
    match pb::Intent::try_from(raw) {
        Ok(pb::Intent::Read) => Ok(Intent::Read),
        Ok(pb::Intent::Write | pb::Intent::Unspecified) => Ok(Intent::Write),
        Err(_) => Err(Status::invalid_argument(format!("intent: unknown value {raw}"))),
    }
}

pub fn reason(r: Reason) -> pb::Reason {
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

pub fn source(s: Source) -> pb::Source {
    match s {
        Source::Plan => pb::Source::Plan,
        Source::AddOn => pb::Source::Addon,
        Source::Override => pb::Source::Override,
        Source::DefaultPlan => pb::Source::DefaultPlan,
        Source::Edition => pb::Source::Edition,
        Source::Fallback => pb::Source::Fallback,
    }
}

pub fn kind(k: FeatureKind) -> pb::FeatureKind {
    match k {
        FeatureKind::Boolean => pb::FeatureKind::Boolean,
        FeatureKind::Config => pb::FeatureKind::Config,
        FeatureKind::Gauge => pb::FeatureKind::Gauge,
        FeatureKind::Counter(_) => pb::FeatureKind::Counter,
    }
}

pub fn phase(p: Phase) -> pb::Phase {
    match p {
        Phase::Active => pb::Phase::Active,
        Phase::Trialing => pb::Phase::Trialing,
        Phase::TrialExpired => pb::Phase::TrialExpired,
        Phase::HardLocked => pb::Phase::HardLocked,
        Phase::Archived => pb::Phase::Archived,
        Phase::PastDue => pb::Phase::PastDue,
    }
}

pub fn notice(n: &Notice) -> pb::Notice {
    let kind = match n.kind {
        NoticeKind::TrialEnding => pb::NoticeKind::TrialEnding,
        NoticeKind::TrialExpired => pb::NoticeKind::TrialExpired,
        NoticeKind::HardLocked => pb::NoticeKind::HardLocked,
        NoticeKind::PaymentPastDue => pb::NoticeKind::PaymentPastDue,
        NoticeKind::TenantArchived => pb::NoticeKind::TenantArchived,
    };
    pb::Notice {
        kind: kind as i32,
        message: n.message.clone(),
        at: (n.at != 0).then(|| ts(n.at)),
        dismissible: n.dismissible,
        days_left: n.days_left,
    }
}

pub fn value(v: Value) -> pb::Value {
    pb::Value {
        value: Some(match v {
            Value::Bool(b) => pb::value::Value::Enabled(b),
            Value::Number(n) => pb::value::Value::Number(n),
            Value::Unlimited => pb::value::Value::Unlimited(true),
        }),
    }
}

/// A core decision plus the tenant-level facts every `Decision` message carries.
pub fn decision(r: &ResolvedTenant, d: &Decision) -> pb::Decision {
    let feature = d.feature.map(|fi| r.catalog.features[fi].key.clone()).unwrap_or_default();
    pb::Decision {
        allowed: d.allowed,
        reason: reason(d.reason) as i32,
        source: d.source.map_or(pb::Source::Unspecified, source) as i32,
        feature,
        kind: d.kind.map_or(pb::FeatureKind::Unspecified, kind) as i32,
        limit: d.limit(),
        used: d.used,
        remaining: d.remaining,
        unlimited: d.unlimited(),
        notices: r.lifecycle.notices.iter().map(notice).collect(),
        upgrade: d.upgrade.as_ref().map(|u| match u {
            Upgrade::Plan(k) => pb::Upgrade { kind: pb::UpgradeKind::Plan as i32, key: k.clone() },
            Upgrade::AddOn(k) => pb::Upgrade { kind: pb::UpgradeKind::Addon as i32, key: k.clone() },
        }),
        shadow_denial: d.shadow_denial.map_or(pb::Reason::Unspecified, reason) as i32,
        revision: r.revision,
        plan: r.plan_key().to_string(),
        phase: phase(r.lifecycle.phase) as i32,
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

/// The admin plane requires a non-empty string field; name it in the error.
pub fn required<'a>(field: &'static str, v: &'a str) -> Result<&'a str, Status> {
    if v.trim().is_empty() { Err(Status::invalid_argument(format!("{field}: is required"))) } else { Ok(v) }
}

/// Interceptor: `authorization: Bearer <token>`, compared in constant time. Without a configured
/// token the admin plane is closed and the data plane is open (no interceptor at all).
#[derive(Clone)]
pub struct BearerAuth {
    token: Option<Arc<[u8]>>,
    plane: &'static str,
}

impl BearerAuth {
    pub fn admin(token: Option<&str>) -> BearerAuth {
        BearerAuth { token: Self::bytes(token), plane: "admin" }
    }

    /// `None`: no data token configured, so the data plane is open and needs no interceptor
    /// (converting every request for a no-op check cost ~1 % of a Check, BENCHMARKS.md §1.1).
    pub fn data(token: Option<&str>) -> Option<BearerAuth> {
        Self::bytes(token).map(|token| BearerAuth { token: Some(token), plane: "data" })
    }

    fn bytes(token: Option<&str>) -> Option<Arc<[u8]>> {
        token.filter(|t| !t.is_empty()).map(|t| Arc::from(t.as_bytes()))
    }

    pub fn check(&self, req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Err(Status::unauthenticated("the admin plane is disabled: start the server with --admin-token"));
        };
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`"))?;
        if bool::from(presented.as_bytes().ct_eq(expected)) {
            Ok(req)
        } else {
            Err(Status::unauthenticated(format!("invalid {} token", self.plane)))
        }
    }
}
