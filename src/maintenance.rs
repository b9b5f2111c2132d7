//! Background upkeep: the scrubber that finishes delayed deletes, and the sweep that removes
//! incomplete uploads and objects no image points to.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use crate::catalog::delete_data;
use crate::model::{ImageStatus, Timestamp};
use crate::state::AppState;

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
pub async fn scrub(state: &AppState) -> anyhow::Result<usize> {
    let due_before = Timestamp::now().micros() - (state.config.scrub_time as i64) * 1_000_000;
    let mut scrubbed = 0;
    for image in state.registry.all().await? {
        let r = &image.record;
        if r.status != ImageStatus::PendingDelete
            || r.deleted_at.is_some_and(|t| t.micros() > due_before)
        {
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

/// Removes incomplete uploads and unreferenced objects older than `sweep_min_age` in every store.
pub async fn sweep(state: &AppState) {
    let min_age = Duration::from_secs(state.config.sweep_min_age);
    // Read before the registry: a migration that finishes in between is in the registry then.
    let migrating = state.migrations.protected_objects();
    let referenced: HashSet<(String, String)> = match state.registry.all().await {
        Ok(all) => all
            .into_iter()
            .filter(|s| {
                s.record.status != ImageStatus::Deleted && s.record.status != ImageStatus::Killed
            })
            .filter_map(|s| s.record.location.map(|l| (l.store.into(), l.key.into())))
            .chain(migrating)
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "sweep skipped: registry unreadable");
            return;
        }
    };
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
            let key = (store.name().to_string(), object.key.to_string());
            if old_enough && !referenced.contains(&key) {
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
}
