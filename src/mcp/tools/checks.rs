//! `run_checks`: the project's declared checks, run by the supervisor and recorded (see
//! `ops::checks` for what it guarantees). Nothing else can be run through it.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::mcp::McpServer;
use crate::ops::checks::{self, ChecksReport, Which};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunChecksArgs {
    /// The project (defaults to the endpoint's project).
    #[serde(default)]
    pub project: Option<String>,
    /// One declared check, exactly as written in the project's `checks:` (see project_status or
    /// list_projects). Omit it to run every declared check in order.
    #[serde(default)]
    pub check: Option<String>,
    /// The task timer these checks verify (from start_task_timer), recorded with the outcome.
    #[serde(default)]
    pub task_id: Option<String>,
}

#[tool_router(router = checks_tools, vis = "pub(super)")]
impl McpServer {
    #[tool(
        description = "Run the project's declared checks (all, or one given exactly as declared) in the project's folder and record the outcome: passed, exit code, duration and the tail of the output (credentials masked). Only declared checks run: any other command, variant or argument is refused. Work is done when these pass."
    )]
    async fn run_checks(
        &self,
        Parameters(args): Parameters<RunChecksArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ChecksReport>, String> {
        let actor = self.principal(&ctx).actor();
        self.track("run_checks", async {
            let which = match args.check {
                Some(c) => Which::Exactly(c),
                None => Which::All,
            };
            checks::run_checks(
                &self.runtime,
                self.visibility(),
                args.project,
                which,
                args.task_id,
                &actor,
                checks::TIMEOUT,
            )
            .await
            .map(Json)
        })
        .await
    }
}
