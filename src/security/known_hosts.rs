//! The client's pinned server keys, one per `host:port`, like ssh's `known_hosts`.
//!
//! Threat: a man in the middle on a later connection (a pinned key that changes is reported as
//! [`Lookup::Mismatch`], and [`KnownHosts::add`] never replaces a pin: the user must remove the old
//! one on purpose); another local user planting a pin (the file is written 0600 and refused when
//! its group or others can access it); a crash or a concurrent client corrupting the file (every
//! change is a locked read-modify-write followed by an atomic rename).
//!
//! File format (UTF-8 text, `$XDG_CONFIG_HOME/barge/known_hosts`, else `~/.config/barge/known_hosts`):
//!
//! ```text
//! # comment lines and blank lines are kept as they are
//! files.example.org:7070 SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU
//! [fe80::1%eth0]:7070 SHA256:...
//! ```
//!
//! One entry a line: the host (lowercased; an IPv6 address in brackets), `:`, the port, one
//! space, the fingerprint. Lines that do not parse are kept on rewrite and ignored by lookups.
//! Not here: asking the user, or deciding what a mismatch does (the CLI refuses with exit code 5).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::files::{self, FileError};
use super::identity::Fingerprint;

/// The file's name inside the configuration folder.
pub const FILE_NAME: &str = "known_hosts";
/// A known_hosts file larger than this is refused rather than read.
const FILE_LIMIT: u64 = 4 * 1024 * 1024;

/// Why the pins could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    /// The file is unusable (open to others, not a regular file, I/O error).
    #[error("known hosts: {0}")]
    File(#[from] FileError),
    /// The file is not UTF-8 text.
    #[error("`{}` is not UTF-8 text", .0.display())]
    NotText(PathBuf),
    /// Neither `$XDG_CONFIG_HOME` nor `$HOME` is set to an absolute path.
    #[error("no configuration folder: set XDG_CONFIG_HOME or HOME")]
    NoConfigDir,
    /// The host cannot be written to the file (empty, or with a space, `#`, or a control character).
    #[error("invalid host name {0:?}")]
    InvalidHost(String),
    /// A different key is pinned for this server; it is never replaced silently.
    #[error("a different key is pinned for {host}: {pinned}")]
    Conflict {
        /// `host:port` as written in the file.
        host: String,
        /// The key already pinned.
        pinned: Fingerprint,
    },
}

/// The result of comparing a presented key with the pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// No key is pinned for this server.
    Unknown,
    /// The presented key is the pinned one.
    Match,
    /// Another key is pinned: the server changed its identity, or someone is in the middle.
    Mismatch {
        /// The key that is pinned.
        pinned: Fingerprint,
    },
}

/// barge's configuration folder from the values of `$XDG_CONFIG_HOME` and `$HOME` (passed in, so
/// that tests need not change the environment); relative values are ignored as the XDG spec says.
#[must_use]
pub fn config_dir_from(
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    absolute(xdg_config_home)
        .or_else(|| absolute(home).map(|h| h.join(".config")))
        .map(|base| base.join("barge"))
}

/// barge's configuration folder for this user: `$XDG_CONFIG_HOME/barge`, else `~/.config/barge`.
///
/// # Errors
/// [`KnownHostsError::NoConfigDir`] when neither variable is set to an absolute path.
pub fn config_dir() -> Result<PathBuf, KnownHostsError> {
    config_dir_from(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
    .ok_or(KnownHostsError::NoConfigDir)
}

/// The key under which a server is pinned: `host:port`, host lowercased, IPv6 in brackets.
///
/// # Errors
/// [`KnownHostsError::InvalidHost`] for a host that cannot be written as one token.
pub fn host_key(host: &str, port: u16) -> Result<String, KnownHostsError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.is_empty()
        || bare
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '#' | '[' | ']'))
    {
        return Err(KnownHostsError::InvalidHost(host.to_owned()));
    }
    let bare = bare.to_lowercase();
    Ok(if bare.contains(':') {
        format!("[{bare}]:{port}")
    } else {
        format!("{bare}:{port}")
    })
}

/// One entry line, or `None` for a comment, a blank or a line that does not parse.
fn parse_line(line: &str) -> Option<(&str, Fingerprint)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (host, fingerprint) = line.split_once(' ')?;
    Some((host, fingerprint.trim().parse().ok()?))
}

/// The pins file.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
}

impl KnownHosts {
    /// The pins at `path` (the file need not exist yet).
    #[must_use]
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The pins of this user, in [`config_dir`].
    ///
    /// # Errors
    /// As [`config_dir`].
    pub fn for_user() -> Result<Self, KnownHostsError> {
        Ok(Self::at(config_dir()?.join(FILE_NAME)))
    }

    /// Where the pins are kept (for messages such as "remove the line from ...").
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<String, KnownHostsError> {
        match files::read_private(&self.path, FILE_LIMIT)? {
            None => Ok(String::new()),
            Some((bytes, _)) => {
                String::from_utf8(bytes).map_err(|_| KnownHostsError::NotText(self.path.clone()))
            }
        }
    }

    /// The key pinned for `host:port`, if any (to set up the TLS expectation before connecting).
    ///
    /// # Errors
    /// The file is unusable, or the host invalid.
    pub fn pinned(&self, host: &str, port: u16) -> Result<Option<Fingerprint>, KnownHostsError> {
        let key = host_key(host, port)?;
        let text = self.read()?;
        Ok(text
            .lines()
            .filter_map(parse_line)
            .find(|(h, _)| *h == key)
            .map(|(_, fp)| fp))
    }

    /// Compares the key a server presented with the pin for `host:port`.
    ///
    /// # Errors
    /// As [`KnownHosts::pinned`].
    pub fn lookup(
        &self,
        host: &str,
        port: u16,
        presented: &Fingerprint,
    ) -> Result<Lookup, KnownHostsError> {
        Ok(match self.pinned(host, port)? {
            None => Lookup::Unknown,
            Some(pinned) if pinned == *presented => Lookup::Match,
            Some(pinned) => Lookup::Mismatch { pinned },
        })
    }

    /// Pins `fingerprint` for `host:port`; `Ok(false)` if exactly this pin was already there.
    ///
    /// # Errors
    /// [`KnownHostsError::Conflict`] if another key is pinned (remove it first); file errors.
    pub fn add(
        &self,
        host: &str,
        port: u16,
        fingerprint: &Fingerprint,
    ) -> Result<bool, KnownHostsError> {
        let key = host_key(host, port)?;
        self.modify(|text| {
            if let Some((_, pinned)) = text.lines().filter_map(parse_line).find(|(h, _)| *h == key)
            {
                return if pinned == *fingerprint {
                    Ok(None)
                } else {
                    Err(KnownHostsError::Conflict {
                        host: key.clone(),
                        pinned,
                    })
                };
            }
            let mut text = text.to_owned();
            if text.is_empty() {
                text.push_str("# barge known hosts: HOST:PORT SHA256:<key fingerprint>\n");
            } else if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!("{key} {fingerprint}\n"));
            Ok(Some(text))
        })
    }

    /// Removes every pin for `host:port`; `Ok(false)` if there was none.
    ///
    /// # Errors
    /// File errors, or an invalid host.
    pub fn remove(&self, host: &str, port: u16) -> Result<bool, KnownHostsError> {
        let key = host_key(host, port)?;
        self.modify(|text| {
            let mut removed = false;
            let mut kept = String::with_capacity(text.len());
            for line in text.lines() {
                if parse_line(line).is_some_and(|(h, _)| h == key) {
                    removed = true;
                } else {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
            Ok(removed.then_some(kept))
        })
    }

    /// Locked read-modify-write; `change` returns the new text, or `None` for no change.
    fn modify(
        &self,
        change: impl FnOnce(&str) -> Result<Option<String>, KnownHostsError>,
    ) -> Result<bool, KnownHostsError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            files::create_private_dir(dir)?;
        }
        let _lock = files::Lock::acquire(&self.path)?;
        let text = self.read()?;
        match change(&text)? {
            None => Ok(false),
            Some(new) => {
                files::write_atomic(&self.path, new.as_bytes())?;
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

    fn fp(seed: &[u8]) -> Fingerprint {
        Fingerprint::of_spki(seed)
    }

    #[test]
    fn lookup_add_remove() -> Result {
        let dir = tempfile::tempdir()?;
        let hosts = KnownHosts::at(dir.path().join("cfg/barge").join(FILE_NAME));
        let (a, b) = (fp(b"a"), fp(b"b"));
        assert_eq!(
            hosts.lookup("Files.Example.org", 7070, &a)?,
            Lookup::Unknown
        );
        assert!(hosts.add("Files.Example.org", 7070, &a)?);
        assert!(
            !hosts.add("files.example.org", 7070, &a)?,
            "the same pin twice is no change"
        );
        assert_eq!(hosts.lookup("files.example.org", 7070, &a)?, Lookup::Match);
        assert_eq!(
            hosts.lookup("files.example.org", 7070, &b)?,
            Lookup::Mismatch { pinned: a }
        );
        assert_eq!(
            hosts.lookup("files.example.org", 7071, &a)?,
            Lookup::Unknown,
            "per port"
        );
        assert_eq!(
            hosts.lookup("other.example.org", 7070, &a)?,
            Lookup::Unknown,
            "per host"
        );
        let mode = std::fs::metadata(hosts.path())?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(hosts.remove("files.example.org", 7070)?);
        assert!(!hosts.remove("files.example.org", 7070)?);
        assert_eq!(
            hosts.lookup("files.example.org", 7070, &a)?,
            Lookup::Unknown
        );
        Ok(())
    }

    #[test]
    fn a_pin_is_never_replaced() -> Result {
        let dir = tempfile::tempdir()?;
        let hosts = KnownHosts::at(dir.path().join(FILE_NAME));
        hosts.add("10.0.0.5", 7070, &fp(b"real"))?;
        let err = hosts
            .add("10.0.0.5", 7070, &fp(b"mitm"))
            .err()
            .ok_or("pin replaced")?;
        assert!(matches!(err, KnownHostsError::Conflict { pinned, .. } if pinned == fp(b"real")));
        assert_eq!(hosts.pinned("10.0.0.5", 7070)?, Some(fp(b"real")));
        Ok(())
    }

    #[test]
    fn comments_and_foreign_lines_survive_rewrites() -> Result {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(FILE_NAME);
        let a = fp(b"a");
        std::fs::write(&path, format!("# mine\nnot an entry\nhost:1 {a}"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let hosts = KnownHosts::at(&path);
        hosts.add("[::1]", 7070, &a)?;
        assert_eq!(
            hosts.pinned("::1", 7070)?,
            Some(a),
            "brackets or not, the same key"
        );
        assert!(hosts.remove("host", 1)?);
        let text = std::fs::read_to_string(&path)?;
        assert_eq!(text, format!("# mine\nnot an entry\n[::1]:7070 {a}\n"));
        Ok(())
    }

    #[test]
    fn an_open_file_and_bad_hosts_are_refused() -> Result {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        let hosts = KnownHosts::at(&path);
        assert!(matches!(
            hosts.pinned("h", 1),
            Err(KnownHostsError::File(FileError::TooOpen { .. }))
        ));
        for host in ["", "a b", "a#b", "a\nb", "[]"] {
            assert!(
                matches!(host_key(host, 1), Err(KnownHostsError::InvalidHost(_))),
                "{host:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn config_dir_follows_xdg_then_home() {
        let some = |s: &str| Some(OsString::from(s));
        assert_eq!(
            config_dir_from(some("/x"), some("/h")),
            Some(PathBuf::from("/x/barge"))
        );
        assert_eq!(
            config_dir_from(None, some("/h")),
            Some(PathBuf::from("/h/.config/barge"))
        );
        assert_eq!(
            config_dir_from(some("relative"), some("/h")),
            Some(PathBuf::from("/h/.config/barge"))
        );
        assert_eq!(config_dir_from(None, None), None);
    }
}
