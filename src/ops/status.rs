//! Status as the CLI (`supervisor status`), the MCP `project_status` tool and the status page show it:
//! a fresh plan joined with the journal, the last apply, the git revision of `state/` and the secrets
//! that need attention.

use serde::Serialize;

use super::runtime::git_revision;
use super::{OpsError, Runtime};
use crate::engine::Scope;
use crate::engine::status::{self, StatusReport};
use crate::secrets::vault::{self, VaultHealth};

#[derive(Debug, Serialize)]
pub struct Status {
    #[serde(flatten)]
    pub report: StatusReport,
    /// Secrets that are expired or flagged for rotation (paths only).
    pub secrets: VaultHealth,
}

/// The status of `scope`'s resources, from a fresh plan of the runtime's desired state.
pub async fn status(rt: &Runtime, scope: &Scope, actor: &str) -> Result<Status, OpsError> {
    let desired = rt.desired().await;
    let plan = rt.plan(scope, actor).await?;
    let journal = rt.store.latest_journal_entries().await?;
    let last = rt.store.last_run().await?;
    let report = status::report(&plan, &journal, last, git_revision(&desired.dir).await);
    let secrets = vault::health_of(rt.store.as_ref(), scope.project.as_deref()).await?;
    Ok(Status { report, secrets })
}
