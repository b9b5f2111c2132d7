//! The S3 store's configuration: the `[stores.<name>]` keys, their validation into the sizes an
//! upload works with, and the SDK client they describe.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::Client;
use serde::Deserialize;

use super::parts::{growth_divisor, MAX_OBJECT_SIZE, MAX_PART_SIZE, MIB, MIN_PART_SIZE};
use crate::secret::{self, Secret};
use crate::{StoreError, StoreName};

fn default_part_size() -> u64 {
    16 * MIB
}
fn default_max_part_size() -> u64 {
    64 * MIB
}
fn default_max_concurrent_parts() -> usize {
    4
}
fn default_max_part_memory() -> u64 {
    1024 * MIB
}
fn default_max_object_size() -> u64 {
    1024 * 1024 * MIB
}
fn default_max_attempts() -> u32 {
    3
}
fn default_connect_timeout_secs() -> u64 {
    5
}
fn default_read_timeout_secs() -> u64 {
    120
}

/// When the SDK adds its own request checksums (CRC32 headers or trailers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestChecksum {
    /// Only for operations that require one. Several S3-compatible servers refuse the SDK's
    /// default (aws-chunked bodies with CRC32 trailers); `part_checksum` still guards every upload.
    #[default]
    WhenRequired,
    /// The SDK's default: a CRC32 on every upload, and response checksums validated.
    WhenSupported,
}

/// What guards each part (and each single PutObject) on its way to the server. The image's own
/// MD5 is computed above the store in every case; this only decides whether the server checks
/// the bytes it received, and with which hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartChecksum {
    /// `crc32c` if the server is found to verify it (one probe: a tiny PutObject carrying a
    /// wrong `x-amz-checksum-crc32c`, which a verifying server refuses), else `md5`.
    #[default]
    Auto,
    /// `x-amz-checksum-crc32c` (hardware-accelerated; far cheaper than a second MD5 pass).
    /// Only for servers that verify it: one that ignores the header stores the part unchecked.
    Crc32c,
    /// `Content-MD5`, which every S3-compatible server verifies; costs a second hash per byte.
    Md5,
    /// No per-part check (TCP's and TLS's own checks remain).
    None,
}

/// One `[stores.<name>]` table with `kind = "s3"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3StoreConfig {
    pub bucket: String,
    /// An S3-compatible service (`http://127.0.0.1:8333`); absent means AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Absent: `us-east-1` with an `endpoint`, else the standard AWS region chain.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub force_path_style: bool,
    /// Prepended to every key, as is (`glance/` gives `glance/<key>`).
    #[serde(default)]
    pub prefix: String,
    /// With a secret: static credentials. Absent: the standard AWS credential chain.
    #[serde(default)]
    pub access_key_id: Option<Secret>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// A file holding the secret (a trailing line break ignored), instead of `secret_access_key`.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// Bodies shorter than this go up in one PutObject, longer ones as multipart uploads.
    #[serde(default = "default_part_size")]
    pub multipart_threshold: u64,
    /// The smallest part size (at least 5 MiB); raised so the object fits in 10,000 parts.
    #[serde(default = "default_part_size")]
    pub part_size: u64,
    /// The largest part a declared length may choose. A body declared too long for 10,000 parts
    /// of this size gets parts that grow with the bytes actually sent instead, so a claimed
    /// length alone never makes the gateway reserve large buffers.
    #[serde(default = "default_max_part_size")]
    pub max_part_size: u64,
    /// Parts uploading at once; memory is about `part_size × (max_concurrent_parts + 1)`.
    #[serde(default = "default_max_concurrent_parts")]
    pub max_concurrent_parts: usize,
    /// The most bytes all uploads to this store hold in part buffers at once (default 1 GiB).
    /// Past it, uploads send fewer parts at once, and a new one waits for a part to finish.
    #[serde(default = "default_max_part_memory")]
    pub max_part_memory: u64,
    /// The largest object accepted (at most S3's 5 TiB). Bodies of unknown length get parts
    /// that grow with the bytes sent so far so that this size still fits in 10,000 parts.
    #[serde(default = "default_max_object_size")]
    pub max_object_size: u64,
    /// Attempts per request, first one included (the SDK's standard retry mode).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Longest wait for the first byte of a response once the request is sent.
    #[serde(default = "default_read_timeout_secs")]
    pub read_timeout_secs: u64,
    /// Cap on one whole operation, retries included (a download's body is not counted).
    #[serde(default)]
    pub operation_timeout_secs: Option<u64>,
    #[serde(default)]
    pub request_checksum: RequestChecksum,
    #[serde(default)]
    pub part_checksum: PartChecksum,
    /// Take the bucket + prefix over from the registry its ownership marker names (off: refuse
    /// to start).
    #[serde(default)]
    pub adopt: bool,
}

impl S3StoreConfig {
    /// A config with every tunable at its default.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            endpoint: None,
            region: None,
            force_path_style: false,
            prefix: String::new(),
            access_key_id: None,
            secret_access_key: None,
            secret_access_key_file: None,
            multipart_threshold: default_part_size(),
            part_size: default_part_size(),
            max_part_size: default_max_part_size(),
            max_concurrent_parts: default_max_concurrent_parts(),
            max_part_memory: default_max_part_memory(),
            max_object_size: default_max_object_size(),
            max_attempts: default_max_attempts(),
            connect_timeout_secs: default_connect_timeout_secs(),
            read_timeout_secs: default_read_timeout_secs(),
            operation_timeout_secs: None,
            request_checksum: RequestChecksum::default(),
            part_checksum: PartChecksum::default(),
            adopt: false,
        }
    }

    pub(super) fn validate(&self, name: &StoreName) -> Result<Tuning, StoreError> {
        let bad = |what: String| Err(StoreError::Config(format!("s3 store {name}: {what}")));
        if self.bucket.is_empty() {
            return bad("bucket must not be empty".into());
        }
        if self.prefix.starts_with('/') {
            return bad("prefix must not start with '/'".into());
        }
        if let Some(endpoint) = &self.endpoint {
            let Some((scheme, rest)) = endpoint.split_once("://") else {
                return bad("endpoint must be an http:// or https:// URL".into());
            };
            if !matches!(scheme, "http" | "https") {
                return bad("endpoint must be an http:// or https:// URL".into());
            }
            // Credentials belong in their own keys, never in a URL that ends up in messages.
            if rest.split('/').next().unwrap_or("").contains('@') {
                return bad("endpoint must not contain user information".into());
            }
        }
        match (
            &self.access_key_id,
            &self.secret_access_key,
            &self.secret_access_key_file,
        ) {
            (_, Some(_), Some(_)) => {
                return bad("set secret_access_key or secret_access_key_file, not both".into())
            }
            (Some(_), None, None) => {
                return bad(
                    "access_key_id needs secret_access_key or secret_access_key_file".into(),
                )
            }
            (None, Some(_), _) | (None, _, Some(_)) => {
                return bad("a secret access key needs access_key_id".into())
            }
            _ => {}
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return bad(format!(
                "part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes"
            ));
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.max_part_size) {
            return bad(format!(
                "max_part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes"
            ));
        }
        if !(1..=MAX_PART_SIZE).contains(&self.multipart_threshold) {
            return bad(format!(
                "multipart_threshold must be between 1 and {MAX_PART_SIZE} bytes"
            ));
        }
        if !(1..=64).contains(&self.max_concurrent_parts) {
            return bad("max_concurrent_parts must be between 1 and 64".into());
        }
        if self.max_part_memory < self.part_size {
            return bad(format!(
                "max_part_memory ({}) must hold at least one part of part_size ({})",
                self.max_part_memory, self.part_size
            ));
        }
        if !(1..=MAX_OBJECT_SIZE).contains(&self.max_object_size) {
            return bad(format!(
                "max_object_size must be between 1 and {MAX_OBJECT_SIZE} bytes"
            ));
        }
        if self.max_attempts == 0 {
            return bad("max_attempts must be at least 1".into());
        }
        let Some(growth_divisor) = growth_divisor(self.part_size, self.max_object_size) else {
            return bad("max_object_size does not fit in 10,000 parts".into());
        };
        Ok(Tuning {
            threshold: self.multipart_threshold,
            part_size: self.part_size,
            // A larger floor wins: `part_size` alone keeps configuring the usual part.
            max_part_size: self.max_part_size.max(self.part_size),
            max_in_flight: self.max_concurrent_parts,
            max_part_memory: self.max_part_memory,
            max_object_size: self.max_object_size,
            growth_divisor,
        })
    }

    async fn secret(&self, name: &StoreName) -> Result<Option<Secret>, StoreError> {
        if let Some(secret) = &self.secret_access_key {
            return Ok(Some(secret.clone()));
        }
        let Some(path) = &self.secret_access_key_file else {
            return Ok(None);
        };
        secret::read_file("secret_access_key_file", path)
            .await
            .map(Some)
            .map_err(|e| StoreError::Config(format!("s3 store {name}: {e}")))
    }

    /// The SDK client this configuration describes. Contacts nothing: credentials from the AWS
    /// chain resolve on first use.
    pub(super) async fn client(&self, name: &StoreName) -> Result<Client, StoreError> {
        let secret = self.secret(name).await?;
        let mut timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(self.connect_timeout_secs))
            .read_timeout(Duration::from_secs(self.read_timeout_secs));
        if let Some(secs) = self.operation_timeout_secs {
            timeouts = timeouts.operation_timeout(Duration::from_secs(secs));
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(self.max_attempts))
            .timeout_config(timeouts.build());
        match (&self.region, &self.endpoint) {
            (Some(region), _) => loader = loader.region(Region::new(region.clone())),
            // S3-compatible servers rarely care; skip the region chain (and its metadata lookup).
            (None, Some(_)) => loader = loader.region(Region::from_static("us-east-1")),
            (None, None) => {}
        }
        if let (Some(id), Some(secret)) = (&self.access_key_id, secret) {
            loader = loader.credentials_provider(Credentials::new(
                id.expose(),
                secret.expose(),
                None,
                None,
                "glance-gateway-config",
            ));
        }
        let shared = loader.load().await;

        let (request_checksum, response_checksum) = match self.request_checksum {
            RequestChecksum::WhenRequired => (
                RequestChecksumCalculation::WhenRequired,
                ResponseChecksumValidation::WhenRequired,
            ),
            RequestChecksum::WhenSupported => (
                RequestChecksumCalculation::WhenSupported,
                ResponseChecksumValidation::WhenSupported,
            ),
        };
        let mut s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(self.force_path_style)
            .request_checksum_calculation(request_checksum)
            .response_checksum_validation(response_checksum);
        if let Some(endpoint) = &self.endpoint {
            s3 = s3.endpoint_url(endpoint.clone());
        }
        Ok(Client::from_conf(s3.build()))
    }
}

/// The validated sizes an upload works with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tuning {
    pub threshold: u64,
    pub part_size: u64,
    pub max_part_size: u64,
    pub max_in_flight: usize,
    pub max_part_memory: u64,
    pub max_object_size: u64,
    /// Unknown-length bodies get parts of `max(part_size, sent / growth_divisor)`.
    pub growth_divisor: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::S3Store;
    use crate::{ObjectKey, Store};

    fn config() -> S3StoreConfig {
        let mut c = S3StoreConfig::new("images");
        c.endpoint = Some("http://127.0.0.1:1".into());
        c.access_key_id = Some("AKIDSECRETID".into());
        c.secret_access_key = Some("very-secret-value".into());
        c.prefix = "glance/".into();
        c
    }

    #[tokio::test]
    async fn config_is_validated() {
        let name = StoreName::parse("s3").unwrap();
        let mut cases: Vec<(S3StoreConfig, &str)> = vec![];
        let mut c = config();
        c.part_size = 4 * MIB;
        cases.push((c, "part_size"));
        let mut c = config();
        c.max_part_size = 4 * MIB;
        cases.push((c, "max_part_size"));
        let mut c = config();
        c.secret_access_key = None;
        cases.push((c, "access_key_id needs"));
        let mut c = config();
        c.secret_access_key_file = Some("/nonexistent".into());
        cases.push((c, "not both"));
        let mut c = config();
        c.endpoint = Some("http://user:pw@host".into());
        cases.push((c, "user information"));
        let mut c = config();
        c.max_concurrent_parts = 0;
        cases.push((c, "max_concurrent_parts"));
        let mut c = config();
        c.max_part_memory = c.part_size - 1;
        cases.push((c, "max_part_memory"));
        let mut c = config();
        c.max_object_size = MAX_OBJECT_SIZE + 1;
        cases.push((c, "max_object_size"));
        for (c, expected) in cases {
            match S3Store::open(name.clone(), &c).await {
                Err(StoreError::Config(m)) => {
                    assert!(m.contains(expected), "{m:?} lacks {expected:?}");
                    assert!(!m.contains("very-secret-value"));
                }
                other => panic!("expected a config error with {expected:?}, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn secret_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "file-secret\n").unwrap();
        let mut c = config();
        c.secret_access_key = None;
        c.secret_access_key_file = Some(path);
        assert_eq!(
            c.secret(&StoreName::parse("s3").unwrap()).await.unwrap(),
            Some("file-secret".into())
        );
    }

    /// The compose setup's config: its store tables are what the gateway hands to this crate.
    #[test]
    fn compose_gateway_config_parses() {
        #[derive(Deserialize)]
        struct GatewayToml {
            stores: std::collections::BTreeMap<String, crate::StoreConfig>,
        }
        let parsed: GatewayToml =
            toml::from_str(include_str!("../../../minio-fixtures/gateway.toml")).unwrap();
        let crate::StoreConfig::S3(s3) = &parsed.stores["s3"] else {
            panic!("stores.s3 is not an S3 store");
        };
        assert_eq!(s3.endpoint.as_deref(), Some("http://minio:9000"));
        assert_eq!(s3.bucket, "images");
        s3.validate(&StoreName::parse("s3").unwrap()).unwrap();
        assert_eq!(parsed.stores["file"].kind(), "file");
    }

    #[tokio::test]
    async fn endpoints_cover_both_addressing_styles() {
        let name = StoreName::parse("s3").unwrap();
        let store = S3Store::open(name.clone(), &config()).await.unwrap();
        let e = store.endpoints();
        assert!(e.contains(&"http://127.0.0.1:1".to_owned()), "{e:?}");
        assert!(e.contains(&"http://images.127.0.0.1:1".to_owned()), "{e:?}");
        let mut aws = S3StoreConfig::new("my-images");
        aws.region = Some("eu-west-1".into());
        let e = S3Store::open(name, &aws).await.unwrap().endpoints();
        for want in [
            "https://s3.amazonaws.com",
            "https://my-images.s3.amazonaws.com",
            "https://s3.eu-west-1.amazonaws.com",
            "https://my-images.s3.eu-west-1.amazonaws.com",
            "http://my-images.s3-eu-west-1.amazonaws.com",
            "https://my-images.s3.dualstack.eu-west-1.amazonaws.com",
        ] {
            assert!(e.contains(&want.to_owned()), "{want} not in {e:?}");
        }
    }

    #[test]
    fn config_from_toml_keys() {
        let c: S3StoreConfig = serde_json::from_value(serde_json::json!({
            "bucket": "images",
            "endpoint": "http://127.0.0.1:8333",
            "region": "us-east-1",
            "force_path_style": true,
            "prefix": "glance/",
            "access_key_id": "AKID",
            "secret_access_key": "s",
            "multipart_threshold": 16777216,
            "part_size": 16777216,
            "max_part_size": 67108864,
            "max_concurrent_parts": 4,
            "request_checksum": "when_supported"
        }))
        .unwrap();
        assert_eq!(c.request_checksum, RequestChecksum::WhenSupported);
        let c: crate::StoreConfig =
            serde_json::from_value(serde_json::json!({"kind": "s3", "bucket": "images"})).unwrap();
        assert_eq!(c.kind(), "s3");
        assert!(serde_json::from_value::<S3StoreConfig>(
            serde_json::json!({"bucket": "b", "buckett": "x"})
        )
        .is_err());
    }

    #[tokio::test]
    async fn debug_and_describe_hide_secrets() {
        let c = config();
        let text = format!("{c:?}");
        assert!(!text.contains("very-secret-value") && !text.contains("AKIDSECRETID"));
        let store = S3Store::open(StoreName::parse("s3").unwrap(), &c)
            .await
            .unwrap();
        let key = ObjectKey::parse("abc").unwrap();
        assert_eq!(store.describe(&key), "s3://images/glance/abc");
        let text = format!("{store:?}");
        assert!(!text.contains("very-secret-value") && !text.contains("AKIDSECRETID"));
    }
}
