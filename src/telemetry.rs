//! Prometheus metrics (SPEC §8): one process-wide recorder, rendered at `/metrics`.
//! Metric names live here so that every emitter and the docs agree.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

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

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the recorder once per process (tests start several servers in one process).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets =
                [0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.025, 0.1];
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
