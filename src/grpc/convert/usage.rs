//! `Usage` and `RecordUsage`: what the data plane answers, and what a relay forwards to its
//! upstream and reads back.

use super::{from_ts, limit, ts};
use crate::catalog::{Catalog, FeatureKind, Value};
use crate::command::{Invalid, invalid};
use crate::pb;
use crate::service::{RecordUsageResult, UsageLine};
use crate::store::{UsageMode, UsageOutcome, UsageReport};
use crate::tenant::UnixTime;

pub fn usage_mode(raw: i32) -> Result<UsageMode, Invalid> {
    match pb::UsageMode::try_from(raw) {
        Ok(pb::UsageMode::Delta) => Ok(UsageMode::Delta),
        Ok(pb::UsageMode::Set) => Ok(UsageMode::Set),
        _ => Err(invalid("mode", "must be USAGE_MODE_DELTA or USAGE_MODE_SET")),
    }
}

impl From<UsageMode> for pb::UsageMode {
    fn from(m: UsageMode) -> pb::UsageMode {
        match m {
            UsageMode::Delta => pb::UsageMode::Delta,
            UsageMode::Set => pb::UsageMode::Set,
        }
    }
}

/// A relay forwards the usage reports it accepted.
impl From<&UsageReport> for pb::RecordUsageRequest {
    fn from(r: &UsageReport) -> pb::RecordUsageRequest {
        pb::RecordUsageRequest {
            tenant_id: r.tenant_id.clone(),
            feature: r.feature.clone(),
            value: r.value,
            mode: pb::UsageMode::from(r.mode) as i32,
            idempotency_key: r.idempotency_key.clone().unwrap_or_default(),
            // The upstream enforces atomically with its own (identical) view of the limit.
            enforce: r.limit.is_some(),
        }
    }
}

impl From<&RecordUsageResult> for pb::RecordUsageResponse {
    fn from(r: &RecordUsageResult) -> pb::RecordUsageResponse {
        pb::RecordUsageResponse {
            applied: r.applied,
            duplicate: r.duplicate,
            used: r.used,
            limit: limit(r.limit),
            unlimited: r.limit == Value::Unlimited,
            remaining: crate::usage::remaining(r.limit, r.used),
            reason: r.reason.map_or(pb::Reason::Granted, pb::Reason::from) as i32,
            period_start: r.period.map(|p| ts(p.start)),
            resets_at: r.period.and_then(|p| p.end).map(ts),
        }
    }
}

/// What a relay takes from its upstream's answer.
impl From<pb::RecordUsageResponse> for UsageOutcome {
    fn from(r: pb::RecordUsageResponse) -> UsageOutcome {
        UsageOutcome { applied: r.applied, duplicate: r.duplicate, used: r.used }
    }
}

pub fn usage(catalog: &Catalog, lines: &[UsageLine]) -> pb::UsageResponse {
    let usage = lines
        .iter()
        .map(|l| {
            let def = &catalog.features[l.feature];
            pb::FeatureUsage {
                feature: def.key.clone(),
                kind: pb::FeatureKind::from(def.kind) as i32,
                used: l.used,
                limit: limit(l.limit),
                unlimited: l.limit == Value::Unlimited,
                remaining: crate::usage::remaining(l.limit, l.used),
                period: match def.kind {
                    FeatureKind::Counter(p) => p.as_str().to_string(),
                    _ => String::new(),
                },
                period_start: l.period.map(|p| ts(p.start)),
                resets_at: l.period.and_then(|p| p.end).map(ts),
            }
        })
        .collect();
    pb::UsageResponse { usage }
}

/// A relay asks its upstream for one feature's usage...
pub fn usage_request(tenant_id: &str, feature: &str) -> pb::UsageRequest {
    pb::UsageRequest { tenant_id: tenant_id.into(), features: vec![feature.into()] }
}

/// ...and reads it: 0 when the upstream's count belongs to a period before `period_start`.
pub fn used(r: pb::UsageResponse, feature: &str, period_start: UnixTime) -> i64 {
    r.usage
        .into_iter()
        .find(|u| u.feature == feature)
        .filter(|u| u.period_start.as_ref().is_none_or(|p| from_ts(p) >= period_start))
        .map_or(0, |u| u.used)
}
