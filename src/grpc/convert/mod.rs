//! Protobuf ↔ domain, both directions, in one place: what the gRPC handlers read from requests
//! and answer with, and what a relay sends to and reads from its upstream.
//!
//! - [`decision`] — `Check`/`CheckBatch`: intents in, decisions (the hot path) out; the enums.
//! - [`explain`] — the `Explain` answer.
//! - [`usage`] — `Usage`/`RecordUsage`, served and forwarded.
//! - [`tenant`] — tenant state, served (`GetTenant`, `GetTenantState`) and rebuilt by a relay.
//! - [`catalog`] — `GetCatalog`: the loaded catalog, for display.
//! - [`listing`] — `ListTenants`: filters in, a page of tenant rows out.
//! - [`flagd`] — flagd's evaluation protocol: the context in, OpenFeature evaluations out.
//! - [`admin`] — admin requests ↔ [`crate::command::Command`], their responses ↔
//!   [`crate::store::Committed`], the audit log and Stripe events.
//! - [`outbox`] — lifecycle notices on `Watch`, webhook deliveries.
//!
//! Pure type-to-type mappings are `From`/`TryFrom` impls; mappings that need context (the
//! catalog, the tenant id, the actor) are functions. Refused input comes back as an
//! [`Invalid`](crate::command::Invalid) naming the field; the one mapping to a status is
//! `impl From<ServiceError> for Status` in [`crate::grpc`].

pub mod admin;
pub mod catalog;
pub mod decision;
pub mod explain;
pub mod flagd;
pub mod listing;
pub mod outbox;
pub mod tenant;
pub mod usage;

pub use admin::{
    CommandHeader, CommandMessage, CommandRequest, audit_page, audit_query, audit_request, put_tenant_response,
    replay_response, stripe_events_response, stripe_query,
};
pub use catalog::catalog;
pub use decision::{check_batch_response, check_response, decision, decision_for, intent};
pub use explain::{explain, without_people};
pub use listing::{list_query, tenants_page};
pub use tenant::{get_tenant_response, tenant_state, tenant_state_request};
pub use usage::{usage, usage_mode, usage_request, used};

use prost_types::Timestamp;

use crate::catalog::Value;
use crate::feed::FeedEvent;
use crate::pb;
use crate::tenant::UnixTime;

pub fn ts(t: UnixTime) -> Timestamp {
    Timestamp { seconds: t, nanos: 0 }
}

pub fn opt_ts(t: Option<UnixTime>) -> Option<Timestamp> {
    t.map(ts)
}

pub fn from_ts(t: &Timestamp) -> UnixTime {
    t.seconds
}

fn opt_from_ts(t: &Option<Timestamp>) -> Option<UnixTime> {
    t.as_ref().map(from_ts)
}

impl From<Value> for pb::Value {
    fn from(v: Value) -> pb::Value {
        pb::Value {
            value: Some(match v {
                Value::Bool(b) => pb::value::Value::Enabled(b),
                Value::Number(n) => pb::value::Value::Number(n),
                Value::Unlimited => pb::value::Value::Unlimited(true),
            }),
        }
    }
}

/// A limit as the usage messages carry it: a number, or `unlimited` (and no number).
fn limit(v: Value) -> Option<i64> {
    match v {
        Value::Number(n) => Some(n),
        _ => None,
    }
}

/// A feed event as `Watch` sends it; `cursor` resumes right after it.
pub fn watch_event(e: &FeedEvent, cursor: String) -> pb::WatchResponse {
    match e {
        FeedEvent::Change { tenant, revision, .. } => pb::WatchResponse {
            kind: pb::WatchEventKind::Change as i32,
            tenant_id: tenant.to_string(),
            revision: *revision,
            cursor,
            notice: None,
        },
        FeedEvent::Reset { .. } => watch_signal(pb::WatchEventKind::Reset, cursor),
        FeedEvent::Notice { notice, .. } => pb::WatchResponse {
            kind: pb::WatchEventKind::Notice as i32,
            tenant_id: notice.tenant_id.clone(),
            revision: notice.revision,
            cursor,
            notice: Some(pb::LifecycleNotice::from(&**notice)),
        },
    }
}

/// A `Watch` event about no tenant in particular: RESET, RESUMED or HEARTBEAT.
pub fn watch_signal(kind: pb::WatchEventKind, cursor: String) -> pb::WatchResponse {
    pb::WatchResponse { kind: kind as i32, tenant_id: String::new(), revision: 0, cursor, notice: None }
}
