//! `AdminService`: the control plane. Every mutation is audited (actor + rationale) and bumps the
//! tenant's revision; the bearer token is compared in constant time.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{from_ts, opt_ts, required, ts};
use crate::catalog::Value;
use crate::command::{self, Command};
use crate::pb::{self, admin_service_server::AdminService};
use crate::service::{Service, ServiceError};
use crate::store::{Committed, TrialExtension};

#[derive(Clone)]
pub struct AdminApi {
    service: Arc<Service>,
}

impl AdminApi {
    pub fn new(service: Arc<Service>) -> AdminApi {
        AdminApi { service }
    }

    async fn mutate(&self, tenant: &str, actor: &str, rationale: &str, m: Command) -> Result<Committed, Status> {
        required("actor", actor)?;
        required("rationale", rationale)?;
        let c = self.service.mutate(tenant, m, actor, rationale).await?;
        tracing::info!(tenant, actor, revision = c.revision, "admin change");
        Ok(c)
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn put_tenant(&self, req: Request<pb::PutTenantRequest>) -> Result<Response<pb::PutTenantResponse>, Status> {
        let r = req.into_inner();
        let (start, end) = (r.trial_start.as_ref().map(from_ts), r.trial_end.as_ref().map(from_ts));
        let trial = command::trial(self.service.catalog(), start, end).map_err(ServiceError::from)?;
        let customer = (!r.stripe_customer_id.is_empty()).then(|| r.stripe_customer_id.clone());
        let m = Command::PutTenant { stripe_customer_id: customer, trial, archived: r.archived };
        let c = self.mutate(&r.tenant_id, &r.actor, &r.rationale, m).await?;
        let state = self.service.tenant(&r.tenant_id).await?;
        Ok(Response::new(pb::PutTenantResponse { revision: c.revision, tenant: Some(super::state::tenant(&state)) }))
    }

    async fn get_tenant(&self, req: Request<pb::GetTenantRequest>) -> Result<Response<pb::GetTenantResponse>, Status> {
        let r = req.into_inner();
        let state = self.service.tenant(&r.tenant_id).await?;
        Ok(Response::new(pb::GetTenantResponse { known: state.known, tenant: Some(super::state::tenant(&state)) }))
    }

    async fn assign_plan(
        &self,
        req: Request<pb::AssignPlanRequest>,
    ) -> Result<Response<pb::AssignPlanResponse>, Status> {
        let r = req.into_inner();
        required("plan", &r.plan)?;
        let m = Command::AssignPlan { plan: r.plan.clone(), expires_at: r.expires_at.as_ref().map(from_ts) };
        let c = self.mutate(&r.tenant_id, &r.actor, &r.rationale, m).await?;
        Ok(Response::new(pb::AssignPlanResponse { revision: c.revision }))
    }

    async fn unassign_plan(
        &self,
        req: Request<pb::UnassignPlanRequest>,
    ) -> Result<Response<pb::UnassignPlanResponse>, Status> {
        let r = req.into_inner();
        let m = Command::UnassignPlan { plan: (!r.plan.is_empty()).then(|| r.plan.clone()) };
        let c = self.mutate(&r.tenant_id, &r.actor, &r.rationale, m).await?;
        Ok(Response::new(pb::UnassignPlanResponse { revision: c.revision }))
    }

    async fn extend_trial(
        &self,
        req: Request<pb::ExtendTrialRequest>,
    ) -> Result<Response<pb::ExtendTrialResponse>, Status> {
        let r = req.into_inner();
        let extension = match r.until {
            Some(pb::extend_trial_request::Until::Days(d)) => TrialExtension::Days(d),
            Some(pb::extend_trial_request::Until::TrialEnd(t)) => TrialExtension::Until(from_ts(&t)),
            None => return Err(Status::invalid_argument("until: set `days` or `trial_end`")),
        };
        let c = self.mutate(&r.tenant_id, &r.actor, &r.rationale, Command::ExtendTrial { extension }).await?;
        Ok(Response::new(pb::ExtendTrialResponse { revision: c.revision, trial_end: c.trial.map(|t| ts(t.end)) }))
    }

    async fn grant_add_on(
        &self,
        req: Request<pb::GrantAddOnRequest>,
    ) -> Result<Response<pb::GrantAddOnResponse>, Status> {
        let r = req.into_inner();
        required("addon", &r.addon)?;
        let quantity = command::addon_quantity(r.quantity);
        let m =
            Command::GrantAddOn { addon: r.addon.clone(), quantity, expires_at: r.expires_at.as_ref().map(from_ts) };
        let c = self.mutate(&r.tenant_id, &r.actor, &r.rationale, m).await?;
        Ok(Response::new(pb::GrantAddOnResponse { revision: c.revision }))
    }

    async fn revoke_add_on(
        &self,
        req: Request<pb::RevokeAddOnRequest>,
    ) -> Result<Response<pb::RevokeAddOnResponse>, Status> {
        let r = req.into_inner();
        required("addon", &r.addon)?;
        let c =
            self.mutate(&r.tenant_id, &r.actor, &r.rationale, Command::RevokeAddOn { addon: r.addon.clone() }).await?;
        Ok(Response::new(pb::RevokeAddOnResponse { revision: c.revision }))
    }

    async fn set_override(
        &self,
        req: Request<pb::SetOverrideRequest>,
    ) -> Result<Response<pb::SetOverrideResponse>, Status> {
        let r = req.into_inner();
        required("feature", &r.feature)?;
        let value = match r.value {
            Some(pb::set_override_request::Value::Enabled(b)) => Value::Bool(b),
            Some(pb::set_override_request::Value::Number(n)) => Value::Number(n),
            Some(pb::set_override_request::Value::Unlimited(true)) => Value::Unlimited,
            _ => {
                return Err(Status::invalid_argument("value: set one of `enabled`, `number` or `unlimited: true`"));
            }
        };
        let m =
            Command::SetOverride { feature: r.feature.clone(), value, expires_at: r.expires_at.as_ref().map(from_ts) };
        let c = self.mutate(&r.tenant_id, &r.actor, &r.rationale, m).await?;
        Ok(Response::new(pb::SetOverrideResponse { revision: c.revision }))
    }

    async fn clear_override(
        &self,
        req: Request<pb::ClearOverrideRequest>,
    ) -> Result<Response<pb::ClearOverrideResponse>, Status> {
        let r = req.into_inner();
        required("feature", &r.feature)?;
        let c = self
            .mutate(&r.tenant_id, &r.actor, &r.rationale, Command::ClearOverride { feature: r.feature.clone() })
            .await?;
        Ok(Response::new(pb::ClearOverrideResponse { revision: c.revision }))
    }

    async fn list_audit_events(
        &self,
        req: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let r = req.into_inner();
        let before = if r.page_token.is_empty() {
            None
        } else {
            Some(
                r.page_token
                    .parse::<i64>()
                    .map_err(|_| Status::invalid_argument("page_token: not a token from a previous page"))?,
            )
        };
        let size = if r.page_size <= 0 { 50 } else { r.page_size.unsigned_abs() };
        let events = self.service.audit(&r.tenant_id, size, before).await?;
        let next = if events.len() == size.min(500) as usize {
            events.last().map(|e| e.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: events
                .into_iter()
                .map(|e| pb::AuditEvent {
                    id: e.id,
                    tenant_id: e.tenant_id,
                    at: Some(ts(e.at)),
                    actor: e.actor,
                    action: e.action,
                    rationale: e.rationale,
                    origin: e.origin,
                    before: e.before,
                    after: e.after,
                    revision: e.revision,
                })
                .collect(),
            next_page_token: next,
        }))
    }

    async fn list_stripe_events(
        &self,
        req: Request<pb::ListStripeEventsRequest>,
    ) -> Result<Response<pb::ListStripeEventsResponse>, Status> {
        let r = req.into_inner();
        let tenant = (!r.tenant_id.is_empty()).then_some(r.tenant_id.as_str());
        let status = (!r.status.is_empty()).then_some(r.status.as_str());
        let size = if r.page_size <= 0 { 50 } else { r.page_size.unsigned_abs() };
        let events = self.service.stripe_events(tenant, status, size).await?;
        Ok(Response::new(pb::ListStripeEventsResponse { events: events.iter().map(stripe_event).collect() }))
    }

    async fn replay_stripe_event(
        &self,
        req: Request<pb::ReplayStripeEventRequest>,
    ) -> Result<Response<pb::ReplayStripeEventResponse>, Status> {
        let r = req.into_inner();
        required("event_id", &r.event_id)?;
        let (outcome, stored) = self.service.replay_stripe_event(&r.event_id, &r.actor, &r.rationale).await?;
        tracing::info!(event_id = %r.event_id, actor = %r.actor, outcome = outcome.status.as_str(), "stripe event replayed");
        Ok(Response::new(pb::ReplayStripeEventResponse {
            event: Some(stripe_event(&stored)),
            revision: outcome.revision.unwrap_or_default(),
        }))
    }
}

fn stripe_event(e: &crate::store::StoredEvent) -> pb::StripeEvent {
    pb::StripeEvent {
        id: e.id.clone(),
        event_type: e.event_type.clone(),
        created: Some(ts(e.created)),
        status: e.status.as_str().to_string(),
        error: e.error.clone().unwrap_or_default(),
        tenant_id: e.tenant_id.clone().unwrap_or_default(),
        customer_id: e.customer_id.clone().unwrap_or_default(),
        received_at: Some(ts(e.received_at)),
        applied_at: opt_ts(e.applied_at),
        livemode: e.livemode,
    }
}
