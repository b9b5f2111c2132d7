//! Validated names: which store, and which object inside it. Validation here is what keeps ids,
//! keys and locations from escaping a store's root or prefix.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The name of a configured store (`[stores.<name>]`): 1–64 of `a-z 0-9 _ -`. Serialised as
/// the plain string, and validated again when read back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct StoreName(String);

impl StoreName {
    pub fn parse(name: &str) -> Option<Self> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        ok.then(|| Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StoreName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object key relative to a store's root or prefix: `/`-separated components of
/// `A-Z a-z 0-9 . _ -`, none empty, none starting with `.` (so no `.`, `..` or hidden temp names),
/// at most 512 bytes. The gateway's own keys are image ids, a single component. Serialised as the
/// plain string, and validated again when read back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn parse(key: &str) -> Option<Self> {
        let component_ok = |c: &str| {
            !c.is_empty()
                && !c.starts_with('.')
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        };
        let ok = !key.is_empty() && key.len() <= 512 && key.split('/').all(component_ok);
        ok.then(|| Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the key is one path component (no `/`).
    pub fn is_single_component(&self) -> bool {
        !self.0.contains('/')
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Implements the string conversions serde uses for a validated name, and comparison with text.
macro_rules! string_conversions {
    ($name:ident, $what:literal) => {
        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> Self {
                name.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(text: String) -> Result<Self, Self::Error> {
                Self::parse(&text).ok_or_else(|| format!("invalid {}: {text:?}", $what))
            }
        }
    };
}

string_conversions!(StoreName, "store name");
string_conversions!(ObjectKey, "object key");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_refuse_traversal_and_hidden_names() {
        for bad in [
            "", "..", ".", "../x", "a/../b", "/abs", "a//b", "a/", ".tmp", "a/.b", "a\\b", "a b",
            "a\0b", "é",
        ] {
            assert!(ObjectKey::parse(bad).is_none(), "{bad:?} accepted");
        }
        for good in ["3c1b0d2e-0000-4000-8000-000000000000", "a/b.c", "x_y-z.0"] {
            assert!(ObjectKey::parse(good).is_some(), "{good:?} refused");
        }
        assert!(ObjectKey::parse(&"a".repeat(513)).is_none());
    }

    #[test]
    fn foreign_paths_are_plain() {
        use crate::ForeignObject;
        for good in ["images/ubuntu.qcow2", "a", "x-1_2.3~4"] {
            assert!(ForeignObject::is_plain_path(good), "{good:?}");
        }
        for bad in [
            "", "..", "a/../b", "./a", "a//b", "a/", "a b", "a?b", "a#b", "a%2e", "é",
        ] {
            assert!(!ForeignObject::is_plain_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn store_names() {
        assert!(StoreName::parse("s3").is_some());
        assert!(StoreName::parse("minio-eu_1").is_some());
        for bad in ["", "S3", "a/b", "a.b", &"a".repeat(65)] {
            assert!(StoreName::parse(bad).is_none(), "{bad:?} accepted");
        }
    }
}
