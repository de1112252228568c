//! The gateway's audit lines: one per action, in the same format as the TCP server's
//! (`crate::server::audit`), logged inside a `web{peer user}` span.
//!
//! A middleware times each request that acts on the share (listing, download, upload,
//! rename, delete, login), and logs its line when the response is ready, with the outcome
//! from the HTTP status. The handlers add what only they know ([`Noted`]: the real name, the
//! new name, the id) to the response, and the user is recorded in the span where the
//! credential is checked ([`acting_for`]). Pages, assets and `/api/me` are not actions.
//! A download's line waits for its body ([`Sent`]): sent whole, it is `ok`; cut short (the
//! client went away, the connection was closed), it is `aborted` with the bytes actually sent.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

use super::Gateway;
use crate::id::FileId;
use crate::name::FileName;
use crate::server::audit::Action;

/// What a handler learnt about the file it acted on, carried on its response.
#[derive(Clone, Debug, Default)]
pub(super) struct Noted {
    name: Option<String>,
    to: Option<String>,
    id: Option<FileId>,
}

impl Noted {
    /// About the file with this (real) name.
    pub(super) fn file(name: &FileName) -> Self {
        Self {
            name: Some(name.as_str().to_owned()),
            ..Self::default()
        }
    }

    /// A rename's new name.
    pub(super) fn to(mut self, to: &FileName) -> Self {
        self.to = Some(to.as_str().to_owned());
        self
    }

    /// The file's id.
    pub(super) fn id(mut self, id: FileId) -> Self {
        self.id = Some(id);
        self
    }

    /// `response`, carrying this note.
    pub(super) fn on(self, mut response: Response) -> Response {
        response.extensions_mut().insert(self);
        response
    }
}

/// Records in the request's span who it acts for.
pub(super) fn acting_for(principal: &str) {
    tracing::Span::current().record("user", crate::name::escape(principal));
}

/// The action a request is, if it is one.
fn command(method: &Method, path: &str) -> Option<&'static str> {
    Some(match (method, path) {
        (&Method::GET | &Method::HEAD, "/api/files") => "list",
        (&Method::POST, "/api/login") | (&Method::GET, "/login") => "login",
        (&Method::POST, "/api/logout") => "logout",
        (&Method::POST, "/api/rename") => "rename",
        (&Method::POST, "/api/mismatch") => "mismatch",
        (m, p) if p.starts_with("/files/") => match *m {
            Method::GET | Method::HEAD => "download",
            Method::PUT => "upload",
            Method::DELETE => "delete",
            _ => return None,
        },
        _ => return None,
    })
}

/// The middleware: runs the request inside its span and logs its one audit line.
pub(super) async fn request(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let Some(command) = command(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let span = tracing::info_span!("web", peer = %peer, user = tracing::field::Empty);
    let method_is_get = req.method() == Method::GET;
    let mut action = Action::start(command);
    if let Some(text) = req.uri().path().strip_prefix("/files/") {
        action.name(percent_encoding::percent_decode_str(text).decode_utf8_lossy());
    }
    if command == "upload"
        && let Some(size) = content_length(req.headers())
    {
        action.bytes(size);
    }
    let response = next.run(req).instrument(span.clone()).await;
    if let Some(noted) = response.extensions().get::<Noted>() {
        if let Some(name) = &noted.name {
            action.name(name);
        }
        if let Some(to) = &noted.to {
            action.to(to);
        }
        if let Some(id) = noted.id {
            action.id(id);
        }
    }
    let status = response.status();
    let streamed = command == "download" && method_is_get && status.is_success();
    if command == "download" && status.is_success() {
        if let Some(size) = content_length(response.headers()) {
            action.bytes(size);
        }
        let etag = response
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| FileId::parse(v.trim_matches('"')).ok());
        if let Some(id) = etag {
            action.id(id);
        }
    }
    let refusal = (status.is_client_error() || status.is_server_error())
        .then(|| status.canonical_reason().unwrap_or("error"));
    action.status(status.as_u16(), refusal);
    if streamed && let Some(expected) = content_length(response.headers()) {
        let metrics = Arc::clone(&gw.config.metrics);
        return response.map(|body| {
            axum::body::Body::new(Sent {
                body,
                sent: 0,
                expected,
                action: Some(action),
                span,
                metrics,
            })
        });
    }
    let _in = span.enter();
    action.finish(&gw.config.metrics);
    response
}

/// A download's body, which logs the download's audit line once it is sent or dropped.
struct Sent {
    body: axum::body::Body,
    sent: u64,
    expected: u64,
    action: Option<Action>,
    span: tracing::Span,
    metrics: Arc<crate::metrics::Metrics>,
}

impl http_body::Body for Sent {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.sent = self.sent.saturating_add(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        let Some(mut action) = self.action.take() else {
            return;
        };
        if self.sent < self.expected {
            action
                .bytes(self.sent)
                .abort("cut short: the client went away or stopped reading");
        }
        let _in = self.span.enter();
        action.finish(&self.metrics);
    }
}

fn content_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
