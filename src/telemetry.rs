//! Prometheus metrics (SPEC §8): one process-wide recorder, rendered at `/metrics`.
//! Metric names live here so that every emitter and the docs agree.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::decide::{Decision, Reason};

pub const DECISIONS: &str = "entitlements_decisions_total";
pub const SHADOW_DENIALS: &str = "entitlements_shadow_denials_total";
pub const DECISION_SECONDS: &str = "entitlements_decision_duration_seconds";
pub const CACHE_HITS: &str = "entitlements_cache_hits_total";
pub const CACHE_MISSES: &str = "entitlements_cache_misses_total";
pub const CACHE_SIZE: &str = "entitlements_cache_entries";
pub const LOADS: &str = "entitlements_store_loads_total";
pub const STORE_ERRORS: &str = "entitlements_store_errors_total";
pub const FALLBACK_ANSWERS: &str = "entitlements_fallback_answers_total";
pub const INVALIDATIONS: &str = "entitlements_invalidations_total";
pub const INVALIDATIONS_RECEIVED: &str = "entitlements_invalidations_received_total";
pub const LISTENER_RECONNECTS: &str = "entitlements_invalidation_listener_flushes_total";
pub const STALE_ANSWERS: &str = "entitlements_stale_answers_total";
pub const WEBHOOK_EVENTS: &str = "entitlements_webhook_events_total";
pub const WEBHOOK_MAPPING_ERRORS: &str = "entitlements_webhook_mapping_errors_total";
pub const WEBHOOK_REJECTED: &str = "entitlements_webhook_rejected_total";
/// Lifecycle notices committed to the outbox, by `threshold`.
pub const NOTICES: &str = "entitlements_lifecycle_notices_total";
/// Outbound webhook attempts, by `endpoint` and `outcome` (delivered, retry, gave_up).
pub const OUTBOUND_ATTEMPTS: &str = "entitlements_outbound_webhook_attempts_total";
pub const OUTBOUND_SECONDS: &str = "entitlements_outbound_webhook_duration_seconds";
pub const CONNECTIONS_REFUSED: &str = "entitlements_connections_refused_total";
pub const CONNECTIONS_CLOSED_IDLE: &str = "entitlements_connections_closed_idle_total";
/// OFREP requests answered 429 because the data plane was at its concurrency limit.
pub const OFREP_SHED: &str = "entitlements_ofrep_shed_total";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the recorder once per process (tests start several servers in one process).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            // 1, 2 and 3 ms: the cold-miss budgets (SPEC §9) can be read off a scrape.
            let buckets = [
                0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.005,
                0.025, 0.1,
            ];
            PrometheusBuilder::new()
                .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full(DECISION_SECONDS.into()), &buckets)
                .and_then(|b| b.install_recorder())
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()
        })
        .as_ref()
}

/// The exposition text for `/metrics`.
pub fn render() -> String {
    match install() {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => String::new(),
    }
}

/// The decision path's counters: plain atomics, published to the recorder when `/metrics` is
/// scraped. A `metrics::counter!` with labels hashes its key into the registry on every call,
/// which cost more than the decision itself (callgrind, BENCHMARKS.md "Tuning").
#[derive(Debug)]
pub struct Stats {
    pub store_loads: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub fallback_answers: AtomicU64,
    pub stale_answers: AtomicU64,
    pub store_errors: AtomicU64,
    decisions: [AtomicU64; Reason::ALL.len()],
    shadow_denials: [AtomicU64; Reason::ALL.len()],
    /// Registered once: recording through a handle skips the registry lookup.
    decision_seconds: metrics::Histogram,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            store_loads: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            fallback_answers: AtomicU64::new(0),
            stale_answers: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            decisions: std::array::from_fn(|_| AtomicU64::new(0)),
            shadow_denials: std::array::from_fn(|_| AtomicU64::new(0)),
            decision_seconds: metrics::histogram!(DECISION_SECONDS),
        }
    }
}

impl Stats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Count decisions by reason (and shadow denials) and record how long the path took.
    pub fn observe(&self, decisions: &[Decision], took: Duration) {
        self.decision_seconds.record(took.as_secs_f64());
        for d in decisions {
            Stats::bump(&self.decisions[d.reason as usize]);
            if let Some(r) = d.shadow_denial {
                Stats::bump(&self.shadow_denials[r as usize]);
            }
        }
    }

    pub fn decisions(&self, reason: Reason) -> u64 {
        self.decisions[reason as usize].load(Ordering::Relaxed)
    }

    /// Copy the counters into the recorder (absolute values), just before rendering.
    pub fn publish(&self) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metrics::counter!(LOADS).absolute(get(&self.store_loads));
        metrics::counter!(CACHE_HITS).absolute(get(&self.cache_hits));
        metrics::counter!(CACHE_MISSES).absolute(get(&self.cache_misses));
        metrics::counter!(FALLBACK_ANSWERS).absolute(get(&self.fallback_answers));
        metrics::counter!(STALE_ANSWERS).absolute(get(&self.stale_answers));
        metrics::counter!(STORE_ERRORS).absolute(get(&self.store_errors));
        for r in Reason::ALL {
            metrics::counter!(DECISIONS, "reason" => r.as_str()).absolute(get(&self.decisions[r as usize]));
            let shadow = get(&self.shadow_denials[r as usize]);
            if shadow > 0 {
                metrics::counter!(SHADOW_DENIALS, "reason" => r.as_str()).absolute(shadow);
            }
        }
    }
}
