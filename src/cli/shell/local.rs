//! The shell's commands on this machine: `lcd`, `lpwd`, `lls`, `!COMMAND` and `clear`, as in
//! sftp. They never touch the connection.
//!
//! `lcd` changes the process's working folder, which is where downloads go and relative
//! uploads are read from, so the one-shot commands' rules apply unchanged after it.

use std::io::{self, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use barge::name::escape;

/// `lcd [FOLDER]`: to `FOLDER`, or home without one.
///
/// # Errors
/// The folder cannot be entered; the message names it.
pub(super) fn lcd(arg: Option<&str>, home: Option<&Path>) -> Result<PathBuf, String> {
    let target = match (arg, home) {
        (Some(dir), _) => PathBuf::from(dir),
        (None, Some(home)) => home.to_owned(),
        (None, None) => return Err("lcd: no folder given and no home folder".to_owned()),
    };
    std::env::set_current_dir(&target).map_err(|e| {
        let e = anyhow::Error::new(e);
        format!(
            "lcd: {}: {}",
            escape(&target.display().to_string()),
            super::super::render(&e)
        )
    })?;
    std::env::current_dir().map_err(|e| format!("lcd: {e}"))
}

/// `lls [FOLDER]`: the entries of a local folder, folders with a `/`, in natural order.
///
/// # Errors
/// The folder cannot be read; the message names it.
pub(super) fn lls(arg: Option<&str>) -> Result<Vec<String>, String> {
    let dir = Path::new(arg.unwrap_or("."));
    let shown = escape(&dir.display().to_string());
    let entries = std::fs::read_dir(dir).map_err(|e| {
        let e = anyhow::Error::new(e);
        format!("lls: {shown}: {}", super::super::render(&e))
    })?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| {
            let mut name = escape(&e.file_name().to_string_lossy());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                name.push('/');
            }
            name
        })
        .collect();
    names.sort_by(|a, b| natord::compare(a, b));
    Ok(names)
}

/// `!COMMAND`, or `!` alone for an interactive shell, run by `$SHELL` (or `sh`). On a pipe
/// the command gets no standard input: that is where the shell's own commands come from.
///
/// # Errors
/// The command could not be started, or it failed (its status is in the message).
pub(super) fn run(command: &str, interactive: bool) -> Result<(), String> {
    let shell = std::env::var_os("SHELL")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "sh".into());
    let mut child = Command::new(&shell);
    if !command.trim().is_empty() {
        child.arg("-c").arg(command);
    } else if !interactive {
        return Err("! alone starts a shell, which needs a terminal".to_owned());
    }
    if !interactive {
        child.stdin(Stdio::null());
    }
    let status = child
        .status()
        .map_err(|e| format!("!: {}: {e}", escape(&shell.to_string_lossy())))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("!{}: {status}", escape(command.trim())))
    }
}

/// `clear`: clears a terminal (and its scrollback); on a pipe there is nothing to clear.
pub(super) fn clear() {
    let mut out = io::stdout();
    if out.is_terminal() {
        let _ = out
            .write_all(b"\x1b[H\x1b[2J\x1b[3J")
            .and_then(|()| out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lls_sorts_naturally_and_marks_folders() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        for f in ["f10", "f2", "f1"] {
            std::fs::write(dir.path().join(f), b"")?;
        }
        std::fs::create_dir(dir.path().join("sub"))?;
        let got = lls(dir.path().to_str())?;
        assert_eq!(got, ["f1", "f2", "f10", "sub/"]);
        assert!(lls(Some("/nonexistent/folder")).is_err());
        Ok(())
    }

    #[test]
    fn a_failing_command_says_so() {
        assert!(run("true", false).is_ok());
        let e = run("exit 3", false).err().unwrap_or_default();
        assert!(e.contains("exit 3") && e.contains('3'), "{e}");
        assert!(run("", false).is_err());
    }
}
