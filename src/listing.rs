//! Which images a list shows, in which order, from which marker: pure selection over registry
//! records. Visibility comes from `access`; this module only filters, sorts and pages.

use std::cmp::Ordering;

use crate::access::{Caller, ListScope};
use crate::error::{ApiError, ApiResult};
use crate::http::list_query::{Filters, ListQuery, SortDir, SortKey};
use crate::model::{ImageRecord, ImageStatus};
use crate::registry::StoredImage;

fn matches(r: &ImageRecord, f: &Filters) -> bool {
    let eq = |want: &Option<String>, have: &Option<String>| {
        want.as_ref()
            .is_none_or(|w| have.as_deref() == Some(w.as_str()))
    };
    eq(&f.name, &r.name)
        && f.status.as_ref().is_none_or(|s| s == r.status.as_str())
        && eq(&f.container_format, &r.container_format)
        && eq(&f.disk_format, &r.disk_format)
        && f.size_min.is_none_or(|n| r.size >= n)
        && f.size_max.is_none_or(|n| r.size <= n)
        && f.min_ram.is_none_or(|n| r.min_ram == n)
        && f.min_disk.is_none_or(|n| r.min_disk == n)
        && f.protected.is_none_or(|p| r.protected == p)
        && f.changes_since.is_none_or(|t| r.updated_at > t)
        && f.properties.iter().all(|(k, v)| {
            r.properties
                .get(k)
                .is_some_and(|pv| pv.as_deref() == Some(v.as_str()))
        })
}

fn primary(a: &ImageRecord, b: &ImageRecord, key: SortKey) -> Ordering {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    match key {
        SortKey::Name => s(&a.name).cmp(&s(&b.name)),
        SortKey::Status => a.status.as_str().cmp(b.status.as_str()),
        SortKey::ContainerFormat => s(&a.container_format).cmp(&s(&b.container_format)),
        SortKey::DiskFormat => s(&a.disk_format).cmp(&s(&b.disk_format)),
        SortKey::Size => a.size.cmp(&b.size),
        SortKey::Id => a.id.cmp(&b.id),
        SortKey::CreatedAt => a.created_at.cmp(&b.created_at),
        SortKey::UpdatedAt => a.updated_at.cmp(&b.updated_at),
    }
}

/// The full order: the key, then `created_at`, then `id`, all in the requested direction.
fn order(a: &ImageRecord, b: &ImageRecord, key: SortKey, dir: SortDir) -> Ordering {
    let ord = primary(a, b, key)
        .then_with(|| a.created_at.cmp(&b.created_at))
        .then_with(|| a.id.cmp(&b.id));
    match dir {
        SortDir::Asc => ord,
        SortDir::Desc => ord.reverse(),
    }
}

/// Selects one page of the images `caller` may list.
pub fn select(
    all: Vec<StoredImage>,
    caller: &Caller,
    q: &ListQuery,
) -> ApiResult<Vec<ImageRecord>> {
    let with_changes = q.filters.changes_since.is_some();
    let marker = match &q.marker {
        None => None,
        Some(id) => {
            let found = all.iter().find(|s| &s.record.id == id).filter(|s| {
                if s.record.status.is_deleted() {
                    caller.is_admin || (with_changes && caller.lists(s, ListScope::Caller))
                } else {
                    caller.can_see(s)
                }
            });
            match found {
                Some(s) => Some(s.record.clone()),
                None => {
                    return Err(ApiError::bad_request(
                        "Invalid marker. Image could not be found.",
                    ))
                }
            }
        }
    };
    let mut page: Vec<ImageRecord> = all
        .into_iter()
        .filter(|s| {
            let r = &s.record;
            let live = !r.status.is_deleted() && r.status != ImageStatus::Killed;
            (live || with_changes) && caller.lists(s, q.scope) && matches(r, &q.filters)
        })
        .map(|s| s.record)
        .collect();
    page.sort_by(|a, b| order(a, b, q.sort_key, q.sort_dir));
    let start = match &marker {
        Some(m) => {
            page.partition_point(|r| order(r, m, q.sort_key, q.sort_dir) != Ordering::Greater)
        }
        None => 0,
    };
    Ok(page
        .into_iter()
        .skip(start)
        .take(usize::try_from(q.limit).unwrap_or(usize::MAX))
        .collect())
}
