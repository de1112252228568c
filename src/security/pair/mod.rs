//! Pairing codes: a short one-time code such as `7-copper-lantern` that lets a new client pin the
//! server's key and receive a token, with no fingerprint to compare by hand.
//!
//! Threats and answers:
//! - someone guessing the code online: the code's two words are 16 bits of OS randomness (256
//!   words each, see `words.rs`; the number is only a slot selector sent in clear and adds no
//!   secrecy); the server allows [`MAX_TRIES`] exchanges per code, then burns it, so an attacker
//!   wins with probability at most 3/65,536 per code issued, and a code lives at most its lifetime;
//! - someone recording an exchange and guessing offline: the exchange is SPAKE2 (RustCrypto's
//!   `spake2`, Ed25519 group), whose messages and confirmation MACs reveal nothing that lets a
//!   guess be checked without talking to the other side;
//! - a man in the middle who relays the exchange between two TLS sessions: both SPAKE2 identities
//!   and the key-confirmation MACs include the TLS exporter value
//!   ([`super::tls::PAIR_EXPORTER_LABEL`]), which differs on the two sides of a relay, so both
//!   confirmations fail; a successful pairing therefore proves the TLS peer knows the code, and the
//!   client can pin the key it saw in this very session;
//! - a wrong code going unnoticed: each side sends an HMAC of the transcript under its own key
//!   derived (HKDF-SHA256) from the SPAKE2 key, and checks the other's in constant time.
//!
//! Order: client → `A` (SPAKE2 message); server → `B` + server MAC; the client checks the server
//! MAC before sending its own MAC (so a wrong code stops there), and the server checks the client
//! MAC before it hands out anything. The token is then sent over the TLS channel, which is now
//! authenticated to the code holder on both ends (chosen over encrypting it under the PAKE key:
//! one less construction to get right, and the TLS channel already gives confidentiality).
//!
//! These are pure functions over bytes; the wire form is in `PROTOCOL.md` section 5.10.

mod words;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};
use tokio::time::Instant;

use words::WORDS;

/// Exchanges allowed per code before it is burnt (successful or not; a success burns it too).
pub const MAX_TRIES: u32 = 3;
/// How long a code is valid by default.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Codes a server holds at once; the number part of a code picks among them.
pub const MAX_ACTIVE_CODES: usize = 16;
/// The largest number part of a code.
pub const MAX_NAMEPLATE: u16 = 99;
/// The length of a SPAKE2 message (side byte and a group element).
pub const MESSAGE_LEN: usize = 33;
/// The length of a confirmation MAC (HMAC-SHA256).
pub const CONFIRM_LEN: usize = 32;

const PROTOCOL: &[u8] = b"barge-pair/1";

/// Why pairing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    /// The text is not a code of the form `7-copper-lantern`.
    #[error("a pairing code looks like 7-copper-lantern (a number and two words from the list)")]
    InvalidCode,
    /// No code with this number is active (never issued, expired, burnt or used).
    #[error("no such pairing code (it may have expired, been used, or been burnt by wrong tries)")]
    UnknownCode,
    /// The code has been used already.
    #[error("this pairing code has been used")]
    CodeUsed,
    /// A message of the wrong length or form.
    #[error("malformed pairing message")]
    BadMessage,
    /// The other side's confirmation did not match: a wrong code, or a relay in the middle.
    #[error("pairing failed: wrong code, or someone is in the middle")]
    Mismatch,
    /// Every code number is in use.
    #[error("too many pairing codes are active")]
    Full,
    /// The OS random generator failed.
    #[error("the random generator failed")]
    Random,
}

/// A pairing code: a number (which slot on the server) and two words (the secret).
#[derive(Clone, PartialEq, Eq)]
pub struct PairCode {
    nameplate: u16,
    words: [u8; 2],
}

impl PairCode {
    /// A fresh code whose number is not `taken`.
    ///
    /// # Errors
    /// [`PairError::Full`] when every number is taken; [`PairError::Random`].
    pub fn generate(taken: impl Fn(u16) -> bool) -> Result<Self, PairError> {
        let free: Vec<u16> = (1..=MAX_NAMEPLATE).filter(|n| !taken(*n)).collect();
        if free.is_empty() {
            return Err(PairError::Full);
        }
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).map_err(|_| PairError::Random)?;
        // Which free number is used is not secret; a small modulo bias there does not matter.
        let pick = usize::from(u16::from_le_bytes([random[0], random[1]])) % free.len();
        Ok(Self {
            nameplate: free[pick],
            words: [random[2], random[3]],
        })
    }

    /// The number part, sent in clear to pick the code on the server.
    #[must_use]
    pub fn nameplate(&self) -> u16 {
        self.nameplate
    }

    /// The SPAKE2 password: the canonical code text, under the protocol's name.
    fn password(&self) -> Password {
        let mut pw = PROTOCOL.to_vec();
        pw.push(b' ');
        pw.extend_from_slice(self.to_string().as_bytes());
        Password::new(&pw)
    }
}

impl fmt::Display for PairCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b] = self.words;
        write!(
            f,
            "{}-{}-{}",
            self.nameplate,
            WORDS[usize::from(a)],
            WORDS[usize::from(b)]
        )
    }
}

impl fmt::Debug for PairCode {
    /// Shows the number only: the words are the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PairCode({}-****)", self.nameplate)
    }
}

impl FromStr for PairCode {
    type Err = PairError;

    /// Parses `7-copper-lantern`; case, surrounding blanks and spaces instead of `-` are accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        let mut parts = s.split(['-', ' ']).filter(|p| !p.is_empty());
        let (Some(number), Some(w1), Some(w2), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PairError::InvalidCode);
        };
        if number.len() > 3 || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PairError::InvalidCode);
        }
        let nameplate: u16 = number.parse().map_err(|_| PairError::InvalidCode)?;
        if !(1..=MAX_NAMEPLATE).contains(&nameplate) {
            return Err(PairError::InvalidCode);
        }
        let index = |w: &str| {
            let i = WORDS
                .iter()
                .position(|x| *x == w)
                .ok_or(PairError::InvalidCode)?;
            u8::try_from(i).map_err(|_| PairError::InvalidCode)
        };
        Ok(Self {
            nameplate,
            words: [index(w1)?, index(w2)?],
        })
    }
}

/// A pairing message or MAC as sent on the wire: standard base64 without padding.
#[must_use]
pub fn encode_b64(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// Decodes a pairing message or MAC from the wire (padding optional) and checks its length
/// ([`MESSAGE_LEN`] or [`CONFIRM_LEN`]).
///
/// # Errors
/// [`PairError::BadMessage`] for bad base64 or a wrong length.
pub fn decode_b64(text: &str, len: usize) -> Result<Vec<u8>, PairError> {
    // Longer text cannot decode to `len` bytes; refuse before decoding anything large.
    if text.len() > len.div_ceil(3) * 4 {
        return Err(PairError::BadMessage);
    }
    let bytes = STANDARD_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| PairError::BadMessage)?;
    if bytes.len() == len {
        Ok(bytes)
    } else {
        Err(PairError::BadMessage)
    }
}

/// The two SPAKE2 identities, both bound to the TLS session.
fn identities(exporter: &[u8; 32]) -> (Identity, Identity) {
    let id = |role: &[u8]| {
        let mut v = PROTOCOL.to_vec();
        v.extend_from_slice(role);
        v.extend_from_slice(exporter);
        Identity::new(&v)
    };
    (id(b" client "), id(b" server "))
}

/// The confirmation MACs (client's, server's) over the whole transcript.
fn confirmations(
    key: &[u8],
    exporter: &[u8; 32],
    msg_a: &[u8],
    msg_b: &[u8],
) -> Result<(Hmac<Sha256>, Hmac<Sha256>), PairError> {
    let hkdf = hkdf::Hkdf::<Sha256>::new(Some(exporter), key);
    let mac_for = |role: &[u8]| -> Result<Hmac<Sha256>, PairError> {
        let mut info = PROTOCOL.to_vec();
        info.extend_from_slice(role);
        let mut k = [0u8; 32];
        hkdf.expand(&info, &mut k)
            .map_err(|_| PairError::BadMessage)?;
        let mut mac =
            <Hmac<Sha256> as hmac::Mac>::new_from_slice(&k).map_err(|_| PairError::BadMessage)?;
        // The messages have fixed lengths (checked before), so plain concatenation is unambiguous.
        mac.update(role);
        mac.update(msg_a);
        mac.update(msg_b);
        mac.update(exporter);
        Ok(mac)
    };
    Ok((mac_for(b" client confirm")?, mac_for(b" server confirm")?))
}

/// The client's half of an exchange in progress.
pub struct ClientPairing {
    spake: Spake2<Ed25519Group>,
    msg_a: Vec<u8>,
    exporter: [u8; 32],
}

impl fmt::Debug for ClientPairing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientPairing").finish_non_exhaustive()
    }
}

impl ClientPairing {
    /// Starts an exchange for `code` in the TLS session whose exporter value is `exporter`;
    /// returns the state and the message `A` to send.
    #[must_use]
    pub fn start(code: &PairCode, exporter: &[u8; 32]) -> (Self, Vec<u8>) {
        let (id_a, id_b) = identities(exporter);
        let (spake, msg_a) = Spake2::<Ed25519Group>::start_a(&code.password(), &id_a, &id_b);
        (
            Self {
                spake,
                msg_a: msg_a.clone(),
                exporter: *exporter,
            },
            msg_a,
        )
    }

    /// Checks the server's reply (`B` and its MAC); on success returns the client's MAC to send.
    /// Only then may the client pin the key of this TLS session.
    ///
    /// # Errors
    /// [`PairError::BadMessage`]; [`PairError::Mismatch`] for a wrong code or a relay.
    pub fn finish(self, msg_b: &[u8], server_confirm: &[u8]) -> Result<Vec<u8>, PairError> {
        if msg_b.len() != MESSAGE_LEN || server_confirm.len() != CONFIRM_LEN {
            return Err(PairError::BadMessage);
        }
        let key = self
            .spake
            .finish(msg_b)
            .map_err(|_| PairError::BadMessage)?;
        let (client, server) = confirmations(&key, &self.exporter, &self.msg_a, msg_b)?;
        server
            .verify_slice(server_confirm)
            .map_err(|_| PairError::Mismatch)?;
        Ok(client.finalize().into_bytes().to_vec())
    }
}

/// The server's half of an exchange in progress.
pub struct ServerPairing {
    client_confirm: Hmac<Sha256>,
}

impl fmt::Debug for ServerPairing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerPairing").finish_non_exhaustive()
    }
}

impl ServerPairing {
    /// Answers the client's message `A` for `code` in the TLS session with `exporter`; returns
    /// the state, the message `B` and the server's MAC to send.
    ///
    /// # Errors
    /// [`PairError::BadMessage`] when `A` is malformed.
    pub fn respond(
        code: &PairCode,
        exporter: &[u8; 32],
        msg_a: &[u8],
    ) -> Result<(Self, Vec<u8>, Vec<u8>), PairError> {
        if msg_a.len() != MESSAGE_LEN {
            return Err(PairError::BadMessage);
        }
        let (id_a, id_b) = identities(exporter);
        let (spake, msg_b) = Spake2::<Ed25519Group>::start_b(&code.password(), &id_a, &id_b);
        let key = spake.finish(msg_a).map_err(|_| PairError::BadMessage)?;
        let (client, server) = confirmations(&key, exporter, msg_a, &msg_b)?;
        let server_confirm = server.finalize().into_bytes().to_vec();
        Ok((
            Self {
                client_confirm: client,
            },
            msg_b,
            server_confirm,
        ))
    }

    /// Checks the client's MAC; only on success may the server hand out a token.
    ///
    /// # Errors
    /// [`PairError::Mismatch`] for a wrong code or a relay.
    pub fn verify(self, client_confirm: &[u8]) -> Result<(), PairError> {
        self.client_confirm
            .verify_slice(client_confirm)
            .map_err(|_| PairError::Mismatch)
    }
}

#[derive(Debug)]
struct Slot<G> {
    code: PairCode,
    tries_left: u32,
    expires: Instant,
    used: Arc<AtomicBool>,
    grant: G,
}

/// One started exchange: the code to run it with, and what a success grants.
#[derive(Debug)]
pub struct Attempt<G> {
    /// The code (give it to [`ServerPairing::respond`]).
    pub code: PairCode,
    used: Arc<AtomicBool>,
    grant: G,
}

impl<G> Attempt<G> {
    /// Marks the code used after [`ServerPairing::verify`] succeeded, and returns the grant (for
    /// example the permissions of the token to create). A code grants once.
    ///
    /// # Errors
    /// [`PairError::CodeUsed`] if another exchange with this code already succeeded.
    pub fn complete(self) -> Result<G, PairError> {
        if self.used.swap(true, Ordering::SeqCst) {
            return Err(PairError::CodeUsed);
        }
        Ok(self.grant)
    }
}

/// The server's active codes, each with its tries left and what it grants.
#[derive(Debug)]
pub struct PairingCodes<G> {
    slots: Mutex<HashMap<u16, Slot<G>>>,
}

impl<G> Default for PairingCodes<G> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<G: Clone> PairingCodes<G> {
    /// Issues a code valid for `lifetime` from `now` that grants `grant`; show it to the user.
    ///
    /// # Errors
    /// [`PairError::Full`] with [`MAX_ACTIVE_CODES`] active codes; [`PairError::Random`].
    pub fn issue(&self, grant: G, lifetime: Duration, now: Instant) -> Result<PairCode, PairError> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|_, s| s.expires > now && !s.used.load(Ordering::SeqCst));
        if slots.len() >= MAX_ACTIVE_CODES {
            return Err(PairError::Full);
        }
        let code = PairCode::generate(|n| slots.contains_key(&n))?;
        let slot = Slot {
            code: code.clone(),
            tries_left: MAX_TRIES,
            expires: now + lifetime,
            used: Arc::new(AtomicBool::new(false)),
            grant,
        };
        slots.insert(code.nameplate, slot);
        Ok(code)
    }

    /// Starts an exchange for the code numbered `nameplate`, spending one of its tries first (so
    /// that an attacker who drops the connection still pays); the last try burns the code.
    ///
    /// # Errors
    /// [`PairError::UnknownCode`] if no such code is active.
    pub fn attempt(&self, nameplate: u16, now: Instant) -> Result<Attempt<G>, PairError> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = slots.get_mut(&nameplate).ok_or(PairError::UnknownCode)?;
        if slot.expires <= now || slot.used.load(Ordering::SeqCst) || slot.tries_left == 0 {
            slots.remove(&nameplate);
            return Err(PairError::UnknownCode);
        }
        slot.tries_left -= 1;
        let attempt = Attempt {
            code: slot.code.clone(),
            used: Arc::clone(&slot.used),
            grant: slot.grant.clone(),
        };
        if slot.tries_left == 0 {
            slots.remove(&nameplate);
        }
        Ok(attempt)
    }

    /// Withdraws a code before it is used (e.g. `barge serve --pair` stopped waiting).
    pub fn cancel(&self, nameplate: u16) -> bool {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&nameplate)
            .is_some()
    }
}

#[cfg(test)]
mod tests;
