//! Stripe events (SPEC §7): translate a verified event into the core's facts, have the store
//! apply them in one transaction, invalidate; replay stored events; list them.

use std::sync::Arc;

use super::{Service, ServiceError, check_tenant, invalid};
use crate::clock::unix_now;
use crate::command::{check_actor, quote, text};
use crate::store::{Replay, StoredEvent, StripeLog, StripeOutcome, StripeStatus};
use crate::stripe::{self, Envelope};
use crate::telemetry;

const NOT_HERE: &str = "Stripe webhooks are applied by the central service, not by a relay";

impl Service {
    /// The Stripe event log; a relay has none.
    fn stripe_log(&self) -> Result<&Arc<dyn StripeLog>, ServiceError> {
        self.stores.stripe.as_ref().ok_or_else(|| invalid("request", NOT_HERE).into())
    }

    /// Translate and apply a verified Stripe event; invalidate what it changed.
    pub async fn apply_stripe(
        &self,
        env: &Envelope,
        event: Result<stripe_webhook::Event, String>,
        replay: Option<&Replay>,
    ) -> Result<StripeOutcome, ServiceError> {
        let translation = event.map(|e| stripe::translate(&self.catalog, env, &e));
        match &translation {
            Ok(t) => {
                for err in &t.errors {
                    tracing::warn!(event_id = %env.id, event_type = %env.event_type, error = %err, "stripe event mapping problem");
                    metrics::counter!(telemetry::WEBHOOK_MAPPING_ERRORS, "type" => env.event_type.clone()).increment(1);
                }
            }
            Err(e) => tracing::warn!(event_id = %env.id, error = %e, "stripe event did not parse"),
        }
        let outcome = self.stripe_log()?.apply_stripe_event(env, &translation, replay, unix_now()).await?;
        let label = if outcome.duplicate { "duplicate" } else { outcome.status.as_str() };
        metrics::counter!(telemetry::WEBHOOK_EVENTS, "type" => env.event_type.clone(), "outcome" => label).increment(1);
        tracing::info!(event_id = %env.id, event_type = %env.event_type, outcome = label, tenant = ?outcome.tenant_id, "stripe event");
        if let (Some(t), Some(rev)) = (&outcome.tenant_id, outcome.revision) {
            self.invalidate(t, rev).await;
        }
        if let Some(customer) = &outcome.linked_customer {
            Box::pin(self.apply_pending(customer)).await?;
        }
        Ok(outcome)
    }

    /// Apply the stored events that waited for a tenant with this customer id.
    pub async fn apply_pending(&self, customer: &str) -> Result<(), ServiceError> {
        let replay = Replay { actor: "stripe".into(), rationale: "a tenant now claims this customer".into() };
        // A relay has no Stripe log: nothing waits there.
        let Some(log) = &self.stores.stripe else { return Ok(()) };
        for ev in log.pending_stripe_events(customer).await? {
            let env = stripe::envelope(&ev.payload).map_err(ServiceError::Internal)?;
            let event = stripe::parse_stored(&ev.payload);
            Box::pin(self.apply_stripe(&env, event, Some(&replay))).await?;
        }
        Ok(())
    }

    /// Re-apply a stored event (failed or still pending), e.g. after a catalog fix. Audited.
    pub async fn replay_stripe_event(
        &self,
        id: &str,
        actor: &str,
        rationale: &str,
    ) -> Result<(StripeOutcome, StoredEvent), ServiceError> {
        check_actor(actor, rationale)?;
        text("event_id", id)?;
        let log = self.stripe_log()?;
        let ev =
            log.stripe_event(id).await?.ok_or_else(|| invalid("event_id", format!("no stored event {}", quote(id))))?;
        if !matches!(ev.status, StripeStatus::Failed | StripeStatus::PendingTenant) {
            let (id, status) = (quote(id), ev.status.as_str());
            let message = format!("event {id} is {status}; only failed or pending events are replayed");
            return Err(invalid("event_id", message).into());
        }
        let env = stripe::envelope(&ev.payload).map_err(ServiceError::Internal)?;
        let replay = Replay { actor: actor.to_string(), rationale: rationale.to_string() };
        let outcome = self.apply_stripe(&env, stripe::parse_stored(&ev.payload), Some(&replay)).await?;
        let stored = log.stripe_event(id).await?.unwrap_or(ev);
        Ok((outcome, stored))
    }

    pub async fn stripe_events(
        &self,
        tenant: Option<&str>,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, ServiceError> {
        if let Some(t) = tenant {
            check_tenant(t)?;
        }
        let status = match status {
            None => None,
            Some(s) => {
                Some(StripeStatus::parse(s).ok_or_else(|| invalid("status", format!("unknown status {}", quote(s))))?)
            }
        };
        Ok(self.stripe_log()?.stripe_events(tenant, status, limit.clamp(1, 500)).await?)
    }
}
