//! The HTTP client of `benches/metadata.sh`: seeds a gateway with images through the API, and
//! walks a list to its last page with markers.
//!
//! usage: metadata_seed seed URL COUNT CLIENTS IDS_FILE   create COUNT images from CLIENTS
//!                                                         concurrent clients; ids to IDS_FILE
//!        metadata_seed walk URL LIMIT [TENANT]           walk /v1/images with markers (as an
//!                                                         admin, or as TENANT without the role)
//!
//! The gateway runs with `auth = "trusted-headers"`. The mix: owners spread over 100 tenants
//! (seeded with the admin role so half can be public), 3–5 properties each (`os` among four
//! values), disk formats among four, half active with no data (size 0), half queued with a size,
//! and one image in ten shared with another tenant. Seeding prints `seconds <s> images <n>`;
//! walking prints `pages <n> images <n> seconds <s> p50_ms <x> p99_ms <y>`.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use reqwest::Client;
use serde_json::Value;

type Error = Box<dyn std::error::Error + Send + Sync>;

const TENANTS: u64 = 100;

/// A small deterministic generator per client, so runs seed the same mix.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn identity(req: reqwest::RequestBuilder, tenant: &str, admin: bool) -> reqwest::RequestBuilder {
    let req = req
        .header("x-identity-status", "Confirmed")
        .header("x-tenant-id", tenant)
        .header("x-user-id", format!("user-{tenant}"));
    if admin {
        req.header("x-roles", "admin,member")
    } else {
        req.header("x-roles", "member")
    }
}

async fn create_one(client: &Client, url: &str, rng: &mut Rng) -> Result<String, Error> {
    let tenant = format!("tenant-{}", rng.next() % TENANTS);
    let mut req = identity(client.post(format!("{url}/v1/images")), &tenant, true)
        .header(
            "x-image-meta-name",
            format!("image-{}", rng.next() % 100_000),
        )
        .header(
            "x-image-meta-is_public",
            rng.next().is_multiple_of(2).to_string(),
        )
        .header(
            "x-image-meta-disk_format",
            rng.pick(&["qcow2", "raw", "vmdk", "iso"]),
        )
        .header("x-image-meta-container_format", rng.pick(&["bare", "ovf"]))
        .header(
            "x-image-meta-property-os",
            rng.pick(&["linux", "windows", "bsd", "other"]),
        )
        .header(
            "x-image-meta-property-arch",
            rng.pick(&["x86_64", "aarch64"]),
        )
        .header(
            "x-image-meta-property-version",
            format!("{}.{}", rng.next() % 20, rng.next() % 10),
        );
    let extra = rng.next() % 3;
    if extra >= 1 {
        req = req.header(
            "x-image-meta-property-hypervisor",
            rng.pick(&["kvm", "xen"]),
        );
    }
    if extra == 2 {
        req = req.header(
            "x-image-meta-property-team",
            format!("team-{}", rng.next() % 50),
        );
    }
    let size = if rng.next().is_multiple_of(2) {
        0
    } else {
        1 + rng.next() % (1 << 30)
    };
    req = req.header("x-image-meta-size", size.to_string());
    let resp = req.send().await?;
    if resp.status().as_u16() != 201 {
        return Err(format!("create answered {}", resp.status()).into());
    }
    let body: Value = resp.json().await?;
    let id = body["image"]["id"]
        .as_str()
        .ok_or("no id in the answer")?
        .to_owned();
    if rng.next().is_multiple_of(10) {
        let member = format!("tenant-{}", rng.next() % TENANTS);
        let resp = identity(
            client.put(format!("{url}/v1/images/{id}/members/{member}")),
            &tenant,
            true,
        )
        .send()
        .await?;
        if !resp.status().is_success() {
            return Err(format!("adding a member answered {}", resp.status()).into());
        }
    }
    Ok(id)
}

async fn seed(url: String, count: usize, clients: usize, ids_file: String) -> Result<(), Error> {
    let client = Client::builder().pool_max_idle_per_host(clients).build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (client, url, next) = (client.clone(), url.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1).wrapping_mul(0x2545_F491));
            let mut ids = vec![];
            while next.fetch_add(1, Ordering::Relaxed) < count {
                ids.push(create_one(&client, &url, &mut rng).await?);
            }
            Ok::<_, Error>(ids)
        });
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(&ids_file)?);
    let mut n = 0;
    while let Some(done) = tasks.join_next().await {
        for id in done?? {
            writeln!(out, "{id}")?;
            n += 1;
        }
    }
    out.flush()?;
    println!("seconds {:.3} images {n}", started.elapsed().as_secs_f64());
    Ok(())
}

async fn walk(url: String, limit: u64, tenant: Option<String>) -> Result<(), Error> {
    let client = Client::new();
    let mut marker: Option<String> = None;
    let (mut pages, mut images) = (0u64, 0u64);
    let mut latencies = vec![];
    let started = Instant::now();
    loop {
        let mut path = format!("{url}/v1/images?limit={limit}");
        if let Some(m) = &marker {
            path.push_str(&format!("&marker={m}"));
        }
        let req = match &tenant {
            Some(t) => identity(client.get(path), t, false),
            None => identity(client.get(path), "tenant-0", true),
        };
        let t0 = Instant::now();
        let body: Value = req.send().await?.error_for_status()?.json().await?;
        latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
        let page = body["images"].as_array().ok_or("no images")?;
        pages += 1;
        images += page.len() as u64;
        match page.last().and_then(|i| i["id"].as_str()) {
            Some(id) if page.len() as u64 == limit => marker = Some(id.to_owned()),
            _ => break,
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "pages {pages} images {images} seconds {:.3} p50_ms {:.3} p99_ms {:.3}",
        started.elapsed().as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> Result<&str, Error> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| "usage: see the file's header".into())
    };
    match arg(0)? {
        "seed" => {
            seed(
                arg(1)?.to_owned(),
                arg(2)?.parse()?,
                arg(3)?.parse()?,
                arg(4)?.to_owned(),
            )
            .await
        }
        "walk" => walk(arg(1)?.to_owned(), arg(2)?.parse()?, args.get(3).cloned()).await,
        other => Err(format!("unknown command {other}").into()),
    }
}
