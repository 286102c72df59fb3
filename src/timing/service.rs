//! [`Timing`]: the library calls behind `supervisor timing …` and the timing MCP tools. Each call
//! validates everything first, checks the caller's [`Scope`], then reads or writes through the store
//! (one transaction per write); the outputs are plain serialisable values both faces render.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::estimate::{self, Calibration, Level, Levels, Neighbour, Params};
use super::stats::{TaskStats, Z_95, deltas};
use super::{
    Complexity, DEFAULT_ABANDONED_AFTER, Result, SIMILAR_SHOWN, Scope, TimingError, count,
    description, identifier, seconds, task_type, text,
};
use crate::store::Store;
use crate::store::StoreError;
use crate::store::timing::{
    Completion, GroupCompletion, ImportedTask, NewTask, ParallelGroupRow, SimilarTask, TaskFilter,
    TaskRow, TaskTypeStats,
};

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

// ---------------------------------------------------------------------------------------------------
// Inputs and outputs

/// Start a task timer.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct StartTimer {
    /// Your id for the task (1–200 characters, no whitespace); generated when omitted. Pass it to
    /// complete_task_timer.
    #[serde(default)]
    pub task_id: Option<String>,
    /// What the task is, in a sentence or a paragraph: similar past tasks are found by these words.
    pub description: String,
    /// The kind of task, e.g. feature, bugfix, refactor, docs, test (case-insensitive).
    pub task_type: String,
    /// The project (defaults to the endpoint's project).
    #[serde(default)]
    pub project: Option<String>,
    /// The agent type, e.g. claude-code.
    #[serde(default)]
    pub agent_type: Option<String>,
    /// The model, e.g. claude-opus-4.
    #[serde(default)]
    pub agent_model: Option<String>,
    #[serde(default)]
    pub complexity: Option<Complexity>,
    /// The task this one is part of.
    #[serde(default)]
    pub parent_task_id: Option<String>,
    /// Your own estimate in seconds. Recorded so your estimates can be calibrated against what tasks
    /// really took.
    #[serde(default)]
    pub estimated_seconds: Option<f64>,
    /// The parallel group (from start_parallel_group) this task runs in.
    #[serde(default)]
    pub parallel_group: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Started {
    pub task_id: String,
    pub project: String,
    pub task_type: String,
    pub started_at: String,
    /// The supervisor's estimate for the task (null when there is no history yet).
    pub estimate: Option<EstimateOut>,
}

/// Complete a running task timer.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct CompleteTimer {
    /// The task_id given by (or to) start_task_timer.
    pub task_id: String,
    /// Whether the task succeeded (default true).
    #[serde(default)]
    pub success: Option<bool>,
    /// Why it failed.
    #[serde(default)]
    pub error_message: Option<String>,
    /// What was done, briefly.
    #[serde(default)]
    pub output_summary: Option<String>,
    #[serde(default)]
    pub lines_changed: Option<i64>,
    #[serde(default)]
    pub files_changed: Option<i64>,
    #[serde(default)]
    pub tests_written: Option<i64>,
    #[serde(default)]
    pub tokens_used: Option<i64>,
    #[serde(default)]
    pub retry_count: Option<i64>,
    /// The real working time in seconds, when it differs from the time since start (e.g. the task was
    /// paused). Default: now minus the start.
    #[serde(default)]
    pub duration_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Completed {
    pub task_id: String,
    pub project: String,
    pub task_type: String,
    /// `completed` or `failed`.
    pub status: String,
    pub duration_seconds: f64,
    /// The estimate the duration is compared with: the caller's own, else the supervisor's at start.
    pub estimated_seconds: Option<f64>,
    /// `caller` or `supervisor`.
    pub estimate_source: Option<String>,
    /// (actual - estimate) / estimate: 0.25 = took 25 % longer than estimated.
    pub estimation_error: Option<f64>,
    /// ln(actual / estimate).
    pub log_error: Option<f64>,
}

/// Estimate a task.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct EstimateRequest {
    /// An id echoed in the answer (for batches).
    #[serde(default)]
    pub task_id: Option<String>,
    /// What the task is: similar past tasks are found by these words.
    pub description: String,
    /// The kind of task, e.g. feature, bugfix.
    pub task_type: String,
    /// The project (defaults to the endpoint's project).
    #[serde(default)]
    pub project: Option<String>,
    /// Your own estimate in seconds: calibrated against the history of your estimates vs actual
    /// durations, it narrows the interval.
    #[serde(default)]
    pub agent_estimate_seconds: Option<f64>,
}

/// A similar completed task an estimate rests on.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SimilarShown {
    pub task_id: String,
    /// The first 200 characters.
    pub description: String,
    pub duration_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct EstimateOut {
    pub task_id: Option<String>,
    /// The median of the predicted duration.
    pub estimated_seconds: f64,
    /// The 95 % interval.
    pub interval_low_seconds: f64,
    pub interval_high_seconds: f64,
    /// Completed tasks at the level of history the estimate rests on.
    pub sample_size: i64,
    /// How it was made, e.g. `similar+type_project`, `type`, `…+calibrated_own_estimate`.
    pub method: String,
    /// The level of history the estimate rests on: `type_project`, `type` or `all`.
    pub level: Level,
    /// The most similar completed tasks (at most 5).
    pub similar_tasks: Vec<SimilarShown>,
    /// How your own estimate was calibrated, when you gave one and history of estimates exists.
    pub calibration: Option<Calibration>,
}

/// Which timers to list.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct ListTimers {
    /// Only this project's timers (a project endpoint lists only its own).
    #[serde(default)]
    pub project: Option<String>,
    /// Only running timers.
    #[serde(default)]
    pub running: Option<bool>,
    /// Only running timers older than the abandoned age.
    #[serde(default)]
    pub abandoned: Option<bool>,
    /// At most this many (default 100, at most 10,000).
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TimerLine {
    pub task_id: String,
    pub project: Option<String>,
    pub task_type: String,
    pub description: String,
    /// `running`, `completed` or `failed`.
    pub status: String,
    /// Running longer than the abandoned age.
    pub abandoned: bool,
    pub started_at: String,
    pub completed_at: Option<String>,
    /// The duration, or for a running timer the time since it started.
    pub elapsed_seconds: f64,
    pub estimated_seconds: Option<f64>,
    pub supervisor_estimate_seconds: Option<f64>,
    /// The supervisor's 95 % interval when the timer started.
    pub supervisor_interval_low_seconds: Option<f64>,
    pub supervisor_interval_high_seconds: Option<f64>,
    /// Whether a successfully completed task ended inside that interval.
    pub inside_interval: Option<bool>,
    pub agent_type: Option<String>,
    pub agent_model: Option<String>,
    pub complexity: Option<String>,
    pub parent_task_id: Option<String>,
    pub parallel_group: Option<String>,
    pub success: Option<bool>,
    pub error_message: Option<String>,
    pub output_summary: Option<String>,
    pub lines_changed: Option<i64>,
    pub files_changed: Option<i64>,
    pub tests_written: Option<i64>,
    pub tokens_used: Option<i64>,
    pub retry_count: Option<i64>,
}

/// Statistics of one task type in one project (or across projects).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StatsLine {
    pub task_type: String,
    /// Null: all projects.
    pub project: Option<String>,
    /// Completions, successful or not.
    pub count: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub success_rate: f64,
    /// Arithmetic mean of successful durations.
    pub mean_seconds: Option<f64>,
    /// Median of the log-normal fit (exp of the mean log-duration).
    pub median_seconds: Option<f64>,
    /// 95th percentile of the log-normal fit (exp(mean + 1.645 sd)); needs two durations.
    pub p95_seconds: Option<f64>,
    pub min_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
    /// Standard deviation of ln(seconds).
    pub sd_log: Option<f64>,
    /// Completions that carried the caller's own estimate.
    pub own_estimates: i64,
    /// Geometric mean of actual / own estimate (2 = tasks took twice the estimate).
    pub own_estimate_bias: Option<f64>,
    pub updated_at: String,
}

/// Start a parallel group.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct StartGroup {
    /// Your id for the group; generated when omitted.
    #[serde(default)]
    pub group_id: Option<String>,
    pub description: String,
    /// The project (defaults to the endpoint's project).
    #[serde(default)]
    pub project: Option<String>,
    /// The task ids that run in parallel (started already or later; tasks started with this group's
    /// parallel_group belong to it too).
    #[serde(default)]
    pub child_task_ids: Vec<String>,
    /// How many agents work in parallel (default: the number of child tasks).
    #[serde(default)]
    pub agent_count: Option<i64>,
    /// How long the tasks would take one after another, in seconds (default at completion: the sum of
    /// the children's durations).
    #[serde(default)]
    pub sequential_estimate_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GroupStarted {
    pub group_id: String,
    pub project: String,
    pub agent_count: i64,
    pub child_task_ids: Vec<String>,
    pub started_at: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ChildDone {
    pub task_id: String,
    pub status: String,
    pub duration_seconds: f64,
    pub completed_at: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GroupCompleted {
    pub group_id: String,
    pub project: String,
    pub agent_count: i64,
    /// From the group's start to its completion.
    pub parallel_seconds: f64,
    pub sequential_estimate_seconds: f64,
    /// `given` (at start) or `sum_of_child_durations`.
    pub sequential_source: String,
    /// (sequential_estimate / agent_count) / parallel_seconds: 1 = perfect parallelism.
    pub efficiency: f64,
    /// sequential_estimate - parallel_seconds.
    pub time_saved_seconds: f64,
    /// The children in the order they completed.
    pub completion_order: Vec<ChildDone>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ImportReport {
    /// Lines with a task.
    pub read: usize,
    pub imported: usize,
    /// Tasks whose id was already in the database (left as they were).
    pub skipped: usize,
}

#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
pub struct TimerCounts {
    pub running: i64,
    /// Running timers older than the abandoned age.
    pub abandoned: i64,
    pub abandoned_after_seconds: u64,
}

/// The estimator's running calibration: how many of the newest successful completions ended inside the
/// 95 % interval the supervisor gave when their timers started (about 95 % when it is calibrated).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, JsonSchema)]
pub struct IntervalCoverage {
    /// Completions looked at (at most `window`).
    pub tasks: i64,
    pub inside: i64,
    /// `inside / tasks`; none without tasks.
    pub share: Option<f64>,
    /// How many of the newest completions are looked at.
    pub window: i64,
}

impl IntervalCoverage {
    /// One sentence for people, e.g. `18 of the last 20 completed tasks (90 %) ended inside the 95 %
    /// interval estimated when they started`.
    pub fn describe(&self) -> String {
        match self.share {
            None => "no completed task has an estimated interval yet (tasks get one when their timer starts with history to estimate from)".into(),
            Some(share) => format!(
                "{} of the last {} completed tasks ({:.0} %) ended inside the 95 % interval estimated when they started",
                self.inside,
                self.tasks,
                share * 100.0
            ),
        }
    }
}

/// Whether an actual duration fell inside the interval estimated for it (bounds included): the one rule
/// behind [`IntervalCoverage`] and each task's [`TimerLine::inside_interval`].
pub fn inside_interval(actual: f64, (low, high): (f64, f64)) -> bool {
    actual >= low && actual <= high
}

/// How many recent completions [`Timing::interval_coverage`] looks at by default.
pub const COVERAGE_WINDOW: i64 = 100;

// ---------------------------------------------------------------------------------------------------

/// Task timers, statistics and estimates over one store.
#[derive(Clone)]
pub struct Timing {
    store: Arc<dyn Store>,
    params: Params,
    abandoned_after: Duration,
}

impl Timing {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Timing {
            store,
            params: Params::default(),
            abandoned_after: DEFAULT_ABANDONED_AFTER,
        }
    }

    /// Running timers older than this are reported as abandoned.
    pub fn with_abandoned_after(mut self, age: Duration) -> Self {
        self.abandoned_after = age;
        self
    }

    pub fn with_params(mut self, params: Params) -> Self {
        self.params = params;
        self
    }

    pub fn abandoned_after(&self) -> Duration {
        self.abandoned_after
    }

    fn abandoned_cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - chrono::Duration::from_std(self.abandoned_after).unwrap_or(chrono::Duration::MAX)
    }

    /// A task id another task or a group refers to: a task of `project`, or one not started yet —
    /// never another project's (a project's timers refer only to its own).
    async fn own_task_or_none(&self, field: &'static str, id: &str, project: &str) -> Result<()> {
        match self.store.get_task(id).await? {
            Some(t) if t.project.as_deref() != Some(project) => Err(TimingError::Invalid {
                field,
                message: format!("task `{id}` is not a task of project `{project}`"),
            }),
            _ => Ok(()),
        }
    }

    // -----------------------------------------------------------------------------------------------
    // Timers

    pub async fn start(&self, scope: &Scope, req: StartTimer) -> Result<Started> {
        let project = scope.resolve(req.project.as_deref())?;
        let task_id = match req.task_id.as_deref() {
            Some(id) => identifier("task_id", id)?,
            None => format!("task-{}", uuid::Uuid::new_v4().simple()),
        };
        let desc = description(&req.description)?;
        let ty = task_type(&req.task_type)?;
        let parent = req
            .parent_task_id
            .as_deref()
            .map(|p| identifier("parent_task_id", p))
            .transpose()?;
        let own = req
            .estimated_seconds
            .map(|s| seconds("estimated_seconds", s))
            .transpose()?;
        let agent = text("agent_type", req.agent_type, 200)?;
        let model = text("agent_model", req.agent_model, 200)?;
        if let Some(parent) = &parent {
            self.own_task_or_none("parent_task_id", parent, &project)
                .await?;
        }
        if let Some(g) = &req.parallel_group {
            let g = identifier("parallel_group", g)?;
            match self.store.get_group(&g).await? {
                Some(row) if row.project.as_deref() == Some(project.as_str()) => {
                    if row.completed_at.is_some() {
                        return Err(TimingError::GroupAlreadyCompleted { id: g });
                    }
                }
                _ => {
                    return Err(TimingError::UnknownGroup {
                        id: g,
                        scope: Some(project.clone()),
                    });
                }
            }
        }
        let estimate = match self
            .estimate_checked(scope, None, &desc, &ty, &project, None)
            .await
        {
            Ok(e) => Some(e),
            Err(TimingError::NoHistory) => None,
            Err(e) => return Err(e),
        };
        let started_at = Utc::now();
        self.store
            .start_task(&NewTask {
                id: task_id.clone(),
                project: project.clone(),
                task_type: ty.clone(),
                description: desc,
                agent,
                agent_model: model,
                parent_task_id: parent,
                parallel_group: req.parallel_group,
                complexity: req.complexity.map(|c| c.as_str().to_string()),
                estimated_seconds: own,
                supervisor_estimate_seconds: estimate.as_ref().map(|e| e.estimated_seconds),
                supervisor_interval: estimate
                    .as_ref()
                    .map(|e| (e.interval_low_seconds, e.interval_high_seconds)),
                started_at,
            })
            .await?;
        Ok(Started {
            task_id,
            project,
            task_type: ty,
            started_at: rfc3339(started_at),
            estimate,
        })
    }

    pub async fn complete(&self, scope: &Scope, req: CompleteTimer) -> Result<Completed> {
        let id = identifier("task_id", &req.task_id)?;
        let explicit = req
            .duration_seconds
            .map(|s| seconds("duration_seconds", s))
            .transpose()?;
        let error_message = text("error_message", req.error_message, 10_000)?;
        let output_summary = text("output_summary", req.output_summary, 20_000)?;
        let lines_changed = count("lines_changed", req.lines_changed)?;
        let files_changed = count("files_changed", req.files_changed)?;
        let tests_written = count("tests_written", req.tests_written)?;
        let tokens_used = count("tokens_used", req.tokens_used)?;
        let retry_count = count("retry_count", req.retry_count)?;
        let success = req.success.unwrap_or(true);

        let unknown = || TimingError::UnknownTask {
            id: id.clone(),
            scope: scope.project().map(str::to_string),
        };
        let task = self.store.get_task(&id).await?.ok_or_else(unknown)?;
        if !scope.allows(task.project.as_deref()) {
            return Err(unknown());
        }
        if task.status != "running" {
            return Err(already_completed(&task));
        }
        let now = Utc::now();
        let actual = match explicit {
            Some(s) => s,
            None => {
                let s = (now - task.started_at)
                    .num_microseconds()
                    .unwrap_or(i64::MAX) as f64
                    / 1e6;
                if s <= 0.0 {
                    return Err(TimingError::ImplausibleDuration {
                        id,
                        seconds: s,
                        why: "it started in the future: are the clocks of the hosts in step?",
                    });
                }
                if s > super::MAX_DURATION_SECONDS {
                    return Err(TimingError::ImplausibleDuration {
                        id,
                        seconds: s,
                        why: "more than 90 days",
                    });
                }
                s
            }
        };
        let (reference, source) = match (task.estimated_seconds, task.supervisor_estimate_seconds) {
            (Some(e), _) => (Some(e), Some("caller")),
            (None, Some(e)) => (Some(e), Some("supervisor")),
            (None, None) => (None, None),
        };
        let project = task.project.clone().unwrap_or_default();
        let completion = Completion {
            id: id.clone(),
            task_type: task.task_type.clone(),
            project: project.clone(),
            completed_at: now,
            actual_seconds: actual,
            success,
            estimation_error: reference.map(|e| (actual - e) / e),
            error_message,
            output_summary,
            lines_changed,
            files_changed,
            tests_written,
            tokens_used,
            retry_count,
            stats: deltas([(
                task.task_type.as_str(),
                project.as_str(),
                TaskStats::completion(actual, success, task.estimated_seconds),
            )]),
        };
        if !self.store.complete_task(&completion).await? {
            // Completed by someone else between the read and the write.
            let task = self.store.get_task(&id).await?.ok_or_else(unknown)?;
            return Err(already_completed(&task));
        }
        Ok(Completed {
            task_id: id,
            project,
            task_type: task.task_type,
            status: if success { "completed" } else { "failed" }.into(),
            duration_seconds: actual,
            estimated_seconds: reference,
            estimate_source: source.map(str::to_string),
            estimation_error: completion.estimation_error,
            log_error: reference.map(|e| (actual / e).ln()),
        })
    }

    pub async fn list(&self, scope: &Scope, req: ListTimers) -> Result<Vec<TimerLine>> {
        let project = match (scope, req.project.as_deref()) {
            (Scope::All, None) => None,
            (s, given) => Some(s.resolve(given)?),
        };
        let limit = req.limit.unwrap_or(100);
        if !(1..=10_000).contains(&limit) {
            return Err(TimingError::Invalid {
                field: "limit",
                message: format!("{limit} is not between 1 and 10,000"),
            });
        }
        let now = Utc::now();
        let abandoned_only = req.abandoned.unwrap_or(false);
        let rows = self
            .store
            .list_tasks(&TaskFilter {
                project,
                running: req.running.unwrap_or(false) || abandoned_only,
                started_before: abandoned_only.then(|| self.abandoned_cutoff(now)),
                limit,
            })
            .await?;
        Ok(rows.into_iter().map(|r| self.timer_line(r, now)).collect())
    }

    fn timer_line(&self, r: TaskRow, now: DateTime<Utc>) -> TimerLine {
        let running = r.status == "running";
        let elapsed = match (running, r.actual_seconds) {
            (false, Some(s)) => s,
            _ => (now - r.started_at).num_milliseconds() as f64 / 1000.0,
        };
        let inside = match (r.status.as_str(), r.actual_seconds) {
            ("completed", Some(actual)) => r
                .supervisor_interval_low_seconds
                .zip(r.supervisor_interval_high_seconds)
                .map(|i| inside_interval(actual, i)),
            _ => None,
        };
        TimerLine {
            abandoned: running && r.started_at < self.abandoned_cutoff(now),
            task_id: r.id,
            project: r.project,
            task_type: r.task_type,
            description: r.description,
            status: r.status,
            started_at: rfc3339(r.started_at),
            completed_at: r.completed_at.map(rfc3339),
            elapsed_seconds: elapsed,
            estimated_seconds: r.estimated_seconds,
            supervisor_estimate_seconds: r.supervisor_estimate_seconds,
            supervisor_interval_low_seconds: r.supervisor_interval_low_seconds,
            supervisor_interval_high_seconds: r.supervisor_interval_high_seconds,
            inside_interval: inside,
            agent_type: r.agent,
            agent_model: r.agent_model,
            complexity: r.complexity,
            parent_task_id: r.parent_task_id,
            parallel_group: r.parallel_group,
            success: r.success,
            error_message: r.error_message,
            output_summary: r.output_summary,
            lines_changed: r.lines_changed,
            files_changed: r.files_changed,
            tests_written: r.tests_written,
            tokens_used: r.tokens_used,
            retry_count: r.retry_count,
        }
    }

    /// Running and abandoned timers (for `/health`).
    pub async fn timer_counts(&self) -> Result<TimerCounts> {
        let (running, abandoned) = self
            .store
            .timer_counts(self.abandoned_cutoff(Utc::now()))
            .await?;
        Ok(TimerCounts {
            running,
            abandoned,
            abandoned_after_seconds: self.abandoned_after.as_secs(),
        })
    }

    // -----------------------------------------------------------------------------------------------
    // Estimates and statistics

    pub async fn estimate(&self, scope: &Scope, req: &EstimateRequest) -> Result<EstimateOut> {
        let project = scope.resolve(req.project.as_deref())?;
        let task_id = req
            .task_id
            .as_deref()
            .map(|id| identifier("task_id", id))
            .transpose()?;
        let desc = description(&req.description)?;
        let ty = task_type(&req.task_type)?;
        let own = req
            .agent_estimate_seconds
            .map(|s| seconds("agent_estimate_seconds", s))
            .transpose()?;
        self.estimate_checked(scope, task_id, &desc, &ty, &project, own)
            .await
    }

    /// Estimates every line of a JSONL batch (all lines parsed first; a bad one fails the batch).
    pub async fn estimate_batch(
        &self,
        scope: &Scope,
        file: &str,
        text: &str,
    ) -> Result<Vec<EstimateOut>> {
        let lines = super::history::parse_estimate_batch(file, text)?;
        let mut out = Vec::with_capacity(lines.len());
        for (n, l) in lines {
            let req = EstimateRequest {
                task_id: Some(l.task_id),
                description: l.description,
                task_type: l.task_type,
                project: Some(l.project),
                agent_estimate_seconds: l.agent_estimate_seconds,
            };
            out.push(self.estimate(scope, &req).await.map_err(|e| match e {
                TimingError::Invalid { .. } => TimingError::Line {
                    file: file.to_string(),
                    line: n,
                    message: e.to_string(),
                    outcome: "nothing was estimated",
                },
                other => other,
            })?);
        }
        Ok(out)
    }

    /// The evidence an estimate of this request rests on: the statistics of its levels and up to
    /// `limit` similar completed tasks, most similar first (what [`Timing::estimate`] weighs; for
    /// evaluating estimators on real history).
    pub async fn evidence(
        &self,
        scope: &Scope,
        req: &EstimateRequest,
        limit: usize,
    ) -> Result<(Levels, Vec<SimilarTask>)> {
        let project = scope.resolve(req.project.as_deref())?;
        let desc = description(&req.description)?;
        let ty = task_type(&req.task_type)?;
        self.gather(scope, &desc, &ty, &project, limit).await
    }

    async fn gather(
        &self,
        scope: &Scope,
        desc: &str,
        ty: &str,
        project: &str,
        limit: usize,
    ) -> Result<(Levels, Vec<SimilarTask>)> {
        let levels = levels(self.store.stats_for_estimate(ty).await?, ty, project);
        let Some(level) = levels.search_level(self.params.min_samples) else {
            return Err(TimingError::NoHistory);
        };
        // Where similar tasks are searched: the fallback level; a project scope never looks at other
        // projects' tasks (only their aggregates).
        let (search_type, search_project) = match (level, scope) {
            (Level::TypeProject, _) => (Some(ty), Some(project)),
            (_, Scope::Project(_)) => (None, Some(project)),
            (Level::Type, Scope::All) => (Some(ty), None),
            (Level::All, Scope::All) => (None, None),
        };
        let similar = self
            .store
            .similar_tasks(desc, search_type, search_project, limit as i64)
            .await?;
        Ok((levels, similar))
    }

    async fn estimate_checked(
        &self,
        scope: &Scope,
        task_id: Option<String>,
        desc: &str,
        ty: &str,
        project: &str,
        own: Option<f64>,
    ) -> Result<EstimateOut> {
        let (levels, similar) = self
            .gather(scope, desc, ty, project, self.params.neighbours)
            .await?;
        let neighbours: Vec<Neighbour> = similar
            .iter()
            .map(|s| Neighbour {
                log_seconds: s.duration_seconds.ln(),
                score: s.score,
            })
            .collect();
        let e = estimate::estimate(&levels, &neighbours, own, &self.params)
            .ok_or(TimingError::NoHistory)?;
        Ok(EstimateOut {
            task_id,
            estimated_seconds: e.estimated_seconds,
            interval_low_seconds: e.interval_low_seconds,
            interval_high_seconds: e.interval_high_seconds,
            sample_size: e.sample_size,
            method: e.method,
            level: e.level,
            similar_tasks: similar.iter().take(SIMILAR_SHOWN).map(shown).collect(),
            calibration: e.calibration,
        })
    }

    /// The estimator's running calibration over the newest `window` (1 to 10,000) successful
    /// completions of `project` (or of every project the scope sees).
    pub async fn interval_coverage(
        &self,
        scope: &Scope,
        project: Option<&str>,
        window: i64,
    ) -> Result<IntervalCoverage> {
        if !(1..=10_000).contains(&window) {
            return Err(TimingError::Invalid {
                field: "window",
                message: format!("{window} is not between 1 and 10,000"),
            });
        }
        let project = match (scope, project) {
            (Scope::All, None) => None,
            (s, given) => Some(s.resolve(given)?),
        };
        let recent = self
            .store
            .recent_intervals(project.as_deref(), window)
            .await?;
        let tasks = recent.len() as i64;
        let inside = recent
            .iter()
            .filter(|(actual, low, high)| inside_interval(*actual, (*low, *high)))
            .count() as i64;
        Ok(IntervalCoverage {
            tasks,
            inside,
            share: (tasks > 0).then(|| inside as f64 / tasks as f64),
            window,
        })
    }

    /// Statistics per task type and project. A project scope sees only its project's rows.
    pub async fn stats(
        &self,
        scope: &Scope,
        task_type: Option<&str>,
        project: Option<&str>,
    ) -> Result<Vec<StatsLine>> {
        let ty = task_type.map(super::task_type).transpose()?;
        let project = match (scope, project) {
            (Scope::All, None) => None,
            (s, given) => Some(s.resolve(given)?),
        };
        let rows = self
            .store
            .list_task_stats(ty.as_deref(), project.as_deref())
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                stats_line(
                    &r.task_type,
                    &r.project,
                    &TaskStats::from_values(&r.values),
                    r.updated_at,
                )
            })
            .collect())
    }

    // -----------------------------------------------------------------------------------------------
    // History

    /// Imports a JSONL history file (see [`super::history::parse_history`]): all or nothing,
    /// idempotent on task ids.
    pub async fn import(&self, file: &str, text: &str) -> Result<ImportReport> {
        let tasks = super::history::parse_history(file, text, Utc::now())?;
        self.import_tasks(tasks).await
    }

    /// Imports checked tasks in one transaction, skipping the ids already present.
    pub async fn import_tasks(&self, tasks: Vec<ImportedTask>) -> Result<ImportReport> {
        let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        // The ids present are read first and the rest inserted with their statistics; an import that
        // races with another one over the same ids changes nothing and is tried again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let existing: std::collections::HashSet<String> = self
                .store
                .existing_task_ids(&ids)
                .await?
                .into_iter()
                .collect();
            let new: Vec<ImportedTask> = tasks
                .iter()
                .filter(|t| !existing.contains(&t.id))
                .cloned()
                .collect();
            let stats = deltas(new.iter().map(|t| {
                (
                    t.task_type.as_str(),
                    t.project.as_str(),
                    TaskStats::completion(t.actual_seconds, t.success, t.estimated_seconds),
                )
            }));
            match self.store.import_tasks(&new, &stats).await {
                Ok(()) => {
                    return Ok(ImportReport {
                        read: tasks.len(),
                        imported: new.len(),
                        skipped: tasks.len() - new.len(),
                    });
                }
                Err(StoreError::Conflict(_)) if attempts < 3 => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    // -----------------------------------------------------------------------------------------------
    // Parallel groups

    pub async fn start_group(&self, scope: &Scope, req: StartGroup) -> Result<GroupStarted> {
        let project = scope.resolve(req.project.as_deref())?;
        let id = match req.group_id.as_deref() {
            Some(id) => identifier("group_id", id)?,
            None => format!("group-{}", uuid::Uuid::new_v4().simple()),
        };
        let desc = description(&req.description)?;
        let mut children = Vec::with_capacity(req.child_task_ids.len());
        for c in &req.child_task_ids {
            let c = identifier("child_task_ids", c)?;
            if !children.contains(&c) {
                self.own_task_or_none("child_task_ids", &c, &project)
                    .await?;
                children.push(c);
            }
        }
        let agents = match req.agent_count {
            Some(n) if (1..=10_000).contains(&n) => n,
            Some(n) => {
                return Err(TimingError::Invalid {
                    field: "agent_count",
                    message: format!("{n} is not between 1 and 10,000"),
                });
            }
            None if !children.is_empty() => children.len() as i64,
            None => {
                return Err(TimingError::Invalid {
                    field: "agent_count",
                    message: "give agent_count or child_task_ids".into(),
                });
            }
        };
        let sequential = req
            .sequential_estimate_seconds
            .map(|s| seconds("sequential_estimate_seconds", s))
            .transpose()?;
        let started_at = Utc::now();
        self.store
            .start_group(&ParallelGroupRow {
                id: id.clone(),
                project: Some(project.clone()),
                description: desc,
                agent_count: agents as i32,
                sequential_estimate_s: sequential,
                actual_seconds: None,
                efficiency: None,
                started_at,
                completed_at: None,
                child_task_ids: sqlx::types::Json(children.clone()),
                completion_order: None,
                time_saved_seconds: None,
            })
            .await?;
        Ok(GroupStarted {
            group_id: id,
            project,
            agent_count: agents,
            child_task_ids: children,
            started_at: rfc3339(started_at),
        })
    }

    /// Completes a group whose every child task has completed: its wall time, the order the children
    /// finished in, efficiency and time saved.
    pub async fn complete_group(&self, scope: &Scope, group_id: &str) -> Result<GroupCompleted> {
        let id = identifier("group_id", group_id)?;
        let unknown = || TimingError::UnknownGroup {
            id: id.clone(),
            scope: scope.project().map(str::to_string),
        };
        let group = self.store.get_group(&id).await?.ok_or_else(unknown)?;
        if !scope.allows(group.project.as_deref()) {
            return Err(unknown());
        }
        if group.completed_at.is_some() {
            return Err(TimingError::GroupAlreadyCompleted { id });
        }
        let tasks: Vec<TaskRow> = self
            .store
            .group_tasks(&id, &group.child_task_ids.0)
            .await?
            .into_iter()
            .filter(|t| t.project == group.project)
            .collect();
        let missing: Vec<&str> = group
            .child_task_ids
            .0
            .iter()
            .filter(|c| !tasks.iter().any(|t| &t.id == *c))
            .map(String::as_str)
            .collect();
        let running: Vec<&str> = tasks
            .iter()
            .filter(|t| t.status == "running")
            .map(|t| t.id.as_str())
            .collect();
        let not_done = |why: String| TimingError::GroupNotDone {
            id: id.clone(),
            why,
        };
        if tasks.is_empty() && missing.is_empty() {
            return Err(not_done(
                "it has no tasks (list child_task_ids or start timers with its parallel_group)"
                    .into(),
            ));
        }
        if !missing.is_empty() {
            return Err(not_done(format!(
                "child tasks never started: {}",
                missing.join(", ")
            )));
        }
        if !running.is_empty() {
            return Err(not_done(format!(
                "child tasks still running: {} (complete them first)",
                running.join(", ")
            )));
        }
        let mut finished: Vec<(DateTime<Utc>, ChildDone)> = tasks
            .iter()
            .filter_map(|t| {
                let at = t.completed_at?;
                Some((
                    at,
                    ChildDone {
                        task_id: t.id.clone(),
                        status: t.status.clone(),
                        duration_seconds: t.actual_seconds?,
                        completed_at: rfc3339(at),
                    },
                ))
            })
            .collect();
        finished.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.task_id.cmp(&b.1.task_id)));
        let done: Vec<ChildDone> = finished.into_iter().map(|(_, c)| c).collect();
        let now = Utc::now();
        let parallel = ((now - group.started_at)
            .num_microseconds()
            .unwrap_or(i64::MAX) as f64
            / 1e6)
            .max(1e-6);
        let (sequential, source) = match group.sequential_estimate_s {
            Some(s) => (s, "given"),
            None => (
                done.iter().map(|c| c.duration_seconds).sum(),
                "sum_of_child_durations",
            ),
        };
        let agents = i64::from(group.agent_count.max(1));
        let efficiency = (sequential / agents as f64) / parallel;
        let saved = sequential - parallel;
        let order: Vec<String> = done.iter().map(|c| c.task_id.clone()).collect();
        let completed = self
            .store
            .complete_group(&GroupCompletion {
                id: id.clone(),
                completed_at: now,
                actual_seconds: parallel,
                sequential_estimate_s: Some(sequential),
                efficiency: Some(efficiency),
                completion_order: order,
                time_saved_seconds: Some(saved),
            })
            .await?;
        if !completed {
            return Err(TimingError::GroupAlreadyCompleted { id });
        }
        Ok(GroupCompleted {
            group_id: id,
            project: group.project.unwrap_or_default(),
            agent_count: agents,
            parallel_seconds: parallel,
            sequential_estimate_seconds: sequential,
            sequential_source: source.into(),
            efficiency,
            time_saved_seconds: saved,
            completion_order: done,
        })
    }
}

fn already_completed(task: &TaskRow) -> TimingError {
    TimingError::AlreadyCompleted {
        id: task.id.clone(),
        status: task.status.clone(),
        completed_at: task.completed_at.map(rfc3339).unwrap_or_default(),
    }
}

/// The three levels of an estimate, and their siblings, from the rows read for a task type: all tasks
/// are the merge of every all-project row.
fn levels(rows: Vec<TaskTypeStats>, task_type: &str, project: &str) -> Levels {
    let mut levels = Levels::default();
    let mut all: Option<TaskStats> = None;
    for r in rows {
        let stats = TaskStats::from_values(&r.values);
        if r.project.is_empty() {
            all = Some(all.unwrap_or_default().merge(&stats));
            levels.by_type.push(stats);
            if r.task_type == task_type {
                levels.task_type = Some(stats);
            }
        } else if r.task_type == task_type {
            levels.type_by_project.push(stats);
            if r.project == project {
                levels.type_project = Some(stats);
            }
        }
    }
    levels.all = all;
    levels
}

fn shown(s: &SimilarTask) -> SimilarShown {
    let mut description: String = s.description.chars().take(200).collect();
    if description.len() < s.description.len() {
        description.push('…');
    }
    SimilarShown {
        task_id: s.task_id.clone(),
        description,
        duration_seconds: s.duration_seconds,
    }
}

/// The user-facing summary of one statistics row.
pub fn stats_line(
    task_type: &str,
    project: &str,
    s: &TaskStats,
    updated_at: DateTime<Utc>,
) -> StatsLine {
    let n = s.log.n;
    let sd = s.log.sd();
    StatsLine {
        task_type: task_type.to_string(),
        project: (!project.is_empty()).then(|| project.to_string()),
        count: s.completed(),
        succeeded: n,
        failed: s.failed,
        success_rate: if s.completed() > 0 {
            n as f64 / s.completed() as f64
        } else {
            0.0
        },
        mean_seconds: (n > 0).then(|| s.sum_seconds / n as f64),
        median_seconds: (n > 0).then(|| s.log.mean.exp()),
        p95_seconds: sd.map(|sd| (s.log.mean + Z_95 * sd).exp()),
        min_seconds: s.min_seconds,
        max_seconds: s.max_seconds,
        sd_log: sd,
        own_estimates: s.ratio.n,
        own_estimate_bias: (s.ratio.n > 0).then(|| s.ratio.mean.exp()),
        updated_at: rfc3339(updated_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn stats_lines_summarise_the_log_normal_fit() {
        let s = [60.0, 240.0]
            .iter()
            .map(|&x| TaskStats::completion(x, true, Some(x / 2.0)))
            .chain([TaskStats::completion(5.0, false, None)])
            .fold(TaskStats::default(), |a, b| a.merge(&b));
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let l = stats_line("bug", "", &s, at);
        assert_eq!(l.project, None);
        assert_eq!((l.count, l.succeeded, l.failed), (3, 2, 1));
        assert!((l.success_rate - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(l.mean_seconds, Some(150.0));
        assert!((l.median_seconds.unwrap() - 120.0).abs() < 1e-9); // geometric mean of 60 and 240
        let sd = (2.0 * (2f64.ln()).powi(2)).sqrt(); // ln-values ln120 ± ln2, n - 1 = 1
        assert!((l.p95_seconds.unwrap() - (120f64.ln() + Z_95 * sd).exp()).abs() < 1e-6);
        assert_eq!((l.min_seconds, l.max_seconds), (Some(60.0), Some(240.0)));
        assert_eq!(l.own_estimates, 2);
        assert!((l.own_estimate_bias.unwrap() - 2.0).abs() < 1e-12);
        assert_eq!(l.updated_at, "2026-01-02T03:04:05.000Z");
    }

    #[test]
    fn similar_descriptions_are_shortened_on_characters() {
        let s = SimilarTask {
            task_id: "t".into(),
            project: "p".into(),
            task_type: "x".into(),
            description: "é".repeat(250),
            duration_seconds: 3.0,
            completed_at: None,
            score: 1.0,
        };
        let out = shown(&s);
        assert_eq!(out.description.chars().count(), 201);
        assert!(out.description.ends_with('…'));
    }
}
