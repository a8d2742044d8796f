//! OpenFeature end to end: the stock Rust SDK (`open-feature`) with the stock OFREP provider
//! (`open-feature-ofrep`) and flagd RPC provider (`open-feature-flagd`) evaluating entitlements
//! against the server on ephemeral ports, while the admin plane changes them.
//!
//! What the stock providers cannot show is checked on the wire: the Rust OFREP provider
//! evaluates single flags only (no bulk, so the bulk `ETag` is read over raw HTTP) and reads
//! neither reason nor metadata; the Rust flagd RPC provider never opens `EventStream`, so the
//! stream is read with a client generated from our copy of flagd's proto.

mod common;

use std::time::Duration;

use common::http::{exchange, post};
use common::*;
use entitlements::config::ServeArgs;
use entitlements::pb::flagd::service_client::ServiceClient as FlagdClient;
use entitlements::pb::{self, GrantAddOnRequest, SetOverrideRequest};
use entitlements::server::{self, Running};
use open_feature::provider::FeatureProvider;
use open_feature::{EvaluationContext, EvaluationErrorCode, FlagMetadataValue, StructValue, Value};
use open_feature_flagd::{FlagdOptions, FlagdProvider, ResolverType};
use open_feature_ofrep::{OfrepOptions, OfrepProvider};

const ADMIN: &str = "of-admin-token";
const DATA: &str = "of-data-token";

async fn start(data_token: Option<&str>) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ServeArgs {
        admin_token: Some(ADMIN.into()),
        data_token: data_token.map(Into::into),
        max_ttl: Duration::from_secs(300),
        watch_heartbeat: Duration::from_millis(200),
        ..ServeArgs::local(catalog_path(), dir.path().join("of.db").display().to_string())
    };
    (server::start(&args).await.expect("server starts"), dir)
}

fn tenant(id: &str) -> EvaluationContext {
    EvaluationContext::default().with_targeting_key(id)
}

async fn grant_teams(running: &Running, tenant: &str) -> u64 {
    let mut admin = admin_client(running.grpc_addr).await;
    let req = GrantAddOnRequest {
        tenant_id: tenant.into(),
        actor: "alice".into(),
        rationale: "openfeature test".into(),
        addon: "teams".into(),
        ..Default::default()
    };
    admin.grant_add_on(with_token(ADMIN, req)).await.expect("grant").into_inner().revision
}

async fn set_seats(running: &Running, tenant: &str, n: i64) -> u64 {
    let mut admin = admin_client(running.grpc_addr).await;
    let req = SetOverrideRequest {
        tenant_id: tenant.into(),
        actor: "alice".into(),
        rationale: "openfeature test".into(),
        feature: "seats".into(),
        value: Some(pb::set_override_request::Value::Number(n)),
        expires_at: None,
    };
    admin.set_override(with_token(ADMIN, req)).await.expect("override").into_inner().revision
}

fn field<'a>(s: &'a StructValue, name: &str) -> &'a Value {
    s.fields.get(name).unwrap_or_else(|| panic!("{name} missing from {s:?}"))
}

async fn ofrep_provider(running: &Running, headers: &[(&'static str, &str)]) -> OfrepProvider {
    let mut options = OfrepOptions { base_url: format!("http://{}", running.http_addr), ..Default::default() };
    for (k, v) in headers {
        options.headers.insert(*k, v.parse().expect("header value"));
    }
    OfrepProvider::new(options).await.expect("OFREP provider")
}

#[tokio::test]
async fn ofrep_provider_evaluates_entitlements() {
    let (running, _dir) = start(None).await;
    let mut api = open_feature::OpenFeature::singleton_mut().await;
    api.set_named_provider("ofrep", ofrep_provider(&running, &[]).await).await;
    let client = api.create_named_client("ofrep");
    drop(api);
    let acme = tenant("acme");

    // A denial is an ordinary evaluation: false, with the decision's reason as the variant.
    let d = client.get_bool_details("invoice_designer", Some(&acme), None).await.expect("denial evaluates");
    assert!(!d.value);
    assert_eq!(d.variant.as_deref(), Some("NOT_IN_PLAN"));
    assert!(client.get_bool_value("max_file_mb", Some(&acme), None).await.expect("fits"));
    let big = tenant("acme").with_custom_field("quantity", 50);
    let d = client.get_bool_details("max_file_mb", Some(&big), None).await.expect("too big evaluates");
    assert!(!d.value);
    assert_eq!(d.variant.as_deref(), Some("LIMIT_EXCEEDED"));

    // Integer views: a config feature's value, a gauge's remaining allowance.
    assert_eq!(client.get_int_value("max_file_mb.limit", Some(&acme), None).await.expect("limit"), 10);
    assert_eq!(client.get_int_value("seats.remaining", Some(&acme), None).await.expect("remaining"), 3);

    // Object view: the whole decision.
    let o: StructValue =
        client.get_struct_value("invoice_designer.decision", Some(&acme), None).await.expect("decision");
    assert_eq!(field(&o, "allowed").as_bool(), Some(false));
    assert_eq!(field(&o, "reason").as_str(), Some("NOT_IN_PLAN"));
    assert_eq!(field(&o, "upgradeKind").as_str(), Some("plan"));
    assert_eq!(field(&o, "upgradeKey").as_str(), Some("pro"));
    assert_eq!(field(&o, "plan").as_str(), Some("free"));

    // Unknown flag and missing targeting key are errors (the provider reads 404 and 400).
    let e = client.get_bool_value("no_such_feature", Some(&acme), None).await.expect_err("unknown flag");
    assert_eq!(e.code, EvaluationErrorCode::FlagNotFound);
    let e = client.get_bool_value("sso.limit", Some(&acme), None).await.expect_err("no such view");
    assert_eq!(e.code, EvaluationErrorCode::FlagNotFound);
    let e = client.get_bool_value("sso", Some(&EvaluationContext::default()), None).await.expect_err("no tenant");
    assert_eq!(e.code, EvaluationErrorCode::InvalidContext);

    // An entitlement changes while the provider is in use: the next evaluation sees it.
    assert!(!client.get_bool_value("teams_integration", Some(&acme), None).await.expect("before"));
    grant_teams(&running, "acme").await;
    let d = client.get_bool_details("teams_integration", Some(&acme), None).await.expect("after");
    assert!(d.value);
    assert_eq!(d.variant.as_deref(), Some("GRANTED"));
    set_seats(&running, "acme", 7).await;
    assert_eq!(client.get_int_value("seats.limit", Some(&acme), None).await.expect("override"), 7);

    running.stop().await.expect("stop");
}

#[tokio::test]
async fn ofrep_wire_errors_and_bulk_etag() {
    let (running, _dir) = start(None).await;
    let addr = running.http_addr;
    let path = "/ofrep/v1/evaluate/flags";
    let acme = br#"{"context":{"targetingKey":"bulk-acme"}}"#;

    let (status, body) = post(addr, &format!("{path}/sso"), &[], br#"{"context":{}}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("TARGETING_KEY_MISSING"), "{body}");
    let (status, body) = post(addr, &format!("{path}/sso"), &[], b"{not json").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("PARSE_ERROR"), "{body}");
    let (status, body) =
        post(addr, &format!("{path}/sso"), &[], br#"{"context":{"targetingKey":"a","intent":"delete"}}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("INVALID_CONTEXT"), "{body}");
    let (status, body) = post(addr, &format!("{path}/nope"), &[], acme).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("FLAG_NOT_FOUND") && body.contains(r#""key":"nope""#), "{body}");
    let (status, body) = post(addr, &format!("{path}/invoice_designer"), &[], acme).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["value"], false);
    assert_eq!(v["reason"], "TARGETING_MATCH");
    assert_eq!(v["metadata"]["reason"], "NOT_IN_PLAN");
    assert_eq!(v["metadata"]["upgradeKey"], "pro");

    // Bulk: a tag, 304 while nothing changed, a new tag once this tenant's answers change.
    let etag = |h: &[(String, String)]| h.iter().find(|(k, _)| k == "etag").map(|(_, v)| v.clone()).expect("ETag");
    let (status, headers, body) = exchange(addr, "POST", path, &[], acme).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let flags = v["flags"].as_array().expect("flags");
    assert!(flags.iter().any(|f| f["key"] == "seats.remaining" && f["value"] == 3), "{body}");
    let first = etag(&headers);
    let (status, headers, _) = exchange(addr, "POST", path, &[("If-None-Match", first.clone())], acme).await;
    assert_eq!(status, 304);
    assert_eq!(etag(&headers), first);
    grant_teams(&running, "bulk-acme").await;
    let (status, headers, body) = exchange(addr, "POST", path, &[("If-None-Match", first.clone())], acme).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(etag(&headers), first, "a new revision is a new tag");
    // Usage changes answers without a new revision: the tag follows the answers.
    let second = etag(&headers);
    let mut data = data_client(running.grpc_addr).await;
    let usage = pb::RecordUsageRequest {
        tenant_id: "bulk-acme".into(),
        feature: "seats".into(),
        value: 2,
        mode: pb::UsageMode::Set as i32,
        ..Default::default()
    };
    data.record_usage(usage).await.expect("usage");
    let (status, headers, body) = exchange(addr, "POST", path, &[("If-None-Match", second.clone())], acme).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(etag(&headers), second, "recorded usage is a new tag");
    let (status, body) = post(addr, path, &[], br#"{"context":{}}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("TARGETING_KEY_MISSING"), "{body}");

    running.stop().await.expect("stop");
}

#[tokio::test]
async fn ofrep_and_flagd_take_the_data_plane_token() {
    let (running, _dir) = start(Some(DATA)).await;
    let acme = tenant("acme");
    let bearer = format!("Bearer {DATA}");
    for headers in [vec![("authorization", bearer.as_str())], vec![("x-api-key", DATA)]] {
        let p = ofrep_provider(&running, &headers).await;
        let d = p.resolve_bool_value("max_file_mb", &acme).await.expect("authorized");
        assert!(d.value);
    }
    let p = ofrep_provider(&running, &[]).await;
    let e = p.resolve_bool_value("max_file_mb", &acme).await.expect_err("no token");
    assert!(matches!(e.code, EvaluationErrorCode::General(_)), "{e:?}");
    let (status, _) =
        post(running.http_addr, "/ofrep/v1/evaluate/flags", &[("X-API-Key", "wrong".into())], b"{}").await;
    assert_eq!(status, 401);

    let mut flagd = FlagdClient::connect(format!("http://{}", running.grpc_addr)).await.expect("connect");
    let req = || pb::flagd::ResolveBooleanRequest { flag_key: "max_file_mb".into(), context: Some(context("acme")) };
    let e = flagd.resolve_boolean(req()).await.expect_err("no token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(flagd.resolve_boolean(with_token(DATA, req())).await.expect("token").into_inner().value);
    running.stop().await.expect("stop");
}

fn context(tenant: &str) -> prost_types::Struct {
    let v = prost_types::Value { kind: Some(prost_types::value::Kind::StringValue(tenant.into())) };
    prost_types::Struct { fields: [("targetingKey".to_string(), v)].into() }
}

async fn flagd_provider(running: &Running) -> FlagdProvider {
    FlagdProvider::new(FlagdOptions {
        host: "127.0.0.1".into(),
        port: running.grpc_addr.port(),
        resolver_type: ResolverType::Rpc,
        // Answers are per tenant (TARGETING_MATCH): the provider would not cache them anyway.
        cache_settings: None,
        ..Default::default()
    })
    .await
    .expect("flagd provider")
}

fn meta<'a>(m: &'a open_feature::FlagMetadata, k: &str) -> &'a FlagMetadataValue {
    m.values.get(k).unwrap_or_else(|| panic!("{k} missing from {m:?}"))
}

#[tokio::test]
async fn flagd_provider_evaluates_entitlements() {
    let (running, _dir) = start(None).await;
    let mut api = open_feature::OpenFeature::singleton_mut().await;
    api.set_named_provider("flagd", flagd_provider(&running).await).await;
    let client = api.create_named_client("flagd");
    drop(api);
    let acme = tenant("flagd-acme");

    let d = client.get_bool_details("invoice_designer", Some(&acme), None).await.expect("denial evaluates");
    assert!(!d.value);
    assert_eq!(d.variant.as_deref(), Some("NOT_IN_PLAN"));
    assert!(matches!(meta(&d.flag_metadata, "reason"), FlagMetadataValue::String(r) if r == "NOT_IN_PLAN"));
    assert!(matches!(meta(&d.flag_metadata, "upgradeKey"), FlagMetadataValue::String(k) if k == "pro"));
    assert!(matches!(meta(&d.flag_metadata, "plan"), FlagMetadataValue::String(p) if p == "free"));

    // Without a view the type asked for picks one: a config's value, a gauge's remaining.
    let d = client.get_int_details("max_file_mb", Some(&acme), None).await.expect("config int");
    assert_eq!(d.value, 10);
    assert!(matches!(meta(&d.flag_metadata, "limit"), FlagMetadataValue::Float(l) if *l == 10.0));
    assert_eq!(client.get_int_value("seats", Some(&acme), None).await.expect("gauge int"), 3);
    assert_eq!(client.get_int_value("seats.limit", Some(&acme), None).await.expect("limit"), 3);
    assert_eq!(client.get_float_value("seats", Some(&acme), None).await.expect("float"), 3.0);
    assert_eq!(client.get_string_value("sso", Some(&acme), None).await.expect("string"), "NOT_IN_PLAN");
    let o: StructValue = client.get_struct_value("seats", Some(&acme), None).await.expect("object");
    assert_eq!(field(&o, "allowed").as_bool(), Some(true));

    let e = client.get_bool_value("no_such_feature", Some(&acme), None).await.expect_err("unknown");
    assert_eq!(e.code, EvaluationErrorCode::FlagNotFound);
    let e = client.get_int_value("sso", Some(&acme), None).await.expect_err("boolean has no number");
    assert_eq!(e.code, EvaluationErrorCode::TypeMismatch);
    let e = client.get_bool_value("sso", Some(&EvaluationContext::default()), None).await.expect_err("no tenant");
    assert_eq!(e.code, EvaluationErrorCode::InvalidContext);

    // The change arrives on EventStream while the provider stays connected and sees it.
    let mut raw = FlagdClient::connect(format!("http://{}", running.grpc_addr)).await.expect("connect");
    let mut events = raw.event_stream(pb::flagd::EventStreamRequest {}).await.expect("stream").into_inner();
    let first = events.message().await.expect("event").expect("open");
    assert_eq!(first.r#type, "provider_ready");
    let mut named = raw
        .event_stream(with_token(ADMIN, pb::flagd::EventStreamRequest {}))
        .await
        .expect("stream with a relay's credential")
        .into_inner();
    assert_eq!(named.message().await.expect("event").expect("open").r#type, "provider_ready");

    assert!(!client.get_bool_value("teams_integration", Some(&acme), None).await.expect("before"));
    let rev = grant_teams(&running, "flagd-acme").await;
    let change = next_change(&mut events).await;
    assert!(change.data.is_none(), "tenant ids are only for a relay's credential: {change:?}");
    let change = next_change(&mut named).await;
    let data = change.data.expect("data").fields;
    assert!(matches!(&data["targetingKey"].kind, Some(prost_types::value::Kind::StringValue(t)) if t == "flagd-acme"));
    assert!(matches!(data["revision"].kind, Some(prost_types::value::Kind::NumberValue(r)) if r == rev as f64));
    let d = client.get_bool_details("teams_integration", Some(&acme), None).await.expect("after");
    assert!(d.value);
    assert!(matches!(meta(&d.flag_metadata, "revision"), FlagMetadataValue::Float(r) if *r == rev as f64));

    // ResolveAll: every scalar view, integers as doubles.
    let all = raw.resolve_all(pb::flagd::ResolveAllRequest { context: Some(context("flagd-acme")) }).await;
    let flags = all.expect("resolve all").into_inner().flags;
    use pb::flagd::any_flag::Value as V;
    assert_eq!(flags["teams_integration"].value, Some(V::BoolValue(true)));
    assert_eq!(flags["seats.remaining"].value, Some(V::DoubleValue(3.0)));
    assert!(!flags.contains_key("sso.limit"));

    running.stop().await.expect("stop");
}

/// The next `configuration_change`, past heartbeats; a generous deadline, not a timing assertion.
async fn next_change(events: &mut tonic::Streaming<pb::flagd::EventStreamResponse>) -> pb::flagd::EventStreamResponse {
    let wait = async {
        loop {
            let e = events.message().await.expect("event").expect("stream open");
            match e.r#type.as_str() {
                "keep_alive" => continue,
                "configuration_change" => return e,
                other => panic!("unexpected event {other}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait).await.expect("a configuration_change")
}
