-- Timing and estimation (issue 11): the specification's task columns, full-text search over completed
-- tasks, and the running statistics the estimator reads. Keep in step with
-- migrations/postgres/0003_timing.sql: the conformance suite runs the same tests on both.

-- What a timer records beyond 0001's columns. `agent` (0001) is the agent type; `estimated_seconds` (0001)
-- is the caller's own estimate; `supervisor_estimate_seconds` is the supervisor's estimate at start.
-- `estimation_error` = (actual - estimate) / estimate of the caller's estimate, or of the supervisor's
-- when the caller gave none. `success` is NULL while running; status 'completed' = success, 'failed' =
-- completed without success.
ALTER TABLE task_executions ADD COLUMN agent_model TEXT;
ALTER TABLE task_executions ADD COLUMN parent_task_id TEXT;
ALTER TABLE task_executions ADD COLUMN complexity TEXT CHECK (complexity IN ('simple', 'medium', 'complex'));
ALTER TABLE task_executions ADD COLUMN supervisor_estimate_seconds REAL;
ALTER TABLE task_executions ADD COLUMN estimation_error REAL;
ALTER TABLE task_executions ADD COLUMN success INTEGER;
ALTER TABLE task_executions ADD COLUMN error_message TEXT;
ALTER TABLE task_executions ADD COLUMN output_summary TEXT;
ALTER TABLE task_executions ADD COLUMN lines_changed INTEGER;
ALTER TABLE task_executions ADD COLUMN files_changed INTEGER;
ALTER TABLE task_executions ADD COLUMN tests_written INTEGER;
ALTER TABLE task_executions ADD COLUMN tokens_used INTEGER;
ALTER TABLE task_executions ADD COLUMN retry_count INTEGER;

-- Running timers (list --running, /health) and parallel groups are read by these.
CREATE INDEX task_executions_running ON task_executions (started_at) WHERE status = 'running';
CREATE INDEX task_executions_by_group ON task_executions (parallel_group) WHERE parallel_group IS NOT NULL;

-- Full-text search over the descriptions of successfully completed tasks (what the estimator learns
-- from). A self-contained FTS5 table rather than an external-content one: task_executions has a TEXT key,
-- so its implicit rowid may change on VACUUM and must not be what the index points at. What a search
-- returns is stored (unindexed) too, so a search never touches task_executions; completed tasks never
-- change, so the copy cannot go stale. `scope` holds three tokens — p<hex(project)>, t<hex(type)> and
-- x<hex(project)>x<hex(type)> — so a search filters by project and type inside the full-text index
-- instead of checking every match. No stemmer: task_search_terms (the vocabulary with document
-- frequencies) is looked up with the query's own words to search by the rarest ones.
CREATE VIRTUAL TABLE task_search USING fts5 (
    task_id UNINDEXED, project UNINDEXED, task_type UNINDEXED, actual_seconds UNINDEXED,
    completed_at UNINDEXED, description, scope,
    tokenize = 'unicode61 remove_diacritics 0'
);
CREATE VIRTUAL TABLE task_search_terms USING fts5vocab (task_search, 'row');
CREATE TRIGGER task_search_ai AFTER INSERT ON task_executions WHEN new.status = 'completed' BEGIN
    INSERT INTO task_search (task_id, project, task_type, actual_seconds, completed_at, description, scope)
        VALUES (new.id, coalesce(new.project, ''), new.task_type, new.actual_seconds, new.completed_at,
                new.description,
                'p' || hex(coalesce(new.project, '')) || ' t' || hex(new.task_type)
                    || ' x' || hex(coalesce(new.project, '')) || 'x' || hex(new.task_type));
END;
CREATE TRIGGER task_search_au AFTER UPDATE OF status ON task_executions
    WHEN new.status = 'completed' AND old.status <> 'completed' BEGIN
    INSERT INTO task_search (task_id, project, task_type, actual_seconds, completed_at, description, scope)
        VALUES (new.id, coalesce(new.project, ''), new.task_type, new.actual_seconds, new.completed_at,
                new.description,
                'p' || hex(coalesce(new.project, '')) || ' t' || hex(new.task_type)
                    || ' x' || hex(coalesce(new.project, '')) || 'x' || hex(new.task_type));
END;
CREATE TRIGGER task_search_ad AFTER DELETE ON task_executions WHEN old.status = 'completed' BEGIN
    DELETE FROM task_search WHERE task_id = old.id;
END;

-- Running statistics, merged in the same transaction as each completion (Welford/Chan, see
-- src/timing/stats.rs). Rows: (task_type, project) and (task_type, '') for all projects.
-- sample_count/mean_log/m2_log (0001) cover successful completions' ln(seconds); failures are counted
-- only. sum/min/max are in seconds. ratio_*: ln(actual / caller's estimate) of successful completions
-- that carried an estimate — the caller's estimation bias and spread (Evidence-Based Scheduling).
ALTER TABLE task_type_stats ADD COLUMN failed_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE task_type_stats ADD COLUMN sum_seconds REAL NOT NULL DEFAULT 0;
ALTER TABLE task_type_stats ADD COLUMN min_seconds REAL;
ALTER TABLE task_type_stats ADD COLUMN max_seconds REAL;
ALTER TABLE task_type_stats ADD COLUMN ratio_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE task_type_stats ADD COLUMN ratio_mean_log REAL NOT NULL DEFAULT 0;
ALTER TABLE task_type_stats ADD COLUMN ratio_m2_log REAL NOT NULL DEFAULT 0;

-- Parallel groups: the child tasks (JSON array of ids), the order they completed in (filled on
-- completion) and the time saved against running them one after another.
ALTER TABLE parallel_executions ADD COLUMN child_task_ids TEXT NOT NULL DEFAULT '[]';
ALTER TABLE parallel_executions ADD COLUMN completion_order TEXT;
ALTER TABLE parallel_executions ADD COLUMN time_saved_seconds REAL;
