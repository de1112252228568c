//! `barge shell`: an interactive session over one connection.
//!
//! With a terminal it offers line editing, history and tab completion (local paths for `put`,
//! the server's names and ids for the rest, from a cached listing refreshed after changes). On a
//! pipe it reads one command per line with no prompts, so sessions can be scripted:
//! `printf 'ls\nput a.txt\nbye\n' | barge shell`; the exit status then tells whether every
//! command succeeded.
//!
//! The words are those of the original clients (`LIST_FILES`, `UPLOAD`, `DOWNLOAD`,
//! `DISCONNECT`, in any case) and the short forms of the one-shot commands, with the same
//! options. Arguments are split on spaces; quote them (`"my file.txt"`) or escape the spaces
//! (`my\ file.txt`) to keep them together.

use std::borrow::Cow;
use std::io::{self, BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use clap::{Parser, Subcommand};
use rustyline::completion::{
    Completer, FilenameCompleter, Pair, Quote, escape as escape_word, extract_word,
};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, Helper};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use barge::client::Client;
use barge::name::escape;
use barge::protocol::ListingEntry;

use super::commands::{self, GetArgs, LsArgs, MvArgs, PutArgs, RmArgs};
use super::output::Ui;
use super::{Status, interruptible, report};

const PROMPT: &str = "barge> ";

const HELP: &str = "\
This is an interactive client, the following commands are available:

    1. LIST_FILES - List files on server.                      ls [--json]
    2. UPLOAD - Upload files with given format.                put FILE... [--as NAME]
    3. DOWNLOAD - Download files from server by providing FILE ID
                                                               get ID-OR-NAME... [-o PATH] [--force]
    4. DISCONNECT - Disconnect from server                     bye, exit, quit
    5. RENAME - Rename a file on server.                       mv OLD NEW
    6. DELETE - Delete a file on server.                       rm ID-OR-NAME
    7. HELP - Show this list.

Commands work in any case. UPLOAD and DOWNLOAD alone ask for the file.
Quote names with spaces (\"my file.txt\") or escape them (my\\ file.txt); Tab completes.";

/// The shell's commands that take arguments, parsed like the one-shot commands.
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_subcommand = true,
    disable_version_flag = true
)]
struct Line {
    #[command(subcommand)]
    command: ShellCommand,
}

#[derive(Subcommand, Debug)]
enum ShellCommand {
    /// List the files on the server
    #[command(visible_alias = "list", alias = "list_files")]
    Ls(LsArgs),
    /// Upload files
    #[command(visible_alias = "upload")]
    Put(PutArgs),
    /// Download files
    #[command(visible_alias = "download")]
    Get(GetArgs),
    /// Rename a file on the server
    #[command(visible_aliases = ["change", "rename"])]
    Mv(MvArgs),
    /// Delete a file on the server
    #[command(visible_alias = "delete")]
    Rm(RmArgs),
}

/// The command words, for completion.
const WORDS: &[&str] = &[
    "LIST_FILES",
    "UPLOAD",
    "DOWNLOAD",
    "DISCONNECT",
    "RENAME",
    "DELETE",
    "HELP",
    "ls",
    "list",
    "put",
    "upload",
    "get",
    "download",
    "mv",
    "change",
    "rename",
    "rm",
    "delete",
    "help",
    "bye",
    "exit",
    "quit",
];

/// Runs the shell until `bye` or the end of input.
pub(crate) fn run(rt: &Runtime, addr: &str, ui: &Ui) -> Status {
    let interactive = io::stdin().is_terminal();
    let remote = Arc::new(Mutex::new(Vec::new()));
    let mut input = if interactive {
        Input::editor(Arc::clone(&remote))
    } else {
        Input::Pipe(io::stdin().lock())
    };
    let mut shell = Shell {
        rt,
        addr,
        ui,
        client: None,
        remote,
        stale: true,
        interactive,
        worst: Status::Success,
    };
    match shell.rt.block_on(interruptible(commands::connect(addr))) {
        Ok(client) => {
            if interactive {
                ui.note(format_args!(
                    "Connected to {addr} ({}). Type HELP for the list of commands.",
                    escape(&client.greeting().text)
                ));
            }
            shell.client = Some(client);
        }
        Err(e) => return report(&e),
    }
    loop {
        shell.refresh_completions();
        let line = match input.read(PROMPT) {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                ui.fail(format_args!("barge: reading the command: {e}"));
                shell.worst = shell.worst.max(Status::Failure);
                break;
            }
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        input.remember(line);
        if shell.execute(line, &mut input) == Flow::Quit {
            break;
        }
    }
    if let Some(client) = shell.client.take() {
        if client.is_usable() {
            let _ = shell.rt.block_on(client.disconnect());
        }
    }
    if interactive {
        ui.note("Disconnected.");
    }
    input.save();
    if interactive {
        Status::Success
    } else {
        shell.worst
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

struct Shell<'a> {
    rt: &'a Runtime,
    addr: &'a str,
    ui: &'a Ui,
    client: Option<Client<TcpStream>>,
    /// The server's files as last listed, for completion.
    remote: Arc<Mutex<Vec<ListingEntry>>>,
    /// The listing may be out of date.
    stale: bool,
    interactive: bool,
    /// The worst status of the commands so far.
    worst: Status,
}

impl Shell<'_> {
    fn execute(&mut self, line: &str, input: &mut Input) -> Flow {
        let mut words = match split_words(line) {
            Ok(words) => words,
            Err(e) => {
                self.fail_with(Status::Usage, &e);
                return Flow::Continue;
            }
        };
        let Some(first) = words.first_mut() else {
            return Flow::Continue;
        };
        *first = first.to_lowercase();
        let first = first.clone();
        match (first.as_str(), words.len()) {
            ("help" | "?", _) => {
                // A failure to print help is not worth reporting.
                let _ = self.ui.result(HELP);
                return Flow::Continue;
            }
            ("bye" | "exit" | "quit" | "disconnect", _) => return Flow::Quit,
            ("list", 2) if matches!(words[1].to_lowercase().as_str(), "files" | "file") => {
                words.truncate(1);
            }
            ("upload" | "put", 1) => match self.ask_upload(input) {
                Some(path) => words.push(path),
                None => return Flow::Continue,
            },
            ("download" | "get", 1) => match self.ask(input, "file id: ") {
                Some(id) => words.push(id),
                None => return Flow::Continue,
            },
            (
                "ls" | "list" | "list_files" | "put" | "upload" | "get" | "download" | "mv"
                | "change" | "rename" | "rm" | "delete",
                _,
            ) => {}
            (other, _) => {
                let e = format!(
                    "unknown command '{}'; type HELP for the list of commands",
                    escape(other)
                );
                self.fail_with(Status::Usage, &e);
                return Flow::Continue;
            }
        }
        let command = match Line::try_parse_from(&words) {
            Ok(line) => line.command,
            Err(e) => {
                let usage = e.use_stderr();
                let _ = e.print();
                if usage {
                    self.worst = self.worst.max(Status::Usage);
                }
                return Flow::Continue;
            }
        };
        self.run(command);
        Flow::Continue
    }

    /// Runs one command, connecting first if the connection was lost.
    fn run(&mut self, command: ShellCommand) {
        if let Some(client) = self.client.as_mut() {
            if let Err(e) = self.rt.block_on(client.check_idle()) {
                self.ui.fail(format_args!("barge: {e}; reconnecting."));
                self.client = None;
            }
        }
        if self.client.is_none() {
            match self
                .rt
                .block_on(interruptible(commands::connect(self.addr)))
            {
                Ok(client) => {
                    self.ui.note(format_args!("Reconnected to {}.", self.addr));
                    self.client = Some(client);
                }
                Err(e) => {
                    self.worst = self.worst.max(report(&e));
                    return;
                }
            }
        }
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let ui = self.ui;
        let changes = matches!(
            command,
            ShellCommand::Put(_) | ShellCommand::Mv(_) | ShellCommand::Rm(_)
        );
        let result = self.rt.block_on(interruptible(async {
            match &command {
                ShellCommand::Ls(args) => commands::ls(client, ui, args).await,
                ShellCommand::Put(args) => commands::put(client, ui, args).await,
                ShellCommand::Get(args) => commands::get(client, ui, args).await,
                ShellCommand::Mv(args) => commands::mv(client, ui, args).await,
                ShellCommand::Rm(args) => commands::rm(client, ui, args).await,
            }
        }));
        self.stale |= changes;
        if let Err(e) = result {
            self.worst = self.worst.max(report(&e));
        }
        if !client.is_usable() {
            self.client = None;
            self.ui
                .fail("The connection to the server was lost; the next command will reconnect.");
        }
    }

    /// Reads the cached listing again when files changed (only when completion can use it).
    fn refresh_completions(&mut self) {
        if !self.interactive || !self.stale {
            return;
        }
        let Some(client) = self.client.as_mut() else {
            return;
        };
        if let Ok(listing) = self.rt.block_on(client.list()) {
            *self.remote.lock().unwrap_or_else(PoisonError::into_inner) = listing.entries;
            self.stale = false;
        }
        if !client.is_usable() {
            self.client = None;
        }
    }

    /// Asks for the missing argument of a bare command; on a pipe, the next line is the answer.
    fn ask(&mut self, input: &mut Input, prompt: &str) -> Option<String> {
        match input.read(prompt) {
            Ok(Some(answer)) if !answer.trim().is_empty() => Some(answer.trim().to_owned()),
            Ok(_) => None,
            Err(e) => {
                self.fail_with(Status::Failure, &format!("reading the answer: {e}"));
                None
            }
        }
    }

    /// `UPLOAD` alone: asks for the file, shows its name and size, and asks for approval.
    fn ask_upload(&mut self, input: &mut Input) -> Option<String> {
        // The answer is one path, spaces and all.
        let path = self.ask(input, "file name: ")?;
        if !self.interactive {
            return Some(path);
        }
        let size = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta.len(),
            Ok(_) => {
                self.fail_with(
                    Status::Failure,
                    &format!("{}: not a regular file", escape(&path)),
                );
                return None;
            }
            Err(e) => {
                let e = anyhow::Error::new(e).context(escape(&path));
                self.fail_with(Status::Failure, &super::render(&e));
                return None;
            }
        };
        let name = PathBuf::from(&path)
            .file_name()
            .map_or_else(|| escape(&path), |n| escape(&n.to_string_lossy()));
        let answer = self.ask(input, &format!("Upload {name} ({size} bytes)? [y/N] "))?;
        if matches!(answer.to_lowercase().as_str(), "y" | "yes") {
            Some(path)
        } else {
            self.ui.note("Upload cancelled.");
            None
        }
    }

    fn fail_with(&mut self, status: Status, message: &str) {
        self.ui.fail(format_args!("barge: {message}"));
        self.worst = self.worst.max(status);
    }
}

/// Where commands come from.
enum Input {
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
    fn editor(remote: Arc<Mutex<Vec<ListingEntry>>>) -> Self {
        let config = Config::builder()
            .completion_type(CompletionType::List)
            .max_history_size(1000)
            .map(|b| b.auto_add_history(false).build());
        let editor = config.and_then(Editor::with_config);
        let mut editor: Box<Editor<ShellHelper, FileHistory>> = match editor {
            Ok(editor) => Box::new(editor),
            Err(_) => return Self::Plain(io::stdin().lock()),
        };
        editor.set_helper(Some(ShellHelper {
            files: FilenameCompleter::new(),
            remote,
        }));
        let history = history_path();
        if let Some(path) = &history {
            // No history yet is the normal first run.
            let _ = editor.load_history(path);
        }
        Self::Editor { editor, history }
    }

    /// The next line, or `None` at the end of input. Ctrl-C abandons the line being typed.
    fn read(&mut self, prompt: &str) -> io::Result<Option<String>> {
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

    fn remember(&mut self, line: &str) {
        if let Self::Editor { editor, .. } = self {
            let _ = editor.add_history_entry(line);
        }
    }

    /// Saves the history; a failure only costs the history, so it is a note, not an error.
    fn save(&mut self) {
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
fn split_words(line: &str) -> Result<Vec<String>, String> {
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

/// Characters that end a word for completion; a `\` before one of them keeps it in the word.
fn is_break(c: char) -> bool {
    matches!(c, ' ' | '\t' | '"' | '\'' | '\\')
}

/// Tab completion: command words, local paths, and the server's names and ids.
struct ShellHelper {
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
            let words = WORDS
                .iter()
                .filter(|w| w.starts_with(|c: char| c.is_ascii_uppercase()) == upper)
                .filter(|w| w.to_lowercase().starts_with(&lower))
                .map(|w| Pair {
                    display: (*w).to_owned(),
                    replacement: format!("{w} "),
                })
                .collect();
            return Ok((0, words));
        };
        match before[..end].to_lowercase().as_str() {
            "put" | "upload" => self.files.complete(line, pos, ctx),
            "get" | "download" | "rm" | "delete" | "mv" | "change" | "rename" => {
                Ok(self.complete_remote(line, pos))
            }
            _ => Ok((pos, Vec::new())),
        }
    }
}

impl ShellHelper {
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

    #[test]
    fn every_help_command_parses() {
        for line in [
            "LIST_FILES",
            "list",
            "ls --json",
            "put a b",
            "upload a --as x/y",
            "get x -o out --force",
            "download 9e107d9d372bb6826bd81d3542a419d6",
            "mv a b",
            "change a b",
            "rename a b",
            "rm a",
            "delete a",
        ] {
            let mut words = split_words(line).unwrap_or_default();
            if let Some(w) = words.first_mut() {
                *w = w.to_lowercase();
            }
            assert!(Line::try_parse_from(&words).is_ok(), "{line}");
        }
        assert!(Line::try_parse_from(["mv", "../x", "y"]).is_err());
    }
}
