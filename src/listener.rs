//! Admission of connections, the same on both ports: at most `max_connections` open at once per
//! listener (beyond it a new connection is closed at once, so the process keeps file
//! descriptors for the connections it serves), and a connection must send its first bytes
//! (an HTTP request line, the HTTP/2 preface, a TLS hello) within `handshake_timeout`, or it is
//! closed. Silent, half-open connections thus cannot pile up. What happens after the first
//! bytes is each protocol's own business (HTTP header and body timeouts in `http`, keepalive
//! and connection age on gRPC in `server`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::shutdown::Shutdown;
use crate::telemetry;

#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

/// An admitted connection; its slot frees when it is dropped.
pub struct Admitted {
    stream: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
}

impl Admitted {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
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
            tokio::spawn(handshake(Admitted { stream, peer, _slot: slot }, rules.handshake_timeout, port, tx.clone()));
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
            let _ = tx.send(conn).await;
        }
        Ok(_) => {}
        Err(_) => {
            metrics::counter!(telemetry::CONNECTIONS_REFUSED, "port" => port, "reason" => "handshake_timeout")
                .increment(1);
        }
    }
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
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
