//! Plan and status tools: what apply would change, the status of each resource, and applying a plan
//! that needs nobody's consent (the same flow as `supervisor apply`, unattended).

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::status::StatusReport;
use crate::engine::{Plan, Scope, Summary};
use crate::mcp::McpServer;
use crate::ops::{self, ApplyOutcome, ApplyRequest, OpsError, ReconcileStatus, Unattended};
use crate::secrets::vault::VaultHealth;

#[derive(Debug, Deserialize, JsonSchema, Default)]
pub struct ProjectArgs {
    /// The project. Required on the meta endpoint; on a project endpoint it defaults to (and must be) the
    /// endpoint's own project.
    #[serde(default)]
    pub project: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ScopeArgs {
    /// Only this project's resources (defaults to the endpoint's project; on the meta endpoint, omit it
    /// for every project).
    #[serde(default)]
    pub project: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ProjectStatusOut {
    pub revision: String,
    /// Set when state/ currently fails to load (the last good state is in use).
    pub desired_error: Option<String>,
    pub status: StatusReport,
    /// The project's secrets that are expired or flagged for rotation (paths only).
    pub secrets: VaultHealth,
    pub reconcile: ReconcileStatus,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PlanOut {
    pub revision: String,
    pub plan: Plan,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ApplyOut {
    pub applied: bool,
    /// Why the plan was not applied (it has errors, or needs a human: --force or --allow-disruptive).
    pub refused: Option<String>,
    pub summary: Summary,
    pub plan: Plan,
}

#[tool_router(router = plan_tools, vis = "pub(super)")]
impl McpServer {
    #[tool(
        description = "Status of a project's resources: in_sync, pending, drifted, failed or blocked (the plan has an error about it), with the last apply, pending warnings (e.g. missing required secrets), secrets needing attention and what the reconciler is doing or waiting for."
    )]
    async fn project_status(
        &self,
        Parameters(args): Parameters<ProjectArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ProjectStatusOut>, String> {
        let actor = self.principal(&ctx).actor();
        self.track("project_status", async {
            let desired = self.runtime.desired().await;
            let project = self.visibility().known(&desired, args.project)?;
            let scope = Scope {
                project: Some(project),
                only: None,
            };
            let status = ops::status::status(&self.runtime, &scope, &actor).await?;
            Ok(Json(ProjectStatusOut {
                revision: desired.revision.clone(),
                desired_error: self.runtime.desired_error().await.map(|e| e.message),
                status: status.report,
                secrets: status.secrets,
                reconcile: self.runtime.status.read().await.clone(),
            }))
        })
        .await
    }

    #[tool(
        description = "The current plan as JSON: what apply would change (address, action create/update/delete/replace, before, after, summary), plus warnings and errors. On a project endpoint, only that project's resources."
    )]
    async fn get_plan(
        &self,
        Parameters(args): Parameters<ScopeArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<PlanOut>, String> {
        let actor = self.principal(&ctx).actor();
        self.track("get_plan", async {
            let desired = self.runtime.desired().await;
            let project = self.visibility().known_filter(&desired, args.project)?;
            let plan = self.plan_for(project, &actor).await?;
            Ok(Json(PlanOut {
                revision: plan.desired_revision.clone(),
                plan,
            }))
        })
        .await
    }

    #[tool(
        description = "Apply the current plan if it is safe: no errors, no mass deletion (over 30 % or all of a kind with 10 or more objects) and nothing disruptive (port moves, VM resizes). Unsafe plans are refused with the reason; a human applies those with `supervisor apply`."
    )]
    async fn apply_plan(
        &self,
        Parameters(args): Parameters<ScopeArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ApplyOut>, String> {
        let actor = self.principal(&ctx).actor();
        self.track("apply_plan", async {
            let desired = self.runtime.desired().await;
            let project = self.visibility().known_filter(&desired, args.project)?;
            let scope = Scope {
                project,
                only: None,
            };
            let outcome = ops::apply(
                &self.runtime,
                ApplyRequest::unattended(scope, actor),
                &mut Unattended,
            )
            .await?;
            apply_out(outcome).map(Json)
        })
        .await
    }
}

/// The tool's answer; a failed change is a tool error (the agent must not think it was applied).
fn apply_out(outcome: ApplyOutcome) -> Result<ApplyOut, OpsError> {
    Ok(match outcome {
        ApplyOutcome::NothingToDo { plan } => ApplyOut {
            applied: false,
            refused: None,
            summary: plan.summary,
            plan,
        },
        ApplyOutcome::Refused { plan, refusal } => ApplyOut {
            applied: false,
            refused: Some(refusal.to_string()),
            summary: plan.summary,
            plan,
        },
        ApplyOutcome::Applied { report, .. } if report.failed.is_some() => {
            return Err(OpsError::ApplyFailed {
                message: report.failed.unwrap_or_default(),
                retry: report.retry,
            });
        }
        ApplyOutcome::Applied { plan, .. } => ApplyOut {
            applied: true,
            refused: None,
            summary: plan.summary,
            plan,
        },
    })
}
