//! The catalog's data model: what features, plans, add-ons, prices and policies are, and
//! lookups by key. Built only by [`Catalog::from_toml`].

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use super::load::Problem;

/// Index of a feature in [`Catalog::features`]; resolved tenants store values by this index.
pub type FeatureIdx = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Edition {
    Ee,
    Ce,
}

impl fmt::Display for Edition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Edition::Ee => "ee",
            Edition::Ce => "ce",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Month,
    Year,
    BillingPeriod,
    Never,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Month => "month",
            Period::Year => "year",
            Period::BillingPeriod => "billing_period",
            Period::Never => "never",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    Boolean,
    Config,
    Gauge,
    Counter(Period),
}

impl FeatureKind {
    pub fn is_numeric(self) -> bool {
        !matches!(self, FeatureKind::Boolean)
    }
    pub fn is_metered(self) -> bool {
        matches!(self, FeatureKind::Gauge | FeatureKind::Counter(_))
    }
    pub fn name(self) -> &'static str {
        match self {
            FeatureKind::Boolean => "boolean",
            FeatureKind::Config => "config",
            FeatureKind::Gauge => "gauge",
            FeatureKind::Counter(_) => "counter",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    #[default]
    Enforce,
    Shadow,
}

/// A feature value. Numbers are non-negative; `Unlimited` absorbs any sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    Bool(bool),
    Number(i64),
    Unlimited,
}

impl Value {
    /// The "nothing granted" value of a kind.
    pub fn zero(kind: FeatureKind) -> Value {
        if kind.is_numeric() { Value::Number(0) } else { Value::Bool(false) }
    }

    pub fn fits(self, kind: FeatureKind) -> bool {
        match self {
            Value::Bool(_) => !kind.is_numeric(),
            Value::Number(n) => kind.is_numeric() && n >= 0,
            Value::Unlimited => kind.is_numeric(),
        }
    }

    /// Combine two grants: OR for booleans, saturating sum for numbers, unlimited absorbs.
    pub fn stack(self, other: Value) -> Value {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => Value::Bool(a || b),
            (Value::Unlimited, _) | (_, Value::Unlimited) => Value::Unlimited,
            (Value::Number(a), Value::Number(b)) => Value::Number(a.saturating_add(b)),
            (a, _) => a,
        }
    }

    /// Multiply a grant by an add-on quantity.
    pub fn times(self, quantity: i64) -> Value {
        match self {
            Value::Number(n) => Value::Number(n.saturating_mul(quantity.max(0))),
            other => other,
        }
    }

    pub fn is_truthy(self) -> bool {
        match self {
            Value::Bool(b) => b,
            Value::Number(n) => n > 0,
            Value::Unlimited => true,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => write!(f, "{n}"),
            Value::Unlimited => f.write_str("unlimited"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Feature {
    pub key: String,
    pub kind: FeatureKind,
    /// Display name; the key when the file gives none.
    pub label: String,
    pub description: String,
    /// What a numeric value counts, for display ("seat", "MB"); may be empty.
    pub unit: String,
    pub enforcement: Enforcement,
    /// Value to answer with when the store is unreachable and nothing is cached.
    pub fallback: Option<Value>,
    /// No plan grants it, some add-on does: a denial says `ADDON_REQUIRED`.
    pub addon_only: bool,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub key: String,
    /// Display name; the key when the file gives none.
    pub name: String,
    pub description: String,
    pub rank: i64,
    /// Value per feature, indexed by [`FeatureIdx`]; unlisted features get the kind's zero.
    pub values: Vec<Value>,
    /// Seat-priced plan: this gauge feature's limit is the subscription's seat quantity.
    pub seats_feature: Option<FeatureIdx>,
}

#[derive(Debug, Clone)]
pub struct AddOn {
    pub key: String,
    /// Display name; the key when the file gives none.
    pub name: String,
    pub description: String,
    /// Grants, per feature it touches.
    pub grants: Vec<(FeatureIdx, Value)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Month,
    Year,
}

impl Interval {
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PriceComponent {
    #[default]
    Base,
    Seat,
}

/// What a Stripe price id buys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceTarget {
    Plan { plan: String, component: PriceComponent },
    AddOn { addon: String },
}

#[derive(Debug, Clone)]
pub struct Price {
    pub id: String,
    pub target: PriceTarget,
    pub interval: Interval,
    /// For display: the amount in the currency's minor unit (cents); none when not for sale at a
    /// list price (e.g. "contact sales").
    pub amount: Option<i64>,
    /// ISO 4217, lower case.
    pub currency: String,
}

/// Product-led trial policy and lifecycle thresholds (SPEC §3.5).
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// The plan a product-led free trial gives.
    pub trial_plan: Option<String>,
    pub trial_days: i64,
    /// Days-left thresholds at which a `TRIAL_ENDING` notice starts (the largest one matters).
    pub warning_days: Vec<i64>,
    pub hard_lock_after_days: i64,
    pub archive_after_days: i64,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            trial_plan: None,
            trial_days: 14,
            warning_days: vec![7, 3],
            hard_lock_after_days: 7,
            archive_after_days: 30,
        }
    }
}

/// A rule for which plan trials a tenant may start (Stripe trials offered by the product).
#[derive(Debug, Clone)]
pub struct TrialOffer {
    pub key: String,
    pub plan: String,
    pub days: i64,
    /// The tenant must currently be paying for one of these plans (empty: no requirement).
    pub requires_paid_plan: Vec<String>,
    /// Not while trialing any subscription.
    pub not_while_trialing: bool,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pub edition: Edition,
    pub default_plan: String,
    pub features: Vec<Feature>,
    pub plans: Vec<Plan>,
    pub addons: Vec<AddOn>,
    pub prices: Vec<Price>,
    pub lifecycle: Lifecycle,
    pub trial_offers: Vec<TrialOffer>,
    /// Changes whenever the catalog's content does (FNV-1a of the file and the expanded price
    /// ids, in hex): one catalog, one version, on every replica and build.
    pub version: String,
    /// What loaded but is probably not meant for production (placeholder price ids).
    pub warnings: Vec<Problem>,
    /// Looked up on every Check: foldhash, not SipHash (keys come from our own catalog).
    // Built by the loader, which also uses them to validate cross-references.
    pub(super) feature_index: FeatureIndex,
    pub(super) plan_index: KeyIndex,
    pub(super) addon_index: KeyIndex,
    pub(super) price_index: KeyIndex,
}

/// Feature key to [`FeatureIdx`].
pub(super) type FeatureIndex = HashMap<String, FeatureIdx, foldhash::fast::RandomState>;
/// Plan key, add-on key or price id to its position in the catalog's list.
pub(super) type KeyIndex = HashMap<String, usize>;

impl Catalog {
    pub fn feature_idx(&self, key: &str) -> Option<FeatureIdx> {
        self.feature_index.get(key).copied()
    }
    pub fn feature(&self, key: &str) -> Option<&Feature> {
        self.feature_idx(key).map(|i| &self.features[i])
    }
    pub fn plan(&self, key: &str) -> Option<&Plan> {
        self.plan_index.get(key).map(|&i| &self.plans[i])
    }
    pub fn addon(&self, key: &str) -> Option<&AddOn> {
        self.addon_index.get(key).map(|&i| &self.addons[i])
    }
    pub fn price(&self, id: &str) -> Option<&Price> {
        self.price_index.get(id).map(|&i| &self.prices[i])
    }
    pub fn default_plan(&self) -> &Plan {
        // Validated at load: the default plan exists.
        &self.plans[self.plan_index[&self.default_plan]]
    }
    /// Plans ordered by rank, lowest first.
    pub fn plans_by_rank(&self) -> &[Plan] {
        &self.plans
    }
    /// The same catalog with another edition (the deployment setting wins over the file).
    pub fn with_edition(mut self, edition: Edition) -> Catalog {
        self.edition = edition;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacking() {
        assert_eq!(Value::Number(3).stack(Value::Number(4).times(2)), Value::Number(11));
        assert_eq!(Value::Number(3).stack(Value::Unlimited), Value::Unlimited);
        assert_eq!(Value::Bool(false).stack(Value::Bool(true)), Value::Bool(true));
        assert_eq!(Value::Number(i64::MAX).stack(Value::Number(1)), Value::Number(i64::MAX));
    }
}
