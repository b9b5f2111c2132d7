//! Moving an image's data to another store under the same id.
//!
//! Crash safety rests on the registry's location being the only thing that makes an object
//! served: the copy is written (atomically, per the store contract) under the image's key in the
//! target store, read back and checked, and only then does one registry update switch the
//! location. A crash before the switch leaves the image served from the old copy, with the new
//! one unreferenced (the orphan sweep removes it, or a rerun overwrites it); a crash after it
//! leaves the old copy unreferenced, for the sweep. While a migration runs, the sweep leaves both
//! copies alone ([`super::Migrations`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use stores::{put_digested_with, ObjectKey, PutError, Store};

use super::check::{check_object, Expected, Outcome, Throttle, PROGRESS_EVERY};
use super::{ClientGone, Event, Events, ImageResult, ObjectGuard};
use crate::error::ApiError;
use crate::model::{ImageRecord, ImageStatus, StoredLocation};
use crate::state::AppState;

/// The old copy waiting for its removal.
struct Retired {
    id: String,
    store: Arc<dyn Store>,
    key: ObjectKey,
    _guard: ObjectGuard,
}

pub async fn run(
    state: AppState,
    images: Vec<(String, Option<ImageRecord>)>,
    target: Arc<dyn Store>,
    grace: Duration,
    events: Events,
) -> Result<(), ClientGone> {
    // Each image's bytes are read twice: copied, then read back.
    events.start(&images, 2).await?;
    let mut retired = vec![];
    let mut done = 0;
    for (id, record) in images {
        let base = done;
        done += record.as_ref().map_or(0, |r| 2 * r.size);
        let result = match &record {
            None => ImageResult::new(&id, None, "error", Some("no such image".into())),
            Some(record) => match migrate_one(&state, record, &target, &events, base).await? {
                Ok(Some(old)) => {
                    retired.push(old);
                    let mut r = ImageResult::new(&id, Some(record), "migrated", None);
                    r.store = Some(target.name().to_string());
                    r
                }
                Ok(None) => ImageResult::new(
                    &id,
                    Some(record),
                    "unchanged",
                    Some(format!("already in store {}", target.name())),
                ),
                Err(message) => ImageResult::new(&id, Some(record), "error", Some(message)),
            },
        };
        events
            .send(Event::Progress {
                id: id.clone(),
                bytes: done,
            })
            .await?;
        events.send(Event::Result(result)).await?;
    }
    if !retired.is_empty() {
        // Downloads that looked the location up before the switch still read the old copies.
        tokio::time::sleep(grace).await;
    }
    for old in retired {
        let error = match old.store.delete(&old.key).await {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(image = %old.id, error = %e, "old copy not removed; the sweep will");
                Some(e.to_string())
            }
        };
        events
            .send(Event::Removed {
                id: old.id,
                store: old.store.name().to_string(),
                error,
            })
            .await?;
    }
    Ok(())
}

/// Copies, checks and switches one image. `Ok(None)`: already in the target store.
async fn migrate_one(
    state: &AppState,
    record: &ImageRecord,
    target: &Arc<dyn Store>,
    events: &Events,
    base: u64,
) -> Result<Result<Option<Retired>, String>, ClientGone> {
    let Some(_claim) = state.migrations.claim(&record.id) else {
        return Ok(Err("another migration of this image is running".into()));
    };
    // The record may have changed since the request was read.
    let record = match state.registry.get(&record.id).await {
        Ok(Some(stored)) => stored.record,
        Ok(None) => return Ok(Err("no such image".into())),
        Err(e) => return Ok(Err(e.to_string())),
    };
    if !matches!(
        record.status,
        ImageStatus::Active | ImageStatus::Deactivated
    ) {
        return Ok(Err(format!("image is {}", record.status.as_str())));
    }
    let Some(old) = record.location.clone() else {
        return Ok(Err(
            "the data is not in a store the gateway manages (registered or remote location)".into(),
        ));
    };
    if &old.store == target.name() {
        return Ok(Ok(None));
    }
    let Some(source) = state.stores.get(old.store.as_str()).cloned() else {
        return Ok(Err(format!("store {} is not configured", old.store)));
    };
    let old_key = old.key.clone();
    let new_location = StoredLocation::for_image(target.name(), &record.id);
    let key = new_location.key.clone();
    let _new_guard = state
        .migrations
        .protect(target.name().as_str(), key.as_str());
    let mut expected = Expected::of(&record);

    // Copy, hashing on the way; the source must match the registry.
    let object = match source.get(&old_key, None).await {
        Ok(object) => object,
        Err(e) if e.is_not_found() => return Ok(Err("the data is missing from its store".into())),
        Err(e) => return Ok(Err(format!("reading the data failed: {e}"))),
    };
    let algo = expected
        .multihash
        .as_ref()
        .map(|(a, _)| *a)
        .or(state.config.hashing_algorithm);
    let counted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&counted);
    let body = object.body.inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    });
    let copy = put_digested_with(
        target.as_ref(),
        &key,
        Box::pin(body),
        Some(record.size),
        record.size,
        algo,
    );
    tokio::pin!(copy);
    // Progress while the copy runs; a gone client drops the copy (the store cleans up).
    let copied = loop {
        tokio::select! {
            copied = &mut copy => break copied,
            () = tokio::time::sleep(PROGRESS_EVERY) => {
                let bytes = base + counted.load(Ordering::Relaxed);
                let id = record.id.to_string();
                events.send(Event::Progress { id, bytes }).await?;
            }
        }
    };
    let stored = match copied {
        Ok(stored) => stored,
        Err(PutError::TooLarge { .. }) => {
            return Ok(Err(
                "the stored data is larger than recorded; run verify".into()
            ))
        }
        Err(e) => return Ok(Err(format!("copying failed: {e}"))),
    };
    let mismatch = if stored.size != record.size {
        Some(format!(
            "{} bytes copied, {} recorded",
            stored.size, record.size
        ))
    } else if expected
        .md5
        .as_ref()
        .is_some_and(|m| *m != stored.md5_hex())
    {
        Some("the MD5 of the copied data differs from the registry's".into())
    } else if let (Some((_, value)), Some(found)) = (&expected.multihash, stored.multihash) {
        (*value != found.hex())
            .then(|| "the multihash of the copied data differs from the registry's".into())
    } else {
        None
    };
    if let Some(message) = mismatch {
        remove_copy(state, target, &key, &record).await;
        return Ok(Err(format!("{message}; not migrated (run verify)")));
    }
    // What the copy must read back as, the multihash included even when none was recorded.
    expected.md5 = Some(stored.md5_hex());
    let computed = stored.multihash.map(|m| (m.algo, m.hex()));
    if expected.multihash.is_none() {
        expected.multihash = computed.clone();
    }

    // Read the new copy back through the store before anything points at it.
    let reread = target.get(&key, None).await;
    let mut unthrottled = Throttle::new(None);
    let outcome = check_object(
        target.as_ref(),
        reread,
        &expected,
        &mut unthrottled,
        (record.id.as_str(), base + record.size),
        events,
    )
    .await?;
    if outcome != Outcome::Ok {
        remove_copy(state, target, &key, &record).await;
        return Ok(Err(format!(
            "the new copy reads back {}: {}",
            outcome.name(),
            outcome.detail().unwrap_or_default()
        )));
    }

    // The switch: one registry update, only if nothing moved the image meanwhile.
    let from = old.clone();
    let switched = state
        .registry
        .update::<ApiError, _>(&record.id, move |s| {
            if s.record.location.as_ref() != Some(&from)
                || !matches!(
                    s.record.status,
                    ImageStatus::Active | ImageStatus::Deactivated
                )
            {
                return Err(ApiError::conflict("the image changed during the migration"));
            }
            s.record.location = Some(new_location.clone());
            // Images stored before multihash gain it from the checked copy.
            if s.record.os_hash_value.is_none() {
                if let Some((algo, value)) = &computed {
                    s.record.os_hash_algo = Some(algo.as_str().to_owned());
                    s.record.os_hash_value = Some(value.clone());
                }
            }
            Ok(())
        })
        .await;
    if let Err(e) = switched {
        remove_copy(state, target, &key, &record).await;
        return Ok(Err(e.message));
    }
    tracing::info!(image = %record.id, from = %old.store, to = %target.name(), "image migrated");
    Ok(Ok(Some(Retired {
        id: record.id.to_string(),
        _guard: state
            .migrations
            .protect(old.store.as_str(), old.key.as_str()),
        store: source,
        key: old_key,
    })))
}

/// Removes a copy that was not switched to, unless the registry points at it after all.
async fn remove_copy(
    state: &AppState,
    target: &Arc<dyn Store>,
    key: &ObjectKey,
    record: &ImageRecord,
) {
    let current = state.registry.get(&record.id).await.ok().flatten();
    let referenced = current
        .and_then(|s| s.record.location)
        .is_some_and(|l| &l.store == target.name() && &l.key == key);
    if referenced {
        return;
    }
    if let Err(e) = target.delete(key).await {
        tracing::warn!(image = %record.id, error = %e, "unused copy not removed; the sweep will");
    }
}
