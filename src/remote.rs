//! Remote image sources: `http(s)` URLs given as `x-image-meta-location` (data read from there on
//! download) or `x-glance-api-copy-from` (copied into our own store). Governed by
//! `remote_sources`: with `public`, only hosts resolving to public addresses are contacted —
//! checked at connect time by the resolver and on every redirect, so neither a redirect nor DNS
//! rebinding can reach loopback, private ranges or instance metadata.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use futures::TryStreamExt;
use reqwest::dns::{Name, Resolve, Resolving};
use reqwest::header::{CONTENT_LENGTH, LOCATION};
use reqwest::{Method, Response};
use stores::ByteStream;
use url::Url;

use crate::config::RemoteSources;
use crate::error::{ApiError, ApiResult};

const MAX_REDIRECTS: usize = 5;

/// Addresses a `public` policy may contact.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xC0) == 64) // shared address space
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local
                || (seg[0] & 0xffc0) == 0xfe80 // link local
                || (seg[0] == 0x64 && seg[1] == 0xff9b) // NAT64 of anything
                || (seg[0] == 0x2001 && seg[1] == 0xdb8))
        }
    }
}

/// Resolves names to public addresses only.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err("the host has no public address".into());
            }
            Ok(Box::new(addrs.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

/// Fetches remote sources under the configured policy.
#[derive(Clone)]
pub struct RemoteClient {
    policy: RemoteSources,
    client: reqwest::Client,
    /// `host:port` of our own S3/Swift endpoints, which are never valid remote sources.
    forbidden_authorities: Arc<Vec<String>>,
}

impl std::fmt::Debug for RemoteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteClient")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn refused(url: &str) -> ApiError {
    // Only scheme and host are echoed: a URL may carry tokens in its path or query.
    let shown = Url::parse(url)
        .ok()
        .map(|u| format!("{}://{}/...", u.scheme(), u.host_str().unwrap_or("")))
        .unwrap_or_else(|| "<unparsable URL>".to_owned());
    ApiError::bad_request(format!("External sources are not supported: '{shown}'"))
}

fn authority(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or("").to_ascii_lowercase(),
        url.port_or_known_default().unwrap_or(0)
    )
}

impl RemoteClient {
    pub fn new(policy: RemoteSources, forbidden_endpoints: &[String]) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("glance-gateway/", env!("CARGO_PKG_VERSION")));
        if policy == RemoteSources::Public {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        let forbidden = forbidden_endpoints
            .iter()
            .filter_map(|e| Url::parse(e).ok())
            .map(|u| authority(&u))
            .collect();
        Ok(Self {
            policy,
            client: builder.build()?,
            forbidden_authorities: Arc::new(forbidden),
        })
    }

    /// Checks a URL against the policy without contacting it.
    pub fn validate(&self, text: &str) -> ApiResult<Url> {
        if text.is_empty() {
            return Err(ApiError::bad_request("External source should not be empty"));
        }
        let url = Url::parse(text).map_err(|_| refused(text))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(refused(text));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ApiError::bad_request(
                "External source URLs must not carry credentials",
            ));
        }
        if self.policy == RemoteSources::Off {
            return Err(refused(text));
        }
        if self.forbidden_authorities.contains(&authority(&url)) {
            return Err(refused(text));
        }
        if self.policy == RemoteSources::Public {
            let literal = match url.host() {
                Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            if literal.is_some_and(|ip| !is_public(ip)) || url.host_str() == Some("localhost") {
                return Err(refused(text));
            }
        }
        Ok(url)
    }

    /// Sends `method` to the URL, following redirects only to URLs that pass [`validate`].
    async fn send(&self, method: Method, url: Url) -> ApiResult<Response> {
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            let response = self
                .client
                .request(method.clone(), url.clone())
                .send()
                .await
                .map_err(|e| {
                    tracing::info!(host = url.host_str().unwrap_or(""), error = %e, "remote source unreachable");
                    ApiError::bad_request("The external source could not be reached.")
                })?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let next = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| ApiError::bad_request("The external source redirected nowhere."))?;
            url = self.validate(next.as_str())?;
        }
        Err(ApiError::bad_request(
            "The external source redirected too many times.",
        ))
    }

    fn check_status(response: &Response) -> ApiResult<()> {
        match response.status() {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND | StatusCode::GONE => {
                Err(ApiError::not_found("The external source was not found."))
            }
            _ => Err(ApiError::bad_request(
                "The external source answered with an error.",
            )),
        }
    }

    /// The size the remote reports (`HEAD`), if it reports one.
    pub async fn probe_size(&self, url: &Url) -> ApiResult<Option<u64>> {
        let response = self.send(Method::HEAD, url.clone()).await?;
        Self::check_status(&response)?;
        Ok(response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    /// Opens the remote data as a stream, with its length when known.
    pub async fn open(&self, url: &Url) -> ApiResult<(ByteStream, Option<u64>)> {
        let response = self.send(Method::GET, url.clone()).await?;
        Self::check_status(&response)?;
        let len = response.content_length();
        let body = response.bytes_stream().map_err(std::io::Error::other);
        Ok((Box::pin(body), len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(policy: RemoteSources) -> RemoteClient {
        RemoteClient::new(policy, &["http://127.0.0.1:8333".to_owned()]).unwrap()
    }

    #[test]
    fn public_policy_refuses_internal_hosts() {
        let c = client(RemoteSources::Public);
        for bad in [
            "http://127.0.0.1/x",
            "http://localhost/x",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/x",
            "http://192.168.1.1/x",
            "http://[::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://0.0.0.0/x",
            "file:///etc/passwd",
            "ftp://example.com/x",
            "http://user:pw@example.com/x",
            "",
        ] {
            assert!(c.validate(bad).is_err(), "{bad}");
        }
        assert!(c.validate("https://example.com/image.qcow2").is_ok());
    }

    #[test]
    fn any_allows_loopback_but_not_our_own_stores() {
        let c = client(RemoteSources::Any);
        assert!(c.validate("http://127.0.0.1:8000/x").is_ok());
        assert!(c.validate("http://127.0.0.1:8333/bucket/key").is_err());
        assert!(client(RemoteSources::Off)
            .validate("https://example.com/x")
            .is_err());
    }

    #[test]
    fn refusals_do_not_echo_paths_or_credentials() {
        let c = client(RemoteSources::Public);
        let e = c.validate("http://user:secret@example.com/x").unwrap_err();
        assert!(!e.message.contains("secret"));
        let e = c.validate("http://127.0.0.1/path?token=abc").unwrap_err();
        assert!(!e.message.contains("token"));
    }
}
