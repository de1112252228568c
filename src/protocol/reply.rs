//! Status lines: `NNN text` (`PROTOCOL.md` sections 2 and 6).

use std::fmt;

use super::value::ValueError;

/// A three-digit status code. The first digit is the kind of answer: 2 done, 3 go on,
/// 4 refused, 5 failed on the server's side.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(u16);

#[allow(missing_docs)] // Each constant is documented in PROTOCOL.md section 6.
impl Code {
    pub const LISTING: Self = Self(210);
    pub const HELP: Self = Self(211);
    pub const FILE_FOLLOWS: Self = Self(213);
    pub const REST_FOLLOWS: Self = Self(214);
    pub const GREETING: Self = Self(220);
    pub const BYE: Self = Self(221);
    pub const STORED: Self = Self(226);
    pub const DONE: Self = Self(250);
    pub const LOGGED_IN: Self = Self(230);
    pub const PAIRED: Self = Self(236);
    pub const SEND_SPEC: Self = Self(330);
    pub const SEND_ID: Self = Self(331);
    pub const SEND_CURRENT_NAME: Self = Self(332);
    pub const SEND_NEW_NAME: Self = Self(333);
    pub const SEND_PASS: Self = Self(334);
    pub const PAIR_CONTINUE: Self = Self(336);
    pub const READY: Self = Self(350);
    pub const RESUMING: Self = Self(352);
    pub const BAD_REQUEST: Self = Self(400);
    pub const FORBIDDEN: Self = Self(403);
    pub const NOT_FOUND: Self = Self(404);
    pub const IDLE_TIMEOUT: Self = Self(408);
    pub const CONFLICT: Self = Self(409);
    pub const TOO_LARGE: Self = Self(413);
    pub const LINE_TOO_LONG: Self = Self(414);
    pub const BEYOND_END: Self = Self(416);
    pub const INVALID_NAME: Self = Self(422);
    pub const PAIR_FAILED: Self = Self(435);
    pub const LISTING_INCOMPLETE: Self = Self(451);
    pub const CHECKSUM_MISMATCH: Self = Self(460);
    pub const INTERNAL: Self = Self(500);
    pub const NOT_LOGGED_IN: Self = Self(530);
    pub const UNAVAILABLE: Self = Self(503);
    pub const INSUFFICIENT_STORAGE: Self = Self(507);
}

impl Code {
    /// A code from its number, if it has three digits and a known first digit (2 to 5).
    #[must_use]
    pub fn new(n: u16) -> Option<Self> {
        (200..600).contains(&n).then_some(Self(n))
    }

    /// The number.
    #[must_use]
    pub fn as_u16(self) -> u16 {
        self.0
    }

    /// 2xx: the command succeeded.
    #[must_use]
    pub fn is_success(self) -> bool {
        self.0 / 100 == 2
    }

    /// 3xx: the server waits for more from the client.
    #[must_use]
    pub fn is_intermediate(self) -> bool {
        self.0 / 100 == 3
    }

    /// 4xx or 5xx: an error.
    #[must_use]
    pub fn is_error(self) -> bool {
        self.0 >= 400
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({})", self.0)
    }
}

/// One status line from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// What happened.
    pub code: Code,
    /// The text after the code: data first where the code carries data, then words for people.
    pub text: String,
}

impl Reply {
    /// A reply with the given code and text. Line breaks in `text` are replaced by spaces so a
    /// reply is always exactly one line.
    #[must_use]
    pub fn new(code: Code, text: impl Into<String>) -> Self {
        let mut text = text.into();
        if text.contains(['\n', '\r']) {
            text = text.replace(['\n', '\r'], " ");
        }
        Self { code, text }
    }

    /// Appends `NNN text\n` to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.code.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.text.as_bytes());
        out.push(b'\n');
    }

    /// Reads a status line (without its line ending).
    ///
    /// # Errors
    /// [`ValueError::BadReply`] when the line does not start with three digits (2xx to 5xx)
    /// followed by a space or the end of the line.
    pub fn decode(line: &str) -> Result<Self, ValueError> {
        let bad = || ValueError::BadReply(line.to_owned());
        let digits = line.get(..3).ok_or_else(bad)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let code = digits.parse().ok().and_then(Code::new).ok_or_else(bad)?;
        let text = match line.get(3..) {
            Some("") => "",
            Some(rest) => rest.strip_prefix(' ').ok_or_else(bad)?,
            None => return Err(bad()),
        };
        Ok(Self {
            code,
            text: text.to_owned(),
        })
    }

    /// The first word of the text (the data of replies that carry data).
    #[must_use]
    pub fn first_word(&self) -> &str {
        self.text.split(' ').next().unwrap_or_default()
    }
}

impl fmt::Display for Reply {
    /// The status line, escaped for a terminal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, crate::name::escape(&self.text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for r in [
            Reply::new(Code::GREETING, "barge/1 ready"),
            Reply::new(Code::LISTING, "0 No files available at the moment"),
            Reply::new(Code::BYE, ""),
        ] {
            let mut buf = Vec::new();
            r.encode_into(&mut buf);
            assert_eq!(buf.last(), Some(&b'\n'));
            let line = std::str::from_utf8(&buf[..buf.len() - 1]).unwrap();
            assert_eq!(Reply::decode(line).unwrap(), r);
        }
    }

    #[test]
    fn new_keeps_one_line() {
        let r = Reply::new(Code::INTERNAL, "a\nb\rc");
        assert_eq!(r.text, "a b c");
    }

    #[test]
    fn decode_rejects_garbage() {
        for bad in [
            "",
            "22",
            "abc hello",
            "2200 x",
            "199 x",
            "600 x",
            "22x y",
            "220x",
        ] {
            assert!(Reply::decode(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Reply::decode("221").unwrap().text, "");
        assert_eq!(Reply::decode("226 abc def").unwrap().first_word(), "abc");
    }
}
