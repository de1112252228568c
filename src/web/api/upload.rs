//! Uploads through the gateway: `PUT /files/<name>`, streamed into the store with the
//! TCP protocol's checks and limits, paced by a minimum rate, answered with the server's MD5.

use super::*;

#[derive(Serialize)]
pub(super) struct UploadedJson {
    id: String,
    name: String,
    size: u64,
}

/// `PUT /files/<name>`: a new file, streamed into the store. `Content-Length` is required (the
/// store checks the size against its limits and the free space before a byte is written); an
/// existing name is `409`, as on the TCP side. The answer carries the MD5 the server computed,
/// for the sender to compare with its own.
pub(super) async fn upload(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(text): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer<Response> {
    let access = uploader(&gw, &headers, peer.ip()).await?;
    let name = real_name(&access, &text)?;
    // The exact length: `Content-Length`, or no body at all in HTTP/1.1 (a chunked body, or
    // an HTTP/2 body without a length, has none).
    let Some(size) = http_body::Body::size_hint(&body).exact() else {
        return refuse(
            StatusCode::LENGTH_REQUIRED,
            "An upload needs a Content-Length (the size is checked before the body is stored)",
        );
    };
    // Recorded as the TCP sessions record it: empty for anonymous.
    let by = if access.principal == "anonymous" {
        ""
    } else {
        access.principal.as_str()
    };
    let upload = gw
        .store
        .begin_upload_by(name, size, by)
        .await
        .map_err(|e| refusal(&access, e))?;
    let name = upload.name().clone();
    let pace = Pace::new(gw.config.min_rate, gw.config.stall_timeout);
    let id = receive(upload, body, size, pace).await??;
    let noted = crate::web::audit::Noted::file(&name).id(id);
    let seen = access.scope.to_seen(&name).unwrap_or(name);
    let answer = UploadedJson {
        id: id.to_hex(),
        name: seen.as_str().to_owned(),
        size,
    };
    Ok(noted.on((StatusCode::CREATED, Json(answer)).into_response()))
}

/// The least an upload body must move: `min_rate` bytes per second, judged over each `window`
/// (the stall timeout), as the TCP protocol's `--min-rate`. A body that sends a byte just often
/// enough to dodge a per-read timeout still cannot hold its slot, its name and the disk space
/// reserved for it.
pub(super) struct Pace {
    min_rate: u64,
    need: u64,
    window: std::time::Duration,
    window_end: tokio::time::Instant,
    moved: u64,
}

impl Pace {
    fn new(min_rate: u64, window: std::time::Duration) -> Self {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        Self {
            min_rate,
            need: min_rate.saturating_mul(window_ms) / 1000,
            window,
            window_end: tokio::time::Instant::now() + window,
            moved: 0,
        }
    }

    /// The next frame of `frames`, within the window; `Err` when a window ends with too few
    /// bytes (or none at all).
    async fn next(
        &mut self,
        frames: &mut (impl futures_util::Stream<Item = Result<Bytes, axum::Error>> + Unpin),
    ) -> Answer<Option<Bytes>> {
        loop {
            match tokio::time::timeout_at(self.window_end, frames.next()).await {
                Err(_) if self.moved == 0 => {
                    return refuse(
                        StatusCode::REQUEST_TIMEOUT,
                        "The upload stalled; nothing was kept",
                    );
                }
                Err(_) if self.moved < self.need => {
                    return refuse(
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "The upload was slower than the server's minimum of {} bytes per \
                             second; nothing was kept",
                            self.min_rate
                        ),
                    );
                }
                Err(_) => {
                    self.window_end += self.window;
                    self.moved = 0;
                }
                Ok(Some(Err(e))) => {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        format!("The upload broke off: {e}"),
                    );
                }
                Ok(Some(Ok(bytes))) => {
                    self.moved = self.moved.saturating_add(bytes.len() as u64);
                    return Ok(Some(bytes));
                }
                Ok(None) => return Ok(None),
            }
        }
    }
}

/// Moves a request body into `upload`, in chunks of [`Sink::chunk`] bytes through a [`Sink`]. The
/// outer error: the body broke off, stalled, was slower than `pace` allows, or was not the
/// announced size (the staged file is dropped, which removes it); the inner one: the store
/// refused or failed.
pub(super) async fn receive(
    mut upload: Upload,
    body: Body,
    size: u64,
    mut pace: Pace,
) -> Answer<Result<FileId, Refusal>> {
    let mut frames = body.into_data_stream();
    let mut next = async || pace.next(&mut frames).await;
    let short = || {
        refuse(
            StatusCode::BAD_REQUEST,
            "The body is not the announced size; nothing was kept",
        )
    };
    if size <= SMALL {
        let mut all = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        while let Some(bytes) = next().await? {
            if all.len() + bytes.len() > all.capacity() {
                return short();
            }
            all.extend_from_slice(&bytes);
        }
        if all.len() as u64 != size {
            return short();
        }
        let done = transfer::blocking(move || {
            upload.write(&all)?;
            upload.finish()
        })
        .await;
        return Ok(flatten(done));
    }
    let mut sink = Sink::new(upload, false, |u: &mut Upload, data: &[u8]| u.write(data))
        .map(|s| s.large_within_budget(size))
        .map_err(|e| Refusal::from(io_error(e)))?;
    let chunk = sink.chunk();
    let mut buf = sink.buffer().await;
    buf.clear();
    let mut received = 0u64;
    while let Some(mut bytes) = next().await? {
        received += bytes.len() as u64;
        if received > size {
            return short();
        }
        while !bytes.is_empty() {
            let take = (chunk - buf.len()).min(bytes.len());
            buf.extend_from_slice(&bytes.split_to(take));
            if buf.len() == chunk {
                sink.push(buf);
                buf = sink.buffer().await;
                buf.clear();
            }
        }
        if sink.failed() {
            break;
        }
    }
    if !sink.failed() && received != size {
        return short();
    }
    if !buf.is_empty() {
        sink.push(buf);
    }
    Ok(match sink.finish().await {
        Ok((upload, _)) => flatten(transfer::blocking(move || upload.finish()).await),
        Err(SinkError::Write(e)) => Err(e.into()),
        Err(SinkError::Worker) => {
            Err(io_error(std::io::Error::other("a transfer job failed")).into())
        }
    })
}

pub(super) fn io_error(e: std::io::Error) -> StoreError {
    StoreError::Io {
        action: "storing an upload",
        name: None,
        source: e,
    }
}

pub(super) fn flatten(
    done: std::io::Result<Result<FileId, StoreError>>,
) -> Result<FileId, Refusal> {
    match done {
        Ok(result) => result.map_err(Refusal::from),
        Err(e) => Err(io_error(e).into()),
    }
}
