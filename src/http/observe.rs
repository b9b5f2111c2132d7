//! Request accounting: the access line and the HTTP metrics, both taken when the response body
//! has been sent (or abandoned), so a long download is timed to its last byte.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{header, Method};
use axum::response::Response;
use http_body::{Body as _, Frame, SizeHint};
use tracing::Span;

use crate::metrics::{method_label, Metrics};

/// What the access line reports; the handler fills in route, tenant and image as it learns them.
pub(crate) struct Access {
    pub started: Instant,
    pub method: Method,
    /// Path and query as the client sent them.
    pub path: String,
    /// The route template for metrics (`/v1/images/{id}`), never a concrete path.
    pub route: &'static str,
    pub tenant: Option<String>,
    pub image: Option<String>,
    pub bytes_in: Arc<AtomicU64>,
    pub span: Span,
    pub metrics: Arc<Metrics>,
}

/// Counts the bytes of a request body as the handler reads them.
pub(crate) fn count_request_body(body: Body) -> (Body, Arc<AtomicU64>) {
    let counter = Arc::new(AtomicU64::new(0));
    let counted = Body::new(Observed {
        inner: body,
        bytes: Arc::clone(&counter),
        on_end: None,
    });
    (counted, counter)
}

/// Wraps the response body so the request is accounted for when the body ends or is dropped.
pub(crate) fn account(response: Response, access: Access) -> Response {
    let status = response.status().as_u16();
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    response.map(|body| {
        let expected = declared.or(body.size_hint().exact());
        Body::new(Observed {
            inner: body,
            bytes: Arc::new(AtomicU64::new(0)),
            on_end: Some(End {
                access,
                status,
                expected,
            }),
        })
    })
}

/// A body that counts its data bytes and, for a response, accounts for the request once.
struct Observed {
    inner: Body,
    bytes: Arc<AtomicU64>,
    on_end: Option<End>,
}

struct End {
    access: Access,
    status: u16,
    /// The body's length when known up front.
    expected: Option<u64>,
}

impl Observed {
    fn finish(&mut self, complete: bool) {
        let Some(End { access, status, .. }) = self.on_end.take() else {
            return;
        };
        let elapsed = access.started.elapsed();
        let method = method_label(&access.method);
        access
            .metrics
            .record_request(method, access.route, status, elapsed);
        let bytes_out = self.bytes.load(Ordering::Relaxed);
        access.span.in_scope(|| {
            tracing::info!(
                method = %access.method,
                path = %access.path,
                status,
                bytes_in = access.bytes_in.load(Ordering::Relaxed),
                bytes_out,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                tenant = access.tenant.as_deref().unwrap_or("-"),
                image = access.image.as_deref().unwrap_or("-"),
                complete,
                "served"
            )
        });
    }
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Ready(None) => self.finish(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    /// hyper drops a body with a known length once it has sent the last byte, without polling
    /// for the end; a client that goes away drops it early.
    fn drop(&mut self) {
        let sent = self.bytes.load(Ordering::Relaxed);
        let complete = self.inner.is_end_stream()
            || self
                .on_end
                .as_ref()
                .and_then(|end| end.expected)
                .is_some_and(|n| sent >= n);
        self.finish(complete);
    }
}
