//! The audit log: one INFO line per action (target `barge::audit`), for the operator who must
//! answer "who deleted report.pdf, and when?".
//!
//! An [`Action`] is started when a command is decoded, noted as it goes (the name, the id, the
//! bytes, the final reply) and logged once when it ends, whatever path it ended by: done
//! (`ok`), refused with an error reply (`refused`, with the code and its words), or cut short
//! (`aborted`: the connection broke, the server shut down, the file changed while sent). The
//! same step feeds the [`Metrics`]. Who and from where is not repeated here: each line is
//! logged inside the connection's span (`conn{peer user}` for TCP, `web{peer user}` for the
//! web gateway), which every log format shows.
//!
//! Threat: secrets in the log. Only names (escaped), ids, sizes and refusal texts are logged;
//! a success's reply text is never logged (a pairing's carries the new token), and neither are
//! passwords or tokens (a login logs the user name, or the word `token`).
//!
//! Not here: what a command does (`session`), the log's format (`barge serve --log-format`).

use std::fmt;
use std::time::Instant;

use crate::id::FileId;
use crate::metrics::{Direction, Metrics, Outcome};
use crate::name::escape;
use crate::protocol::Reply;

/// The `tracing` target of audit lines, for filters such as `BARGE_LOG=barge::audit=info`.
pub const TARGET: &str = "barge::audit";

/// One action being carried out, logged once when it ends.
#[derive(Debug)]
pub struct Action {
    command: &'static str,
    started: Instant,
    name: Option<String>,
    to: Option<String>,
    id: Option<FileId>,
    bytes: Option<u64>,
    /// Where a resumed transfer started (`RESUME`, `DOWNLOAD_FROM`).
    resumed: Option<u64>,
    code: Option<u16>,
    reason: Option<String>,
    aborted: Option<&'static str>,
}

impl Action {
    /// Starts timing `command` (`list`, `upload`, `download`, `rename`, `delete`, `login`,
    /// `pair`, `connect`, `invalid`...).
    #[must_use]
    pub fn start(command: &'static str) -> Self {
        Self {
            command,
            started: Instant::now(),
            name: None,
            to: None,
            id: None,
            bytes: None,
            resumed: None,
            code: None,
            reason: None,
            aborted: None,
        }
    }

    /// The file the action is about (escaped for the log).
    pub fn name(&mut self, name: impl fmt::Display) -> &mut Self {
        self.name = Some(escape(&name.to_string()));
        self
    }

    /// A rename's new name (escaped for the log).
    pub fn to(&mut self, name: impl fmt::Display) -> &mut Self {
        self.to = Some(escape(&name.to_string()));
        self
    }

    /// The file's id.
    pub fn id(&mut self, id: FileId) -> &mut Self {
        self.id = Some(id);
        self
    }

    /// Where a resumed transfer starts in its file.
    pub fn resumed(&mut self, offset: u64) -> &mut Self {
        self.resumed = Some(offset);
        self
    }

    /// The size of the body that moves (or was announced).
    pub fn bytes(&mut self, bytes: u64) -> &mut Self {
        self.bytes = Some(bytes);
        self
    }

    /// Notes a reply sent for the action; prompts and other intermediate replies do not count.
    /// The last final reply decides the outcome.
    pub fn replied(&mut self, reply: &Reply) {
        if reply.code.is_intermediate() {
            return;
        }
        self.status(
            reply.code.as_u16(),
            reply.code.is_error().then_some(&*reply.text),
        );
    }

    /// Notes a final status by number (the web gateway's HTTP status); `refusal` is the words
    /// of an error, `None` for a success.
    pub fn status(&mut self, code: u16, refusal: Option<&str>) {
        self.code = Some(code);
        self.reason = refusal.map(escape);
    }

    /// Marks the action as cut short, with the reason.
    pub fn abort(&mut self, why: &'static str) {
        self.aborted = Some(why);
    }

    /// Whether a final reply was noted.
    #[must_use]
    pub fn has_status(&self) -> bool {
        self.code.is_some()
    }

    /// How the action ended: aborted if marked so or if it never got a final reply, refused
    /// on an error reply, ok otherwise.
    #[must_use]
    pub fn outcome(&self) -> Outcome {
        match (self.aborted, self.code) {
            (Some(_), _) | (None, None) => Outcome::Aborted,
            (None, Some(code)) if code >= 400 => Outcome::Refused,
            (None, Some(_)) => Outcome::Ok,
        }
    }

    /// Logs the action's one line and counts it in `metrics`.
    pub fn finish(self, metrics: &Metrics) {
        let outcome = self.outcome();
        let took = self.started.elapsed();
        let reason = match outcome {
            Outcome::Aborted => Some(self.aborted.unwrap_or("ended before its reply")),
            _ => self.reason.as_deref(),
        };
        let id = self.id.map(|id| id.to_hex());
        // Milliseconds with microsecond precision: readable, and exact enough for a histogram.
        let duration_ms = (took.as_micros() as f64) / 1000.0;
        tracing::info!(
            target: TARGET,
            command = self.command,
            name = self.name.as_deref(),
            to = self.to.as_deref(),
            id = id.as_deref(),
            bytes = self.bytes,
            offset = self.resumed,
            duration_ms,
            outcome = outcome.as_str(),
            code = self.code,
            reason,
            "{} {}",
            self.command,
            outcome.as_str(),
        );
        let direction = match self.command {
            "upload" => Some(Direction::Upload),
            "download" => Some(Direction::Download),
            _ => None,
        };
        if let Some(direction) = direction {
            metrics.transfer(direction, outcome, self.bytes.unwrap_or(0));
        }
        metrics.observe(self.command, outcome, took);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::protocol::Code;

    #[test]
    fn outcomes() {
        let mut a = Action::start("upload");
        assert_eq!(a.outcome(), Outcome::Aborted, "no reply yet");
        a.replied(&Reply::new(Code::new(350).unwrap(), "Ready"));
        assert_eq!(a.outcome(), Outcome::Aborted, "a prompt is not an end");
        a.replied(&Reply::new(Code::new(226).unwrap(), "x"));
        assert_eq!(a.outcome(), Outcome::Ok);
        assert_eq!(a.reason, None, "a success's words are never kept");
        a.replied(&Reply::new(
            Code::new(409).unwrap(),
            "A file named \x1b[2Jx exists",
        ));
        assert_eq!(a.outcome(), Outcome::Refused);
        assert!(!a.reason.as_deref().unwrap_or("").contains('\x1b'));
        a.abort("shutdown");
        assert_eq!(a.outcome(), Outcome::Aborted);
    }
}
