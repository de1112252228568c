//! `mv` and `rm` over several files: by id, by name or by wildcard, each reported on its own
//! line, the rest going on after a refusal.

use anyhow::Context as _;

use barge::client::{AnyStream, Client};
use barge::name::escape;

use super::super::output::Ui;
use super::{MvArgs, RmArgs, not_attempted, outcome, parse_name, paths, render, status_of};

/// `mv`: one file to a new name, or files into a folder (`mv a b dir/`).
pub(super) async fn mv(
    client: &mut Client<AnyStream>,
    ui: &Ui,
    args: &MvArgs,
) -> anyhow::Result<()> {
    let (from, mut worst) = paths::expand(client, ui, &args.from).await?;
    let into = args.to.strip_suffix('/');
    let into_folder = into.is_some() || args.from.len() > 1 || from.len() != args.from.len();
    let folder = match into.unwrap_or(&args.to) {
        to if into_folder => Some(parse_name(to).map_err(anyhow::Error::msg)?),
        _ => None,
    };
    // An id alone does not say the file's name, which a move into a folder keeps.
    let listing = if folder.is_some() && from.iter().any(|f| f.name.is_none()) {
        Some(client.list().await.context("listing the files")?)
    } else {
        None
    };
    for file in &from {
        let shown = escape(&file.as_str());
        let to = match &folder {
            None => parse_name(&args.to).map_err(anyhow::Error::msg),
            Some(folder) => {
                let name = file.name.clone().or_else(|| {
                    let entries = listing.as_ref().map(|l| l.entries.as_slice());
                    entries?
                        .iter()
                        .find(|e| Some(e.id) == file.id)
                        .map(|e| e.name.clone())
                });
                match name {
                    Some(name) => {
                        let leaf = name.split_parent().1;
                        parse_name(&format!("{folder}/{leaf}")).map_err(anyhow::Error::msg)
                    }
                    None => Err(anyhow::anyhow!("no such file on the server")),
                }
            }
        };
        let result = match to {
            Ok(to) => client
                .rename(file, &to)
                .await
                .map(|()| to)
                .map_err(anyhow::Error::new),
            Err(e) => Err(e),
        };
        match result {
            Ok(to) => ui.done(format_args!("Renamed {shown} to {to}"))?,
            Err(e) => {
                let refusal = e.downcast_ref::<barge::client::ClientError>();
                let hint = match refusal {
                    Some(e) if e.is_folder_taken() => " (choose another name)",
                    Some(barge::client::ClientError::Refused { code, .. })
                        if *code == barge::protocol::Code::CONFLICT =>
                    {
                        " (rm it first, or choose another name)"
                    }
                    _ => "",
                };
                let e = e.context(format!("renaming {shown}"));
                ui.fail(format_args!("Fail: {}{hint}", render(&e)));
                worst = worst.max(status_of(&e));
            }
        }
        if !client.is_usable() {
            break;
        }
    }
    outcome(worst)
}

/// `rm`: each file, by id or name or wildcard, reported on its own line.
pub(super) async fn rm(
    client: &mut Client<AnyStream>,
    ui: &Ui,
    args: &RmArgs,
) -> anyhow::Result<()> {
    let (files, mut worst) = paths::expand(client, ui, &args.files).await?;
    for (i, file) in files.iter().enumerate() {
        let shown = escape(&file.as_str());
        match client.delete(file).await {
            Ok(()) => ui.done(format_args!("Deleted {shown}"))?,
            Err(e) => {
                let e = anyhow::Error::new(e).context(format!("deleting {shown}"));
                ui.fail(format_args!("Fail: {}", render(&e)));
                worst = worst.max(status_of(&e));
            }
        }
        if !client.is_usable() {
            let rest = files.get(i + 1..).unwrap_or_default();
            not_attempted(ui, rest.iter().map(|f| escape(&f.as_str())));
            break;
        }
    }
    outcome(worst)
}
