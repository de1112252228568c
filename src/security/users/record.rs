//! The database file's format and its checks, and the hashing of secrets.
//!
//! Threats: a hand-edited or damaged file that would widen access (every entry is checked at load,
//! and one bad entry refuses the whole file); a password or token kept in a recoverable form
//! (argon2id PHC strings with a random salt; SHA-256 of high-entropy tokens).

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::sync::OnceLock;

use super::{FORMAT_VERSION, MAX_PASSWORD_LEN, MAX_USER_NAME_LEN, Permissions, Scope, UsersError};
use crate::name::NameError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct UserRecord {
    pub(super) name: String,
    /// argon2id PHC string.
    pub(super) password: String,
    pub(super) perms: Permissions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) folder: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct TokenRecord {
    pub(super) id: String,
    #[serde(default)]
    pub(super) label: String,
    /// Hex SHA-256 of the whole token text.
    pub(super) sha256: String,
    pub(super) perms: Permissions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) folder: Option<String>,
    #[serde(default)]
    pub(super) created: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Db {
    pub(super) version: u32,
    #[serde(default)]
    pub(super) users: Vec<UserRecord>,
    #[serde(default)]
    pub(super) tokens: Vec<TokenRecord>,
}

/// The database as checked at load: every entry's folder and hash already parsed.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub(super) db: Db,
    pub(super) users: Vec<(Scope, PasswordHashText)>,
    pub(super) token_hashes: Vec<([u8; 32], Scope)>,
}

#[derive(Debug, Clone)]
pub(super) struct PasswordHashText(pub(super) String);

pub(super) fn validate_user_name(name: &str) -> Result<(), UsersError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USER_NAME_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(UsersError::InvalidUserName(name.to_owned()))
    }
}

pub(super) fn validate_password(password: &str) -> Result<(), UsersError> {
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        return Err(UsersError::InvalidPassword);
    }
    Ok(())
}

pub(super) fn scope_of(folder: Option<&str>) -> Result<Scope, NameError> {
    folder.map_or(Ok(Scope::whole_share()), Scope::parse)
}

pub(super) fn folder_text(scope: &Scope) -> Option<String> {
    scope.folder_name().map(|f| f.as_str().to_owned())
}

pub(super) fn hash_password(password: &str) -> Result<String, UsersError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| UsersError::Crypto(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| UsersError::Crypto(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Crypto(e.to_string()))
}

pub(super) fn verify_hash(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A hash that no password matches, verified for unknown names so that they cost the same time.
pub(super) fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut random = [0u8; 32];
        let _ = getrandom::fill(&mut random);
        hash_password(&URL_SAFE_NO_PAD.encode(random)).unwrap_or_default()
    })
}

pub(super) fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Loaded {
    pub(super) fn check(db: Db, path: &Path) -> Result<Self, UsersError> {
        let corrupt = |reason: String| UsersError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        if db.version != FORMAT_VERSION {
            return Err(corrupt(format!("unknown format version {}", db.version)));
        }
        let mut users = Vec::with_capacity(db.users.len());
        for (i, user) in db.users.iter().enumerate() {
            validate_user_name(&user.name).map_err(|e| corrupt(e.to_string()))?;
            if db.users[..i].iter().any(|u| u.name == user.name) {
                return Err(corrupt(format!("user {:?} appears twice", user.name)));
            }
            PasswordHash::new(&user.password)
                .map_err(|e| corrupt(format!("user {:?}: bad password hash: {e}", user.name)))?;
            let scope = scope_of(user.folder.as_deref())
                .map_err(|e| corrupt(format!("user {:?}: folder: {e}", user.name)))?;
            users.push((scope, PasswordHashText(user.password.clone())));
        }
        let mut token_hashes = Vec::with_capacity(db.tokens.len());
        for token in &db.tokens {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&token.sha256, &mut hash)
                .map_err(|_| corrupt(format!("token {:?}: bad hash", token.id)))?;
            let scope = scope_of(token.folder.as_deref())
                .map_err(|e| corrupt(format!("token {:?}: folder: {e}", token.id)))?;
            token_hashes.push((hash, scope));
        }
        Ok(Self {
            db,
            users,
            token_hashes,
        })
    }
}
