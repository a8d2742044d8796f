//! OpenFeature (SPEC §11): any OpenFeature SDK gates on entitlements through its stock OFREP or
//! flagd provider. Both protocols share this module: the evaluation context read into a check,
//! the decision path of `Check` ([`Service::check`]), and one mapping from a decision to an
//! evaluation ([`mapping`]). The wire encodings live with their listeners: OFREP in [`ofrep`]
//! (HTTP), flagd's in `grpc::flagd` and `grpc::convert::flagd`.
//!
//! Context: `targetingKey` is the tenant id; `quantity` (a non-negative integer), `intent`
//! (`read` or `write`) and `minRevision` pass through to the check as in `Check`.

pub mod mapping;
pub mod ofrep;

use std::hash::{Hash, Hasher};

use serde_json::{Map, Value as Json};

pub use mapping::{Evaluation, FlagType, FlagValue, View};

use crate::command::quote;
use crate::decide::Intent;
use crate::service::{CheckItem, Service, ServiceError};

/// Why an evaluation has no value. A denial is never one of these: it is an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("flag {} not found: flag keys are feature keys, optionally with .limit, .remaining, .decision or .reason", quote(.0))]
    FlagNotFound(String),
    #[error("targetingKey (the tenant id) is missing from the evaluation context")]
    TargetingKeyMissing,
    #[error("invalid evaluation context: {0}")]
    InvalidContext(String),
    #[error("type mismatch: {0}")]
    TypeMismatch(String),
    #[error("request body is not a JSON object: {0}")]
    Parse(String),
    #[error(transparent)]
    Service(ServiceError),
}

/// What the service refuses as invalid came from the context (tenant id, quantity).
impl From<ServiceError> for EvalError {
    fn from(e: ServiceError) -> EvalError {
        match e {
            ServiceError::InvalidArgument(i) => EvalError::InvalidContext(i.to_string()),
            e => EvalError::Service(e),
        }
    }
}

impl EvalError {
    /// OpenFeature's error code.
    pub fn code(&self) -> &'static str {
        match self {
            EvalError::FlagNotFound(_) => "FLAG_NOT_FOUND",
            EvalError::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            EvalError::InvalidContext(_) => "INVALID_CONTEXT",
            EvalError::TypeMismatch(_) => "TYPE_MISMATCH",
            EvalError::Parse(_) => "PARSE_ERROR",
            EvalError::Service(_) => "GENERAL",
        }
    }
}

/// The evaluation context, as far as a check reads it; other attributes are ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    pub tenant: String,
    pub quantity: Option<i64>,
    pub intent: Intent,
    pub min_revision: Option<u64>,
}

/// A whole number (flagd's context carries every number as a double).
fn integer(ctx: &Map<String, Json>, name: &str) -> Result<Option<i64>, EvalError> {
    let bad = || EvalError::InvalidContext(format!("{name} must be an integer"));
    match ctx.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
            _ => Err(bad()),
        },
        Some(_) => Err(bad()),
    }
}

impl Context {
    pub fn from_json(ctx: &Map<String, Json>) -> Result<Context, EvalError> {
        let tenant = match ctx.get("targetingKey") {
            None | Some(Json::Null) => return Err(EvalError::TargetingKeyMissing),
            Some(Json::String(s)) if s.is_empty() => return Err(EvalError::TargetingKeyMissing),
            Some(Json::String(s)) => s.clone(),
            Some(_) => return Err(EvalError::InvalidContext("targetingKey must be a string".into())),
        };
        let intent = match ctx.get("intent") {
            None | Some(Json::Null) => Intent::Write,
            Some(Json::String(s)) if s.eq_ignore_ascii_case("read") => Intent::Read,
            Some(Json::String(s)) if s.eq_ignore_ascii_case("write") => Intent::Write,
            Some(_) => return Err(EvalError::InvalidContext("intent must be \"read\" or \"write\"".into())),
        };
        let min_revision = integer(ctx, "minRevision")?
            .map(|r| u64::try_from(r).map_err(|_| EvalError::InvalidContext("minRevision must not be negative".into())))
            .transpose()?;
        Ok(Context { tenant, quantity: integer(ctx, "quantity")?, intent, min_revision })
    }
}

/// Evaluate one flag: the same decision path, cache and consistency rules as `Check`.
pub async fn evaluate(
    service: &Service,
    key: &str,
    want: Option<FlagType>,
    ctx: &Map<String, Json>,
) -> Result<Evaluation, EvalError> {
    let started = crate::clock::monotonic();
    let (fi, view) = mapping::flag(service.catalog(), key, want)?;
    let c = Context::from_json(ctx)?;
    crate::trace::record_tenant(&c.tenant);
    let feature = &service.catalog().features[fi].key;
    let (cached, d) = service.check(&c.tenant, feature, c.quantity, c.intent, c.min_revision).await?;
    service.stats.observe(std::slice::from_ref(&d), started.elapsed());
    // The key as asked (`seats.allowed` is `seats`'s boolean, but answers under its own name).
    Ok(Evaluation { key: key.to_string(), ..mapping::evaluation(&cached.tenant, &d, feature, view) })
}

/// Every flag of the catalog for one context (its scalar views: see [`View::bulk`]), and the
/// tag that changes whenever any of these answers changes.
pub async fn evaluate_all(service: &Service, ctx: &Map<String, Json>) -> Result<(Vec<Evaluation>, String), EvalError> {
    let started = crate::clock::monotonic();
    let c = Context::from_json(ctx)?;
    crate::trace::record_tenant(&c.tenant);
    let features = &service.catalog().features;
    let items: Vec<CheckItem> =
        features.iter().map(|f| CheckItem { feature: f.key.clone(), quantity: c.quantity, intent: c.intent }).collect();
    let (cached, ds) = service.check_batch(&c.tenant, &items, c.min_revision).await?;
    service.stats.observe(&ds, started.elapsed());
    let mut out = Vec::with_capacity(ds.len() * 2);
    for (d, f) in ds.iter().zip(features) {
        out.extend(View::bulk(f.kind).map(|v| mapping::evaluation(&cached.tenant, d, &f.key, v)));
    }
    let tag = etag(cached.tenant.revision, &out);
    Ok((out, tag))
}

/// The tenant's revision and a digest of the answers themselves: a new catalog, recorded usage
/// or a trial ending by time alone change answers without a new revision, and must change the
/// tag too. `DefaultHasher::new` has fixed keys, so every replica of one build agrees.
fn etag(revision: u64, evaluations: &[Evaluation]) -> String {
    let mut h = std::hash::DefaultHasher::new();
    for e in evaluations {
        e.key.hash(&mut h);
        match &e.value {
            FlagValue::Bool(b) => b.hash(&mut h),
            FlagValue::Int(i) => i.hash(&mut h),
            FlagValue::Str(s) => s.hash(&mut h),
            FlagValue::Object(o) => Json::Object(o.clone()).to_string().hash(&mut h),
        }
        e.variant.hash(&mut h);
        Json::Object(e.metadata.clone()).to_string().hash(&mut h);
    }
    format!("\"{revision}-{:016x}\"", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(v: Json) -> Map<String, Json> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn context_attributes() {
        let c = Context::from_json(&ctx(json!({"targetingKey": "acme", "quantity": 3.0, "intent": "READ"})));
        assert_eq!(
            c.ok(),
            Some(Context { tenant: "acme".into(), quantity: Some(3), intent: Intent::Read, min_revision: None })
        );
        assert!(matches!(Context::from_json(&ctx(json!({}))), Err(EvalError::TargetingKeyMissing)));
        assert!(matches!(Context::from_json(&ctx(json!({"targetingKey": ""}))), Err(EvalError::TargetingKeyMissing)));
        for bad in [
            json!({"targetingKey": 7}),
            json!({"targetingKey": "a", "quantity": 1.5}),
            json!({"targetingKey": "a", "intent": "delete"}),
            json!({"targetingKey": "a", "minRevision": -1}),
        ] {
            assert!(matches!(Context::from_json(&ctx(bad)), Err(EvalError::InvalidContext(_))));
        }
    }
}
