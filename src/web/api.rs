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
use crate::metrics::{HeldBytes, Metrics, SendingListing};
use crate::name::FileName;
use crate::security::users::Scope;
use crate::store::{self, StoreError, Target, Upload};
use crate::transfer::{self, CHUNK, SMALL, Sink, SinkError, Source};
use std::net::SocketAddr;

mod download;
mod upload;

use download::{download, value};
use upload::upload;

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
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::map_response(page::security_headers))
        .with_state(gw)
}

/// Error text past which an error response's body is not kept (axum's rejections are a line).
const ERROR_TEXT_BYTES: usize = 4 * 1024;

/// Every error is JSON, `{"error": "..."}` (WEB.md): those of our handlers already are; axum's
/// own (a body that is not the JSON asked for, a path that is not UTF-8, no such route, a method
/// a route does not take) come as plain text or empty, and are wrapped here with their status.
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, ERROR_TEXT_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let text = if text.is_empty() {
        status.canonical_reason().unwrap_or("Error").to_owned()
    } else {
        text
    };
    let mut res = Refusal(status, text).into_response();
    // What else the response said (`Allow` on a 405, `WWW-Authenticate`...) stays.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            res.headers_mut().append(name.clone(), value.clone());
        }
    }
    res
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
struct FileJson<'a> {
    id: &'a str,
    name: &'a str,
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
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (header::HeaderName::from_static("barge-pending"), pending),
    ];
    let body = listing_body(listing, access.scope, &gw.config.metrics);
    Ok((headers, body).into_response())
}

/// JSON text of a listing made before it is handed to hyper, as on the TCP side
/// (`session::listing`): large enough for big writes, small enough to be a rounding error.
pub(super) const LIST_PAGE_BYTES: usize = 32 * 1024;

/// The JSON array of the files `scope` sees in `listing`, in name order, made a page at a time
/// as hyper takes them: what a listing holds, however slowly it is read and however many files
/// there are, is a snapshot of the index (which shares its chunks) and a page or two of text.
/// A reader that stops reading meets the connection's stall timeout (`conn`).
///
/// Counted in `metrics` as the TCP `LIST` is: a listing being sent while its cursor lives, and
/// each page's bytes from when it is made until hyper has written and dropped it.
pub(super) fn listing_body(listing: store::Listing, scope: Scope, metrics: &Arc<Metrics>) -> Body {
    let cursor = ListCursor {
        listing,
        scope,
        after: None,
        written: 0,
        _sending: metrics.listing(),
        metrics: Arc::clone(metrics),
    };
    let pages = futures_util::stream::unfold(Some(cursor), |cursor| async move {
        let mut cursor = cursor?;
        let page = |text: Vec<u8>, metrics: &Metrics| {
            let held = metrics.listing_page(text.len());
            Bytes::from_owner(CountedPage { text, _held: held })
        };
        match cursor.page() {
            Ok((text, true)) => Some((Ok(page(text, &cursor.metrics)), None)),
            Ok((text, false)) => {
                let page = page(text, &cursor.metrics);
                Some((Ok(page), Some(cursor)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Body::from_stream(pages)
}

/// A page of listing text, counted in the metrics until hyper drops it.
struct CountedPage {
    text: Vec<u8>,
    _held: HeldBytes,
}

impl AsRef<[u8]> for CountedPage {
    fn as_ref(&self) -> &[u8] {
        &self.text
    }
}

/// Where a listing being sent is.
struct ListCursor {
    listing: store::Listing,
    scope: Scope,
    /// Counts this listing as being sent (`barge_listings_sending`) while it lives.
    _sending: SendingListing,
    metrics: Arc<Metrics>,
    /// The last name looked at, once a page is out.
    after: Option<FileName>,
    /// Entries written so far.
    written: usize,
}

impl ListCursor {
    /// The next page of the JSON array, and whether it is the last.
    fn page(&mut self) -> Result<(Vec<u8>, bool), serde_json::Error> {
        let mut page = Vec::with_capacity(LIST_PAGE_BYTES + 1024);
        let after = self.after.take();
        if after.is_none() {
            page.push(b'[');
        }
        let folder = self.scope.folder_name();
        for (name, id, size) in self.listing.under_after(folder, after.as_ref()) {
            let Some(seen) = self.scope.to_seen(name) else {
                continue;
            };
            if self.written > 0 {
                page.push(b',');
            }
            self.written += 1;
            let entry = FileJson {
                id: &id.to_hex(),
                name: seen.as_str(),
                size,
            };
            serde_json::to_writer(&mut page, &entry)?;
            if page.len() >= LIST_PAGE_BYTES {
                self.after = Some(name.clone());
                return Ok((page, false));
            }
        }
        page.push(b']');
        Ok((page, true))
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

/// The access of a request that adds a file (an upload, a mismatch report): one that may
/// change things (the CSRF token with a cookie) and may upload.
async fn uploader(gw: &Gateway, headers: &HeaderMap, ip: std::net::IpAddr) -> Answer<Access> {
    let access = gw.writer(headers, ip).await?;
    if !access.perms.may_put() {
        return refuse(
            StatusCode::FORBIDDEN,
            "Not allowed: this access may not upload",
        );
    }
    Ok(access)
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
    let access = uploader(&gw, &headers, peer.ip()).await?;
    let name = real_name(&access, &args.name)?;
    gw.config.metrics.md5_mismatch();
    Ok(super::audit::Noted::file(&name).on(StatusCode::NO_CONTENT.into_response()))
}
