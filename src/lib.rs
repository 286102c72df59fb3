//! `supervisor`: declarative desired state for a fleet of projects on cloud VMs, reconciled by a
//! Terraform-style plan/apply engine and served to AI coding agents over MCP.
//!
//! See `ARCHITECTURE.md` for the map of modules and the invariants between them.

pub mod cli;
pub mod clients;
pub mod config;
pub mod engine;
pub mod logging;
pub mod mcp;
pub mod ops;
pub mod providers;
pub mod secrets;
pub mod serve;
pub mod state;
pub mod store;

/// The `format_version` of every JSON document the supervisor prints or saves (`plan --json`, saved plans,
/// `status --json`, every command's `--json`): always this string. `docs/json-output.md` documents it.
pub const FORMAT_VERSION: &str = "1";
