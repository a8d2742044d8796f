//! Lifecycle notices (issue 12): one task per replica sleeps until the earliest tenant
//! `next_notice_at` (the core's next threshold crossing, kept by every save; see
//! `store::outbox`) and has the store emit what is due — no cron, no scan of every tenant.
//! It wakes early when a change commits (a save may have made an earlier crossing) and when the
//! test-only clock offset jumps. Of several replicas on one PostgreSQL each may run it: the
//! store's per-tenant lock and unique keys make each notice exactly once in total.
//!
//! New notices reach this replica's change feed (`Watch`): on SQLite from the store's local
//! channel ([`forward_local`]); on PostgreSQL through NOTIFY (`invalidation`), which reaches
//! every replica, the emitting one included.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::clock::{self, unix_now};
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::store::{NoticeEvent, OutboxStore};
use crate::telemetry;

/// Tenants per store round; more due ones are taken in the next round at once.
const BATCH: u32 = 100;
/// Look again at least this often: another replica's save may have made an earlier crossing.
const RECHECK: Duration = Duration::from_secs(30);

/// One round: emit what is due; how long to sleep before the next.
async fn round(service: &Service, outbox: &dyn OutboxStore, backoff: &mut Backoff) -> Duration {
    let now = unix_now();
    match outbox.emit_due_notices(now, BATCH).await {
        Ok(notices) => {
            backoff.reset();
            for n in &notices {
                metrics::counter!(telemetry::NOTICES, "threshold" => n.threshold.as_str()).increment(1);
                tracing::info!(tenant = %n.tenant_id, threshold = n.threshold.as_str(), at = n.at, days_left = n.days_left, "lifecycle notice");
            }
            if !notices.is_empty() {
                service.wakes().deliveries.notify_one();
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "lifecycle notices: store unavailable; retrying");
            return backoff.next_delay();
        }
    }
    match outbox.next_notice_at().await {
        // Still due (another replica holds that tenant, or more than a batch): soon again.
        Ok(Some(t)) if t <= now => Duration::from_millis(100),
        Ok(Some(t)) => Duration::from_secs(u64::try_from(t - now).unwrap_or(0)).min(RECHECK),
        Ok(None) => RECHECK,
        Err(e) => {
            tracing::warn!(error = %e, "lifecycle notices: store unavailable; retrying");
            backoff.next_delay()
        }
    }
}

/// Tenants stored before notices existed get their schedule, once, at start.
async fn schedule_unscheduled(outbox: &dyn OutboxStore, backoff: &mut Backoff, shutdown: &mut Shutdown) {
    loop {
        match outbox.schedule_unscheduled(unix_now(), BATCH).await {
            Ok(n) if n < BATCH => return,
            Ok(_) => backoff.reset(),
            Err(e) => {
                tracing::warn!(error = %e, "lifecycle notices: cannot schedule existing tenants; retrying");
                tokio::select! {
                    _ = shutdown.fired() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}

/// Run until `shutdown`.
pub fn spawn(service: Arc<Service>, outbox: Arc<dyn OutboxStore>, mut shutdown: Shutdown) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        schedule_unscheduled(&*outbox, &mut backoff, &mut shutdown).await;
        loop {
            // Armed before the round: a wake during it is not lost.
            let jumped = clock::jumps().notified();
            let woken = service.wakes().notices.notified();
            tokio::pin!(jumped, woken);
            jumped.as_mut().enable();
            woken.as_mut().enable();
            let pause = round(&service, &*outbox, &mut backoff).await;
            tokio::select! {
                _ = shutdown.fired() => return,
                _ = &mut jumped => {}
                _ = &mut woken => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    })
}

/// SQLite: notices committed by this process, into its feed.
pub fn forward_local(
    mut rx: broadcast::Receiver<NoticeEvent>,
    service: Arc<Service>,
    mut shutdown: Shutdown,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let n = tokio::select! {
                _ = shutdown.fired() => return,
                n = rx.recv() => n,
            };
            match n {
                Ok(n) => service.feed().notice(n),
                // Watchers cannot know what they missed: tell them to start over.
                Err(broadcast::error::RecvError::Lagged(_)) => service.feed().reset(),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}
