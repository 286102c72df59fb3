//! `init`, `validate`, `fmt`, `schema`: the desired-state commands.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::Context;
use super::common::{load_desired, print_diagnostics};
use crate::state::{self, edit::write_atomic, scaffold};

pub fn init(ctx: &Context, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = dir.unwrap_or_else(|| ctx.settings.state_dir.clone());
    let files = scaffold::scaffold(&dir)?;
    if ctx.out.json {
        ctx.out
            .json(&json!({"format_version": "1", "created": files}))?;
    } else {
        let mut text = format!("Created a state directory in {}:\n", dir.display());
        for f in &files {
            text.push_str(&format!("  {}\n", f.display()));
        }
        text.push_str(
            "\nNext: edit the example, then `supervisor plan` to see what apply would do.\n",
        );
        ctx.out.text(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn validate(ctx: &Context) -> anyhow::Result<ExitCode> {
    let desired = match load_desired(ctx) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    if ctx.out.json {
        ctx.out.json(&json!({
            "format_version": "1",
            "valid": true,
            "revision": desired.revision,
            "projects": desired.projects.len(),
            "services": desired.service_count(),
            "warnings": desired.warnings,
        }))?;
    } else {
        ctx.out.text(&format!(
            "Success! The desired state in {} is valid ({} projects, {} services, revision {}).\n",
            desired.dir.display(),
            desired.projects.len(),
            desired.service_count(),
            desired.revision
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn fmt(ctx: &Context, check: bool) -> anyhow::Result<ExitCode> {
    let files = match state::canonical_files(&ctx.settings.state_dir) {
        Ok(f) => f,
        Err(diags) => {
            print_diagnostics(ctx, &diags);
            return Ok(ExitCode::from(1));
        }
    };
    let changed: Vec<&state::Formatted> = files.iter().filter(|f| f.changed()).collect();
    if !check {
        for f in &changed {
            write_atomic(&f.path, &f.canonical)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", f.path.display()))?;
        }
    }
    if ctx.out.json {
        let paths: Vec<String> = changed
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        ctx.out.json(&json!({"format_version": "1", "check": check, "not_canonical": paths, "files": files.len()}))?;
    } else {
        let mut text = String::new();
        for f in &changed {
            text.push_str(&format!("{}\n", f.path.display()));
        }
        if check && !changed.is_empty() {
            text.push_str(&format!(
                "\n{} file(s) are not in canonical form; run `supervisor fmt`.\n",
                changed.len()
            ));
        }
        ctx.out.text(&text)?;
    }
    Ok(if check && !changed.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn schema(ctx: &Context) -> anyhow::Result<ExitCode> {
    ctx.out.json(&state::schema::schemas())?;
    Ok(ExitCode::SUCCESS)
}
