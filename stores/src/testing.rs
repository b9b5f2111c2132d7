//! The store conformance suite: one set of checks every store runs (file always; S3 and Swift
//! against real servers). Each check panics with a message on failure.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::{stream, StreamExt};
use md5::{Digest, Md5};

use crate::{put_digested, ByteStream, ObjectKey, PutError, PutOptions, Store, StoreError};

/// Deterministic test data: `len` bytes that differ at every offset of a part.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A body that yields `data` in chunks of `chunk` bytes.
pub fn body_from(data: Vec<u8>, chunk: usize) -> ByteStream {
    let data = Bytes::from(data);
    let chunk = chunk.max(1);
    let chunks: Vec<io::Result<Bytes>> = (0..data.len())
        .step_by(chunk)
        .map(|i| Ok(data.slice(i..(i + chunk).min(data.len()))))
        .collect();
    Box::pin(stream::iter(chunks))
}

/// A body that yields the first `ok_bytes` of `data`, then fails like a dropped client.
pub fn failing_body(data: Vec<u8>, chunk: usize, ok_bytes: usize) -> ByteStream {
    let head = body_from(data[..ok_bytes].to_vec(), chunk);
    let tail = stream::once(async {
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        ))
    });
    Box::pin(head.chain(tail))
}

/// A body that yields `len` bytes and then never ends; dropping the returned guard does not
/// end it either. For cancellation tests, which drop the `put` future.
pub fn stalling_body(len: usize) -> (ByteStream, ()) {
    let head = body_from(pattern(len, 7), 4096);
    (Box::pin(head.chain(stream::pending())), ())
}

pub async fn read_all(body: ByteStream) -> io::Result<Vec<u8>> {
    let mut out = vec![];
    let mut body = body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn fresh_key(label: &str) -> ObjectKey {
    ObjectKey::parse(&format!("conformance-{label}-{}", uuid::Uuid::new_v4())).unwrap()
}

/// Runs every check. `boundary` is the store's part or segment size (use a small one), so sizes
/// around it exercise multipart and segmented paths.
pub async fn run_conformance(store: Arc<dyn Store>, boundary: usize) {
    store.health_check().await.expect("health check");
    roundtrip_sizes(&*store, boundary).await;
    ranges(&*store, boundary).await;
    failed_puts_leave_nothing(&*store, boundary).await;
    delete_semantics(&*store).await;
    limit_is_enforced(&*store, boundary).await;
}

pub async fn roundtrip_sizes(store: &dyn Store, boundary: usize) {
    let b = boundary;
    for (i, len) in [0, 1, b - 1, b, b + 1, 2 * b + 1, 3 * b]
        .into_iter()
        .enumerate()
    {
        let data = pattern(len, i as u64);
        let key = fresh_key("size");
        // An odd chunk size so chunks straddle part boundaries.
        let stored = put_digested(
            store,
            &key,
            body_from(data.clone(), 7919),
            Some(len as u64),
            u64::MAX,
        )
        .await
        .unwrap_or_else(|e| panic!("put of {len} bytes: {e}"));
        assert_eq!(stored.size, len as u64);
        assert_eq!(stored.md5, <[u8; 16]>::from(Md5::digest(&data)));
        let got = store.get(&key, None).await.expect("get");
        assert_eq!(got.total_len, len as u64, "total_len of {len}-byte object");
        assert_eq!(got.range, 0..len as u64);
        let back = read_all(got.body).await.expect("read back");
        assert!(back == data, "{len}-byte object came back different");
        assert!(
            store
                .list()
                .await
                .expect("list")
                .iter()
                .any(|o| o.key == key),
            "list misses {key}"
        );
        store.delete(&key).await.expect("delete");
    }
    // Without a size hint (a chunked upload) too.
    let len = 2 * b + 3;
    let data = pattern(len, 99);
    let key = fresh_key("nohint");
    put_digested(store, &key, body_from(data.clone(), 1000), None, u64::MAX)
        .await
        .expect("put without size hint");
    let back = read_all(store.get(&key, None).await.unwrap().body)
        .await
        .unwrap();
    assert!(back == data, "unhinted object came back different");
    store.delete(&key).await.unwrap();
}

pub async fn ranges(store: &dyn Store, boundary: usize) {
    let b = boundary as u64;
    let len = 2 * b + 17;
    let data = pattern(len as usize, 5);
    let key = fresh_key("range");
    store
        .put(
            &key,
            body_from(data.clone(), 4099),
            PutOptions::with_size_hint(Some(len)),
        )
        .await
        .expect("put");
    for range in [
        0..1,
        0..len,
        b - 10..b + 10,
        2 * b - 1..2 * b + 1,
        len - 5..len,
        len - 1..len + 100,
    ] {
        let got = store
            .get(&key, Some(range.clone()))
            .await
            .expect("ranged get");
        let end = range.end.min(len);
        assert_eq!(got.range, range.start..end);
        assert_eq!(got.total_len, len);
        let back = read_all(got.body).await.unwrap();
        assert!(
            back == data[range.start as usize..end as usize],
            "range {range:?} came back different"
        );
    }
    for bad in [len..len + 1, len + 10..len + 20] {
        match store.get(&key, Some(bad.clone())).await {
            Err(StoreError::RangeNotSatisfiable { len: l }) => assert_eq!(l, len),
            other => panic!("range {bad:?}: expected RangeNotSatisfiable, got {other:?}"),
        }
    }
    store.delete(&key).await.unwrap();
}

pub async fn failed_puts_leave_nothing(store: &dyn Store, boundary: usize) {
    let b = boundary;
    let len = 3 * b + 5;
    for cut in [0, b / 2, b, b + 1, 2 * b + 7, len - 1] {
        let key = fresh_key("fail");
        let data = pattern(len, cut as u64);
        let result = put_digested(
            store,
            &key,
            failing_body(data, 3001, cut),
            Some(len as u64),
            u64::MAX,
        )
        .await;
        assert!(
            matches!(result, Err(PutError::Body(_))),
            "cut at {cut}: expected a body error, got {result:?}"
        );
        match store.get(&key, None).await {
            Err(e) if e.is_not_found() => {}
            other => panic!("cut at {cut}: object visible after failed put: {other:?}"),
        }
        assert!(
            !store.list().await.unwrap().iter().any(|o| o.key == key),
            "cut at {cut}: failed object listed"
        );
    }
}

pub async fn delete_semantics(store: &dyn Store) {
    let key = fresh_key("delete");
    store
        .put(
            &key,
            body_from(b"hello".to_vec(), 2),
            PutOptions::with_size_hint(Some(5)),
        )
        .await
        .unwrap();
    store.delete(&key).await.expect("delete");
    assert!(store.get(&key, None).await.unwrap_err().is_not_found());
    store
        .delete(&key)
        .await
        .expect("delete of a missing object is Ok");
    let missing = fresh_key("missing");
    assert!(store.get(&missing, None).await.unwrap_err().is_not_found());
}

pub async fn limit_is_enforced(store: &dyn Store, boundary: usize) {
    let key = fresh_key("limit");
    let len = 2 * boundary + 1;
    let limit = (boundary + 3) as u64;
    let result = put_digested(store, &key, body_from(pattern(len, 3), 4096), None, limit).await;
    assert!(
        matches!(result, Err(PutError::TooLarge { limit: l }) if l == limit),
        "expected TooLarge, got {result:?}"
    );
    assert!(store.get(&key, None).await.unwrap_err().is_not_found());
}
