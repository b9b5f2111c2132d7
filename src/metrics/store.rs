//! [`MeteredStore`]: a [`Store`] that decorates another with metrics — bytes in and out,
//! operation durations, errors — so no backend needs to know about them.

use std::collections::BTreeSet;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use prometheus_client::metrics::counter::Counter;
use stores::{
    ByteStream, ForeignObject, GetObject, Namespace, ObjectInfo, ObjectKey, PutOptions, Store,
    StoreError, StoreName, SweepReport,
};

use super::{Metrics, StoreBytesLabels, StoreLabels, StoreOpLabels};

#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    bytes_in: Counter,
    bytes_out: Counter,
}

impl MeteredStore {
    pub fn wrap(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Arc<dyn Store> {
        let store = inner.name().to_string();
        let bytes = |direction| {
            metrics
                .store_bytes
                .get_or_create(&StoreBytesLabels {
                    store: store.clone(),
                    direction,
                })
                .clone()
        };
        let (bytes_in, bytes_out) = (bytes("in"), bytes("out"));
        Arc::new(Self {
            inner,
            metrics,
            bytes_in,
            bytes_out,
        })
    }

    fn labels(&self, operation: &'static str) -> StoreOpLabels {
        StoreOpLabels {
            store: self.inner.name().to_string(),
            operation,
        }
    }

    /// Times `op` and counts its failure, unless the error is the caller's (a missing object,
    /// a bad range, the client's body failing).
    async fn observe<T>(
        &self,
        operation: &'static str,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = op.await;
        self.metrics
            .store_duration
            .get_or_create(&self.labels(operation))
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            if is_store_side(e) {
                self.error(operation);
            }
        }
        result
    }

    fn error(&self, operation: &'static str) {
        self.metrics
            .store_errors
            .get_or_create(&self.labels(operation))
            .inc();
    }

    fn count_in(&self, body: ByteStream) -> ByteStream {
        Box::pin(Counted {
            inner: body,
            bytes: self.bytes_in.clone(),
            errors: None,
        })
    }

    fn count_out(&self, mut object: GetObject, operation: &'static str) -> GetObject {
        let errors = self
            .metrics
            .store_errors
            .get_or_create(&self.labels(operation))
            .clone();
        object.body = Box::pin(Counted {
            inner: object.body,
            bytes: self.bytes_out.clone(),
            errors: Some(errors),
        });
        object
    }

    /// Probes the store and records the outcome in `store_up`.
    pub async fn probe(store: &dyn Store, metrics: &Metrics) -> Result<(), StoreError> {
        let result = store.health_check().await;
        metrics
            .store_up
            .get_or_create(&StoreLabels {
                store: store.name().to_string(),
            })
            .set(i64::from(result.is_ok()));
        result
    }
}

fn is_store_side(e: &StoreError) -> bool {
    !matches!(
        e,
        StoreError::NotFound { .. } | StoreError::RangeNotSatisfiable { .. } | StoreError::Body(_)
    )
}

/// Counts the bytes that pass; for a read, an error mid-stream is the store's.
struct Counted {
    inner: ByteStream,
    bytes: Counter,
    errors: Option<Counter>,
}

impl Stream for Counted {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                self.bytes.inc_by(chunk.len() as u64);
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(errors) = &self.errors {
                    errors.inc();
                }
            }
            _ => {}
        }
        polled
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

#[async_trait]
impl Store for MeteredStore {
    fn name(&self) -> &StoreName {
        self.inner.name()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn describe(&self, key: &ObjectKey) -> String {
        self.inner.describe(key)
    }

    fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints()
    }

    fn part_memory(&self) -> Option<&stores::budget::PartBudget> {
        self.inner.part_memory()
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        options: PutOptions,
    ) -> Result<(), StoreError> {
        let body = self.count_in(body);
        self.observe("put", self.inner.put(key, body, options))
            .await
    }

    fn foreign_object(&self, uri: &str) -> Option<ForeignObject> {
        self.inner.foreign_object(uri)
    }

    async fn head_foreign(&self, object: &ForeignObject) -> Result<u64, StoreError> {
        self.observe("head", self.inner.head_foreign(object)).await
    }

    async fn get_foreign(
        &self,
        object: &ForeignObject,
        range: Option<Range<u64>>,
    ) -> Result<GetObject, StoreError> {
        let object = self
            .observe("get", self.inner.get_foreign(object, range))
            .await?;
        Ok(self.count_out(object, "get"))
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<GetObject, StoreError> {
        let object = self.observe("get", self.inner.get(key, range)).await?;
        Ok(self.count_out(object, "get"))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.observe("delete", self.inner.delete(key)).await
    }

    async fn health_check(&self) -> Result<(), StoreError> {
        self.observe("health_check", Self::probe(&*self.inner, &self.metrics))
            .await
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        self.observe("list", self.inner.list()).await
    }

    async fn sweep_incomplete(
        &self,
        older_than: Duration,
        in_progress: &BTreeSet<ObjectKey>,
    ) -> Result<SweepReport, StoreError> {
        self.observe(
            "sweep",
            self.inner.sweep_incomplete(older_than, in_progress),
        )
        .await
    }

    fn namespaces(&self) -> Vec<Namespace> {
        self.inner.namespaces()
    }

    async fn read_marker(&self) -> Result<Option<Bytes>, StoreError> {
        self.observe("read_marker", self.inner.read_marker()).await
    }

    async fn write_marker(&self, content: Bytes) -> Result<(), StoreError> {
        self.observe("write_marker", self.inner.write_marker(content))
            .await
    }
}
