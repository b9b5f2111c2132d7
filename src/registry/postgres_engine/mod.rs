//! The PostgreSQL engine: one catalogue shared by several gateway replicas.
//!
//! Tables and migrations are in [`schema`]. Every change to an image runs in one transaction
//! that first locks the image's row (`SELECT … FOR UPDATE`), so the change closure runs once on
//! the committed value and a status transition is a compare-and-swap across replicas; the
//! members table and the counters change in that same transaction, their rows always locked in
//! the same order (status counts, then usage, each sorted) so concurrent changes never deadlock.
//!
//! Lists are keyset queries over the partial indexes of live images (or the `updated_at` index
//! for `changes-since`), ordered as [`query::order`](super::query::order); the SQL narrows by
//! audience and by the indexed filters and every row is checked with
//! [`Filters::matches`](super::query::Filters::matches), so a page is read in batches until it
//! is full.
//!
//! Every call is bounded: waiting for a pooled connection by `connect_timeout`, a statement by
//! the session's `statement_timeout` and, in case the server never answers at all, by the same
//! time on the client, after which the connection is dropped rather than reused. Failures to
//! reach the database are [`RegistryError::Unavailable`].

mod page;
mod rows;
mod schema;
mod settings;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::NoTls;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{
    Change, ChoreGuard, PageRequest, RegistryEngine, RegistryError, StoredImage, UpdateError,
    WALKED_STATES,
};
use crate::model::{ImageId, ImageRecord, ImageStatus};
use page::page_query;
use rows::{decode, decode_rows, write};
pub use settings::{
    DatabaseUrl, PostgresSettings, DEFAULT_CONNECT_TIMEOUT, DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_STATEMENT_TIMEOUT,
};

/// Rows a list reads per query while filling a page.
const MIN_BATCH: u64 = 32;
const MAX_BATCH: u64 = 1000;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

struct Inner {
    pool: Pool,
    /// `postgres://user@host:port/db`, for messages.
    database: String,
    id: String,
    created_now: bool,
    /// This process's id in `replicas` (new at every start).
    replica: String,
    /// The client-side bound on one call (a pooled connection, then its statements).
    call_timeout: Duration,
    connect_timeout: Duration,
    /// Stops the lease renewal when the registry is dropped.
    _heartbeat: DropGuard,
}

#[derive(Clone)]
pub struct PostgresRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PostgresRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresRegistry({})", self.inner.database)
    }
}

/// Whether an error means the database could not be reached or did not answer (rather than a
/// fault in what was asked).
fn pg_error(database: &str, e: tokio_postgres::Error) -> RegistryError {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            // 08 connection, 53 resources, 57 operator intervention (statement timeout, admin
            // shutdown, starting up), 58 system error.
            let unavailable = ["08", "53", "57", "58"]
                .iter()
                .any(|class| code.starts_with(class));
            let text = format!("{database}: {} ({code})", db.message());
            if unavailable {
                RegistryError::Unavailable(text)
            } else {
                RegistryError::Storage(text)
            }
        }
        None => {
            let text = e.to_string();
            if text.starts_with("error serializing") || text.starts_with("error deserializing") {
                RegistryError::Storage(format!("{database}: {text}"))
            } else {
                RegistryError::Unavailable(format!("{database}: {text}"))
            }
        }
    }
}

impl PostgresRegistry {
    /// Connects, applies the schema migrations (under an advisory lock) and takes this
    /// replica's lease. Errors name the database, never the password.
    pub async fn open(settings: &PostgresSettings) -> Result<Self, RegistryError> {
        let database = settings.url.to_string();
        let mut config = settings.url.config();
        if let Some(path) = &settings.password_file {
            let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                RegistryError::Storage(format!(
                    "{database}: cannot read registry.password_file: {}",
                    e.kind()
                ))
            })?;
            config.password(text.trim_end_matches(['\r', '\n']));
        }
        // The server ends a statement after statement_timeout itself; the client's own bound
        // (below) covers a server that does not answer at all.
        let timeout_ms = settings.statement_timeout.as_millis();
        let options = match config.get_options() {
            Some(o) => format!("{o} -c statement_timeout={timeout_ms}"),
            None => format!("-c statement_timeout={timeout_ms}"),
        };
        config
            .options(options)
            .connect_timeout(settings.connect_timeout)
            .application_name("glance-gateway");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| RegistryError::Storage(format!("{database}: {e}")))?;
        let call_timeout = settings.connect_timeout + settings.statement_timeout;
        let (id, created_now) =
            migrate(&pool, &database, settings.connect_timeout, call_timeout).await?;
        let replica = uuid::Uuid::new_v4().to_string();
        let stop = CancellationToken::new();
        let inner = Arc::new(Inner {
            pool,
            database,
            id,
            created_now,
            replica,
            call_timeout,
            connect_timeout: settings.connect_timeout,
            _heartbeat: stop.clone().drop_guard(),
        });
        let registry = Self { inner };
        registry.renew_lease(settings.lease).await?;
        registry.forget_old_replicas().await?;
        tokio::spawn(heartbeat(
            Arc::downgrade(&registry.inner),
            settings.lease,
            stop,
        ));
        Ok(registry)
    }

    /// Creates `schema` in the settings' database (when missing) and returns the settings of a
    /// registry kept there: several registries can share one database (tests do).
    pub async fn create_schema(
        settings: &PostgresSettings,
        schema: &str,
    ) -> Result<PostgresSettings, RegistryError> {
        let database = settings.url.to_string();
        let mut config = settings.url.config();
        if let Some(path) = &settings.password_file {
            let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                RegistryError::Storage(format!("{database}: cannot read the password file: {e}"))
            })?;
            config.password(text.trim_end_matches(['\r', '\n']));
        }
        config.connect_timeout(settings.connect_timeout);
        let (client, connection) =
            tokio::time::timeout(settings.connect_timeout, config.connect(NoTls))
                .await
                .map_err(|_| RegistryError::Unavailable(format!("{database}: no answer")))?
                .map_err(|e| pg_error(&database, e))?;
        let task = tokio::spawn(connection);
        let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
        let result = client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))
            .await
            .map_err(|e| pg_error(&database, e));
        drop(client);
        let _ = task.await;
        result?;
        Ok(PostgresSettings {
            url: settings.url.in_schema(schema),
            ..settings.clone()
        })
    }

    /// Stores `image` (record and members) as it is, unless its id is stored already: `false`
    /// then. For copying a registry; the counters follow as for any new image.
    pub async fn copy_in(&self, image: StoredImage) -> Result<bool, RegistryError> {
        let err = self.err();
        self.call(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await.map_err(&err)?;
                let exists = tx
                    .query_opt(
                        "SELECT 1 FROM images WHERE id = $1",
                        &[&image.record.id.as_str()],
                    )
                    .await
                    .map_err(&err)?;
                if exists.is_some() {
                    return Ok(false);
                }
                write(&tx, None, &image, None, &err).await?;
                tx.commit().await.map_err(&err)?;
                Ok(true)
            })
        })
        .await
    }

    /// Images and memberships stored, for checking a copy.
    pub async fn totals(&self) -> Result<(u64, u64), RegistryError> {
        let err = self.err();
        self.call(move |c| {
            Box::pin(async move {
                let row = c
                    .query_one(
                        "SELECT (SELECT count(*) FROM images), (SELECT count(*) FROM members)",
                        &[],
                    )
                    .await
                    .map_err(&err)?;
                Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
            })
        })
        .await
    }

    /// Takes over `id` as this registry's id (the stores' ownership markers name it), which only
    /// a registry without images may do.
    pub async fn adopt_id(&self, id: &str) -> Result<(), RegistryError> {
        let (id, err, database) = (id.to_owned(), self.err(), self.inner.database.clone());
        self.call(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await.map_err(&err)?;
                let current: String = tx
                    .query_one(
                        "SELECT value FROM glance_gateway_meta WHERE key = 'registry_id' FOR UPDATE",
                        &[],
                    )
                    .await
                    .map_err(&err)?
                    .get(0);
                if current == id {
                    return Ok(());
                }
                let any = tx
                    .query_opt("SELECT 1 FROM images LIMIT 1", &[])
                    .await
                    .map_err(&err)?;
                if any.is_some() {
                    return Err(RegistryError::Storage(format!(
                        "{database} already holds images of registry {current}"
                    )));
                }
                tx.execute(
                    "UPDATE glance_gateway_meta SET value = $1 WHERE key = 'registry_id'",
                    &[&id],
                )
                .await
                .map_err(&err)?;
                tx.commit().await.map_err(&err)?;
                Ok(())
            })
        })
        .await
    }

    /// Every start leaves a lease row: those expired long ago go (an image `saving` under a
    /// replica without a row is an interrupted upload all the same).
    async fn forget_old_replicas(&self) -> Result<(), RegistryError> {
        let err = self.err();
        self.call(move |c| {
            Box::pin(async move {
                c.execute(
                    "DELETE FROM replicas WHERE expires_at < now() - interval '1 day'",
                    &[],
                )
                .await
                .map_err(&err)?;
                Ok(())
            })
        })
        .await
    }

    /// This process's replica id.
    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    /// Runs `f` on a pooled connection, within the call timeout. A connection whose call timed
    /// out is closed, not returned to the pool: it may still be waiting for an answer.
    async fn call<T, F>(&self, f: F) -> Result<T, RegistryError>
    where
        T: Send,
        F: for<'c> FnOnce(&'c mut Object) -> BoxFuture<'c, Result<T, RegistryError>> + Send,
    {
        call(&self.inner, f).await
    }

    async fn renew_lease(&self, lease: Duration) -> Result<(), RegistryError> {
        renew(&self.inner, lease).await
    }

    fn err(&self) -> impl Fn(tokio_postgres::Error) -> RegistryError + Send + Sync + Clone {
        let database = self.inner.database.clone();
        move |e| pg_error(&database, e)
    }
}

async fn call<T, F>(inner: &Inner, f: F) -> Result<T, RegistryError>
where
    T: Send,
    F: for<'c> FnOnce(&'c mut Object) -> BoxFuture<'c, Result<T, RegistryError>> + Send,
{
    let database = &inner.database;
    let mut client = get(&inner.pool, database, inner.connect_timeout).await?;
    let outcome = tokio::time::timeout(inner.call_timeout, f(&mut client)).await;
    match outcome {
        Ok(result) => result,
        Err(_) => {
            drop(Object::take(client));
            Err(RegistryError::Unavailable(format!(
                "{database}: no answer within {} s",
                inner.call_timeout.as_secs()
            )))
        }
    }
}

async fn get(pool: &Pool, database: &str, wait: Duration) -> Result<Object, RegistryError> {
    // The pool's own timeouts bound this; the outer one is a backstop for a connect that hangs
    // in the startup exchange.
    match tokio::time::timeout(wait + wait, pool.get()).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(deadpool_postgres::PoolError::Backend(e))) => Err(pg_error(database, e)),
        Ok(Err(e)) => Err(RegistryError::Unavailable(format!("{database}: {e}"))),
        Err(_) => Err(RegistryError::Unavailable(format!(
            "{database}: no connection within {} s",
            (wait + wait).as_secs()
        ))),
    }
}

async fn renew(inner: &Inner, lease: Duration) -> Result<(), RegistryError> {
    let replica = inner.replica.clone();
    let secs = lease.as_secs_f64();
    let database = inner.database.clone();
    call(inner, move |c| {
        Box::pin(async move {
            c.execute(
                "INSERT INTO replicas (id, expires_at) \
                 VALUES ($1, now() + make_interval(secs => $2)) \
                 ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
                &[&replica, &secs],
            )
            .await
            .map_err(|e| pg_error(&database, e))?;
            Ok(())
        })
    })
    .await
}

/// Renews the lease every third of `lease_seconds` while the registry lives; long-expired
/// leases of other replicas are removed now and then.
async fn heartbeat(inner: std::sync::Weak<Inner>, lease: Duration, stop: CancellationToken) {
    let every = (lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = renew(&inner, lease).await {
            tracing::error!(error = %e, "could not renew this replica's registry lease");
        }
    }
}

/// Creates or upgrades the schema, once, whichever replica gets there first. Returns the
/// registry id and whether this call created it.
async fn migrate(
    pool: &Pool,
    database: &str,
    connect_timeout: Duration,
    call_timeout: Duration,
) -> Result<(String, bool), RegistryError> {
    let mut client = get(pool, database, connect_timeout).await?;
    let err = |e| pg_error(database, e);
    let work = async {
        // Session-level: released when this connection closes, whatever happens.
        client
            .simple_query(schema::LOCK_MIGRATE)
            .await
            .map_err(err)?;
        client.simple_query(schema::META).await.map_err(err)?;
        let current: i64 = client
            .query_opt(
                "SELECT value FROM glance_gateway_meta WHERE key = 'schema_version'",
                &[],
            )
            .await
            .map_err(err)?
            .map(|row| row.get::<_, String>(0))
            .map(|v| v.parse().unwrap_or(i64::MAX))
            .unwrap_or(0);
        let latest = schema::MIGRATIONS.last().map_or(0, |(v, _)| *v);
        if current > latest {
            return Err(RegistryError::Corrupt(format!(
                "{database}: schema version {current} is newer than this gateway's ({latest})"
            )));
        }
        for (version, sql) in schema::MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            let tx = client.transaction().await.map_err(err)?;
            tx.batch_execute(sql).await.map_err(err)?;
            tx.execute(
                "INSERT INTO glance_gateway_meta (key, value) VALUES ('schema_version', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&version.to_string()],
            )
            .await
            .map_err(err)?;
            tx.commit().await.map_err(err)?;
            tracing::info!(database, version, "registry schema migrated");
        }
        let fresh = uuid::Uuid::new_v4().to_string();
        let created = client
            .execute(
                "INSERT INTO glance_gateway_meta (key, value) VALUES ('registry_id', $1) \
                 ON CONFLICT (key) DO NOTHING",
                &[&fresh],
            )
            .await
            .map_err(err)?
            == 1;
        let id: String = client
            .query_one(
                "SELECT value FROM glance_gateway_meta WHERE key = 'registry_id'",
                &[],
            )
            .await
            .map_err(err)?
            .get(0);
        Ok((id, created))
    };
    let outcome = tokio::time::timeout(call_timeout, work).await;
    // The advisory lock goes with the connection.
    drop(Object::take(client));
    match outcome {
        Ok(result) => result,
        Err(_) => Err(RegistryError::Unavailable(format!(
            "{database}: no answer within {} s",
            call_timeout.as_secs()
        ))),
    }
}

#[async_trait]
impl RegistryEngine for PostgresRegistry {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn id(&self) -> &str {
        &self.inner.id
    }

    fn is_new(&self) -> bool {
        self.inner.created_now
    }

    async fn get(&self, id: &ImageId) -> Result<Option<StoredImage>, RegistryError> {
        let id = id.as_str().to_owned();
        let err = self.err();
        self.call(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached("SELECT doc::text FROM images WHERE id = $1")
                    .await
                    .map_err(&err)?;
                let row = c.query_opt(&stmt, &[&id]).await.map_err(&err)?;
                row.map(|row| decode(row.get(0))).transpose()
            })
        })
        .await
    }

    async fn insert_new(&self, record: ImageRecord) -> Result<ImageRecord, RegistryError> {
        let err = self.err();
        self.call(move |c| {
            Box::pin(async move {
                let stored = StoredImage {
                    record,
                    members: vec![],
                };
                let tx = c.transaction().await.map_err(&err)?;
                let exists = tx
                    .query_opt(
                        "SELECT 1 FROM images WHERE id = $1",
                        &[&stored.record.id.as_str()],
                    )
                    .await
                    .map_err(&err)?;
                if exists.is_some() {
                    return Err(RegistryError::Conflict(stored.record.id.clone()));
                }
                // Uploads move images into `saving` by update: one stored as `saving` (a copy
                // from another registry) has no upload running, so no replica.
                match write(&tx, None, &stored, None, &err).await {
                    // Another replica inserted the same id in between.
                    Err(RegistryError::Storage(text)) if text.contains("(23505)") => {
                        return Err(RegistryError::Conflict(stored.record.id.clone()))
                    }
                    other => other?,
                }
                tx.commit().await.map_err(&err)?;
                Ok(stored.record)
            })
        })
        .await
    }

    async fn update(&self, id: &ImageId, change: Change) -> Result<StoredImage, UpdateError> {
        let id = id.as_str().to_owned();
        let err = self.err();
        let replica = self.inner.replica.clone();
        let result = self
            .call(move |c| {
                Box::pin(async move {
                    let tx = c.transaction().await.map_err(&err)?;
                    let stmt = tx
                        .prepare_cached(
                            "SELECT doc::text, saving_replica FROM images WHERE id = $1 FOR UPDATE",
                        )
                        .await
                        .map_err(&err)?;
                    let Some(row) = tx.query_opt(&stmt, &[&id]).await.map_err(&err)? else {
                        return Err(RegistryError::NotFound);
                    };
                    let before = decode(row.get(0))?;
                    let previous_replica: Option<String> = row.get(1);
                    let mut after = before.clone();
                    if let Err(refusal) = change(&mut after) {
                        // Rolled back when dropped; the refusal travels in the Ok side.
                        return Ok(Err(refusal));
                    }
                    // The replica that moved the image into `saving` owns the upload.
                    let saving = match (before.record.status, after.record.status) {
                        (_, s) if s != ImageStatus::Saving => None,
                        (ImageStatus::Saving, _) => previous_replica,
                        _ => Some(replica),
                    };
                    write(&tx, Some(&before), &after, saving.as_deref(), &err).await?;
                    tx.commit().await.map_err(&err)?;
                    Ok(Ok(after))
                })
            })
            .await;
        match result {
            Ok(Ok(stored)) => Ok(stored),
            Ok(Err(refusal)) => Err(UpdateError::Refused(refusal)),
            Err(e) => Err(UpdateError::Registry(e)),
        }
    }

    async fn list_page(&self, request: PageRequest) -> Result<Vec<ImageRecord>, RegistryError> {
        if request.limit == 0 {
            return Ok(vec![]);
        }
        let err = self.err();
        self.call(move |c| {
            Box::pin(async move {
                // When the SQL decides every filter, a page is one query of `limit` rows;
                // otherwise rows are read a larger batch at a time for `matches` to sift.
                let f = &request.filters;
                let exact = f.name.is_none()
                    && f.disk_format.is_none()
                    && f.container_format.is_none()
                    && f.min_ram.is_none()
                    && f.min_disk.is_none()
                    && f.protected.is_none()
                    && f.properties.is_empty();
                let batch = if exact {
                    request.limit.min(MAX_BATCH)
                } else {
                    request.limit.saturating_mul(4).clamp(MIN_BATCH, MAX_BATCH)
                };
                let mut page = vec![];
                let mut after = request.after.clone();
                loop {
                    let sql = page_query(&request, after.as_ref(), batch);
                    let params: Vec<(&(dyn ToSql + Sync), Type)> = sql
                        .params
                        .iter()
                        .map(|(v, t)| (&**v as &(dyn ToSql + Sync), t.clone()))
                        .collect();
                    let rows = c.query_typed(&sql.text, &params).await.map_err(&err)?;
                    let fetched = rows.len() as u64;
                    for stored in decode_rows(&rows)? {
                        let record = stored.record;
                        if request.filters.matches(&record) {
                            page.push(record.clone());
                            if page.len() as u64 >= request.limit {
                                return Ok(page);
                            }
                        }
                        after = Some(record);
                    }
                    if fetched < batch {
                        return Ok(page);
                    }
                }
            })
        })
        .await
    }

    async fn shared_with(&self, member: &str) -> Result<Vec<StoredImage>, RegistryError> {
        let member = member.to_owned();
        let err = self.err();
        self.call(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT i.doc::text FROM members m JOIN images i ON i.id = m.image_id \
                         WHERE m.member = $1 ORDER BY m.image_id",
                        &[&member],
                    )
                    .await
                    .map_err(&err)?;
                decode_rows(&rows)
            })
        })
        .await
    }

    async fn usage(&self, owner: Option<&str>) -> Result<u64, RegistryError> {
        let (has_owner, owner) = (owner.is_some(), owner.unwrap_or_default().to_owned());
        let err = self.err();
        self.call(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "SELECT bytes::text FROM usage WHERE has_owner = $1 AND owner = $2",
                    )
                    .await
                    .map_err(&err)?;
                let row = c
                    .query_opt(&stmt, &[&has_owner, &owner])
                    .await
                    .map_err(&err)?;
                let bytes = row.map_or(Ok(0), |row| {
                    row.get::<_, String>(0)
                        .parse::<i128>()
                        .map_err(|e| RegistryError::Corrupt(format!("usage counter: {e}")))
                })?;
                Ok(bytes.clamp(0, i128::from(u64::MAX)) as u64)
            })
        })
        .await
    }

    async fn status_counts(&self) -> Result<Vec<(ImageStatus, u64)>, RegistryError> {
        let err = self.err();
        self.call(move |c| {
            Box::pin(async move {
                let rows = c
                    .query("SELECT status, n FROM status_counts", &[])
                    .await
                    .map_err(&err)?;
                let count = |s: ImageStatus| {
                    rows.iter()
                        .find(|row| row.get::<_, &str>(0) == s.as_str())
                        .map_or(0, |row| row.get::<_, i64>(1).max(0) as u64)
                };
                Ok(ImageStatus::ALL.iter().map(|&s| (s, count(s))).collect())
            })
        })
        .await
    }

    async fn flush(&self) -> Result<(), RegistryError> {
        // Every commit is durable already.
        Ok(())
    }

    async fn in_state(
        &self,
        status: ImageStatus,
        after: Option<&ImageId>,
        limit: usize,
    ) -> Result<Vec<StoredImage>, RegistryError> {
        if !WALKED_STATES.contains(&status) {
            return Err(RegistryError::Storage(format!(
                "no index of images in state {}",
                status.as_str()
            )));
        }
        let after = after.map(|id| id.as_str().to_owned()).unwrap_or_default();
        let err = self.err();
        self.call(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT doc::text FROM images WHERE status = $1 AND id > $2 \
                         ORDER BY id LIMIT $3",
                        &[&status.as_str(), &after, &(limit as i64)],
                    )
                    .await
                    .map_err(&err)?;
                decode_rows(&rows)
            })
        })
        .await
    }

    async fn interrupted(
        &self,
        include_own: bool,
        after: Option<&ImageId>,
        limit: usize,
    ) -> Result<Vec<StoredImage>, RegistryError> {
        let after = after.map(|id| id.as_str().to_owned()).unwrap_or_default();
        let err = self.err();
        let me = include_own.then(|| self.inner.replica.clone());
        self.call(move |c| {
            Box::pin(async move {
                // An image saving without a replica (copied from another engine) has no writer.
                let rows = c
                    .query(
                        "SELECT doc::text FROM images i WHERE status = 'saving' AND id > $1 \
                         AND (saving_replica IS NULL OR saving_replica = $2 \
                              OR NOT EXISTS (SELECT 1 FROM replicas r \
                                  WHERE r.id = i.saving_replica AND r.expires_at > now())) \
                         ORDER BY id LIMIT $3",
                        &[&after, &me, &(limit as i64)],
                    )
                    .await
                    .map_err(&err)?;
                decode_rows(&rows)
            })
        })
        .await
    }

    async fn chore_lock(&self, chore: &'static str) -> Result<Option<ChoreGuard>, RegistryError> {
        let inner = &self.inner;
        let client = get(&inner.pool, &inner.database, inner.connect_timeout).await?;
        let registry = inner.id.clone();
        let locked = tokio::time::timeout(
            inner.call_timeout,
            client.query_one(schema::TRY_LOCK_CHORE, &[&registry, &chore]),
        )
        .await;
        // The lock is the session's: it lasts while the guard holds the connection, out of the
        // pool, and goes when the guard drops it (the connection closes).
        let client = Object::take(client);
        match locked {
            Ok(Ok(row)) if row.get::<_, bool>(0) => Ok(Some(ChoreGuard::holding(client))),
            Ok(Ok(_)) => Ok(None),
            Ok(Err(e)) => Err(pg_error(&inner.database, e)),
            Err(_) => Err(RegistryError::Unavailable(format!(
                "{}: no answer within {} s",
                inner.database,
                inner.call_timeout.as_secs()
            ))),
        }
    }
}
