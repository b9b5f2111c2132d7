//! The ownership marker of the bucket + prefix (see [`crate::ownership`]).

use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use bytes::Bytes;

use super::multipart::content_md5;
use super::Inner;
use crate::ownership::MARKER;
use crate::{Namespace, StoreError};

impl Inner {
    /// The bucket on its endpoint, and the prefix: keys extending it are the store's.
    pub fn namespace(&self) -> Namespace {
        let backend = format!(
            "s3 {} bucket {}",
            self.endpoint_label.trim_end_matches('/'),
            self.bucket
        );
        Namespace::new(backend, self.prefix.clone())
    }

    pub async fn read_marker(&self) -> Result<Option<Bytes>, StoreError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(format!("{}{MARKER}", self.prefix))
            .send()
            .await
            .map_err(|e| self.map_err("GetObject", Some(MARKER), e))
        {
            Ok(out) => out,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let body = out.body.collect().await.map_err(|e| {
            StoreError::unavailable(self.store(), format!("GetObject {MARKER}: {e}"))
        })?;
        Ok(Some(body.into_bytes()))
    }

    pub async fn write_marker(&self, content: Bytes) -> Result<(), StoreError> {
        let md5 = content_md5(self.store(), &content).await?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(format!("{}{MARKER}", self.prefix))
            .content_type("application/json")
            .content_md5(md5)
            .body(SdkByteStream::from(content))
            .send()
            .await
            .map_err(|e| self.map_err("PutObject", Some(MARKER), e))?;
        Ok(())
    }
}
