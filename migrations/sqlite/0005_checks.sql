-- Runs of a project's declared checks (`run_checks`): what ran, for which task, pass/fail, how long,
-- and the tail of its output with credentials masked. Keep in step with migrations/postgres/0005_checks.sql.
CREATE TABLE check_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project     TEXT NOT NULL,
    command     TEXT NOT NULL,
    task_id     TEXT,
    passed      INTEGER NOT NULL,
    exit_code   INTEGER,
    timed_out   INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER NOT NULL CHECK (duration_ms >= 0),
    output      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    started_at  TEXT NOT NULL
);
CREATE INDEX check_runs_by_project ON check_runs (project, command, id);
CREATE INDEX check_runs_by_task ON check_runs (task_id) WHERE task_id IS NOT NULL;
