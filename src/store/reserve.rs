//! What uploads in progress hold: their names (and folders, and canonical forms), and their
//! claim on the free space. The policy layer ([`super::policy`]) asks it for conflicts and
//! totals; it knows nothing of backends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::StoreError;
use crate::name::FileName;

/// Names being written (uploads in progress, renames under way), with what makes their
/// conflicts cheap to find: every folder of them, and the canonical forms of non-ASCII ones.
#[derive(Debug, Default)]
pub(super) struct Uploads {
    /// Name → what its upload declared, received and holds.
    pub(super) names: HashMap<FileName, Held>,
    /// Folder (as text) → how many reserved names are under it.
    pub(super) folders: HashMap<String, usize>,
    /// Canonical form → the non-ASCII reserved names with it.
    pub(super) canonical: HashMap<String, Vec<FileName>>,
    /// Sum of what the uploads hold ([`Held::hold`]).
    pub(super) bytes: u64,
}

/// The least an upload holds ahead of its bytes (or its whole size, when smaller): enough for
/// the first seconds of a fast upload.
const HOLD_FLOOR: u64 = 16 << 20;

/// One upload's claim on the free space.
///
/// The threat: a client that declares most of the free space and then trickles would have every
/// other upload refused for as long as it trickles (issue 10, item 3). So an upload holds space
/// for the bytes it has *yet* to write only as far as it has shown it sends them: as much again as
/// it has received (at least [`HOLD_FLOOR`]), never more than what is left. So no upload holds
/// more than half of its declared size (or the floor), whatever it declares. Bytes already
/// written are on the disk and counted by the free-space figure itself, so they are not held
/// twice. An upload that outruns its hold may meet a full disk (`507`) where another took the
/// space meanwhile: the one that claimed without sending pays, not the others.
#[derive(Clone, Copy, Debug)]
pub(super) struct Held {
    pub(super) declared: u64,
    pub(super) written: u64,
}

/// What the other writes in progress hold when one begins.
#[derive(Clone, Copy, Debug)]
pub(super) struct Others {
    pub(super) bytes: u64,
    pub(super) uploads: u64,
}

impl Held {
    fn hold(&self) -> u64 {
        let remaining = self.declared.saturating_sub(self.written);
        remaining.min(self.written.max(HOLD_FLOOR))
    }
}

impl Uploads {
    /// The reserved name `name` conflicts with, if any: itself, a folder of it, a name under
    /// it, or an equivalent name.
    pub(super) fn conflict(&self, name: &FileName) -> Option<StoreError> {
        let busy = |uploading: &FileName| StoreError::UploadInProgress {
            name: name.clone(),
            uploading: uploading.clone(),
        };
        if self.names.contains_key(name) {
            return Some(busy(name));
        }
        let text = name.as_str();
        for (at, _) in text.match_indices('/') {
            if let Some((folder, _)) = self.names.get_key_value(&text[..at]) {
                return Some(busy(folder));
            }
        }
        if self.folders.contains_key(text) {
            let under = self.names.keys().find(|n| name.is_folder_of(n))?;
            return Some(busy(under));
        }
        // An equivalent ASCII name can only be the canonical form itself; non-ASCII ones are
        // found through their canonical forms.
        let canonical = name.canonical();
        let ascii = self
            .names
            .get_key_value(canonical.as_ref())
            .map(|(n, _)| n)
            .filter(|n| *n != name);
        let other = ascii.or_else(|| {
            self.canonical
                .get(canonical.as_ref())
                .and_then(|same| same.iter().find(|n| *n != name))
        })?;
        Some(StoreError::Equivalent {
            name: name.clone(),
            existing: other.clone(),
        })
    }

    pub(super) fn insert(&mut self, name: &FileName, held: Held) {
        self.names.insert(name.clone(), held);
        self.bytes = self.bytes.saturating_add(held.hold());
        let text = name.as_str();
        for (at, _) in text.match_indices('/') {
            *self.folders.entry(text[..at].to_owned()).or_default() += 1;
        }
        if !text.is_ascii() {
            self.canonical
                .entry(name.canonical().into_owned())
                .or_default()
                .push(name.clone());
        }
    }

    /// Counts `n` more bytes received for `name`: its hold follows.
    pub(super) fn progress(&mut self, name: &FileName, n: u64) {
        if let Some(held) = self.names.get_mut(name) {
            let before = held.hold();
            held.written = held.written.saturating_add(n);
            let after = held.hold();
            self.bytes = self.bytes.saturating_sub(before).saturating_add(after);
        }
    }

    pub(super) fn remove(&mut self, name: &FileName) {
        let Some(held) = self.names.remove(name) else {
            return;
        };
        self.bytes = self.bytes.saturating_sub(held.hold());
        let text = name.as_str();
        for (at, _) in text.match_indices('/') {
            if let Some(n) = self.folders.get_mut(&text[..at]) {
                *n -= 1;
                if *n == 0 {
                    self.folders.remove(&text[..at]);
                }
            }
        }
        let canonical = name.canonical();
        if let Some(same) = self.canonical.get_mut(canonical.as_ref()) {
            same.retain(|n| n != name);
            if same.is_empty() {
                self.canonical.remove(canonical.as_ref());
            }
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps are updated in single steps that cannot be left half done by a panic elsewhere.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A name held while it is being written; dropping it frees the name.
#[derive(Debug)]
pub(super) struct Reservation {
    pub(super) uploads: Arc<Mutex<Uploads>>,
    pub(super) name: FileName,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        lock(&self.uploads).remove(&self.name);
    }
}
