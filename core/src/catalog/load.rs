//! Loading a catalog: TOML parsing, then validation one section at a time.
//!
//! Every problem is collected with its `line:column`, then all are reported sorted by position
//! (a stable sort: problems at the same place keep the order the sections found them in).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;

use toml::Spanned;

use super::model::{
    AddOn, Catalog, Edition, Feature, FeatureIndex, FeatureKind, KeyIndex, Lifecycle, Period, Plan, Price,
    PriceComponent, PriceTarget, TrialOffer, Value,
};
use super::raw::{RawAddOn, RawCatalog, RawFeature, RawLifecycle, RawPlan, RawPrice, RawTrialOffer};

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

/// The problems found so far, positioned against the source text, and the warnings: what
/// loads but is probably not meant for production.
struct Problems<'a> {
    src: &'a str,
    list: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Problems<'_> {
    fn problem(&self, span: Option<Range<usize>>, path: impl Into<String>, msg: impl Into<String>) -> Problem {
        let position = span.map(|s| line_col(self.src, s.start));
        Problem { position, path: path.into(), message: msg.into() }
    }

    fn at(&mut self, span: Option<Range<usize>>, path: impl Into<String>, msg: impl Into<String>) {
        let problem = self.problem(span, path, msg);
        self.list.push(problem);
    }

    fn warn(&mut self, span: Option<Range<usize>>, path: impl Into<String>, msg: impl Into<String>) {
        let warning = self.problem(span, path, msg);
        self.warnings.push(warning);
    }

    /// The warnings ordered by position when the catalog is valid; every problem otherwise.
    fn finish(mut self) -> Result<Vec<Problem>, CatalogError> {
        if self.list.is_empty() {
            self.warnings.sort_by_key(|pr| pr.position);
            return Ok(self.warnings);
        }
        self.list.sort_by_key(|pr| pr.position);
        Err(CatalogError(self.list))
    }
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.len(), |i| before.len() - i - 1) + 1;
    (line, col)
}

/// A string with its `${VAR}` references expanded.
struct Expanded {
    text: String,
    /// The variables that were unset, so their `:-default` stands in.
    defaulted: Vec<String>,
}

/// Expand `${VAR}` and `${VAR:-default}` references through `env`.
fn expand_env(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Expanded, String> {
    let mut out = String::new();
    let mut defaulted = Vec::new();
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
            (None, Some(d)) => {
                out.push_str(d);
                defaulted.push(name.to_string());
            }
            (None, None) => return Err(format!("environment variable `{name}` is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Expanded { text: out, defaulted })
}

/// Stripe's own price ids: `price_` and at least 14 letters and digits (`price_1MoBy5LkdIwHu7ix…`).
fn looks_like_stripe_price(id: &str) -> bool {
    id.strip_prefix("price_").is_some_and(|rest| rest.len() >= 14 && rest.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// FNV-1a, 64 bits: a catalog version that is the same on every replica and every build
/// (std's hasher promises neither).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
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
        let mut p = Problems { src, list: Vec::new(), warnings: Vec::new() };

        // Sections in dependency order; the order also fixes the order of same-position problems.
        let (mut features, feature_index) = load_features(&mut p, &raw.features);
        let (plans, plan_index) = load_plans(&mut p, &raw.plans, &features, &feature_index);
        if !plan_index.contains_key(raw.default_plan.get_ref()) {
            p.at(
                Some(raw.default_plan.span()),
                "default_plan",
                format!("unknown plan `{}`", raw.default_plan.get_ref()),
            );
        }
        let (addons, addon_index) = load_addons(&mut p, &raw.addons, &features, &feature_index);
        mark_addon_only(&mut features, &plans, &addons);
        let currency = catalog_currency(&mut p, raw.currency.as_ref());
        let prices =
            Prices { env, plans: &plans, plan_index: &plan_index, addon_index: &addon_index, currency: &currency };
        let (prices, price_index) = load_prices(&mut p, &raw.prices, &prices);
        let lifecycle = load_lifecycle(&mut p, raw.lifecycle.as_ref(), &plan_index);
        let trial_offers = load_trial_offers(&mut p, &raw.trial_offers, &plan_index);

        let warnings = p.finish()?;
        let version = {
            let parts: Vec<&str> = std::iter::once(src).chain(prices.iter().map(|pr| pr.id.as_str())).collect();
            format!("{:016x}", fnv1a(&parts))
        };
        Ok(Catalog {
            edition: raw.edition.unwrap_or(Edition::Ee),
            default_plan: raw.default_plan.into_inner(),
            features,
            plans,
            addons,
            prices,
            lifecycle,
            trial_offers,
            version,
            warnings,
            feature_index,
            plan_index,
            addon_index,
            price_index,
        })
    }
}

/// `[features.*]`, in key order. `addon_only` is settled later, once plans and add-ons are known.
fn load_features(p: &mut Problems, raw: &BTreeMap<String, Spanned<RawFeature>>) -> (Vec<Feature>, FeatureIndex) {
    let mut features = Vec::new();
    let mut feature_index = FeatureIndex::default();
    for (key, f) in raw {
        let span = Some(f.span());
        let path = format!("features.{key}");
        if !is_key(key) {
            p.at(span.clone(), &path, "feature keys are snake_case ([a-z][a-z0-9_]*, at most 64 chars)");
        }
        let f = f.get_ref();
        let kind = feature_kind(p, span, &path, f);
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
            label: f.label.clone().unwrap_or_else(|| key.clone()),
            description: f.description.clone(),
            unit: f.unit.clone(),
            enforcement: f.enforcement,
            fallback,
            addon_only: false,
        });
    }
    if features.is_empty() {
        p.at(None, "features", "the catalog defines no features");
    }
    (features, feature_index)
}

/// A feature's `kind` and `period`; on a problem, a stand-in kind so validation can go on.
fn feature_kind(p: &mut Problems, span: Option<Range<usize>>, path: &str, f: &RawFeature) -> FeatureKind {
    match (f.kind.as_str(), f.period) {
        ("boolean", None) => FeatureKind::Boolean,
        ("config", None) => FeatureKind::Config,
        ("gauge", None) => FeatureKind::Gauge,
        ("counter", Some(period)) => FeatureKind::Counter(period),
        ("counter", None) => {
            p.at(span, path, "a counter needs `period` (month, year, billing_period or never)");
            FeatureKind::Counter(Period::Month)
        }
        ("boolean" | "config" | "gauge", Some(_)) => {
            p.at(span, path, "`period` only applies to counters");
            FeatureKind::Boolean
        }
        (other, _) => {
            p.at(span, path, format!("unknown kind `{other}` (boolean, config, gauge, counter)"));
            FeatureKind::Boolean
        }
    }
}

/// The valid `features = { … }` values of a plan or add-on at `path`, in key order.
fn feature_values(
    p: &mut Problems,
    path: &str,
    map: &BTreeMap<String, Spanned<toml::Value>>,
    features: &[Feature],
    feature_index: &FeatureIndex,
) -> Vec<(usize, Value)> {
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
}

/// `[plans.*]`, validated in key order, then ordered by rank (ranks are unique).
fn load_plans(
    p: &mut Problems,
    raw: &BTreeMap<String, Spanned<RawPlan>>,
    features: &[Feature],
    feature_index: &FeatureIndex,
) -> (Vec<Plan>, KeyIndex) {
    let mut plans = Vec::new();
    let mut ranks: HashMap<i64, String> = HashMap::new();
    for (key, plan) in raw {
        let path = format!("plans.{key}");
        let span = Some(plan.span());
        if !is_key(key) {
            p.at(span.clone(), &path, "plan keys are snake_case");
        }
        let plan = plan.get_ref();
        if let Some(other) = ranks.insert(plan.rank, key.clone()) {
            p.at(span, format!("{path}.rank"), format!("rank {} is also the rank of plan `{other}`", plan.rank));
        }
        let mut values: Vec<Value> = features.iter().map(|f| Value::zero(f.kind)).collect();
        for (idx, v) in feature_values(p, &path, &plan.features, features, feature_index) {
            values[idx] = v;
        }
        let seats_feature =
            plan.seats_from_subscription.as_ref().and_then(|s| seats_feature(p, &path, s, features, feature_index));
        plans.push(Plan {
            key: key.clone(),
            name: plan.name.clone().unwrap_or_else(|| key.clone()),
            description: plan.description.clone(),
            rank: plan.rank,
            values,
            seats_feature,
        });
    }
    plans.sort_by_key(|pl| pl.rank);
    let plan_index = plans.iter().enumerate().map(|(i, pl)| (pl.key.clone(), i)).collect();
    (plans, plan_index)
}

/// A plan's `seats_from_subscription`, which must name a gauge feature.
fn seats_feature(
    p: &mut Problems,
    path: &str,
    s: &Spanned<String>,
    features: &[Feature],
    feature_index: &FeatureIndex,
) -> Option<usize> {
    match feature_index.get(s.get_ref()) {
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
    }
}

/// `[addons.*]`, in key order.
fn load_addons(
    p: &mut Problems,
    raw: &BTreeMap<String, Spanned<RawAddOn>>,
    features: &[Feature],
    feature_index: &FeatureIndex,
) -> (Vec<AddOn>, KeyIndex) {
    let mut addons = Vec::new();
    let mut addon_index = KeyIndex::new();
    for (key, addon) in raw {
        let path = format!("addons.{key}");
        if !is_key(key) {
            p.at(Some(addon.span()), &path, "add-on keys are snake_case");
        }
        let grants = feature_values(p, &path, &addon.get_ref().features, features, feature_index);
        if grants.is_empty() {
            p.at(Some(addon.span()), &path, "an add-on must grant at least one feature");
        }
        addon_index.insert(key.clone(), addons.len());
        addons.push(AddOn {
            key: key.clone(),
            name: addon.get_ref().name.clone().unwrap_or_else(|| key.clone()),
            description: addon.get_ref().description.clone(),
            grants,
        });
    }
    (addons, addon_index)
}

/// A feature no plan grants but some add-on does is add-on only (denials say `ADDON_REQUIRED`).
fn mark_addon_only(features: &mut [Feature], plans: &[Plan], addons: &[AddOn]) {
    for (idx, f) in features.iter_mut().enumerate() {
        let in_plan = plans.iter().any(|pl| pl.values[idx].is_truthy());
        let in_addon = addons.iter().any(|a| a.grants.iter().any(|(i, v)| *i == idx && v.is_truthy()));
        f.addon_only = !in_plan && in_addon;
    }
}

/// The top-level `currency`, `usd` when unset.
fn catalog_currency(p: &mut Problems, raw: Option<&Spanned<String>>) -> String {
    raw.map_or_else(|| "usd".to_string(), |c| currency(p, "currency", c))
}

/// An ISO 4217 code as Stripe writes it: three lower-case letters.
fn currency(p: &mut Problems, path: &str, c: &Spanned<String>) -> String {
    let code = c.get_ref();
    if !(code.len() == 3 && code.chars().all(|ch| ch.is_ascii_lowercase())) {
        p.at(Some(c.span()), path, format!("currency `{code}` is not an ISO 4217 code in lower case (e.g. `usd`)"));
    }
    code.clone()
}

/// What prices are checked against.
struct Prices<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    plans: &'a [Plan],
    plan_index: &'a KeyIndex,
    addon_index: &'a KeyIndex,
    currency: &'a str,
}

/// `[[prices]]`, in file order, with `${VAR}` references in ids expanded through `env`.
fn load_prices(p: &mut Problems, raw: &[Spanned<RawPrice>], with: &Prices) -> (Vec<Price>, KeyIndex) {
    let mut prices = Vec::new();
    let mut price_index = KeyIndex::new();
    for (i, spanned) in raw.iter().enumerate() {
        let path = format!("prices[{i}]");
        let span = Some(spanned.span());
        let price = spanned.get_ref();
        let id = match expand_env(price.id.get_ref(), with.env) {
            Ok(id) => id,
            Err(e) => {
                p.at(Some(price.id.span()), format!("{path}.id"), e);
                continue;
            }
        };
        let Some(target) = price_target(p, &path, spanned, with.plans, with.plan_index, with.addon_index) else {
            continue;
        };
        placeholder_warning(p, &path, &price.id, &id);
        let id = id.text;
        if id.is_empty() {
            p.at(span.clone(), format!("{path}.id"), "empty price id");
        }
        if price_index.insert(id.clone(), prices.len()).is_some() {
            p.at(span, format!("{path}.id"), format!("duplicate price id `{id}`"));
        }
        let amount = price.amount.as_ref().map(|a| {
            if *a.get_ref() < 0 {
                p.at(Some(a.span()), format!("{path}.amount"), "must not be negative");
            }
            *a.get_ref()
        });
        let currency = price
            .currency
            .as_ref()
            .map_or_else(|| with.currency.to_string(), |c| currency(p, &format!("{path}.currency"), c));
        prices.push(Price { id, target, interval: price.interval, amount, currency });
    }
    (prices, price_index)
}

/// A price id that is a `${VAR:-default}` stand-in, or not shaped like Stripe's, loads (tests
/// and local runs use them) but is worth a warning: no real Stripe event will ever carry it.
fn placeholder_warning(p: &mut Problems, path: &str, raw: &Spanned<String>, id: &Expanded) {
    let path = format!("{path}.id");
    if let Some(var) = id.defaulted.first() {
        let msg = format!("`{}` is the placeholder default of `${{{var}}}`: set {var} to the Stripe price id", id.text);
        p.warn(Some(raw.span()), path, msg);
    } else if !looks_like_stripe_price(&id.text) {
        p.warn(Some(raw.span()), path, format!("`{}` does not look like a Stripe price id (`price_…`)", id.text));
    }
}

/// What a price buys: exactly one of a known plan (seat component only if seat-priced) or a
/// known add-on. `None` when it names neither or both.
fn price_target(
    p: &mut Problems,
    path: &str,
    price: &Spanned<RawPrice>,
    plans: &[Plan],
    plan_index: &KeyIndex,
    addon_index: &KeyIndex,
) -> Option<PriceTarget> {
    let span = Some(price.span());
    let price = price.get_ref();
    match (&price.plan, &price.addon) {
        (Some(plan), None) => {
            if !plan_index.contains_key(plan) {
                p.at(span.clone(), format!("{path}.plan"), format!("unknown plan `{plan}`"));
            }
            if price.component == PriceComponent::Seat
                && plan_index.get(plan).is_some_and(|&i| plans[i].seats_feature.is_none())
            {
                p.at(
                    span,
                    format!("{path}.component"),
                    format!("plan `{plan}` is not seat-priced (no seats_from_subscription)"),
                );
            }
            Some(PriceTarget::Plan { plan: plan.clone(), component: price.component })
        }
        (None, Some(addon)) => {
            if !addon_index.contains_key(addon) {
                p.at(span, format!("{path}.addon"), format!("unknown add-on `{addon}`"));
            }
            Some(PriceTarget::AddOn { addon: addon.clone() })
        }
        _ => {
            p.at(span, path, "a price names exactly one of `plan` or `addon`");
            None
        }
    }
}

/// `[lifecycle]`: defaults, overridden by what the file sets. Warning days end up largest first.
fn load_lifecycle(p: &mut Problems, raw: Option<&RawLifecycle>, plan_index: &KeyIndex) -> Lifecycle {
    let mut lifecycle = Lifecycle::default();
    if let Some(l) = raw {
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
    lifecycle
}

/// `[trial_offers.*]`, in key order.
fn load_trial_offers(
    p: &mut Problems,
    raw: &BTreeMap<String, Spanned<RawTrialOffer>>,
    plan_index: &KeyIndex,
) -> Vec<TrialOffer> {
    let mut trial_offers = Vec::new();
    for (key, offer) in raw {
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
    trial_offers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn example_catalog_loads() {
        let src = include_str!("../../../examples/catalog.toml");
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
        assert_eq!(expand_env("${X}", &env).unwrap().text, "price_x");
        let d = expand_env("${Y:-dflt}", &env).unwrap();
        assert_eq!((d.text.as_str(), d.defaulted), ("dflt", vec!["Y".to_string()]));
        assert!(expand_env("${Y}", &env).is_err());
        assert!(expand_env("${Y", &env).is_err());
    }

    #[test]
    fn display_fields_prices_and_placeholder_warnings() {
        let src = r#"
default_plan = "pro"
currency = "eur"
[features.seats]
kind = "gauge"
label = "Seats"
unit = "seat"
[plans.pro]
rank = 1
description = "For teams"
features = { seats = 5 }
[[prices]]
id = "${PRO_PRICE:-price_pro}"
plan = "pro"
interval = "month"
amount = 8900
[[prices]]
id = "price_1MoBy5LkdIwHu7ixZhnattbh"
plan = "pro"
interval = "year"
amount = 89000
currency = "usd"
"#;
        let c = Catalog::from_toml(src, &no_env).expect("valid");
        let seats = c.feature("seats").expect("seats");
        assert_eq!((seats.label.as_str(), seats.unit.as_str()), ("Seats", "seat"));
        assert_eq!(c.plan("pro").map(|p| p.description.as_str()), Some("For teams"));
        assert_eq!((c.prices[0].amount, c.prices[0].currency.as_str()), (Some(8900), "eur"));
        assert_eq!(c.prices[1].currency, "usd");
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].to_string().contains("placeholder default of `${PRO_PRICE}`"), "{}", c.warnings[0]);

        // Set the variable to a real-looking id: no warning, and another version.
        let env = |k: &str| (k == "PRO_PRICE").then(|| "price_1PqRsTuVwXyZ0123456789".to_string());
        let real = Catalog::from_toml(src, &env).expect("valid");
        assert!(real.warnings.is_empty(), "{:?}", real.warnings);
        assert_ne!(real.version, c.version);
        assert_eq!(Catalog::from_toml(src, &no_env).expect("valid").version, c.version);
    }

    #[test]
    fn bad_amounts_and_currencies_are_problems() {
        let src = "default_plan = \"a\"\n[features.f]\nkind = \"boolean\"\n[plans.a]\nrank = 1\n\
                   [[prices]]\nid = \"price_1MoBy5LkdIwHu7ixZhnattbh\"\nplan = \"a\"\ninterval = \"month\"\n\
                   amount = -1\ncurrency = \"USD\"\n";
        let text = Catalog::from_toml(src, &no_env).unwrap_err().to_string();
        assert!(text.contains("prices[0].amount: must not be negative"), "{text}");
        assert!(text.contains("prices[0].currency: currency `USD`"), "{text}");
    }
}
