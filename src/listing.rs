//! One page of a list: the marker checked against what the caller may see, then the page read
//! from the registry for the caller's audience. Visibility comes from `access`; filtering,
//! ordering and paging happen in the registry's indexes.

use crate::access::{Caller, ListScope};
use crate::error::{ApiError, ApiResult};
use crate::model::ImageRecord;
use crate::registry::query::ListQuery;
use crate::registry::{PageRequest, Registry};

/// Selects one page of the images `caller` may list.
pub async fn select(
    registry: &Registry,
    caller: &Caller,
    q: &ListQuery,
) -> ApiResult<Vec<ImageRecord>> {
    let with_changes = q.filters.changes_since.is_some();
    let after = match &q.marker {
        None => None,
        Some(id) => {
            let found = registry.get(id).await?.filter(|s| {
                if s.record.status.is_deleted() {
                    caller.is_admin || (with_changes && caller.lists(s, ListScope::Caller))
                } else {
                    caller.can_see(s)
                }
            });
            match found {
                Some(s) => Some(s.record),
                None => {
                    return Err(ApiError::bad_request(
                        "Invalid marker. Image could not be found.",
                    ))
                }
            }
        }
    };
    Ok(registry
        .list_page(PageRequest {
            audience: caller.audience(q.scope),
            filters: q.filters.clone(),
            sort_key: q.sort_key,
            sort_dir: q.sort_dir,
            after,
            limit: q.limit,
        })
        .await?)
}
