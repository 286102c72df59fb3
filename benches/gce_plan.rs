//! Plan time and API calls for the VM provider with 1, 10 and 50 VMs against the stateful fake
//! Google APIs, with a simulated network round trip on every call (instances are read
//! `OBSERVE_CONCURRENCY` at a time), on the embedded SQLite store. Steady state: every VM already has
//! its machine type, so each plan must find nothing to do. Each timed plan builds the providers
//! (reads the service-account key, fetches a token) as `supervisor plan` does.
//!
//! Run: `cargo bench --bench gce_plan`. Environment: `BENCH_VMS` (default `1,10,50`),
//! `BENCH_LATENCY_MS` (default 50), `BENCH_ITERATIONS` (default 20). Figures in `docs/benchmarks.md`.

#[path = "../tests/support/fake_google.rs"]
mod fake_google;
#[path = "../tests/support/faults.rs"]
#[allow(dead_code)]
mod faults;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_google::{FakeConfig, FakeGoogle};
use secrecy::SecretString;
use supervisor::engine::{Engine, Scope};
use supervisor::providers::{ProviderContext, for_desired};
use supervisor::secrets::{SecretSource, SecretSourceError};
use supervisor::store::{Location, Store};

const CREDS: &str = "meta/gcloud/service_account";

struct Key(String);

#[async_trait::async_trait]
impl SecretSource for Key {
    async fn read_secret(
        &self,
        path: &str,
        _actor: &str,
    ) -> Result<SecretString, SecretSourceError> {
        if path == CREDS {
            Ok(SecretString::from(self.0.clone()))
        } else {
            Err(SecretSourceError {
                path: path.into(),
                reason: "unknown".into(),
            })
        }
    }
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        if !args.iter().any(|a| a == "--list") {
            eprintln!("the VM plan benchmark runs with `cargo bench --bench gce_plan`");
        }
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let latency = Duration::from_millis(env("BENCH_LATENCY_MS", "50").parse().unwrap_or(50));
    let iterations: usize = env("BENCH_ITERATIONS", "20").parse().unwrap_or(20);
    let sizes: Vec<usize> = env("BENCH_VMS", "1,10,50")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        println!(
            "VM plan, steady state, {} ms simulated round trip, {iterations} plans per size",
            latency.as_millis()
        );
        println!("| VMs | min | median | p95 | API calls per plan |");
        println!("|---|---|---|---|---|");
        for n in sizes {
            let fake = FakeGoogle::start_with(FakeConfig {
                latency,
                ..FakeConfig::default()
            })
            .await;
            let account = fake.service_account("bench@my-gcp-project.iam.gserviceaccount.com");
            let dir = tempfile::tempdir().expect("temporary directory");
            let state = dir.path().join("state");
            std::fs::create_dir_all(&state).unwrap();
            let mut yaml = format!(
                "gcloud:\n  credentials: secret:{CREDS}\n  api_url: {}\nvms:\n",
                fake.compute_url()
            );
            for i in 0..n {
                let name = format!("host-{i}");
                fake.add_instance("my-gcp-project", "us-central1-a", &name, "e2-standard-4", "RUNNING");
                yaml.push_str(&format!(
                    "  - {{ name: {name}, gcp_project: my-gcp-project, zone: us-central1-a, machine_type: e2-standard-4 }}\n"
                ));
            }
            std::fs::write(state.join("supervisor.yaml"), yaml).unwrap();
            let desired = supervisor::state::load(&state).expect("valid state");
            let store: Arc<dyn Store> =
                supervisor::store::open(&Location::Sqlite(dir.path().join("s.db")))
                    .await
                    .expect("store");
            let mut ctx = ProviderContext::new(store.clone());
            ctx.secrets = Some(Arc::new(Key(account.json.clone())));
            ctx.actor = "bench".into();
            let mut times = Vec::new();
            let mut calls = 0;
            for _ in 0..iterations {
                fake.clear_requests();
                let started = Instant::now();
                let engine = Engine::new(store.clone(), for_desired(&desired, &ctx).await.expect("providers"));
                let plan = engine.plan(&desired, &Scope::default()).await.expect("plan");
                times.push(started.elapsed());
                assert!(plan.changes.is_empty() && plan.errors.is_empty(), "steady state");
                calls = fake.requests().len();
            }
            times.sort();
            println!(
                "| {n} | {} | {} | {} | {calls} |",
                ms(times[0]),
                ms(percentile(&times, 0.5)),
                ms(percentile(&times, 0.95))
            );
        }
    });
}
