//! Tab completion in the shell: command words (from the one list in
//! [`words`](crate::cli::words)), local paths for `put`, `lcd`, `lls` and after `-o`, the
//! server's names and ids (relative to the working folder) for the rest, folders for `cd`,
//! and the same inside the `UPLOAD` and `DOWNLOAD` prompts.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

use rustyline::completion::{
    Completer, FilenameCompleter, Pair, Quote, escape as escape_word, extract_word,
};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use barge::protocol::ListingEntry;

use crate::cli::words;

/// What the line being read is, for completion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Mode {
    /// A command line.
    #[default]
    Command,
    /// The answer to a prompt for a local file.
    Local,
    /// The answer to a prompt for a server's file.
    Remote,
}

/// What the shell and its completion share.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// The server's files as last listed, in natural order.
    pub(super) entries: Vec<ListingEntry>,
    /// The working folder on the server (`""`: the top).
    pub(super) cwd: String,
    /// What the line being read is.
    pub(super) mode: Mode,
}

/// Characters that end a word for completion; a `\` before one of them keeps it in the word.
fn is_break(c: char) -> bool {
    matches!(c, ' ' | '\t' | '"' | '\'' | '\\')
}

/// Tab completion: command words, local paths, and the server's names and ids.
pub(super) struct ShellHelper {
    files: FilenameCompleter,
    shared: Arc<Mutex<Shared>>,
}

/// What the word under the cursor names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Local,
    Remote,
    Folder,
    Nothing,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let mode = self
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .mode;
        let before = &line[..pos];
        let kind = match mode {
            // A prompt's answer is taken as typed, spaces and all: no quoting, one word.
            Mode::Local => return Ok((0, complete_local_line(before))),
            Mode::Remote => return Ok((0, self.complete_remote_line(before))),
            Mode::Command => match before.find(char::is_whitespace) {
                None => return Ok((0, complete_word(before))),
                Some(end) => kind_of(&before[..end], before),
            },
        };
        match kind {
            Kind::Local => self.files.complete(line, pos, ctx),
            Kind::Remote | Kind::Folder => {
                Ok(self.complete_remote(line, pos, kind == Kind::Folder))
            }
            Kind::Nothing => Ok((pos, Vec::new())),
        }
    }
}

/// The command words that start with `before`: the seed words to someone typing in capitals,
/// the short forms otherwise.
fn complete_word(before: &str) -> Vec<Pair> {
    let upper = before.starts_with(|c: char| c.is_ascii_uppercase());
    let lower = before.to_lowercase();
    words::completions()
        .filter(|w| w.starts_with(|c: char| c.is_ascii_uppercase()) == upper)
        .filter(|w| w.to_lowercase().starts_with(&lower))
        .map(|w| Pair {
            display: (*w).to_owned(),
            replacement: format!("{w} "),
        })
        .collect()
}

/// What the word being typed names, from the command and the word before it.
fn kind_of(command: &str, before: &str) -> Kind {
    let previous = before
        .rsplit(char::is_whitespace)
        .nth(1)
        .unwrap_or_default();
    let Some(word) = words::find(command) else {
        return Kind::Nothing;
    };
    if matches!(previous, "-o" | "--output") && word.is(&words::GET) {
        return Kind::Local;
    }
    if previous == "--as" && word.is(&words::PUT) {
        return Kind::Remote;
    }
    if [&words::PUT, &words::LCD, &words::LLS]
        .iter()
        .any(|w| word.is(w))
    {
        Kind::Local
    } else if word.is(&words::CD) {
        Kind::Folder
    } else if [&words::GET, &words::RM, &words::MV, &words::LS]
        .iter()
        .any(|w| word.is(w))
    {
        Kind::Remote
    } else {
        Kind::Nothing
    }
}

impl ShellHelper {
    /// Completes local paths with `files`, and remote names and ids from `shared` (the last
    /// listing and the working folder, which the shell keeps up to date).
    pub(super) fn new(files: FilenameCompleter, shared: Arc<Mutex<Shared>>) -> Self {
        Self { files, shared }
    }

    fn complete_remote(&self, line: &str, pos: usize, folders: bool) -> (usize, Vec<Pair>) {
        let (start, word) = extract_word(line, pos, Some('\\'), is_break);
        let typed: Cow<'_, str> = rustyline::completion::unescape(word, Some('\\'));
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        // Names are offered as the user would type them: relative to the working folder,
        // unless the word starts from the top with `/`.
        let (lead, strip) = match typed.strip_prefix('/') {
            Some(_) => ("/", String::new()),
            None if shared.cwd.is_empty() => ("", String::new()),
            None => ("", format!("{}/", shared.cwd)),
        };
        let full = format!("{strip}{}", typed.strip_prefix('/').unwrap_or(&typed));
        let shown = |name: &str| format!("{lead}{}", name.get(strip.len()..).unwrap_or(name));
        let names: Vec<String> = if folders {
            let mut set: Vec<String> = shared
                .entries
                .iter()
                .flat_map(|e| folders_of(e.name.as_str()))
                // One level at a time, as a shell completes folders.
                .filter(|f| {
                    f.len() > strip.len()
                        && f.strip_prefix(full.as_str())
                            .is_some_and(|rest| !rest.trim_end_matches('/').contains('/'))
                })
                .collect();
            set.sort_by(|a, b| natord::compare(a, b));
            set.dedup();
            set
        } else {
            shared
                .entries
                .iter()
                .map(|e| e.name.as_str())
                .filter(|n| n.starts_with(&full))
                .map(str::to_owned)
                .collect()
        };
        let mut out: Vec<Pair> = names
            .iter()
            .map(|n| {
                let rel = shown(n);
                Pair {
                    display: rel.clone(),
                    replacement: escape_word(rel, Some('\\'), is_break, Quote::None),
                }
            })
            .collect();
        if !folders && !typed.is_empty() {
            let lower = typed.to_lowercase();
            out.extend(
                shared
                    .entries
                    .iter()
                    .filter(|e| e.id.to_hex().starts_with(&lower))
                    .map(|e| Pair {
                        display: format!("{}  {}", e.id, e.name),
                        replacement: e.id.to_hex(),
                    }),
            );
        }
        out.sort_by(|a, b| natord::compare(&a.display, &b.display));
        out.dedup_by(|a, b| a.replacement == b.replacement);
        (start, out)
    }
}

/// The local paths that start with `typed`, the whole of a prompt's answer, unquoted.
fn complete_local_line(typed: &str) -> Vec<Pair> {
    let (dir, prefix) = match typed.rfind('/') {
        Some(i) => (&typed[..=i], &typed[i + 1..]),
        None => ("", typed),
    };
    let Ok(entries) = std::fs::read_dir(if dir.is_empty() { "." } else { dir }) else {
        return Vec::new();
    };
    let mut out: Vec<Pair> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !name.starts_with(prefix) || (prefix.is_empty() && name.starts_with('.')) {
                return None;
            }
            let slash = if e.file_type().is_ok_and(|t| t.is_dir()) {
                "/"
            } else {
                ""
            };
            Some(Pair {
                display: format!("{name}{slash}"),
                replacement: format!("{dir}{name}{slash}"),
            })
        })
        .collect();
    out.sort_by(|a, b| natord::compare(&a.display, &b.display));
    out
}

impl ShellHelper {
    /// The server names that start with `typed`, the whole of a prompt's answer, unquoted.
    fn complete_remote_line(&self, typed: &str) -> Vec<Pair> {
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let base = if shared.cwd.is_empty() {
            String::new()
        } else {
            format!("{}/", shared.cwd)
        };
        shared
            .entries
            .iter()
            .filter_map(|e| e.name.as_str().strip_prefix(base.as_str()))
            .filter(|n| n.starts_with(typed))
            .map(|n| Pair {
                display: n.to_owned(),
                replacement: n.to_owned(),
            })
            .collect()
    }
}

/// Every folder a name is in, each with its trailing `/`: `a/b/c` gives `a/` and `a/b/`.
fn folders_of(name: &str) -> impl Iterator<Item = String> + '_ {
    name.match_indices('/').map(|(i, _)| name[..=i].to_owned())
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;
    use barge::name::FileName;
    use barge::protocol::FileId;
    use rustyline::history::DefaultHistory;

    fn helper(names: &[&str], cwd: &str, mode: Mode) -> ShellHelper {
        let entries = names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                Some(ListingEntry {
                    id: FileId([u8::try_from(i).ok()?; 16]),
                    name: FileName::parse(n).ok()?,
                    size: 1,
                })
            })
            .collect();
        let shared = Shared {
            entries,
            cwd: cwd.to_owned(),
            mode,
        };
        ShellHelper::new(FilenameCompleter::new(), Arc::new(Mutex::new(shared)))
    }

    fn complete(h: &ShellHelper, line: &str) -> Vec<String> {
        let history = DefaultHistory::new();
        let ctx = Context::new(&history);
        h.complete(line, line.len(), &ctx)
            .map(|(_, c)| c.into_iter().map(|p| p.replacement).collect())
            .unwrap_or_default()
    }

    #[test]
    fn names_complete_relative_to_the_working_folder() {
        let names = ["top.txt", "docs/a.txt", "docs/b 1.txt", "docs/sub/c.txt"];
        let h = helper(&names, "docs", Mode::Command);
        assert_eq!(complete(&h, "get "), ["a.txt", "b\\ 1.txt", "sub/c.txt"]);
        assert_eq!(complete(&h, "rm b"), ["b\\ 1.txt"]);
        assert_eq!(complete(&h, "get /t"), ["/top.txt"]);
        assert_eq!(complete(&h, "cd "), ["sub/"]);
        let h = helper(&names, "", Mode::Command);
        assert_eq!(complete(&h, "cd d"), ["docs/"]);
        assert_eq!(
            complete(&h, "get d"),
            ["docs/a.txt", "docs/b\\ 1.txt", "docs/sub/c.txt"]
        );
        // Inside the DOWNLOAD prompt the whole line is a server name, taken as typed.
        let h = helper(&names, "docs", Mode::Remote);
        assert_eq!(complete(&h, "b"), ["b 1.txt"]);
        assert_eq!(complete(&h, "b 1"), ["b 1.txt"]);
        assert_eq!(complete(&h, "GET b"), Vec::<String>::new());
    }

    #[test]
    fn local_paths_after_o_and_in_the_upload_prompt() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("local-file.txt"), b"x")?;
        let d = dir.path().display();
        let h = helper(&["remote.txt"], "", Mode::Command);
        let got = complete(&h, &format!("get remote.txt -o {d}/loc"));
        assert!(got.iter().any(|c| c.ends_with("local-file.txt")), "{got:?}");
        assert_eq!(complete(&h, "get -o x re"), ["remote.txt"]);
        std::fs::write(dir.path().join("with space.txt"), b"x")?;
        let h = helper(&["remote.txt"], "", Mode::Local);
        let got = complete(&h, &format!("{d}/loc"));
        assert_eq!(got, [format!("{d}/local-file.txt")]);
        let got = complete(&h, &format!("{d}/with s"));
        assert_eq!(got, [format!("{d}/with space.txt")]);
        Ok(())
    }
}
