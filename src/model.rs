//! The gateway's domain types: image ids, records, statuses, memberships and timestamps. These
//! are what the registry stores; the HTTP views are built from them in `http::views`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use stores::{ObjectKey, StoreName};
use time::macros::format_description;
use time::OffsetDateTime;

/// An image id: a UUID in canonical lower-case hyphenated form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ImageId(String);

impl ImageId {
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// Accepts only the hyphenated 8-4-4-4-12 hex form, any case, so one UUID has one spelling.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        let shape_ok = b.len() == 36
            && b.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit(),
            });
        shape_ok.then(|| Self(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageStatus {
    Queued,
    Saving,
    Active,
    Killed,
    Deleted,
    PendingDelete,
    Deactivated,
}

impl ImageStatus {
    /// Every status, in declaration order.
    pub const ALL: [ImageStatus; 7] = [
        Self::Queued,
        Self::Saving,
        Self::Active,
        Self::Killed,
        Self::Deleted,
        Self::PendingDelete,
        Self::Deactivated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Saving => "saving",
            Self::Active => "active",
            Self::Killed => "killed",
            Self::Deleted => "deleted",
            Self::PendingDelete => "pending_delete",
            Self::Deactivated => "deactivated",
        }
    }

    pub fn is_deleted(self) -> bool {
        matches!(self, Self::Deleted | Self::PendingDelete)
    }
}

/// UTC time with microseconds, rendered as Glance does: `2016-05-10T21:41:41.123456`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    pub fn from_datetime(dt: OffsetDateTime) -> Self {
        Self((dt.unix_timestamp_nanos() / 1000) as i64)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    pub fn render(self) -> String {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        dt.format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]"
        ))
        .unwrap_or_default()
    }
}

/// Where an image's bytes are kept: a configured store and a key inside it. Holds no secret;
/// credentials stay in the store's configuration. Both are kept as plain JSON strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLocation {
    pub store: StoreName,
    pub key: ObjectKey,
}

impl StoredLocation {
    /// Where the gateway keeps the data of image `id` in `store`: the id is the key.
    pub fn for_image(store: &StoreName, id: &ImageId) -> Self {
        Self {
            store: store.clone(),
            key: ObjectKey::parse(id.as_str()).expect("image ids are valid object keys"),
        }
    }
}

/// One image as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: ImageId,
    pub name: Option<String>,
    pub status: ImageStatus,
    pub size: u64,
    pub virtual_size: Option<u64>,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub checksum: Option<String>,
    /// The multihash algorithm (`sha512`) and hex digest; `None` for images stored before
    /// multihash or with `hashing_algorithm = "none"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_hash_algo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_hash_value: Option<String>,
    pub min_disk: u64,
    pub min_ram: u64,
    pub is_public: bool,
    pub protected: bool,
    pub owner: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
    pub deleted: bool,
    pub properties: BTreeMap<String, Option<String>>,
    /// Internal only: never rendered to clients.
    pub location: Option<StoredLocation>,
    /// An external `http(s)` location the data is read from (never deleted by us).
    #[serde(default)]
    pub remote_url: Option<String>,
    /// An object of one of our stores' backends, outside the namespace the gateway manages, that
    /// an admin registered as the location (never deleted by us).
    #[serde(default)]
    pub registered: Option<RegisteredLocation>,
}

/// A registered object: the store whose backend holds it, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredLocation {
    pub store: StoreName,
    pub object: stores::ForeignObject,
}

impl ImageRecord {
    pub fn new(id: ImageId, now: Timestamp) -> Self {
        Self {
            id,
            name: None,
            status: ImageStatus::Queued,
            size: 0,
            virtual_size: None,
            disk_format: None,
            container_format: None,
            checksum: None,
            os_hash_algo: None,
            os_hash_value: None,
            min_disk: 0,
            min_ram: 0,
            is_public: false,
            protected: false,
            owner: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            deleted: false,
            properties: BTreeMap::new(),
            location: None,
            remote_url: None,
            registered: None,
        }
    }
}

/// An image shared with a member (a tenant, or a user when `owner_is_tenant = false`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub image_id: ImageId,
    pub member: String,
    pub can_share: bool,
    /// Creation order, for listing members as they were added.
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_one_spelling() {
        let id = ImageId::parse("3C1B0D2E-AAAA-4BBB-8CCC-0123456789AB").unwrap();
        assert_eq!(id.as_str(), "3c1b0d2e-aaaa-4bbb-8ccc-0123456789ab");
        for bad in [
            "",
            "3c1b0d2eaaaa4bbb8ccc0123456789ab",
            "{3c1b0d2e-aaaa-4bbb-8ccc-0123456789ab}",
            "urn:uuid:3c1b0d2e-aaaa-4bbb-8ccc-0123456789ab",
            "3c1b0d2e-aaaa-4bbb-8ccc-0123456789ag",
            "../../../../etc/passwd",
        ] {
            assert!(ImageId::parse(bad).is_none(), "{bad:?}");
        }
    }

    /// Records written before locations were typed decode unchanged and encode to the same JSON.
    #[test]
    fn stored_locations_keep_their_json() {
        let old = r#"{"id":"3c1b0d2e-aaaa-4bbb-8ccc-0123456789ab","name":"n","status":"active","size":3,"virtual_size":null,"disk_format":"raw","container_format":"bare","checksum":null,"min_disk":0,"min_ram":0,"is_public":false,"protected":false,"owner":null,"created_at":1,"updated_at":2,"deleted_at":null,"deleted":false,"properties":{},"location":{"store":"file","key":"3c1b0d2e-aaaa-4bbb-8ccc-0123456789ab"},"remote_url":null,"registered":{"store":"s3","object":{"container":"bucket","name":"a/b.qcow2"}}}"#;
        let record: ImageRecord = serde_json::from_str(old).unwrap();
        let loc = record.location.as_ref().unwrap();
        assert_eq!(loc.store.as_str(), "file");
        assert_eq!(loc.key.as_str(), "3c1b0d2e-aaaa-4bbb-8ccc-0123456789ab");
        assert_eq!(record.registered.as_ref().unwrap().store.as_str(), "s3");
        assert_eq!(serde_json::to_string(&record).unwrap(), old);
        let bad = old.replace(r#""store":"file""#, r#""store":"../x""#);
        assert!(serde_json::from_str::<ImageRecord>(&bad).is_err());
    }

    #[test]
    fn timestamps_render_with_microseconds() {
        let t = Timestamp(1_462_916_501_000_042);
        assert_eq!(t.render(), "2016-05-10T21:41:41.000042");
    }
}
