//! `ports list` and `ports audit`.

use std::process::ExitCode;

use super::Context;
use super::common::runtime;
use super::output::Style;
use crate::ops::Visibility;

pub async fn list(ctx: &Context, project: Option<String>) -> anyhow::Result<ExitCode> {
    let rt = match runtime(ctx).await? {
        Ok(rt) => rt,
        Err(code) => return Ok(code),
    };
    let listing = crate::ops::ports::list_ports(&rt, &Visibility::All, project).await?;
    if ctx.out.json {
        ctx.out.json(&listing)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (ports, shared, blocks) = (&listing.ports, &listing.shared, &listing.blocks);
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header(vec!["PROJECT", "SERVICE", "PORT", "HOSTNAME"]);
    for p in ports {
        table.add_row(vec![
            p.project.clone(),
            p.service.clone(),
            p.port.to_string(),
            p.hostname.clone().unwrap_or_default(),
        ]);
    }
    for s in shared {
        table.add_row(vec![
            "(shared)".to_string(),
            s.name.clone(),
            s.port.to_string(),
            String::new(),
        ]);
    }
    let mut text = format!("{table}\n");
    if !blocks.is_empty() {
        let b: Vec<String> = blocks
            .iter()
            .map(|r| format!("{} {}–{}", r.project, r.start_port, r.end_port))
            .collect();
        text.push_str(&format!("\nblocks: {}\n", b.join(", ")));
    }
    if ports.is_empty() && shared.is_empty() {
        text = "No ports allocated. Run `supervisor apply` to allocate the desired ones.\n".into();
    }
    ctx.out.text(&text)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(ctx: &Context) -> anyhow::Result<ExitCode> {
    let rt = match runtime(ctx).await? {
        Ok(rt) => rt,
        Err(code) => return Ok(code),
    };
    let report = crate::ops::ports::audit(&rt).await?;
    if ctx.out.json {
        ctx.out.json(&report)?;
    } else {
        let mut table = comfy_table::Table::new();
        table
            .load_preset(comfy_table::presets::NOTHING)
            .set_header(vec!["PROJECT", "SERVICE", "PORT", "STATE", "PROCESS"]);
        for a in report.allocations.iter().chain(&report.shared) {
            let process = a
                .listener
                .as_ref()
                .map(|l| {
                    format!(
                        "{} {}",
                        l.command.as_deref().unwrap_or("?"),
                        l.pid.map(|p| format!("(pid {p})")).unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            table.add_row(vec![
                a.project.clone(),
                a.service.clone(),
                a.port.to_string(),
                a.state.to_string(),
                process,
            ]);
        }
        let mut text = format!("{table}\n");
        if report.conflicts.is_empty() {
            text.push_str(&format!(
                "\n{}\n",
                ctx.out.paint("No conflicts.", Style::Green)
            ));
        } else {
            text.push_str(&format!(
                "\n{}\n",
                ctx.out.paint(
                    &format!("{} conflict(s):", report.conflicts.len()),
                    Style::Red
                )
            ));
            for c in &report.conflicts {
                text.push_str(&format!("  ✗ {}\n", c.message));
            }
        }
        ctx.out.text(&text)?;
    }
    Ok(if report.conflicts.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
