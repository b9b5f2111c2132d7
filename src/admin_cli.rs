//! The `images`, `verify` and `migrate` subcommands: clients of the running gateway's admin
//! listener (the work itself runs in the gateway, `crate::admin_ops`). Human tables by default,
//! `--json` for scripts, a progress bar on a terminal; `Ok(false)` means a problem was found
//! (exit status 1).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::admin_ops::{Event, ImageResult, ImageRow};

/// Where the admin listener is, shared by every admin subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminTarget {
    /// The gateway's configuration file: its `admin_bind` and `admin_token_file` are used.
    #[arg(long, env = "GLANCE_GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// The admin listener's URL (default http://127.0.0.1:9293, or the config's `admin_bind`).
    #[arg(long)]
    pub admin_url: Option<String>,
    /// A file holding the admin bearer token (default: the config's `admin_token_file`).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ImagesArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// Only images with this status (deleted images are listed only when asked for).
    #[arg(long)]
    pub status: Option<String>,
    /// Only images whose data is in this store.
    #[arg(long)]
    pub store: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// Every image with data (active or deactivated).
    #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
    pub all: bool,
    /// Images to verify.
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Only images whose data is in this store.
    #[arg(long)]
    pub store: Option<String>,
    /// Read at most this many MiB per second (to spare the store).
    #[arg(long, value_name = "MiB/s")]
    pub max_rate: Option<f64>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// Images to move.
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
    /// The configured store to move them to.
    #[arg(long, value_name = "STORE")]
    pub to: String,
    /// Seconds the old copies are kept after the switch, for downloads already reading them.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub grace: u64,
}

/// An HTTP client of the admin listener.
struct Admin {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Admin {
    fn new(target: &AdminTarget) -> anyhow::Result<Self> {
        let (config_url, config_token) = match &target.config {
            Some(path) => read_config(path)?,
            None => (None, None),
        };
        let base = target
            .admin_url
            .clone()
            .or(config_url)
            .unwrap_or_else(|| "http://127.0.0.1:9293".to_owned());
        let token = match target.admin_token_file.clone().or(config_token) {
            Some(path) => Some(read_token(&path)?),
            None => None,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the admin listener at {}", self.base))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let message = text.lines().last().unwrap_or_default().trim();
            bail!("the gateway answered {status}: {message}");
        }
        Ok(response)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// `admin_bind` and `admin_token_file` of a configuration file; other keys are the gateway's
/// business.
fn read_config(path: &Path) -> anyhow::Result<(Option<String>, Option<PathBuf>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
    let bind = match table.get("admin_bind") {
        Some(toml::Value::String(bind)) => Some(bind.clone()),
        Some(_) => bail!("config key `admin_bind`: expected an address:port string"),
        None => None,
    };
    let url = bind.map(|bind| {
        // A wildcard listener is reached on loopback.
        let bind = bind
            .replace("0.0.0.0:", "127.0.0.1:")
            .replace("[::]:", "[::1]:");
        format!("http://{bind}")
    });
    let token = match table.get("admin_token_file") {
        Some(toml::Value::String(p)) => Some(PathBuf::from(p)),
        Some(_) => bail!("config key `admin_token_file`: expected a path"),
        None => None,
    };
    Ok((url, token))
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
    let token = text.trim_end_matches(['\n', '\r']);
    if token.is_empty() {
        bail!("the admin token file {} is empty", path.display());
    }
    Ok(token.to_owned())
}

/// `glance-gateway images`.
pub async fn images(args: ImagesArgs) -> anyhow::Result<bool> {
    let admin = Admin::new(&args.target)?;
    let mut query = vec![];
    if let Some(status) = &args.status {
        query.push(("status", status.as_str()));
    }
    if let Some(store) = &args.store {
        query.push(("store", store.as_str()));
    }
    let response = admin
        .send(admin.client.get(admin.url("/admin/images")).query(&query))
        .await?;
    let body: Value = response.json().await.context("reading the image list")?;
    if args.target.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(true);
    }
    let rows: Vec<ImageRow> = serde_json::from_value(body["images"].clone())?;
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.name.clone().unwrap_or_default(),
                r.status.clone(),
                r.size.to_string(),
                match (&r.store, r.data.as_str()) {
                    (Some(store), "registered") => format!("{store} (registered)"),
                    (Some(store), _) => store.clone(),
                    (None, "remote") => "(remote)".into(),
                    (None, _) => "-".into(),
                },
                r.owner.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["ID", "NAME", "STATUS", "SIZE", "STORE", "OWNER"], &table);
    Ok(true)
}

/// `glance-gateway verify`.
pub async fn verify(args: VerifyArgs) -> anyhow::Result<bool> {
    let admin = Admin::new(&args.target)?;
    let body = json!({
        "ids": args.ids,
        "all": args.all,
        "store": args.store,
        "max_rate_mib": args.max_rate,
    });
    let response = admin
        .send(admin.client.post(admin.url("/admin/verify")).json(&body))
        .await?;
    let run = follow(response).await?;
    let problems = run.results.iter().filter(|r| r.result != "ok").count();
    report(&args.target, &run, problems, |r| r.detail.clone())?;
    Ok(run.complete && problems == 0)
}

/// `glance-gateway migrate`.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<bool> {
    let admin = Admin::new(&args.target)?;
    let body = json!({ "ids": args.ids, "to": args.to, "grace_seconds": args.grace });
    let response = admin
        .send(admin.client.post(admin.url("/admin/migrate")).json(&body))
        .await?;
    let run = follow(response).await?;
    let problems = run.results.iter().filter(|r| r.result == "error").count()
        + run.removed.values().filter(|e| e.is_some()).count();
    report(&args.target, &run, problems, |r| {
        let removal = run.removed.get(&r.id).map(|e| match e {
            None => "old copy removed".to_owned(),
            Some(e) => format!("old copy not removed: {e}"),
        });
        match (r.detail.clone(), removal) {
            (Some(d), Some(rm)) => Some(format!("{d}; {rm}")),
            (d, rm) => d.or(rm),
        }
    })?;
    Ok(run.complete && problems == 0)
}

/// What a verify or migrate stream said.
#[derive(Default)]
struct Run {
    results: Vec<ImageResult>,
    /// Migrate: the removal of each old copy (`Some` = its error).
    removed: BTreeMap<String, Option<String>>,
    /// The stream ended with its `end` line.
    complete: bool,
}

/// Reads the event lines, driving a progress bar on a terminal.
async fn follow(response: reqwest::Response) -> anyhow::Result<Run> {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut run = Run::default();
    let mut buffer = Vec::new();
    let mut body = response.bytes_stream();
    let handle = |line: &[u8], run: &mut Run| -> anyhow::Result<()> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let event: Event = serde_json::from_slice(line).context("a malformed progress line")?;
        match event {
            Event::Start { total, total_bytes } => {
                bar.set_length(total_bytes);
                bar.set_message(format!("0/{total} images"));
            }
            Event::Progress { id, bytes } => {
                bar.set_position(bytes);
                bar.set_message(id);
            }
            Event::Result(result) => {
                bar.set_message(format!("{} {}", result.id, result.result));
                run.results.push(result);
            }
            Event::Removed { id, error, .. } => {
                run.removed.insert(id, error);
            }
            Event::End => run.complete = true,
        }
        Ok(())
    };
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                bar.abandon();
                eprintln!("glance-gateway: the gateway's answer was cut: {e}");
                return Ok(run);
            }
        };
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            handle(&line, &mut run)?;
        }
    }
    handle(&buffer, &mut run)?;
    bar.finish_and_clear();
    if !run.complete {
        eprintln!("glance-gateway: the gateway's answer ended early; the run is incomplete");
    }
    Ok(run)
}

fn report(
    target: &AdminTarget,
    run: &Run,
    problems: usize,
    detail: impl Fn(&ImageResult) -> Option<String>,
) -> anyhow::Result<()> {
    if target.json {
        let results: Vec<Value> = run
            .results
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).expect("results serialise");
                if let Some(removal) = run.removed.get(&r.id) {
                    v["old_copy_removed"] = json!(removal.is_none());
                    v["removal_error"] = json!(removal);
                }
                v
            })
            .collect();
        let out = json!({ "results": results, "problems": problems, "complete": run.complete });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = run
        .results
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.name.clone().unwrap_or_default(),
                r.store.clone().unwrap_or_else(|| "-".into()),
                HumanBytes(r.size).to_string(),
                r.result.clone(),
                detail(r).unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["ID", "NAME", "STORE", "SIZE", "RESULT", "DETAIL"], &rows);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &run.results {
        *counts.entry(r.result.as_str()).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "{} image(s): {}; {problems} problem(s)",
        run.results.len(),
        if counts.is_empty() {
            "none".to_owned()
        } else {
            counts.join(", ")
        }
    );
    Ok(())
}

/// Left-aligned columns, two spaces apart.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
