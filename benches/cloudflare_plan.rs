//! Plan time and API calls for a Cloudflare zone of 5,000 records of which 500 are managed (500
//! service hostnames → 500 CNAMEs and 500 ingress rules), against the stateful fake API on a local
//! port, with the embedded SQLite store. Run: `cargo bench --bench cloudflare_plan`.
//!
//! Environment: `BENCH_RECORDS` (default 5000), `BENCH_MANAGED` (default 500), `BENCH_ITERATIONS`
//! (default 20). The figures go into `docs/benchmarks.md`.

#[path = "../tests/support/fake_cloudflare.rs"]
mod fake_cloudflare;
#[path = "../tests/support/faults.rs"]
#[allow(dead_code)]
mod faults;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use fake_cloudflare::{ACCOUNT_ID, FakeCloudflare, TOKEN};
use secrecy::SecretString;
use serde_json::json;
use supervisor::engine::{ApplyOptions, Engine, Scope};
use supervisor::providers::{ProviderContext, for_desired};
use supervisor::secrets::{SecretSource, SecretSourceError};
use supervisor::state::Desired;
use supervisor::store::{Location, Store};

const TOKEN_PATH: &str = "meta/cloudflare/api_token";

struct FakeToken;

#[async_trait::async_trait]
impl SecretSource for FakeToken {
    async fn read_secret(
        &self,
        path: &str,
        _actor: &str,
    ) -> Result<SecretString, SecretSourceError> {
        if path == TOKEN_PATH {
            Ok(SecretString::from(TOKEN))
        } else {
            Err(SecretSourceError {
                path: path.into(),
                reason: "unknown".into(),
            })
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn engine(desired: &Desired, store: &Arc<dyn Store>) -> Engine {
    let mut ctx = ProviderContext::new(store.clone());
    ctx.secrets = Some(Arc::new(FakeToken));
    ctx.actor = "bench".into();
    let providers = for_desired(desired, &ctx).await.expect("providers");
    Engine::new(store.clone(), providers)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` and nextest (which lists tests with
    // --list) run this binary as a test harness: it has no tests, so it reports none and exits.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        if !args.iter().any(|a| a == "--list") {
            eprintln!(
                "the Cloudflare plan benchmark runs with `cargo bench --bench cloudflare_plan`"
            );
        }
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let records = env_usize("BENCH_RECORDS", 5000);
    let managed = env_usize("BENCH_MANAGED", 500);
    let iterations = env_usize("BENCH_ITERATIONS", 20).max(1);
    assert!(
        managed <= records,
        "BENCH_MANAGED must not exceed BENCH_RECORDS"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(records, managed, iterations));
}

async fn run(records: usize, managed: usize, iterations: usize) {
    let fake = FakeCloudflare::start().await;
    let zone = fake.add_zone("example.com");
    let tunnel = fake.add_tunnel(ACCOUNT_ID, "bench");
    // Records the supervisor does not own: a mix of types at their own names.
    for i in 0..records - managed {
        let body = match i % 3 {
            0 => {
                json!({"type": "A", "name": format!("host{i}.example.com"), "content": "192.0.2.10", "ttl": 300})
            }
            1 => {
                json!({"type": "CNAME", "name": format!("alias{i}.example.com"), "content": "elsewhere.example.net", "ttl": 1, "proxied": true})
            }
            _ => {
                json!({"type": "TXT", "name": format!("txt{i}.example.com"), "content": format!("v=token{i}"), "ttl": 1})
            }
        };
        fake.add_record(&zone, body);
    }

    let dir = tempfile::tempdir().expect("temporary directory");
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("projects")).expect("state dir");
    std::fs::write(
        state.join("supervisor.yaml"),
        format!(
            "cloudflare:\n  zone: example.com\n  account_id: \"{ACCOUNT_ID}\"\n  api_token: secret:{TOKEN_PATH}\n  api_url: {}\n  tunnel:\n    id: {tunnel}\n    mode: remote\n",
            fake.base_url()
        ),
    )
    .expect("supervisor.yaml");
    let per_project = 100;
    for p in 0..managed.div_ceil(per_project) {
        let mut text = format!("name: p{p:03}\nservices:\n");
        for s in (p * per_project)..((p + 1) * per_project).min(managed) {
            text.push_str(&format!(
                "  - name: s{s:04}\n    hostname: app{s:04}.example.com\n"
            ));
        }
        std::fs::write(state.join(format!("projects/p{p:03}.yaml")), text).expect("project file");
    }
    let location = Location::Sqlite(dir.path().join("supervisor.db"));
    let store = supervisor::store::open(&location).await.expect("store");
    let desired = supervisor::state::load(&state).expect("valid state");

    // The first apply makes the managed half of the zone.
    let e = engine(&desired, &store).await;
    let started = Instant::now();
    let plan = e.plan(&desired, &Scope::default()).await.expect("plan");
    let first_plan = started.elapsed();
    let opts = ApplyOptions {
        actor: "bench".into(),
        ..Default::default()
    };
    fake.clear_requests();
    let started = Instant::now();
    let report = e.apply(&plan, &opts, |_| {}).await.expect("apply");
    let apply_time = started.elapsed();
    assert_eq!(report.failed, None, "apply failed");
    let apply_calls = fake.requests().len();
    let batches = fake.count(Method::POST, "/zones/*/dns_records/batch");
    assert_eq!(
        fake.records(&zone).len(),
        records,
        "the zone holds {records} records"
    );

    // Steady state: plans that find nothing to do.
    let mut times = Vec::with_capacity(iterations);
    let mut calls = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        fake.clear_requests();
        let started = Instant::now();
        let e = engine(&desired, &store).await;
        let plan = e.plan(&desired, &Scope::default()).await.expect("plan");
        times.push(started.elapsed());
        calls.push(fake.requests().len());
        assert!(
            plan.changes.is_empty() && plan.errors.is_empty(),
            "steady state has no changes"
        );
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;

    println!(
        "cloudflare plan: zone of {records} records, {managed} managed (CNAME + ingress rule each), SQLite store, fake API on 127.0.0.1"
    );
    println!(
        "  first plan ({managed} to create):   {:>8.1} ms",
        first_plan.as_secs_f64() * 1e3
    );
    println!(
        "  first apply:                  {:>8.1} ms, {apply_calls} API calls ({batches} DNS batch calls)",
        apply_time.as_secs_f64() * 1e3
    );
    println!(
        "  steady-state plan ({iterations} runs):  min {:.1} ms, median {:.1} ms, mean {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        times[0].as_secs_f64() * 1e3,
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
        percentile(&times, 0.95).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
    );
    println!(
        "  API calls per plan:           {} (min {}, max {})",
        calls[0],
        calls.iter().min().unwrap_or(&0),
        calls.iter().max().unwrap_or(&0)
    );
}
