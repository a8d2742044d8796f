//! Entitlement decision service: may tenant T use feature F right now — and if not, why, and
//! what would unlock it? (See `SPEC.md` in the shared folder and the README.)
//!
//! # Layout
//!
//! **Core** — the workspace crate `entitlements-core` (`core/`): the domain, with no IO, no
//! clock reads and no async (its `Cargo.toml` has no tokio, sqlx, tonic, hyper, axum or moka,
//! so that is a compiler fact). Re-exported here under the paths the shell uses:
//!
//! - [`catalog`] — features, plans, add-ons, price map, lifecycle policy; loading and validation (SPEC §2).
//! - [`tenant`] — the stored state of one tenant: subscriptions, assignments, grants, overrides (SPEC §2).
//! - [`command`] — every admin change as data: `validate` (may it be made?) and `apply` (what it does, audited).
//! - [`billing`] — Stripe facts through the price map and what each does to a tenant; one ordering rule (SPEC §7).
//! - [`lifecycle`] — trial, soft lock, hard lock, archive, past due; notices (SPEC §3.5).
//! - [`listing`] — tenant lists: a row per tenant resolved now, and the filters.
//! - [`usage`] — usage periods, report validation, the counter rule the store runs atomically (SPEC §2, §4).
//! - [`resolve`] — `resolve(catalog, state, now)`: plan choice, values, `valid_until` (SPEC §3).
//! - [`decide`] — `decide(resolved, feature, quantity, intent)`: the decision; the usage gate (SPEC §3).
//! - [`explain`] — Explain's view, built from the same functions (SPEC §4).
//!
//! **Shell** — this crate (`src/`): translates between the world and the core, decides nothing.
//!
//! - [`store`] — one trait per concern (tenant state, usage, audit, Stripe event log) and the
//!   sqlx implementation, SQLite by default (SPEC §6). It loads, runs the core, saves.
//! - [`cache`] — the moka cache of resolved tenants and of usage (SPEC §5).
//! - [`service`] — cache + stores + core, the one place both planes call; by plane:
//!   `decisions`, `admin`, `billing`. Its `ServiceError` is what every failure becomes.
//! - [`grpc`] — tonic services; `grpc::convert`, every protobuf ↔ domain conversion; the one
//!   error → status mapping (SPEC §4).
//! - [`openfeature`] — OpenFeature: the evaluation context in, a decision (the path of `Check`)
//!   mapped to an evaluation out; OFREP's HTTP routes (flagd's gRPC service is in `grpc`).
//! - [`stripe`] — verifying webhook deliveries and reading async-stripe's types into core facts (SPEC §7).
//! - [`feed`] — the numbered, resumable feed of tenant changes and lifecycle notices behind `Watch` (SPEC §5).
//! - [`notices`] — the task that emits lifecycle notices when they fall due (outbox in `store`).
//! - [`webhooks`] — outbound webhooks (Standard Webhooks): endpoints, signing, at-least-once delivery.
//! - [`relay`] — relay (sidecar) mode: tenant state, usage and audit from the upstream, fed by `Watch`.
//! - [`invalidation`] — cross-replica cache invalidation over PostgreSQL LISTEN/NOTIFY (SPEC §5).
//! - [`http`] — the HTTP listener: the Stripe webhook, health, readiness, metrics (SPEC §7, §8).
//! - [`listener`] — admitting connections on both ports: a cap per listener, a handshake timeout.
//! - [`telemetry`] — Prometheus metric names and the recorder behind `/metrics` (SPEC §8).
//! - [`trace`] — a span per RPC and per webhook, continuing `traceparent`, exported over OTLP (SPEC §8).
//! - [`cli`] — the human clients of a running server: `check`, `explain`, `tenants`, `catalog show`.
//! - [`config`] — CLI flags and `ENTITLEMENTS_*` environment variables (SPEC §8).
//! - [`server`] — wiring: starts the gRPC and HTTP listeners.
//! - [`clock`] — the one clock (clippy refuses `SystemTime::now`/`Instant::now` anywhere else).
//! - [`shutdown`] — the one shutdown signal every listener and task waits on.
//! - [`backoff`] — the one reconnect backoff (doubling, with jitter).

/// The pure core, re-exported under the paths the shell has always used.
pub use entitlements_core::{
    billing, catalog, command, decide, explain, lifecycle, listing, resolve, tenant, thresholds, usage,
};

pub mod backoff;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod feed;
pub mod grpc;
pub mod http;
pub mod invalidation;
pub mod listener;
pub mod notices;
pub mod openfeature;
pub mod relay;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod stripe;
pub mod telemetry;
pub mod trace;
pub mod webhooks;

/// Generated protobuf and gRPC code for `entitlements.v1`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("entitlements.v1");

    /// flagd's evaluation protocol (`flagd.evaluation.v1`), served for OpenFeature's flagd providers.
    pub mod flagd {
        tonic::include_proto!("flagd.evaluation.v1");
    }

    /// Encoded file descriptors, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("entitlements_descriptor");
}
