//! Crash consistency across every provider: `supervisor apply` is killed with SIGKILL at random points
//! while it moves ports, Cloudflare DNS records and tunnel ingress, Compute Engine VM resizes, Google
//! API keys and CLAUDE.md files at once, then run again. Every trial must converge on the next apply
//! and leave no duplicate record, rule, port or key, no lost allocation, no half-written file and no
//! API key without its secret (or the reverse) — checked against the fakes' state and the database.
//!
//! Each trial draws a new desired state (services, hostnames, machine types, keys and their
//! restrictions, instruction texts) and a kill point — after a random delay, or once the fakes have
//! seen a random number of requests — from one seeded generator. The seed is printed; rerun a failure
//! with `SUPERVISOR_CRASH_SEED=<seed>`. `SUPERVISOR_CRASH_TRIALS` sets the trials per backend (10 by
//! default; docs/reliability-faults.md reports a run of 100+).

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use supervisor::secrets::key::{EncryptionKey, KeySource};
use supervisor::secrets::path::SecretPath;
use supervisor::secrets::vault::{Actor, Vault};
use supervisor::store::Store;
use support::fake_cloudflare::{ACCOUNT_ID, FakeCloudflare, TOKEN};
use support::fake_google::{FakeGoogle, FakeKey};
use support::{Workspace, expect_code, stderr, stdout};

cli_conformance!(sigkill_at_random_points_always_converges);

const KEY: &str = "6a1f0c3e9b2d4f5a7c8e0b1d3f5a7c9e2b4d6f8a0c2e4b6d8f0a1c3e5b7d9f1a";
const CF_TOKEN_PATH: &str = "meta/cloudflare/api_token";
const GCP_CREDS: &str = "meta/gcloud/service_account";
const GCP_PROJECT: &str = "my-gcp-project";
const ZONE: &str = "us-central1-a";
const VMS: [&str; 2] = ["vm-a", "vm-b"];
const MACHINE_TYPES: [&str; 2] = ["e2-standard-2", "e2-standard-4"];
const PROJECTS: usize = 3;
const SERVICES: usize = 5;
const KEYS: usize = 2;
const APIS: [&str; 3] = [
    "maps-backend.googleapis.com",
    "geocoding-backend.googleapis.com",
    "places-backend.googleapis.com",
];
const NOTES: [&str; 3] = [
    "Run the tests before every commit.",
    "Prefer small pull requests.",
    "Never edit generated files by hand.",
];

fn trials() -> usize {
    std::env::var("SUPERVISOR_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

fn seed() -> u64 {
    std::env::var("SUPERVISOR_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random())
}

/// One desired state of the whole world.
#[derive(Debug, Clone, Default)]
struct Desired {
    /// project → service → hostname
    services: BTreeMap<String, BTreeMap<String, Option<String>>>,
    /// project → key name → restricted services
    keys: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    notes: BTreeMap<String, String>,
    machine_types: BTreeMap<String, String>,
}

impl Desired {
    fn draw(rng: &mut StdRng) -> Desired {
        let mut d = Desired::default();
        for p in 0..PROJECTS {
            let project = format!("p{p}");
            let mut services = BTreeMap::new();
            for s in 0..SERVICES {
                if rng.random_bool(0.7) {
                    let host = rng
                        .random_bool(0.5)
                        .then(|| format!("s{s}-{project}.example.com"));
                    services.insert(format!("s{s}"), host);
                }
            }
            let mut keys = BTreeMap::new();
            for k in 0..KEYS {
                if rng.random_bool(0.5) {
                    let apis: Vec<String> = APIS
                        .iter()
                        .filter(|_| rng.random_bool(0.5))
                        .map(|a| a.to_string())
                        .collect();
                    keys.insert(format!("k{k}"), apis);
                }
            }
            d.services.insert(project.clone(), services);
            d.keys.insert(project.clone(), keys);
            d.notes
                .insert(project, NOTES[rng.random_range(0..NOTES.len())].to_string());
        }
        for vm in VMS {
            d.machine_types.insert(
                vm.to_string(),
                MACHINE_TYPES[rng.random_range(0..MACHINE_TYPES.len())].to_string(),
            );
        }
        d
    }

    fn hostnames(&self) -> BTreeMap<String, (String, String)> {
        let mut out = BTreeMap::new();
        for (p, services) in &self.services {
            for (s, h) in services {
                if let Some(h) = h {
                    out.insert(h.clone(), (p.clone(), s.clone()));
                }
            }
        }
        out
    }

    /// address → (store path, restricted services)
    fn key_addresses(&self) -> BTreeMap<String, (String, Vec<String>)> {
        let mut out = BTreeMap::new();
        for (p, keys) in &self.keys {
            for (k, apis) in keys {
                let mut apis = apis.clone();
                apis.sort();
                out.insert(format!("api_key/{p}/{k}"), (key_store(p, k), apis));
            }
        }
        out
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    )
}

fn key_store(project: &str, key: &str) -> String {
    format!("project/{project}/{key}_key")
}

/// Everything one backend's run needs: the workspace, both fakes, the vault key.
struct World {
    ws: Workspace,
    cf: FakeCloudflare,
    zone: String,
    tunnel: String,
    google: FakeGoogle,
    work: PathBuf,
}

impl World {
    async fn start(ws: Workspace) -> World {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cf = FakeCloudflare::start().await;
        let zone = cf.add_zone("example.com");
        let tunnel = cf.add_tunnel(ACCOUNT_ID, "host-1");
        let google = FakeGoogle::start().await;
        google.set_durations(
            Duration::from_millis(150),
            Duration::from_millis(150),
            Duration::from_millis(50),
        );
        google.set_key_operation_duration(Duration::from_millis(50));
        for vm in VMS {
            google.add_instance(GCP_PROJECT, ZONE, vm, MACHINE_TYPES[0], "RUNNING");
        }
        let account = google.service_account("supervisor@my-gcp-project.iam.gserviceaccount.com");
        ws.write("sa.json", &account.json);
        let work = ws.path().join("work");
        for p in 0..PROJECTS {
            std::fs::create_dir_all(work.join(format!("p{p}"))).unwrap();
        }
        std::fs::create_dir_all(work.join("meta")).unwrap();
        let w = World {
            ws,
            cf,
            zone,
            tunnel,
            google,
            work,
        };
        w.write_state(&Desired::default());
        let sa = w.ws.path().join("sa.json");
        expect_code(
            &w.cli(&[
                "secrets",
                "set",
                GCP_CREDS,
                "--value-file",
                sa.to_str().unwrap(),
            ])
            .await,
            0,
        );
        let token = w.ws.path().join("cf.token");
        std::fs::write(&token, TOKEN).unwrap();
        expect_code(
            &w.cli(&[
                "secrets",
                "set",
                CF_TOKEN_PATH,
                "--value-file",
                token.to_str().unwrap(),
            ])
            .await,
            0,
        );
        w
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = self.ws.cmd();
        cmd.args(args)
            .env("SECRETS_ENCRYPTION_KEY", KEY)
            .env("USER", "harness")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    async fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        tokio::task::spawn_blocking(move || cmd.output().expect("run supervisor"))
            .await
            .unwrap()
    }

    fn write_state(&self, d: &Desired) {
        let mut vms = String::new();
        for (vm, t) in &d.machine_types {
            vms.push_str(&format!(
                "  - name: {vm}\n    gcp_project: {GCP_PROJECT}\n    zone: {ZONE}\n    machine_type: {t}\n"
            ));
        }
        let vms = if vms.is_empty() {
            String::new()
        } else {
            format!("vms:\n{vms}")
        };
        self.ws.write(
            "state/supervisor.yaml",
            &format!(
                "cloudflare:\n  zone: example.com\n  account_id: \"{ACCOUNT_ID}\"\n  api_token: secret:{CF_TOKEN_PATH}\n  api_url: {}\n  tunnel:\n    id: {}\n    mode: remote\n\
                 gcloud:\n  credentials: secret:{GCP_CREDS}\n  api_url: {}\n  monitoring_api_url: {}\n  apikeys_api_url: {}\n\
                 instructions:\n  meta_path: {}\n{vms}",
                self.cf.base_url(),
                self.tunnel,
                self.google.compute_url(),
                self.google.monitoring_url(),
                self.google.apikeys_url(),
                self.work.join("meta").display(),
            ),
        );
        for p in 0..PROJECTS {
            let project = format!("p{p}");
            let mut text = format!(
                "name: {project}\npath: {}\n",
                self.work.join(&project).display()
            );
            if let Some(note) = d.notes.get(&project) {
                text.push_str(&format!("instructions: {note}\n"));
            }
            let services = d.services.get(&project).cloned().unwrap_or_default();
            if !services.is_empty() {
                text.push_str("services:\n");
                for (s, h) in &services {
                    text.push_str(&format!("  - name: {s}\n"));
                    if let Some(h) = h {
                        text.push_str(&format!("    hostname: {h}\n"));
                    }
                }
            }
            let keys = d.keys.get(&project).cloned().unwrap_or_default();
            if !keys.is_empty() {
                text.push_str("api_keys:\n");
                for (k, apis) in &keys {
                    text.push_str(&format!(
                        "  - name: {k}\n    gcp_project: {GCP_PROJECT}\n    restrict_apis: [{}]\n    store: {}\n",
                        apis.join(", "),
                        key_store(&project, k)
                    ));
                }
            }
            self.ws
                .write(&format!("state/projects/{project}.yaml"), &text);
        }
    }

    fn claude_md_paths(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = (0..PROJECTS)
            .map(|p| self.work.join(format!("p{p}/CLAUDE.md")))
            .collect();
        v.push(self.work.join("meta/CLAUDE.md"));
        v
    }

    fn claude_md(&self) -> Vec<Option<String>> {
        self.claude_md_paths()
            .iter()
            .map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// Requests both fakes have received so far.
    fn requests(&self) -> usize {
        self.cf.requests().len() + self.google.requests().len()
    }

    async fn store(&self) -> Arc<dyn Store> {
        supervisor::store::open(&self.ws.location()).await.unwrap()
    }
}

/// Where a trial's kill lands.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// After this long.
    After(Duration),
    /// Once the fakes have received this many more requests (plus a few random milliseconds).
    Requests(usize, Duration),
    /// Just after a fake received a request of this kind (plus 0–10 ms): the windows between a
    /// remote change and the database write that records it.
    OnRequest(Fake, &'static str, &'static str, Duration),
    /// As soon as the journal shows a change of this provider started (plus 0–5 ms).
    OnChange(&'static str, Duration),
}

const PROVIDERS: [&str; 6] = ["ports", "tunnel", "dns", "vm", "api_key", "instructions"];

#[derive(Debug, Clone, Copy)]
enum Fake {
    Cloudflare,
    Google,
}

/// Remote mutations whose answer the database then records.
const MUTATIONS: &[(Fake, &str, &str)] = &[
    (
        Fake::Cloudflare,
        "PUT",
        "/accounts/*/cfd_tunnel/*/configurations",
    ),
    (Fake::Cloudflare, "POST", "/zones/*/dns_records/batch"),
    (
        Fake::Google,
        "POST",
        "/compute/v1/projects/*/zones/*/instances/*/stop",
    ),
    (
        Fake::Google,
        "POST",
        "/compute/v1/projects/*/zones/*/instances/*/setMachineType",
    ),
    (
        Fake::Google,
        "POST",
        "/compute/v1/projects/*/zones/*/instances/*/start",
    ),
    (Fake::Google, "POST", "/v2/projects/*/locations/global/keys"),
    (
        Fake::Google,
        "GET",
        "/v2/projects/*/locations/global/keys/*/keyString",
    ),
    (
        Fake::Google,
        "DELETE",
        "/v2/projects/*/locations/global/keys/*",
    ),
];

/// What happened in one trial.
#[derive(Debug)]
struct Trial {
    kill: KillPoint,
    /// The killed apply finished before the kill landed.
    finished_first: bool,
    /// What the killed run was doing ([`Journal::kill_phase`]).
    phase: String,
}

async fn sigkill_at_random_points_always_converges(ws: Workspace) {
    let backend = if ws.database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let seed = seed();
    let trials = trials();
    eprintln!("crash harness ({backend}): {trials} trials, SUPERVISOR_CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let w = World::start(ws).await;
    let store = w.store().await;
    let vault = Vault::new(
        store.clone(),
        EncryptionKey::from_hex(KEY, KeySource::Env).unwrap(),
    );

    // A first, uninterrupted apply: how long one takes and how many requests it makes sets the range
    // the kill points are drawn from.
    let mut desired = Desired::draw(&mut rng);
    w.write_state(&desired);
    let started = Instant::now();
    let before = w.requests();
    converge(&w, "the first apply").await;
    let mut typical = started.elapsed();
    let mut typical_requests = (w.requests() - before).max(10);
    let mut ports =
        check_invariants(&w, &store, &vault, &desired, &HashMap::new(), "first apply").await;

    let mut log = Vec::new();
    let mut journal = Journal::open(&w).await;
    for trial in 0..trials {
        let what = format!("trial {trial} ({backend}, seed {seed})");
        let old_files = w.claude_md();
        desired = Desired::draw(&mut rng);
        w.write_state(&desired);
        let kill = match rng.random_range(0..4) {
            0 => KillPoint::After(Duration::from_millis(
                rng.random_range(0..=(typical.as_millis() as u64 * 6 / 5).max(50)),
            )),
            1 => KillPoint::Requests(
                rng.random_range(1..=typical_requests),
                Duration::from_millis(rng.random_range(0..20)),
            ),
            2 => KillPoint::OnChange(
                PROVIDERS[rng.random_range(0..PROVIDERS.len())],
                Duration::from_millis(rng.random_range(0..5)),
            ),
            _ => {
                let (fake, method, path) = MUTATIONS[rng.random_range(0..MUTATIONS.len())];
                KillPoint::OnRequest(
                    fake,
                    method,
                    path,
                    Duration::from_millis(rng.random_range(0..10)),
                )
            }
        };
        let runs_before: i64 = journal.statuses().await.values().sum();
        let finished_first = run_and_kill(&w, &mut journal, kill).await;
        let phase = journal.kill_phase(runs_before).await;

        // Right after the kill: no file is half-written — each is what it was or what it becomes.
        let killed_files = w.claude_md();

        let started = Instant::now();
        let before = w.requests();
        converge(&w, &what).await;
        // Follow what a whole apply takes (states differ in size) for the next kill point.
        typical = (typical + started.elapsed()) / 2;
        typical_requests = ((typical_requests + (w.requests() - before)) / 2).max(10);
        let new_files = w.claude_md();
        for (i, path) in w.claude_md_paths().iter().enumerate() {
            let k = &killed_files[i];
            assert!(
                k == &old_files[i] || k == &new_files[i],
                "{what}: {} right after the kill is neither the old nor the new file:\n{k:?}",
                path.display()
            );
        }
        ports = check_invariants(&w, &store, &vault, &desired, &ports, &what).await;
        log.push(Trial {
            kill,
            finished_first,
            phase,
        });
    }

    // Every killed run is recorded as interrupted; none is left `running`.
    let runs = journal.statuses().await;
    assert_eq!(runs.get("running"), None, "runs left running: {runs:?}");
    let interrupted = runs.get("interrupted").copied().unwrap_or(0);
    let killed_mid_run = log.iter().filter(|t| !t.finished_first).count();
    let by_time = log
        .iter()
        .filter(|t| matches!(t.kill, KillPoint::After(_)))
        .count();
    let by_count = log
        .iter()
        .filter(|t| matches!(t.kill, KillPoint::Requests(..)))
        .count();
    let by_change = log
        .iter()
        .filter(|t| matches!(t.kill, KillPoint::OnChange(..)))
        .count();
    let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &log {
        *phases.entry(t.phase.as_str()).or_default() += 1;
    }
    eprintln!(
        "crash harness ({backend}) seed {seed}: {trials} trials ({by_time} killed after a delay, {by_count} after a number of requests, {by_change} as a provider's change started, {} just after a remote mutation), \
         {killed_mid_run} killed mid-run, {interrupted} runs recorded interrupted; every one converged on the first re-run. \
         Killed while: {phases:?}",
        trials - by_time - by_count - by_change,
    );
    assert!(
        killed_mid_run * 2 >= trials,
        "most kills should land inside an apply: {log:#?}"
    );
    assert!(
        interrupted as usize >= killed_mid_run.saturating_sub(trials / 5),
        "killed runs are marked interrupted ({interrupted} of {killed_mid_run}; a kill before the run row exists leaves none)"
    );
}

/// Starts `apply` and SIGKILLs it at `kill`; true when it finished before.
async fn run_and_kill(w: &World, journal: &mut Journal, kill: KillPoint) -> bool {
    let mut child = w
        .command(&["apply", "--auto-approve", "--allow-disruptive", "--force"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn supervisor apply");
    let start_requests = w.requests();
    let matching = |fake: Fake, method: &str, path: &str| {
        let method = axum::http::Method::from_bytes(method.as_bytes()).unwrap();
        match fake {
            Fake::Cloudflare => w.cf.count(method, path),
            Fake::Google => w.google.count(method, path),
        }
    };
    let start_matching = match kill {
        KillPoint::OnRequest(fake, method, path, _) => matching(fake, method, path),
        _ => 0,
    };
    let started = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        let due = match kill {
            KillPoint::After(d) => started.elapsed() >= d,
            KillPoint::Requests(n, _) => w.requests() - start_requests >= n,
            KillPoint::OnRequest(fake, method, path, _) => {
                matching(fake, method, path) > start_matching
            }
            KillPoint::OnChange(provider, _) => journal.in_flight().await.contains(provider),
        };
        if due || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if let KillPoint::Requests(_, extra)
    | KillPoint::OnRequest(_, _, _, extra)
    | KillPoint::OnChange(_, extra) = kill
    {
        tokio::time::sleep(extra).await;
    }
    let finished = matches!(child.try_wait(), Ok(Some(_)));
    let _ = child.kill(); // SIGKILL
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    finished
}

/// Applies once; the run must succeed and the plan after it be empty (a failure shows both outputs).
async fn converge(w: &World, what: &str) {
    let out = w
        .cli(&["apply", "--auto-approve", "--allow-disruptive", "--force"])
        .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: the apply after the kill failed\n--- stdout\n{}\n--- stderr\n{}",
        stdout(&out),
        stderr(&out)
    );
    let plan = w.cli(&["plan", "--detailed-exitcode"]).await;
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{what}: not converged after one apply\n--- apply\n{}\n--- plan\n{}\n{}",
        stdout(&out),
        stdout(&plan),
        stderr(&plan)
    );
}

/// Raw reads of the journal (the same SQL on both backends).
enum Journal {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl Journal {
    async fn open(w: &World) -> Journal {
        use sqlx::Connection;
        match w.ws.location() {
            supervisor::store::Location::Postgres(url) => {
                Journal::Postgres(sqlx::PgConnection::connect(&url).await.unwrap())
            }
            supervisor::store::Location::Sqlite(path) => Journal::Sqlite(
                sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .unwrap(),
            ),
        }
    }

    async fn pairs(&mut self, q: &'static str, arg: &str) -> Vec<(String, String)> {
        match self {
            Journal::Postgres(c) => sqlx::query_as::<_, (String, String)>(q)
                .bind(arg.to_string())
                .fetch_all(c)
                .await
                .unwrap(),
            Journal::Sqlite(c) => sqlx::query_as::<_, (String, String)>(q)
                .bind(arg.to_string())
                .fetch_all(c)
                .await
                .unwrap(),
        }
    }

    /// The providers of the running apply's changes that are started and not finished.
    async fn in_flight(&mut self) -> BTreeSet<String> {
        self.pairs(
            "SELECT j.provider, j.address FROM apply_journal j JOIN apply_runs r ON r.id = j.run_id \
             WHERE r.status = 'running' AND j.status = 'started' AND $1 = $1",
            "",
        )
        .await
        .into_iter()
        .map(|(p, _)| p)
        .collect()
    }

    /// Runs by status.
    async fn statuses(&mut self) -> BTreeMap<String, i64> {
        let rows = self
            .pairs(
                "SELECT status, CAST(count(*) AS TEXT) FROM apply_runs WHERE $1 = $1 GROUP BY status",
                "",
            )
            .await;
        rows.into_iter()
            .map(|(s, n)| (s, n.parse().unwrap()))
            .collect()
    }

    /// What the newest run was doing when it was killed: the providers of its changes started and
    /// not finished, `between changes` when none was, `planning` when no new run had begun.
    async fn kill_phase(&mut self, runs_before: i64) -> String {
        let total: i64 = self.statuses().await.values().sum();
        if total == runs_before {
            return "planning".into();
        }
        let newest = self
            .pairs(
                "SELECT id, status FROM apply_runs WHERE $1 = $1 ORDER BY started_at DESC LIMIT 1",
                "",
            )
            .await;
        let (id, status) = newest[0].clone();
        if status != "running" {
            return format!("run {status}");
        }
        let started = self
            .pairs(
                "SELECT provider, address FROM apply_journal WHERE run_id = $1 AND status = 'started'",
                &id,
            )
            .await;
        let providers: BTreeSet<String> = started.into_iter().map(|(p, _)| p).collect();
        if providers.is_empty() {
            "between changes".into()
        } else {
            providers.into_iter().collect::<Vec<_>>().join("+")
        }
    }
}

/// Checks every invariant against the fakes and the database; returns the ports now allocated
/// (project/service → port) for the next trial's "no lost allocation" check.
async fn check_invariants(
    w: &World,
    store: &Arc<dyn Store>,
    vault: &Vault,
    d: &Desired,
    previous_ports: &HashMap<(String, String), i32>,
    what: &str,
) -> HashMap<(String, String), i32> {
    // Ports: exactly the declared services, one port each, no port twice, inside the project's block,
    // and a service that stayed declared kept its port.
    let reg = store.port_registry("default").await.unwrap();
    let declared: BTreeSet<(String, String)> = d
        .services
        .iter()
        .flat_map(|(p, ss)| ss.keys().map(move |s| (p.clone(), s.clone())))
        .collect();
    let allocated: BTreeSet<(String, String)> = reg
        .allocations
        .iter()
        .map(|a| (a.project.clone(), a.service.clone()))
        .collect();
    assert_eq!(allocated, declared, "{what}: allocations");
    assert_eq!(
        reg.allocations.len(),
        declared.len(),
        "{what}: one port per service"
    );
    let distinct: BTreeSet<i32> = reg.allocations.iter().map(|a| a.port).collect();
    assert_eq!(
        distinct.len(),
        reg.allocations.len(),
        "{what}: a port twice"
    );
    let mut ports = HashMap::new();
    for a in &reg.allocations {
        let block = reg
            .ranges
            .iter()
            .find(|r| r.project == a.project)
            .unwrap_or_else(|| panic!("{what}: no block for {a:?}"));
        assert!(
            a.port >= block.start_port && a.port <= block.end_port,
            "{what}: {a:?} outside {block:?}"
        );
        let key = (a.project.clone(), a.service.clone());
        if let Some(was) = previous_ports.get(&key) {
            assert_eq!(*was, a.port, "{what}: {key:?} lost its port");
        }
        ports.insert(key, a.port);
    }

    // DNS: one proxied CNAME to the tunnel per hostname, nothing else, each in the inventory.
    let hostnames = d.hostnames();
    let records = w.cf.records(&w.zone);
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "{what}: duplicate records {names:?}"
    );
    assert_eq!(
        unique,
        hostnames.keys().map(String::as_str).collect(),
        "{what}: DNS records"
    );
    let target = format!("{}.cfargotunnel.com", w.tunnel);
    for r in &records {
        assert!(
            r.record_type == "CNAME" && r.content == target && r.proxied,
            "{what}: {r:?}"
        );
    }
    let dns: BTreeMap<String, Option<String>> = store
        .list_managed("dns")
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.address, o.external_id))
        .collect();
    let expected: BTreeMap<String, Option<String>> = records
        .iter()
        .map(|r| (format!("dns/{}", r.name), Some(r.id.clone())))
        .collect();
    assert_eq!(dns, expected, "{what}: DNS inventory");

    // Tunnel: one rule per hostname pointing at its service's port, then the catch-all.
    let config =
        w.cf.tunnel_config(ACCOUNT_ID, &w.tunnel)
            .and_then(|c| c.config)
            .unwrap_or(Value::Null);
    let rules = config["ingress"].as_array().cloned().unwrap_or_default();
    if !hostnames.is_empty() || !rules.is_empty() {
        let last = rules.last().unwrap_or(&Value::Null);
        assert!(
            last.get("hostname").is_none(),
            "{what}: the last rule is the catch-all: {config}"
        );
    }
    let mut seen = BTreeMap::new();
    for r in &rules {
        if let Some(h) = r["hostname"].as_str() {
            assert!(
                seen.insert(
                    h.to_string(),
                    r["service"].as_str().unwrap_or("").to_string()
                )
                .is_none(),
                "{what}: two rules for {h}: {config}"
            );
        }
    }
    let expected: BTreeMap<String, String> = hostnames
        .iter()
        .map(|(h, (p, s))| {
            (
                h.clone(),
                format!("http://localhost:{}", ports[&(p.clone(), s.clone())]),
            )
        })
        .collect();
    assert_eq!(seen, expected, "{what}: tunnel ingress");
    let mut tunnel_inventory = BTreeSet::new();
    for o in store.list_managed("tunnel").await.unwrap() {
        if o.address == "tunnel/configuration" {
            continue;
        }
        assert_eq!(
            o.attributes.0.get("pending"),
            None,
            "{what}: {} is left pending",
            o.address
        );
        tunnel_inventory.insert(o.address);
    }
    assert_eq!(
        tunnel_inventory,
        hostnames.keys().map(|h| format!("tunnel/{h}")).collect(),
        "{what}: tunnel inventory"
    );

    // VMs: the declared machine type, running, no resize left half-done.
    for (vm, t) in &d.machine_types {
        let i = w.google.instance(vm);
        assert_eq!(
            (i.machine_type.as_str(), i.status.as_str()),
            (t.as_str(), "RUNNING"),
            "{what}: {vm}"
        );
    }
    for o in store.list_managed("vm").await.unwrap() {
        assert_eq!(
            o.attributes.0.get("resize").unwrap_or(&Value::Null),
            &Value::Null,
            "{what}: a resize record is left: {o:?}"
        );
    }

    // API keys: one live key per declaration with the declared restrictions, its string in the vault
    // at its path; no live key that is not declared; no secret left at a removed key's path.
    let keys = d.key_addresses();
    let live: Vec<FakeKey> = w
        .google
        .keys(GCP_PROJECT)
        .into_iter()
        .filter(|k| k.delete_time.is_none())
        .collect();
    let mut by_address: BTreeMap<String, Vec<&FakeKey>> = BTreeMap::new();
    for k in &live {
        assert_eq!(
            k.annotations.get("managed-by").map(String::as_str),
            Some("supervisor"),
            "{what}: {k:?}"
        );
        by_address
            .entry(k.annotations["supervisor-address"].clone())
            .or_default()
            .push(k);
    }
    assert_eq!(
        by_address.keys().cloned().collect::<BTreeSet<_>>(),
        keys.keys().cloned().collect::<BTreeSet<_>>(),
        "{what}: live keys"
    );
    let actor = Actor::cli("harness");
    for (address, (path, apis)) in &keys {
        let found = &by_address[address];
        assert_eq!(
            found.len(),
            1,
            "{what}: {address} has {} live keys",
            found.len()
        );
        let mut services = found[0].services.clone();
        services.sort();
        assert_eq!(&services, apis, "{what}: {address} restrictions");
        let secret = vault
            .get(&SecretPath::parse(path).unwrap(), &actor)
            .await
            .unwrap_or_else(|e| panic!("{what}: the secret of {address} at {path}: {e}"));
        assert!(
            secret.value.expose() == found[0].key_string,
            "{what}: the secret at {path} is not the string of {address}'s key"
        );
    }
    let mut inventory = BTreeSet::new();
    for o in store.list_managed("api_key").await.unwrap() {
        assert_eq!(
            (
                o.attributes.0["state"].as_str(),
                o.attributes.0.get("replaces")
            ),
            (Some("stored"), None),
            "{what}: {} is not finished: {}",
            o.address,
            o.attributes.0
        );
        inventory.insert(o.address);
    }
    assert_eq!(
        inventory,
        keys.keys().cloned().collect::<BTreeSet<_>>(),
        "{what}: API key inventory"
    );
    let wanted: BTreeSet<String> = keys.values().map(|(p, _)| p.clone()).collect();
    for p in 0..PROJECTS {
        for k in 0..KEYS {
            let path = key_store(&format!("p{p}"), &format!("k{k}"));
            if !wanted.contains(&path) {
                assert!(
                    store.get_secret(&path).await.unwrap().is_none(),
                    "{what}: a secret is left at {path} for a removed key"
                );
            }
        }
    }

    // CLAUDE.md: complete (one section, closed), recorded in the inventory with the section it has,
    // and no temporary file left next to it.
    let recorded: BTreeMap<String, String> = store
        .list_managed("instructions")
        .await
        .unwrap()
        .into_iter()
        .map(|o| {
            (
                o.external_id.unwrap_or_default(),
                o.attributes.0["section_sha256"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        recorded.len(),
        PROJECTS + 1,
        "{what}: instructions inventory"
    );
    for path in w.claude_md_paths() {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{what}: {}: {e}", path.display()));
        assert_eq!(
            text.matches("<!-- BEGIN supervisor").count(),
            1,
            "{what}: {}",
            path.display()
        );
        assert!(
            text.ends_with("<!-- END supervisor -->\n"),
            "{what}: {} is not complete",
            path.display()
        );
        let begin = text.find("<!-- BEGIN supervisor").unwrap();
        let inner_start = begin + text[begin..].find('\n').unwrap() + 1;
        let inner = &text[inner_start..text.len() - "<!-- END supervisor -->\n".len()];
        assert_eq!(
            recorded
                .get(&path.display().to_string())
                .map(String::as_str),
            Some(sha256_hex(inner).as_str()),
            "{what}: the inventory does not record {}'s section",
            path.display()
        );
        let dir = path.parent().unwrap();
        let leftovers: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{what}: temporary files left in {}: {leftovers:?}",
            dir.display()
        );
    }
    ports
}
