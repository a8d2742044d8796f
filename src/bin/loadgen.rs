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

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use entitlements::pb::entitlement_service_client::EntitlementServiceClient;
use entitlements::pb::{CheckBatchItem, CheckBatchRequest, CheckRequest, Intent};
use hdrhistogram::Histogram;
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
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::Check => "check",
            Rpc::Batch => "batch",
            Rpc::Health => "health",
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
    /// Spread requests over tenant ids t0 .. t{N-1}.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    tenants: u32,
    /// Feature for `--rpc check`.
    #[arg(long, default_value = "invoice_designer")]
    feature: String,
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
    Check { feature: String, intent: Intent },
    Batch { items: Vec<CheckBatchItem> },
    Health,
}

/// One task's view of the connection.
enum Client {
    Data(EntitlementServiceClient<Channel>),
    Health(HealthClient<Channel>),
}

/// Why a request did not count as a success.
#[derive(Debug)]
enum Failure {
    Status(tonic::Code),
    NotServing(i32),
    Timeout,
}

impl Client {
    async fn call(&mut self, work: &Work, tenant: &str) -> Result<(), Failure> {
        match (self, work) {
            (Client::Data(c), Work::Check { feature, intent }) => {
                let req = CheckRequest {
                    tenant_id: tenant.to_owned(),
                    feature: feature.clone(),
                    quantity: None,
                    intent: *intent as i32,
                    min_revision: None,
                };
                c.check(req).await.map(drop).map_err(|s| Failure::Status(s.code()))
            }
            (Client::Data(c), Work::Batch { items }) => {
                let req = CheckBatchRequest { tenant_id: tenant.to_owned(), items: items.clone(), min_revision: None };
                c.check_batch(req).await.map(drop).map_err(|s| Failure::Status(s.code()))
            }
            (Client::Health(c), Work::Health) => {
                let resp = c
                    .check(HealthCheckRequest { service: String::new() })
                    .await
                    .map_err(|s| Failure::Status(s.code()))?;
                match resp.into_inner().status {
                    s if s == ServingStatus::Serving as i32 => Ok(()),
                    s => Err(Failure::NotServing(s)),
                }
            }
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
    tenants: Arc<[String]>,
    spin: Duration,
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
    last_done: Instant,
}

fn new_hist() -> Histogram<u64> {
    // 1 ns .. 60 s at 3 significant figures.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

impl Tally {
    fn new(now: Instant) -> Tally {
        Tally { hist: new_hist(), lag: new_hist(), requests: 0, errors: 0, error_kinds: Vec::new(), last_done: now }
    }

    fn error(&mut self, f: &Failure) {
        self.errors += 1;
        let kind = match f {
            Failure::Status(code) => format!("{code:?}"),
            Failure::NotServing(s) => format!("health status {s}"),
            Failure::Timeout => "client timeout".to_string(),
        };
        match self.error_kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.error_kinds.push((kind, 1)),
        }
    }

    fn merge(&mut self, other: Tally) {
        self.hist.add(&other.hist).expect("same histogram bounds");
        self.lag.add(&other.lag).expect("same histogram bounds");
        self.requests += other.requests;
        self.errors += other.errors;
        for (k, n) in other.error_kinds {
            match self.error_kinds.iter_mut().find(|(k2, _)| *k2 == k) {
                Some((_, m)) => *m += n,
                None => self.error_kinds.push((k, n)),
            }
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
    let n_tenants = plan.tenants.len() as u64;
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
        let tenant = &plan.tenants[((task + i * tasks) % n_tenants) as usize];
        i += 1;
        let sent = Instant::now();
        let result = match tokio::time::timeout(plan.timeout, client.call(&work, tenant)).await {
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
            Ok(()) => {
                let ns = u64::try_from(done.duration_since(intended).as_nanos()).unwrap_or(u64::MAX);
                tally.hist.saturating_record(ns.max(1));
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

fn work_for(args: &Args) -> Result<Work, String> {
    let intent = if args.read { Intent::Read } else { Intent::Write };
    Ok(match args.rpc {
        Rpc::Check => Work::Check { feature: args.feature.clone(), intent },
        Rpc::Health => Work::Health,
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

struct Report {
    elapsed: Duration,
    total: Tally,
}

async fn run(args: &Args, uri: Uri, work: Work) -> Result<Report, String> {
    let endpoint = Endpoint::from(uri).tcp_nodelay(true).connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::with_capacity(args.connections as usize);
    for _ in 0..args.connections {
        // One `connect` per channel: each is its own TCP connection.
        channels.push(endpoint.connect().await.map_err(|e| format!("connect {}: {e}", args.addr))?);
    }
    let client_for = |ch: &Channel| match args.rpc {
        Rpc::Health => Client::Health(HealthClient::new(ch.clone())),
        Rpc::Check | Rpc::Batch => Client::Data(EntitlementServiceClient::new(ch.clone())),
    };

    // One probe, so a misconfigured run fails loudly instead of measuring errors.
    let mut probe = client_for(&channels[0]);
    probe.call(&work, "t0").await.map_err(|f| format!("probe request failed: {f:?}"))?;

    let tenants: Arc<[String]> = (0..args.tenants).map(|i| format!("t{i}")).collect();
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let total_time = args.warmup + args.duration;
    let (interval, slots) = match args.rate {
        None => (None, u64::MAX),
        Some(r) if r.is_finite() && r > 0.0 => {
            let slots = (r * total_time.as_secs_f64()).ceil() as u64;
            (Some(Duration::from_secs_f64(1.0 / r)), slots)
        }
        Some(r) => return Err(format!("--rate {r}: must be a positive number")),
    };
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
            handles.push(tokio::spawn(run_task(client_for(ch), work.clone(), Arc::clone(&plan), task, tasks)));
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
    let elapsed = total.last_done.max(end).saturating_duration_since(measure_from);
    Ok(Report { elapsed, total })
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
        let line = serde_json::json!({
            "rpc": args.rpc.name(),
            "addr": args.addr,
            "connections": args.connections,
            "streams": args.streams,
            "tenants": args.tenants,
            "feature": (args.rpc == Rpc::Check).then_some(&args.feature),
            "batch_size": batch,
            "mode": if args.rate.is_some() { "open" } else { "closed" },
            "rate": args.rate,
            "warmup_s": args.warmup.as_secs_f64(),
            "duration_s": secs,
            "requests": r.total.requests,
            "errors": r.total.errors,
            "error_kinds": errors,
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
            Rpc::Check => format!("Check {}", args.feature),
            Rpc::Batch => format!("CheckBatch of {}", args.batch_size),
            Rpc::Health => "grpc.health.v1/Check".to_string(),
        };
        println!(
            "{what} -> {} | {} conn x {} streams, {} tenant(s), {mode}, {:.2}s measured after {:?} warm-up",
            args.addr, args.connections, args.streams, args.tenants, secs, args.warmup
        );
        println!("requests   {}", r.total.requests);
        println!("errors     {}", r.total.errors);
        for (k, n) in &r.total.error_kinds {
            println!("  {k}: {n}");
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
    use super::check_loopback;

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
