//! Byte encodings of the sled engine's keys. Every encoding sorts bytewise in the order the API
//! sorts values, so a list is a range scan.
//!
//! `idx` tree, one entry per (sort key, scope) of an image, value empty:
//!
//! ```text
//! sort tag (1) | class (1: L live, G gone) | scope tag (1: p public, q private, o owner, m member)
//!   | [scope value as a string] | sort value | created_at (8) | id (36)
//! ```
//!
//! A string is its bytes with NUL escaped as `00 FF`, ended by `00 00`, so it sorts as the string
//! does and nothing after it can be mistaken for part of it. Integers are big-endian, timestamps
//! big-endian with the sign bit flipped. An image's *suffix* (sort value, created_at, id) is the
//! same in every scope, which is what lets a page merge scopes and drop duplicates.

use std::collections::BTreeSet;

use crate::model::{ImageId, ImageRecord, ImageStatus, Timestamp};
use crate::registry::query::SortKey;
use crate::registry::StoredImage;

/// Ids are canonical hyphenated UUIDs: always this long, always last in an index key.
pub const ID_LEN: usize = 36;

pub const LIVE: u8 = b'L';
pub const GONE: u8 = b'G';

/// Deleted, `pending_delete` and killed images leave the live indexes at once.
pub fn class_of(status: ImageStatus) -> u8 {
    if status.is_deleted() || status == ImageStatus::Killed {
        GONE
    } else {
        LIVE
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope<'a> {
    Public,
    Private,
    Owner(&'a str),
    Member(&'a str),
}

fn sort_tag(key: SortKey) -> u8 {
    match key {
        SortKey::Name => b'n',
        SortKey::Status => b's',
        SortKey::ContainerFormat => b'c',
        SortKey::DiskFormat => b'd',
        SortKey::Size => b'z',
        SortKey::Id => b'i',
        SortKey::CreatedAt => b't',
        SortKey::UpdatedAt => b'u',
    }
}

pub fn push_str(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

pub fn push_time(out: &mut Vec<u8>, t: Timestamp) {
    out.extend_from_slice(&((t.micros() as u64) ^ (1 << 63)).to_be_bytes());
}

pub fn scope_prefix(key: SortKey, class: u8, scope: &Scope<'_>) -> Vec<u8> {
    let mut out = vec![sort_tag(key), class];
    match scope {
        Scope::Public => out.push(b'p'),
        Scope::Private => out.push(b'q'),
        Scope::Owner(o) => {
            out.push(b'o');
            push_str(&mut out, o);
        }
        Scope::Member(m) => {
            out.push(b'm');
            push_str(&mut out, m);
        }
    }
    out
}

/// The encoded sort value of `key` for a record (a missing string sorts as empty).
pub fn push_sort_value(out: &mut Vec<u8>, key: SortKey, r: &ImageRecord) {
    let s = |v: &Option<String>| v.as_deref().unwrap_or_default().to_owned();
    match key {
        SortKey::Name => push_str(out, &s(&r.name)),
        SortKey::Status => push_str(out, r.status.as_str()),
        SortKey::ContainerFormat => push_str(out, &s(&r.container_format)),
        SortKey::DiskFormat => push_str(out, &s(&r.disk_format)),
        SortKey::Size => out.extend_from_slice(&r.size.to_be_bytes()),
        SortKey::Id => out.extend_from_slice(r.id.as_str().as_bytes()),
        SortKey::CreatedAt => push_time(out, r.created_at),
        SortKey::UpdatedAt => push_time(out, r.updated_at),
    }
}

/// The tie-breakers every order ends with.
pub fn push_tail(out: &mut Vec<u8>, r: &ImageRecord) {
    push_time(out, r.created_at);
    out.extend_from_slice(r.id.as_str().as_bytes());
}

pub fn suffix(key: SortKey, r: &ImageRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    push_sort_value(&mut out, key, r);
    push_tail(&mut out, r);
    out
}

pub fn scopes(s: &StoredImage) -> Vec<Scope<'_>> {
    let r = &s.record;
    let mut out = vec![if r.is_public {
        Scope::Public
    } else {
        Scope::Private
    }];
    if let Some(owner) = &r.owner {
        out.push(Scope::Owner(owner));
    }
    for m in &s.members {
        if r.owner.as_deref() != Some(m.member.as_str()) {
            out.push(Scope::Member(&m.member));
        }
    }
    out
}

/// Every `idx` entry of an image.
pub fn index_keys(s: &StoredImage) -> BTreeSet<Vec<u8>> {
    let class = class_of(s.record.status);
    let scopes = scopes(s);
    let mut out = BTreeSet::new();
    for key in SortKey::ALL {
        let tail = suffix(key, &s.record);
        for scope in &scopes {
            let mut k = scope_prefix(key, class, scope);
            k.extend_from_slice(&tail);
            out.insert(k);
        }
    }
    out
}

pub fn id_of(key: &[u8]) -> &[u8] {
    &key[key.len().saturating_sub(ID_LEN)..]
}

/// The smallest key greater than every key starting with `prefix` (`None`: no such key).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// `counters` tree: images per status.
pub fn status_count(status: ImageStatus) -> Vec<u8> {
    let mut k = b"s".to_vec();
    k.extend_from_slice(status.as_str().as_bytes());
    k
}

/// `counters` tree: bytes an owner (or nobody) stores.
pub fn usage(owner: Option<&str>) -> Vec<u8> {
    match owner {
        None => b"u-".to_vec(),
        Some(o) => {
            let mut k = b"u+".to_vec();
            k.extend_from_slice(o.as_bytes());
            k
        }
    }
}

/// `in_state` tree: images in one of the walked states, by id.
pub fn state_prefix(status: ImageStatus) -> Vec<u8> {
    let mut k = status.as_str().as_bytes().to_vec();
    k.push(0);
    k
}

pub fn state_key(status: ImageStatus, id: &ImageId) -> Vec<u8> {
    let mut k = state_prefix(status);
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

/// `member_images` tree: `member 0x00 image_id`. Member ids never contain NUL (the HTTP layer
/// refuses control characters).
pub fn member_prefix(member: &str) -> Vec<u8> {
    let mut key = member.as_bytes().to_vec();
    key.push(0);
    key
}

pub fn member_image(member: &str, image: &ImageId) -> Vec<u8> {
    let mut key = member_prefix(member);
    key.extend_from_slice(image.as_str().as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_sort_as_strings() {
        let enc = |s: &str| {
            let mut v = vec![];
            push_str(&mut v, s);
            v
        };
        let mut words = vec!["", "a", "a\0", "a\0b", "ab", "b", "\u{e9}", "A"];
        let mut by_bytes = words.clone();
        words.sort();
        by_bytes.sort_by_key(|w| enc(w));
        assert_eq!(words, by_bytes);
    }

    #[test]
    fn times_sort_across_the_epoch() {
        let enc = |t: i64| {
            let mut v = vec![];
            push_time(
                &mut v,
                Timestamp::from_datetime(
                    time::OffsetDateTime::from_unix_timestamp_nanos(t as i128 * 1000).unwrap(),
                ),
            );
            v
        };
        assert!(enc(-5) < enc(0));
        assert!(enc(0) < enc(1));
        assert!(enc(1) < enc(1 << 40));
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF]), None);
    }
}
