//! Spec §1, §7.1, §7.2, §1.4, §0.8, §0.14, §0.19, §0.23: identity modes, visibility and
//! ownership rules, request ids, header limits and framing.

use crate::common::*;

#[tokio::test]
async fn noauth_callers_are_admins_without_an_owner() {
    let app = TestApp::spawn().await;
    let img = app
        .create_image(&[("x-image-meta-is_public", "true")], None)
        .await;
    assert_eq!(img["owner"], serde_json::Value::Null);
    assert_eq!(img["is_public"], true);
    // Identity headers mean nothing in no-auth mode.
    let img = app
        .create_image_as(Some(&Who::tenant("t1")), &[], None)
        .await;
    assert_eq!(img["owner"], serde_json::Value::Null);
}

#[tokio::test]
async fn trusted_headers_require_confirmation() {
    let app = TestApp::builder().trusted_headers().spawn().await;
    for who in [
        Who {
            confirmed: false,
            ..Who::tenant("t1")
        },
        Who::default(),
    ] {
        let resp = app.get("/v1/images").who(&who).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        assert!(header(&resp, "x-openstack-request-id").is_none());
    }
    assert_eq!(
        status(app.get("/v1/images").header("x-identity-status", "Invalid")).await,
        401
    );
    assert_eq!(
        status(
            app.post("/v1/images")
                .header("x-identity-status", "confirmed")
        )
        .await,
        401
    );
    assert_eq!(status(app.head("/v1/images/x")).await, 401);
    // The version document needs no identity.
    assert_eq!(status(app.get("/versions")).await, 200);
    assert_eq!(status(app.get("/")).await, 300);
    // Confirmed works; aliases of the tenant header count.
    assert_eq!(
        status(app.get("/v1/images").who(&Who::tenant("t1"))).await,
        200
    );
    let img = json(
        app.post("/v1/images")
            .header("x-identity-status", "Confirmed")
            .header("x-project-id", "proj")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(img["image"]["owner"], "proj");
    assert!(app.state().registry.all().await.unwrap().len() == 1);
}

#[tokio::test]
async fn repeated_identity_headers_are_400_and_odd_spellings_ignored() {
    let app = TestApp::builder().trusted_headers().spawn().await;
    for name in [
        "x-identity-status",
        "x-tenant-id",
        "x-project-id",
        "x-tenant",
        "x-user-id",
        "x-user",
        "x-roles",
    ] {
        let value = if name == "x-identity-status" {
            "Confirmed"
        } else {
            "v"
        };
        let resp = app
            .get("/v1/images")
            .header("x-identity-status", "Confirmed")
            .header(name, value)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{name}");
    }
    // `X_Roles: admin` is not the roles header.
    let (code, _) = send(
        app.post("/v1/images")
            .who(&Who::tenant("t1"))
            .header("x_roles", "admin")
            .header("x-image-meta-is_public", "true"),
    )
    .await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn admin_role_is_configurable_and_case_insensitive() {
    let app = TestApp::builder()
        .trusted_headers()
        .admin_role("Cloud-Admin")
        .spawn()
        .await;
    let boss = Who {
        roles: vec!["CLOUD-ADMIN".into()],
        ..Who::tenant("t1")
    };
    let img = app
        .create_image_as(Some(&boss), &[("x-image-meta-is_public", "true")], None)
        .await;
    assert_eq!(img["is_public"], true);
    // The default name is no longer special.
    let (code, _) = send(
        app.post("/v1/images")
            .who(&Who::admin("t2"))
            .header("x-image-meta-is_public", "true"),
    )
    .await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn the_publicize_policy_can_open_public_images_to_everyone() {
    let app = TestApp::builder()
        .trusted_headers()
        .publicize_image(glance_gateway::config::PublicizeImage::Anyone)
        .spawn()
        .await;
    let img = app
        .create_image_as(
            Some(&Who::tenant("t1")),
            &[("x-image-meta-is_public", "true")],
            None,
        )
        .await;
    assert_eq!(img["is_public"], true);
    // Callers without an identity are still refused.
    let (code, _) = send(
        app.post("/v1/images")
            .header("x-image-meta-is_public", "true"),
    )
    .await;
    assert_eq!(code, 401);
}

#[tokio::test]
async fn anonymous_access_is_read_only() {
    let app = TestApp::builder()
        .trusted_headers()
        .allow_anonymous_access(true)
        .spawn()
        .await;
    let admin = Who::admin("adm");
    let public = app
        .create_image_as(Some(&admin), &[("x-image-meta-is_public", "true")], None)
        .await;
    let id = public["id"].as_str().unwrap();
    let private = app
        .create_image_as(Some(&Who::tenant("t1")), &[], None)
        .await;
    assert_eq!(
        list_ids(&app, "/v1/images", None).await,
        vec![id.to_owned()]
    );
    assert_eq!(status(app.head(&format!("/v1/images/{id}"))).await, 200);
    assert_eq!(
        status(app.head(&format!("/v1/images/{}", private["id"].as_str().unwrap()))).await,
        404
    );
    for req in [
        app.post("/v1/images"),
        app.put(&format!("/v1/images/{id}"))
            .header("x-image-meta-name", "x"),
        app.delete(&format!("/v1/images/{id}")),
        app.put(&format!("/v1/images/{id}/members/t1")),
        app.delete(&format!("/v1/images/{id}/members/t1")),
        app.put(&format!("/v1/images/{id}/members"))
            .body("{\"memberships\": []}"),
    ] {
        let (code, body) = send(req).await;
        assert_eq!(code, 403, "{body}");
        assert!(body.contains("Read-only access"), "{body}");
    }
}

#[tokio::test]
async fn visibility_and_modify_rules() {
    let app = TestApp::builder().trusted_headers().spawn().await;
    let (owner, other, admin) = (Who::tenant("t1"), Who::tenant("t2"), Who::admin("adm"));
    let private = app.create_image_as(Some(&owner), &[], None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let public = app
        .create_image_as(
            Some(&admin),
            &[
                ("x-image-meta-is_public", "true"),
                ("x-image-meta-owner", "t1"),
            ],
            None,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shared = app.create_image_as(Some(&owner), &[], None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        status(
            app.put(&format!("/v1/images/{shared}/members/t2"))
                .who(&owner)
        )
        .await,
        204
    );
    let ownerless = app
        .create_image_as(Some(&admin), &[("x-image-meta-owner", "")], None)
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = |id: &str| format!("/v1/images/{id}");
    // Private, not shared: invisible → 404 for everything.
    assert_eq!(status(app.head(&p(&private)).who(&other)).await, 404);
    assert_eq!(status(app.get(&p(&private)).who(&other)).await, 404);
    assert_eq!(
        status(
            app.put(&p(&private))
                .who(&other)
                .header("x-image-meta-name", "x")
        )
        .await,
        404
    );
    assert_eq!(status(app.delete(&p(&private)).who(&other)).await, 404);
    assert_eq!(
        status(app.get(&format!("{}/members", p(&private))).who(&other)).await,
        404
    );
    // Public, not owned: readable, 403 on modify and delete.
    assert_eq!(status(app.head(&p(&public)).who(&other)).await, 200);
    assert_eq!(
        status(
            app.put(&p(&public))
                .who(&other)
                .header("x-image-meta-name", "x")
        )
        .await,
        403
    );
    assert_eq!(status(app.delete(&p(&public)).who(&other)).await, 403);
    // Shared with the caller: readable, 404 on modify and delete (never 500).
    assert_eq!(status(app.head(&p(&shared)).who(&other)).await, 200);
    assert_eq!(
        status(
            app.put(&p(&shared))
                .who(&other)
                .header("x-image-meta-name", "x")
        )
        .await,
        404
    );
    assert_eq!(status(app.delete(&p(&shared)).who(&other)).await, 404);
    // Owner-less private: visible by id to anyone, modifiable by admins only.
    assert_eq!(status(app.head(&p(&ownerless)).who(&other)).await, 200);
    assert_eq!(
        status(
            app.put(&p(&ownerless))
                .who(&other)
                .header("x-image-meta-name", "x")
        )
        .await,
        404
    );
    assert_eq!(
        status(
            app.put(&p(&ownerless))
                .who(&admin)
                .header("x-image-meta-name", "x")
        )
        .await,
        200
    );
    // Owners and admins may change and delete.
    assert_eq!(
        status(
            app.put(&p(&public))
                .who(&owner)
                .header("x-image-meta-name", "mine")
        )
        .await,
        200
    );
    assert_eq!(
        status(
            app.put(&p(&private))
                .who(&admin)
                .header("x-image-meta-name", "adm")
        )
        .await,
        200
    );
    assert_eq!(status(app.delete(&p(&shared)).who(&owner)).await, 200);
    assert_eq!(status(app.delete(&p(&private)).who(&admin)).await, 200);
    // Unchanged records after the refused calls.
    assert_eq!(app.record(&public).await.name.as_deref(), Some("mine"));
}

#[tokio::test]
async fn request_ids() {
    let app = TestApp::spawn().await;
    let resp = app.get("/v1/images").send().await.unwrap();
    let id = header(&resp, "x-openstack-request-id").unwrap();
    let uuid = id.strip_prefix("req-").expect("req- prefix");
    assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{id}");
    let other = header(
        &app.get("/v1/images").send().await.unwrap(),
        "x-openstack-request-id",
    )
    .unwrap();
    assert_ne!(id, other);
    let resp = app
        .get("/v1/images")
        .header("x-openstack-request-id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&resp, "x-openstack-request-id").as_deref(),
        Some("req-abc")
    );
    let resp = app
        .get("/v1/images")
        .header("X-Openstack-Request-ID", "req-xyz")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&resp, "x-openstack-request-id").as_deref(),
        Some("req-xyz")
    );
    // On errors too.
    let resp = app
        .get("/v1/images/nope")
        .header("x-openstack-request-id", "e1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(
        header(&resp, "x-openstack-request-id").as_deref(),
        Some("req-e1")
    );
    let ok64 = "r".repeat(64);
    assert_eq!(
        status(
            app.get("/v1/images")
                .header("x-openstack-request-id", &ok64)
        )
        .await,
        200
    );
    let resp = app
        .get("/v1/images")
        .header("x-openstack-request-id", "r".repeat(65))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 431);
    assert_eq!(
        status(
            app.post("/v1/images")
                .header("x-openstack-request-id", "r".repeat(65))
        )
        .await,
        431
    );
    assert!(app.state().registry.all().await.unwrap().is_empty());
}

fn request_with_headers(extra: &[String]) -> Vec<u8> {
    let mut req =
        String::from("GET /v1/images HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

#[tokio::test]
async fn header_limits_256_lines_and_64_kib() {
    let app = TestApp::spawn().await;
    // Host + Connection + 254 = 256 lines.
    let lines: Vec<String> = (0..254).map(|i| format!("x-filler-{i}: v")).collect();
    let resp = app.raw(&request_with_headers(&lines)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), r#"{"images": []}"#);
    let lines: Vec<String> = (0..255).map(|i| format!("x-filler-{i}: v")).collect();
    assert_eq!(app.raw(&request_with_headers(&lines)).await.status, 431);
    // Just under 64 KiB in total.
    let lines: Vec<String> = (0..200)
        .map(|i| format!("x-f{i:03}: {}", "v".repeat(300)))
        .collect();
    let total: usize = lines.iter().map(|l| l.len() + 2).sum();
    assert!(total < 64 * 1024 - 200, "{total}");
    assert_eq!(app.raw(&request_with_headers(&lines)).await.status, 200);
    // Over 64 KiB.
    let lines: Vec<String> = (0..220)
        .map(|i| format!("x-f{i:03}: {}", "v".repeat(300)))
        .collect();
    assert_eq!(app.raw(&request_with_headers(&lines)).await.status, 431);
    let lines = vec![format!("x-big: {}", "v".repeat(70 * 1024))];
    assert_eq!(app.raw(&request_with_headers(&lines)).await.status, 431);
    // 128 property headers fit in one POST.
    let lines: Vec<String> = (0..128)
        .map(|i| format!("x-image-meta-property-p{i}: {}", "v".repeat(200)))
        .collect();
    let mut req = String::from(
        "POST /v1/images HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n",
    );
    for l in &lines {
        req.push_str(l);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    let resp = app.raw(req.as_bytes()).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
}

#[tokio::test]
async fn conflicting_content_length_is_400() {
    let app = TestApp::spawn().await;
    let resp = app
        .raw(b"POST /v1/images HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 4\r\nContent-Length: 5\r\nContent-Type: application/octet-stream\r\n\r\nabcde")
        .await;
    assert_eq!(resp.status, 400);
    assert!(app.state().registry.all().await.unwrap().is_empty());
}

#[tokio::test]
async fn no_method_override() {
    let app = TestApp::spawn().await;
    let id = app.public_image("keep", b"x").await;
    let path = format!("/v1/images/{id}");
    assert_eq!(
        status(app.get(&format!("{path}?_method=DELETE"))).await,
        200
    );
    assert_eq!(
        status(app.post(&path).header("x-http-method-override", "DELETE")).await,
        405
    );
    assert_eq!(app.status_of(&id).await, "active");
}

#[tokio::test]
async fn header_aliases_and_role_spelling() {
    let app = TestApp::builder().trusted_headers().spawn().await;
    let img = json(
        app.post("/v1/images")
            .header("x-identity-status", "Confirmed")
            .header("x-tenant", "legacy")
            .header("x-roles", " Member , ADMIN ")
            .header("x-image-meta-is_public", "true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(img["image"]["owner"], "legacy");
    assert_eq!(img["image"]["is_public"], true);
}

#[tokio::test]
async fn head_errors_have_no_body() {
    let app = TestApp::spawn().await;
    let missing = uuid::Uuid::new_v4();
    let resp = app
        .raw(format!("HEAD /v1/images/{missing} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await;
    assert_eq!(resp.status, 404);
    assert!(resp.body.is_empty(), "{}", resp.text());
    let resp = app
        .raw(b"HEAD /v1/images/detail HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("GET"));
    assert!(resp.body.is_empty());
}

#[tokio::test]
async fn aliases_with_different_values_are_400() {
    let app = TestApp::builder().trusted_headers().spawn().await;
    let id = app
        .create_image_as(
            Some(&Who::tenant("a")),
            &[("x-image-meta-name", "a's")],
            None,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/images/{id}");
    let conflicts: &[&[(&str, &str)]] = &[
        &[("x-tenant-id", "b"), ("x-project-id", "a")],
        &[("x-tenant-id", "b"), ("x-tenant", "a")],
        &[("x-project-id", "b"), ("x-tenant", "a")],
        &[("x-tenant-id", "a"), ("x-user-id", "u"), ("x-user", "v")],
    ];
    for headers in conflicts {
        let mut req = app
            .get(&path)
            .header("x-identity-status", "Confirmed")
            .header("x-roles", "member");
        for (n, v) in *headers {
            req = req.header(*n, *v);
        }
        let (code, body) = send(req).await;
        assert_eq!(code, 400, "{headers:?}: {body}");
        assert!(body.contains("Conflicting identity headers"), "{body}");
    }
    // Aliases that agree are one identity.
    let (code, _) = send(
        app.head(&path)
            .header("x-identity-status", "Confirmed")
            .header("x-tenant-id", "a")
            .header("x-project-id", "a")
            .header("x-user-id", "u-a")
            .header("x-user", "u-a"),
    )
    .await;
    assert_eq!(code, 200);
}
