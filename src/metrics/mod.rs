//! The gateway's Prometheus metrics: one registry per running gateway (so tests can run several
//! side by side), rendered in the Prometheus text format on the admin listener. The HTTP layer
//! records requests, [`store::MeteredStore`] records store operations, the upload pipeline
//! counts uploads in progress.

pub mod store;

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The commit the binary was built from (`unknown` outside a git checkout).
pub const COMMIT: &str = env!("GLANCE_GATEWAY_COMMIT");
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    /// The route template (`/v1/images/{id}`), never a concrete path.
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: &'static str,
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOpLabels {
    pub store: String,
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreBytesLabels {
    pub store: String,
    /// `in` (written to the store) or `out` (read from it).
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImageStatusLabels {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

type DurationFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// From 1 ms to about 9 minutes: metadata calls and multi-GiB transfers on one scale.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 11))
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_duration: DurationFamily<RouteLabels>,
    pub store_bytes: Family<StoreBytesLabels, Counter>,
    pub store_duration: DurationFamily<StoreOpLabels>,
    pub store_errors: Family<StoreOpLabels, Counter>,
    pub store_up: Family<StoreLabels, Gauge>,
    /// Set from the stores' part budgets just before each scrape.
    pub store_part_memory: Family<StoreLabels, Gauge>,
    pub store_part_memory_limit: Family<StoreLabels, Gauge>,
    pub uploads_in_progress: Gauge<i64, AtomicI64>,
    /// Set from the registry's status counters just before each scrape.
    pub images: Family<ImageStatusLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("glance_gateway");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            http_requests.clone(),
        );
        let http_duration: DurationFamily<RouteLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to the end of its response body",
            http_duration.clone(),
        );
        let store_bytes = Family::<StoreBytesLabels, Counter>::default();
        registry.register(
            "store_bytes",
            "Image bytes written to (in) and read from (out) each store",
            store_bytes.clone(),
        );
        let store_duration: DurationFamily<StoreOpLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "store_operation_duration_seconds",
            "Duration of store operations (a get until its data starts)",
            store_duration.clone(),
        );
        let store_errors = Family::<StoreOpLabels, Counter>::default();
        registry.register(
            "store_errors",
            "Store operations that failed on the store's side",
            store_errors.clone(),
        );
        let store_up = Family::<StoreLabels, Gauge>::default();
        registry.register(
            "store_up",
            "1 when the store's last health probe succeeded, else 0",
            store_up.clone(),
        );
        let store_part_memory = Family::<StoreLabels, Gauge>::default();
        registry.register(
            "store_part_memory_bytes",
            "Bytes of upload part buffers held now, per store with a max_part_memory",
            store_part_memory.clone(),
        );
        let store_part_memory_limit = Family::<StoreLabels, Gauge>::default();
        registry.register(
            "store_part_memory_limit_bytes",
            "The store's max_part_memory",
            store_part_memory_limit.clone(),
        );
        let uploads_in_progress = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "uploads_in_progress",
            "Image uploads streaming into a store now",
            uploads_in_progress.clone(),
        );
        let images = Family::<ImageStatusLabels, Gauge>::default();
        registry.register(
            "images",
            "Images in the registry by status (from its counters, not a scan)",
            images.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: VERSION,
                commit: COMMIT,
            })
            .set(1);
        registry.register(
            "build_info",
            "The running version and the commit it was built from",
            build_info,
        );
        Self {
            registry,
            http_requests,
            http_duration,
            store_bytes,
            store_duration,
            store_errors,
            store_up,
            store_part_memory,
            store_part_memory_limit,
            uploads_in_progress,
            images,
        }
    }

    /// Records one answered request; `elapsed` runs to the end of the response body.
    pub fn record_request(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        self.http_requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels { method, route })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an upload as in progress until the returned guard is dropped.
    pub fn upload_started(self: &Arc<Self>) -> UploadInProgress {
        self.uploads_in_progress.inc();
        UploadInProgress(Arc::clone(self))
    }

    /// Reads what each store holds of its part budget, for the next scrape.
    pub fn observe_part_memory<'a>(
        &self,
        stores: impl Iterator<Item = &'a Arc<dyn stores::Store>>,
    ) {
        for store in stores {
            let Some(budget) = store.part_memory() else {
                continue;
            };
            let labels = StoreLabels {
                store: store.name().to_string(),
            };
            let bytes = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.store_part_memory
                .get_or_create(&labels)
                .set(bytes(budget.held_bytes()));
            self.store_part_memory_limit
                .get_or_create(&labels)
                .set(bytes(budget.limit_bytes()));
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Decrements `uploads_in_progress` when dropped, however the upload ends.
pub struct UploadInProgress(Arc<Metrics>);

impl Drop for UploadInProgress {
    fn drop(&mut self) {
        self.0.uploads_in_progress.dec();
    }
}

/// The label for an HTTP method: the standard ones by name, anything else `other`, so a client
/// cannot grow the label space.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
