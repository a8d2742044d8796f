//! The human-facing clients of a running server: `check`, `explain`, `tenants` and
//! `catalog show`. Each calls one RPC over gRPC and prints the answer for a person; exit codes
//! are for scripts (`check`: 0 allowed, 2 denied).

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::config::TenantsArgs;
use crate::pb::admin_service_client::AdminServiceClient;
use crate::pb::entitlement_service_client::EntitlementServiceClient;
use crate::pb::{self, CheckRequest, ExplainRequest};

type Error = Box<dyn std::error::Error>;

/// Adds `authorization: Bearer <token>` to every request when there is a token.
#[derive(Clone)]
struct Bearer(Option<AsciiMetadataValue>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

async fn connect(addr: &str, token: Option<&str>) -> Result<(Channel, Bearer), Error> {
    let channel = Endpoint::from_shared(addr.to_string())?.connect().await?;
    let bearer = token.map(|t| MetadataValue::try_from(format!("Bearer {t}"))).transpose()?;
    Ok((channel, Bearer(bearer)))
}

fn parse_time(s: Option<&str>) -> Result<Option<prost_types::Timestamp>, Error> {
    Ok(s.map(|s| humantime::parse_rfc3339(s).map(prost_types::Timestamp::from)).transpose()?)
}

fn show_time(t: Option<&prost_types::Timestamp>) -> String {
    let Some(secs) = t.and_then(|t| u64::try_from(t.seconds).ok()) else {
        return "-".into();
    };
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// `entitlements check`: ALLOWED/DENIED with the reason; exit 2 when denied.
pub async fn check(
    tenant: String,
    feature: String,
    quantity: Option<i64>,
    read: bool,
    addr: &str,
) -> Result<ExitCode, Error> {
    let mut client = EntitlementServiceClient::connect(addr.to_string()).await?;
    let intent = if read { pb::Intent::Read } else { pb::Intent::Write };
    let req = CheckRequest { tenant_id: tenant, feature, quantity, intent: intent as i32, min_revision: None };
    let d = client.check(req).await?.into_inner().decision.unwrap_or_default();
    println!(
        "{} {} reason={} plan={} phase={}{}",
        if d.allowed { "ALLOWED" } else { "DENIED" },
        d.feature,
        d.reason().as_str_name(),
        d.plan,
        d.phase().as_str_name(),
        d.upgrade.map(|u| format!(" upgrade={}:{}", u.kind().as_str_name(), u.key)).unwrap_or_default()
    );
    Ok(if d.allowed { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

/// `entitlements explain`: the explanation, for a human.
pub async fn explain(tenant: String, features: Vec<String>, at: Option<String>, addr: &str) -> Result<ExitCode, Error> {
    let at = parse_time(at.as_deref())?;
    let mut client = EntitlementServiceClient::connect(addr.to_string()).await?;
    let e = client.explain(ExplainRequest { tenant_id: tenant, features, at }).await?.into_inner();
    let plan = e.plan.unwrap_or_default();
    let lc = e.lifecycle.unwrap_or_default();
    println!("tenant {} (known: {}, revision {}, edition {})", e.tenant_id, e.known, e.revision, e.edition);
    println!("plan: {}", plan.summary);
    println!("lifecycle: {}", lc.summary);
    for n in &e.notices {
        println!("notice: {} {}", n.kind().as_str_name(), n.message);
    }
    for f in &e.features {
        println!("  {}", f.summary);
    }
    for o in &e.trial_offers {
        let why = if o.reason.is_empty() { String::new() } else { format!(" ({})", o.reason) };
        println!("offer {}: {}{why}", o.key, if o.open { "open" } else { "closed" });
    }
    Ok(ExitCode::SUCCESS)
}

/// `entitlements tenants`: every page of `ListTenants`, one line per tenant.
pub async fn tenants(a: TenantsArgs) -> Result<ExitCode, Error> {
    let (channel, bearer) = connect(&a.addr, a.token.as_deref()).await?;
    let mut client = AdminServiceClient::with_interceptor(channel, bearer);
    let mut req = pb::ListTenantsRequest {
        phase: a.phase.unwrap_or(pb::Phase::Unspecified) as i32,
        plan: a.plan.unwrap_or_default(),
        addon: a.addon.unwrap_or_default(),
        past_due: a.past_due,
        trial_ending_before: parse_time(a.trial_ending_before.as_deref())?,
        changed_since: parse_time(a.changed_since.as_deref())?,
        page_size: 500,
        page_token: String::new(),
    };
    let limit = a.limit.unwrap_or(usize::MAX);
    let mut printed = 0;
    println!(
        "{:<24} {:<12} {:<14} {:<8} {:<20} {:<20} ADDONS",
        "TENANT", "PLAN", "PHASE", "PAST_DUE", "TRIAL_END", "UPDATED"
    );
    loop {
        let page = client.list_tenants(req.clone()).await?.into_inner();
        for t in page.tenants.iter().take(limit - printed) {
            let phase = t.phase().as_str_name().trim_start_matches("PHASE_").to_ascii_lowercase();
            let (trial_end, updated) = (show_time(t.trial_end.as_ref()), show_time(t.updated_at.as_ref()));
            let addons = if t.addons.is_empty() { "-".to_string() } else { t.addons.join(",") };
            println!(
                "{:<24} {:<12} {:<14} {:<8} {trial_end:<20} {updated:<20} {addons}",
                t.tenant_id, t.plan, phase, t.past_due
            );
            printed += 1;
        }
        if page.next_page_token.is_empty() || printed >= limit {
            break;
        }
        req.page_token = page.next_page_token;
    }
    eprintln!("{printed} tenant(s)");
    Ok(ExitCode::SUCCESS)
}

/// An amount in a currency's minor unit, for a person: `89.00 USD` (`500 JPY`).
fn money(amount: Option<i64>, currency: &str) -> String {
    // Stripe's zero-decimal currencies: the minor unit is the unit.
    const ZERO_DECIMAL: [&str; 16] = [
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
    ];
    let code = currency.to_ascii_uppercase();
    match amount {
        None => "no list price".into(),
        Some(a) if ZERO_DECIMAL.contains(&currency) => format!("{a} {code}"),
        Some(a) => format!("{}.{:02} {code}", a / 100, a % 100),
    }
}

fn prices(ps: &[pb::CatalogPrice]) -> String {
    let each = ps.iter().map(|p| {
        let per = if p.component == "seat" { " per seat" } else { "" };
        format!("{}{per}/{} ({})", money(p.amount, &p.currency), p.interval, p.id)
    });
    each.collect::<Vec<_>>().join(", ")
}

fn values(vs: &[pb::FeatureValue]) -> String {
    let shown = vs.iter().filter_map(|v| {
        let value = match v.value.as_ref()?.value? {
            pb::value::Value::Enabled(false) | pb::value::Value::Number(0) => return None,
            pb::value::Value::Enabled(true) => "on".to_string(),
            pb::value::Value::Number(n) => n.to_string(),
            pb::value::Value::Unlimited(_) => "unlimited".to_string(),
        };
        Some(format!("{}={value}", v.feature))
    });
    shown.collect::<Vec<_>>().join(", ")
}

/// `entitlements catalog show`: the catalog a running server loaded.
pub async fn catalog_show(addr: &str, token: Option<&str>) -> Result<ExitCode, Error> {
    let (channel, bearer) = connect(addr, token).await?;
    let mut client = EntitlementServiceClient::with_interceptor(channel, bearer);
    let c = client.get_catalog(pb::GetCatalogRequest {}).await?.into_inner();
    println!("catalog {} (edition {}, default plan {})", c.version, c.edition, c.default_plan);
    for p in &c.plans {
        println!("plan {} \"{}\" (rank {}): {}", p.key, p.label, p.rank, p.description);
        println!("  prices: {}", prices(&p.prices));
        println!("  features: {}", values(&p.features));
    }
    for a in &c.addons {
        println!("add-on {} \"{}\": {}", a.key, a.label, a.description);
        println!("  unlocks: {}", values(&a.unlocks));
        println!("  prices: {}", prices(&a.prices));
    }
    for o in &c.trial_offers {
        println!("trial offer {}: {} for {} days (requires {:?})", o.key, o.plan, o.days, o.requires_paid_plan);
    }
    Ok(ExitCode::SUCCESS)
}
