//! The file store: one file per object directly under `root`, written to a temp file in
//! `root/.tmp/` on the same filesystem, synced, then renamed into place. All filesystem work runs
//! on blocking threads, never on the async runtime.
//!
//! With `direct_io`, object data is written with `O_DIRECT` where the filesystem allows it:
//! through the page cache, a write costs a kernel copy plus page allocation, accounting and
//! write-back, about as much CPU as hashing the same bytes (and the final fsync waits for all of
//! it), while a direct write costs one copy into an aligned buffer and the device's DMA. On a
//! 2-core machine that CPU is what the MD5 and multihash threads need. It is off by default: a
//! just-uploaded image then stays in the page cache for its first downloads.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::ownership::MARKER;
use crate::{
    clip_range, ByteStream, GetObject, Namespace, ObjectInfo, ObjectKey, PutOptions, Store,
    StoreError, StoreName, SweepReport,
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
/// Alignment of `O_DIRECT` buffers, offsets and lengths (covers 512-byte and 4 KiB blocks).
const DIRECT_ALIGN: usize = 4096;
/// One direct write; two such buffers per upload, one filling while the other is written.
const DIRECT_BUF: usize = 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStoreConfig {
    /// Directory holding the objects; created when missing.
    pub root: PathBuf,
    /// Take the root over from the registry its ownership marker names (off: refuse to start).
    #[serde(default)]
    pub adopt: bool,
    /// Write object data with `O_DIRECT` where the filesystem allows it (see the module notes):
    /// far less CPU per uploaded byte, but the image is not left in the page cache. Off (the
    /// default): through the page cache.
    #[serde(default)]
    pub direct_io: bool,
}

#[derive(Debug)]
pub struct FileStore {
    name: StoreName,
    root: PathBuf,
    direct_io: bool,
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
        Ok(Self {
            name,
            root,
            direct_io: config.direct_io,
        })
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

    /// The key a temp file belongs to (`<key>.<run>`).
    fn tmp_key(file_name: &str) -> Option<ObjectKey> {
        file_name
            .rsplit_once('.')
            .and_then(|(key, _)| ObjectKey::parse(key))
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

/// Creates the temp file `tmp` and locks it. The lock is held until the file is renamed into
/// place: a sweep skips temp files it cannot lock, so an upload that began after the sweep read
/// the registry is never taken for an abandoned one, whatever `sweep_min_age` (a crashed
/// upload's lock dies with it).
fn create_locked(tmp: &Path) -> io::Result<fs::File> {
    for _ in 0..3 {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)?;
        file.lock()?;
        // A sweep may have taken the file between its creation and the lock, and removed it.
        match fs::metadata(tmp) {
            Ok(m) if m.ino() == file.metadata()?.ino() => return Ok(file),
            Ok(_) => return Err(io::Error::other("temp file replaced while it was created")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(
        "temp file removed by sweeps while it was created",
    ))
}

/// Whether no upload holds the temp file at `path` (its writer locks it until it is renamed).
fn abandoned(path: &Path) -> bool {
    // Read-only is enough to take the lock; a file renamed or removed meanwhile is not ours.
    fs::File::open(path).is_ok_and(|file| file.try_lock().is_ok())
}

type Flusher = std::thread::JoinHandle<io::Result<()>>;

fn join_flusher(flusher: Flusher) -> io::Result<()> {
    flusher
        .join()
        .map_err(|_| io::Error::other("flush thread panicked"))?
}

/// A `DIRECT_BUF` window of a larger allocation, aligned to `DIRECT_ALIGN` (found by address,
/// so no unsafe allocation is needed).
struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new() -> Self {
        let mem = vec![0; DIRECT_BUF + DIRECT_ALIGN];
        let start = (DIRECT_ALIGN - mem.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        Self { mem, start, len: 0 }
    }

    /// Copies as much of `data` as fits; returns how much.
    fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(DIRECT_BUF - self.len);
        let at = self.start + self.len;
        self.mem[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    fn is_full(&self) -> bool {
        self.len == DIRECT_BUF
    }

    fn filled(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

/// Writes what arrives on `rx` to `file` (just created at `tmp`) with `O_DIRECT`: whole aligned
/// buffers go to a second descriptor opened with `O_DIRECT` on a thread of their own, the
/// unaligned tail through `file`. `Ok(None)` when the filesystem refuses `O_DIRECT` (nothing
/// was read from `rx` then); otherwise whether `Finish` came.
fn write_direct(
    rx: &mut mpsc::Receiver<WriteMsg>,
    file: &fs::File,
    tmp: &Path,
) -> io::Result<Option<bool>> {
    let direct = match fs::OpenOptions::new()
        .write(true)
        .custom_flags(O_DIRECT)
        .open(tmp)
    {
        Ok(direct) => direct,
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => return Ok(None),
        Err(e) => return Err(e),
    };
    let (to_writer, full) = std_mpsc::sync_channel::<AlignedBuf>(1);
    let (give_back, spare) = std_mpsc::channel::<AlignedBuf>();
    let writer = std::thread::Builder::new()
        .name("file-store-write".into())
        .spawn(move || -> io::Result<()> {
            let mut direct = direct;
            while let Ok(buf) = full.recv() {
                direct.write_all(buf.filled())?;
                let mut buf = buf;
                buf.len = 0;
                let _ = give_back.send(buf);
            }
            Ok(())
        })?;
    let mut current = AlignedBuf::new();
    let mut buffers = 1;
    // Bytes handed to the writer thread, all in whole buffers.
    let mut handed = 0u64;
    let received = 'recv: loop {
        match rx.blocking_recv() {
            Some(WriteMsg::Data(mut chunk)) => {
                while chunk.has_remaining() {
                    let n = current.fill(&chunk);
                    chunk.advance(n);
                    if !current.is_full() {
                        continue;
                    }
                    let next = match spare.try_recv() {
                        Ok(buf) => buf,
                        Err(_) if buffers < 2 => {
                            buffers += 1;
                            AlignedBuf::new()
                        }
                        Err(_) => match spare.recv() {
                            Ok(buf) => buf,
                            Err(_) => break 'recv false, // the writer failed
                        },
                    };
                    if to_writer
                        .send(std::mem::replace(&mut current, next))
                        .is_err()
                    {
                        break 'recv false;
                    }
                    handed += DIRECT_BUF as u64;
                }
            }
            Some(WriteMsg::Finish) => break true,
            None => break false,
        }
    };
    drop(to_writer);
    let written = writer
        .join()
        .map_err(|_| io::Error::other("write thread panicked"))?;
    written?;
    if received {
        file.write_all_at(current.filled(), handed)?;
    }
    Ok(Some(received))
}

/// `O_DIRECT` where the platform has it; elsewhere no flag, which leaves the descriptor buffered.
#[cfg(target_os = "linux")]
const O_DIRECT: i32 = libc::O_DIRECT;
#[cfg(not(target_os = "linux"))]
const O_DIRECT: i32 = 0;

/// Writes what arrives on `rx` to `file` through the page cache, syncing as it goes (see
/// `FLUSH_STEP`); whether `Finish` came.
fn write_buffered(rx: &mut mpsc::Receiver<WriteMsg>, mut file: &fs::File) -> io::Result<bool> {
    let (flush, flusher) = spawn_flusher(file)?;
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
    Ok(true)
}

/// Writes what arrives on `rx` to `tmp`; renames it to `dest` only after `Finish`. Any other end
/// (error, sender dropped by a cancelled upload) removes the temp file.
fn write_object(
    mut rx: mpsc::Receiver<WriteMsg>,
    tmp: PathBuf,
    dest: PathBuf,
    direct_io: bool,
) -> io::Result<bool> {
    let result = (|| {
        let file = create_locked(&tmp)?;
        let direct = match direct_io {
            true => write_direct(&mut rx, &file, &tmp)?,
            false => None,
        };
        let received = match direct {
            Some(received) => received,
            None => write_buffered(&mut rx, &file)?,
        };
        if !received {
            return Ok(false);
        }
        file.sync_all()?;
        fs::rename(&tmp, &dest)?;
        drop(file);
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
        let direct_io = self.direct_io;
        let writer = tokio::task::spawn_blocking(move || write_object(rx, tmp, dest, direct_io));
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

    async fn sweep_incomplete(
        &self,
        older_than: Duration,
        in_progress: &BTreeSet<ObjectKey>,
    ) -> Result<SweepReport, StoreError> {
        let tmp_dir = self.root.join(TMP_DIR);
        let name = self.name.to_string();
        let in_progress = in_progress.clone();
        blocking(move || {
            let mut report = SweepReport::default();
            let now = SystemTime::now();
            for entry in fs::read_dir(&tmp_dir)? {
                let entry = entry?;
                let running = entry
                    .file_name()
                    .to_str()
                    .and_then(Self::tmp_key)
                    .is_some_and(|key| in_progress.contains(&key));
                let modified = entry.metadata()?.modified()?;
                if !running
                    && now.duration_since(modified).unwrap_or_default() >= older_than
                    && abandoned(&entry.path())
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

    fn namespaces(&self) -> Vec<Namespace> {
        vec![Namespace::new("file", format!("{}/", self.root.display()))]
    }

    async fn read_marker(&self) -> Result<Option<Bytes>, StoreError> {
        let path = self.root.join(MARKER);
        match blocking(move || fs::read(path)).await {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::from_io(self.name.as_str(), MARKER, e)),
        }
    }

    async fn write_marker(&self, content: Bytes) -> Result<(), StoreError> {
        let dest = self.root.join(MARKER);
        let tmp = self
            .root
            .join(TMP_DIR)
            .join(format!("marker.{}", uuid::Uuid::new_v4().simple()));
        blocking(move || {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&content)?;
            file.sync_all()?;
            fs::rename(&tmp, &dest)?;
            fs::File::open(dest.parent().expect("under the root"))?.sync_all()
        })
        .await
        .map_err(|e| StoreError::from_io(self.name.as_str(), MARKER, e))
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
            adopt: false,
            direct_io: true,
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
    async fn sizes_around_direct_buffers_are_stored_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let direct = store(dir.path()).await;
        let config = FileStoreConfig {
            root: dir.path().join("buffered"),
            adopt: false,
            direct_io: false,
        };
        let name = StoreName::parse("buffered").unwrap();
        let buffered = FileStore::open(name, &config).await.unwrap();
        for store in [&*direct, &buffered] {
            sizes_are_stored_exactly(store).await;
        }
    }

    async fn sizes_are_stored_exactly(store: &FileStore) {
        let b = DIRECT_BUF;
        for (i, len) in [
            0,
            1,
            DIRECT_ALIGN - 1,
            DIRECT_ALIGN,
            b - 1,
            b,
            b + 1,
            2 * b + 4097,
        ]
        .into_iter()
        .enumerate()
        {
            let data = testing::pattern(len, i as u64);
            let key = ObjectKey::parse(&format!("sized-{i}")).unwrap();
            // Odd chunk sizes, so chunks straddle the buffer boundaries.
            let body = testing::body_from(data.clone(), 65_537);
            store.put(&key, body, PutOptions::default()).await.unwrap();
            let got = testing::read_all(store.get(&key, None).await.unwrap().body)
                .await
                .unwrap();
            assert!(got == data, "length {len}: stored bytes differ");
        }
    }

    #[test]
    fn aligned_buffers_are_aligned_and_fill_to_their_size() {
        let mut buf = AlignedBuf::new();
        assert_eq!(buf.filled().as_ptr() as usize % DIRECT_ALIGN, 0);
        assert_eq!(buf.fill(&vec![1; DIRECT_BUF - 10]), DIRECT_BUF - 10);
        assert!(!buf.is_full());
        assert_eq!(buf.fill(&[2; 100]), 10);
        assert!(buf.is_full());
        assert_eq!(buf.filled().len(), DIRECT_BUF);
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
        fs::write(tmp.join("running.partial3"), b"x").unwrap();
        let running = BTreeSet::from([ObjectKey::parse("running").unwrap()]);
        let report = store
            .sweep_incomplete(Duration::ZERO, &running)
            .await
            .unwrap();
        assert_eq!(report.incomplete_removed, 1);
        let left: Vec<_> = fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["running.partial3"]);
    }

    /// A sweep with no minimum age that does not know an upload is running (it began after the
    /// sweep read the registry) leaves its temp file alone, and the upload completes.
    #[tokio::test]
    async fn a_sweep_spares_the_temp_file_of_a_running_upload() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let key = ObjectKey::parse("running").unwrap();
        let (tx, rx) = futures::channel::mpsc::unbounded::<io::Result<Bytes>>();
        tx.unbounded_send(Ok(Bytes::from_static(b"first half, ")))
            .unwrap();
        let put = tokio::spawn({
            let store = store.clone();
            let key = key.clone();
            async move { store.put(&key, Box::pin(rx), PutOptions::default()).await }
        });
        let tmp = store.root().join(TMP_DIR);
        let held = || {
            fs::read_dir(&tmp)
                .unwrap()
                .any(|e| !abandoned(&e.unwrap().path()))
        };
        for _ in 0..100 {
            if held() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(held(), "the upload's temp file never appeared locked");
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 1);
        // An abandoned temp file beside it: nobody holds it.
        fs::write(tmp.join("gone.partial1"), b"x").unwrap();
        let report = store
            .sweep_incomplete(Duration::ZERO, &BTreeSet::new())
            .await
            .unwrap();
        assert_eq!(report.incomplete_removed, 1);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 1);
        tx.unbounded_send(Ok(Bytes::from_static(b"second half")))
            .unwrap();
        drop(tx);
        put.await.unwrap().unwrap();
        let got = testing::read_all(store.get(&key, None).await.unwrap().body)
            .await
            .unwrap();
        assert_eq!(got, b"first half, second half");
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn the_marker_is_hidden_from_listings() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        assert_eq!(store.read_marker().await.unwrap(), None);
        store.write_marker(Bytes::from_static(b"m1")).await.unwrap();
        store.write_marker(Bytes::from_static(b"m2")).await.unwrap();
        assert_eq!(store.read_marker().await.unwrap().unwrap(), "m2");
        assert!(store.list().await.unwrap().is_empty());
        assert_eq!(fs::read_dir(store.root().join(TMP_DIR)).unwrap().count(), 0);
    }
}
