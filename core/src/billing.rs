//! Billing facts (SPEC §7): what a Stripe event says, mapped through the catalog's price map,
//! and what it does to a tenant. The shell verifies and parses the webhook, extracts the plain
//! facts below, finds the tenant and stores the result; every rule lives here.
//!
//! **One ordering rule** ([`supersedes`]) decides whether any fact may replace what is stored:
//! subscription events, invoices and entitlement summaries alike.

use serde_json::json;

use crate::catalog::{Catalog, FeatureKind, PriceComponent, PriceTarget};
use crate::command::{Actor, AuditEntry, stamp, upsert_by};
use crate::tenant::{
    AddOnGrant, GrantOrigin, Subscription, SubscriptionStatus, TenantState, UnixTime, validate_tenant_id,
};

/// Whether a fact created at `incoming_created` may replace one created at `stored_created`.
/// Stripe does not order deliveries, so: a newer fact wins, an older one never undoes a newer
/// one, and at equal seconds (common) a status never moves backwards — an ended subscription
/// stays ended, an active one does not fall back to trialing.
pub fn supersedes(
    stored_created: UnixTime,
    stored: SubscriptionStatus,
    incoming_created: UnixTime,
    incoming: SubscriptionStatus,
) -> bool {
    incoming_created > stored_created
        || (incoming_created == stored_created && incoming.progress() >= stored.progress())
}

/// The event a fact came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    pub id: String,
    pub event_type: String,
    pub created: UnixTime,
}

impl EventRef {
    /// The rationale recorded on grants the event creates.
    fn rationale(&self) -> String {
        format!("{} {}", self.event_type, self.id)
    }
}

/// One item of a Stripe subscription, as the price map needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    pub price_id: String,
    pub quantity: i64,
    pub current_period_start: UnixTime,
    pub current_period_end: UnixTime,
}

/// A Stripe subscription object, reduced to plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionObject {
    pub id: String,
    /// Stripe's status string.
    pub status: String,
    pub customer_id: String,
    /// `metadata.tenant_id`, as sent.
    pub tenant_id: Option<String>,
    pub items: Vec<Item>,
    pub trial_end: Option<UnixTime>,
    pub cancel_at_period_end: bool,
}

/// What a subscription looks like after this event.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionFacts {
    pub subscription: Subscription,
    pub customer_id: String,
    /// `metadata.tenant_id`.
    pub tenant_hint: Option<String>,
    /// Add-on grants of its items, keyed by (subscription, item).
    pub addons: Vec<AddOnGrant>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    Subscription(SubscriptionFacts),
    /// `checkout.session.completed` in subscription mode.
    Checkout {
        session_id: String,
        tenant_hint: Option<String>,
        customer_id: Option<String>,
        subscription_id: String,
        addon: Option<String>,
    },
    /// `invoice.paid` / `invoice.payment_failed`.
    Invoice {
        customer_id: Option<String>,
        subscription_id: Option<String>,
        paid: bool,
    },
    /// The customer's active Stripe Entitlements, by lookup key.
    EntitlementSummary {
        customer_id: String,
        lookup_keys: Vec<String>,
    },
    /// An event type this service does not act on.
    Ignored,
}

impl Fact {
    /// The Stripe customer the fact is about.
    pub fn customer(&self) -> Option<&str> {
        match self {
            Fact::Subscription(f) => Some(&f.customer_id),
            Fact::Checkout { customer_id, .. } | Fact::Invoice { customer_id, .. } => customer_id.as_deref(),
            Fact::EntitlementSummary { customer_id, .. } => Some(customer_id),
            Fact::Ignored => None,
        }
    }

    /// The tenant the event names itself (metadata or client reference), if any.
    pub fn tenant_hint(&self) -> Option<&str> {
        match self {
            Fact::Subscription(f) => f.tenant_hint.as_deref(),
            Fact::Checkout { tenant_hint, .. } => tenant_hint.as_deref(),
            _ => None,
        }
    }
}

/// The facts of one event, and every mapping problem (unknown price, unknown add-on…).
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    pub fact: Fact,
    pub errors: Vec<String>,
}

impl Translation {
    /// Whether the event may be applied despite its errors: errors never grant, so an event
    /// is applied only when it has none, or when it can only take access away.
    pub fn applicable(&self) -> bool {
        self.errors.is_empty()
            || match &self.fact {
                Fact::Subscription(f) => !f.subscription.status.entitles(),
                Fact::EntitlementSummary { .. } => true,
                _ => false,
            }
    }
}

/// A tenant id the event names, if it is a valid one (an invalid one is a mapping error).
pub fn tenant_hint(raw: Option<&str>, errors: &mut Vec<String>) -> Option<String> {
    let t = raw?.trim().to_string();
    match validate_tenant_id(&t) {
        Ok(()) => Some(t),
        Err(e) => {
            errors.push(format!("metadata.tenant_id: {e}"));
            None
        }
    }
}

/// Map a subscription through the catalog's price map: the highest-ranked plan among its items,
/// seats from seat-priced items, add-on grants from add-on items.
pub fn subscription_facts(
    catalog: &Catalog,
    sub: &SubscriptionObject,
    event: &EventRef,
    errors: &mut Vec<String>,
) -> SubscriptionFacts {
    let status = SubscriptionStatus::parse(&sub.status).unwrap_or_else(|| {
        errors.push(format!("unknown subscription status `{}`", sub.status));
        SubscriptionStatus::Incomplete
    });
    let mut plan: Option<(i64, String)> = None;
    let (mut interval, mut seats, mut addons) = (None, None::<i64>, Vec::new());
    for item in &sub.items {
        let Some(price) = catalog.price(&item.price_id) else {
            errors.push(format!("unknown price `{}` on subscription item {}", item.price_id, item.id));
            continue;
        };
        interval = Some(price.interval);
        match &price.target {
            PriceTarget::Plan { plan: key, component } => {
                let rank = catalog.plan(key).map_or(i64::MIN, |p| p.rank);
                if plan.as_ref().is_none_or(|(r, _)| rank > *r) {
                    plan = Some((rank, key.clone()));
                }
                if *component == PriceComponent::Seat {
                    seats = Some(seats.unwrap_or(0).saturating_add(item.quantity));
                }
            }
            PriceTarget::AddOn { addon } => addons.push(AddOnGrant {
                addon: addon.clone(),
                quantity: item.quantity,
                origin: GrantOrigin::Stripe { subscription_id: sub.id.clone(), item_id: item.id.clone() },
                actor: "stripe".into(),
                rationale: event.rationale(),
                granted_at: event.created,
                expires_at: None,
            }),
        }
    }
    let period = sub.items.first().map(|i| (i.current_period_start, i.current_period_end));
    SubscriptionFacts {
        subscription: Subscription {
            id: sub.id.clone(),
            status,
            plan: plan.map(|(_, k)| k),
            interval,
            seats,
            trial_end: sub.trial_end,
            current_period_start: period.map(|p| p.0),
            current_period_end: period.map(|p| p.1),
            cancel_at_period_end: sub.cancel_at_period_end,
            last_event_created: event.created,
            last_event_id: event.id.clone(),
        },
        customer_id: sub.customer_id.clone(),
        tenant_hint: tenant_hint(sub.tenant_id.as_deref(), errors),
        addons,
    }
}

/// The add-on a checkout session's `metadata.addon` names; an unknown one is a mapping error.
pub fn checkout_addon(catalog: &Catalog, raw: Option<&str>, errors: &mut Vec<String>) -> Option<String> {
    let addon = raw?.trim().to_string();
    if catalog.addon(&addon).is_none() {
        errors.push(format!("metadata.addon: unknown add-on `{addon}`"));
    }
    Some(addon)
}

/// The lookup keys of an entitlement summary that name an add-on or a boolean feature.
pub fn summary_keys(catalog: &Catalog, keys: Vec<String>, errors: &mut Vec<String>) -> Vec<String> {
    keys.into_iter()
        .filter(|key| {
            let known =
                catalog.addon(key).is_some() || catalog.feature(key).is_some_and(|f| f.kind == FeatureKind::Boolean);
            if !known {
                errors.push(format!("entitlement lookup key `{key}` is neither an add-on nor a boolean feature"));
            }
            known
        })
        .collect()
}

/// What a fact did to the tenant.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Applied: the tenant's next state is in place; the audit log records this.
    Applied(AuditEntry),
    /// Older than what is stored: changes nothing.
    Stale,
    /// Nothing to do (e.g. an invoice that moves no status).
    Ignored,
}

/// Link a customer to a tenant that has none yet; true when newly linked.
pub fn link_customer(state: &mut TenantState, customer: Option<&str>) -> bool {
    match (customer, &state.stripe_customer_id) {
        (Some(c), None) => {
            state.stripe_customer_id = Some(c.to_string());
            true
        }
        _ => false,
    }
}

fn grants_of<'a>(state: &'a TenantState, sub: &'a str) -> impl Iterator<Item = &'a AddOnGrant> + 'a {
    state
        .addon_grants
        .iter()
        .filter(move |g| matches!(&g.origin, GrantOrigin::Stripe { subscription_id, .. } if subscription_id == sub))
}

fn grant_key(g: &AddOnGrant) -> (String, String) {
    (g.addon.clone(), g.origin.key())
}

/// A subscription event. `stored` is the subscription as last stored (possibly under another
/// tenant). The items decide the subscription's add-on grants (this also replaces a grant a
/// checkout session recorded before the subscription's own events arrived).
pub fn apply_subscription(
    state: &mut TenantState,
    stored: Option<&Subscription>,
    f: &SubscriptionFacts,
    by: &Actor,
) -> Effect {
    let sub = &f.subscription;
    if let Some(s) = stored
        && !supersedes(s.last_event_created, s.status, sub.last_event_created, sub.status)
    {
        return Effect::Stale;
    }
    let grants_before: Vec<AddOnGrant> = grants_of(state, &sub.id).cloned().collect();
    upsert_by(&mut state.subscriptions, sub.clone(), |s| s.id.clone());
    state
        .addon_grants
        .retain(|g| !matches!(&g.origin, GrantOrigin::Stripe { subscription_id, .. } if subscription_id == &sub.id));
    for g in &f.addons {
        upsert_by(&mut state.addon_grants, g.clone(), grant_key);
    }
    stamp(state, by);
    Effect::Applied(AuditEntry {
        action: "stripe_subscription",
        before: json!({ "subscription": stored, "addon_grants": grants_before }),
        after: json!({ "subscription": sub, "addon_grants": f.addons }),
    })
}

/// A completed checkout session. `subscription_known`: some tenant already stores the
/// subscription. A completed session means a live subscription; until its own events (which
/// carry the items and status) arrive, a provisional row stands in — any real event is newer
/// than its `created = 0`.
pub fn apply_checkout(
    state: &mut TenantState,
    subscription_known: bool,
    session_id: &str,
    subscription_id: &str,
    addon: Option<&str>,
    event: &EventRef,
    by: &Actor,
) -> Effect {
    if !subscription_known {
        let provisional = Subscription {
            id: subscription_id.to_string(),
            status: SubscriptionStatus::Active,
            plan: None,
            interval: None,
            seats: None,
            trial_end: None,
            current_period_start: None,
            current_period_end: None,
            cancel_at_period_end: false,
            last_event_created: 0,
            last_event_id: event.id.clone(),
        };
        upsert_by(&mut state.subscriptions, provisional, |s| s.id.clone());
    }
    let mut granted = None;
    if let Some(addon) = addon
        && !grants_of(state, subscription_id).any(|g| g.addon == addon)
    {
        let g = AddOnGrant {
            addon: addon.to_string(),
            quantity: 1,
            origin: GrantOrigin::Stripe {
                subscription_id: subscription_id.to_string(),
                item_id: format!("checkout:{session_id}"),
            },
            actor: "stripe".into(),
            rationale: event.rationale(),
            granted_at: event.created,
            expires_at: None,
        };
        upsert_by(&mut state.addon_grants, g.clone(), grant_key);
        granted = Some(g);
    }
    stamp(state, by);
    Effect::Applied(AuditEntry {
        action: "stripe_checkout",
        before: serde_json::Value::Null,
        after: json!({ "checkout_session": session_id, "subscription": subscription_id, "addon_grant": granted }),
    })
}

/// An invoice: paid moves a past-due (or unpaid) subscription back to active, a failed payment
/// moves an active (or trialing) one to past due; anything else is left to the subscription's
/// own events.
pub fn apply_invoice(
    state: &mut TenantState,
    subscription_id: &str,
    paid: bool,
    event: &EventRef,
    by: &Actor,
) -> Effect {
    let Some(sub) = state.subscriptions.iter().find(|s| s.id == subscription_id).cloned() else {
        return Effect::Ignored;
    };
    let next = match (paid, sub.status) {
        (true, SubscriptionStatus::PastDue | SubscriptionStatus::Unpaid) => SubscriptionStatus::Active,
        (false, SubscriptionStatus::Active | SubscriptionStatus::Trialing) => SubscriptionStatus::PastDue,
        _ => return Effect::Ignored,
    };
    if !supersedes(sub.last_event_created, sub.status, event.created, next) {
        return Effect::Stale;
    }
    let updated = Subscription {
        status: next,
        last_event_created: event.created,
        last_event_id: event.id.clone(),
        ..sub.clone()
    };
    upsert_by(&mut state.subscriptions, updated.clone(), |s| s.id.clone());
    stamp(state, by);
    Effect::Applied(AuditEntry {
        action: "stripe_invoice",
        before: json!({ "subscription": sub }),
        after: json!({ "subscription": updated }),
    })
}

/// An active entitlement summary replaces every grant the previous summary made. `newest` is
/// the `created` of the newest summary already applied to this tenant.
pub fn apply_summary(
    state: &mut TenantState,
    newest: Option<UnixTime>,
    keys: &[String],
    event: &EventRef,
    by: &Actor,
) -> Effect {
    // Summaries carry no status: compare them as equals, by time only.
    let same = SubscriptionStatus::Active;
    if newest.is_some_and(|n| !supersedes(n, same, event.created, same)) {
        return Effect::Stale;
    }
    let before: Vec<String> = state
        .addon_grants
        .iter()
        .filter_map(|g| match &g.origin {
            GrantOrigin::StripeEntitlement { lookup_key } => Some(lookup_key.clone()),
            _ => None,
        })
        .collect();
    state.addon_grants.retain(|g| !matches!(g.origin, GrantOrigin::StripeEntitlement { .. }));
    for key in keys {
        let g = AddOnGrant {
            addon: key.clone(),
            quantity: 1,
            origin: GrantOrigin::StripeEntitlement { lookup_key: key.clone() },
            actor: "stripe".into(),
            rationale: event.rationale(),
            granted_at: event.created,
            expires_at: None,
        };
        upsert_by(&mut state.addon_grants, g, grant_key);
    }
    stamp(state, by);
    Effect::Applied(AuditEntry { action: "stripe_entitlements", before: json!(before), after: json!(keys) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscriptionStatus::*;

    #[test]
    fn event_ordering() {
        assert!(supersedes(10, Active, 11, Trialing));
        assert!(!supersedes(11, Active, 10, Canceled), "older never wins");
        assert!(supersedes(10, Trialing, 10, Active));
        assert!(!supersedes(10, Active, 10, Trialing));
        assert!(!supersedes(10, Canceled, 10, Active), "ended stays ended");
        assert!(supersedes(10, Active, 10, PastDue));
        assert!(supersedes(10, PastDue, 10, Active));
    }

    fn sub(id: &str, status: SubscriptionStatus, created: UnixTime) -> Subscription {
        Subscription {
            id: id.into(),
            status,
            plan: Some("pro".into()),
            interval: None,
            seats: None,
            trial_end: None,
            current_period_start: None,
            current_period_end: None,
            cancel_at_period_end: false,
            last_event_created: created,
            last_event_id: format!("evt_{created}"),
        }
    }

    fn event(created: UnixTime) -> EventRef {
        EventRef { id: format!("evt_{created}"), event_type: "invoice.paid".into(), created }
    }

    fn stripe(at: UnixTime) -> Actor {
        Actor { actor: "stripe".into(), rationale: "test".into(), origin: "evt".into(), at }
    }

    #[test]
    fn invoices_move_status_and_respect_order() {
        let mut s = TenantState::unknown("acme");
        s.subscriptions.push(sub("sub_1", Active, 100));
        assert_eq!(apply_invoice(&mut s, "sub_1", true, &event(101), &stripe(1)), Effect::Ignored, "paid + active");
        assert_eq!(apply_invoice(&mut s, "sub_1", false, &event(99), &stripe(1)), Effect::Stale);
        assert!(matches!(apply_invoice(&mut s, "sub_1", false, &event(100), &stripe(1)), Effect::Applied(_)));
        assert_eq!(s.subscriptions[0].status, PastDue);
        assert_eq!(s.revision, 1);
        assert!(matches!(apply_invoice(&mut s, "sub_1", true, &event(100), &stripe(1)), Effect::Applied(_)));
        assert_eq!(s.subscriptions[0].status, Active);
    }

    #[test]
    fn summary_replaces_its_own_grants_only() {
        let mut s = TenantState::unknown("acme");
        let keys = vec!["teams".to_string(), "entra_sync".to_string()];
        assert!(matches!(apply_summary(&mut s, None, &keys, &event(10), &stripe(1)), Effect::Applied(_)));
        assert_eq!(s.addon_grants.len(), 2);
        assert_eq!(apply_summary(&mut s, Some(11), &[], &event(10), &stripe(1)), Effect::Stale);
        assert!(matches!(apply_summary(&mut s, Some(10), &[], &event(10), &stripe(1)), Effect::Applied(_)));
        assert!(s.addon_grants.is_empty());
    }

    #[test]
    fn checkout_grants_once_and_records_a_provisional_subscription() {
        let mut s = TenantState::unknown("acme");
        let e = event(5);
        apply_checkout(&mut s, false, "cs_1", "sub_1", Some("teams"), &e, &stripe(1));
        apply_checkout(&mut s, true, "cs_2", "sub_1", Some("teams"), &e, &stripe(2));
        assert_eq!(s.subscriptions.len(), 1);
        assert_eq!(s.subscriptions[0].last_event_created, 0);
        assert_eq!(s.addon_grants.len(), 1, "the same add-on on the same subscription is granted once");
    }
}
