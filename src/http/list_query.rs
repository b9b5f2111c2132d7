//! The list and detail query string, parsed and validated into the registry's query types (pure).

use crate::access::ListScope;
use crate::http::image_meta::{parse_iso8601, parse_u64};
use crate::model::{ImageId, Timestamp};
use crate::registry::query::{Filters, ListQuery, SortDir, SortKey};

fn bad_filter(name: &str, value: &str) -> String {
    format!("Bad value passed to filter {name} got {value}")
}

/// Parses the raw query string. `limit` defaults to `limit_default` and is clamped to
/// `limit_max`. Unknown parameters are ignored; for repeated ones the last wins.
pub fn parse(raw: Option<&str>, limit_default: u64, limit_max: u64) -> Result<ListQuery, String> {
    let mut q = ListQuery {
        filters: Filters::default(),
        scope: ListScope::Caller,
        sort_key: SortKey::CreatedAt,
        sort_dir: SortDir::Desc,
        limit: limit_default,
        marker: None,
    };
    let pairs = form_urlencoded::parse(raw.unwrap_or("").as_bytes());
    let mut properties = std::collections::BTreeMap::new();
    for (key, value) in pairs {
        let (key, value) = (key.as_ref(), value.into_owned());
        let f = &mut q.filters;
        match key {
            "name" => f.name = Some(value),
            "status" => f.status = Some(value),
            "container_format" => f.container_format = Some(value),
            "disk_format" => f.disk_format = Some(value),
            "size_min" | "size_max" | "min_ram" | "min_disk" => {
                let n = parse_u64(&value).ok_or_else(|| bad_filter(key, &value))?;
                match key {
                    "size_min" => f.size_min = Some(n),
                    "size_max" => f.size_max = Some(n),
                    "min_ram" => f.min_ram = Some(n),
                    _ => f.min_disk = Some(n),
                }
            }
            "protected" => {
                f.protected = Some(match value.to_ascii_lowercase().as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(bad_filter(key, &value)),
                })
            }
            "is_public" => {
                q.scope = match value.to_ascii_lowercase().as_str() {
                    "true" | "1" => ListScope::Caller,
                    "false" | "0" => ListScope::NonPublic,
                    "none" => ListScope::All,
                    _ => return Err(bad_filter(key, &value)),
                }
            }
            "changes-since" => {
                let t = parse_iso8601(&value)
                    .ok_or_else(|| format!("Unrecognized changes-since value {value}"))?;
                f.changes_since = Some(Timestamp::from_datetime(t));
            }
            "sort_key" => {
                q.sort_key = match value.as_str() {
                    "name" => SortKey::Name,
                    "status" => SortKey::Status,
                    "container_format" => SortKey::ContainerFormat,
                    "disk_format" => SortKey::DiskFormat,
                    "size" => SortKey::Size,
                    "id" => SortKey::Id,
                    "created_at" => SortKey::CreatedAt,
                    "updated_at" => SortKey::UpdatedAt,
                    _ => return Err(format!("Unsupported sort_key. Acceptable values: name, status, container_format, disk_format, size, id, created_at, updated_at (got {value})")),
                }
            }
            "sort_dir" => {
                q.sort_dir = match value.as_str() {
                    "asc" => SortDir::Asc,
                    "desc" => SortDir::Desc,
                    _ => return Err(format!("Unsupported sort_dir. Acceptable values: asc, desc (got {value})")),
                }
            }
            "limit" => {
                if value.strip_prefix('-').and_then(parse_u64).is_some() {
                    return Err("limit param must be positive".to_owned());
                }
                q.limit = parse_u64(&value)
                    .ok_or_else(|| "limit param must be an integer".to_owned())?
                    .min(limit_max);
            }
            "marker" => {
                q.marker = Some(
                    ImageId::parse(&value).ok_or_else(|| "Invalid marker format".to_owned())?,
                )
            }
            _ => {
                if let Some(prop) = key.strip_prefix("property-") {
                    properties.insert(prop.to_owned(), value);
                }
            }
        }
    }
    q.filters.properties = properties.into_iter().collect();
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Result<ListQuery, String> {
        parse(Some(q), 25, 1000)
    }

    #[test]
    fn defaults() {
        let q = parse(None, 25, 1000).unwrap();
        assert_eq!(q.limit, 25);
        assert_eq!(q.sort_key, SortKey::CreatedAt);
        assert_eq!(q.sort_dir, SortDir::Desc);
        assert_eq!(q.scope, ListScope::Caller);
    }

    #[test]
    fn limits() {
        assert_eq!(p("limit=5").unwrap().limit, 5);
        assert_eq!(p("limit=0").unwrap().limit, 0);
        assert_eq!(p("limit=5000").unwrap().limit, 1000);
        assert_eq!(p("limit=-1").unwrap_err(), "limit param must be positive");
        assert_eq!(
            p("limit=abc").unwrap_err(),
            "limit param must be an integer"
        );
        assert_eq!(p("limit=").unwrap_err(), "limit param must be an integer");
        assert!(p("limit=99999999999999999999999").is_err());
    }

    #[test]
    fn integer_filters_are_validated() {
        for key in ["size_min", "size_max", "min_ram", "min_disk"] {
            assert_eq!(
                p(&format!("{key}=x")).unwrap_err(),
                format!("Bad value passed to filter {key} got x")
            );
            assert!(p(&format!("{key}=-1")).is_err());
            assert!(p(&format!("{key}=10")).is_ok());
        }
    }

    #[test]
    fn boolean_filters() {
        assert_eq!(p("protected=TRUE").unwrap().filters.protected, Some(true));
        assert_eq!(p("protected=0").unwrap().filters.protected, Some(false));
        assert!(p("protected=none").is_err());
        assert!(p("protected=yes").is_err());
        assert_eq!(p("is_public=None").unwrap().scope, ListScope::All);
        assert_eq!(p("is_public=false").unwrap().scope, ListScope::NonPublic);
        assert!(p("is_public=maybe").is_err());
    }

    #[test]
    fn sorting() {
        assert_eq!(
            p("sort_key=size&sort_dir=asc").unwrap().sort_key,
            SortKey::Size
        );
        assert!(p("sort_key=Name")
            .unwrap_err()
            .contains("Unsupported sort_key"));
        assert!(p("sort_dir=ASC").is_err());
    }

    #[test]
    fn markers_and_changes_since() {
        assert_eq!(p("marker=nope").unwrap_err(), "Invalid marker format");
        assert!(p("marker=3c1b0d2e-aaaa-4bbb-8ccc-0123456789ab").is_ok());
        for ok in [
            "2011-01-01",
            "20110101",
            "2011-01-01T10:00:00",
            "2011-01-01T10:00:00%2B01:00",
            "2011-01-01T10:00:00Z",
        ] {
            assert!(p(&format!("changes-since={ok}")).is_ok(), "{ok}");
        }
        assert!(p("changes-since=").is_err());
        assert!(p("changes-since=yesterday")
            .unwrap_err()
            .contains("Unrecognized changes-since value"));
        let plus = p("changes-since=2011-01-01T10:00:00%2B01:00").unwrap();
        let utc = p("changes-since=2011-01-01T09:00:00Z").unwrap();
        assert_eq!(plus.filters.changes_since, utc.filters.changes_since);
    }

    #[test]
    fn literal_values_and_properties() {
        let q = p("name=in:a,b&property-Distro=x&property-os_type=linux&deleted=true").unwrap();
        assert_eq!(q.filters.name.as_deref(), Some("in:a,b"));
        assert_eq!(
            q.filters.properties,
            vec![
                ("Distro".into(), "x".into()),
                ("os_type".into(), "linux".into())
            ]
        );
    }
}
