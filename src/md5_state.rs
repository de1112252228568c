//! MD5s that can stop and go on later: the hash state of a file's first bytes, saved to disk so
//! that a resumed transfer (`PROTOCOL.md` sections 5.11 and 5.12) does not hash those bytes
//! again.
//!
//! The state is the one of the `md-5` 0.11 crate (`digest`'s `SerializableState`: the four
//! state words, the block count and the unprocessed tail), not a home-made MD5: the padding, the
//! final block and the saved format are that crate's. Only the bulk of the blocks goes through
//! a faster compression function: on Intel CPUs with AVX-512VL, our [`md5_vl`] crate's (0.89
//! times `fast-md5`'s CPU here, in paired runs), elsewhere `fast-md5`'s (animetosho's
//! md5-optimisation assembly on x86-64 and aarch64: 2.02 s here, against 2.18 s for `md5-asm`,
//! the assembly of `md-5` 0.10, 2.2 s of user time for `md5sum`, and some 12 % more for 0.11's
//! portable one). Both compress
//! the very state words 0.11 keeps, so they cannot drift: the tests below compare the result
//! with RustCrypto's MD5 (0.10 with its own assembly, and 0.11) at every kind of cut, and
//! `md5_vl`'s own compare it with `fast-md5`'s block by block.
//!
//! Every MD5 barge computes goes through [`ResumableMd5`] (or [`md5_of`]), saved or not.
//!
//! A saved state is only a shortcut: every transfer still ends with the end-to-end MD5 check,
//! so a wrong state makes the check fail (nothing is kept), never a wrong file pass. What this
//! module adds against mistakes is a file format that names what it belongs to (a `tag` the
//! owner chooses: which file, which length) and a SHA-256 over the whole record, so that a
//! record for another file, or a torn or damaged one, is refused and the caller re-hashes.
//!
//! It does no I/O of its own beyond reading the bytes a caller points it at.

use std::io;

use md5_saveable::Digest as _;
use md5_saveable::block_api::Md5Core;
use md5_saveable::digest::array::Array;
use md5_saveable::digest::block_api::{Buffer, CoreProxy as _};
use md5_saveable::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256};

use crate::id::FileId;

/// An MD5 being computed over a file's bytes from the start, which knows how many bytes it has
/// taken in and can be saved and restored.
#[derive(Clone)]
pub struct ResumableMd5 {
    /// `Md5Core`'s four state words and its count of compressed blocks (held here rather than in
    /// an `Md5Core`, whose fields are private, so that the blocks can go through [`compress`]).
    words: [u32; 4],
    blocks: u64,
    /// The bytes of the block not yet complete.
    tail: Buffer<Md5Core>,
    len: u64,
}

impl std::fmt::Debug for ResumableMd5 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumableMd5")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Default for ResumableMd5 {
    fn default() -> Self {
        let (words, blocks) = split_core(&Md5Core::default());
        Self {
            words,
            blocks,
            tail: Buffer::<Md5Core>::default(),
            len: 0,
        }
    }
}

/// MD5's compression function over whole blocks: [`md5_vl`]'s on CPUs with AVX-512VL (Intel),
/// else `fast-md5`'s assembly on x86-64 and aarch64 (its portable Rust elsewhere).
fn compress(words: &mut [u32; 4], blocks: &[[u8; 64]]) {
    match vl() {
        Some(vl) => vl.compress(words, blocks),
        None => {
            for block in blocks {
                fast_md5::transform(words, block);
            }
        }
    }
}

/// The AVX-512VL compressor, when this CPU has it (asked once).
fn vl() -> Option<md5_vl::Compressor> {
    static VL: std::sync::OnceLock<Option<md5_vl::Compressor>> = std::sync::OnceLock::new();
    *VL.get_or_init(md5_vl::Compressor::detect)
}

/// The MD5 of `data`, in one call.
#[must_use]
pub fn md5_of(data: &[u8]) -> FileId {
    let mut hasher = ResumableMd5::new();
    hasher.update(data);
    hasher.finalize()
}

/// The state words and block count of `core`, read from its serialised state (16 bytes of
/// little-endian words, then the count).
fn split_core(core: &Md5Core) -> ([u32; 4], u64) {
    let bytes = core.serialize();
    let mut words = [0u32; 4];
    for (w, b) in words.iter_mut().zip(bytes.chunks_exact(4)) {
        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    let mut count = [0u8; 8];
    count.copy_from_slice(&bytes[16..24]);
    (words, u64::from_le_bytes(count))
}

/// The first bytes of every saved record: what it is and its version.
const MAGIC: &[u8; 16] = b"barge md5 state1";

/// The length of one saved state, as `md-5` 0.11 serialises it.
fn state_len() -> usize {
    md5_saveable::Md5::default().serialize().len()
}

impl ResumableMd5 {
    /// A hash of no bytes yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        let (words, blocks) = (&mut self.words, &mut self.blocks);
        self.tail.digest_blocks(data, |full| {
            *blocks = blocks.wrapping_add(full.len() as u64);
            compress(words, Array::cast_slice_to_core(full));
        });
        self.len += data.len() as u64;
    }

    /// How many bytes have been taken in.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no byte has been taken in.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The MD5 of the bytes taken in.
    #[must_use]
    pub fn finalize(self) -> FileId {
        FileId(self.hasher().finalize().into())
    }

    /// The same state as `md-5` 0.11's hasher, which pads, finishes and saves it.
    fn hasher(&self) -> md5_saveable::Md5 {
        let mut core = SerializedState::<Md5Core>::default();
        for (b, w) in core.chunks_exact_mut(4).zip(self.words) {
            b.copy_from_slice(&w.to_le_bytes());
        }
        core[16..24].copy_from_slice(&self.blocks.to_le_bytes());
        // `Md5Core` takes any 24 bytes (it has no invalid state); the default is never used.
        let core = Md5Core::deserialize(&core).unwrap_or_default();
        md5_saveable::Md5::compose(core, self.tail.clone())
    }

    /// The state of `hasher` (`len` bytes taken in).
    fn from_hasher(hasher: md5_saveable::Md5, len: u64) -> Self {
        let (core, tail) = hasher.decompose();
        let (words, blocks) = split_core(&core);
        Self {
            words,
            blocks,
            tail,
            len,
        }
    }

    /// Goes on hashing `file` from [`len`](Self::len) to `to`, with positioned reads.
    ///
    /// # Errors
    /// A failed read, or `UnexpectedEof` when the file ends before `to`.
    pub fn hash_file_to(&mut self, file: &std::fs::File, to: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        let mut buf = vec![0u8; crate::transfer::CHUNK];
        while self.len < to {
            let want = usize::try_from(to - self.len)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = file.read_at(&mut buf[..want], self.len)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.update(&buf[..n]);
        }
        Ok(())
    }
}

/// Encodes `states` (each knows its length) as one record for `tag`: the magic, the tag's
/// SHA-256, the count, each length and state, and a SHA-256 of all that.
#[must_use]
pub fn encode(tag: &[u8], states: &[ResumableMd5]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 72 + states.len() * (8 + state_len()));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&Sha256::digest(tag));
    out.extend_from_slice(&(states.len() as u64).to_le_bytes());
    for s in states {
        out.extend_from_slice(&s.len.to_le_bytes());
        out.extend_from_slice(&s.hasher().serialize());
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// Decodes a record made by [`encode`] for the same `tag`; `None` for anything else (another
/// tag, another version, a torn or damaged record, more than `max` states).
#[must_use]
pub fn decode(tag: &[u8], bytes: &[u8], max: usize) -> Option<Vec<ResumableMd5>> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if Sha256::digest(body).as_slice() != sum {
        return None;
    }
    let rest = body.strip_prefix(MAGIC.as_slice())?;
    let rest = rest.strip_prefix(Sha256::digest(tag).as_slice())?;
    let (count, mut rest) = rest.split_first_chunk::<8>()?;
    let count = usize::try_from(u64::from_le_bytes(*count)).ok()?;
    if count > max || rest.len() != count * (8 + state_len()) {
        return None;
    }
    let mut states = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, tail) = rest.split_first_chunk::<8>()?;
        let (state, tail) = tail.split_at(state_len());
        let state = state.try_into().ok()?;
        let hasher = md5_saveable::Md5::deserialize(state).ok()?;
        states.push(ResumableMd5::from_hasher(hasher, u64::from_le_bytes(*len)));
        rest = tail;
    }
    Some(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5(data: &[u8]) -> FileId {
        let mut h = ResumableMd5::new();
        h.update(data);
        h.finalize()
    }

    #[test]
    fn a_restored_state_goes_on_to_the_same_md5() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        // Cut points on and off block boundaries, including 0 and the end.
        for cut in [0, 1, 63, 64, 65, 4096, 9_999, 10_000] {
            let mut h = ResumableMd5::new();
            h.update(&data[..cut]);
            let saved = encode(b"tag", &[h]);
            let mut back = decode(b"tag", &saved, 4).expect("decodes").remove(0);
            assert_eq!(back.len(), cut as u64);
            back.update(&data[cut..]);
            assert_eq!(back.finalize(), md5(&data), "cut at {cut}");
        }
        // And the same as the crate's usual MD5.
        use md5::Digest as _;
        let want: [u8; 16] = md5::Md5::digest(&data).into();
        assert_eq!(md5(&data).0, want);
    }

    #[test]
    fn updates_of_any_size_give_both_crates_md5() {
        use md5::Digest as _;
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 253) as u8).collect();
        // Pieces of every size around a block (and a few large ones), each followed by a save
        // and a restore, so the tail, the block count and the words all go through a record.
        let mut h = ResumableMd5::new();
        let mut at = 0;
        for step in (0..130).chain([1000, 4096, 65_536, 100_001]).cycle() {
            let end = (at + step).min(data.len());
            h.update(&data[at..end]);
            at = end;
            let saved = encode(b"t", std::slice::from_ref(&h));
            h = decode(b"t", &saved, 1).expect("decodes").remove(0);
            assert_eq!(h.len(), at as u64);
            let want: [u8; 16] = md5::Md5::digest(&data[..at]).into();
            assert_eq!(h.clone().finalize().0, want, "after {at} bytes");
            let other: [u8; 16] = md5_saveable::Md5::digest(&data[..at]).into();
            assert_eq!(want, other);
            if at == data.len() {
                break;
            }
        }
    }

    proptest::proptest! {
        /// Random bytes (every bit pattern reaches the assembly), fed in random pieces: the
        /// same MD5 as RustCrypto's, with its own assembly.
        #[test]
        fn random_bytes_in_random_pieces_give_rustcryptos_md5(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(0usize..3000, 0..8),
        ) {
            use md5::Digest as _;
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut h = ResumableMd5::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                h.update(&data[at..cut]);
                at = cut;
            }
            let want: [u8; 16] = md5::Md5::digest(&data).into();
            proptest::prop_assert_eq!(h.finalize().0, want);
            proptest::prop_assert_eq!(md5_of(&data).0, want);
        }
    }

    #[test]
    fn records_for_another_tag_or_damaged_are_refused() {
        let mut h = ResumableMd5::new();
        h.update(b"some bytes");
        let saved = encode(b"tag", &[h.clone(), h]);
        assert_eq!(decode(b"tag", &saved, 2).map(|v| v.len()), Some(2));
        assert!(
            decode(b"tag", &saved, 1).is_none(),
            "more states than allowed"
        );
        assert!(decode(b"other", &saved, 2).is_none());
        for i in [0, 20, 60, saved.len() / 2, saved.len() - 1] {
            let mut bad = saved.clone();
            bad[i] ^= 1;
            assert!(decode(b"tag", &bad, 2).is_none(), "flipped byte {i}");
        }
        for n in [0, 1, 31, 32, saved.len() - 1] {
            assert!(decode(b"tag", &saved[..n], 2).is_none(), "cut to {n}");
        }
    }
}
