//! HTTP plumbing: requests with the session's token, replayed once on 401, bounded waits for
//! answers, Swift's statuses as store errors, and the plain container and object calls.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_LENGTH};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use super::auth::Session;
use super::Inner;
use crate::StoreError;

/// A response (or its absence) that is no success, in the words of the store's errors.
pub(super) enum Failure {
    Status(StatusCode),
    Transport(reqwest::Error),
}

pub(super) fn transport_detail(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // The innermost cause names the actual problem ("Connection refused"); the outer layers
    // would add the URL, which we leave out of messages.
    let mut cause = None;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = Some(s.to_string());
        source = s.source();
    }
    match cause {
        Some(c) => format!("{what}: {c}"),
        None => what.to_owned(),
    }
}

pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Content-Length from the header itself: for HEAD, reqwest reports the (empty) body's length.
pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, CONTENT_LENGTH.as_str())?
        .trim()
        .parse()
        .ok()
}

pub(super) fn is_true(headers: &HeaderMap, name: &str) -> bool {
    header_str(headers, name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// `/info` sits at the proxy's root, in front of `/v1/<account>`.
pub(super) fn info_url(storage_url: &str) -> Option<String> {
    if let Some(i) = storage_url.find("/v1/") {
        return Some(format!("{}/info", &storage_url[..i]));
    }
    let url = reqwest::Url::parse(storage_url).ok()?;
    Some(format!("{}/info", url.origin().ascii_serialization()))
}

impl Inner {
    pub fn store(&self) -> &str {
        self.name.as_str()
    }

    pub fn unavailable(&self, message: impl Into<String>) -> StoreError {
        StoreError::unavailable(self.store(), message)
    }

    pub fn other(&self, message: impl Into<String>) -> StoreError {
        StoreError::other(self.store(), message)
    }

    pub fn failure(&self, what: &str, failure: Failure) -> StoreError {
        match failure {
            Failure::Transport(e) => {
                self.unavailable(format!("{what}: cannot reach Swift: {}", transport_detail(&e)))
            }
            Failure::Status(s) => match s.as_u16() {
                401 => self.unavailable(format!(
                    "{what}: Swift refused the token even after renewing it (HTTP 401)"
                )),
                403 => StoreError::Forbidden {
                    store: self.store().to_owned(),
                    message: format!("{what}: HTTP 403"),
                },
                413 => self.other(format!(
                    "{what}: Swift refused the object as too large (HTTP 413); lower large_object_size"
                )),
                507 => StoreError::StorageFull {
                    store: self.store().to_owned(),
                },
                500..=599 => self.unavailable(format!("{what}: Swift answered HTTP {s}")),
                _ => self.other(format!("{what}: Swift answered HTTP {s}")),
            },
        }
    }

    pub fn status_error(&self, what: &str, status: StatusCode) -> StoreError {
        self.failure(what, Failure::Status(status))
    }

    pub fn not_found(&self, key: &str) -> StoreError {
        StoreError::NotFound {
            store: self.store().to_owned(),
            key: key.to_owned(),
        }
    }

    pub fn url(&self, session: &Session, container: &str, object: Option<&str>) -> String {
        match object {
            Some(o) => format!("{}/{container}/{o}", session.storage_url),
            None => format!("{}/{container}", session.storage_url),
        }
    }

    pub fn request(
        &self,
        session: &Session,
        method: Method,
        container: &str,
        object: Option<&str>,
    ) -> RequestBuilder {
        self.client
            .request(method, self.url(session, container, object))
            .header("X-Auth-Token", session.token.clone())
    }

    /// Sends a replayable request, renewing the token once on 401. `timeout` bounds the wait for
    /// the response headers, not the reading of the body.
    pub async fn send(
        &self,
        what: &str,
        timeout: Duration,
        build: impl Fn(&Session) -> RequestBuilder,
    ) -> Result<Response, StoreError> {
        let mut session = self.session().await?;
        let mut renewed = false;
        loop {
            let response = match tokio::time::timeout(timeout, build(&session).send()).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Err(self.failure(what, Failure::Transport(e))),
                Err(_) => {
                    return Err(self.unavailable(format!(
                        "{what}: no answer from Swift within {}s",
                        timeout.as_secs()
                    )))
                }
            };
            if response.status() != StatusCode::UNAUTHORIZED {
                self.confirm(&session);
                return Ok(response);
            }
            if renewed {
                return Err(self.status_error(what, StatusCode::UNAUTHORIZED));
            }
            session = self.renew(Some(session.generation)).await?;
            renewed = true;
        }
    }

    /// [`send`](Self::send) of a plain request (no body, no query) within the request timeout.
    pub async fn call(
        &self,
        what: &str,
        method: Method,
        container: &str,
        object: Option<&str>,
    ) -> Result<Response, StoreError> {
        self.send(what, self.request_timeout, |s| {
            self.request(s, method.clone(), container, object)
        })
        .await
    }

    /// Reads a small response body (listings, manifests, reports) within the request timeout.
    pub async fn read_body(&self, what: &str, response: Response) -> Result<Bytes, StoreError> {
        match tokio::time::timeout(self.request_timeout, response.bytes()).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => Err(self.failure(what, Failure::Transport(e))),
            Err(_) => Err(self.unavailable(format!("{what}: Swift stalled sending its answer"))),
        }
    }

    pub async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        response: Response,
    ) -> Result<T, StoreError> {
        let body = self.read_body(what, response).await?;
        serde_json::from_slice(&body)
            .map_err(|e| self.other(format!("{what}: unreadable answer from Swift: {e}")))
    }

    pub async fn create_container(&self, container: &str) -> Result<(), StoreError> {
        let what = format!("creating container {container}");
        let response = self
            .send(&what, self.request_timeout, |s| {
                self.request(s, Method::PUT, container, None)
                    .header(CONTENT_LENGTH, 0)
            })
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(&what, response.status()))
        }
    }

    /// Checks that `container` exists, creating it when missing if `create`.
    pub async fn check_container(&self, container: &str, create: bool) -> Result<(), StoreError> {
        let what = format!("checking container {container}");
        let response = self.call(&what, Method::HEAD, container, None).await?;
        match response.status() {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND if create => self.create_container(container).await,
            StatusCode::NOT_FOUND => Err(self.unavailable(format!(
                "container {container} does not exist (set create_container to create it)"
            ))),
            s => Err(self.status_error(&what, s)),
        }
    }

    pub async fn ensure_containers(&self) -> Result<(), StoreError> {
        if !self.create_container {
            return Ok(());
        }
        self.containers_ready
            .get_or_try_init(|| async {
                self.create_container(&self.container).await?;
                self.create_container(&self.segment_container).await
            })
            .await
            .map(|_| ())
    }

    pub async fn head(
        &self,
        container: &str,
        object: &str,
    ) -> Result<Option<HeaderMap>, StoreError> {
        let what = format!("looking up {container}/{object}");
        let response = self
            .call(&what, Method::HEAD, container, Some(object))
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(response.headers().clone())),
            s => Err(self.status_error(&what, s)),
        }
    }

    pub async fn delete_object(&self, container: &str, object: &str) -> Result<(), StoreError> {
        let what = format!("deleting {container}/{object}");
        let response = self
            .call(&what, Method::DELETE, container, Some(object))
            .await?;
        match response.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            s => Err(self.status_error(&what, s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_urls() {
        assert_eq!(
            info_url("http://127.0.0.1:8080/v1/AUTH_test").as_deref(),
            Some("http://127.0.0.1:8080/info")
        );
        assert_eq!(
            info_url("https://h/swift/v1/AUTH_t").as_deref(),
            Some("https://h/swift/info")
        );
    }
}
