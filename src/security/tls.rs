//! TLS 1.3 for both ends, with the server authenticated by a pinned key fingerprint, not WebPKI.
//!
//! Threats: eavesdropping and tampering on the network (TLS 1.3 only, rustls with the `ring`
//! provider); a man in the middle presenting its own key (the client compares the presented key's
//! [`Fingerprint`] with the pinned one and refuses a difference); a man in the middle replaying the
//! real server's certificate without its private key (the handshake signature is checked against
//! the certificate's key with rustls' own `verify_tls13_signature`); a session resumed without a
//! certificate, which would skip the pin check (resumption is off on the client); a relayed
//! pairing (the [`exporter`] value differs on each side of a relay, and pairing mixes it in).
//!
//! Also the quick recognition of the wrong mode ([`looks_like_tls_client_hello`],
//! [`looks_like_plain_greeting`], [`FirstBytes`]), so that the caller can name the cause instead
//! of timing out. Not here: timeouts (the caller wraps each phase), what to do on first contact
//! (the CLI asks the user), where pins are kept ([`super::known_hosts`]).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ConnectionCommon, DigitallySignedStruct, ServerConfig, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::identity::{Fingerprint, Identity};

/// The ALPN protocol name both ends offer. The server refuses a client that offers only other
/// protocols (so a TLS connection meant for another service cannot be redirected to barge),
/// and accepts one that offers none (such as `openssl s_client` without `-alpn`).
pub const ALPN: &[u8] = b"barge/1";
/// The exporter label that binds a pairing exchange to its TLS session (RFC 8446 section 7.5).
pub const PAIR_EXPORTER_LABEL: &[u8] = b"EXPORTER-barge-pair";
/// How many bytes of the first read [`FirstBytes`] keeps; enough for either mode's first line.
pub const FIRST_BYTES: usize = 32;
/// The server name sent in the handshake. The client does not send it (SNI is off: a name says
/// nothing we check, and would tell onlookers what the client thinks it talks to); rustls still
/// needs one for its API.
const SERVER_NAME: &str = "barge.invalid";

/// Why a TLS configuration or an exporter value could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration or the request.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's TLS configuration: TLS 1.3 only, no client certificates, the identity's key.
///
/// # Errors
/// [`TlsError::Rustls`] if rustls refuses the key.
pub fn server_config(identity: &Identity) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![identity.certificate().clone()], identity.private_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // Clients never resume (each connection must show the pinned key), so tickets would only
    // cost bytes and memory.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// What the client expects of the server's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// Only this key is accepted.
    Pinned(Fingerprint),
    /// Any key that proves possession in the handshake is accepted and reported through
    /// [`PresentedKey`]; the caller must have it confirmed (by the user, or by pairing) before it
    /// sends anything secret or trusts anything it receives.
    FirstContact,
}

/// The fingerprint the server presented in the last handshake of a client configuration, kept
/// even when the handshake was refused (to tell "identity changed" from other failures).
#[derive(Debug, Clone, Default)]
pub struct PresentedKey(Arc<Mutex<Option<Fingerprint>>>);

impl PresentedKey {
    /// The presented fingerprint, or `None` if no certificate was received.
    #[must_use]
    pub fn get(&self) -> Option<Fingerprint> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, fingerprint: Fingerprint) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(fingerprint);
    }
}

/// The client's verifier: no certificate authorities, only the pinned key.
#[derive(Debug)]
struct PinnedVerifier {
    expect: Expectation,
    presented: PresentedKey,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Validity dates and names are ignored on purpose: the certificate is only a carrier for
        // the key, and the key is what is pinned.
        let fingerprint = Fingerprint::of_certificate(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        self.presented.set(fingerprint);
        match self.expect {
            Expectation::Pinned(pinned) if pinned != fingerprint => {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable with a TLS 1.3-only configuration; refuse rather than trust.
        Err(rustls::Error::General("TLS 1.2 is not offered".to_owned()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A client TLS configuration for one server: TLS 1.3 only, the key checked against `expect`,
/// no session resumption; and the handle that reports the key the server presented.
///
/// Make one per connection (the handle reports the latest handshake).
///
/// # Errors
/// [`TlsError::Rustls`] if rustls refuses the configuration.
pub fn client_config(expect: Expectation) -> Result<(Arc<ClientConfig>, PresentedKey), TlsError> {
    let provider = provider();
    let presented = PresentedKey::default();
    let verifier = PinnedVerifier {
        expect,
        presented: presented.clone(),
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.enable_sni = false;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok((Arc::new(config), presented))
}

/// Runs the client handshake over `io` (wrap it in a timeout).
///
/// # Errors
/// The handshake failed; a refused key shows as an error whose source is
/// `rustls::Error::InvalidCertificate`, and [`PresentedKey::get`] tells which key was seen.
pub async fn connect<IO>(
    config: Arc<ClientConfig>,
    io: IO,
) -> io::Result<tokio_rustls::client::TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(SERVER_NAME).map_err(io::Error::other)?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, io)
        .await
}

/// What a failed client handshake means, for a message that names the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The server presented a key other than the pinned one: the server's identity changed, or
    /// someone is in the middle. The CLI refuses with exit code 5 and never replaces the pin.
    IdentityChanged {
        /// The key presented.
        presented: Fingerprint,
    },
    /// The server presented the pinned certificate but could not sign with its key: someone
    /// replays the real server's certificate.
    ForgedSignature,
    /// The server answered in plain text: it runs with `--plain`.
    PlainServer,
    /// Anything else (connection reset, TLS alert, wrong protocol).
    Other,
}

/// Explains a failed [`connect`]: `err` is its error, `presented` the handle from
/// [`client_config`], `seen` the handle from [`FirstBytes`] around the stream (if one was used).
#[must_use]
pub fn diagnose(
    err: &io::Error,
    expect: Expectation,
    presented: &PresentedKey,
    seen: Option<&SeenBytes>,
) -> HandshakeFailure {
    if seen.is_some_and(|s| looks_like_plain_greeting(&s.get())) {
        return HandshakeFailure::PlainServer;
    }
    let rustls_error = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match (expect, presented.get(), rustls_error) {
        (Expectation::Pinned(pinned), Some(key), _) if key != pinned => {
            HandshakeFailure::IdentityChanged { presented: key }
        }
        (
            _,
            Some(_),
            Some(rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)),
        ) => HandshakeFailure::ForgedSignature,
        _ => HandshakeFailure::Other,
    }
}

/// The 32-byte TLS exporter value (RFC 8446 section 7.5) for `label`, the same on both ends of
/// one session and different on the two sessions of a relay.
///
/// Use `stream.get_ref().1` of a tokio-rustls client or server stream as `conn`.
///
/// # Errors
/// [`TlsError::Rustls`] before the handshake is complete.
pub fn exporter<D>(conn: &ConnectionCommon<D>, label: &[u8]) -> Result<[u8; 32], TlsError> {
    Ok(conn.export_keying_material([0u8; 32], label, None)?)
}

/// Whether the first bytes a server received look like a TLS ClientHello: a handshake record
/// (0x16) of TLS version 3.x. Enough to tell a TLS client at a `--plain` server.
#[must_use]
pub fn looks_like_tls_client_hello(first_bytes: &[u8]) -> bool {
    matches!(first_bytes, [0x16] | [0x16, 0x03, ..])
}

/// Whether the first bytes a client received look like a plain barge reply line (the greeting
/// `220 barge/1 ready`, or `503` when busy): three ASCII digits and a space. A TLS server's
/// first byte is 0x16 or 0x15 (alert), never a digit. Enough to tell a TLS client it met a plain
/// server.
#[must_use]
pub fn looks_like_plain_greeting(bytes: &[u8]) -> bool {
    let n = bytes.len().min(4);
    n >= 1
        && bytes[..n.min(3)].iter().all(u8::is_ascii_digit)
        && (n < 4 || bytes[3] == b' ' || bytes[3] == b'-')
}

/// A stream wrapper that keeps a copy of the first [`FIRST_BYTES`] bytes read, so that after a
/// failed handshake the caller can see what the other side actually sent.
#[derive(Debug)]
pub struct FirstBytes<IO> {
    io: IO,
    seen: Arc<Mutex<Vec<u8>>>,
}

/// A handle on what a [`FirstBytes`] stream has read so far.
#[derive(Debug, Clone)]
pub struct SeenBytes(Arc<Mutex<Vec<u8>>>);

impl SeenBytes {
    /// The first bytes read (at most [`FIRST_BYTES`]).
    #[must_use]
    pub fn get(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<IO> FirstBytes<IO> {
    /// Wraps `io`; the handle reports what is read through the wrapper.
    pub fn new(io: IO) -> (Self, SeenBytes) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        (
            Self {
                io,
                seen: Arc::clone(&seen),
            },
            SeenBytes(seen),
        )
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FirstBytes<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let mut seen = this.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let room = FIRST_BYTES.saturating_sub(seen.len());
            let new = &buf.filled()[before..];
            seen.extend_from_slice(&new[..new.len().min(room)]);
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FirstBytes<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
