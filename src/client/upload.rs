//! One upload (`UPLOAD name;size`, `PROTOCOL.md` section 5.2): the file streams from disk
//! through a [`transfer::Source`] (read and hashed on the blocking pool) to the connection, and
//! the server's MD5 is checked against ours.
//!
//! Pipelined uploads live in [`put_many`](super::put_many); they share [`verify_stored`].

use std::path::Path;

use tokio::io::{AsyncRead, AsyncWrite};

use super::exchange::{protocol, recv_reply, trace_body};
use super::local::{Follow, open_regular};
use super::{Client, ClientError, Progress, Verified};
use crate::name::FileName;
use crate::protocol::{Code, FileId, FileRef, Reply, Request, UploadSpec};
use crate::transfer;

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
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
        progress: impl FnMut(Progress),
    ) -> Result<Verified, ClientError> {
        self.upload_following(path, name, Follow::Yes, progress)
            .await
    }

    /// [`upload`](Self::upload) of a file found by walking a folder
    /// ([`tree::walk`](super::tree::walk)): a file that became a symlink since the walk is
    /// refused rather than followed, as in [`put_many_within`](Self::put_many_within).
    ///
    /// # Errors
    /// As [`upload`](Self::upload).
    pub async fn upload_within(
        &mut self,
        path: &Path,
        name: &FileName,
        progress: impl FnMut(Progress),
    ) -> Result<Verified, ClientError> {
        self.upload_following(path, name, Follow::No, progress)
            .await
    }

    async fn upload_following(
        &mut self,
        path: &Path,
        name: &FileName,
        follow: Follow,
        mut progress: impl FnMut(Progress),
    ) -> Result<Verified, ClientError> {
        self.usable()?;
        if self.resume || follow == Follow::No {
            let opened = open_regular(path, follow).await;
            let result = match opened {
                Ok((file, size)) if self.resume && size >= super::resume::RESUME_MIN => {
                    // Nothing wrong is ever stored by a resumed upload: no copy to delete.
                    let result = self
                        .upload_resumable(file, size, path, name, &mut progress)
                        .await;
                    return self.settle(result);
                }
                Ok((file, size)) => {
                    self.upload_opened(file, size, path, name, &mut progress)
                        .await
                }
                Err(e) => Err(e),
            };
            let result = self.settle(result);
            if let Err(ClientError::ChecksumMismatch { .. }) = result {
                self.delete_bad_copy(name).await;
            }
            return result;
        }
        let result = self.upload_inner(path, name, &mut progress).await;
        let result = self.settle(result);
        if let Err(ClientError::ChecksumMismatch { .. }) = result {
            self.delete_bad_copy(name).await;
        }
        result
    }

    /// [`upload`](Self::upload) of a file already open (a spooled copy of standard input,
    /// say); `label` names it in errors. It must be a regular file, read from its start.
    ///
    /// # Errors
    /// As [`upload`](Self::upload).
    pub async fn upload_file(
        &mut self,
        file: std::fs::File,
        label: &Path,
        name: &FileName,
        mut progress: impl FnMut(Progress),
    ) -> Result<Verified, ClientError> {
        self.usable()?;
        let result = async {
            let meta = file.metadata().map_err(ClientError::io(label))?;
            if !meta.is_file() {
                return Err(ClientError::NotAFile {
                    path: label.to_owned(),
                });
            }
            self.upload_opened(file, meta.len(), label, name, &mut progress)
                .await
        }
        .await;
        let result = self.settle(result);
        if let Err(ClientError::ChecksumMismatch { .. }) = result {
            self.delete_bad_copy(name).await;
        }
        result
    }

    /// Sends the body of a file of `size` bytes from byte `done` on, as `source` reads it, with
    /// progress. A file that ends early is [`ClientError::FileChanged`]: its size was announced
    /// already, so the body can no longer be completed.
    pub(super) async fn send_source<P: FnMut(Progress)>(
        &mut self,
        source: &mut transfer::Source,
        path: &Path,
        mut done: u64,
        size: u64,
        progress: &mut P,
    ) -> Result<(), ClientError> {
        progress(Progress { done, total: size });
        while done < size {
            let chunk = match source.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => return Err(ClientError::io(path)(e)),
                None => {
                    return Err(ClientError::FileChanged {
                        path: path.to_owned(),
                    });
                }
            };
            self.tx.write_body(&chunk, self.timeout).await?;
            done += chunk.len() as u64;
            // Dropping the chunk hands its buffer back for the next read.
            drop(chunk);
            super::resume::test_kill_at(done);
            progress(Progress { done, total: size });
        }
        Ok(())
    }

    async fn upload_inner<P: FnMut(Progress)>(
        &mut self,
        path: &Path,
        name: &FileName,
        progress: &mut P,
    ) -> Result<Verified, ClientError> {
        let (file, size) = open_regular(path, Follow::Yes).await?;
        self.upload_opened(file, size, path, name, progress).await
    }

    pub(super) async fn upload_opened<P: FnMut(Progress)>(
        &mut self,
        file: std::fs::File,
        size: u64,
        path: &Path,
        name: &FileName,
        progress: &mut P,
    ) -> Result<Verified, ClientError> {
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
        self.tx
            .begin_body(self.min_rate, super::download::body_window(self.timeout));
        let mut source =
            transfer::Source::large(file, size, true).map_err(ClientError::io(path))?;
        self.send_source(&mut source, path, 0, size, progress)
            .await?;
        self.tx.flush(self.timeout).await?;
        let sent = match source.finish().await {
            Ok(Some(id)) => id,
            Ok(None) => return Err(ClientError::io(path)(std::io::Error::other("no MD5"))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(ClientError::FileChanged {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(ClientError::io(path)(e)),
        };
        let reply = recv_reply(&mut self.rx, self.timeout).await?;
        // Any 2xx means stored (a code is read by its first digit, PROTOCOL.md section 6), and
        // carries the id as `226` does.
        if !reply.code.is_success() {
            return Err(self.unexpected(reply));
        }
        self.in_exchange = false;
        verify_stored(&reply, sent, name, size)
    }

    /// Best effort: removes a copy the server stored with the wrong content.
    pub(super) async fn delete_bad_copy(&mut self, name: &FileName) {
        // Tell the server first, so its operator sees the failure in its metrics (a server
        // from before MISMATCH refuses it; that changes nothing).
        let _ = self
            .simple(
                &Request::Mismatch(FileRef {
                    id: None,
                    name: Some(name.clone()),
                }),
                Code::DONE,
            )
            .await;
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
}

/// Checks a `2xx` reply to an upload (`226 <id> ...`) against what was sent.
pub(super) fn verify_stored(
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
