//! Task timing through the library on both backends: the store's `TimingRepo` (transactions,
//! statistics merged with each completion, idempotent imports, full-text search over completed tasks)
//! and the `Timing` service on top (validation that writes nothing, project scopes, estimates,
//! parallel groups).

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use supervisor::store::timing::TaskTypeStats;
use supervisor::store::timing::{Completion, ImportedTask, NewTask, TaskFilter};
use supervisor::timing::service::ImportReport;
use supervisor::timing::service::{
    CompleteTimer, EstimateRequest, ListTimers, StartGroup, StartTimer,
};
use supervisor::timing::stats::{LogStats, TaskStats, deltas};
use supervisor::timing::{Scope, Timing, TimingError};
use support::db::TestDb;

conformance!(
    a_completion_updates_the_row_and_both_statistics_rows_once,
    failures_count_but_do_not_enter_duration_statistics,
    imports_are_idempotent_and_merge_statistics_exactly,
    only_successfully_completed_tasks_are_searchable_ranked_and_filtered,
    concurrent_completions_are_all_counted_exactly_once,
    running_and_abandoned_timers_are_listed_and_counted,
    invalid_completions_are_refused_and_write_nothing,
    project_scopes_confine_timers_stats_and_similar_tasks,
    estimates_fall_back_and_use_similar_tasks_and_own_estimates,
    parallel_groups_report_order_efficiency_and_time_saved,
    import_errors_name_the_line_and_import_nothing,
    the_calibration_counts_recent_actuals_inside_their_intervals,
);

fn at(h: u32, m: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 1, h, m, 0).unwrap()
}

fn new_task(id: &str, project: &str, ty: &str, desc: &str) -> NewTask {
    NewTask {
        id: id.into(),
        project: project.into(),
        task_type: ty.into(),
        description: desc.into(),
        agent: Some("claude-code".into()),
        agent_model: Some("opus".into()),
        parent_task_id: None,
        parallel_group: None,
        complexity: Some("medium".into()),
        estimated_seconds: Some(600.0),
        supervisor_estimate_seconds: None,
        supervisor_interval: None,
        started_at: at(10, 0),
    }
}

fn completion(
    id: &str,
    project: &str,
    ty: &str,
    secs: f64,
    success: bool,
    own: Option<f64>,
) -> Completion {
    Completion {
        id: id.into(),
        task_type: ty.into(),
        project: project.into(),
        completed_at: at(10, 0) + chrono::Duration::milliseconds((secs * 1000.0) as i64),
        actual_seconds: secs,
        success,
        estimation_error: own.map(|e| (secs - e) / e),
        error_message: (!success).then(|| "tests failed".into()),
        output_summary: Some("done".into()),
        lines_changed: Some(120),
        files_changed: Some(4),
        tests_written: Some(3),
        tokens_used: Some(45_000),
        retry_count: Some(1),
        stats: deltas([(ty, project, TaskStats::completion(secs, success, own))]),
    }
}

fn imported(id: &str, project: &str, ty: &str, desc: &str, secs: f64) -> ImportedTask {
    ImportedTask {
        id: id.into(),
        project: project.into(),
        task_type: ty.into(),
        description: desc.into(),
        actual_seconds: secs,
        started_at: at(9, 0),
        completed_at: at(9, 0) + chrono::Duration::seconds(secs as i64),
        estimated_seconds: None,
        success: true,
    }
}

/// A row's statistics.
fn st(r: &TaskTypeStats) -> TaskStats {
    TaskStats::from_values(&r.values)
}

/// The statistics of one row, if it exists.
async fn stats_row(db: &TestDb, task_type: &str, project: &str) -> Option<TaskStats> {
    db.store
        .list_task_stats(Some(task_type), Some(project))
        .await
        .unwrap()
        .first()
        .map(st)
}

async fn import(db: &TestDb, tasks: Vec<ImportedTask>) -> ImportReport {
    Timing::new(db.store.clone())
        .import_tasks(tasks)
        .await
        .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

#[track_caller]
fn assert_stats(got: &TaskStats, want: &TaskStats) {
    assert_eq!(got.log.n, want.log.n, "{got:?} vs {want:?}");
    assert!(close(got.log.mean, want.log.mean), "{got:?} vs {want:?}");
    assert!(close(got.log.m2, want.log.m2), "{got:?} vs {want:?}");
    assert_eq!(got.failed, want.failed);
    assert!(close(got.sum_seconds, want.sum_seconds));
    assert_eq!(
        (got.min_seconds, got.max_seconds),
        (want.min_seconds, want.max_seconds)
    );
    assert_eq!(got.ratio.n, want.ratio.n);
    assert!(
        close(got.ratio.mean, want.ratio.mean),
        "{got:?} vs {want:?}"
    );
    assert!(close(got.ratio.m2, want.ratio.m2), "{got:?} vs {want:?}");
}

fn summary(items: &[(f64, bool, Option<f64>)]) -> TaskStats {
    items
        .iter()
        .map(|&(s, ok, own)| TaskStats::completion(s, ok, own))
        .fold(TaskStats::default(), |a, b| a.merge(&b))
}

async fn a_completion_updates_the_row_and_both_statistics_rows_once(db: &TestDb) {
    let s = &db.store;
    s.start_task(&new_task("t1", "shop", "feature", "Add a shopping cart"))
        .await
        .unwrap();
    let err = s
        .start_task(&new_task("t1", "shop", "feature", "again"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("a task with id `t1` already exists"), "{err}");
    let row = s.get_task("t1").await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.success, row.actual_seconds),
        ("running", None, None)
    );
    assert_eq!(row.started_at, at(10, 0));

    assert!(
        s.complete_task(&completion(
            "t1",
            "shop",
            "feature",
            1200.0,
            true,
            Some(600.0)
        ))
        .await
        .unwrap()
    );
    // A second completion matches no running row and changes nothing.
    assert!(
        !s.complete_task(&completion("t1", "shop", "feature", 5.0, true, None))
            .await
            .unwrap()
    );
    let row = s.get_task("t1").await.unwrap().unwrap();
    assert_eq!(row.status, "completed");
    assert_eq!(row.success, Some(true));
    assert_eq!(row.actual_seconds, Some(1200.0));
    assert_eq!(row.estimation_error, Some(1.0));
    assert_eq!(
        (
            row.lines_changed,
            row.files_changed,
            row.tests_written,
            row.tokens_used,
            row.retry_count
        ),
        (Some(120), Some(4), Some(3), Some(45_000), Some(1))
    );
    assert_eq!(row.completed_at, Some(at(10, 20)));
    assert_eq!(
        (
            row.agent.as_deref(),
            row.agent_model.as_deref(),
            row.complexity.as_deref()
        ),
        (Some("claude-code"), Some("opus"), Some("medium"))
    );

    let rows = s.list_task_stats(None, None).await.unwrap();
    let keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.task_type.as_str(), r.project.as_str()))
        .collect();
    assert_eq!(keys, vec![("feature", ""), ("feature", "shop")]);
    let want = summary(&[(1200.0, true, Some(600.0))]);
    for r in &rows {
        assert_stats(&st(r), &want);
    }
    // What an estimate reads: the type's row of every project and every all-project row.
    let for_estimate = s.stats_for_estimate("feature").await.unwrap();
    assert_eq!(for_estimate.len(), 2);
    let other = s.stats_for_estimate("bug").await.unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(
        (other[0].task_type.as_str(), other[0].project.as_str()),
        ("feature", "")
    );
}

async fn failures_count_but_do_not_enter_duration_statistics(db: &TestDb) {
    let s = &db.store;
    for (id, secs, ok) in [("a", 100.0, true), ("b", 7.0, false), ("c", 400.0, true)] {
        s.start_task(&new_task(id, "shop", "bug", "Fix the checkout"))
            .await
            .unwrap();
        assert!(
            s.complete_task(&completion(id, "shop", "bug", secs, ok, None))
                .await
                .unwrap()
        );
    }
    let row = s.get_task("b").await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.success), ("failed", Some(false)));
    assert_eq!(row.error_message.as_deref(), Some("tests failed"));
    let got = stats_row(db, "bug", "shop").await.unwrap();
    assert_stats(
        &got,
        &summary(&[(100.0, true, None), (7.0, false, None), (400.0, true, None)]),
    );
    assert_eq!((got.log.n, got.failed, got.completed()), (2, 1, 3));
    assert!(close(got.log.mean, (40_000f64).ln() / 2.0));
}

async fn imports_are_idempotent_and_merge_statistics_exactly(db: &TestDb) {
    let s = &db.store;
    let mut tasks: Vec<ImportedTask> = (0..2500)
        .map(|i| {
            imported(
                &format!("h-{i}"),
                if i % 3 == 0 { "shop" } else { "blog" },
                if i % 2 == 0 { "feature" } else { "bug" },
                &format!("task number {i} about widgets"),
                60.0 * (1 + i % 17) as f64,
            )
        })
        .collect();
    tasks[7].success = false;
    tasks[8].estimated_seconds = Some(30.0);
    let r = import(db, tasks.clone()).await;
    assert_eq!((r.read, r.imported, r.skipped), (2500, 2500, 0));
    let before = s.list_task_stats(None, None).await.unwrap();
    // Importing the same tasks again (and one new) inserts only the new one.
    let mut again = tasks.clone();
    again.push(imported("h-new", "shop", "feature", "new widget", 90.0));
    let r = import(db, again.clone()).await;
    assert_eq!((r.read, r.imported, r.skipped), (2501, 1, 2500));
    // At the store, an import is all or nothing: one existing id fails it.
    let err = s
        .import_tasks(
            &[
                imported("h-newer", "shop", "feature", "x", 1.0),
                tasks[0].clone(),
            ],
            &[],
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 of the 2 tasks already exist"), "{err}");
    assert!(s.get_task("h-newer").await.unwrap().is_none());
    let after = s
        .list_task_stats(Some("feature"), Some("shop"))
        .await
        .unwrap();
    let want_before = before
        .iter()
        .find(|r| r.task_type == "feature" && r.project == "shop")
        .unwrap();
    assert_eq!(st(&after[0]).log.n, st(want_before).log.n + 1);

    // Every row equals the summary computed from scratch.
    let rows = s.list_task_stats(None, None).await.unwrap();
    assert_eq!(rows.len(), 6);
    for r in &rows {
        let items: Vec<(f64, bool, Option<f64>)> = again
            .iter()
            .filter(|t| {
                t.task_type == r.task_type && (r.project.is_empty() || t.project == r.project)
            })
            .map(|t| (t.actual_seconds, t.success, t.estimated_seconds))
            .collect();
        assert_stats(&st(r), &summary(&items));
    }
    let row = s.get_task("h-8").await.unwrap().unwrap();
    assert_eq!(row.estimation_error, Some((60.0 * 9.0 - 30.0) / 30.0));
    assert_eq!(s.get_task("h-7").await.unwrap().unwrap().status, "failed");
    assert_eq!(
        s.get_task("h-0").await.unwrap().unwrap().started_at,
        at(9, 0)
    );
}

async fn only_successfully_completed_tasks_are_searchable_ranked_and_filtered(db: &TestDb) {
    let s = &db.store;
    let mut history = vec![
        imported(
            "login-1",
            "shop",
            "bug",
            "Login page crashes when the password is empty",
            600.0,
        ),
        imported(
            "login-2",
            "shop",
            "bug",
            "Login: password reset email never arrives",
            1800.0,
        ),
        imported(
            "cart-1",
            "shop",
            "feature",
            "Shopping cart keeps items after logout",
            3600.0,
        ),
        imported(
            "blog-1",
            "blog",
            "bug",
            "Login page of the admin area crashes",
            300.0,
        ),
    ];
    let mut failed = imported(
        "login-3",
        "shop",
        "bug",
        "Login page crash on empty password field",
        50.0,
    );
    failed.success = false;
    history.push(failed);
    import(db, history).await;
    s.start_task(&new_task(
        "run-1",
        "shop",
        "bug",
        "Checkout crashes in Safari",
    ))
    .await
    .unwrap();

    let hits = s
        .similar_tasks(
            "login page crashes with an empty password",
            Some("bug"),
            Some("shop"),
            10,
        )
        .await
        .unwrap();
    let ids: Vec<&str> = hits.iter().map(|h| h.task_id.as_str()).collect();
    assert_eq!(ids[0], "login-1", "{hits:#?}");
    assert!(ids.contains(&"login-2"), "{ids:?}");
    assert!(
        !ids.contains(&"login-3"),
        "failed tasks are not searchable: {ids:?}"
    );
    assert!(
        !ids.contains(&"run-1"),
        "running tasks are not searchable: {ids:?}"
    );
    assert!(
        !ids.contains(&"blog-1") && !ids.contains(&"cart-1"),
        "{ids:?}"
    );
    assert!(
        hits.windows(2).all(|w| w[0].score >= w[1].score) && hits.iter().all(|h| h.score > 0.0)
    );
    assert_eq!(hits[0].duration_seconds, 600.0);
    assert_eq!(
        hits[0].description,
        "Login page crashes when the password is empty"
    );
    assert_eq!(
        (hits[0].project.as_str(), hits[0].task_type.as_str()),
        ("shop", "bug")
    );

    // Across projects and types.
    let all = s
        .similar_tasks("login page crashes", None, None, 10)
        .await
        .unwrap();
    let ids: Vec<&str> = all.iter().map(|h| h.task_id.as_str()).collect();
    assert!(
        ids.contains(&"blog-1") && ids.contains(&"login-1"),
        "{ids:?}"
    );
    // Words that are operators in FTS5 or tsquery syntax are plain words here.
    assert!(
        s.similar_tasks("NOT OR AND NEAR * ( ) : \" ' -", None, None, 10)
            .await
            .is_ok()
    );
    assert!(
        s.similar_tasks("  ", None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Once completed, a timer's task is searchable.
    assert!(
        s.complete_task(&completion("run-1", "shop", "bug", 900.0, true, None))
            .await
            .unwrap()
    );
    let hits = s
        .similar_tasks("safari checkout", Some("bug"), Some("shop"), 10)
        .await
        .unwrap();
    assert_eq!(hits[0].task_id, "run-1");
    assert_eq!(hits[0].duration_seconds, 900.0);
}

async fn concurrent_completions_are_all_counted_exactly_once(db: &TestDb) {
    let timing = Timing::new(db.store.clone());
    let n = 40;
    for i in 0..n {
        timing
            .start(
                &Scope::All,
                StartTimer {
                    task_id: Some(format!("c-{i}")),
                    description: format!("parallel task {i}"),
                    task_type: "feature".into(),
                    project: Some(if i % 2 == 0 { "shop" } else { "blog" }.into()),
                    ..StartTimer::default()
                },
            )
            .await
            .unwrap();
    }
    // Every task completed twice at once: exactly one completion of each wins.
    let mut handles = Vec::new();
    for round in 0..2 {
        for i in 0..n {
            let timing = timing.clone();
            handles.push(tokio::spawn(async move {
                timing
                    .complete(
                        &Scope::All,
                        CompleteTimer {
                            task_id: format!("c-{i}"),
                            duration_seconds: Some(10.0 * (1 + i) as f64 + round as f64),
                            ..CompleteTimer::default()
                        },
                    )
                    .await
            }));
        }
    }
    let mut ok = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => ok += 1,
            Err(TimingError::AlreadyCompleted { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok, n);
    let rows = db
        .store
        .list_task_stats(Some("feature"), Some(""))
        .await
        .unwrap();
    let all_projects = st(&rows[0]);
    assert_eq!(all_projects.log.n, n as i64);
    let tasks = db
        .store
        .list_tasks(&TaskFilter {
            limit: 1000,
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    let durations: Vec<f64> = tasks.iter().map(|t| t.actual_seconds.unwrap()).collect();
    let want = LogStats::of(durations.iter().map(|d| d.ln()));
    assert!(close(all_projects.log.mean, want.mean));
    assert!(close(all_projects.log.m2, want.m2));
    assert!(close(all_projects.sum_seconds, durations.iter().sum()));
}

async fn running_and_abandoned_timers_are_listed_and_counted(db: &TestDb) {
    let s = &db.store;
    let old = NewTask {
        started_at: Utc::now() - chrono::Duration::hours(30),
        ..new_task("old", "shop", "feature", "An old timer")
    };
    let fresh = NewTask {
        started_at: Utc::now() - chrono::Duration::minutes(5),
        ..new_task("fresh", "blog", "feature", "A fresh timer")
    };
    s.start_task(&old).await.unwrap();
    s.start_task(&fresh).await.unwrap();
    import(db, vec![imported("done", "shop", "feature", "done", 60.0)]).await;
    let timing = Timing::new(s.clone()).with_abandoned_after(Duration::from_secs(24 * 3600));
    let counts = timing.timer_counts().await.unwrap();
    assert_eq!(
        (
            counts.running,
            counts.abandoned,
            counts.abandoned_after_seconds
        ),
        (2, 1, 86_400)
    );
    let running = timing
        .list(
            &Scope::All,
            ListTimers {
                running: Some(true),
                ..ListTimers::default()
            },
        )
        .await
        .unwrap();
    let got: Vec<(&str, bool)> = running
        .iter()
        .map(|t| (t.task_id.as_str(), t.abandoned))
        .collect();
    assert_eq!(got, vec![("fresh", false), ("old", true)]);
    assert!(running[1].elapsed_seconds >= 30.0 * 3600.0);
    let abandoned = timing
        .list(
            &Scope::All,
            ListTimers {
                abandoned: Some(true),
                ..ListTimers::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0].task_id, "old");
    // A shorter age makes both abandoned; an abandoned timer can still be completed.
    let strict = Timing::new(s.clone()).with_abandoned_after(Duration::from_secs(60));
    assert_eq!(strict.timer_counts().await.unwrap().abandoned, 2);
    let done = strict
        .complete(
            &Scope::All,
            CompleteTimer {
                task_id: "old".into(),
                duration_seconds: Some(3600.0),
                ..CompleteTimer::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(done.duration_seconds, 3600.0);
    assert_eq!(strict.timer_counts().await.unwrap().running, 1);
    let all = timing
        .list(&Scope::All, ListTimers::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let shop = timing
        .list(
            &Scope::All,
            ListTimers {
                project: Some("shop".into()),
                ..ListTimers::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(shop.len(), 2);
}

async fn invalid_completions_are_refused_and_write_nothing(db: &TestDb) {
    let timing = Timing::new(db.store.clone());
    let started = timing
        .start(
            &Scope::All,
            StartTimer {
                description: "Write the docs".into(),
                task_type: "Docs".into(),
                project: Some("shop".into()),
                estimated_seconds: Some(120.0),
                ..StartTimer::default()
            },
        )
        .await
        .unwrap();
    assert!(started.task_id.starts_with("task-"));
    assert_eq!(started.task_type, "docs");
    assert_eq!(started.estimate, None, "no history yet");
    let id = started.task_id.clone();
    let cases: Vec<(CompleteTimer, &str)> = vec![
        (
            CompleteTimer {
                task_id: "nope".into(),
                ..CompleteTimer::default()
            },
            "there is no task `nope`",
        ),
        (
            CompleteTimer {
                task_id: id.clone(),
                duration_seconds: Some(-5.0),
                ..CompleteTimer::default()
            },
            "invalid duration_seconds: -5 is not a positive number of seconds",
        ),
        (
            CompleteTimer {
                task_id: id.clone(),
                duration_seconds: Some(1e9),
                ..CompleteTimer::default()
            },
            "more than 90 days",
        ),
        (
            CompleteTimer {
                task_id: id.clone(),
                lines_changed: Some(-1),
                ..CompleteTimer::default()
            },
            "invalid lines_changed: -1 is negative",
        ),
        (
            CompleteTimer {
                task_id: "has space".into(),
                ..CompleteTimer::default()
            },
            "invalid task_id",
        ),
    ];
    for (req, want) in cases {
        let err = timing
            .complete(&Scope::All, req)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err}\n  wanted: {want}");
    }
    // A project endpoint cannot complete another project's task, and learns nothing about it.
    let err = timing
        .complete(
            &Scope::Project("blog".into()),
            CompleteTimer {
                task_id: id.clone(),
                ..CompleteTimer::default()
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(err, format!("there is no task `{id}` in project `blog`"));
    assert_eq!(
        db.store.get_task(&id).await.unwrap().unwrap().status,
        "running"
    );
    assert!(
        db.store
            .list_task_stats(None, None)
            .await
            .unwrap()
            .is_empty()
    );

    // A timer that "ran" for 100 days (clock trouble or forgotten) needs an explicit duration.
    db.store
        .start_task(&NewTask {
            started_at: Utc::now() - chrono::Duration::days(100),
            ..new_task("ancient", "shop", "docs", "x")
        })
        .await
        .unwrap();
    let err = timing
        .complete(
            &Scope::All,
            CompleteTimer {
                task_id: "ancient".into(),
                ..CompleteTimer::default()
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a plausible duration (more than 90 days); pass the real working time as duration_seconds"), "{err}");
    assert_eq!(
        db.store.get_task("ancient").await.unwrap().unwrap().status,
        "running"
    );

    let done = timing
        .complete(
            &Scope::All,
            CompleteTimer {
                task_id: id.clone(),
                duration_seconds: Some(180.0),
                success: Some(true),
                ..CompleteTimer::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (done.estimated_seconds, done.estimate_source.as_deref()),
        (Some(120.0), Some("caller"))
    );
    assert_eq!(done.estimation_error, Some(0.5));
    assert!(close(done.log_error.unwrap(), 1.5f64.ln()));
    let err = timing
        .complete(
            &Scope::All,
            CompleteTimer {
                task_id: id.clone(),
                ..CompleteTimer::default()
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("task `{id}` is already completed (at ")),
        "{err}"
    );
    assert_eq!(stats_row(db, "docs", "shop").await.unwrap().log.n, 1);

    // Invalid starts write nothing either.
    for (req, want) in [
        (
            StartTimer {
                description: " ".into(),
                task_type: "x".into(),
                project: Some("shop".into()),
                ..StartTimer::default()
            },
            "invalid description: it is empty",
        ),
        (
            StartTimer {
                description: "d".into(),
                task_type: "x".into(),
                project: Some("Shop".into()),
                ..StartTimer::default()
            },
            "invalid project: `Shop` is not a project name",
        ),
        (
            StartTimer {
                description: "d".into(),
                task_type: "x".into(),
                project: None,
                ..StartTimer::default()
            },
            "invalid project: name the project",
        ),
        (
            StartTimer {
                description: "d".into(),
                task_type: "x".into(),
                project: Some("shop".into()),
                estimated_seconds: Some(0.0),
                ..StartTimer::default()
            },
            "invalid estimated_seconds",
        ),
        (
            StartTimer {
                description: "d".into(),
                task_type: "x".into(),
                project: Some("shop".into()),
                parallel_group: Some("g-none".into()),
                ..StartTimer::default()
            },
            "there is no parallel group `g-none`",
        ),
        (
            StartTimer {
                task_id: Some(id.clone()),
                description: "d".into(),
                task_type: "x".into(),
                project: Some("shop".into()),
                ..StartTimer::default()
            },
            "already exists",
        ),
    ] {
        let err = timing
            .start(&Scope::All, req)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err}\n  wanted: {want}");
    }
    assert_eq!(
        timing
            .list(&Scope::All, ListTimers::default())
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn project_scopes_confine_timers_stats_and_similar_tasks(db: &TestDb) {
    let timing = Timing::new(db.store.clone());
    let history: Vec<ImportedTask> = (0..10)
        .flat_map(|i| {
            [
                imported(
                    &format!("s{i}"),
                    "shop",
                    "bug",
                    &format!("shop payment bug {i}"),
                    100.0 + i as f64,
                ),
                imported(
                    &format!("b{i}"),
                    "blog",
                    "bug",
                    &format!("blog payment bug {i}"),
                    5000.0 + i as f64,
                ),
            ]
        })
        .collect();
    import(db, history).await;
    let shop = Scope::Project("shop".into());
    // Stats: only the project's own rows.
    let stats = timing.stats(&shop, None, None).await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(
        (stats[0].project.as_deref(), stats[0].count),
        (Some("shop"), 10)
    );
    assert!(
        timing
            .stats(&shop, None, Some("blog"))
            .await
            .unwrap_err()
            .to_string()
            .contains("serves project `shop` only")
    );
    let all = timing.stats(&Scope::All, None, None).await.unwrap();
    assert_eq!(all.len(), 3);
    // Estimates on a project endpoint show only the project's similar tasks.
    let e = timing
        .estimate(
            &shop,
            &EstimateRequest {
                description: "payment bug".into(),
                task_type: "bug".into(),
                ..EstimateRequest::default()
            },
        )
        .await
        .unwrap();
    assert!(!e.similar_tasks.is_empty());
    assert!(
        e.similar_tasks.iter().all(|t| t.task_id.starts_with('s')),
        "{e:#?}"
    );
    // Even for a new task type (falling back to all projects' aggregates), no other project's task.
    let e = timing
        .estimate(
            &shop,
            &EstimateRequest {
                description: "payment bug".into(),
                task_type: "feature".into(),
                ..EstimateRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(e.level.as_str(), "all");
    assert!(
        e.similar_tasks.iter().all(|t| t.task_id.starts_with('s')),
        "{e:#?}"
    );
    let meta = timing
        .estimate(
            &Scope::All,
            &EstimateRequest {
                description: "payment bug".into(),
                task_type: "feature".into(),
                project: Some("shop".into()),
                ..EstimateRequest::default()
            },
        )
        .await
        .unwrap();
    assert!(
        meta.similar_tasks
            .iter()
            .any(|t| t.task_id.starts_with('b')),
        "{meta:#?}"
    );
    // Listing and groups.
    timing
        .start(
            &Scope::All,
            StartTimer {
                task_id: Some("blog-run".into()),
                description: "d".into(),
                task_type: "bug".into(),
                project: Some("blog".into()),
                ..StartTimer::default()
            },
        )
        .await
        .unwrap();
    assert!(
        timing
            .list(&shop, ListTimers::default())
            .await
            .unwrap()
            .iter()
            .all(|t| t.project.as_deref() == Some("shop"))
    );
    assert!(
        timing
            .list(
                &shop,
                ListTimers {
                    project: Some("blog".into()),
                    ..ListTimers::default()
                }
            )
            .await
            .is_err()
    );
    timing
        .start_group(
            &Scope::All,
            StartGroup {
                group_id: Some("g-blog".into()),
                description: "d".into(),
                project: Some("blog".into()),
                child_task_ids: vec!["blog-run".into()],
                ..StartGroup::default()
            },
        )
        .await
        .unwrap();
    let err = timing
        .complete_group(&shop, "g-blog")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(err, "there is no parallel group `g-blog` in project `shop`");
    let err = timing
        .start(
            &shop,
            StartTimer {
                description: "d".into(),
                task_type: "bug".into(),
                parallel_group: Some("g-blog".into()),
                ..StartTimer::default()
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(err, "there is no parallel group `g-blog` in project `shop`");
}

async fn estimates_fall_back_and_use_similar_tasks_and_own_estimates(db: &TestDb) {
    let timing = Timing::new(db.store.clone());
    let req = |desc: &str, ty: &str, project: &str, own: Option<f64>| EstimateRequest {
        task_id: Some("q".into()),
        description: desc.into(),
        task_type: ty.into(),
        project: Some(project.into()),
        agent_estimate_seconds: own,
    };
    let err = timing
        .estimate(&Scope::All, &req("anything", "bug", "shop", None))
        .await
        .unwrap_err();
    assert!(matches!(err, TimingError::NoHistory), "{err}");
    // History: shop bugs take ~10 min (migrations ~1 h), with own estimates half the actual time.
    let mut history = Vec::new();
    for i in 0..30 {
        let (desc, secs) = if i % 3 == 0 {
            (
                format!("database migration for table {i}"),
                3600.0 * (1.0 + (i % 4) as f64 / 10.0),
            )
        } else {
            (
                format!("fix typo in page {i}"),
                600.0 * (1.0 + (i % 5) as f64 / 10.0),
            )
        };
        let mut t = imported(&format!("h{i}"), "shop", "bug", &desc, secs);
        t.estimated_seconds = Some(secs / 2.0);
        history.push(t);
    }
    for i in 0..3 {
        history.push(imported(
            &format!("d{i}"),
            "shop",
            "docs",
            &format!("write docs {i}"),
            200.0,
        ));
    }
    import(db, history).await;

    let plain = timing
        .estimate(
            &Scope::All,
            &req("fix typo on the login page", "bug", "shop", None),
        )
        .await
        .unwrap();
    let migration = timing
        .estimate(
            &Scope::All,
            &req(
                "database migration for the orders table",
                "bug",
                "shop",
                None,
            ),
        )
        .await
        .unwrap();
    assert_eq!(plain.method, "similar+type_project");
    assert_eq!(
        (plain.sample_size, plain.task_id.as_deref()),
        (30, Some("q"))
    );
    assert!(
        migration.estimated_seconds > 2.0 * plain.estimated_seconds,
        "{migration:#?} vs {plain:#?}"
    );
    assert!(
        migration.similar_tasks[0]
            .description
            .starts_with("database migration")
    );
    assert!(migration.similar_tasks.len() <= 5);
    for e in [&plain, &migration] {
        assert!(
            e.interval_low_seconds < e.estimated_seconds
                && e.estimated_seconds < e.interval_high_seconds
        );
    }
    // Three docs tasks: fewer than 5, so similar tasks are searched among all tasks (only the three
    // docs tasks match) and the statistics are shrunk toward all tasks.
    let docs = timing
        .estimate(
            &Scope::All,
            &req("write docs for the API", "docs", "shop", None),
        )
        .await
        .unwrap();
    assert_eq!((docs.level.as_str(), docs.sample_size), ("type_project", 3));
    assert!(
        docs.estimated_seconds > 200.0,
        "shrunk toward the 10-60 min of all tasks: {docs:#?}"
    );
    // A type never seen: all tasks.
    let new_type = timing
        .estimate(
            &Scope::All,
            &req("something else", "research", "shop", None),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            new_type.level.as_str(),
            new_type.method.as_str(),
            new_type.sample_size
        ),
        ("all", "all", 33)
    );

    // The caller's own estimate, calibrated: the history says actual = 2 × own.
    let own = timing
        .estimate(
            &Scope::All,
            &req("fix typo on the login page", "bug", "shop", Some(300.0)),
        )
        .await
        .unwrap();
    assert_eq!(own.method, "similar+type_project+calibrated_own_estimate");
    let c = own.calibration.unwrap();
    assert!(close(c.bias_factor, 2.0), "{c:?}");
    assert_eq!((c.own_estimate_seconds, c.sample_size), (300.0, 30));
    assert!(
        (own.estimated_seconds / 600.0 - 1.0).abs() < 0.01,
        "{own:#?}"
    );
    let width = |e: &supervisor::timing::service::EstimateOut| {
        e.interval_high_seconds / e.interval_low_seconds
    };
    assert!(width(&own) < width(&plain) / 5.0, "{own:#?} vs {plain:#?}");

    // A timer started now gets the supervisor's estimate; completing compares against it.
    let started = timing
        .start(
            &Scope::All,
            StartTimer {
                description: "fix typo in the footer".into(),
                task_type: "bug".into(),
                project: Some("shop".into()),
                ..StartTimer::default()
            },
        )
        .await
        .unwrap();
    let est = started.estimate.unwrap().estimated_seconds;
    let done = timing
        .complete(
            &Scope::All,
            CompleteTimer {
                task_id: started.task_id,
                duration_seconds: Some(est * 2.0),
                ..CompleteTimer::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(done.estimate_source.as_deref(), Some("supervisor"));
    assert!(close(done.estimation_error.unwrap(), 1.0));

    // Batches: one answer per line, a bad line names its number.
    let batch = "{\"task_id\": \"a\", \"description\": \"fix typo\", \"task_type\": \"bug\", \"project\": \"shop\"}\n{\"task_id\": \"b\", \"description\": \"database migration\", \"task_type\": \"bug\", \"project\": \"shop\", \"agent_estimate_seconds\": 1800}\n";
    let out = timing
        .estimate_batch(&Scope::All, "b.jsonl", batch)
        .await
        .unwrap();
    assert_eq!(
        out.iter()
            .map(|e| e.task_id.as_deref().unwrap())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert!(out[1].calibration.is_some());
    let bad = format!(
        "{batch}{{\"task_id\": \"c\", \"description\": \"x\", \"task_type\": \"bug\", \"project\": \"Bad!\"}}\n"
    );
    let err = timing
        .estimate_batch(&Scope::All, "b.jsonl", &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("b.jsonl:3: invalid project"), "{err}");
}

async fn parallel_groups_report_order_efficiency_and_time_saved(db: &TestDb) {
    let timing = Timing::new(db.store.clone());
    let scope = Scope::Project("shop".into());
    let g = timing
        .start_group(
            &scope,
            StartGroup {
                group_id: Some("g1".into()),
                description: "three refactors".into(),
                child_task_ids: vec!["r1".into(), "r2".into()],
                ..StartGroup::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((g.agent_count, g.project.as_str()), (2, "shop"));
    let dup = timing
        .start_group(
            &scope,
            StartGroup {
                group_id: Some("g1".into()),
                description: "again".into(),
                agent_count: Some(1),
                ..StartGroup::default()
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        dup.contains("a parallel group with id `g1` already exists"),
        "{dup}"
    );
    let err = timing
        .complete_group(&scope, "g1")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "parallel group `g1` cannot complete yet: child tasks never started: r1, r2"
    );
    for id in ["r1", "r2"] {
        timing
            .start(
                &scope,
                StartTimer {
                    task_id: Some(id.into()),
                    description: format!("refactor {id}"),
                    task_type: "refactor".into(),
                    ..StartTimer::default()
                },
            )
            .await
            .unwrap();
    }
    // A third child joins by naming the group when it starts.
    timing
        .start(
            &scope,
            StartTimer {
                task_id: Some("r3".into()),
                description: "refactor r3".into(),
                task_type: "refactor".into(),
                parallel_group: Some("g1".into()),
                ..StartTimer::default()
            },
        )
        .await
        .unwrap();
    let err = timing
        .complete_group(&scope, "g1")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("parallel group `g1` cannot complete yet: child tasks still running: "),
        "{err}"
    );
    for (id, secs) in [("r2", 100.0), ("r3", 50.0), ("r1", 150.0)] {
        timing
            .complete(
                &scope,
                CompleteTimer {
                    task_id: id.into(),
                    duration_seconds: Some(secs),
                    ..CompleteTimer::default()
                },
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let done = timing.complete_group(&scope, "g1").await.unwrap();
    let order: Vec<&str> = done
        .completion_order
        .iter()
        .map(|c| c.task_id.as_str())
        .collect();
    assert_eq!(order, vec!["r2", "r3", "r1"]);
    assert_eq!(
        (
            done.sequential_estimate_seconds,
            done.sequential_source.as_str()
        ),
        (300.0, "sum_of_child_durations")
    );
    assert_eq!(done.agent_count, 2);
    assert!(close(
        done.efficiency,
        (300.0 / 2.0) / done.parallel_seconds
    ));
    assert!(close(
        done.time_saved_seconds,
        300.0 - done.parallel_seconds
    ));
    let row = db.store.get_group("g1").await.unwrap().unwrap();
    assert_eq!(row.completion_order.unwrap().0, vec!["r2", "r3", "r1"]);
    assert_eq!(row.efficiency, Some(done.efficiency));
    let err = timing
        .complete_group(&scope, "g1")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(err, "parallel group `g1` is already completed");

    // A given sequential estimate is used as is.
    timing
        .start_group(
            &scope,
            StartGroup {
                group_id: Some("g2".into()),
                description: "d".into(),
                agent_count: Some(4),
                sequential_estimate_seconds: Some(4000.0),
                ..StartGroup::default()
            },
        )
        .await
        .unwrap();
    let err = timing
        .complete_group(&scope, "g2")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("it has no tasks"), "{err}");
    timing
        .start(
            &scope,
            StartTimer {
                task_id: Some("x1".into()),
                description: "d".into(),
                task_type: "t".into(),
                parallel_group: Some("g2".into()),
                ..StartTimer::default()
            },
        )
        .await
        .unwrap();
    timing
        .complete(
            &scope,
            CompleteTimer {
                task_id: "x1".into(),
                success: Some(false),
                ..CompleteTimer::default()
            },
        )
        .await
        .unwrap();
    let done = timing.complete_group(&scope, "g2").await.unwrap();
    assert_eq!(
        (
            done.sequential_estimate_seconds,
            done.sequential_source.as_str()
        ),
        (4000.0, "given")
    );
    assert!(close(done.efficiency, 1000.0 / done.parallel_seconds));
    assert_eq!(done.completion_order[0].status, "failed");
    assert!(
        timing
            .start_group(
                &scope,
                StartGroup {
                    description: "d".into(),
                    ..StartGroup::default()
                }
            )
            .await
            .unwrap_err()
            .to_string()
            .contains("give agent_count or child_task_ids")
    );
}

async fn import_errors_name_the_line_and_import_nothing(db: &TestDb) {
    let timing = Timing::new(db.store.clone());
    let good = "{\"task_id\": \"A-1\", \"description\": \"Fix login\", \"task_type\": \"bug\", \"project\": \"shop\", \"duration_seconds\": 3600}\n";
    let bad = format!(
        "{good}{{\"task_id\": \"A-2\", \"description\": \"x\", \"task_type\": \"bug\", \"project\": \"shop\", \"duration_seconds\": 0}}\n"
    );
    let err = timing
        .import("history.jsonl", &bad)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "history.jsonl:2: invalid duration_seconds: 0 is not a positive number of seconds; nothing was imported"
    );
    assert!(db.store.get_task("A-1").await.unwrap().is_none());
    let r = timing.import("history.jsonl", good).await.unwrap();
    assert_eq!((r.read, r.imported, r.skipped), (1, 1, 0));
    let r = timing.import("history.jsonl", good).await.unwrap();
    assert_eq!((r.read, r.imported, r.skipped), (1, 0, 1));
    assert_eq!(stats_row(db, "bug", "shop").await.unwrap().log.n, 1);
    let _ = Arc::clone(&db.store);
}

/// The estimator's running calibration: a timer started with history keeps the interval it was given,
/// and the coverage counts the newest successful completions that have one (per project, in a window).
async fn the_calibration_counts_recent_actuals_inside_their_intervals(db: &TestDb) {
    let timing = Timing::new(db.store.clone());
    let none = timing
        .interval_coverage(&Scope::All, None, 100)
        .await
        .unwrap();
    assert_eq!((none.tasks, none.inside, none.share), (0, 0, None));
    assert!(
        none.describe()
            .starts_with("no completed task has an estimated interval yet")
    );
    // History (imported tasks carry no interval and are never counted).
    import(
        db,
        (1..=6)
            .map(|i| {
                imported(
                    &format!("h{i}"),
                    "shop",
                    "feature",
                    "Add a page",
                    1500.0 + 120.0 * f64::from(i),
                )
            })
            .collect(),
    )
    .await;
    // (task, project, seconds): shop's two inside, one outside; blog's one inside its own interval.
    for (id, project, seconds) in [
        ("in-1", "shop", 1800.0),
        ("out-1", "shop", 72_000.0),
        ("in-2", "shop", 1900.0),
        ("blog-1", "blog", 1800.0),
    ] {
        let started = timing
            .start(
                &Scope::All,
                StartTimer {
                    task_id: Some(id.into()),
                    description: "Add a gift card page".into(),
                    task_type: "feature".into(),
                    project: Some(project.into()),
                    ..StartTimer::default()
                },
            )
            .await
            .unwrap();
        let e = started.estimate.expect("history to estimate from");
        let row = db.store.get_task(id).await.unwrap().unwrap();
        assert_eq!(
            (
                row.supervisor_interval_low_seconds,
                row.supervisor_interval_high_seconds
            ),
            (Some(e.interval_low_seconds), Some(e.interval_high_seconds)),
            "the interval is kept with the timer"
        );
        timing
            .complete(
                &Scope::All,
                CompleteTimer {
                    task_id: id.into(),
                    duration_seconds: Some(seconds),
                    ..CompleteTimer::default()
                },
            )
            .await
            .unwrap();
        // Completions must be ordered in time for the window below.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A failed task never counts; a running one neither.
    timing
        .start(
            &Scope::All,
            StartTimer {
                task_id: Some("failed".into()),
                description: "Add a page".into(),
                task_type: "feature".into(),
                project: Some("shop".into()),
                ..StartTimer::default()
            },
        )
        .await
        .unwrap();
    timing
        .complete(
            &Scope::All,
            CompleteTimer {
                task_id: "failed".into(),
                success: Some(false),
                duration_seconds: Some(1800.0),
                ..CompleteTimer::default()
            },
        )
        .await
        .unwrap();

    // Each task says whether it ended inside (by the same rule the coverage counts with).
    let listed = timing
        .list(
            &Scope::All,
            ListTimers {
                project: Some("shop".into()),
                ..ListTimers::default()
            },
        )
        .await
        .unwrap();
    let inside = |id: &str| {
        listed
            .iter()
            .find(|t| t.task_id == id)
            .unwrap()
            .inside_interval
    };
    assert_eq!(
        [
            inside("in-1"),
            inside("out-1"),
            inside("in-2"),
            inside("failed"),
            inside("h1")
        ],
        [Some(true), Some(false), Some(true), None, None]
    );
    let all = timing
        .interval_coverage(&Scope::All, None, 100)
        .await
        .unwrap();
    assert_eq!((all.tasks, all.inside), (4, 3), "{all:?}");
    assert_eq!(all.share, Some(0.75));
    assert_eq!(
        all.describe(),
        "3 of the last 4 completed tasks (75 %) ended inside the 95 % interval estimated when they started"
    );
    let shop = timing
        .interval_coverage(&Scope::All, Some("shop"), 100)
        .await
        .unwrap();
    assert_eq!((shop.tasks, shop.inside), (3, 2));
    // The window holds the newest: blog-1 and in-2.
    let last_two = timing
        .interval_coverage(&Scope::All, None, 2)
        .await
        .unwrap();
    assert_eq!((last_two.tasks, last_two.inside), (2, 2));
    // A project's endpoint sees its own project only.
    let blog = timing
        .interval_coverage(&Scope::Project("blog".into()), None, 100)
        .await
        .unwrap();
    assert_eq!((blog.tasks, blog.inside), (1, 1));
    assert!(
        timing
            .interval_coverage(&Scope::Project("blog".into()), Some("shop"), 100)
            .await
            .is_err()
    );
    assert!(
        timing
            .interval_coverage(&Scope::All, None, 0)
            .await
            .is_err()
    );
}
