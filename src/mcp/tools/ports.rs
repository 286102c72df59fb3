//! Port tools: a service's port (declared and allocated on first ask), the registry, and the registry
//! against the sockets listening on this host.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::plan::ScopeArgs;
use crate::mcp::McpServer;
use crate::ops::OpsError;
use crate::ops::ports::{PortInfo, PortListing, WhenMissing};
use crate::providers::{ports_audit, sockets};
use crate::store::DEFAULT_HOST;

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

#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditOut {
    pub report: ports_audit::AuditReport,
}

#[tool_router(router = ports_tools, vis = "pub(super)")]
impl McpServer {
    #[tool(
        description = "The port of a service. If the service is declared but not allocated yet, its port is allocated now; if it is not declared and allocate is true (default), it is added to the project's desired state first. Use the returned port to bind your server."
    )]
    async fn get_port(
        &self,
        Parameters(args): Parameters<GetPortArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<PortInfo>, String> {
        let actor = self.principal(&ctx).actor();
        self.track("get_port", async {
            let when_missing = if args.allocate.unwrap_or(true) {
                WhenMissing::Allocate
            } else {
                WhenMissing::Fail
            };
            crate::ops::ports::get_port(
                &self.runtime,
                self.visibility(),
                args.project,
                &args.service,
                when_missing,
                &actor,
            )
            .await
            .map(Json)
        })
        .await
    }

    #[tool(
        description = "Allocated ports: per service (project, service, port, public hostname), the shared services and the project blocks. On a project endpoint, only that project's ports (and the shared services)."
    )]
    async fn list_ports(
        &self,
        Parameters(args): Parameters<ScopeArgs>,
    ) -> Result<Json<PortListing>, String> {
        self.track("list_ports", async {
            crate::ops::ports::list_ports(&self.runtime, self.visibility(), args.project)
                .await
                .map(Json)
        })
        .await
    }

    #[tool(
        description = "Compare the port registry with the sockets listening on this host: each allocation listening or idle, and conflicts (a listener on an unallocated port in a project's block, or on a port allocated to another project)."
    )]
    async fn audit_ports(&self) -> Result<Json<AuditOut>, String> {
        self.track("audit_ports", async {
            let desired = self.runtime.desired().await;
            let mut reg = self.runtime.store.port_registry(DEFAULT_HOST).await?;
            let listeners = tokio::task::spawn_blocking(sockets::listening)
                .await
                .map_err(|e| OpsError::Internal(e.to_string()))?
                .map_err(|e| OpsError::Internal(format!("cannot read listening sockets: {e}")))?;
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
}
