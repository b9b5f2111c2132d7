//! The Swift store: objects in one container through the Swift v1 API; large ones as segments in a
//! second container plus a Static Large Object manifest (a Dynamic one where the cluster has no
//! SLO). It owns auth (v1 tokens, renewed on 401), segmenting and cleanup, and never hashes the
//! image for the gateway: the only MD5 here is per object or segment, to check Swift's ETag. A
//! plain object written through [`crate::put_digested`] is not even hashed here: its ETag is
//! checked against the caller's running MD5 of the body, which covers exactly the same bytes.
//!
//! How `put` chooses its shape:
//!
//! * `size_hint` below `large_object_size`: one PUT of the stream (chunked transfer) to
//!   `<container>/<key>`.
//! * `size_hint` at or above it, **or no hint at all**: segments of exactly `segment_size` bytes
//!   streamed one after another to `<segment_container>/<key>/.upload-<run>/<n:08>`, then a
//!   manifest at `<container>/<key>`. A plain PUT cannot become segmented once bytes have gone out
//!   (that would need the whole object buffered, or a server-side copy of it), so a stream of
//!   unknown length is always segmented; one that ends inside its first segment becomes a
//!   one-segment manifest. Only an empty stream is stored as a plain (empty) object.
//!
//! Each segment is split off the body at its exact offset and streamed as it arrives; nothing is
//! buffered beyond the chunk in hand. `<run>` is a fresh id per upload, so racing uploads of one
//! key never share segments, and the sweep can tell a finished run (its manifest names it) from
//! an abandoned one. Keys never have a component starting with `.`, so `<key>/.upload-` is a

mod auth;
mod client;
mod config;
mod download;
mod feed;
mod guard;
mod sweep;
mod upload;

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::OnceCell;

pub use config::SwiftStoreConfig;

use crate::{
    ByteStream, ForeignObject, GetObject, ObjectInfo, ObjectKey, PutOptions, Store, StoreError,
    StoreName, SweepReport,
};
use auth::{token_header, Credentials, Session};
use config::config_err;
use upload::ManifestKind;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Swift's default `max_file_size` (5 GiB + 2 bytes), rounded down: the most one PUT may carry.
const MAX_SINGLE_OBJECT: u64 = 5 * GIB;
/// Between a key and its upload run in segment names.
const SEGMENT_MARK: &str = "/.upload-";

/// The Swift store. Cheap to share: all state sits behind one `Arc`, which cleanup tasks of
/// cancelled uploads hold on to.
pub struct SwiftStore {
    inner: Arc<Inner>,
}

struct Inner {
    name: StoreName,
    client: reqwest::Client,
    credentials: Option<Credentials>,
    storage_url_override: Option<String>,
    token_file: Option<PathBuf>,
    container: String,
    segment_container: String,
    create_container: bool,
    large_object_size: u64,
    segment_size: u64,
    request_timeout: Duration,
    read_timeout: Duration,
    epoch: Instant,
    session: Mutex<Option<Arc<Session>>>,
    /// Serialises renewals so a burst of 401s authenticates once.
    auth_lock: tokio::sync::Mutex<()>,
    generations: AtomicU64,
    containers_ready: OnceCell<()>,
    manifest_kind: OnceCell<ManifestKind>,
}

impl fmt::Debug for SwiftStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("SwiftStore")
            .field("name", &i.name)
            .field("container", &i.container)
            .field("segment_container", &i.segment_container)
            .field("user", &i.credentials.as_ref().map(|c| &c.user))
            .field("large_object_size", &i.large_object_size)
            .field("segment_size", &i.segment_size)
            .finish_non_exhaustive()
    }
}

impl SwiftStore {
    /// Validates the configuration and reads key or token files. Does not contact Swift.
    pub async fn open(name: StoreName, config: &SwiftStoreConfig) -> Result<Self, StoreError> {
        let c = config;
        let checked = c.check(&name).await?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(c.connect_timeout_secs))
            .build()
            .map_err(|e| config_err(&name, format!("HTTP client: {e}")))?;

        let inner = Inner {
            name: name.clone(),
            client,
            credentials: checked.credentials,
            storage_url_override: c.storage_url.clone(),
            token_file: c.token_file.clone(),
            container: c.container.clone(),
            segment_container: checked.segment_container,
            create_container: c.create_container,
            large_object_size: c.large_object_size,
            segment_size: c.segment_size,
            request_timeout: Duration::from_secs(c.request_timeout_secs),
            read_timeout: Duration::from_secs(c.read_timeout_secs),
            epoch: Instant::now(),
            session: Mutex::new(None),
            auth_lock: tokio::sync::Mutex::new(()),
            generations: AtomicU64::new(0),
            containers_ready: OnceCell::new(),
            manifest_kind: OnceCell::new(),
        };
        if let (Some(url), Some(token)) = (&c.storage_url, checked.token) {
            let token = token_header(token.expose())
                .ok_or_else(|| config_err(&name, "the token is not a valid header value"))?;
            let session = inner.new_session(url.clone(), token, None, false);
            *inner.session.lock().expect("session lock") = Some(session);
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    pub fn container(&self) -> &str {
        &self.inner.container
    }

    pub fn segment_container(&self) -> &str {
        &self.inner.segment_container
    }

    /// Uses Dynamic Large Object manifests whatever the cluster offers, so tests can cover the
    /// fallback on a cluster that has SLO. Call before the first upload.
    #[cfg(any(test, feature = "testing"))]
    pub fn force_dynamic_manifests(&self) {
        let _ = self.inner.manifest_kind.set(ManifestKind::Dynamic);
    }

    /// Treats the current token as just confirmed, so the next streamed PUT skips its check and
    /// meets a refused token mid-stream. For tests of that path.
    #[cfg(any(test, feature = "testing"))]
    pub fn trust_current_token(&self) {
        if let Some(session) = self.inner.current_session() {
            self.inner.confirm(&session);
        }
    }
}

#[async_trait]
impl Store for SwiftStore {
    fn name(&self) -> &StoreName {
        &self.inner.name
    }

    fn kind(&self) -> &'static str {
        "swift"
    }

    fn describe(&self, key: &ObjectKey) -> String {
        format!("swift://{}/{key}", self.inner.container)
    }

    fn endpoints(&self) -> Vec<String> {
        let inner = &self.inner;
        let session = inner
            .session
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.storage_url.clone()));
        inner
            .credentials
            .iter()
            .map(|c| c.auth_url.clone())
            .chain(inner.storage_url_override.clone())
            .chain(session)
            .collect()
    }

    #[tracing::instrument(skip(self, body), fields(store = %self.inner.name))]
    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        options: PutOptions,
    ) -> Result<(), StoreError> {
        self.inner.put(key, body, options).await
    }

    #[tracing::instrument(skip(self), fields(store = %self.inner.name))]
    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<GetObject, StoreError> {
        self.inner
            .get_at(&self.inner.container, key.as_str(), range)
            .await
    }

    fn foreign_object(&self, uri: &str) -> Option<ForeignObject> {
        let (container, name) = uri.strip_prefix("swift://")?.split_once('/')?;
        let inner = &self.inner;
        // The gateway's container and segment container are its own, whole.
        let foreign = !container.contains('/')
            && ForeignObject::is_plain_path(container)
            && container != inner.container
            && container != inner.segment_container
            && ForeignObject::is_plain_path(name);
        foreign.then(|| ForeignObject {
            container: container.to_owned(),
            name: name.to_owned(),
        })
    }

    async fn head_foreign(&self, object: &ForeignObject) -> Result<u64, StoreError> {
        let ForeignObject { container, name } = object;
        self.inner.head_len_at(container, name).await
    }

    async fn get_foreign(
        &self,
        object: &ForeignObject,
        range: Option<Range<u64>>,
    ) -> Result<GetObject, StoreError> {
        let ForeignObject { container, name } = object;
        self.inner.get_at(container, name, range).await
    }

    #[tracing::instrument(skip(self), fields(store = %self.inner.name))]
    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }

    async fn health_check(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        for container in [&inner.container, &inner.segment_container] {
            inner
                .check_container(container, inner.create_container)
                .await?;
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner.list().await
    }

    /// Removes the segments of upload runs whose newest segment is older than `older_than` and
    /// that no manifest names. `older_than` must exceed the time one segment takes to upload,
    /// since a segment in flight is not listed yet.
    async fn sweep_incomplete(&self, older_than: Duration) -> Result<SweepReport, StoreError> {
        self.inner.sweep_incomplete(older_than).await
    }
}
