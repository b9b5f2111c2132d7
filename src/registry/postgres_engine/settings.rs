//! `[registry] kind = "postgres"`: where the database is and how the pool talks to it. The
//! password lives only in `password_file` (read at open time): the URL may not carry one, so no
//! setting, log line or error can show it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub const DEFAULT_MAX_CONNECTIONS: usize = 16;
pub const DEFAULT_CONNECT_TIMEOUT: u64 = 5;
pub const DEFAULT_STATEMENT_TIMEOUT: u64 = 30;
pub const DEFAULT_LEASE_SECONDS: u64 = 30;

/// A `postgres://user@host:port/dbname` URL without a password (`Debug` and `Display` print
/// the same: user, hosts, ports and database).
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    raw: String,
    shown: String,
}

impl DatabaseUrl {
    /// Parses and checks a URL; the error never repeats the text (it might hold a password).
    pub fn parse(text: &str) -> Result<Self, String> {
        let config = tokio_postgres::Config::from_str(text)
            .map_err(|_| "not a valid postgres:// URL".to_owned())?;
        if config.get_password().is_some() {
            return Err("must not hold a password: put it in `registry.password_file`".to_owned());
        }
        if config.get_hosts().is_empty() {
            return Err("names no host".to_owned());
        }
        Ok(Self {
            raw: text.to_owned(),
            shown: describe(&config),
        })
    }

    /// The same database, with `schema` first on the search path (tables live there).
    pub fn in_schema(&self, schema: &str) -> Self {
        let sep = if self.raw.contains('?') { '&' } else { '?' };
        let raw = format!("{}{sep}options=-csearch_path%3D{schema}", self.raw);
        Self {
            shown: format!("{} (schema {schema})", self.shown),
            raw,
        }
    }

    /// The URL as configured (it holds no password).
    pub fn raw(&self) -> &str {
        &self.raw
    }

    pub fn config(&self) -> tokio_postgres::Config {
        tokio_postgres::Config::from_str(&self.raw).expect("checked when parsed")
    }
}

/// `postgres://user@host:port/dbname`, rebuilt from the parsed settings.
fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            let port = config
                .get_ports()
                .get(i)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("postgres")
    )
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.shown)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    pub url: DatabaseUrl,
    /// One line holding the password (a trailing newline is not part of it).
    pub password_file: Option<PathBuf>,
    /// The pool's size.
    pub max_connections: usize,
    /// Connecting (and waiting for a pooled connection) may take this long.
    pub connect_timeout: Duration,
    /// One statement may take this long, on the server and as the gateway waits for it.
    pub statement_timeout: Duration,
    /// A replica that has not renewed its lease for this long is taken for dead.
    pub lease: Duration,
}

impl PostgresSettings {
    pub fn new(url: DatabaseUrl) -> Self {
        Self {
            url,
            password_file: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT),
            statement_timeout: Duration::from_secs(DEFAULT_STATEMENT_TIMEOUT),
            lease: Duration::from_secs(DEFAULT_LEASE_SECONDS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_show_no_password_and_refuse_one() {
        let url = DatabaseUrl::parse("postgres://gw@db.example:6543/images").unwrap();
        assert_eq!(url.to_string(), "postgres://gw@db.example:6543/images");
        let err = DatabaseUrl::parse("postgres://gw:hunter2@db/images").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let err = DatabaseUrl::parse("mysql://gw:hunter2@db/images").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let url = DatabaseUrl::parse("postgres://gw@h/d?options=-csearch_path%3Dx").unwrap();
        assert_eq!(url.config().get_options(), Some("-csearch_path=x"));
    }
}
