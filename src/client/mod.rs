//! A typed async client for the barge protocol.
//!
//! [`Client`] speaks `PROTOCOL.md` over any `AsyncRead + AsyncWrite` stream ([`Client::connect`]
//! opens a TCP one). Files stream from and to disk in large chunks and are hashed as the bytes
//! pass ([`crate::transfer`]); progress is reported through a callback taking [`Progress`]
//! events. There is no terminal code here: the CLI and the tests drive the same API.
//!
//! Everything a server sends is treated as untrusted: lines are bounded by the transport, counts
//! are never used to preallocate, names go through [`FileName::parse`], and a download is written
//! to a temporary file next to its target and renamed into place only once its MD5 matches.
//!
//! With `tracing` enabled at debug level for the target `barge::wire`, the exchange is logged
//! line by line (`> ` sent, `< ` received), escaped for a terminal.
//!
//! This file holds the connection and the one-line commands; the rest is split by job:
//! [`exchange`] (request and reply, staying in step), `upload`, `download`, `put_many`,
//! `get_many`, `local` (temporary files, targets, leaf checks), `types`, and two public helpers
//! with no network I/O: [`tree`] (folders: walking, placing, local ids) and [`glob`]
//! (wildcards over server names).

mod download;
mod error;
mod exchange;
mod get_many;
pub mod glob;
mod hash_cache;
mod listing;
mod local;
mod login;
mod part_hash;
mod put_many;
mod resume;
mod secure;
mod split;
pub mod tree;
mod types;
mod upload;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

pub use error::ClientError;
pub use listing::{ListingLimit, ListingReader, decode_listing};
pub use login::{LOGIN_WAIT, LoggedIn, Paired};
pub use put_many::PutItem;
pub use resume::RESUME_MIN;
pub use secure::{AnyStream, Duplex, Security};
pub use types::{Destination, Downloaded, Listing, Progress, Verified};

use crate::name::{FileName, escape};
use crate::protocol::{Code, FileRef, ListingHeader, PROTOCOL_VERSION, RenameArgs, Reply, Request};
use crate::transport::{Connection, TransportError};
use exchange::{protocol, recv_line, recv_reply};
use split::{ReadSide, WriteSide};

/// The port a server listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 65432;

/// How long the client waits for the server at any one step (a reply, or room to send) before
/// giving up. It bounds stalls, not whole transfers: a large file may take as long as it needs as
/// long as bytes keep moving. It matches the server's own body stall limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The slowest a body or a listing may move, in bytes per second, judged over windows as long
/// as the stall timeout: a server trickling a byte just often enough to dodge the stall timeout
/// still cannot hold a transfer (or a command) open forever. The same default as the server's
/// `--min-rate`.
pub const DEFAULT_MIN_RATE: u64 = 1024;

/// The most lines accepted in one `211` (help) reply.
const MAX_HELP_LINES: u64 = 1_000;

/// A connection to a barge server.
///
/// Requests are made one at a time (each method takes `&mut self`), except for
/// [`put_many`](Self::put_many) and [`get_many`](Self::get_many), which pipeline. After an error that leaves the connection out
/// of step (see [`ClientError::is_connection_lost`]), or after a call was cancelled halfway, every
/// further call fails with [`ClientError::Disconnected`]; connect again.
pub struct Client<S> {
    /// Replies and download bodies.
    rx: Connection<ReadSide<ReadHalf<S>>>,
    /// Requests and upload bodies.
    tx: Connection<WriteSide<WriteHalf<S>>>,
    timeout: Option<Duration>,
    /// The minimum body and listing rate ([`DEFAULT_MIN_RATE`]); 0 turns it off.
    min_rate: u64,
    /// The largest listing accepted.
    listing_limit: ListingLimit,
    greeting: Reply,
    /// Set while a request's reply (and body) has not been read in full. Still set when the next
    /// call starts means the previous one was cancelled halfway.
    in_exchange: bool,
    /// Why the connection can no longer be used.
    broken: Option<String>,
    /// The TLS session's exporter value for pairing; `None` on a plain connection.
    pair_binding: Option<[u8; 32]>,
    /// Resume uploads and downloads ([`set_resume`](Self::set_resume)).
    resume: bool,
}

impl<S> std::fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("greeting", &self.greeting)
            .field("timeout", &self.timeout)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Client<TcpStream> {
    /// Connects over TCP to `addr` (`host:port`), and reads the server's greeting.
    ///
    /// `timeout` bounds the connection attempt and the wait for the greeting, and becomes the
    /// stall timeout of every later step (see [`DEFAULT_TIMEOUT`]).
    ///
    /// # Errors
    /// [`ClientError::Connect`] when no connection could be made, [`ClientError::Busy`] when the
    /// server answers `503`, or what [`Client::handshake`] returns.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self, ClientError> {
        let stream = secure::tcp_connect(addr, timeout).await?;
        Self::handshake(stream, Some(timeout)).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Starts a session on an open stream: reads and checks the greeting.
    ///
    /// # Errors
    /// [`ClientError::Busy`] on a `503` greeting, [`ClientError::Protocol`] when the stream does
    /// not start with a barge greeting, or a transport error (including a timeout).
    pub async fn handshake(stream: S, timeout: Option<Duration>) -> Result<Self, ClientError> {
        let (r, w) = tokio::io::split(stream);
        let mut client = Self {
            rx: Connection::new(ReadSide(r)),
            tx: Connection::new(WriteSide(w)),
            timeout,
            min_rate: DEFAULT_MIN_RATE,
            listing_limit: ListingLimit::DEFAULT,
            greeting: Reply::new(Code::GREETING, ""),
            in_exchange: false,
            broken: None,
            pair_binding: None,
            resume: false,
        };
        let reply = recv_reply(&mut client.rx, timeout).await?;
        match reply.code {
            Code::GREETING if reply.first_word().starts_with("barge/") => {}
            Code::UNAVAILABLE => return Err(ClientError::Busy { text: reply.text }),
            _ => {
                return Err(ClientError::Protocol(format!(
                    "not a barge server: it said {reply}"
                )));
            }
        }
        client.greeting = reply;
        Ok(client)
    }

    /// The server's greeting, for example `220 barge/1 ready`.
    #[must_use]
    pub fn greeting(&self) -> &Reply {
        &self.greeting
    }

    /// Whether the server speaks the protocol version this client was written for.
    #[must_use]
    pub fn same_version(&self) -> bool {
        self.greeting.first_word() == PROTOCOL_VERSION
    }

    /// Changes the stall timeout of every later step (`None`: wait forever).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Changes the minimum rate (bytes per second, 0: none) every later body and listing must
    /// keep over each window of the stall timeout ([`DEFAULT_MIN_RATE`]).
    pub fn set_min_rate(&mut self, bytes_per_second: u64) {
        self.min_rate = bytes_per_second;
    }

    /// Resume transfers (off by default): [`upload`](Self::upload) of a file of at least
    /// [`RESUME_MIN`] bytes uses `RESUME`, continuing what the server kept of an interrupted
    /// try, and [`download`](Self::download) to a target known before asking keeps a `.part`
    /// file and continues it with `DOWNLOAD_FROM` (`PROTOCOL.md` sections 5.11 and 5.12).
    pub fn set_resume(&mut self, on: bool) {
        self.resume = on;
    }

    /// Whether uploads and downloads resume ([`set_resume`](Self::set_resume)).
    #[must_use]
    pub fn resumes(&self) -> bool {
        self.resume
    }

    /// Changes the largest listing accepted ([`ListingLimit::DEFAULT`]).
    pub fn set_listing_limit(&mut self, limit: ListingLimit) {
        self.listing_limit = limit;
    }

    /// Whether the connection can still be used for another request.
    #[must_use]
    pub fn is_usable(&self) -> bool {
        self.broken.is_none() && !self.in_exchange
    }

    /// Checks, without waiting, that the server has not hung up on an idle connection (after
    /// its idle timeout, a shutdown, or a restart). Worth calling before a request after the
    /// connection sat idle, to reconnect instead of failing.
    ///
    /// # Errors
    /// [`ClientError::Disconnected`] when the connection is no longer usable, with the server's
    /// parting words if it sent any.
    pub async fn check_idle(&mut self) -> Result<(), ClientError> {
        self.usable()?;
        // A zero timeout still polls the read once: it sees what has already arrived.
        let why = match self.rx.read_line(Some(Duration::ZERO)).await {
            Err(TransportError::TimedOut(_)) => return Ok(()),
            Ok(None) => "the server closed the connection".to_owned(),
            Ok(Some(line)) => {
                let line = String::from_utf8_lossy(line);
                format!(
                    "the server closed the connection: {}",
                    escape(line.trim_end())
                )
            }
            Err(e) => e.to_string(),
        };
        self.broken = Some(why.clone());
        Err(ClientError::Disconnected(why))
    }

    /// Lists the files on the server (`LIST_FILES`).
    ///
    /// # Errors
    /// A refusal, a malformed listing (including a name that breaks the naming rules), or a
    /// transport error.
    pub async fn list(&mut self) -> Result<Listing, ClientError> {
        self.usable()?;
        let result = self.list_inner().await;
        self.settle(result)
    }

    async fn list_inner(&mut self) -> Result<Listing, ClientError> {
        let reply = self.request(&Request::ListFiles).await?;
        if reply.code != Code::LISTING {
            return Err(self.unexpected(reply));
        }
        let mut reader = ListingReader::new(&reply.text, self.listing_limit)?;
        // The whole listing is bounded in time, not just each line: it may take the stall
        // timeout plus as long as its bytes need at the minimum rate, so a server trickling
        // lines just fast enough to dodge the per-line timeout still cannot hold it open.
        let start = tokio::time::Instant::now();
        let slack = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        while reader.remaining() > 0 {
            let allowed = (self.min_rate > 0 && self.timeout.is_some())
                .then(|| start + slack + Duration::from_secs(reader.bytes() / self.min_rate));
            let line = match allowed {
                None => recv_line(&mut self.rx, self.timeout).await?,
                Some(deadline) => {
                    tokio::time::timeout_at(deadline, recv_line(&mut self.rx, self.timeout))
                        .await
                        .map_err(|_| {
                            ClientError::Transport(TransportError::TimedOut(deadline - start))
                        })??
                }
            };
            reader.push(line)?;
        }
        self.in_exchange = false;
        reader.finish()
    }

    /// Renames a file on the server (`RENAME from<TAB>to`).
    ///
    /// # Errors
    /// A refusal (no such file, the new name exists...) or a transport error.
    pub async fn rename(&mut self, from: &FileRef, to: &FileName) -> Result<(), ClientError> {
        let request = Request::Rename(RenameArgs::Both(from.clone(), to.clone()));
        self.simple(&request, Code::DONE).await.map(drop)
    }

    /// Deletes a file on the server by id or name (`DELETE`).
    ///
    /// # Errors
    /// A refusal (no such file, an id shared by several files...) or a transport error.
    pub async fn delete(&mut self, file: &FileRef) -> Result<(), ClientError> {
        self.simple(&Request::Delete(Some(file.clone())), Code::DONE)
            .await
            .map(drop)
    }

    /// The server's own list of commands (`HELP`), one line per command.
    ///
    /// # Errors
    /// A malformed reply or a transport error.
    pub async fn help(&mut self) -> Result<Vec<String>, ClientError> {
        self.usable()?;
        let result = self.help_inner().await;
        self.settle(result)
    }

    async fn help_inner(&mut self) -> Result<Vec<String>, ClientError> {
        let reply = self.request(&Request::Help).await?;
        if reply.code != Code::HELP {
            return Err(self.unexpected(reply));
        }
        let count = ListingHeader::decode(&reply.text)
            .map_err(|e| protocol("help header", &e))?
            .count;
        if count > MAX_HELP_LINES {
            return Err(ClientError::Protocol(format!(
                "the server announced {count} lines of help"
            )));
        }
        let mut lines = Vec::new();
        for _ in 0..count {
            lines.push(recv_line(&mut self.rx, self.timeout).await?.to_owned());
        }
        self.in_exchange = false;
        Ok(lines)
    }

    /// Ends the session (`DISCONNECT`) and closes the connection.
    ///
    /// # Errors
    /// A transport error, or a reply other than `221`. The connection is closed either way.
    pub async fn disconnect(mut self) -> Result<(), ClientError> {
        self.usable()?;
        let result = match self.request(&Request::Disconnect).await {
            Ok(reply) if reply.code == Code::BYE => Ok(()),
            Ok(reply) => Err(self.unexpected(reply)),
            // The server may close without a word; the session is over all the same.
            Err(ClientError::Disconnected(_)) => Ok(()),
            Err(e) => Err(e),
        };
        self.tx.shutdown(self.timeout).await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client over an in-memory pipe whose other end is driven by `server`, which gets the
    /// pipe after the greeting was sent.
    async fn scripted<F, Fut>(server: F) -> Result<Client<tokio::io::DuplexStream>, ClientError>
    where
        F: FnOnce(tokio::io::DuplexStream) -> Fut + Send + 'static,
        Fut: Future<Output = std::io::Result<()>> + Send,
    {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            theirs.write_all(b"220 barge/1 ready\n").await?;
            server(theirs).await
        });
        Client::handshake(ours, Some(Duration::from_secs(5))).await
    }

    /// Reads one request line from the client's side of the pipe.
    async fn request_line(s: &mut tokio::io::DuplexStream) -> std::io::Result<String> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while s.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    /// The server may hold a login's reply for its failed-login delay (up to 30 s), longer
    /// than the stall timeout the CLI gives every other reply (10 s): the client waits for it,
    /// then goes back to its timeout.
    #[tokio::test(start_paused = true)]
    async fn a_login_reply_may_take_the_servers_failed_login_delay() -> Result<(), ClientError> {
        let mut client = scripted(|mut s| async move {
            assert_eq!(request_line(&mut s).await?, "USER alice");
            s.write_all(b"334 Password for alice\n").await?;
            assert_eq!(request_line(&mut s).await?, "PASS secret");
            tokio::time::sleep(Duration::from_secs(30)).await;
            s.write_all(b"230 alice get,put,modify Logged in\n").await?;
            assert_eq!(request_line(&mut s).await?, "LIST_FILES");
            // A LIST that does not answer within the stall timeout still times out.
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        })
        .await?;
        let stall = client.timeout;
        assert!(
            stall.is_some_and(|t| t < Duration::from_secs(30)),
            "{stall:?}"
        );
        let logged_in = client.login_password("alice", "secret").await?;
        assert_eq!(logged_in.principal, "alice");
        assert_eq!(client.timeout, stall);
        let listed = client.list().await;
        assert!(
            matches!(listed, Err(ClientError::Transport(_))),
            "{listed:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn an_absurd_listing_count_is_refused_without_reading_on() -> Result<(), ClientError> {
        let mut client = scripted(|mut s| async move {
            request_line(&mut s).await?;
            s.write_all(b"210 99999999999 files\n").await?;
            // Keep the pipe open: the client must not wait for these lines.
            std::future::pending::<()>().await;
            Ok(())
        })
        .await?;
        let r = client.list().await;
        assert!(
            matches!(
                r,
                Err(ClientError::ListingTooLarge {
                    files: 99_999_999_999,
                    limit: 4_000_000
                })
            ),
            "{r:?}"
        );
        assert!(!client.is_usable());
        Ok(())
    }

    #[tokio::test]
    async fn a_download_of_something_else_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let asked = "9e107d9d372bb6826bd81d3542a419d6";
        let mut client = scripted(|mut s| async move {
            request_line(&mut s).await?;
            s.write_all(b"213 3 d41d8cd98f00b204e9800998ecf8427e other.txt\nabc")
                .await?;
            Ok(())
        })
        .await?;
        let dir = tempfile::tempdir()?;
        let r = client
            .download(
                &FileRef::parse(asked)?,
                &Destination::Dir(dir.path().into()),
                false,
                |_| {},
            )
            .await;
        assert!(matches!(r, Err(ClientError::Protocol(_))), "{r:?}");
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
        Ok(())
    }

    #[tokio::test]
    async fn a_malformed_upload_reply_is_a_protocol_error() -> Result<(), Box<dyn std::error::Error>>
    {
        let mut client = scripted(|mut s| async move {
            request_line(&mut s).await?;
            s.write_all(b"350 Ready\n").await?;
            let mut body = [0u8; 5];
            s.read_exact(&mut body).await?;
            s.write_all(b"226 not-an-id Upload complete\n").await?;
            std::future::pending::<()>().await;
            Ok(())
        })
        .await?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a");
        std::fs::write(&path, b"hello")?;
        let r = client.upload(&path, &FileName::parse("a")?, |_| {}).await;
        assert!(matches!(r, Err(ClientError::Protocol(_))), "{r:?}");
        Ok(())
    }

    /// The client's futures can be spawned onto a multi-threaded runtime.
    #[test]
    fn futures_are_send() -> Result<(), Box<dyn std::error::Error>> {
        // Generic callbacks, not `dyn`: a future is `Send` exactly when its callback is.
        fn spawnable<T: Send>(_: &T) {}
        let dir = tempfile::tempdir()?;
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        rt.block_on(async {
            let (ours, _theirs) = tokio::io::duplex(64);
            // Never polled: only their types matter.
            let connect = Client::connect("127.0.0.1:9", Duration::from_secs(1));
            spawnable(&connect);
            let handshake = Client::handshake(ours, None);
            spawnable(&handshake);
        });
        let name = FileName::parse("x")?;
        let mut client: Option<Client<TcpStream>> = None;
        if let Some(c) = client.as_mut() {
            spawnable(&c.list());
            spawnable(&c.upload(dir.path(), &name, |_| {}));
            let dest = Destination::Dir(dir.path().into());
            spawnable(&c.download(&FileRef::parse("x")?, &dest, false, |_| {}));
            spawnable(&c.put_many(Vec::new(), |_, _| {}));
            spawnable(&c.get_many(Vec::new(), &dest, false, |_, _| {}));
        }
        Ok(())
    }
}
