//! The admin data operations against real stores (file, and S3 and Swift when their
//! `GATEWAY_TEST_*` variables are set): `verify` finds flipped bytes, missing objects and wrong
//! sizes and calls a clean store clean; `migrate` moves images between the file store and S3 both
//! ways, keeping ids and checksums, while a download loop never fails; the orphan sweep leaves a
//! running migration's copies alone and removes a copy a crash left unswitched. The subcommands
//! are run as the real binary, so their output and exit codes are checked too.
//!
//! The admin routes are served here on their own ephemeral listener; the gateway's admin listener
//! mounts the same `admin_ops::routes()`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use glance_gateway::config::SweepOrphans;
use glance_gateway::model::ImageId;
use serde_json::Value;
use stores::s3::S3StoreConfig;
use stores::test_backends::{S3TestEnv, SwiftTestEnv};
use stores::{ObjectKey, PutOptions, Store, StoreConfig};

use crate::common::*;

const MIB: usize = 1024 * 1024;

/// Serves the admin data routes of `app`'s gateway on an ephemeral port; returns its URL.
async fn admin_url(app: &TestApp) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = glance_gateway::admin_ops::routes().with_state(app.state().clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// Runs `glance-gateway <args> --admin-url URL --json`: exit code and parsed stdout.
async fn cli(url: &str, args: &[&str]) -> (i32, Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_glance-gateway"))
        .args(args)
        .args(["--admin-url", url, "--json"])
        .env_remove("GLANCE_GATEWAY_CONFIG")
        .output()
        .await
        .expect("run the binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), value)
}

/// The `result` of image `id` in a verify or migrate answer.
fn result_of<'a>(answer: &'a Value, id: &str) -> &'a Value {
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no result for {id} in {answer}"))
}

fn meta(name: &str, store: &str) -> Vec<(String, String)> {
    vec![
        ("x-image-meta-name".into(), name.into()),
        ("x-image-meta-disk_format".into(), "raw".into()),
        ("x-image-meta-container_format".into(), "bare".into()),
        ("x-image-meta-is_public".into(), "True".into()),
        ("x-image-meta-store".into(), store.into()),
    ]
}

async fn create_in(app: &TestApp, store: &str, name: &str, data: &[u8]) -> String {
    let owned = meta(name, store);
    let pairs: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let img = app.create_image(&pairs, Some(data)).await;
    assert_eq!(img["status"], "active");
    img["id"].as_str().unwrap().to_owned()
}

fn store(app: &TestApp, name: &str) -> Arc<dyn Store> {
    app.state().stores.get(name).expect("configured").clone()
}

fn key(id: &str) -> ObjectKey {
    ObjectKey::parse(id).unwrap()
}

/// Replaces the object of image `id` in `store` behind the registry's back.
async fn overwrite(store: &dyn Store, id: &str, data: Vec<u8>) {
    let len = data.len() as u64;
    let body = futures::stream::once(async move { Ok(Bytes::from(data)) });
    store
        .put(
            &key(id),
            Box::pin(body),
            PutOptions::with_size_hint(Some(len)),
        )
        .await
        .expect("overwrite the object");
}

fn s3_config(env: &S3TestEnv) -> StoreConfig {
    let mut c = S3StoreConfig::new(env.bucket.clone());
    c.endpoint = Some(env.endpoint.clone());
    c.region = Some(env.region.clone());
    c.force_path_style = true;
    c.prefix = format!("gateway-admin-test/{}/", uuid::Uuid::new_v4().simple());
    c.access_key_id = Some(env.access_key.clone().into());
    c.secret_access_key = Some(env.secret_key.clone().into());
    c.part_size = 5 * MIB as u64;
    c.multipart_threshold = 5 * MIB as u64;
    StoreConfig::S3(c)
}

fn swift_config(env: &SwiftTestEnv) -> StoreConfig {
    serde_json::from_value(serde_json::json!({
        "kind": "swift",
        "auth_url": env.auth_url,
        "user": env.user,
        "key": env.key,
        "container": format!("glance-admin-{}", uuid::Uuid::new_v4().simple()),
        "create_container": true,
        "large_object_size": MIB,
        "segment_size": MIB,
    }))
    .expect("swift store config")
}

/// On `store_name`: a clean store verifies clean (exit 0); then a flipped byte, a missing object
/// and a truncated object are each named, the untouched image stays ok, and the exit code is 1.
async fn verify_finds_damage(app: &TestApp, store_name: &str) {
    let url = admin_url(app).await;
    // Large enough for multipart / segmented objects on S3 and Swift.
    let data = pattern(6 * MIB + 123);
    let small = pattern(1000);
    let flipped = create_in(app, store_name, "flipped", &data).await;
    let missing = create_in(app, store_name, "missing", &small).await;
    let short = create_in(app, store_name, "short", &small).await;
    let clean = create_in(app, store_name, "clean", &small).await;

    let (code, answer) = cli(&url, &["verify", "--all", "--store", store_name]).await;
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["results"].as_array().unwrap().len(), 4, "{answer}");
    for id in [&flipped, &missing, &short, &clean] {
        assert_eq!(result_of(&answer, id)["result"], "ok", "{answer}");
    }

    let target = store(app, store_name);
    let mut damaged = data.clone();
    damaged[3 * MIB] ^= 0x01;
    overwrite(target.as_ref(), &flipped, damaged).await;
    target.delete(&key(&missing)).await.unwrap();
    overwrite(target.as_ref(), &short, small[..999].to_vec()).await;

    let (code, answer) = cli(&url, &["verify", "--all", "--store", store_name]).await;
    assert_eq!(code, 1, "{answer}");
    assert_eq!(result_of(&answer, &flipped)["result"], "wrong_checksum");
    assert_eq!(result_of(&answer, &missing)["result"], "missing");
    assert_eq!(result_of(&answer, &short)["result"], "wrong_size");
    assert_eq!(result_of(&answer, &clean)["result"], "ok");

    // Named images only; the clean one alone passes.
    let (code, answer) = cli(&url, &["verify", &clean]).await;
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["results"].as_array().unwrap().len(), 1);
    // Verify changed nothing.
    assert_eq!(app.status_of(&flipped).await, "active");
    assert_eq!(app.record(&flipped).await.checksum, Some(md5_hex(&data)));
}

#[tokio::test]
async fn verify_on_the_file_store() {
    let app = TestApp::spawn().await;
    verify_finds_damage(&app, "file").await;
}

#[tokio::test]
async fn verify_on_s3() {
    let Some(env) = S3TestEnv::from_env() else {
        eprintln!("skipping: GATEWAY_TEST_S3_ENDPOINT not set");
        return;
    };
    let app = TestApp::builder()
        .store("s3", s3_config(&env))
        .spawn()
        .await;
    verify_finds_damage(&app, "s3").await;
}

#[tokio::test]
async fn verify_on_swift() {
    let Some(env) = SwiftTestEnv::from_env() else {
        eprintln!("skipping: GATEWAY_TEST_SWIFT_AUTH_URL not set");
        return;
    };
    let app = TestApp::builder()
        .store("swift", swift_config(&env))
        .spawn()
        .await;
    verify_finds_damage(&app, "swift").await;
}

#[tokio::test]
async fn verify_flips_in_place_and_checks_the_multihash() {
    let app = TestApp::spawn().await;
    let url = admin_url(&app).await;
    let data = pattern(300_000);
    let id = create_in(&app, "file", "f", &data).await;
    // A byte flipped on disk, in place.
    let path = app.object_path(&id);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[12_345] ^= 0x80;
    std::fs::write(&path, &bytes).unwrap();
    let (code, answer) = cli(&url, &["verify", &id, "--max-rate", "64"]).await;
    assert_eq!(code, 1);
    let r = result_of(&answer, &id);
    assert_eq!(r["result"], "wrong_checksum");
    assert!(r["detail"].as_str().unwrap().starts_with("md5"), "{r}");
    std::fs::write(&path, &data).unwrap();
    assert_eq!(cli(&url, &["verify", &id]).await.0, 0);

    // A recorded multihash that does not match is caught even when the MD5 does.
    let parsed = ImageId::parse(&id).unwrap();
    app.state()
        .registry
        .update::<glance_gateway::registry::RegistryError, _>(&parsed, |s| {
            s.record.os_hash_value = Some("0".repeat(128));
            Ok(())
        })
        .await
        .unwrap();
    let (code, answer) = cli(&url, &["verify", &id]).await;
    assert_eq!(code, 1);
    let r = result_of(&answer, &id);
    assert_eq!(r["result"], "wrong_checksum");
    assert!(r["detail"].as_str().unwrap().starts_with("sha512"), "{r}");
}

#[tokio::test]
async fn cli_exit_codes_and_listing() {
    let app = TestApp::builder().extra_store("cold").spawn().await;
    let url = admin_url(&app).await;
    let id = create_in(&app, "file", "listed", b"some bytes").await;
    let cold = create_in(&app, "cold", "cold one", b"cold bytes").await;

    let (code, answer) = cli(&url, &["images"]).await;
    assert_eq!(code, 0);
    let rows = answer["images"].as_array().unwrap();
    let row = rows.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(row["store"], "file");
    assert_eq!(row["status"], "active");
    assert_eq!(row["size"], 10);
    assert_eq!(row["name"], "listed");
    let (code, answer) = cli(&url, &["images", "--store", "cold"]).await;
    assert_eq!(code, 0);
    let ids: Vec<&str> = answer["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![cold.as_str()]);

    // The human table names the image and its store.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_glance-gateway"))
        .args(["images", "--admin-url", &url])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(&cold) && l.contains("cold")),
        "{table}"
    );

    // Problems: an unknown image, an unknown store, an unreachable listener, a wrong token.
    let unknown = uuid::Uuid::new_v4().to_string();
    let (code, answer) = cli(&url, &["verify", &unknown]).await;
    assert_eq!(code, 1);
    assert_eq!(result_of(&answer, &unknown)["result"], "error");
    assert_eq!(cli(&url, &["migrate", &id, "--to", "nowhere"]).await.0, 1);
    assert_eq!(cli(&url, &["images", "--store", "nowhere"]).await.0, 1);
    assert_eq!(cli("http://127.0.0.1:9", &["images"]).await.0, 1);
    // Usage errors are clap's (2): verify needs ids or --all.
    assert_eq!(cli(&url, &["verify"]).await.0, 2);

    // The listener and token can come from the gateway's config file.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let addr = url.trim_start_matches("http://");
    std::fs::write(
        &config,
        format!(
            "admin_bind = \"{addr}\"\nadmin_token_file = \"{}\"\n",
            dir.path().join("token").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("token"), "secret\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_glance-gateway"))
        .args(["images", "--json", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Downloads image `id` in a loop until stopped, counting downloads and failures.
struct DownloadLoop {
    stop: Arc<std::sync::atomic::AtomicBool>,
    done: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl DownloadLoop {
    fn start(app: &TestApp, id: &str, data: Arc<Vec<u8>>) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let (client, url) = (app.client.clone(), app.url(&format!("/v1/images/{id}")));
        let (s, d, f) = (stop.clone(), done.clone(), failed.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                let ok = match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        matches!(r.bytes().await, Ok(b) if b.as_ref() == data.as_slice())
                    }
                    _ => false,
                };
                if ok {
                    d.fetch_add(1, Ordering::SeqCst);
                } else {
                    f.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Self {
            stop,
            done,
            failed,
            task,
        }
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        (
            self.done.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

#[tokio::test]
async fn migrate_between_file_and_s3_while_downloading() {
    let Some(env) = S3TestEnv::from_env() else {
        eprintln!("skipping: GATEWAY_TEST_S3_ENDPOINT not set");
        return;
    };
    let app = TestApp::builder()
        .store("s3", s3_config(&env))
        .spawn()
        .await;
    let url = admin_url(&app).await;
    let data = Arc::new(pattern(7 * MIB + 5));
    let id = create_in(&app, "file", "moving", &data).await;
    let before = app.record(&id).await;
    assert!(before.os_hash_value.is_some());
    let downloads = DownloadLoop::start(&app, &id, Arc::clone(&data));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (code, answer) = cli(&url, &["migrate", &id, "--to", "s3", "--grace", "1"]).await;
    assert_eq!(code, 0, "{answer}");
    let r = result_of(&answer, &id);
    assert_eq!(r["result"], "migrated");
    assert_eq!(r["old_copy_removed"], true, "{answer}");
    let moved = app.record(&id).await;
    assert_eq!(moved.location.as_ref().unwrap().store, "s3");
    assert_eq!(moved.checksum, before.checksum);
    assert_eq!(moved.os_hash_value, before.os_hash_value);
    assert!(!app.object_path(&id).exists(), "the file copy is removed");
    assert_eq!(
        store(&app, "s3")
            .get(&key(&id), None)
            .await
            .unwrap()
            .total_len,
        data.len() as u64
    );

    // Again: nothing to do, still success.
    let (code, answer) = cli(&url, &["migrate", &id, "--to", "s3"]).await;
    assert_eq!(code, 0, "{answer}");
    assert_eq!(result_of(&answer, &id)["result"], "unchanged");

    // And back.
    let (code, answer) = cli(&url, &["migrate", &id, "--to", "file", "--grace", "1"]).await;
    assert_eq!(code, 0, "{answer}");
    let back = app.record(&id).await;
    assert_eq!(back.location.as_ref().unwrap().store, "file");
    assert_eq!(back.id, before.id);
    assert_eq!(back.checksum, before.checksum);
    assert_eq!(back.os_hash_value, before.os_hash_value);
    assert_eq!(std::fs::read(app.object_path(&id)).unwrap(), *data);
    assert!(store(&app, "s3")
        .get(&key(&id), None)
        .await
        .unwrap_err()
        .is_not_found());

    tokio::time::sleep(Duration::from_millis(200)).await;
    let (done, failed) = downloads.finish().await;
    assert_eq!(failed, 0, "downloads failed during the migrations");
    assert!(done >= 2, "the download loop ran ({done})");
    let (code, answer) = cli(&url, &["verify", &id]).await;
    assert_eq!(code, 0, "{answer}");
}

#[tokio::test]
async fn migrate_refuses_what_it_cannot_move_and_fills_in_a_missing_multihash() {
    let app = TestApp::builder().extra_store("cold").spawn().await;
    let url = admin_url(&app).await;
    let data = pattern(100_000);
    let id = create_in(&app, "file", "old", &data).await;
    // Stored before multihash.
    let parsed = ImageId::parse(&id).unwrap();
    app.state()
        .registry
        .update::<glance_gateway::registry::RegistryError, _>(&parsed, |s| {
            s.record.os_hash_algo = None;
            s.record.os_hash_value = None;
            Ok(())
        })
        .await
        .unwrap();
    let (code, answer) = cli(&url, &["migrate", &id, "--to", "cold", "--grace", "0"]).await;
    assert_eq!(code, 0, "{answer}");
    let moved = app.record(&id).await;
    assert_eq!(moved.location.unwrap().store, "cold");
    assert_eq!(moved.os_hash_algo.as_deref(), Some("sha512"));

    // Damaged data is not copied over: the image stays where it was.
    let other = create_in(&app, "file", "damaged", &data).await;
    let mut bad = data.clone();
    bad[10] ^= 1;
    std::fs::write(app.object_path(&other), &bad).unwrap();
    let (code, answer) = cli(&url, &["migrate", &other, "--to", "cold", "--grace", "0"]).await;
    assert_eq!(code, 1, "{answer}");
    assert_eq!(result_of(&answer, &other)["result"], "error");
    assert_eq!(app.record(&other).await.location.unwrap().store, "file");
    assert!(!app.data_dir().join("store-cold").join(&other).exists());

    // A queued image has no data to move.
    let queued = app.create_image(&[("x-image-meta-name", "q")], None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, answer) = cli(&url, &["migrate", &queued, "--to", "cold"]).await;
    assert_eq!(code, 1);
    assert_eq!(result_of(&answer, &queued)["result"], "error");
}

/// What a crash leaves behind is swept: a copy written but never switched to is not served and
/// is removed; while a migration holds copies, the sweep leaves them alone.
#[tokio::test]
async fn the_sweep_removes_unswitched_copies_but_not_a_running_migrations() {
    let app = TestApp::builder().extra_store("cold").spawn().await;
    let data = pattern(50_000);
    let id = create_in(&app, "file", "img", &data).await;
    // A registry this process created never deletes orphans: reopen it.
    let app = app.restart().await;
    // Sweeps as the gateway runs them, without a minimum age and deleting orphans. (The gateway
    // itself keeps the default age, so its startup sweep cannot take the copies below.)
    let mut state = app.state().clone();
    let mut config = (*state.config).clone();
    config.sweep_min_age = 0;
    config.sweep_orphans = SweepOrphans::Delete;
    state.config = Arc::new(config);
    let cold = store(&app, "cold");
    let stale_copy = app.data_dir().join("store-cold").join(&id);

    // A migration in progress protects its new copy.
    overwrite(cold.as_ref(), &id, data.clone()).await;
    let protected = {
        let _held = app.state().migrations.protect("cold", &id);
        glance_gateway::maintenance::sweep(&state).await;
        stale_copy.exists()
    };
    assert!(protected, "the sweep removed a running migration's copy");

    // After a crash between copy and switch the copy is an orphan: never served, then swept.
    let got = app.get(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
    glance_gateway::maintenance::sweep(&state).await;
    assert!(!stale_copy.exists(), "the unswitched copy is swept");
    assert!(app.object_path(&id).exists(), "the served copy stays");

    // A rerun of the migration then completes from scratch.
    let url = admin_url(&app).await;
    let (code, answer) = cli(&url, &["migrate", &id, "--to", "cold", "--grace", "0"]).await;
    assert_eq!(code, 0, "{answer}");
    glance_gateway::maintenance::sweep(&state).await;
    assert!(stale_copy.exists());
    assert!(!app.object_path(&id).exists());
}

#[tokio::test]
async fn verify_max_rate_throttles_reading() {
    let app = TestApp::spawn().await;
    let url = admin_url(&app).await;
    let id = create_in(&app, "file", "slow", &pattern(2 * MIB)).await;
    let started = std::time::Instant::now();
    let (code, answer) = cli(&url, &["verify", &id, "--max-rate", "1"]).await;
    let elapsed = started.elapsed();
    assert_eq!(code, 0, "{answer}");
    // 2 MiB at 1 MiB/s: the last chunk is due at about 2 s.
    assert!(elapsed >= Duration::from_millis(1800), "took {elapsed:?}");
}
