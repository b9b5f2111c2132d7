//! Spec §11: property protection from a rules file — create, read, update and delete per role.

use crate::common::*;

const RULES: &str = "
[^x_billing_.*]
create = admin,billing
read = admin,billing
update = admin
delete = admin

[^x_secret_.*]
create = admin
read = admin
update = admin
delete = admin

[.*]
create = @
read = @
update = @
delete = @
";

async fn app() -> TestApp {
    TestApp::builder()
        .trusted_headers()
        .property_rules(RULES)
        .spawn()
        .await
}

fn billing() -> Who {
    Who {
        roles: vec!["billing".into()],
        ..Who::tenant("t1")
    }
}

#[tokio::test]
async fn create_needs_the_create_role() {
    let app = app().await;
    let (code, body) = send(
        app.post("/v1/images")
            .who(&Who::tenant("t1"))
            .header("x-image-meta-property-x_billing_code", "42"),
    )
    .await;
    assert_eq!(code, 403);
    assert!(
        body.contains("Property 'x_billing_code' is protected"),
        "{body}"
    );
    let img = app
        .create_image_as(
            Some(&billing()),
            &[
                ("x-image-meta-property-x_billing_code", "42"),
                ("x-image-meta-property-os", "linux"),
            ],
            None,
        )
        .await;
    assert_eq!(img["properties"]["x_billing_code"], "42");
}

#[tokio::test]
async fn unreadable_properties_are_hidden_and_survive_a_purge() {
    let app = app().await;
    let admin = Who::admin("t1");
    let img = app
        .create_image_as(
            Some(&admin),
            &[
                ("x-image-meta-property-x_secret_key", "s3cr3t"),
                ("x-image-meta-property-os", "linux"),
            ],
            None,
        )
        .await;
    let id = img["id"].as_str().unwrap().to_owned();
    let owner = Who::tenant("t1");
    // The owner sees everything but the secret, in headers, detail lists and PUT answers.
    let head = app
        .head(&format!("/v1/images/{id}"))
        .who(&owner)
        .send()
        .await
        .unwrap();
    assert!(header(&head, "x-image-meta-property-x_secret_key").is_none());
    assert_eq!(
        header(&head, "x-image-meta-property-os").as_deref(),
        Some("linux")
    );
    let detail = app
        .get("/v1/images/detail")
        .who(&owner)
        .send()
        .await
        .unwrap();
    assert!(!detail.text().await.unwrap().contains("s3cr3t"));
    // Filtering on it reveals nothing.
    let ids = list_ids(
        &app,
        "/v1/images/detail?property-x_secret_key=s3cr3t",
        Some(&owner),
    )
    .await;
    assert!(ids.is_empty());
    // A purging PUT keeps what the caller cannot read, and does not show it.
    let resp = app
        .put(&format!("/v1/images/{id}"))
        .who(&owner)
        .header("x-image-meta-property-os", "bsd")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(header(&resp, "x-image-meta-property-x_secret_key").is_none());
    let body = json(resp).await;
    assert!(body["image"]["properties"].get("x_secret_key").is_none());
    let stored = app.record(&id).await;
    assert_eq!(stored.properties["x_secret_key"].as_deref(), Some("s3cr3t"));
    assert_eq!(stored.properties["os"].as_deref(), Some("bsd"));
    // Touching it without read access is refused.
    let (code, _) = send(
        app.put(&format!("/v1/images/{id}"))
            .who(&owner)
            .header("x-image-meta-property-x_secret_key", "guess"),
    )
    .await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn update_and_delete_need_their_roles() {
    let app = app().await;
    let img = app
        .create_image_as(
            Some(&billing()),
            &[("x-image-meta-property-x_billing_code", "42")],
            None,
        )
        .await;
    let id = img["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/images/{id}");
    // Same value: fine (read is enough); a new value needs update.
    let (code, _) = send(
        app.put(&path)
            .who(&billing())
            .header("x-image-meta-property-x_billing_code", "42"),
    )
    .await;
    assert_eq!(code, 200);
    let (code, body) = send(
        app.put(&path)
            .who(&billing())
            .header("x-image-meta-property-x_billing_code", "43"),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    // Dropping it by a purge needs delete.
    let (code, _) = send(
        app.put(&path)
            .who(&billing())
            .header("x-image-meta-name", "n"),
    )
    .await;
    assert_eq!(code, 403);
    let (code, _) = send(
        app.put(&path)
            .who(&billing())
            .header("x-image-meta-name", "n")
            .header("x-glance-registry-purge-props", "false"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        app.record(&id).await.properties["x_billing_code"].as_deref(),
        Some("42")
    );
}

#[tokio::test]
async fn percent_encoded_or_upper_case_keys_meet_the_same_rules() {
    let app = app().await;
    let id = app
        .create_image_as(
            Some(&Who::tenant("t1")),
            &[("x-image-meta-name", "p")],
            None,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // `%58` is `X`: decoded and lower-cased, the key is `x_secret_a`, which only admins create.
    for name in [
        "x-image-meta-property-%58_secret_a",
        "x-image-meta-property-%78_secret_a",
        "x-image-meta-property-x%5Fsecret%5Fa",
    ] {
        let (code, body) = send(
            app.post("/v1/images")
                .who(&Who::tenant("t1"))
                .header(name, "1"),
        )
        .await;
        assert_eq!(code, 403, "{name}: {body}");
        let (code, body) = send(
            app.put(&format!("/v1/images/{id}"))
                .who(&Who::tenant("t1"))
                .header(name, "1"),
        )
        .await;
        assert_eq!(code, 403, "{name}: {body}");
    }
    // A control character in a key is refused.
    let (code, _) = send(
        app.post("/v1/images")
            .who(&Who::tenant("t1"))
            .header("x-image-meta-property-a%0Ab", "1"),
    )
    .await;
    assert_eq!(code, 400);
    // An admin's encoded key is stored under its canonical spelling.
    let img = app
        .create_image_as(
            Some(&Who::admin("t1")),
            &[("x-image-meta-property-%58_SECRET_b", "1")],
            None,
        )
        .await;
    assert_eq!(img["properties"]["x_secret_b"], "1");
}
