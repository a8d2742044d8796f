//! The sqlx store: one body of portable SQL (numbered `$n` parameters, `ON CONFLICT`,
//! `RETURNING`) run through sqlx's `Any` driver against SQLite or PostgreSQL. Only the
//! migrations (and PostgreSQL's NOTIFY, added by the replica layer) differ per backend.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection, Row};

use super::{
    Actor, AuditRecord, Committed, Mutation, Replay, Store, StoreError, StoredEvent, StripeOutcome, StripeStatus,
    UsageMode, UsageOutcome, UsageReport,
};
use crate::catalog::Interval;
use crate::lifecycle::extend_trial;
use crate::stripe::{Envelope, Translation};
use crate::tenant::{
    AddOnGrant, Change, GrantOrigin, Override, PlanAssignment, Subscription, SubscriptionStatus, TenantState, Trial,
    UnixTime,
};

/// Columns of `stripe_events`, in the order `stripe::row_to_event` reads them.
macro_rules! event_columns {
    () => {
        "id, event_type, created, livemode, customer_id, tenant_id, status, error, received_at, applied_at, payload"
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
}

/// Accepts `postgres://…`, `sqlite://PATH`, `sqlite::memory:` or a bare file path.
pub fn normalize_url(url: &str) -> Result<(String, Backend), StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((url.to_string(), Backend::Postgres));
    }
    let sqlite = if let Some(rest) = url.strip_prefix("sqlite:") {
        format!("sqlite:{rest}")
    } else if !url.contains("://") && !url.is_empty() {
        format!("sqlite://{url}")
    } else {
        return Err(StoreError::UnsupportedUrl(url.to_string()));
    };
    // Create the file on first use: the embedded default must work with nothing set up.
    let sqlite = if sqlite.contains("mode=") || sqlite.contains(":memory:") {
        sqlite
    } else if sqlite.contains('?') {
        format!("{sqlite}&mode=rwc")
    } else {
        format!("{sqlite}?mode=rwc")
    };
    Ok((sqlite, Backend::Sqlite))
}

impl SqlStore {
    pub async fn connect(url: &str) -> Result<SqlStore, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, backend) = normalize_url(url)?;
        let opts = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(3))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers proceed during a write; the busy timeout queues writers.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 5000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        Ok(SqlStore { pool, backend })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

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

/// A tenant's whole state in one statement: one round trip (PostgreSQL) or one hop to the
/// SQLite worker instead of five, and one snapshot instead of five reads a writer could
/// interleave. Every table maps onto the same row shape: `k` says which table, `t1..t6` are
/// its text columns and `n1..n6` its integer columns (see the arms of [`load_tenant`]).
const LOAD_TENANT: &str = "\
SELECT CAST(0 AS BIGINT) AS k, stripe_customer_id AS t1, last_actor AS t2, last_rationale AS t3, last_origin AS t4, \
       CAST(NULL AS TEXT) AS t5, CAST(NULL AS TEXT) AS t6, \
       revision AS n1, trial_start AS n2, trial_end AS n3, archived AS n4, updated_at AS n5, CAST(NULL AS BIGINT) AS n6 \
  FROM tenants WHERE tenant_id = $1 \
UNION ALL SELECT 1, id, status, plan, billing_interval, last_event_id, NULL, \
       seats, trial_end, current_period_start, current_period_end, cancel_at_period_end, last_event_created \
  FROM subscriptions WHERE tenant_id = $1 \
UNION ALL SELECT 2, plan, actor, rationale, NULL, NULL, NULL, assigned_at, expires_at, NULL, NULL, NULL, NULL \
  FROM plan_assignments WHERE tenant_id = $1 \
UNION ALL SELECT 3, addon, origin, subscription_id, item_id, actor, rationale, quantity, granted_at, expires_at, NULL, NULL, NULL \
  FROM addon_grants WHERE tenant_id = $1 \
UNION ALL SELECT 4, feature, value_json, actor, rationale, NULL, NULL, set_at, expires_at, NULL, NULL, NULL, NULL \
  FROM overrides WHERE tenant_id = $1 \
ORDER BY k, t1, t2";

/// Load a tenant through any connection (a pooled one, or a transaction's).
pub(crate) async fn load_tenant(conn: &mut AnyConnection, tenant_id: &str) -> Result<TenantState, StoreError> {
    let rows = sqlx::query(LOAD_TENANT).bind(tenant_id).fetch_all(&mut *conn).await?;
    let mut state = TenantState::unknown(tenant_id);
    for r in &rows {
        // By position (k = 0, t1..t6 = 1..6, n1..n6 = 7..12): no column-name lookups per field.
        let text = |i: usize| r.try_get::<Option<String>, _>(i);
        let req_text = |i: usize| -> Result<String, StoreError> {
            text(i)?.ok_or_else(|| StoreError::Corrupt(format!("tenant {tenant_id}: column t{i} is NULL")))
        };
        let num = |i: usize| r.try_get::<Option<i64>, _>(6 + i);
        let req_num = |i: usize| -> Result<i64, StoreError> {
            num(i)?.ok_or_else(|| StoreError::Corrupt(format!("tenant {tenant_id}: column n{i} is NULL")))
        };
        match r.try_get::<i64, _>(0)? {
            0 => {
                state.known = true;
                state.revision = u64::try_from(req_num(1)?).unwrap_or(0);
                state.stripe_customer_id = text(1)?;
                state.trial = match (num(2)?, num(3)?) {
                    (Some(start), Some(end)) => Some(Trial { start, end }),
                    _ => None,
                };
                state.archived = req_num(4)? != 0;
                state.last_change = text(2)?.map(|actor| Change {
                    actor,
                    at: num(5).ok().flatten().unwrap_or_default(),
                    rationale: text(3).ok().flatten().unwrap_or_default(),
                    origin: text(4).ok().flatten().unwrap_or_default(),
                });
            }
            1 => state.subscriptions.push(Subscription {
                id: req_text(1)?,
                status: status(&req_text(2)?)?,
                plan: text(3)?,
                interval: interval(text(4)?),
                seats: num(1)?,
                trial_end: num(2)?,
                current_period_start: num(3)?,
                current_period_end: num(4)?,
                cancel_at_period_end: req_num(5)? != 0,
                last_event_created: req_num(6)?,
                last_event_id: req_text(5)?,
            }),
            2 => state.plan_assignments.push(PlanAssignment {
                plan: req_text(1)?,
                actor: req_text(2)?,
                rationale: req_text(3)?,
                assigned_at: req_num(1)?,
                expires_at: num(2)?,
            }),
            3 => {
                let origin = match (text(3)?, text(4)?) {
                    (Some(subscription_id), item) => {
                        GrantOrigin::Stripe { subscription_id, item_id: item.unwrap_or_default() }
                    }
                    _ => match req_text(2)?.strip_prefix("stripe-entitlement:") {
                        Some(key) => GrantOrigin::StripeEntitlement { lookup_key: key.to_string() },
                        None => GrantOrigin::Manual,
                    },
                };
                state.addon_grants.push(AddOnGrant {
                    addon: req_text(1)?,
                    quantity: req_num(1)?,
                    origin,
                    actor: req_text(5)?,
                    rationale: req_text(6)?,
                    granted_at: req_num(2)?,
                    expires_at: num(3)?,
                });
            }
            4 => {
                let raw = req_text(2)?;
                state.overrides.push(Override {
                    feature: req_text(1)?,
                    value: serde_json::from_str(&raw)
                        .map_err(|e| StoreError::Corrupt(format!("override value `{raw}`: {e}")))?,
                    actor: req_text(3)?,
                    rationale: req_text(4)?,
                    set_at: req_num(1)?,
                    expires_at: num(2)?,
                });
            }
            other => return Err(StoreError::Corrupt(format!("tenant {tenant_id}: row kind {other}"))),
        }
    }
    // Without its `tenants` row a tenant is unknown, whatever else is stored under its id.
    if !state.known {
        return Ok(TenantState::unknown(tenant_id));
    }
    Ok(state)
}

/// Bump (or create) the tenant row as the transaction's first statement: it takes the write
/// lock up front (SQLite) and serializes concurrent changes of one tenant (PostgreSQL).
pub(crate) async fn bump_revision(conn: &mut AnyConnection, tenant_id: &str, by: &Actor) -> Result<u64, StoreError> {
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
            .bind(CHANGES_CHANNEL)
            .bind(format!("{rev}:{tenant_id}"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(u64::try_from(rev).unwrap_or(0))
}

/// The LISTEN/NOTIFY channel of committed tenant changes; payload `<revision>:<tenant id>`.
pub const CHANGES_CHANNEL: &str = "entitlements_changes";

pub(crate) async fn write_audit(
    conn: &mut AnyConnection,
    tenant_id: &str,
    action: &str,
    by: &Actor,
    before: &serde_json::Value,
    after: &serde_json::Value,
    revision: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, at, actor, action, rationale, origin, before_json, after_json, revision) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(tenant_id)
    .bind(by.at)
    .bind(&by.actor)
    .bind(action)
    .bind(&by.rationale)
    .bind(&by.origin)
    .bind(before.to_string())
    .bind(after.to_string())
    .bind(i64::try_from(revision).unwrap_or(i64::MAX))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn tenant_json(s: &TenantState) -> serde_json::Value {
    json!({ "stripe_customer_id": s.stripe_customer_id, "trial": s.trial, "archived": s.archived })
}

/// Apply one mutation inside an open transaction; returns (before, after, trial).
async fn apply(
    conn: &mut AnyConnection,
    tenant_id: &str,
    m: &Mutation,
    by: &Actor,
    current: &TenantState,
) -> Result<(serde_json::Value, serde_json::Value, Option<Trial>), StoreError> {
    let null = serde_json::Value::Null;
    Ok(match m {
        Mutation::PutTenant { stripe_customer_id, trial, archived } => {
            let mut next = current.clone();
            if let Some(c) = stripe_customer_id {
                next.stripe_customer_id = (!c.is_empty()).then(|| c.clone());
            }
            if trial.is_some() {
                next.trial = *trial;
            }
            if let Some(a) = archived {
                next.archived = *a;
            }
            write_tenant_fields(conn, tenant_id, &next).await?;
            // Revision 1: this very transaction created the tenant, so there was nothing before.
            (if current.revision > 1 { tenant_json(current) } else { null }, tenant_json(&next), next.trial)
        }
        Mutation::ExtendTrial { extension } => {
            let trial = extend_trial(current.trial, *extension, by.at);
            let mut next = current.clone();
            next.trial = Some(trial);
            write_tenant_fields(conn, tenant_id, &next).await?;
            (to_json(&current.trial), to_json(&trial), Some(trial))
        }
        Mutation::AssignPlan { plan, expires_at } => {
            let before = current.plan_assignments.iter().find(|a| &a.plan == plan);
            let after = PlanAssignment {
                plan: plan.clone(),
                actor: by.actor.clone(),
                rationale: by.rationale.clone(),
                assigned_at: by.at,
                expires_at: *expires_at,
            };
            sqlx::query(
                "INSERT INTO plan_assignments (tenant_id, plan, actor, rationale, assigned_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (tenant_id, plan) DO UPDATE SET actor = excluded.actor, rationale = excluded.rationale, \
                 assigned_at = excluded.assigned_at, expires_at = excluded.expires_at",
            )
            .bind(tenant_id)
            .bind(plan)
            .bind(&by.actor)
            .bind(&by.rationale)
            .bind(by.at)
            .bind(*expires_at)
            .execute(&mut *conn)
            .await?;
            (to_json(&before), to_json(&after), None)
        }
        Mutation::UnassignPlan { plan } => {
            let before: Vec<_> =
                current.plan_assignments.iter().filter(|a| plan.as_ref().is_none_or(|p| &a.plan == p)).collect();
            sqlx::query("DELETE FROM plan_assignments WHERE tenant_id = $1 AND ($2 = '' OR plan = $2)")
                .bind(tenant_id)
                .bind(plan.clone().unwrap_or_default())
                .execute(&mut *conn)
                .await?;
            (to_json(&before), json!([]), None)
        }
        Mutation::GrantAddOn { addon, quantity, expires_at } => {
            let before = current.addon_grants.iter().find(|g| &g.addon == addon && g.origin == GrantOrigin::Manual);
            let after = AddOnGrant {
                addon: addon.clone(),
                quantity: *quantity,
                origin: GrantOrigin::Manual,
                actor: by.actor.clone(),
                rationale: by.rationale.clone(),
                granted_at: by.at,
                expires_at: *expires_at,
            };
            upsert_grant(conn, tenant_id, &after).await?;
            (to_json(&before), to_json(&after), None)
        }
        Mutation::RevokeAddOn { addon } => {
            let before = current.addon_grants.iter().find(|g| &g.addon == addon && g.origin == GrantOrigin::Manual);
            sqlx::query("DELETE FROM addon_grants WHERE tenant_id = $1 AND addon = $2 AND origin = 'manual'")
                .bind(tenant_id)
                .bind(addon)
                .execute(&mut *conn)
                .await?;
            (to_json(&before), null, None)
        }
        Mutation::SetOverride { feature, value, expires_at } => {
            let before = current.overrides.iter().find(|o| &o.feature == feature);
            let after = Override {
                feature: feature.clone(),
                value: *value,
                actor: by.actor.clone(),
                rationale: by.rationale.clone(),
                set_at: by.at,
                expires_at: *expires_at,
            };
            sqlx::query(
                "INSERT INTO overrides (tenant_id, feature, value_json, actor, rationale, set_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (tenant_id, feature) DO UPDATE SET value_json = excluded.value_json, actor = excluded.actor, \
                 rationale = excluded.rationale, set_at = excluded.set_at, expires_at = excluded.expires_at",
            )
            .bind(tenant_id)
            .bind(feature)
            .bind(to_json(value).to_string())
            .bind(&by.actor)
            .bind(&by.rationale)
            .bind(by.at)
            .bind(*expires_at)
            .execute(&mut *conn)
            .await?;
            (to_json(&before), to_json(&after), None)
        }
        Mutation::ClearOverride { feature } => {
            let before = current.overrides.iter().find(|o| &o.feature == feature);
            sqlx::query("DELETE FROM overrides WHERE tenant_id = $1 AND feature = $2")
                .bind(tenant_id)
                .bind(feature)
                .execute(&mut *conn)
                .await?;
            (to_json(&before), null, None)
        }
    })
}

async fn write_tenant_fields(conn: &mut AnyConnection, tenant_id: &str, s: &TenantState) -> Result<(), StoreError> {
    sqlx::query("UPDATE tenants SET stripe_customer_id = $2, trial_start = $3, trial_end = $4, archived = $5 WHERE tenant_id = $1")
        .bind(tenant_id)
        .bind(s.stripe_customer_id.clone())
        .bind(s.trial.map(|t| t.start))
        .bind(s.trial.map(|t| t.end))
        .bind(i64::from(s.archived))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Insert or replace a grant; the key is (tenant, add-on, origin), so re-delivered grants converge.
pub(crate) async fn upsert_grant(conn: &mut AnyConnection, tenant_id: &str, g: &AddOnGrant) -> Result<(), StoreError> {
    let (origin, sub, item) = match &g.origin {
        GrantOrigin::Manual => ("manual".to_string(), None, None),
        GrantOrigin::Stripe { subscription_id, item_id } => {
            (format!("stripe:{subscription_id}:{item_id}"), Some(subscription_id.clone()), Some(item_id.clone()))
        }
        GrantOrigin::StripeEntitlement { lookup_key } => (format!("stripe-entitlement:{lookup_key}"), None, None),
    };
    sqlx::query(
        "INSERT INTO addon_grants (tenant_id, addon, origin, subscription_id, item_id, quantity, actor, rationale, granted_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (tenant_id, addon, origin) DO UPDATE SET quantity = excluded.quantity, actor = excluded.actor, \
         rationale = excluded.rationale, granted_at = excluded.granted_at, expires_at = excluded.expires_at",
    )
    .bind(tenant_id)
    .bind(&g.addon)
    .bind(origin)
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

#[async_trait]
impl Store for SqlStore {
    async fn load(&self, tenant_id: &str) -> Result<TenantState, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load_tenant(&mut conn, tenant_id).await
    }

    async fn mutate(&self, tenant_id: &str, m: &Mutation, by: &Actor) -> Result<Committed, StoreError> {
        let mut tx = self.pool.begin().await?;
        let revision = bump_revision(&mut tx, tenant_id, by).await?;
        let current = load_tenant(&mut tx, tenant_id).await?;
        let (before, after, trial) = apply(&mut tx, tenant_id, m, by, &current).await?;
        write_audit(&mut tx, tenant_id, m.action(), by, &before, &after, revision).await?;
        tx.commit().await?;
        Ok(Committed { revision, trial })
    }

    async fn audit(&self, tenant_id: &str, limit: u32, before_id: Option<i64>) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, at, actor, action, rationale, origin, before_json, after_json, revision FROM audit_events \
             WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant_id)
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: r.try_get("id")?,
                    tenant_id: r.try_get("tenant_id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    rationale: r.try_get("rationale")?,
                    origin: r.try_get("origin")?,
                    before: r.try_get("before_json")?,
                    after: r.try_get("after_json")?,
                    revision: u64::try_from(r.try_get::<i64, _>("revision")?).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn record_usage(&self, r: &UsageReport) -> Result<UsageOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(key) = &r.idempotency_key {
            // Claim the key first: a concurrent duplicate waits here, then sees the original.
            let claimed = sqlx::query(
                "INSERT INTO usage_reports (tenant_id, feature, idempotency_key, applied, used_after, period_start, created_at) \
                 VALUES ($1, $2, $3, 0, 0, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(&r.tenant_id)
            .bind(&r.feature)
            .bind(key)
            .bind(r.period_start)
            .bind(r.at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 0 {
                let row = sqlx::query("SELECT applied, used_after FROM usage_reports WHERE tenant_id = $1 AND feature = $2 AND idempotency_key = $3")
                    .bind(&r.tenant_id)
                    .bind(&r.feature)
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.rollback().await?;
                return Ok(UsageOutcome {
                    applied: row.try_get::<i64, _>("applied")? != 0,
                    duplicate: true,
                    used: row.try_get("used_after")?,
                });
            }
        }
        // One conditional upsert: the period rollover, the addition and the limit test happen in
        // a single statement, so concurrent replicas can never over-grant.
        let over_limit = r.limit.is_some_and(|l| r.value > l);
        let new_used: Option<i64> = if over_limit {
            None
        } else {
            let q = match r.mode {
                UsageMode::Delta => sqlx::query_scalar(
                    "INSERT INTO usage_counters (tenant_id, feature, period_start, used, updated_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (tenant_id, feature) DO UPDATE SET \
                     used = CASE WHEN usage_counters.period_start >= excluded.period_start THEN usage_counters.used + excluded.used ELSE excluded.used END, \
                     period_start = CASE WHEN usage_counters.period_start >= excluded.period_start THEN usage_counters.period_start ELSE excluded.period_start END, \
                     updated_at = excluded.updated_at \
                     WHERE (usage_counters.period_start < excluded.period_start) \
                        OR (usage_counters.used <= $6 AND usage_counters.used + excluded.used <= $7) \
                     RETURNING used",
                ),
                UsageMode::Set => sqlx::query_scalar(
                    "INSERT INTO usage_counters (tenant_id, feature, period_start, used, updated_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (tenant_id, feature) DO UPDATE SET used = excluded.used, period_start = excluded.period_start, \
                     updated_at = excluded.updated_at WHERE $6 >= 0 AND $7 >= 0 \
                     RETURNING used",
                ),
            };
            // $6 guards against i64 overflow, $7 is the enforced limit (no limit: i64::MAX).
            q.bind(&r.tenant_id)
                .bind(&r.feature)
                .bind(r.period_start)
                .bind(r.value)
                .bind(r.at)
                .bind(i64::MAX - r.value)
                .bind(r.limit.unwrap_or(i64::MAX))
                .fetch_optional(&mut *tx)
                .await?
        };
        let (applied, used) = match new_used {
            Some(u) => (true, u),
            None => {
                let current: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT used, period_start FROM usage_counters WHERE tenant_id = $1 AND feature = $2",
                )
                .bind(&r.tenant_id)
                .bind(&r.feature)
                .fetch_optional(&mut *tx)
                .await?;
                let used = current.filter(|&(_, p)| p >= r.period_start).map_or(0, |(u, _)| u);
                if !over_limit && used > i64::MAX - r.value {
                    tx.rollback().await?;
                    return Err(StoreError::Overflow);
                }
                (false, used)
            }
        };
        if let Some(key) = &r.idempotency_key {
            sqlx::query("UPDATE usage_reports SET applied = $4, used_after = $5 WHERE tenant_id = $1 AND feature = $2 AND idempotency_key = $3")
                .bind(&r.tenant_id)
                .bind(&r.feature)
                .bind(key)
                .bind(i64::from(applied))
                .bind(used)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(UsageOutcome { applied, duplicate: false, used })
    }

    async fn usage(&self, tenant_id: &str, feature: &str, period_start: UnixTime) -> Result<i64, StoreError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT used, period_start FROM usage_counters WHERE tenant_id = $1 AND feature = $2")
                .bind(tenant_id)
                .bind(feature)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.filter(|&(_, p)| p >= period_start).map_or(0, |(u, _)| u))
    }

    async fn apply_stripe_event(
        &self,
        env: &Envelope,
        translation: &Result<Translation, String>,
        replay: Option<&Replay>,
        at: UnixTime,
    ) -> Result<StripeOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !super::stripe::claim(&mut tx, env, replay.is_some(), at).await? {
            tx.rollback().await?;
            return Ok(StripeOutcome {
                status: StripeStatus::Ignored,
                duplicate: true,
                tenant_id: None,
                revision: None,
                linked_customer: None,
                error: None,
            });
        }
        let (outcome, customer) = super::stripe::apply(&mut tx, env, translation, replay, at).await?;
        super::stripe::finish(&mut tx, env, &outcome, customer.as_deref(), at).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn stripe_event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let sql = concat!("SELECT ", event_columns!(), " FROM stripe_events WHERE id = $1");
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(super::stripe::row_to_event).transpose()
    }

    async fn stripe_events(
        &self,
        tenant_id: Option<&str>,
        status: Option<StripeStatus>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM stripe_events WHERE ($1 = '' OR tenant_id = $1) AND ($2 = '' OR status = $2) \
             ORDER BY received_at DESC, id DESC LIMIT $3"
        );
        let rows = sqlx::query(sql)
            .bind(tenant_id.unwrap_or_default())
            .bind(status.map(StripeStatus::as_str).unwrap_or_default())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(super::stripe::row_to_event).collect()
    }

    async fn pending_stripe_events(&self, customer_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM stripe_events WHERE status = 'pending_tenant' AND customer_id = $1 ORDER BY created, id"
        );
        let rows = sqlx::query(sql).bind(customer_id).fetch_all(&self.pool).await?;
        rows.iter().map(super::stripe::row_to_event).collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.ping().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            normalize_url("entitlements.db").unwrap(),
            ("sqlite://entitlements.db?mode=rwc".into(), Backend::Sqlite)
        );
        assert_eq!(normalize_url("sqlite://x.db").unwrap().0, "sqlite://x.db?mode=rwc");
        assert_eq!(normalize_url("sqlite://x.db?mode=ro").unwrap().0, "sqlite://x.db?mode=ro");
        assert_eq!(normalize_url("postgres://u@h/db").unwrap().1, Backend::Postgres);
        assert!(normalize_url("mysql://x").is_err());
        assert!(normalize_url("").is_err());
    }
}
