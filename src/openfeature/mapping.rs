//! The one mapping from a decision to an OpenFeature evaluation, shared by OFREP and flagd.
//!
//! A flag key is a feature key, optionally with a view: `seats` or `seats.allowed` (boolean),
//! `seats.limit` (integer: the effective value), `seats.remaining` (integer: what is left of a
//! metered limit), `seats.decision` (object: the whole decision), `seats.reason` (string: the
//! decision's reason). Feature keys are snake_case, so the dot never clashes with one. Without a
//! view, the type the caller asks for picks it (flagd's typed RPCs); OFREP asks for no type and
//! gets the boolean.

use serde_json::{Map, Value as Json, json};

use super::EvalError;
use crate::catalog::{Catalog, FeatureIdx, FeatureKind, Value};
use crate::decide::{Decision, Reason, Upgrade};
use crate::resolve::ResolvedTenant;

/// The type a caller asks for (flagd's typed RPCs); OFREP asks for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagType {
    Boolean,
    String,
    Integer,
    Float,
    Object,
}

/// Which part of a decision a flag answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Allowed,
    Limit,
    Remaining,
    Decision,
    Reason,
}

/// An unlimited limit or allowance, as an integer flag: larger than any count.
pub const UNLIMITED: i64 = i64::MAX;

impl View {
    fn parse(s: &str) -> Option<View> {
        Some(match s {
            "allowed" => View::Allowed,
            "limit" => View::Limit,
            "remaining" => View::Remaining,
            "decision" => View::Decision,
            "reason" => View::Reason,
            _ => return None,
        })
    }

    fn suffix(self) -> &'static str {
        match self {
            View::Allowed => "",
            View::Limit => ".limit",
            View::Remaining => ".remaining",
            View::Decision => ".decision",
            View::Reason => ".reason",
        }
    }

    /// A limit needs a numeric feature, an allowance a metered one.
    fn applies_to(self, kind: FeatureKind) -> bool {
        match self {
            View::Limit => kind.is_numeric(),
            View::Remaining => kind.is_metered(),
            View::Allowed | View::Decision | View::Reason => true,
        }
    }

    fn answers(self, want: FlagType) -> bool {
        matches!(
            (self, want),
            (View::Allowed, FlagType::Boolean)
                | (View::Limit | View::Remaining, FlagType::Integer | FlagType::Float)
                | (View::Decision, FlagType::Object)
                | (View::Reason, FlagType::String)
        )
    }

    /// The views a bulk evaluation lists for a feature: the scalar ones that apply.
    pub fn bulk(kind: FeatureKind) -> impl Iterator<Item = View> {
        [View::Allowed, View::Limit, View::Remaining].into_iter().filter(move |v| v.applies_to(kind))
    }

    /// The flag key of `feature` in this view.
    pub fn key(self, feature: &str) -> String {
        format!("{feature}{}", self.suffix())
    }
}

/// A view without a suffix: the type asked for picks it. An integer of a metered feature is
/// what is left of its limit; of a config feature, its value.
fn default_view(kind: FeatureKind, want: Option<FlagType>) -> View {
    match want {
        None | Some(FlagType::Boolean) => View::Allowed,
        Some(FlagType::Integer | FlagType::Float) if kind.is_metered() => View::Remaining,
        Some(FlagType::Integer | FlagType::Float) => View::Limit,
        Some(FlagType::String) => View::Reason,
        Some(FlagType::Object) => View::Decision,
    }
}

/// The feature and view a flag key names, checked against the type asked for.
pub fn flag(catalog: &Catalog, key: &str, want: Option<FlagType>) -> Result<(FeatureIdx, View), EvalError> {
    let not_found = || EvalError::FlagNotFound(key.to_string());
    let (feature, view) = match key.split_once('.') {
        Some((f, v)) => (f, Some(View::parse(v).ok_or_else(not_found)?)),
        None => (key, None),
    };
    let fi = catalog.feature_idx(feature).ok_or_else(not_found)?;
    let kind = catalog.features[fi].kind;
    let picked = view.unwrap_or_else(|| default_view(kind, want));
    if !picked.applies_to(kind) {
        // `sso.limit` names no flag; `sso` asked for as an integer is the wrong type.
        return Err(match view {
            Some(_) => not_found(),
            None => EvalError::TypeMismatch(format!("{key} is a boolean feature: it has no number")),
        });
    }
    if let Some(w) = want
        && !picked.answers(w)
    {
        return Err(EvalError::TypeMismatch(format!("{key} is not a {w:?} flag")));
    }
    Ok((fi, picked))
}

/// A flag's value.
#[derive(Debug, Clone, PartialEq)]
pub enum FlagValue {
    Bool(bool),
    Int(i64),
    Str(String),
    Object(Map<String, Json>),
}

/// One evaluation, in OpenFeature's terms; the protocols only change its encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub key: String,
    pub value: FlagValue,
    /// OpenFeature's reason: `TARGETING_MATCH` (the tenant's answer), `STATIC` (the CE edition's).
    pub reason: &'static str,
    /// The decision's reason (`GRANTED`, `NOT_IN_PLAN`, …): the variant a tenant landed on.
    pub variant: &'static str,
    /// Flat (strings, numbers, booleans only), as both protocols require.
    pub metadata: Map<String, Json>,
}

fn limit_value(d: &Decision) -> i64 {
    match d.value {
        Some(Value::Number(n)) => n,
        Some(Value::Unlimited) => UNLIMITED,
        _ => 0,
    }
}

fn remaining_value(d: &Decision) -> i64 {
    match d.remaining {
        Some(r) => r,
        None if d.unlimited() => UNLIMITED,
        None => 0,
    }
}

fn upgrade_parts(u: &Upgrade) -> (&'static str, &str) {
    match u {
        Upgrade::Plan(k) => ("plan", k),
        Upgrade::AddOn(k) => ("addon", k),
    }
}

/// The flat metadata of a decision: why, against what limit, and what would unlock it.
fn metadata(r: &ResolvedTenant, d: &Decision, feature: &str) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("allowed".into(), json!(d.allowed));
    m.insert("reason".into(), json!(d.reason.as_str()));
    m.insert("feature".into(), json!(feature));
    if let Some(s) = d.source {
        m.insert("source".into(), json!(s.as_str()));
    }
    if let Some(l) = d.limit() {
        m.insert("limit".into(), json!(l));
    }
    if d.kind.is_some_and(FeatureKind::is_numeric) {
        m.insert("unlimited".into(), json!(d.unlimited()));
    }
    if let Some(u) = d.used {
        m.insert("used".into(), json!(u));
    }
    if let Some(rem) = d.remaining {
        m.insert("remaining".into(), json!(rem));
    }
    if let Some(p) = d.period {
        m.insert("periodStart".into(), json!(p.start));
        if let Some(end) = p.end {
            m.insert("resetsAt".into(), json!(end));
        }
    }
    if let Some(u) = &d.upgrade {
        let (kind, key) = upgrade_parts(u);
        m.insert("upgradeKind".into(), json!(kind));
        m.insert("upgradeKey".into(), json!(key));
    }
    if let Some(s) = d.shadow_denial {
        m.insert("shadowDenial".into(), json!(s.as_str()));
    }
    m.insert("revision".into(), json!(r.revision));
    m.insert("plan".into(), json!(r.plan_key()));
    m.insert("phase".into(), json!(r.lifecycle.phase.as_str()));
    m.insert("fallback".into(), json!(r.fallback));
    m
}

/// The object view: the flat metadata plus what does not fit in it (quantity, notices).
fn decision_object(r: &ResolvedTenant, d: &Decision, meta: &Map<String, Json>) -> Map<String, Json> {
    let mut o = meta.clone();
    o.insert("quantity".into(), json!(d.quantity));
    let notices = r.lifecycle.notices.iter().map(|n| {
        json!({
            "kind": format!("{:?}", n.kind),
            "message": n.message,
            "at": n.at,
            "dismissible": n.dismissible,
            "daysLeft": n.days_left,
        })
    });
    o.insert("notices".into(), Json::Array(notices.collect()));
    o
}

/// The evaluation of one decision in one view. A denial is an ordinary evaluation.
pub fn evaluation(r: &ResolvedTenant, d: &Decision, feature: &str, view: View) -> Evaluation {
    let metadata = metadata(r, d, feature);
    let value = match view {
        View::Allowed => FlagValue::Bool(d.allowed),
        View::Limit => FlagValue::Int(limit_value(d)),
        View::Remaining => FlagValue::Int(remaining_value(d)),
        View::Decision => FlagValue::Object(decision_object(r, d, &metadata)),
        View::Reason => FlagValue::Str(d.reason.as_str().to_string()),
    };
    // The CE edition answers the same for everyone: a static flag.
    let reason = if d.reason == Reason::EditionBypass { "STATIC" } else { "TARGETING_MATCH" };
    Evaluation { key: view.key(feature), value, reason, variant: d.reason.as_str(), metadata }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let src = include_str!("../../examples/catalog.toml");
        Catalog::from_toml(src, &|_| None).expect("example catalog")
    }

    #[test]
    fn keys_name_a_feature_and_a_view() {
        let c = catalog();
        let view = |key: &str, want| flag(&c, key, want).map(|(_, v)| v);
        assert_eq!(view("sso", None).ok(), Some(View::Allowed));
        assert_eq!(view("seats.allowed", None).ok(), Some(View::Allowed));
        assert_eq!(view("seats", Some(FlagType::Integer)).ok(), Some(View::Remaining));
        assert_eq!(view("max_file_mb", Some(FlagType::Float)).ok(), Some(View::Limit));
        assert_eq!(view("sso", Some(FlagType::String)).ok(), Some(View::Reason));
        assert_eq!(view("sso", Some(FlagType::Object)).ok(), Some(View::Decision));
        assert!(matches!(view("sso.limit", None), Err(EvalError::FlagNotFound(_))));
        assert!(matches!(view("max_file_mb.remaining", None), Err(EvalError::FlagNotFound(_))));
        assert!(matches!(view("seats.nope", None), Err(EvalError::FlagNotFound(_))));
        assert!(matches!(view("nope", None), Err(EvalError::FlagNotFound(_))));
        assert!(matches!(view("sso", Some(FlagType::Integer)), Err(EvalError::TypeMismatch(_))));
        assert!(matches!(view("seats.limit", Some(FlagType::Boolean)), Err(EvalError::TypeMismatch(_))));
    }
}
