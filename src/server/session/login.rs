//! Logging in and pairing on one connection (`PROTOCOL.md` sections 3, 5.9 and 5.10), and the
//! permission check every command passes before anything else about it is looked at.
//!
//! Threats and answers: a command run before a login or beyond a user's permissions (one gate,
//! [`Session::refusal`], sits in front of every command, and a refusal says nothing about
//! files); online guessing (every failed login or pairing step waits for the server's
//! [`crate::security::throttle::Throttle`] before it is checked, and the failure is recorded
//! for the peer's address); secrets in logs (failures are logged with the user name only; the
//! trace of lines goes through `protocol::redact`); a login in clear text on a network (refused
//! unless the connection is TLS or the server is on loopback). Not here: what a confined user
//! sees (`confine`), the checks themselves (`security::users`, `security::pair`).

use std::sync::Arc;

use tokio::time::Instant;

use super::{Flow, Next, Session, decode_text};
use crate::name::escape;
use crate::protocol::{Prompt, Reply, Request, Secret};
use crate::security::pair::{
    CONFIRM_LEN, MESSAGE_LEN, PairError, ServerPairing, decode_b64, encode_b64,
};
use crate::security::users::{Permissions, Principal, Scope};
use crate::transport::{Stream, TransportError};

/// Who a session acts for.
#[derive(Debug)]
pub(super) enum Login {
    /// Nobody yet: only `HELP`, `DISCONNECT`, `USER`, `PASS`, `TOKEN` and `PAIR` work.
    LoggedOut,
    /// Anonymous access with these permissions, over the whole share.
    Anonymous(Permissions),
    /// A user or token.
    In(Principal),
    /// A user or token since removed, revoked or given a new password: as `LoggedOut`, with
    /// its own refusal.
    Revoked,
}

/// What a command needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    /// Any session that may run commands at all.
    Any,
    List,
    Get,
    Put,
    Modify,
}

fn need(req: &Request) -> Need {
    match req {
        Request::ListFiles => Need::List,
        Request::Upload(_) | Request::Put(_) | Request::Resume(_) => Need::Put,
        Request::Download(_) | Request::DownloadFrom { .. } => Need::Get,
        Request::Rename(_) | Request::Delete(_) => Need::Modify,
        Request::Mismatch(_) => Need::Any,
        Request::Help
        | Request::Disconnect
        | Request::User(_)
        | Request::Pass(_)
        | Request::Token(_)
        | Request::Pair { .. } => Need::Nothing,
    }
}

/// Which secret a login presents.
enum Credential {
    Password(String, Secret),
    Token(Secret),
}

impl<S: Stream> Session<'_, S> {
    /// The permissions the session has now, if it may run commands at all.
    fn perms(&self) -> Option<Permissions> {
        match &self.login {
            Login::LoggedOut | Login::Revoked => None,
            Login::Anonymous(p) => Some(*p),
            Login::In(principal) => Some(principal.perms),
        }
    }

    /// Who owns the partial uploads this session makes (`RESUME`): the principal's name, or
    /// empty for an anonymous session (anyone who may upload may continue those).
    pub(super) fn owner(&self) -> String {
        match &self.login {
            Login::In(principal) => principal.name.clone(),
            Login::LoggedOut | Login::Revoked | Login::Anonymous(_) => String::new(),
        }
    }

    /// The part of the share the session sees.
    pub(super) fn scope(&self) -> Option<&Scope> {
        match &self.login {
            Login::In(principal) if principal.folder.folder_name().is_some() => {
                Some(&principal.folder)
            }
            _ => None,
        }
    }

    /// The refusal for `req`, checked before anything else about it: `530` when logged out,
    /// `403` beyond the permissions; `None` when it may run.
    pub(super) fn refusal(&self, req: &Request) -> Option<Reply> {
        self.refusal_for(need(req))
    }

    /// Checks the login again (if the user database changed) before the answer to `prompt`
    /// is acted on: a prompt may wait for its answer up to the idle timeout, and a user removed
    /// (or a right taken) meanwhile must not still act on it. The refusal, if any.
    pub(super) fn refusal_after(&mut self, prompt: Prompt) -> Option<Reply> {
        self.revalidate();
        self.refusal_for(match prompt {
            Prompt::UploadSpec => Need::Put,
            Prompt::Download => Need::Get,
            Prompt::Delete | Prompt::RenameFrom | Prompt::RenameTo => Need::Modify,
        })
    }

    fn refusal_for(&self, need: Need) -> Option<Reply> {
        if need == Need::Nothing {
            return None;
        }
        let Some(p) = self.perms() else {
            return Some(match self.login {
                Login::Revoked => Reply::login_revoked(),
                _ => Reply::log_in_first(),
            });
        };
        let allowed = match need {
            Need::Nothing | Need::Any => true,
            Need::List => p.may_list(),
            Need::Get => p.may_get(),
            Need::Put => p.may_put(),
            Need::Modify => p.may_modify(),
        };
        (!allowed).then(Reply::not_allowed)
    }

    /// Answers a refused request; a `PUT`'s body is read and discarded first, so the
    /// connection stays in step (one over the size limit is `413` and ends it, as always).
    pub(super) async fn refuse_gated(
        &mut self,
        req: &Request,
        reply: Reply,
    ) -> Result<Flow, TransportError> {
        if let Request::Put(spec) = req {
            let max = self.store.config().max_file_size;
            if spec.size > max {
                self.refuse(&crate::store::StoreError::TooLarge {
                    size: spec.size,
                    max,
                });
                return Ok(Flow::Close);
            }
            self.begin_body();
            self.conn
                .discard_body(spec.size, Some(self.config.stall_timeout))
                .await?;
        }
        self.reply(reply);
        Ok(Flow::Continue)
    }

    /// Checks the session's login again if the user database changed since the last command
    /// ([`Users::generation`](crate::security::users::Users::generation): no `stat` while its
    /// folder is quiet): a removed user, a revoked token or a new password ends it, new
    /// permissions or a new folder apply at once, and an anonymous session ends when anonymous
    /// access does (the first user added on a loopback server).
    pub(super) fn revalidate(&mut self) {
        let access = &self.config.access;
        let now = access.generation();
        if now == self.checked {
            return;
        }
        self.checked = now;
        let next = match &self.login {
            Login::In(p) => match access.recheck(p) {
                Some(fresh) => Login::In(fresh),
                None => {
                    tracing::info!(peer = %self.peer, "login of {} ended: removed or changed on the server", escape(&p.name));
                    Login::Revoked
                }
            },
            Login::Anonymous(_) => match access.anonymous() {
                Some(perms) => Login::Anonymous(perms),
                None => Login::Revoked,
            },
            Login::LoggedOut | Login::Revoked => return,
        };
        self.login = next;
    }

    /// `USER name`: always `334`, for unknown names too.
    pub(super) fn user(&mut self, name: String) -> Flow {
        if let Some(reply) = self.login_refusal() {
            self.reply(reply);
        } else {
            self.pending_user = Some(name);
            self.reply(Reply::send_pass());
        }
        Flow::Continue
    }

    /// `PASS password`, right after `USER` (`pending` is the name it gave).
    pub(super) async fn pass(&mut self, pending: Option<String>, password: Secret) -> Flow {
        match pending {
            Some(name) => self.log_in(Credential::Password(name, password)).await,
            None => self.reply(Reply::pass_without_user()),
        }
        Flow::Continue
    }

    /// `TOKEN token`.
    pub(super) async fn token(&mut self, token: Secret) -> Flow {
        if let Some(reply) = self.login_refusal() {
            self.reply(reply);
        } else {
            self.log_in(Credential::Token(token)).await;
        }
        Flow::Continue
    }

    /// Why a login cannot start on this session, if it cannot.
    fn login_refusal(&self) -> Option<Reply> {
        if !self.config.access.logins_allowed() {
            Some(Reply::login_needs_tls())
        } else if matches!(self.login, Login::In(_)) {
            Some(Reply::already_logged_in())
        } else {
            None
        }
    }

    async fn log_in(&mut self, credential: Credential) {
        let access = Arc::clone(&self.config.access);
        let shown = match &credential {
            Credential::Password(name, _) => escape(name),
            Credential::Token(_) => "a token".to_owned(),
        };
        let throttled = match &credential {
            Credential::Password(name, _) => name.clone(),
            Credential::Token(_) => crate::security::throttle::TOKEN.to_owned(),
        };
        let checked = access
            .check(
                self.peer.addr.ip(),
                &throttled,
                move |users| match &credential {
                    Credential::Password(name, pw) => users.verify_password(name, pw.expose()),
                    Credential::Token(t) => users.verify_token(t.expose()),
                },
            )
            .await;
        match checked {
            Some(principal) => {
                // From here on, every line of this connection says who it acts for.
                tracing::Span::current().record("user", escape(&principal.name));
                self.note(|a| {
                    a.name(&principal.name);
                });
                self.reply(Reply::logged_in(
                    &principal.name,
                    &principal.perms.describe(),
                ));
                self.login = Login::In(principal);
            }
            None => {
                tracing::debug!(peer = %self.peer, "failed login for {shown}");
                self.reply(Reply::login_incorrect());
            }
        }
    }

    /// `PAIR slot A`: the pairing exchange (`PROTOCOL.md` section 5.10).
    pub(super) async fn pair(&mut self, slot: u16, message: &str) -> Result<Flow, TransportError> {
        let access = Arc::clone(&self.config.access);
        let binding = match self.peer.pair_binding {
            Some(b) if access.logins_allowed() => b,
            Some(_) => {
                self.reply(Reply::login_needs_tls());
                return Ok(Flow::Continue);
            }
            None => {
                self.reply(Reply::pairing_needs_tls());
                return Ok(Flow::Continue);
            }
        };
        if access.users().is_none() {
            self.reply(Reply::new(
                crate::protocol::Code::FORBIDDEN,
                "Pairing is not set up on this server",
            ));
            return Ok(Flow::Continue);
        }
        let ip = self.peer.addr.ip();
        access.throttle.begin(ip).await;
        // The try is spent before anything is checked, so dropping the connection saves nothing.
        let attempt = match access.pairing.attempt(slot, Instant::now()) {
            Ok(a) => a,
            Err(e) => return Ok(self.pair_failed(&e)),
        };
        let responded = decode_b64(message, MESSAGE_LEN)
            .and_then(|a| ServerPairing::respond(&attempt.code, &binding, &a));
        let (state, msg_b, confirm) = match responded {
            Ok(v) => v,
            Err(e) => return Ok(self.pair_failed(&e)),
        };
        self.reply(Reply::pair_continue(
            &encode_b64(&msg_b),
            &encode_b64(&confirm),
        ));
        let line = match self.next_line().await {
            Next::Line(l) => l,
            Next::Gone => return Ok(Flow::Close),
            Next::End(r) => {
                self.reply(r);
                return Ok(Flow::Close);
            }
        };
        tracing::debug!(peer = %self.peer, "> {}", escape(&String::from_utf8_lossy(&line)));
        let verified = decode_text(&line)
            .map_err(|_| PairError::BadMessage)
            .and_then(|t| decode_b64(t, CONFIRM_LEN))
            .and_then(|mc| state.verify(&mc))
            .and_then(|()| attempt.complete());
        let grant = match verified {
            Ok(g) => g,
            Err(e) => return Ok(self.pair_failed(&e)),
        };
        let creator = Arc::clone(&access);
        let created = tokio::task::spawn_blocking(move || {
            let users = creator.users()?;
            let token = users
                .create_token(&grant.label, grant.perms, &grant.folder)
                .map_err(|e| tracing::error!("creating a token after pairing: {e}"))
                .ok()?;
            // The login as any later `TOKEN` would make it (a fast hash, no argon2).
            let principal = users.verify_token(token.secret()).ok().flatten()?;
            Some((token, principal))
        })
        .await
        .ok()
        .flatten();
        let Some((token, principal)) = created else {
            self.reply(Reply::new(
                crate::protocol::Code::INTERNAL,
                "Internal server error; no token was created",
            ));
            return Ok(Flow::Continue);
        };
        access
            .throttle
            .succeed(ip, crate::security::throttle::PAIRING);
        tracing::Span::current().record("user", escape(&principal.name));
        self.reply(Reply::paired(token.secret(), &principal.name));
        self.login = Login::In(principal);
        Ok(Flow::Continue)
    }

    fn pair_failed(&mut self, e: &PairError) -> Flow {
        self.config
            .access
            .throttle
            .fail(self.peer.addr.ip(), crate::security::throttle::PAIRING);
        tracing::debug!(peer = %self.peer, "pairing failed: {e}");
        let why = match e {
            PairError::UnknownCode | PairError::CodeUsed => {
                "no such code (it may have expired, been used, or been burnt by wrong tries)"
            }
            _ => "wrong code, or someone in the middle",
        };
        self.reply(Reply::pair_failed(why));
        Flow::Continue
    }
}
