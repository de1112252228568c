//! Real handshakes over in-memory duplex streams and a loopback socket, one test per threat.

use super::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Runs a server handshake on one end and a client handshake on the other; the server echoes one
/// line after a successful handshake so that the test proves data flows.
async fn handshake(
    server: Arc<ServerConfig>,
    expect: Expectation,
) -> Result<(
    io::Result<tokio_rustls::client::TlsStream<DuplexStream>>,
    PresentedKey,
)> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server_task = tokio::spawn(async move {
        let mut tls = tokio_rustls::TlsAcceptor::from(server)
            .accept(server_io)
            .await?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await?;
        tls.write_all(&buf).await?;
        tls.flush().await?;
        let value = exporter(tls.get_ref().1, PAIR_EXPORTER_LABEL).map_err(io::Error::other)?;
        io::Result::Ok(value)
    });
    let (config, presented) = client_config(expect)?;
    let client = connect(config, client_io).await;
    if client.is_err() {
        // The server side fails too (alert or closed pipe); its result does not matter here.
        server_task.abort();
        return Ok((client, presented));
    }
    let mut stream = client?;
    stream.write_all(b"hello").await?;
    let mut echo = [0u8; 5];
    stream.read_exact(&mut echo).await?;
    assert_eq!(&echo, b"hello");
    let server_exporter = server_task.await??;
    let client_exporter = exporter(stream.get_ref().1, PAIR_EXPORTER_LABEL)?;
    assert_eq!(
        client_exporter, server_exporter,
        "both ends derive the same exporter value"
    );
    assert_ne!(client_exporter, [0u8; 32]);
    Ok((Ok(stream), presented))
}

#[tokio::test]
async fn the_pinned_key_is_accepted() -> Result {
    let identity = Identity::generate()?;
    let (stream, presented) = handshake(
        server_config(&identity)?,
        Expectation::Pinned(identity.fingerprint()),
    )
    .await?;
    assert_eq!(stream?.get_ref().1.alpn_protocol(), Some(ALPN));
    assert_eq!(presented.get(), Some(identity.fingerprint()));
    Ok(())
}

#[tokio::test]
async fn a_client_for_another_protocol_is_refused() -> Result {
    let identity = Identity::generate()?;
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&identity)?);
    let server = tokio::spawn(async move { acceptor.accept(server_io).await.map(|_| ()) });
    let (config, _) = client_config(Expectation::Pinned(identity.fingerprint()))?;
    let mut config = Arc::unwrap_or_clone(config);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    assert!(connect(Arc::new(config), client_io).await.is_err());
    assert!(server.await?.is_err());
    Ok(())
}

#[tokio::test]
async fn a_different_key_is_refused_and_reported() -> Result {
    let pinned = Identity::generate()?;
    let impostor = Identity::generate()?;
    let (stream, presented) = handshake(
        server_config(&impostor)?,
        Expectation::Pinned(pinned.fingerprint()),
    )
    .await?;
    let err = stream.err().ok_or("a man in the middle was accepted")?;
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(inner, Some(rustls::Error::InvalidCertificate(_))),
        "unexpected error: {err}"
    );
    assert_eq!(presented.get(), Some(impostor.fingerprint()));
    assert_eq!(
        diagnose(
            &err,
            Expectation::Pinned(pinned.fingerprint()),
            &presented,
            None
        ),
        HandshakeFailure::IdentityChanged {
            presented: impostor.fingerprint()
        }
    );
    Ok(())
}

#[tokio::test]
async fn first_contact_reports_the_key() -> Result {
    let identity = Identity::generate()?;
    let (stream, presented) =
        handshake(server_config(&identity)?, Expectation::FirstContact).await?;
    assert!(stream.is_ok());
    assert_eq!(presented.get(), Some(identity.fingerprint()));
    Ok(())
}

/// A server that presents the real server's certificate but signs with its own key.
#[derive(Debug)]
struct StolenCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for StolenCertificate {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

#[tokio::test]
async fn a_replayed_certificate_without_its_key_is_refused() -> Result {
    let real = Identity::generate()?;
    let thief = Identity::generate()?;
    let provider = provider();
    let key = provider
        .key_provider
        .load_private_key(thief.private_key())?;
    let certified = rustls::sign::CertifiedKey::new(vec![real.certificate().clone()], key);
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(StolenCertificate(Arc::new(certified))));
    let (stream, presented) =
        handshake(Arc::new(config), Expectation::Pinned(real.fingerprint())).await?;
    let err = stream
        .err()
        .ok_or("a bad handshake signature was accepted")?;
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            inner,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadSignature
            ))
        ),
        "unexpected error: {err}"
    );
    // The certificate matched the pin; only the signature check caught the thief.
    assert_eq!(presented.get(), Some(real.fingerprint()));
    assert_eq!(
        diagnose(
            &err,
            Expectation::Pinned(real.fingerprint()),
            &presented,
            None
        ),
        HandshakeFailure::ForgedSignature
    );
    Ok(())
}

#[tokio::test]
async fn handshake_works_over_a_loopback_socket() -> Result {
    let identity = Identity::generate()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&identity)?);
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await?;
        let mut tls = acceptor.accept(socket).await?;
        tls.write_all(b"220 barge/1 ready\r\n").await?;
        tls.shutdown().await?;
        io::Result::Ok(())
    });
    let (config, _) = client_config(Expectation::Pinned(identity.fingerprint()))?;
    let mut tls = connect(config, tokio::net::TcpStream::connect(addr).await?).await?;
    let mut line = String::new();
    tls.read_to_string(&mut line).await?;
    assert_eq!(line, "220 barge/1 ready\r\n");
    server.await??;
    Ok(())
}

#[tokio::test]
async fn a_tls_client_meeting_a_plain_server_sees_its_greeting() -> Result {
    let (client_io, mut server_io) = tokio::io::duplex(64 * 1024);
    let plain_server = tokio::spawn(async move {
        server_io.write_all(b"220 barge/1 ready\r\n").await?;
        let mut first = [0u8; 3];
        server_io.read_exact(&mut first).await?;
        io::Result::Ok(first)
    });
    let (wrapped, seen) = FirstBytes::new(client_io);
    let (config, presented) = client_config(Expectation::FirstContact)?;
    let err = connect(config, wrapped)
        .await
        .err()
        .ok_or("handshake with a plain server")?;
    assert_eq!(
        diagnose(&err, Expectation::FirstContact, &presented, Some(&seen)),
        HandshakeFailure::PlainServer
    );
    assert_eq!(
        diagnose(&err, Expectation::FirstContact, &presented, None),
        HandshakeFailure::Other
    );
    assert!(
        looks_like_plain_greeting(&seen.get()),
        "seen {:?}",
        seen.get()
    );
    assert_eq!(presented.get(), None);
    // And the plain server, for its part, recognises the ClientHello it received.
    let first = plain_server.await??;
    assert!(looks_like_tls_client_hello(&first));
    Ok(())
}

#[test]
fn mode_recognition_tables() {
    for (bytes, hello) in [
        (&b"\x16\x03\x01\x02\x00"[..], true),
        (b"\x16", true),
        (b"\x16\x02", false),
        (b"LIST_FILES\r\n", false),
        (b"", false),
        (b"\x15\x03\x03", false),
    ] {
        assert_eq!(looks_like_tls_client_hello(bytes), hello, "{bytes:?}");
    }
    for (bytes, plain) in [
        (&b"220 barge/1 ready\r\n"[..], true),
        (b"503 busy\r\n", true),
        (b"22", true),
        (b"220", true),
        (b"2204", false),
        (b"\x16\x03\x03\x00\x7a", false),
        (b"\x15\x03\x03\x00\x02", false),
        (b"", false),
        (b"HTTP/1.1 400", false),
    ] {
        assert_eq!(looks_like_plain_greeting(bytes), plain, "{bytes:?}");
    }
}

#[test]
fn first_bytes_keeps_at_most_its_limit() -> Result {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let data = [b'x'; 100];
        let (mut wrapped, seen) = FirstBytes::new(&data[..]);
        let mut out = Vec::new();
        wrapped.read_to_end(&mut out).await?;
        assert_eq!(out.len(), 100, "all bytes pass through");
        assert_eq!(seen.get().len(), FIRST_BYTES);
        Ok(())
    })
}
