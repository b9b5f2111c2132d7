//! The real `glance-gateway` binary killed with SIGKILL in the middle of an upload, then started
//! again on the same data directory and store: what was active stays active with the same bytes,
//! nothing is left `saving`, and the interrupted upload leaves nothing in the store. The store
//! specific checks (multipart uploads, segments) live beside each store's tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::common::*;

/// One run of the binary on a config file.
pub struct Gateway {
    child: Child,
    pub base: String,
    pub client: Client,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes the config file: `data_dir`, `default_store = "shared"` and `[stores.shared]` from
/// `store` (a JSON object of the store's keys, `kind` included).
pub fn write_config(dir: &Path, store: &Value) -> PathBuf {
    let config = serde_json::json!({
        "data_dir": dir.join("data"),
        "default_store": "shared",
        "stores": { "shared": store },
    });
    let text = toml::to_string(&config).expect("config as TOML");
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

impl Gateway {
    /// Starts the binary and waits until it answers.
    pub async fn start(config: &Path) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_glance-gateway"))
            .args(["serve", "--config"])
            .arg(config)
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the gateway binary");
        let gateway = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = gateway.client.get(gateway.url("/v1/images")).send().await {
                if r.status().is_success() {
                    return gateway;
                }
            }
            assert!(Instant::now() < deadline, "the gateway did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no cleanup of any kind runs.
    pub async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// Uploads `data` as a new image; returns its id.
    pub async fn upload(&self, data: &[u8]) -> String {
        let resp = self
            .client
            .post(self.url("/v1/images"))
            .headers(meta_headers(&[
                ("x-image-meta-name", "crash"),
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
            ]))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["image"]["status"], "active");
        v["image"]["id"].as_str().unwrap().to_owned()
    }

    /// Starts an upload of `id` declaring `declared` bytes, sends `sent` of them and leaves the
    /// connection open (the caller kills the gateway meanwhile).
    pub async fn start_upload(&self, id: &str, declared: usize, sent: &[u8]) -> TcpStream {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let head = format!(
            "POST /v1/images HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/octet-stream\r\nx-image-meta-id: {id}\r\n\
             x-image-meta-disk_format: raw\r\nx-image-meta-container_format: bare\r\n\
             Content-Length: {declared}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(sent).await.unwrap();
        stream
    }

    pub async fn image(&self, id: &str) -> Value {
        let resp = self
            .client
            .get(self.url(&format!("/v1/images/{id}")))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        if status == 404 {
            return Value::Null;
        }
        assert_eq!(status, 200);
        let checksum = header(&resp, "x-image-meta-checksum");
        let state = header(&resp, "x-image-meta-status");
        let data = resp.bytes().await.unwrap();
        serde_json::json!({ "status": state, "checksum": checksum, "md5": md5_hex(&data) })
    }

    /// The image's status as the detail listing shows it (deleted and killed ones included).
    pub async fn status_of(&self, id: &str) -> String {
        let resp = self
            .client
            .head(self.url(&format!("/v1/images/{id}")))
            .send()
            .await
            .unwrap();
        header(&resp, "x-image-meta-status").unwrap_or_default()
    }
}

/// The whole scenario on one store: an image made active, a second upload in flight killed with
/// SIGKILL once `reached_store(id)` says its data reached the backend, a restart. Returns the
/// (still running) restarted gateway and the ids of the active and the interrupted image.
pub async fn kill_mid_upload<F, Fut>(store: Value, size: usize, reached_store: F) -> Restarted
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &store);
    let gateway = Gateway::start(&config).await;
    let kept_data = pattern(size);
    let kept = gateway.upload(&kept_data).await;

    let interrupted = uuid::Uuid::new_v4().to_string();
    let data = pattern(3 * size);
    let stream = gateway
        .start_upload(&interrupted, data.len(), &data[..2 * size])
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reached_store(interrupted.clone()).await {
        assert!(
            Instant::now() < deadline,
            "the upload never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gateway.status_of(&interrupted).await, "saving");
    gateway.kill9().await;
    drop(stream);

    let gateway = Gateway::start(&config).await;
    // No active image lost, no wrong byte.
    let image = gateway.image(&kept).await;
    assert_eq!(image["status"], "active");
    assert_eq!(image["md5"], md5_hex(&kept_data));
    assert_eq!(image["checksum"], md5_hex(&kept_data));
    // Nothing left saving.
    assert_eq!(gateway.status_of(&interrupted).await, "killed");
    Restarted {
        gateway,
        kept,
        interrupted,
        _dir: dir,
    }
}

pub struct Restarted {
    pub gateway: Gateway,
    pub kept: String,
    pub interrupted: String,
    _dir: tempfile::TempDir,
}

/// A TCP proxy in front of a real backend that can play its death: once armed, the next
/// connection to carry `limit` bytes from the backend is cut there, and every connection after
/// that is refused, as if the server had died in the middle of an answer.
pub struct DyingProxy {
    pub addr: std::net::SocketAddr,
    limit: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Bumped by each arming, so bytes count from then on.
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DyingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DyingProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        use tokio::io::AsyncReadExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limit = Arc::new(AtomicU64::new(u64::MAX));
        let dead = Arc::new(AtomicBool::new(false));
        let armed = Arc::clone(&limit);
        let generation = Arc::new(AtomicU64::new(0));
        let armings = Arc::clone(&generation);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if dead.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (limit, dead) = (Arc::clone(&armed), Arc::clone(&dead));
                let armings = Arc::clone(&armings);
                tokio::spawn(async move {
                    let (mut client_rd, mut client_wr) = client.into_split();
                    let (mut server_rd, mut server_wr) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_rd, &mut server_wr).await;
                        let _ = server_wr.shutdown().await;
                    });
                    let (mut carried, mut seen) = (0u64, armings.load(Ordering::SeqCst));
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match server_rd.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let now = armings.load(Ordering::SeqCst);
                        if now != seen {
                            (carried, seen) = (0, now);
                        }
                        let left = limit.load(Ordering::SeqCst).saturating_sub(carried);
                        let take = (n as u64).min(left) as usize;
                        if client_wr.write_all(&buf[..take]).await.is_err() {
                            break;
                        }
                        carried += take as u64;
                        if take < n || left == take as u64 {
                            // The backend dies: this answer stops here, and so does everything.
                            dead.store(true, Ordering::SeqCst);
                            up.abort();
                            return; // both halves dropped: the gateway sees the connection end
                        }
                    }
                    let _ = client_wr.shutdown().await;
                    let _ = up.await;
                });
            }
        });
        Self {
            addr,
            limit,
            generation,
            task,
        }
    }

    /// The next connection dies after carrying `bytes` from the backend.
    pub fn die_after(&self, bytes: u64) {
        use std::sync::atomic::Ordering;
        self.limit.store(bytes, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// Downloads `id` and asserts the client sees the answer cut: a 200 whose body ends before the
/// image does, never a complete-looking one.
pub async fn assert_download_is_cut(app: &TestApp, id: &str, len: usize) {
    let resp = app.get(&format!("/v1/images/{id}")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp;
    let mut got = 0usize;
    let outcome = loop {
        match body.chunk().await {
            Ok(Some(chunk)) => got += chunk.len(),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(got < len, "the whole image arrived ({got} bytes)");
    assert!(
        outcome.is_err(),
        "the download ended cleanly after {got} of {len} bytes"
    );
}

/// A proxy in front of a real backend that answers 403 (S3's AccessDenied) to the requests
/// `refuse` picks by their request line, while `refusing` is set, as a backend would for
/// credentials without that permission. Every other request goes through, one per connection (the
/// proxy asks the backend to close after each answer, so no request slips past unexamined).
pub struct RefusingProxy {
    pub addr: std::net::SocketAddr,
    refusing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RefusingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RefusingProxy {
    pub async fn start(
        upstream: std::net::SocketAddr,
        refuse: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        use tokio::io::AsyncReadExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refusing = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&refusing);
        let refuse = Arc::new(refuse);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let (flag, refuse) = (Arc::clone(&flag), Arc::clone(&refuse));
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match client.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let request_line = text.lines().next().unwrap_or_default().to_owned();
                    if flag.load(Ordering::SeqCst) && refuse(&request_line) {
                        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                            <Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
                        let answer = format!(
                            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = client.write_all(answer.as_bytes()).await;
                        return;
                    }
                    let mut forwarded: String = text
                        .split_inclusive("\r\n")
                        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                        .collect();
                    forwarded.truncate(forwarded.len() - 2);
                    forwarded.push_str("Connection: close\r\n\r\n");
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    if server.write_all(forwarded.as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Self {
            addr,
            refusing,
            task,
        }
    }

    pub fn refuse(&self, on: bool) {
        self.refusing.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}
