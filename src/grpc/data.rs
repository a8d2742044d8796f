//! `EntitlementService`: the data plane.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use tonic::{Request, Response, Status};

use super::BearerAuth;
use super::convert::{self, from_ts, watch_event, watch_signal};
use crate::command::Invalid;
use crate::feed::{FeedEvent, join_cursor, split_cursor};
use crate::pb::{self, entitlement_service_server::EntitlementService};
use crate::service::{CheckItem, Service, ServiceError};
use crate::shutdown::Shutdown;
use crate::store::NoticeEvent;

#[derive(Clone)]
pub struct DataApi {
    service: Arc<Service>,
    heartbeat: Duration,
    shutdown: Shutdown,
    /// Who may follow the change feed, read full tenant state and see names in `Explain`.
    relay: BearerAuth,
}

impl DataApi {
    /// `heartbeat`: how often an idle `Watch` stream says it is alive; `shutdown` ends every
    /// stream so that a graceful shutdown is not held open by watchers.
    pub fn new(service: Arc<Service>, heartbeat: Duration, shutdown: Shutdown, relay: BearerAuth) -> DataApi {
        DataApi { service, heartbeat, shutdown, relay }
    }
}

/// The notices a watcher is sent first, and its notice watermark. Coming back after a RESET
/// with a watermark: those committed since (from the store's outbox). Fresh: none, and the
/// newest notice id as the watermark. Resumed: the ring's backlog has them.
async fn catch_up(service: &Service, resumed: bool, after: Option<i64>) -> (Vec<NoticeEvent>, Option<i64>) {
    let Some(outbox) = &service.stores().outbox else { return (Vec::new(), None) };
    match (resumed, after) {
        (false, Some(after)) => match outbox.notices_after(after, NOTICE_CATCH_UP).await {
            Ok(ns) => {
                let last = ns.last().map_or(after, |n| n.id);
                (ns, Some(last))
            }
            Err(e) => {
                tracing::warn!(error = %e, "watch: notices since the cursor unavailable");
                (Vec::new(), Some(after))
            }
        },
        (true, Some(after)) => (Vec::new(), Some(after)),
        (_, None) => (Vec::new(), outbox.last_notice_id().await.ok()),
    }
}

/// The most notices one reconnecting watcher is sent from the store.
const NOTICE_CATCH_UP: u32 = 10_000;

/// One watcher's position: in the feed, and the newest notice id it has been sent (the
/// watermark its cursors carry), plus the notices it was sent from the store (not again live).
struct Position<'a> {
    feed: &'a crate::feed::ChangeFeed,
    mark: Option<i64>,
    replayed: HashSet<i64>,
}

impl Position<'_> {
    fn event(&mut self, e: &FeedEvent) -> pb::WatchResponse {
        if let FeedEvent::Notice { notice, .. } = e {
            self.mark = Some(self.mark.map_or(notice.id, |m| m.max(notice.id)));
        }
        watch_event(e, join_cursor(self.feed.cursor(e.seq()), self.mark))
    }

    fn signal(&self, kind: pb::WatchEventKind, last: u64) -> pb::WatchResponse {
        watch_signal(kind, join_cursor(self.feed.cursor(last), self.mark))
    }

    /// Notices from the store, as feed events at `last`, remembered so the live copy is skipped.
    fn replay(&mut self, notices: Vec<NoticeEvent>, last: u64) -> Vec<FeedEvent> {
        self.replayed.extend(notices.iter().map(|n| n.id));
        notices.into_iter().map(|n| FeedEvent::Notice { seq: last, notice: Arc::new(n) }).collect()
    }

    fn seen_live(&self, e: &FeedEvent) -> bool {
        matches!(e, FeedEvent::Notice { notice, .. } if self.replayed.contains(&notice.id))
    }
}

/// Forward feed events to one watcher until it goes away. After any RESET (start, restart,
/// lag, a lost PostgreSQL listener) the notices committed since its watermark come from the store.
async fn pump(
    service: Arc<Service>,
    cursor: String,
    heartbeat: Duration,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    mut shutdown: Shutdown,
) {
    let feed = service.feed();
    let (feed_cursor, notice_after) = split_cursor(&cursor);
    let mut sub = feed.subscribe(feed_cursor);
    let mut last = sub.last_seq;
    let (replay, mark) = catch_up(&service, sub.resumed, notice_after).await;
    let mut pos = Position { feed, mark, replayed: HashSet::new() };
    let first = if sub.resumed { pb::WatchEventKind::Resumed } else { pb::WatchEventKind::Reset };
    let mut queue = pos.replay(replay, last);
    queue.append(&mut sub.backlog);
    if tx.send(Ok(pos.signal(first, last))).await.is_err() {
        return;
    }
    let mut ticks = tokio::time::interval(heartbeat);
    ticks.tick().await;
    loop {
        for e in queue.drain(..) {
            if tx.send(Ok(pos.event(&e))).await.is_err() {
                return;
            }
            last = last.max(e.seq());
        }
        let msg = tokio::select! {
            _ = tx.closed() => return,
            _ = shutdown.fired() => return,
            _ = ticks.tick() => pos.signal(pb::WatchEventKind::Heartbeat, last),
            e = sub.live.recv() => match e {
                Ok(e) if e.seq() <= last || pos.seen_live(&e) => continue,
                Ok(e) => {
                    last = e.seq();
                    pos.event(&e)
                }
                // Too slow to keep up: it cannot know what it missed, so it must forget everything.
                Err(broadcast::error::RecvError::Lagged(_)) => pos.signal(pb::WatchEventKind::Reset, last),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if msg.kind() == pb::WatchEventKind::Reset {
            let (notices, _) = catch_up(&service, false, pos.mark).await;
            queue = pos.replay(notices, last);
        }
        if tx.send(Ok(msg)).await.is_err() {
            return;
        }
    }
}

#[tonic::async_trait]
impl EntitlementService for DataApi {
    type WatchStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        self.relay.verify(req.metadata())?;
        let cursor = req.into_inner().cursor;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(pump(Arc::clone(&self.service), cursor, self.heartbeat, tx, self.shutdown.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_tenant_state(
        &self,
        req: Request<pb::GetTenantStateRequest>,
    ) -> Result<Response<pb::GetTenantStateResponse>, Status> {
        self.relay.verify(req.metadata())?;
        let r = req.into_inner();
        crate::trace::record_tenant(&r.tenant_id);
        let state = self.service.tenant(&r.tenant_id).await?;
        Ok(Response::new(pb::GetTenantStateResponse::from(&state)))
    }

    async fn get_catalog(
        &self,
        _req: Request<pb::GetCatalogRequest>,
    ) -> Result<Response<pb::GetCatalogResponse>, Status> {
        Ok(Response::new(convert::catalog(self.service.catalog())))
    }

    async fn check(&self, req: Request<pb::CheckRequest>) -> Result<Response<pb::CheckResponse>, Status> {
        let started = crate::clock::monotonic();
        let req = req.into_inner();
        crate::trace::record_tenant(&req.tenant_id);
        let intent = convert::intent(req.intent).map_err(ServiceError::from)?;
        let (c, d) = self.service.check(&req.tenant_id, &req.feature, req.quantity, intent, req.min_revision).await?;
        tracing::debug!(tenant = %req.tenant_id, feature = %req.feature, allowed = d.allowed, reason = d.reason.as_str(), "check");
        let out = convert::check_response(&c.tenant, &d, &req.feature);
        self.service.stats.observe(std::slice::from_ref(&d), started.elapsed());
        Ok(Response::new(out))
    }

    async fn check_batch(
        &self,
        req: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        let pb::CheckBatchRequest { tenant_id, items, min_revision } = req.into_inner();
        crate::trace::record_tenant(&tenant_id);
        let items = items
            .into_iter()
            .map(CheckItem::try_from)
            .collect::<Result<Vec<_>, Invalid>>()
            .map_err(ServiceError::from)?;
        let started = crate::clock::monotonic();
        let (c, ds) = self.service.check_batch(&tenant_id, &items, min_revision).await?;
        let out = convert::check_batch_response(&c.tenant, &ds, &items);
        self.service.stats.observe(&ds, started.elapsed());
        Ok(Response::new(out))
    }

    async fn explain(&self, req: Request<pb::ExplainRequest>) -> Result<Response<pb::ExplainResponse>, Status> {
        let names = self.relay.allows(req.metadata());
        let req = req.into_inner();
        crate::trace::record_tenant(&req.tenant_id);
        let at = req.at.as_ref().map(from_ts);
        let (e, state) = self.service.explain(&req.tenant_id, &req.features, at).await?;
        let mut out = convert::explain(&e, &state);
        if !names {
            convert::without_people(&mut out);
        }
        Ok(Response::new(out))
    }

    async fn usage(&self, req: Request<pb::UsageRequest>) -> Result<Response<pb::UsageResponse>, Status> {
        let req = req.into_inner();
        crate::trace::record_tenant(&req.tenant_id);
        let (c, lines) = self.service.usage(&req.tenant_id, &req.features).await?;
        Ok(Response::new(convert::usage(&c.tenant.catalog, &lines)))
    }

    async fn record_usage(
        &self,
        req: Request<pb::RecordUsageRequest>,
    ) -> Result<Response<pb::RecordUsageResponse>, Status> {
        let req = req.into_inner();
        crate::trace::record_tenant(&req.tenant_id);
        let mode = convert::usage_mode(req.mode).map_err(ServiceError::from)?;
        let r = self
            .service
            .record_usage(&req.tenant_id, &req.feature, req.value, mode, &req.idempotency_key, req.enforce)
            .await?;
        Ok(Response::new(pb::RecordUsageResponse::from(&r)))
    }
}
