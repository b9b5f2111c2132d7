//! Spec §2: version negotiation, the version document, the route table, 405/Allow, 404, 501.

use reqwest::Method;

use crate::common::*;

#[tokio::test]
async fn root_and_unknown_versions_answer_300_with_the_document() {
    let app = TestApp::spawn().await;
    for path in [
        "/",
        "/v2/images",
        "/v1.2/images",
        "/v10/images",
        "/v1.a/images",
        "/va.1/images",
        "/v2",
    ] {
        let resp = app.get(path).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 300, "{path}");
        assert!(header(&resp, "x-openstack-request-id").is_none(), "{path}");
        let doc = json(resp).await;
        assert_eq!(doc["versions"][0]["id"], "v1.1");
        assert_eq!(doc["versions"][0]["status"], "CURRENT");
        assert_eq!(doc["versions"][1]["id"], "v1.0");
        assert_eq!(doc["versions"][1]["status"], "SUPPORTED");
        let href = format!("{}/v1/", app.base);
        assert_eq!(doc["versions"][0]["links"][0]["href"], href.as_str());
        assert_eq!(doc["versions"][0]["links"][0]["rel"], "self");
        assert_eq!(doc["versions"][1]["links"][0]["href"], href.as_str());
    }
    // Whatever the method.
    assert_eq!(status(app.delete("/v2/images/x")).await, 300);
    assert_eq!(status(app.post("/")).await, 300);
}

#[tokio::test]
async fn versions_answers_200_whatever_the_method() {
    let app = TestApp::spawn().await;
    for (m, path) in [
        (Method::GET, "/versions"),
        (Method::POST, "/versions"),
        (Method::DELETE, "/versions/x"),
    ] {
        let resp = app.req(m.clone(), path).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{m} {path}");
        assert_eq!(
            header(&resp, "content-type").as_deref(),
            Some("application/json")
        );
        assert!(header(&resp, "x-openstack-request-id").is_none());
        let doc = json(resp).await;
        assert_eq!(doc["versions"].as_array().unwrap().len(), 2);
    }
    assert_eq!(status(app.get("/v1/versions")).await, 404);
}

#[tokio::test]
async fn every_v1_prefix_and_the_seed_paths_serve_v1() {
    let app = TestApp::spawn().await;
    for path in [
        "/v1/images",
        "/v1.0/images",
        "/v1.1/images",
        "/images",
        "/images/",
        "/v1/images/",
        "/v1/",
        "/v1.1/",
    ] {
        let resp = app.get(path).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        assert_eq!(
            header(&resp, "content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(resp.text().await.unwrap(), r#"{"images": []}"#, "{path}");
    }
    for path in ["/images/detail", "/images/detail/", "/v1.0/images/detail"] {
        let resp = app.get(path).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        assert_eq!(resp.text().await.unwrap(), r#"{"images": []}"#);
    }
    // The seed walk-through: create on /images/, read back on /images/{id}.
    let resp = app
        .post("/images/")
        .header("x-image-meta-name", "seed")
        .header("x-image-meta-is-public", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let id = json(resp).await["image"]["id"].as_str().unwrap().to_owned();
    for path in [
        format!("/images/{id}"),
        format!("/images/{id}/"),
        format!("/v1.0/images/{id}"),
    ] {
        let resp = app.head(&path).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        assert_eq!(header(&resp, "x-image-meta-name").as_deref(), Some("seed"));
    }
    assert_eq!(list_ids(&app, "/images", None).await, vec![id.clone()]);
    assert_eq!(status(app.get(&format!("/images/{id}/members"))).await, 200);
    assert_eq!(status(app.get("/shared-images/t1")).await, 200);
    assert_eq!(status(app.get("/shared-images/t1/")).await, 200);
}

#[tokio::test]
async fn accept_header_versioning_wins() {
    let app = TestApp::spawn().await;
    let v1 = "application/vnd.openstack.images-v1";
    let resp = app
        .get("/images")
        .header("accept", v1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap(), r#"{"images": []}"#);
    let resp = app
        .get("/images")
        .header("accept", "application/vnd.openstack.images-v10")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 300);
    // With the media type, the path is not re-rooted: /v1/images is /v1/v1/images.
    assert_eq!(
        status(app.get("/v1/images").header("accept", v1)).await,
        404
    );
}

#[tokio::test]
async fn no_format_suffixes_and_unknown_paths_are_404() {
    let app = TestApp::spawn().await;
    let id = app.public_image("x", b"abc").await;
    for path in [
        "/v1/images.json".to_owned(),
        "/v1/images/detail.xxx".to_owned(),
        format!("/v1/images/{id}/members.xxx"),
        "/v1/images/new".to_owned(),
        "/v1/nothing".to_owned(),
        format!("/v1/images/{id}x"),
        format!("/v1/images/{id}/members/t1/extra"),
        "/v1/images/3c1b0d2e-aaaa-4bbb-8ccc-0123456789ab".to_owned(),
    ] {
        let resp = app.get(&path).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{path}");
        assert!(header(&resp, "x-openstack-request-id").is_some());
    }
    // An unknown method on an unknown path.
    let foo = Method::from_bytes(b"FOO").unwrap();
    assert_eq!(status(app.req(foo.clone(), "/v1/nothing")).await, 501);
    assert_eq!(status(app.req(Method::PATCH, "/v1/nothing")).await, 404);
}

#[tokio::test]
async fn methods_outside_the_route_table_answer_405_with_allow() {
    let app = TestApp::spawn().await;
    let id = app.public_image("x", b"abc").await;
    let foo = Method::from_bytes(b"FOO").unwrap();
    let cases: Vec<(Method, String, &str)> = vec![
        (Method::PUT, "/v1/images".into(), "GET, POST"),
        (Method::DELETE, "/v1/images".into(), "GET, POST"),
        (Method::HEAD, "/v1/images".into(), "GET, POST"),
        (Method::HEAD, "/v1/images/detail".into(), "GET"),
        (Method::POST, "/v1/images/detail".into(), "GET, HEAD"),
        (
            Method::POST,
            format!("/v1/images/{id}"),
            "GET, HEAD, PUT, DELETE",
        ),
        (
            Method::PATCH,
            format!("/v1/images/{id}"),
            "GET, HEAD, PUT, DELETE",
        ),
        (
            foo.clone(),
            format!("/v1/images/{id}"),
            "GET, HEAD, PUT, DELETE",
        ),
        (Method::POST, format!("/v1/images/{id}/members"), "GET, PUT"),
        (
            Method::DELETE,
            format!("/v1/images/{id}/members"),
            "GET, PUT",
        ),
        (
            Method::POST,
            format!("/v1/images/{id}/members/t1"),
            "GET, PUT, DELETE",
        ),
    ];
    for (m, path, allow) in cases {
        let resp = app.req(m.clone(), &path).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{m} {path}");
        assert_eq!(header(&resp, "allow").as_deref(), Some(allow), "{m} {path}");
    }
    // No single-member read.
    assert_eq!(
        status(app.get(&format!("/v1/images/{id}/members/t1"))).await,
        405
    );
    // Image ids longer than 36 characters are never found.
    let long = format!("{id}0");
    assert_eq!(status(app.head(&format!("/v1/images/{long}"))).await, 404);
}
