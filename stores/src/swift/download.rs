//! Reading objects: ranged GETs, whatever part of the object Swift answers with, and a body that
//! fails rather than ends when Swift stops early.

use std::io;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::RANGE;
use reqwest::{Method, Response, StatusCode};

use super::client::{content_length, header_str, transport_detail};
use super::Inner;
use crate::range::{clip_range, parse_content_range};
use crate::{ByteStream, GetObject, ObjectKey, StoreError};

impl Inner {
    /// Streams `object` of `container` (or a range of it).
    pub async fn get_at(
        &self,
        container: &str,
        object: &str,
        range: Option<Range<u64>>,
    ) -> Result<GetObject, StoreError> {
        let inner = self;
        if range.as_ref().is_some_and(Range::is_empty) {
            let len = inner.head_len_at(container, object).await?;
            return Err(StoreError::RangeNotSatisfiable { len });
        }
        let what = format!("reading {object}");
        let response = inner
            .send(&what, inner.request_timeout, |s| {
                let request = inner.request(s, Method::GET, container, Some(object));
                match &range {
                    Some(r) => request.header(RANGE, format!("bytes={}-{}", r.start, r.end - 1)),
                    None => request,
                }
            })
            .await?;
        let headers = response.headers();
        let (served, total_len, skip) = match response.status() {
            StatusCode::NOT_FOUND => return Err(inner.not_found(object)),
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let len = inner.head_len_at(container, object).await?;
                return Err(StoreError::RangeNotSatisfiable { len });
            }
            StatusCode::PARTIAL_CONTENT => {
                let (served, total) = header_str(headers, "content-range")
                    .and_then(parse_content_range)
                    .ok_or_else(|| inner.other(format!("{what}: bad Content-Range from Swift")))?;
                (served, total, 0)
            }
            StatusCode::OK => {
                let total = content_length(headers)
                    .ok_or_else(|| inner.other(format!("{what}: Swift gave no length")))?;
                // The whole object came back: serve the asked range out of it.
                let served = clip_range(range.clone(), total)?;
                (served.clone(), total, served.start)
            }
            s => return Err(inner.status_error(&what, s)),
        };
        if let Some(r) = &range {
            if served.start != r.start || served.end != r.end.min(total_len) {
                return Err(inner.other(format!("{what}: Swift served another range")));
            }
        }
        let body = exact_body(
            response,
            skip,
            served.end - served.start,
            inner.read_timeout,
        );
        Ok(GetObject {
            body,
            range: served,
            total_len,
        })
    }

    pub async fn head_len(&self, key: &ObjectKey) -> Result<u64, StoreError> {
        self.head_len_at(&self.container, key.as_str()).await
    }

    pub async fn head_len_at(&self, container: &str, object: &str) -> Result<u64, StoreError> {
        let headers = self
            .head(container, object)
            .await?
            .ok_or_else(|| self.not_found(object))?;
        content_length(&headers)
            .ok_or_else(|| self.other(format!("Swift gave no length for {object}")))
    }
}

/// A download body that yields exactly `take` bytes after skipping `skip`, and fails (rather
/// than ends) when Swift stops early or stalls longer than `idle`.
fn exact_body(response: Response, skip: u64, take: u64, idle: Duration) -> ByteStream {
    struct State {
        inner: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
        skip: u64,
        left: u64,
    }
    let state = State {
        inner: response.bytes_stream().boxed(),
        skip,
        left: take,
    };
    Box::pin(futures::stream::unfold(
        Some(state),
        move |state| async move {
            let mut st = state?;
            loop {
                if st.left == 0 {
                    return None;
                }
                let fail =
                    |kind: io::ErrorKind, msg: String| Some((Err(io::Error::new(kind, msg)), None));
                match tokio::time::timeout(idle, st.inner.next()).await {
                    Err(_) => {
                        return fail(
                            io::ErrorKind::TimedOut,
                            format!("Swift sent nothing for {}s", idle.as_secs()),
                        )
                    }
                    Ok(None) => {
                        return fail(
                            io::ErrorKind::UnexpectedEof,
                            format!("Swift ended the object {} bytes early", st.left),
                        )
                    }
                    Ok(Some(Err(e))) => {
                        return fail(
                            io::ErrorKind::Other,
                            format!("reading from Swift failed: {}", transport_detail(&e)),
                        )
                    }
                    Ok(Some(Ok(mut chunk))) => {
                        if st.skip > 0 {
                            let n = (chunk.len() as u64).min(st.skip) as usize;
                            chunk = chunk.slice(n..);
                            st.skip -= n as u64;
                        }
                        if chunk.len() as u64 > st.left {
                            chunk.truncate(st.left as usize);
                        }
                        if chunk.is_empty() {
                            continue;
                        }
                        st.left -= chunk.len() as u64;
                        return Some((Ok(chunk), Some(st)));
                    }
                }
            }
        },
    ))
}
