//! The server's identity: a private key kept in the state folder, a self-signed certificate made
//! from it, and the key's fingerprint that clients pin.
//!
//! Threats: someone else on the network posing as this server (answered by clients pinning the
//! [`Fingerprint`]); another local user reading the private key (the key file is created 0600 from
//! its first byte and refused at load when its group or others can access it); a fingerprint that
//! changes at every certificate renewal and so trains users to accept changes (the fingerprint is
//! the SHA-256 of the certificate's SubjectPublicKeyInfo, so it depends on the key only; the
//! certificate is in fact re-made from the key at every start).
//!
//! Not here: TLS configuration ([`super::tls`]) and where clients keep their pins
//! ([`super::known_hosts`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest as _, Sha256};

use super::files::{self, FileError};

/// The private key's file name inside the state folder.
pub const KEY_FILE: &str = "identity.key";
/// A PEM private key is far below this; anything larger is not ours.
const KEY_FILE_LIMIT: u64 = 64 * 1024;
/// The prefix of the text form of a fingerprint (as ssh shows host keys).
const FINGERPRINT_PREFIX: &str = "SHA256:";

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file is unusable (too open, not a regular file, unreadable).
    #[error("the server's private key: {0}")]
    File(#[from] FileError),
    /// The key file does not hold a PEM private key of a supported kind.
    #[error("`{}` does not hold a usable private key: {source}", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: rcgen::Error,
    },
    /// Generating a key or a certificate failed.
    #[error("creating the server's identity: {0}")]
    Generate(#[source] rcgen::Error),
    /// A certificate could not be parsed to find its public key.
    #[error("the certificate cannot be parsed: {0}")]
    BadCertificate(String),
}

/// Why a text is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    /// The text does not start with `SHA256:`.
    #[error("a fingerprint starts with `SHA256:`")]
    Prefix,
    /// The part after `SHA256:` is not 32 bytes in unpadded base64.
    #[error("a fingerprint is `SHA256:` followed by 43 base64 characters")]
    Encoding,
}

/// The SHA-256 of a server's SubjectPublicKeyInfo; shown as `SHA256:<base64 without padding>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded SubjectPublicKeyInfo.
    #[must_use]
    pub fn of_spki(spki_der: &[u8]) -> Self {
        Self(Sha256::digest(spki_der).into())
    }

    /// The fingerprint of the public key inside a DER certificate.
    ///
    /// # Errors
    /// [`IdentityError::BadCertificate`] when the certificate cannot be parsed.
    pub fn of_certificate(cert: &CertificateDer<'_>) -> Result<Self, IdentityError> {
        let parsed = webpki::EndEntityCert::try_from(cert)
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        Ok(Self::of_spki(parsed.subject_public_key_info().as_ref()))
    }

    /// The raw 32 bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{FINGERPRINT_PREFIX}{}", STANDARD_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// Parses `SHA256:<base64>`; padding (`=`) is tolerated, as some tools print it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b64 = s
            .strip_prefix(FINGERPRINT_PREFIX)
            .ok_or(FingerprintError::Prefix)?;
        let b64 = b64.strip_suffix('=').unwrap_or(b64);
        let bytes = STANDARD_NO_PAD
            .decode(b64)
            .map_err(|_| FingerprintError::Encoding)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| FingerprintError::Encoding)?;
        Ok(Self(bytes))
    }
}

/// A server identity: private key, certificate and fingerprint.
pub struct Identity {
    key: PrivatePkcs8KeyDer<'static>,
    certificate: CertificateDer<'static>,
    fingerprint: Fingerprint,
}

impl fmt::Debug for Identity {
    /// Never shows the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh identity kept only in memory (tests, or a throw-away server).
    ///
    /// # Errors
    /// [`IdentityError::Generate`] if the key or certificate cannot be made.
    pub fn generate() -> Result<Self, IdentityError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(IdentityError::Generate)?;
        Self::from_key(&key)
    }

    /// Loads the identity from `state_dir`, creating it on first use; `true` when it was created.
    ///
    /// The key is written to a 0600 temporary file and linked into place only if no key exists,
    /// so two servers starting at once end up with the same key.
    ///
    /// # Errors
    /// The key file is unreadable, open to others, or not a key; or the folder is not writable.
    pub fn load_or_create(state_dir: &Path) -> Result<(Self, bool), IdentityError> {
        if let Some(identity) = Self::load(state_dir)? {
            return Ok((identity, false));
        }
        files::create_private_dir(state_dir)?;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(IdentityError::Generate)?;
        let path = state_dir.join(KEY_FILE);
        if files::write_new(&path, key.serialize_pem().as_bytes())? {
            return Ok((Self::from_key(&key)?, true));
        }
        // Another process created the key between our load and our write: use its key.
        let identity = Self::load(state_dir)?.ok_or(FileError::NotRegular(path))?;
        Ok((identity, false))
    }

    /// Loads the identity from `state_dir`; `None` when it has none yet (nothing is created).
    ///
    /// # Errors
    /// As [`Identity::load_or_create`].
    pub fn load(state_dir: &Path) -> Result<Option<Self>, IdentityError> {
        let path = state_dir.join(KEY_FILE);
        let Some((bytes, _)) = files::read_private(&path, KEY_FILE_LIMIT)? else {
            return Ok(None);
        };
        let bad = |source| IdentityError::BadKey {
            path: path.clone(),
            source,
        };
        let pem = String::from_utf8(bytes).map_err(|_| bad(rcgen::Error::CouldNotParseKeyPair))?;
        let key = rcgen::KeyPair::from_pem(&pem).map_err(bad)?;
        Self::from_key(&key).map(Some)
    }

    fn from_key(key: &rcgen::KeyPair) -> Result<Self, IdentityError> {
        let mut params = rcgen::CertificateParams::new(vec!["barge".to_owned()])
            .map_err(IdentityError::Generate)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "barge server");
        let cert = params.self_signed(key).map_err(IdentityError::Generate)?;
        let certificate = cert.der().clone();
        let fingerprint = Fingerprint::of_certificate(&certificate)?;
        Ok(Self {
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            certificate,
            fingerprint,
        })
    }

    /// The fingerprint clients pin.
    #[must_use]
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The self-signed certificate (DER).
    #[must_use]
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// A copy of the private key for a TLS configuration.
    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

    #[test]
    fn fingerprint_text_round_trips_and_bad_forms_are_refused() -> Result {
        let fp = Fingerprint::of_spki(b"some key");
        let text = fp.to_string();
        assert!(text.starts_with("SHA256:"));
        assert_eq!(text.len(), 7 + 43, "43 base64 characters, no padding");
        assert_eq!(text.parse::<Fingerprint>()?, fp);
        assert_eq!(format!("{text}=").parse::<Fingerprint>()?, fp);
        assert_eq!(
            "MD5:abc".parse::<Fingerprint>(),
            Err(FingerprintError::Prefix)
        );
        assert_eq!(
            text[..text.len() - 1].parse::<Fingerprint>(),
            Err(FingerprintError::Encoding)
        );
        assert_eq!(
            format!("{text}AAAA").parse::<Fingerprint>(),
            Err(FingerprintError::Encoding)
        );
        assert_eq!(
            "SHA256:!!!".parse::<Fingerprint>(),
            Err(FingerprintError::Encoding)
        );
        Ok(())
    }

    #[test]
    fn identity_is_created_private_and_reused() -> Result {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");
        let (first, created) = Identity::load_or_create(&state)?;
        assert!(created);
        let meta = std::fs::metadata(state.join(KEY_FILE))?;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(&state)?.permissions().mode() & 0o777,
            0o700
        );
        let (second, created) = Identity::load_or_create(&state)?;
        assert!(!created);
        assert_eq!(
            first.fingerprint(),
            second.fingerprint(),
            "the key is reused"
        );
        // The certificate is re-made (a new signature) but the fingerprint is the key's.
        assert_eq!(
            Fingerprint::of_certificate(second.certificate())?,
            first.fingerprint()
        );
        let other = Identity::generate()?;
        assert_ne!(other.fingerprint(), first.fingerprint());
        assert!(!format!("{first:?}").contains("PRIVATE"));
        Ok(())
    }

    #[test]
    fn a_key_readable_by_others_or_garbage_is_refused() -> Result {
        let dir = tempfile::tempdir()?;
        Identity::load_or_create(dir.path())?;
        let path = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        let err = Identity::load_or_create(dir.path())
            .err()
            .ok_or("accepted an open key")?;
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::write(&path, "not a key")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        assert!(matches!(
            Identity::load(dir.path()),
            Err(IdentityError::BadKey { .. })
        ));
        Ok(())
    }

    #[test]
    fn no_identity_is_created_by_load() -> Result {
        let dir = tempfile::tempdir()?;
        assert!(Identity::load(dir.path())?.is_none());
        assert!(!dir.path().join(KEY_FILE).exists());
        Ok(())
    }
}
