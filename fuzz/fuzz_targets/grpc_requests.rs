//! gRPC request reading and validation, against the example catalog, with no network and no
//! store: arbitrary bytes decoded (prost) as one of the API's request messages, then the
//! conversion and validation its handler runs (`grpc::admin`, `grpc::data`, `grpc::convert`,
//! `service::*`). A request the service would accept then runs through the core as the service
//! would run it (commands applied to a tenant, decisions, explanations, usage), with the tenant
//! state the store would have loaded replaced by fixed ones.
//!
//! Input: one byte choosing the message ([`Kind`], modulo their number), then its encoding.
//! Besides requests, `GetTenantStateResponse` is read the way a relay reads its upstream's answer.
//!
//! Properties checked beyond "no panic": a command read from a request and forwarded by a relay
//! (`CommandRequest::new`) reads back as the same command; a tenant state a relay rebuilds
//! survives another trip through the protobuf unchanged.

#![no_main]

use std::sync::{Arc, OnceLock};

use entitlements::catalog::{Catalog, FeatureIdx};
use entitlements::command::{Actor, Command, Invalid, check_actor, invalid, required};
use entitlements::decide::{Intent, decide, usage_gate};
use entitlements::explain::explain;
use entitlements::feed::ChangeFeed;
use entitlements::grpc::convert::{self, CommandMessage, CommandRequest};
use entitlements::pb;
use entitlements::resolve;
use entitlements::service::{CheckItem, MAX_BATCH, UsageLine};
use entitlements::store::StripeStatus;
use entitlements::tenant::{DAY, TenantState, Trial, validate_tenant_id};
use entitlements::usage::validate_report;
use entitlements_fuzz::{NOW, example_catalog, exercise, unknown_tenant};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The message the input's first byte chooses.
const KINDS: [Kind; 20] = [
    Kind::PutTenant,
    Kind::AssignPlan,
    Kind::UnassignPlan,
    Kind::ExtendTrial,
    Kind::GrantAddOn,
    Kind::RevokeAddOn,
    Kind::SetOverride,
    Kind::ClearOverride,
    Kind::GetTenant,
    Kind::ListAuditEvents,
    Kind::ListStripeEvents,
    Kind::ReplayStripeEvent,
    Kind::Check,
    Kind::CheckBatch,
    Kind::Explain,
    Kind::Usage,
    Kind::RecordUsage,
    Kind::Watch,
    Kind::GetTenantState,
    Kind::RelayTenantState,
];

#[derive(Clone, Copy)]
enum Kind {
    PutTenant,
    AssignPlan,
    UnassignPlan,
    ExtendTrial,
    GrantAddOn,
    RevokeAddOn,
    SetOverride,
    ClearOverride,
    GetTenant,
    ListAuditEvents,
    ListStripeEvents,
    ReplayStripeEvent,
    Check,
    CheckBatch,
    Explain,
    Usage,
    RecordUsage,
    Watch,
    GetTenantState,
    RelayTenantState,
}

/// The tenant states a store could load: an unknown tenant, and one with some history (an
/// expired trial, a manual plan, an add-on grant and an override), both under the request's id.
fn states(tenant: &str) -> [TenantState; 2] {
    static RICH: OnceLock<TenantState> = OnceLock::new();
    let rich = RICH.get_or_init(|| {
        let catalog = example_catalog();
        let by = Actor::admin("fuzz", "fuzzing", NOW);
        let mut s = unknown_tenant("acme");
        for c in [
            Command::PutTenant {
                stripe_customer_id: Some("cus_fuzz".into()),
                trial: Some(Trial { start: NOW - 20 * DAY, end: NOW - 6 * DAY }),
                archived: None,
            },
            Command::AssignPlan { plan: "pro".into(), expires_at: Some(NOW + 30 * DAY) },
            Command::GrantAddOn { addon: "ai_assistant".into(), quantity: 2, expires_at: None },
            Command::SetOverride {
                feature: "seats".into(),
                value: entitlements::catalog::Value::Number(12),
                expires_at: None,
            },
        ] {
            c.validate(catalog, "acme", &by).expect("the fixed history is valid");
            c.apply(&mut s, &by);
        }
        s
    });
    let mut rich = rich.clone();
    rich.tenant_id = tenant.to_string();
    [unknown_tenant(tenant), rich]
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).ok()
}

/// What a relay forwards reads back as the command it forwarded (`CommandMessage` undoes
/// `CommandRequest::new`).
fn read_back(r: &CommandRequest, catalog: &Catalog) -> Result<Command, Invalid> {
    match r {
        CommandRequest::PutTenant(m) => m.command(catalog),
        CommandRequest::AssignPlan(m) => m.command(catalog),
        CommandRequest::UnassignPlan(m) => m.command(catalog),
        CommandRequest::ExtendTrial(m) => m.command(catalog),
        CommandRequest::GrantAddOn(m) => m.command(catalog),
        CommandRequest::RevokeAddOn(m) => m.command(catalog),
        CommandRequest::SetOverride(m) => m.command(catalog),
        CommandRequest::ClearOverride(m) => m.command(catalog),
    }
}

/// `AdminApi::mutate` then `Service::mutate`, with the store's part (load, apply, commit)
/// done on the fixed states.
fn admin<M: CommandMessage + Message + Default>(bytes: &[u8]) {
    let Some(m) = decode::<M>(bytes) else { return };
    let catalog = example_catalog();
    let Ok(command) = m.command(catalog) else { return };
    let by = Actor::admin(m.actor(), m.rationale(), NOW);
    let forwarded = CommandRequest::new(m.tenant_id(), &command, &by);
    assert_eq!(read_back(&forwarded, catalog).as_ref(), Ok(&command), "a forwarded command reads back as itself");
    if command.validate(catalog, m.tenant_id(), &by).is_err() {
        return;
    }
    for mut state in states(m.tenant_id()) {
        let entry = command.apply(&mut state, &by);
        let _ = entry.action;
        exercise(catalog, &state, NOW, "", 1, 0);
    }
}

fn tenant_ok(id: &str) -> bool {
    validate_tenant_id(id).is_ok()
}

/// `check_quantity` in `service::decisions`: unset is one, negative is refused.
fn quantity(q: Option<i64>) -> Option<i64> {
    match q {
        None => Some(1),
        Some(q) if q >= 0 => Some(q),
        Some(_) => None,
    }
}

/// `Service::feature_list`: every (metered) feature when none is named, else each named one,
/// known and (if asked) metered.
fn feature_list(catalog: &Catalog, features: &[String], metered_only: bool) -> Option<Vec<FeatureIdx>> {
    if features.is_empty() {
        return Some(
            (0..catalog.features.len()).filter(|&i| !metered_only || catalog.features[i].kind.is_metered()).collect(),
        );
    }
    features
        .iter()
        .map(|f| catalog.feature_idx(f).filter(|&fi| !metered_only || catalog.features[fi].kind.is_metered()))
        .collect()
}

fn check(r: pb::CheckRequest) {
    let catalog = example_catalog();
    let Ok(intent) = convert::intent(r.intent) else { return };
    let Some(q) = quantity(r.quantity) else { return };
    if !tenant_ok(&r.tenant_id) {
        return;
    }
    for state in states(&r.tenant_id) {
        let t = resolve::resolve(catalog, &state, NOW);
        let d = decide(&t, &r.feature, q, intent, 0);
        let _ = convert::check_response(&t, &d, &r.feature);
    }
}

fn check_batch(r: pb::CheckBatchRequest) {
    let catalog = example_catalog();
    let Ok(items) = r.items.into_iter().map(CheckItem::try_from).collect::<Result<Vec<_>, Invalid>>() else { return };
    if items.len() > MAX_BATCH {
        return;
    }
    let Some(qs) = items.iter().map(|i| quantity(i.quantity)).collect::<Option<Vec<_>>>() else { return };
    if !tenant_ok(&r.tenant_id) {
        return;
    }
    for state in states(&r.tenant_id) {
        let t = resolve::resolve(catalog, &state, NOW);
        let ds: Vec<_> = items.iter().zip(&qs).map(|(i, &q)| decide(&t, &i.feature, q, i.intent, 0)).collect();
        let _ = convert::check_batch_response(&t, &ds, &items);
    }
}

fn explain_request(r: pb::ExplainRequest) {
    let catalog = example_catalog();
    if !tenant_ok(&r.tenant_id) {
        return;
    }
    let Some(wanted) = feature_list(catalog, &r.features, false) else { return };
    let now = r.at.as_ref().map_or(NOW, convert::from_ts);
    for state in states(&r.tenant_id) {
        let e = explain(catalog, &state, now, Some(&wanted), &|_| 3);
        let _ = convert::explain(&e, &state);
    }
}

fn usage(r: pb::UsageRequest) {
    let catalog = example_catalog();
    let Some(wanted) = feature_list(catalog, &r.features, true) else { return };
    if !tenant_ok(&r.tenant_id) {
        return;
    }
    for state in states(&r.tenant_id) {
        let t = resolve::resolve(catalog, &state, NOW);
        let lines: Vec<UsageLine> = wanted
            .iter()
            .map(|&fi| UsageLine { feature: fi, used: 2, limit: t.features[fi].value, period: t.features[fi].period })
            .collect();
        let _ = convert::usage(catalog, &lines);
    }
}

fn record_usage(r: pb::RecordUsageRequest) {
    let catalog = example_catalog();
    let Ok(mode) = convert::usage_mode(r.mode) else { return };
    if !tenant_ok(&r.tenant_id) {
        return;
    }
    let Ok(fi) = validate_report(catalog, &r.feature, mode, r.value, &r.idempotency_key) else { return };
    for state in states(&r.tenant_id) {
        let t = resolve::resolve(catalog, &state, NOW);
        let _ = usage_gate(&t, fi, r.enforce);
        let _ = decide(&t, &r.feature, r.value, Intent::Write, 0);
    }
}

/// A change feed with some history (its ring holds the last 64 of 100 changes).
fn feed() -> &'static ChangeFeed {
    static FEED: OnceLock<ChangeFeed> = OnceLock::new();
    FEED.get_or_init(|| {
        let feed = ChangeFeed::new(0x5eed, 64);
        for i in 0..100u64 {
            feed.change(if i % 2 == 0 { "acme" } else { "globex" }, i + 1);
        }
        feed
    })
}

/// What a relay does with its upstream's `GetTenantStateResponse`: rebuild the state, then
/// resolve it against its own catalog.
fn relay_tenant_state(r: pb::GetTenantStateResponse) {
    let Ok(state) = TenantState::try_from(&r) else { return };
    let again = TenantState::try_from(&pb::GetTenantStateResponse::from(&state));
    assert_eq!(again.as_ref(), Ok(&state), "a rebuilt tenant state survives another trip");
    let _ = convert::get_tenant_response(&state);
    exercise(example_catalog(), &state, NOW, "seats", 2, 1);
}

/// Validation only (the rest is the store's): what the handler checks before it asks.
fn simple(kind: Kind, body: &[u8]) -> Result<(), Invalid> {
    match kind {
        Kind::GetTenant => {
            let r: pb::GetTenantRequest = decode(body).ok_or(invalid("request", "undecodable"))?;
            if tenant_ok(&r.tenant_id) {
                let _ = convert::get_tenant_response(&states(&r.tenant_id)[1]);
            }
        }
        Kind::GetTenantState => {
            let r: pb::GetTenantStateRequest = decode(body).ok_or(invalid("request", "undecodable"))?;
            if tenant_ok(&r.tenant_id) {
                let _ = pb::GetTenantStateResponse::from(&states(&r.tenant_id)[1]);
            }
        }
        Kind::ListAuditEvents => {
            let r: pb::ListAuditEventsRequest = decode(body).ok_or(invalid("request", "undecodable"))?;
            let (size, before) = convert::audit_query(&r)?;
            let _ = (size.clamp(1, 500), before, tenant_ok(&r.tenant_id));
        }
        Kind::ListStripeEvents => {
            let r: pb::ListStripeEventsRequest = decode(body).ok_or(invalid("request", "undecodable"))?;
            let (tenant, status, size) = convert::stripe_query(&r);
            let _ = (tenant.map(tenant_ok), status.map(StripeStatus::parse), size.clamp(1, 500));
        }
        Kind::ReplayStripeEvent => {
            let r: pb::ReplayStripeEventRequest = decode(body).ok_or(invalid("request", "undecodable"))?;
            required("event_id", &r.event_id)?;
            check_actor(&r.actor, &r.rationale)?;
        }
        Kind::Watch => {
            let r: pb::WatchRequest = decode(body).ok_or(invalid("request", "undecodable"))?;
            let sub = feed().subscribe(&r.cursor);
            let _ = (sub.resumed, sub.backlog.len(), sub.last_seq);
        }
        _ => unreachable!("not a simple request"),
    }
    Ok(())
}

fn run(kind: Kind, body: &[u8]) {
    match kind {
        Kind::PutTenant => admin::<pb::PutTenantRequest>(body),
        Kind::AssignPlan => admin::<pb::AssignPlanRequest>(body),
        Kind::UnassignPlan => admin::<pb::UnassignPlanRequest>(body),
        Kind::ExtendTrial => admin::<pb::ExtendTrialRequest>(body),
        Kind::GrantAddOn => admin::<pb::GrantAddOnRequest>(body),
        Kind::RevokeAddOn => admin::<pb::RevokeAddOnRequest>(body),
        Kind::SetOverride => admin::<pb::SetOverrideRequest>(body),
        Kind::ClearOverride => admin::<pb::ClearOverrideRequest>(body),
        Kind::Check => decode(body).into_iter().for_each(check),
        Kind::CheckBatch => decode(body).into_iter().for_each(check_batch),
        Kind::Explain => decode(body).into_iter().for_each(explain_request),
        Kind::Usage => decode(body).into_iter().for_each(usage),
        Kind::RecordUsage => decode(body).into_iter().for_each(record_usage),
        Kind::RelayTenantState => decode(body).into_iter().for_each(relay_tenant_state),
        Kind::GetTenant
        | Kind::GetTenantState
        | Kind::ListAuditEvents
        | Kind::ListStripeEvents
        | Kind::ReplayStripeEvent
        | Kind::Watch => {
            let _ = simple(kind, body);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let _: &Arc<Catalog> = example_catalog();
    run(KINDS[usize::from(selector) % KINDS.len()], body);
});
