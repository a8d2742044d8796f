//! The cache of resolved tenants (SPEC §5): moka, keyed by tenant id, with
//!
//! - per-entry expiry at `min(max_ttl, valid_until)`, so time-based transitions need no cron;
//! - coalesced loads (concurrent misses for one tenant run one load);
//! - negative entries (unknown tenants are cached like any other, at revision 0);
//! - **no stale resurrection**: an invalidation records a *revision floor* for the tenant (and a
//!   flush bumps a global epoch); an entry below its floor, or loaded before the last flush, is
//!   never served, even when a slow load inserts it after the invalidation ran.
//!
//! Usage is cached beside, not inside, the resolved tenant: recording usage never throws the
//! resolved entitlements away.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;

use crate::catalog::FeatureIdx;
use crate::resolve::ResolvedTenant;
use crate::tenant::UnixTime;

/// A cache entry: the resolution and the flush epoch at which its load started.
#[derive(Debug)]
pub struct Cached {
    pub tenant: ResolvedTenant,
    pub epoch: u64,
}

struct UntilValid {
    max_ttl: Duration,
}

impl Expiry<Arc<str>, Arc<Cached>> for UntilValid {
    fn expire_after_create(&self, _: &Arc<str>, v: &Arc<Cached>, _: Instant) -> Option<Duration> {
        let ttl = match v.tenant.valid_until {
            Some(until) => {
                let left = (until as f64 - crate::clock::unix_now_f64()).max(0.0);
                Duration::from_secs_f64(left).min(self.max_ttl)
            }
            None => self.max_ttl,
        };
        Some(ttl)
    }
}

/// Cached usage of one metered feature: the value in the period starting at `period_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedUsage {
    pub period_start: UnixTime,
    pub used: i64,
}

/// Tenant ids hash with foldhash, seeded per process: several times cheaper than SipHash on
/// short keys, and the random seed keeps chosen ids from colliding on purpose.
type Hasher = foldhash::fast::RandomState;

pub struct TenantCache {
    tenants: moka::future::Cache<Arc<str>, Arc<Cached>, Hasher>,
    usage: moka::future::Cache<(Arc<str>, FeatureIdx), CachedUsage, Hasher>,
    /// The last successful load per tenant, kept `stale_bound` past `max_ttl`: served only
    /// when the store cannot answer.
    last_known: moka::future::Cache<Arc<str>, Arc<Cached>, Hasher>,
    /// Minimum acceptable revision per recently invalidated tenant.
    floors: moka::sync::Cache<Arc<str>, u64, Hasher>,
    epoch: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    Miss,
}

impl TenantCache {
    pub fn new(capacity: u64, max_ttl: Duration, stale_bound: Duration) -> TenantCache {
        TenantCache {
            last_known: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(max_ttl + stale_bound)
                .build_with_hasher(Hasher::default()),
            tenants: moka::future::Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilValid { max_ttl })
                .build_with_hasher(Hasher::default()),
            usage: moka::future::Cache::builder()
                .max_capacity(capacity.saturating_mul(4))
                .time_to_live(max_ttl)
                .build_with_hasher(Hasher::default()),
            // A floor only matters while a load that predates it may still be in flight or
            // cached: keeping it for max_ttl plus a margin is enough.
            floors: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(max_ttl + Duration::from_secs(60))
                .build_with_hasher(Hasher::default()),
            epoch: AtomicU64::new(0),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn fresh(&self, tenant: &str, c: &Cached) -> bool {
        c.epoch >= self.epoch() && self.floors.get(tenant).is_none_or(|floor| c.tenant.revision >= floor)
    }

    /// The cached resolution if fresh and at least `min_revision`.
    pub async fn get(&self, tenant: &str, min_revision: u64) -> Option<Arc<Cached>> {
        let c = self.tenants.get(tenant).await?;
        (c.tenant.revision >= min_revision && self.fresh(tenant, &c)).then_some(c)
    }

    /// Get, or load through `load` (coalesced per tenant). `load` receives the epoch to stamp.
    pub async fn get_or_load<F, Fut, E>(
        &self,
        tenant: &str,
        min_revision: u64,
        load: F,
    ) -> Result<(Arc<Cached>, Lookup), Arc<E>>
    where
        F: Fn(u64) -> Fut,
        Fut: Future<Output = Result<Arc<Cached>, E>>,
        E: Send + Sync + 'static,
    {
        if let Some(c) = self.get(tenant, min_revision).await {
            return Ok((c, Lookup::Hit));
        }
        let key: Arc<str> = Arc::from(tenant);
        // A stale or too-old entry is dropped and reloaded; a load that raced an invalidation is
        // detected by the same freshness test and retried.
        let mut attempt = 0;
        loop {
            if let Some(c) = self.tenants.get(tenant).await
                && (c.tenant.revision < min_revision || !self.fresh(tenant, &c))
            {
                self.tenants.invalidate(tenant).await;
            }
            let c = self.tenants.try_get_with(Arc::clone(&key), load(self.epoch())).await?;
            self.last_known.insert(Arc::clone(&key), Arc::clone(&c)).await;
            attempt += 1;
            // A fresh load is the store's truth: loading again cannot reach a revision it lacks,
            // so an unreachable `min_revision` costs one reload and the caller says so.
            if self.fresh(tenant, &c) || attempt >= 3 {
                return Ok((c, Lookup::Miss));
            }
        }
    }

    /// The last resolution loaded for a tenant, even if expired or invalidated (within the
    /// stale bound): for answering while the store is unreachable.
    pub async fn last_known(&self, tenant: &str) -> Option<Arc<Cached>> {
        self.last_known.get(tenant).await
    }

    /// Forget a tenant after a change that committed `revision`.
    pub async fn invalidate(&self, tenant: &str, revision: u64) {
        let key: Arc<str> = Arc::from(tenant);
        let floor = self.floors.get(tenant).unwrap_or(0).max(revision);
        self.floors.insert(Arc::clone(&key), floor);
        self.tenants.invalidate(tenant).await;
    }

    /// Forget everything (e.g. notifications may have been missed).
    pub fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.tenants.invalidate_all();
    }

    pub async fn usage(&self, tenant: &Arc<str>, feature: FeatureIdx) -> Option<CachedUsage> {
        self.usage.get(&(Arc::clone(tenant), feature)).await
    }

    pub async fn put_usage(&self, tenant: &Arc<str>, feature: FeatureIdx, u: CachedUsage) {
        self.usage.insert((Arc::clone(tenant), feature), u).await;
    }

    pub async fn forget_usage(&self, tenant: &Arc<str>, feature: FeatureIdx) {
        self.usage.invalidate(&(Arc::clone(tenant), feature)).await;
    }

    pub fn entry_count(&self) -> u64 {
        self.tenants.entry_count()
    }

    /// Run pending maintenance (eviction, counts); for tests and metrics.
    pub async fn sync(&self) {
        self.tenants.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tokio::sync::Notify;

    use super::*;
    use crate::catalog::Catalog;
    use crate::tenant::TenantState;

    fn resolved(revision: u64) -> ResolvedTenant {
        let catalog =
            Arc::new(Catalog::from_toml(include_str!("../examples/catalog.toml"), &|_| None).expect("catalog"));
        let state = TenantState { tenant_id: "t".into(), known: true, revision, ..TenantState::default() };
        crate::resolve::resolve(&catalog, &state, 1_800_000_000)
    }

    #[tokio::test]
    async fn a_slow_load_racing_an_invalidation_does_not_win() {
        let cache = Arc::new(TenantCache::new(100, Duration::from_secs(60), Duration::from_secs(60)));
        let store_revision = Arc::new(AtomicU64::new(1));
        let release = Arc::new(Notify::new());
        let first = Arc::new(AtomicBool::new(true));
        let loader = {
            let (store_revision, release, first) =
                (Arc::clone(&store_revision), Arc::clone(&release), Arc::clone(&first));
            move |epoch| {
                let (store_revision, release, first) =
                    (Arc::clone(&store_revision), Arc::clone(&release), Arc::clone(&first));
                async move {
                    // Read the store, then stall: the classic window for stale resurrection.
                    let rev = store_revision.load(Ordering::SeqCst);
                    if first.swap(false, Ordering::SeqCst) {
                        release.notified().await;
                    }
                    Ok::<_, ()>(Arc::new(Cached { tenant: resolved(rev), epoch }))
                }
            }
        };
        let slow = tokio::spawn({
            let cache = Arc::clone(&cache);
            async move { cache.get_or_load("t", 0, loader).await.map(|(c, _)| c.tenant.revision) }
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A write commits revision 2 and invalidates while the load still holds revision 1.
        store_revision.store(2, Ordering::SeqCst);
        cache.invalidate("t", 2).await;
        release.notify_one();
        assert_eq!(slow.await.expect("join").expect("load"), 2, "the older load must not be served");
        assert_eq!(cache.get("t", 0).await.map(|c| c.tenant.revision), Some(2));
    }

    #[tokio::test]
    async fn an_entry_below_its_floor_or_from_before_a_flush_is_not_served() {
        let cache = TenantCache::new(100, Duration::from_secs(60), Duration::from_secs(60));
        cache.tenants.insert(Arc::from("t"), Arc::new(Cached { tenant: resolved(3), epoch: cache.epoch() })).await;
        assert!(cache.get("t", 0).await.is_some());
        assert!(cache.get("t", 4).await.is_none(), "min_revision 4 needs a reload");
        cache.floors.insert(Arc::from("t"), 5);
        assert!(cache.get("t", 0).await.is_none(), "below the floor");
        let stale_epoch = cache.epoch();
        cache.flush();
        cache.tenants.insert(Arc::from("u"), Arc::new(Cached { tenant: resolved(9), epoch: stale_epoch })).await;
        assert!(cache.get("u", 0).await.is_none(), "loaded before the flush");
    }

    #[tokio::test]
    async fn concurrent_misses_coalesce_into_one_load() {
        let cache = Arc::new(TenantCache::new(100, Duration::from_secs(60), Duration::from_secs(60)));
        let loads = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cache, loads) = (Arc::clone(&cache), Arc::clone(&loads));
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load("t", 0, |epoch| {
                        let loads = Arc::clone(&loads);
                        async move {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            Ok::<_, ()>(Arc::new(Cached { tenant: resolved(1), epoch }))
                        }
                    })
                    .await
                    .map(|(c, _)| c.tenant.revision)
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("join").expect("load"), 1);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }
}
