//! Status as the CLI (`supervisor status`), the MCP `project_status` tool and the status page show it:
//! a fresh plan joined with the journal, the last apply, the git revision of `state/` and the secrets
//! that need attention (required but missing, expired, flagged for rotation — paths only).

use serde::Serialize;

use super::runtime::git_revision;
use super::{OpsError, Runtime};
use crate::engine::status::{self, StatusReport};
use crate::engine::{Plan, Scope};
use crate::providers::secrets::{self as required, MissingSecret};
use crate::secrets::vault::VaultHealth;
use crate::store::SecretFilter;

#[derive(Debug, Serialize)]
pub struct Status {
    #[serde(flatten)]
    pub report: StatusReport,
    /// Secrets that are expired or flagged for rotation (paths only).
    pub secrets: VaultHealth,
    /// Secrets a project requires that are not in the vault.
    pub missing_secrets: Vec<MissingSecret>,
    /// The fresh plan the report was made from (the page renders it; `plan --json` is its JSON face).
    #[serde(skip)]
    pub plan: Plan,
}

/// The status of `scope`'s resources, from a fresh plan of the runtime's desired state.
pub async fn status(rt: &Runtime, scope: &Scope, actor: &str) -> Result<Status, OpsError> {
    let desired = rt.desired().await;
    let plan = rt.plan(scope, actor).await?;
    let journal = rt.store.latest_journal_entries().await?;
    let last = rt.store.last_run().await?;
    let report = status::report(&plan, &journal, last, git_revision(&desired.dir).await);
    // Every secret's metadata (no value): a project may require a `meta/…` path.
    let listed = rt.store.list_secrets(&SecretFilter::default()).await?;
    let project = scope.project.as_deref();
    Ok(Status {
        report,
        secrets: VaultHealth::of(&listed, project, chrono::Utc::now()),
        missing_secrets: required::missing(&desired, &listed, project),
        plan,
    })
}
