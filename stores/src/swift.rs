//! The Swift store: objects in one container through the Swift v1 API; large ones as segments in a
//! second container plus a Static Large Object manifest (a Dynamic one where the cluster has no
//! SLO). It owns auth (v1 tokens, renewed on 401), segmenting and cleanup, and never hashes the
//! image for the gateway: the only MD5 here is per object or segment, to check Swift's ETag. A
//! plain object written through [`crate::put_digested`] is not even hashed here: its ETag is
//! checked against the caller's running MD5 of the body, which covers exactly the same bytes.
//!
//! How `put` chooses its shape:
//!
//! * `size_hint` below `large_object_size`: one PUT of the stream (chunked transfer) to
//!   `<container>/<key>`.
//! * `size_hint` at or above it, **or no hint at all**: segments of exactly `segment_size` bytes
//!   streamed one after another to `<segment_container>/<key>/.upload-<run>/<n:08>`, then a
//!   manifest at `<container>/<key>`. A plain PUT cannot become segmented once bytes have gone out
//!   (that would need the whole object buffered, or a server-side copy of it), so a stream of
//!   unknown length is always segmented; one that ends inside its first segment becomes a
//!   one-segment manifest. Only an empty stream is stored as a plain (empty) object.
//!
//! Each segment is split off the body at its exact offset and streamed as it arrives; nothing is
//! buffered beyond the chunk in hand. `<run>` is a fresh id per upload, so racing uploads of one
//! key never share segments, and the sweep can tell a finished run (its manifest names it) from
//! an abandoned one. Keys never have a component starting with `.`, so `<key>/.upload-` is a
//! prefix no other key's segments can match.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, ETAG, RANGE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::{Notify, OnceCell};

use crate::ownership::MARKER;
use crate::{
    clip_range, ByteStream, ForeignObject, GetObject, Namespace, ObjectInfo, ObjectKey, RunningMd5,
    Store, StoreError, StoreName, SweepReport,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Swift's default `max_file_size` (5 GiB + 2 bytes), rounded down: the most one PUT may carry.
const MAX_SINGLE_OBJECT: u64 = 5 * GIB;
/// Between a key and its upload run in segment names.
const SEGMENT_MARK: &str = "/.upload-";
const LISTING_LIMIT: usize = 10_000;
const DELETE_CONCURRENCY: usize = 8;
/// A streamed PUT cannot be replayed after a 401 once its body has been read, so a token that no
/// response has confirmed for this long is checked with a HEAD first.
const CONFIRM_WITHIN: Duration = Duration::from_secs(30);
/// A token that expires within this margin is renewed before a streamed PUT.
const EXPIRY_MARGIN: Duration = Duration::from_secs(120);
/// Polls of a fresh Dynamic Large Object until the container listing shows all its segments.
const DLO_CHECKS: u32 = 20;

fn default_large_object_size() -> u64 {
    5 * GIB
}
fn default_segment_size() -> u64 {
    200 * MIB
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    60
}
fn default_read_timeout() -> u64 {
    60
}

/// `[stores.<name>]` with `kind = "swift"`.
///
/// Credentials: `auth_url` + `user` + `key` (or `key_file`) for v1 auth, and/or a fixed
/// `storage_url` + `token` (or `token_file`). With both, the fixed token is used first and the
/// credentials renew it; `storage_url` then overrides the URL the auth endpoint returns.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwiftStoreConfig {
    pub auth_url: Option<String>,
    pub user: Option<String>,
    pub key: Option<String>,
    pub key_file: Option<PathBuf>,
    pub storage_url: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub container: String,
    /// Create the container and the segment container on first use.
    #[serde(default)]
    pub create_container: bool,
    /// Objects declared at least this large go up as segments (at most 5 GiB).
    #[serde(default = "default_large_object_size")]
    pub large_object_size: u64,
    #[serde(default = "default_segment_size")]
    pub segment_size: u64,
    /// Defaults to `<container>_segments`.
    pub segment_container: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Bound on requests without a streamed body, and on waiting for response headers.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Longest silence while streaming: between chunks of a download, and between the end of an
    /// upload's body and Swift's answer.
    #[serde(default = "default_read_timeout")]
    pub read_timeout_secs: u64,
    /// Take the container over from the registry its ownership marker names (off: refuse to
    /// start).
    #[serde(default)]
    pub adopt: bool,
}

impl fmt::Debug for SwiftStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "******");
        f.debug_struct("SwiftStoreConfig")
            .field("auth_url", &self.auth_url)
            .field("user", &self.user)
            .field("key", &redacted(&self.key))
            .field("key_file", &self.key_file)
            .field("storage_url", &self.storage_url)
            .field("token", &redacted(&self.token))
            .field("token_file", &self.token_file)
            .field("container", &self.container)
            .field("create_container", &self.create_container)
            .field("large_object_size", &self.large_object_size)
            .field("segment_size", &self.segment_size)
            .field("segment_container", &self.segment_container)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("read_timeout_secs", &self.read_timeout_secs)
            .finish()
    }
}

/// A credential; `Debug` never shows it.
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("******")
    }
}

#[derive(Debug)]
struct Credentials {
    auth_url: String,
    user: String,
    key: Secret,
}

/// A storage URL and the token that opens it.
struct Session {
    storage_url: String,
    /// Marked sensitive so HTTP-level debug output hides it too.
    token: HeaderValue,
    generation: u64,
    expires_at: Option<Instant>,
    /// Milliseconds since `Inner::epoch` of the last response that accepted the token; 0: never.
    confirmed_ms: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ManifestKind {
    Static { max_segments: u64 },
    Dynamic,
}

/// The Swift store. Cheap to share: all state sits behind one `Arc`, which cleanup tasks of
/// cancelled uploads hold on to.
pub struct SwiftStore {
    inner: Arc<Inner>,
}

struct Inner {
    name: StoreName,
    client: reqwest::Client,
    credentials: Option<Credentials>,
    storage_url_override: Option<String>,
    token_file: Option<PathBuf>,
    container: String,
    segment_container: String,
    create_container: bool,
    large_object_size: u64,
    segment_size: u64,
    request_timeout: Duration,
    read_timeout: Duration,
    epoch: Instant,
    session: Mutex<Option<Arc<Session>>>,
    /// Serialises renewals so a burst of 401s authenticates once.
    auth_lock: tokio::sync::Mutex<()>,
    generations: AtomicU64,
    containers_ready: OnceCell<()>,
    manifest_kind: OnceCell<ManifestKind>,
}

impl fmt::Debug for SwiftStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("SwiftStore")
            .field("name", &i.name)
            .field("container", &i.container)
            .field("segment_container", &i.segment_container)
            .field("user", &i.credentials.as_ref().map(|c| &c.user))
            .field("large_object_size", &i.large_object_size)
            .field("segment_size", &i.segment_size)
            .finish_non_exhaustive()
    }
}

fn config_err(name: &StoreName, message: impl fmt::Display) -> StoreError {
    StoreError::Config(format!("swift store {name}: {message}"))
}

/// Container names end up in URL paths unescaped, so keep them to a safe alphabet.
fn valid_container(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_url(url: &str) -> bool {
    match reqwest::Url::parse(url) {
        Ok(u) => matches!(u.scheme(), "http" | "https") && u.host().is_some(),
        Err(_) => false,
    }
}

async fn read_secret_file(
    name: &StoreName,
    field: &str,
    path: &PathBuf,
) -> Result<String, StoreError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| config_err(name, format!("cannot read {field}: {}", e.kind())))?;
    let secret = text.trim_end_matches(['\r', '\n']).to_owned();
    if secret.is_empty() {
        return Err(config_err(name, format!("{field} is empty")));
    }
    Ok(secret)
}

fn token_header(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(token).ok()?;
    value.set_sensitive(true);
    Some(value)
}

impl SwiftStore {
    /// Validates the configuration and reads key or token files. Does not contact Swift.
    pub async fn open(name: StoreName, config: &SwiftStoreConfig) -> Result<Self, StoreError> {
        let c = config;
        if !valid_container(&c.container) {
            return Err(config_err(
                &name,
                "container must be 1-256 of A-Z a-z 0-9 . _ -",
            ));
        }
        let segment_container = c
            .segment_container
            .clone()
            .unwrap_or_else(|| format!("{}_segments", c.container));
        if !valid_container(&segment_container) || segment_container == c.container {
            return Err(config_err(
                &name,
                "segment_container must be a valid container name other than container",
            ));
        }
        if c.segment_size == 0 || c.segment_size > MAX_SINGLE_OBJECT {
            return Err(config_err(&name, "segment_size must be 1 byte to 5 GiB"));
        }
        if c.large_object_size == 0 || c.large_object_size > MAX_SINGLE_OBJECT {
            return Err(config_err(
                &name,
                "large_object_size must be 1 byte to 5 GiB",
            ));
        }
        if c.connect_timeout_secs == 0 || c.request_timeout_secs == 0 || c.read_timeout_secs == 0 {
            return Err(config_err(&name, "timeouts must be at least 1 second"));
        }

        let key = match (&c.key, &c.key_file) {
            (Some(_), Some(_)) => return Err(config_err(&name, "set key or key_file, not both")),
            (Some(k), None) => Some(k.clone()),
            (None, Some(path)) => Some(read_secret_file(&name, "key_file", path).await?),
            (None, None) => None,
        };
        let credentials = match (&c.auth_url, &c.user, key) {
            (Some(auth_url), Some(user), Some(key)) => {
                if !valid_url(auth_url) {
                    return Err(config_err(&name, "auth_url is not an http(s) URL"));
                }
                Some(Credentials {
                    auth_url: auth_url.clone(),
                    user: user.clone(),
                    key: Secret(key),
                })
            }
            (None, None, None) => None,
            _ => {
                return Err(config_err(
                    &name,
                    "auth_url, user and key (or key_file) go together",
                ))
            }
        };
        let token = match (&c.token, &c.token_file) {
            (Some(_), Some(_)) => {
                return Err(config_err(&name, "set token or token_file, not both"))
            }
            (Some(t), None) => Some(t.clone()),
            (None, Some(path)) => Some(read_secret_file(&name, "token_file", path).await?),
            (None, None) => None,
        };
        if let Some(url) = &c.storage_url {
            if !valid_url(url) {
                return Err(config_err(&name, "storage_url is not an http(s) URL"));
            }
        }
        if token.is_some() && c.storage_url.is_none() {
            return Err(config_err(&name, "a fixed token needs storage_url"));
        }
        if credentials.is_none() && token.is_none() {
            return Err(config_err(
                &name,
                "configure auth_url + user + key, or storage_url + token",
            ));
        }

        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(c.connect_timeout_secs))
            .build()
            .map_err(|e| config_err(&name, format!("HTTP client: {e}")))?;

        let inner = Inner {
            name: name.clone(),
            client,
            credentials,
            storage_url_override: c.storage_url.clone(),
            token_file: c.token_file.clone(),
            container: c.container.clone(),
            segment_container,
            create_container: c.create_container,
            large_object_size: c.large_object_size,
            segment_size: c.segment_size,
            request_timeout: Duration::from_secs(c.request_timeout_secs),
            read_timeout: Duration::from_secs(c.read_timeout_secs),
            epoch: Instant::now(),
            session: Mutex::new(None),
            auth_lock: tokio::sync::Mutex::new(()),
            generations: AtomicU64::new(0),
            containers_ready: OnceCell::new(),
            manifest_kind: OnceCell::new(),
        };
        if let (Some(url), Some(token)) = (&c.storage_url, token) {
            let token = token_header(&token)
                .ok_or_else(|| config_err(&name, "the token is not a valid header value"))?;
            let session = inner.new_session(url.clone(), token, None, false);
            *inner.session.lock().expect("session lock") = Some(session);
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    pub fn container(&self) -> &str {
        &self.inner.container
    }

    pub fn segment_container(&self) -> &str {
        &self.inner.segment_container
    }

    /// `put`, with the caller's MD5 of the whole body when it computes one.
    async fn put_body(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        size_hint: Option<u64>,
        md5: Option<RunningMd5>,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.ensure_containers().await?;
        let feed = Arc::new(Mutex::new(Feed::new(body)));
        let mut guard = UploadGuard::new(Arc::clone(inner), key.clone());
        let segmented = size_hint.is_none_or(|n| n >= inner.large_object_size);
        let result = async {
            if segmented && Feed::has_more(&feed).await.map_err(StoreError::Body)? {
                inner.put_segmented(&feed, key, size_hint, &mut guard).await
            } else {
                inner.put_plain(&feed, key, &mut guard, md5.as_ref()).await
            }
        }
        .await;
        match result {
            Ok(()) => {
                guard.disarm();
                Ok(())
            }
            Err(e) => {
                guard.clean_up().await;
                Err(e)
            }
        }
    }

    /// Uses Dynamic Large Object manifests whatever the cluster offers, so tests can cover the
    /// fallback on a cluster that has SLO. Call before the first upload.
    #[cfg(any(test, feature = "testing"))]
    pub fn force_dynamic_manifests(&self) {
        let _ = self.inner.manifest_kind.set(ManifestKind::Dynamic);
    }

    /// Treats the current token as just confirmed, so the next streamed PUT skips its check and
    /// meets a refused token mid-stream. For tests of that path.
    #[cfg(any(test, feature = "testing"))]
    pub fn trust_current_token(&self) {
        if let Some(session) = self.inner.current_session() {
            self.inner.confirm(&session);
        }
    }
}

/// A response (or its absence) that is no success, in the words of the store's errors.
enum Failure {
    Status(StatusCode),
    Transport(reqwest::Error),
}

fn transport_detail(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // The innermost cause names the actual problem ("Connection refused"); the outer layers
    // would add the URL, which we leave out of messages.
    let mut cause = None;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = Some(s.to_string());
        source = s.source();
    }
    match cause {
        Some(c) => format!("{what}: {c}"),
        None => what.to_owned(),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Content-Length from the header itself: for HEAD, reqwest reports the (empty) body's length.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, CONTENT_LENGTH.as_str())?
        .trim()
        .parse()
        .ok()
}

fn is_true(headers: &HeaderMap, name: &str) -> bool {
    header_str(headers, name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// `bytes first-last/total` → (first..last+1, total).
fn parse_content_range(value: &str) -> Option<(Range<u64>, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last, total): (u64, u64, u64) =
        (first.parse().ok()?, last.parse().ok()?, total.parse().ok()?);
    (first <= last && last < total).then_some((first..last + 1, total))
}

/// `/info` sits at the proxy's root, in front of `/v1/<account>`.
fn info_url(storage_url: &str) -> Option<String> {
    if let Some(i) = storage_url.find("/v1/") {
        return Some(format!("{}/info", &storage_url[..i]));
    }
    let url = reqwest::Url::parse(storage_url).ok()?;
    Some(format!("{}/info", url.origin().ascii_serialization()))
}

/// Swift listings give `2024-05-01T12:34:56.123456` in UTC.
fn parse_listing_time(s: &str) -> Option<SystemTime> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let time = time.trim_end_matches('Z');
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next()?.parse().ok()?;
    let second: i64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), counting from 1970-01-01.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()?;
    let digits: String = frac
        .chars()
        .take_while(char::is_ascii_digit)
        .take(9)
        .collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Splits a segment name into its key and upload run.
fn parse_segment_name(name: &str) -> Option<(ObjectKey, &str)> {
    let i = name.rfind(SEGMENT_MARK)?;
    let key = ObjectKey::parse(&name[..i])?;
    let (run, _) = name[i + SEGMENT_MARK.len()..].split_once('/')?;
    (!run.is_empty()).then_some((key, run))
}

#[derive(Deserialize)]
struct Listed {
    name: String,
    #[serde(default)]
    last_modified: Option<String>,
}

#[derive(Deserialize)]
struct SloSegment {
    name: String,
}

#[derive(Deserialize)]
struct BulkDeleteReport {
    #[serde(rename = "Response Status")]
    status: String,
    #[serde(rename = "Errors", default)]
    errors: Vec<(String, String)>,
}

struct SegmentDone {
    name: String,
    size: u64,
    etag: String,
}

impl Inner {
    fn store(&self) -> &str {
        self.name.as_str()
    }

    fn unavailable(&self, message: impl Into<String>) -> StoreError {
        StoreError::unavailable(self.store(), message)
    }

    fn other(&self, message: impl Into<String>) -> StoreError {
        StoreError::other(self.store(), message)
    }

    fn failure(&self, what: &str, failure: Failure) -> StoreError {
        match failure {
            Failure::Transport(e) => {
                self.unavailable(format!("{what}: cannot reach Swift: {}", transport_detail(&e)))
            }
            Failure::Status(s) => match s.as_u16() {
                401 => self.unavailable(format!(
                    "{what}: Swift refused the token even after renewing it (HTTP 401)"
                )),
                403 => StoreError::Forbidden {
                    store: self.store().to_owned(),
                    message: format!("{what}: HTTP 403"),
                },
                413 => self.other(format!(
                    "{what}: Swift refused the object as too large (HTTP 413); lower large_object_size"
                )),
                507 => StoreError::StorageFull {
                    store: self.store().to_owned(),
                },
                500..=599 => self.unavailable(format!("{what}: Swift answered HTTP {s}")),
                _ => self.other(format!("{what}: Swift answered HTTP {s}")),
            },
        }
    }

    fn status_error(&self, what: &str, status: StatusCode) -> StoreError {
        self.failure(what, Failure::Status(status))
    }

    fn not_found(&self, key: &str) -> StoreError {
        StoreError::NotFound {
            store: self.store().to_owned(),
            key: key.to_owned(),
        }
    }

    fn now_ms(&self) -> u64 {
        // Never 0, which means "never confirmed".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn new_session(
        &self,
        storage_url: String,
        token: HeaderValue,
        expires_at: Option<Instant>,
        confirmed: bool,
    ) -> Arc<Session> {
        Arc::new(Session {
            storage_url: storage_url.trim_end_matches('/').to_owned(),
            token,
            generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
            expires_at,
            confirmed_ms: AtomicU64::new(if confirmed { self.now_ms() } else { 0 }),
        })
    }

    fn confirm(&self, session: &Session) {
        session.confirmed_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn current_session(&self) -> Option<Arc<Session>> {
        self.session.lock().expect("session lock").clone()
    }

    async fn session(&self) -> Result<Arc<Session>, StoreError> {
        match self.current_session() {
            Some(s) => Ok(s),
            None => self.renew(None).await,
        }
    }

    /// Replaces session `stale` (or the missing one) with a fresh one. Callers that raced on the
    /// same 401 share one renewal.
    async fn renew(&self, stale: Option<u64>) -> Result<Arc<Session>, StoreError> {
        let _renewing = self.auth_lock.lock().await;
        let current = self.current_session();
        if let Some(cur) = &current {
            if Some(cur.generation) != stale {
                return Ok(Arc::clone(cur));
            }
        }
        let fresh = if let Some(creds) = &self.credentials {
            self.authenticate(creds).await?
        } else {
            // A fixed token: all we can do is look for a newer one in token_file.
            let rotated = match &self.token_file {
                Some(path) => tokio::fs::read_to_string(path)
                    .await
                    .ok()
                    .map(|t| t.trim_end_matches(['\r', '\n']).to_owned())
                    .and_then(|t| token_header(&t))
                    .filter(|t| current.as_ref().is_none_or(|cur| cur.token != t)),
                None => None,
            };
            let (Some(token), Some(url)) = (rotated, &self.storage_url_override) else {
                return Err(self.unavailable(
                    "Swift refused the configured token (HTTP 401) and no credentials are \
                     configured to get a new one",
                ));
            };
            self.new_session(url.clone(), token, None, false)
        };
        *self.session.lock().expect("session lock") = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// Auth v1: the user and key in headers, the token and storage URL back in headers.
    async fn authenticate(&self, creds: &Credentials) -> Result<Arc<Session>, StoreError> {
        let mut key = HeaderValue::from_str(&creds.key.0)
            .map_err(|_| self.unavailable("the configured key is not a valid header value"))?;
        key.set_sensitive(true);
        let request = self
            .client
            .get(&creds.auth_url)
            .header("X-Auth-User", &creds.user)
            .header("X-Auth-Key", key)
            .timeout(self.request_timeout)
            .send();
        let response = request.await.map_err(|e| {
            self.unavailable(format!(
                "cannot reach the Swift auth endpoint: {}",
                transport_detail(&e)
            ))
        })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.unavailable(format!(
                "the Swift auth endpoint refused the credentials of user {} (HTTP {status})",
                creds.user
            )));
        }
        if !status.is_success() {
            return Err(self.unavailable(format!("the Swift auth endpoint answered HTTP {status}")));
        }
        let headers = response.headers();
        let token = header_str(headers, "x-auth-token")
            .or_else(|| header_str(headers, "x-storage-token"))
            .and_then(token_header)
            .ok_or_else(|| self.unavailable("the Swift auth response carries no token"))?;
        let storage_url = match &self.storage_url_override {
            Some(url) => url.clone(),
            None => header_str(headers, "x-storage-url")
                .filter(|u| valid_url(u))
                .ok_or_else(|| self.unavailable("the Swift auth response carries no storage URL"))?
                .to_owned(),
        };
        let expires_at = header_str(headers, "x-auth-token-expires")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Instant::now() + Duration::from_secs(secs));
        Ok(self.new_session(storage_url, token, expires_at, true))
    }

    fn url(&self, session: &Session, container: &str, object: Option<&str>) -> String {
        match object {
            Some(o) => format!("{}/{container}/{o}", session.storage_url),
            None => format!("{}/{container}", session.storage_url),
        }
    }

    fn request(
        &self,
        session: &Session,
        method: Method,
        container: &str,
        object: Option<&str>,
    ) -> RequestBuilder {
        self.client
            .request(method, self.url(session, container, object))
            .header("X-Auth-Token", session.token.clone())
    }

    /// Sends a replayable request, renewing the token once on 401. `timeout` bounds the wait for
    /// the response headers, not the reading of the body.
    async fn send(
        &self,
        what: &str,
        timeout: Duration,
        build: impl Fn(&Session) -> RequestBuilder,
    ) -> Result<Response, StoreError> {
        let mut session = self.session().await?;
        let mut renewed = false;
        loop {
            let response = match tokio::time::timeout(timeout, build(&session).send()).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Err(self.failure(what, Failure::Transport(e))),
                Err(_) => {
                    return Err(self.unavailable(format!(
                        "{what}: no answer from Swift within {}s",
                        timeout.as_secs()
                    )))
                }
            };
            if response.status() != StatusCode::UNAUTHORIZED {
                self.confirm(&session);
                return Ok(response);
            }
            if renewed {
                return Err(self.status_error(what, StatusCode::UNAUTHORIZED));
            }
            session = self.renew(Some(session.generation)).await?;
            renewed = true;
        }
    }

    /// Reads a small response body (listings, manifests, reports) within the request timeout.
    async fn read_body(&self, what: &str, response: Response) -> Result<Bytes, StoreError> {
        match tokio::time::timeout(self.request_timeout, response.bytes()).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => Err(self.failure(what, Failure::Transport(e))),
            Err(_) => Err(self.unavailable(format!("{what}: Swift stalled sending its answer"))),
        }
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        response: Response,
    ) -> Result<T, StoreError> {
        let body = self.read_body(what, response).await?;
        serde_json::from_slice(&body)
            .map_err(|e| self.other(format!("{what}: unreadable answer from Swift: {e}")))
    }

    async fn create_container(&self, container: &str) -> Result<(), StoreError> {
        let what = format!("creating container {container}");
        let response = self
            .send(&what, self.request_timeout, |s| {
                self.request(s, Method::PUT, container, None)
                    .header(CONTENT_LENGTH, 0)
            })
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(&what, response.status()))
        }
    }

    async fn ensure_containers(&self) -> Result<(), StoreError> {
        if !self.create_container {
            return Ok(());
        }
        self.containers_ready
            .get_or_try_init(|| async {
                self.create_container(&self.container).await?;
                self.create_container(&self.segment_container).await
            })
            .await
            .map(|_| ())
    }

    /// SLO when `/info` lists it, DLO when `/info` answers without it or is switched off (an SLO
    /// manifest PUT to a cluster without SLO would be stored as a plain JSON object).
    async fn manifest_kind(&self) -> Result<ManifestKind, StoreError> {
        self.manifest_kind
            .get_or_try_init(|| async {
                let session = self.session().await?;
                let Some(url) = info_url(&session.storage_url) else {
                    return Ok(ManifestKind::Dynamic);
                };
                let what = "reading the cluster's capabilities";
                let response = self
                    .client
                    .get(url)
                    .timeout(self.request_timeout)
                    .send()
                    .await
                    .map_err(|e| self.failure(what, Failure::Transport(e)))?;
                if !response.status().is_success() {
                    tracing::warn!(
                        store = %self.name,
                        status = %response.status(),
                        "cluster info unavailable; large objects use dynamic manifests"
                    );
                    return Ok(ManifestKind::Dynamic);
                }
                let info: serde_json::Value = self.read_json(what, response).await?;
                Ok(match info.get("slo") {
                    Some(slo) => ManifestKind::Static {
                        max_segments: slo
                            .get("max_manifest_segments")
                            .and_then(serde_json::Value::as_u64)
                            .unwrap_or(1000),
                    },
                    None => ManifestKind::Dynamic,
                })
            })
            .await
            .copied()
    }

    /// Before a streamed PUT, which cannot be replayed once its body was read: renew a token
    /// about to expire, and check one not confirmed lately (renewing it on 401).
    async fn ready_to_stream(&self, container: &str) -> Result<(), StoreError> {
        let session = self.session().await?;
        let expiring = session
            .expires_at
            .is_some_and(|t| t.saturating_duration_since(Instant::now()) < EXPIRY_MARGIN);
        if expiring && self.credentials.is_some() {
            self.renew(Some(session.generation)).await?;
            return Ok(());
        }
        let confirmed = session.confirmed_ms.load(Ordering::Relaxed);
        if confirmed != 0
            && self.now_ms().saturating_sub(confirmed) < CONFIRM_WITHIN.as_millis() as u64
        {
            return Ok(());
        }
        let what = format!("checking container {container}");
        let response = self
            .send(&what, self.request_timeout, |s| {
                self.request(s, Method::HEAD, container, None)
            })
            .await?;
        match response.status() {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Err(self.unavailable(format!(
                "container {container} does not exist (set create_container to create it)"
            ))),
            s => Err(self.status_error(&what, s)),
        }
    }

    /// Streams the next `limit` bytes of `feed` (all that is left for `u64::MAX`) to
    /// `container/object` and checks Swift's ETag against their MD5. Returns their size and MD5.
    /// `whole`, when the object is the whole body, is the caller's MD5 of it: then the bytes are
    /// not hashed here a second time.
    async fn put_streamed(
        &self,
        feed: &Arc<Mutex<Feed>>,
        container: &str,
        object: &str,
        limit: u64,
        whole: Option<&RunningMd5>,
    ) -> Result<(u64, String), StoreError> {
        let what = format!("uploading {container}/{object}");
        self.ready_to_stream(container).await?;
        let mut session = self.session().await?;
        let mut renewed = false;
        loop {
            feed.lock()
                .expect("feed lock")
                .start(limit, whole.is_none());
            let finished = Arc::new(Notify::new());
            let body = FeedBody {
                feed: Arc::clone(feed),
                finished: Arc::clone(&finished),
                done: false,
            };
            let request = self
                .request(&session, Method::PUT, container, Some(object))
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(reqwest::Body::wrap_stream(body))
                .send();
            let read_timeout = self.read_timeout;
            let outcome = tokio::select! {
                r = request => Some(r),
                // Only once the whole body is out does Swift's silence count against it.
                _ = async { finished.notified().await; tokio::time::sleep(read_timeout).await } => None,
            };
            let (sent, body_error) = {
                let mut f = feed.lock().expect("feed lock");
                (f.sent, f.body_error.take())
            };
            if let Some(e) = body_error {
                return Err(StoreError::Body(e));
            }
            let response = match outcome {
                Some(Ok(r)) => r,
                Some(Err(e)) => return Err(self.failure(&what, Failure::Transport(e))),
                None => {
                    return Err(self.unavailable(format!(
                        "{what}: no answer within {}s after the data was sent",
                        read_timeout.as_secs()
                    )))
                }
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED {
                if renewed {
                    return Err(self.status_error(&what, status));
                }
                if sent > 0 {
                    // The bytes Swift turned away are gone; only a fresh upload can resend them.
                    // Renew now so that upload does not meet the same token.
                    if let Err(e) = self.renew(Some(session.generation)).await {
                        tracing::warn!(store = %self.name, error = %e, "renewing a refused token");
                    }
                    return Err(self.unavailable(format!(
                        "{what}: Swift refused the token in the middle of the upload (HTTP 401)"
                    )));
                }
                session = self.renew(Some(session.generation)).await?;
                renewed = true;
                continue;
            }
            if status == StatusCode::NOT_FOUND {
                return Err(self.unavailable(format!(
                    "{what}: container {container} does not exist (set create_container to create it)"
                )));
            }
            if !status.is_success() {
                return Err(self.status_error(&what, status));
            }
            self.confirm(&session);
            let md5 = match whole {
                None => hex::encode(feed.lock().expect("feed lock").finish_md5()),
                Some(running) => match running.finished() {
                    Some((size, md5)) if size == sent => hex::encode(md5),
                    _ => {
                        return Err(self.other(format!(
                            "{what}: the checksum of the data sent is unavailable"
                        )))
                    }
                },
            };
            let etag = header_str(response.headers(), ETAG.as_str())
                .map(|e| e.trim().trim_matches('"').to_ascii_lowercase());
            if etag.as_deref() != Some(md5.as_str()) {
                return Err(self.other(format!(
                    "{what}: Swift's checksum does not match the data sent"
                )));
            }
            return Ok((sent, md5));
        }
    }

    async fn put_plain(
        &self,
        feed: &Arc<Mutex<Feed>>,
        key: &ObjectKey,
        guard: &mut UploadGuard,
        whole: Option<&RunningMd5>,
    ) -> Result<(), StoreError> {
        guard.object_maybe_written = true;
        let result = self
            .put_streamed(feed, &self.container, key.as_str(), u64::MAX, whole)
            .await;
        if matches!(result, Err(StoreError::Body(_))) {
            // An unfinished body is never committed; leave a previous object alone.
            guard.object_maybe_written = false;
        }
        result.map(|_| ())
    }

    async fn put_segmented(
        &self,
        feed: &Arc<Mutex<Feed>>,
        key: &ObjectKey,
        size_hint: Option<u64>,
        guard: &mut UploadGuard,
    ) -> Result<(), StoreError> {
        let kind = self.manifest_kind().await?;
        let max_segments = match kind {
            ManifestKind::Static { max_segments } => max_segments,
            ManifestKind::Dynamic => u64::MAX,
        };
        let too_many = || {
            self.other(format!(
                "{key} needs more than the cluster's {max_segments} segments of {} bytes; \
                 raise segment_size",
                self.segment_size
            ))
        };
        if size_hint.is_some_and(|n| n.div_ceil(self.segment_size) > max_segments) {
            return Err(too_many());
        }
        let run = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("{key}{SEGMENT_MARK}{run}/");
        guard.segment_prefix = Some(prefix.clone());
        let mut segments: Vec<SegmentDone> = vec![];
        loop {
            let n = segments.len() as u64 + 1;
            if n > max_segments {
                return Err(too_many());
            }
            let name = format!("{prefix}{n:08}");
            // Recorded before the PUT starts: a cancelled PUT may still have been committed.
            guard.segments.push(name.clone());
            let (size, etag) = self
                .put_streamed(
                    feed,
                    &self.segment_container,
                    &name,
                    self.segment_size,
                    None,
                )
                .await?;
            segments.push(SegmentDone { name, size, etag });
            if !Feed::has_more(feed).await.map_err(StoreError::Body)? {
                break;
            }
        }
        guard.object_maybe_written = true;
        match kind {
            ManifestKind::Static { .. } => self.put_static_manifest(key, &segments).await,
            ManifestKind::Dynamic => {
                let total = segments.iter().map(|s| s.size).sum();
                self.put_dynamic_manifest(key, &prefix, total).await
            }
        }
    }

    async fn put_static_manifest(
        &self,
        key: &ObjectKey,
        segments: &[SegmentDone],
    ) -> Result<(), StoreError> {
        let manifest: Vec<serde_json::Value> = segments
            .iter()
            .map(|s| {
                serde_json::json!({
                    "path": format!("/{}/{}", self.segment_container, s.name),
                    "etag": s.etag,
                    "size_bytes": s.size,
                })
            })
            .collect();
        let body = Bytes::from(serde_json::to_vec(&manifest).expect("manifest serialises"));
        let what = format!("writing the manifest of {key}");
        // Swift checks every segment before it answers.
        let timeout = self.request_timeout * 5;
        let response = self
            .send(&what, timeout, |s| {
                self.request(s, Method::PUT, &self.container, Some(key.as_str()))
                    .query(&[("multipart-manifest", "put")])
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(body.clone())
            })
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let detail = self.read_body(&what, response).await.unwrap_or_default();
        let detail = String::from_utf8_lossy(&detail[..detail.len().min(300)]).into_owned();
        // A 400 explains which segment Swift found wrong.
        if status == StatusCode::BAD_REQUEST && !detail.trim().is_empty() {
            return Err(self.other(format!("{what}: Swift refused it: {}", detail.trim())));
        }
        Err(self.status_error(&what, status))
    }

    async fn put_dynamic_manifest(
        &self,
        key: &ObjectKey,
        prefix: &str,
        total: u64,
    ) -> Result<(), StoreError> {
        let what = format!("writing the manifest of {key}");
        let manifest = format!("{}/{prefix}", self.segment_container);
        let response = self
            .send(&what, self.request_timeout, |s| {
                self.request(s, Method::PUT, &self.container, Some(key.as_str()))
                    .header("X-Object-Manifest", &manifest)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, 0)
            })
            .await?;
        if !response.status().is_success() {
            return Err(self.status_error(&what, response.status()));
        }
        // A DLO is whatever the container listing shows under its prefix, and listings may lag
        // behind the segment PUTs: only report success once the object is whole.
        for attempt in 0..DLO_CHECKS {
            if self.head_len(key).await? == total {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt + 1))).await;
        }
        Err(self.unavailable(format!(
            "{what}: the container listing did not show all segments in time"
        )))
    }

    async fn head(&self, container: &str, object: &str) -> Result<Option<HeaderMap>, StoreError> {
        let what = format!("looking up {container}/{object}");
        let response = self
            .send(&what, self.request_timeout, |s| {
                self.request(s, Method::HEAD, container, Some(object))
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(response.headers().clone())),
            s => Err(self.status_error(&what, s)),
        }
    }

    /// Streams `object` of `container` (or a range of it).
    async fn get_at(
        &self,
        container: &str,
        object: &str,
        range: Option<Range<u64>>,
    ) -> Result<GetObject, StoreError> {
        let inner = self;
        if let Some(r) = &range {
            if r.start >= r.end {
                let len = inner.head_len_at(container, object).await?;
                return Err(StoreError::RangeNotSatisfiable { len });
            }
        }
        let what = format!("reading {object}");
        let response = inner
            .send(&what, inner.request_timeout, |s| {
                let request = inner.request(s, Method::GET, container, Some(object));
                match &range {
                    Some(r) => request.header(RANGE, format!("bytes={}-{}", r.start, r.end - 1)),
                    None => request,
                }
            })
            .await?;
        let headers = response.headers();
        let (served, total_len, skip) = match response.status() {
            StatusCode::NOT_FOUND => return Err(inner.not_found(object)),
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let len = inner.head_len_at(container, object).await?;
                return Err(StoreError::RangeNotSatisfiable { len });
            }
            StatusCode::PARTIAL_CONTENT => {
                let (served, total) = header_str(headers, "content-range")
                    .and_then(parse_content_range)
                    .ok_or_else(|| inner.other(format!("{what}: bad Content-Range from Swift")))?;
                (served, total, 0)
            }
            StatusCode::OK => {
                let total = content_length(headers)
                    .ok_or_else(|| inner.other(format!("{what}: Swift gave no length")))?;
                // The whole object came back: serve the asked range out of it.
                let served = clip_range(range.clone(), total)?;
                (served.clone(), total, served.start)
            }
            s => return Err(inner.status_error(&what, s)),
        };
        if let Some(r) = &range {
            if served.start != r.start || served.end != r.end.min(total_len) {
                return Err(inner.other(format!("{what}: Swift served another range")));
            }
        }
        let body = exact_body(
            response,
            skip,
            served.end - served.start,
            inner.read_timeout,
        );
        Ok(GetObject {
            body,
            range: served,
            total_len,
        })
    }

    async fn head_len(&self, key: &ObjectKey) -> Result<u64, StoreError> {
        self.head_len_at(&self.container, key.as_str()).await
    }

    async fn head_len_at(&self, container: &str, object: &str) -> Result<u64, StoreError> {
        let headers = self
            .head(container, object)
            .await?
            .ok_or_else(|| self.not_found(object))?;
        content_length(&headers)
            .ok_or_else(|| self.other(format!("Swift gave no length for {object}")))
    }

    async fn delete_object(&self, container: &str, object: &str) -> Result<(), StoreError> {
        let what = format!("deleting {container}/{object}");
        let response = self
            .send(&what, self.request_timeout, |s| {
                self.request(s, Method::DELETE, container, Some(object))
            })
            .await?;
        match response.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            s => Err(self.status_error(&what, s)),
        }
    }

    /// Every object under `prefix`, page by page. A missing container lists as empty.
    async fn list_objects(&self, container: &str, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let what = format!("listing container {container}");
        let mut out: Vec<Listed> = vec![];
        loop {
            let marker = out.last().map(|l| l.name.clone()).unwrap_or_default();
            let response = self
                .send(&what, self.request_timeout, |s| {
                    self.request(s, Method::GET, container, None).query(&[
                        ("format", "json"),
                        ("limit", &LISTING_LIMIT.to_string()),
                        ("prefix", prefix),
                        ("marker", &marker),
                    ])
                })
                .await?;
            match response.status() {
                StatusCode::NOT_FOUND => return Ok(out),
                StatusCode::NO_CONTENT => return Ok(out),
                s if s.is_success() => {}
                s => return Err(self.status_error(&what, s)),
            }
            let page: Vec<Listed> = self.read_json(&what, response).await?;
            let full = page.len() >= LISTING_LIMIT;
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    async fn delete_all(&self, container: &str, names: Vec<String>) -> Result<usize, StoreError> {
        let count = names.len();
        futures::stream::iter(names)
            .map(|name| async move { self.delete_object(container, &name).await })
            .buffer_unordered(DELETE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(count)
    }

    async fn delete_prefix(&self, container: &str, prefix: &str) -> Result<usize, StoreError> {
        let names = self
            .list_objects(container, prefix)
            .await?
            .into_iter()
            .map(|l| l.name)
            .collect();
        self.delete_all(container, names).await
    }

    /// Removes what an unfinished upload may have written. Failures are logged, not returned:
    /// the caller reports the upload's own error, and the sweep retries later.
    async fn clean_up(&self, work: Cleanup) {
        let key = work.key;
        let mut failed = vec![];
        if work.object {
            if let Err(e) = self.delete_object(&self.container, key.as_str()).await {
                failed.push(e);
            }
        }
        if let Err(e) = self
            .delete_all(&self.segment_container, work.segments)
            .await
        {
            failed.push(e);
        }
        // Catches a segment committed after its name was recorded, however unlikely.
        if let Some(prefix) = work.segment_prefix {
            if let Err(e) = self.delete_prefix(&self.segment_container, &prefix).await {
                failed.push(e);
            }
        }
        for e in failed {
            tracing::warn!(store = %self.name, %key, error = %e, "cleanup after a failed upload");
        }
    }

    /// Whether the object at `key` is a manifest over segments of upload `run`.
    async fn manifest_uses_run(&self, key: &ObjectKey, run: &str) -> Result<bool, StoreError> {
        let Some(headers) = self.head(&self.container, key.as_str()).await? else {
            return Ok(false);
        };
        let needle = format!("{SEGMENT_MARK}{run}/");
        if let Some(prefix) = header_str(&headers, "x-object-manifest") {
            return Ok(prefix.contains(&needle));
        }
        if !is_true(&headers, "x-static-large-object") {
            return Ok(false);
        }
        let what = format!("reading the manifest of {key}");
        let response = self
            .send(&what, self.request_timeout, |s| {
                self.request(s, Method::GET, &self.container, Some(key.as_str()))
                    .query(&[("multipart-manifest", "get")])
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => return Ok(false),
            s if s.is_success() => {}
            s => return Err(self.status_error(&what, s)),
        }
        let segments: Vec<SloSegment> = self.read_json(&what, response).await?;
        Ok(segments.iter().any(|s| s.name.contains(&needle)))
    }
}

/// What a failed or cancelled upload leaves to remove.
struct Cleanup {
    key: ObjectKey,
    segments: Vec<String>,
    segment_prefix: Option<String>,
    object: bool,
}

/// Removes an unfinished upload's traces: awaited on failure, spawned if the `put` future is
/// dropped (the HTTP layer drops it when the client goes away).
struct UploadGuard {
    inner: Arc<Inner>,
    key: ObjectKey,
    segments: Vec<String>,
    segment_prefix: Option<String>,
    /// A PUT to the key itself (object or manifest) has started and may have been committed.
    object_maybe_written: bool,
    armed: bool,
}

impl UploadGuard {
    fn new(inner: Arc<Inner>, key: ObjectKey) -> Self {
        Self {
            inner,
            key,
            segments: vec![],
            segment_prefix: None,
            object_maybe_written: false,
            armed: true,
        }
    }

    fn take_work(&mut self) -> Option<Cleanup> {
        let armed = std::mem::replace(&mut self.armed, false);
        let work = Cleanup {
            key: self.key.clone(),
            segments: std::mem::take(&mut self.segments),
            segment_prefix: self.segment_prefix.take(),
            object: self.object_maybe_written,
        };
        let pending = work.object || !work.segments.is_empty() || work.segment_prefix.is_some();
        (armed && pending).then_some(work)
    }

    fn disarm(&mut self) {
        self.armed = false;
    }

    async fn clean_up(mut self) {
        if let Some(work) = self.take_work() {
            self.inner.clean_up(work).await;
        }
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        let Some(work) = self.take_work() else { return };
        let inner = Arc::clone(&self.inner);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { inner.clean_up(work).await });
            }
            Err(_) => tracing::warn!(
                store = %inner.name,
                key = %work.key,
                "upload dropped outside a runtime; its segments are left to the sweep"
            ),
        }
    }
}

/// The upload body, shared by the requests that carry it: each takes the next `remaining` bytes,
/// splitting a chunk at the exact boundary and keeping the rest for the next segment.
struct Feed {
    source: ByteStream,
    pending: Bytes,
    ended: bool,
    /// The body's own error, kept to hand back as `StoreError::Body`.
    body_error: Option<io::Error>,
    remaining: u64,
    sent: u64,
    /// Whether the bytes sent are hashed into `md5`.
    hashing: bool,
    md5: Md5,
}

impl Feed {
    fn new(source: ByteStream) -> Self {
        Self {
            source,
            pending: Bytes::new(),
            ended: false,
            body_error: None,
            remaining: 0,
            sent: 0,
            hashing: true,
            md5: Md5::new(),
        }
    }

    fn start(&mut self, limit: u64, hashing: bool) {
        self.remaining = limit;
        self.sent = 0;
        self.hashing = hashing;
        self.md5 = Md5::new();
    }

    fn finish_md5(&mut self) -> [u8; 16] {
        std::mem::take(&mut self.md5).finalize().into()
    }

    /// Pulls from the source until a byte is pending or the source ended.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending.is_empty() && !self.ended {
            match self.source.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => self.pending = chunk,
                Poll::Ready(Some(Err(e))) => {
                    self.ended = true;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(None) => self.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Whether the body has bytes beyond what was sent so far.
    async fn has_more(feed: &Arc<Mutex<Feed>>) -> io::Result<bool> {
        futures::future::poll_fn(|cx| {
            let mut f = feed.lock().expect("feed lock");
            f.poll_fill(cx).map_ok(|()| !f.pending.is_empty())
        })
        .await
    }
}

/// One request's view of the [`Feed`].
struct FeedBody {
    feed: Arc<Mutex<Feed>>,
    finished: Arc<Notify>,
    done: bool,
}

impl Stream for FeedBody {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let item = {
            let mut guard = this.feed.lock().expect("feed lock");
            let f = &mut *guard;
            if f.remaining == 0 {
                None
            } else {
                match f.poll_fill(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => {
                        let echo = io::Error::new(e.kind(), e.to_string());
                        f.body_error = Some(e);
                        Some(Err(echo))
                    }
                    Poll::Ready(Ok(())) if f.pending.is_empty() => None,
                    Poll::Ready(Ok(())) => {
                        let n = (f.pending.len() as u64).min(f.remaining) as usize;
                        let chunk = f.pending.split_to(n);
                        f.remaining -= n as u64;
                        f.sent += n as u64;
                        if f.hashing {
                            f.md5.update(&chunk);
                        }
                        Some(Ok(chunk))
                    }
                }
            }
        };
        match item {
            None => {
                this.done = true;
                this.finished.notify_one();
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Some(Ok(chunk)) => Poll::Ready(Some(Ok(chunk))),
        }
    }
}

/// A download body that yields exactly `take` bytes after skipping `skip`, and fails (rather
/// than ends) when Swift stops early or stalls longer than `idle`.
fn exact_body(response: Response, skip: u64, take: u64, idle: Duration) -> ByteStream {
    struct State {
        inner: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
        skip: u64,
        left: u64,
    }
    let state = State {
        inner: response.bytes_stream().boxed(),
        skip,
        left: take,
    };
    Box::pin(futures::stream::unfold(
        Some(state),
        move |state| async move {
            let mut st = state?;
            loop {
                if st.left == 0 {
                    return None;
                }
                let fail =
                    |kind: io::ErrorKind, msg: String| Some((Err(io::Error::new(kind, msg)), None));
                match tokio::time::timeout(idle, st.inner.next()).await {
                    Err(_) => {
                        return fail(
                            io::ErrorKind::TimedOut,
                            format!("Swift sent nothing for {}s", idle.as_secs()),
                        )
                    }
                    Ok(None) => {
                        return fail(
                            io::ErrorKind::UnexpectedEof,
                            format!("Swift ended the object {} bytes early", st.left),
                        )
                    }
                    Ok(Some(Err(e))) => {
                        return fail(
                            io::ErrorKind::Other,
                            format!("reading from Swift failed: {}", transport_detail(&e)),
                        )
                    }
                    Ok(Some(Ok(mut chunk))) => {
                        if st.skip > 0 {
                            let n = (chunk.len() as u64).min(st.skip) as usize;
                            chunk = chunk.slice(n..);
                            st.skip -= n as u64;
                        }
                        if chunk.len() as u64 > st.left {
                            chunk.truncate(st.left as usize);
                        }
                        if chunk.is_empty() {
                            continue;
                        }
                        st.left -= chunk.len() as u64;
                        return Some((Ok(chunk), Some(st)));
                    }
                }
            }
        },
    ))
}

#[async_trait]
impl Store for SwiftStore {
    fn name(&self) -> &StoreName {
        &self.inner.name
    }

    fn kind(&self) -> &'static str {
        "swift"
    }

    fn describe(&self, key: &ObjectKey) -> String {
        format!("swift://{}/{key}", self.inner.container)
    }

    fn endpoints(&self) -> Vec<String> {
        let inner = &self.inner;
        let session = inner
            .session
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.storage_url.clone()));
        inner
            .credentials
            .iter()
            .map(|c| c.auth_url.clone())
            .chain(inner.storage_url_override.clone())
            .chain(session)
            .collect()
    }

    #[tracing::instrument(skip(self, body), fields(store = %self.inner.name))]
    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        size_hint: Option<u64>,
    ) -> Result<(), StoreError> {
        self.put_body(key, body, size_hint, None).await
    }

    #[tracing::instrument(skip(self, body, md5), fields(store = %self.inner.name))]
    async fn put_with_md5(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        size_hint: Option<u64>,
        md5: RunningMd5,
    ) -> Result<(), StoreError> {
        self.put_body(key, body, size_hint, Some(md5)).await
    }

    #[tracing::instrument(skip(self), fields(store = %self.inner.name))]
    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<GetObject, StoreError> {
        self.inner
            .get_at(&self.inner.container, key.as_str(), range)
            .await
    }

    fn foreign_object(&self, uri: &str) -> Option<ForeignObject> {
        let (container, name) = uri.strip_prefix("swift://")?.split_once('/')?;
        let inner = &self.inner;
        // The gateway's container and segment container are its own, whole.
        let foreign = !container.contains('/')
            && ForeignObject::is_plain_path(container)
            && container != inner.container
            && container != inner.segment_container
            && ForeignObject::is_plain_path(name);
        foreign.then(|| ForeignObject {
            container: container.to_owned(),
            name: name.to_owned(),
        })
    }

    async fn head_foreign(&self, object: &ForeignObject) -> Result<u64, StoreError> {
        self.inner
            .head_len_at(&object.container, &object.name)
            .await
    }

    async fn get_foreign(
        &self,
        object: &ForeignObject,
        range: Option<Range<u64>>,
    ) -> Result<GetObject, StoreError> {
        self.inner
            .get_at(&object.container, &object.name, range)
            .await
    }

    #[tracing::instrument(skip(self), fields(store = %self.inner.name))]
    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let inner = &self.inner;
        if let Some(headers) = inner.head(&inner.container, key.as_str()).await? {
            let what = format!("deleting {key}");
            if is_true(&headers, "x-static-large-object") {
                // Removes the manifest and every segment it names, wherever they are.
                let response = inner
                    .send(&what, inner.request_timeout * 5, |s| {
                        inner
                            .request(s, Method::DELETE, &inner.container, Some(key.as_str()))
                            .query(&[("multipart-manifest", "delete")])
                            .header(ACCEPT, "application/json")
                    })
                    .await?;
                match response.status() {
                    StatusCode::NOT_FOUND => {}
                    s if s.is_success() => {
                        let report: BulkDeleteReport = inner.read_json(&what, response).await?;
                        let failed: Vec<_> = report
                            .errors
                            .iter()
                            .filter(|(_, status)| !status.starts_with("404"))
                            .collect();
                        if !failed.is_empty()
                            || !(report.status.starts_with("200")
                                || report.status.starts_with("404"))
                        {
                            let message = format!(
                                "{what}: Swift reported {} ({} segment errors)",
                                report.status,
                                failed.len()
                            );
                            // The image is deleted once its manifest is: segments it could not
                            // remove are leftovers for the sweep, not a failed delete.
                            if inner.head(&inner.container, key.as_str()).await?.is_some() {
                                return Err(inner.other(message));
                            }
                            tracing::warn!(store = %inner.name, %key, "{message}; the sweep removes what is left");
                        }
                    }
                    s => return Err(inner.status_error(&what, s)),
                }
            } else {
                inner.delete_object(&inner.container, key.as_str()).await?;
                // A DLO's segments: only when they are ours, never a prefix someone else shares.
                if let Some(manifest) = header_str(&headers, "x-object-manifest") {
                    let ours = format!("{key}{SEGMENT_MARK}");
                    if let Some((container, prefix)) = manifest.split_once('/') {
                        if prefix.starts_with(&ours) && valid_container(container) {
                            if let Err(e) = inner.delete_prefix(container, prefix).await {
                                tracing::warn!(store = %inner.name, %key, error = %e, "removing the segments of a deleted image failed; the sweep removes them");
                            }
                        }
                    }
                }
            }
        }
        // Leftovers of any earlier upload of this key: failed, cancelled or overwritten. The
        // image is gone already; what cannot be listed or removed now (say, a token without
        // listing rights on the segment container) is the sweep's.
        if let Err(e) = inner
            .delete_prefix(&inner.segment_container, &format!("{key}{SEGMENT_MARK}"))
            .await
        {
            tracing::warn!(store = %inner.name, %key, error = %e, "removing upload leftovers of a deleted image failed; the sweep removes them");
        }
        Ok(())
    }

    async fn health_check(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        for container in [&inner.container, &inner.segment_container] {
            let what = format!("checking container {container}");
            let response = inner
                .send(&what, inner.request_timeout, |s| {
                    inner.request(s, Method::HEAD, container, None)
                })
                .await?;
            match response.status() {
                s if s.is_success() => {}
                StatusCode::NOT_FOUND if inner.create_container => {
                    inner.create_container(container).await?
                }
                StatusCode::NOT_FOUND => {
                    return Err(inner.unavailable(format!(
                        "container {container} does not exist (set create_container to create it)"
                    )))
                }
                s => return Err(inner.status_error(&what, s)),
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        let inner = &self.inner;
        Ok(inner
            .list_objects(&inner.container, "")
            .await?
            .into_iter()
            .filter_map(|l| {
                Some(ObjectInfo {
                    key: ObjectKey::parse(&l.name)?,
                    last_modified: l.last_modified.as_deref().and_then(parse_listing_time),
                })
            })
            .collect())
    }

    /// Removes the segments of upload runs whose newest segment is older than `older_than` and
    /// that no manifest names. `older_than` must exceed the time one segment takes to upload,
    /// since a segment in flight is not listed yet.
    async fn sweep_incomplete(
        &self,
        older_than: Duration,
        in_progress: &BTreeSet<ObjectKey>,
    ) -> Result<SweepReport, StoreError> {
        let inner = &self.inner;
        let now = SystemTime::now();
        let mut runs: std::collections::BTreeMap<(ObjectKey, String), (SystemTime, Vec<String>)> =
            Default::default();
        for listed in inner.list_objects(&inner.segment_container, "").await? {
            let Some((key, run)) = parse_segment_name(&listed.name) else {
                continue; // not ours
            };
            if in_progress.contains(&key) {
                continue;
            }
            let Some(modified) = listed.last_modified.as_deref().and_then(parse_listing_time)
            else {
                continue;
            };
            let entry = runs
                .entry((key, run.to_owned()))
                .or_insert((UNIX_EPOCH, vec![]));
            entry.0 = entry.0.max(modified);
            entry.1.push(listed.name);
        }
        let mut report = SweepReport::default();
        for ((key, run), (newest, names)) in runs {
            if now.duration_since(newest).unwrap_or_default() < older_than
                || inner.manifest_uses_run(&key, &run).await?
            {
                continue;
            }
            let removed = inner.delete_all(&inner.segment_container, names).await?;
            tracing::info!(store = %inner.name, %key, run, removed, "removed an abandoned upload");
            report.incomplete_removed += 1;
        }
        Ok(report)
    }

    /// The container and the segment container, in the account the storage URL or the auth
    /// user names (v1 users are `account:user`).
    fn namespaces(&self) -> Vec<Namespace> {
        let inner = &self.inner;
        let account = match (&inner.storage_url_override, &inner.credentials) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Some(c)) => {
                let account = c.user.split_once(':').map_or(c.user.as_str(), |(a, _)| a);
                format!("{} account {account}", c.auth_url)
            }
            (None, None) => String::new(),
        };
        let backend = format!("swift {account}");
        vec![
            Namespace::new(backend.clone(), format!("{}/", inner.container)),
            Namespace::new(backend, format!("{}/", inner.segment_container)),
        ]
    }

    async fn read_marker(&self) -> Result<Option<Bytes>, StoreError> {
        let inner = &self.inner;
        let what = format!("reading {}/{MARKER}", inner.container);
        let response = inner
            .send(&what, inner.request_timeout, |s| {
                inner.request(s, Method::GET, &inner.container, Some(MARKER))
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(inner.read_body(&what, response).await?)),
            s => Err(inner.status_error(&what, s)),
        }
    }

    async fn write_marker(&self, content: Bytes) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.ensure_containers().await?;
        let what = format!("writing {}/{MARKER}", inner.container);
        let response = inner
            .send(&what, inner.request_timeout, |s| {
                inner
                    .request(s, Method::PUT, &inner.container, Some(MARKER))
                    .header(CONTENT_TYPE, "application/json")
                    .body(content.clone())
            })
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(inner.status_error(&what, response.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> Result<SwiftStoreConfig, serde_json::Error> {
        serde_json::from_value(json)
    }

    async fn open(json: serde_json::Value) -> Result<SwiftStore, StoreError> {
        SwiftStore::open(StoreName::parse("swift").unwrap(), &config(json).unwrap()).await
    }

    #[tokio::test]
    async fn config_combinations() {
        let ok = open(serde_json::json!({
            "auth_url": "http://127.0.0.1:1/auth/v1.0", "user": "u:v", "key": "k",
            "container": "c"
        }))
        .await
        .unwrap();
        assert_eq!(ok.segment_container(), "c_segments");
        assert_eq!(ok.inner.segment_size, 200 * MIB);
        assert_eq!(ok.inner.large_object_size, 5 * GIB);
        assert!(open(serde_json::json!({
            "storage_url": "http://127.0.0.1:1/v1/AUTH_x", "token": "t", "container": "c"
        }))
        .await
        .is_ok());
        for bad in [
            serde_json::json!({"auth_url": "http://h/auth", "user": "u", "container": "c"}),
            serde_json::json!({"auth_url": "http://h/auth", "user": "u", "key": "k",
                               "key_file": "/nonexistent", "container": "c"}),
            serde_json::json!({"token": "t", "container": "c"}),
            serde_json::json!({"storage_url": "http://h/v1/A", "container": "c"}),
            serde_json::json!({"storage_url": "ftp://h/v1/A", "token": "t", "container": "c"}),
            serde_json::json!({"storage_url": "http://h/v1/A", "token": "t", "container": "a/b"}),
            serde_json::json!({"storage_url": "http://h/v1/A", "token": "t", "container": "c",
                               "segment_container": "c"}),
            serde_json::json!({"storage_url": "http://h/v1/A", "token": "t", "container": "c",
                               "segment_size": 0}),
            serde_json::json!({"storage_url": "http://h/v1/A", "token": "t", "container": "c",
                               "large_object_size": 6 * GIB}),
        ] {
            assert!(
                matches!(open(bad.clone()).await, Err(StoreError::Config(_))),
                "{bad} accepted"
            );
        }
        assert!(config(serde_json::json!({"container": "c", "bogus": 1})).is_err());
    }

    #[tokio::test]
    async fn secrets_stay_out_of_debug_and_describe() {
        let json = serde_json::json!({
            "auth_url": "http://127.0.0.1:1/auth/v1.0", "user": "u:v", "key": "SEKRETKEY",
            "storage_url": "http://127.0.0.1:1/v1/AUTH_x", "token": "SEKRETTOKEN",
            "container": "c"
        });
        let c = config(json.clone()).unwrap();
        let store = open(json).await.unwrap();
        let key = ObjectKey::parse("img").unwrap();
        for text in [
            format!("{c:?}"),
            format!("{store:?}"),
            store.describe(&key),
            format!("{:?}", store.inner.current_session().unwrap().token),
        ] {
            assert!(!text.contains("SEKRET"), "secret in {text}");
        }
        assert_eq!(store.describe(&key), "swift://c/img");
    }

    #[tokio::test]
    async fn key_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "filekey\n").unwrap();
        let store = open(serde_json::json!({
            "auth_url": "http://127.0.0.1:1/auth/v1.0", "user": "u", "key_file": path,
            "container": "c"
        }))
        .await
        .unwrap();
        assert_eq!(store.inner.credentials.as_ref().unwrap().key.0, "filekey");
    }

    /// Two requests' views of one body: each gets exactly its share, chunks split at the boundary.
    #[tokio::test]
    async fn feed_splits_at_exact_offsets() {
        let data = crate::testing::pattern(23, 1);
        let feed = Arc::new(Mutex::new(Feed::new(crate::testing::body_from(
            data.clone(),
            3,
        ))));
        let mut joined = vec![];
        let mut sizes = vec![];
        while Feed::has_more(&feed).await.unwrap() {
            feed.lock().unwrap().start(10, true);
            let finished = Arc::new(Notify::new());
            let body = FeedBody {
                feed: Arc::clone(&feed),
                finished: Arc::clone(&finished),
                done: false,
            };
            let part = crate::testing::read_all(Box::pin(body)).await.unwrap();
            // The end of the share was announced, and the MD5 covers exactly the share.
            tokio::time::timeout(Duration::from_secs(1), finished.notified())
                .await
                .unwrap();
            let md5: [u8; 16] = Md5::digest(&part).into();
            assert_eq!(feed.lock().unwrap().finish_md5(), md5);
            sizes.push(part.len());
            joined.extend(part);
        }
        assert_eq!(sizes, [10, 10, 3]);
        assert_eq!(joined, data);
    }

    #[tokio::test]
    async fn feed_keeps_the_body_error() {
        let body = crate::testing::failing_body(vec![7; 8], 4, 6);
        let feed = Arc::new(Mutex::new(Feed::new(body)));
        feed.lock().unwrap().start(u64::MAX, true);
        let body = FeedBody {
            feed: Arc::clone(&feed),
            finished: Arc::new(Notify::new()),
            done: false,
        };
        assert!(crate::testing::read_all(Box::pin(body)).await.is_err());
        let kept = feed.lock().unwrap().body_error.take().unwrap();
        assert_eq!(kept.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(feed.lock().unwrap().sent, 6);
    }

    #[test]
    fn listing_times() {
        let t = parse_listing_time("2024-05-01T12:34:56.123456").unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_714_566_896);
        assert_eq!(d.subsec_micros(), 123_456);
        assert_eq!(
            parse_listing_time("1970-01-01T00:00:00").unwrap(),
            UNIX_EPOCH
        );
        assert_eq!(
            parse_listing_time("2000-02-29T23:59:59.5")
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis(),
            951_868_799_500
        );
        assert!(parse_listing_time("garbage").is_none());
    }

    #[test]
    fn names_and_urls() {
        let (key, run) = parse_segment_name("a/b/.upload-0123abcd/00000001").unwrap();
        assert_eq!((key.as_str(), run), ("a/b", "0123abcd"));
        assert!(parse_segment_name("a/00000001").is_none());
        assert!(parse_segment_name("../.upload-x/1").is_none());
        assert_eq!(
            info_url("http://127.0.0.1:8080/v1/AUTH_test").as_deref(),
            Some("http://127.0.0.1:8080/info")
        );
        assert_eq!(
            info_url("https://h/swift/v1/AUTH_t").as_deref(),
            Some("https://h/swift/info")
        );
        assert_eq!(parse_content_range("bytes 10-19/100"), Some((10..20, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
    }
}
