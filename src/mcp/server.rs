//! The MCP server: one handler type, instantiated per endpoint (`Endpoint::Meta` or
//! `Endpoint::Project`). Every tool resolves its project through [`McpServer::project`], which is
//! where project endpoints are confined to their own project.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation, ListPromptsResult,
    ListResourcesResult, PaginatedRequestParams, Prompt, PromptArgument, PromptMessage,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, Role, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auth::Principal;
use crate::engine::{Plan, Scope, Summary, status};
use crate::providers::ports::{PortLine, port_lines};
use crate::providers::{ports_audit, sockets};
use crate::secrets::detector;
use crate::secrets::path::SecretPath;
use crate::secrets::vault::{
    Actor, Expiry, ListFilter, SecretValue, SetOptions, Vault, VaultError,
};
use crate::serve::runtime::{ReconcileStatus, Runtime};
use crate::state::{self, Project, Service, edit};
use crate::store::{DEFAULT_HOST, SecretScope};

/// Which endpoint a server instance answers for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Meta,
    Project(String),
}

impl Endpoint {
    pub fn project(&self) -> Option<&str> {
        match self {
            Endpoint::Meta => None,
            Endpoint::Project(p) => Some(p),
        }
    }
    pub fn label(&self) -> String {
        match self {
            Endpoint::Meta => "meta".into(),
            Endpoint::Project(p) => p.clone(),
        }
    }
}

#[derive(Clone)]
pub struct McpServer {
    runtime: Arc<Runtime>,
    endpoint: Endpoint,
    /// The caller when no HTTP request carries one (stdio).
    default_principal: Principal,
    tool_router: ToolRouter<Self>,
}

// Tools return `Result<Json<T>, String>` spelled out: rmcp's #[tool] macro derives the outputSchema from
// the return type's syntax (`Json<T>` or `Result<Json<T>, E>`), so an alias would silently drop it.
// `Err(message)` is a tool result with isError: true, which the agent reads.

// ---------------------------------------------------------------------------------------------------
// Arguments and results

#[derive(Debug, Deserialize, JsonSchema, Default)]
pub struct ProjectArgs {
    /// The project. Required on the meta endpoint; on a project endpoint it defaults to (and must be) the
    /// endpoint's own project.
    #[serde(default)]
    pub project: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct GetPortArgs {
    /// The project (defaults to the endpoint's project).
    #[serde(default)]
    pub project: Option<String>,
    /// The service whose port you want.
    pub service: String,
    /// When the service is not declared yet: add it to the project's desired state and allocate its
    /// port (default true). With false, an undeclared service is an error.
    #[serde(default)]
    pub allocate: Option<bool>,
}

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

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ApplyPlanArgs {
    /// Only this project's resources (defaults to the endpoint's project; on the meta endpoint, omit it
    /// to apply everything).
    #[serde(default)]
    pub project: Option<String>,
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
pub struct ProjectStatusOut {
    pub revision: String,
    /// Set when state/ currently fails to load (the last good state is in use).
    pub desired_error: Option<String>,
    pub status: status::StatusReport,
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
    /// Why the plan was not applied (it needs a human: --force or --allow-disruptive), if so.
    pub refused: Option<String>,
    pub summary: Summary,
    pub plan: Plan,
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

#[derive(Debug, Serialize, JsonSchema)]
pub struct PortOut {
    pub project: String,
    pub service: String,
    pub port: i32,
    pub hostname: Option<String>,
    /// True when this call declared the service and allocated its port.
    pub allocated_now: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SharedLine {
    pub name: String,
    pub port: i32,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PortsOut {
    pub ports: Vec<PortLine>,
    /// Shared services (databases, caches) every project may use.
    pub shared: Vec<SharedLine>,
    /// The project blocks, `project: start–end`.
    pub blocks: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditOut {
    pub report: ports_audit::AuditReport,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SecretPathArgs {
    /// The secret's path: `project/<project>/<name>`, `service/<project>/<service>/<name>`, or (meta
    /// endpoint only) `meta/<name>`. A project endpoint only reaches its own project's secrets.
    pub path: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SetSecretArgs {
    /// Where to store it (see get_secret for the path forms).
    pub path: String,
    /// The value. It is encrypted at rest and never appears in logs or plans.
    pub value: String,
    /// What the secret is for.
    #[serde(default)]
    pub description: Option<String>,
    /// When it expires, RFC 3339 (e.g. 2027-01-31T00:00:00Z).
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
pub struct ListSecretsArgs {
    /// Only `meta`, `project` or `service` secrets.
    #[serde(default)]
    pub scope: Option<String>,
    /// Only this project's secrets (a project endpoint always lists only its own).
    #[serde(default)]
    pub project: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DetectSecretsArgs {
    /// Text that may contain credentials (a pasted .env, a config file, a message).
    pub text: String,
    /// Suggest paths under this project (defaults to the endpoint's project; on the meta endpoint
    /// without it, paths under meta/<vendor>/).
    #[serde(default)]
    pub project: Option<String>,
    /// Store each credential found at its suggested path (default false: only report).
    #[serde(default)]
    pub store: Option<bool>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SecretOut {
    pub path: String,
    pub value: String,
    pub expires_at: Option<String>,
    /// Expired secrets are still returned; replace them soon.
    pub expired: bool,
    pub rotation_required: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SetSecretOut {
    pub path: String,
    /// `created` or `updated`.
    pub written: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SecretsOut {
    /// Metadata only, never values.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub secrets: Vec<crate::secrets::vault::SecretInfo>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeletedOut {
    pub path: String,
    pub deleted: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DetectedOut {
    pub kind: String,
    /// The credential with all but a short prefix hidden.
    pub masked: String,
    pub line: usize,
    pub column: usize,
    pub suggested_path: String,
    /// Whether it was stored at the suggested path by this call.
    pub stored: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DetectOut {
    pub findings: Vec<DetectedOut>,
}

fn edit_error(e: edit::EditError) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------------------------------

impl McpServer {
    pub fn new(runtime: Arc<Runtime>, endpoint: Endpoint, default_principal: Principal) -> Self {
        McpServer {
            runtime,
            endpoint,
            default_principal,
            tool_router: Self::tool_router(),
        }
    }

    /// The caller of this request: the verified token put in the request's extensions by the HTTP
    /// auth layer, or the local user over stdio.
    fn principal(&self, ctx: &RequestContext<RoleServer>) -> Principal {
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Principal>().cloned())
            .unwrap_or_else(|| self.default_principal.clone())
    }

    /// The project a call is about. Project endpoints are confined to their own project.
    fn project(&self, given: Option<String>) -> Result<String, String> {
        match (&self.endpoint, given) {
            (Endpoint::Project(p), None) => Ok(p.clone()),
            (Endpoint::Project(p), Some(g)) if g == *p => Ok(g),
            (Endpoint::Project(p), Some(g)) => Err(format!(
                "this endpoint serves project `{p}` only; project `{g}` is not visible here"
            )),
            (Endpoint::Meta, Some(g)) => Ok(g),
            (Endpoint::Meta, None) => Err(
                "name the project: this is the meta endpoint, which serves every project".into(),
            ),
        }
    }

    async fn known_project(
        &self,
        given: Option<String>,
    ) -> Result<(String, Arc<state::Desired>), String> {
        let name = self.project(given)?;
        let desired = self.runtime.desired().await;
        if !desired.projects.contains_key(&name) {
            let known: Vec<&str> = desired.projects.keys().map(String::as_str).collect();
            return Err(format!(
                "there is no project `{name}` (known: {})",
                known.join(", ")
            ));
        }
        Ok((name, desired))
    }

    /// Runs a tool body, recording its outcome and latency.
    async fn track<T>(
        &self,
        tool: &'static str,
        body: impl Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        let started = Instant::now();
        let result = body.await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        let elapsed = started.elapsed();
        // Which tool, how it ended and how long it took — never its arguments or result (rmcp's own
        // message logging is capped for that reason; see `logging`).
        tracing::info!(
            tool,
            outcome,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "MCP tool call"
        );
        self.runtime.metrics.tool_call(tool, outcome, elapsed);
        result
    }

    fn scope_for(&self, project: Option<String>) -> Scope {
        Scope {
            project,
            only: None,
        }
    }

    async fn plan_for(&self, project: Option<String>, actor: &str) -> Result<Plan, String> {
        self.runtime
            .plan(&self.scope_for(project), actor)
            .await
            .map_err(|e| e.to_string())
    }

    async fn after_edit(
        &self,
        edited: edit::Edited,
        project: &str,
        actor: &str,
    ) -> Result<EditOut, String> {
        let plan = self.plan_for(Some(project.to_string()), actor).await?;
        Ok(EditOut {
            revision: edited.revision,
            file: edited.path.display().to_string(),
            changed: edited.changed,
            plan,
        })
    }

    fn state_dir(&self) -> &std::path::Path {
        &self.runtime.settings.state_dir
    }

    /// Runs a desired-state edit (file I/O) off the async runtime and takes its result as the new
    /// desired state.
    async fn edit(
        &self,
        f: impl FnOnce(&std::path::Path) -> Result<edit::Edited, edit::EditError> + Send + 'static,
    ) -> Result<edit::Edited, String> {
        let dir = self.state_dir().to_path_buf();
        let edited = tokio::task::spawn_blocking(move || f(&dir))
            .await
            .map_err(|e| e.to_string())?
            .map_err(edit_error)?;
        self.runtime.set_desired(edited.desired.clone()).await;
        self.runtime.wake.notify_one();
        Ok(edited)
    }

    fn vault(&self) -> Result<&Vault, String> {
        self.runtime.vault.as_deref().ok_or_else(|| {
            "secrets are unavailable: the supervisor has no encryption key (set SECRETS_ENCRYPTION_KEY or secrets_key_file and restart it)".to_string()
        })
    }

    /// The vault actor for a call: named after the endpoint and token, confined to the endpoint's
    /// project on project endpoints (whatever token is used).
    fn vault_actor(&self, principal: &Principal) -> Actor {
        let endpoint = match &self.endpoint {
            Endpoint::Meta => "/mcp/meta".to_string(),
            Endpoint::Project(p) => format!("/mcp/{p}"),
        };
        let who = match principal {
            Principal::Local { who } => Some(who.as_str()),
            other => other.token_id(),
        };
        Actor::mcp(&endpoint, who, self.endpoint.project())
    }
}

fn secret_path(text: &str) -> Result<SecretPath, String> {
    SecretPath::parse(text).map_err(|e| e.to_string())
}

fn vault_error(e: VaultError) -> String {
    match e {
        VaultError::NotFound { path } => format!("no secret at {path} (store one with set_secret)"),
        VaultError::Denied { path, .. } => format!(
            "{path} is not visible from this endpoint (only its project's project/… and service/… secrets are)"
        ),
        other => other.to_string(),
    }
}

#[tool_router]
impl McpServer {
    #[tool(
        description = "List the projects this endpoint can see: services with their allocated ports and public hostnames, required secret paths (never values), checks, and the desired-state revision to pass to edit tools."
    )]
    async fn list_projects(&self) -> Result<Json<ProjectsOut>, String> {
        self.track("list_projects", async {
            let desired = self.runtime.desired().await;
            let registry = self
                .runtime
                .store
                .port_registry(DEFAULT_HOST)
                .await
                .map_err(|e| e.to_string())?;
            let projects = desired
                .projects
                .values()
                .filter(|p| self.endpoint.project().is_none_or(|e| e == p.name))
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
                            hostname: s.hostname.clone(),
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
        description = "Status of a project's resources: in_sync, pending, drifted or failed, with the last apply, pending warnings (e.g. missing required secrets) and what the reconciler is doing or waiting for."
    )]
    async fn project_status(
        &self,
        Parameters(args): Parameters<ProjectArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ProjectStatusOut>, String> {
        let actor = self.principal(&ctx).actor();
        self.track("project_status", async {
            let (project, desired) = self.known_project(args.project).await?;
            let plan = self.plan_for(Some(project), &actor).await?;
            let journal = self
                .runtime
                .store
                .latest_journal_entries()
                .await
                .map_err(|e| e.to_string())?;
            let last = self
                .runtime
                .store
                .last_run()
                .await
                .map_err(|e| e.to_string())?;
            Ok(Json(ProjectStatusOut {
                revision: desired.revision.clone(),
                desired_error: self.runtime.desired_error().await.map(|e| e.message),
                status: status::report(&plan, &journal, last, state::git_revision(&desired.dir)),
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
        Parameters(args): Parameters<ProjectArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<PlanOut>, String> {
        let actor = self.principal(&ctx).actor();
        self.track("get_plan", async {
            let project = match (&self.endpoint, args.project) {
                (Endpoint::Meta, None) => None,
                (_, given) => Some(self.known_project(given).await?.0),
            };
            let plan = self.plan_for(project, &actor).await?;
            Ok(Json(PlanOut {
                revision: plan.desired_revision.clone(),
                plan,
            }))
        })
        .await
    }

    #[tool(
        description = "Apply the current plan if it is safe: no errors, no mass deletion (over 30 % or all of a kind) and nothing disruptive. Unsafe plans are refused with the reason; a human applies those with `supervisor apply`."
    )]
    async fn apply_plan(
        &self,
        Parameters(args): Parameters<ApplyPlanArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ApplyOut>, String> {
        let actor = self.principal(&ctx).actor();
        self.track("apply_plan", async {
            let project = match (&self.endpoint, args.project) {
                (Endpoint::Meta, None) => None,
                (_, given) => Some(self.known_project(given).await?.0),
            };
            let (plan, refused) = self
                .runtime
                .apply_safe(&self.scope_for(project), &actor)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Json(ApplyOut {
                applied: refused.is_none() && !plan.is_empty(),
                refused,
                summary: plan.summary,
                plan,
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
            let name = self.project(Some(args.project.name.clone()))?;
            let (project, revision) = (args.project, args.revision);
            let edited = self
                .edit(move |dir| edit::upsert_project(dir, &project, &revision))
                .await?;
            self.after_edit(edited, &name, &actor).await.map(Json)
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
            let (project, _) = self.known_project(args.project).await?;
            let (p, service, revision) = (project.clone(), args.service, args.revision);
            let edited = self
                .edit(move |dir| edit::upsert_service(dir, &p, &service, &revision))
                .await?;
            self.after_edit(edited, &project, &actor).await.map(Json)
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
            let (project, _) = self.known_project(args.project).await?;
            let (p, service, revision) = (project.clone(), args.service, args.revision);
            let edited = self
                .edit(move |dir| edit::remove_service(dir, &p, &service, &revision))
                .await?;
            self.after_edit(edited, &project, &actor).await.map(Json)
        })
        .await
    }

    #[tool(
        description = "The port of a service. If the service is declared but not allocated yet, its port is allocated now; if it is not declared and allocate is true (default), it is added to the project's desired state first. Use the returned port to bind your server."
    )]
    async fn get_port(
        &self,
        Parameters(args): Parameters<GetPortArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<PortOut>, String> {
        let actor = self.principal(&ctx).actor();
        self.track("get_port", async {
            let (project, desired) = self.known_project(args.project).await?;
            let lookup = || async {
                self.runtime
                    .store
                    .port_allocation(DEFAULT_HOST, &project, &args.service)
                    .await
                    .map_err(|e| e.to_string())
            };
            let hostname = |d: &state::Desired| {
                d.projects.get(&project).and_then(|p| p.services.iter().find(|s| s.name == args.service)).and_then(|s| s.hostname.clone())
            };
            if let Some(a) = lookup().await? {
                return Ok(Json(PortOut { project: project.clone(), service: args.service.clone(), port: a.port, hostname: hostname(&desired), allocated_now: false }));
            }
            let declared = desired.projects[&project].services.iter().any(|s| s.name == args.service);
            if !declared {
                if !args.allocate.unwrap_or(true) {
                    return Err(format!("project `{project}` has no service `{}` (call get_port with allocate: true to add it)", args.service));
                }
                let svc = Service { name: args.service.clone(), port: None, hostname: None, prevent_destroy: false };
                let (p, rev) = (project.clone(), desired.revision.clone());
                self.edit(move |dir| edit::upsert_service(dir, &p, &svc, &rev)).await?;
            }
            let scope = Scope { project: Some(project.clone()), only: Some(format!("ports/{project}")) };
            let (_, refused) = self.runtime.apply_safe(&scope, &actor).await.map_err(|e| e.to_string())?;
            if let Some(why) = refused {
                return Err(format!("the port could not be allocated automatically: {why}"));
            }
            let a = lookup().await?.ok_or_else(|| format!("service `{}` of `{project}` has no port after applying; see get_plan", args.service))?;
            let desired = self.runtime.desired().await;
            Ok(Json(PortOut { project: project.clone(), service: args.service.clone(), port: a.port, hostname: hostname(&desired), allocated_now: true }))
        })
        .await
    }

    #[tool(
        description = "Allocated ports: per service (project, service, port, public hostname), the shared services and the project blocks. On a project endpoint, only that project's ports (and the shared services)."
    )]
    async fn list_ports(
        &self,
        Parameters(args): Parameters<ProjectArgs>,
    ) -> Result<Json<PortsOut>, String> {
        self.track("list_ports", async {
            let only = match (&self.endpoint, args.project) {
                (Endpoint::Meta, None) => None,
                (_, given) => Some(self.project(given)?),
            };
            let desired = self.runtime.desired().await;
            let reg = self
                .runtime
                .store
                .port_registry(DEFAULT_HOST)
                .await
                .map_err(|e| e.to_string())?;
            let keep = |p: &str| only.as_deref().is_none_or(|o| o == p);
            Ok(Json(PortsOut {
                ports: port_lines(&desired, &reg, only.as_deref()),
                shared: reg
                    .shared
                    .iter()
                    .map(|s| SharedLine {
                        name: s.name.clone(),
                        port: s.port,
                    })
                    .collect(),
                blocks: reg
                    .ranges
                    .iter()
                    .filter(|r| keep(&r.project))
                    .map(|r| format!("{}: {}–{}", r.project, r.start_port, r.end_port))
                    .collect(),
            }))
        })
        .await
    }

    #[tool(
        description = "Compare the port registry with the sockets listening on this host: each allocation listening or idle, and conflicts (a listener on an unallocated port in a project's block, or on a port allocated to another project)."
    )]
    async fn audit_ports(&self) -> Result<Json<AuditOut>, String> {
        self.track("audit_ports", async {
            let desired = self.runtime.desired().await;
            let mut reg = self
                .runtime
                .store
                .port_registry(DEFAULT_HOST)
                .await
                .map_err(|e| e.to_string())?;
            let listeners = tokio::task::spawn_blocking(sockets::listening)
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot read listening sockets: {e}"))?;
            if let Some(p) = self.endpoint.project() {
                reg.allocations.retain(|a| a.project == p);
                reg.ranges.retain(|r| r.project == p);
            }
            let paths = desired
                .projects
                .values()
                .filter_map(|p| p.path.clone().map(|path| (p.name.clone(), path)))
                .collect();
            let mut report = ports_audit::audit(&reg, &paths, &listeners);
            if self.endpoint.project().is_some() {
                report.shared.clear();
            }
            Ok(Json(AuditOut { report }))
        })
        .await
    }

    #[tool(
        description = "Read a secret's value by path (project/<p>/<name> or service/<p>/<service>/<name>; meta/… on the meta endpoint only). Every read is audited. Use the value directly; never write it into files or logs."
    )]
    async fn get_secret(
        &self,
        Parameters(args): Parameters<SecretPathArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<SecretOut>, String> {
        let actor = self.vault_actor(&self.principal(&ctx));
        self.track("get_secret", async {
            let path = secret_path(&args.path)?;
            let revealed = self
                .vault()?
                .get(&path, &actor)
                .await
                .map_err(vault_error)?;
            Ok(Json(SecretOut {
                path: path.to_string(),
                expired: revealed.expired(),
                expires_at: revealed.expires_at.map(|t| t.to_rfc3339()),
                rotation_required: revealed.rotation_required,
                value: revealed.value.expose().to_string(),
            }))
        })
        .await
    }

    #[tool(
        description = "Store a secret (encrypted at rest, audited) at a path this endpoint may write: project/<p>/<name> or service/<p>/<service>/<name> (meta/… on the meta endpoint). Replaces an existing value."
    )]
    async fn set_secret(
        &self,
        Parameters(args): Parameters<SetSecretArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<SetSecretOut>, String> {
        let actor = self.vault_actor(&self.principal(&ctx));
        self.track("set_secret", async {
            let path = secret_path(&args.path)?;
            let expiry = match &args.expires_at {
                Some(t) => Expiry::At(
                    chrono::DateTime::parse_from_rfc3339(t)
                        .map_err(|e| {
                            format!(
                                "expires_at `{t}` is not RFC 3339 ({e}); e.g. 2027-01-31T00:00:00Z"
                            )
                        })?
                        .with_timezone(&chrono::Utc),
                ),
                None => Expiry::Keep,
            };
            let options = SetOptions {
                description: args.description,
                expiry,
                rotation_required: false,
            };
            let value = SecretValue::new(zeroize::Zeroizing::new(args.value));
            let written = self
                .vault()?
                .set(&path, &value, &options, &actor)
                .await
                .map_err(vault_error)?;
            Ok(Json(SetSecretOut {
                path: path.to_string(),
                written: serde_json::to_value(written)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            }))
        })
        .await
    }

    #[tool(
        description = "List secrets this endpoint may see: path, description, scope, created/updated, last accessed, access count, expiry, rotation flag. Never values."
    )]
    async fn list_secrets(
        &self,
        Parameters(args): Parameters<ListSecretsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<SecretsOut>, String> {
        let actor = self.vault_actor(&self.principal(&ctx));
        self.track("list_secrets", async {
            let scope = match args.scope.as_deref() {
                Some(s) => Some(
                    SecretScope::parse(s)
                        .ok_or_else(|| format!("scope `{s}` is not meta, project or service"))?,
                ),
                None => None,
            };
            let project = match (&self.endpoint, args.project) {
                (Endpoint::Meta, p) => p,
                (_, given) => Some(self.project(given)?),
            };
            let secrets = self
                .vault()?
                .list(&ListFilter { scope, project }, &actor)
                .await
                .map_err(vault_error)?;
            Ok(Json(SecretsOut { secrets }))
        })
        .await
    }

    #[tool(description = "Delete a secret this endpoint may write (audited).")]
    async fn delete_secret(
        &self,
        Parameters(args): Parameters<SecretPathArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<DeletedOut>, String> {
        let actor = self.vault_actor(&self.principal(&ctx));
        self.track("delete_secret", async {
            let path = secret_path(&args.path)?;
            self.vault()?
                .delete(&path, &actor)
                .await
                .map_err(vault_error)?;
            Ok(Json(DeletedOut {
                path: path.to_string(),
                deleted: true,
            }))
        })
        .await
    }

    #[tool(
        description = "Find credentials (API keys, tokens, private keys, passwords in URLs…) in pasted text and suggest a vault path for each; with store: true, store each one there. Values are never echoed back (masked only)."
    )]
    async fn detect_secrets(
        &self,
        Parameters(args): Parameters<DetectSecretsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<DetectOut>, String> {
        let actor = self.vault_actor(&self.principal(&ctx));
        self.track("detect_secrets", async {
            let project = match (&self.endpoint, args.project) {
                (Endpoint::Meta, p) => p,
                (_, given) => Some(self.project(given)?),
            };
            let suggestions =
                detector::suggest(&args.text, project.as_deref()).map_err(|e| e.to_string())?;
            let store = args.store.unwrap_or(false);
            let mut findings = Vec::with_capacity(suggestions.len());
            for s in suggestions {
                let mut stored = false;
                if store {
                    let value = SecretValue::new(zeroize::Zeroizing::new(
                        args.text[s.finding.start..s.finding.end].to_string(),
                    ));
                    let options = SetOptions {
                        description: Some(format!("detected {}", s.finding.kind)),
                        ..Default::default()
                    };
                    self.vault()?
                        .set(&s.path, &value, &options, &actor)
                        .await
                        .map_err(vault_error)?;
                    stored = true;
                }
                findings.push(DetectedOut {
                    kind: s.finding.kind.to_string(),
                    masked: s.finding.masked().to_string(),
                    line: s.line,
                    column: s.column,
                    suggested_path: s.path.to_string(),
                    stored,
                });
            }
            Ok(Json(DetectOut { findings }))
        })
        .await
    }
}

fn resource_uri(project: &str) -> String {
    format!("supervisor://projects/{project}/state")
}

const PLAN_URI: &str = "supervisor://plan";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .build(),
        );
        info.server_info = Implementation::new("supervisor", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(match &self.endpoint {
            Endpoint::Meta => "The supervisor of every project on this host: ports, secrets, desired state and plans. Edits go through desired state (revision-checked) and the reconciler.".into(),
            Endpoint::Project(p) => format!("The supervisor's endpoint for project `{p}`: its ports (get_port), secrets (get_secret, project/{p}/… and service/{p}/…), desired state and plan."),
        });
        info
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let desired = self.runtime.desired().await;
        let mut resources: Vec<_> = desired
            .projects
            .values()
            .filter(|p| self.endpoint.project().is_none_or(|e| e == p.name))
            .map(|p| {
                Resource::new(resource_uri(&p.name), format!("{}.yaml", p.name))
                    .with_description(format!("The desired state of project {} (YAML)", p.name))
                    .with_mime_type("application/yaml")
            })
            .collect();
        resources.push(
            Resource::new(PLAN_URI, "plan")
                .with_description("The current plan (JSON): what apply would change")
                .with_mime_type("application/json"),
        );
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.as_str();
        if uri == PLAN_URI {
            let actor = self.principal(&context).actor();
            let plan = self
                .plan_for(self.endpoint.project().map(str::to_string), &actor)
                .await
                .map_err(|e| ErrorData::internal_error(e, None))?;
            let text = serde_json::to_string_pretty(&plan)
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
            return Ok(ReadResourceResult::new(vec![
                ResourceContents::text(text, uri).with_mime_type("application/json"),
            ])
            .into());
        }
        let project = uri
            .strip_prefix("supervisor://projects/")
            .and_then(|r| r.strip_suffix("/state"))
            .filter(|p| self.endpoint.project().is_none_or(|e| e == *p))
            .ok_or_else(|| {
                ErrorData::resource_not_found(
                    format!("no resource {uri} on this endpoint"),
                    Some(serde_json::json!({ "uri": uri })),
                )
            })?;
        let desired = self.runtime.desired().await;
        if !desired.projects.contains_key(project) {
            return Err(ErrorData::resource_not_found(
                format!("no project {project}"),
                Some(serde_json::json!({ "uri": uri })),
            ));
        }
        let path = desired.project_file(project);
        let text = tokio::fs::read_to_string(&path).await.map_err(|e| {
            ErrorData::internal_error(format!("cannot read {}: {e}", path.display()), None)
        })?;
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, uri).with_mime_type("application/yaml"),
        ])
        .into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let args = match self.endpoint {
            Endpoint::Meta => Some(vec![
                PromptArgument::new("project")
                    .with_description("The project to work on")
                    .with_required(true),
            ]),
            Endpoint::Project(_) => None,
        };
        Ok(ListPromptsResult::with_all_items(vec![Prompt::new(
            "prime",
            Some(
                "Prime an agent with a project's context: ports, public hostnames, required secrets (paths only) and the checks that verify work.",
            ),
            args,
        )]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name != "prime" {
            return Err(ErrorData::invalid_params(
                format!("unknown prompt {}", request.name),
                None,
            ));
        }
        let given = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("project"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let (project, desired) = self
            .known_project(given)
            .await
            .map_err(|e| ErrorData::invalid_params(e, None))?;
        let p = &desired.projects[&project];
        let reg = self
            .runtime
            .store
            .port_registry(DEFAULT_HOST)
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let mut text = format!("You are working on project `{project}`");
        if let Some(path) = &p.path {
            text.push_str(&format!(" in {}", path.display()));
        }
        text.push_str(".\n\nServices:\n");
        for s in &p.services {
            let port = reg
                .allocations
                .iter()
                .find(|a| a.project == project && a.service == s.name)
                .map(|a| a.port.to_string())
                .unwrap_or_else(|| "not allocated yet (call get_port)".into());
            text.push_str(&format!(
                "- {}: port {port}{}\n",
                s.name,
                s.hostname
                    .as_ref()
                    .map(|h| format!(", public at https://{h}"))
                    .unwrap_or_default()
            ));
        }
        if !p.secrets.required.is_empty() {
            text.push_str(
                "\nSecrets (read them with get_secret; never write values into files):\n",
            );
            for r in &p.secrets.required {
                text.push_str(&format!("- {r}\n"));
            }
        }
        if !p.checks.is_empty() {
            text.push_str("\nBefore saying you are done, run:\n");
            for c in &p.checks {
                text.push_str(&format!("- `{c}`\n"));
            }
        }
        Ok(
            GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
                .with_description(format!("Context for project {project}"))
                .into(),
        )
    }
}
