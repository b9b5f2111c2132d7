//! The ownership marker of the bucket + prefix (see [`crate::ownership`]).

use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use bytes::Bytes;

use super::checksum::{PartGuard, PartSum};
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
        // Content-MD5, which every server verifies, whatever `part_checksum` says: the marker
        // is tiny.
        let PartSum::Md5(md5) = PartGuard::Md5.sum(self.store(), &content).await? else {
            unreachable!("an MD5 guard gives an MD5");
        };
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
