//! Handlers for `/images`, `/images/detail` and `/images/{id}`: parse the request, call
//! `catalog` / `listing`, render the response.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde_json::json;

use super::image_meta::{self, is_true_word, unquote};
use super::range::{parse_range, ByteRangeRequest};
use super::views::{self, json_response, Keyed};
use super::{host, list_query, Ctx};
use crate::catalog::{self, ImageData, IncomingData, WriteRequest};
use crate::error::{ApiError, ApiResult};
use crate::listing;
use crate::model::ImageRecord;
use std::borrow::Cow;

pub async fn list(ctx: &Ctx, detail: bool) -> ApiResult<Response> {
    let config = &ctx.state.config;
    let query = list_query::parse(
        ctx.query.as_deref(),
        config.limit_param_default,
        config.api_limit_max,
    )
    .map_err(ApiError::bad_request)?;
    let filtered_on = query.filters.properties.iter().map(|(k, _)| k);
    if !ctx
        .state
        .property_rules
        .may_filter_on(&ctx.caller, filtered_on)
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
        json_response(StatusCode::OK, &Keyed("images", &images))
    } else {
        let images: Vec<_> = page.iter().map(views::brief).collect();
        json_response(StatusCode::OK, &Keyed("images", &images))
    })
}

fn direct_url(ctx: &Ctx, record: &ImageRecord) -> Option<String> {
    catalog::direct_url(&ctx.state, &ctx.caller, record)
}

fn readable<'a>(ctx: &Ctx, record: &'a ImageRecord) -> Cow<'a, ImageRecord> {
    ctx.state.property_rules.readable(&ctx.caller, record)
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
    // As Glance's HEAD answers.
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    Ok(response)
}

pub async fn show(ctx: &Ctx, id: &str) -> ApiResult<Response> {
    let record = catalog::find_downloadable(&ctx.state, &ctx.caller, id).await?;
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
    let ranged = range.is_some();
    let data = catalog::open_data(&ctx.state, &record, range).await?;
    Ok(data_response(data, ranged, headers))
}

/// Renders opened image data: 206 with `Content-Range` for a ranged object, else 200; remote
/// data is always whole and offers no ranges.
fn data_response(data: ImageData, ranged: bool, mut headers: HeaderMap) -> Response {
    let (status, body, length) = match data {
        ImageData::Empty => (StatusCode::OK, Body::empty(), 0),
        ImageData::Remote { body, len } => {
            headers.remove(header::ACCEPT_RANGES);
            (StatusCode::OK, download_body(body), len)
        }
        ImageData::Object(object) => {
            let (start, end, total) = (object.range.start, object.range.end, object.total_len);
            let mut status = StatusCode::OK;
            if ranged {
                status = StatusCode::PARTIAL_CONTENT;
                let cr = format!("bytes {start}-{}/{total}", end - 1);
                if let Ok(cr) = HeaderValue::from_str(&cr) {
                    headers.insert(header::CONTENT_RANGE, cr);
                }
            }
            (status, download_body(object.body), end - start)
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().extend(headers);
    response
}

/// Downloads hand each chunk to hyper as the store yields it, never copied: the file store reads
/// in large chunks, and a relayed backend's chunks are whatever its socket gave, which hyper
/// writes out together (vectored) when several are waiting.
fn download_body(body: stores::ByteStream) -> Body {
    Body::from_stream(body.map_err(axum::Error::new))
}

/// Reads the parts of a POST or PUT that describe metadata and data.
fn write_request(ctx: &Ctx, body: Body) -> ApiResult<WriteRequest> {
    let headers = &ctx.headers;
    let patch = image_meta::decode(headers).map_err(|e| ApiError::bad_request(e.0))?;
    let content_length = content_length(headers)?;
    let has_data = is_chunked(headers) || content_length.is_some_and(|l| l > 0);
    let data = has_data.then(|| IncomingData {
        body: Box::pin(
            body.into_data_stream()
                .map_err(|e| std::io::Error::other(e.to_string())),
        ),
        content_type_ok: is_octet_stream(headers),
        content_length,
    });
    let text = |name: &str| {
        let value = headers.get(name)?;
        Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
    };
    Ok(WriteRequest {
        patch,
        data,
        content_length,
        copy_from: text("x-glance-api-copy-from").map(|v| unquote(v.trim()).into_owned()),
        purge_props: text("x-glance-registry-purge-props").is_none_or(|v| is_true_word(&v)),
    })
}

fn content_length(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    let length = value.to_str().ok().and_then(image_meta::parse_u64);
    length
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("Invalid Content-Length"))
}

/// A body framed by a transfer coding carries data whatever its length.
fn is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get(header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|te| {
            te.split(',').any(|t| {
                matches!(
                    t.trim().to_ascii_lowercase().as_str(),
                    "chunked" | "compress" | "deflate" | "gzip" | "identity"
                )
            })
        })
}

fn is_octet_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/octet-stream"))
}

fn image_response(status: StatusCode, record: &ImageRecord, ctx: &Ctx) -> Response {
    let mut response = json_response(
        status,
        &Keyed(
            "image",
            &views::full(&readable(ctx, record), direct_url(ctx, record)),
        ),
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
    // JSON and `ETag` only, as Glance: metadata headers would push an image with many properties
    // past the 100-header limit of Python's http.client.
    Ok(image_response(StatusCode::OK, &record, ctx))
}

pub async fn delete(ctx: &Ctx, id: &str) -> ApiResult<Response> {
    catalog::delete(&ctx.state, &ctx.caller, id).await?;
    Ok(StatusCode::OK.into_response())
}
