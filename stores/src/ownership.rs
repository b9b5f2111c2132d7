//! Who owns a store's namespace, and whether two stores could see each other's objects.
//!
//! Every namespace a gateway writes to (a file root, a bucket + prefix, a Swift container) carries
//! a small marker object naming the registry that owns it. A gateway sweeps orphans only in a
//! namespace its own registry owns, so a second gateway pointed at the same place (another data
//! directory, a restored registry) never mistakes the first one's images for garbage.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Store, StoreError};

/// The marker's object name inside the namespace. It starts with a dot, so it is never an
/// [`ObjectKey`](crate::ObjectKey): no listing reports it and no image can be stored over it.
pub const MARKER: &str = ".glance-gateway-owner";

/// Where a store keeps its objects: a backend (`s3 <endpoint> <bucket>`, `file`, …) and a path
/// inside it whose every extension belongs to the namespace (a root directory ending in `/`, an
/// S3 prefix, a container name ending in `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub backend: String,
    pub path: String,
}

impl Namespace {
    pub fn new(backend: impl Into<String>, path: impl Into<String>) -> Self {
        Self {
            backend: backend.into(),
            path: path.into(),
        }
    }

    /// True when one namespace contains the other, so that one store would list, sweep or
    /// overwrite objects of the other.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.backend == other.backend
            && (self.path.starts_with(&other.path) || other.path.starts_with(&self.path))
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.backend, self.path)
    }
}

#[derive(Serialize, Deserialize)]
struct MarkerBody {
    registry: String,
}

/// What [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The marker already named this registry.
    Owned,
    /// There was no marker; one naming this registry is now written.
    Claimed,
    /// The marker named `previous`; `adopt` replaced it with this registry.
    Adopted { previous: String },
    /// The marker names another registry and nothing was changed.
    OwnedBy(String),
}

/// The registry the store's marker names, if there is a marker.
pub async fn owner(store: &dyn Store) -> Result<Option<String>, StoreError> {
    let Some(bytes) = store.read_marker().await? else {
        return Ok(None);
    };
    let body: MarkerBody = serde_json::from_slice(&bytes).map_err(|e| {
        StoreError::other(
            store.name().as_str(),
            format!("the ownership marker {MARKER} is not readable: {e}"),
        )
    })?;
    Ok(Some(body.registry))
}

/// Makes sure the store's namespace belongs to `registry`: writes the marker when there is none
/// (a namespace from before markers is claimed by the first registry that opens it), replaces
/// another registry's marker only when `adopt` is set. After writing, the marker is read back, so
/// of two gateways claiming an unmarked namespace at once only the one whose marker stayed wins.
pub async fn claim(store: &dyn Store, registry: &str, adopt: bool) -> Result<Claim, StoreError> {
    let outcome = match owner(store).await? {
        Some(owner) if owner == registry => return Ok(Claim::Owned),
        Some(owner) if !adopt => return Ok(Claim::OwnedBy(owner)),
        Some(owner) => Claim::Adopted { previous: owner },
        None => Claim::Claimed,
    };
    let body = serde_json::to_vec(&MarkerBody {
        registry: registry.to_owned(),
    })
    .expect("a marker serialises");
    store.write_marker(Bytes::from(body)).await?;
    match owner(store).await? {
        Some(owner) if owner == registry => Ok(outcome),
        Some(owner) => Ok(Claim::OwnedBy(owner)),
        None => Err(StoreError::other(
            store.name().as_str(),
            "the ownership marker just written is not there",
        )),
    }
}

/// The first pair of stores (by their names) whose namespaces overlap.
pub fn first_overlap<'a>(
    stores: impl IntoIterator<Item = &'a dyn Store>,
) -> Option<(String, String, Namespace)> {
    let all: Vec<(&str, Namespace)> = stores
        .into_iter()
        .flat_map(|s| {
            s.namespaces()
                .into_iter()
                .map(move |n| (s.name().as_str(), n))
        })
        .collect();
    for (i, (a, na)) in all.iter().enumerate() {
        for (b, nb) in &all[i + 1..] {
            if a != b && na.overlaps(nb) {
                let wider = if na.path.len() <= nb.path.len() {
                    na
                } else {
                    nb
                };
                return Some(((*a).to_owned(), (*b).to_owned(), wider.clone()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_containment_on_one_backend() {
        let s3 = |p: &str| Namespace::new("s3 http://h b", p);
        assert!(s3("glance/").overlaps(&s3("glance/")));
        assert!(s3("").overlaps(&s3("glance/")));
        assert!(s3("glance/a/").overlaps(&s3("glance/")));
        // A prefix without a slash lists every key that extends it.
        assert!(s3("glance").overlaps(&s3("glance2/")));
        assert!(!s3("glance/").overlaps(&s3("glance2/")));
        assert!(!s3("glance/").overlaps(&Namespace::new("s3 http://h other", "glance/")));
        let file = |p: &str| Namespace::new("file", p);
        assert!(!file("/d/images/").overlaps(&file("/d/images2/")));
        assert!(file("/d/images/").overlaps(&file("/d/images/x/")));
    }
}
