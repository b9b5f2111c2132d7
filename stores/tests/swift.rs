//! The Swift store against a real Swift (start one with `scripts/swift-backend.sh start`).
//! Skipped unless `GATEWAY_TEST_SWIFT_AUTH_URL`, `GATEWAY_TEST_SWIFT_USER` and
//! `GATEWAY_TEST_SWIFT_KEY` are set (failed instead with `GATEWAY_TEST_REQUIRE_BACKENDS=1`, as in
//! CI). Every test works in containers of its own, and checks what Swift holds through its own
//! raw client rather than through the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stores::swift::{SwiftStore, SwiftStoreConfig};
use stores::testing::{self, body_from, failing_body, pattern, read_all};
use stores::{put_digested, ObjectKey, PutError, PutOptions, Store, StoreError, StoreName};

const SEG: usize = 64 * 1024;

use stores::test_backends::{SwiftRaw as Raw, SwiftTestEnv as Env};

fn env() -> Option<Env> {
    Env::from_env()
}

macro_rules! swift_env {
    () => {
        match env() {
            Some(e) => e,
            None => {
                eprintln!(
                    "skipping: GATEWAY_TEST_SWIFT_AUTH_URL is not set \
                     (eval \"$(scripts/swift-backend.sh start)\")"
                );
                return;
            }
        }
    };
}

fn unique(label: &str) -> String {
    format!(
        "gw-{label}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn key(label: &str) -> ObjectKey {
    ObjectKey::parse(&unique(label)).unwrap()
}

fn base_config(env: &Env, container: &str) -> serde_json::Value {
    serde_json::json!({
        "auth_url": env.auth_url,
        "user": env.user,
        "key": env.key,
        "container": container,
        "create_container": true,
        "large_object_size": 2 * SEG,
        "segment_size": SEG,
        "connect_timeout_secs": 2,
        "request_timeout_secs": 10,
        "read_timeout_secs": 10,
    })
}

async fn open(config: serde_json::Value) -> Result<SwiftStore, StoreError> {
    let config: SwiftStoreConfig = serde_json::from_value(config).unwrap();
    SwiftStore::open(StoreName::parse("swift").unwrap(), &config).await
}

/// A store with segments of `SEG` bytes, objects declared at `2 * SEG` or more segmented.
async fn segmented_store(env: &Env, label: &str) -> Arc<SwiftStore> {
    Arc::new(open(base_config(env, &unique(label))).await.unwrap())
}

fn segment_prefix(key: &ObjectKey) -> String {
    format!("{key}/")
}

async fn assert_empty(raw: &Raw, store: &SwiftStore) {
    let left = raw.list(store.segment_container(), "").await;
    assert!(left.is_empty(), "segments left behind: {left:?}");
    let left = raw.list(store.container(), "").await;
    assert!(left.is_empty(), "objects left behind: {left:?}");
}

#[tokio::test]
async fn conformance_with_static_large_objects() {
    let env = swift_env!();
    let store = segmented_store(&env, "slo").await;
    testing::run_conformance(store.clone(), SEG).await;
    assert_empty(&Raw::new(&env).await, &store).await;
}

#[tokio::test]
async fn conformance_with_dynamic_large_objects() {
    let env = swift_env!();
    let store = segmented_store(&env, "dlo").await;
    store.force_dynamic_manifests();
    testing::run_conformance(store.clone(), SEG).await;
    assert_empty(&Raw::new(&env).await, &store).await;
}

#[tokio::test]
async fn conformance_without_segmenting() {
    let env = swift_env!();
    let mut config = base_config(&env, &unique("plain"));
    config["large_object_size"] = serde_json::json!(5u64 << 30);
    let store = Arc::new(open(config).await.unwrap());
    testing::run_conformance(store.clone(), SEG).await;
    let raw = Raw::new(&env).await;
    assert_empty(&raw, &store).await;

    // A declared size below large_object_size is one plain object, whatever its length.
    let k = key("plain");
    let data = pattern(3 * SEG, 1);
    store
        .put(
            &k,
            body_from(data.clone(), 5000),
            PutOptions::with_size_hint(Some(data.len() as u64)),
        )
        .await
        .unwrap();
    let head = raw.head(&format!("{}/{k}", store.container())).await;
    assert!(head.headers().get("x-static-large-object").is_none());
    assert!(head.headers().get("x-object-manifest").is_none());
    assert!(raw.list(store.segment_container(), "").await.is_empty());
    store.delete(&k).await.unwrap();
}

#[tokio::test]
async fn large_objects_are_manifests_and_delete_removes_every_segment() {
    let env = swift_env!();
    let raw = Raw::new(&env).await;
    for dynamic in [false, true] {
        let store = segmented_store(&env, "manifest").await;
        if dynamic {
            store.force_dynamic_manifests();
        }
        let k = key("big");
        let len = 3 * SEG + SEG / 2;
        let data = pattern(len, 11);
        let stored = put_digested(
            &*store,
            &k,
            body_from(data.clone(), 10_007),
            Some(len as u64),
            u64::MAX,
        )
        .await
        .unwrap();
        assert_eq!(stored.size, len as u64);
        let segments = raw
            .list(store.segment_container(), &segment_prefix(&k))
            .await;
        assert_eq!(segments.len(), 4, "segments: {segments:?}");
        let head = raw.head(&format!("{}/{k}", store.container())).await;
        if dynamic {
            assert!(head.headers().get("x-object-manifest").is_some());
        } else {
            assert_eq!(head.headers()["x-static-large-object"], "True");
        }
        let got = store.get(&k, None).await.unwrap();
        assert_eq!(got.total_len, len as u64);
        assert!(read_all(got.body).await.unwrap() == data);
        // A range spanning three segments.
        let r = (SEG as u64 - 3)..(3 * SEG as u64 + 5);
        let got = store.get(&k, Some(r.clone())).await.unwrap();
        assert!(read_all(got.body).await.unwrap() == data[r.start as usize..r.end as usize]);

        store.delete(&k).await.unwrap();
        assert!(store.get(&k, None).await.unwrap_err().is_not_found());
        assert_empty(&raw, &store).await;
    }
}

#[tokio::test]
async fn failed_uploads_leave_no_segment_and_no_manifest() {
    let env = swift_env!();
    let raw = Raw::new(&env).await;
    let store = segmented_store(&env, "fail").await;
    let len = 4 * SEG + 100;
    // Inside the first segment, on the first and second boundary, inside and at the end of the
    // last segment; declared and undeclared sizes.
    for cut in [SEG / 3, SEG, 2 * SEG, 2 * SEG + 1, 4 * SEG + 50, len - 1] {
        for hint in [Some(len as u64), None] {
            let k = key("cut");
            let result = put_digested(
                &*store,
                &k,
                failing_body(pattern(len, cut as u64), 3001, cut),
                hint,
                u64::MAX,
            )
            .await;
            assert!(
                matches!(result, Err(PutError::Body(_))),
                "cut {cut} hint {hint:?}: {result:?}"
            );
            let left = raw
                .list(store.segment_container(), &segment_prefix(&k))
                .await;
            assert!(left.is_empty(), "cut {cut} hint {hint:?}: left {left:?}");
            let head = raw.head(&format!("{}/{k}", store.container())).await;
            assert_eq!(
                head.status(),
                404,
                "cut {cut} hint {hint:?}: manifest exists"
            );
        }
    }
    assert_empty(&raw, &store).await;
}

#[tokio::test]
async fn cancelled_upload_removes_its_segments() {
    let env = swift_env!();
    let raw = Raw::new(&env).await;
    let store = segmented_store(&env, "cancel").await;
    let k = key("cancel");
    // Two and a half segments, then the body stalls like a client gone quiet.
    let (body, _) = testing::stalling_body(2 * SEG + SEG / 2);
    let put = tokio::spawn({
        let store = store.clone();
        let k = k.clone();
        async move { store.put(&k, body, PutOptions::default()).await }
    });
    let prefix = segment_prefix(&k);
    let deadline = Instant::now() + Duration::from_secs(10);
    while raw.list(store.segment_container(), &prefix).await.len() < 2 {
        assert!(Instant::now() < deadline, "segments never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Dropping the future is what the HTTP layer does when the client disconnects.
    put.abort();
    assert!(put.await.unwrap_err().is_cancelled());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = raw.list(store.segment_container(), &prefix).await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "segments left: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.get(&k, None).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn unknown_sizes_choose_their_shape() {
    let env = swift_env!();
    let raw = Raw::new(&env).await;
    let store = segmented_store(&env, "shape").await;
    // Empty: a plain empty object.
    let empty = key("empty");
    store
        .put(&empty, body_from(vec![], 1), PutOptions::default())
        .await
        .unwrap();
    let head = raw.head(&format!("{}/{empty}", store.container())).await;
    assert_eq!(head.status(), 200);
    assert!(head.headers().get("x-static-large-object").is_none());
    assert!(read_all(store.get(&empty, None).await.unwrap().body)
        .await
        .unwrap()
        .is_empty());
    // Shorter than a segment: a one-segment manifest, no copy.
    let small = key("small");
    store
        .put(
            &small,
            body_from(b"hello".to_vec(), 2),
            PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        raw.list(store.segment_container(), &segment_prefix(&small))
            .await
            .len(),
        1
    );
    let got = store.get(&small, Some(1..4)).await.unwrap();
    assert_eq!((got.range.clone(), got.total_len), (1..4, 5));
    assert_eq!(read_all(got.body).await.unwrap(), b"ell");
    for k in [&empty, &small] {
        store.delete(k).await.unwrap();
    }
    assert_empty(&raw, &store).await;
}

#[tokio::test]
async fn wrong_key_fails_the_health_check_clearly() {
    let env = swift_env!();
    let mut config = base_config(&env, &unique("badkey"));
    config["key"] = serde_json::json!("not-the-key-8d1f");
    let store = open(config).await.unwrap();
    let err = store.health_check().await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::Unavailable { .. }),
        "expected Unavailable, got {err:?}"
    );
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(!text.contains("not-the-key-8d1f"), "key leaked: {text}");
    let put = store
        .put(
            &key("x"),
            body_from(b"data".to_vec(), 4),
            PutOptions::with_size_hint(Some(4)),
        )
        .await;
    assert!(
        matches!(put, Err(StoreError::Unavailable { .. })),
        "{put:?}"
    );
}

#[tokio::test]
async fn unreachable_auth_endpoint_is_unavailable_at_once() {
    let env = swift_env!();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut config = base_config(&env, &unique("down"));
    config["auth_url"] = serde_json::json!(format!("http://127.0.0.1:{port}/auth/v1.0"));
    let store = open(config).await.unwrap();
    let started = Instant::now();
    let err = store.health_check().await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable { .. }),
        "expected Unavailable, got {err:?}"
    );
    let put = store
        .put(
            &key("x"),
            body_from(pattern(3 * SEG, 1), 4096),
            PutOptions::default(),
        )
        .await;
    assert!(
        matches!(put, Err(StoreError::Unavailable { .. })),
        "{put:?}"
    );
    let get = store.get(&key("x"), None).await;
    assert!(
        matches!(get, Err(StoreError::Unavailable { .. })),
        "{get:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

/// A store whose first token Swift does not know (as after expiry), with credentials to renew
/// it. The container exists already, so the first request is the upload's own.
async fn stale_token_store(env: &Env, raw: &Raw, container: &str) -> SwiftStore {
    open(base_config(env, container))
        .await
        .unwrap()
        .health_check()
        .await
        .unwrap();
    let mut config = base_config(env, container);
    config["storage_url"] = serde_json::json!(raw.storage_url);
    config["token"] = serde_json::json!(STALE_TOKEN);
    config["create_container"] = serde_json::json!(false);
    open(config).await.unwrap()
}

const STALE_TOKEN: &str = "AUTH_tk00000000000000000000000000000000";

#[tokio::test]
async fn a_refused_token_is_renewed() {
    let env = swift_env!();
    let raw = Raw::new(&env).await;
    let container = unique("renew");
    for (dynamic, hint) in [(false, None), (true, None), (false, Some(5u64))] {
        let store = stale_token_store(&env, &raw, &container).await;
        if dynamic {
            store.force_dynamic_manifests();
        }
        let k = key("renew");
        let len = hint.unwrap_or(3 * SEG as u64 + 7) as usize;
        let data = pattern(len, 3);
        store
            .put(
                &k,
                body_from(data.clone(), 8192),
                PutOptions::with_size_hint(hint),
            )
            .await
            .unwrap_or_else(|e| panic!("dynamic {dynamic} hint {hint:?}: {e}"));
        assert!(
            read_all(store.get(&k, None).await.unwrap().body)
                .await
                .unwrap()
                == data
        );
        store.delete(&k).await.unwrap();
    }
    let store = stale_token_store(&env, &raw, &container).await;
    assert!(store
        .get(&key("none"), None)
        .await
        .unwrap_err()
        .is_not_found());
    let store = stale_token_store(&env, &raw, &container).await;
    store.health_check().await.unwrap();
    let store = stale_token_store(&env, &raw, &container).await;
    assert!(store.list().await.unwrap().is_empty());
    let store = stale_token_store(&env, &raw, &container).await;
    store.delete(&key("none")).await.unwrap();

    // Without credentials a refused token is a clear outage.
    let fixed_only = serde_json::json!({
        "storage_url": raw.storage_url,
        "token": STALE_TOKEN,
        "container": container,
    });
    let store = open(fixed_only).await.unwrap();
    let err = store.health_check().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("refused the configured token"),
        "{err}"
    );
    assert!(
        !err.to_string().contains(STALE_TOKEN),
        "token leaked: {err}"
    );

    // A valid fixed token works on its own.
    let fixed_good = serde_json::json!({
        "storage_url": raw.storage_url,
        "token": raw.token,
        "container": container,
    });
    open(fixed_good)
        .await
        .unwrap()
        .health_check()
        .await
        .unwrap();
}

/// A token refused after the body started flowing cannot be retried (the bytes are gone): the
/// upload fails as unavailable, leaves nothing, and the next upload gets a fresh token.
#[tokio::test]
async fn a_token_refused_mid_stream_fails_cleanly() {
    let env = swift_env!();
    let raw = Raw::new(&env).await;
    let container = unique("midstream");
    for hint in [Some(5u64), None] {
        let store = stale_token_store(&env, &raw, &container).await;
        store.trust_current_token();
        let k = key("mid");
        let len = hint.unwrap_or(3 * SEG as u64) as usize;
        let result = store
            .put(
                &k,
                body_from(pattern(len, 1), 4096),
                PutOptions::with_size_hint(hint),
            )
            .await;
        match &result {
            Err(StoreError::Unavailable { message, .. }) => {
                assert!(message.contains("refused the token"), "{message}")
            }
            other => panic!("hint {hint:?}: expected Unavailable, got {other:?}"),
        }
        assert_empty(&raw, &store).await;
        let data = pattern(len, 2);
        store
            .put(
                &k,
                body_from(data.clone(), 4096),
                PutOptions::with_size_hint(hint),
            )
            .await
            .unwrap();
        assert!(
            read_all(store.get(&k, None).await.unwrap().body)
                .await
                .unwrap()
                == data
        );
        store.delete(&k).await.unwrap();
    }
}

#[tokio::test]
async fn sweep_removes_abandoned_segments_only() {
    let env = swift_env!();
    let raw = Raw::new(&env).await;
    let store = segmented_store(&env, "sweep").await;
    let seg = store.segment_container().to_owned();

    // A finished object, then overwritten: its first run's segments are orphans now.
    let live = key("live");
    let data = pattern(3 * SEG, 1);
    for _ in 0..2 {
        store
            .put(&live, body_from(data.clone(), 4096), PutOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(raw.list(&seg, &segment_prefix(&live)).await.len(), 6);
    // A crashed upload: segments and no manifest.
    let crashed = key("crashed");
    for n in 1..=2 {
        raw.put(
            &format!("{seg}/{crashed}/.upload-0123456789abcdef/{n:08}"),
            vec![1; 10],
        )
        .await;
    }
    // Something that is not a segment of ours.
    raw.put(&format!("{seg}/foreign-object"), vec![2; 10]).await;

    let report = store
        .sweep_incomplete(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(report.incomplete_removed, 0, "young segments swept");
    assert_eq!(raw.list(&seg, "").await.len(), 6 + 2 + 1);

    let report = store.sweep_incomplete(Duration::ZERO).await.unwrap();
    assert_eq!(report.incomplete_removed, 2);
    assert!(raw.list(&seg, &segment_prefix(&crashed)).await.is_empty());
    assert_eq!(raw.list(&seg, &segment_prefix(&live)).await.len(), 3);
    assert_eq!(raw.list(&seg, "foreign").await.len(), 1);
    assert!(
        read_all(store.get(&live, None).await.unwrap().body)
            .await
            .unwrap()
            == data
    );

    store.delete(&live).await.unwrap();
    assert!(raw.list(&seg, &segment_prefix(&live)).await.is_empty());
}

#[tokio::test]
async fn a_missing_container_is_reported_not_created() {
    let env = swift_env!();
    let raw = Raw::new(&env).await;
    let container = unique("missing");
    let mut config = base_config(&env, &container);
    config["create_container"] = serde_json::json!(false);
    let store = open(config).await.unwrap();
    let err = store.health_check().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    for hint in [Some(4), None] {
        let put = store
            .put(
                &key("x"),
                body_from(b"data".to_vec(), 4),
                PutOptions::with_size_hint(hint),
            )
            .await;
        assert!(
            matches!(&put, Err(StoreError::Unavailable { message, .. }) if message.contains("does not exist")),
            "hint {hint:?}: {put:?}"
        );
    }
    assert_eq!(
        raw.head(&container).await.status(),
        404,
        "container was created"
    );
}
