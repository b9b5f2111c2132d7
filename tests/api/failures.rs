//! Spec §9.2 failure table (the rows the file store can produce), crash recovery (issue scope 6)
//! and durability across restarts.

use std::sync::Arc;
use std::time::Duration;

use glance_gateway::model::{ImageId, ImageRecord, ImageStatus, StoredLocation, Timestamp};
use stores::StoreName;
use tokio::io::AsyncWriteExt;

use crate::common::*;

fn post_head(id: &str, framing: &str) -> String {
    format!(
        "POST /v1/images HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nx-image-meta-id: {id}\r\n\
         x-image-meta-disk_format: raw\r\nx-image-meta-container_format: bare\r\n{framing}\r\n"
    )
}

#[tokio::test]
async fn client_disconnect_mid_body_kills_and_leaves_no_temp_file() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut stream = app.connect().await;
    stream
        .write_all(post_head(&id, "Content-Length: 1000000\r\n").as_bytes())
        .await
        .unwrap();
    stream.write_all(&vec![b'x'; 300_000]).await.unwrap();
    app.wait_for_status(&id, "saving").await;
    drop(stream);
    app.wait_for_status(&id, "killed").await;
    app.wait_for_no_tmp_files().await;
    assert!(!app.object_path(&id).exists());
    assert!(app.record(&id).await.location.is_none());
    assert_eq!(status(app.get(&format!("/v1/images/{id}"))).await, 404);
}

#[tokio::test]
async fn short_body_with_half_close_is_400_and_killed() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut stream = app.connect().await;
    stream
        .write_all(post_head(&id, "Content-Length: 100\r\n").as_bytes())
        .await
        .unwrap();
    stream
        .write_all(b"only forty bytes of the hundred promised")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let resp = read_response(&mut stream).await;
    if resp.status != 0 {
        assert_eq!(resp.status, 400, "{}", resp.text());
    }
    app.wait_for_status(&id, "killed").await;
    app.wait_for_no_tmp_files().await;
    assert!(!app.object_path(&id).exists());
}

#[tokio::test]
async fn malformed_chunking_kills_the_image() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut req = post_head(&id, "Transfer-Encoding: chunked\r\n").into_bytes();
    req.extend_from_slice(b"5\r\nhello\r\nZZ-not-hex\r\nmore\r\n0\r\n\r\n");
    let resp = app.raw(&req).await;
    if resp.status != 0 {
        assert_eq!(resp.status, 400, "{}", resp.text());
    }
    app.wait_for_status(&id, "killed").await;
    app.wait_for_no_tmp_files().await;
    assert!(!app.object_path(&id).exists());
}

#[tokio::test]
async fn chunked_upload_over_raw_tcp_succeeds() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut req = post_head(&id, "Transfer-Encoding: chunked\r\n").into_bytes();
    req.extend_from_slice(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    let resp = app.raw(&req).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(resp.header("etag"), Some(md5_hex(b"hello world").as_str()));
    let got = app.download(&id).await;
    assert_eq!(got.as_ref(), b"hello world");
}

#[tokio::test]
async fn expect_100_continue_is_honoured() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut stream = app.connect().await;
    stream
        .write_all(post_head(&id, "Content-Length: 5\r\nExpect: 100-continue\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await
    .expect("100 Continue in time")
    .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
        "{:?}",
        &buf[..n]
    );
    stream.write_all(b"12345").await.unwrap();
    let resp = read_response(&mut stream).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
}

#[tokio::test]
async fn delete_while_uploading_is_412_and_removes_data() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut stream = app.connect().await;
    stream
        .write_all(post_head(&id, "Transfer-Encoding: chunked\r\n").as_bytes())
        .await
        .unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
    framed.extend_from_slice(&chunk);
    framed.extend_from_slice(b"\r\n");
    stream.write_all(&framed).await.unwrap();
    app.wait_for_status(&id, "saving").await;
    // Let the first chunk reach the temp file.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = app
        .delete(&format!("/v1/images/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    stream.write_all(&framed).await.unwrap();
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let resp = read_response(&mut stream).await;
    assert_eq!(resp.status, 412, "{}", resp.text());
    assert_eq!(app.status_of(&id).await, "deleted");
    assert!(!app.object_path(&id).exists());
    app.wait_for_no_tmp_files().await;
}

#[tokio::test]
async fn crash_recovery_kills_saving_images_and_removes_temp_files() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let saving_id = ImageId::random();
    let active_id = ImageId::random();
    {
        let registry = open_registry(dir.path()).await;
        let mut saving = ImageRecord::new(saving_id.clone(), Timestamp::now());
        saving.status = ImageStatus::Saving;
        saving.disk_format = Some("raw".into());
        saving.container_format = Some("bare".into());
        let file_store = StoreName::parse("file").unwrap();
        saving.location = Some(StoredLocation::for_image(&file_store, &saving_id));
        registry.insert_new(saving).await.unwrap();
        let mut active = ImageRecord::new(active_id.clone(), Timestamp::now());
        active.status = ImageStatus::Active;
        active.size = 3;
        active.is_public = true;
        active.location = Some(StoredLocation::for_image(&file_store, &active_id));
        registry.insert_new(active).await.unwrap();
    }
    let images = dir.path().join("images");
    std::fs::create_dir_all(images.join(".tmp")).unwrap();
    let tmp_file = images.join(".tmp").join(format!("{saving_id}.0123abcd"));
    std::fs::write(&tmp_file, b"partial").unwrap();
    std::fs::write(images.join(active_id.as_str()), b"abc").unwrap();

    let app = TestApp::builder().spawn_in(dir).await;
    assert_eq!(app.status_of(saving_id.as_str()).await, "killed");
    assert!(!tmp_file.exists(), "temp file left behind");
    assert!(app.tmp_files().is_empty());
    // Other images are untouched.
    assert_eq!(app.status_of(active_id.as_str()).await, "active");
    let got = app.download(active_id.as_str()).await;
    assert_eq!(got.as_ref(), b"abc");
}

#[tokio::test]
async fn records_and_data_survive_a_restart() {
    let app = TestApp::builder().trusted_headers().spawn().await;
    let owner = Who::tenant("t1");
    let data = pattern(100_000);
    let img = app
        .create_image_as(
            Some(&owner),
            &[
                ("x-image-meta-name", "durable"),
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
                ("x-image-meta-property-k", "v"),
            ],
            Some(&data),
        )
        .await;
    let id = img["id"].as_str().unwrap().to_owned();
    assert_eq!(
        status(app.put(&format!("/v1/images/{id}/members/t2")).who(&owner)).await,
        204
    );
    let gone = app.create_image_as(Some(&owner), &[], None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        status(app.delete(&format!("/v1/images/{gone}")).who(&owner)).await,
        200
    );

    let app = app.restart().await;
    let resp = app
        .get(&format!("/v1/images/{id}"))
        .who(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        header(&resp, "x-image-meta-name").as_deref(),
        Some("durable")
    );
    assert_eq!(
        header(&resp, "x-image-meta-property-k").as_deref(),
        Some("v")
    );
    assert_eq!(header(&resp, "etag"), Some(md5_hex(&data)));
    assert!(resp.bytes().await.unwrap().as_ref() == data.as_slice());
    let members = json(
        app.get(&format!("/v1/images/{id}/members"))
            .who(&owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(members["members"][0]["member_id"], "t2");
    assert_eq!(
        list_ids(&app, "/v1/images", Some(&Who::tenant("t2"))).await,
        vec![id.clone()]
    );
    // Deleted ids stay taken after a restart.
    assert_eq!(
        status(
            app.post("/v1/images")
                .who(&owner)
                .header("x-image-meta-id", &gone)
        )
        .await,
        409
    );
}

#[tokio::test]
async fn a_second_upload_to_an_image_being_saved_is_409() {
    let app = TestApp::spawn().await;
    let id = app
        .create_image(
            &[
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
            ],
            None,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut stream = app.connect().await;
    let head = format!(
        "PUT /v1/images/{id} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"5\r\nfirst\r\n").await.unwrap();
    app.wait_for_status(&id, "saving").await;
    let (code, body) = send(
        app.put(&format!("/v1/images/{id}"))
            .header("content-type", "application/octet-stream")
            .body("second"),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let resp = read_response(&mut stream).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = app.download(&id).await;
    assert_eq!(got.as_ref(), b"first");
}

#[tokio::test]
async fn killed_images_accept_no_data() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::new_v4().to_string();
    let (code, _) = send(
        app.post("/v1/images")
            .header("x-image-meta-id", &id)
            .header("x-image-meta-disk_format", "raw")
            .header("x-image-meta-container_format", "bare")
            .header("x-image-meta-size", "3")
            .header("content-type", "application/octet-stream")
            .body("four"),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(app.status_of(&id).await, "killed");
    let (code, _) = send(
        app.put(&format!("/v1/images/{id}"))
            .header("content-type", "application/octet-stream")
            .body("abc"),
    )
    .await;
    assert_eq!(code, 409);
    // Metadata may still change, and the image can be deleted.
    assert_eq!(
        status(
            app.put(&format!("/v1/images/{id}"))
                .header("x-image-meta-name", "dead")
        )
        .await,
        200
    );
    let resp = app.head(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(
        header(&resp, "x-image-meta-status").as_deref(),
        Some("killed")
    );
    assert_eq!(status(app.delete(&format!("/v1/images/{id}"))).await, 200);
}

#[tokio::test]
async fn non_utf8_header_values_are_400_not_500() {
    let app = TestApp::spawn().await;
    let mut req = b"POST /v1/images HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\nx-image-meta-name: ".to_vec();
    req.extend_from_slice(b"\xff\xfe\r\n\r\n");
    let resp = app.raw(&req).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(app.state().registry.all().await.unwrap().is_empty());
}

/// More bytes than `x-image-meta-size` declares: 400 as soon as the declared size is passed (the
/// body here never ends), the image killed, nothing stored. `store` picks the store.
pub async fn more_than_declared_is_400_at_the_declared_size(app: &TestApp, store: Option<&str>) {
    let id = uuid::Uuid::new_v4().to_string();
    let store_header = store
        .map(|s| format!("x-image-meta-store: {s}\r\n"))
        .unwrap_or_default();
    let head = post_head(
        &id,
        &format!("{store_header}x-image-meta-size: 1000\r\nTransfer-Encoding: chunked\r\n"),
    );
    let mut stream = app.connect().await;
    stream.write_all(head.as_bytes()).await.unwrap();
    let data = pattern(300_000);
    stream
        .write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await
        .unwrap();
    stream.write_all(&data).await.unwrap();
    stream.write_all(b"\r\n").await.unwrap();
    // No last chunk: the body stays open, so only a gateway that stops at the declared size
    // answers at all.
    let resp = read_response(&mut stream).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(resp.text().contains("1000"), "{}", resp.text());
    app.wait_for_status(&id, "killed").await;
}

#[tokio::test]
async fn more_bytes_than_declared_is_400_at_the_declared_size() {
    let app = TestApp::spawn().await;
    more_than_declared_is_400_at_the_declared_size(&app, None).await;
    app.wait_for_no_tmp_files().await;
    let images: Vec<_> = std::fs::read_dir(app.data_dir().join("images"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().unwrap().is_file())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(images.is_empty(), "{images:?}");
}

/// Spec §0.23: `Content-Length` together with `Transfer-Encoding` is 400 and the connection is
/// closed, in either order, also after other requests on the same connection (the gateway keeps
/// track of their bodies to find the next head).
#[tokio::test]
async fn content_length_with_transfer_encoding_is_400() {
    let app = TestApp::spawn().await;
    for framing in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ] {
        let id = uuid::Uuid::new_v4().to_string();
        let mut req = post_head(&id, framing).into_bytes();
        req.extend_from_slice(b"0\r\n\r\n");
        let resp = app.raw(&req).await;
        assert_eq!(resp.status, 400, "{framing:?}: {}", resp.text());
        assert_eq!(status(app.head(&format!("/v1/images/{id}"))).await, 404);
    }

    // A chunked upload, then a request with both on the same connection.
    let first = uuid::Uuid::new_v4().to_string();
    let second = uuid::Uuid::new_v4().to_string();
    let keep_alive = |id: &str, framing: &str| {
        post_head(id, framing).replace("Connection: close\r\n", "Connection: keep-alive\r\n")
    };
    let mut pipelined = keep_alive(&first, "Transfer-Encoding: chunked\r\n").into_bytes();
    pipelined.extend_from_slice(b"4;ext=1\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n");
    pipelined.extend_from_slice(
        keep_alive(
            &second,
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        )
        .as_bytes(),
    );
    pipelined.extend_from_slice(b"0\r\n\r\n");
    let mut stream = app.connect().await;
    stream.write_all(&pipelined).await.unwrap();
    let mut answers = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answers.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answers);
    // Bodies end without a line break: find the status lines by their start.
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i..i + 12])
        .collect();
    assert_eq!(statuses.len(), 2, "{text}");
    assert!(statuses[0].starts_with("HTTP/1.1 201"), "{text}");
    assert!(statuses[1].starts_with("HTTP/1.1 400"), "{text}");
    assert_eq!(app.status_of(&first).await, "active");
    assert_eq!(app.record(&first).await.size, 7);
    assert_eq!(status(app.head(&format!("/v1/images/{second}"))).await, 404);
}
