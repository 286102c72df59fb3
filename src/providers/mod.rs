//! Providers: one per kind of reality, each implementing [`crate::engine::Provider`] — observe, diff
//! (a pure function, unit-tested with plain values), apply one change.
//!
//! Providers know nothing of the CLI or MCP; API clients they use know nothing of plans.

pub mod ports;
pub mod ports_audit;
pub mod secrets;
pub mod sockets;

use std::sync::Arc;

use crate::engine::Provider;
use crate::state::Desired;
use crate::store::{DEFAULT_HOST, Store};

/// The providers for `desired`, in apply order: ports → (tunnel → dns → vm → instructions) → secrets.
pub fn for_desired(_desired: &Desired, store: Arc<dyn Store>) -> Vec<Box<dyn Provider>> {
    vec![
        Box::new(ports::PortsProvider::new(store.clone(), DEFAULT_HOST)),
        Box::new(secrets::RequiredSecretsProvider::new(store)),
    ]
}
