//! Plan and apply at scale: 1,000 projects × 10 services (11,000 port resources), on the embedded
//! default (SQLite) and on PostgreSQL (when TEST_DATABASE_URL is set).
//!
//!   cargo bench --bench plan                      # SQLite only
//!   TEST_DATABASE_URL=postgres://… cargo bench --bench plan
//!
//! Prints load/validate, first plan, apply, and no-change plan times (median and p95 of 15 runs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use supervisor::engine::{ApplyOptions, Engine, Scope};
use supervisor::providers::{ProviderContext, for_desired};
use supervisor::store::{self, Location};

const PROJECTS: usize = 1000;
const SERVICES: usize = 10;

fn write_state(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("projects")).unwrap();
    std::fs::write(
        dir.join("supervisor.yaml"),
        "ports:\n  projects: { start: 10000, end: 59999, block: 50 }\n  shared: { start: 9000, end: 9999 }\nshared_services:\n  - name: postgres\n    port: 9432\n",
    )
    .unwrap();
    for p in 0..PROJECTS {
        let mut text =
            format!("# project {p}\nname: p{p:04}\npath: /srv/projects/p{p:04}\nservices:\n");
        for s in 0..SERVICES {
            text.push_str(&format!("  - name: svc{s}\n"));
        }
        text.push_str("checks: [\"cargo test\"]\n");
        std::fs::write(dir.join("projects").join(format!("p{p:04}.yaml")), text).unwrap();
    }
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[(v.len() * 95).div_ceil(100) - 1])
}

async fn run(label: &str, location: Location, state: &std::path::Path) {
    let store: Arc<dyn store::Store> = store::open(&location).await.unwrap();
    let t = Instant::now();
    let desired = supervisor::state::load(state).unwrap();
    let load = t.elapsed();
    let ctx = ProviderContext::new(store.clone());
    let engine = Engine::new(store.clone(), for_desired(&desired, &ctx).await.unwrap());

    let t = Instant::now();
    let plan = engine.plan(&desired, &Scope::default()).await.unwrap();
    let first_plan = t.elapsed();
    let changes = plan.changes.len();

    let t = Instant::now();
    let opts = ApplyOptions {
        actor: "bench".into(),
        ..Default::default()
    };
    let report = engine.apply(&plan, &opts, |_| {}).await.unwrap();
    assert!(report.failed.is_none());
    let apply = t.elapsed();

    let mut no_change = Vec::new();
    let mut observe_only = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let d = supervisor::state::load(state).unwrap();
        let p = engine.plan(&d, &Scope::default()).await.unwrap();
        no_change.push(t.elapsed());
        assert!(p.changes.is_empty());
        let t = Instant::now();
        engine.plan(&d, &Scope::default()).await.unwrap();
        observe_only.push(t.elapsed());
    }
    let (nc50, nc95) = stats(no_change);
    let (ob50, ob95) = stats(observe_only);
    println!("{label}: {PROJECTS} projects × {SERVICES} services ({changes} changes)");
    println!(
        "  load + validate state/        {:>8.1} ms",
        load.as_secs_f64() * 1e3
    );
    println!(
        "  first plan (observe + diff)   {:>8.1} ms",
        first_plan.as_secs_f64() * 1e3
    );
    println!(
        "  apply {changes} changes          {:>8.1} ms ({:.0} changes/s)",
        apply.as_secs_f64() * 1e3,
        changes as f64 / apply.as_secs_f64()
    );
    println!(
        "  no-change plan (load + plan)  {:>8.1} ms median, {:.1} ms p95",
        nc50.as_secs_f64() * 1e3,
        nc95.as_secs_f64() * 1e3
    );
    println!(
        "  of which observe + diff       {:>8.1} ms median, {:.1} ms p95",
        ob50.as_secs_f64() * 1e3,
        ob95.as_secs_f64() * 1e3
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` and nextest (which lists tests with
    // --list) run this binary as a test harness: it has no tests, so it reports none and exits.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        if !args.iter().any(|a| a == "--list") {
            eprintln!("the plan benchmark runs with `cargo bench --bench plan`");
        }
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    write_state(&state);
    rt.block_on(async {
        run(
            "SQLite",
            Location::Sqlite(dir.path().join(".supervisor/supervisor.db")),
            &state,
        )
        .await;
        match std::env::var("TEST_DATABASE_URL") {
            Ok(admin) => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
                let name = format!("bench_{}", std::process::id());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let (main, query) = admin
                    .split_once('?')
                    .map_or((admin.as_str(), String::new()), |(m, q)| {
                        (m, format!("?{q}"))
                    });
                let base = &main[..main.rfind('/').unwrap()];
                run(
                    "PostgreSQL",
                    Location::Postgres(format!("{base}/{name}{query}")),
                    &state,
                )
                .await;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .unwrap();
            }
            Err(_) => println!("PostgreSQL: skipped (set TEST_DATABASE_URL to include it)"),
        }
    });
}
