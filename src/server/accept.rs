//! The accept step: what turns an accepted socket into the stream a session runs over, and
//! tells the session who is on the other end.
//!
//! It is its own phase with its own deadline (`ServerConfig::handshake_timeout`), so a peer
//! that connects and then says nothing during a handshake holds a task only that long, and the
//! session never sees a raw socket. Plain TCP is one implementation; TLS is another (it does its
//! handshake here and reports the session's identity in [`Peer`]).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;

use crate::transport::Stream;

/// Who is on the other end of a connection, as far as the accept step could tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The remote address of the TCP connection.
    pub addr: SocketAddr,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt(f)
    }
}

/// Turns accepted sockets into session streams.
pub trait Accept: Send + Sync + 'static {
    /// The stream a session runs over.
    type Stream: Stream + 'static;

    /// Prepares `tcp`, accepted from `addr`, for a session: a handshake, for a secure
    /// transport. The server bounds it with its handshake timeout.
    ///
    /// # Errors
    /// The handshake failed; the connection is dropped without a reply.
    fn accept(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<(Self::Stream, Peer)>> + Send;

    /// Tells a connection over the server's limits that it is refused, without waiting and
    /// without spending a task on it, if this transport can (a plain socket can: its first
    /// line goes out in one non-blocking write). The default does nothing: the connection is
    /// then just closed.
    fn refuse_now(&self, tcp: &TcpStream, line: &[u8]) {
        let _ = (tcp, line);
    }
}

/// Plain TCP: the protocol's bytes straight on the socket.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainTcp;

impl Accept for PlainTcp {
    type Stream = TcpStream;

    async fn accept(&self, tcp: TcpStream, addr: SocketAddr) -> io::Result<(TcpStream, Peer)> {
        Ok((tcp, Peer { addr }))
    }

    fn refuse_now(&self, tcp: &TcpStream, line: &[u8]) {
        // A fresh socket's send buffer is empty, so the line goes out without waiting.
        let _ = tcp.try_write(line);
    }
}
