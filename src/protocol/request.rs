//! Client commands (`PROTOCOL.md` section 5): one line in, one typed [`Request`] out.

use super::login::Secret;
use super::value::{FileId, UploadSpec, ValueError, parse_size, split_size};
use crate::name::{FileName, NameError};

/// A reference to a file on the server: an id, a name, or text that is both (ids win; see
/// `PROTOCOL.md` section 5.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    /// Set when the text is a valid id.
    pub id: Option<FileId>,
    /// Set when the text is a valid name.
    pub name: Option<FileName>,
}

impl FileRef {
    /// Reads an id-or-name argument.
    ///
    /// # Errors
    /// The name error, when the text is neither a valid id nor a valid name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let id = FileId::parse(s).ok();
        match (id, FileName::parse(s)) {
            (id, Ok(name)) => Ok(Self {
                id,
                name: Some(name),
            }),
            (Some(id), Err(_)) => Ok(Self {
                id: Some(id),
                name: None,
            }),
            (None, Err(e)) => Err(e),
        }
    }

    /// The text as the client gave it (for messages).
    #[must_use]
    pub fn as_str(&self) -> String {
        match (&self.name, &self.id) {
            (Some(n), _) => n.as_str().to_owned(),
            (None, Some(id)) => id.to_hex(),
            (None, None) => String::new(),
        }
    }
}

/// What a `RENAME` line carried (`PROTOCOL.md` section 5.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenameArgs {
    /// `RENAME` alone: ask for both names.
    Prompt,
    /// `RENAME old`: ask for the new name.
    From(FileRef),
    /// `RENAME old<TAB>new`.
    Both(FileRef, FileName),
}

/// One client command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `LIST_FILES`, `LIST`, `LIST FILES`.
    ListFiles,
    /// `UPLOAD` (ask for `name;size`) or `UPLOAD name;size`.
    Upload(Option<UploadSpec>),
    /// `PUT name;size`, the body following at once.
    Put(UploadSpec),
    /// `RESUME name;size`: an upload that may continue a partial one (`PROTOCOL.md` 5.11).
    Resume(UploadSpec),
    /// `DOWNLOAD` (ask for the id) or `DOWNLOAD id-or-name`.
    Download(Option<FileRef>),
    /// `DOWNLOAD_FROM offset id-or-name`: the bytes of a file from `offset` on (5.12).
    DownloadFrom {
        /// The first byte wanted.
        offset: u64,
        /// The file.
        target: FileRef,
    },
    /// `RENAME`, `CHANGE`, `MV`.
    Rename(RenameArgs),
    /// `DELETE` (ask for the id) or `DELETE id-or-name`; also `RM`.
    Delete(Option<FileRef>),
    /// `HELP`.
    Help,
    /// `DISCONNECT`, `BYE`, `QUIT`, `EXIT`.
    Disconnect,
    /// `USER name`: start a password login (section 5.9).
    User(String),
    /// `PASS password`: the whole rest of the line, spaces included.
    Pass(Secret),
    /// `TOKEN token`: log in with a token.
    Token(Secret),
    /// `MISMATCH id-or-name`: the client's MD5 of a file it just uploaded differs from the id
    /// the server answered (the client shows `Fail`); counted in the server's metrics.
    Mismatch(FileRef),
    /// `PAIR slot A`: start a pairing exchange (section 5.10).
    Pair {
        /// The code's number, which picks the code on the server.
        slot: u16,
        /// The client's SPAKE2 message, base64 as sent.
        message: String,
    },
}

/// Why a command line could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The line is empty.
    #[error("empty command; send HELP for the list of commands")]
    Empty,
    /// The line is not valid UTF-8.
    #[error("the line is not valid UTF-8")]
    NotUtf8,
    /// The command word is not one the server knows.
    #[error("unknown command '{0}'; send HELP for the list of commands")]
    UnknownCommand(String),
    /// The command takes no argument but one was given.
    #[error("{0} takes no argument")]
    UnexpectedArgument(&'static str),
    /// A value (size, `name;size`) was malformed.
    #[error("{0}")]
    Value(ValueError),
    /// A name broke the naming rules.
    #[error("invalid name: {0}")]
    Name(#[from] NameError),
    /// A `PUT` line without a valid `name;size`: where its body ends is unknown, so the
    /// connection cannot continue.
    #[error("{0}; the connection is closed because the body's length is unknown")]
    PutUnframed(ValueError),
    /// A `PUT` whose name is invalid but whose size is known: its body must still be read and
    /// discarded to keep the connection in step.
    #[error("invalid name: {source}")]
    PutName {
        /// The size of the body that follows the line.
        size: u64,
        /// What was wrong with the name.
        source: NameError,
    },
}

impl From<ValueError> for DecodeError {
    fn from(e: ValueError) -> Self {
        match e {
            ValueError::Name(n) => Self::Name(n),
            other => Self::Value(other),
        }
    }
}

impl DecodeError {
    /// For a `PUT` whose body length is known despite the error, that length.
    #[must_use]
    pub fn pending_body(&self) -> Option<u64> {
        match self {
            Self::PutName { size, .. } => Some(*size),
            _ => None,
        }
    }
}

impl Request {
    /// Decodes one line (without its line ending; a trailing `\r` is tolerated).
    ///
    /// ```
    /// use barge::protocol::{DecodeError, Request};
    ///
    /// let Request::Upload(Some(spec)) = Request::decode(b"upload notes; draft.txt;1234\r")? else {
    ///     panic!("not an upload");
    /// };
    /// assert_eq!((spec.name.as_str(), spec.size), ("notes; draft.txt", 1234));
    /// assert!(matches!(Request::decode(b"FROB"), Err(DecodeError::UnknownCommand(_))));
    /// # Ok::<(), DecodeError>(())
    /// ```
    ///
    /// # Errors
    /// See [`DecodeError`].
    pub fn decode(line: &[u8]) -> Result<Self, DecodeError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = match std::str::from_utf8(line) {
            Ok(line) => line,
            // A PUT's body follows its line at once: if the line cannot be read, neither can
            // the body's length, and carrying on would run the body as commands.
            Err(_) if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"PUT ") => {
                return Err(DecodeError::PutUnframed(ValueError::MissingField(
                    "a UTF-8 name;size",
                )));
            }
            Err(_) => return Err(DecodeError::NotUtf8),
        };
        if line.is_empty() {
            return Err(DecodeError::Empty);
        }
        let (word, arg) = match line.split_once(' ') {
            Some((w, a)) => (w, Some(a)),
            None => (line, None),
        };
        let word = word.to_ascii_uppercase();
        let no_arg = |name: &'static str, req: Self| match arg {
            None => Ok(req),
            Some(_) => Err(DecodeError::UnexpectedArgument(name)),
        };
        match word.as_str() {
            "LIST_FILES" => no_arg("LIST_FILES", Self::ListFiles),
            "LIST" => match arg.map(str::to_ascii_uppercase).as_deref() {
                None | Some("FILES" | "FILE") => Ok(Self::ListFiles),
                Some(_) => Err(DecodeError::UnexpectedArgument("LIST")),
            },
            "UPLOAD" => Ok(Self::Upload(arg.map(UploadSpec::decode).transpose()?)),
            "PUT" => {
                let unframed = DecodeError::PutUnframed;
                let arg = arg.ok_or(unframed(ValueError::MissingField("PUT name;size")))?;
                let (name, size) = split_size(arg).map_err(unframed)?;
                let size = parse_size(size).map_err(unframed)?;
                let name = FileName::parse(name)
                    .map_err(|source| DecodeError::PutName { size, source })?;
                Ok(Self::Put(UploadSpec { name, size }))
            }
            "DOWNLOAD" | "GET" => Ok(Self::Download(arg.map(FileRef::parse).transpose()?)),
            "RESUME" => Ok(Self::Resume(UploadSpec::decode(
                arg.ok_or(ValueError::MissingField("RESUME name;size"))?,
            )?)),
            "DOWNLOAD_FROM" => {
                let missing = ValueError::MissingField("DOWNLOAD_FROM offset id-or-name");
                let (offset, target) = arg.and_then(|a| a.split_once(' ')).ok_or(missing)?;
                Ok(Self::DownloadFrom {
                    offset: parse_size(offset)?,
                    target: FileRef::parse(target)?,
                })
            }
            "RENAME" | "CHANGE" | "MV" => Ok(Self::Rename(match arg {
                None => RenameArgs::Prompt,
                Some(a) => match a.split_once('\t') {
                    None => RenameArgs::From(FileRef::parse(a)?),
                    Some((from, to)) => {
                        RenameArgs::Both(FileRef::parse(from)?, FileName::parse(to)?)
                    }
                },
            })),
            "DELETE" | "RM" => Ok(Self::Delete(arg.map(FileRef::parse).transpose()?)),
            "HELP" => no_arg("HELP", Self::Help),
            "MISMATCH" => Ok(Self::Mismatch(FileRef::parse(
                arg.ok_or(ValueError::MissingField("MISMATCH id-or-name"))?,
            )?)),
            "DISCONNECT" | "BYE" | "QUIT" | "EXIT" => no_arg("DISCONNECT", Self::Disconnect),
            "USER" => Ok(Self::User(
                arg.filter(|a| !a.is_empty())
                    .ok_or(ValueError::MissingField("USER name"))?
                    .to_owned(),
            )),
            "PASS" => Ok(Self::Pass(Secret::new(
                arg.filter(|a| !a.is_empty())
                    .ok_or(ValueError::MissingField("PASS password"))?,
            ))),
            "TOKEN" => Ok(Self::Token(Secret::new(
                arg.filter(|a| !a.is_empty())
                    .ok_or(ValueError::MissingField("TOKEN token"))?,
            ))),
            "PAIR" => {
                let missing =
                    || DecodeError::Value(ValueError::MissingField("PAIR number message"));
                let (slot, message) = arg.and_then(|a| a.split_once(' ')).ok_or_else(missing)?;
                let slot = slot.parse::<u16>().map_err(|_| missing())?;
                Ok(Self::Pair {
                    slot,
                    message: message.to_owned(),
                })
            }
            _ => Err(DecodeError::UnknownCommand(crate::name::escape(&truncate(
                &word, 64,
            )))),
        }
    }

    /// The command line, with its `\n`, in the canonical one-line form.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut s = match self {
            Self::ListFiles => "LIST_FILES".to_owned(),
            Self::Upload(None) => "UPLOAD".to_owned(),
            Self::Upload(Some(spec)) => format!("UPLOAD {}", spec.encode()),
            Self::Put(spec) => format!("PUT {}", spec.encode()),
            Self::Resume(spec) => format!("RESUME {}", spec.encode()),
            Self::DownloadFrom { offset, target } => {
                format!("DOWNLOAD_FROM {offset} {}", target.as_str())
            }
            Self::Download(None) => "DOWNLOAD".to_owned(),
            Self::Download(Some(r)) => format!("DOWNLOAD {}", r.as_str()),
            Self::Rename(RenameArgs::Prompt) => "RENAME".to_owned(),
            Self::Rename(RenameArgs::From(r)) => format!("RENAME {}", r.as_str()),
            Self::Rename(RenameArgs::Both(r, to)) => {
                format!("RENAME {}\t{}", r.as_str(), to.as_str())
            }
            Self::Delete(None) => "DELETE".to_owned(),
            Self::Delete(Some(r)) => format!("DELETE {}", r.as_str()),
            Self::Help => "HELP".to_owned(),
            Self::Mismatch(r) => format!("MISMATCH {}", r.as_str()),
            Self::Disconnect => "DISCONNECT".to_owned(),
            Self::User(name) => format!("USER {name}"),
            Self::Pass(p) => format!("PASS {}", p.expose()),
            Self::Token(t) => format!("TOKEN {}", t.expose()),
            Self::Pair { slot, message } => format!("PAIR {slot} {message}"),
        };
        s.push('\n');
        s
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> FileName {
        FileName::parse(s).unwrap()
    }

    #[test]
    fn decodes_every_command_form() {
        let id = "9e107d9d372bb6826bd81d3542a419d6";
        let download_id = format!("DOWNLOAD {id}");
        let cases: Vec<(&str, Request)> = vec![
            ("LIST_FILES", Request::ListFiles),
            ("list_files\r", Request::ListFiles),
            ("List", Request::ListFiles),
            ("LIST FILES", Request::ListFiles),
            ("UPLOAD", Request::Upload(None)),
            (
                "upload a b;c.txt;12",
                Request::Upload(Some(UploadSpec {
                    name: name("a b;c.txt"),
                    size: 12,
                })),
            ),
            (
                "PUT x/y;0",
                Request::Put(UploadSpec {
                    name: name("x/y"),
                    size: 0,
                }),
            ),
            ("DOWNLOAD", Request::Download(None)),
            (
                "resume big file.iso;1000",
                Request::Resume(UploadSpec {
                    name: name("big file.iso"),
                    size: 1000,
                }),
            ),
            (
                "DOWNLOAD_FROM 500 big file.iso",
                Request::DownloadFrom {
                    offset: 500,
                    target: FileRef::parse("big file.iso").unwrap(),
                },
            ),
            (
                "download fox.txt",
                Request::Download(Some(FileRef {
                    id: None,
                    name: Some(name("fox.txt")),
                })),
            ),
            (
                &download_id,
                Request::Download(Some(FileRef {
                    id: FileId::parse(id).ok(),
                    name: Some(name(id)),
                })),
            ),
            ("RENAME", Request::Rename(RenameArgs::Prompt)),
            (
                "change old name",
                Request::Rename(RenameArgs::From(FileRef::parse("old name").unwrap())),
            ),
            (
                "MV a;1\tsub/b c",
                Request::Rename(RenameArgs::Both(
                    FileRef::parse("a;1").unwrap(),
                    name("sub/b c"),
                )),
            ),
            ("DELETE", Request::Delete(None)),
            (
                "rm gone.txt",
                Request::Delete(Some(FileRef::parse("gone.txt").unwrap())),
            ),
            ("HELP", Request::Help),
            (
                "MISMATCH a.txt",
                Request::Mismatch(FileRef::parse("a.txt").unwrap()),
            ),
            ("DISCONNECT", Request::Disconnect),
            ("bye", Request::Disconnect),
            ("Quit", Request::Disconnect),
            ("USER alice", Request::User("alice".into())),
            (
                "pass  two  spaces ",
                Request::Pass(Secret::new(" two  spaces ")),
            ),
            ("TOKEN barge_x", Request::Token(Secret::new("barge_x"))),
            (
                "PAIR 7 QUJD",
                Request::Pair {
                    slot: 7,
                    message: "QUJD".into(),
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(
                Request::decode(line.as_bytes()),
                Ok(want.clone()),
                "{line:?}"
            );
            // Every request survives an encode/decode round trip.
            let enc = want.encode();
            assert_eq!(
                Request::decode(enc.trim_end_matches('\n').as_bytes()),
                Ok(want),
                "{enc:?}"
            );
        }
    }

    #[test]
    fn refuses_bad_lines() {
        let cases: Vec<(&[u8], DecodeError)> = vec![
            (b"", DecodeError::Empty),
            (b"\r", DecodeError::Empty),
            (b"\xff\xfe", DecodeError::NotUtf8),
            (b"UPLOAD \xff;3", DecodeError::NotUtf8),
            (
                b"put \xff;3",
                DecodeError::PutUnframed(ValueError::MissingField("a UTF-8 name;size")),
            ),
            (b"FROB", DecodeError::UnknownCommand("FROB".into())),
            (b"HELP me", DecodeError::UnexpectedArgument("HELP")),
            (b"LIST everything", DecodeError::UnexpectedArgument("LIST")),
            (
                b"UPLOAD noseparator",
                DecodeError::Value(ValueError::MissingField("name;size")),
            ),
            (
                b"UPLOAD a;-1",
                DecodeError::Value(ValueError::BadSize("-1".into())),
            ),
            (b"UPLOAD ../x;1", DecodeError::Name(NameError::DotComponent)),
            (
                b"PUT ../x;5",
                DecodeError::PutName {
                    size: 5,
                    source: NameError::DotComponent,
                },
            ),
            (
                b"PUT x;1e9",
                DecodeError::PutUnframed(ValueError::BadSize("1e9".into())),
            ),
            (
                b"PUT",
                DecodeError::PutUnframed(ValueError::MissingField("PUT name;size")),
            ),
            (
                b"put x",
                DecodeError::PutUnframed(ValueError::MissingField("name;size")),
            ),
            (
                b"DOWNLOAD /etc/passwd",
                DecodeError::Name(NameError::EmptyComponent),
            ),
            (
                b"RENAME a\t../b",
                DecodeError::Name(NameError::DotComponent),
            ),
            (
                b"USER",
                DecodeError::Value(ValueError::MissingField("USER name")),
            ),
            (
                b"PASS ",
                DecodeError::Value(ValueError::MissingField("PASS password")),
            ),
            (
                b"RESUME",
                DecodeError::Value(ValueError::MissingField("RESUME name;size")),
            ),
            (
                b"DOWNLOAD_FROM 12",
                DecodeError::Value(ValueError::MissingField("DOWNLOAD_FROM offset id-or-name")),
            ),
            (
                b"DOWNLOAD_FROM -1 a",
                DecodeError::Value(ValueError::BadSize("-1".into())),
            ),
            (
                b"PAIR x y",
                DecodeError::Value(ValueError::MissingField("PAIR number message")),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(
                Request::decode(line),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            Request::decode(b"PUT ../x;5").unwrap_err().pending_body(),
            Some(5)
        );
        assert_eq!(
            Request::decode(b"PUT x;-5").unwrap_err().pending_body(),
            None
        );
    }

    #[test]
    fn unknown_command_is_escaped() {
        let err = Request::decode(b"\x1b[2J").unwrap_err();
        assert_eq!(err, DecodeError::UnknownCommand("\\u{1b}[2J".into()));
    }
}
