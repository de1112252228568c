//! The user and token database in the server's state folder (`users.json`).
//!
//! Threats and answers:
//! - a stolen or readable database revealing passwords or tokens: passwords are stored only as
//!   argon2id PHC strings, tokens only as SHA-256 hashes (a token is 32 random bytes from the OS, so
//!   a fast hash is enough); the file is written 0600 and refused when its group or others can
//!   access it;
//! - timing attacks: token hashes are compared in constant time against every entry; an unknown
//!   user name costs an argon2 verification like a known one, so names cannot be probed by time;
//! - a revoked token or removed user staying valid until a restart: the file's stamp (inode,
//!   size, mtime) is checked on every login attempt and the file reloaded when it changed;
//! - rights outliving a revocation on connections and web sessions already logged in: every
//!   change bumps a [`Users::generation`], and a session that sees a new one checks its login
//!   again with [`Users::recheck`] (same user with the same password, or same token; its
//!   permissions and folder as they are now);
//! - a hand-broken file widening access: a file that does not parse or holds an invalid entry is
//!   an error, and logins fail while it is broken (fail closed);
//! - two admin commands at once losing a change: changes are locked read-modify-write with an
//!   atomic rename.
//!
//! The argon2 verification takes tens of milliseconds of CPU: the server calls the `verify_*`
//! functions from `spawn_blocking`, after [`super::throttle`] has had its say.
//! Not here: the wire (`PROTOCOL.md` section 5.9), prompting for passwords (the CLI).

mod perms;
mod record;
#[cfg(test)]
mod tests;
mod watch;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;

pub use perms::{Permissions, PermsError, Scope};

use super::files::{self, FileError, Stamp};
use crate::name::NameError;
use record::{
    Db, Loaded, TokenRecord, UserRecord, dummy_hash, folder_text, hash_password, token_hash,
    unix_now, validate_password, validate_user_name, verify_hash,
};

/// The database's file name inside the state folder.
pub const USERS_FILE: &str = "users.json";
/// The prefix of every token, so that a leaked one is recognisable (by secret scanners too).
pub const TOKEN_PREFIX: &str = "barge_";
/// The longest password accepted, in bytes (a login line is at most 8,192 bytes anyway).
pub const MAX_PASSWORD_LEN: usize = 1024;
/// The longest user name.
pub const MAX_USER_NAME_LEN: usize = 64;
/// A database larger than this is refused rather than parsed.
const FILE_LIMIT: u64 = 16 * 1024 * 1024;
/// The current file format.
const FORMAT_VERSION: u32 = 1;

/// Why the database could not be used or changed.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file is unusable (open to others, not a regular file, I/O error).
    #[error("user database: {0}")]
    File(#[from] FileError),
    /// The file is not a valid database.
    #[error("`{}` is not a valid barge user database: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A user name with characters other than letters, digits, `.`, `_`, `-`, or too long.
    #[error(
        "invalid user name {0:?}: use 1 to {MAX_USER_NAME_LEN} letters, digits, '.', '_' or '-', \
         starting with a letter or digit"
    )]
    InvalidUserName(String),
    /// An empty password, or one longer than [`MAX_PASSWORD_LEN`].
    #[error("a password must be 1 to {MAX_PASSWORD_LEN} bytes long")]
    InvalidPassword,
    /// The user exists already.
    #[error("user {0:?} exists already")]
    UserExists(String),
    /// There is no such user.
    #[error("no user {0:?}")]
    NoSuchUser(String),
    /// The confining folder is not a valid name.
    #[error("invalid folder: {0}")]
    InvalidFolder(#[from] NameError),
    /// Hashing failed, or the OS random generator failed.
    #[error("{0}")]
    Crypto(String),
}

/// Who logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A user with a password.
    User,
    /// A token; the name is `token:<id>`.
    Token,
}

/// The result of a successful login: who, and what they may do where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user name, or `token:<id>` for a token (safe to log).
    pub name: String,
    /// Password user or token.
    pub kind: PrincipalKind,
    /// What it may do (including whether it is a drop box).
    pub perms: Permissions,
    /// Where it may do it.
    pub folder: Scope,
    /// A digest of the credential it logged in with (the password hash or the token hash), so
    /// that a new password or a new token under the same name is not taken for the old one.
    credential: [u8; 32],
}

impl Principal {
    /// Whether this principal may only upload.
    #[must_use]
    pub fn drop_box(&self) -> bool {
        self.perms.drop_box
    }
}

/// A user as listed (never with its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The name.
    pub name: String,
    /// Its permissions.
    pub perms: Permissions,
    /// Its scope.
    pub folder: Scope,
}

/// A token as listed (never with its secret or hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The short id used to revoke it.
    pub id: String,
    /// The label given at creation.
    pub label: String,
    /// Its permissions.
    pub perms: Permissions,
    /// Its scope.
    pub folder: Scope,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
}

/// A freshly created token: the only moment its secret exists outside the client.
pub struct NewToken {
    /// The id to list and revoke it by.
    pub id: String,
    secret: String,
}

impl NewToken {
    /// The secret `barge_...` to hand to the client once.
    #[must_use]
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for NewToken {
    /// Never shows the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Cache {
    stamp: Option<Stamp>,
    loaded: Result<Arc<Loaded>, String>,
    /// Bumped whenever `loaded` is replaced.
    generation: u64,
    /// When `stamp` was last compared with the file's.
    checked: Instant,
    /// The watch saw a change that no `stat` has looked at yet.
    dirty: bool,
    /// What lets [`Users::generation`] skip the `stat` while the folder is quiet; set up at its
    /// first call (admin commands never make one), and tried again a [`watch::RESTAT_EVERY`]
    /// later while the state folder does not exist or after the watch was lost.
    watch: Option<watch::DirWatch>,
    watch_tried: Option<Instant>,
}

impl Cache {
    fn new(stamp: Option<Stamp>, loaded: Result<Arc<Loaded>, String>) -> Self {
        Self {
            stamp,
            loaded,
            generation: 0,
            checked: Instant::now(),
            dirty: false,
            watch: None,
            watch_tried: None,
        }
    }

    /// True when the database cannot have changed since `stamp` was compared: the watch saw
    /// nothing in the folder and the last comparison is recent ([`watch::RESTAT_EVERY`]).
    fn vouched(&mut self, dir: Option<&Path>) -> bool {
        if self.watch.is_none()
            && self
                .watch_tried
                .is_none_or(|t| t.elapsed() >= watch::RESTAT_EVERY)
        {
            self.watch_tried = Some(Instant::now());
            self.watch = dir.and_then(|d| watch::DirWatch::new(d, USERS_FILE));
            // Set up after the last comparison: what changed before it is not vouched for.
            self.dirty = true;
        }
        let Some(w) = &mut self.watch else {
            return false;
        };
        if !w.quiet() {
            self.dirty = true;
            if w.lost() {
                // The folder was removed or moved: watched again (if it is back) a second on.
                self.watch = None;
                self.watch_tried = Some(Instant::now());
            }
        }
        !self.dirty && self.checked.elapsed() < watch::RESTAT_EVERY
    }
}

/// The user and token database of one state folder.
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    cache: Mutex<Cache>,
    /// How many times the file's stamp was compared (tests).
    #[cfg(test)]
    stats: std::sync::atomic::AtomicU64,
}

impl Users {
    /// Opens the database in `state_dir` (it need not exist: then there are no users or tokens).
    ///
    /// # Errors
    /// The file exists but is open to others, unreadable or invalid; the server refuses to start.
    pub fn open(state_dir: &Path) -> Result<Self, UsersError> {
        let path = state_dir.join(USERS_FILE);
        let (loaded, stamp) = Self::read(&path)?;
        // Made now, so that the first unknown name does not take longer than later ones.
        dummy_hash();
        Ok(Self {
            path,
            cache: Mutex::new(Cache::new(stamp, Ok(Arc::new(loaded)))),
            #[cfg(test)]
            stats: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Where the database lives.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(path: &Path) -> Result<(Loaded, Option<Stamp>), UsersError> {
        let Some((bytes, stamp)) = files::read_private(path, FILE_LIMIT)? else {
            let empty = Db {
                version: FORMAT_VERSION,
                ..Db::default()
            };
            return Ok((Loaded::check(empty, path)?, None));
        };
        let db: Db = serde_json::from_slice(&bytes).map_err(|e| UsersError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok((Loaded::check(db, path)?, Some(stamp)))
    }

    /// The current database, reloaded if the file changed since it was last read.
    fn current(&self) -> Result<Arc<Loaded>, UsersError> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        self.refresh(&mut cache)?;
        cache.loaded.clone().map_err(|reason| UsersError::Corrupt {
            path: self.path.clone(),
            reason,
        })
    }

    /// Compares the file's stamp with the cached one and reloads it when they differ.
    fn refresh(&self, cache: &mut Cache) -> Result<(), UsersError> {
        #[cfg(test)]
        self.stats
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let checked = Instant::now();
        let stamp = files::stamp(&self.path)?;
        cache.checked = checked;
        cache.dirty = false;
        if stamp != cache.stamp {
            cache.generation = cache.generation.wrapping_add(1);
            match Self::read(&self.path) {
                Ok((loaded, stamp)) => {
                    cache.stamp = stamp;
                    cache.loaded = Ok(Arc::new(loaded));
                }
                // Remember the failure for this version of the file, so that a broken file is
                // not re-parsed on every attempt, and keep refusing until it changes.
                Err(e) => {
                    cache.stamp = stamp;
                    cache.loaded = Err(e.to_string());
                }
            }
        }
        Ok(())
    }

    /// Whether any user or token exists (anonymous access is then off unless the server is public).
    ///
    /// # Errors
    /// The database is unusable.
    pub fn is_empty(&self) -> Result<bool, UsersError> {
        let loaded = self.current()?;
        Ok(loaded.db.users.is_empty() && loaded.db.tokens.is_empty())
    }

    /// Checks a user's password; `None` for an unknown user or a wrong password (the same answer,
    /// in about the same time).
    ///
    /// # Errors
    /// The database is unusable (all logins fail while it is).
    pub fn verify_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<Principal>, UsersError> {
        let loaded = self.current()?;
        let found = loaded
            .db
            .users
            .iter()
            .zip(&loaded.users)
            .find(|(u, _)| u.name == name);
        let phc: &str = match found {
            Some((_, (_, hash))) => &hash.0,
            None => dummy_hash(),
        };
        // Hashed whatever its length, so that a refusal takes the same time whatever was wrong
        // (a password over the limit never matches: none can be set).
        let matches = verify_hash(phc, password);
        let password_ok = matches && password.len() <= MAX_PASSWORD_LEN;
        let principal = match found {
            Some((user, (scope, hash))) if password_ok => Some(Principal {
                name: user.name.clone(),
                kind: PrincipalKind::User,
                perms: user.perms,
                folder: scope.clone(),
                credential: token_hash(&hash.0),
            }),
            _ => None,
        };
        Ok(principal)
    }

    /// Checks a token; `None` for an unknown, revoked or malformed one.
    ///
    /// # Errors
    /// The database is unusable.
    pub fn verify_token(&self, token: &str) -> Result<Option<Principal>, UsersError> {
        let loaded = self.current()?;
        let presented = token_hash(token);
        // Compare with every entry, without stopping at a match, so the time does not tell which
        // entry (or whether any) matched.
        let mut matched = None;
        for (i, (hash, _)) in loaded.token_hashes.iter().enumerate() {
            if bool::from(hash.ct_eq(&presented)) {
                matched = Some(i);
            }
        }
        Ok(matched.and_then(|i| {
            let record = loaded.db.tokens.get(i)?;
            let (hash, scope) = loaded.token_hashes.get(i)?;
            Some(Principal {
                name: format!("token:{}", record.id),
                kind: PrincipalKind::Token,
                perms: record.perms,
                folder: scope.clone(),
                credential: *hash,
            })
        }))
    }

    /// A number that changes whenever the database does, here or through another process
    /// (`barge user`, `barge token`): the file's stamp is checked, with one `stat`, unless an
    /// inotify watch on the state folder vouches that nothing changed there since the last
    /// check, less than a second ago ([`watch`]). While it stays the same, a login checked
    /// earlier still stands.
    #[must_use]
    pub fn generation(&self) -> u64 {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if !cache.vouched(self.path.parent()) {
            // A file that cannot be read now still bumps the generation when its stamp
            // changed; the recheck that follows then fails closed.
            let _ = self.refresh(&mut cache);
        }
        cache.generation
    }

    /// `principal` as the database says now: the same user with the same password (or the
    /// same token), with its current permissions and folder; `None` once it was removed,
    /// revoked or given a new password.
    ///
    /// # Errors
    /// The database is unusable (the caller treats that as revoked: fail closed).
    pub fn recheck(&self, principal: &Principal) -> Result<Option<Principal>, UsersError> {
        let loaded = self.current()?;
        let fresh = match principal.kind {
            PrincipalKind::User => loaded
                .db
                .users
                .iter()
                .zip(&loaded.users)
                .find(|(u, (_, hash))| {
                    u.name == principal.name
                        && bool::from(token_hash(&hash.0).ct_eq(&principal.credential))
                })
                .map(|(u, (scope, _))| (u.perms, scope.clone())),
            PrincipalKind::Token => loaded
                .db
                .tokens
                .iter()
                .zip(&loaded.token_hashes)
                .find(|(t, (hash, _))| {
                    format!("token:{}", t.id) == principal.name
                        && bool::from(hash.ct_eq(&principal.credential))
                })
                .map(|(t, (_, scope))| (t.perms, scope.clone())),
        };
        Ok(fresh.map(|(perms, folder)| Principal {
            perms,
            folder,
            ..principal.clone()
        }))
    }

    /// Locked read-modify-write of the file; `change` edits the database.
    fn modify<T>(
        &self,
        change: impl FnOnce(&mut Db) -> Result<T, UsersError>,
    ) -> Result<T, UsersError> {
        if let Some(dir) = self.path.parent() {
            files::create_private_dir(dir)?;
        }
        let _lock = files::Lock::acquire(&self.path)?;
        let (loaded, _) = Self::read(&self.path)?;
        let mut db = loaded.db;
        let result = change(&mut db)?;
        let loaded = Loaded::check(db, &self.path)?;
        let mut json = serde_json::to_vec_pretty(&loaded.db).map_err(|e| UsersError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        json.push(b'\n');
        files::write_atomic(&self.path, &json)?;
        let stamp = files::stamp(&self.path)?;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.stamp = stamp;
        cache.loaded = Ok(Arc::new(loaded));
        cache.generation = cache.generation.wrapping_add(1);
        // The stamp was taken before the lock: a change made since (by a hand edit, which
        // takes no lock), whose events another caller may have read already, is looked for by
        // the next call.
        cache.dirty = true;
        Ok(result)
    }

    /// Adds a user.
    ///
    /// # Errors
    /// Invalid name or password, the user exists, or the file cannot be written.
    pub fn add_user(
        &self,
        name: &str,
        password: &str,
        perms: Permissions,
        folder: &Scope,
    ) -> Result<(), UsersError> {
        validate_user_name(name)?;
        validate_password(password)?;
        let hash = hash_password(password)?;
        self.modify(|db| {
            if db.users.iter().any(|u| u.name == name) {
                return Err(UsersError::UserExists(name.to_owned()));
            }
            db.users.push(UserRecord {
                name: name.to_owned(),
                password: hash,
                perms,
                folder: folder_text(folder),
            });
            Ok(())
        })
    }

    /// Removes a user; `false` if there was none.
    ///
    /// # Errors
    /// The file cannot be read or written.
    pub fn remove_user(&self, name: &str) -> Result<bool, UsersError> {
        self.modify(|db| {
            let before = db.users.len();
            db.users.retain(|u| u.name != name);
            Ok(db.users.len() != before)
        })
    }

    /// Sets a user's password.
    ///
    /// # Errors
    /// No such user, invalid password, or the file cannot be written.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), UsersError> {
        validate_password(password)?;
        let hash = hash_password(password)?;
        self.modify(|db| {
            let user = db.users.iter_mut().find(|u| u.name == name);
            let user = user.ok_or_else(|| UsersError::NoSuchUser(name.to_owned()))?;
            user.password = hash;
            Ok(())
        })
    }

    /// The users, without their hashes.
    ///
    /// # Errors
    /// The database is unusable.
    pub fn list_users(&self) -> Result<Vec<UserInfo>, UsersError> {
        let loaded = self.current()?;
        Ok(loaded
            .db
            .users
            .iter()
            .zip(&loaded.users)
            .map(|(u, (scope, _))| UserInfo {
                name: u.name.clone(),
                perms: u.perms,
                folder: scope.clone(),
            })
            .collect())
    }

    /// Creates a token; its secret is in the result and nowhere else.
    ///
    /// # Errors
    /// The OS random generator failed, or the file cannot be written.
    pub fn create_token(
        &self,
        label: &str,
        perms: Permissions,
        folder: &Scope,
    ) -> Result<NewToken, UsersError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| UsersError::Crypto(e.to_string()))?;
        let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
        let hash = hex::encode(token_hash(&token));
        let label: String = label
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        self.modify(|db| {
            let id = loop {
                let mut raw = [0u8; 4];
                getrandom::fill(&mut raw).map_err(|e| UsersError::Crypto(e.to_string()))?;
                let id = hex::encode(raw);
                if !db.tokens.iter().any(|t| t.id == id) {
                    break id;
                }
            };
            db.tokens.push(TokenRecord {
                id: id.clone(),
                label,
                sha256: hash,
                perms,
                folder: folder_text(folder),
                created: unix_now(),
            });
            Ok(NewToken { id, secret: token })
        })
    }

    /// Revokes a token by id; `false` if there was none.
    ///
    /// # Errors
    /// The file cannot be read or written.
    pub fn revoke_token(&self, id: &str) -> Result<bool, UsersError> {
        self.modify(|db| {
            let before = db.tokens.len();
            db.tokens.retain(|t| t.id != id);
            Ok(db.tokens.len() != before)
        })
    }

    /// The tokens, without secrets or hashes.
    ///
    /// # Errors
    /// The database is unusable.
    pub fn list_tokens(&self) -> Result<Vec<TokenInfo>, UsersError> {
        let loaded = self.current()?;
        Ok(loaded
            .db
            .tokens
            .iter()
            .zip(&loaded.token_hashes)
            .map(|(t, (_, scope))| TokenInfo {
                id: t.id.clone(),
                label: t.label.clone(),
                perms: t.perms,
                folder: scope.clone(),
                created: t.created,
            })
            .collect())
    }
}
