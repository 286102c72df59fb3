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
    Failed,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct StatusReport {
    pub format_version: &'static str,
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
    let mut resources = Vec::new();
    for r in &plan.resources {
        let change = pending.get(r.address.as_str());
        let entry = by_address.get(r.address.as_str());
        let failed = entry.filter(|e| e.status == "failed");
        let status = match (change, failed) {
            (Some(_), Some(_)) => ResourceStatus::Failed,
            (Some(c), None) if c.drifted => ResourceStatus::Drifted,
            (Some(_), None) => ResourceStatus::Pending,
            (None, _) => ResourceStatus::InSync,
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
            error: failed
                .filter(|_| change.is_some())
                .and_then(|e| e.error.clone()),
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
        format_version: "1",
        desired_revision: plan.desired_revision.clone(),
        git_revision,
        last_apply,
        resources,
        removals,
        warnings: plan.warnings.clone(),
        errors: plan.errors.clone(),
    }
}
