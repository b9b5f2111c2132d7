//! The PostgreSQL engine on a real server (`GATEWAY_TEST_PG_URL`, from `scripts/pg-backend.sh`):
//! each test works in a fresh schema. Skipped when the variable is unset, unless
//! `GATEWAY_TEST_REQUIRE_BACKENDS=1`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::model::Timestamp;
use crate::registry::{conformance, Registry};

/// The test server's settings, or `None` to skip.
fn base() -> Option<PostgresSettings> {
    let url = stores::test_backends::gate("GATEWAY_TEST_PG_URL")?;
    let mut settings = PostgresSettings::new(DatabaseUrl::parse(&url).expect("a valid test URL"));
    settings.password_file = std::env::var_os("GATEWAY_TEST_PG_PASSWORD_FILE").map(Into::into);
    Some(settings)
}

async fn fresh() -> Option<PostgresSettings> {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    Some(
        PostgresRegistry::create_schema(&base()?, &schema)
            .await
            .expect("create a schema"),
    )
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let Some(settings) = fresh().await else {
        return;
    };
    let registry = Registry::new(Arc::new(PostgresRegistry::open(&settings).await.unwrap()));
    conformance::run(registry).await;
}

#[tokio::test]
async fn replicas_starting_together_migrate_once_and_share_the_id() {
    let Some(settings) = fresh().await else {
        return;
    };
    let opened = futures::future::join_all(
        (0..4).map(|_| async { PostgresRegistry::open(&settings).await.unwrap() }),
    )
    .await;
    let ids: Vec<&str> = opened.iter().map(|r| r.id()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(opened.iter().filter(|r| r.is_new()).count(), 1);
    // A record one writes, another reads.
    let record = ImageRecord::new(ImageId::random(), Timestamp::now());
    opened[0].insert_new(record.clone()).await.unwrap();
    assert!(opened[3].get(&record.id).await.unwrap().is_some());
    assert!(matches!(
        opened[2].insert_new(record.clone()).await,
        Err(RegistryError::Conflict(_))
    ));
}

#[tokio::test]
async fn a_wrong_password_or_database_fails_naming_the_database_only() {
    let Some(settings) = base() else { return };
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("pw");
    std::fs::write(&wrong, "not-the-password-xyzzy\n").unwrap();
    let bad = PostgresSettings {
        password_file: Some(wrong),
        ..settings.clone()
    };
    let err = PostgresRegistry::open(&bad).await.unwrap_err().to_string();
    assert!(err.contains(&settings.url.to_string()), "{err}");
    assert!(!err.contains("xyzzy"), "{err}");
    let mut config = settings.url.config();
    config.dbname("no_such_database_here");
    let text = format!(
        "postgres://{}@{}:{}/no_such_database_here",
        config.get_user().unwrap(),
        match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            _ => "localhost".into(),
        },
        config.get_ports()[0]
    );
    let missing = PostgresSettings {
        url: DatabaseUrl::parse(&text).unwrap(),
        ..settings
    };
    let err = PostgresRegistry::open(&missing)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no_such_database_here"), "{err}");
}

/// A TCP relay to the test server that can stop relaying (a server that accepts connections
/// but never answers) or cut every connection (a server going down).
struct Relay {
    addr: std::net::SocketAddr,
    frozen: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl Relay {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (f, c) = (frozen.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (f, c) = (f.clone(), c.clone());
                tokio::spawn(async move {
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        _ = pump(cr, sw, f.clone()) => {}
                        _ = pump(sr, cw, f) => {}
                        _ = c.notified() => {}
                    }
                });
            }
        });
        Self { addr, frozen, cut }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn through(settings: &PostgresSettings, relay: &Relay) -> PostgresSettings {
    let config = settings.url.config();
    let mut text = format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap(),
        relay.addr,
        config.get_dbname().unwrap_or("postgres")
    );
    if let Some(options) = config.get_options() {
        text.push_str(&format!(
            "?options={}",
            options.replace(' ', "%20").replace('=', "%3D")
        ));
    }
    PostgresSettings {
        url: DatabaseUrl::parse(&text).unwrap(),
        connect_timeout: Duration::from_secs(1),
        statement_timeout: Duration::from_secs(1),
        ..settings.clone()
    }
}

fn upstream(settings: &PostgresSettings) -> String {
    let config = settings.url.config();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        _ => panic!("the test server is on TCP"),
    };
    format!("{host}:{}", config.get_ports()[0])
}

#[tokio::test]
async fn a_silent_or_restarting_server_answers_unavailable_in_time_and_the_pool_recovers() {
    let Some(settings) = fresh().await else {
        return;
    };
    let relay = Relay::start(upstream(&settings)).await;
    let settings = through(&settings, &relay);
    let registry = PostgresRegistry::open(&settings).await.unwrap();
    let record = registry
        .insert_new(ImageRecord::new(ImageId::random(), Timestamp::now()))
        .await
        .unwrap();

    // Connections accepted, nothing answered.
    relay.frozen.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let err = registry.get(&record.id).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    relay.frozen.store(false, Ordering::Relaxed);
    assert!(registry.get(&record.id).await.unwrap().is_some());

    // Every connection cut (a restart): one call may fail, and then the pool reconnects.
    relay.cut.notify_waiters();
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Err(e) = registry.get(&record.id).await {
        assert!(matches!(e, RegistryError::Unavailable(_)), "{e}");
    }
    assert!(registry.get(&record.id).await.unwrap().is_some());

    // A server that never answers at startup.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_relay = Relay {
        addr: silent.local_addr().unwrap(),
        frozen: Arc::default(),
        cut: Arc::default(),
    };
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let started = Instant::now();
    let err = PostgresRegistry::open(&through(&settings, &silent_relay))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn only_uploads_of_replicas_whose_lease_expired_are_interrupted() {
    let Some(settings) = fresh().await else {
        return;
    };
    let settings = PostgresSettings {
        lease: Duration::from_secs(1),
        ..settings
    };
    let a = PostgresRegistry::open(&settings).await.unwrap();
    let b = PostgresRegistry::open(&settings).await.unwrap();
    let saving = |reg: &PostgresRegistry| {
        let reg = reg.clone();
        async move {
            let r = reg
                .insert_new(ImageRecord::new(ImageId::random(), Timestamp::now()))
                .await
                .unwrap();
            Registry::new(Arc::new(reg))
                .update::<RegistryError, _>(&r.id, |s| {
                    s.record.status = ImageStatus::Saving;
                    Ok(())
                })
                .await
                .unwrap();
            r.id
        }
    };
    let of_a = saving(&a).await;
    let of_b = saving(&b).await;
    let ids = |v: Vec<StoredImage>| v.into_iter().map(|s| s.record.id).collect::<Vec<_>>();
    assert!(b.interrupted(false, None, 10).await.unwrap().is_empty());
    assert_eq!(
        ids(b.interrupted(true, None, 10).await.unwrap()),
        vec![of_b.clone()]
    );
    assert_eq!(
        ids(a.interrupted(true, None, 10).await.unwrap()),
        vec![of_a.clone()]
    );
    // Live replicas keep renewing: past the lease, still nothing of theirs is interrupted.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(b.interrupted(false, None, 10).await.unwrap().is_empty());
    drop(a);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        ids(b.interrupted(false, None, 10).await.unwrap()),
        vec![of_a]
    );
}

#[tokio::test]
async fn one_replica_at_a_time_runs_a_chore() {
    let Some(settings) = fresh().await else {
        return;
    };
    let a = PostgresRegistry::open(&settings).await.unwrap();
    let b = PostgresRegistry::open(&settings).await.unwrap();
    let held = a.chore_lock("scrub").await.unwrap().expect("free at first");
    assert!(b.chore_lock("scrub").await.unwrap().is_none());
    assert!(
        b.chore_lock("sweep").await.unwrap().is_some(),
        "another chore"
    );
    drop(held);
    let mut free = false;
    for _ in 0..50 {
        if b.chore_lock("scrub").await.unwrap().is_some() {
            free = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(free, "the lock outlived its guard");
}

/// `registry copy` from the sled registry at `path`, once the last handle of the one the test
/// wrote has let go of its lock: that handle may drop on a blocking thread just after the
/// test's own scope ends.
async fn copy_once_free(
    path: &std::path::Path,
    settings: &PostgresSettings,
) -> crate::registry::copy::Copied {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match crate::registry::copy::sled_to_postgres(path, settings).await {
            Ok(copied) => return copied,
            Err(e)
                if matches!(e.downcast_ref(), Some(RegistryError::InUse))
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("registry copy: {e:#}"),
        }
    }
}

#[tokio::test]
async fn a_sled_registry_copies_over_with_members_reserved_ids_and_its_id() {
    let Some(settings) = fresh().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (sled_id, images) = {
        let sled = Registry::open(dir.path()).unwrap();
        let mut images = vec![];
        for i in 0..30u64 {
            let mut r = ImageRecord::new(ImageId::random(), Timestamp::now());
            r.owner = Some(format!("t{}", i % 3));
            r.size = i * 10;
            let id = sled.insert_new(r).await.unwrap().id;
            let stored = sled
                .update::<RegistryError, _>(&id, move |s| {
                    s.record.status = match i % 5 {
                        0 => ImageStatus::Deleted,
                        1 => ImageStatus::Queued,
                        _ => ImageStatus::Active,
                    };
                    if i % 4 == 0 {
                        s.members = vec![crate::model::Membership {
                            image_id: s.record.id.clone(),
                            member: "m1".into(),
                            can_share: true,
                            seq: i,
                        }];
                    }
                    Ok(())
                })
                .await
                .unwrap();
            images.push(stored);
        }
        (sled.id().to_owned(), images)
    };
    let copied = copy_once_free(dir.path(), &settings).await;
    assert_eq!((copied.images, copied.skipped, copied.members), (30, 0, 8));
    // Again: nothing new, counts still match.
    let again = copy_once_free(dir.path(), &settings).await;
    assert_eq!((again.images, again.skipped), (0, 30));

    let pg = PostgresRegistry::open(&settings).await.unwrap();
    assert_eq!(
        pg.id(),
        sled_id,
        "the stores' markers name the sled registry's id"
    );
    for image in &images {
        assert_eq!(
            pg.get(&image.record.id).await.unwrap().as_ref(),
            Some(image)
        );
        assert!(matches!(
            pg.insert_new(image.record.clone()).await,
            Err(RegistryError::Conflict(_))
        ));
    }
    assert_eq!(pg.shared_with("m1").await.unwrap().len(), 8);
    let sled = Registry::open(dir.path()).unwrap();
    for owner in ["t0", "t1", "t2"] {
        assert_eq!(
            pg.usage(Some(owner)).await.unwrap(),
            sled.usage(Some(owner)).await.unwrap()
        );
    }
}
