//! Connecting securely: TLS 1.3 with the server's key pinned (`PROTOCOL.md` section 1.1), or
//! plain text when asked for, and in both cases a clear word when the two sides disagree on
//! which (a plain server meeting a TLS client, or the other way round).
//!
//! The threat answered here is a man in the middle on the network path: the client accepts
//! only the pinned key (or, on first contact, reports the key it saw so the caller can have it
//! confirmed before anything else happens). Where pins are kept, and asking the user, belong to
//! the CLI; this module never falls back from TLS to plain by itself.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{Client, ClientError};
use crate::security::identity::Fingerprint;
use crate::security::tls::{self, Expectation, FirstBytes, HandshakeFailure};

/// How the client reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Clear text (`--plain`): for `nc`-style use and trusted loopback.
    Plain,
    /// TLS 1.3; the server's key must match the pin, or is reported on first contact.
    Tls(Expectation),
}

/// Any stream a client runs over: TCP, or TLS over TCP.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// A boxed [`Duplex`], so one client type serves both kinds of connection.
pub type AnyStream = Box<dyn Duplex>;

/// How long a plain client waits for the greeting's first byte before it concludes that the
/// server probably expects TLS (a TLS server says nothing until it gets a ClientHello).
const PLAIN_GREETING_WAIT: Duration = Duration::from_secs(3);

impl Client<AnyStream> {
    /// Connects to `addr` (`host:port`) as `security` says and reads the greeting. Returns the
    /// session and, over TLS, the server's key fingerprint (on first contact: the key the
    /// caller must have confirmed before it trusts the session).
    ///
    /// # Errors
    /// As [`Client::connect`]; plus [`ClientError::IdentityChanged`] when the server presents
    /// another key than the pinned one (nothing of the protocol was sent),
    /// [`ClientError::WrongMode`] when the server speaks plain text to a TLS client or says
    /// nothing to a plain one, and [`ClientError::Tls`] for other handshake failures.
    pub async fn connect_with(
        addr: &str,
        timeout: Duration,
        security: Security,
    ) -> Result<(Self, Option<Fingerprint>), ClientError> {
        let tcp = tcp_connect(addr, timeout).await?;
        match security {
            Security::Plain => {
                let mut first = [0u8; 1];
                let wait = PLAIN_GREETING_WAIT.min(timeout);
                if tokio::time::timeout(wait, tcp.peek(&mut first))
                    .await
                    .is_err()
                {
                    return Err(ClientError::WrongMode(format!(
                        "no greeting within {}s: the server probably expects TLS; drop --plain",
                        wait.as_secs()
                    )));
                }
                let client = Client::handshake(Box::new(tcp) as AnyStream, Some(timeout)).await?;
                Ok((client, None))
            }
            Security::Tls(expect) => {
                let (config, presented) =
                    tls::client_config(expect).map_err(|e| ClientError::Tls(e.to_string()))?;
                let (io, seen) = FirstBytes::new(tcp);
                let stream = match tokio::time::timeout(timeout, tls::connect(config, io)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        return Err(match tls::diagnose(&e, expect, &presented, Some(&seen)) {
                            HandshakeFailure::IdentityChanged { presented } => {
                                ClientError::IdentityChanged {
                                    pinned: match expect {
                                        Expectation::Pinned(p) => Some(p),
                                        Expectation::FirstContact => None,
                                    },
                                    presented,
                                }
                            }
                            HandshakeFailure::ForgedSignature => ClientError::Tls(
                                "the server showed the pinned certificate but could not prove it \
                                 holds its key: someone may be impersonating it"
                                    .into(),
                            ),
                            HandshakeFailure::PlainServer => ClientError::WrongMode(
                                "this server speaks plain text; use --plain if you trust the network"
                                    .into(),
                            ),
                            HandshakeFailure::Other => ClientError::Tls(e.to_string()),
                        });
                    }
                    Err(_) => {
                        return Err(ClientError::Tls(format!(
                            "no TLS handshake within {}s",
                            timeout.as_secs()
                        )));
                    }
                };
                let fingerprint = presented.get();
                let binding = tls::exporter(stream.get_ref().1, tls::PAIR_EXPORTER_LABEL).ok();
                let mut client =
                    Client::handshake(Box::new(stream) as AnyStream, Some(timeout)).await?;
                client.pair_binding = binding;
                Ok((client, fingerprint))
            }
        }
    }
}

/// Opens the TCP connection, with Nagle off (requests are small and each waits for a reply).
pub(super) async fn tcp_connect(addr: &str, timeout: Duration) -> Result<TcpStream, ClientError> {
    let failed = |source| ClientError::Connect {
        addr: addr.to_owned(),
        source,
    };
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(failed(e)),
        Err(_) => return Err(failed(std::io::ErrorKind::TimedOut.into())),
    };
    stream.set_nodelay(true).map_err(failed)?;
    Ok(stream)
}
