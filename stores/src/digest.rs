//! The one place image bytes are counted and hashed: [`put_digested`] wraps the body in a
//! `DigestStream` on its way into a store. Backends never hash, and the MD5 Glance reports is
//! always this running digest (an S3 multipart ETag is not the object's MD5).
//!
//! The hashing itself runs on threads of its own, one per digest (MD5, and the multihash when one
//! is asked for), fed clones of the chunks through small bounded channels: on a 2-core machine
//! SHA-512 next to MD5 then costs a second core instead of halving the upload rate, and the
//! runtime thread only moves bytes. [`Hashing`] is that pair of workers, also used to re-read
//! stored data ([`Hashing::feed`]).
//!
//! The multihash is OpenSSL's: its SHA-512 takes 1.24 CPU-seconds per GiB where the portable
//! crates take 1.8. MD5 (1.78) and the multihash share the cores with receiving and writing,
//! so on a small machine every CPU-second saved here is upload speed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::Stream;
use md5::{Digest, Md5};
use openssl::hash::{Hasher, MessageDigest};
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio_util::sync::PollSender;

use crate::{ByteStream, ObjectKey, PutOptions, Store, StoreError};

/// Chunks queued per hashing worker: enough to ride out scheduling jitter, small enough that
/// memory stays a few chunks.
const QUEUE: usize = 8;

/// The secure hash recorded next to the MD5 (Glance's `os_hash_algo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgo {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgo {
    /// The name Glance records (`sha512`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    fn message_digest(self) -> MessageDigest {
        match self {
            Self::Sha256 => MessageDigest::sha256(),
            Self::Sha384 => MessageDigest::sha384(),
            Self::Sha512 => MessageDigest::sha512(),
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Self::Sha256),
            "sha384" => Some(Self::Sha384),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }
}

/// A finished multihash: the algorithm and its digest (up to SHA-512's 64 bytes), `Copy` so
/// [`Stored`] stays a plain value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Multihash {
    pub algo: HashAlgo,
    bytes: [u8; 64],
    len: u8,
}

impl Multihash {
    fn new(algo: HashAlgo, digest: &[u8]) -> Self {
        let mut bytes = [0; 64];
        bytes[..digest.len()].copy_from_slice(digest);
        Self {
            algo,
            bytes,
            len: digest.len() as u8,
        }
    }

    pub fn hex(&self) -> String {
        hex::encode(&self.bytes[..usize::from(self.len)])
    }
}

/// Every digest of one body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digests {
    pub md5: [u8; 16],
    pub multihash: Option<Multihash>,
}

/// One hashing worker: a thread of its own draining its channel into a hasher. Not the
/// runtime's blocking pool: an upload holds its workers for as long as the client sends, and
/// hundreds of slow uploads must not starve the registry's calls queued on that pool.
struct Worker {
    tx: PollSender<Bytes>,
    done: oneshot::Receiver<io::Result<Vec<u8>>>,
    digest: Option<Vec<u8>>,
}

/// What a worker thread drains its queue into.
trait Absorb: Send + 'static {
    fn absorb(&mut self, chunk: &[u8]) -> io::Result<()>;
    fn into_digest(self) -> io::Result<Vec<u8>>;
}

impl Absorb for Md5 {
    fn absorb(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.update(chunk);
        Ok(())
    }

    fn into_digest(self) -> io::Result<Vec<u8>> {
        Ok(self.finalize().to_vec())
    }
}

impl Absorb for Hasher {
    fn absorb(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.update(chunk).map_err(io::Error::other)
    }

    fn into_digest(mut self) -> io::Result<Vec<u8>> {
        Ok(self.finish().map_err(io::Error::other)?.to_vec())
    }
}

impl Worker {
    fn start(hasher: io::Result<impl Absorb>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let (digest_tx, done) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("image-hash".into())
            .spawn(move || {
                let digest = hasher.and_then(|mut hasher| {
                    while let Some(chunk) = rx.blocking_recv() {
                        hasher.absorb(&chunk)?;
                    }
                    hasher.into_digest()
                });
                let _ = digest_tx.send(digest);
            });
        // Without a thread the receiver ends at once and the digest reports the failure.
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a hashing thread");
        }
        Self {
            tx: PollSender::new(tx),
            done,
            digest: None,
        }
    }

    fn poll_digest(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Vec<u8>>> {
        // Drop the sender and any unused reservation, so the worker sees the end of its queue.
        self.tx.close();
        self.tx.abort_send();
        if self.digest.is_none() {
            let joined = ready!(Pin::new(&mut self.done).poll(cx))
                .map_err(|_| io::Error::other("the hashing thread failed"))??;
            self.digest = Some(joined);
        }
        Poll::Ready(Ok(self.digest.clone().expect("set above")))
    }
}

/// MD5 and an optional multihash, each computed on a thread of its own.
pub struct Hashing {
    md5: Worker,
    multi: Option<(HashAlgo, Worker)>,
}

impl Hashing {
    pub fn start(multihash: Option<HashAlgo>) -> Self {
        let multi = multihash.map(|algo| {
            let hasher = Hasher::new(algo.message_digest()).map_err(io::Error::other);
            (algo, Worker::start(hasher))
        });
        Self {
            md5: Worker::start(Ok(Md5::new())),
            multi,
        }
    }

    fn workers(&mut self) -> impl Iterator<Item = &mut Worker> {
        std::iter::once(&mut self.md5).chain(self.multi.as_mut().map(|(_, w)| w))
    }

    /// Ready once every worker has room for one more chunk.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for worker in self.workers() {
            // A worker only goes away by panicking, which `poll_finish` reports.
            let _ = ready!(worker.tx.poll_reserve(cx));
        }
        Poll::Ready(())
    }

    /// Hands `chunk` to every worker; call after [`poll_ready`](Self::poll_ready).
    fn send(&mut self, chunk: &Bytes) {
        for worker in self.workers() {
            let _ = worker.tx.send_item(chunk.clone());
        }
    }

    /// Hashes `chunk`, waiting while the workers' queues are full.
    pub async fn feed(&mut self, chunk: &Bytes) {
        futures::future::poll_fn(|cx| self.poll_ready(cx)).await;
        self.send(chunk);
    }

    /// Closes the queues and waits for the workers' digests.
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Digests>> {
        let md5 = self.md5.poll_digest(cx);
        let multi = match &mut self.multi {
            Some((algo, worker)) => match worker.poll_digest(cx) {
                Poll::Ready(digest) => Poll::Ready(Some((*algo, digest))),
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Ready(None),
        };
        let (Poll::Ready(md5), Poll::Ready(multi)) = (md5, multi) else {
            return Poll::Pending;
        };
        let multihash = match multi {
            Some((algo, digest)) => Some(Multihash::new(algo, &digest?)),
            None => None,
        };
        Poll::Ready(Ok(Digests {
            md5: md5?.try_into().expect("an MD5 is 16 bytes"),
            multihash,
        }))
    }

    pub async fn finish(mut self) -> io::Result<Digests> {
        futures::future::poll_fn(|cx| self.poll_finish(cx)).await
    }
}

/// What a successful [`put_digested`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    pub md5: [u8; 16],
    /// Present when [`put_digested_with`] was asked for one.
    pub multihash: Option<Multihash>,
}

impl Stored {
    pub fn md5_hex(&self) -> String {
        hex::encode(self.md5)
    }
}

/// Why [`put_digested`] failed. The store has already removed whatever it had written.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The stream ran past `limit` bytes; nothing past the limit was passed to the store.
    #[error("image data exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// Reading the client's body failed (disconnect, malformed chunking).
    #[error("reading the image data failed: {0}")]
    Body(io::Error),
    #[error(transparent)]
    Store(StoreError),
}

#[derive(Default)]
struct DigestState {
    size: u64,
    over_limit: bool,
    body_error: Option<io::Error>,
    /// Set once the body has ended and the workers have finished.
    digests: Option<Digests>,
}

/// The running MD5 of a [`put_digested`] body, handed to the store in [`PutOptions::md5`]: once
/// the body has ended, it gives the MD5 of every byte the body yielded, so a store that checks
/// its backend's checksum of a whole object need not hash the same bytes a second time.
#[derive(Clone)]
pub struct RunningMd5(Arc<Mutex<DigestState>>);

impl std::fmt::Debug for RunningMd5 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningMd5").finish_non_exhaustive()
    }
}

impl RunningMd5 {
    /// Size and MD5 of everything the body yielded; `None` until it has ended cleanly.
    pub fn finished(&self) -> Option<(u64, [u8; 16])> {
        let state = self.0.lock().expect("digest state poisoned");
        let digests = state.digests.as_ref()?;
        (!state.over_limit && state.body_error.is_none()).then_some((state.size, digests.md5))
    }
}

/// Counts every chunk that passes and hands it to the hashing workers; fails the stream once
/// more than `limit` bytes came. It yields its end only after the workers have finished, so the
/// digests are known by the time a store sees the end of the body.
struct DigestStream {
    inner: ByteStream,
    limit: u64,
    hashing: Hashing,
    state: Arc<Mutex<DigestState>>,
    /// The body has ended; waiting for the workers.
    draining: bool,
}

impl Stream for DigestStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if !this.draining {
            // Room for the next chunk first, so a chunk taken from the body is never held back.
            ready!(this.hashing.poll_ready(cx));
            match ready!(this.inner.as_mut().poll_next(cx)) {
                Some(Ok(chunk)) => {
                    let mut state = this.state.lock().expect("digest state poisoned");
                    let size = state.size.saturating_add(chunk.len() as u64);
                    if size > this.limit {
                        state.over_limit = true;
                        return Poll::Ready(Some(Err(io::Error::other(
                            "image data exceeds the limit",
                        ))));
                    }
                    state.size = size;
                    this.hashing.send(&chunk);
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Some(Err(err)) => {
                    let mut state = this.state.lock().expect("digest state poisoned");
                    let echoed = io::Error::new(err.kind(), err.to_string());
                    state.body_error = Some(err);
                    return Poll::Ready(Some(Err(echoed)));
                }
                None => this.draining = true,
            }
        }
        match ready!(this.hashing.poll_finish(cx)) {
            Ok(digests) => {
                this.state.lock().expect("digest state poisoned").digests = Some(digests);
                Poll::Ready(None)
            }
            Err(err) => Poll::Ready(Some(Err(err))),
        }
    }
}

/// Streams `body` into `store` under `key`, computing size and MD5 on the way, and refusing more
/// than `limit` bytes. On any failure the store's own cleanup has run before this returns.
pub async fn put_digested(
    store: &dyn Store,
    key: &ObjectKey,
    body: ByteStream,
    size_hint: Option<u64>,
    limit: u64,
) -> Result<Stored, PutError> {
    put_digested_with(store, key, body, size_hint, limit, None).await
}

/// [`put_digested`] that also computes the `multihash` when one is given, in the same pass.
pub async fn put_digested_with(
    store: &dyn Store,
    key: &ObjectKey,
    body: ByteStream,
    size_hint: Option<u64>,
    limit: u64,
    multihash: Option<HashAlgo>,
) -> Result<Stored, PutError> {
    let state = Arc::new(Mutex::new(DigestState::default()));
    let stream = DigestStream {
        inner: body,
        limit,
        hashing: Hashing::start(multihash),
        state: Arc::clone(&state),
        draining: false,
    };
    let options = PutOptions {
        size_hint,
        md5: Some(RunningMd5(Arc::clone(&state))),
    };
    let result = store.put(key, Box::pin(stream), options).await;
    let mut state = state.lock().expect("digest state poisoned");
    // The body's own failure explains a store error better than the store's report of it.
    if state.over_limit {
        return Err(PutError::TooLarge { limit });
    }
    if let Some(err) = state.body_error.take() {
        return Err(PutError::Body(err));
    }
    result.map_err(PutError::Store)?;
    let digests = state.digests.ok_or_else(|| {
        PutError::Store(StoreError::other(
            store.name().as_str(),
            "the store finished before reading the whole body",
        ))
    })?;
    Ok(Stored {
        size: state.size,
        md5: digests.md5,
        multihash: digests.multihash,
    })
}
