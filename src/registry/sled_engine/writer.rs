//! The one thread that writes: group commit without waiting.
//!
//! Writes queue here; the writer takes every write queued so far, applies each in turn (its
//! sled transaction), flushes once, and only then answers them all. A write is answered once a
//! flush that began after it was applied has reached stable storage, and a burst of concurrent
//! writes costs one flush, not one each. One writer also means sled transactions never conflict
//! with each other (concurrent ones on the shared counters kept retrying), and no thread sleeps
//! on another's flush.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::Sender;

use crate::registry::RegistryError;

/// The most writes applied before a flush: a bound on how long the first one waits.
const MAX_BATCH: usize = 256;

/// Makes every applied write durable. It comes with each write rather than with the writer, so
/// the writer holds the database open only while it has writes in hand: a registry closed by
/// its last handle is closed, not kept open by an idle writer thread.
pub type Flush = Arc<dyn Fn() -> Result<(), RegistryError> + Send + Sync>;
/// Answers a write once the flush that covers it is done (its outcome given).
type Answer = Box<dyn FnOnce(Result<(), RegistryError>) + Send>;

struct Job {
    flush: Flush,
    apply: Box<dyn FnOnce() -> Answer + Send>,
}

pub struct Writer {
    queue: Sender<Job>,
    #[cfg_attr(not(test), allow(dead_code))]
    flushes: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer thread; it stops once this value is dropped and the queue is drained.
    pub fn start() -> std::io::Result<Self> {
        let (queue, jobs) = crossbeam_channel::unbounded::<Job>();
        let flushes = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&flushes);
        thread::Builder::new()
            .name("registry-write".into())
            .spawn(move || {
                while let Ok(first) = jobs.recv() {
                    let flush = Arc::clone(&first.flush);
                    let batch = std::iter::once(first).chain(jobs.try_iter().take(MAX_BATCH - 1));
                    // A write that panics is not answered: its caller sees the failure.
                    let answers: Vec<Answer> = batch
                        .filter_map(|job| catch_unwind(AssertUnwindSafe(job.apply)).ok())
                        .collect();
                    counted.fetch_add(1, Ordering::Relaxed);
                    let flushed = match catch_unwind(AssertUnwindSafe(|| flush())) {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(RegistryError::Storage(e))) => Err(e),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("the registry flush panicked".to_owned()),
                    };
                    // The flush holds the database open: let it go before answering, so a caller
                    // that closes the registry next finds it closed.
                    drop(flush);
                    for answer in answers {
                        answer(flushed.clone().map_err(RegistryError::Storage));
                    }
                }
            })?;
        Ok(Self { queue, flushes })
    }

    /// Applies `write` on the writer, then answers its result once `flush` (or a later flush of
    /// the same registry) has made it durable. `None` when the write panicked.
    pub async fn run<T, E>(
        &self,
        flush: &Flush,
        write: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Option<Result<T, E>>
    where
        T: Send + 'static,
        E: From<RegistryError> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let apply = Box::new(move || -> Answer {
            let outcome = write();
            Box::new(move |flushed: Result<(), RegistryError>| {
                let result = outcome.and_then(|v| flushed.map(|()| v).map_err(E::from));
                // The caller may have gone (a dropped request): the write stands regardless.
                let _ = answer.send(result);
            })
        });
        self.queue
            .send(Job {
                flush: Arc::clone(flush),
                apply,
            })
            .ok()?;
        answered.await.ok()
    }

    /// Flushes so far.
    #[cfg(test)]
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}
