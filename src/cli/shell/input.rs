//! Where the shell's lines come from: a terminal with line editing and history, or a pipe read
//! line by line; and how a line splits into words (quotes and backslashes, as in a shell).
//!
//! It does not know the commands: see [`words`](crate::cli::words) and the shell itself.

use std::io::{self, BufRead as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustyline::completion::FilenameCompleter;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Config, Editor};

use super::completion::{Shared, ShellHelper};

/// Where commands come from.
pub(super) enum Input {
    /// A terminal: line editing, history, completion.
    Editor {
        editor: Box<Editor<ShellHelper, FileHistory>>,
        history: Option<PathBuf>,
    },
    /// A pipe or a file: one command per line, no prompts.
    Pipe(io::StdinLock<'static>),
    /// The terminal could not be set up; read lines plainly.
    Plain(io::StdinLock<'static>),
}

impl Input {
    pub(super) fn editor(shared: Arc<Mutex<Shared>>) -> Self {
        let config = Config::builder()
            .completion_type(CompletionType::List)
            .max_history_size(1000)
            .map(|b| b.auto_add_history(false).build());
        let editor = config.and_then(Editor::with_config);
        let mut editor: Box<Editor<ShellHelper, FileHistory>> = match editor {
            Ok(editor) => Box::new(editor),
            Err(_) => return Self::Plain(io::stdin().lock()),
        };
        editor.set_helper(Some(ShellHelper::new(FilenameCompleter::new(), shared)));
        let history = history_path();
        if let Some(path) = &history {
            // No history yet is the normal first run.
            let _ = editor.load_history(path);
        }
        Self::Editor { editor, history }
    }

    /// The next line, or `None` at the end of input. Ctrl-C abandons the line being typed.
    pub(super) fn read(&mut self, prompt: &str) -> io::Result<Option<String>> {
        match self {
            Self::Editor { editor, .. } => match editor.readline(prompt) {
                Ok(line) => Ok(Some(line)),
                Err(ReadlineError::Interrupted) => Ok(Some(String::new())),
                Err(ReadlineError::Eof) => Ok(None),
                Err(ReadlineError::Io(e)) => Err(e),
                Err(e) => Err(io::Error::other(e)),
            },
            Self::Plain(stdin) => {
                eprint!("{prompt}");
                read_plain(stdin)
            }
            Self::Pipe(stdin) => read_plain(stdin),
        }
    }

    pub(super) fn remember(&mut self, line: &str) {
        if let Self::Editor { editor, .. } = self {
            let _ = editor.add_history_entry(line);
        }
    }

    /// Saves the history; a failure only costs the history, so it is a note, not an error.
    pub(super) fn save(&mut self) {
        if let Self::Editor {
            editor,
            history: Some(path),
        } = self
        {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = editor.save_history(path) {
                eprintln!(
                    "barge: could not save the history to {}: {e}",
                    path.display()
                );
            }
        }
    }
}

fn read_plain(stdin: &mut io::StdinLock<'static>) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    if stdin.read_until(b'\n', &mut buf)? == 0 {
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&buf);
    Ok(Some(line.trim_end_matches(['\n', '\r']).to_owned()))
}

/// `$BARGE_HISTORY` if set (empty: no history); else `barge/history` in the user's data folder
/// (`$XDG_DATA_HOME`, or `~/.local/share` when it exists); else `~/.barge_history`.
fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BARGE_HISTORY") {
        return (!p.is_empty()).then(|| PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".local/share")))
        .filter(|d| d.is_dir());
    match data {
        Some(d) => Some(d.join("barge").join("history")),
        None => home.map(|h| h.join(".barge_history")),
    }
}

/// Splits a command line into words: spaces separate, `"..."` and `'...'` group, `\` escapes
/// the next character (outside single quotes).
pub(super) fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => {
                word.push(chars.next().ok_or("a '\\' ends the line")?);
                in_word = true;
            }
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unclosed {q}"));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell() {
        let cases: &[(&str, &[&str])] = &[
            ("ls", &["ls"]),
            ("  put  a.txt   b.txt ", &["put", "a.txt", "b.txt"]),
            (r#"put "my file.txt""#, &["put", "my file.txt"]),
            (r"put my\ file.txt", &["put", "my file.txt"]),
            ("mv 'a b' \"c \\\"d\\\"\"", &["mv", "a b", "c \"d\""]),
            ("get ''", &["get", ""]),
            (r"get 'back\slash'", &["get", r"back\slash"]),
        ];
        for (line, want) in cases {
            let want: Vec<String> = want.iter().map(|w| (*w).to_owned()).collect();
            assert_eq!(split_words(line), Ok(want), "{line:?}");
        }
        assert!(split_words("put \"open").is_err());
        assert!(split_words("put trailing\\").is_err());
    }
}
