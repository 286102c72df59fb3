//! Compute Engine VMs and Google API keys end to end: the built binary (plan, apply, vm get/health,
//! doctor, secrets) against the stateful fake Google APIs, with the service-account key and the API
//! key strings in the real vault, on SQLite and on PostgreSQL.

mod support;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method;
use chrono::Utc;
use serde_json::Value;
use sha2::Digest;
use support::fake_google::{FakeGoogle, Fault, ServiceAccount};
use support::{Workspace, expect_code, stderr, stdout};

cli_conformance!(
    a_resize_runs_its_steps_and_the_second_plan_is_empty,
    a_disruptive_resize_is_refused_without_allow_disruptive,
    a_start_without_capacity_restores_the_previous_type_and_reports_both,
    a_resize_killed_during_the_stop_wait_converges_on_the_next_apply,
    a_stopped_vm_is_resized_and_left_stopped_unless_running_true,
    a_listed_vm_that_does_not_exist_is_a_plan_error,
    vm_get_reports_the_instance,
    health_reports_cpu_and_memory_only_when_the_agent_does,
    an_api_key_is_created_stored_and_deleted_and_its_string_never_shown,
    an_api_key_killed_before_its_string_was_stored_converges_without_an_orphan,
    doctor_reports_the_google_credentials_and_the_token_exchange,
    environment_urls_win_over_supervisor_yaml,
    serve_auto_apply_leaves_a_resize_waiting_for_a_human,
);

/// A fixed test key (64 hex characters) for the vault.
const KEY: &str = "6a1f0c3e9b2d4f5a7c8e0b1d3f5a7c9e2b4d6f8a0c2e4b6d8f0a1c3e5b7d9f1a";
const CREDS: &str = "meta/gcloud/service_account";
const PROJECT: &str = "my-gcp-project";
const ZONE: &str = "us-central1-a";

/// A workspace whose state points at a fake Google Cloud, with the service account's key file
/// written next to it (and stored in the vault by [`Gce::store_credentials`]).
struct Gce {
    ws: Workspace,
    fake: FakeGoogle,
    account: ServiceAccount,
}

impl Gce {
    async fn start(ws: Workspace) -> Gce {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fake = FakeGoogle::start().await;
        let account = fake.service_account("supervisor@my-gcp-project.iam.gserviceaccount.com");
        ws.write("sa.json", &account.json);
        ws.write("vault.key", KEY);
        Gce { ws, fake, account }
    }

    /// Starts, stores the credentials and declares `host-1` with `machine_type` (and `running`).
    async fn with_vm(ws: Workspace, machine_type: &str, running: Option<bool>) -> Gce {
        let g = Gce::start(ws).await;
        g.store_credentials().await;
        g.declare_vm(machine_type, running);
        g
    }

    fn supervisor_yaml(&self, vms: &str) {
        self.ws.write(
            "state/supervisor.yaml",
            &format!(
                "gcloud:\n  credentials: secret:{CREDS}\n  api_url: {}\n  monitoring_api_url: {}\n  apikeys_api_url: {}\n{vms}",
                self.fake.compute_url(),
                self.fake.monitoring_url(),
                self.fake.apikeys_url()
            ),
        );
    }

    fn declare_vm(&self, machine_type: &str, running: Option<bool>) {
        let running = running.map_or(String::new(), |r| format!("    running: {r}\n"));
        self.supervisor_yaml(&format!(
            "vms:\n  - name: host-1\n    gcp_project: {PROJECT}\n    zone: {ZONE}\n    machine_type: {machine_type}\n{running}"
        ));
    }

    /// The binary with the vault key and `USER` set, run off the async threads so the fake serves.
    async fn cli(&self, args: &[&str]) -> Output {
        self.cli_with(args, &[]).await
    }

    async fn cli_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args, env);
        tokio::task::spawn_blocking(move || cmd.output().expect("run supervisor"))
            .await
            .unwrap()
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
        let mut cmd = self.ws.cmd();
        cmd.args(args)
            .env("SECRETS_ENCRYPTION_KEY", KEY)
            .env("USER", "tester")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    async fn ok(&self, args: &[&str], code: i32) -> String {
        let out = self.cli(args).await;
        expect_code(&out, code);
        stdout(&out)
    }

    async fn store_credentials(&self) {
        let file = self.ws.path().join("sa.json");
        let out = self
            .cli(&[
                "secrets",
                "set",
                CREDS,
                "--value-file",
                file.to_str().unwrap(),
            ])
            .await;
        expect_code(&out, 0);
    }

    fn running(&self) -> (String, String) {
        let i = self.fake.instance("host-1");
        (i.status, i.machine_type)
    }

    /// Polls the fake until `check` holds (every 20 ms, up to `within`).
    async fn until(&self, within: Duration, what: &str, check: impl Fn(&FakeGoogle) -> bool) {
        let started = Instant::now();
        while !check(&self.fake) {
            assert!(started.elapsed() < within, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs the binary in the background and `kill -9`s it once `ready` holds.
    async fn kill_when(
        &self,
        args: &[&str],
        what: &str,
        ready: impl Fn(&FakeGoogle) -> bool,
    ) -> Output {
        let mut child = self.command(args, &[]).spawn().expect("spawn supervisor");
        self.until(Duration::from_secs(30), what, ready).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        child.kill().expect("kill -9");
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap()
    }
}

/// The lines of a text with runs of blanks squeezed (plans pad their columns).
fn squeezed(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[track_caller]
fn assert_lines(text: &str, expected: &[&str]) {
    let lines = squeezed(text);
    for e in expected {
        assert!(lines.iter().any(|l| l == e), "missing `{e}` in:\n{text}");
    }
}

/// The step names `apply` printed for `address` (`address: [1.2 s] step: detail`).
fn steps(text: &str, address: &str) -> Vec<String> {
    let prefix = format!("{address}: [");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| rest.split_once("] "))
        .filter_map(|(_, step)| step.split_once(':').map(|(name, _)| name.to_string()))
        .collect()
}

const RESIZE_STEPS: &[&str] = &[
    "stop",
    "wait",
    "set_machine_type",
    "wait",
    "start",
    "wait",
    "confirm",
];

async fn a_resize_runs_its_steps_and_the_second_plan_is_empty(ws: Workspace) {
    let g = Gce::with_vm(ws, "e2-standard-8", None).await;
    g.fake
        .add_instance(PROJECT, ZONE, "host-1", "e2-standard-4", "RUNNING");
    let plan = g.ok(&["plan", "--detailed-exitcode"], 2).await;
    assert_lines(
        &plan,
        &[
            &format!("vm (Compute Engine at {})", g.fake.compute_url()),
            "~ vm/host-1 machine type e2-standard-4 → e2-standard-8 (stops the VM, resizes it, starts it again) (disruptive)",
            "Plan: 0 to add, 1 to change, 0 to destroy.",
        ],
    );
    let json: Value = serde_json::from_str(&g.ok(&["plan", "--json"], 0).await).unwrap();
    let change = &json["changes"][0];
    assert_eq!(change["disruptive"], true);
    assert_eq!(change["after"]["op"], "resize");
    assert_eq!(change["after"]["to"], "e2-standard-8");
    assert_eq!(change["before"]["status"], "RUNNING");

    let out = g
        .cli(&["apply", "--auto-approve", "--allow-disruptive"])
        .await;
    expect_code(&out, 0);
    let text = stdout(&out);
    assert_eq!(steps(&text, "vm/host-1"), RESIZE_STEPS, "{text}");
    assert!(text.contains("Apply complete! Resources: 0 added, 1 changed, 0 destroyed."));
    assert_eq!(g.running(), ("RUNNING".into(), "e2-standard-8".into()));
    // One call of each mutation: nothing was stopped or started twice.
    for action in ["stop", "setMachineType", "start"] {
        assert_eq!(
            g.fake.count(
                Method::POST,
                &format!("/compute/v1/projects/*/zones/*/instances/*/{action}")
            ),
            1,
            "{action}"
        );
    }
    let again = g.ok(&["plan", "--detailed-exitcode"], 0).await;
    assert!(
        again.contains("No changes. Reality matches the desired state."),
        "{again}"
    );

    // The same resize back, with --json: one event per step.
    g.declare_vm("e2-standard-4", None);
    let out = g
        .cli(&["apply", "--auto-approve", "--allow-disruptive", "--json"])
        .await;
    expect_code(&out, 0);
    let events: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let progress: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "apply_progress")
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(progress, RESIZE_STEPS);
    assert!(
        events
            .iter()
            .filter(|e| e["type"] == "apply_progress")
            .all(|e| e["address"] == "vm/host-1" && e["elapsed_ms"].is_u64())
    );
    assert_eq!(g.running(), ("RUNNING".into(), "e2-standard-4".into()));
    g.ok(&["plan", "--detailed-exitcode"], 0).await;
}

async fn a_disruptive_resize_is_refused_without_allow_disruptive(ws: Workspace) {
    let g = Gce::with_vm(ws, "e2-standard-8", None).await;
    g.fake
        .add_instance(PROJECT, ZONE, "host-1", "e2-standard-4", "RUNNING");
    let out = g.cli(&["apply", "--auto-approve"]).await;
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("the plan has disruptive changes (vm/host-1); re-run with --allow-disruptive or answer yes interactively"),
        "{}",
        stderr(&out)
    );
    assert_eq!(g.running(), ("RUNNING".into(), "e2-standard-4".into()));
    assert_eq!(
        g.fake
            .requests()
            .iter()
            .filter(|r| r.method == Method::POST && r.path.contains("/instances/"))
            .count(),
        0,
        "nothing was sent"
    );
}

async fn a_start_without_capacity_restores_the_previous_type_and_reports_both(ws: Workspace) {
    let g = Gce::with_vm(ws, "e2-standard-8", None).await;
    g.fake
        .add_instance(PROJECT, ZONE, "host-1", "e2-standard-4", "RUNNING");
    g.fake.fail_starts(
        "host-1",
        Some("e2-standard-8"),
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        1,
    );
    let out = g
        .cli(&["apply", "--auto-approve", "--allow-disruptive"])
        .await;
    expect_code(&out, 1);
    let text = stdout(&out);
    assert_eq!(
        steps(&text, "vm/host-1"),
        [
            "stop",
            "wait",
            "set_machine_type",
            "wait",
            "start",
            "wait",
            "rollback",
            "set_machine_type",
            "wait",
            "start",
            "wait",
            "confirm"
        ],
        "{text}"
    );
    let err = stderr(&out);
    assert!(
        err.contains("vm/host-1: the VM did not start with machine type e2-standard-8: Compute Engine API: operation operation-"),
        "{err}"
    );
    assert!(err.contains("failed: [ZONE_RESOURCE_POOL_EXHAUSTED] The zone 'projects/my-gcp-project/zones/us-central1-a' does not have enough resources available"), "{err}");
    assert!(
        err.contains(
            "Rolled back: machine type e2-standard-4 is restored and the VM is RUNNING again."
        ),
        "{err}"
    );
    assert_eq!(g.running(), ("RUNNING".into(), "e2-standard-4".into()));
    // The desired state still asks for the resize: the next plan shows it again.
    let plan = g.ok(&["plan"], 0).await;
    assert_lines(
        &plan,
        &[
            "~ vm/host-1 machine type e2-standard-4 → e2-standard-8 (stops the VM, resizes it, starts it again) (disruptive)",
        ],
    );
}

async fn a_resize_killed_during_the_stop_wait_converges_on_the_next_apply(ws: Workspace) {
    let g = Gce::with_vm(ws, "e2-standard-8", None).await;
    g.fake
        .add_instance(PROJECT, ZONE, "host-1", "e2-standard-4", "RUNNING");
    g.fake.set_durations(
        Duration::from_secs(3),
        Duration::from_millis(200),
        Duration::from_millis(100),
    );
    let killed = g
        .kill_when(
            &["apply", "--auto-approve", "--allow-disruptive"],
            "the stop wait",
            |f| {
                f.instance("host-1").status == "STOPPING"
                    && f.count(
                        Method::POST,
                        "/compute/v1/projects/*/zones/*/operations/*/wait",
                    ) >= 1
            },
        )
        .await;
    assert_ne!(killed.status.code(), Some(0));
    // The stop goes on without the supervisor: the VM ends up stopped with its old type.
    g.until(Duration::from_secs(10), "TERMINATED", |f| {
        f.instance("host-1").status == "TERMINATED"
    })
    .await;
    let plan = g.ok(&["plan"], 0).await;
    assert_lines(
        &plan,
        &[
            "~ vm/host-1 machine type e2-standard-4 → e2-standard-8, then start (the VM is TERMINATED) (resuming a resize interrupted at step `wait`)",
        ],
    );
    assert!(
        !plan.contains("(disruptive)"),
        "the VM is down already: {plan}"
    );
    // No --allow-disruptive needed: finishing the approved resize interrupts nothing more.
    let out = g.cli(&["apply", "--auto-approve"]).await;
    expect_code(&out, 0);
    assert_eq!(
        steps(&stdout(&out), "vm/host-1"),
        ["set_machine_type", "wait", "start", "wait", "confirm"]
    );
    assert_eq!(g.running(), ("RUNNING".into(), "e2-standard-8".into()));
    let again = g.ok(&["plan", "--detailed-exitcode"], 0).await;
    assert!(again.contains("No changes."), "{again}");
    let store = supervisor::store::open(&g.ws.location()).await.unwrap();
    assert_eq!(store.last_run().await.unwrap().unwrap().status, "succeeded");
    let record = &store.list_managed("vm").await.unwrap()[0];
    assert_eq!(record.attributes.0["resize"], Value::Null, "no resize left");
    assert_eq!(record.attributes.0["machine_type"], "e2-standard-8");
}

async fn a_stopped_vm_is_resized_and_left_stopped_unless_running_true(ws: Workspace) {
    let g = Gce::with_vm(ws, "e2-standard-8", None).await;
    g.fake
        .add_instance(PROJECT, ZONE, "host-1", "e2-standard-4", "TERMINATED");
    let plan = g.ok(&["plan"], 0).await;
    assert_lines(
        &plan,
        &[
            "~ vm/host-1 machine type e2-standard-4 → e2-standard-8 (the VM is TERMINATED and stays stopped)",
        ],
    );
    let out = g.cli(&["apply", "--auto-approve"]).await;
    expect_code(&out, 0);
    assert_eq!(
        steps(&stdout(&out), "vm/host-1"),
        ["set_machine_type", "wait", "confirm"]
    );
    assert_eq!(g.running(), ("TERMINATED".into(), "e2-standard-8".into()));
    g.ok(&["plan", "--detailed-exitcode"], 0).await;

    g.declare_vm("e2-standard-8", Some(true));
    assert_lines(
        &g.ok(&["plan"], 0).await,
        &["~ vm/host-1 start: TERMINATED → RUNNING (running: true)"],
    );
    expect_code(&g.cli(&["apply", "--auto-approve"]).await, 0);
    assert_eq!(g.running(), ("RUNNING".into(), "e2-standard-8".into()));
    g.ok(&["plan", "--detailed-exitcode"], 0).await;
}

async fn a_listed_vm_that_does_not_exist_is_a_plan_error(ws: Workspace) {
    let g = Gce::with_vm(ws, "e2-standard-8", None).await;
    let out = g.cli(&["plan"]).await;
    expect_code(&out, 1);
    assert_lines(
        &stdout(&out),
        &[
            "✗ vm/host-1: there is no instance `host-1` in project my-gcp-project zone us-central1-a (only existing VMs are managed: create it, or fix the name, gcp_project or zone)",
        ],
    );
    // Without gcloud credentials the same state is invalid before anything is read.
    g.fake.clear_requests();
    g.ws.write(
        "state/supervisor.yaml",
        "vms:\n  - name: host-1\n    gcp_project: my-gcp-project\n    zone: us-central1-a\n    machine_type: e2-standard-8\n",
    );
    let out = g.cli(&["plan"]).await;
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("supervisor.yaml:2:11: error: VM `host-1` cannot be managed: no gcloud credentials are configured"),
        "{}",
        stderr(&out)
    );
    assert!(g.fake.requests().is_empty());
}

async fn vm_get_reports_the_instance(ws: Workspace) {
    let g = Gce::with_vm(ws, "e2-standard-8", None).await;
    let id = g
        .fake
        .add_instance(PROJECT, ZONE, "host-1", "e2-standard-4", "RUNNING");
    g.fake.add_disk("host-1", "data", 200);
    let inst = g.fake.instance("host-1");
    let json: Value =
        serde_json::from_str(&g.ok(&["vm", "get", "host-1", "--json"], 0).await).unwrap();
    assert_eq!(json["format_version"], "1");
    let vm = &json["vm"];
    assert_eq!(vm["instance_id"], id.as_str());
    assert_eq!(vm["status"], "RUNNING");
    assert_eq!(vm["machine_type"], "e2-standard-4");
    assert_eq!(vm["desired_machine_type"], "e2-standard-8");
    assert_eq!(
        (vm["cpus"].as_i64(), vm["memory_mb"].as_i64()),
        (Some(4), Some(16384))
    );
    assert_eq!(vm["internal_ip"], inst.internal_ip.as_str());
    assert_eq!(
        vm["external_ip"],
        inst.external_ip.clone().unwrap().as_str()
    );
    assert_eq!(
        vm["disks"],
        serde_json::json!([
            {"device_name": "host-1", "size_gb": 50, "boot": true, "kind": "PERSISTENT"},
            {"device_name": "data", "size_gb": 200, "boot": false, "kind": "PERSISTENT"},
        ])
    );
    let text = g.ok(&["vm", "get", "host-1"], 0).await;
    assert_lines(
        &text,
        &[
            "host-1 (my-gcp-project, us-central1-a)",
            "status RUNNING",
            "machine type e2-standard-4 (4 vCPUs, 16384 MB memory) — supervisor.yaml asks for e2-standard-8: run `supervisor plan`",
            &format!("internal IP {}", inst.internal_ip),
            "disks host-1 50 GB (boot), data 200 GB",
        ],
    );
    let out = g.cli(&["vm", "get", "host-9"]).await;
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("no VM `host-9` in"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("(declared: host-1)"),
        "{}",
        stderr(&out)
    );
}

async fn health_reports_cpu_and_memory_only_when_the_agent_does(ws: Workspace) {
    let g = Gce::with_vm(ws, "e2-standard-4", None).await;
    let id = g
        .fake
        .add_instance(PROJECT, ZONE, "host-1", "e2-standard-4", "RUNNING");
    let now = Utc::now();
    let ago = |m: i64| now - chrono::Duration::minutes(m);
    g.fake.add_points(
        PROJECT,
        &id,
        "compute.googleapis.com/instance/cpu/utilization",
        &[],
        &[(ago(3), 0.20), (ago(2), 0.40), (ago(1), 0.60)],
    );
    let health =
        |out: String| -> Value { serde_json::from_str::<Value>(&out).unwrap()["health"].clone() };
    let h = health(g.ok(&["vm", "health", "host-1", "--json"], 0).await);
    assert_eq!(h["window_minutes"], 60);
    assert_eq!(
        (
            h["cpu"]["average_percent"].as_f64(),
            h["cpu"]["max_percent"].as_f64(),
            h["cpu"]["current_percent"].as_f64(),
            h["cpu"]["samples"].as_i64()
        ),
        (Some(40.0), Some(60.0), Some(60.0), Some(3))
    );
    assert_eq!(h["memory"]["reported"], false);
    assert_eq!(
        h["memory"]["average_percent"],
        Value::Null,
        "never a made-up number"
    );
    assert_eq!(h["memory"]["current_percent"], Value::Null);
    assert_eq!(
        h["memory"]["note"],
        "not reported: memory use comes from the Ops Agent, which does not report it for this VM (install the agent to see it)"
    );
    assert_eq!(h["disk_usage"]["reported"], false);
    let text = g.ok(&["vm", "health", "host-1"], 0).await;
    assert_lines(
        &text,
        &[
            "host-1: RUNNING, e2-standard-4 — last 60 minutes (60-second samples)",
            "CPU average 40.0 %, max 60.0 %, current 60.0 % (3 samples)",
            "memory not reported: memory use comes from the Ops Agent, which does not report it for this VM (install the agent to see it)",
        ],
    );

    // The Ops Agent is installed: memory and disk use appear.
    g.fake.add_points(
        PROJECT,
        &id,
        "agent.googleapis.com/memory/percent_used",
        &[("state", "used")],
        &[(ago(2), 50.0), (ago(1), 70.0)],
    );
    g.fake.add_points(
        PROJECT,
        &id,
        "agent.googleapis.com/memory/percent_used",
        &[("state", "free")],
        &[(ago(1), 30.0)],
    );
    g.fake.add_points(
        PROJECT,
        &id,
        "agent.googleapis.com/disk/percent_used",
        &[("device", "sda1"), ("state", "used")],
        &[(ago(1), 41.26)],
    );
    let h = health(
        g.ok(&["vm", "health", "host-1", "--json", "--minutes", "30"], 0)
            .await,
    );
    assert_eq!(h["window_minutes"], 30);
    assert_eq!(h["memory"]["reported"], true);
    assert_eq!(
        (
            h["memory"]["average_percent"].as_f64(),
            h["memory"]["current_percent"].as_f64(),
            h["memory"]["samples"].as_i64()
        ),
        (Some(60.0), Some(70.0), Some(2))
    );
    assert_eq!(
        h["disk_usage"]["devices"],
        serde_json::json!([{"device": "sda1", "used_percent": 41.3}])
    );
    let out = g.cli(&["vm", "health", "host-1", "--minutes", "0"]).await;
    expect_code(&out, 1);
    assert!(stderr(&out).contains("minutes must be from 1 to 10080 (a week), not 0"));
}

const SHOP_WITH_KEY: &str = "name: shop\napi_keys:\n  - name: maps\n    gcp_project: my-gcp-project\n    restrict_apis: [maps-backend.googleapis.com]\n    store: project/shop/maps_key\n";

fn key_prefix(address: &str) -> String {
    let digest = sha2::Sha256::digest(address.as_bytes());
    format!("sv-maps-{}-", &hex::encode(digest)[..8])
}

async fn an_api_key_is_created_stored_and_deleted_and_its_string_never_shown(ws: Workspace) {
    let g = Gce::start(ws).await;
    g.store_credentials().await;
    g.supervisor_yaml("");
    g.ws.write("state/projects/shop.yaml", SHOP_WITH_KEY);
    let id = format!("{}1", key_prefix("api_key/shop/maps"));
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut record = |what: &str, o: &Output| {
        outputs.push((format!("{what} stdout"), stdout(o)));
        outputs.push((format!("{what} stderr"), stderr(o)));
    };

    let out = g.cli(&["plan", "-vvv"]).await;
    expect_code(&out, 0);
    assert_lines(
        &stdout(&out),
        &[
            &format!("api_key (API Keys at {})", g.fake.apikeys_url()),
            &format!(
                "+ api_key/shop/maps key \"shop/maps\" in my-gcp-project (restricted to maps-backend.googleapis.com) as {id}; its key string goes to the vault at project/shop/maps_key"
            ),
        ],
    );
    record("plan", &out);
    let out = g.cli(&["apply", "--auto-approve", "-vvv"]).await;
    expect_code(&out, 0);
    assert_eq!(
        steps(&stdout(&out), "api_key/shop/maps"),
        ["create", "wait", "store"]
    );
    record("apply", &out);
    let keys = g.fake.keys(PROJECT);
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key.key_id, id);
    assert_eq!(key.services, vec!["maps-backend.googleapis.com"]);
    assert_eq!(key.annotations["managed-by"], "supervisor");
    assert_eq!(key.annotations["supervisor-address"], "api_key/shop/maps");

    // The one place the key string may appear: `secrets get`.
    let got = g.cli(&["secrets", "get", "project/shop/maps_key"]).await;
    expect_code(&got, 0);
    assert_eq!(stdout(&got).trim_end(), key.key_string);
    for args in [
        &["plan", "--detailed-exitcode", "-vvv"][..],
        &["plan", "--json"],
        &["status", "--json"],
        &["secrets", "list", "--json"],
        &["secrets", "audit", "--json"],
    ] {
        let out = g.cli(args).await;
        record(&args.join(" "), &out);
    }
    let audit: Value = serde_json::from_str(&stdout(
        &g.cli(&[
            "secrets",
            "audit",
            "--json",
            "--path",
            "project/shop/maps_key",
        ])
        .await,
    ))
    .unwrap();
    let writes: Vec<&Value> = audit
        .as_array()
        .or_else(|| audit["events"].as_array())
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "write")
        .collect();
    assert_eq!(writes.len(), 1, "{audit}");
    let actor = writes[0]["actor"].as_str().unwrap();
    assert!(
        actor.starts_with("apply:") && actor.ends_with("(cli:tester)"),
        "{actor}"
    );

    // New services replace the key: a new one is created and stored, then the old one deleted.
    g.ws.write(
        "state/projects/shop.yaml",
        &SHOP_WITH_KEY.replace(
            "[maps-backend.googleapis.com]",
            "[maps-backend.googleapis.com, geocoding-backend.googleapis.com]",
        ),
    );
    let id2 = format!("{}2", key_prefix("api_key/shop/maps"));
    let plan = g.ok(&["plan"], 0).await;
    assert_lines(
        &plan,
        &[&format!(
            "-/+ api_key/shop/maps {id} (services [maps-backend.googleapis.com] → [geocoding-backend.googleapis.com, maps-backend.googleapis.com]): new key {id2} stored at project/shop/maps_key, then {id} is deleted"
        )],
    );
    let out = g.cli(&["apply", "--auto-approve", "-vvv"]).await;
    expect_code(&out, 0);
    assert_eq!(
        steps(&stdout(&out), "api_key/shop/maps"),
        ["create", "wait", "store", "delete"]
    );
    record("apply replace", &out);
    let keys = g.fake.keys(PROJECT);
    let by_id = |id: &str| keys.iter().find(|k| k.key_id == id).unwrap().clone();
    assert!(by_id(&id).delete_time.is_some(), "the old key is deleted");
    let new_key = by_id(&id2);
    assert_eq!(new_key.delete_time, None);
    assert_eq!(
        new_key.services,
        [
            "geocoding-backend.googleapis.com",
            "maps-backend.googleapis.com"
        ]
    );
    let got = g.cli(&["secrets", "get", "project/shop/maps_key"]).await;
    assert_eq!(stdout(&got).trim_end(), new_key.key_string);
    g.ok(&["plan", "--detailed-exitcode"], 0).await;

    // Removing the declaration deletes the key and its secret.
    g.ws.write("state/projects/shop.yaml", "name: shop\n");
    let plan = g.ok(&["plan"], 0).await;
    assert_lines(
        &plan,
        &[&format!(
            "- api_key/shop/maps key {id2} in my-gcp-project and its secret project/shop/maps_key"
        )],
    );
    let out = g.cli(&["apply", "--auto-approve", "-vvv"]).await;
    expect_code(&out, 0);
    record("apply delete", &out);
    assert!(
        g.fake.keys(PROJECT).iter().all(|k| k.delete_time.is_some()),
        "every key is deleted"
    );
    expect_code(
        &g.cli(&["secrets", "get", "project/shop/maps_key"]).await,
        1,
    );
    g.ok(&["plan", "--detailed-exitcode"], 0).await;

    // The key strings are in none of it — not even masked by the log redaction — and neither is an
    // access token or the service account's private key.
    for (what, text) in &outputs {
        for k in [&key.key_string, &new_key.key_string] {
            assert!(!text.contains(k.as_str()), "a key string is in {what}");
        }
        assert!(
            !text.contains("REDACTED"),
            "{what} needed redaction:\n{text}"
        );
        assert!(!text.contains("ya29."), "an access token is in {what}");
        assert!(
            !text.contains("PRIVATE KEY"),
            "the private key is in {what}"
        );
    }
    let store = supervisor::store::open(&g.ws.location()).await.unwrap();
    for e in store.latest_journal_entries().await.unwrap() {
        for k in [&key.key_string, &new_key.key_string] {
            assert!(!e.intent.0.to_string().contains(k.as_str()));
            assert!(!e.error.clone().unwrap_or_default().contains(k.as_str()));
        }
    }
    assert!(store.list_managed("api_key").await.unwrap().is_empty());
}

async fn an_api_key_killed_before_its_string_was_stored_converges_without_an_orphan(ws: Workspace) {
    let g = Gce::start(ws).await;
    g.store_credentials().await;
    g.supervisor_yaml("");
    g.ws.write("state/projects/shop.yaml", SHOP_WITH_KEY);
    let id = format!("{}1", key_prefix("api_key/shop/maps"));
    // The key string request hangs: the process is killed after the key exists, before the vault
    // write.
    g.fake.inject(Fault::latency(Duration::from_secs(20)).on(
        Method::GET,
        "/v2/projects/*/locations/global/keys/*/keyString",
    ));
    g.kill_when(&["apply", "--auto-approve"], "the keyString request", |f| {
        f.count(
            Method::GET,
            "/v2/projects/*/locations/global/keys/*/keyString",
        ) >= 1
    })
    .await;
    expect_code(
        &g.cli(&["secrets", "get", "project/shop/maps_key"]).await,
        1,
    );
    let plan = g.ok(&["plan"], 0).await;
    assert_lines(
        &plan,
        &[&format!(
            "~ api_key/shop/maps store the key string of {id} at project/shop/maps_key (storing it was interrupted)"
        )],
    );
    let out = g.cli(&["apply", "--auto-approve"]).await;
    expect_code(&out, 0);
    let keys = g.fake.keys(PROJECT);
    assert_eq!(
        keys.len(),
        1,
        "one key, no orphan and no duplicate: {keys:?}"
    );
    let got = g.cli(&["secrets", "get", "project/shop/maps_key"]).await;
    assert_eq!(stdout(&got).trim_end(), keys[0].key_string);
    g.ok(&["plan", "--detailed-exitcode"], 0).await;
}

async fn doctor_reports_the_google_credentials_and_the_token_exchange(ws: Workspace) {
    let g = Gce::with_vm(ws, "e2-standard-4", None).await;
    let out = g.cli(&["doctor", "--json"]).await;
    expect_code(&out, 0);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let check = |r: &Value, name: &str| {
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} check in {r}"))
    };
    let gcloud = check(&report, "gcloud api");
    assert_eq!(gcloud["status"], "ok");
    assert_eq!(
        gcloud["detail"],
        format!(
            "credentials for {} from secret {CREDS}; token exchange at {} works; Compute Engine at {}",
            g.account.client_email,
            g.fake.token_url(),
            g.fake.compute_url()
        )
    );
    assert_eq!(
        check(&report, "gcloud")["detail"],
        "1 VM, 0 API keys, credentials from secret meta/gcloud/service_account"
    );
    // A key the token endpoint does not accept: a failed check naming the reason and the fix.
    let stranger = g
        .fake
        .unknown_service_account("stranger@elsewhere.iam.gserviceaccount.com");
    g.ws.write("stranger.json", &stranger.json);
    let file = g.ws.path().join("stranger.json");
    expect_code(
        &g.cli(&[
            "secrets",
            "set",
            CREDS,
            "--value-file",
            file.to_str().unwrap(),
        ])
        .await,
        0,
    );
    let out = g.cli(&["doctor", "--json"]).await;
    expect_code(&out, 1);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let gcloud = check(&report, "gcloud api");
    assert_eq!(gcloud["status"], "error");
    assert!(
        gcloud["detail"].as_str().unwrap().contains("token exchange: Google OAuth token endpoint: POST /token: rejected (HTTP 400): [0] invalid_grant: Invalid grant: account not found"),
        "{gcloud}"
    );
    assert!(
        gcloud["fix"]
            .as_str()
            .unwrap()
            .contains("supervisor secrets set meta/gcloud/service_account --value-file key.json")
    );
    // Not stored at all.
    expect_code(&g.cli(&["secrets", "delete", CREDS]).await, 0);
    let out = g.cli(&["doctor"]).await;
    expect_code(&out, 1);
    assert!(stdout(&out).contains("cannot read the Google service-account key (gcloud.credentials): cannot read secret meta/gcloud/service_account: it is not set (supervisor secrets set meta/gcloud/service_account)"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("BEGIN PRIVATE KEY"));
}

async fn environment_urls_win_over_supervisor_yaml(ws: Workspace) {
    let g = Gce::start(ws).await;
    g.store_credentials().await;
    g.fake
        .add_instance(PROJECT, ZONE, "host-1", "e2-standard-4", "RUNNING");
    // supervisor.yaml points nowhere; the environment points at the fake.
    let dead = format!("http://127.0.0.1:{}/compute/v1", support::mcp::free_port());
    g.ws.write(
        "state/supervisor.yaml",
        &format!(
            "gcloud:\n  credentials: secret:{CREDS}\n  api_url: {dead}\nvms:\n  - name: host-1\n    gcp_project: {PROJECT}\n    zone: {ZONE}\n    machine_type: e2-standard-4\n"
        ),
    );
    let out = g.cli(&["plan"]).await;
    expect_code(&out, 1);
    assert!(stderr(&out).contains("Compute Engine API: GET /projects/my-gcp-project/zones/us-central1-a/instances/host-1: could not connect"), "{}", stderr(&out));
    let out = g
        .cli_with(
            &["plan", "--detailed-exitcode"],
            &[("SUPERVISOR_GCE_API_URL", &g.fake.compute_url())],
        )
        .await;
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains("observing ports, vm, instructions, secrets"),
        "{}",
        stdout(&out)
    );
}

async fn serve_auto_apply_leaves_a_resize_waiting_for_a_human(ws: Workspace) {
    let g = Gce::with_vm(ws, "e2-standard-8", None).await;
    g.fake
        .add_instance(PROJECT, ZONE, "host-1", "e2-standard-4", "RUNNING");
    let key_file = g.ws.path().join("vault.key");
    let server = support::mcp::Server::start(
        &g.ws,
        &[
            "--no-auth",
            "--auto-apply",
            "--key-file",
            key_file.to_str().unwrap(),
        ],
    )
    .await;
    let started = Instant::now();
    let health = loop {
        let h = server.health().await;
        if h["reconcile"]["runs"].as_u64() >= Some(1) {
            break h;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no reconcile run: {h}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reconcile = &health["reconcile"];
    assert_eq!(
        reconcile["last_result"],
        "waiting",
        "{health}\n{}",
        server.log()
    );
    let waiting = reconcile["waiting_for_human"].to_string();
    assert!(
        waiting.contains("vm/host-1") && waiting.contains("--allow-disruptive"),
        "{waiting}"
    );
    assert_eq!(g.running(), ("RUNNING".into(), "e2-standard-4".into()));
    assert_eq!(
        g.fake.count(
            Method::POST,
            "/compute/v1/projects/*/zones/*/instances/*/stop"
        ),
        0
    );
}
