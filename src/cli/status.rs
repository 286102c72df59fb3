//! `supervisor status`: per resource in sync / pending / drifted / failed, the last apply and the git
//! revision of `state/`.

use std::collections::HashMap;
use std::process::ExitCode;

use serde::Serialize;

use super::Context;
use super::common::{engine, load_desired, open_store};
use super::output::Style;
use crate::engine::{Action, Notice, Scope};
use crate::state::git_revision;
use crate::store::ApplyRun;

#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ResourceStatus {
    InSync,
    Pending,
    Drifted,
    Failed,
}

#[derive(Debug, Serialize)]
struct ResourceLine {
    address: String,
    provider: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<String>,
    status: ResourceStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending: Option<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_applied_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    format_version: &'static str,
    desired_revision: String,
    git_revision: Option<String>,
    last_apply: Option<ApplyRun>,
    resources: Vec<ResourceLine>,
    /// Changes to resources no longer declared (deletions pending).
    removals: Vec<String>,
    warnings: Vec<Notice>,
    errors: Vec<Notice>,
}

pub async fn run(ctx: &Context) -> anyhow::Result<ExitCode> {
    let desired = match load_desired(ctx) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let store = open_store(ctx).await?;
    let engine = engine(&desired, store.clone(), &[]).await?;
    let plan = engine.plan(&desired, &Scope::default()).await?;
    let journal = store.latest_journal_entries().await?;
    let last_apply = store.last_run().await?;
    let by_address: HashMap<&str, &crate::store::JournalEntry> =
        journal.iter().map(|e| (e.address.as_str(), e)).collect();
    let pending: HashMap<&str, &crate::engine::Change> = plan
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
    let declared: std::collections::HashSet<&str> =
        plan.resources.iter().map(|r| r.address.as_str()).collect();
    let removals = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Delete && !declared.contains(c.address.as_str()))
        .map(|c| c.address.clone())
        .collect();
    let report = Report {
        format_version: "1",
        desired_revision: desired.revision.clone(),
        git_revision: git_revision(&desired.dir),
        last_apply,
        resources,
        removals,
        warnings: plan.warnings.clone(),
        errors: plan.errors.clone(),
    };
    if ctx.out.json {
        ctx.out.json(&report)?;
    } else {
        ctx.out.text(&render(ctx, &report))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn render(ctx: &Context, r: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "desired state {}{}\n",
        r.desired_revision,
        r.git_revision
            .as_ref()
            .map(|g| format!(" (git {g})"))
            .unwrap_or_default()
    ));
    match &r.last_apply {
        Some(run) => out.push_str(&format!(
            "last apply    {} {} by {} (desired {}{})\n\n",
            run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            run.status,
            run.actor,
            run.desired_revision,
            run.git_revision
                .as_ref()
                .map(|g| format!(", git {g}"))
                .unwrap_or_default()
        )),
        None => out.push_str("last apply    never\n\n"),
    }
    let width = r
        .resources
        .iter()
        .map(|l| l.address.len())
        .max()
        .unwrap_or(0)
        .min(60);
    for l in &r.resources {
        let (label, style) = match l.status {
            ResourceStatus::InSync => ("in sync", Style::Green),
            ResourceStatus::Pending => ("pending", Style::Yellow),
            ResourceStatus::Drifted => ("drifted", Style::Yellow),
            ResourceStatus::Failed => ("failed ", Style::Red),
        };
        let mut line = format!("{:<width$}  {}", l.address, ctx.out.paint(label, style));
        if let Some(a) = l.pending {
            line.push_str(&format!("  ({} pending)", a.as_str()));
        }
        if let Some(t) = l.last_applied_at {
            line.push_str(&format!("  applied {}", t.format("%Y-%m-%d %H:%M:%S")));
        }
        if let Some(e) = &l.error {
            line.push_str(&format!("  error: {e}"));
        }
        out.push_str(&line);
        out.push('\n');
    }
    for a in &r.removals {
        out.push_str(&format!(
            "{a:<width$}  {}\n",
            ctx.out.paint("pending (delete)", Style::Yellow)
        ));
    }
    for w in &r.warnings {
        out.push_str(&format!("! {}\n", w.message));
    }
    for e in &r.errors {
        out.push_str(&format!("✗ {}\n", e.message));
    }
    let in_sync = r
        .resources
        .iter()
        .filter(|l| l.status == ResourceStatus::InSync)
        .count();
    out.push_str(&format!(
        "\n{in_sync} of {} resources in sync.\n",
        r.resources.len()
    ));
    out
}
