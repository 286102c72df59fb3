//! `supervisor vm get NAME` and `supervisor vm health NAME [--minutes 60]`: what Compute Engine and
//! Cloud Monitoring say about a VM listed in `supervisor.yaml`. Read-only; the same library calls as
//! the MCP tools (`ops::gcloud`).

use std::process::ExitCode;

use serde_json::json;

use super::Context;
use super::common::{cli_actor, runtime};
use crate::ops;
use crate::providers::vm_info::{DiskInfo, UsageReport, VmHealth, VmInfo};

pub async fn get(ctx: &Context, name: &str) -> anyhow::Result<ExitCode> {
    let rt = match runtime(ctx).await? {
        Ok(rt) => rt,
        Err(code) => return Ok(code),
    };
    let info = ops::gcloud::get_vm(&rt, name, &cli_actor()).await?;
    if ctx.out.json {
        ctx.out.json(&json!({"vm": info}))?;
    } else {
        ctx.out.text(&info_text(&info))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn health(ctx: &Context, name: &str, minutes: i64) -> anyhow::Result<ExitCode> {
    let rt = match runtime(ctx).await? {
        Ok(rt) => rt,
        Err(code) => return Ok(code),
    };
    let health = ops::gcloud::vm_health(&rt, name, minutes, &cli_actor()).await?;
    if ctx.out.json {
        ctx.out.json(&json!({"health": health}))?;
    } else {
        ctx.out.text(&health_text(&health))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn disks_text(disks: &[DiskInfo]) -> String {
    if disks.is_empty() {
        return "none".into();
    }
    disks
        .iter()
        .map(|d| {
            let size = d
                .size_gb
                .map_or_else(|| "size unknown".to_string(), |s| format!("{s} GB"));
            format!(
                "{} {size}{}",
                d.device_name,
                if d.boot { " (boot)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn info_text(i: &VmInfo) -> String {
    let mut out = format!("{} ({}, {})\n", i.name, i.gcp_project, i.zone);
    let size = match (i.cpus, i.memory_mb) {
        (Some(c), Some(m)) => format!(" ({c} vCPUs, {m} MB memory)"),
        _ => String::new(),
    };
    let desired = if i.desired_machine_type != i.machine_type {
        format!(
            "  — supervisor.yaml asks for {}: run `supervisor plan`",
            i.desired_machine_type
        )
    } else {
        String::new()
    };
    let none = || "none".to_string();
    let rows = [
        ("status", i.status.clone()),
        ("machine type", format!("{}{size}{desired}", i.machine_type)),
        ("internal IP", i.internal_ip.clone().unwrap_or_else(none)),
        ("external IP", i.external_ip.clone().unwrap_or_else(none)),
        ("disks", disks_text(&i.disks)),
        ("instance id", i.instance_id.clone()),
    ];
    for (k, v) in rows {
        out.push_str(&format!("  {k:<13} {v}\n"));
    }
    out
}

fn usage_text(u: &UsageReport) -> String {
    match (u.average_percent, u.max_percent, u.current_percent) {
        (Some(a), Some(m), Some(c)) if u.reported => format!(
            "average {a:.1} %, max {m:.1} %, current {c:.1} % ({} sample{})",
            u.samples,
            if u.samples == 1 { "" } else { "s" }
        ),
        _ => u.note.clone().unwrap_or_else(|| "not reported".into()),
    }
}

fn health_text(h: &VmHealth) -> String {
    let mut out = format!(
        "{}: {}, {} — last {} minutes ({}-second samples)\n",
        h.name, h.status, h.machine_type, h.window_minutes, h.alignment_seconds
    );
    out.push_str(&format!("  {:<9} {}\n", "CPU", usage_text(&h.cpu)));
    out.push_str(&format!("  {:<9} {}\n", "memory", usage_text(&h.memory)));
    let usage = if h.disk_usage.reported {
        h.disk_usage
            .devices
            .iter()
            .map(|d| format!("{} {:.1} % used", d.device, d.used_percent))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        h.disk_usage
            .note
            .clone()
            .unwrap_or_else(|| "not reported".into())
    };
    out.push_str(&format!(
        "  {:<9} {}; usage: {usage}\n",
        "disks",
        disks_text(&h.disks)
    ));
    out
}
