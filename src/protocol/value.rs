//! The values that travel inside lines: ids, sizes, `name;size`, `id;name;size`, and the data
//! carried by the `210` and `213` replies (`PROTOCOL.md` sections 4 and 5).

use std::fmt;

use crate::id::BadId;
pub use crate::id::FileId;
use crate::name::{FileName, NameError};

/// Why a value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A size was not 1 to 20 decimal digits, or did not fit in 64 bits.
    #[error("invalid size {0:?}: expected a number of bytes written with the digits 0-9")]
    BadSize(String),
    /// A file id was not 32 hexadecimal characters.
    #[error("invalid file id {0:?}: expected 32 hexadecimal characters")]
    BadId(String),
    /// A `name;size` or `id;name;size` had no `;` where one was required.
    #[error("expected {0}")]
    MissingField(&'static str),
    /// The name part broke the naming rules.
    #[error("invalid name: {0}")]
    Name(#[from] NameError),
    /// A reply's text did not carry the data its code promises.
    #[error("malformed reply data: {0:?}")]
    BadReply(String),
}

impl From<BadId> for ValueError {
    fn from(e: BadId) -> Self {
        Self::BadId(e.0)
    }
}

/// Parses a size as `PROTOCOL.md` section 4 defines it: 1 to 20 ASCII digits, fitting in a `u64`.
///
/// Signs, spaces, exponents and empty strings are refused; `str::parse` alone would accept `+5`.
///
/// # Errors
/// [`ValueError::BadSize`] when the text is not such a number.
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::BadSize(s.to_owned()));
    }
    s.parse().map_err(|_| ValueError::BadSize(s.to_owned()))
}

/// The `name;size` an upload announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadSpec {
    /// Where the file goes.
    pub name: FileName,
    /// How many bytes follow.
    pub size: u64,
}

impl UploadSpec {
    /// Splits `name;size` at the last `;`.
    ///
    /// # Errors
    /// A missing `;`, a bad size, or a bad name, in that order of checking.
    pub fn decode(s: &str) -> Result<Self, ValueError> {
        let (name, size) = split_size(s)?;
        let size = parse_size(size)?;
        Ok(Self {
            name: FileName::parse(name)?,
            size,
        })
    }

    /// The `name;size` text, without a line ending.
    #[must_use]
    pub fn encode(&self) -> String {
        format!("{};{}", self.name.as_str(), self.size)
    }
}

/// Splits off the size after the last `;`.
pub(crate) fn split_size(s: &str) -> Result<(&str, &str), ValueError> {
    s.rsplit_once(';')
        .ok_or(ValueError::MissingField("name;size"))
}

/// One line of a listing: `id;name;size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingEntry {
    /// The MD5 of the content.
    pub id: FileId,
    /// The file's name.
    pub name: FileName,
    /// Its size in bytes.
    pub size: u64,
}

impl ListingEntry {
    /// Decodes `id;name;size`: the id is the first 32 characters, the size follows the last `;`.
    ///
    /// # Errors
    /// A field that is missing or malformed, including a name that breaks the naming rules.
    pub fn decode(s: &str) -> Result<Self, ValueError> {
        let (id, rest) = s
            .split_once(';')
            .ok_or(ValueError::MissingField("id;name;size"))?;
        let id = FileId::parse(id)?;
        let (name, size) =
            split_size(rest).map_err(|_| ValueError::MissingField("id;name;size"))?;
        Ok(Self {
            id,
            size: parse_size(size)?,
            name: FileName::parse(name)?,
        })
    }

    /// Writes `id;name;size` (no line ending) into `out`.
    pub fn encode_into(&self, out: &mut String) {
        Self::encode_parts(&self.id, &self.name, self.size, out);
    }

    /// Writes the line of a file given by parts, without building a [`ListingEntry`] (a
    /// server writes one per file of a listing).
    pub fn encode_parts(id: &FileId, name: &FileName, size: u64, out: &mut String) {
        use fmt::Write as _;
        let mut hex = [0u8; 32];
        if hex::encode_to_slice(id.0, &mut hex).is_ok() {
            out.push_str(std::str::from_utf8(&hex).unwrap_or_default());
        }
        let _ = write!(out, ";{};{size}", name.as_str());
    }
}

/// The data of a `210` reply: how many listing lines follow, and how many files are still being
/// hashed (`PROTOCOL.md` section 5.1). The text is `N file(s)`, or `0 No files available at the
/// moment`, followed by ` (P more being indexed)` when `P` is not zero; both numbers are fields
/// of the reply, not prose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListingHeader {
    /// The number of `id;name;size` lines that follow.
    pub count: u64,
    /// Files found but not listed yet because their id is still being computed.
    pub pending: u64,
}

/// What a listing's pending count is wrapped in: ` (P more being indexed)`.
const PENDING_OPEN: &str = " (";
const PENDING_CLOSE: &str = " more being indexed)";

impl ListingHeader {
    /// The text of the `210` reply.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut text = match self.count {
            0 => "0 No files available at the moment".to_owned(),
            1 => "1 file".to_owned(),
            n => format!("{n} files"),
        };
        if self.pending > 0 {
            text.push_str(&format!("{PENDING_OPEN}{}{PENDING_CLOSE}", self.pending));
        }
        text
    }

    /// Reads the count from the first word of a `210` or `211` reply's text, and the pending
    /// count from its ` (P more being indexed)` suffix when there is one (0 otherwise).
    ///
    /// # Errors
    /// [`ValueError::BadReply`] when the first word is not a count, or the suffix is there but
    /// its number is not.
    pub fn decode(text: &str) -> Result<Self, ValueError> {
        let bad = || ValueError::BadReply(text.to_owned());
        let first = text.split(' ').next().unwrap_or_default();
        let count = parse_size(first).map_err(|_| bad())?;
        let pending = match text.strip_suffix(PENDING_CLOSE) {
            Some(rest) => {
                let (_, digits) = rest.rsplit_once(PENDING_OPEN).ok_or_else(bad)?;
                parse_size(digits).map_err(|_| bad())?
            }
            None => 0,
        };
        Ok(Self { count, pending })
    }
}

/// The data of a `213` reply: `<size> <id> <name>`, after which `size` bytes follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadHeader {
    /// The number of bytes that follow.
    pub size: u64,
    /// The id (MD5) the bytes must hash to.
    pub id: FileId,
    /// The file's name on the server.
    pub name: FileName,
}

impl DownloadHeader {
    /// Decodes the text of a `213` reply.
    ///
    /// # Errors
    /// A field that is missing or malformed, including a name that breaks the naming rules (a
    /// hostile server must not be able to hand the client a path like `../../.bashrc`).
    pub fn decode(text: &str) -> Result<Self, ValueError> {
        let mut parts = text.splitn(3, ' ');
        let (Some(size), Some(id), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ValueError::BadReply(text.to_owned()));
        };
        Ok(Self {
            size: parse_size(size)?,
            id: FileId::parse(id)?,
            name: FileName::parse(name)?,
        })
    }

    /// The reply text `<size> <id> <name>`.
    #[must_use]
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.size, self.id, self.name.as_str())
    }
}

/// The data of a `214` reply (`DOWNLOAD_FROM`, `PROTOCOL.md` section 5.12):
/// `<count> <offset> <id> <name>`, after which `count` bytes follow: the file's bytes from
/// `offset` to its end, so the file's size is `offset + count`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestHeader {
    /// The number of bytes that follow.
    pub count: u64,
    /// Where they start in the file.
    pub offset: u64,
    /// The id (MD5) of the whole file.
    pub id: FileId,
    /// The file's name on the server.
    pub name: FileName,
}

impl RestHeader {
    /// Decodes the text of a `214` reply.
    ///
    /// # Errors
    /// A field that is missing or malformed, a name that breaks the naming rules, or an
    /// offset and count whose sum is not a size.
    pub fn decode(text: &str) -> Result<Self, ValueError> {
        let mut parts = text.splitn(4, ' ');
        let (Some(count), Some(offset), Some(id), Some(name)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ValueError::BadReply(text.to_owned()));
        };
        let header = Self {
            count: parse_size(count)?,
            offset: parse_size(offset)?,
            id: FileId::parse(id)?,
            name: FileName::parse(name)?,
        };
        header
            .offset
            .checked_add(header.count)
            .ok_or_else(|| ValueError::BadReply(text.to_owned()))?;
        Ok(header)
    }

    /// The reply text `<count> <offset> <id> <name>`.
    #[must_use]
    pub fn encode(&self) -> String {
        format!(
            "{} {} {} {}",
            self.count,
            self.offset,
            self.id,
            self.name.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (s, want) in [
            ("0", Some(0)),
            ("123456", Some(123_456)),
            ("18446744073709551615", Some(u64::MAX)),
        ] {
            assert_eq!(parse_size(s).ok(), want, "{s}");
        }
        for bad in [
            "",
            "-1",
            "+1",
            "1e9",
            " 1",
            "1 ",
            "18446744073709551616",
            "0x10",
            "１２",
            "999999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn upload_spec_splits_at_last_semicolon() {
        let spec = UploadSpec::decode("notes; draft 2.txt;1234").unwrap();
        assert_eq!(spec.name.as_str(), "notes; draft 2.txt");
        assert_eq!(spec.size, 1234);
        assert_eq!(UploadSpec::decode(&spec.encode()).unwrap(), spec);
        assert_eq!(
            UploadSpec::decode("noseparator"),
            Err(ValueError::MissingField("name;size"))
        );
        assert!(matches!(
            UploadSpec::decode("a;-1"),
            Err(ValueError::BadSize(_))
        ));
        assert!(matches!(
            UploadSpec::decode(";5"),
            Err(ValueError::Name(NameError::Empty))
        ));
        assert!(matches!(
            UploadSpec::decode("../x;5"),
            Err(ValueError::Name(NameError::DotComponent))
        ));
    }

    #[test]
    fn listing_entry_round_trip() {
        let e = ListingEntry::decode("9e107d9d372bb6826bd81d3542a419d6;a;b;c.txt;43").unwrap();
        assert_eq!(e.name.as_str(), "a;b;c.txt");
        assert_eq!(e.size, 43);
        let mut s = String::new();
        e.encode_into(&mut s);
        assert_eq!(s, "9e107d9d372bb6826bd81d3542a419d6;a;b;c.txt;43");
        for bad in [
            "",
            "x;y;1",
            "9e107d9d372bb6826bd81d3542a419d6;43",
            "9e107d9d372bb6826bd81d3542a419d6;../a;4",
        ] {
            assert!(ListingEntry::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn download_header() {
        let h = DownloadHeader::decode("43 9e107d9d372bb6826bd81d3542a419d6 my fox.txt").unwrap();
        assert_eq!(h.size, 43);
        assert_eq!(h.name.as_str(), "my fox.txt");
        assert_eq!(DownloadHeader::decode(&h.encode()).unwrap(), h);
        for bad in [
            "",
            "43",
            "43 9e107d9d372bb6826bd81d3542a419d6",
            "x 9e107d9d372bb6826bd81d3542a419d6 a",
            "4 9e107d9d372bb6826bd81d3542a419d6 ../../.bashrc",
        ] {
            assert!(DownloadHeader::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rest_header() {
        let h = RestHeader::decode("40 3 9e107d9d372bb6826bd81d3542a419d6 my fox.txt").unwrap();
        assert_eq!((h.count, h.offset), (40, 3));
        assert_eq!(h.name.as_str(), "my fox.txt");
        assert_eq!(RestHeader::decode(&h.encode()).unwrap(), h);
        for bad in [
            "",
            "40 3 9e107d9d372bb6826bd81d3542a419d6",
            "40 x 9e107d9d372bb6826bd81d3542a419d6 a",
            "18446744073709551615 1 9e107d9d372bb6826bd81d3542a419d6 a",
            "4 0 9e107d9d372bb6826bd81d3542a419d6 ../x",
        ] {
            assert!(RestHeader::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn listing_header() {
        let cases = [
            ("0 No files available at the moment", 0, 0),
            ("1 file", 1, 0),
            ("12 files (3 more being indexed)", 12, 3),
            (
                "0 No files available at the moment (5 more being indexed)",
                0,
                5,
            ),
        ];
        for (text, count, pending) in cases {
            let h = ListingHeader { count, pending };
            assert_eq!(h.encode(), text);
            assert_eq!(ListingHeader::decode(text).unwrap(), h, "{text}");
        }
        // Other servers may word the rest freely; only the first word must be a count.
        assert_eq!(ListingHeader::decode("7").unwrap().count, 7);
        assert_eq!(
            ListingHeader::decode("2 files (lots more)")
                .unwrap()
                .pending,
            0
        );
        assert!(ListingHeader::decode("files 12").is_err());
        assert!(ListingHeader::decode("2 files (x more being indexed)").is_err());
    }
}
