//! Stripe (SPEC §7): verify a webhook delivery with async-stripe and translate its typed event
//! into the core's [`crate::billing`] facts (the price map and every rule live there). No IO
//! here; the store applies [`Translation`]s in one transaction each, and `http` answers Stripe.
//!
//! Built against async-stripe 1.0.0-rc.10, generated for Stripe API version `2026-09-30.endive`.

use stripe_webhook::{Event, EventObject, Webhook, WebhookError};

use crate::billing::{self, EventRef, Fact, Item, SubscriptionObject, Translation};
use crate::catalog::Catalog;
use crate::tenant::{UnixTime, validate_tenant_id};

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
    /// The event carries a NUL character: it is stored as failed and refused (400), since no
    /// retry can make it storable.
    pub has_nul: bool,
}

/// What a stored event carrying NUL failed with.
pub const NUL_ERROR: &str = "the event contains a NUL character (\\u0000), which cannot be stored";

/// Parse the envelope of a stored or delivered body. NULs in its id and type are spelled out
/// (`\0`) so that the event can still be stored and listed.
pub fn envelope(payload: &str) -> Result<Envelope, String> {
    let raw: RawEnvelope = serde_json::from_str(payload).map_err(|e| e.to_string())?;
    let spell = |s: String| if s.contains('\0') { s.replace('\0', "\\0") } else { s };
    Ok(Envelope {
        id: spell(raw.id),
        event_type: spell(raw.event_type),
        created: raw.created,
        livemode: raw.livemode,
        payload: payload.to_string(),
    })
}

/// Whether the JSON text holds a NUL in some string: the only way to write one is the escape
/// `\u0000` (a raw control character is not valid JSON), not itself escaped (`\\u0000`).
pub fn has_nul(payload: &str) -> bool {
    payload.match_indices("u0000").any(|(i, _)| {
        let slashes = payload[..i].bytes().rev().take_while(|&b| b == b'\\').count();
        slashes % 2 == 1
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
    let has_nul = has_nul(payload);
    let event = if has_nul { Err(NUL_ERROR.to_string()) } else { event };
    Ok(Verified { envelope, event, has_nul })
}

/// Re-parse a stored, already verified body (replays after a catalog fix), exactly as delivery
/// parsed it: through async-stripe's verifying entry point, signed here with a throwaway key
/// (its parser is not public otherwise, and a different parser read some events differently:
/// fuzz finding F1).
pub fn parse_stored(payload: &str) -> Result<Event, String> {
    const REPLAY_KEY: &str = "whsec_replay_of_a_verified_body";
    if has_nul(payload) {
        return Err(NUL_ERROR.to_string());
    }
    let header = Webhook::generate_test_header(payload, REPLAY_KEY, Some(0));
    // The same words as on delivery (`verify` keeps `BadParse`'s own message).
    Webhook::construct_event_with_timestamp(payload, &header, REPLAY_KEY, 0).map_err(|e| match e {
        WebhookError::BadParse(m) => m,
        e => e.to_string(),
    })
}

/// A Stripe subscription as plain data, for the core's price map.
fn subscription_object(sub: &stripe_shared::Subscription) -> SubscriptionObject {
    SubscriptionObject {
        id: sub.id.as_str().to_string(),
        status: sub.status.as_str().to_string(),
        customer_id: sub.customer.id().as_str().to_string(),
        tenant_id: sub.metadata.get("tenant_id").cloned(),
        items: sub
            .items
            .data
            .iter()
            .map(|item| Item {
                id: item.id.as_str().to_string(),
                price_id: item.price.id.as_str().to_string(),
                quantity: i64::try_from(item.quantity.unwrap_or(1)).unwrap_or(i64::MAX),
                current_period_start: item.current_period_start,
                current_period_end: item.current_period_end,
            })
            .collect(),
        trial_end: sub.trial_end,
        cancel_at_period_end: sub.cancel_at_period_end,
    }
}

fn checkout(catalog: &Catalog, cs: &stripe_shared::CheckoutSession, errors: &mut Vec<String>) -> Fact {
    if cs.mode.as_str() != "subscription" {
        return Fact::Ignored;
    }
    let Some(sub) = &cs.subscription else {
        errors.push("subscription-mode session without a subscription".into());
        return Fact::Ignored;
    };
    let metadata = |key: &str| cs.metadata.as_ref().and_then(|m| m.get(key)).map(String::as_str);
    let hint = billing::tenant_hint(metadata("tenant_id"), errors)
        .or_else(|| cs.client_reference_id.as_deref().filter(|c| validate_tenant_id(c).is_ok()).map(str::to_string));
    Fact::Checkout {
        session_id: cs.id.as_str().to_string(),
        tenant_hint: hint,
        customer_id: cs.customer.as_ref().map(|c| c.id().as_str().to_string()),
        subscription_id: sub.id().as_str().to_string(),
        addon: billing::checkout_addon(catalog, metadata("addon"), errors),
    }
}

/// Translate a typed event into the core's facts.
pub fn translate(catalog: &Catalog, env: &Envelope, event: &Event) -> Translation {
    let mut errors = Vec::new();
    let at = EventRef { id: env.id.clone(), event_type: env.event_type.clone(), created: env.created };
    let fact = match &event.data.object {
        EventObject::CustomerSubscriptionCreated(s)
        | EventObject::CustomerSubscriptionUpdated(s)
        | EventObject::CustomerSubscriptionDeleted(s)
        | EventObject::CustomerSubscriptionTrialWillEnd(s)
        | EventObject::CustomerSubscriptionPaused(s)
        | EventObject::CustomerSubscriptionResumed(s) => {
            Fact::Subscription(billing::subscription_facts(catalog, &subscription_object(s), &at, &mut errors))
        }
        EventObject::CheckoutSessionCompleted(cs) => checkout(catalog, cs, &mut errors),
        EventObject::InvoicePaid(inv) | EventObject::InvoicePaymentFailed(inv) => {
            let from_parent = inv
                .parent
                .as_ref()
                .and_then(|p| p.subscription_details.as_ref())
                .map(|d| d.subscription.id().as_str().to_string());
            let legacy = inv.subscription.as_ref().map(|s| s.id().as_str().to_string());
            Fact::Invoice {
                customer_id: inv.customer.as_ref().map(|c| c.id().as_str().to_string()),
                subscription_id: from_parent.or(legacy),
                paid: matches!(event.data.object, EventObject::InvoicePaid(_)),
            }
        }
        EventObject::EntitlementsActiveEntitlementSummaryUpdated(s) => {
            let keys = s.entitlements.data.iter().map(|e| e.lookup_key.clone()).collect();
            let lookup_keys = billing::summary_keys(catalog, keys, &mut errors);
            Fact::EntitlementSummary { customer_id: s.customer.clone(), lookup_keys }
        }
        _ => Fact::Ignored,
    };
    Translation { fact, errors }
}

#[cfg(test)]
mod tests {
    use super::has_nul;

    #[test]
    fn nul_is_the_unescaped_escape_only() {
        assert!(has_nul(r#"{"id":"evt_\u0000"}"#));
        assert!(has_nul(r#"{"id":"a\\\u0000"}"#));
        assert!(!has_nul(r#"{"id":"a\\u0000"}"#));
        assert!(!has_nul(r#"{"id":"u0000"}"#));
    }
}
