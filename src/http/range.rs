//! The `Range` request header (an extension to v1, so clients can resume downloads): one
//! `bytes=` range, resolved against the image size. Anything else is served whole.

use std::ops::Range;

use axum::http::{header, HeaderMap};

#[derive(Debug, PartialEq, Eq)]
pub enum ByteRangeRequest {
    Whole,
    Range(Range<u64>),
    Unsatisfiable,
}

pub fn parse_range(headers: &HeaderMap, len: u64) -> ByteRangeRequest {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return ByteRangeRequest::Whole;
    };
    // Several ranges (multipart/byteranges) are not offered: serve the whole image.
    if spec.contains(',') {
        return ByteRangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRangeRequest::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), num(first), num(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                ByteRangeRequest::Unsatisfiable
            } else {
                ByteRangeRequest::Range(len.saturating_sub(n)..len)
            }
        }
        (false, Some(start), end) if last.trim().is_empty() || end.is_some() => {
            if end.is_some_and(|e| e < start) {
                return ByteRangeRequest::Whole; // syntactically invalid: ignored
            }
            if start >= len {
                return ByteRangeRequest::Unsatisfiable;
            }
            let end = end.map_or(len, |e| e.saturating_add(1).min(len));
            ByteRangeRequest::Range(start..end)
        }
        _ => ByteRangeRequest::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: &str, len: u64) -> ByteRangeRequest {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, v.parse().unwrap());
        parse_range(&h, len)
    }

    #[test]
    fn ranges() {
        use ByteRangeRequest::*;
        assert_eq!(parse_range(&HeaderMap::new(), 10), Whole);
        assert_eq!(r("bytes=0-0", 10), Range(0..1));
        assert_eq!(r("bytes=2-5", 10), Range(2..6));
        assert_eq!(r("bytes=5-", 10), Range(5..10));
        assert_eq!(r("bytes=5-100", 10), Range(5..10));
        assert_eq!(r("bytes=-3", 10), Range(7..10));
        assert_eq!(r("bytes=-30", 10), Range(0..10));
        assert_eq!(r("bytes=10-", 10), Unsatisfiable);
        assert_eq!(r("bytes=-0", 10), Unsatisfiable);
        assert_eq!(r("bytes=5-2", 10), Whole);
        assert_eq!(r("bytes=0-1,3-4", 10), Whole);
        assert_eq!(r("items=0-1", 10), Whole);
        assert_eq!(r("bytes=x-1", 10), Whole);
    }
}
