//! Store configuration as the gateway's TOML names it (`[stores.<name>]` with a `kind`), and
//! opening a configured store.

use std::sync::Arc;

use serde::Deserialize;

use crate::file::{FileStore, FileStoreConfig};
use crate::s3::{S3Store, S3StoreConfig};
use crate::swift::{SwiftStore, SwiftStoreConfig};
use crate::{Store, StoreError, StoreName};

/// One `[stores.<name>]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
// Parsed once at startup and kept in a handful of copies: size does not matter, plain variants
// keep configs easy to build in code.
#[allow(clippy::large_enum_variant)]
pub enum StoreConfig {
    File(FileStoreConfig),
    S3(S3StoreConfig),
    Swift(SwiftStoreConfig),
}

impl StoreConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::S3(_) => "s3",
            Self::Swift(_) => "swift",
        }
    }

    /// The `adopt` option: take the namespace over from the registry its marker names.
    pub fn adopt(&self) -> bool {
        match self {
            Self::File(c) => c.adopt,
            Self::S3(c) => c.adopt,
            Self::Swift(c) => c.adopt,
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
        StoreConfig::S3(c) => Arc::new(S3Store::open(name, c).await?),
        StoreConfig::Swift(c) => Arc::new(SwiftStore::open(name, c).await?),
    })
}
