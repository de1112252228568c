//! Every hashed file by name: a sorted map kept in chunks, shared between the index and the
//! listings taken from it.
//!
//! It is what a listing is made of (issue 11): taking one is a copy of one pointer, and a
//! listing being read, however slowly, shares every chunk with the index until the index
//! changes. A change to a shared map copies only what it touches: the chunk it lands in and the
//! list of chunks (8 bytes a chunk). So a listing held while the folder changes costs what
//! changed meanwhile, at most a copy of the whole, never one per connection.
//!
//! It replaces a general persistent B-tree (`imbl::OrdMap`) whose nodes, filled in name order
//! as a folder is first indexed, were half empty: here a chunk filled in order stays full, so
//! a file costs its name (shared with the id map) and one 56-byte slot.
//!
//! Not here: what an entry means or when it is trusted ([`index`](super::index)).

use std::cmp::Ordering;
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use super::index::Entry;
use crate::name::FileName;

/// Most files in one chunk. Larger chunks cost less per file (the list of chunks, each chunk's
/// allocation) but more per change while a listing shares them (one chunk copied: 256 × 56
/// bytes = 14 KiB) and per insertion (entries moved within the chunk).
const CHUNK: usize = 256;

/// A chunk this small after a removal is merged into a neighbour, so deletions do not leave a
/// long list of near-empty chunks behind.
const SPARSE: usize = CHUNK / 4;

/// Sorted files, in chunks. Invariants: no chunk is empty or holds more than [`CHUNK`] files,
/// names are sorted and unique within a chunk, and every name of a chunk sorts before every
/// name of the next.
#[derive(Clone, Default)]
pub(crate) struct Files {
    chunks: Arc<Vec<Arc<Chunk>>>,
    len: usize,
}

type Slot = (FileName, Entry);

#[derive(Clone, Debug)]
struct Chunk {
    files: Vec<Slot>,
}

impl Chunk {
    fn last(&self) -> &str {
        self.files.last().map_or("", |(n, _)| n.as_str())
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.files.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    /// Room for one more file, growing by a sixteenth rather than doubling: a chunk filled in
    /// order ends close to full, with little capacity unused.
    fn make_room(&mut self) {
        if self.files.len() == self.files.capacity() {
            self.files.reserve_exact(self.files.len() / 16 + 1);
        }
    }
}

impl fmt::Debug for Files {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Files")
            .field("len", &self.len)
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

impl Files {
    /// How many files it holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many of its chunks nothing else holds: what dropping it frees (none while its list
    /// of chunks is shared, with the index or a clone). A snapshot taken before the index was
    /// rebuilt, or before most of it changed, is then the last holder of most of its chunks.
    pub(crate) fn unshared_chunks(&self) -> usize {
        if Arc::strong_count(&self.chunks) > 1 {
            return 0;
        }
        self.chunks
            .iter()
            .filter(|c| Arc::strong_count(c) == 1)
            .count()
    }

    /// The first chunk whose last name is not before `name` (its files are the first that can
    /// be `name` or come after it); the number of chunks if there is none.
    fn chunk_of(&self, name: &str) -> usize {
        self.chunks.partition_point(|c| c.last() < name)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Entry> {
        let chunk = self.chunks.get(self.chunk_of(name))?;
        let at = chunk.find(name).ok()?;
        chunk.files.get(at).map(|(_, e)| e)
    }

    pub(crate) fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The chunk `i` to change: copied first if a listing shares it (or the list of chunks).
    fn chunk_mut(&mut self, i: usize) -> Option<&mut Chunk> {
        Arc::make_mut(&mut self.chunks)
            .get_mut(i)
            .map(Arc::make_mut)
    }

    /// Records `entry` for `name`; returns the entry it replaces.
    pub(crate) fn insert(&mut self, name: FileName, entry: Entry) -> Option<Entry> {
        if self.chunks.is_empty() {
            Arc::make_mut(&mut self.chunks).push(Arc::new(Chunk {
                files: vec![(name, entry)],
            }));
            self.len = 1;
            return None;
        }
        // A name after every other goes to the end of the last chunk.
        let i = self.chunk_of(name.as_str()).min(self.chunks.len() - 1);
        let chunk = self.chunk_mut(i)?;
        let at = match chunk.find(name.as_str()) {
            Ok(at) => {
                let slot = chunk.files.get_mut(at)?;
                return Some(std::mem::replace(&mut slot.1, entry));
            }
            Err(at) => at,
        };
        chunk.make_room();
        chunk.files.insert(at, (name, entry));
        let over = (chunk.files.len() > CHUNK).then(|| split(chunk, at));
        self.len += 1;
        if let Some((after, tail)) = over {
            let tail = Arc::new(Chunk { files: tail });
            // The files split off go after what stays, or (a new first file alone) before it.
            Arc::make_mut(&mut self.chunks).insert(if after { i + 1 } else { i }, tail);
        }
        None
    }

    /// Forgets `name`; returns the entry it had.
    pub(crate) fn remove(&mut self, name: &str) -> Option<Entry> {
        let i = self.chunk_of(name);
        let at = self.chunks.get(i)?.find(name).ok()?;
        let chunk = self.chunk_mut(i)?;
        let (_, old) = chunk.files.remove(at);
        let left = chunk.files.len();
        self.len -= 1;
        if left == 0 {
            Arc::make_mut(&mut self.chunks).remove(i);
        } else if left < SPARSE {
            self.merge_around(i);
        }
        Some(old)
    }

    /// Merges the sparse chunk `i` into a neighbour that has room for it.
    fn merge_around(&mut self, i: usize) {
        let len_of = |files: &Self, j: usize| files.chunks.get(j).map(|c| c.files.len());
        let Some(here) = len_of(self, i) else { return };
        let next = len_of(self, i + 1).filter(|n| here + n <= CHUNK);
        let prev = i
            .checked_sub(1)
            .and_then(|p| len_of(self, p))
            .filter(|n| here + n <= CHUNK);
        // With the smaller neighbour that has room.
        let (into, from) = match (prev, next) {
            (Some(p), Some(n)) if n < p => (i, i + 1),
            (Some(_), _) => (i - 1, i),
            (None, Some(_)) => (i, i + 1),
            (None, None) => return,
        };
        let spine = Arc::make_mut(&mut self.chunks);
        let moved = spine.remove(from);
        let moved = Arc::try_unwrap(moved).map_or_else(|shared| shared.files.clone(), |c| c.files);
        if let Some(target) = spine.get_mut(into).map(Arc::make_mut) {
            target.files.extend(moved);
            target.files.shrink_to_fit();
        }
    }

    /// Refills the chunks, if they are less than 7/8 full on average: a folder indexed by two
    /// threads at once (the background hasher, and listings hashing within their budget)
    /// gets names inserted just before the newest ones, which splits chunks in halves. Copies
    /// the whole map (the entries, not the names) when they are, so it is called once a burst
    /// is over, not per change.
    pub(crate) fn compact(&mut self) {
        let fewest = self.len.div_ceil(CHUNK);
        if self.chunks.len() <= fewest + fewest / 8 {
            return;
        }
        let all: Vec<Slot> = self.iter().map(|(n, e)| (n.clone(), *e)).collect();
        *self = all.into_iter().collect();
    }

    /// Every file, in name order.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (&FileName, &Entry)> + '_ {
        self.chunks
            .iter()
            .flat_map(|c| c.files.iter().map(|(n, e)| (n, e)))
    }

    /// Every name, in order.
    pub(crate) fn keys(&self) -> impl DoubleEndedIterator<Item = &FileName> + '_ {
        self.iter().map(|(n, _)| n)
    }

    /// The files from `from` on, in name order.
    pub(crate) fn range_from<'s>(
        &'s self,
        from: Bound<&str>,
    ) -> impl Iterator<Item = (&'s FileName, &'s Entry)> + use<'s> {
        let before = |name: &str| match from {
            Bound::Included(f) => name < f,
            Bound::Excluded(f) => name <= f,
            Bound::Unbounded => false,
        };
        let i = self.chunks.partition_point(|c| before(c.last()));
        let rest = self.chunks.get(i..).unwrap_or_default();
        let (first, others) = match rest.split_first() {
            Some((c, others)) => {
                let j = c.files.partition_point(|(n, _)| before(n.as_str()));
                (c.files.get(j..).unwrap_or_default(), others)
            }
            None => (&[][..], rest),
        };
        first
            .iter()
            .chain(others.iter().flat_map(|c| c.files.iter()))
            .map(|(n, e)| (n, e))
    }
}

/// Splits the over-full `chunk`, where a file was just inserted at `at`: the files split off,
/// and whether they go after what stays (else before). A file added at either end (as when a
/// folder is indexed in name order) is split off alone, so the chunk stays full; one added
/// inside splits it in halves.
fn split(chunk: &mut Chunk, at: usize) -> (bool, Vec<Slot>) {
    let len = chunk.files.len();
    let (after, tail) = if at + 1 == len {
        (true, chunk.files.split_off(len - 1))
    } else if at == 0 {
        let rest = chunk.files.split_off(1);
        (false, std::mem::replace(&mut chunk.files, rest))
    } else {
        (true, chunk.files.split_off(len / 2))
    };
    chunk.files.shrink_to_fit();
    (after, tail)
}

impl FromIterator<(FileName, Entry)> for Files {
    /// A map of `files` in any order; a name given twice keeps its last entry.
    fn from_iter<I: IntoIterator<Item = (FileName, Entry)>>(files: I) -> Self {
        let mut all: Vec<Slot> = files.into_iter().collect();
        // Stable: of equal names, the last given stays last, and is the one kept.
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<Slot> = Vec::with_capacity(all.len());
        for slot in all {
            match unique.last_mut() {
                Some(last) if last.0.cmp(&slot.0) == Ordering::Equal => *last = slot,
                _ => unique.push(slot),
            }
        }
        let len = unique.len();
        let mut chunks = Vec::with_capacity(len.div_ceil(CHUNK));
        let mut rest = unique.into_iter().peekable();
        while rest.peek().is_some() {
            chunks.push(Arc::new(Chunk {
                files: rest.by_ref().take(CHUNK).collect(),
            }));
        }
        Self {
            chunks: Arc::new(chunks),
            len,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::id::FileId;

    fn entry(n: u32) -> Entry {
        Entry::listed(FileId([7; 16]), u64::from(n))
    }

    fn name(i: u32) -> FileName {
        FileName::parse(&format!("f{i:05}")).unwrap()
    }

    /// Checks the invariants, and that `files` holds exactly `model`.
    fn same(files: &Files, model: &BTreeMap<FileName, Entry>) {
        assert!(
            files
                .chunks
                .iter()
                .all(|c| !c.files.is_empty() && c.files.len() <= CHUNK)
        );
        assert_eq!(files.len(), model.len());
        let ours: Vec<_> = files.iter().map(|(n, e)| (n.clone(), *e)).collect();
        let theirs: Vec<_> = model.iter().map(|(n, e)| (n.clone(), *e)).collect();
        assert_eq!(ours, theirs);
        assert!(files.keys().rev().eq(model.keys().rev()));
    }

    /// Filled in name order (a folder first indexed, the database loaded), chunks are full.
    #[test]
    fn in_order_chunks_are_full() {
        let mut files = Files::default();
        for i in 0..10 * CHUNK as u32 {
            assert_eq!(files.insert(name(i), entry(i)), None);
        }
        assert_eq!(files.chunks.len(), 10);
        let mut files = Files::default();
        for i in (0..10 * CHUNK as u32).rev() {
            files.insert(name(i), entry(i));
        }
        assert_eq!(files.chunks.len(), 10);
        assert_eq!(files.get(name(17).as_str()), Some(&entry(17)));
    }

    /// A snapshot never changes, and shares the chunks the map did not change since.
    #[test]
    fn a_snapshot_keeps_its_files_and_shares_the_rest() {
        let mut files: Files = (0..4 * CHUNK as u32).map(|i| (name(i), entry(i))).collect();
        let before: BTreeMap<_, _> = files.iter().map(|(n, e)| (n.clone(), *e)).collect();
        let snapshot = files.clone();
        files.insert(name(1), entry(99));
        files.remove(name(2).as_str());
        same(&snapshot, &before);
        let shared = files
            .chunks
            .iter()
            .zip(snapshot.chunks.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, 3, "only the first chunk was copied");
    }

    /// A snapshot counts as the last holder of a chunk only once neither the map nor a clone
    /// of it shares that chunk.
    #[test]
    fn unshared_chunks_are_what_dropping_a_snapshot_frees() {
        let mut files: Files = (0..4 * CHUNK as u32).map(|i| (name(i), entry(i))).collect();
        assert_eq!(
            files.unshared_chunks(),
            4,
            "a map alone holds all of its chunks"
        );
        let snapshot = files.clone();
        assert_eq!(snapshot.unshared_chunks(), 0, "shared with the map");
        files.insert(name(1), entry(99));
        assert_eq!(snapshot.unshared_chunks(), 1, "the chunk the map copied");
        let clone = snapshot.clone();
        assert_eq!(snapshot.unshared_chunks(), 0, "shared with its clone");
        drop(clone);
        files = (0..4 * CHUNK as u32).map(|i| (name(i), entry(i))).collect();
        assert_eq!(snapshot.unshared_chunks(), 4, "the map was rebuilt");
        assert_eq!(files.len(), snapshot.len());
    }

    /// Chunks split in halves are refilled by `compact`, the same files in them.
    #[test]
    fn compact_refills_half_empty_chunks() {
        let mut files = Files::default();
        // 0, 2, 1, 4, 3, ...: every other name goes just before the last one, so a chunk that
        // fills up that way is split in halves.
        let last = 20 * CHUNK as u32 - 1;
        let order = std::iter::once(0)
            .chain((1..last).map(|k| if k % 2 == 1 { k + 1 } else { k - 1 }))
            .chain(std::iter::once(last));
        for n in order {
            files.insert(name(n), entry(n));
        }
        assert_eq!(files.len(), 20 * CHUNK);
        let model: BTreeMap<_, _> = files.iter().map(|(n, e)| (n.clone(), *e)).collect();
        assert!(files.chunks.len() > 30, "{}", files.chunks.len());
        files.compact();
        assert_eq!(files.chunks.len(), 20);
        same(&files, &model);
    }

    #[test]
    fn ranges_start_where_asked() {
        let files: Files = (0..3 * CHUNK as u32).map(|i| (name(i), entry(i))).collect();
        let first = |b: Bound<&str>| files.range_from(b).next().map(|(n, _)| n.clone());
        assert_eq!(first(Bound::Unbounded), Some(name(0)));
        let at = name(CHUNK as u32 - 1);
        assert_eq!(first(Bound::Included(at.as_str())), Some(at.clone()));
        assert_eq!(
            first(Bound::Excluded(at.as_str())),
            Some(name(CHUNK as u32))
        );
        assert_eq!(first(Bound::Included("f")), Some(name(0)));
        assert_eq!(first(Bound::Excluded("g")), None);
        assert_eq!(
            files.range_from(Bound::Excluded("f00100")).count(),
            3 * CHUNK - 101
        );
    }

    #[test]
    fn a_name_given_twice_keeps_its_last_entry() {
        let files: Files = [
            (name(1), entry(1)),
            (name(0), entry(0)),
            (name(1), entry(2)),
        ]
        .into_iter()
        .collect();
        assert_eq!(files.len(), 2);
        assert_eq!(files.get(name(1).as_str()), Some(&entry(2)));
    }

    proptest! {
        /// Any sequence of insertions and removals, with snapshots taken along the way: the map
        /// is a sorted map, and every snapshot still holds what it held when it was taken.
        #[test]
        fn behaves_as_a_sorted_map(ops in prop::collection::vec((any::<bool>(), 0u32..2000, any::<bool>()), 1..3000)) {
            let mut files = Files::default();
            let mut model = BTreeMap::new();
            let mut snapshots = Vec::new();
            for (k, (put, i, snap)) in ops.into_iter().enumerate() {
                let n = name(i);
                if put {
                    prop_assert_eq!(files.insert(n.clone(), entry(k as u32)), model.insert(n, entry(k as u32)));
                } else {
                    prop_assert_eq!(files.remove(n.as_str()), model.remove(&n));
                }
                if snap && snapshots.len() < 20 {
                    snapshots.push((files.clone(), model.clone()));
                }
            }
            same(&files, &model);
            for (files, model) in &snapshots {
                same(files, model);
            }
        }
    }
}
