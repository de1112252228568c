//! One connection's dialogue (`PROTOCOL.md` sections 3 and 5).
//!
//! A session reads a line, decodes it into a [`Request`], runs it against the store and queues
//! the reply; every reply comes from the protocol's dialogue model ([`Reply`]'s builders). The
//! work is split by job: this file owns the read loop, prompts and refusals; [`commands`] runs
//! each command; [`batch`] group-commits small pipelined uploads; [`body`] streams bodies;
//! [`login`] logs in, pairs and checks permissions; [`confine`] maps names for confined users;
//! [`listing`] sends a listing in bounded pages.

mod ahead;
mod batch;
mod body;
mod commands;
pub(crate) mod confine;
mod listing;
mod login;

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio_util::sync::CancellationToken;

use super::audit::Action;
use super::{Peer, ServerConfig};
use crate::name::{FileName, escape};
use crate::protocol::{DecodeError, FileRef, Prompt, Reply, Request, UploadSpec, redact};
use crate::store::{Store, StoreError};
use crate::transport::{Connection, Stream, TransportError};

/// Whether the connection goes on after a command.
enum Flow {
    Continue,
    Close,
}

/// What waiting for a line produced.
enum Next {
    Line(Vec<u8>),
    /// The peer closed the connection, or it broke; nothing more can be said.
    Gone,
    /// The session ends with this reply (timeout, over-long line, shutdown).
    End(Reply),
}

struct Session<'a, S> {
    conn: Connection<S>,
    peer: Peer,
    store: Arc<Store>,
    config: &'a ServerConfig,
    shutdown: &'a CancellationToken,
    /// Set when a prompt's answer never came (timeout, shutdown, close): the session is over.
    ended: bool,
    /// Small pipelined uploads received whole, waiting for one group commit.
    batch: batch::Batch,
    /// Files opened ahead of the pipelined downloads that ask for them.
    ahead: ahead::Ahead,
    /// Who the session acts for.
    login: login::Login,
    /// The user database's generation when `login` was last checked.
    checked: u64,
    /// The name of a `USER` waiting for its `PASS`.
    pending_user: Option<String>,
    /// The command being run, for its audit line.
    action: Option<Action>,
}

/// Runs the dialogue of one connection until it ends. Never fails: every error is either
/// answered on the wire or ends this connection only.
pub(super) async fn serve<S>(
    stream: S,
    peer: Peer,
    store: Arc<Store>,
    config: &ServerConfig,
    shutdown: &CancellationToken,
) where
    S: Stream,
{
    let mut conn = Connection::new(stream);
    conn.set_write_timeout(Some(config.stall_timeout));
    let mut s = Session {
        conn,
        peer,
        store,
        config,
        shutdown,
        ended: false,
        batch: batch::Batch::default(),
        ahead: ahead::Ahead::default(),
        login: match config.access.anonymous() {
            Some(perms) => login::Login::Anonymous(perms),
            None => login::Login::LoggedOut,
        },
        checked: config.access.generation(),
        pending_user: None,
        action: None,
    };
    s.reply(Reply::greeting());
    loop {
        let next = if s.batch.is_empty() {
            s.next_line().await
        } else if let Some(next) = s.next_line_now() {
            next
        } else {
            // The client has sent nothing more: it may be waiting for these replies.
            s.commit_batch().await;
            s.next_line().await
        };
        let line = match next {
            Next::Line(line) => line,
            Next::Gone => {
                // Bodies that arrived whole are stored even if their sender left (a body cut
                // short never made it into the batch).
                s.commit_batch().await;
                return;
            }
            Next::End(reply) => {
                s.commit_batch().await;
                s.reply(reply);
                break;
            }
        };
        tracing::debug!(peer = %s.peer, "> {}", redact(&escape(&String::from_utf8_lossy(&line))));
        // Any line but the PASS right after it abandons a pending USER.
        let pending_user = s.pending_user.take();
        let flow = match Request::decode(&line) {
            Ok(req) => s.dispatch(req, pending_user).await,
            Err(e) => {
                s.commit_batch().await;
                s.action = Some(Action::start("invalid"));
                let flow = s.refuse_request(&e).await;
                s.finish_action(&flow);
                flow
            }
        };
        match flow {
            Ok(Flow::Continue) => {}
            Ok(Flow::Close) => break,
            Err(e) => {
                tracing::debug!(peer = %s.peer, "connection dropped: {e}");
                // Bodies staged before the one that broke off arrived whole: store them.
                s.commit_batch().await;
                return;
            }
        }
    }
    // A client that stopped reading gets at least a few seconds to take its last reply, even
    // under a short stall timeout.
    s.conn
        .close(Some(s.config.stall_timeout.max(CLOSE_WRITE_MIN)))
        .await;
}

/// The least time the last replies of a session may wait for the client to take them.
const CLOSE_WRITE_MIN: std::time::Duration = std::time::Duration::from_secs(5);

impl<S: Stream> Session<'_, S> {
    /// Queues a reply to the command being run (it decides the command's audit outcome).
    fn reply(&mut self, reply: Reply) {
        if let Some(action) = &mut self.action {
            action.replied(&reply);
        }
        self.queue(&reply);
    }

    /// Queues a reply that belongs to no running command (a batched upload's, a session's end).
    fn queue(&mut self, reply: &Reply) {
        tracing::debug!(peer = %self.peer, "< {}", redact(&reply.to_string()));
        self.conn.queue_reply(reply);
    }

    /// Notes something about the command being run, for its audit line.
    fn note(&mut self, f: impl FnOnce(&mut Action)) {
        if let Some(action) = &mut self.action {
            f(action);
        }
    }

    /// Logs the audit line of the command that just ran (a batched upload's is logged when
    /// its batch is stored).
    fn finish_action(&mut self, flow: &Result<Flow, TransportError>) {
        let Some(mut action) = self.action.take() else {
            return;
        };
        match flow {
            Err(_) => action.abort("the connection broke"),
            Ok(Flow::Close) if !action.has_status() => action.abort("the session ended"),
            Ok(_) => {}
        }
        action.finish(&self.config.metrics);
    }

    /// Runs a decoded request and logs its audit line.
    async fn dispatch(
        &mut self,
        req: Request,
        pending_user: Option<String>,
    ) -> Result<Flow, TransportError> {
        self.action = audited(&req, pending_user.as_deref());
        let flow = self.dispatch_gated(req, pending_user).await;
        self.finish_action(&flow);
        flow
    }

    /// Runs a decoded request: the permission gate first, then the command.
    async fn dispatch_gated(
        &mut self,
        req: Request,
        pending_user: Option<String>,
    ) -> Result<Flow, TransportError> {
        self.revalidate();
        if !matches!(req, Request::Download(_)) {
            self.ahead.clear();
        }
        if let Some(refusal) = self.refusal(&req) {
            self.commit_batch().await;
            return self.refuse_gated(&req, refusal).await;
        }
        match req {
            Request::Put(spec)
                if spec.size <= crate::transfer::SMALL
                    && spec.size <= self.store.config().max_file_size =>
            {
                match self.real_name(&spec.name) {
                    Ok(name) => {
                        self.stage_put(UploadSpec {
                            name,
                            size: spec.size,
                        })
                        .await
                    }
                    Err(reply) => {
                        self.commit_batch().await;
                        self.refuse_gated(&Request::Put(spec), reply).await
                    }
                }
            }
            Request::Pass(password) => {
                self.commit_batch().await;
                Ok(self.pass(pending_user, password).await)
            }
            req => {
                self.commit_batch().await;
                self.handle(req).await
            }
        }
    }

    /// Waits for the next line, ending the session on silence, shutdown or broken framing.
    async fn next_line(&mut self) -> Next {
        let idle = self.config.idle_timeout;
        let read = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => return Next::End(Reply::shutting_down()),
            read = self.conn.read_line(Some(idle)) => read.map(|l| l.map(<[u8]>::to_vec)),
        };
        match read {
            Ok(Some(line)) => Next::Line(line),
            Ok(None) | Err(TransportError::Closed | TransportError::Io(_)) => Next::Gone,
            // Either the client sent nothing (the idle timeout) or it stopped reading its
            // replies (the stall timeout on the flush that comes before each read).
            Err(TransportError::TimedOut(t)) if t == idle => Next::End(Reply::idle(t.as_secs())),
            Err(TransportError::TimedOut(t)) => {
                // Replies the client never took: drop those not started, so that the 408
                // comes right after the one in progress (PROTOCOL.md section 3).
                self.conn.drop_unsent();
                Next::End(Reply::not_reading(t.as_secs()))
            }
            Err(TransportError::LineTooLong(n)) => Next::End(Reply::line_too_long(n)),
        }
    }

    /// The next line if it can be had without waiting for the peer.
    fn next_line_now(&mut self) -> Option<Next> {
        let mut fut = std::pin::pin!(self.next_line());
        // Reading is cancel-safe (a partial line is kept), so polling once and dropping the
        // future loses nothing.
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(next) => Some(next),
            Poll::Pending => None,
        }
    }

    /// Asks for one more line (a prompt's answer); `Err(flow)` when the session must stop.
    async fn prompt(&mut self, what: Prompt) -> Result<Vec<u8>, Result<Flow, TransportError>> {
        self.reply(Reply::prompt(what));
        match self.next_line().await {
            Next::Line(l) => {
                let shown = escape(&String::from_utf8_lossy(&l));
                tracing::debug!(peer = %self.peer, "> {}", redact(&shown));
                Ok(l)
            }
            Next::Gone => {
                self.ended = true;
                Err(Ok(Flow::Close))
            }
            Next::End(r) => {
                self.ended = true;
                self.reply(r);
                Err(Ok(Flow::Close))
            }
        }
    }

    /// Asks for a value with `what` and decodes the answer with `decode`, exactly as the
    /// argument of the one-line form would be (so an empty answer to a name prompt is an
    /// invalid name, `422`, as `DOWNLOAD ` with nothing after the space is). `Ok(None)` when
    /// the answer was refused (already replied) or the session ended (`self.ended` is set).
    async fn ask<T>(
        &mut self,
        what: Prompt,
        decode: impl FnOnce(&str) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, TransportError> {
        let line = match self.prompt(what).await {
            Ok(l) => l,
            Err(_) => return Ok(None),
        };
        if let Some(refusal) = self.refusal_after(what) {
            self.reply(refusal);
            return Ok(None);
        }
        match decode_text(&line).and_then(decode) {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                if let Flow::Close = self.refuse_request(&e).await? {
                    self.ended = true;
                }
                Ok(None)
            }
        }
    }

    async fn ask_ref(&mut self, what: Prompt) -> Result<Option<FileRef>, TransportError> {
        self.ask(what, |t| FileRef::parse(t).map_err(DecodeError::from))
            .await
    }

    async fn ask_name(&mut self, what: Prompt) -> Result<Option<FileName>, TransportError> {
        self.ask(what, |t| FileName::parse(t).map_err(DecodeError::from))
            .await
    }

    async fn ask_spec(&mut self) -> Result<Option<UploadSpec>, TransportError> {
        self.ask(Prompt::UploadSpec, |t| {
            UploadSpec::decode(t).map_err(DecodeError::from)
        })
        .await
    }

    /// After a prompt whose answer was refused (or the session ended), go on unless it ended.
    fn flow_after_prompt(&self) -> Flow {
        if self.ended {
            Flow::Close
        } else {
            Flow::Continue
        }
    }

    async fn refuse_request(&mut self, e: &DecodeError) -> Result<Flow, TransportError> {
        if let Some(size) = e.pending_body() {
            let max = self.store.config().max_file_size;
            if size > max {
                // As for any PUT over the limit: the body is not read, so the connection ends.
                self.refuse(&StoreError::TooLarge { size, max });
                return Ok(Flow::Close);
            }
            self.begin_body();
            self.conn
                .discard_body(size, Some(self.config.stall_timeout))
                .await?;
        }
        self.reply(Reply::for_decode_error(e));
        Ok(if matches!(e, DecodeError::PutUnframed(_)) {
            Flow::Close
        } else {
            Flow::Continue
        })
    }

    /// Starts a body's transfer: it must keep the minimum rate from here on.
    fn begin_body(&mut self) {
        self.conn
            .begin_body(self.config.min_rate, self.config.stall_timeout);
    }

    fn refuse(&mut self, e: &StoreError) {
        if e.is_internal() {
            tracing::error!(peer = %self.peer, "{e}");
        }
        let reply = self.reply_for_seen(e);
        self.reply(reply);
    }
}

/// The audit record a request starts, with what the request itself says; `None` for those
/// that act on nothing (`HELP`, `DISCONNECT`, and `USER`, whose `PASS` is logged as the login).
fn audited(req: &Request, pending_user: Option<&str>) -> Option<Action> {
    let mut action = Action::start(match req {
        Request::ListFiles => "list",
        Request::Upload(_) | Request::Put(_) | Request::Resume(_) => "upload",
        Request::Download(_) | Request::DownloadFrom { .. } => "download",
        Request::Rename(_) => "rename",
        Request::Delete(_) => "delete",
        Request::Pass(_) | Request::Token(_) => "login",
        Request::Pair { .. } => "pair",
        Request::Mismatch(_) => "mismatch",
        Request::Help | Request::Disconnect | Request::User(_) => return None,
    });
    match req {
        Request::Upload(Some(spec)) | Request::Put(spec) | Request::Resume(spec) => {
            action.name(&spec.name).bytes(spec.size);
        }
        Request::Download(Some(r))
        | Request::Delete(Some(r))
        | Request::Mismatch(r)
        | Request::DownloadFrom { target: r, .. } => note_ref(&mut action, r),
        Request::Pass(_) => {
            if let Some(user) = pending_user {
                action.name(user);
            }
        }
        Request::Token(_) => {
            action.name("token");
        }
        _ => {}
    }
    Some(action)
}

/// Notes a file reference: its name, and its id when the text was one.
fn note_ref(action: &mut Action, r: &FileRef) {
    if let Some(name) = &r.name {
        action.name(name);
    }
    if let Some(id) = r.id {
        action.id(id);
    }
}

/// A prompt's answer as text: one trailing `\r` dropped, UTF-8 required. An empty answer is
/// passed on, so each prompt refuses it as its one-line form refuses an empty argument.
fn decode_text(line: &[u8]) -> Result<&str, DecodeError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    std::str::from_utf8(line).map_err(|_| DecodeError::NotUtf8)
}
