//! flagd's evaluation service (`flagd.evaluation.v1.Service`): OpenFeature's flagd RPC
//! providers evaluate entitlements through it. Every resolve runs `Check`'s decision path
//! ([`crate::openfeature`]); `EventStream` follows the change feed behind `Watch`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value as Json, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::BearerAuth;
use super::convert::flagd as convert;
use crate::feed::FeedEvent;
use crate::openfeature::{self, FlagType};
use crate::pb::flagd::{self as pb, service_server::Service as Flagd};
use crate::service::Service;
use crate::shutdown::Shutdown;

#[derive(Clone)]
pub struct FlagdApi {
    service: Arc<Service>,
    heartbeat: Duration,
    shutdown: Shutdown,
    /// Who may see which tenant changed: the feed lists every tenant (SPEC §4).
    relay: BearerAuth,
}

impl FlagdApi {
    pub fn new(service: Arc<Service>, heartbeat: Duration, shutdown: Shutdown, relay: BearerAuth) -> FlagdApi {
        FlagdApi { service, heartbeat, shutdown, relay }
    }

    async fn resolve(
        &self,
        key: &str,
        want: FlagType,
        ctx: Option<prost_types::Struct>,
    ) -> Result<openfeature::Evaluation, Status> {
        Ok(openfeature::evaluate(&self.service, key, Some(want), &convert::context(ctx)).await?)
    }
}

/// A change as `configuration_change` data: which tenant, only for a relay's credential. A
/// lifecycle notice is one too: crossing a threshold by time (trial end, hard lock) changes
/// answers a provider may have cached.
fn change_data(e: &FeedEvent, names: bool) -> Option<Map<String, Json>> {
    let data = match e {
        FeedEvent::Change { tenant, revision, .. } if names => {
            json!({ "targetingKey": &**tenant, "revision": revision })
        }
        FeedEvent::Notice { notice, .. } if names => {
            json!({ "targetingKey": notice.tenant_id, "revision": notice.revision })
        }
        FeedEvent::Reset { .. } => json!({ "reset": true }),
        FeedEvent::Change { .. } | FeedEvent::Notice { .. } => return None,
    };
    data.as_object().cloned()
}

/// Forward the feed to one event stream until it goes away: `provider_ready`, then a
/// `configuration_change` per tenant change and a `keep_alive` per idle heartbeat.
async fn pump(
    service: Arc<Service>,
    heartbeat: Duration,
    names: bool,
    tx: mpsc::Sender<Result<pb::EventStreamResponse, Status>>,
    mut shutdown: Shutdown,
) {
    let mut live = service.feed().subscribe("").live;
    if tx.send(Ok(convert::event("provider_ready", None))).await.is_err() {
        return;
    }
    let mut ticks = tokio::time::interval(heartbeat);
    ticks.tick().await;
    loop {
        let msg = tokio::select! {
            _ = tx.closed() => return,
            _ = shutdown.fired() => return,
            _ = ticks.tick() => convert::event("keep_alive", None),
            e = live.recv() => match e {
                Ok(e) => convert::event("configuration_change", change_data(&e, names).as_ref()),
                // Missed changes: whatever it cached may be stale.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    convert::event("configuration_change", change_data(&FeedEvent::Reset { seq: 0 }, names).as_ref())
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if tx.send(Ok(msg)).await.is_err() {
            return;
        }
    }
}

#[tonic::async_trait]
impl Flagd for FlagdApi {
    type EventStreamStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::EventStreamResponse, Status>> + Send>>;

    async fn resolve_all(
        &self,
        req: Request<pb::ResolveAllRequest>,
    ) -> Result<Response<pb::ResolveAllResponse>, Status> {
        let ctx = convert::context(req.into_inner().context);
        let (evaluations, etag) = openfeature::evaluate_all(&self.service, &ctx).await?;
        Ok(Response::new(convert::resolve_all(&evaluations, &etag)))
    }

    async fn resolve_boolean(
        &self,
        req: Request<pb::ResolveBooleanRequest>,
    ) -> Result<Response<pb::ResolveBooleanResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(convert::boolean(self.resolve(&r.flag_key, FlagType::Boolean, r.context).await?)))
    }

    async fn resolve_string(
        &self,
        req: Request<pb::ResolveStringRequest>,
    ) -> Result<Response<pb::ResolveStringResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(convert::string(self.resolve(&r.flag_key, FlagType::String, r.context).await?)))
    }

    async fn resolve_float(
        &self,
        req: Request<pb::ResolveFloatRequest>,
    ) -> Result<Response<pb::ResolveFloatResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(convert::float(self.resolve(&r.flag_key, FlagType::Float, r.context).await?)))
    }

    async fn resolve_int(
        &self,
        req: Request<pb::ResolveIntRequest>,
    ) -> Result<Response<pb::ResolveIntResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(convert::integer(self.resolve(&r.flag_key, FlagType::Integer, r.context).await?)))
    }

    async fn resolve_object(
        &self,
        req: Request<pb::ResolveObjectRequest>,
    ) -> Result<Response<pb::ResolveObjectResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(convert::object(self.resolve(&r.flag_key, FlagType::Object, r.context).await?)))
    }

    async fn event_stream(
        &self,
        req: Request<pb::EventStreamRequest>,
    ) -> Result<Response<Self::EventStreamStream>, Status> {
        let names = self.relay.allows(req.metadata());
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(pump(Arc::clone(&self.service), self.heartbeat, names, tx, self.shutdown.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
