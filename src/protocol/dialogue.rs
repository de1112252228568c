//! The server's side of the dialogue as data: every reply the server sends, its help lines and
//! how a request that cannot be decoded is answered (`PROTOCOL.md` sections 3, 5 and 6).
//!
//! The server builds its replies only from here, and the client and the tests read them with
//! the decoders beside them ([`ListingHeader`], [`DownloadHeader`], [`Reply::decode`]), so the
//! words of the protocol live in one place. What a *store* error means on the wire is decided
//! at the server's edge (`server::reply_for`), since the store knows nothing of the protocol.

use super::request::DecodeError;
use super::value::{DownloadHeader, FileId, ListingHeader, RestHeader};
use super::{Code, PROTOCOL_VERSION, Reply};

/// The lines that follow `211`: one per command, with its aliases (section 5).
pub const HELP_LINES: [&str; 11] = [
    "LIST_FILES             list the files, one id;name;size per line (also LIST, LIST FILES)",
    "UPLOAD [name;size]     upload a file: send its bytes after 350 (also PUT name;size, body at once)",
    "DOWNLOAD [id-or-name]  download a file: 213 size id name, then its bytes (also GET)",
    "RESUME name;size       upload, continuing an interrupted one: 352 offset, the rest, then its MD5",
    "DOWNLOAD_FROM n id     the rest of a file from byte n: 214 count n id name, then its bytes",
    "RENAME [old<TAB>new]   rename a file (also CHANGE, MV)",
    "DELETE [id-or-name]    delete a file (also RM)",
    "HELP                   this list",
    "DISCONNECT             end the session (also BYE, QUIT, EXIT)",
    "USER name, PASS pw     log in (or TOKEN token; PAIR is sent by barge pair)",
    "See PROTOCOL.md for the exact dialogue of each command",
];

/// Which name a `331`-`333` prompt asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// `330`: `name;size` of an upload.
    UploadSpec,
    /// `331`: the id or name of a file to download.
    Download,
    /// `331`: the id or name of a file to delete.
    Delete,
    /// `332`: the current name or id of a file to rename.
    RenameFrom,
    /// `333`: the new name of a file being renamed.
    RenameTo,
}

impl Reply {
    /// `220 barge/1 ready`.
    #[must_use]
    pub fn greeting() -> Self {
        Self::new(Code::GREETING, format!("{PROTOCOL_VERSION} ready"))
    }

    /// `503`: the connection limit is reached; the server closes the connection.
    #[must_use]
    pub fn busy() -> Self {
        Self::new(
            Code::UNAVAILABLE,
            "Server busy: too many connections, try again later",
        )
    }

    /// `503`: the server is shutting down.
    #[must_use]
    pub fn shutting_down() -> Self {
        Self::new(Code::UNAVAILABLE, "Server shutting down")
    }

    /// `221 Bye`.
    #[must_use]
    pub fn bye() -> Self {
        Self::new(Code::BYE, "Bye")
    }

    /// The prompt that asks for `what`.
    #[must_use]
    pub fn prompt(what: Prompt) -> Self {
        match what {
            Prompt::UploadSpec => Self::new(Code::SEND_SPEC, "Send file name;file size"),
            Prompt::Download => Self::new(Code::SEND_ID, "Please send a file ID"),
            Prompt::Delete => Self::new(Code::SEND_ID, "Please send the file ID or name to delete"),
            Prompt::RenameFrom => Self::new(Code::SEND_CURRENT_NAME, "Send the current name or ID"),
            Prompt::RenameTo => Self::new(Code::SEND_NEW_NAME, "Send the new name"),
        }
    }

    /// `350`: the server waits for `size` body bytes.
    #[must_use]
    pub fn ready(size: u64) -> Self {
        Self::new(Code::READY, format!("Ready to receive {size} bytes"))
    }

    /// `352 <offset>`: a resumed upload goes on from `offset`; the server waits for the rest.
    #[must_use]
    pub fn resuming(offset: u64, size: u64) -> Self {
        let rest = size.saturating_sub(offset);
        Self::new(
            Code::RESUMING,
            format!("{offset} Send the {rest} bytes from byte {offset} on, then the file's MD5"),
        )
    }

    /// `214 <count> <offset> <id> <name>`, followed by `count` bytes.
    #[must_use]
    pub fn rest_follows(header: &RestHeader) -> Self {
        Self::new(Code::REST_FOLLOWS, header.encode())
    }

    /// `226 <id> Upload complete`.
    #[must_use]
    pub fn stored(id: &FileId) -> Self {
        Self::new(Code::STORED, format!("{id} Upload complete"))
    }

    /// `210`, followed by `header.count` listing lines.
    #[must_use]
    pub fn listing(header: &ListingHeader) -> Self {
        Self::new(Code::LISTING, header.encode())
    }

    /// `213 <size> <id> <name>`, followed by `size` bytes.
    #[must_use]
    pub fn file_follows(header: &DownloadHeader) -> Self {
        Self::new(Code::FILE_FOLLOWS, header.encode())
    }

    /// `250` after a rename.
    #[must_use]
    pub fn renamed(from: &str, to: &str) -> Self {
        Self::new(Code::DONE, format!("Renamed {from} to {to}"))
    }

    /// `250` after a delete.
    #[must_use]
    pub fn deleted(name: &str) -> Self {
        Self::new(Code::DONE, format!("Deleted {name}"))
    }

    /// `211`, followed by [`HELP_LINES`].
    #[must_use]
    pub fn help() -> Self {
        Self::new(Code::HELP, format!("{} lines", HELP_LINES.len()))
    }

    /// `408`: nothing came from the client for `secs` seconds.
    #[must_use]
    pub fn idle(secs: u64) -> Self {
        Self::new(
            Code::IDLE_TIMEOUT,
            format!("Idle for {secs}s; closing the connection"),
        )
    }

    /// `408`: the client did not read its replies for `secs` seconds.
    #[must_use]
    pub fn not_reading(secs: u64) -> Self {
        Self::new(
            Code::IDLE_TIMEOUT,
            format!("Replies not read for {secs}s; closing the connection"),
        )
    }

    /// `414`: a line over `max` bytes; the server closes the connection.
    #[must_use]
    pub fn line_too_long(max: usize) -> Self {
        Self::new(
            Code::LINE_TOO_LONG,
            format!("Line longer than {max} bytes; closing the connection"),
        )
    }

    /// `334`: send the password of the user just named.
    #[must_use]
    pub fn send_pass() -> Self {
        Self::new(Code::SEND_PASS, "Send PASS")
    }

    /// `230 <principal> <perms> Logged in`.
    #[must_use]
    pub fn logged_in(principal: &str, perms: &str) -> Self {
        Self::new(Code::LOGGED_IN, format!("{principal} {perms} Logged in"))
    }

    /// `530`: a failed login, the same words whatever was wrong.
    #[must_use]
    pub fn login_incorrect() -> Self {
        Self::new(Code::NOT_LOGGED_IN, "Login incorrect")
    }

    /// `530`: a command before logging in.
    #[must_use]
    pub fn log_in_first() -> Self {
        Self::new(
            Code::NOT_LOGGED_IN,
            "Log in first (USER/PASS, TOKEN, or barge pair)",
        )
    }

    /// `530`: the session's login was removed, revoked or changed on the server since it was
    /// made (`barge user remove`, `barge token revoke`, a new password).
    #[must_use]
    pub fn login_revoked() -> Self {
        Self::new(
            Code::NOT_LOGGED_IN,
            "Your login was removed or changed on the server; log in again",
        )
    }

    /// `250`: a client's report of an MD5 mismatch was counted.
    #[must_use]
    pub fn mismatch_noted() -> Self {
        Self::new(Code::DONE, "Noted: a checksum mismatch was reported")
    }

    /// `400`: `USER` or `TOKEN` on a session that is logged in.
    #[must_use]
    pub fn already_logged_in() -> Self {
        Self::new(
            Code::BAD_REQUEST,
            "Already logged in; reconnect to change user",
        )
    }

    /// `400`: `PASS` that does not follow `USER`.
    #[must_use]
    pub fn pass_without_user() -> Self {
        Self::new(Code::BAD_REQUEST, "Send USER first")
    }

    /// `403`: the command is beyond the logged-in user's permissions.
    #[must_use]
    pub fn not_allowed() -> Self {
        Self::new(Code::FORBIDDEN, "Not allowed for this user")
    }

    /// `403`: a login or pairing on a connection that is neither TLS nor loopback.
    #[must_use]
    pub fn login_needs_tls() -> Self {
        Self::new(
            Code::FORBIDDEN,
            "Logins and pairing need TLS on this server (it runs --plain on a network address)",
        )
    }

    /// `403`: a pairing on a plain connection, which has no TLS exporter value to bind it to
    /// (whatever the address: a plain loopback server accepts logins, not pairings).
    #[must_use]
    pub fn pairing_needs_tls() -> Self {
        Self::new(
            Code::FORBIDDEN,
            "Pairing needs TLS: a plain connection has nothing to bind it to",
        )
    }

    /// `336 <B> <server-mac> Send your confirmation`.
    #[must_use]
    pub fn pair_continue(message: &str, confirm: &str) -> Self {
        Self::new(
            Code::PAIR_CONTINUE,
            format!("{message} {confirm} Send your confirmation"),
        )
    }

    /// `435 Pairing failed`, with what can be said without helping a guesser.
    #[must_use]
    pub fn pair_failed(why: &str) -> Self {
        Self::new(Code::PAIR_FAILED, format!("Pairing failed: {why}"))
    }

    /// `236 <token> Paired as <principal>`; the session is now logged in as that token.
    #[must_use]
    pub fn paired(token: &str, principal: &str) -> Self {
        Self::new(Code::PAIRED, format!("{token} Paired as {principal}"))
    }

    /// The answer to a line that could not be decoded: `422` for a name that breaks the rules,
    /// `400` for anything else.
    #[must_use]
    pub fn for_decode_error(e: &DecodeError) -> Self {
        let code = match e {
            DecodeError::Name(_) | DecodeError::PutName { .. } => Code::INVALID_NAME,
            _ => Code::BAD_REQUEST,
        };
        Self::new(code, capitalise(&e.to_string()))
    }
}

/// `s` with its first letter in upper case: error messages are lower case inside the program
/// and start a sentence on the wire.
#[must_use]
pub fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_count_matches_its_lines_and_names_every_alias() {
        let h = Reply::help();
        assert_eq!(ListingHeader::decode(&h.text).unwrap().count, 11);
        let all = HELP_LINES.join("\n");
        for alias in [
            "LIST,",
            "LIST FILES",
            "GET",
            "PUT",
            "CHANGE",
            "MV",
            "RM",
            "RESUME",
            "DOWNLOAD_FROM",
            "BYE",
            "QUIT",
            "EXIT",
            "USER",
            "PASS",
            "TOKEN",
        ] {
            assert!(all.contains(alias), "{alias}");
        }
        assert!(HELP_LINES.iter().all(|l| !l.contains('\n') && l.is_ascii()));
    }

    #[test]
    fn data_replies_round_trip_through_their_decoders() {
        let id = FileId([0xab; 16]);
        let stored = Reply::stored(&id);
        assert_eq!(stored.code, Code::STORED);
        assert_eq!(stored.text.split(' ').next(), Some(id.to_string().as_str()));
        let listing = Reply::listing(&ListingHeader {
            count: 3,
            pending: 2,
        });
        assert_eq!(
            ListingHeader::decode(&listing.text).unwrap(),
            ListingHeader {
                count: 3,
                pending: 2
            }
        );
        let line = {
            let mut out = Vec::new();
            Reply::greeting().encode_into(&mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(line, "220 barge/1 ready\n");
    }

    #[test]
    fn decode_errors_get_422_for_names_and_400_otherwise() {
        let e = crate::protocol::Request::decode(b"DOWNLOAD ../x").unwrap_err();
        assert_eq!(Reply::for_decode_error(&e).code, Code::INVALID_NAME);
        let e = crate::protocol::Request::decode(b"FROB").unwrap_err();
        let r = Reply::for_decode_error(&e);
        assert_eq!(r.code, Code::BAD_REQUEST);
        assert!(r.text.starts_with("Unknown command"), "{}", r.text);
    }
}
