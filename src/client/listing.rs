//! Reading a listing (`PROTOCOL.md` section 5.1) within the client's limits, with no I/O: the
//! client feeds it the `210` text and then each line; the fuzz target feeds it bytes.
//!
//! Threat: a server (or whoever answers in its place) that announces or sends more than the
//! client can hold, or lines that are not listing lines. Answers: the announced count is checked
//! against [`ListingLimit`] before a line is read, the text received is counted against the
//! limit's byte bound, every line is decoded with the naming rules, and nothing is reserved on
//! the server's word alone.

use crate::protocol::{ListingEntry, ListingHeader};

use super::ClientError;
use super::types::Listing;

/// The most files the client accepts in one listing, and so the most memory a listing may take:
/// [`ListingLimit::bytes`] of text at most. The server has its own limit (`--max-files`, one
/// million by default), which files dropped into its folder by hand can pass; this one is the
/// client's, and a user can raise it (`barge --max-listing N`, or `BARGE_MAX_LISTING`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListingLimit {
    /// The most lines (files) accepted in one listing.
    pub files: u64,
}

impl ListingLimit {
    /// Four times the server's default file limit.
    pub const DEFAULT: Self = Self { files: 4_000_000 };

    /// Listing text accepted per file on average: a line is 56 bytes plus its name (at most
    /// 1,024), and most names are short.
    pub const BYTES_PER_FILE: u64 = 256;

    /// The most listing text accepted, in bytes: [`BYTES_PER_FILE`](Self::BYTES_PER_FILE) per
    /// file allowed.
    #[must_use]
    pub fn bytes(self) -> u64 {
        self.files.saturating_mul(Self::BYTES_PER_FILE)
    }
}

impl Default for ListingLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A listing being read: made from the `210` reply's text, then given each line.
#[derive(Debug)]
pub struct ListingReader {
    header: ListingHeader,
    limit: ListingLimit,
    entries: Vec<ListingEntry>,
    bytes: u64,
}

impl ListingReader {
    /// Starts reading the listing a `210` reply with `text` announces.
    ///
    /// # Errors
    /// [`ClientError::Protocol`] for a text without a count, or [`ClientError::ListingTooLarge`]
    /// when the count is over `limit` (checked before any line is read).
    pub fn new(text: &str, limit: ListingLimit) -> Result<Self, ClientError> {
        let header = ListingHeader::decode(text)
            .map_err(|e| ClientError::Protocol(format!("bad listing header: {e}")))?;
        if header.count > limit.files {
            return Err(ClientError::ListingTooLarge {
                files: header.count,
                limit: limit.files,
            });
        }
        Ok(Self {
            header,
            limit,
            // Not `with_capacity(count)`: the count is the server's word.
            entries: Vec::new(),
            bytes: 0,
        })
    }

    /// How many lines are still due.
    #[must_use]
    pub fn remaining(&self) -> u64 {
        self.header.count - self.entries.len() as u64
    }

    /// Bytes of listing text received so far.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Takes one line (without its line ending).
    ///
    /// # Errors
    /// [`ClientError::Protocol`] for a line that is not `id;name;size` with a valid name, a
    /// line beyond the count, or text past the limit's byte bound.
    pub fn push(&mut self, line: &str) -> Result<(), ClientError> {
        if self.remaining() == 0 {
            return Err(ClientError::Protocol(
                "the server sent more listing lines than it announced".to_owned(),
            ));
        }
        self.bytes = self.bytes.saturating_add(line.len() as u64 + 1);
        if self.bytes > self.limit.bytes() {
            return Err(ClientError::Protocol(format!(
                "the listing is over {} bytes, more than this client accepts for {} files; \
                 raise it with --max-listing",
                self.limit.bytes(),
                self.limit.files
            )));
        }
        let entry = ListingEntry::decode(line)
            .map_err(|e| ClientError::Protocol(format!("bad listing line: {e}")))?;
        self.entries.push(entry);
        Ok(())
    }

    /// The listing, once every announced line came.
    ///
    /// # Errors
    /// [`ClientError::Protocol`] when lines are still due.
    pub fn finish(self) -> Result<Listing, ClientError> {
        if self.remaining() > 0 {
            return Err(ClientError::Protocol(format!(
                "the listing ended after {} of {} lines",
                self.entries.len(),
                self.header.count
            )));
        }
        Ok(Listing {
            entries: self.entries,
            pending: (self.header.pending > 0).then_some(self.header.pending),
        })
    }
}

/// Reads a whole `210` reply and its lines from `bytes` (what a server would send after
/// `LIST_FILES`), within `limit`: the decoder the client uses, without a connection. For tests
/// and the fuzz target.
///
/// # Errors
/// As [`ListingReader`], or a first line that is not a `210` reply, or text that is not UTF-8.
pub fn decode_listing(bytes: &[u8], limit: ListingLimit) -> Result<Listing, ClientError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ClientError::Protocol("the server sent a line that is not UTF-8".into()))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let head = lines.next().unwrap_or_default();
    let reply = crate::protocol::Reply::decode(head)
        .map_err(|e| ClientError::Protocol(format!("bad reply: {e}")))?;
    if reply.code != crate::protocol::Code::LISTING {
        return Err(ClientError::Protocol(format!("not a listing: {reply}")));
    }
    let mut reader = ListingReader::new(&reply.text, limit)?;
    while reader.remaining() > 0 {
        match lines.next() {
            Some(line) => reader.push(line)?,
            None => break,
        }
    }
    reader.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "9e107d9d372bb6826bd81d3542a419d6";

    fn lines(n: usize) -> String {
        let mut s = format!("210 {n} files\n");
        for i in 0..n {
            s.push_str(&format!("{ID};f{i};{i}\n"));
        }
        s
    }

    #[test]
    fn a_whole_listing_is_read() -> Result<(), ClientError> {
        let l = decode_listing(lines(3).as_bytes(), ListingLimit::DEFAULT)?;
        assert_eq!(l.entries.len(), 3);
        assert_eq!(l.entries[2].name.as_str(), "f2");
        assert_eq!(l.pending, None);
        let l = decode_listing(
            b"210 0 No files available at the moment (4 more being indexed)\n",
            ListingLimit::DEFAULT,
        )?;
        assert_eq!((l.entries.len(), l.pending), (0, Some(4)));
        Ok(())
    }

    #[test]
    fn limits_and_malformed_listings_are_refused() {
        let small = ListingLimit { files: 2 };
        // Over the count: refused before a line is read, in words that say what to do.
        let e = decode_listing(lines(3).as_bytes(), small).err();
        assert!(
            matches!(e, Some(ClientError::ListingTooLarge { files: 3, limit: 2 })),
            "{e:?}"
        );
        assert!(
            e.is_some_and(|e| e.to_string().contains("--max-listing")),
            "no hint"
        );
        // At the count: accepted.
        assert!(decode_listing(lines(2).as_bytes(), small).is_ok());
        // Over the byte bound (long names), though within the count.
        let long = "n".repeat(255);
        let text = format!("210 2 files\n{ID};{long}/{long};1\n{ID};{long};2\n");
        assert!(decode_listing(text.as_bytes(), ListingLimit { files: 2 }).is_err());
        assert!(decode_listing(text.as_bytes(), ListingLimit { files: 4 }).is_ok());
        // Short, malformed, or not a listing.
        for bad in [
            "210 3 files\nx\n".to_owned(),
            format!("210 2 files\n{ID};a;1\n"),
            format!("210 1 file\n{ID};../a;1\n"),
            "451 The listing is incomplete\n".to_owned(),
            "210 many files\n".to_owned(),
        ] {
            assert!(
                decode_listing(bad.as_bytes(), ListingLimit::DEFAULT).is_err(),
                "{bad:?}"
            );
        }
    }
}
