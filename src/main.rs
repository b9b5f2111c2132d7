//! The `glance-gateway` binary: `serve` (configuration → logging → state → serve), and the
//! operator's `check-config`, `healthcheck` and admin subcommands. Nothing else.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use glance_gateway::config::{AuthMode, Config, LogFormat, Overrides};
use glance_gateway::{admin_cli, checks};
use tracing_subscriber::EnvFilter;

const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("GLANCE_GATEWAY_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    version = VERSION,
    about = "OpenStack Glance v1 image API over file, S3 and Swift stores"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (and the admin listener).
    Serve {
        /// TOML configuration file.
        #[arg(long, env = "GLANCE_GATEWAY_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:9292).
        #[arg(long)]
        bind: Option<String>,
        /// Address of the admin listener: metrics, operations (default 127.0.0.1:9293).
        #[arg(long)]
        admin_bind: Option<String>,
        /// Directory for the registry and the default file store (default ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// How callers are identified.
        #[arg(long, value_enum)]
        auth: Option<AuthMode>,
        /// Log lines as text (default) or one JSON object per line.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Validate the configuration and probe every store; exit 1 if anything fails.
    CheckConfig {
        /// TOML configuration file.
        #[arg(long, env = "GLANCE_GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Ask the running gateway's /healthcheck; exit 0 only on 200 (for container health checks).
    Healthcheck {
        /// The configuration whose `bind` to ask.
        #[arg(long, env = "GLANCE_GATEWAY_CONFIG", conflicts_with = "url")]
        config: Option<PathBuf>,
        /// The health check URL (default http://127.0.0.1:9292/healthcheck).
        #[arg(long)]
        url: Option<String>,
    },
    /// List images with their status, size, store and owner (asks the running gateway).
    Images(admin_cli::ImagesArgs),
    /// Re-read images' data and check size, MD5 and multihash against the registry.
    Verify(admin_cli::VerifyArgs),
    /// Move images' data to another store, keeping their ids.
    Migrate(admin_cli::MigrateArgs),
    /// Registry tools (run with the gateway stopped).
    #[command(subcommand)]
    Registry(RegistryCommand),
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Copy a sled registry into PostgreSQL: every record (deleted ones too, so their ids stay
    /// reserved), its members and the registry id; then compare the counts.
    Copy {
        /// `sled:PATH`, the registry directory (`[registry] path`, default data_dir/registry).
        #[arg(long)]
        from: String,
        /// `postgres:postgres://user@host:port/dbname` (or the URL alone), without a password.
        #[arg(long)]
        to: String,
        /// A file holding the database password on one line.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

// jemalloc rather than glibc's malloc: sled's page cache and the registry's records churn small
// allocations across many threads, where glibc keeps freed memory in per-thread arenas. At
// 100,000 images jemalloc served about a quarter more lookups and lists in less memory.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve {
            config,
            bind,
            admin_bind,
            data_dir,
            auth,
            log_format,
        } => {
            serve(
                config,
                Overrides {
                    bind,
                    admin_bind,
                    data_dir,
                    auth,
                },
                log_format,
            )
            .await
        }
        Command::CheckConfig { config } => check_config(config).await,
        Command::Healthcheck { config, url } => healthcheck(config, url).await,
        Command::Images(args) => return admin_exit(admin_cli::images(args).await),
        Command::Verify(args) => return admin_exit(admin_cli::verify(args).await),
        Command::Migrate(args) => return admin_exit(admin_cli::migrate(args).await),
        Command::Registry(RegistryCommand::Copy {
            from,
            to,
            password_file,
        }) => registry_copy(&from, &to, password_file).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("glance-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn load(path: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<Config> {
    tokio::task::spawn_blocking(move || Config::load(path.as_deref(), overrides)).await?
}

async fn serve(
    path: Option<PathBuf>,
    overrides: Overrides,
    log_format: Option<LogFormat>,
) -> anyhow::Result<ExitCode> {
    let config = load(path.clone(), overrides).await?;
    init_logging(log_format.unwrap_or(config.log_format));
    glance_gateway::server::run(config, path.as_deref(), shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Logs go to stderr: text (coloured only on a terminal) or JSON lines. Each line is written
/// before the request goes on (a queue on another thread would lose its last lines when the
/// process is killed, the very lines that say why; the write costs about 2% of a HEAD).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// SIGTERM (docker stop, Kubernetes) or SIGINT (Ctrl-C). Handlers are installed, so this also
/// works as PID 1, where unhandled signals are ignored.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down");
}

async fn check_config(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let findings = checks::check_config(path.as_deref()).await;
    for finding in &findings {
        println!("{finding}");
    }
    Ok(if findings.iter().any(checks::Finding::failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn healthcheck(path: Option<PathBuf>, url: Option<String>) -> anyhow::Result<ExitCode> {
    let url = match url {
        Some(url) => url,
        None => checks::healthcheck_url(&load(path, Overrides::default()).await?),
    };
    checks::healthcheck(&url).await?;
    Ok(ExitCode::SUCCESS)
}

async fn registry_copy(
    from: &str,
    to: &str,
    password_file: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use glance_gateway::registry::{copy, DatabaseUrl, PostgresSettings};
    let Some(path) = from.strip_prefix("sled:") else {
        anyhow::bail!("--from: expected sled:PATH");
    };
    let url = if to.starts_with("postgres://") || to.starts_with("postgresql://") {
        to
    } else {
        to.strip_prefix("postgres:")
            .ok_or_else(|| anyhow::anyhow!("--to: expected postgres:URL"))?
    };
    let url = DatabaseUrl::parse(url).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let mut settings = PostgresSettings::new(url);
    settings.password_file = password_file;
    let copied = copy::sled_to_postgres(std::path::Path::new(path), &settings).await?;
    println!(
        "copied {} images ({} already there) and {} memberships into {}; counts match",
        copied.images, copied.skipped, copied.members, settings.url
    );
    Ok(ExitCode::SUCCESS)
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
