//! The store (SPEC §6) stores; the core decides. One trait per concern — tenant state
//! ([`TenantStore`]), usage ([`UsageStore`]), the audit log ([`AuditLog`]) and the Stripe event
//! log ([`StripeLog`]) — so that backends plug in without touching the core or the gRPC layer,
//! and a relay implements exactly what it serves. [`sql::SqlStore`] implements all four for
//! SQLite (the embedded default) and PostgreSQL with one body of portable SQL:
//!
//! - `sql` — connecting, migrating, the pool;
//! - `tenants` — loading a tenant's rows into a [`TenantState`], saving a changed state back,
//!   the revision bump (+ NOTIFY) and audit rows; [`TenantStore`];
//! - `usage` — the atomic counter statement and idempotency records; [`UsageStore`];
//! - `audit` — [`AuditLog`];
//! - `stripe` — the event log and the transaction that applies a [`crate::billing`] fact; [`StripeLog`];
//! - `outbox` — tenant-change events, lifecycle notices and webhook deliveries; [`OutboxStore`].

mod audit;
pub mod outbox;
pub mod sql;
mod stripe;
mod tenants;
mod usage;

use std::sync::Arc;

use async_trait::async_trait;

use crate::billing::Translation;
pub use crate::command::{Actor, Command};
pub use crate::lifecycle::TrialExtension;
use crate::stripe::Envelope;
use crate::tenant::{TenantState, Trial, UnixTime};
pub use crate::usage::UsageMode;

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
    #[error("unsupported database url `{0}` (use sqlite://PATH, a file path, or postgres://…)")]
    UnsupportedUrl(String),
    /// The input cannot be stored as it is (a NUL in text): the caller's fault, on every backend.
    #[error(transparent)]
    Invalid(#[from] crate::command::Invalid),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e)
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

/// Tenant state: load it, and commit an admin command to it in one transaction.
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// The tenant's state; an unknown tenant comes back with `known == false`.
    async fn load(&self, tenant_id: &str) -> Result<TenantState, StoreError>;
    /// Apply one validated command ([`Command::apply`]) to the stored state and save the result
    /// with its audit record, in one transaction; bumps and returns the revision.
    async fn mutate(&self, tenant_id: &str, command: &Command, by: &Actor) -> Result<Committed, StoreError>;
    /// Cheap liveness probe (readiness follows it).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Usage counters and the idempotency records of usage reports.
#[async_trait]
pub trait UsageStore: Send + Sync + 'static {
    /// Record usage atomically ([`usage::apply_report`] as one conditional statement),
    /// idempotent on the key.
    async fn record_usage(&self, r: &UsageReport) -> Result<UsageOutcome, StoreError>;
    /// Current usage of a feature in the period starting at `period_start` (0 if none).
    async fn usage(&self, tenant_id: &str, feature: &str, period_start: UnixTime) -> Result<i64, StoreError>;
}

/// The audit log of every change.
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Newest first; `before_id` continues a listing.
    async fn audit(&self, tenant_id: &str, limit: u32, before_id: Option<i64>) -> Result<Vec<AuditRecord>, StoreError>;
}

/// Tenant lists: tenant states a page at a time, in id order (stable while tenants change).
#[async_trait]
pub trait TenantDirectory: Send + Sync + 'static {
    /// Up to `limit` known tenants after `after` (from the first when `None`), in id order.
    async fn tenants_after(&self, after: Option<&str>, limit: u32) -> Result<Vec<TenantState>, StoreError>;
}

/// The log of verified Stripe events, and their application to tenants.
#[async_trait]
pub trait StripeLog: Send + Sync + 'static {
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
}

/// A lifecycle notice (a threshold crossing, [`crate::thresholds`]) as committed to the outbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NoticeEvent {
    /// The outbox event id: unique, and the webhook message id (`evt_<id>`).
    pub id: i64,
    pub tenant_id: String,
    #[serde(with = "threshold_name")]
    pub threshold: crate::thresholds::Threshold,
    /// The instant of the crossing (for past due: of the change).
    pub at: UnixTime,
    pub days_left: i64,
    /// The tenant's revision when the notice was made.
    pub revision: u64,
}

impl NoticeEvent {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
    pub fn from_json(s: &str) -> Option<NoticeEvent> {
        serde_json::from_str(s).ok()
    }
}

mod threshold_name {
    use crate::thresholds::Threshold;
    pub fn serialize<S: serde::Serializer>(t: &Threshold, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.as_str())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Threshold, D::Error> {
        let name = <String as serde::Deserialize>::deserialize(d)?;
        Threshold::parse(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown threshold `{name}`")))
    }
}

/// How long a webhook delivery is retried before it is given up: 3 days (at least 24 hours).
pub const RETRY_WINDOW_MS: i64 = 3 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    /// Retried until its window ended; `RedeliverWebhook` starts it again.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }
}

/// One event for one endpoint. Times are host-clock unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub endpoint: String,
    pub event_id: i64,
    pub tenant_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub give_up_ms: i64,
    pub created_ms: i64,
    /// The JSON body sent.
    pub payload: String,
}

/// One attempt of a delivery, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub attempt: i64,
    pub at_ms: i64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    Retry { at_ms: i64 },
    GaveUp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub delivery: Delivery,
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub endpoint: Option<String>,
    pub tenant_id: Option<String>,
    pub status: Option<DeliveryStatus>,
    /// Continue a listing (newest first) below this delivery id.
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// The outbox: due lifecycle notices, and the webhook deliveries of every event.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// The earliest `next_notice_at` of any tenant.
    async fn next_notice_at(&self) -> Result<Option<UnixTime>, StoreError>;
    /// Emit the timed crossings of up to `limit` due tenants (each exactly once, whichever
    /// replica asks); the new notices.
    async fn emit_due_notices(&self, now: UnixTime, limit: u32) -> Result<Vec<NoticeEvent>, StoreError>;
    /// Schedule up to `limit` tenants never scheduled (stored before notices existed): their
    /// timeline starts at `now`. How many were scheduled.
    async fn schedule_unscheduled(&self, now: UnixTime, limit: u32) -> Result<u32, StoreError>;
    /// Committed notices with an id above `after_id`, oldest first (a `Watch` resuming across
    /// a restart); and the newest notice id.
    async fn notices_after(&self, after_id: i64, limit: u32) -> Result<Vec<NoticeEvent>, StoreError>;
    async fn last_notice_id(&self) -> Result<i64, StoreError>;
    /// Lease up to `limit` due deliveries (the oldest pending one per endpoint and tenant).
    async fn claim_deliveries(&self, now_ms: i64, lease_ms: i64, limit: u32) -> Result<Vec<Delivery>, StoreError>;
    /// Log an attempt and move the delivery on.
    async fn record_attempt(
        &self,
        delivery_id: i64,
        attempt: &Attempt,
        outcome: AttemptOutcome,
    ) -> Result<(), StoreError>;
    /// The earliest next attempt of a pending delivery.
    async fn next_delivery_ms(&self) -> Result<Option<i64>, StoreError>;
    /// Deliveries with their attempts, newest first.
    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Make a delivery pending again, due now, with a fresh retry window; false if unknown.
    async fn redeliver(&self, delivery_id: i64, now_ms: i64) -> Result<bool, StoreError>;
}

/// The stores a service runs on. A database backs all six; a relay serves tenant state, usage
/// and audit from its upstream and has no Stripe log (the central service applies webhooks), no
/// tenant directory (lists are the central service's admin plane) and no outbox (the central
/// service makes notices and sends webhooks).
#[derive(Clone)]
pub struct Stores {
    pub tenants: Arc<dyn TenantStore>,
    pub usage: Arc<dyn UsageStore>,
    pub audit: Arc<dyn AuditLog>,
    pub stripe: Option<Arc<dyn StripeLog>>,
    pub directory: Option<Arc<dyn TenantDirectory>>,
    /// Notices and webhooks; a relay has none (the central service produces them).
    pub outbox: Option<Arc<dyn OutboxStore>>,
}

impl Stores {
    /// Every concern from one database.
    pub fn sql(store: sql::SqlStore) -> Stores {
        let store = Arc::new(store);
        Stores {
            tenants: store.clone(),
            usage: store.clone(),
            audit: store.clone(),
            stripe: Some(store.clone()),
            directory: Some(store.clone()),
            outbox: Some(store),
        }
    }
}
