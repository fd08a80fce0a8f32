//! Secrets: Argon2id password hashes, the site key's authenticated encryption, random tokens.

use crate::error::{Error, Result};
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::Rng;

/// Encrypts and decrypts Password field values with the site's key (AES-256-GCM).
#[derive(Clone)]
pub struct Cipher {
    aead: Aes256Gcm,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

impl Cipher {
    /// A fresh random key, base64-encoded, for `site_config.json`.
    pub fn generate_key() -> String {
        let key: [u8; 32] = rand::thread_rng().gen();
        B64.encode(key)
    }

    /// The cipher for a base64 key.
    pub fn from_key(key_b64: &str) -> Result<Cipher> {
        let key = B64
            .decode(key_b64.trim())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                Error::Validation(
                    "encryption_key in site_config.json must be 32 bytes of base64".into(),
                )
            })?;
        let aead =
            Aes256Gcm::new_from_slice(&key).map_err(|_| Error::Internal("bad key".into()))?;
        Ok(Cipher { aead })
    }

    /// Encrypts a secret; the output holds a random nonce.
    pub fn encrypt(&self, plain: &str) -> String {
        let nonce: [u8; 12] = rand::thread_rng().gen();
        let ct = self
            .aead
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .expect("AES-GCM encryption of a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend(ct);
        B64.encode(out)
    }

    /// Decrypts what [`Cipher::encrypt`] made.
    pub fn decrypt(&self, stored: &str) -> Result<String> {
        let raw = B64
            .decode(stored)
            .map_err(|_| Error::Internal("stored secret is not base64".into()))?;
        if raw.len() < 13 {
            return Err(Error::Internal("stored secret is too short".into()));
        }
        let plain = self
            .aead
            .decrypt(Nonce::from_slice(&raw[..12]), &raw[12..])
            .map_err(|_| {
                Error::Internal("stored secret cannot be decrypted with this site's key".into())
            })?;
        String::from_utf8(plain).map_err(|_| Error::Internal("stored secret is not UTF-8".into()))
    }
}

/// Hashes a login password with Argon2id.
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut rand::thread_rng());
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("cannot hash password: {e}")))
}

/// A hash of a password nobody knows, made once: checked against when a login names an
/// unknown user, so that answer takes as long as a wrong password.
pub fn decoy_password_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_token(24)).unwrap_or_default())
}

/// Checks a login password against its Argon2 hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A random string of lowercase letters and digits.
pub fn random_token(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// Constant-time equality of two secrets.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// SHA-256 hex digest, to store session ids without keeping them in clear.
pub fn digest(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(s.as_bytes()))
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stable 64-bit key for a PostgreSQL advisory lock on `key` within `scope`.
pub fn lock_key(scope: &str, key: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("docstream-{scope}:{key}").as_bytes());
    i64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypts_round_trip_and_hashes() {
        let c = Cipher::from_key(&Cipher::generate_key()).unwrap();
        let e = c.encrypt("s3cret");
        assert_ne!(e, "s3cret");
        assert_eq!(c.decrypt(&e).unwrap(), "s3cret");
        let other = Cipher::from_key(&Cipher::generate_key()).unwrap();
        assert!(other.decrypt(&e).is_err());
        let h = hash_password("pw").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("pw", &h) && !verify_password("px", &h));
    }
}
