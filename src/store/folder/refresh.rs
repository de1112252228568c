//! Bringing the index in line with the folder before a listing: the whole folder walked when
//! the watcher cannot vouch for it, otherwise only what its events name ([`watch`](super::watch)).
//!
//! Either way the same rule decides each file: gone files are forgotten, files changed since
//! they were hashed lose their entry, and files with no current id are hashed now while the
//! listing's budget lasts and queued for the background hasher after that (counted as pending).
//! The listing is then a snapshot of the index.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::fsops::{self, Found, Meta};
use super::index::Change;
use super::watch::{self, Changes};
use super::{Inner, lock};
use crate::name::FileName;
use crate::store::{Listing, StoreError};

/// What part of the folder a look covers: the files of the index in it that were not found
/// are gone.
#[derive(Clone, Copy)]
enum Part<'a> {
    All,
    Folder(&'a str),
    File(&'a FileName),
}

impl Part<'_> {
    fn holds(&self, name: &FileName) -> bool {
        match self {
            Part::All => true,
            Part::Folder(f) => watch::inside(name.as_str(), f),
            Part::File(n) => *n == name,
        }
    }
}

/// Files to hash in one listing past which what it freed is given back to the system
/// ([`heap`](crate::heap)): while a folder is first indexed, each listing hashes thousands.
const BURST: usize = 1000;

impl Inner {
    /// A listing of the folder as it is now: the index updated from a walk, or from what the
    /// watcher saw change (see [`watch`](super::watch) for when each).
    pub(super) fn refresh(&self, budget: u64) -> Result<Listing, StoreError> {
        let Some(watcher) = &self.watcher else {
            return self.scan(budget);
        };
        match watcher.take() {
            Changes::All { ticket } => {
                let listing = self.scan(budget);
                watcher.walked(ticket, listing.is_ok());
                listing
            }
            Changes::Some { files, dirs } => {
                let listing = self.update(&files, &dirs, budget);
                if listing.is_err() {
                    // What it did not get to is not forgotten: the next one walks everything.
                    watcher.lose();
                }
                listing
            }
        }
    }

    fn watch_folder(&self, dir: &std::os::fd::OwnedFd, name: &str) {
        if let Some(w) = &self.watcher {
            w.watch(dir, name);
        }
    }

    /// Walks the whole folder and brings the index in line with it.
    fn scan(&self, budget: u64) -> Result<Listing, StoreError> {
        let started = Instant::now();
        self.full_walks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let found = fsops::walk_under(&self.root, "", &mut |fd, name| {
            self.watch_folder(fd, name);
        })
        .map_err(|e| StoreError::ListingIncomplete {
            folder: e.folder,
            source: e.source,
        })?;
        self.files
            .store(found.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let unknown = self.reconcile(Part::All, found);
        let pending = self.hash_some(unknown, budget, started);
        *lock(&self.unhashed) = pending;
        // What the walk held (an entry per file) goes back to the system, not to malloc's
        // arenas: a whole walk is rare (at start, or when the watcher lost track).
        self.settle();
        Ok(self.snapshot(false))
    }

    /// Looks again at the files `files` and walks the folders `dirs` (none inside another).
    fn update(
        &self,
        files: &BTreeSet<FileName>,
        dirs: &[String],
        budget: u64,
    ) -> Result<Listing, StoreError> {
        let started = Instant::now();
        let mut unknown = Vec::new();
        for dir in dirs {
            let found = fsops::walk_under(&self.root, dir, &mut |fd, name| {
                self.watch_folder(fd, name);
            })
            .map_err(|e| StoreError::ListingIncomplete {
                folder: e.folder,
                source: e.source,
            })?;
            self.drop_unhashed(Part::Folder(dir));
            unknown.extend(self.reconcile(Part::Folder(dir), found));
        }
        for name in files {
            if dirs.iter().any(|d| watch::inside(name.as_str(), d)) {
                continue; // Walked just now.
            }
            let found = match fsops::stat_name(&self.root, name) {
                Ok(Some(st)) if fsops::is_regular(&st) => vec![Found {
                    name: name.clone(),
                    meta: Meta::of(&st),
                }],
                Ok(_) => Vec::new(),
                Err(e) if fsops::is_absent(&e) => Vec::new(),
                Err(e) => {
                    return Err(StoreError::ListingIncomplete {
                        folder: name.split_parent().0.unwrap_or_default().to_owned(),
                        source: e,
                    });
                }
            };
            self.drop_unhashed(Part::File(name));
            unknown.extend(self.reconcile(Part::File(name), found));
        }
        // Files still waiting for their id: hashed now while the budget lasts, as a walk
        // would (they are few but at the start, while a folder is first indexed).
        let waiting = std::mem::take(&mut *lock(&self.unhashed));
        for name in waiting {
            if lock(&self.index).get(&name).is_some() {
                continue; // Hashed in the background meanwhile.
            }
            if let Ok(Some(st)) = fsops::stat_name(&self.root, &name)
                && fsops::is_regular(&st)
            {
                unknown.push(Found {
                    meta: Meta::of(&st),
                    name,
                });
            }
        }
        let looked_at = unknown.len();
        let pending = self.hash_some(unknown, budget, started);
        lock(&self.unhashed).extend(pending);
        if looked_at >= BURST {
            self.settle();
        }
        Ok(self.snapshot(true))
    }

    fn drop_unhashed(&self, part: Part<'_>) {
        let mut unhashed = lock(&self.unhashed);
        match part {
            Part::All => unhashed.clear(),
            Part::File(n) => {
                unhashed.remove(n);
            }
            Part::Folder(_) => unhashed.retain(|n| !part.holds(n)),
        }
    }

    /// Brings the index's files in `part` in line with `found` (what is there now, sorted by
    /// name); returns the files found whose id is not known.
    fn reconcile(&self, part: Part<'_>, found: Vec<Found>) -> Vec<Found> {
        let mut unknown = Vec::new();
        let mut forgotten = Vec::new();
        let mut rebuilt = None;
        {
            let mut ix = lock(&self.index);
            // Forget files that are gone: both sequences are sorted by name.
            let mut gone = Vec::new();
            {
                let mut on_disk = found.iter().map(|f| &f.name).peekable();
                let mut check = |name: &FileName| {
                    while on_disk.next_if(|n| *n < name).is_some() {}
                    if on_disk.peek() != Some(&name) {
                        gone.push(name.clone());
                    }
                };
                match part {
                    Part::All => ix.names().for_each(&mut check),
                    Part::Folder(f) => ix.names_under(f).for_each(&mut check),
                    Part::File(n) => {
                        if ix.get(n).is_some() {
                            check(n);
                        }
                    }
                }
            }
            for name in gone {
                // The walk is not atomic: a file uploaded or renamed into place while it ran is
                // on disk and in the index, but was not seen. Only forget what is really gone.
                if matches!(fsops::stat_name(&self.root, &name), Ok(Some(st)) if fsops::is_regular(&st))
                {
                    continue;
                }
                ix.remove(&name);
                self.persist(Change::Remove(name.clone()));
                forgotten.push(name);
            }
            if matches!(part, Part::All) {
                // Equivalent names: what the walk saw, plus what was stored while it ran (in
                // the index, not necessarily seen).
                let mut canonical: HashMap<String, Vec<FileName>> = HashMap::new();
                for name in found.iter().map(|f| &f.name).chain(ix.names()) {
                    if !name.as_str().is_ascii() {
                        let same = canonical.entry(name.canonical().into_owned()).or_default();
                        if !same.contains(name) {
                            same.push(name.clone());
                        }
                    }
                }
                rebuilt = Some(canonical);
            }
            for f in found {
                let Some(e) = ix.get(&f.name) else {
                    unknown.push(f);
                    continue;
                };
                if e.meta == f.meta {
                    continue;
                }
                // Changed since it was hashed, so its id is unknown and it is not listed, unless
                // it was stored again after the walk saw it (then the index is the newer).
                let stored = e.meta;
                if matches!(fsops::stat_name(&self.root, &f.name), Ok(Some(st)) if fsops::is_regular(&st) && Meta::of(&st) == stored)
                {
                    continue;
                }
                ix.remove(&f.name);
                self.persist(Change::Remove(f.name.clone()));
                unknown.push(f);
            }
        }
        if let Some(canonical) = rebuilt {
            *lock(&self.canonical) = canonical;
        } else {
            for name in &forgotten {
                self.forget_name(name);
            }
            for f in &unknown {
                self.note_name(&f.name);
            }
        }
        unknown
    }

    /// Hashes files of `unknown` while `budget` bytes and the listing's time (from `started`)
    /// last, and queues the rest; returns those not hashed.
    fn hash_some(
        &self,
        unknown: Vec<Found>,
        mut budget: u64,
        started: Instant,
    ) -> BTreeSet<FileName> {
        let mut pending = BTreeSet::new();
        for f in unknown {
            if f.meta.size <= budget && started.elapsed() < self.config.inline_hash_time {
                budget -= f.meta.size;
                // Recorded in the index, so in the snapshot below.
                if let Ok(Some(_)) = self.open_hashed(&f.name) {
                    continue;
                }
            } else {
                self.queue_hash(f.name.clone());
            }
            pending.insert(f.name);
        }
        pending
    }

    /// The listing: a snapshot of the index, and how many files found are still to hash. With
    /// `counted`, the count of files in the folder is taken from it (a walk counts them).
    fn snapshot(&self, counted: bool) -> Listing {
        let files = lock(&self.index).snapshot();
        let mut unhashed = lock(&self.unhashed);
        // A file still to hash when it was seen may have been hashed since (in the
        // background): then it is listed, and not counted again as pending.
        unhashed.retain(|n| !files.contains_key(n.as_str()));
        let pending = unhashed.len();
        drop(unhashed);
        if counted {
            self.files.store(
                (files.len() + pending) as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        Listing::new(files, pending)
    }
}
