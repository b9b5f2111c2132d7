//! What a POST or PUT asks to change ([`MetaPatch`], decoded from headers by `http::image_meta`),
//! the format rules it must obey, and how it is applied to a record.

use std::collections::BTreeMap;

use crate::access::Caller;
use crate::error::{ApiError, ApiResult};
use crate::model::ImageRecord;

/// What a POST or PUT asks to change. `Some(None)` means "set to null" (an empty header).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MetaPatch {
    pub name: Option<Option<String>>,
    pub id: Option<String>,
    pub status: Option<String>,
    pub size: Option<u64>,
    pub virtual_size: Option<Option<u64>>,
    pub disk_format: Option<Option<String>>,
    pub container_format: Option<Option<String>>,
    pub checksum: Option<Option<String>>,
    pub min_disk: Option<u64>,
    pub min_ram: Option<u64>,
    pub is_public: Option<bool>,
    pub protected: Option<bool>,
    pub owner: Option<Option<String>>,
    pub location: Option<String>,
    pub store: Option<String>,
    pub properties: BTreeMap<String, Option<String>>,
}

const AMAZON_FORMATS: &[&str] = &["aki", "ari", "ami"];

/// Checks the formats a request names against the allowed lists and applies the aki/ari/ami
/// pairing (which looks at the request only).
pub fn validate_formats(
    patch: &mut MetaPatch,
    disk_formats: &[String],
    container_formats: &[String],
) -> ApiResult<()> {
    if let Some(disk) = &patch.disk_format {
        let value = disk.as_deref().unwrap_or("");
        if !disk_formats.iter().any(|f| f == value) {
            return Err(ApiError::bad_request(format!(
                "Invalid disk format '{value}' for image."
            )));
        }
    }
    if let Some(container) = &patch.container_format {
        let value = container.as_deref().unwrap_or("");
        if !container_formats.iter().any(|f| f == value) {
            return Err(ApiError::bad_request(format!(
                "Invalid container format '{value}' for image."
            )));
        }
    }
    let disk = patch.disk_format.clone().flatten();
    let container = patch.container_format.clone().flatten();
    let is_amazon = |f: &Option<String>| f.as_deref().is_some_and(|f| AMAZON_FORMATS.contains(&f));
    if is_amazon(&disk) || is_amazon(&container) {
        match (&disk, &container) {
            (Some(d), None) => patch.container_format = Some(Some(d.clone())),
            (None, Some(c)) => patch.disk_format = Some(Some(c.clone())),
            (Some(d), Some(c)) if d != c => {
                return Err(ApiError::bad_request("Invalid mix of disk and container formats. When setting a disk or container format to one of 'aki', 'ari', or 'ami', the container and disk formats must match."))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Formats must be known before data or a location is attached.
pub(super) fn require_formats(record: &ImageRecord) -> ApiResult<()> {
    if record.disk_format.is_none() {
        return Err(ApiError::bad_request("Disk format is not specified."));
    }
    if record.container_format.is_none() {
        return Err(ApiError::bad_request("Container format is not specified."));
    }
    Ok(())
}

/// Applies the patch's core fields and properties to a record.
pub(super) fn apply_patch(
    record: &mut ImageRecord,
    patch: &MetaPatch,
    caller: &Caller,
    purge: bool,
) {
    fn set<T: Clone>(field: &mut T, value: &Option<T>) {
        if let Some(v) = value {
            *field = v.clone();
        }
    }
    set(&mut record.name, &patch.name);
    set(&mut record.size, &patch.size);
    set(&mut record.virtual_size, &patch.virtual_size);
    set(&mut record.disk_format, &patch.disk_format);
    set(&mut record.container_format, &patch.container_format);
    set(&mut record.checksum, &patch.checksum);
    set(&mut record.min_disk, &patch.min_disk);
    set(&mut record.min_ram, &patch.min_ram);
    set(&mut record.is_public, &patch.is_public);
    set(&mut record.protected, &patch.protected);
    if caller.is_admin {
        set(&mut record.owner, &patch.owner);
    }
    if purge {
        record.properties = patch.properties.clone();
    } else {
        for (k, v) in &patch.properties {
            record.properties.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_CONTAINER_FORMATS, DEFAULT_DISK_FORMATS};

    fn check(disk: Option<&str>, container: Option<&str>) -> (ApiResult<()>, MetaPatch) {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (d, c) = (
            owned(DEFAULT_DISK_FORMATS),
            owned(DEFAULT_CONTAINER_FORMATS),
        );
        let nullable = |v: &str| (!v.is_empty()).then(|| v.to_owned());
        let mut p = MetaPatch {
            disk_format: disk.map(nullable),
            container_format: container.map(nullable),
            ..MetaPatch::default()
        };
        (validate_formats(&mut p, &d, &c), p)
    }

    #[test]
    fn formats_and_amazon_pairing() {
        assert_eq!(
            check(Some("nope"), None).0.unwrap_err().message,
            "Invalid disk format 'nope' for image."
        );
        assert!(check(None, Some("")).0.is_err());
        let (result, p) = check(None, Some("ami"));
        result.unwrap();
        assert_eq!(p.disk_format, Some(Some("ami".into())));
        assert!(check(Some("ari"), Some("aki"))
            .0
            .unwrap_err()
            .message
            .contains("Invalid mix of disk and container formats"));
    }
}
