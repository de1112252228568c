//! `put -r` and `get -r`: whole folders, pipelined on the one connection, with one progress
//! bar (files and bytes) and a summary at the end.
//!
//! The walking, the placing of files and the folder boundary are the library's
//! ([`barge::client::tree`]); this is the terminal side: what to report, and in which words.

use std::path::{Path, PathBuf};
use std::time::Instant;

use barge::client::tree;
use barge::client::{AnyStream, Client, Destination, PutItem, RESUME_MIN};
use barge::name::{FileName, escape};
use barge::protocol::{FileRef, ListingEntry};

use super::super::output::{Tally, Ui};
use super::super::{Reported, Status, render};
use super::{GetArgs, PutArgs, fail, name_for, not_attempted, outcome};

/// `put -r`: each folder under its own name (or `--as`), files named beside them as they are.
pub(super) async fn put(
    client: &mut Client<AnyStream>,
    ui: &Ui,
    args: &PutArgs,
) -> anyhow::Result<()> {
    if args.name.is_some() && args.files.len() != 1 {
        ui.fail("barge: --as takes exactly one folder");
        return Err(Reported(Status::Usage).into());
    }
    let mut worst = Status::Success;
    let mut tally = Tally::default();
    let mut files: Vec<(PutItem, u64)> = Vec::new();
    for path in &args.files {
        let shown = escape(&path.display().to_string());
        let meta = match tokio::fs::metadata(path).await {
            Ok(meta) => meta,
            Err(e) => {
                let e = anyhow::Error::new(e).context(shown.clone());
                ui.fail(format_args!("Fail: {}", render(&e)));
                tally.failed.push(shown);
                worst = worst.max(Status::Failure);
                continue;
            }
        };
        let name = match &args.name {
            Some(name) => Ok(name.clone()),
            None => folder_name(path).and_then(|leaf| args.default_name(Path::new(leaf.as_str()))),
        };
        let name = match name {
            Ok(name) => name,
            Err(e) => {
                worst = worst.max(fail(ui, &shown, &e));
                tally.failed.push(shown);
                continue;
            }
        };
        if !meta.is_dir() {
            // A file among the folders travels with them, under its own name.
            files.push((
                PutItem {
                    path: path.clone(),
                    name,
                },
                meta.len(),
            ));
            continue;
        }
        let walk = match tree::walk(path, &name, args.follow).await {
            Ok(walk) => walk,
            Err(e) => {
                worst = worst.max(fail(ui, &shown, &anyhow::Error::new(e)));
                tally.failed.push(shown);
                continue;
            }
        };
        for skipped in walk.skipped {
            let what = escape(&skipped.path.display().to_string());
            if skipped.why.is_note() {
                ui.note(format_args!("Skipped: {what}: {}", skipped.why));
            } else {
                ui.fail(format_args!("Fail: {what}: {}", skipped.why));
                tally.failed.push(what);
                worst = worst.max(Status::Failure);
            }
        }
        files.extend(walk.files);
    }
    if args.skip_existing {
        files = skip_uploaded(client, ui, files, &mut tally).await?;
    }
    worst = worst.max(send(client, ui, files, args.follow, &mut tally).await?);
    outcome(worst)
}

/// The name a folder goes under by default: its own (`.` is named after the folder it is).
fn folder_name(path: &Path) -> anyhow::Result<FileName> {
    if path.file_name().is_some() {
        return name_for(path);
    }
    let full = std::fs::canonicalize(path)?;
    name_for(&full)
}

/// Drops the files the server has under the same name with the same MD5 (`--skip-existing`).
async fn skip_uploaded(
    client: &mut Client<AnyStream>,
    ui: &Ui,
    files: Vec<(PutItem, u64)>,
    tally: &mut Tally,
) -> anyhow::Result<Vec<(PutItem, u64)>> {
    let listing = client.list().await?;
    let theirs: std::collections::HashMap<&str, &ListingEntry> = listing
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e))
        .collect();
    let mut kept = Vec::with_capacity(files.len());
    for (item, size) in files {
        if let Some(entry) = theirs.get(item.name.as_str())
            && entry.size == size
            && tree::local_id(&item.path).await? == Some(entry.id)
        {
            ui.note(format_args!("Skipped: {} (already there)", item.name));
            tally.skipped += 1;
            continue;
        }
        kept.push((item, size));
    }
    Ok(kept)
}

/// Uploads `files` pipelined, with one bar and a summary. Files that can resume (at least
/// [`RESUME_MIN`] bytes, resume on) go after the pipelined batch, one `RESUME` at a time on the
/// same connection: each must wait for its offset before its bytes, and a large file's bytes
/// are most of its time anyway.
async fn send(
    client: &mut Client<AnyStream>,
    ui: &Ui,
    files: Vec<(PutItem, u64)>,
    follow: bool,
    tally: &mut Tally,
) -> anyhow::Result<Status> {
    let total = files.len() as u64;
    let bytes: u64 = files.iter().map(|(_, size)| size).sum();
    let sizes: Vec<u64> = files.iter().map(|(_, size)| *size).collect();
    let names: Vec<FileName> = files.iter().map(|(i, _)| i.name.clone()).collect();
    let resumes = client.resumes();
    let (large, small): (Vec<_>, Vec<_>) = files
        .into_iter()
        .enumerate()
        .partition(|(_, (_, size))| resumes && *size >= RESUME_MIN);
    let mut worst = Status::Success;
    let mut printing = Ok(());
    let mut reported = 0u64;
    let mut told = vec![false; names.len()];
    let start = Instant::now();
    ui.start_tree_bar("uploading", total, bytes);
    let mut on_result =
        |i: usize, result: Result<barge::client::Verified, barge::client::ClientError>| {
            reported += 1;
            if let Some(t) = told.get_mut(i) {
                *t = true;
            }
            ui.tree_step(reported, total, sizes.get(i).copied().unwrap_or(0));
            let Some(name) = names.get(i) else { return };
            match &result {
                Ok(v) => {
                    tally.files += 1;
                    tally.bytes += v.size;
                }
                Err(_) => tally.failed.push(name.to_string()),
            }
            match super::report_upload(ui, name, result) {
                Ok(status) => worst = worst.max(status),
                Err(e) => printing = Err(e),
            }
        };
    let (index, items): (Vec<usize>, Vec<PutItem>) =
        small.into_iter().map(|(i, (item, _))| (i, item)).unzip();
    let on_small =
        |j: usize, result| on_result(index.get(j).copied().unwrap_or(usize::MAX), result);
    // Without -L, a file that became a symlink since the walk is refused, not followed.
    let mut result = if follow {
        client.put_many(items, on_small).await
    } else {
        client.put_many_within(items, on_small).await
    };
    for (i, (item, _)) in large {
        if result.is_err() {
            break;
        }
        let mut first = true;
        let shown = item.name.clone();
        let progress = |p: barge::client::Progress| {
            if std::mem::take(&mut first) && p.done > 0 && p.done < p.total {
                ui.note(format_args!(
                    "Resuming {shown} at byte {} of {}",
                    p.done, p.total
                ));
            }
        };
        let one = if follow {
            client.upload(&item.path, &item.name, progress).await
        } else {
            client.upload_within(&item.path, &item.name, progress).await
        };
        match one {
            Err(e) if e.is_connection_lost() => result = Err(e),
            one => on_result(i, one),
        }
    }
    ui.end_bar();
    printing?;
    if let Err(e) = result {
        let e = anyhow::Error::new(e);
        for (name, _) in names.iter().zip(&told).filter(|(_, told)| !**told) {
            ui.fail(format_args!("Fail: {name}: no reply: {}", render(&e)));
            tally.failed.push(name.to_string());
        }
        worst = worst.max(super::status_of(&e));
    }
    ui.done(tally.summary("Uploaded", start.elapsed()))?;
    Ok(worst)
}

/// `get -r`: each server folder into `-o DIR/` (default: here) as `DIR/FOLDER/...`.
pub(super) async fn get(
    client: &mut Client<AnyStream>,
    ui: &Ui,
    args: &GetArgs,
) -> anyhow::Result<()> {
    let into = match &args.output {
        None => PathBuf::from("."),
        Some(p) => p.clone(),
    };
    // With -r the target is always a folder, created if missing.
    if let Err(e) = tokio::fs::create_dir_all(&into).await {
        let e = anyhow::Error::new(e).context(escape(&into.display().to_string()));
        ui.fail(format_args!("barge: {}", render(&e)));
        return Err(Reported(Status::Failure).into());
    }
    let listing = client.list().await?;
    if let Some(n) = listing.pending.filter(|&n| n > 0) {
        ui.note(format_args!(
            "({n} files on the server are still being indexed and are not included)"
        ));
    }
    let mut worst = Status::Success;
    let mut tally = Tally::default();
    let mut wanted: Vec<(&ListingEntry, PathBuf)> = Vec::new();
    for folder in &args.files {
        let shown = escape(&folder.as_str());
        let Some(name) = &folder.name else {
            ui.fail(format_args!(
                "Fail: {shown}: -r takes folder names, not ids"
            ));
            worst = worst.max(Status::Failure);
            continue;
        };
        let before = wanted.len();
        for entry in tree::under(&listing.entries, name) {
            match tree::target_in(&into, name, &entry.name) {
                Ok(path) => wanted.push((entry, path)),
                Err(e) => {
                    worst = worst.max(fail(ui, entry.name.as_str(), &anyhow::Error::new(e)));
                    tally.failed.push(entry.name.to_string());
                }
            }
        }
        if wanted.len() == before {
            let is_file = listing.entries.iter().any(|e| &e.name == name);
            let why = if is_file {
                "is a file, not a folder; drop -r"
            } else {
                "no such folder on the server"
            };
            ui.fail(format_args!("Fail: {shown}: {why}"));
            tally.failed.push(shown);
            worst = worst.max(Status::Failure);
        }
    }
    if args.skip_existing {
        let mut kept = Vec::with_capacity(wanted.len());
        for (entry, path) in wanted {
            if tree::local_id(&path).await? == Some(entry.id) {
                ui.note(format_args!("Skipped: {} (already there)", entry.name));
                tally.skipped += 1;
            } else {
                kept.push((entry, path));
            }
        }
        wanted = kept;
    }
    let needed: u64 = wanted.iter().map(|(e, _)| e.size).sum();
    if let Some(free) = free_space(&into)
        && needed > free
    {
        ui.fail(format_args!(
            "barge: the files to download take {} and {} has only {} free",
            indicatif::BinaryBytes(needed),
            escape(&into.display().to_string()),
            indicatif::BinaryBytes(free)
        ));
        return Err(Reported(Status::Failure).into());
    }
    let ready = tree::make_parents(&into, wanted.iter().map(|(_, p)| p.clone()).collect()).await;
    let mut items = Vec::with_capacity(wanted.len());
    for ((entry, path), ready) in wanted.into_iter().zip(ready) {
        match ready {
            Ok(()) => items.push((entry, path)),
            Err(e) => {
                worst = worst.max(fail(ui, entry.name.as_str(), &anyhow::Error::new(e)));
                tally.failed.push(entry.name.to_string());
            }
        }
    }
    worst = worst.max(receive(client, ui, &items, args.force, &mut tally).await?);
    outcome(worst)
}

/// Downloads `items` pipelined, by id (the bytes are checked against the listed id), each to
/// its own path, with one bar and a summary. Files that can resume (at least [`RESUME_MIN`]
/// bytes, resume on) go after the pipelined batch, one at a time on the same connection,
/// through a kept `.part` file as a single `get` does.
async fn receive(
    client: &mut Client<AnyStream>,
    ui: &Ui,
    items: &[(&ListingEntry, PathBuf)],
    force: bool,
    tally: &mut Tally,
) -> anyhow::Result<Status> {
    let total = items.len() as u64;
    let bytes: u64 = items.iter().map(|(e, _)| e.size).sum();
    let resumes = client.resumes();
    let (large, small): (Vec<usize>, Vec<usize>) =
        (0..items.len()).partition(|&i| resumes && items[i].0.size >= RESUME_MIN);
    let mut worst = Status::Success;
    let mut printing = Ok(());
    let mut reported = 0u64;
    let mut told = vec![false; items.len()];
    let start = Instant::now();
    ui.start_tree_bar("downloading", total, bytes);
    let mut on_result = |i: usize, result: Result<barge::client::Downloaded, _>| {
        reported += 1;
        let Some((entry, _)) = items.get(i) else {
            return;
        };
        told[i] = true;
        ui.tree_step(reported, total, entry.size);
        match &result {
            Ok(d) => {
                tally.files += 1;
                tally.bytes += d.size;
            }
            Err(_) => tally.failed.push(entry.name.to_string()),
        }
        match super::report_download(ui, entry.name.as_str(), result) {
            Ok(status) => worst = worst.max(status),
            Err(e) => printing = Err(e),
        }
    };
    let by_id = |i: usize| FileRef {
        id: Some(items[i].0.id),
        name: None,
    };
    let requests = small
        .iter()
        .map(|&i| (by_id(i), Destination::File(items[i].1.clone())));
    let mut result = client
        .get_each(requests, force, |j, result| {
            on_result(small.get(j).copied().unwrap_or(usize::MAX), result);
        })
        .await;
    for i in large {
        if result.is_err() {
            break;
        }
        let mut first = true;
        let shown = &items[i].0.name;
        let progress = |p: barge::client::Progress| {
            if std::mem::take(&mut first) && p.done > 0 && p.done < p.total {
                ui.note(format_args!(
                    "Resuming {shown} at byte {} of {}",
                    p.done, p.total
                ));
            }
        };
        let dest = Destination::File(items[i].1.clone());
        match client.download(&by_id(i), &dest, force, progress).await {
            Err(e) if e.is_connection_lost() => result = Err(e),
            one => on_result(i, one),
        }
    }
    ui.end_bar();
    printing?;
    if let Err(e) = result {
        let mut missing = items.iter().zip(&told).filter(|(_, told)| !**told);
        if let Some(((first, _), _)) = missing.next() {
            let e = anyhow::Error::new(e);
            worst = worst.max(fail(ui, first.name.as_str(), &e));
            tally.failed.push(first.name.to_string());
            let rest: Vec<String> = missing.map(|((e, _), _)| e.name.to_string()).collect();
            not_attempted(ui, rest.iter().cloned());
            tally.failed.extend(rest);
        }
    }
    ui.done(tally.summary("Downloaded", start.elapsed()))?;
    Ok(worst)
}

/// The free space of the disk holding `path`, if the system says.
fn free_space(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}
