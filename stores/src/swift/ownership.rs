//! The ownership marker of the container (see [`crate::ownership`]).

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};

use super::Inner;
use crate::ownership::MARKER;
use crate::{Namespace, StoreError};

impl Inner {
    /// The container and the segment container, in the account the storage URL or the v1 auth
    /// user (`account:user`) names.
    pub fn namespaces(&self) -> Vec<Namespace> {
        let account = match (&self.storage_url_override, &self.credentials) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Some(c)) => {
                let account = c.user.split_once(':').map_or(c.user.as_str(), |(a, _)| a);
                format!("{} account {account}", c.auth_url)
            }
            (None, None) => String::new(),
        };
        let backend = format!("swift {account}");
        vec![
            Namespace::new(backend.clone(), format!("{}/", self.container)),
            Namespace::new(backend, format!("{}/", self.segment_container)),
        ]
    }

    pub async fn read_marker(&self) -> Result<Option<Bytes>, StoreError> {
        let what = format!("reading {}/{MARKER}", self.container);
        let response = self
            .send(&what, self.request_timeout, |s| {
                self.request(s, Method::GET, &self.container, Some(MARKER))
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(self.read_body(&what, response).await?)),
            s => Err(self.status_error(&what, s)),
        }
    }

    pub async fn write_marker(&self, content: Bytes) -> Result<(), StoreError> {
        self.ensure_containers().await?;
        let what = format!("writing {}/{MARKER}", self.container);
        let response = self
            .send(&what, self.request_timeout, |s| {
                self.request(s, Method::PUT, &self.container, Some(MARKER))
                    .header(CONTENT_TYPE, "application/json")
                    .body(content.clone())
            })
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(&what, response.status()))
        }
    }
}
