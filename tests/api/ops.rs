//! Operating the gateway: the health check, the admin listener and its metrics, JSON logs,
//! graceful shutdown of the real binary, and the `check-config` / `healthcheck` subcommands.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glance_gateway::model::ImageId;
use glance_gateway::registry::Registry;
use prom_text_format_parser::{Sample, Scrape, Type, ValueType};
use serde_json::Value;
use stores::s3::S3StoreConfig;
use stores::StoreConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_glance-gateway");

// --- the health check ---

#[tokio::test]
async fn healthcheck_answers_ok_and_503_while_the_disable_file_exists() {
    let dir = tempfile::tempdir().unwrap();
    let drain = dir.path().join("drain");
    // Trusted-headers mode: the health check needs no identity.
    let app = TestApp::builder()
        .trusted_headers()
        .healthcheck_disable_file(&drain)
        .spawn()
        .await;
    let resp = app.get("/healthcheck").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(resp.text().await.unwrap(), "OK");
    let resp = app.head("/healthcheck").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().is_empty());

    std::fs::write(&drain, "").unwrap();
    let (code, text) = send(app.get("/healthcheck")).await;
    assert_eq!((code, text.as_str()), (503, "DISABLED BY FILE"));
    assert_eq!(status(app.head("/healthcheck")).await, 503);

    std::fs::remove_file(&drain).unwrap();
    assert_eq!(send(app.get("/healthcheck")).await, (200, "OK".to_owned()));
    assert_eq!(status(app.post("/healthcheck")).await, 405);
    // Not the version document, and not an image API path.
    assert_eq!(status(app.get("/healthcheck/x")).await, 300);
}

// --- metrics ---

async fn scrape_metrics(app: &TestApp) -> (String, Scrape) {
    let resp = app
        .client
        .get(format!("{}/metrics", app.admin_base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.unwrap();
    let scrape = Scrape::parse(&text).unwrap_or_else(|e| panic!("{e:?}: {text}"));
    (text, scrape)
}

/// The samples of family `name` of `kind` and `value_type` that carry `labels`.
fn find<'a>(
    scrape: &'a Scrape,
    name: &str,
    kind: Type,
    value_type: ValueType,
    labels: &[(&str, &str)],
) -> Vec<&'a Sample> {
    scrape
        .metrics
        .iter()
        .filter(|m| m.name == name)
        .inspect(|m| assert_eq!(m.kind, kind, "{name}"))
        .flat_map(|m| &m.samples)
        .filter(|s| s.value.value_type == value_type)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|l| l.key == *k && l.value == *v))
        })
        .collect()
}

fn one(found: Vec<&Sample>, what: &str) -> f64 {
    match found.as_slice() {
        [] => 0.0,
        [s] => s.value.value.as_f64(),
        more => panic!("{what} matches {more:?}"),
    }
}

fn counter(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = find(scrape, name, Type::Counter, ValueType::Sample, labels);
    one(found, name)
}

fn gauge(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = find(scrape, name, Type::Gauge, ValueType::Sample, labels);
    one(found, name)
}

fn histogram(scrape: &Scrape, name: &str, value_type: ValueType, labels: &[(&str, &str)]) -> f64 {
    let found = find(scrape, name, Type::Histogram, value_type, labels);
    one(found, name)
}

/// An S3 store whose endpoint refuses connections.
fn unreachable_s3() -> StoreConfig {
    let port = REFUSED_PORT;
    let mut c = S3StoreConfig::new("nowhere".to_owned());
    c.endpoint = Some(format!("http://127.0.0.1:{port}"));
    c.region = Some("us-east-1".to_owned());
    c.force_path_style = true;
    c.access_key_id = Some("AKIDUNUSED".into());
    c.secret_access_key = Some("unused-secret".into());
    c.max_attempts = 1;
    StoreConfig::S3(c)
}

#[tokio::test]
async fn metrics_count_known_traffic_by_route_template() {
    let app = TestApp::builder()
        .store("down", unreachable_s3())
        .spawn()
        .await;
    let data = pattern(100_000);
    let a = app.public_image("a", &data).await;
    let b = app.public_image("b", &data[..1000]).await;
    for _ in 0..3 {
        let body = app.get(&format!("/v1/images/{a}")).send().await.unwrap();
        assert_eq!(body.bytes().await.unwrap().len(), data.len());
    }
    assert_eq!(status(app.head(&format!("/v1/images/{b}"))).await, 200);
    let missing = uuid::Uuid::new_v4();
    assert_eq!(status(app.get(&format!("/v1/images/{missing}"))).await, 404);
    assert_eq!(status(app.get("/v1/images/detail")).await, 200);
    assert_eq!(status(app.get("/healthcheck")).await, 200);
    // An upload to a store that is down: a store error, not a client one.
    let resp = app
        .post("/v1/images")
        .headers(meta_headers(&[
            ("x-image-meta-name", "down"),
            ("x-image-meta-disk_format", "raw"),
            ("x-image-meta-container_format", "bare"),
            ("x-image-meta-store", "down"),
            ("content-type", "application/octet-stream"),
        ]))
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);

    let (text, scrape) = scrape_metrics(&app).await;
    for id in [&a, &b] {
        assert!(!text.contains(id.as_str()), "an image id is a label value");
    }
    let requests = "glance_gateway_http_requests_total";
    let req = |method, route, status| {
        counter(
            &scrape,
            requests,
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(req("POST", "/v1/images", "201"), 2.0);
    assert_eq!(req("POST", "/v1/images", "503"), 1.0);
    assert_eq!(req("GET", "/v1/images/{id}", "200"), 3.0);
    assert_eq!(req("GET", "/v1/images/{id}", "404"), 1.0);
    assert_eq!(req("HEAD", "/v1/images/{id}", "200"), 1.0);
    assert_eq!(req("GET", "/v1/images/detail", "200"), 1.0);
    assert_eq!(req("GET", "/healthcheck", "200"), 1.0);
    let duration = "glance_gateway_http_request_duration_seconds";
    let count = |method, route| {
        histogram(
            &scrape,
            duration,
            ValueType::Count,
            &[("method", method), ("route", route)],
        )
    };
    assert_eq!(count("GET", "/v1/images/{id}"), 4.0);
    assert_eq!(count("POST", "/v1/images"), 3.0);

    let bytes = "glance_gateway_store_bytes_total";
    let total_in = (data.len() + 1000) as f64;
    assert_eq!(
        counter(&scrape, bytes, &[("store", "file"), ("direction", "in")]),
        total_in
    );
    assert_eq!(
        counter(&scrape, bytes, &[("store", "file"), ("direction", "out")]),
        (3 * data.len()) as f64
    );
    let ops = "glance_gateway_store_operation_duration_seconds";
    let op = |store, operation| {
        histogram(
            &scrape,
            ops,
            ValueType::Count,
            &[("store", store), ("operation", operation)],
        )
    };
    assert_eq!(op("file", "put"), 2.0);
    assert_eq!(op("file", "get"), 3.0);
    assert!(op("down", "health_check") >= 1.0);
    let errors = "glance_gateway_store_errors_total";
    assert_eq!(
        counter(&scrape, errors, &[("store", "file"), ("operation", "get")]),
        0.0
    );
    assert_eq!(
        counter(&scrape, errors, &[("store", "down"), ("operation", "put")]),
        1.0
    );
    assert!(
        counter(
            &scrape,
            errors,
            &[("store", "down"), ("operation", "health_check")]
        ) >= 1.0
    );
    assert_eq!(
        gauge(&scrape, "glance_gateway_store_up", &[("store", "file")]),
        1.0
    );
    assert_eq!(
        gauge(&scrape, "glance_gateway_store_up", &[("store", "down")]),
        0.0
    );
    // The S3 store's part budget: its limit, and nothing held once its failed upload is over;
    // the file store has none.
    let part_memory = "glance_gateway_store_part_memory_bytes";
    let part_limit = "glance_gateway_store_part_memory_limit_bytes";
    assert_eq!(
        gauge(&scrape, part_limit, &[("store", "down")]),
        (1u64 << 30) as f64
    );
    assert_eq!(gauge(&scrape, part_memory, &[("store", "down")]), 0.0);
    let file_limit = find(
        &scrape,
        part_limit,
        Type::Gauge,
        ValueType::Sample,
        &[("store", "file")],
    );
    assert!(file_limit.is_empty(), "{file_limit:?}");
    assert_eq!(
        gauge(&scrape, "glance_gateway_uploads_in_progress", &[]),
        0.0
    );
    let build = find(
        &scrape,
        "glance_gateway_build_info",
        Type::Gauge,
        ValueType::Sample,
        &[("version", env!("CARGO_PKG_VERSION"))],
    );
    assert_eq!(build.len(), 1);
    assert_eq!(build[0].value.value.as_f64(), 1.0);
    assert!(build[0]
        .labels
        .iter()
        .any(|l| l.key == "commit" && !l.value.is_empty()));
    // Metrics live on the admin listener only.
    assert_ne!(status(app.get("/metrics")).await, 200);
}

#[tokio::test]
async fn request_duration_runs_to_the_end_of_the_body_and_uploads_in_progress_are_counted() {
    let app = TestApp::spawn().await;
    // Larger than the loopback socket buffers, so the client's pause holds the server back.
    let data = pattern(24 << 20);
    let id = app.public_image("big", &data).await;
    let mut stream = app.connect().await;
    stream
        .write_all(
            format!("GET /v1/images/{id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut first = vec![0u8; 64 * 1024];
    stream.read_exact(&mut first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(first.len() + rest.len() > data.len());

    // An upload that has started and not finished.
    let upload_id = uuid::Uuid::new_v4().to_string();
    let mut upload = app.connect().await;
    upload
        .write_all(post_head(&upload_id, 1_000_000).as_bytes())
        .await
        .unwrap();
    upload.write_all(&[7u8; 10_000]).await.unwrap();
    app.wait_for_status(&upload_id, "saving").await;

    let (_, scrape) = scrape_metrics(&app).await;
    let labels = [("method", "GET"), ("route", "/v1/images/{id}")];
    let sum = histogram(
        &scrape,
        "glance_gateway_http_request_duration_seconds",
        ValueType::Sum,
        &labels,
    );
    assert!(sum >= 1.5, "the download was timed {sum} s");
    assert_eq!(
        gauge(&scrape, "glance_gateway_uploads_in_progress", &[]),
        1.0
    );
    drop(upload);
    app.wait_for_status(&upload_id, "killed").await;
    // The image is marked killed before its upload's handler has returned, and the upload
    // counts as in progress until then.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, scrape) = scrape_metrics(&app).await;
        let in_progress = gauge(&scrape, "glance_gateway_uploads_in_progress", &[]);
        if in_progress == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the killed upload still counts as in progress: {in_progress}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn admin_listener_requires_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let app = TestApp::builder()
        .admin_token_file(&token_file)
        .spawn()
        .await;
    let url = format!("{}/metrics", app.admin_base);
    let get = |auth: Option<&str>| {
        let mut req = app.client.get(&url);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        req.send()
    };
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cret-tokenx"),
        Some("Basic s3cret-token"),
    ] {
        let resp = get(auth).await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        let body = resp.text().await.unwrap();
        assert!(!body.contains("s3cret"), "{body}");
    }
    let resp = get(Some("Bearer s3cret-token")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("glance_gateway_build_info"));
}

// --- the real binary ---

fn post_head(id: &str, len: usize) -> String {
    format!(
        "POST /v1/images HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {len}\r\n\
         x-image-meta-id: {id}\r\nx-image-meta-disk_format: raw\r\n\
         x-image-meta-container_format: bare\r\n\r\n"
    )
}

/// `glance-gateway serve` as a child process with JSON logs, on free loopback ports.
struct Gateway {
    child: Child,
    api: SocketAddr,
    admin: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl Gateway {
    fn start(extra_config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gateway.toml");
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        // `@DATA@` in the extra lines is the data directory.
        let extra = extra_config.replace("@DATA@", data);
        std::fs::write(
            &config,
            format!(
                "bind = \"127.0.0.1:0\"\nadmin_bind = \"127.0.0.1:0\"\nlog_format = \"json\"\n\
                 data_dir = {data:?}\n{extra}"
            ),
        )
        .unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gateway");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let listening = loop {
            let found = lines
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["message"] == "glance-gateway listening");
            if let Some(v) = found {
                break v;
            }
            assert!(
                Instant::now() < deadline,
                "no listening line: {:?}",
                lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let addr = |k: &str| listening[k].as_str().unwrap().parse().unwrap();
        Self {
            api: addr("api"),
            admin: addr("admin"),
            child,
            lines,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    /// Waits for the process to exit; its exit code.
    fn wait(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().expect("exited, not killed by a signal");
            }
            assert!(Instant::now() < deadline, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn json_lines(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn image_status(data: &Path, id: &str) -> Option<String> {
    let registry = Registry::open(&data.join("registry")).unwrap();
    let id = ImageId::parse(id).unwrap();
    registry
        .get(&id)
        .await
        .unwrap()
        .map(|s| s.record.status.as_str().to_owned())
}

fn leftover_files(data: &Path) -> Vec<PathBuf> {
    let tmp: Vec<PathBuf> = std::fs::read_dir(data.join("images").join(".tmp"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    tmp
}

#[tokio::test]
async fn json_log_lines_parse_and_carry_the_request_id() {
    let gateway = Gateway::start(
        "[stores.file]\nkind = \"file\"\nroot = \"@DATA@/images\"\n\
         [stores.down]\nkind = \"s3\"\nbucket = \"nowhere\"\nendpoint = \"http://127.0.0.1:9\"\n\
         region = \"us-east-1\"\nforce_path_style = true\naccess_key_id = \"AKIDUNUSED\"\n\
         secret_access_key = \"never-logged-secret\"\nmax_attempts = 1\n",
    );
    let client = reqwest::Client::new();
    let resp = client
        .post(gateway.url("/v1/images"))
        .header("x-openstack-request-id", "req-ops-json-1")
        .header("x-image-meta-name", "n")
        .header("x-image-meta-disk_format", "raw")
        .header("x-image-meta-container_format", "bare")
        .header("x-image-meta-store", "down")
        .header("content-type", "application/octet-stream")
        .body(vec![0u8; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let id = uuid::Uuid::new_v4();
    let resp = client
        .get(gateway.url(&format!("/v1/images/{id}")))
        .header("x-openstack-request-id", "req-ops-json-2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // The access line is written once the body has gone; give it a moment.
    let mut lines = vec![];
    for _ in 0..100 {
        lines = gateway.json_lines();
        if lines.iter().filter(|l| l["message"] == "served").count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let raw = gateway.lines.lock().unwrap().join("\n");
    assert!(!raw.contains("never-logged-secret"));
    let of = |req: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["span"]["request_id"] == req)
            .collect()
    };
    let first = of("req-ops-json-1");
    let error = first
        .iter()
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no error line carries the request id: {raw}"));
    assert!(
        error["detail"].as_str().unwrap().contains("down"),
        "{error}"
    );
    let access = first
        .iter()
        .find(|l| l["message"] == "served")
        .expect("access line");
    assert_eq!(access["method"], "POST");
    assert_eq!(access["path"], "/v1/images");
    assert_eq!(access["status"], 503);
    assert_eq!(access["bytes_in"], 5000);

    let second = of("req-ops-json-2");
    let access = second
        .iter()
        .find(|l| l["message"] == "served")
        .expect("access line");
    assert_eq!(access["path"], format!("/v1/images/{id}"));
    assert_eq!(access["status"], 404);
    assert_eq!(access["image"], id.to_string());
    assert!(access["duration_ms"].as_f64().is_some());
    // A client that goes away mid-upload: the cleanup's lines keep the request id.
    let cut = uuid::Uuid::new_v4().to_string();
    let mut stream = TcpStream::connect(gateway.api).await.unwrap();
    let head = post_head(&cut, 1_000_000).replace(
        "Connection: close\r\n",
        "Connection: close\r\nx-openstack-request-id: req-ops-json-3\r\n",
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[5u8; 200_000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);
    let mut cut_lines = vec![];
    for _ in 0..200 {
        cut_lines = gateway
            .json_lines()
            .into_iter()
            .filter(|l| l["span"]["request_id"] == "req-ops-json-3")
            .collect();
        if cut_lines.iter().any(|l| l["message"] == "served") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        cut_lines.iter().any(|l| l["message"] != "served"),
        "the failure is logged under the request id: {cut_lines:?}"
    );
    let access = cut_lines
        .iter()
        .find(|l| l["message"] == "served")
        .expect("access line");
    assert_eq!(access["bytes_in"], 200_000);
    // The background delete after the failed store write (a spawned task) keeps the request id.
    let lines = gateway.json_lines();
    assert!(
        lines.iter().any(|l| {
            l["message"] == "could not remove partial image data; the sweep will"
                && l["span"]["request_id"] == "req-ops-json-1"
        }),
        "{lines:?}"
    );

    // Startup names the configuration, the registry and each store, without credentials.
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    for m in [
        "configuration file",
        "registry opened",
        "glance-gateway listening",
    ] {
        assert!(messages.contains(&m), "{m}: {messages:?}");
    }
    let stores: Vec<&str> = lines.iter().filter_map(|l| l["store"].as_str()).collect();
    assert!(
        stores.contains(&"file") && stores.contains(&"down"),
        "{stores:?}"
    );
}

#[tokio::test]
async fn sigterm_lets_an_upload_in_flight_finish_and_refuses_new_connections() {
    let mut gateway = Gateway::start("shutdown_timeout = 30\n");
    let id = uuid::Uuid::new_v4().to_string();
    let data = pattern(2_000_000);
    let mut stream = TcpStream::connect(gateway.api).await.unwrap();
    stream
        .write_all(post_head(&id, data.len()).as_bytes())
        .await
        .unwrap();
    stream.write_all(&data[..500_000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway.signal("TERM");
    // The listener closes; the upload goes on.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(gateway.api).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        gateway.child.try_wait().unwrap().is_none(),
        "exited mid-upload"
    );
    stream.write_all(&data[500_000..]).await.unwrap();
    let response = read_response(&mut stream).await;
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(gateway.wait(Duration::from_secs(20)), 0);
    assert_eq!(
        image_status(&gateway.data(), &id).await.as_deref(),
        Some("active")
    );
    let stored = std::fs::read(gateway.data().join("images").join(&id)).unwrap();
    assert!(stored == data);
}

#[tokio::test]
async fn sigterm_cuts_an_upload_past_the_shutdown_timeout_and_cleans_it_up() {
    let mut gateway = Gateway::start("shutdown_timeout = 1\n");
    let id = uuid::Uuid::new_v4().to_string();
    let mut stream = TcpStream::connect(gateway.api).await.unwrap();
    stream
        .write_all(post_head(&id, 2_000_000).as_bytes())
        .await
        .unwrap();
    stream.write_all(&[1u8; 300_000]).await.unwrap();
    // Let the gateway start storing before the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    gateway.signal("TERM");
    assert_eq!(gateway.wait(Duration::from_secs(15)), 0);
    let took = signalled.elapsed();
    assert!(took >= Duration::from_millis(900), "exited after {took:?}");
    let response = read_response(&mut stream).await;
    assert_ne!(response.status, 201);
    assert_eq!(
        image_status(&gateway.data(), &id).await.as_deref(),
        Some("killed")
    );
    assert!(!gateway.data().join("images").join(&id).exists());
    assert_eq!(leftover_files(&gateway.data()), Vec::<PathBuf>::new());
    let lines = gateway.json_lines();
    assert!(lines
        .iter()
        .any(|l| l["message"] == "shutting down" && l["signal"] == "SIGTERM"));
    assert!(lines.iter().any(|l| l["message"] == "stopped"));
}

#[tokio::test]
async fn sigint_on_an_idle_gateway_exits_zero_at_once() {
    let mut gateway = Gateway::start("");
    let client = reqwest::Client::new();
    let resp = client
        .get(gateway.url("/healthcheck"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "OK");
    let metrics = client
        .get(format!("http://{}/metrics", gateway.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let started = Instant::now();
    gateway.signal("INT");
    assert_eq!(gateway.wait(Duration::from_secs(10)), 0);
    assert!(started.elapsed() < Duration::from_secs(5));
}

// --- check-config, healthcheck, --version ---

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("GLANCE_GATEWAY_CONFIG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}

#[tokio::test]
async fn check_config_names_what_fails_and_tolerates_a_running_gateway() {
    let gateway = Gateway::start(
        "[stores.file]\nkind = \"file\"\nroot = \"@DATA@/images\"\n\
         [stores.down]\nkind = \"s3\"\nbucket = \"nowhere\"\nendpoint = \"http://127.0.0.1:9\"\n\
         region = \"us-east-1\"\nforce_path_style = true\naccess_key_id = \"AKIDUNUSED\"\n\
         secret_access_key = \"never-printed-secret\"\nmax_attempts = 1\n",
    );
    let config = gateway.dir.path().join("gateway.toml");
    let config = config.to_str().unwrap();
    let (code, text) = run(&["check-config", "--config", config]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("in use"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAILED") && l.contains("store down")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok") && l.contains("store file")),
        "{text}"
    );
    assert!(!text.contains("never-printed-secret"), "{text}");

    // The same file without the broken store passes.
    let good = gateway.dir.path().join("good.toml");
    let text = std::fs::read_to_string(config).unwrap();
    let cut = text.find("[stores.down]").unwrap();
    std::fs::write(&good, &text[..cut]).unwrap();
    let (code, out) = run(&["check-config", "--config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");

    let bad = gateway.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "bind = \"127.0.0.1:9292\"\nadmin_bind = \"127.0.0.1:9292\"\n",
    )
    .unwrap();
    let (code, out) = run(&["check-config", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("admin_bind"), "{out}");
}

#[tokio::test]
async fn healthcheck_subcommand_exits_zero_only_on_200() {
    let dir = tempfile::tempdir().unwrap();
    let drain = dir.path().join("drain");
    let app = TestApp::builder()
        .healthcheck_disable_file(&drain)
        .spawn()
        .await;
    let url = app.url("/healthcheck");
    let check =
        |url: String| tokio::task::spawn_blocking(move || run(&["healthcheck", "--url", &url]));
    assert_eq!(check(url.clone()).await.unwrap().0, 0);
    std::fs::write(&drain, "").unwrap();
    let (code, text) = check(url.clone()).await.unwrap();
    assert_eq!(code, 1);
    assert!(text.contains("503"), "{text}");
    // Nothing listening.
    let port = REFUSED_PORT;
    let (code, _) = check(format!("http://127.0.0.1:{port}/healthcheck"))
        .await
        .unwrap();
    assert_eq!(code, 1);
    // From a configuration file: its `bind`.
    let config = dir.path().join("g.toml");
    std::fs::remove_file(&drain).unwrap();
    std::fs::write(&config, format!("bind = \"{}\"\n", app.addr)).unwrap();
    let config = config.to_str().unwrap().to_owned();
    let (code, text) =
        tokio::task::spawn_blocking(move || run(&["healthcheck", "--config", &config]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{text}");
}

#[test]
fn version_names_the_commit() {
    let (code, text) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(
        text.starts_with(&format!(
            "glance-gateway {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}

#[tokio::test]
async fn store_up_follows_the_periodic_probe() {
    let gateway = Gateway::start("store_probe_interval = 1\n");
    let client = reqwest::Client::new();
    let up = || async {
        let text = client
            .get(format!("http://{}/metrics", gateway.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let scrape = Scrape::parse(&text).unwrap();
        gauge(&scrape, "glance_gateway_store_up", &[("store", "file")])
    };
    let wait_for = |want: f64| async move {
        for _ in 0..100 {
            if up().await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("store_up never became {want}");
    };
    assert_eq!(up().await, 1.0);
    // The file store's probe needs its temp directory.
    let tmp = gateway.data().join("images").join(".tmp");
    let aside = gateway.data().join("tmp-aside");
    std::fs::rename(&tmp, &aside).unwrap();
    wait_for(0.0).await;
    std::fs::rename(&aside, &tmp).unwrap();
    wait_for(1.0).await;
    let lines = gateway.json_lines();
    assert!(lines
        .iter()
        .any(|l| l["message"] == "store health probe failed" && l["store"] == "file"));
    assert!(lines
        .iter()
        .any(|l| l["message"] == "store is back" && l["store"] == "file"));
}

/// `glance_gateway_images{status}` follows the registry's counters: one per status, zeros included.
#[tokio::test]
async fn image_counts_by_status_come_from_the_registry() {
    let app = TestApp::spawn().await;
    let meta = [
        ("x-image-meta-name", "counted"),
        ("x-image-meta-disk_format", "raw"),
        ("x-image-meta-container_format", "bare"),
    ];
    app.create_image(&meta, Some(b"some bytes")).await;
    app.create_image(&meta, Some(b"more bytes")).await;
    let queued = app.create_image(&meta, None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = app
        .client
        .delete(app.url(&format!("/v1/images/{queued}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let (_, scrape) = scrape_metrics(&app).await;
    let images = |status| gauge(&scrape, "glance_gateway_images", &[("status", status)]);
    assert_eq!(images("active"), 2.0);
    assert_eq!(images("deleted"), 1.0);
    assert_eq!(images("queued"), 0.0);
    assert_eq!(images("killed"), 0.0);
}
