//! The decision service: the one place where the cache, the store and the pure core meet.
//! Both gRPC planes (and the CLI) call it; it validates input, reads the clock, and never
//! decides anything itself — the core does.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cache::{Cached, CachedUsage, Lookup, TenantCache};
use crate::catalog::{Catalog, FeatureIdx, FeatureKind, Value};
use crate::decide::{Decision, Intent, Reason, decide, decide_idx};
use crate::explain::{Explanation, explain};
use crate::feed::ChangeFeed;
use crate::resolve::{self, ResolvedTenant};
use crate::store::{
    Actor, AuditRecord, Committed, Mutation, Replay, Store, StoreError, StoredEvent, StripeOutcome, StripeStatus,
    UsageMode, UsageReport,
};
use crate::stripe::{self, Envelope};
use crate::telemetry::{self, Stats};
use crate::tenant::{TenantState, UnixTime, validate_tenant_id};
use crate::usage;

/// What went wrong, for the one mapping to gRPC statuses in `grpc`.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{field}: {message}")]
    InvalidArgument { field: &'static str, message: String },
    /// The store cannot answer and nothing cached or configured can stand in.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ServiceError::Unavailable(e.to_string()),
            StoreError::Upstream { code: tonic::Code::InvalidArgument, message } => {
                ServiceError::InvalidArgument { field: "request", message: format!("rejected upstream: {message}") }
            }
            StoreError::Upstream { .. } => ServiceError::Unavailable(e.to_string()),
            StoreError::Unsupported(what) => {
                ServiceError::InvalidArgument { field: "request", message: what.to_string() }
            }
            e => ServiceError::Internal(e.to_string()),
        }
    }
}

pub fn invalid(field: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArgument { field, message: message.into() }
}

/// A per-process number distinguishing this run's feed cursors from any other's.
fn process_epoch() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

/// Wall-clock unix seconds: the only clock read of the decision path.
pub fn unix_now() -> UnixTime {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub struct Service {
    catalog: Arc<Catalog>,
    store: Arc<dyn Store>,
    cache: TenantCache,
    feed: ChangeFeed,
    pub stats: Stats,
}

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
const MAX_KEY_LEN: usize = 256;

fn check_tenant(id: &str) -> Result<(), ServiceError> {
    validate_tenant_id(id).map_err(|e| invalid("tenant_id", e.to_string()))
}

fn check_quantity(q: Option<i64>) -> Result<i64, ServiceError> {
    match q {
        None => Ok(1),
        Some(q) if q >= 0 => Ok(q),
        Some(q) => Err(invalid("quantity", format!("must not be negative (got {q})"))),
    }
}

impl Service {
    pub fn new(
        catalog: Arc<Catalog>,
        store: Arc<dyn Store>,
        cache_capacity: u64,
        max_ttl: Duration,
        stale_bound: Duration,
    ) -> Service {
        Service {
            catalog,
            store,
            cache: TenantCache::new(cache_capacity, max_ttl, stale_bound),
            feed: ChangeFeed::new(process_epoch(), 65_536),
            stats: Stats::default(),
        }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn cache(&self) -> &TenantCache {
        &self.cache
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The tenant's resolution, from cache or store. With the store down and nothing cached,
    /// the catalog's fallback values answer when the catalog defines any.
    pub async fn resolved(&self, tenant: &str, min_revision: Option<u64>) -> Result<Arc<Cached>, ServiceError> {
        check_tenant(tenant)?;
        let min = min_revision.unwrap_or(0);
        let result = self
            .cache
            .get_or_load(tenant, min, |epoch| async move {
                Stats::bump(&self.stats.store_loads);
                let state = self.store.load(tenant).await?;
                let tenant = resolve::resolve(&self.catalog, &state, unix_now());
                Ok::<_, StoreError>(Arc::new(Cached { tenant, epoch }))
            })
            .await;
        match result {
            Ok((c, lookup)) => {
                if lookup == Lookup::Hit {
                    Stats::bump(&self.stats.cache_hits);
                } else {
                    Stats::bump(&self.stats.cache_misses);
                }
                Ok(c)
            }
            Err(e) => {
                Stats::bump(&self.stats.store_errors);
                tracing::warn!(tenant, error = %e, "tenant load failed");
                // Within the stale bound, the last resolution we loaded beats a fallback.
                if let Some(c) = self.cache.last_known(tenant).await {
                    Stats::bump(&self.stats.stale_answers);
                    return Ok(c);
                }
                if self.catalog.features.iter().any(|f| f.fallback.is_some()) {
                    Stats::bump(&self.stats.fallback_answers);
                    let tenant = resolve::fallback(&self.catalog, tenant, unix_now());
                    return Ok(Arc::new(Cached { tenant, epoch: 0 }));
                }
                Err(match &*e {
                    StoreError::Unavailable(_) | StoreError::Upstream { .. } => {
                        ServiceError::Unavailable(e.to_string())
                    }
                    other => ServiceError::Internal(other.to_string()),
                })
            }
        }
    }

    /// Usage of a metered feature as this replica knows it (cache, else store).
    async fn used(&self, r: &ResolvedTenant, fi: FeatureIdx) -> Result<i64, ServiceError> {
        if !self.catalog.features[fi].kind.is_metered() || r.fallback {
            return Ok(0);
        }
        let period_start = r.features[fi].period.map_or(0, |p| p.start);
        let key = &r.tenant_id;
        if let Some(u) = self.cache.usage(key, fi).await {
            if u.period_start == period_start {
                return Ok(u.used);
            }
            if u.period_start > period_start {
                return Ok(u.used);
            }
        }
        let used = self.store.usage(&r.tenant_id, &self.catalog.features[fi].key, period_start).await?;
        self.cache.put_usage(key, fi, CachedUsage { period_start, used }).await;
        Ok(used)
    }

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
            return Err(invalid("items", format!("at most {MAX_BATCH} items per batch")));
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
                let fi =
                    self.catalog.feature_idx(f).ok_or_else(|| invalid("features", format!("unknown feature `{f}`")))?;
                if metered_only && !self.catalog.features[fi].kind.is_metered() {
                    return Err(invalid("features", format!("`{f}` is not a metered (gauge or counter) feature")));
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
        let wanted = self.feature_list(features, false)?;
        let state = self.store.load(tenant).await?;
        let now = at.unwrap_or_else(unix_now);
        // Usage for the period that contains `now`, read up front (the core does no IO).
        let probe = resolve::resolve(&self.catalog, &state, now);
        let mut used = vec![0i64; self.catalog.features.len()];
        for &fi in &wanted {
            used[fi] = self.used(&probe, fi).await?;
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
        let fi = self
            .catalog
            .feature_idx(feature)
            .ok_or_else(|| invalid("feature", format!("unknown feature `{feature}`")))?;
        let kind = self.catalog.features[fi].kind;
        match (kind, mode) {
            (FeatureKind::Boolean | FeatureKind::Config, _) => {
                return Err(invalid(
                    "feature",
                    format!("`{feature}` is a {} feature; only gauges and counters take usage", kind.name()),
                ));
            }
            (FeatureKind::Counter(_), UsageMode::Set) => {
                return Err(invalid("mode", format!("`{feature}` is a counter: report DELTA, not SET")));
            }
            _ => {}
        }
        if value < 0 {
            return Err(invalid("value", "must not be negative"));
        }
        if idempotency_key.len() > MAX_KEY_LEN {
            return Err(invalid("idempotency_key", format!("at most {MAX_KEY_LEN} bytes")));
        }
        if mode == UsageMode::Delta && idempotency_key.is_empty() {
            return Err(invalid("idempotency_key", "required for DELTA reports"));
        }
        let c = self.resolved(tenant, None).await?;
        let r = &c.tenant;
        if r.fallback {
            return Err(ServiceError::Unavailable("store unreachable: usage cannot be recorded now".into()));
        }
        let f = &r.features[fi];
        let period = f.period;
        let period_start = period.map_or(0, |p| p.start);
        // The gate part of the decision (locks, edition, shadow) decides whether to enforce.
        let gate = decide_idx(r, fi, 0, Intent::Write, 0);
        if enforce && !gate.allowed {
            let used = self.used(r, fi).await?;
            return Ok(RecordUsageResult {
                applied: false,
                duplicate: false,
                used,
                limit: f.value,
                reason: Some(gate.reason),
                period,
            });
        }
        let limit = match (enforce, gate.reason, f.value) {
            (true, Reason::Granted, Value::Number(n)) => Some(n),
            _ => None,
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
        let outcome = self.store.record_usage(&report).await.map_err(|e| match e {
            StoreError::Overflow => invalid("value", "would overflow the usage counter"),
            e => e.into(),
        })?;
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

    /// Validate, commit, invalidate. Returns the committed revision.
    pub async fn mutate(
        &self,
        tenant: &str,
        m: Mutation,
        actor: &str,
        rationale: &str,
    ) -> Result<Committed, ServiceError> {
        check_tenant(tenant)?;
        if actor.trim().is_empty() {
            return Err(invalid("actor", "is required: every manual change names who made it"));
        }
        if rationale.trim().is_empty() {
            return Err(invalid("rationale", "is required: every manual change says why"));
        }
        if actor.len() > 256 || rationale.len() > 4096 {
            return Err(invalid("rationale", "actor (256) or rationale (4096 bytes) too long"));
        }
        self.validate(&m)?;
        let by = Actor {
            actor: actor.to_string(),
            rationale: rationale.to_string(),
            origin: "admin".into(),
            at: unix_now(),
        };
        let committed = self.store.mutate(tenant, &m, &by).await?;
        self.invalidate(tenant, committed.revision).await;
        // A tenant that now claims a Stripe customer gets the events that waited for it.
        if let Mutation::PutTenant { stripe_customer_id: Some(customer), .. } = &m
            && !customer.is_empty()
        {
            self.apply_pending(customer).await?;
        }
        Ok(committed)
    }

    fn validate(&self, m: &Mutation) -> Result<(), ServiceError> {
        let now = unix_now();
        let future = |field: &'static str, t: Option<UnixTime>| match t {
            Some(t) if t <= now => Err(invalid(field, "must be in the future")),
            _ => Ok(()),
        };
        match m {
            Mutation::PutTenant { stripe_customer_id, trial, .. } => {
                if let Some(c) = stripe_customer_id
                    && (c.len() > 255 || c.chars().any(char::is_whitespace))
                {
                    return Err(invalid("stripe_customer_id", "at most 255 characters, no whitespace"));
                }
                if let Some(t) = trial
                    && t.end < t.start
                {
                    return Err(invalid("trial_end", "must not be before trial_start"));
                }
                Ok(())
            }
            Mutation::AssignPlan { plan, expires_at } => {
                self.catalog.plan(plan).ok_or_else(|| invalid("plan", format!("unknown plan `{plan}`")))?;
                future("expires_at", *expires_at)
            }
            Mutation::UnassignPlan { plan } => match plan {
                Some(p) if self.catalog.plan(p).is_none() => Err(invalid("plan", format!("unknown plan `{p}`"))),
                _ => Ok(()),
            },
            Mutation::ExtendTrial { extension } => match extension {
                crate::store::TrialExtension::Days(d) if *d <= 0 || *d > 3650 => {
                    Err(invalid("days", "must be between 1 and 3650"))
                }
                crate::store::TrialExtension::Until(t) => future("trial_end", Some(*t)),
                _ => Ok(()),
            },
            Mutation::GrantAddOn { addon, quantity, expires_at } => {
                self.catalog.addon(addon).ok_or_else(|| invalid("addon", format!("unknown add-on `{addon}`")))?;
                if !(1..=1_000_000).contains(quantity) {
                    return Err(invalid("quantity", "must be between 1 and 1000000"));
                }
                future("expires_at", *expires_at)
            }
            Mutation::RevokeAddOn { addon } => {
                self.catalog.addon(addon).ok_or_else(|| invalid("addon", format!("unknown add-on `{addon}`")))?;
                Ok(())
            }
            Mutation::SetOverride { feature, value, expires_at } => {
                let f = self
                    .catalog
                    .feature(feature)
                    .ok_or_else(|| invalid("feature", format!("unknown feature `{feature}`")))?;
                if !value.fits(f.kind) {
                    return Err(invalid(
                        "value",
                        format!("`{value}` does not fit the {} feature `{feature}`", f.kind.name()),
                    ));
                }
                future("expires_at", *expires_at)
            }
            Mutation::ClearOverride { feature } => {
                self.catalog
                    .feature(feature)
                    .ok_or_else(|| invalid("feature", format!("unknown feature `{feature}`")))?;
                Ok(())
            }
        }
    }

    /// Forget a tenant on this replica after a change committed at `revision`, and tell
    /// this replica's watchers.
    pub async fn invalidate(&self, tenant: &str, revision: u64) {
        metrics::counter!(telemetry::INVALIDATIONS).increment(1);
        self.cache.invalidate(tenant, revision).await;
        self.feed.change(tenant, revision);
    }

    /// Forget everything (changes may have been missed), and tell watchers to do the same.
    pub fn flush(&self) {
        self.cache.flush();
        self.feed.reset();
    }

    pub fn feed(&self) -> &ChangeFeed {
        &self.feed
    }

    /// Translate and apply a verified Stripe event; invalidate what it changed.
    pub async fn apply_stripe(
        &self,
        env: &Envelope,
        event: Result<stripe_webhook::Event, String>,
        replay: Option<&Replay>,
    ) -> Result<StripeOutcome, ServiceError> {
        let translation = event.map(|e| stripe::translate(&self.catalog, env, &e));
        match &translation {
            Ok(t) => {
                for err in &t.errors {
                    tracing::warn!(event_id = %env.id, event_type = %env.event_type, error = %err, "stripe event mapping problem");
                    metrics::counter!(telemetry::WEBHOOK_MAPPING_ERRORS, "type" => env.event_type.clone()).increment(1);
                }
            }
            Err(e) => tracing::warn!(event_id = %env.id, error = %e, "stripe event did not parse"),
        }
        let outcome = self.store.apply_stripe_event(env, &translation, replay, unix_now()).await?;
        let label = if outcome.duplicate { "duplicate" } else { outcome.status.as_str() };
        metrics::counter!(telemetry::WEBHOOK_EVENTS, "type" => env.event_type.clone(), "outcome" => label).increment(1);
        tracing::info!(event_id = %env.id, event_type = %env.event_type, outcome = label, tenant = ?outcome.tenant_id, "stripe event");
        if let (Some(t), Some(rev)) = (&outcome.tenant_id, outcome.revision) {
            self.invalidate(t, rev).await;
        }
        if let Some(customer) = &outcome.linked_customer {
            Box::pin(self.apply_pending(customer)).await?;
        }
        Ok(outcome)
    }

    /// Apply the stored events that waited for a tenant with this customer id.
    pub async fn apply_pending(&self, customer: &str) -> Result<(), ServiceError> {
        let replay = Replay { actor: "stripe".into(), rationale: "a tenant now claims this customer".into() };
        for ev in self.store.pending_stripe_events(customer).await? {
            let env = stripe::envelope(&ev.payload).map_err(ServiceError::Internal)?;
            let event = stripe::parse_stored(&ev.payload);
            Box::pin(self.apply_stripe(&env, event, Some(&replay))).await?;
        }
        Ok(())
    }

    /// Re-apply a stored event (failed or still pending), e.g. after a catalog fix. Audited.
    pub async fn replay_stripe_event(
        &self,
        id: &str,
        actor: &str,
        rationale: &str,
    ) -> Result<(StripeOutcome, StoredEvent), ServiceError> {
        if actor.trim().is_empty() {
            return Err(invalid("actor", "is required: every manual change names who made it"));
        }
        if rationale.trim().is_empty() {
            return Err(invalid("rationale", "is required: every manual change says why"));
        }
        let ev =
            self.store.stripe_event(id).await?.ok_or_else(|| invalid("event_id", format!("no stored event `{id}`")))?;
        if !matches!(ev.status, StripeStatus::Failed | StripeStatus::PendingTenant) {
            return Err(invalid(
                "event_id",
                format!("event `{id}` is {}; only failed or pending events are replayed", ev.status.as_str()),
            ));
        }
        let env = stripe::envelope(&ev.payload).map_err(ServiceError::Internal)?;
        let replay = Replay { actor: actor.to_string(), rationale: rationale.to_string() };
        let outcome = self.apply_stripe(&env, stripe::parse_stored(&ev.payload), Some(&replay)).await?;
        let stored = self.store.stripe_event(id).await?.unwrap_or(ev);
        Ok((outcome, stored))
    }

    pub async fn stripe_events(
        &self,
        tenant: Option<&str>,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, ServiceError> {
        if let Some(t) = tenant {
            check_tenant(t)?;
        }
        let status = match status {
            None => None,
            Some(s) => Some(StripeStatus::parse(s).ok_or_else(|| invalid("status", format!("unknown status `{s}`")))?),
        };
        Ok(self.store.stripe_events(tenant, status, limit.clamp(1, 500)).await?)
    }

    pub async fn tenant(&self, tenant: &str) -> Result<TenantState, ServiceError> {
        check_tenant(tenant)?;
        Ok(self.store.load(tenant).await?)
    }

    pub async fn audit(
        &self,
        tenant: &str,
        page_size: u32,
        before_id: Option<i64>,
    ) -> Result<Vec<AuditRecord>, ServiceError> {
        check_tenant(tenant)?;
        Ok(self.store.audit(tenant, page_size.clamp(1, 500), before_id).await?)
    }

    pub async fn ready(&self) -> bool {
        self.store.ping().await.is_ok()
    }
}
