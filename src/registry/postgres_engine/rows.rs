//! How an image becomes a row: the JSON document, the extracted sort and filter columns, and
//! the members and counters written with it.

use tokio_postgres::types::ToSql;

use crate::model::ImageStatus;
use crate::registry::{RegistryError, StoredImage};

pub(super) fn encode(image: &StoredImage) -> Result<String, RegistryError> {
    serde_json::to_string(image).map_err(|e| RegistryError::Corrupt(e.to_string()))
}

pub(super) fn decode(text: &str) -> Result<StoredImage, RegistryError> {
    serde_json::from_str(text).map_err(|e| RegistryError::Corrupt(e.to_string()))
}

pub(super) fn is_live(status: ImageStatus) -> bool {
    !(status.is_deleted() || status == ImageStatus::Killed)
}

/// Sizes are u64; flipping the top bit maps them onto i64 in the same order.
pub(super) fn size_key(size: u64) -> i64 {
    (size ^ (1 << 63)) as i64
}

pub(super) fn str_key(v: &Option<String>) -> Vec<u8> {
    v.as_deref().unwrap_or_default().as_bytes().to_vec()
}

fn usage_of(s: &StoredImage) -> i128 {
    i128::from(s.quota_bytes())
}

/// Writes `after` (and, for an existing image, replaces `before`): the row, its members and
/// every counter, inside the caller's transaction.
pub(super) async fn write(
    tx: &deadpool_postgres::Transaction<'_>,
    before: Option<&StoredImage>,
    after: &StoredImage,
    saving_replica: Option<&str>,
    err: &(impl Fn(tokio_postgres::Error) -> RegistryError + Sync),
) -> Result<(), RegistryError> {
    let r = &after.record;
    let doc = encode(after)?;
    let params: [&(dyn ToSql + Sync); 13] = [
        &r.id.as_str(),
        &doc,
        &r.status.as_str(),
        &is_live(r.status),
        &r.is_public,
        &r.owner,
        &str_key(&r.name),
        &str_key(&r.disk_format),
        &str_key(&r.container_format),
        &size_key(r.size),
        &r.created_at.micros(),
        &r.updated_at.micros(),
        &saving_replica,
    ];
    if before.is_none() {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO images (id, doc, status, live, is_public, owner, name_key, \
                 disk_format_key, container_format_key, size_key, created_at, updated_at, \
                 saving_replica) \
                 VALUES ($1, $2::text::json, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .await
            .map_err(err)?;
        tx.execute(&stmt, &params).await.map_err(err)?;
    } else {
        let stmt = tx
            .prepare_cached(
                "UPDATE images SET doc = $2::text::json, status = $3, live = $4, \
                 is_public = $5, owner = $6, name_key = $7, disk_format_key = $8, \
                 container_format_key = $9, size_key = $10, created_at = $11, \
                 updated_at = $12, saving_replica = $13 WHERE id = $1",
            )
            .await
            .map_err(err)?;
        tx.execute(&stmt, &params).await.map_err(err)?;
    }
    // Members: the table follows the record's list.
    let old: Vec<&str> = before
        .map(|b| b.members.iter().map(|m| m.member.as_str()).collect())
        .unwrap_or_default();
    let new: Vec<&str> = after.members.iter().map(|m| m.member.as_str()).collect();
    let gone: Vec<&str> = old.iter().filter(|m| !new.contains(m)).copied().collect();
    let added: Vec<&str> = new.iter().filter(|m| !old.contains(m)).copied().collect();
    if !gone.is_empty() {
        tx.execute(
            "DELETE FROM members WHERE image_id = $1 AND member = ANY($2)",
            &[&r.id.as_str(), &gone],
        )
        .await
        .map_err(err)?;
    }
    if !added.is_empty() {
        tx.execute(
            "INSERT INTO members (image_id, member) SELECT $1, unnest($2::text[]) \
             ON CONFLICT DO NOTHING",
            &[&r.id.as_str(), &added],
        )
        .await
        .map_err(err)?;
    }
    // Counters, in a fixed lock order: status counts by name, then usage by owner.
    let mut statuses: Vec<(&str, i64)> = vec![];
    let status_before = before.map(|b| b.record.status);
    if status_before != Some(r.status) {
        if let Some(s) = status_before {
            statuses.push((s.as_str(), -1));
        }
        statuses.push((r.status.as_str(), 1));
    }
    statuses.sort();
    for (status, delta) in statuses {
        let stmt = tx
            .prepare_cached("UPDATE status_counts SET n = n + $2 WHERE status = $1")
            .await
            .map_err(err)?;
        tx.execute(&stmt, &[&status, &delta]).await.map_err(err)?;
    }
    let mut usage: Vec<((bool, &str), i128)> = vec![];
    fn key(o: &Option<String>) -> (bool, &str) {
        (o.is_some(), o.as_deref().unwrap_or_default())
    }
    match before {
        Some(b) if b.record.owner == r.owner => {
            usage.push((key(&r.owner), usage_of(after) - usage_of(b)));
        }
        _ => {
            if let Some(b) = before {
                usage.push((key(&b.record.owner), -usage_of(b)));
            }
            usage.push((key(&r.owner), usage_of(after)));
        }
    }
    usage.retain(|(_, d)| *d != 0);
    usage.sort();
    for ((has_owner, owner), delta) in usage {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO usage (has_owner, owner, bytes) VALUES ($1, $2, $3::text::numeric) \
                 ON CONFLICT (has_owner, owner) DO UPDATE SET bytes = usage.bytes + EXCLUDED.bytes",
            )
            .await
            .map_err(err)?;
        tx.execute(&stmt, &[&has_owner, &owner, &delta.to_string()])
            .await
            .map_err(err)?;
    }
    Ok(())
}

pub(super) fn decode_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<StoredImage>, RegistryError> {
    rows.iter().map(|row| decode(row.get(0))).collect()
}
