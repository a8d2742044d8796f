//! Command line and environment configuration (SPEC §8). Every `serve` flag can also be set
//! through `ENTITLEMENTS_<FLAG>` (e.g. `ENTITLEMENTS_DATABASE_URL`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "entitlements", version, about = "gRPC entitlement decision service")]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "ENTITLEMENTS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EditionArg {
    Ee,
    Ce,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC service and the HTTP listener.
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, env = "ENTITLEMENTS_DATABASE_URL", default_value = "entitlements.db")]
        database_url: String,
    },
    /// Catalog tools.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Ask a running server whether a tenant may use a feature.
    Check {
        tenant: String,
        feature: String,
        #[arg(long)]
        quantity: Option<i64>,
        /// Ask with intent READ (default WRITE).
        #[arg(long)]
        read: bool,
        #[arg(long, env = "ENTITLEMENTS_ADDR", default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
    /// Ask a running server to explain a tenant's entitlements.
    Explain {
        tenant: String,
        /// Features to explain (all when omitted).
        features: Vec<String>,
        /// Evaluate at this RFC 3339 time instead of now.
        #[arg(long)]
        at: Option<String>,
        #[arg(long, env = "ENTITLEMENTS_ADDR", default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
    /// List a running server's tenants with their plan and phase now (`ListTenants`; needs the
    /// admin token), e.g. `entitlements tenants --phase past_due`.
    Tenants(TenantsArgs),
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Validate a catalog file; prints every problem with its location, and warnings
    /// (placeholder price ids) that do not fail it.
    Check { file: PathBuf },
    /// Show the catalog a running server loaded (`GetCatalog`): plans with prices, add-ons.
    Show {
        #[arg(long, env = "ENTITLEMENTS_ADDR", default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// The data-plane token, when the server requires one.
        #[arg(long, env = "ENTITLEMENTS_DATA_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

/// `--phase past_due`: a lifecycle phase by its proto name, lower case, without `PHASE_`.
fn phase(s: &str) -> Result<crate::pb::Phase, String> {
    match crate::pb::Phase::from_str_name(&format!("PHASE_{}", s.to_ascii_uppercase())) {
        Some(p) if p != crate::pb::Phase::Unspecified => Ok(p),
        _ => Err("one of active, trialing, trial_expired, hard_locked, archived, past_due".into()),
    }
}

/// `entitlements tenants`: every filter given must hold; all pages are printed.
#[derive(Debug, Args)]
pub struct TenantsArgs {
    /// active, trialing, trial_expired, hard_locked, archived or past_due.
    #[arg(long, value_parser = phase)]
    pub phase: Option<crate::pb::Phase>,
    /// The plan tenants resolve to now.
    #[arg(long)]
    pub plan: Option<String>,
    /// An add-on active now.
    #[arg(long)]
    pub addon: Option<String>,
    /// Only tenants with (true) or without (false) a past-due subscription.
    #[arg(long)]
    pub past_due: Option<bool>,
    /// Trialing tenants whose trial ends before this RFC 3339 time.
    #[arg(long)]
    pub trial_ending_before: Option<String>,
    /// Tenants changed at or after this RFC 3339 time.
    #[arg(long)]
    pub changed_since: Option<String>,
    /// Stop after this many rows.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, env = "ENTITLEMENTS_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// The admin token.
    #[arg(long, env = "ENTITLEMENTS_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The catalog file (TOML).
    #[arg(long, env = "ENTITLEMENTS_CATALOG", default_value = "examples/catalog.toml")]
    pub catalog: PathBuf,
    /// sqlite://PATH (or a bare path; the default, created if missing) or postgres://…
    #[arg(long, env = "ENTITLEMENTS_DATABASE_URL", default_value = "entitlements.db")]
    pub database_url: String,
    #[arg(long, env = "ENTITLEMENTS_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// The Stripe webhook (`POST /webhooks/stripe`), `/healthz`, `/readyz`, `/metrics` and OFREP (`/ofrep/v1/…`).
    #[arg(long, env = "ENTITLEMENTS_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Bearer token for the AdminService; without one the admin plane is closed.
    #[arg(long, env = "ENTITLEMENTS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Upper bound on how long a cached resolution is served (e.g. 30s, 5m).
    #[arg(long, env = "ENTITLEMENTS_MAX_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub max_ttl: Duration,
    /// How long past expiry a cached resolution may still answer while the store is down.
    #[arg(long, env = "ENTITLEMENTS_STALE_IF_ERROR", default_value = "5m", value_parser = humantime::parse_duration)]
    pub stale_if_error: Duration,
    /// Maximum number of cached tenants.
    #[arg(long, env = "ENTITLEMENTS_CACHE_CAPACITY", default_value_t = 100_000)]
    pub cache_capacity: u64,
    /// Stripe webhook endpoint secret (`whsec_…`); repeat (or comma-separate in the env var)
    /// to accept several during a rotation.
    #[arg(
        long = "stripe-webhook-secret",
        env = "ENTITLEMENTS_STRIPE_WEBHOOK_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub stripe_webhook_secrets: Vec<String>,
    /// Accept only live-mode events (default: only test-mode events).
    #[arg(long, env = "ENTITLEMENTS_STRIPE_LIVEMODE")]
    pub stripe_livemode: bool,
    /// Largest accepted webhook body, in bytes (larger: 413).
    #[arg(long, env = "ENTITLEMENTS_WEBHOOK_BODY_LIMIT", default_value_t = 262_144)]
    pub webhook_body_limit: usize,
    /// Relay (sidecar) mode: serve from this upstream entitlements service instead of a
    /// database (e.g. `http://entitlements:50051`).
    #[arg(long, env = "ENTITLEMENTS_UPSTREAM")]
    pub upstream: Option<String>,
    /// Relay mode: the bearer token for the upstream's data plane and change feed (the
    /// upstream's --relay-token, or its admin token); defaults to --admin-token.
    #[arg(long, env = "ENTITLEMENTS_UPSTREAM_TOKEN", hide_env_values = true)]
    pub upstream_token: Option<String>,
    /// Relay mode: the bearer token for admin changes forwarded to the upstream's admin plane;
    /// defaults to --admin-token.
    #[arg(long, env = "ENTITLEMENTS_UPSTREAM_ADMIN_TOKEN", hide_env_values = true)]
    pub upstream_admin_token: Option<String>,
    /// PEM CA bundle to verify an `https://` upstream (relay mode).
    #[arg(long, env = "ENTITLEMENTS_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,
    /// Optional bearer token required on the data plane (EntitlementService).
    #[arg(long, env = "ENTITLEMENTS_DATA_TOKEN", hide_env_values = true)]
    pub data_token: Option<String>,
    /// Bearer token that relays present for the change feed (`Watch`) and full tenant state
    /// (`GetTenantState`); the admin token works too. Without either, those two RPCs are closed.
    #[arg(long, env = "ENTITLEMENTS_RELAY_TOKEN", hide_env_values = true)]
    pub relay_token: Option<String>,
    /// Serve gRPC over TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "ENTITLEMENTS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "ENTITLEMENTS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Per-request deadline on the gRPC server.
    #[arg(long, env = "ENTITLEMENTS_REQUEST_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Requests served at once across all connections; beyond it requests are shed at once
    /// with RESOURCE_EXHAUSTED instead of queueing.
    #[arg(long, env = "ENTITLEMENTS_MAX_CONCURRENT_REQUESTS", default_value_t = 4096)]
    pub max_concurrent_requests: usize,
    /// Open connections per listener (gRPC, HTTP); beyond it new ones are closed at once.
    #[arg(long, env = "ENTITLEMENTS_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// A new connection must send its first bytes (HTTP/2 preface, request line, TLS hello)
    /// within this, or it is closed.
    #[arg(long, env = "ENTITLEMENTS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// HTTP: a request's headers must arrive within this (also closes idle keep-alive
    /// connections); a webhook's body within --webhook-body-timeout.
    #[arg(long, env = "ENTITLEMENTS_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http_header_timeout: Duration,
    #[arg(long, env = "ENTITLEMENTS_WEBHOOK_BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub webhook_body_timeout: Duration,
    /// gRPC: a connection with no call in flight for this long is closed (noticed when it next
    /// reads: at the latest its answer to the 30 s HTTP/2 keepalive ping).
    #[arg(long, env = "ENTITLEMENTS_GRPC_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub grpc_idle_timeout: Duration,
    /// gRPC: a connection, busy or idle, is closed (GOAWAY, 30 s grace for calls in flight) this
    /// long after it opened; clients reconnect transparently. Dead peers are found sooner, by
    /// HTTP/2 keepalive (30 s ping, 10 s timeout).
    #[arg(long, env = "ENTITLEMENTS_MAX_CONNECTION_AGE", default_value = "1h", value_parser = humantime::parse_duration)]
    pub max_connection_age: Duration,
    /// How often an idle `Watch` stream sends a heartbeat.
    #[arg(long, env = "ENTITLEMENTS_WATCH_HEARTBEAT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub watch_heartbeat: Duration,
    /// Deployment edition; overrides the catalog's `edition`. `ce` bypasses every gate.
    #[arg(long, env = "ENTITLEMENTS_EDITION", value_enum)]
    pub edition: Option<EditionArg>,
    /// Export a span per RPC and per webhook over OTLP/gRPC to this collector (e.g.
    /// `http://127.0.0.1:4317`); tracing is off without it.
    #[arg(long, env = "ENTITLEMENTS_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces sampled (0.0–1.0); a caller's `traceparent` decision is followed.
    #[arg(long, env = "ENTITLEMENTS_OTLP_SAMPLE_RATIO", default_value_t = 1.0, value_parser = parse_ratio)]
    pub otlp_sample_ratio: f64,
    /// Outbound webhooks (Standard Webhooks): a TOML file of `[[endpoint]]` tables (name, url,
    /// secret, events); see the README. Without it no webhook is sent.
    #[arg(long, env = "ENTITLEMENTS_WEBHOOKS_CONFIG")]
    pub webhooks_config: Option<PathBuf>,
    /// Outbound webhooks: the first retry's pause; each next one doubles (with jitter).
    #[arg(long, env = "ENTITLEMENTS_WEBHOOK_RETRY_FLOOR", default_value = "5s", value_parser = humantime::parse_duration)]
    pub webhook_retry_floor: Duration,
    /// Outbound webhooks: the longest pause between retries (retried for 3 days in all).
    #[arg(long, env = "ENTITLEMENTS_WEBHOOK_RETRY_CEILING", default_value = "1h", value_parser = humantime::parse_duration)]
    pub webhook_retry_ceiling: Duration,
    /// TEST/DEBUG ONLY: move the service's "now" by the whole seconds written in this file
    /// (re-read every 100 ms), to walk a trial's timeline in seconds. Off by default.
    #[arg(long, env = "ENTITLEMENTS_CLOCK_OFFSET_FILE", hide = true)]
    pub clock_offset_file: Option<PathBuf>,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{s}` is not a ratio between 0.0 and 1.0")),
    }
}

impl ServeArgs {
    /// Settings for a server on ephemeral loopback ports (tests, benches, embedding).
    pub fn local(catalog: impl Into<PathBuf>, database_url: impl Into<String>) -> ServeArgs {
        ServeArgs {
            catalog: catalog.into(),
            database_url: database_url.into(),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token: None,
            max_ttl: Duration::from_secs(60),
            stale_if_error: Duration::from_secs(300),
            cache_capacity: 100_000,
            stripe_webhook_secrets: Vec::new(),
            stripe_livemode: false,
            webhook_body_limit: 262_144,
            upstream: None,
            upstream_token: None,
            upstream_admin_token: None,
            upstream_ca: None,
            data_token: None,
            relay_token: None,
            tls_cert: None,
            tls_key: None,
            request_timeout: Duration::from_secs(5),
            max_concurrent_requests: 4096,
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            http_header_timeout: Duration::from_secs(10),
            webhook_body_timeout: Duration::from_secs(30),
            max_connection_age: Duration::from_secs(3600),
            grpc_idle_timeout: Duration::from_secs(300),
            watch_heartbeat: Duration::from_secs(5),
            edition: None,
            otlp_endpoint: None,
            otlp_sample_ratio: 1.0,
            webhooks_config: None,
            webhook_retry_floor: Duration::from_secs(5),
            webhook_retry_ceiling: Duration::from_secs(3600),
            clock_offset_file: None,
        }
    }
}
