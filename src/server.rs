//! Wiring: load the catalog, open and migrate the store, then serve gRPC and HTTP until shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::catalog::{Catalog, CatalogError, Edition};
use crate::config::{EditionArg, ServeArgs};
use crate::grpc::{ActivityLayer, AdminApi, BearerAuth, DataApi, FlagdApi, PlaneLimitLayer, Tokens, plane_permits};
use crate::listener::{self, Admission, Admitted};
use crate::pb::admin_service_server::AdminServiceServer;
use crate::pb::entitlement_service_server::EntitlementServiceServer;
use crate::pb::flagd::service_server::ServiceServer as FlagdServer;
use crate::relay::{UpstreamConfig, UpstreamStore};
use crate::service::Service;
use crate::shutdown::{self, Shutdown, Trigger};
use crate::store::outbox::{OutboxConfig, Route};
use crate::store::sql::{Backend, SqlStore};
use crate::store::{NoticeEvent, StoreError, Stores};
use crate::webhooks::Webhooks;
use tokio::sync::broadcast;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot read catalog {path}: {source}")]
    CatalogRead { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Catalog { path: String, source: CatalogError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("cannot read {path}: {source}")]
    File { path: String, source: std::io::Error },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error(transparent)]
    Trace(#[from] crate::trace::TraceError),
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks::WebhookConfigError),
    #[error("--webhooks-config: outbound webhooks are sent by the central service, not by a relay")]
    WebhooksOnRelay,
}

/// Read and validate a catalog file; `${VAR}` references come from the process environment.
pub fn load_catalog(path: &Path) -> Result<Catalog, ServerError> {
    let src = std::fs::read_to_string(path)
        .map_err(|source| ServerError::CatalogRead { path: path.display().to_string(), source })?;
    Catalog::from_toml(&src, &|name| std::env::var(name).ok())
        .map_err(|source| ServerError::Catalog { path: path.display().to_string(), source })
}

type GrpcTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// A started server: its bound addresses, the service, and a way to stop it.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub service: Arc<Service>,
    shutdown: Trigger,
    grpc: GrpcTask,
    http: JoinHandle<Result<(), std::io::Error>>,
    /// Listener, watch follower and readiness tasks; they stop on the same signal.
    background: Vec<JoinHandle<()>>,
    /// Flushed once both listeners have drained, so the last requests' spans are exported.
    traces: crate::trace::Tracing,
}

impl Running {
    /// Stop accepting, drain in-flight RPCs, and wait for both listeners to finish.
    pub async fn stop(self) -> Result<(), ServerError> {
        self.shutdown.fire();
        self.wait().await
    }

    pub async fn wait(self) -> Result<(), ServerError> {
        let grpc = self.grpc.await.map_err(|e| ServerError::Http(std::io::Error::other(e)))?;
        let http = self.http.await.map_err(|e| ServerError::Http(std::io::Error::other(e)))?;
        for task in self.background {
            let _ = task.await;
        }
        self.traces.shutdown().await;
        grpc?;
        http.map_err(ServerError::Http)
    }

    pub fn shutdown_handle(&self) -> Trigger {
        self.shutdown.clone()
    }
}

/// Load everything, bind both listeners and start serving in the background.
pub async fn start(args: &ServeArgs) -> Result<Running, ServerError> {
    if let Some(path) = &args.clock_offset_file {
        // Before anything reads the clock (test/debug only; see `clock`).
        let offset = std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse::<i64>().ok());
        crate::clock::set_offset(offset.unwrap_or(0));
    }
    // tonic builds its TLS configs (server, and a relay's upstream) on rustls' process-wide
    // provider, which rustls cannot pick by itself once a build enables two (ring, and aws-lc-rs
    // through some dependency's HTTP client): choose ring, once; a second call is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let catalog = Arc::new(configured_catalog(args)?);
    let traces = crate::trace::Tracing::start(args.otlp_endpoint.as_deref(), args.otlp_sample_ratio)?;
    spawn_metrics_upkeep();
    let webhooks = match &args.webhooks_config {
        Some(_) if args.upstream.is_some() => return Err(ServerError::WebhooksOnRelay),
        Some(path) => Some(Arc::new(Webhooks::load(path, args.webhook_retry_floor, args.webhook_retry_ceiling)?)),
        None => None,
    };
    let routes = webhooks.as_ref().map(|w| w.routes()).unwrap_or_default();
    let (stores, backend, upstream, local_notices) = open_stores(args, &catalog, routes).await?;
    let service = Arc::new(Service::new(catalog, stores, args.cache_capacity, args.max_ttl, args.stale_if_error));

    let bind = |addr: SocketAddr| async move {
        let listener = TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?;
        let local = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
        Ok::<_, ServerError>((listener, local))
    };
    let (grpc_listener, grpc_addr) = bind(args.grpc_addr).await?;
    let (http_listener, http_addr) = bind(args.http_addr).await?;
    let (shutdown, rx) = shutdown::channel();

    let mut background = Vec::new();
    // Several replicas share PostgreSQL: listen for each other's changes.
    if backend == Some(Backend::Postgres) {
        let name = crate::invalidation::listener_name(grpc_addr.port());
        background.push(crate::invalidation::spawn(args.database_url.clone(), name, Arc::clone(&service), rx.clone()));
    }
    // A relay follows its upstream's change stream.
    if let Some(up) = upstream {
        background.push(crate::relay::spawn_watch(up, Arc::clone(&service), rx.clone()));
    }
    background.extend(spawn_outbox_tasks(args, &service, webhooks, local_notices, &rx));
    let admission = Admission {
        max_connections: args.max_connections,
        handshake_timeout: args.handshake_timeout,
        idle_timeout: None,
    };
    let grpc_admission = Admission { idle_timeout: Some(args.grpc_idle_timeout), ..admission };
    let grpc_conns = listener::admit(grpc_listener, grpc_admission, "grpc", rx.clone());
    // One budget of requests in flight for the data plane, over gRPC and OFREP alike.
    let permits = plane_permits(args.max_concurrent_requests);
    let (grpc, health) = spawn_grpc(args, &service, &traces, grpc_conns, Arc::clone(&permits), rx.clone()).await?;
    background.push(tokio::spawn(readiness(Arc::clone(&service), health, rx.clone())));
    let webhook = crate::http::WebhookConfig {
        secrets: args.stripe_webhook_secrets.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        livemode: args.stripe_livemode,
        body_limit: args.webhook_body_limit,
        body_timeout: args.webhook_body_timeout,
        tracing: traces.clone(),
    };
    let ofrep = crate::openfeature::ofrep::Ofrep {
        service: Arc::clone(&service),
        auth: BearerAuth::data(tokens(args)),
        permits,
    };
    let app = crate::http::router(Arc::clone(&service), webhook, ofrep);
    let http_conns = listener::admit(http_listener, admission, "http", rx.clone());
    let http = tokio::spawn(crate::http::serve(http_conns, app, args.http_header_timeout, rx.clone()));
    tracing::info!(%grpc_addr, %http_addr, edition = %service.catalog().edition, relay = args.upstream.is_some(), otlp = traces.exporting(), "serving");
    Ok(Running { grpc_addr, http_addr, service, shutdown, grpc, http, background, traces })
}

/// Lifecycle notices, outbound webhooks, and (test/debug) the clock offset file.
fn spawn_outbox_tasks(
    args: &ServeArgs,
    service: &Arc<Service>,
    webhooks: Option<Arc<Webhooks>>,
    local_notices: Option<broadcast::Receiver<NoticeEvent>>,
    rx: &Shutdown,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(outbox) = service.stores().outbox.clone() {
        tasks.push(crate::notices::spawn(Arc::clone(service), Arc::clone(&outbox), rx.clone()));
        if let Some(hooks) = webhooks.filter(|h| !h.is_empty()) {
            let wake = Arc::clone(&service.wakes().deliveries);
            tasks.push(crate::webhooks::spawn(hooks, outbox, wake, rx.clone()));
        }
    }
    if let Some(notices) = local_notices {
        tasks.push(crate::notices::forward_local(notices, Arc::clone(service), rx.clone()));
    }
    if let Some(path) = &args.clock_offset_file {
        let s = Arc::clone(service);
        // Cached resolutions were computed for the old "now".
        let follow = crate::clock::follow_offset_file(path.clone(), move || s.cache().flush(), rx.clone());
        tasks.push(tokio::spawn(follow));
    }
    tasks
}

/// The catalog file, with the deployment's edition override.
fn configured_catalog(args: &ServeArgs) -> Result<Catalog, ServerError> {
    let catalog = load_catalog(&args.catalog)?;
    for w in &catalog.warnings {
        tracing::warn!(catalog = %args.catalog.display(), "{w}");
    }
    Ok(match args.edition {
        Some(EditionArg::Ee) => catalog.with_edition(Edition::Ee),
        Some(EditionArg::Ce) => catalog.with_edition(Edition::Ce),
        None => catalog,
    })
}

/// Histogram samples are only drained by upkeep: without it, memory grows and every recording
/// slows until someone scrapes `/metrics`.
fn spawn_metrics_upkeep() {
    if let Some(handle) = crate::telemetry::install() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
}

fn read_file(p: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(p).map_err(|source| ServerError::File { path: p.display().to_string(), source })
}

type Opened = (Stores, Option<Backend>, Option<UpstreamStore>, Option<broadcast::Receiver<NoticeEvent>>);

/// The stores: the database (with its outbox: the catalog's lifecycle policy and the webhook
/// routes), or (relay mode) the upstream service. SQLite also hands out its local notices.
async fn open_stores(args: &ServeArgs, catalog: &Arc<Catalog>, routes: Vec<Route>) -> Result<Opened, ServerError> {
    if let Some(url) = &args.upstream {
        let ca = args.upstream_ca.as_deref().map(read_file).transpose()?;
        let token = args.upstream_token.clone().or(args.admin_token.clone());
        let admin_token = args.upstream_admin_token.clone().or(args.admin_token.clone());
        let up = UpstreamStore::connect(&UpstreamConfig { url: url.clone(), token, admin_token, ca })?;
        return Ok((up.stores(), None, Some(up), None));
    }
    let store = SqlStore::connect_within(&args.database_url, args.request_timeout).await?;
    store.migrate().await?;
    let store = store.with_outbox(OutboxConfig { catalog: Arc::clone(catalog), routes });
    let backend = store.backend();
    let local = (backend == Backend::Sqlite).then(|| store.subscribe_notices());
    Ok((Stores::sql(store), Some(backend), None, local))
}

/// Both planes, health and reflection — behind TLS (if configured), the trace layer, the request
/// timeout and (for the planes only) the global concurrency limit — served on admitted
/// connections until shutdown.
async fn spawn_grpc(
    args: &ServeArgs,
    service: &Arc<Service>,
    traces: &crate::trace::Tracing,
    conns: mpsc::Receiver<Admitted>,
    permits: Arc<tokio::sync::Semaphore>,
    rx: Shutdown,
) -> Result<(GrpcTask, HealthReporter), ServerError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // Readiness follows the store (or upstream): serving only while it answers. Decided before
    // the listener accepts anything: never SERVING before the store answers.
    set_ready(&health, service.ready().await).await;
    let descriptors = |b: tonic_reflection::server::Builder<'static>| {
        b.register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = descriptors(tonic_reflection::server::Builder::configure()).build_v1()?;
    let reflection_v1alpha = descriptors(tonic_reflection::server::Builder::configure()).build_v1alpha()?;
    let tokens = tokens(args);
    let admin_auth = BearerAuth::admin(tokens);
    let data = DataApi::new(Arc::clone(service), args.watch_heartbeat, rx.clone(), BearerAuth::relay(tokens));
    let flagd = FlagdApi::new(Arc::clone(service), args.watch_heartbeat, rx.clone(), BearerAuth::relay(tokens));
    let admin = AdminServiceServer::with_interceptor(AdminApi::new(Arc::clone(service)), move |r| admin_auth.check(r));

    let mut builder = Server::builder()
        .timeout(args.request_timeout)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_connection_age(args.max_connection_age)
        .max_connection_age_grace(Duration::from_secs(30));
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let identity = Identity::from_pem(read_file(cert)?, read_file(key)?);
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    // The trace layer comes first (outermost of ours): its span sees the requests the limit sheds.
    let router = builder
        .layer(traces.grpc_layer())
        .layer(ActivityLayer)
        .layer(PlaneLimitLayer::shared(permits))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(admin);
    // flagd's service is the data plane too: the same credential opens it.
    let router = match BearerAuth::data(tokens) {
        Some(auth) => {
            let flagd_auth = auth.clone();
            router
                .add_service(EntitlementServiceServer::with_interceptor(data, move |r| auth.check(r)))
                .add_service(FlagdServer::with_interceptor(flagd, move |r| flagd_auth.check(r)))
        }
        None => router.add_service(EntitlementServiceServer::new(data)).add_service(FlagdServer::new(flagd)),
    };
    let incoming = ReceiverStream::new(conns).map(Ok::<_, std::io::Error>);
    Ok((tokio::spawn(router.serve_with_incoming_shutdown(incoming, rx.into_future())), health))
}

fn tokens(args: &ServeArgs) -> Tokens<'_> {
    Tokens { admin: args.admin_token.as_deref(), data: args.data_token.as_deref(), relay: args.relay_token.as_deref() }
}

async fn set_ready(health: &HealthReporter, ready: bool) {
    let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
    health.set_service_status("", status).await;
    health.set_service_status("entitlements.v1.EntitlementService", status).await;
    health.set_service_status("flagd.evaluation.v1.Service", status).await;
}

async fn readiness(service: Arc<Service>, health: HealthReporter, mut stop: Shutdown) {
    let mut was = None;
    loop {
        let ready = service.ready().await;
        if was != Some(ready) {
            set_ready(&health, ready).await;
            tracing::info!(ready, "readiness changed");
            was = Some(ready);
        }
        let pause = if ready { Duration::from_secs(2) } else { Duration::from_millis(200) };
        tokio::select! {
            _ = stop.fired() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
