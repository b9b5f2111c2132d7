//! The `glance-gateway` binary: configuration → tracing → state → serve. Nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use glance_gateway::admin_cli;
use glance_gateway::config::{AuthMode, Config, Overrides};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    version,
    about = "OpenStack Glance v1 image API over file, S3 and Swift stores"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API.
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:9292).
        #[arg(long)]
        bind: Option<String>,
        /// Directory for the registry and the default file store (default ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// How callers are identified.
        #[arg(long, value_enum)]
        auth: Option<AuthMode>,
    },
    /// List images with their status, size, store and owner (asks the running gateway).
    Images(admin_cli::ImagesArgs),
    /// Re-read images' data and check size, MD5 and multihash against the registry.
    Verify(admin_cli::VerifyArgs),
    /// Move images' data to another store, keeping their ids.
    Migrate(admin_cli::MigrateArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let (config, bind, data_dir, auth) = match Cli::parse().command {
        Command::Serve {
            config,
            bind,
            data_dir,
            auth,
        } => (config, bind, data_dir, auth),
        Command::Images(args) => return admin_exit(admin_cli::images(args).await),
        Command::Verify(args) => return admin_exit(admin_cli::verify(args).await),
        Command::Migrate(args) => return admin_exit(admin_cli::migrate(args).await),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match run(
        config,
        Overrides {
            bind,
            data_dir,
            auth,
        },
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("glance-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status of an admin subcommand: 1 on any problem found or any failure.
fn admin_exit(outcome: anyhow::Result<bool>) -> ExitCode {
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("glance-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config_path: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let config =
        tokio::task::spawn_blocking(move || Config::load(config_path.as_deref(), overrides))
            .await??;
    let bind = config.bind;
    let state = glance_gateway::open_state(config).await?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
    tracing::info!(%bind, "glance-gateway listening");
    glance_gateway::serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
    .await
}
