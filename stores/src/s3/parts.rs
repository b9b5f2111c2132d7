//! The part sizer: how large each part of a multipart upload is, within S3's limits, from the
//! declared length when there is one and growing with the bytes sent when there is none.

use super::config::Tuning;

pub(super) const MIB: u64 = 1024 * 1024;
/// S3's limits: every part but the last at least 5 MiB, at most 5 GiB per part or PutObject,
/// 10,000 parts, 5 TiB per object.
pub(super) const MIN_PART_SIZE: u64 = 5 * MIB;
pub(super) const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;
pub(super) const MAX_PARTS: u64 = 10_000;
pub(super) const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * MIB;

fn round_up_mib(n: u64) -> u64 {
    n.div_ceil(MIB).saturating_mul(MIB)
}

/// The part size for a body of unknown length once `sent` bytes went up: the floor at first,
/// then a fixed fraction of what was sent, so the sizes grow geometrically and a large object
/// still fits in 10,000 parts while small ones keep small parts (and little memory).
fn growth_size(base: u64, divisor: u64, sent: u64) -> u64 {
    base.max(round_up_mib(sent.div_ceil(divisor)))
        .min(MAX_PART_SIZE)
}

/// The gentlest growth with which `max_object` fits in 10,000 parts starting from `base`.
pub(super) fn growth_divisor(base: u64, max_object: u64) -> Option<u64> {
    let fits = |divisor| {
        let mut sent = 0u64;
        for _ in 0..MAX_PARTS {
            sent = sent.saturating_add(growth_size(base, divisor, sent));
            if sent >= max_object {
                return true;
            }
        }
        false
    };
    [
        5000, 3000, 2000, 1500, 1000, 750, 500, 300, 200, 100, 50, 20, 10, 5, 2, 1,
    ]
    .into_iter()
    .find(|&d| fits(d))
}

/// Chooses each part's size: from the declared length when there is one (the stream is still
/// the truth: past the declared length it falls back to growing), else growing as it goes.
#[derive(Debug, Clone, Copy)]
pub(super) struct PartSizer {
    base: u64,
    divisor: u64,
    /// (declared length, part size for it)
    hinted: Option<(u64, u64)>,
}

impl PartSizer {
    pub fn new(tuning: &Tuning, size_hint: Option<u64>) -> Self {
        // A declared length picks one part size up to `max_part_size`; one too long for that
        // is not trusted with larger buffers: its parts grow with the bytes actually sent.
        let hinted = size_hint.and_then(|len| {
            let needed = round_up_mib(len.div_ceil(MAX_PARTS));
            (needed <= tuning.max_part_size).then(|| (len, tuning.part_size.max(needed)))
        });
        Self {
            base: tuning.part_size,
            divisor: tuning.growth_divisor,
            hinted,
        }
    }

    pub fn size_after(&self, sent: u64) -> usize {
        let growth = || growth_size(self.base, self.divisor, sent);
        let size = match self.hinted {
            Some((len, size)) if sent < len => size,
            Some((_, size)) => size.max(growth()),
            None => growth(),
        };
        usize::try_from(size).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuning(part: u64, max_object: u64) -> Tuning {
        Tuning {
            threshold: part,
            part_size: part,
            max_part_size: part.max(64 * MIB),
            max_in_flight: 4,
            max_part_memory: 1024 * MIB,
            max_object_size: max_object,
            growth_divisor: growth_divisor(part, max_object).unwrap(),
        }
    }

    /// Sends `total` bytes through the sizer and returns the part count and largest part.
    fn simulate(sizer: &PartSizer, total: u64) -> (u64, u64) {
        let (mut sent, mut parts, mut largest) = (0u64, 0u64, 0u64);
        while sent < total {
            let size = (sizer.size_after(sent) as u64).min(total - sent);
            assert!(size >= MIN_PART_SIZE || sent + size == total);
            sent += size;
            parts += 1;
            largest = largest.max(size);
        }
        (parts, largest)
    }

    #[test]
    fn unknown_lengths_up_to_the_max_fit_in_10000_parts() {
        for (part, max) in [
            (5 * MIB, MAX_OBJECT_SIZE),
            (16 * MIB, 1024 * 1024 * MIB),
            (16 * MIB, MAX_OBJECT_SIZE),
            (5 * MIB, 10 * 1024 * MIB),
            (MAX_PART_SIZE, MAX_OBJECT_SIZE),
        ] {
            let sizer = PartSizer::new(&tuning(part, max), None);
            let (parts, largest) = simulate(&sizer, max);
            assert!(parts <= MAX_PARTS, "{parts} parts for {max} with {part}");
            assert!(largest <= MAX_PART_SIZE);
        }
    }

    #[test]
    fn small_unknown_lengths_keep_the_floor() {
        let sizer = PartSizer::new(&tuning(16 * MIB, 1024 * 1024 * MIB), None);
        // Up to several GiB, parts stay at the floor (memory stays small).
        assert_eq!(sizer.size_after(0) as u64, 16 * MIB);
        assert_eq!(sizer.size_after(8 * 1024 * MIB) as u64, 16 * MIB);
    }

    #[test]
    fn known_lengths_get_one_size_that_fits() {
        let t = tuning(16 * MIB, MAX_OBJECT_SIZE);
        let small = PartSizer::new(&t, Some(100 * MIB));
        assert_eq!(small.size_after(0) as u64, 16 * MIB);
        assert_eq!(small.size_after(64 * MIB) as u64, 16 * MIB);
        // 600 GiB still fits in 10,000 parts of at most 64 MiB: one size for all.
        let big = 600 * 1024 * MIB;
        let sizer = PartSizer::new(&t, Some(big));
        let (parts, largest) = simulate(&sizer, big);
        assert!(parts <= MAX_PARTS);
        assert_eq!(largest, round_up_mib(big.div_ceil(MAX_PARTS)));
        assert!(largest <= 64 * MIB);
        // A stream longer than declared falls back to growing parts.
        assert!(sizer.size_after(2 * big) as u64 > largest);
    }

    #[test]
    fn a_declared_length_never_picks_parts_above_max_part_size() {
        let t = tuning(16 * MIB, MAX_OBJECT_SIZE);
        // 1 TiB would need 105 MiB parts: the claim alone buys no larger buffer.
        for declared in [1024 * 1024 * MIB, MAX_OBJECT_SIZE] {
            let sizer = PartSizer::new(&t, Some(declared));
            assert_eq!(sizer.size_after(0) as u64, 16 * MIB, "{declared}");
            // Parts grow past the cap only as bytes really arrive, and the object still fits.
            let (parts, _) = simulate(&sizer, declared);
            assert!(parts <= MAX_PARTS);
        }
    }
}
