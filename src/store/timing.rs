//! Task timers, parallel groups and the running statistics of task durations (`TimingRepo`), with
//! their SQL: the portable part written once (`timing_repo!`, expanded for each backend), full-text
//! search and bulk inserts per backend below it.
//!
//! Guarantees: a completion is one transaction — the task row goes from `running` to
//! `completed`/`failed` exactly once (a second completion matches no row and writes nothing) and the
//! statistics rows of (type, project) and (type, all projects) are merged in the same transaction, in
//! a fixed order (project rows before all-project rows, each sorted) so concurrent completions and
//! imports never deadlock on PostgreSQL. An import inserts every new task and merges their statistics
//! in one transaction, skipping task ids already present (so importing a file twice changes nothing).
//! Only successfully completed tasks are searchable.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;

use super::{PostgresStore, Result, SqliteStore, StoreError};
use crate::timing::stats::{LogStats, TaskStats};

/// A task timer as stored (running or finished).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TaskRow {
    pub id: String,
    pub project: Option<String>,
    pub task_type: String,
    pub description: String,
    /// The agent type.
    pub agent: Option<String>,
    pub agent_model: Option<String>,
    pub parent_task_id: Option<String>,
    pub parallel_group: Option<String>,
    pub complexity: Option<String>,
    /// The caller's own estimate.
    pub estimated_seconds: Option<f64>,
    /// The supervisor's estimate when the timer started.
    pub supervisor_estimate_seconds: Option<f64>,
    pub actual_seconds: Option<f64>,
    pub estimation_error: Option<f64>,
    /// `running`, `completed` (successfully) or `failed`.
    pub status: String,
    pub success: Option<bool>,
    pub error_message: Option<String>,
    pub output_summary: Option<String>,
    pub lines_changed: Option<i64>,
    pub files_changed: Option<i64>,
    pub tests_written: Option<i64>,
    pub tokens_used: Option<i64>,
    pub retry_count: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// The columns of [`TaskRow`], in order, for SELECTs.
const TASK_COLUMNS: &str = "id, project, task_type, description, agent, agent_model, parent_task_id, parallel_group,
    complexity, estimated_seconds, supervisor_estimate_seconds, actual_seconds, estimation_error, status,
    success, error_message, output_summary, lines_changed, files_changed, tests_written, tokens_used,
    retry_count, started_at, completed_at";

/// A timer to start.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub id: String,
    pub project: String,
    pub task_type: String,
    pub description: String,
    pub agent: Option<String>,
    pub agent_model: Option<String>,
    pub parent_task_id: Option<String>,
    pub parallel_group: Option<String>,
    pub complexity: Option<String>,
    pub estimated_seconds: Option<f64>,
    pub supervisor_estimate_seconds: Option<f64>,
    pub started_at: DateTime<Utc>,
}

/// The end of a running timer. `task_type` and `project` are the task's (they key the statistics).
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub id: String,
    pub task_type: String,
    pub project: String,
    pub completed_at: DateTime<Utc>,
    pub actual_seconds: f64,
    pub success: bool,
    pub estimation_error: Option<f64>,
    pub error_message: Option<String>,
    pub output_summary: Option<String>,
    pub lines_changed: Option<i64>,
    pub files_changed: Option<i64>,
    pub tests_written: Option<i64>,
    pub tokens_used: Option<i64>,
    pub retry_count: Option<i64>,
    /// This completion's contribution to the statistics.
    pub stats: TaskStats,
}

/// A finished task from history (`timing import`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedTask {
    pub id: String,
    pub project: String,
    pub task_type: String,
    pub description: String,
    pub actual_seconds: f64,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub estimated_seconds: Option<f64>,
    pub success: bool,
}

/// The statistics of one (task type, project) row; project `""` = all projects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskTypeStats {
    pub task_type: String,
    pub project: String,
    pub stats: TaskStats,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct StatsRow {
    task_type: String,
    project: String,
    sample_count: i64,
    mean_log: f64,
    m2_log: f64,
    failed_count: i64,
    sum_seconds: f64,
    min_seconds: Option<f64>,
    max_seconds: Option<f64>,
    ratio_count: i64,
    ratio_mean_log: f64,
    ratio_m2_log: f64,
    updated_at: DateTime<Utc>,
}

impl From<StatsRow> for TaskTypeStats {
    fn from(r: StatsRow) -> Self {
        TaskTypeStats {
            task_type: r.task_type,
            project: r.project,
            stats: TaskStats {
                log: LogStats {
                    n: r.sample_count,
                    mean: r.mean_log,
                    m2: r.m2_log,
                },
                failed: r.failed_count,
                sum_seconds: r.sum_seconds,
                min_seconds: r.min_seconds,
                max_seconds: r.max_seconds,
                ratio: LogStats {
                    n: r.ratio_count,
                    mean: r.ratio_mean_log,
                    m2: r.ratio_m2_log,
                },
            },
            updated_at: r.updated_at,
        }
    }
}

/// The statistics the estimator needs for one (type, project), read in one query.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StatsLevels {
    pub type_project: Option<TaskStats>,
    /// The type across projects.
    pub task_type: Option<TaskStats>,
    /// Every task (merged from the all-project rows of every type).
    pub all: Option<TaskStats>,
}

/// A successfully completed task found by text search.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct SimilarTask {
    pub task_id: String,
    pub project: String,
    pub task_type: String,
    pub description: String,
    pub duration_seconds: f64,
    pub completed_at: Option<DateTime<Utc>>,
    /// Higher is more similar (BM25 on SQLite, ts_rank on PostgreSQL; only the order and ratios within
    /// one result matter).
    pub score: f64,
}

/// Which timers to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskFilter {
    pub project: Option<String>,
    /// Only running timers.
    pub running: bool,
    /// Only timers started before this (with `running`: the abandoned ones).
    pub started_before: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// A parallel group as stored.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ParallelGroupRow {
    pub id: String,
    pub project: Option<String>,
    pub description: String,
    pub agent_count: i32,
    pub sequential_estimate_s: Option<f64>,
    pub actual_seconds: Option<f64>,
    pub efficiency: Option<f64>,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub child_task_ids: Json<Vec<String>>,
    pub completion_order: Option<Json<Vec<String>>>,
    pub time_saved_seconds: Option<f64>,
}

/// The end of a parallel group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupCompletion {
    pub id: String,
    pub completed_at: DateTime<Utc>,
    pub actual_seconds: f64,
    pub sequential_estimate_s: Option<f64>,
    pub efficiency: Option<f64>,
    pub completion_order: Vec<String>,
    pub time_saved_seconds: Option<f64>,
}

#[async_trait]
pub trait TimingRepo {
    /// Inserts a running timer; an existing id is a [`StoreError::Conflict`] naming it.
    async fn start_task(&self, task: &NewTask) -> Result<()>;
    async fn get_task(&self, id: &str) -> Result<Option<TaskRow>>;
    /// Ends a running timer and merges its statistics, in one transaction. Returns false (and writes
    /// nothing) when no running timer has this id.
    async fn complete_task(&self, c: &Completion) -> Result<bool>;
    /// Inserts finished tasks and merges their statistics in one transaction; ids already present are
    /// skipped. Returns the ids inserted.
    async fn import_tasks(&self, tasks: &[ImportedTask]) -> Result<Vec<String>>;
    /// Newest first.
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRow>>;
    /// (running, of which started before `abandoned_before`).
    async fn timer_counts(&self, abandoned_before: DateTime<Utc>) -> Result<(i64, i64)>;
    /// The tasks with these ids or in this parallel group.
    async fn group_tasks(&self, group: &str, ids: &[String]) -> Result<Vec<TaskRow>>;
    async fn stats_levels(&self, task_type: &str, project: &str) -> Result<StatsLevels>;
    /// Statistics rows, optionally of one type and/or one project (`""` = the all-project rows).
    async fn list_task_stats(
        &self,
        task_type: Option<&str>,
        project: Option<&str>,
    ) -> Result<Vec<TaskTypeStats>>;
    /// Successfully completed tasks whose description matches `text` best, optionally only of one type
    /// and/or project. Empty when `text` has no searchable word.
    async fn similar_tasks(
        &self,
        text: &str,
        task_type: Option<&str>,
        project: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SimilarTask>>;
    /// An existing id is a [`StoreError::Conflict`] naming it.
    async fn start_group(&self, group: &ParallelGroupRow) -> Result<()>;
    async fn get_group(&self, id: &str) -> Result<Option<ParallelGroupRow>>;
    /// Returns false (and writes nothing) when the group is unknown or already completed.
    async fn complete_group(&self, c: &GroupCompletion) -> Result<bool>;
}

/// Merges a batch's statistics into a row (Chan et al.'s formula, as `LogStats::merge`). SET expressions
/// read the row's old values on both backends; a batch with no successful completion (only failures)
/// leaves the log statistics as they are.
pub(crate) const STATS_MERGE_SQL: &str = "INSERT INTO task_type_stats (task_type, project, sample_count, mean_log, m2_log,
        failed_count, sum_seconds, min_seconds, max_seconds, ratio_count, ratio_mean_log, ratio_m2_log, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    ON CONFLICT (task_type, project) DO UPDATE SET
        sample_count = task_type_stats.sample_count + excluded.sample_count,
        mean_log = CASE WHEN excluded.sample_count = 0 THEN task_type_stats.mean_log
            ELSE task_type_stats.mean_log + (excluded.mean_log - task_type_stats.mean_log) * excluded.sample_count
                 / (task_type_stats.sample_count + excluded.sample_count) END,
        m2_log = CASE WHEN excluded.sample_count = 0 THEN task_type_stats.m2_log
            ELSE task_type_stats.m2_log + excluded.m2_log
                 + (excluded.mean_log - task_type_stats.mean_log) * (excluded.mean_log - task_type_stats.mean_log)
                   * task_type_stats.sample_count * excluded.sample_count
                   / (task_type_stats.sample_count + excluded.sample_count) END,
        failed_count = task_type_stats.failed_count + excluded.failed_count,
        sum_seconds = task_type_stats.sum_seconds + excluded.sum_seconds,
        min_seconds = CASE WHEN excluded.min_seconds IS NULL THEN task_type_stats.min_seconds
            WHEN task_type_stats.min_seconds IS NULL OR excluded.min_seconds < task_type_stats.min_seconds
            THEN excluded.min_seconds ELSE task_type_stats.min_seconds END,
        max_seconds = CASE WHEN excluded.max_seconds IS NULL THEN task_type_stats.max_seconds
            WHEN task_type_stats.max_seconds IS NULL OR excluded.max_seconds > task_type_stats.max_seconds
            THEN excluded.max_seconds ELSE task_type_stats.max_seconds END,
        ratio_count = task_type_stats.ratio_count + excluded.ratio_count,
        ratio_mean_log = CASE WHEN excluded.ratio_count = 0 THEN task_type_stats.ratio_mean_log
            ELSE task_type_stats.ratio_mean_log + (excluded.ratio_mean_log - task_type_stats.ratio_mean_log)
                 * excluded.ratio_count / (task_type_stats.ratio_count + excluded.ratio_count) END,
        ratio_m2_log = CASE WHEN excluded.ratio_count = 0 THEN task_type_stats.ratio_m2_log
            ELSE task_type_stats.ratio_m2_log + excluded.ratio_m2_log
                 + (excluded.ratio_mean_log - task_type_stats.ratio_mean_log)
                   * (excluded.ratio_mean_log - task_type_stats.ratio_mean_log)
                   * task_type_stats.ratio_count * excluded.ratio_count
                   / (task_type_stats.ratio_count + excluded.ratio_count) END,
        updated_at = excluded.updated_at";

/// The statistics rows a set of contributions touches, in lock order: (type, project) rows first, then
/// the (type, '') rows, each sorted — every writer takes row locks in this order.
pub(crate) fn stats_updates<'a>(
    contributions: impl IntoIterator<Item = (&'a str, &'a str, TaskStats)>,
) -> Vec<((bool, String, String), TaskStats)> {
    let mut rows: BTreeMap<(bool, String, String), TaskStats> = BTreeMap::new();
    for (task_type, project, s) in contributions {
        for key in [
            (false, task_type.to_string(), project.to_string()),
            (true, task_type.to_string(), String::new()),
        ] {
            let e = rows.entry(key).or_default();
            *e = e.merge(&s);
        }
    }
    rows.into_iter().collect()
}

/// Builds [`StatsLevels`] from the rows read for (type, project).
pub(crate) fn levels_from_rows(
    rows: Vec<TaskTypeStats>,
    task_type: &str,
    project: &str,
) -> StatsLevels {
    let mut levels = StatsLevels::default();
    let mut all: Option<TaskStats> = None;
    for r in rows {
        if r.project.is_empty() {
            all = Some(all.unwrap_or_default().merge(&r.stats));
            if r.task_type == task_type {
                levels.task_type = Some(r.stats);
            }
        } else if r.task_type == task_type && r.project == project {
            levels.type_project = Some(r.stats);
        }
    }
    levels.all = all;
    levels
}

macro_rules! timing_repo {
    ($store:ty, $db:ty) => {
        impl $store {
            async fn merge_stats<'c>(
                tx: &mut sqlx::Transaction<'c, $db>,
                updates: &[((bool, String, String), TaskStats)],
                now: DateTime<Utc>,
                op: &'static str,
            ) -> Result<()> {
                for ((_, task_type, project), s) in updates {
                    sqlx::query(STATS_MERGE_SQL)
                        .bind(task_type)
                        .bind(project)
                        .bind(s.log.n)
                        .bind(s.log.mean)
                        .bind(s.log.m2)
                        .bind(s.failed)
                        .bind(s.sum_seconds)
                        .bind(s.min_seconds)
                        .bind(s.max_seconds)
                        .bind(s.ratio.n)
                        .bind(s.ratio.mean)
                        .bind(s.ratio.m2)
                        .bind(now)
                        .execute(&mut **tx)
                        .await
                        .map_err(StoreError::query(op))?;
                }
                Ok(())
            }
        }

        #[async_trait]
        impl TimingRepo for $store {
            async fn start_task(&self, t: &NewTask) -> Result<()> {
                sqlx::query(
                    "INSERT INTO task_executions (id, project, task_type, description, agent, agent_model,
                         parent_task_id, parallel_group, complexity, estimated_seconds, supervisor_estimate_seconds,
                         status, started_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'running', $12)",
                )
                .bind(&t.id)
                .bind(&t.project)
                .bind(&t.task_type)
                .bind(&t.description)
                .bind(&t.agent)
                .bind(&t.agent_model)
                .bind(&t.parent_task_id)
                .bind(&t.parallel_group)
                .bind(&t.complexity)
                .bind(t.estimated_seconds)
                .bind(t.supervisor_estimate_seconds)
                .bind(t.started_at)
                .execute(&self.pool)
                .await
                .map_err(|e| match StoreError::query("start a task timer")(e) {
                    StoreError::Conflict(_) => StoreError::Conflict(format!(
                        "a task with id `{}` already exists; choose another task_id (or omit it to get a generated one)",
                        t.id
                    )),
                    other => other,
                })?;
                Ok(())
            }

            async fn get_task(&self, id: &str) -> Result<Option<TaskRow>> {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {TASK_COLUMNS} FROM task_executions WHERE id = $1"
                )))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::query("read a task timer"))
            }

            async fn complete_task(&self, c: &Completion) -> Result<bool> {
                let op = "complete a task timer";
                let mut tx = self.begin_write().await.map_err(StoreError::query(op))?;
                // SQLite: the write lock is taken at BEGIN (a deferred transaction upgraded by the
                // UPDATE and its search trigger fails with SQLITE_BUSY under concurrent writers instead
                // of waiting). PostgreSQL: the task row is locked before any statistics row.
                let done = sqlx::query(
                    "UPDATE task_executions SET status = $2, success = $3, completed_at = $4, actual_seconds = $5,
                         estimation_error = $6, error_message = $7, output_summary = $8, lines_changed = $9,
                         files_changed = $10, tests_written = $11, tokens_used = $12, retry_count = $13
                     WHERE id = $1 AND status = 'running'",
                )
                .bind(&c.id)
                .bind(if c.success { "completed" } else { "failed" })
                .bind(c.success)
                .bind(c.completed_at)
                .bind(c.actual_seconds)
                .bind(c.estimation_error)
                .bind(&c.error_message)
                .bind(&c.output_summary)
                .bind(c.lines_changed)
                .bind(c.files_changed)
                .bind(c.tests_written)
                .bind(c.tokens_used)
                .bind(c.retry_count)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query(op))?;
                if done.rows_affected() != 1 {
                    tx.rollback().await.map_err(StoreError::query(op))?;
                    return Ok(false);
                }
                let updates = stats_updates([(c.task_type.as_str(), c.project.as_str(), c.stats)]);
                Self::merge_stats(&mut tx, &updates, c.completed_at, op).await?;
                tx.commit().await.map_err(StoreError::query(op))?;
                Ok(true)
            }

            async fn import_tasks(&self, tasks: &[ImportedTask]) -> Result<Vec<String>> {
                let op = "import task history";
                let mut tx = self.begin_write().await.map_err(StoreError::query(op))?;
                let mut inserted = Vec::new();
                for chunk in tasks.chunks(2000) {
                    inserted.extend(Self::insert_imported(&mut tx, chunk).await?);
                }
                let by_id: std::collections::HashMap<&str, &ImportedTask> =
                    tasks.iter().map(|t| (t.id.as_str(), t)).collect();
                let updates = stats_updates(inserted.iter().filter_map(|id| by_id.get(id.as_str())).map(|t| {
                    (
                        t.task_type.as_str(),
                        t.project.as_str(),
                        TaskStats::completion(t.actual_seconds, t.success, t.estimated_seconds),
                    )
                }));
                Self::merge_stats(&mut tx, &updates, Utc::now(), op).await?;
                tx.commit().await.map_err(StoreError::query(op))?;
                Ok(inserted)
            }

            async fn list_tasks(&self, f: &TaskFilter) -> Result<Vec<TaskRow>> {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {TASK_COLUMNS} FROM task_executions
                     WHERE ($1 IS NULL OR project = $1)
                       AND ($2 = 0 OR status = 'running')
                       AND ($3 IS NULL OR started_at < $3)
                     ORDER BY started_at DESC, id LIMIT $4"
                )))
                .bind(f.project.as_deref())
                .bind(i32::from(f.running))
                .bind(f.started_before)
                .bind(f.limit)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::query("list task timers"))
            }

            async fn timer_counts(&self, abandoned_before: DateTime<Utc>) -> Result<(i64, i64)> {
                sqlx::query_as(
                    "SELECT count(*), coalesce(sum(CASE WHEN started_at < $1 THEN 1 ELSE 0 END), 0)
                     FROM task_executions WHERE status = 'running'",
                )
                .bind(abandoned_before)
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::query("count running task timers"))
            }

            async fn group_tasks(&self, group: &str, ids: &[String]) -> Result<Vec<TaskRow>> {
                let mut rows: Vec<TaskRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {TASK_COLUMNS} FROM task_executions WHERE parallel_group = $1"
                )))
                .bind(group)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::query("read a parallel group's tasks"))?;
                for id in ids {
                    if !rows.iter().any(|r| &r.id == id)
                        && let Some(r) = self.get_task(id).await?
                    {
                        rows.push(r);
                    }
                }
                Ok(rows)
            }

            async fn stats_levels(&self, task_type: &str, project: &str) -> Result<StatsLevels> {
                let rows: Vec<StatsRow> = sqlx::query_as(
                    "SELECT * FROM task_type_stats WHERE project = '' OR (task_type = $1 AND project = $2)",
                )
                .bind(task_type)
                .bind(project)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::query("read task statistics"))?;
                Ok(levels_from_rows(
                    rows.into_iter().map(Into::into).collect(),
                    task_type,
                    project,
                ))
            }

            async fn list_task_stats(
                &self,
                task_type: Option<&str>,
                project: Option<&str>,
            ) -> Result<Vec<TaskTypeStats>> {
                let rows: Vec<StatsRow> = sqlx::query_as(
                    "SELECT * FROM task_type_stats WHERE ($1 IS NULL OR task_type = $1) AND ($2 IS NULL OR project = $2)
                     ORDER BY task_type, project",
                )
                .bind(task_type)
                .bind(project)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::query("read task statistics"))?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn similar_tasks(
                &self,
                text: &str,
                task_type: Option<&str>,
                project: Option<&str>,
                limit: i64,
            ) -> Result<Vec<SimilarTask>> {
                self.search_tasks(text, task_type, project, limit).await
            }

            async fn start_group(&self, g: &ParallelGroupRow) -> Result<()> {
                sqlx::query(
                    "INSERT INTO parallel_executions (id, project, description, agent_count, sequential_estimate_s,
                         started_at, child_task_ids)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&g.id)
                .bind(&g.project)
                .bind(&g.description)
                .bind(g.agent_count)
                .bind(g.sequential_estimate_s)
                .bind(g.started_at)
                .bind(&g.child_task_ids)
                .execute(&self.pool)
                .await
                .map_err(|e| match StoreError::query("start a parallel group")(e) {
                    StoreError::Conflict(_) => StoreError::Conflict(format!(
                        "a parallel group with id `{}` already exists; choose another group_id",
                        g.id
                    )),
                    other => other,
                })?;
                Ok(())
            }

            async fn get_group(&self, id: &str) -> Result<Option<ParallelGroupRow>> {
                sqlx::query_as(
                    "SELECT id, project, description, agent_count, sequential_estimate_s, actual_seconds, efficiency,
                            started_at, completed_at, child_task_ids, completion_order, time_saved_seconds
                     FROM parallel_executions WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::query("read a parallel group"))
            }

            async fn complete_group(&self, c: &GroupCompletion) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE parallel_executions SET completed_at = $2, actual_seconds = $3, sequential_estimate_s = $4,
                         efficiency = $5, completion_order = $6, time_saved_seconds = $7
                     WHERE id = $1 AND completed_at IS NULL",
                )
                .bind(&c.id)
                .bind(c.completed_at)
                .bind(c.actual_seconds)
                .bind(c.sequential_estimate_s)
                .bind(c.efficiency)
                .bind(Json(&c.completion_order))
                .bind(c.time_saved_seconds)
                .execute(&self.pool)
                .await
                .map_err(StoreError::query("complete a parallel group"))?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

timing_repo!(SqliteStore, sqlx::Sqlite);
timing_repo!(PostgresStore, sqlx::Postgres);

/// Lowercased words of a description, deduplicated, for a full-text query: letters and digits only (no
/// operator can be injected), at most `max` of them, longest first (long words are rarer and carry
/// more of a description's meaning; the cap bounds the cost of a query on a large history).
fn query_words(text: &str, max: usize) -> Vec<String> {
    let mut words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(str::to_lowercase)
        .collect();
    words.sort();
    words.dedup();
    words.sort_by(|a, b| b.chars().count().cmp(&a.chars().count()).then(a.cmp(b)));
    words.truncate(max);
    words
}

/// At most this many words of a description go into a search.
const MAX_QUERY_WORDS: usize = 32;

impl SqliteStore {
    /// A write transaction: `BEGIN IMMEDIATE` takes the write lock up front, waiting for it under the
    /// busy timeout.
    async fn begin_write(
        &self,
    ) -> std::result::Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    async fn insert_imported(
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        chunk: &[ImportedTask],
    ) -> Result<Vec<String>> {
        let stamp = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false);
        let rows: Vec<serde_json::Value> = chunk
            .iter()
            .map(|t| {
                serde_json::json!([
                    t.id,
                    t.project,
                    t.task_type,
                    t.description,
                    t.estimated_seconds,
                    t.actual_seconds,
                    if t.success { "completed" } else { "failed" },
                    t.success,
                    stamp(&t.started_at),
                    stamp(&t.completed_at),
                    t.estimated_seconds.map(|e| (t.actual_seconds - e) / e),
                ])
            })
            .collect();
        sqlx::query_scalar(
            "INSERT INTO task_executions (id, project, task_type, description, estimated_seconds, actual_seconds,
                 status, success, started_at, completed_at, estimation_error)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7,
                    value->>8, value->>9, value->>10
             FROM json_each($1) WHERE true ORDER BY key
             ON CONFLICT (id) DO NOTHING RETURNING id",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .fetch_all(&mut **tx)
        .await
        .map_err(StoreError::query("import task history"))
    }

    async fn search_tasks(
        &self,
        text: &str,
        task_type: Option<&str>,
        project: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SimilarTask>> {
        let words = query_words(text, MAX_QUERY_WORDS);
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let q = words
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(" OR ");
        sqlx::query_as(
            "SELECT task_id, project, task_type, description, actual_seconds AS duration_seconds, completed_at,
                    -bm25(task_search) AS score
             FROM task_search
             WHERE task_search MATCH $1 AND ($2 IS NULL OR project = $2) AND ($3 IS NULL OR task_type = $3)
             ORDER BY bm25(task_search) LIMIT $4",
        )
        .bind(q)
        .bind(project)
        .bind(task_type)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("search completed tasks"))
    }
}

impl PostgresStore {
    async fn begin_write(
        &self,
    ) -> std::result::Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    async fn insert_imported(
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        chunk: &[ImportedTask],
    ) -> Result<Vec<String>> {
        let col = |f: fn(&ImportedTask) -> &str| -> Vec<&str> { chunk.iter().map(f).collect() };
        let estimated: Vec<Option<f64>> = chunk.iter().map(|t| t.estimated_seconds).collect();
        let actual: Vec<f64> = chunk.iter().map(|t| t.actual_seconds).collect();
        let success: Vec<bool> = chunk.iter().map(|t| t.success).collect();
        let started: Vec<DateTime<Utc>> = chunk.iter().map(|t| t.started_at).collect();
        let completed: Vec<DateTime<Utc>> = chunk.iter().map(|t| t.completed_at).collect();
        sqlx::query_scalar(
            "INSERT INTO task_executions (id, project, task_type, description, estimated_seconds, actual_seconds,
                 status, success, started_at, completed_at, estimation_error)
             SELECT i, p, ty, d, e, a, CASE WHEN s THEN 'completed' ELSE 'failed' END, s, st, co, (a - e) / e
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[], $7::bool[],
                         $8::timestamptz[], $9::timestamptz[]) WITH ORDINALITY AS r(i, p, ty, d, e, a, s, st, co, n)
             ORDER BY n
             ON CONFLICT (id) DO NOTHING RETURNING id",
        )
        .bind(col(|t| &t.id))
        .bind(col(|t| &t.project))
        .bind(col(|t| &t.task_type))
        .bind(col(|t| &t.description))
        .bind(estimated)
        .bind(actual)
        .bind(success)
        .bind(started)
        .bind(completed)
        .fetch_all(&mut **tx)
        .await
        .map_err(StoreError::query("import task history"))
    }

    async fn search_tasks(
        &self,
        text: &str,
        task_type: Option<&str>,
        project: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SimilarTask>> {
        let words = query_words(text, MAX_QUERY_WORDS);
        if words.is_empty() {
            return Ok(Vec::new());
        }
        // Each word through the english configuration (stop words vanish, the rest are stemmed), any
        // may match. The words are letters and digits only, so they cannot form operators.
        sqlx::query_as(
            "SELECT id AS task_id, coalesce(project, '') AS project, task_type, description,
                    actual_seconds AS duration_seconds, completed_at,
                    ts_rank(search_text, q)::float8 AS score
             FROM task_executions, to_tsquery('english', $1) AS q
             WHERE status = 'completed' AND search_text @@ q
               AND ($2::text IS NULL OR project = $2) AND ($3::text IS NULL OR task_type = $3)
             ORDER BY score DESC, id LIMIT $4",
        )
        .bind(words.join(" | "))
        .bind(project)
        .bind(task_type)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("search completed tasks"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_words_are_safe_deduplicated_and_capped() {
        assert_eq!(
            query_words("Fix the \"login\" OR NEAR(page) -- login; é", 10),
            vec!["login", "near", "page", "fix", "the", "or"]
        );
        assert_eq!(query_words("a b c", 10), Vec::<String>::new());
        assert_eq!(
            query_words("alpha beta gamma delta", 2),
            vec!["alpha", "delta"]
        );
    }

    #[test]
    fn stats_updates_are_in_lock_order_and_merged() {
        let one = TaskStats::completion(60.0, true, None);
        let u = stats_updates([("b", "p2", one), ("a", "p1", one), ("b", "p1", one)]);
        let keys: Vec<(bool, &str, &str)> = u
            .iter()
            .map(|((all, t, p), _)| (*all, t.as_str(), p.as_str()))
            .collect();
        assert_eq!(
            keys,
            vec![
                (false, "a", "p1"),
                (false, "b", "p1"),
                (false, "b", "p2"),
                (true, "a", ""),
                (true, "b", ""),
            ]
        );
        assert_eq!(u[4].1.log.n, 2);
    }
}
