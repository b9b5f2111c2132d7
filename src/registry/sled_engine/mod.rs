//! The embedded engine: sled trees under `<path>/v1`.
//!
//! * `images`: id → the JSON of a [`StoredImage`] (unchanged since schema 1).
//! * `member_images`: `member 0x00 id` → empty (`shared_with`).
//! * `idx`: the list indexes (layout in [`keys`]), one entry per sort key and scope of each image.
//! * `counters`: images per status, bytes per owner (u64, big-endian).
//! * `in_state`: `status 0x00 id` for images `saving` or `pending_delete`.
//! * `meta`: `schema_version`, `registry_id`.
//!
//! Every change to an image rewrites the entries that differ in one transaction over all trees,
//! and is answered once a flush that began after it committed is done. Writes run on one thread
//! that flushes once per batch ([`writer`]), lookups on a few reader threads ([`readers`]), walks
//! on the blocking pool: no sled call runs on the async threads.

mod keys;
mod readers;
mod upgrade;
mod writer;

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use async_trait::async_trait;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::{Transactional, Tree};

use super::query::{order, Filters, SortDir, SortKey};
use super::{
    Audience, Change, PageRequest, RegistryEngine, RegistryError, StoredImage, UpdateError,
    WALKED_STATES,
};
use crate::model::{ImageId, ImageRecord, ImageStatus};
use keys::{Scope, GONE, LIVE};

pub const DEFAULT_CACHE_MB: u64 = 64;
/// The most `changes-since` matches sorted in memory (see `recent_changes`).
const CHANGES_WINDOW: usize = 2000;
const SCHEMA_VERSION: &[u8] = b"2";
/// Threads serving lookups (see [`readers`]): one per core. A lookup is CPU work once its page
/// is in sled's cache, so more threads only contend for the cores; fewer serialise the lookups
/// that miss the cache.
fn read_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

impl From<sled::Error> for RegistryError {
    fn from(e: sled::Error) -> Self {
        match e {
            // sled locks its files exclusively and reports a held lock only in this message:
            // another process (a running gateway) has the registry open.
            sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock") => {
                Self::InUse
            }
            e => Self::Storage(e.to_string()),
        }
    }
}

fn encode(image: &StoredImage) -> Result<Vec<u8>, RegistryError> {
    serde_json::to_vec(image).map_err(|e| RegistryError::Corrupt(e.to_string()))
}

fn decode(bytes: &[u8]) -> Result<StoredImage, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Corrupt(e.to_string()))
}

struct Trees {
    db: sled::Db,
    /// This registry's id, which store ownership markers name.
    id: String,
    /// Whether this process created the id (it knows no image of any store yet).
    created_now: bool,
    images: Tree,
    member_images: Tree,
    idx: Tree,
    counters: Tree,
    in_state: Tree,
    /// Records decoded by list pages, for the tests that bound a page's work.
    decoded: AtomicU64,
    /// `CHANGES_WINDOW`, smaller in tests so both ways of answering are exercised.
    changes_window: usize,
    readers: readers::Readers,
    writer: writer::Writer,
    /// Makes the trees durable: the writer's flush.
    flush: writer::Flush,
}

#[derive(Clone)]
pub struct SledRegistry {
    trees: Arc<Trees>,
}

impl std::fmt::Debug for SledRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SledRegistry")
    }
}

impl SledRegistry {
    /// Opens (or creates) the registry under `path`, upgrading an older schema in place.
    /// Blocking.
    pub fn open(path: &Path, cache_mb: u64) -> Result<Self, RegistryError> {
        let config = sled::Config::new()
            .path(path.join("v1"))
            .cache_capacity(cache_mb.saturating_mul(1 << 20));
        // sled lets go of its file lock only once its own I/O threads have, which can trail the
        // drop of a registry this process just closed by a few milliseconds: a lock still held
        // after a second is another process's.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            match config.open().map_err(RegistryError::from) {
                Err(RegistryError::InUse) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                opened => return Self::from_db(opened?),
            }
        }
    }

    /// A registry that lives only as long as the value (tests).
    pub fn temporary() -> Result<Self, RegistryError> {
        Self::from_db(sled::Config::new().temporary(true).open()?)
    }

    fn from_db(db: sled::Db) -> Result<Self, RegistryError> {
        let meta = db.open_tree("meta")?;
        let (id, created_now) = match meta.get("registry_id")? {
            Some(id) => (String::from_utf8_lossy(&id).into_owned(), false),
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                meta.insert("registry_id", id.as_bytes())?;
                (id, true)
            }
        };
        let flush: writer::Flush = {
            let db = db.clone();
            Arc::new(move || db.flush().map(drop).map_err(RegistryError::from))
        };
        let trees = Trees {
            id,
            created_now,
            images: db.open_tree("images")?,
            member_images: db.open_tree("member_images")?,
            idx: db.open_tree("idx")?,
            counters: db.open_tree("counters")?,
            in_state: db.open_tree("in_state")?,
            db,
            decoded: AtomicU64::new(0),
            changes_window: CHANGES_WINDOW,
            writer: writer::Writer::start().map_err(|e| {
                RegistryError::Storage(format!("cannot start the registry's writer: {e}"))
            })?,
            flush,
            readers: readers::Readers::start(read_threads()).map_err(|e| {
                RegistryError::Storage(format!("cannot start the registry's readers: {e}"))
            })?,
        };
        match meta.get("schema_version")? {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)?;
            }
            Some(v) if v.as_ref() == SCHEMA_VERSION => {}
            Some(v) if v.as_ref() == b"1" => {
                upgrade::from_v1(&trees)?;
                meta.insert("schema_version", SCHEMA_VERSION)?;
            }
            Some(v) => {
                return Err(RegistryError::Corrupt(format!(
                    "unsupported schema version {}",
                    String::from_utf8_lossy(&v)
                )))
            }
        }
        trees.db.flush()?;
        Ok(Self {
            trees: Arc::new(trees),
        })
    }

    /// A temporary registry that sorts at most `window` `changes-since` matches in memory.
    #[cfg(test)]
    fn temporary_with_window(window: usize) -> Result<Self, RegistryError> {
        let mut reg = Self::temporary()?;
        Arc::get_mut(&mut reg.trees)
            .expect("not shared yet")
            .changes_window = window;
        Ok(reg)
    }

    /// How many records list pages have decoded so far.
    pub fn records_decoded(&self) -> u64 {
        self.trees.decoded.load(AtomicOrdering::Relaxed)
    }

    /// Runs a write on the writer; answers once it is durable.
    async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<RegistryError> + Send + 'static,
        F: FnOnce(&Trees) -> Result<T, E> + Send + 'static,
    {
        let trees = Arc::clone(&self.trees);
        self.trees
            .writer
            .run(&self.trees.flush, move || f(&trees))
            .await
            .unwrap_or_else(|| Err(RegistryError::Storage("registry write failed".into()).into()))
    }

    /// Runs a walk (a list page, the images shared with a member, a state's images) on the
    /// blocking pool. A walk may read many records (a filter that matches nothing walks the
    /// whole registry), so walks stay off the readers: two of them could otherwise hold up every
    /// lookup behind them.
    async fn scan<T, F>(&self, f: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&Trees) -> Result<T, RegistryError> + Send + 'static,
    {
        let trees = Arc::clone(&self.trees);
        tokio::task::spawn_blocking(move || f(&trees))
            .await
            .map_err(|e| RegistryError::Storage(format!("registry scan failed: {e}")))?
    }

    /// Runs a lookup of a few keys on the engine's readers.
    async fn read<T, F>(&self, f: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&Trees) -> Result<T, RegistryError> + Send + 'static,
    {
        let trees = Arc::clone(&self.trees);
        self.trees
            .readers
            .run(move || f(&trees))
            .await
            .unwrap_or_else(|| Err(RegistryError::Storage("registry read failed".into())))
    }
}

type TxResult<T> = Result<T, UnabortableTransactionError>;

fn add_counter(tree: &TransactionalTree, key: &[u8], delta: i128) -> TxResult<()> {
    if delta == 0 {
        return Ok(());
    }
    let now = tree
        .get(key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes);
    let next = (now as i128 + delta).clamp(0, u64::MAX as i128) as u64;
    tree.insert(key, &next.to_be_bytes())?;
    Ok(())
}

fn state_keys(s: Option<&StoredImage>) -> BTreeSet<Vec<u8>> {
    s.filter(|s| WALKED_STATES.contains(&s.record.status))
        .map(|s| keys::state_key(s.record.status, &s.record.id))
        .into_iter()
        .collect()
}

fn member_keys(s: Option<&StoredImage>) -> BTreeSet<Vec<u8>> {
    s.map(|s| {
        s.members
            .iter()
            .map(|m| keys::member_image(&m.member, &s.record.id))
            .collect()
    })
    .unwrap_or_default()
}

fn apply_set_diff(
    tree: &TransactionalTree,
    before: &BTreeSet<Vec<u8>>,
    after: &BTreeSet<Vec<u8>>,
) -> TxResult<()> {
    for k in before.difference(after) {
        tree.remove(k.as_slice())?;
    }
    for k in after.difference(before) {
        tree.insert(k.as_slice(), &[])?;
    }
    Ok(())
}

/// Brings every index and counter from `before` (absent for a new image) to `after`.
fn reindex(
    t: &(
        TransactionalTree,
        TransactionalTree,
        TransactionalTree,
        TransactionalTree,
        TransactionalTree,
    ),
    before: Option<&StoredImage>,
    after: &StoredImage,
) -> TxResult<()> {
    let (_, members, idx, counters, in_state) = t;
    let empty = BTreeSet::new;
    apply_set_diff(
        idx,
        &before.map(keys::index_keys).unwrap_or_else(empty),
        &keys::index_keys(after),
    )?;
    apply_set_diff(members, &member_keys(before), &member_keys(Some(after)))?;
    apply_set_diff(in_state, &state_keys(before), &state_keys(Some(after)))?;
    let status_before = before.map(|b| b.record.status);
    if status_before != Some(after.record.status) {
        if let Some(s) = status_before {
            add_counter(counters, &keys::status_count(s), -1)?;
        }
        add_counter(counters, &keys::status_count(after.record.status), 1)?;
    }
    let owner_after = after.record.owner.as_deref();
    match before {
        Some(b) if b.record.owner.as_deref() == owner_after => {
            let delta = after.quota_bytes() as i128 - b.quota_bytes() as i128;
            add_counter(counters, &keys::usage(owner_after), delta)?;
        }
        _ => {
            if let Some(b) = before {
                add_counter(
                    counters,
                    &keys::usage(b.record.owner.as_deref()),
                    -(b.quota_bytes() as i128),
                )?;
            }
            add_counter(
                counters,
                &keys::usage(owner_after),
                after.quota_bytes() as i128,
            )?;
        }
    }
    Ok(())
}

impl Trees {
    fn all_trees(&self) -> (&Tree, &Tree, &Tree, &Tree, &Tree) {
        (
            &self.images,
            &self.member_images,
            &self.idx,
            &self.counters,
            &self.in_state,
        )
    }

    fn record(&self, id: &[u8]) -> Result<Option<StoredImage>, RegistryError> {
        self.images.get(id)?.map(|b| decode(&b)).transpose()
    }

    fn read_counter(&self, key: &[u8]) -> Result<u64, RegistryError> {
        Ok(self
            .counters
            .get(key)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn list_page(&self, req: &PageRequest) -> Result<Vec<ImageRecord>, RegistryError> {
        let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
        if limit == 0 {
            return Ok(vec![]);
        }
        if req.filters.changes_since.is_some() && req.sort_key != SortKey::UpdatedAt {
            if let Some(page) = self.recent_changes(req, limit)? {
                return Ok(page);
            }
        }
        self.walk(req, limit)
    }

    /// `changes-since` in another order: the matches are read from the updated_at index (which
    /// starts at the given time) and sorted here, when there are at most `changes_window` of
    /// them; otherwise `None`, and the sort index is walked instead.
    fn recent_changes(
        &self,
        req: &PageRequest,
        limit: usize,
    ) -> Result<Option<Vec<ImageRecord>>, RegistryError> {
        let newest = PageRequest {
            sort_key: SortKey::UpdatedAt,
            sort_dir: SortDir::Desc,
            after: None,
            limit: self.changes_window as u64 + 1,
            ..req.clone()
        };
        let only_changes_since = Filters {
            changes_since: None,
            ..req.filters.clone()
        } == Filters::default();
        // Then every image the walk visits matches: counting index keys tells whether the window
        // holds them all without decoding a record (a walk of the whole registry, as the sweep's,
        // would otherwise decode a window's worth of records for every page).
        if only_changes_since
            && self.count_visited(&newest, self.changes_window + 1)? > self.changes_window
        {
            return Ok(None);
        }
        let mut found = self.walk(&newest, self.changes_window + 1)?;
        if found.len() > self.changes_window {
            return Ok(None);
        }
        found.sort_by(|a, b| order(a, b, req.sort_key, req.sort_dir));
        let start = match &req.after {
            Some(m) => found.partition_point(|r| {
                order(r, m, req.sort_key, req.sort_dir) != std::cmp::Ordering::Greater
            }),
            None => 0,
        };
        found.truncate(start.saturating_add(limit).min(found.len()));
        Ok(Some(found.split_off(start)))
    }

    /// Walks the indexes in the page's order, merging its scopes, until `limit` matches.
    fn walk(&self, req: &PageRequest, limit: usize) -> Result<Vec<ImageRecord>, RegistryError> {
        let mut entries = self.entries(req)?;
        let mut page = Vec::with_capacity(limit.min(256));
        while let Some(suffix) = entries.next_image()? {
            let Some(stored) = self.record(keys::id_of(&suffix))? else {
                continue;
            };
            self.decoded.fetch_add(1, AtomicOrdering::Relaxed);
            if req.filters.matches(&stored.record) {
                page.push(stored.record);
                if page.len() >= limit {
                    break;
                }
            }
        }
        Ok(page)
    }

    /// Counts the images a walk would visit, up to `cap`, reading index keys only.
    fn count_visited(&self, req: &PageRequest, cap: usize) -> Result<usize, RegistryError> {
        let mut entries = self.entries(req)?;
        let mut n = 0;
        while n < cap && entries.next_image()?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    /// The index entries a page walks, its scopes merged in the page's order.
    fn entries(&self, req: &PageRequest) -> Result<Entries<'_>, RegistryError> {
        let f = &req.filters;
        let classes: &[u8] = if f.changes_since.is_some() {
            &[LIVE, GONE]
        } else {
            &[LIVE]
        };
        let scopes: Vec<Scope<'_>> = match &req.audience {
            Audience::Everything => vec![Scope::Public, Scope::Private],
            Audience::NonPublic => vec![Scope::Private],
            Audience::Tenant(None) => vec![Scope::Public],
            Audience::Tenant(Some(o)) => {
                vec![Scope::Public, Scope::Owner(o), Scope::Member(o)]
            }
        };
        // In created_at order, an equality filter on a string key narrows the walk to that
        // value's stretch of its own index, whose order within one value is (created_at, id):
        // the same as the created_at index's.
        let narrowed = if req.sort_key == SortKey::CreatedAt {
            [
                (SortKey::Name, &f.name),
                (SortKey::DiskFormat, &f.disk_format),
                (SortKey::ContainerFormat, &f.container_format),
                (SortKey::Status, &f.status),
            ]
            .into_iter()
            .find_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        } else {
            None
        };
        let (index, fixed) = match narrowed {
            Some((key, value)) => {
                let mut v = vec![];
                keys::push_str(&mut v, value);
                (key, v)
            }
            None => (req.sort_key, vec![]),
        };
        let seek = req.after.as_ref().map(|m| {
            if narrowed.is_some() {
                let mut s = vec![];
                keys::push_tail(&mut s, m);
                s
            } else {
                keys::suffix(index, m)
            }
        });
        // With changes-since on updated_at, the walk starts at the first later update.
        let floor = match (index, f.changes_since) {
            (SortKey::UpdatedAt, Some(t)) => {
                let mut v = vec![];
                keys::push_time(&mut v, t);
                // Past every entry at exactly `t`: the filter is strictly later.
                keys::prefix_end(&v)
            }
            _ => None,
        };
        let desc = req.sort_dir == SortDir::Desc;
        let mut sources = vec![];
        for &class in classes {
            for scope in &scopes {
                let mut prefix = keys::scope_prefix(index, class, scope);
                prefix.extend_from_slice(&fixed);
                let with = |tail: &[u8]| {
                    let mut k = prefix.clone();
                    k.extend_from_slice(tail);
                    k
                };
                let mut lower = Bound::Included(prefix.clone());
                let mut upper = match keys::prefix_end(&prefix) {
                    Some(end) => Bound::Excluded(end),
                    None => Bound::Unbounded,
                };
                if let Some(seek) = &seek {
                    if desc {
                        upper = Bound::Excluded(with(seek));
                    } else {
                        lower = Bound::Excluded(with(seek));
                    }
                }
                if let Some(floor) = &floor {
                    let floor = with(floor);
                    let below = match &lower {
                        Bound::Included(k) | Bound::Excluded(k) => *k < floor,
                        Bound::Unbounded => true,
                    };
                    if below {
                        lower = Bound::Included(floor);
                    }
                }
                let range = self.idx.range::<Vec<u8>, _>((lower, upper));
                let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if desc
                {
                    Box::new(range.rev())
                } else {
                    Box::new(range)
                };
                sources.push(Source {
                    skip: prefix.len(),
                    iter,
                    head: None,
                });
            }
        }
        for source in &mut sources {
            source.advance()?;
        }
        Ok(Entries {
            sources,
            desc,
            last: None,
        })
    }
}

/// A page walk's index entries: every scope's range, merged.
struct Entries<'a> {
    sources: Vec<Source<'a>>,
    desc: bool,
    /// The last suffix returned.
    last: Option<Vec<u8>>,
}

impl Entries<'_> {
    /// The next image's suffix (sort value, created_at, id), each image once.
    fn next_image(&mut self) -> Result<Option<Vec<u8>>, RegistryError> {
        let (sources, desc) = (&mut self.sources, self.desc);
        loop {
            // The next entry in the walk's direction among every source's head.
            let mut best: Option<usize> = None;
            for (i, s) in sources.iter().enumerate() {
                let Some(head) = s.suffix() else { continue };
                let better = match best.and_then(|b| sources[b].suffix()) {
                    None => true,
                    Some(current) => {
                        if desc {
                            head > current
                        } else {
                            head < current
                        }
                    }
                };
                if better {
                    best = Some(i);
                }
            }
            let Some(b) = best else { return Ok(None) };
            let suffix = sources[b].suffix().map(<[u8]>::to_vec).unwrap_or_default();
            sources[b].advance()?;
            // An image in several scopes (public and owned) comes up once per scope, in a row.
            if self.last.as_deref() == Some(suffix.as_slice()) {
                continue;
            }
            self.last = Some(suffix.clone());
            return Ok(Some(suffix));
        }
    }
}

/// One scope's range in a page walk, with its next entry.
struct Source<'a> {
    skip: usize,
    iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a>,
    head: Option<sled::IVec>,
}

impl Source<'_> {
    fn advance(&mut self) -> Result<(), RegistryError> {
        self.head = self.iter.next().transpose()?.map(|(k, _)| k);
        Ok(())
    }

    fn suffix(&self) -> Option<&[u8]> {
        self.head.as_ref().map(|k| &k[self.skip..])
    }
}

fn tx_error(e: TransactionError<UpdateError>) -> UpdateError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => UpdateError::Registry(e.into()),
    }
}

#[async_trait]
impl RegistryEngine for SledRegistry {
    fn kind(&self) -> &'static str {
        "sled"
    }

    fn id(&self) -> &str {
        &self.trees.id
    }

    fn is_new(&self) -> bool {
        self.trees.created_now
    }

    async fn get(&self, id: &ImageId) -> Result<Option<StoredImage>, RegistryError> {
        let key = id.as_str().as_bytes().to_vec();
        self.read(move |t| t.record(&key)).await
    }

    async fn insert_new(&self, record: ImageRecord) -> Result<ImageRecord, RegistryError> {
        self.write(move |t| {
            let stored = StoredImage {
                record,
                members: vec![],
            };
            let bytes = encode(&stored)?;
            let key = stored.record.id.as_str().as_bytes().to_vec();
            let result = t.all_trees().transaction(|trees| {
                if trees.0.get(&key)?.is_some() {
                    return Err(ConflictableTransactionError::Abort(UpdateError::Registry(
                        RegistryError::Conflict(stored.record.id.clone()),
                    )));
                }
                trees.0.insert(key.as_slice(), bytes.as_slice())?;
                reindex(trees, None, &stored)?;
                Ok(())
            });
            match result.map_err(tx_error) {
                Ok(()) => {}
                Err(UpdateError::Registry(e)) => return Err(e),
                Err(UpdateError::Refused(_)) => unreachable!("inserts refuse nothing"),
            }
            Ok(stored.record)
        })
        .await
    }

    async fn update(&self, id: &ImageId, change: Change) -> Result<StoredImage, UpdateError> {
        let key = id.as_str().as_bytes().to_vec();
        self.write(move |t| {
            t.all_trees()
                .transaction(|trees| {
                    let abort = |e: UpdateError| ConflictableTransactionError::Abort(e);
                    let Some(bytes) = trees.0.get(&key)? else {
                        return Err(abort(RegistryError::NotFound.into()));
                    };
                    let before = decode(&bytes).map_err(|e| abort(e.into()))?;
                    let mut after = before.clone();
                    change(&mut after).map_err(|r| abort(UpdateError::Refused(r)))?;
                    let bytes = encode(&after).map_err(|e| abort(e.into()))?;
                    trees.0.insert(key.as_slice(), bytes)?;
                    reindex(trees, Some(&before), &after)?;
                    Ok(after)
                })
                .map_err(tx_error)
        })
        .await
    }

    async fn list_page(&self, request: PageRequest) -> Result<Vec<ImageRecord>, RegistryError> {
        self.scan(move |t| t.list_page(&request)).await
    }

    async fn shared_with(&self, member: &str) -> Result<Vec<StoredImage>, RegistryError> {
        let prefix = keys::member_prefix(member);
        self.scan(move |t| {
            let mut out = vec![];
            for kv in t.member_images.scan_prefix(&prefix) {
                let (k, _) = kv?;
                if let Some(stored) = t.record(&k[prefix.len()..])? {
                    out.push(stored);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn usage(&self, owner: Option<&str>) -> Result<u64, RegistryError> {
        let key = keys::usage(owner);
        self.read(move |t| t.read_counter(&key)).await
    }

    async fn status_counts(&self) -> Result<Vec<(ImageStatus, u64)>, RegistryError> {
        self.read(|t| {
            let mut out = vec![];
            for s in ImageStatus::ALL {
                out.push((s, t.read_counter(&keys::status_count(s))?));
            }
            Ok(out)
        })
        .await
    }

    async fn flush(&self) -> Result<(), RegistryError> {
        // An empty write: answered after the writer's next flush.
        self.write(|_| Ok::<_, RegistryError>(())).await
    }

    async fn in_state(
        &self,
        status: ImageStatus,
        after: Option<&ImageId>,
        limit: usize,
    ) -> Result<Vec<StoredImage>, RegistryError> {
        if !WALKED_STATES.contains(&status) {
            return Err(RegistryError::Storage(format!(
                "no index of images in state {}",
                status.as_str()
            )));
        }
        let prefix = keys::state_prefix(status);
        let lower = match after {
            Some(id) => Bound::Excluded(keys::state_key(status, id)),
            None => Bound::Included(prefix.clone()),
        };
        let upper = keys::prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
        self.scan(move |t| {
            let mut out = vec![];
            for kv in t.in_state.range::<Vec<u8>, _>((lower, upper)) {
                if out.len() >= limit {
                    break;
                }
                let (k, _) = kv?;
                if let Some(stored) = t.record(&k[prefix.len()..])? {
                    out.push(stored);
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
