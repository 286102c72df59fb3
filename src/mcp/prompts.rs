//! MCP prompts, as a table: each prompt's name, description, arguments and the function that fills it
//! with a project's real data (never placeholders).

use rmcp::ErrorData;
use rmcp::model::{
    GetPromptRequestParams, GetPromptResult, Prompt, PromptArgument, PromptMessage, Role,
};

use super::McpServer;
use super::server::Endpoint;
use crate::store::DEFAULT_HOST;

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

const PROMPTS: &[Spec] = &[Spec {
    name: "prime",
    description: "Prime an agent with a project's context: ports, public hostnames, required secrets (paths only) and the checks that verify work.",
    offered: Offered::PerProject,
    arguments: &[],
}];

/// The prompts an endpoint offers.
pub fn list(endpoint: &Endpoint) -> Vec<Prompt> {
    PROMPTS
        .iter()
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
            .map(str::to_string)
    };
    match request.name.as_str() {
        "prime" => prime(server, arg("project")).await,
        other => Err(ErrorData::invalid_params(
            format!(
                "unknown prompt `{other}` (known: {})",
                PROMPTS
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None,
        )),
    }
}

async fn prime(server: &McpServer, project: Option<String>) -> Result<GetPromptResult, ErrorData> {
    let desired = server.runtime.desired().await;
    let project = server
        .visibility()
        .known(&desired, project)
        .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?;
    let p = &desired.projects[&project];
    let reg = server
        .runtime
        .store
        .port_registry(DEFAULT_HOST)
        .await
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    let mut text = format!("You are working on project `{project}`");
    if let Some(path) = &p.path {
        text.push_str(&format!(" in {}", path.display()));
    }
    text.push_str(".\n\nServices:\n");
    for s in &p.services {
        let port = reg
            .allocations
            .iter()
            .find(|a| a.project == project && a.service == s.name)
            .map(|a| a.port.to_string())
            .unwrap_or_else(|| "not allocated yet (call get_port)".into());
        text.push_str(&format!(
            "- {}: port {port}{}\n",
            s.name,
            s.hostname
                .as_ref()
                .map(|h| format!(", public at https://{h}"))
                .unwrap_or_default()
        ));
    }
    if !p.secrets.required.is_empty() {
        text.push_str("\nSecrets (read them with get_secret; never write values into files):\n");
        for r in &p.secrets.required {
            text.push_str(&format!("- {r}\n"));
        }
    }
    if !p.checks.is_empty() {
        text.push_str("\nBefore saying you are done, run:\n");
        for c in &p.checks {
            text.push_str(&format!("- `{c}`\n"));
        }
    }
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
            .with_description(format!("Context for project {project}")),
    )
}
