//! Tenant rows: one tenant's state in and out of its five tables, the revision bump that
//! serializes its changes (and tells other replicas), and audit rows. [`TenantStore`] for
//! [`SqlStore`]: load, apply the core's command, save what changed — in one transaction.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::outbox::{CommitRecord, record_change};
use super::sql::{Backend, SqlStore};
use super::{Committed, StoreError, TenantDirectory, TenantStore};
use crate::catalog::Interval;
use crate::command::{Actor, AuditEntry, Command};
use crate::tenant::{
    AddOnGrant, Change, GrantOrigin, Override, PlanAssignment, Subscription, SubscriptionStatus, TenantState, Trial,
};

fn status(s: &str) -> Result<SubscriptionStatus, StoreError> {
    SubscriptionStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("subscription status `{s}`")))
}

fn interval(s: Option<String>) -> Option<Interval> {
    match s.as_deref() {
        Some("month") => Some(Interval::Month),
        Some("year") => Some(Interval::Year),
        _ => None,
    }
}

/// The rows of a tenant's whole state, for the tenants `$pred` selects, in one statement: one
/// round trip (PostgreSQL) or one hop to the SQLite worker instead of five, and one snapshot
/// instead of five reads a writer could interleave. Every table maps onto the same row shape:
/// `k` says which table, `t1..t6` are its text columns, `n1..n6` its integer columns (see the
/// arms of [`read_row`]) and `tid` the tenant.
macro_rules! tenant_rows {
    ($pred:literal, $order:literal) => {
        concat!(
            "SELECT CAST(0 AS BIGINT) AS k, stripe_customer_id AS t1, last_actor AS t2, last_rationale AS t3, \
                    last_origin AS t4, CAST(NULL AS TEXT) AS t5, CAST(NULL AS TEXT) AS t6, \
                    revision AS n1, trial_start AS n2, trial_end AS n3, archived AS n4, updated_at AS n5, \
                    CAST(NULL AS BIGINT) AS n6, tenant_id AS tid \
               FROM tenants WHERE ", $pred, " \
             UNION ALL SELECT 1, id, status, plan, billing_interval, last_event_id, NULL, \
                    seats, trial_end, current_period_start, current_period_end, cancel_at_period_end, \
                    last_event_created, tenant_id \
               FROM subscriptions WHERE ", $pred, " \
             UNION ALL SELECT 2, plan, actor, rationale, NULL, NULL, NULL, assigned_at, expires_at, NULL, NULL, \
                    NULL, NULL, tenant_id \
               FROM plan_assignments WHERE ", $pred, " \
             UNION ALL SELECT 3, addon, origin, NULL, NULL, actor, rationale, quantity, granted_at, expires_at, \
                    NULL, NULL, NULL, tenant_id \
               FROM addon_grants WHERE ", $pred, " \
             UNION ALL SELECT 4, feature, value_json, actor, rationale, NULL, NULL, set_at, expires_at, NULL, NULL, \
                    NULL, NULL, tenant_id \
               FROM overrides WHERE ", $pred, " \
             ORDER BY ", $order
        )
    };
}

/// One tenant's state.
const LOAD_TENANT: &str = tenant_rows!("tenant_id = $1", "k, t1, t2");

/// The states of the `$2` tenants after `$1` in id order (a page of a tenant list).
const LOAD_TENANTS_AFTER: &str = tenant_rows!(
    "tenant_id IN (SELECT tenant_id FROM tenants WHERE tenant_id > $1 ORDER BY tenant_id LIMIT $2)",
    "tid, k, t1, t2"
);

/// One row of [`tenant_rows!`], read by position (k = 0, t1..t6 = 1..6, n1..n6 = 7..12): no
/// column-name lookups per field.
struct Cols<'a> {
    row: &'a AnyRow,
    tenant_id: &'a str,
}

impl Cols<'_> {
    fn text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.row.try_get::<Option<String>, _>(i)?)
    }
    fn req_text(&self, i: usize) -> Result<String, StoreError> {
        self.text(i)?.ok_or_else(|| StoreError::Corrupt(format!("tenant {}: column t{i} is NULL", self.tenant_id)))
    }
    fn num(&self, i: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.row.try_get::<Option<i64>, _>(6 + i)?)
    }
    fn req_num(&self, i: usize) -> Result<i64, StoreError> {
        self.num(i)?.ok_or_else(|| StoreError::Corrupt(format!("tenant {}: column n{i} is NULL", self.tenant_id)))
    }
}

/// Load a tenant through any connection (a pooled one, or a transaction's).
pub(super) async fn load_tenant(conn: &mut AnyConnection, tenant_id: &str) -> Result<TenantState, StoreError> {
    let rows = sqlx::query(LOAD_TENANT).bind(tenant_id).fetch_all(&mut *conn).await?;
    let mut state = TenantState::unknown(tenant_id);
    for row in &rows {
        read_row(&mut state, &Cols { row, tenant_id })?;
    }
    // Without its `tenants` row a tenant is unknown, whatever else is stored under its id.
    if !state.known {
        return Ok(TenantState::unknown(tenant_id));
    }
    Ok(state)
}

/// The states of up to `limit` tenants after `after` (from the first when empty), in id order.
pub(super) async fn load_tenants_after(
    conn: &mut AnyConnection,
    after: &str,
    limit: u32,
) -> Result<Vec<TenantState>, StoreError> {
    let rows = sqlx::query(LOAD_TENANTS_AFTER).bind(after).bind(i64::from(limit)).fetch_all(&mut *conn).await?;
    let mut states: Vec<TenantState> = Vec::new();
    for row in &rows {
        let tid: String = row.try_get(13)?;
        if states.last().is_none_or(|s| s.tenant_id != tid) {
            states.push(TenantState::unknown(&tid));
        }
        if let Some(state) = states.last_mut() {
            read_row(state, &Cols { row, tenant_id: &tid })?;
        }
    }
    // Rows of a tenant whose `tenants` row is gone do not make it known (as in `load_tenant`).
    states.retain(|s| s.known);
    Ok(states)
}

/// One row of a tenant's state (kind `k`) into `state`.
fn read_row(state: &mut TenantState, c: &Cols) -> Result<(), StoreError> {
    match c.row.try_get::<i64, _>(0)? {
        0 => read_tenant_row(state, c)?,
        1 => state.subscriptions.push(subscription_row(c)?),
        2 => state.plan_assignments.push(PlanAssignment {
            plan: c.req_text(1)?,
            actor: c.req_text(2)?,
            rationale: c.req_text(3)?,
            assigned_at: c.req_num(1)?,
            expires_at: c.num(2)?,
        }),
        3 => state.addon_grants.push(grant_row(c)?),
        4 => state.overrides.push(override_row(c)?),
        other => return Err(StoreError::Corrupt(format!("tenant {}: row kind {other}", c.tenant_id))),
    }
    Ok(())
}

fn read_tenant_row(state: &mut TenantState, c: &Cols) -> Result<(), StoreError> {
    state.known = true;
    state.revision = u64::try_from(c.req_num(1)?).unwrap_or(0);
    state.stripe_customer_id = c.text(1)?;
    state.trial = match (c.num(2)?, c.num(3)?) {
        (Some(start), Some(end)) => Some(Trial { start, end }),
        _ => None,
    };
    state.archived = c.req_num(4)? != 0;
    state.last_change = c.text(2)?.map(|actor| Change {
        actor,
        at: c.num(5).ok().flatten().unwrap_or_default(),
        rationale: c.text(3).ok().flatten().unwrap_or_default(),
        origin: c.text(4).ok().flatten().unwrap_or_default(),
    });
    Ok(())
}

fn subscription_row(c: &Cols) -> Result<Subscription, StoreError> {
    Ok(Subscription {
        id: c.req_text(1)?,
        status: status(&c.req_text(2)?)?,
        plan: c.text(3)?,
        interval: interval(c.text(4)?),
        seats: c.num(1)?,
        trial_end: c.num(2)?,
        current_period_start: c.num(3)?,
        current_period_end: c.num(4)?,
        cancel_at_period_end: c.req_num(5)? != 0,
        last_event_created: c.req_num(6)?,
        last_event_id: c.req_text(5)?,
    })
}

fn grant_row(c: &Cols) -> Result<AddOnGrant, StoreError> {
    let key = c.req_text(2)?;
    let origin = GrantOrigin::from_key(&key)
        .ok_or_else(|| StoreError::Corrupt(format!("tenant {}: grant origin `{key}`", c.tenant_id)))?;
    Ok(AddOnGrant {
        addon: c.req_text(1)?,
        quantity: c.req_num(1)?,
        origin,
        actor: c.req_text(5)?,
        rationale: c.req_text(6)?,
        granted_at: c.req_num(2)?,
        expires_at: c.num(3)?,
    })
}

fn override_row(c: &Cols) -> Result<Override, StoreError> {
    let raw = c.req_text(2)?;
    Ok(Override {
        feature: c.req_text(1)?,
        value: serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(format!("override value `{raw}`: {e}")))?,
        actor: c.req_text(3)?,
        rationale: c.req_text(4)?,
        set_at: c.req_num(1)?,
        expires_at: c.num(2)?,
    })
}

/// Bump (or create) the tenant row as the transaction's first statement: it takes the write
/// lock up front (SQLite) and serializes concurrent changes of one tenant (PostgreSQL).
pub(super) async fn bump_revision(conn: &mut AnyConnection, tenant_id: &str, by: &Actor) -> Result<u64, StoreError> {
    let rev: i64 = sqlx::query_scalar(
        "INSERT INTO tenants (tenant_id, revision, created_at, updated_at, last_actor, last_rationale, last_origin) \
         VALUES ($1, 1, $2, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id) DO UPDATE SET revision = tenants.revision + 1, updated_at = excluded.updated_at, \
         last_actor = excluded.last_actor, last_rationale = excluded.last_rationale, last_origin = excluded.last_origin \
         RETURNING revision",
    )
    .bind(tenant_id)
    .bind(by.at)
    .bind(&by.actor)
    .bind(&by.rationale)
    .bind(&by.origin)
    .fetch_one(&mut *conn)
    .await?;
    // PostgreSQL: tell every replica, in the same transaction (delivered only on commit).
    if conn.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT 1 FROM (SELECT pg_notify($1, $2)) AS notified")
            .bind(super::sql::CHANGES_CHANNEL)
            .bind(format!("{rev}:{tenant_id}"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(u64::try_from(rev).unwrap_or(0))
}

pub(super) async fn write_audit(
    conn: &mut AnyConnection,
    tenant_id: &str,
    entry: &AuditEntry,
    by: &Actor,
    revision: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, at, actor, action, rationale, origin, before_json, after_json, revision) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(tenant_id)
    .bind(by.at)
    .bind(&by.actor)
    .bind(entry.action)
    .bind(&by.rationale)
    .bind(&by.origin)
    .bind(entry.before.to_string())
    .bind(entry.after.to_string())
    .bind(i64::try_from(revision).unwrap_or(i64::MAX))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Insert or replace a grant; the key is (tenant, add-on, origin), so re-delivered grants converge.
async fn upsert_grant(conn: &mut AnyConnection, tenant_id: &str, g: &AddOnGrant) -> Result<(), StoreError> {
    // `subscription_id`/`item_id` are kept for operators' queries; the key is `origin`.
    let (sub, item) = match &g.origin {
        GrantOrigin::Stripe { subscription_id, item_id } => (Some(subscription_id.clone()), Some(item_id.clone())),
        GrantOrigin::Manual | GrantOrigin::StripeEntitlement { .. } => (None, None),
    };
    sqlx::query(
        "INSERT INTO addon_grants (tenant_id, addon, origin, subscription_id, item_id, quantity, actor, rationale, granted_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (tenant_id, addon, origin) DO UPDATE SET quantity = excluded.quantity, actor = excluded.actor, \
         rationale = excluded.rationale, granted_at = excluded.granted_at, expires_at = excluded.expires_at",
    )
    .bind(tenant_id)
    .bind(&g.addon)
    .bind(g.origin.key())
    .bind(sub)
    .bind(item)
    .bind(g.quantity)
    .bind(&g.actor)
    .bind(&g.rationale)
    .bind(g.granted_at)
    .bind(g.expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn upsert_subscription(
    conn: &mut AnyConnection,
    tenant: &str,
    customer: Option<&str>,
    s: &Subscription,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO subscriptions (id, tenant_id, customer_id, status, plan, billing_interval, seats, trial_end, current_period_start, \
         current_period_end, cancel_at_period_end, last_event_created, last_event_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, customer_id = COALESCE(excluded.customer_id, subscriptions.customer_id), \
         status = excluded.status, plan = excluded.plan, billing_interval = excluded.billing_interval, seats = excluded.seats, \
         trial_end = excluded.trial_end, current_period_start = excluded.current_period_start, current_period_end = excluded.current_period_end, \
         cancel_at_period_end = excluded.cancel_at_period_end, last_event_created = excluded.last_event_created, last_event_id = excluded.last_event_id",
    )
    .bind(&s.id)
    .bind(tenant)
    .bind(customer.map(str::to_string))
    .bind(s.status.as_str())
    .bind(s.plan.clone())
    .bind(s.interval.map(|i| i.as_str().to_string()))
    .bind(s.seats)
    .bind(s.trial_end)
    .bind(s.current_period_start)
    .bind(s.current_period_end)
    .bind(i64::from(s.cancel_at_period_end))
    .bind(s.last_event_created)
    .bind(&s.last_event_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The rows of `before` that are gone from `after`, and those that are new or changed, by key.
fn diff<'a, T: PartialEq, K: PartialEq>(
    before: &'a [T],
    after: &'a [T],
    key: impl Fn(&T) -> K,
) -> (Vec<&'a T>, Vec<&'a T>) {
    let gone = before.iter().filter(|b| !after.iter().any(|a| key(a) == key(b))).collect();
    let changed = after.iter().filter(|a| !before.contains(a)).collect();
    (gone, changed)
}

/// Write what changed between two states of a tenant (its row must exist). `customer` is the
/// Stripe customer of changed subscriptions, when the change came from Stripe.
pub(super) async fn save(
    conn: &mut AnyConnection,
    before: &TenantState,
    after: &TenantState,
    customer: Option<&str>,
) -> Result<(), StoreError> {
    let t = after.tenant_id.as_str();
    if (&before.stripe_customer_id, before.trial, before.archived)
        != (&after.stripe_customer_id, after.trial, after.archived)
    {
        write_tenant_fields(conn, after).await?;
    }
    let (gone, changed) = diff(&before.plan_assignments, &after.plan_assignments, |a| a.plan.clone());
    for a in gone {
        exec(conn, "DELETE FROM plan_assignments WHERE tenant_id = $1 AND plan = $2", t, &a.plan).await?;
    }
    for a in changed {
        upsert_assignment(conn, t, a).await?;
    }
    let (gone, changed) = diff(&before.addon_grants, &after.addon_grants, |g| (g.addon.clone(), g.origin.key()));
    for g in gone {
        sqlx::query("DELETE FROM addon_grants WHERE tenant_id = $1 AND addon = $2 AND origin = $3")
            .bind(t)
            .bind(&g.addon)
            .bind(g.origin.key())
            .execute(&mut *conn)
            .await?;
    }
    for g in changed {
        upsert_grant(conn, t, g).await?;
    }
    let (gone, changed) = diff(&before.overrides, &after.overrides, |o| o.feature.clone());
    for o in gone {
        exec(conn, "DELETE FROM overrides WHERE tenant_id = $1 AND feature = $2", t, &o.feature).await?;
    }
    for o in changed {
        upsert_override(conn, t, o).await?;
    }
    let (gone, changed) = diff(&before.subscriptions, &after.subscriptions, |s| s.id.clone());
    for s in gone {
        exec(conn, "DELETE FROM subscriptions WHERE tenant_id = $1 AND id = $2", t, &s.id).await?;
    }
    for s in changed {
        upsert_subscription(conn, t, customer, s).await?;
    }
    Ok(())
}

/// A statement keyed by (tenant, one text key).
async fn exec(conn: &mut AnyConnection, sql: &'static str, tenant: &str, key: &str) -> Result<(), StoreError> {
    sqlx::query(sql).bind(tenant).bind(key).execute(&mut *conn).await?;
    Ok(())
}

async fn write_tenant_fields(conn: &mut AnyConnection, s: &TenantState) -> Result<(), StoreError> {
    sqlx::query("UPDATE tenants SET stripe_customer_id = $2, trial_start = $3, trial_end = $4, archived = $5 WHERE tenant_id = $1")
        .bind(&s.tenant_id)
        .bind(s.stripe_customer_id.clone())
        .bind(s.trial.map(|t| t.start))
        .bind(s.trial.map(|t| t.end))
        .bind(i64::from(s.archived))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn upsert_assignment(conn: &mut AnyConnection, tenant_id: &str, a: &PlanAssignment) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO plan_assignments (tenant_id, plan, actor, rationale, assigned_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant_id, plan) DO UPDATE SET actor = excluded.actor, rationale = excluded.rationale, \
         assigned_at = excluded.assigned_at, expires_at = excluded.expires_at",
    )
    .bind(tenant_id)
    .bind(&a.plan)
    .bind(&a.actor)
    .bind(&a.rationale)
    .bind(a.assigned_at)
    .bind(a.expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn upsert_override(conn: &mut AnyConnection, tenant_id: &str, o: &Override) -> Result<(), StoreError> {
    let value = serde_json::to_string(&o.value).map_err(|e| StoreError::Corrupt(format!("override value: {e}")))?;
    sqlx::query(
        "INSERT INTO overrides (tenant_id, feature, value_json, actor, rationale, set_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (tenant_id, feature) DO UPDATE SET value_json = excluded.value_json, actor = excluded.actor, \
         rationale = excluded.rationale, set_at = excluded.set_at, expires_at = excluded.expires_at",
    )
    .bind(tenant_id)
    .bind(&o.feature)
    .bind(value)
    .bind(&o.actor)
    .bind(&o.rationale)
    .bind(o.set_at)
    .bind(o.expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait]
impl TenantStore for SqlStore {
    async fn load(&self, tenant_id: &str) -> Result<TenantState, StoreError> {
        let mut conn = self.pool().acquire().await?;
        load_tenant(&mut conn, tenant_id).await
    }

    async fn mutate(&self, tenant_id: &str, command: &Command, by: &Actor) -> Result<Committed, StoreError> {
        command.check_text(by)?;
        let mut tx = self.pool().begin().await?;
        let revision = bump_revision(&mut tx, tenant_id, by).await?;
        let mut state = load_tenant(&mut tx, tenant_id).await?;
        // The state as it was before this change: the bump above only took the lock.
        state.revision = revision.saturating_sub(1);
        command.check_state(&state, by)?;
        let before = state.clone();
        let entry = command.apply(&mut state, by);
        save(&mut tx, &before, &state, None).await?;
        write_audit(&mut tx, tenant_id, &entry, by, revision).await?;
        let notices = match self.outbox() {
            Some(cfg) => {
                let change = CommitRecord { before: &before, after: &state, action: entry.action, revision, at: by.at };
                record_change(&mut tx, cfg, &change).await?
            }
            None => Vec::new(),
        };
        tx.commit().await?;
        if self.backend() == Backend::Sqlite {
            self.publish_notices(&notices);
        }
        Ok(Committed { revision, trial: state.trial })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        SqlStore::ping(self).await
    }
}

#[async_trait]
impl TenantDirectory for SqlStore {
    async fn tenants_after(&self, after: Option<&str>, limit: u32) -> Result<Vec<TenantState>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        load_tenants_after(&mut conn, after.unwrap_or(""), limit).await
    }
}
