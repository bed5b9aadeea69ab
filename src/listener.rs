//! Accepts client connections under bounds, before anything knows who is
//! calling: at most `max_connections` held at once (the excess is closed at
//! once, so file descriptors stay bounded), and each connection gets its own
//! task that must finish the TLS handshake within `handshake_timeout` and
//! deliver the HTTP/2 connection preface within `preface_timeout`. Only then
//! is the connection handed to the HTTP/2 server, with the bytes read so far
//! replayed in front of the socket. (Waiting for the first request headers
//! too would deadlock grpc-go, which waits for the server's SETTINGS before
//! it sends a request; an HTTP/2 connection that then stays silent answers
//! keepalive PINGs or is closed, and counts under `max_connections`.)
//!
//! Nothing here waits for one client on behalf of another: the accept loop
//! never blocks on a handshake (issue 11: 300 silent sockets used to hold the
//! handshake slots and delay legitimate handshakes by 9–18 s), and a socket
//! that never speaks holds its slot for at most the two timeouts.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::Stream;
use rustls::pki_types::CertificateDer;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use crate::tls::ServerTls;

/// The client connection preface every HTTP/2 connection starts with
/// (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How often a failing `accept` (typically EMFILE) is logged at most: the
/// failure repeats for every connection attempt while it lasts.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The bounds on connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnBounds {
    /// Connections held at once, handshakes included.
    pub max_connections: usize,
    /// Time to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time, after the handshake, to send the HTTP/2 connection preface.
    pub preface_timeout: Duration,
}

/// What the service knows about a connection: inserted into every request's
/// extensions by tonic (through `Connected`).
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// The verified client certificate chain (leaf first), if one was
    /// presented over TLS.
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// The socket under a connection.
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An admitted connection: its socket, the early bytes to replay, and its
/// place under `max_connections` (released on drop).
pub struct Conn {
    io: Transport,
    replay: Vec<u8>,
    replayed: usize,
    info: ConnInfo,
    _slot: Slot,
}

/// A connection's place under the limit; keeps the open-connections gauge.
struct Slot(#[expect(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit);

impl Slot {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        crate::metrics::connection_opened();
        Slot(permit)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        crate::metrics::connection_closed();
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.replayed < this.replay.len() {
            let rest = &this.replay[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            if this.replayed == this.replay.len() {
                this.replay = Vec::new();
                this.replayed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        match &mut this.io {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Transport {
    async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf).await,
            Transport::Tls(s) => s.read(buf).await,
        }
    }
}

/// The stream of admitted connections on `listener` (TLS when `tls` is
/// given). Dropping the stream (tonic does at shutdown) stops accepting and
/// abandons connections still in their handshake.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    bounds: ConnBounds,
) -> impl Stream<Item = io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(bounds.max_connections));
    tokio::spawn(async move {
        let mut last_accept_warning: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                () = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning, and
                    // log once in a while, not for every attempt.
                    crate::metrics::connection_refused("accept_error");
                    if last_accept_warning.is_none_or(|t| t.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL)
                    {
                        warn!(error = %e, "accepting a connection failed (repeats are not logged for 10 s)");
                        last_accept_warning = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Over the limit: close at once rather than hold the socket (and
            // its fd) while the client waits for nothing.
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                crate::metrics::connection_refused("max_connections");
                debug!(%peer, "connection refused: --max-connections reached");
                drop(tcp);
                continue;
            };
            let slot = Slot::new(permit);
            let tx = tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let admitted = tokio::select! {
                    c = admit(tcp, peer, tls, bounds, slot) => c,
                    () = tx.closed() => None,
                };
                if let Some(conn) = admitted {
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Handshake and preface of one connection, each under its timeout.
async fn admit(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<ServerTls>>,
    bounds: ConnBounds,
    slot: Slot,
) -> Option<Conn> {
    // tonic ignores its own TCP options with a custom incoming stream.
    let _ = tcp.set_nodelay(true);
    let (mut io, peer_certs) = match tls {
        None => (Transport::Plain(tcp), None),
        Some(tls) => {
            match tokio::time::timeout(bounds.handshake_timeout, tls.acceptor().accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let certs = stream.get_ref().1.peer_certificates().map(|chain| {
                        Arc::new(chain.iter().map(|c| c.clone().into_owned()).collect())
                    });
                    (Transport::Tls(Box::new(stream)), certs)
                }
                // Scanners and misconfigured clients are routine: debug.
                Ok(Err(e)) => {
                    crate::metrics::connection_refused("handshake_failed");
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return None;
                }
                Err(_) => {
                    crate::metrics::connection_refused("handshake_timeout");
                    debug!(%peer, "TLS handshake timed out (--handshake-timeout)");
                    return None;
                }
            }
        }
    };
    let replay = match tokio::time::timeout(bounds.preface_timeout, preface(&mut io)).await {
        Ok(Ok(Some(bytes))) => bytes,
        Ok(Ok(None)) => {
            crate::metrics::connection_refused("not_http2");
            debug!(%peer, "connection closed: not an HTTP/2 client");
            return None;
        }
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "connection lost before its first request");
            return None;
        }
        Err(_) => {
            crate::metrics::connection_refused("preface_timeout");
            debug!(%peer, "connection closed: no HTTP/2 preface within --preface-timeout");
            return None;
        }
    };
    Some(Conn {
        io,
        replay,
        replayed: 0,
        info: ConnInfo {
            remote: Some(peer),
            peer_certs,
        },
        _slot: slot,
    })
}

/// Reads the HTTP/2 connection preface; returns the bytes read (to replay),
/// or `None` when the peer is not an HTTP/2 client (wrong preface, or the
/// end of the stream before it).
async fn preface(io: &mut Transport) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; PREFACE.len()];
    let mut got = 0;
    while got < PREFACE.len() {
        let n = io.read_some(&mut buf[got..]).await?;
        if n == 0 || buf[got..got + n] != PREFACE[got..got + n] {
            return Ok(None);
        }
        got += n;
    }
    Ok(Some(buf))
}
