//! Spec §5.5 modes C and D, §0.2, §0.18: external `http(s)` locations and copy-from, against a
//! real HTTP server on loopback serving files, redirects and cut bodies.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, StatusCode as AxStatus};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use glance_gateway::config::RemoteSources;

use crate::common::*;

const SIZE: usize = 300_001;

/// Serves `/data` (the pattern), `/redirect` (→ /data), `/cut` (announces more than it sends).
async fn file_server() -> SocketAddr {
    async fn data() -> Response {
        (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            pattern(SIZE),
        )
            .into_response()
    }
    async fn cut() -> Response {
        let head: Result<Bytes, std::io::Error> = Ok(Bytes::from(pattern(1000)));
        let tail: Result<Bytes, std::io::Error> = Err(std::io::Error::other("cut"));
        let body = Body::from_stream(futures::stream::iter(vec![head, tail]));
        let mut r = Response::new(body);
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, (SIZE as u64).into());
        r
    }
    async fn redirect(Path(to): Path<String>) -> Response {
        (AxStatus::FOUND, [(header::LOCATION, format!("/{to}"))]).into_response()
    }
    let app = Router::new()
        .route("/data", get(data))
        .route("/cut", get(cut))
        .route("/redirect/{to}", get(redirect));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn any_sources() -> (TestApp, String) {
    let app = TestApp::builder()
        .remote_sources(RemoteSources::Any)
        .spawn()
        .await;
    let addr = file_server().await;
    (app, format!("http://{addr}"))
}

fn formats() -> Vec<(&'static str, &'static str)> {
    vec![
        ("x-image-meta-disk_format", "raw"),
        ("x-image-meta-container_format", "bare"),
    ]
}

#[tokio::test]
async fn a_location_makes_an_active_image_read_from_there() {
    let (app, origin) = any_sources().await;
    let location = format!("{origin}/data");
    let mut meta = formats();
    meta.push(("x-image-meta-location", &location));
    let img = app.create_image(&meta, None).await;
    assert_eq!(img["status"], "active");
    assert_eq!(img["size"], SIZE);
    assert!(img.get("location").is_none());
    let id = img["id"].as_str().unwrap();
    let resp = app.get(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(header(&resp, "x-image-meta-location").is_none());
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        pattern(SIZE).as_slice()
    );
    // Deleting the image never touches data the gateway did not upload.
    assert_eq!(status(app.delete(&format!("/v1/images/{id}"))).await, 200);
    let still = app.client.get(&location).send().await.unwrap();
    assert_eq!(still.status().as_u16(), 200);
}

#[tokio::test]
async fn location_rules() {
    let (app, origin) = any_sources().await;
    // A missing remote object creates nothing.
    let before = list_ids(&app, "/v1/images?is_public=none", None)
        .await
        .len();
    let missing = format!("{origin}/nope");
    let mut meta = formats();
    meta.push(("x-image-meta-location", &missing));
    let (code, _) = send(app.post("/v1/images").headers(meta_headers(&meta))).await;
    assert_eq!(code, 404);
    assert_eq!(
        list_ids(&app, "/v1/images?is_public=none", None)
            .await
            .len(),
        before
    );
    // A supplied size that differs from the remote one → 409.
    let data = format!("{origin}/data");
    let mut meta = formats();
    meta.push(("x-image-meta-location", &data));
    meta.push(("x-image-meta-size", "5"));
    let (code, _) = send(app.post("/v1/images").headers(meta_headers(&meta))).await;
    assert_eq!(code, 409);
    // Formats are required to attach a location.
    let (code, body) = send(
        app.post("/v1/images")
            .header("x-image-meta-location", data.as_str()),
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("Disk format is not specified."), "{body}");
    // Empty, file: and credential-carrying URLs are refused without echoing secrets.
    for (bad, needle) in [
        ("", "External source should not be empty"),
        ("file:///etc/passwd", "External sources are not supported"),
        ("http://user:hunter2@127.0.0.1/x", "credentials"),
    ] {
        let mut meta = formats();
        meta.push(("x-image-meta-location", bad));
        let (code, body) = send(app.post("/v1/images").headers(meta_headers(&meta))).await;
        assert_eq!(code, 400, "{bad}");
        assert!(body.contains(needle), "{bad}: {body}");
        assert!(!body.contains("hunter2"));
    }
    // Data and a location at once: 400, the record stays queued.
    let mut meta = formats();
    meta.push(("x-image-meta-location", &data));
    let resp = app
        .post("/v1/images")
        .headers(meta_headers(&meta))
        .header("content-type", "application/octet-stream")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("multiple image sources"));
}

#[tokio::test]
async fn put_attaches_a_location_only_to_queued_images() {
    let (app, origin) = any_sources().await;
    let data = format!("{origin}/redirect/data");
    let queued = app.create_image(&formats(), None).await;
    let id = queued["id"].as_str().unwrap();
    let resp = app
        .put(&format!("/v1/images/{id}"))
        .header("x-image-meta-location", data.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = json(resp).await;
    assert_eq!(body["image"]["status"], "active");
    assert_eq!(body["image"]["size"], SIZE);
    let (code, body) = send(
        app.put(&format!("/v1/images/{id}"))
            .header("x-image-meta-location", data.as_str()),
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("not in queued status"), "{body}");
}

#[tokio::test]
async fn copy_from_fetches_into_our_own_store() {
    let (app, origin) = any_sources().await;
    let url = format!("{origin}/redirect/data");
    let resp = app
        .post("/v1/images")
        .header("x-glance-api-copy-from", url.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let img = json(resp).await["image"].clone();
    assert_eq!(img["status"], "queued");
    assert_eq!(img["size"], SIZE);
    let id = img["id"].as_str().unwrap();
    app.wait_for_status(id, "active").await;
    assert_eq!(app.record(id).await.checksum, Some(md5_hex(&pattern(SIZE))));
    assert!(app.object_path(id).exists());
    let back = app.get(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(
        back.bytes().await.unwrap().as_ref(),
        pattern(SIZE).as_slice()
    );
}

#[tokio::test]
async fn a_copy_source_that_breaks_kills_the_image() {
    let (app, origin) = any_sources().await;
    let url = format!("{origin}/cut");
    let resp = app
        .post("/v1/images")
        .header("x-glance-api-copy-from", url.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let id = json(resp).await["image"]["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, "killed").await;
    app.wait_for_no_tmp_files().await;
    assert!(!app.object_path(&id).exists());
}

#[tokio::test]
async fn the_default_policy_refuses_internal_addresses() {
    let app = TestApp::spawn().await;
    let addr = file_server().await;
    for url in [
        format!("http://{addr}/data"),
        "http://localhost/x".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::1]/x".to_owned(),
        "http://10.1.2.3/x".to_owned(),
    ] {
        let mut meta = formats();
        meta.push(("x-image-meta-location", &url));
        let (code, _) = send(app.post("/v1/images").headers(meta_headers(&meta))).await;
        assert_eq!(code, 400, "{url}");
        let (code, _) = send(
            app.post("/v1/images")
                .header("x-glance-api-copy-from", url.as_str()),
        )
        .await;
        assert_eq!(code, 400, "{url}");
    }
    let off = TestApp::builder()
        .remote_sources(RemoteSources::Off)
        .spawn()
        .await;
    let mut meta = formats();
    meta.push(("x-image-meta-location", "https://example.com/image.raw"));
    let (code, _) = send(off.post("/v1/images").headers(meta_headers(&meta))).await;
    assert_eq!(code, 400);
}

/// The gateway binary with `HTTP_PROXY` / `HTTPS_PROXY` pointing at nothing still fetches remote
/// sources directly: the proxy variables of its environment are ignored.
#[tokio::test]
async fn proxy_variables_of_the_environment_are_ignored() {
    let origin = file_server().await;
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, "remote_sources = \"any\"\n").unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_glance-gateway"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path())
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("ALL_PROXY", "http://127.0.0.1:9")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut ready = false;
    for _ in 0..200 {
        if client.get(format!("{base}/versions")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "the gateway did not start");
    let resp = client
        .post(format!("{base}/v1/images"))
        .header("x-image-meta-disk_format", "raw")
        .header("x-image-meta-container_format", "bare")
        .header("x-image-meta-location", format!("http://{origin}/data"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    // A source that cannot be reached is logged by host, never with its URL's path or query.
    let closed = REFUSED_PORT;
    let (code, _) = send(
        client
            .post(format!("{base}/v1/images"))
            .header("x-image-meta-disk_format", "raw")
            .header("x-image-meta-container_format", "bare")
            .header(
                "x-image-meta-location",
                format!("http://127.0.0.1:{closed}/img?token=hunter2"),
            ),
    )
    .await;
    let _ = child.start_kill();
    let output = child.wait_with_output().await.unwrap();
    assert_eq!(status, 201, "{body}");
    let image: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(image["image"]["size"], SIZE);
    assert_eq!(code, 400);
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("remote source unreachable"), "{log}");
    assert!(!log.contains("hunter2"), "{log}");
}
