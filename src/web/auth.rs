//! Who a web request is, with the same users, tokens and rules as the TCP protocol
//! ([`crate::server::Access`]):
//! - `Authorization: Bearer <token>` (scripts, `curl`): checked on every request;
//! - a session cookie, made by `POST /api/login` (user and password, or a token) or by opening
//!   a link `/login?token=...` (what the QR code carries): `HttpOnly`, `SameSite=Strict`, and
//!   `Secure` over TLS. A request that changes something with the cookie must also carry the
//!   session's CSRF token in `X-Barge-CSRF` (the page has it from `/api/me`);
//! - otherwise anonymous, where the server allows it (`--public`, or loopback with no users),
//!   or logged out (every route but the page, `/api/me` and the login answers `401`).
//!
//! Threats and answers: online guessing (every failed login goes through the server's one
//! throttle per address, shared with the TCP side); a stolen session id (random 256 bits from
//! the OS, never in a URL, never readable by script, expires after [`LIFETIME`]); forged
//! requests from other sites (the cookie is `SameSite=Strict`, the CSRF header is required, and
//! [`super::guard`] checks the origin); rights outliving a revocation (when the user database
//! changes, every session is checked again before the next request is served: a removed user,
//! a revoked token or a new password ends its sessions, new permissions apply at once); memory
//! (at most [`MAX_SESSIONS`], and [`MAX_SESSIONS_PER_PRINCIPAL`] per user or token, whose own
//! oldest goes first; a full table drops the oldest of whoever holds the most);
//! secrets in logs (a failed login is logged by user name or "a token", never the secret).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use super::api::Refusal;
use super::{Access, Gateway};
use crate::security::users::{Permissions, Principal, Scope};

/// How long a web session lasts.
pub(super) const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Web sessions held at once.
pub(super) const MAX_SESSIONS: usize = 4096;
/// Web sessions held at once by one user or token: its oldest goes when it opens one more, so
/// one principal (or whoever holds its password) cannot fill the table and push out others.
pub(super) const MAX_SESSIONS_PER_PRINCIPAL: usize = 32;
/// The cookie's name.
const COOKIE: &str = "barge_session";

/// A logged-in browser.
struct Session {
    principal: Principal,
    csrf: String,
    made: Instant,
}

/// The web sessions of one gateway.
#[derive(Default)]
pub(super) struct Sessions(Mutex<Held>);

/// The sessions, and the user database's generation they were last checked against.
#[derive(Default)]
pub(super) struct Held {
    map: HashMap<String, Session>,
    checked: u64,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
}

/// What [`Sessions::open`] made.
enum Opened {
    Session {
        id: String,
        principal: Principal,
    },
    /// The principal was removed or changed while its credential was checked.
    Revoked,
    /// The system's random generator failed.
    NoRandom,
}

fn random() -> Option<String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks every session against the user database if it changed since the last check:
    /// sessions of removed users, revoked tokens and changed passwords end; the others take
    /// their current permissions and folder. A `stat` per request at most; the sweep only on
    /// a change (no argon2: a lookup by name and credential digest).
    fn revalidate(&self, policy: &crate::server::Access) {
        let now = policy.generation();
        let mut held = self.lock();
        if held.checked == now {
            return;
        }
        held.checked = now;
        held.map.retain(|_, s| match policy.recheck(&s.principal) {
            Some(fresh) => {
                s.principal = fresh;
                true
            }
            None => {
                tracing::info!(
                    "web: a session of {} ended: removed or changed on the server",
                    crate::name::escape(&s.principal.name)
                );
                false
            }
        });
    }

    /// A new session for `principal`, whose credential was checked against generation
    /// `checked_at` of the user database: its id, CSRF token and principal as the database
    /// says now. The sessions held are valid as of the generation they were last swept at; if
    /// that is not `checked_at` (the database changed while the credential was checked, and a
    /// request may have swept the sessions meanwhile), the principal is checked again here,
    /// under the same lock as the sweep, so that no session escapes the check of a change
    /// (`Opened::Revoked` when it is gone now).
    fn open(
        &self,
        principal: Principal,
        checked_at: u64,
        policy: &crate::server::Access,
    ) -> Opened {
        let (Some(id), Some(csrf)) = (random(), random()) else {
            return Opened::NoRandom;
        };
        let mut held = self.lock();
        let principal = if held.checked == checked_at {
            principal
        } else {
            match policy.recheck(&principal) {
                Some(fresh) => fresh,
                None => return Opened::Revoked,
            }
        };
        let map = &mut held.map;
        map.retain(|_, s| s.made.elapsed() < LIFETIME);
        // Its own oldest session goes first; when the table is full, the oldest of whoever
        // holds the most (so a full table never costs a principal with few sessions its own).
        let mut count: HashMap<&str, usize> = HashMap::new();
        for s in map.values() {
            *count.entry(s.principal.name.as_str()).or_default() += 1;
        }
        let mine = count.get(principal.name.as_str()).copied().unwrap_or(0);
        let evict_from = if mine >= MAX_SESSIONS_PER_PRINCIPAL {
            Some(principal.name.clone())
        } else if map.len() >= MAX_SESSIONS {
            count
                .into_iter()
                .max_by_key(|(_, n)| *n)
                .map(|(name, _)| name.to_owned())
        } else {
            None
        };
        if let Some(name) = evict_from {
            let oldest = map
                .iter()
                .filter(|(_, s)| s.principal.name == name)
                .min_by_key(|(_, s)| s.made)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        let session = Session {
            principal: principal.clone(),
            csrf,
            made: Instant::now(),
        };
        map.insert(id.clone(), session);
        Opened::Session { id, principal }
    }

    fn get(&self, id: &str) -> Option<(Principal, String)> {
        let held = self.lock();
        let s = held.map.get(id).filter(|s| s.made.elapsed() < LIFETIME)?;
        Some((s.principal.clone(), s.csrf.clone()))
    }

    fn close(&self, id: &str) {
        self.lock().map.remove(id);
    }
}

/// Who a request is.
pub(super) enum Who {
    /// Anonymous access, where the server allows it.
    Anonymous(Access),
    /// A bearer token.
    Token(Access),
    /// A session cookie, with its CSRF token.
    Cookie(Access, String),
    /// Nobody: logged out.
    Nobody,
    /// Credentials were sent but are wrong (a bad token, an expired session).
    Refused,
}

impl Who {
    /// The access, or the refusal for a request that needs one.
    pub(super) fn access(self) -> Result<Access, Refusal> {
        match self {
            Self::Anonymous(a) | Self::Token(a) | Self::Cookie(a, _) => Ok(a),
            Self::Nobody => Err(Refusal(
                StatusCode::UNAUTHORIZED,
                "Log in first (a user and password, a token, or barge pair)".into(),
            )),
            Self::Refused => Err(Refusal(
                StatusCode::UNAUTHORIZED,
                "Login incorrect or expired; log in again".into(),
            )),
        }
    }
}

fn access_of(p: &Principal) -> Access {
    Access {
        principal: p.name.clone(),
        perms: p.perms,
        scope: p.folder.clone(),
    }
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

impl Gateway {
    /// Who sent `headers` from `ip`.
    pub(super) async fn who(&self, headers: &HeaderMap, ip: IpAddr) -> Who {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            // Only `Bearer <token>` (any case for the scheme); any other form is refused rather
            // than taken as anonymous.
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim().to_owned());
            // A token in clear on a network address is refused, as logins are on the TCP side.
            let (Some(token), true) = (token, self.policy.logins_allowed()) else {
                tracing::debug!(%ip, "web: an unusable Authorization header");
                return Who::Refused;
            };
            let tokens = crate::security::throttle::TOKEN;
            return match self
                .policy
                .check(ip, tokens, move |u| u.verify_token(&token))
                .await
            {
                Some(p) => {
                    super::audit::acting_for(&p.name);
                    Who::Token(access_of(&p))
                }
                None => {
                    tracing::debug!(%ip, "web: a request with a wrong token");
                    Who::Refused
                }
            };
        }
        if let Some(id) = cookie(headers) {
            self.sessions.revalidate(&self.policy);
            return match self.sessions.get(id) {
                Some((p, csrf)) => {
                    super::audit::acting_for(&p.name);
                    Who::Cookie(access_of(&p), csrf)
                }
                None => Who::Refused,
            };
        }
        match self.policy.anonymous() {
            Some(perms) => Who::Anonymous(self.anonymous(perms)),
            None => Who::Nobody,
        }
    }

    fn anonymous(&self, perms: Permissions) -> Access {
        Access {
            principal: "anonymous".into(),
            perms,
            scope: Scope::whole_share(),
        }
    }

    /// The access of a request that reads, or the refusal.
    pub(super) async fn reader(&self, headers: &HeaderMap, ip: IpAddr) -> Result<Access, Refusal> {
        self.who(headers, ip).await.access()
    }

    /// The access of a request that changes something: with a session cookie, the CSRF header
    /// must match the session's.
    pub(super) async fn writer(&self, headers: &HeaderMap, ip: IpAddr) -> Result<Access, Refusal> {
        match self.who(headers, ip).await {
            Who::Cookie(access, csrf) => {
                let sent = headers
                    .get("x-barge-csrf")
                    .map_or(&b""[..], |v| v.as_bytes());
                if bool::from(sent.ct_eq(csrf.as_bytes())) {
                    Ok(access)
                } else {
                    Err(Refusal(
                        StatusCode::FORBIDDEN,
                        "Missing or wrong CSRF token; reload the page".into(),
                    ))
                }
            }
            who => who.access(),
        }
    }

    fn set_cookie(&self, id: &str, max_age: u64) -> HeaderValue {
        let secure = if self.fingerprint.is_some() {
            "; Secure"
        } else {
            ""
        };
        let v =
            format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Checks a credential and opens a session for it.
    async fn log_in(
        &self,
        ip: IpAddr,
        user: Option<String>,
        secret: String,
    ) -> Result<(HeaderValue, Principal), Refusal> {
        if !self.policy.logins_allowed() {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                "Logins need TLS on a network address".into(),
            ));
        }
        let shown = user.clone().unwrap_or_else(|| "a token".into());
        let throttled = user
            .clone()
            .unwrap_or_else(|| crate::security::throttle::TOKEN.into());
        let before = self.policy.generation();
        let checked = self
            .policy
            .check(ip, &throttled, move |u| match &user {
                Some(name) => u.verify_password(name, &secret),
                None => u.verify_token(&secret),
            })
            .await;
        let incorrect = || Refusal(StatusCode::UNAUTHORIZED, "Login incorrect".into());
        let Some(principal) = checked else {
            tracing::debug!(%ip, "web: failed login for {}", crate::name::escape(&shown));
            return Err(incorrect());
        };
        let (id, principal) = match self.sessions.open(principal, before, &self.policy) {
            Opened::Session { id, principal } => (id, principal),
            Opened::Revoked => {
                tracing::info!(%ip, "web: login of {} refused: removed or changed on the server meanwhile", crate::name::escape(&shown));
                return Err(incorrect());
            }
            Opened::NoRandom => {
                return Err(Refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "No random numbers".into(),
                ));
            }
        };
        super::audit::acting_for(&principal.name);
        Ok((self.set_cookie(&id, LIFETIME.as_secs()), principal))
    }
}

#[derive(Deserialize)]
pub(super) struct LoginJson {
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
}

/// `POST /api/login` with `{"user", "password"}` or `{"token"}`.
pub(super) async fn login(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Json(args): Json<LoginJson>,
) -> Result<Response, Refusal> {
    let (user, secret) = match (args.user, args.password, args.token) {
        (Some(user), Some(password), None) => (Some(user), password),
        (None, None, Some(token)) => (None, token),
        _ => {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                "Send a user and password, or a token".into(),
            ));
        }
    };
    let (cookie, principal) = gw.log_in(peer.ip(), user, secret).await?;
    let body = serde_json::json!({ "principal": principal.name });
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

#[derive(Deserialize)]
pub(super) struct TokenQuery {
    token: String,
}

/// `GET /login?token=...`: a link that opens the page logged in (then the token leaves the
/// address bar at once: the answer is a redirect to `/`).
pub(super) async fn login_link(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    // Opened from a scanned code or typed: fine; followed from another site's page: refused,
    // so no page can log a visitor into someone else's token (login CSRF).
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| !matches!(v.as_bytes(), b"none" | b"same-origin"))
    {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "A login link works only when opened directly, not from another site".into(),
        ));
    }
    let (cookie, _) = gw.log_in(peer.ip(), None, q.token).await?;
    let mut res = Redirect::to("/").into_response();
    res.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(res)
}

/// `POST /api/logout`: ends the session.
pub(super) async fn logout(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers) {
        gw.sessions.close(id);
    }
    (
        [(header::SET_COOKIE, gw.set_cookie("", 0))],
        StatusCode::NO_CONTENT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::users::Users;

    #[test]
    fn one_principal_cannot_fill_the_table_or_push_out_others()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let users = Users::open(dir.path())?;
        let principal = |label: &str| -> Result<Principal, Box<dyn std::error::Error>> {
            let t = users.create_token(label, Permissions::ALL, &Scope::whole_share())?;
            Ok(users.verify_token(t.secret())?.ok_or("no principal")?)
        };
        let (alice, mallory) = (principal("alice")?, principal("mallory")?);
        let policy = crate::server::Access::new(users, options());
        let at = policy.generation();
        let sessions = Sessions::default();
        let alices = id_of(sessions.open(alice.clone(), at, &policy))?;
        let mut mallorys = Vec::new();
        for _ in 0..MAX_SESSIONS + 10 {
            mallorys.push(id_of(sessions.open(mallory.clone(), at, &policy))?);
        }
        let held = sessions.lock().map.len();
        assert_eq!(held, MAX_SESSIONS_PER_PRINCIPAL + 1);
        assert!(sessions.get(&alices).is_some(), "alice's session survives");
        // Mallory keeps his newest sessions; his oldest went first.
        assert!(sessions.get(&mallorys[0]).is_none());
        assert!(sessions.get(mallorys.last().ok_or("none")?).is_some());
        Ok(())
    }

    fn options() -> crate::server::AccessOptions {
        crate::server::AccessOptions {
            public: false,
            read_only: false,
            loopback: true,
            tls: false,
        }
    }

    fn id_of(opened: Opened) -> Result<String, &'static str> {
        match opened {
            Opened::Session { id, .. } => Ok(id),
            Opened::Revoked => Err("revoked"),
            Opened::NoRandom => Err("no random numbers"),
        }
    }

    /// A login whose user is removed while its password is checked gets no session, even when
    /// a request swept the sessions after the change and before the session was opened (the
    /// sweep would never see it again).
    #[test]
    fn a_login_that_overlaps_a_removal_opens_no_session() -> Result<(), Box<dyn std::error::Error>>
    {
        const PASSWORD: &str = "correct horse battery";
        let dir = tempfile::tempdir()?;
        let users = Users::open(dir.path())?;
        users.add_user("alice", PASSWORD, Permissions::ALL, &Scope::whole_share())?;
        users.add_user("bob", PASSWORD, Permissions::ALL, &Scope::whole_share())?;
        let alice = users
            .verify_password("alice", PASSWORD)?
            .ok_or("alice's password")?;
        let bob = users
            .verify_password("bob", PASSWORD)?
            .ok_or("bob's password")?;
        let policy = crate::server::Access::new(users, options());
        let sessions = Sessions::default();
        sessions.revalidate(&policy);
        // The credentials were checked at this generation; then alice is removed (by another
        // process: `barge user remove`) and a request sweeps the sessions.
        let before = policy.generation();
        assert!(Users::open(dir.path())?.remove_user("alice")?);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while policy.generation() == before && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_ne!(policy.generation(), before, "the change was not seen");
        sessions.revalidate(&policy);
        assert!(matches!(
            sessions.open(alice, before, &policy),
            Opened::Revoked
        ));
        // Bob, unchanged, gets his session, with his rights as the database says now.
        let bobs = id_of(sessions.open(bob, before, &policy))?;
        assert!(sessions.get(&bobs).is_some());
        assert_eq!(sessions.lock().map.len(), 1);
        Ok(())
    }
}
