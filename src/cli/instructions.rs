//! `supervisor instructions render|adapt`.

use std::process::ExitCode;

use serde_json::json;

use super::common::{cli_actor, runtime};
use super::{Context, InstructionsCommand};
use crate::ops::instructions::{self, Target};

pub async fn run(ctx: &Context, cmd: InstructionsCommand) -> anyhow::Result<ExitCode> {
    let rt = match runtime(ctx).await? {
        Ok(rt) => rt,
        Err(code) => return Ok(code),
    };
    match cmd {
        InstructionsCommand::Render {
            project,
            meta,
            file,
        } => {
            let target = match (project, meta) {
                (Some(p), false) => Target::Project(p),
                _ => Target::Meta,
            };
            let r = instructions::render(&rt, &target, &cli_actor()).await?;
            if ctx.out.json {
                ctx.out.json(&json!({
                    "section": r.section,
                    "path": r.path,
                    "file": r.file,
                    "layers": r.sizes.iter().map(|(s, n)| json!({"source": s, "characters": n})).collect::<Vec<_>>(),
                    "budget_error": r.budget_error,
                }))?;
            } else {
                let text = match (&r.file, file) {
                    (Some(f), true) => f.clone(),
                    _ => r.section.clone(),
                };
                ctx.out.text(&text)?;
                if file && r.file.is_none() {
                    eprintln!(
                        "note: the target has no folder on this host; printed the section only"
                    );
                }
            }
            if let Some(e) = &r.budget_error {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        InstructionsCommand::Adapt {
            path,
            project,
            force,
        } => {
            let a = instructions::adapt(&rt, &path, project.as_deref(), force).await?;
            if ctx.out.json {
                ctx.out.json(&a)?;
            } else {
                match &a.written {
                    Some(file) => ctx.out.text(&format!(
                        "Wrote the draft as the project's instructions in {file}; `supervisor plan` shows the CLAUDE.md it makes.\n"
                    ))?,
                    None => ctx.out.text(&a.draft)?,
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
