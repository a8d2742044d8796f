//! The data plane's questions: Check, CheckBatch, Explain, Usage, RecordUsage. The core
//! decides; this reads the cache (or store) and the clock, and hands both to it.

use std::sync::Arc;

use super::{Service, ServiceError, check_tenant, invalid};
use crate::cache::{Cached, CachedUsage};
use crate::catalog::{FeatureIdx, Value};
use crate::clock::unix_now;
use crate::command::quote;
use crate::decide::{Decision, Intent, Reason, UsageGate, decide, usage_gate};
use crate::explain::{Explanation, explain};
use crate::resolve;
use crate::store::{UsageMode, UsageReport};
use crate::tenant::{TenantState, UnixTime};
use crate::usage;

/// One check of a batch.
#[derive(Debug, Clone)]
pub struct CheckItem {
    pub feature: String,
    pub quantity: Option<i64>,
    pub intent: Intent,
}

#[derive(Debug, Clone)]
pub struct UsageLine {
    pub feature: FeatureIdx,
    pub used: i64,
    pub limit: Value,
    pub period: Option<usage::UsagePeriod>,
}

#[derive(Debug, Clone)]
pub struct RecordUsageResult {
    pub applied: bool,
    pub duplicate: bool,
    pub used: i64,
    pub limit: Value,
    pub reason: Option<Reason>,
    pub period: Option<usage::UsagePeriod>,
}

pub const MAX_BATCH: usize = 1000;

fn check_quantity(q: Option<i64>) -> Result<i64, ServiceError> {
    match q {
        None => Ok(1),
        Some(q) if q >= 0 => Ok(q),
        Some(q) => Err(invalid("quantity", format!("must not be negative (got {q})")).into()),
    }
}

impl Service {
    pub async fn check(
        &self,
        tenant: &str,
        feature: &str,
        quantity: Option<i64>,
        intent: Intent,
        min_revision: Option<u64>,
    ) -> Result<(Arc<Cached>, Decision), ServiceError> {
        let quantity = check_quantity(quantity)?;
        let c = self.resolved(tenant, min_revision).await?;
        let used = match self.catalog.feature_idx(feature) {
            Some(fi) => self.used(&c.tenant, fi).await?,
            None => 0,
        };
        let d = decide(&c.tenant, feature, quantity, intent, used);
        Ok((c, d))
    }

    pub async fn check_batch(
        &self,
        tenant: &str,
        items: &[CheckItem],
        min_revision: Option<u64>,
    ) -> Result<(Arc<Cached>, Vec<Decision>), ServiceError> {
        if items.len() > MAX_BATCH {
            return Err(invalid("items", format!("at most {MAX_BATCH} items per batch")).into());
        }
        let quantities = items.iter().map(|i| check_quantity(i.quantity)).collect::<Result<Vec<_>, _>>()?;
        let c = self.resolved(tenant, min_revision).await?;
        let mut out = Vec::with_capacity(items.len());
        for (item, q) in items.iter().zip(quantities) {
            let used = match self.catalog.feature_idx(&item.feature) {
                Some(fi) => self.used(&c.tenant, fi).await?,
                None => 0,
            };
            out.push(decide(&c.tenant, &item.feature, q, item.intent, used));
        }
        Ok((c, out))
    }

    fn feature_list(&self, features: &[String], metered_only: bool) -> Result<Vec<FeatureIdx>, ServiceError> {
        if features.is_empty() {
            return Ok((0..self.catalog.features.len())
                .filter(|&i| !metered_only || self.catalog.features[i].kind.is_metered())
                .collect());
        }
        features
            .iter()
            .map(|f| {
                let fi = self
                    .catalog
                    .feature_idx(f)
                    .ok_or_else(|| invalid("features", format!("unknown feature {}", quote(f))))?;
                if metered_only && !self.catalog.features[fi].kind.is_metered() {
                    return Err(invalid(
                        "features",
                        format!("{} is not a metered (gauge or counter) feature", quote(f)),
                    )
                    .into());
                }
                Ok(fi)
            })
            .collect()
    }

    /// Explain always reads the store: it is for humans, and must show the truth now.
    pub async fn explain(
        &self,
        tenant: &str,
        features: &[String],
        at: Option<UnixTime>,
    ) -> Result<(Explanation, TenantState), ServiceError> {
        check_tenant(tenant)?;
        let at = at.map(|t| crate::command::time("at", t)).transpose()?;
        let wanted = self.feature_list(features, false)?;
        let state = self.stores.tenants.load(tenant).await?;
        let now = at.unwrap_or_else(unix_now);
        // Usage for the period that contains `now`, read up front (the core does no IO).
        let probe = resolve::resolve(&self.catalog, &state, now);
        let mut used = vec![0i64; self.catalog.features.len()];
        for &fi in &wanted {
            used[fi] = self.used_in_period(&probe, fi, at.is_none()).await?;
        }
        let e = explain(&self.catalog, &state, now, Some(&wanted), &|fi| used[fi]);
        Ok((e, state))
    }

    pub async fn usage(
        &self,
        tenant: &str,
        features: &[String],
    ) -> Result<(Arc<Cached>, Vec<UsageLine>), ServiceError> {
        let wanted = self.feature_list(features, true)?;
        let c = self.resolved(tenant, None).await?;
        let mut out = Vec::with_capacity(wanted.len());
        for fi in wanted {
            let used = self.used(&c.tenant, fi).await?;
            let f = &c.tenant.features[fi];
            out.push(UsageLine { feature: fi, used, limit: f.value, period: f.period });
        }
        Ok((c, out))
    }

    pub async fn record_usage(
        &self,
        tenant: &str,
        feature: &str,
        value: i64,
        mode: UsageMode,
        idempotency_key: &str,
        enforce: bool,
    ) -> Result<RecordUsageResult, ServiceError> {
        check_tenant(tenant)?;
        let fi = usage::validate_report(&self.catalog, feature, mode, value, idempotency_key)?;
        let c = self.resolved(tenant, None).await?;
        let r = &c.tenant;
        if r.fallback {
            return Err(ServiceError::Unavailable("store unreachable: usage cannot be recorded now".into()));
        }
        let f = &r.features[fi];
        let period = f.period;
        let period_start = period.map_or(0, |p| p.start);
        let limit = match usage_gate(r, fi, enforce) {
            UsageGate::Refuse(reason) => {
                let used = self.used(r, fi).await?;
                return Ok(RecordUsageResult {
                    applied: false,
                    duplicate: false,
                    used,
                    limit: f.value,
                    reason: Some(reason),
                    period,
                });
            }
            UsageGate::Record { limit } => limit,
        };
        let report = UsageReport {
            tenant_id: tenant.to_string(),
            feature: feature.to_string(),
            mode,
            value,
            idempotency_key: (!idempotency_key.is_empty()).then(|| idempotency_key.to_string()),
            period_start,
            limit,
            at: unix_now(),
        };
        let outcome = self.stores.usage.record_usage(&report).await?;
        let key: Arc<str> = Arc::from(tenant);
        if outcome.duplicate {
            // A replay answers with the original result, which may be older than the counter:
            // let the next read fetch the current value instead of caching the old one.
            self.cache.forget_usage(&key, fi).await;
        } else {
            self.cache.put_usage(&key, fi, CachedUsage { period_start, used: outcome.used }).await;
        }
        Ok(RecordUsageResult {
            applied: outcome.applied,
            duplicate: outcome.duplicate,
            used: outcome.used,
            limit: f.value,
            reason: (!outcome.applied).then_some(Reason::LimitExceeded),
            period,
        })
    }
}
