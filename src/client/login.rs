//! Logging in and pairing from the client's side (`PROTOCOL.md` sections 5.9 and 5.10).
//!
//! Threats: a secret in a trace (the `barge::wire` trace goes through `protocol::redact`); a
//! pairing run against someone in the middle (the SPAKE2 exchange is bound to this TLS
//! session's exporter value, and the server's confirmation is checked before anything is
//! sent back or trusted). Where a password or token comes from, and where a token is saved,
//! belong to the CLI.

use tokio::io::{AsyncRead, AsyncWrite};

use super::exchange::{recv_reply, trace_sent};
use super::{Client, ClientError};
use crate::protocol::{Code, Request, Secret};
use crate::security::pair::{
    CONFIRM_LEN, ClientPairing, MESSAGE_LEN, PairCode, decode_b64, encode_b64,
};

/// How long the reply to a credential (`PASS`, `TOKEN`, the first step of `PAIR`) may take at
/// least, whatever the client's stall timeout: the server holds it for its failed-login delay
/// (up to 30 s, `PROTOCOL.md` section 5.9) after the earlier attempts of the same address.
/// With the CLI's 10 s, a login after 7 mistakes (a 16 s delay) gave up before the server
/// answered.
pub const LOGIN_WAIT: std::time::Duration = std::time::Duration::from_secs(90);

/// Who the server says the session is logged in as (`230 <principal> <perms>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedIn {
    /// A user name, or `token:<id>`.
    pub principal: String,
    /// `get,put,modify` or a part of it, or `drop-box`.
    pub perms: String,
}

/// The outcome of a pairing: the token the server created for this client.
pub struct Paired {
    /// Who the session is now logged in as (`token:<id>`).
    pub principal: String,
    token: Secret,
}

impl Paired {
    /// The token, to save for later connections.
    #[must_use]
    pub fn token(&self) -> &str {
        self.token.expose()
    }
}

impl std::fmt::Debug for Paired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paired")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Sends a credential and reads its `230`, waiting at least [`LOGIN_WAIT`] for it.
    async fn credential(
        &mut self,
        request: &Request,
    ) -> Result<crate::protocol::Reply, ClientError> {
        self.waiting_for_the_throttle(async |c: &mut Self| c.simple(request, Code::LOGGED_IN).await)
            .await
    }

    /// Runs `step` with a stall timeout of at least [`LOGIN_WAIT`], then the client's again.
    async fn waiting_for_the_throttle<T>(&mut self, step: impl AsyncFnOnce(&mut Self) -> T) -> T {
        let stall = self.timeout;
        self.timeout = stall.map(|t| t.max(LOGIN_WAIT));
        let done = step(self).await;
        self.timeout = stall;
        done
    }

    /// Logs in with a user name and password (`USER`, `PASS`).
    ///
    /// # Errors
    /// [`ClientError::Refused`] with code `530` for a wrong name or password (`403` when the
    /// server refuses logins in clear text), or a transport error.
    pub async fn login_password(
        &mut self,
        user: &str,
        password: &str,
    ) -> Result<LoggedIn, ClientError> {
        self.simple(&Request::User(user.to_owned()), Code::SEND_PASS)
            .await?;
        let reply = self
            .credential(&Request::Pass(Secret::new(password)))
            .await?;
        Ok(logged_in(&reply.text))
    }

    /// Logs in with a token (`TOKEN`).
    ///
    /// # Errors
    /// As [`Client::login_password`].
    pub async fn login_token(&mut self, token: &str) -> Result<LoggedIn, ClientError> {
        let reply = self.credential(&Request::Token(Secret::new(token))).await?;
        Ok(logged_in(&reply.text))
    }

    /// Runs a pairing exchange with `code` (`PAIR`). On success the session is logged in as
    /// the new token, and the caller may pin the key this TLS session presented.
    ///
    /// # Errors
    /// [`ClientError::Pairing`] for a wrong code or someone in the middle (nothing is to be
    /// trusted then), [`ClientError::Refused`] when the server refuses (`435`, `403`), or a
    /// transport error.
    pub async fn pair(&mut self, code: &PairCode) -> Result<Paired, ClientError> {
        self.usable()?;
        let binding = self.pair_binding.ok_or_else(|| {
            ClientError::Pairing("pairing needs a TLS connection; drop --plain".to_owned())
        })?;
        let (state, msg_a) = ClientPairing::start(code, &binding);
        let request = Request::Pair {
            slot: code.nameplate(),
            message: encode_b64(&msg_a),
        };
        // The server delays the step as it delays a login.
        let reply = self
            .waiting_for_the_throttle(async |c: &mut Self| c.request(&request).await)
            .await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) => return self.settle(Err(e)),
        };
        if reply.code != Code::PAIR_CONTINUE {
            let e = self.unexpected(reply);
            return self.settle(Err(e));
        }
        let mut words = reply.text.split(' ');
        let parsed = match (words.next(), words.next()) {
            (Some(b), Some(mac)) => decode_b64(b, MESSAGE_LEN)
                .and_then(|b| Ok((b, decode_b64(mac, CONFIRM_LEN)?)))
                .ok(),
            _ => None,
        };
        let checked = match parsed {
            Some((b, mac)) => state.finish(&b, &mac),
            None => Err(crate::security::pair::PairError::BadMessage),
        };
        let line = match &checked {
            Ok(mac) => format!("{}\n", encode_b64(mac)),
            // Tell the server the exchange is off; its 435 is read below.
            Err(_) => "-\n".to_owned(),
        };
        trace_sent(&line);
        self.tx.queue_bytes(line.as_bytes());
        let sent = self.tx.flush(self.timeout).await.map_err(ClientError::from);
        if let Err(e) = sent {
            return self.settle(Err(e));
        }
        let reply = match recv_reply(&mut self.rx, self.timeout).await {
            Ok(r) => r,
            Err(e) => return self.settle(Err(e)),
        };
        self.in_exchange = false;
        if let Err(e) = checked {
            return Err(ClientError::Pairing(e.to_string()));
        }
        if reply.code != Code::PAIRED {
            return Err(self.unexpected(reply));
        }
        let (token, rest) = reply.text.split_once(' ').unwrap_or((&reply.text, ""));
        let principal = rest
            .strip_prefix("Paired as ")
            .unwrap_or(rest)
            .split(' ')
            .next()
            .unwrap_or("")
            .to_owned();
        Ok(Paired {
            principal,
            token: Secret::new(token),
        })
    }
}

fn logged_in(text: &str) -> LoggedIn {
    let mut words = text.split(' ');
    LoggedIn {
        principal: words.next().unwrap_or("").to_owned(),
        perms: words.next().unwrap_or("").to_owned(),
    }
}
