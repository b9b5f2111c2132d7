//! The Swift store's configuration: the `[stores.<name>]` keys and their validation, key and
//! token files included.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::auth::Credentials;
use super::{GIB, MAX_SINGLE_OBJECT, MIB};
use crate::secret::{self, Secret};
use crate::{StoreError, StoreName};

fn default_large_object_size() -> u64 {
    5 * GIB
}
fn default_segment_size() -> u64 {
    200 * MIB
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    60
}
fn default_read_timeout() -> u64 {
    60
}

/// `[stores.<name>]` with `kind = "swift"`.
///
/// Credentials: `auth_url` + `user` + `key` (or `key_file`) for v1 auth, and/or a fixed
/// `storage_url` + `token` (or `token_file`). With both, the fixed token is used first and the
/// credentials renew it; `storage_url` then overrides the URL the auth endpoint returns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwiftStoreConfig {
    pub auth_url: Option<String>,
    pub user: Option<String>,
    pub key: Option<Secret>,
    pub key_file: Option<PathBuf>,
    pub storage_url: Option<String>,
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub container: String,
    /// Create the container and the segment container on first use.
    #[serde(default)]
    pub create_container: bool,
    /// Objects declared at least this large go up as segments (at most 5 GiB).
    #[serde(default = "default_large_object_size")]
    pub large_object_size: u64,
    #[serde(default = "default_segment_size")]
    pub segment_size: u64,
    /// Defaults to `<container>_segments`.
    pub segment_container: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Bound on requests without a streamed body, and on waiting for response headers.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Longest silence while streaming: between chunks of a download, and between the end of an
    /// upload's body and Swift's answer.
    #[serde(default = "default_read_timeout")]
    pub read_timeout_secs: u64,
}

/// What a valid configuration gives the store beyond its plain settings.
pub(super) struct Checked {
    pub segment_container: String,
    pub credentials: Option<Credentials>,
    pub token: Option<Secret>,
}

impl SwiftStoreConfig {
    /// Checks the settings and reads key or token files.
    pub(super) async fn check(&self, name: &StoreName) -> Result<Checked, StoreError> {
        let c = self;
        let name = name.clone();
        if !valid_container(&c.container) {
            return Err(config_err(
                &name,
                "container must be 1-256 of A-Z a-z 0-9 . _ -",
            ));
        }
        let segment_container = c
            .segment_container
            .clone()
            .unwrap_or_else(|| format!("{}_segments", c.container));
        if !valid_container(&segment_container) || segment_container == c.container {
            return Err(config_err(
                &name,
                "segment_container must be a valid container name other than container",
            ));
        }
        if c.segment_size == 0 || c.segment_size > MAX_SINGLE_OBJECT {
            return Err(config_err(&name, "segment_size must be 1 byte to 5 GiB"));
        }
        if c.large_object_size == 0 || c.large_object_size > MAX_SINGLE_OBJECT {
            return Err(config_err(
                &name,
                "large_object_size must be 1 byte to 5 GiB",
            ));
        }
        if c.connect_timeout_secs == 0 || c.request_timeout_secs == 0 || c.read_timeout_secs == 0 {
            return Err(config_err(&name, "timeouts must be at least 1 second"));
        }

        let key = match (&c.key, &c.key_file) {
            (Some(_), Some(_)) => return Err(config_err(&name, "set key or key_file, not both")),
            (Some(k), None) => Some(k.clone()),
            (None, Some(path)) => Some(read_secret(&name, "key_file", path).await?),
            (None, None) => None,
        };
        let credentials = match (&c.auth_url, &c.user, key) {
            (Some(auth_url), Some(user), Some(key)) => {
                if !valid_url(auth_url) {
                    return Err(config_err(&name, "auth_url is not an http(s) URL"));
                }
                Some(Credentials {
                    auth_url: auth_url.clone(),
                    user: user.clone(),
                    key,
                })
            }
            (None, None, None) => None,
            _ => {
                return Err(config_err(
                    &name,
                    "auth_url, user and key (or key_file) go together",
                ))
            }
        };
        let token = match (&c.token, &c.token_file) {
            (Some(_), Some(_)) => {
                return Err(config_err(&name, "set token or token_file, not both"))
            }
            (Some(t), None) => Some(t.clone()),
            (None, Some(path)) => Some(read_secret(&name, "token_file", path).await?),
            (None, None) => None,
        };
        if let Some(url) = &c.storage_url {
            if !valid_url(url) {
                return Err(config_err(&name, "storage_url is not an http(s) URL"));
            }
        }
        if token.is_some() && c.storage_url.is_none() {
            return Err(config_err(&name, "a fixed token needs storage_url"));
        }
        if credentials.is_none() && token.is_none() {
            return Err(config_err(
                &name,
                "configure auth_url + user + key, or storage_url + token",
            ));
        }
        Ok(Checked {
            segment_container,
            credentials,
            token,
        })
    }
}

pub(super) fn config_err(name: &StoreName, message: impl fmt::Display) -> StoreError {
    StoreError::Config(format!("swift store {name}: {message}"))
}

async fn read_secret(name: &StoreName, field: &str, path: &Path) -> Result<Secret, StoreError> {
    secret::read_file(field, path)
        .await
        .map_err(|e| config_err(name, e))
}

/// Container names end up in URL paths unescaped, so keep them to a safe alphabet.
pub(super) fn valid_container(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(super) fn valid_url(url: &str) -> bool {
    match reqwest::Url::parse(url) {
        Ok(u) => matches!(u.scheme(), "http" | "https") && u.host().is_some(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swift::SwiftStore;
    use crate::{ObjectKey, Store};

    fn config(json: serde_json::Value) -> Result<SwiftStoreConfig, serde_json::Error> {
        serde_json::from_value(json)
    }

    async fn open(json: serde_json::Value) -> Result<SwiftStore, StoreError> {
        SwiftStore::open(StoreName::parse("swift").unwrap(), &config(json).unwrap()).await
    }

    #[tokio::test]
    async fn config_combinations() {
        let ok = open(serde_json::json!({
            "auth_url": "http://127.0.0.1:1/auth/v1.0", "user": "u:v", "key": "k",
            "container": "c"
        }))
        .await
        .unwrap();
        assert_eq!(ok.segment_container(), "c_segments");
        assert_eq!(ok.inner.segment_size, 200 * MIB);
        assert_eq!(ok.inner.large_object_size, 5 * GIB);
        assert!(open(serde_json::json!({
            "storage_url": "http://127.0.0.1:1/v1/AUTH_x", "token": "t", "container": "c"
        }))
        .await
        .is_ok());
        for bad in [
            serde_json::json!({"auth_url": "http://h/auth", "user": "u", "container": "c"}),
            serde_json::json!({"auth_url": "http://h/auth", "user": "u", "key": "k",
                               "key_file": "/nonexistent", "container": "c"}),
            serde_json::json!({"token": "t", "container": "c"}),
            serde_json::json!({"storage_url": "http://h/v1/A", "container": "c"}),
            serde_json::json!({"storage_url": "ftp://h/v1/A", "token": "t", "container": "c"}),
            serde_json::json!({"storage_url": "http://h/v1/A", "token": "t", "container": "a/b"}),
            serde_json::json!({"storage_url": "http://h/v1/A", "token": "t", "container": "c",
                               "segment_container": "c"}),
            serde_json::json!({"storage_url": "http://h/v1/A", "token": "t", "container": "c",
                               "segment_size": 0}),
            serde_json::json!({"storage_url": "http://h/v1/A", "token": "t", "container": "c",
                               "large_object_size": 6 * GIB}),
        ] {
            assert!(
                matches!(open(bad.clone()).await, Err(StoreError::Config(_))),
                "{bad} accepted"
            );
        }
        assert!(config(serde_json::json!({"container": "c", "bogus": 1})).is_err());
    }

    #[tokio::test]
    async fn key_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "filekey\n").unwrap();
        let store = open(serde_json::json!({
            "auth_url": "http://127.0.0.1:1/auth/v1.0", "user": "u", "key_file": path,
            "container": "c"
        }))
        .await
        .unwrap();
        assert_eq!(
            store.inner.credentials.as_ref().unwrap().key.expose(),
            "filekey"
        );
    }

    #[tokio::test]
    async fn secrets_stay_out_of_debug_and_describe() {
        let json = serde_json::json!({
            "auth_url": "http://127.0.0.1:1/auth/v1.0", "user": "u:v", "key": "SEKRETKEY",
            "storage_url": "http://127.0.0.1:1/v1/AUTH_x", "token": "SEKRETTOKEN",
            "container": "c"
        });
        let c = config(json.clone()).unwrap();
        let store = open(json).await.unwrap();
        let key = ObjectKey::parse("img").unwrap();
        for text in [
            format!("{c:?}"),
            format!("{store:?}"),
            store.describe(&key),
            format!("{:?}", store.inner.current_session().unwrap().token),
        ] {
            assert!(!text.contains("SEKRET"), "secret in {text}");
        }
        assert_eq!(store.describe(&key), "swift://c/img");
    }
}
