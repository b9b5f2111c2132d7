//! Configuration: a TOML file (every key optional) overlaid by command-line flags, validated once
//! at startup. Key names follow glance-api.conf where one exists.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use stores::{HashAlgo, StoreConfig, StoreName};

use crate::registry::{DatabaseUrl, PostgresSettings, RegistryKind, RegistrySettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Every caller is an admin without a tenant (local use).
    Noauth,
    /// Identity from headers set by an authenticating proxy (X-Identity-Status etc.).
    TrustedHeaders,
}

/// Which remote `http(s)` sources (`x-image-meta-location`, `x-glance-api-copy-from`) are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteSources {
    Public,
    Any,
    Off,
}

/// Who may make an image public (Glance's `publicize_image` policy rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublicizeImage {
    /// Only callers with the admin role (the default).
    Admin,
    /// Every caller that may create or update the image.
    Anyone,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The bearer token the admin listener requires. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Reads the token from `path`; a trailing newline is not part of it.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let token = text.trim_end_matches(['\n', '\r']);
        if token.is_empty() {
            bail!("{} holds no token", path.display());
        }
        Ok(Self(token.to_owned()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(******)")
    }
}

/// What a sweep does with complete objects no image points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepOrphans {
    /// Report them in the log (the default): an unknown object may be another gateway's.
    Log,
    /// Remove them (only image-id keys, only in namespaces this registry owns).
    Delete,
}

/// `hashing_algorithm`: the multihash recorded next to the MD5 (Glance's option of that name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashingAlgorithm {
    Sha256,
    Sha384,
    Sha512,
    /// Only the MD5.
    None,
}

impl HashingAlgorithm {
    fn algo(self) -> Option<HashAlgo> {
        match self {
            Self::Sha256 => Some(HashAlgo::Sha256),
            Self::Sha384 => Some(HashAlgo::Sha384),
            Self::Sha512 => Some(HashAlgo::Sha512),
            Self::None => None,
        }
    }
}

/// The file as written; `None` means "not set".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub bind: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// The registry's directory; `[registry] path` says the same (set one of them).
    pub registry_path: Option<PathBuf>,
    pub registry: Option<RegistryFile>,
    pub auth: Option<AuthMode>,
    pub default_store: Option<String>,
    pub owner_is_tenant: Option<bool>,
    pub admin_role: Option<String>,
    pub allow_anonymous_access: Option<bool>,
    pub publicize_image: Option<PublicizeImage>,
    /// Property protection rules (INI, as glance-api's `property_protection_file`).
    pub property_protection_file: Option<PathBuf>,
    pub image_size_cap: Option<u64>,
    pub user_storage_quota: Option<QuotaValue>,
    pub image_property_quota: Option<i64>,
    pub image_member_quota: Option<i64>,
    pub limit_param_default: Option<u64>,
    pub api_limit_max: Option<u64>,
    pub delayed_delete: Option<bool>,
    pub scrub_time: Option<u64>,
    pub show_image_direct_url: Option<bool>,
    pub public_endpoint: Option<String>,
    pub disk_formats: Option<Vec<String>>,
    pub container_formats: Option<Vec<String>>,
    pub remote_sources: Option<RemoteSources>,
    /// The proxy remote sources are fetched through (`HTTP(S)_PROXY` are ignored).
    pub remote_proxy: Option<String>,
    /// Seconds between sweeps of incomplete uploads and orphaned objects (0 = only at startup).
    pub sweep_interval: Option<u64>,
    /// Incomplete uploads younger than this many seconds are left alone by a sweep.
    pub sweep_min_age: Option<u64>,
    /// While this file exists, `/healthcheck` answers 503 (drains the node from a balancer).
    pub healthcheck_disable_file: Option<PathBuf>,
    /// The admin listener (metrics, operations); never the API address.
    pub admin_bind: Option<String>,
    /// When set, the admin listener requires `Authorization: Bearer <the file's content>`.
    pub admin_token_file: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT before they are cut.
    pub shutdown_timeout: Option<u64>,
    /// Seconds between store health probes (the `store_up` metric).
    pub store_probe_interval: Option<u64>,
    /// `"log"` (default) or `"delete"` objects no image points to.
    pub sweep_orphans: Option<SweepOrphans>,
    /// Seconds a request body may send nothing before it is cut.
    pub client_idle_timeout: Option<u64>,
    /// Open connections at most; more wait in the listen backlog.
    pub max_connections: Option<usize>,
    /// Copy-from imports running at once; more wait in order.
    pub max_concurrent_imports: Option<usize>,
    /// Seconds a copy-from import may take before it is killed.
    pub import_timeout: Option<u64>,
    /// `sha512` (default), `sha256`, `sha384` or `none`.
    pub hashing_algorithm: Option<HashingAlgorithm>,
    #[serde(default)]
    pub stores: BTreeMap<String, StoreConfig>,
}

/// `[registry]`: which engine keeps image records, and its settings.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// `sled` (the embedded engine, the default) or `postgres` (shared by several replicas).
    pub kind: Option<RegistryKind>,
    /// sled: default `data_dir/registry`.
    pub path: Option<PathBuf>,
    /// sled's page cache in MiB (default 64).
    pub cache_mb: Option<u64>,
    /// postgres: `postgres://user@host:port/dbname`, without a password.
    pub url: Option<String>,
    /// postgres: a file holding the password on one line.
    pub password_file: Option<PathBuf>,
    /// postgres: the connection pool's size (default 16).
    pub max_connections: Option<usize>,
    /// postgres: seconds to connect or to wait for a pooled connection (default 5).
    pub connect_timeout: Option<u64>,
    /// postgres: seconds one statement may take (default 30).
    pub statement_timeout: Option<u64>,
    /// postgres: seconds after which a replica that stopped renewing its lease is taken for
    /// dead and its interrupted uploads are killed (default 30).
    pub lease_seconds: Option<u64>,
}

impl RegistryFile {
    /// The `[registry]` settings of the postgres kind, checked.
    fn postgres(&self) -> anyhow::Result<PostgresSettings> {
        let text = self
            .url
            .as_deref()
            .context("config key `registry.url`: required with kind = \"postgres\"")?;
        let url = DatabaseUrl::parse(text)
            .map_err(|e| anyhow::anyhow!("config key `registry.url`: {e}"))?;
        let mut pg = PostgresSettings::new(url);
        pg.password_file = self.password_file.clone();
        let positive = |v: Option<u64>, key: &str, default: u64| -> anyhow::Result<u64> {
            match v {
                Some(0) => bail!("config key `registry.{key}`: must be at least 1"),
                Some(n) => Ok(n),
                None => Ok(default),
            }
        };
        pg.max_connections = positive(
            self.max_connections.map(|n| n as u64),
            "max_connections",
            crate::registry::DEFAULT_MAX_CONNECTIONS as u64,
        )? as usize;
        pg.connect_timeout = Duration::from_secs(positive(
            self.connect_timeout,
            "connect_timeout",
            crate::registry::DEFAULT_CONNECT_TIMEOUT,
        )?);
        pg.statement_timeout = Duration::from_secs(positive(
            self.statement_timeout,
            "statement_timeout",
            crate::registry::DEFAULT_STATEMENT_TIMEOUT,
        )?);
        pg.lease = Duration::from_secs(positive(
            self.lease_seconds,
            "lease_seconds",
            crate::registry::DEFAULT_LEASE_SECONDS,
        )?);
        Ok(pg)
    }
}

/// `user_storage_quota`: bytes as an integer, or a string with a B/KB/MB/GB/TB suffix (binary).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum QuotaValue {
    Bytes(u64),
    Text(String),
}

impl QuotaValue {
    fn bytes(&self) -> anyhow::Result<u64> {
        match self {
            Self::Bytes(n) => Ok(*n),
            Self::Text(s) => parse_quota(s)
                .with_context(|| format!("config key `user_storage_quota`: bad value {s:?}")),
        }
    }
}

pub fn parse_quota(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    let num: u64 = num
        .parse()
        .context("expected a number with an optional unit")?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "KB" => 10,
        "MB" => 20,
        "GB" => 30,
        "TB" => 40,
        other => bail!("unknown unit {other:?} (use B, KB, MB, GB or TB)"),
    };
    num.checked_mul(1u64 << shift).context("value too large")
}

/// Command-line overrides.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub bind: Option<String>,
    pub admin_bind: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub auth: Option<AuthMode>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub registry: RegistrySettings,
    pub auth: AuthMode,
    pub default_store: StoreName,
    pub owner_is_tenant: bool,
    pub admin_role: String,
    pub allow_anonymous_access: bool,
    pub publicize_image: PublicizeImage,
    /// The property protection rules file; the compiled rules live in `AppState`.
    pub property_protection_file: Option<PathBuf>,
    pub image_size_cap: u64,
    pub user_storage_quota: u64,
    pub image_property_quota: i64,
    pub image_member_quota: i64,
    pub limit_param_default: u64,
    pub api_limit_max: u64,
    pub delayed_delete: bool,
    pub scrub_time: u64,
    pub show_image_direct_url: bool,
    pub public_endpoint: Option<String>,
    pub disk_formats: Vec<String>,
    pub container_formats: Vec<String>,
    pub remote_sources: RemoteSources,
    pub remote_proxy: Option<String>,
    pub sweep_interval: u64,
    pub sweep_min_age: u64,
    pub healthcheck_disable_file: Option<PathBuf>,
    pub admin_bind: SocketAddr,
    pub admin_token: Option<AdminToken>,
    pub log_format: LogFormat,
    pub shutdown_timeout: u64,
    pub store_probe_interval: u64,
    pub sweep_orphans: SweepOrphans,
    pub client_idle_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrent_imports: usize,
    pub import_timeout: Duration,
    /// The multihash computed with every upload; `None` for MD5 only.
    pub hashing_algorithm: Option<HashAlgo>,
    pub stores: BTreeMap<StoreName, StoreConfig>,
}

pub const DEFAULT_DISK_FORMATS: &[&str] = &[
    "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop",
];
pub const DEFAULT_CONTAINER_FORMATS: &[&str] =
    &["ami", "ari", "aki", "bare", "ovf", "ova", "docker"];

impl Config {
    /// Reads `path` (when given) and applies the overrides.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> anyhow::Result<Self> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<ConfigFile>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => ConfigFile::default(),
        };
        Self::resolve(file, overrides)
    }

    pub fn resolve(file: ConfigFile, overrides: Overrides) -> anyhow::Result<Self> {
        let bind_text = overrides
            .bind
            .or(file.bind)
            .unwrap_or_else(|| "127.0.0.1:9292".to_owned());
        let bind: SocketAddr = bind_text
            .parse()
            .with_context(|| format!("config key `bind`: {bind_text:?} is not an address:port"))?;
        let admin_text = overrides
            .admin_bind
            .or(file.admin_bind)
            .unwrap_or_else(|| "127.0.0.1:9293".to_owned());
        let admin_bind: SocketAddr = admin_text.parse().with_context(|| {
            format!("config key `admin_bind`: {admin_text:?} is not an address:port")
        })?;
        if same_port(bind, admin_bind) {
            bail!(
                "config key `admin_bind`: {admin_bind} overlaps the API address {bind}; the admin listener needs its own port"
            );
        }
        let admin_token = file
            .admin_token_file
            .as_deref()
            .map(AdminToken::read)
            .transpose()
            .context("config key `admin_token_file`")?;
        let data_dir = overrides
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let registry_file = file.registry.unwrap_or_default();
        if registry_file.path.is_some() && file.registry_path.is_some() {
            bail!("config keys `registry_path` and `registry.path`: set one of them");
        }
        let kind = registry_file.kind.unwrap_or(RegistryKind::Sled);
        let postgres = match kind {
            RegistryKind::Postgres => Some(registry_file.postgres()?),
            RegistryKind::Sled => {
                if registry_file.url.is_some() {
                    bail!("config key `registry.url`: only with kind = \"postgres\"");
                }
                None
            }
        };
        let registry = RegistrySettings {
            kind,
            path: registry_file
                .path
                .or(file.registry_path)
                .unwrap_or_else(|| data_dir.join("registry")),
            cache_mb: registry_file
                .cache_mb
                .unwrap_or(crate::registry::DEFAULT_CACHE_MB),
            postgres,
        };
        if registry.cache_mb == 0 {
            bail!("config key `registry.cache_mb`: must be at least 1");
        }

        let mut stores = BTreeMap::new();
        for (name, store) in file.stores {
            let parsed = StoreName::parse(&name).with_context(|| {
                format!("config key `stores.{name}`: store names are 1-64 of a-z 0-9 _ -")
            })?;
            stores.insert(parsed, store);
        }
        if stores.is_empty() {
            stores.insert(
                StoreName::parse("file").expect("valid name"),
                StoreConfig::File(stores::file::FileStoreConfig {
                    root: data_dir.join("images"),
                    adopt: false,
                    direct_io: false,
                }),
            );
        }
        let default_store_text = file.default_store.unwrap_or_else(|| "file".to_owned());
        let default_store = StoreName::parse(&default_store_text)
            .filter(|n| stores.contains_key(n))
            .with_context(|| {
                let known: Vec<_> = stores.keys().map(|n| n.to_string()).collect();
                format!(
                    "config key `default_store`: {default_store_text:?} is not a configured store (configured: {})",
                    known.join(", ")
                )
            })?;

        let api_limit_max = file.api_limit_max.unwrap_or(1000);
        if api_limit_max == 0 {
            bail!("config key `api_limit_max`: must be at least 1");
        }
        let limit_param_default = file.limit_param_default.unwrap_or(25);
        let admin_role = file.admin_role.unwrap_or_else(|| "admin".to_owned());
        if admin_role.trim().is_empty() {
            bail!("config key `admin_role`: must not be empty");
        }
        let list_or = |v: Option<Vec<String>>, default: &[&str], key: &str| {
            let list = v.unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect());
            if list.is_empty() {
                bail!("config key `{key}`: must list at least one format");
            }
            Ok(list)
        };
        let public_endpoint = file
            .public_endpoint
            .map(|e| e.trim_end_matches('/').to_owned());
        if let Some(e) = &public_endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                bail!("config key `public_endpoint`: must be an http(s) URL");
            }
        }
        Ok(Self {
            bind,
            data_dir,
            registry,
            auth: overrides.auth.or(file.auth).unwrap_or(AuthMode::Noauth),
            default_store,
            owner_is_tenant: file.owner_is_tenant.unwrap_or(true),
            admin_role: admin_role.to_lowercase(),
            allow_anonymous_access: file.allow_anonymous_access.unwrap_or(false),
            publicize_image: file.publicize_image.unwrap_or(PublicizeImage::Admin),
            property_protection_file: file.property_protection_file,
            image_size_cap: file.image_size_cap.unwrap_or(1 << 40),
            user_storage_quota: file
                .user_storage_quota
                .map(|q| q.bytes())
                .transpose()?
                .unwrap_or(0),
            image_property_quota: file.image_property_quota.unwrap_or(128),
            image_member_quota: file.image_member_quota.unwrap_or(128),
            limit_param_default: limit_param_default.min(api_limit_max),
            api_limit_max,
            delayed_delete: file.delayed_delete.unwrap_or(false),
            scrub_time: file.scrub_time.unwrap_or(0),
            show_image_direct_url: file.show_image_direct_url.unwrap_or(false),
            public_endpoint,
            disk_formats: list_or(file.disk_formats, DEFAULT_DISK_FORMATS, "disk_formats")?,
            container_formats: list_or(
                file.container_formats,
                DEFAULT_CONTAINER_FORMATS,
                "container_formats",
            )?,
            remote_sources: file.remote_sources.unwrap_or(RemoteSources::Public),
            remote_proxy: file.remote_proxy,
            sweep_interval: file.sweep_interval.unwrap_or(3600),
            sweep_min_age: file.sweep_min_age.unwrap_or(86_400),
            healthcheck_disable_file: file.healthcheck_disable_file,
            admin_bind,
            admin_token,
            log_format: file.log_format.unwrap_or_default(),
            shutdown_timeout: file.shutdown_timeout.unwrap_or(30),
            store_probe_interval: file.store_probe_interval.unwrap_or(30).max(1),
            sweep_orphans: file.sweep_orphans.unwrap_or(SweepOrphans::Log),
            client_idle_timeout: Duration::from_secs(at_least_one(
                file.client_idle_timeout,
                60,
                "client_idle_timeout",
            )?),
            max_connections: at_least_one(file.max_connections, 1024, "max_connections")?,
            max_concurrent_imports: at_least_one(
                file.max_concurrent_imports,
                8,
                "max_concurrent_imports",
            )?,
            import_timeout: Duration::from_secs(at_least_one(
                file.import_timeout,
                3600,
                "import_timeout",
            )?),
            hashing_algorithm: file
                .hashing_algorithm
                .unwrap_or(HashingAlgorithm::Sha512)
                .algo(),
            stores,
        })
    }
}

/// Whether two listen addresses would take the same port (port 0 picks a free one each time).
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// A limit that must be positive: its value, or the default when unset.
fn at_least_one<T: PartialOrd + From<u8>>(
    value: Option<T>,
    default: T,
    key: &str,
) -> anyhow::Result<T> {
    match value {
        Some(v) if v < T::from(1) => bail!("config key `{key}`: must be at least 1"),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(toml_text: &str) -> anyhow::Result<Config> {
        let file: ConfigFile = toml::from_str(toml_text)?;
        Config::resolve(file, Overrides::default())
    }

    #[test]
    fn defaults_give_a_file_store_under_data() {
        let c = resolve("").unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:9292");
        assert_eq!(c.default_store.as_str(), "file");
        assert_eq!(c.registry.path, PathBuf::from("./data/registry"));
        assert_eq!(c.registry.kind, RegistryKind::Sled);
        assert_eq!(c.registry.cache_mb, 64);
        assert_eq!(c.limit_param_default, 25);
        assert_eq!(c.image_size_cap, 1 << 40);
        assert_eq!(c.client_idle_timeout, Duration::from_secs(60));
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.max_concurrent_imports, 8);
        assert_eq!(c.import_timeout, Duration::from_secs(3600));
        assert!(resolve("max_connections = 0").is_err());
        assert!(resolve("client_idle_timeout = 0").is_err());
        assert_eq!(c.hashing_algorithm, Some(HashAlgo::Sha512));
    }

    #[test]
    fn hashing_algorithm_none_keeps_only_the_md5() {
        assert_eq!(
            resolve("hashing_algorithm = \"none\"")
                .unwrap()
                .hashing_algorithm,
            None
        );
        assert_eq!(
            resolve("hashing_algorithm = \"sha256\"")
                .unwrap()
                .hashing_algorithm,
            Some(HashAlgo::Sha256)
        );
        let err = format!("{:#}", resolve("hashing_algorithm = \"md5\"").unwrap_err());
        assert!(err.contains("hashing_algorithm"), "{err}");
    }

    #[test]
    fn errors_name_the_key() {
        let err = format!("{:#}", resolve("bogus = 1").unwrap_err());
        assert!(err.contains("bogus"), "{err}");
        let err = format!("{:#}", resolve("default_store = \"s3\"").unwrap_err());
        assert!(err.contains("default_store"), "{err}");
        let err = format!("{:#}", resolve("bind = \"nope\"").unwrap_err());
        assert!(err.contains("bind"), "{err}");
        let err = format!("{:#}", resolve("user_storage_quota = \"5XB\"").unwrap_err());
        assert!(err.contains("user_storage_quota"), "{err}");
        let err = format!(
            "{:#}",
            resolve("[stores.file]\nkind = \"file\"\nroot = \"x\"\nextra = 1").unwrap_err()
        );
        assert!(err.contains("extra"), "{err}");
    }

    #[test]
    fn registry_table_and_the_old_key() {
        let c = resolve("[registry]\nkind = \"sled\"\npath = \"/r\"\ncache_mb = 8").unwrap();
        assert_eq!(c.registry.path, PathBuf::from("/r"));
        assert_eq!(c.registry.cache_mb, 8);
        let c = resolve("registry_path = \"/old\"").unwrap();
        assert_eq!(c.registry.path, PathBuf::from("/old"));
        let err = format!(
            "{:#}",
            resolve("registry_path = \"/a\"\n[registry]\npath = \"/b\"").unwrap_err()
        );
        assert!(err.contains("registry.path"), "{err}");
        let err = format!("{:#}", resolve("[registry]\nkind = \"mysql\"").unwrap_err());
        assert!(err.contains("kind"), "{err}");
        let err = format!("{:#}", resolve("[registry]\ncache_mb = 0").unwrap_err());
        assert!(err.contains("cache_mb"), "{err}");
    }

    #[test]
    fn postgres_registry_settings() {
        let c = resolve("[registry]\nkind = \"postgres\"\nurl = \"postgres://gw@db:6543/images\"")
            .unwrap();
        let pg = c.registry.postgres.unwrap();
        assert_eq!(pg.url.to_string(), "postgres://gw@db:6543/images");
        assert_eq!(pg.max_connections, 16);
        assert_eq!(pg.connect_timeout, Duration::from_secs(5));
        assert_eq!(pg.statement_timeout, Duration::from_secs(30));
        assert_eq!(pg.lease, Duration::from_secs(30));
        let c = resolve(
            "[registry]\nkind = \"postgres\"\nurl = \"postgres://gw@db/images\"\n\
             password_file = \"/run/pw\"\nmax_connections = 4\nconnect_timeout = 2\n\
             statement_timeout = 9\nlease_seconds = 12",
        )
        .unwrap();
        let pg = c.registry.postgres.unwrap();
        assert_eq!(pg.password_file, Some(PathBuf::from("/run/pw")));
        assert_eq!(
            (pg.max_connections, pg.statement_timeout, pg.lease),
            (4, Duration::from_secs(9), Duration::from_secs(12))
        );
        let err = format!(
            "{:#}",
            resolve("[registry]\nkind = \"postgres\"").unwrap_err()
        );
        assert!(err.contains("registry.url"), "{err}");
        let err = format!(
            "{:#}",
            resolve("[registry]\nkind = \"postgres\"\nurl = \"postgres://gw:hunter2@db/x\"")
                .unwrap_err()
        );
        assert!(
            err.contains("password_file") && !err.contains("hunter2"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            resolve(
                "[registry]\nkind = \"postgres\"\nurl = \"postgres://gw@db/x\"\nlease_seconds = 0"
            )
            .unwrap_err()
        );
        assert!(err.contains("lease_seconds"), "{err}");
        let err = format!(
            "{:#}",
            resolve("[registry]\nurl = \"postgres://gw@db/x\"").unwrap_err()
        );
        assert!(err.contains("registry.url"), "{err}");
    }

    /// The replicas' configuration of the compose `ha` profile.
    #[test]
    fn the_compose_replica_config_resolves() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("minio-fixtures/ha-gateway.toml");
        let c = Config::load(Some(&path), Overrides::default()).unwrap();
        let pg = c.registry.postgres.expect("a postgres registry");
        assert_eq!(pg.url.to_string(), "postgres://glance@postgres:5432/glance");
        assert_eq!(pg.lease, Duration::from_secs(30));
    }

    #[test]
    fn admin_listener_never_shares_the_api_port() {
        let c = resolve("").unwrap();
        assert_eq!(c.admin_bind.to_string(), "127.0.0.1:9293");
        for clash in [
            "admin_bind = \"127.0.0.1:9292\"",
            "admin_bind = \"0.0.0.0:9292\"",
            "bind = \"0.0.0.0:9000\"\nadmin_bind = \"127.0.0.1:9000\"",
        ] {
            let err = format!("{:#}", resolve(clash).unwrap_err());
            assert!(err.contains("admin_bind"), "{clash}: {err}");
        }
        assert!(resolve("bind = \"127.0.0.1:0\"\nadmin_bind = \"127.0.0.1:0\"").is_ok());
        assert!(resolve("admin_bind = \"127.0.0.2:9292\"").is_ok());
    }

    #[test]
    fn admin_token_ignores_the_trailing_newline_and_never_prints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let c = resolve(&format!("admin_token_file = {:?}", path)).unwrap();
        let token = c.admin_token.unwrap();
        assert_eq!(token.as_bytes(), b"s3cret");
        assert!(!format!("{token:?}").contains("s3cret"));
        std::fs::write(&path, "\n").unwrap();
        assert!(resolve(&format!("admin_token_file = {:?}", path)).is_err());
    }

    #[test]
    fn quota_units_are_binary() {
        assert_eq!(parse_quota("10").unwrap(), 10);
        assert_eq!(parse_quota("5KB").unwrap(), 5 * 1024);
        assert_eq!(parse_quota("2 GB").unwrap(), 2 << 30);
        assert!(parse_quota("-1").is_err());
    }
}
