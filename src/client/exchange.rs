//! One request and its reply: sending a line, reading status lines, and keeping track of whether
//! the connection is still in step after an error or a cancelled call.
//!
//! It knows nothing of bodies or local files; the upload and download modules build on it.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Client, ClientError};
use crate::name::escape;
use crate::protocol::{Reply, Request, redact};
use crate::transport::Connection;

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Sends a one-line request and expects `ok`.
    pub(super) async fn simple(
        &mut self,
        request: &Request,
        ok: crate::protocol::Code,
    ) -> Result<Reply, ClientError> {
        self.usable()?;
        let result = match self.request(request).await {
            Ok(reply) if reply.code == ok => {
                self.in_exchange = false;
                Ok(reply)
            }
            Ok(reply) => Err(self.unexpected(reply)),
            Err(e) => Err(e),
        };
        self.settle(result)
    }

    /// Sends `request` and reads the first reply line.
    pub(super) async fn request(&mut self, request: &Request) -> Result<Reply, ClientError> {
        let line = request.encode();
        trace_sent(&line);
        self.in_exchange = true;
        self.tx.queue_bytes(line.as_bytes());
        self.tx.flush(self.timeout).await?;
        recv_reply(&mut self.rx, self.timeout).await
    }

    /// The error for a reply that is not the one expected: a refusal for `4xx`/`5xx` (which
    /// ends the exchange), a protocol error otherwise.
    pub(super) fn unexpected(&mut self, reply: Reply) -> ClientError {
        if reply.code.is_error() {
            self.in_exchange = false;
        }
        refusal(reply)
    }

    /// Fails when the connection can no longer be used.
    pub(super) fn usable(&mut self) -> Result<(), ClientError> {
        if self.in_exchange && self.broken.is_none() {
            self.broken = Some("an earlier request was interrupted halfway".to_owned());
        }
        match &self.broken {
            Some(why) => Err(ClientError::Disconnected(why.clone())),
            None => Ok(()),
        }
    }

    /// Records whether an error left the connection unusable.
    pub(super) fn settle<T>(&mut self, result: Result<T, ClientError>) -> Result<T, ClientError> {
        if let Err(e) = &result
            && (e.is_connection_lost() || self.in_exchange)
            && self.broken.is_none()
        {
            self.broken = Some(e.to_string());
        }
        result
    }
}

/// Reads one line and decodes it as a status line.
pub(super) async fn recv_reply<R>(
    rx: &mut Connection<R>,
    timeout: Option<Duration>,
) -> Result<Reply, ClientError>
where
    R: AsyncRead + AsyncWrite + Unpin,
{
    let line = recv_line(rx, timeout).await?;
    Reply::decode(line)
        .map_err(|_| ClientError::Protocol(format!("malformed reply {:?}", escape(line))))
}

/// Reads one line of text from the server (without its line ending).
pub(super) async fn recv_line<R>(
    rx: &mut Connection<R>,
    timeout: Option<Duration>,
) -> Result<&str, ClientError>
where
    R: AsyncRead + AsyncWrite + Unpin,
{
    let Some(line) = rx.read_line(timeout).await? else {
        return Err(ClientError::Disconnected(
            "the server closed the connection".to_owned(),
        ));
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).map_err(|_| {
        ClientError::Protocol("the server sent a line that is not UTF-8".to_owned())
    })?;
    tracing::debug!(target: "barge::wire", "< {}", redact(&escape(line)));
    Ok(line)
}

pub(super) fn trace_sent(line: &str) {
    tracing::debug!(target: "barge::wire", "> {}", redact(&escape(line.trim_end_matches('\n'))));
}

pub(super) fn trace_body(size: u64) {
    tracing::debug!(target: "barge::wire", "  <{size} bytes>");
}

pub(super) fn protocol(what: &str, e: &crate::protocol::ValueError) -> ClientError {
    ClientError::Protocol(format!("bad {what}: {}", escape(&e.to_string())))
}

/// The error for a reply that is not the one expected: a refusal for `4xx`/`5xx`, a protocol
/// error otherwise.
pub(super) fn refusal(reply: Reply) -> ClientError {
    if reply.code.is_error() {
        ClientError::Refused {
            code: reply.code,
            text: reply.text,
        }
    } else {
        ClientError::Protocol(format!("unexpected reply {reply}"))
    }
}
