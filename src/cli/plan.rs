//! `supervisor plan` and `supervisor apply`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;

use super::common::{cli_actor, runtime};
use super::output::Style;
use super::{ApplyArgs, Context, PlanArgs};
use crate::engine::render::LineKind;
use crate::engine::{ApplyEvent, Engine, EngineError, Plan, Scope, render};
use crate::ops::{self, ApplyHooks, ApplyOutcome, ApplyRequest, Approval, OpsError, Refusal};
use crate::state::{Desired, edit::write_atomic};

fn check_project(desired: &Desired, scope: &Scope) -> Result<(), String> {
    match &scope.project {
        Some(p) if !desired.projects.contains_key(p) => Err(format!(
            "error: there is no project `{p}` in {}",
            desired.dir.display()
        )),
        _ => Ok(()),
    }
}

fn header(desired: &Desired, engine: &Engine, elapsed: Duration) -> String {
    format!(
        "Reading {} ({} project{}, {} service{}) … observing {} … done in {:.2} s\n\n",
        desired.dir.display(),
        desired.projects.len(),
        if desired.projects.len() == 1 { "" } else { "s" },
        desired.service_count(),
        if desired.service_count() == 1 {
            ""
        } else {
            "s"
        },
        engine.provider_names().join(", "),
        elapsed.as_secs_f64()
    )
}

/// Colours a rendered plan line by line (on a terminal only).
fn paint_plan(ctx: &Context, text: &str) -> String {
    if !ctx.out.color {
        return text.to_string();
    }
    text.lines()
        .map(|l| {
            let style = match render::line_kind(l) {
                LineKind::Destroy | LineKind::Error => Some(Style::Red),
                LineKind::Create => Some(Style::Green),
                LineKind::Update | LineKind::Warning => Some(Style::Yellow),
                LineKind::Heading => Some(Style::Bold),
                LineKind::Plain => None,
            };
            match style {
                Some(s) => ctx.out.paint(l, s),
                None => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

pub async fn plan(ctx: &Context, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let rt = match runtime(ctx).await? {
        Ok(rt) => rt,
        Err(code) => return Ok(code),
    };
    let desired = rt.desired().await;
    let scope = Scope {
        project: args.project,
        only: args.only,
    };
    if let Err(msg) = check_project(&desired, &scope) {
        eprintln!("{msg}");
        return Ok(ExitCode::from(1));
    }
    let engine = rt.engine(&desired, &cli_actor(), &[]).await?;
    let plan = engine.plan(&desired, &scope).await?;
    if let Some(path) = &args.out {
        let text = serde_json::to_string_pretty(&plan)?;
        write_atomic(path, &text)
            .map_err(|e| anyhow::anyhow!("cannot write the plan to {}: {e}", path.display()))?;
    }
    if ctx.out.json {
        ctx.out.json(&plan)?;
    } else {
        let mut text = header(&desired, &engine, started.elapsed());
        text.push_str(&paint_plan(ctx, &render::plan_text(&plan)));
        if let Some(path) = &args.out {
            text.push_str(&format!(
                "\nSaved the plan to {}; apply it with `supervisor apply {}`.\n",
                path.display(),
                path.display()
            ));
        }
        ctx.out.text(&text)?;
    }
    Ok(if !plan.errors.is_empty() {
        ExitCode::from(1)
    } else if args.detailed_exitcode && !plan.is_empty() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn read_saved_plan(path: &std::path::Path) -> Result<Plan, EngineError> {
    let bytes = std::fs::read(path)
        .map_err(|e| EngineError::BadPlanFile(format!("{}: {e}", path.display())))?;
    Plan::from_saved(&bytes).map_err(|e| match e {
        EngineError::BadPlanFile(why) => {
            EngineError::BadPlanFile(format!("{}: {why}", path.display()))
        }
        other => other,
    })
}

/// Asks for "yes" on the terminal (off the async worker threads).
async fn confirm(question: String) -> Result<bool, OpsError> {
    tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
        let mut err = std::io::stderr();
        write!(
            err,
            "{question}\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "
        )?;
        err.flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim() == "yes")
    })
    .await
    .map_err(|e| OpsError::Internal(format!("the confirmation prompt failed: {e}")))?
    .map_err(|e| OpsError::Internal(format!("cannot read the answer: {e}")))
}

/// The CLI's face of the apply flow: prints the plan (text or a JSON event), asks on the terminal unless
/// approved in advance, and reports each change as it goes.
struct Terminal<'a> {
    ctx: &'a Context,
    started: Instant,
    desired: &'a Desired,
    /// `--auto-approve`, or a saved plan (approved when it was reviewed).
    approved: bool,
    interactive: bool,
    allow_disruptive: bool,
    /// Changes and their steps as they happen.
    progress: super::progress::ApplyProgress<'a>,
}

#[async_trait]
impl ApplyHooks for Terminal<'_> {
    fn planned(&mut self, engine: &Engine, plan: &Plan) {
        if self.ctx.out.json {
            let _ = self
                .ctx
                .out
                .json_line(&json!({"type": "plan", "plan": plan}));
        } else {
            let mut text = header(self.desired, engine, self.started.elapsed());
            text.push_str(&paint_plan(self.ctx, &render::plan_text(plan)));
            let _ = self.ctx.out.text(&text);
        }
    }

    async fn approve(&mut self, plan: &Plan) -> Result<Approval, OpsError> {
        if !self.approved {
            if !self.interactive {
                return Err(OpsError::Internal(
                    "refusing to apply without confirmation: stdin is not a terminal; re-run with --auto-approve".into(),
                ));
            }
            if !confirm("\nDo you want to perform these actions?".into()).await? {
                return Ok(Approval {
                    approved: false,
                    allow_disruptive: false,
                });
            }
        }
        let mut allow_disruptive = self.allow_disruptive;
        if !allow_disruptive
            && plan.disruptive().next().is_some()
            && self.interactive
            && !self.approved
        {
            let list: Vec<&str> = plan.disruptive().map(|c| c.address.as_str()).collect();
            allow_disruptive = confirm(format!(
                "\nThese changes are disruptive (they interrupt running services): {}.\nProceed?",
                list.join(", ")
            ))
            .await?;
        }
        Ok(Approval {
            approved: true,
            allow_disruptive,
        })
    }

    fn progress(&mut self, event: ApplyEvent<'_>) {
        self.progress.on(event);
    }
}

pub async fn apply(ctx: &Context, args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let saved = match &args.plan_file {
        Some(path) => Some(read_saved_plan(path)?),
        None => None,
    };
    let rt = match runtime(ctx).await? {
        Ok(rt) => rt,
        Err(code) => return Ok(code),
    };
    let desired = rt.desired().await;
    let scope = match &saved {
        Some(p) => p.scope.clone(),
        None => Scope {
            project: args.project.clone(),
            only: args.only.clone(),
        },
    };
    if let Err(msg) = check_project(&desired, &scope) {
        eprintln!("{msg}");
        return Ok(ExitCode::from(1));
    }
    let mut hooks = Terminal {
        ctx,
        started,
        desired: &desired,
        approved: args.auto_approve || saved.is_some(),
        interactive: std::io::stdin().is_terminal() && !ctx.out.json,
        allow_disruptive: args.allow_disruptive,
        progress: super::progress::ApplyProgress::new(ctx),
    };
    let request = ApplyRequest {
        scope,
        saved,
        force: args.force,
        allow_disruptive: args.allow_disruptive,
        adopt: args.adopt.clone(),
        actor: cli_actor(),
        lock_timeout: Duration::from_secs(args.lock_timeout),
    };
    let outcome = ops::apply(&rt, request, &mut hooks).await?;
    let json_mode = ctx.out.json;
    match outcome {
        ApplyOutcome::NothingToDo { plan } => {
            if json_mode {
                ctx.out.json_line(
                    &json!({"type": "summary", "applied": 0, "summary": plan.summary}),
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ApplyOutcome::Refused {
            refusal: Refusal::PlanHasErrors(_),
            ..
        } => Ok(ExitCode::from(1)),
        ApplyOutcome::Refused {
            refusal: Refusal::Declined,
            ..
        } => {
            eprintln!("Apply cancelled.");
            Ok(ExitCode::from(1))
        }
        ApplyOutcome::Refused {
            refusal: Refusal::NeedsConsent(why),
            ..
        } => Err(anyhow::anyhow!(why)),
        ApplyOutcome::Applied { plan, report } => {
            if json_mode {
                ctx.out.json_line(&json!({"type": "summary", "run_id": report.run_id, "applied": report.applied, "summary": plan.summary, "failed": report.failed}))?;
            }
            match &report.failed {
                None => {
                    if !json_mode {
                        let s = plan.summary;
                        ctx.out.text(&ctx.out.paint(
                            &format!(
                                "\nApply complete! Resources: {} added, {} changed, {} destroyed.\n",
                                s.add, s.change, s.destroy
                            ),
                            Style::Green,
                        ))?;
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Some(msg) => {
                    if !json_mode {
                        eprintln!(
                            "\nApply failed after {} of {} changes: {msg}\nThe journal records what was done; run `supervisor plan` to see what remains.",
                            report.applied,
                            plan.changes.len()
                        );
                    }
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
