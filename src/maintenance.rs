//! Background upkeep: the scrubber that finishes delayed deletes, and the sweep that removes
//! incomplete uploads and objects no image points to.

use std::time::{Duration, SystemTime};

use stores::{ObjectKey, StoreName};

use crate::catalog::delete_data;
use crate::model::{ImageId, ImageStatus, Timestamp};
use crate::registry::RegistryError;
use crate::state::AppState;
use crate::upload::RECOVERY_BATCH;

const TICK: Duration = Duration::from_secs(30);

pub async fn run(state: AppState) {
    let sweep_every = Duration::from_secs(state.config.sweep_interval);
    let mut last_sweep: Option<std::time::Instant> = None;
    loop {
        if let Err(e) = scrub(&state).await {
            tracing::error!(error = %e, "scrubbing delayed deletes failed");
        }
        let due = match last_sweep {
            None => true,
            Some(t) => !sweep_every.is_zero() && t.elapsed() >= sweep_every,
        };
        if due {
            sweep(&state).await;
            last_sweep = Some(std::time::Instant::now());
        }
        tokio::time::sleep(TICK.min(Duration::from_secs(state.config.scrub_time.max(1)))).await;
    }
}

/// Deletes the data of `pending_delete` images older than `scrub_time` and marks them deleted.
/// Walks only the registry's index of `pending_delete` images.
pub async fn scrub(state: &AppState) -> anyhow::Result<usize> {
    let due_before = Timestamp::now().micros() - (state.config.scrub_time as i64) * 1_000_000;
    let mut scrubbed = 0;
    let mut after: Option<ImageId> = None;
    loop {
        let batch = state
            .registry
            .in_state(ImageStatus::PendingDelete, after.as_ref(), RECOVERY_BATCH)
            .await?;
        let Some(last) = batch.last() else {
            return Ok(scrubbed);
        };
        after = Some(last.record.id.clone());
        for image in batch {
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
    }
}

/// Does a live image keep its data at `key` of `store`? Keys of the gateway's own objects are
/// image ids, so this is one lookup.
async fn referenced(
    state: &AppState,
    store: &StoreName,
    key: &ObjectKey,
) -> Result<bool, RegistryError> {
    let Some(id) = ImageId::parse(key.as_str()) else {
        return Ok(false);
    };
    Ok(state.registry.get(&id).await?.is_some_and(|s| {
        s.record.status != ImageStatus::Deleted
            && s.record.status != ImageStatus::Killed
            && s.record
                .location
                .is_some_and(|l| l.store == *store && l.key == *key)
    }))
}

/// Removes incomplete uploads and unreferenced objects older than `sweep_min_age` in every store.
pub async fn sweep(state: &AppState) {
    let min_age = Duration::from_secs(state.config.sweep_min_age);
    for store in state.stores.iter() {
        match store.sweep_incomplete(min_age).await {
            Ok(r) if r.incomplete_removed > 0 => {
                tracing::info!(store = %store.name(), removed = r.incomplete_removed, "removed incomplete uploads")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(store = %store.name(), error = %e, "sweep of incomplete uploads failed")
            }
        }
        let objects = match store.list().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(store = %store.name(), error = %e, "listing for the orphan sweep failed");
                continue;
            }
        };
        let now = SystemTime::now();
        for object in objects {
            let old_enough = object
                .last_modified
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() >= min_age);
            if !old_enough {
                continue;
            }
            match referenced(state, store.name(), &object.key).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "sweep stopped: registry unreadable");
                    return;
                }
            }
            match store.delete(&object.key).await {
                Ok(()) => {
                    tracing::info!(store = %store.name(), key = %object.key, "removed orphaned object")
                }
                Err(e) => {
                    tracing::warn!(store = %store.name(), key = %object.key, error = %e, "could not remove orphaned object")
                }
            }
        }
    }
}
