//! `ls`: the server's listing for people (natural order, human sizes on a terminal) and for
//! scripts (`-l`, the form printed on a pipe, and `--json`), filtered by a wildcard or a folder
//! and shown relative to the shell's working folder.

use anyhow::Context as _;

use barge::client::{AnyStream, Client, glob};
use barge::name::escape;
use barge::protocol::ListingEntry;

use super::super::output::Ui;
use super::super::{Reported, Status};
use super::LsArgs;

/// `ls`.
pub(super) async fn ls(
    client: &mut Client<AnyStream>,
    ui: &Ui,
    args: &LsArgs,
) -> anyhow::Result<()> {
    let listing = client.list().await.context("listing the files")?;
    let mut entries = listing.entries;
    // The listing's order is the server's; people look for `f2` before `f10`.
    entries.sort_by(|a, b| natord::compare(a.name.as_str(), b.name.as_str()));
    let entries = match select(&entries, args) {
        Ok(entries) => entries,
        Err(e) => {
            ui.fail(format_args!("barge: {e}"));
            return Err(Reported(Status::Usage).into());
        }
    };
    if args.json {
        let entries: Vec<_> = entries
            .iter()
            .map(|(e, _)| serde_json::json!({ "id": e.id.to_hex(), "name": e.name.as_str(), "size": e.size }))
            .collect();
        ui.result(serde_json::Value::Array(entries))?;
    } else if args.long || !ui.terminal() {
        let width = entries
            .iter()
            .map(|(e, _)| e.size.to_string().len())
            .max()
            .unwrap_or(1);
        for (e, shown) in &entries {
            ui.result(format_args!("{}  {:>width$}  {shown}", e.id, e.size))?;
        }
    } else {
        let sizes: Vec<String> = entries.iter().map(|(e, _)| human_size(e.size)).collect();
        let width = sizes.iter().map(String::len).max().unwrap_or(1);
        for ((_, shown), size) in entries.iter().zip(&sizes) {
            ui.result(format_args!("{size:>width$}  {shown}"))?;
        }
    }
    if entries.is_empty() && !args.json {
        match &args.pattern {
            Some(p) => ui.note(format_args!("No files match {}", escape(p))),
            None => ui.note("No files available at the moment"),
        }
    }
    if let Some(n) = listing.pending.filter(|&n| n > 0) {
        ui.note(format_args!(
            "({n} more being indexed; they are listed once hashed)"
        ));
    }
    Ok(())
}

/// The entries `ls` shows (under the working folder, matching the pattern), each with the name
/// it is shown under (relative to the working folder, escaped).
fn select<'a>(
    entries: &'a [ListingEntry],
    args: &LsArgs,
) -> Result<Vec<(&'a ListingEntry, String)>, String> {
    let base = args.folder.as_ref().map(|f| format!("{f}/"));
    let base = base.as_deref().unwrap_or("");
    let under = |e: &&ListingEntry| e.name.as_str().starts_with(base);
    let chosen: Vec<&ListingEntry> = match args.pattern.as_deref() {
        None => entries.iter().filter(under).collect(),
        Some(p) if glob::is_pattern(p) => glob::select(entries, &format!("{base}{p}"))
            .map_err(|e| format!("{}: {e}", escape(p)))?,
        // A plain word is a file, or a folder whose files are listed.
        Some(p) => {
            let p = format!("{base}{}", p.trim_end_matches('/'));
            let folder = format!("{p}/");
            entries
                .iter()
                .filter(|e| e.name.as_str() == p || e.name.as_str().starts_with(&folder))
                .collect()
        }
    };
    Ok(chosen
        .into_iter()
        .map(|e| {
            let name = e.name.as_str();
            (e, escape(name.strip_prefix(base).unwrap_or(name)))
        })
        .collect())
}

/// A size for people: `512 B`, `1.5 KiB`, `3.2 MiB`.
pub(crate) fn human_size(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else {
        indicatif::BinaryBytes(bytes).to_string()
    }
}
