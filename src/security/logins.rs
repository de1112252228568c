//! The client's saved logins, per server (`host:port`), in `logins.json` next to
//! `known_hosts` in the user's configuration folder: a token received by `barge pair`, or the
//! user name remembered by `barge login`.
//!
//! Threat: a saved token read by another local user, or left readable in a backup. Answer: the
//! file goes through the private `files` helpers (mode 0600 in a 0700 folder, replaced
//! atomically, refused when its group or others can read it). A password is never saved.
//! Not here: deciding which login a command uses (the CLI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::files::{self, FileError};
use super::known_hosts::{KnownHostsError, config_dir, host_key};

/// The file's name in the configuration folder.
pub const FILE_NAME: &str = "logins.json";
/// A logins file larger than this is refused rather than parsed.
const FILE_LIMIT: u64 = 1024 * 1024;

/// Why the saved logins could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoginsError {
    /// The file is unusable (open to others, I/O error).
    #[error("saved logins: {0}")]
    File(#[from] FileError),
    /// No configuration folder, or a host that cannot be a key.
    #[error(transparent)]
    Host(#[from] KnownHostsError),
    /// The file does not parse.
    #[error("`{}` is not a valid barge logins file: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What is saved for one server.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedLogin {
    /// A token for this server (from `barge pair`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A user name for this server (from `barge login`); its password is asked each time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl std::fmt::Debug for SavedLogin {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedLogin")
            .field("token", &self.token.as_ref().map(|_| "****"))
            .field("user", &self.user)
            .finish()
    }
}

/// The saved logins file.
#[derive(Debug, Clone)]
pub struct Logins {
    path: PathBuf,
}

impl Logins {
    /// The logins at `path` (the file need not exist yet).
    #[must_use]
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// This user's logins file, in barge's configuration folder.
    ///
    /// # Errors
    /// No configuration folder can be found.
    pub fn for_user() -> Result<Self, LoginsError> {
        Ok(Self::at(config_dir()?.join(FILE_NAME)))
    }

    /// Where the file is.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<BTreeMap<String, SavedLogin>, LoginsError> {
        let Some((bytes, _)) = files::read_private(&self.path, FILE_LIMIT)? else {
            return Ok(BTreeMap::new());
        };
        serde_json::from_slice(&bytes).map_err(|e| LoginsError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    /// What is saved for `host:port`, if anything.
    ///
    /// # Errors
    /// The file is unusable.
    pub fn get(&self, host: &str, port: u16) -> Result<Option<SavedLogin>, LoginsError> {
        let key = host_key(host, port)?;
        Ok(self.read()?.remove(&key))
    }

    /// Saves `login` for `host:port` (an empty one removes the entry); returns whether an
    /// entry was there before.
    ///
    /// # Errors
    /// The file cannot be read or written.
    pub fn set(&self, host: &str, port: u16, login: SavedLogin) -> Result<bool, LoginsError> {
        let key = host_key(host, port)?;
        if let Some(dir) = self.path.parent() {
            files::create_private_dir(dir)?;
        }
        let _lock = files::Lock::acquire(&self.path)?;
        let mut all = self.read()?;
        let had = if login == SavedLogin::default() {
            all.remove(&key).is_some()
        } else {
            all.insert(key, login).is_some()
        };
        let mut json = serde_json::to_vec_pretty(&all).map_err(|e| LoginsError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        json.push(b'\n');
        files::write_atomic(&self.path, &json)?;
        Ok(had)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn saved_per_server_private_and_removable() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let logins = Logins::at(dir.path().join("cfg").join(FILE_NAME));
        assert_eq!(logins.get("h", 1)?, None);
        let token = SavedLogin {
            token: Some("barge_x".into()),
            user: None,
        };
        assert!(!logins.set("H", 1, token.clone())?);
        assert_eq!(logins.get("h", 1)?, Some(token.clone()));
        assert_eq!(logins.get("h", 2)?, None);
        let mode = std::fs::metadata(logins.path())?.permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        assert!(!format!("{token:?}").contains("barge_x"));
        assert!(logins.set("h", 1, SavedLogin::default())?);
        assert_eq!(logins.get("h", 1)?, None);
        // A file others can read is refused, not used.
        logins.set("h", 1, token)?;
        std::fs::set_permissions(logins.path(), std::fs::Permissions::from_mode(0o644))?;
        assert!(matches!(logins.get("h", 1), Err(LoginsError::File(_))));
        Ok(())
    }
}
