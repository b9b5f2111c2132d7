//! The admin listener's routes: metrics and operations that tenants must never reach. It
//! listens on `admin_bind`, apart from the API, and requires the bearer token of
//! `admin_token_file` when one is configured.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use subtle::ConstantTimeEq;

use crate::metrics;
use crate::state::AppState;

/// Every admin route, behind the token check. New admin routes join here, before the layer,
/// so the token guards them too.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .merge(crate::admin_ops::routes())
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match &state.config.admin_token {
        Some(token) if !bearer_matches(request.headers(), token.as_bytes()) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            "401 Unauthorized\n\nThe admin listener requires its bearer token.",
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

/// `Authorization: Bearer <token>`, compared in constant time.
fn bearer_matches(headers: &HeaderMap, token: &[u8]) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let scheme = b"bearer ";
    if value.len() < scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return false;
    }
    value[scheme.len()..].ct_eq(token).into()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    match state.registry.status_counts().await {
        Ok(counts) => {
            for (status, count) in counts {
                let labels = metrics::ImageStatusLabels {
                    status: status.as_str(),
                };
                let count = i64::try_from(count).unwrap_or(i64::MAX);
                state.metrics.images.get_or_create(&labels).set(count);
            }
        }
        // The other metrics still help while the registry cannot answer.
        Err(e) => tracing::warn!(error = %e, "image counts left out of the metrics"),
    }
    state.metrics.observe_part_memory(state.stores.iter());
    let body = state.metrics.render();
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(!bearer_matches(&h, b"tok"));
        for (value, ok) in [
            ("Bearer tok", true),
            ("bearer tok", true),
            ("Bearer to", false),
            ("Bearer tokk", false),
            ("Basic tok", false),
            ("tok", false),
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer_matches(&h, b"tok"), ok, "{value}");
        }
    }
}
