//! Spec §5.6 and §5.7: PUT (metadata, purge-props, upload to queued) and DELETE.

use serde_json::json;

use crate::common::*;

async fn queued(app: &TestApp, meta: &[(&str, &str)]) -> String {
    app.create_image(meta, None).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn put_replaces_properties_by_default_and_keeps_core_fields() {
    let app = TestApp::spawn().await;
    let id = queued(
        &app,
        &[
            ("x-image-meta-name", "orig"),
            ("x-image-meta-min_ram", "128"),
            ("x-image-meta-disk_format", "raw"),
            ("x-image-meta-property-a", "1"),
            ("x-image-meta-property-b", "2"),
        ],
    )
    .await;
    let path = format!("/v1/images/{id}");
    let resp = app
        .put(&path)
        .header("x-image-meta-property-c", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("application/json")
    );
    assert!(header(&resp, "location").is_none());
    // The JSON body only: no metadata headers (spec §0.4).
    for name in [
        "x-image-meta-property-c",
        "x-image-meta-name",
        "x-image-meta-min_ram",
    ] {
        assert!(header(&resp, name).is_none(), "{name}");
    }
    let img = json(resp).await["image"].clone();
    assert_eq!(img["properties"], json!({"c": "3"}));
    assert_eq!(img["name"], "orig");
    assert_eq!(img["min_ram"], 128);
    assert_eq!(img["disk_format"], "raw");
    assert_eq!(img.as_object().unwrap().len(), 20);
    // A PUT naming only the name deletes every property.
    let img = json(
        app.put(&path)
            .header("x-image-meta-name", "renamed")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(img["image"]["properties"], json!({}));
    assert_eq!(img["image"]["name"], "renamed");
    // purge-props false keeps unmentioned ones; any non-true word counts as false.
    app.put(&path)
        .header("x-image-meta-property-a", "1")
        .send()
        .await
        .unwrap();
    for (flag, prop) in [("false", "b"), ("0", "c"), ("garbage", "d")] {
        let resp = app
            .put(&path)
            .header("x-glance-registry-purge-props", flag)
            .header(format!("x-image-meta-property-{prop}"), prop)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    let props = app.record(&id).await.properties;
    assert_eq!(props.len(), 4, "{props:?}");
    // An explicit true purges; a deleted property can be set again.
    let img = json(
        app.put(&path)
            .header("x-glance-registry-purge-props", "True")
            .header("x-image-meta-property-a", "again")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(img["image"]["properties"], json!({"a": "again"}));
    // Empty value: a null property, kept but not shown as a header.
    let resp = app
        .put(&path)
        .header("x-glance-registry-purge-props", "false")
        .header("x-image-meta-property-a", "")
        .send()
        .await
        .unwrap();
    assert_eq!(json(resp).await["image"]["properties"], json!({"a": null}));
    let resp = app.head(&path).send().await.unwrap();
    assert!(header(&resp, "x-image-meta-property-a").is_none());
}

#[tokio::test]
async fn put_with_data_never_purges_and_activates_a_queued_image() {
    let app = TestApp::spawn().await;
    let id = queued(
        &app,
        &[
            ("x-image-meta-disk_format", "qcow2"),
            ("x-image-meta-container_format", "bare"),
            ("x-image-meta-property-keep", "me"),
        ],
    )
    .await;
    let path = format!("/v1/images/{id}");
    let data = pattern(12345);
    let resp = app
        .put(&path)
        .header("x-image-meta-property-new", "x")
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(&resp, "etag"), Some(md5_hex(&data)));
    assert!(header(&resp, "x-image-meta-status").is_none());
    let img = json(resp).await["image"].clone();
    assert_eq!(img["status"], "active");
    assert_eq!(img["size"], 12345);
    assert_eq!(img["properties"], json!({"keep": "me", "new": "x"}));
    // Uploading again: 409.
    let (code, body) = send(
        app.put(&path)
            .header("content-type", "application/octet-stream")
            .body("more"),
    )
    .await;
    assert_eq!(code, 409);
    assert!(
        body.contains("Cannot upload to an unqueued image"),
        "{body}"
    );
    let got = app.get(&path).send().await.unwrap().bytes().await.unwrap();
    assert!(got.as_ref() == data.as_slice());
}

#[tokio::test]
async fn put_upload_needs_formats_from_request_or_record() {
    let app = TestApp::spawn().await;
    let id = queued(&app, &[("x-image-meta-name", "noformats")]).await;
    let path = format!("/v1/images/{id}");
    let (code, body) = send(
        app.put(&path)
            .header("content-type", "application/octet-stream")
            .body("data"),
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("Disk format is not specified."), "{body}");
    assert_eq!(app.status_of(&id).await, "queued");
    let resp = app
        .put(&path)
        .header("x-image-meta-disk_format", "aki")
        .header("content-type", "application/octet-stream")
        .body("data")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let img = json(resp).await["image"].clone();
    assert_eq!(img["container_format"], "aki");
    assert_eq!(img["status"], "active");
}

#[tokio::test]
async fn forbidden_changes_on_put() {
    let app = TestApp::builder().trusted_headers().spawn().await;
    let owner = Who::tenant("t1");
    let admin = Who::admin("adm");
    let img = app
        .create_image_as(
            Some(&owner),
            &[
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
            ],
            Some(b"data"),
        )
        .await;
    let id = img["id"].as_str().unwrap().to_owned();
    let sum = img["checksum"].as_str().unwrap().to_owned();
    let path = format!("/v1/images/{id}");
    let other_id = uuid::Uuid::new_v4().to_string();
    for (h, v, code, needle) in [
        (
            "x-image-meta-status",
            "queued",
            403,
            "Forbidden to modify 'status' of image.",
        ),
        (
            "x-image-meta-id",
            other_id.as_str(),
            403,
            "Forbidden to modify 'id' of image.",
        ),
        (
            "x-image-meta-size",
            "99",
            403,
            "Forbidden to modify 'size' of active image.",
        ),
        (
            "x-image-meta-checksum",
            "abc",
            403,
            "Forbidden to modify 'checksum' of active image.",
        ),
        ("x-image-meta-is_public", "true", 403, ""),
    ] {
        let (got, body) = send(app.put(&path).who(&owner).header(h, v)).await;
        assert_eq!(got, code, "{h}: {body}");
        assert!(body.contains(needle), "{body}");
    }
    // The current values are fine.
    for (h, v) in [
        ("x-image-meta-status", "active"),
        ("x-image-meta-id", id.as_str()),
        ("x-image-meta-size", "4"),
        ("x-image-meta-checksum", sum.as_str()),
        ("x-image-meta-is_public", "false"),
    ] {
        assert_eq!(
            status(app.put(&path).who(&owner).header(h, v)).await,
            200,
            "{h}"
        );
    }
    // Admins may change size and checksum of an active image, and publicize.
    assert_eq!(
        status(app.put(&path).who(&admin).header("x-image-meta-size", "5")).await,
        200
    );
    assert_eq!(
        status(
            app.put(&path)
                .who(&admin)
                .header("x-image-meta-is_public", "1")
        )
        .await,
        200
    );
    // Owner silently ignored for non-admins.
    let resp = app
        .put(&path)
        .who(&admin)
        .header("x-image-meta-is_public", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let img = json(
        app.put(&path)
            .who(&owner)
            .header("x-image-meta-owner", "thief")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(img["image"]["owner"], "t1");
    let img = json(
        app.put(&path)
            .who(&admin)
            .header("x-image-meta-owner", "t2")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(img["image"]["owner"], "t2");
    // Deleted image: 403 for admins, 404 for others.
    assert_eq!(status(app.delete(&path).who(&admin)).await, 200);
    let (code, body) = send(app.put(&path).who(&admin).header("x-image-meta-name", "x")).await;
    assert_eq!(code, 403);
    assert!(
        body.contains("Forbidden to update deleted image."),
        "{body}"
    );
    assert_eq!(
        status(app.put(&path).who(&owner).header("x-image-meta-name", "x")).await,
        404
    );
}

#[tokio::test]
async fn put_to_a_missing_image_is_404() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::new_v4();
    assert_eq!(
        status(
            app.put(&format!("/v1/images/{id}"))
                .header("x-image-meta-name", "x")
        )
        .await,
        404
    );
    assert_eq!(
        status(
            app.put("/v1/images/not-an-id")
                .header("x-image-meta-name", "x")
        )
        .await,
        404
    );
}

#[tokio::test]
async fn location_on_put_is_refused() {
    let app = TestApp::spawn().await;
    let id = queued(&app, &[("x-image-meta-name", "x")]).await;
    let (code, _) = send(
        app.put(&format!("/v1/images/{id}"))
            .header("x-image-meta-location", "file:///etc/passwd"),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(app.status_of(&id).await, "queued");
}

#[tokio::test]
async fn delete_answers_200_empty_and_removes_data() {
    let app = TestApp::spawn().await;
    let id = app.public_image("d", b"some data").await;
    let path = format!("/v1/images/{id}");
    assert!(app.object_path(&id).exists());
    let resp = app.delete(&path).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(header(&resp, "x-openstack-request-id").is_some());
    assert!(resp.bytes().await.unwrap().is_empty());
    assert!(!app.object_path(&id).exists());
    let rec = app.record(&id).await;
    assert_eq!(rec.status.as_str(), "deleted");
    assert!(rec.deleted);
    assert!(rec.deleted_at.is_some());
    assert!(rec.properties.is_empty());
    // Gone for good.
    let (code, body) = send(app.delete(&path)).await;
    assert_eq!(code, 404);
    assert!(body.contains("not found"), "{body}");
    assert_eq!(status(app.get(&path)).await, 404);
    assert!(list_ids(&app, "/v1/images", None).await.is_empty());
    // A queued image goes straight to deleted too.
    let q = queued(&app, &[]).await;
    assert_eq!(status(app.delete(&format!("/v1/images/{q}"))).await, 200);
    assert_eq!(app.status_of(&q).await, "deleted");
}

#[tokio::test]
async fn protected_images_cannot_be_deleted_by_anyone() {
    let app = TestApp::spawn().await;
    let id = queued(&app, &[("x-image-meta-protected", "True")]).await;
    let path = format!("/v1/images/{id}");
    let (code, body) = send(app.delete(&path)).await;
    assert_eq!(code, 403);
    assert!(body.contains("Image is protected"), "{body}");
    assert_eq!(
        status(app.put(&path).header("x-image-meta-protected", "False")).await,
        200
    );
    assert_eq!(status(app.delete(&path)).await, 200);
}

#[tokio::test]
async fn delayed_delete_goes_through_pending_delete() {
    let app = TestApp::builder()
        .delayed_delete(true)
        .scrub_time(3600)
        .spawn()
        .await;
    let id = app.public_image("dd", b"payload").await;
    let path = format!("/v1/images/{id}");
    assert_eq!(status(app.delete(&path)).await, 200);
    assert_eq!(app.status_of(&id).await, "pending_delete");
    assert!(app.object_path(&id).exists(), "data waits for the scrubber");
    let resp = app.head(&path).send().await.unwrap();
    assert_eq!(
        header(&resp, "x-image-meta-status").as_deref(),
        Some("pending_delete")
    );
    assert_eq!(
        header(&resp, "x-image-meta-deleted").as_deref(),
        Some("True")
    );
    let (code, body) = send(app.delete(&path)).await;
    assert_eq!(code, 403);
    assert!(
        body.contains("Forbidden to delete a pending_delete image."),
        "{body}"
    );
    assert_eq!(status(app.get(&path)).await, 404);
    assert!(list_ids(&app, "/v1/images", None).await.is_empty());
    // A queued image without data is deleted at once.
    let q = queued(&app, &[]).await;
    assert_eq!(status(app.delete(&format!("/v1/images/{q}"))).await, 200);
    assert_eq!(app.status_of(&q).await, "deleted");
}

#[tokio::test]
async fn the_scrubber_finishes_delayed_deletes() {
    let app = TestApp::builder()
        .delayed_delete(true)
        .scrub_time(0)
        .spawn()
        .await;
    let id = app.public_image("dd", b"payload").await;
    assert_eq!(status(app.delete(&format!("/v1/images/{id}"))).await, 200);
    let scrubbed = glance_gateway::maintenance::scrub(app.state())
        .await
        .unwrap();
    assert_eq!(scrubbed, 1);
    assert_eq!(app.status_of(&id).await, "deleted");
    assert!(!app.object_path(&id).exists());
}

#[tokio::test]
async fn store_is_validated_on_put_even_without_data() {
    let app = TestApp::spawn().await;
    let id = queued(&app, &[]).await;
    let (code, body) = send(
        app.put(&format!("/v1/images/{id}"))
            .header("x-image-meta-store", "nowhere"),
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("Required store nowhere is invalid"), "{body}");
    assert_eq!(
        status(
            app.put(&format!("/v1/images/{id}"))
                .header("x-image-meta-store", "file")
        )
        .await,
        200
    );
}

#[tokio::test]
async fn put_upload_refusals_cap_and_content_type() {
    let app = TestApp::builder().image_size_cap(10).spawn().await;
    let id = queued(
        &app,
        &[
            ("x-image-meta-disk_format", "raw"),
            ("x-image-meta-container_format", "bare"),
            ("x-image-meta-name", "n"),
        ],
    )
    .await;
    let path = format!("/v1/images/{id}");
    // Declared over the cap: 400 before anything changes.
    let (code, _) = send(
        app.put(&path)
            .header("x-image-meta-name", "changed")
            .header("content-type", "application/octet-stream")
            .body(vec![0u8; 11]),
    )
    .await;
    assert_eq!(code, 400);
    let rec = app.record(&id).await;
    assert_eq!(rec.status.as_str(), "queued");
    assert_eq!(rec.name.as_deref(), Some("n"));
    // Wrong content type: 400 and killed.
    let (code, body) = send(
        app.put(&path)
            .header("content-type", "text/plain")
            .body("abc"),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(app.status_of(&id).await, "killed");
}
