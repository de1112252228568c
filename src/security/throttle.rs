//! Failed-login slowdown per peer address.
//!
//! Threat: online guessing of passwords or tokens (many tries from one address, in sequence or
//! over parallel connections). Answer: after [`Policy::free_failures`] failures, each further
//! attempt from that address waits `base`, `2·base`, `4·base` … up to `max`; parallel attempts
//! queue behind each other (each reserves one delay step), so opening more connections does not
//! buy more tries per second. Other addresses are never slowed. Failures older than `window` are
//! forgotten.
//!
//! Threat: an attacker with one valid account who logs in with it between guesses at other
//! accounts, to wipe the record of those guesses. Answer: failures are counted per address *and*
//! per name tried (a user name; all tokens count as one name, pairing as another), and a success
//! forgets only the failures against the name that succeeded (the typing mistakes before it);
//! the slowdown of the address stays as high as the failures against every other name make it.
//! At most [`MAX_NAMES`] names are told apart per address (kept as 64-bit keyed hashes, not as
//! text); failures against further names are counted but never forgiven.
//!
//! Threat: memory exhaustion by failures from very many addresses. Answer: at most
//! `capacity` addresses are tracked (each at most [`MAX_NAMES`] × 12 bytes of names); when full,
//! expired entries go first, then the one whose last failure is oldest. IPv6 peers are tracked per /64, since one host usually owns a whole /64.
//!
//! Not here: logging the failure (the caller does, without the secret), or the comparison itself.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The slowdown's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures allowed without any delay (typing mistakes).
    pub free_failures: u32,
    /// The first delay; each further failure doubles it.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
    /// How long after its last failure an address is forgotten.
    pub window: Duration,
    /// How many addresses are tracked at most.
    pub capacity: usize,
}

impl Default for Policy {
    /// 3 free failures, then 1 s, 2 s, 4 s … capped at 30 s; forgotten after 15 minutes; 10,000
    /// addresses (about 1 MiB).
    fn default() -> Self {
        Self {
            free_failures: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
            window: Duration::from_secs(15 * 60),
            capacity: 10_000,
        }
    }
}

impl Policy {
    /// The delay owed after `failures` failures.
    #[must_use]
    pub fn step(&self, failures: u32) -> Duration {
        let Some(over) = failures.checked_sub(self.free_failures) else {
            return Duration::ZERO;
        };
        // 2^over overflows quickly; anything past 2^20 is far beyond any sane cap.
        let factor = 1u32 << over.min(20);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// How many names tried from one address are told apart (see the module's doc).
pub const MAX_NAMES: usize = 8;

#[derive(Debug)]
struct Entry {
    /// Every failure from the address, whatever the name.
    failures: u32,
    /// Failures per name tried (a keyed hash of it), for the first [`MAX_NAMES`] names.
    by_name: Vec<(u64, u32)>,
    last_failure: Instant,
    /// No attempt starts before this instant.
    next_allowed: Instant,
}

/// The per-address failure record; shared by all connections of a server.
#[derive(Debug)]
pub struct Throttle {
    policy: Policy,
    entries: Mutex<HashMap<IpAddr, Entry>>,
    /// The key of the name hashes (random per server).
    names: std::collections::hash_map::RandomState,
}

/// The name all token attempts are counted under (tokens have no name before they match).
pub const TOKEN: &str = "\0token";
/// The name pairing attempts are counted under.
pub const PAIRING: &str = "\0pair";

/// The key an address is tracked under: the address itself, or its /64 for IPv6.
pub(crate) fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
        v4 @ IpAddr::V4(_) => v4,
    }
}

impl Throttle {
    /// An empty record with `policy`.
    #[must_use]
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            entries: Mutex::new(HashMap::new()),
            names: std::collections::hash_map::RandomState::new(),
        }
    }

    /// How long an attempt from `ip` starting at `now` must wait before it is checked; the wait is
    /// reserved, so a parallel attempt waits one step longer.
    pub fn begin_at(&self, ip: IpAddr, now: Instant) -> Duration {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let key = key(ip);
        let Some(entry) = entries.get_mut(&key) else {
            return Duration::ZERO;
        };
        if now.saturating_duration_since(entry.last_failure) > self.policy.window {
            entries.remove(&key);
            return Duration::ZERO;
        }
        let start = entry.next_allowed.max(now);
        entry.next_allowed = start + self.policy.step(entry.failures);
        start - now
    }

    /// Waits (on tokio's clock) as long as [`Throttle::begin_at`] says; call before checking a
    /// password or token.
    pub async fn begin(&self, ip: IpAddr) {
        let wait = self.begin_at(ip, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Records a failed attempt from `ip` at `now` against `name` (a user name; [`TOKEN`] or
    /// [`PAIRING`] for those).
    pub fn fail_at(&self, ip: IpAddr, name: &str, now: Instant) {
        let hashed = self.names.hash_one(name);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let key = key(ip);
        if !entries.contains_key(&key) && entries.len() >= self.policy.capacity {
            self.make_room(&mut entries, now);
        }
        let entry = entries.entry(key).or_insert(Entry {
            failures: 0,
            by_name: Vec::new(),
            last_failure: now,
            next_allowed: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        if let Some((_, n)) = entry.by_name.iter_mut().find(|(h, _)| *h == hashed) {
            *n = n.saturating_add(1);
        } else if entry.by_name.len() < MAX_NAMES {
            entry.by_name.push((hashed, 1));
        }
        entry.last_failure = now;
        entry.next_allowed = entry
            .next_allowed
            .max(now + self.policy.step(entry.failures));
    }

    /// Records a failed attempt from `ip` now against `name`.
    pub fn fail(&self, ip: IpAddr, name: &str) {
        self.fail_at(ip, name, Instant::now());
    }

    /// Records a successful login from `ip` as `name`: the failures against that name are
    /// forgotten, those against any other name stay (and so does the delay they make).
    pub fn succeed(&self, ip: IpAddr, name: &str) {
        let hashed = self.names.hash_one(name);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let key = key(ip);
        let Some(entry) = entries.get_mut(&key) else {
            return;
        };
        if let Some(i) = entry.by_name.iter().position(|(h, _)| *h == hashed) {
            let (_, n) = entry.by_name.swap_remove(i);
            entry.failures = entry.failures.saturating_sub(n);
            // The next attempt owes what the failures left make it owe, no more: the step the
            // successful attempt reserved, and those of the forgiven failures, are given back.
            entry.next_allowed = entry
                .next_allowed
                .min(entry.last_failure + self.policy.step(entry.failures));
        }
        if entry.failures == 0 {
            entries.remove(&key);
        }
    }

    /// How many addresses are tracked.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn make_room(&self, entries: &mut HashMap<IpAddr, Entry>, now: Instant) {
        let window = self.policy.window;
        entries.retain(|_, e| now.saturating_duration_since(e.last_failure) <= window);
        while entries.len() >= self.policy.capacity.max(1) {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.last_failure)
                .map(|(k, _)| *k)
            else {
                break;
            };
            entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    const S: Duration = Duration::from_secs(1);

    #[test]
    fn steps_double_from_the_fourth_failure_and_cap() {
        let p = Policy::default();
        let steps: Vec<u64> = (0..12).map(|f| p.step(f).as_secs()).collect();
        assert_eq!(steps, [0, 0, 0, 1, 2, 4, 8, 16, 30, 30, 30, 30]);
        assert_eq!(p.step(u32::MAX), p.max);
    }

    #[tokio::test(start_paused = true)]
    async fn serial_failures_are_slowed_and_a_success_resets() {
        let t = Throttle::new(Policy::default());
        let mut waits = Vec::new();
        for _ in 0..7 {
            let started = Instant::now();
            t.begin(A).await;
            waits.push(started.elapsed().as_secs());
            t.fail(A, "alice");
        }
        assert_eq!(waits, [0, 0, 0, 1, 2, 4, 8]);
        // Another address is not affected.
        assert_eq!(t.begin_at(B, Instant::now()), Duration::ZERO);
        t.succeed(A, "alice");
        assert_eq!(t.begin_at(A, Instant::now()), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_attempts_queue_behind_each_other() {
        let t = Throttle::new(Policy::default());
        let now = Instant::now();
        for _ in 0..4 {
            t.fail_at(A, "alice", now);
        }
        // 4 failures: each attempt costs a 2 s step, and parallel ones queue.
        let waits: Vec<Duration> = (0..3).map(|_| t.begin_at(A, now)).collect();
        assert_eq!(waits, [2 * S, 4 * S, 6 * S]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_expire_after_the_window() {
        let policy = Policy::default();
        let t = Throttle::new(policy);
        let now = Instant::now();
        for _ in 0..10 {
            t.fail_at(A, "alice", now);
        }
        assert!(t.begin_at(A, now + S) > Duration::ZERO);
        assert_eq!(t.begin_at(A, now + policy.window + S), Duration::ZERO);
        assert_eq!(t.tracked(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_and_the_oldest_goes_first() {
        let t = Throttle::new(Policy {
            capacity: 3,
            ..Policy::default()
        });
        let start = Instant::now();
        for i in 0..10u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, i));
            for _ in 0..5 {
                t.fail_at(ip, "alice", start + S * u32::from(i));
            }
        }
        assert_eq!(t.tracked(), 3);
        let now = start + 10 * S;
        assert_eq!(
            t.begin_at(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)), now),
            Duration::ZERO
        );
        assert!(t.begin_at(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)), now) > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_is_tracked_per_64_and_mapped_ipv4_as_ipv4() {
        let t = Throttle::new(Policy::default());
        let now = Instant::now();
        for i in 0..5u16 {
            t.fail_at(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, i)),
                "alice",
                now,
            );
        }
        let same_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0xffff, 0, 0, 99));
        let other_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert!(t.begin_at(same_64, now) > Duration::ZERO);
        assert_eq!(t.begin_at(other_64, now), Duration::ZERO);
        for _ in 0..5 {
            t.fail_at(A, "alice", now);
        }
        let mapped = match A {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            v6 @ IpAddr::V6(_) => v6,
        };
        assert!(t.begin_at(mapped, now) > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_forgives_only_the_name_that_succeeded() {
        let t = Throttle::new(Policy::default());
        let now = Instant::now();
        // Guesses at bob's password, with a login to the attacker's own account in between.
        for _ in 0..6 {
            t.fail_at(A, "bob", now);
        }
        t.fail_at(A, "mallory", now);
        t.succeed(A, "mallory");
        assert!(
            t.begin_at(A, now) > Duration::ZERO,
            "a success as mallory must not wipe the guesses at bob"
        );
        // Tokens are one name: a valid token does not forgive password guesses either.
        t.succeed(A, TOKEN);
        assert!(t.begin_at(A, now) > Duration::ZERO);
        // Bob's own success (his typing mistakes) clears the address.
        t.succeed(A, "bob");
        assert_eq!(t.begin_at(A, now), Duration::ZERO);
        assert_eq!(t.tracked(), 0);
        // Past MAX_NAMES names, failures still count and are never forgiven.
        for i in 0..=MAX_NAMES {
            t.fail_at(A, &format!("user{i}"), now);
        }
        let extra = format!("user{MAX_NAMES}");
        t.succeed(A, &extra);
        assert!(t.begin_at(A, now) > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_gives_back_the_delay_of_what_it_forgave() {
        let t = Throttle::new(Policy::default());
        let now = Instant::now();
        // Two typing mistakes as bob, one guess at nobody: the fourth attempt waits 1 s...
        t.fail_at(A, "bob", now);
        t.fail_at(A, "bob", now);
        t.fail_at(A, "nobody", now);
        assert_eq!(t.begin_at(A, now), S);
        // ... and is bob's right password: one failure is left, so the next two are free.
        t.succeed(A, "bob");
        assert_eq!(t.begin_at(A, now + S), Duration::ZERO);
        t.fail_at(A, "nobody", now + S);
        assert_eq!(t.begin_at(A, now + S), Duration::ZERO);
        t.fail_at(A, "nobody", now + S);
        // Three failures again: the next waits the first step.
        assert_eq!(t.begin_at(A, now + S), S);
    }
}
