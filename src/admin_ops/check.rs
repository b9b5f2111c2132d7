//! Re-reading stored data and comparing it with what the registry recorded.

use std::time::{Duration, Instant};

use futures::StreamExt;
use stores::{HashAlgo, Hashing, Store, StoreError};

use super::{ClientGone, Event, Events};
use crate::model::ImageRecord;
use crate::state::AppState;

/// A progress line at most this often.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// What re-reading an image's data found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The store has no object where the registry says the data is.
    Missing,
    WrongSize {
        expected: u64,
        found: u64,
    },
    /// `what` is `md5` or the multihash algorithm.
    WrongChecksum {
        what: String,
        found: String,
    },
    /// The data could not be read (store down, unconfigured store, no data to read).
    Error(String),
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::WrongSize { .. } => "wrong_size",
            Self::WrongChecksum { .. } => "wrong_checksum",
            Self::Error(_) => "error",
        }
    }

    pub fn detail(&self) -> Option<String> {
        match self {
            Self::Ok => None,
            Self::Missing => Some("no object at the recorded location".into()),
            Self::WrongSize { expected, found } => {
                Some(format!("{found} bytes stored, {expected} recorded"))
            }
            Self::WrongChecksum { what, found } => {
                Some(format!("{what} of the stored data is {found}"))
            }
            Self::Error(message) => Some(message.clone()),
        }
    }
}

/// What the registry says the data is.
#[derive(Debug, Clone)]
pub struct Expected {
    pub size: u64,
    pub md5: Option<String>,
    pub multihash: Option<(HashAlgo, String)>,
}

impl Expected {
    pub fn of(record: &ImageRecord) -> Self {
        let multihash = match (&record.os_hash_algo, &record.os_hash_value) {
            (Some(algo), Some(value)) => HashAlgo::parse(algo).map(|a| (a, value.clone())),
            _ => None,
        };
        Self {
            size: record.size,
            md5: record.checksum.clone(),
            multihash,
        }
    }
}

/// Limits reading to `rate` bytes per second over a whole run.
pub struct Throttle {
    rate: Option<f64>,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    pub fn new(rate: Option<f64>) -> Self {
        Self {
            rate,
            started: Instant::now(),
            bytes: 0,
        }
    }

    async fn consume(&mut self, n: usize) {
        self.bytes += n as u64;
        if let Some(rate) = self.rate {
            let due = self.started + Duration::from_secs_f64(self.bytes as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// Verifies one image's data: the store object it was written to, or the object an admin
/// registered.
pub async fn verify_image(
    state: &AppState,
    record: &ImageRecord,
    throttle: &mut Throttle,
    events: &Events,
    base: u64,
) -> Result<Outcome, ClientGone> {
    let expected = Expected::of(record);
    let id = record.id.as_str();
    let store_name = match (&record.location, &record.registered) {
        (Some(loc), _) => &loc.store,
        (None, Some(reg)) => &reg.store,
        (None, None) => return Ok(Outcome::Error("no data in a store of the gateway".into())),
    };
    let Some(store) = state.stores.get(store_name.as_str()) else {
        return Ok(Outcome::Error(format!(
            "store {store_name} is not configured"
        )));
    };
    let opened = match (&record.location, &record.registered) {
        (Some(loc), _) => store.get(&loc.key, None).await,
        (None, Some(reg)) => store.get_foreign(&reg.object, None).await,
        (None, None) => unreachable!("answered above"),
    };
    check_object(
        store.as_ref(),
        opened,
        &expected,
        throttle,
        (id, base),
        events,
    )
    .await
}

/// Reads an opened object to its end and compares it with `expected`. Progress lines name image
/// `id` and count the run's bytes from `base`.
pub async fn check_object(
    store: &dyn Store,
    opened: Result<stores::GetObject, StoreError>,
    expected: &Expected,
    throttle: &mut Throttle,
    (id, base): (&str, u64),
    events: &Events,
) -> Result<Outcome, ClientGone> {
    let object = match opened {
        Ok(object) => object,
        Err(e) if e.is_not_found() => return Ok(Outcome::Missing),
        Err(e) => return Ok(Outcome::Error(e.to_string())),
    };
    if object.total_len != expected.size {
        return Ok(Outcome::WrongSize {
            expected: expected.size,
            found: object.total_len,
        });
    }
    let mut hashing = Hashing::start(expected.multihash.as_ref().map(|(algo, _)| *algo));
    let mut body = object.body;
    let mut read = 0u64;
    let mut last_report = Instant::now();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                return Ok(Outcome::Error(format!(
                    "reading from store {} failed: {e}",
                    store.name()
                )))
            }
        };
        read += chunk.len() as u64;
        hashing.feed(&chunk).await;
        throttle.consume(chunk.len()).await;
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            events
                .send(Event::Progress {
                    id: id.to_owned(),
                    bytes: base + read,
                })
                .await?;
        }
    }
    if read != expected.size {
        return Ok(Outcome::WrongSize {
            expected: expected.size,
            found: read,
        });
    }
    let digests = match hashing.finish().await {
        Ok(d) => d,
        Err(e) => return Ok(Outcome::Error(e.to_string())),
    };
    let md5 = hex::encode(digests.md5);
    if expected.md5.as_ref().is_some_and(|m| *m != md5) {
        return Ok(Outcome::WrongChecksum {
            what: "md5".into(),
            found: md5,
        });
    }
    if let (Some((algo, value)), Some(found)) = (&expected.multihash, digests.multihash) {
        let found = found.hex();
        if *value != found {
            return Ok(Outcome::WrongChecksum {
                what: algo.as_str().into(),
                found,
            });
        }
    }
    Ok(Outcome::Ok)
}
