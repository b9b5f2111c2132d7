//! The S3 store against a real S3-compatible server named by `GATEWAY_TEST_S3_*` (see
//! `scripts/s3-backend.sh`); every test prints "skipping" and passes when the endpoint is unset
//! (and fails instead with `GATEWAY_TEST_REQUIRE_BACKENDS=1`, as in CI).
//! Each test works under its own random prefix, so runs never see each other's objects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::Client;
use stores::s3::{PartChecksum, S3Store, S3StoreConfig};
use stores::testing::{self, body_from, failing_body, pattern, read_all};
use stores::{ObjectKey, PutOptions, Store, StoreError, StoreName};

const MIB: usize = 1024 * 1024;
/// The smallest part S3 allows, so multipart paths run on small objects.
const PART: usize = 5 * MIB;

use stores::test_backends::S3TestEnv as Env;

fn env() -> Option<Env> {
    Env::from_env()
}

macro_rules! s3_env {
    () => {
        match env() {
            Some(env) => env,
            None => {
                eprintln!("skipping: GATEWAY_TEST_S3_ENDPOINT not set");
                return;
            }
        }
    };
}

fn unique_prefix(label: &str) -> String {
    format!("gateway-test/{label}-{}/", uuid::Uuid::new_v4().simple())
}

fn config(env: &Env, prefix: &str) -> S3StoreConfig {
    let mut c = S3StoreConfig::new(env.bucket.clone());
    c.endpoint = Some(env.endpoint.clone());
    c.region = Some(env.region.clone());
    c.force_path_style = true;
    c.prefix = prefix.to_owned();
    c.access_key_id = Some(env.access_key.clone().into());
    c.secret_access_key = Some(env.secret_key.clone().into());
    c.part_size = PART as u64;
    c.multipart_threshold = PART as u64;
    c
}

async fn open(config: &S3StoreConfig) -> Arc<S3Store> {
    Arc::new(
        S3Store::open(StoreName::parse("s3").unwrap(), config)
            .await
            .expect("open the S3 store"),
    )
}

/// A plain SDK client on the same server, to look behind the store's back.
fn sdk(env: &Env) -> Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&env.endpoint)
        .region(Region::new(env.region.clone()))
        .credentials_provider(Credentials::new(
            &env.access_key,
            &env.secret_key,
            None,
            None,
            "test",
        ))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .build();
    Client::from_conf(conf)
}

/// Upload ids of the multipart uploads whose key starts with `prefix`.
async fn pending_uploads(client: &Client, env: &Env, prefix: &str) -> Vec<(String, String)> {
    let out = client
        .list_multipart_uploads()
        .bucket(&env.bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("ListMultipartUploads");
    out.uploads()
        .iter()
        .map(|u| {
            (
                u.key().unwrap_or_default().to_owned(),
                u.upload_id().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn object_exists(client: &Client, env: &Env, full_key: &str) -> bool {
    match client
        .head_object()
        .bucket(&env.bucket)
        .key(full_key)
        .send()
        .await
    {
        Ok(_) => true,
        Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => false,
        Err(e) => panic!("HeadObject {full_key}: {e:?}"),
    }
}

fn key(label: &str) -> ObjectKey {
    ObjectKey::parse(&format!("{label}-{}", uuid::Uuid::new_v4())).unwrap()
}

#[tokio::test]
async fn conformance() {
    let env = s3_env!();
    let prefix = unique_prefix("conformance");
    let mut c = config(&env, &prefix);
    // Fewer slots than parts, so uploads wait for capacity.
    c.max_concurrent_parts = 2;
    testing::run_conformance(open(&c).await, PART).await;
    assert_eq!(
        pending_uploads(&sdk(&env), &env, &prefix).await,
        vec![],
        "multipart uploads left behind"
    );
}

#[tokio::test]
async fn body_failures_abort_the_upload() {
    let env = s3_env!();
    let prefix = unique_prefix("body-fail");
    let store = open(&config(&env, &prefix)).await;
    let client = sdk(&env);
    let len = 3 * PART + 5;
    // In the first part, on the first and second part boundaries, in the last part.
    for (cut, hint) in [
        (PART / 2, Some(len as u64)),
        (PART, Some(len as u64)),
        (2 * PART, None),
        (3 * PART + 2, Some(len as u64)),
        (3 * PART + 2, None),
    ] {
        let key = key("cut");
        let result = store
            .put(
                &key,
                failing_body(pattern(len, cut as u64), 64 * 1024, cut),
                PutOptions::with_size_hint(hint),
            )
            .await;
        assert!(
            matches!(result, Err(StoreError::Body(_))),
            "cut at {cut}: expected a body error, got {result:?}"
        );
        let full = store.bucket_key(&key);
        assert!(
            pending_uploads(&client, &env, &full).await.is_empty(),
            "cut at {cut}: a multipart upload survived"
        );
        assert!(
            !object_exists(&client, &env, &full).await,
            "cut at {cut}: object exists"
        );
        assert!(store.get(&key, None).await.unwrap_err().is_not_found());
    }
}

#[tokio::test]
async fn cancelled_upload_is_aborted() {
    let env = s3_env!();
    let prefix = unique_prefix("cancel");
    let store = open(&config(&env, &prefix)).await;
    let client = sdk(&env);
    let key = key("cancelled");
    let full = store.bucket_key(&key);
    // Two and a half parts, then the body stalls forever, like a client that stopped sending.
    let (body, _) = testing::stalling_body(2 * PART + PART / 2);
    let put = tokio::spawn({
        let store = Arc::clone(&store);
        let key = key.clone();
        async move { store.put(&key, body, PutOptions::default()).await }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while pending_uploads(&client, &env, &full).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the multipart upload never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the first parts land, so the abort has parts to discard.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!put.is_finished(), "put ended although the body stalls");
    // Aborting the task drops the put future, as a client disconnect does.
    put.abort();
    assert!(put.await.unwrap_err().is_cancelled());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pending_uploads(&client, &env, &full).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "multipart upload still pending 10 s after cancellation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!object_exists(&client, &env, &full).await);
}

#[tokio::test]
async fn odd_sizes_take_the_right_path() {
    let env = s3_env!();
    let prefix = unique_prefix("sizes");
    let store = open(&config(&env, &prefix)).await;
    let client = sdk(&env);
    // (size, parts of the multipart upload; 0 for a single PutObject)
    for (len, parts) in [
        (0, 0),
        (1, 0),
        (PART - 1, 0),
        (PART, 1),
        (PART + 1, 2),
        (2 * PART, 2),
        (2 * PART + 1, 3),
    ] {
        for hint in [Some(len as u64), None] {
            let key = key("size");
            let data = pattern(len, len as u64);
            store
                .put(
                    &key,
                    body_from(data.clone(), 100_003),
                    PutOptions::with_size_hint(hint),
                )
                .await
                .unwrap_or_else(|e| panic!("put {len} bytes (hint {hint:?}): {e}"));
            let head = client
                .head_object()
                .bucket(&env.bucket)
                .key(store.bucket_key(&key))
                .send()
                .await
                .expect("HeadObject");
            assert_eq!(head.content_length(), Some(len as i64));
            // A multipart object's ETag ends in "-<parts>"; a PutObject's is the plain MD5.
            let etag = head
                .e_tag()
                .unwrap_or_default()
                .trim_matches('"')
                .to_owned();
            let suffix = etag.rsplit_once('-').map(|(_, n)| n.to_owned());
            let expected = (parts > 0).then(|| parts.to_string());
            assert_eq!(suffix, expected, "{len} bytes (hint {hint:?}): ETag {etag}");
            let back = read_all(store.get(&key, None).await.unwrap().body)
                .await
                .unwrap();
            assert!(back == data, "{len} bytes came back different");
            store.delete(&key).await.unwrap();
        }
    }
}

#[tokio::test]
async fn every_part_checksum_stores_single_and_multipart_objects() {
    let env = s3_env!();
    for checksum in [PartChecksum::Crc32c, PartChecksum::Md5, PartChecksum::None] {
        let prefix = unique_prefix("part-checksum");
        let mut config = config(&env, &prefix);
        config.part_checksum = checksum;
        let store = open(&config).await;
        for len in [1000, 2 * PART + 1] {
            let key = key("sum");
            let data = pattern(len, len as u64);
            store
                .put(&key, body_from(data.clone(), 65_537), PutOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{checksum:?}, {len} bytes: {e}"));
            let back = read_all(store.get(&key, None).await.unwrap().body)
                .await
                .unwrap();
            assert!(
                back == data,
                "{checksum:?}, {len} bytes came back different"
            );
            store.delete(&key).await.unwrap();
        }
    }
}

#[tokio::test]
async fn objects_past_the_limit_are_refused_and_aborted() {
    let env = s3_env!();
    let prefix = unique_prefix("too-large");
    let mut c = config(&env, &prefix);
    c.max_object_size = (2 * PART + 10) as u64;
    let store = open(&c).await;
    let client = sdk(&env);
    let key = key("big");
    let len = 3 * PART;
    // Declared too large: refused before anything is sent.
    let result = store
        .put(
            &key,
            body_from(pattern(len, 1), MIB),
            PutOptions::with_size_hint(Some(len as u64)),
        )
        .await;
    assert!(
        matches!(result, Err(StoreError::StorageFull { .. })),
        "{result:?}"
    );
    // Undeclared: refused once the stream passes the limit, after parts went up.
    let result = store
        .put(&key, body_from(pattern(len, 1), MIB), PutOptions::default())
        .await;
    assert!(
        matches!(result, Err(StoreError::StorageFull { .. })),
        "{result:?}"
    );
    let full = store.bucket_key(&key);
    assert!(pending_uploads(&client, &env, &full).await.is_empty());
    assert!(!object_exists(&client, &env, &full).await);
}

#[tokio::test]
async fn wrong_credentials_are_forbidden() {
    let env = s3_env!();
    let prefix = unique_prefix("creds");
    let mut c = config(&env, &prefix);
    let bad_secret = "not-the-secret-0123456789";
    c.secret_access_key = Some(bad_secret.into());
    let store = open(&c).await;
    let err = store.health_check().await.unwrap_err();
    eprintln!("health check with a wrong secret: {err}");
    assert!(matches!(err, StoreError::Forbidden { .. }), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains(bad_secret) && !text.contains(&env.secret_key),
        "{text}"
    );
    let err = store
        .put(
            &key("x"),
            body_from(b"data".to_vec(), 4),
            PutOptions::with_size_hint(Some(4)),
        )
        .await
        .unwrap_err();
    eprintln!("put with a wrong secret: {err}");
    assert!(matches!(err, StoreError::Forbidden { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(bad_secret));
}

#[tokio::test]
async fn missing_bucket_is_reported() {
    let env = s3_env!();
    let mut c = config(&env, "");
    c.bucket = format!("missing-{}", uuid::Uuid::new_v4().simple());
    let err = open(&c).await.health_check().await.unwrap_err();
    eprintln!("health check of a missing bucket: {err}");
    // Servers that hide other buckets from a restricted user (MinIO, AWS) answer 403.
    assert!(
        err.to_string().contains("does not exist") || matches!(err, StoreError::Forbidden { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_endpoint_is_unavailable_fast() {
    let env = s3_env!();
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = config(&env, &unique_prefix("down"));
    c.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let store = open(&c).await;
    let started = Instant::now();
    let err = store.health_check().await.unwrap_err();
    eprintln!(
        "health check of a closed port: {err} (after {:?})",
        started.elapsed()
    );
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let err = store
        .put(
            &key("x"),
            body_from(pattern(PART + 1, 2), MIB),
            PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let err = store.get(&key("x"), None).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "three refused operations took {:?}",
        started.elapsed()
    );
    assert!(!err.to_string().contains(&env.secret_key));
}

#[tokio::test]
async fn sweep_aborts_abandoned_uploads_under_the_prefix() {
    let env = s3_env!();
    let prefix = unique_prefix("sweep");
    let store = open(&config(&env, &prefix)).await;
    let client = sdk(&env);
    let create = |key: String| {
        let client = client.clone();
        let bucket = env.bucket.clone();
        async move {
            let id = client
                .create_multipart_upload()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .expect("CreateMultipartUpload")
                .upload_id()
                .unwrap()
                .to_owned();
            client
                .upload_part()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&id)
                .part_number(1)
                .body(pattern(1000, 1).into())
                .send()
                .await
                .expect("UploadPart");
            id
        }
    };
    let abandoned = format!("{prefix}abandoned");
    // Not a key the store would write: the sweep leaves it alone.
    let foreign = format!("{prefix}.foreign");
    create(abandoned.clone()).await;
    let foreign_id = create(foreign.clone()).await;

    let report = store
        .sweep_incomplete(Duration::from_secs(3600), &Default::default())
        .await
        .unwrap();
    assert_eq!(report.incomplete_removed, 0, "a fresh upload was swept");
    assert_eq!(pending_uploads(&client, &env, &prefix).await.len(), 2);

    // Initiation times have one-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = store
        .sweep_incomplete(Duration::ZERO, &Default::default())
        .await
        .unwrap();
    assert_eq!(report.incomplete_removed, 1);
    assert_eq!(
        pending_uploads(&client, &env, &prefix).await,
        vec![(foreign.clone(), foreign_id.clone())]
    );
    client
        .abort_multipart_upload()
        .bucket(&env.bucket)
        .key(&foreign)
        .upload_id(&foreign_id)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn delete_aborts_uploads_of_that_key_only() {
    let env = s3_env!();
    let prefix = unique_prefix("delete");
    let store = open(&config(&env, &prefix)).await;
    let client = sdk(&env);
    let key = key("crashed");
    let full = store.bucket_key(&key);
    let longer = format!("{full}x");
    for k in [&full, &longer] {
        client
            .create_multipart_upload()
            .bucket(&env.bucket)
            .key(k)
            .send()
            .await
            .unwrap();
    }
    store.delete(&key).await.unwrap();
    let left: Vec<String> = pending_uploads(&client, &env, &prefix)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left, vec![longer.clone()]);
    let longer_key = ObjectKey::parse(longer.strip_prefix(&prefix).unwrap()).unwrap();
    store.delete(&longer_key).await.unwrap();
    assert!(pending_uploads(&client, &env, &prefix).await.is_empty());
}

#[tokio::test]
async fn list_sees_only_this_prefix() {
    let env = s3_env!();
    let prefix = unique_prefix("list");
    let store = open(&config(&env, &prefix)).await;
    let other = open(&config(&env, &unique_prefix("list-other"))).await;
    let (mine, theirs) = (key("mine"), key("theirs"));
    store
        .put(
            &mine,
            body_from(b"a".to_vec(), 1),
            PutOptions::with_size_hint(Some(1)),
        )
        .await
        .unwrap();
    other
        .put(
            &theirs,
            body_from(b"b".to_vec(), 1),
            PutOptions::with_size_hint(Some(1)),
        )
        .await
        .unwrap();
    let listed: Vec<ObjectKey> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(listed, vec![mine.clone()]);
    store.delete(&mine).await.unwrap();
    other.delete(&theirs).await.unwrap();
}

#[tokio::test]
async fn debug_and_describe_carry_no_secret() {
    let env = s3_env!();
    let prefix = unique_prefix("debug");
    let c = config(&env, &prefix);
    let store = open(&c).await;
    let key = key("k");
    for text in [format!("{c:?}"), format!("{store:?}"), store.describe(&key)] {
        assert!(!text.contains(&env.secret_key), "{text}");
        assert!(!text.contains(&env.access_key), "{text}");
    }
    assert_eq!(
        store.describe(&key),
        format!("s3://{}/{prefix}{key}", env.bucket)
    );
}

#[tokio::test]
async fn no_credentials_at_all_is_forbidden() {
    let env = s3_env!();
    let mut c = config(&env, &unique_prefix("nocreds"));
    c.access_key_id = None;
    c.secret_access_key = None;
    // The standard chain: make sure the environment offers nothing either.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() || std::env::var_os("AWS_PROFILE").is_some()
    {
        assert!(
            !stores::test_backends::backends_required(),
            "AWS credentials in the environment, and GATEWAY_TEST_REQUIRE_BACKENDS=1 forbids skipping"
        );
        eprintln!("skipping: AWS credentials in the environment");
        return;
    }
    let err = open(&c).await.health_check().await.unwrap_err();
    eprintln!("health check without credentials: {err}");
    assert!(matches!(err, StoreError::Forbidden { .. }), "{err:?}");
}

#[tokio::test]
async fn uploads_share_the_part_memory_budget_without_deadlock() {
    let env = s3_env!();
    let prefix = unique_prefix("budget");
    let mut c = config(&env, &prefix);
    // Room for three parts in all, while each upload would like five (4 in flight + 1 read),
    // and the threshold makes each read three parts before choosing multipart: uploads that
    // waited for memory while holding some would wait for each other forever.
    c.max_concurrent_parts = 4;
    c.multipart_threshold = 3 * PART as u64;
    c.max_part_memory = 3 * PART as u64;
    let store = open(&c).await;
    let budget = store.part_memory().clone();
    let uploads = (0..6).map(|i| {
        let store = Arc::clone(&store);
        async move {
            let len = 4 * PART + 1000 * i + 1;
            let data = pattern(len, i as u64);
            let key = key("budget");
            store
                .put(&key, body_from(data.clone(), 65_536), PutOptions::default())
                .await
                .unwrap_or_else(|e| panic!("upload {i}: {e}"));
            (key, data)
        }
    });
    let stored = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(uploads))
        .await
        .expect("six uploads sharing three parts of memory all finish");
    // Six uploads wanting three parts each did fill the budget, and never went past it.
    assert_eq!(budget.peak_bytes(), budget.limit_bytes());
    assert_eq!(
        budget.held_bytes(),
        0,
        "finished uploads give their share back"
    );
    for (key, data) in stored {
        let back = read_all(store.get(&key, None).await.unwrap().body)
            .await
            .unwrap();
        assert!(back == data, "an upload came back different");
        store.delete(&key).await.unwrap();
    }
}
