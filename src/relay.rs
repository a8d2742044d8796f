//! Relay (sidecar) mode: `serve --upstream http://entitlements:50051` runs with no database.
//! [`UpstreamStore`] implements the store by calling the central service (one `GetTenantState`
//! per missing tenant, resolved here with the same catalog; usage reports and admin changes are
//! forwarded), and [`spawn_watch`] invalidates from the upstream's `Watch` stream. When the
//! stream breaks the relay flushes, reconnects with backoff, and meanwhile answers from its last
//! known resolutions within the stale bound.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use crate::grpc::state::tenant_state;
use crate::grpc::{from_ts, opt_ts, ts, value};
use crate::pb::admin_service_client::AdminServiceClient;
use crate::pb::entitlement_service_client::EntitlementServiceClient;
use crate::pb::{self, WatchEventKind};
use crate::service::Service;
use crate::store::{
    Actor, AuditLog, AuditRecord, Command, Committed, StoreError, Stores, TenantStore, TrialExtension, UsageMode,
    UsageOutcome, UsageReport, UsageStore,
};
use crate::telemetry;
use crate::tenant::{TenantState, Trial, UnixTime};

/// Connection settings for the central service.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub url: String,
    /// Bearer token for the upstream's data plane (and admin plane, for forwarded changes).
    pub token: Option<String>,
    /// PEM CA bundle to verify an `https://` upstream.
    pub ca: Option<Vec<u8>>,
}

#[derive(Clone)]
pub struct UpstreamStore {
    data: EntitlementServiceClient<Channel>,
    admin: AdminServiceClient<Channel>,
    health: tonic_health::pb::health_client::HealthClient<Channel>,
    token: Option<String>,
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
        })
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(t) = &self.token
            && let Ok(v) = format!("Bearer {t}").parse()
        {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    pub fn data_client(&self) -> EntitlementServiceClient<Channel> {
        self.data.clone()
    }

    /// What a relay serves from its upstream: tenant state, usage and audit — and no Stripe
    /// log (the central service applies webhooks).
    pub fn stores(&self) -> Stores {
        let up = Arc::new(self.clone());
        Stores { tenants: up.clone(), usage: up.clone(), audit: up, stripe: None }
    }
}

#[async_trait]
impl TenantStore for UpstreamStore {
    async fn load(&self, tenant_id: &str) -> Result<TenantState, StoreError> {
        let r = self
            .data
            .clone()
            .get_tenant_state(self.req(pb::GetTenantStateRequest { tenant_id: tenant_id.into() }))
            .await;
        let r = r.map_err(upstream_error)?.into_inner();
        let t = r.tenant.unwrap_or_default();
        let mut state = tenant_state(&t, r.known, r.last_change.as_ref()).map_err(StoreError::Corrupt)?;
        state.tenant_id = tenant_id.to_string();
        Ok(state)
    }

    async fn mutate(&self, tenant_id: &str, m: &Command, by: &Actor) -> Result<Committed, StoreError> {
        let mut a = self.admin.clone();
        let (tenant_id, actor, rationale) = (tenant_id.to_string(), by.actor.clone(), by.rationale.clone());
        let committed = |revision: u64| Committed { revision, trial: None };
        let out = match m {
            Command::PutTenant { stripe_customer_id, trial, archived } => {
                let req = pb::PutTenantRequest {
                    tenant_id,
                    actor,
                    rationale,
                    stripe_customer_id: stripe_customer_id.clone().unwrap_or_default(),
                    trial_start: trial.map(|t| ts(t.start)),
                    trial_end: trial.map(|t| ts(t.end)),
                    archived: *archived,
                };
                a.put_tenant(self.req(req)).await.map(|r| committed(r.into_inner().revision))
            }
            Command::AssignPlan { plan, expires_at } => {
                let req = pb::AssignPlanRequest {
                    tenant_id,
                    actor,
                    rationale,
                    plan: plan.clone(),
                    expires_at: opt_ts(*expires_at),
                };
                a.assign_plan(self.req(req)).await.map(|r| committed(r.into_inner().revision))
            }
            Command::UnassignPlan { plan } => {
                let req =
                    pb::UnassignPlanRequest { tenant_id, actor, rationale, plan: plan.clone().unwrap_or_default() };
                a.unassign_plan(self.req(req)).await.map(|r| committed(r.into_inner().revision))
            }
            Command::ExtendTrial { extension } => {
                let until = Some(match extension {
                    TrialExtension::Days(d) => pb::extend_trial_request::Until::Days(*d),
                    TrialExtension::Until(t) => pb::extend_trial_request::Until::TrialEnd(ts(*t)),
                });
                let req = pb::ExtendTrialRequest { tenant_id, actor, rationale, until };
                a.extend_trial(self.req(req)).await.map(|r| {
                    let r = r.into_inner();
                    Committed {
                        revision: r.revision,
                        trial: r.trial_end.as_ref().map(|e| Trial { start: from_ts(e), end: from_ts(e) }),
                    }
                })
            }
            Command::GrantAddOn { addon, quantity, expires_at } => {
                let req = pb::GrantAddOnRequest {
                    tenant_id,
                    actor,
                    rationale,
                    addon: addon.clone(),
                    quantity: *quantity,
                    expires_at: opt_ts(*expires_at),
                };
                a.grant_add_on(self.req(req)).await.map(|r| committed(r.into_inner().revision))
            }
            Command::RevokeAddOn { addon } => {
                let req = pb::RevokeAddOnRequest { tenant_id, actor, rationale, addon: addon.clone() };
                a.revoke_add_on(self.req(req)).await.map(|r| committed(r.into_inner().revision))
            }
            Command::SetOverride { feature, value: v, expires_at } => {
                let value = match value(*v).value {
                    Some(pb::value::Value::Enabled(b)) => pb::set_override_request::Value::Enabled(b),
                    Some(pb::value::Value::Number(n)) => pb::set_override_request::Value::Number(n),
                    _ => pb::set_override_request::Value::Unlimited(true),
                };
                let req = pb::SetOverrideRequest {
                    tenant_id,
                    actor,
                    rationale,
                    feature: feature.clone(),
                    value: Some(value),
                    expires_at: opt_ts(*expires_at),
                };
                a.set_override(self.req(req)).await.map(|r| committed(r.into_inner().revision))
            }
            Command::ClearOverride { feature } => {
                let req = pb::ClearOverrideRequest { tenant_id, actor, rationale, feature: feature.clone() };
                a.clear_override(self.req(req)).await.map(|r| committed(r.into_inner().revision))
            }
        };
        out.map_err(upstream_error)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
        let r = self.health.clone().check(req).await.map_err(upstream_error)?.into_inner();
        match r.status() {
            tonic_health::pb::health_check_response::ServingStatus::Serving => Ok(()),
            _ => Err(StoreError::Upstream { code: Code::Unavailable, message: "upstream is not serving".into() }),
        }
    }
}

#[async_trait]
impl AuditLog for UpstreamStore {
    async fn audit(&self, tenant_id: &str, limit: u32, before_id: Option<i64>) -> Result<Vec<AuditRecord>, StoreError> {
        let req = pb::ListAuditEventsRequest {
            tenant_id: tenant_id.into(),
            page_size: i32::try_from(limit).unwrap_or(500),
            page_token: before_id.map(|b| b.to_string()).unwrap_or_default(),
        };
        let r = self.admin.clone().list_audit_events(self.req(req)).await.map_err(upstream_error)?.into_inner();
        Ok(r.events
            .into_iter()
            .map(|e| AuditRecord {
                id: e.id,
                tenant_id: e.tenant_id,
                at: e.at.as_ref().map(from_ts).unwrap_or_default(),
                actor: e.actor,
                action: e.action,
                rationale: e.rationale,
                origin: e.origin,
                before: e.before,
                after: e.after,
                revision: e.revision,
            })
            .collect())
    }
}

#[async_trait]
impl UsageStore for UpstreamStore {
    async fn record_usage(&self, r: &UsageReport) -> Result<UsageOutcome, StoreError> {
        let req = pb::RecordUsageRequest {
            tenant_id: r.tenant_id.clone(),
            feature: r.feature.clone(),
            value: r.value,
            mode: match r.mode {
                UsageMode::Delta => pb::UsageMode::Delta,
                UsageMode::Set => pb::UsageMode::Set,
            } as i32,
            idempotency_key: r.idempotency_key.clone().unwrap_or_default(),
            // The upstream enforces atomically with its own (identical) view of the limit.
            enforce: r.limit.is_some(),
        };
        // The upstream's refusals (an overflowing report) pass through as they are.
        let resp = self.data.clone().record_usage(self.req(req)).await.map_err(upstream_error)?.into_inner();
        Ok(UsageOutcome { applied: resp.applied, duplicate: resp.duplicate, used: resp.used })
    }

    async fn usage(&self, tenant_id: &str, feature: &str, period_start: UnixTime) -> Result<i64, StoreError> {
        let req = pb::UsageRequest { tenant_id: tenant_id.into(), features: vec![feature.into()] };
        let r = self.data.clone().usage(self.req(req)).await.map_err(upstream_error)?.into_inner();
        Ok(r.usage
            .into_iter()
            .find(|u| u.feature == feature)
            .filter(|u| u.period_start.as_ref().is_none_or(|p| from_ts(p) >= period_start))
            .map_or(0, |u| u.used))
    }
}

/// Follow the upstream's `Watch` stream until shutdown: invalidate on changes, flush on resets
/// and whenever the stream breaks (changes may have been missed), reconnect with backoff.
pub fn spawn_watch(store: UpstreamStore, service: Arc<Service>, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut cursor = String::new();
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut client = store.data_client();
            let attempt = tokio::select! {
                _ = stopped(&mut shutdown) => return,
                r = client.watch(store.req(pb::WatchRequest { cursor: cursor.clone() })) => r,
            };
            match attempt {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        let next = tokio::select! {
                            _ = stopped(&mut shutdown) => return,
                            n = stream.message() => n,
                        };
                        let Ok(Some(ev)) = next else { break };
                        backoff = Duration::from_millis(100);
                        match ev.kind() {
                            WatchEventKind::Change => service.invalidate(&ev.tenant_id, ev.revision).await,
                            WatchEventKind::Reset => {
                                service.flush();
                                metrics::counter!(telemetry::LISTENER_RECONNECTS).increment(1);
                                tracing::info!("upstream watch reset: cache flushed");
                            }
                            WatchEventKind::Resumed | WatchEventKind::Heartbeat | WatchEventKind::Unspecified => {}
                        }
                        if !ev.cursor.is_empty() {
                            cursor = ev.cursor;
                        }
                    }
                    tracing::warn!("upstream watch stream ended; flushing and reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, ?backoff, "upstream watch failed; retrying"),
            }
            // While disconnected, changes go unseen: forget what we have (the stale bound
            // still lets us answer if the upstream stays away).
            service.flush();
            tokio::select! {
                _ = stopped(&mut shutdown) => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
