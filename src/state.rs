//! What every request handler shares: configuration, the compiled property rules, the registry,
//! the stores and the metrics.

use std::sync::Arc;

use anyhow::Context;
use stores::{Store, StoreName, Stores};
use tokio::sync::Semaphore;

use crate::admin_ops::Migrations;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::protection::PropertyRules;
use crate::registry::Registry;
use crate::remote::RemoteClient;
use crate::upload::Uploads;

#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    /// Compiled from `config.property_protection_file` at startup.
    pub property_rules: Arc<PropertyRules>,
    pub registry: Registry,
    pub stores: Arc<Stores>,
    pub remote: RemoteClient,
    pub metrics: Arc<Metrics>,
    /// Permits for copy-from imports (`max_concurrent_imports`); waiters are served in order.
    pub imports: Arc<Semaphore>,
    /// Uploads in flight, counted against the storage quota.
    pub uploads: Arc<Uploads>,
    /// Migrations in progress (admin operations), which the orphan sweep must respect.
    pub migrations: Migrations,
}

impl AppState {
    /// Assembles the state, compiling the property protection rules the configuration names.
    pub async fn new(
        config: Config,
        registry: Registry,
        stores: Stores,
        remote: RemoteClient,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let property_rules = PropertyRules::load(config.property_protection_file.as_deref())
            .await
            .context("config key `property_protection_file`")?;
        Ok(Self {
            imports: Arc::new(Semaphore::new(config.max_concurrent_imports)),
            uploads: Arc::default(),
            config: Arc::new(config),
            property_rules: Arc::new(property_rules),
            registry,
            stores: Arc::new(stores),
            remote,
            metrics,
            migrations: Migrations::default(),
        })
    }

    /// The store an upload goes to: the one `x-image-meta-store` names, else `default_store`.
    pub fn store_for(&self, requested: Option<&str>) -> ApiResult<Arc<dyn Store>> {
        let name = requested.unwrap_or(self.config.default_store.as_str());
        self.stores
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::bad_request(format!("Required store {name} is invalid")))
    }

    /// The store a recorded location names.
    pub fn store_named(&self, name: &StoreName) -> ApiResult<Arc<dyn Store>> {
        self.stores
            .get(name.as_str())
            .cloned()
            .ok_or_else(|| ApiError::bad_request(format!("Store for scheme {name} not found")))
    }
}

/// A state over `dir` with the default configuration and no store, for unit tests.
#[cfg(test)]
pub(crate) async fn test_state(dir: &std::path::Path) -> AppState {
    use crate::config::{ConfigFile, Overrides};
    let overrides = Overrides {
        data_dir: Some(dir.to_owned()),
        ..Overrides::default()
    };
    let mut config = Config::resolve(ConfigFile::default(), overrides).unwrap();
    config.user_storage_quota = 1000;
    let registry = Registry::open(&dir.join("registry")).unwrap();
    let remote = RemoteClient::new(config.remote_sources, None, vec![]).unwrap();
    AppState::new(config, registry, Stores::new(), remote, Default::default())
        .await
        .unwrap()
}
