//! The S3 store: objects in one bucket under an optional key prefix, written with one PutObject or
//! a multipart upload with a bounded number of parts in flight, which is aborted on any failure,
//! cancellation included. It uses only what strict S3-compatible servers accept: request
//! checksums only when required (by default), one checksum the server verifies on every upload
//! (`part_checksum`: CRC32C where the server checks it, else Content-MD5), and part number + ETag
//! (+ the part's CRC32C when the server recorded one) at Complete. It never hashes whole images;
//! that happens above the stores.

mod checksum;
mod config;
mod download;
mod error;
mod multipart;
mod ownership;
mod parts;
mod sweep;

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use bytes::Bytes;

pub use config::{PartChecksum, RequestChecksum, S3StoreConfig};

use crate::budget::PartBudget;
use crate::{
    ByteStream, ForeignObject, GetObject, Namespace, ObjectInfo, ObjectKey, PutOptions, Store,
    StoreError, StoreName, SweepReport,
};
use checksum::PartGuard;
use config::Tuning;

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
    /// Every URL that reaches the bucket (see [`own_endpoints`]).
    endpoints: Vec<String>,
    tuning: Tuning,
    /// Shared by every upload to this store: `max_part_memory`.
    part_memory: PartBudget,
    part_checksum: PartChecksum,
    /// What the probe found, for `part_checksum = "auto"`.
    probed: tokio::sync::OnceCell<PartGuard>,
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

/// The URLs that reach the bucket: the endpoint path-style and virtual-hosted
/// (`<bucket>.<host>`); for AWS, the global, regional, legacy dash-regional and dual-stack hosts
/// in both styles, over http and https.
fn own_endpoints(config: &S3StoreConfig) -> Vec<String> {
    let bucket = &config.bucket;
    if let Some(endpoint) = &config.endpoint {
        let Ok(url) = reqwest::Url::parse(endpoint) else {
            return vec![endpoint.clone()];
        };
        let mut urls = vec![endpoint.clone()];
        if let Some(host) = url.host_str() {
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            urls.push(format!("{}://{bucket}.{host}{port}", url.scheme()));
        }
        return urls;
    }
    let region = config.region.as_deref().unwrap_or("us-east-1");
    let hosts = [
        "s3.amazonaws.com".to_owned(),
        format!("s3.{region}.amazonaws.com"),
        format!("s3-{region}.amazonaws.com"),
        format!("s3.dualstack.{region}.amazonaws.com"),
    ];
    let mut urls = vec![];
    for host in &hosts {
        for scheme in ["https", "http"] {
            urls.push(format!("{scheme}://{host}"));
            urls.push(format!("{scheme}://{bucket}.{host}"));
        }
    }
    urls
}

impl S3Store {
    /// Builds the client. Contacts nothing (credentials from the AWS chain resolve on first
    /// use); call [`Store::health_check`] to see the bucket.
    pub async fn open(name: StoreName, config: &S3StoreConfig) -> Result<Self, StoreError> {
        let tuning = config.validate(&name)?;
        let client = config.client(&name).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                name,
                client,
                bucket: config.bucket.clone(),
                prefix: config.prefix.clone(),
                endpoint_label: config
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| "AWS S3".to_owned()),
                endpoints: own_endpoints(config),
                part_memory: PartBudget::new(tuning.max_part_memory),
                tuning,
                part_checksum: config.part_checksum,
                probed: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// The key in the bucket for an object key.
    pub fn bucket_key(&self, key: &ObjectKey) -> String {
        self.inner.full_key(key)
    }

    /// The store's `max_part_memory` budget, shared by its uploads.
    pub fn part_memory(&self) -> &PartBudget {
        &self.inner.part_memory
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
        self.inner.endpoints.clone()
    }

    fn part_memory(&self) -> Option<&PartBudget> {
        Some(&self.inner.part_memory)
    }

    #[tracing::instrument(skip(self, body), fields(store = %self.inner.name))]
    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        options: PutOptions,
    ) -> Result<(), StoreError> {
        self.inner.put(key, body, options.size_hint).await
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
        self.inner.delete(key).await
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
        self.inner.list().await
    }

    #[tracing::instrument(skip(self), fields(store = %self.inner.name))]
    async fn sweep_incomplete(
        &self,
        older_than: Duration,
        in_progress: &BTreeSet<ObjectKey>,
    ) -> Result<SweepReport, StoreError> {
        self.inner.sweep_incomplete(older_than, in_progress).await
    }

    fn namespaces(&self) -> Vec<Namespace> {
        vec![self.inner.namespace()]
    }

    async fn read_marker(&self) -> Result<Option<Bytes>, StoreError> {
        self.inner.read_marker().await
    }

    async fn write_marker(&self, content: Bytes) -> Result<(), StoreError> {
        self.inner.write_marker(content).await
    }
}
