//! The HTTP surface: version negotiation, the one route table, identity and request ids.
//! Handlers live in `images` and `members`; they know no store backend.

pub mod image_meta;
mod images;
pub mod list_query;
mod members;
mod range;
pub mod views;

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::json;
use tracing::Instrument;

use crate::access::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-openstack-request-id");
const ACCEPT_VERSION_PREFIX: &str = "application/vnd.openstack.images-";
const V1_NAMES: &[&str] = &["v1", "v1.0", "v1.1"];

/// The application: every request goes through `dispatch`.
pub fn router(state: AppState) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

/// Where the version filter sends a request.
#[derive(Debug, PartialEq, Eq)]
enum Version<'a> {
    /// `/versions...`: the version document, 200.
    Document,
    /// An unknown or missing version: the version document, 300.
    MultipleChoices,
    /// Served as v1; the path below the version prefix.
    V1(&'a str),
}

fn negotiate<'a>(path: &'a str, accept: Option<&str>) -> Version<'a> {
    let trimmed = path.trim_start_matches('/');
    let (first, rest) = match trimmed.find('/') {
        Some(i) => (&trimmed[..i], &trimmed[i..]),
        None => (trimmed, ""),
    };
    if first == "versions" {
        return Version::Document;
    }
    if let Some(version) = accept.and_then(|a| a.strip_prefix(ACCEPT_VERSION_PREFIX)) {
        return if V1_NAMES.contains(&version) {
            Version::V1(path)
        } else {
            Version::MultipleChoices
        };
    }
    if V1_NAMES.contains(&first) {
        return Version::V1(rest);
    }
    // The seed document's unversioned paths are v1.
    if first == "images" || first == "shared-images" {
        return Version::V1(path);
    }
    Version::MultipleChoices
}

fn version_document(state: &AppState, headers: &HeaderMap, status: StatusCode) -> Response {
    let root = match &state.config.public_endpoint {
        Some(e) => e.clone(),
        None => format!("http://{}", host(headers)),
    };
    let href = format!("{root}/v1/");
    let body = json!({"versions": [
        {"id": "v1.1", "status": "CURRENT", "links": [{"rel": "self", "href": href}]},
        {"id": "v1.0", "status": "SUPPORTED", "links": [{"rel": "self", "href": href}]},
    ]});
    views::json_response(status, &body)
}

pub(crate) fn host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '@']))
        .unwrap_or("localhost")
        .to_owned()
}

/// The routes of v1, as path segments below the version prefix.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint {
    Root,
    Images,
    Detail,
    Image(String),
    Members(String),
    Member(String, String),
    SharedImages(String),
    Unknown,
}

fn decode_segment(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

fn endpoint(path: &str) -> Endpoint {
    let path = path.strip_prefix('/').unwrap_or(path);
    // One trailing slash is ignored (`/images/`), as the seed document writes it.
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        return Endpoint::Root;
    }
    let segments: Option<Vec<String>> = path.split('/').map(decode_segment).collect();
    let Some(segments) = segments else {
        return Endpoint::Unknown;
    };
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["images"] => Endpoint::Images,
        ["images", "detail"] => Endpoint::Detail,
        ["images", id] => Endpoint::Image(id.to_string()),
        ["images", id, "members"] => Endpoint::Members(id.to_string()),
        ["images", id, "members", m] => Endpoint::Member(id.to_string(), m.to_string()),
        ["shared-images", m] => Endpoint::SharedImages(m.to_string()),
        _ => Endpoint::Unknown,
    }
}

/// Everything a v1 handler needs from the request, besides the body.
pub(crate) struct Ctx {
    pub state: AppState,
    pub caller: Caller,
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Option<String>,
}

/// Requests with more header bytes than this answer 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;

async fn dispatch(State(state): State<AppState>, request: Request) -> Response {
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "Request headers are larger than 64 KiB.",
        )
        .into_response();
    }
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .map(str::to_owned);
    let path = request.uri().path().to_owned();
    match negotiate(&path, accept.as_deref()) {
        Version::Document => version_document(&state, request.headers(), StatusCode::OK),
        Version::MultipleChoices => {
            version_document(&state, request.headers(), StatusCode::MULTIPLE_CHOICES)
        }
        Version::V1(rest) => {
            let rest = rest.to_owned();
            serve_v1(state, request, &rest).await
        }
    }
}

fn request_id(headers: &HeaderMap) -> ApiResult<String> {
    match headers.get(&REQUEST_ID) {
        None => Ok(format!("req-{}", uuid::Uuid::new_v4())),
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| ApiError::bad_request("Invalid X-Openstack-Request-ID"))?;
            if text.len() > 64 {
                return Err(ApiError::new(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "X-Openstack-Request-ID is longer than 64 characters.",
                ));
            }
            Ok(if text.starts_with("req-") {
                text.to_owned()
            } else {
                format!("req-{text}")
            })
        }
    }
}

async fn serve_v1(state: AppState, request: Request, path: &str) -> Response {
    let (parts, body) = request.into_parts();
    let is_head = parts.method == Method::HEAD;
    let caller = match Caller::identify(&parts.headers, &state.config) {
        Ok(c) => c,
        Err(e) => return strip_head_body(e.into_response(), is_head),
    };
    let req_id = match request_id(&parts.headers) {
        Ok(id) => id,
        Err(e) => return strip_head_body(e.into_response(), is_head),
    };
    let span = tracing::info_span!("request", id = %req_id, method = %parts.method, path = %path);
    let started = Instant::now();
    let ctx = Ctx {
        state,
        caller,
        method: parts.method.clone(),
        headers: parts.headers,
        query: parts.uri.query().map(str::to_owned),
    };
    let endpoint = endpoint(path);
    let mut response = route(ctx, endpoint, body)
        .instrument(span.clone())
        .await
        .unwrap_or_else(IntoResponse::into_response);
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "served"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&req_id) {
        response.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    strip_head_body(response, is_head)
}

/// HEAD responses carry headers only (errors included).
fn strip_head_body(response: Response, is_head: bool) -> Response {
    if !is_head {
        return response;
    }
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Body::empty())
}

async fn route(ctx: Ctx, endpoint: Endpoint, body: Body) -> ApiResult<Response> {
    use Endpoint as E;
    let m = ctx.method.clone();
    match (endpoint, m) {
        (E::Root, Method::GET | Method::HEAD) => images::list(&ctx, false).await,
        (E::Root, _) => Err(ApiError::method_not_allowed("GET, HEAD")),
        (E::Images, Method::GET) => images::list(&ctx, false).await,
        (E::Images, Method::POST) => images::create(&ctx, body).await,
        (E::Images, _) => Err(ApiError::method_not_allowed("GET, POST")),
        (E::Detail, Method::GET) => images::list(&ctx, true).await,
        (E::Detail, Method::HEAD) => Err(ApiError::method_not_allowed("GET")),
        (E::Detail, _) => Err(ApiError::method_not_allowed("GET, HEAD")),
        (E::Image(id), Method::GET) => images::show(&ctx, &id).await,
        (E::Image(id), Method::HEAD) => images::head(&ctx, &id).await,
        (E::Image(id), Method::PUT) => images::update(&ctx, &id, body).await,
        (E::Image(id), Method::DELETE) => images::delete(&ctx, &id).await,
        (E::Image(_), _) => Err(ApiError::method_not_allowed("GET, HEAD, PUT, DELETE")),
        (E::Members(id), Method::GET) => members::list(&ctx, &id).await,
        (E::Members(id), Method::PUT) => members::replace(&ctx, &id, body).await,
        (E::Members(_), _) => Err(ApiError::method_not_allowed("GET, PUT")),
        (E::Member(id, member), Method::PUT) => members::add(&ctx, &id, &member, body).await,
        (E::Member(id, member), Method::DELETE) => members::remove(&ctx, &id, &member).await,
        (E::Member(..), Method::GET) => Err(ApiError::method_not_allowed("PUT, DELETE")),
        (E::Member(..), _) => Err(ApiError::method_not_allowed("GET, PUT, DELETE")),
        (E::SharedImages(member), Method::GET | Method::HEAD) => {
            members::shared_images(&ctx, &member).await
        }
        (E::SharedImages(_), _) => Err(ApiError::method_not_allowed("GET, HEAD")),
        (E::Unknown, m) if is_known_method(&m) => {
            Err(ApiError::not_found("The resource could not be found."))
        }
        (E::Unknown, _) => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "The server does not support this method.",
        )),
    }
}

fn is_known_method(m: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ]
    .contains(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_negotiation() {
        assert_eq!(negotiate("/versions", None), Version::Document);
        assert_eq!(negotiate("/", None), Version::MultipleChoices);
        assert_eq!(negotiate("/v2/images", None), Version::MultipleChoices);
        assert_eq!(negotiate("/v1.2/images", None), Version::MultipleChoices);
        assert_eq!(negotiate("/v10/images", None), Version::MultipleChoices);
        assert_eq!(negotiate("/v1/images", None), Version::V1("/images"));
        assert_eq!(negotiate("/v1.0/images", None), Version::V1("/images"));
        assert_eq!(negotiate("/v1.1/images/x", None), Version::V1("/images/x"));
        assert_eq!(negotiate("/images/", None), Version::V1("/images/"));
        assert_eq!(
            negotiate("/shared-images/t", None),
            Version::V1("/shared-images/t")
        );
        let v1 = Some("application/vnd.openstack.images-v1");
        assert_eq!(negotiate("/images", v1), Version::V1("/images"));
        assert_eq!(negotiate("/v1/images", v1), Version::V1("/v1/images"));
        let v10 = Some("application/vnd.openstack.images-v10");
        assert_eq!(negotiate("/images", v10), Version::MultipleChoices);
        let compute = Some("application/vnd.openstack.compute-v1");
        assert_eq!(negotiate("/v1/images", compute), Version::V1("/images"));
    }

    #[test]
    fn endpoints() {
        assert_eq!(endpoint(""), Endpoint::Root);
        assert_eq!(endpoint("/"), Endpoint::Root);
        assert_eq!(endpoint("/images"), Endpoint::Images);
        assert_eq!(endpoint("/images/"), Endpoint::Images);
        assert_eq!(endpoint("/images/detail"), Endpoint::Detail);
        assert_eq!(endpoint("/images/abc"), Endpoint::Image("abc".into()));
        assert_eq!(
            endpoint("/images/abc/members/t%20x"),
            Endpoint::Member("abc".into(), "t x".into())
        );
        assert_eq!(endpoint("/images.json"), Endpoint::Unknown);
        assert_eq!(endpoint("/v1/images"), Endpoint::Unknown);
        assert_eq!(endpoint("/versions"), Endpoint::Unknown);
    }
}
