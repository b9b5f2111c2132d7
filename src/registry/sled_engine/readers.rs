//! A small fixed set of threads that runs the engine's reads.
//!
//! sled calls may block on disk, so they never run on the async threads. Handing each read to
//! tokio's blocking pool grew that pool to one thread per concurrent request; every read then woke
//! a sleeping thread, and each of those threads kept its own malloc arena of freed sled pages.
//! A few long-lived readers draining one queue stay awake while work is queued, and keep the
//! memory they free in few arenas. Only lookups of a few keys come here: walks, which may read
//! many records, run on the blocking pool, and writes on the writer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread;

use crossbeam_channel::{Receiver, Sender};

type Job = Box<dyn FnOnce() + Send>;

pub struct Readers {
    queue: Sender<Job>,
}

impl Readers {
    /// Starts `threads` readers. They stop once this value is dropped and the queue is drained.
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let (queue, jobs) = crossbeam_channel::unbounded::<Job>();
        for n in 0..threads.max(1) {
            let jobs: Receiver<Job> = jobs.clone();
            thread::Builder::new()
                .name(format!("registry-read-{n}"))
                .spawn(move || {
                    for job in jobs {
                        // A panicking read fails its own request (its answer is dropped), not
                        // the reader.
                        let _ = catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Self { queue })
    }

    /// Runs `read` on a reader; `None` when it panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller may have gone (a dropped request); its answer is then not needed.
            let _ = answer.send(read());
        });
        self.queue.send(job).ok()?;
        answered.await.ok()
    }
}
