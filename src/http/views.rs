//! JSON views of images and memberships, serialised as Glance did (`", "` and `": "`
//! separators, so an empty list is exactly `{"images": []}`). Locations never appear here.

use std::collections::BTreeMap;
use std::io::{self, Write};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::ser::Formatter;

use crate::model::ImageRecord;

/// The twenty keys of the full form (Glance v1's eighteen and the multihash), declared in
/// alphabetical order: serialised directly, they come out in the order responses have always had.
#[derive(Serialize)]
pub struct FullImage<'a> {
    checksum: Option<&'a str>,
    container_format: Option<&'a str>,
    created_at: String,
    deleted: bool,
    deleted_at: Option<String>,
    disk_format: Option<&'a str>,
    id: &'a str,
    is_public: bool,
    /// Only for admins when `show_image_direct_url` is on: the credential-free location.
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<String>,
    min_disk: u64,
    min_ram: u64,
    name: Option<&'a str>,
    os_hash_algo: Option<&'a str>,
    os_hash_value: Option<&'a str>,
    owner: Option<&'a str>,
    properties: &'a BTreeMap<String, Option<String>>,
    protected: bool,
    size: u64,
    status: &'a str,
    updated_at: String,
    virtual_size: Option<u64>,
}

/// The six keys of the brief form, alphabetical as [`FullImage`]'s.
#[derive(Serialize)]
pub struct BriefImage<'a> {
    checksum: Option<&'a str>,
    container_format: Option<&'a str>,
    disk_format: Option<&'a str>,
    id: &'a str,
    name: Option<&'a str>,
    size: u64,
}

/// `{"<key>": value}`, serialised without building a `serde_json::Value` first (a list page
/// is written straight from the records).
pub struct Keyed<'a, T: ?Sized>(pub &'static str, pub &'a T);

impl<T: Serialize + ?Sized> Serialize for Keyed<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.0, self.1)?;
        map.end()
    }
}

pub fn full(record: &ImageRecord, direct_url: Option<String>) -> FullImage<'_> {
    FullImage {
        id: record.id.as_str(),
        name: record.name.as_deref(),
        status: record.status.as_str(),
        size: record.size,
        virtual_size: record.virtual_size,
        disk_format: record.disk_format.as_deref(),
        container_format: record.container_format.as_deref(),
        checksum: record.checksum.as_deref(),
        os_hash_algo: record.os_hash_algo.as_deref(),
        os_hash_value: record.os_hash_value.as_deref(),
        min_disk: record.min_disk,
        min_ram: record.min_ram,
        is_public: record.is_public,
        protected: record.protected,
        owner: record.owner.as_deref(),
        created_at: record.created_at.render(),
        updated_at: record.updated_at.render(),
        deleted_at: record.deleted_at.map(|t| t.render()),
        deleted: record.deleted,
        properties: &record.properties,
        location: direct_url,
    }
}

pub fn brief(record: &ImageRecord) -> BriefImage<'_> {
    BriefImage {
        id: record.id.as_str(),
        name: record.name.as_deref(),
        disk_format: record.disk_format.as_deref(),
        container_format: record.container_format.as_deref(),
        checksum: record.checksum.as_deref(),
        size: record.size,
    }
}

#[derive(Serialize)]
pub struct MemberView<'a> {
    pub member_id: &'a str,
    pub can_share: bool,
}

#[derive(Serialize)]
pub struct SharedImageView<'a> {
    pub image_id: &'a str,
    pub can_share: bool,
}

/// serde_json's compact output with Python's separators.
struct GlanceFormatter;

/// `", "` between items, as Python writes arrays and objects.
fn item_separator<W: ?Sized + Write>(writer: &mut W, first: bool) -> io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

impl Formatter for GlanceFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        item_separator(w, first)
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        item_separator(w, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }
}

pub fn to_json_bytes(value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GlanceFormatter);
    value
        .serialize(&mut ser)
        .expect("views serialise to JSON without error");
    out
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        to_json_bytes(value),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn separators_match_glance() {
        assert_eq!(
            to_json_bytes(&json!({"images": []})),
            br#"{"images": []}"#.to_vec()
        );
        assert_eq!(
            to_json_bytes(&json!({"a": [1, 2]})),
            br#"{"a": [1, 2]}"#.to_vec()
        );
    }

    #[test]
    fn full_form_has_exactly_twenty_keys() {
        let r = ImageRecord::new(
            crate::model::ImageId::random(),
            crate::model::Timestamp::now(),
        );
        let v: serde_json::Value = serde_json::from_slice(&to_json_bytes(&full(&r, None))).unwrap();
        // Glance v1's eighteen, plus the multihash pair.
        assert_eq!(v.as_object().unwrap().len(), 20);
        let v: serde_json::Value = serde_json::from_slice(&to_json_bytes(&brief(&r))).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 6);
    }

    #[test]
    fn views_serialise_as_their_sorted_values() {
        let mut r = ImageRecord::new(
            crate::model::ImageId::random(),
            crate::model::Timestamp::now(),
        );
        r.name = Some("n".into());
        r.properties.insert("os".into(), Some("linux".into()));
        let full = full(&r, Some("file:///x".into()));
        let direct = to_json_bytes(&Keyed("images", &[&full]));
        let through_value = to_json_bytes(&json!({ "images": [full] }));
        assert_eq!(direct, through_value);
        let brief = brief(&r);
        assert_eq!(
            to_json_bytes(&Keyed("image", &brief)),
            to_json_bytes(&json!({ "image": brief }))
        );
    }
}
