//! The page the gateway serves: one HTML file, its script and style sheet, and hash-wasm's MD5
//! (MIT licence, `assets/hash-wasm-LICENSE`), all compiled into the binary so the server works
//! with no network and no files of its own.
//!
//! The page works without JavaScript for listing and downloading: the server renders the folder
//! asked for (`/?folder=a/b/`) into the HTML, every name escaped; the script then takes over
//! (uploads, filter, sorting, rename and delete).
//!
//! Every response carries a strict Content-Security-Policy: scripts only from the server itself
//! (and WebAssembly compilation, which the MD5 needs), no inline script or style, no framing.
//! The page builds every name into the document as text, never as markup, so a file name cannot
//! inject anything.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};

use super::Gateway;
use crate::store::FileEntry;

const INDEX: &str = include_str!("assets/index.html");

/// The embedded files other than the page: name, content type, content.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
    (
        "md5.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/hash-wasm-md5.umd.min.js"),
    ),
];

#[derive(serde::Deserialize)]
pub(super) struct PageQuery {
    folder: Option<String>,
}

/// The page, with the folder asked for rendered in (so it lists and downloads without script).
pub(super) async fn index(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let Ok(access) = gw.reader(&headers, peer.ip()).await else {
        // Logged out: the page (its script shows the login form); nothing of the share.
        return page(
            INDEX
                .replace("{{who}}", "Log in to see the files.")
                .replace("{{browse_hidden}}", " hidden")
                .replace("{{crumbs}}", "")
                .replace("{{rows}}", "")
                .replace("{{empty_hidden}}", " hidden")
                .replace("{{empty}}", "")
                .replace("{{fingerprint}}", ""),
        );
    };
    let mut folder = query.folder.unwrap_or_default();
    if !folder.is_empty() && !folder.ends_with('/') {
        folder.push('/');
    }
    let mut may = Vec::new();
    let (perms, read_only) = (access.perms, gw.store.config().read_only);
    for (yes, what) in [
        (perms.may_list(), "list"),
        (perms.may_get(), "download"),
        (perms.may_put() && !read_only, "upload"),
        (perms.may_modify() && !read_only, "rename and delete"),
    ] {
        if yes {
            may.push(what);
        }
    }
    let who = format!(
        "Signed in as {}; you may {}.",
        access.principal,
        may.join(", ")
    );
    let (rows, empty) = if perms.may_list() {
        match gw.store.list().await {
            Ok(listing) => {
                // Straight from the snapshot: what is held is the HTML of at most ROWS_BYTES of
                // rows. Walking a large folder takes a while: off the async threads.
                let scope = access.scope.clone();
                let here = folder.clone();
                let links = perms.may_get();
                let made = crate::transfer::blocking(move || {
                    let seen = listing
                        .under(scope.folder_name())
                        .filter_map(|(name, id, size)| {
                            Some(FileEntry {
                                id,
                                name: scope.to_seen(name)?,
                                size,
                            })
                        });
                    rows(seen, &here, links)
                })
                .await;
                match made {
                    Ok(rows) => {
                        let note = rows.note().unwrap_or_default();
                        (rows.html, note)
                    }
                    Err(e) => (String::new(), format!("The listing failed: {e}")),
                }
            }
            Err(e) => (String::new(), super::api::Refusal::from(e).1),
        }
    } else {
        (String::new(), String::new())
    };
    let fingerprint = gw.fingerprint.as_ref().map_or(String::new(), |f| {
        format!("Server key {f} (the same as barge serve prints)")
    });
    let hidden = |h: bool| if h { " hidden" } else { "" };
    let page = fill(&[
        ("who", &text(&who)),
        ("browse_hidden", hidden(!perms.may_list())),
        ("crumbs", &crumbs(&folder)),
        ("rows", &rows),
        ("empty_hidden", hidden(empty.is_empty())),
        ("empty", &text(&empty)),
        ("fingerprint", &text(&fingerprint)),
    ]);
    self::page(page)
}

/// The page with each `{{key}}` replaced by its value (or nothing), in one pass over the
/// template, so a value that itself contains `{{...}}` (a file name) is never expanded.
fn fill(values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(INDEX.len() * 2);
    let mut rest = INDEX;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let key = &after[..end];
        out.push_str(
            values
                .iter()
                .find(|(k, _)| *k == key)
                .map_or("", |(_, v)| v),
        );
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn page(html: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

/// A link to the page showing `folder`.
fn folder_link(folder: &str) -> String {
    let q = percent_encoding::utf8_percent_encode(folder, percent_encoding::NON_ALPHANUMERIC);
    format!("/?folder={q}")
}

/// A link to a file's bytes.
pub(super) fn file_link(name: &str) -> String {
    let mut out = String::from("/files");
    for part in name.split('/') {
        out.push('/');
        out.extend(percent_encoding::utf8_percent_encode(
            part,
            percent_encoding::NON_ALPHANUMERIC,
        ));
    }
    out
}

fn crumbs(folder: &str) -> String {
    let mut out = format!("<a href=\"{}\">All files</a>", attr(&folder_link("")));
    let mut path = String::new();
    for part in folder.split('/').filter(|p| !p.is_empty()) {
        path.push_str(part);
        path.push('/');
        let _ = write!(
            out,
            " / <a href=\"{}\">{}</a>",
            attr(&folder_link(&path)),
            text(part)
        );
    }
    out
}

/// Bytes of table rows the server renders into one page (about 1,000 rows of short names):
/// past them, entries are counted, not rendered, and the page says so; its script lists them
/// all from `/api/files`. What a request for the page holds is this, the page around it and a
/// copy while the template is filled, however many files the folder has.
pub(super) const ROWS_BYTES: usize = 256 * 1024;

/// The rows of a folder as rendered into the page, and what they leave out.
struct Rows {
    /// Its sub-folders' rows (in name order), then its files' (in listing order).
    html: String,
    files: usize,
    files_shown: usize,
    folders: usize,
    folders_shown: usize,
}

impl Rows {
    /// What the page says under the table: nothing when every row is there.
    fn note(&self) -> Option<String> {
        if self.html.is_empty() {
            return Some("No files available at the moment.".to_owned());
        }
        if self.files_shown == self.files && self.folders_shown == self.folders {
            return None;
        }
        let count = |shown: usize, all: usize, what: &str| {
            format!("{shown} of {all} {what}{}", if all == 1 { "" } else { "s" })
        };
        Some(format!(
            "This page shows {} and {} here; with JavaScript on, it lists them all.",
            count(self.folders_shown, self.folders, "folder"),
            count(self.files_shown, self.files, "file"),
        ))
    }
}

/// The table rows of `folder` (names as the visitor sees them): a row per sub-folder, then
/// its files, until [`ROWS_BYTES`] of them are made. `entries` come in name order, so that
/// each sub-folder's entries come one after the other (a name prefix is a range of that order).
fn rows(entries: impl IntoIterator<Item = FileEntry>, folder: &str, links: bool) -> Rows {
    let mut b = RowsBuilder {
        folder,
        out: Rows {
            html: String::new(),
            files: 0,
            files_shown: 0,
            folders: 0,
            folders_shown: 0,
        },
        folders: BTreeMap::new(),
        folder_bytes: 0,
        files: String::new(),
        current: None,
    };
    for e in entries {
        let Some(rest) = e.name.as_str().strip_prefix(folder) else {
            continue;
        };
        if let Some((sub, _)) = rest.split_once('/') {
            b.in_folder(sub, e.size);
        } else {
            b.file(&e, rest, links);
        }
    }
    b.close_folder();
    let mut out = b.out;
    out.html = b.folders.into_values().collect::<String>() + &b.files;
    out
}

/// [`rows`] on its way.
struct RowsBuilder<'a> {
    folder: &'a str,
    out: Rows,
    /// The sub-folders' rows made, by name.
    folders: BTreeMap<String, String>,
    folder_bytes: usize,
    files: String,
    /// The sub-folder whose entries are being summed: name, bytes, files.
    current: Option<(String, u64, usize)>,
}

impl RowsBuilder<'_> {
    fn full(&self) -> bool {
        self.files.len() + self.folder_bytes >= ROWS_BYTES
    }

    /// Counts a file of sub-folder `sub`.
    fn in_folder(&mut self, sub: &str, size: u64) {
        if let Some((name, bytes, count)) = &mut self.current
            && name == sub
        {
            *bytes += size;
            *count += 1;
            return;
        }
        self.close_folder();
        self.current = Some((sub.to_owned(), size, 1));
    }

    /// Makes the row of the sub-folder summed so far, if there is room.
    fn close_folder(&mut self) {
        let Some((sub, size, count)) = self.current.take() else {
            return;
        };
        if let Some(row) = self.folders.get_mut(&sub) {
            // Only if the entries were not in name order after all: one row per folder still.
            *row = folder_row(self.folder, &sub, size, count);
            return;
        }
        self.out.folders += 1;
        if !self.full() {
            let row = folder_row(self.folder, &sub, size, count);
            self.folder_bytes += row.len();
            self.folders.insert(sub, row);
            self.out.folders_shown += 1;
        }
    }

    /// Makes the row of a file right in the folder (`rest`: its name there), if there is room.
    fn file(&mut self, e: &FileEntry, rest: &str, links: bool) {
        // A sub-folder's entries are over once another name comes.
        self.close_folder();
        self.out.files += 1;
        if self.full() {
            return;
        }
        self.out.files_shown += 1;
        let id = e.id.to_hex();
        // A name that reads as an id would be taken as one ("ids win"): link such a file by id.
        let target = if crate::id::FileId::parse(e.name.as_str()).is_ok() {
            id.clone()
        } else {
            e.name.as_str().to_owned()
        };
        let name = if links {
            format!(
                "<a href=\"{}\" download=\"{}\">{}</a>",
                attr(&file_link(&target)),
                attr(rest),
                text(rest)
            )
        } else {
            text(rest).into_owned()
        };
        let _ = write!(
            self.files,
            "<tr><td class=\"name\">{name}</td><td class=\"num\" title=\"{} bytes\">{}</td>\
             <td class=\"id\">{id}</td><td class=\"actions\"></td></tr>",
            e.size,
            human(e.size)
        );
    }
}

/// The row of sub-folder `sub` of `folder`: its bytes and files in all.
fn folder_row(folder: &str, sub: &str, size: u64, count: usize) -> String {
    format!(
        "<tr><td class=\"name\"><a class=\"folder\" href=\"{}\">{}</a></td>\
         <td class=\"num\" title=\"{size} bytes\">{}</td><td class=\"id muted\">{count} file{}</td>\
         <td class=\"actions\"></td></tr>",
        attr(&folder_link(&format!("{folder}{sub}/"))),
        text(sub),
        human(size),
        if count == 1 { "" } else { "s" }
    )
}

/// A size for people: `512 B`, `1.5 KiB`, `20 MiB` (as the script shows it).
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ if v < 10.0 => format!("{v:.1} {}", UNITS[unit]),
        _ => format!("{v:.0} {}", UNITS[unit]),
    }
}

pub(super) async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Headers on every response: what the page may load and run, and no sniffing or framing.
pub(super) async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
             img-src 'self' data:; connect-src 'self'; form-action 'none'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
