//! Tests of the pipeline: round trips at the chunk edges, short reads, errors, and bounds.

use super::*;
use std::io;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

const SIZES: [usize; 7] = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 7, 3 << 20];

#[tokio::test]
async fn source_round_trips() -> TestResult {
    for (large, max) in [(false, CHUNK), (true, LARGE_CHUNK)] {
        for size in SIZES.into_iter().chain([LARGE_CHUNK + 3]) {
            let body = data(size);
            let reader = io::Cursor::new(body.clone());
            let mut source = if large {
                Source::large(reader, size as u64, true)?
            } else {
                Source::new(reader, size as u64, true)?
            };
            let mut got = Vec::new();
            let mut longest = 0;
            while let Some(chunk) = source.next().await {
                let chunk = chunk?;
                assert!(!chunk.is_empty() && chunk.len() <= max);
                longest = longest.max(chunk.len());
                got.extend_from_slice(&chunk);
            }
            assert_eq!(got, body, "size {size}");
            assert_eq!(longest, size.min(max), "whole chunks, size {size}");
            assert_eq!(source.finish().await?, Some(md5(&body)), "size {size}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn source_without_hash_stops_at_size() -> TestResult {
    // The reader has more than announced (the file grew): only `size` bytes are taken.
    let body = data(3 * CHUNK);
    let mut source = Source::new(io::Cursor::new(body.clone()), 2 * CHUNK as u64 + 5, false)?;
    let mut got = Vec::new();
    while let Some(chunk) = source.next().await {
        got.extend_from_slice(&chunk?);
    }
    assert_eq!(got, body[..2 * CHUNK + 5]);
    assert_eq!(source.finish().await?, None);
    Ok(())
}

#[tokio::test]
async fn a_short_read_is_reported() -> TestResult {
    // The file shrank: 100 bytes announced, 60 there.
    let mut source = Source::new(io::Cursor::new(data(60)), 100, true)?;
    let mut got = 0;
    while let Some(chunk) = source.next().await {
        got += chunk?.len();
    }
    assert_eq!(got, 60);
    let e = source.finish().await.err().ok_or("no error")?;
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    Ok(())
}

/// A reader that fails after `ok` bytes.
struct Failing {
    ok: usize,
}

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ok == 0 {
            return Err(io::Error::other("disk on fire"));
        }
        let n = buf.len().min(self.ok);
        buf[..n].fill(7);
        self.ok -= n;
        Ok(n)
    }
}

#[tokio::test]
async fn a_read_error_comes_in_order() -> TestResult {
    let mut source = Source::new(Failing { ok: CHUNK + 10 }, 4 * CHUNK as u64, true)?;
    let mut got = 0;
    let mut error = None;
    while let Some(chunk) = source.next().await {
        match chunk {
            Ok(c) => got += c.len(),
            Err(e) => error = Some(e),
        }
    }
    // The first full chunk, then an error (the partial second chunk is not passed on).
    assert_eq!(got, CHUNK);
    assert_eq!(error.ok_or("no error")?.to_string(), "disk on fire");
    assert!(source.finish().await.is_err());
    Ok(())
}

/// A lean source (web downloads) holds two buffers whatever the consumer does, also while it
/// keeps every chunk it was given until the next one comes (as hyper does while it writes one).
#[tokio::test]
async fn a_lean_source_holds_two_buffers() -> TestResult {
    let size = 40 * CHUNK + 7;
    let body = data(size);
    let mut source = Source::lean(io::Cursor::new(body.clone()), size as u64)?;
    let mut seen = std::collections::HashSet::new();
    let mut got = Vec::with_capacity(size);
    let mut held = None;
    while let Some(chunk) = source.next().await {
        let chunk = chunk?;
        seen.insert(chunk.as_ptr() as usize);
        got.extend_from_slice(&chunk);
        held = Some(chunk);
        tokio::task::yield_now().await;
    }
    drop(held);
    assert!(got == body, "the bytes differ");
    assert!(seen.len() <= 2, "{} buffers", seen.len());
    assert_eq!(source.buffers_made(), seen.len());
    Ok(())
}

/// Counts the buffers a source allocates while the consumer is slow.
#[tokio::test]
async fn source_buffers_are_bounded() -> TestResult {
    let size = 40 * CHUNK;
    let mut source = Source::new(io::Cursor::new(data(size)), size as u64, false)?;
    let mut seen = std::collections::HashSet::new();
    while let Some(chunk) = source.next().await {
        let chunk = chunk?;
        seen.insert(chunk.as_ptr() as usize);
        // Let the reader run ahead as far as it can.
        tokio::task::yield_now().await;
    }
    assert!(seen.len() <= MAX_BUFFERS, "{} buffers", seen.len());
    assert_eq!(source.buffers_made(), seen.len());
    source.finish().await?;
    Ok(())
}

async fn sink_all<T: Send + 'static, E: Send + 'static>(
    sink: &mut Sink<T, E>,
    body: &[u8],
) -> usize {
    let mut buffers = std::collections::HashSet::new();
    for piece in body.chunks(sink.chunk()) {
        let mut buf = sink.buffer().await;
        buffers.insert(buf.as_ptr() as usize);
        buf[..piece.len()].copy_from_slice(piece);
        buf.truncate(piece.len());
        sink.push(buf);
    }
    buffers.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_round_trips() -> TestResult {
    for (large, len) in [(false, CHUNK), (true, LARGE_CHUNK)] {
        for size in SIZES {
            let body = data(size);
            let mut sink = Sink::new(Vec::new(), true, |out: &mut Vec<u8>, b: &[u8]| {
                out.extend_from_slice(b);
                Ok::<_, io::Error>(())
            })?;
            if large {
                sink = sink.large();
            }
            let mut probe = sink.buffer().await;
            assert_eq!(probe.len(), len);
            probe.clear();
            sink.push(probe);
            let buffers = sink_all(&mut sink, &body).await;
            assert!(buffers <= MAX_BUFFERS, "{buffers} buffers");
            let (out, id) = sink.finish().await.map_err(|e| e.to_string())?;
            assert_eq!(out, body, "size {size}");
            assert_eq!(id, Some(md5(&body)));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_buffers_are_bounded_with_a_slow_writer() -> TestResult {
    let mut sink = Sink::new(0usize, false, |n: &mut usize, b: &[u8]| {
        std::thread::sleep(std::time::Duration::from_millis(2));
        *n += b.len();
        Ok::<_, io::Error>(())
    })?;
    let body = data(30 * CHUNK);
    let buffers = sink_all(&mut sink, &body).await;
    assert!(buffers <= MAX_BUFFERS, "{buffers} buffers");
    assert_eq!(sink.buffers_made(), buffers);
    let (n, id) = sink.finish().await.map_err(|e| e.to_string())?;
    assert_eq!((n, id), (body.len(), None));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hash_lane_shares_buffers_with_a_slow_writer() -> TestResult {
    // The hash lane runs ahead of the writer; a buffer must only come back once both lanes
    // are done with it (else the writer would see bytes of a later chunk).
    let mut sink = Sink::new(Vec::new(), true, |out: &mut Vec<u8>, b: &[u8]| {
        std::thread::sleep(std::time::Duration::from_millis(1));
        out.extend_from_slice(b);
        Ok::<_, io::Error>(())
    })?;
    let body = data(40 * CHUNK + 5);
    let buffers = sink_all(&mut sink, &body).await;
    assert!(buffers <= MAX_BUFFERS, "{buffers} buffers");
    assert_eq!(sink.buffers_made(), buffers);
    let (out, id) = sink.finish().await.map_err(|e| e.to_string())?;
    assert!(out == body, "the written bytes differ");
    assert_eq!(id, Some(md5(&body)));
    Ok(())
}

#[tokio::test]
async fn a_write_error_lets_the_producer_drain() -> TestResult {
    let mut sink = Sink::new(0usize, true, |n: &mut usize, b: &[u8]| {
        if *n >= 2 * CHUNK {
            return Err(io::Error::other("disk full"));
        }
        *n += b.len();
        Ok(())
    })?;
    // Far more than the writer accepts: every push must still be taken, with the same few
    // buffers (a sink that stopped recycling would leave `buffer` waiting forever).
    let body = data(20 * CHUNK);
    let drained = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut buffers = sink_all(&mut sink, &body).await;
        // Until the writer's failure shows, then as many again.
        while !sink.failed() {
            buffers = buffers.max(sink_all(&mut sink, &body[..CHUNK]).await);
        }
        buffers.max(sink_all(&mut sink, &body).await)
    })
    .await?;
    assert!(drained <= MAX_BUFFERS, "{drained} buffers");
    assert!(sink.buffers_made() <= MAX_BUFFERS);
    match sink.finish().await {
        Err(SinkError::Write(e)) => assert_eq!(e.to_string(), "disk full"),
        other => return Err(format!("{other:?}").into()),
    }
    Ok(())
}

#[tokio::test]
async fn blocking_runs_jobs() -> TestResult {
    assert_eq!(blocking(|| 6 * 7).await?, 42);
    assert!(pool_size() >= 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_transfers_share_the_pool() -> TestResult {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    // More transfers than permits: each still completes, since no job waits for its peer, and
    // no more writes than permits ever run at once.
    static ACTIVE: AtomicUsize = AtomicUsize::new(0);
    static MOST: AtomicUsize = AtomicUsize::new(0);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..(pool_size() * 3) {
        tasks.spawn(async move {
            let body = data(2 * CHUNK + i);
            let mut source = Source::new(io::Cursor::new(body.clone()), body.len() as u64, true)?;
            let mut sink = Sink::new(Vec::new(), true, |o: &mut Vec<u8>, b: &[u8]| {
                let now = ACTIVE.fetch_add(1, SeqCst) + 1;
                MOST.fetch_max(now, SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(1));
                o.extend_from_slice(b);
                ACTIVE.fetch_sub(1, SeqCst);
                Ok::<_, io::Error>(())
            })?;
            while let Some(chunk) = source.next().await {
                let chunk = chunk?;
                let mut buf = sink.buffer().await;
                buf.truncate(chunk.len());
                buf.copy_from_slice(&chunk);
                sink.push(buf);
            }
            let sent = source.finish().await?;
            let (out, got) = sink
                .finish()
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            assert_eq!(out, body);
            assert_eq!(sent, got);
            Ok::<_, io::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let most = MOST.load(SeqCst);
    assert!(most >= 1 && most <= pool_size(), "{most} writes at once");
    Ok(())
}

/// A resumable sink whose writer is slow (so the hash lane runs ahead) and records how many
/// bytes it holds, for the checkpoint tests: returns the sink and the saved states, each with
/// the bytes written when it was saved.
#[allow(clippy::type_complexity)]
fn resuming_sink(
    prefix: &[u8],
    every: u64,
) -> io::Result<(
    Sink<Arc<Mutex<Vec<u8>>>, io::Error>,
    Arc<Mutex<Vec<u8>>>,
    Arc<Mutex<Vec<(crate::md5_state::ResumableMd5, usize)>>>,
)> {
    let out = Arc::new(Mutex::new(prefix.to_vec()));
    let saved = Arc::new(Mutex::new(Vec::new()));
    let mut from = crate::md5_state::ResumableMd5::new();
    from.update(prefix);
    let (seen, log) = (Arc::clone(&out), Arc::clone(&saved));
    let sink = Sink::resuming(
        Arc::clone(&out),
        from,
        |o: &mut Arc<Mutex<Vec<u8>>>, b: &[u8]| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            super::lock(o).extend_from_slice(b);
            Ok(())
        },
        every,
        move |state| {
            let written = super::lock(&seen).len();
            super::lock(&log).push((state.clone(), written));
        },
    )?;
    Ok((sink, out, saved))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resuming_sink_saves_states_of_written_bytes_only() -> TestResult {
    let body = data(20 * CHUNK + 77);
    let (prefix, rest) = body.split_at(3 * CHUNK + 5);
    let every = (2 * CHUNK + 1000) as u64;
    let (mut sink, out, saved) = resuming_sink(prefix, every)?;
    sink_all(&mut sink, rest).await;
    let (_, hash) = sink.finish_hash().await.map_err(|e| e.to_string())?;
    let hash = hash.ok_or("no hash")?;
    assert_eq!(hash.len(), body.len() as u64);
    assert_eq!(hash.finalize(), md5(&body));
    assert!(*super::lock(&out) == body, "the written bytes differ");
    let saved = super::lock(&saved).clone();
    // States past multiples of `every` after the prefix (a state waiting for the writer is
    // replaced by a later one, so the slow writer may skip some), none of it beyond what was
    // written when it was saved, each the MD5 state of the body's first bytes, the last one
    // past the last multiple.
    let at_last = saved.last().map(|(s, _)| s.len() / every);
    assert_eq!(at_last, Some(body.len() as u64 / every), "{saved:?}");
    let mut last = prefix.len() as u64;
    for (state, written) in saved {
        let len = state.len();
        assert!(
            len > last && len <= written as u64,
            "{len} after {last}, {written} written"
        );
        assert!(len / every > last / every, "one state per multiple");
        let cut = usize::try_from(len)?;
        assert_eq!(state.finalize(), md5(&body[..cut]));
        last = len;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resuming_sink_dropped_unfinished_saves_where_it_got_to() -> TestResult {
    let body = data(6 * CHUNK + 3);
    let (mut sink, out, saved) = resuming_sink(&body[..100], 1 << 40)?;
    sink_all(&mut sink, &body[100..]).await;
    drop(sink);
    // The jobs finish the queued chunks, then the last one out saves the state.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while super::lock(&saved).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let saved = super::lock(&saved).clone();
    assert_eq!(saved.len(), 1, "one state, on drop");
    let (state, written) = saved[0].clone();
    assert_eq!((state.len(), written), (body.len() as u64, body.len()));
    assert!(*super::lock(&out) == body);
    assert_eq!(state.finalize(), md5(&body));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_run_on_two_buffers_when_the_read_ahead_budget_is_spent() -> TestResult {
    // Spend what is left of the process-wide budget (other tests may hold some of it).
    let mut taken = 0;
    while take_extra(CHUNK) {
        taken += 1;
    }
    let result = async {
        let body = data(12 * CHUNK + 9);
        let mut sink = Sink::new(Vec::new(), true, |out: &mut Vec<u8>, b: &[u8]| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            out.extend_from_slice(b);
            Ok::<_, io::Error>(())
        })?;
        let sunk = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            sink_all(&mut sink, &body).await;
            sink.finish().await.map_err(|e| e.to_string())
        })
        .await
        .map_err(|_| "the sink stalled")??;
        assert!(sunk.0 == body, "the written bytes differ");
        assert_eq!(sunk.1, Some(md5(&body)));
        let mut source = Source::new(io::Cursor::new(body.clone()), body.len() as u64, true)?;
        let mut got = Vec::new();
        while let Some(chunk) = source.next().await {
            got.extend_from_slice(&chunk?);
        }
        assert!(got == body);
        assert_eq!(source.finish().await?, Some(md5(&body)));
        TestResult::Ok(())
    }
    .await;
    give_back_extra(taken * CHUNK);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_chunks_go_to_a_sink_only_when_the_budget_pays_for_them() -> TestResult {
    // A budget of its own (the process's is shared with the tests running beside this one):
    // one sink's larger base buffers, and half a large chunk more.
    let base = BASE_BUFFERS * (LARGE_CHUNK - CHUNK);
    let budget: &'static Budget = Box::leak(Box::new(Budget::new(base + LARGE_CHUNK / 2)));
    let writer = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend_from_slice(b);
        Ok::<_, io::Error>(())
    };
    let sink = || Sink::new(Vec::new(), true, writer).map(|s| s.with_budget(budget));
    // A body under LARGE_UPLOAD never asks.
    assert_eq!(sink()?.large_within_budget(LARGE_UPLOAD - 1).chunk(), CHUNK);
    assert_eq!(budget.used(), 0);
    let first = sink()?.large_within_budget(LARGE_UPLOAD);
    assert_eq!(first.chunk(), LARGE_CHUNK);
    assert_eq!(budget.used(), base);
    // What is left cannot pay for a second one's: it keeps the usual chunks.
    let second = sink()?.large_within_budget(LARGE_UPLOAD);
    assert_eq!(second.chunk(), CHUNK);
    assert_eq!(budget.used(), base);
    // Both move their bytes whole with the right MD5, within their buffers: the first has
    // no budget left for read-ahead, so it runs on its two.
    let body = data(5 * LARGE_CHUNK + 3);
    for (mut sink, most) in [(first, BASE_BUFFERS), (second, MAX_BUFFERS)] {
        let made = sink_all(&mut sink, &body).await;
        assert!(made <= most, "{made} buffers, at most {most}");
        let (out, id) = sink.finish().await.map_err(|e| e.to_string())?;
        assert!(out == body, "the written bytes differ");
        assert_eq!(id, Some(md5(&body)));
    }
    // Everything taken is given back once the sinks' last jobs are gone; then a new one can
    // have large chunks again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while budget.used() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} bytes never given back",
            budget.used()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(sink()?.large_within_budget(u64::MAX).chunk(), LARGE_CHUNK);
    Ok(())
}
