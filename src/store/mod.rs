//! The store (SPEC §6): tenant state, usage and audit, behind one trait so that backends plug
//! in without touching the core or the gRPC layer. [`sql::SqlStore`] implements it for SQLite
//! (the embedded default) and PostgreSQL with one body of portable SQL.

pub mod sql;
mod stripe;

use async_trait::async_trait;
use serde::Serialize;

use crate::catalog::Value;
pub use crate::lifecycle::TrialExtension;
use crate::stripe::{Envelope, Translation};
use crate::tenant::{TenantState, Trial, UnixTime};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the operation; callers may retry.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row no longer makes sense (e.g. written by a newer version).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The usage report would overflow the counter.
    #[error("usage value would overflow the counter")]
    Overflow,
    /// The upstream service (relay mode) answered with an error.
    #[error("upstream: {code:?}: {message}")]
    Upstream { code: tonic::Code, message: String },
    #[error("not supported here: {0}")]
    Unsupported(&'static str),
    #[error("unsupported database url `{0}` (use sqlite://PATH, a file path, or postgres://…)")]
    UnsupportedUrl(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e)
    }
}

/// Who makes a change and why; every mutation is audited with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub actor: String,
    pub rationale: String,
    /// `admin`, or the Stripe event id for webhook-applied changes.
    pub origin: String,
    pub at: UnixTime,
}

/// A change to one tenant. Inputs are validated against the catalog before they get here.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Mutation {
    /// Create or update the tenant record; `None` fields are left as they are.
    PutTenant {
        stripe_customer_id: Option<String>,
        trial: Option<Trial>,
        archived: Option<bool>,
    },
    AssignPlan {
        plan: String,
        expires_at: Option<UnixTime>,
    },
    /// `None` removes every manual assignment.
    UnassignPlan {
        plan: Option<String>,
    },
    ExtendTrial {
        #[serde(skip)]
        extension: TrialExtension,
    },
    GrantAddOn {
        addon: String,
        quantity: i64,
        expires_at: Option<UnixTime>,
    },
    /// Revokes the manual grants of the add-on; Stripe grants follow their subscription.
    RevokeAddOn {
        addon: String,
    },
    SetOverride {
        feature: String,
        value: Value,
        expires_at: Option<UnixTime>,
    },
    ClearOverride {
        feature: String,
    },
}

impl Mutation {
    pub fn action(&self) -> &'static str {
        match self {
            Mutation::PutTenant { .. } => "put_tenant",
            Mutation::AssignPlan { .. } => "assign_plan",
            Mutation::UnassignPlan { .. } => "unassign_plan",
            Mutation::ExtendTrial { .. } => "extend_trial",
            Mutation::GrantAddOn { .. } => "grant_addon",
            Mutation::RevokeAddOn { .. } => "revoke_addon",
            Mutation::SetOverride { .. } => "set_override",
            Mutation::ClearOverride { .. } => "clear_override",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub revision: u64,
    /// The trial after an `ExtendTrial`.
    pub trial: Option<Trial>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub tenant_id: String,
    pub at: UnixTime,
    pub actor: String,
    pub action: String,
    pub rationale: String,
    pub origin: String,
    pub before: String,
    pub after: String,
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageMode {
    Delta,
    Set,
}

/// A usage report, already validated; `limit` is `None` when unlimited or not enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    pub tenant_id: String,
    pub feature: String,
    pub mode: UsageMode,
    pub value: i64,
    pub idempotency_key: Option<String>,
    pub period_start: UnixTime,
    pub limit: Option<i64>,
    pub at: UnixTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageOutcome {
    pub applied: bool,
    pub duplicate: bool,
    pub used: i64,
}

/// Who re-applies a stored Stripe event, and why (audited in place of "stripe").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub actor: String,
    pub rationale: String,
}

/// What became of a Stripe event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeStatus {
    Applied,
    /// Verified, but of a type or mode this service does not act on.
    Ignored,
    /// Older than what is already applied to the same subscription: changes nothing.
    Stale,
    /// No tenant claims its customer yet; applied when one appears.
    PendingTenant,
    /// Could not be parsed or mapped (unknown price, unknown add-on…): grants nothing.
    Failed,
}

impl StripeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StripeStatus::Applied => "applied",
            StripeStatus::Ignored => "ignored",
            StripeStatus::Stale => "stale",
            StripeStatus::PendingTenant => "pending_tenant",
            StripeStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<StripeStatus> {
        Some(match s {
            "applied" => StripeStatus::Applied,
            "ignored" => StripeStatus::Ignored,
            "stale" => StripeStatus::Stale,
            "pending_tenant" => StripeStatus::PendingTenant,
            "failed" => StripeStatus::Failed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeOutcome {
    pub status: StripeStatus,
    /// The event id was seen before: nothing was done.
    pub duplicate: bool,
    pub tenant_id: Option<String>,
    pub revision: Option<u64>,
    /// A customer id newly linked to a tenant (its pending events can now apply).
    pub linked_customer: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: String,
    pub event_type: String,
    pub created: UnixTime,
    pub livemode: bool,
    pub customer_id: Option<String>,
    pub tenant_id: Option<String>,
    pub status: StripeStatus,
    pub error: Option<String>,
    pub received_at: UnixTime,
    pub applied_at: Option<UnixTime>,
    pub payload: String,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The tenant's state; an unknown tenant comes back with `known == false`.
    async fn load(&self, tenant_id: &str) -> Result<TenantState, StoreError>;
    /// Apply one audited mutation in one transaction; bumps and returns the revision.
    async fn mutate(&self, tenant_id: &str, m: &Mutation, by: &Actor) -> Result<Committed, StoreError>;
    /// Newest first; `before_id` continues a listing.
    async fn audit(&self, tenant_id: &str, limit: u32, before_id: Option<i64>) -> Result<Vec<AuditRecord>, StoreError>;
    /// Record usage atomically (conditional update when `limit` is set), idempotent on the key.
    async fn record_usage(&self, r: &UsageReport) -> Result<UsageOutcome, StoreError>;
    /// Current usage of a feature in the period starting at `period_start` (0 if none).
    async fn usage(&self, tenant_id: &str, feature: &str, period_start: UnixTime) -> Result<i64, StoreError>;
    /// Record a verified Stripe event and apply it, in one transaction. Duplicates (same event
    /// id) change nothing unless it is a `replay` of a stored event.
    async fn apply_stripe_event(
        &self,
        env: &Envelope,
        translation: &Result<Translation, String>,
        replay: Option<&Replay>,
        at: UnixTime,
    ) -> Result<StripeOutcome, StoreError>;
    async fn stripe_event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError>;
    /// Newest first, optionally for one tenant and/or in one status.
    async fn stripe_events(
        &self,
        tenant_id: Option<&str>,
        status: Option<StripeStatus>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Events waiting for a tenant with this customer id, oldest first.
    async fn pending_stripe_events(&self, customer_id: &str) -> Result<Vec<StoredEvent>, StoreError>;
    /// Cheap liveness probe.
    async fn ping(&self) -> Result<(), StoreError>;
}
