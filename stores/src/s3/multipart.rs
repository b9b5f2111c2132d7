//! Writing objects: one PutObject below the multipart threshold, else a multipart upload with a
//! bounded number of parts in flight, aborted on any failure, cancellation included.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::task::JoinSet;

use super::checksum::{PartGuard, PartSum};
use super::parts::{PartSizer, MAX_PARTS};
use super::Inner;
use crate::budget::Reservation;
use crate::chunker::{BufferPool, Chunker};
use crate::{ByteStream, ObjectKey, StoreError};

pub(super) const CONTENT_TYPE: &str = "application/octet-stream";
/// How long a failed put waits for its abort before leaving the upload to the sweep.
const ABORT_TIMEOUT: Duration = Duration::from_secs(30);

impl Inner {
    /// Stores `body` under `key`: reads up to the multipart threshold, then sends what it read
    /// in one PutObject if the body ended there, or starts a multipart upload with it.
    pub async fn put(
        self: &Arc<Self>,
        key: &ObjectKey,
        body: ByteStream,
        size_hint: Option<u64>,
    ) -> Result<(), StoreError> {
        let tuning = self.tuning;
        if size_hint.is_some_and(|len| len > tuning.max_object_size) {
            tracing::warn!(size_hint, max = tuning.max_object_size, "object too large");
            return Err(self.storage_full());
        }
        let full = self.full_key(key);
        let guard = self.part_guard().await;
        // Parts in flight, the one being read, and the one just handed over.
        let pool = BufferPool::new(tuning.max_in_flight + 2);
        let mut reader = PartReader {
            chunker: Chunker::with_pool(body, pool.clone()),
            sizer: PartSizer::new(&tuning, size_hint),
            sent: 0,
            ended: false,
        };
        let mut memory = Reservation::new(&self.part_memory);
        let mut head = vec![];
        // Set when the store's part memory ran short with parts already read: they go up as a
        // multipart upload at once rather than waiting for memory while holding some.
        let mut short_of_memory = false;
        while reader.sent < tuning.threshold && !reader.ended {
            let size = reader.next_size();
            if !memory.try_cover(head.len() + 1, size) {
                if head.is_empty() {
                    memory.wait_cover(size).await;
                } else {
                    short_of_memory = true;
                    break;
                }
            }
            match reader.next_part().await? {
                Some(part) => head.push(part),
                None => break,
            }
        }
        if reader.sent < tuning.threshold && !short_of_memory {
            return self.put_single(key, &full, concat(head), guard).await;
        }
        let mut upload = Multipart::create(self, key, full, pool, guard, memory).await?;
        let result = upload.send_all(head, &mut reader).await;
        upload.finish(result).await
    }

    fn storage_full(&self) -> StoreError {
        StoreError::StorageFull {
            store: self.store().to_owned(),
        }
    }

    async fn put_single(
        &self,
        key: &ObjectKey,
        full: &str,
        data: Bytes,
        guard: PartGuard,
    ) -> Result<(), StoreError> {
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .content_type(CONTENT_TYPE)
            .content_length(data.len() as i64);
        let request = match guard.sum(self.store(), &data).await? {
            PartSum::Crc32c(crc) => request.checksum_crc32_c(crc),
            PartSum::Md5(md5) => request.content_md5(md5),
            PartSum::None => request,
        };
        request
            .body(SdkByteStream::from(data))
            .customize()
            // The part checksum is signed and checked by the server; hashing the payload a
            // second time for the signature buys nothing.
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.map_err("PutObject", Some(key.as_str()), e))?;
        Ok(())
    }

    async fn upload_part(
        self: Arc<Self>,
        key: ObjectKey,
        full: Arc<str>,
        upload_id: Arc<str>,
        number: i32,
        data: Bytes,
        guard: PartGuard,
    ) -> Result<CompletedPart, StoreError> {
        let sum = guard.sum(self.store(), &data).await?;
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&*full)
            .upload_id(&*upload_id)
            .part_number(number)
            .content_length(data.len() as i64);
        let request = match sum {
            PartSum::Crc32c(crc) => request.checksum_crc32_c(crc),
            PartSum::Md5(md5) => request.content_md5(md5),
            PartSum::None => request,
        };
        let out = request
            .body(SdkByteStream::from(data))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.map_err("UploadPart", Some(key.as_str()), e))?;
        let etag = out
            .e_tag()
            .ok_or_else(|| StoreError::other(self.store(), "UploadPart: no ETag in the answer"))?;
        // Number and ETag, and the part's CRC32C only when the server answered with one: an
        // upload created with a checksum algorithm needs it (AWS), while servers that did not
        // record part checksums refuse it.
        Ok(CompletedPart::builder()
            .part_number(number)
            .e_tag(etag)
            .set_checksum_crc32_c(out.checksum_crc32_c().map(str::to_owned))
            .build())
    }

    fn log_failed_abort(&self, full: &str, upload_id: &str, err: &StoreError) {
        tracing::warn!(
            store = %self.name, key = full, upload_id,
            error = %err,
            "aborting a multipart upload failed; the incomplete-upload sweep will remove it"
        );
    }
}

fn concat(parts: Vec<Bytes>) -> Bytes {
    match <[Bytes; 1]>::try_from(parts) {
        Ok([one]) => one,
        Err(parts) => {
            let mut all = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
            for part in parts {
                all.extend_from_slice(&part);
            }
            all.freeze()
        }
    }
}

/// The body, cut into parts of the sizes the [`PartSizer`] chooses.
struct PartReader {
    chunker: Chunker,
    sizer: PartSizer,
    /// Bytes read so far.
    sent: u64,
    /// A short part (or none) came: the body has ended.
    ended: bool,
}

impl PartReader {
    /// The size the next part will have (or less, at the end of the body).
    fn next_size(&self) -> usize {
        self.sizer.size_after(self.sent)
    }

    async fn next_part(&mut self) -> Result<Option<Bytes>, StoreError> {
        if self.ended {
            return Ok(None);
        }
        let size = self.sizer.size_after(self.sent);
        match self.chunker.next_part(size).await {
            None => {
                self.ended = true;
                Ok(None)
            }
            Some(Err(e)) => Err(StoreError::Body(e)),
            Some(Ok(part)) => {
                self.ended = part.len() < size;
                self.sent += part.len() as u64;
                Ok(Some(part))
            }
        }
    }
}

/// An open multipart upload and its parts in flight. While armed, dropping it (the put future
/// was cancelled) cancels the part uploads and aborts the upload in a spawned task.
struct Multipart {
    inner: Arc<Inner>,
    key: ObjectKey,
    full: Arc<str>,
    upload_id: Arc<str>,
    in_flight: JoinSet<Result<CompletedPart, StoreError>>,
    /// Where uploaded parts' buffers go back for the chunker to reuse.
    pool: BufferPool,
    /// This upload's share of the store's part memory.
    memory: Reservation,
    guard: PartGuard,
    done: Vec<CompletedPart>,
    /// CompleteMultipartUpload was sent, so the object may exist.
    completing: bool,
    armed: bool,
}

impl Multipart {
    /// Starts a multipart upload of `key`, armed.
    async fn create(
        inner: &Arc<Inner>,
        key: &ObjectKey,
        full: String,
        pool: BufferPool,
        guard: PartGuard,
        memory: Reservation,
    ) -> Result<Self, StoreError> {
        // AWS refuses parts with a checksum the upload was not created for.
        let algorithm = (guard == PartGuard::Crc32c).then_some(ChecksumAlgorithm::Crc32C);
        let created = inner
            .client
            .create_multipart_upload()
            .bucket(&inner.bucket)
            .key(&full)
            .content_type(CONTENT_TYPE)
            .set_checksum_algorithm(algorithm)
            .send()
            .await
            .map_err(|e| inner.map_err("CreateMultipartUpload", Some(key.as_str()), e))?;
        let upload_id = created.upload_id().ok_or_else(|| {
            StoreError::other(inner.store(), "CreateMultipartUpload: no upload id")
        })?;
        Ok(Self {
            inner: Arc::clone(inner),
            key: key.clone(),
            full: full.into(),
            upload_id: upload_id.into(),
            in_flight: JoinSet::new(),
            pool,
            memory,
            guard,
            done: vec![],
            completing: false,
            armed: true,
        })
    }

    /// Uploads the parts already read (`head`), then the rest of the body, and completes.
    async fn send_all(
        &mut self,
        head: Vec<Bytes>,
        reader: &mut PartReader,
    ) -> Result<(), StoreError> {
        let tuning = self.inner.tuning;
        let max = tuning.max_in_flight;
        let inner = Arc::clone(&self.inner);
        let too_large = |sent: u64| {
            tracing::warn!(sent, "object exceeds the store's limits");
            inner.storage_full()
        };
        let mut number = 0i32;
        for part in head {
            self.wait_for_capacity(max).await?;
            number += 1;
            self.spawn_part(number, part);
        }
        while !reader.ended {
            // Memory: `max` parts uploading plus the one being read, within the store's budget.
            self.wait_for_capacity(max).await?;
            self.reserve_next(reader.next_size()).await?;
            let sent = reader.sent;
            let Some(part) = reader.next_part().await? else {
                break;
            };
            if number as u64 >= MAX_PARTS || sent > tuning.max_object_size {
                return Err(too_large(sent));
            }
            number += 1;
            self.spawn_part(number, part);
            self.reap_finished()?;
        }
        if reader.sent > tuning.max_object_size {
            return Err(too_large(reader.sent));
        }
        self.complete().await
    }

    /// Disarms the upload after `result` succeeded; otherwise aborts it and makes sure no object
    /// survives, and returns the upload's own error.
    async fn finish(mut self, result: Result<(), StoreError>) -> Result<(), StoreError> {
        let Err(e) = result else {
            self.armed = false;
            return Ok(());
        };
        let err = self.fail(e).await;
        if self.completing {
            // Complete may have succeeded with its answer lost (the SDK's retry then gets
            // NoSuchUpload): make sure no object survives a failed put. Keys are written once
            // (image ids), so no older object is lost by this.
            let inner = &self.inner;
            if let Err(e) = inner
                .client
                .delete_object()
                .bucket(&inner.bucket)
                .key(&*self.full)
                .send()
                .await
            {
                let e = inner.map_err("DeleteObject", Some(self.key.as_str()), e);
                tracing::warn!(
                    store = %inner.name, key = &*self.full, error = %e,
                    "removing a possibly completed object failed"
                );
            }
        }
        Err(err)
    }

    fn spawn_part(&mut self, number: i32, data: Bytes) {
        let (pool, buffer) = (self.pool.clone(), data.clone());
        let upload = Arc::clone(&self.inner).upload_part(
            self.key.clone(),
            Arc::clone(&self.full),
            Arc::clone(&self.upload_id),
            number,
            data,
            self.guard,
        );
        self.in_flight.spawn(async move {
            let part = upload.await?;
            // The request has let go of the part: its buffer goes back for the next one.
            pool.recycle(buffer);
            Ok(part)
        });
    }

    fn joined(
        &mut self,
        res: Result<Result<CompletedPart, StoreError>, tokio::task::JoinError>,
    ) -> Result<(), StoreError> {
        match res {
            Ok(Ok(part)) => {
                self.done.push(part);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(StoreError::other(
                self.inner.store(),
                format!("a part upload task failed: {e}"),
            )),
        }
    }

    /// Waits until fewer than `max` parts are in flight.
    async fn wait_for_capacity(&mut self, max: usize) -> Result<(), StoreError> {
        while self.in_flight.len() >= max {
            match self.in_flight.join_next().await {
                Some(res) => self.joined(res)?,
                None => break,
            }
        }
        Ok(())
    }

    /// Makes the reservation cover the parts in flight plus one of `size` bytes to read: takes
    /// more of the store's budget if it has it, else waits for a part of this upload to
    /// finish, or, with none in flight, gives back what it holds and waits for the budget.
    async fn reserve_next(&mut self, size: usize) -> Result<(), StoreError> {
        loop {
            if self.memory.try_cover(self.in_flight.len() + 1, size) {
                // Idle buffers past the one the next part takes are no longer reserved.
                self.pool.keep_at_most(1);
                return Ok(());
            }
            match self.in_flight.join_next().await {
                Some(res) => self.joined(res)?,
                None => {
                    self.pool.keep_at_most(0);
                    self.memory.wait_cover(size).await;
                    return Ok(());
                }
            }
        }
    }

    /// Collects parts that already finished, so a failed part stops the upload early.
    fn reap_finished(&mut self) -> Result<(), StoreError> {
        while let Some(res) = self.in_flight.try_join_next() {
            self.joined(res)?;
        }
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), StoreError> {
        self.wait_for_capacity(1).await?;
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part_number());
        let inner = &self.inner;
        self.completing = true;
        inner
            .client
            .complete_multipart_upload()
            .bucket(&inner.bucket)
            .key(&*self.full)
            .upload_id(&*self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| inner.map_err("CompleteMultipartUpload", Some(self.key.as_str()), e))?;
        Ok(())
    }

    /// Cancels the parts in flight and aborts the upload; returns `original`, whatever the abort
    /// did (a failed abort is logged, and the sweep catches the upload later).
    async fn fail(&mut self, original: StoreError) -> StoreError {
        self.in_flight.shutdown().await;
        let abort = self.inner.abort_upload(&self.full, &self.upload_id);
        // The client is waiting for its error; a hung backend must not hold it for long.
        let result = match tokio::time::timeout(ABORT_TIMEOUT, abort).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::unavailable(
                self.inner.store(),
                "AbortMultipartUpload: timed out",
            )),
        };
        if let Err(e) = result {
            self.inner.log_failed_abort(&self.full, &self.upload_id, &e);
        }
        self.armed = false;
        original
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut tasks = std::mem::take(&mut self.in_flight);
        let (inner, full, upload_id) = (
            Arc::clone(&self.inner),
            Arc::clone(&self.full),
            Arc::clone(&self.upload_id),
        );
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                store = %inner.name, key = &*full, upload_id = &*upload_id,
                "multipart upload cancelled outside a runtime; the sweep will remove it"
            );
            return;
        };
        tracing::debug!(store = %inner.name, key = &*full, "upload cancelled; aborting");
        runtime.spawn(async move {
            // Parts still uploading must not land after the abort.
            tasks.shutdown().await;
            if let Err(e) = inner.abort_upload(&full, &upload_id).await {
                inner.log_failed_abort(&full, &upload_id, &e);
            }
        });
    }
}
