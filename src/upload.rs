//! The upload pipeline, the one place image data enters a store:
//! queued → saving → stream through the running digest into the store → verify cap, quota,
//! size and checksum → active. Any failure kills the image and removes partial data; an
//! `UploadGuard` does the same when the request future is dropped (client disconnect).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use futures::TryStreamExt;
use stores::{put_digested_with, ByteStream, ObjectKey, PutError, Store, Stored};
use tracing::Instrument;

use crate::error::{ApiError, ApiResult};
use crate::model::{ImageId, ImageRecord, ImageStatus, StoredLocation, Timestamp};
use crate::registry::{Registry, StoredImage};
use crate::state::AppState;

/// Uploads running in this gateway, for the storage quota: each counts as its declared size or
/// the bytes it sent so far, whichever is larger, until it ends. Activations under a quota take
/// turns, so two uploads cannot both fit into the same remaining bytes.
#[derive(Debug, Default)]
pub struct Uploads {
    running: std::sync::Mutex<HashMap<ImageId, Running>>,
    activation: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Running {
    owner: Option<String>,
    declared: u64,
    sent: Arc<AtomicU64>,
}

impl Uploads {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<ImageId, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an upload; it counts until the returned entry is dropped.
    fn begin(self: &Arc<Self>, id: &ImageId, owner: Option<String>, declared: u64) -> InFlight {
        let sent = Arc::new(AtomicU64::new(0));
        let running = Running {
            owner,
            declared,
            sent: Arc::clone(&sent),
        };
        self.running().insert(id.clone(), running);
        InFlight {
            uploads: Arc::clone(self),
            id: id.clone(),
            sent,
        }
    }

    /// Bytes the owner's other running uploads hold (saturating).
    fn usage(&self, owner: Option<&str>, except: &ImageId) -> u64 {
        self.running()
            .iter()
            .filter(|(id, r)| *id != except && r.owner.as_deref() == owner)
            .map(|(_, r)| r.declared.max(r.sent.load(Ordering::Relaxed)))
            .fold(0u64, u64::saturating_add)
    }
}

/// A running upload's place in [`Uploads`].
struct InFlight {
    uploads: Arc<Uploads>,
    id: ImageId,
    sent: Arc<AtomicU64>,
}

impl InFlight {
    /// The body, counting its bytes as they pass.
    fn count(&self, body: ByteStream) -> ByteStream {
        let sent = Arc::clone(&self.sent);
        Box::pin(body.inspect_ok(move |bytes| {
            sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.uploads.running().remove(&self.id);
    }
}

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
        tokio::spawn(
            async move {
                if let Err(e) = store.delete(&key).await {
                    tracing::warn!(image = %id, error = %e, "could not remove partial image data; the sweep will");
                }
            }
            .in_current_span(),
        );
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
            // The request's span is entered while its future is dropped: the cleanup's lines
            // keep the request id.
            handle.spawn(
                async move { cleanup(&registry, &*store, &id, &key).await }.in_current_span(),
            );
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
/// Usage counts the owner's live images with data and its other uploads in flight, except
/// `except`; sums saturate, so no size can wrap the total.
pub async fn remaining_quota(
    state: &AppState,
    owner: Option<&str>,
    except: &ImageId,
) -> ApiResult<u64> {
    let quota = state.config.user_storage_quota;
    if quota == 0 {
        return Ok(u64::MAX);
    }
    let used = stored_usage(state, owner, except)
        .await?
        .saturating_add(state.uploads.usage(owner, except));
    Ok(quota.saturating_sub(used))
}

/// The owner's images holding data, except `except`: one counter the registry keeps, less
/// `except`'s share; uploads still saving count through [`Uploads`] instead.
async fn stored_usage(state: &AppState, owner: Option<&str>, except: &ImageId) -> ApiResult<u64> {
    let mut used = state.registry.usage(owner).await?;
    if let Some(s) = state.registry.get(except).await? {
        let r = &s.record;
        let counted = r.owner.as_deref() == owner
            && !matches!(
                r.status,
                ImageStatus::Killed
                    | ImageStatus::Deleted
                    | ImageStatus::PendingDelete
                    | ImageStatus::Saving
            );
        if counted {
            used = used.saturating_sub(r.size);
        }
    }
    Ok(used)
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
    let _in_progress = state.metrics.upload_started();
    let location = StoredLocation::for_image(store.name(), id);
    let saving = begin_saving(&state.registry, id, location.clone()).await?;
    let guard = UploadGuard::arm(state, &store, id, &location.key);
    let expected_size = (saving.size > 0).then_some(saving.size);
    let size_hint = expected_size.or(content_length);
    let in_flight = state
        .uploads
        .begin(id, saving.owner.clone(), size_hint.unwrap_or(0));
    let body = in_flight.count(body);
    let cap = state.config.image_size_cap;
    if size_hint.is_some_and(|len| len > cap) {
        // Only a remote source's announced length gets here: a client's is refused up front.
        guard.fail().await;
        return Err(ApiError::too_large(format!(
            "Image exceeds the size limit of {cap} bytes"
        )));
    }
    let remaining = match check_quota(state, &saving, size_hint).await {
        Ok(remaining) => remaining,
        Err(e) => {
            guard.fail().await;
            return Err(e);
        }
    };
    // Reading stops at the declared size: a byte more is the client's error, whatever the store.
    let limit = remaining.min(expected_size.unwrap_or(u64::MAX));
    let stored = match store_data(state, &*store, &location.key, body, size_hint, limit).await {
        Ok(stored) => stored,
        Err(e) => {
            guard.fail_after_store_cleanup().await;
            return Err(explain_store_failure(state, id, e, remaining, expected_size).await);
        }
    };
    let md5 = stored.md5_hex();
    let verified = verify(&saving, expected_size, stored.size, &md5);
    let activated = match verified {
        Ok(()) => activate(state, &saving, &stored, md5).await,
        Err(e) => Err(e),
    };
    drop(in_flight);
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

/// Streams the body through the running digest into the store, within the size cap and
/// `remaining` (the quota, or the declared size).
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
    expected_size: Option<u64>,
) -> ApiError {
    // A DELETE during the upload also removes the partial data under the store's feet, so the
    // store's error is a consequence; the cause is the delete.
    if was_deleted(&state.registry, id).await {
        return deleted_while_uploading();
    }
    let cap = state.config.image_size_cap;
    match error {
        PutError::TooLarge { limit } if expected_size == Some(limit) => {
            ApiError::bad_request(format!(
                "Supplied image size ({limit}) does not match the size of the image data (more bytes were sent)"
            ))
        }
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
/// stays deleted. Under a storage quota the owner's usage is checked again first, activations
/// taking turns, so uploads that ran side by side cannot together exceed it.
async fn activate(
    state: &AppState,
    saving: &ImageRecord,
    stored: &Stored,
    md5: String,
) -> ApiResult<ImageRecord> {
    let size = stored.size;
    let os_hash = stored
        .multihash
        .map(|m| (m.algo.as_str().to_owned(), m.hex()));
    let quota = state.config.user_storage_quota;
    let _turn = match quota {
        0 => None,
        _ => Some(state.uploads.activation.lock().await),
    };
    if quota > 0 {
        let used = stored_usage(state, saving.owner.as_deref(), &saving.id).await?;
        if used.checked_add(size).is_none_or(|total| total > quota) {
            return Err(quota_exceeded(quota.saturating_sub(used)));
        }
    }
    let activated = state
        .registry
        .update::<ApiError, _>(&saving.id, move |s| {
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

/// Startup (and shutdown) recovery: images a crash left in `saving` become `killed` and their
/// partial data is removed. Walks only the registry's index of `saving` images; on a registry
/// several replicas share, only this process's images and those of replicas that are gone.
pub async fn recover_interrupted(state: &AppState) -> anyhow::Result<usize> {
    recover(state, true).await
}

/// The same for the uploads of other replicas that are gone (run periodically).
pub async fn recover_abandoned(state: &AppState) -> anyhow::Result<usize> {
    recover(state, false).await
}

async fn recover(state: &AppState, include_own: bool) -> anyhow::Result<usize> {
    let mut recovered = 0;
    let mut saving = std::pin::pin!(state.registry.walk_interrupted(include_own));
    while let Some(StoredImage { record, .. }) = saving.try_next().await? {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_state;

    async fn stored(state: &AppState, owner: &str, status: ImageStatus, size: u64) -> ImageId {
        let mut record = ImageRecord::new(ImageId::random(), Timestamp::now());
        record.owner = Some(owner.into());
        record.status = status;
        record.size = size;
        state.registry.insert_new(record).await.unwrap().id
    }

    #[tokio::test]
    async fn usage_sums_saturate_instead_of_wrapping() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path()).await; // quota 1000 bytes
                                                  // Two images of 2^63 bytes would wrap a plain sum to 0 and free the whole quota.
        stored(&state, "t1", ImageStatus::Active, 1 << 63).await;
        stored(&state, "t1", ImageStatus::Active, 1 << 63).await;
        let new = ImageId::random();
        assert_eq!(remaining_quota(&state, Some("t1"), &new).await.unwrap(), 0);
        assert_eq!(
            remaining_quota(&state, Some("t2"), &new).await.unwrap(),
            1000
        );
    }

    #[tokio::test]
    async fn uploads_in_flight_count_until_they_end() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path()).await;
        let (a, b) = (ImageId::random(), ImageId::random());
        let declared = state.uploads.begin(&a, Some("t1".into()), 300);
        let chunked = state.uploads.begin(&b, Some("t1".into()), 0);
        chunked.sent.fetch_add(450, Ordering::Relaxed);
        let other = ImageId::random();
        assert_eq!(
            remaining_quota(&state, Some("t1"), &other).await.unwrap(),
            250
        );
        // An upload does not count against itself.
        assert_eq!(remaining_quota(&state, Some("t1"), &a).await.unwrap(), 550);
        drop(declared);
        drop(chunked);
        assert_eq!(
            remaining_quota(&state, Some("t1"), &other).await.unwrap(),
            1000
        );
    }
}
