//! Lifecycle notices and outbound webhooks end to end: a server process with an injected clock
//! (`--clock-offset-file`, test/debug only), a `Watch` follower that reconnects with its cursor,
//! and a webhook receiver in Python that verifies every signature with the official Standard
//! Webhooks library (PyPI `standardwebhooks`, installed by `.ci/run`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use entitlements::pb::{self, LifecycleNotice, WatchEventKind};
use entitlements::tenant::DAY;
use tonic::transport::Channel;

use super::{catalog_path, with_token};

pub const TOKEN: &str = "lifecycle-token";
pub const HOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// The Stripe webhook secret the servers accept.
pub const STRIPE_SECRET: &str = "whsec_lifecycle_stripe";

/// The receiver: verifies with `standardwebhooks`, answers 500 to the first `fail_first`
/// requests, and logs every request as a JSON line.
const RECEIVER_PY: &str = r#"
import http.server, json, sys, threading
from standardwebhooks.webhooks import Webhook
secret, log_path, fail_first = sys.argv[1], sys.argv[2], int(sys.argv[3])
wh = Webhook(secret)
lock = threading.Lock()
seen = {"n": 0}
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            wh.verify(body, headers)
            verified = True
        except Exception:
            verified = False
        with lock:
            seen["n"] += 1
            n = seen["n"]
            status = 500 if n <= fail_first else (200 if verified else 400)
            with open(log_path, "a") as f:
                f.write(json.dumps({"n": n, "id": headers.get("webhook-id"), "verified": verified,
                                    "status": status, "body": json.loads(body)}) + "\n")
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// `python3` must import `standardwebhooks`: the tests that need it are ignored by a plain
/// `cargo test` and run by `.ci/run` (which installs it), so a missing library fails them.
pub fn require_python_standardwebhooks() {
    let ok = Command::new("python3")
        .args(["-c", "import standardwebhooks.webhooks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "python3 cannot import standardwebhooks: pip install standardwebhooks==1.0.0 (.ci/run does)");
}

pub struct Receiver {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    pub fn start(dir: &Path, fail_first: u32) -> Receiver {
        let script = dir.join("receiver.py");
        std::fs::write(&script, RECEIVER_PY).expect("write receiver");
        let log = dir.join("received.jsonl");
        let mut child = Command::new("python3")
            .arg(&script)
            .args([HOOK_SECRET, &log.display().to_string(), &fail_first.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the python receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("receiver port");
        let port = line.trim().parse().expect("receiver printed its port");
        Receiver { child, port, log }
    }

    /// Every request so far: {n, id, verified, status, body}.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).expect("receiver log line")).collect()
    }

    /// The bodies of the requests it accepted (200), in arrival order.
    pub fn accepted(&self) -> Vec<serde_json::Value> {
        self.requests().into_iter().filter(|r| r["status"] == 200).collect()
    }

    /// The endpoints file naming this receiver.
    pub fn config(&self, dir: &Path) -> PathBuf {
        let path = dir.join("webhooks.toml");
        let toml = format!(
            "[[endpoint]]\nname = \"app\"\nurl = \"http://127.0.0.1:{}/hooks\"\nsecret = \"{HOOK_SECRET}\"\n\
             events = [\"tenant.changed\", \"notice.*\"]\n",
            self.port
        );
        std::fs::write(&path, toml).expect("write webhooks.toml");
        path
    }
}

/// Move every server's clock that follows `file` to `days` days (and a minute) ahead.
pub fn set_clock(file: &Path, days: i64) {
    std::fs::write(file, format!("{}\n", days * DAY + 60)).expect("write clock offset");
}

pub struct Server {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server process on these addresses, with the injected clock and the webhook endpoints.
pub async fn spawn_server(db: &str, grpc: SocketAddr, http: SocketAddr, clock: &Path, hooks: &Path) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_entitlements"))
        .arg("serve")
        .arg("--catalog")
        .arg(catalog_path())
        .args(["--database-url", db, "--admin-token", TOKEN, "--watch-heartbeat", "1s"])
        .args(["--stripe-webhook-secret", STRIPE_SECRET])
        .args(["--grpc-addr", &grpc.to_string(), "--http-addr", &http.to_string()])
        .arg("--clock-offset-file")
        .arg(clock)
        .arg("--webhooks-config")
        .arg(hooks)
        .args(["--webhook-retry-floor", "100ms", "--webhook-retry-ceiling", "1s"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn server");
    let server = Server { child, grpc, http };
    let deadline = entitlements::clock::monotonic() + Duration::from_secs(30);
    loop {
        if let Ok(ch) = Channel::from_shared(format!("http://{grpc}")).expect("url").connect().await {
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
            if h.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.is_ok() {
                return server;
            }
        }
        assert!(entitlements::clock::monotonic() < deadline, "server on {grpc} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Follows `Watch` on one address for the whole test, reconnecting with its last cursor (as an
/// app would), and keeps every notice it is sent.
pub struct Watcher {
    pub notices: Arc<Mutex<Vec<LifecycleNotice>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    pub async fn start(grpc: SocketAddr) -> Watcher {
        let notices = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(follow(grpc, Arc::clone(&notices), ready_tx));
        ready_rx.await.expect("watching");
        Watcher { notices, task }
    }

    pub fn seen(&self) -> Vec<LifecycleNotice> {
        self.notices.lock().expect("lock").clone()
    }

    /// Wait (generous deadline, no timing assertion) until `n` notices have arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<LifecycleNotice> {
        let start = entitlements::clock::monotonic();
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "only {} of {n} notices arrived: {seen:?}", seen.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn follow(grpc: SocketAddr, notices: Arc<Mutex<Vec<LifecycleNotice>>>, ready: tokio::sync::oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut cursor = String::new();
    loop {
        let Ok(mut client) =
            pb::entitlement_service_client::EntitlementServiceClient::connect(format!("http://{grpc}")).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(stream) = client.watch(with_token(TOKEN, pb::WatchRequest { cursor: cursor.clone() })).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        while let Ok(Some(ev)) = stream.message().await {
            if !ev.cursor.is_empty() {
                cursor = ev.cursor.clone();
            }
            if ev.kind() == WatchEventKind::Notice {
                notices.lock().expect("lock").push(ev.notice.clone().expect("a NOTICE carries its notice"));
            }
            if let Some(r) = ready.take() {
                let _ = r.send(());
            }
        }
    }
}

/// Start the 14-day product-led trial of `tenant` now (the server's now).
pub async fn start_trial(grpc: SocketAddr, tenant: &str) {
    let mut admin = super::admin_client(grpc).await;
    let req = pb::ExtendTrialRequest {
        tenant_id: tenant.into(),
        actor: "signup".into(),
        rationale: "self-serve signup".into(),
        until: Some(pb::extend_trial_request::Until::Days(14)),
    };
    admin.extend_trial(with_token(TOKEN, req)).await.expect("start the trial");
}

/// The 14-day trial's notices, in order, as (threshold, days left): the example catalog warns
/// at 7 and 3 days, hard-locks 7 days after the end and archives 30 days after it.
pub fn trial_timeline() -> Vec<(pb::LifecycleThreshold, i64)> {
    use pb::LifecycleThreshold as T;
    vec![(T::TrialWarning, 7), (T::TrialWarning, 3), (T::TrialEnded, 0), (T::HardLocked, 0), (T::Archived, 0)]
}

/// The days (after the trial start) at which the test clock stands just past each notice.
pub const TIMELINE_DAYS: [i64; 5] = [7, 11, 14, 21, 44];

pub fn kinds(ns: &[LifecycleNotice]) -> Vec<(pb::LifecycleThreshold, i64)> {
    ns.iter().map(|n| (n.threshold(), n.days_left)).collect()
}

/// The notice webhooks the receiver accepted for `tenant`, as (type, days left), in order.
pub fn accepted_notices(r: &Receiver, tenant: &str) -> Vec<(String, i64)> {
    r.accepted()
        .iter()
        .map(|req| &req["body"])
        .filter(|b| b["data"]["tenant_id"] == tenant && b["type"].as_str().is_some_and(|t| t.starts_with("notice.")))
        .map(|b| (b["type"].as_str().unwrap_or_default().to_string(), b["data"]["days_left"].as_i64().unwrap_or(-1)))
        .collect()
}

pub fn expected_webhook_notices() -> Vec<(String, i64)> {
    [("trial_warning", 7), ("trial_warning", 3), ("trial_ended", 0), ("hard_locked", 0), ("archived", 0)]
        .into_iter()
        .map(|(t, d)| (format!("notice.{t}"), d))
        .collect()
}

/// Wait until the receiver has accepted `n` notices for `tenant`.
pub async fn wait_for_webhooks(r: &Receiver, tenant: &str, n: usize) -> Vec<(String, i64)> {
    let start = entitlements::clock::monotonic();
    loop {
        let got = accepted_notices(r, tenant);
        if got.len() >= n {
            return got;
        }
        // An attempt cut off by a killed server is retried when its 15 s lease ends.
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "receiver accepted only {got:?}; requests: {:?}",
            r.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
