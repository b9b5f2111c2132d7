//! Reading objects: ranged GETs, and the ranges S3-compatible servers answer with.

use std::io;
use std::ops::Range;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use futures::StreamExt;

use super::Inner;
use crate::range::{clip_range, parse_content_range};
use crate::{ByteStream, GetObject, StoreError};

impl Inner {
    /// Streams the object at bucket key `full` (or a range of it); `key` names it in errors.
    pub async fn get_at(
        &self,
        full: &str,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<GetObject, StoreError> {
        let inner = self;
        let unsatisfiable = |len| StoreError::RangeNotSatisfiable { len };
        if range.as_ref().is_some_and(Range::is_empty) {
            return Err(unsatisfiable(inner.head_len(full, key).await?));
        }
        let mut request = inner.client.get_object().bucket(&inner.bucket).key(full);
        if let Some(r) = &range {
            request = request.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        let out = match request.send().await {
            Ok(out) => out,
            Err(e)
                if e.code() == Some("InvalidRange")
                    || e.raw_response().map(|r| r.status().as_u16()) == Some(416) =>
            {
                return Err(unsatisfiable(inner.head_len(full, key).await?));
            }
            Err(e) => return Err(inner.map_err("GetObject", Some(key), e)),
        };
        let length = out.content_length().unwrap_or(0).max(0) as u64;
        let content_range = out.content_range().map(str::to_owned);
        let body = body_stream(out.body);
        match (range, content_range) {
            (None, _) => Ok(GetObject {
                body,
                range: 0..length,
                total_len: length,
            }),
            (Some(asked), Some(content_range)) => {
                let (got, total_len) = parse_content_range(&content_range)
                    .filter(|(got, total)| {
                        clip_range(Some(asked.clone()), *total).ok().as_ref() == Some(got)
                    })
                    .ok_or_else(|| {
                        StoreError::other(
                            inner.store(),
                            format!("GetObject: unexpected Content-Range {content_range:?}"),
                        )
                    })?;
                Ok(GetObject {
                    body,
                    range: got,
                    total_len,
                })
            }
            // The server ignored the Range header and sent the whole object.
            (Some(asked), None) => {
                let got = clip_range(Some(asked), length)?;
                Ok(GetObject {
                    body: slice_stream(body, got.clone()),
                    range: got,
                    total_len: length,
                })
            }
        }
    }

    pub async fn head_len(&self, full: &str, key: &str) -> Result<u64, StoreError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| self.map_err("HeadObject", Some(key), e))?;
        Ok(out.content_length().unwrap_or(0).max(0) as u64)
    }
}

/// Turns the SDK's response body into our stream, ending after the first error.
fn body_stream(body: SdkByteStream) -> ByteStream {
    Box::pin(futures::stream::unfold(Some(body), |state| async move {
        let mut body = state?;
        match body.next().await? {
            Ok(chunk) => Some((Ok(chunk), Some(body))),
            Err(e) => Some((Err(io::Error::other(e)), None)),
        }
    }))
}

/// Yields bytes `range` of `body` (for servers that answer a ranged GET with the whole object).
fn slice_stream(body: ByteStream, range: Range<u64>) -> ByteStream {
    let mut pos = 0u64;
    Box::pin(
        body.map(move |chunk| {
            let chunk = chunk?;
            let (start, end) = (pos, pos + chunk.len() as u64);
            pos = end;
            let from = range.start.clamp(start, end) - start;
            let to = range.end.clamp(start, end) - start;
            Ok(chunk.slice(from as usize..to as usize))
        })
        .take_while({
            let mut seen = 0u64;
            let want = range.end - range.start;
            move |chunk| {
                let more = seen < want;
                if let Ok(c) = chunk {
                    seen += c.len() as u64;
                }
                futures::future::ready(more || chunk.is_err())
            }
        })
        .filter(|chunk| futures::future::ready(!matches!(chunk, Ok(c) if c.is_empty()))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slicing_a_whole_body() {
        let data: Vec<u8> = (0..100u8).collect();
        for range in [0..100, 10..20, 0..1, 99..100, 7..93] {
            let body = crate::testing::body_from(data.clone(), 7);
            let got = crate::testing::read_all(slice_stream(body, range.clone()))
                .await
                .unwrap();
            assert_eq!(got, data[range.start as usize..range.end as usize]);
        }
    }
}
