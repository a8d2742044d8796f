//! `GetCatalog`: the loaded catalog, for display. Everything but the price map's internals is
//! here: labels, descriptions, prices with amounts, values per plan, what add-ons unlock.

use crate::catalog::{Catalog, FeatureIdx, FeatureKind, Price, PriceComponent, PriceTarget, Value};
use crate::pb;

fn feature_value(catalog: &Catalog, idx: FeatureIdx, value: Value) -> pb::FeatureValue {
    pb::FeatureValue { feature: catalog.features[idx].key.clone(), value: Some(value.into()) }
}

fn price(p: &Price, component: PriceComponent) -> pb::CatalogPrice {
    pb::CatalogPrice {
        id: p.id.clone(),
        interval: p.interval.as_str().to_string(),
        component: match component {
            PriceComponent::Base => "base",
            PriceComponent::Seat => "seat",
        }
        .to_string(),
        amount: p.amount,
        currency: p.currency.clone(),
    }
}

/// The prices of one plan (`Some(plan)`) or one add-on, in file order.
fn prices_of(catalog: &Catalog, plan: Option<&str>, addon: Option<&str>) -> Vec<pb::CatalogPrice> {
    catalog
        .prices
        .iter()
        .filter_map(|p| match &p.target {
            PriceTarget::Plan { plan: key, component } if Some(key.as_str()) == plan => Some(price(p, *component)),
            PriceTarget::AddOn { addon: key } if Some(key.as_str()) == addon => Some(price(p, PriceComponent::Base)),
            _ => None,
        })
        .collect()
}

fn feature(f: &crate::catalog::Feature) -> pb::CatalogFeature {
    pb::CatalogFeature {
        key: f.key.clone(),
        kind: pb::FeatureKind::from(f.kind) as i32,
        label: f.label.clone(),
        description: f.description.clone(),
        unit: f.unit.clone(),
        period: match f.kind {
            FeatureKind::Counter(p) => p.as_str().to_string(),
            _ => String::new(),
        },
        addon_only: f.addon_only,
        shadow: f.enforcement == crate::catalog::Enforcement::Shadow,
    }
}

/// The whole catalog as `GetCatalog` answers it.
pub fn catalog(c: &Catalog) -> pb::GetCatalogResponse {
    let plans = c
        .plans_by_rank()
        .iter()
        .map(|p| pb::CatalogPlan {
            key: p.key.clone(),
            label: p.name.clone(),
            description: p.description.clone(),
            rank: p.rank,
            seats_feature: p.seats_feature.map(|i| c.features[i].key.clone()).unwrap_or_default(),
            features: p.values.iter().enumerate().map(|(i, v)| feature_value(c, i, *v)).collect(),
            prices: prices_of(c, Some(&p.key), None),
        })
        .collect();
    let addons = c
        .addons
        .iter()
        .map(|a| pb::CatalogAddOn {
            key: a.key.clone(),
            label: a.name.clone(),
            description: a.description.clone(),
            unlocks: a.grants.iter().map(|(i, v)| feature_value(c, *i, *v)).collect(),
            prices: prices_of(c, None, Some(&a.key)),
        })
        .collect();
    let trial_offers = c
        .trial_offers
        .iter()
        .map(|o| pb::CatalogTrialOffer {
            key: o.key.clone(),
            plan: o.plan.clone(),
            days: o.days,
            requires_paid_plan: o.requires_paid_plan.clone(),
            not_while_trialing: o.not_while_trialing,
        })
        .collect();
    let l = &c.lifecycle;
    pb::GetCatalogResponse {
        version: c.version.clone(),
        edition: c.edition.to_string(),
        default_plan: c.default_plan.clone(),
        features: c.features.iter().map(feature).collect(),
        plans,
        addons,
        trial_offers,
        trial_policy: Some(pb::TrialPolicy {
            trial_plan: l.trial_plan.clone().unwrap_or_default(),
            trial_days: l.trial_days,
            warning_days: l.warning_days.clone(),
            hard_lock_after_days: l.hard_lock_after_days,
            archive_after_days: l.archive_after_days,
        }),
    }
}
