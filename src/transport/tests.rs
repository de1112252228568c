//! Unit tests of the transport: framing, limits, timeouts, queueing.
use super::*;
use crate::protocol::Code;
use tokio::io::duplex;

#[tokio::test]
async fn lines_split_across_reads_and_crlf() -> Result<(), TransportError> {
    let (a, mut b) = duplex(64);
    let mut conn = Connection::new(a);
    let writer = tokio::spawn(async move {
        for piece in [&b"LIST_"[..], b"FILES\r", b"\nHELP\nBY", b"E\n"] {
            b.write_all(piece).await?;
            tokio::task::yield_now().await;
        }
        drop(b);
        Ok::<_, io::Error>(())
    });
    assert_eq!(conn.read_line(None).await?, Some(&b"LIST_FILES\r"[..]));
    assert_eq!(conn.read_line(None).await?, Some(&b"HELP"[..]));
    assert_eq!(conn.read_line(None).await?, Some(&b"BYE"[..]));
    assert_eq!(conn.read_line(None).await?, None);
    writer.await.map_err(io::Error::other)??;
    Ok(())
}

#[tokio::test]
async fn empty_line_and_close_mid_line() -> Result<(), TransportError> {
    let (a, mut b) = duplex(64);
    let mut conn = Connection::new(a);
    b.write_all(b"\nhalf").await?;
    drop(b);
    assert_eq!(conn.read_line(None).await?, Some(&b""[..]));
    assert!(matches!(
        conn.read_line(None).await,
        Err(TransportError::Closed)
    ));
    Ok(())
}

#[tokio::test]
async fn over_long_line_is_refused() -> Result<(), TransportError> {
    for len in [16usize, 17, 40] {
        let (a, mut b) = duplex(1024);
        let mut conn = Connection::with_line_limit(a, 16);
        let mut data = vec![b'x'; len];
        data.push(b'\n');
        b.write_all(&data).await?;
        assert!(
            matches!(
                conn.read_line(None).await,
                Err(TransportError::LineTooLong(16))
            ),
            "{len}"
        );
    }
    // Exactly at the limit (15 bytes + '\n') is fine.
    let (a, mut b) = duplex(1024);
    let mut conn = Connection::with_line_limit(a, 16);
    b.write_all(&[b'y'; 15]).await?;
    b.write_all(b"\n").await?;
    assert_eq!(conn.read_line(None).await?.map(<[u8]>::len), Some(15));
    Ok(())
}

#[tokio::test]
async fn cancelled_read_keeps_the_partial_line() -> Result<(), TransportError> {
    let (a, mut b) = duplex(64);
    let mut conn = Connection::new(a);
    b.write_all(b"LIST_").await?;
    // One poll only: the half line is taken in, then the read is dropped.
    let once = tokio::time::timeout(Duration::ZERO, conn.read_line(None)).await;
    assert!(once.is_err());
    b.write_all(b"FILES\n").await?;
    assert_eq!(conn.read_line(None).await?, Some(&b"LIST_FILES"[..]));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn silence_times_out() {
    let (a, _b) = duplex(64);
    let mut conn = Connection::new(a);
    let r = conn.read_line(Some(Duration::from_secs(5))).await;
    assert!(matches!(r, Err(TransportError::TimedOut(_))));
}

#[tokio::test]
async fn body_after_line_uses_buffered_bytes_first() -> Result<(), TransportError> {
    let (a, mut b) = duplex(1024);
    let mut conn = Connection::new(a);
    b.write_all(b"PUT x;5\nhelloLIST\n").await?;
    assert_eq!(conn.read_line(None).await?, Some(&b"PUT x;5"[..]));
    let mut buf = [0u8; 5];
    let mut got = 0;
    while got < 5 {
        got += conn.read_body(&mut buf[got..], None).await?;
    }
    assert_eq!(&buf, b"hello");
    assert_eq!(conn.read_line(None).await?, Some(&b"LIST"[..]));
    Ok(())
}

#[tokio::test]
async fn replies_are_queued_until_a_read_would_wait() -> Result<(), TransportError> {
    let (a, b) = duplex(1024);
    let mut conn = Connection::new(a);
    let mut peer = Connection::new(b);
    conn.queue_reply(&Reply::new(Code::GREETING, "barge/1 ready"));
    conn.queue_reply(&Reply::new(Code::BYE, "Bye"));
    // Nothing written yet; the read below flushes before it waits.
    let reader = tokio::spawn(async move {
        let first = peer.read_line(None).await?.map(<[u8]>::to_vec);
        let second = peer.read_line(None).await?.map(<[u8]>::to_vec);
        peer.queue_bytes(b"x\n");
        peer.flush(None).await?;
        Ok::<_, TransportError>((first, second))
    });
    assert_eq!(conn.read_line(None).await?, Some(&b"x"[..]));
    let (first, second) = reader.await.map_err(io::Error::other)??;
    assert_eq!(first.as_deref(), Some(&b"220 barge/1 ready"[..]));
    assert_eq!(second.as_deref(), Some(&b"221 Bye"[..]));
    Ok(())
}
