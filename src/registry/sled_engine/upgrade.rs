//! Schema 1 → 2: schema 1 kept only `images` and `member_images`; schema 2 adds the list indexes,
//! the counters and the per-state index, built here once from the records (whose encoding is
//! unchanged). The derived trees are cleared first, so an upgrade interrupted by a crash simply
//! runs again on the next start; the version is written only after everything is built.

use std::collections::BTreeMap;

use sled::Batch;

use super::{decode, keys, RegistryError, Trees};
use crate::registry::WALKED_STATES;

/// Records indexed per batch (bounds the upgrade's memory).
const BATCH: usize = 10_000;
const REPORT_EVERY: u64 = 100_000;

pub(super) fn from_v1(t: &Trees) -> Result<(), RegistryError> {
    let total = t.images.len();
    tracing::info!(
        images = total,
        "upgrading the registry to schema 2: building indexes"
    );
    t.idx.clear()?;
    t.counters.clear()?;
    t.in_state.clear()?;
    let mut counters: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let (mut idx, mut states, mut members) = (Batch::default(), Batch::default(), Batch::default());
    let mut pending = 0;
    let mut done: u64 = 0;
    for kv in t.images.iter() {
        let (_, bytes) = kv?;
        let stored = decode(&bytes)?;
        for k in keys::index_keys(&stored) {
            idx.insert(k, &[]);
        }
        if WALKED_STATES.contains(&stored.record.status) {
            states.insert(
                keys::state_key(stored.record.status, &stored.record.id),
                &[],
            );
        }
        for m in &stored.members {
            members.insert(keys::member_image(&m.member, &stored.record.id), &[]);
        }
        *counters
            .entry(keys::status_count(stored.record.status))
            .or_default() += 1;
        *counters
            .entry(keys::usage(stored.record.owner.as_deref()))
            .or_default() += stored.quota_bytes();
        pending += 1;
        done += 1;
        if pending == BATCH {
            t.idx.apply_batch(std::mem::take(&mut idx))?;
            t.in_state.apply_batch(std::mem::take(&mut states))?;
            t.member_images.apply_batch(std::mem::take(&mut members))?;
            pending = 0;
        }
        if done.is_multiple_of(REPORT_EVERY) {
            tracing::info!(done, total, "registry upgrade in progress");
        }
    }
    t.idx.apply_batch(idx)?;
    t.in_state.apply_batch(states)?;
    t.member_images.apply_batch(members)?;
    let mut batch = Batch::default();
    for (k, v) in counters {
        batch.insert(k, &v.to_be_bytes());
    }
    t.counters.apply_batch(batch)?;
    t.db.flush()?;
    tracing::info!(images = done, "registry upgraded to schema 2");
    Ok(())
}
