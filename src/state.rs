//! What every request handler shares: configuration, the registry and the stores.

use std::sync::Arc;

use stores::{Store, Stores};

use crate::admin_ops::Migrations;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::registry::Registry;
use crate::remote::RemoteClient;

#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub registry: Registry,
    pub stores: Arc<Stores>,
    pub remote: RemoteClient,
    /// Migrations in progress (admin operations), which the orphan sweep must respect.
    pub migrations: Migrations,
}

impl AppState {
    /// The store an upload goes to: the one `x-image-meta-store` names, else `default_store`.
    pub fn store_for(&self, requested: Option<&str>) -> ApiResult<Arc<dyn Store>> {
        let name = requested.unwrap_or(self.config.default_store.as_str());
        self.stores
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::bad_request(format!("Required store {name} is invalid")))
    }

    pub fn store_named(&self, name: &str) -> ApiResult<Arc<dyn Store>> {
        self.stores
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::bad_request(format!("Store for scheme {name} not found")))
    }
}
