//! Remote image sources: `http(s)` URLs given as `x-image-meta-location` (data read from there on
//! download) or `x-glance-api-copy-from` (copied into our own store). Governed by
//! `remote_sources`: with `public`, only hosts resolving to public addresses are contacted —
//! checked at connect time by the resolver and on every redirect, so neither a redirect nor DNS
//! rebinding can reach loopback, private ranges or instance metadata.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use futures::TryStreamExt;
use reqwest::dns::{Name, Resolve, Resolving};
use reqwest::header::{CONTENT_LENGTH, LOCATION};
use reqwest::{Method, Response};
use stores::{ByteStream, Store};
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
                || (o[0] == 198 && (o[1] & 0xFE) == 18) // benchmarking, 198.18.0.0/15
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            if seg[0] == 0x2002 {
                // 6to4: the IPv4 address it carries decides.
                let [a, b] = seg[1].to_be_bytes();
                let [c, d] = seg[2].to_be_bytes();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || seg[..6].iter().all(|s| *s == 0) // IPv4-compatible, ::/96
                || (seg[0] & 0xfe00) == 0xfc00 // unique local
                || (seg[0] & 0xffc0) == 0xfe80 // link local
                || (seg[0] & 0xffc0) == 0xfec0 // site local (deprecated), fec0::/10
                || (seg[0] == 0x64 && seg[1] == 0xff9b) // NAT64 of anything
                || (seg[0] == 0x2001 && seg[1] == 0) // Teredo: a tunnel to anywhere
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
    /// Our own stores, whose endpoints are never valid remote sources. Asked on every check:
    /// a Swift store's storage URL changes with each token.
    stores: Arc<Vec<Arc<dyn Store>>>,
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

/// Where an address leads: loopback and unspecified addresses (any spelling, IPv4-mapped or
/// not) all reach this host, so they compare as one.
fn canonical(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        ip => ip,
    };
    let ip = if ip.is_loopback() || ip.is_unspecified() {
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        ip
    };
    SocketAddr::new(ip, addr.port())
}

/// The addresses a URL's host and port resolve to, canonical; none when it does not resolve.
async fn resolve(url: &Url) -> HashSet<SocketAddr> {
    let Some(port) = url.port_or_known_default() else {
        return HashSet::new();
    };
    let host = match url.host() {
        Some(url::Host::Ipv4(ip)) => return HashSet::from([canonical((ip, port).into())]),
        Some(url::Host::Ipv6(ip)) => return HashSet::from([canonical((ip, port).into())]),
        Some(url::Host::Domain(d)) => d.to_owned(),
        None => return HashSet::new(),
    };
    let resolved = tokio::net::lookup_host((host.as_str(), port)).await;
    match resolved {
        Ok(addrs) => addrs.map(canonical).collect(),
        Err(_) => HashSet::new(),
    }
}

impl RemoteClient {
    /// `proxy`: the proxy remote sources are fetched through; without one the client connects
    /// directly, whatever `HTTP_PROXY` / `HTTPS_PROXY` say.
    pub fn new(
        policy: RemoteSources,
        proxy: Option<&str>,
        stores: Vec<Arc<dyn Store>>,
    ) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("glance-gateway/", env!("CARGO_PKG_VERSION")));
        if policy == RemoteSources::Public {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        builder = match proxy {
            Some(proxy) => builder.proxy(reqwest::Proxy::all(proxy)?),
            None => builder.no_proxy(),
        };
        Ok(Self {
            policy,
            client: builder.build()?,
            stores: Arc::new(stores),
        })
    }

    /// Our stores' endpoints, as URLs.
    fn own_endpoints(&self) -> Vec<Url> {
        self.stores
            .iter()
            .flat_map(|s| s.endpoints())
            .filter_map(|e| Url::parse(&e).ok())
            .collect()
    }

    /// Refuses a URL that reaches one of our stores by address: `localhost`, `0.0.0.0` or
    /// `[::ffff:127.0.0.1]` are the store at `127.0.0.1` all the same.
    async fn check_not_own_store(&self, url: &Url) -> ApiResult<()> {
        let target = resolve(url).await;
        if target.is_empty() {
            return Ok(());
        }
        for endpoint in self.own_endpoints() {
            if !resolve(&endpoint).await.is_disjoint(&target) {
                return Err(refused(url.as_str()));
            }
        }
        Ok(())
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
        let target = authority(&url);
        if self.own_endpoints().iter().any(|e| authority(e) == target) {
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
            self.check_not_own_store(&url).await?;
            let response = self
                .client
                .request(method.clone(), url.clone())
                .send()
                .await
                .map_err(|e| {
                    // The host only: a URL may carry tokens in its path or query.
                    let e = e.without_url();
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
        let body = response
            .bytes_stream()
            .map_err(|e| std::io::Error::other(e.without_url()));
        Ok((Box::pin(body), len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An S3 store whose endpoint is `http://127.0.0.1:8333` (opening it contacts nothing).
    async fn client(policy: RemoteSources) -> RemoteClient {
        let mut config = stores::s3::S3StoreConfig::new("images");
        config.endpoint = Some("http://127.0.0.1:8333".into());
        config.force_path_style = true;
        let name = stores::StoreName::parse("s3").unwrap();
        let store: Arc<dyn Store> =
            Arc::new(stores::s3::S3Store::open(name, &config).await.unwrap());
        RemoteClient::new(policy, None, vec![store]).unwrap()
    }
    #[tokio::test]
    async fn public_policy_refuses_internal_hosts() {
        let c = client(RemoteSources::Public).await;
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

    #[tokio::test]
    async fn any_allows_loopback_but_not_our_own_stores() {
        let c = client(RemoteSources::Any).await;
        assert!(c.validate("http://127.0.0.1:8000/x").is_ok());
        assert!(c.validate("http://127.0.0.1:8333/bucket/key").is_err());
        assert!(client(RemoteSources::Off)
            .await
            .validate("https://example.com/x")
            .is_err());
    }

    #[tokio::test]
    async fn our_stores_are_refused_by_address_whatever_the_spelling() {
        let c = client(RemoteSources::Any).await;
        for spelling in [
            "http://localhost:8333/bucket/key",
            "http://[::ffff:127.0.0.1]:8333/bucket/key",
            "http://[::1]:8333/bucket/key",
            "http://0.0.0.0:8333/bucket/key",
            "http://127.0.0.1:8333/bucket/key",
        ] {
            let url = Url::parse(spelling).unwrap();
            assert!(c.check_not_own_store(&url).await.is_err(), "{spelling}");
        }
        let other = Url::parse("http://localhost:8334/x").unwrap();
        assert!(c.check_not_own_store(&other).await.is_ok());
    }

    #[test]
    fn special_purpose_ranges_are_not_public() {
        for ip in [
            "fec0::1",
            "::7f00:1",
            "::a00:1",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2002:c0a8:101::",
            "198.18.0.1",
            "198.19.255.255",
            "2001:0:4136:e378::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["2002:808:808::", "198.20.0.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn refusals_do_not_echo_paths_or_credentials() {
        let c = client(RemoteSources::Public).await;
        let e = c.validate("http://user:secret@example.com/x").unwrap_err();
        assert!(!e.message.contains("secret"));
        let e = c.validate("http://127.0.0.1/path?token=abc").unwrap_err();
        assert!(!e.message.contains("token"));
    }
}
