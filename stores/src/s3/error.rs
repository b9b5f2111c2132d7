//! How S3 failures read as [`StoreError`]s: one table from SDK errors, S3 error codes and HTTP
//! statuses to the store's error kinds, with messages that never carry a credential.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::Inner;
use crate::StoreError;

impl Inner {
    /// Maps an SDK error to a `StoreError`. Messages carry the operation, the S3 error code and
    /// message and the endpoint, never a credential: the SDK's own errors contain none, and the
    /// raw request (which holds the signature) is not included.
    pub fn map_err<E>(&self, op: &str, key: Option<&str>, err: SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let store = self.store();
        match &err {
            // Resolving credentials happens while dispatching: say so, not "unreachable".
            SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_)
                if credentials_failed(&err) =>
            {
                StoreError::Forbidden {
                    store: store.to_owned(),
                    message: format!("{op}: no usable credentials: {}", chain(&err)),
                }
            }
            SdkError::DispatchFailure(failure) => {
                let what = if failure.is_timeout() {
                    "timed out reaching"
                } else if failure.is_io() {
                    "cannot connect to"
                } else {
                    "request failed to"
                };
                StoreError::unavailable(
                    store,
                    format!("{op}: {what} {}: {}", self.endpoint_label, chain(&err)),
                )
            }
            SdkError::TimeoutError(_) => StoreError::unavailable(
                store,
                format!("{op}: timed out waiting for {}", self.endpoint_label),
            ),
            SdkError::ConstructionFailure(_) => {
                StoreError::other(store, format!("{op}: request not built: {}", chain(&err)))
            }
            // The connection broke while the answer was being read: the backend, not the request.
            SdkError::ResponseError(_) => StoreError::unavailable(
                store,
                format!("{op}: the answer from {} was cut off", self.endpoint_label),
            ),
            _ => self.refused(op, key, &err),
        }
    }

    /// An answer from the service: its S3 error code and HTTP status decide the kind.
    fn refused<E>(&self, op: &str, key: Option<&str>, err: &SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata,
    {
        let store = self.store();
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().unwrap_or("");
        let message = err.message().unwrap_or("");
        let described = match (code, message) {
            ("", _) => format!(
                "{op}: HTTP {}",
                status.map_or("?".to_owned(), |s| s.to_string())
            ),
            (code, "") => format!("{op}: {code}"),
            (code, message) => format!("{op}: {code}: {message}"),
        };
        match (status, code) {
            (_, "NoSuchBucket") => StoreError::other(
                store,
                format!("{op}: bucket {} does not exist", self.bucket),
            ),
            (_, "NoSuchKey" | "NotFound") | (Some(404), "") if key.is_some() => {
                StoreError::NotFound {
                    store: store.to_owned(),
                    key: key.map(ToString::to_string).unwrap_or_default(),
                }
            }
            // A 404 that names no key (HeadBucket, listings): the bucket is missing.
            (Some(404), "" | "NotFound") => StoreError::other(
                store,
                format!("{op}: bucket {} does not exist", self.bucket),
            ),
            (
                _,
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "AuthorizationHeaderMalformed"
                | "InvalidToken"
                | "ExpiredToken"
                | "AllAccessDisabled"
                | "AccountProblem",
            )
            | (Some(401 | 403), _) => StoreError::Forbidden {
                store: store.to_owned(),
                message: described,
            },
            (
                _,
                "EntityTooLarge"
                | "QuotaExceeded"
                | "XMinioStorageFull"
                | "XMinioAdminBucketQuotaExceeded"
                | "StorageFull"
                | "InsufficientStorage",
            )
            | (Some(507), _) => StoreError::StorageFull {
                store: store.to_owned(),
            },
            (Some(500..=599), _) | (_, "SlowDown" | "ServiceUnavailable") => {
                StoreError::unavailable(store, format!("{described} (after retries)"))
            }
            _ => StoreError::other(store, described),
        }
    }
}

/// True when the credential provider failed (nothing found in the chain, metadata refused).
fn credentials_failed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<aws_credential_types::provider::error::CredentialsError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Display of an error and its sources, joined with ": ".
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
