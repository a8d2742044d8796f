//! Usage counters (SPEC §4 `RecordUsage`): [`UsageStore`] for [`SqlStore`].

use async_trait::async_trait;
use sqlx::{AnyConnection, Row};

use super::sql::SqlStore;
use super::{StoreError, UsageMode, UsageOutcome, UsageReport, UsageStore};
use crate::tenant::UnixTime;

/// Claim the report's idempotency key as the transaction's first statement: a concurrent
/// duplicate waits here, then sees the original. `Some(outcome)`: the key was seen before.
async fn claim_key(conn: &mut AnyConnection, r: &UsageReport, key: &str) -> Result<Option<UsageOutcome>, StoreError> {
    let claimed = sqlx::query(
        "INSERT INTO usage_reports (tenant_id, feature, idempotency_key, applied, used_after, period_start, created_at) \
         VALUES ($1, $2, $3, 0, 0, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(&r.tenant_id)
    .bind(&r.feature)
    .bind(key)
    .bind(r.period_start)
    .bind(r.at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if claimed != 0 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT applied, used_after FROM usage_reports WHERE tenant_id = $1 AND feature = $2 AND idempotency_key = $3",
    )
    .bind(&r.tenant_id)
    .bind(&r.feature)
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    let applied = row.try_get::<i64, _>("applied")? != 0;
    Ok(Some(UsageOutcome { applied, duplicate: true, used: row.try_get("used_after")? }))
}

/// `usage::apply_report` as one conditional upsert: the period rollover, the addition and the
/// limit test happen in a single statement, so concurrent replicas can never over-grant. This is
/// the one domain rule kept in SQL — only here is it atomic. `None`: not applied.
async fn upsert_counter(conn: &mut AnyConnection, r: &UsageReport) -> Result<Option<i64>, StoreError> {
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
    Ok(q.bind(&r.tenant_id)
        .bind(&r.feature)
        .bind(r.period_start)
        .bind(r.value)
        .bind(r.at)
        .bind(i64::MAX - r.value)
        .bind(r.limit.unwrap_or(i64::MAX))
        .fetch_optional(&mut *conn)
        .await?)
}

/// The counter's value in the period starting at `period_start` (0 for an older period).
async fn counter(
    conn: &mut AnyConnection,
    tenant_id: &str,
    feature: &str,
    period_start: UnixTime,
) -> Result<i64, StoreError> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT used, period_start FROM usage_counters WHERE tenant_id = $1 AND feature = $2")
            .bind(tenant_id)
            .bind(feature)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.filter(|&(_, p)| p >= period_start).map_or(0, |(u, _)| u))
}

#[async_trait]
impl UsageStore for SqlStore {
    async fn record_usage(&self, r: &UsageReport) -> Result<UsageOutcome, StoreError> {
        if let Some(key) = &r.idempotency_key {
            crate::command::text("idempotency_key", key)?;
        }
        let mut tx = self.pool().begin().await?;
        if let Some(key) = &r.idempotency_key
            && let Some(original) = claim_key(&mut tx, r, key).await?
        {
            tx.rollback().await?;
            return Ok(original);
        }
        let over_limit = r.limit.is_some_and(|l| r.value > l);
        let new_used = if over_limit { None } else { upsert_counter(&mut tx, r).await? };
        let (applied, used) = match new_used {
            Some(u) => (true, u),
            None => {
                let used = counter(&mut tx, &r.tenant_id, &r.feature, r.period_start).await?;
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
        let mut conn = self.pool().acquire().await?;
        counter(&mut conn, tenant_id, feature, period_start).await
    }
}
