//! The vault's encryption key: 32 bytes, given as 64 hex characters in `SECRETS_ENCRYPTION_KEY` or in a
//! key file. The key is held in zeroizing memory and never printed (its `Debug` is redacted).

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

pub const KEY_ENV: &str = "SECRETS_ENCRYPTION_KEY";
/// The most a key file may hold.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Where the key came from, for messages (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env => write!(f, "the environment variable {KEY_ENV}"),
            KeySource::File(p) => write!(f, "the key file {}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no encryption key: set {KEY_ENV} to 64 hex characters (e.g. from `openssl rand -hex 32`) or pass --key-file"
    )]
    Missing,
    #[error(
        "the encryption key in {source_name} is malformed: {problem} (expected exactly 64 hex characters, i.e. 32 bytes)"
    )]
    Malformed {
        source_name: String,
        problem: String,
    },
    #[error("cannot read the key file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A 256-bit key; zeroed when dropped, never shown.
#[derive(Clone)]
pub struct EncryptionKey {
    bytes: Zeroizing<[u8; 32]>,
    source: KeySource,
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey(<redacted>, from {})", self.source)
    }
}

impl EncryptionKey {
    /// Parses 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(text: &str, source: KeySource) -> Result<Self, KeyError> {
        let text = text.trim();
        let malformed = |problem: String| KeyError::Malformed {
            source_name: source.to_string(),
            problem,
        };
        if text.len() != 64 {
            return Err(malformed(format!("it has {} characters", text.len())));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text, bytes.as_mut_slice())
            .map_err(|_| malformed("it contains characters that are not hex digits".into()))?;
        Ok(EncryptionKey { bytes, source })
    }

    /// Reads a key file: at most [`MAX_KEY_FILE_BYTES`] (a key file is 64 hex characters and perhaps a
    /// newline; `/dev/zero` or a wrong path to a large file is refused after a few kilobytes).
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        use std::io::Read;
        let unreadable = |source| KeyError::Unreadable {
            path: path.to_path_buf(),
            source,
        };
        let source = KeySource::File(path.to_path_buf());
        let malformed = |problem: String| KeyError::Malformed {
            source_name: source.to_string(),
            problem,
        };
        let file = std::fs::File::open(path).map_err(unreadable)?;
        // Allocated once, so no copy of the key is left behind by a reallocation.
        let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_BYTES as usize + 1));
        file.take(MAX_KEY_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
            return Err(malformed(format!(
                "the file is larger than {MAX_KEY_FILE_BYTES} bytes"
            )));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| malformed("it is not text".into()))?;
        Self::from_hex(text, source.clone())
    }

    /// The key from `--key-file`/configuration when given, else from `SECRETS_ENCRYPTION_KEY`.
    /// `Ok(None)` when neither is set.
    pub fn load(key_file: Option<&Path>) -> Result<Option<Self>, KeyError> {
        if let Some(path) = key_file {
            return Self::from_file(path).map(Some);
        }
        match std::env::var(KEY_ENV) {
            Ok(v) if !v.trim().is_empty() => {
                let v = Zeroizing::new(v);
                Self::from_hex(&v, KeySource::Env).map(Some)
            }
            _ => Ok(None),
        }
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// A short, non-secret identifier of the key (first 8 hex chars of SHA-256 over a domain-separated
    /// input), so users can tell two keys apart without revealing either.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"supervisor key fingerprint v1\0");
        h.update(self.bytes.as_slice());
        hex::encode(&h.finalize()[..4])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let k = EncryptionKey::from_hex(&"ab".repeat(32), KeySource::Env).unwrap();
        assert_eq!(k.bytes()[0], 0xab);
        assert!(!format!("{k:?}").contains("abab"));
        let short = EncryptionKey::from_hex("abcd", KeySource::Env)
            .unwrap_err()
            .to_string();
        assert!(short.contains("4 characters"), "{short}");
        let bad = EncryptionKey::from_hex(&"zz".repeat(32), KeySource::Env)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("not hex"), "{bad}");
        assert!(!bad.contains("zzzz"));
    }

    #[test]
    fn key_files_are_read_to_a_few_kilobytes_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.key");
        std::fs::write(&ok, format!("{}\n", "ab".repeat(32))).unwrap();
        assert_eq!(EncryptionKey::from_file(&ok).unwrap().bytes()[0], 0xab);
        let big = dir.path().join("big.key");
        std::fs::write(&big, "a".repeat(10_000)).unwrap();
        let err = EncryptionKey::from_file(&big).unwrap_err().to_string();
        assert!(
            err.contains("larger than 4096 bytes") && err.contains("big.key"),
            "{err}"
        );
        let endless = EncryptionKey::from_file(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(endless.contains("larger than"), "{endless}");
        let binary = dir.path().join("bin.key");
        std::fs::write(&binary, [0xff, 0xfe]).unwrap();
        let err = EncryptionKey::from_file(&binary).unwrap_err().to_string();
        assert!(err.contains("not text"), "{err}");
    }
}
