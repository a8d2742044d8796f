//! Admission of connections, the same on both ports: at most `max_connections` open at once per
//! listener (beyond it a new connection is closed at once, so the process keeps file
//! descriptors for the connections it serves), and a connection must send its first bytes
//! (an HTTP request line, the HTTP/2 preface, a TLS hello) within `handshake_timeout`, or it is
//! closed. Silent, half-open connections thus cannot pile up. With `idle_timeout` (gRPC), a
//! connection that has had no call in flight for that long is closed too: calls mark their
//! connection busy ([`Activity`], through `grpc::idle`), and a timer per connection shuts the
//! socket down once it has been idle long enough (the peer sees the connection end between
//! calls and reconnects for the next). What happens otherwise is each protocol's own business
//! (HTTP header and body timeouts in `http`, keepalive and connection age on gRPC in `server`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::shutdown::Shutdown;
use crate::telemetry;

#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    /// Close a connection with no call in flight for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
}

/// An admitted connection; its slot frees when it is dropped.
pub struct Admitted {
    stream: TcpStream,
    peer: SocketAddr,
    activity: Arc<Activity>,
    idle_timeout: Option<Duration>,
    _slot: OwnedSemaphorePermit,
}

impl Admitted {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

/// Calls in flight on one connection, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` at which the last call ended.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { opened: crate::clock::monotonic(), in_flight: AtomicUsize::new(0), idle_since_ms: AtomicU64::new(0) }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A call starts; the connection is busy until the returned guard drops.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(self))
    }

    /// How long the connection has had no call in flight (`None` while one is).
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.idle_since_ms.load(Ordering::Acquire);
        Some(Duration::from_millis(self.elapsed_ms().saturating_sub(since)))
    }
}

/// A call in flight (its response body included, so a `Watch` stream keeps its connection).
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        // The end time first: whoever then sees no call in flight also sees when the last ended.
        self.0.idle_since_ms.store(self.0.elapsed_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a gRPC call learns of its connection (a request extension, set by tonic).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub tcp: tonic::transport::server::TcpConnectInfo,
    pub activity: Arc<Activity>,
}

/// Accept on `listener` until shutdown; admitted connections arrive on the returned channel.
/// `port` names the listener in metrics (`grpc`, `http`).
pub fn admit(
    listener: TcpListener,
    rules: Admission,
    port: &'static str,
    mut stop: Shutdown,
) -> mpsc::Receiver<Admitted> {
    let (tx, rx) = mpsc::channel(256);
    let slots = Arc::new(Semaphore::new(rules.max_connections.max(1)));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.fired() => return,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                // Out of descriptors or a reset before accept: nothing to serve; keep accepting.
                Err(e) => {
                    tracing::warn!(port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                metrics::counter!(telemetry::CONNECTIONS_REFUSED, "port" => port, "reason" => "limit").increment(1);
                continue;
            };
            let conn = Admitted {
                stream,
                peer,
                activity: Arc::new(Activity::new()),
                idle_timeout: rules.idle_timeout,
                _slot: slot,
            };
            tokio::spawn(handshake(conn, rules.handshake_timeout, port, tx.clone()));
        }
    });
    rx
}

/// Pass the connection on once it has sent something; drop it if it stays silent.
async fn handshake(conn: Admitted, within: Duration, port: &'static str, tx: mpsc::Sender<Admitted>) {
    let mut first = [0u8; 1];
    match tokio::time::timeout(within, conn.stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {
            configure(&conn.stream);
            if let Some(limit) = conn.idle_timeout {
                watch_idle(&conn, limit, port);
            }
            let _ = tx.send(conn).await;
        }
        Ok(_) => {}
        Err(_) => {
            metrics::counter!(telemetry::CONNECTIONS_REFUSED, "port" => port, "reason" => "handshake_timeout")
                .increment(1);
        }
    }
}

/// Shut the connection's socket down once it has had no call in flight for `limit`. The timer
/// holds a duplicate of the socket (the connection itself belongs to the protocol server), and
/// ends when the connection is gone.
fn watch_idle(conn: &Admitted, limit: Duration, port: &'static str) {
    let Ok(socket) = socket2::SockRef::from(&conn.stream).try_clone() else { return };
    let activity = Arc::clone(&conn.activity);
    tokio::spawn(async move {
        loop {
            let wait = match activity.idle_for() {
                None => limit,
                Some(idle) if idle >= limit => {
                    metrics::counter!(telemetry::CONNECTIONS_CLOSED_IDLE, "port" => port).increment(1);
                    let _ = socket.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Some(idle) => limit - idle,
            };
            tokio::time::sleep(wait).await;
            // Only this timer still holds the activity: the connection has ended.
            if Arc::strong_count(&activity) == 1 {
                return;
            }
        }
    });
}

/// `TCP_NODELAY` (Nagle + delayed ACK would add ~40 ms to small writes: Watch, batch replies)
/// and TCP keepalive (finds peers that vanished without a FIN).
fn configure(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

impl AsyncRead for Admitted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Admitted {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo { tcp: self.stream.connect_info(), activity: Arc::clone(&self.activity) }
    }
}
