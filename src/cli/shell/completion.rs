//! Tab completion in the shell: command words (from the one list in
//! [`words`](crate::cli::words)), local paths for `put`, the server's names and ids for the rest.

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

/// Characters that end a word for completion; a `\` before one of them keeps it in the word.
fn is_break(c: char) -> bool {
    matches!(c, ' ' | '\t' | '"' | '\'' | '\\')
}

/// Tab completion: command words, local paths, and the server's names and ids.
pub(super) struct ShellHelper {
    files: FilenameCompleter,
    remote: Arc<Mutex<Vec<ListingEntry>>>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let Some(end) = before.find(char::is_whitespace) else {
            // Offer the seed words to someone typing in capitals, the short forms otherwise.
            let upper = before.starts_with(|c: char| c.is_ascii_uppercase());
            let lower = before.to_lowercase();
            let words = words::completions()
                .filter(|w| w.starts_with(|c: char| c.is_ascii_uppercase()) == upper)
                .filter(|w| w.to_lowercase().starts_with(&lower))
                .map(|w| Pair {
                    display: (*w).to_owned(),
                    replacement: format!("{w} "),
                })
                .collect();
            return Ok((0, words));
        };
        match words::find(&before[..end]).map(|w| w.name) {
            Some(n) if n == words::PUT.name => self.files.complete(line, pos, ctx),
            Some(n) if [words::GET.name, words::RM.name, words::MV.name].contains(&n) => {
                Ok(self.complete_remote(line, pos))
            }
            _ => Ok((pos, Vec::new())),
        }
    }
}

impl ShellHelper {
    /// Completes local paths with `files`, and remote names and ids from `remote` (the last
    /// listing, which the shell keeps up to date).
    pub(super) fn new(files: FilenameCompleter, remote: Arc<Mutex<Vec<ListingEntry>>>) -> Self {
        Self { files, remote }
    }

    fn complete_remote(&self, line: &str, pos: usize) -> (usize, Vec<Pair>) {
        let (start, word) = extract_word(line, pos, Some('\\'), is_break);
        let prefix: Cow<'_, str> = rustyline::completion::unescape(word, Some('\\'));
        let remote = self.remote.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<Pair> = remote
            .iter()
            .filter(|e| e.name.as_str().starts_with(prefix.as_ref()))
            .map(|e| Pair {
                display: e.name.to_string(),
                replacement: escape_word(
                    e.name.as_str().to_owned(),
                    Some('\\'),
                    is_break,
                    Quote::None,
                ),
            })
            .collect();
        if !prefix.is_empty() {
            let lower = prefix.to_lowercase();
            out.extend(
                remote
                    .iter()
                    .filter(|e| e.id.to_hex().starts_with(&lower))
                    .map(|e| Pair {
                        display: format!("{}  {}", e.id, e.name),
                        replacement: e.id.to_hex(),
                    }),
            );
        }
        out.sort_by(|a, b| a.display.cmp(&b.display));
        out.dedup_by(|a, b| a.replacement == b.replacement);
        (start, out)
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}
