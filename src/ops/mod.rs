//! The application layer: what the faces (CLI, `serve`, MCP over HTTP and stdio, the status page) share.
//!
//! * [`Runtime`] — one running supervisor: settings, the store, the vault (or why it is unavailable),
//!   the last good desired state, the reconciler's status and the metrics handle.
//! * [`apply`] — the one apply flow (lock → mark interrupted runs → plan → freshness → confirmation →
//!   safety → apply), with a [`ApplyHooks`] callback for what differs between faces: the CLI prints the
//!   plan and asks on the terminal, `serve` and MCP apply only safe plans without asking.
//! * [`Visibility`] — which projects a caller may see (every project, or one), and the one helper that
//!   resolves an optional `project` argument against it.
//! * Library calls that a CLI command and an MCP tool both need ([`ports`], [`status`], [`knowledge`],
//!   [`gcloud`]).
//!
//! Dependencies point down: `cli`/`serve` → `mcp` → `ops` → `engine` → `providers` → `clients`/`store`.
//! Nothing here knows about terminals, HTTP or MCP; callers render.

pub mod apply;
pub mod checks;
mod error;
pub mod gcloud;
pub mod instructions;
pub mod knowledge;
pub mod metrics;
pub mod port_snapshot;
pub mod ports;
pub mod runtime;
pub mod status;
mod visibility;

pub use apply::{ApplyHooks, ApplyOutcome, ApplyRequest, Approval, Refusal, Unattended, apply};
pub use error::OpsError;
pub use runtime::{DesiredError, ReconcileStatus, Runtime};
pub use visibility::{Visibility, VisibilityError};
