//! The MCP tools, one file per area, each a named tool router on [`McpServer`]; [`all`] combines them.
//!
//! Conventions every tool keeps: its project comes from `self.visibility()` (a project endpoint sees
//! only its own project, whatever the arguments say); it calls the same library functions as the CLI
//! (`ops`, `engine`, `state::edit`, the vault); it returns `Result<Json<T>, String>` spelled out (rmcp
//! derives the outputSchema from that syntax) through `self.track`, which records the call's metrics
//! and turns errors into messages an agent can act on; and no argument or result value is logged.

use rmcp::handler::server::router::tool::ToolRouter;

use super::McpServer;

mod checks;
mod gcloud;
mod knowledge;
mod plan;
mod ports;
mod secrets;
mod state;
mod timing;

/// Tools served on the meta endpoint only (removed from project endpoints' lists).
pub const META_ONLY: &[&str] = gcloud::TOOLS;

/// Every tool.
pub fn all() -> ToolRouter<McpServer> {
    McpServer::state_tools()
        + McpServer::plan_tools()
        + McpServer::checks_tools()
        + McpServer::ports_tools()
        + McpServer::secrets_tools()
        + McpServer::timing_tools()
        + McpServer::knowledge_tools()
        + McpServer::gcloud_tools()
}
