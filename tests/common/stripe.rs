//! Stripe webhook deliveries as Stripe makes them: events built from the shapes in
//! `shared/stripe-fixtures/` (values edited, shapes kept), signed the way Stripe signs
//! (`Stripe-Signature: t=…,v1=HMAC-SHA256(secret, "t.body")`) and POSTed over real HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use entitlements::tenant::DAY;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::http::post;
use super::now;

/// `$ENTITLEMENTS_STRIPE_FIXTURES`, else `<manifest>/../shared/stripe-fixtures`, else
/// `/work/shared/stripe-fixtures`.
pub fn fixtures_dir() -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("ENTITLEMENTS_STRIPE_FIXTURES") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/stripe-fixtures"));
    candidates.push(PathBuf::from("/work/shared/stripe-fixtures"));
    for c in &candidates {
        if c.join("subscription.json").is_file() {
            return c.clone();
        }
    }
    panic!(
        "Stripe fixtures not found; tried {candidates:?}. Set ENTITLEMENTS_STRIPE_FIXTURES to the \
         directory holding subscription.json, checkout_session.json, invoice.json and event_envelope.json"
    );
}

pub fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// A subscription object from `subscription.json`: `items` are `(price id, quantity)`; each item
/// id is derived from the subscription and price, so it is stable across that subscription's events.
pub fn subscription(
    id: &str,
    customer: &str,
    tenant: Option<&str>,
    status: &str,
    items: &[(&str, u64)],
    trial_end: Option<i64>,
) -> Value {
    let mut s = fixture("subscription.json");
    let created = now() - 3600;
    let period_end = created + 30 * DAY;
    s["id"] = json!(id);
    s["customer"] = json!(customer);
    s["status"] = json!(status);
    s["created"] = json!(created);
    s["start_date"] = json!(created);
    s["billing_cycle_anchor"] = json!(created);
    s["metadata"] = match tenant {
        Some(t) => json!({ "tenant_id": t }),
        None => json!({}),
    };
    s["trial_start"] = if trial_end.is_some() { json!(created) } else { Value::Null };
    s["trial_end"] = json!(trial_end);
    s["cancel_at_period_end"] = json!(false);
    s["cancel_at"] = Value::Null;
    let ended = matches!(status, "canceled" | "incomplete_expired");
    s["canceled_at"] = if ended { json!(now()) } else { Value::Null };
    s["ended_at"] = if ended { json!(now()) } else { Value::Null };
    s["next_pending_invoice_item_invoice"] = Value::Null;
    let template = s["items"]["data"][0].clone();
    let data: Vec<Value> = items
        .iter()
        .map(|(price, quantity)| {
            let interval = if price.contains("annual") { "year" } else { "month" };
            let mut item = template.clone();
            item["id"] = json!(format!("si_{id}_{price}"));
            item["created"] = json!(created);
            item["quantity"] = json!(quantity);
            item["subscription"] = json!(id);
            item["current_period_start"] = json!(created);
            item["current_period_end"] = json!(period_end);
            item["price"]["id"] = json!(price);
            item["price"]["recurring"]["interval"] = json!(interval);
            item["plan"]["id"] = json!(price);
            item["plan"]["interval"] = json!(interval);
            item["plan"]["interval_count"] = json!(1);
            item
        })
        .collect();
    s["items"]["data"] = json!(data);
    s["items"]["url"] = json!(format!("/v1/subscription_items?subscription={id}"));
    s
}

/// A completed subscription-mode checkout session from `checkout_session.json`; `tenant` and
/// `addon` go into its metadata.
pub fn checkout_session(session: &str, customer: &str, sub: &str, tenant: Option<&str>, addon: Option<&str>) -> Value {
    let mut cs = fixture("checkout_session.json");
    cs["id"] = json!(session);
    cs["mode"] = json!("subscription");
    cs["status"] = json!("complete");
    cs["payment_status"] = json!("paid");
    cs["payment_intent"] = Value::Null;
    cs["customer"] = json!(customer);
    cs["subscription"] = json!(sub);
    cs["created"] = json!(now() - 60);
    cs["url"] = Value::Null;
    let mut metadata = serde_json::Map::new();
    if let Some(t) = tenant {
        metadata.insert("tenant_id".into(), json!(t));
    }
    if let Some(a) = addon {
        metadata.insert("addon".into(), json!(a));
    }
    cs["metadata"] = Value::Object(metadata);
    cs
}

/// An invoice of a subscription from `invoice.json`.
pub fn invoice(id: &str, customer: &str, sub: &str, paid: bool) -> Value {
    let mut inv = fixture("invoice.json");
    inv["id"] = json!(id);
    inv["customer"] = json!(customer);
    inv["status"] = json!(if paid { "paid" } else { "open" });
    inv["attempted"] = json!(true);
    inv["attempt_count"] = json!(1);
    inv["billing_reason"] = json!("subscription_cycle");
    inv["amount_paid"] = json!(if paid { 1000 } else { 0 });
    inv["amount_remaining"] = json!(if paid { 0 } else { 1000 });
    inv["parent"]["type"] = json!("subscription_details");
    inv["parent"]["quote_details"] = Value::Null;
    inv["parent"]["subscription_details"]["subscription"] = json!(sub);
    inv["lines"]["data"][0]["invoice"] = json!(id);
    inv["lines"]["data"][0]["parent"]["subscription_item_details"]["subscription"] = json!(sub);
    inv
}

/// Wrap an object in `event_envelope.json`; the body exactly as it goes over the wire.
pub fn event(id: &str, event_type: &str, created: i64, object: Value) -> String {
    let mut e = fixture("event_envelope.json");
    e["id"] = json!(id);
    e["type"] = json!(event_type);
    e["created"] = json!(created);
    e["livemode"] = json!(false);
    e["pending_webhooks"] = json!(1);
    e["data"]["object"] = object;
    serde_json::to_string(&e).expect("serialize event")
}

/// `Stripe-Signature` as Stripe computes it: `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// POST `body` to `/webhooks/stripe`, signed with `secret` now; (status, reply).
pub async fn post_event(addr: SocketAddr, body: &str, secret: &str) -> (u16, String) {
    post(addr, "/webhooks/stripe", &[("Stripe-Signature", sign(secret, now(), body))], body.as_bytes()).await
}
