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
//! (`my\ file.txt`) to keep them together. `~` is the home folder; `put *.pdf` matches local
//! files, `get *.pdf` and `rm old/*` the server's names.

mod completion;
mod expand;
mod input;

use std::io::{self, IsTerminal as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use clap::Parser;
use tokio::runtime::Runtime;

use barge::client::{AnyStream, Client};
use barge::name::escape;
use barge::protocol::ListingEntry;

use super::commands::{self, ClientCommand};
use super::output::Ui;
use super::remote::{self, Remote};
use super::{Status, interruptible, report, words};
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
    let remote = Arc::new(Mutex::new(Vec::new()));
    let mut input = if interactive {
        Input::editor(Arc::clone(&remote))
    } else {
        Input::Pipe(io::stdin().lock())
    };
    let mut shell = Shell {
        rt,
        server,
        ui,
        client: None,
        remote,
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
    server: &'a Remote,
    ui: &'a Ui,
    client: Option<Client<AnyStream>>,
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
        if word.is(&words::LS)
            && words.len() == 2
            && matches!(words[1].to_lowercase().as_str(), "files" | "file")
        {
            // `LIST FILES`, `LIST FILE`: the protocol's spellings with a space.
            words.truncate(1);
        }
        if word.prompts && words.len() == 1 {
            let answer = if word.is(&words::PUT) {
                self.ask_upload(input)
            } else {
                self.ask(input, "file id: ")
            };
            match answer {
                Some(answer) => words.push(answer),
                None => return Flow::Continue,
            }
        }
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let words = expand::expand(words, word.is(&words::PUT), home.as_deref());
        let command = match words::parse::<Line, _, _>(&words) {
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
                 use `barge put - --as NAME` outside the shell",
            );
            return Flow::Continue;
        }
        self.run(command);
        Flow::Continue
    }

    /// Runs one command, connecting first if the connection was lost.
    fn run(&mut self, command: ClientCommand) {
        if let Some(client) = self.client.as_mut() {
            if let Err(e) = self.rt.block_on(client.check_idle()) {
                self.ui.fail(format_args!("barge: {e}; reconnecting."));
                self.client = None;
            }
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
                    return;
                }
            }
        }
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let ui = self.ui;
        let changes = command.changes_files();
        let result = self
            .rt
            .block_on(interruptible(commands::run(client, ui, &command)));
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
