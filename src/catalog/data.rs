//! Reading an image's data: which images may be downloaded, where their bytes come from (our own
//! store, an object registered from a store's backend, or a remote URL), and the credential-free
//! location admins may be shown.

use std::ops::Range;

use axum::http::StatusCode;
use stores::{ByteStream, GetObject};

use super::find_visible;
use crate::access::Caller;
use crate::error::{ApiError, ApiResult};
use crate::model::{ImageRecord, ImageStatus};
use crate::state::AppState;

/// An image's data, opened.
pub enum ImageData {
    /// An empty image: it has no data in any store.
    Empty,
    /// An object of one of our stores (own or registered): whole, or the range asked for.
    Object(GetObject),
    /// A remote location, always served whole; `len` as the remote reports it, else the
    /// recorded size.
    Remote { body: ByteStream, len: u64 },
}

/// An image the caller may see whose data may be downloaded (it is active).
pub async fn find_downloadable(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<ImageRecord> {
    let record = find_visible(state, caller, id).await?.record;
    match record.status {
        ImageStatus::Active => Ok(record),
        ImageStatus::Deactivated => Err(ApiError::forbidden(
            "The requested image has been deactivated. Image data download is forbidden.",
        )),
        _ => Err(ApiError::not_found(format!("Image {id} is not active"))),
    }
}

/// Opens the data of `record`, or `range` of it (a remote location ignores the range).
pub async fn open_data(
    state: &AppState,
    record: &ImageRecord,
    range: Option<Range<u64>>,
) -> ApiResult<ImageData> {
    if record.size == 0 {
        return Ok(ImageData::Empty);
    }
    if let Some(loc) = &record.location {
        let store = state.store_named(&loc.store)?;
        return Ok(ImageData::Object(store.get(&loc.key, range).await?));
    }
    if let Some(reg) = &record.registered {
        let store = state.store_named(&reg.store)?;
        return Ok(ImageData::Object(
            store.get_foreign(&reg.object, range).await?,
        ));
    }
    open_remote(state, record).await
}

async fn open_remote(state: &AppState, record: &ImageRecord) -> ApiResult<ImageData> {
    let url = record
        .remote_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .ok_or_else(|| ApiError::not_found("Image data could not be found."))?;
    let (body, len) = state.remote.open(&url).await.map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            e
        } else {
            ApiError::unavailable("The external image location is unavailable.")
        }
    })?;
    Ok(ImageData::Remote {
        body,
        len: len.unwrap_or(record.size),
    })
}

/// The credential-free location, for admins when `show_image_direct_url` is on.
pub fn direct_url(state: &AppState, caller: &Caller, record: &ImageRecord) -> Option<String> {
    if !(state.config.show_image_direct_url && caller.is_admin) {
        return None;
    }
    if let Some(reg) = &record.registered {
        let store = state.stores.get(reg.store.as_str())?;
        return Some(format!(
            "{}://{}/{}",
            store.kind(),
            reg.object.container,
            reg.object.name
        ));
    }
    let loc = record.location.as_ref()?;
    let store = state.stores.get(loc.store.as_str())?;
    Some(store.describe(&loc.key))
}
