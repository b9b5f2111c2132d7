//! A store-wide cap on the memory that uploads hold in part buffers, shared by every upload of
//! the store, so that many clients at once cannot make the gateway hold many parts each.
//!
//! Each upload keeps a [`Reservation`] covering the parts it holds in memory (those in flight
//! plus the one being read) and resizes it before reading each part. The one rule that keeps
//! uploads from deadlocking on each other: an upload waits for the budget only while it holds
//! none of it. An upload that holds some and cannot get more either finishes a part of its own
//! first or, holding nothing in flight, gives back what it holds and then waits. Waiters are
//! served in order (tokio's semaphore is fair), so a large wait is not starved by small ones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget's unit: part sizes are whole MiB (or rounded up to one).
const UNIT: u64 = 1024 * 1024;

#[derive(Debug)]
struct Shared {
    permits: Arc<Semaphore>,
    /// The whole budget in units; one part never asks for more.
    total: u32,
    /// The most units held at once since the store opened.
    peak: AtomicU64,
}

/// The budget of one store; clones share it.
#[derive(Debug, Clone)]
pub struct PartBudget(Arc<Shared>);

impl PartBudget {
    /// A budget of `bytes` (rounded down to whole MiB, at least one).
    pub fn new(bytes: u64) -> Self {
        let total = u32::try_from(bytes / UNIT).unwrap_or(u32::MAX).max(1);
        Self(Arc::new(Shared {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
            peak: AtomicU64::new(0),
        }))
    }

    /// Units for `parts` parts of `part_len` bytes, or `None` past the whole budget. A single
    /// part larger than the budget counts as the whole budget, so it can still go alone.
    fn units(&self, parts: usize, part_len: usize) -> Option<u32> {
        let per_part = (part_len as u64)
            .div_ceil(UNIT)
            .clamp(1, u64::from(self.0.total));
        let wanted = per_part.saturating_mul(parts as u64);
        u32::try_from(wanted).ok().filter(|&w| w <= self.0.total)
    }

    /// The whole budget in bytes.
    pub fn limit_bytes(&self) -> u64 {
        u64::from(self.0.total) * UNIT
    }

    /// Bytes held by reservations right now.
    pub fn held_bytes(&self) -> u64 {
        let free = self.0.permits.available_permits() as u64;
        (u64::from(self.0.total) - free) * UNIT
    }

    /// The most bytes held at once since the store opened.
    pub fn peak_bytes(&self) -> u64 {
        self.0.peak.load(Ordering::Relaxed) * UNIT
    }

    fn note_peak(&self) {
        let held = u64::from(self.0.total) - self.0.permits.available_permits() as u64;
        self.0.peak.fetch_max(held, Ordering::Relaxed);
    }
}

/// The share of a [`PartBudget`] one upload holds; returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: PartBudget,
    held: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    pub fn new(budget: &PartBudget) -> Self {
        Self {
            budget: budget.clone(),
            held: None,
        }
    }

    fn held_units(&self) -> u32 {
        self.held
            .as_ref()
            .map_or(0, |p| u32::try_from(p.num_permits()).unwrap_or(u32::MAX))
    }

    /// Resizes the reservation to `parts` parts of `part_len` bytes without waiting: gives
    /// back any surplus, or takes what is missing if the budget has it. False when it has
    /// not, and the reservation is unchanged.
    pub fn try_cover(&mut self, parts: usize, part_len: usize) -> bool {
        let Some(wanted) = self.budget.units(parts, part_len) else {
            return false;
        };
        let held = self.held_units();
        if wanted <= held {
            if let Some(permit) = &mut self.held {
                drop(permit.split((held - wanted) as usize));
            }
            return true;
        }
        let Ok(more) = Arc::clone(&self.budget.0.permits).try_acquire_many_owned(wanted - held)
        else {
            return false;
        };
        match &mut self.held {
            Some(permit) => permit.merge(more),
            None => self.held = Some(more),
        }
        self.budget.note_peak();
        true
    }

    /// Gives back all it holds, then waits for one part of `part_len` bytes. Only for an
    /// upload with nothing else in memory: it holds nothing while it waits.
    pub async fn wait_cover(&mut self, part_len: usize) {
        self.held = None;
        let wanted = self
            .budget
            .units(1, part_len)
            .expect("one part always fits: it counts as at most the whole budget");
        let permit = Arc::clone(&self.budget.0.permits)
            .acquire_many_owned(wanted)
            .await
            .expect("the budget's semaphore is never closed");
        self.held = Some(permit);
        self.budget.note_peak();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: usize = UNIT as usize;

    #[test]
    fn covers_grow_and_shrink_within_the_budget() {
        let budget = PartBudget::new(10 * UNIT);
        let mut a = Reservation::new(&budget);
        assert!(a.try_cover(3, 2 * MIB));
        assert_eq!(budget.held_bytes(), 6 * UNIT);
        let mut b = Reservation::new(&budget);
        assert!(!b.try_cover(3, 2 * MIB), "only 4 MiB are left");
        assert!(b.try_cover(2, 2 * MIB));
        // Shrinking gives the surplus back at once.
        assert!(a.try_cover(1, 2 * MIB));
        assert_eq!(budget.held_bytes(), 6 * UNIT);
        drop(b);
        assert_eq!(budget.held_bytes(), 2 * UNIT);
        drop(a);
        assert_eq!(budget.held_bytes(), 0);
        assert_eq!(budget.peak_bytes(), 10 * UNIT);
    }

    #[test]
    fn a_part_larger_than_the_budget_takes_all_of_it() {
        let budget = PartBudget::new(8 * UNIT);
        let mut r = Reservation::new(&budget);
        assert!(r.try_cover(1, 64 * MIB));
        assert_eq!(budget.held_bytes(), budget.limit_bytes());
        // Never two of them, nor several parts past the budget.
        drop(r);
        let mut two = Reservation::new(&budget);
        assert!(!two.try_cover(2, 64 * MIB));
        assert!(!two.try_cover(3, 3 * MIB), "9 MiB is past the 8 MiB budget");
        assert_eq!(budget.held_bytes(), 0);
        // Partial MiB round up.
        let small = PartBudget::new(4 * UNIT);
        let mut s = Reservation::new(&small);
        assert!(s.try_cover(1, MIB + 1));
        assert_eq!(small.held_bytes(), 2 * UNIT);
    }

    #[tokio::test]
    async fn a_waiting_upload_gives_back_what_it_held_first() {
        // Two uploads each hold half and each need all: with waits that keep what they hold
        // they would wait for each other forever.
        let budget = PartBudget::new(4 * UNIT);
        let mut a = Reservation::new(&budget);
        let mut b = Reservation::new(&budget);
        assert!(a.try_cover(1, 2 * MIB));
        assert!(b.try_cover(1, 2 * MIB));
        let wait_a = tokio::spawn(async move {
            a.wait_cover(4 * MIB).await;
            a
        });
        // A gave its share back: the semaphore queues it first for what is freed (waiters are
        // served in order), so B cannot grow now and gives back by waiting too.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!b.try_cover(2, 2 * MIB));
        let wait_b = tokio::spawn(async move {
            b.wait_cover(4 * MIB).await;
            drop(b);
        });
        let a = tokio::time::timeout(Duration::from_secs(5), wait_a)
            .await
            .expect("A got the budget")
            .unwrap();
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), wait_b)
            .await
            .expect("B got the budget after A")
            .unwrap();
        assert_eq!(budget.held_bytes(), 0);
    }
}
