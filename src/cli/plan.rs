//! `supervisor plan` and `supervisor apply`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;

use super::common::{cli_actor, engine, load_desired, open_store};
use super::output::Style;
use super::{ApplyArgs, Context, PlanArgs};
use crate::engine::{ApplyOptions, Engine, EngineError, Plan, Scope, render};
use crate::state::{Desired, edit::write_atomic, git_revision};

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
            let t = l.trim_start();
            let style = if t.starts_with("-/+") || t.starts_with("- ") {
                Some(Style::Red)
            } else if t.starts_with("+ ") || t.starts_with("+\u{20}") {
                Some(Style::Green)
            } else if t.starts_with("~ ") || t.starts_with('!') {
                Some(Style::Yellow)
            } else if t.starts_with('✗') {
                Some(Style::Red)
            } else if !l.starts_with(' ') && !l.is_empty() {
                Some(Style::Bold)
            } else {
                None
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
    let desired = match load_desired(ctx) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let scope = Scope {
        project: args.project,
        only: args.only,
    };
    if let Err(msg) = check_project(&desired, &scope) {
        eprintln!("{msg}");
        return Ok(ExitCode::from(1));
    }
    let store = open_store(ctx).await?;
    let engine = engine(ctx, &desired, store, &[]).await?;
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
    let text = std::fs::read_to_string(path)
        .map_err(|e| EngineError::BadPlanFile(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| EngineError::BadPlanFile(format!("{}: {e}", path.display())))
}

/// Asks for "yes" on the terminal.
fn confirm(question: &str) -> std::io::Result<bool> {
    let mut err = std::io::stderr();
    write!(
        err,
        "{question}\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "
    )?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

fn emit(ctx: &Context, event: serde_json::Value) {
    if ctx.out.json {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{event}");
    }
}

pub async fn apply(ctx: &Context, args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let saved = match &args.plan_file {
        Some(path) => Some(read_saved_plan(path)?),
        None => None,
    };
    let desired = match load_desired(ctx) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
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
    let store = open_store(ctx).await?;
    let engine = engine(ctx, &desired, store.clone(), &args.adopt).await?;

    // Plan under the lock: nothing can change the registry between what we show and what we do.
    let lock = store
        .lock_apply(Duration::from_secs(args.lock_timeout))
        .await?;
    let interrupted = store.mark_interrupted_runs().await?;
    if interrupted > 0 {
        tracing::warn!(
            runs = interrupted,
            "a previous apply was interrupted; re-planning from reality"
        );
    }
    let plan = engine.plan(&desired, &scope).await?;
    if let Some(saved) = &saved {
        Engine::check_fresh(saved, &plan)?;
    }

    if ctx.out.json {
        emit(ctx, json!({"type": "plan", "plan": plan}));
    } else {
        let mut text = header(&desired, &engine, started.elapsed());
        text.push_str(&paint_plan(ctx, &render::plan_text(&plan)));
        ctx.out.text(&text)?;
    }
    if !plan.errors.is_empty() {
        lock.release().await;
        return Ok(ExitCode::from(1));
    }
    if plan.is_empty() {
        lock.release().await;
        emit(
            ctx,
            json!({"type": "summary", "applied": 0, "summary": plan.summary}),
        );
        return Ok(ExitCode::SUCCESS);
    }

    let mut opts = ApplyOptions {
        force: args.force,
        allow_disruptive: args.allow_disruptive,
        actor: cli_actor(),
        git_revision: git_revision(&desired.dir),
        stop: None,
    };
    let interactive = std::io::stdin().is_terminal() && !ctx.out.json;
    if saved.is_none() && !args.auto_approve {
        if !interactive {
            lock.release().await;
            anyhow::bail!(
                "refusing to apply without confirmation: stdin is not a terminal; re-run with --auto-approve"
            );
        }
        if !confirm("\nDo you want to perform these actions?")? {
            lock.release().await;
            eprintln!("Apply cancelled.");
            return Ok(ExitCode::from(1));
        }
    }
    if !opts.allow_disruptive
        && plan.disruptive().next().is_some()
        && interactive
        && !args.auto_approve
    {
        let list: Vec<&str> = plan.disruptive().map(|c| c.address.as_str()).collect();
        opts.allow_disruptive = confirm(&format!(
            "\nThese changes are disruptive (they interrupt running services): {}.\nProceed?",
            list.join(", ")
        ))?;
    }
    if let Err(e) = engine.check_safety(&plan, &opts) {
        lock.release().await;
        return Err(e.into());
    }

    let json_mode = ctx.out.json;
    let mut progress = super::progress::ApplyProgress::new(ctx);
    let report = engine.apply(&plan, &opts, |event| progress.on(event)).await;
    lock.release().await;
    let report = report?;
    if json_mode {
        emit(
            ctx,
            json!({"type": "summary", "run_id": report.run_id, "applied": report.applied, "summary": plan.summary, "failed": report.failed}),
        );
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
