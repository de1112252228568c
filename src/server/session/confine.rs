//! What a user confined to a folder (`--folder DIR`) sees: names it sends are taken inside the
//! folder, names the server shows are shown relative to it, and files outside it do not exist.
//!
//! Threat: a confined user reaching or learning about files outside its folder, by a name, a
//! rename target, an id, a listing or an error message. Answers: every name goes through
//! `Scope::to_real` (a checked name joined under the folder, so no form leaves it); an id is
//! looked up among the files inside the folder only, so an id of a file outside is `404` exactly
//! like an unknown id; listings hold only the folder's files; every store error is rewritten
//! with seen names before it becomes a reply. Unconfined sessions pass through unchanged.
//! Not here: which commands a user may run (`login`).

use super::Session;
use crate::name::FileName;
use crate::protocol::{Code, FileRef, Reply};
use crate::security::users::Scope;
use crate::server::reply_for;
use crate::store::{StoreError, Target};
use crate::transport::Stream;

impl<S: Stream> Session<'_, S> {
    /// The real name of a name the client sent; `Err` is the reply for a name that is too
    /// long once joined under the folder.
    pub(super) fn real_name(&self, seen: &FileName) -> Result<FileName, Reply> {
        match self.scope() {
            None => Ok(seen.clone()),
            Some(scope) => scope
                .to_real(seen)
                .map_err(|e| Reply::new(Code::INVALID_NAME, format!("Invalid name: {e}"))),
        }
    }

    /// The name the client sees for a real name (the real name itself when unconfined).
    pub(super) fn seen_name(&self, real: &FileName) -> String {
        match self.scope() {
            None => real.as_str().to_owned(),
            Some(scope) => scope
                .to_seen(real)
                .map_or_else(String::new, |n| n.as_str().to_owned()),
        }
    }

    /// What a file reference means to the store. For a confined session an id counts only for
    /// files inside the folder (`unique`: several such files are ambiguous, as for rename and
    /// delete; otherwise the first is taken, as a download does).
    pub(super) async fn target(&mut self, r: FileRef, unique: bool) -> Result<Target, Reply> {
        let Some(scope) = self.scope() else {
            return Ok(Target {
                id: r.id,
                name: r.name,
            });
        };
        if let Some(id) = r.id {
            let listing = self.store.list().await.map_err(|e| reply_for(&e))?;
            let inside: Vec<FileName> = listing
                .under(scope.folder_name())
                .filter(|(name, file, _)| *file == id && scope.contains(name))
                .map(|(name, ..)| name.clone())
                .collect();
            match (inside.as_slice(), unique) {
                ([], _) => {}
                ([only], _) | ([only, ..], false) => return Ok(Target::name(only.clone())),
                (many, true) => {
                    return Err(reply_for(&StoreError::Ambiguous {
                        id,
                        count: many.len(),
                    }));
                }
            }
        }
        match &r.name {
            Some(seen) => Ok(Target::name(self.real_name(seen)?)),
            None => Err(reply_for(&StoreError::NotFound(Target {
                id: r.id,
                name: None,
            }))),
        }
    }

    /// The reply for a store error, with names as the client sees them.
    pub(super) fn reply_for_seen(&self, e: &StoreError) -> Reply {
        match self.scope() {
            None => reply_for(e),
            Some(scope) => seen_reply(scope, e),
        }
    }
}

/// [`reply_for`] with every name in the error rewritten relative to `scope`; a name outside
/// it (which a confined request cannot normally meet) is replaced by the name asked for, so
/// no real name ever shows.
pub(crate) fn seen_reply(scope: &Scope, e: &StoreError) -> Reply {
    let seen = |n: &FileName| scope.to_seen(n);
    let rewritten = match e {
        StoreError::NotFound(t) => StoreError::NotFound(Target {
            id: t.id,
            name: t.name.as_ref().and_then(seen),
        }),
        StoreError::Exists(n) => match seen(n) {
            Some(n) => StoreError::Exists(n),
            None => return generic(e),
        },
        StoreError::FolderExists(n) => match seen(n) {
            Some(n) => StoreError::FolderExists(n),
            None => return generic(e),
        },
        StoreError::UploadInProgress { name, uploading } => match seen(name) {
            Some(name) => StoreError::UploadInProgress {
                uploading: seen(uploading).unwrap_or_else(|| name.clone()),
                name,
            },
            None => return generic(e),
        },
        StoreError::Equivalent { name, existing } => match seen(name) {
            Some(name) => StoreError::Equivalent {
                existing: seen(existing).unwrap_or_else(|| name.clone()),
                name,
            },
            None => return generic(e),
        },
        StoreError::NotAFolder(part) => {
            let folder = scope.folder_name().map_or("", FileName::as_str);
            match part.strip_prefix(folder).and_then(|p| p.strip_prefix('/')) {
                Some(rest) => StoreError::NotAFolder(rest.to_owned()),
                None => return generic(e),
            }
        }
        _ => return reply_for(e),
    };
    reply_for(&rewritten)
}

/// The code of `e` with words that name nothing.
fn generic(e: &StoreError) -> Reply {
    Reply::new(
        reply_for(e).code,
        "The name conflicts with an existing file",
    )
}
