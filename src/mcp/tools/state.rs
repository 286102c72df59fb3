//! Desired-state tools: read the projects, and edit them (validated, written atomically in canonical
//! form, revision-checked) — edits never bypass the reconciler: they return the resulting plan.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::Plan;
use crate::mcp::McpServer;
use crate::ops::OpsError;
use crate::state::{Project, Service, edit};
use crate::store::DEFAULT_HOST;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct UpsertProjectArgs {
    /// The whole project, in the shape of its state file (name, path, port_range, services, secrets,
    /// checks, instructions). It replaces the current file.
    pub project: Project,
    /// The desired-state revision you last read (from list_projects, project_status or get_plan). The
    /// edit is refused if the state changed since.
    pub revision: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct UpsertServiceArgs {
    /// The project (defaults to the endpoint's project).
    #[serde(default)]
    pub project: Option<String>,
    /// The service: name, optional port (pinned inside the project's port_range), optional public
    /// hostname, optional prevent_destroy. Replaces a service of the same name.
    pub service: Service,
    /// The desired-state revision you last read.
    pub revision: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RemoveServiceArgs {
    /// The project (defaults to the endpoint's project).
    #[serde(default)]
    pub project: Option<String>,
    /// The service to remove; its port is freed when the change is applied.
    pub service: String,
    /// The desired-state revision you last read.
    pub revision: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ServiceView {
    pub name: String,
    /// The allocated port (null until applied).
    pub port: Option<i32>,
    pub pinned_port: Option<u16>,
    pub hostname: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ProjectView {
    pub name: String,
    pub path: Option<String>,
    pub port_range: Option<u16>,
    pub services: Vec<ServiceView>,
    pub required_secrets: Vec<String>,
    pub checks: Vec<String>,
    /// The MCP endpoint of the project.
    pub endpoint: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ProjectsOut {
    /// Pass this revision to edit tools.
    pub revision: String,
    pub projects: Vec<ProjectView>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct EditOut {
    /// The new desired-state revision.
    pub revision: String,
    /// The file written.
    pub file: String,
    /// False when the file already said exactly this.
    pub changed: bool,
    /// What apply will do now (the reconciler applies safe plans when auto_apply is on).
    pub plan: Plan,
}

impl McpServer {
    /// An edit of one project's desired state, and the plan of that project afterwards.
    async fn edit_project(
        &self,
        project: &str,
        actor: &str,
        edit: impl FnOnce(&std::path::Path) -> Result<edit::Edited, edit::EditError> + Send + 'static,
    ) -> Result<EditOut, OpsError> {
        let edited = self.runtime.edit_state(edit).await?;
        let plan = self.plan_for(Some(project.to_string()), actor).await?;
        Ok(EditOut {
            revision: edited.revision,
            file: edited.path.display().to_string(),
            changed: edited.changed,
            plan,
        })
    }
}

#[tool_router(router = state_tools, vis = "pub(super)")]
impl McpServer {
    #[tool(
        description = "List the projects this endpoint can see: services with their allocated ports and public hostnames, required secret paths (never values), checks, and the desired-state revision to pass to edit tools."
    )]
    async fn list_projects(&self) -> Result<Json<ProjectsOut>, String> {
        self.track("list_projects", async {
            let desired = self.runtime.desired().await;
            let registry = self.runtime.store.port_registry(DEFAULT_HOST).await?;
            let projects = desired
                .projects
                .values()
                .filter(|p| self.visibility().sees(&p.name))
                .map(|p| ProjectView {
                    name: p.name.clone(),
                    path: p.path.as_ref().map(|x| x.display().to_string()),
                    port_range: p.port_range,
                    services: p
                        .services
                        .iter()
                        .map(|s| ServiceView {
                            name: s.name.clone(),
                            port: registry
                                .allocations
                                .iter()
                                .find(|a| a.project == p.name && a.service == s.name)
                                .map(|a| a.port),
                            pinned_port: s.port,
                            hostname: s.hostname.as_ref().map(|h| h.to_string()),
                        })
                        .collect(),
                    required_secrets: p.secrets.required.clone(),
                    checks: p.checks.clone(),
                    endpoint: format!("/mcp/{}", p.name),
                })
                .collect();
            Ok(Json(ProjectsOut {
                revision: desired.revision.clone(),
                projects,
            }))
        })
        .await
    }

    #[tool(
        description = "Create or replace a whole project in desired state (state/projects/<name>.yaml), validated and written atomically. Pass the revision you read; a stale revision is refused. Returns the new revision and the resulting plan. On a project endpoint only that project may be edited."
    )]
    async fn upsert_project(
        &self,
        Parameters(args): Parameters<UpsertProjectArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<EditOut>, String> {
        let actor = self.principal(&ctx).actor();
        self.track("upsert_project", async {
            let name = self.visibility().one(Some(args.project.name.clone()))?;
            let (project, revision) = (args.project, args.revision);
            self.edit_project(&name, &actor, move |dir| {
                edit::upsert_project(dir, &project, &revision)
            })
            .await
            .map(Json)
        })
        .await
    }

    #[tool(
        description = "Add a service to a project (or replace the one with the same name): name, optional pinned port inside the project's port_range, optional public hostname, optional prevent_destroy. Validated, written atomically, revision-checked; returns the new revision and the plan (the new port shows in it)."
    )]
    async fn upsert_service(
        &self,
        Parameters(args): Parameters<UpsertServiceArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<EditOut>, String> {
        let actor = self.principal(&ctx).actor();
        self.track("upsert_service", async {
            let desired = self.runtime.desired().await;
            let project = self.visibility().known(&desired, args.project)?;
            let (p, service, revision) = (project.clone(), args.service, args.revision);
            self.edit_project(&project, &actor, move |dir| {
                edit::upsert_service(dir, &p, &service, &revision)
            })
            .await
            .map(Json)
        })
        .await
    }

    #[tool(
        description = "Remove a service from a project's desired state (revision-checked). Its port is freed when the plan is applied; services with prevent_destroy cannot be removed until the flag is lifted."
    )]
    async fn remove_service(
        &self,
        Parameters(args): Parameters<RemoveServiceArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<EditOut>, String> {
        let actor = self.principal(&ctx).actor();
        self.track("remove_service", async {
            let desired = self.runtime.desired().await;
            let project = self.visibility().known(&desired, args.project)?;
            let (p, service, revision) = (project.clone(), args.service, args.revision);
            self.edit_project(&project, &actor, move |dir| {
                edit::remove_service(dir, &p, &service, &revision)
            })
            .await
            .map(Json)
        })
        .await
    }
}
