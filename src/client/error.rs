//! The client's one error type.

use std::io;
use std::path::PathBuf;

use crate::name::escape;
use crate::protocol::{Code, FileId};
use crate::transport::TransportError;

/// Why a client operation failed.
///
/// Text that came from the server is stored as received and escaped when displayed, so a server
/// cannot smuggle terminal escape sequences into an error message. As the Rust API guidelines
/// advise, a message does not repeat its cause: walk [`std::error::Error::source`] for that.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be made (refused, unreachable, timed out, unknown host).
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address as given.
        addr: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The server presented another key than the one pinned for it: its identity changed, or
    /// someone is in the middle. Nothing of the protocol was sent.
    #[error("the server's identity changed: it presented {presented}{}", .pinned.map(|p| format!(", but {p} is pinned for it")).unwrap_or_default())]
    IdentityChanged {
        /// The pinned key, if there was one.
        pinned: Option<crate::security::identity::Fingerprint>,
        /// The key the server presented.
        presented: crate::security::identity::Fingerprint,
    },
    /// The two sides disagree on TLS: a plain server met a TLS client, or the reverse.
    #[error("{0}")]
    WrongMode(String),
    /// The TLS handshake failed for another reason.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The server answered the connection with `503` instead of a greeting (at its connection
    /// limit, or shutting down).
    #[error("the server is busy: {}", escape(.text))]
    Busy {
        /// The server's reply text.
        text: String,
    },
    /// The server refused the request with a `4xx` or `5xx` reply.
    #[error("the server refused: {code} {}", escape(.text))]
    Refused {
        /// The reply code.
        code: Code,
        /// The reply text.
        text: String,
    },
    /// The MD5 of the bytes differs between the two sides: the copy is not intact.
    #[error("verification failed: expected MD5 {expected}, got {actual}")]
    ChecksumMismatch {
        /// The id the content should have had (the server's id on download, ours on upload).
        expected: FileId,
        /// The id it had.
        actual: FileId,
    },
    /// The server sent something the protocol does not allow (a malformed reply, an unexpected
    /// code, a hostile file name). The connection is not used again.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server announced a listing of more files than this client accepts
    /// ([`ListingLimit`](super::ListingLimit)); its lines were not read.
    #[error(
        "the server lists {files} files, more than this client accepts ({limit}); raise the \
         limit with --max-listing N (or BARGE_MAX_LISTING)"
    )]
    ListingTooLarge {
        /// The count the server announced.
        files: u64,
        /// The client's limit.
        limit: u64,
    },
    /// The server closed the connection, or it is out of step after an earlier failure and
    /// cannot be used again; a new connection is needed.
    #[error("connection lost: {0}")]
    Disconnected(String),
    /// A pairing exchange failed on this side: a wrong code, or someone in the middle.
    #[error("{0}")]
    Pairing(String),
    /// Network I/O failed or timed out.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Reading or writing a local file failed.
    #[error("{}", .path.display())]
    Io {
        /// The local file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A local path to upload is not a regular file.
    #[error("{}: not a regular file", .path.display())]
    NotAFile {
        /// The local path.
        path: PathBuf,
    },
    /// A local path to upload is a folder (uploading a folder is asked for explicitly).
    #[error("{}: is a folder", .path.display())]
    IsAFolder {
        /// The local path.
        path: PathBuf,
    },
    /// A local path that must be a folder (to receive downloads) is something else.
    #[error("{}: not a folder", .path.display())]
    NotAFolder {
        /// The local path.
        path: PathBuf,
    },
    /// Asked for by id, the file came with a hidden name (`.bashrc`, say): the server, not the
    /// user, would have chosen a dot-file to create. The user must name the target (`-o`).
    #[error("the server calls this file {name}, a hidden name; give a path (-o) to save it")]
    HiddenName {
        /// The name the server gave.
        name: String,
    },
    /// A download announced more bytes than the target's disk has free. Its body is not read
    /// (a hostile server could announce an endless one), so the connection is given up.
    #[error("{}: {needed} bytes announced, only {available} free on that disk", .path.display())]
    InsufficientSpace {
        /// Where the file would have gone.
        path: PathBuf,
        /// The announced size.
        needed: u64,
        /// The free space.
        available: u64,
    },
    /// A local file to upload got shorter while it was being sent; the upload was abandoned.
    #[error("{}: the file changed while it was being sent", .path.display())]
    FileChanged {
        /// The local file.
        path: PathBuf,
    },
    /// The local download target exists and overwriting was not asked for.
    #[error("{}: already exists (not overwritten)", .path.display())]
    AlreadyExists {
        /// The existing local file.
        path: PathBuf,
    },
}

impl ClientError {
    /// Whether the connection can no longer be used: the caller must connect again before the
    /// next request.
    #[must_use]
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::IdentityChanged { .. }
            | Self::WrongMode(_)
            | Self::Tls(_)
            | Self::Busy { .. }
            | Self::Protocol(_)
            | Self::ListingTooLarge { .. }
            | Self::Disconnected(_)
            | Self::Transport(_)
            | Self::FileChanged { .. }
            | Self::InsufficientSpace { .. } => true,
            Self::Refused { code, .. } => closes_connection(*code),
            Self::ChecksumMismatch { .. }
            | Self::Io { .. }
            | Self::Pairing(_)
            | Self::NotAFile { .. }
            | Self::IsAFolder { .. }
            | Self::NotAFolder { .. }
            | Self::AlreadyExists { .. }
            | Self::HiddenName { .. } => false,
        }
    }

    /// Whether the server refused a name because a folder has it (`409 A folder named NAME
    /// already exists`, PROTOCOL.md section 5.2): removing it is no way out, another name is.
    #[must_use]
    pub fn is_folder_taken(&self) -> bool {
        matches!(self, Self::Refused { code, text }
            if *code == Code::CONFLICT && text.starts_with("A folder named "))
    }

    pub(super) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

/// Replies after which the server closes the connection (`PROTOCOL.md` section 3).
pub(super) fn closes_connection(code: Code) -> bool {
    matches!(
        code,
        Code::BYE | Code::IDLE_TIMEOUT | Code::LINE_TOO_LONG | Code::UNAVAILABLE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_clean_line() {
        let e = ClientError::Connect {
            addr: "127.0.0.1:65432".into(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        // The cause is the error's source, not part of its message (the CLI prints the chain).
        assert_eq!(e.to_string(), "cannot connect to 127.0.0.1:65432");
        assert!(std::error::Error::source(&e).is_some());
        let e = ClientError::Refused {
            code: Code::NOT_FOUND,
            text: "No such file \u{1b}[2J".into(),
        };
        assert_eq!(
            e.to_string(),
            "the server refused: 404 No such file \\u{1b}[2J"
        );
        assert!(!e.is_connection_lost());
        let e = ClientError::Refused {
            code: Code::UNAVAILABLE,
            text: "Server shutting down".into(),
        };
        assert!(e.is_connection_lost());
    }
}
