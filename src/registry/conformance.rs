//! The registry conformance suite: the checks every [`RegistryEngine`](super::RegistryEngine)
//! must pass, each panicking with a message on failure. Lists are compared with a reference
//! model (filter and sort everything in memory, the way the API defines a page) over a seeded
//! mix of owners, visibility, members, statuses and equal sort values.

use std::collections::BTreeMap;

use crate::model::{ImageId, ImageRecord, ImageStatus, Membership, Timestamp};

use super::query::{order, Filters, SortDir, SortKey};
use super::{Audience, PageRequest, Registry, RegistryError, StoredImage};

/// Runs every check on an empty registry.
pub async fn run(registry: Registry) {
    ids_are_reserved(&registry).await;
    updates_compare_and_swap(&registry).await;
    memberships_and_counters(&registry).await;
    state_walks(&registry).await;
    lists_match_the_reference(&registry).await;
}

fn at(micros: i64) -> Timestamp {
    Timestamp::from_datetime(
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
            .expect("a valid time"),
    )
}

fn record(owner: Option<&str>) -> ImageRecord {
    let mut r = ImageRecord::new(ImageId::random(), Timestamp::now());
    r.owner = owner.map(str::to_owned);
    r
}

async fn set(registry: &Registry, id: &ImageId, f: impl Fn(&mut StoredImage) + Send + 'static) {
    registry
        .update::<RegistryError, _>(id, move |s| {
            f(s);
            Ok(())
        })
        .await
        .expect("update");
}

pub async fn ids_are_reserved(registry: &Registry) {
    let r = registry.insert_new(record(None)).await.expect("insert");
    assert!(
        matches!(
            registry.insert_new(r.clone()).await,
            Err(RegistryError::Conflict(_))
        ),
        "an id is stored twice"
    );
    set(registry, &r.id, |s| s.record.status = ImageStatus::Deleted).await;
    assert!(
        matches!(
            registry.insert_new(r.clone()).await,
            Err(RegistryError::Conflict(_))
        ),
        "a deleted image's id was reused"
    );
    assert_eq!(
        registry.get(&r.id).await.unwrap().unwrap().record.status,
        ImageStatus::Deleted
    );
    assert!(registry.get(&ImageId::random()).await.unwrap().is_none());
}

#[derive(Debug, PartialEq)]
struct Refused;

impl From<RegistryError> for Refused {
    fn from(e: RegistryError) -> Self {
        panic!("unexpected registry error {e}")
    }
}

pub async fn updates_compare_and_swap(registry: &Registry) {
    let r = registry.insert_new(record(Some("cas"))).await.unwrap();
    let refused = registry
        .update::<Refused, _>(&r.id, |s| {
            s.record.name = Some("changed".into());
            Err(Refused)
        })
        .await;
    assert_eq!(
        refused.unwrap_err(),
        Refused,
        "the caller's error comes back"
    );
    assert_eq!(
        registry.get(&r.id).await.unwrap().unwrap().record.name,
        None,
        "a refused change wrote something"
    );
    let missing = registry
        .update::<RegistryError, _>(&ImageId::random(), |_| Ok(()))
        .await;
    assert!(matches!(missing, Err(RegistryError::NotFound)));
    // Concurrent read-modify-writes all land: none works on a stale copy.
    let mut tasks = vec![];
    for _ in 0..16 {
        let (registry, id) = (registry.clone(), r.id.clone());
        tasks.push(tokio::spawn(async move {
            set(&registry, &id, |s| s.record.min_ram += 1).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        registry.get(&r.id).await.unwrap().unwrap().record.min_ram,
        16
    );
    // A status transition is a compare-and-swap: of two racing queued → saving, one wins.
    let mut tasks = vec![];
    for _ in 0..2 {
        let (registry, id) = (registry.clone(), r.id.clone());
        tasks.push(tokio::spawn(async move {
            registry
                .update::<Refused, _>(&id, |s| {
                    if s.record.status != ImageStatus::Queued {
                        return Err(Refused);
                    }
                    s.record.status = ImageStatus::Saving;
                    Ok(())
                })
                .await
                .is_ok()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1, "both racing transitions succeeded");
    set(registry, &r.id, |s| s.record.status = ImageStatus::Killed).await;
}

fn member(id: &ImageId, name: &str, seq: u64) -> Membership {
    Membership {
        image_id: id.clone(),
        member: name.to_owned(),
        can_share: false,
        seq,
    }
}

fn count_of(counts: &[(ImageStatus, u64)], status: ImageStatus) -> u64 {
    counts
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, n)| *n)
}

pub async fn memberships_and_counters(registry: &Registry) {
    let owner = format!("owner-{}", ImageId::random());
    let other = format!("other-{}", ImageId::random());
    let before = registry.status_counts().await.unwrap();
    assert_eq!(registry.usage(Some(&owner)).await.unwrap(), 0);

    let a = registry.insert_new(record(Some(&owner))).await.unwrap();
    let b = registry.insert_new(record(Some(&owner))).await.unwrap();
    let counts = registry.status_counts().await.unwrap();
    assert_eq!(
        count_of(&counts, ImageStatus::Queued),
        count_of(&before, ImageStatus::Queued) + 2
    );
    set(registry, &a.id, |s| {
        s.record.status = ImageStatus::Active;
        s.record.size = 100;
    })
    .await;
    set(registry, &b.id, |s| {
        s.record.status = ImageStatus::Active;
        s.record.size = 20;
    })
    .await;
    assert_eq!(registry.usage(Some(&owner)).await.unwrap(), 120);
    // Changing the owner moves the bytes.
    set(registry, &b.id, {
        let other = other.clone();
        move |s| s.record.owner = Some(other.clone())
    })
    .await;
    assert_eq!(registry.usage(Some(&owner)).await.unwrap(), 100);
    assert_eq!(registry.usage(Some(&other)).await.unwrap(), 20);
    set(registry, &b.id, |s| s.record.status = ImageStatus::Killed).await;
    assert_eq!(registry.usage(Some(&other)).await.unwrap(), 0);

    let m = format!("member-{}", ImageId::random());
    set(registry, &a.id, {
        let m = m.clone();
        move |s| s.members = vec![member(&s.record.id, &m, 1)]
    })
    .await;
    let shared = registry.shared_with(&m).await.unwrap();
    assert_eq!(shared.len(), 1);
    assert_eq!(shared[0].record.id, a.id);
    assert!(registry
        .shared_with(&m[..m.len() - 1])
        .await
        .unwrap()
        .is_empty());
    set(registry, &a.id, |s| {
        s.members.clear();
        s.record.status = ImageStatus::Deleted;
    })
    .await;
    assert!(registry.shared_with(&m).await.unwrap().is_empty());
    assert_eq!(registry.usage(Some(&owner)).await.unwrap(), 0);
    let after = registry.status_counts().await.unwrap();
    assert_eq!(
        count_of(&after, ImageStatus::Deleted),
        count_of(&before, ImageStatus::Deleted) + 1
    );
    assert_eq!(
        count_of(&after, ImageStatus::Killed),
        count_of(&before, ImageStatus::Killed) + 1
    );
    assert_eq!(
        after.iter().map(|(_, n)| n).sum::<u64>(),
        before.iter().map(|(_, n)| n).sum::<u64>() + 2,
        "every image counts once"
    );
}

pub async fn state_walks(registry: &Registry) {
    let mut saving = vec![];
    for _ in 0..5 {
        let r = registry.insert_new(record(None)).await.unwrap();
        set(registry, &r.id, |s| s.record.status = ImageStatus::Saving).await;
        saving.push(r.id);
    }
    let pending = registry.insert_new(record(None)).await.unwrap();
    set(registry, &pending.id, |s| {
        s.record.status = ImageStatus::PendingDelete
    })
    .await;
    saving.sort();
    let mut walked = vec![];
    let mut after: Option<ImageId> = None;
    loop {
        let batch = registry
            .in_state(ImageStatus::Saving, after.as_ref(), 2)
            .await
            .unwrap();
        assert!(batch.len() <= 2);
        let Some(last) = batch.last() else { break };
        after = Some(last.record.id.clone());
        walked.extend(batch.into_iter().map(|s| s.record.id));
    }
    assert_eq!(walked, saving, "the saving walk");
    let pend = registry
        .in_state(ImageStatus::PendingDelete, None, 100)
        .await
        .unwrap();
    assert!(pend.iter().any(|s| s.record.id == pending.id));
    for id in &saving {
        set(registry, id, |s| s.record.status = ImageStatus::Killed).await;
    }
    assert!(registry
        .in_state(ImageStatus::Saving, None, 100)
        .await
        .unwrap()
        .is_empty());
}

/// A small deterministic generator, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const OWNERS: &[&str] = &["t0", "t1", "t2", "t3"];

fn reference(all: &[StoredImage], req: &PageRequest) -> Vec<ImageId> {
    let with_changes = req.filters.changes_since.is_some();
    let mut out: Vec<&ImageRecord> = all
        .iter()
        .filter(|s| {
            let r = &s.record;
            let live = !r.status.is_deleted() && r.status != ImageStatus::Killed;
            let visible = match &req.audience {
                Audience::Everything => true,
                Audience::NonPublic => !r.is_public,
                Audience::Tenant(o) => {
                    r.is_public
                        || o.as_deref().is_some_and(|o| {
                            r.owner.as_deref() == Some(o) || s.membership(o).is_some()
                        })
                }
            };
            (live || with_changes) && visible && req.filters.matches(r)
        })
        .map(|s| &s.record)
        .collect();
    out.sort_by(|a, b| order(a, b, req.sort_key, req.sort_dir));
    let start = match &req.after {
        Some(m) => out.partition_point(|r| {
            order(r, m, req.sort_key, req.sort_dir) != std::cmp::Ordering::Greater
        }),
        None => 0,
    };
    out.into_iter()
        .skip(start)
        .take(req.limit as usize)
        .map(|r| r.id.clone())
        .collect()
}

/// Seeds a mix of images; returns them as stored.
async fn seed(registry: &Registry, n: usize) -> Vec<StoredImage> {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let statuses = [
        ImageStatus::Active,
        ImageStatus::Active,
        ImageStatus::Queued,
        ImageStatus::Saving,
        ImageStatus::Killed,
        ImageStatus::Deleted,
        ImageStatus::PendingDelete,
        ImageStatus::Deactivated,
    ];
    let mut out = vec![];
    for i in 0..n {
        let mut r = ImageRecord::new(ImageId::random(), at(1_000_000 + (i as i64 / 3)));
        r.owner = rng.chance(90).then(|| rng.pick(OWNERS).to_string());
        r.name = rng.chance(85).then(|| {
            rng.pick(&["alpha", "beta", "gamma", "a\0b", ""])
                .to_string()
        });
        r.disk_format = rng
            .chance(90)
            .then(|| rng.pick(&["qcow2", "raw", "iso"]).to_string());
        r.container_format = Some(rng.pick(&["bare", "ovf"]).to_string());
        r.size = *rng.pick(&[0, 5, 5, 1 << 20, u64::MAX]);
        r.min_ram = rng.next() % 3;
        r.is_public = rng.chance(50);
        r.protected = rng.chance(20);
        if rng.chance(60) {
            r.properties.insert(
                "os".into(),
                Some(rng.pick(&["linux", "windows"]).to_string()),
            );
        }
        let id = r.id.clone();
        registry.insert_new(r).await.unwrap();
        let status = *rng.pick(&statuses);
        let updated = at(2_000_000 + (rng.next() % 50) as i64);
        let members: Vec<Membership> = OWNERS
            .iter()
            .enumerate()
            .filter(|_| rng.chance(15))
            .map(|(k, m)| member(&id, m, k as u64))
            .collect();
        let stored = registry
            .update::<RegistryError, _>(&id, move |s| {
                s.record.status = status;
                s.record.updated_at = updated;
                if status.is_deleted() {
                    s.record.deleted = true;
                } else {
                    s.members = members.clone();
                }
                Ok(())
            })
            .await
            .unwrap();
        out.push(stored);
    }
    out
}

/// Pages through a whole list with markers and compares every page with the reference.
async fn compare(registry: &Registry, all: &[StoredImage], mut req: PageRequest, what: &str) {
    let by_id: BTreeMap<&ImageId, &ImageRecord> =
        all.iter().map(|s| (&s.record.id, &s.record)).collect();
    for _ in 0..1000 {
        let want = reference(all, &req);
        let got: Vec<ImageId> = registry
            .list_page(req.clone())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(got, want, "{what}, after {:?}", req.after.map(|r| r.id));
        let Some(last) = got.last() else { return };
        req.after = Some(by_id[last].clone());
    }
    panic!("{what}: the walk did not end");
}

pub async fn lists_match_the_reference(registry: &Registry) {
    // Only this check's images: earlier checks left others in the registry.
    let before: Vec<ImageId> = registry
        .all()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.record.id)
        .collect();
    let mine = seed(registry, 240).await;
    let mut all = mine.clone();
    for id in before {
        all.push(registry.get(&id).await.unwrap().unwrap());
    }
    let audiences = [
        Audience::Everything,
        Audience::NonPublic,
        Audience::Tenant(None),
        Audience::Tenant(Some("t1".into())),
        Audience::Tenant(Some("t3".into())),
    ];
    let filter_sets = [
        Filters::default(),
        Filters {
            disk_format: Some("qcow2".into()),
            properties: vec![("os".into(), "linux".into())],
            ..Filters::default()
        },
        Filters {
            name: Some("a\0b".into()),
            ..Filters::default()
        },
        Filters {
            status: Some("active".into()),
            size_min: Some(5),
            ..Filters::default()
        },
        Filters {
            changes_since: Some(at(2_000_025)),
            ..Filters::default()
        },
        Filters {
            changes_since: Some(at(0)),
            container_format: Some("ovf".into()),
            protected: Some(false),
            ..Filters::default()
        },
    ];
    for audience in &audiences {
        for filters in &filter_sets {
            for key in SortKey::ALL {
                for dir in [SortDir::Asc, SortDir::Desc] {
                    let req = PageRequest {
                        audience: audience.clone(),
                        filters: filters.clone(),
                        sort_key: key,
                        sort_dir: dir,
                        after: None,
                        limit: 7,
                    };
                    let what = format!("{audience:?} {filters:?} {key:?} {dir:?}");
                    compare(registry, &all, req, &what).await;
                }
            }
        }
    }
    // A marker that is not in the list (deleted, another tenant's) still places the page.
    let outsider = mine
        .iter()
        .find(|s| s.record.status == ImageStatus::Deleted)
        .expect("a deleted image");
    for key in [SortKey::CreatedAt, SortKey::Name, SortKey::Size] {
        let req = PageRequest {
            audience: Audience::Tenant(Some("t2".into())),
            filters: Filters {
                disk_format: Some("raw".into()),
                ..Filters::default()
            },
            sort_key: key,
            sort_dir: SortDir::Desc,
            after: Some(outsider.record.clone()),
            limit: 5,
        };
        let got: Vec<ImageId> = registry
            .list_page(req.clone())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(got, reference(&all, &req), "outside marker, {key:?}");
    }
    let zero = registry
        .list_page(PageRequest {
            audience: Audience::Everything,
            filters: Filters::default(),
            sort_key: SortKey::CreatedAt,
            sort_dir: SortDir::Desc,
            after: None,
            limit: 0,
        })
        .await
        .unwrap();
    assert!(zero.is_empty(), "limit 0");
}
