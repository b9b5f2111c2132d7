//! Store configuration as the gateway's TOML names it (`[stores.<name>]` with a `kind`), and
//! opening a configured store.

use std::sync::Arc;

use serde::Deserialize;

use crate::file::{FileStore, FileStoreConfig};
use crate::swift::{SwiftStore, SwiftStoreConfig};
use crate::{Store, StoreError, StoreName};

/// One `[stores.<name>]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StoreConfig {
    File(FileStoreConfig),
    // Boxed: far larger than the other variants.
    Swift(Box<SwiftStoreConfig>),
}

impl StoreConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::Swift(_) => "swift",
        }
    }
}

/// Opens the store `name` as configured. Does not contact remote backends; call
/// [`Store::health_check`] for that.
pub async fn open_store(
    name: StoreName,
    config: &StoreConfig,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config {
        StoreConfig::File(c) => Arc::new(FileStore::open(name, c).await?),
        StoreConfig::Swift(c) => Arc::new(SwiftStore::open(name, c).await?),
    })
}
