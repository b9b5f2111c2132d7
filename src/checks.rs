//! The operator's checks run from the command line: `check-config` (is the configuration valid,
//! does every store answer) and `healthcheck` (does the running gateway answer its health
//! check), for deployment scripts and container health checks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::config::{Config, Overrides};
use crate::registry::{Registry, RegistryError};
use crate::server::describe_store;

/// One line of the `check-config` report.
#[derive(Debug)]
pub struct Finding {
    pub what: String,
    pub outcome: Outcome,
}

#[derive(Debug)]
pub enum Outcome {
    Ok(String),
    /// Not a failure, but worth saying (a registry held by the running gateway).
    Note(String),
    Failed(String),
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Outcome::Ok(m) => write!(f, "ok      {}: {m}", self.what),
            Outcome::Note(m) => write!(f, "ok      {}: {m}", self.what),
            Outcome::Failed(m) => write!(f, "FAILED  {}: {m}", self.what),
        }
    }
}

impl Finding {
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_))
    }
}

/// Validates the configuration, then opens the registry and probes every store. The registry
/// of a running gateway is reported as in use, not as a failure; a registry that does not
/// exist yet is not created.
pub async fn check_config(path: Option<&Path>) -> Vec<Finding> {
    let owned = path.map(Path::to_path_buf);
    let loaded =
        tokio::task::spawn_blocking(move || Config::load(owned.as_deref(), Overrides::default()))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
    let file = path.map_or_else(|| "(defaults)".to_owned(), |p| p.display().to_string());
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            return vec![Finding {
                what: format!("configuration {file}"),
                outcome: Outcome::Failed(format!("{e:#}")),
            }]
        }
    };
    let mut findings = vec![Finding {
        what: format!("configuration {file}"),
        outcome: Outcome::Ok(format!(
            "API on {}, admin on {}, default store {}",
            config.bind, config.admin_bind, config.default_store
        )),
    }];
    let outcome = match &config.registry.postgres {
        // Opening checks the connection, the password and the schema (creating or upgrading it).
        Some(pg) => match crate::registry::PostgresRegistry::open(pg).await {
            Ok(_) => Outcome::Ok("connects".to_owned()),
            Err(e) => Outcome::Failed(e.to_string()),
        },
        None => check_registry(&config.registry.path).await,
    };
    findings.push(Finding {
        what: format!("registry {}", config.registry.describe()),
        outcome,
    });
    for (name, store_config) in &config.stores {
        let what = format!("store {name} ({})", store_config.kind());
        let outcome = match stores::open_store(name.clone(), store_config).await {
            Err(e) => Outcome::Failed(e.to_string()),
            Ok(store) => {
                let location = describe_store(store_config, &store.endpoints());
                match store.health_check().await {
                    Ok(()) => Outcome::Ok(location),
                    Err(e) => Outcome::Failed(format!("{location}: {e}")),
                }
            }
        };
        findings.push(Finding { what, outcome });
    }
    findings
}

async fn check_registry(path: &Path) -> Outcome {
    let path = path.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || {
        if !path.exists() {
            return Ok(None);
        }
        Registry::open(&path).map(|_registry| Some(()))
    })
    .await;
    match opened {
        Ok(Ok(Some(()))) => Outcome::Ok("opens".to_owned()),
        Ok(Ok(None)) => Outcome::Note("does not exist yet; the gateway creates it".to_owned()),
        Ok(Err(RegistryError::InUse)) => {
            Outcome::Note("in use by a running gateway (not checked further)".to_owned())
        }
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// The health check URL of the API a configuration describes (a wildcard bind is asked on
/// loopback).
pub fn healthcheck_url(config: &Config) -> String {
    let mut addr: SocketAddr = config.bind;
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    format!("http://{addr}/healthcheck")
}

/// Asks `url`; `Ok` only for a 200.
pub async fn healthcheck(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()?;
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("{url} did not answer"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status != reqwest::StatusCode::OK {
        anyhow::bail!("{url} answered {status}: {}", text.trim());
    }
    Ok(())
}
