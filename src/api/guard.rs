//! The HTTP-level guard in front of every service: what a request may hold
//! before a handler sees it.
//!
//! - StateService requests are admitted by the `gate` on their headers,
//!   before tonic reads the body: a caller without credentials, or over its
//!   tenant's share, is answered at once and its body is never buffered
//!   (issue 11: 1,000 unauthenticated streams × 4 MiB bodies drove RSS to
//!   4.2 GB because admission ran after decoding). The admitted caller
//!   travels to the handler in the request's extensions.
//! - Every request body is bounded in bytes (one process-wide budget of
//!   bytes received but not yet decoded) and in time (the whole message
//!   within the body timeout).
//! - Long-lived unauthenticated streams (health Watch, reflection) are
//!   counted and bounded.
//! - At shutdown, new requests are refused, unfinished request bodies end
//!   with UNAVAILABLE and open streams are closed with UNAVAILABLE, so the
//!   drain waits only for handlers that are already running.
//!
//! Nothing here knows about storage; it must not read message bodies.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Status, body::Body, metadata::MetadataMap};
use tower_layer::Layer;
use tower_service::Service;

use super::{Caller, Gate};
use crate::{
    error::{Error, Exhaustion},
    listener::ConnInfo,
    metrics::RequestObserver,
};

/// Paths of the streams that stay open for as long as the client wants and
/// need no credentials.
const LONG_LIVED: &[&str] = &[
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The guard's bounds.
#[derive(Debug, Clone, Copy)]
pub struct GuardSettings {
    /// Request body bytes received and not yet decoded, process-wide.
    pub max_pending_request_bytes: usize,
    /// Time to receive a whole request body once its headers arrived.
    pub request_body_timeout: Duration,
    /// Long-lived unauthenticated streams open at once.
    pub max_health_watchers: usize,
}

/// A caller admitted on its headers, handed to the handler.
#[derive(Clone)]
pub struct Admitted(pub Arc<Caller>);

struct Shared {
    gate: Arc<Gate>,
    settings: GuardSettings,
    pending: Arc<Semaphore>,
    watchers: Arc<Semaphore>,
    stopping: CancellationToken,
}

/// Puts the guard in front of a service; see the module docs.
#[derive(Clone)]
pub struct GuardLayer {
    shared: Arc<Shared>,
}

impl GuardLayer {
    /// `stopping` is cancelled when shutdown begins.
    pub fn new(gate: Arc<Gate>, settings: GuardSettings, stopping: CancellationToken) -> Self {
        Self {
            shared: Arc::new(Shared {
                gate,
                settings,
                pending: Arc::new(Semaphore::new(settings.max_pending_request_bytes)),
                watchers: Arc::new(Semaphore::new(settings.max_health_watchers)),
                stopping,
            }),
        }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<http::Request<Body>> for Guard<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Unpin,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let shared = &self.shared;
        let route = super::route(req.uri().path());
        let refuse = |e: Error| {
            let status = match route {
                Some(r) => match RequestObserver::start(r.metrics, None).finish::<()>(Err(e)) {
                    Err(status) => status,
                    Ok(()) => unreachable!("finish of an error is an error"),
                },
                None => Status::from(e),
            };
            GuardFuture::Refused(Some(status.into_http()))
        };
        if shared.stopping.is_cancelled() {
            return refuse(Error::ShuttingDown);
        }
        let (mut parts, body) = req.into_parts();
        let mut watcher = None;
        if let Some(route) = route {
            // Admission on the headers alone: the body is not read yet.
            let metadata = MetadataMap::from_headers(std::mem::take(&mut parts.headers));
            let admitted = shared.gate.admit_headers(
                &metadata,
                parts.extensions.get::<ConnInfo>(),
                route.scope,
            );
            parts.headers = metadata.into_headers();
            match admitted {
                Ok(caller) => {
                    parts.extensions.insert(Admitted(Arc::new(caller)));
                }
                Err(e) => return refuse(e),
            }
        } else if LONG_LIVED.contains(&parts.uri.path()) {
            match shared.watchers.clone().try_acquire_owned() {
                Ok(permit) => watcher = Some(permit),
                Err(_) => {
                    crate::metrics::bound_refusal("--max-health-watchers");
                    return refuse(Error::over_bound(
                        Exhaustion::Overloaded,
                        format_args!(
                            "{} health Watch and reflection streams are open",
                            shared.settings.max_health_watchers
                        ),
                        shared.settings.max_health_watchers as u64,
                        "--max-health-watchers",
                        Some(Duration::from_secs(1)),
                    ));
                }
            }
        }
        let body = Body::new(RequestBody {
            inner: body,
            deadline: Instant::now() + shared.settings.request_body_timeout,
            shared: shared.clone(),
            held: None,
            wait: None,
            done: false,
        });
        GuardFuture::Inner {
            inner: self.inner.call(http::Request::from_parts(parts, body)),
            stream: watcher.map(|w| (w, shared.stopping.clone())),
        }
    }
}

/// The response future of `Guard`.
pub enum GuardFuture<F> {
    /// Refused before the service ran.
    Refused(Option<http::Response<Body>>),
    /// The service's answer; long-lived streams carry their watcher slot.
    Inner {
        inner: F,
        stream: Option<(OwnedSemaphorePermit, CancellationToken)>,
    },
}

impl<F, E> Future for GuardFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            GuardFuture::Refused(resp) => match resp.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => Poll::Pending,
            },
            GuardFuture::Inner { inner, stream } => {
                let resp = std::task::ready!(Pin::new(inner).poll(cx))?;
                Poll::Ready(Ok(match stream.take() {
                    None => resp,
                    Some((watcher, stopping)) => resp.map(|body| {
                        Body::new(StreamBody {
                            inner: body,
                            stopping,
                            wait: None,
                            _watcher: watcher,
                            ended: false,
                        })
                    }),
                }))
            }
        }
    }
}

/// Why a request body stopped being waited for.
enum Stop {
    Timeout,
    Shutdown,
}

/// A request body under the byte budget, the body timeout and shutdown.
struct RequestBody {
    inner: Body,
    deadline: Instant,
    shared: Arc<Shared>,
    /// Budget held for the bytes received so far; released when tonic has
    /// decoded the message and drops the body.
    held: Option<OwnedSemaphorePermit>,
    /// Created on the first wait: most bodies arrive with their headers.
    wait: Option<Pin<Box<dyn Future<Output = Stop> + Send>>>,
    done: bool,
}

impl RequestBody {
    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.done = true;
        self.held = None;
        Poll::Ready(Some(Err(Status::from(e))))
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, Bytes::len);
                if n > 0 {
                    let permits = u32::try_from(n).unwrap_or(u32::MAX);
                    match this.shared.pending.clone().try_acquire_many_owned(permits) {
                        Ok(p) => match &mut this.held {
                            Some(held) => held.merge(p),
                            None => this.held = Some(p),
                        },
                        Err(_) => {
                            crate::metrics::bound_refusal("--max-pending-request-bytes");
                            let limit = this.shared.settings.max_pending_request_bytes;
                            return this.fail(Error::over_bound(
                                Exhaustion::Overloaded,
                                format_args!(
                                    "the server holds {limit} bytes of requests being received"
                                ),
                                limit as u64,
                                "--max-pending-request-bytes",
                                Some(super::gate::SHED_RETRY_AFTER),
                            ));
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.done = true;
                this.wait = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => {
                let wait = this.wait.get_or_insert_with(|| {
                    let (deadline, stopping) = (this.deadline, this.shared.stopping.clone());
                    Box::pin(async move {
                        tokio::select! {
                            () = tokio::time::sleep_until(deadline) => Stop::Timeout,
                            () = stopping.cancelled_owned() => Stop::Shutdown,
                        }
                    })
                });
                match wait.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Stop::Shutdown) => this.fail(Error::ShuttingDown),
                    Poll::Ready(Stop::Timeout) => {
                        crate::metrics::bound_refusal("--request-body-timeout");
                        let t = this.shared.settings.request_body_timeout;
                        this.fail(Error::DeadlineExceeded {
                            message: format!(
                                "the request message did not arrive within {t:?} of its \
                                 headers (--request-body-timeout / STATE_REQUEST_BODY_TIMEOUT)"
                            ),
                            detail: None,
                        })
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body of a long-lived stream: holds its watcher slot and
/// ends with UNAVAILABLE (SHUTTING_DOWN) when shutdown begins.
struct StreamBody {
    inner: Body,
    stopping: CancellationToken,
    wait: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    _watcher: OwnedSemaphorePermit,
    ended: bool,
}

impl HttpBody for StreamBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => {
                let stopping = &this.stopping;
                let wait = this
                    .wait
                    .get_or_insert_with(|| Box::pin(stopping.clone().cancelled_owned()));
                if wait.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.ended = true;
                let mut trailers = http::HeaderMap::new();
                // Fails only for a message that is not a header value; ours
                // is plain ASCII.
                let _ = Status::from(Error::ShuttingDown).add_header(&mut trailers);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}
