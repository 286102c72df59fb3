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
