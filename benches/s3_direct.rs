//! The direct baseline for `benches/s3.sh`: the same S3 requests the gateway's S3 store makes,
//! straight from a file to the bucket and back, with no gateway in between.
//!
//! usage: s3_direct put FILE KEY [PART_MIB] [PARTS_IN_FLIGHT] [none|md5]
//!                                               multipart upload (16 MiB, 4, none)
//!        s3_direct get KEY                                     stream the object, discard it
//!        s3_direct delete KEY
//!
//! The server and keys come from `GATEWAY_TEST_S3_{ENDPOINT,REGION,BUCKET,ACCESS_KEY,SECRET_KEY}`
//! (`scripts/s3-backend.sh` prints them). Uploads mirror the store: parts read into memory,
//! a bounded number in flight, each with an unsigned payload, checksums only when required,
//! completed with part number + ETag. Parts carry no checksum by default (the baseline that
//! hashes nothing); `md5` adds a Content-MD5 to each, as the store's `part_checksum = "md5"`
//! does. Prints `seconds <s> bytes <n>` on stdout.

use std::sync::Arc;
use std::time::Instant;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use base64::Engine as _;
use bytes::BytesMut;
use md5::{Digest, Md5};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn var(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

fn client() -> Result<(Client, String), Error> {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(var("GATEWAY_TEST_S3_ENDPOINT")?)
        .region(Region::new(
            std::env::var("GATEWAY_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
        ))
        .credentials_provider(Credentials::new(
            var("GATEWAY_TEST_S3_ACCESS_KEY")?,
            var("GATEWAY_TEST_S3_SECRET_KEY")?,
            None,
            None,
            "bench",
        ))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .build();
    Ok((Client::from_conf(conf), var("GATEWAY_TEST_S3_BUCKET")?))
}

async fn upload_part(
    client: Client,
    bucket: Arc<str>,
    key: Arc<str>,
    upload_id: Arc<str>,
    number: i32,
    data: bytes::Bytes,
    md5: bool,
) -> Result<CompletedPart, Error> {
    let mut request = client
        .upload_part()
        .bucket(&*bucket)
        .key(&*key)
        .upload_id(&*upload_id)
        .part_number(number)
        .content_length(data.len() as i64);
    if md5 {
        let hashed = data.clone();
        let md5 = tokio::task::spawn_blocking(move || {
            base64::engine::general_purpose::STANDARD.encode(Md5::digest(&hashed))
        })
        .await?;
        request = request.content_md5(md5);
    }
    let out = request
        .body(ByteStream::from(data))
        .customize()
        .disable_payload_signing()
        .send()
        .await?;
    Ok(CompletedPart::builder()
        .part_number(number)
        .e_tag(out.e_tag().unwrap_or_default())
        .build())
}

async fn put(
    path: &str,
    key: &str,
    part_size: usize,
    in_flight: usize,
    md5: bool,
) -> Result<u64, Error> {
    let (client, bucket) = client()?;
    let mut file = tokio::fs::File::open(path).await?;
    let created = client
        .create_multipart_upload()
        .bucket(&bucket)
        .key(key)
        .content_type("application/octet-stream")
        .send()
        .await?;
    let upload_id: Arc<str> = created.upload_id().ok_or("no upload id")?.into();
    let (bucket_arc, key_arc): (Arc<str>, Arc<str>) = (bucket.as_str().into(), key.into());
    let mut tasks = JoinSet::new();
    let mut parts = vec![];
    let (mut number, mut total) = (0i32, 0u64);
    loop {
        let mut buf = BytesMut::zeroed(part_size);
        let mut filled = 0;
        while filled < part_size {
            let n = file.read(&mut buf[filled..]).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        total += filled as u64;
        number += 1;
        while tasks.len() >= in_flight {
            parts.push(tasks.join_next().await.expect("a task")??);
        }
        tasks.spawn(upload_part(
            client.clone(),
            Arc::clone(&bucket_arc),
            Arc::clone(&key_arc),
            Arc::clone(&upload_id),
            number,
            buf.freeze(),
            md5,
        ));
        if filled < part_size {
            break;
        }
    }
    while let Some(done) = tasks.join_next().await {
        parts.push(done??);
    }
    parts.sort_by_key(|p| p.part_number());
    client
        .complete_multipart_upload()
        .bucket(&bucket)
        .key(key)
        .upload_id(&*upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await?;
    Ok(total)
}

async fn get(key: &str) -> Result<u64, Error> {
    let (client, bucket) = client()?;
    let mut body = client
        .get_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await?
        .body;
    let mut total = 0u64;
    while let Some(chunk) = body.try_next().await? {
        total += chunk.len() as u64;
    }
    Ok(total)
}

async fn delete(key: &str) -> Result<u64, Error> {
    let (client, bucket) = client()?;
    client
        .delete_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await?;
    Ok(0)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let started = Instant::now();
    let bytes = match (arg(0), arg(1), arg(2)) {
        (Some("put"), Some(path), Some(key)) => {
            let part_mib: usize = arg(3).unwrap_or("16").parse()?;
            let in_flight: usize = arg(4).unwrap_or("4").parse()?;
            let md5 = match arg(5).unwrap_or("none") {
                "none" => false,
                "md5" => true,
                other => return Err(format!("unknown part checksum {other}").into()),
            };
            put(path, key, part_mib * 1024 * 1024, in_flight.max(1), md5).await?
        }
        (Some("get"), Some(key), None) => get(key).await?,
        (Some("delete"), Some(key), None) => delete(key).await?,
        _ => {
            eprintln!(
                "usage: s3_direct put FILE KEY [PART_MIB] [PARTS_IN_FLIGHT] [none|md5] | get KEY | delete KEY"
            );
            std::process::exit(2);
        }
    };
    println!(
        "seconds {:.3} bytes {bytes}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
