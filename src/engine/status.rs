//! `status`: per declared resource, in sync / pending / drifted / failed, from a fresh plan and the
//! journal — shared by the CLI and the MCP `project_status` tool.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::{Action, Change, Notice, Plan};
use crate::store::{ApplyRun, JournalEntry};

#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResourceStatus {
    InSync,
    Pending,
    Drifted,
    /// The last apply of its pending change failed.
    Failed,
    /// The plan has an error about it (an unmanaged record in the way, no free port): nothing can be
    /// applied until someone acts.
    Blocked,
}

impl ResourceStatus {
    /// Whether the resource needs someone's attention (`status` exits 1).
    pub fn is_problem(self) -> bool {
        matches!(self, ResourceStatus::Failed | ResourceStatus::Blocked)
    }

    /// The words people read (`in sync`, `pending`, …).
    pub fn label(self) -> &'static str {
        match self {
            ResourceStatus::InSync => "in sync",
            ResourceStatus::Pending => "pending",
            ResourceStatus::Drifted => "drifted",
            ResourceStatus::Failed => "failed",
            ResourceStatus::Blocked => "blocked",
        }
    }

    /// How much attention it needs: in sync < pending < drifted < failed < blocked.
    fn severity(self) -> u8 {
        match self {
            ResourceStatus::InSync => 0,
            ResourceStatus::Pending => 1,
            ResourceStatus::Drifted => 2,
            ResourceStatus::Failed => 3,
            ResourceStatus::Blocked => 4,
        }
    }

    /// The state of a group of resources (a project): the one needing the most attention; in sync when
    /// there are none.
    pub fn worst(statuses: impl IntoIterator<Item = ResourceStatus>) -> ResourceStatus {
        statuses
            .into_iter()
            .max_by_key(|s| s.severity())
            .unwrap_or(ResourceStatus::InSync)
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ResourceLine {
    pub address: String,
    pub provider: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub status: ResourceStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_applied_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The apply run that last changed it successfully.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_applied_run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct StatusReport {
    pub format_version: &'static str,
    /// Whether anything needs attention: a blocked or failed resource, or a plan error.
    pub problems: bool,
    pub desired_revision: String,
    pub git_revision: Option<String>,
    #[schemars(with = "Option<serde_json::Value>")]
    pub last_apply: Option<ApplyRun>,
    pub resources: Vec<ResourceLine>,
    /// Changes to resources no longer declared (deletions pending).
    pub removals: Vec<String>,
    pub warnings: Vec<Notice>,
    pub errors: Vec<Notice>,
}

/// Joins a fresh plan with the journal's newest entry per address. Pure.
///
/// A resource the plan has an error about is blocked, never in sync — whether or not the error produced
/// a change (an unmanaged record in the way produces none). An error naming no address blocks every
/// resource of its provider.
pub fn report(
    plan: &Plan,
    journal: &[JournalEntry],
    last_apply: Option<ApplyRun>,
    git_revision: Option<String>,
) -> StatusReport {
    let by_address: HashMap<&str, &JournalEntry> =
        journal.iter().map(|e| (e.address.as_str(), e)).collect();
    let pending: HashMap<&str, &Change> = plan
        .changes
        .iter()
        .map(|c| (c.address.as_str(), c))
        .collect();
    let mut blocking: HashMap<&str, &Notice> = HashMap::new();
    let mut provider_wide: HashMap<&str, &Notice> = HashMap::new();
    for e in &plan.errors {
        match &e.address {
            Some(a) => {
                blocking.entry(a.as_str()).or_insert(e);
            }
            None => {
                provider_wide.entry(e.provider.as_str()).or_insert(e);
            }
        }
    }
    let mut resources = Vec::new();
    for r in &plan.resources {
        let change = pending.get(r.address.as_str());
        let entry = by_address.get(r.address.as_str());
        let failed = entry.filter(|e| e.status == "failed");
        let blocked = blocking
            .get(r.address.as_str())
            .or_else(|| provider_wide.get(r.provider.as_str()));
        let status = match (blocked, change, failed) {
            (Some(_), _, _) => ResourceStatus::Blocked,
            (None, Some(_), Some(_)) => ResourceStatus::Failed,
            (None, Some(c), None) if c.drifted => ResourceStatus::Drifted,
            (None, Some(_), None) => ResourceStatus::Pending,
            (None, None, _) => ResourceStatus::InSync,
        };
        resources.push(ResourceLine {
            address: r.address.clone(),
            provider: r.provider.clone(),
            project: r.project.clone(),
            status,
            pending: change.map(|c| c.action),
            last_applied_at: entry
                .filter(|e| e.status == "succeeded")
                .and_then(|e| e.finished_at),
            last_applied_run: entry
                .filter(|e| e.status == "succeeded")
                .map(|e| e.run_id.clone()),
            error: match blocked {
                Some(n) => Some(n.message.clone()),
                None => failed
                    .filter(|_| change.is_some())
                    .and_then(|e| e.error.clone()),
            },
        });
    }
    let declared: HashSet<&str> = plan.resources.iter().map(|r| r.address.as_str()).collect();
    let removals = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Delete && !declared.contains(c.address.as_str()))
        .map(|c| c.address.clone())
        .collect();
    StatusReport {
        format_version: crate::FORMAT_VERSION,
        desired_revision: plan.desired_revision.clone(),
        git_revision,
        last_apply,
        removals,
        problems: !plan.errors.is_empty() || resources.iter().any(|l| l.status.is_problem()),
        resources,
        warnings: plan.warnings.clone(),
        errors: plan.errors.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::ResourceStatus::*;
    use super::*;

    #[test]
    fn a_group_is_as_bad_as_its_worst_resource() {
        assert_eq!(
            ResourceStatus::worst([]),
            InSync,
            "nothing declared is nothing out of sync"
        );
        assert_eq!(ResourceStatus::worst([InSync, Pending, InSync]), Pending);
        assert_eq!(ResourceStatus::worst([Pending, Drifted]), Drifted);
        assert_eq!(ResourceStatus::worst([Drifted, Failed, Pending]), Failed);
        assert_eq!(ResourceStatus::worst([Failed, Blocked]), Blocked);
        let labels: Vec<&str> = [InSync, Pending, Drifted, Failed, Blocked]
            .iter()
            .map(|s| s.label())
            .collect();
        assert_eq!(
            labels,
            ["in sync", "pending", "drifted", "failed", "blocked"]
        );
    }
}
