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

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::security::pair::{PairCode, PairError, PairingCodes};
use crate::security::throttle::{self, Policy, Throttle};
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
    /// One attempt per address in [`Access::check`] at a time.
    turns: Turns,
}

/// Credential checks that run at once, per server; the others wait their turn (in arrival
/// order), holding nothing but their connection. An argon2 verification holds its memory cost
/// (19 MiB with the parameters barge writes) for tens of milliseconds: unbounded, a burst of
/// logins from as many connections, or from the streams of one HTTP/2 connection, took the
/// server to gigabytes. Two keep both cores of a small machine busy when logins queue.
pub const CHECKS_AT_ONCE: usize = 2;

/// Credential checks take turns per address: an address has at most one attempt past its turn
/// (in the throttle's delay, in the queue for [`CHECKS_AT_ONCE`], or being checked); its other
/// attempts wait for their turn before they queue. So a burst of wrong logins from one
/// address, which has no delay yet (its attempts all arrive before the first fails), holds one
/// place in the queue, not one per attempt: a login from elsewhere waits for at most one check
/// per other address with attempts in flight, not for the whole burst. An address is keyed as
/// the throttle keys it (an IPv6 /64 as one). An address's entry lives while an attempt of it
/// holds or awaits its turn (a waiter that is dropped, its connection gone, counts itself out
/// too): at most one per address with a login under way, and those are bounded by the
/// connection limits.
#[derive(Default)]
struct Turns {
    by_address: std::sync::Mutex<HashMap<IpAddr, Lane>>,
}

/// The turns of one address: whose turn it is, and how many attempts hold or await one.
#[derive(Default)]
struct Lane {
    turn: Arc<tokio::sync::Mutex<()>>,
    attempts: usize,
}

/// The turn of one attempt, counted in its lane from before it waits; the next attempt of its
/// address may go once it is dropped.
struct Turn<'a> {
    turns: &'a Turns,
    key: IpAddr,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Turns {
    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Lane>> {
        self.by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits (in arrival order) until no other attempt of `ip`'s address is past its turn.
    async fn take(&self, ip: IpAddr) -> Turn<'_> {
        let key = throttle::key(ip);
        let turn = {
            let mut lanes = self.lanes();
            let lane = lanes.entry(key).or_default();
            lane.attempts += 1;
            Arc::clone(&lane.turn)
        };
        // Counted from here on: dropped while it waits, it counts itself out.
        let mut mine = Turn {
            turns: self,
            key,
            held: None,
        };
        mine.held = Some(turn.lock_owned().await);
        mine
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lanes().len()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.held.take());
        let mut lanes = self.turns.lanes();
        // The last attempt of its address takes the lane with it, under the map's lock, so a
        // new attempt either counted itself in first or makes a new lane.
        if let Some(lane) = lanes.get_mut(&self.key) {
            lane.attempts = lane.attempts.saturating_sub(1);
            if lane.attempts == 0 {
                lanes.remove(&self.key);
            }
        }
    }
}

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
            turns: Turns::default(),
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
            turns: Turns::default(),
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
    /// takes tens of milliseconds of CPU), after the address's earlier attempts ([`Turns`]: one
    /// at a time per address), then the failed-login throttle of that address, then a free
    /// place among [`CHECKS_AT_ONCE`]; records the outcome in the throttle (a success forgives
    /// only failures against `name`). `None`: wrong, unknown, or no database (failures are
    /// logged by the caller, without the secret).
    pub async fn check(
        self: &Arc<Self>,
        ip: IpAddr,
        name: &str,
        verify: impl FnOnce(&Users) -> Result<Option<Principal>, UsersError> + Send + 'static,
    ) -> Option<Principal> {
        let _turn = self.turns.take(ip).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Attempts of one address go one at a time, in arrival order; other addresses do not wait
    /// for them; nothing is left in the map once they are done, cancelled ones included.
    #[tokio::test]
    async fn turns_go_one_per_address_and_leave_nothing_behind() {
        let turns = Turns::default();
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let first = turns.take(a).await;
        // The same address waits, and so does another of the same IPv6 /64; another address
        // does not.
        let mut second = Box::pin(turns.take(a));
        assert!(done_within_20_ms(&mut second).await.is_none());
        let other = turns.take(b).await;
        let v6 = turns.take("fd00::1".parse().unwrap()).await;
        let mut same_64 = Box::pin(turns.take("fd00::2".parse().unwrap()));
        assert!(done_within_20_ms(&mut same_64).await.is_none());
        drop(same_64); // cancelled while waiting
        assert_eq!(turns.len(), 3);
        drop(first);
        let second = second.await;
        drop((second, other, v6));
        assert_eq!(turns.len(), 0);
        // A waiter dropped after the turn before it ended (its turn came, it was not polled
        // again) takes its address's entry with it too.
        let first = turns.take(a).await;
        let mut waiter = Box::pin(turns.take(a));
        assert!(done_within_20_ms(&mut waiter).await.is_none());
        drop(first);
        drop(waiter);
        assert_eq!(turns.len(), 0);
    }

    async fn done_within_20_ms<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        tokio::time::timeout(Duration::from_millis(20), f)
            .await
            .ok()
    }
}
