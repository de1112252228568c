//! barge: verified file sharing on your own network.
//!
//! The crate is laid out as its architecture:
//! - [`name`]: the one check every file name from the network goes through;
//! - [`protocol`]: typed requests and replies, with no I/O;
//! - [`transport`]: lines and bodies over any `AsyncRead + AsyncWrite` stream, with limits;
//! - [`store`]: the only code that touches the shared folder;
//! - [`server`]: the accept loop and the per-connection dialogue;
//! - [`transfer`]: the one pipeline moving file bodies between blocking I/O and a connection;
//! - [`client`]: a typed async client that reports progress as events.
//!
//! The wire format is specified in `PROTOCOL.md`.

pub mod client;
pub mod name;
pub mod protocol;
pub mod security;
pub mod server;
pub mod store;
pub mod transfer;
pub mod transport;
