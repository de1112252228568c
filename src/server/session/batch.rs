//! Group commit of small pipelined uploads (`PROTOCOL.md` section 5.3): bodies that arrive
//! whole are staged in memory and stored together with one flush to disk, their replies queued
//! in order once they are durable.
//!
//! A full batch is stored in the background while the next one is read, so the disk work and
//! the reading of the next bodies overlap; at most one batch is being stored at a time, and its
//! replies are queued before anything that comes after it.

use tokio::task::JoinHandle;
use tracing::Instrument as _;

use super::{Flow, Session};
use crate::id::FileId;
use crate::name::FileName;
use crate::protocol::{Reply, UploadSpec};
use crate::server::audit::Action;
use crate::store::StoreError;
use crate::transport::{Stream, TransportError};

/// A group commit happens at the latest after this many files or bytes. A connection holds at
/// most twice this: the batch being read and the one being stored.
const BATCH_FILES: usize = 256;
const BATCH_BYTES: usize = 1 << 20;

/// Small uploads received whole and waiting for one group commit.
#[derive(Default)]
pub(super) struct Batch {
    items: Vec<(FileName, Vec<u8>)>,
    /// Each item's audit record, logged once its file is stored (or refused).
    actions: Vec<Option<Action>>,
    bytes: usize,
    /// The batch before, being stored meanwhile.
    storing: Option<Storing>,
}

/// A batch handed to the store, with the audit records of its files.
struct Storing {
    results: JoinHandle<Vec<Result<FileId, StoreError>>>,
    actions: Vec<Option<Action>>,
}

impl Batch {
    /// True when no upload waits for its reply.
    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty() && self.storing.is_none()
    }
}

impl<S: Stream> Session<'_, S> {
    /// Reads a small `PUT` body and adds it to the batch; a full batch is handed to the store
    /// while the next is read.
    pub(super) async fn stage_put(&mut self, spec: UploadSpec) -> Result<Flow, TransportError> {
        let mut body = vec![0u8; usize::try_from(spec.size).unwrap_or(0)];
        self.begin_body();
        let mut got = 0;
        while got < body.len() {
            got += self
                .conn
                .read_body(&mut body[got..], Some(self.config.stall_timeout))
                .await?;
        }
        self.batch.bytes += body.len();
        self.batch.items.push((spec.name, body));
        // The reply comes with the group commit: so does the audit line.
        self.batch.actions.push(self.action.take());
        if self.batch.items.len() >= BATCH_FILES || self.batch.bytes >= BATCH_BYTES {
            // The one before must be stored first: its replies come first, and a name in both
            // is then refused in the second as taken, as it would be one by one.
            self.finish_storing().await;
            self.start_storing();
        }
        Ok(Flow::Continue)
    }

    /// Stores every batched upload and queues their replies, in order: the batch being stored,
    /// then the one being read.
    pub(super) async fn commit_batch(&mut self) {
        self.finish_storing().await;
        self.start_storing();
        self.finish_storing().await;
    }

    /// Hands the batch being read to the store, in the background.
    fn start_storing(&mut self) {
        if self.batch.items.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.batch.items);
        let actions = std::mem::take(&mut self.batch.actions);
        self.batch.bytes = 0;
        let store = std::sync::Arc::clone(&self.store);
        let owner = self.owner();
        // In the connection's span, so that what the store logs says whose batch it was.
        let results =
            tokio::spawn(async move { store.put_batch_by(items, &owner).await }.in_current_span());
        self.batch.storing = Some(Storing { results, actions });
    }

    /// Waits for the batch being stored and queues its replies, in order.
    async fn finish_storing(&mut self) {
        let Some(Storing { results, actions }) = self.batch.storing.take() else {
            return;
        };
        let count = actions.len();
        let results = results.await.unwrap_or_else(|e| {
            (0..count)
                .map(|_| {
                    Err(StoreError::Io {
                        action: "storing a batch",
                        name: None,
                        source: std::io::Error::other(e.to_string()),
                    })
                })
                .collect()
        });
        // The batch's audit lines go out with one `write`.
        crate::server::log_out::together(|| {
            for (mut action, result) in actions.into_iter().zip(results) {
                let reply = match result {
                    Ok(id) => {
                        if let Some(a) = &mut action {
                            a.id(id);
                        }
                        Reply::stored(&id)
                    }
                    Err(e) => {
                        if e.is_internal() {
                            tracing::error!(peer = %self.peer, "{e}");
                        }
                        self.reply_for_seen(&e)
                    }
                };
                self.queue(&reply);
                if let Some(mut a) = action {
                    a.replied(&reply);
                    a.finish(&self.config.metrics);
                }
            }
        });
    }
}
