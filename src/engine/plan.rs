//! Plans as data: ordered changes with Terraform's actions, plus warnings and errors, and the
//! fingerprints that make a saved plan refuse to apply to a world that moved on.
//!
//! The JSON shape (`format_version` "1") is documented in `docs/plan-format.md` and is what
//! `plan --json`, `plan --out` and the MCP `get_plan` tool emit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const PLAN_FORMAT_VERSION: &str = "1";

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    PartialOrd,
    Ord,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
    Replace,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Replace => "replace",
        }
    }
    /// Terraform's symbol for the action.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Delete => "-",
            Action::Replace => "-/+",
        }
    }
}

/// One change to one resource. `before`/`after` are the resource's attributes as the provider models
/// them (never a secret value); `after` is also what `apply` carries out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Change {
    pub address: String,
    pub provider: String,
    pub action: Action,
    /// The project the resource belongs to, for `--project` filtering and scoped views.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// One line for people: `port 3102 (first free in 3100–3199)`.
    pub summary: String,
    /// The change repairs something edited outside the supervisor.
    #[serde(default)]
    pub drifted: bool,
    /// Carrying it out interrupts a running service (a VM resize stops the VM).
    #[serde(default)]
    pub disruptive: bool,
    /// A unified diff, for file resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Addresses of changes in the same plan that must be applied before this one (a port vacated
    /// before it is taken). A scoped plan that leaves one of them out is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
}

/// Something the user should know that is not a change (a required secret that is missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Notice {
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub message: String,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

/// What made the plan: filters and the state it was computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Scope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<String>,
}

impl Scope {
    pub fn includes(&self, address: &str, project: Option<&str>) -> bool {
        if let Some(p) = &self.project
            && project != Some(p.as_str())
        {
            return false;
        }
        match &self.only {
            Some(prefix) => {
                let prefix = prefix.trim_end_matches('/');
                address == prefix || address.starts_with(&format!("{prefix}/"))
            }
            None => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Plan {
    pub format_version: String,
    pub desired_revision: String,
    /// sha256 over every provider's observation: a saved plan is refused when it differs at apply.
    pub observed_fingerprint: String,
    /// Per provider, the fingerprint of what it observed (to say which part of reality moved).
    pub observed: BTreeMap<String, String>,
    pub scope: Scope,
    pub changes: Vec<Change>,
    /// Problems that block applying (a protected resource would be destroyed, an unmanaged record is in
    /// the way). A plan with errors is shown but never applied.
    pub errors: Vec<Notice>,
    pub warnings: Vec<Notice>,
    pub summary: Summary,
    /// Per provider, what it manages (`tunnel`: `remote, tunnel 4f1c5e2a…`), for section headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub providers: BTreeMap<String, String>,
    /// Every declared resource (changed or not); not part of the saved/JSON plan.
    #[serde(skip)]
    pub resources: Vec<super::Resource>,
    /// What providers offered each other while planning (see [`super::Outputs`]); not saved.
    #[serde(skip)]
    #[schemars(skip)]
    pub outputs: super::Outputs,
}

impl Plan {
    pub fn summarize(changes: &[Change]) -> Summary {
        let mut s = Summary::default();
        for c in changes {
            match c.action {
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Delete => s.destroy += 1,
                Action::Replace => {
                    s.add += 1;
                    s.destroy += 1;
                }
            }
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn disruptive(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.disruptive)
    }

    /// Reads a plan saved by `plan --out` from the file's bytes: UTF-8 JSON of this format version,
    /// every field of the shape above (nothing is defaulted that the format requires). Anything else —
    /// bytes that are not UTF-8, JSON that is malformed, nested too deeply or of another shape, another
    /// `format_version` — is [`super::EngineError::BadPlanFile`] saying what and where (line and
    /// column). Reading never applies anything: `apply` still re-plans and compares
    /// ([`super::Engine::check_fresh`]).
    pub fn from_saved(bytes: &[u8]) -> Result<Plan, super::EngineError> {
        let bad = super::EngineError::BadPlanFile;
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let (line, column) = line_column(&bytes[..e.valid_up_to()]);
            bad(format!(
                "line {line}, column {column}: the file is not UTF-8 text (a saved plan is JSON)"
            ))
        })?;
        let plan: Plan = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if plan.format_version != PLAN_FORMAT_VERSION {
            return Err(bad(format!(
                "format_version {:?} is not supported (expected {PLAN_FORMAT_VERSION:?})",
                plan.format_version.chars().take(40).collect::<String>()
            )));
        }
        Ok(plan)
    }
}

/// The 1-based line and column (in characters) just after `valid`, the UTF-8 prefix of a text.
fn line_column(valid: &[u8]) -> (usize, usize) {
    // `valid` ends on a character boundary (it is what `from_utf8` accepted).
    let text = std::str::from_utf8(valid).unwrap_or_default();
    let line = text.matches('\n').count() + 1;
    let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved() -> String {
        serde_json::json!({
            "format_version": "1", "desired_revision": "sha256:a", "observed_fingerprint": "sha256:b",
            "observed": {"ports": "sha256:c"}, "scope": {}, "changes": [], "errors": [], "warnings": [],
            "summary": {"add": 0, "change": 0, "destroy": 0}
        })
        .to_string()
    }

    fn error(bytes: &[u8]) -> String {
        Plan::from_saved(bytes).unwrap_err().to_string()
    }

    #[test]
    fn a_saved_plan_reads_back_and_anything_else_says_what_is_wrong() {
        assert_eq!(
            Plan::from_saved(saved().as_bytes())
                .unwrap()
                .desired_revision,
            "sha256:a"
        );
        let mut bytes = b"{\n  \"format_version\": \"".to_vec();
        bytes.push(0xff);
        assert_eq!(
            error(&bytes),
            "the saved plan cannot be read: line 2, column 22: the file is not UTF-8 text (a saved plan is JSON)"
        );
        assert!(
            error(saved().replace("\"1\"", "\"2\"").as_bytes())
                .ends_with("format_version \"2\" is not supported (expected \"1\")")
        );
        assert!(error(b"").contains("EOF while parsing"));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let change = format!(
            r#"[{{"address": "a", "provider": "p", "action": "create", "before": null, "after": {deep}, "summary": "s"}}]"#
        );
        let text = saved().replace(r#""changes":[]"#, &format!(r#""changes":{change}"#));
        assert!(text.contains(&deep));
        assert!(error(text.as_bytes()).contains("recursion limit exceeded"));
        assert!(
            error(saved().replace("\"summary\"", "\"summery\"").as_bytes())
                .contains("missing field `summary`")
        );
    }
}
