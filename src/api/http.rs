//! What happens to a request at the HTTP level, before our handlers see it.
//!
//! tonic refuses a request message larger than the server's limit while
//! reading its 5-byte length prefix — before buffering the body, which is
//! what bounds memory — but answers OUT_OF_RANGE "decoded message length too
//! large", a code our API does not list and a message naming no setting. This
//! layer rewrites exactly that answer into the documented INVALID_ARGUMENT
//! (LIMIT_EXCEEDED) naming `--max-request-bytes`, built by `error` like every
//! other status.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::Error;

/// The start of tonic's message for a request over the size limit.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// Rewrites tonic's oversize-request answer; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct RequestSizeLayer {
    limit: usize,
}

impl RequestSizeLayer {
    /// `limit` is the configured --max-request-bytes.
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for RequestSizeLayer {
    type Service = RequestSize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestSize {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RequestSize<S> {
    inner: S,
    limit: usize,
}

impl<S, Req, B> Service<Req> for RequestSize<S>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Future: Unpin,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = RequestSizeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        RequestSizeFuture {
            inner: self.inner.call(req),
            limit: self.limit,
        }
    }
}

/// The response future of `RequestSize`: the inner future, not boxed again
/// (tonic's routes already box theirs, so it is `Unpin`), whose answer is
/// checked when it is ready.
pub struct RequestSizeFuture<F> {
    inner: F,
    limit: usize,
}

impl<F, B, E> Future for RequestSizeFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let limit = self.limit;
        Pin::new(&mut self.inner).poll(cx).map_ok(|mut resp| {
            if is_tonic_too_large(resp.headers()) {
                let status = Status::from(Error::limit(
                    "the request message is larger than the limit",
                    limit as u64,
                    " bytes",
                    "--max-request-bytes",
                ));
                let headers = resp.headers_mut();
                for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
                    headers.remove(name);
                }
                // `add_header` fails only for a message that cannot be a
                // header value; ours is plain ASCII.
                let _ = status.add_header(headers);
            }
            resp
        })
    }
}

fn is_tonic_too_large(headers: &http::HeaderMap) -> bool {
    Status::from_header_map(headers)
        .is_some_and(|s| s.code() == Code::OutOfRange && s.message().starts_with(TONIC_TOO_LARGE))
}
