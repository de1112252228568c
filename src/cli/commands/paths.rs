//! Where files come from and go to: `-o` like `cp`, standard input and output (`put -`,
//! `-o -`), and wildcards over the server's names (`get '*.pdf'`, `rm 'old/*'`).
//!
//! Standard input has no size to announce, and the protocol announces every body's size
//! before it is sent (`PROTOCOL.md` section 1), so `put -` spools it to a private temporary
//! file first (unnamed, removed by the system when closed): the cost is one copy on the local
//! disk, the gain that the upload is the ordinary one, verified by MD5, with no change to the
//! wire.

use std::io::{Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use barge::client::{AnyStream, Client, ClientError, Destination, glob};
use barge::name::escape;
use barge::protocol::FileRef;

use super::super::output::{Ui, Unit};
use super::super::{Reported, Status, render};
use super::{GetArgs, PutArgs, report_upload};

/// Where `-o` sends downloads, as `cp` would: an existing folder receives them; a path ending
/// in `/` is a folder, created if missing; otherwise the path is the file's own (one file only).
pub(super) fn destination(output: Option<&Path>, several: bool) -> Result<Destination, String> {
    let Some(p) = output else {
        return Ok(Destination::Dir(PathBuf::from(".")));
    };
    let shown = escape(&p.display().to_string());
    if p.as_os_str().to_string_lossy().ends_with('/') {
        std::fs::create_dir_all(p).map_err(|e| format!("{shown}: {}", e.kind()))?;
        return Ok(Destination::Dir(p.to_owned()));
    }
    if p.is_dir() {
        return Ok(Destination::Dir(p.to_owned()));
    }
    if several {
        return Err(format!(
            "{shown}: not a folder (end it with / to create it)"
        ));
    }
    Ok(Destination::File(p.to_owned()))
}

/// `put - --as NAME`: standard input, spooled to a private temporary file, then uploaded.
pub(super) async fn put_stdin(
    client: &mut Client<AnyStream>,
    ui: &Ui,
    args: &PutArgs,
) -> anyhow::Result<()> {
    let (Some(name), [_]) = (&args.name, args.files.as_slice()) else {
        ui.fail("barge: - (standard input) goes alone, with --as NAME");
        return Err(Reported(Status::Usage).into());
    };
    let spooled = tokio::task::spawn_blocking(|| -> std::io::Result<std::fs::File> {
        let mut file = tempfile::tempfile()?;
        std::io::copy(&mut std::io::stdin().lock(), &mut file)?;
        file.seek(SeekFrom::Start(0))?;
        Ok(file)
    })
    .await?
    .context("reading standard input into a temporary file")?;
    ui.start_bar(name.as_str(), 0, Unit::Bytes);
    let result = client
        .upload_file(spooled, Path::new("-"), name, |p| {
            ui.progress(p.done, p.total);
        })
        .await;
    ui.end_bar();
    super::outcome(report_upload(ui, name, result)?)
}

/// `get ID -o -`: the bytes go to standard output as they come, and are checked at the end; a
/// mismatch is reported after they went out (exit status 4: the reader must drop them).
pub(super) async fn get_stdout(
    client: &mut Client<AnyStream>,
    ui: &Ui,
    args: &GetArgs,
) -> anyhow::Result<()> {
    let [file] = args.files.as_slice() else {
        ui.fail("barge: -o - (standard output) takes exactly one file");
        return Err(Reported(Status::Usage).into());
    };
    if args.recursive {
        ui.fail("barge: -o - (standard output) cannot take a folder");
        return Err(Reported(Status::Usage).into());
    }
    let out = stdout_file().context("opening standard output")?;
    let shown = escape(&file.as_str());
    match client.download_to(file, out, |_| {}).await {
        Ok(d) => {
            // Standard output carries the file: the report goes to stderr.
            ui.note(format_args!(
                "Success: {} {} written to standard output",
                d.name, d.id
            ));
            Ok(())
        }
        Err(e @ ClientError::ChecksumMismatch { .. }) => {
            let e = anyhow::Error::new(e);
            ui.fail(format_args!(
                "Fail: {shown}: {}; the bytes already written to standard output are not the \
                 file: discard them",
                render(&e)
            ));
            Err(Reported(Status::Verification).into())
        }
        Err(e) => {
            let e = anyhow::Error::new(e);
            Err(Reported(super::fail(ui, &shown, &e)).into())
        }
    }
}

/// Standard output as a file of its own (a duplicate of the descriptor), so the body goes
/// there straight from the transfer's writer, unbuffered by Rust's `Stdout`.
fn stdout_file() -> std::io::Result<std::fs::File> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd as _;
        let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
        Ok(std::fs::File::from(fd))
    }
    #[cfg(not(unix))]
    {
        Err(std::io::Error::other("not supported on this system"))
    }
}

/// Whether an argument holds a wildcard.
pub(super) fn is_pattern(f: &FileRef) -> bool {
    f.name
        .as_ref()
        .is_some_and(|n| glob::is_pattern(n.as_str()))
}

/// Replaces each argument that holds a wildcard, and is not itself the name of a file, by the
/// server's names it matches (listing once, only if needed). A pattern that matches nothing
/// is reported and counts as a failure.
pub(super) async fn expand(
    client: &mut Client<AnyStream>,
    ui: &Ui,
    args: &[FileRef],
) -> anyhow::Result<(Vec<FileRef>, Status)> {
    if !args.iter().any(is_pattern) {
        return Ok((args.to_vec(), Status::Success));
    }
    let listing = client.list().await.context("listing the files")?;
    let mut out = Vec::new();
    let mut worst = Status::Success;
    for arg in args {
        let Some(name) = arg.name.as_ref().filter(|_| is_pattern(arg)) else {
            out.push(arg.clone());
            continue;
        };
        if listing.entries.iter().any(|e| &e.name == name) {
            out.push(arg.clone());
            continue;
        }
        let matched = match glob::select(&listing.entries, name.as_str()) {
            Ok(matched) => matched,
            Err(e) => {
                ui.fail(format_args!("Fail: {name}: {e}"));
                worst = worst.max(Status::Usage);
                continue;
            }
        };
        if matched.is_empty() {
            ui.fail(format_args!("Fail: {name}: no file on the server matches"));
            worst = worst.max(Status::Failure);
        }
        for entry in matched {
            // Exactly what typing the name would give.
            out.push(FileRef::parse(entry.name.as_str()).unwrap_or(FileRef {
                id: None,
                name: Some(entry.name.clone()),
            }));
        }
    }
    Ok((out, worst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths_behave_like_cp() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let existing = dir.path().join("existing");
        std::fs::create_dir(&existing)?;
        assert_eq!(
            destination(Some(&existing), false)?,
            Destination::Dir(existing.clone())
        );
        let missing = dir.path().join("missing");
        assert_eq!(
            destination(Some(&missing), false)?,
            Destination::File(missing.clone())
        );
        assert!(destination(Some(&missing), true).is_err());
        assert!(!missing.exists());
        let slash = PathBuf::from(format!("{}/new/", dir.path().display()));
        assert_eq!(
            destination(Some(&slash), true)?,
            Destination::Dir(slash.clone())
        );
        assert!(dir.path().join("new").is_dir());
        assert_eq!(destination(None, true)?, Destination::Dir(".".into()));
        Ok(())
    }
}
