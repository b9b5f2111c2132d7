//! Spec §5.3, §5.4, §5.8: HEAD and GET of one image, its headers and its bytes.

use crate::common::*;

#[tokio::test]
async fn head_shows_metadata_headers_as_the_worked_example() {
    let app = TestApp::spawn().await;
    let data = b"*".repeat(5120);
    let img = app
        .create_image(
            &[
                ("X-Image-Meta-Name", "Image1"),
                ("X-Image-Meta-disk_format", "raw"),
                ("X-Image-Meta-container_format", "ovf"),
                ("X-Image-Meta-Is-Public", "True"),
                ("X-Image-Meta-Property-Distro", "Ubuntu"),
                ("X-Image-Meta-Property-Empty", ""),
            ],
            Some(&data),
        )
        .await;
    let id = img["id"].as_str().unwrap();
    let resp = app.head(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let h = |n: &str| header(&resp, n);
    assert_eq!(h("x-image-meta-id").as_deref(), Some(id));
    assert_eq!(h("x-image-meta-name").as_deref(), Some("Image1"));
    assert_eq!(h("x-image-meta-status").as_deref(), Some("active"));
    assert_eq!(h("x-image-meta-size").as_deref(), Some("5120"));
    assert_eq!(h("x-image-meta-disk_format").as_deref(), Some("raw"));
    assert_eq!(h("x-image-meta-container_format").as_deref(), Some("ovf"));
    assert_eq!(
        h("x-image-meta-checksum").as_deref(),
        Some("c2e5db72bd7fd153f53ede5da5a06de3")
    );
    assert_eq!(
        h("etag").as_deref(),
        Some("c2e5db72bd7fd153f53ede5da5a06de3")
    );
    assert_eq!(h("x-image-meta-min_disk").as_deref(), Some("0"));
    assert_eq!(h("x-image-meta-min_ram").as_deref(), Some("0"));
    assert_eq!(h("x-image-meta-is_public").as_deref(), Some("True"));
    assert_eq!(h("x-image-meta-protected").as_deref(), Some("False"));
    assert_eq!(h("x-image-meta-deleted").as_deref(), Some("False"));
    assert_eq!(h("x-image-meta-property-distro").as_deref(), Some("Ubuntu"));
    assert_eq!(
        h("x-image-meta-created_at").as_deref(),
        img["created_at"].as_str()
    );
    assert_eq!(
        h("x-image-meta-updated_at").as_deref(),
        img["updated_at"].as_str()
    );
    // Null fields and properties are omitted; no dashed names; never a location.
    for absent in [
        "x-image-meta-owner",
        "x-image-meta-deleted_at",
        "x-image-meta-virtual_size",
        "x-image-meta-property-empty",
        "x-image-meta-disk-format",
        "x-image-meta-is-public",
        "x-image-meta-location",
        "x-image-meta-uri",
        "x-image-meta-store",
        "location",
    ] {
        assert!(h(absent).is_none(), "{absent} present");
    }
    assert!(header(&resp, "x-openstack-request-id")
        .unwrap()
        .starts_with("req-"));
    assert_eq!(resp.bytes().await.unwrap().len(), 0);
}

#[tokio::test]
async fn queued_images_have_no_checksum_or_etag_and_cannot_be_downloaded() {
    let app = TestApp::spawn().await;
    let img = app.create_image(&[("x-image-meta-name", "q")], None).await;
    let id = img["id"].as_str().unwrap();
    assert_eq!(img["status"], "queued");
    let resp = app.head(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        header(&resp, "x-image-meta-status").as_deref(),
        Some("queued")
    );
    assert_eq!(header(&resp, "x-image-meta-size").as_deref(), Some("0"));
    assert!(header(&resp, "x-image-meta-checksum").is_none());
    assert!(header(&resp, "etag").is_none());
    assert!(header(&resp, "x-image-meta-disk_format").is_none());
    let (code, body) = send(app.get(&format!("/v1/images/{id}"))).await;
    assert_eq!(code, 404);
    assert!(
        body.contains(&format!("Image {id} is not active")),
        "{body}"
    );
    // Upper-case spelling of the id finds the same image.
    assert_eq!(
        status(app.head(&format!("/v1/images/{}", id.to_uppercase()))).await,
        200
    );
}

#[tokio::test]
async fn get_returns_the_bytes_bit_exact_with_metadata_headers() {
    let app = TestApp::spawn().await;
    let data = pattern(700_001);
    let id = app.public_image("big", &data).await;
    let resp = app.get(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(header(&resp, "content-length").as_deref(), Some("700001"));
    assert_eq!(
        header(&resp, "x-image-meta-size").as_deref(),
        Some("700001")
    );
    assert_eq!(header(&resp, "etag"), Some(md5_hex(&data)));
    assert_eq!(header(&resp, "x-image-meta-checksum"), Some(md5_hex(&data)));
    assert!(header(&resp, "location").is_none());
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), data.len());
    assert!(body.as_ref() == data.as_slice(), "bytes differ");
    // The stored file is the data too.
    assert_eq!(std::fs::read(app.object_path(&id)).unwrap(), data);
}

#[tokio::test]
async fn size_zero_images_download_empty() {
    let app = TestApp::spawn().await;
    let img = app
        .create_image(
            &[("x-image-meta-name", "empty"), ("x-image-meta-size", "0")],
            None,
        )
        .await;
    assert_eq!(img["status"], "active");
    let resp = app
        .get(&format!("/v1/images/{}", img["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(&resp, "content-length").as_deref(), Some("0"));
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn range_requests_are_an_extension() {
    let app = TestApp::spawn().await;
    let data = pattern(1000);
    let id = app.public_image("r", &data).await;
    let path = format!("/v1/images/{id}");
    let resp = app
        .get(&path)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "content-length").as_deref(), Some("10"));
    assert_range(&app, None, &id, &data, "bytes=10-19", (10, 19)).await;
    assert_range(&app, None, &id, &data, "bytes=-5", (995, 999)).await;
    assert_range(&app, None, &id, &data, "bytes=990-", (990, 999)).await;
    assert_unsatisfiable(&app, &id, 1000).await;
    // Several ranges or nonsense: the whole image, 200.
    let resp = app
        .get(&path)
        .header("range", "bytes=0-1,5-6")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), 1000);
}

#[tokio::test]
async fn bodies_on_get_head_delete_are_ignored() {
    let app = TestApp::spawn().await;
    let id = app.public_image("b", b"abc").await;
    let path = format!("/v1/images/{id}");
    let resp = app.get(&path).body("{not json").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"abc");
    assert_eq!(status(app.get("/v1/images").body("{\"x\": 1}")).await, 200);
    assert_eq!(status(app.delete(&path).body("garbage")).await, 200);
    assert_eq!(app.status_of(&id).await, "deleted");
}

#[tokio::test]
async fn deleted_images_are_visible_to_admins_only() {
    let app = TestApp::builder().trusted_headers().spawn().await;
    let owner = Who::tenant("t1");
    let admin = Who::admin("adm");
    let img = app
        .create_image_as(
            Some(&owner),
            &[
                ("x-image-meta-name", "d"),
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
            ],
            Some(b"data"),
        )
        .await;
    let path = format!("/v1/images/{}", img["id"].as_str().unwrap());
    assert_eq!(status(app.delete(&path).who(&owner)).await, 200);
    assert_eq!(status(app.head(&path).who(&owner)).await, 404);
    assert_eq!(status(app.get(&path).who(&owner)).await, 404);
    let resp = app.head(&path).who(&admin).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        header(&resp, "x-image-meta-status").as_deref(),
        Some("deleted")
    );
    assert_eq!(
        header(&resp, "x-image-meta-deleted").as_deref(),
        Some("True")
    );
    assert!(header(&resp, "x-image-meta-deleted_at").is_some());
    assert_eq!(status(app.get(&path).who(&admin)).await, 404);
}

#[tokio::test]
async fn direct_url_is_shown_to_admins_only_when_configured() {
    let app = TestApp::builder()
        .trusted_headers()
        .show_image_direct_url(true)
        .spawn()
        .await;
    let admin = Who::admin("adm");
    let img = app
        .create_image_as(
            Some(&admin),
            &[
                ("x-image-meta-is_public", "true"),
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
            ],
            Some(b"data"),
        )
        .await;
    let id = img["id"].as_str().unwrap();
    let path = format!("/v1/images/{id}");
    let resp = app.head(&path).who(&admin).send().await.unwrap();
    assert_eq!(
        header(&resp, "x-image-meta-location"),
        Some(format!("file://{id}"))
    );
    let resp = app.head(&path).who(&Who::tenant("t")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(header(&resp, "x-image-meta-location").is_none());
    let detail = json(
        app.get("/v1/images/detail")
            .who(&Who::tenant("t"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(detail["images"][0].get("location").is_none());
}

#[tokio::test]
async fn locations_are_never_shown_by_default() {
    let app = TestApp::spawn().await;
    let id = app.public_image("x", b"data").await;
    let resp = app.head(&format!("/v1/images/{id}")).send().await.unwrap();
    assert!(header(&resp, "x-image-meta-location").is_none());
    let detail = json(app.get("/v1/images/detail").send().await.unwrap()).await;
    assert!(detail["images"][0].get("location").is_none());
    let text = app
        .get("/v1/images/detail")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("file://"), "{text}");
}
