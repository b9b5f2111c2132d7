//! The upload guard: what an unfinished upload may have written (segments, the object or its
//! manifest), removed when the upload fails and in a spawned task when its future is dropped.

use std::sync::Arc;

use super::Inner;
use crate::ObjectKey;

/// What a failed or cancelled upload leaves to remove.
struct Cleanup {
    key: ObjectKey,
    segments: Vec<String>,
    segment_prefix: Option<String>,
    object: bool,
}

/// Removes an unfinished upload's traces: awaited on failure, spawned if the `put` future is
/// dropped (the HTTP layer drops it when the client goes away).
pub(super) struct UploadGuard {
    inner: Arc<Inner>,
    key: ObjectKey,
    pub segments: Vec<String>,
    pub segment_prefix: Option<String>,
    /// A PUT to the key itself (object or manifest) has started and may have been committed.
    pub object_maybe_written: bool,
    armed: bool,
}

impl UploadGuard {
    pub fn new(inner: Arc<Inner>, key: ObjectKey) -> Self {
        Self {
            inner,
            key,
            segments: vec![],
            segment_prefix: None,
            object_maybe_written: false,
            armed: true,
        }
    }

    fn take_work(&mut self) -> Option<Cleanup> {
        let armed = std::mem::replace(&mut self.armed, false);
        let work = Cleanup {
            key: self.key.clone(),
            segments: std::mem::take(&mut self.segments),
            segment_prefix: self.segment_prefix.take(),
            object: self.object_maybe_written,
        };
        let pending = work.object || !work.segments.is_empty() || work.segment_prefix.is_some();
        (armed && pending).then_some(work)
    }

    pub fn disarm(&mut self) {
        self.armed = false;
    }

    pub async fn clean_up(mut self) {
        if let Some(work) = self.take_work() {
            self.inner.clean_up(work).await;
        }
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        let Some(work) = self.take_work() else { return };
        let inner = Arc::clone(&self.inner);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { inner.clean_up(work).await });
            }
            Err(_) => tracing::warn!(
                store = %inner.name,
                key = %work.key,
                "upload dropped outside a runtime; its segments are left to the sweep"
            ),
        }
    }
}

impl Inner {
    /// Removes what an unfinished upload may have written. Failures are logged, not returned:
    /// the caller reports the upload's own error, and the sweep retries later.
    async fn clean_up(&self, work: Cleanup) {
        let key = work.key;
        let mut failed = vec![];
        if work.object {
            if let Err(e) = self.delete_object(&self.container, key.as_str()).await {
                failed.push(e);
            }
        }
        if let Err(e) = self
            .delete_all(&self.segment_container, work.segments)
            .await
        {
            failed.push(e);
        }
        // Catches a segment committed after its name was recorded, however unlikely.
        if let Some(prefix) = work.segment_prefix {
            if let Err(e) = self.delete_prefix(&self.segment_container, &prefix).await {
                failed.push(e);
            }
        }
        for e in failed {
            tracing::warn!(store = %self.name, %key, error = %e, "cleanup after a failed upload");
        }
    }
}
