//! The test harness: a real gateway on `127.0.0.1:0` over a temporary data directory, a reqwest
//! client, identity helpers for trusted-headers mode, and a raw-TCP client for requests reqwest
//! cannot make.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use glance_gateway::config::{
    AuthMode, Config, ConfigFile, HashingAlgorithm, Overrides, PublicizeImage, QuotaValue,
    RegistryFile, RemoteSources, SweepOrphans,
};
use glance_gateway::model::{ImageId, ImageRecord};
use glance_gateway::registry::{
    DatabaseUrl, PostgresRegistry, PostgresSettings, Registry, RegistryKind, StoredImage,
};
use glance_gateway::state::AppState;
use md5::{Digest, Md5};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use stores::file::FileStoreConfig;
use stores::StoreConfig;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Configuration knobs of a test gateway; everything unset keeps the gateway's default.
#[derive(Clone, Debug, Default)]
pub struct TestAppBuilder {
    auth: Option<AuthMode>,
    owner_is_tenant: Option<bool>,
    admin_role: Option<String>,
    allow_anonymous_access: Option<bool>,
    publicize_image: Option<PublicizeImage>,
    /// Property protection rules, written to a file in the data directory.
    property_rules: Option<String>,
    image_size_cap: Option<u64>,
    user_storage_quota: Option<String>,
    image_property_quota: Option<i64>,
    image_member_quota: Option<i64>,
    limit_param_default: Option<u64>,
    api_limit_max: Option<u64>,
    delayed_delete: Option<bool>,
    scrub_time: Option<u64>,
    show_image_direct_url: Option<bool>,
    /// Extra file stores by name (rooted under the data directory).
    extra_stores: Vec<String>,
    /// Stores of any kind by name, next to the default `file` store.
    stores: Vec<(String, StoreConfig)>,
    default_store: Option<String>,
    remote_sources: Option<RemoteSources>,
    sweep_min_age: Option<u64>,
    healthcheck_disable_file: Option<PathBuf>,
    admin_token_file: Option<PathBuf>,
    sweep_orphans: Option<SweepOrphans>,
    client_idle_timeout: Option<u64>,
    max_connections: Option<usize>,
    max_concurrent_imports: Option<usize>,
    import_timeout: Option<u64>,
    hashing_algorithm: Option<HashingAlgorithm>,
    /// The registry, instead of the suite's (sled, or a PostgreSQL schema per data directory).
    registry: Option<RegistryFile>,
}

impl TestAppBuilder {
    /// Uses this registry (several gateways on one PostgreSQL registry).
    pub fn registry(mut self, file: RegistryFile) -> Self {
        self.registry = Some(file);
        self
    }
    pub fn trusted_headers(mut self) -> Self {
        self.auth = Some(AuthMode::TrustedHeaders);
        self
    }
    pub fn owner_is_tenant(mut self, v: bool) -> Self {
        self.owner_is_tenant = Some(v);
        self
    }
    pub fn admin_role(mut self, v: &str) -> Self {
        self.admin_role = Some(v.to_owned());
        self
    }
    pub fn allow_anonymous_access(mut self, v: bool) -> Self {
        self.allow_anonymous_access = Some(v);
        self
    }
    pub fn property_rules(mut self, rules: &str) -> Self {
        self.property_rules = Some(rules.to_owned());
        self
    }
    pub fn publicize_image(mut self, v: PublicizeImage) -> Self {
        self.publicize_image = Some(v);
        self
    }
    pub fn image_size_cap(mut self, v: u64) -> Self {
        self.image_size_cap = Some(v);
        self
    }
    pub fn user_storage_quota(mut self, v: &str) -> Self {
        self.user_storage_quota = Some(v.to_owned());
        self
    }
    pub fn image_property_quota(mut self, v: i64) -> Self {
        self.image_property_quota = Some(v);
        self
    }
    pub fn image_member_quota(mut self, v: i64) -> Self {
        self.image_member_quota = Some(v);
        self
    }
    pub fn limits(mut self, default: u64, max: u64) -> Self {
        self.limit_param_default = Some(default);
        self.api_limit_max = Some(max);
        self
    }
    pub fn delayed_delete(mut self, v: bool) -> Self {
        self.delayed_delete = Some(v);
        self
    }
    pub fn scrub_time(mut self, v: u64) -> Self {
        self.scrub_time = Some(v);
        self
    }
    pub fn show_image_direct_url(mut self, v: bool) -> Self {
        self.show_image_direct_url = Some(v);
        self
    }
    /// Adds a named store of any kind (S3, Swift …) next to the default `file` store.
    pub fn store(mut self, name: &str, config: StoreConfig) -> Self {
        self.stores.push((name.to_owned(), config));
        self
    }
    pub fn default_store(mut self, name: &str) -> Self {
        self.default_store = Some(name.to_owned());
        self
    }
    pub fn remote_sources(mut self, v: RemoteSources) -> Self {
        self.remote_sources = Some(v);
        self
    }
    /// Seconds an incomplete upload must age before a sweep removes it.
    pub fn sweep_min_age(mut self, v: u64) -> Self {
        self.sweep_min_age = Some(v);
        self
    }
    pub fn healthcheck_disable_file(mut self, path: &Path) -> Self {
        self.healthcheck_disable_file = Some(path.to_owned());
        self
    }
    pub fn admin_token_file(mut self, path: &Path) -> Self {
        self.admin_token_file = Some(path.to_owned());
        self
    }
    pub fn sweep_orphans(mut self, v: SweepOrphans) -> Self {
        self.sweep_orphans = Some(v);
        self
    }
    pub fn client_idle_timeout(mut self, secs: u64) -> Self {
        self.client_idle_timeout = Some(secs);
        self
    }
    pub fn max_connections(mut self, v: usize) -> Self {
        self.max_connections = Some(v);
        self
    }
    pub fn imports(mut self, max_concurrent: usize, timeout_secs: u64) -> Self {
        self.max_concurrent_imports = Some(max_concurrent);
        self.import_timeout = Some(timeout_secs);
        self
    }
    pub fn hashing_algorithm(mut self, v: HashingAlgorithm) -> Self {
        self.hashing_algorithm = Some(v);
        self
    }
    pub fn extra_store(mut self, name: &str) -> Self {
        self.extra_stores.push(name.to_owned());
        self
    }

    fn config(&self, data_dir: &Path, registry: Option<RegistryFile>) -> Config {
        let mut stores = BTreeMap::new();
        if !self.extra_stores.is_empty() || !self.stores.is_empty() {
            stores.insert(
                "file".to_owned(),
                StoreConfig::File(FileStoreConfig {
                    root: data_dir.join("images"),
                    adopt: false,
                    direct_io: true,
                }),
            );
            for name in &self.extra_stores {
                stores.insert(
                    name.clone(),
                    StoreConfig::File(FileStoreConfig {
                        root: data_dir.join(format!("store-{name}")),
                        adopt: false,
                        direct_io: true,
                    }),
                );
            }
        }
        for (name, config) in &self.stores {
            stores.insert(name.clone(), config.clone());
        }
        let file = ConfigFile {
            auth: self.auth,
            owner_is_tenant: self.owner_is_tenant,
            admin_role: self.admin_role.clone(),
            allow_anonymous_access: self.allow_anonymous_access,
            publicize_image: self.publicize_image,
            property_protection_file: self.property_rules.as_ref().map(|rules| {
                let path = data_dir.join("property-protections.conf");
                std::fs::write(&path, rules).expect("write the rules file");
                path
            }),
            image_size_cap: self.image_size_cap,
            user_storage_quota: self.user_storage_quota.clone().map(QuotaValue::Text),
            image_property_quota: self.image_property_quota,
            image_member_quota: self.image_member_quota,
            limit_param_default: self.limit_param_default,
            api_limit_max: self.api_limit_max,
            delayed_delete: self.delayed_delete,
            scrub_time: self.scrub_time,
            show_image_direct_url: self.show_image_direct_url,
            default_store: self.default_store.clone(),
            remote_sources: self.remote_sources,
            sweep_min_age: self.sweep_min_age,
            healthcheck_disable_file: self.healthcheck_disable_file.clone(),
            admin_token_file: self.admin_token_file.clone(),
            sweep_orphans: self.sweep_orphans,
            client_idle_timeout: self.client_idle_timeout,
            max_connections: self.max_connections,
            max_concurrent_imports: self.max_concurrent_imports,
            import_timeout: self.import_timeout,
            hashing_algorithm: self.hashing_algorithm,
            stores,
            registry,
            ..ConfigFile::default()
        };
        Config::resolve(
            file,
            Overrides {
                bind: Some("127.0.0.1:0".to_owned()),
                admin_bind: Some("127.0.0.1:0".to_owned()),
                data_dir: Some(data_dir.to_owned()),
                auth: None,
            },
        )
        .expect("test configuration resolves")
    }

    pub async fn spawn(self) -> TestApp {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        self.spawn_in(dir).await
    }

    /// The error that stops a gateway with this configuration from starting (in a fresh data
    /// directory); panics if it starts.
    pub async fn refused(self) -> String {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = match &self.registry {
            Some(file) => Some(file.clone()),
            None => registry_file(dir.path()).await,
        };
        match glance_gateway::open_state(self.config(dir.path(), registry)).await {
            Ok(_) => panic!("the gateway started"),
            Err(e) => format!("{e:#}"),
        }
    }

    /// Starts a gateway on an existing data directory (restarts, crash recovery).
    pub async fn spawn_in(self, dir: Arc<TempDir>) -> TestApp {
        let registry = match &self.registry {
            Some(file) => Some(file.clone()),
            None => registry_file(dir.path()).await,
        };
        let config = self.config(dir.path(), registry);
        // A previous gateway on this directory may still be releasing the registry lock.
        let mut attempts = 0;
        let state = loop {
            match glance_gateway::open_state(config.clone()).await {
                Ok(state) => break state,
                Err(e) if attempts < 100 => {
                    attempts += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("open_state failed: {e:#}"),
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let admin_addr = admin_listener.local_addr().expect("local addr");
        let (admin_tx, admin_rx) = oneshot::channel::<()>();
        tokio::spawn(glance_gateway::serve_admin(
            admin_listener,
            state.clone(),
            async {
                let _ = admin_rx.await;
            },
        ));
        let (tx, rx) = oneshot::channel::<()>();
        let served = state.clone();
        let task = tokio::spawn(async move {
            glance_gateway::serve(listener, served, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
            let _ = admin_tx.send(());
        });
        // No idle connections: a restarted gateway must not find the old one still holding state.
        let client = Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        TestApp {
            base: format!("http://{addr}"),
            admin_base: format!("http://{admin_addr}"),
            addr,
            client,
            dir,
            state: Some(state),
            shutdown: Some(tx),
            task: Some(task),
            builder: self,
        }
    }
}

/// The PostgreSQL test database (`GATEWAY_TEST_PG_URL`, from `scripts/pg-backend.sh`) when
/// `GATEWAY_TEST_REGISTRY=postgres` asks the suite to run on it; `None` runs it on sled.
pub fn postgres_base() -> Option<PostgresSettings> {
    match std::env::var("GATEWAY_TEST_REGISTRY").as_deref() {
        Ok("postgres") => {}
        Ok("sled") | Err(_) => return None,
        Ok(other) => panic!("GATEWAY_TEST_REGISTRY={other}: expected sled or postgres"),
    }
    let url = std::env::var("GATEWAY_TEST_PG_URL")
        .expect("GATEWAY_TEST_REGISTRY=postgres needs GATEWAY_TEST_PG_URL (scripts/pg-backend.sh)");
    let mut settings = PostgresSettings::new(DatabaseUrl::parse(&url).expect("a valid test URL"));
    settings.password_file = std::env::var_os("GATEWAY_TEST_PG_PASSWORD_FILE").map(Into::into);
    Some(settings)
}

/// The settings of a fresh schema of the PostgreSQL test database (`None` without one).
pub async fn fresh_postgres() -> Option<PostgresSettings> {
    let base = postgres_base().or_else(|| {
        let url = stores::test_backends::gate("GATEWAY_TEST_PG_URL")?;
        let mut settings = PostgresSettings::new(DatabaseUrl::parse(&url).expect("a valid URL"));
        settings.password_file = std::env::var_os("GATEWAY_TEST_PG_PASSWORD_FILE").map(Into::into);
        Some(settings)
    })?;
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    Some(
        PostgresRegistry::create_schema(&base, &schema)
            .await
            .expect("create a test schema"),
    )
}

/// `[registry]` of a postgres registry with these settings.
pub fn postgres_registry_file(pg: &PostgresSettings) -> RegistryFile {
    RegistryFile {
        kind: Some(RegistryKind::Postgres),
        url: Some(pg.url.raw().to_owned()),
        password_file: pg.password_file.clone(),
        lease_seconds: Some(pg.lease.as_secs()),
        ..RegistryFile::default()
    }
}

/// The registry of a test gateway on `dir`: sled's default under `dir`, or, with
/// `GATEWAY_TEST_REGISTRY=postgres`, a schema of its own whose name `dir/pg-schema` keeps, so a
/// restart on `dir` finds the same registry.
pub async fn registry_file(dir: &Path) -> Option<RegistryFile> {
    let base = postgres_base()?;
    let marker = dir.join("pg-schema");
    let schema = match std::fs::read_to_string(&marker) {
        Ok(name) => name,
        Err(_) => {
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            std::fs::write(&marker, &name).expect("write the schema marker");
            name
        }
    };
    let pg = PostgresRegistry::create_schema(&base, &schema)
        .await
        .expect("create the test schema");
    Some(postgres_registry_file(&pg))
}

/// Opens the registry a test gateway on `dir` uses (for tests that prepare one before the
/// gateway starts).
pub async fn open_registry(dir: &Path) -> Registry {
    match registry_file(dir).await {
        Some(file) => {
            let mut pg =
                PostgresSettings::new(DatabaseUrl::parse(file.url.as_deref().unwrap()).unwrap());
            pg.password_file = file.password_file;
            Registry::new(Arc::new(PostgresRegistry::open(&pg).await.expect("open")))
        }
        None => Registry::open(&dir.join("registry")).expect("open"),
    }
}

pub struct TestApp {
    pub base: String,
    /// The admin listener (metrics, operations).
    pub admin_base: String,
    pub addr: SocketAddr,
    pub client: Client,
    pub dir: Arc<TempDir>,
    state: Option<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    builder: TestAppBuilder,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    /// A no-auth gateway with defaults.
    pub async fn spawn() -> TestApp {
        Self::builder().spawn().await
    }

    pub fn state(&self) -> &AppState {
        self.state.as_ref().expect("running")
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops this gateway and starts a new one on the same data directory.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let builder = self.builder.clone();
        let dir = Arc::clone(&self.dir);
        drop(self);
        builder.spawn_in(dir).await
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.state = None;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.req(Method::GET, path)
    }

    /// The image's data, as a plain GET returns it (whatever the status).
    pub async fn download(&self, id: &str) -> bytes::Bytes {
        self.get(&format!("/v1/images/{id}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    }

    pub fn head(&self, path: &str) -> RequestBuilder {
        self.req(Method::HEAD, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.req(Method::POST, path)
    }

    pub fn put(&self, path: &str) -> RequestBuilder {
        self.req(Method::PUT, path)
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.req(Method::DELETE, path)
    }

    /// POST /v1/images with the given metadata headers and optional data; asserts 201 and
    /// returns the `image` object.
    pub async fn create_image(&self, meta: &[(&str, &str)], data: Option<&[u8]>) -> Value {
        self.create_image_as(None, meta, data).await
    }

    pub async fn create_image_as(
        &self,
        who: Option<&Who>,
        meta: &[(&str, &str)],
        data: Option<&[u8]>,
    ) -> Value {
        let mut req = self.post("/v1/images").headers(meta_headers(meta));
        if let Some(who) = who {
            req = req.headers(who.headers());
        }
        if let Some(data) = data {
            req = req
                .header("content-type", "application/octet-stream")
                .body(data.to_vec());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let body = resp.text().await.expect("body");
        assert_eq!(status, StatusCode::CREATED, "create failed: {body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        v["image"].clone()
    }

    /// A public, active image with `data`, as the no-auth admin.
    pub async fn public_image(&self, name: &str, data: &[u8]) -> String {
        let img = self
            .create_image(
                &[
                    ("x-image-meta-name", name),
                    ("x-image-meta-disk_format", "raw"),
                    ("x-image-meta-container_format", "bare"),
                    ("x-image-meta-is_public", "True"),
                ],
                Some(data),
            )
            .await;
        img["id"].as_str().unwrap().to_owned()
    }

    /// The stored image as the registry holds it.
    pub async fn stored(&self, id: &str) -> StoredImage {
        let id = ImageId::parse(id).expect("uuid");
        self.state()
            .registry
            .get(&id)
            .await
            .expect("registry")
            .expect("image exists")
    }

    pub async fn record(&self, id: &str) -> ImageRecord {
        self.stored(id).await.record
    }

    pub async fn status_of(&self, id: &str) -> String {
        self.record(id).await.status.as_str().to_owned()
    }

    /// Polls the registry until the image has `status` (or panics after ~10 s).
    pub async fn wait_for_status(&self, id: &str, status: &str) {
        let parsed = ImageId::parse(id).expect("uuid");
        for _ in 0..200 {
            let found = self.state().registry.get(&parsed).await.expect("registry");
            if found.is_some_and(|s| s.record.status.as_str() == status) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "image {id} never reached {status}; it is {}",
            self.status_of(id).await
        );
    }

    /// Where the file store keeps the data of image `id`.
    pub fn object_path(&self, id: &str) -> PathBuf {
        self.data_dir().join("images").join(id)
    }

    /// The file store's temp directory.
    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir().join("images").join(".tmp")
    }

    pub fn tmp_files(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.tmp_dir()) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => vec![],
        }
    }

    /// Polls until the temp directory is empty (cleanup after a cancelled upload is async).
    pub async fn wait_for_no_tmp_files(&self) {
        for _ in 0..200 {
            if self.tmp_files().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("temp files left behind: {:?}", self.tmp_files());
    }

    /// Sends raw bytes on a new connection and reads the response until the server closes it.
    pub async fn raw(&self, request: &[u8]) -> RawResponse {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        let _ = stream.write_all(request).await;
        read_response(&mut stream).await
    }

    pub async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connect")
    }
}

/// Reads one response (the request must have asked for `Connection: close`).
pub async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let read_all = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), read_all).await;
    RawResponse::parse(&buf)
}

#[derive(Debug, Default)]
pub struct RawResponse {
    /// 0 when the server sent nothing.
    pub status: u16,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Names exactly as they came on the wire.
    pub wire_names: Vec<String>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn parse(buf: &[u8]) -> Self {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Self::default();
        };
        let head = String::from_utf8_lossy(&buf[..end]);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let fields: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(':')).collect();
        let wire_names = fields.iter().map(|(n, _)| n.trim().to_owned()).collect();
        let headers: Vec<(String, String)> = fields
            .iter()
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = buf[end + 4..].to_vec();
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
        if chunked {
            body = dechunk(&body);
        }
        Self {
            status,
            headers,
            wire_names,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..pos]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = pos + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = &data[(end + 2).min(data.len())..];
    }
    out
}

/// A caller as an authenticating proxy describes it (trusted-headers mode).
#[derive(Clone, Debug, Default)]
pub struct Who {
    pub tenant: Option<String>,
    pub user: Option<String>,
    pub roles: Vec<String>,
    pub confirmed: bool,
}

impl Who {
    /// A confirmed member of `tenant` (user `u-<tenant>`, role `member`).
    pub fn tenant(tenant: &str) -> Self {
        Self {
            tenant: Some(tenant.to_owned()),
            user: Some(format!("u-{tenant}")),
            roles: vec!["member".to_owned()],
            confirmed: true,
        }
    }

    /// A confirmed admin of `tenant`.
    pub fn admin(tenant: &str) -> Self {
        Self {
            roles: vec!["member".to_owned(), "admin".to_owned()],
            ..Self::tenant(tenant)
        }
    }

    /// Confirmed, but without tenant or user.
    pub fn nobody() -> Self {
        Self {
            roles: vec!["member".to_owned()],
            confirmed: true,
            ..Self::default()
        }
    }

    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if self.confirmed {
            h.insert("x-identity-status", HeaderValue::from_static("Confirmed"));
        }
        if let Some(t) = &self.tenant {
            h.insert("x-tenant-id", HeaderValue::from_str(t).unwrap());
        }
        if let Some(u) = &self.user {
            h.insert("x-user-id", HeaderValue::from_str(u).unwrap());
        }
        if !self.roles.is_empty() {
            h.insert(
                "x-roles",
                HeaderValue::from_str(&self.roles.join(",")).unwrap(),
            );
        }
        h
    }
}

/// Acting as someone.
pub trait As {
    fn who(self, who: &Who) -> Self;
}

impl As for RequestBuilder {
    fn who(self, who: &Who) -> Self {
        self.headers(who.headers())
    }
}

pub fn meta_headers(meta: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in meta {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_bytes(v.as_bytes()).expect("header value"),
        );
    }
    h
}

pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

pub async fn json(resp: Response) -> Value {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"))
}

/// A loopback port that refuses connections. A port taken from a dropped listener could be
/// handed to another test's gateway in the meantime; port 1 is below the range the system picks
/// free ports from, and nothing here listens on it.
pub const REFUSED_PORT: u16 = 1;

pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// The ids of an `{"images": [...]}` list.
pub fn ids(list: &Value) -> Vec<String> {
    list["images"]
        .as_array()
        .expect("images array")
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

/// GETs a list path and returns its ids, asserting 200.
pub async fn list_ids(app: &TestApp, path: &str, who: Option<&Who>) -> Vec<String> {
    let mut req = app.get(path);
    if let Some(w) = who {
        req = req.who(w);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    ids(&json(resp).await)
}

pub async fn status(req: RequestBuilder) -> u16 {
    req.send().await.expect("request").status().as_u16()
}

/// Sends and returns status and body text.
pub async fn send(req: RequestBuilder) -> (u16, String) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Formats plus `x-image-meta-location`, for registering existing data as an image.
pub fn location_meta(location: &str) -> HeaderMap {
    meta_headers(&[
        ("x-image-meta-disk_format", "raw"),
        ("x-image-meta-container_format", "bare"),
        ("x-image-meta-location", location),
    ])
}

/// Registers `location` as `who`, checks the active image serves `data` whole and in a range,
/// and returns the image.
pub async fn register_and_read(app: &TestApp, who: &Who, location: &str, data: &[u8]) -> Value {
    let resp = app
        .post("/v1/images")
        .headers(location_meta(location))
        .who(who)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "registering {location}");
    let image = json(resp).await["image"].clone();
    assert_eq!(image["status"], "active");
    assert_eq!(image["size"], data.len());
    let path = format!("/v1/images/{}", image["id"].as_str().unwrap());
    let whole = app.get(&path).who(who).send().await.unwrap();
    assert_eq!(whole.bytes().await.unwrap().as_ref(), data);
    let id = image["id"].as_str().unwrap();
    assert_range(app, Some(who), id, data, "bytes=10-20", (10, 20)).await;
    image
}

/// GET of image `id` with `Range: spec`: the status, `Content-Range` and body.
pub async fn get_range(
    app: &TestApp,
    who: Option<&Who>,
    id: &str,
    spec: &str,
) -> (u16, Option<String>, Vec<u8>) {
    let mut req = app.get(&format!("/v1/images/{id}")).header("range", spec);
    if let Some(who) = who {
        req = req.who(who);
    }
    let resp = req.send().await.expect("ranged GET");
    let status = resp.status().as_u16();
    let content_range = header(&resp, "content-range");
    (status, content_range, resp.bytes().await.unwrap().to_vec())
}

/// Asserts that `Range: spec` on image `id` answers 206 with bytes `first..=last` of `data`.
pub async fn assert_range(
    app: &TestApp,
    who: Option<&Who>,
    id: &str,
    data: &[u8],
    spec: &str,
    (first, last): (usize, usize),
) {
    let (status, content_range, body) = get_range(app, who, id, spec).await;
    assert_eq!(status, 206, "{spec}");
    let expected = format!("bytes {first}-{last}/{}", data.len());
    assert_eq!(content_range.as_deref(), Some(expected.as_str()), "{spec}");
    assert!(body == data[first..=last], "{spec}: wrong bytes");
}

/// Asserts that a range starting at the end of the `len`-byte image `id` answers 416.
pub async fn assert_unsatisfiable(app: &TestApp, id: &str, len: usize) {
    let (status, content_range, _) = get_range(app, None, id, &format!("bytes={len}-")).await;
    assert_eq!(status, 416);
    assert_eq!(content_range, Some(format!("bytes */{len}")));
}
