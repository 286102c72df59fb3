//! MCP prompts, as a table: each prompt's name, description, arguments and the function that fills it
//! with real data (never placeholders).
//!
//! The PIV loop — `prime` → `plan` → `execute` — is offered on every endpoint (the meta endpoint takes a
//! `project` argument; a project endpoint serves its own project only). Each takes the task's
//! description and type and is filled from the same calls the tools make: the project's assembled
//! instructions (core layer, project layer, facts with the ports registered now), knowledge search
//! results for the task, similar completed tasks with their durations, the estimate with its 95 %
//! interval, the declared checks and the project's running timers. The meta endpoint also offers
//! `status`: every project's sync state, pending changes, failing checks and running timers.
//!
//! A part that cannot be filled (no knowledge indexed, no history to estimate from) says so in the
//! prompt, with what to do about it; the prompt never invents content.

use std::fmt::Write as _;

use rmcp::ErrorData;
use rmcp::model::{
    GetPromptRequestParams, GetPromptResult, Prompt, PromptArgument, PromptMessage, Role,
};

use super::McpServer;
use super::server::Endpoint;
use crate::engine::status::ResourceStatus;
use crate::instructions::{self, facts, layers, render};
use crate::ops::OpsError;
use crate::ops::knowledge::{self as ops_knowledge, KnowledgeSearch};
use crate::state::Desired;
use crate::store::DEFAULT_HOST;
use crate::timing::service::{EstimateOut, EstimateRequest, ListTimers, TimerLine};
use crate::timing::{Scope as TimingScope, TimingError, human_duration};

/// One argument of a prompt.
struct Arg {
    name: &'static str,
    description: &'static str,
    required: bool,
}

/// Where a prompt is offered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Offered {
    /// On every endpoint; on the meta endpoint it takes a `project` argument.
    PerProject,
    /// On the meta endpoint only.
    Meta,
}

struct Spec {
    name: &'static str,
    description: &'static str,
    offered: Offered,
    arguments: &'static [Arg],
}

const PROJECT_ARG: Arg = Arg {
    name: "project",
    description: "The project to work on",
    required: true,
};

const TASK_ARGS: &[Arg] = &[
    Arg {
        name: "task",
        description: "What the task is, in a sentence or two (knowledge and similar past tasks are found by its words)",
        required: true,
    },
    Arg {
        name: "task_type",
        description: "The kind of task: feature, bugfix, refactor, docs, test, … (default feature)",
        required: false,
    },
];

const PROMPTS: &[Spec] = &[
    Spec {
        name: "prime",
        description: "PIV 1/3 — prime: the project's instructions and facts, what its knowledge says about the task, and similar past tasks with how long they took.",
        offered: Offered::PerProject,
        arguments: TASK_ARGS,
    },
    Spec {
        name: "plan",
        description: "PIV 2/3 — plan: design the steps, with the supervisor's estimate (95 % interval) from similar completed tasks and the checks that will verify the work.",
        offered: Offered::PerProject,
        arguments: TASK_ARGS,
    },
    Spec {
        name: "execute",
        description: "PIV 3/3 — execute: time the task (start_task_timer), implement, verify with run_checks, complete the timer and record what you learned.",
        offered: Offered::PerProject,
        arguments: TASK_ARGS,
    },
    Spec {
        name: "status",
        description: "Every project at a glance: sync state, pending changes, failing checks and running task timers.",
        offered: Offered::Meta,
        arguments: &[],
    },
];

/// How many knowledge results and similar tasks a prompt shows.
const KNOWLEDGE_HITS: usize = 5;
/// A knowledge snippet is cut to this many characters in a prompt.
const SNIPPET_CHARS: usize = 600;

/// The prompts an endpoint offers.
pub fn list(endpoint: &Endpoint) -> Vec<Prompt> {
    PROMPTS
        .iter()
        .filter(|spec| spec.offered == Offered::PerProject || *endpoint == Endpoint::Meta)
        .map(|spec| {
            let mut args: Vec<PromptArgument> = Vec::new();
            if spec.offered == Offered::PerProject && *endpoint == Endpoint::Meta {
                args.push(argument(&PROJECT_ARG));
            }
            args.extend(spec.arguments.iter().map(argument));
            Prompt::new(
                spec.name,
                Some(spec.description),
                (!args.is_empty()).then_some(args),
            )
        })
        .collect()
}

fn argument(a: &Arg) -> PromptArgument {
    PromptArgument::new(a.name)
        .with_description(a.description)
        .with_required(a.required)
}

/// The task a PIV prompt is about.
struct Task {
    project: String,
    description: String,
    task_type: String,
}

/// Fills prompt `request.name` for the endpoint's caller.
pub async fn get(
    server: &McpServer,
    request: GetPromptRequestParams,
) -> Result<GetPromptResult, ErrorData> {
    let arg = |name: &str| {
        request
            .arguments
            .as_ref()
            .and_then(|a| a.get(name))
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let known = || {
        PROMPTS
            .iter()
            .filter(|p| p.offered == Offered::PerProject || server.endpoint == Endpoint::Meta)
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let spec = PROMPTS
        .iter()
        .find(|p| p.name == request.name)
        .filter(|p| p.offered == Offered::PerProject || server.endpoint == Endpoint::Meta)
        .ok_or_else(|| {
            ErrorData::invalid_params(
                format!("unknown prompt `{}` (known: {})", request.name, known()),
                None,
            )
        })?;
    if spec.offered == Offered::Meta {
        return status(server).await.map_err(ops_error);
    }
    let desired = server.runtime.desired().await;
    let project = server
        .visibility()
        .known(&desired, arg("project"))
        .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?;
    let description = arg("task").ok_or_else(|| {
        ErrorData::invalid_params(
            format!(
                "prompt `{}` needs the argument `task`: what the task is",
                spec.name
            ),
            None,
        )
    })?;
    let task = Task {
        project,
        description,
        task_type: arg("task_type").unwrap_or_else(|| "feature".into()),
    };
    let text = match spec.name {
        "prime" => prime(server, &desired, &task).await,
        "plan" => plan(server, &desired, &task).await,
        _ => execute(server, &desired, &task).await,
    }
    .map_err(ops_error)?;
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)]).with_description(
            format!("{} — {}: {}", spec.name, task.project, task.description),
        ),
    )
}

fn ops_error(e: OpsError) -> ErrorData {
    match e {
        OpsError::InvalidArgument(m) | OpsError::NotFound(m) => ErrorData::invalid_params(m, None),
        other => ErrorData::internal_error(other.to_string(), None),
    }
}

/// The project's CLAUDE.md section as apply would write it now (core layer, project layer, facts with
/// the ports registered in the registry).
async fn instructions_text(
    server: &McpServer,
    desired: &Desired,
    project: &str,
) -> Result<String, OpsError> {
    let reg = server.runtime.store.port_registry(DEFAULT_HOST).await?;
    let desired = desired.clone();
    let project = project.to_string();
    let endpoint = facts::Endpoint {
        base_url: server.runtime.mcp_base_url(),
    };
    tokio::task::spawn_blocking(move || -> Result<String, OpsError> {
        let layers = layers::load(&desired.dir).map_err(|e| OpsError::Internal(e.to_string()))?;
        let p = desired
            .projects
            .get(&project)
            .ok_or_else(|| OpsError::NotFound(format!("there is no project `{project}`")))?;
        let port_of = |proj: &str, service: &str| {
            reg.allocations
                .iter()
                .find(|a| a.project == proj && a.service == service)
                .and_then(|a| u16::try_from(a.port).ok())
        };
        let list = instructions::for_project(&layers, &desired, p, port_of, &endpoint)
            .map_err(|e| OpsError::Internal(e.to_string()))?;
        Ok(render::assemble(&list).text)
    })
    .await
    .map_err(|e| OpsError::Internal(format!("rendering panicked: {e}")))?
}

/// What the project's knowledge says about the task, as a Markdown section.
async fn knowledge_section(server: &McpServer, task: &Task) -> Result<String, OpsError> {
    let mut out = String::from("## What the project's knowledge says about this task\n\n");
    let results = ops_knowledge::search(
        &server.runtime,
        server.visibility(),
        KnowledgeSearch {
            query: task.description.clone(),
            project: Some(task.project.clone()),
            sources: Vec::new(),
            tags: Vec::new(),
            limit: KNOWLEDGE_HITS,
        },
    )
    .await?;
    if results.hits.is_empty() {
        out.push_str(
            "Nothing indexed matches (index the project's docs and code with `supervisor knowledge index`, or list folders under `knowledge:` in its state file; record what you learn with add_learning).\n",
        );
    }
    for (i, hit) in results.hits.iter().enumerate() {
        let place = match (hit.line_start, hit.line_end) {
            (Some(a), Some(b)) => format!("{}:{a}-{b}", hit.document),
            _ => hit.url.clone().unwrap_or_else(|| hit.document.clone()),
        };
        let _ = writeln!(
            out,
            "{}. **{}** — {} ({})",
            i + 1,
            hit.title.as_deref().unwrap_or("untitled"),
            place,
            hit.source
        );
        let snippet: String = hit.snippet.chars().take(SNIPPET_CHARS).collect();
        for line in snippet.trim_end().lines() {
            let _ = writeln!(out, "   > {line}");
        }
    }
    for note in &results.notes {
        let _ = writeln!(out, "\n_{note}_");
    }
    Ok(out)
}

/// The supervisor's estimate for the task; `None` when there is no history yet.
async fn estimate(server: &McpServer, task: &Task) -> Result<Option<EstimateOut>, OpsError> {
    match server
        .timing()
        .estimate(
            &server.timing_scope(),
            &EstimateRequest {
                task_id: None,
                description: task.description.clone(),
                task_type: task.task_type.clone(),
                project: Some(task.project.clone()),
                agent_estimate_seconds: None,
            },
        )
        .await
    {
        Ok(e) => Ok(Some(e)),
        Err(TimingError::NoHistory) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn similar_section(estimate: Option<&EstimateOut>) -> String {
    let mut out = String::from("## Similar past tasks\n\n");
    match estimate {
        None => out.push_str(
            "No completed tasks yet: this task's timer will be the first of the history that estimates later ones.\n",
        ),
        Some(e) if e.similar_tasks.is_empty() => {
            out.push_str("No completed task shares enough words with this one.\n")
        }
        Some(e) => {
            for s in &e.similar_tasks {
                let _ = writeln!(
                    out,
                    "- `{}` ({}): {}",
                    s.task_id,
                    human_duration(s.duration_seconds),
                    s.description
                );
            }
        }
    }
    out
}

fn estimate_section(estimate: Option<&EstimateOut>) -> String {
    let mut out = String::from("## Estimate\n\n");
    match estimate {
        None => out.push_str(
            "No estimate yet (no completed tasks). Make your own and pass it as estimated_seconds to start_task_timer: it starts the history of your estimates against actual durations.\n",
        ),
        Some(e) => {
            let _ = writeln!(
                out,
                "About **{}** (95 % interval {} – {}), from {} completed tasks ({}; estimate_task gives the same figures, and narrows the interval when you pass your own estimate).",
                human_duration(e.estimated_seconds),
                human_duration(e.interval_low_seconds),
                human_duration(e.interval_high_seconds),
                e.sample_size,
                e.method
            );
        }
    }
    out
}

fn checks_section(desired: &Desired, project: &str) -> String {
    let mut out = String::from("## Checks that verify the work\n\n");
    let checks = desired
        .projects
        .get(project)
        .map(|p| p.checks.clone())
        .unwrap_or_default();
    if checks.is_empty() {
        out.push_str("The project declares no checks (`checks:` in its state file), so run_checks has nothing to run: say how you verified the work instead.\n");
    }
    for c in &checks {
        let _ = writeln!(out, "- `{c}`");
    }
    out
}

fn header(phase: &str, task: &Task) -> String {
    format!(
        "# {phase}: {}\n\nProject `{}`, task type `{}`.\n\n",
        task.description, task.project, task.task_type
    )
}

async fn prime(server: &McpServer, desired: &Desired, task: &Task) -> Result<String, OpsError> {
    let mut text = header("Prime", task);
    text.push_str(
        "Read this before you plan. Do not change anything yet: understand the project, what it already knows about this task and how long similar tasks took. Then use the `plan` prompt.\n\n",
    );
    text.push_str("## Instructions\n\n");
    text.push_str(&instructions_text(server, desired, &task.project).await?);
    text.push('\n');
    text.push_str(&knowledge_section(server, task).await?);
    text.push('\n');
    text.push_str(&similar_section(estimate(server, task).await?.as_ref()));
    Ok(text)
}

async fn plan(server: &McpServer, desired: &Desired, task: &Task) -> Result<String, OpsError> {
    let estimate = estimate(server, task).await?;
    let mut text = header("Plan", task);
    text.push_str(
        "Design the change before writing it:\n\n1. Restate the goal and what done means, in one or two sentences.\n2. List the files and components you will touch, and why each.\n3. Break the work into steps small enough to verify one by one; name the riskiest step and how you will check it.\n4. Say which of the checks below will prove it works, and which tests you will add.\n5. Give your own estimate in seconds; compare it with the supervisor's below and say why they differ.\n6. If the task needs a port, a secret or a state change, name the tool (get_port, get_secret, propose_state_change) — never hard-code one.\n\n",
    );
    text.push_str(&estimate_section(estimate.as_ref()));
    text.push('\n');
    text.push_str(&similar_section(estimate.as_ref()));
    text.push('\n');
    text.push_str(&knowledge_section(server, task).await?);
    text.push('\n');
    text.push_str(&checks_section(desired, &task.project));
    text.push_str("\nWhen the plan is agreed, use the `execute` prompt.\n");
    Ok(text)
}

async fn running_timers(server: &McpServer, project: &str) -> Result<Vec<TimerLine>, OpsError> {
    Ok(server
        .timing()
        .list(
            &server.timing_scope(),
            ListTimers {
                project: Some(project.to_string()),
                running: Some(true),
                ..ListTimers::default()
            },
        )
        .await?)
}

async fn execute(server: &McpServer, desired: &Desired, task: &Task) -> Result<String, OpsError> {
    let estimate = estimate(server, task).await?;
    let running = running_timers(server, &task.project).await?;
    let mut text = header("Execute", task);
    let own = estimate
        .as_ref()
        .map(|e| format!("{:.0}", e.estimated_seconds))
        .unwrap_or_else(|| "<your estimate in seconds>".into());
    let _ = write!(
        text,
        "Work through the plan, in this order:\n\n1. **Start the timer**: start_task_timer with description {:?}, task_type {:?} and estimated_seconds (your own estimate; the supervisor's is {own} s). Keep the task_id it returns.\n2. **Implement** step by step; after each step, run the relevant check.\n3. **Verify** with run_checks (pass the task_id) — every check below must pass. A failing check is information: fix the cause, do not weaken the check.\n4. **Complete the timer** with complete_task_timer: success, and lines_changed, files_changed, tests_written; on failure, success false with an error_message.\n5. **Record what you learned** with add_learning (title, text, tags): what a later agent would otherwise have to rediscover.\n\n",
        task.description, task.task_type
    );
    text.push_str(&estimate_section(estimate.as_ref()));
    text.push('\n');
    text.push_str(&checks_section(desired, &task.project));
    text.push_str("\n## Timers running in this project\n\n");
    if running.is_empty() {
        text.push_str("None.\n");
    }
    for t in &running {
        let _ = writeln!(
            text,
            "- `{}` ({}, running {}{}): {}",
            t.task_id,
            t.task_type,
            human_duration(t.elapsed_seconds),
            if t.abandoned { ", abandoned" } else { "" },
            t.description
        );
    }
    if !running.is_empty() {
        text.push_str(
            "\nIf one of them is this task, complete that one instead of starting another.\n",
        );
    }
    Ok(text)
}

/// The meta endpoint's summary of every project.
async fn status(server: &McpServer) -> Result<GetPromptResult, OpsError> {
    let desired = server.runtime.desired().await;
    let status = crate::ops::status::status(
        &server.runtime,
        &crate::engine::Scope::default(),
        "mcp:meta:status",
    )
    .await?;
    let timers = server
        .timing()
        .list(
            &TimingScope::All,
            ListTimers {
                running: Some(true),
                ..ListTimers::default()
            },
        )
        .await?;
    let mut text = String::from("# Status of every project\n\n");
    let _ = writeln!(
        text,
        "Desired state revision `{}`{}; last apply: {}. {}\n",
        status.report.desired_revision,
        status
            .report
            .git_revision
            .as_ref()
            .map(|g| format!(" (git {g})"))
            .unwrap_or_default(),
        status
            .report
            .last_apply
            .as_ref()
            .map(|r| format!("{} at {}", r.status, r.started_at))
            .unwrap_or_else(|| "never".into()),
        if status.report.problems {
            "**Something needs attention.**"
        } else {
            "Nothing needs attention."
        }
    );
    for e in &status.report.errors {
        let _ = writeln!(text, "- plan error: {}", e.message);
    }
    text.push_str("\n| project | resources | in sync | pending | drifted | failed/blocked | failing checks | running timers |\n|---|---:|---:|---:|---:|---:|---|---:|\n");
    for name in desired.projects.keys() {
        let lines: Vec<_> = status
            .report
            .resources
            .iter()
            .filter(|r| r.project.as_deref() == Some(name.as_str()))
            .collect();
        let count = |s: ResourceStatus| lines.iter().filter(|r| r.status == s).count();
        let failing: Vec<String> = server
            .runtime
            .store
            .latest_check_runs(name)
            .await?
            .into_iter()
            .filter(|c| !c.passed)
            .map(|c| format!("`{}`", c.command))
            .collect();
        let running = timers
            .iter()
            .filter(|t| t.project.as_deref() == Some(name.as_str()))
            .count();
        let _ = writeln!(
            text,
            "| {name} | {} | {} | {} | {} | {} | {} | {running} |",
            lines.len(),
            count(ResourceStatus::InSync),
            count(ResourceStatus::Pending),
            count(ResourceStatus::Drifted),
            count(ResourceStatus::Failed) + count(ResourceStatus::Blocked),
            if failing.is_empty() {
                "none".to_string()
            } else {
                failing.join(", ")
            },
        );
    }
    let pending: Vec<_> = status
        .report
        .resources
        .iter()
        .filter(|r| r.status != ResourceStatus::InSync)
        .collect();
    if !pending.is_empty() || !status.report.removals.is_empty() {
        text.push_str("\n## Not in sync\n\n");
        for r in pending {
            let _ = writeln!(
                text,
                "- `{}`: {:?}{}",
                r.address,
                r.status,
                r.error
                    .as_ref()
                    .map(|e| format!(" — {e}"))
                    .unwrap_or_default()
            );
        }
        for r in &status.report.removals {
            let _ = writeln!(text, "- {r}");
        }
    }
    if !timers.is_empty() {
        text.push_str("\n## Running task timers\n\n");
        for t in &timers {
            let _ = writeln!(
                text,
                "- `{}` in {} ({}, running {}{}): {}",
                t.task_id,
                t.project.as_deref().unwrap_or("no project"),
                t.task_type,
                human_duration(t.elapsed_seconds),
                if t.abandoned { ", abandoned" } else { "" },
                t.description
            );
        }
    }
    if !status.secrets.expired.is_empty() || !status.secrets.rotation_required.is_empty() {
        text.push_str("\n## Secrets needing a human\n\n");
        for p in &status.secrets.expired {
            let _ = writeln!(text, "- `{p}` expired");
        }
        for p in &status.secrets.rotation_required {
            let _ = writeln!(text, "- `{p}` flagged for rotation");
        }
    }
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
            .with_description("Every project's sync state, checks and timers"),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::instructions::layers::{Layer, built_in};

    /// Every property name anywhere in a schema (arguments and results an instruction may name).
    fn properties(schema: &serde_json::Value, out: &mut BTreeSet<String>) {
        match schema {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::Object(props)) = m.get("properties") {
                    out.extend(props.keys().cloned());
                }
                m.values().for_each(|v| properties(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| properties(v, out)),
            _ => {}
        }
    }

    /// Backticked snake_case identifiers (`get_port`, `task_id`): what prose names as a tool or field.
    fn identifiers(layers: &[Layer]) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for l in layers {
            for (i, part) in l.text.split('`').enumerate() {
                let is_ident = i % 2 == 1
                    && part.contains('_')
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if is_ident {
                    out.insert((part.to_string(), l.source.clone()));
                }
            }
        }
        out
    }

    fn served(endpoint: &Endpoint) -> (BTreeSet<String>, BTreeSet<String>) {
        let tools = McpServer::tools_for(endpoint).list_all();
        let names = tools.iter().map(|t| t.name.to_string()).collect();
        let mut fields = BTreeSet::new();
        for t in &tools {
            properties(
                &serde_json::Value::Object((*t.input_schema).clone()),
                &mut fields,
            );
            if let Some(o) = &t.output_schema {
                properties(&serde_json::Value::Object((**o).clone()), &mut fields);
            }
        }
        for p in list(endpoint) {
            fields.extend(p.arguments.unwrap_or_default().into_iter().map(|a| a.name));
        }
        (names, fields)
    }

    /// Instructions that name a tool the endpoint does not serve are features that exist only as
    /// prose; a served tool the instructions never name is one agents will not know to use.
    #[test]
    fn the_instruction_layers_and_the_served_tools_agree() {
        let layers = built_in();
        let (project_tools, project_fields) = served(&Endpoint::Project("p".into()));
        let (meta_tools, meta_fields) = served(&Endpoint::Meta);
        for (ident, source) in identifiers(&layers.core) {
            assert!(
                project_tools.contains(&ident) || project_fields.contains(&ident),
                "{source} names `{ident}`, which a project endpoint does not serve (tools: {project_tools:?})"
            );
        }
        for (ident, source) in identifiers(&layers.meta) {
            assert!(
                meta_tools.contains(&ident) || meta_fields.contains(&ident),
                "{source} names `{ident}`, which the meta endpoint does not serve"
            );
        }
        let named = |layers: &[Layer]| -> BTreeSet<String> {
            identifiers(layers).into_iter().map(|(i, _)| i).collect()
        };
        let core = named(&layers.core);
        let unnamed: Vec<_> = project_tools
            .iter()
            .filter(|t| !core.contains(*t))
            .collect();
        assert!(unnamed.is_empty(), "the core layer never names {unnamed:?}");
        let all: BTreeSet<String> = core.union(&named(&layers.meta)).cloned().collect();
        let unnamed: Vec<_> = meta_tools.iter().filter(|t| !all.contains(*t)).collect();
        assert!(unnamed.is_empty(), "no layer names {unnamed:?}");
        // The prompts the layers point to exist.
        let prompts: Vec<String> = list(&Endpoint::Meta).into_iter().map(|p| p.name).collect();
        for p in ["prime", "plan", "execute", "status"] {
            assert!(prompts.contains(&p.to_string()), "{prompts:?}");
        }
    }
}
