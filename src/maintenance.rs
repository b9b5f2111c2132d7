//! Background upkeep: the scrubber that finishes delayed deletes, and the sweep that removes
//! incomplete uploads and reports (or removes) objects no image points to — only in stores whose
//! namespace this gateway's registry owns.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use stores::ownership::{self, Claim};
use stores::{ObjectInfo, ObjectKey, Store, StoreName};

use crate::catalog::delete_data;
use crate::config::SweepOrphans;
use crate::model::{ImageId, ImageStatus, Timestamp};
use crate::registry::{Registry, RegistryError};
use crate::state::AppState;

const TICK: Duration = Duration::from_secs(30);

pub async fn run(state: AppState) {
    futures::future::join(upkeep(&state), recover_abandoned(&state)).await;
}

/// The scrubber and the sweeps. On a registry several replicas share, one replica at a time
/// runs each (the registry's chore lock); the others skip that round.
async fn upkeep(state: &AppState) {
    let sweep_every = Duration::from_secs(state.config.sweep_interval);
    let mut last_sweep: Option<std::time::Instant> = None;
    loop {
        if let Some(_scrubbing) = chore(state, "scrub").await {
            if let Err(e) = scrub(state).await {
                tracing::error!(error = %e, "scrubbing delayed deletes failed");
            }
        }
        let due = match last_sweep {
            None => true,
            Some(t) => !sweep_every.is_zero() && t.elapsed() >= sweep_every,
        };
        if due {
            if let Some(_sweeping) = chore(state, "sweep").await {
                sweep(state).await;
            }
            last_sweep = Some(std::time::Instant::now());
        }
        tokio::time::sleep(TICK.min(Duration::from_secs(state.config.scrub_time.max(1)))).await;
    }
}

async fn chore(state: &AppState, name: &'static str) -> Option<crate::registry::ChoreGuard> {
    match state.registry.chore_lock(name).await {
        Ok(guard) => guard,
        Err(e) => {
            tracing::warn!(chore = name, error = %e, "chore skipped: registry unavailable");
            None
        }
    }
}

/// On a registry several replicas share: kills the uploads of replicas whose lease expired
/// (and removes their partial data) every half lease, so an upload whose replica died is
/// killed within two leases of its death. Nothing to do for a registry only this process uses.
async fn recover_abandoned(state: &AppState) {
    let Some(lease) = state.config.registry.postgres.as_ref().map(|pg| pg.lease) else {
        return;
    };
    loop {
        tokio::time::sleep(lease / 2).await;
        match crate::upload::recover_abandoned(state).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(count = n, "killed uploads of a replica that is gone"),
            Err(e) => {
                tracing::warn!(error = %e, "recovering uploads of replicas that are gone failed")
            }
        }
    }
}

/// Deletes the data of `pending_delete` images older than `scrub_time` and marks them deleted.
/// Walks only the registry's index of `pending_delete` images.
pub async fn scrub(state: &AppState) -> anyhow::Result<usize> {
    let due_before = Timestamp::now().micros() - (state.config.scrub_time as i64) * 1_000_000;
    let mut scrubbed = 0;
    let mut pending = std::pin::pin!(state.registry.walk_state(ImageStatus::PendingDelete));
    while let Some(image) = pending.try_next().await? {
        let r = &image.record;
        if r.deleted_at.is_some_and(|t| t.micros() > due_before) {
            continue;
        }
        if let Some(loc) = &r.location {
            if let Err(e) = delete_data(state, loc).await {
                tracing::warn!(image = %r.id, error = %e.message, "scrub failed; will retry");
                continue;
            }
        }
        state
            .registry
            .update::<crate::error::ApiError, _>(&r.id, |s| {
                if s.record.status == ImageStatus::PendingDelete {
                    s.record.status = ImageStatus::Deleted;
                    s.record.updated_at = Timestamp::now();
                }
                Ok(())
            })
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
        scrubbed += 1;
    }
    Ok(scrubbed)
}

/// What the registry says about the objects of every store, read once per sweep.
#[derive(Default)]
struct Known {
    /// `(store, key)` of every image that still needs its data.
    referenced: HashSet<(StoreName, ObjectKey)>,
    /// Active images kept in our own stores, by store.
    active: HashMap<StoreName, Vec<(ImageId, ObjectKey, Timestamp)>>,
    /// No image at all: the registry cannot tell an orphan from another gateway's data.
    empty: bool,
    /// `(store, key)` of both copies of every migration in progress.
    migrating: HashSet<(String, String)>,
}

impl Known {
    /// Reads the registry a page at a time, keeping only locations.
    async fn read(registry: &Registry) -> Result<Self, RegistryError> {
        let mut known = Self {
            empty: true,
            ..Self::default()
        };
        let mut records = std::pin::pin!(registry.walk_records());
        while let Some(r) = records.try_next().await? {
            known.empty = false;
            let Some(loc) = r.location else { continue };
            if r.status == ImageStatus::Deleted || r.status == ImageStatus::Killed {
                continue;
            }
            if r.status == ImageStatus::Active {
                known.active.entry(loc.store.clone()).or_default().push((
                    r.id,
                    loc.key.clone(),
                    r.updated_at,
                ));
            }
            known.referenced.insert((loc.store, loc.key));
        }
        Ok(known)
    }
}

/// True for the keys the gateway itself writes: an image id, spelt as image ids are. Anything
/// else in a namespace was put there by someone else and is never removed.
fn own_key_format(key: &ObjectKey) -> bool {
    ImageId::parse(key.as_str()).is_some_and(|id| id.as_str() == key.as_str())
}

/// Whether this gateway may sweep `store`: its namespace must belong to this registry. A store
/// that was down at startup is claimed here, on the first sweep that reaches it.
async fn owned(state: &AppState, store: &dyn Store) -> bool {
    let adopt = state
        .config
        .stores
        .get(store.name())
        .is_some_and(|c| c.adopt());
    match ownership::claim(store, state.registry.id(), adopt).await {
        Ok(Claim::Owned) => true,
        Ok(Claim::Claimed) => {
            tracing::info!(store = %store.name(), registry = state.registry.id(), "claimed the store's namespace");
            true
        }
        Ok(Claim::Adopted { previous }) => {
            tracing::warn!(store = %store.name(), previous = %previous, "adopted the store's namespace from another registry");
            true
        }
        Ok(Claim::OwnedBy(other)) => {
            tracing::error!(store = %store.name(), owner = %other, registry = state.registry.id(), "sweep skipped: the store's namespace belongs to another registry");
            false
        }
        Err(e) => {
            tracing::warn!(store = %store.name(), error = %e, "sweep skipped: the ownership marker is unreadable");
            false
        }
    }
}

/// What one sweep found and did, over every store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepSummary {
    /// Stores skipped: another registry owns them, or their marker could not be read.
    pub stores_skipped: usize,
    /// Objects no image points to, left in place.
    pub orphans_kept: Vec<(StoreName, ObjectKey)>,
    /// Objects no image points to, removed.
    pub orphans_removed: Vec<(StoreName, ObjectKey)>,
    /// Active images whose data their store no longer lists.
    pub missing_data: Vec<ImageId>,
}

/// Sweeps every store this registry owns: removes incomplete uploads older than `sweep_min_age`
/// (except those of images still `saving`), reports — or, with `sweep_orphans = "delete"`,
/// removes — complete objects no image points to, and logs active images whose data is gone.
pub async fn sweep(state: &AppState) -> SweepSummary {
    let mut summary = SweepSummary::default();
    let min_age = Duration::from_secs(state.config.sweep_min_age);
    for store in state.stores.iter() {
        if !owned(state, &**store).await {
            summary.stores_skipped += 1;
            continue;
        }
        let saving = match saving_keys(state, store.name()).await {
            Ok(saving) => saving,
            Err(e) => {
                tracing::error!(error = %e, "sweep stopped: registry unreadable");
                return summary;
            }
        };
        match store.sweep_incomplete(min_age, &saving).await {
            Ok(r) if r.incomplete_removed > 0 => {
                tracing::info!(store = %store.name(), removed = r.incomplete_removed, "removed incomplete uploads")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(store = %store.name(), error = %e, "sweep of incomplete uploads failed")
            }
        }
        // The listing comes first and the registry is read after it: an image whose object
        // was listed then has its location recorded (it is set before any byte is stored), so
        // no upload finishing meanwhile is taken for an orphan, whatever `sweep_min_age`.
        let listed_at = Timestamp::now();
        let objects = match store.list().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(store = %store.name(), error = %e, "listing for the orphan sweep failed");
                continue;
            }
        };
        let Some(known) = read_known(state).await else {
            return summary;
        };
        check_active_data(
            state,
            store.name(),
            &known,
            &objects,
            listed_at,
            &mut summary,
        )
        .await;
        sweep_orphans(state, &**store, &known, objects, min_age, &mut summary).await;
    }
    summary
}

/// Keys in `store` of the images still `saving` (their uploads may be running), read from the
/// registry's small index of `saving` images rather than the whole registry.
async fn saving_keys(
    state: &AppState,
    store: &StoreName,
) -> Result<BTreeSet<ObjectKey>, RegistryError> {
    state
        .registry
        .walk_state(ImageStatus::Saving)
        .try_filter_map(|s| async move { Ok(s.record.location) })
        .try_filter(|l| std::future::ready(l.store == *store))
        .map_ok(|l| l.key)
        .try_collect()
        .await
}

async fn read_known(state: &AppState) -> Option<Known> {
    // Read before the registry: a migration that finishes in between is in the registry then.
    let migrating = state.migrations.protected_objects();
    match Known::read(&state.registry).await {
        Ok(known) => Some(Known { migrating, ..known }),
        Err(e) => {
            tracing::error!(error = %e, "sweep stopped: registry unreadable");
            None
        }
    }
}

/// Logs, as errors, active images whose object the store's listing lacks.
async fn check_active_data(
    state: &AppState,
    store: &StoreName,
    known: &Known,
    objects: &[ObjectInfo],
    listed_at: Timestamp,
    summary: &mut SweepSummary,
) {
    let Some(active) = known.active.get(store) else {
        return;
    };
    let listed: HashSet<&ObjectKey> = objects.iter().map(|o| &o.key).collect();
    for (id, key, updated_at) in active {
        // Changed since the listing (activated, say): its object may postdate the listing.
        if listed.contains(key) || updated_at.micros() >= listed_at.micros() {
            continue;
        }
        // Deleted since the registry was read: not a loss.
        let still_active = matches!(
            state.registry.get(id).await,
            Ok(Some(s)) if s.record.status == ImageStatus::Active
                && s.record.location.as_ref().is_some_and(|l| &l.store == store && &l.key == key)
        );
        if still_active {
            tracing::error!(image = %id, store = %store, key = %key, "active image whose data is missing from its store");
            summary.missing_data.push(id.clone());
        }
    }
}

/// Reports unreferenced objects in the gateway's key format older than `min_age`; removes them
/// only with `sweep_orphans = "delete"` and a registry that knows images.
async fn sweep_orphans(
    state: &AppState,
    store: &dyn Store,
    known: &Known,
    objects: Vec<ObjectInfo>,
    min_age: Duration,
    summary: &mut SweepSummary,
) {
    let now = SystemTime::now();
    let orphans: Vec<ObjectKey> = objects
        .into_iter()
        .filter(|o| {
            o.last_modified
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() >= min_age)
        })
        .map(|o| o.key)
        .filter(own_key_format)
        .filter(|key| {
            !known
                .referenced
                .contains(&(store.name().clone(), key.clone()))
                && !known
                    .migrating
                    .contains(&(store.name().to_string(), key.to_string()))
        })
        .collect();
    if orphans.is_empty() {
        return;
    }
    let delete = state.config.sweep_orphans == SweepOrphans::Delete
        && !known.empty
        && !state.registry.is_new();
    if !delete {
        for key in orphans {
            tracing::warn!(store = %store.name(), key = %key, "object no image points to (kept: sweep_orphans = \"log\", or the registry is new or empty)");
            summary.orphans_kept.push((store.name().clone(), key));
        }
        return;
    }
    // Once more right before removing: another gateway may have adopted the namespace (and
    // started writing to it) since this sweep began.
    if !owned(state, store).await {
        summary.stores_skipped += 1;
        summary
            .orphans_kept
            .extend(orphans.into_iter().map(|k| (store.name().clone(), k)));
        return;
    }
    for key in orphans {
        match store.delete(&key).await {
            Ok(()) => {
                tracing::info!(store = %store.name(), key = %key, "removed orphaned object");
                summary.orphans_removed.push((store.name().clone(), key));
            }
            Err(e) => {
                tracing::warn!(store = %store.name(), key = %key, error = %e, "could not remove orphaned object");
                summary.orphans_kept.push((store.name().clone(), key));
            }
        }
    }
}
