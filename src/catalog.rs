//! Image operations behind the HTTP handlers: create, update and delete with Glance v1's
//! processing order (validation, policy, visibility, then the change), and finding an image the
//! caller may see. Data uploads are handed to `upload`.

use std::collections::BTreeMap;
use std::sync::Arc;

use stores::{ByteStream, ForeignObject, ObjectKey, Store};
use url::Url;

use crate::access::Caller;
use crate::error::{ApiError, ApiResult};
use crate::http::image_meta::{validate_formats, MetaPatch};
use crate::model::{ImageId, ImageRecord, ImageStatus, RegisteredLocation, Timestamp};
use crate::protection::Op;
use crate::registry::StoredImage;
use crate::state::AppState;
use crate::upload;

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

/// The external sources a request names, validated.
#[derive(Default)]
struct ExternalSources {
    location: Option<LocationSource>,
    copy_from: Option<Url>,
}

/// Where `x-image-meta-location` points.
enum LocationSource {
    /// An `http(s)` URL under the `remote_sources` policy.
    Remote(Url),
    /// An object an admin registered from one of our own stores' backends, outside the
    /// namespace the gateway manages.
    Registered {
        store: Arc<dyn Store>,
        object: ForeignObject,
    },
}

impl ExternalSources {
    fn any(&self) -> bool {
        self.location.is_some() || self.copy_from.is_some()
    }

    /// The size of the first source, when it reports one; a missing object is 404.
    async fn probe_size(&self, state: &AppState) -> ApiResult<Option<u64>> {
        match (&self.location, &self.copy_from) {
            (Some(LocationSource::Remote(url)), _) | (None, Some(url)) => {
                state.remote.probe_size(url).await
            }
            (Some(LocationSource::Registered { store, object }), _) => {
                Ok(Some(store.head_foreign(object).await?))
            }
            (None, None) => Ok(None),
        }
    }
}

/// Reads `x-image-meta-location`: our own stores' objects (admins only), else a remote URL.
fn location_source(state: &AppState, caller: &Caller, text: &str) -> ApiResult<LocationSource> {
    let found = state
        .stores
        .iter()
        .find_map(|store| store.foreign_object(text).map(|o| (Arc::clone(store), o)));
    if let Some((store, object)) = found {
        if !caller.is_admin {
            return Err(ApiError::forbidden(
                "Only admins may register objects of the image stores as locations.",
            ));
        }
        return Ok(LocationSource::Registered { store, object });
    }
    state.remote.validate(text).map(LocationSource::Remote)
}

/// Checks done before anything is created or changed (POST steps 1–8, PUT steps 1–2, 8).
fn precheck(
    state: &AppState,
    caller: &Caller,
    req: &mut WriteRequest,
) -> ApiResult<ExternalSources> {
    let config = &state.config;
    validate_formats(
        &mut req.patch,
        &config.disk_formats,
        &config.container_formats,
    )
    .map_err(|e| ApiError::bad_request(e.0))?;
    let cap = config.image_size_cap;
    if req.content_length.is_some_and(|l| l > cap) || req.patch.size.is_some_and(|s| s > cap) {
        return Err(ApiError::bad_request(format!(
            "Denying attempt to upload image larger than {cap} bytes."
        )));
    }
    caller.check_writable()?;
    caller.check_publicize(req.patch.is_public == Some(true), config.publicize_image)?;
    let sources = ExternalSources {
        location: req
            .patch
            .location
            .as_deref()
            .map(|l| location_source(state, caller, l))
            .transpose()?,
        copy_from: req
            .copy_from
            .as_deref()
            .map(|l| state.remote.validate(l))
            .transpose()?,
    };
    if let Some(store) = &req.patch.store {
        state.store_for(Some(store))?;
    }
    Ok(sources)
}

fn protected(key: &str) -> ApiError {
    ApiError::forbidden(format!("Property '{key}' is protected"))
}

/// Property protection on POST: every property sent must be one the caller may create.
fn check_protected_create(state: &AppState, caller: &Caller, patch: &MetaPatch) -> ApiResult<()> {
    let rules = &state.config.property_rules;
    match patch
        .properties
        .keys()
        .find(|k| !rules.allows(caller, k, Op::Create))
    {
        Some(key) => Err(protected(key)),
        None => Ok(()),
    }
}

/// Property protection on PUT. Sending a property needs read access (and update access to
/// change its value, create access when it is new); a purge keeps the properties the caller
/// cannot read (adding them to the patch) and refuses to drop one it may read but not delete.
fn check_protected_update(
    state: &AppState,
    caller: &Caller,
    stored: &BTreeMap<String, Option<String>>,
    patch: &mut MetaPatch,
    purge: bool,
) -> ApiResult<()> {
    let rules = &state.config.property_rules;
    if !rules.is_active() {
        return Ok(());
    }
    for (key, value) in &patch.properties {
        let allowed = match stored.get(key) {
            None => rules.allows(caller, key, Op::Create),
            Some(old) => {
                rules.allows(caller, key, Op::Read)
                    && (old == value || rules.allows(caller, key, Op::Update))
            }
        };
        if !allowed {
            return Err(protected(key));
        }
    }
    if purge {
        for (key, value) in stored {
            if patch.properties.contains_key(key) {
                continue;
            }
            if !rules.allows(caller, key, Op::Read) {
                patch.properties.insert(key.clone(), value.clone());
            } else if !rules.allows(caller, key, Op::Delete) {
                return Err(protected(key));
            }
        }
    }
    Ok(())
}

fn check_property_quota(state: &AppState, count: usize) -> ApiResult<()> {
    let quota = state.config.image_property_quota;
    if quota >= 0 && count as i64 > quota {
        return Err(ApiError::too_large(format!(
            "The limit has been exceeded on the number of allowed image properties. Attempted: {count}, Maximum: {quota}"
        )));
    }
    Ok(())
}

/// Applies the patch's core fields and properties to a record.
fn apply_patch(record: &mut ImageRecord, patch: &MetaPatch, caller: &Caller, purge: bool) {
    if let Some(v) = &patch.name {
        record.name = v.clone();
    }
    if let Some(v) = patch.size {
        record.size = v;
    }
    if let Some(v) = patch.virtual_size {
        record.virtual_size = v;
    }
    if let Some(v) = &patch.disk_format {
        record.disk_format = v.clone();
    }
    if let Some(v) = &patch.container_format {
        record.container_format = v.clone();
    }
    if let Some(v) = &patch.checksum {
        record.checksum = v.clone();
    }
    if let Some(v) = patch.min_disk {
        record.min_disk = v;
    }
    if let Some(v) = patch.min_ram {
        record.min_ram = v;
    }
    if let Some(v) = patch.is_public {
        record.is_public = v;
    }
    if let Some(v) = patch.protected {
        record.protected = v;
    }
    if let (Some(owner), true) = (&patch.owner, caller.is_admin) {
        record.owner = owner.clone();
    }
    if purge {
        record.properties = patch.properties.clone();
    } else {
        for (k, v) in &patch.properties {
            record.properties.insert(k.clone(), v.clone());
        }
    }
}

/// Formats must be known before data or a location is attached.
fn require_formats(record: &ImageRecord) -> ApiResult<()> {
    if record.disk_format.is_none() {
        return Err(ApiError::bad_request("Disk format is not specified."));
    }
    if record.container_format.is_none() {
        return Err(ApiError::bad_request("Container format is not specified."));
    }
    Ok(())
}

/// Runs the upload of a queued image's data (POST mode B, PUT with a body).
async fn upload_data(
    state: &AppState,
    record: &ImageRecord,
    store_name: Option<&str>,
    data: IncomingData,
) -> ApiResult<ImageRecord> {
    require_formats(record)?;
    let store = state.store_for(store_name)?;
    if !data.content_type_ok {
        upload::kill(&state.registry, &record.id, ImageStatus::Queued).await?;
        return Err(ApiError::bad_request(
            "Content-Type must be application/octet-stream",
        ));
    }
    upload::upload(state, &record.id, store, data.body, data.content_length).await
}

/// Attaches the data of a queued image: the body, an external location, or a copy source.
async fn attach_source(
    state: &AppState,
    record: ImageRecord,
    req: WriteRequest,
    sources: ExternalSources,
    probed_size: Option<u64>,
) -> ApiResult<ImageRecord> {
    let count = u8::from(req.data.is_some())
        + u8::from(sources.location.is_some())
        + u8::from(sources.copy_from.is_some());
    if count > 1 {
        return Err(ApiError::bad_request(
            "It's invalid to provide multiple image sources.",
        ));
    }
    let store_name = req.patch.store.as_deref();
    if let Some(data) = req.data {
        return upload_data(state, &record, store_name, data).await;
    }
    if sources.location.is_some() {
        require_formats(&record)?;
        let remote_size = match probed_size {
            Some(s) => Some(s),
            None => sources.probe_size(state).await?,
        };
        let supplied = req.patch.size.filter(|s| *s > 0);
        if let (Some(supplied), Some(remote)) = (supplied, remote_size.filter(|s| *s > 0)) {
            if supplied != remote {
                return Err(ApiError::conflict(format!(
                    "Provided image size must match the stored image size. (provided size: {supplied}, stored size: {remote})"
                )));
            }
        }
        let size = supplied.or(remote_size).unwrap_or(0);
        let (remote_url, registered) = match sources.location {
            Some(LocationSource::Remote(url)) => (Some(url.to_string()), None),
            Some(LocationSource::Registered { store, object }) => (
                None,
                Some(RegisteredLocation {
                    store: store.name().to_string(),
                    object,
                }),
            ),
            None => (None, None),
        };
        return Ok(state
            .registry
            .update::<ApiError, _>(&record.id, move |s| {
                if s.record.status != ImageStatus::Queued {
                    return Err(ApiError::conflict("Cannot upload to an unqueued image"));
                }
                s.record.status = ImageStatus::Active;
                s.record.remote_url = remote_url.clone();
                s.record.registered = registered.clone();
                s.record.size = size;
                s.record.updated_at = Timestamp::now();
                Ok(())
            })
            .await?
            .record);
    }
    if let Some(url) = sources.copy_from {
        let store = state.store_for(store_name)?;
        tokio::spawn(copy_in_background(
            state.clone(),
            record.id.clone(),
            url,
            store,
        ));
    }
    Ok(record)
}

/// Copy-from: fetch the URL and run the upload pipeline; the client polls for the outcome.
async fn copy_in_background(
    state: AppState,
    id: ImageId,
    url: Url,
    store: std::sync::Arc<dyn stores::Store>,
) {
    let outcome = match state.remote.open(&url).await {
        Ok((body, len)) => upload::upload(&state, &id, store, body, len)
            .await
            .map(|_| ()),
        Err(e) => upload::kill(&state.registry, &id, ImageStatus::Queued)
            .await
            .and(Err(e)),
    };
    match outcome {
        Ok(()) => tracing::info!(image = %id, "copy from external source finished"),
        Err(e) => tracing::warn!(image = %id, error = %e, "copy from external source failed"),
    }
}

/// `POST /v1/images`.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    mut req: WriteRequest,
) -> ApiResult<ImageRecord> {
    let sources = precheck(state, caller, &mut req)?;
    check_protected_create(state, caller, &req.patch)?;
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
    let has_source = req.data.is_some() || sources.any();
    if req.patch.size == Some(0) && !has_source {
        record.status = ImageStatus::Active;
    }
    let record = state.registry.insert_new(record).await?;
    if !has_source {
        return Ok(record);
    }
    attach_source(state, record, req, sources, probed_size).await
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
    if current.status.is_deleted() {
        return Err(ApiError::forbidden("Forbidden to update deleted image."));
    }
    if !caller.is_admin
        && matches!(
            current.status,
            ImageStatus::Active | ImageStatus::Deactivated
        )
    {
        if req.patch.size.is_some_and(|s| s != current.size) {
            return Err(ApiError::forbidden(
                "Forbidden to modify 'size' of active image.",
            ));
        }
        if req
            .patch
            .checksum
            .as_ref()
            .is_some_and(|c| *c != current.checksum)
        {
            return Err(ApiError::forbidden(
                "Forbidden to modify 'checksum' of active image.",
            ));
        }
    }
    if req
        .patch
        .status
        .as_ref()
        .is_some_and(|s| s != current.status.as_str())
    {
        return Err(ApiError::forbidden(
            "Forbidden to modify 'status' of image.",
        ));
    }
    if req
        .patch
        .id
        .as_ref()
        .is_some_and(|i| i != current.id.as_str())
    {
        return Err(ApiError::forbidden("Forbidden to modify 'id' of image."));
    }
    if req.data.is_some() && current.status != ImageStatus::Queued {
        return Err(ApiError::conflict("Cannot upload to an unqueued image"));
    }
    if sources.any() && current.status != ImageStatus::Queued {
        return Err(ApiError::bad_request(
            "Attempted to update Location field for an image not in queued status.",
        ));
    }
    // Properties are never purged by a PUT that uploads data.
    let purge = req.purge_props && req.data.is_none();
    check_protected_update(state, caller, &current.properties, &mut req.patch, purge)?;
    let property_count = if purge {
        req.patch.properties.len()
    } else {
        let mut keys: std::collections::BTreeSet<&String> = current.properties.keys().collect();
        keys.extend(req.patch.properties.keys());
        keys.len()
    };
    check_property_quota(state, property_count)?;
    caller.check_modify(&image)?;

    let patch = req.patch.clone();
    let caller_for_change = caller.clone();
    let updated = state
        .registry
        .update::<ApiError, _>(&current.id, move |s| {
            if s.record.status.is_deleted() {
                return Err(ApiError::forbidden("Forbidden to update deleted image."));
            }
            apply_patch(&mut s.record, &patch, &caller_for_change, purge);
            s.record.updated_at = Timestamp::now();
            Ok(())
        })
        .await?
        .record;
    let has_source = req.data.is_some() || sources.any();
    if !has_source {
        return Ok(updated);
    }
    if updated.status != ImageStatus::Queued {
        return Err(ApiError::conflict("Cannot upload to an unqueued image"));
    }
    attach_source(state, updated, req, sources, None).await
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
    let before = image.clone();
    let deleted = state
        .registry
        .update::<ApiError, _>(&record.id, move |s| {
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
        .await?;
    if delayed {
        return Ok(());
    }
    if let Some(loc) = &deleted.record.location {
        if let Err(e) = delete_data(state, &loc.store, &loc.key).await {
            // Put the image back as it was: the data is still there.
            let restore = before.clone();
            let _ = state
                .registry
                .update::<ApiError, _>(&record.id, move |s| {
                    *s = restore.clone();
                    Ok(())
                })
                .await;
            return Err(e);
        }
    }
    Ok(())
}

/// Removes stored data; a missing object is fine.
pub async fn delete_data(state: &AppState, store: &str, key: &str) -> ApiResult<()> {
    let Some(store) = state.stores.get(store) else {
        tracing::warn!(%store, "image data in an unconfigured store left alone");
        return Ok(());
    };
    let Some(key) = ObjectKey::parse(key) else {
        return Ok(());
    };
    match store.delete(&key).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}
