//! The sqlx store: one body of portable SQL (numbered `$n` parameters, `ON CONFLICT`,
//! `RETURNING`) run through sqlx's `Any` driver against SQLite or PostgreSQL. Only the
//! migrations (and PostgreSQL's NOTIFY, added by the replica layer) differ per backend.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection};

use std::sync::Arc;

use tokio::sync::broadcast;

use super::outbox::OutboxConfig;
use super::{NoticeEvent, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// Without it (a bare store, e.g. in conformance tests) nothing is written to the outbox.
    outbox: Option<Arc<OutboxConfig>>,
    notices: broadcast::Sender<NoticeEvent>,
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

/// The store's own waits (for a pooled connection, for SQLite's write lock) within a request's
/// budget: each gets two fifths, so that together they end before the request's deadline and
/// the caller sees a retryable UNAVAILABLE rather than the deadline's CANCELLED.
fn store_wait(request_budget: Duration) -> Duration {
    (request_budget * 2 / 5).max(Duration::from_millis(100))
}

impl SqlStore {
    /// Connect with waits sized for the default 5 s request timeout.
    pub async fn connect(url: &str) -> Result<SqlStore, StoreError> {
        Self::connect_within(url, Duration::from_secs(5)).await
    }

    /// Connect with waits that end within `request_budget` (the server's request timeout).
    pub async fn connect_within(url: &str, request_budget: Duration) -> Result<SqlStore, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, backend) = normalize_url(url)?;
        let opts = AnyConnectOptions::from_str(&url)?;
        let wait = store_wait(request_budget);
        let busy_ms = wait.as_millis();
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(wait)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers proceed during a write; the busy timeout queues writers.
                        for pragma in
                            ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL", "PRAGMA foreign_keys = ON"]
                        {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                        // A number we format ourselves: safe to splice into the statement.
                        let busy = format!("PRAGMA busy_timeout = {busy_ms}");
                        sqlx::query(sqlx::AssertSqlSafe(busy)).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        Ok(SqlStore { pool, backend, outbox: None, notices: broadcast::channel(1024).0 })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    /// Fill the outbox on every change: events, notices, `next_notice_at`, deliveries.
    pub fn with_outbox(mut self, cfg: OutboxConfig) -> SqlStore {
        self.outbox = Some(Arc::new(cfg));
        self
    }

    pub(super) fn outbox(&self) -> Option<&OutboxConfig> {
        self.outbox.as_deref()
    }

    pub(super) fn notice_sender(&self) -> &broadcast::Sender<NoticeEvent> {
        &self.notices
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.ping().await?;
        Ok(())
    }
}

/// The LISTEN/NOTIFY channel of committed tenant changes; payload `<revision>:<tenant id>`.
pub const CHANGES_CHANNEL: &str = "entitlements_changes";

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
