//! Work bounded by what a caller may do: idle request bodies are cut, open connections are
//! capped, copy-from imports run a few at a time and within a deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use glance_gateway::config::RemoteSources;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

#[tokio::test]
async fn a_body_that_goes_quiet_is_cut_and_its_upload_cleaned() {
    let app = TestApp::builder().client_idle_timeout(1).spawn().await;
    let mut stream = app.connect().await;
    let head = format!(
        "POST /v1/images HTTP/1.1\r\nHost: {}\r\nx-image-meta-disk_format: raw\r\n\
         x-image-meta-container_format: bare\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: 100000\r\n\r\n",
        app.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[7u8; 1000]).await.unwrap();
    let started = Instant::now();
    // The gateway answers and closes the connection (read_response reads until it does).
    let r = read_response(&mut stream).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 408, "{}", r.text());
    let images = app.state().registry.all().await.unwrap();
    assert_eq!(images.len(), 1);
    let id = images[0].record.id.to_string();
    app.wait_for_status(&id, "killed").await;
    app.wait_for_no_tmp_files().await;
    assert!(!app.object_path(&id).exists());
    // A body that keeps sending, however slowly, is not cut.
    let mut stream = app.connect().await;
    let head = format!(
        "PUT /v1/images/{id} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        app.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);
    let fresh = app
        .create_image(
            &[
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
            ],
            None,
        )
        .await;
    let fresh_id = fresh["id"].as_str().unwrap();
    let mut stream = app.connect().await;
    let head = format!(
        "PUT /v1/images/{fresh_id} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 4\r\n\r\n",
        app.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for b in b"slow" {
        tokio::time::sleep(Duration::from_millis(600)).await;
        stream.write_all(&[*b]).await.unwrap();
    }
    let r = read_response(&mut stream).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(app.status_of(fresh_id).await, "active");
}

/// Whether the stream receives anything within `wait`.
async fn answers_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut byte)).await,
        Ok(Ok(n)) if n > 0
    )
}

#[tokio::test]
async fn connections_past_the_cap_wait_in_the_backlog() {
    let app = TestApp::builder().max_connections(2).spawn().await;
    let first = app.connect().await;
    let second = app.connect().await;
    // Give the gateway time to accept both.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = app.connect().await;
    let request = format!(
        "GET /versions HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        app.addr
    );
    third.write_all(request.as_bytes()).await.unwrap();
    assert!(!answers_within(&mut third, Duration::from_millis(800)).await);
    drop(first);
    drop(second);
    assert!(answers_within(&mut third, Duration::from_secs(5)).await);
}

/// `/data` serves 1000 bytes at once; `/stall` sends 10 bytes of a declared 1000, then nothing.
async fn origin() -> SocketAddr {
    async fn data() -> Response {
        (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            pattern(1000),
        )
            .into_response()
    }
    async fn stall() -> Response {
        let head = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(pattern(10)))]);
        let body = Body::from_stream(futures::StreamExt::chain(head, futures::stream::pending()));
        let mut r = Response::new(body);
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, 1000u64.into());
        r
    }
    let app = Router::new()
        .route("/data", get(data))
        .route("/stall", get(stall));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn copy_from(app: &TestApp, url: &str) -> String {
    let resp = app
        .post("/v1/images")
        .header("x-image-meta-disk_format", "raw")
        .header("x-image-meta-container_format", "bare")
        .header("x-glance-api-copy-from", url)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    json(resp).await["image"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn imports_run_a_few_at_a_time_and_within_their_deadline() {
    let app = TestApp::builder()
        .remote_sources(RemoteSources::Any)
        .imports(1, 2)
        .spawn()
        .await;
    let origin = origin().await;
    let stalled = copy_from(&app, &format!("http://{origin}/stall")).await;
    let waiting = copy_from(&app, &format!("http://{origin}/data")).await;
    // The second import waits for the first's permit.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(app.status_of(&waiting).await, "queued");
    // The first is killed at its deadline, its partial data removed; then the second runs.
    app.wait_for_status(&stalled, "killed").await;
    app.wait_for_status(&waiting, "active").await;
    app.wait_for_no_tmp_files().await;
    assert!(!app.object_path(&stalled).exists());
    let got = app.download(&waiting).await;
    assert!(got.as_ref() == pattern(1000).as_slice());
}
