//! `token create|list|revoke`: bearer tokens for the MCP endpoints.

use std::process::ExitCode;

use serde_json::json;

use super::common::{load_desired, open_store};
use super::{Context, TokenCommand};
use crate::mcp::auth;

pub async fn run(ctx: &Context, cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    let store = open_store(ctx).await?;
    match cmd {
        TokenCommand::Create {
            meta: _,
            project,
            description,
        } => {
            if let Some(p) = &project {
                let desired = match load_desired(ctx) {
                    Ok(d) => d,
                    Err(code) => return Ok(code),
                };
                if !desired.projects.contains_key(p) {
                    anyhow::bail!(
                        "there is no project `{p}` in {}; a project token is only valid on its project's endpoint",
                        desired.dir.display()
                    );
                }
            }
            let new =
                auth::create_token(store.as_ref(), project.as_deref(), description.as_deref())
                    .await?;
            if ctx.out.json {
                ctx.out.json(&json!({
                    "token": new.token.as_str(),
                    "id": new.row.id,
                    "project": new.row.project,
                    "endpoint": match &new.row.project { Some(p) => format!("/mcp/{p}"), None => "/mcp/meta (and every project)".into() },
                }))?;
            } else {
                ctx.out.text(&format!(
                    "{}\n\nid {} — valid on {}. This is the only time the token is shown; store it now\n(e.g. in your MCP client's configuration). Revoke it with `supervisor token revoke {}`.\n",
                    new.token.as_str(),
                    new.row.id,
                    match &new.row.project { Some(p) => format!("/mcp/{p}"), None => "every endpoint (meta token)".into() },
                    new.row.id
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::List => {
            let tokens = store.list_tokens().await?;
            if ctx.out.json {
                ctx.out
                    .json(&json!({"format_version": "1", "tokens": tokens}))?;
            } else {
                let mut table = comfy_table::Table::new();
                table
                    .load_preset(comfy_table::presets::NOTHING)
                    .set_header(vec![
                        "ID",
                        "SCOPE",
                        "CREATED",
                        "LAST USED",
                        "STATE",
                        "DESCRIPTION",
                    ]);
                for t in &tokens {
                    table.add_row(vec![
                        t.id.clone(),
                        t.project
                            .as_ref()
                            .map_or("meta".to_string(), |p| format!("project {p}")),
                        t.created_at.format("%Y-%m-%d %H:%M").to_string(),
                        t.last_used_at
                            .map(|x| x.format("%Y-%m-%d %H:%M").to_string())
                            .unwrap_or_else(|| "never".into()),
                        if t.revoked_at.is_some() {
                            "revoked".into()
                        } else {
                            "active".into()
                        },
                        t.description.clone().unwrap_or_default(),
                    ]);
                }
                ctx.out.text(&if tokens.is_empty() {
                    "No tokens. Create one with `supervisor token create --meta`.\n".to_string()
                } else {
                    format!("{table}\n")
                })?;
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { id } => {
            if store.revoke_token(&id).await? {
                if ctx.out.json {
                    ctx.out.json(&json!({"revoked": id}))?;
                } else {
                    ctx.out.text(&format!(
                        "Revoked {id}. Servers stop accepting it within seconds.\n"
                    ))?;
                }
                Ok(ExitCode::SUCCESS)
            } else {
                anyhow::bail!("no active token with id {id} (see `supervisor token list`)")
            }
        }
    }
}
