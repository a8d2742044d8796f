//! Entitlement decision service: may tenant T use feature F right now — and if not, why, and
//! what would unlock it? (See `SPEC.md` in the shared folder and the README.)
//!
//! # Layout
//!
//! The **pure core** has no IO, no clock reads and no async; time is an argument:
//!
//! - [`catalog`] — features, plans, add-ons, price map, lifecycle policy; loading and validation (SPEC §2).
//! - [`tenant`] — the stored state of one tenant: subscriptions, assignments, grants, overrides (SPEC §2).
//! - [`lifecycle`] — trial, soft lock, hard lock, archive, past due; notices (SPEC §3.5).
//! - [`usage`] — usage periods and limit arithmetic for metered features (SPEC §2, §4).
//! - [`resolve`] — `resolve(catalog, state, now)`: plan choice, values, `valid_until` (SPEC §3).
//! - [`decide`] — `decide(resolved, feature, quantity, intent)`: the decision (SPEC §3).
//! - [`explain`] — Explain's view, built from the same two functions (SPEC §4).
//!
//! The **shell** translates between the world and the core:
//!
//! - [`store`] — the store trait and its sqlx implementation, SQLite by default (SPEC §6).
//! - [`cache`] — the moka cache of resolved tenants and of usage (SPEC §5).
//! - [`service`] — the decision service: cache + store + core, the one place both planes call.
//! - [`grpc`] — tonic services, proto conversions, the error → status mapping (SPEC §4).
//! - [`stripe`] — verifying and translating Stripe webhook events (SPEC §7).
//! - [`feed`] — the numbered, resumable feed of tenant changes behind `Watch` (SPEC §5).
//! - [`relay`] — relay (sidecar) mode: a store backed by the upstream service, fed by `Watch`.
//! - [`invalidation`] — cross-replica cache invalidation over PostgreSQL LISTEN/NOTIFY (SPEC §5).
//! - [`http`] — the HTTP listener: the Stripe webhook, health, readiness, metrics (SPEC §7, §8).
//! - [`telemetry`] — Prometheus metric names and the recorder behind `/metrics` (SPEC §8).
//! - [`config`] — CLI flags and `ENTITLEMENTS_*` environment variables (SPEC §8).
//! - [`server`] — wiring: starts the gRPC and HTTP listeners, graceful shutdown.

/// The pure core, re-exported under the paths the shell has always used.
pub use entitlements_core::{billing, catalog, command, decide, explain, lifecycle, resolve, tenant, usage};

pub mod cache;
pub mod clock;
pub mod config;
pub mod feed;
pub mod grpc;
pub mod http;
pub mod invalidation;
pub mod relay;
pub mod server;
pub mod service;
pub mod store;
pub mod stripe;
pub mod telemetry;

/// Generated protobuf and gRPC code for `entitlements.v1`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("entitlements.v1");

    /// Encoded file descriptors, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("entitlements_descriptor");
}
