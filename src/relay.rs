//! Relay (sidecar) mode: `serve --upstream http://entitlements:50051` runs with no database.
//! [`UpstreamStore`] implements the store by calling the central service (one `GetTenantState`
//! per missing tenant, resolved here with the same catalog; usage reports and admin changes are
//! forwarded), and [`spawn_watch`] invalidates from the upstream's `Watch` stream. When the
//! stream breaks the relay flushes, reconnects with backoff, and meanwhile answers from its last
//! known resolutions within the stale bound.
//!
//! This module is transport only: every message it sends or reads is built or read by
//! [`crate::grpc::convert`], the same code the upstream's handlers use.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use crate::backoff::Backoff;
use crate::grpc::convert::{self, CommandRequest};
use crate::pb::admin_service_client::AdminServiceClient;
use crate::pb::entitlement_service_client::EntitlementServiceClient;
use crate::pb::{self, WatchEventKind};
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::store::{
    Actor, AuditLog, AuditRecord, Command, Committed, StoreError, Stores, TenantStore, UsageOutcome, UsageReport,
    UsageStore,
};
use crate::telemetry;
use crate::tenant::{TenantState, UnixTime};

/// Connection settings for the central service.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub url: String,
    /// Bearer token for the upstream's data plane and change feed (its relay token).
    pub token: Option<String>,
    /// Bearer token for the upstream's admin plane, for forwarded changes and audit reads.
    pub admin_token: Option<String>,
    /// PEM CA bundle to verify an `https://` upstream.
    pub ca: Option<Vec<u8>>,
}

#[derive(Clone)]
pub struct UpstreamStore {
    data: EntitlementServiceClient<Channel>,
    admin: AdminServiceClient<Channel>,
    health: tonic_health::pb::health_client::HealthClient<Channel>,
    token: Option<String>,
    admin_token: Option<String>,
}

/// The relay's readiness probe reads this tenant id, which the upstream refuses *after* it has
/// accepted the credential and *before* any store read: `INVALID_ARGUMENT` means "your token is
/// good", at no cost to the upstream's store (relays probe every 2 s).
const PROBE_TENANT: &str = "";

fn bearer<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token
        && let Ok(v) = format!("Bearer {t}").parse()
    {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

fn upstream_error(s: Status) -> StoreError {
    StoreError::Upstream { code: s.code(), message: s.message().to_string() }
}

impl UpstreamStore {
    /// Connects lazily: the relay starts (and serves stale data) even while the upstream is down.
    pub fn connect(cfg: &UpstreamConfig) -> Result<UpstreamStore, StoreError> {
        let bad = |e: tonic::transport::Error| StoreError::UnsupportedUrl(format!("{}: {e}", cfg.url));
        let mut endpoint = Endpoint::from_shared(cfg.url.clone())
            .map_err(bad)?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if let Some(ca) = &cfg.ca {
            endpoint =
                endpoint.tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca))).map_err(bad)?;
        }
        let channel = endpoint.connect_lazy();
        Ok(UpstreamStore {
            data: EntitlementServiceClient::new(channel.clone()),
            admin: AdminServiceClient::new(channel.clone()),
            health: tonic_health::pb::health_client::HealthClient::new(channel),
            token: cfg.token.clone(),
            admin_token: cfg.admin_token.clone(),
        })
    }

    /// A data-plane or feed request, with the relay's credential.
    fn req<T>(&self, msg: T) -> Request<T> {
        bearer(msg, self.token.as_deref())
    }

    /// A request to the upstream's admin plane.
    fn admin_req<T>(&self, msg: T) -> Request<T> {
        bearer(msg, self.admin_token.as_deref())
    }

    pub fn data_client(&self) -> EntitlementServiceClient<Channel> {
        self.data.clone()
    }

    /// What a relay serves from its upstream: tenant state, usage and audit — and no Stripe
    /// log (the central service applies webhooks).
    pub fn stores(&self) -> Stores {
        let up = Arc::new(self.clone());
        Stores { tenants: up.clone(), usage: up.clone(), audit: up, stripe: None, directory: None, outbox: None }
    }
}

#[async_trait]
impl TenantStore for UpstreamStore {
    async fn load(&self, tenant_id: &str) -> Result<TenantState, StoreError> {
        let req = self.req(convert::tenant_state_request(tenant_id));
        let r = self.data.clone().get_tenant_state(req).await.map_err(upstream_error)?.into_inner();
        let mut state = TenantState::try_from(&r).map_err(StoreError::Corrupt)?;
        state.tenant_id = tenant_id.to_string();
        Ok(state)
    }

    async fn mutate(&self, tenant_id: &str, m: &Command, by: &Actor) -> Result<Committed, StoreError> {
        let mut a = self.admin.clone();
        let out = match CommandRequest::new(tenant_id, m, by) {
            CommandRequest::PutTenant(r) => a.put_tenant(self.admin_req(r)).await.map(|r| r.into_inner().into()),
            CommandRequest::AssignPlan(r) => a.assign_plan(self.admin_req(r)).await.map(|r| r.into_inner().into()),
            CommandRequest::UnassignPlan(r) => a.unassign_plan(self.admin_req(r)).await.map(|r| r.into_inner().into()),
            CommandRequest::ExtendTrial(r) => a.extend_trial(self.admin_req(r)).await.map(|r| r.into_inner().into()),
            CommandRequest::GrantAddOn(r) => a.grant_add_on(self.admin_req(r)).await.map(|r| r.into_inner().into()),
            CommandRequest::RevokeAddOn(r) => a.revoke_add_on(self.admin_req(r)).await.map(|r| r.into_inner().into()),
            CommandRequest::SetOverride(r) => a.set_override(self.admin_req(r)).await.map(|r| r.into_inner().into()),
            CommandRequest::ClearOverride(r) => {
                a.clear_override(self.admin_req(r)).await.map(|r| r.into_inner().into())
            }
        };
        out.map_err(upstream_error)
    }

    /// Ready when the upstream serves *and* answers a tenant read with this relay's
    /// credential: a relay whose token the upstream refuses cannot load anything.
    async fn ping(&self) -> Result<(), StoreError> {
        let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
        let r = self.health.clone().check(req).await.map_err(upstream_error)?.into_inner();
        if r.status() != tonic_health::pb::health_check_response::ServingStatus::Serving {
            return Err(StoreError::Upstream { code: Code::Unavailable, message: "upstream is not serving".into() });
        }
        let probe = self.req(convert::tenant_state_request(PROBE_TENANT));
        match self.data.clone().get_tenant_state(probe).await {
            Err(s) if s.code() == Code::InvalidArgument => Ok(()),
            Err(s) => Err(upstream_error(s)),
            Ok(_) => Ok(()),
        }
    }
}

#[async_trait]
impl AuditLog for UpstreamStore {
    async fn audit(&self, tenant_id: &str, limit: u32, before_id: Option<i64>) -> Result<Vec<AuditRecord>, StoreError> {
        let req = self.admin_req(convert::audit_request(tenant_id, limit, before_id));
        let r = self.admin.clone().list_audit_events(req).await.map_err(upstream_error)?.into_inner();
        Ok(r.events.into_iter().map(AuditRecord::from).collect())
    }
}

#[async_trait]
impl UsageStore for UpstreamStore {
    async fn record_usage(&self, r: &UsageReport) -> Result<UsageOutcome, StoreError> {
        let req = self.req(pb::RecordUsageRequest::from(r));
        // The upstream's refusals (an overflowing report) pass through as they are.
        let resp = self.data.clone().record_usage(req).await.map_err(upstream_error)?.into_inner();
        Ok(resp.into())
    }

    async fn usage(&self, tenant_id: &str, feature: &str, period_start: UnixTime) -> Result<i64, StoreError> {
        let req = self.req(convert::usage_request(tenant_id, feature));
        let r = self.data.clone().usage(req).await.map_err(upstream_error)?.into_inner();
        Ok(convert::used(r, feature, period_start))
    }
}

/// Follow the upstream's `Watch` stream until shutdown: invalidate on changes, flush on resets
/// and whenever the stream breaks (changes may have been missed), reconnect with backoff.
pub fn spawn_watch(store: UpstreamStore, service: Arc<Service>, mut shutdown: Shutdown) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut cursor = String::new();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let mut client = store.data_client();
            let attempt = tokio::select! {
                _ = shutdown.fired() => return,
                r = client.watch(store.req(pb::WatchRequest { cursor: cursor.clone() })) => r,
            };
            match attempt {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        let next = tokio::select! {
                            _ = shutdown.fired() => return,
                            n = stream.message() => n,
                        };
                        let Ok(Some(ev)) = next else { break };
                        backoff.reset();
                        follow(&service, &ev).await;
                        if !ev.cursor.is_empty() {
                            cursor = ev.cursor;
                        }
                    }
                    tracing::warn!("upstream watch stream ended; flushing and reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "upstream watch failed; retrying"),
            }
            // While disconnected, changes go unseen: forget what we have (the stale bound
            // still lets us answer if the upstream stays away).
            service.flush();
            tokio::select! {
                _ = shutdown.fired() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    })
}

/// One event of the upstream's feed.
async fn follow(service: &Service, ev: &pb::WatchResponse) {
    match ev.kind() {
        WatchEventKind::Change => service.invalidate(&ev.tenant_id, ev.revision).await,
        WatchEventKind::Reset => {
            service.flush();
            metrics::counter!(telemetry::LISTENER_RECONNECTS).increment(1);
            tracing::info!("upstream watch reset: cache flushed");
        }
        // A notice changes nothing cached.
        WatchEventKind::Resumed | WatchEventKind::Heartbeat | WatchEventKind::Notice | WatchEventKind::Unspecified => {}
    }
}
