//! The admin plane's messages. Each of the eight command requests is read into a [`Command`]
//! ([`CommandMessage::command`], by `AdminApi`) and built from one ([`CommandRequest::new`], by
//! a relay forwarding a change): both directions live here, next to each other, and a test
//! checks that one undoes the other. Their responses carry a [`Committed`] either way.
//!
//! Reading only refuses what it cannot turn into a command (a missing oneof, a trial end without
//! a start); the command's own rules — required fields, then actor, then rationale, then the
//! tenant id — are [`Command::validate`]'s, which the service runs on every command.

use super::{from_ts, opt_from_ts, opt_ts, ts};
use crate::catalog::{Catalog, Value};
use crate::command::{self, Actor, Command, Invalid, invalid, required};
use crate::pb;
use crate::pb::extend_trial_request::Until;
use crate::pb::set_override_request::Value as OverrideValue;
use crate::store::{AuditRecord, Committed, StoredEvent, StripeOutcome, TrialExtension};
use crate::tenant::{TenantState, Trial};

/// The tenant, actor and rationale every command request carries.
pub trait CommandHeader {
    fn tenant_id(&self) -> &str;
    fn actor(&self) -> &str;
    fn rationale(&self) -> &str;
}

/// An `AdminService` request that carries one [`Command`]: the inverse of its arm in
/// [`CommandRequest::new`].
pub trait CommandMessage: CommandHeader {
    /// The command the request asks for; `catalog` supplies defaults (the trial length).
    fn command(&self, catalog: &Catalog) -> Result<Command, Invalid>;
}

/// The request that forwards a [`Command`] to an upstream: one variant per command.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandRequest {
    PutTenant(pb::PutTenantRequest),
    AssignPlan(pb::AssignPlanRequest),
    UnassignPlan(pb::UnassignPlanRequest),
    ExtendTrial(pb::ExtendTrialRequest),
    GrantAddOn(pb::GrantAddOnRequest),
    RevokeAddOn(pb::RevokeAddOnRequest),
    SetOverride(pb::SetOverrideRequest),
    ClearOverride(pb::ClearOverrideRequest),
}

impl CommandRequest {
    /// The request asking for `command` on `tenant_id` by `by`; what [`CommandMessage::command`]
    /// reads back as the same command.
    pub fn new(tenant_id: &str, command: &Command, by: &Actor) -> CommandRequest {
        let (tenant_id, actor, rationale) = (tenant_id.to_string(), by.actor.clone(), by.rationale.clone());
        match command {
            Command::PutTenant { stripe_customer_id, trial, archived } => {
                CommandRequest::PutTenant(pb::PutTenantRequest {
                    tenant_id,
                    actor,
                    rationale,
                    stripe_customer_id: stripe_customer_id.clone().unwrap_or_default(),
                    trial_start: trial.map(|t| ts(t.start)),
                    trial_end: trial.map(|t| ts(t.end)),
                    archived: *archived,
                })
            }
            Command::AssignPlan { plan, expires_at } => CommandRequest::AssignPlan(pb::AssignPlanRequest {
                tenant_id,
                actor,
                rationale,
                plan: plan.clone(),
                expires_at: opt_ts(*expires_at),
            }),
            Command::UnassignPlan { plan } => CommandRequest::UnassignPlan(pb::UnassignPlanRequest {
                tenant_id,
                actor,
                rationale,
                plan: plan.clone().unwrap_or_default(),
            }),
            Command::ExtendTrial { extension } => CommandRequest::ExtendTrial(pb::ExtendTrialRequest {
                tenant_id,
                actor,
                rationale,
                until: Some((*extension).into()),
            }),
            Command::GrantAddOn { addon, quantity, expires_at } => CommandRequest::GrantAddOn(pb::GrantAddOnRequest {
                tenant_id,
                actor,
                rationale,
                addon: addon.clone(),
                quantity: *quantity,
                expires_at: opt_ts(*expires_at),
            }),
            Command::RevokeAddOn { addon } => CommandRequest::RevokeAddOn(pb::RevokeAddOnRequest {
                tenant_id,
                actor,
                rationale,
                addon: addon.clone(),
            }),
            Command::SetOverride { feature, value, expires_at } => {
                CommandRequest::SetOverride(pb::SetOverrideRequest {
                    tenant_id,
                    actor,
                    rationale,
                    feature: feature.clone(),
                    value: Some((*value).into()),
                    expires_at: opt_ts(*expires_at),
                })
            }
            Command::ClearOverride { feature } => CommandRequest::ClearOverride(pb::ClearOverrideRequest {
                tenant_id,
                actor,
                rationale,
                feature: feature.clone(),
            }),
        }
    }
}

macro_rules! command_header {
    ($($request:ident),*) => {$(
        impl CommandHeader for pb::$request {
            fn tenant_id(&self) -> &str {
                &self.tenant_id
            }
            fn actor(&self) -> &str {
                &self.actor
            }
            fn rationale(&self) -> &str {
                &self.rationale
            }
        }
    )*};
}

command_header!(
    PutTenantRequest,
    AssignPlanRequest,
    UnassignPlanRequest,
    ExtendTrialRequest,
    GrantAddOnRequest,
    RevokeAddOnRequest,
    SetOverrideRequest,
    ClearOverrideRequest
);

impl CommandMessage for pb::PutTenantRequest {
    fn command(&self, catalog: &Catalog) -> Result<Command, Invalid> {
        let (start, end) = (opt_from_ts(&self.trial_start), opt_from_ts(&self.trial_end));
        Ok(Command::PutTenant {
            stripe_customer_id: (!self.stripe_customer_id.is_empty()).then(|| self.stripe_customer_id.clone()),
            trial: command::trial(catalog, start, end)?,
            archived: self.archived,
        })
    }
}

impl CommandMessage for pb::AssignPlanRequest {
    fn command(&self, _: &Catalog) -> Result<Command, Invalid> {
        Ok(Command::AssignPlan { plan: self.plan.clone(), expires_at: opt_from_ts(&self.expires_at) })
    }
}

impl CommandMessage for pb::UnassignPlanRequest {
    fn command(&self, _: &Catalog) -> Result<Command, Invalid> {
        Ok(Command::UnassignPlan { plan: (!self.plan.is_empty()).then(|| self.plan.clone()) })
    }
}

impl From<TrialExtension> for Until {
    fn from(e: TrialExtension) -> Until {
        match e {
            TrialExtension::Days(d) => Until::Days(d),
            TrialExtension::Until(t) => Until::TrialEnd(ts(t)),
        }
    }
}

impl CommandMessage for pb::ExtendTrialRequest {
    fn command(&self, _: &Catalog) -> Result<Command, Invalid> {
        let extension = match &self.until {
            Some(Until::Days(d)) => TrialExtension::Days(*d),
            Some(Until::TrialEnd(t)) => TrialExtension::Until(from_ts(t)),
            None => return Err(invalid("until", "set `days` or `trial_end`")),
        };
        Ok(Command::ExtendTrial { extension })
    }
}

impl CommandMessage for pb::GrantAddOnRequest {
    fn command(&self, _: &Catalog) -> Result<Command, Invalid> {
        Ok(Command::GrantAddOn {
            addon: self.addon.clone(),
            quantity: command::addon_quantity(self.quantity),
            expires_at: opt_from_ts(&self.expires_at),
        })
    }
}

impl CommandMessage for pb::RevokeAddOnRequest {
    fn command(&self, _: &Catalog) -> Result<Command, Invalid> {
        Ok(Command::RevokeAddOn { addon: self.addon.clone() })
    }
}

impl From<Value> for OverrideValue {
    fn from(v: Value) -> OverrideValue {
        match v {
            Value::Bool(b) => OverrideValue::Enabled(b),
            Value::Number(n) => OverrideValue::Number(n),
            Value::Unlimited => OverrideValue::Unlimited(true),
        }
    }
}

impl CommandMessage for pb::SetOverrideRequest {
    fn command(&self, _: &Catalog) -> Result<Command, Invalid> {
        // A missing feature is named before a missing value, as the API always has.
        required("feature", &self.feature)?;
        let value = match self.value {
            Some(OverrideValue::Enabled(b)) => Value::Bool(b),
            Some(OverrideValue::Number(n)) => Value::Number(n),
            Some(OverrideValue::Unlimited(true)) => Value::Unlimited,
            _ => return Err(invalid("value", "set one of `enabled`, `number` or `unlimited: true`")),
        };
        Ok(Command::SetOverride { feature: self.feature.clone(), value, expires_at: opt_from_ts(&self.expires_at) })
    }
}

impl CommandMessage for pb::ClearOverrideRequest {
    fn command(&self, _: &Catalog) -> Result<Command, Invalid> {
        Ok(Command::ClearOverride { feature: self.feature.clone() })
    }
}

/// The responses that carry nothing but the committed revision.
macro_rules! revision_response {
    ($($response:ident),*) => {$(
        impl From<&Committed> for pb::$response {
            fn from(c: &Committed) -> pb::$response {
                pb::$response { revision: c.revision }
            }
        }
        impl From<pb::$response> for Committed {
            fn from(r: pb::$response) -> Committed {
                Committed { revision: r.revision, trial: None }
            }
        }
    )*};
}

revision_response!(
    AssignPlanResponse,
    UnassignPlanResponse,
    GrantAddOnResponse,
    RevokeAddOnResponse,
    SetOverrideResponse,
    ClearOverrideResponse
);

/// `PutTenant` answers with the tenant as it now is.
pub fn put_tenant_response(c: &Committed, state: &TenantState) -> pb::PutTenantResponse {
    pb::PutTenantResponse { revision: c.revision, tenant: Some(state.into()) }
}

impl From<pb::PutTenantResponse> for Committed {
    fn from(r: pb::PutTenantResponse) -> Committed {
        Committed { revision: r.revision, trial: None }
    }
}

impl From<&Committed> for pb::ExtendTrialResponse {
    fn from(c: &Committed) -> pb::ExtendTrialResponse {
        pb::ExtendTrialResponse { revision: c.revision, trial_end: c.trial.map(|t| ts(t.end)) }
    }
}

/// Only the new trial end travels; it stands in for the start as well.
impl From<pb::ExtendTrialResponse> for Committed {
    fn from(r: pb::ExtendTrialResponse) -> Committed {
        Committed {
            revision: r.revision,
            trial: r.trial_end.as_ref().map(|e| Trial { start: from_ts(e), end: from_ts(e) }),
        }
    }
}

impl From<AuditRecord> for pb::AuditEvent {
    fn from(e: AuditRecord) -> pb::AuditEvent {
        pb::AuditEvent {
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
        }
    }
}

impl From<pb::AuditEvent> for AuditRecord {
    fn from(e: pb::AuditEvent) -> AuditRecord {
        AuditRecord {
            id: e.id,
            tenant_id: e.tenant_id,
            at: opt_from_ts(&e.at).unwrap_or_default(),
            actor: e.actor,
            action: e.action,
            rationale: e.rationale,
            origin: e.origin,
            before: e.before,
            after: e.after,
            revision: e.revision,
        }
    }
}

/// A page size as the list requests carry it: unset (or negative) means 50.
fn page_size(raw: i32) -> u32 {
    if raw <= 0 { 50 } else { raw.unsigned_abs() }
}

/// A page token names the id of the last event of the previous page; the next page starts
/// before it.
fn page_token(before_id: i64) -> String {
    before_id.to_string()
}

/// The page size and the event id to list before, from a `ListAuditEvents` request.
pub fn audit_query(r: &pb::ListAuditEventsRequest) -> Result<(u32, Option<i64>), Invalid> {
    let before = if r.page_token.is_empty() {
        None
    } else {
        Some(r.page_token.parse::<i64>().map_err(|_| invalid("page_token", "not a token from a previous page"))?)
    };
    Ok((page_size(r.page_size), before))
}

/// A relay lists its upstream's audit log: the inverse of [`audit_query`].
pub fn audit_request(tenant_id: &str, limit: u32, before_id: Option<i64>) -> pb::ListAuditEventsRequest {
    pb::ListAuditEventsRequest {
        tenant_id: tenant_id.into(),
        page_size: i32::try_from(limit).unwrap_or(500),
        page_token: before_id.map(page_token).unwrap_or_default(),
    }
}

/// One page of the audit log, `size` events asked for (at most 500 served): a full page has a
/// next page token.
pub fn audit_page(events: Vec<AuditRecord>, size: u32) -> pb::ListAuditEventsResponse {
    let next = if events.len() == size.min(500) as usize {
        events.last().map(|e| page_token(e.id)).unwrap_or_default()
    } else {
        String::new()
    };
    pb::ListAuditEventsResponse {
        events: events.into_iter().map(pb::AuditEvent::from).collect(),
        next_page_token: next,
    }
}

impl From<&StoredEvent> for pb::StripeEvent {
    fn from(e: &StoredEvent) -> pb::StripeEvent {
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
}

/// The tenant and status filters (empty: any) and the page size of a `ListStripeEvents` request.
pub fn stripe_query(r: &pb::ListStripeEventsRequest) -> (Option<&str>, Option<&str>, u32) {
    let tenant = (!r.tenant_id.is_empty()).then_some(r.tenant_id.as_str());
    let status = (!r.status.is_empty()).then_some(r.status.as_str());
    (tenant, status, page_size(r.page_size))
}

pub fn stripe_events_response(events: &[StoredEvent]) -> pb::ListStripeEventsResponse {
    pb::ListStripeEventsResponse { events: events.iter().map(pb::StripeEvent::from).collect() }
}

pub fn replay_response(outcome: &StripeOutcome, stored: &StoredEvent) -> pb::ReplayStripeEventResponse {
    pb::ReplayStripeEventResponse { event: Some(stored.into()), revision: outcome.revision.unwrap_or_default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(r: &CommandRequest, catalog: &Catalog) -> (String, String, String, Command) {
        fn parts(m: &impl CommandMessage, catalog: &Catalog) -> (String, String, String, Command) {
            let command = m.command(catalog).expect("a built request reads back");
            (m.tenant_id().into(), m.actor().into(), m.rationale().into(), command)
        }
        match r {
            CommandRequest::PutTenant(m) => parts(m, catalog),
            CommandRequest::AssignPlan(m) => parts(m, catalog),
            CommandRequest::UnassignPlan(m) => parts(m, catalog),
            CommandRequest::ExtendTrial(m) => parts(m, catalog),
            CommandRequest::GrantAddOn(m) => parts(m, catalog),
            CommandRequest::RevokeAddOn(m) => parts(m, catalog),
            CommandRequest::SetOverride(m) => parts(m, catalog),
            CommandRequest::ClearOverride(m) => parts(m, catalog),
        }
    }

    /// What a relay forwards, the upstream reads as the very same command.
    #[test]
    fn command_requests_round_trip() {
        let catalog = Catalog::from_toml(include_str!("../../../examples/catalog.toml"), &|_| None).expect("valid");
        let by = Actor::admin("ops", "because", 0);
        let s = |x: &str| x.to_string();
        for c in [
            Command::PutTenant {
                stripe_customer_id: Some(s("cus_1")),
                trial: Some(Trial { start: 1, end: 2 }),
                archived: Some(false),
            },
            Command::PutTenant { stripe_customer_id: None, trial: None, archived: None },
            Command::AssignPlan { plan: s("pro"), expires_at: Some(9) },
            Command::AssignPlan { plan: s("pro"), expires_at: None },
            Command::UnassignPlan { plan: Some(s("pro")) },
            Command::UnassignPlan { plan: None },
            Command::ExtendTrial { extension: TrialExtension::Days(3) },
            Command::ExtendTrial { extension: TrialExtension::Until(99) },
            Command::GrantAddOn { addon: s("teams"), quantity: 2, expires_at: Some(5) },
            Command::RevokeAddOn { addon: s("teams") },
            Command::SetOverride { feature: s("sso"), value: Value::Bool(true), expires_at: None },
            Command::SetOverride { feature: s("seats"), value: Value::Number(7), expires_at: Some(5) },
            Command::SetOverride { feature: s("seats"), value: Value::Unlimited, expires_at: None },
            Command::ClearOverride { feature: s("sso") },
        ] {
            let r = CommandRequest::new("acme", &c, &by);
            assert_eq!(read_back(&r, &catalog), (s("acme"), s("ops"), s("because"), c));
        }
    }

    #[test]
    fn committed_round_trips() {
        let c = Committed { revision: 4, trial: Some(Trial { start: 9, end: 9 }) };
        assert_eq!(Committed::from(pb::ExtendTrialResponse::from(&c)), c);
        let c = Committed { revision: 5, trial: None };
        assert_eq!(Committed::from(pb::SetOverrideResponse::from(&c)), c);
    }

    #[test]
    fn audit_pages_round_trip() {
        let q = |t: &str, size: i32| {
            audit_query(&pb::ListAuditEventsRequest { page_token: t.into(), page_size: size, ..Default::default() })
        };
        assert_eq!(q("", 0), Ok((50, None)));
        assert_eq!(q("41", -3), Ok((50, Some(41))));
        assert_eq!(q("x", 7).unwrap_err().to_string(), "page_token: not a token from a previous page");
        let r = audit_request("acme", 20, Some(41));
        assert_eq!(audit_query(&r), Ok((20, Some(41))));
    }
}
