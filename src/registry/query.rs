//! What a list asks for: filters, sort order and paging, and the two rules every registry engine
//! applies the same way (which records a filter matches, and the full sort order). The HTTP layer
//! only parses a query string into these.

use std::cmp::Ordering;

use crate::access::ListScope;
use crate::model::{ImageId, ImageRecord, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortKey {
    Name,
    Status,
    ContainerFormat,
    DiskFormat,
    Size,
    Id,
    CreatedAt,
    UpdatedAt,
}

impl SortKey {
    pub const ALL: [SortKey; 8] = [
        Self::Name,
        Self::Status,
        Self::ContainerFormat,
        Self::DiskFormat,
        Self::Size,
        Self::Id,
        Self::CreatedAt,
        Self::UpdatedAt,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortDir {
    Asc,
    Desc,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub name: Option<String>,
    pub status: Option<String>,
    pub container_format: Option<String>,
    pub disk_format: Option<String>,
    pub size_min: Option<u64>,
    pub size_max: Option<u64>,
    pub min_ram: Option<u64>,
    pub min_disk: Option<u64>,
    pub protected: Option<bool>,
    pub changes_since: Option<Timestamp>,
    /// `property-<key>=<value>`, the key exactly as written.
    pub properties: Vec<(String, String)>,
}

impl Filters {
    /// Does the record pass every filter? (Visibility and liveness are the scope's business.)
    pub fn matches(&self, r: &ImageRecord) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| have.as_deref() == Some(w.as_str()))
        };
        eq(&self.name, &r.name)
            && self.status.as_ref().is_none_or(|s| s == r.status.as_str())
            && eq(&self.container_format, &r.container_format)
            && eq(&self.disk_format, &r.disk_format)
            && self.size_min.is_none_or(|n| r.size >= n)
            && self.size_max.is_none_or(|n| r.size <= n)
            && self.min_ram.is_none_or(|n| r.min_ram == n)
            && self.min_disk.is_none_or(|n| r.min_disk == n)
            && self.protected.is_none_or(|p| r.protected == p)
            && self.changes_since.is_none_or(|t| r.updated_at > t)
            && self.properties.iter().all(|(k, v)| {
                r.properties
                    .get(k)
                    .is_some_and(|pv| pv.as_deref() == Some(v.as_str()))
            })
    }
}

/// A parsed list or detail query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub filters: Filters,
    pub scope: ListScope,
    pub sort_key: SortKey,
    pub sort_dir: SortDir,
    pub limit: u64,
    pub marker: Option<ImageId>,
}

fn primary(a: &ImageRecord, b: &ImageRecord, key: SortKey) -> Ordering {
    fn s(v: &Option<String>) -> &str {
        v.as_deref().unwrap_or_default()
    }
    match key {
        SortKey::Name => s(&a.name).cmp(s(&b.name)),
        SortKey::Status => a.status.as_str().cmp(b.status.as_str()),
        SortKey::ContainerFormat => s(&a.container_format).cmp(s(&b.container_format)),
        SortKey::DiskFormat => s(&a.disk_format).cmp(s(&b.disk_format)),
        SortKey::Size => a.size.cmp(&b.size),
        SortKey::Id => a.id.cmp(&b.id),
        SortKey::CreatedAt => a.created_at.cmp(&b.created_at),
        SortKey::UpdatedAt => a.updated_at.cmp(&b.updated_at),
    }
}

/// The full list order: the key (a missing string sorts as empty), then `created_at`, then `id`,
/// all in the requested direction.
pub fn order(a: &ImageRecord, b: &ImageRecord, key: SortKey, dir: SortDir) -> Ordering {
    let ord = primary(a, b, key)
        .then_with(|| a.created_at.cmp(&b.created_at))
        .then_with(|| a.id.cmp(&b.id));
    match dir {
        SortDir::Asc => ord,
        SortDir::Desc => ord.reverse(),
    }
}
