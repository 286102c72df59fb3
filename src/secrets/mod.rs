//! Secrets: the encryption key, the vault (encrypted storage with an audit trail) and the credential
//! detector shared with log redaction and state validation.
//!
//! A secret value leaves this module only through one explicit call ([`key::EncryptionKey`] never
//! prints itself); it never goes into a log line, an error message or a plan.

pub mod crypto;
pub mod detector;
pub mod key;
pub mod legacy;
pub mod path;
pub mod scan;
pub mod vault;

/// Where providers get credentials they need (the Cloudflare API token, the Google service account),
/// by vault path. The vault implements it; every read is audited under `actor`.
#[async_trait::async_trait]
pub trait SecretSource: Send + Sync {
    async fn read_secret(
        &self,
        path: &str,
        actor: &str,
    ) -> Result<secrecy::SecretString, SecretSourceError>;
}

/// Why a credential could not be read. Never contains the value.
#[derive(Debug, thiserror::Error)]
#[error("cannot read secret {path}: {reason}")]
pub struct SecretSourceError {
    pub path: String,
    pub reason: String,
}
