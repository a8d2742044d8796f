//! Cross-replica invalidation (SPEC §5): every committed change NOTIFYs `<revision>:<tenant>`
//! on PostgreSQL (see `store::sql::bump_revision`); each replica LISTENs and invalidates. The
//! same connection LISTENs for lifecycle notices (`store::outbox`), which go into the feed.
//! When the listening connection is lost, notifications may have been missed, so the replica
//! drops its whole cache once it is listening again (and says so in a log line and a metric).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::store::NoticeEvent;
use crate::store::outbox::NOTICES_CHANNEL;
use crate::store::sql::CHANGES_CHANNEL;
use crate::telemetry;

/// `application_name` of the listening connection (visible in `pg_stat_activity`).
pub fn listener_name(grpc_port: u16) -> String {
    format!("entitlements-listener-{grpc_port}")
}

/// Parse a notification payload `<revision>:<tenant id>`.
pub fn parse(payload: &str) -> Option<(u64, &str)> {
    let (rev, tenant) = payload.split_once(':')?;
    Some((rev.parse().ok()?, tenant))
}

async fn connect(url: &str, name: &str) -> Result<PgListener, sqlx::Error> {
    let opts = PgConnectOptions::from_str(url)?.application_name(name);
    let pool =
        PgPoolOptions::new().max_connections(1).acquire_timeout(Duration::from_secs(3)).connect_with(opts).await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen_all([CHANGES_CHANNEL, NOTICES_CHANNEL]).await?;
    Ok(listener)
}

/// Run the listener until `shutdown`; reconnects with backoff by itself.
pub fn spawn(url: String, name: String, service: Arc<Service>, mut shutdown: Shutdown) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let mut listener = tokio::select! {
                _ = shutdown.fired() => return,
                l = connect(&url, &name) => match l {
                    Ok(l) => l,
                    Err(e) => {
                        let pause = backoff.next_delay();
                        tracing::warn!(error = %e, ?pause, "invalidation listener cannot connect; retrying");
                        tokio::select! {
                            _ = shutdown.fired() => return,
                            _ = tokio::time::sleep(pause) => continue,
                        }
                    }
                },
            };
            backoff.reset();
            // Anything cached before we were listening may have missed a notification.
            service.flush();
            metrics::counter!(telemetry::LISTENER_RECONNECTS).increment(1);
            tracing::info!("invalidation listener connected; cache flushed");
            loop {
                let next = tokio::select! {
                    _ = shutdown.fired() => return,
                    n = listener.try_recv() => n,
                };
                match next {
                    // A lifecycle notice (any replica may have emitted it): into this feed.
                    Ok(Some(n)) if n.channel() == NOTICES_CHANNEL => match NoticeEvent::from_json(n.payload()) {
                        Some(notice) => service.feed().notice(notice),
                        None => tracing::warn!(payload = n.payload(), "unparseable notice notification"),
                    },
                    Ok(Some(n)) => match parse(n.payload()) {
                        Some((revision, tenant)) => {
                            metrics::counter!(telemetry::INVALIDATIONS_RECEIVED).increment(1);
                            service.invalidate(tenant, revision).await;
                        }
                        None => tracing::warn!(payload = n.payload(), "unparseable change notification"),
                    },
                    Ok(None) => {
                        // The connection was lost and re-established: notifications may be lost.
                        service.flush();
                        metrics::counter!(telemetry::LISTENER_RECONNECTS).increment(1);
                        tracing::warn!("invalidation listener lost its connection; reconnected and flushed the cache");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "invalidation listener failed; reconnecting");
                        break;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn payloads() {
        assert_eq!(super::parse("12:acme:eu-1"), Some((12, "acme:eu-1")));
        assert_eq!(super::parse("x:acme"), None);
        assert_eq!(super::parse("12"), None);
    }
}
