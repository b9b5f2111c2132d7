//! Spec §5.1, §5.2, §7.3–§7.6: list and detail bodies, filters, sorting, paging, scope.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::*;

const BRIEF_KEYS: &[&str] = &[
    "id",
    "name",
    "disk_format",
    "container_format",
    "checksum",
    "size",
];
const FULL_KEYS: &[&str] = &[
    "id",
    "name",
    "status",
    "size",
    "virtual_size",
    "disk_format",
    "container_format",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "min_disk",
    "min_ram",
    "is_public",
    "protected",
    "owner",
    "created_at",
    "updated_at",
    "deleted_at",
    "deleted",
    "properties",
];

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(k: &[&str]) -> BTreeSet<String> {
    k.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn brief_and_detail_have_exact_key_sets() {
    let app = TestApp::builder()
        .show_image_direct_url(false)
        .spawn()
        .await;
    let data = b"*".repeat(5120);
    let id = app.public_image("Image1", &data).await;
    let list = json(app.get("/v1/images").send().await.unwrap()).await;
    let entry = &list["images"][0];
    assert_eq!(keys(entry), set(BRIEF_KEYS));
    assert_eq!(entry["id"], id.as_str());
    assert_eq!(entry["size"], 5120);
    assert_eq!(entry["checksum"], "c2e5db72bd7fd153f53ede5da5a06de3");
    let detail = json(app.get("/v1/images/detail").send().await.unwrap()).await;
    let entry = &detail["images"][0];
    assert_eq!(keys(entry), set(FULL_KEYS));
    assert_eq!(entry["status"], "active");
    assert_eq!(entry["is_public"], true);
    assert_eq!(entry["deleted"], false);
    assert_eq!(entry["deleted_at"], Value::Null);
    assert_eq!(entry["virtual_size"], Value::Null);
    assert_eq!(entry["owner"], Value::Null);
    assert_eq!(entry["properties"], serde_json::json!({}));
    let created = entry["created_at"].as_str().unwrap();
    // YYYY-MM-DDTHH:MM:SS.ffffff, no zone.
    assert_eq!(created.len(), 26, "{created}");
    assert_eq!(&created[10..11], "T");
    assert_eq!(&created[19..20], ".");
    // Raw body uses Python's separators.
    let text = app
        .get("/v1/images")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.starts_with(r#"{"images": [{""#), "{text}");
    assert!(text.contains(r#""size": 5120"#), "{text}");
    assert!(
        text.contains(r#""name": "Image1", "#) || text.ends_with(r#""name": "Image1"}]}"#),
        "{text}"
    );
}

#[tokio::test]
async fn filters_combine_and_match_exactly() {
    let app = TestApp::spawn().await;
    let a = app
        .create_image(
            &[
                ("x-image-meta-name", "alpha"),
                ("x-image-meta-disk_format", "qcow2"),
                ("x-image-meta-container_format", "bare"),
                ("x-image-meta-is_public", "true"),
                ("x-image-meta-min_ram", "512"),
                ("x-image-meta-min_disk", "10"),
                ("x-image-meta-protected", "true"),
                ("x-image-meta-property-distro", "ubuntu"),
                ("x-image-meta-property-os_type", "linux"),
            ],
            Some(&[1u8; 100]),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = app
        .create_image(
            &[
                ("x-image-meta-name", "beta:x"),
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "ovf"),
                ("x-image-meta-is_public", "true"),
                ("x-image-meta-property-distro", "debian"),
            ],
            Some(&[2u8; 1000]),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = |qs: &str| format!("/v1/images?{qs}");
    assert_eq!(
        list_ids(&app, &q("name=alpha"), None).await,
        vec![a.clone()]
    );
    assert_eq!(
        list_ids(&app, &q("name=Alpha"), None).await,
        Vec::<String>::new()
    );
    assert_eq!(
        list_ids(&app, &q("name=beta%3Ax"), None).await,
        vec![b.clone()]
    );
    assert_eq!(
        list_ids(&app, &q("disk_format=raw"), None).await,
        vec![b.clone()]
    );
    assert_eq!(
        list_ids(&app, &q("container_format=bare"), None).await,
        vec![a.clone()]
    );
    assert_eq!(
        list_ids(&app, &q("status=active&sort_dir=asc"), None).await,
        vec![a.clone(), b.clone()]
    );
    assert_eq!(
        list_ids(&app, &q("status=queued"), None).await,
        Vec::<String>::new()
    );
    assert_eq!(
        list_ids(&app, &q("size_min=101"), None).await,
        vec![b.clone()]
    );
    assert_eq!(
        list_ids(&app, &q("size_min=100&size_max=100"), None).await,
        vec![a.clone()]
    );
    assert_eq!(
        list_ids(&app, &q("size_max=999"), None).await,
        vec![a.clone()]
    );
    assert_eq!(
        list_ids(&app, &q("min_ram=512"), None).await,
        vec![a.clone()]
    );
    assert_eq!(
        list_ids(&app, &q("min_ram=511"), None).await,
        Vec::<String>::new()
    );
    assert_eq!(
        list_ids(&app, &q("min_disk=10"), None).await,
        vec![a.clone()]
    );
    assert_eq!(
        list_ids(&app, &q("protected=true"), None).await,
        vec![a.clone()]
    );
    assert_eq!(
        list_ids(&app, &q("protected=False"), None).await,
        vec![b.clone()]
    );
    assert_eq!(
        list_ids(&app, &q("protected=0"), None).await,
        vec![b.clone()]
    );
    assert_eq!(
        list_ids(&app, &q("property-distro=ubuntu"), None).await,
        vec![a.clone()]
    );
    assert_eq!(
        list_ids(
            &app,
            &q("property-distro=ubuntu&property-os_type=linux"),
            None
        )
        .await,
        vec![a.clone()]
    );
    assert_eq!(
        list_ids(
            &app,
            &q("property-distro=ubuntu&property-os_type=windows"),
            None
        )
        .await,
        Vec::<String>::new()
    );
    // The property key is used exactly as written: stored keys are lower-case.
    assert_eq!(
        list_ids(&app, &q("property-Distro=ubuntu"), None).await,
        Vec::<String>::new()
    );
    assert_eq!(
        list_ids(&app, &q("property-os-type=linux"), None).await,
        Vec::<String>::new()
    );
    // Unknown parameters, `deleted` included, are ignored.
    assert_eq!(
        list_ids(&app, &q("bogus=1&deleted=true"), None).await.len(),
        2
    );
    // Detail takes the same filters.
    assert_eq!(
        list_ids(&app, "/v1/images/detail?name=alpha", None).await,
        vec![a]
    );
}

#[tokio::test]
async fn bad_filter_values_are_400() {
    let app = TestApp::spawn().await;
    for (qs, needle) in [
        ("size_min=x", "Bad value passed to filter size_min got x"),
        ("size_max=-1", "Bad value passed to filter size_max"),
        ("min_ram=1.5", "Bad value passed to filter min_ram"),
        ("min_disk=abc", "Bad value passed to filter min_disk"),
        ("protected=none", "Bad value passed to filter protected"),
        ("protected=yes", "Bad value passed to filter protected"),
        ("is_public=maybe", "Bad value passed to filter is_public"),
        ("changes-since=", "Unrecognized changes-since value"),
        (
            "changes-since=yesterday",
            "Unrecognized changes-since value",
        ),
        ("sort_key=Name", "Unsupported sort_key"),
        ("sort_key=owner", "Unsupported sort_key"),
        ("sort_dir=ASC", "sort_dir"),
        ("limit=-1", "limit param must be positive"),
        ("limit=abc", "limit param must be an integer"),
        ("limit=99999999999999999999999", "limit param"),
        ("marker=nope", "Invalid marker format"),
        (
            "marker=3c1b0d2e-aaaa-4bbb-8ccc-0123456789ab",
            "Invalid marker. Image could not be found.",
        ),
        (
            "size_min=18446744073709551616",
            "Bad value passed to filter size_min",
        ),
    ] {
        for path in ["/v1/images", "/v1/images/detail"] {
            let (code, body) = send(app.get(&format!("{path}?{qs}"))).await;
            assert_eq!(code, 400, "{path}?{qs}: {body}");
            assert!(body.contains(needle), "{qs}: {body}");
        }
    }
}

#[tokio::test]
async fn sort_keys_and_secondary_order_follow_the_direction() {
    let app = TestApp::spawn().await;
    let mut made = vec![];
    for (name, size) in [("b", 30usize), ("a", 10), ("b", 20), ("c", 20)] {
        made.push(app.public_image(name, &vec![0u8; size]).await);
    }
    let (b1, a, b2, c) = (
        made[0].clone(),
        made[1].clone(),
        made[2].clone(),
        made[3].clone(),
    );
    // Default: created_at desc.
    assert_eq!(
        list_ids(&app, "/v1/images", None).await,
        vec![c.clone(), b2.clone(), a.clone(), b1.clone()]
    );
    assert_eq!(
        list_ids(&app, "/v1/images?sort_key=created_at&sort_dir=asc", None).await,
        vec![b1.clone(), a.clone(), b2.clone(), c.clone()]
    );
    // Ties broken by created_at in the same direction.
    assert_eq!(
        list_ids(&app, "/v1/images?sort_key=name&sort_dir=asc", None).await,
        vec![a.clone(), b1.clone(), b2.clone(), c.clone()]
    );
    assert_eq!(
        list_ids(&app, "/v1/images?sort_key=name&sort_dir=desc", None).await,
        vec![c.clone(), b2.clone(), b1.clone(), a.clone()]
    );
    assert_eq!(
        list_ids(&app, "/v1/images?sort_key=size&sort_dir=asc", None).await,
        vec![a.clone(), b2.clone(), c.clone(), b1.clone()]
    );
    assert_eq!(
        list_ids(&app, "/v1/images?sort_key=size", None).await,
        vec![b1.clone(), c.clone(), b2.clone(), a.clone()]
    );
    let mut by_id = made.clone();
    by_id.sort();
    assert_eq!(
        list_ids(&app, "/v1/images?sort_key=id&sort_dir=asc", None).await,
        by_id
    );
    for key in ["status", "container_format", "disk_format", "updated_at"] {
        assert_eq!(
            list_ids(
                &app,
                &format!("/v1/images?sort_key={key}&sort_dir=asc"),
                None
            )
            .await,
            vec![b1.clone(), a.clone(), b2.clone(), c.clone()],
            "{key}"
        );
    }
}

#[tokio::test]
async fn paging_limit_default_clamp_and_exclusive_marker() {
    let app = TestApp::builder().limits(3, 5).spawn().await;
    let mut made = vec![];
    for i in 0..7 {
        made.push(app.public_image(&format!("i{i}"), b"x").await);
    }
    let asc = "/v1/images?sort_dir=asc";
    assert_eq!(list_ids(&app, asc, None).await, made[..3].to_vec());
    assert_eq!(
        list_ids(&app, &format!("{asc}&limit=100"), None).await,
        made[..5].to_vec()
    );
    assert_eq!(
        list_ids(&app, &format!("{asc}&limit=0"), None).await,
        Vec::<String>::new()
    );
    assert_eq!(
        list_ids(&app, &format!("{asc}&limit=2"), None).await,
        made[..2].to_vec()
    );
    // Marker: strictly after, in the requested order.
    assert_eq!(
        list_ids(&app, &format!("{asc}&marker={}", made[2]), None).await,
        made[3..6].to_vec()
    );
    assert_eq!(
        list_ids(
            &app,
            &format!("/v1/images?marker={}&limit=2", made[2]),
            None
        )
        .await,
        vec![made[1].clone(), made[0].clone()]
    );
    assert_eq!(
        list_ids(&app, &format!("{asc}&marker={}", made[6]), None).await,
        Vec::<String>::new()
    );
    // Upper-case spelling of a marker is the same image.
    let upper = made[5].to_uppercase();
    assert_eq!(
        list_ids(&app, &format!("{asc}&marker={upper}"), None).await,
        vec![made[6].clone()]
    );
    // A client paging through everything sees each image once.
    let mut seen = vec![];
    let mut marker: Option<String> = None;
    loop {
        let path = match &marker {
            Some(m) => format!("{asc}&limit=2&marker={m}"),
            None => format!("{asc}&limit=2"),
        };
        let page = list_ids(&app, &path, None).await;
        if page.is_empty() {
            break;
        }
        marker = page.last().cloned();
        seen.extend(page);
    }
    assert_eq!(seen, made);
    // The marker need not match the filters.
    assert_eq!(
        list_ids(&app, &format!("{asc}&name=i4&marker={}", made[1]), None).await,
        vec![made[4].clone()]
    );
}

#[tokio::test]
async fn killed_and_deleted_are_listed_only_with_changes_since() {
    let app = TestApp::spawn().await;
    let live = app.public_image("live", b"abc").await;
    let gone = app.public_image("gone", b"abc").await;
    assert_eq!(status(app.delete(&format!("/v1/images/{gone}"))).await, 200);
    // Wrong content type kills the image.
    let resp = app
        .post("/v1/images")
        .header("x-image-meta-name", "dead")
        .header("x-image-meta-is_public", "true")
        .header("x-image-meta-disk_format", "raw")
        .header("x-image-meta-container_format", "bare")
        .header("content-type", "text/plain")
        .body("data")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let all = app.state().registry.all().await.unwrap();
    let dead = all
        .iter()
        .find(|s| s.record.name.as_deref() == Some("dead"))
        .unwrap()
        .record
        .id
        .to_string();
    assert_eq!(app.status_of(&dead).await, "killed");
    assert_eq!(list_ids(&app, "/v1/images", None).await, vec![live.clone()]);
    assert!(list_ids(&app, "/v1/images?status=killed", None)
        .await
        .is_empty());
    assert!(list_ids(&app, "/v1/images?status=deleted", None)
        .await
        .is_empty());
    let since = "/v1/images/detail?changes-since=2000-01-01&sort_dir=asc";
    let detail = json(app.get(since).send().await.unwrap()).await;
    let got: Vec<(String, String)> = detail["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (live.clone(), "active".to_owned()),
            (gone.clone(), "deleted".to_owned()),
            (dead.clone(), "killed".to_owned())
        ]
    );
    let deleted_entry = &detail["images"][1];
    assert_eq!(deleted_entry["deleted"], true);
    assert!(deleted_entry["deleted_at"].is_string());
    assert_eq!(
        list_ids(
            &app,
            "/v1/images?changes-since=2000-01-01&status=killed",
            None
        )
        .await,
        vec![dead.clone()]
    );
    // Strictly after: a time in the future matches nothing; date-only and offsets are accepted.
    assert!(list_ids(&app, "/v1/images?changes-since=2999-01-01", None)
        .await
        .is_empty());
    assert_eq!(
        list_ids(&app, "/v1/images?changes-since=20000101", None)
            .await
            .len(),
        3
    );
    assert_eq!(
        list_ids(
            &app,
            "/v1/images?changes-since=2000-01-01T10:00:00%2B01:00",
            None
        )
        .await
        .len(),
        3
    );
    // changes-since compares updated_at: only what changed after the live image was updated.
    let live_updated = app.record(&live).await.updated_at;
    let gone_rec = app.record(&gone).await;
    assert!(gone_rec.updated_at > live_updated);
    // A deleted marker is accepted for admins.
    assert_eq!(
        list_ids(
            &app,
            &format!("/v1/images?sort_dir=asc&changes-since=2000-01-01&marker={gone}"),
            None
        )
        .await,
        vec![dead]
    );
}

#[tokio::test]
async fn changes_since_is_strict_on_updated_at() {
    let app = TestApp::spawn().await;
    let first = app.public_image("first", b"a").await;
    let t = app.record(&first).await.updated_at.render();
    let second = app.public_image("second", b"b").await;
    // `t` has no zone: UTC.
    assert_eq!(
        list_ids(&app, &format!("/v1/images?changes-since={t}"), None).await,
        vec![second]
    );
}

#[tokio::test]
async fn admin_is_public_scopes_in_noauth_mode() {
    let app = TestApp::spawn().await;
    let public = app.public_image("pub", b"a").await;
    let private = app
        .create_image(&[("x-image-meta-name", "priv")], None)
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The no-auth admin has no owner: like a user, it lists public images only.
    assert_eq!(
        list_ids(&app, "/v1/images", None).await,
        vec![public.clone()]
    );
    assert_eq!(
        list_ids(&app, "/v1/images?is_public=true", None).await,
        vec![public.clone()]
    );
    assert_eq!(
        list_ids(&app, "/v1/images?is_public=1", None).await,
        vec![public.clone()]
    );
    assert_eq!(
        list_ids(&app, "/v1/images?is_public=None&sort_dir=asc", None).await,
        vec![public.clone(), private.clone()]
    );
    assert_eq!(
        list_ids(&app, "/v1/images?is_public=false", None).await,
        vec![private.clone()]
    );
    assert_eq!(
        list_ids(&app, "/v1/images?is_public=0", None).await,
        vec![private]
    );
}

#[tokio::test]
async fn non_admin_lists_public_own_and_shared() {
    let app = TestApp::builder().trusted_headers().spawn().await;
    let (a, b, admin) = (Who::tenant("ta"), Who::tenant("tb"), Who::admin("tadmin"));
    let mk = |who: Who, name: &'static str, public: bool| {
        let app = &app;
        async move {
            let mut meta = vec![("x-image-meta-name", name)];
            if public {
                meta.push(("x-image-meta-is_public", "true"));
            }
            app.create_image_as(Some(&who), &meta, None).await["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let a_priv = mk(a.clone(), "a-priv", false).await;
    let a_pub = mk(admin.clone(), "admin-pub", true).await;
    let b_priv = mk(b.clone(), "b-priv", false).await;
    let b_shared = mk(b.clone(), "b-shared", false).await;
    // Owner-less private image: created by an admin with an empty owner.
    let ownerless = app
        .create_image_as(
            Some(&admin),
            &[("x-image-meta-name", "nobody"), ("x-image-meta-owner", "")],
            None,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        status(
            app.put(&format!("/v1/images/{b_shared}/members/ta"))
                .who(&b)
        )
        .await,
        204
    );
    let asc = "/v1/images?sort_dir=asc";
    assert_eq!(
        list_ids(&app, asc, Some(&a)).await,
        vec![a_priv.clone(), a_pub.clone(), b_shared.clone()]
    );
    assert_eq!(
        list_ids(&app, asc, Some(&b)).await,
        vec![a_pub.clone(), b_priv.clone(), b_shared.clone()]
    );
    // is_public is validated but ignored for non-admins.
    for qs in ["&is_public=none", "&is_public=false", "&is_public=true"] {
        assert_eq!(
            list_ids(&app, &format!("{asc}{qs}"), Some(&a)).await,
            vec![a_priv.clone(), a_pub.clone(), b_shared.clone()],
            "{qs}"
        );
    }
    assert_eq!(
        status(app.get("/v1/images?is_public=maybe").who(&a)).await,
        400
    );
    // Tenant-less non-admin: public only, even though images are shared.
    assert_eq!(
        list_ids(&app, asc, Some(&Who::nobody())).await,
        vec![a_pub.clone()]
    );
    // Owner-less private images are visible by id but never listed for non-admins.
    assert_eq!(
        status(app.head(&format!("/v1/images/{ownerless}")).who(&a)).await,
        200
    );
    assert!(!list_ids(&app, "/v1/images/detail", Some(&a))
        .await
        .contains(&ownerless));
    // Admin scopes.
    assert_eq!(list_ids(&app, asc, Some(&admin)).await, vec![a_pub.clone()]);
    assert_eq!(
        list_ids(&app, &format!("{asc}&is_public=none"), Some(&admin)).await,
        vec![
            a_priv.clone(),
            a_pub.clone(),
            b_priv.clone(),
            b_shared.clone(),
            ownerless.clone()
        ]
    );
    assert_eq!(
        list_ids(&app, &format!("{asc}&is_public=false"), Some(&admin)).await,
        vec![a_priv.clone(), b_priv.clone(), b_shared.clone(), ownerless]
    );
    // A marker the caller cannot see is unknown.
    let (code, body) = send(app.get(&format!("/v1/images?marker={b_priv}")).who(&a)).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("Invalid marker. Image could not be found."));
    // A deleted marker: admins only.
    assert_eq!(
        status(app.delete(&format!("/v1/images/{a_priv}")).who(&a)).await,
        200
    );
    assert_eq!(
        status(app.get(&format!("/v1/images?marker={a_priv}")).who(&a)).await,
        400
    );
    assert_eq!(
        status(app.get(&format!("/v1/images?marker={a_priv}")).who(&admin)).await,
        200
    );
    assert_eq!(
        list_ids(
            &app,
            &format!("{asc}&changes-since=2000-01-01&marker={a_priv}"),
            Some(&a)
        )
        .await,
        vec![a_pub, b_shared]
    );
}

#[tokio::test]
async fn null_names_sort_as_empty_strings_and_work_as_markers() {
    let app = TestApp::spawn().await;
    let named = app.public_image("a", b"x").await;
    let unnamed = app
        .create_image(&[("x-image-meta-is_public", "true")], None)
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let asc = "/v1/images?sort_key=name&sort_dir=asc";
    assert_eq!(
        list_ids(&app, asc, None).await,
        vec![unnamed.clone(), named.clone()]
    );
    assert_eq!(
        list_ids(&app, &format!("{asc}&marker={unnamed}"), None).await,
        vec![named.clone()]
    );
    assert_eq!(
        list_ids(
            &app,
            &format!("/v1/images?sort_key=name&marker={named}"),
            None
        )
        .await,
        vec![unnamed]
    );
}
