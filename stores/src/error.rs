//! The store layer's one error type. Messages name the store and the key, never a credential or
//! a local path, so they are safe to log; the gateway maps variants to HTTP statuses.

use std::io;

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("object {key} not found in store {store}")]
    NotFound { store: String, key: String },

    #[error("requested range not satisfiable (object is {len} bytes)")]
    RangeNotSatisfiable { len: u64 },

    #[error("store {store} is full")]
    StorageFull { store: String },

    /// The backend refuses an object this large (a cluster's object or manifest limits).
    #[error("store {store} refused the object as too large: {message}")]
    TooLarge { store: String, message: String },

    #[error("store {store} is unavailable: {message}")]
    Unavailable { store: String, message: String },

    #[error("store {store} refused the credentials or the operation: {message}")]
    Forbidden { store: String, message: String },

    #[error("reading the request body failed: {0}")]
    Body(#[source] io::Error),

    #[error("invalid store configuration: {0}")]
    Config(String),

    #[error("store {store} failed: {message}")]
    Other {
        store: String,
        message: String,
        #[source]
        source: Option<Source>,
    },
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    pub fn other(store: &str, message: impl Into<String>) -> Self {
        Self::Other {
            store: store.to_owned(),
            message: message.into(),
            source: None,
        }
    }

    pub fn unavailable(store: &str, message: impl Into<String>) -> Self {
        Self::Unavailable {
            store: store.to_owned(),
            message: message.into(),
        }
    }

    /// Maps a local I/O error: a full disk or file too large is `StorageFull`, a refused
    /// permission `Forbidden`, anything else `Other`.
    pub fn from_io(store: &str, key: &str, err: io::Error) -> Self {
        const ENOSPC: i32 = 28;
        const EFBIG: i32 = 27;
        const EDQUOT: i32 = 122;
        match (err.kind(), err.raw_os_error()) {
            (io::ErrorKind::NotFound, _) => Self::NotFound {
                store: store.to_owned(),
                key: key.to_owned(),
            },
            (_, Some(ENOSPC | EFBIG | EDQUOT)) | (io::ErrorKind::StorageFull, _) => {
                Self::StorageFull {
                    store: store.to_owned(),
                }
            }
            (io::ErrorKind::PermissionDenied, _) => Self::Forbidden {
                store: store.to_owned(),
                message: "permission denied".to_owned(),
            },
            _ => Self::Other {
                store: store.to_owned(),
                message: format!("I/O error: {}", err.kind()),
                source: Some(Box::new(err)),
            },
        }
    }
}
