//! What every request handler shares: configuration, the compiled property rules, the registry
//! and the stores.

use std::sync::Arc;

use anyhow::Context;
use stores::{Store, StoreName, Stores};

use crate::admin_ops::Migrations;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::protection::PropertyRules;
use crate::registry::Registry;
use crate::remote::RemoteClient;

#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    /// Compiled from `config.property_protection_file` at startup.
    pub property_rules: Arc<PropertyRules>,
    pub registry: Registry,
    pub stores: Arc<Stores>,
    pub remote: RemoteClient,
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
    ) -> anyhow::Result<Self> {
        let property_rules = PropertyRules::load(config.property_protection_file.as_deref())
            .await
            .context("config key `property_protection_file`")?;
        Ok(Self {
            config: Arc::new(config),
            property_rules: Arc::new(property_rules),
            registry,
            stores: Arc::new(stores),
            remote,
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
