//! The client commands' terminal side, shared by the one-shot commands and the shell.
//!
//! Each takes a connected [`Client`], the [`Ui`] and its parsed arguments. Commands that work on
//! several files report each one (`Success: ...` or `Fail: ...`) and go on with the next; they
//! fail with [`Reported`] at the end if any file failed.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use barge::client::{AnyStream, Client, ClientError, Destination, Downloaded, PutItem, Verified};
use barge::name::{FileName, escape};
use barge::protocol::{Code, FileRef};

use super::output::{Ui, Unit};
use super::{Reported, Status, describe_io, render, status_of};

mod folders;
mod list;

pub(crate) use list::human_size;
mod names;
mod paths;

/// Files up to this size are pipelined with `PUT` when several are sent in a row. A refused
/// `PUT` still carries its body, so large files use `UPLOAD`, which is refused before sending.
const PIPELINE_MAX: u64 = 256 * 1024;

/// The commands that talk to a server, for the one-shot command line and the shell alike. Their
/// other words and their help come from the one list in [`words`] ([`words::parse`]).
#[derive(Subcommand, Debug)]
pub(crate) enum ClientCommand {
    Ls(LsArgs),
    Put(PutArgs),
    Get(GetArgs),
    Mv(MvArgs),
    Rm(RmArgs),
}

impl ClientCommand {
    /// Whether it reads standard input (`put -`).
    pub(crate) fn reads_stdin(&self) -> bool {
        matches!(self, Self::Put(args) if args.files.iter().any(|p| p.as_os_str() == "-"))
    }

    /// Whether it may change the server's files (the shell then refreshes its completions).
    pub(crate) fn changes_files(&self) -> bool {
        matches!(self, Self::Put(_) | Self::Mv(_) | Self::Rm(_))
    }
}

/// Runs one command on a connected client.
pub(crate) async fn run(
    client: &mut Client<AnyStream>,
    ui: &Ui,
    command: &ClientCommand,
) -> anyhow::Result<()> {
    match command {
        ClientCommand::Ls(args) => list::ls(client, ui, args).await,
        ClientCommand::Put(args) => put(client, ui, args).await,
        ClientCommand::Get(args) => get(client, ui, args).await,
        ClientCommand::Mv(args) => names::mv(client, ui, args).await,
        ClientCommand::Rm(args) => names::rm(client, ui, args).await,
    }
}

/// Options of `ls`.
#[derive(Args, Debug, Clone)]
pub(crate) struct LsArgs {
    /// Only the names matching this wildcard (`'*.pdf'`, `'photos/**/*.jpg'`), or the files
    /// under this folder
    #[arg(value_name = "PATTERN")]
    pub(crate) pattern: Option<String>,
    /// Long form: id, size in bytes and name (the form printed when not on a terminal)
    #[arg(long, short)]
    pub(crate) long: bool,
    /// Print a JSON array of {"id", "name", "size"} objects instead
    #[arg(long, conflicts_with = "long")]
    pub(crate) json: bool,
    /// The shell's working folder on the server: names are shown relative to it.
    #[arg(skip)]
    pub(crate) folder: Option<FileName>,
}

/// Options of `put`.
#[derive(Args, Debug, Clone)]
pub(crate) struct PutArgs {
    /// Local files to upload, each stored under its file name (`-`: standard input, with --as)
    #[arg(required = true, value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,
    /// Name to store the file under (one file only); may contain folders: `photos/beach.jpg`.
    /// With -r, the name of the one folder on the server
    #[arg(long = "as", value_name = "NAME", value_parser = parse_name)]
    pub(crate) name: Option<FileName>,
    /// Upload folders and every file in them (only files travel: empty folders do not)
    #[arg(long, short)]
    pub(crate) recursive: bool,
    /// With -r, follow symlinks (by default they are skipped with a note)
    #[arg(short = 'L', long = "dereference", requires = "recursive")]
    pub(crate) follow: bool,
    /// With -r, skip files the server has under the same name with the same MD5
    #[arg(long, requires = "recursive")]
    pub(crate) skip_existing: bool,
    /// Start over instead of continuing what the server kept of an interrupted upload
    #[arg(long)]
    pub(crate) no_resume: bool,
    /// The shell's working folder on the server: names without `--as` go under it.
    #[arg(skip)]
    pub(crate) into: Option<FileName>,
}

impl PutArgs {
    /// The name a local file or folder is stored under when `--as` does not say.
    pub(crate) fn default_name(&self, path: &Path) -> anyhow::Result<FileName> {
        let leaf = name_for(path)?;
        match &self.into {
            Some(folder) => Ok(FileName::parse(&format!("{folder}/{leaf}"))?),
            None => Ok(leaf),
        }
    }
}

/// Options of `get`.
#[derive(Args, Debug, Clone)]
pub(crate) struct GetArgs {
    /// Files to download, by id (32 hex digits) or name; wildcards (`'*.pdf'`) match the
    /// server's names
    #[arg(required = true, value_name = "ID-OR-NAME", value_parser = parse_ref)]
    pub(crate) files: Vec<FileRef>,
    /// Where to save, as `cp`: an existing folder, a folder to create (ending in `/`), a file
    /// name (one file), or `-` for standard output [default: the current folder]
    #[arg(long, short, value_name = "PATH")]
    pub(crate) output: Option<PathBuf>,
    /// Replace existing local files
    #[arg(long, short)]
    pub(crate) force: bool,
    /// Download server folders and every file under them, into `PATH/FOLDER/...`
    #[arg(long, short)]
    pub(crate) recursive: bool,
    /// With -r, skip files already here with the same MD5
    #[arg(long, requires = "recursive")]
    pub(crate) skip_existing: bool,
    /// Start over instead of continuing a `.part` file left by an interrupted download
    #[arg(long)]
    pub(crate) no_resume: bool,
}

/// Options of `mv`.
#[derive(Args, Debug, Clone)]
pub(crate) struct MvArgs {
    /// The files to rename, by id or name (wildcards match the server's names)
    #[arg(value_name = "OLD", required = true, value_parser = parse_ref)]
    from: Vec<FileRef>,
    /// The new name; with several files, or ending in `/`, the folder they move into
    #[arg(value_name = "NEW")]
    to: String,
}

/// Options of `rm`.
#[derive(Args, Debug, Clone)]
pub(crate) struct RmArgs {
    /// The files to delete, by id or name (wildcards match the server's names)
    #[arg(value_name = "ID-OR-NAME", required = true, value_parser = parse_ref)]
    files: Vec<FileRef>,
}

fn parse_name(s: &str) -> Result<FileName, String> {
    FileName::parse(s).map_err(|e| format!("invalid name: {e}"))
}

fn parse_ref(s: &str) -> Result<FileRef, String> {
    FileRef::parse(s).map_err(|e| format!("neither an id nor a valid name: {e}"))
}

/// `put`.
pub(crate) async fn put(
    client: &mut Client<AnyStream>,
    ui: &Ui,
    args: &PutArgs,
) -> anyhow::Result<()> {
    client.set_resume(!args.no_resume);
    if args.files.iter().any(|p| p.as_os_str() == "-") {
        return paths::put_stdin(client, ui, args).await;
    }
    if args.recursive {
        return folders::put(client, ui, args).await;
    }
    if args.name.is_some() && args.files.len() != 1 {
        ui.fail("barge: --as takes exactly one file");
        return Err(Reported(Status::Usage).into());
    }
    ui.start_tally();
    let result = put_files(client, ui, args).await;
    ui.end_tally("Uploaded")?;
    result
}

/// `put` of files one by one, or pipelined in runs of small ones.
async fn put_files(client: &mut Client<AnyStream>, ui: &Ui, args: &PutArgs) -> anyhow::Result<()> {
    let mut worst = Status::Success;
    // Runs of small files go out pipelined; anything else one by one.
    let mut batch: Vec<PutItem> = Vec::new();
    // Every file's metadata in one trip to a blocking thread: one trip per file costs more
    // than the stat itself when there are thousands of small files.
    let paths = args.files.clone();
    let mut metas = tokio::task::spawn_blocking(move || {
        paths.iter().map(std::fs::metadata).collect::<Vec<_>>()
    })
    .await
    .context("reading the files' metadata")?
    .into_iter();
    for (i, path) in args.files.iter().enumerate() {
        let meta = metas
            .next()
            .unwrap_or_else(|| Err(std::io::ErrorKind::NotFound.into()));
        let name = match &args.name {
            Some(name) => Ok(name.clone()),
            None => args.default_name(path),
        };
        let name = match name {
            Ok(name) => name,
            Err(e) => {
                worst = worst.max(fail(ui, &path.display().to_string(), &e));
                continue;
            }
        };
        if meta.as_ref().is_ok_and(std::fs::Metadata::is_dir) {
            let shown = escape(&path.display().to_string());
            ui.fail(format_args!("Fail: {shown}: is a folder; use -r"));
            ui.count_failed(&shown);
            worst = worst.max(Status::Failure);
            continue;
        }
        let small = meta.is_ok_and(|m| m.is_file() && m.len() <= PIPELINE_MAX);
        if small && args.files.len() > 1 {
            batch.push(PutItem {
                path: path.clone(),
                name,
            });
            continue;
        }
        worst = worst.max(put_batch(client, ui, std::mem::take(&mut batch)).await?);
        ui.start_bar(&name.to_string(), 0, Unit::Bytes);
        let result = client
            .upload(path, &name, |p| ui.progress(p.done, p.total))
            .await;
        ui.end_bar();
        worst = worst.max(report_upload(ui, &name, result)?);
        if !client.is_usable() {
            // The batch was sent before this upload, so only later files are left.
            let rest = args.files.get(i + 1..).unwrap_or_default();
            let rest = rest.iter().map(|p| p.display().to_string());
            not_attempted(ui, rest);
            return Err(Reported(worst).into());
        }
    }
    worst = worst.max(put_batch(client, ui, batch).await?);
    outcome(worst)
}

/// Sends a run of small files pipelined, reporting each.
async fn put_batch(
    client: &mut Client<AnyStream>,
    ui: &Ui,
    batch: Vec<PutItem>,
) -> anyhow::Result<Status> {
    if batch.is_empty() {
        return Ok(Status::Success);
    }
    let names: Vec<FileName> = batch.iter().map(|i| i.name.clone()).collect();
    let mut worst = Status::Success;
    let mut printing = Ok(());
    // Outcomes come in order: everything before this one has been reported.
    let mut reported = 0;
    ui.start_bar("uploading", batch.len() as u64, Unit::Files);
    let result = client
        .put_many(batch, |i, result| {
            reported = i + 1;
            ui.step();
            if let Some(name) = names.get(i) {
                match report_upload(ui, name, result) {
                    Ok(status) => worst = worst.max(status),
                    Err(e) => printing = Err(e),
                }
            }
        })
        .await;
    ui.end_bar();
    printing?;
    if let Err(e) = result {
        let e = anyhow::Error::new(e);
        for name in names.get(reported..).unwrap_or_default() {
            ui.fail(format_args!("Fail: {name}: no reply: {}", render(&e)));
            ui.count_failed(name.as_str());
        }
        return Err(Reported(worst.max(status_of(&e))).into());
    }
    Ok(worst)
}

/// Prints `Success: name id` or `Fail: name: why`; returns the status of the outcome.
fn report_upload(
    ui: &Ui,
    name: &FileName,
    result: Result<Verified, ClientError>,
) -> anyhow::Result<Status> {
    match result {
        Ok(v) => {
            ui.count_done(v.size);
            ui.done(format_args!("Success: {} {}", v.name, v.id))?;
            Ok(Status::Success)
        }
        Err(ClientError::Io { path, source }) => {
            let shown = escape(&path.display().to_string());
            let cannot = if source.kind() == std::io::ErrorKind::NotFound {
                ""
            } else {
                "cannot read: "
            };
            ui.fail(format_args!(
                "Fail: {shown}: {cannot}{}",
                describe_io(&source)
            ));
            ui.count_failed(name.as_str());
            Ok(Status::Failure)
        }
        // These name the local file themselves.
        Err(e @ (ClientError::NotAFile { .. } | ClientError::FileChanged { .. })) => {
            let e = anyhow::Error::new(e);
            ui.fail(format_args!("Fail: {}", render(&e)));
            ui.count_failed(name.as_str());
            Ok(status_of(&e))
        }
        Err(e) => {
            let hint = upload_hint(&e);
            let e = anyhow::Error::new(e);
            match hint {
                Some(hint) => ui.fail(format_args!("Fail: {name}: {} {hint}", render(&e))),
                None => ui.fail(format_args!("Fail: {name}: {}", render(&e))),
            }
            ui.count_failed(name.as_str());
            Ok(status_of(&e))
        }
    }
}

/// What to do about a failed upload, or what became of it, when the error alone does not say.
fn upload_hint(e: &ClientError) -> Option<&'static str> {
    match e {
        e if e.is_folder_taken() => Some("(use --as NEWNAME)"),
        ClientError::Refused { code, .. } if *code == Code::CONFLICT => {
            Some("(use --as NEWNAME, or rm it first)")
        }
        ClientError::Refused { code, .. } if *code == Code::UNAVAILABLE => {
            Some("(the server stopped during the upload; nothing was stored)")
        }
        // The server keeps an upload only once every byte arrived and its MD5 matched.
        e if e.is_connection_lost() => {
            Some("(the connection ended during the upload; nothing was stored)")
        }
        _ => None,
    }
}

/// Reports the files a lost connection left untried.
fn not_attempted(ui: &Ui, rest: impl Iterator<Item = String>) {
    for what in rest {
        ui.fail(format_args!(
            "Fail: {what}: not attempted: the connection was lost"
        ));
        ui.count_failed(&what);
    }
}

/// Prints `Fail: what: why`; returns the error's status.
fn fail(ui: &Ui, what: &str, e: &anyhow::Error) -> Status {
    ui.count_failed(what);
    ui.fail(format_args!("Fail: {what}: {}", render(e)));
    status_of(e)
}

/// The name a local file is stored under by default: its file name.
fn name_for(path: &Path) -> anyhow::Result<FileName> {
    let leaf = path
        .file_name()
        .with_context(|| format!("{} has no file name; use --as NAME", path.display()))?;
    let leaf = leaf.to_str().with_context(|| {
        format!(
            "{} is not valid UTF-8; use --as NAME",
            escape(&leaf.to_string_lossy())
        )
    })?;
    FileName::parse(leaf)
        .with_context(|| format!("cannot be stored as {:?}; use --as NAME", escape(leaf)))
}

/// `get`.
pub(crate) async fn get(
    client: &mut Client<AnyStream>,
    ui: &Ui,
    args: &GetArgs,
) -> anyhow::Result<()> {
    client.set_resume(!args.no_resume);
    if args.output.as_ref().is_some_and(|p| p.as_os_str() == "-") {
        return paths::get_stdout(client, ui, args).await;
    }
    if args.recursive {
        return folders::get(client, ui, args).await;
    }
    ui.start_tally();
    let result = get_files(client, ui, args).await;
    ui.end_tally("Downloaded")?;
    result
}

/// `get` of files by id, name or wildcard: one by one, or pipelined when there are several.
async fn get_files(client: &mut Client<AnyStream>, ui: &Ui, args: &GetArgs) -> anyhow::Result<()> {
    let (files, mut worst) = paths::expand(client, ui, &args.files).await?;
    // A wildcard may match one file today and several tomorrow: it always wants a folder.
    let several = files.len() > 1 || args.files.iter().any(paths::is_pattern);
    let dest = match paths::destination(args.output.as_deref(), several) {
        Ok(dest) => dest,
        Err(e) => {
            ui.fail(format_args!("barge: {e}"));
            return Err(Reported(Status::Failure).into());
        }
    };
    if files.len() > 1 {
        let status = get_batch(client, ui, &files, &dest, args.force).await;
        return outcome(worst.max(status.err().map_or(Status::Success, |e| status_of(&e))));
    }
    for (i, file) in files.iter().enumerate() {
        let shown = escape(&file.as_str());
        ui.start_bar(&shown, 0, Unit::Bytes);
        let result = client
            .download(file, &dest, args.force, |p| ui.progress(p.done, p.total))
            .await;
        ui.end_bar();
        worst = worst.max(report_download(ui, &shown, result)?);
        if !client.is_usable() {
            let rest = files.get(i + 1..).unwrap_or_default();
            not_attempted(ui, rest.iter().map(|f| escape(&f.as_str())));
            break;
        }
    }
    outcome(worst)
}

/// Downloads several files pipelined, reporting each in order as a run of single downloads
/// would.
async fn get_batch(
    client: &mut Client<AnyStream>,
    ui: &Ui,
    files: &[FileRef],
    dest: &Destination,
    force: bool,
) -> anyhow::Result<()> {
    let mut worst = Status::Success;
    let mut printing = Ok(());
    // Outcomes come in order: everything before this one has been reported.
    let mut reported = 0;
    ui.start_bar("downloading", files.len() as u64, Unit::Files);
    let result = client
        .get_many(files.iter().cloned(), dest, force, |i, result| {
            reported = i + 1;
            ui.step();
            if let Some(file) = files.get(i) {
                match report_download(ui, &escape(&file.as_str()), result) {
                    Ok(status) => worst = worst.max(status),
                    Err(e) => printing = Err(e),
                }
            }
        })
        .await;
    ui.end_bar();
    printing?;
    if let Err(e) = result {
        // The error is the outcome of the first file without one; the rest were not downloaded.
        if let Some((first, rest)) = files.get(reported..).unwrap_or_default().split_first() {
            let e = anyhow::Error::new(e);
            worst = worst.max(fail(ui, &escape(&first.as_str()), &e));
            not_attempted(ui, rest.iter().map(|f| escape(&f.as_str())));
        }
    }
    outcome(worst)
}

/// Prints `Success: name id saved as path` or `Fail: what: why`; returns the status of the
/// outcome.
fn report_download(
    ui: &Ui,
    shown: &str,
    result: Result<Downloaded, ClientError>,
) -> anyhow::Result<Status> {
    match result {
        Ok(d) => {
            ui.count_done(d.size);
            let path = d.path.strip_prefix(".").unwrap_or(&d.path);
            ui.done(format_args!(
                "Success: {} {} saved as {}",
                d.name,
                d.id,
                escape(&path.display().to_string())
            ))?;
            Ok(Status::Success)
        }
        Err(ClientError::Io { path, source }) => {
            ui.fail(format_args!(
                "Fail: {shown}: cannot write to {}: {}",
                shown_dir(&path),
                describe_io(&source)
            ));
            ui.count_failed(shown);
            Ok(Status::Failure)
        }
        Err(e) => {
            let hint = matches!(e, ClientError::AlreadyExists { .. });
            let status = fail(ui, shown, &anyhow::Error::new(e));
            if hint {
                ui.note("(use --force to replace it)");
            }
            Ok(status)
        }
    }
}

/// A local path as shown in a message, a folder with its `/` (`./`, not `.`).
fn shown_dir(path: &Path) -> String {
    let shown = escape(&path.display().to_string());
    if path.is_dir() && !shown.ends_with('/') {
        format!("{shown}/")
    } else {
        shown
    }
}

/// The result of a command that reported each file itself: only the exit status is left.
fn outcome(worst: Status) -> anyhow::Result<()> {
    if worst == Status::Success {
        Ok(())
    } else {
        Err(Reported(worst).into())
    }
}
