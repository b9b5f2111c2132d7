//! Starting the gateway: opening the registry and stores, recovering from a crash, and serving
//! HTTP/1.1 with the header limits the API promises.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use stores::ownership::Claim;
use stores::{Store, Stores};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::framing::FramingCheck;
use crate::registry::Registry;
use crate::remote::RemoteClient;
use crate::state::AppState;
use crate::{maintenance, router, upload};

/// Up to this many header lines are accepted; beyond, hyper answers 431. (The 64 KiB total is
/// checked in `http`.)
const MAX_HEADERS: usize = 256;

/// Opens the registry and every configured store, checks the stores, and recovers uploads a
/// crash interrupted.
pub async fn open_state(config: Config) -> anyhow::Result<AppState> {
    let registry_path = config.registry_path.clone();
    let registry = tokio::task::spawn_blocking(move || Registry::open(&registry_path))
        .await?
        .with_context(|| {
            format!(
                "cannot open the registry at {}",
                config.registry_path.display()
            )
        })?;
    let mut stores = Stores::new();
    for (name, store_config) in &config.stores {
        let store = stores::open_store(name.clone(), store_config)
            .await
            .with_context(|| format!("config key `stores.{name}`"))?;
        match store.health_check().await {
            Ok(()) => tracing::info!(store = %name, kind = store.kind(), "store ready"),
            // A store that is down now may come back; uploads to it answer 503 meanwhile.
            Err(e) => tracing::error!(store = %name, error = %e, "store health check failed"),
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
    let state = AppState::new(config, registry, stores, remote).await?;
    let recovered = upload::recover_interrupted(&state).await?;
    if recovered > 0 {
        tracing::warn!(
            count = recovered,
            "killed images left saving by an earlier run"
        );
    }
    Ok(state)
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

/// Serves the API on `listener` until `shutdown` completes; starts the background maintenance.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let maintenance = tokio::spawn(maintenance::run(state.clone()));
    // One permit per open connection: at the limit the gateway stops accepting, and new
    // connections wait in the listen backlog.
    let connections = Arc::new(Semaphore::new(state.config.max_connections));
    let app = router(state);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => permit?,
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
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            // Glance's header spelling (`X-Image-Meta-Disk_format`, `Etag`): some clients
            // compare names case-sensitively.
            builder
                .title_case_headers(true)
                .max_headers(MAX_HEADERS)
                .header_read_timeout(Duration::from_secs(60))
                .timer(hyper_util::rt::TokioTimer::new());
            let stream = FramingCheck::new(stream);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    maintenance.abort();
    Ok(())
}
