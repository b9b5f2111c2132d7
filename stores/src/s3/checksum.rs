//! The per-part checksum: which one guards each part (or single PutObject) on its way to the
//! server, and the probe that finds out whether the server verifies CRC32C.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use base64::Engine as _;
use bytes::Bytes;
use crc_fast::CrcAlgorithm;
use md5::{Digest, Md5};

use super::config::PartChecksum;
use super::Inner;
use crate::StoreError;

/// Below this a part's checksum is computed in place; above, on a blocking thread, so hashing a
/// 16 MiB part does not stall the runtime.
const INLINE_LIMIT: usize = 256 * 1024;
/// The probe object, next to the ownership marker; a verifying server never stores it.
const PROBE: &str = ".glance-gateway-checksum-probe";
/// S3 error codes for a checksum that does not match the body (AWS, SeaweedFS: `BadDigest`;
/// MinIO: `XAmzContentChecksumMismatch`).
const MISMATCH_CODES: [&str; 3] = ["BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch"];

/// The checksum this store's uploads carry, once `auto` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PartGuard {
    Crc32c,
    Md5,
    None,
}

/// One body's checksum header, base64 as S3 wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PartSum {
    /// `x-amz-checksum-crc32c`
    Crc32c(String),
    /// `Content-MD5`
    Md5(String),
    None,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(super) fn crc32c_b64(data: &[u8]) -> String {
    let crc = crc_fast::checksum(CrcAlgorithm::Crc32Iscsi, data) as u32;
    b64(&crc.to_be_bytes())
}

impl PartGuard {
    fn sum_now(self, data: &[u8]) -> PartSum {
        match self {
            Self::Crc32c => PartSum::Crc32c(crc32c_b64(data)),
            Self::Md5 => PartSum::Md5(b64(&Md5::digest(data))),
            Self::None => PartSum::None,
        }
    }

    /// The checksum of `data`; large bodies are hashed on a blocking thread.
    pub(super) async fn sum(self, store: &str, data: &Bytes) -> Result<PartSum, StoreError> {
        if self == Self::None || data.len() <= INLINE_LIMIT {
            return Ok(self.sum_now(data));
        }
        let data = data.clone();
        tokio::task::spawn_blocking(move || self.sum_now(&data))
            .await
            .map_err(|e| StoreError::other(store, format!("hashing a part failed: {e}")))
    }
}

impl Inner {
    /// The guard for the next upload: the configured one, or for `auto` the probe's verdict
    /// (probed once per store; a probe that could not reach the server is retried next time,
    /// and meanwhile Content-MD5 is used).
    pub(super) async fn part_guard(&self) -> PartGuard {
        match self.part_checksum {
            PartChecksum::Crc32c => PartGuard::Crc32c,
            PartChecksum::Md5 => PartGuard::Md5,
            PartChecksum::None => PartGuard::None,
            PartChecksum::Auto => match self.probed.get_or_try_init(|| self.probe_crc32c()).await {
                Ok(guard) => *guard,
                Err(e) => {
                    tracing::warn!(
                        store = %self.name, error = %e,
                        "could not probe the server's CRC32C checks; using Content-MD5"
                    );
                    PartGuard::Md5
                }
            },
        }
    }

    /// Sends a tiny PutObject whose `x-amz-checksum-crc32c` does not match its body. A server
    /// that verifies CRC32C refuses it (and stores nothing); one that ignores the header stores
    /// it, and the probe object is removed again: such a server gets Content-MD5.
    async fn probe_crc32c(&self) -> Result<PartGuard, StoreError> {
        let key = format!("{}{PROBE}", self.prefix);
        let body = Bytes::from_static(b"glance-gateway checksum probe");
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_length(body.len() as i64)
            .checksum_crc32_c(crc32c_b64(b"not the body"))
            .body(SdkByteStream::from(body))
            .customize()
            .disable_payload_signing()
            .send()
            .await;
        let guard = match sent {
            Err(e) if e.code().is_some_and(|c| MISMATCH_CODES.contains(&c)) => PartGuard::Crc32c,
            // Refused for another reason (say, an unknown header): the server does not do CRC32C.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 400) => {
                PartGuard::Md5
            }
            Err(e) => return Err(self.map_err("PutObject", Some(PROBE), e)),
            Ok(_) => {
                if let Err(e) = self
                    .client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                {
                    let e = self.map_err("DeleteObject", Some(PROBE), e);
                    tracing::warn!(store = %self.name, error = %e, "could not remove the probe object");
                }
                PartGuard::Md5
            }
        };
        tracing::info!(store = %self.name, part_checksum = ?guard, "probed the server's part checks");
        Ok(guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_the_castagnoli_crc() {
        // The standard check value of CRC-32C, and S3's example of an empty body.
        assert_eq!(crc32c_b64(b"123456789"), b64(&0xE306_9283u32.to_be_bytes()));
        assert_eq!(crc32c_b64(b""), "AAAAAA==");
    }

    #[tokio::test]
    async fn each_guard_gives_its_header() {
        let data = Bytes::from(vec![7u8; 1 << 20]);
        let crc = PartGuard::Crc32c.sum("s", &data).await.unwrap();
        assert_eq!(crc, PartSum::Crc32c(crc32c_b64(&data)));
        let md5 = PartGuard::Md5.sum("s", &data).await.unwrap();
        assert_eq!(md5, PartSum::Md5(b64(&Md5::digest(&data))));
        assert_eq!(
            PartGuard::None.sum("s", &data).await.unwrap(),
            PartSum::None
        );
    }

    /// The probe's verdict against the test server must match what the server does with a wrong
    /// CRC32C on a part, seen directly; each configured guard is taken as configured.
    #[tokio::test]
    async fn the_probe_agrees_with_the_server() {
        use crate::s3::{S3Store, S3StoreConfig};
        use crate::Store as _;
        let Some(env) = crate::test_backends::S3TestEnv::from_env() else {
            eprintln!("skipping: GATEWAY_TEST_S3_ENDPOINT not set");
            return;
        };
        let mut config = S3StoreConfig::new(env.bucket.clone());
        config.endpoint = Some(env.endpoint.clone());
        config.region = Some(env.region.clone());
        config.force_path_style = true;
        config.prefix = format!("gateway-test/probe-{}/", uuid::Uuid::new_v4().simple());
        config.access_key_id = Some(env.access_key.clone().into());
        config.secret_access_key = Some(env.secret_key.clone().into());
        let name = crate::StoreName::parse("s3").unwrap();
        let store = S3Store::open(name.clone(), &config).await.unwrap();
        let inner = &store.inner;

        // Directly: a part whose CRC32C is wrong.
        let key = format!("{}direct", config.prefix);
        let created = inner
            .client
            .create_multipart_upload()
            .bucket(&inner.bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        let upload_id = created.upload_id().unwrap();
        let part = Bytes::from_static(b"some part data");
        let sent = inner
            .client
            .upload_part()
            .bucket(&inner.bucket)
            .key(&key)
            .upload_id(upload_id)
            .part_number(1)
            .checksum_crc32_c(crc32c_b64(b"other data"))
            .body(SdkByteStream::from(part.clone()))
            .send()
            .await;
        let verifies = sent.is_err();
        // And a right one is taken.
        inner
            .client
            .upload_part()
            .bucket(&inner.bucket)
            .key(&key)
            .upload_id(upload_id)
            .part_number(2)
            .checksum_crc32_c(crc32c_b64(&part))
            .body(SdkByteStream::from(part))
            .send()
            .await
            .unwrap();
        inner.abort_upload(&key, upload_id).await.unwrap();

        let expected = if verifies {
            PartGuard::Crc32c
        } else {
            PartGuard::Md5
        };
        assert_eq!(inner.part_guard().await, expected);
        assert_eq!(inner.probed.get(), Some(&expected));
        // Nothing of the probe is left behind.
        assert!(store.list().await.unwrap().is_empty());
        let probe = inner
            .client
            .head_object()
            .bucket(&inner.bucket)
            .key(format!("{}{PROBE}", config.prefix))
            .send()
            .await;
        assert!(probe.is_err(), "the probe object was left behind");

        config.part_checksum = PartChecksum::None;
        let configured = S3Store::open(name, &config).await.unwrap();
        assert_eq!(configured.inner.part_guard().await, PartGuard::None);
        assert!(configured.inner.probed.get().is_none());
    }
}
