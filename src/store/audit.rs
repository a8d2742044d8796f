//! The audit log: [`AuditLog`] for [`SqlStore`] (rows are written by `tenants::write_audit`,
//! in the transaction of the change they record).

use async_trait::async_trait;
use sqlx::Row;

use super::sql::SqlStore;
use super::{AuditLog, AuditRecord, StoreError};

#[async_trait]
impl AuditLog for SqlStore {
    async fn audit(&self, tenant_id: &str, limit: u32, before_id: Option<i64>) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, at, actor, action, rationale, origin, before_json, after_json, revision FROM audit_events \
             WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant_id)
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
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
}
