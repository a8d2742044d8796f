//! Stripe (SPEC §7): verify a webhook delivery with async-stripe and translate its typed event
//! into the facts the store applies. No IO here; the store applies [`Translation`]s in one
//! transaction each, and `http` answers Stripe.
//!
//! Built against async-stripe 1.0.0-rc.10, generated for Stripe API version `2026-09-30.endive`.

use std::collections::HashMap;

use stripe_webhook::{Event, EventObject, Webhook, WebhookError};

use crate::catalog::{Catalog, FeatureKind, PriceComponent, PriceTarget};
use crate::tenant::{AddOnGrant, GrantOrigin, Subscription, SubscriptionStatus, UnixTime, validate_tenant_id};

/// Why a delivery is refused (400): nothing about it is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing Stripe-Signature header")]
    MissingSignature,
    #[error("malformed Stripe-Signature header")]
    BadHeader,
    #[error("no configured endpoint secret matches the signature")]
    BadSignature,
    #[error("signature timestamp {0} is outside the 300 s tolerance")]
    BadTimestamp(i64),
    #[error("body is not a Stripe event: {0}")]
    NotAnEvent(String),
    #[error("event livemode={0} does not match this endpoint's mode")]
    LivemodeMismatch(bool),
}

/// The envelope of a verified event, and its raw body (stored verbatim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: String,
    pub event_type: String,
    pub created: UnixTime,
    pub livemode: bool,
    pub payload: String,
}

#[derive(serde::Deserialize)]
struct RawEnvelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    #[serde(default)]
    livemode: bool,
}

/// A verified delivery: its envelope, and the typed event or why it could not be parsed.
pub struct Verified {
    pub envelope: Envelope,
    pub event: Result<Event, String>,
}

/// Parse the envelope of a stored or delivered body.
pub fn envelope(payload: &str) -> Result<Envelope, String> {
    let raw: RawEnvelope = serde_json::from_str(payload).map_err(|e| e.to_string())?;
    Ok(Envelope {
        id: raw.id,
        event_type: raw.event_type,
        created: raw.created,
        livemode: raw.livemode,
        payload: payload.to_string(),
    })
}

/// Verify `Stripe-Signature` against every configured secret (rotation), then parse.
pub fn verify(
    payload: &str,
    header: Option<&str>,
    secrets: &[String],
    now: UnixTime,
    livemode: bool,
) -> Result<Verified, Rejection> {
    let header = header.filter(|h| !h.trim().is_empty()).ok_or(Rejection::MissingSignature)?;
    let mut verdict = Err(Rejection::BadSignature);
    for secret in secrets {
        match Webhook::construct_event_with_timestamp(payload, header, secret, now) {
            Ok(event) => {
                verdict = Ok(Ok(event));
                break;
            }
            Err(WebhookError::BadSignature | WebhookError::BadKey) => continue,
            Err(WebhookError::BadHeader(_)) => return Err(Rejection::BadHeader),
            Err(WebhookError::BadTimestamp(t)) => return Err(Rejection::BadTimestamp(t)),
            // The signature matched (parsing happens after the check); the body did not parse.
            Err(WebhookError::BadParse(e)) => {
                verdict = Ok(Err(e));
                break;
            }
        }
    }
    let event = verdict?;
    let envelope = envelope(payload).map_err(Rejection::NotAnEvent)?;
    if envelope.livemode != livemode {
        return Err(Rejection::LivemodeMismatch(envelope.livemode));
    }
    Ok(Verified { envelope, event })
}

/// Re-parse a stored, already verified body (replays after a catalog fix).
pub fn parse_stored(payload: &str) -> Result<Event, String> {
    serde_json::from_str::<Event>(payload).map_err(|e| e.to_string())
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
pub enum Change {
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

/// The facts of one event, and every mapping problem (unknown price, unknown add-on key…).
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    pub change: Change,
    pub errors: Vec<String>,
}

impl Translation {
    /// Whether the event may be applied despite its errors: errors never grant, so an event
    /// is applied only when it has none, or when it can only take access away.
    pub fn applicable(&self) -> bool {
        self.errors.is_empty()
            || match &self.change {
                Change::Subscription(f) => !f.subscription.status.entitles(),
                Change::EntitlementSummary { .. } => true,
                _ => false,
            }
    }
}

fn status(s: &stripe_shared::SubscriptionStatus) -> Result<SubscriptionStatus, String> {
    SubscriptionStatus::parse(s.as_str()).ok_or_else(|| format!("unknown subscription status `{}`", s.as_str()))
}

fn tenant_hint(metadata: Option<&HashMap<String, String>>, errors: &mut Vec<String>) -> Option<String> {
    let t = metadata?.get("tenant_id")?.trim().to_string();
    match validate_tenant_id(&t) {
        Ok(()) => Some(t),
        Err(e) => {
            errors.push(format!("metadata.tenant_id: {e}"));
            None
        }
    }
}

/// Map a Stripe subscription through the catalog's price map.
pub fn subscription_facts(
    catalog: &Catalog,
    sub: &stripe_shared::Subscription,
    event_id: &str,
    created: UnixTime,
    event_type: &str,
    errors: &mut Vec<String>,
) -> SubscriptionFacts {
    let status = status(&sub.status).unwrap_or_else(|e| {
        errors.push(e);
        SubscriptionStatus::Incomplete
    });
    let mut plan: Option<(i64, String)> = None;
    let mut interval = None;
    let mut seats: Option<i64> = None;
    let mut addons = Vec::new();
    let mut period = None;
    for item in &sub.items.data {
        let price_id = item.price.id.as_str();
        let quantity = i64::try_from(item.quantity.unwrap_or(1)).unwrap_or(i64::MAX);
        period.get_or_insert((item.current_period_start, item.current_period_end));
        let Some(price) = catalog.price(price_id) else {
            errors.push(format!("unknown price `{price_id}` on subscription item {}", item.id.as_str()));
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
                    seats = Some(seats.unwrap_or(0).saturating_add(quantity));
                }
            }
            PriceTarget::AddOn { addon } => addons.push(AddOnGrant {
                addon: addon.clone(),
                quantity,
                origin: GrantOrigin::Stripe {
                    subscription_id: sub.id.as_str().to_string(),
                    item_id: item.id.as_str().to_string(),
                },
                actor: "stripe".into(),
                rationale: format!("{event_type} {event_id}"),
                granted_at: created,
                expires_at: None,
            }),
        }
    }
    SubscriptionFacts {
        subscription: Subscription {
            id: sub.id.as_str().to_string(),
            status,
            plan: plan.map(|(_, k)| k),
            interval,
            seats,
            trial_end: sub.trial_end,
            current_period_start: period.map(|p| p.0),
            current_period_end: period.map(|p| p.1),
            cancel_at_period_end: sub.cancel_at_period_end,
            last_event_created: created,
            last_event_id: event_id.to_string(),
        },
        customer_id: sub.customer.id().as_str().to_string(),
        tenant_hint: tenant_hint(Some(&sub.metadata), errors),
        addons,
    }
}

/// Translate a typed event into what it changes.
pub fn translate(catalog: &Catalog, env: &Envelope, event: &Event) -> Translation {
    let mut errors = Vec::new();
    let change = match &event.data.object {
        EventObject::CustomerSubscriptionCreated(s)
        | EventObject::CustomerSubscriptionUpdated(s)
        | EventObject::CustomerSubscriptionDeleted(s)
        | EventObject::CustomerSubscriptionTrialWillEnd(s)
        | EventObject::CustomerSubscriptionPaused(s)
        | EventObject::CustomerSubscriptionResumed(s) => {
            Change::Subscription(subscription_facts(catalog, s, &env.id, env.created, &env.event_type, &mut errors))
        }
        EventObject::CheckoutSessionCompleted(cs) => {
            if cs.mode.as_str() != "subscription" {
                Change::Ignored
            } else if let Some(sub) = &cs.subscription {
                let hint = tenant_hint(cs.metadata.as_ref(), &mut errors).or_else(|| {
                    cs.client_reference_id.as_deref().filter(|c| validate_tenant_id(c).is_ok()).map(str::to_string)
                });
                let addon = cs.metadata.as_ref().and_then(|m| m.get("addon")).map(|a| a.trim().to_string());
                if let Some(a) = &addon
                    && catalog.addon(a).is_none()
                {
                    errors.push(format!("metadata.addon: unknown add-on `{a}`"));
                }
                Change::Checkout {
                    session_id: cs.id.as_str().to_string(),
                    tenant_hint: hint,
                    customer_id: cs.customer.as_ref().map(|c| c.id().as_str().to_string()),
                    subscription_id: sub.id().as_str().to_string(),
                    addon,
                }
            } else {
                errors.push("subscription-mode session without a subscription".into());
                Change::Ignored
            }
        }
        EventObject::InvoicePaid(inv) | EventObject::InvoicePaymentFailed(inv) => {
            let from_parent = inv
                .parent
                .as_ref()
                .and_then(|p| p.subscription_details.as_ref())
                .map(|d| d.subscription.id().as_str().to_string());
            let legacy = inv.subscription.as_ref().map(|s| s.id().as_str().to_string());
            Change::Invoice {
                customer_id: inv.customer.as_ref().map(|c| c.id().as_str().to_string()),
                subscription_id: from_parent.or(legacy),
                paid: matches!(event.data.object, EventObject::InvoicePaid(_)),
            }
        }
        EventObject::EntitlementsActiveEntitlementSummaryUpdated(s) => {
            let mut lookup_keys = Vec::new();
            for e in &s.entitlements.data {
                let key = e.lookup_key.clone();
                let known = catalog.addon(&key).is_some()
                    || catalog.feature(&key).is_some_and(|f| f.kind == FeatureKind::Boolean);
                if known {
                    lookup_keys.push(key);
                } else {
                    errors.push(format!("entitlement lookup key `{key}` is neither an add-on nor a boolean feature"));
                }
            }
            Change::EntitlementSummary { customer_id: s.customer.clone(), lookup_keys }
        }
        _ => Change::Ignored,
    };
    Translation { change, errors }
}
