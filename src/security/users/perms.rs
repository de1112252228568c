//! What a logged-in user or token may do, and the folder it is confined to.
//!
//! Threats: a user doing more than granted (one method per operation, so the server asks the same
//! question everywhere); a confined user reaching outside its folder by any name form (a name seen
//! by the user is a checked [`FileName`], so it has no `..`, no leading `/`, no backslash, and the
//! real name is `folder/` + that name; a real name outside the folder has no seen form at all, so
//! the server answers as if it did not exist).

use serde::{Deserialize, Serialize};

use crate::name::{FileName, NameError};

/// Why a permission list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermsError {
    /// A word other than `get`, `put`, `modify`.
    #[error("unknown permission {0:?}: use get, put, modify")]
    Unknown(String),
    /// The list grants nothing.
    #[error("the permission list is empty")]
    Empty,
}

/// The operations a user or token may perform.
///
/// `modify` covers rename and delete. A drop box may only upload: it cannot list, download,
/// rename or delete, whatever the other flags say. Uploads never overwrite in barge (an existing
/// name is a conflict, `409`), so "no overwrite" holds for everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    /// Download.
    pub get: bool,
    /// Upload.
    pub put: bool,
    /// Rename and delete.
    pub modify: bool,
    /// Upload only: no listing, no download, no rename or delete.
    #[serde(default)]
    pub drop_box: bool,
}

impl Permissions {
    /// Everything (the default for a new user).
    pub const ALL: Self = Self {
        get: true,
        put: true,
        modify: true,
        drop_box: false,
    };
    /// List and download.
    pub const READ_ONLY: Self = Self {
        get: true,
        put: false,
        modify: false,
        drop_box: false,
    };
    /// Upload only.
    pub const DROP_BOX: Self = Self {
        get: false,
        put: true,
        modify: false,
        drop_box: true,
    };

    /// Parses a comma-separated list such as `get,put` (the CLI's `--perm LIST`).
    ///
    /// # Errors
    /// An unknown word, or an empty list.
    pub fn parse_list(list: &str) -> Result<Self, PermsError> {
        let mut perms = Self {
            get: false,
            put: false,
            modify: false,
            drop_box: false,
        };
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word.to_ascii_lowercase().as_str() {
                "get" => perms.get = true,
                "put" => perms.put = true,
                "modify" => perms.modify = true,
                _ => return Err(PermsError::Unknown(word.to_owned())),
            }
        }
        if perms.get || perms.put || perms.modify {
            Ok(perms)
        } else {
            Err(PermsError::Empty)
        }
    }

    /// May list files (`LIST_FILES`).
    #[must_use]
    pub fn may_list(&self) -> bool {
        !self.drop_box
    }

    /// May download (`DOWNLOAD`).
    #[must_use]
    pub fn may_get(&self) -> bool {
        self.get && !self.drop_box
    }

    /// May upload (`UPLOAD`, `PUT`).
    #[must_use]
    pub fn may_put(&self) -> bool {
        self.put || self.drop_box
    }

    /// May rename and delete (`RENAME`, `DELETE`).
    #[must_use]
    pub fn may_modify(&self) -> bool {
        self.modify && !self.drop_box
    }

    /// A short description for listings: `get,put,modify`, `drop-box`.
    #[must_use]
    pub fn describe(&self) -> String {
        if self.drop_box {
            return "drop-box".to_owned();
        }
        let words = [
            (self.get, "get"),
            (self.put, "put"),
            (self.modify, "modify"),
        ];
        let list: Vec<&str> = words
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, w)| *w)
            .collect();
        list.join(",")
    }
}

/// The part of the share a principal sees: the whole share, or one folder it is confined to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope(Option<FileName>);

impl Scope {
    /// The whole share.
    #[must_use]
    pub fn whole_share() -> Self {
        Self(None)
    }

    /// Confined to `folder` (which the user sees as its whole share).
    #[must_use]
    pub fn folder(folder: FileName) -> Self {
        Self(Some(folder))
    }

    /// Parses a folder as given to `--folder DIR` (a trailing `/` is allowed).
    ///
    /// # Errors
    /// The folder is not a valid name (see [`FileName::parse`]).
    pub fn parse(folder: &str) -> Result<Self, NameError> {
        let trimmed = folder.strip_suffix('/').unwrap_or(folder);
        FileName::parse(trimmed).map(Self::folder)
    }

    /// The confining folder, if any.
    #[must_use]
    pub fn folder_name(&self) -> Option<&FileName> {
        self.0.as_ref()
    }

    /// The real name (relative to the share) of a name the user sent.
    ///
    /// # Errors
    /// [`NameError::TooLongInFolder`] when `folder/name` exceeds the name's length or depth
    /// limit (an error that does not tell the folder's length or depth).
    pub fn to_real(&self, seen: &FileName) -> Result<FileName, NameError> {
        match &self.0 {
            None => Ok(seen.clone()),
            // Both parts are checked names, so the join has only normal components and starts
            // with the folder; parsing again enforces the total length and depth.
            Some(folder) => FileName::parse(&format!("{}/{}", folder.as_str(), seen.as_str()))
                .map_err(|e| match e {
                    NameError::TooLong(_) | NameError::TooDeep(_) => NameError::TooLongInFolder,
                    other => other,
                }),
        }
    }

    /// The name the user sees for a real name, or `None` when it lies outside the scope (the
    /// server then answers as for a file that does not exist).
    #[must_use]
    pub fn to_seen(&self, real: &FileName) -> Option<FileName> {
        match &self.0 {
            None => Some(real.clone()),
            Some(folder) => {
                let rest = real
                    .as_str()
                    .strip_prefix(folder.as_str())?
                    .strip_prefix('/')?;
                FileName::parse(rest).ok()
            }
        }
    }

    /// Whether a real name lies inside the scope.
    #[must_use]
    pub fn contains(&self, real: &FileName) -> bool {
        self.to_seen(real).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> FileName {
        FileName::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_name_too_long_once_joined_does_not_tell_the_folders_length_or_depth() {
        let scope = Scope::parse("some/folder").unwrap_or_else(|e| panic!("{e}"));
        // 1,019 bytes in parts of 203: fine alone, too long after `some/folder/`.
        let long = name(&vec!["a".repeat(203); 5].join("/"));
        let deep = name(&vec!["d"; crate::name::MAX_DEPTH - 1].join("/"));
        for seen in [long.clone(), deep] {
            let e = scope.to_real(&seen).err().map(|e| e.to_string());
            assert_eq!(
                e.as_deref(),
                Some(
                    "the name is too long or too deep once joined to the folder this access is confined to"
                )
            );
        }
        // Unconfined, the same names are fine; one within the folder's room is too.
        assert!(Scope::whole_share().to_real(&long).is_ok());
        assert!(scope.to_real(&name("short")).is_ok());
    }

    #[test]
    fn each_operation_per_permission_set() {
        // (perms, list, get, put, modify)
        let table = [
            (Permissions::ALL, true, true, true, true),
            (Permissions::READ_ONLY, true, true, false, false),
            (Permissions::DROP_BOX, false, false, true, false),
            // A drop box stays upload-only even if other flags were set by hand.
            (
                Permissions {
                    drop_box: true,
                    ..Permissions::ALL
                },
                false,
                false,
                true,
                false,
            ),
            (
                Permissions {
                    get: false,
                    ..Permissions::ALL
                },
                true,
                false,
                true,
                true,
            ),
            (
                Permissions {
                    put: false,
                    get: false,
                    modify: true,
                    drop_box: false,
                },
                true,
                false,
                false,
                true,
            ),
        ];
        for (p, list, get, put, modify) in table {
            assert_eq!(
                (p.may_list(), p.may_get(), p.may_put(), p.may_modify()),
                (list, get, put, modify),
                "{p:?}"
            );
        }
    }

    #[test]
    fn permission_lists_parse() {
        assert_eq!(
            Permissions::parse_list("get,put,modify"),
            Ok(Permissions::ALL)
        );
        assert_eq!(
            Permissions::parse_list(" GET "),
            Ok(Permissions {
                put: false,
                modify: false,
                ..Permissions::ALL
            })
        );
        assert_eq!(Permissions::parse_list(""), Err(PermsError::Empty));
        assert_eq!(
            Permissions::parse_list("get,delete"),
            Err(PermsError::Unknown("delete".into()))
        );
        assert_eq!(Permissions::ALL.describe(), "get,put,modify");
        assert_eq!(Permissions::READ_ONLY.describe(), "get");
        assert_eq!(Permissions::DROP_BOX.describe(), "drop-box");
    }

    #[test]
    fn confined_names_map_both_ways() -> Result<(), NameError> {
        let scope = Scope::parse("team/docs/")?;
        assert_eq!(scope.to_real(&name("a.txt"))?, name("team/docs/a.txt"));
        assert_eq!(scope.to_real(&name("x/y"))?, name("team/docs/x/y"));
        assert_eq!(scope.to_seen(&name("team/docs/x/y")), Some(name("x/y")));
        for outside in [
            "team/docs",
            "team/docs2/a",
            "team/doc",
            "team/a",
            "a.txt",
            "team/docsx/y",
        ] {
            assert_eq!(scope.to_seen(&name(outside)), None, "{outside}");
            assert!(!scope.contains(&name(outside)));
        }
        let whole = Scope::whole_share();
        assert_eq!(whole.to_real(&name("a"))?, name("a"));
        assert_eq!(whole.to_seen(&name("team/a")), Some(name("team/a")));
        Ok(())
    }

    #[test]
    fn no_name_form_escapes_the_folder() -> Result<(), NameError> {
        let scope = Scope::parse("box")?;
        // Every escape form is refused before it can become a seen name...
        for attack in [
            "../x",
            "..",
            "/etc/passwd",
            "a/../../x",
            "a\\..\\x",
            "./x",
            "C:/x",
            ".barge/k",
            "",
        ] {
            assert!(FileName::parse(attack).is_err(), "{attack}");
        }
        // ...and every valid seen name maps inside the folder.
        for seen in ["x", "...", "..x/y", "a b", "box"] {
            let real = scope.to_real(&name(seen))?;
            assert!(real.as_str().starts_with("box/"), "{real:?}");
            assert_eq!(scope.to_seen(&real), Some(name(seen)));
        }
        assert!(Scope::parse("../up").is_err());
        assert!(Scope::parse("/abs").is_err());
        assert!(Scope::parse(".barge").is_err());
        let long = Scope::parse(&"d".repeat(200))?;
        let seen = name(&format!(
            "{}/{}/{}/{}",
            "n".repeat(250),
            "n".repeat(250),
            "n".repeat(250),
            "n".repeat(250)
        ));
        assert!(matches!(
            long.to_real(&seen),
            Err(NameError::TooLongInFolder)
        ));
        Ok(())
    }
}
