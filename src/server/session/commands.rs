//! Each command of the dialogue, run against the store (`PROTOCOL.md` section 5).

use super::body::{after_grace, blocking, receive_body, receive_into, send_body};
use super::{Flow, Next, Session, listing};
use crate::protocol::{
    Code, DownloadHeader, FileId, FileRef, HELP_LINES, ListingHeader, Prompt, RenameArgs, Reply,
    Request, RestHeader, UploadSpec,
};
use crate::store::{Body, PartialKey, StoreError, Target};
use crate::transport::{Stream, TransportError};

impl<S: Stream> Session<'_, S> {
    pub(super) async fn handle(&mut self, req: Request) -> Result<Flow, TransportError> {
        match req {
            Request::ListFiles => self.list().await,
            Request::Help => {
                self.reply(Reply::help());
                let mut lines = HELP_LINES.join("\n");
                lines.push('\n');
                self.conn.queue_lines(lines.as_bytes());
                Ok(Flow::Continue)
            }
            Request::Disconnect => {
                self.reply(Reply::bye());
                Ok(Flow::Close)
            }
            Request::Mismatch(_) => {
                // The server cannot check the claim (only the client has its own MD5): it is
                // counted for the operator, and changes nothing.
                self.config.metrics.md5_mismatch();
                self.reply(Reply::mismatch_noted());
                Ok(Flow::Continue)
            }
            Request::Upload(Some(spec)) => self.upload(spec, false).await,
            Request::Upload(None) => match self.ask_spec().await? {
                Some(spec) => self.upload(spec, false).await,
                None => Ok(self.flow_after_prompt()),
            },
            Request::Put(spec) => self.upload(spec, true).await,
            Request::Resume(spec) => self.resume(spec).await,
            Request::Download(target) => match self.or_ask(target, Prompt::Download).await? {
                Some(target) => self.download(target, None).await,
                None => Ok(self.flow_after_prompt()),
            },
            Request::DownloadFrom { offset, target } => self.download(target, Some(offset)).await,
            Request::Delete(target) => match self.or_ask(target, Prompt::Delete).await? {
                Some(target) => {
                    self.delete(target).await;
                    Ok(Flow::Continue)
                }
                None => Ok(self.flow_after_prompt()),
            },
            Request::Rename(args) => self.rename(args).await,
            Request::User(name) => Ok(self.user(name)),
            // A PASS with its USER is taken by `dispatch`; here it came alone.
            Request::Pass(password) => Ok(self.pass(None, password).await),
            Request::Token(token) => Ok(self.token(token).await),
            Request::Pair { slot, message } => self.pair(slot, &message).await,
        }
    }

    /// The file the one-line form named, or else the answer to the prompt `what`.
    async fn or_ask(
        &mut self,
        target: Option<FileRef>,
        what: Prompt,
    ) -> Result<Option<FileRef>, TransportError> {
        match target {
            Some(t) => Ok(Some(t)),
            None => self.ask_ref(what).await,
        }
    }

    async fn list(&mut self) -> Result<Flow, TransportError> {
        let listing = match self.store.list().await {
            Ok(l) => l,
            Err(e) => {
                self.refuse(&e);
                return Ok(Flow::Continue);
            }
        };
        // Files still being hashed cannot be told apart by folder here, so a confined listing
        // does not count them.
        let scope = self.scope().cloned();
        let count = listing::count(&listing, scope.as_ref());
        let pending = if scope.is_none() { listing.pending } else { 0 };
        if scope.is_none() {
            self.config.metrics.index(count, pending);
        }
        let header = ListingHeader {
            count: count as u64,
            pending: pending as u64,
        };
        self.reply(Reply::listing(&header));
        let stall = Some(self.config.stall_timeout);
        let shutdown = self.shutdown.clone();
        let grace = self.config.shutdown_grace;
        let metrics = std::sync::Arc::clone(&self.config.metrics);
        let sent = tokio::select! {
            r = listing::send(&mut self.conn, &listing, scope.as_ref(), stall, &metrics) => r,
            () = after_grace(&shutdown, grace) => {
                self.note(|a| a.abort("the server shut down"));
                return Ok(Flow::Close);
            }
        };
        match sent {
            Ok(()) => Ok(Flow::Continue),
            // The client stopped reading: as between commands, the lines it has not started
            // to receive are dropped and the 408 follows the line in progress (PROTOCOL.md
            // section 3).
            Err(TransportError::TimedOut(t)) => {
                self.conn.drop_unsent();
                self.reply(Reply::not_reading(t.as_secs()));
                Ok(Flow::Close)
            }
            Err(e) => Err(e),
        }
    }

    async fn delete(&mut self, target: FileRef) {
        self.note(|a| super::note_ref(a, &target));
        let target = match self.target(target, true).await {
            Ok(t) => t,
            Err(reply) => return self.reply(reply),
        };
        match self.store.delete(&target).await {
            Ok(name) => {
                self.note(|a| {
                    a.name(&name);
                });
                let shown = self.seen_name(&name);
                self.reply(Reply::deleted(&shown));
            }
            Err(e) => self.refuse(&e),
        }
    }

    async fn rename(&mut self, args: RenameArgs) -> Result<Flow, TransportError> {
        let (from, to) = match args {
            RenameArgs::Both(from, to) => (from, to),
            RenameArgs::Prompt | RenameArgs::From(_) => {
                let from = match args {
                    RenameArgs::From(f) => f,
                    _ => match self.ask_ref(Prompt::RenameFrom).await? {
                        Some(f) => f,
                        None => return Ok(self.flow_after_prompt()),
                    },
                };
                match self.ask_name(Prompt::RenameTo).await? {
                    Some(to) => (from, to),
                    None => return Ok(self.flow_after_prompt()),
                }
            }
        };
        self.note(|a| {
            super::note_ref(a, &from);
            a.to(&to);
        });
        let (from, real_to) = match (self.target(from, true).await, self.real_name(&to)) {
            (Ok(from), Ok(real_to)) => (from, real_to),
            (Err(reply), _) | (_, Err(reply)) => {
                self.reply(reply);
                return Ok(Flow::Continue);
            }
        };
        match self.store.rename(&from, &real_to).await {
            Ok(old) => {
                self.note(|a| {
                    a.name(&old).to(&real_to);
                });
                let shown = self.seen_name(&old);
                self.reply(Reply::renamed(&shown, to.as_str()));
            }
            Err(e) => self.refuse(&e),
        }
        Ok(Flow::Continue)
    }

    async fn upload(&mut self, spec: UploadSpec, pipelined: bool) -> Result<Flow, TransportError> {
        let stall = Some(self.config.stall_timeout);
        let UploadSpec { name, size } = spec;
        self.note(|a| {
            a.name(&name).bytes(size);
        });
        let max = self.store.config().max_file_size;
        if pipelined && size > max {
            // A PUT body over the limit is not read, whatever else is wrong with the request
            // (PROTOCOL.md 5.3): its end cannot be found otherwise, so the connection ends.
            self.refuse(&StoreError::TooLarge { size, max });
            return Ok(Flow::Close);
        }
        let name = match self.real_name(&name) {
            Ok(n) => n,
            Err(reply) => {
                if pipelined {
                    self.begin_body();
                    self.conn.discard_body(size, stall).await?;
                }
                self.reply(reply);
                return Ok(Flow::Continue);
            }
        };
        let upload = match self.store.begin_upload_by(name, size, &self.owner()).await {
            Ok(u) => u,
            Err(e) => {
                if pipelined {
                    self.begin_body();
                    self.conn.discard_body(size, stall).await?;
                }
                self.refuse(&e);
                return Ok(Flow::Continue);
            }
        };
        let _in_flight = self.config.metrics.temp(size);
        if !pipelined {
            self.reply(Reply::ready(size));
            self.conn.flush(stall).await?;
        }
        let shutdown = self.shutdown.clone();
        let grace = self.config.shutdown_grace;
        self.begin_body();
        let outcome = tokio::select! {
            r = receive_body(&mut self.conn, upload, size, self.config.stall_timeout) => r?,
            () = after_grace(&shutdown, grace) => {
                self.note(|a| a.abort("the server shut down"));
                return Ok(Flow::Close);
            }
        };
        match outcome {
            Ok(id) => {
                self.note(|a| {
                    a.id(id);
                });
                self.reply(Reply::stored(&id));
            }
            Err(e) => self.refuse(&e),
        }
        Ok(Flow::Continue)
    }

    /// `RESUME name;size` (`PROTOCOL.md` section 5.11): the checks of `UPLOAD`, then `352
    /// <offset>`, the rest of the body, and the client's MD5 of its whole file, which decides
    /// whether the file is stored or what was kept is dropped.
    async fn resume(&mut self, spec: UploadSpec) -> Result<Flow, TransportError> {
        let stall = Some(self.config.stall_timeout);
        let UploadSpec { name, size } = spec;
        self.note(|a| {
            a.name(&name).bytes(size);
        });
        let real = match self.real_name(&name) {
            Ok(n) => n,
            Err(reply) => {
                self.reply(reply);
                return Ok(Flow::Continue);
            }
        };
        let key = PartialKey {
            owner: self.owner(),
            name: real.clone(),
            size,
        };
        let (upload, offset) = match self.store.resume_upload(key).await {
            Ok(u) => u,
            Err(e) => {
                self.refuse(&e);
                return Ok(Flow::Continue);
            }
        };
        let rest = size - offset;
        self.note(|a| {
            a.resumed(offset).bytes(rest);
        });
        let _in_flight = self.config.metrics.temp(rest);
        self.reply(Reply::resuming(offset, size));
        self.conn.flush(stall).await?;
        let shutdown = self.shutdown.clone();
        let grace = self.config.shutdown_grace;
        self.begin_body();
        let received = tokio::select! {
            r = receive_into(&mut self.conn, upload, rest, self.config.stall_timeout) => r?,
            () = after_grace(&shutdown, grace) => {
                self.note(|a| a.abort("the server shut down"));
                return Ok(Flow::Close);
            }
        };
        // The body is followed by one line: the client's MD5 of its whole file. Until it has
        // arrived, what was received stays kept for a later resume.
        let line = match self.next_line().await {
            Next::Line(line) => line,
            Next::Gone => return Ok(Flow::Close),
            Next::End(reply) => {
                self.reply(reply);
                return Ok(Flow::Close);
            }
        };
        let expected = super::decode_text(&line)
            .ok()
            .and_then(|t| FileId::parse(t).ok());
        let upload = match received {
            Ok(upload) => upload,
            Err(e) => {
                self.refuse(&e);
                return Ok(Flow::Continue);
            }
        };
        let Some(expected) = expected else {
            let _ = blocking(move || {
                upload.discard();
                Ok(())
            })
            .await;
            self.reply(Reply::new(
                Code::BAD_REQUEST,
                "Expected the file's MD5 (32 hex digits) after its bytes; nothing was kept",
            ));
            return Ok(Flow::Continue);
        };
        match blocking(move || upload.finish_verified(expected)).await {
            Ok(id) if id == expected => {
                self.note(|a| {
                    a.id(id);
                });
                self.reply(Reply::stored(&id));
            }
            Ok(actual) => {
                // A backend that cannot hash before committing: take the wrong copy back.
                let _ = self.store.delete(&Target::name(real)).await;
                self.refuse(&StoreError::ChecksumMismatch { expected, actual });
            }
            Err(e) => self.refuse(&e),
        }
        Ok(Flow::Continue)
    }

    async fn download(
        &mut self,
        target: FileRef,
        from: Option<u64>,
    ) -> Result<Flow, TransportError> {
        self.note(|a| super::note_ref(a, &target));
        let target = match self.target(target, false).await {
            Ok(t) => t,
            Err(reply) => {
                self.reply(reply);
                return Ok(Flow::Continue);
            }
        };
        let d = match self.open_download(&target).await {
            Ok(d) => d,
            Err(e) => {
                self.refuse(&e);
                return Ok(Flow::Continue);
            }
        };
        let offset = from.unwrap_or(0);
        if offset > d.size {
            self.refuse(&StoreError::BeyondEnd {
                offset,
                size: d.size,
            });
            return Ok(Flow::Continue);
        }
        self.note(|a| {
            a.name(&d.name).id(d.id).bytes(d.size - offset);
        });
        let seen = match self.scope() {
            Some(scope) => scope.to_seen(&d.name).unwrap_or_else(|| d.name.clone()),
            None => d.name.clone(),
        };
        if from.is_some() {
            self.note(|a| {
                a.resumed(offset);
            });
            self.reply(Reply::rest_follows(&RestHeader {
                count: d.size - offset,
                offset,
                id: d.id,
                name: seen,
            }));
        } else {
            self.reply(Reply::file_follows(&DownloadHeader {
                size: d.size,
                id: d.id,
                name: seen,
            }));
        }
        let stall = Some(self.config.stall_timeout);
        if let Body::Bytes(body) = &d.body {
            if body.len() as u64 != d.size {
                // The file shrank after it was opened; the promised length cannot be kept.
                tracing::warn!(peer = %self.peer, "{} changed while being sent", d.name);
                self.note(|a| a.abort("the file changed while being sent"));
                return Ok(Flow::Close);
            }
            let rest = body.get(usize::try_from(offset).unwrap_or(usize::MAX)..);
            self.conn.queue_body(rest.unwrap_or_default());
            return Ok(Flow::Continue);
        }
        let shutdown = self.shutdown.clone();
        let grace = self.config.shutdown_grace;
        let name = d.name.clone();
        self.begin_body();
        let sent = tokio::select! {
            r = send_body(&mut self.conn, d, offset, stall) => r?,
            () = after_grace(&shutdown, grace) => {
                self.note(|a| a.abort("the server shut down"));
                return Ok(Flow::Close);
            }
        };
        if !sent {
            tracing::warn!(peer = %self.peer, "{name} shrank while being sent; closing the connection");
            self.note(|a| a.abort("the file changed while being sent"));
            return Ok(Flow::Close);
        }
        Ok(Flow::Continue)
    }
}
