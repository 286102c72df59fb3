//! `supervisor timing …`: thin over [`crate::timing::Timing`] — arguments in, one library call, text or
//! JSON (`"format_version": "1"`) out. Timing needs only the database: no state directory, no key.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use serde::Serialize;

use super::common::open_store;
use super::output::Style;
use super::{Context, TimingCommand, TimingGroupCommand};
use crate::timing::service::{
    COVERAGE_WINDOW, CompleteTimer, EstimateOut, EstimateRequest, ListTimers, StartGroup,
    StartTimer, StatsLine,
};
use crate::timing::{Complexity, Scope, Timing, history, human_duration, parse_duration};

pub async fn run(ctx: &Context, command: TimingCommand) -> anyhow::Result<ExitCode> {
    let abandoned_after = match &command {
        TimingCommand::List(a) => a.abandoned_after.as_deref().map(seconds_arg).transpose()?,
        _ => None,
    }
    .unwrap_or(ctx.settings.file.timing.abandoned_after_secs as f64);
    let timing = Timing::new(open_store(ctx).await?)
        .with_abandoned_after(Duration::from_secs_f64(abandoned_after.max(0.0)));
    let all = Scope::All;
    match command {
        TimingCommand::Start(a) => {
            let started = timing
                .start(
                    &all,
                    StartTimer {
                        task_id: a.task_id,
                        description: a.description,
                        task_type: a.task_type,
                        project: Some(a.project),
                        agent_type: a.agent,
                        agent_model: a.model,
                        complexity: a.complexity.as_deref().map(Complexity::parse).transpose()?,
                        parent_task_id: a.parent,
                        estimated_seconds: a.estimate.as_deref().map(seconds_arg).transpose()?,
                        parallel_group: a.group,
                    },
                )
                .await?;
            if ctx.out.json {
                return json(ctx, &started);
            }
            let mut text = format!(
                "Started {} ({} in {}).\n",
                ctx.out.paint(&started.task_id, Style::Bold),
                started.task_type,
                started.project
            );
            match &started.estimate {
                Some(e) => text.push_str(&format!("Estimate: {}\n", estimate_line(e))),
                None => {
                    text.push_str("No estimate yet: there are no completed tasks to learn from.\n")
                }
            }
            text.push_str(&format!(
                "Complete it with `supervisor timing complete {}`.\n",
                started.task_id
            ));
            ctx.out.text(&text)?;
        }
        TimingCommand::Complete(a) => {
            let done = timing
                .complete(
                    &all,
                    CompleteTimer {
                        task_id: a.task_id,
                        success: Some(!a.failed),
                        error_message: a.error,
                        output_summary: a.summary,
                        lines_changed: a.lines,
                        files_changed: a.files,
                        tests_written: a.tests,
                        tokens_used: a.tokens,
                        retry_count: a.retries,
                        duration_seconds: a.duration.as_deref().map(seconds_arg).transpose()?,
                    },
                )
                .await?;
            if ctx.out.json {
                return json(ctx, &done);
            }
            let mut text = format!(
                "{} {} in {}.\n",
                if done.status == "completed" {
                    ctx.out.paint("Completed", Style::Green)
                } else {
                    ctx.out.paint("Failed", Style::Red)
                },
                done.task_id,
                human_duration(done.duration_seconds)
            );
            if let (Some(e), Some(src), Some(err)) = (
                done.estimated_seconds,
                &done.estimate_source,
                done.estimation_error,
            ) {
                let how = if err >= 0.0 {
                    format!("{:.0} % longer", err * 100.0)
                } else {
                    format!("{:.0} % shorter", -err * 100.0)
                };
                text.push_str(&format!(
                    "The {src}'s estimate was {}: it took {how}.\n",
                    human_duration(e)
                ));
            }
            ctx.out.text(&text)?;
        }
        TimingCommand::Estimate(a) => {
            if let Some(file) = a.batch {
                let (name, text) = read_input(&file, history::NOTHING_ESTIMATED)?;
                let out = timing.estimate_batch(&all, &name, &text).await?;
                if ctx.out.json {
                    // One line per task (JSON Lines), each carrying the format version.
                    let mut lines = String::new();
                    for e in &out {
                        lines.push_str(&versioned(e)?.to_string());
                        lines.push('\n');
                    }
                    ctx.out.text(&lines)?;
                } else {
                    let mut table = comfy_table::Table::new();
                    table
                        .load_preset(comfy_table::presets::NOTHING)
                        .set_header(vec!["TASK", "ESTIMATE", "95 % INTERVAL", "N", "METHOD"]);
                    for e in &out {
                        table.add_row(vec![
                            e.task_id.clone().unwrap_or_default(),
                            human_duration(e.estimated_seconds),
                            format!(
                                "{} – {}",
                                human_duration(e.interval_low_seconds),
                                human_duration(e.interval_high_seconds)
                            ),
                            e.sample_size.to_string(),
                            e.method.clone(),
                        ]);
                    }
                    ctx.out.text(&format!("{table}\n"))?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            let req = EstimateRequest {
                task_id: None,
                description: a.description.unwrap_or_default(),
                task_type: a.task_type.unwrap_or_default(),
                project: a.project,
                agent_estimate_seconds: a.own_estimate.as_deref().map(seconds_arg).transpose()?,
            };
            let e = timing.estimate(&all, &req).await?;
            if ctx.out.json {
                return json(ctx, &e);
            }
            let mut text = format!("{}\n", estimate_line(&e));
            if let Some(c) = &e.calibration {
                text.push_str(&format!(
                    "Your estimate of {} calibrated ×{:.2} (from {} tasks with estimates, level {}): {}.\n",
                    human_duration(c.own_estimate_seconds),
                    c.bias_factor,
                    c.sample_size,
                    c.level.as_str(),
                    human_duration(c.calibrated_seconds)
                ));
            }
            if !e.similar_tasks.is_empty() {
                text.push_str("Similar completed tasks:\n");
                for s in &e.similar_tasks {
                    let first = s.description.lines().next().unwrap_or_default();
                    text.push_str(&format!(
                        "  {:>10}  {}  {}\n",
                        human_duration(s.duration_seconds),
                        s.task_id,
                        first
                    ));
                }
            }
            ctx.out.text(&text)?;
        }
        TimingCommand::Stats { task_type, project } => {
            let lines = timing
                .stats(&all, task_type.as_deref(), project.as_deref())
                .await?;
            let coverage = timing
                .interval_coverage(&all, project.as_deref(), COVERAGE_WINDOW)
                .await?;
            if ctx.out.json {
                return json(
                    ctx,
                    &serde_json::json!({ "stats": lines, "interval_coverage": coverage }),
                );
            }
            let mut text = stats_table(&lines);
            text.push_str(&format!("Calibration: {}.\n", coverage.describe()));
            ctx.out.text(&text)?;
        }
        TimingCommand::List(a) => {
            let timers = timing
                .list(
                    &all,
                    ListTimers {
                        project: a.project,
                        running: Some(a.running),
                        abandoned: Some(a.abandoned),
                        limit: Some(a.limit),
                    },
                )
                .await?;
            if ctx.out.json {
                return json(
                    ctx,
                    &serde_json::json!({
                        "abandoned_after_seconds": timing.abandoned_after().as_secs(),
                        "timers": timers,
                    }),
                );
            }
            if timers.is_empty() {
                ctx.out.text("No task timers.\n")?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = comfy_table::Table::new();
            table
                .load_preset(comfy_table::presets::NOTHING)
                .set_header(vec![
                    "TASK",
                    "PROJECT",
                    "TYPE",
                    "STATUS",
                    "STARTED",
                    "ELAPSED",
                    "DESCRIPTION",
                ]);
            for t in &timers {
                let status = if t.abandoned {
                    ctx.out.paint("abandoned", Style::Yellow)
                } else {
                    t.status.clone()
                };
                let first: String = t
                    .description
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(60)
                    .collect();
                table.add_row(vec![
                    t.task_id.clone(),
                    t.project.clone().unwrap_or_default(),
                    t.task_type.clone(),
                    status,
                    t.started_at.clone(),
                    human_duration(t.elapsed_seconds),
                    first,
                ]);
            }
            ctx.out.text(&format!("{table}\n"))?;
        }
        TimingCommand::Import { file } => {
            let (name, text) = read_input(&file, history::NOTHING_IMPORTED)?;
            let report = timing.import(&name, &text).await?;
            if ctx.out.json {
                return json(ctx, &report);
            }
            ctx.out.text(&format!(
                "Imported {} task(s) from {name} ({} already present, left as they were).\n",
                report.imported, report.skipped
            ))?;
        }
        TimingCommand::Group(TimingGroupCommand::Start {
            description,
            project,
            group_id,
            tasks,
            agents,
            sequential_estimate,
        }) => {
            let started = timing
                .start_group(
                    &all,
                    StartGroup {
                        group_id,
                        description,
                        project: Some(project),
                        child_task_ids: tasks,
                        agent_count: agents,
                        sequential_estimate_seconds: sequential_estimate
                            .as_deref()
                            .map(seconds_arg)
                            .transpose()?,
                    },
                )
                .await?;
            if ctx.out.json {
                return json(ctx, &started);
            }
            ctx.out.text(&format!(
                "Started parallel group {} ({} agents, tasks: {}).\nStart its tasks with `--group {}`; complete it with `supervisor timing group complete {}`.\n",
                started.group_id,
                started.agent_count,
                if started.child_task_ids.is_empty() { "none listed".into() } else { started.child_task_ids.join(", ") },
                started.group_id,
                started.group_id
            ))?;
        }
        TimingCommand::Group(TimingGroupCommand::Complete { group_id }) => {
            let done = timing.complete_group(&all, &group_id).await?;
            if ctx.out.json {
                return json(ctx, &done);
            }
            let order: Vec<String> = done
                .completion_order
                .iter()
                .map(|c| format!("{} ({})", c.task_id, human_duration(c.duration_seconds)))
                .collect();
            ctx.out.text(&format!(
                "Completed parallel group {} in {}: sequentially {} ({}), {} agents, efficiency {:.2}, time saved {}.\nCompletion order: {}\n",
                done.group_id,
                human_duration(done.parallel_seconds),
                human_duration(done.sequential_estimate_seconds),
                done.sequential_source.replace('_', " "),
                done.agent_count,
                done.efficiency,
                signed_duration(done.time_saved_seconds),
                order.join(", ")
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn seconds_arg(text: &str) -> anyhow::Result<f64> {
    parse_duration(text).map_err(|e| anyhow!("invalid duration: {e}"))
}

fn signed_duration(s: f64) -> String {
    if s < 0.0 {
        format!("-{}", human_duration(-s))
    } else {
        human_duration(s)
    }
}

/// A value as JSON with `"format_version": "1"` at the top level.
fn versioned<T: Serialize>(value: &T) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(value)?;
    match v.as_object_mut() {
        Some(map) => {
            map.insert("format_version".into(), "1".into());
            Ok(v)
        }
        None => Ok(serde_json::json!({ "format_version": "1", "value": v })),
    }
}

fn json<T: Serialize>(ctx: &Context, value: &T) -> anyhow::Result<ExitCode> {
    ctx.out.json(&versioned(value)?)?;
    Ok(ExitCode::SUCCESS)
}

/// The file's name (for messages) and text; `-` is stdin. Bytes that are not UTF-8 are an error naming
/// the line (`outcome`: what happened to the rest of the file).
fn read_input(path: &Path, outcome: &'static str) -> anyhow::Result<(String, String)> {
    let (name, bytes) = if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read stdin")?;
        ("<stdin>".to_string(), bytes)
    } else {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        (path.display().to_string(), bytes)
    };
    let text = history::utf8_text(&name, bytes, outcome)?;
    Ok((name, text))
}

fn estimate_line(e: &EstimateOut) -> String {
    format!(
        "{} (95 %: {} – {}), from {} completed task(s) [{}]",
        human_duration(e.estimated_seconds),
        human_duration(e.interval_low_seconds),
        human_duration(e.interval_high_seconds),
        e.sample_size,
        e.method
    )
}

fn stats_table(lines: &[StatsLine]) -> String {
    if lines.is_empty() {
        return "No completed tasks yet.\n".into();
    }
    let opt = |v: Option<f64>| v.map(human_duration).unwrap_or_else(|| "—".into());
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header(vec![
            "TYPE", "PROJECT", "COUNT", "SUCCESS", "MEAN", "MEDIAN", "P95", "MIN", "MAX",
        ]);
    for l in lines {
        table.add_row(vec![
            l.task_type.clone(),
            l.project.clone().unwrap_or_else(|| "(all)".into()),
            l.count.to_string(),
            format!("{:.0} %", l.success_rate * 100.0),
            opt(l.mean_seconds),
            opt(l.median_seconds),
            opt(l.p95_seconds),
            opt(l.min_seconds),
            opt(l.max_seconds),
        ]);
    }
    format!("{table}\n\nMedian and p95 are those of the log-normal fit to the durations.\n")
}
