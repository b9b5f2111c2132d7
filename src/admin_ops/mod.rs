//! Data operations of the admin listener: list images with their stores, verify stored bytes
//! against the registry's checksums, and migrate images between stores. The registry is sled (one
//! process), so this work runs inside the gateway; the `images`, `verify` and `migrate`
//! subcommands drive it over HTTP (`crate::admin_cli`).
//!
//! Long operations answer a stream of JSON lines ([`Event`]): a `start` line with the totals,
//! `progress` lines while bytes move, one `result` line per image, and an `end` line, so a
//! client tells a finished run from a cut one.

mod check;
mod migrate;

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::model::{ImageId, ImageRecord, ImageStatus};
use crate::state::AppState;

pub use check::Outcome;

/// The admin data routes. The admin listener mounts them next to its own, before its token check
/// layer: `.merge(crate::admin_ops::routes())`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/images", get(list_images))
        .route("/admin/verify", post(verify))
        .route("/admin/migrate", post(migrate))
}

/// Objects a running migration writes or is about to remove, and the images it holds: the sweep
/// leaves these alone, and one image migrates once at a time.
#[derive(Debug, Clone, Default)]
pub struct Migrations {
    inner: Arc<Mutex<MigrationSet>>,
}

#[derive(Debug, Default)]
struct MigrationSet {
    images: HashSet<ImageId>,
    objects: HashSet<(String, String)>,
}

impl Migrations {
    /// `(store, key)` pairs the sweep must not remove.
    pub fn protected_objects(&self) -> HashSet<(String, String)> {
        self.lock().objects.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MigrationSet> {
        self.inner.lock().expect("migration set poisoned")
    }

    /// Claims `id` for one migration; `None` when another one holds it.
    fn claim(&self, id: &ImageId) -> Option<ImageClaim> {
        self.lock().images.insert(id.clone()).then(|| ImageClaim {
            set: self.clone(),
            id: id.clone(),
        })
    }

    /// Keeps the sweep off `(store, key)` while the returned guard lives.
    pub fn protect(&self, store: &str, key: &str) -> ObjectGuard {
        let object = (store.to_owned(), key.to_owned());
        self.lock().objects.insert(object.clone());
        ObjectGuard {
            set: self.clone(),
            object,
        }
    }
}

struct ImageClaim {
    set: Migrations,
    id: ImageId,
}

impl Drop for ImageClaim {
    fn drop(&mut self) {
        self.set.lock().images.remove(&self.id);
    }
}

/// Protection of one object from the sweep, lifted on drop.
pub struct ObjectGuard {
    set: Migrations,
    object: (String, String),
}

impl Drop for ObjectGuard {
    fn drop(&mut self) {
        self.set.lock().objects.remove(&self.object);
    }
}

/// A configured store a request names.
fn named_store(state: &AppState, name: &str) -> ApiResult<Arc<dyn stores::Store>> {
    state
        .stores
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::bad_request(format!("No store named {name} is configured")))
}

/// Where an image's data is, as the admin views name it.
fn store_of(record: &ImageRecord) -> Option<&str> {
    if let Some(loc) = &record.location {
        return Some(loc.store.as_str());
    }
    record.registered.as_ref().map(|r| r.store.as_str())
}

/// One row of `GET /admin/images`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ImageRow {
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub size: u64,
    /// The store holding the data; `None` for no data or an external `http(s)` location.
    pub store: Option<String>,
    /// `stored` (written by the gateway), `registered` (an object outside its namespace),
    /// `remote` (an `http(s)` URL) or `none`.
    pub data: String,
    pub owner: Option<String>,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
}

impl From<&ImageRecord> for ImageRow {
    fn from(r: &ImageRecord) -> Self {
        let data = if r.location.is_some() {
            "stored"
        } else if r.registered.is_some() {
            "registered"
        } else if r.remote_url.is_some() {
            "remote"
        } else {
            "none"
        };
        Self {
            id: r.id.to_string(),
            name: r.name.clone(),
            status: r.status.as_str().to_owned(),
            size: r.size,
            store: store_of(r).map(str::to_owned),
            data: data.to_owned(),
            owner: r.owner.clone(),
            checksum: r.checksum.clone(),
            os_hash_algo: r.os_hash_algo.clone(),
            os_hash_value: r.os_hash_value.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ImagesQuery {
    status: Option<String>,
    store: Option<String>,
}

/// `GET /admin/images?status=&store=`: every image but deleted ones (unless `status` asks for
/// them), oldest first.
async fn list_images(
    State(state): State<AppState>,
    Query(query): Query<ImagesQuery>,
) -> ApiResult<Response> {
    if let Some(store) = &query.store {
        named_store(&state, store)?;
    }
    let records = records_where(&state, |r| {
        let status = match &query.status {
            Some(status) => r.status.as_str() == status,
            None => r.status != ImageStatus::Deleted,
        };
        status && (query.store.is_none() || store_of(r) == query.store.as_deref())
    })
    .await?;
    let rows: Vec<ImageRow> = records.iter().map(ImageRow::from).collect();
    Ok(Json(serde_json::json!({ "images": rows })).into_response())
}

/// One line of a verify or migrate stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Start {
        total: usize,
        total_bytes: u64,
    },
    /// The run's bytes done so far (of `total_bytes`), while working on image `id`.
    Progress {
        id: String,
        bytes: u64,
    },
    Result(ImageResult),
    /// A migration removed (or failed to remove) the old copy of an image.
    Removed {
        id: String,
        store: String,
        error: Option<String>,
    },
    End,
}

/// What happened to one image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageResult {
    pub id: String,
    pub name: Option<String>,
    pub store: Option<String>,
    pub size: u64,
    /// Verify: `ok`, `missing`, `wrong_size`, `wrong_checksum`, `error`. Migrate: `migrated`,
    /// `unchanged` (already there), `error`.
    pub result: String,
    pub detail: Option<String>,
}

impl ImageResult {
    fn new(id: &str, record: Option<&ImageRecord>, result: &str, detail: Option<String>) -> Self {
        Self {
            id: id.to_owned(),
            name: record.and_then(|r| r.name.clone()),
            store: record.and_then(store_of).map(str::to_owned),
            size: record.map_or(0, |r| r.size),
            result: result.to_owned(),
            detail,
        }
    }
}

/// Sends events to the client; a gone client stops the work at its next event.
#[derive(Clone)]
struct Events(mpsc::Sender<Event>);

#[derive(Debug)]
struct ClientGone;

impl Events {
    async fn send(&self, event: Event) -> Result<(), ClientGone> {
        self.0.send(event).await.map_err(|_| ClientGone)
    }

    /// The run's opening event: how many images, and how many bytes it reads in all when each
    /// image's data is read `passes` times.
    async fn start(
        &self,
        images: &[(String, Option<ImageRecord>)],
        passes: u64,
    ) -> Result<(), ClientGone> {
        let total_bytes = images
            .iter()
            .filter_map(|(_, r)| r.as_ref())
            .map(|r| passes * r.size)
            .sum();
        self.send(Event::Start {
            total: images.len(),
            total_bytes,
        })
        .await
    }
}

/// Every image record with `keep`, oldest first.
async fn records_where(
    state: &AppState,
    keep: impl Fn(&ImageRecord) -> bool,
) -> ApiResult<Vec<ImageRecord>> {
    let mut records: Vec<ImageRecord> = state
        .registry
        .walk_records()
        .try_filter(|r| std::future::ready(keep(r)))
        .try_collect()
        .await?;
    records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(records)
}

/// Runs `work` in its own task and streams its events as JSON lines.
fn event_stream<F, Fut>(work: F) -> Response
where
    F: FnOnce(Events) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientGone>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let events = Events(tx);
    let task = work(events.clone());
    tokio::spawn(async move {
        if task.await.is_ok() {
            let _ = events.send(Event::End).await;
        }
    });
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).expect("events serialise");
        line.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(line)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .expect("valid response")
}

/// The images a verify or migrate request names: `ids`, or every image with data when `all`.
#[derive(Debug, Deserialize)]
pub struct Selection {
    #[serde(default)]
    pub ids: Vec<String>,
    #[serde(default)]
    pub all: bool,
    /// Only images whose data is in this store.
    pub store: Option<String>,
}

/// The requested images, each with its record (`None`: no such image).
async fn select(
    state: &AppState,
    selection: &Selection,
) -> ApiResult<Vec<(String, Option<ImageRecord>)>> {
    // Exactly one of the two.
    if selection.all != selection.ids.is_empty() {
        return Err(ApiError::bad_request(
            "Name image ids or ask for all images.",
        ));
    }
    if let Some(store) = &selection.store {
        named_store(state, store)?;
    }
    let in_store =
        |r: &ImageRecord| selection.store.is_none() || store_of(r) == selection.store.as_deref();
    if selection.all {
        let records = records_where(state, |r| {
            matches!(r.status, ImageStatus::Active | ImageStatus::Deactivated)
                && (r.location.is_some() || r.registered.is_some())
                && in_store(r)
        })
        .await?;
        return Ok(records
            .into_iter()
            .map(|r| (r.id.to_string(), Some(r)))
            .collect());
    }
    let mut out = vec![];
    for text in &selection.ids {
        let record = match ImageId::parse(text) {
            Some(id) => state.registry.get(&id).await?.map(|s| s.record),
            None => None,
        };
        if record.as_ref().is_some_and(|r| !in_store(r)) {
            continue;
        }
        out.push((text.clone(), record));
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
struct VerifyRequest {
    #[serde(flatten)]
    selection: Selection,
    /// Reading limit in MiB/s over the whole run.
    max_rate_mib: Option<f64>,
}

/// `POST /admin/verify`: re-reads each image's data and compares size, MD5 and multihash with
/// the registry. Changes nothing.
async fn verify(
    State(state): State<AppState>,
    Json(request): Json<VerifyRequest>,
) -> ApiResult<Response> {
    let rate = match request.max_rate_mib {
        Some(r) if !(r.is_finite() && r > 0.0) => {
            return Err(ApiError::bad_request("max_rate_mib must be positive"))
        }
        Some(r) => Some(r * 1024.0 * 1024.0),
        None => None,
    };
    let images = select(&state, &request.selection).await?;
    Ok(event_stream(move |events| async move {
        events.start(&images, 1).await?;
        let mut throttle = check::Throttle::new(rate);
        let mut done = 0;
        for (id, record) in images {
            let result = match &record {
                None => ImageResult::new(&id, None, "error", Some("no such image".into())),
                Some(record) => {
                    let outcome =
                        check::verify_image(&state, record, &mut throttle, &events, done).await?;
                    done += record.size;
                    ImageResult::new(&id, Some(record), outcome.name(), outcome.detail())
                }
            };
            events
                .send(Event::Progress {
                    id: id.clone(),
                    bytes: done,
                })
                .await?;
            events.send(Event::Result(result)).await?;
        }
        Ok(())
    }))
}

#[derive(Debug, Deserialize)]
struct MigrateRequest {
    ids: Vec<String>,
    to: String,
    /// Seconds the old copy is kept after the switch, for downloads that started before it.
    grace_seconds: Option<u64>,
}

/// Default wait before an old copy is removed.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// `POST /admin/migrate`: copies each image's data to store `to`, checks the copy, switches the
/// location and removes the old copy after the grace period.
async fn migrate(
    State(state): State<AppState>,
    Json(request): Json<MigrateRequest>,
) -> ApiResult<Response> {
    let target = named_store(&state, &request.to)?;
    let selection = Selection {
        ids: request.ids,
        all: false,
        store: None,
    };
    let images = select(&state, &selection).await?;
    let grace = request
        .grace_seconds
        .map_or(DEFAULT_GRACE, Duration::from_secs);
    Ok(event_stream(move |events| async move {
        migrate::run(state, images, target, grace, events).await
    }))
}
