//! The registry: image records, their memberships and the indexes that answer lists, behind one
//! engine trait ([`RegistryEngine`]). The gateway holds a [`Registry`] handle and never sees an
//! engine's storage; sled ([`SledRegistry`]) is the embedded engine. Everything above this module
//! (catalog, upload, listing, maintenance) works unchanged with any engine that passes the
//! conformance suite in `conformance` (feature `testing`). PostgreSQL ([`PostgresRegistry`]) is
//! the engine several gateway replicas share.

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod copy;
mod postgres_engine;
pub mod query;
mod sled_engine;

use std::any::Any;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Stream, TryStreamExt};

use crate::model::{ImageId, ImageRecord, ImageStatus, Membership};
pub use postgres_engine::{
    DatabaseUrl, PostgresRegistry, PostgresSettings, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_LEASE_SECONDS, DEFAULT_MAX_CONNECTIONS, DEFAULT_STATEMENT_TIMEOUT,
};
use query::{Filters, SortDir, SortKey};
pub use sled_engine::{SledRegistry, DEFAULT_CACHE_MB};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("image not found")]
    NotFound,
    #[error("an image with identifier {0} already exists")]
    Conflict(ImageId),
    #[error("the registry is in use by another process")]
    InUse,
    #[error("registry storage failed: {0}")]
    Storage(String),
    #[error("corrupt registry record: {0}")]
    Corrupt(String),
    /// The registry's database cannot be reached, or did not answer in time.
    #[error("the registry is unavailable: {0}")]
    Unavailable(String),
}

/// One image as the registry keeps it: the record and its memberships, which change together.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredImage {
    pub record: ImageRecord,
    #[serde(default)]
    pub members: Vec<Membership>,
}

impl StoredImage {
    pub fn membership(&self, member: &str) -> Option<&Membership> {
        self.members.iter().find(|m| m.member == member)
    }

    /// Bytes the image counts against its owner's quota in every engine's usage counter: its
    /// size once its data is in (uploads in flight are counted by the gateway).
    pub fn quota_bytes(&self) -> u64 {
        let counted = !matches!(
            self.record.status,
            ImageStatus::Killed
                | ImageStatus::Deleted
                | ImageStatus::PendingDelete
                | ImageStatus::Saving
        );
        if counted {
            self.record.size
        } else {
            0
        }
    }
}

/// Which images a list page is drawn from (visibility, decided by `access` and `listing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every image.
    Everything,
    /// Every image that is not public.
    NonPublic,
    /// Public images, plus the images `owner` owns or is a member of (when it has an identity).
    Tenant(Option<String>),
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub audience: Audience,
    pub filters: Filters,
    pub sort_key: SortKey,
    pub sort_dir: SortDir,
    /// The page starts right after this record's place in the order (the marker image, as it is
    /// now; it need not be in the list itself).
    pub after: Option<ImageRecord>,
    pub limit: u64,
}

/// A change refused by the closure given to [`RegistryEngine::update`], carrying the caller's
/// own error through the engine untouched.
pub struct Refusal(pub Box<dyn Any + Send>);

impl fmt::Debug for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Refusal")
    }
}

/// Why [`RegistryEngine::update`] wrote nothing.
#[derive(Debug)]
pub enum UpdateError {
    Registry(RegistryError),
    Refused(Refusal),
}

impl From<RegistryError> for UpdateError {
    fn from(e: RegistryError) -> Self {
        Self::Registry(e)
    }
}

/// A change to one image: applied to the image as it is at commit time; `Err` refuses it.
pub type Change = Box<dyn Fn(&mut StoredImage) -> Result<(), Refusal> + Send>;

/// Statuses with a small walkable index for the background jobs.
pub const WALKED_STATES: [ImageStatus; 2] = [ImageStatus::Saving, ImageStatus::PendingDelete];

/// Held while a cluster-wide chore runs (see [`RegistryEngine::chore_lock`]); dropping it lets
/// another process run the chore.
pub struct ChoreGuard(#[allow(dead_code)] Option<Box<dyn Any + Send + Sync>>);

impl ChoreGuard {
    /// A guard that holds nothing (an engine only one process uses).
    pub fn alone() -> Self {
        Self(None)
    }

    /// A guard that keeps `held` (a lock's connection, say) until it is dropped.
    pub fn holding(held: impl Any + Send + Sync) -> Self {
        Self(Some(Box::new(held)))
    }
}

impl fmt::Debug for ChoreGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChoreGuard")
    }
}

/// Images [`Registry::walk_state`] reads at a time.
pub(crate) const WALK_BATCH: usize = 256;

/// A place that keeps image records.
///
/// Contract every engine keeps (checked by `conformance::run`, feature `testing`):
///
/// * **Durable and atomic.** A call that returns `Ok` has reached stable storage. A change to an
///   image, its memberships, every index and every counter commits as one unit or not at all.
/// * **Ids are reserved forever.** [`insert_new`](Self::insert_new) answers
///   [`RegistryError::Conflict`] for an id ever stored, deleted images included (records are
///   never removed).
/// * **Compare-and-swap updates.** [`update`](Self::update) runs `change` on the image as it is
///   when the write commits; if another writer changed the image in between, `change` runs again
///   on the newer value (so it may run more than once and must not have side effects). Status
///   transitions are written as checks inside `change` (`queued → saving` only from `queued`),
///   which makes them compare-and-swap on the status. A refusal writes nothing and comes back as
///   [`UpdateError::Refused`]; a missing image is [`RegistryError::NotFound`].
/// * **Lists read about a page.** [`list_page`](Self::list_page) returns at most `limit` records
///   of the audience, in [`query::order`], strictly after `after`, that pass
///   [`Filters::matches`]. Images that are deleted, `pending_delete` or `killed` are left out
///   unless `changes_since` is set. Memory stays bounded by the page and a fixed walk window
///   whatever the registry's size; the work done follows the page (and the filters' selectivity),
///   not the number of images.
/// * [`shared_with`](Self::shared_with) returns the images with a membership naming `member`.
/// * [`usage`](Self::usage) is the total `size` of the owner's images that hold data (status not
///   `saving`, `killed`, `deleted` or `pending_delete`; uploads in flight are counted by the
///   gateway), read in constant time; `None` is images without an owner.
/// * [`status_counts`](Self::status_counts) counts every image ever stored, for every status
///   (zeros included, in declaration order), in constant time.
/// * [`in_state`](Self::in_state) walks the images in one of [`WALKED_STATES`] by id, after
///   `after`, at most `limit`, without touching other images.
/// * [`interrupted`](Self::interrupted) walks, like `in_state(Saving, ..)`, the `saving` images
///   whose upload no running process will finish: those of processes that are gone and, with
///   `include_own`, this process's own (at startup and shutdown). An engine only one process
///   opens at a time has no other writers: the default answers every `saving` image with
///   `include_own` and none without.
/// * [`chore_lock`](Self::chore_lock) lets one process at a time run a chore (the scrubber, a
///   sweep) over a registry several processes share; `None` means another process runs it now.
/// * Nothing blocks the async runtime: engines run blocking work on blocking threads.
#[async_trait]
pub trait RegistryEngine: Send + Sync + fmt::Debug + 'static {
    /// The engine's name, as the `[registry] kind` setting spells it.
    fn kind(&self) -> &'static str;

    /// This registry's id: made once when the registry is created, kept for its life.
    fn id(&self) -> &str;

    /// True when this process created the registry id (then it cannot tell orphans from data).
    fn is_new(&self) -> bool;

    async fn get(&self, id: &ImageId) -> Result<Option<StoredImage>, RegistryError>;

    /// Stores a new image without members.
    async fn insert_new(&self, record: ImageRecord) -> Result<ImageRecord, RegistryError>;

    async fn update(&self, id: &ImageId, change: Change) -> Result<StoredImage, UpdateError>;

    async fn list_page(&self, request: PageRequest) -> Result<Vec<ImageRecord>, RegistryError>;

    async fn shared_with(&self, member: &str) -> Result<Vec<StoredImage>, RegistryError>;

    async fn usage(&self, owner: Option<&str>) -> Result<u64, RegistryError>;

    async fn status_counts(&self) -> Result<Vec<(ImageStatus, u64)>, RegistryError>;

    /// Writes everything to stable storage (at shutdown; every change is durable already).
    async fn flush(&self) -> Result<(), RegistryError>;

    async fn in_state(
        &self,
        status: ImageStatus,
        after: Option<&ImageId>,
        limit: usize,
    ) -> Result<Vec<StoredImage>, RegistryError>;

    async fn interrupted(
        &self,
        include_own: bool,
        after: Option<&ImageId>,
        limit: usize,
    ) -> Result<Vec<StoredImage>, RegistryError> {
        if include_own {
            self.in_state(ImageStatus::Saving, after, limit).await
        } else {
            Ok(vec![])
        }
    }

    async fn chore_lock(&self, _chore: &'static str) -> Result<Option<ChoreGuard>, RegistryError> {
        Ok(Some(ChoreGuard::alone()))
    }
}

/// The registry settings (`[registry]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    pub kind: RegistryKind,
    pub path: PathBuf,
    /// sled's page cache, in MiB.
    pub cache_mb: u64,
    /// The database, with `kind = "postgres"`.
    pub postgres: Option<PostgresSettings>,
}

impl RegistrySettings {
    /// Where the registry is, for messages: sled's directory or the database's URL (which
    /// never holds a password).
    pub fn describe(&self) -> String {
        match (&self.kind, &self.postgres) {
            (RegistryKind::Postgres, Some(pg)) => format!("database {}", pg.url),
            _ => self.path.display().to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryKind {
    Sled,
    Postgres,
}

/// The handle the gateway holds: cheap to clone, one engine behind it.
#[derive(Clone, Debug)]
pub struct Registry {
    engine: Arc<dyn RegistryEngine>,
}

impl Registry {
    pub fn new(engine: Arc<dyn RegistryEngine>) -> Self {
        Self { engine }
    }

    /// Opens the configured engine (sled's blocking open runs on a blocking thread).
    pub async fn open_with(settings: &RegistrySettings) -> Result<Self, RegistryError> {
        match (settings.kind, &settings.postgres) {
            (RegistryKind::Sled, _) => {
                let (path, cache_mb) = (settings.path.clone(), settings.cache_mb);
                let engine =
                    tokio::task::spawn_blocking(move || SledRegistry::open(&path, cache_mb))
                        .await
                        .map_err(|e| {
                            RegistryError::Storage(format!("registry task failed: {e}"))
                        })??;
                Ok(Self::new(Arc::new(engine)))
            }
            (RegistryKind::Postgres, Some(pg)) => {
                Ok(Self::new(Arc::new(PostgresRegistry::open(pg).await?)))
            }
            (RegistryKind::Postgres, None) => Err(RegistryError::Storage(
                "kind = \"postgres\" needs `registry.url`".to_owned(),
            )),
        }
    }

    /// Opens (or creates, or upgrades) a sled registry under `path` with the default cache.
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        Ok(Self::new(Arc::new(SledRegistry::open(
            path,
            DEFAULT_CACHE_MB,
        )?)))
    }

    /// A sled registry that lives only as long as the value (tests).
    pub fn temporary() -> Result<Self, RegistryError> {
        Ok(Self::new(Arc::new(SledRegistry::temporary()?)))
    }

    pub fn engine(&self) -> &dyn RegistryEngine {
        &*self.engine
    }

    /// This registry's id: made once when the registry is created, kept for its life. The stores
    /// it writes to are marked with it, so another gateway never mistakes its objects for orphans.
    pub fn id(&self) -> &str {
        self.engine.id()
    }

    /// True when this process created the registry (then it cannot tell orphans from data).
    pub fn is_new(&self) -> bool {
        self.engine.is_new()
    }

    pub async fn get(&self, id: &ImageId) -> Result<Option<StoredImage>, RegistryError> {
        self.engine.get(id).await
    }

    /// Stores a new image; `Conflict` if its id was ever used.
    pub async fn insert_new(&self, record: ImageRecord) -> Result<ImageRecord, RegistryError> {
        self.engine.insert_new(record).await
    }

    /// Applies `change` atomically (see [`RegistryEngine::update`]); `change` may refuse with
    /// the caller's own error, in which case nothing is written.
    pub async fn update<E, F>(&self, id: &ImageId, change: F) -> Result<StoredImage, E>
    where
        E: From<RegistryError> + Send + 'static,
        F: Fn(&mut StoredImage) -> Result<(), E> + Send + 'static,
    {
        let change: Change = Box::new(move |s| change(s).map_err(|e| Refusal(Box::new(e))));
        match self.engine.update(id, change).await {
            Ok(stored) => Ok(stored),
            Err(UpdateError::Registry(e)) => Err(E::from(e)),
            Err(UpdateError::Refused(Refusal(any))) => match any.downcast::<E>() {
                Ok(e) => Err(*e),
                Err(_) => Err(E::from(RegistryError::Storage(
                    "a refused change lost its error".to_owned(),
                ))),
            },
        }
    }

    pub async fn list_page(&self, request: PageRequest) -> Result<Vec<ImageRecord>, RegistryError> {
        self.engine.list_page(request).await
    }

    /// The images with a membership naming `member`.
    pub async fn shared_with(&self, member: &str) -> Result<Vec<StoredImage>, RegistryError> {
        self.engine.shared_with(member).await
    }

    pub async fn usage(&self, owner: Option<&str>) -> Result<u64, RegistryError> {
        self.engine.usage(owner).await
    }

    /// Writes everything to disk (at shutdown; each change is flushed already).
    pub async fn flush(&self) -> Result<(), RegistryError> {
        self.engine.flush().await
    }

    pub async fn status_counts(&self) -> Result<Vec<(ImageStatus, u64)>, RegistryError> {
        self.engine.status_counts().await
    }

    pub async fn in_state(
        &self,
        status: ImageStatus,
        after: Option<&ImageId>,
        limit: usize,
    ) -> Result<Vec<StoredImage>, RegistryError> {
        self.engine.in_state(status, after, limit).await
    }

    /// Every image in `status`, read from the engine's state index a batch at a time, so a walk
    /// holds one batch however many images there are. Images may change state during the walk.
    pub fn walk_state(
        &self,
        status: ImageStatus,
    ) -> impl Stream<Item = Result<StoredImage, RegistryError>> + Send + '_ {
        futures::stream::try_unfold(Some(None::<ImageId>), move |cursor| async move {
            let Some(after) = cursor else {
                return Ok::<_, RegistryError>(None);
            };
            let batch = self.in_state(status, after.as_ref(), WALK_BATCH).await?;
            let next = match batch.last() {
                Some(last) if batch.len() == WALK_BATCH => Some(Some(last.record.id.clone())),
                _ => None,
            };
            let items = futures::stream::iter(batch.into_iter().map(Ok));
            Ok(Some((items, next)))
        })
        .try_flatten()
    }

    /// Every `saving` image whose upload no running process will finish (see
    /// [`RegistryEngine::interrupted`]), a batch at a time.
    pub fn walk_interrupted(
        &self,
        include_own: bool,
    ) -> impl Stream<Item = Result<StoredImage, RegistryError>> + Send + '_ {
        futures::stream::try_unfold(Some(None::<ImageId>), move |cursor| async move {
            let Some(after) = cursor else {
                return Ok::<_, RegistryError>(None);
            };
            let batch = self
                .engine
                .interrupted(include_own, after.as_ref(), WALK_BATCH)
                .await?;
            let next = match batch.last() {
                Some(last) if batch.len() == WALK_BATCH => Some(Some(last.record.id.clone())),
                _ => None,
            };
            let items = futures::stream::iter(batch.into_iter().map(Ok));
            Ok(Some((items, next)))
        })
        .try_flatten()
    }

    /// Lets one process at a time run `chore` over this registry: `None` while another runs it.
    pub async fn chore_lock(
        &self,
        chore: &'static str,
    ) -> Result<Option<ChoreGuard>, RegistryError> {
        self.engine.chore_lock(chore).await
    }

    /// Every image record ever stored, deleted ones included, by id, a page at a time: the
    /// caller holds one page however many images there are. For the sweep, admin operations,
    /// tests and offline tools; no image API request walks the whole registry.
    pub fn walk_records(
        &self,
    ) -> impl Stream<Item = Result<ImageRecord, RegistryError>> + Send + '_ {
        futures::stream::try_unfold(Some(None::<ImageRecord>), move |cursor| async move {
            let Some(after) = cursor else {
                return Ok::<_, RegistryError>(None);
            };
            let page = self
                .list_page(PageRequest {
                    audience: Audience::Everything,
                    // Deleted and killed images are listed only with `changes_since`.
                    filters: Filters {
                        changes_since: Some(crate::model::Timestamp::from_datetime(
                            time::macros::datetime!(1000-01-01 0:00 UTC),
                        )),
                        ..Filters::default()
                    },
                    sort_key: SortKey::Id,
                    sort_dir: SortDir::Asc,
                    after,
                    limit: WALK_BATCH as u64,
                })
                .await?;
            let next = match page.last() {
                Some(last) if page.len() == WALK_BATCH => Some(Some(last.clone())),
                _ => None,
            };
            Ok(Some((
                futures::stream::iter(page.into_iter().map(Ok)),
                next,
            )))
        })
        .try_flatten()
    }

    /// Every image ever stored with its memberships, in memory at once: tests and small tools.
    pub async fn all(&self) -> Result<Vec<StoredImage>, RegistryError> {
        let mut out = vec![];
        let mut records = std::pin::pin!(self.walk_records());
        while let Some(record) = records.try_next().await? {
            if let Some(stored) = self.get(&record.id).await? {
                out.push(stored);
            }
        }
        Ok(out)
    }
}
