//! The `entitlements` binary: `serve`, `migrate`, `catalog check`, and the clients for humans
//! (`check`, `explain`, `tenants`, `catalog show`; see `entitlements::cli`).

use std::process::ExitCode;

use clap::Parser;
use entitlements::cli;
use entitlements::config::{CatalogCommand, Cli, Command, LogFormat};
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
                for w in &c.warnings {
                    println!("warning: {w}");
                }
                println!(
                    "{}: ok ({} features, {} plans, {} add-ons, {} prices, {} warning(s); version {})",
                    file.display(),
                    c.features.len(),
                    c.plans_by_rank().len(),
                    c.addons.len(),
                    c.prices.len(),
                    c.warnings.len(),
                    c.version
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Catalog(CatalogCommand::Show { addr, token }) => cli::catalog_show(&addr, token.as_deref()).await,
        Command::Check { tenant, feature, quantity, read, addr } => {
            cli::check(tenant, feature, quantity, read, &addr).await
        }
        Command::Explain { tenant, features, at, addr } => cli::explain(tenant, features, at, &addr).await,
        Command::Tenants(args) => cli::tenants(args).await,
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
