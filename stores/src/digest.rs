//! The one place image bytes are counted and hashed: [`put_digested`] wraps the body in a
//! `DigestStream` on its way into a store. Backends never hash, and the MD5 Glance reports is
//! always this running digest (an S3 multipart ETag is not the object's MD5).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use md5::{Digest, Md5};

use crate::{ByteStream, ObjectKey, PutOptions, Store, StoreError};

/// What a successful [`put_digested`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    pub md5: [u8; 16],
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
    hasher: Md5,
    size: u64,
    over_limit: bool,
    body_error: Option<io::Error>,
    /// The body yielded its end.
    ended: bool,
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
        (state.ended && !state.over_limit && state.body_error.is_none())
            .then(|| (state.size, state.hasher.clone().finalize().into()))
    }
}

/// Counts and hashes every chunk that passes; fails the stream once more than `limit` bytes came.
struct DigestStream {
    inner: ByteStream,
    limit: u64,
    state: Arc<Mutex<DigestState>>,
}

impl Stream for DigestStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let mut state = this.state.lock().expect("digest state poisoned");
                let size = state.size.saturating_add(chunk.len() as u64);
                if size > this.limit {
                    state.over_limit = true;
                    return Poll::Ready(Some(Err(io::Error::other(
                        "image data exceeds the limit",
                    ))));
                }
                state.size = size;
                state.hasher.update(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(err))) => {
                let mut state = this.state.lock().expect("digest state poisoned");
                let echoed = io::Error::new(err.kind(), err.to_string());
                state.body_error = Some(err);
                Poll::Ready(Some(Err(echoed)))
            }
            Poll::Ready(None) => {
                this.state.lock().expect("digest state poisoned").ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
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
    let state = Arc::new(Mutex::new(DigestState::default()));
    let stream = DigestStream {
        inner: body,
        limit,
        state: Arc::clone(&state),
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
    let hasher = std::mem::take(&mut state.hasher);
    Ok(Stored {
        size: state.size,
        md5: hasher.finalize().into(),
    })
}
