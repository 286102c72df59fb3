//! The sealed format of a secret value, and the decoder for the original service's layout.
//!
//! **Sealed** (what the vault writes):
//!
//! ```text
//! ┌──────────────┬──────────────────┬─────────────────────────────┐
//! │ key version  │ nonce (12 bytes, │ AES-256-GCM ciphertext ‖    │
//! │ (1 byte)     │ random per write)│ 16-byte tag                 │
//! └──────────────┴──────────────────┴─────────────────────────────┘
//! associated data = "supervisor secret v1\0" ‖ key version ‖ secret path
//! ```
//!
//! The path is bound as associated data, so a ciphertext copied onto another path (or two rows'
//! ciphertexts swapped) fails authentication; the version byte is bound too, so it cannot be altered to
//! make a ciphertext look as if it belonged to another key generation. Any single changed bit anywhere
//! is detected by the tag.
//!
//! **Legacy** (read only, for `secrets import-legacy`): the original service stored
//! `IV (16 bytes) ‖ tag (16 bytes) ‖ ciphertext`, AES-256-GCM with a 16-byte IV and no associated data.
//! GCM with a non-96-bit IV derives its counter block through GHASH (NIST SP 800-38D §7.1), which
//! `AesGcm<Aes256, U16>` implements.
//!
//! Decryption returns plaintext only in zeroizing memory; errors never carry plaintext or key bytes.

use aes_gcm::aead::array::typenum::U16;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{Aes256Gcm, AesGcm, Nonce};
use rand::TryRngCore;
use zeroize::Zeroizing;

use super::key::EncryptionKey;

/// Domain separation for the associated data: no other use of the key can produce a valid tag here.
const AAD_DOMAIN: &[u8] = b"supervisor secret v1\0";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Version byte + nonce + tag: a sealed empty value.
pub const SEALED_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

const LEGACY_IV_LEN: usize = 16;
const LEGACY_HEADER: usize = LEGACY_IV_LEN + TAG_LEN;

type LegacyAesGcm = AesGcm<Aes256, U16>;

/// Why a ciphertext could not be opened. Deliberately coarse: authentication failure cannot tell a
/// wrong key from altered bytes, and must not pretend to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the ciphertext is {len} bytes, shorter than the {min}-byte minimum of its format")]
    Truncated { len: usize, min: usize },
    #[error("key version 0 is not a valid version (versions start at 1)")]
    BadVersion,
    #[error("authentication failed: the key is wrong, or the ciphertext was altered or moved")]
    Authentication,
    #[error("the decrypted value is not valid UTF-8")]
    NotUtf8,
    #[error("the operating system's random number generator failed")]
    Random,
}

fn aad(version: u8, path: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 1 + path.len());
    aad.extend_from_slice(AAD_DOMAIN);
    aad.push(version);
    aad.extend_from_slice(path.as_bytes());
    aad
}

fn cipher(key: &EncryptionKey) -> Aes256Gcm {
    Aes256Gcm::new(key.bytes().into())
}

/// Encrypts `plaintext` for `path` under `key` (of generation `version`), with a fresh random nonce.
pub fn seal(
    key: &EncryptionKey,
    version: u8,
    path: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if version == 0 {
        return Err(CryptoError::BadVersion);
    }
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(|_| CryptoError::Random)?;
    seal_with_nonce(key, version, path, plaintext, nonce)
}

fn seal_with_nonce(
    key: &EncryptionKey,
    version: u8,
    path: &str,
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>, CryptoError> {
    let aad = aad(version, path);
    let body = cipher(key)
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        // Only possible beyond GCM's 64 GiB message limit.
        .map_err(|_| CryptoError::Authentication)?;
    let mut sealed = Vec::with_capacity(1 + NONCE_LEN + body.len());
    sealed.push(version);
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&body);
    Ok(sealed)
}

/// The key version a sealed value claims (its first byte), without opening it.
pub fn sealed_version(sealed: &[u8]) -> Option<u8> {
    sealed.first().copied()
}

/// Decrypts a sealed value stored at `path`.
pub fn open(
    key: &EncryptionKey,
    path: &str,
    sealed: &[u8],
) -> Result<Zeroizing<String>, CryptoError> {
    if sealed.len() < SEALED_OVERHEAD {
        return Err(CryptoError::Truncated {
            len: sealed.len(),
            min: SEALED_OVERHEAD,
        });
    }
    let version = sealed[0];
    if version == 0 {
        return Err(CryptoError::BadVersion);
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[1..1 + NONCE_LEN]);
    let aad = aad(version, path);
    let plain = cipher(key)
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &sealed[1 + NONCE_LEN..],
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Authentication)?;
    utf8(plain)
}

/// Decrypts a value in the original service's layout: `IV(16) ‖ tag(16) ‖ ciphertext`, no associated
/// data.
pub fn open_legacy(key: &EncryptionKey, stored: &[u8]) -> Result<Zeroizing<String>, CryptoError> {
    if stored.len() < LEGACY_HEADER {
        return Err(CryptoError::Truncated {
            len: stored.len(),
            min: LEGACY_HEADER,
        });
    }
    let mut iv = [0u8; LEGACY_IV_LEN];
    iv.copy_from_slice(&stored[..LEGACY_IV_LEN]);
    // The aead API takes ciphertext ‖ tag; the legacy layout puts the tag first.
    let mut body = Vec::with_capacity(stored.len() - LEGACY_IV_LEN);
    body.extend_from_slice(&stored[LEGACY_HEADER..]);
    body.extend_from_slice(&stored[LEGACY_IV_LEN..LEGACY_HEADER]);
    let plain = LegacyAesGcm::new(key.bytes().into())
        .decrypt(&Nonce::from(iv), body.as_slice())
        .map_err(|_| CryptoError::Authentication)?;
    utf8(plain)
}

fn utf8(plain: Vec<u8>) -> Result<Zeroizing<String>, CryptoError> {
    match String::from_utf8(plain) {
        Ok(s) => Ok(Zeroizing::new(s)),
        Err(e) => {
            // Wipe the rejected bytes before they are freed.
            drop(Zeroizing::new(e.into_bytes()));
            Err(CryptoError::NotUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::secrets::key::KeySource;

    fn key(byte: u8) -> EncryptionKey {
        EncryptionKey::from_hex(&hex::encode([byte; 32]), KeySource::Env).unwrap()
    }

    fn counting_key() -> EncryptionKey {
        let bytes: Vec<u8> = (0u8..32).collect();
        EncryptionKey::from_hex(&hex::encode(bytes), KeySource::Env).unwrap()
    }

    #[test]
    fn layout_is_version_nonce_body_tag() {
        let k = key(7);
        let sealed = seal(&k, 3, "meta/x", b"hello").unwrap();
        assert_eq!(sealed.len(), SEALED_OVERHEAD + 5);
        assert_eq!(sealed_version(&sealed), Some(3));
        assert_eq!(open(&k, "meta/x", &sealed).unwrap().as_str(), "hello");
        // A fresh nonce per write: the same value never seals to the same bytes.
        let again = seal(&k, 3, "meta/x", b"hello").unwrap();
        assert_ne!(sealed[1..13], again[1..13]);
        assert_ne!(sealed, again);
    }

    #[test]
    fn known_answer_matches_an_independent_implementation() {
        // Computed with Python's `cryptography` (AESGCM): key 00..1f, nonce c8..d3,
        // aad "supervisor secret v1\0" ‖ 0x01 ‖ "meta/x".
        let nonce: [u8; 12] = core::array::from_fn(|i| 200 + i as u8);
        let sealed = seal_with_nonce(&counting_key(), 1, "meta/x", b"kat value", nonce).unwrap();
        assert_eq!(
            hex::encode(&sealed[13..]),
            "7a1915fbf0ad97551135201a08011b9748c45ebebd3f352ade"
        );
        assert_eq!(
            open(&counting_key(), "meta/x", &sealed).unwrap().as_str(),
            "kat value"
        );
    }

    #[test]
    fn legacy_layout_known_answer() {
        // Node's crypto (the original service) and Python's `cryptography` agree on this: key 00..1f,
        // IV 64..73, value "legacy fake value 123", stored as IV ‖ tag ‖ ciphertext.
        let stored = hex::decode(
            "6465666768696a6b6c6d6e6f70717273d49a2dac3fbc44f7b8424e288f48d2de\
             b4d62430876d07bed392c8a931b680103f5169f2af",
        )
        .unwrap();
        assert_eq!(
            open_legacy(&counting_key(), &stored).unwrap().as_str(),
            "legacy fake value 123"
        );
        let mut tampered = stored.clone();
        tampered[40] ^= 1;
        assert_eq!(
            open_legacy(&counting_key(), &tampered),
            Err(CryptoError::Authentication)
        );
        assert_eq!(
            open_legacy(&key(1), &stored),
            Err(CryptoError::Authentication)
        );
        assert_eq!(
            open_legacy(&counting_key(), &stored[..20]),
            Err(CryptoError::Truncated { len: 20, min: 32 })
        );
    }

    #[test]
    fn path_and_version_are_bound() {
        let k = key(9);
        let sealed = seal(&k, 1, "project/a/token", b"v").unwrap();
        assert_eq!(
            open(&k, "project/b/token", &sealed),
            Err(CryptoError::Authentication)
        );
        let mut other_version = sealed.clone();
        other_version[0] = 2;
        assert_eq!(
            open(&k, "project/a/token", &other_version),
            Err(CryptoError::Authentication)
        );
        let mut zero = sealed.clone();
        zero[0] = 0;
        assert_eq!(
            open(&k, "project/a/token", &zero),
            Err(CryptoError::BadVersion)
        );
        assert_eq!(
            open(&key(10), "project/a/token", &sealed),
            Err(CryptoError::Authentication)
        );
        assert!(matches!(
            open(&k, "project/a/token", &sealed[..10]),
            Err(CryptoError::Truncated { .. })
        ));
        assert_eq!(seal(&k, 0, "meta/x", b"v"), Err(CryptoError::BadVersion));
    }

    #[test]
    fn errors_never_contain_the_value() {
        let k = key(3);
        let mut sealed = seal(&k, 1, "meta/x", b"fake-value-4711").unwrap();
        sealed[20] ^= 0x80;
        let err = open(&k, "meta/x", &sealed).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("4711"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn encrypt_then_decrypt_is_identity(
            value in ".{0,300}",
            path in "[a-z0-9_]{1,20}",
            version in 1u8..=255,
            key_byte in any::<u8>(),
        ) {
            let k = key(key_byte);
            let path = format!("meta/{path}");
            let sealed = seal(&k, version, &path, value.as_bytes()).unwrap();
            let opened = open(&k, &path, &sealed).unwrap();
            prop_assert_eq!(opened.as_str(), value.as_str());
        }

        #[test]
        fn any_single_bit_flip_is_detected(
            value in ".{0,64}",
            bit in any::<prop::sample::Index>(),
        ) {
            let k = key(42);
            let sealed = seal(&k, 1, "meta/x", value.as_bytes()).unwrap();
            let i = bit.index(sealed.len() * 8);
            let mut flipped = sealed.clone();
            flipped[i / 8] ^= 1 << (i % 8);
            prop_assert!(open(&k, "meta/x", &flipped).is_err(), "bit {} not detected", i);
        }

        #[test]
        fn legacy_round_trip_through_an_encoder_of_that_layout(value in ".{0,100}", iv in any::<[u8; 16]>()) {
            let k = key(5);
            let ct = LegacyAesGcm::new(k.bytes().into())
                .encrypt(&Nonce::from(iv), value.as_bytes())
                .unwrap();
            let (body, tag) = ct.split_at(ct.len() - TAG_LEN);
            let stored = [&iv[..], tag, body].concat();
            let opened = open_legacy(&k, &stored).unwrap();
            prop_assert_eq!(opened.as_str(), value.as_str());
        }
    }
}
