//! Where a POST or PUT takes an image's data from: the request body, `x-image-meta-location`
//! (a remote URL or, for admins, an object of one of our stores' backends) or
//! `x-glance-api-copy-from`; and attaching that source to a queued image.

use std::sync::Arc;

use stores::{ForeignObject, Store};
use url::Url;

use super::patch::require_formats;
use super::{IncomingData, WriteRequest};
use crate::access::Caller;
use crate::error::{ApiError, ApiResult};
use crate::model::{ImageId, ImageRecord, ImageStatus, RegisteredLocation, Timestamp};
use crate::state::AppState;
use crate::upload;

/// The sources a request names, validated, and the store uploaded data goes to (resolved once
/// per request).
pub(super) struct Sources {
    location: Option<LocationSource>,
    copy_from: Option<Url>,
    store: Arc<dyn Store>,
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

impl Sources {
    /// Validates the location and copy source a request names, then resolves its target store.
    pub(super) fn read(state: &AppState, caller: &Caller, req: &WriteRequest) -> ApiResult<Self> {
        let location = req
            .patch
            .location
            .as_deref()
            .map(|l| location_source(state, caller, l))
            .transpose()?;
        let copy_from = req
            .copy_from
            .as_deref()
            .map(|l| state.remote.validate(l))
            .transpose()?;
        let store = state.store_for(req.patch.store.as_deref())?;
        Ok(Self {
            location,
            copy_from,
            store,
        })
    }

    /// Does the request name a location or a copy source?
    pub(super) fn any_external(&self) -> bool {
        self.location.is_some() || self.copy_from.is_some()
    }

    /// The size of the first external source, when it reports one; a missing object is 404.
    pub(super) async fn probe_size(&self, state: &AppState) -> ApiResult<Option<u64>> {
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

/// Attaches the data of a queued image: the body, an external location, or a copy source.
pub(super) async fn attach(
    state: &AppState,
    record: ImageRecord,
    req: WriteRequest,
    sources: Sources,
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
    if let Some(data) = req.data {
        return upload_body(state, &record, sources.store, data).await;
    }
    if sources.location.is_some() {
        return register_location(state, &record, req.patch.size, sources, probed_size).await;
    }
    if let Some(url) = sources.copy_from {
        tokio::spawn(copy_in_background(
            state.clone(),
            record.id.clone(),
            url,
            sources.store,
        ));
    }
    Ok(record)
}

/// Runs the upload of a queued image's data (POST mode B, PUT with a body).
async fn upload_body(
    state: &AppState,
    record: &ImageRecord,
    store: Arc<dyn Store>,
    data: IncomingData,
) -> ApiResult<ImageRecord> {
    require_formats(record)?;
    if !data.content_type_ok {
        upload::kill(&state.registry, &record.id, ImageStatus::Queued).await?;
        return Err(ApiError::bad_request(
            "Content-Type must be application/octet-stream",
        ));
    }
    upload::upload(state, &record.id, store, data.body, data.content_length).await
}

/// Points the image at its external location and activates it; a size the client supplies must
/// match the one the location reports.
async fn register_location(
    state: &AppState,
    record: &ImageRecord,
    supplied_size: Option<u64>,
    sources: Sources,
    probed_size: Option<u64>,
) -> ApiResult<ImageRecord> {
    require_formats(record)?;
    let remote_size = match probed_size {
        Some(s) => Some(s),
        None => sources.probe_size(state).await?,
    };
    let size = agreed_size(supplied_size, remote_size)?;
    let (remote_url, registered) = match sources.location {
        Some(LocationSource::Remote(url)) => (Some(url.to_string()), None),
        Some(LocationSource::Registered { store, object }) => (
            None,
            Some(RegisteredLocation {
                store: store.name().clone(),
                object,
            }),
        ),
        None => (None, None),
    };
    let activated = state
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
        .await?;
    Ok(activated.record)
}

/// The size a registered location gets: the client's, which must match the one the location
/// reports when both are known (zero counts as unknown).
fn agreed_size(supplied: Option<u64>, remote: Option<u64>) -> ApiResult<u64> {
    let supplied = supplied.filter(|s| *s > 0);
    if let (Some(supplied), Some(remote)) = (supplied, remote.filter(|s| *s > 0)) {
        if supplied != remote {
            return Err(ApiError::conflict(format!(
                "Provided image size must match the stored image size. (provided size: {supplied}, stored size: {remote})"
            )));
        }
    }
    Ok(supplied.or(remote).unwrap_or(0))
}

/// Copy-from: fetch the URL and run the upload pipeline; the client polls for the outcome.
async fn copy_in_background(state: AppState, id: ImageId, url: Url, store: Arc<dyn Store>) {
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
