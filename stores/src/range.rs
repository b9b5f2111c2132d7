//! Byte ranges as every store resolves them, and as S3 and Swift report them back.

use std::ops::Range;

use crate::StoreError;

/// Resolves a range against an object of `len` bytes, per the [`Store`](crate::Store) contract.
pub fn clip_range(range: Option<Range<u64>>, len: u64) -> Result<Range<u64>, StoreError> {
    match range {
        None => Ok(0..len),
        Some(r) if r.start >= len || r.start >= r.end => {
            Err(StoreError::RangeNotSatisfiable { len })
        }
        Some(r) => Ok(r.start..r.end.min(len)),
    }
}

/// A `Content-Range: bytes first-last/total` answer as (`first..last + 1`, `total`); `None` for
/// anything else, including a span that does not lie inside the object.
pub(crate) fn parse_content_range(value: &str) -> Option<(Range<u64>, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last, total): (u64, u64, u64) =
        (first.parse().ok()?, last.parse().ok()?, total.parse().ok()?);
    (first <= last && last < total).then_some((first..last + 1, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0..10, 100)));
        assert_eq!(parse_content_range("bytes 10-19/100"), Some((10..20, 100)));
        assert_eq!(parse_content_range(" bytes 5-5/6 "), Some((5..6, 6)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("bytes 9-0/100"), None);
        // The last byte must lie inside the object.
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("bytes 0-0/0"), None);
        assert_eq!(parse_content_range("bytes 0-9/*"), None);
    }

    #[test]
    fn ranges_are_clipped_to_the_object() {
        assert_eq!(clip_range(None, 10).unwrap(), 0..10);
        assert_eq!(clip_range(Some(2..100), 10).unwrap(), 2..10);
        for bad in [10..11, 5..5, 12..20] {
            assert!(matches!(
                clip_range(Some(bad), 10),
                Err(StoreError::RangeNotSatisfiable { len: 10 })
            ));
        }
    }
}
