//! The gateway over a real Swift (start one with `eval "$(scripts/swift-backend.sh start)"`):
//! segmented uploads, ranges across segment boundaries, cleanup after every kind of failed
//! upload, outages and the sweep, all through the HTTP API. Skipped unless
//! `GATEWAY_TEST_SWIFT_AUTH_URL`, `GATEWAY_TEST_SWIFT_USER` and `GATEWAY_TEST_SWIFT_KEY` are set
//! (failed instead with `GATEWAY_TEST_REQUIRE_BACKENDS=1`, as in CI).
//!
//! Every test has containers of its own, objects of `LARGE` bytes or more (and streams of unknown
//! length) go up as segments of `SEG` bytes, and what Swift holds is checked with a raw client
//! of its own, never through the gateway's store.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use stores::StoreConfig;
use tokio::io::AsyncWriteExt;

use crate::common::*;

const SEG: usize = 64 * 1024;
const LARGE: usize = 128 * 1024;
/// Several segments and an odd tail.
const BIG: usize = 5 * SEG + 1234;

use stores::test_backends::{SwiftRaw, SwiftTestEnv as Env};

fn env() -> Option<Env> {
    Env::from_env()
}

macro_rules! swift_env {
    () => {
        match env() {
            Some(e) => e,
            None => {
                eprintln!("skipping: GATEWAY_TEST_SWIFT_AUTH_URL not set");
                return;
            }
        }
    };
}

fn unique_container() -> String {
    format!("glance-{}", uuid::Uuid::new_v4().simple())
}

fn swift_json(env: &Env, container: &str) -> Value {
    serde_json::json!({
        "kind": "swift",
        "auth_url": env.auth_url,
        "user": env.user,
        "key": env.key,
        "container": container,
        "create_container": true,
        "large_object_size": LARGE,
        "segment_size": SEG,
        "connect_timeout_secs": 2,
        "request_timeout_secs": 10,
        "read_timeout_secs": 10,
    })
}

fn store_config(json: Value) -> StoreConfig {
    serde_json::from_value(json).expect("swift store config")
}

/// A gateway with a `swift` store in a fresh container (next to the default `file` store).
async fn gateway(env: &Env) -> (TestApp, String) {
    let container = unique_container();
    let app = TestApp::builder()
        .store("swift", store_config(swift_json(env, &container)))
        .spawn()
        .await;
    (app, container)
}

fn swift_meta(name: &str) -> Vec<(&str, &str)> {
    vec![
        ("x-image-meta-name", name),
        ("x-image-meta-disk_format", "raw"),
        ("x-image-meta-container_format", "bare"),
        ("x-image-meta-store", "swift"),
    ]
}

/// What the tests check in Swift: a container and its segment container.
struct Raw(SwiftRaw);

impl std::ops::Deref for Raw {
    type Target = SwiftRaw;
    fn deref(&self) -> &SwiftRaw {
        &self.0
    }
}

impl Raw {
    async fn new(env: &Env) -> Self {
        Self(SwiftRaw::new(env).await)
    }

    async fn list(&self, container: &str) -> Vec<String> {
        self.0.list(container, "").await
    }

    async fn segments(&self, container: &str) -> Vec<String> {
        self.list(&format!("{container}_segments")).await
    }

    /// Asserts that the container and its segment container are (or soon become) empty:
    /// cleanup after a disconnect runs in the background.
    async fn assert_empty_soon(&self, container: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let objects = self.list(container).await;
            let segments = self.segments(container).await;
            if objects.is_empty() && segments.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "left behind: objects {objects:?}, segments {segments:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn download(app: &TestApp, id: &str) -> Vec<u8> {
    let resp = app.get(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.bytes().await.unwrap().to_vec()
}

/// POST with the image as a chunked body (no Content-Length); returns status and body text.
async fn post_chunked(app: &TestApp, meta: &[(&str, &str)], data: &[u8]) -> (u16, String) {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(10_000).map(|c| Ok(c.to_vec())).collect();
    send(
        app.post("/v1/images")
            .headers(meta_headers(meta))
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks))),
    )
    .await
}

fn raw_post_head(id: &str, framing: &str) -> String {
    format!(
        "POST /v1/images HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nx-image-meta-id: {id}\r\n\
         x-image-meta-disk_format: raw\r\nx-image-meta-container_format: bare\r\n\
         x-image-meta-store: swift\r\n{framing}\r\n"
    )
}

#[tokio::test]
async fn segmented_image_round_trips_with_ranges_and_delete_leaves_nothing() {
    let env = swift_env!();
    let (app, container) = gateway(&env).await;
    let raw = Raw::new(&env).await;
    let data = pattern(BIG);

    let img = app.create_image(&swift_meta("big"), Some(&data)).await;
    let id = img["id"].as_str().unwrap().to_owned();
    assert_eq!(img["status"], "active");
    assert_eq!(img["size"], BIG as u64);
    // The gateway's running MD5 of the data, not the manifest's ETag (an MD5 of segment ETags).
    assert_eq!(img["checksum"], md5_hex(&data).as_str());
    let manifest = raw.head(&format!("{container}/{id}")).await;
    assert!(manifest.status().is_success());
    assert_eq!(
        header(&manifest, "x-static-large-object").as_deref(),
        Some("True")
    );
    let manifest_etag = header(&manifest, "etag").unwrap();
    assert_ne!(manifest_etag.trim_matches('"'), md5_hex(&data));
    let segments = raw.segments(&container).await;
    assert_eq!(segments.len(), BIG.div_ceil(SEG), "{segments:?}");
    assert!(segments.iter().all(|s| s.starts_with(&format!("{id}/"))));

    let resp = app.get(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "x-image-meta-checksum").as_deref(),
        Some(md5_hex(&data).as_str())
    );
    assert_eq!(
        header(&resp, "content-length").as_deref(),
        Some(BIG.to_string().as_str())
    );
    assert!(resp.bytes().await.unwrap() == data, "download differs");

    // Ranges across one and several segment boundaries, a suffix and an open end.
    for (spec, first, last) in [
        (format!("bytes={}-{}", SEG - 10, SEG + 9), SEG - 10, SEG + 9),
        (
            format!("bytes={}-{}", SEG / 2, 3 * SEG + 100),
            SEG / 2,
            3 * SEG + 100,
        ),
        ("bytes=-1500".to_owned(), BIG - 1500, BIG - 1),
        (format!("bytes={}-", 4 * SEG - 1), 4 * SEG - 1, BIG - 1),
        // An end past the image is clipped.
        (format!("bytes={}-{}", 2 * SEG, BIG + 50), 2 * SEG, BIG - 1),
    ] {
        assert_range(&app, None, &id, &data, &spec, (first, last)).await;
    }
    assert_unsatisfiable(&app, &id, BIG).await;

    assert_eq!(status(app.delete(&format!("/v1/images/{id}"))).await, 200);
    raw.assert_empty_soon(&container).await;
    assert_eq!(status(app.get(&format!("/v1/images/{id}"))).await, 404);
}

#[tokio::test]
async fn small_zero_byte_and_chunked_images() {
    let env = swift_env!();
    let (app, container) = gateway(&env).await;
    let raw = Raw::new(&env).await;

    // Below large_object_size with a Content-Length: one plain object, no segments.
    let small = pattern(LARGE - 1);
    let id = app.create_image(&swift_meta("small"), Some(&small)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.record(&id).await.checksum, Some(md5_hex(&small)));
    let head = raw.head(&format!("{container}/{id}")).await;
    assert!(head.status().is_success());
    assert!(header(&head, "x-static-large-object").is_none());
    assert!(raw.segments(&container).await.is_empty());
    assert!(download(&app, &id).await == small);
    assert_range(&app, None, &id, &small, "bytes=100-199", (100, 199)).await;

    // Zero bytes (an empty chunked body: with `Content-Length: 0` an image stays queued).
    let (code, body) = post_chunked(&app, &swift_meta("empty"), &[]).await;
    assert_eq!(code, 201, "{body}");
    let empty: Value = serde_json::from_str::<Value>(&body).unwrap()["image"].clone();
    let empty_id = empty["id"].as_str().unwrap().to_owned();
    assert_eq!(empty["status"], "active");
    assert_eq!(empty["size"], 0);
    assert_eq!(empty["checksum"], md5_hex(b"").as_str());
    assert!(download(&app, &empty_id).await.is_empty());

    // Chunked, no Content-Length: always segmented, even when it turns out small.
    let mut ids = vec![];
    for len in [BIG, 1000] {
        let data = pattern(len);
        let chunked_id = uuid::Uuid::new_v4().to_string();
        let mut meta = swift_meta("chunked");
        meta.push(("x-image-meta-id", &chunked_id));
        let (code, body) = post_chunked(&app, &meta, &data).await;
        assert_eq!(code, 201, "{body}");
        let img: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(img["image"]["size"], len as u64);
        assert_eq!(img["image"]["checksum"], md5_hex(&data).as_str());
        assert!(download(&app, &chunked_id).await == data, "{len} bytes");
        let segments: Vec<_> = raw
            .segments(&container)
            .await
            .into_iter()
            .filter(|s| s.starts_with(&chunked_id))
            .collect();
        assert_eq!(segments.len(), len.div_ceil(SEG), "{segments:?}");
        ids.push(chunked_id);
    }

    for id in ids.iter().chain([&id, &empty_id]) {
        assert_eq!(status(app.delete(&format!("/v1/images/{id}"))).await, 200);
    }
    raw.assert_empty_soon(&container).await;
}

#[tokio::test]
async fn default_store_swift_takes_uploads_without_a_store_header() {
    let env = swift_env!();
    let container = unique_container();
    let app = TestApp::builder()
        .store("swift", store_config(swift_json(&env, &container)))
        .default_store("swift")
        .spawn()
        .await;
    let raw = Raw::new(&env).await;
    let data = pattern(3 * SEG + 7);
    let id = app.public_image("default", &data).await;
    assert_eq!(
        app.record(&id).await.location.unwrap().store,
        "swift".to_owned()
    );
    assert!(raw
        .head(&format!("{container}/{id}"))
        .await
        .status()
        .is_success());
    assert!(!app.object_path(&id).exists());
    assert!(download(&app, &id).await == data);
    assert_eq!(status(app.delete(&format!("/v1/images/{id}"))).await, 200);
    raw.assert_empty_soon(&container).await;
}

#[tokio::test]
async fn client_disconnect_mid_upload_kills_and_leaves_nothing() {
    let env = swift_env!();
    let (app, container) = gateway(&env).await;
    let raw = Raw::new(&env).await;
    // Declared large (segments), then declared small (one plain streamed PUT).
    for (declared, sent) in [(1_000_000, 300_000), (LARGE - 1, LARGE / 2)] {
        let id = uuid::Uuid::new_v4().to_string();
        let mut stream = app.connect().await;
        stream
            .write_all(raw_post_head(&id, &format!("Content-Length: {declared}\r\n")).as_bytes())
            .await
            .unwrap();
        stream.write_all(&pattern(sent)).await.unwrap();
        app.wait_for_status(&id, "saving").await;
        if sent > 2 * SEG {
            // Let some segments reach Swift before the client goes away.
            let deadline = Instant::now() + Duration::from_secs(10);
            while raw.segments(&container).await.len() < 2 {
                assert!(Instant::now() < deadline, "no segment was written");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        drop(stream);
        app.wait_for_status(&id, "killed").await;
        raw.assert_empty_soon(&container).await;
        assert!(app.record(&id).await.location.is_none());
        assert_eq!(status(app.get(&format!("/v1/images/{id}"))).await, 404);
    }
}

#[tokio::test]
async fn size_and_checksum_mismatches_are_400_killed_and_leave_nothing() {
    let env = swift_env!();
    let (app, container) = gateway(&env).await;
    let raw = Raw::new(&env).await;
    let data = pattern(BIG);
    let declared_size = (BIG + 1).to_string();
    let small_size = (BIG - SEG).to_string();
    let wrong_md5 = md5_hex(b"something else");
    let cases: [(&str, &str); 3] = [
        // The data ends before the declared size: every segment went up, the manifest too.
        ("x-image-meta-size", &declared_size),
        // More data than declared.
        ("x-image-meta-size", &small_size),
        ("x-image-meta-checksum", &wrong_md5),
    ];
    for (name, value) in cases {
        let id = uuid::Uuid::new_v4().to_string();
        let mut meta = swift_meta("mismatch");
        meta.push(("x-image-meta-id", &id));
        meta.push((name, value));
        let (code, body) = send(
            app.post("/v1/images")
                .headers(meta_headers(&meta))
                .header("content-type", "application/octet-stream")
                .body(data.clone()),
        )
        .await;
        assert_eq!(code, 400, "{name}: {value}: {body}");
        assert_eq!(app.status_of(&id).await, "killed", "{name}: {value}");
        raw.assert_empty_soon(&container).await;
    }
}

#[tokio::test]
async fn chunked_upload_over_the_size_cap_is_413_killed_and_leaves_nothing() {
    let env = swift_env!();
    let container = unique_container();
    let app = TestApp::builder()
        .store("swift", store_config(swift_json(&env, &container)))
        .image_size_cap(3 * SEG as u64 + 100)
        .spawn()
        .await;
    let raw = Raw::new(&env).await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut meta = swift_meta("too big");
    meta.push(("x-image-meta-id", &id));
    let (code, body) = post_chunked(&app, &meta, &pattern(BIG)).await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(app.status_of(&id).await, "killed");
    raw.assert_empty_soon(&container).await;
}

#[tokio::test]
async fn refused_credentials_are_503_and_the_rest_keeps_working() {
    let env = swift_env!();
    let container = unique_container();
    let bad_key = "not-the-key-b7c1e9";
    let mut bad = swift_json(&env, &unique_container());
    bad["key"] = Value::from(bad_key);
    let app = TestApp::builder()
        .store("swift", store_config(swift_json(&env, &container)))
        .store("badswift", store_config(bad))
        .spawn()
        .await;
    let raw = Raw::new(&env).await;
    let on_file = app
        .create_image(
            &[
                ("x-image-meta-name", "on file"),
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
            ],
            Some(b"file data"),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let on_swift = app
        .create_image(&swift_meta("on swift"), Some(&pattern(1000)))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    for data in [pattern(1000), pattern(BIG)] {
        let id = uuid::Uuid::new_v4().to_string();
        let resp = app
            .post("/v1/images")
            .headers(meta_headers(&[
                ("x-image-meta-id", &id),
                ("x-image-meta-name", "refused"),
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
                ("x-image-meta-store", "badswift"),
            ]))
            .header("content-type", "application/octet-stream")
            .body(data)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = resp.text().await.unwrap();
        assert!(
            body.contains("badswift") && body.contains("unavailable"),
            "{body}"
        );
        assert!(
            !body.contains(bad_key) && !body.contains(&env.key),
            "{body}"
        );
        assert!(!body.contains("AUTH_"), "{body}");
        assert_eq!(app.status_of(&id).await, "killed");
    }

    // The registry and the other stores are untouched.
    let listed = list_ids(&app, "/v1/images/detail?is_public=None", None).await;
    assert!(listed.contains(&on_file) && listed.contains(&on_swift));
    assert_eq!(download(&app, &on_file).await, b"file data");
    assert!(download(&app, &on_swift).await == pattern(1000));
    let again = app
        .create_image(
            &[
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
            ],
            Some(b"more"),
        )
        .await;
    assert_eq!(again["status"], "active");
    assert_eq!(raw.list(&container).await, vec![on_swift]);
}

#[tokio::test]
async fn unreachable_auth_endpoint_is_503_fast() {
    let env = swift_env!();
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = swift_json(&env, &unique_container());
    config["auth_url"] = Value::from(format!("http://127.0.0.1:{port}/auth/v1.0"));
    let app = TestApp::builder()
        .store("swift", store_config(config))
        .spawn()
        .await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut meta = swift_meta("unreachable");
    meta.push(("x-image-meta-id", &id));
    let started = Instant::now();
    let (code, body) = send(
        app.post("/v1/images")
            .headers(meta_headers(&meta))
            .header("content-type", "application/octet-stream")
            .body(pattern(BIG)),
    )
    .await;
    assert_eq!(code, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(body.contains("unavailable"), "{body}");
    assert!(!body.contains(&env.key), "{body}");
    assert_eq!(app.status_of(&id).await, "killed");
}

#[tokio::test]
async fn data_removed_behind_the_gateway_is_404() {
    let env = swift_env!();
    let (app, container) = gateway(&env).await;
    let raw = Raw::new(&env).await;
    let small = app
        .create_image(&swift_meta("small"), Some(&pattern(1000)))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let big = app
        .create_image(&swift_meta("big"), Some(&pattern(BIG)))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    raw.delete(&format!("{container}/{small}"), &[]).await;
    raw.delete(
        &format!("{container}/{big}"),
        &[("multipart-manifest", "delete")],
    )
    .await;
    for id in [&small, &big] {
        let (code, body) = send(app.get(&format!("/v1/images/{id}"))).await;
        assert_eq!(code, 404, "{body}");
        let (code, _) = send(
            app.get(&format!("/v1/images/{id}"))
                .header("range", "bytes=10-20"),
        )
        .await;
        assert_eq!(code, 404);
    }
}

#[tokio::test]
async fn direct_url_names_the_container_and_no_secret() {
    let env = swift_env!();
    let container = unique_container();
    let app = TestApp::builder()
        .store("swift", store_config(swift_json(&env, &container)))
        .show_image_direct_url(true)
        .spawn()
        .await;
    let raw = Raw::new(&env).await;
    let id = app
        .create_image(&swift_meta("direct"), Some(&pattern(BIG)))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let expected = format!("swift://{container}/{id}");
    let resp = app.head(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let location = header(&resp, "x-image-meta-location");
    assert_eq!(location.as_deref(), Some(expected.as_str()));
    let detail = json(
        app.get("/v1/images/detail?is_public=None")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(detail["images"][0]["location"], expected.as_str());
    let everything = format!("{:?} {detail}", resp.headers());
    for secret in [env.key.as_str(), raw.token.as_str(), env.user.as_str()] {
        assert!(
            !everything.contains(secret),
            "{secret} shows in {everything}"
        );
    }
}

#[tokio::test]
async fn sweep_removes_abandoned_segments_and_keeps_live_ones() {
    let env = swift_env!();
    let container = unique_container();
    let app = TestApp::builder()
        .store("swift", store_config(swift_json(&env, &container)))
        .sweep_min_age(0)
        .spawn()
        .await;
    // The gateway sweeps once at startup; with no minimum age that sweep would take an upload
    // still in flight for abandoned, so let it finish before uploading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let raw = Raw::new(&env).await;
    let data = pattern(BIG);
    let live = app.create_image(&swift_meta("live"), Some(&data)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let live_segments = raw.segments(&container).await;
    assert_eq!(live_segments.len(), BIG.div_ceil(SEG));

    // What an interrupted upload leaves: segments of a run no manifest names, one for a key that
    // has no object at all and one for the live image's key.
    let orphan_key = uuid::Uuid::new_v4().to_string();
    let segs = format!("{container}_segments");
    for (key, run) in [(&orphan_key, "0123abcd"), (&live, "4567cdef")] {
        for n in 1..=2 {
            raw.put(&format!("{segs}/{key}/.upload-{run}/{n:08}"), pattern(1000))
                .await;
        }
    }
    assert_eq!(
        raw.segments(&container).await.len(),
        live_segments.len() + 4
    );

    glance_gateway::maintenance::sweep(app.state()).await;

    assert_eq!(raw.segments(&container).await, live_segments);
    assert_eq!(raw.list(&container).await, vec![live.clone()]);
    assert!(download(&app, &live).await == data);
}

/// Spec §0.17: an admin may register an object of another container of the account; it is served
/// (ranges too) and never deleted. Others get 403; the gateway's own containers are refused.
#[tokio::test]
async fn admins_register_objects_of_other_containers() {
    let env = swift_env!();
    let container = unique_container();
    let app = TestApp::builder()
        .trusted_headers()
        .store("swift", store_config(swift_json(&env, &container)))
        .spawn()
        .await;
    let raw = Raw::new(&env).await;
    let other = unique_container();
    raw.put(&other, vec![]).await;
    let data = pattern(BIG);
    raw.put(&format!("{other}/images/base.raw"), data.clone())
        .await;
    let admin = Who::admin("ops");
    let uri = format!("swift://{other}/images/base.raw");
    let (code, _) = send(
        app.post("/v1/images")
            .headers(location_meta(&uri))
            .who(&Who::tenant("t1")),
    )
    .await;
    assert_eq!(code, 403);
    let image = register_and_read(&app, &admin, &uri, &data).await;
    let id = image["id"].as_str().unwrap().to_owned();
    assert_eq!(
        status(app.delete(&format!("/v1/images/{id}")).who(&admin)).await,
        200
    );
    assert_eq!(raw.list(&other).await, vec!["images/base.raw".to_owned()]);

    // The gateway's own containers, dot segments and missing objects are refused.
    for (location, want) in [
        (format!("swift://{container}/{id}"), 400),
        (format!("swift://{container}_segments/x"), 400),
        (format!("swift://{other}/images/../x"), 400),
        (format!("swift://{other}/missing"), 404),
    ] {
        let (code, body) = send(
            app.post("/v1/images")
                .headers(location_meta(&location))
                .who(&admin),
        )
        .await;
        assert_eq!(code, want, "{location}: {body}");
    }
    raw.delete(&format!("{other}/images/base.raw"), &[]).await;
    raw.delete(&other, &[]).await;
}
