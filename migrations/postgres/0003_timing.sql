-- Timing and estimation (issue 11): the specification's task columns, full-text search over completed
-- tasks, and the running statistics the estimator reads. Keep in step with
-- migrations/sqlite/0003_timing.sql: the conformance suite runs the same tests on both.

-- What a timer records beyond 0001's columns. `agent` (0001) is the agent type; `estimated_seconds` (0001)
-- is the caller's own estimate; `supervisor_estimate_seconds` is the supervisor's estimate at start.
-- `estimation_error` = (actual - estimate) / estimate of the caller's estimate, or of the supervisor's
-- when the caller gave none. `success` is NULL while running; status 'completed' = success, 'failed' =
-- completed without success.
ALTER TABLE task_executions
    ADD COLUMN agent_model TEXT,
    ADD COLUMN parent_task_id TEXT,
    ADD COLUMN complexity TEXT CHECK (complexity IN ('simple', 'medium', 'complex')),
    ADD COLUMN supervisor_estimate_seconds DOUBLE PRECISION,
    ADD COLUMN estimation_error DOUBLE PRECISION,
    ADD COLUMN success BOOLEAN,
    ADD COLUMN error_message TEXT,
    ADD COLUMN output_summary TEXT,
    ADD COLUMN lines_changed BIGINT,
    ADD COLUMN files_changed BIGINT,
    ADD COLUMN tests_written BIGINT,
    ADD COLUMN tokens_used BIGINT,
    ADD COLUMN retry_count BIGINT,
    -- Full-text search over the descriptions of successfully completed tasks (the partial index below).
    ADD COLUMN search_text tsvector GENERATED ALWAYS AS (to_tsvector('english', description)) STORED;

-- Running timers (list --running, /health) and parallel groups are read by these.
CREATE INDEX task_executions_running ON task_executions (started_at) WHERE status = 'running';
CREATE INDEX task_executions_by_group ON task_executions (parallel_group) WHERE parallel_group IS NOT NULL;
CREATE INDEX task_executions_search ON task_executions USING gin (search_text) WHERE status = 'completed';

-- Running statistics, merged in the same transaction as each completion (Welford/Chan, see
-- src/timing/stats.rs). Rows: (task_type, project) and (task_type, '') for all projects.
-- sample_count/mean_log/m2_log (0001) cover successful completions' ln(seconds); failures are counted
-- only. sum/min/max are in seconds. ratio_*: ln(actual / caller's estimate) of successful completions
-- that carried an estimate — the caller's estimation bias and spread (Evidence-Based Scheduling).
ALTER TABLE task_type_stats
    ADD COLUMN failed_count BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN sum_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN min_seconds DOUBLE PRECISION,
    ADD COLUMN max_seconds DOUBLE PRECISION,
    ADD COLUMN ratio_count BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN ratio_mean_log DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN ratio_m2_log DOUBLE PRECISION NOT NULL DEFAULT 0;

-- Parallel groups: the child tasks (JSON array of ids), the order they completed in (filled on
-- completion) and the time saved against running them one after another.
ALTER TABLE parallel_executions
    ADD COLUMN child_task_ids JSONB NOT NULL DEFAULT '[]',
    ADD COLUMN completion_order JSONB,
    ADD COLUMN time_saved_seconds DOUBLE PRECISION;
