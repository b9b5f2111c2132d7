//! Spec §5.5, §4.3–§4.5, §9.3: POST /v1/images in every mode, and its validation order.

use crate::common::*;

fn raw_bare() -> Vec<(&'static str, &'static str)> {
    vec![
        ("x-image-meta-disk_format", "raw"),
        ("x-image-meta-container_format", "bare"),
    ]
}

#[tokio::test]
async fn reserve_creates_a_queued_record_with_an_absolute_v1_location() {
    let app = TestApp::spawn().await;
    let resp = app
        .post("/images")
        .header("x-image-meta-name", "reserved")
        .header("x-image-meta-min_ram", "256")
        .header("x-image-meta-property-Kernel-Id", "k1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("application/json")
    );
    assert!(header(&resp, "etag").is_none());
    let location = header(&resp, "location").unwrap();
    let body = json(resp).await;
    let img = &body["image"];
    let id = img["id"].as_str().unwrap();
    assert_eq!(location, format!("{}/v1/images/{id}", app.base));
    assert_eq!(img["status"], "queued");
    assert_eq!(img["size"], 0);
    assert_eq!(img["min_ram"], 256);
    assert_eq!(img["is_public"], false);
    assert_eq!(img["protected"], false);
    assert_eq!(img["properties"]["kernel_id"], "k1");
    assert_eq!(img["checksum"], serde_json::Value::Null);
    assert_eq!(img.as_object().unwrap().len(), 20);
    // Random v4, lower-case, hyphenated.
    assert_eq!(id.len(), 36);
    assert_eq!(id, id.to_lowercase());
    assert_eq!(&id[14..15], "4");
    assert_eq!(app.status_of(id).await, "queued");
    // Whatever path the POST used, the Location is the /v1 form.
    for path in ["/v1.1/images", "/images/"] {
        let resp = app.post(path).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        let location = header(&resp, "location").unwrap();
        let id = json(resp).await["image"]["id"].as_str().unwrap().to_owned();
        assert_eq!(location, format!("{}/v1/images/{id}", app.base));
    }
}

#[tokio::test]
async fn size_zero_makes_an_active_image_without_data() {
    let app = TestApp::spawn().await;
    let img = app.create_image(&[("x-image-meta-size", "0")], None).await;
    assert_eq!(img["status"], "active");
    assert_eq!(img["size"], 0);
}

#[tokio::test]
async fn upload_activates_with_real_size_and_checksum() {
    let app = TestApp::spawn().await;
    let data = pattern(300_000);
    let resp = app
        .post("/v1/images")
        .headers(meta_headers(&raw_bare()))
        .header("x-image-meta-name", "up")
        .header("x-image-meta-size", "300000")
        .header("x-image-meta-checksum", md5_hex(&data))
        .header("content-type", "application/octet-stream; charset=binary")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(header(&resp, "etag"), Some(md5_hex(&data)));
    let img = json(resp).await["image"].clone();
    assert_eq!(img["status"], "active");
    assert_eq!(img["size"], 300_000);
    assert_eq!(img["checksum"], md5_hex(&data).as_str());
    let id = img["id"].as_str().unwrap();
    let got = app.download(id).await;
    assert!(got.as_ref() == data.as_slice());
    assert!(app.tmp_files().is_empty());
}

#[tokio::test]
async fn empty_chunked_upload_is_an_active_zero_byte_image() {
    let app = TestApp::spawn().await;
    let empty = futures::stream::iter(Vec::<Result<Vec<u8>, std::io::Error>>::new());
    let resp = app
        .post("/v1/images")
        .headers(meta_headers(&raw_bare()))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(empty))
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!(code, 201, "{body}");
    let img: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(img["image"]["status"], "active");
    assert_eq!(img["image"]["size"], 0);
    assert_eq!(img["image"]["checksum"], "d41d8cd98f00b204e9800998ecf8427e");
}

#[tokio::test]
async fn supplied_ids_are_canonical_and_never_reused() {
    let app = TestApp::spawn().await;
    let id = "3C1B0D2E-AAAA-4BBB-8CCC-0123456789AB";
    let img = app.create_image(&[("x-image-meta-id", id)], None).await;
    assert_eq!(img["id"], id.to_lowercase().as_str());
    // Same id, either spelling → 409.
    for again in [id.to_owned(), id.to_lowercase()] {
        let (code, body) = send(app.post("/v1/images").header("x-image-meta-id", again)).await;
        assert_eq!(code, 409, "{body}");
        assert!(body.contains("already exists"), "{body}");
    }
    // Other spellings of a UUID are refused.
    for bad in [
        "3c1b0d2eaaaa4bbb8ccc0123456789ab",
        "{3c1b0d2e-aaaa-4bbb-8ccc-0123456789ab}",
        "urn:uuid:3c1b0d2e-aaaa-4bbb-8ccc-0123456789ab",
        "not-a-uuid",
        "",
        "3c1b0d2e-aaaa-4bbb-8ccc-0123456789ag",
    ] {
        let (code, body) = send(app.post("/v1/images").header("x-image-meta-id", bad)).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body.contains("Invalid image id format"), "{body}");
    }
    // Deleted ids stay taken.
    assert_eq!(
        status(app.delete(&format!("/v1/images/{}", id.to_lowercase()))).await,
        200
    );
    assert_eq!(
        status(app.post("/v1/images").header("x-image-meta-id", id)).await,
        409
    );
    assert_eq!(app.state().registry.all().await.unwrap().len(), 1);
}

#[tokio::test]
async fn formats_are_validated_and_amazon_formats_pair() {
    let app = TestApp::spawn().await;
    for (h, v, needle) in [
        (
            "x-image-meta-disk_format",
            "bogus",
            "Invalid disk format 'bogus' for image.",
        ),
        (
            "x-image-meta-disk_format",
            "",
            "Invalid disk format '' for image.",
        ),
        (
            "x-image-meta-container_format",
            "zip",
            "Invalid container format 'zip' for image.",
        ),
        (
            "x-image-meta-disk-format",
            "RAW",
            "Invalid disk format 'RAW' for image.",
        ),
    ] {
        let (code, body) = send(app.post("/v1/images").header(h, v)).await;
        assert_eq!(code, 400, "{h}: {v}");
        assert!(body.contains(needle), "{body}");
    }
    for (disk, container) in [
        ("vhdx", "ova"),
        ("ploop", "docker"),
        ("qcow2", "bare"),
        ("iso", "ovf"),
    ] {
        let img = app
            .create_image(
                &[
                    ("x-image-meta-disk_format", disk),
                    ("x-image-meta-container_format", container),
                ],
                None,
            )
            .await;
        assert_eq!(img["disk_format"], disk);
        assert_eq!(img["container_format"], container);
    }
    for f in ["aki", "ari", "ami"] {
        let img = app
            .create_image(&[("x-image-meta-disk_format", f)], None)
            .await;
        assert_eq!(img["container_format"], f);
        let img = app
            .create_image(&[("x-image-meta-container-format", f)], None)
            .await;
        assert_eq!(img["disk_format"], f);
    }
    let (code, body) = send(
        app.post("/v1/images")
            .header("x-image-meta-disk_format", "aki")
            .header("x-image-meta-container_format", "ari"),
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        body.contains("Invalid mix of disk and container formats"),
        "{body}"
    );
    let (code, _) = send(
        app.post("/v1/images")
            .header("x-image-meta-disk_format", "raw")
            .header("x-image-meta-container_format", "ami"),
    )
    .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn data_without_formats_is_400_and_the_record_stays_queued() {
    let app = TestApp::spawn().await;
    for (meta, needle) in [
        (vec![], "Disk format is not specified."),
        (
            vec![("x-image-meta-disk_format", "raw")],
            "Container format is not specified.",
        ),
    ] {
        let id = uuid::Uuid::new_v4().to_string();
        let (code, body) = send(
            app.post("/v1/images")
                .headers(meta_headers(&meta))
                .header("x-image-meta-id", &id)
                .header("content-type", "application/octet-stream")
                .body("data"),
        )
        .await;
        assert_eq!(code, 400, "{body}");
        assert!(body.contains(needle), "{body}");
        assert_eq!(app.status_of(&id).await, "queued");
        assert!(!app.object_path(&id).exists());
    }
}

#[tokio::test]
async fn wrong_or_missing_content_type_kills_the_image() {
    let app = TestApp::spawn().await;
    for ct in [Some("text/plain"), Some("application/json"), None] {
        let id = uuid::Uuid::new_v4().to_string();
        let mut req = app
            .post("/v1/images")
            .headers(meta_headers(&raw_bare()))
            .header("x-image-meta-id", &id)
            .body("data");
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let (code, body) = send(req).await;
        assert_eq!(code, 400, "{ct:?}");
        assert!(
            body.contains("Content-Type must be application/octet-stream"),
            "{body}"
        );
        assert_eq!(app.status_of(&id).await, "killed");
        assert!(!app.object_path(&id).exists());
    }
}

#[tokio::test]
async fn size_cap_is_400_when_declared_and_413_when_streamed() {
    let app = TestApp::builder().image_size_cap(1000).spawn().await;
    // Declared by Content-Length: refused before any record exists.
    let (code, body) = send(
        app.post("/v1/images")
            .headers(meta_headers(&raw_bare()))
            .header("content-type", "application/octet-stream")
            .body(vec![0u8; 1001]),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    // Declared by x-image-meta-size.
    assert_eq!(
        status(app.post("/v1/images").header("x-image-meta-size", "1001")).await,
        400
    );
    assert!(app.state().registry.all().await.unwrap().is_empty());
    // At the cap is fine.
    let img = app.create_image(&raw_bare(), Some(&[7u8; 1000])).await;
    assert_eq!(img["size"], 1000);
    // Chunked over the cap: 413 and killed.
    let id = uuid::Uuid::new_v4().to_string();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..4).map(|_| Ok(vec![1u8; 400])).collect();
    let (code, body) = send(
        app.post("/v1/images")
            .headers(meta_headers(&raw_bare()))
            .header("x-image-meta-id", &id)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks))),
    )
    .await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(app.status_of(&id).await, "killed");
    assert!(!app.object_path(&id).exists());
    app.wait_for_no_tmp_files().await;
}

#[tokio::test]
async fn unknown_store_is_400_and_named_stores_work() {
    let app = TestApp::builder().extra_store("second").spawn().await;
    let (code, body) = send(
        app.post("/v1/images")
            .header("x-image-meta-store", "nowhere"),
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("Required store nowhere is invalid"), "{body}");
    assert!(app.state().registry.all().await.unwrap().is_empty());
    let mut meta = raw_bare();
    meta.push(("x-image-meta-store", "second"));
    let img = app.create_image(&meta, Some(b"in the second store")).await;
    let id = img["id"].as_str().unwrap();
    assert!(app.data_dir().join("store-second").join(id).exists());
    assert!(!app.object_path(id).exists());
    let got = app.download(id).await;
    assert_eq!(got.as_ref(), b"in the second store");
    assert_eq!(status(app.delete(&format!("/v1/images/{id}"))).await, 200);
    assert!(!app.data_dir().join("store-second").join(id).exists());
}

#[tokio::test]
async fn size_and_checksum_mismatches_kill_and_remove_data() {
    let app = TestApp::spawn().await;
    for (h, v, needle) in [
        ("x-image-meta-size", "5", "does not match"),
        (
            "x-image-meta-checksum",
            "00000000000000000000000000000000",
            "checksum",
        ),
    ] {
        let id = uuid::Uuid::new_v4().to_string();
        let (code, body) = send(
            app.post("/v1/images")
                .headers(meta_headers(&raw_bare()))
                .header("x-image-meta-id", &id)
                .header(h, v)
                .header("content-type", "application/octet-stream")
                .body("four"),
        )
        .await;
        assert_eq!(code, 400, "{h}: {body}");
        assert!(body.contains(needle), "{body}");
        assert_eq!(app.status_of(&id).await, "killed");
        assert!(!app.object_path(&id).exists());
        assert!(app.tmp_files().is_empty());
        assert_eq!(status(app.get(&format!("/v1/images/{id}"))).await, 404);
    }
    // Upper-case hex is a different checksum (exact comparison).
    let data = b"four";
    let (code, _) = send(
        app.post("/v1/images")
            .headers(meta_headers(&raw_bare()))
            .header("x-image-meta-checksum", md5_hex(data).to_uppercase())
            .header("content-type", "application/octet-stream")
            .body(data.to_vec()),
    )
    .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn reservation_with_a_checksum_has_an_etag() {
    let app = TestApp::spawn().await;
    let resp = app
        .post("/v1/images")
        .header("x-image-meta-checksum", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(header(&resp, "etag").as_deref(), Some("abc"));
    let (code, body) = send(
        app.post("/v1/images")
            .header("x-image-meta-checksum", "a".repeat(33)),
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("can't exceed 32 characters"), "{body}");
}

#[tokio::test]
async fn remote_sources_and_file_locations_are_refused_with_400() {
    let app = TestApp::spawn().await;
    for (h, v) in [
        ("x-image-meta-location", "file:///etc/passwd"),
        ("x-image-meta-location", ""),
        ("x-glance-api-copy-from", "file:///etc/passwd"),
    ] {
        let (code, body) = send(
            app.post("/v1/images")
                .headers(meta_headers(&raw_bare()))
                .header(h, v),
        )
        .await;
        assert_eq!(code, 400, "{h}: {v}: {body}");
    }
    assert!(app.state().registry.all().await.unwrap().is_empty());
}

#[tokio::test]
async fn owner_and_read_only_fields_on_post() {
    let app = TestApp::builder().trusted_headers().spawn().await;
    let admin = Who::admin("adm");
    let user = Who::tenant("t1");
    let img = app
        .create_image_as(Some(&user), &[("x-image-meta-owner", "someone")], None)
        .await;
    assert_eq!(img["owner"], "t1", "non-admins cannot set the owner");
    let img = app
        .create_image_as(Some(&admin), &[("x-image-meta-owner", "someone")], None)
        .await;
    assert_eq!(img["owner"], "someone");
    let img = app
        .create_image_as(Some(&admin), &[("x-image-meta-owner", "")], None)
        .await;
    assert_eq!(img["owner"], serde_json::Value::Null);
    let img = app
        .create_image_as(Some(&admin), &[("x-image-meta-owner", "null")], None)
        .await;
    assert_eq!(img["owner"], "null");
    let img = app
        .create_image_as(
            Some(&user),
            &[
                ("x-image-meta-status", "active"),
                ("x-image-meta-created_at", "2001-01-01T00:00:00"),
                ("x-image-meta-updated_at", "2001-01-01"),
                ("x-image-meta-deleted_at", "2001-01-01T00:00:00Z"),
                ("x-image-meta-deleted", "true"),
                ("x-image-meta-copy_from", "whatever"),
                ("x-image-meta-uri", "whatever"),
            ],
            None,
        )
        .await;
    assert_eq!(img["status"], "queued");
    assert_eq!(img["deleted"], false);
    assert_eq!(img["deleted_at"], serde_json::Value::Null);
    assert!(!img["created_at"].as_str().unwrap().starts_with("2001"));
    assert!(!img["updated_at"].as_str().unwrap().starts_with("2001"));
    // Making an image public is admin-only.
    let (code, _) = send(
        app.post("/v1/images")
            .who(&user)
            .header("x-image-meta-is_public", "yes"),
    )
    .await;
    assert_eq!(code, 403);
    let img = app
        .create_image_as(Some(&user), &[("x-image-meta-is_public", "no")], None)
        .await;
    assert_eq!(img["is_public"], false);
    let img = app
        .create_image_as(Some(&admin), &[("x-image-meta-is_public", "ON")], None)
        .await;
    assert_eq!(img["is_public"], true);
}
