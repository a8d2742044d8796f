//! Tenant state ↔ protobuf, both directions: `GetTenant`/`GetTenantState` answer with it, and a
//! relay rebuilds the exact [`TenantState`] from it to resolve with its own (identical) catalog.
//! Reading fails only on data no server writes; the error says what (a corrupt answer).

use super::{opt_from_ts, opt_ts, ts};
use crate::catalog::{Interval, Value};
use crate::pb;
use crate::tenant::{
    AddOnGrant, Change, GrantOrigin, Override, PlanAssignment, Subscription, SubscriptionStatus, TenantState, Trial,
};

impl From<&Change> for pb::Change {
    fn from(c: &Change) -> pb::Change {
        pb::Change {
            actor: c.actor.clone(),
            at: Some(ts(c.at)),
            rationale: c.rationale.clone(),
            origin: c.origin.clone(),
        }
    }
}

impl From<&pb::Change> for Change {
    fn from(c: &pb::Change) -> Change {
        Change {
            actor: c.actor.clone(),
            at: opt_from_ts(&c.at).unwrap_or_default(),
            rationale: c.rationale.clone(),
            origin: c.origin.clone(),
        }
    }
}

impl From<&Subscription> for pb::Subscription {
    fn from(s: &Subscription) -> pb::Subscription {
        pb::Subscription {
            id: s.id.clone(),
            status: s.status.as_str().to_string(),
            plan: s.plan.clone().unwrap_or_default(),
            interval: s.interval.map(|i| i.as_str().to_string()).unwrap_or_default(),
            seats: s.seats,
            trial_end: opt_ts(s.trial_end),
            current_period_start: opt_ts(s.current_period_start),
            current_period_end: opt_ts(s.current_period_end),
            cancel_at_period_end: s.cancel_at_period_end,
            last_event_created: Some(ts(s.last_event_created)),
            last_event_id: s.last_event_id.clone(),
        }
    }
}

impl TryFrom<&pb::Subscription> for Subscription {
    type Error = String;

    fn try_from(s: &pb::Subscription) -> Result<Subscription, String> {
        Ok(Subscription {
            id: s.id.clone(),
            status: SubscriptionStatus::parse(&s.status)
                .ok_or_else(|| format!("subscription status `{}`", s.status))?,
            plan: (!s.plan.is_empty()).then(|| s.plan.clone()),
            interval: match s.interval.as_str() {
                "month" => Some(Interval::Month),
                "year" => Some(Interval::Year),
                _ => None,
            },
            seats: s.seats,
            trial_end: opt_from_ts(&s.trial_end),
            current_period_start: opt_from_ts(&s.current_period_start),
            current_period_end: opt_from_ts(&s.current_period_end),
            cancel_at_period_end: s.cancel_at_period_end,
            last_event_created: opt_from_ts(&s.last_event_created).unwrap_or_default(),
            last_event_id: s.last_event_id.clone(),
        })
    }
}

impl From<&PlanAssignment> for pb::PlanAssignment {
    fn from(a: &PlanAssignment) -> pb::PlanAssignment {
        pb::PlanAssignment {
            plan: a.plan.clone(),
            actor: a.actor.clone(),
            rationale: a.rationale.clone(),
            assigned_at: Some(ts(a.assigned_at)),
            expires_at: opt_ts(a.expires_at),
        }
    }
}

impl From<&pb::PlanAssignment> for PlanAssignment {
    fn from(a: &pb::PlanAssignment) -> PlanAssignment {
        PlanAssignment {
            plan: a.plan.clone(),
            actor: a.actor.clone(),
            rationale: a.rationale.clone(),
            assigned_at: opt_from_ts(&a.assigned_at).unwrap_or_default(),
            expires_at: opt_from_ts(&a.expires_at),
        }
    }
}

/// How a [`GrantOrigin`] travels: the human-readable `origin` plus the fields it is rebuilt from.
struct OriginFields {
    origin: String,
    subscription_id: String,
    item_id: String,
    lookup_key: String,
}

/// The one encoding of a [`GrantOrigin`]: `origin` is "manual", the subscription id, or
/// "stripe entitlement <key>"; [`grant_origin`] reads it back from the other three fields.
fn origin_fields(o: &GrantOrigin) -> OriginFields {
    let none = String::new;
    match o {
        GrantOrigin::Manual => {
            OriginFields { origin: "manual".to_string(), subscription_id: none(), item_id: none(), lookup_key: none() }
        }
        GrantOrigin::Stripe { subscription_id, item_id } => OriginFields {
            origin: subscription_id.clone(),
            subscription_id: subscription_id.clone(),
            item_id: item_id.clone(),
            lookup_key: none(),
        },
        GrantOrigin::StripeEntitlement { lookup_key } => OriginFields {
            origin: format!("stripe entitlement {lookup_key}"),
            subscription_id: none(),
            item_id: none(),
            lookup_key: lookup_key.clone(),
        },
    }
}

/// The one decoding of a [`GrantOrigin`], the inverse of [`origin_fields`].
fn grant_origin(g: &pb::AddOnGrant) -> GrantOrigin {
    if !g.subscription_id.is_empty() {
        GrantOrigin::Stripe { subscription_id: g.subscription_id.clone(), item_id: g.item_id.clone() }
    } else if !g.lookup_key.is_empty() {
        GrantOrigin::StripeEntitlement { lookup_key: g.lookup_key.clone() }
    } else {
        GrantOrigin::Manual
    }
}

impl From<&AddOnGrant> for pb::AddOnGrant {
    fn from(g: &AddOnGrant) -> pb::AddOnGrant {
        let OriginFields { origin, subscription_id, item_id, lookup_key } = origin_fields(&g.origin);
        pb::AddOnGrant {
            addon: g.addon.clone(),
            quantity: g.quantity,
            origin,
            actor: g.actor.clone(),
            rationale: g.rationale.clone(),
            granted_at: Some(ts(g.granted_at)),
            expires_at: opt_ts(g.expires_at),
            subscription_id,
            item_id,
            lookup_key,
        }
    }
}

impl From<&pb::AddOnGrant> for AddOnGrant {
    fn from(g: &pb::AddOnGrant) -> AddOnGrant {
        AddOnGrant {
            addon: g.addon.clone(),
            quantity: g.quantity,
            origin: grant_origin(g),
            actor: g.actor.clone(),
            rationale: g.rationale.clone(),
            granted_at: opt_from_ts(&g.granted_at).unwrap_or_default(),
            expires_at: opt_from_ts(&g.expires_at),
        }
    }
}

impl From<&Override> for pb::Override {
    fn from(o: &Override) -> pb::Override {
        pb::Override {
            feature: o.feature.clone(),
            value: Some(o.value.into()),
            actor: o.actor.clone(),
            rationale: o.rationale.clone(),
            set_at: Some(ts(o.set_at)),
            expires_at: opt_ts(o.expires_at),
        }
    }
}

impl TryFrom<&pb::Override> for Override {
    type Error = String;

    fn try_from(o: &pb::Override) -> Result<Override, String> {
        let value = match o.value.as_ref().and_then(|v| v.value) {
            Some(pb::value::Value::Enabled(b)) => Value::Bool(b),
            Some(pb::value::Value::Number(n)) => Value::Number(n),
            Some(pb::value::Value::Unlimited(true)) => Value::Unlimited,
            _ => return Err("override without a value".into()),
        };
        Ok(Override {
            feature: o.feature.clone(),
            value,
            actor: o.actor.clone(),
            rationale: o.rationale.clone(),
            set_at: opt_from_ts(&o.set_at).unwrap_or_default(),
            expires_at: opt_from_ts(&o.expires_at),
        })
    }
}

impl From<&TenantState> for pb::Tenant {
    fn from(s: &TenantState) -> pb::Tenant {
        pb::Tenant {
            tenant_id: s.tenant_id.clone(),
            stripe_customer_id: s.stripe_customer_id.clone().unwrap_or_default(),
            trial_start: s.trial.map(|t| ts(t.start)),
            trial_end: s.trial.map(|t| ts(t.end)),
            archived: s.archived,
            revision: s.revision,
            subscriptions: s.subscriptions.iter().map(pb::Subscription::from).collect(),
            plan_assignments: s.plan_assignments.iter().map(pb::PlanAssignment::from).collect(),
            addon_grants: s.addon_grants.iter().map(pb::AddOnGrant::from).collect(),
            overrides: s.overrides.iter().map(pb::Override::from).collect(),
        }
    }
}

/// Rebuild the state the upstream resolved from. `known` and `last_change` travel beside the
/// [`pb::Tenant`] (see [`pb::GetTenantStateResponse`]).
pub fn tenant_state(t: &pb::Tenant, known: bool, last_change: Option<&pb::Change>) -> Result<TenantState, String> {
    let subscriptions = t.subscriptions.iter().map(Subscription::try_from).collect::<Result<Vec<_>, String>>()?;
    let addon_grants = t.addon_grants.iter().map(AddOnGrant::from).collect();
    let overrides = t.overrides.iter().map(Override::try_from).collect::<Result<Vec<_>, String>>()?;
    Ok(TenantState {
        tenant_id: t.tenant_id.clone(),
        known,
        revision: t.revision,
        stripe_customer_id: (!t.stripe_customer_id.is_empty()).then(|| t.stripe_customer_id.clone()),
        trial: match (opt_from_ts(&t.trial_start), opt_from_ts(&t.trial_end)) {
            (Some(start), Some(end)) => Some(Trial { start, end }),
            _ => None,
        },
        archived: t.archived,
        subscriptions,
        plan_assignments: t.plan_assignments.iter().map(PlanAssignment::from).collect(),
        addon_grants,
        overrides,
        last_change: last_change.map(Change::from),
    })
}

pub fn get_tenant_response(s: &TenantState) -> pb::GetTenantResponse {
    pb::GetTenantResponse { tenant: Some(s.into()), known: s.known }
}

/// A relay asks its upstream for a tenant's state...
pub fn tenant_state_request(tenant_id: &str) -> pb::GetTenantStateRequest {
    pb::GetTenantStateRequest { tenant_id: tenant_id.into() }
}

/// ...which serves it from its store...
impl From<&TenantState> for pb::GetTenantStateResponse {
    fn from(s: &TenantState) -> pb::GetTenantStateResponse {
        pb::GetTenantStateResponse {
            tenant: Some(s.into()),
            known: s.known,
            last_change: s.last_change.as_ref().map(pb::Change::from),
        }
    }
}

/// ...and the relay rebuilds it (a missing tenant reads as an empty one).
impl TryFrom<&pb::GetTenantStateResponse> for TenantState {
    type Error = String;

    fn try_from(r: &pb::GetTenantStateResponse) -> Result<TenantState, String> {
        match &r.tenant {
            Some(t) => tenant_state(t, r.known, r.last_change.as_ref()),
            None => tenant_state(&pb::Tenant::default(), r.known, r.last_change.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = TenantState {
            tenant_id: "t".into(),
            known: true,
            revision: 7,
            stripe_customer_id: Some("cus_1".into()),
            trial: Some(Trial { start: 10, end: 20 }),
            archived: false,
            subscriptions: vec![Subscription {
                id: "sub_1".into(),
                status: SubscriptionStatus::PastDue,
                plan: Some("pro".into()),
                interval: Some(Interval::Year),
                seats: Some(0),
                trial_end: None,
                current_period_start: Some(1),
                current_period_end: Some(2),
                cancel_at_period_end: true,
                last_event_created: 5,
                last_event_id: "evt".into(),
            }],
            plan_assignments: vec![PlanAssignment {
                plan: "enterprise".into(),
                actor: "a".into(),
                rationale: "r".into(),
                assigned_at: 3,
                expires_at: Some(9),
            }],
            addon_grants: vec![
                AddOnGrant {
                    addon: "teams".into(),
                    quantity: 2,
                    origin: GrantOrigin::Manual,
                    actor: "a".into(),
                    rationale: "r".into(),
                    granted_at: 4,
                    expires_at: None,
                },
                AddOnGrant {
                    addon: "teams".into(),
                    quantity: 1,
                    origin: GrantOrigin::Stripe { subscription_id: "sub_1".into(), item_id: "si_1".into() },
                    actor: "stripe".into(),
                    rationale: "x".into(),
                    granted_at: 4,
                    expires_at: None,
                },
                AddOnGrant {
                    addon: "sso".into(),
                    quantity: 1,
                    origin: GrantOrigin::StripeEntitlement { lookup_key: "sso".into() },
                    actor: "stripe".into(),
                    rationale: "x".into(),
                    granted_at: 4,
                    expires_at: None,
                },
            ],
            overrides: vec![Override {
                feature: "seats".into(),
                value: Value::Unlimited,
                actor: "a".into(),
                rationale: "r".into(),
                set_at: 1,
                expires_at: Some(2),
            }],
            last_change: Some(Change { actor: "a".into(), at: 8, rationale: "r".into(), origin: "admin".into() }),
        };
        let lc = s.last_change.as_ref().map(pb::Change::from);
        assert_eq!(tenant_state(&pb::Tenant::from(&s), true, lc.as_ref()), Ok(s.clone()));
        assert_eq!(TenantState::try_from(&pb::GetTenantStateResponse::from(&s)), Ok(s));
    }

    /// The wire format of grant origins, as earlier releases (and their relays) read it.
    #[test]
    fn grant_origin_wire_format() {
        let wire = |o: GrantOrigin| {
            let f = origin_fields(&o);
            (f.origin, f.subscription_id, f.item_id, f.lookup_key)
        };
        let s = |x: &str| x.to_string();
        assert_eq!(wire(GrantOrigin::Manual), (s("manual"), s(""), s(""), s("")));
        assert_eq!(
            wire(GrantOrigin::Stripe { subscription_id: s("sub_1"), item_id: s("si_1") }),
            (s("sub_1"), s("sub_1"), s("si_1"), s(""))
        );
        assert_eq!(
            wire(GrantOrigin::StripeEntitlement { lookup_key: s("sso") }),
            (s("stripe entitlement sso"), s(""), s(""), s("sso"))
        );
    }
}
