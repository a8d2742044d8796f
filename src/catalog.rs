//! The catalog: features, plans, add-ons, the Stripe price map, lifecycle policy (SPEC §2).
//!
//! The catalog is a code-owned TOML file. [`Catalog::from_toml`] parses it and validates
//! everything, collecting *every* problem with its location rather than stopping at the first.
//! Loading is pure: environment variables (for `${VAR}` price ids) come in as a lookup function.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Deserialize;
use toml::Spanned;

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
    pub description: String,
    pub enforcement: Enforcement,
    /// Value to answer with when the store is unreachable and nothing is cached.
    pub fallback: Option<Value>,
    /// No plan grants it, some add-on does: a denial says `ADDON_REQUIRED`.
    pub addon_only: bool,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub key: String,
    pub name: String,
    pub rank: i64,
    /// Value per feature, indexed by [`FeatureIdx`]; unlisted features get the kind's zero.
    pub values: Vec<Value>,
    /// Seat-priced plan: this gauge feature's limit is the subscription's seat quantity.
    pub seats_feature: Option<FeatureIdx>,
}

#[derive(Debug, Clone)]
pub struct AddOn {
    pub key: String,
    pub name: String,
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
    /// Looked up on every Check: foldhash, not SipHash (keys come from our own catalog).
    feature_index: HashMap<String, FeatureIdx, foldhash::fast::RandomState>,
    plan_index: HashMap<String, usize>,
    addon_index: HashMap<String, usize>,
    price_index: HashMap<String, usize>,
}

/// One validation problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `line:column` in the file when known.
    pub position: Option<(usize, usize)>,
    /// Dotted path of the offending item, e.g. `plans.pro.features.sets`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((l, c)) => write!(f, "{l}:{c}: {}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid catalog ({} problem(s)):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct CatalogError(pub Vec<Problem>);

// ---- raw TOML shapes ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    edition: Option<Edition>,
    default_plan: Spanned<String>,
    #[serde(default)]
    features: BTreeMap<String, Spanned<RawFeature>>,
    #[serde(default)]
    plans: BTreeMap<String, Spanned<RawPlan>>,
    #[serde(default)]
    addons: BTreeMap<String, Spanned<RawAddOn>>,
    #[serde(default)]
    prices: Vec<Spanned<RawPrice>>,
    #[serde(default)]
    lifecycle: Option<RawLifecycle>,
    #[serde(default)]
    trial_offers: BTreeMap<String, Spanned<RawTrialOffer>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    kind: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    period: Option<Period>,
    #[serde(default)]
    enforcement: Enforcement,
    #[serde(default)]
    fallback: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    rank: i64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    seats_from_subscription: Option<Spanned<String>>,
    #[serde(default)]
    features: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAddOn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    features: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    id: Spanned<String>,
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    addon: Option<String>,
    #[serde(default)]
    component: PriceComponent,
    interval: Interval,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLifecycle {
    #[serde(default)]
    trial_plan: Option<Spanned<String>>,
    #[serde(default)]
    trial_days: Option<i64>,
    #[serde(default)]
    trial_warning_days: Option<Vec<i64>>,
    #[serde(default)]
    hard_lock_after_days: Option<i64>,
    #[serde(default)]
    archive_after_days: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrialOffer {
    plan: String,
    days: i64,
    #[serde(default)]
    requires_paid_plan: Vec<String>,
    #[serde(default)]
    not_while_trialing: bool,
}

struct Problems<'a> {
    src: &'a str,
    list: Vec<Problem>,
}

impl Problems<'_> {
    fn at(&mut self, span: Option<std::ops::Range<usize>>, path: impl Into<String>, msg: impl Into<String>) {
        let position = span.map(|s| line_col(self.src, s.start));
        self.list.push(Problem { position, path: path.into(), message: msg.into() });
    }
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.len(), |i| before.len() - i - 1) + 1;
    (line, col)
}

/// Expand `${VAR}` and `${VAR:-default}` references through `env`.
fn expand_env(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unterminated `${{` in `{raw}`"))?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        match (env(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("environment variable `{name}` is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn parse_value(v: &toml::Value, kind: FeatureKind) -> Result<Value, String> {
    let value = match v {
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Integer(n) => Value::Number(*n),
        toml::Value::String(s) if s == "unlimited" => Value::Unlimited,
        other => {
            return Err(format!("expected true/false, a number or \"unlimited\", found `{other}`"));
        }
    };
    if !value.fits(kind) {
        return Err(format!("value `{value}` does not fit a {} feature", kind.name()));
    }
    Ok(value)
}

fn is_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Catalog {
    /// Parse and validate a catalog. `env` resolves `${VAR}` references in price ids.
    pub fn from_toml(src: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Catalog, CatalogError> {
        let raw: RawCatalog = toml::from_str(src).map_err(|e| {
            let position = e.span().map(|s| line_col(src, s.start));
            CatalogError(vec![Problem { position, path: "(file)".into(), message: e.message().to_string() }])
        })?;
        let mut p = Problems { src, list: Vec::new() };

        // Features.
        let mut features = Vec::new();
        let mut feature_index = HashMap::default();
        for (key, f) in &raw.features {
            let span = Some(f.span());
            let path = format!("features.{key}");
            if !is_key(key) {
                p.at(span.clone(), &path, "feature keys are snake_case ([a-z][a-z0-9_]*, at most 64 chars)");
            }
            let f = f.get_ref();
            let kind = match (f.kind.as_str(), f.period) {
                ("boolean", None) => FeatureKind::Boolean,
                ("config", None) => FeatureKind::Config,
                ("gauge", None) => FeatureKind::Gauge,
                ("counter", Some(period)) => FeatureKind::Counter(period),
                ("counter", None) => {
                    p.at(span.clone(), &path, "a counter needs `period` (month, year, billing_period or never)");
                    FeatureKind::Counter(Period::Month)
                }
                ("boolean" | "config" | "gauge", Some(_)) => {
                    p.at(span.clone(), &path, "`period` only applies to counters");
                    FeatureKind::Boolean
                }
                (other, _) => {
                    p.at(span.clone(), &path, format!("unknown kind `{other}` (boolean, config, gauge, counter)"));
                    FeatureKind::Boolean
                }
            };
            let fallback = f.fallback.as_ref().and_then(|v| match parse_value(v.get_ref(), kind) {
                Ok(v) => Some(v),
                Err(e) => {
                    p.at(Some(v.span()), format!("{path}.fallback"), e);
                    None
                }
            });
            feature_index.insert(key.clone(), features.len());
            features.push(Feature {
                key: key.clone(),
                kind,
                description: f.description.clone(),
                enforcement: f.enforcement,
                fallback,
                addon_only: false,
            });
        }
        if features.is_empty() {
            p.at(None, "features", "the catalog defines no features");
        }

        let values_for = |p: &mut Problems, path: &str, map: &BTreeMap<String, Spanned<toml::Value>>| {
            let mut out = Vec::new();
            for (fkey, v) in map {
                let vpath = format!("{path}.features.{fkey}");
                match feature_index.get(fkey) {
                    None => p.at(Some(v.span()), vpath, format!("unknown feature `{fkey}`")),
                    Some(&idx) => match parse_value(v.get_ref(), features[idx].kind) {
                        Ok(val) => out.push((idx, val)),
                        Err(e) => p.at(Some(v.span()), vpath, e),
                    },
                }
            }
            out
        };

        // Plans.
        let mut plans = Vec::new();
        let mut plan_index = HashMap::new();
        let mut ranks: HashMap<i64, String> = HashMap::new();
        for (key, plan) in &raw.plans {
            let path = format!("plans.{key}");
            let span = Some(plan.span());
            if !is_key(key) {
                p.at(span.clone(), &path, "plan keys are snake_case");
            }
            let plan = plan.get_ref();
            if let Some(other) = ranks.insert(plan.rank, key.clone()) {
                p.at(
                    span.clone(),
                    format!("{path}.rank"),
                    format!("rank {} is also the rank of plan `{other}`", plan.rank),
                );
            }
            let mut values: Vec<Value> = features.iter().map(|f| Value::zero(f.kind)).collect();
            for (idx, v) in values_for(&mut p, &path, &plan.features) {
                values[idx] = v;
            }
            let seats_feature =
                plan.seats_from_subscription.as_ref().and_then(|s| match feature_index.get(s.get_ref()) {
                    Some(&idx) if features[idx].kind == FeatureKind::Gauge => Some(idx),
                    Some(_) => {
                        p.at(Some(s.span()), format!("{path}.seats_from_subscription"), "must name a gauge feature");
                        None
                    }
                    None => {
                        p.at(
                            Some(s.span()),
                            format!("{path}.seats_from_subscription"),
                            format!("unknown feature `{}`", s.get_ref()),
                        );
                        None
                    }
                });
            plan_index.insert(key.clone(), plans.len());
            plans.push(Plan {
                key: key.clone(),
                name: plan.name.clone().unwrap_or_else(|| key.clone()),
                rank: plan.rank,
                values,
                seats_feature,
            });
        }
        plans.sort_by_key(|pl| pl.rank);
        plan_index = plans.iter().enumerate().map(|(i, pl)| (pl.key.clone(), i)).collect();
        if !plan_index.contains_key(raw.default_plan.get_ref()) {
            p.at(
                Some(raw.default_plan.span()),
                "default_plan",
                format!("unknown plan `{}`", raw.default_plan.get_ref()),
            );
        }

        // Add-ons.
        let mut addons = Vec::new();
        let mut addon_index = HashMap::new();
        for (key, addon) in &raw.addons {
            let path = format!("addons.{key}");
            if !is_key(key) {
                p.at(Some(addon.span()), &path, "add-on keys are snake_case");
            }
            let grants = values_for(&mut p, &path, &addon.get_ref().features);
            if grants.is_empty() {
                p.at(Some(addon.span()), &path, "an add-on must grant at least one feature");
            }
            addon_index.insert(key.clone(), addons.len());
            addons.push(AddOn {
                key: key.clone(),
                name: addon.get_ref().name.clone().unwrap_or_else(|| key.clone()),
                grants,
            });
        }

        for (idx, f) in features.iter_mut().enumerate() {
            let in_plan = plans.iter().any(|pl| pl.values[idx].is_truthy());
            let in_addon = addons.iter().any(|a| a.grants.iter().any(|(i, v)| *i == idx && v.is_truthy()));
            f.addon_only = !in_plan && in_addon;
        }

        // Prices.
        let mut prices = Vec::new();
        let mut price_index = HashMap::new();
        for (i, price) in raw.prices.iter().enumerate() {
            let path = format!("prices[{i}]");
            let span = Some(price.span());
            let price = price.get_ref();
            let id = match expand_env(price.id.get_ref(), env) {
                Ok(id) => id,
                Err(e) => {
                    p.at(Some(price.id.span()), format!("{path}.id"), e);
                    continue;
                }
            };
            let target = match (&price.plan, &price.addon) {
                (Some(plan), None) => {
                    if !plan_index.contains_key(plan) {
                        p.at(span.clone(), format!("{path}.plan"), format!("unknown plan `{plan}`"));
                    }
                    if price.component == PriceComponent::Seat
                        && plan_index.get(plan).is_some_and(|&i| plans[i].seats_feature.is_none())
                    {
                        p.at(
                            span.clone(),
                            format!("{path}.component"),
                            format!("plan `{plan}` is not seat-priced (no seats_from_subscription)"),
                        );
                    }
                    PriceTarget::Plan { plan: plan.clone(), component: price.component }
                }
                (None, Some(addon)) => {
                    if !addon_index.contains_key(addon) {
                        p.at(span.clone(), format!("{path}.addon"), format!("unknown add-on `{addon}`"));
                    }
                    PriceTarget::AddOn { addon: addon.clone() }
                }
                _ => {
                    p.at(span.clone(), &path, "a price names exactly one of `plan` or `addon`");
                    continue;
                }
            };
            if id.is_empty() {
                p.at(span.clone(), format!("{path}.id"), "empty price id");
            }
            if price_index.insert(id.clone(), prices.len()).is_some() {
                p.at(span.clone(), format!("{path}.id"), format!("duplicate price id `{id}`"));
            }
            prices.push(Price { id, target, interval: price.interval });
        }

        // Lifecycle.
        let mut lifecycle = Lifecycle::default();
        if let Some(l) = &raw.lifecycle {
            if let Some(tp) = &l.trial_plan {
                if !plan_index.contains_key(tp.get_ref()) {
                    p.at(Some(tp.span()), "lifecycle.trial_plan", format!("unknown plan `{}`", tp.get_ref()));
                }
                lifecycle.trial_plan = Some(tp.get_ref().clone());
            }
            let mut days = |name: &str, v: Option<i64>, slot: &mut i64| {
                if let Some(v) = v {
                    if !(0..=3650).contains(&v) {
                        p.at(None, format!("lifecycle.{name}"), "must be between 0 and 3650 days");
                    }
                    *slot = v;
                }
            };
            days("trial_days", l.trial_days, &mut lifecycle.trial_days);
            days("hard_lock_after_days", l.hard_lock_after_days, &mut lifecycle.hard_lock_after_days);
            days("archive_after_days", l.archive_after_days, &mut lifecycle.archive_after_days);
            if let Some(w) = &l.trial_warning_days {
                lifecycle.warning_days = w.clone();
            }
            if lifecycle.archive_after_days < lifecycle.hard_lock_after_days {
                p.at(None, "lifecycle.archive_after_days", "archive must come after hard lock");
            }
        }
        lifecycle.warning_days.sort_unstable_by(|a, b| b.cmp(a));
        lifecycle.warning_days.dedup();

        // Trial offers.
        let mut trial_offers = Vec::new();
        for (key, offer) in &raw.trial_offers {
            let path = format!("trial_offers.{key}");
            let o = offer.get_ref();
            for plan in std::iter::once(&o.plan).chain(&o.requires_paid_plan) {
                if !plan_index.contains_key(plan) {
                    p.at(Some(offer.span()), &path, format!("unknown plan `{plan}`"));
                }
            }
            if o.days <= 0 {
                p.at(Some(offer.span()), format!("{path}.days"), "must be positive");
            }
            trial_offers.push(TrialOffer {
                key: key.clone(),
                plan: o.plan.clone(),
                days: o.days,
                requires_paid_plan: o.requires_paid_plan.clone(),
                not_while_trialing: o.not_while_trialing,
            });
        }

        if !p.list.is_empty() {
            p.list.sort_by_key(|pr| pr.position);
            return Err(CatalogError(p.list));
        }
        Ok(Catalog {
            edition: raw.edition.unwrap_or(Edition::Ee),
            default_plan: raw.default_plan.into_inner(),
            features,
            plans,
            addons,
            prices,
            lifecycle,
            trial_offers,
            feature_index,
            plan_index,
            addon_index,
            price_index,
        })
    }

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

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn example_catalog_loads() {
        let src = include_str!("../examples/catalog.toml");
        let c = Catalog::from_toml(src, &no_env).expect("example catalog is valid");
        assert!(c.feature("teams_integration").is_some_and(|f| f.addon_only));
        assert!(c.feature("entra_sync").is_some_and(|f| f.addon_only));
        assert_eq!(c.default_plan().key, "free");
    }

    #[test]
    fn reports_every_problem_with_location() {
        let src = r#"
default_plan = "nope"
[features.flag]
kind = "boolean"
[features.limit]
kind = "gauge"
[features.count]
kind = "counter"
[plans.a]
rank = 1
features = { flag = 3, missing = true }
[plans.b]
rank = 1
features = { limit = true }
[addons.x]
features = { flag = true }
[[prices]]
id = "${NOT_SET_ANYWHERE}"
plan = "a"
interval = "month"
[[prices]]
id = "p1"
addon = "y"
interval = "year"
"#;
        let err = Catalog::from_toml(src, &no_env).unwrap_err();
        let text = err.to_string();
        for needle in [
            "default_plan: unknown plan `nope`",
            "features.count: a counter needs `period`",
            "plans.a.features.flag: value `3` does not fit a boolean feature",
            "plans.a.features.missing: unknown feature `missing`",
            "plans.b.rank: rank 1 is also the rank of plan `a`",
            "plans.b.features.limit: value `true` does not fit a gauge feature",
            "environment variable `NOT_SET_ANYWHERE` is not set",
            "prices[1].addon: unknown add-on `y`",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(err.0.iter().all(|p| p.position.is_some()), "{text}");
    }

    #[test]
    fn duplicate_keys_are_reported_with_position() {
        let src = "default_plan = \"a\"\n[features.f]\nkind = \"boolean\"\n[features.f]\nkind = \"boolean\"\n";
        let err = Catalog::from_toml(src, &no_env).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert!(err.0[0].position.is_some());
        assert!(err.to_string().contains("duplicate"), "{err}");
    }

    #[test]
    fn env_expansion() {
        let env = |k: &str| (k == "X").then(|| "price_x".to_string());
        assert_eq!(expand_env("${X}", &env).unwrap(), "price_x");
        assert_eq!(expand_env("${Y:-dflt}", &env).unwrap(), "dflt");
        assert!(expand_env("${Y}", &env).is_err());
        assert!(expand_env("${Y", &env).is_err());
    }

    #[test]
    fn stacking() {
        assert_eq!(Value::Number(3).stack(Value::Number(4).times(2)), Value::Number(11));
        assert_eq!(Value::Number(3).stack(Value::Unlimited), Value::Unlimited);
        assert_eq!(Value::Bool(false).stack(Value::Bool(true)), Value::Bool(true));
        assert_eq!(Value::Number(i64::MAX).stack(Value::Number(1)), Value::Number(i64::MAX));
    }
}
