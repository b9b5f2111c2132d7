//! The HTTP layer's one error type and the one place errors become responses.
//!
//! Store and registry errors are mapped by variant, never wholesale to 500. A 5xx body is generic;
//! the detail goes to the log (it names stores and keys, never credentials). Bodies are Glance's
//! `text/plain` form `<code> <title>\n\n<message>`; clients match on the message substrings.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use stores::{PutError, StoreError};

use crate::registry::RegistryError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Logged, never sent.
    pub detail: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            headers: vec![],
            detail: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self {
            detail: Some(detail.into()),
            ..Self::new(StatusCode::INTERNAL_SERVER_ERROR, "")
        }
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self {
            message: detail.clone(),
            detail: Some(detail),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "")
        }
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "The method is not allowed for this resource.",
        )
        .with_header(header::ALLOW, HeaderValue::from_static(allow))
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn image_not_found(id: &str) -> Self {
        Self::not_found(format!("Image with identifier {id} not found"))
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound => Self::not_found("Image not found."),
            RegistryError::Conflict(id) => {
                Self::conflict(format!("An image with identifier {id} already exists"))
            }
            RegistryError::Unavailable(detail) => Self {
                detail: Some(format!("registry unavailable: {detail}")),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The image registry is unavailable; try again later.",
                )
            },
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound { .. } => Self::not_found("Image data could not be found."),
            StoreError::RangeNotSatisfiable { len } => Self::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "Requested range not satisfiable.",
            )
            .with_header(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
            ),
            StoreError::StorageFull { .. } => Self::too_large("Image storage media is full."),
            StoreError::TooLarge { store, .. } => Self {
                detail: Some(e.to_string()),
                ..Self::too_large(format!("Image is too large for the store {store}."))
            },
            StoreError::Unavailable { store, .. } => Self {
                detail: Some(e.to_string()),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("The image store {store} is unavailable; try again later."),
                )
            },
            StoreError::Forbidden { store, .. } => Self {
                detail: Some(e.to_string()),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("The image store {store} refused the operation."),
                )
            },
            StoreError::Body(_) => {
                Self::bad_request("Error reading the image data from the request.")
            }
            _ => Self::internal(e.to_string()),
        }
    }
}

impl From<PutError> for ApiError {
    fn from(e: PutError) -> Self {
        match e {
            PutError::TooLarge { limit } => Self::too_large(format!(
                "Image exceeds the storage quota or size limit of {limit} bytes."
            )),
            PutError::Body(err) => Self {
                detail: Some(err.to_string()),
                ..Self::bad_request("Error reading the image data from the request.")
            },
            PutError::Store(err) => err.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

fn title(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(detail) = &self.detail {
            if self.status.is_server_error() {
                tracing::error!(status = self.status.as_u16(), %detail, "request failed");
            } else {
                tracing::info!(status = self.status.as_u16(), %detail, "request refused");
            }
        }
        let message = if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            "The server could not complete the request.".to_owned()
        } else {
            self.message
        };
        let body = format!(
            "{} {}\n\n{}",
            self.status.as_u16(),
            title(self.status),
            message
        );
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
            body,
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
