//! The file store: one file per object directly under `root`, written to a temp file in
//! `root/.tmp/` on the same filesystem, synced, then renamed into place. All filesystem work runs
//! on blocking threads, never on the async runtime.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::{
    clip_range, ByteStream, GetObject, ObjectInfo, ObjectKey, PutOptions, Store, StoreError,
    StoreName, SweepReport,
};

const TMP_DIR: &str = ".tmp";
/// Chunks handed between the async side and the writer / reader thread.
const CHANNEL_DEPTH: usize = 8;
const READ_CHUNK: usize = 256 * 1024;
/// While an object is being written, a helper thread syncs it each time this much more data has
/// arrived, so the disk writes back in parallel with receiving and hashing. Without it the whole
/// object sits in the page cache (the kernel starts write-back late by default) and the final
/// fsync flushes all of it while the client waits: upload time became receive time plus flush
/// time.
const FLUSH_STEP: u64 = 32 * 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStoreConfig {
    /// Directory holding the objects; created when missing.
    pub root: PathBuf,
}

#[derive(Debug)]
pub struct FileStore {
    name: StoreName,
    root: PathBuf,
}

enum WriteMsg {
    Data(Bytes),
    Finish,
}

impl FileStore {
    /// Opens (and creates) the store directory.
    pub async fn open(name: StoreName, config: &FileStoreConfig) -> Result<Self, StoreError> {
        let root = config.root.clone();
        let store = name.to_string();
        let root = blocking(move || {
            fs::create_dir_all(root.join(TMP_DIR))?;
            root.canonicalize()
        })
        .await
        .map_err(|e| {
            StoreError::Config(format!(
                "file store {store}: cannot create its root directory: {e}"
            ))
        })?;
        Ok(Self { name, root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The object's path. Keys are single normal components, so the path stays under `root`.
    fn path_of(&self, key: &ObjectKey) -> Result<PathBuf, StoreError> {
        if !key.is_single_component() {
            return Err(StoreError::other(
                self.name.as_str(),
                format!("key {key} is not a single path component"),
            ));
        }
        Ok(self.root.join(key.as_str()))
    }

    fn tmp_prefix(key: &ObjectKey) -> String {
        format!("{key}.")
    }

    fn io_err(&self, key: &ObjectKey) -> impl Fn(io::Error) -> StoreError + '_ {
        let key = key.to_string();
        move |e| StoreError::from_io(self.name.as_str(), &key, e)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))?
}

/// Syncs `file` whenever the writer asks, until the writer hangs up; returns the first error.
/// Requests made while a sync runs collapse into one (the channel holds a single request).
fn spawn_flusher(file: &fs::File) -> io::Result<(std_mpsc::SyncSender<()>, Flusher)> {
    let file = file.try_clone()?;
    let (tx, rx) = std_mpsc::sync_channel::<()>(1);
    let handle = std::thread::Builder::new()
        .name("file-store-flush".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                file.sync_data()?;
            }
            Ok(())
        })?;
    Ok((tx, handle))
}

type Flusher = std::thread::JoinHandle<io::Result<()>>;

fn join_flusher(flusher: Flusher) -> io::Result<()> {
    flusher
        .join()
        .map_err(|_| io::Error::other("flush thread panicked"))?
}

/// Writes what arrives on `rx` to `tmp`; renames it to `dest` only after `Finish`. Any other end
/// (error, sender dropped by a cancelled upload) removes the temp file.
fn write_object(mut rx: mpsc::Receiver<WriteMsg>, tmp: PathBuf, dest: PathBuf) -> io::Result<bool> {
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let (flush, flusher) = spawn_flusher(&file)?;
        let mut unflushed = 0u64;
        let received = loop {
            match rx.blocking_recv() {
                Some(WriteMsg::Data(chunk)) => {
                    if let Err(e) = file.write_all(&chunk) {
                        break Err(e);
                    }
                    unflushed += chunk.len() as u64;
                    if unflushed >= FLUSH_STEP {
                        // Full means a sync is already queued, which covers this data too.
                        let _ = flush.try_send(());
                        unflushed = 0;
                    }
                }
                Some(WriteMsg::Finish) => break Ok(true),
                None => break Ok(false),
            }
        };
        drop(flush);
        let flushed = join_flusher(flusher);
        if !received? {
            return Ok(false);
        }
        flushed?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &dest)?;
        // Make the rename itself durable.
        if let Some(dir) = dest.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(true)
    })();
    if !matches!(result, Ok(true)) {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[async_trait]
impl Store for FileStore {
    fn name(&self) -> &StoreName {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "file"
    }

    fn describe(&self, key: &ObjectKey) -> String {
        format!("file://{key}")
    }

    #[tracing::instrument(skip(self, body), fields(store = %self.name))]
    async fn put(
        &self,
        key: &ObjectKey,
        mut body: ByteStream,
        _options: PutOptions,
    ) -> Result<(), StoreError> {
        let dest = self.path_of(key)?;
        let tmp = self.root.join(TMP_DIR).join(format!(
            "{}{}",
            Self::tmp_prefix(key),
            uuid::Uuid::new_v4().simple()
        ));
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let writer = tokio::task::spawn_blocking(move || write_object(rx, tmp, dest));
        // If this future is dropped, `tx` drops with it and the writer removes the temp file.
        let mut body_error = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    if tx.send(WriteMsg::Data(chunk)).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            }
        }
        if body_error.is_none() {
            let _ = tx.send(WriteMsg::Finish).await;
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| StoreError::other(self.name.as_str(), format!("writer failed: {e}")))?;
        if let Some(e) = body_error {
            return Err(StoreError::Body(e));
        }
        match written {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::other(self.name.as_str(), "write interrupted")),
            Err(e) => Err(self.io_err(key)(e)),
        }
    }

    #[tracing::instrument(skip(self), fields(store = %self.name))]
    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<GetObject, StoreError> {
        let path = self.path_of(key)?;
        let (mut file, total_len) = blocking(move || {
            let file = fs::File::open(&path)?;
            let len = file.metadata()?.len();
            Ok((file, len))
        })
        .await
        .map_err(self.io_err(key))?;
        let range = clip_range(range, total_len)?;
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
        let (start, len) = (range.start, range.end - range.start);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = file.seek(SeekFrom::Start(start)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            let mut reader = file.take(len);
            loop {
                let mut buf = BytesMut::zeroed(READ_CHUNK);
                match reader.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        // A closed channel means the client went away.
                        if tx.blocking_send(Ok(buf.freeze())).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        Ok(GetObject {
            body: Box::pin(tokio_stream_from(rx)),
            range,
            total_len,
        })
    }

    #[tracing::instrument(skip(self), fields(store = %self.name))]
    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        let tmp_dir = self.root.join(TMP_DIR);
        let prefix = Self::tmp_prefix(key);
        blocking(move || {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            for entry in fs::read_dir(&tmp_dir)? {
                let entry = entry?;
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_file(entry.path());
                }
            }
            Ok(())
        })
        .await
        .map_err(self.io_err(key))
    }

    async fn health_check(&self) -> Result<(), StoreError> {
        let probe = self.root.join(TMP_DIR);
        let name = self.name.to_string();
        blocking(move || {
            let meta = fs::metadata(&probe)?;
            if meta.permissions().readonly() {
                return Err(io::Error::from(io::ErrorKind::PermissionDenied));
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::unavailable(&name, format!("root directory not usable: {e}")))
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        let root = self.root.clone();
        let name = self.name.to_string();
        blocking(move || {
            let mut out = vec![];
            for entry in fs::read_dir(&root)? {
                let entry = entry?;
                let Some(key) = entry.file_name().to_str().and_then(ObjectKey::parse) else {
                    continue; // .tmp and anything that is not ours
                };
                let meta = entry.metadata()?;
                if meta.is_file() {
                    out.push(ObjectInfo {
                        key,
                        last_modified: meta.modified().ok(),
                    });
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::from_io(&name, "", e))
    }

    async fn sweep_incomplete(&self, older_than: Duration) -> Result<SweepReport, StoreError> {
        let tmp_dir = self.root.join(TMP_DIR);
        let name = self.name.to_string();
        blocking(move || {
            let mut report = SweepReport::default();
            let now = SystemTime::now();
            for entry in fs::read_dir(&tmp_dir)? {
                let entry = entry?;
                let modified = entry.metadata()?.modified()?;
                if now.duration_since(modified).unwrap_or_default() >= older_than
                    && fs::remove_file(entry.path()).is_ok()
                {
                    report.incomplete_removed += 1;
                }
            }
            Ok(report)
        })
        .await
        .map_err(|e| StoreError::from_io(&name, "", e))
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<io::Result<Bytes>>,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use std::sync::Arc;

    async fn store(dir: &Path) -> Arc<FileStore> {
        let config = FileStoreConfig {
            root: dir.join("images"),
        };
        Arc::new(
            FileStore::open(StoreName::parse("file").unwrap(), &config)
                .await
                .unwrap(),
        )
    }

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        testing::run_conformance(store.clone(), 64 * 1024).await;
        // Nothing of the failed uploads is left in the temp directory.
        assert_eq!(fs::read_dir(store.root().join(TMP_DIR)).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn cancelled_put_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let key = ObjectKey::parse("cancelled").unwrap();
        let (body, _gate) = testing::stalling_body(10_000);
        let put = store.put(&key, body, PutOptions::default());
        // The body stalls after its first bytes: time out, which drops the put future.
        assert!(tokio::time::timeout(Duration::from_millis(200), put)
            .await
            .is_err());
        for _ in 0..50 {
            if fs::read_dir(store.root().join(TMP_DIR)).unwrap().count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(fs::read_dir(store.root().join(TMP_DIR)).unwrap().count(), 0);
        assert!(store.get(&key, None).await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn multi_component_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let key = ObjectKey::parse("a/b").unwrap();
        assert!(store.get(&key, None).await.is_err());
        assert!(store
            .put(
                &key,
                testing::body_from(b"x".to_vec(), 1),
                PutOptions::default()
            )
            .await
            .is_err());
        assert!(!dir.path().join("images/a").exists());
    }

    #[tokio::test]
    async fn sweep_removes_old_temp_files_and_delete_removes_partials() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let tmp = store.root().join(TMP_DIR);
        fs::write(tmp.join("abc.partial1"), b"x").unwrap();
        fs::write(tmp.join("other.partial2"), b"x").unwrap();
        store
            .delete(&ObjectKey::parse("abc").unwrap())
            .await
            .unwrap();
        assert!(!tmp.join("abc.partial1").exists());
        assert!(tmp.join("other.partial2").exists());
        let report = store.sweep_incomplete(Duration::ZERO).await.unwrap();
        assert_eq!(report.incomplete_removed, 1);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }
}
