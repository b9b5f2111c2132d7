//! The S3 store: objects in one bucket under an optional key prefix, written with one PutObject or
//! a multipart upload with a bounded number of parts in flight, which is aborted on any failure,
//! cancellation included. It uses only what strict S3-compatible servers accept: request
//! checksums only when required (by default), Content-MD5 on every upload, and part number + ETag
//! at Complete. It never hashes whole images; that happens above the stores.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use md5::{Digest, Md5};
use serde::Deserialize;
use tokio::task::JoinSet;

use crate::chunker::{BufferPool, Chunker};
use crate::ownership::MARKER;
use crate::{
    clip_range, ByteStream, ForeignObject, GetObject, Namespace, ObjectInfo, ObjectKey, Store,
    StoreError, StoreName, SweepReport,
};

const MIB: u64 = 1024 * 1024;
/// S3's limits: every part but the last at least 5 MiB, at most 5 GiB per part or PutObject,
/// 10,000 parts, 5 TiB per object.
const MIN_PART_SIZE: u64 = 5 * MIB;
const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;
const MAX_PARTS: u64 = 10_000;
const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * MIB;
/// Below this a part's Content-MD5 is computed in place; above, on a blocking thread, so a
/// 16 MiB digest does not stall the runtime.
const INLINE_MD5_LIMIT: usize = 256 * 1024;
const CONTENT_TYPE: &str = "application/octet-stream";
/// How long a failed put waits for its abort before leaving the upload to the sweep.
const ABORT_TIMEOUT: Duration = Duration::from_secs(30);

fn default_part_size() -> u64 {
    16 * MIB
}
fn default_max_concurrent_parts() -> usize {
    4
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
    /// default (aws-chunked bodies with CRC32 trailers); Content-MD5 still guards every upload.
    #[default]
    WhenRequired,
    /// The SDK's default: a CRC32 on every upload, and response checksums validated.
    WhenSupported,
}

/// One `[stores.<name>]` table with `kind = "s3"`.
#[derive(Clone, Deserialize)]
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
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// A file holding the secret (surrounding whitespace ignored), instead of `secret_access_key`.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// Bodies shorter than this go up in one PutObject, longer ones as multipart uploads.
    #[serde(default = "default_part_size")]
    pub multipart_threshold: u64,
    /// The smallest part size (at least 5 MiB); raised so the object fits in 10,000 parts.
    #[serde(default = "default_part_size")]
    pub part_size: u64,
    /// Parts uploading at once; memory is about `part_size × (max_concurrent_parts + 1)`.
    #[serde(default = "default_max_concurrent_parts")]
    pub max_concurrent_parts: usize,
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
    /// Take the bucket + prefix over from the registry its ownership marker names (off: refuse
    /// to start).
    #[serde(default)]
    pub adopt: bool,
}

impl fmt::Debug for S3StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3StoreConfig")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("prefix", &self.prefix)
            .field("access_key_id", &redacted(&self.access_key_id))
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("secret_access_key_file", &self.secret_access_key_file)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .field("max_concurrent_parts", &self.max_concurrent_parts)
            .field("max_object_size", &self.max_object_size)
            .field("max_attempts", &self.max_attempts)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("read_timeout_secs", &self.read_timeout_secs)
            .field("operation_timeout_secs", &self.operation_timeout_secs)
            .field("request_checksum", &self.request_checksum)
            .finish()
    }
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
            max_concurrent_parts: default_max_concurrent_parts(),
            max_object_size: default_max_object_size(),
            max_attempts: default_max_attempts(),
            connect_timeout_secs: default_connect_timeout_secs(),
            read_timeout_secs: default_read_timeout_secs(),
            operation_timeout_secs: None,
            request_checksum: RequestChecksum::default(),
            adopt: false,
        }
    }

    fn validate(&self, name: &StoreName) -> Result<Tuning, StoreError> {
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
        if !(1..=MAX_PART_SIZE).contains(&self.multipart_threshold) {
            return bad(format!(
                "multipart_threshold must be between 1 and {MAX_PART_SIZE} bytes"
            ));
        }
        if !(1..=64).contains(&self.max_concurrent_parts) {
            return bad("max_concurrent_parts must be between 1 and 64".into());
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
            max_in_flight: self.max_concurrent_parts,
            max_object_size: self.max_object_size,
            growth_divisor,
        })
    }

    async fn secret(&self, name: &StoreName) -> Result<Option<String>, StoreError> {
        if let Some(secret) = &self.secret_access_key {
            return Ok(Some(secret.clone()));
        }
        let Some(path) = &self.secret_access_key_file else {
            return Ok(None);
        };
        // The path stays out of the message: errors never name local paths.
        let secret = tokio::fs::read_to_string(path).await.map_err(|e| {
            StoreError::Config(format!(
                "s3 store {name}: cannot read secret_access_key_file: {e}"
            ))
        })?;
        let secret = secret.trim();
        if secret.is_empty() {
            return Err(StoreError::Config(format!(
                "s3 store {name}: secret_access_key_file is empty"
            )));
        }
        Ok(Some(secret.to_owned()))
    }
}

/// The validated sizes an upload works with.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    threshold: u64,
    part_size: u64,
    max_in_flight: usize,
    max_object_size: u64,
    /// Unknown-length bodies get parts of `max(part_size, sent / growth_divisor)`.
    growth_divisor: u64,
}

fn round_up_mib(n: u64) -> u64 {
    n.div_ceil(MIB).saturating_mul(MIB)
}

/// The part size for a body of unknown length once `sent` bytes went up: the floor at first,
/// then a fixed fraction of what was sent, so the sizes grow geometrically and a large object
/// still fits in 10,000 parts while small ones keep small parts (and little memory).
fn growth_size(base: u64, divisor: u64, sent: u64) -> u64 {
    base.max(round_up_mib(sent.div_ceil(divisor)))
        .min(MAX_PART_SIZE)
}

/// The gentlest growth with which `max_object` fits in 10,000 parts starting from `base`.
fn growth_divisor(base: u64, max_object: u64) -> Option<u64> {
    let fits = |divisor| {
        let mut sent = 0u64;
        for _ in 0..MAX_PARTS {
            sent = sent.saturating_add(growth_size(base, divisor, sent));
            if sent >= max_object {
                return true;
            }
        }
        false
    };
    [
        5000, 3000, 2000, 1500, 1000, 750, 500, 300, 200, 100, 50, 20, 10, 5, 2, 1,
    ]
    .into_iter()
    .find(|&d| fits(d))
}

/// Chooses each part's size: from the declared length when there is one (the stream is still
/// the truth: past the declared length it falls back to growing), else growing as it goes.
#[derive(Debug, Clone, Copy)]
struct PartSizer {
    base: u64,
    divisor: u64,
    /// (declared length, part size for it)
    hinted: Option<(u64, u64)>,
}

impl PartSizer {
    fn new(tuning: &Tuning, size_hint: Option<u64>) -> Self {
        let hinted = size_hint.map(|len| {
            let size = tuning
                .part_size
                .max(round_up_mib(len.div_ceil(MAX_PARTS)))
                .min(MAX_PART_SIZE);
            (len, size)
        });
        Self {
            base: tuning.part_size,
            divisor: tuning.growth_divisor,
            hinted,
        }
    }

    fn size_after(&self, sent: u64) -> usize {
        let growth = || growth_size(self.base, self.divisor, sent);
        let size = match self.hinted {
            Some((len, size)) if sent < len => size,
            Some((_, size)) => size.max(growth()),
            None => growth(),
        };
        usize::try_from(size).unwrap_or(usize::MAX)
    }
}

/// An image store in one S3 bucket. Cheap to share: state lives behind an `Arc`, which part
/// uploads and abort tasks clone.
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    name: StoreName,
    client: Client,
    bucket: String,
    prefix: String,
    /// For messages: the endpoint URL (validated to carry no credentials) or "AWS S3".
    endpoint_label: String,
    tuning: Tuning,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("S3Store")
            .field("name", &inner.name)
            .field("bucket", &inner.bucket)
            .field("prefix", &inner.prefix)
            .field("endpoint", &inner.endpoint_label)
            .field("tuning", &inner.tuning)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Builds the client. Contacts nothing (credentials from the AWS chain resolve on first
    /// use); call [`Store::health_check`] to see the bucket.
    pub async fn open(name: StoreName, config: &S3StoreConfig) -> Result<Self, StoreError> {
        let tuning = config.validate(&name)?;
        let secret = config.secret(&name).await?;

        let mut timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
            .read_timeout(Duration::from_secs(config.read_timeout_secs));
        if let Some(secs) = config.operation_timeout_secs {
            timeouts = timeouts.operation_timeout(Duration::from_secs(secs));
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts))
            .timeout_config(timeouts.build());
        match (&config.region, &config.endpoint) {
            (Some(region), _) => loader = loader.region(Region::new(region.clone())),
            // S3-compatible servers rarely care; skip the region chain (and its metadata lookup).
            (None, Some(_)) => loader = loader.region(Region::from_static("us-east-1")),
            (None, None) => {}
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, secret) {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret,
                None,
                None,
                "glance-gateway-config",
            ));
        }
        let shared = loader.load().await;

        let (request_checksum, response_checksum) = match config.request_checksum {
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
            .force_path_style(config.force_path_style)
            .request_checksum_calculation(request_checksum)
            .response_checksum_validation(response_checksum);
        if let Some(endpoint) = &config.endpoint {
            s3 = s3.endpoint_url(endpoint.clone());
        }

        Ok(Self {
            inner: Arc::new(Inner {
                name,
                client: Client::from_conf(s3.build()),
                bucket: config.bucket.clone(),
                prefix: config.prefix.clone(),
                endpoint_label: config
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| "AWS S3".to_owned()),
                tuning,
            }),
        })
    }

    /// The key in the bucket for an object key.
    pub fn bucket_key(&self, key: &ObjectKey) -> String {
        self.inner.full_key(key)
    }

    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }
}

impl Inner {
    fn store(&self) -> &str {
        self.name.as_str()
    }

    fn full_key(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Maps an SDK error to a `StoreError`. Messages carry the operation, the S3 error code and
    /// message and the endpoint, never a credential: the SDK's own errors contain none, and the
    /// raw request (which holds the signature) is not included.
    fn map_err<E>(&self, op: &str, key: Option<&str>, err: SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let store = self.store();
        match &err {
            // Resolving credentials happens while dispatching: say so, not "unreachable".
            SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_)
                if credentials_failed(&err) =>
            {
                StoreError::Forbidden {
                    store: store.to_owned(),
                    message: format!("{op}: no usable credentials: {}", chain(&err)),
                }
            }
            SdkError::DispatchFailure(failure) => {
                let what = if failure.is_timeout() {
                    "timed out reaching"
                } else if failure.is_io() {
                    "cannot connect to"
                } else {
                    "request failed to"
                };
                StoreError::unavailable(
                    store,
                    format!("{op}: {what} {}: {}", self.endpoint_label, chain(&err)),
                )
            }
            SdkError::TimeoutError(_) => StoreError::unavailable(
                store,
                format!("{op}: timed out waiting for {}", self.endpoint_label),
            ),
            SdkError::ConstructionFailure(_) => {
                StoreError::other(store, format!("{op}: request not built: {}", chain(&err)))
            }
            // The connection broke while the answer was being read: the backend, not the request.
            SdkError::ResponseError(_) => StoreError::unavailable(
                store,
                format!("{op}: the answer from {} was cut off", self.endpoint_label),
            ),
            _ => {
                let status = err.raw_response().map(|r| r.status().as_u16());
                let code = err.code().unwrap_or("");
                let message = err.message().unwrap_or("");
                let described = match (code, message) {
                    ("", _) => format!(
                        "{op}: HTTP {}",
                        status.map_or("?".to_owned(), |s| s.to_string())
                    ),
                    (code, "") => format!("{op}: {code}"),
                    (code, message) => format!("{op}: {code}: {message}"),
                };
                match (status, code) {
                    (_, "NoSuchBucket") => StoreError::other(
                        store,
                        format!("{op}: bucket {} does not exist", self.bucket),
                    ),
                    (_, "NoSuchKey" | "NotFound") | (Some(404), "") if key.is_some() => {
                        StoreError::NotFound {
                            store: store.to_owned(),
                            key: key.map(ToString::to_string).unwrap_or_default(),
                        }
                    }
                    // A 404 that names no key (HeadBucket, listings): the bucket is missing.
                    (Some(404), "" | "NotFound") => StoreError::other(
                        store,
                        format!("{op}: bucket {} does not exist", self.bucket),
                    ),
                    (
                        _,
                        "AccessDenied"
                        | "InvalidAccessKeyId"
                        | "SignatureDoesNotMatch"
                        | "AuthorizationHeaderMalformed"
                        | "InvalidToken"
                        | "ExpiredToken"
                        | "AllAccessDisabled"
                        | "AccountProblem",
                    )
                    | (Some(401 | 403), _) => StoreError::Forbidden {
                        store: store.to_owned(),
                        message: described,
                    },
                    (
                        _,
                        "EntityTooLarge"
                        | "QuotaExceeded"
                        | "XMinioStorageFull"
                        | "XMinioAdminBucketQuotaExceeded"
                        | "StorageFull"
                        | "InsufficientStorage",
                    )
                    | (Some(507), _) => StoreError::StorageFull {
                        store: store.to_owned(),
                    },
                    (Some(500..=599), _) | (_, "SlowDown" | "ServiceUnavailable") => {
                        StoreError::unavailable(store, format!("{described} (after retries)"))
                    }
                    _ => StoreError::other(store, described),
                }
            }
        }
    }

    /// Streams the object at bucket key `full` (or a range of it); `key` names it in errors.
    async fn get_at(
        &self,
        full: &str,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<GetObject, StoreError> {
        let inner = self;
        let unsatisfiable = |len| StoreError::RangeNotSatisfiable { len };
        if let Some(r) = &range {
            if r.start >= r.end {
                return Err(unsatisfiable(inner.head_len(full, key).await?));
            }
        }
        let mut request = inner.client.get_object().bucket(&inner.bucket).key(full);
        if let Some(r) = &range {
            request = request.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        let out = match request.send().await {
            Ok(out) => out,
            Err(e)
                if e.code() == Some("InvalidRange")
                    || e.raw_response().map(|r| r.status().as_u16()) == Some(416) =>
            {
                return Err(unsatisfiable(inner.head_len(full, key).await?));
            }
            Err(e) => return Err(inner.map_err("GetObject", Some(key), e)),
        };
        let length = out.content_length().unwrap_or(0).max(0) as u64;
        let content_range = out.content_range().map(str::to_owned);
        let body = body_stream(out.body);
        match (range, content_range) {
            (None, _) => Ok(GetObject {
                body,
                range: 0..length,
                total_len: length,
            }),
            (Some(asked), Some(content_range)) => {
                let (got, total_len) = parse_content_range(&content_range)
                    .filter(|(got, total)| {
                        clip_range(Some(asked.clone()), *total).ok().as_ref() == Some(got)
                    })
                    .ok_or_else(|| {
                        StoreError::other(
                            inner.store(),
                            format!("GetObject: unexpected Content-Range {content_range:?}"),
                        )
                    })?;
                Ok(GetObject {
                    body,
                    range: got,
                    total_len,
                })
            }
            // The server ignored the Range header and sent the whole object.
            (Some(asked), None) => {
                let got = clip_range(Some(asked), length)?;
                Ok(GetObject {
                    body: slice_stream(body, got.clone()),
                    range: got,
                    total_len: length,
                })
            }
        }
    }

    async fn head_len(&self, full: &str, key: &str) -> Result<u64, StoreError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| self.map_err("HeadObject", Some(key), e))?;
        Ok(out.content_length().unwrap_or(0).max(0) as u64)
    }

    async fn put_single(&self, key: &ObjectKey, full: &str, data: Bytes) -> Result<(), StoreError> {
        let md5 = content_md5(self.store(), &data).await?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .content_type(CONTENT_TYPE)
            .content_length(data.len() as i64)
            .content_md5(md5)
            .body(SdkByteStream::from(data))
            .customize()
            // Content-MD5 is signed and checked by the server; hashing the payload a second
            // time for the signature buys nothing.
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.map_err("PutObject", Some(key.as_str()), e))?;
        Ok(())
    }

    async fn upload_part(
        self: Arc<Self>,
        key: ObjectKey,
        full: Arc<str>,
        upload_id: Arc<str>,
        number: i32,
        data: Bytes,
        pool: BufferPool,
    ) -> Result<CompletedPart, StoreError> {
        let md5 = content_md5(self.store(), &data).await?;
        let buffer = data.clone();
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&*full)
            .upload_id(&*upload_id)
            .part_number(number)
            .content_length(data.len() as i64)
            .content_md5(md5)
            .body(SdkByteStream::from(data))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.map_err("UploadPart", Some(key.as_str()), e))?;
        pool.recycle(buffer);
        let etag = out
            .e_tag()
            .ok_or_else(|| StoreError::other(self.store(), "UploadPart: no ETag in the answer"))?;
        // Only number and ETag: servers that did not record part checksums refuse others.
        Ok(CompletedPart::builder()
            .part_number(number)
            .e_tag(etag)
            .build())
    }

    async fn abort_upload(&self, full: &str, upload_id: &str) -> Result<(), StoreError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already gone: what we wanted.
            Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
            Err(e) => Err(self.map_err("AbortMultipartUpload", None, e)),
        }
    }

    /// Multipart uploads whose key starts with `prefix`: (key, upload id, initiated).
    async fn list_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, Option<SystemTime>)>, StoreError> {
        let mut out = vec![];
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.map_err("ListMultipartUploads", None, e))?;
            for upload in page.uploads() {
                if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
                    let initiated = upload
                        .initiated()
                        .and_then(|t| SystemTime::try_from(*t).ok());
                    out.push((key.to_owned(), id.to_owned(), initiated));
                }
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if page.is_truncated() != Some(true) || key_marker.is_none() {
                return Ok(out);
            }
        }
    }

    fn log_failed_abort(&self, full: &str, upload_id: &str, err: &StoreError) {
        tracing::warn!(
            store = %self.name, key = full, upload_id,
            error = %err,
            "aborting a multipart upload failed; the incomplete-upload sweep will remove it"
        );
    }
}

/// True when the credential provider failed (nothing found in the chain, metadata refused).
fn credentials_failed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<aws_credential_types::provider::error::CredentialsError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Display of an error and its sources, joined with ": ".
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

async fn content_md5(store: &str, data: &Bytes) -> Result<String, StoreError> {
    let encode = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(Md5::digest(d));
    if data.len() <= INLINE_MD5_LIMIT {
        return Ok(encode(data));
    }
    let data = data.clone();
    tokio::task::spawn_blocking(move || encode(&data))
        .await
        .map_err(|e| StoreError::other(store, format!("hashing a part failed: {e}")))
}

fn concat(parts: Vec<Bytes>) -> Bytes {
    match <[Bytes; 1]>::try_from(parts) {
        Ok([one]) => one,
        Err(parts) => {
            let mut all = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
            for part in parts {
                all.extend_from_slice(&part);
            }
            all.freeze()
        }
    }
}

/// An open multipart upload and its parts in flight. While armed, dropping it (the put future
/// was cancelled) cancels the part uploads and aborts the upload in a spawned task.
struct Multipart {
    inner: Arc<Inner>,
    key: ObjectKey,
    full: Arc<str>,
    upload_id: Arc<str>,
    in_flight: JoinSet<Result<CompletedPart, StoreError>>,
    /// Where uploaded parts' buffers go back for the chunker to reuse.
    pool: BufferPool,
    done: Vec<CompletedPart>,
    /// CompleteMultipartUpload was sent, so the object may exist.
    completing: bool,
    armed: bool,
}

impl Multipart {
    fn spawn_part(&mut self, number: i32, data: Bytes) {
        let task = Arc::clone(&self.inner).upload_part(
            self.key.clone(),
            Arc::clone(&self.full),
            Arc::clone(&self.upload_id),
            number,
            data,
            self.pool.clone(),
        );
        self.in_flight.spawn(task);
    }

    fn joined(
        &mut self,
        res: Result<Result<CompletedPart, StoreError>, tokio::task::JoinError>,
    ) -> Result<(), StoreError> {
        match res {
            Ok(Ok(part)) => {
                self.done.push(part);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(StoreError::other(
                self.inner.store(),
                format!("a part upload task failed: {e}"),
            )),
        }
    }

    /// Waits until fewer than `max` parts are in flight.
    async fn wait_for_capacity(&mut self, max: usize) -> Result<(), StoreError> {
        while self.in_flight.len() >= max {
            match self.in_flight.join_next().await {
                Some(res) => self.joined(res)?,
                None => break,
            }
        }
        Ok(())
    }

    /// Collects parts that already finished, so a failed part stops the upload early.
    fn reap_finished(&mut self) -> Result<(), StoreError> {
        while let Some(res) = self.in_flight.try_join_next() {
            self.joined(res)?;
        }
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), StoreError> {
        self.wait_for_capacity(1).await?;
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part_number());
        let inner = &self.inner;
        self.completing = true;
        inner
            .client
            .complete_multipart_upload()
            .bucket(&inner.bucket)
            .key(&*self.full)
            .upload_id(&*self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| inner.map_err("CompleteMultipartUpload", Some(self.key.as_str()), e))?;
        Ok(())
    }

    /// Cancels the parts in flight and aborts the upload; returns `original`, whatever the abort
    /// did (a failed abort is logged, and the sweep catches the upload later).
    async fn fail(&mut self, original: StoreError) -> StoreError {
        self.in_flight.shutdown().await;
        let abort = self.inner.abort_upload(&self.full, &self.upload_id);
        // The client is waiting for its error; a hung backend must not hold it for long.
        let result = match tokio::time::timeout(ABORT_TIMEOUT, abort).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::unavailable(
                self.inner.store(),
                "AbortMultipartUpload: timed out",
            )),
        };
        if let Err(e) = result {
            self.inner.log_failed_abort(&self.full, &self.upload_id, &e);
        }
        self.armed = false;
        original
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut tasks = std::mem::take(&mut self.in_flight);
        let (inner, full, upload_id) = (
            Arc::clone(&self.inner),
            Arc::clone(&self.full),
            Arc::clone(&self.upload_id),
        );
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                store = %inner.name, key = &*full, upload_id = &*upload_id,
                "multipart upload cancelled outside a runtime; the sweep will remove it"
            );
            return;
        };
        tracing::debug!(store = %inner.name, key = &*full, "upload cancelled; aborting");
        runtime.spawn(async move {
            // Parts still uploading must not land after the abort.
            tasks.shutdown().await;
            if let Err(e) = inner.abort_upload(&full, &upload_id).await {
                inner.log_failed_abort(&full, &upload_id, &e);
            }
        });
    }
}

/// Turns the SDK's response body into our stream, ending after the first error.
fn body_stream(body: SdkByteStream) -> ByteStream {
    Box::pin(futures::stream::unfold(Some(body), |state| async move {
        let mut body = state?;
        match body.next().await? {
            Ok(chunk) => Some((Ok(chunk), Some(body))),
            Err(e) => Some((Err(io::Error::other(e)), None)),
        }
    }))
}

/// Yields bytes `range` of `body` (for servers that answer a ranged GET with the whole object).
fn slice_stream(body: ByteStream, range: Range<u64>) -> ByteStream {
    let mut pos = 0u64;
    Box::pin(
        body.map(move |chunk| {
            let chunk = chunk?;
            let (start, end) = (pos, pos + chunk.len() as u64);
            pos = end;
            let from = range.start.clamp(start, end) - start;
            let to = range.end.clamp(start, end) - start;
            Ok(chunk.slice(from as usize..to as usize))
        })
        .take_while({
            let mut seen = 0u64;
            let want = range.end - range.start;
            move |chunk| {
                let more = seen < want;
                if let Ok(c) = chunk {
                    seen += c.len() as u64;
                }
                futures::future::ready(more || chunk.is_err())
            }
        })
        .filter(|chunk| futures::future::ready(!matches!(chunk, Ok(c) if c.is_empty()))),
    )
}

/// Parses `bytes a-b/total` into (a..b+1, total).
fn parse_content_range(value: &str) -> Option<(Range<u64>, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let (a, b, total) = (
        a.parse::<u64>().ok()?,
        b.parse::<u64>().ok()?,
        total.parse().ok()?,
    );
    (a <= b).then_some((a..b + 1, total))
}

#[async_trait]
impl Store for S3Store {
    fn name(&self) -> &StoreName {
        &self.inner.name
    }

    fn kind(&self) -> &'static str {
        "s3"
    }

    fn describe(&self, key: &ObjectKey) -> String {
        format!("s3://{}/{}", self.inner.bucket, self.inner.full_key(key))
    }

    fn foreign_object(&self, uri: &str) -> Option<ForeignObject> {
        let (bucket, name) = uri.strip_prefix("s3://")?.split_once('/')?;
        let inner = &self.inner;
        // With no prefix the whole bucket is the gateway's: nothing in it is foreign.
        let foreign = bucket == inner.bucket
            && !inner.prefix.is_empty()
            && ForeignObject::is_plain_path(name)
            && !name.starts_with(&inner.prefix);
        foreign.then(|| ForeignObject {
            container: bucket.to_owned(),
            name: name.to_owned(),
        })
    }

    async fn head_foreign(&self, object: &ForeignObject) -> Result<u64, StoreError> {
        self.inner.head_len(&object.name, &object.name).await
    }

    async fn get_foreign(
        &self,
        object: &ForeignObject,
        range: Option<Range<u64>>,
    ) -> Result<GetObject, StoreError> {
        self.inner.get_at(&object.name, &object.name, range).await
    }

    fn endpoints(&self) -> Vec<String> {
        let label = &self.inner.endpoint_label;
        if label.starts_with("http://") || label.starts_with("https://") {
            vec![label.clone()]
        } else {
            vec![]
        }
    }

    #[tracing::instrument(skip(self, body), fields(store = %self.inner.name))]
    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        size_hint: Option<u64>,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let tuning = inner.tuning;
        if size_hint.is_some_and(|len| len > tuning.max_object_size) {
            tracing::warn!(size_hint, max = tuning.max_object_size, "object too large");
            return Err(StoreError::StorageFull {
                store: inner.store().to_owned(),
            });
        }
        let full = inner.full_key(key);
        let sizer = PartSizer::new(&tuning, size_hint);
        // Parts in flight, the one being read, and the one just handed over.
        let pool = BufferPool::new(tuning.max_in_flight + 2);
        let mut chunker = Chunker::with_pool(body, pool.clone());

        // Read until the threshold decides between one PutObject and a multipart upload.
        let (mut head, mut sent, mut ended) = (vec![], 0u64, false);
        while sent < tuning.threshold {
            let size = sizer.size_after(sent);
            match chunker.next_part(size).await {
                None => ended = true,
                Some(Err(e)) => return Err(StoreError::Body(e)),
                Some(Ok(part)) => {
                    ended = part.len() < size;
                    sent += part.len() as u64;
                    head.push(part);
                }
            }
            if ended {
                break;
            }
        }
        if sent < tuning.threshold {
            return inner.put_single(key, &full, concat(head)).await;
        }

        let created = inner
            .client
            .create_multipart_upload()
            .bucket(&inner.bucket)
            .key(&full)
            .content_type(CONTENT_TYPE)
            .send()
            .await
            .map_err(|e| inner.map_err("CreateMultipartUpload", Some(key.as_str()), e))?;
        let upload_id = created.upload_id().ok_or_else(|| {
            StoreError::other(inner.store(), "CreateMultipartUpload: no upload id")
        })?;
        let mut upload = Multipart {
            inner: Arc::clone(inner),
            key: key.clone(),
            full: full.into(),
            upload_id: upload_id.into(),
            in_flight: JoinSet::new(),
            pool,
            done: vec![],
            completing: false,
            armed: true,
        };
        let too_large = |sent: u64| {
            tracing::warn!(sent, "object exceeds the store's limits");
            StoreError::StorageFull {
                store: inner.store().to_owned(),
            }
        };

        let result = async {
            let max = tuning.max_in_flight;
            let mut number = 0i32;
            for part in head {
                upload.wait_for_capacity(max).await?;
                number += 1;
                upload.spawn_part(number, part);
            }
            while !ended {
                // Memory: `max` parts uploading plus the one being read.
                upload.wait_for_capacity(max).await?;
                let size = sizer.size_after(sent);
                match chunker.next_part(size).await {
                    None => break,
                    Some(Err(e)) => return Err(StoreError::Body(e)),
                    Some(Ok(part)) => {
                        if number as u64 >= MAX_PARTS || sent > tuning.max_object_size {
                            return Err(too_large(sent));
                        }
                        ended = part.len() < size;
                        sent += part.len() as u64;
                        number += 1;
                        upload.spawn_part(number, part);
                        upload.reap_finished()?;
                    }
                }
            }
            if sent > tuning.max_object_size {
                return Err(too_large(sent));
            }
            upload.complete().await
        }
        .await;

        match result {
            Ok(()) => {
                upload.armed = false;
                Ok(())
            }
            Err(e) => {
                let err = upload.fail(e).await;
                if upload.completing {
                    // Complete may have succeeded with its answer lost (the SDK's retry then
                    // gets NoSuchUpload): make sure no object survives a failed put. Keys are
                    // written once (image ids), so no older object is lost by this.
                    if let Err(e) = inner
                        .client
                        .delete_object()
                        .bucket(&inner.bucket)
                        .key(&*upload.full)
                        .send()
                        .await
                    {
                        let e = inner.map_err("DeleteObject", Some(key.as_str()), e);
                        tracing::warn!(
                            store = %inner.name, key = &*upload.full, error = %e,
                            "removing a possibly completed object failed"
                        );
                    }
                }
                Err(err)
            }
        }
    }

    #[tracing::instrument(skip(self), fields(store = %self.inner.name))]
    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<GetObject, StoreError> {
        let full = self.inner.full_key(key);
        self.inner.get_at(&full, key.as_str(), range).await
    }

    #[tracing::instrument(skip(self), fields(store = %self.inner.name))]
    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let inner = &self.inner;
        let full = inner.full_key(key);
        match inner
            .client
            .delete_object()
            .bucket(&inner.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| inner.map_err("DeleteObject", Some(key.as_str()), e))
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        // A crashed or cancelled upload of this key may have left a multipart upload behind.
        // The object is gone, which is what the caller asked: a leftover that cannot be listed
        // or aborted now (say, no ListMultipartUploads permission) is the sweep's to remove.
        match inner.list_uploads(&full).await {
            Ok(uploads) => {
                for (upload_key, upload_id, _) in uploads {
                    if upload_key == full {
                        if let Err(e) = inner.abort_upload(&full, &upload_id).await {
                            inner.log_failed_abort(&full, &upload_id, &e);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(
                store = %inner.name, key = %key, error = %e,
                "listing multipart uploads of a deleted object failed; the sweep will remove any"
            ),
        }
        Ok(())
    }

    #[tracing::instrument(skip(self), fields(store = %self.inner.name))]
    async fn health_check(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner
            .client
            .head_bucket()
            .bucket(&inner.bucket)
            .send()
            .await
            .map_err(|e| {
                let denied = e.raw_response().map(|r| r.status().as_u16()) == Some(403);
                match inner.map_err("HeadBucket", None, e) {
                    // A HEAD answer has no body to explain its 403.
                    StoreError::Forbidden { store, .. } if denied => StoreError::Forbidden {
                        store,
                        message: format!(
                            "HeadBucket: access to bucket {} denied: wrong credentials, or no \
                             permission on the bucket",
                            inner.bucket
                        ),
                    },
                    other => other,
                }
            })?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        let inner = &self.inner;
        let mut pages = inner
            .client
            .list_objects_v2()
            .bucket(&inner.bucket)
            .prefix(&inner.prefix)
            .into_paginator()
            .send();
        let mut out = vec![];
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| inner.map_err("ListObjectsV2", None, e))?;
            for object in page.contents() {
                let Some(key) = object
                    .key()
                    .and_then(|k| k.strip_prefix(inner.prefix.as_str()))
                    .and_then(ObjectKey::parse)
                else {
                    continue;
                };
                out.push(ObjectInfo {
                    key,
                    last_modified: object
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok()),
                });
            }
        }
        Ok(out)
    }

    #[tracing::instrument(skip(self), fields(store = %self.inner.name))]
    async fn sweep_incomplete(
        &self,
        older_than: Duration,
        in_progress: &BTreeSet<ObjectKey>,
    ) -> Result<SweepReport, StoreError> {
        let inner = &self.inner;
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut report = SweepReport::default();
        for (key, upload_id, initiated) in inner.list_uploads(&inner.prefix).await? {
            let ours = key
                .strip_prefix(inner.prefix.as_str())
                .and_then(ObjectKey::parse)
                .is_some_and(|k| !in_progress.contains(&k));
            // No initiation time: leave it, rather than abort an upload that may be live.
            if ours && initiated.is_some_and(|t| t <= cutoff) {
                inner.abort_upload(&key, &upload_id).await?;
                report.incomplete_removed += 1;
            }
        }
        Ok(report)
    }

    fn namespaces(&self) -> Vec<Namespace> {
        let inner = &self.inner;
        let backend = format!(
            "s3 {} bucket {}",
            inner.endpoint_label.trim_end_matches('/'),
            inner.bucket
        );
        vec![Namespace::new(backend, inner.prefix.clone())]
    }

    async fn read_marker(&self) -> Result<Option<Bytes>, StoreError> {
        let inner = &self.inner;
        let full = format!("{}{MARKER}", inner.prefix);
        let out = match inner
            .client
            .get_object()
            .bucket(&inner.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| inner.map_err("GetObject", Some(MARKER), e))
        {
            Ok(out) => out,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let body = out.body.collect().await.map_err(|e| {
            StoreError::unavailable(inner.store(), format!("GetObject {MARKER}: {e}"))
        })?;
        Ok(Some(body.into_bytes()))
    }

    async fn write_marker(&self, content: Bytes) -> Result<(), StoreError> {
        let inner = &self.inner;
        let full = format!("{}{MARKER}", inner.prefix);
        let md5 = content_md5(inner.store(), &content).await?;
        inner
            .client
            .put_object()
            .bucket(&inner.bucket)
            .key(&full)
            .content_type("application/json")
            .content_md5(md5)
            .body(SdkByteStream::from(content))
            .send()
            .await
            .map_err(|e| inner.map_err("PutObject", Some(MARKER), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuning(part: u64, max_object: u64) -> Tuning {
        Tuning {
            threshold: part,
            part_size: part,
            max_in_flight: 4,
            max_object_size: max_object,
            growth_divisor: growth_divisor(part, max_object).unwrap(),
        }
    }

    /// Sends `total` bytes through the sizer and returns the part count and largest part.
    fn simulate(sizer: &PartSizer, total: u64) -> (u64, u64) {
        let (mut sent, mut parts, mut largest) = (0u64, 0u64, 0u64);
        while sent < total {
            let size = (sizer.size_after(sent) as u64).min(total - sent);
            assert!(size >= MIN_PART_SIZE || sent + size == total);
            sent += size;
            parts += 1;
            largest = largest.max(size);
        }
        (parts, largest)
    }

    #[test]
    fn unknown_lengths_up_to_the_max_fit_in_10000_parts() {
        for (part, max) in [
            (5 * MIB, MAX_OBJECT_SIZE),
            (16 * MIB, 1024 * 1024 * MIB),
            (16 * MIB, MAX_OBJECT_SIZE),
            (5 * MIB, 10 * 1024 * MIB),
            (MAX_PART_SIZE, MAX_OBJECT_SIZE),
        ] {
            let sizer = PartSizer::new(&tuning(part, max), None);
            let (parts, largest) = simulate(&sizer, max);
            assert!(parts <= MAX_PARTS, "{parts} parts for {max} with {part}");
            assert!(largest <= MAX_PART_SIZE);
        }
    }

    #[test]
    fn small_unknown_lengths_keep_the_floor() {
        let sizer = PartSizer::new(&tuning(16 * MIB, 1024 * 1024 * MIB), None);
        // Up to several GiB, parts stay at the floor (memory stays small).
        assert_eq!(sizer.size_after(0) as u64, 16 * MIB);
        assert_eq!(sizer.size_after(8 * 1024 * MIB) as u64, 16 * MIB);
    }

    #[test]
    fn known_lengths_get_one_size_that_fits() {
        let t = tuning(16 * MIB, MAX_OBJECT_SIZE);
        let small = PartSizer::new(&t, Some(100 * MIB));
        assert_eq!(small.size_after(0) as u64, 16 * MIB);
        assert_eq!(small.size_after(64 * MIB) as u64, 16 * MIB);
        let big = 1024 * 1024 * MIB;
        let sizer = PartSizer::new(&t, Some(big));
        let (parts, largest) = simulate(&sizer, big);
        assert!(parts <= MAX_PARTS);
        assert_eq!(largest, round_up_mib(big.div_ceil(MAX_PARTS)));
        // A stream longer than declared falls back to growing parts.
        assert!(sizer.size_after(2 * big) as u64 > largest);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0..10, 100)));
        assert_eq!(parse_content_range("bytes 5-5/6"), Some((5..6, 6)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("bytes 9-0/100"), None);
    }

    #[tokio::test]
    async fn slicing_a_whole_body() {
        let data: Vec<u8> = (0..100u8).collect();
        for range in [0..100, 10..20, 0..1, 99..100, 7..93] {
            let body = crate::testing::body_from(data.clone(), 7);
            let got = crate::testing::read_all(slice_stream(body, range.clone()))
                .await
                .unwrap();
            assert_eq!(got, data[range.start as usize..range.end as usize]);
        }
    }

    fn config() -> S3StoreConfig {
        let mut c = S3StoreConfig::new("images");
        c.endpoint = Some("http://127.0.0.1:1".into());
        c.access_key_id = Some("AKIDSECRETID".into());
        c.secret_access_key = Some("very-secret-value".into());
        c.prefix = "glance/".into();
        c
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

    #[tokio::test]
    async fn config_is_validated() {
        let name = StoreName::parse("s3").unwrap();
        let mut cases: Vec<(S3StoreConfig, &str)> = vec![];
        let mut c = config();
        c.part_size = 4 * MIB;
        cases.push((c, "part_size"));
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
            Some("file-secret".to_owned())
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
            toml::from_str(include_str!("../../minio-fixtures/gateway.toml")).unwrap();
        let crate::StoreConfig::S3(s3) = &parsed.stores["s3"] else {
            panic!("stores.s3 is not an S3 store");
        };
        assert_eq!(s3.endpoint.as_deref(), Some("http://minio:9000"));
        assert_eq!(s3.bucket, "images");
        s3.validate(&StoreName::parse("s3").unwrap()).unwrap();
        assert_eq!(parsed.stores["file"].kind(), "file");
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
}
