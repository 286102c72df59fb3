//! The MCP server: one handler type, instantiated per endpoint (`Endpoint::Meta` or
//! `Endpoint::Project`). Tools live in `tools/<area>.rs`, each a named tool router; they are combined
//! here once per process and endpoint kind ([`McpServer::new`] only clones an `Arc`), with their JSON
//! Schemas made acceptable to every client (`schema.rs`). Prompts are a table in `prompts.rs`;
//! resources (each project's state file, the plan) are served here.
//!
//! Every tool resolves its project through [`McpServer::visibility`] (`ops::Visibility`), which is where
//! project endpoints are confined to their own project.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourcesResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool_handler};

use super::auth::Principal;
use super::{prompts, schema};
use crate::engine::{Plan, Scope};
use crate::ops::{OpsError, Runtime, Visibility};
use crate::secrets::vault::Actor;

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

    /// The URL path of the endpoint (`/mcp/meta`, `/mcp/<project>`), also used in actor names.
    pub fn path(&self) -> String {
        format!("/mcp/{}", self.label())
    }

    /// What callers of this endpoint may see.
    pub fn visibility(&self) -> Visibility {
        match self {
            Endpoint::Meta => Visibility::All,
            Endpoint::Project(p) => Visibility::Project(p.clone()),
        }
    }
}

#[derive(Clone)]
pub struct McpServer {
    pub(super) runtime: Arc<Runtime>,
    pub(super) endpoint: Endpoint,
    visibility: Visibility,
    /// The caller when no HTTP request carries one (stdio).
    default_principal: Principal,
    tools: Arc<ToolRouter<McpServer>>,
}

// Tools return `Result<Json<T>, String>` spelled out: rmcp's #[tool] macro derives the outputSchema from
// the return type's syntax (`Json<T>` or `Result<Json<T>, E>`), so an alias would silently drop it.
// `Err(message)` is a tool result with isError: true, which the agent reads.

impl McpServer {
    pub fn new(runtime: Arc<Runtime>, endpoint: Endpoint, default_principal: Principal) -> Self {
        McpServer {
            tools: Self::tools_for(&endpoint),
            visibility: endpoint.visibility(),
            runtime,
            endpoint,
            default_principal,
        }
    }

    /// The tools of an endpoint kind: built (routes, schemas, name checks) once per process and shared
    /// by every server instance — a stateless request creates one.
    pub fn tools_for(endpoint: &Endpoint) -> Arc<ToolRouter<McpServer>> {
        static META: OnceLock<Arc<ToolRouter<McpServer>>> = OnceLock::new();
        static PROJECT: OnceLock<Arc<ToolRouter<McpServer>>> = OnceLock::new();
        let (cell, meta) = match endpoint {
            Endpoint::Meta => (&META, true),
            Endpoint::Project(_) => (&PROJECT, false),
        };
        cell.get_or_init(|| {
            let mut router = super::tools::all();
            if !meta {
                for name in super::tools::META_ONLY {
                    router.remove_route(name);
                }
            }
            schema::make_portable(&mut router);
            Arc::new(router)
        })
        .clone()
    }

    /// The caller of this request: the verified token put in the request's extensions by the HTTP
    /// auth layer, or the local user over stdio.
    pub(super) fn principal(&self, ctx: &RequestContext<RoleServer>) -> Principal {
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Principal>().cloned())
            .unwrap_or_else(|| self.default_principal.clone())
    }

    /// What this endpoint's callers may see; every project argument is resolved through it.
    pub(super) fn visibility(&self) -> &Visibility {
        &self.visibility
    }

    /// Runs a tool body, recording its outcome and latency; errors become the tool's error text.
    pub(super) async fn track<T>(
        &self,
        tool: &'static str,
        body: impl Future<Output = Result<T, OpsError>>,
    ) -> Result<T, String> {
        let started = Instant::now();
        let result = body.await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        let elapsed = started.elapsed();
        // Which tool, how it ended and how long it took — never its arguments or result (rmcp's own
        // message logging is capped for that reason; see `logging`). Debug, not info: a line per call
        // costs the hot path (`get_port`) ~20 % of its CPU, and `/metrics` counts calls per tool.
        tracing::debug!(
            tool,
            outcome,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "MCP tool call"
        );
        self.runtime.metrics.tool_call(tool, outcome, elapsed);
        result.map_err(|e| capped(message(&e)))
    }

    pub(super) async fn plan_for(
        &self,
        project: Option<String>,
        actor: &str,
    ) -> Result<Plan, OpsError> {
        self.runtime
            .plan(
                &Scope {
                    project,
                    only: None,
                },
                actor,
            )
            .await
    }

    /// The vault actor for a call: named after the endpoint and token, confined to the endpoint's
    /// project on project endpoints (whatever token is used).
    pub(super) fn vault_actor(&self, principal: &Principal) -> Actor {
        let who = match principal {
            Principal::Local { who } => Some(who.as_str()),
            other => other.token_id(),
        };
        Actor::mcp(&self.endpoint.path(), who, self.endpoint.project())
    }
}

/// The longest line of an error an agent gets, and the longest error, in characters. Messages quote
/// the argument they are about (``no VM `…` ``), and an argument can be a mebibyte.
const MESSAGE_LINE_MAX: usize = 1_000;
const MESSAGE_MAX: usize = 8_000;

/// `message` with each line longer than [`MESSAGE_LINE_MAX`] cut (saying how long it was), and the
/// whole cut at [`MESSAGE_MAX`]: a list of problems keeps its lines, a quoted huge argument does not
/// come back whole.
fn capped(message: String) -> String {
    if message.len() <= MESSAGE_LINE_MAX {
        return message;
    }
    let mut out = String::new();
    for (i, line) in message.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let chars = line.chars().count();
        if chars > MESSAGE_LINE_MAX {
            out.extend(line.chars().take(MESSAGE_LINE_MAX));
            out.push_str(&format!("…({chars} characters)"));
        } else {
            out.push_str(line);
        }
        if out.chars().count() > MESSAGE_MAX {
            out = out.chars().take(MESSAGE_MAX).collect();
            out.push_str("…(cut)");
            break;
        }
    }
    out
}

/// An error as the agent reads it: what went wrong and what to do.
fn message(e: &OpsError) -> String {
    use crate::secrets::vault::VaultError;
    match e {
        OpsError::Vault(VaultError::NotFound { path }) => {
            format!("no secret at {path} (store one with set_secret)")
        }
        OpsError::Vault(VaultError::Denied { path, .. }) => format!(
            "{path} is not visible from this endpoint (only its project's project/… and service/… secrets are)"
        ),
        other => other.to_string(),
    }
}

fn resource_uri(project: &str) -> String {
    format!("supervisor://projects/{project}/state")
}

const PLAN_URI: &str = "supervisor://plan";

#[tool_handler(router = self.tools)]
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
            .filter(|p| self.visibility.sees(&p.name))
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
                .map_err(|e| ErrorData::internal_error(capped(message(&e)), None))?;
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
            .filter(|p| self.visibility.sees(p))
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
        Ok(ListPromptsResult::with_all_items(prompts::list(
            &self.endpoint,
        )))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        prompts::get(self, request).await.map(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_quoting_a_huge_argument_are_cut() {
        let huge = "x".repeat(1 << 20);
        let m = capped(format!("no VM `{huge}` (known: host-1)"));
        let tail = "…(1048600 characters)";
        assert_eq!(m.chars().count(), MESSAGE_LINE_MAX + tail.chars().count());
        assert!(
            m.starts_with("no VM `xxx") && m.ends_with(tail),
            "{}",
            &m[..100]
        );
        let list = (0..20)
            .map(|i| format!("  - problem {i}"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(capped(list.clone()), list);
        let many = "\n".repeat(1 << 20);
        assert!(capped(many).chars().count() <= MESSAGE_MAX + "…(cut)".len());
    }
}
