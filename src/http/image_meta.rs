//! The `x-image-meta-*` header codec, pure: request headers → [`MetaPatch`] (a catalogue type),
//! and an image record → response headers. No I/O, no configuration beyond what is passed in.

use std::borrow::Cow;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use time::format_description::well_known::Iso8601;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use crate::catalog::MetaPatch;
use crate::model::ImageRecord;

const PREFIX: &str = "x-image-meta-";
const PROPERTY_PREFIX: &str = "x-image-meta-property-";
const MAX_INT32: u64 = 2_147_483_647;

/// The core fields a request may name; anything else under `x-image-meta-` is a bad header.
const CORE_FIELDS: &[&str] = &[
    "name",
    "id",
    "status",
    "size",
    "virtual_size",
    "disk_format",
    "container_format",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "min_disk",
    "min_ram",
    "is_public",
    "protected",
    "owner",
    "created_at",
    "updated_at",
    "deleted_at",
    "deleted",
    "location",
    "store",
    "copy_from",
    "uri",
];

/// A refused header; the message is what Glance clients match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MetaError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, MetaError> {
    Err(MetaError(message.into()))
}

/// Glance's boolean words: anything else, including garbage, is false.
pub fn is_true_word(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "t" | "true" | "on" | "y" | "yes"
    )
}

/// Text must be UTF-8 without characters above U+FFFF (the registry contract of Glance v1).
pub fn check_text(what: &str, text: &str) -> Result<(), MetaError> {
    if text.chars().any(|c| c as u32 > 0xFFFF) {
        return err(format!(
            "{what} contains a character outside the Basic Multilingual Plane"
        ));
    }
    Ok(())
}

/// A non-negative base-10 integer within 64 bits, nothing else (no sign, no spaces).
pub fn parse_u64(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Glance's `InvalidParameterValue` wording, which clients show as is.
fn parse_int_field(field: &str, value: &str) -> Result<u64, MetaError> {
    let invalid = |extra: String| {
        MetaError(format!(
            "Invalid value '{value}' for parameter {field}: {extra}"
        ))
    };
    if let Some(rest) = value.strip_prefix('-') {
        if parse_u64(rest).is_some() {
            return Err(invalid("Cannot be a negative value.".to_owned()));
        }
    }
    parse_u64(value).ok_or_else(|| {
        invalid(format!(
            "Cannot convert image {field} '{value}' to an integer."
        ))
    })
}

/// ISO 8601 date-times and dates; a date-time without offset is UTC.
pub fn parse_iso8601(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(t) = OffsetDateTime::parse(text, &Iso8601::DEFAULT) {
        return Some(t);
    }
    if let Ok(t) = PrimitiveDateTime::parse(text, &Iso8601::DEFAULT) {
        return Some(t.assume_utc());
    }
    Date::parse(text, &Iso8601::DEFAULT)
        .ok()
        .map(|d| d.midnight().assume_utc())
}

fn check_time_field(field: &str, value: &str) -> Result<(), MetaError> {
    match parse_iso8601(value) {
        Some(t) if t.year() >= 1900 => Ok(()),
        _ => err(format!("Invalid time format for {field}.")),
    }
}

fn nullable(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

fn check_len(what: &str, value: &Option<String>, max: usize) -> Result<(), MetaError> {
    match value {
        Some(v) if v.chars().count() > max => err(format!(
            "{what} is too long: it may not exceed {max} characters"
        )),
        _ => Ok(()),
    }
}

/// Undoes the percent-encoding that URL-quoting clients put on header names and values
/// (python-glanceclient quotes every header it sends, so that non-ASCII text fits in a header).
/// Text counts as quoted only when it holds at least one well-formed `%XX` escape, every other
/// character is one that such quoting leaves alone (ASCII letters, digits, `_ . - ~ / :`), and
/// the decoded bytes are UTF-8. Anything else (a raw space, raw UTF-8, a lone `%`) is literal
/// text, as curl users send it, and is returned unchanged.
pub fn unquote(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut escapes = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return Cow::Borrowed(text);
                }
                escapes += 1;
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b"_.-~/:".contains(&b) => i += 1,
            _ => return Cow::Borrowed(text),
        }
    }
    if escapes == 0 {
        return Cow::Borrowed(text);
    }
    match percent_encoding::percent_decode(bytes).decode_utf8() {
        Ok(decoded) => Cow::Owned(decoded.into_owned()),
        Err(_) => Cow::Borrowed(text),
    }
}

/// Reads the `x-image-meta-*` headers of a POST or PUT.
pub fn decode(headers: &HeaderMap) -> Result<MetaPatch, MetaError> {
    let mut patch = MetaPatch::default();
    let mut seen = std::collections::HashSet::new();
    for (name, raw) in headers {
        let lower = name.as_str(); // already lower-case
        let Some(rest) = lower.strip_prefix(PREFIX) else {
            continue;
        };
        let value = std::str::from_utf8(raw.as_bytes())
            .map_err(|_| MetaError(format!("Header {lower} is not valid UTF-8")))?
            .trim();
        let value = unquote(value);
        let value = value.as_ref();
        if let Some(key) = lower.strip_prefix(PROPERTY_PREFIX) {
            // The canonical key: decoded first, then lower-cased, so that no spelling
            // (`%58_owner` for `x_owner`) slips past a protection rule on the stored key.
            let key = unquote(key).to_lowercase().replace('-', "_");
            if key.is_empty() || key.chars().count() > 255 || key.chars().any(char::is_control) {
                return err(format!("Bad header: {lower}"));
            }
            check_text("A property key", &key)?;
            check_text("A property value", value)?;
            if patch.properties.insert(key, nullable(value)).is_some() {
                return err(format!("Duplicate header: {lower}"));
            }
            continue;
        }
        let field = rest.replace('-', "_");
        if !CORE_FIELDS.contains(&field.as_str()) {
            return err(format!("Bad header: {lower}"));
        }
        if !seen.insert(field.clone()) {
            return err(format!("Duplicate header: {PREFIX}{field}"));
        }
        check_text(&field, value)?;
        match field.as_str() {
            "name" => patch.name = Some(nullable(value)),
            "id" => patch.id = Some(value.to_owned()),
            "status" => patch.status = Some(value.to_owned()),
            "size" => patch.size = Some(parse_int_field("size", value)?),
            "virtual_size" => {
                patch.virtual_size = Some(if value == "None" {
                    None
                } else {
                    Some(parse_int_field("virtual_size", value)?)
                })
            }
            "min_disk" | "min_ram" => {
                let n = parse_int_field(&field, value)?;
                if n > MAX_INT32 {
                    return err(format!(
                        "'{field}' value out of range, must not exceed {MAX_INT32}"
                    ));
                }
                if field == "min_disk" {
                    patch.min_disk = Some(n);
                } else {
                    patch.min_ram = Some(n);
                }
            }
            "disk_format" => patch.disk_format = Some(nullable(value)),
            "container_format" => patch.container_format = Some(nullable(value)),
            "checksum" => patch.checksum = Some(nullable(value)),
            "is_public" => patch.is_public = Some(is_true_word(value)),
            "protected" => patch.protected = Some(is_true_word(value)),
            "owner" => patch.owner = Some(nullable(value)),
            "location" => patch.location = Some(value.to_owned()),
            "store" => patch.store = Some(value.to_owned()),
            "created_at" | "updated_at" | "deleted_at" => check_time_field(&field, value)?,
            // Read-only or copy-source aliases: accepted and ignored.
            _ => {}
        }
    }
    check_len("Image name", patch.name.as_ref().unwrap_or(&None), 255)?;
    check_len("Owner", patch.owner.as_ref().unwrap_or(&None), 255)?;
    if let Some(Some(sum)) = &patch.checksum {
        if sum.chars().count() > 32 {
            return err(format!(
                "Invalid checksum '{sum}': can't exceed 32 characters"
            ));
        }
    }
    Ok(patch)
}

fn header_name(name: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(name.as_bytes()).ok()
}

fn bool_text(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// Writes an image's metadata as response headers: null fields omitted, underscores in names,
/// booleans as `True`/`False`, `ETag` when the checksum is known. Never a location.
pub fn encode(record: &ImageRecord, headers: &mut HeaderMap) {
    let mut put = |field: &str, value: Option<String>| {
        if let Some(value) = value {
            if let (Some(name), Ok(value)) = (
                header_name(&format!("{PREFIX}{field}")),
                HeaderValue::from_bytes(value.as_bytes()),
            ) {
                headers.insert(name, value);
            }
        }
    };
    put("id", Some(record.id.to_string()));
    put("name", record.name.clone());
    put("status", Some(record.status.as_str().to_owned()));
    put("size", Some(record.size.to_string()));
    put("virtual_size", record.virtual_size.map(|v| v.to_string()));
    put("disk_format", record.disk_format.clone());
    put("container_format", record.container_format.clone());
    put("checksum", record.checksum.clone());
    put("os_hash_algo", record.os_hash_algo.clone());
    put("os_hash_value", record.os_hash_value.clone());
    put("min_disk", Some(record.min_disk.to_string()));
    put("min_ram", Some(record.min_ram.to_string()));
    put("is_public", Some(bool_text(record.is_public).to_owned()));
    put("protected", Some(bool_text(record.protected).to_owned()));
    put("owner", record.owner.clone());
    put("created_at", Some(record.created_at.render()));
    put("updated_at", Some(record.updated_at.render()));
    put("deleted_at", record.deleted_at.map(|t| t.render()));
    put("deleted", Some(bool_text(record.deleted).to_owned()));
    for (key, value) in &record.properties {
        put(&format!("property-{key}"), value.clone());
    }
    if let Some(sum) = &record.checksum {
        if let Ok(v) = HeaderValue::from_str(sum) {
            headers.insert(axum::http::header::ETAG, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ImageId, Timestamp};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        h
    }

    fn decode_pairs(pairs: &[(&str, &str)]) -> Result<MetaPatch, MetaError> {
        decode(&headers(pairs))
    }

    #[test]
    fn quoted_names_and_values_are_decoded() {
        let p = decode_pairs(&[
            ("x-image-meta-name", "my%20image%20%C3%A9"),
            ("x-image-meta-property-release%2012", "a%20b:c/d%3F"),
            ("x-image-meta-property-plain", "50%"),
        ])
        .unwrap();
        assert_eq!(p.name, Some(Some("my image \u{e9}".into())));
        assert_eq!(p.properties["release 12"], Some("a b:c/d?".into()));
        assert_eq!(p.properties["plain"], Some("50%".into()));
    }

    #[test]
    fn unquote_takes_only_fully_quoted_text() {
        assert_eq!(unquote("a%20b"), "a b");
        assert_eq!(unquote("http://h/p%3Fq%3D1"), "http://h/p?q=1");
        // Literal text: raw spaces or UTF-8, lone or short escapes, no escape at all.
        for literal in [
            "100% sure",
            "a b%20c",
            "caf\u{e9}%20",
            "50%",
            "%2",
            "%zz",
            "plain",
        ] {
            assert_eq!(unquote(literal), literal);
        }
        // Escapes that do not decode to UTF-8 stay as sent.
        assert_eq!(unquote("%FF%FE"), "%FF%FE");
        // Decoded text still obeys the text rules.
        let e = decode_pairs(&[("x-image-meta-name", "%F0%9F%98%80")]).unwrap_err();
        assert!(e.0.contains("Basic Multilingual Plane"), "{e}");
        let e = decode_pairs(&[("x-image-meta-property-%F0%9F%98%80", "x")]).unwrap_err();
        assert!(e.0.contains("Basic Multilingual Plane"), "{e}");
    }

    #[test]
    fn property_keys_are_canonical_after_decoding() {
        let p = decode_pairs(&[("x-image-meta-property-%58_owner_a", "x")]).unwrap();
        assert_eq!(p.properties["x_owner_a"], Some("x".into()));
        let p = decode_pairs(&[("x-image-meta-property-%C3%89t%C3%A9", "x")]).unwrap();
        assert_eq!(p.properties["\u{e9}t\u{e9}"], Some("x".into()));
        for bad in ["a%0Ab", "%00", "a%09b", "%7F"] {
            let name = format!("x-image-meta-property-{bad}");
            assert!(decode_pairs(&[(&name, "x")]).is_err(), "{bad}");
        }
        // Two spellings of one key are one key.
        assert!(decode_pairs(&[
            ("x-image-meta-property-%58_a", "1"),
            ("x-image-meta-property-x_a", "2")
        ])
        .is_err());
    }

    #[test]
    fn dashes_and_underscores_name_the_same_field() {
        let p = decode_pairs(&[
            ("X-Image-Meta-Disk-Format", "raw"),
            ("x-image-meta-container_format", "bare"),
            ("X-Image-Meta-Property-Foo-Bar", "x"),
            ("x-image-meta-property-Os.Distro", "y"),
        ])
        .unwrap();
        assert_eq!(p.disk_format, Some(Some("raw".into())));
        assert_eq!(p.container_format, Some(Some("bare".into())));
        assert_eq!(p.properties["foo_bar"], Some("x".into()));
        assert_eq!(p.properties["os.distro"], Some("y".into()));
    }

    #[test]
    fn unknown_core_headers_are_bad() {
        let e = decode_pairs(&[("x-image-meta-bogus", "1")]).unwrap_err();
        assert_eq!(e.0, "Bad header: x-image-meta-bogus");
        // Not under x-image-meta-: ignored.
        assert!(decode_pairs(&[("x-image-created_at", "x")]).is_ok());
    }

    #[test]
    fn booleans_follow_the_word_list() {
        for (v, want) in [
            ("True", true),
            ("yes", true),
            ("1", true),
            (" ON ", true),
            ("t", true),
            ("false", false),
            ("garbage", false),
            ("", false),
        ] {
            let p = decode_pairs(&[("x-image-meta-is_public", v)]).unwrap();
            assert_eq!(p.is_public, Some(want), "{v:?}");
        }
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(
            decode_pairs(&[("x-image-meta-size", "5120")]).unwrap().size,
            Some(5120)
        );
        for bad in ["", "abc", "1.5", "+1", "99999999999999999999999", "0x10"] {
            let e = decode_pairs(&[("x-image-meta-size", bad)]).unwrap_err();
            assert!(e.0.contains("Cannot convert image size"), "{bad:?}: {e}");
        }
        let e = decode_pairs(&[("x-image-meta-min_ram", "-1")]).unwrap_err();
        assert_eq!(
            e.0,
            "Invalid value '-1' for parameter min_ram: Cannot be a negative value."
        );
        let e = decode_pairs(&[("x-image-meta-size", "abc")]).unwrap_err();
        assert_eq!(
            e.0,
            "Invalid value 'abc' for parameter size: Cannot convert image size 'abc' to an integer."
        );
        let e = decode_pairs(&[("x-image-meta-min_disk", "2147483648")]).unwrap_err();
        assert!(e.0.contains("2147483647"));
        let p = decode_pairs(&[("x-image-meta-virtual_size", "None")]).unwrap();
        assert_eq!(p.virtual_size, Some(None));
        assert!(decode_pairs(&[("x-image-meta-virtual_size", "")]).is_err());
    }

    #[test]
    fn empty_values_mean_null() {
        let p = decode_pairs(&[
            ("x-image-meta-name", ""),
            ("x-image-meta-owner", ""),
            ("x-image-meta-property-k", ""),
        ])
        .unwrap();
        assert_eq!(p.name, Some(None));
        assert_eq!(p.owner, Some(None));
        assert_eq!(p.properties["k"], None);
        let p = decode_pairs(&[("x-image-meta-owner", "null")]).unwrap();
        assert_eq!(p.owner, Some(Some("null".into())));
    }

    #[test]
    fn time_fields_are_checked_then_ignored() {
        for bad in [
            "-42",
            "foo",
            "1100",
            "2012-01-01hey12:32:12",
            "1899-01-01T00:00:00",
        ] {
            let e = decode_pairs(&[("x-image-meta-created_at", bad)]).unwrap_err();
            assert_eq!(e.0, "Invalid time format for created_at.", "{bad:?}");
        }
        let p = decode_pairs(&[("x-image-meta-updated_at", "2012-01-01T12:32:12")]).unwrap();
        assert_eq!(p, MetaPatch::default());
    }

    #[test]
    fn lengths_and_text_are_checked() {
        assert!(decode_pairs(&[("x-image-meta-name", &"n".repeat(255))]).is_ok());
        assert!(decode_pairs(&[("x-image-meta-name", &"n".repeat(256))]).is_err());
        let e = decode_pairs(&[("x-image-meta-checksum", &"a".repeat(33))]).unwrap_err();
        assert!(e.0.contains("can't exceed 32 characters"));
        assert!(decode_pairs(&[("x-image-meta-name", "caf\u{e9}")]).is_ok());
        assert!(decode_pairs(&[("x-image-meta-name", "\u{1F600}")]).is_err());
        assert!(decode_pairs(&[("x-image-meta-property-p", "\u{1F600}")]).is_err());
        let mut h = HeaderMap::new();
        h.insert(
            "x-image-meta-name",
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert!(decode(&h).is_err());
    }

    #[test]
    fn repeated_fields_are_refused() {
        assert!(decode_pairs(&[
            ("x-image-meta-disk-format", "raw"),
            ("x-image-meta-disk_format", "iso")
        ])
        .is_err());
        assert!(decode_pairs(&[
            ("x-image-meta-property-a-b", "1"),
            ("x-image-meta-property-a_b", "2")
        ])
        .is_err());
    }

    #[test]
    fn encode_omits_nulls_and_never_shows_a_location() {
        let mut r = ImageRecord::new(
            ImageId::parse("3c1b0d2e-aaaa-4bbb-8ccc-0123456789ab").unwrap(),
            Timestamp::now(),
        );
        r.properties.insert("distro".into(), Some("Ubuntu".into()));
        r.properties.insert("gone".into(), None);
        r.location = Some(crate::model::StoredLocation {
            store: stores::StoreName::parse("file").unwrap(),
            key: stores::ObjectKey::parse("secret-key").unwrap(),
        });
        let mut h = HeaderMap::new();
        encode(&r, &mut h);
        assert_eq!(h["x-image-meta-is_public"], "False");
        assert_eq!(h["x-image-meta-property-distro"], "Ubuntu");
        assert!(!h.contains_key("x-image-meta-checksum"));
        assert!(!h.contains_key("etag"));
        assert!(!h.contains_key("x-image-meta-owner"));
        assert!(!h.contains_key("x-image-meta-property-gone"));
        assert!(!h.contains_key("x-image-meta-location"));
        assert!(h
            .values()
            .all(|v| !v.as_bytes().windows(10).any(|w| w == b"secret-key")));
        // What encode writes, decode reads back (for the writable fields).
        r.checksum = Some("c2e5db72bd7fd153f53ede5da5a06de3".into());
        let mut h = HeaderMap::new();
        encode(&r, &mut h);
        assert_eq!(h["etag"], "c2e5db72bd7fd153f53ede5da5a06de3");
        let back = decode(&h).unwrap();
        assert_eq!(back.checksum, Some(r.checksum.clone()));
        assert_eq!(back.properties["distro"], Some("Ubuntu".into()));
    }
}
