//! The running supervisor's shared state: settings, store, vault, the last good desired state, the
//! reconciler's status and the metrics. Shared by the HTTP server, the MCP endpoints (HTTP and stdio)
//! and the reconcile loop.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{Notify, RwLock};

use crate::config::Settings;
use crate::engine::{ApplyOptions, Engine, EngineError, Plan, Scope, Summary};
use crate::providers::{ProviderContext, for_desired};
use crate::secrets::vault::Vault;
use crate::secrets::{SecretSink, SecretSource};
use crate::state::{self, Desired};
use crate::store::Store;

use super::metrics::Metrics;

/// What the reconciler last did, for `/health`, `status` and `project_status`.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct ReconcileStatus {
    pub runs: u64,
    pub errors: u64,
    /// RFC 3339.
    #[schemars(with = "Option<String>")]
    pub last_run_at: Option<DateTime<Utc>>,
    /// `ok`, `error`, `waiting` (an unsafe plan waits for a human) or `not_leader`.
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    /// The pending plan's summary (after an auto-apply: what is left).
    pub pending: Option<Summary>,
    /// Why pending changes were not applied automatically.
    pub waiting_for_human: Vec<String>,
    pub leader: bool,
    pub auto_apply: bool,
}

/// Why the current desired state could not be reloaded (the last good one is kept).
#[derive(Debug, Clone, Serialize)]
pub struct DesiredError {
    pub at: DateTime<Utc>,
    pub message: String,
}

pub struct Runtime {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    /// The vault, when an encryption key is configured.
    pub vault: Option<Arc<Vault>>,
    desired: RwLock<Arc<Desired>>,
    desired_error: RwLock<Option<DesiredError>>,
    pub status: RwLock<ReconcileStatus>,
    pub metrics: Metrics,
    pub started: Instant,
    /// Wakes the reconcile loop (file change, MCP edit).
    pub wake: Notify,
    /// Serializes reconciles within this process (the apply lock serializes across processes).
    reconcile_lock: tokio::sync::Mutex<()>,
    /// Cancelled at shutdown: applies stop at the next change boundary.
    pub shutdown: tokio_util::sync::CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the desired state is invalid:\n{0}")]
    Invalid(state::Diagnostics),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Provider(#[from] crate::engine::ProviderError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("apply failed: {0}")]
    ApplyFailed(String),
}

impl Runtime {
    /// Loads the desired state (which must be valid at start) and builds the runtime.
    pub fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        vault: Option<Arc<Vault>>,
        auto_apply: bool,
    ) -> Result<Arc<Runtime>, RuntimeError> {
        let desired = state::load(&settings.state_dir).map_err(RuntimeError::Invalid)?;
        let status = ReconcileStatus {
            auto_apply,
            ..Default::default()
        };
        Ok(Arc::new(Runtime {
            settings,
            store,
            vault,
            desired: RwLock::new(Arc::new(desired)),
            desired_error: RwLock::new(None),
            status: RwLock::new(status),
            metrics: Metrics::default(),
            started: Instant::now(),
            wake: Notify::new(),
            reconcile_lock: tokio::sync::Mutex::new(()),
            shutdown: tokio_util::sync::CancellationToken::new(),
        }))
    }

    /// The last good desired state.
    pub async fn desired(&self) -> Arc<Desired> {
        self.desired.read().await.clone()
    }

    pub async fn desired_error(&self) -> Option<DesiredError> {
        self.desired_error.read().await.clone()
    }

    /// Re-reads `state/`. Invalid files leave the last good desired state in place (and are reported);
    /// nothing is ever planned from a half-written file.
    pub async fn reload(&self) -> Arc<Desired> {
        let dir = self.settings.state_dir.clone();
        let loaded = tokio::task::spawn_blocking(move || state::load(&dir)).await;
        match loaded {
            Ok(Ok(d)) => {
                *self.desired_error.write().await = None;
                let d = Arc::new(d);
                *self.desired.write().await = d.clone();
                d
            }
            Ok(Err(diags)) => {
                tracing::warn!(
                    errors = diags.0.len(),
                    "state/ is invalid; keeping the last good desired state"
                );
                *self.desired_error.write().await = Some(DesiredError {
                    at: Utc::now(),
                    message: diags.to_string(),
                });
                self.desired().await
            }
            Err(e) => {
                *self.desired_error.write().await = Some(DesiredError {
                    at: Utc::now(),
                    message: format!("loading state/ failed: {e}"),
                });
                self.desired().await
            }
        }
    }

    /// Replaces the desired state after a validated machine edit.
    pub async fn set_desired(&self, desired: Desired) {
        *self.desired_error.write().await = None;
        *self.desired.write().await = Arc::new(desired);
    }

    pub async fn engine(&self, desired: &Desired, actor: &str) -> Result<Engine, RuntimeError> {
        let ctx = ProviderContext {
            store: self.store.clone(),
            secrets: self.vault.clone().map(|v| v as Arc<dyn SecretSource>),
            secret_sink: self.vault.clone().map(|v| v as Arc<dyn SecretSink>),
            adopt: Vec::new(),
            actor: actor.to_string(),
        };
        Ok(Engine::new(
            self.store.clone(),
            for_desired(desired, &ctx).await?,
        ))
    }

    /// Plans `scope` from the last good desired state.
    pub async fn plan(&self, scope: &Scope, actor: &str) -> Result<Plan, RuntimeError> {
        let desired = self.desired().await;
        let engine = self.engine(&desired, actor).await?;
        Ok(engine.plan(&desired, scope).await?)
    }

    /// Plans and, when the plan is safe (no errors, no mass delete, nothing disruptive), applies it under
    /// the apply lock. Returns the plan that was applied (or refused) and whether it was applied.
    pub async fn apply_safe(
        &self,
        scope: &Scope,
        actor: &str,
    ) -> Result<(Plan, Option<String>), RuntimeError> {
        let _serial = self.reconcile_lock.lock().await;
        let desired = self.desired().await;
        let engine = self.engine(&desired, actor).await?;
        let lock = self
            .store
            .lock_apply(std::time::Duration::from_secs(60))
            .await?;
        let result = async {
            self.store.mark_interrupted_runs().await?;
            let plan = engine.plan(&desired, scope).await?;
            if plan.is_empty() {
                return Ok((plan, None));
            }
            let opts = ApplyOptions {
                force: false,
                allow_disruptive: false,
                actor: actor.to_string(),
                git_revision: state::git_revision(&desired.dir),
                stop: Some(self.shutdown.clone()),
            };
            if let Err(e) = engine.check_safety(&plan, &opts) {
                return Ok((plan, Some(e.to_string())));
            }
            let report = engine.apply(&plan, &opts, |_| {}).await?;
            match report.failed {
                Some(f) => Err(RuntimeError::ApplyFailed(f)),
                None => Ok((plan, None)),
            }
        }
        .await;
        lock.release().await;
        result
    }
}
