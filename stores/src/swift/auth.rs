//! Auth v1 sessions: a storage URL and token, renewed once per burst of 401s, checked before a
//! streamed PUT (which cannot be replayed), and rotated from `token_file` when only a fixed token
//! is configured.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use reqwest::StatusCode;

use super::client::{header_str, transport_detail};
use super::config::valid_url;
use super::Inner;
use crate::secret::{self, Secret};
use crate::StoreError;

/// A streamed PUT cannot be replayed after a 401 once its body has been read, so a token that no
/// response has confirmed for this long is checked with a HEAD first.
const CONFIRM_WITHIN: Duration = Duration::from_secs(30);
/// A token that expires within this margin is renewed before a streamed PUT.
const EXPIRY_MARGIN: Duration = Duration::from_secs(120);

/// The v1 auth endpoint and what it takes.
#[derive(Debug)]
pub(super) struct Credentials {
    pub auth_url: String,
    pub user: String,
    pub key: Secret,
}

/// A storage URL and the token that opens it.
pub(super) struct Session {
    pub storage_url: String,
    /// Marked sensitive so HTTP-level debug output hides it too.
    pub token: HeaderValue,
    pub generation: u64,
    pub expires_at: Option<Instant>,
    /// Milliseconds since `Inner::epoch` of the last response that accepted the token; 0: never.
    pub confirmed_ms: AtomicU64,
}

/// A token as a header value marked sensitive; `None` when it cannot be one.
pub(super) fn token_header(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(token).ok()?;
    value.set_sensitive(true);
    Some(value)
}

impl Inner {
    pub fn now_ms(&self) -> u64 {
        // Never 0, which means "never confirmed".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    pub fn new_session(
        &self,
        storage_url: String,
        token: HeaderValue,
        expires_at: Option<Instant>,
        confirmed: bool,
    ) -> Arc<Session> {
        Arc::new(Session {
            storage_url: storage_url.trim_end_matches('/').to_owned(),
            token,
            generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
            expires_at,
            confirmed_ms: AtomicU64::new(if confirmed { self.now_ms() } else { 0 }),
        })
    }

    pub fn confirm(&self, session: &Session) {
        session.confirmed_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    pub fn current_session(&self) -> Option<Arc<Session>> {
        self.session.lock().expect("session lock").clone()
    }

    pub async fn session(&self) -> Result<Arc<Session>, StoreError> {
        match self.current_session() {
            Some(s) => Ok(s),
            None => self.renew(None).await,
        }
    }

    /// Replaces session `stale` (or the missing one) with a fresh one. Callers that raced on the
    /// same 401 share one renewal.
    pub async fn renew(&self, stale: Option<u64>) -> Result<Arc<Session>, StoreError> {
        let _renewing = self.auth_lock.lock().await;
        let current = self.current_session();
        if let Some(cur) = &current {
            if Some(cur.generation) != stale {
                return Ok(Arc::clone(cur));
            }
        }
        let fresh = if let Some(creds) = &self.credentials {
            self.authenticate(creds).await?
        } else {
            // A fixed token: all we can do is look for a newer one in token_file.
            let rotated = match &self.token_file {
                Some(path) => secret::read_file("token_file", path)
                    .await
                    .ok()
                    .and_then(|t| token_header(t.expose()))
                    .filter(|t| current.as_ref().is_none_or(|cur| cur.token != t)),
                None => None,
            };
            let (Some(token), Some(url)) = (rotated, &self.storage_url_override) else {
                return Err(self.unavailable(
                    "Swift refused the configured token (HTTP 401) and no credentials are \
                     configured to get a new one",
                ));
            };
            self.new_session(url.clone(), token, None, false)
        };
        *self.session.lock().expect("session lock") = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// Auth v1: the user and key in headers, the token and storage URL back in headers.
    pub async fn authenticate(&self, creds: &Credentials) -> Result<Arc<Session>, StoreError> {
        let mut key = HeaderValue::from_str(creds.key.expose())
            .map_err(|_| self.unavailable("the configured key is not a valid header value"))?;
        key.set_sensitive(true);
        let request = self
            .client
            .get(&creds.auth_url)
            .header("X-Auth-User", &creds.user)
            .header("X-Auth-Key", key)
            .timeout(self.request_timeout)
            .send();
        let response = request.await.map_err(|e| {
            self.unavailable(format!(
                "cannot reach the Swift auth endpoint: {}",
                transport_detail(&e)
            ))
        })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.unavailable(format!(
                "the Swift auth endpoint refused the credentials of user {} (HTTP {status})",
                creds.user
            )));
        }
        if !status.is_success() {
            return Err(self.unavailable(format!("the Swift auth endpoint answered HTTP {status}")));
        }
        let headers = response.headers();
        let token = header_str(headers, "x-auth-token")
            .or_else(|| header_str(headers, "x-storage-token"))
            .and_then(token_header)
            .ok_or_else(|| self.unavailable("the Swift auth response carries no token"))?;
        let storage_url = match &self.storage_url_override {
            Some(url) => url.clone(),
            None => header_str(headers, "x-storage-url")
                .filter(|u| valid_url(u))
                .ok_or_else(|| self.unavailable("the Swift auth response carries no storage URL"))?
                .to_owned(),
        };
        let expires_at = header_str(headers, "x-auth-token-expires")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Instant::now() + Duration::from_secs(secs));
        Ok(self.new_session(storage_url, token, expires_at, true))
    }

    /// Before a streamed PUT, which cannot be replayed once its body was read: renew a token
    /// about to expire, and check one not confirmed lately (renewing it on 401).
    pub async fn ready_to_stream(&self, container: &str) -> Result<(), StoreError> {
        let session = self.session().await?;
        let expiring = session
            .expires_at
            .is_some_and(|t| t.saturating_duration_since(Instant::now()) < EXPIRY_MARGIN);
        if expiring && self.credentials.is_some() {
            self.renew(Some(session.generation)).await?;
            return Ok(());
        }
        let confirmed = session.confirmed_ms.load(Ordering::Relaxed);
        if confirmed != 0
            && self.now_ms().saturating_sub(confirmed) < CONFIRM_WITHIN.as_millis() as u64
        {
            return Ok(());
        }
        self.check_container(container, false).await
    }
}
