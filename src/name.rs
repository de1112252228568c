//! File names as they travel on the wire, checked once.
//!
//! Every name that comes from the network (on the server) or from a server (on the client) goes
//! through [`FileName::parse`] before it touches anything else. The rules are those of
//! `PROTOCOL.md` section 4 ("File name"). This module does no I/O: it cannot know about symlinks
//! or what exists on disk; the store enforces those when it opens paths.

use std::fmt;

/// The longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 1024;
/// The longest single `/`-separated component accepted, in bytes (the common filesystem limit).
pub const MAX_COMPONENT_LEN: usize = 255;
/// The most `/`-separated components a name may have (so at most 31 folders above a file).
/// Deep names cost a descriptor, an inode and a lookup per level on every open and listing; no
/// real tree needs more (issue 10, item 5).
pub const MAX_DEPTH: usize = 32;
/// The server's private state folder at the top of the shared folder; never reachable by name.
pub const STATE_DIR: &str = ".barge";

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is the empty string.
    #[error("the name is empty")]
    Empty,
    /// The whole name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("the name is {0} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    /// One component is longer than [`MAX_COMPONENT_LEN`] bytes.
    #[error("a part of the name is {0} bytes long; the limit is {MAX_COMPONENT_LEN}")]
    ComponentTooLong(usize),
    /// The name has more than [`MAX_DEPTH`] components.
    #[error("the name is {0} levels deep; the limit is {MAX_DEPTH}")]
    TooDeep(usize),
    /// The name starts or ends with `/`, or contains `//`.
    #[error("the name has an empty part (a leading, trailing or doubled '/')")]
    EmptyComponent,
    /// A component is `.` or `..`.
    #[error("the name has a '.' or '..' part")]
    DotComponent,
    /// The name contains a backslash.
    #[error("the name contains a backslash")]
    Backslash,
    /// The name contains a control character (including NUL, CR, LF, TAB, ESC) or a line or
    /// paragraph separator (U+2028, U+2029).
    #[error("the name contains a control character or a line break")]
    ControlChar,
    /// The name contains an invisible, formatting or bidi character that can disguise it
    /// (Unicode general category Cf, `Default_Ignorable_Code_Point`, `Bidi_Control`).
    #[error("the name contains an invisible or formatting character (such as U+202E or U+2060)")]
    FormattingChar,
    /// The first component looks like a Windows drive prefix (`C:`).
    #[error("the name starts with a drive prefix")]
    DrivePrefix,
    /// Joined to the folder a confined access sees as the whole share, the name would be
    /// longer than [`MAX_NAME_LEN`] bytes or deeper than [`MAX_DEPTH`] (the numbers are not
    /// given: they would tell the folder's length and depth).
    #[error(
        "the name is too long or too deep once joined to the folder this access is confined to"
    )]
    TooLongInFolder,
    /// The name points into the server's private state folder.
    #[error("the name is inside the reserved folder '{STATE_DIR}'")]
    Reserved,
}

/// A checked, relative file name with `/` between folders.
///
/// Holding a `FileName` proves the rules were checked; it is still only text, and must be opened
/// relative to the shared folder without following symlinks (the store does that).
///
/// The text is shared, not copied, by its clones: an index holds each name once however many
/// maps refer to it (issue 11: a listing of 100,000 files within a few tens of MiB).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName(std::sync::Arc<str>);

impl FileName {
    /// Checks `s` against the naming rules.
    ///
    /// ```
    /// use barge::name::{FileName, NameError};
    ///
    /// assert_eq!(FileName::parse("photos/2024/beach.jpg")?.split_parent(), (Some("photos/2024"), "beach.jpg"));
    /// assert_eq!(FileName::parse("../etc/passwd"), Err(NameError::DotComponent));
    /// assert_eq!(FileName::parse(".barge/index.redb"), Err(NameError::Reserved));
    /// # Ok::<(), NameError>(())
    /// ```
    ///
    /// # Errors
    /// The first rule the name breaks.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(s.len()));
        }
        for c in s.chars() {
            if c == '\\' {
                return Err(NameError::Backslash);
            }
            if let Some(e) = refused_char(c) {
                return Err(e);
            }
        }
        for (i, part) in s.split('/').enumerate() {
            if i == MAX_DEPTH {
                return Err(NameError::TooDeep(s.split('/').count()));
            }
            match part {
                "" => return Err(NameError::EmptyComponent),
                "." | ".." => return Err(NameError::DotComponent),
                _ if part.len() > MAX_COMPONENT_LEN => {
                    return Err(NameError::ComponentTooLong(part.len()));
                }
                _ => {}
            }
            if i == 0 {
                // Compared without case: on a case-insensitive disk (macOS, a USB stick)
                // `.BARGE` *is* the state folder.
                if part.eq_ignore_ascii_case(STATE_DIR) {
                    return Err(NameError::Reserved);
                }
                let b = part.as_bytes();
                if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
                    return Err(NameError::DrivePrefix);
                }
            }
        }
        Ok(Self(s.into()))
    }

    /// A name with the text of one that passed [`parse`](Self::parse), in a new allocation:
    /// for the index rebuilding itself in fresh memory, where checking 100,000 names again
    /// took a quarter of the time.
    pub(crate) fn from_parsed(s: &str) -> Self {
        debug_assert!(Self::parse(s).is_ok(), "{s:?} was not a name");
        Self(s.into())
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated components; never empty, never `.` or `..`.
    pub fn components(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.0.split('/')
    }

    /// The name's canonical form (NFC). Two names are *equivalent* when their canonical forms
    /// are equal: they look the same in every listing though their bytes may differ
    /// (`PROTOCOL.md` section 4). ASCII names are their own canonical form, without a copy.
    #[must_use]
    pub fn canonical(&self) -> std::borrow::Cow<'_, str> {
        use unicode_normalization::UnicodeNormalization;
        if self.0.is_ascii() {
            std::borrow::Cow::Borrowed(self.as_str())
        } else {
            std::borrow::Cow::Owned(self.0.nfc().collect())
        }
    }

    /// True when `self` is a folder of `other` (`a` of `a/b`, not of `ab`).
    #[must_use]
    pub fn is_folder_of(&self, other: &FileName) -> bool {
        other
            .0
            .strip_prefix(self.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    }

    /// The folders before the last component, and the last component.
    #[must_use]
    pub fn split_parent(&self) -> (Option<&str>, &str) {
        match self.0.rsplit_once('/') {
            Some((parent, leaf)) => (Some(parent), leaf),
            None => (None, self.as_str()),
        }
    }
}

/// Lets maps keyed by name be searched with plain text (a folder of a name, a canonical form).
impl std::borrow::Borrow<str> for FileName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    /// Shows the name escaped, so a name can never smuggle terminal escape sequences.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(&self.0))
    }
}

/// Why `c` may not appear in a name, if it may not.
///
/// The threat: a name that prints as something else (`evil\u{202E}gnp.exe` shows as
/// `evilexe.png`, `a\u{2060}b` as `ab`) or that breaks a line in a listing or a log. The sets come
/// from the Unicode Character Database through `icu_properties`, not from hand-picked ranges, so
/// they follow each Unicode release:
/// - general category Cc (controls) and Zl/Zp (line and paragraph separators): [`NameError::ControlChar`];
/// - general category Cf (format), `Default_Ignorable_Code_Point` (characters that render as
///   nothing: fillers, variation selectors, tags, U+00AD...) and `Bidi_Control` (characters
///   that reorder text): [`NameError::FormattingChar`].
fn refused_char(c: char) -> Option<NameError> {
    use icu_properties::props::{BidiControl, DefaultIgnorableCodePoint, GeneralCategory};
    use icu_properties::{CodePointMapData, CodePointSetData};
    if c.is_ascii() {
        // The common case, without a table lookup: in ASCII only the controls are refused.
        return c.is_ascii_control().then_some(NameError::ControlChar);
    }
    match CodePointMapData::<GeneralCategory>::new().get(c) {
        GeneralCategory::Control
        | GeneralCategory::LineSeparator
        | GeneralCategory::ParagraphSeparator => return Some(NameError::ControlChar),
        GeneralCategory::Format => return Some(NameError::FormattingChar),
        _ => {}
    }
    (CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
        || CodePointSetData::new::<BidiControl>().contains(c))
    .then_some(NameError::FormattingChar)
}

/// Escapes control and formatting characters so that untrusted text is safe to print to a
/// terminal or a log. Ordinary text, including non-ASCII letters, is left as it is.
#[must_use]
pub fn escape(s: &str) -> String {
    if !s.chars().any(|c| refused_char(c).is_some()) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if refused_char(c).is_some() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "a",
            "my_file.jpg",
            "with space.txt",
            "semi;colon;1.txt",
            "photos/2024/beach.jpg",
            "ünïcødé/日本語.txt",
            ".hidden",
            "...",
            "a..b",
            "%2e%2e/x",
            "C",
            "1:2",
            "emoji 🚀.bin",
            ".barge-not-really",
            "sub/.barge",
            "\u{5d0}\u{5d1} hebrew",
            "\u{627}\u{644}\u{639}\u{631}\u{628}\u{64a}\u{629}",
            "\u{d55c}\u{ae00}",
            "nbsp\u{a0}and\u{3000}ideographic space",
        ] {
            assert_eq!(
                FileName::parse(ok).map(|n| n.as_str().to_owned()),
                Ok(ok.to_owned()),
                "{ok:?}"
            );
        }
    }

    #[test]
    fn refuses_hostile_names() {
        let long_component = "x".repeat(256);
        let long_path = ["abc"; 1300].join("/");
        let cases: Vec<(&str, NameError)> = vec![
            ("", NameError::Empty),
            ("..", NameError::DotComponent),
            (".", NameError::DotComponent),
            ("../x", NameError::DotComponent),
            ("a/../../x", NameError::DotComponent),
            ("a/./b", NameError::DotComponent),
            ("/etc/x", NameError::EmptyComponent),
            ("a/", NameError::EmptyComponent),
            ("a//b", NameError::EmptyComponent),
            ("C:\\x", NameError::Backslash),
            ("C:x", NameError::DrivePrefix),
            ("c:/x", NameError::DrivePrefix),
            ("\\\\host\\share\\x", NameError::Backslash),
            ("a\\..\\b", NameError::Backslash),
            ("nul\0byte", NameError::ControlChar),
            ("line\nfeed", NameError::ControlChar),
            ("carriage\rreturn", NameError::ControlChar),
            ("tab\there", NameError::ControlChar),
            ("esc\u{1b}[31mred", NameError::ControlChar),
            ("c1\u{85}", NameError::ControlChar),
            ("evil\u{202E}gnp.exe", NameError::FormattingChar),
            ("zero\u{200B}width", NameError::FormattingChar),
            (".barge", NameError::Reserved),
            (".barge/index.redb", NameError::Reserved),
            (&long_component, NameError::ComponentTooLong(256)),
            (&long_path, NameError::TooLong(long_path.len())),
        ];
        for (bad, want) in cases {
            assert_eq!(FileName::parse(bad), Err(want), "{:?}", escape(bad));
        }
    }

    /// Issue 10 item 10: every code point the audit found accepted is refused, one class at a
    /// time, alone and inside a name, and is escaped when printed.
    #[test]
    fn invisible_and_bidi_characters_are_refused_by_class() {
        use NameError::{ControlChar, FormattingChar};
        let classes: &[(&str, &[u32], NameError)] = &[
            (
                "bidi control (Arabic letter mark)",
                &[0x061C],
                FormattingChar,
            ),
            (
                "bidi embeddings, overrides, isolates",
                &[0x202A, 0x202E, 0x2066, 0x2069, 0x200E, 0x200F],
                FormattingChar,
            ),
            (
                "word joiner and invisible operators",
                &[0x2060, 0x2061, 0x2062, 0x2063, 0x2064],
                FormattingChar,
            ),
            ("soft hyphen", &[0x00AD], FormattingChar),
            (
                "line and paragraph separators",
                &[0x2028, 0x2029],
                ControlChar,
            ),
            ("Mongolian vowel separator", &[0x180E], FormattingChar),
            (
                "deprecated format characters",
                &[0x206A, 0x206B, 0x206C, 0x206D, 0x206E, 0x206F],
                FormattingChar,
            ),
            (
                "variation selectors",
                &[0xFE00, 0xFE0F, 0xE0100],
                FormattingChar,
            ),
            (
                "interlinear annotation",
                &[0xFFF9, 0xFFFA, 0xFFFB],
                FormattingChar,
            ),
            (
                "Hangul fillers",
                &[0x3164, 0x115F, 0x1160, 0xFFA0],
                FormattingChar,
            ),
            (
                "musical formatting",
                &[
                    0x1D173, 0x1D174, 0x1D175, 0x1D176, 0x1D177, 0x1D178, 0x1D179, 0x1D17A,
                ],
                FormattingChar,
            ),
            (
                "tag characters",
                &[0xE0001, 0xE0020, 0xE0041, 0xE007F],
                FormattingChar,
            ),
            (
                "zero width and BOM",
                &[0x200B, 0x200C, 0x200D, 0xFEFF],
                FormattingChar,
            ),
            ("C1 controls", &[0x0085, 0x009B], ControlChar),
        ];
        for (class, points, want) in classes {
            for &p in *points {
                let c = char::from_u32(p).unwrap();
                for name in [format!("a{c}b"), c.to_string(), format!("dir/x{c}")] {
                    assert_eq!(
                        FileName::parse(&name),
                        Err(want.clone()),
                        "{class}: U+{p:04X}"
                    );
                }
                assert_eq!(
                    escape(&format!("a{c}b")),
                    format!("a\\u{{{p:x}}}b"),
                    "{class}"
                );
            }
        }
    }

    #[test]
    fn the_state_folder_is_reserved_in_any_case() {
        for bad in [".BARGE", ".Barge/x", ".bArGe/index.redb"] {
            assert_eq!(FileName::parse(bad), Err(NameError::Reserved), "{bad}");
        }
        for ok in ["a/.BARGE", ".barge2", "x.barge"] {
            assert!(FileName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let c = "y".repeat(MAX_COMPONENT_LEN);
        assert!(FileName::parse(&c).is_ok());
        let deep = vec!["d"; MAX_DEPTH].join("/");
        assert!(FileName::parse(&deep).is_ok());
        let deeper = vec!["d"; MAX_DEPTH + 1].join("/");
        assert_eq!(
            FileName::parse(&deeper),
            Err(NameError::TooDeep(MAX_DEPTH + 1))
        );
        let very = vec!["d"; 511].join("/");
        assert_eq!(FileName::parse(&very), Err(NameError::TooDeep(511)));
        let p = vec!["z".repeat(204); 5].join("/");
        assert_eq!(p.len(), MAX_NAME_LEN);
        assert!(FileName::parse(&p).is_ok());
    }

    #[test]
    fn split_parent_and_display() {
        let n = FileName::parse("a/b/c.txt").unwrap();
        assert_eq!(n.split_parent(), (Some("a/b"), "c.txt"));
        assert_eq!(FileName::parse("c").unwrap().split_parent(), (None, "c"));
        assert_eq!(escape("bad\u{1b}[2J"), "bad\\u{1b}[2J");
        assert_eq!(escape("fine é"), "fine é");
    }

    #[test]
    fn folders_and_canonical_forms() {
        let n = |s: &str| FileName::parse(s).unwrap();
        assert!(n("a").is_folder_of(&n("a/b")));
        assert!(n("a/b").is_folder_of(&n("a/b/c")));
        assert!(!n("a").is_folder_of(&n("ab")));
        assert!(!n("a").is_folder_of(&n("a")));
        assert!(!n("a/b").is_folder_of(&n("a")));
        assert_eq!(n("x\u{e9}/ye\u{301}").canonical(), "x\u{e9}/y\u{e9}");
        assert_eq!(
            n("me\u{301}/n\u{e9}").canonical(),
            n("m\u{e9}/ne\u{301}").canonical()
        );
        assert_eq!(n("\u{212a}.txt").canonical(), "K.txt");
        assert!(matches!(
            n("plain").canonical(),
            std::borrow::Cow::Borrowed("plain")
        ));
    }
}
