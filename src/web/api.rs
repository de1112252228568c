//! The gateway's routes: the page, the listing, and download, upload, rename and delete of one
//! file, each answered with the HTTP status that matches the TCP protocol's code for the same
//! outcome (`404`, `409`, `413`, `507`, `403`...), and a JSON body `{"error": "..."}` that says
//! why, in the same words.
//!
//! Names travel in the URL path (`/files/<name>`, percent-encoded); a text that reads as an MD5
//! id means that id, as on the TCP side ("ids win").

use std::io::{Read as _, Seek as _, SeekFrom};
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::auth::Who;
use super::{Access, Gateway, page};
use crate::id::FileId;
use crate::name::FileName;
use crate::store::{self, StoreError, Target, Upload};
use crate::transfer::{self, CHUNK, SMALL, Sink, SinkError, Source};
use std::net::SocketAddr;

pub(super) fn router(gw: Arc<Gateway>, guard: super::guard::Guard) -> axum::Router {
    axum::Router::new()
        .route("/", get(page::index))
        .route("/assets/{file}", get(page::asset))
        .route("/api/me", get(me))
        .route("/api/login", post(super::auth::login))
        .route("/api/logout", post(super::auth::logout))
        .route("/login", get(super::auth::login_link))
        .route("/api/files", get(list))
        .route("/api/rename", post(rename))
        .route("/api/mismatch", post(mismatch))
        .route("/files/{*name}", get(download).put(upload).delete(delete))
        .layer(axum::middleware::from_fn(move |req, next| {
            super::guard::check(guard, req, next)
        }))
        // Outside the guard, so that its refusals (cross-site, wrong host) are audited too.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&gw),
            super::audit::request,
        ))
        .layer(axum::middleware::map_response(page::security_headers))
        .with_state(gw)
}

/// A refusal: a status and the words for it.
pub(super) struct Refusal(pub(super) StatusCode, pub(super) String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Error {
            error: String,
        }
        (self.0, Json(Error { error: self.1 })).into_response()
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        if e.is_internal() {
            tracing::error!("web: {e}");
        }
        // The TCP protocol's codes are HTTP's where they overlap, so one mapping serves both.
        let reply = crate::server::reply_for(&e);
        let status =
            StatusCode::from_u16(reply.code.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self(status, reply.text)
    }
}

type Answer<T> = Result<T, Refusal>;

/// A store refusal in the words `access` may see: a confined access sees names relative to its
/// folder and nothing of what lies outside it (the same rewriting as on the TCP side).
fn refusal(access: &Access, e: StoreError) -> Refusal {
    if access.scope.folder_name().is_none() {
        return e.into();
    }
    if e.is_internal() {
        tracing::error!("web: {e}");
    }
    let reply = crate::server::seen_reply(&access.scope, &e);
    let status =
        StatusCode::from_u16(reply.code.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Refusal(status, reply.text)
}

fn refuse<T>(status: StatusCode, text: impl Into<String>) -> Answer<T> {
    Err(Refusal(status, text.into()))
}

/// The real name behind a name `access` sees, or a refusal that says why the name is not valid.
fn real_name(access: &Access, seen: &str) -> Answer<FileName> {
    let name = FileName::parse(seen)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("Invalid file name: {e}")))?;
    access
        .scope
        .to_real(&name)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("Invalid file name: {e}")))
}

/// Which file a path segment means: an id if it reads as one, a name if it is one (ids win,
/// as on the TCP side), confined to `access`'s scope.
fn target(access: &Access, text: &str) -> Answer<Target> {
    let id = FileId::parse(text).ok();
    let name = FileName::parse(text)
        .ok()
        .and_then(|n| access.scope.to_real(&n).ok());
    if id.is_none() && name.is_none() {
        return real_name(access, text).map(Target::name);
    }
    Ok(Target { id, name })
}

/// [`target`], with an id resolved among the files inside a confined access's folder only: an
/// id of a file outside it is unknown (`404`), never "not allowed", so existence is not revealed.
async fn resolve(gw: &Gateway, access: &Access, text: &str) -> Answer<Target> {
    let target = target(access, text)?;
    let (Some(id), Some(_)) = (target.id, access.scope.folder_name()) else {
        return Ok(target);
    };
    let listing = gw.store.list().await?;
    let mut inside = listing
        .under(access.scope.folder_name())
        .filter(|(name, file, _)| *file == id && access.scope.contains(name));
    match (inside.next(), inside.next()) {
        (Some((only, ..)), None) => Ok(Target::name(only.clone())),
        (Some(_), Some(_)) => Err(StoreError::Ambiguous {
            id,
            count: 2 + inside.count(),
        }
        .into()),
        (None, _) => match target.name {
            Some(name) => Ok(Target::name(name)),
            None => refuse(StatusCode::NOT_FOUND, format!("No such file: {text}")),
        },
    }
}

/// A file as the page sees it: the shape of `barge ls --json`'s entries.
#[derive(Serialize)]
struct FileJson {
    id: String,
    name: String,
    size: u64,
}

#[derive(Serialize)]
struct MeJson {
    /// `None`: logged out.
    principal: Option<String>,
    list: bool,
    get: bool,
    put: bool,
    modify: bool,
    /// Sent back in `X-Barge-CSRF` by a page logged in with a cookie.
    csrf: Option<String>,
    /// Whether this server takes logins on this connection (TLS, or loopback).
    logins: bool,
    fingerprint: Option<String>,
    max_file_size: u64,
}

async fn me(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Json<MeJson> {
    let (access, csrf) = match gw.who(&headers, peer.ip()).await {
        Who::Cookie(access, csrf) => (Some(access), Some(csrf)),
        Who::Anonymous(access) | Who::Token(access) => (Some(access), None),
        Who::Nobody | Who::Refused => (None, None),
    };
    let read_only = gw.store.config().read_only;
    let perms = access.as_ref().map(|a| a.perms);
    let may = |f: fn(&crate::security::users::Permissions) -> bool| perms.as_ref().is_some_and(f);
    Json(MeJson {
        principal: access.map(|a| a.principal),
        list: may(crate::security::users::Permissions::may_list),
        get: may(crate::security::users::Permissions::may_get),
        put: may(crate::security::users::Permissions::may_put) && !read_only,
        modify: may(crate::security::users::Permissions::may_modify) && !read_only,
        csrf,
        logins: gw.policy.logins_allowed(),
        fingerprint: gw.fingerprint.clone(),
        max_file_size: gw.store.config().max_file_size,
    })
}

async fn list(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Answer<Response> {
    let access = gw.reader(&headers, peer.ip()).await?;
    if !access.perms.may_list() {
        return refuse(
            StatusCode::FORBIDDEN,
            "Not allowed: this access may not list",
        );
    }
    let listing = gw.store.list().await?;
    // Built straight from the snapshot (no copy of the listing first); the JSON answer is
    // whole, bounded by the server's file limit like any listing.
    let files = listing
        .under(access.scope.folder_name())
        .filter_map(|(name, id, size)| {
            let seen = access.scope.to_seen(name)?;
            Some(FileJson {
                id: id.to_hex(),
                name: seen.as_str().to_owned(),
                size,
            })
        })
        .collect();
    let files: Vec<FileJson> = files;
    // Files still being hashed cannot be told apart by folder: a confined access is not told
    // about them (as on the TCP side).
    let pending = if access.scope.folder_name().is_some() {
        0
    } else {
        listing.pending
    };
    let pending = value(&pending.to_string());
    let headers = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::HeaderName::from_static("barge-pending"), pending),
    ];
    Ok((headers, Json(files)).into_response())
}

/// `GET /files/<name or id>`: the file, whole or a single byte range (`Range`, `If-Range`),
/// with its MD5 id as the `ETag` (so `If-None-Match` answers `304`).
async fn download(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(text): Path<String>,
    headers: HeaderMap,
) -> Answer<Response> {
    let access = gw.reader(&headers, peer.ip()).await?;
    if !access.perms.may_get() {
        return refuse(
            StatusCode::FORBIDDEN,
            "Not allowed: this access may not download",
        );
    }
    let target = resolve(&gw, &access, &text).await?;
    let dl = gw.store.download(&target).await.map_err(|e| match e {
        // An id outside the scope must look like an unknown id.
        StoreError::NotFound(_) => Refusal(StatusCode::NOT_FOUND, format!("No such file: {text}")),
        other => refusal(&access, other),
    })?;
    if !access.scope.contains(&dl.name) {
        return refuse(StatusCode::NOT_FOUND, format!("No such file: {text}"));
    }
    let etag = format!("\"{}\"", dl.id.to_hex());
    let leaf = access
        .scope
        .to_seen(&dl.name)
        .map(|n| n.split_parent().1.to_owned())
        .unwrap_or_default();
    let mut out = HeaderMap::new();
    out.insert(header::ETAG, value(&etag));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    out.insert(header::CONTENT_DISPOSITION, value(&disposition(&leaf)));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));

    if header_is(&headers, header::IF_NONE_MATCH, |v| etag_matches(v, &etag)) {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    // `If-Range` with another validator: the file changed, so the whole file is sent.
    let range_applies = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let range = match headers.get(header::RANGE).filter(|_| range_applies) {
        None => None,
        Some(v) => match parse_range(v, dl.size) {
            Ok(range) => range,
            Err(()) => {
                out.insert(
                    header::CONTENT_RANGE,
                    value(&format!("bytes */{}", dl.size)),
                );
                return Ok((StatusCode::RANGE_NOT_SATISFIABLE, out).into_response());
            }
        },
    };
    let (status, start, len) = match range {
        Some((start, end)) => {
            out.insert(
                header::CONTENT_RANGE,
                value(&format!("bytes {start}-{end}/{}", dl.size)),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        None => (StatusCode::OK, 0, dl.size),
    };
    out.insert(header::CONTENT_LENGTH, value(&len.to_string()));
    let body = body_of(dl.body, start, len).await.map_err(|e| {
        Refusal::from(StoreError::Io {
            action: "reading",
            name: Some(dl.name.clone()),
            source: e,
        })
    })?;
    Ok((status, out, body).into_response())
}

/// A header value from text we made (always visible ASCII).
fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn header_is(headers: &HeaderMap, name: header::HeaderName, f: impl Fn(&str) -> bool) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(f)
}

/// Whether an `If-None-Match` list holds `etag` (weak comparison, `*` matches).
fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// A `Content-Disposition` that makes browsers save the file under its own name: an ASCII
/// fallback and the exact UTF-8 name (RFC 6266, RFC 8187).
fn disposition(leaf: &str) -> String {
    let fallback: String = leaf
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // RFC 8187's attr-char: letters, digits and `!#$&+-.^_`|~` stay as they are.
    const ATTR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'#')
        .remove(b'$')
        .remove(b'&')
        .remove(b'+')
        .remove(b'-')
        .remove(b'.')
        .remove(b'^')
        .remove(b'_')
        .remove(b'`')
        .remove(b'|')
        .remove(b'~');
    let exact = percent_encoding::utf8_percent_encode(leaf, ATTR);
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}")
}

/// One satisfiable byte range `(first, last)` of a `size`-byte file, `None` for a header we
/// answer with the whole file (several ranges, or one we do not understand), `Err` for a range
/// outside the file (`416`).
fn parse_range(v: &HeaderValue, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Ok(text) = v.to_str() else {
        return Ok(None);
    };
    let Ok(parsed) = http_range_header::parse_range_header(text) else {
        return Ok(None);
    };
    match parsed.validate(size) {
        Ok(ranges) if ranges.len() == 1 => Ok(Some((*ranges[0].start(), *ranges[0].end()))),
        Ok(_) => Ok(None),
        Err(_) => Err(()),
    }
}

/// The `len` bytes from `start` of a download's body, as a streamed response body.
async fn body_of(body: store::Body, start: u64, len: u64) -> std::io::Result<Body> {
    let small = usize::try_from(start).ok().zip(usize::try_from(len).ok());
    match body {
        store::Body::Bytes(bytes) => {
            let (start, len) = small.ok_or_else(|| std::io::Error::other("range too large"))?;
            let end = start.saturating_add(len).min(bytes.len());
            Ok(Body::from(Bytes::from(bytes).slice(start.min(end)..end)))
        }
        store::Body::File(mut file) => {
            if start > 0 {
                file = transfer::blocking(move || file.seek(SeekFrom::Start(start)).map(|_| file))
                    .await??;
            }
            Ok(stream(Source::new(file.take(len), len, false)?))
        }
        store::Body::Reader(mut reader) => {
            use tokio::io::AsyncReadExt as _;
            tokio::io::copy(&mut (&mut reader).take(start), &mut tokio::io::sink()).await?;
            Ok(Body::from_stream(
                tokio_util::io::ReaderStream::with_capacity(reader.take(len), CHUNK),
            ))
        }
    }
}

/// A response body fed by `source`, one chunk at a time.
fn stream(source: Source) -> Body {
    let chunks = futures_util::stream::unfold(source, |mut source| async move {
        let chunk = source.next().await?;
        Some((chunk.map(|c| Bytes::copy_from_slice(&c)), source))
    });
    Body::from_stream(chunks)
}

#[derive(Serialize)]
struct UploadedJson {
    id: String,
    name: String,
    size: u64,
}

/// `PUT /files/<name>`: a new file, streamed into the store. `Content-Length` is required (the
/// store checks the size against its limits and the free space before a byte is written); an
/// existing name is `409`, as on the TCP side. The answer carries the MD5 the server computed,
/// for the sender to compare with its own.
async fn upload(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(text): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer<Response> {
    let access = gw.writer(&headers, peer.ip()).await?;
    if !access.perms.may_put() {
        return refuse(
            StatusCode::FORBIDDEN,
            "Not allowed: this access may not upload",
        );
    }
    let name = real_name(&access, &text)?;
    // The exact length: `Content-Length`, or no body at all in HTTP/1.1 (a chunked body, or
    // an HTTP/2 body without a length, has none).
    let Some(size) = http_body::Body::size_hint(&body).exact() else {
        return refuse(
            StatusCode::LENGTH_REQUIRED,
            "An upload needs a Content-Length (the size is checked before the body is stored)",
        );
    };
    let upload = gw
        .store
        .begin_upload(name, size)
        .await
        .map_err(|e| refusal(&access, e))?;
    let name = upload.name().clone();
    let pace = Pace::new(gw.config.min_rate, gw.config.stall_timeout);
    let id = receive(upload, body, size, pace).await??;
    let noted = super::audit::Noted::file(&name).id(id);
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
struct Pace {
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

/// Moves a request body into `upload`, in chunks of [`CHUNK`] bytes through a [`Sink`]. The
/// outer error: the body broke off, stalled, was slower than `pace` allows, or was not the
/// announced size (the staged file is dropped, which removes it); the inner one: the store
/// refused or failed.
async fn receive(
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
        .map_err(|e| Refusal::from(io_error(e)))?;
    let mut buf = sink.buffer().await;
    buf.clear();
    let mut received = 0u64;
    while let Some(mut bytes) = next().await? {
        received += bytes.len() as u64;
        if received > size {
            return short();
        }
        while !bytes.is_empty() {
            let take = (CHUNK - buf.len()).min(bytes.len());
            buf.extend_from_slice(&bytes.split_to(take));
            if buf.len() == CHUNK {
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

fn io_error(e: std::io::Error) -> StoreError {
    StoreError::Io {
        action: "storing an upload",
        name: None,
        source: e,
    }
}

fn flatten(done: std::io::Result<Result<FileId, StoreError>>) -> Result<FileId, Refusal> {
    match done {
        Ok(result) => result.map_err(Refusal::from),
        Err(e) => Err(io_error(e).into()),
    }
}

#[derive(Deserialize)]
struct RenameJson {
    from: String,
    to: String,
}

#[derive(Serialize)]
struct NameJson {
    name: String,
}

/// `POST /api/rename` with `{"from": name or id, "to": new name}`.
async fn rename(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(args): Json<RenameJson>,
) -> Answer<Response> {
    let access = gw.writer(&headers, peer.ip()).await?;
    if !access.perms.may_modify() {
        return refuse(
            StatusCode::FORBIDDEN,
            "Not allowed: this access may not rename",
        );
    }
    let from = resolve(&gw, &access, &args.from).await?;
    let to = real_name(&access, &args.to)?;
    let old = gw
        .store
        .rename(&from, &to)
        .await
        .map_err(|e| refusal(&access, e))?;
    let noted = super::audit::Noted::file(&old).to(&to);
    let seen = access.scope.to_seen(&to).unwrap_or(to);
    Ok(noted.on(Json(NameJson {
        name: seen.as_str().to_owned(),
    })
    .into_response()))
}

/// `DELETE /files/<name or id>`.
async fn delete(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(text): Path<String>,
    headers: HeaderMap,
) -> Answer<Response> {
    let access = gw.writer(&headers, peer.ip()).await?;
    if !access.perms.may_modify() {
        return refuse(
            StatusCode::FORBIDDEN,
            "Not allowed: this access may not delete",
        );
    }
    let target = resolve(&gw, &access, &text).await?;
    let done = gw
        .store
        .delete(&target)
        .await
        .map_err(|e| refusal(&access, e))?;
    let noted = super::audit::Noted::file(&done);
    let seen = access.scope.to_seen(&done).unwrap_or(done);
    Ok(noted.on(Json(NameJson {
        name: seen.as_str().to_owned(),
    })
    .into_response()))
}

#[derive(Deserialize)]
struct MismatchJson {
    name: String,
}

/// `POST /api/mismatch` with `{"name"}`: the page's MD5 of a file it just uploaded differs from
/// the server's (it shows `Fail`). Counted in the metrics and the audit log; changes nothing
/// (the server cannot check the claim). Needs the upload permission, and the CSRF token with
/// a cookie, like an upload.
async fn mismatch(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(args): Json<MismatchJson>,
) -> Answer<Response> {
    let access = gw.writer(&headers, peer.ip()).await?;
    if !access.perms.may_put() {
        return refuse(
            StatusCode::FORBIDDEN,
            "Not allowed: this access may not upload",
        );
    }
    let name = real_name(&access, &args.name)?;
    gw.config.metrics.md5_mismatch();
    Ok(super::audit::Noted::file(&name).on(StatusCode::NO_CONTENT.into_response()))
}
