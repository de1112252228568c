//! `barge shell`: an interactive session over one connection.
//!
//! With a terminal it offers line editing, history and tab completion (local paths for `put`,
//! `lcd`, `lls` and after `-o`; the server's names and ids for the rest, relative to the working
//! folder; the same inside the `UPLOAD` and `DOWNLOAD` prompts), from a cached listing refreshed
//! after changes. On a pipe it reads one command per line with no prompts, so sessions can be
//! scripted: `printf 'ls\nput a.txt\nbye\n' | barge shell`; the exit status then tells
//! whether every command succeeded. A bare `UPLOAD` on a pipe takes the file and then the
//! approval from the next two lines.
//!
//! The words are those of the original clients (`LIST_FILES`, `UPLOAD`, `DOWNLOAD`,
//! `DISCONNECT`, in any case), the short forms of the one-shot commands with the same options,
//! and sftp's: `cd`/`pwd` (a working folder on the server, see [`folder`]), `lcd`/`lls`/`lpwd`,
//! `!COMMAND` and `clear` ([`local`]), and `mkdir`, which explains why the server has no empty
//! folders. Arguments are split on spaces; quote them (`"my file.txt"`) or escape the spaces
//! (`my\ file.txt`) to keep them together. `~` is the home folder; `put *.pdf` matches local
//! files, `get *.pdf` and `rm old/*` the server's names.

mod completion;
mod expand;
mod folder;
mod input;
mod local;
mod prompts;

use std::io::{self, IsTerminal as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use clap::Parser;
use tokio::runtime::Runtime;

use super::commands::{self, ClientCommand};
use super::output::Ui;
use super::remote::{self, Remote};
use super::{Status, interruptible, report, words};
use barge::client::{AnyStream, Client};
use barge::name::escape;
use completion::{Mode, Shared};
use input::{Input, split_words};

const PROMPT: &str = "barge> ";

/// The shell's commands that take arguments, parsed like the one-shot commands.
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_subcommand = true,
    disable_version_flag = true
)]
struct Line {
    #[command(subcommand)]
    command: ClientCommand,
}

/// Runs the shell until `bye` or the end of input.
pub(crate) fn run(rt: &Runtime, server: &Remote, ui: &Ui) -> Status {
    let interactive = io::stdin().is_terminal();
    let shared = Arc::new(Mutex::new(Shared::default()));
    let mut input = if interactive {
        Input::editor(Arc::clone(&shared))
    } else {
        Input::Pipe(io::stdin().lock())
    };
    let mut shell = Shell {
        rt,
        server,
        ui,
        client: None,
        shared,
        stale: true,
        interactive,
        worst: Status::Success,
    };
    match shell
        .rt
        .block_on(interruptible(remote::connect(server, ui)))
    {
        Ok(client) => {
            if interactive {
                ui.note(format_args!(
                    "Connected to {server} ({}). Type HELP for the list of commands.",
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
    if let Some(client) = shell.client.take()
        && client.is_usable()
    {
        let _ = shell.rt.block_on(client.disconnect());
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
    server: &'a Remote,
    ui: &'a Ui,
    client: Option<Client<AnyStream>>,
    /// The working folder on the server, and the files as last listed (for completion).
    shared: Arc<Mutex<Shared>>,
    /// The listing may be out of date.
    stale: bool,
    interactive: bool,
    /// The worst status of the commands so far.
    worst: Status,
}

impl Shell<'_> {
    fn execute(&mut self, line: &str, input: &mut Input) -> Flow {
        if let Some(command) = line.strip_prefix('!') {
            if let Err(e) = local::run(command, self.interactive) {
                self.fail_with(Status::Failure, &e);
            }
            return Flow::Continue;
        }
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
        let Some(word) = words::find(&first) else {
            let e = format!(
                "unknown command '{}'; type HELP for the list of commands",
                escape(&first)
            );
            self.fail_with(Status::Usage, &e);
            return Flow::Continue;
        };
        if word.is(&words::HELP) {
            // A failure to print help is not worth reporting.
            let _ = self.ui.result(words::help());
            return Flow::Continue;
        }
        if word.is(&words::BYE) {
            return Flow::Quit;
        }
        let home = std::env::var_os("HOME").map(PathBuf::from);
        if self.local(word, &words, home.as_deref()) {
            return Flow::Continue;
        }
        if word.is(&words::LS)
            && words.len() == 2
            && matches!(words[1].to_lowercase().as_str(), "files" | "file")
        {
            // `LIST FILES`, `LIST FILE`: the protocol's spellings with a space.
            words.truncate(1);
        }
        // Only the original clients' words ask; `get` alone is a usage error, as on the
        // command line, rather than a prompt that would take the next command as its answer.
        if word.prompts && words.len() == 1 && first == word.classic.to_lowercase() {
            let answer = if word.is(&words::PUT) {
                self.ask_upload(input).filter(|path| !path.is_empty())
            } else {
                self.ask(input, Mode::Remote, "file id or name: ")
            };
            match answer {
                Some(answer) => words.push(answer),
                None => return Flow::Continue,
            }
        }
        let words = expand::expand(words, word.is(&words::PUT), home.as_deref());
        let cwd = self.cwd();
        let words = if word.is(&words::PUT) {
            folder::rewrite_as(words, &cwd)
        } else if word.is(&words::LS) {
            Ok(words)
        } else {
            folder::rewrite(words, &cwd)
        };
        let words = match words {
            Ok(words) => words,
            Err(e) => {
                self.fail_with(Status::Usage, &e);
                return Flow::Continue;
            }
        };
        let mut command = match words::parse::<Line, _, _>(&words) {
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
        if command.reads_stdin() {
            // The shell's commands come from standard input: `-` would swallow the rest.
            self.fail_with(
                Status::Usage,
                "put - reads standard input, which is where this shell reads its commands; \
                 use `barge put - --as NEWNAME` outside the shell",
            );
            return Flow::Continue;
        }
        let folder = barge::name::FileName::parse(&cwd).ok();
        match &mut command {
            ClientCommand::Put(args) => args.into = folder,
            ClientCommand::Ls(args) => args.folder = folder,
            _ => {}
        }
        self.run(command);
        Flow::Continue
    }

    /// The working folder on the server (`""`: the top).
    fn cwd(&self) -> String {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cwd
            .clone()
    }

    /// Runs the commands that need no server files (`cd` needs the listing, nothing more);
    /// `false` if `word` is not one of them.
    fn local(&mut self, word: &words::Word, words: &[String], home: Option<&Path>) -> bool {
        let arg = words.get(1).map(String::as_str);
        if words.len() > 2 && !word.is(&words::MKDIR) {
            if [
                &words::CD,
                &words::LCD,
                &words::LLS,
                &words::PWD,
                &words::LPWD,
                &words::CLEAR,
            ]
            .iter()
            .any(|w| word.is(w))
            {
                self.fail_with(
                    Status::Usage,
                    &format!("{} takes one argument at most", word.name),
                );
                return true;
            }
            return false;
        }
        let result = if word.is(&words::CD) {
            self.cd(arg.unwrap_or("/"))
        } else if word.is(&words::PWD) {
            Ok(vec![format!("/{}", self.cwd())])
        } else if word.is(&words::MKDIR) {
            Err(
                "mkdir: the server keeps no empty folders: a folder exists while it holds a \
                 file, and appears with the first one (put FILE --as FOLDER/FILE, or cd into \
                 a folder that has files)"
                    .to_owned(),
            )
        } else if word.is(&words::LCD) {
            let arg = arg.map(|a| expand::tilde(a, home));
            local::lcd(arg.as_deref(), home).map(|_| Vec::new())
        } else if word.is(&words::LPWD) {
            std::env::current_dir()
                .map(|d| vec![escape(&d.display().to_string())])
                .map_err(|e| format!("lpwd: {e}"))
        } else if word.is(&words::LLS) {
            let arg = arg.map(|a| expand::tilde(a, home));
            local::lls(arg.as_deref())
        } else if word.is(&words::CLEAR) {
            local::clear();
            Ok(Vec::new())
        } else {
            return false;
        };
        match result {
            Ok(lines) => {
                for line in lines {
                    if self.ui.result(line).is_err() {
                        break;
                    }
                }
            }
            Err(e) => self.fail_with(Status::Failure, &e),
        }
        true
    }

    /// `cd`: to a folder that holds files on the server (a folder exists only while it does).
    fn cd(&mut self, arg: &str) -> Result<Vec<String>, String> {
        let target = folder::resolve(&self.cwd(), arg)?;
        let target = target.trim_end_matches('/').to_owned();
        if !target.is_empty() {
            let prefix = format!("{target}/");
            let rt = self.rt;
            let client = self.connected().ok_or("cd: not connected")?;
            let listing = rt
                .block_on(client.list())
                .map_err(|e| format!("cd: {}", super::render(&anyhow::Error::new(e))))?;
            if !listing
                .entries
                .iter()
                .any(|e| e.name.as_str().starts_with(&prefix))
            {
                let file = listing.entries.iter().any(|e| e.name.as_str() == target);
                return Err(if file {
                    format!("cd: {}: a file, not a folder", escape(&target))
                } else {
                    format!(
                        "cd: no folder {} on the server (a folder exists while it holds a file)",
                        escape(&target)
                    )
                });
            }
        }
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cwd = target;
        Ok(Vec::new())
    }

    /// The connection, made again first if it was lost; `None` (reported) if that failed.
    fn connected(&mut self) -> Option<&mut Client<AnyStream>> {
        if let Some(client) = self.client.as_mut()
            && let Err(e) = self.rt.block_on(client.check_idle())
        {
            self.ui.fail(format_args!("barge: {e}; reconnecting."));
            self.client = None;
        }
        if self.client.is_none() {
            match self
                .rt
                .block_on(interruptible(remote::connect(self.server, self.ui)))
            {
                Ok(client) => {
                    self.ui
                        .note(format_args!("Reconnected to {}.", self.server));
                    self.client = Some(client);
                }
                Err(e) => {
                    self.worst = self.worst.max(report(&e));
                    return None;
                }
            }
        }
        self.client.as_mut()
    }

    /// Runs one command, connecting first if the connection was lost.
    fn run(&mut self, command: ClientCommand) {
        let rt = self.rt;
        let ui = self.ui;
        let Some(client) = self.connected() else {
            return;
        };
        let changes = command.changes_files();
        let result = rt.block_on(interruptible(commands::run(client, ui, &command)));
        let usable = client.is_usable();
        self.stale |= changes;
        if let Err(e) = result {
            self.worst = self.worst.max(report(&e));
        }
        if !usable {
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
            let mut entries = listing.entries;
            entries.sort_by(|a, b| natord::compare(a.name.as_str(), b.name.as_str()));
            self.shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entries = entries;
            self.stale = false;
        }
        if !client.is_usable() {
            self.client = None;
        }
    }

    fn fail_with(&mut self, status: Status, message: &str) {
        self.ui.fail(format_args!("barge: {message}"));
        self.worst = self.worst.max(status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert!(words::parse::<Line, _, _>(&words).is_ok(), "{line}");
        }
        assert!(words::parse::<Line, _, _>(["mv", "../x", "y"]).is_err());
    }

    #[test]
    fn every_listed_word_parses() {
        for (word, args) in words::SAMPLES {
            for w in word.all_words() {
                let line: Vec<&str> = std::iter::once(w.as_str())
                    .chain(args.iter().copied())
                    .collect();
                assert!(words::parse::<Line, _, _>(&line).is_ok(), "{line:?}");
            }
        }
    }
}
