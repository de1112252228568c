//! The login and pairing words of the protocol (`PROTOCOL.md` sections 5.9 and 5.10): the
//! secret-carrying values, and the one function that hides secrets before a line is logged.
//!
//! Threat: a password or token ending up in a log, a `--debug` trace or a panic message. Answer:
//! a secret is a [`Secret`], whose `Debug` and `Display` never show it, and every line a trace
//! prints goes through [`redact`] first. Not here: checking a secret (`security::users`).

use std::borrow::Cow;
use std::fmt;

/// A password or token as it came off the wire: shown as `****` everywhere but [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    #[must_use]
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself: for the check and for sending it, nothing else.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// The line with any secret it carries replaced by `****`: a `PASS` or `TOKEN` command's
/// argument, or the token in a `236` (paired) reply. Other lines come back unchanged.
#[must_use]
pub fn redact(line: &str) -> Cow<'_, str> {
    let (word, rest) = match line.split_once(' ') {
        Some((w, r)) => (w, Some(r)),
        None => (line, None),
    };
    if word.eq_ignore_ascii_case("PASS") || word.eq_ignore_ascii_case("TOKEN") {
        return match rest {
            Some(_) => Cow::Owned(format!("{word} ****")),
            None => Cow::Borrowed(line),
        };
    }
    if word == "236" {
        // `236 <token> text`: keep the text, hide the token.
        let text = rest.and_then(|r| r.split_once(' ')).map_or("", |(_, t)| t);
        return Cow::Owned(format!("236 **** {text}").trim_end().to_owned());
    }
    Cow::Borrowed(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "**** Secret(****)");
        assert_eq!(s.expose(), "hunter2");
        for (line, want) in [
            ("PASS correct horse battery", "PASS ****"),
            ("pass x", "pass ****"),
            ("TOKEN barge_abc", "TOKEN ****"),
            ("token barge_abc", "token ****"),
            ("PASS", "PASS"),
            (
                "236 barge_abc Paired as token:1",
                "236 **** Paired as token:1",
            ),
            ("236 barge_abc", "236 ****"),
            ("USER alice", "USER alice"),
            ("PASSWORD x", "PASSWORD x"),
            ("DOWNLOAD PASS x", "DOWNLOAD PASS x"),
        ] {
            assert_eq!(redact(line), want, "{line}");
        }
    }
}
