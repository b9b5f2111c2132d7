use std::sync::Arc;

use super::*;
use crate::model::{Membership, Timestamp};
use crate::registry::query::Filters;
use crate::registry::{conformance, Registry};

#[tokio::test]
async fn passes_the_conformance_suite() {
    let registry = Registry::new(Arc::new(SledRegistry::temporary().unwrap()));
    conformance::run(registry).await;
}

#[tokio::test]
async fn the_id_is_kept_and_differs_between_registries() {
    let dir = tempfile::tempdir().unwrap();
    let created = Registry::open(dir.path()).unwrap();
    assert!(created.is_new());
    let first = created.id().to_owned();
    drop(created);
    let reopened = Registry::open(dir.path()).unwrap();
    assert_eq!(reopened.id(), first);
    assert!(!reopened.is_new());
    assert_ne!(Registry::temporary().unwrap().id(), first);
}

/// With a tiny `changes-since` window, those lists take the other way (walking the sort index).
#[tokio::test]
async fn passes_the_conformance_suite_with_a_small_changes_window() {
    let registry = Registry::new(Arc::new(SledRegistry::temporary_with_window(3).unwrap()));
    conformance::run(registry).await;
}

#[tokio::test]
async fn records_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let reg = Registry::open(dir.path()).unwrap();
        let mut r = ImageRecord::new(ImageId::random(), Timestamp::now());
        r.is_public = true;
        reg.insert_new(r).await.unwrap().id
    };
    let reg = Registry::open(dir.path()).unwrap();
    assert!(reg.get(&id).await.unwrap().is_some());
    let page = reg
        .list_page(page(Audience::Tenant(None), 10))
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
}

fn page(audience: Audience, limit: u64) -> PageRequest {
    PageRequest {
        audience,
        filters: Filters::default(),
        sort_key: SortKey::CreatedAt,
        sort_dir: SortDir::Desc,
        after: None,
        limit,
    }
}

/// Records a list page decodes, on registries of two sizes: the same, because the page is read
/// from the indexes, not from every record.
#[tokio::test]
async fn a_page_decodes_about_a_page_whatever_the_registry_size() {
    let mut measured = vec![];
    for n in [400, 3000] {
        let engine = SledRegistry::temporary().unwrap();
        let reg = Registry::new(Arc::new(engine.clone()));
        let mut ids = vec![];
        for i in 0..n {
            let mut r = ImageRecord::new(ImageId::random(), Timestamp::now());
            r.owner = Some(format!("t{}", i % 100));
            r.is_public = i % 2 == 0;
            r.disk_format = Some(["qcow2", "raw", "iso", "vmdk"][i % 4].to_owned());
            r.name = Some(format!("image-{i}"));
            r.status = ImageStatus::Active;
            r.properties.insert(
                "os".into(),
                Some(["linux", "windows"][(i / 4) % 2].to_owned()),
            );
            ids.push(reg.insert_new(r).await.unwrap().id);
        }
        // Deleted images are many in an old registry and must not be walked.
        for id in ids.iter().step_by(3) {
            reg.update::<RegistryError, _>(id, |s| {
                s.record.status = ImageStatus::Deleted;
                Ok(())
            })
            .await
            .unwrap();
        }
        let marker = reg.get(&ids[n / 2]).await.unwrap().unwrap().record;
        let requests = vec![
            ("admin", page(Audience::Everything, 25)),
            ("tenant", page(Audience::Tenant(Some("t7".into())), 25)),
            ("anonymous", page(Audience::Tenant(None), 25)),
            (
                "filtered",
                PageRequest {
                    filters: Filters {
                        disk_format: Some("qcow2".into()),
                        properties: vec![("os".into(), "linux".into())],
                        ..Filters::default()
                    },
                    ..page(Audience::Everything, 25)
                },
            ),
            (
                "marker",
                PageRequest {
                    after: Some(marker),
                    ..page(Audience::Everything, 25)
                },
            ),
            (
                "by name",
                PageRequest {
                    sort_key: SortKey::Name,
                    ..page(Audience::Everything, 25)
                },
            ),
        ];
        let mut costs = vec![];
        for (what, req) in requests {
            let before = engine.records_decoded();
            let got = reg.list_page(req).await.unwrap();
            let cost = engine.records_decoded() - before;
            costs.push((what, got.len(), cost));
        }
        measured.push(costs);
    }
    let (small, large) = (&measured[0], &measured[1]);
    for ((what, len_s, cost_s), (_, len_l, cost_l)) in small.iter().zip(large) {
        // The tenant's page is smaller on the small registry (fewer own images); every other
        // page is full on both.
        if *what != "tenant" {
            assert_eq!(len_s, len_l, "{what}");
        }
        assert!(
            *cost_l <= 3 * 25 + 3,
            "{what}: {cost_l} records decoded for a page of 25 out of 3000"
        );
        assert!(
            *cost_l <= cost_s + 3 || *what == "tenant",
            "{what}: {cost_s} records decoded at 400 images, {cost_l} at 3000"
        );
    }
}

/// A registry as schema 1 wrote it (`images` and `member_images` only, `schema_version` "1"):
/// the bytes are fixed here, so the upgrade stays tested against that format.
fn write_schema_1(path: &Path) {
    let db = sled::Config::new().path(path.join("v1")).open().unwrap();
    db.open_tree("meta")
        .unwrap()
        .insert("schema_version", b"1")
        .unwrap();
    let images = db.open_tree("images").unwrap();
    let members = db.open_tree("member_images").unwrap();
    let records = [
        (
            "0f2c8c7e-1d7a-4a8e-9a51-2d1a4c1b0001",
            r#"{"record":{"id":"0f2c8c7e-1d7a-4a8e-9a51-2d1a4c1b0001","name":"cirros","status":"active","size":1024,"virtual_size":null,"disk_format":"qcow2","container_format":"bare","checksum":"c2e5db72bd7fd153f53ede5da5a06de3","min_disk":0,"min_ram":0,"is_public":true,"protected":false,"owner":"tenant-a","created_at":1700000000000001,"updated_at":1700000000000101,"deleted_at":null,"deleted":false,"properties":{"os":"linux"},"location":{"store":"file","key":"0f2c8c7e-1d7a-4a8e-9a51-2d1a4c1b0001"}},"members":[{"image_id":"0f2c8c7e-1d7a-4a8e-9a51-2d1a4c1b0001","member":"tenant-b","can_share":true,"seq":1}]}"#,
        ),
        (
            "0f2c8c7e-1d7a-4a8e-9a51-2d1a4c1b0002",
            r#"{"record":{"id":"0f2c8c7e-1d7a-4a8e-9a51-2d1a4c1b0002","name":"private","status":"active","size":4096,"virtual_size":null,"disk_format":"raw","container_format":"bare","checksum":null,"min_disk":0,"min_ram":0,"is_public":false,"protected":false,"owner":"tenant-a","created_at":1700000000000002,"updated_at":1700000000000102,"deleted_at":null,"deleted":false,"properties":{},"location":null,"remote_url":null}}"#,
        ),
        (
            "0f2c8c7e-1d7a-4a8e-9a51-2d1a4c1b0003",
            r#"{"record":{"id":"0f2c8c7e-1d7a-4a8e-9a51-2d1a4c1b0003","name":"gone","status":"deleted","size":10,"virtual_size":null,"disk_format":"raw","container_format":"bare","checksum":null,"min_disk":0,"min_ram":0,"is_public":true,"protected":false,"owner":"tenant-a","created_at":1700000000000003,"updated_at":1700000000000103,"deleted_at":1700000000000103,"deleted":true,"properties":{},"location":null},"members":[]}"#,
        ),
        (
            "0f2c8c7e-1d7a-4a8e-9a51-2d1a4c1b0004",
            r#"{"record":{"id":"0f2c8c7e-1d7a-4a8e-9a51-2d1a4c1b0004","name":"interrupted","status":"saving","size":0,"virtual_size":null,"disk_format":"raw","container_format":"bare","checksum":null,"min_disk":0,"min_ram":0,"is_public":false,"protected":false,"owner":"tenant-c","created_at":1700000000000004,"updated_at":1700000000000104,"deleted_at":null,"deleted":false,"properties":{},"location":{"store":"file","key":"0f2c8c7e-1d7a-4a8e-9a51-2d1a4c1b0004"}},"members":[]}"#,
        ),
    ];
    for (id, json) in records {
        images.insert(id, json.as_bytes()).unwrap();
    }
    members
        .insert(
            &b"tenant-b\x000f2c8c7e-1d7a-4a8e-9a51-2d1a4c1b0001"[..],
            &[],
        )
        .unwrap();
    db.flush().unwrap();
}

#[tokio::test]
async fn a_schema_1_registry_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    write_schema_1(dir.path());
    let reg = Registry::open(dir.path()).unwrap();
    let id = |n: u8| ImageId::parse(&format!("0f2c8c7e-1d7a-4a8e-9a51-2d1a4c1b000{n}")).unwrap();
    let first = reg.get(&id(1)).await.unwrap().unwrap();
    assert_eq!(first.record.name.as_deref(), Some("cirros"));
    assert_eq!(first.record.created_at.micros(), 1_700_000_000_000_001);
    // Records written before multihash carry no digest.
    assert_eq!(first.record.os_hash_algo, None);
    assert_eq!(first.record.os_hash_value, None);
    assert_eq!(
        first.members,
        vec![Membership {
            image_id: id(1),
            member: "tenant-b".into(),
            can_share: true,
            seq: 1
        }]
    );
    let ids = |page: Vec<ImageRecord>| page.into_iter().map(|r| r.id).collect::<Vec<_>>();
    // Live images, newest first; the deleted one only with changes-since.
    assert_eq!(
        ids(reg.list_page(page(Audience::Everything, 10)).await.unwrap()),
        vec![id(4), id(2), id(1)]
    );
    assert_eq!(
        ids(reg
            .list_page(page(Audience::Tenant(Some("tenant-b".into())), 10))
            .await
            .unwrap()),
        vec![id(1)]
    );
    let since = PageRequest {
        filters: Filters {
            changes_since: Some(Timestamp::from_datetime(time::OffsetDateTime::UNIX_EPOCH)),
            ..Filters::default()
        },
        ..page(Audience::Tenant(Some("tenant-a".into())), 10)
    };
    assert_eq!(
        ids(reg.list_page(since).await.unwrap()),
        vec![id(3), id(2), id(1)]
    );
    assert_eq!(reg.usage(Some("tenant-a")).await.unwrap(), 1024 + 4096);
    let saving = reg.in_state(ImageStatus::Saving, None, 10).await.unwrap();
    assert_eq!(saving.len(), 1);
    assert_eq!(saving[0].record.id, id(4));
    let counts = reg.status_counts().await.unwrap();
    assert!(counts.contains(&(ImageStatus::Active, 2)));
    assert!(counts.contains(&(ImageStatus::Deleted, 1)));
    assert_eq!(reg.shared_with("tenant-b").await.unwrap().len(), 1);
    // The upgrade ran once: a reopened registry is already at schema 2, keeps the id the
    // upgrade gave it, and changes keep the indexes right.
    let registry_id = reg.id().to_owned();
    drop(reg);
    let reg = Registry::open(dir.path()).unwrap();
    assert_eq!(reg.id(), registry_id);
    assert!(!reg.is_new());
    reg.update::<RegistryError, _>(&id(2), |s| {
        s.record.is_public = true;
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(
        ids(reg
            .list_page(page(Audience::Tenant(None), 10))
            .await
            .unwrap()),
        vec![id(2), id(1)]
    );
}

/// Writes queued while a flush runs share the next one, and none is answered before a flush
/// that began after it was applied has finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_flushes() {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    let writer = Arc::new(super::writer::Writer::start().unwrap());
    let started = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let flush: super::writer::Flush = {
        let started = Arc::clone(&started);
        Arc::new(move || {
            started.lock().unwrap().push(Instant::now());
            std::thread::sleep(Duration::from_millis(50));
            Ok(())
        })
    };
    let writes = 8;
    let tasks: Vec<_> = (0..writes)
        .map(|_| {
            let (writer, flush, started) = (
                Arc::clone(&writer),
                Arc::clone(&flush),
                Arc::clone(&started),
            );
            tokio::spawn(async move {
                let applied = writer
                    .run(&flush, || Ok::<_, RegistryError>(Instant::now()))
                    .await
                    .expect("answered")
                    .unwrap();
                let covered = started
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|&t| t >= applied && t + Duration::from_millis(50) <= Instant::now());
                assert!(
                    covered,
                    "answered before a flush that began after the write"
                );
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let n = writer.flushes();
    assert!((1..=3).contains(&n), "{writes} writes ran {n} flushes");
}

/// A flush that fails fails every write it was to cover; a write that fails is answered with
/// its own error.
#[tokio::test]
async fn a_failed_flush_fails_the_writes_it_covers() {
    let writer = super::writer::Writer::start().unwrap();
    let failing: super::writer::Flush =
        Arc::new(|| Err(RegistryError::Storage("disk full".into())));
    let got = writer
        .run(&failing, || Ok::<_, RegistryError>(1))
        .await
        .expect("answered");
    assert!(matches!(got, Err(RegistryError::Storage(e)) if e == "disk full"));
    let ok: super::writer::Flush = Arc::new(|| Ok(()));
    let refused = writer
        .run(&ok, || Err::<(), _>(RegistryError::NotFound))
        .await
        .expect("answered");
    assert!(matches!(refused, Err(RegistryError::NotFound)));
    let panicked = writer
        .run(&ok, || -> Result<(), RegistryError> {
            panic!("a broken write")
        })
        .await;
    assert!(panicked.is_none());
    // The writer outlives a panicking write.
    assert!(writer
        .run(&ok, || Ok::<_, RegistryError>(()))
        .await
        .is_some());
}

/// The whole-registry walk of the sweep and the admin runs: every record once, deleted and
/// killed ones too, across several batches, in id order, decoding each record once (not a
/// `changes-since` window's worth per batch).
#[tokio::test]
async fn walking_every_record_crosses_batches_and_includes_the_gone() {
    use futures::TryStreamExt;

    let engine =
        Arc::new(SledRegistry::temporary_with_window(crate::registry::WALK_BATCH).unwrap());
    let reg = Registry::new(engine.clone());
    let n = crate::registry::WALK_BATCH * 2 + 7;
    let mut ids = vec![];
    for i in 0..n {
        let mut r = ImageRecord::new(ImageId::random(), Timestamp::now());
        r.status = [
            ImageStatus::Active,
            ImageStatus::Deleted,
            ImageStatus::Killed,
        ][i % 3];
        ids.push(reg.insert_new(r).await.unwrap().id);
    }
    ids.sort();
    let before = engine.records_decoded();
    let walked: Vec<ImageId> = reg
        .walk_records()
        .map_ok(|r| r.id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(walked, ids);
    let decoded = engine.records_decoded() - before;
    assert!(decoded <= n as u64, "walking {n} records decoded {decoded}");
}

/// A lookup is answered while walks that read the whole registry are still running: walks do
/// not take the readers lookups need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_not_held_up_behind_long_walks() {
    let reg = Registry::new(Arc::new(SledRegistry::temporary().unwrap()));
    let mut last = None;
    for _ in 0..2000 {
        let r = ImageRecord::new(ImageId::random(), Timestamp::now());
        last = Some(reg.insert_new(r).await.unwrap().id);
    }
    let matches_nothing = PageRequest {
        filters: Filters {
            properties: vec![("os".into(), "none of them".into())],
            ..Filters::default()
        },
        ..page(Audience::Everything, 25)
    };
    let walks: Vec<_> = (0..4)
        .map(|_| {
            let (reg, req) = (reg.clone(), matches_nothing.clone());
            tokio::spawn(async move { reg.list_page(req).await.unwrap() })
        })
        .collect();
    // Let every walk reach its thread first.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(reg.get(&last.unwrap()).await.unwrap().is_some());
    assert!(
        walks.iter().all(|w| !w.is_finished()),
        "a lookup waited for a walk of the whole registry"
    );
    for w in walks {
        assert!(w.await.unwrap().is_empty());
    }
}
