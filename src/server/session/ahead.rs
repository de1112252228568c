//! Read-ahead of pipelined downloads: when a `DOWNLOAD` runs and the next lines already
//! received are `DOWNLOAD`s of names too, the small files they ask for are opened and read in
//! the same trip to the blocking pool as this one (for small files that trip is most of the
//! cost). Each request is still run, checked and answered on its own, in order; a request of
//! another kind drops what was read ahead, so nothing it changes is served from before it.

use std::collections::VecDeque;

use super::Session;
use crate::name::FileName;
use crate::protocol::Request;
use crate::store::{Download, StoreError, Target};
use crate::transport::Stream;

/// At most this many files are read ahead of their requests, per connection.
const AHEAD_FILES: usize = 64;

/// At most this many bytes of files are held ahead of their requests, per connection.
pub(super) const AHEAD_BYTES: u64 = 256 * 1024;

/// Files opened ahead of their `DOWNLOAD`s, in request order.
#[derive(Default)]
pub(super) struct Ahead {
    files: VecDeque<(FileName, Result<Option<Download>, StoreError>)>,
}

impl Ahead {
    /// Drops what was read ahead (a request of another kind came).
    pub(super) fn clear(&mut self) {
        self.files.clear();
    }
}

impl<S: Stream> Session<'_, S> {
    /// Opens `target` for a download: from what was read ahead when it holds it, otherwise
    /// together with the small files the next `DOWNLOAD` lines already received ask for.
    pub(super) async fn open_download(&mut self, target: &Target) -> Result<Download, StoreError> {
        let Some(name) = target.name.clone().filter(|_| target.id.is_none()) else {
            self.ahead.clear();
            return self.store.download(target).await;
        };
        if self.ahead.files.front().is_some_and(|(n, _)| *n != name) {
            self.ahead.clear();
        }
        if self.ahead.files.is_empty() {
            let mut names = vec![name];
            names.extend(self.buffered_downloads());
            let opened = self.store.open_ahead(&names, AHEAD_BYTES).await;
            self.ahead.files.extend(names.into_iter().zip(opened));
        }
        match self.ahead.files.pop_front() {
            Some((_, Ok(Some(d)))) => Ok(d),
            Some((_, Err(e))) => Err(e),
            Some((_, Ok(None))) | None => Err(StoreError::NotFound(target.clone())),
        }
    }

    /// The names the `DOWNLOAD` lines already received after this one ask for, as long as they
    /// are permitted downloads by name (at most `AHEAD_FILES - 1`).
    fn buffered_downloads(&self) -> Vec<FileName> {
        let mut names = Vec::new();
        for line in self.conn.buffered_lines().split_inclusive(|&b| b == b'\n') {
            if names.len() + 1 >= AHEAD_FILES {
                break;
            }
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let Ok(req) = Request::decode(line) else {
                break;
            };
            let Request::Download(Some(r)) = &req else {
                break;
            };
            if r.id.is_some() || self.refusal(&req).is_some() {
                break;
            }
            match r.name.as_ref().map(|seen| self.real_name(seen)) {
                Some(Ok(name)) => names.push(name),
                _ => break,
            }
        }
        names
    }
}
