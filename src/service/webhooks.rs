//! The admin plane's view of outbound webhooks: the delivery log, and manual redelivery.

use std::sync::Arc;

use super::{Service, ServiceError, invalid};
use crate::command::check_actor;
use crate::store::{DeliveryFilter, DeliveryRecord, OutboxStore};

const NOT_HERE: &str = "outbound webhooks are sent by the central service, not by a relay";

impl Service {
    fn outbox(&self) -> Result<&Arc<dyn OutboxStore>, ServiceError> {
        self.stores.outbox.as_ref().ok_or_else(|| invalid("request", NOT_HERE).into())
    }

    pub async fn webhook_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRecord>, ServiceError> {
        if let Some(t) = &filter.tenant_id {
            super::check_tenant(t)?;
        }
        Ok(self.outbox()?.deliveries(filter).await?)
    }

    /// Make a delivery due again now, with a fresh retry window; its log keeps every attempt.
    pub async fn redeliver_webhook(
        &self,
        id: i64,
        actor: &str,
        rationale: &str,
    ) -> Result<DeliveryRecord, ServiceError> {
        check_actor(actor, rationale)?;
        let outbox = self.outbox()?;
        if !outbox.redeliver(id, crate::clock::host_unix_millis()).await? {
            return Err(invalid("delivery_id", format!("no delivery {id}")).into());
        }
        tracing::info!(delivery = id, actor, rationale, "webhook redelivery requested");
        self.wakes.deliveries.notify_one();
        let filter = DeliveryFilter { before_id: Some(id.saturating_add(1)), limit: 1, ..DeliveryFilter::default() };
        let mut found = outbox.deliveries(&filter).await?;
        found
            .pop()
            .filter(|r| r.delivery.id == id)
            .ok_or_else(|| ServiceError::Internal(format!("delivery {id} vanished")))
    }
}
