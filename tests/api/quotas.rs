//! Spec §10 and §9.2: property, storage and member quotas.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn property_quota_on_post_and_put() {
    let app = TestApp::builder().image_property_quota(2).spawn().await;
    let (code, body) = send(
        app.post("/v1/images")
            .header("x-image-meta-property-a", "1")
            .header("x-image-meta-property-b", "2")
            .header("x-image-meta-property-c", "3"),
    )
    .await;
    assert_eq!(code, 413);
    assert!(body.contains("Attempted: 3, Maximum: 2"), "{body}");
    assert!(app.state().registry.all().await.unwrap().is_empty());
    let img = app
        .create_image(
            &[
                ("x-image-meta-property-a", "1"),
                ("x-image-meta-property-b", "2"),
            ],
            None,
        )
        .await;
    let path = format!("/v1/images/{}", img["id"].as_str().unwrap());
    // Purging PUT counts the request only.
    assert_eq!(
        status(
            app.put(&path)
                .header("x-image-meta-property-c", "3")
                .header("x-image-meta-property-d", "4")
        )
        .await,
        200
    );
    // Non-purging PUT counts the union.
    let (code, body) = send(
        app.put(&path)
            .header("x-glance-registry-purge-props", "false")
            .header("x-image-meta-property-e", "5"),
    )
    .await;
    assert_eq!(code, 413);
    assert!(body.contains("Attempted: 3, Maximum: 2"), "{body}");
    assert_eq!(
        app.record(img["id"].as_str().unwrap())
            .await
            .properties
            .len(),
        2
    );
    // Overwriting an existing one stays within the quota.
    assert_eq!(
        status(
            app.put(&path)
                .header("x-glance-registry-purge-props", "false")
                .header("x-image-meta-property-c", "x")
        )
        .await,
        200
    );
}

#[tokio::test]
async fn property_quota_of_128_is_reachable_by_post() {
    let app = TestApp::spawn().await;
    let props: Vec<(String, String)> = (0..128)
        .map(|i| (format!("x-image-meta-property-p{i}"), "v".repeat(100)))
        .collect();
    let meta: Vec<(&str, &str)> = props
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let img = app.create_image(&meta, None).await;
    assert_eq!(img["properties"].as_object().unwrap().len(), 128);
    let mut more = meta.clone();
    more.push(("x-image-meta-property-extra", "1"));
    let (code, body) = send(app.post("/v1/images").headers(meta_headers(&more))).await;
    assert_eq!(code, 413);
    assert!(body.contains("Attempted: 129, Maximum: 128"), "{body}");
}

#[tokio::test]
async fn storage_quota_declared_and_streamed() {
    let app = TestApp::builder()
        .trusted_headers()
        .user_storage_quota("1KB")
        .spawn()
        .await;
    let who = Who::tenant("t1");
    let formats = [
        ("x-image-meta-disk_format", "raw"),
        ("x-image-meta-container_format", "bare"),
    ];
    app.create_image_as(Some(&who), &formats, Some(&[0u8; 600]))
        .await;
    // Declared: 500 > 424 remaining.
    let id = uuid::Uuid::new_v4().to_string();
    let (code, body) = send(
        app.post("/v1/images")
            .who(&who)
            .headers(meta_headers(&formats))
            .header("x-image-meta-id", &id)
            .header("content-type", "application/octet-stream")
            .body(vec![0u8; 500]),
    )
    .await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(app.status_of(&id).await, "killed");
    assert!(!app.object_path(&id).exists());
    // Streamed (chunked, no declared size).
    let id = uuid::Uuid::new_v4().to_string();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..5).map(|_| Ok(vec![1u8; 100])).collect();
    let (code, body) = send(
        app.post("/v1/images")
            .who(&who)
            .headers(meta_headers(&formats))
            .header("x-image-meta-id", &id)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks))),
    )
    .await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(app.status_of(&id).await, "killed");
    assert!(!app.object_path(&id).exists());
    app.wait_for_no_tmp_files().await;
    // Another owner has its own quota; the remaining bytes still fit.
    app.create_image_as(Some(&Who::tenant("t2")), &formats, Some(&[0u8; 1000]))
        .await;
    app.create_image_as(Some(&who), &formats, Some(&[0u8; 424]))
        .await;
    // Deleting frees space.
    let all = app.state().registry.all().await.unwrap();
    let first = all
        .iter()
        .find(|s| s.record.owner.as_deref() == Some("t1") && s.record.size == 600)
        .unwrap()
        .record
        .id
        .to_string();
    assert_eq!(
        status(app.delete(&format!("/v1/images/{first}")).who(&who)).await,
        200
    );
    app.create_image_as(Some(&who), &formats, Some(&[0u8; 600]))
        .await;
}

#[tokio::test]
async fn member_quota_with_the_re_add_quirk() {
    let app = TestApp::builder().image_member_quota(2).spawn().await;
    let id = app.create_image(&[], None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let members = format!("/v1/images/{id}/members");
    assert_eq!(status(app.put(&format!("{members}/m1"))).await, 204);
    assert_eq!(status(app.put(&format!("{members}/m2"))).await, 204);
    let (code, body) = send(app.put(&format!("{members}/m3"))).await;
    assert_eq!(code, 413, "{body}");
    // Re-adding an existing member at the limit is refused too.
    assert_eq!(status(app.put(&format!("{members}/m1"))).await, 413);
    // Replacing the list: more entries than the quota → 413.
    let too_many =
        json!({"memberships": [{"member_id": "a"}, {"member_id": "b"}, {"member_id": "c"}]});
    assert_eq!(status(app.put(&members).json(&too_many)).await, 413);
    let ok = json!({"memberships": [{"member_id": "a"}, {"member_id": "b"}]});
    assert_eq!(status(app.put(&members).json(&ok)).await, 204);
    let list = json(app.get(&members).send().await.unwrap()).await;
    assert_eq!(list["members"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn negative_quotas_are_unlimited() {
    let app = TestApp::builder()
        .image_property_quota(-1)
        .image_member_quota(-1)
        .spawn()
        .await;
    let props: Vec<(String, String)> = (0..150)
        .map(|i| (format!("x-image-meta-property-p{i}"), "v".into()))
        .collect();
    let meta: Vec<(&str, &str)> = props
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let img = app.create_image(&meta, None).await;
    assert_eq!(img["properties"].as_object().unwrap().len(), 150);
    let members: Vec<_> = (0..200)
        .map(|i| json!({"member_id": format!("m{i}")}))
        .collect();
    let path = format!("/v1/images/{}/members", img["id"].as_str().unwrap());
    assert_eq!(
        status(app.put(&path).json(&json!({"memberships": members}))).await,
        204
    );
    assert_eq!(status(app.put(&format!("{path}/one-more"))).await, 204);
}

#[tokio::test]
async fn parallel_chunked_uploads_cannot_together_exceed_the_quota() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::builder()
        .trusted_headers()
        .user_storage_quota("1000")
        .spawn()
        .await;
    let mut streams = vec![];
    for _ in 0..3 {
        let mut stream = app.connect().await;
        let head = format!(
            "POST /v1/images HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             X-Identity-Status: Confirmed\r\nX-Tenant-Id: t1\r\nX-Roles: member\r\n\
             x-image-meta-disk_format: raw\r\nx-image-meta-container_format: bare\r\n\
             Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
             258\r\n",
            app.addr
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[1u8; 600]).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
        streams.push(stream);
    }
    // All three are under way before any ends.
    for _ in 0..200 {
        let all = app.state().registry.all().await.unwrap();
        if all.len() == 3 && all.iter().all(|s| s.record.status.as_str() != "queued") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let mut codes = vec![];
    for mut stream in streams {
        stream.write_all(b"0\r\n\r\n").await.unwrap();
        codes.push(read_response(&mut stream).await.status);
    }
    codes.sort();
    assert_eq!(codes, vec![201, 413, 413]);
    let all = app.state().registry.all().await.unwrap();
    let active = all
        .iter()
        .filter(|s| s.record.status.as_str() == "active")
        .count();
    assert_eq!(active, 1);
    app.wait_for_no_tmp_files().await;
}

#[tokio::test]
async fn remote_sources_larger_than_the_size_cap_are_refused() {
    use axum::routing::get;
    let origin = {
        let app = axum::Router::new().route("/data", get(|| async { pattern(1000) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    };
    let app = TestApp::builder()
        .remote_sources(glance_gateway::config::RemoteSources::Any)
        .image_size_cap(500)
        .spawn()
        .await;
    let url = format!("http://{origin}/data");
    for header in ["x-image-meta-location", "x-glance-api-copy-from"] {
        let (code, body) = send(
            app.post("/v1/images")
                .header("x-image-meta-disk_format", "raw")
                .header("x-image-meta-container_format", "bare")
                .header(header, url.as_str()),
        )
        .await;
        assert_eq!(code, 400, "{header}: {body}");
        assert!(body.contains("larger than 500 bytes"), "{body}");
    }
    assert!(app.state().registry.all().await.unwrap().is_empty());
}
