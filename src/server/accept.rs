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

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::transport::Stream;

/// Who is on the other end of a connection, as far as the accept step could tell.
#[derive(Clone, PartialEq, Eq)]
pub struct Peer {
    /// The remote address of the TCP connection.
    pub addr: SocketAddr,
    /// The TLS session's exporter value for pairing (`PROTOCOL.md` section 5.10); `None` on a
    /// plain connection, where pairing has nothing to bind to.
    pub pair_binding: Option<[u8; 32]>,
}

impl Peer {
    /// A peer on a plain connection.
    #[must_use]
    pub fn plain(addr: SocketAddr) -> Self {
        Self {
            addr,
            pair_binding: None,
        }
    }
}

impl fmt::Debug for Peer {
    /// Shows the address only: the exporter value is key material of the session.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
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
        Ok((tcp, Peer::plain(addr)))
    }

    fn refuse_now(&self, tcp: &TcpStream, line: &[u8]) {
        // A fresh socket's send buffer is empty, so the line goes out without waiting.
        let _ = tcp.try_write(line);
    }
}

/// TLS 1.3 with the server's own identity (`PROTOCOL.md` section 1.1): the handshake is the
/// accept step, so a session only ever sees decrypted bytes.
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls")
    }
}

/// What a TLS server says, in plain text, to a peer that does not start with a TLS
/// handshake (someone typing into `nc`, or a `--plain` client).
const EXPECTS_TLS: &[u8] =
    b"400 This server expects TLS; drop --plain, or use openssl s_client -connect HOST:PORT\n";

impl Tls {
    /// A TLS accept step from a server configuration (see `security::tls::server_config`).
    #[must_use]
    pub fn new(config: std::sync::Arc<rustls::ServerConfig>) -> Self {
        Self {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
        }
    }
}

impl Accept for Tls {
    type Stream = tokio_rustls::server::TlsStream<TcpStream>;

    async fn accept(&self, tcp: TcpStream, addr: SocketAddr) -> io::Result<(Self::Stream, Peer)> {
        // A plain client waits for a greeting that a TLS server never sends first, and a TLS
        // handshake would fail on its first line without a word: look at the first byte and
        // tell such a peer, in words it can read, what this server expects.
        let mut first = [0u8; 1];
        let n = tcp.peek(&mut first).await?;
        if n > 0 && !crate::security::tls::looks_like_tls_client_hello(&first[..n]) {
            let mut tcp = tcp;
            let _ = tcp.try_write(EXPECTS_TLS);
            // Read what it sent before closing: a socket closed with unread input sends a
            // reset, which can destroy the refusal before the peer reads it.
            let _ = tcp.shutdown().await;
            let mut scratch = vec![0u8; 4096];
            let _ = tokio::time::timeout(std::time::Duration::from_millis(500), async {
                while matches!(tcp.read(&mut scratch).await, Ok(n) if n > 0) {}
            })
            .await;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a TLS client (it sent plain text)",
            ));
        }
        let stream = self.acceptor.accept(tcp).await?;
        let pair_binding = crate::security::tls::exporter(
            stream.get_ref().1,
            crate::security::tls::PAIR_EXPORTER_LABEL,
        )
        .ok();
        Ok((stream, Peer { addr, pair_binding }))
    }
}
