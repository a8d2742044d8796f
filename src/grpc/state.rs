//! Tenant state ↔ protobuf, both directions: `GetTenant`/`GetTenantState` answer with it, and a
//! relay rebuilds the exact [`TenantState`] from it to resolve with its own (identical) catalog.

use super::{from_ts, opt_ts, ts, value};
use crate::catalog::{Interval, Value};
use crate::pb;
use crate::tenant::{
    AddOnGrant, Change, GrantOrigin, Override, PlanAssignment, Subscription, SubscriptionStatus, TenantState, Trial,
};

pub fn change(c: &Change) -> pb::Change {
    pb::Change { actor: c.actor.clone(), at: Some(ts(c.at)), rationale: c.rationale.clone(), origin: c.origin.clone() }
}

pub fn subscription(s: &Subscription) -> pb::Subscription {
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

pub fn tenant(s: &TenantState) -> pb::Tenant {
    pb::Tenant {
        tenant_id: s.tenant_id.clone(),
        stripe_customer_id: s.stripe_customer_id.clone().unwrap_or_default(),
        trial_start: s.trial.map(|t| ts(t.start)),
        trial_end: s.trial.map(|t| ts(t.end)),
        archived: s.archived,
        revision: s.revision,
        subscriptions: s.subscriptions.iter().map(subscription).collect(),
        plan_assignments: s
            .plan_assignments
            .iter()
            .map(|a| pb::PlanAssignment {
                plan: a.plan.clone(),
                actor: a.actor.clone(),
                rationale: a.rationale.clone(),
                assigned_at: Some(ts(a.assigned_at)),
                expires_at: opt_ts(a.expires_at),
            })
            .collect(),
        addon_grants: s
            .addon_grants
            .iter()
            .map(|g| {
                let (origin, subscription_id, item_id, lookup_key) = match &g.origin {
                    GrantOrigin::Manual => ("manual".to_string(), String::new(), String::new(), String::new()),
                    GrantOrigin::Stripe { subscription_id, item_id } => {
                        (subscription_id.clone(), subscription_id.clone(), item_id.clone(), String::new())
                    }
                    GrantOrigin::StripeEntitlement { lookup_key } => {
                        (format!("stripe entitlement {lookup_key}"), String::new(), String::new(), lookup_key.clone())
                    }
                };
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
            })
            .collect(),
        overrides: s
            .overrides
            .iter()
            .map(|o| pb::Override {
                feature: o.feature.clone(),
                value: Some(value(o.value)),
                actor: o.actor.clone(),
                rationale: o.rationale.clone(),
                set_at: Some(ts(o.set_at)),
                expires_at: opt_ts(o.expires_at),
            })
            .collect(),
    }
}

fn value_from(v: Option<&pb::Value>) -> Result<Value, String> {
    match v.and_then(|v| v.value) {
        Some(pb::value::Value::Enabled(b)) => Ok(Value::Bool(b)),
        Some(pb::value::Value::Number(n)) => Ok(Value::Number(n)),
        Some(pb::value::Value::Unlimited(true)) => Ok(Value::Unlimited),
        _ => Err("override without a value".into()),
    }
}

/// Rebuild the state the upstream resolved from.
pub fn tenant_state(t: &pb::Tenant, known: bool, last_change: Option<&pb::Change>) -> Result<TenantState, String> {
    let at = |x: &Option<prost_types::Timestamp>| x.as_ref().map(from_ts);
    let subscriptions = t
        .subscriptions
        .iter()
        .map(|s| {
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
                trial_end: at(&s.trial_end),
                current_period_start: at(&s.current_period_start),
                current_period_end: at(&s.current_period_end),
                cancel_at_period_end: s.cancel_at_period_end,
                last_event_created: at(&s.last_event_created).unwrap_or_default(),
                last_event_id: s.last_event_id.clone(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let addon_grants = t
        .addon_grants
        .iter()
        .map(|g| AddOnGrant {
            addon: g.addon.clone(),
            quantity: g.quantity,
            origin: if !g.subscription_id.is_empty() {
                GrantOrigin::Stripe { subscription_id: g.subscription_id.clone(), item_id: g.item_id.clone() }
            } else if !g.lookup_key.is_empty() {
                GrantOrigin::StripeEntitlement { lookup_key: g.lookup_key.clone() }
            } else {
                GrantOrigin::Manual
            },
            actor: g.actor.clone(),
            rationale: g.rationale.clone(),
            granted_at: at(&g.granted_at).unwrap_or_default(),
            expires_at: at(&g.expires_at),
        })
        .collect();
    let overrides = t
        .overrides
        .iter()
        .map(|o| {
            Ok(Override {
                feature: o.feature.clone(),
                value: value_from(o.value.as_ref())?,
                actor: o.actor.clone(),
                rationale: o.rationale.clone(),
                set_at: at(&o.set_at).unwrap_or_default(),
                expires_at: at(&o.expires_at),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(TenantState {
        tenant_id: t.tenant_id.clone(),
        known,
        revision: t.revision,
        stripe_customer_id: (!t.stripe_customer_id.is_empty()).then(|| t.stripe_customer_id.clone()),
        trial: match (at(&t.trial_start), at(&t.trial_end)) {
            (Some(start), Some(end)) => Some(Trial { start, end }),
            _ => None,
        },
        archived: t.archived,
        subscriptions,
        plan_assignments: t
            .plan_assignments
            .iter()
            .map(|a| PlanAssignment {
                plan: a.plan.clone(),
                actor: a.actor.clone(),
                rationale: a.rationale.clone(),
                assigned_at: at(&a.assigned_at).unwrap_or_default(),
                expires_at: at(&a.expires_at),
            })
            .collect(),
        addon_grants,
        overrides,
        last_change: last_change.map(|c| Change {
            actor: c.actor.clone(),
            at: at(&c.at).unwrap_or_default(),
            rationale: c.rationale.clone(),
            origin: c.origin.clone(),
        }),
    })
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
        let lc = s.last_change.as_ref().map(change);
        assert_eq!(tenant_state(&tenant(&s), true, lc.as_ref()), Ok(s));
    }
}
