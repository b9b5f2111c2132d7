//! Several gateways on one PostgreSQL registry and one S3 bucket, as behind a load balancer:
//! what one replica writes the other serves at once, ids and status transitions stay unique
//! across replicas, and the uploads of a replica killed with SIGKILL are killed by the others
//! once its lease expires, with their partial data removed. Skipped without
//! `GATEWAY_TEST_PG_URL` and the S3 variables (failed instead with
//! `GATEWAY_TEST_REQUIRE_BACKENDS=1`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use glance_gateway::registry::PostgresSettings;
use serde_json::Value;

use crate::common::*;
use crate::crash::Gateway;
use crate::s3::{s3_env, Bucket};

const MIB: usize = 1024 * 1024;

/// Two gateways (trusted headers) on a fresh registry schema and one bucket prefix, or `None`
/// to skip.
async fn pair(label: &str) -> Option<(TestApp, TestApp, Bucket)> {
    let Some(pg) = fresh_postgres().await else {
        eprintln!("skipping: GATEWAY_TEST_PG_URL not set");
        return None;
    };
    let Some(env) = s3_env() else {
        eprintln!("skipping: GATEWAY_TEST_S3_ENDPOINT not set");
        return None;
    };
    let bucket = Bucket::new(&env, label);
    let builder = TestApp::builder()
        .trusted_headers()
        .registry(postgres_registry_file(&pg))
        .store("shared", bucket.store())
        .default_store("shared");
    let a = builder.clone().spawn().await;
    let b = builder.spawn().await;
    Some((a, b, bucket))
}

/// GET `path` from `app` as `who`, read as JSON.
async fn get_json(app: &TestApp, path: &str, who: &Who) -> Value {
    json(app.get(path).headers(who.headers()).send().await.unwrap()).await
}

fn admin() -> Who {
    Who::admin("admin-tenant")
}

#[tokio::test]
async fn what_one_replica_writes_the_other_serves_at_once() {
    let Some((a, b, _bucket)) = pair("serves").await else {
        return;
    };
    let owner = Who::tenant("t1");
    let data = pattern(MIB + 17);
    let img = a
        .create_image_as(
            Some(&owner),
            &[
                ("x-image-meta-name", "shared-one"),
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
                ("x-image-meta-property-os", "linux"),
            ],
            Some(&data),
        )
        .await;
    let id = img["id"].as_str().unwrap();
    let head = b
        .head(&format!("/v1/images/{id}"))
        .headers(owner.headers())
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        header(&head, "x-image-meta-checksum").as_deref(),
        Some(md5_hex(&data).as_str())
    );
    let listed: Value = get_json(&b, "/v1/images/detail?property-os=linux", &owner).await;
    let ids: Vec<&str> = listed["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id]);
    let got = b
        .get(&format!("/v1/images/{id}"))
        .headers(owner.headers())
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
    // A delete through B is seen by A.
    let deleted = b
        .delete(&format!("/v1/images/{id}"))
        .headers(owner.headers())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let head = a
        .head(&format!("/v1/images/{id}"))
        .headers(admin().headers())
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&head, "x-image-meta-status").as_deref(),
        Some("deleted")
    );
}

#[tokio::test]
async fn member_changes_through_one_replica_are_seen_by_the_other() {
    let Some((a, b, _bucket)) = pair("members").await else {
        return;
    };
    let (owner, member) = (Who::tenant("t1"), Who::tenant("t2"));
    let img = a
        .create_image_as(Some(&owner), &[("x-image-meta-name", "private")], None)
        .await;
    let id = img["id"].as_str().unwrap();
    let seen_by_t2 = |app: &TestApp| {
        let req = app
            .get("/v1/images/detail")
            .headers(member.headers())
            .send();
        async move {
            let v: Value = req.await.unwrap().json().await.unwrap();
            v["images"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["id"] == id)
        }
    };
    assert!(!seen_by_t2(&a).await);
    let put = b
        .put(&format!("/v1/images/{id}/members/t2"))
        .headers(owner.headers())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let members: Value = get_json(&a, &format!("/v1/images/{id}/members"), &owner).await;
    assert_eq!(members["members"][0]["member_id"], "t2");
    assert!(seen_by_t2(&a).await, "A does not list the image B shared");
    let shared: Value = get_json(&a, "/v1/shared-images/t2", &member).await;
    assert_eq!(shared["shared_images"][0]["image_id"], id);
    let gone = a
        .delete(&format!("/v1/images/{id}/members/t2"))
        .headers(owner.headers())
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    assert!(!seen_by_t2(&b).await, "B still lists an image A unshared");
}

#[tokio::test]
async fn concurrent_creates_through_both_replicas_never_issue_one_id_twice() {
    let Some((a, b, _bucket)) = pair("ids").await else {
        return;
    };
    // The same requested id through both at once: one 201, one 409.
    for _ in 0..10 {
        let id = uuid::Uuid::new_v4().to_string();
        let create = |app: &TestApp| {
            app.post("/v1/images")
                .headers(admin().headers())
                .header("x-image-meta-id", id.as_str())
                .header("x-image-meta-name", "race")
                .send()
        };
        let (ra, rb) = tokio::join!(create(&a), create(&b));
        let mut codes = vec![ra.unwrap().status().as_u16(), rb.unwrap().status().as_u16()];
        codes.sort();
        assert_eq!(codes, vec![201, 409], "id {id}");
    }
    // Many creates through both: every id distinct, every image listed once.
    let mut tasks = vec![];
    for i in 0..40 {
        let req = if i % 2 == 0 { &a } else { &b }
            .post("/v1/images")
            .headers(admin().headers())
            .header("x-image-meta-name", "many");
        tasks.push(async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let body = resp.text().await.unwrap();
            assert_eq!(status, 201, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            v["image"]["id"].as_str().unwrap().to_owned()
        });
    }
    let ids: Vec<String> = futures::future::join_all(tasks).await;
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());
    let listed: Value = a
        .get("/v1/images/detail?name=many&limit=100")
        .headers(admin().headers())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["images"].as_array().unwrap().len(), 40);
}

#[tokio::test]
async fn concurrent_uploads_into_one_queued_image_through_both_replicas_one_wins() {
    let Some((a, b, _bucket)) = pair("cas").await else {
        return;
    };
    for _ in 0..3 {
        let img = a
            .create_image_as(
                Some(&admin()),
                &[
                    ("x-image-meta-disk_format", "raw"),
                    ("x-image-meta-container_format", "bare"),
                ],
                None,
            )
            .await;
        let id = img["id"].as_str().unwrap();
        let data = pattern(2 * MIB);
        let upload = |app: &TestApp| {
            app.put(&format!("/v1/images/{id}"))
                .headers(admin().headers())
                .header("content-type", "application/octet-stream")
                .body(data.clone())
                .send()
        };
        let (ra, rb) = tokio::join!(upload(&a), upload(&b));
        let mut codes = vec![ra.unwrap().status().as_u16(), rb.unwrap().status().as_u16()];
        codes.sort();
        assert_eq!(codes, vec![200, 409]);
        let got = b
            .get(&format!("/v1/images/{id}"))
            .headers(admin().headers())
            .send()
            .await
            .unwrap();
        assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
    }
    // The owner's usage counts the image once, whichever replica wrote it.
    let usage = a
        .state()
        .registry
        .usage(Some("admin-tenant"))
        .await
        .unwrap();
    assert_eq!(usage, 3 * 2 * MIB as u64);
}

/// A config file for the binary: the registry, one S3 store, its own admin port.
fn replica_config(
    dir: &std::path::Path,
    pg: &PostgresSettings,
    store: &Value,
) -> std::path::PathBuf {
    let config = serde_json::json!({
        "data_dir": dir.join("data"),
        "admin_bind": "127.0.0.1:0",
        "default_store": "shared",
        "stores": { "shared": store },
        "registry": {
            "kind": "postgres",
            "url": pg.url.raw(),
            "password_file": pg.password_file,
            "lease_seconds": pg.lease.as_secs(),
        },
    });
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    path
}

/// One replica killed with SIGKILL in the middle of an upload: the other keeps serving, never
/// kills the upload while the lease lasts, and within two leases kills it and removes its
/// multipart upload.
#[tokio::test]
async fn a_replica_killed_mid_upload_is_cleaned_up_by_the_other_after_its_lease() {
    let Some(pg) = fresh_postgres().await else {
        eprintln!("skipping: GATEWAY_TEST_PG_URL not set");
        return;
    };
    let Some(env) = s3_env() else {
        eprintln!("skipping: GATEWAY_TEST_S3_ENDPOINT not set");
        return;
    };
    let lease = Duration::from_secs(3);
    let pg = PostgresSettings { lease, ..pg };
    let bucket = Bucket::new(&env, "replica-kill9");
    const PART: usize = 5 * MIB;
    let store = bucket.store_table();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Gateway::start(&replica_config(dir_a.path(), &pg, &store)).await;
    let b = Gateway::start(&replica_config(dir_b.path(), &pg, &store)).await;
    let kept_data = pattern(PART + 1000);
    let kept = a.upload(&kept_data).await;

    // An upload in flight through B, which must survive A's death and B's recovery rounds.
    let survivor = uuid::Uuid::new_v4().to_string();
    let survivor_data = pattern(3 * PART);
    let mut survivor_stream = b
        .start_upload(&survivor, survivor_data.len(), &survivor_data[..PART + 10])
        .await;
    let interrupted = uuid::Uuid::new_v4().to_string();
    let data = pattern(3 * PART);
    let stream = a
        .start_upload(&interrupted, data.len(), &data[..2 * PART])
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bucket.uploads().await.contains(&bucket.key(&interrupted)) {
        assert!(
            Instant::now() < deadline,
            "the upload never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.status_of(&interrupted).await, "saving");
    let killed_at = Instant::now();
    a.kill9().await;
    drop(stream);

    // B serves on, and leaves A's upload alone while A's lease may still run.
    let image = b.image(&kept).await;
    assert_eq!(image["status"], "active");
    let got = b
        .client
        .get(b.url(&format!("/v1/images/{kept}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), kept_data.as_slice());
    assert_eq!(b.status_of(&interrupted).await, "saving");

    let deadline = killed_at + 2 * lease + Duration::from_secs(2);
    loop {
        if b.status_of(&interrupted).await == "killed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A's upload was not killed within two leases"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A's last renewal came at most a third of a lease before its death.
    assert!(
        killed_at.elapsed() >= lease * 2 / 3 - Duration::from_millis(200),
        "killed before A's lease expired"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while bucket.uploads().await.contains(&bucket.key(&interrupted)) {
        assert!(
            Instant::now() < deadline,
            "A's multipart upload was left behind"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // B's own upload ran through all of it and completes.
    use tokio::io::AsyncWriteExt;
    survivor_stream
        .write_all(&survivor_data[PART + 10..])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = b.status_of(&survivor).await;
        if status == "active" {
            break;
        }
        assert_eq!(status, "saving", "B's own upload was disturbed");
        assert!(Instant::now() < deadline, "B's upload did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = b
        .client
        .get(b.url(&format!("/v1/images/{survivor}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.bytes().await.unwrap().as_ref(),
        survivor_data.as_slice()
    );
    b.kill9().await;
}

/// A relay to the test database that can stop relaying: a server that accepts connections but
/// never answers.
struct SilentRelay {
    addr: std::net::SocketAddr,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SilentRelay {
    async fn start(upstream: String) -> Self {
        use std::sync::atomic::AtomicBool;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = std::sync::Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, flag.clone()));
                tokio::spawn(pump(sr, cw, flag.clone()));
            }
        });
        Self { addr, frozen }
    }
}

/// Copies `from` to `to`, holding the bytes while `frozen`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The database stops answering: requests answer 503 with the registry's message within the
/// configured timeouts (not 500, not a hang), and all is well again once it answers.
#[tokio::test]
async fn a_silent_registry_database_answers_503_in_time_and_recovers() {
    let Some(pg) = fresh_postgres().await else {
        eprintln!("skipping: GATEWAY_TEST_PG_URL not set");
        return;
    };
    let config = pg.url.config();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        _ => panic!("the test database is on TCP"),
    };
    let relay = SilentRelay::start(format!("{host}:{}", config.get_ports()[0])).await;
    let url = format!(
        "postgres://{}@{}/{}?options={}",
        config.get_user().unwrap(),
        relay.addr,
        config.get_dbname().unwrap_or("postgres"),
        config.get_options().unwrap().replace('=', "%3D")
    );
    let mut file = postgres_registry_file(&pg);
    file.url = Some(url);
    file.connect_timeout = Some(1);
    file.statement_timeout = Some(1);
    let app = TestApp::builder().registry(file).spawn().await;
    let id = app.public_image("db-down", b"abc").await;

    relay
        .frozen
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let resp = app.head(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let resp = app.get("/v1/images/detail").send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let body = resp.text().await.unwrap();
    assert!(body.contains("registry is unavailable"), "{body}");
    assert!(
        !body.contains("127.0.0.1"),
        "the body names the database: {body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    relay
        .frozen
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let resp = app.head(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// A wrong password stops the gateway at startup with a message naming the database, never the
/// password.
#[tokio::test]
async fn a_wrong_database_password_stops_the_gateway_naming_the_database() {
    let Some(pg) = fresh_postgres().await else {
        eprintln!("skipping: GATEWAY_TEST_PG_URL not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("pw");
    std::fs::write(&wrong, "wrong-password-plugh\n").unwrap();
    let mut file = postgres_registry_file(&pg);
    file.password_file = Some(wrong);
    let refused = TestApp::builder().registry(file).refused().await;
    // The database as configured: user, host, port and name.
    let named = pg.url.to_string();
    let named = named.split(" (schema").next().unwrap();
    assert!(refused.contains(named), "{refused}");
    assert!(refused.contains("password"), "{refused}");
    assert!(!refused.contains("plugh"), "{refused}");
}
