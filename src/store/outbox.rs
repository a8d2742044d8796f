//! The outbox (issue 12): tenant changes and lifecycle notices, written in the transaction that
//! makes them, and the webhook deliveries they need. [`OutboxStore`] for [`SqlStore`].
//!
//! - Every committed change calls [`record_change`] in its transaction: a `tenant.changed` event
//!   (new revision, what changed), the past-due crossings the change makes (core:
//!   [`thresholds::on_change`]), and the tenant's `next_notice_at` (core:
//!   [`thresholds::next_crossing`] after `notices_through`).
//! - [`OutboxStore::emit_due_notices`] takes the tenants whose `next_notice_at` has come (an
//!   indexed range query), and per tenant, in one transaction that first locks its row with a
//!   conditional update (so of several replicas exactly one proceeds; the others find it no
//!   longer due), inserts the timed crossings in `(notices_through, now]` and moves both columns.
//! - A notice's `dedup_key` (`<threshold>:<instant>`) is unique per tenant: inserting it twice
//!   is a no-op, so a retried or concurrent transaction never makes a second one.
//! - Each new event gets a delivery row per configured endpoint that wants its type, in the same
//!   transaction: nothing committed is ever without its deliveries.
//! - Notices reach `Watch`: PostgreSQL NOTIFYs them on [`NOTICES_CHANNEL`] at commit (every
//!   replica's listener feeds its own change feed); SQLite (one process) publishes them on the
//!   store's local channel after commit.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{AnyConnection, Row};
use tokio::sync::broadcast;

use super::sql::{Backend, SqlStore};
use super::tenants::load_tenant;
use super::{
    Attempt, AttemptOutcome, Delivery, DeliveryFilter, DeliveryRecord, DeliveryStatus, NoticeEvent, OutboxStore,
    StoreError,
};
use crate::catalog::Catalog;
use crate::tenant::{TenantState, UnixTime};
use crate::thresholds::{self, Crossing, Threshold};

/// The LISTEN/NOTIFY channel of lifecycle notices; payload: the notice as JSON.
pub const NOTICES_CHANNEL: &str = "entitlements_notices";

/// What the store needs to fill the outbox: the catalog's lifecycle policy (through the core)
/// and which endpoint wants which event types.
#[derive(Clone)]
pub struct OutboxConfig {
    pub catalog: Arc<Catalog>,
    pub routes: Vec<Route>,
}

/// One webhook endpoint's subscription: event types, exact or `prefix.*`; empty means all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub endpoint: String,
    pub events: Vec<String>,
}

impl Route {
    pub fn wants(&self, event_type: &str) -> bool {
        self.events.is_empty()
            || self
                .events
                .iter()
                .any(|e| e == event_type || e.strip_suffix('*').is_some_and(|prefix| event_type.starts_with(prefix)))
    }
}

/// The webhook event type of a notice.
pub fn notice_type(t: Threshold) -> String {
    format!("notice.{}", t.as_str())
}

pub const CHANGED_TYPE: &str = "tenant.changed";

/// The Standard Webhooks message id (`webhook-id`) of an outbox event, the same on every
/// attempt and for every endpoint; also a notice's id on `Watch`.
pub fn message_id(event_id: i64) -> String {
    format!("evt_{event_id}")
}

/// Which parts of the tenant a change touched, for the `tenant.changed` payload.
fn changed_parts(before: &TenantState, after: &TenantState) -> Vec<&'static str> {
    let mut parts = Vec::new();
    let mut note = |changed: bool, name| {
        if changed {
            parts.push(name);
        }
    };
    note(before.known != after.known, "tenant");
    note(before.stripe_customer_id != after.stripe_customer_id, "stripe_customer_id");
    note(before.trial != after.trial, "trial");
    note(before.archived != after.archived, "archived");
    note(before.subscriptions != after.subscriptions, "subscriptions");
    note(before.plan_assignments != after.plan_assignments, "plan_assignments");
    note(before.addon_grants != after.addon_grants, "addon_grants");
    note(before.overrides != after.overrides, "overrides");
    parts
}

/// One event for the outbox.
struct NewEvent<'a> {
    tenant: &'a str,
    event_type: String,
    at: UnixTime,
    revision: u64,
    dedup_key: String,
    data: serde_json::Value,
}

/// Insert an event (a no-op when its key exists) and its deliveries; the id when new.
async fn insert_event(
    conn: &mut AnyConnection,
    cfg: &OutboxConfig,
    e: &NewEvent<'_>,
    now_ms: i64,
) -> Result<Option<i64>, StoreError> {
    let payload = serde_json::json!({
        "type": e.event_type,
        "timestamp": rfc3339(e.at),
        "data": e.data,
    })
    .to_string();
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO outbox_events (tenant_id, event_type, at, revision, dedup_key, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, dedup_key) DO NOTHING RETURNING id",
    )
    .bind(e.tenant)
    .bind(&e.event_type)
    .bind(e.at)
    .bind(i64::try_from(e.revision).unwrap_or(i64::MAX))
    .bind(&e.dedup_key)
    .bind(payload)
    .bind(now_ms / 1000)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = id else { return Ok(None) };
    for r in cfg.routes.iter().filter(|r| r.wants(&e.event_type)) {
        sqlx::query(
            "INSERT INTO webhook_deliveries (endpoint, event_id, tenant_id, event_type, status, attempts, next_attempt_ms, \
             give_up_ms, created_ms) VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6, $5) ON CONFLICT (endpoint, event_id) DO NOTHING",
        )
        .bind(&r.endpoint)
        .bind(id)
        .bind(e.tenant)
        .bind(&e.event_type)
        .bind(now_ms)
        .bind(now_ms.saturating_add(super::RETRY_WINDOW_MS))
        .execute(&mut *conn)
        .await?;
    }
    Ok(Some(id))
}

/// RFC 3339, UTC, whole seconds (the Standard Webhooks payload's `timestamp`).
fn rfc3339(t: UnixTime) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(t).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Insert notices for these crossings; the new ones (PostgreSQL: NOTIFYed at commit).
async fn insert_notices(
    conn: &mut AnyConnection,
    cfg: &OutboxConfig,
    tenant: &str,
    revision: u64,
    crossings: &[Crossing],
    now_ms: i64,
) -> Result<Vec<NoticeEvent>, StoreError> {
    let mut out = Vec::new();
    for c in crossings {
        let event_type = notice_type(c.threshold);
        // Change-made crossings (past due) are distinguished by revision; timed ones by instant.
        let dedup_key = match c.threshold {
            Threshold::PastDueEntered | Threshold::PastDueLeft => format!("{}:r{revision}", c.threshold.as_str()),
            _ => format!("{}:{}", c.threshold.as_str(), c.at),
        };
        let data = serde_json::json!({
            "tenant_id": tenant,
            "notice": c.threshold.as_str(),
            "at": c.at,
            "days_left": c.days_left,
            "revision": revision,
        });
        let e = NewEvent { tenant, event_type, at: c.at, revision, dedup_key, data };
        if let Some(id) = insert_event(conn, cfg, &e, now_ms).await? {
            let n = NoticeEvent {
                id,
                tenant_id: tenant.to_string(),
                threshold: c.threshold,
                at: c.at,
                days_left: c.days_left,
                revision,
            };
            if conn.backend_name() == "PostgreSQL" {
                sqlx::query("SELECT 1 FROM (SELECT pg_notify($1, $2)) AS notified")
                    .bind(NOTICES_CHANNEL)
                    .bind(n.to_json())
                    .execute(&mut *conn)
                    .await?;
            }
            out.push(n);
        }
    }
    Ok(out)
}

/// Move the tenant's notice schedule: crossings up to `through` are emitted; the next is due at
/// the core's next crossing after it.
async fn schedule(
    conn: &mut AnyConnection,
    cfg: &OutboxConfig,
    state: &TenantState,
    through: UnixTime,
) -> Result<(), StoreError> {
    let next = thresholds::next_crossing(&cfg.catalog, state, through);
    sqlx::query("UPDATE tenants SET notices_through = $2, next_notice_at = $3 WHERE tenant_id = $1")
        .bind(&state.tenant_id)
        .bind(through)
        .bind(next)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Everything a committed change puts in the outbox, in its transaction (the tenant row is
/// locked by the revision bump): its `tenant.changed` event, the past-due crossings it makes,
/// and the tenant's next timed crossing. Returns the new notices.
pub(super) async fn record_change(
    conn: &mut AnyConnection,
    cfg: &OutboxConfig,
    change: &CommitRecord<'_>,
) -> Result<Vec<NoticeEvent>, StoreError> {
    let (before, after, at) = (change.before, change.after, change.at);
    let now_ms = crate::clock::host_unix_millis();
    let tenant = after.tenant_id.as_str();
    let data = serde_json::json!({
        "tenant_id": tenant,
        "revision": change.revision,
        "action": change.action,
        "changed": changed_parts(before, after),
    });
    let e = NewEvent {
        tenant,
        event_type: CHANGED_TYPE.to_string(),
        at,
        revision: change.revision,
        dedup_key: format!("r{}", change.revision),
        data,
    };
    insert_event(conn, cfg, &e, now_ms).await?;
    let crossings = thresholds::on_change(&cfg.catalog, before, after, at);
    let notices = insert_notices(conn, cfg, tenant, change.revision, &crossings, now_ms).await?;
    let through: Option<i64> = sqlx::query_scalar("SELECT notices_through FROM tenants WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await?
        .flatten();
    // A tenant's timeline starts when we first store it: nothing before counts as crossed now.
    schedule(conn, cfg, after, through.unwrap_or(at)).await?;
    Ok(notices)
}

/// A committed change, as the outbox sees it.
pub(super) struct CommitRecord<'a> {
    pub before: &'a TenantState,
    pub after: &'a TenantState,
    pub action: &'a str,
    pub revision: u64,
    pub at: UnixTime,
}

/// Which tenants a round takes.
#[derive(Clone, Copy)]
enum Due {
    /// `next_notice_at` has come.
    Scheduled,
    /// Never scheduled (stored before notices existed).
    Unscheduled,
}

/// One due tenant, in its own transaction; its new notices.
async fn emit_for(
    store: &SqlStore,
    cfg: &OutboxConfig,
    tenant: &str,
    now: UnixTime,
    due: Due,
) -> Result<Vec<NoticeEvent>, StoreError> {
    let mut tx = store.pool().begin().await?;
    // The lock, as the first statement: of several replicas, one gets the row; the others wait,
    // then find it no longer due and touch nothing.
    let lock = match due {
        Due::Scheduled => sqlx::query_scalar(
            "UPDATE tenants SET next_notice_at = next_notice_at WHERE tenant_id = $1 AND next_notice_at <= $2 \
             RETURNING notices_through",
        )
        .bind(tenant)
        .bind(now),
        Due::Unscheduled => sqlx::query_scalar(
            "UPDATE tenants SET next_notice_at = next_notice_at WHERE tenant_id = $1 AND notices_through IS NULL \
             RETURNING notices_through",
        )
        .bind(tenant),
    };
    let through: Option<Option<i64>> = lock.fetch_optional(&mut *tx).await?;
    let Some(through) = through else {
        tx.rollback().await?;
        return Ok(Vec::new());
    };
    let state = load_tenant(&mut tx, tenant).await?;
    let through = through.unwrap_or(now);
    let crossings = thresholds::crossings_between(&cfg.catalog, &state, through, now);
    let now_ms = crate::clock::host_unix_millis();
    let notices = insert_notices(&mut tx, cfg, tenant, state.revision, &crossings, now_ms).await?;
    schedule(&mut tx, cfg, &state, now.max(through)).await?;
    tx.commit().await?;
    Ok(notices)
}

/// A stored notice event back as a [`NoticeEvent`] (days left from its payload).
fn row_to_notice(r: &sqlx::any::AnyRow) -> Result<NoticeEvent, StoreError> {
    let event_type: String = r.try_get("event_type")?;
    let threshold = event_type
        .strip_prefix("notice.")
        .and_then(Threshold::parse)
        .ok_or_else(|| StoreError::Corrupt(format!("notice type `{event_type}`")))?;
    let payload: String = r.try_get("payload")?;
    let body: serde_json::Value =
        serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt(format!("notice payload: {e}")))?;
    Ok(NoticeEvent {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        threshold,
        at: r.try_get("at")?,
        days_left: body["data"]["days_left"].as_i64().unwrap_or(0),
        revision: u64::try_from(r.try_get::<i64, _>("revision")?).unwrap_or(0),
    })
}

fn delivery_status(s: &str) -> Result<DeliveryStatus, StoreError> {
    DeliveryStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("delivery status `{s}`")))
}

const DELIVERY_COLUMNS: &str = "d.id, d.endpoint, d.event_id, d.tenant_id, d.event_type, d.status, d.attempts, \
     d.next_attempt_ms, d.give_up_ms, d.created_ms, e.payload";

fn row_to_delivery(r: &sqlx::any::AnyRow) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: r.try_get("id")?,
        endpoint: r.try_get("endpoint")?,
        event_id: r.try_get("event_id")?,
        tenant_id: r.try_get("tenant_id")?,
        event_type: r.try_get("event_type")?,
        status: delivery_status(&r.try_get::<String, _>("status")?)?,
        attempts: r.try_get("attempts")?,
        next_attempt_ms: r.try_get("next_attempt_ms")?,
        give_up_ms: r.try_get("give_up_ms")?,
        created_ms: r.try_get("created_ms")?,
        payload: r.try_get("payload")?,
    })
}

#[async_trait]
impl OutboxStore for SqlStore {
    async fn next_notice_at(&self) -> Result<Option<UnixTime>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MIN(next_notice_at) FROM tenants").fetch_one(self.pool()).await?)
    }

    async fn emit_due_notices(&self, now: UnixTime, limit: u32) -> Result<Vec<NoticeEvent>, StoreError> {
        let Some(cfg) = self.outbox() else { return Ok(Vec::new()) };
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT tenant_id FROM tenants WHERE next_notice_at <= $1 ORDER BY next_notice_at, tenant_id LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::new();
        for tenant in due {
            out.extend(emit_for(self, cfg, &tenant, now, Due::Scheduled).await?);
        }
        if self.backend() == Backend::Sqlite {
            self.publish_notices(&out);
        }
        Ok(out)
    }

    async fn schedule_unscheduled(&self, now: UnixTime, limit: u32) -> Result<u32, StoreError> {
        let Some(cfg) = self.outbox() else { return Ok(0) };
        let todo: Vec<String> = sqlx::query_scalar(
            "SELECT tenant_id FROM tenants WHERE notices_through IS NULL ORDER BY tenant_id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        let n = u32::try_from(todo.len()).unwrap_or(u32::MAX);
        for tenant in todo {
            // Its timeline starts now: nothing before counts as crossed, so nothing is emitted.
            emit_for(self, cfg, &tenant, now, Due::Unscheduled).await?;
        }
        Ok(n)
    }

    async fn notices_after(&self, after_id: i64, limit: u32) -> Result<Vec<NoticeEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, event_type, at, revision, payload FROM outbox_events \
             WHERE id > $1 AND event_type LIKE 'notice.%' ORDER BY id LIMIT $2",
        )
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(row_to_notice).collect()
    }

    async fn last_notice_id(&self) -> Result<i64, StoreError> {
        let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM outbox_events WHERE event_type LIKE 'notice.%'")
            .fetch_one(self.pool())
            .await?;
        Ok(id.unwrap_or(0))
    }

    async fn claim_deliveries(&self, now_ms: i64, lease_ms: i64, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        // Per endpoint and tenant, only the oldest undelivered event is due: ordered delivery.
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN outbox_events e ON e.id = d.event_id \
             WHERE d.status = 'pending' AND d.next_attempt_ms <= $1 \
             AND (d.lease_until_ms IS NULL OR d.lease_until_ms < $1) \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.endpoint = d.endpoint \
                 AND p.tenant_id = d.tenant_id AND p.status = 'pending' AND p.event_id < d.event_id) \
             ORDER BY d.next_attempt_ms, d.id LIMIT $2"
        );
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms).bind(i64::from(limit)).fetch_all(self.pool()).await?;
        let mut claimed = Vec::new();
        for r in &rows {
            let d = row_to_delivery(r)?;
            let n = sqlx::query(
                "UPDATE webhook_deliveries SET lease_until_ms = $2 WHERE id = $1 AND status = 'pending' \
                 AND (lease_until_ms IS NULL OR lease_until_ms < $3)",
            )
            .bind(d.id)
            .bind(now_ms.saturating_add(lease_ms))
            .bind(now_ms)
            .execute(self.pool())
            .await?;
            if n.rows_affected() == 1 {
                claimed.push(d);
            }
        }
        Ok(claimed)
    }

    async fn record_attempt(&self, delivery_id: i64, a: &Attempt, outcome: AttemptOutcome) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let (status, next) = match outcome {
            AttemptOutcome::Delivered => ("delivered", None),
            AttemptOutcome::Retry { at_ms } => ("pending", Some(at_ms)),
            AttemptOutcome::GaveUp => ("failed", None),
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, next_attempt_ms = COALESCE($3, next_attempt_ms), \
             lease_until_ms = NULL WHERE id = $1",
        )
        .bind(delivery_id)
        .bind(status)
        .bind(next)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at_ms, status_code, error, duration_ms) \
             VALUES ($1, (SELECT attempts FROM webhook_deliveries WHERE id = $1), $2, $3, $4, $5)",
        )
        .bind(delivery_id)
        .bind(a.at_ms)
        .bind(a.status_code.map(i64::from))
        .bind(a.error.clone())
        .bind(a.duration_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn next_delivery_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MIN(next_attempt_ms) FROM webhook_deliveries WHERE status = 'pending'")
            .fetch_one(self.pool())
            .await?)
    }

    async fn deliveries(&self, f: &DeliveryFilter) -> Result<Vec<DeliveryRecord>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN outbox_events e ON e.id = d.event_id \
             WHERE ($1 = '' OR d.endpoint = $1) AND ($2 = '' OR d.tenant_id = $2) AND ($3 = '' OR d.status = $3) \
             AND ($4 = 0 OR d.id < $4) ORDER BY d.id DESC LIMIT $5"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(f.endpoint.clone().unwrap_or_default())
            .bind(f.tenant_id.clone().unwrap_or_default())
            .bind(f.status.map(DeliveryStatus::as_str).unwrap_or_default())
            .bind(f.before_id.unwrap_or(0))
            .bind(i64::from(f.limit))
            .fetch_all(self.pool())
            .await?;
        let mut out = Vec::new();
        for r in &rows {
            let delivery = row_to_delivery(r)?;
            let attempts = sqlx::query(
                "SELECT attempt, at_ms, status_code, error, duration_ms FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt",
            )
            .bind(delivery.id)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|a| {
                Ok(Attempt {
                    attempt: a.try_get("attempt")?,
                    at_ms: a.try_get("at_ms")?,
                    status_code: a.try_get::<Option<i64>, _>("status_code")?.and_then(|c| u16::try_from(c).ok()),
                    error: a.try_get("error")?,
                    duration_ms: a.try_get("duration_ms")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            out.push(DeliveryRecord { delivery, attempts });
        }
        Ok(out)
    }

    async fn redeliver(&self, delivery_id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_ms = $2, give_up_ms = $3, lease_until_ms = NULL \
             WHERE id = $1",
        )
        .bind(delivery_id)
        .bind(now_ms)
        .bind(now_ms.saturating_add(super::RETRY_WINDOW_MS))
        .execute(self.pool())
        .await?;
        Ok(n.rows_affected() == 1)
    }
}

impl SqlStore {
    /// SQLite: this process is the only one; tell its feed directly.
    pub(super) fn publish_notices(&self, notices: &[NoticeEvent]) {
        for n in notices {
            let _ = self.notice_sender().send(n.clone());
        }
    }

    /// Notices committed by this process (SQLite only; PostgreSQL NOTIFYs every replica).
    pub fn subscribe_notices(&self) -> broadcast::Receiver<NoticeEvent> {
        self.notice_sender().subscribe()
    }
}
