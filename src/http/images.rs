//! Handlers for `/images`, `/images/detail` and `/images/{id}`: parse the request, call
//! `catalog` / `listing`, render the response.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde_json::json;
use stores::ObjectKey;

use super::image_meta::{self, is_true_word, unquote};
use super::range::{parse_range, ByteRangeRequest};
use super::views::{self, json_response};
use super::{host, list_query, Ctx};
use crate::catalog::{self, IncomingData, WriteRequest};
use crate::error::{ApiError, ApiResult};
use crate::listing;
use crate::model::{ImageRecord, ImageStatus};
use crate::protection::Op;
use std::borrow::Cow;

/// Downloads are relayed in chunks of up to this size.
const DOWNLOAD_CHUNK: usize = 256 * 1024;

pub async fn list(ctx: &Ctx, detail: bool) -> ApiResult<Response> {
    let config = &ctx.state.config;
    let query = list_query::parse(
        ctx.query.as_deref(),
        config.limit_param_default,
        config.api_limit_max,
    )
    .map_err(ApiError::bad_request)?;
    let rules = &config.property_rules;
    // Filtering on a property the caller may not read would reveal its values.
    if query
        .filters
        .properties
        .iter()
        .any(|(k, _)| !rules.allows(&ctx.caller, k, Op::Read))
    {
        return Ok(json_response(StatusCode::OK, &json!({ "images": [] })));
    }
    let page = listing::select(&ctx.state.registry, &ctx.caller, &query).await?;
    Ok(if detail {
        let page: Vec<_> = page.iter().map(|r| readable(ctx, r)).collect();
        let images: Vec<_> = page
            .iter()
            .map(|r| views::full(r, direct_url(ctx, r)))
            .collect();
        json_response(StatusCode::OK, &json!({ "images": images }))
    } else {
        let images: Vec<_> = page.iter().map(views::brief).collect();
        json_response(StatusCode::OK, &json!({ "images": images }))
    })
}

/// The credential-free location, for admins when `show_image_direct_url` is on.
fn direct_url(ctx: &Ctx, record: &ImageRecord) -> Option<String> {
    if !(ctx.state.config.show_image_direct_url && ctx.caller.is_admin) {
        return None;
    }
    if let Some(reg) = &record.registered {
        let store = ctx.state.stores.get(&reg.store)?;
        return Some(format!(
            "{}://{}/{}",
            store.kind(),
            reg.object.container,
            reg.object.name
        ));
    }
    let loc = record.location.as_ref()?;
    let store = ctx.state.stores.get(&loc.store)?;
    Some(store.describe(&ObjectKey::parse(&loc.key)?))
}

/// The record as the caller may see it: properties it may not read left out.
fn readable<'a>(ctx: &Ctx, record: &'a ImageRecord) -> Cow<'a, ImageRecord> {
    let rules = &ctx.state.config.property_rules;
    if !rules.is_active() {
        return Cow::Borrowed(record);
    }
    let mut shown = record.clone();
    shown
        .properties
        .retain(|k, _| rules.allows(&ctx.caller, k, Op::Read));
    Cow::Owned(shown)
}

fn meta_headers(ctx: &Ctx, record: &ImageRecord) -> HeaderMap {
    let mut headers = HeaderMap::new();
    image_meta::encode(&readable(ctx, record), &mut headers);
    if let Some(url) = direct_url(ctx, record).and_then(|u| HeaderValue::from_str(&u).ok()) {
        headers.insert("x-image-meta-location", url);
    }
    headers
}

pub async fn head(ctx: &Ctx, id: &str) -> ApiResult<Response> {
    let image = catalog::find_visible(&ctx.state, &ctx.caller, id).await?;
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .extend(meta_headers(ctx, &image.record));
    Ok(response)
}

pub async fn show(ctx: &Ctx, id: &str) -> ApiResult<Response> {
    let image = catalog::find_visible(&ctx.state, &ctx.caller, id).await?;
    let record = image.record;
    match record.status {
        ImageStatus::Active => {}
        ImageStatus::Deactivated => {
            return Err(ApiError::forbidden(
                "The requested image has been deactivated. Image data download is forbidden.",
            ))
        }
        _ => return Err(ApiError::not_found(format!("Image {id} is not active"))),
    }
    let mut headers = meta_headers(ctx, &record);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let range = match parse_range(&ctx.headers, record.size) {
        ByteRangeRequest::Whole => None,
        ByteRangeRequest::Unsatisfiable => {
            return Err(stores::StoreError::RangeNotSatisfiable { len: record.size }.into())
        }
        ByteRangeRequest::Range(r) => Some(r),
    };
    // An empty image has no data in any store.
    let object = if record.size == 0 {
        None
    } else if let Some(loc) = &record.location {
        let key = ObjectKey::parse(&loc.key)
            .ok_or_else(|| ApiError::internal(format!("bad stored key for {id}")))?;
        let store = ctx.state.store_named(&loc.store)?;
        Some(store.get(&key, range.clone()).await?)
    } else if let Some(reg) = &record.registered {
        let store = ctx.state.store_named(&reg.store)?;
        Some(store.get_foreign(&reg.object, range.clone()).await?)
    } else {
        return remote_download(ctx, &record, headers).await;
    };
    let (status, body, length, content_range) = match object {
        None => (StatusCode::OK, Body::empty(), 0, None),
        Some(object) => {
            let length = object.range.end - object.range.start;
            let body = Body::from_stream(
                stores::chunker::coalesce(object.body, DOWNLOAD_CHUNK).map_err(axum::Error::new),
            );
            match range {
                None => (StatusCode::OK, body, length, None),
                Some(_) => {
                    let cr = format!(
                        "bytes {}-{}/{}",
                        object.range.start,
                        object.range.end - 1,
                        object.total_len
                    );
                    (StatusCode::PARTIAL_CONTENT, body, length, Some(cr))
                }
            }
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(cr) = content_range.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::CONTENT_RANGE, cr);
    }
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().extend(headers);
    Ok(response)
}

/// Streams an image whose data sits at an external location (served whole, no ranges).
async fn remote_download(
    ctx: &Ctx,
    record: &ImageRecord,
    mut headers: HeaderMap,
) -> ApiResult<Response> {
    let url = record
        .remote_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .ok_or_else(|| ApiError::not_found("Image data could not be found."))?;
    let (body, len) = ctx.state.remote.open(&url).await.map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            e
        } else {
            ApiError::unavailable("The external image location is unavailable.")
        }
    })?;
    headers.remove(header::ACCEPT_RANGES);
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(len.unwrap_or(record.size)),
    );
    let body = stores::chunker::coalesce(body, DOWNLOAD_CHUNK).map_err(axum::Error::new);
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().extend(headers);
    Ok(response)
}

/// Reads the parts of a POST or PUT that describe metadata and data.
fn write_request(ctx: &Ctx, body: Body) -> ApiResult<WriteRequest> {
    let patch = image_meta::decode(&ctx.headers).map_err(|e| ApiError::bad_request(e.0))?;
    let content_length = match ctx.headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(image_meta::parse_u64)
                .ok_or_else(|| ApiError::bad_request("Invalid Content-Length"))?,
        ),
    };
    let chunked = ctx
        .headers
        .get(header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|te| {
            te.split(',').any(|t| {
                matches!(
                    t.trim().to_ascii_lowercase().as_str(),
                    "chunked" | "compress" | "deflate" | "gzip" | "identity"
                )
            })
        });
    let has_data = chunked || content_length.is_some_and(|l| l > 0);
    let content_type_ok = ctx
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/octet-stream"));
    let data = has_data.then(|| IncomingData {
        body: Box::pin(
            body.into_data_stream()
                .map_err(|e| std::io::Error::other(e.to_string())),
        ),
        content_type_ok,
        content_length,
    });
    let copy_from = ctx
        .headers
        .get("x-glance-api-copy-from")
        .map(|v| unquote(String::from_utf8_lossy(v.as_bytes()).trim()).into_owned());
    let purge_props = ctx
        .headers
        .get("x-glance-registry-purge-props")
        .map(|v| is_true_word(&String::from_utf8_lossy(v.as_bytes())))
        .unwrap_or(true);
    Ok(WriteRequest {
        patch,
        data,
        content_length,
        copy_from,
        purge_props,
    })
}

fn image_response(status: StatusCode, record: &ImageRecord, ctx: &Ctx) -> Response {
    let mut response = json_response(
        status,
        &json!({ "image": views::full(&readable(ctx, record), direct_url(ctx, record)) }),
    );
    if let Some(etag) = record
        .checksum
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

pub async fn create(ctx: &Ctx, body: Body) -> ApiResult<Response> {
    let request = write_request(ctx, body)?;
    let record = catalog::create(&ctx.state, &ctx.caller, request).await?;
    let mut response = image_response(StatusCode::CREATED, &record, ctx);
    let root = match &ctx.state.config.public_endpoint {
        Some(e) => e.clone(),
        None => format!("http://{}", host(&ctx.headers)),
    };
    if let Ok(location) = HeaderValue::from_str(&format!("{root}/v1/images/{}", record.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

pub async fn update(ctx: &Ctx, id: &str, body: Body) -> ApiResult<Response> {
    let request = write_request(ctx, body)?;
    let record = catalog::update(&ctx.state, &ctx.caller, id, request).await?;
    let mut response = image_response(StatusCode::OK, &record, ctx);
    response.headers_mut().extend(meta_headers(ctx, &record));
    Ok(response)
}

pub async fn delete(ctx: &Ctx, id: &str) -> ApiResult<Response> {
    catalog::delete(&ctx.state, &ctx.caller, id).await?;
    Ok(StatusCode::OK.into_response())
}
