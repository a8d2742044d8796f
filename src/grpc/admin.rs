//! `AdminService`: the control plane. Every mutation is audited (actor + rationale) and bumps the
//! tenant's revision; the bearer token is compared in constant time.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{self, CommandMessage};
use crate::command::required;
use crate::pb::{self, admin_service_server::AdminService};
use crate::service::{Service, ServiceError};
use crate::store::Committed;

#[derive(Clone)]
pub struct AdminApi {
    service: Arc<Service>,
}

impl AdminApi {
    pub fn new(service: Arc<Service>) -> AdminApi {
        AdminApi { service }
    }

    /// Read the request's command and have the service validate (required fields, actor,
    /// rationale, tenant id, catalog), commit and invalidate it.
    async fn mutate(&self, r: &(impl CommandMessage + Sync)) -> Result<Committed, Status> {
        let command = r.command(self.service.catalog()).map_err(ServiceError::from)?;
        let (tenant, actor) = (r.tenant_id(), r.actor());
        crate::trace::record_tenant(tenant);
        let c = self.service.mutate(tenant, command, actor, r.rationale()).await?;
        tracing::info!(tenant, actor, revision = c.revision, "admin change");
        Ok(c)
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn put_tenant(&self, req: Request<pb::PutTenantRequest>) -> Result<Response<pb::PutTenantResponse>, Status> {
        let r = req.into_inner();
        let c = self.mutate(&r).await?;
        let state = self.service.tenant(&r.tenant_id).await?;
        Ok(Response::new(convert::put_tenant_response(&c, &state)))
    }

    async fn get_tenant(&self, req: Request<pb::GetTenantRequest>) -> Result<Response<pb::GetTenantResponse>, Status> {
        let r = req.into_inner();
        let state = self.service.tenant(&r.tenant_id).await?;
        Ok(Response::new(convert::get_tenant_response(&state)))
    }

    async fn assign_plan(
        &self,
        req: Request<pb::AssignPlanRequest>,
    ) -> Result<Response<pb::AssignPlanResponse>, Status> {
        let c = self.mutate(req.get_ref()).await?;
        Ok(Response::new((&c).into()))
    }

    async fn unassign_plan(
        &self,
        req: Request<pb::UnassignPlanRequest>,
    ) -> Result<Response<pb::UnassignPlanResponse>, Status> {
        let c = self.mutate(req.get_ref()).await?;
        Ok(Response::new((&c).into()))
    }

    async fn extend_trial(
        &self,
        req: Request<pb::ExtendTrialRequest>,
    ) -> Result<Response<pb::ExtendTrialResponse>, Status> {
        let c = self.mutate(req.get_ref()).await?;
        Ok(Response::new((&c).into()))
    }

    async fn grant_add_on(
        &self,
        req: Request<pb::GrantAddOnRequest>,
    ) -> Result<Response<pb::GrantAddOnResponse>, Status> {
        let c = self.mutate(req.get_ref()).await?;
        Ok(Response::new((&c).into()))
    }

    async fn revoke_add_on(
        &self,
        req: Request<pb::RevokeAddOnRequest>,
    ) -> Result<Response<pb::RevokeAddOnResponse>, Status> {
        let c = self.mutate(req.get_ref()).await?;
        Ok(Response::new((&c).into()))
    }

    async fn set_override(
        &self,
        req: Request<pb::SetOverrideRequest>,
    ) -> Result<Response<pb::SetOverrideResponse>, Status> {
        let c = self.mutate(req.get_ref()).await?;
        Ok(Response::new((&c).into()))
    }

    async fn clear_override(
        &self,
        req: Request<pb::ClearOverrideRequest>,
    ) -> Result<Response<pb::ClearOverrideResponse>, Status> {
        let c = self.mutate(req.get_ref()).await?;
        Ok(Response::new((&c).into()))
    }

    async fn list_audit_events(
        &self,
        req: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let r = req.into_inner();
        let (size, before) = convert::audit_query(&r).map_err(ServiceError::from)?;
        let events = self.service.audit(&r.tenant_id, size, before).await?;
        Ok(Response::new(convert::audit_page(events, size)))
    }

    async fn list_stripe_events(
        &self,
        req: Request<pb::ListStripeEventsRequest>,
    ) -> Result<Response<pb::ListStripeEventsResponse>, Status> {
        let r = req.into_inner();
        let (tenant, status, size) = convert::stripe_query(&r);
        let events = self.service.stripe_events(tenant, status, size).await?;
        Ok(Response::new(convert::stripe_events_response(&events)))
    }

    async fn replay_stripe_event(
        &self,
        req: Request<pb::ReplayStripeEventRequest>,
    ) -> Result<Response<pb::ReplayStripeEventResponse>, Status> {
        let r = req.into_inner();
        required("event_id", &r.event_id).map_err(ServiceError::from)?;
        let (outcome, stored) = self.service.replay_stripe_event(&r.event_id, &r.actor, &r.rationale).await?;
        tracing::info!(event_id = %r.event_id, actor = %r.actor, outcome = outcome.status.as_str(), "stripe event replayed");
        Ok(Response::new(convert::replay_response(&outcome, &stored)))
    }

    async fn list_tenants(
        &self,
        req: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let r = req.into_inner();
        let (filter, after, size) = convert::list_query(&r).map_err(ServiceError::from)?;
        let page = self.service.list_tenants(&filter, after, size).await?;
        Ok(Response::new(convert::tenants_page(page)))
    }

    async fn list_webhook_deliveries(
        &self,
        req: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let filter = convert::outbox::delivery_filter(req.get_ref()).map_err(ServiceError::from)?;
        let records = self.service.webhook_deliveries(&filter).await?;
        Ok(Response::new(convert::outbox::deliveries_response(&records)))
    }

    async fn redeliver_webhook(
        &self,
        req: Request<pb::RedeliverWebhookRequest>,
    ) -> Result<Response<pb::RedeliverWebhookResponse>, Status> {
        let r = req.into_inner();
        let record = self.service.redeliver_webhook(r.delivery_id, &r.actor, &r.rationale).await?;
        Ok(Response::new(pb::RedeliverWebhookResponse { delivery: Some(pb::WebhookDelivery::from(&record)) }))
    }
}
