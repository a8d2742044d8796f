//! `loadgen`: a small gRPC load tool for the entitlement service (SPEC §9, BENCHMARKS.md).
//!
//! Closed loop by default: `--connections C` separate tonic channels (one TCP/HTTP-2
//! connection each), and on each of them `--streams S` tasks that each keep exactly one request
//! in flight. With `--rate R` it runs open loop instead: requests are scheduled at fixed
//! intervals of 1/R over the whole run, any idle task takes the next slot, and latency is
//! measured from the slot's *intended* send time, so a stalled server shows up as latency rather
//! than as silently fewer requests (no coordinated omission). In-flight requests are still capped
//! at C × S.
//!
//! Every run is bounded: requests stop being issued at `--warmup + --duration`, each request
//! has a `--timeout`, and the whole run is abandoned after a further grace period. Only
//! loopback targets are accepted.
//!
//! Latencies are recorded in nanoseconds in HDR histograms (3 significant figures) and reported
//! in microseconds; requests that start during the warm-up are sent but not recorded.
//!
//! Tenants: by default requests are spread round-robin over `{prefix}0 .. {prefix}{N-1}`
//! (`--tenant-prefix`, default `t`; `--tenants N`). With `--fresh-tenants` every request —
//! warm-up and probe included — goes to a tenant not used before in the run, `{prefix}{K}`,
//! `{prefix}{K+1}`, … from `--tenant-offset K`, to measure cold cache misses; a run that would go
//! past `{prefix}{N-1}` fails with an error saying how many tenants it needed. `--prefill` first
//! sends one `Check` (READ) per tenant at full concurrency so the server's cache holds them
//! (size the server's `--cache-capacity` accordingly): all N tenants, or with `--fresh-tenants`
//! the K tenants below the offset, so the fresh ones stay cold. Seed tenants with `benchdata seed`.
//! A prefill of many tenants takes a while (cold misses): give the server a `--max-ttl` longer
//! than prefill + run, or the first tenants have expired again before the measurement starts.
//!
//! `--rpc record-usage` sends `RecordUsage` DELTA 1 with `enforce: true` and a unique
//! idempotency key per request; the feature is `--feature`, by default `ai_requests` (for `check`
//! the default stays `invoice_designer`). A refused report (`applied: false`, e.g.
//! `LIMIT_EXCEEDED` once a tenant's monthly limit is used up) is a gRPC success and is timed like
//! one, but counted and reported separately as a refusal, by reason.
//!
//! OpenFeature: `--rpc flagd` sends flagd's `ResolveBoolean` (`flagd.evaluation.v1.Service`) of
//! `--feature` on the gRPC channels, exactly like `check`; `--rpc ofrep` POSTs OFREP single-flag
//! evaluations (`/ofrep/v1/evaluate/flags/{feature}`) to `--http-addr` over HTTP/1.1 — one
//! request in flight per connection, so each of the C × S tasks opens its own keep-alive
//! connection.

use std::borrow::Cow;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use entitlements::pb::entitlement_service_client::EntitlementServiceClient;
use entitlements::pb::flagd::ResolveBooleanRequest;
use entitlements::pb::flagd::service_client::ServiceClient as FlagdClient;
use entitlements::pb::{CheckBatchItem, CheckBatchRequest, CheckRequest, Intent, RecordUsageRequest, UsageMode};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Rpc {
    /// `entitlements.v1.EntitlementService/Check`.
    Check,
    /// `entitlements.v1.EntitlementService/CheckBatch` with `--batch-size` features.
    Batch,
    /// `grpc.health.v1.Health/Check` with service "": the transport floor.
    Health,
    /// `entitlements.v1.EntitlementService/RecordUsage`: DELTA 1, enforce, unique idempotency keys.
    RecordUsage,
    /// `flagd.evaluation.v1.Service/ResolveBoolean` of `--feature` (OpenFeature over gRPC).
    Flagd,
    /// OFREP `POST /ofrep/v1/evaluate/flags/{feature}` on `--http-addr` (OpenFeature over HTTP/1.1).
    Ofrep,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::Check => "check",
            Rpc::Batch => "batch",
            Rpc::Health => "health",
            Rpc::RecordUsage => "record-usage",
            Rpc::Flagd => "flagd",
            Rpc::Ofrep => "ofrep",
        }
    }

    /// The feature a request names when `--feature` is not given.
    fn default_feature(self) -> &'static str {
        match self {
            Rpc::RecordUsage => "ai_requests",
            Rpc::Check | Rpc::Batch | Rpc::Health | Rpc::Flagd | Rpc::Ofrep => "invoice_designer",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Closed/open-loop gRPC load generator for the entitlement service (loopback only)"
)]
struct Args {
    /// Server address; must be a loopback address or `localhost`.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// The HTTP listener, for `--rpc ofrep`; loopback only, like --addr.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http_addr: String,
    /// Which RPC to drive.
    #[arg(long, value_enum, default_value_t = Rpc::Check)]
    rpc: Rpc,
    /// Separate connections (tonic channels).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    connections: u32,
    /// Concurrent in-flight requests per connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    streams: u32,
    /// Measured duration, after the warm-up (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Warm-up: requests are sent but not recorded.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Spread requests over tenant ids {prefix}0 .. {prefix}{N-1}; with --fresh-tenants, the
    /// upper bound of the fresh ids.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    tenants: u32,
    /// Prefix of every tenant id: `{prefix}{number}`.
    #[arg(long, default_value = "t")]
    tenant_prefix: String,
    /// Every request (warm-up and probe included) goes to a tenant never used before in this
    /// run: {prefix}{K}, {prefix}{K+1}, … with K = --tenant-offset; cold cache misses.
    #[arg(long)]
    fresh_tenants: bool,
    /// With --fresh-tenants: the first fresh tenant number.
    #[arg(long, default_value_t = 0, requires = "fresh_tenants")]
    tenant_offset: u64,
    /// Before the warm-up, send one Check (READ) per tenant at full concurrency so the server's
    /// cache holds them: {prefix}0 .. {prefix}{N-1}, or with --fresh-tenants the tenants below
    /// --tenant-offset.
    #[arg(long)]
    prefill: bool,
    /// Feature for `--rpc check` (default invoice_designer) and `--rpc record-usage` (default
    /// ai_requests), and for the --prefill checks (default invoice_designer).
    #[arg(long)]
    feature: Option<String>,
    /// Features per CheckBatch, taken in order from the catalog's features (cycled if more).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch_size: u32,
    /// Catalog the batch features are taken from.
    #[arg(long, default_value = "examples/catalog.toml")]
    catalog: PathBuf,
    /// Ask with intent READ (default WRITE).
    #[arg(long)]
    read: bool,
    /// Open loop: total requests per second, on a fixed schedule (latency from intended send time).
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: how long before each scheduled send to stop sleeping and spin (the timer is
    /// coarse; a late wake-up would be charged to the server as latency). See `send lag` in the report.
    #[arg(long, default_value = "2ms", value_parser = humantime::parse_duration)]
    spin: Duration,
    /// Per-request deadline; a request that exceeds it counts as an error.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Client runtime worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON line instead of the text report.
    #[arg(long)]
    json: bool,
}

/// What one request looks like, prepared once.
#[derive(Clone)]
enum Work {
    Check {
        feature: String,
        intent: Intent,
    },
    Batch {
        items: Vec<CheckBatchItem>,
    },
    Health,
    /// Idempotency keys are `{run}-{request number}`: unique within and across runs.
    RecordUsage {
        feature: String,
        run: Arc<str>,
    },
    Flagd {
        feature: String,
    },
    Ofrep {
        path: String,
        authority: String,
    },
}

/// One task's view of the connection.
enum Client {
    Data(EntitlementServiceClient<Channel>),
    Health(HealthClient<Channel>),
    Flagd(FlagdClient<Channel>),
    Ofrep(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
}

/// `{"context":{"targetingKey":…}}` (tenant ids need no JSON escaping: see `validate_tenant_id`).
fn ofrep_body(tenant: &str) -> Full<Bytes> {
    Full::new(Bytes::from(format!(r#"{{"context":{{"targetingKey":"{tenant}"}}}}"#)))
}

async fn ofrep_call(
    c: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
    authority: &str,
    tenant: &str,
) -> Result<Outcome, Failure> {
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(ofrep_body(tenant))
        .map_err(|_| Failure::Http(0))?;
    let resp = c.send_request(req).await.map_err(|_| Failure::Http(0))?;
    let status = resp.status().as_u16();
    // Read the whole body: the connection is reused for the next request.
    resp.into_body().collect().await.map_err(|_| Failure::Http(0))?;
    if status == 200 { Ok(Outcome::Done) } else { Err(Failure::Http(status)) }
}

/// One HTTP/1.1 keep-alive connection to the OFREP listener.
async fn ofrep_connection(addr: &str) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
    tokio::spawn(conn);
    Ok(send)
}

/// Why a request did not count as a success.
#[derive(Debug)]
enum Failure {
    Status(tonic::Code),
    NotServing(i32),
    Timeout,
    /// A RecordUsage key this run never sent before came back as a replay.
    Duplicate,
    /// OFREP: an HTTP status other than 200 (0: the connection failed).
    Http(u16),
}

/// A successful request: answered, or (RecordUsage) answered with a refusal.
enum Outcome {
    Done,
    /// The usage report was not applied; the reason's proto name.
    Refused(&'static str),
}

impl Client {
    /// `seq` numbers the request within the run (it makes RecordUsage idempotency keys unique).
    async fn call(&mut self, work: &Work, tenant: &str, seq: u64) -> Result<Outcome, Failure> {
        match (self, work) {
            (Client::Data(c), Work::Check { feature, intent }) => {
                let req = CheckRequest {
                    tenant_id: tenant.to_owned(),
                    feature: feature.clone(),
                    quantity: None,
                    intent: *intent as i32,
                    min_revision: None,
                };
                c.check(req).await.map(|_| Outcome::Done).map_err(|s| Failure::Status(s.code()))
            }
            (Client::Data(c), Work::Batch { items }) => {
                let req = CheckBatchRequest { tenant_id: tenant.to_owned(), items: items.clone(), min_revision: None };
                c.check_batch(req).await.map(|_| Outcome::Done).map_err(|s| Failure::Status(s.code()))
            }
            (Client::Data(c), Work::RecordUsage { feature, run }) => {
                let req = RecordUsageRequest {
                    tenant_id: tenant.to_owned(),
                    feature: feature.clone(),
                    value: 1,
                    mode: UsageMode::Delta as i32,
                    idempotency_key: format!("{run}-{seq}"),
                    enforce: true,
                };
                let resp = c.record_usage(req).await.map_err(|s| Failure::Status(s.code()))?.into_inner();
                match (resp.applied, resp.duplicate) {
                    (_, true) => Err(Failure::Duplicate),
                    (true, false) => Ok(Outcome::Done),
                    (false, false) => Ok(Outcome::Refused(resp.reason().as_str_name())),
                }
            }
            (Client::Health(c), Work::Health) => {
                let resp = c
                    .check(HealthCheckRequest { service: String::new() })
                    .await
                    .map_err(|s| Failure::Status(s.code()))?;
                match resp.into_inner().status {
                    s if s == ServingStatus::Serving as i32 => Ok(Outcome::Done),
                    s => Err(Failure::NotServing(s)),
                }
            }
            (Client::Flagd(c), Work::Flagd { feature }) => {
                let ctx = prost_types::Struct {
                    fields: [(
                        "targetingKey".to_string(),
                        prost_types::Value { kind: Some(prost_types::value::Kind::StringValue(tenant.to_owned())) },
                    )]
                    .into(),
                };
                let req = ResolveBooleanRequest { flag_key: feature.clone(), context: Some(ctx) };
                c.resolve_boolean(req).await.map(|_| Outcome::Done).map_err(|s| Failure::Status(s.code()))
            }
            (Client::Ofrep(c), Work::Ofrep { path, authority }) => ofrep_call(c, path, authority, tenant).await,
            _ => unreachable!("client and work are built together"),
        }
    }
}

/// The shared schedule of the run.
struct Plan {
    start: Instant,
    /// Requests started (or scheduled) before this are warm-up.
    measure_from: Instant,
    /// No request is started (or scheduled) at or after this.
    end: Instant,
    timeout: Duration,
    /// Open loop: the interval between scheduled sends, and the next free slot.
    interval: Option<Duration>,
    slots: u64,
    next_slot: AtomicU64,
    tenants: Tenants,
    spin: Duration,
}

/// Which tenant each request goes to.
enum Tenants {
    /// Round-robin over these ids.
    Spread(Arc<[String]>),
    /// A tenant never used before per request.
    Fresh(Fresh),
}

/// The fresh-tenant counter: `{prefix}{offset}`, `{prefix}{offset + 1}`, … below `limit`.
struct Fresh {
    prefix: String,
    offset: u64,
    limit: u64,
    next: AtomicU64,
    exhausted: AtomicBool,
}

impl Fresh {
    fn new(prefix: &str, offset: u64, limit: u64) -> Fresh {
        Fresh {
            prefix: prefix.to_string(),
            offset,
            limit,
            next: AtomicU64::new(offset),
            exhausted: AtomicBool::new(false),
        }
    }

    /// The next unused tenant id, or `None` once the numbers reach `limit`.
    fn take(&self) -> Option<String> {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        if k >= self.limit {
            self.exhausted.store(true, Ordering::Relaxed);
            return None;
        }
        Some(format!("{}{k}", self.prefix))
    }

    /// How many fresh tenants were handed out.
    fn used(&self) -> u64 {
        self.next.load(Ordering::Relaxed).min(self.limit) - self.offset
    }
}

/// What one task measured.
struct Tally {
    hist: Histogram<u64>,
    /// Open loop: how late each request actually went out (send time − intended time). Large
    /// values mean the generator, not the server, fell behind.
    lag: Histogram<u64>,
    requests: u64,
    errors: u64,
    error_kinds: Vec<(String, u64)>,
    /// RecordUsage reports answered but not applied, by reason (also counted in `requests`).
    refusals: u64,
    refusal_kinds: Vec<(String, u64)>,
    last_done: Instant,
}

/// Count one more of `kind` in a small (kind, count) list.
fn bump(kinds: &mut Vec<(String, u64)>, kind: &str, n: u64) {
    match kinds.iter_mut().find(|(k, _)| k == kind) {
        Some((_, m)) => *m += n,
        None => kinds.push((kind.to_string(), n)),
    }
}

fn new_hist() -> Histogram<u64> {
    // 1 ns .. 60 s at 3 significant figures.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

impl Tally {
    fn new(now: Instant) -> Tally {
        Tally {
            hist: new_hist(),
            lag: new_hist(),
            requests: 0,
            errors: 0,
            error_kinds: Vec::new(),
            refusals: 0,
            refusal_kinds: Vec::new(),
            last_done: now,
        }
    }

    fn error(&mut self, f: &Failure) {
        self.errors += 1;
        let kind = match f {
            Failure::Status(code) => format!("{code:?}"),
            Failure::NotServing(s) => format!("health status {s}"),
            Failure::Timeout => "client timeout".to_string(),
            Failure::Duplicate => "unexpected duplicate".to_string(),
            Failure::Http(0) => "HTTP connection error".to_string(),
            Failure::Http(s) => format!("HTTP {s}"),
        };
        bump(&mut self.error_kinds, &kind, 1);
    }

    fn refusal(&mut self, reason: &str) {
        self.refusals += 1;
        bump(&mut self.refusal_kinds, reason, 1);
    }

    fn merge(&mut self, other: Tally) {
        self.hist.add(&other.hist).expect("same histogram bounds");
        self.lag.add(&other.lag).expect("same histogram bounds");
        self.requests += other.requests;
        self.errors += other.errors;
        for (k, n) in other.error_kinds {
            bump(&mut self.error_kinds, &k, n);
        }
        self.refusals += other.refusals;
        for (k, n) in other.refusal_kinds {
            bump(&mut self.refusal_kinds, &k, n);
        }
        self.last_done = self.last_done.max(other.last_done);
    }
}

/// Wait until `at` precisely: the tokio timer has millisecond granularity and a sleeping thread
/// takes a while to wake, so sleep until `spin` before `at` and then yield until it has passed.
async fn wait_until(at: Instant, spin: Duration) {
    let coarse = at.checked_sub(spin).unwrap_or(at);
    if Instant::now() < coarse {
        tokio::time::sleep_until(coarse).await;
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

async fn run_task(mut client: Client, work: Work, plan: Arc<Plan>, task: u64, tasks: u64) -> Tally {
    let mut tally = Tally::new(plan.start);
    let mut i = 0u64;
    loop {
        // When this request is meant to go out, and whether it is recorded.
        let intended = match plan.interval {
            None => {
                let now = Instant::now();
                if now >= plan.end {
                    break;
                }
                now
            }
            Some(interval) => {
                let slot = plan.next_slot.fetch_add(1, Ordering::Relaxed);
                if slot >= plan.slots {
                    break;
                }
                let at = plan.start + interval.mul_f64(slot as f64);
                if at >= plan.end {
                    break;
                }
                wait_until(at, plan.spin).await;
                at
            }
        };
        let seq = task + i * tasks;
        let tenant: Cow<'_, str> = match &plan.tenants {
            Tenants::Spread(ids) => Cow::Borrowed(&ids[(seq % ids.len() as u64) as usize]),
            Tenants::Fresh(fresh) => match fresh.take() {
                Some(id) => Cow::Owned(id),
                // Out of fresh tenants: the run fails (see `run`).
                None => break,
            },
        };
        i += 1;
        let sent = Instant::now();
        let result = match tokio::time::timeout(plan.timeout, client.call(&work, &tenant, seq)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout),
        };
        let done = Instant::now();
        if intended < plan.measure_from {
            continue;
        }
        tally.requests += 1;
        tally.last_done = done;
        if plan.interval.is_some() {
            let lag = u64::try_from(sent.saturating_duration_since(intended).as_nanos()).unwrap_or(u64::MAX);
            tally.lag.saturating_record(lag.max(1));
        }
        match result {
            Ok(outcome) => {
                let ns = u64::try_from(done.duration_since(intended).as_nanos()).unwrap_or(u64::MAX);
                tally.hist.saturating_record(ns.max(1));
                if let Outcome::Refused(reason) = outcome {
                    tally.refusal(reason);
                }
            }
            Err(f) => tally.error(&f),
        }
    }
    tally
}

/// Accept only loopback targets: this tool is for benchmarking a local server.
fn check_loopback(addr: &str) -> Result<Uri, String> {
    let uri: Uri = addr.parse().map_err(|e| format!("--addr {addr}: {e}"))?;
    let host = uri.host().ok_or_else(|| format!("--addr {addr}: no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!("--addr {addr}: only loopback targets (127.0.0.0/8, ::1, localhost) are allowed"));
    }
    if uri.scheme_str() != Some("http") {
        return Err(format!("--addr {addr}: must be http://"));
    }
    Ok(uri)
}

/// The feature `--rpc check` / `record-usage` asks about.
fn feature(args: &Args) -> &str {
    args.feature.as_deref().unwrap_or(args.rpc.default_feature())
}

/// Unique per run (and process): the prefix of RecordUsage idempotency keys.
fn run_id() -> String {
    let nanos = entitlements::clock::unix_nanos();
    format!("loadgen-{nanos:x}-{:x}", std::process::id())
}

fn work_for(args: &Args) -> Result<Work, String> {
    let intent = if args.read { Intent::Read } else { Intent::Write };
    if args.fresh_tenants && args.rpc == Rpc::Health {
        return Err("--fresh-tenants: --rpc health names no tenant".to_string());
    }
    if args.fresh_tenants && args.tenant_offset >= u64::from(args.tenants) {
        return Err(format!(
            "--tenant-offset {} leaves no fresh tenants below --tenants {}",
            args.tenant_offset, args.tenants
        ));
    }
    if args.prefill && args.fresh_tenants && args.tenant_offset == 0 {
        return Err("--prefill with --fresh-tenants warms the tenants below --tenant-offset, which is 0".to_string());
    }
    Ok(match args.rpc {
        Rpc::Check => Work::Check { feature: feature(args).to_string(), intent },
        Rpc::RecordUsage => Work::RecordUsage { feature: feature(args).to_string(), run: Arc::from(run_id()) },
        Rpc::Health => Work::Health,
        Rpc::Flagd => Work::Flagd { feature: feature(args).to_string() },
        Rpc::Ofrep => {
            let uri = check_loopback(&args.http_addr)?;
            let authority = uri.authority().map(|a| a.to_string()).ok_or("--http-addr: no host")?;
            Work::Ofrep { path: format!("/ofrep/v1/evaluate/flags/{}", feature(args)), authority }
        }
        Rpc::Batch => {
            let catalog = entitlements::server::load_catalog(&args.catalog).map_err(|e| e.to_string())?;
            if catalog.features.is_empty() {
                return Err(format!("{}: no features", args.catalog.display()));
            }
            let items = catalog
                .features
                .iter()
                .cycle()
                .take(args.batch_size as usize)
                .map(|f| CheckBatchItem { feature: f.key.clone(), quantity: None, intent: intent as i32 })
                .collect();
            Work::Batch { items }
        }
    })
}

/// What `--prefill` did.
struct Prefill {
    tenants: u64,
    elapsed: Duration,
}

struct Report {
    elapsed: Duration,
    total: Tally,
    prefill: Option<Prefill>,
    /// With --fresh-tenants: how many were used (probe and warm-up included).
    fresh_used: Option<u64>,
}

/// One Check (READ) of `feature` for each of `{prefix}0 .. {prefix}{count-1}`, `tasks` at a time
/// spread over `channels`; stops at the first failure.
async fn prefill(
    args: &Args,
    channels: &[Channel],
    feature: &str,
    count: u64,
    print: &dyn Fn(&str),
) -> Result<Prefill, String> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for ch in channels {
        for _ in 0..args.streams {
            let mut client = EntitlementServiceClient::new(ch.clone());
            let (next, failed) = (Arc::clone(&next), Arc::clone(&failed));
            let (prefix, feature, timeout) = (args.tenant_prefix.clone(), feature.to_string(), args.timeout);
            handles.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || failed.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    let req = CheckRequest {
                        tenant_id: format!("{prefix}{i}"),
                        feature: feature.clone(),
                        quantity: None,
                        intent: Intent::Read as i32,
                        min_revision: None,
                    };
                    let err = match tokio::time::timeout(timeout, client.check(req)).await {
                        Ok(Ok(_)) => continue,
                        Ok(Err(s)) => Failure::Status(s.code()),
                        Err(_) => Failure::Timeout,
                    };
                    failed.store(true, Ordering::Relaxed);
                    return Err(format!("prefill: Check {prefix}{i} {feature}: {err:?}"));
                }
            }));
        }
    }
    let progress = {
        let next = Arc::clone(&next);
        async move {
            let mut tick = tokio::time::interval_at(started + Duration::from_secs(10), Duration::from_secs(10));
            loop {
                tick.tick().await;
                let done = next.load(Ordering::Relaxed).min(count);
                eprintln!("prefill: {done}/{count} after {:.0}s", started.elapsed().as_secs_f64());
            }
        }
    };
    let joined = async {
        let mut first_err = None;
        for h in handles {
            let r = h.await.map_err(|e| format!("prefill task failed: {e}")).and_then(|r| r);
            if let (Err(e), None) = (r, &first_err) {
                first_err = Some(e);
            }
        }
        first_err
    };
    let first_err = tokio::select! {
        e = joined => e,
        _ = progress => None,
    };
    if let Some(e) = first_err {
        return Err(e);
    }
    let elapsed = started.elapsed();
    print(&format!(
        "prefill: {count} Check(READ) {feature} for {p}0..{p}{} in {:.2}s ({:.0} req/s)",
        count - 1,
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64().max(1e-9),
        p = args.tenant_prefix,
    ));
    if elapsed > Duration::from_secs(50) {
        print(&format!(
            "prefill: note: that took {:.0}s; a server keeps a cached tenant at most its --max-ttl (default 60s) and holds \
             at most --cache-capacity (default 100000) of them: run it with a longer TTL and room for {count}",
            elapsed.as_secs_f64()
        ));
    }
    Ok(Prefill { tenants: count, elapsed })
}

async fn run(args: &Args, uri: Uri, work: Work) -> Result<Report, String> {
    let total_time = args.warmup + args.duration;
    let (interval, slots) = match args.rate {
        None => (None, u64::MAX),
        Some(r) if r.is_finite() && r > 0.0 => {
            let slots = (r * total_time.as_secs_f64()).ceil() as u64;
            (Some(Duration::from_secs_f64(1.0 / r)), slots)
        }
        Some(r) => return Err(format!("--rate {r}: must be a positive number")),
    };
    let tenants = if args.fresh_tenants {
        let fresh = Fresh::new(&args.tenant_prefix, args.tenant_offset, u64::from(args.tenants));
        // Open loop: the number of requests is known, so say now if they cannot all be fresh.
        let available = fresh.limit - fresh.offset;
        if interval.is_some() && slots.saturating_add(1) > available {
            return Err(format!(
                "--fresh-tenants: this open-loop run sends {} requests (with the probe) but only {available} fresh \
                 tenants {p}{}..{p}{} remain; raise --tenants to at least {} or lower --rate/--duration",
                slots.saturating_add(1),
                fresh.offset,
                fresh.limit - 1,
                fresh.offset.saturating_add(slots).saturating_add(1),
                p = args.tenant_prefix,
            ));
        }
        Tenants::Fresh(fresh)
    } else {
        Tenants::Spread((0..args.tenants).map(|i| format!("{}{i}", args.tenant_prefix)).collect())
    };

    let endpoint = Endpoint::from(uri).tcp_nodelay(true).connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::with_capacity(args.connections as usize);
    for _ in 0..args.connections {
        // One `connect` per channel: each is its own TCP connection.
        channels.push(endpoint.connect().await.map_err(|e| format!("connect {}: {e}", args.addr))?);
    }
    let client_for = async |ch: &Channel| -> Result<Client, String> {
        Ok(match (args.rpc, &work) {
            (Rpc::Health, _) => Client::Health(HealthClient::new(ch.clone())),
            (Rpc::Flagd, _) => Client::Flagd(FlagdClient::new(ch.clone())),
            (_, Work::Ofrep { authority, .. }) => Client::Ofrep(ofrep_connection(authority).await?),
            _ => Client::Data(EntitlementServiceClient::new(ch.clone())),
        })
    };

    // One probe, so a misconfigured run fails loudly instead of measuring errors.
    let probe_tenant = match &tenants {
        Tenants::Spread(ids) => ids[0].clone(),
        Tenants::Fresh(fresh) => fresh.take().ok_or("--fresh-tenants: no fresh tenant for the probe")?,
    };
    let mut probe = client_for(&channels[0]).await?;
    probe.call(&work, &probe_tenant, u64::MAX).await.map_err(|f| format!("probe request failed: {f:?}"))?;

    let prefilled = if args.prefill {
        let count = match &tenants {
            Tenants::Spread(ids) => ids.len() as u64,
            Tenants::Fresh(fresh) => fresh.offset,
        };
        let json = args.json;
        let print = move |line: &str| if json { eprintln!("{line}") } else { println!("{line}") };
        let feature = args.feature.as_deref().unwrap_or(Rpc::Check.default_feature());
        Some(prefill(args, &channels, feature, count, &print).await?)
    } else {
        None
    };

    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let plan = Arc::new(Plan {
        start,
        measure_from,
        end,
        timeout: args.timeout,
        interval,
        slots,
        next_slot: AtomicU64::new(0),
        tenants,
        spin: args.spin,
    });

    let tasks = u64::from(args.connections) * u64::from(args.streams);
    let mut handles = Vec::with_capacity(tasks as usize);
    let mut task = 0u64;
    for ch in &channels {
        for _ in 0..args.streams {
            handles.push(tokio::spawn(run_task(client_for(ch).await?, work.clone(), Arc::clone(&plan), task, tasks)));
            task += 1;
        }
    }

    // Hard bound: every task stops issuing at `end` and each request has a deadline; this is the
    // backstop if something still hangs.
    let grace = args.timeout + Duration::from_secs(5);
    let mut total = Tally::new(measure_from);
    let joined = tokio::time::timeout_at(end + grace, async {
        let mut out = Vec::with_capacity(handles.len());
        for h in handles.drain(..) {
            out.push(h.await);
        }
        out
    })
    .await;
    let results = match joined {
        Ok(r) => r,
        Err(_) => return Err("run did not finish within its time bound".to_string()),
    };
    for r in results {
        total.merge(r.map_err(|e| format!("load task failed: {e}"))?);
    }
    let fresh_used = match &plan.tenants {
        Tenants::Fresh(fresh) if fresh.exhausted.load(Ordering::Relaxed) => {
            let used = fresh.used();
            let secs = start.elapsed().as_secs_f64();
            let needed = (used as f64 / secs.max(1e-9) * total_time.as_secs_f64()).ceil() as u64 + 1;
            return Err(format!(
                "--fresh-tenants: ran out of tenants after {secs:.1}s of a {:.1}s run: {used} fresh tenants \
                 {p}{}..{p}{} were used up; at this rate the run needs about {needed}, so raise --tenants to at \
                 least {} (or shorten --warmup/--duration)",
                total_time.as_secs_f64(),
                fresh.offset,
                fresh.limit - 1,
                fresh.offset.saturating_add(needed),
                p = args.tenant_prefix,
            ));
        }
        Tenants::Fresh(fresh) => Some(fresh.used()),
        Tenants::Spread(_) => None,
    };
    let elapsed = total.last_done.max(end).saturating_duration_since(measure_from);
    Ok(Report { elapsed, total, prefill: prefilled, fresh_used })
}

fn us(ns: u64) -> f64 {
    (ns as f64 / 1000.0 * 10.0).round() / 10.0
}

fn print_report(args: &Args, r: &Report) {
    let h = &r.total.hist;
    let secs = r.elapsed.as_secs_f64();
    let ok = h.len();
    let throughput = if secs > 0.0 { r.total.requests as f64 / secs } else { 0.0 };
    let q = |p: f64| {
        if ok == 0 { 0.0 } else { us(h.value_at_quantile(p)) }
    };
    let max = if ok == 0 { 0.0 } else { us(h.max()) };
    let mean = if ok == 0 { 0.0 } else { (h.mean() / 100.0).round() / 10.0 };
    let batch = (args.rpc == Rpc::Batch).then_some(args.batch_size);
    let lag = &r.total.lag;
    let lag_q = |p: f64| if lag.is_empty() { 0.0 } else { us(lag.value_at_quantile(p)) };
    if args.json {
        let errors: serde_json::Map<String, serde_json::Value> =
            r.total.error_kinds.iter().map(|(k, n)| (k.clone(), serde_json::Value::from(*n))).collect();
        let refusals: serde_json::Map<String, serde_json::Value> =
            r.total.refusal_kinds.iter().map(|(k, n)| (k.clone(), serde_json::Value::from(*n))).collect();
        let line = serde_json::json!({
            "rpc": args.rpc.name(),
            "addr": args.addr,
            "connections": args.connections,
            "streams": args.streams,
            "tenants": args.tenants,
            "tenant_prefix": args.tenant_prefix,
            "tenant_mode": if args.fresh_tenants { "fresh" } else { "spread" },
            "tenant_offset": args.fresh_tenants.then_some(args.tenant_offset),
            "fresh_tenants_used": r.fresh_used,
            "prefill_tenants": r.prefill.as_ref().map(|p| p.tenants),
            "prefill_s": r.prefill.as_ref().map(|p| (p.elapsed.as_secs_f64() * 1000.0).round() / 1000.0),
            "feature": matches!(args.rpc, Rpc::Check | Rpc::RecordUsage).then(|| feature(args)),
            "usage_mode": (args.rpc == Rpc::RecordUsage).then_some("delta_enforce"),
            "batch_size": batch,
            "mode": if args.rate.is_some() { "open" } else { "closed" },
            "rate": args.rate,
            "warmup_s": args.warmup.as_secs_f64(),
            "duration_s": secs,
            "requests": r.total.requests,
            "errors": r.total.errors,
            "error_kinds": errors,
            "refusals": r.total.refusals,
            "refusal_kinds": refusals,
            "throughput_rps": (throughput * 10.0).round() / 10.0,
            "mean_us": mean,
            "p50_us": q(0.50),
            "p90_us": q(0.90),
            "p99_us": q(0.99),
            "p999_us": q(0.999),
            "max_us": max,
            "send_lag_p50_us": args.rate.map(|_| lag_q(0.50)),
            "send_lag_p99_us": args.rate.map(|_| lag_q(0.99)),
            "send_lag_max_us": args.rate.map(|_| if lag.is_empty() { 0.0 } else { us(lag.max()) }),
        });
        println!("{line}");
    } else {
        let mode = match args.rate {
            Some(rate) => format!("open loop at {rate} req/s"),
            None => "closed loop".to_string(),
        };
        let what = match args.rpc {
            Rpc::Check => format!("Check {}", feature(args)),
            Rpc::Batch => format!("CheckBatch of {}", args.batch_size),
            Rpc::Health => "grpc.health.v1/Check".to_string(),
            Rpc::RecordUsage => format!("RecordUsage {} DELTA 1 enforce", feature(args)),
            Rpc::Flagd => format!("flagd ResolveBoolean {}", feature(args)),
            Rpc::Ofrep => format!("OFREP evaluate {} on {} (HTTP/1.1)", feature(args), args.http_addr),
        };
        let p = &args.tenant_prefix;
        let tenants = match r.fresh_used {
            Some(used) => {
                format!("fresh tenants from {p}{} ({used} used, limit {p}{})", args.tenant_offset, args.tenants - 1)
            }
            None => format!("{} tenant(s) {p}0..{p}{}", args.tenants, args.tenants - 1),
        };
        println!(
            "{what} -> {} | {} conn x {} streams, {tenants}, {mode}, {:.2}s measured after {:?} warm-up",
            args.addr, args.connections, args.streams, secs, args.warmup
        );
        println!("requests   {}", r.total.requests);
        println!("errors     {}", r.total.errors);
        for (k, n) in &r.total.error_kinds {
            println!("  {k}: {n}");
        }
        if args.rpc == Rpc::RecordUsage {
            println!("refused    {} (answered, not applied; included in requests and latency)", r.total.refusals);
            for (k, n) in &r.total.refusal_kinds {
                println!("  {k}: {n}");
            }
        }
        println!("throughput {throughput:.1} req/s");
        println!(
            "latency us mean {mean}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {max}",
            q(0.50),
            q(0.90),
            q(0.99),
            q(0.999)
        );
        if args.rate.is_some() {
            println!(
                "send lag us p50 {}  p99 {}  max {}  (how late the generator sent; included in latency)",
                lag_q(0.50),
                lag_q(0.99),
                if lag.is_empty() { 0.0 } else { us(lag.max()) }
            );
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let uri = match check_loopback(&args.addr) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let work = match work_for(&args) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args, uri, work)) {
        Ok(report) => {
            print_report(&args, &report);
            if report.total.errors > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Fresh, check_loopback};

    #[test]
    fn fresh_tenants_are_used_once_and_run_out() {
        let fresh = Fresh::new("x", 3, 5);
        assert_eq!(fresh.take().as_deref(), Some("x3"));
        assert_eq!(fresh.take().as_deref(), Some("x4"));
        assert!(!fresh.exhausted.load(std::sync::atomic::Ordering::Relaxed));
        assert_eq!(fresh.take(), None);
        assert_eq!(fresh.take(), None);
        assert!(fresh.exhausted.load(std::sync::atomic::Ordering::Relaxed));
        assert_eq!(fresh.used(), 2);
    }

    #[test]
    fn only_loopback_targets() {
        assert!(check_loopback("http://127.0.0.1:50051").is_ok());
        assert!(check_loopback("http://127.1.2.3:1").is_ok());
        assert!(check_loopback("http://localhost:50051").is_ok());
        assert!(check_loopback("http://[::1]:50051").is_ok());
        assert!(check_loopback("http://10.0.0.1:50051").is_err());
        assert!(check_loopback("http://example.com:50051").is_err());
        assert!(check_loopback("https://127.0.0.1:50051").is_err());
    }
}
