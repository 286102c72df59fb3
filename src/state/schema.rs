//! JSON Schema of the two kinds of state file, for editors (`yaml-language-server`) and for agents.
//! Generated from the same types the loader uses, so it cannot drift from what is accepted.

use schemars::schema_for;
use serde_json::{Value, json};

use super::model::{ProjectFile, SupervisorFile};

/// `{ "supervisor.yaml": <schema>, "project": <schema> }`
pub fn schemas() -> Value {
    json!({
        "format_version": crate::FORMAT_VERSION,
        "supervisor.yaml": schema_for!(SupervisorFile),
        "project": schema_for!(ProjectFile),
    })
}
