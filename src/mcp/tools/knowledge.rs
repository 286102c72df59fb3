//! Knowledge tools: hybrid search over the project's docs, code and learnings (plus the shared
//! sources), and recording a learning for every later agent of the project. Scoping is
//! `ops::knowledge`'s: a project endpoint sees and writes its own project only.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::knowledge::LearningRecord;
use crate::knowledge::search::{MAX_LIMIT, SearchResults};
use crate::mcp::McpServer;
use crate::ops::OpsError;
use crate::ops::knowledge::{self, KnowledgeSearch};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchKnowledgeArgs {
    /// What to look for: a question, keywords or an identifier (getUserName and get_user_name match
    /// each other).
    pub query: String,
    /// The project whose knowledge (plus the shared sources) is searched; defaults to the endpoint's
    /// project. On the meta endpoint, omit it to search everything.
    #[serde(default)]
    pub project: Option<String>,
    /// Only these sources, e.g. ["docs"], ["codebase"], ["learnings"].
    #[serde(default)]
    pub sources: Vec<String>,
    /// Only results carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// How many results, 1 to 100 (default 10).
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct AddLearningArgs {
    /// One line that says what was learned, e.g. "Deploys must use scripts/deploy-blue-green.sh".
    pub title: String,
    /// The details: what happened, what works, what to avoid (markdown; at most 64 KiB). Never put a
    /// credential here: it would be masked.
    pub text: String,
    /// Tags to filter by later, e.g. ["deploy", "database"].
    #[serde(default)]
    pub tags: Vec<String>,
    /// The project it applies to; defaults to the endpoint's project. On the meta endpoint, omit it to
    /// share the learning with every project.
    #[serde(default)]
    pub project: Option<String>,
}

#[tool_router(router = knowledge_tools, vis = "pub(super)")]
impl McpServer {
    #[tool(
        description = "Search the project's knowledge — its indexed docs and code, the learnings of earlier agents, and shared sources — by meaning and by keywords together. Each result has a title, a snippet, the file path (or URL) and line range to open, the source and a score (higher is better). `notes` says when search was keyword-only and why."
    )]
    async fn search_knowledge(
        &self,
        Parameters(args): Parameters<SearchKnowledgeArgs>,
    ) -> Result<Json<SearchResults>, String> {
        self.track("search_knowledge", async {
            let limit = match args.limit {
                None => 10,
                Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => n as usize,
                Some(n) => {
                    return Err(OpsError::InvalidArgument(format!(
                        "limit must be 1 to {MAX_LIMIT}, got {n}"
                    )));
                }
            };
            knowledge::search(
                &self.runtime,
                self.visibility(),
                KnowledgeSearch {
                    query: args.query,
                    project: args.project,
                    sources: args.sources,
                    tags: args.tags,
                    limit,
                },
            )
            .await
            .map(Json)
        })
        .await
    }

    #[tool(
        description = "Record what you learned (a pitfall, a convention, how something works) so every later agent of this project finds it with search_knowledge. Give a one-line title and the details; credentials in the text are masked before storing."
    )]
    async fn add_learning(
        &self,
        Parameters(args): Parameters<AddLearningArgs>,
    ) -> Result<Json<LearningRecord>, String> {
        self.track("add_learning", async {
            knowledge::add_learning(
                &self.runtime,
                self.visibility(),
                args.project,
                args.title,
                args.text,
                args.tags,
            )
            .await
            .map(Json)
        })
        .await
    }
}
