//! Group commit of small pipelined uploads (`PROTOCOL.md` section 5.3): bodies that arrive
//! whole are staged in memory and stored together with one flush to disk, their replies queued
//! in order once they are durable.

use super::{Flow, Session};
use crate::name::FileName;
use crate::protocol::{Reply, UploadSpec};
use crate::server::audit::Action;
use crate::transport::{Stream, TransportError};

/// A group commit happens at the latest after this many files or bytes.
const BATCH_FILES: usize = 256;
const BATCH_BYTES: usize = 1 << 20;

/// Small uploads received whole and waiting for one group commit.
#[derive(Default)]
pub(super) struct Batch {
    items: Vec<(FileName, Vec<u8>)>,
    /// Each item's audit record, logged once its file is stored (or refused).
    actions: Vec<Option<Action>>,
    bytes: usize,
}

impl Batch {
    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl<S: Stream> Session<'_, S> {
    /// Reads a small `PUT` body and adds it to the batch, committing when the batch is full.
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
            self.commit_batch().await;
        }
        Ok(Flow::Continue)
    }

    /// Stores the batched uploads with one group commit and queues their replies, in order.
    pub(super) async fn commit_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.batch.items);
        let actions = std::mem::take(&mut self.batch.actions);
        self.batch.bytes = 0;
        let results = self.store.put_batch_by(items, &self.owner()).await;
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
    }
}
