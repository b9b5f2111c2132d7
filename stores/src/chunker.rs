//! Re-chunks a body stream into parts of an exact size (the last one shorter), for multipart
//! uploads and segments. One copy per byte, into a buffer of the part's size.

use std::io;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::ByteStream;

/// Part buffers handed back once a part is uploaded, so a long upload cycles through the same few
/// allocations. Freed part-sized buffers are otherwise kept by the allocator and push the
/// process's resident memory past the part budget.
#[derive(Clone, Debug)]
pub struct BufferPool {
    free: Arc<Mutex<Vec<BytesMut>>>,
    max: usize,
}

impl BufferPool {
    /// A pool keeping at most `max` idle buffers.
    pub fn new(max: usize) -> Self {
        Self {
            free: Arc::new(Mutex::new(Vec::with_capacity(max))),
            max,
        }
    }

    fn take(&self, size: usize) -> BytesMut {
        let reused = {
            let mut free = self.free.lock().expect("buffer pool poisoned");
            let found = free.iter().position(|b| b.capacity() >= size);
            found.map(|i| free.swap_remove(i))
        };
        reused.unwrap_or_else(|| BytesMut::with_capacity(size))
    }

    /// Drops idle buffers beyond `n`, when the memory they hold is no longer reserved.
    pub fn keep_at_most(&self, n: usize) {
        self.free.lock().expect("buffer pool poisoned").truncate(n);
    }

    /// Takes a part back once nothing else holds it (otherwise it is simply dropped).
    pub fn recycle(&self, part: Bytes) {
        if let Ok(mut buf) = part.try_into_mut() {
            buf.clear();
            let mut free = self.free.lock().expect("buffer pool poisoned");
            if free.len() < self.max {
                free.push(buf);
            }
        }
    }
}

pub struct Chunker {
    body: ByteStream,
    /// Bytes read from the body but not yet handed out.
    pending: Bytes,
    done: bool,
    pool: Option<BufferPool>,
}

impl Chunker {
    pub fn new(body: ByteStream) -> Self {
        Self {
            body,
            pending: Bytes::new(),
            done: false,
            pool: None,
        }
    }

    /// A chunker that assembles parts in buffers from `pool`.
    pub fn with_pool(body: ByteStream, pool: BufferPool) -> Self {
        Self {
            pool: Some(pool),
            ..Self::new(body)
        }
    }

    /// The next part of exactly `size` bytes, or shorter at the end of the body; `None` once the
    /// body is exhausted (an empty body yields `None` at once).
    pub async fn next_part(&mut self, size: usize) -> Option<io::Result<Bytes>> {
        assert!(size > 0, "part size must be positive");
        // Fast path: a buffered chunk already covers the whole part.
        if self.pending.len() >= size {
            return Some(Ok(self.pending.split_to(size)));
        }
        let mut part = match &self.pool {
            Some(pool) => pool.take(size),
            None => BytesMut::with_capacity(size),
        };
        part.extend_from_slice(&std::mem::take(&mut self.pending));
        while part.len() < size && !self.done {
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    let wanted = size - part.len();
                    if chunk.len() > wanted {
                        part.extend_from_slice(&chunk[..wanted]);
                        self.pending = chunk.slice(wanted..);
                    } else {
                        part.extend_from_slice(&chunk);
                    }
                }
                Some(Err(err)) => return Some(Err(err)),
                None => self.done = true,
            }
        }
        if part.is_empty() {
            None
        } else {
            Some(Ok(part.freeze()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn body_of(len: usize, chunk: usize) -> (ByteStream, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let chunks: Vec<io::Result<Bytes>> = data
            .chunks(chunk.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        (Box::pin(stream::iter(chunks)), data)
    }

    async fn parts(len: usize, chunk: usize, part: usize) -> (Vec<usize>, Vec<u8>, Vec<u8>) {
        let (body, data) = body_of(len, chunk);
        let mut chunker = Chunker::new(body);
        let mut sizes = vec![];
        let mut joined = vec![];
        while let Some(p) = chunker.next_part(part).await {
            let p = p.unwrap();
            sizes.push(p.len());
            joined.extend_from_slice(&p);
        }
        (sizes, joined, data)
    }

    #[tokio::test]
    async fn exact_parts_at_the_boundaries() {
        let p = 1000;
        for (len, expected) in [
            (0, vec![]),
            (p - 1, vec![p - 1]),
            (p, vec![p]),
            (p + 1, vec![p, 1]),
            (3 * p, vec![p, p, p]),
        ] {
            for chunk in [1, 7, 999, 1000, 4096] {
                let (sizes, joined, data) = parts(len, chunk, p).await;
                assert_eq!(sizes, expected, "len {len} chunk {chunk}");
                assert_eq!(joined, data);
            }
        }
    }

    #[tokio::test]
    async fn pooled_parts_reuse_their_buffers() {
        let pool = BufferPool::new(2);
        let (body, data) = body_of(5000, 700);
        let mut chunker = Chunker::with_pool(body, pool.clone());
        let mut joined = vec![];
        let mut addresses = std::collections::HashSet::new();
        while let Some(part) = chunker.next_part(1000).await {
            let part = part.unwrap();
            addresses.insert(part.as_ptr() as usize);
            joined.extend_from_slice(&part);
            pool.recycle(part);
        }
        assert_eq!(joined, data);
        assert_eq!(addresses.len(), 1, "every part should reuse the one buffer");
        // A part still shared elsewhere is not taken back.
        let shared = Bytes::from(vec![1u8; 10]);
        let other = shared.clone();
        pool.recycle(shared);
        assert_eq!(other.len(), 10);
    }

    #[tokio::test]
    async fn body_errors_surface() {
        let body: ByteStream = Box::pin(stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(io::Error::other("cut")),
        ]));
        let mut chunker = Chunker::new(body);
        assert!(chunker.next_part(10).await.unwrap().is_err());
    }
}
