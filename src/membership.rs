//! Image memberships: listing who an image is shared with, replacing, adding and removing
//! members under the member quota, and the images shared with a member. Who may do what is
//! decided by `access`; the HTTP layer only parses and renders.

use crate::access::Caller;
use crate::catalog;
use crate::error::{ApiError, ApiResult};
use crate::model::Membership;
use crate::registry::StoredImage;
use crate::state::AppState;

/// A member a request names, with the `can_share` it asks for (`None`: keep, or false if new).
pub type WantedMember = (String, Option<bool>);

/// Member changes need a writable caller with an identity; checked before the body is read.
pub fn check_may_change(caller: &Caller) -> ApiResult<()> {
    caller.check_writable()?;
    caller.check_member_identity()
}

/// A live image whose members the caller may see.
async fn image_for_members(state: &AppState, caller: &Caller, id: &str) -> ApiResult<StoredImage> {
    let image = catalog::find_visible(state, caller, id).await?;
    if image.record.status.is_deleted() {
        return Err(ApiError::not_found(format!(
            "Image with identifier {id} has been deleted."
        )));
    }
    Ok(image)
}

/// The image, when the caller may change its members (404 otherwise).
async fn image_for_change(state: &AppState, caller: &Caller, id: &str) -> ApiResult<StoredImage> {
    let image = image_for_members(state, caller, id).await?;
    if !caller.can_manage_members(&image) {
        return Err(ApiError::image_not_found(id));
    }
    Ok(image)
}

fn check_member_quota(state: &AppState, count: usize) -> ApiResult<()> {
    let quota = state.config.image_member_quota;
    catalog::check_count_quota(quota, count, "image members for this image")
}

fn next_seq(image: &StoredImage) -> u64 {
    image.members.iter().map(|m| m.seq).max().unwrap_or(0) + 1
}

/// Changes the members of `image` in one registry update, unless it was deleted meanwhile.
async fn update_members(
    state: &AppState,
    image: &StoredImage,
    change: impl Fn(&mut StoredImage) + Send + 'static,
) -> ApiResult<()> {
    state
        .registry
        .update::<ApiError, _>(&image.record.id, move |s| {
            if s.record.status.is_deleted() {
                return Err(ApiError::not_found("Image has been deleted."));
            }
            change(s);
            Ok(())
        })
        .await?;
    Ok(())
}

/// The memberships of an image the caller may see, in the order they were added.
pub async fn list(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Vec<Membership>> {
    let image = image_for_members(state, caller, id).await?;
    let sees_all = caller.sees_all_members(&image);
    let mut members: Vec<Membership> = image
        .members
        .into_iter()
        .filter(|m| sees_all || caller.owner.as_deref() == Some(&m.member))
        .collect();
    members.sort_by_key(|m| m.seq);
    Ok(members)
}

/// A change to an image's members.
pub enum MemberChange {
    /// Replace every member with these; members that stay keep their `can_share` unless the
    /// request sets it.
    Replace(Vec<WantedMember>),
    /// Add a member, or set its `can_share` when it is one already.
    Add(WantedMember),
    /// Remove a member; 404 when it is not one.
    Remove(String),
}

/// Applies `change` to the members of image `id`, when the caller may change them.
pub async fn change(
    state: &AppState,
    caller: &Caller,
    id: &str,
    change: MemberChange,
) -> ApiResult<()> {
    check_may_change(caller)?;
    let image = image_for_change(state, caller, id).await?;
    match change {
        MemberChange::Replace(wanted) => replace(state, &image, wanted).await,
        MemberChange::Add(wanted) => add(state, caller, &image, wanted).await,
        MemberChange::Remove(member) => remove(state, &image, member).await,
    }
}

async fn replace(
    state: &AppState,
    image: &StoredImage,
    wanted: Vec<WantedMember>,
) -> ApiResult<()> {
    check_member_quota(state, wanted.len())?;
    update_members(state, image, move |s| {
        let mut seq = next_seq(s);
        let mut next = Vec::with_capacity(wanted.len());
        for (member, can_share) in &wanted {
            match s.membership(member) {
                Some(old) => next.push(Membership {
                    can_share: can_share.unwrap_or(old.can_share),
                    ..old.clone()
                }),
                None => {
                    next.push(Membership {
                        image_id: s.record.id.clone(),
                        member: member.clone(),
                        can_share: can_share.unwrap_or(false),
                        seq,
                    });
                    seq += 1;
                }
            }
        }
        s.members = next;
    })
    .await
}

async fn add(
    state: &AppState,
    caller: &Caller,
    image: &StoredImage,
    (member, can_share): WantedMember,
) -> ApiResult<()> {
    // Counted before looking the member up, so re-adding at the limit is refused too.
    let visible = if caller.sees_all_members(image) {
        image.members.len()
    } else {
        1
    };
    check_member_quota(state, visible + 1)?;
    update_members(state, image, move |s| {
        let seq = next_seq(s);
        let image_id = s.record.id.clone();
        match s.members.iter_mut().find(|m| m.member == member) {
            Some(existing) => {
                if let Some(c) = can_share {
                    existing.can_share = c;
                }
            }
            None => s.members.push(Membership {
                image_id,
                member: member.clone(),
                can_share: can_share.unwrap_or(false),
                seq,
            }),
        }
    })
    .await
}

async fn remove(state: &AppState, image: &StoredImage, member: String) -> ApiResult<()> {
    state
        .registry
        .update::<ApiError, _>(&image.record.id, move |s| {
            let before = s.members.len();
            s.members.retain(|m| m.member != member);
            if s.members.len() == before {
                return Err(ApiError::not_found("Membership could not be found."));
            }
            Ok(())
        })
        .await?;
    Ok(())
}

/// The memberships of `member` in live images the caller may see them of, oldest image first.
pub async fn shared_with(
    state: &AppState,
    caller: &Caller,
    member: &str,
) -> ApiResult<Vec<Membership>> {
    let images = state.registry.shared_with(member).await?;
    let mut shared: Vec<(u64, Membership)> = images
        .iter()
        .filter(|s| !s.record.status.is_deleted() && caller.sees_shared(s, member))
        .filter_map(|s| {
            let m = s.membership(member)?;
            Some((s.record.created_at.micros() as u64, m.clone()))
        })
        .collect();
    shared.sort_by_key(|(t, _)| *t);
    Ok(shared.into_iter().map(|(_, m)| m).collect())
}
