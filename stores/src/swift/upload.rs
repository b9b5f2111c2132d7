//! Uploads: one streamed PUT for a body declared small, else segments streamed one after another
//! and a manifest over them (static where the cluster has SLO, dynamic otherwise).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use reqwest::{Method, StatusCode};
use tokio::sync::Notify;

use super::client::{header_str, info_url, Failure};
use super::feed::{Feed, FeedBody};
use super::guard::UploadGuard;
use super::{Inner, SEGMENT_MARK};
use crate::{ByteStream, ObjectKey, PutOptions, RunningMd5, StoreError};

/// Polls of a fresh Dynamic Large Object until the container listing shows all its segments.
const DLO_CHECKS: u32 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ManifestKind {
    Static { max_segments: u64 },
    Dynamic,
}

struct SegmentDone {
    name: String,
    size: u64,
    etag: String,
}

impl Inner {
    /// Stores `body` under `key`, segmented unless the size hint is below `large_object_size`.
    pub async fn put(
        self: &Arc<Self>,
        key: &ObjectKey,
        body: ByteStream,
        options: PutOptions,
    ) -> Result<(), StoreError> {
        let inner = self;
        let PutOptions { size_hint, md5 } = options;
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
}
