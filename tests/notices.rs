//! Lifecycle notices and outbound webhooks (issue 12), end to end through the real interfaces:
//! server processes on SQLite, `Watch` over gRPC, signed webhooks over HTTP to a receiver that
//! verifies them with the official Standard Webhooks library of another language (Python).
//!
//! The clock is injected with the test/debug-only `--clock-offset-file`, so a 14-day trial (and
//! the 30 days to archive) pass in seconds. The PostgreSQL two-replica variant is in
//! `tests/replicas.rs`.

mod common;

use std::time::Duration;

use common::http::get;
use common::lifecycle::*;
use common::{admin_client, free_addr, with_token};
use entitlements::pb;

/// Each notice once on `Watch` and once at the webhook receiver, across a server restart in
/// the middle of the trial (with a threshold crossed while the server was down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with standardwebhooks (pip install standardwebhooks==1.0.0); run with -- --ignored"]
async fn a_14_day_trial_notifies_each_threshold_once_across_a_restart() {
    require_python_standardwebhooks();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("notices.db").display());
    let clock = dir.path().join("clock-offset");
    set_clock(&clock, 0);
    std::fs::write(&clock, "0").expect("clock");
    // The receiver fails the first two requests: the first event is retried, and the tenant's
    // later events wait for it (ordered per tenant).
    let receiver = Receiver::start(dir.path(), 2);
    let hooks = receiver.config(dir.path());
    let (grpc, http) = (free_addr(), free_addr());
    let server = spawn_server(&db, grpc, http, &clock, &hooks).await;
    let watcher = Watcher::start(grpc).await;

    start_trial(grpc, "trial-co").await;
    let want = trial_timeline();
    for (i, days) in TIMELINE_DAYS.iter().enumerate().take(2) {
        set_clock(&clock, *days);
        assert_eq!(kinds(&watcher.wait_for(i + 1).await), want[..=i]);
    }

    // Restart: killed (no graceful anything), the trial ends while it is down.
    drop(server);
    set_clock(&clock, TIMELINE_DAYS[2]);
    let server = spawn_server(&db, grpc, http, &clock, &hooks).await;
    assert_eq!(kinds(&watcher.wait_for(3).await), want[..3], "the notice made while down, sent once after RESET");
    for (i, days) in TIMELINE_DAYS.iter().enumerate().skip(3) {
        set_clock(&clock, *days);
        assert_eq!(kinds(&watcher.wait_for(i + 1).await), want[..=i]);
    }

    // Each once on Watch (nothing more arrives), and once at the receiver, in order.
    let got = wait_for_webhooks(&receiver, "trial-co", 5).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(kinds(&watcher.seen()), want, "each notice exactly once on Watch");
    assert_eq!(got, expected_webhook_notices());
    assert_eq!(accepted_notices(&receiver, "trial-co"), expected_webhook_notices(), "each notice once at the receiver");
    let ids: Vec<_> = watcher.seen().iter().map(|n| n.id.clone()).collect();
    let hook_ids: Vec<String> = receiver
        .accepted()
        .iter()
        .filter(|r| r["body"]["type"].as_str().is_some_and(|t| t.starts_with("notice.")))
        .map(|r| r["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, hook_ids, "Watch and webhooks name the same notices (webhook-id = notice id)");

    // Every request verified with the Python library; the first two were refused and retried.
    let requests = receiver.requests();
    assert!(requests.iter().all(|r| r["verified"] == true), "signatures verify in Python: {requests:?}");
    assert_eq!(requests[0]["status"], 500);
    assert_eq!(requests[1]["status"], 500);
    assert_eq!(requests[0]["id"], requests[2]["id"], "a retry keeps its webhook-id");
    delivery_log_and_redelivery(&server, &receiver).await;

    let (_, metrics) = get(server.http, "/metrics").await;
    assert!(metrics.contains("entitlements_lifecycle_notices_total"), "{metrics}");
    assert!(metrics.contains("entitlements_outbound_webhook_attempts_total"), "{metrics}");
}

/// The delivery log shows every attempt with its outcome; a manual redelivery sends the same
/// message again.
async fn delivery_log_and_redelivery(server: &Server, receiver: &Receiver) {
    let mut admin = admin_client(server.grpc).await;
    let list = |tenant: &str| pb::ListWebhookDeliveriesRequest {
        tenant_id: tenant.into(),
        page_size: 100,
        ..Default::default()
    };
    let log = admin.list_webhook_deliveries(with_token(TOKEN, list("trial-co"))).await.expect("log").into_inner();
    for d in &log.deliveries {
        let attempts: Vec<_> = d.attempts.iter().map(|a| (a.attempt, a.status_code, a.error.as_str())).collect();
        eprintln!("delivery {} {} {} {}: {attempts:?}", d.id, d.message_id, d.event_type, d.status);
    }
    let first = log.deliveries.last().expect("the oldest delivery");
    assert_eq!(first.event_type, "tenant.changed");
    assert_eq!(first.status, "delivered");
    let codes: Vec<_> = first.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, vec![500, 500, 200], "{first:?}");
    assert!(first.attempts[0].error.contains("500"));
    assert!(log.deliveries.iter().all(|d| d.status == "delivered"));

    let before = receiver.requests().len();
    let req =
        pb::RedeliverWebhookRequest { delivery_id: first.id, actor: "ops".into(), rationale: "app lost it".into() };
    let again = admin.redeliver_webhook(with_token(TOKEN, req)).await.expect("redeliver").into_inner();
    assert_eq!(again.delivery.expect("delivery").status, "pending");
    let start = entitlements::clock::monotonic();
    while receiver.requests().len() == before {
        assert!(start.elapsed() < Duration::from_secs(30), "redelivery never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = receiver.requests().pop().expect("request");
    assert_eq!(last["id"], first.message_id.as_str());
    assert_eq!(last["status"], 200);
}

/// A Stripe trial's warnings (by time) and past due entered and left (by Stripe events), each
/// once on `Watch` and once at the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with standardwebhooks (pip install standardwebhooks==1.0.0); run with -- --ignored"]
async fn stripe_trial_ending_and_past_due_are_notices_too() {
    use common::stripe::{event, post_event, subscription};
    use pb::LifecycleThreshold as T;
    require_python_standardwebhooks();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("stripe.db").display());
    let clock = dir.path().join("clock-offset");
    std::fs::write(&clock, "0").expect("clock");
    let receiver = Receiver::start(dir.path(), 0);
    let hooks = receiver.config(dir.path());
    let server = spawn_server(&db, free_addr(), free_addr(), &clock, &hooks).await;
    let watcher = Watcher::start(server.grpc).await;

    let (t, base) = ("stripe-co", common::now() - 500);
    let trial_end = common::now() + 10 * entitlements::tenant::DAY;
    let sub = |status: &str, trial_end: Option<i64>| {
        subscription("sub_life", "cus_life", Some(t), status, &[("price_premium_monthly", 1)], trial_end)
    };
    let deliver = |id: &str, kind: &str, created: i64, object| {
        let body = event(id, kind, created, object);
        async move {
            let (status, reply) = post_event(server.http, &body, STRIPE_SECRET).await;
            assert_eq!(status, 200, "{reply}");
        }
    };
    deliver("evt_l1", "customer.subscription.created", base, sub("trialing", Some(trial_end))).await;
    set_clock(&clock, 3);
    watcher.wait_for(1).await;
    set_clock(&clock, 7);
    watcher.wait_for(2).await;
    deliver("evt_l2", "customer.subscription.updated", base + 10, sub("active", None)).await;
    deliver("evt_l3", "customer.subscription.updated", base + 20, sub("past_due", None)).await;
    deliver("evt_l4", "customer.subscription.updated", base + 30, sub("active", None)).await;
    let want = vec![(T::StripeTrialEnding, 7), (T::StripeTrialEnding, 3), (T::PastDueEntered, 0), (T::PastDueLeft, 0)];
    assert_eq!(kinds(&watcher.wait_for(4).await), want);
    let got = wait_for_webhooks(&receiver, t, 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(kinds(&watcher.seen()), want, "each once on Watch");
    let types: Vec<_> = got.iter().map(|(ty, d)| (ty.as_str(), *d)).collect();
    assert_eq!(
        types,
        [
            ("notice.stripe_trial_ending", 7),
            ("notice.stripe_trial_ending", 3),
            ("notice.past_due_entered", 0),
            ("notice.past_due_left", 0)
        ]
    );
    assert_eq!(accepted_notices(&receiver, t).len(), 4, "each once at the receiver");
    assert!(receiver.requests().iter().all(|r| r["verified"] == true));
}
