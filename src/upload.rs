//! The upload pipeline, the one place image data enters a store:
//! queued → saving → stream through the running digest into the store → verify cap, quota,
//! size and checksum → active. Any failure kills the image and removes partial data; an
//! `UploadGuard` does the same when the request future is dropped (client disconnect).

use std::sync::Arc;

use axum::http::StatusCode;
use stores::{put_digested_with, ByteStream, ObjectKey, PutError, Store, Stored};

use crate::error::{ApiError, ApiResult};
use crate::model::{ImageId, ImageRecord, ImageStatus, StoredLocation, Timestamp};
use crate::registry::{Registry, StoredImage};
use crate::state::AppState;

/// Kills the image and removes its partial data unless disarmed; runs on drop so a cancelled
/// upload (the handler future dropped mid-body) is cleaned up too.
struct UploadGuard {
    registry: Registry,
    store: Arc<dyn Store>,
    image_id: ImageId,
    key: ObjectKey,
    armed: bool,
}

impl UploadGuard {
    fn arm(state: &AppState, store: &Arc<dyn Store>, id: &ImageId, key: &ObjectKey) -> Self {
        Self {
            registry: state.registry.clone(),
            store: Arc::clone(store),
            image_id: id.clone(),
            key: key.clone(),
            armed: true,
        }
    }

    /// Removes the data and kills the image now, then disarms.
    async fn fail(mut self) {
        self.armed = false;
        cleanup(&self.registry, &*self.store, &self.image_id, &self.key).await;
    }

    /// For a failed `put`: the store has already removed what it wrote (its contract), so the
    /// image is killed now and the belt-and-braces delete runs in the background — against an
    /// unreachable backend it would only add its retries to the client's wait.
    async fn fail_after_store_cleanup(mut self) {
        self.armed = false;
        if let Err(e) = kill(&self.registry, &self.image_id, ImageStatus::Saving).await {
            tracing::error!(image = %self.image_id, error = %e, "could not mark image killed");
        }
        let (store, id, key) = (
            Arc::clone(&self.store),
            self.image_id.clone(),
            self.key.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = store.delete(&key).await {
                tracing::warn!(image = %id, error = %e, "could not remove partial image data; the sweep will");
            }
        });
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (registry, store) = (self.registry.clone(), Arc::clone(&self.store));
        let (id, key) = (self.image_id.clone(), self.key.clone());
        tracing::warn!(image = %id, "upload interrupted; cleaning up");
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { cleanup(&registry, &*store, &id, &key).await });
        }
    }
}

async fn cleanup(registry: &Registry, store: &dyn Store, id: &ImageId, key: &ObjectKey) {
    if let Err(e) = store.delete(key).await {
        tracing::error!(image = %id, error = %e, "could not remove partial image data");
    }
    if let Err(e) = kill(registry, id, ImageStatus::Saving).await {
        tracing::error!(image = %id, error = %e, "could not mark image killed");
    }
}

/// Marks the image killed if it is still in `from` (a deleted image stays deleted).
pub async fn kill(registry: &Registry, id: &ImageId, from: ImageStatus) -> ApiResult<()> {
    let result = registry
        .update::<ApiError, _>(id, move |s| {
            if s.record.status == from {
                s.record.status = ImageStatus::Killed;
                s.record.location = None;
                s.record.updated_at = Timestamp::now();
            }
            Ok(())
        })
        .await;
    result.map(|_| ())
}

/// Bytes the owner may still store under `user_storage_quota` (`u64::MAX` when unlimited).
/// Usage counts the owner's live images with data, except `except`.
pub async fn remaining_quota(
    state: &AppState,
    owner: Option<&str>,
    except: &ImageId,
) -> ApiResult<u64> {
    let quota = state.config.user_storage_quota;
    if quota == 0 {
        return Ok(u64::MAX);
    }
    let used: u64 = state
        .registry
        .all()
        .await?
        .iter()
        .map(|s| &s.record)
        .filter(|r| {
            r.owner.as_deref() == owner
                && &r.id != except
                && !matches!(
                    r.status,
                    ImageStatus::Killed | ImageStatus::Deleted | ImageStatus::PendingDelete
                )
                && r.size > 0
        })
        .map(|r| r.size)
        .sum();
    Ok(quota.saturating_sub(used))
}

fn quota_exceeded(remaining: u64) -> ApiError {
    ApiError::too_large(format!(
        "Denying attempt to upload image because it exceeds the quota: {remaining} bytes remaining"
    ))
}

fn deleted_while_uploading() -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "Image was deleted while it was being uploaded.",
    )
}

async fn was_deleted(registry: &Registry, id: &ImageId) -> bool {
    matches!(registry.get(id).await, Ok(Some(s)) if s.record.status.is_deleted())
}

/// Streams `body` into `store` as the data of the queued image `id` and activates it.
/// `content_length` is the request's declared body length, if any.
pub async fn upload(
    state: &AppState,
    id: &ImageId,
    store: Arc<dyn Store>,
    body: ByteStream,
    content_length: Option<u64>,
) -> ApiResult<ImageRecord> {
    let location = StoredLocation::for_image(store.name(), id);
    let saving = begin_saving(&state.registry, id, location.clone()).await?;
    let guard = UploadGuard::arm(state, &store, id, &location.key);
    let expected_size = (saving.size > 0).then_some(saving.size);
    let size_hint = expected_size.or(content_length);
    let remaining = match check_quota(state, &saving, size_hint).await {
        Ok(remaining) => remaining,
        Err(e) => {
            guard.fail().await;
            return Err(e);
        }
    };
    let stored = match store_data(state, &*store, &location.key, body, size_hint, remaining).await {
        Ok(stored) => stored,
        Err(e) => {
            guard.fail_after_store_cleanup().await;
            return Err(explain_store_failure(state, id, e, remaining).await);
        }
    };
    let md5 = stored.md5_hex();
    let verified = verify(&saving, expected_size, stored.size, &md5);
    let activated = match verified {
        Ok(()) => activate(&state.registry, id, &stored, md5).await,
        Err(e) => Err(e),
    };
    match activated {
        Ok(record) => {
            guard.disarm();
            Ok(record)
        }
        Err(e) => {
            guard.fail().await;
            Err(e)
        }
    }
}

/// queued → saving, recording where the data goes.
async fn begin_saving(
    registry: &Registry,
    id: &ImageId,
    location: StoredLocation,
) -> ApiResult<ImageRecord> {
    let saving = registry
        .update::<ApiError, _>(id, move |s| {
            if s.record.status != ImageStatus::Queued {
                return Err(ApiError::conflict("Cannot upload to an unqueued image"));
            }
            s.record.status = ImageStatus::Saving;
            s.record.location = Some(location.clone());
            s.record.updated_at = Timestamp::now();
            Ok(())
        })
        .await?;
    Ok(saving.record)
}

/// The bytes the owner may still store; a declared size above that is refused before any byte
/// is read.
async fn check_quota(
    state: &AppState,
    saving: &ImageRecord,
    declared: Option<u64>,
) -> ApiResult<u64> {
    let remaining = remaining_quota(state, saving.owner.as_deref(), &saving.id).await?;
    if declared.is_some_and(|declared| declared > remaining) {
        return Err(quota_exceeded(remaining));
    }
    Ok(remaining)
}

/// Streams the body through the running digest into the store, within the size cap and quota.
async fn store_data(
    state: &AppState,
    store: &dyn Store,
    key: &ObjectKey,
    body: ByteStream,
    size_hint: Option<u64>,
    remaining: u64,
) -> Result<Stored, PutError> {
    let limit = state.config.image_size_cap.min(remaining);
    let multihash = state.config.hashing_algorithm;
    put_digested_with(store, key, body, size_hint, limit, multihash).await
}

/// The client's error for a failed store write.
async fn explain_store_failure(
    state: &AppState,
    id: &ImageId,
    error: PutError,
    remaining: u64,
) -> ApiError {
    // A DELETE during the upload also removes the partial data under the store's feet, so the
    // store's error is a consequence; the cause is the delete.
    if was_deleted(&state.registry, id).await {
        return deleted_while_uploading();
    }
    let cap = state.config.image_size_cap;
    match error {
        PutError::TooLarge { .. } if remaining < cap => quota_exceeded(remaining),
        PutError::TooLarge { .. } => {
            ApiError::too_large(format!("Image exceeds the size limit of {cap} bytes"))
        }
        other => other.into(),
    }
}

/// The stored data must have the size and checksum the client supplied, if it supplied them.
fn verify(saving: &ImageRecord, expected_size: Option<u64>, size: u64, md5: &str) -> ApiResult<()> {
    if let Some(expected) = expected_size {
        if expected != size {
            return Err(ApiError::bad_request(format!(
                "Supplied image size ({expected}) does not match the size of the image data ({size})"
            )));
        }
    }
    if let Some(expected) = &saving.checksum {
        if expected != md5 {
            return Err(ApiError::bad_request(format!(
                "Supplied checksum ({expected}) and checksum generated from uploaded image ({md5}) did not match. Setting image status to 'killed'."
            )));
        }
    }
    Ok(())
}

/// saving → active with the stored size, checksum and multihash; an image deleted meanwhile
/// stays deleted.
async fn activate(
    registry: &Registry,
    id: &ImageId,
    stored: &Stored,
    md5: String,
) -> ApiResult<ImageRecord> {
    let size = stored.size;
    let os_hash = stored
        .multihash
        .map(|m| (m.algo.as_str().to_owned(), m.hex()));
    let activated = registry
        .update::<ApiError, _>(id, move |s| {
            if s.record.status != ImageStatus::Saving {
                return Err(deleted_while_uploading());
            }
            s.record.status = ImageStatus::Active;
            s.record.size = size;
            s.record.checksum = Some(md5.clone());
            s.record.os_hash_algo = os_hash.as_ref().map(|(algo, _)| algo.clone());
            s.record.os_hash_value = os_hash.as_ref().map(|(_, value)| value.clone());
            s.record.updated_at = Timestamp::now();
            Ok(())
        })
        .await?;
    Ok(activated.record)
}

/// Startup recovery: images a crash left in `saving` become `killed` and their partial data is
/// removed.
pub async fn recover_interrupted(state: &AppState) -> anyhow::Result<usize> {
    let mut recovered = 0;
    for StoredImage { record, .. } in state.registry.all().await? {
        if record.status != ImageStatus::Saving {
            continue;
        }
        if let Some(loc) = &record.location {
            match state.stores.get(loc.store.as_str()) {
                Some(store) => {
                    if let Err(e) = store.delete(&loc.key).await {
                        tracing::error!(image = %record.id, error = %e, "could not remove partial data");
                    }
                }
                None => {
                    tracing::warn!(image = %record.id, store = %loc.store, "partial data in an unconfigured store left alone")
                }
            }
        }
        kill(&state.registry, &record.id, ImageStatus::Saving)
            .await
            .map_err(|e| anyhow::anyhow!("killing {}: {}", record.id, e.message))?;
        recovered += 1;
    }
    Ok(recovered)
}
