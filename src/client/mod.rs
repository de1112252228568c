//! A typed async client for the barge protocol.
//!
//! [`Client`] speaks `PROTOCOL.md` over any `AsyncRead + AsyncWrite` stream ([`Client::connect`]
//! opens a TCP one). Files stream from and to disk in large chunks and are hashed as the bytes
//! pass; progress is reported through a callback taking [`Progress`] events. There is no
//! terminal code here: the CLI and the tests drive the same API.
//!
//! Everything a server sends is treated as untrusted: lines are bounded by the transport, counts
//! are never used to preallocate, names go through [`FileName::parse`], and a download is written
//! to a temporary file next to its target and renamed into place only once its MD5 matches.
//!
//! With `tracing` enabled at debug level for the target `barge::wire`, the exchange is logged
//! line by line (`> ` sent, `< ` received), escaped for a terminal.

mod body;
mod error;
mod get_many;
mod pipeline;
mod split;

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

pub use error::ClientError;
pub use pipeline::PutItem;

use crate::name::{FileName, escape};
use crate::protocol::{
    Code, DownloadHeader, FileId, FileRef, ListingEntry, ListingHeader, PROTOCOL_VERSION,
    RenameArgs, Reply, Request, UploadSpec,
};
use crate::transport::{Connection, TransportError};
use split::{ReadSide, WriteSide};

/// The port a server listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 65432;

/// How long the client waits for the server at any one step (a reply, or room to send) before
/// giving up. It bounds stalls, not whole transfers: a large file may take as long as it needs as
/// long as bytes keep moving. It matches the server's own body stall limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The most listing lines accepted in one `210` reply. A count is a promise from the server, not
/// a fact: past this, the reply is refused rather than trusted with unbounded memory.
pub const MAX_LISTING_ENTRIES: u64 = 1_000_000;

/// The most listing text accepted in one `210` reply, in bytes: with the entry limit, this
/// bounds the memory a server can make a listing take.
pub const MAX_LISTING_BYTES: usize = 256 << 20;

/// The most lines accepted in one `211` (help) reply.
const MAX_HELP_LINES: u64 = 1_000;

/// The size of the chunks files are read and written in. Large chunks keep the per-chunk costs
/// (a system call, a trip to the blocking pool) small next to the copying.
const CHUNK: usize = 256 * 1024;

/// How far a transfer has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes sent or received so far.
    pub done: u64,
    /// Bytes in the whole transfer.
    pub total: u64,
}

/// The server's list of files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// The files, in the server's order (by name).
    pub entries: Vec<ListingEntry>,
    /// How many more files the server is still hashing, when its reply said so.
    pub pending: Option<u64>,
}

/// An upload the server stored and whose MD5 matches ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The name it is stored under.
    pub name: FileName,
    /// Its id (the MD5 both sides computed).
    pub id: FileId,
    /// Its size in bytes.
    pub size: u64,
}

/// A download that was verified and moved into place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    /// The file's name on the server.
    pub name: FileName,
    /// Its id, which the received bytes hash to.
    pub id: FileId,
    /// Its size in bytes.
    pub size: u64,
    /// Where it was saved.
    pub path: PathBuf,
}

/// Where a download goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Into this folder, under the last component of the server's name for the file.
    Dir(PathBuf),
    /// Exactly this path.
    File(PathBuf),
}

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
    greeting: Reply,
    /// Reused for every chunk of every transfer.
    chunk: Vec<u8>,
    /// Set while a request's reply (and body) has not been read in full. Still set when the next
    /// call starts means the previous one was cancelled halfway.
    in_exchange: bool,
    /// Why the connection can no longer be used.
    broken: Option<String>,
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
        let failed = |source| ClientError::Connect {
            addr: addr.to_owned(),
            source,
        };
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(failed(e)),
            Err(_) => return Err(failed(std::io::ErrorKind::TimedOut.into())),
        };
        // Requests are small and each waits for its reply: do not let Nagle hold them back.
        stream.set_nodelay(true).map_err(failed)?;
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
            greeting: Reply::new(Code::GREETING, ""),
            chunk: vec![0; CHUNK],
            in_exchange: false,
            broken: None,
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
        let count = ListingHeader::decode(&reply.text)
            .map_err(|e| protocol("listing header", &e))?
            .count;
        if count > MAX_LISTING_ENTRIES {
            return Err(ClientError::Protocol(format!(
                "the server announced {count} files; this client accepts at most {MAX_LISTING_ENTRIES}"
            )));
        }
        // Not `with_capacity(count)`: the count is the server's word.
        let mut entries = Vec::new();
        let mut bytes = 0;
        for _ in 0..count {
            let line = recv_line(&mut self.rx, self.timeout).await?;
            bytes += line.len();
            if bytes > MAX_LISTING_BYTES {
                return Err(ClientError::Protocol(format!(
                    "the listing is over {MAX_LISTING_BYTES} bytes; this client accepts no more"
                )));
            }
            entries.push(ListingEntry::decode(line).map_err(|e| protocol("listing line", &e))?);
        }
        self.in_exchange = false;
        Ok(Listing {
            entries,
            pending: pending_count(&reply.text),
        })
    }

    /// Uploads the local file at `path` under `name` (`UPLOAD name;size`), streaming it from
    /// disk and hashing it on the way, then compares the server's MD5 with ours.
    ///
    /// `progress` is called as bytes are sent.
    ///
    /// # Errors
    /// A refusal (the name exists, the file is too large...), [`ClientError::ChecksumMismatch`]
    /// when the server stored something else (the bad copy is then deleted if possible), a
    /// local I/O error, or a transport error.
    pub async fn upload(
        &mut self,
        path: &Path,
        name: &FileName,
        mut progress: impl FnMut(Progress),
    ) -> Result<Verified, ClientError> {
        self.usable()?;
        let result = self.upload_inner(path, name, &mut progress).await;
        let result = self.settle(result);
        if let Err(ClientError::ChecksumMismatch { .. }) = result {
            self.delete_bad_copy(name).await;
        }
        result
    }

    async fn upload_inner<P: FnMut(Progress)>(
        &mut self,
        path: &Path,
        name: &FileName,
        progress: &mut P,
    ) -> Result<Verified, ClientError> {
        let (file, size) = open_regular(path).await?;
        let reply = self
            .request(&Request::Upload(Some(UploadSpec {
                name: name.clone(),
                size,
            })))
            .await?;
        if reply.code != Code::READY {
            return Err(self.unexpected(reply));
        }
        trace_body(size);
        let mut source = body::Source::spawn(file.into_std().await, size);
        let mut done = 0;
        progress(Progress { done, total: size });
        while done < size {
            let chunk = match source.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => return Err(ClientError::io(path)(e)),
                // The size was announced already; the body can no longer be completed.
                None => {
                    return Err(ClientError::FileChanged {
                        path: path.to_owned(),
                    });
                }
            };
            self.tx.write_body(&chunk, self.timeout).await?;
            done += chunk.len() as u64;
            source.recycle(chunk);
            progress(Progress { done, total: size });
        }
        self.tx.flush(self.timeout).await?;
        let sent = source.finish().await.map_err(ClientError::io(path))?;
        let reply = recv_reply(&mut self.rx, self.timeout).await?;
        if reply.code != Code::STORED {
            return Err(self.unexpected(reply));
        }
        self.in_exchange = false;
        verify_stored(&reply, sent, name, size)
    }

    /// Best effort: removes a copy the server stored with the wrong content.
    async fn delete_bad_copy(&mut self, name: &FileName) {
        // A name that reads as an id would be taken as an id ("ids win"), and could delete
        // another file; leave such a copy alone.
        if FileId::parse(name.as_str()).is_err() {
            let _ = self
                .delete(&FileRef {
                    id: None,
                    name: Some(name.clone()),
                })
                .await;
        }
    }

    /// Downloads a file by id or name (`DOWNLOAD`), writing it to a temporary file next to its
    /// target while hashing it, and moving it into place only if its MD5 equals its id.
    ///
    /// An existing file is never replaced unless `overwrite` is set. `progress` is called as
    /// bytes arrive.
    ///
    /// # Errors
    /// A refusal (no such file...), [`ClientError::AlreadyExists`],
    /// [`ClientError::ChecksumMismatch`] (nothing is kept), [`ClientError::Protocol`] for a
    /// malformed or hostile `213` header, a local I/O error, or a transport error.
    pub async fn download(
        &mut self,
        file: &FileRef,
        dest: &Destination,
        overwrite: bool,
        mut progress: impl FnMut(Progress),
    ) -> Result<Downloaded, ClientError> {
        self.usable()?;
        let result = self
            .download_inner(file, dest, overwrite, &mut progress)
            .await;
        self.settle(result)
    }

    async fn download_inner<P: FnMut(Progress)>(
        &mut self,
        file: &FileRef,
        dest: &Destination,
        overwrite: bool,
        progress: &mut P,
    ) -> Result<Downloaded, ClientError> {
        // Refuse before asking when the target is already known.
        if let Some(path) = known_target(file, dest)? {
            if !overwrite && exists(&path).await {
                return Err(ClientError::AlreadyExists { path });
            }
        }

        let reply = self.request(&Request::Download(Some(file.clone()))).await?;
        if reply.code != Code::FILE_FOLLOWS {
            return Err(self.unexpected(reply));
        }
        let header = check_header(file, &reply)?;
        trace_body(header.size);
        let (rx, timeout) = (&mut self.rx, self.timeout);
        let saved = async {
            let path = target_or_skip(rx, timeout, file, dest, &header).await?;
            save_body(rx, timeout, &header, &path, overwrite, progress).await?;
            Ok::<_, ClientError>(path)
        }
        .await;
        if !matches!(&saved, Err(e) if e.is_connection_lost()) {
            // The body was read in full: the connection is in step whatever happened locally.
            self.in_exchange = false;
        }
        let path = saved?;
        Ok(Downloaded {
            name: header.name,
            id: header.id,
            size: header.size,
            path,
        })
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

    /// Sends a one-line request and expects `ok`.
    async fn simple(&mut self, request: &Request, ok: Code) -> Result<Reply, ClientError> {
        self.usable()?;
        let result = match self.request(request).await {
            Ok(reply) if reply.code == ok => {
                self.in_exchange = false;
                Ok(reply)
            }
            Ok(reply) => Err(self.unexpected(reply)),
            Err(e) => Err(e),
        };
        self.settle(result)
    }

    /// Sends `request` and reads the first reply line.
    async fn request(&mut self, request: &Request) -> Result<Reply, ClientError> {
        let line = request.encode();
        trace_sent(&line);
        self.in_exchange = true;
        self.tx.queue_bytes(line.as_bytes());
        self.tx.flush(self.timeout).await?;
        recv_reply(&mut self.rx, self.timeout).await
    }

    /// The error for a reply that is not the one expected: a refusal for `4xx`/`5xx` (which
    /// ends the exchange), a protocol error otherwise.
    fn unexpected(&mut self, reply: Reply) -> ClientError {
        if reply.code.is_error() {
            self.in_exchange = false;
        }
        refusal(reply)
    }

    /// Fails when the connection can no longer be used.
    fn usable(&mut self) -> Result<(), ClientError> {
        if self.in_exchange && self.broken.is_none() {
            self.broken = Some("an earlier request was interrupted halfway".to_owned());
        }
        match &self.broken {
            Some(why) => Err(ClientError::Disconnected(why.clone())),
            None => Ok(()),
        }
    }

    /// Records whether an error left the connection unusable.
    fn settle<T>(&mut self, result: Result<T, ClientError>) -> Result<T, ClientError> {
        if let Err(e) = &result {
            if (e.is_connection_lost() || self.in_exchange) && self.broken.is_none() {
                self.broken = Some(e.to_string());
            }
        }
        result
    }
}

/// Reads one line and decodes it as a status line.
async fn recv_reply<R>(
    rx: &mut Connection<R>,
    timeout: Option<Duration>,
) -> Result<Reply, ClientError>
where
    R: AsyncRead + AsyncWrite + Unpin,
{
    let line = recv_line(rx, timeout).await?;
    Reply::decode(line)
        .map_err(|_| ClientError::Protocol(format!("malformed reply {:?}", escape(line))))
}

/// Reads one line of text from the server (without its line ending).
async fn recv_line<R>(
    rx: &mut Connection<R>,
    timeout: Option<Duration>,
) -> Result<&str, ClientError>
where
    R: AsyncRead + AsyncWrite + Unpin,
{
    let Some(line) = rx.read_line(timeout).await? else {
        return Err(ClientError::Disconnected(
            "the server closed the connection".to_owned(),
        ));
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).map_err(|_| {
        ClientError::Protocol("the server sent a line that is not UTF-8".to_owned())
    })?;
    tracing::debug!(target: "barge::wire", "< {}", escape(line));
    Ok(line)
}

fn trace_sent(line: &str) {
    tracing::debug!(target: "barge::wire", "> {}", escape(line.trim_end_matches('\n')));
}

fn trace_body(size: u64) {
    tracing::debug!(target: "barge::wire", "  <{size} bytes>");
}

fn protocol(what: &str, e: &crate::protocol::ValueError) -> ClientError {
    ClientError::Protocol(format!("bad {what}: {}", escape(&e.to_string())))
}

/// Checks a `226` reply against what was sent.
fn verify_stored(
    reply: &Reply,
    ours: FileId,
    name: &FileName,
    size: u64,
) -> Result<Verified, ClientError> {
    let theirs =
        FileId::parse(reply.first_word()).map_err(|e| protocol("upload reply", &e.into()))?;
    if theirs == ours {
        Ok(Verified {
            name: name.clone(),
            id: ours,
            size,
        })
    } else {
        Err(ClientError::ChecksumMismatch {
            expected: ours,
            actual: theirs,
        })
    }
}

/// The pending count in a `210` text such as `12 files (3 more being indexed)`, if any. This
/// reads the human part of the reply, so it is best effort by nature.
fn pending_count(text: &str) -> Option<u64> {
    let (_, after) = text.split_once('(')?;
    let digits = after.split(' ').next()?;
    crate::protocol::parse_size(digits).ok()
}

/// The last component of a server name, as a path that cannot leave the folder it is joined to.
fn leaf(name: &FileName) -> Result<&Path, ClientError> {
    let leaf = Path::new(name.split_parent().1);
    // `FileName` already rules out `..`, separators and prefixes; check again against the
    // platform's own idea of a path, since this is the line between the server and our disk.
    let mut parts = leaf.components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) => Ok(leaf),
        _ => Err(ClientError::Protocol(format!("unsafe file name {name}"))),
    }
}

async fn exists(path: &Path) -> bool {
    // `symlink_metadata`: a dangling symlink is still something we must not replace.
    tokio::fs::symlink_metadata(path).await.is_ok()
}

/// [`exists`], for code already on a blocking thread.
fn exists_now(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Where a download of `file` goes, when that is known before asking: an exact path, or a
/// folder and a name (an id only tells the name once the server answers).
fn known_target(file: &FileRef, dest: &Destination) -> Result<Option<PathBuf>, ClientError> {
    match (dest, &file.name, &file.id) {
        (Destination::File(path), _, _) => Ok(Some(path.clone())),
        (Destination::Dir(dir), Some(name), None) => Ok(Some(dir.join(leaf(name)?))),
        (Destination::Dir(_), _, _) => Ok(None),
    }
}

/// Where a download of `file` goes, once the server has said which file it is (`name`).
fn target(file: &FileRef, dest: &Destination, name: &FileName) -> Result<PathBuf, ClientError> {
    match dest {
        Destination::Dir(dir) => {
            let leaf = leaf(name)?;
            // A name the server chose (the user gave an id) must not quietly create a
            // dot-file such as `.bashrc` or `.profile` in the user's folder.
            let chosen_by_server = file.name.as_ref() != Some(name);
            if chosen_by_server && leaf.as_os_str().as_encoded_bytes().starts_with(b".") {
                return Err(ClientError::HiddenName {
                    name: name.to_string(),
                });
            }
            Ok(dir.join(leaf))
        }
        Destination::File(path) => Ok(path.clone()),
    }
}

/// [`target`], reading and dropping the body when the file is refused, so the connection
/// stays in step (unless the refusal is one that loses the connection anyway).
async fn target_or_skip<R>(
    rx: &mut Connection<R>,
    timeout: Option<Duration>,
    file: &FileRef,
    dest: &Destination,
    header: &DownloadHeader,
) -> Result<PathBuf, ClientError>
where
    R: AsyncRead + AsyncWrite + Unpin,
{
    match target(file, dest, &header.name) {
        Err(e) if !e.is_connection_lost() => {
            rx.discard_body(header.size, timeout).await?;
            Err(e)
        }
        result => result,
    }
}

/// Decodes a `213` header and checks that it answers what was asked: a hostile or confused
/// server must not be able to slip another file (under another name) into our folder.
fn check_header(file: &FileRef, reply: &Reply) -> Result<DownloadHeader, ClientError> {
    let header =
        DownloadHeader::decode(&reply.text).map_err(|e| protocol("download header", &e))?;
    // Text that reads as an id is taken as an id: the bytes must hash to it. (Otherwise a
    // server could answer with a file *named* like the id, verified against another id.)
    let answers = match file.id {
        Some(id) => header.id == id,
        None => file.name.as_ref() == Some(&header.name),
    };
    if !answers {
        return Err(ClientError::Protocol(format!(
            "asked for {} but the server sent {} ({})",
            escape(&file.as_str()),
            header.name,
            header.id
        )));
    }
    Ok(header)
}

/// The error for a reply that is not the one expected: a refusal for `4xx`/`5xx`, a protocol
/// error otherwise.
fn refusal(reply: Reply) -> ClientError {
    if reply.code.is_error() {
        ClientError::Refused {
            code: reply.code,
            text: reply.text,
        }
    } else {
        ClientError::Protocol(format!("unexpected reply {reply}"))
    }
}

/// Receives the body `header` announced into a temporary file next to `path`, and moves it
/// into place if its MD5 is the header's id (never replacing a file unless `overwrite`).
///
/// The body is always read in full, whatever happens on our side, unless the error is one that
/// loses the connection ([`ClientError::is_connection_lost`]): then the connection is out of step.
async fn save_body<R, P>(
    rx: &mut Connection<R>,
    timeout: Option<Duration>,
    header: &DownloadHeader,
    path: &Path,
    overwrite: bool,
    progress: &mut P,
) -> Result<(), ClientError>
where
    R: AsyncRead + AsyncWrite + Unpin,
    P: FnMut(Progress),
{
    if !overwrite && exists(path).await {
        rx.discard_body(header.size, timeout).await?;
        return Err(ClientError::AlreadyExists {
            path: path.to_owned(),
        });
    }
    let temp = match temp_file_for(path) {
        Ok(temp) => temp,
        Err(e) => {
            rx.discard_body(header.size, timeout).await?;
            return Err(e);
        }
    };
    if let Ok(st) = rustix::fs::fstatvfs(temp.as_file()) {
        let available = st.f_bavail.saturating_mul(st.f_frsize);
        if header.size > available {
            return Err(ClientError::InsufficientSpace {
                path: path.to_owned(),
                needed: header.size,
                available,
            });
        }
    }
    let actual = receive_body(
        rx,
        timeout,
        temp.as_file(),
        temp.path(),
        header.size,
        progress,
    )
    .await?;
    if actual != header.id {
        // Dropping `temp` deletes it: nothing unverified is kept.
        return Err(ClientError::ChecksumMismatch {
            expected: header.id,
            actual,
        });
    }
    persist(temp, path, overwrite).await
}

/// Reads a `size`-byte body into `file`, hashing it. A local error stops the writing but the
/// rest of the body is still read, so the connection stays in step.
async fn receive_body<R, P>(
    rx: &mut Connection<R>,
    timeout: Option<Duration>,
    file: &std::fs::File,
    path: &Path,
    size: u64,
    progress: &mut P,
) -> Result<FileId, ClientError>
where
    R: AsyncRead + AsyncWrite + Unpin,
    P: FnMut(Progress),
{
    let file = match file.try_clone() {
        Ok(file) => file,
        Err(e) => {
            rx.discard_body(size, timeout).await?;
            return Err(ClientError::io(path)(e));
        }
    };
    let mut sink = body::Sink::spawn(file);
    let mut done = 0;
    progress(Progress { done, total: size });
    while done < size {
        let mut buf = sink.buffer().await;
        let want = chunk_len(size - done, buf.len());
        let mut filled = 0;
        // Fill whole chunks: fewer, larger hand-offs to the hashing thread.
        while filled < want {
            filled += rx.read_body(&mut buf[filled..want], timeout).await?;
        }
        buf.truncate(filled);
        done += filled as u64;
        sink.push(buf).await;
        progress(Progress { done, total: size });
    }
    // Waits for the last write to reach the file; the data is not forced to disk, which is the
    // usual trade-off for a downloaded copy (a crash means downloading it again).
    let (id, written) = sink.finish().await;
    written.map_err(ClientError::io(path))?;
    Ok(id)
}

/// Opens a local file for upload, with its size.
async fn open_regular(path: &Path) -> Result<(tokio::fs::File, u64), ClientError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(ClientError::io(path))?;
    let meta = file.metadata().await.map_err(ClientError::io(path))?;
    if !meta.is_file() {
        return Err(ClientError::NotAFile {
            path: path.to_owned(),
        });
    }
    Ok((file, meta.len()))
}

/// Reads the next chunk of an upload: at most `left` bytes, at least one.
async fn read_chunk(
    file: &mut tokio::fs::File,
    path: &Path,
    chunk: &mut [u8],
    left: u64,
) -> Result<usize, ClientError> {
    let want = chunk_len(left, chunk.len());
    let n = file
        .read(&mut chunk[..want])
        .await
        .map_err(ClientError::io(path))?;
    if n == 0 {
        // The size was announced already; the body can no longer be completed.
        return Err(ClientError::FileChanged {
            path: path.to_owned(),
        });
    }
    Ok(n)
}

fn chunk_len(left: u64, max: usize) -> usize {
    usize::try_from(left).map_or(max, |left| left.min(max))
}

/// A temporary file in the target's folder, so the final rename never crosses filesystems.
fn temp_file_for(target: &Path) -> Result<tempfile::NamedTempFile, ClientError> {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".barge-").suffix(".part");
    #[cfg(unix)]
    {
        // The default (0600) would stick to the downloaded file; let the umask decide instead,
        // as for any other new file.
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir).map_err(ClientError::io(dir))
}

/// Moves a verified temporary file to its target.
async fn persist(
    temp: tempfile::NamedTempFile,
    target: &Path,
    overwrite: bool,
) -> Result<(), ClientError> {
    let to = target.to_owned();
    tokio::task::spawn_blocking(move || persist_now(temp, &to, overwrite))
        .await
        .map_err(|e| ClientError::io(target)(std::io::Error::other(e)))?
}

/// [`persist`], for code already on a blocking thread.
fn persist_now(
    temp: tempfile::NamedTempFile,
    target: &Path,
    overwrite: bool,
) -> Result<(), ClientError> {
    let result = if overwrite {
        temp.persist(target)
    } else {
        temp.persist_noclobber(target)
    };
    // On failure the temporary file comes back inside the error and is deleted with it.
    match result.map(drop).map_err(|e| e.error) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(ClientError::AlreadyExists {
                path: target.to_owned(),
            })
        }
        Err(e) => Err(ClientError::io(target)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn pending_counts() {
        assert_eq!(pending_count("12 files (3 more being indexed)"), Some(3));
        assert_eq!(pending_count("2 files"), None);
        assert_eq!(pending_count("0 No files available at the moment"), None);
        assert_eq!(pending_count("1 file (lots more)"), None);
    }

    #[test]
    fn leaves_stay_inside() -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(leaf(&FileName::parse("a/b/c.txt")?)?, Path::new("c.txt"));
        assert_eq!(leaf(&FileName::parse("x")?)?, Path::new("x"));
        Ok(())
    }

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
        assert!(matches!(r, Err(ClientError::Protocol(_))), "{r:?}");
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

    #[test]
    fn chunk_lengths() {
        assert_eq!(chunk_len(10, 4), 4);
        assert_eq!(chunk_len(3, 4), 3);
        assert_eq!(chunk_len(u64::MAX, 4), 4);
    }
}
