//! barge: verified file sharing on your own network.
//!
//! The crate is laid out as its architecture:
//! - [`name`]: the one check every file name from the network goes through;
//! - [`heap`]: keeping the memory malloc holds close to what the server uses;
//! - [`id`]: file ids (MD5s), the other plain value the store and the protocol share;
//! - [`md5_state`]: MD5 states saved to disk, so a resumed transfer does not hash its prefix again;
//! - [`protocol`]: typed requests and replies, with no I/O;
//! - [`transport`]: lines and bodies over any `AsyncRead + AsyncWrite` stream, with limits;
//! - [`store`]: where files live: a storage trait, its backends (the shared folder, memory), and
//!   the rules every backend is held to;
//! - [`server`]: the accept loop and the per-connection dialogue;
//! - [`transfer`]: the one pipeline moving file bodies between blocking I/O and a connection;
//! - [`client`]: a typed async client that reports progress as events;
//! - [`web`]: the web gateway: the same store for browsers and `curl`;
//! - [`discovery`]: announcing a server on the LAN and finding servers there (mDNS/DNS-SD).
//!
//! The wire format is specified in `PROTOCOL.md`.

pub mod client;
pub mod discovery;
pub mod heap;
pub mod id;
pub mod md5_state;
pub mod metrics;
pub mod name;
pub mod protocol;
pub mod security;
pub mod server;
pub mod store;
pub mod transfer;
pub mod transport;
pub mod web;
