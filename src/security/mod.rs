//! Security building blocks: the server's identity, TLS, pinned server keys, users and tokens,
//! login throttling and pairing codes.
//!
//! Each submodule answers one threat and states it at its top. This module owns no policy about
//! *when* these pieces are used (which command needs a login, when the client asks the user): the
//! server, client and CLI decide that; the wire is in `PROTOCOL.md` sections 5.9 and 5.10.
//!
//! Everything that stores a secret on disk goes through the private `files` helpers, so that
//! every secret file is created with mode 0600, replaced atomically and refused when others can
//! read it.

mod files;
pub mod identity;
pub mod known_hosts;
pub mod logins;
pub mod pair;
pub mod throttle;
pub mod tls;
pub mod users;

pub use files::FileError;
