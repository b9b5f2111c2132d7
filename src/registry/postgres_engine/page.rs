//! The statement for one batch of a list page: keyset pagination over the indexed columns.

use tokio_postgres::types::{ToSql, Type};

use super::rows::{size_key, str_key};
use crate::model::ImageRecord;
use crate::registry::query::{SortDir, SortKey};
use crate::registry::{Audience, PageRequest};

/// The columns a list sorts by, in order: the key, then `created_at`, then `id`.
fn order_columns(key: SortKey) -> &'static [&'static str] {
    match key {
        SortKey::Name => &["name_key", "created_at", "id"],
        SortKey::Status => &["status", "created_at", "id"],
        SortKey::ContainerFormat => &["container_format_key", "created_at", "id"],
        SortKey::DiskFormat => &["disk_format_key", "created_at", "id"],
        SortKey::Size => &["size_key", "created_at", "id"],
        SortKey::Id => &["id"],
        SortKey::CreatedAt => &["created_at", "id"],
        SortKey::UpdatedAt => &["updated_at", "created_at", "id"],
    }
}

/// A statement being built: its text and its typed parameters.
#[derive(Default)]
pub(super) struct Sql {
    pub(super) text: String,
    pub(super) params: Vec<(Box<dyn ToSql + Sync + Send>, Type)>,
}

impl Sql {
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static, ty: Type) -> String {
        self.params.push((Box::new(value), ty));
        format!("${}", self.params.len())
    }

    fn bind_key_value(&mut self, column: &str, r: &ImageRecord) -> String {
        match column {
            "name_key" => self.bind(str_key(&r.name), Type::BYTEA),
            "container_format_key" => self.bind(str_key(&r.container_format), Type::BYTEA),
            "disk_format_key" => self.bind(str_key(&r.disk_format), Type::BYTEA),
            "status" => self.bind(r.status.as_str().to_owned(), Type::TEXT),
            "size_key" => self.bind(size_key(r.size), Type::INT8),
            "created_at" => self.bind(r.created_at.micros(), Type::INT8),
            "updated_at" => self.bind(r.updated_at.micros(), Type::INT8),
            _ => self.bind(r.id.as_str().to_owned(), Type::TEXT),
        }
    }
}

/// The statement for one batch of a list page: rows after `after` (the marker, or the last
/// row of the previous batch) in the page's order.
pub(super) fn page_query(req: &PageRequest, after: Option<&ImageRecord>, batch: u64) -> Sql {
    let mut sql = Sql::default();
    let f = &req.filters;
    let mut conds: Vec<String> = vec![];
    match f.changes_since {
        Some(t) => {
            let p = sql.bind(t.micros(), Type::INT8);
            conds.push(format!("updated_at > {p}"));
        }
        None => conds.push("live".to_owned()),
    }
    match &req.audience {
        Audience::Everything => {}
        Audience::NonPublic => conds.push("NOT is_public".to_owned()),
        Audience::Tenant(None) => conds.push("is_public".to_owned()),
        Audience::Tenant(Some(o)) => {
            let p = sql.bind(o.clone(), Type::TEXT);
            conds.push(format!(
                "(is_public OR owner = {p} OR EXISTS (SELECT 1 FROM members m \
                 WHERE m.image_id = images.id AND m.member = {p}))"
            ));
        }
    }
    // Narrowing only: `matches` decides (a missing string and an empty one share a key).
    for (column, value) in [
        ("name_key", &f.name),
        ("disk_format_key", &f.disk_format),
        ("container_format_key", &f.container_format),
    ] {
        if let Some(v) = value {
            let p = sql.bind(v.as_bytes().to_vec(), Type::BYTEA);
            conds.push(format!("{column} = {p}"));
        }
    }
    if let Some(s) = &f.status {
        let p = sql.bind(s.clone(), Type::TEXT);
        conds.push(format!("status = {p}"));
    }
    if let Some(n) = f.size_min {
        let p = sql.bind(size_key(n), Type::INT8);
        conds.push(format!("size_key >= {p}"));
    }
    if let Some(n) = f.size_max {
        let p = sql.bind(size_key(n), Type::INT8);
        conds.push(format!("size_key <= {p}"));
    }
    let columns = order_columns(req.sort_key);
    let (cmp, dir) = match req.sort_dir {
        SortDir::Asc => (">", "ASC"),
        SortDir::Desc => ("<", "DESC"),
    };
    if let Some(m) = after {
        let values: Vec<String> = columns.iter().map(|c| sql.bind_key_value(c, m)).collect();
        conds.push(format!(
            "({}) {cmp} ({})",
            columns.join(", "),
            values.join(", ")
        ));
    }
    let order: Vec<String> = columns.iter().map(|c| format!("{c} {dir}")).collect();
    let limit = sql.bind(batch as i64, Type::INT8);
    sql.text = format!(
        "SELECT doc::text FROM images WHERE {} ORDER BY {} LIMIT {limit}",
        conds.join(" AND "),
        order.join(", ")
    );
    sql
}
