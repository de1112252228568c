//! A small barge server written by hand, with switches that make it misbehave, for testing the
//! library client against servers that lie. It keeps files in memory and answers in the
//! protocol's one-line forms only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use barge::protocol::{ListingHeader, RenameArgs, Reply, Request};
use md5::{Digest, Md5};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How the fake server lies.
#[derive(Clone, Debug, Default)]
pub(crate) struct Quirks {
    /// Answer every upload with this MD5 instead of the real one.
    pub(crate) upload_md5: Option<String>,
    /// Flip the first byte of every download body.
    pub(crate) corrupt_download: bool,
    /// Flip the first byte of the download body of this file only.
    pub(crate) corrupt_only: Option<String>,
    /// Announce this size in every `213` header (and send only the real bytes).
    pub(crate) download_size: Option<u64>,
    /// Announce this name in every `213` header.
    pub(crate) download_name: Option<String>,
    /// Add a listing line with this name.
    pub(crate) listing_name: Option<String>,
    /// Greet with `503` and close.
    pub(crate) busy: bool,
    /// Greet with this line instead.
    pub(crate) greeting: Option<String>,
    /// Answer this many commands, then close the connection instead of answering the next.
    pub(crate) close_after: Option<usize>,
    /// Right after the greeting, send this line and close (as after an idle timeout).
    pub(crate) hang_up: Option<String>,
    /// Answer a stored upload with this code instead of `226` (a `2xx` the client does not
    /// know, which it must read by its first digit).
    pub(crate) stored_code: Option<u16>,
    /// Send the greeting one byte at a time, this long apart.
    pub(crate) greeting_trickle: Option<std::time::Duration>,
    /// Send each line of a reply whole, this long after the one before.
    pub(crate) line_delay: Option<std::time::Duration>,
    /// Send download bodies one byte at a time, this long apart.
    pub(crate) body_trickle: Option<std::time::Duration>,
    /// Read upload bodies this many bytes at a time, this long apart.
    pub(crate) read_trickle: Option<(usize, std::time::Duration)>,
}

/// Writes `bytes`, one at a time `gap` apart when `gap` is set.
async fn trickle(
    s: &mut TcpStream,
    bytes: &[u8],
    gap: Option<std::time::Duration>,
) -> std::io::Result<()> {
    let Some(gap) = gap else {
        return s.write_all(bytes).await;
    };
    for b in bytes {
        s.write_all(std::slice::from_ref(b)).await?;
        tokio::time::sleep(gap).await;
    }
    Ok(())
}

/// Writes a reply, line by line `gap` apart when `gap` is set (a body, if any, goes whole).
async fn by_line(
    s: &mut TcpStream,
    bytes: &[u8],
    gap: Option<std::time::Duration>,
) -> std::io::Result<()> {
    let Some(gap) = gap else {
        return s.write_all(bytes).await;
    };
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        tokio::time::sleep(gap).await;
        s.write_all(line).await?;
    }
    Ok(())
}

pub(crate) type Files = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

/// A running fake server; it stops when the runtime that started it does.
pub(crate) struct FakeServer {
    pub(crate) addr: SocketAddr,
    pub(crate) files: Files,
}

impl FakeServer {
    /// `host:port`, as the client takes it.
    pub(crate) fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The stored content of `name`.
    pub(crate) fn file(&self, name: &str) -> Option<Vec<u8>> {
        self.files.lock().ok()?.get(name).cloned()
    }

    /// Whether a client reported a mismatch for `name` (`MISMATCH name`).
    pub(crate) fn mismatch_reported(&self, name: &str) -> bool {
        self.file(&format!("{MISMATCH_KEY}{name}")).is_some()
    }

    /// Stores a file directly.
    pub(crate) fn insert(&self, name: &str, data: &[u8]) {
        if let Ok(mut files) = self.files.lock() {
            files.insert(name.to_owned(), data.to_vec());
        }
    }
}

/// Where a `MISMATCH` report is kept among the files: a NUL makes it no valid file name.
const MISMATCH_KEY: &str = "\0mismatch:";

/// Starts a fake server on 127.0.0.1 (port chosen by the system) on the current runtime.
pub(crate) async fn start(quirks: Quirks) -> std::io::Result<FakeServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let files = Files::default();
    let shared = files.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // Each write goes out at once: with Nagle's algorithm a trickle would wait for
            // acknowledgements in real time while a paused clock runs ahead.
            let _ = stream.set_nodelay(true);
            let (files, quirks) = (shared.clone(), quirks.clone());
            tokio::spawn(async move {
                let _ = session(stream, files, quirks).await;
            });
        }
    });
    Ok(FakeServer { addr, files })
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn find(files: &BTreeMap<String, Vec<u8>>, arg: &str) -> Option<(String, Vec<u8>)> {
    files
        .iter()
        .find(|(name, data)| md5_hex(data) == arg.to_ascii_lowercase() || name.as_str() == arg)
        .map(|(n, d)| (n.clone(), d.clone()))
}

async fn session(stream: TcpStream, files: Files, quirks: Quirks) -> std::io::Result<()> {
    let mut s = BufReader::new(stream);
    if quirks.busy {
        s.get_mut()
            .write_all(format!("{}\n", Reply::busy()).as_bytes())
            .await?;
        return Ok(());
    }
    let greeting = quirks
        .greeting
        .clone()
        .unwrap_or_else(|| Reply::greeting().to_string());
    trickle(
        s.get_mut(),
        format!("{greeting}\n").as_bytes(),
        quirks.greeting_trickle,
    )
    .await?;
    if let Some(last) = &quirks.hang_up {
        s.get_mut()
            .write_all(format!("{last}\n").as_bytes())
            .await?;
        return Ok(());
    }
    let mut line = Vec::new();
    let mut served = 0;
    loop {
        line.clear();
        if s.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        served += 1;
        if quirks.close_after.is_some_and(|n| served > n) {
            return Ok(());
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line).to_vec();
        let mut out = Vec::new();
        let lock = || files.lock().map_err(|_| std::io::Error::other("poisoned"));
        match Request::decode(&text) {
            Ok(Request::ListFiles) => {
                let mut lines = Vec::new();
                for (name, data) in lock()?.iter() {
                    lines.push(format!("{};{name};{}", md5_hex(data), data.len()));
                }
                if let Some(evil) = &quirks.listing_name {
                    lines.push(format!("{};{evil};3", md5_hex(b"bad")));
                }
                let header = ListingHeader {
                    count: lines.len() as u64,
                    pending: 0,
                };
                out.extend(format!("{}\n", Reply::listing(&header)).bytes());
                for l in lines {
                    out.extend(l.bytes());
                    out.push(b'\n');
                }
            }
            Ok(Request::Upload(Some(spec))) | Ok(Request::Put(spec)) => {
                let put = text.starts_with(b"PUT");
                let exists = lock()?.contains_key(spec.name.as_str());
                if exists && !put {
                    out.extend(b"409 File exists\n");
                } else {
                    if !put {
                        s.get_mut()
                            .write_all(format!("{}\n", Reply::ready(spec.size)).as_bytes())
                            .await?;
                    }
                    let len = usize::try_from(spec.size).map_err(std::io::Error::other)?;
                    let mut body = vec![0u8; len];
                    match quirks.read_trickle {
                        None => s.read_exact(&mut body).await.map(drop)?,
                        Some((piece, gap)) => {
                            for part in body.chunks_mut(piece.max(1)) {
                                s.read_exact(part).await?;
                                tokio::time::sleep(gap).await;
                            }
                        }
                    }
                    if exists {
                        out.extend(b"409 File exists\n");
                    } else {
                        let id = quirks.upload_md5.clone().unwrap_or_else(|| md5_hex(&body));
                        lock()?.insert(spec.name.as_str().to_owned(), body);
                        let code = quirks.stored_code.unwrap_or(226);
                        out.extend(format!("{code} {id} Upload complete\n").bytes());
                    }
                }
            }
            Ok(Request::Download(Some(r))) => {
                let found = find(&*lock()?, &r.as_str());
                match found {
                    None => out.extend(b"404 No such file\n"),
                    Some((name, mut data)) => {
                        let id = md5_hex(&data);
                        let name = quirks.download_name.clone().unwrap_or(name);
                        if (quirks.corrupt_download || quirks.corrupt_only.as_ref() == Some(&name))
                            && let Some(b) = data.first_mut()
                        {
                            *b ^= 0xff;
                        }
                        let size = quirks.download_size.unwrap_or(data.len() as u64);
                        // Raw, not `Reply::file_follows`: the quirks may make the name hostile.
                        out.extend(format!("213 {size} {id} {name}\n").bytes());
                        if quirks.body_trickle.is_some() {
                            by_line(s.get_mut(), &out, quirks.line_delay).await?;
                            trickle(s.get_mut(), &data, quirks.body_trickle).await?;
                            continue;
                        }
                        out.extend(data);
                    }
                }
            }
            Ok(Request::Rename(RenameArgs::Both(from, to))) => {
                let mut files = lock()?;
                match find(&files, &from.as_str()) {
                    None => out.extend(b"404 No such file\n"),
                    Some(_) if files.contains_key(to.as_str()) => out.extend(b"409 Name exists\n"),
                    Some((name, data)) => {
                        files.remove(&name);
                        files.insert(to.as_str().to_owned(), data);
                        out.extend(format!("{}\n", Reply::renamed(&name, to.as_str())).bytes());
                    }
                }
            }
            Ok(Request::Delete(Some(r))) => {
                let mut files = lock()?;
                match find(&files, &r.as_str()) {
                    None => out.extend(b"404 No such file\n"),
                    Some((name, _)) => {
                        files.remove(&name);
                        out.extend(format!("{}\n", Reply::deleted(&name)).bytes());
                    }
                }
            }
            Ok(Request::Help) => out.extend(b"211 2 commands\nLIST_FILES  list\nHELP  this\n"),
            Ok(Request::Mismatch(r)) => {
                lock()?.insert(format!("{MISMATCH_KEY}{}", r.as_str()), Vec::new());
                out.extend(format!("{}\n", Reply::mismatch_noted()).bytes());
            }
            Ok(Request::Disconnect) => {
                s.get_mut()
                    .write_all(format!("{}\n", Reply::bye()).as_bytes())
                    .await?;
                return Ok(());
            }
            Ok(_) => out.extend(b"400 Prompt forms are not supported by the fake server\n"),
            Err(e) => out.extend(format!("{}\n", Reply::for_decode_error(&e)).bytes()),
        }
        by_line(s.get_mut(), &out, quirks.line_delay).await?;
    }
}
