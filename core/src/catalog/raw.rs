//! The catalog file's TOML shapes, as serde reads them. Spans are kept wherever a validation
//! problem may need to point at the item; unknown fields are rejected.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::model::{Edition, Enforcement, Interval, Period, PriceComponent};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCatalog {
    #[serde(default)]
    pub(super) edition: Option<Edition>,
    pub(super) default_plan: Spanned<String>,
    /// Currency of every price that names none (ISO 4217, lower case, as Stripe writes it).
    #[serde(default)]
    pub(super) currency: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) features: BTreeMap<String, Spanned<RawFeature>>,
    #[serde(default)]
    pub(super) plans: BTreeMap<String, Spanned<RawPlan>>,
    #[serde(default)]
    pub(super) addons: BTreeMap<String, Spanned<RawAddOn>>,
    #[serde(default)]
    pub(super) prices: Vec<Spanned<RawPrice>>,
    #[serde(default)]
    pub(super) lifecycle: Option<RawLifecycle>,
    #[serde(default)]
    pub(super) trial_offers: BTreeMap<String, Spanned<RawTrialOffer>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFeature {
    pub(super) kind: String,
    /// Display name (defaults to the key).
    #[serde(default)]
    pub(super) label: Option<String>,
    #[serde(default)]
    pub(super) description: String,
    /// What a numeric value counts, for display ("seat", "MB", "request").
    #[serde(default)]
    pub(super) unit: String,
    #[serde(default)]
    pub(super) period: Option<Period>,
    #[serde(default)]
    pub(super) enforcement: Enforcement,
    #[serde(default)]
    pub(super) fallback: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    pub(super) rank: i64,
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) description: String,
    #[serde(default)]
    pub(super) seats_from_subscription: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) features: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAddOn {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) description: String,
    #[serde(default)]
    pub(super) features: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrice {
    pub(super) id: Spanned<String>,
    #[serde(default)]
    pub(super) plan: Option<String>,
    #[serde(default)]
    pub(super) addon: Option<String>,
    #[serde(default)]
    pub(super) component: PriceComponent,
    pub(super) interval: Interval,
    /// For display: the price in the currency's minor unit (cents), as Stripe's `unit_amount`.
    #[serde(default)]
    pub(super) amount: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) currency: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLifecycle {
    #[serde(default)]
    pub(super) trial_plan: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) trial_days: Option<i64>,
    #[serde(default)]
    pub(super) trial_warning_days: Option<Vec<i64>>,
    #[serde(default)]
    pub(super) hard_lock_after_days: Option<i64>,
    #[serde(default)]
    pub(super) archive_after_days: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrialOffer {
    pub(super) plan: String,
    pub(super) days: i64,
    #[serde(default)]
    pub(super) requires_paid_plan: Vec<String>,
    #[serde(default)]
    pub(super) not_while_trialing: bool,
}
