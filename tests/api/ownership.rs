//! A gateway deletes only what it wrote: store namespaces carry a marker naming the registry that
//! owns them, a second gateway is refused (or adopts with `adopt = true`), orphans are only
//! reported unless `sweep_orphans = "delete"`, and never by a new or empty registry.

use std::time::Duration;

use glance_gateway::config::SweepOrphans;
use glance_gateway::maintenance::sweep;
use stores::file::FileStoreConfig;
use stores::ownership::MARKER;
use stores::{ObjectKey, StoreConfig, StoreName};
use tokio::io::AsyncWriteExt;

use crate::common::*;

fn meta(store: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-image-meta-disk_format", "raw".to_owned()),
        ("x-image-meta-container_format", "bare".to_owned()),
        ("x-image-meta-store", store.to_owned()),
    ]
}

/// Uploads `data` to the store `store`; returns the new image's id.
pub async fn upload_to(app: &TestApp, store: &str, data: &[u8]) -> String {
    let meta = meta(store);
    let pairs: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let image = app.create_image(&pairs, Some(data)).await;
    assert_eq!(image["status"], "active");
    image["id"].as_str().unwrap().to_owned()
}

pub async fn download_ok(app: &TestApp, id: &str) -> Vec<u8> {
    let resp = app.get(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "download of {id}");
    resp.bytes().await.unwrap().to_vec()
}

fn orphan(store: &str, key: &str) -> (StoreName, ObjectKey) {
    (
        StoreName::parse(store).unwrap(),
        ObjectKey::parse(key).unwrap(),
    )
}

/// The ownership rule on one namespace, whatever its backend: `config(adopt)` configures the
/// store `shared` on it.
pub async fn two_gateways_on_one_namespace(config: impl Fn(bool) -> StoreConfig) {
    // The first gateway claims the namespace and keeps an image there. It deletes orphans.
    let first = TestApp::builder()
        .store("shared", config(false))
        .sweep_min_age(0)
        .sweep_orphans(SweepOrphans::Delete)
        .spawn()
        .await;
    let data = pattern(3000);
    let kept = upload_to(&first, "shared", &data).await;
    let first = first.restart().await; // no longer a new registry
    let first_registry = first.state().registry.id().to_owned();

    // A second gateway (another registry) on the same namespace is refused, and told whose it is.
    let refused = TestApp::builder()
        .store("shared", config(false))
        .refused()
        .await;
    assert!(
        refused.contains(&first_registry) && refused.contains("adopt = true"),
        "{refused}"
    );
    assert!(refused.contains("stores.shared"), "{refused}");

    // With `adopt = true` it takes the namespace over; by default it only reports what it does
    // not know, so the first gateway's image survives its sweep.
    let second = TestApp::builder()
        .store("shared", config(true))
        .sweep_min_age(0)
        .spawn()
        .await;
    let report = sweep(second.state()).await;
    assert_eq!(report.orphans_kept, vec![orphan("shared", &kept)]);
    assert!(report.orphans_removed.is_empty());
    assert_eq!(download_ok(&first, &kept).await, data);

    // The first gateway no longer owns the namespace: its sweep, set to delete, leaves the
    // second gateway's image alone.
    let theirs = upload_to(&second, "shared", b"second gateway").await;
    let report = sweep(first.state()).await;
    assert_eq!(report.stores_skipped, 1, "{report:?}");
    assert!(report.orphans_removed.is_empty(), "{report:?}");
    assert_eq!(download_ok(&second, &theirs).await, b"second gateway");
    assert_eq!(download_ok(&first, &kept).await, data);
}

fn file_store(root: &std::path::Path, adopt: bool) -> StoreConfig {
    StoreConfig::File(FileStoreConfig {
        root: root.to_owned(),
        adopt,
        direct_io: true,
    })
}

#[tokio::test]
async fn file_store_two_gateways_on_one_root() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("shared");
    two_gateways_on_one_namespace(|adopt| file_store(&path, adopt)).await;
    assert!(path.join(MARKER).exists());
}

#[tokio::test]
async fn a_root_from_before_markers_is_claimed_by_the_first_registry() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("old");
    std::fs::create_dir_all(&path).unwrap();
    let old_image = uuid::Uuid::new_v4().to_string();
    std::fs::write(path.join(&old_image), b"from before").unwrap();
    let app = TestApp::builder()
        .store("shared", file_store(&path, false))
        .spawn()
        .await;
    let marker = std::fs::read_to_string(path.join(MARKER)).unwrap();
    assert!(marker.contains(app.state().registry.id()), "{marker}");
    // Restarting is fine: the marker names this registry.
    let app = app.restart().await;
    assert!(path.join(&old_image).exists());
    drop(app);
}

#[tokio::test]
async fn overlapping_stores_are_refused_at_startup() {
    let root = tempfile::tempdir().unwrap();
    let message = TestApp::builder()
        .store("outer", file_store(&root.path().join("images"), false))
        .store(
            "inner",
            file_store(&root.path().join("images/inner"), false),
        )
        .refused()
        .await;
    assert!(
        message.contains("stores.inner") && message.contains("stores.outer"),
        "{message}"
    );
    // Siblings whose names share a beginning do not overlap.
    let app = TestApp::builder()
        .store("a", file_store(&root.path().join("images"), false))
        .store("b", file_store(&root.path().join("images2"), false))
        .spawn()
        .await;
    drop(app);
}

/// Orphans are removed only with `sweep_orphans = "delete"`, never by a new or empty registry,
/// and only keys in the gateway's own format.
#[tokio::test]
async fn orphans_are_removed_only_when_asked_and_only_in_our_key_format() {
    // The gateway's own background sweep only reports, so the sweeps below are the only ones
    // that may delete, and the test does not race the startup sweep.
    let app = TestApp::builder().sweep_min_age(0).spawn().await;
    let root = app.data_dir().join("images");
    let orphan_id = uuid::Uuid::new_v4().to_string();
    let foreign = ["notes.txt", &orphan_id.to_uppercase(), "backup-1"];
    std::fs::write(root.join(&orphan_id), b"orphan").unwrap();
    for name in foreign {
        std::fs::write(root.join(name), b"not ours").unwrap();
    }

    // A new registry cannot tell an orphan from data: it only reports.
    let report = sweep(&deleting_orphans(app.state())).await;
    assert_eq!(report.orphans_kept, vec![orphan("file", &orphan_id)]);
    assert!(root.join(&orphan_id).exists());

    // Reopened, but still empty: the same.
    let app = app.restart().await;
    let report = sweep(&deleting_orphans(app.state())).await;
    assert_eq!(report.orphans_kept, vec![orphan("file", &orphan_id)]);
    assert!(root.join(&orphan_id).exists());

    // A registry that knows images removes the orphan, and nothing that is not in its format.
    let live = upload_to(&app, "file", b"live").await;
    let report = sweep(&deleting_orphans(app.state())).await;
    assert_eq!(report.orphans_removed, vec![orphan("file", &orphan_id)]);
    assert!(!root.join(&orphan_id).exists());
    for name in foreign {
        assert!(root.join(name).exists(), "{name} removed");
    }
    assert!(root.join(MARKER).exists());
    assert_eq!(download_ok(&app, &live).await, b"live");
}

/// `state` with `sweep_orphans = "delete"`.
fn deleting_orphans(state: &glance_gateway::state::AppState) -> glance_gateway::state::AppState {
    let mut state = state.clone();
    let mut config = (*state.config).clone();
    config.sweep_orphans = SweepOrphans::Delete;
    state.config = std::sync::Arc::new(config);
    state
}

#[tokio::test]
async fn orphans_are_only_reported_by_default() {
    let app = TestApp::builder().sweep_min_age(0).spawn().await;
    let live = upload_to(&app, "file", b"live").await;
    let app = app.restart().await;
    let orphan_id = uuid::Uuid::new_v4().to_string();
    std::fs::write(app.object_path(&orphan_id), b"orphan").unwrap();
    let report = sweep(app.state()).await;
    assert_eq!(report.orphans_kept, vec![orphan("file", &orphan_id)]);
    assert!(report.orphans_removed.is_empty());
    assert!(app.object_path(&orphan_id).exists());
    assert_eq!(download_ok(&app, &live).await, b"live");
}

#[tokio::test]
async fn an_active_image_whose_data_is_gone_is_reported() {
    let app = TestApp::builder().sweep_min_age(0).spawn().await;
    let lost = upload_to(&app, "file", b"lost").await;
    let fine = upload_to(&app, "file", b"fine").await;
    std::fs::remove_file(app.object_path(&lost)).unwrap();
    let report = sweep(app.state()).await;
    assert_eq!(
        report
            .missing_data
            .iter()
            .map(|id| id.as_str())
            .collect::<Vec<_>>(),
        vec![lost.as_str()]
    );
    assert!(!report.missing_data.iter().any(|id| id.as_str() == fine));
}

/// The sweep leaves the partial data of an image still `saving` alone, however old.
#[tokio::test]
async fn the_sweep_spares_uploads_in_progress() {
    let app = TestApp::builder()
        .sweep_min_age(0)
        .sweep_orphans(SweepOrphans::Delete)
        .spawn()
        .await;
    let _known = upload_to(&app, "file", b"known").await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut stream = app.connect().await;
    let head = format!(
        "POST /v1/images HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/octet-stream\r\n\
         x-image-meta-id: {id}\r\nx-image-meta-disk_format: raw\r\n\
         x-image-meta-container_format: bare\r\nContent-Length: 200000\r\n\r\n"
    );
    let data = pattern(200_000);
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&data[..100_000]).await.unwrap();
    app.wait_for_status(&id, "saving").await;
    // The temp file exists once the first bytes reached the writer.
    for _ in 0..100 {
        if !app.tmp_files().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.tmp_files().len(), 1);
    sweep(app.state()).await;
    assert_eq!(
        app.tmp_files().len(),
        1,
        "the sweep removed a running upload"
    );
    stream.write_all(&data[100_000..]).await.unwrap();
    let resp = read_response(&mut stream).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(download_ok(&app, &id).await, data);
}
