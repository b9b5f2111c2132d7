//! Starting and stopping the gateway: opening the registry and stores, recovering from a crash,
//! serving HTTP/1.1 on the API and admin listeners with the header limits the API promises, and
//! the graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use stores::ownership::Claim;
use stores::{Store, StoreConfig, Stores};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::framing::FramingCheck;
use crate::metrics::store::MeteredStore;
use crate::metrics::{Metrics, StoreLabels};
use crate::registry::Registry;
use crate::remote::RemoteClient;
use crate::state::AppState;
use crate::{admin, maintenance, router, upload};

/// Up to this many header lines are accepted; beyond, hyper answers 431. (The 64 KiB total is
/// checked in `http`.)
const MAX_HEADERS: usize = 256;

/// Opens the registry and every configured store, checks the stores, and recovers uploads a
/// crash interrupted.
pub async fn open_state(config: Config) -> anyhow::Result<AppState> {
    let place = config.registry.describe();
    let registry = Registry::open_with(&config.registry)
        .await
        .with_context(|| format!("cannot open the registry at {place}"))?;
    tracing::info!(registry = %place, kind = registry.engine().kind(), "registry opened");
    let metrics = Arc::new(Metrics::new());
    let mut stores = Stores::new();
    for (name, store_config) in &config.stores {
        let store = stores::open_store(name.clone(), store_config)
            .await
            .with_context(|| format!("config key `stores.{name}`"))?;
        let store = MeteredStore::wrap(store, Arc::clone(&metrics));
        let location = describe_store(store_config, &store.endpoints());
        match store.health_check().await {
            Ok(()) => tracing::info!(store = %name, kind = store.kind(), %location, "store ready"),
            // A store that is down now may come back; uploads to it answer 503 meanwhile.
            Err(e) => {
                tracing::error!(store = %name, kind = store.kind(), %location, error = %e, "store health check failed")
            }
        }
        stores.insert(store);
    }
    if let Some((a, b, namespace)) = stores::ownership::first_overlap(stores.iter().map(|s| &**s)) {
        anyhow::bail!(
            "config keys `stores.{a}` and `stores.{b}`: the two stores share {namespace}; each \
             store needs a namespace of its own (a root, bucket + prefix or container no other \
             store's lies in)"
        );
    }
    for store in stores.iter() {
        let adopt = config.stores.get(store.name()).is_some_and(|c| c.adopt());
        claim(&**store, registry.id(), adopt).await?;
    }
    let own_stores = stores.iter().cloned().collect();
    let remote = RemoteClient::new(
        config.remote_sources,
        config.remote_proxy.as_deref(),
        own_stores,
    )
    .context("config key `remote_proxy`")?;
    let state = AppState::new(config, registry, stores, remote, metrics).await?;
    let recovered = upload::recover_interrupted(&state).await?;
    if recovered > 0 {
        tracing::warn!(
            count = recovered,
            "killed images left saving by an earlier run"
        );
    }
    Ok(state)
}

/// Where a store keeps its data, without credentials: a file root, a bucket and prefix, a
/// container, and the backend's endpoints.
pub fn describe_store(config: &StoreConfig, endpoints: &[String]) -> String {
    let place = match config {
        StoreConfig::File(c) => c.root.display().to_string(),
        StoreConfig::S3(c) => format!("s3://{}/{}", c.bucket, c.prefix),
        StoreConfig::Swift(c) => format!("swift://{}", c.container),
    };
    if endpoints.is_empty() {
        place
    } else {
        format!("{place} at {}", endpoints.join(", "))
    }
}

/// Runs the gateway as `glance-gateway serve` does: both listeners, the background upkeep, and
/// on `shutdown` the drain of in-flight requests (up to `shutdown_timeout`), the cleanup of
/// uploads cut short, and a registry flush.
pub async fn run(
    config: Config,
    config_file: Option<&Path>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    match config_file {
        Some(path) => tracing::info!(path = %path.display(), "configuration file"),
        None => tracing::info!("no configuration file; defaults and flags only"),
    }
    let (bind, admin_bind) = (config.bind, config.admin_bind);
    let state = open_state(config).await?;
    let api = listen(bind, "API").await?;
    let admin = listen(admin_bind, "admin").await?;
    tracing::info!(
        api = %api.local_addr()?,
        admin = %admin.local_addr()?,
        version = crate::metrics::VERSION,
        commit = crate::metrics::COMMIT,
        "glance-gateway listening"
    );
    let stop = CancellationToken::new();
    let probes = tokio::spawn(probe_stores(state.clone()));
    let admin_task = tokio::spawn(serve_admin(
        admin,
        state.clone(),
        stop.clone().cancelled_owned(),
    ));
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        signal.cancel();
    });
    let served = serve(api, state.clone(), stop.clone().cancelled_owned()).await;
    stop.cancel();
    probes.abort();
    let _ = admin_task.await;
    // Uploads cut by the drain's end are killed and their partial data removed, exactly as the
    // next start would; doing it now leaves the store clean for that start.
    match upload::recover_interrupted(&state).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(count = n, "killed uploads cut short by the shutdown"),
        Err(e) => tracing::error!(error = %e, "could not clean up uploads cut short"),
    }
    state
        .registry
        .flush()
        .await
        .context("flushing the registry")?;
    tracing::info!("stopped");
    served
}

async fn listen(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

/// Probes every store every `store_probe_interval` seconds, for `glance_gateway_store_up`.
async fn probe_stores(state: AppState) {
    let every = Duration::from_secs(state.config.store_probe_interval);
    // As the startup probe left them, so a store already reported down is not reported again.
    let mut up: Vec<bool> = state
        .stores
        .iter()
        .map(|store| {
            let labels = StoreLabels {
                store: store.name().to_string(),
            };
            state.metrics.store_up.get_or_create(&labels).get() == 1
        })
        .collect();
    loop {
        tokio::time::sleep(every).await;
        for (store, was_up) in state.stores.iter().zip(up.iter_mut()) {
            let result = store.health_check().await;
            match (&result, *was_up) {
                (Err(e), true) => {
                    tracing::warn!(store = %store.name(), error = %e, "store health probe failed")
                }
                (Ok(()), false) => tracing::info!(store = %store.name(), "store is back"),
                _ => {}
            }
            *was_up = result.is_ok();
        }
    }
}

/// Makes sure this registry owns the store's namespace (see [`stores::ownership`]): refuses a
/// namespace another registry owns unless `adopt` is set. A store that cannot be reached now is
/// claimed by the first sweep that reaches it, and never swept before.
async fn claim(store: &dyn Store, registry: &str, adopt: bool) -> anyhow::Result<()> {
    let name = store.name();
    match stores::ownership::claim(store, registry, adopt).await {
        Ok(Claim::Owned) => {}
        Ok(Claim::Claimed) => {
            tracing::info!(store = %name, registry, "claimed the store's namespace for this registry")
        }
        Ok(Claim::Adopted { previous }) => {
            tracing::warn!(store = %name, registry, previous = %previous, "adopted the store's namespace from another registry (adopt = true)")
        }
        Ok(Claim::OwnedBy(owner)) => anyhow::bail!(
            "config key `stores.{name}`: the store's namespace belongs to registry {owner}, not to \
             this gateway's registry {registry}: another gateway (or an earlier registry) keeps its \
             images there. Point this store elsewhere, or set `adopt = true` in `[stores.{name}]` \
             to take the namespace over"
        ),
        Err(e) => {
            tracing::error!(store = %name, error = %e, "cannot check who owns the store's namespace; it is not swept until that works")
        }
    }
    Ok(())
}

/// Serves the API on `listener` until `shutdown` completes, then lets in-flight requests finish
/// for up to `shutdown_timeout` seconds; starts the background maintenance.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let maintenance = tokio::spawn(maintenance::run(state.clone()));
    let grace = Duration::from_secs(state.config.shutdown_timeout);
    let limit = state.config.max_connections;
    serve_router(listener, router(state), shutdown, grace, limit).await;
    maintenance.abort();
    Ok(())
}

/// Serves the admin routes (metrics, operations) on `listener` until `shutdown` completes.
pub async fn serve_admin(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let grace = Duration::from_secs(state.config.shutdown_timeout);
    serve_router(
        listener,
        admin::router(state),
        shutdown,
        grace,
        ADMIN_CONNECTIONS,
    )
    .await;
}

/// Open connections at most on the admin listener (scrapers and operators).
const ADMIN_CONNECTIONS: usize = 64;

/// Accepts connections until `shutdown`; then closes idle connections, lets requests in flight
/// finish for up to `grace`, and drops whatever is left (an upload cut this way is killed by its
/// guard, like any interrupted upload).
async fn serve_router(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    max_connections: usize,
) {
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    // One permit per open connection: at the limit the gateway stops accepting, and new
    // connections wait in the listen backlog.
    let limit = Arc::new(Semaphore::new(max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => {
                permit.expect("the connection semaphore is never closed")
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        // Glance's header spelling (`X-Image-Meta-Disk_format`, `Etag`): some clients compare
        // names case-sensitively.
        builder
            .title_case_headers(true)
            .max_headers(MAX_HEADERS)
            .header_read_timeout(Duration::from_secs(60))
            .timer(hyper_util::rt::TokioTimer::new());
        let stream = FramingCheck::new(stream);
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let open = connections.len();
    if open > 0 {
        tracing::info!(
            connections = open,
            grace_secs = grace.as_secs(),
            "draining requests in flight"
        );
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "requests still in flight after the shutdown timeout; cutting them"
        );
        connections.abort_all();
    }
    while connections.join_next().await.is_some() {}
}
