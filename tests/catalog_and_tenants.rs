//! What the app needs around the decision (issue 12): the catalog to display (`GetCatalog`)
//! and tenant lists (`ListTenants`), over real TCP against a server seeded through the admin API
//! and signed Stripe events — and their CLI forms, through the real binary.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::stripe::{event, post_event, subscription};
use common::*;
use entitlements::config::ServeArgs;
use entitlements::pb::{self, *};
use entitlements::server::{self, Running};
use tonic::Code;

const TOKEN: &str = "test-admin-token";
const SECRET: &str = "whsec_catalog_and_tenants";
const DAY: i64 = 86_400;

async fn start(dir: &tempfile::TempDir) -> Running {
    let args = ServeArgs {
        admin_token: Some(TOKEN.into()),
        stripe_webhook_secrets: vec![SECRET.into()],
        max_ttl: Duration::from_secs(300),
        ..ServeArgs::local(catalog_path(), dir.path().join("lists.db").display().to_string())
    };
    server::start(&args).await.expect("server starts")
}

fn price(p: &CatalogPrice) -> (&str, &str, Option<i64>, &str) {
    (p.interval.as_str(), p.component.as_str(), p.amount, p.currency.as_str())
}

#[tokio::test]
async fn get_catalog_shows_labels_prices_and_what_addons_unlock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&dir).await;
    let mut data = data_client(running.grpc_addr).await;
    let c = data.get_catalog(GetCatalogRequest {}).await.expect("GetCatalog").into_inner();

    assert_eq!(c.version.len(), 16, "a version to cache by: {c:?}");
    assert_eq!((c.edition.as_str(), c.default_plan.as_str()), ("ee", "free"));
    let plans: Vec<_> = c.plans.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(plans, ["free", "pro", "premium", "enterprise"], "by rank");

    // Pro $89 + $12/user a month; a year is ten months.
    let pro = &c.plans[1];
    assert_eq!((pro.label.as_str(), pro.seats_feature.as_str()), ("Pro", "seats"));
    let pro_prices: Vec<_> = pro.prices.iter().map(price).collect();
    assert_eq!(
        pro_prices,
        [
            ("month", "base", Some(8900), "usd"),
            ("year", "base", Some(89000), "usd"),
            ("month", "seat", Some(1200), "usd"),
            ("year", "seat", Some(12000), "usd"),
        ]
    );
    let premium: Vec<_> = c.plans[2].prices.iter().map(|p| p.amount).collect();
    assert_eq!(premium, [Some(34900), Some(349000), Some(2500), Some(25000)]);
    assert!(c.plans[3].prices.iter().all(|p| p.amount.is_none()), "enterprise: no list price");
    let seats_on_pro = pro.features.iter().find(|v| v.feature == "seats").and_then(|v| v.value);
    assert_eq!(seats_on_pro.and_then(|v| v.value), Some(pb::value::Value::Number(5)));
    assert_eq!(pro.features.len(), c.features.len(), "every feature's value on every plan");

    // A plan never implies an add-on: Teams is add-on only, and the add-on says what it unlocks.
    let teams_feature = c.features.iter().find(|f| f.key == "teams_integration").expect("feature");
    assert!(teams_feature.addon_only);
    let teams = c.addons.iter().find(|a| a.key == "teams").expect("teams add-on");
    assert_eq!(teams.label, "Teams");
    assert_eq!(teams.unlocks.iter().map(|v| v.feature.as_str()).collect::<Vec<_>>(), ["teams_integration"]);
    assert_eq!(teams.prices.len(), 2);

    let seats = c.features.iter().find(|f| f.key == "seats").expect("seats");
    assert_eq!((seats.label.as_str(), seats.unit.as_str(), seats.kind()), ("Seats", "seat", FeatureKind::Gauge));
    let requests = c.features.iter().find(|f| f.key == "ai_requests").expect("ai_requests");
    assert_eq!(requests.period, "month");
    let policy = c.trial_policy.expect("trial policy");
    assert_eq!((policy.trial_plan.as_str(), policy.trial_days, policy.warning_days), ("premium", 14, vec![7, 3]));
    assert_eq!(c.trial_offers.len(), 1);
    assert_eq!(c.trial_offers[0].requires_paid_plan, ["pro"]);

    // The CLI form prints it for a person.
    let out = cli(&["catalog", "show", "--addr", &format!("http://{}", running.grpc_addr)]).await;
    assert!(out.contains("plan pro \"Pro\" (rank 10)"), "{out}");
    assert!(out.contains("89.00 USD/month (price_pro_monthly)"), "{out}");
    assert!(out.contains("12.00 USD per seat/month"), "{out}");
    assert!(out.contains("add-on teams \"Teams\""), "{out}");
    running.stop().await.expect("stop");
}

/// Run the real binary; its stdout (it must succeed). Off the test's runtime thread: the server
/// it talks to runs on that thread.
async fn cli(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let run = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_entitlements")).args(&args).output().expect("run");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    run.await.expect("cli")
}

struct Seeded {
    admin: AdminClient,
    now: i64,
}

async fn seed(running: &Running) -> Seeded {
    let mut admin = admin_client(running.grpc_addr).await;
    let (actor, rationale) = ("ops@example.com".to_string(), "seed".to_string());
    for (tenant, days) in [("trial-a", 5), ("trial-b", 10)] {
        let r = ExtendTrialRequest {
            tenant_id: tenant.into(),
            actor: actor.clone(),
            rationale: rationale.clone(),
            until: Some(extend_trial_request::Until::Days(days)),
        };
        admin.extend_trial(with_token(TOKEN, r)).await.expect("trial");
    }
    let assign = AssignPlanRequest {
        tenant_id: "pro-1".into(),
        actor: actor.clone(),
        rationale: rationale.clone(),
        plan: "pro".into(),
        ..Default::default()
    };
    admin.assign_plan(with_token(TOKEN, assign)).await.expect("assign");
    let grant = GrantAddOnRequest {
        tenant_id: "teams-1".into(),
        actor: actor.clone(),
        rationale: rationale.clone(),
        addon: "teams".into(),
        quantity: 1,
        ..Default::default()
    };
    admin.grant_add_on(with_token(TOKEN, grant)).await.expect("grant");
    let archive = PutTenantRequest {
        tenant_id: "archived-1".into(),
        actor: actor.clone(),
        rationale: rationale.clone(),
        archived: Some(true),
        ..Default::default()
    };
    admin.put_tenant(with_token(TOKEN, archive)).await.expect("archive");
    past_due(running.http_addr, &mut admin).await;
    Seeded { admin, now: now() }
}

/// `pastdue-1` pays for Pro through Stripe, and its last payment failed.
async fn past_due(http: SocketAddr, admin: &mut AdminClient) {
    let link = PutTenantRequest {
        tenant_id: "pastdue-1".into(),
        actor: "ops@example.com".into(),
        rationale: "link the Stripe customer".into(),
        stripe_customer_id: "cus_pastdue".into(),
        ..Default::default()
    };
    admin.put_tenant(with_token(TOKEN, link)).await.expect("link");
    let sub = subscription("sub_pd", "cus_pastdue", Some("pastdue-1"), "past_due", &[("price_pro_monthly", 3)], None);
    let body = event("evt_pd", "customer.subscription.updated", now(), sub);
    let (status, reply) = post_event(http, &body, SECRET).await;
    assert_eq!(status, 200, "{reply}");
}

async fn list(admin: &mut AdminClient, r: ListTenantsRequest) -> Vec<String> {
    let page = admin.list_tenants(with_token(TOKEN, r)).await.expect("list").into_inner();
    page.tenants.into_iter().map(|t| t.tenant_id).collect()
}

#[tokio::test]
async fn list_tenants_filters_by_phase_plan_addon_past_due_and_trial_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&dir).await;
    let Seeded { mut admin, now } = seed(&running).await;
    let q = ListTenantsRequest::default;

    assert_eq!(
        list(&mut admin, ListTenantsRequest { phase: Phase::Trialing as i32, ..q() }).await,
        ["trial-a", "trial-b"]
    );
    let ending = ListTenantsRequest { trial_ending_before: ts(now + 7 * DAY), ..q() };
    assert_eq!(list(&mut admin, ending).await, ["trial-a"]);
    assert_eq!(list(&mut admin, ListTenantsRequest { plan: "pro".into(), ..q() }).await, ["pastdue-1", "pro-1"]);
    assert_eq!(list(&mut admin, ListTenantsRequest { addon: "teams".into(), ..q() }).await, ["teams-1"]);
    assert_eq!(list(&mut admin, ListTenantsRequest { past_due: Some(true), ..q() }).await, ["pastdue-1"]);
    assert_eq!(list(&mut admin, ListTenantsRequest { phase: Phase::PastDue as i32, ..q() }).await, ["pastdue-1"]);
    assert_eq!(list(&mut admin, ListTenantsRequest { phase: Phase::Archived as i32, ..q() }).await, ["archived-1"]);
    assert!(list(&mut admin, ListTenantsRequest { changed_since: ts(now + 60), ..q() }).await.is_empty());
    assert_eq!(list(&mut admin, ListTenantsRequest { changed_since: ts(now - 600), ..q() }).await.len(), 6);

    // Each row carries the resolved truth: plan, phase, add-ons, notices, and the customer.
    let r = ListTenantsRequest { past_due: Some(true), ..q() };
    let row = admin.list_tenants(with_token(TOKEN, r)).await.expect("list").into_inner().tenants.remove(0);
    assert_eq!((row.plan.as_str(), row.phase(), row.past_due), ("pro", Phase::PastDue, true));
    assert_eq!(row.stripe_customer_id, "cus_pastdue");
    assert!(row.notices.iter().any(|n| n.kind() == NoticeKind::PaymentPastDue), "{row:?}");

    // Mistakes are refused, not answered with an empty list; the admin token is required.
    let unknown = admin.list_tenants(with_token(TOKEN, ListTenantsRequest { plan: "gold".into(), ..q() })).await;
    assert_eq!(unknown.map(|_| ()).unwrap_err().code(), Code::InvalidArgument);
    let bad_token =
        admin.list_tenants(with_token(TOKEN, ListTenantsRequest { page_token: "bad token!".into(), ..q() }));
    assert_eq!(bad_token.await.map(|_| ()).unwrap_err().code(), Code::InvalidArgument);
    let anonymous = admin.list_tenants(q()).await;
    assert_eq!(anonymous.map(|_| ()).unwrap_err().code(), Code::Unauthenticated);
    running.stop().await.expect("stop");
}

#[tokio::test]
async fn list_tenants_pages_are_stable_and_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&dir).await;
    let Seeded { mut admin, .. } = seed(&running).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let r = ListTenantsRequest { page_size: 2, page_token: token.clone(), ..Default::default() };
        let page = admin.list_tenants(with_token(TOKEN, r)).await.expect("page").into_inner();
        assert!(page.tenants.len() <= 2);
        seen.extend(page.tenants.into_iter().map(|t| t.tenant_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        // A tenant created behind the cursor does not shift the pages ahead of it.
        let early = PutTenantRequest {
            tenant_id: format!("aaa-{}", seen.len()),
            actor: "ops".into(),
            rationale: "created while listing".into(),
            ..Default::default()
        };
        admin.put_tenant(with_token(TOKEN, early)).await.expect("create");
    }
    let expected = ["archived-1", "pastdue-1", "pro-1", "teams-1", "trial-a", "trial-b"];
    assert_eq!(seen, expected, "every tenant once, in id order");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), seen.len());

    // The CLI form: `entitlements tenants --phase past_due`.
    let addr = format!("http://{}", running.grpc_addr);
    let out = cli(&["tenants", "--phase", "past_due", "--addr", &addr, "--token", TOKEN]).await;
    assert!(out.contains("pastdue-1") && out.contains("past_due"), "{out}");
    assert!(!out.contains("pro-1") && !out.contains("trial-a"), "{out}");
    let trials = cli(&["tenants", "--phase", "trialing", "--limit", "1", "--addr", &addr, "--token", TOKEN]).await;
    assert_eq!(trials.lines().count(), 2, "a header and one row: {trials}");
    running.stop().await.expect("stop");
}
