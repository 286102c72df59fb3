//! Timing tools: task timers, estimates, statistics and parallel groups — thin over
//! [`crate::timing::Timing`], the same calls as `supervisor timing …`. A project endpoint reads and
//! writes only its own project's timers, groups and statistics, and its estimates show only its own
//! tasks as similar ones (see `crate::timing` for the guarantees).

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::McpServer;
use crate::ops::Visibility;
use crate::timing::service::{
    CompleteTimer, Completed, EstimateOut, EstimateRequest, GroupCompleted, GroupStarted,
    ListTimers, StartGroup, StartTimer, Started, StatsLine, TimerLine,
};
use crate::timing::{Scope, Timing};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TaskStatsArgs {
    /// Only this project (a project endpoint always sees only its own; on the meta endpoint, omit it
    /// for every project and the all-project rows).
    #[serde(default)]
    pub project: Option<String>,
    /// Only this task type.
    #[serde(default)]
    pub task_type: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskStatsOut {
    pub stats: Vec<StatsLine>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct GroupArgs {
    /// The group_id from start_parallel_group.
    pub group_id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TimersOut {
    /// A running timer older than this is reported as abandoned.
    pub abandoned_after_seconds: i64,
    pub timers: Vec<TimerLine>,
}

impl McpServer {
    /// The timing service with this host's abandoned age (tools and prompts share it).
    pub(in crate::mcp) fn timing(&self) -> Timing {
        self.runtime.timing()
    }

    /// What this endpoint's callers may time and see.
    pub(in crate::mcp) fn timing_scope(&self) -> Scope {
        match self.visibility() {
            Visibility::All => Scope::All,
            Visibility::Project(p) => Scope::Project(p.clone()),
        }
    }
}

#[tool_router(router = timing_tools, vis = "pub(super)")]
impl McpServer {
    #[tool(
        description = "Start timing a task when you begin it. Give a description (similar past tasks are found by its words), a task_type (feature, bugfix, refactor, docs, test, …), optionally your own estimate in seconds, your agent type and model, complexity and a parent task. Returns the task_id to pass to complete_task_timer and the supervisor's estimate from similar completed tasks. The timer is a database row: it survives restarts."
    )]
    async fn start_task_timer(
        &self,
        Parameters(args): Parameters<StartTimer>,
    ) -> Result<Json<Started>, String> {
        self.track("start_task_timer", async {
            Ok(Json(self.timing().start(&self.timing_scope(), args).await?))
        })
        .await
    }

    #[tool(
        description = "Complete a task timer when the task is done (or has failed: success false with an error_message). Optionally report lines_changed, files_changed, tests_written, tokens_used, retry_count and an output_summary. Returns the duration and the estimation error against your own estimate (or the supervisor's). A task completes once; completing it again is an error."
    )]
    async fn complete_task_timer(
        &self,
        Parameters(args): Parameters<CompleteTimer>,
    ) -> Result<Json<Completed>, String> {
        self.track("complete_task_timer", async {
            Ok(Json(
                self.timing().complete(&self.timing_scope(), args).await?,
            ))
        })
        .await
    }

    #[tool(
        description = "Estimate how long a task will take, from similar completed tasks (full-text match on the description) and the statistics of its type and project (falling back to the type, then all tasks, when history is thin). Returns the median estimate, a 95 % interval, the sample size, the method and the most similar tasks. Give agent_estimate_seconds (your own guess) to have it calibrated against how your past estimates compared with actual durations: the interval gets narrower."
    )]
    async fn estimate_task(
        &self,
        Parameters(args): Parameters<EstimateRequest>,
    ) -> Result<Json<EstimateOut>, String> {
        self.track("estimate_task", async {
            Ok(Json(
                self.timing().estimate(&self.timing_scope(), &args).await?,
            ))
        })
        .await
    }

    #[tool(
        description = "Statistics of completed tasks per task type and project: count, success rate, mean, median, p95 (log-normal fit), min and max duration in seconds, and how actual durations compared with callers' own estimates."
    )]
    async fn task_stats(
        &self,
        Parameters(args): Parameters<TaskStatsArgs>,
    ) -> Result<Json<TaskStatsOut>, String> {
        self.track("task_stats", async {
            let stats = self
                .timing()
                .stats(
                    &self.timing_scope(),
                    args.task_type.as_deref(),
                    args.project.as_deref(),
                )
                .await?;
            Ok(Json(TaskStatsOut { stats }))
        })
        .await
    }

    #[tool(
        description = "List task timers, newest first: running ones (running: true), only abandoned ones (running longer than the configured age; they are never dropped and can still be completed), or all. A project endpoint lists only its own project's timers."
    )]
    async fn list_task_timers(
        &self,
        Parameters(args): Parameters<ListTimers>,
    ) -> Result<Json<TimersOut>, String> {
        self.track("list_task_timers", async {
            let timing = self.timing();
            let timers = timing.list(&self.timing_scope(), args).await?;
            Ok(Json(TimersOut {
                abandoned_after_seconds: timing.abandoned_after().as_secs() as i64,
                timers,
            }))
        })
        .await
    }

    #[tool(
        description = "Start a parallel group before several agents work on tasks at once: list the child_task_ids (or start each task timer with parallel_group set to the returned group_id), the agent_count and optionally a sequential_estimate_seconds. Complete it with complete_parallel_group once every child task is completed."
    )]
    async fn start_parallel_group(
        &self,
        Parameters(args): Parameters<StartGroup>,
    ) -> Result<Json<GroupStarted>, String> {
        self.track("start_parallel_group", async {
            Ok(Json(
                self.timing()
                    .start_group(&self.timing_scope(), args)
                    .await?,
            ))
        })
        .await
    }

    #[tool(
        description = "Complete a parallel group whose child tasks have all completed. Returns the wall time, the order the children completed in, the sequential estimate (given, or the sum of the children's durations), efficiency = (sequential_estimate / agent_count) / parallel time, and the time saved."
    )]
    async fn complete_parallel_group(
        &self,
        Parameters(args): Parameters<GroupArgs>,
    ) -> Result<Json<GroupCompleted>, String> {
        self.track("complete_parallel_group", async {
            Ok(Json(
                self.timing()
                    .complete_group(&self.timing_scope(), &args.group_id)
                    .await?,
            ))
        })
        .await
    }
}
