//! Secret reads per second and latency percentiles, through the library (10 concurrent readers on one
//! `Vault`) and through the CLI (10 concurrent `supervisor secrets get` processes), on SQLite and on
//! PostgreSQL. Every read is audited as in production (access-log row + counter); the bench checks
//! the counts afterwards, so an unaudited fast path cannot pass.
//!
//! ```sh
//! TEST_DATABASE_URL=postgres://… cargo bench --bench secrets
//! ```
//!
//! Knobs: `SECRETS_BENCH_SECONDS` (library phase per backend, default 10), `SECRETS_BENCH_CLI_READS`
//! (default 400), `SECRETS_BENCH_READERS` (default 10), `SECRETS_BENCH_BACKENDS=sqlite` (skip
//! PostgreSQL).

#[path = "../tests/support/db.rs"]
#[allow(dead_code)]
mod db;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use supervisor::secrets::key::{EncryptionKey, KeySource};
use supervisor::secrets::path::SecretPath;
use supervisor::secrets::vault::{Actor, ListFilter, SecretValue, SetOptions, Vault};
use supervisor::store::{self, Location, Store};

const SECRETS: usize = 100;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Stats {
    reads: usize,
    seconds: f64,
    p50: Duration,
    p95: Duration,
    p99: Duration,
}

impl Stats {
    fn from(mut latencies: Vec<Duration>, elapsed: Duration) -> Stats {
        latencies.sort();
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        Stats {
            reads: latencies.len(),
            seconds: elapsed.as_secs_f64(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
        }
    }

    fn per_second(&self) -> f64 {
        self.reads as f64 / self.seconds
    }

    fn row(&self, backend: &str, path: &str) -> String {
        format!(
            "| {backend} | {path} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
            self.reads,
            self.per_second(),
            ms(self.p50),
            ms(self.p95),
            ms(self.p99)
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn key_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn path_of(i: usize) -> String {
    format!("project/bench/secret_{i:03}")
}

async fn seed(vault: &Vault) {
    let actor = Actor::cli("bench");
    for i in 0..SECRETS {
        let value = SecretValue::from(format!("fake-bench-value-{i}-{}", uuid::Uuid::new_v4()));
        vault
            .set(
                &SecretPath::parse(&path_of(i)).unwrap(),
                &value,
                &SetOptions::default(),
                &actor,
            )
            .await
            .unwrap();
    }
}

async fn total_reads(store: &dyn Store) -> i64 {
    supervisor::secrets::vault::list(store, &ListFilter::default(), &Actor::cli("bench"))
        .await
        .unwrap()
        .iter()
        .map(|s| s.access_count)
        .sum()
}

async fn library(vault: Arc<Vault>, readers: usize, duration: Duration) -> Stats {
    let paths: Arc<Vec<SecretPath>> = Arc::new(
        (0..SECRETS)
            .map(|i| SecretPath::parse(&path_of(i)).unwrap())
            .collect(),
    );
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for r in 0..readers {
        let vault = vault.clone();
        let paths = paths.clone();
        tasks.push(tokio::spawn(async move {
            let actor = Actor::mcp("/mcp/bench", Some(&format!("reader{r}")), None);
            let mut latencies = Vec::with_capacity(200_000);
            let mut i = r * 7;
            while Instant::now() < deadline {
                let t = Instant::now();
                let got = vault.get(&paths[i % SECRETS], &actor).await.unwrap();
                latencies.push(t.elapsed());
                assert!(got.value.expose().starts_with("fake-bench-value-"));
                i += 1;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    Stats::from(all, started.elapsed())
}

fn cli(bin: &Path, cwd: &Path, url: &str, key: &str, readers: usize, reads: usize) -> Stats {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..readers)
        .map(|_| {
            let (bin, cwd, url, key, next) = (
                bin.to_path_buf(),
                cwd.to_path_buf(),
                url.to_string(),
                key.to_string(),
                next.clone(),
            );
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= reads {
                        break latencies;
                    }
                    let t = Instant::now();
                    let out = Command::new(&bin)
                        .current_dir(&cwd)
                        .env("DATABASE_URL", &url)
                        .env("SECRETS_ENCRYPTION_KEY", &key)
                        .env("USER", "bench")
                        .env_remove("LOG_LEVEL")
                        .args(["secrets", "get", &path_of(i % SECRETS)])
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    latencies.push(t.elapsed());
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    assert!(out.stdout.starts_with(b"fake-bench-value-"));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    Stats::from(all, started.elapsed())
}

async fn bench_backend(name: &str, location: Location, url: String, rows: &mut Vec<String>) {
    let seconds = env_number("SECRETS_BENCH_SECONDS", 10);
    let cli_reads = env_number("SECRETS_BENCH_CLI_READS", 400) as usize;
    let readers = env_number("SECRETS_BENCH_READERS", 10) as usize;
    let store = store::open(&location).await.unwrap();
    let hex_key = key_hex();
    let key = EncryptionKey::from_hex(&hex_key, KeySource::Env).unwrap();
    let vault = Arc::new(Vault::new(store.clone(), key));
    seed(&vault).await;

    // Warm-up (connections, caches), then the measured run.
    library(vault.clone(), readers, Duration::from_secs(1)).await;
    let before = total_reads(store.as_ref()).await;
    let lib = library(vault.clone(), readers, Duration::from_secs(seconds)).await;
    let after = total_reads(store.as_ref()).await;
    assert_eq!(
        (after - before) as usize,
        lib.reads,
        "every read must be counted"
    );
    let log = store.access_log(None, 10_000_000).await.unwrap();
    let logged_reads = log.iter().filter(|e| e.action == "read").count();
    eprintln!(
        "{name}: library {} reads, {:.0}/s, p95 {:.2} ms; audited: {} counted, {} access-log rows in total",
        lib.reads,
        lib.per_second(),
        ms(lib.p95),
        after - before,
        logged_reads
    );
    rows.push(lib.row(name, &format!("library, {readers} concurrent readers")));

    let cwd = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_supervisor"));
    let before = total_reads(store.as_ref()).await;
    let cli_stats = tokio::task::spawn_blocking({
        let cwd = cwd.path().to_path_buf();
        let url = url.clone();
        move || cli(bin, &cwd, &url, &hex_key, readers, cli_reads)
    })
    .await
    .unwrap();
    let after = total_reads(store.as_ref()).await;
    assert_eq!((after - before) as usize, cli_stats.reads);
    eprintln!(
        "{name}: CLI {} reads, {:.0}/s, p95 {:.2} ms",
        cli_stats.reads,
        cli_stats.per_second(),
        ms(cli_stats.p95)
    );
    rows.push(cli_stats.row(name, &format!("CLI process, {readers} concurrent")));
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` and nextest (which lists tests with
    // --list) run this binary as a test harness: it has no tests, so it reports none and exits.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        if !args.iter().any(|a| a == "--list") {
            eprintln!("the secrets benchmark runs with `cargo bench --bench secrets`");
        }
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut rows = Vec::new();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bench.db");
        bench_backend(
            "SQLite",
            Location::Sqlite(file.clone()),
            format!("sqlite://{}", file.display()),
            &mut rows,
        )
        .await;
        if std::env::var("SECRETS_BENCH_BACKENDS").map_or(true, |b| b.contains("postgres")) {
            let url = db::fresh_postgres_url().await;
            bench_backend(
                "PostgreSQL",
                Location::Postgres(url.clone()),
                url,
                &mut rows,
            )
            .await;
        }
        println!("| backend | path | reads | reads/s | p50 ms | p95 ms | p99 ms |");
        println!("|---|---|---:|---:|---:|---:|---:|");
        for r in rows {
            println!("{r}");
        }
    });
}
