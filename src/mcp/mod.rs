//! MCP: the tools, resources and prompts agents use, served at `/mcp/meta` (everything) and
//! `/mcp/{project}` (that project only) over streamable HTTP, and over stdio by `supervisor mcp`.
//!
//! Tools call the same library functions as the CLI (`ops`, engine, state edits, store, vault); nothing
//! here duplicates their logic. Scoping is enforced per call through `ops::Visibility`: a project
//! endpoint sees and edits only its own project, ports and secrets (`project/<p>/…`, `service/<p>/…`),
//! whatever the arguments say. Errors a caller can act on are tool results with `isError: true` and a
//! message saying what to do.
//!
//! Layout: `server.rs` (the handler, resources, the shared tool router), `tools/<area>.rs` (one named
//! router per area), `prompts.rs` (the prompt table), `schema.rs` (schemas every client accepts),
//! `auth.rs` (bearer tokens).

pub mod auth;
mod prompts;
pub mod schema;
pub mod server;
mod tools;

pub use server::{Endpoint, McpServer};
