//! What the fuzz targets share: the fixed clock, the example catalog, Stripe signing, and
//! [`exercise`], which runs a tenant state through the core the way the data plane would.
//!
//! Nothing here reads a clock, a file at run time, the network or a store: every target is a
//! pure function of its input bytes, so every crash reproduces from its input alone.

use std::sync::{Arc, OnceLock};

use entitlements::catalog::{Catalog, FeatureIdx};
use entitlements::decide::{Intent, decide, decide_idx, usage_gate};
use entitlements::explain::explain;
use entitlements::grpc::convert;
use entitlements::resolve::{self, ResolvedTenant};
use entitlements::tenant::{TenantState, UnixTime};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The fuzzers' "now": 2026-06-01T00:00:00Z. Fixed, so that a crash reproduces.
pub const NOW: UnixTime = 1_780_272_000;

/// The endpoint secret the harness signs with, and one that was rotated out before it (a
/// delivery is verified against every configured secret, in order).
pub const SECRET: &str = "whsec_fuzz_current";
pub const RETIRED_SECRET: &str = "whsec_fuzz_retired";

/// The example catalog (`examples/catalog.toml`, price ids from their defaults).
pub fn example_catalog() -> &'static Arc<Catalog> {
    static CATALOG: OnceLock<Arc<Catalog>> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let src = include_str!("../../examples/catalog.toml");
        Arc::new(Catalog::from_toml(src, &|_| None).expect("examples/catalog.toml is valid"))
    })
}

/// `Stripe-Signature` as Stripe makes it: `t=<time>,v1=hex(HMAC-SHA256(secret, "<time>.<body>"))`.
pub fn stripe_signature(secret: &str, t: UnixTime, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// What `axum`'s `HeaderValue::to_str` accepts (visible ASCII and tab): the webhook handler
/// passes any other header value on as "no header".
pub fn header_str(raw: &[u8]) -> Option<&str> {
    if raw.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) { std::str::from_utf8(raw).ok() } else { None }
}

/// Resolve `state` at `now` against `catalog` and ask every question the data plane asks of the
/// result: a decision (read and write, quantity `quantity`, usage `used`) for every feature and
/// for `extra` (which may name none), the usage gate, the explanation, and their protobuf answers.
pub fn exercise(catalog: &Arc<Catalog>, state: &TenantState, now: UnixTime, extra: &str, quantity: i64, used: i64) {
    let r: ResolvedTenant = resolve::resolve(catalog, state, now);
    for fi in 0..catalog.features.len() {
        for intent in [Intent::Read, Intent::Write] {
            let d = decide_idx(&r, fi, quantity, intent, used);
            let _ = convert::check_response(&r, &d, &catalog.features[fi].key);
        }
        let _ = usage_gate(&r, fi, true);
        let _ = usage_gate(&r, fi, false);
    }
    let d = decide(&r, extra, quantity, Intent::Write, used);
    let _ = convert::check_response(&r, &d, extra);
    let all: Vec<FeatureIdx> = (0..catalog.features.len()).collect();
    let e = explain(catalog, state, now, Some(&all), &|_| used);
    let _ = convert::explain(&e, state);
    let _ = resolve::fallback(catalog, &state.tenant_id, now);
}

/// An unknown tenant: what a fresh store loads for any id.
pub fn unknown_tenant(id: &str) -> TenantState {
    TenantState::unknown(id)
}
