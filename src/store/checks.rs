//! Runs of projects' declared checks (`run_checks`), written once for both backends.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One run of one declared check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct CheckRun {
    pub id: i64,
    pub project: String,
    /// The declared command, exactly as in the project's `checks:`.
    pub command: String,
    /// The task timer it verified, if the caller named one.
    pub task_id: Option<String>,
    pub passed: bool,
    /// `None` when it was killed (timeout) or could not start.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: i64,
    /// The tail of its combined output, credentials masked.
    pub output: String,
    pub actor: String,
    #[schemars(with = "String")]
    pub started_at: DateTime<Utc>,
}

#[async_trait::async_trait]
pub trait CheckRepo {
    /// Records a run (its `id` is ignored) and returns the new id.
    async fn record_check_run(&self, run: &CheckRun) -> super::Result<i64>;
    /// The newest run of each command of `project`, newest first.
    async fn latest_check_runs(&self, project: &str) -> super::Result<Vec<CheckRun>>;
}

macro_rules! check_repo {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::checks::CheckRepo for $store {
            async fn record_check_run(
                &self,
                r: &$crate::store::checks::CheckRun,
            ) -> $crate::store::Result<i64> {
                sqlx::query_scalar(
                    "INSERT INTO check_runs (project, command, task_id, passed, exit_code, timed_out,
                                             duration_ms, output, actor, started_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                )
                .bind(&r.project)
                .bind(&r.command)
                .bind(&r.task_id)
                .bind(r.passed)
                .bind(r.exit_code)
                .bind(r.timed_out)
                .bind(r.duration_ms)
                .bind(&r.output)
                .bind(&r.actor)
                .bind(r.started_at)
                .fetch_one(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("record a check run"))
            }

            async fn latest_check_runs(
                &self,
                project: &str,
            ) -> $crate::store::Result<Vec<$crate::store::checks::CheckRun>> {
                sqlx::query_as(
                    "SELECT * FROM check_runs
                     WHERE id IN (SELECT max(id) FROM check_runs WHERE project = $1 GROUP BY command)
                     ORDER BY id DESC",
                )
                .bind(project)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("read the latest check runs"))
            }
        }
    };
}

pub(crate) use check_repo;
