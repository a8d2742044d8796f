//! Lifecycle notices (`Watch`) and webhook deliveries (`ListWebhookDeliveries`,
//! `RedeliverWebhook`).

use prost_types::Timestamp;

use super::ts;
use crate::pb;
use crate::store::outbox::message_id;
use crate::store::{Attempt, DeliveryFilter, DeliveryRecord, DeliveryStatus, NoticeEvent};
use crate::thresholds::Threshold;

impl From<Threshold> for pb::LifecycleThreshold {
    fn from(t: Threshold) -> pb::LifecycleThreshold {
        match t {
            Threshold::TrialWarning => pb::LifecycleThreshold::TrialWarning,
            Threshold::TrialEnded => pb::LifecycleThreshold::TrialEnded,
            Threshold::HardLocked => pb::LifecycleThreshold::HardLocked,
            Threshold::Archived => pb::LifecycleThreshold::Archived,
            Threshold::StripeTrialEnding => pb::LifecycleThreshold::StripeTrialEnding,
            Threshold::PastDueEntered => pb::LifecycleThreshold::PastDueEntered,
            Threshold::PastDueLeft => pb::LifecycleThreshold::PastDueLeft,
        }
    }
}

impl From<&NoticeEvent> for pb::LifecycleNotice {
    fn from(n: &NoticeEvent) -> pb::LifecycleNotice {
        pb::LifecycleNotice {
            id: message_id(n.id),
            tenant_id: n.tenant_id.clone(),
            threshold: pb::LifecycleThreshold::from(n.threshold) as i32,
            at: Some(ts(n.at)),
            days_left: n.days_left,
            revision: n.revision,
        }
    }
}

fn ms_ts(ms: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds: ms.div_euclid(1000), nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0) })
}

impl From<&Attempt> for pb::WebhookAttempt {
    fn from(a: &Attempt) -> pb::WebhookAttempt {
        pb::WebhookAttempt {
            attempt: a.attempt,
            at: ms_ts(a.at_ms),
            status_code: a.status_code.map_or(0, u32::from),
            error: a.error.clone().unwrap_or_default(),
            duration_ms: a.duration_ms,
        }
    }
}

impl From<&DeliveryRecord> for pb::WebhookDelivery {
    fn from(r: &DeliveryRecord) -> pb::WebhookDelivery {
        let d = &r.delivery;
        pb::WebhookDelivery {
            id: d.id,
            endpoint: d.endpoint.clone(),
            message_id: message_id(d.event_id),
            tenant_id: d.tenant_id.clone(),
            event_type: d.event_type.clone(),
            status: d.status.as_str().to_string(),
            created_at: ms_ts(d.created_ms),
            next_attempt_at: (d.status == DeliveryStatus::Pending).then(|| ms_ts(d.next_attempt_ms)).flatten(),
            give_up_at: ms_ts(d.give_up_ms),
            attempts: r.attempts.iter().map(pb::WebhookAttempt::from).collect(),
            payload: d.payload.clone(),
        }
    }
}

/// The listing's filter; an unknown status is refused.
pub fn delivery_filter(r: &pb::ListWebhookDeliveriesRequest) -> Result<DeliveryFilter, crate::command::Invalid> {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let status = match r.status.as_str() {
        "" => None,
        s => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            crate::command::invalid("status", format!("unknown status `{s}` (pending, delivered, failed)"))
        })?),
    };
    Ok(DeliveryFilter {
        endpoint: some(&r.endpoint),
        tenant_id: some(&r.tenant_id),
        status,
        before_id: (r.before_id > 0).then_some(r.before_id),
        limit: u32::try_from(r.page_size).ok().filter(|&n| n > 0).map_or(100, |n| n.min(500)),
    })
}

pub fn deliveries_response(records: &[DeliveryRecord]) -> pb::ListWebhookDeliveriesResponse {
    pb::ListWebhookDeliveriesResponse { deliveries: records.iter().map(pb::WebhookDelivery::from).collect() }
}
