-- The supervisor's 95 % interval for a task, recorded when its timer starts, so the status page (and
-- `timing stats`) can say how often actual durations fall inside them: the estimator's running
-- calibration. Tasks started before this migration have none and are not counted. Keep in step with
-- migrations/postgres/0007_estimate_intervals.sql.
ALTER TABLE task_executions ADD COLUMN supervisor_interval_low_seconds REAL;
ALTER TABLE task_executions ADD COLUMN supervisor_interval_high_seconds REAL;

-- The newest successful completions that carry an interval (the calibration reads the last N).
CREATE INDEX task_executions_with_interval ON task_executions (completed_at)
    WHERE status = 'completed' AND supervisor_interval_low_seconds IS NOT NULL;
