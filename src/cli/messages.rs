//! Errors in the words of the person at the terminal: one line per error, causes joined with
//! `: `, operating-system errors and server refusals in plain words, the protocol's reply codes
//! only under `--debug`.
//!
//! It decides words, not exit statuses (see [`status_of`](super::status_of)).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use barge::client::ClientError;

/// Whether error messages carry the server's reply codes: only under `--debug`, since the
/// codes are for whoever reads the protocol, not for the person at the terminal.
static SHOW_CODES: AtomicBool = AtomicBool::new(false);

/// Shows the server's reply codes in messages from now on (`--debug`).
pub(crate) fn show_codes(on: bool) {
    SHOW_CODES.store(on, Ordering::Relaxed);
}

/// One line: the error and its causes, `: `-separated, without repeating a cause a message
/// already quotes, with operating-system errors in plain words.
pub(crate) fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut refused = false;
    for cause in e.chain() {
        let raw = cause.to_string();
        if !out.is_empty() && out.contains(&raw) {
            continue;
        }
        let text = match (cause.downcast_ref::<io::Error>(), cause.downcast_ref()) {
            (Some(io), _) => {
                refused |= io.kind() == io::ErrorKind::ConnectionRefused;
                describe_io(io)
            }
            (None, Some(ClientError::Refused { code, text })) => describe_refusal(*code, text),
            (None, _) => raw,
        };
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    if refused
        && e.downcast_ref::<ClientError>()
            .is_some_and(|c| matches!(c, ClientError::Connect { .. }))
    {
        out.push_str(" \u{2014} is `barge serve` running?");
    }
    out
}

/// A server's refusal in the words a person reads: the server's own text (escaped, as it came
/// from the network), without the reply code unless `--debug` asked for the protocol.
pub(crate) fn describe_refusal(code: barge::protocol::Code, text: &str) -> String {
    use barge::protocol::Code;
    let words = match code {
        // The server names the file, which the caller's `Fail: NAME:` already does.
        Code::NOT_FOUND => "no such file on the server".to_owned(),
        Code::UNAVAILABLE => "the server is shutting down or busy; try again later".to_owned(),
        // The server names the folder it could not read and why; what it means for the user
        // comes first.
        Code::LISTING_INCOMPLETE => format!(
            "the server could not read all of its folder, so it listed nothing; try again ({})",
            lower_first(&barge::name::escape(text))
        ),
        Code::NOT_LOGGED_IN => format!(
            "{} (log in with --user NAME, --token-file FILE, or barge pair)",
            lower_first(&barge::name::escape(text))
        ),
        _ => lower_first(&barge::name::escape(text)),
    };
    if SHOW_CODES.load(Ordering::Relaxed) {
        format!("{words} ({code})")
    } else {
        words
    }
}

/// `text` with its first letter in lower case, to follow a `: ` in a sentence.
fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// An I/O error in plain lower-case words, without the `(os error N)` suffix.
pub(crate) fn describe_io(e: &io::Error) -> String {
    use io::ErrorKind as K;
    let known = match e.kind() {
        K::ConnectionRefused => "connection refused",
        K::ConnectionReset => "connection reset by the server",
        K::ConnectionAborted => "connection aborted",
        K::BrokenPipe => "the server closed the connection",
        K::TimedOut => "timed out",
        K::NotFound => "no such file or directory",
        K::PermissionDenied => "permission denied",
        K::AlreadyExists => "already exists",
        K::HostUnreachable => "host unreachable",
        K::NetworkUnreachable => "network unreachable",
        K::AddrNotAvailable => "address not available",
        K::IsADirectory => "is a directory",
        K::NotADirectory => "not a directory",
        K::StorageFull => "no space left on device",
        K::ReadOnlyFilesystem => "read-only file system",
        _ => return e.to_string(),
    };
    known.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10: a `451` reads as what happened and what to do, with the server's reason.
    #[test]
    fn an_incomplete_listing_is_told_in_words() {
        show_codes(false);
        let text = "The listing is incomplete: the folder 'a' could not be read (Too many open \
                    files (os error 24)); try again";
        let words = describe_refusal(barge::protocol::Code::LISTING_INCOMPLETE, text);
        assert!(
            words.starts_with("the server could not read all of its folder, so it listed nothing"),
            "{words}"
        );
        assert!(words.contains("too many open files") || words.contains("Too many open files"));
        assert!(!words.contains("451"), "{words}");
    }
}
