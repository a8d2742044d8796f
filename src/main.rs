//! The `entitlements` binary: `serve`, `migrate`, `catalog check`, and the `check`/`explain`
//! clients for humans.

use std::process::ExitCode;

use clap::Parser;
use entitlements::config::{CatalogCommand, Cli, Command, LogFormat};
use entitlements::pb::entitlement_service_client::EntitlementServiceClient;
use entitlements::pb::{self, CheckRequest, ExplainRequest};
use entitlements::server;
use entitlements::store::sql::SqlStore;
use tracing_subscriber::EnvFilter;

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match command {
        Command::Serve(args) => {
            let running = server::start(&args).await?;
            let stop = running.shutdown_handle();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down: draining in-flight requests");
                stop.fire();
            });
            running.wait().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { database_url } => {
            let store = SqlStore::connect(&database_url).await?;
            store.migrate().await?;
            println!("migrated {database_url}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Catalog(CatalogCommand::Check { file }) => match server::load_catalog(&file) {
            Ok(c) => {
                println!(
                    "{}: ok ({} features, {} plans, {} add-ons, {} prices)",
                    file.display(),
                    c.features.len(),
                    c.plans_by_rank().len(),
                    c.addons.len(),
                    c.prices.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Check { tenant, feature, quantity, read, addr } => {
            let mut client = EntitlementServiceClient::connect(addr).await?;
            let intent = if read { pb::Intent::Read } else { pb::Intent::Write };
            let resp = client
                .check(CheckRequest { tenant_id: tenant, feature, quantity, intent: intent as i32, min_revision: None })
                .await?
                .into_inner();
            let d = resp.decision.unwrap_or_default();
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
        Command::Explain { tenant, features, at, addr } => {
            let at = at.map(|s| humantime::parse_rfc3339(&s).map(prost_types::Timestamp::from)).transpose()?;
            let mut client = EntitlementServiceClient::connect(addr).await?;
            let e = client.explain(ExplainRequest { tenant_id: tenant, features, at }).await?.into_inner();
            print_explanation(e);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `entitlements explain`: the explanation, for a human.
fn print_explanation(e: pb::ExplainResponse) {
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
        println!(
            "offer {}: {}{}",
            o.key,
            if o.open { "open" } else { "closed" },
            if o.reason.is_empty() { String::new() } else { format!(" ({})", o.reason) }
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
