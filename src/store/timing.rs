//! Task timers, parallel groups and the running statistics of task durations (`TimingRepo`), with
//! their SQL: the portable part written once (`timing_repo!`, expanded for each backend), full-text
//! search and bulk inserts per backend below it.
//!
//! The store holds running statistics but does no statistics: callers (`crate::timing`) compute each
//! completion's or import's contribution ([`StatsDelta`]) and the store merges it into the rows with
//! [`STATS_MERGE_SQL`] (Chan et al.'s formula, in SQL).
//!
//! Guarantees: a completion is one transaction — the task row goes from `running` to
//! `completed`/`failed` exactly once (a second completion matches no row and writes nothing) and its
//! statistics deltas are merged in the same transaction, in a fixed order (project rows before
//! all-project rows, each sorted) so concurrent completions and imports never deadlock on PostgreSQL.
//! An import inserts all of its tasks and merges their deltas in one transaction, or nothing (a task id
//! that already exists fails the whole import). Only successfully completed tasks are searchable.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;

use super::{PostgresStore, Result, SqliteStore, StoreError};

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
    /// Its 95 % interval.
    pub supervisor_interval_low_seconds: Option<f64>,
    pub supervisor_interval_high_seconds: Option<f64>,
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
    complexity, estimated_seconds, supervisor_estimate_seconds, supervisor_interval_low_seconds,
    supervisor_interval_high_seconds, actual_seconds, estimation_error, status,
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
    /// The supervisor's 95 % interval (low, high).
    pub supervisor_interval: Option<(f64, f64)>,
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
    /// This completion's contribution to the statistics rows.
    pub stats: Vec<StatsDelta>,
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

/// The running statistics of one row as stored (`crate::timing::stats` says what they mean and does
/// the arithmetic).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, sqlx::FromRow)]
pub struct StatsValues {
    /// ln(seconds) of successful completions: count, mean, sum of squared deviations.
    pub sample_count: i64,
    pub mean_log: f64,
    pub m2_log: f64,
    pub failed_count: i64,
    pub sum_seconds: f64,
    pub min_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
    /// ln(actual / caller's estimate): count, mean, sum of squared deviations.
    pub ratio_count: i64,
    pub ratio_mean_log: f64,
    pub ratio_m2_log: f64,
}

/// One statistics row; project `""` = all projects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskTypeStats {
    pub task_type: String,
    pub project: String,
    pub values: StatsValues,
    pub updated_at: DateTime<Utc>,
}

/// A contribution to merge into the row (task_type, project).
#[derive(Debug, Clone, PartialEq)]
pub struct StatsDelta {
    pub task_type: String,
    pub project: String,
    pub values: StatsValues,
}

impl StatsDelta {
    /// The order in which rows are locked: (type, project) rows first, then the (type, '') rows, each
    /// sorted.
    fn lock_key(&self) -> (bool, &str, &str) {
        (self.project.is_empty(), &self.task_type, &self.project)
    }
}

#[derive(sqlx::FromRow)]
struct StatsRow {
    task_type: String,
    project: String,
    #[sqlx(flatten)]
    values: StatsValues,
    updated_at: DateTime<Utc>,
}

impl From<StatsRow> for TaskTypeStats {
    fn from(r: StatsRow) -> Self {
        TaskTypeStats {
            task_type: r.task_type,
            project: r.project,
            values: r.values,
            updated_at: r.updated_at,
        }
    }
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
    /// The ids among `ids` that exist.
    async fn existing_task_ids(&self, ids: &[String]) -> Result<Vec<String>>;
    /// Inserts finished tasks and merges `stats` in one transaction. All or nothing: an id that already
    /// exists is a [`StoreError::Conflict`] and nothing is written.
    async fn import_tasks(&self, tasks: &[ImportedTask], stats: &[StatsDelta]) -> Result<()>;
    /// Newest first.
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRow>>;
    /// (running, of which started before `abandoned_before`).
    async fn timer_counts(&self, abandoned_before: DateTime<Utc>) -> Result<(i64, i64)>;
    /// The newest `last` successful completions (of `project`, when given) that carry the supervisor's
    /// interval, newest first, as (actual, interval low, interval high) seconds.
    async fn recent_intervals(
        &self,
        project: Option<&str>,
        last: i64,
    ) -> Result<Vec<(f64, f64, f64)>>;
    /// The tasks with these ids or in this parallel group.
    async fn group_tasks(&self, group: &str, ids: &[String]) -> Result<Vec<TaskRow>>;
    /// The rows an estimate for a task type needs: the type's row of every project and every
    /// all-project row.
    async fn stats_for_estimate(&self, task_type: &str) -> Result<Vec<TaskTypeStats>>;
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

macro_rules! timing_repo {
    ($store:ty, $db:ty) => {
        impl $store {
            async fn merge_stats<'c>(
                tx: &mut sqlx::Transaction<'c, $db>,
                deltas: &[StatsDelta],
                now: DateTime<Utc>,
                op: &'static str,
            ) -> Result<()> {
                let mut ordered: Vec<&StatsDelta> = deltas.iter().collect();
                ordered.sort_by(|a, b| a.lock_key().cmp(&b.lock_key()));
                for d in ordered {
                    let v = &d.values;
                    sqlx::query(STATS_MERGE_SQL)
                        .bind(&d.task_type)
                        .bind(&d.project)
                        .bind(v.sample_count)
                        .bind(v.mean_log)
                        .bind(v.m2_log)
                        .bind(v.failed_count)
                        .bind(v.sum_seconds)
                        .bind(v.min_seconds)
                        .bind(v.max_seconds)
                        .bind(v.ratio_count)
                        .bind(v.ratio_mean_log)
                        .bind(v.ratio_m2_log)
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
                         supervisor_interval_low_seconds, supervisor_interval_high_seconds, status, started_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'running', $14)",
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
                .bind(t.supervisor_interval.map(|i| i.0))
                .bind(t.supervisor_interval.map(|i| i.1))
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
                Self::merge_stats(&mut tx, &c.stats, c.completed_at, op).await?;
                tx.commit().await.map_err(StoreError::query(op))?;
                Ok(true)
            }

            async fn existing_task_ids(&self, ids: &[String]) -> Result<Vec<String>> {
                let mut found = Vec::new();
                for chunk in ids.chunks(5000) {
                    found.extend(self.fetch_existing_ids(chunk).await?);
                }
                Ok(found)
            }

            async fn import_tasks(&self, tasks: &[ImportedTask], stats: &[StatsDelta]) -> Result<()> {
                let op = "import task history";
                let mut tx = self.begin_write().await.map_err(StoreError::query(op))?;
                let mut inserted = 0;
                for chunk in tasks.chunks(2000) {
                    inserted += Self::insert_imported(&mut tx, chunk).await?;
                }
                if inserted != tasks.len() {
                    tx.rollback().await.map_err(StoreError::query(op))?;
                    return Err(StoreError::Conflict(format!(
                        "{} of the {} tasks already exist (imported concurrently?); nothing was imported",
                        tasks.len() - inserted,
                        tasks.len()
                    )));
                }
                Self::merge_stats(&mut tx, stats, Utc::now(), op).await?;
                tx.commit().await.map_err(StoreError::query(op))?;
                Ok(())
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

            async fn recent_intervals(
                &self,
                project: Option<&str>,
                last: i64,
            ) -> Result<Vec<(f64, f64, f64)>> {
                sqlx::query_as(
                    "SELECT actual_seconds, supervisor_interval_low_seconds, supervisor_interval_high_seconds
                     FROM task_executions
                     WHERE status = 'completed' AND supervisor_interval_low_seconds IS NOT NULL
                       AND supervisor_interval_high_seconds IS NOT NULL AND actual_seconds IS NOT NULL
                       AND ($1 IS NULL OR project = $1)
                     ORDER BY completed_at DESC, id LIMIT $2",
                )
                .bind(project)
                .bind(last)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::query("read the recent estimate intervals"))
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

            async fn stats_for_estimate(&self, task_type: &str) -> Result<Vec<TaskTypeStats>> {
                let rows: Vec<StatsRow> = sqlx::query_as(
                    "SELECT * FROM task_type_stats WHERE project = '' OR task_type = $1",
                )
                .bind(task_type)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::query("read task statistics"))?;
                Ok(rows.into_iter().map(Into::into).collect())
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

/// The distinct lower-cased words of a description (letters and digits only, so no operator can be
/// injected), in order of first appearance, at most `max`.
fn query_words(text: &str, max: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(str::to_lowercase)
        .filter(|w| seen.insert(w.clone()))
        .take(max)
        .collect()
}

/// At most this many distinct words of a description are considered for a search.
const MAX_CANDIDATE_WORDS: usize = 512;
/// A search uses this many of them, the rarest in the searched history: rare words carry the meaning
/// (BM25 weights them most), and the cap bounds the cost of a query on a large history.
const MAX_QUERY_WORDS: usize = 24;

/// The FTS5 token of `task_search.scope` that selects a project and/or a task type.
fn scope_token(task_type: Option<&str>, project: Option<&str>) -> Option<String> {
    match (project, task_type) {
        (Some(p), Some(t)) => Some(format!("x{}x{}", hex::encode(p), hex::encode(t))),
        (Some(p), None) => Some(format!("p{}", hex::encode(p))),
        (None, Some(t)) => Some(format!("t{}", hex::encode(t))),
        (None, None) => None,
    }
}

impl SqliteStore {
    /// A write transaction: `BEGIN IMMEDIATE` takes the write lock up front, waiting for it under the
    /// busy timeout.
    async fn begin_write(
        &self,
    ) -> std::result::Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    async fn fetch_existing_ids(&self, ids: &[String]) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT id FROM task_executions WHERE id IN (SELECT value FROM json_each($1))",
        )
        .bind(serde_json::to_string(ids).unwrap_or_default())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("look up task ids"))
    }

    /// Inserts new tasks; returns how many were inserted (ids already present are not).
    async fn insert_imported(
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        chunk: &[ImportedTask],
    ) -> Result<usize> {
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
        let done = sqlx::query(
            "INSERT INTO task_executions (id, project, task_type, description, estimated_seconds, actual_seconds,
                 status, success, started_at, completed_at, estimation_error)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7,
                    value->>8, value->>9, value->>10
             FROM json_each($1) WHERE true ORDER BY key
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(&mut **tx)
        .await
        .map_err(StoreError::query("import task history"))?;
        Ok(done.rows_affected() as usize)
    }

    async fn search_tasks(
        &self,
        text: &str,
        task_type: Option<&str>,
        project: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SimilarTask>> {
        let op = "search completed tasks";
        let words = query_words(text, MAX_CANDIDATE_WORDS);
        if words.is_empty() {
            return Ok(Vec::new());
        }
        // The rarest words that occur in the history at all.
        let mut frequencies: Vec<(String, i64)> = sqlx::query_as(
            "SELECT term, doc FROM task_search_terms WHERE term IN (SELECT value FROM json_each($1))",
        )
        .bind(serde_json::to_string(&words).unwrap_or_default())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(op))?;
        frequencies.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let terms: Vec<String> = frequencies
            .into_iter()
            .take(MAX_QUERY_WORDS)
            .map(|(w, _)| format!("\"{w}\""))
            .collect();
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = format!("({})", terms.join(" OR "));
        if let Some(scope) = scope_token(task_type, project) {
            q = format!("\"{scope}\" AND {q}");
        }
        // Only the description counts toward the score (weights follow the columns' order).
        sqlx::query_as(
            "SELECT task_id, project, task_type, description, actual_seconds AS duration_seconds, completed_at,
                    -bm25(task_search, 0, 0, 0, 0, 0, 1, 0) AS score
             FROM task_search WHERE task_search MATCH $1
             ORDER BY bm25(task_search, 0, 0, 0, 0, 0, 1, 0) LIMIT $2",
        )
        .bind(q)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(op))
    }
}

impl PostgresStore {
    async fn begin_write(
        &self,
    ) -> std::result::Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    async fn fetch_existing_ids(&self, ids: &[String]) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT id FROM task_executions WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("look up task ids"))
    }

    /// Inserts new tasks; returns how many were inserted (ids already present are not).
    async fn insert_imported(
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        chunk: &[ImportedTask],
    ) -> Result<usize> {
        let col = |f: fn(&ImportedTask) -> &str| -> Vec<&str> { chunk.iter().map(f).collect() };
        let estimated: Vec<Option<f64>> = chunk.iter().map(|t| t.estimated_seconds).collect();
        let actual: Vec<f64> = chunk.iter().map(|t| t.actual_seconds).collect();
        let success: Vec<bool> = chunk.iter().map(|t| t.success).collect();
        let started: Vec<DateTime<Utc>> = chunk.iter().map(|t| t.started_at).collect();
        let completed: Vec<DateTime<Utc>> = chunk.iter().map(|t| t.completed_at).collect();
        let done = sqlx::query(
            "INSERT INTO task_executions (id, project, task_type, description, estimated_seconds, actual_seconds,
                 status, success, started_at, completed_at, estimation_error)
             SELECT i, p, ty, d, e, a, CASE WHEN s THEN 'completed' ELSE 'failed' END, s, st, co, (a - e) / e
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[], $7::bool[],
                         $8::timestamptz[], $9::timestamptz[]) WITH ORDINALITY AS r(i, p, ty, d, e, a, s, st, co, n)
             ORDER BY n
             ON CONFLICT (id) DO NOTHING",
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
        .execute(&mut **tx)
        .await
        .map_err(StoreError::query("import task history"))?;
        Ok(done.rows_affected() as usize)
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
            query_words("Fix the \"login\" OR NEAR(page) -- login; é Ünïcode", 10),
            vec!["fix", "the", "login", "or", "near", "page", "ünïcode"]
        );
        assert_eq!(query_words("a b c", 10), Vec::<String>::new());
        assert_eq!(
            query_words("alpha beta gamma delta", 2),
            vec!["alpha", "beta"]
        );
        assert_eq!(
            scope_token(Some("bug"), Some("shop")).as_deref(),
            Some("x73686f70x627567")
        );
        assert_eq!(
            scope_token(None, Some("shop")).as_deref(),
            Some("p73686f70")
        );
        assert_eq!(scope_token(Some("bug"), None).as_deref(), Some("t627567"));
        assert_eq!(scope_token(None, None), None);
    }

    #[test]
    fn deltas_lock_project_rows_before_all_project_rows() {
        let d = |t: &str, p: &str| StatsDelta {
            task_type: t.into(),
            project: p.into(),
            values: StatsValues::default(),
        };
        let mut v = [
            d("b", ""),
            d("b", "p2"),
            d("a", ""),
            d("a", "p1"),
            d("b", "p1"),
        ];
        v.sort_by(|a, b| a.lock_key().cmp(&b.lock_key()));
        let keys: Vec<(&str, &str)> = v
            .iter()
            .map(|d| (d.task_type.as_str(), d.project.as_str()))
            .collect();
        assert_eq!(
            keys,
            vec![("a", "p1"), ("b", "p1"), ("b", "p2"), ("a", ""), ("b", "")]
        );
    }
}
