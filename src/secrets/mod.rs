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

/// Where providers put secrets they create (the key string of a Google API key), by vault path. The
/// vault implements it; every write and delete is audited under `actor` (the apply run). The value
/// goes from the provider's API client straight into the vault: it is never planned, journaled,
/// logged or put in an error.
#[async_trait::async_trait]
pub trait SecretSink: Send + Sync {
    /// Stores `value` at `path` (creating or replacing it), with a description for `secrets list`.
    async fn write_secret(
        &self,
        path: &str,
        value: &secrecy::SecretString,
        description: &str,
        actor: &str,
    ) -> Result<(), SecretSinkError>;

    /// Deletes the secret at `path`; `Ok(false)` when there was none.
    async fn delete_secret(&self, path: &str, actor: &str) -> Result<bool, SecretSinkError>;

    /// Whether a secret is stored at `path` (metadata only: nothing is decrypted).
    async fn secret_exists(&self, path: &str, actor: &str) -> Result<bool, SecretSinkError>;
}

/// Why a secret could not be written, deleted or looked up. Never contains the value.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} secret {path}: {reason}")]
pub struct SecretSinkError {
    pub path: String,
    /// `store`, `delete` or `look up`.
    pub action: &'static str,
    pub reason: String,
}
