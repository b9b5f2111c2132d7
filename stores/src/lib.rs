//! Image data stores behind one streaming trait.
//!
//! This crate owns how image bytes are kept (local files, S3 buckets, Swift containers). It knows
//! nothing of HTTP, of Glance metadata or of the registry: the gateway hands it a key and a stream
//! of bytes and gets them back. Hashing and byte counting happen once, above the stores, in
//! [`digest::put_digested`].

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub mod budget;
pub mod chunker;
pub mod config;
pub mod digest;
pub mod error;
pub mod file;
pub mod names;
pub mod ownership;
pub mod range;
pub mod s3;
pub mod secret;
pub mod swift;

#[cfg(any(test, feature = "testing"))]
pub mod test_backends;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config::{open_store, StoreConfig};
pub use digest::{
    put_digested, put_digested_with, Digests, HashAlgo, Hashing, Multihash, PutError, RunningMd5,
    Stored,
};
pub use error::StoreError;
pub use names::{ObjectKey, StoreName};
pub use ownership::Namespace;
pub use range::clip_range;
pub use secret::Secret;

/// A stream of body chunks. `Send + 'static` so it can cross tasks and reach hyper.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// What [`Store::get`] returns: the requested bytes and where they sit in the object.
pub struct GetObject {
    pub body: ByteStream,
    /// The byte range of the object that `body` yields (the whole object when no range was asked).
    pub range: Range<u64>,
    /// The length of the whole object.
    pub total_len: u64,
}

impl fmt::Debug for GetObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetObject")
            .field("range", &self.range)
            .field("total_len", &self.total_len)
            .finish_non_exhaustive()
    }
}

/// One object as [`Store::list`] reports it, for the orphan sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: ObjectKey,
    pub last_modified: Option<SystemTime>,
}

/// An object of a store's backend that the gateway does not manage — outside its prefix, root or
/// container — which an admin registered as an image's location. The gateway only reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ForeignObject {
    /// The bucket or container.
    pub container: String,
    /// The object's name inside it.
    pub name: String,
}

impl ForeignObject {
    /// A plain object path: `/`-separated segments of unreserved URL characters
    /// (`A-Z a-z 0-9 . _ ~ -`), none empty, `.` or `..` — so no encoding, query or dot segment
    /// can make it name anything but itself (least of all an object the gateway manages).
    pub fn is_plain_path(path: &str) -> bool {
        !path.is_empty()
            && path.len() <= 1024
            && path.split('/').all(|segment| {
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-')
                    })
            })
    }
}

/// What a sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Incomplete uploads (temp files, multipart uploads, segments) removed.
    pub incomplete_removed: usize,
}

/// How [`Store::put`] stores a body, beyond its key.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// The expected length, when the client declared it. Stores size their multipart parts or
    /// choose between one request and segments by it; the stream is the truth.
    pub size_hint: Option<u64>,
    /// The running MD5 of the body, when the caller computes one anyway ([`put_digested`] does):
    /// a store that checks its backend's checksum of the whole object reads it once the body has
    /// ended, instead of hashing every byte a second time.
    pub md5: Option<RunningMd5>,
}

impl PutOptions {
    /// Options with only a size hint.
    pub fn with_size_hint(size_hint: Option<u64>) -> Self {
        Self {
            size_hint,
            md5: None,
        }
    }
}

/// A place that keeps image bytes under keys.
///
/// Contract every implementation keeps (checked by the conformance suite, the `testing` module
/// under the feature of that name):
///
/// * **Atomic visibility.** An object becomes readable only once [`put`](Store::put) returns
///   `Ok`; until then a `get` of the key answers `NotFound` (or the previous object, never a
///   partial one).
/// * **A failed or cancelled `put` leaves nothing behind**: no object, no temp file, no pending
///   multipart upload, no segment. Cancellation (the future dropped mid-stream) is covered by
///   drop guards, since the HTTP layer drops the future when a client disconnects.
/// * **The body is consumed once, in order, never collected whole.** Memory is bounded by the
///   store's own buffers (part size × parts in flight for S3, one chunk for files).
/// * If the body yields an error, `put` fails with [`StoreError::Body`] carrying that error.
/// * `get` of a missing key answers [`StoreError::NotFound`]. With a range, `body` yields
///   exactly `range.end - range.start` bytes; a range that starts at or past the object's end, or
///   is empty, answers [`StoreError::RangeNotSatisfiable`]; an end past the object is clipped.
/// * `delete` is idempotent: a missing object is `Ok`. It also removes any partial upload
///   state left for the key (a crash mid-upload), so a restarted gateway can clean up by key.
/// * Nothing a store returns (errors, [`describe`](Store::describe)) contains a credential.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// The configured name (`[stores.<name>]`), which `x-image-meta-store` selects.
    fn name(&self) -> &StoreName;

    /// The kind of backend: `file`, `s3` or `swift`.
    fn kind(&self) -> &'static str;

    /// A credential-free URI for the object, such as `s3://bucket/prefix/key`.
    fn describe(&self, key: &ObjectKey) -> String;

    /// The backend's own HTTP endpoints (credential-free URLs). The gateway never fetches remote
    /// image sources from them, so a client cannot read the store around the gateway's rules.
    fn endpoints(&self) -> Vec<String> {
        vec![]
    }

    /// The store-wide cap on upload part buffers, for stores that have one (S3's
    /// `max_part_memory`), so the gateway can export what is held of it.
    fn part_memory(&self) -> Option<&budget::PartBudget> {
        None
    }

    /// Stores `body` under `key`, as [`PutOptions`] say.
    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        options: PutOptions,
    ) -> Result<(), StoreError>;

    /// The object `uri` names (`s3://bucket/key`, `swift://container/object`) when it lies in this
    /// store's backend but outside the namespace the store manages; `None` otherwise, including
    /// for every object of the gateway's own.
    fn foreign_object(&self, uri: &str) -> Option<ForeignObject> {
        let _ = uri;
        None
    }

    /// The length of a [`foreign_object`](Store::foreign_object).
    async fn head_foreign(&self, object: &ForeignObject) -> Result<u64, StoreError> {
        let _ = object;
        Err(only_own_objects(self.name()))
    }

    /// Streams a [`foreign_object`](Store::foreign_object), or a range of it, as [`get`](Store::get).
    async fn get_foreign(
        &self,
        object: &ForeignObject,
        range: Option<Range<u64>>,
    ) -> Result<GetObject, StoreError> {
        let _ = (object, range);
        Err(only_own_objects(self.name()))
    }

    /// Streams the object, or the byte range `range` of it.
    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<GetObject, StoreError>;

    /// Removes the object and any partial upload state for `key`.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError>;

    /// Checks that the backend is reachable and the credentials work.
    async fn health_check(&self) -> Result<(), StoreError>;

    /// Lists the complete objects this store manages (under its prefix / root).
    async fn list(&self) -> Result<Vec<ObjectInfo>, StoreError>;

    /// Removes incomplete uploads (temp files, multipart uploads, orphan segments) older than
    /// `older_than`, except those of the keys in `in_progress` (uploads still running).
    async fn sweep_incomplete(
        &self,
        older_than: Duration,
        in_progress: &BTreeSet<ObjectKey>,
    ) -> Result<SweepReport, StoreError>;

    /// Where this store keeps objects and upload leftovers, to refuse two stores that overlap.
    fn namespaces(&self) -> Vec<Namespace>;

    /// The ownership marker ([`ownership::MARKER`]) of the namespace; `None` when there is none.
    async fn read_marker(&self) -> Result<Option<Bytes>, StoreError>;

    /// Writes (or replaces) the ownership marker of the namespace.
    async fn write_marker(&self, content: Bytes) -> Result<(), StoreError>;
}

/// The configured stores by name.
#[derive(Debug, Clone, Default)]
pub struct Stores {
    by_name: std::collections::BTreeMap<StoreName, Arc<dyn Store>>,
}

impl Stores {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, store: Arc<dyn Store>) {
        self.by_name.insert(store.name().clone(), store);
    }

    /// Looks a store up by the name a client sent; unknown or malformed names give `None`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Store>> {
        StoreName::parse(name).and_then(|n| self.by_name.get(&n))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Store>> {
        self.by_name.values()
    }
}

/// What a store without foreign objects answers when asked for one.
fn only_own_objects(store: &StoreName) -> StoreError {
    StoreError::other(store.as_str(), "this store reads only objects it manages")
}
