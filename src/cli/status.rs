//! `supervisor status`: per resource in sync / pending / drifted / failed, the last apply and the git
//! revision of `state/`.

use std::process::ExitCode;

use super::Context;
use super::common::{cli_actor, runtime};
use super::output::Style;
use crate::engine::Scope;
use crate::engine::status::{ResourceStatus, StatusReport};

/// Exit 0 when nothing needs attention, 1 when a resource is blocked or failed (or the plan has
/// errors), so scripts and monitors can rely on the code.
pub async fn run(ctx: &Context) -> anyhow::Result<ExitCode> {
    let rt = match runtime(ctx).await? {
        Ok(rt) => rt,
        Err(code) => return Ok(code),
    };
    let status = crate::ops::status::status(&rt, &Scope::default(), &cli_actor()).await?;
    let (report, secrets) = (&status.report, &status.secrets);
    if ctx.out.json {
        ctx.out.json(&status)?;
    } else {
        let mut text = render(ctx, report);
        for p in &secrets.expired {
            text.push_str(&format!(
                "! secret {p} has expired (still readable; replace it)\n"
            ));
        }
        for p in &secrets.rotation_required {
            text.push_str(&format!("! secret {p} is flagged for rotation\n"));
        }
        ctx.out.text(&text)?;
    }
    Ok(if report.problems {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn render(ctx: &Context, r: &StatusReport) -> String {
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
            ResourceStatus::Blocked => ("blocked", Style::Red),
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
