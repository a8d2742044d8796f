//! Tenant state: everything the store knows about one tenant, the input of [`crate::resolve`].
//!
//! Plain data, no behaviour beyond validation of identifiers. Times are unix seconds.

use serde::{Deserialize, Serialize};

use crate::catalog::{Interval, Value};

/// Unix time in seconds. The core never reads a clock; callers pass `now`.
pub type UnixTime = i64;

pub const DAY: i64 = 86_400;

/// Stripe subscription status (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Trialing,
    Active,
    PastDue,
    Unpaid,
    Canceled,
    Incomplete,
    IncompleteExpired,
    Paused,
}

impl SubscriptionStatus {
    /// `trialing`, `active` and `past_due` entitle; everything else does not.
    pub fn entitles(self) -> bool {
        matches!(self, Self::Trialing | Self::Active | Self::PastDue)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Unpaid => "unpaid",
            Self::Canceled => "canceled",
            Self::Incomplete => "incomplete",
            Self::IncompleteExpired => "incomplete_expired",
            Self::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "trialing" => Self::Trialing,
            "active" => Self::Active,
            "past_due" => Self::PastDue,
            "unpaid" => Self::Unpaid,
            "canceled" => Self::Canceled,
            "incomplete" => Self::Incomplete,
            "incomplete_expired" => Self::IncompleteExpired,
            "paused" => Self::Paused,
            _ => return None,
        })
    }
}

impl SubscriptionStatus {
    /// How far along its life a subscription is; terminal states rank highest.
    pub(crate) fn progress(self) -> u8 {
        match self {
            Self::Incomplete => 0,
            Self::Trialing => 1,
            Self::Active | Self::PastDue | Self::Unpaid | Self::Paused => 2,
            Self::Canceled | Self::IncompleteExpired => 3,
        }
    }
}

/// A subscription mirrored from Stripe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub status: SubscriptionStatus,
    /// Plan key from the price map; `None` for add-on-only subscriptions.
    pub plan: Option<String>,
    pub interval: Option<Interval>,
    /// Seat quantity of a seat-priced plan.
    pub seats: Option<i64>,
    pub trial_end: Option<UnixTime>,
    pub current_period_start: Option<UnixTime>,
    pub current_period_end: Option<UnixTime>,
    pub cancel_at_period_end: bool,
    /// `created` of the last Stripe event applied to this subscription.
    pub last_event_created: UnixTime,
    pub last_event_id: String,
}

/// A manual plan assignment (enterprise contract, courtesy upgrade).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanAssignment {
    pub plan: String,
    pub actor: String,
    pub rationale: String,
    pub assigned_at: UnixTime,
    pub expires_at: Option<UnixTime>,
}

/// Where an add-on grant comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum GrantOrigin {
    Manual,
    /// A Stripe subscription item: active exactly while that subscription entitles.
    Stripe {
        subscription_id: String,
        item_id: String,
    },
    /// A Stripe Entitlements lookup key (an add-on key or a boolean feature key): active while
    /// the customer's active entitlement summary lists it.
    StripeEntitlement {
        lookup_key: String,
    },
}

impl GrantOrigin {
    /// The identity of a grant's source: one grant per (add-on, key), so a re-delivered grant
    /// replaces itself and a checkout session and its subscription's events converge.
    /// `manual`, `stripe:<subscription>:<item>` or `stripe-entitlement:<lookup key>`.
    pub fn key(&self) -> String {
        match self {
            GrantOrigin::Manual => "manual".into(),
            GrantOrigin::Stripe { subscription_id, item_id } => format!("stripe:{subscription_id}:{item_id}"),
            GrantOrigin::StripeEntitlement { lookup_key } => format!("stripe-entitlement:{lookup_key}"),
        }
    }

    /// The origin a [`GrantOrigin::key`] names (Stripe subscription ids never contain `:`).
    pub fn from_key(key: &str) -> Option<GrantOrigin> {
        if key == "manual" {
            return Some(GrantOrigin::Manual);
        }
        if let Some(lookup_key) = key.strip_prefix("stripe-entitlement:") {
            return Some(GrantOrigin::StripeEntitlement { lookup_key: lookup_key.into() });
        }
        let (subscription_id, item_id) = key.strip_prefix("stripe:")?.split_once(':')?;
        Some(GrantOrigin::Stripe { subscription_id: subscription_id.into(), item_id: item_id.into() })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddOnGrant {
    pub addon: String,
    pub quantity: i64,
    pub origin: GrantOrigin,
    pub actor: String,
    pub rationale: String,
    pub granted_at: UnixTime,
    pub expires_at: Option<UnixTime>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Override {
    pub feature: String,
    pub value: Value,
    pub actor: String,
    pub rationale: String,
    pub set_at: UnixTime,
    pub expires_at: Option<UnixTime>,
}

/// The product-led free trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    pub start: UnixTime,
    pub end: UnixTime,
}

/// Who changed the tenant last, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Change {
    pub actor: String,
    pub at: UnixTime,
    pub rationale: String,
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TenantState {
    pub tenant_id: String,
    /// False when the store has never heard of this tenant (it resolves to the default plan).
    pub known: bool,
    pub revision: u64,
    pub stripe_customer_id: Option<String>,
    pub trial: Option<Trial>,
    pub archived: bool,
    pub subscriptions: Vec<Subscription>,
    pub plan_assignments: Vec<PlanAssignment>,
    pub addon_grants: Vec<AddOnGrant>,
    pub overrides: Vec<Override>,
    pub last_change: Option<Change>,
}

impl TenantState {
    pub fn unknown(tenant_id: &str) -> TenantState {
        TenantState { tenant_id: tenant_id.to_string(), ..Default::default() }
    }
}

/// Why a tenant id is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TenantIdError {
    #[error("tenant_id is empty")]
    Empty,
    #[error("tenant_id is longer than 128 characters")]
    TooLong,
    #[error("tenant_id may only contain A-Z a-z 0-9 . _ : -")]
    BadCharacter,
}

/// Tenant ids are opaque: 1–128 chars of `[A-Za-z0-9._:-]`.
pub fn validate_tenant_id(id: &str) -> Result<(), TenantIdError> {
    if id.is_empty() {
        return Err(TenantIdError::Empty);
    }
    if id.len() > 128 {
        return Err(TenantIdError::TooLong);
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')) {
        return Err(TenantIdError::BadCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_origin_keys_round_trip() {
        for o in [
            GrantOrigin::Manual,
            GrantOrigin::Stripe { subscription_id: "sub_1".into(), item_id: "checkout:cs_1".into() },
            GrantOrigin::StripeEntitlement { lookup_key: "teams".into() },
        ] {
            assert_eq!(GrantOrigin::from_key(&o.key()), Some(o));
        }
        assert_eq!(GrantOrigin::from_key("stripe:nocolon"), None);
    }

    #[test]
    fn tenant_ids() {
        assert_eq!(validate_tenant_id(""), Err(TenantIdError::Empty));
        assert_eq!(validate_tenant_id(&"a".repeat(129)), Err(TenantIdError::TooLong));
        assert!(validate_tenant_id(&"a".repeat(128)).is_ok());
        assert_eq!(validate_tenant_id("a b"), Err(TenantIdError::BadCharacter));
        assert_eq!(validate_tenant_id("é"), Err(TenantIdError::BadCharacter));
        assert!(validate_tenant_id("acme-corp:eu.1_x").is_ok());
    }
}
