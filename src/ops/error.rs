//! The application layer's error: what failed, in the user's terms, with the typed cause kept so the
//! reconcile loop can choose its retry delay ([`OpsError::retry_hint`]).

use crate::engine::{EngineError, ProviderError, RetryHint};
use crate::secrets::vault::VaultError;
use crate::state::{self, edit::EditError};
use crate::store::StoreError;

use super::VisibilityError;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("the desired state is invalid:\n{0}")]
    Invalid(state::Diagnostics),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error(transparent)]
    Visibility(#[from] VisibilityError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// Secrets are needed but there is no usable vault (why, and how to fix it).
    #[error("secrets are unavailable: {0}")]
    NoVault(String),
    #[error("{0}")]
    NotFound(String),
    /// An argument a caller gave is malformed (what, and what is expected).
    #[error("{0}")]
    InvalidArgument(String),
    /// The apply ran and a change failed (the journal has the details).
    #[error("apply failed: {message}")]
    ApplyFailed {
        message: String,
        retry: Option<RetryHint>,
    },
    #[error("{0}")]
    Internal(String),
}

impl OpsError {
    /// How the failure suggests retrying, when it says.
    pub fn retry_hint(&self) -> Option<RetryHint> {
        match self {
            OpsError::Engine(e) => e.retry_hint(),
            OpsError::Provider(e) => Some(e.retry_hint()),
            OpsError::Store(_) => Some(RetryHint::Soon),
            OpsError::ApplyFailed { retry, .. } => *retry,
            OpsError::Invalid(_)
            | OpsError::Edit(_)
            | OpsError::Visibility(_)
            | OpsError::InvalidArgument(_) => Some(RetryHint::NeedsChange),
            _ => None,
        }
    }
}
