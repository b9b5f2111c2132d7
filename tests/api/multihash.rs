//! Multihash (`hashing_algorithm`): the `os_hash_algo` / `os_hash_value` an upload records equal
//! what `sha512sum` / `sha384sum` / `sha256sum` say of the same bytes, in headers and JSON; images without one
//! (stored before, or `none`) show null.

use std::process::Command;

use glance_gateway::config::HashingAlgorithm;
use serde_json::Value;

use crate::common::*;

/// The digest the coreutils tool `tool` (`sha512sum`) prints for `data`.
fn coreutils_digest(tool: &str, data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    std::fs::write(&path, data).unwrap();
    let out = Command::new(tool)
        .arg(&path)
        .output()
        .expect("run the tool");
    assert!(out.status.success(), "{tool} failed");
    String::from_utf8(out.stdout).unwrap()[..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

async fn detail_entry(app: &TestApp, id: &str) -> Value {
    let list = json(app.get("/v1/images/detail").send().await.unwrap()).await;
    list["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .cloned()
        .expect("listed")
}

/// Uploads `data` and checks the multihash everywhere it is shown against `tool`.
async fn assert_multihash(app: &TestApp, algo: &str, tool: &str, data: &[u8]) {
    let created = app.create_image(&image_meta("mh"), Some(data)).await;
    let id = created["id"].as_str().unwrap();
    let expected = coreutils_digest(tool, data);
    assert_eq!(created["os_hash_algo"], algo);
    assert_eq!(created["os_hash_value"], expected.as_str());
    assert_eq!(created["checksum"], md5_hex(data).as_str());

    let head = app.head(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(
        header(&head, "x-image-meta-os_hash_algo").as_deref(),
        Some(algo)
    );
    assert_eq!(
        header(&head, "x-image-meta-os_hash_value"),
        Some(expected.clone())
    );
    let entry = detail_entry(app, id).await;
    assert_eq!(entry["os_hash_algo"], algo);
    assert_eq!(entry["os_hash_value"], expected.as_str());
}

fn image_meta(name: &str) -> Vec<(&str, &str)> {
    vec![
        ("x-image-meta-name", name),
        ("x-image-meta-disk_format", "raw"),
        ("x-image-meta-container_format", "bare"),
        ("x-image-meta-is_public", "True"),
    ]
}

#[tokio::test]
async fn sha512_by_default_equals_sha512sum() {
    let app = TestApp::spawn().await;
    // Several chunks and an odd tail, so the workers see more than one chunk.
    assert_multihash(&app, "sha512", "sha512sum", &pattern(3 * 1024 * 1024 + 17)).await;
    assert_multihash(&app, "sha512", "sha512sum", b"x").await;
}

#[tokio::test]
async fn sha256_when_configured_equals_sha256sum() {
    let app = TestApp::builder()
        .hashing_algorithm(HashingAlgorithm::Sha256)
        .spawn()
        .await;
    assert_multihash(&app, "sha256", "sha256sum", &pattern(1024 * 1024 + 5)).await;
}

#[tokio::test]
async fn sha384_when_configured_equals_sha384sum() {
    let app = TestApp::builder()
        .hashing_algorithm(HashingAlgorithm::Sha384)
        .spawn()
        .await;
    assert_multihash(&app, "sha384", "sha384sum", &pattern(2 * 1024 * 1024 + 3)).await;
}

#[tokio::test]
async fn images_without_a_multihash_show_null() {
    let app = TestApp::builder()
        .hashing_algorithm(HashingAlgorithm::None)
        .spawn()
        .await;
    let data = pattern(4096);
    let created = app.create_image(&image_meta("none"), Some(&data)).await;
    assert_eq!(created["os_hash_algo"], Value::Null);
    assert_eq!(created["os_hash_value"], Value::Null);
    assert_eq!(created["checksum"], md5_hex(&data).as_str());
    let id = created["id"].as_str().unwrap();
    let head = app.head(&format!("/v1/images/{id}")).send().await.unwrap();
    assert!(header(&head, "x-image-meta-os_hash_algo").is_none());
    assert!(header(&head, "x-image-meta-os_hash_value").is_none());
    assert_eq!(detail_entry(&app, id).await["os_hash_value"], Value::Null);
}

#[tokio::test]
async fn an_image_stored_before_multihash_shows_null() {
    let app = TestApp::spawn().await;
    let created = app
        .create_image(&image_meta("old"), Some(b"old data"))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    // A record as written before multihash existed: the same JSON without the two keys.
    let stored = app.stored(&id).await;
    let mut old = serde_json::to_value(&stored.record).unwrap();
    let object = old.as_object_mut().unwrap();
    object.remove("os_hash_algo");
    object.remove("os_hash_value");
    let old: glance_gateway::model::ImageRecord = serde_json::from_value(old).unwrap();
    let parsed = glance_gateway::model::ImageId::parse(&id).unwrap();
    app.state()
        .registry
        .update::<glance_gateway::registry::RegistryError, _>(&parsed, move |s| {
            s.record = old.clone();
            Ok(())
        })
        .await
        .unwrap();
    let entry = detail_entry(&app, &id).await;
    assert_eq!(entry["os_hash_algo"], Value::Null);
    assert_eq!(entry["os_hash_value"], Value::Null);
    assert_eq!(entry["checksum"], md5_hex(b"old data").as_str());
    let got = app.get(&format!("/v1/images/{id}")).send().await.unwrap();
    assert!(header(&got, "x-image-meta-os_hash_algo").is_none());
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"old data");
}
