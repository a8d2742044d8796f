//! `EntitlementService`: the data plane.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use tonic::{Request, Response, Status};

use super::{decision, decision_for, from_ts, intent, kind, notice, opt_ts, phase, ts, value};
use crate::catalog::Value;
use crate::explain::lifecycle_summary;
use crate::feed::FeedEvent;
use crate::pb::{self, entitlement_service_server::EntitlementService};
use crate::resolve::{ContributionKind, PlanSource};
use crate::service::{CheckItem, Service};
use crate::store::UsageMode;

#[derive(Clone)]
pub struct DataApi {
    service: Arc<Service>,
    heartbeat: Duration,
    shutdown: watch::Receiver<bool>,
}

impl DataApi {
    /// `heartbeat`: how often an idle `Watch` stream says it is alive; `shutdown` ends every
    /// stream so that a graceful shutdown is not held open by watchers.
    pub fn new(service: Arc<Service>, heartbeat: Duration, shutdown: watch::Receiver<bool>) -> DataApi {
        DataApi { service, heartbeat, shutdown }
    }
}

fn watch_event(
    kind: pb::WatchEventKind,
    tenant: &str,
    revision: u64,
    cursor: String,
) -> Result<pb::WatchResponse, Status> {
    Ok(pb::WatchResponse { kind: kind as i32, tenant_id: tenant.to_string(), revision, cursor })
}

/// Forward feed events to one watcher until it goes away.
async fn pump(
    service: Arc<Service>,
    cursor: String,
    heartbeat: Duration,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let feed = service.feed();
    let mut sub = feed.subscribe(&cursor);
    let mut last = sub.last_seq;
    let first = if sub.resumed { pb::WatchEventKind::Resumed } else { pb::WatchEventKind::Reset };
    if tx.send(watch_event(first, "", 0, feed.cursor(last))).await.is_err() {
        return;
    }
    let send = |e: &FeedEvent| match e {
        FeedEvent::Change { seq, tenant, revision } => {
            watch_event(pb::WatchEventKind::Change, tenant, *revision, feed.cursor(*seq))
        }
        FeedEvent::Reset { seq } => watch_event(pb::WatchEventKind::Reset, "", 0, feed.cursor(*seq)),
    };
    for e in &sub.backlog {
        if tx.send(send(e)).await.is_err() {
            return;
        }
        last = last.max(e.seq());
    }
    let mut ticks = tokio::time::interval(heartbeat);
    ticks.tick().await;
    loop {
        let msg = tokio::select! {
            _ = tx.closed() => return,
            _ = shutdown.wait_for(|s| *s) => return,
            _ = ticks.tick() => watch_event(pb::WatchEventKind::Heartbeat, "", 0, feed.cursor(last)),
            e = sub.live.recv() => match e {
                Ok(e) if e.seq() <= last => continue,
                Ok(e) => {
                    last = e.seq();
                    send(&e)
                }
                // Too slow to keep up: it cannot know what it missed, so it must forget everything.
                Err(broadcast::error::RecvError::Lagged(_)) => watch_event(pb::WatchEventKind::Reset, "", 0, feed.cursor(last)),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

fn plan_source(s: PlanSource) -> pb::PlanSource {
    match s {
        PlanSource::Subscription => pb::PlanSource::Subscription,
        PlanSource::ManualAssignment => pb::PlanSource::ManualAssignment,
        PlanSource::ProductTrial => pb::PlanSource::ProductTrial,
        PlanSource::Default => pb::PlanSource::Default,
        PlanSource::UnknownTenant => pb::PlanSource::UnknownTenant,
    }
}

fn contribution_kind(k: ContributionKind) -> pb::ContributionKind {
    match k {
        ContributionKind::Plan => pb::ContributionKind::Plan,
        ContributionKind::DefaultPlan => pb::ContributionKind::DefaultPlan,
        ContributionKind::Seats => pb::ContributionKind::Seats,
        ContributionKind::AddOn => pb::ContributionKind::Addon,
        ContributionKind::Override => pb::ContributionKind::Override,
    }
}

#[tonic::async_trait]
impl EntitlementService for DataApi {
    type WatchStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let cursor = req.into_inner().cursor;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(pump(Arc::clone(&self.service), cursor, self.heartbeat, tx, self.shutdown.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_tenant_state(
        &self,
        req: Request<pb::GetTenantStateRequest>,
    ) -> Result<Response<pb::GetTenantStateResponse>, Status> {
        let r = req.into_inner();
        let state = self.service.tenant(&r.tenant_id).await?;
        Ok(Response::new(pb::GetTenantStateResponse {
            tenant: Some(super::state::tenant(&state)),
            known: state.known,
            last_change: state.last_change.as_ref().map(super::state::change),
        }))
    }

    async fn check(&self, req: Request<pb::CheckRequest>) -> Result<Response<pb::CheckResponse>, Status> {
        let started = crate::clock::monotonic();
        let req = req.into_inner();
        let intent = intent(req.intent)?;
        let (c, d) = self.service.check(&req.tenant_id, &req.feature, req.quantity, intent, req.min_revision).await?;
        tracing::debug!(tenant = %req.tenant_id, feature = %req.feature, allowed = d.allowed, reason = d.reason.as_str(), "check");
        let out = pb::CheckResponse { decision: Some(decision_for(&c.tenant, &d, &req.feature)) };
        self.service.stats.observe(std::slice::from_ref(&d), started.elapsed());
        Ok(Response::new(out))
    }

    async fn check_batch(
        &self,
        req: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        let pb::CheckBatchRequest { tenant_id, items, min_revision } = req.into_inner();
        let items = items
            .into_iter()
            .map(|i| Ok(CheckItem { feature: i.feature, quantity: i.quantity, intent: intent(i.intent)? }))
            .collect::<Result<Vec<_>, Status>>()?;
        let started = crate::clock::monotonic();
        let (c, ds) = self.service.check_batch(&tenant_id, &items, min_revision).await?;
        let decisions = ds.iter().zip(&items).map(|(d, i)| decision_for(&c.tenant, d, &i.feature)).collect();
        self.service.stats.observe(&ds, started.elapsed());
        Ok(Response::new(pb::CheckBatchResponse { decisions }))
    }

    async fn explain(&self, req: Request<pb::ExplainRequest>) -> Result<Response<pb::ExplainResponse>, Status> {
        let req = req.into_inner();
        let at = req.at.as_ref().map(from_ts);
        let (e, state) = self.service.explain(&req.tenant_id, &req.features, at).await?;
        let r = &e.resolved;
        let catalog = &r.catalog;
        let plan_def = &catalog.plans_by_rank()[r.plan.idx];
        let lc = &r.lifecycle;
        let features = e
            .features
            .iter()
            .map(|f| {
                let def = &catalog.features[f.feature];
                pb::FeatureExplanation {
                    feature: def.key.clone(),
                    kind: kind(def.kind) as i32,
                    effective: Some(value(f.effective)),
                    decision: Some(decision(r, &f.decision)),
                    contributions: f
                        .contributions
                        .iter()
                        .map(|c| pb::Contribution {
                            kind: contribution_kind(c.kind) as i32,
                            key: c.key.clone(),
                            value: Some(value(c.value)),
                            quantity: c.quantity,
                            origin: c.origin.clone(),
                            actor: c.actor.clone(),
                            rationale: c.rationale.clone(),
                            granted_at: opt_ts(c.granted_at),
                            expires_at: opt_ts(c.expires_at),
                            applied: c.applied,
                            note: c.note.clone(),
                        })
                        .collect(),
                    last_change: f.last_change.as_ref().map(super::state::change),
                    summary: f.summary.clone(),
                    shadow: def.enforcement == crate::catalog::Enforcement::Shadow,
                }
            })
            .collect();
        Ok(Response::new(pb::ExplainResponse {
            tenant_id: r.tenant_id.to_string(),
            known: r.known,
            revision: r.revision,
            edition: catalog.edition.to_string(),
            evaluated_at: Some(ts(r.evaluated_at)),
            plan: Some(pb::PlanExplanation {
                key: plan_def.key.clone(),
                name: plan_def.name.clone(),
                rank: plan_def.rank,
                source: plan_source(r.plan.source) as i32,
                origin: r.plan.origin.clone(),
                candidates: e
                    .candidates
                    .iter()
                    .map(|c| pb::PlanCandidate {
                        plan: c.plan.clone(),
                        source: plan_source(c.source) as i32,
                        origin: c.origin.clone(),
                        entitles: c.entitles,
                        note: c.note.clone(),
                    })
                    .collect(),
                summary: format!("{} (rank {}) from {}", plan_def.key, plan_def.rank, r.plan.origin),
            }),
            lifecycle: Some(pb::Lifecycle {
                phase: phase(lc.phase) as i32,
                trial_start: opt_ts(lc.trial_start),
                trial_end: opt_ts(lc.trial_end),
                trial_days_left: lc.days_left.unwrap_or_default(),
                soft_lock_at: opt_ts(lc.soft_lock_at),
                hard_lock_at: opt_ts(lc.hard_lock_at),
                archive_at: opt_ts(lc.archive_at),
                summary: lifecycle_summary(r),
            }),
            notices: lc.notices.iter().map(notice).collect(),
            valid_until: opt_ts(r.valid_until),
            features,
            trial_offers: e
                .offers
                .iter()
                .map(|o| pb::TrialOffer {
                    key: o.key.clone(),
                    plan: o.plan.clone(),
                    days: o.days,
                    open: o.open,
                    reason: o.reason.clone(),
                })
                .collect(),
            last_change: state.last_change.as_ref().map(super::state::change),
            subscriptions: state.subscriptions.iter().map(super::state::subscription).collect(),
        }))
    }

    async fn usage(&self, req: Request<pb::UsageRequest>) -> Result<Response<pb::UsageResponse>, Status> {
        let req = req.into_inner();
        let (c, lines) = self.service.usage(&req.tenant_id, &req.features).await?;
        let catalog = &c.tenant.catalog;
        let usage = lines
            .iter()
            .map(|l| {
                let def = &catalog.features[l.feature];
                pb::FeatureUsage {
                    feature: def.key.clone(),
                    kind: kind(def.kind) as i32,
                    used: l.used,
                    limit: match l.limit {
                        Value::Number(n) => Some(n),
                        _ => None,
                    },
                    unlimited: l.limit == Value::Unlimited,
                    remaining: crate::usage::remaining(l.limit, l.used),
                    period: match def.kind {
                        crate::catalog::FeatureKind::Counter(p) => p.as_str().to_string(),
                        _ => String::new(),
                    },
                    period_start: l.period.map(|p| ts(p.start)),
                    resets_at: l.period.and_then(|p| p.end).map(ts),
                }
            })
            .collect();
        Ok(Response::new(pb::UsageResponse { usage }))
    }

    async fn record_usage(
        &self,
        req: Request<pb::RecordUsageRequest>,
    ) -> Result<Response<pb::RecordUsageResponse>, Status> {
        let req = req.into_inner();
        let mode = match pb::UsageMode::try_from(req.mode) {
            Ok(pb::UsageMode::Delta) => UsageMode::Delta,
            Ok(pb::UsageMode::Set) => UsageMode::Set,
            _ => {
                return Err(Status::invalid_argument("mode: must be USAGE_MODE_DELTA or USAGE_MODE_SET"));
            }
        };
        let r = self
            .service
            .record_usage(&req.tenant_id, &req.feature, req.value, mode, &req.idempotency_key, req.enforce)
            .await?;
        Ok(Response::new(pb::RecordUsageResponse {
            applied: r.applied,
            duplicate: r.duplicate,
            used: r.used,
            limit: match r.limit {
                Value::Number(n) => Some(n),
                _ => None,
            },
            unlimited: r.limit == Value::Unlimited,
            remaining: crate::usage::remaining(r.limit, r.used),
            reason: r.reason.map_or(pb::Reason::Granted, super::reason) as i32,
            period_start: r.period.map(|p| ts(p.start)),
            resets_at: r.period.and_then(|p| p.end).map(ts),
        }))
    }
}
