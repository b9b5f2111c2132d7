//! Handlers for image memberships and `/shared-images/{member}`.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::image_meta::{check_text, is_true_word};
use super::views::{json_response, MemberView, SharedImageView};
use super::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::membership::{self, MemberChange, WantedMember};

const MAX_JSON_BODY: usize = 1 << 20;
const MAX_JSON_DEPTH: usize = 32;

/// Member ids: 1–255 characters, no control characters, no `/`, nothing above U+FFFF.
fn check_member_id(member: &str) -> ApiResult<()> {
    let ok = !member.is_empty()
        && member.chars().count() <= 255
        && !member.chars().any(|c| c.is_control() || c == '/');
    if !ok {
        return Err(ApiError::bad_request(format!(
            "Invalid member id: {member:?}"
        )));
    }
    check_text("Member id", member).map_err(|e| ApiError::bad_request(e.0))
}

/// Nesting depth of a JSON text, counted outside strings.
fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Reads a small JSON body: `None` when empty, 413 past 1 MiB, 400 when malformed or too deep.
async fn read_json(body: Body) -> ApiResult<Option<Value>> {
    let limited = http_body_util::Limited::new(body, MAX_JSON_BODY);
    let bytes = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::too_large("Request body is larger than 1 MiB."))
        }
        Err(_) => return Err(ApiError::bad_request("Error reading the request body.")),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if json_depth(&bytes) > MAX_JSON_DEPTH {
        return Err(ApiError::bad_request("JSON body is nested too deeply."));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|_| ApiError::bad_request("Malformed JSON in request body."))
}

/// `can_share` by truthiness; strings by the boolean-word rule.
fn truthy(v: &Value) -> ApiResult<bool> {
    Ok(match v {
        Value::Bool(b) => *b,
        Value::Null => false,
        Value::String(s) => is_true_word(s),
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => return Err(ApiError::bad_request("Invalid membership association")),
    })
}

/// `{"memberships": [{"member_id": ..., "can_share": ...}, ...]}`; a member named twice is
/// one entry, the later `can_share` winning.
fn parse_memberships(body: Option<Value>) -> ApiResult<Vec<WantedMember>> {
    let invalid = || ApiError::bad_request("Invalid membership association");
    let entries = body
        .as_ref()
        .and_then(|b| b.as_object())
        .and_then(|o| o.get("memberships"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::bad_request(
                "Invalid membership association: expected {\"memberships\": [...]}",
            )
        })?;
    let mut wanted: Vec<WantedMember> = vec![];
    for entry in entries {
        let member = entry
            .get("member_id")
            .and_then(Value::as_str)
            .ok_or_else(invalid)?;
        check_member_id(member)?;
        let can_share = entry.get("can_share").map(truthy).transpose()?;
        match wanted.iter_mut().find(|(m, _)| m == member) {
            Some(existing) => existing.1 = can_share.or(existing.1),
            None => wanted.push((member.to_owned(), can_share)),
        }
    }
    Ok(wanted)
}

pub async fn list(ctx: &Ctx, id: &str) -> ApiResult<Response> {
    let members = membership::list(&ctx.state, &ctx.caller, id).await?;
    let views: Vec<_> = members
        .iter()
        .map(|m| MemberView {
            member_id: &m.member,
            can_share: m.can_share,
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "members": views })))
}

pub async fn replace(ctx: &Ctx, id: &str, body: Body) -> ApiResult<Response> {
    membership::check_may_change(&ctx.caller)?;
    let wanted = parse_memberships(read_json(body).await?)?;
    let change = MemberChange::Replace(wanted);
    membership::change(&ctx.state, &ctx.caller, id, change).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn add(ctx: &Ctx, id: &str, member: &str, body: Body) -> ApiResult<Response> {
    membership::check_may_change(&ctx.caller)?;
    check_member_id(member)?;
    let body = read_json(body).await?;
    let can_share = body
        .as_ref()
        .and_then(|b| b.get("member"))
        .and_then(|m| m.get("can_share"))
        .map(truthy)
        .transpose()?;
    let change = MemberChange::Add((member.to_owned(), can_share));
    membership::change(&ctx.state, &ctx.caller, id, change).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn remove(ctx: &Ctx, id: &str, member: &str) -> ApiResult<Response> {
    let change = MemberChange::Remove(member.to_owned());
    membership::change(&ctx.state, &ctx.caller, id, change).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn shared_images(ctx: &Ctx, member: &str) -> ApiResult<Response> {
    let shared = membership::shared_with(&ctx.state, &ctx.caller, member).await?;
    let views: Vec<_> = shared
        .iter()
        .map(|m| SharedImageView {
            image_id: m.image_id.as_str(),
            can_share: m.can_share,
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "shared_images": views }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(json_depth(br#"{"a": "[[[[{{{"}"#), 1);
        assert_eq!(json_depth(br#"{"a": [[1]]}"#), 3);
        assert_eq!(json_depth(br#"{"a": "\"[["}"#), 1);
    }

    #[test]
    fn member_ids() {
        assert!(check_member_id("tenant-b").is_ok());
        assert!(check_member_id(&"m".repeat(255)).is_ok());
        for bad in ["", "a/b", "a\nb", "a\0b", "\u{1F600}"] {
            assert!(check_member_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_member_id(&"m".repeat(256)).is_err());
    }
}
