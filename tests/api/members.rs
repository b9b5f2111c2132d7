//! Spec §6: memberships and shared-images, with the seed document's examples.

use serde_json::json;

use crate::common::*;

struct Setup {
    app: TestApp,
    owner: Who,
    id: String,
}

async fn setup() -> Setup {
    let app = TestApp::builder().trusted_headers().spawn().await;
    let owner = Who::tenant("owner");
    let id = app
        .create_image_as(Some(&owner), &[("x-image-meta-name", "private")], None)
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    Setup { app, owner, id }
}

#[tokio::test]
async fn seed_walk_through_add_list_share_remove() {
    let Setup { app, owner, id } = setup().await;
    let members = format!("/images/{id}/members");
    // Add without a body: can_share false.
    let resp = app
        .put(&format!("{members}/tenant1"))
        .who(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert!(resp.bytes().await.unwrap().is_empty());
    let list = json(app.get(&members).who(&owner).send().await.unwrap()).await;
    assert_eq!(
        list,
        json!({"members": [{"member_id": "tenant1", "can_share": false}]})
    );
    // With a body, can_share is set for existing and new members.
    let body = json!({"member": {"can_share": true}});
    assert_eq!(
        status(
            app.put(&format!("{members}/tenant1"))
                .who(&owner)
                .json(&body)
        )
        .await,
        204
    );
    assert_eq!(
        status(
            app.put(&format!("{members}/tenant2"))
                .who(&owner)
                .json(&body)
        )
        .await,
        204
    );
    // Without a body an existing member is unchanged; a body without `member` is like none.
    assert_eq!(
        status(app.put(&format!("{members}/tenant1")).who(&owner)).await,
        204
    );
    assert_eq!(
        status(
            app.put(&format!("{members}/tenant1"))
                .who(&owner)
                .json(&json!({"x": 1}))
        )
        .await,
        204
    );
    let list = json(app.get(&members).who(&owner).send().await.unwrap()).await;
    assert_eq!(
        list,
        json!({"members": [
            {"member_id": "tenant1", "can_share": true},
            {"member_id": "tenant2", "can_share": true}
        ]})
    );
    // Shared images of tenant1, asked by tenant1.
    let t1 = Who::tenant("tenant1");
    let shared = json(
        app.get("/shared-images/tenant1")
            .who(&t1)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        shared,
        json!({"shared_images": [{"image_id": id, "can_share": true}]})
    );
    // The member now sees the image.
    assert_eq!(
        status(app.head(&format!("/images/{id}")).who(&t1)).await,
        200
    );
    // Remove.
    let resp = app
        .delete(&format!("{members}/tenant1"))
        .who(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let (code, body) = send(app.delete(&format!("{members}/tenant1")).who(&owner)).await;
    assert_eq!(code, 404);
    assert!(body.contains("Membership could not be found."), "{body}");
    assert_eq!(
        status(app.head(&format!("/images/{id}")).who(&t1)).await,
        404
    );
    let shared = json(
        app.get("/shared-images/tenant1")
            .who(&t1)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(shared, json!({"shared_images": []}));
    // A removed member can be added again and is listed once.
    assert_eq!(
        status(app.put(&format!("{members}/tenant1")).who(&owner)).await,
        204
    );
    let list = json(app.get(&members).who(&owner).send().await.unwrap()).await;
    assert_eq!(list["members"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn replacing_the_list() {
    let Setup { app, owner, id } = setup().await;
    let members = format!("/v1/images/{id}/members");
    for (m, share) in [("a", true), ("b", false), ("c", true)] {
        let body = json!({"member": {"can_share": share}});
        assert_eq!(
            status(app.put(&format!("{members}/{m}")).who(&owner).json(&body)).await,
            204
        );
    }
    let body = json!({"memberships": [
        {"member_id": "a"},
        {"member_id": "b", "can_share": true},
        {"member_id": "d"},
        {"member_id": "e", "can_share": true}
    ]});
    let resp = app
        .put(&members)
        .who(&owner)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let list = json(app.get(&members).who(&owner).send().await.unwrap()).await;
    assert_eq!(
        list,
        json!({"members": [
            {"member_id": "a", "can_share": true},
            {"member_id": "b", "can_share": true},
            {"member_id": "d", "can_share": false},
            {"member_id": "e", "can_share": true}
        ]})
    );
    // An empty list removes everyone.
    assert_eq!(
        status(
            app.put(&members)
                .who(&owner)
                .json(&json!({"memberships": []}))
        )
        .await,
        204
    );
    let list = json(app.get(&members).who(&owner).send().await.unwrap()).await;
    assert_eq!(list, json!({"members": []}));
}

#[tokio::test]
async fn bad_member_bodies() {
    let Setup { app, owner, id } = setup().await;
    let members = format!("/v1/images/{id}/members");
    for (body, needle) in [
        ("", ""),
        ("not json", "Malformed JSON in request body."),
        ("[1, 2]", "Invalid membership association"),
        ("{\"memberships\": 5}", "Invalid membership association"),
        ("{\"other\": []}", "Invalid membership association"),
        (
            "{\"memberships\": [{\"can_share\": true}]}",
            "Invalid membership association",
        ),
        ("{\"memberships\": [{\"member_id\": \"a/b\"}]}", ""),
        ("{\"memberships\": [{\"member_id\": \"\"}]}", ""),
        ("{\"memberships\": [{\"member_id\": \"\u{1F600}\"}]}", ""),
    ] {
        let (code, text) = send(app.put(&members).who(&owner).body(body)).await;
        assert_eq!(code, 400, "{body}: {text}");
        assert!(text.contains(needle), "{body}: {text}");
    }
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let (code, _) = send(
        app.put(&members)
            .who(&owner)
            .body(format!("{{\"memberships\": {deep}}}")),
    )
    .await;
    assert_eq!(code, 400);
    let huge = format!(
        "{{\"memberships\": [], \"pad\": \"{}\"}}",
        "x".repeat(1 << 20)
    );
    assert_eq!(status(app.put(&members).who(&owner).body(huge)).await, 413);
    let (code, _) = send(app.put(&format!("{members}/m1")).who(&owner).body("{bad")).await;
    assert_eq!(code, 400);
    // Member ids in the path: control characters, too long, 4-byte UTF-8.
    for bad in ["a%0Ab", &"m".repeat(256), "%F0%9F%98%80"] {
        assert_eq!(
            status(app.put(&format!("{members}/{bad}")).who(&owner)).await,
            400,
            "{bad}"
        );
    }
    assert_eq!(
        status(
            app.put(&format!("{members}/{}", "m".repeat(255)))
                .who(&owner)
        )
        .await,
        204
    );
    assert!(app.stored(&id).await.members.len() == 1);
}

#[tokio::test]
async fn who_may_change_members() {
    let Setup { app, owner, id } = setup().await;
    let members = format!("/v1/images/{id}/members");
    assert_eq!(
        status(
            app.put(&format!("{members}/sharer"))
                .who(&owner)
                .json(&json!({"member": {"can_share": true}}))
        )
        .await,
        204
    );
    assert_eq!(
        status(app.put(&format!("{members}/viewer")).who(&owner)).await,
        204
    );
    let (sharer, viewer, stranger) = (
        Who::tenant("sharer"),
        Who::tenant("viewer"),
        Who::tenant("stranger"),
    );
    // A member with can_share may manage members; one without gets 404; a stranger too.
    assert_eq!(
        status(app.put(&format!("{members}/third")).who(&sharer)).await,
        204
    );
    assert_eq!(
        status(app.put(&format!("{members}/fourth")).who(&viewer)).await,
        404
    );
    assert_eq!(
        status(app.delete(&format!("{members}/third")).who(&viewer)).await,
        404
    );
    assert_eq!(
        status(app.put(&format!("{members}/x")).who(&stranger)).await,
        404
    );
    assert_eq!(
        status(
            app.put(&members)
                .who(&viewer)
                .json(&json!({"memberships": []}))
        )
        .await,
        404
    );
    // Tenant-less non-admin: 401 before anything else.
    let (code, body) = send(app.put(&format!("{members}/x")).who(&Who::nobody())).await;
    assert_eq!(code, 401);
    assert!(body.contains("No authenticated user"), "{body}");
    assert_eq!(
        status(app.delete(&format!("{members}/x")).who(&Who::nobody())).await,
        401
    );
    assert_eq!(
        status(
            app.put(&members)
                .who(&Who::nobody())
                .json(&json!({"memberships": []}))
        )
        .await,
        401
    );
    let missing = uuid::Uuid::new_v4();
    assert_eq!(
        status(
            app.put(&format!("/v1/images/{missing}/members/x"))
                .who(&Who::nobody())
        )
        .await,
        401
    );
    // Admins may.
    assert_eq!(
        status(
            app.put(&format!("{members}/byadmin"))
                .who(&Who::admin("adm"))
        )
        .await,
        204
    );
    // Listing is filtered for non-owners.
    let all = json(app.get(&members).who(&owner).send().await.unwrap()).await;
    assert_eq!(all["members"].as_array().unwrap().len(), 4);
    let mine = json(app.get(&members).who(&viewer).send().await.unwrap()).await;
    assert_eq!(
        mine,
        json!({"members": [{"member_id": "viewer", "can_share": false}]})
    );
    assert_eq!(status(app.get(&members).who(&stranger)).await, 404);
    // Shared-images: only memberships the caller owns or that name the caller.
    let shared = json(
        app.get("/v1/shared-images/viewer")
            .who(&stranger)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(shared, json!({"shared_images": []}));
    let shared = json(
        app.get("/v1/shared-images/viewer")
            .who(&owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(shared["shared_images"].as_array().unwrap().len(), 1);
    let shared = json(
        app.get("/v1/shared-images/viewer")
            .who(&Who::admin("adm"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(shared["shared_images"].as_array().unwrap().len(), 1);
    let shared = json(
        app.get("/v1/shared-images/unknown")
            .who(&owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(shared, json!({"shared_images": []}));
}

#[tokio::test]
async fn public_images_can_be_shared_and_strangers_see_no_members() {
    let app = TestApp::builder().trusted_headers().spawn().await;
    let admin = Who::admin("adm");
    let id = app
        .create_image_as(Some(&admin), &[("x-image-meta-is_public", "true")], None)
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let members = format!("/v1/images/{id}/members");
    assert_eq!(
        status(app.put(&format!("{members}/t1")).who(&admin)).await,
        204
    );
    let list = json(
        app.get(&members)
            .who(&Who::tenant("t2"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list, json!({"members": []}));
}

#[tokio::test]
async fn member_calls_on_deleted_or_missing_images_are_404() {
    let Setup { app, owner, id } = setup().await;
    let members = format!("/v1/images/{id}/members");
    assert_eq!(
        status(app.put(&format!("{members}/t1")).who(&owner)).await,
        204
    );
    assert_eq!(
        status(app.delete(&format!("/v1/images/{id}")).who(&owner)).await,
        200
    );
    let admin = Who::admin("adm");
    let (code, body) = send(app.get(&members).who(&admin)).await;
    assert_eq!(code, 404);
    assert!(body.contains("has been deleted"), "{body}");
    assert_eq!(
        status(app.put(&format!("{members}/t2")).who(&admin)).await,
        404
    );
    assert_eq!(
        status(app.delete(&format!("{members}/t1")).who(&admin)).await,
        404
    );
    assert_eq!(
        status(
            app.put(&members)
                .who(&admin)
                .json(&json!({"memberships": []}))
        )
        .await,
        404
    );
    assert_eq!(status(app.get(&members).who(&owner)).await, 404);
    // Memberships of deleted images are gone.
    let shared = json(
        app.get("/v1/shared-images/t1")
            .who(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(shared, json!({"shared_images": []}));
    assert!(app.stored(&id).await.members.is_empty());
    let missing = uuid::Uuid::new_v4();
    assert_eq!(
        status(
            app.get(&format!("/v1/images/{missing}/members"))
                .who(&admin)
        )
        .await,
        404
    );
}

#[tokio::test]
async fn members_by_user_when_owner_is_not_tenant() {
    let app = TestApp::builder()
        .trusted_headers()
        .owner_is_tenant(false)
        .spawn()
        .await;
    let alice = Who::tenant("shared-tenant").user("alice");
    let bob = Who::tenant("shared-tenant").user("bob");
    let img = app.create_image_as(Some(&alice), &[], None).await;
    assert_eq!(img["owner"], "alice");
    let id = img["id"].as_str().unwrap();
    // Same tenant, other user: not the owner.
    assert_eq!(
        status(app.head(&format!("/v1/images/{id}")).who(&bob)).await,
        404
    );
    assert_eq!(
        status(app.put(&format!("/v1/images/{id}/members/bob")).who(&alice)).await,
        204
    );
    assert_eq!(
        status(app.head(&format!("/v1/images/{id}")).who(&bob)).await,
        200
    );
    assert_eq!(
        list_ids(&app, "/v1/images", Some(&bob)).await,
        vec![id.to_owned()]
    );
}

#[tokio::test]
async fn can_share_words_and_shared_images_head() {
    let Setup { app, owner, id } = setup().await;
    let members = format!("/v1/images/{id}/members");
    let body = json!({"memberships": [
        {"member_id": "a", "can_share": "false"},
        {"member_id": "b", "can_share": "yes"},
        {"member_id": "c", "can_share": 1}
    ]});
    assert_eq!(status(app.put(&members).who(&owner).json(&body)).await, 204);
    let list = json(app.get(&members).who(&owner).send().await.unwrap()).await;
    assert_eq!(
        list,
        json!({"members": [
            {"member_id": "a", "can_share": false},
            {"member_id": "b", "can_share": true},
            {"member_id": "c", "can_share": true}
        ]})
    );
    let resp = app
        .head("/v1/shared-images/a")
        .who(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.bytes().await.unwrap().is_empty());
}

/// `{"memberships": [...]}` naming `count` distinct members (each `m-<i>`).
fn many_members(count: usize) -> String {
    let entries: Vec<String> = (0..count)
        .map(|i| format!(r#"{{"member_id":"m-{i}","can_share":false}}"#))
        .collect();
    format!(r#"{{"memberships":[{}]}}"#, entries.join(","))
}

#[tokio::test]
async fn replacement_checks_the_caller_and_image_before_the_body() {
    let Setup { app, owner, id } = setup().await;
    let stranger = Who::tenant("stranger");
    // Someone who cannot change the members gets 404 whatever the body holds.
    for body in ["not json", "{}", &many_members(2000)] {
        let (code, _) = send(
            app.put(&format!("/v1/images/{id}/members"))
                .who(&stranger)
                .body(body.to_owned()),
        )
        .await;
        assert_eq!(code, 404, "{body:.20}");
    }
    let (code, _) = send(
        app.put("/v1/images/00000000-0000-4000-8000-000000000000/members")
            .who(&owner)
            .body("not json"),
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn replacement_stops_one_past_the_quota_and_dedups_in_linear_time() {
    let app = TestApp::builder()
        .trusted_headers()
        .image_member_quota(5)
        .spawn()
        .await;
    let owner = Who::tenant("owner");
    let id = app
        .create_image_as(Some(&owner), &[("x-image-meta-name", "q")], None)
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/images/{id}/members");
    let (code, body) = send(app.put(&path).who(&owner).body(many_members(6))).await;
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("Attempted: 6, Maximum: 5"), "{body}");
    // Duplicates are one member each: five members named many times fit.
    let mut entries = vec![];
    for round in 0..2000 {
        for i in 0..5 {
            entries.push(format!(
                r#"{{"member_id":"m-{i}","can_share":{}}}"#,
                round % 2 == 0
            ));
        }
    }
    let body = format!(r#"{{"memberships":[{}]}}"#, entries.join(","));
    let (code, text) = send(app.put(&path).who(&owner).body(body)).await;
    assert_eq!(code, 204, "{text}");
    let listed = json(app.get(&path).who(&owner).send().await.unwrap()).await;
    assert_eq!(listed["members"].as_array().unwrap().len(), 5);
    // The later can_share wins (the last round is odd: false).
    assert_eq!(listed["members"][0]["can_share"], false);

    // A body just under 1 MiB of 20,000 distinct members answers 413 at once under the default
    // quota, and is stored whole with no quota.
    let huge = many_members(20_000);
    for (quota, want) in [(128, 413), (-1, 204)] {
        let app = TestApp::builder()
            .trusted_headers()
            .image_member_quota(quota)
            .spawn()
            .await;
        let id = app
            .create_image_as(Some(&owner), &[("x-image-meta-name", "big")], None)
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let started = std::time::Instant::now();
        let (code, text) = send(
            app.put(&format!("/v1/images/{id}/members"))
                .who(&owner)
                .body(huge.clone()),
        )
        .await;
        let took = started.elapsed();
        assert_eq!(code, want, "{quota}: {text}");
        // Reading stops at member 129; the whole quadratic scan took seconds.
        if quota >= 0 {
            assert!(took.as_secs_f64() < 1.5, "took {took:?}");
        }
    }
}
