//! Listings shared between the requests that wait for them: one walk at a time.
//!
//! It owns when a walk runs and who gets its result; the walk itself is
//! [`Inner::refresh`](super::Inner). It keeps no listing once every waiting request is answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Inner, blocking};
use crate::store::{Listing, StoreError};

/// Listings in progress, shared: at most one walk of the folder runs at a time for listings,
/// and every request that arrived before a walk began takes its result. So a crowd of `LIST`s
/// costs one walk's descriptors and CPU at a time, not one each (issue 10, items 2 and 9),
/// and no one gets a listing older than their request.
#[derive(Debug, Default)]
pub(super) struct Walks {
    /// Requests so far; a walk covers every request numbered up to its start.
    pub(super) asked: AtomicU64,
    /// Requests waiting for a listing or being answered. The last one out drops the shared
    /// result, so an idle server holds no listing.
    pub(super) waiting: AtomicU64,
    /// Walks done for listings (for the log and tests).
    pub(super) walks: AtomicU64,
    /// The last successful walk: the requests it covers, and its listing.
    pub(super) last: tokio::sync::Mutex<Option<(u64, Listing)>>,
}

impl Walks {
    /// A listing no older than this call: from a walk that began after it, shared with the
    /// calls waiting at the same time.
    pub(super) async fn list(&self, inner: &Arc<Inner>) -> Result<Listing, StoreError> {
        let ticket = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let waiting = Waiting::enter(&self.waiting);
        let mut last = self.last.lock().await;
        let result = match last.as_ref() {
            Some((covered, listing)) if *covered >= ticket => Ok(listing.clone()),
            _ => {
                // Every request numbered so far arrived before this walk starts.
                let covers = self.asked.load(Ordering::SeqCst);
                self.walks.fetch_add(1, Ordering::Relaxed);
                let inner = Arc::clone(inner);
                let walked = blocking(move || inner.refresh(inner.config.inline_hash_budget)).await;
                // Kept (one copy) only for requests already waiting for it.
                *last = walked
                    .as_ref()
                    .ok()
                    .filter(|_| self.waiting.load(Ordering::SeqCst) > 1)
                    .map(|l| (covers, l.clone()));
                walked
            }
        };
        // A request that comes later needs a walk of its own anyway; one still on its way to
        // the lock finds nothing and walks (correct, if not shared).
        if waiting.leave() {
            *last = None;
        }
        result
    }
}

/// One request counted in [`Walks::waiting`] until it is dropped, even if cancelled (a client
/// that disconnects while waiting).
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }

    /// Stops counting this request; true when no other was counted. Called with the lock
    /// held, so the next holder sees this one gone.
    fn leave(self) -> bool {
        let was = self.0.fetch_sub(1, Ordering::SeqCst);
        std::mem::forget(self);
        was == 1
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
