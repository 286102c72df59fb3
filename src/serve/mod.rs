//! `supervisor serve`: the HTTP server (`/health`, `/metrics`, `/mcp/meta`, `/mcp/{project}`, the status
//! page), the reconcile loop that keeps reality converged, and the task that keeps knowledge folders
//! indexed.

pub mod connections;
pub mod guard;
pub mod http;
pub mod knowledge;
pub mod origin;
pub mod page;
pub mod reconcile;
