//! Starting the gateway: opening the registry and stores, recovering from a crash, and serving
//! HTTP/1.1 with the header limits the API promises.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use stores::Stores;
use tokio::net::TcpListener;

use crate::config::Config;
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
    let own_endpoints: Vec<String> = stores.iter().flat_map(|s| s.endpoints()).collect();
    let remote = RemoteClient::new(config.remote_sources, &own_endpoints)?;
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

/// Serves the API on `listener` until `shutdown` completes; starts the background maintenance.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let maintenance = tokio::spawn(maintenance::run(state.clone()));
    let app = router(state);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
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
            builder
                .max_headers(MAX_HEADERS)
                .header_read_timeout(Duration::from_secs(60))
                .timer(hyper_util::rt::TokioTimer::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    maintenance.abort();
    Ok(())
}
