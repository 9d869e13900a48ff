//! The agent registration secret, encrypted the way the platform's reader decrypts it
//! (openframe.md §12): Spring Security `Encryptors.text(password, salt)`.
//!
//! That is: key = PBKDF2-HMAC-SHA1(password as UTF-8, salt = hex-decoded, 1024 iterations,
//! 256 bits); AES-256-CBC with PKCS#5 padding and a random 16-byte IV; output
//! `hex(iv ‖ ciphertext)`. There is no MAC (the upstream comment claiming one is wrong).

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use rand::RngCore;

const ITERATIONS: u32 = 1024;
const IV_LEN: usize = 16;

type Enc = cbc::Encryptor<aes::Aes256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the encryption salt must be hex (security.encryption.salt), at least 16 characters")]
    Salt,
    #[error(
        "the encryption password must be at least 32 characters (security.encryption.password)"
    )]
    Password,
}

/// The password and salt the platform reads as `security.encryption.{password,salt}`.
#[derive(Clone)]
pub struct EncryptionKey {
    key: [u8; 32],
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(..)")
    }
}

impl EncryptionKey {
    /// Derives the AES key. The length rules are the platform's own (openframe.md §12), so a
    /// secret ofctl writes is one the platform accepts.
    pub fn derive(password: &str, salt_hex: &str) -> Result<Self, CryptoError> {
        if password.chars().count() < 32 {
            return Err(CryptoError::Password);
        }
        if salt_hex.len() < 16 {
            return Err(CryptoError::Salt);
        }
        let salt = hex::decode(salt_hex).map_err(|_| CryptoError::Salt)?;
        let mut key = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password.as_bytes(), &salt, ITERATIONS, &mut key);
        Ok(Self { key })
    }

    pub fn encrypt(&self, plaintext: &str) -> String {
        let mut iv = [0u8; IV_LEN];
        rand::rngs::OsRng.fill_bytes(&mut iv);
        self.encrypt_with_iv(plaintext, iv)
    }

    fn encrypt_with_iv(&self, plaintext: &str, iv: [u8; IV_LEN]) -> String {
        let ciphertext = Enc::new(&self.key.into(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext.as_bytes());
        let mut out = Vec::with_capacity(IV_LEN + ciphertext.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ciphertext);
        hex::encode(out)
    }
}

/// A new registration secret: 24 random bytes as URL-safe Base64 with padding (JDK
/// `Base64.getUrlEncoder()`), 32 characters.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockDecryptMut;

    /// The platform's reader side (`Encryptors.text(...).decrypt`), for round trips here; the
    /// integration tests decrypt with Python's `cryptography` as well.
    fn decrypt(key: &EncryptionKey, stored: &str) -> Option<String> {
        let bytes = hex::decode(stored).ok()?;
        let (iv, ciphertext) = bytes.split_at_checked(IV_LEN)?;
        let iv: [u8; IV_LEN] = iv.try_into().ok()?;
        let plain = cbc::Decryptor::<aes::Aes256>::new(&key.key.into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
            .ok()?;
        String::from_utf8(plain).ok()
    }

    const PASSWORD: &str = "a-dev-password-that-is-32-chars-long";
    const SALT: &str = "5c0744940b5c369b";

    #[test]
    fn round_trips_and_uses_a_fresh_iv() {
        let key = EncryptionKey::derive(PASSWORD, SALT).unwrap();
        let secret = generate_secret();
        assert_eq!(secret.len(), 32);
        assert!(secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        let a = key.encrypt(&secret);
        let b = key.encrypt(&secret);
        assert_ne!(a, b, "each encryption draws a new IV");
        // 16-byte IV + 48 bytes (32 characters padded to three blocks), hex.
        assert_eq!(a.len(), 2 * (16 + 48));
        assert_eq!(decrypt(&key, &a).unwrap(), secret);
        let other = EncryptionKey::derive(&format!("{PASSWORD}x"), SALT).unwrap();
        assert_ne!(decrypt(&other, &a), Some(secret));
    }

    #[test]
    fn known_vector() {
        // Computed independently with Python `cryptography` (PBKDF2HMAC(SHA1, 32, salt,
        // 1024) and AES-CBC/PKCS7) for a fixed IV of 16 zero bytes.
        let key = EncryptionKey::derive(PASSWORD, SALT).unwrap();
        let out = key.encrypt_with_iv("hello", [0u8; 16]);
        assert_eq!(&out[..32], "00000000000000000000000000000000");
        assert_eq!(out, KNOWN);
    }

    const KNOWN: &str = "00000000000000000000000000000000f07c3c9116d3a0c2e3e1076aad60993d";

    #[test]
    fn rejects_weak_settings() {
        assert_eq!(
            EncryptionKey::derive("short", SALT).unwrap_err(),
            CryptoError::Password
        );
        assert_eq!(
            EncryptionKey::derive(PASSWORD, "zz").unwrap_err(),
            CryptoError::Salt
        );
        assert_eq!(
            EncryptionKey::derive(PASSWORD, "not-hex-not-hex-!").unwrap_err(),
            CryptoError::Salt
        );
    }
}
