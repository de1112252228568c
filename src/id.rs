//! File ids: the MD5 of a file's content, as the store computes it and the protocol carries it.
//!
//! It lives beside the name rules ([`crate::name`]) because both are plain values shared by the
//! store, the protocol and the client; this module does no I/O and knows no wire syntax beyond
//! the 32 hexadecimal characters of `PROTOCOL.md` section 4.

use std::fmt;
use std::str::FromStr;

/// A file's id: the MD5 of its content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub [u8; 16]);

/// Text that is not an id: not exactly 32 hexadecimal characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid file id {0:?}: expected 32 hexadecimal characters")]
pub struct BadId(pub String);

impl FileId {
    /// Reads an id from 32 hexadecimal characters, in either case.
    ///
    /// # Errors
    /// [`BadId`] when `s` is not exactly that.
    pub fn parse(s: &str) -> Result<Self, BadId> {
        let mut out = [0u8; 16];
        if s.len() != 32 || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(BadId(s.to_owned()));
        }
        Ok(Self(out))
    }

    /// The id as 32 lower-case hexadecimal characters.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({})", self.to_hex())
    }
}

impl FromStr for FileId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let id = FileId::parse("D41D8CD98F00B204E9800998ECF8427E").unwrap();
        assert_eq!(id.to_string(), "d41d8cd98f00b204e9800998ecf8427e");
        for bad in [
            "",
            "d41d8cd98f00b204e9800998ecf8427",
            "d41d8cd98f00b204e9800998ecf8427eX",
            "g41d8cd98f00b204e9800998ecf8427e",
        ] {
            assert!(FileId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
