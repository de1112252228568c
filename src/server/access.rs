//! Who may use the server: the access policy a server runs with (anonymous access, the user
//! and token database, the login slowdown, the active pairing codes), shared by every session.
//!
//! Threats and answers: anonymous access on a network address by accident (the CLI refuses to
//! start a non-loopback server with no users unless `--public`; here, anonymous access is on
//! only for `--public` or a loopback server with an empty database, decided again for every
//! connection, so the first user added turns it off without a restart); secrets crossing the
//! network in clear (logins and pairing are refused on a plain server bound to a network
//! address); online guessing (every login and pairing failure goes through one
//! [`Throttle`] per server). Not here: the dialogue of a login (`session::login`), checking a
//! password or token (`security::users`).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::security::pair::{PairCode, PairError, PairingCodes};
use crate::security::throttle::{Policy, Throttle};
use crate::security::users::{Permissions, Principal, Scope, Users, UsersError};

/// What a pairing code grants when it is used: the permissions and folder of the token the
/// server then creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The token's permissions.
    pub perms: Permissions,
    /// The folder it is confined to.
    pub folder: Scope,
    /// The label of the token in `barge token list`.
    pub label: String,
}

/// How a server decides who may do what.
pub struct Access {
    users: Option<Users>,
    public: bool,
    loopback: bool,
    secure: bool,
    anonymous: Permissions,
    pub(super) throttle: Throttle,
    pub(super) pairing: PairingCodes<Grant>,
    /// Credential checks running now: at most [`CHECKS_AT_ONCE`].
    checks: Semaphore,
}

/// Credential checks that run at once, per server; the others wait their turn (in arrival
/// order), holding nothing but their connection. An argon2 verification holds its memory cost
/// (19 MiB with the parameters barge writes) for tens of milliseconds: unbounded, a burst of
/// logins from as many connections, or from the streams of one HTTP/2 connection, took the
/// server to gigabytes. Two keep both cores of a small machine busy when logins queue.
pub const CHECKS_AT_ONCE: usize = 2;

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("users", &self.users.as_ref().map(Users::path))
            .field("public", &self.public)
            .field("loopback", &self.loopback)
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

impl Default for Access {
    /// No database: every session is anonymous with every permission (the server as it was
    /// before logins; what in-process tests use unless they test access).
    fn default() -> Self {
        Self {
            users: None,
            public: true,
            loopback: true,
            secure: true,
            anonymous: Permissions::ALL,
            throttle: Throttle::new(Policy::default()),
            pairing: PairingCodes::default(),
            checks: Semaphore::new(CHECKS_AT_ONCE),
        }
    }
}

/// The facts about a server that its access policy depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessOptions {
    /// `--public`: anonymous access even when users exist or the address is not loopback.
    pub public: bool,
    /// `--read-only`: anonymous sessions may list and download only.
    pub read_only: bool,
    /// The server listens on a loopback address only.
    pub loopback: bool,
    /// The server speaks TLS (otherwise logins are accepted only on loopback).
    pub tls: bool,
}

impl Access {
    /// The policy of a server with the database `users` (see [`AccessOptions`]).
    #[must_use]
    pub fn new(users: Users, options: AccessOptions) -> Self {
        Self::with_policy(users, options, Policy::default())
    }

    /// As [`Access::new`], with another login slowdown (tests use a short one).
    #[must_use]
    pub fn with_policy(users: Users, options: AccessOptions, policy: Policy) -> Self {
        Self {
            users: Some(users),
            public: options.public,
            loopback: options.loopback,
            secure: options.tls || options.loopback,
            anonymous: if options.read_only {
                Permissions::READ_ONLY
            } else {
                Permissions::ALL
            },
            throttle: Throttle::new(policy),
            pairing: PairingCodes::default(),
            checks: Semaphore::new(CHECKS_AT_ONCE),
        }
    }

    /// The database, if the server has one.
    #[must_use]
    pub fn users(&self) -> Option<&Users> {
        self.users.as_ref()
    }

    /// The permissions a new session starts with, or `None` when it starts logged out:
    /// anonymous access is on for `--public`, or on loopback while no user or token exists.
    /// A database that cannot be read counts as not empty (fail closed).
    #[must_use]
    pub fn anonymous(&self) -> Option<Permissions> {
        let empty = match &self.users {
            None => true,
            Some(users) => users.is_empty().unwrap_or(false),
        };
        (self.public || (self.loopback && empty)).then_some(self.anonymous)
    }

    /// Whether this connection may carry a login or a pairing (TLS, or plain on loopback).
    #[must_use]
    pub fn logins_allowed(&self) -> bool {
        self.secure
    }

    /// Whether any user or token exists.
    ///
    /// # Errors
    /// The database is unusable.
    pub fn has_users(&self) -> Result<bool, UsersError> {
        match &self.users {
            None => Ok(false),
            Some(users) => users.is_empty().map(|e| !e),
        }
    }

    /// Checks a credential from `ip` for `name` (a user name, or
    /// [`crate::security::throttle::TOKEN`]) with `verify` (run on the blocking pool: argon2
    /// takes tens of milliseconds of CPU), slowed first by the failed-login throttle of that
    /// address; records the outcome there (a success forgives only failures against `name`). `None`: wrong, unknown, or no database (failures are logged by the
    /// caller, without the secret).
    pub async fn check(
        self: &Arc<Self>,
        ip: IpAddr,
        name: &str,
        verify: impl FnOnce(&Users) -> Result<Option<Principal>, UsersError> + Send + 'static,
    ) -> Option<Principal> {
        self.throttle.begin(ip).await;
        // Never closed; without a permit (it cannot happen) the check is refused.
        let Ok(permit) = self.checks.acquire().await else {
            return None;
        };
        let me = Arc::clone(self);
        let checked = tokio::task::spawn_blocking(move || {
            let found = match verify(me.users()?) {
                Ok(found) => found,
                Err(e) => {
                    tracing::error!("{e}");
                    None
                }
            };
            // What the verification allocated (argon2's memory) goes back to the system
            // rather than staying in malloc's free lists.
            crate::heap::give_back();
            found
        })
        .await
        .ok()
        .flatten();
        drop(permit);
        match &checked {
            Some(_) => self.throttle.succeed(ip, name),
            None => self.throttle.fail(ip, name),
        }
        checked
    }

    /// The user database's generation ([`Users::generation`]; 0 without a database): while it
    /// stays the same, logins checked earlier still stand.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.users.as_ref().map_or(0, Users::generation)
    }

    /// `principal` as the database says now, or `None` when it was removed, revoked, given a
    /// new password, or the database cannot be read (fail closed).
    #[must_use]
    pub fn recheck(&self, principal: &Principal) -> Option<Principal> {
        match self.users.as_ref()?.recheck(principal) {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::error!("{e}");
                None
            }
        }
    }

    /// Issues a one-time pairing code that grants `grant`, valid for `lifetime`.
    ///
    /// # Errors
    /// Too many active codes, or the random generator failed.
    pub fn issue_code(&self, grant: Grant, lifetime: Duration) -> Result<PairCode, PairError> {
        self.pairing.issue(grant, lifetime, Instant::now())
    }
}
