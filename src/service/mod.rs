//! The decision service: the one place where the cache, the store and the pure core meet.
//! Both gRPC planes (and the CLI) call it; it validates input, reads the clock, and never
//! decides anything itself — the core does.

mod admin;
mod billing;
mod decisions;
mod webhooks;

pub use admin::{MAX_LIST_PAGE, TenantPage};
pub use decisions::{CheckItem, MAX_BATCH, RecordUsageResult, UsageLine};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::cache::{Cached, CachedUsage, Lookup, TenantCache};
use crate::catalog::{Catalog, FeatureIdx};
use crate::command::Invalid;
pub use crate::command::invalid;
use crate::feed::ChangeFeed;
use crate::resolve::{self, ResolvedTenant};
use crate::store::{StoreError, Stores};
use crate::telemetry::{self, Stats};
use crate::tenant::validate_tenant_id;
use crate::trace;

use crate::clock::unix_now;

/// What went wrong, for the one mapping to gRPC statuses in `grpc` (and HTTP statuses in `http`).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is wrong; the field is named.
    #[error(transparent)]
    InvalidArgument(#[from] Invalid),
    /// The store cannot answer and nothing cached or configured can stand in.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The upstream service (relay mode) refused the request: its answer passes through as is.
    #[error("{message}")]
    Refused { code: tonic::Code, message: String },
    /// `min_revision` asks for a revision the store does not have (after one reload).
    #[error("revision {wanted} not reached: the store has revision {have} of this tenant")]
    RevisionNotReached { wanted: u64, have: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

/// The one mapping of store errors. An upstream's refusal of the request itself (a client
/// error) passes through unchanged; an upstream that cannot answer is unavailable.
impl From<&StoreError> for ServiceError {
    fn from(e: &StoreError) -> Self {
        use tonic::Code;
        match e {
            StoreError::Unavailable(_) => ServiceError::Unavailable(e.to_string()),
            StoreError::Overflow => invalid("value", "would overflow the usage counter").into(),
            StoreError::Invalid(i) => i.clone().into(),
            StoreError::Upstream {
                code:
                    code @ (Code::InvalidArgument
                    | Code::FailedPrecondition
                    | Code::NotFound
                    | Code::AlreadyExists
                    | Code::OutOfRange
                    | Code::PermissionDenied
                    | Code::Unauthenticated),
                message,
            } => ServiceError::Refused { code: *code, message: message.clone() },
            StoreError::Upstream { .. } => ServiceError::Unavailable(e.to_string()),
            e => ServiceError::Internal(e.to_string()),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::from(&e)
    }
}

/// A per-process number distinguishing this run's feed cursors from any other's.
fn process_epoch() -> u64 {
    (crate::clock::unix_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

/// The decision service. Its methods are grouped by plane: `decisions` (the data plane),
/// `admin` (commands, tenant state, audit) and `billing` (Stripe events).
pub struct Service {
    catalog: Arc<Catalog>,
    stores: Stores,
    cache: TenantCache,
    feed: ChangeFeed,
    wakes: Wakes,
    pub stats: Stats,
}

/// Background tasks woken when a change commits: it may have made an earlier lifecycle
/// crossing, and it made outbox events to deliver.
#[derive(Default)]
pub struct Wakes {
    pub notices: Notify,
    pub deliveries: Arc<Notify>,
}

fn check_tenant(id: &str) -> Result<(), ServiceError> {
    validate_tenant_id(id).map_err(|e| invalid("tenant_id", e.to_string()).into())
}

impl Service {
    pub fn new(
        catalog: Arc<Catalog>,
        stores: Stores,
        cache_capacity: u64,
        max_ttl: Duration,
        stale_bound: Duration,
    ) -> Service {
        Service {
            catalog,
            stores,
            cache: TenantCache::new(cache_capacity, max_ttl, stale_bound),
            feed: ChangeFeed::new(process_epoch(), 65_536),
            wakes: Wakes::default(),
            stats: Stats::default(),
        }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn cache(&self) -> &TenantCache {
        &self.cache
    }

    pub fn stores(&self) -> &Stores {
        &self.stores
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
                // Timed only on a miss: the hit path reads no clock for tracing.
                let started = crate::clock::monotonic();
                let state = self.stores.tenants.load(tenant).await?;
                trace::record_store_time(started.elapsed());
                let tenant = resolve::resolve(&self.catalog, &state, unix_now());
                Ok::<_, StoreError>(Arc::new(Cached { tenant, epoch }))
            })
            .await;
        match result {
            Ok((c, lookup)) => {
                if lookup == Lookup::Hit {
                    Stats::bump(&self.stats.cache_hits);
                    trace::record_cache("hit");
                } else {
                    Stats::bump(&self.stats.cache_misses);
                    trace::record_cache("miss");
                }
                if c.tenant.revision < min {
                    return Err(ServiceError::RevisionNotReached { wanted: min, have: c.tenant.revision });
                }
                Ok(c)
            }
            Err(e) => {
                Stats::bump(&self.stats.store_errors);
                tracing::warn!(tenant, error = %e, "tenant load failed");
                // Within the stale bound, the last resolution we loaded beats a fallback.
                if let Some(c) = self.cache.last_known(tenant).await {
                    Stats::bump(&self.stats.stale_answers);
                    trace::record_cache("stale");
                    return Ok(c);
                }
                if self.catalog.features.iter().any(|f| f.fallback.is_some()) {
                    Stats::bump(&self.stats.fallback_answers);
                    trace::record_cache("fallback");
                    let tenant = resolve::fallback(&self.catalog, tenant, unix_now());
                    return Ok(Arc::new(Cached { tenant, epoch: 0 }));
                }
                Err(ServiceError::from(&*e))
            }
        }
    }

    /// Usage of a metered feature in the period of `r`, as this replica knows it (cache, else
    /// store).
    async fn used(&self, r: &ResolvedTenant, fi: FeatureIdx) -> Result<i64, ServiceError> {
        self.used_in_period(r, fi, true).await
    }

    /// `remember`: keep what the store said in the cache the hot path reads. A preview of
    /// another instant (`Explain` at) must not: a read never changes another read's answer. A
    /// cached count answers only for its own period.
    async fn used_in_period(&self, r: &ResolvedTenant, fi: FeatureIdx, remember: bool) -> Result<i64, ServiceError> {
        if !self.catalog.features[fi].kind.is_metered() || r.fallback {
            return Ok(0);
        }
        let period_start = r.features[fi].period.map_or(0, |p| p.start);
        let key = &r.tenant_id;
        if let Some(u) = self.cache.usage(key, fi).await
            && u.period_start == period_start
        {
            return Ok(u.used);
        }
        let used = self.stores.usage.usage(&r.tenant_id, &self.catalog.features[fi].key, period_start).await?;
        if remember {
            self.cache.put_usage(key, fi, CachedUsage { period_start, used }).await;
        }
        Ok(used)
    }

    /// Forget a tenant on this replica after a change committed at `revision`, and tell
    /// this replica's watchers.
    pub async fn invalidate(&self, tenant: &str, revision: u64) {
        metrics::counter!(telemetry::INVALIDATIONS).increment(1);
        self.cache.invalidate(tenant, revision).await;
        self.feed.change(tenant, revision);
        self.wakes.notices.notify_one();
        self.wakes.deliveries.notify_one();
    }

    pub fn wakes(&self) -> &Wakes {
        &self.wakes
    }

    /// Forget everything (changes may have been missed), and tell watchers to do the same.
    pub fn flush(&self) {
        self.cache.flush();
        self.feed.reset();
    }

    pub fn feed(&self) -> &ChangeFeed {
        &self.feed
    }

    pub async fn ready(&self) -> bool {
        self.stores.tenants.ping().await.is_ok()
    }
}
