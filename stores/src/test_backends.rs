//! The real S3-compatible server and Swift the integration tests run against, as named by
//! environment variables (`eval "$(scripts/s3-backend.sh start)"`, `scripts/swift-backend.sh`),
//! and a plain Swift client for checking what a store left behind. Shared by this crate's tests
//! and the gateway's HTTP tests.

/// `GATEWAY_TEST_S3_*`: the S3 endpoint, region, bucket and keys.
#[derive(Debug, Clone)]
pub struct S3TestEnv {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

impl S3TestEnv {
    /// `None` when `GATEWAY_TEST_S3_ENDPOINT` is unset (the tests then skip; see [`gate`]).
    pub fn from_env() -> Option<Self> {
        let (endpoint, [bucket, access_key, secret_key]) = gate_with(
            "GATEWAY_TEST_S3_ENDPOINT",
            [
                "GATEWAY_TEST_S3_BUCKET",
                "GATEWAY_TEST_S3_ACCESS_KEY",
                "GATEWAY_TEST_S3_SECRET_KEY",
            ],
        )?;
        let region = std::env::var("GATEWAY_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into());
        Some(Self {
            endpoint,
            region,
            bucket,
            access_key,
            secret_key,
        })
    }
}

/// `GATEWAY_TEST_SWIFT_*`: the v1 auth URL, user and key.
#[derive(Debug, Clone)]
pub struct SwiftTestEnv {
    pub auth_url: String,
    pub user: String,
    pub key: String,
}

impl SwiftTestEnv {
    /// `None` when `GATEWAY_TEST_SWIFT_AUTH_URL` is unset (the tests then skip; see [`gate`]).
    pub fn from_env() -> Option<Self> {
        let (auth_url, [user, key]) = gate_with(
            "GATEWAY_TEST_SWIFT_AUTH_URL",
            ["GATEWAY_TEST_SWIFT_USER", "GATEWAY_TEST_SWIFT_KEY"],
        )?;
        Some(Self {
            auth_url,
            user,
            key,
        })
    }
}

/// Whether a backend test must run: with `GATEWAY_TEST_REQUIRE_BACKENDS=1` (CI sets it) a
/// missing backend fails the test instead of skipping it, so a misnamed variable cannot turn the
/// backend tests green without running them.
pub fn backends_required() -> bool {
    std::env::var("GATEWAY_TEST_REQUIRE_BACKENDS").as_deref() == Ok("1")
}

/// The variable that names a backend: `None` when unset, so the backend's tests skip, unless
/// [`backends_required`], which turns the skip into a panic.
pub fn gate(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) => Some(value),
        Err(_) if backends_required() => {
            panic!("{name} is not set, and GATEWAY_TEST_REQUIRE_BACKENDS=1 forbids skipping")
        }
        Err(_) => None,
    }
}

/// The [`gate`] variable of a backend and those that must be set along with it.
fn gate_with<const N: usize>(name: &str, along: [&str; N]) -> Option<(String, [String; N])> {
    let value = gate(name)?;
    let along = along.map(|other| {
        std::env::var(other).unwrap_or_else(|_| panic!("{name} is set but {other} is not"))
    });
    Some((value, along))
}

/// Swift as seen without any store: tempauth, then plain requests with the token.
pub struct SwiftRaw {
    client: reqwest::Client,
    pub storage_url: String,
    pub token: String,
}

impl SwiftRaw {
    pub async fn new(env: &SwiftTestEnv) -> Self {
        let client = reqwest::Client::new();
        let response = client
            .get(&env.auth_url)
            .header("X-Auth-User", &env.user)
            .header("X-Auth-Key", &env.key)
            .send()
            .await
            .expect("auth");
        assert!(
            response.status().is_success(),
            "auth: {}",
            response.status()
        );
        let h = |n: &str| response.headers()[n].to_str().unwrap().to_owned();
        Self {
            storage_url: h("x-storage-url"),
            token: h("x-auth-token"),
            client,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.storage_url)
    }

    /// Object names under `prefix` in `container`; a missing container lists as empty.
    pub async fn list(&self, container: &str, prefix: &str) -> Vec<String> {
        let response = self
            .client
            .get(self.url(container))
            .query(&[("format", "json"), ("prefix", prefix)])
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .unwrap();
        if response.status() == 404 || response.status() == 204 {
            return vec![];
        }
        assert!(
            response.status().is_success(),
            "list: {}",
            response.status()
        );
        let entries: Vec<serde_json::Value> = response.json().await.unwrap();
        entries
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn put(&self, path: &str, data: Vec<u8>) {
        let response = self
            .client
            .put(self.url(path))
            .header("X-Auth-Token", &self.token)
            .body(data)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "put: {}", response.status());
    }

    pub async fn head(&self, path: &str) -> reqwest::Response {
        self.client
            .head(self.url(path))
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str, query: &[(&str, &str)]) {
        let response = self
            .client
            .delete(self.url(path))
            .query(query)
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "delete: {}",
            response.status()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_backend_skips_only_when_not_required() {
        let unset = "GATEWAY_TEST_NO_SUCH_BACKEND_VARIABLE";
        let result = std::panic::catch_unwind(|| gate(unset));
        match result {
            Ok(value) => assert!(value.is_none() && !backends_required()),
            Err(_) => assert!(backends_required()),
        }
    }
}
