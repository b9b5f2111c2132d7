//! The gateway over a real S3-compatible server named by `GATEWAY_TEST_S3_*` (see
//! `scripts/s3-backend.sh`): uploads and downloads through HTTP, and every failure path leaving
//! no object, no multipart upload and no active image with wrong bytes. Every test prints
//! "skipping" and passes when the endpoint is unset (CI's `GATEWAY_TEST_REQUIRE_BACKENDS=1` makes
//! it fail instead); each works under its own random key prefix, with 5 MiB parts (S3's minimum)
//! so small images take the multipart path.
//!
//! `s3_control_backend_stopped_mid_upload` stops and resumes the shared server itself: it is
//! ignored by default and runs only with `GATEWAY_TEST_S3_CONTROL=1`, alone:
//! `cargo test --test api s3_control_ -- --ignored --test-threads=1`.

use std::io;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;
use glance_gateway::config::SweepOrphans;
use reqwest::StatusCode;
use serde_json::Value;
use stores::s3::S3StoreConfig;
use stores::StoreConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;

use crate::common::*;

const MIB: usize = 1024 * 1024;
/// Part size and multipart threshold of every S3 store here.
const PART: usize = 5 * MIB;

use stores::test_backends::S3TestEnv as S3Env;

pub(crate) fn s3_env() -> Option<S3Env> {
    S3Env::from_env()
}

macro_rules! s3_env {
    () => {
        match s3_env() {
            Some(env) => env,
            None => {
                eprintln!("skipping: GATEWAY_TEST_S3_ENDPOINT not set");
                return;
            }
        }
    };
}

/// One test's corner of the bucket: a unique prefix, and a plain SDK client to look behind the
/// gateway's back.
pub(crate) struct Bucket {
    env: S3Env,
    pub(crate) prefix: String,
    sdk: Client,
}

impl Bucket {
    pub(crate) fn new(env: &S3Env, label: &str) -> Self {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&env.endpoint)
            .region(Region::new(env.region.clone()))
            .credentials_provider(Credentials::new(
                &env.access_key,
                &env.secret_key,
                None,
                None,
                "test",
            ))
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        Self {
            env: env.clone(),
            prefix: format!(
                "gateway-http-test/{label}-{}/",
                uuid::Uuid::new_v4().simple()
            ),
            sdk: Client::from_conf(conf),
        }
    }

    /// An S3 store on this prefix with 5 MiB parts and threshold.
    pub(crate) fn config(&self) -> S3StoreConfig {
        let mut c = S3StoreConfig::new(self.env.bucket.clone());
        c.endpoint = Some(self.env.endpoint.clone());
        c.region = Some(self.env.region.clone());
        c.force_path_style = true;
        c.prefix = self.prefix.clone();
        c.access_key_id = Some(self.env.access_key.clone().into());
        c.secret_access_key = Some(self.env.secret_key.clone().into());
        c.part_size = PART as u64;
        c.multipart_threshold = PART as u64;
        c
    }

    pub(crate) fn store(&self) -> StoreConfig {
        StoreConfig::S3(self.config())
    }

    /// [`config`](Self::config) as a config-file store table, for tests that run the binary.
    pub(crate) fn store_table(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "s3",
            "bucket": self.env.bucket,
            "endpoint": self.env.endpoint,
            "region": self.env.region,
            "force_path_style": true,
            "prefix": self.prefix,
            "access_key_id": self.env.access_key,
            "secret_access_key": self.env.secret_key,
            "part_size": PART,
            "multipart_threshold": PART,
        })
    }

    pub(crate) fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    /// Keys of the multipart uploads pending under this prefix.
    pub(crate) async fn uploads(&self) -> Vec<String> {
        let out = self
            .sdk
            .list_multipart_uploads()
            .bucket(&self.env.bucket)
            .prefix(&self.prefix)
            .send()
            .await
            .expect("ListMultipartUploads");
        out.uploads()
            .iter()
            .map(|u| u.key().unwrap_or_default().to_owned())
            .collect()
    }

    pub(crate) async fn head(&self, id: &str) -> Option<HeadObjectOutput> {
        let key = self.key(id);
        match self
            .sdk
            .head_object()
            .bucket(&self.env.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(out) => Some(out),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => None,
            Err(e) => panic!("HeadObject {key}: {e:?}"),
        }
    }

    async fn exists(&self, id: &str) -> bool {
        self.head(id).await.is_some()
    }

    /// Polls until a multipart upload for image `id` is pending (the upload reached S3).
    async fn wait_for_upload_of(&self, id: &str) {
        let key = self.key(id);
        for _ in 0..300 {
            if self.uploads().await.contains(&key) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no multipart upload for {key} appeared");
    }

    /// Polls a few seconds until no multipart upload is pending (cleanup after a disconnect
    /// runs in a spawned task).
    async fn wait_for_no_uploads(&self) {
        let mut left = vec![];
        for _ in 0..100 {
            left = self.uploads().await;
            if left.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("multipart uploads left behind: {left:?}");
    }

    /// No multipart upload under the prefix and no object for image `id`.
    async fn assert_nothing_left(&self, id: &str) {
        self.wait_for_no_uploads().await;
        assert!(!self.exists(id).await, "object for {id} left behind");
    }

    async fn put_object(&self, key: &str, data: &[u8]) {
        self.sdk
            .put_object()
            .bucket(&self.env.bucket)
            .key(key)
            .body(SdkByteStream::from(data.to_vec()))
            .send()
            .await
            .expect("PutObject");
    }
}

fn image_headers<'a>(id: &'a str, store: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut meta = vec![
        ("x-image-meta-id", id),
        ("x-image-meta-name", "s3 test image"),
        ("x-image-meta-disk_format", "raw"),
        ("x-image-meta-container_format", "bare"),
    ];
    if let Some(store) = store {
        meta.push(("x-image-meta-store", store));
    }
    meta
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// POST /v1/images with `body`; returns status and body text.
async fn post_image(
    app: &TestApp,
    meta: &[(&str, &str)],
    body: reqwest::Body,
) -> (u16, String, reqwest::header::HeaderMap) {
    let resp = app
        .post("/v1/images")
        .headers(meta_headers(meta))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.text().await.unwrap_or_default(), headers)
}

/// A chunked body (no Content-Length) in the given irregular piece sizes, cycling.
fn chunked_body(data: &[u8], pieces: &[usize]) -> reqwest::Body {
    let mut chunks = vec![];
    let (mut at, mut i) = (0, 0);
    while at < data.len() {
        let n = pieces[i % pieces.len()].min(data.len() - at);
        chunks.push(Ok::<_, io::Error>(Bytes::copy_from_slice(
            &data[at..at + n],
        )));
        at += n;
        i += 1;
    }
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

/// Uploads `data` and asserts 201 with the running MD5 as checksum; returns the image.
async fn upload_ok(app: &TestApp, id: &str, store: Option<&str>, data: &[u8]) -> Value {
    let body = if data.is_empty() {
        // Content-Length 0 means "no data": send an empty chunked body instead.
        chunked_body(data, &[1])
    } else {
        reqwest::Body::from(data.to_vec())
    };
    let (status, text, headers) = post_image(app, &image_headers(id, store), body).await;
    assert_eq!(status, 201, "upload of {} bytes: {text}", data.len());
    let image = serde_json::from_str::<Value>(&text).expect("json")["image"].clone();
    assert_eq!(image["status"], "active");
    assert_eq!(image["size"], data.len() as u64);
    assert_eq!(image["checksum"], md5_hex(data).as_str());
    assert_eq!(
        headers.get("etag").and_then(|v| v.to_str().ok()),
        Some(md5_hex(data).as_str())
    );
    image
}

async fn download(app: &TestApp, id: &str) -> Vec<u8> {
    let resp = app.get(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.bytes().await.unwrap().to_vec()
}

fn raw_head(id: &str, store: &str, framing: &str) -> String {
    format!(
        "POST /v1/images HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nx-image-meta-id: {id}\r\n\
         x-image-meta-disk_format: raw\r\nx-image-meta-container_format: bare\r\n\
         x-image-meta-store: {store}\r\n{framing}\r\n"
    )
}

fn chunk_frame(data: &[u8]) -> Vec<u8> {
    let mut framed = format!("{:x}\r\n", data.len()).into_bytes();
    framed.extend_from_slice(data);
    framed.extend_from_slice(b"\r\n");
    framed
}

async fn read_until_closed(rd: &mut OwnedReadHalf, within: Duration) -> RawResponse {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(within, async {
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    RawResponse::parse(&buf)
}

/// Sends `head` and `body` over raw TCP while reading the answer, so an answer sent before the
/// body is done (413, 503) is seen. With `half_close` the write side is shut after the body.
async fn raw_exchange(app: &TestApp, head: String, body: Vec<u8>, half_close: bool) -> RawResponse {
    let (mut rd, mut wr) = app.connect().await.into_split();
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_ok() {
            for piece in body.chunks(256 * 1024) {
                if wr.write_all(piece).await.is_err() {
                    break;
                }
            }
        }
        if half_close {
            let _ = wr.shutdown().await;
        }
        // Returned so the write side stays open until the answer is read.
        wr
    });
    let resp = read_until_closed(&mut rd, Duration::from_secs(60)).await;
    writer.abort();
    resp
}

#[tokio::test]
async fn s3_round_trips_odd_sizes_bit_exact() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "sizes");
    let app = TestApp::builder().store("s3", bucket.store()).spawn().await;
    for size in [0, 1, PART - 1, PART, PART + 1, 2 * PART + 12_345] {
        let data = pattern(size);
        let id = new_id();
        upload_ok(&app, &id, Some("s3"), &data).await;
        assert_eq!(app.record(&id).await.location.unwrap().store, "s3");
        let object = bucket
            .head(&id)
            .await
            .unwrap_or_else(|| panic!("no object for {size} bytes"));
        assert_eq!(object.content_length(), Some(size as i64));
        if size >= PART {
            // A multipart ETag ("<md5 of part md5s>-<parts>") is not the image's MD5: the
            // checksum above is the gateway's running digest.
            let etag = object.e_tag().unwrap_or_default();
            assert!(
                etag.contains('-'),
                "{size} bytes: ETag {etag} is not multipart"
            );
        }
        let got = download(&app, &id).await;
        assert!(got == data, "{size} bytes came back different");
    }
    bucket.wait_for_no_uploads().await;
}

#[tokio::test]
async fn s3_default_store_range_direct_url_and_delete() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "default");
    let app = TestApp::builder()
        .store("s3", bucket.store())
        .default_store("s3")
        .show_image_direct_url(true)
        .spawn()
        .await;
    let size = 2 * PART + 777;
    let data = pattern(size);
    let id = new_id();
    let image = upload_ok(&app, &id, None, &data).await;
    assert!(bucket.exists(&id).await, "default store is not S3");

    // The admin's direct URL names bucket, prefix and key, and nothing secret.
    let expected = format!("s3://{}/{}{id}", env.bucket, bucket.prefix);
    assert_eq!(image["location"], expected.as_str());
    let resp = app.head(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(
        header(&resp, "x-image-meta-location").as_deref(),
        Some(expected.as_str())
    );
    let detail = app
        .get("/v1/images/detail?is_public=None")
        .send()
        .await
        .unwrap();
    let detail = detail.text().await.unwrap();
    assert!(detail.contains(&expected), "{detail}");
    for text in [&detail, &format!("{:?}", resp.headers())] {
        assert!(!text.contains(&env.secret_key), "secret leaked: {text}");
    }

    // A range across the first part boundary, and an open range across the second.
    let spec = format!("bytes={}-{}", PART - 100, PART + 99);
    assert_range(&app, None, &id, &data, &spec, (PART - 100, PART + 99)).await;
    let from = 2 * PART - 5;
    let spec = format!("bytes={from}-");
    assert_range(&app, None, &id, &data, &spec, (from, size - 1)).await;
    assert_unsatisfiable(&app, &id, size).await;

    let resp = app
        .delete(&format!("/v1/images/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!bucket.exists(&id).await, "DELETE left the object");
    bucket.wait_for_no_uploads().await;
}

#[tokio::test]
async fn s3_chunked_upload_above_the_threshold() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "chunked");
    let app = TestApp::builder().store("s3", bucket.store()).spawn().await;
    let data = pattern(2 * PART + 4_321);
    let id = new_id();
    let body = chunked_body(&data, &[65_536, 1, 300_001, 4_096]);
    let (status, text, _) = post_image(&app, &image_headers(&id, Some("s3")), body).await;
    assert_eq!(status, 201, "{text}");
    let image: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(image["image"]["checksum"], md5_hex(&data).as_str());
    assert_eq!(image["image"]["size"], data.len() as u64);
    assert!(download(&app, &id).await == data);
    assert_eq!(
        bucket.head(&id).await.unwrap().content_length(),
        Some(data.len() as i64)
    );
    bucket.wait_for_no_uploads().await;
}

#[tokio::test]
async fn s3_client_disconnect_mid_upload_leaves_nothing() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "disconnect");
    let app = TestApp::builder().store("s3", bucket.store()).spawn().await;
    let id = new_id();
    let mut stream = app.connect().await;
    let head = raw_head(&id, "s3", &format!("Content-Length: {}\r\n", 4 * PART));
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&pattern(2 * PART + 1000)).await.unwrap();
    bucket.wait_for_upload_of(&id).await;
    drop(stream);
    app.wait_for_status(&id, "killed").await;
    bucket.assert_nothing_left(&id).await;
    assert!(app.record(&id).await.location.is_none());
    assert_eq!(status(app.get(&format!("/v1/images/{id}"))).await, 404);
}

#[tokio::test]
async fn s3_body_failing_mid_stream_is_400_and_leaves_nothing() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "cut");
    let app = TestApp::builder().store("s3", bucket.store()).spawn().await;
    let id = new_id();
    let (mut rd, mut wr) = app.connect().await.into_split();
    let head = raw_head(&id, "s3", &format!("Content-Length: {}\r\n", 4 * PART));
    wr.write_all(head.as_bytes()).await.unwrap();
    wr.write_all(&pattern(2 * PART + 1000)).await.unwrap();
    bucket.wait_for_upload_of(&id).await;
    // The body ends short of its Content-Length; the connection stays open for the answer.
    wr.shutdown().await.unwrap();
    let resp = read_until_closed(&mut rd, Duration::from_secs(30)).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(app.status_of(&id).await, "killed");
    bucket.assert_nothing_left(&id).await;
}

#[tokio::test]
async fn s3_size_and_checksum_mismatches_are_400_and_leave_nothing() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "mismatch");
    let app = TestApp::builder().store("s3", bucket.store()).spawn().await;
    let data = pattern(2 * PART + 3);
    let wrong_md5 = md5_hex(b"not the data");
    let small = (data.len() - 1).to_string();
    let large = (data.len() + 1).to_string();
    let cases: [(&str, &str); 3] = [
        ("x-image-meta-size", &small),
        ("x-image-meta-size", &large),
        ("x-image-meta-checksum", &wrong_md5),
    ];
    for (name, value) in cases {
        let id = new_id();
        let mut meta = image_headers(&id, Some("s3"));
        meta.push((name, value));
        let (status, text, _) = post_image(&app, &meta, reqwest::Body::from(data.clone())).await;
        assert_eq!(status, 400, "{name}: {value}: {text}");
        assert_eq!(app.status_of(&id).await, "killed", "{name}: {value}");
        bucket.assert_nothing_left(&id).await;
    }
}

#[tokio::test]
async fn s3_upload_over_the_size_cap_is_413_and_leaves_nothing() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "cap");
    let cap = 2 * PART + 1000;
    let app = TestApp::builder()
        .store("s3", bucket.store())
        .image_size_cap(cap as u64)
        .spawn()
        .await;
    let id = new_id();
    let mut body = vec![];
    for piece in pattern(3 * PART).chunks(100_000) {
        body.extend_from_slice(&chunk_frame(piece));
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let head = raw_head(&id, "s3", "Transfer-Encoding: chunked\r\n");
    let resp = raw_exchange(&app, head, body, false).await;
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(app.status_of(&id).await, "killed");
    bucket.assert_nothing_left(&id).await;
}

#[tokio::test]
async fn s3_wrong_credentials_answer_503_and_other_stores_keep_serving() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "badcreds");
    let bad_secret = format!("wrong-secret-{}", uuid::Uuid::new_v4().simple());
    let mut bad = bucket.config();
    bad.secret_access_key = Some(bad_secret.clone().into());
    // A namespace of its own: two stores may not share one.
    bad.prefix = format!("{}-bad/", bucket.prefix.trim_end_matches('/'));
    let app = TestApp::builder()
        .store("s3", bucket.store())
        .store("s3bad", StoreConfig::S3(bad))
        .show_image_direct_url(true)
        .spawn()
        .await;
    let kept = pattern(1000);
    let kept_id = new_id();
    upload_ok(&app, &kept_id, Some("s3"), &kept).await;

    let mut texts = vec![];
    // One PutObject, then a multipart upload.
    for size in [1000, PART + 1] {
        let id = new_id();
        let (status, text, headers) = post_image(
            &app,
            &image_headers(&id, Some("s3bad")),
            reqwest::Body::from(pattern(size)),
        )
        .await;
        assert_eq!(status, 503, "{size} bytes: {text}");
        assert!(text.contains("s3bad"), "{text}");
        texts.push(format!("{text}{headers:?}"));
        assert_eq!(app.status_of(&id).await, "killed");
        assert!(app.record(&id).await.location.is_none());
        bucket.assert_nothing_left(&id).await;
        let resp = app.head(&format!("/v1/images/{id}")).send().await.unwrap();
        texts.push(format!("{:?}", resp.headers()));
    }
    texts.push(
        app.get("/v1/images/detail?is_public=None")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    for text in &texts {
        assert!(!text.contains(&bad_secret), "bad secret leaked: {text}");
        assert!(!text.contains(&env.secret_key), "secret leaked: {text}");
    }

    // The registry and the other stores are unaffected.
    assert_eq!(app.status_of(&kept_id).await, "active");
    assert!(download(&app, &kept_id).await == kept);
    let file_data = pattern(3000);
    let file_id = new_id();
    upload_ok(&app, &file_id, Some("file"), &file_data).await;
    assert!(download(&app, &file_id).await == file_data);
    let more = pattern(PART + 2);
    let more_id = new_id();
    upload_ok(&app, &more_id, Some("s3"), &more).await;
    assert!(download(&app, &more_id).await == more);
}

#[tokio::test]
async fn s3_unreachable_endpoint_answers_503_fast() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "unreachable");
    let port = REFUSED_PORT;
    let mut down = bucket.config();
    down.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let app = TestApp::builder()
        .store("down", StoreConfig::S3(down))
        .spawn()
        .await;
    for size in [1000, PART + 1] {
        let id = new_id();
        let started = Instant::now();
        let (status, text, _) = post_image(
            &app,
            &image_headers(&id, Some("down")),
            reqwest::Body::from(pattern(size)),
        )
        .await;
        let took = started.elapsed();
        assert_eq!(status, 503, "{size} bytes: {text}");
        assert!(text.contains("down"), "{text}");
        assert!(took < Duration::from_secs(10), "503 took {took:?}");
        eprintln!("unreachable store: 503 for {size} bytes in {took:?}");
        assert_eq!(app.status_of(&id).await, "killed");
    }
    let data = pattern(100);
    let id = new_id();
    upload_ok(&app, &id, Some("file"), &data).await;
}

#[tokio::test]
async fn s3_sweep_removes_abandoned_uploads_and_orphans() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "sweep");
    // Leftovers of an earlier run: an abandoned multipart upload and an object no image names.
    let abandon = |bucket: &Bucket, label: &str| {
        let key = bucket.key(&format!("{label}-{}", new_id()));
        let sdk = bucket.sdk.clone();
        let name = bucket.env.bucket.clone();
        async move {
            sdk.create_multipart_upload()
                .bucket(&name)
                .key(&key)
                .send()
                .await
                .expect("CreateMultipartUpload");
            key
        }
    };
    let first_upload = abandon(&bucket, "abandoned").await;
    let first_orphan = new_id();
    bucket
        .put_object(&bucket.key(&first_orphan), b"orphan")
        .await;
    assert_eq!(bucket.uploads().await, vec![first_upload]);

    // The sweep at startup aborts the upload; the orphan stays, since a new registry cannot
    // tell an orphan from another gateway's image.
    let app = TestApp::builder()
        .store("s3", bucket.store())
        .sweep_min_age(0)
        .sweep_orphans(SweepOrphans::Delete)
        .spawn()
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !bucket.uploads().await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the startup sweep left the upload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let that sweep finish before a live object appears (it lists objects after it read the
    // registry, and a zero minimum age protects nothing).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        bucket.exists(&first_orphan).await,
        "a new registry removed an orphan"
    );

    let live = pattern(1000);
    let live_id = new_id();
    upload_ok(&app, &live_id, Some("s3"), &live).await;
    let app = app.restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second_upload = abandon(&bucket, "abandoned").await;
    let second_orphan = new_id();
    bucket
        .put_object(&bucket.key(&second_orphan), b"orphan")
        .await;
    assert_eq!(bucket.uploads().await, vec![second_upload]);

    // The scheduled sweep (the same function) of a registry that knows images removes them,
    // and only them.
    glance_gateway::maintenance::sweep(app.state()).await;
    assert_eq!(bucket.uploads().await, Vec::<String>::new());
    assert!(!bucket.exists(&first_orphan).await, "orphan not removed");
    assert!(!bucket.exists(&second_orphan).await, "orphan not removed");
    assert!(
        bucket.exists(&live_id).await,
        "the live image's object was removed"
    );
    assert!(download(&app, &live_id).await == live);
}

/// Two gateways on one bucket + prefix: the second is refused, adopts with `adopt = true`, and
/// by default only reports the first one's images.
#[tokio::test]
async fn s3_two_gateways_on_one_prefix() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "owners");
    crate::ownership::two_gateways_on_one_namespace(|adopt| {
        let mut c = bucket.config();
        c.adopt = adopt;
        StoreConfig::S3(c)
    })
    .await;
    assert!(bucket.exists(stores::ownership::MARKER).await);
}

#[tokio::test]
async fn s3_stores_sharing_a_prefix_are_refused() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "overlap");
    let mut inner = bucket.config();
    inner.prefix = format!("{}inner/", bucket.prefix);
    let message = TestApp::builder()
        .store("outer", bucket.store())
        .store("inner", StoreConfig::S3(inner))
        .refused()
        .await;
    assert!(message.contains("stores.inner"), "{message}");
}

/// Brings the shared server back even when the test fails.
struct ResumeOnDrop;

fn backend_script(action: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/s3-backend.sh");
    let out = std::process::Command::new(script)
        .arg(action)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run scripts/s3-backend.sh");
    assert!(out.success(), "scripts/s3-backend.sh {action} failed");
}

impl Drop for ResumeOnDrop {
    fn drop(&mut self) {
        backend_script("resume");
    }
}

#[tokio::test]
#[ignore = "stops the shared S3 server: run alone with GATEWAY_TEST_S3_CONTROL=1"]
async fn s3_control_backend_stopped_mid_upload() {
    let env = s3_env!();
    if std::env::var("GATEWAY_TEST_S3_CONTROL").as_deref() != Ok("1") {
        eprintln!("skipping: GATEWAY_TEST_S3_CONTROL=1 not set");
        return;
    }
    let bucket = Bucket::new(&env, "outage");
    let app = TestApp::builder().store("s3", bucket.store()).spawn().await;
    let kept = pattern(PART + 10);
    let kept_id = new_id();
    upload_ok(&app, &kept_id, Some("s3"), &kept).await;

    // A chunked upload that pauses once its multipart upload is under way.
    let id = new_id();
    let (mut rd, mut wr) = app.connect().await.into_split();
    wr.write_all(raw_head(&id, "s3", "Transfer-Encoding: chunked\r\n").as_bytes())
        .await
        .unwrap();
    wr.write_all(&chunk_frame(&pattern(2 * PART + 1000)))
        .await
        .unwrap();
    bucket.wait_for_upload_of(&id).await;

    let resume = ResumeOnDrop;
    backend_script("stop");
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for piece in pattern(3 * PART).chunks(256 * 1024) {
            if wr.write_all(&chunk_frame(piece)).await.is_err() {
                return wr;
            }
        }
        let _ = wr.write_all(b"0\r\n\r\n").await;
        wr
    });
    let resp = read_until_closed(&mut rd, Duration::from_secs(90)).await;
    writer.abort();
    eprintln!(
        "backend down: answered {} in {:?}",
        resp.status,
        started.elapsed()
    );
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(resp.text().contains("s3"), "{}", resp.text());
    assert_eq!(app.status_of(&id).await, "killed");
    assert!(app.record(&id).await.location.is_none());
    // The registry is intact while the backend is down.
    assert_eq!(app.status_of(&kept_id).await, "active");
    let listed = list_ids(&app, "/v1/images?is_public=None", None).await;
    assert!(listed.contains(&kept_id));

    drop(resume);
    // The failed upload's abort could not reach the server; the sweep removes the upload.
    let store = app.state().stores.get("s3").unwrap().clone();
    let report = store
        .sweep_incomplete(Duration::ZERO, &Default::default())
        .await
        .expect("sweep after resume");
    assert!(
        report.incomplete_removed >= 1,
        "the abort reached a stopped server?"
    );
    bucket.assert_nothing_left(&id).await;
    assert!(download(&app, &kept_id).await == kept);
}

/// Spec §0.17: an admin may register an object of the store's bucket outside the gateway's
/// prefix; it is served (ranges too) and never deleted. Others get 403; objects inside the
/// prefix, or missing, are refused.
#[tokio::test]
async fn s3_admins_register_objects_outside_the_prefix() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "registered");
    let app = TestApp::builder()
        .trusted_headers()
        .store("s3", bucket.store())
        .show_image_direct_url(true)
        .spawn()
        .await;
    let outside = format!(
        "gateway-http-test/outside-{}/image.raw",
        uuid::Uuid::new_v4().simple()
    );
    let data = pattern(300_003);
    bucket
        .sdk
        .put_object()
        .bucket(&env.bucket)
        .key(&outside)
        .body(data.clone().into())
        .send()
        .await
        .expect("PutObject");
    let uri = format!("s3://{}/{outside}", env.bucket);
    let admin = Who::admin("ops");
    let (code, body) = send(
        app.post("/v1/images")
            .headers(location_meta(&uri))
            .who(&Who::tenant("t1")),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    let image = register_and_read(&app, &admin, &uri, &data).await;
    assert_eq!(image["location"], uri.as_str());
    let id = image["id"].as_str().unwrap().to_owned();

    // Deleting the image leaves the object alone.
    assert_eq!(
        status(app.delete(&format!("/v1/images/{id}")).who(&admin)).await,
        200
    );
    let head = bucket
        .sdk
        .head_object()
        .bucket(&env.bucket)
        .key(&outside)
        .send()
        .await;
    assert!(head.is_ok(), "the registered object was deleted");

    // Inside the gateway's own prefix, and missing objects, are refused.
    let inside = format!("s3://{}/{}someone-elses-image", env.bucket, bucket.prefix);
    let (code, _) = send(
        app.post("/v1/images")
            .headers(location_meta(&inside))
            .who(&admin),
    )
    .await;
    assert_eq!(code, 400);
    let missing = format!(
        "s3://{}/gateway-http-test/missing-{}",
        env.bucket,
        uuid::Uuid::new_v4().simple()
    );
    let before = list_ids(&app, "/v1/images?is_public=none", Some(&admin))
        .await
        .len();
    let (code, _) = send(
        app.post("/v1/images")
            .headers(location_meta(&missing))
            .who(&admin),
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(
        list_ids(&app, "/v1/images?is_public=none", Some(&admin))
            .await
            .len(),
        before
    );
    let _ = bucket
        .sdk
        .delete_object()
        .bucket(&env.bucket)
        .key(&outside)
        .send()
        .await;
}

/// SIGKILL of the real binary mid multipart upload, then a restart: the active image is intact,
/// nothing is left `saving`, and no multipart upload or stray object stays under the prefix.
#[tokio::test]
async fn s3_kill_9_mid_upload_loses_nothing_and_leaves_nothing() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "kill9");
    let store = bucket.store_table();
    let bucket = &bucket;
    let run = crate::crash::kill_mid_upload(store, PART + 1000, |id| async move {
        bucket.uploads().await.contains(&bucket.key(&id))
    })
    .await;
    assert_eq!(bucket.uploads().await, Vec::<String>::new());
    let listed = bucket
        .sdk
        .list_objects_v2()
        .bucket(&env.bucket)
        .prefix(&bucket.prefix)
        .send()
        .await
        .unwrap();
    let mut keys: Vec<_> = listed
        .contents()
        .iter()
        .map(|o| o.key().unwrap().to_owned())
        .collect();
    keys.sort();
    let mut expected = vec![bucket.key(&run.kept), bucket.key(stores::ownership::MARKER)];
    expected.sort();
    assert_eq!(keys, expected, "interrupted: {}", run.interrupted);
    run.gateway.kill9().await;
}

/// S3 dies in the middle of a download: the client sees the connection cut, never a complete-
/// looking 200 (a shorter body that ends cleanly).
#[tokio::test]
async fn s3_backend_dying_mid_download_cuts_the_client_off() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "dying");
    let upstream = env
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("the test endpoint is http://ip:port");
    let proxy = crate::crash::DyingProxy::start(upstream).await;
    let mut config = bucket.config();
    config.endpoint = Some(format!("http://{}", proxy.addr));
    config.max_attempts = 1;
    let app = TestApp::builder()
        .store("s3", StoreConfig::S3(config))
        .spawn()
        .await;
    let data = pattern(3 * PART);
    let id = new_id();
    upload_ok(&app, &id, Some("s3"), &data).await;
    proxy.die_after(2 * MIB as u64);
    crate::crash::assert_download_is_cut(&app, &id, data.len()).await;
}

#[tokio::test]
async fn s3_more_bytes_than_declared_is_400_and_leaves_nothing() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "overdeclared");
    let app = TestApp::builder().store("s3", bucket.store()).spawn().await;
    crate::failures::more_than_declared_is_400_at_the_declared_size(&app, Some("s3")).await;
    bucket.wait_for_no_uploads().await;
    let listed = bucket
        .sdk
        .list_objects_v2()
        .bucket(&env.bucket)
        .prefix(&bucket.prefix)
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, vec![bucket.key(stores::ownership::MARKER)]);
}

/// DELETE succeeds once the image's object is gone, even when the credentials may not list
/// multipart uploads: the upload a crash left for the key is the sweep's to remove.
#[tokio::test]
async fn s3_delete_succeeds_without_the_list_uploads_permission() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "nolist");
    let upstream = env.endpoint.trim_start_matches("http://").parse().unwrap();
    // ListMultipartUploads is `GET /<bucket>?uploads…`.
    let proxy = crate::crash::RefusingProxy::start(upstream, |line| {
        line.starts_with("GET ") && line.contains("?uploads")
    })
    .await;
    let mut config = bucket.config();
    config.endpoint = Some(format!("http://{}", proxy.addr));
    let app = TestApp::builder()
        .store("s3", StoreConfig::S3(config))
        .sweep_min_age(0)
        .spawn()
        .await;
    let id = new_id();
    upload_ok(&app, &id, Some("s3"), &pattern(1000)).await;
    // What a crash during an earlier upload of the key left behind.
    bucket
        .sdk
        .create_multipart_upload()
        .bucket(&env.bucket)
        .key(bucket.key(&id))
        .send()
        .await
        .unwrap();

    proxy.refuse(true);
    let resp = app
        .delete(&format!("/v1/images/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
    assert!(!bucket.exists(&id).await);
    assert_eq!(app.status_of(&id).await, "deleted");
    assert_eq!(bucket.uploads().await, vec![bucket.key(&id)]);

    // Once listing works again, the sweep removes the leftover.
    proxy.refuse(false);
    glance_gateway::maintenance::sweep(app.state()).await;
    assert_eq!(bucket.uploads().await, Vec::<String>::new());
}

#[tokio::test]
async fn s3_endpoint_is_no_remote_source_whatever_its_spelling() {
    let env = s3_env!();
    let bucket = Bucket::new(&env, "own-endpoint");
    let app = TestApp::builder()
        .store("s3", bucket.store())
        .remote_sources(glance_gateway::config::RemoteSources::Any)
        .spawn()
        .await;
    let port = reqwest::Url::parse(&env.endpoint)
        .unwrap()
        .port_or_known_default()
        .unwrap();
    for host in ["localhost", "[::ffff:127.0.0.1]", "0.0.0.0", "127.0.0.1"] {
        let url = format!("http://{host}:{port}/{}/{}", env.bucket, bucket.key("x"));
        for header in ["x-glance-api-copy-from", "x-image-meta-location"] {
            let (code, body) = send(
                app.post("/v1/images")
                    .header("x-image-meta-disk_format", "raw")
                    .header("x-image-meta-container_format", "bare")
                    .header(header, url.as_str()),
            )
            .await;
            assert_eq!(code, 400, "{header} {url}: {body}");
            assert!(body.contains("not supported"), "{body}");
        }
    }
}
