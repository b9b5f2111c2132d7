//! Spec §0.4, §4.2: the answers as Glance spells them on the wire — header names in its case,
//! no metadata headers on POST/PUT, its conversion error wording, `Invalid location`.

use glance_gateway::config::RemoteSources;

use crate::common::*;

/// Sends one request with `Connection: close` and returns the answer as it came on the wire.
async fn raw_call(app: &TestApp, method: &str, path: &str, extra: &str) -> RawResponse {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{extra}\r\n",
        app.addr
    );
    app.raw(request.as_bytes()).await
}

fn names_under_meta(r: &RawResponse) -> Vec<&String> {
    r.wire_names
        .iter()
        .filter(|n| n.to_ascii_lowercase().starts_with("x-image-meta-"))
        .collect()
}

#[tokio::test]
async fn header_names_are_spelled_as_glance_spells_them() {
    let app = TestApp::spawn().await;
    let img = app
        .create_image(
            &[
                ("x-image-meta-name", "wire"),
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
                ("x-image-meta-property-os_distro", "cirros"),
            ],
            Some(b"0123456789"),
        )
        .await;
    let path = format!("/v1/images/{}", img["id"].as_str().unwrap());
    for method in ["HEAD", "GET"] {
        let r = raw_call(&app, method, &path, "").await;
        assert_eq!(r.status, 200, "{method}");
        for name in [
            "X-Image-Meta-Disk_format",
            "X-Image-Meta-Container_format",
            "X-Image-Meta-Property-Os_distro",
            "X-Image-Meta-Is_public",
            "Etag",
            "X-Openstack-Request-Id",
            "Content-Type",
            "Content-Length",
        ] {
            assert!(
                r.wire_names.iter().any(|n| n == name),
                "{method}: no {name} in {:?}",
                r.wire_names
            );
        }
    }
    // HEAD answers carry Glance's content type.
    let r = raw_call(&app, "HEAD", &path, "").await;
    assert_eq!(r.header("content-type"), Some("text/html; charset=UTF-8"));
}

#[tokio::test]
async fn post_and_put_answer_json_location_and_etag_without_metadata_headers() {
    let app = TestApp::spawn().await;
    let request = format!(
        "POST /v1/images HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         x-image-meta-name: a\r\nx-image-meta-disk_format: raw\r\n\
         x-image-meta-container_format: bare\r\nx-image-meta-property-k: v\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 3\r\n\r\nabc",
        app.addr
    );
    let r = app.raw(request.as_bytes()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.wire_names.iter().any(|n| n == "Location"));
    assert!(r.wire_names.iter().any(|n| n == "Etag"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(names_under_meta(&r).is_empty(), "{:?}", r.wire_names);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["image"]["properties"]["k"], "v");
    let id = body["image"]["id"].as_str().unwrap().to_owned();

    let r = raw_call(
        &app,
        "PUT",
        &format!("/v1/images/{id}"),
        "x-image-meta-name: b\r\nx-image-meta-property-k: w\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.wire_names.iter().any(|n| n == "Etag"));
    assert!(names_under_meta(&r).is_empty(), "{:?}", r.wire_names);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["image"]["name"], "b");
    assert_eq!(body["image"]["properties"]["k"], "w");
}

#[tokio::test]
async fn an_image_with_many_properties_answers_put_with_few_headers() {
    let app = TestApp::spawn().await;
    let id = app
        .create_image(&[("x-image-meta-name", "many")], None)
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // 120 properties: as metadata headers the answer would exceed Python's 100-header limit.
    let props: String = (0..120)
        .map(|i| format!("x-image-meta-property-p{i}: {i}\r\n"))
        .collect();
    let r = raw_call(&app, "PUT", &format!("/v1/images/{id}"), &props).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.wire_names.len() < 20, "{} headers", r.wire_names.len());
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["image"]["properties"].as_object().unwrap().len(), 120);
}

#[tokio::test]
async fn integer_conversion_errors_read_as_glance_s() {
    let app = TestApp::spawn().await;
    for field in ["size", "min_disk", "min_ram", "virtual_size"] {
        let (code, body) = send(
            app.post("/v1/images")
                .header(format!("x-image-meta-{field}"), "-42"),
        )
        .await;
        assert_eq!(code, 400);
        let want =
            format!("Invalid value '-42' for parameter {field}: Cannot be a negative value.");
        assert!(body.contains(&want), "{field}: {body}");
        let (code, body) = send(
            app.post("/v1/images")
                .header(format!("x-image-meta-{field}"), "ten"),
        )
        .await;
        assert_eq!(code, 400);
        let want = format!(
            "Invalid value 'ten' for parameter {field}: Cannot convert image {field} 'ten' to an integer."
        );
        assert!(body.contains(&want), "{field}: {body}");
    }
}

#[tokio::test]
async fn a_malformed_location_is_invalid_whatever_the_remote_policy() {
    for policy in [
        RemoteSources::Off,
        RemoteSources::Public,
        RemoteSources::Any,
    ] {
        let app = TestApp::builder().remote_sources(policy).spawn().await;
        for bad in ["not a url", "http://", "http://[::1/x"] {
            let (code, body) = send(
                app.post("/v1/images")
                    .headers(location_meta(bad))
                    .header("x-image-meta-name", "x"),
            )
            .await;
            assert_eq!(code, 400, "{policy:?} {bad}");
            assert!(
                body.contains("Invalid location"),
                "{policy:?} {bad}: {body}"
            );
        }
    }
}
