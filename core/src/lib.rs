//! The pure domain of the entitlement service (SPEC §2–§4): what a tenant is entitled to, why,
//! and what every change does to it. No IO, no clock reads, no async — time is an argument —
//! and this crate's dependencies make that a compiler fact (no tokio, sqlx, tonic, hyper, axum
//! or moka in `Cargo.toml`). The server (`entitlements`, in `src/`) is a thin shell around it.
//!
//! # Layout
//!
//! - [`catalog`] — features, plans, add-ons, price map, lifecycle policy; loading and validation.
//! - [`tenant`] — the stored state of one tenant: subscriptions, assignments, grants, overrides.
//! - [`command`] — every admin change as data: `validate` (may it be made?) and `apply` (what it does).
//! - [`billing`] — Stripe facts through the price map, and what each does to a tenant; one ordering rule.
//! - [`lifecycle`] — trial, soft lock, hard lock, archive, past due; notices (SPEC §3.5).
//! - [`listing`] — tenant lists: a resolved row per tenant and the filters (phase, plan, add-on, …).
//! - [`usage`] — usage periods, limit arithmetic, and the counter rule the store applies atomically.
//! - [`resolve`] — `resolve(catalog, state, now)`: plan choice, values, `valid_until` (SPEC §3).
//! - [`decide`] — `decide(resolved, feature, quantity, intent)`: the decision (SPEC §3).
//! - [`explain`] — Explain's view, built from the same two functions (SPEC §4).
//! - [`thresholds`] — lifecycle threshold crossings: which exist for a tenant and when the next one is.
pub mod billing;
pub mod catalog;
pub mod command;
pub mod decide;
pub mod explain;
pub mod lifecycle;
pub mod listing;
pub mod resolve;
pub mod tenant;
pub mod thresholds;
pub mod usage;
