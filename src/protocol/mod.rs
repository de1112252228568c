//! The barge wire protocol as typed values: requests, replies and the values they carry.
//!
//! Everything here works on byte slices and strings only; there are no sockets and no files, so
//! it can be tested and fuzzed on its own. Reading lines off a stream (with limits and timeouts)
//! is [`crate::transport`]'s job. The format itself is specified in `PROTOCOL.md`; the comments
//! here refer to its sections rather than restate it.

mod dialogue;
mod login;
mod reply;
mod request;
mod value;

pub use dialogue::{HELP_LINES, Prompt, capitalise};
pub use login::{Secret, redact};
pub use reply::{Code, Reply};
pub use request::{DecodeError, FileRef, RenameArgs, Request};
pub use value::{
    DownloadHeader, FileId, ListingEntry, ListingHeader, RestHeader, UploadSpec, ValueError,
    parse_size,
};

/// The protocol name and version announced in the greeting (`220 barge/1 ready`).
pub const PROTOCOL_VERSION: &str = "barge/1";

/// The longest line a client may send, line ending included (`PROTOCOL.md` section 1).
pub const MAX_LINE_LEN: usize = 8192;
