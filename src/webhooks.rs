//! Outbound webhooks (issue 12) in the Standard Webhooks format: every outbox event (tenant
//! changes, lifecycle notices) POSTed as JSON to each configured endpoint that wants its type,
//! signed with the endpoint's secret (`webhook-id`, `webhook-timestamp`, `webhook-signature`;
//! the `standardwebhooks` crate signs).
//!
//! Delivery is at least once, from the durable `webhook_deliveries` table (rows written in the
//! transaction that made the event, see `store::outbox`): a worker per replica leases due rows
//! (so replicas never send one attempt twice at once), sends, and logs every attempt. A failure
//! is retried after [`crate::backoff::nth_delay`] (doubling from `--webhook-retry-floor` up to
//! `--webhook-retry-ceiling`) until the delivery's 3-day window ends; then it is `failed` until
//! `RedeliverWebhook`. Per endpoint and tenant only the oldest undelivered event is sent, so a
//! tenant's events arrive in order. The worker runs off the data path: a failing or slow
//! endpoint holds up only its own deliveries, never a decision.
//!
//! The signature's timestamp is the host's clock ([`clock::host_unix_millis`]), never the
//! test-only offset clock: receivers check it against their own.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use standardwebhooks::Webhook;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use crate::backoff::nth_delay;
use crate::clock;
use crate::shutdown::Shutdown;
use crate::store::outbox::{Route, message_id};
use crate::store::{Attempt, AttemptOutcome, Delivery, OutboxStore};
use crate::telemetry;

/// How long one attempt may take before it counts as failed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// A lease outlives an attempt (its timeout): another replica (or this one, restarted) takes
/// the delivery over only when the attempt's process died mid-attempt.
const LEASE_MS: i64 = 15_000;
const BATCH: u32 = 32;
/// Attempts in flight at once, per replica.
const MAX_IN_FLIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("{path}: endpoint `{name}`: {problem}")]
    Endpoint { path: String, name: String, problem: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    endpoint: Vec<RawEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: String,
    url: String,
    /// `whsec_<base64>`, or `${VAR}` to read it from the environment.
    secret: String,
    /// Event types, exact or `prefix.*`; omitted or empty: every event.
    #[serde(default)]
    events: Vec<String>,
}

/// One configured endpoint.
pub struct Endpoint {
    pub name: String,
    pub url: hyper::Uri,
    signer: Webhook,
    pub route: Route,
}

/// The configured endpoints and the retry schedule.
pub struct Webhooks {
    endpoints: HashMap<String, Endpoint>,
    floor: Duration,
    ceiling: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Webhooks {
    /// Read the endpoints file; every secret must be a valid Standard Webhooks secret.
    pub fn load(path: &Path, floor: Duration, ceiling: Duration) -> Result<Webhooks, WebhookConfigError> {
        let p = path.display().to_string();
        let src =
            std::fs::read_to_string(path).map_err(|source| WebhookConfigError::Read { path: p.clone(), source })?;
        Webhooks::parse(&src, &p, &|name| std::env::var(name).ok(), floor, ceiling)
    }

    pub fn parse(
        src: &str,
        path: &str,
        env: &dyn Fn(&str) -> Option<String>,
        floor: Duration,
        ceiling: Duration,
    ) -> Result<Webhooks, WebhookConfigError> {
        let raw: RawConfig =
            toml::from_str(src).map_err(|source| WebhookConfigError::Parse { path: path.to_string(), source })?;
        let mut endpoints = HashMap::new();
        for e in raw.endpoint {
            let problem = |problem: String| WebhookConfigError::Endpoint {
                path: path.to_string(),
                name: e.name.clone(),
                problem,
            };
            let secret = match e.secret.strip_prefix("${").and_then(|s| s.strip_suffix('}')) {
                Some(var) => env(var).ok_or_else(|| problem(format!("environment variable {var} is not set")))?,
                None => e.secret.clone(),
            };
            let signer = Webhook::new(&secret).map_err(|err| problem(format!("secret: {err}")))?;
            let url: hyper::Uri = e.url.parse().map_err(|err| problem(format!("url: {err}")))?;
            if url.scheme_str() != Some("http") {
                return Err(problem("url: only http:// endpoints are supported (put TLS in a local proxy)".into()));
            }
            if e.name.is_empty() || endpoints.contains_key(&e.name) {
                return Err(problem("names must be non-empty and unique".into()));
            }
            let route = Route { endpoint: e.name.clone(), events: e.events.clone() };
            endpoints.insert(e.name.clone(), Endpoint { name: e.name, url, signer, route });
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Webhooks { endpoints, floor, ceiling, client })
    }

    /// Which endpoint wants which events (the store writes deliveries by these).
    pub fn routes(&self) -> Vec<Route> {
        self.endpoints.values().map(|e| e.route.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The three Standard Webhooks headers for one message.
    fn headers(&self, e: &Endpoint, msg_id: &str, payload: &str) -> Result<[(&'static str, String); 3], String> {
        let ts = clock::host_unix_millis() / 1000;
        let signature = e.signer.sign(msg_id, ts, payload.as_bytes()).map_err(|err| err.to_string())?;
        Ok([
            ("webhook-id", msg_id.to_string()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", signature),
        ])
    }

    /// One attempt: the status, or why there was none.
    async fn send(&self, e: &Endpoint, d: &Delivery) -> (Option<u16>, Option<String>) {
        let headers = match self.headers(e, &message_id(d.event_id), &d.payload) {
            Ok(h) => h,
            Err(err) => return (None, Some(format!("signing: {err}"))),
        };
        let mut req = hyper::Request::post(e.url.clone())
            .header("content-type", "application/json")
            .header("user-agent", concat!("entitlements/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let req = match req.body(Full::new(Bytes::from(d.payload.clone()))) {
            Ok(r) => r,
            Err(err) => return (None, Some(format!("request: {err}"))),
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.request(req)).await {
            Err(_) => (None, Some(format!("no response within {ATTEMPT_TIMEOUT:?}"))),
            Ok(Err(err)) => (None, Some(format!("connection: {err}"))),
            Ok(Ok(resp)) => {
                let status = resp.status();
                let error = (!status.is_success()).then(|| format!("HTTP {}", status.as_u16()));
                (Some(status.as_u16()), error)
            }
        }
    }

    /// Attempt a delivery and decide what comes next.
    async fn attempt(&self, d: &Delivery) -> (Attempt, AttemptOutcome) {
        let started = clock::monotonic();
        let at_ms = clock::host_unix_millis();
        let (status_code, error) = match self.endpoints.get(&d.endpoint) {
            Some(e) => self.send(e, d).await,
            None => (None, Some(format!("endpoint `{}` is no longer configured", d.endpoint))),
        };
        let elapsed = started.elapsed();
        // An endpoint removed from the file is retried like a failing one: it may come back.
        let outcome = next_step(d, error.is_none(), clock::host_unix_millis(), self.floor, self.ceiling);
        let duration_ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
        (Attempt { attempt: d.attempts + 1, at_ms, status_code, error, duration_ms }, outcome)
    }
}

/// What follows an attempt: delivered; retried after the backoff for its attempt number; or,
/// past the delivery's window, given up.
fn next_step(d: &Delivery, succeeded: bool, now_ms: i64, floor: Duration, ceiling: Duration) -> AttemptOutcome {
    if succeeded {
        return AttemptOutcome::Delivered;
    }
    if now_ms >= d.give_up_ms {
        return AttemptOutcome::GaveUp;
    }
    let n = u32::try_from(d.attempts + 1).unwrap_or(u32::MAX);
    let pause = i64::try_from(nth_delay(floor, ceiling, n).as_millis()).unwrap_or(i64::MAX);
    AttemptOutcome::Retry { at_ms: now_ms.saturating_add(pause) }
}

fn outcome_label(o: AttemptOutcome) -> &'static str {
    match o {
        AttemptOutcome::Delivered => "delivered",
        AttemptOutcome::Retry { .. } => "retry",
        AttemptOutcome::GaveUp => "gave_up",
    }
}

async fn deliver(hooks: Arc<Webhooks>, outbox: Arc<dyn OutboxStore>, d: Delivery) {
    let (attempt, outcome) = hooks.attempt(&d).await;
    let label = outcome_label(outcome);
    metrics::counter!(telemetry::OUTBOUND_ATTEMPTS, "endpoint" => d.endpoint.clone(), "outcome" => label).increment(1);
    metrics::histogram!(telemetry::OUTBOUND_SECONDS, "endpoint" => d.endpoint.clone())
        .record(attempt.duration_ms as f64 / 1000.0);
    if let Some(err) = &attempt.error {
        tracing::warn!(endpoint = %d.endpoint, delivery = d.id, attempt = attempt.attempt, error = %err, outcome = label, "webhook attempt failed");
    }
    if let Err(e) = outbox.record_attempt(d.id, &attempt, outcome).await {
        // The lease runs out and the delivery is attempted again: at least once.
        tracing::warn!(delivery = d.id, error = %e, "webhook attempt not recorded");
    }
}

/// Deliver due events until `shutdown`; `wake` is notified when new events are committed.
/// Attempts run concurrently (up to [`MAX_IN_FLIGHT`]): a slow endpoint holds up only its own
/// deliveries. One finishing makes the loop look again (that tenant's next event is now due).
pub fn spawn(
    hooks: Arc<Webhooks>,
    outbox: Arc<dyn OutboxStore>,
    wake: Arc<Notify>,
    mut shutdown: Shutdown,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut in_flight = JoinSet::new();
        loop {
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            while in_flight.try_join_next().is_some() {}
            let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
            let claimed = match room {
                0 => Vec::new(),
                n => outbox
                    .claim_deliveries(clock::host_unix_millis(), LEASE_MS, BATCH.min(u32::try_from(n).unwrap_or(BATCH)))
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "webhook deliveries unavailable");
                        Vec::new()
                    }),
            };
            let busy = !claimed.is_empty();
            for d in claimed {
                in_flight.spawn(deliver(Arc::clone(&hooks), Arc::clone(&outbox), d));
            }
            if busy {
                continue;
            }
            // Other replicas commit events too: look again within 2 s even without a wake.
            let next = outbox.next_delivery_ms().await.ok().flatten();
            let pause = next.map_or(2_000, |t| t.saturating_sub(clock::host_unix_millis())).clamp(200, 2_000);
            tokio::select! {
                // In-flight attempts are dropped (aborted): their leases run out, and they are
                // attempted again (at least once).
                _ = shutdown.fired() => return,
                _ = &mut woken => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                _ = tokio::time::sleep(Duration::from_millis(u64::try_from(pause).unwrap_or(2_000))) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn parse(src: &str) -> Result<Webhooks, WebhookConfigError> {
        let env = |v: &str| (v == "APP_SECRET").then(|| SECRET.to_string());
        Webhooks::parse(src, "hooks.toml", &env, Duration::from_secs(1), Duration::from_secs(60))
    }

    #[test]
    fn endpoints_load_and_route() {
        let h = parse(
            "[[endpoint]]\nname = \"app\"\nurl = \"http://127.0.0.1:9/hooks\"\nsecret = \"${APP_SECRET}\"\nevents = [\"notice.*\"]\n",
        )
        .expect("valid");
        let routes = h.routes();
        assert_eq!(routes.len(), 1);
        assert!(routes[0].wants("notice.trial_warning"));
        assert!(!routes[0].wants("tenant.changed"));
        assert!(parse("[[endpoint]]\nname = \"a\"\nurl = \"http://x/\"\nsecret = \"${NOPE}\"\n").is_err());
        assert!(parse("[[endpoint]]\nname = \"a\"\nurl = \"http://x/\"\nsecret = \"not base64!\"\n").is_err());
        let dup = format!(
            "[[endpoint]]\nname = \"a\"\nurl = \"http://x/\"\nsecret = \"{SECRET}\"\n[[endpoint]]\nname = \"a\"\nurl = \"http://y/\"\nsecret = \"{SECRET}\"\n"
        );
        assert!(parse(&dup).is_err());
    }

    #[test]
    fn failures_back_off_then_give_up_after_the_window() {
        let (floor, ceiling) = (Duration::from_secs(5), Duration::from_secs(3600));
        let d = Delivery {
            id: 1,
            endpoint: "app".into(),
            event_id: 1,
            tenant_id: "t".into(),
            event_type: "tenant.changed".into(),
            status: crate::store::DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_ms: 0,
            give_up_ms: crate::store::RETRY_WINDOW_MS,
            created_ms: 0,
            payload: "{}".into(),
        };
        assert_eq!(next_step(&d, true, 10, floor, ceiling), AttemptOutcome::Delivered);
        let AttemptOutcome::Retry { at_ms } = next_step(&d, false, 10, floor, ceiling) else { panic!("retry") };
        assert!((10 + 2_500..=10 + 5_000).contains(&at_ms), "{at_ms}");
        let late = Delivery { attempts: 40, ..d.clone() };
        let AttemptOutcome::Retry { at_ms } = next_step(&late, false, 10, floor, ceiling) else { panic!("retry") };
        assert!(at_ms <= 10 + 3_600_000, "capped at the ceiling");
        // Retried for at least 24 hours: the window is 3 days.
        const { assert!(crate::store::RETRY_WINDOW_MS >= 24 * 3600 * 1000) };
        assert_eq!(next_step(&d, false, crate::store::RETRY_WINDOW_MS, floor, ceiling), AttemptOutcome::GaveUp);
    }

    #[test]
    fn signatures_are_standard_webhooks() {
        // The reference vector of the Standard Webhooks libraries.
        let h =
            parse(&format!("[[endpoint]]\nname = \"a\"\nurl = \"http://x/\"\nsecret = \"{SECRET}\"\n")).expect("valid");
        let e = &h.endpoints["a"];
        let sig = e
            .signer
            .sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#,
            )
            .expect("sign");
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }
}
