//! flagd's evaluation protocol (`flagd.evaluation.v1`): `google.protobuf.Struct` contexts in,
//! [`Evaluation`]s out. The evaluation is already of the type asked for (the mapping checked).

use std::collections::BTreeMap;

use prost_types::value::Kind;
use serde_json::{Map, Number, Value as Json};

use crate::openfeature::{Evaluation, FlagValue};
use crate::pb::flagd as pb;

fn json(v: prost_types::Value) -> Json {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::NumberValue(n)) => Number::from_f64(n).map_or(Json::Null, Json::Number),
        Some(Kind::StringValue(s)) => Json::String(s),
        Some(Kind::BoolValue(b)) => Json::Bool(b),
        Some(Kind::StructValue(s)) => Json::Object(context(Some(s))),
        Some(Kind::ListValue(l)) => Json::Array(l.values.into_iter().map(json).collect()),
    }
}

/// The evaluation context, as the JSON object OFREP would have sent.
pub fn context(s: Option<prost_types::Struct>) -> Map<String, Json> {
    s.map(|s| s.fields.into_iter().map(|(k, v)| (k, json(v))).collect()).unwrap_or_default()
}

/// Every value gets a kind: flagd's providers read `kind` without checking it is set.
fn value(v: &Json) -> prost_types::Value {
    let kind = match v {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(prost_types::ListValue { values: a.iter().map(value).collect() }),
        Json::Object(o) => Kind::StructValue(structure(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

pub fn structure(m: &Map<String, Json>) -> prost_types::Struct {
    prost_types::Struct { fields: m.iter().map(|(k, v)| (k.clone(), value(v))).collect::<BTreeMap<_, _>>() }
}

pub fn boolean(e: Evaluation) -> pb::ResolveBooleanResponse {
    pb::ResolveBooleanResponse {
        value: matches!(e.value, FlagValue::Bool(true)),
        reason: e.reason.into(),
        variant: e.variant.into(),
        metadata: Some(structure(&e.metadata)),
    }
}

fn int(e: &Evaluation) -> i64 {
    match e.value {
        FlagValue::Int(i) => i,
        _ => 0,
    }
}

pub fn integer(e: Evaluation) -> pb::ResolveIntResponse {
    pb::ResolveIntResponse {
        value: int(&e),
        reason: e.reason.into(),
        variant: e.variant.into(),
        metadata: Some(structure(&e.metadata)),
    }
}

pub fn float(e: Evaluation) -> pb::ResolveFloatResponse {
    pb::ResolveFloatResponse {
        value: int(&e) as f64,
        reason: e.reason.into(),
        variant: e.variant.into(),
        metadata: Some(structure(&e.metadata)),
    }
}

pub fn string(e: Evaluation) -> pb::ResolveStringResponse {
    let metadata = Some(structure(&e.metadata));
    let value = match e.value {
        FlagValue::Str(s) => s,
        _ => String::new(),
    };
    pb::ResolveStringResponse { value, reason: e.reason.into(), variant: e.variant.into(), metadata }
}

pub fn object(e: Evaluation) -> pb::ResolveObjectResponse {
    let value = match &e.value {
        FlagValue::Object(o) => Some(structure(o)),
        _ => None,
    };
    pb::ResolveObjectResponse {
        value,
        reason: e.reason.into(),
        variant: e.variant.into(),
        metadata: Some(structure(&e.metadata)),
    }
}

/// `AnyFlag` has no integer: integers travel as doubles, as in flagd.
pub fn any_flag(e: &Evaluation) -> pb::AnyFlag {
    use pb::any_flag::Value as V;
    let value = match &e.value {
        FlagValue::Bool(b) => V::BoolValue(*b),
        FlagValue::Int(i) => V::DoubleValue(*i as f64),
        FlagValue::Str(s) => V::StringValue(s.clone()),
        FlagValue::Object(o) => V::ObjectValue(structure(o)),
    };
    pb::AnyFlag {
        reason: e.reason.into(),
        variant: e.variant.into(),
        value: Some(value),
        metadata: Some(structure(&e.metadata)),
    }
}

pub fn resolve_all(evaluations: &[Evaluation], etag: &str) -> pb::ResolveAllResponse {
    let mut meta = Map::new();
    meta.insert("etag".into(), Json::String(etag.to_string()));
    pb::ResolveAllResponse {
        flags: evaluations.iter().map(|e| (e.key.clone(), any_flag(e))).collect(),
        metadata: Some(structure(&meta)),
    }
}

/// One event of `EventStream`.
pub fn event(kind: &str, data: Option<&Map<String, Json>>) -> pb::EventStreamResponse {
    pb::EventStreamResponse { r#type: kind.to_string(), data: data.map(structure) }
}
