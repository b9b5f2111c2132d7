//! The registry: image records and memberships in an embedded sled database. Every sled call
//! runs on a blocking thread, every change is flushed to disk before it returns, and changes that
//! touch an image and the member index commit in one transaction. Nothing outside this module
//! sees sled.

mod keys;

use std::path::Path;
use std::sync::Arc;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::Tree;

use crate::model::{ImageId, ImageRecord, Membership};

const SCHEMA_VERSION: &[u8] = b"1";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("image not found")]
    NotFound,
    #[error("an image with identifier {0} already exists")]
    Conflict(ImageId),
    #[error("the registry is in use by another process")]
    InUse,
    #[error("registry storage failed: {0}")]
    Storage(String),
    #[error("corrupt registry record: {0}")]
    Corrupt(String),
}

impl From<sled::Error> for RegistryError {
    fn from(e: sled::Error) -> Self {
        match e {
            // sled locks its files exclusively and reports a held lock only in this message:
            // another process (a running gateway) has the registry open.
            sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock") => {
                Self::InUse
            }
            e => Self::Storage(e.to_string()),
        }
    }
}

/// What the images tree holds per id: the record and its memberships, so both change together.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredImage {
    pub record: ImageRecord,
    #[serde(default)]
    pub members: Vec<Membership>,
}

struct Inner {
    db: sled::Db,
    /// This registry's id, which store ownership markers name.
    id: String,
    /// Whether this process created the registry (it knows no image of any store yet).
    created_now: bool,
    images: Tree,
    /// `member 0x00 image_id` → empty: which images a member was given.
    member_images: Tree,
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

fn encode(image: &StoredImage) -> Result<Vec<u8>, RegistryError> {
    serde_json::to_vec(image).map_err(|e| RegistryError::Corrupt(e.to_string()))
}

fn decode(bytes: &[u8]) -> Result<StoredImage, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Corrupt(e.to_string()))
}

impl Registry {
    /// Opens (or creates) the registry under `path` (data lives in a versioned subdirectory).
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        Self::from_db(sled::Config::new().path(path.join("v1")).open()?)
    }

    /// A registry that lives only as long as the value (tests).
    pub fn temporary() -> Result<Self, RegistryError> {
        Self::from_db(sled::Config::new().temporary(true).open()?)
    }

    fn from_db(db: sled::Db) -> Result<Self, RegistryError> {
        let meta = db.open_tree("meta")?;
        match meta.get("schema_version")? {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)?;
            }
            Some(v) if v.as_ref() == SCHEMA_VERSION => {}
            Some(v) => {
                return Err(RegistryError::Corrupt(format!(
                    "unsupported schema version {}",
                    String::from_utf8_lossy(&v)
                )))
            }
        }
        let (id, created_now) = match meta.get("registry_id")? {
            Some(id) => (String::from_utf8_lossy(&id).into_owned(), false),
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                meta.insert("registry_id", id.as_bytes())?;
                (id, true)
            }
        };
        let inner = Inner {
            id,
            created_now,
            images: db.open_tree("images")?,
            member_images: db.open_tree("member_images")?,
            db,
        };
        inner.db.flush()?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// This registry's id: made once when the registry is created, kept for its life. The stores
    /// it writes to are marked with it, so another gateway never mistakes its objects for orphans.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// True when this process created the registry (then it cannot tell orphans from data).
    pub fn is_new(&self) -> bool {
        self.inner.created_now
    }

    async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<RegistryError> + Send + 'static,
        F: FnOnce(&Inner) -> Result<T, E> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| E::from(RegistryError::Storage(format!("registry task failed: {e}"))))?
    }

    /// Stores a new image; `Conflict` if its id was ever used.
    pub async fn insert_new(&self, record: ImageRecord) -> Result<ImageRecord, RegistryError> {
        self.run(move |inner| {
            let stored = StoredImage {
                record,
                members: vec![],
            };
            let bytes = encode(&stored)?;
            let key = stored.record.id.as_str().as_bytes().to_vec();
            if inner
                .images
                .compare_and_swap(&key, None::<&[u8]>, Some(bytes))?
                .is_err()
            {
                return Err(RegistryError::Conflict(stored.record.id.clone()));
            }
            inner.db.flush()?;
            Ok(stored.record)
        })
        .await
    }

    pub async fn get(&self, id: &ImageId) -> Result<Option<StoredImage>, RegistryError> {
        let key = id.as_str().as_bytes().to_vec();
        self.run(move |inner| inner.images.get(key)?.map(|b| decode(&b)).transpose())
            .await
    }

    /// Writes everything to disk (at shutdown; each change is flushed already).
    pub async fn flush(&self) -> Result<(), RegistryError> {
        self.run(|inner| inner.db.flush().map(drop).map_err(RegistryError::from))
            .await
    }

    /// Every stored image, deleted ones included.
    pub async fn all(&self) -> Result<Vec<StoredImage>, RegistryError> {
        self.run(|inner| {
            inner
                .images
                .iter()
                .map(|kv| decode(&kv?.1))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    /// Applies `change` to the image atomically (retried on a concurrent change), keeps the member
    /// index in step with the image's memberships, and flushes. `change` may refuse with its own
    /// error, in which case nothing is written.
    pub async fn update<E, F>(&self, id: &ImageId, change: F) -> Result<StoredImage, E>
    where
        E: From<RegistryError> + Send + 'static,
        F: Fn(&mut StoredImage) -> Result<(), E> + Send + 'static,
    {
        let key = id.as_str().as_bytes().to_vec();
        self.run(move |inner| {
            let result = (&inner.images, &inner.member_images).transaction(|(images, index)| {
                let Some(bytes) = images.get(&key)? else {
                    return Err(ConflictableTransactionError::Abort(E::from(
                        RegistryError::NotFound,
                    )));
                };
                let before =
                    decode(&bytes).map_err(|e| ConflictableTransactionError::Abort(e.into()))?;
                let mut after = before.clone();
                change(&mut after).map_err(ConflictableTransactionError::Abort)?;
                for m in &before.members {
                    if !after.members.iter().any(|n| n.member == m.member) {
                        index.remove(keys::member_image(&m.member, &after.record.id))?;
                    }
                }
                for m in &after.members {
                    index.insert(keys::member_image(&m.member, &after.record.id), &[])?;
                }
                let bytes =
                    encode(&after).map_err(|e| ConflictableTransactionError::Abort(e.into()))?;
                images.insert(key.as_slice(), bytes)?;
                Ok(after)
            });
            let stored = match result {
                Ok(stored) => stored,
                Err(TransactionError::Abort(e)) => return Err(e),
                Err(TransactionError::Storage(e)) => return Err(E::from(e.into())),
            };
            inner.db.flush().map_err(|e| E::from(e.into()))?;
            Ok(stored)
        })
        .await
    }

    /// The memberships naming `member`, with their images.
    pub async fn shared_with(&self, member: &str) -> Result<Vec<StoredImage>, RegistryError> {
        let prefix = keys::member_prefix(member);
        self.run(move |inner| {
            let mut out = vec![];
            for kv in inner.member_images.scan_prefix(&prefix) {
                let (k, _) = kv?;
                let id = &k[prefix.len()..];
                if let Some(bytes) = inner.images.get(id)? {
                    out.push(decode(&bytes)?);
                }
            }
            Ok(out)
        })
        .await
    }
}

impl StoredImage {
    pub fn membership(&self, member: &str) -> Option<&Membership> {
        self.members.iter().find(|m| m.member == member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ImageStatus, Timestamp};

    fn record() -> ImageRecord {
        ImageRecord::new(ImageId::random(), Timestamp::now())
    }

    #[tokio::test]
    async fn ids_are_never_reused() {
        let reg = Registry::temporary().unwrap();
        let r = record();
        reg.insert_new(r.clone()).await.unwrap();
        assert!(matches!(
            reg.insert_new(r).await,
            Err(RegistryError::Conflict(_))
        ));
    }

    #[tokio::test]
    async fn updates_keep_the_member_index() {
        let reg = Registry::temporary().unwrap();
        let r = reg.insert_new(record()).await.unwrap();
        let id = r.id.clone();
        let id2 = id.clone();
        reg.update::<RegistryError, _>(&id, move |s| {
            s.members = vec![Membership {
                image_id: id2.clone(),
                member: "t1".into(),
                can_share: false,
                seq: 1,
            }];
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(reg.shared_with("t1").await.unwrap().len(), 1);
        assert_eq!(reg.shared_with("t").await.unwrap().len(), 0);
        reg.update::<RegistryError, _>(&id, |s| {
            s.members.clear();
            s.record.status = ImageStatus::Deleted;
            Ok(())
        })
        .await
        .unwrap();
        assert!(reg.shared_with("t1").await.unwrap().is_empty());
        let stored = reg.get(&id).await.unwrap().unwrap();
        assert_eq!(stored.record.status, ImageStatus::Deleted);
    }

    #[tokio::test]
    async fn a_refused_change_writes_nothing() {
        let reg = Registry::temporary().unwrap();
        let r = reg.insert_new(record()).await.unwrap();
        let result = reg
            .update::<RegistryError, _>(&r.id, |s| {
                s.record.name = Some("changed".into());
                Err(RegistryError::NotFound)
            })
            .await;
        assert!(result.is_err());
        assert_eq!(reg.get(&r.id).await.unwrap().unwrap().record.name, None);
    }

    #[tokio::test]
    async fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let reg = Registry::open(dir.path()).unwrap();
            reg.insert_new(record()).await.unwrap().id
        };
        let reg = Registry::open(dir.path()).unwrap();
        assert!(reg.get(&id).await.unwrap().is_some());
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
}
