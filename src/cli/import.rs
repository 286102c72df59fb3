//! `supervisor import cloudflare`: adopt existing DNS records and ingress rules (see
//! [`crate::providers::adoption`]), under the apply lock.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use super::Context;
use super::common::{cli_actor, runtime};
use crate::providers::adoption::{ImportReport, import_cloudflare};

pub async fn cloudflare(ctx: &Context, lock_timeout: u64) -> anyhow::Result<ExitCode> {
    let rt = match runtime(ctx).await? {
        Ok(rt) => rt,
        Err(code) => return Ok(code),
    };
    let desired = rt.desired().await;
    let providers = rt.provider_context(&cli_actor(), &[]);
    // It writes the inventory and state files: not while an apply runs.
    let lock = rt
        .store
        .lock_apply(Duration::from_secs(lock_timeout))
        .await?;
    let result = import_cloudflare(&desired, &providers).await;
    lock.release().await;
    let report = result?;
    if ctx.out.json {
        ctx.out.json(&json!({"import": report}))?;
    } else {
        ctx.out.text(&text(&report))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn text(r: &ImportReport) -> String {
    let mut out = format!("Cloudflare zone {}, tunnel {}\n", r.zone, r.tunnel);
    let width = r.adopted.iter().map(|a| a.address.len()).max().unwrap_or(0);
    for e in &r.state_edits {
        let _ = writeln!(
            out,
            "  state    {}: {}/{} hostname {} (the tunnel routes it to port {})",
            e.file, e.edit.project, e.edit.service, e.edit.hostname, e.port
        );
    }
    for a in &r.adopted {
        let _ = writeln!(out, "  adopted  {:<width$}  {}", a.address, a.found);
    }
    for s in &r.skipped {
        let _ = writeln!(out, "  skipped  {}: {}", s.hostname, s.reason);
    }
    let _ = writeln!(
        out,
        "\n{} adopted, {} hostname{} written into state/, {} skipped, {} already managed. Nothing was changed at Cloudflare; run `supervisor plan` to see what still differs.",
        r.adopted.len(),
        r.state_edits.len(),
        if r.state_edits.len() == 1 { "" } else { "s" },
        r.skipped.len(),
        r.already_managed
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::adoption::{Adopted, HostnameEdit, Skipped, StateEdit};

    #[test]
    fn the_report_reads_as_a_list() {
        let r = ImportReport {
            zone: "example.com".into(),
            tunnel: "t1".into(),
            adopted: vec![
                Adopted {
                    address: "dns/web.example.com".into(),
                    project: "shop".into(),
                    found: "CNAME web.example.com → t1.cfargotunnel.com (proxied) (id r1)".into(),
                },
                Adopted {
                    address: "tunnel/web.example.com".into(),
                    project: "shop".into(),
                    found: "ingress web.example.com → http://localhost:3101".into(),
                },
            ],
            state_edits: vec![StateEdit {
                file: "state/projects/shop.yaml".into(),
                edit: HostnameEdit {
                    project: "shop".into(),
                    service: "web".into(),
                    hostname: "web.example.com".into(),
                },
                port: 3101,
            }],
            skipped: vec![Skipped {
                hostname: "old.example.com".into(),
                reason: "no service".into(),
            }],
            already_managed: 1,
        };
        assert_eq!(
            text(&r),
            "Cloudflare zone example.com, tunnel t1\n  state    state/projects/shop.yaml: shop/web hostname web.example.com (the tunnel routes it to port 3101)\n  adopted  dns/web.example.com     CNAME web.example.com → t1.cfargotunnel.com (proxied) (id r1)\n  adopted  tunnel/web.example.com  ingress web.example.com → http://localhost:3101\n  skipped  old.example.com: no service\n\n2 adopted, 1 hostname written into state/, 1 skipped, 1 already managed. Nothing was changed at Cloudflare; run `supervisor plan` to see what still differs.\n"
        );
    }
}
