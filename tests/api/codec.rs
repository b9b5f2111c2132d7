//! Spec §4.1, §4.2, §0.9, §0.10, §0.15: the x-image-meta-* header codec end to end.

use crate::common::*;

#[tokio::test]
async fn dashes_and_underscores_name_the_same_fields() {
    let app = TestApp::spawn().await;
    let img = app
        .create_image(
            &[
                ("X-Image-Meta-Disk-Format", "raw"),
                ("x-image-meta-container_format", "bare"),
                ("X-IMAGE-META-MIN-RAM", "64"),
                ("X-Image-Meta-Property-Foo-Bar", "x"),
                ("x-image-meta-property-Os.Distro", "y"),
                ("x-image-created_at", "not checked: not under x-image-meta-"),
            ],
            None,
        )
        .await;
    assert_eq!(img["disk_format"], "raw");
    assert_eq!(img["container_format"], "bare");
    assert_eq!(img["min_ram"], 64);
    assert_eq!(img["properties"]["foo_bar"], "x");
    assert_eq!(img["properties"]["os.distro"], "y");
}

#[tokio::test]
async fn boolean_words() {
    let app = TestApp::spawn().await;
    for (v, want) in [
        ("1", true),
        ("t", true),
        ("TRUE", true),
        ("on", true),
        ("y", true),
        ("Yes", true),
        ("false", false),
        ("0", false),
        ("", false),
        ("garbage", false),
        ("no", false),
    ] {
        let img = app
            .create_image(&[("x-image-meta-protected", v)], None)
            .await;
        assert_eq!(img["protected"], want, "{v:?}");
    }
}

#[tokio::test]
async fn bad_headers_are_400_on_post_and_put() {
    let app = TestApp::spawn().await;
    let id = app.create_image(&[], None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cases: &[(&str, &str, &str)] = &[
        ("x-image-meta-bogus", "1", "Bad header: x-image-meta-bogus"),
        ("x-image-meta-locations", "x", "Bad header"),
        (
            "x-image-meta-size",
            "",
            "Cannot convert image size '' to an integer.",
        ),
        ("x-image-meta-size", "abc", "Cannot convert image size"),
        ("x-image-meta-size", "-1", "Cannot be a negative value."),
        ("x-image-meta-min_ram", "", "Cannot convert image min_ram"),
        ("x-image-meta-min_disk", "", "Cannot convert image min_disk"),
        (
            "x-image-meta-virtual_size",
            "",
            "Cannot convert image virtual_size",
        ),
        ("x-image-meta-min_disk", "2147483648", "2147483647"),
        (
            "x-image-meta-min_ram",
            "1.5",
            "Cannot convert image min_ram",
        ),
        (
            "x-image-meta-created_at",
            "-42",
            "Invalid time format for created_at.",
        ),
        (
            "x-image-meta-updated_at",
            "foo",
            "Invalid time format for updated_at.",
        ),
        (
            "x-image-meta-deleted_at",
            "1100",
            "Invalid time format for deleted_at.",
        ),
        (
            "x-image-meta-created_at",
            "2012-01-01hey12:32:12",
            "Invalid time format",
        ),
        ("x-image-meta-name", "\u{1F600}", ""),
        ("x-image-meta-property-emoji", "\u{1F600}", ""),
    ];
    let before = app.state().registry.all().await.unwrap().len();
    for (h, v, needle) in cases {
        let (code, body) = send(app.post("/v1/images").header(*h, *v)).await;
        assert_eq!(code, 400, "POST {h}: {v:?}: {body}");
        assert!(body.contains(needle), "{h}: {body}");
        let (code, body) = send(app.put(&format!("/v1/images/{id}")).header(*h, *v)).await;
        assert_eq!(code, 400, "PUT {h}: {v:?}: {body}");
    }
    assert_eq!(app.state().registry.all().await.unwrap().len(), before);
    let (code, _) = send(
        app.post("/v1/images")
            .header("x-image-meta-name", "n".repeat(256)),
    )
    .await;
    assert_eq!(code, 400);
    let img = app
        .create_image(&[("x-image-meta-name", &"n".repeat(255))], None)
        .await;
    assert_eq!(img["name"].as_str().unwrap().len(), 255);
    // 4-byte UTF-8 in a property key.
    let (code, _) = send(app.post("/v1/images").header(
        reqwest::header::HeaderName::from_bytes(b"x-image-meta-property-k").unwrap(),
        reqwest::header::HeaderValue::from_bytes("\u{10348}".as_bytes()).unwrap(),
    ))
    .await;
    assert_eq!(code, 400);
    // virtual_size: the literal None means null.
    let img = app
        .create_image(&[("x-image-meta-virtual_size", "None")], None)
        .await;
    assert_eq!(img["virtual_size"], serde_json::Value::Null);
    let img = app
        .create_image(&[("x-image-meta-virtual_size", "42")], None)
        .await;
    assert_eq!(img["virtual_size"], 42);
}

#[tokio::test]
async fn utf8_round_trips_in_json_and_headers() {
    let app = TestApp::spawn().await;
    let name = "Ñame – ünïcödé 名前";
    let value = "välue ☃";
    let img = app
        .create_image(
            &[
                ("x-image-meta-name", name),
                ("x-image-meta-property-desc", value),
            ],
            None,
        )
        .await;
    assert_eq!(img["name"], name);
    assert_eq!(img["properties"]["desc"], value);
    let id = img["id"].as_str().unwrap();
    let resp = app.head(&format!("/v1/images/{id}")).send().await.unwrap();
    let raw = resp
        .headers()
        .get("x-image-meta-name")
        .unwrap()
        .as_bytes()
        .to_vec();
    assert_eq!(String::from_utf8(raw).unwrap(), name);
    let raw = resp
        .headers()
        .get("x-image-meta-property-desc")
        .unwrap()
        .as_bytes()
        .to_vec();
    assert_eq!(String::from_utf8(raw).unwrap(), value);
    let detail = json(
        app.get("/v1/images/detail?is_public=none")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(detail["images"][0]["name"], name);
    // Filters accept the same text.
    let q = format!("/v1/images?is_public=none&name={}", percent(name));
    assert_eq!(list_ids(&app, &q, None).await, vec![id.to_owned()]);
}

fn percent(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}
