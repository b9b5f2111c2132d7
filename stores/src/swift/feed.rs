//! The feed: one upload body shared by the requests that carry it (a plain PUT, or one per
//! segment), each taking exactly its share.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use md5::{Digest, Md5};
use tokio::sync::Notify;

use crate::ByteStream;

/// The upload body, shared by the requests that carry it: each takes the next `remaining` bytes,
/// splitting a chunk at the exact boundary and keeping the rest for the next segment.
pub(super) struct Feed {
    source: ByteStream,
    pending: Bytes,
    ended: bool,
    /// The body's own error, kept to hand back as `StoreError::Body`.
    pub body_error: Option<io::Error>,
    remaining: u64,
    pub sent: u64,
    /// Whether the bytes sent are hashed into `md5`.
    hashing: bool,
    md5: Md5,
}

impl Feed {
    pub fn new(source: ByteStream) -> Self {
        Self {
            source,
            pending: Bytes::new(),
            ended: false,
            body_error: None,
            remaining: 0,
            sent: 0,
            hashing: true,
            md5: Md5::new(),
        }
    }

    pub fn start(&mut self, limit: u64, hashing: bool) {
        self.remaining = limit;
        self.sent = 0;
        self.hashing = hashing;
        self.md5 = Md5::new();
    }

    pub fn finish_md5(&mut self) -> [u8; 16] {
        std::mem::take(&mut self.md5).finalize().into()
    }

    /// Pulls from the source until a byte is pending or the source ended.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending.is_empty() && !self.ended {
            match self.source.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => self.pending = chunk,
                Poll::Ready(Some(Err(e))) => {
                    self.ended = true;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(None) => self.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Whether the body has bytes beyond what was sent so far.
    pub async fn has_more(feed: &Arc<Mutex<Feed>>) -> io::Result<bool> {
        futures::future::poll_fn(|cx| {
            let mut f = feed.lock().expect("feed lock");
            f.poll_fill(cx).map_ok(|()| !f.pending.is_empty())
        })
        .await
    }
}

/// One request's view of the [`Feed`].
pub(super) struct FeedBody {
    pub feed: Arc<Mutex<Feed>>,
    /// Notified once the share has been sent whole.
    pub finished: Arc<Notify>,
    pub done: bool,
}

impl Stream for FeedBody {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let item = {
            let mut guard = this.feed.lock().expect("feed lock");
            let f = &mut *guard;
            if f.remaining == 0 {
                None
            } else {
                match f.poll_fill(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => {
                        let echo = io::Error::new(e.kind(), e.to_string());
                        f.body_error = Some(e);
                        Some(Err(echo))
                    }
                    Poll::Ready(Ok(())) if f.pending.is_empty() => None,
                    Poll::Ready(Ok(())) => {
                        let n = (f.pending.len() as u64).min(f.remaining) as usize;
                        let chunk = f.pending.split_to(n);
                        f.remaining -= n as u64;
                        f.sent += n as u64;
                        if f.hashing {
                            f.md5.update(&chunk);
                        }
                        Some(Ok(chunk))
                    }
                }
            }
        };
        match item {
            None => {
                this.done = true;
                this.finished.notify_one();
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Some(Ok(chunk)) => Poll::Ready(Some(Ok(chunk))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn feed_splits_at_exact_offsets() {
        let data = crate::testing::pattern(23, 1);
        let feed = Arc::new(Mutex::new(Feed::new(crate::testing::body_from(
            data.clone(),
            3,
        ))));
        let mut joined = vec![];
        let mut sizes = vec![];
        while Feed::has_more(&feed).await.unwrap() {
            feed.lock().unwrap().start(10, true);
            let finished = Arc::new(Notify::new());
            let body = FeedBody {
                feed: Arc::clone(&feed),
                finished: Arc::clone(&finished),
                done: false,
            };
            let part = crate::testing::read_all(Box::pin(body)).await.unwrap();
            // The end of the share was announced, and the MD5 covers exactly the share.
            tokio::time::timeout(Duration::from_secs(1), finished.notified())
                .await
                .unwrap();
            let md5: [u8; 16] = Md5::digest(&part).into();
            assert_eq!(feed.lock().unwrap().finish_md5(), md5);
            sizes.push(part.len());
            joined.extend(part);
        }
        assert_eq!(sizes, [10, 10, 3]);
        assert_eq!(joined, data);
    }

    #[tokio::test]
    async fn feed_keeps_the_body_error() {
        let body = crate::testing::failing_body(vec![7; 8], 4, 6);
        let feed = Arc::new(Mutex::new(Feed::new(body)));
        feed.lock().unwrap().start(u64::MAX, true);
        let body = FeedBody {
            feed: Arc::clone(&feed),
            finished: Arc::new(Notify::new()),
            done: false,
        };
        assert!(crate::testing::read_all(Box::pin(body)).await.is_err());
        let kept = feed.lock().unwrap().body_error.take().unwrap();
        assert_eq!(kept.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(feed.lock().unwrap().sent, 6);
    }
}
