//! MCP: the tools, resources and prompts agents use, served at `/mcp/meta` (everything) and
//! `/mcp/{project}` (that project only) over streamable HTTP, and over stdio by `supervisor mcp`.
//!
//! Tools call the same library functions as the CLI (engine, state edits, store, vault); nothing here
//! duplicates their logic. Scoping is enforced here, per call: a project endpoint sees and edits only its
//! own project, ports and secrets (`project/<p>/…`, `service/<p>/…`), whatever the arguments say.
//! Errors a caller can act on are tool results with `isError: true` and a message saying what to do.

pub mod auth;
pub mod server;

pub use server::{Endpoint, McpServer};
