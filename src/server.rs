//! Wiring: load the catalog, open and migrate the store, then serve gRPC and HTTP until shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::catalog::{Catalog, CatalogError, Edition};
use crate::config::{EditionArg, ServeArgs};
use crate::grpc::{AdminApi, BearerAuth, DataApi};
use crate::pb::admin_service_server::AdminServiceServer;
use crate::pb::entitlement_service_server::EntitlementServiceServer;
use crate::relay::{UpstreamConfig, UpstreamStore};
use crate::service::Service;
use crate::store::sql::{Backend, SqlStore};
use crate::store::{StoreError, Stores};

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
}

/// Read and validate a catalog file; `${VAR}` references come from the process environment.
pub fn load_catalog(path: &Path) -> Result<Catalog, ServerError> {
    let src = std::fs::read_to_string(path)
        .map_err(|source| ServerError::CatalogRead { path: path.display().to_string(), source })?;
    Catalog::from_toml(&src, &|name| std::env::var(name).ok())
        .map_err(|source| ServerError::Catalog { path: path.display().to_string(), source })
}

/// A started server: its bound addresses, the service, and a way to stop it.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub service: Arc<Service>,
    shutdown: watch::Sender<bool>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    http: JoinHandle<Result<(), std::io::Error>>,
    /// Listener, watch follower and readiness tasks; they stop on the same signal.
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stop accepting, drain in-flight RPCs, and wait for both listeners to finish.
    pub async fn stop(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    pub async fn wait(self) -> Result<(), ServerError> {
        let grpc = self.grpc.await.map_err(|e| ServerError::Http(std::io::Error::other(e)))?;
        let http = self.http.await.map_err(|e| ServerError::Http(std::io::Error::other(e)))?;
        for task in self.background {
            let _ = task.await;
        }
        grpc?;
        http.map_err(ServerError::Http)
    }

    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Load everything, bind both listeners and start serving in the background.
pub async fn start(args: &ServeArgs) -> Result<Running, ServerError> {
    let mut catalog = load_catalog(&args.catalog)?;
    if let Some(e) = args.edition {
        catalog = catalog.with_edition(match e {
            EditionArg::Ee => Edition::Ee,
            EditionArg::Ce => Edition::Ce,
        });
    }
    if let Some(handle) = crate::telemetry::install() {
        // Histogram samples are only drained by upkeep: without it, memory grows and every
        // recording slows until someone scrapes `/metrics`.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
    // The store: the database, or (relay mode) the upstream service.
    let (stores, backend, upstream): (Stores, Option<Backend>, Option<UpstreamStore>) = match &args.upstream {
        Some(url) => {
            let ca = match &args.upstream_ca {
                Some(p) => Some(
                    std::fs::read(p).map_err(|source| ServerError::File { path: p.display().to_string(), source })?,
                ),
                None => None,
            };
            let cfg = UpstreamConfig {
                url: url.clone(),
                token: args.upstream_token.clone().or(args.admin_token.clone()),
                ca,
            };
            let up = UpstreamStore::connect(&cfg)?;
            (up.stores(), None, Some(up))
        }
        None => {
            let store = SqlStore::connect(&args.database_url).await?;
            store.migrate().await?;
            let backend = store.backend();
            (Stores::sql(store), Some(backend), None)
        }
    };
    let service =
        Arc::new(Service::new(Arc::new(catalog), stores, args.cache_capacity, args.max_ttl, args.stale_if_error));

    let grpc_listener =
        TcpListener::bind(args.grpc_addr).await.map_err(|source| ServerError::Bind { addr: args.grpc_addr, source })?;
    let http_listener =
        TcpListener::bind(args.http_addr).await.map_err(|source| ServerError::Bind { addr: args.http_addr, source })?;
    let grpc_addr = grpc_listener.local_addr().map_err(|source| ServerError::Bind { addr: args.grpc_addr, source })?;
    let http_addr = http_listener.local_addr().map_err(|source| ServerError::Bind { addr: args.http_addr, source })?;

    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let (shutdown, rx) = watch::channel(false);

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
    // Readiness follows the store (or upstream): serving only while it answers.
    // Decided before the listener accepts anything: never SERVING before the store answers.
    set_ready(&health, service.ready().await).await;
    background.push(tokio::spawn(readiness(Arc::clone(&service), health, rx.clone())));

    let admin_auth = BearerAuth::admin(args.admin_token.as_deref());
    let data = DataApi::new(Arc::clone(&service), args.watch_heartbeat, rx.clone());
    let admin = AdminServiceServer::with_interceptor(AdminApi::new(Arc::clone(&service)), move |r| admin_auth.check(r));

    let mut builder = Server::builder()
        .timeout(args.request_timeout)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let read = |p: &std::path::PathBuf| {
            std::fs::read(p).map_err(|source| ServerError::File { path: p.display().to_string(), source })
        };
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    // Overload: beyond the global limit, shed at once (RESOURCE_EXHAUSTED) rather than queue.
    let limits = tower::ServiceBuilder::new()
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(args.max_concurrent_requests.max(1)));
    let router = builder
        .layer(limits)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(admin);
    let router = match BearerAuth::data(args.data_token.as_deref()) {
        Some(auth) => router.add_service(EntitlementServiceServer::with_interceptor(data, move |r| auth.check(r))),
        None => router.add_service(EntitlementServiceServer::new(data)),
    };
    let grpc = tokio::spawn(
        router
            // Socket options on every accepted socket: the builder's `tcp_nodelay`/keepalive only
            // cover listeners it binds itself. Nagle + delayed ACK would add ~40 ms to small
            // writes (Watch, batch replies); TCP keepalive finds peers that vanished without a FIN.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(grpc_listener).with_nodelay(Some(true)).with_keepalive(Some(Duration::from_secs(60))),
                signalled(rx.clone()),
            ),
    );
    let webhook = crate::http::WebhookConfig {
        secrets: args.stripe_webhook_secrets.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        livemode: args.stripe_livemode,
        body_limit: args.webhook_body_limit,
    };
    let app = crate::http::router(Arc::clone(&service), webhook);
    let http = tokio::spawn(async move { axum::serve(http_listener, app).with_graceful_shutdown(signalled(rx)).await });
    tracing::info!(%grpc_addr, %http_addr, edition = %service.catalog().edition, relay = args.upstream.is_some(), "serving");
    Ok(Running { grpc_addr, http_addr, service, shutdown, grpc, http, background })
}

async fn set_ready(health: &tonic_health::server::HealthReporter, ready: bool) {
    let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
    health.set_service_status("", status).await;
    health.set_service_status("entitlements.v1.EntitlementService", status).await;
}

async fn readiness(
    service: Arc<Service>,
    health: tonic_health::server::HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
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
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn signalled(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
