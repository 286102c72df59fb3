//! One running supervisor: settings, store, vault, the last good desired state, the reconciler's status
//! and the metrics handle. The CLI builds one per command; `serve` and `supervisor mcp` keep one for their
//! lifetime and share it between the HTTP server, the MCP endpoints and the reconcile loop.
//!
//! Blocking work (reading `state/`, running `git`) happens on the blocking pool, never on the async
//! worker threads.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{Notify, RwLock};

use super::OpsError;
use super::metrics::Metrics;
use crate::config::Settings;
use crate::engine::{Engine, Plan, Scope, Summary};
use crate::providers::{ProviderContext, for_desired};
use crate::secrets::vault::Vault;
use crate::secrets::{SecretSink, SecretSinkError, SecretSource, SecretSourceError};
use crate::state::{self, Desired};
use crate::store::Store;

/// What the reconciler last did, for `/health`, `status` and `project_status`.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct ReconcileStatus {
    pub runs: u64,
    pub errors: u64,
    /// RFC 3339.
    #[schemars(with = "Option<String>")]
    pub last_run_at: Option<DateTime<Utc>>,
    /// `ok`, `error`, `waiting` (an unsafe plan waits for a human), `invalid_state` or `not_leader`.
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    /// The pending plan's summary (after an auto-apply: what is left).
    pub pending: Option<Summary>,
    /// Why pending changes were not applied automatically.
    pub waiting_for_human: Vec<String>,
    /// When the loop runs next after a failure (seconds), chosen by the error (a `Retry-After`) or by
    /// the backoff.
    pub retry_in_seconds: Option<u64>,
    pub leader: bool,
    pub auto_apply: bool,
}

/// Why the current desired state could not be reloaded (the last good one is kept).
#[derive(Debug, Clone, Serialize)]
pub struct DesiredError {
    pub at: DateTime<Utc>,
    pub message: String,
}

/// The vault as the runtime has it: usable, not configured (no key), or unusable (why).
pub enum VaultState {
    Ready(Arc<Vault>),
    NoKey,
    /// The key is configured but cannot be used (malformed, unreadable); only what needs it fails.
    Broken(String),
}

impl VaultState {
    /// Loads the key named by `settings` (file, else `SECRETS_ENCRYPTION_KEY`).
    pub fn load(settings: &Settings, store: &Arc<dyn Store>) -> VaultState {
        match crate::secrets::key::EncryptionKey::load(settings.key_file.as_deref()) {
            Ok(Some(key)) => VaultState::Ready(Arc::new(Vault::new(store.clone(), key))),
            Ok(None) => VaultState::NoKey,
            Err(e) => VaultState::Broken(format!("{e:#}")),
        }
    }
}

pub struct Runtime {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    /// The vault, when an encryption key is configured and usable.
    pub vault: Option<Arc<Vault>>,
    /// Why a configured key cannot be used (providers that need a credential report it).
    key_error: Option<String>,
    desired: RwLock<Arc<Desired>>,
    desired_error: RwLock<Option<DesiredError>>,
    /// Serializes reloads (and machine edits taking effect): a reload that read the files earlier
    /// never lands after one that read them later.
    reload_serial: tokio::sync::Mutex<()>,
    pub status: RwLock<ReconcileStatus>,
    pub metrics: Metrics,
    pub started: Instant,
    /// Wakes the reconcile loop (file change, MCP edit).
    pub wake: Notify,
    /// Serializes applies within this process (the apply lock serializes across processes).
    pub(super) apply_serial: tokio::sync::Mutex<()>,
    /// Serializes declarations of new services (`get_port`) within this process: each reads the state
    /// it edits, so concurrent declarations never refuse each other as stale.
    pub(super) declare_serial: tokio::sync::Mutex<()>,
    /// Cancelled at shutdown: applies stop at the next change boundary.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Allocated ports in memory for `get_port` (see [`super::port_snapshot`]); applies invalidate it.
    pub(super) ports: super::port_snapshot::PortSnapshot,
    /// The knowledge embedder, loaded on first use (`ops::knowledge`).
    pub(super) embedder: tokio::sync::OnceCell<Option<Arc<dyn crate::knowledge::embed::Embedder>>>,
}

impl Runtime {
    /// Loads the desired state (which must be valid) and builds the runtime.
    pub async fn load(
        settings: Settings,
        store: Arc<dyn Store>,
        vault: VaultState,
        auto_apply: bool,
    ) -> Result<Arc<Runtime>, OpsError> {
        let dir = settings.state_dir.clone();
        let desired = tokio::task::spawn_blocking(move || state::load(&dir))
            .await
            .map_err(|e| OpsError::Internal(format!("loading state/ panicked: {e}")))?
            .map_err(OpsError::Invalid)?;
        Ok(Self::with_desired(
            settings, store, vault, desired, auto_apply,
        ))
    }

    /// Builds the runtime around an already loaded desired state.
    pub fn with_desired(
        settings: Settings,
        store: Arc<dyn Store>,
        vault: VaultState,
        desired: Desired,
        auto_apply: bool,
    ) -> Arc<Runtime> {
        let (vault, key_error) = match vault {
            VaultState::Ready(v) => (Some(v), None),
            VaultState::NoKey => (None, None),
            VaultState::Broken(why) => (None, Some(why)),
        };
        Arc::new(Runtime {
            settings,
            store,
            vault,
            key_error,
            desired: RwLock::new(Arc::new(desired)),
            desired_error: RwLock::new(None),
            reload_serial: tokio::sync::Mutex::new(()),
            status: RwLock::new(ReconcileStatus {
                auto_apply,
                ..Default::default()
            }),
            metrics: Metrics::default(),
            started: Instant::now(),
            wake: Notify::new(),
            apply_serial: tokio::sync::Mutex::new(()),
            declare_serial: tokio::sync::Mutex::new(()),
            shutdown: tokio_util::sync::CancellationToken::new(),
            ports: Default::default(),
            embedder: tokio::sync::OnceCell::new(),
        })
    }

    /// The last good desired state.
    pub async fn desired(&self) -> Arc<Desired> {
        self.desired.read().await.clone()
    }

    pub async fn desired_error(&self) -> Option<DesiredError> {
        self.desired_error.read().await.clone()
    }

    /// The vault, or an error saying how to configure one.
    pub fn vault(&self) -> Result<&Arc<Vault>, OpsError> {
        match (&self.vault, &self.key_error) {
            (Some(v), _) => Ok(v),
            (None, Some(why)) => Err(OpsError::NoVault(format!(
                "the encryption key cannot be used: {why}"
            ))),
            (None, None) => Err(OpsError::NoVault(
                "the supervisor has no encryption key (set SECRETS_ENCRYPTION_KEY or secrets_key_file and restart it)"
                    .into(),
            )),
        }
    }

    /// Re-reads `state/`. Invalid files leave the last good desired state in place (and are reported);
    /// nothing is ever planned from a half-written file. Returns the desired state now in force.
    pub async fn reload(&self) -> Arc<Desired> {
        // The file watcher and a follower's periodic reload can overlap: in order, or an older read
        // of `state/` could replace a newer one.
        let _serial = self.reload_serial.lock().await;
        let dir = self.settings.state_dir.clone();
        let loaded = tokio::task::spawn_blocking(move || state::load(&dir)).await;
        let failure = match loaded {
            Ok(Ok(d)) => {
                *self.desired_error.write().await = None;
                let mut current = self.desired.write().await;
                if current.revision != d.revision {
                    *current = Arc::new(d);
                }
                return current.clone();
            }
            Ok(Err(diags)) => {
                tracing::warn!(
                    errors = diags.0.len(),
                    "state/ is invalid; keeping the last good desired state"
                );
                diags.to_string()
            }
            Err(e) => format!("loading state/ failed: {e}"),
        };
        *self.desired_error.write().await = Some(DesiredError {
            at: Utc::now(),
            message: failure,
        });
        self.desired().await
    }

    /// Replaces the desired state after a validated machine edit.
    pub async fn set_desired(&self, desired: Desired) {
        let _serial = self.reload_serial.lock().await;
        *self.desired_error.write().await = None;
        *self.desired.write().await = Arc::new(desired);
    }

    /// Runs a machine edit of `state/` (validated, atomic; file I/O on the blocking pool), takes its
    /// result as the new desired state and wakes the reconcile loop.
    pub async fn edit_state(
        &self,
        edit: impl FnOnce(&Path) -> Result<state::edit::Edited, state::edit::EditError> + Send + 'static,
    ) -> Result<state::edit::Edited, OpsError> {
        let dir = self.settings.state_dir.clone();
        let edited = tokio::task::spawn_blocking(move || edit(&dir))
            .await
            .map_err(|e| OpsError::Internal(format!("the edit panicked: {e}")))??;
        self.set_desired(edited.desired.clone()).await;
        self.wake.notify_one();
        Ok(edited)
    }

    /// Where providers read credentials: the vault, or a source whose every read says why the key
    /// cannot be used (so only providers that need a credential fail).
    pub fn credentials(&self) -> Option<Arc<dyn SecretSource>> {
        match (&self.vault, &self.key_error) {
            (Some(v), _) => Some(v.clone() as Arc<dyn SecretSource>),
            (None, Some(why)) => Some(Arc::new(KeyUnavailable(why.clone()))),
            (None, None) => None,
        }
    }

    /// The engine with the providers `desired` needs. `adopt`: hostnames whose existing unmanaged
    /// records may be adopted. Building reads provider credentials (once), so do it before taking the
    /// apply lock.
    pub async fn engine(
        &self,
        desired: &Desired,
        actor: &str,
        adopt: &[String],
    ) -> Result<Engine, OpsError> {
        let ctx = self.provider_context(actor, adopt);
        Ok(Engine::new(
            self.store.clone(),
            for_desired(desired, &ctx).await?,
        ))
    }

    /// Where providers store secrets they create (API key strings): the vault, or a sink whose every
    /// write says why the key cannot be used.
    pub fn secret_sink(&self) -> Option<Arc<dyn SecretSink>> {
        match (&self.vault, &self.key_error) {
            (Some(v), _) => Some(v.clone() as Arc<dyn SecretSink>),
            (None, Some(why)) => Some(Arc::new(KeyUnavailable(why.clone()))),
            (None, None) => None,
        }
    }

    pub fn provider_context(&self, actor: &str, adopt: &[String]) -> ProviderContext {
        ProviderContext {
            store: self.store.clone(),
            secrets: self.credentials(),
            secret_sink: self.secret_sink(),
            adopt: adopt.to_vec(),
            actor: actor.to_string(),
            mcp_base_url: self.mcp_base_url(),
            ..ProviderContext::new(self.store.clone())
        }
    }

    /// Where agents reach this supervisor's MCP server: `public_url` from `supervisor.toml`'s `[serve]`,
    /// else the listen address.
    pub fn mcp_base_url(&self) -> String {
        let serve = &self.settings.file.serve;
        match &serve.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", serve.listen),
        }
    }

    /// The timing service over this runtime's store, with this host's abandoned age (`[timing]`).
    pub fn timing(&self) -> crate::timing::Timing {
        crate::timing::Timing::new(self.store.clone()).with_abandoned_after(
            std::time::Duration::from_secs(self.settings.file.timing.abandoned_after_secs),
        )
    }

    /// Plans `scope` from the last good desired state.
    pub async fn plan(&self, scope: &Scope, actor: &str) -> Result<Plan, OpsError> {
        let desired = self.desired().await;
        let engine = self.engine(&desired, actor, &[]).await?;
        Ok(engine.plan(&desired, scope).await?)
    }
}

/// The git revision of the state directory (`abc123def456[+dirty]`), read off the async threads.
pub async fn git_revision(dir: &Path) -> Option<String> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || state::git_revision(&dir))
        .await
        .ok()
        .flatten()
}

/// A credential source whose every read fails with why the encryption key could not be loaded.
struct KeyUnavailable(String);

#[async_trait::async_trait]
impl SecretSource for KeyUnavailable {
    async fn read_secret(
        &self,
        path: &str,
        _actor: &str,
    ) -> Result<secrecy::SecretString, SecretSourceError> {
        Err(SecretSourceError {
            path: path.to_string(),
            reason: format!("the encryption key cannot be used: {}", self.0),
        })
    }
}

#[async_trait::async_trait]
impl SecretSink for KeyUnavailable {
    async fn write_secret(
        &self,
        path: &str,
        _value: &secrecy::SecretString,
        _description: &str,
        _actor: &str,
    ) -> Result<(), SecretSinkError> {
        Err(self.sink_error(path, "store"))
    }

    async fn delete_secret(&self, path: &str, _actor: &str) -> Result<bool, SecretSinkError> {
        Err(self.sink_error(path, "delete"))
    }

    async fn secret_exists(&self, path: &str, _actor: &str) -> Result<bool, SecretSinkError> {
        Err(self.sink_error(path, "look up"))
    }
}

impl KeyUnavailable {
    fn sink_error(&self, path: &str, action: &'static str) -> SecretSinkError {
        SecretSinkError {
            path: path.to_string(),
            action,
            reason: format!("the encryption key cannot be used: {}", self.0),
        }
    }
}
