//! `estimate_task` latency with 100,000 completed tasks in the store, on SQLite and on PostgreSQL, and
//! library-level timer throughput (start + complete) with 10 concurrent callers.
//!
//! ```sh
//! TEST_DATABASE_URL=postgres://… cargo bench --bench timing
//! ```
//!
//! Knobs: `TIMING_BENCH_TASKS` (completed tasks in the store, default 100,000), `TIMING_BENCH_ESTIMATES`
//! (timed estimates per backend, default 1,000), `TIMING_BENCH_TIMERS` (start + complete pairs in the
//! throughput phase, default 2,000), `TIMING_BENCH_BACKENDS=sqlite` (skip PostgreSQL).
//!
//! The history is synthetic and seeded: 20 projects × 8 task types, descriptions of 8–120 words drawn
//! from a Zipf-distributed vocabulary of 20,000 words (as in natural text, a few words occur in most
//! descriptions and most words are rare), durations log-normal per (type, project). It is written
//! through `Timing::import_tasks` (one transaction, as `timing import`). Each timed estimate is a new
//! description from the same generator, through `Timing::estimate` — the call behind `timing estimate`
//! and the `estimate_task` tool: statistics read, full-text search of the 40 most similar completed
//! tasks, the estimator.

#[path = "../tests/support/db.rs"]
#[allow(dead_code)]
mod db;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use supervisor::store::timing::ImportedTask;
use supervisor::store::{self, Location, Store};
use supervisor::timing::service::{CompleteTimer, EstimateRequest, StartTimer};
use supervisor::timing::{Scope, Timing};

const PROJECTS: usize = 20;
const TYPES: [&str; 8] = [
    "feature", "bugfix", "refactor", "docs", "test", "chore", "research", "review",
];
const VOCABULARY: usize = 20_000;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seeded text generator: pseudo-words with Zipf(1) frequencies.
struct Text {
    words: Vec<String>,
    /// Cumulative Zipf weights.
    cumulative: Vec<f64>,
}

impl Text {
    fn new(rng: &mut StdRng) -> Text {
        const SYLLABLES: [&str; 24] = [
            "ka", "lo", "mi", "ne", "ru", "ta", "vo", "zen", "pri", "sto", "gra", "del", "fin",
            "bar", "qui", "sel", "mon", "tor", "ex", "ul", "cap", "dro", "ith", "yas",
        ];
        let mut seen = std::collections::HashSet::new();
        let mut words = Vec::with_capacity(VOCABULARY);
        while words.len() < VOCABULARY {
            let n = rng.random_range(1..=4);
            let w: String = (0..n)
                .map(|_| SYLLABLES[rng.random_range(0..SYLLABLES.len())])
                .collect();
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut total = 0.0;
        let cumulative = (1..=VOCABULARY)
            .map(|r| {
                total += 1.0 / r as f64;
                total
            })
            .collect();
        Text { words, cumulative }
    }

    fn word(&self, rng: &mut StdRng) -> &str {
        let total = self.cumulative[self.cumulative.len() - 1];
        let x = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|c| *c < x);
        &self.words[i.min(self.words.len() - 1)]
    }

    fn description(&self, rng: &mut StdRng) -> String {
        let n = (8.0 * (rng.random::<f64>() * 2.7).exp()) as usize; // 8 … ~120 words
        (0..n)
            .map(|_| self.word(rng).to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn history(text: &Text, rng: &mut StdRng, n: usize) -> Vec<ImportedTask> {
    let now = Utc::now();
    (0..n)
        .map(|i| {
            let p = rng.random_range(0..PROJECTS);
            let t = rng.random_range(0..TYPES.len());
            let mu = 6.0 + (p % 5) as f64 * 0.3 + t as f64 * 0.2; // ~7 min … ~1 h medians
            let seconds = (mu + 0.8 * normal(rng)).exp().clamp(1.0, 30.0 * 86_400.0);
            let completed_at = now - chrono::Duration::seconds((n - i) as i64 * 60);
            ImportedTask {
                id: format!("bench-{i}"),
                project: format!("project-{p}"),
                task_type: TYPES[t].to_string(),
                description: text.description(rng),
                actual_seconds: seconds,
                started_at: completed_at
                    - chrono::Duration::milliseconds((seconds * 1000.0) as i64),
                completed_at,
                estimated_seconds: (i % 3 == 0).then(|| seconds * (-0.3 + 0.6 * normal(rng)).exp()),
                success: i % 20 != 0,
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

async fn bench_backend(name: &str, location: Location, rows: &mut Vec<String>) {
    let tasks = env_number("TIMING_BENCH_TASKS", 100_000) as usize;
    let estimates = env_number("TIMING_BENCH_ESTIMATES", 1_000) as usize;
    let timers = env_number("TIMING_BENCH_TIMERS", 2_000) as usize;
    let store: Arc<dyn Store> = store::open(&location).await.expect("open store");
    let timing = Timing::new(store.clone());
    let mut rng = StdRng::seed_from_u64(7);
    let text = Text::new(&mut rng);
    let items = history(&text, &mut rng, tasks);
    let started = Instant::now();
    let report = timing.import_tasks(items).await.expect("import");
    let import_s = started.elapsed().as_secs_f64();
    assert_eq!(report.imported, tasks);
    eprintln!("{name}: imported {tasks} tasks in {import_s:.1} s");

    // Warm-up, then timed estimates (one caller at a time: the latency a caller sees).
    let request = |rng: &mut StdRng, own: bool| EstimateRequest {
        task_id: None,
        description: text.description(rng),
        task_type: TYPES[rng.random_range(0..TYPES.len())].to_string(),
        project: Some(format!("project-{}", rng.random_range(0..PROJECTS))),
        agent_estimate_seconds: own.then(|| rng.random_range(60.0..7200.0)),
    };
    for _ in 0..50 {
        let r = request(&mut rng, false);
        timing.estimate(&Scope::All, &r).await.expect("estimate");
    }
    let mut latencies = Vec::with_capacity(estimates);
    let mut similar = 0usize;
    for i in 0..estimates {
        let r = request(&mut rng, i % 2 == 1);
        let t = Instant::now();
        let e = timing.estimate(&Scope::All, &r).await.expect("estimate");
        latencies.push(t.elapsed());
        similar += e.similar_tasks.len();
    }
    latencies.sort();
    rows.push(format!(
        "| {name} | estimate_task, {tasks} completed tasks | {estimates} | {:.2} | {:.2} | {:.2} | {:.2} |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1].as_secs_f64() * 1000.0
    ));
    assert!(similar > estimates, "estimates found similar tasks");

    // Timers: 10 concurrent callers, each start + complete (a completion merges the statistics in
    // its transaction). Library level: no HTTP, no MCP.
    let callers = 10;
    let per_caller = timers / callers;
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..callers {
        let timing = timing.clone();
        let mut rng = StdRng::seed_from_u64(100 + c as u64);
        let descriptions: Vec<String> = (0..per_caller)
            .map(|_| text.description(&mut rng))
            .collect();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_caller);
            for (i, d) in descriptions.into_iter().enumerate() {
                let s = timing
                    .start(
                        &Scope::All,
                        StartTimer {
                            task_id: Some(format!("timer-{c}-{i}")),
                            description: d,
                            task_type: TYPES[i % TYPES.len()].to_string(),
                            project: Some(format!("project-{}", (c + i) % PROJECTS)),
                            ..StartTimer::default()
                        },
                    )
                    .await
                    .expect("start");
                let t = Instant::now();
                timing
                    .complete(
                        &Scope::All,
                        CompleteTimer {
                            task_id: s.task_id,
                            duration_seconds: Some(60.0 + i as f64),
                            ..CompleteTimer::default()
                        },
                    )
                    .await
                    .expect("complete");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut completes = Vec::new();
    for h in handles {
        completes.extend(h.await.expect("caller"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    completes.sort();
    rows.push(format!(
        "| {name} | start + complete, {callers} callers (rate = pairs/s) | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        completes.len(),
        percentile(&completes, 0.5),
        percentile(&completes, 0.95),
        percentile(&completes, 0.99),
        completes[completes.len() - 1].as_secs_f64() * 1000.0
    ));
    rows.push(format!(
        "| {name} | (throughput) | {:.0} start+complete pairs/s | | | | |",
        completes.len() as f64 / elapsed
    ));
    let counts = timing.timer_counts().await.expect("counts");
    assert_eq!(counts.running, 0);
}

fn main() {
    // `cargo bench` passes --bench; test harnesses list this binary's (no) tests and exit.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        if !args.iter().any(|a| a == "--list") {
            eprintln!("the timing benchmark runs with `cargo bench --bench timing`");
        }
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut rows = Vec::new();
        let dir = tempfile::tempdir().expect("temporary directory");
        bench_backend(
            "SQLite",
            Location::Sqlite(dir.path().join("bench.db")),
            &mut rows,
        )
        .await;
        if std::env::var("TIMING_BENCH_BACKENDS").map_or(true, |b| b.contains("postgres")) {
            let url = db::fresh_postgres_url().await;
            bench_backend("PostgreSQL", Location::Postgres(url.clone()), &mut rows).await;
            db::drop_test_database(&url);
        }
        println!("| backend | operation | calls | p50 ms | p95 ms | p99 ms | max ms |");
        println!("|---|---|---:|---:|---:|---:|---:|");
        for r in rows {
            println!("{r}");
        }
    });
}
