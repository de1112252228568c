//! The shell's questions: the missing argument of a bare `UPLOAD` or `DOWNLOAD`, and the
//! approval of an upload, asked only once the server has no file of that name.
//!
//! On a pipe every answer is the next line, the approval included, so a script reads as the
//! session would: `UPLOAD`, `a.txt`, `y`. It does not run the commands (see the shell itself).

use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use barge::client::{AnyStream, Client};
use barge::name::escape;

use super::completion::Mode;
use super::input::Input;
use super::{Shell, Status, commands, expand};

impl Shell<'_> {
    /// Asks for the missing argument of a bare command, completing as `mode` says; on a pipe,
    /// the next line is the answer.
    pub(super) fn ask(&mut self, input: &mut Input, mode: Mode, prompt: &str) -> Option<String> {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .mode = mode;
        let answer = input.read(prompt);
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .mode = Mode::Command;
        match answer {
            Ok(Some(answer)) if !answer.trim().is_empty() => Some(answer.trim().to_owned()),
            Ok(_) => None,
            Err(e) => {
                self.fail_with(Status::Failure, &format!("reading the answer: {e}"));
                None
            }
        }
    }

    /// `UPLOAD` alone: asks for the file, checks that the server has no file of that name yet,
    /// then asks for approval. On a pipe the answers are the next lines, the approval included
    /// (`UPLOAD`, `a.txt`, `y`), so a script reads as the session would.
    pub(super) fn ask_upload(&mut self, input: &mut Input) -> Option<String> {
        // The answer is one path, spaces and all.
        let path = self.ask(input, Mode::Local, "file name: ")?;
        let approved = self.approve_upload(input, &path);
        if approved.is_none() && !self.interactive {
            // A script gives the approval on the line after the name whether or not the
            // question came: that line is part of this UPLOAD, never the next command.
            let _ = input.read("");
        }
        approved
    }

    /// The checks and the question of [`Shell::ask_upload`] once the file is named; `None`
    /// when refused before the question (which is then not read).
    fn approve_upload(&mut self, input: &mut Input, path: &str) -> Option<String> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let local = expand::tilde(path, home.as_deref());
        let size = match std::fs::metadata(&local) {
            Ok(meta) if meta.is_file() => meta.len(),
            Ok(_) => {
                self.fail_with(
                    Status::Failure,
                    &format!("{}: not a regular file", escape(path)),
                );
                return None;
            }
            Err(e) => {
                let e = anyhow::Error::new(e).context(escape(path));
                self.fail_with(Status::Failure, &super::super::render(&e));
                return None;
            }
        };
        let leaf = Path::new(&local)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cwd = self.cwd();
        let name = if cwd.is_empty() {
            leaf
        } else {
            format!("{cwd}/{leaf}")
        };
        // Asked before the approval, so that a yes is never followed by a refusal.
        let rt = self.rt;
        let taken = self
            .connected()
            .and_then(|client| rt.block_on(server_has(client, &name)).ok());
        if taken == Some(true) {
            self.fail_with(
                Status::Failure,
                &format!(
                    "{} already exists on the server (use put FILE --as NEWNAME, or rm it first)",
                    escape(&name)
                ),
            );
            return None;
        }
        let answer = self.ask_approval(
            input,
            &format!(
                "Upload {} as {} ({})? [y/N] ",
                escape(path),
                escape(&name),
                commands::human_size(size)
            ),
        );
        if answer.is_some_and(|a| matches!(a.to_lowercase().as_str(), "y" | "yes")) {
            Some(local)
        } else {
            self.ui.note("Upload cancelled.");
            Some(String::new())
        }
    }

    /// The approval question; its line is read (even empty) so that it is never taken for
    /// the next command.
    fn ask_approval(&mut self, input: &mut Input, question: &str) -> Option<String> {
        match input.read(question) {
            Ok(answer) => answer.map(|a| a.trim().to_owned()),
            Err(e) => {
                self.fail_with(Status::Failure, &format!("reading the answer: {e}"));
                None
            }
        }
    }
}

/// Whether the server lists a file named `name`.
async fn server_has(client: &mut Client<AnyStream>, name: &str) -> Result<bool, ()> {
    let listing = client.list().await.map_err(|_| ())?;
    Ok(listing.entries.iter().any(|e| e.name.as_str() == name))
}
