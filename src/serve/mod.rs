//! `supervisor serve`: the HTTP server (`/health`, `/metrics`, `/mcp/meta`, `/mcp/{project}`) and the
//! reconcile loop that keeps reality converged.

pub mod http;
pub mod reconcile;
