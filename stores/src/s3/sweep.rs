//! Listing and removing: the objects the store manages, a key's removal with any upload left
//! for it, and the sweep of incomplete multipart uploads.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::ProvideErrorMetadata;

use super::Inner;
use crate::{ObjectInfo, ObjectKey, StoreError, SweepReport};

impl Inner {
    /// Removes the object at `key` and any multipart upload of it.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let full = self.full_key(key);
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.map_err("DeleteObject", Some(key.as_str()), e))
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        // A crashed or cancelled upload of this key may have left a multipart upload behind.
        for (upload_key, upload_id, _) in self.list_uploads(&full).await? {
            if upload_key == full {
                self.abort_upload(&full, &upload_id).await?;
            }
        }
        Ok(())
    }

    /// The complete objects under the prefix.
    pub async fn list(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .into_paginator()
            .send();
        let mut out = vec![];
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.map_err("ListObjectsV2", None, e))?;
            for object in page.contents() {
                let Some(key) = object
                    .key()
                    .and_then(|k| k.strip_prefix(self.prefix.as_str()))
                    .and_then(ObjectKey::parse)
                else {
                    continue;
                };
                out.push(ObjectInfo {
                    key,
                    last_modified: object
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok()),
                });
            }
        }
        Ok(out)
    }

    /// Aborts the multipart uploads under the prefix initiated before `older_than` ago.
    pub async fn sweep_incomplete(&self, older_than: Duration) -> Result<SweepReport, StoreError> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut report = SweepReport::default();
        for (key, upload_id, initiated) in self.list_uploads(&self.prefix).await? {
            let ours = key
                .strip_prefix(self.prefix.as_str())
                .and_then(ObjectKey::parse)
                .is_some();
            // No initiation time: leave it, rather than abort an upload that may be live.
            if ours && initiated.is_some_and(|t| t <= cutoff) {
                self.abort_upload(&key, &upload_id).await?;
                report.incomplete_removed += 1;
            }
        }
        Ok(report)
    }

    pub async fn abort_upload(&self, full: &str, upload_id: &str) -> Result<(), StoreError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already gone: what we wanted.
            Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
            Err(e) => Err(self.map_err("AbortMultipartUpload", None, e)),
        }
    }

    /// Multipart uploads whose key starts with `prefix`: (key, upload id, initiated).
    async fn list_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, Option<SystemTime>)>, StoreError> {
        let mut out = vec![];
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.map_err("ListMultipartUploads", None, e))?;
            for upload in page.uploads() {
                if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
                    let initiated = upload
                        .initiated()
                        .and_then(|t| SystemTime::try_from(*t).ok());
                    out.push((key.to_owned(), id.to_owned(), initiated));
                }
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if page.is_truncated() != Some(true) || key_marker.is_none() {
                return Ok(out);
            }
        }
    }
}
