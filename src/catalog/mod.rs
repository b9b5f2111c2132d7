//! The image catalogue, behind the HTTP handlers: create, update and delete with Glance v1's
//! processing order (validation, policy, visibility, then the change), finding an image the
//! caller may see, and opening its data. Data uploads are handed to `upload`.

mod data;
mod patch;
mod sources;

use std::collections::BTreeSet;

use stores::ByteStream;

pub use data::{direct_url, find_downloadable, open_data, ImageData};
pub use patch::{validate_formats, MetaPatch};

use crate::access::Caller;
use crate::error::{ApiError, ApiResult};
use crate::model::{ImageId, ImageRecord, ImageStatus, StoredLocation, Timestamp};
use crate::registry::StoredImage;
use crate::state::AppState;
use patch::apply_patch;
use sources::Sources;

/// Image data that came with a POST or PUT.
pub struct IncomingData {
    pub body: ByteStream,
    pub content_type_ok: bool,
    pub content_length: Option<u64>,
}

/// What a POST or PUT asks for.
pub struct WriteRequest {
    pub patch: MetaPatch,
    pub data: Option<IncomingData>,
    pub content_length: Option<u64>,
    pub copy_from: Option<String>,
    /// PUT only: delete properties the request does not name (default true).
    pub purge_props: bool,
}

impl WriteRequest {
    fn has_source(&self, sources: &Sources) -> bool {
        self.data.is_some() || sources.any_external()
    }
}

/// Finds an image by the id in the path; 404 when missing or invisible to the caller.
pub async fn find_visible(state: &AppState, caller: &Caller, id: &str) -> ApiResult<StoredImage> {
    let not_found = || ApiError::image_not_found(id);
    let id = ImageId::parse(id).ok_or_else(not_found)?;
    let image = state.registry.get(&id).await?.ok_or_else(not_found)?;
    if !caller.can_see(&image) {
        return Err(not_found());
    }
    Ok(image)
}

/// Checks done before anything is created or changed (POST steps 1–8, PUT steps 1–2, 8).
fn precheck(state: &AppState, caller: &Caller, req: &mut WriteRequest) -> ApiResult<Sources> {
    let config = &state.config;
    validate_formats(
        &mut req.patch,
        &config.disk_formats,
        &config.container_formats,
    )?;
    let cap = config.image_size_cap;
    if req.content_length.is_some_and(|l| l > cap) || req.patch.size.is_some_and(|s| s > cap) {
        return Err(ApiError::bad_request(format!(
            "Denying attempt to upload image larger than {cap} bytes."
        )));
    }
    caller.check_writable()?;
    caller.check_publicize(req.patch.is_public == Some(true), config.publicize_image)?;
    Sources::read(state, caller, req)
}

/// Refuses `count` items above `quota` (negative: no limit), in the words Glance uses.
pub(crate) fn check_count_quota(quota: i64, count: usize, what: &str) -> ApiResult<()> {
    if quota >= 0 && count as i64 > quota {
        return Err(ApiError::too_large(format!(
            "The limit has been exceeded on the number of allowed {what}. Attempted: {count}, Maximum: {quota}"
        )));
    }
    Ok(())
}

fn check_property_quota(state: &AppState, count: usize) -> ApiResult<()> {
    let quota = state.config.image_property_quota;
    check_count_quota(quota, count, "image properties")
}

/// `POST /v1/images`.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    mut req: WriteRequest,
) -> ApiResult<ImageRecord> {
    let sources = precheck(state, caller, &mut req)?;
    state
        .property_rules
        .check_create(caller, &req.patch.properties)?;
    check_property_quota(state, req.patch.properties.len())?;
    let id = match &req.patch.id {
        Some(text) => {
            ImageId::parse(text).ok_or_else(|| ApiError::bad_request("Invalid image id format"))?
        }
        None => ImageId::random(),
    };
    // The remote size is asked before anything is created: a missing object creates nothing.
    let probed_size = match req.patch.size {
        None => sources.probe_size(state).await?,
        Some(_) => None,
    };
    let mut record = ImageRecord::new(id, Timestamp::now());
    record.owner = caller.owner.clone();
    apply_patch(&mut record, &req.patch, caller, true);
    if record.size == 0 {
        record.size = probed_size.unwrap_or(0);
    }
    let has_source = req.has_source(&sources);
    if req.patch.size == Some(0) && !has_source {
        record.status = ImageStatus::Active;
    }
    let record = state.registry.insert_new(record).await?;
    if !has_source {
        return Ok(record);
    }
    sources::attach(state, record, req, sources, probed_size).await
}

/// `PUT /v1/images/{id}`.
pub async fn update(
    state: &AppState,
    caller: &Caller,
    id: &str,
    mut req: WriteRequest,
) -> ApiResult<ImageRecord> {
    let sources = precheck(state, caller, &mut req)?;
    let image = find_visible(state, caller, id).await?;
    let current = &image.record;
    check_update(caller, current, &req, &sources)?;
    // Properties are never purged by a PUT that uploads data.
    let purge = req.purge_props && req.data.is_none();
    let sent = &mut req.patch.properties;
    let rules = &state.property_rules;
    rules.check_update(caller, &current.properties, sent, purge)?;
    check_property_quota(state, property_count(current, &req.patch, purge))?;
    caller.check_modify(&image)?;
    let updated = apply_update(state, caller, &current.id, &req.patch, purge).await?;
    if !req.has_source(&sources) {
        return Ok(updated);
    }
    if updated.status != ImageStatus::Queued {
        return Err(ApiError::conflict("Cannot upload to an unqueued image"));
    }
    sources::attach(state, updated, req, sources, None).await
}

/// What a PUT may not change: deleted images, the size and checksum of active images (for
/// non-admins), status and id; data only goes to queued images.
fn check_update(
    caller: &Caller,
    current: &ImageRecord,
    req: &WriteRequest,
    sources: &Sources,
) -> ApiResult<()> {
    if current.status.is_deleted() {
        return Err(ApiError::forbidden("Forbidden to update deleted image."));
    }
    let patch = &req.patch;
    let active = matches!(
        current.status,
        ImageStatus::Active | ImageStatus::Deactivated
    );
    if !caller.is_admin && active {
        let new_checksum = patch.checksum.as_ref();
        forbid_change(patch.size.is_some_and(|s| s != current.size), "size")?;
        forbid_change(
            new_checksum.is_some_and(|c| *c != current.checksum),
            "checksum",
        )?;
    }
    let new_status = patch.status.as_deref();
    if new_status.is_some_and(|s| s != current.status.as_str()) {
        return Err(ApiError::forbidden(
            "Forbidden to modify 'status' of image.",
        ));
    }
    if patch
        .id
        .as_deref()
        .is_some_and(|i| i != current.id.as_str())
    {
        return Err(ApiError::forbidden("Forbidden to modify 'id' of image."));
    }
    if req.data.is_some() && current.status != ImageStatus::Queued {
        return Err(ApiError::conflict("Cannot upload to an unqueued image"));
    }
    if sources.any_external() && current.status != ImageStatus::Queued {
        return Err(ApiError::bad_request(
            "Attempted to update Location field for an image not in queued status.",
        ));
    }
    Ok(())
}

fn forbid_change(changed: bool, field: &str) -> ApiResult<()> {
    if changed {
        return Err(ApiError::forbidden(format!(
            "Forbidden to modify '{field}' of active image."
        )));
    }
    Ok(())
}

/// How many properties the image has once the PUT is applied.
fn property_count(current: &ImageRecord, patch: &MetaPatch, purge: bool) -> usize {
    if purge {
        return patch.properties.len();
    }
    let mut keys: BTreeSet<&String> = current.properties.keys().collect();
    keys.extend(patch.properties.keys());
    keys.len()
}

/// Writes the PUT's metadata change, unless the image was deleted meanwhile.
async fn apply_update(
    state: &AppState,
    caller: &Caller,
    id: &ImageId,
    patch: &MetaPatch,
    purge: bool,
) -> ApiResult<ImageRecord> {
    let (patch, caller) = (patch.clone(), caller.clone());
    let updated = state
        .registry
        .update::<ApiError, _>(id, move |s| {
            if s.record.status.is_deleted() {
                return Err(ApiError::forbidden("Forbidden to update deleted image."));
            }
            apply_patch(&mut s.record, &patch, &caller, purge);
            s.record.updated_at = Timestamp::now();
            Ok(())
        })
        .await?;
    Ok(updated.record)
}

/// `DELETE /v1/images/{id}`.
pub async fn delete(state: &AppState, caller: &Caller, id: &str) -> ApiResult<()> {
    caller.check_writable()?;
    let image = find_visible(state, caller, id).await?;
    let record = &image.record;
    if record.protected {
        return Err(ApiError::forbidden("Image is protected"));
    }
    match record.status {
        ImageStatus::PendingDelete => {
            return Err(ApiError::forbidden(
                "Forbidden to delete a pending_delete image.",
            ))
        }
        ImageStatus::Deleted => return Err(ApiError::not_found(format!("Image {id} not found."))),
        _ => {}
    }
    caller.check_modify(&image)?;
    let has_data = record.location.is_some()
        && matches!(
            record.status,
            ImageStatus::Active | ImageStatus::Deactivated
        );
    let delayed = has_data && state.config.delayed_delete;
    let deleted = mark_deleted(state, &record.id, delayed).await?;
    if delayed {
        return Ok(());
    }
    if let Some(loc) = &deleted.record.location {
        if let Err(e) = delete_data(state, loc).await {
            // Put the image back as it was: the data is still there.
            restore(state, image).await;
            return Err(e);
        }
    }
    Ok(())
}

/// Marks the image deleted (or `pending_delete` when the scrubber removes its data later),
/// dropping its properties and members.
async fn mark_deleted(state: &AppState, id: &ImageId, delayed: bool) -> ApiResult<StoredImage> {
    state
        .registry
        .update::<ApiError, _>(id, move |s| {
            if s.record.status.is_deleted() {
                return Err(ApiError::not_found("Image not found."));
            }
            let now = Timestamp::now();
            s.record.status = if delayed {
                ImageStatus::PendingDelete
            } else {
                ImageStatus::Deleted
            };
            s.record.deleted = true;
            s.record.deleted_at = Some(now);
            s.record.updated_at = now;
            s.record.properties.clear();
            s.members.clear();
            Ok(())
        })
        .await
}

/// Writes `image` back as it was before a delete whose data removal failed.
async fn restore(state: &AppState, image: StoredImage) {
    let id = image.record.id.clone();
    let restored = state
        .registry
        .update::<ApiError, _>(&id, move |s| {
            *s = image.clone();
            Ok(())
        })
        .await;
    if let Err(e) = restored {
        tracing::error!(image = %id, error = %e, "could not restore an image whose data remains");
    }
}

/// Removes stored data; a missing object is fine.
pub async fn delete_data(state: &AppState, location: &StoredLocation) -> ApiResult<()> {
    let Some(store) = state.stores.get(location.store.as_str()) else {
        tracing::warn!(store = %location.store, "image data in an unconfigured store left alone");
        return Ok(());
    };
    match store.delete(&location.key).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}
