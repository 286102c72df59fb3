//! Fake-cloud storms: the real engine and providers (Cloudflare tunnel and DNS, Compute Engine VMs,
//! Google API keys) and the real embeddings client, against the fakes answering `429` with
//! `Retry-After`, bursts of 5xx, connection resets (before and after the request was processed),
//! answers slower than the client's timeout, a batch failing midway and operations that never finish.
//!
//! Every run either converges within its retry budget or fails with an error that names the API call
//! or the operation — and then nothing is half-applied: the fakes and the inventory are as before the
//! change, and the next run converges. Across every storm, no retry came sooner than the
//! `Retry-After` it was told (the fakes record each request's arrival).
//!
//! Library level (like `tests/cloudflare_providers.rs`), so the HTTP policy and the operation bounds
//! can be short: 0.7 s per attempt, 4 attempts, `Retry-After` waited up to 3 s, operations waited
//! 2.5 s. Real stores on both backends; the vault is the real one.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use secrecy::SecretString;
use serde_json::Value;
use supervisor::clients::embeddings::EmbeddingsClient;
use supervisor::clients::google::operations::WaitPolicy;
use supervisor::clients::{ApiError, HttpPolicy, RetryPolicy};
use supervisor::engine::{ApplyOptions, ApplyReport, Engine, EngineError, Scope, render};
use supervisor::providers::gcloud::GoogleWaits;
use supervisor::providers::{ProviderContext, for_desired};
use supervisor::secrets::key::{EncryptionKey, KeySource};
use supervisor::secrets::path::SecretPath;
use supervisor::secrets::vault::{Actor, SecretValue, SetOptions, Vault};
use supervisor::store::Store;
use support::fake_cloudflare::{self as cf, ACCOUNT_ID, FakeCloudflare, TOKEN};
use support::fake_embeddings::{self as emb, FakeEmbeddings};
use support::fake_google::{self as gf, FakeGoogle};
use support::faults::{RESET, retry_after_count, retry_after_violations};
use support::{Workspace, expect_code, stderr, stdout};

cli_conformance!(
    cloudflare_storms_converge_or_fail_cleanly,
    google_storms_converge_or_fail_cleanly,
    operations_that_never_finish_fail_clearly_and_the_next_run_finishes_them,
    an_embedding_batch_failing_midway_writes_no_document_by_half,
);

const KEY: &str = "6a1f0c3e9b2d4f5a7c8e0b1d3f5a7c9e2b4d6f8a0c2e4b6d8f0a1c3e5b7d9f1a";
const CF_TOKEN_PATH: &str = "meta/cloudflare/api_token";
const GCP_CREDS: &str = "meta/gcloud/service_account";
const GCP_PROJECT: &str = "my-gcp-project";
const ZONE: &str = "us-central1-a";

/// The policy under storm: short timeouts, four attempts, `Retry-After` honoured up to 3 s.
fn storm_policy() -> HttpPolicy {
    HttpPolicy {
        timeout: Duration::from_millis(700),
        connect_timeout: Duration::from_millis(500),
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(3),
        },
    }
}

fn storm_waits() -> GoogleWaits {
    let w = WaitPolicy {
        timeout: Duration::from_millis(2500),
        poll_interval: Duration::from_millis(50),
    };
    GoogleWaits {
        compute: w,
        key: w,
        settle: w,
    }
}

/// Every request a storm sent was retried no sooner than its `Retry-After`.
#[track_caller]
fn assert_retry_after_honoured(api: &str, log: &[support::faults::Attempt]) {
    let violations = retry_after_violations(log);
    assert!(
        violations.is_empty(),
        "{api}: retries ignored Retry-After:\n{}",
        violations.join("\n")
    );
}

/// A workspace with a vault, the store open, and the engine built for its state.
struct Bench {
    ws: Workspace,
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
}

impl Bench {
    async fn start(ws: Workspace) -> Bench {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = supervisor::store::open(&ws.location()).await.unwrap();
        let vault = Arc::new(Vault::new(
            store.clone(),
            EncryptionKey::from_hex(KEY, KeySource::Env).unwrap(),
        ));
        Bench { ws, store, vault }
    }

    async fn set_secret(&self, path: &str, value: &str) {
        self.vault
            .set(
                &SecretPath::parse(path).unwrap(),
                &SecretValue::new(zeroize::Zeroizing::new(value.to_string())),
                &SetOptions::default(),
                &Actor::cli("storm"),
            )
            .await
            .unwrap();
    }

    fn context(&self) -> ProviderContext {
        let mut ctx = ProviderContext::new(self.store.clone());
        ctx.secrets = Some(self.vault.clone());
        ctx.secret_sink = Some(self.vault.clone());
        ctx.actor = "storm".into();
        ctx.http = storm_policy();
        ctx.google_waits = storm_waits();
        ctx
    }

    async fn engine(&self) -> Result<(supervisor::state::Desired, Engine), EngineError> {
        let desired = supervisor::state::load(&self.ws.state()).unwrap_or_else(|d| panic!("{d}"));
        let providers = for_desired(&desired, &self.context())
            .await
            .map_err(|source| EngineError::Provider {
                provider: "setup".into(),
                source,
            })?;
        Ok((desired, Engine::new(self.store.clone(), providers)))
    }

    /// Plans and applies; `Err` when planning fails, `failed` in the report when a change failed.
    async fn run(&self) -> Result<ApplyReport, EngineError> {
        let (desired, engine) = self.engine().await?;
        let plan = engine.plan(&desired, &Scope::default()).await?;
        let opts = ApplyOptions {
            force: true,
            allow_disruptive: true,
            actor: "storm".into(),
            ..Default::default()
        };
        engine.apply(&plan, &opts, |_| {}).await
    }

    /// A run that must succeed.
    async fn converges(&self, what: &str) {
        let report = self
            .run()
            .await
            .unwrap_or_else(|e| panic!("{what}: the run failed: {e}"));
        assert_eq!(report.failed, None, "{what}");
        self.assert_empty_plan(what).await;
    }

    async fn assert_empty_plan(&self, what: &str) {
        let (desired, engine) = self.engine().await.unwrap();
        let plan = engine.plan(&desired, &Scope::default()).await.unwrap();
        assert!(
            plan.changes.is_empty() && plan.errors.is_empty(),
            "{what}: not converged:\n{}",
            render::plan_text(&plan)
        );
    }

    /// The run fails; returns the error text (a plan error or the failed change).
    async fn fails(&self, what: &str) -> String {
        match self.run().await {
            Err(e) => e.to_string(),
            Ok(report) => report
                .failed
                .unwrap_or_else(|| panic!("{what}: the run succeeded")),
        }
    }

    async fn managed(&self, provider: &str) -> Vec<(String, Option<String>, Value)> {
        let mut v: Vec<_> = self
            .store
            .list_managed(provider)
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.address, o.external_id, o.attributes.0))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

// ---------------------------------------------------------------------------------------------------
// Cloudflare

struct CfWorld {
    b: Bench,
    fake: FakeCloudflare,
    zone: String,
    tunnel: String,
}

impl CfWorld {
    async fn start(ws: Workspace) -> CfWorld {
        let b = Bench::start(ws).await;
        b.set_secret(CF_TOKEN_PATH, TOKEN).await;
        let fake = FakeCloudflare::start().await;
        let zone = fake.add_zone("example.com");
        let tunnel = fake.add_tunnel(ACCOUNT_ID, "host-1");
        b.ws.write(
            "state/supervisor.yaml",
            &format!(
                "cloudflare:\n  zone: example.com\n  account_id: \"{ACCOUNT_ID}\"\n  api_token: secret:{CF_TOKEN_PATH}\n  api_url: {}\n  tunnel:\n    id: {tunnel}\n    mode: remote\n",
                fake.base_url()
            ),
        );
        CfWorld {
            b,
            fake,
            zone,
            tunnel,
        }
    }

    /// Project `shop` with services `h0`…`h{n-1}`, each at `h<i>.example.com`.
    fn hostnames(&self, n: usize) {
        let mut text = "name: shop\nport_range: 3100\nservices:\n".to_string();
        for i in 0..n {
            text.push_str(&format!("  - name: h{i}\n    hostname: h{i}.example.com\n"));
        }
        self.b.ws.write("state/projects/shop.yaml", &text);
    }

    fn record_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .fake
            .records(&self.zone)
            .into_iter()
            .map(|r| r.name)
            .collect();
        v.sort();
        v
    }

    fn ingress(&self) -> Vec<String> {
        self.fake
            .tunnel_config(ACCOUNT_ID, &self.tunnel)
            .and_then(|c| c.config)
            .map(|c| {
                c["ingress"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|r| r["hostname"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn tunnel_version(&self) -> u64 {
        self.fake
            .tunnel_config(ACCOUNT_ID, &self.tunnel)
            .map_or(0, |c| c.version)
    }

    /// What a failed run must have left alone: records, ingress, the tunnel's version, the DNS
    /// inventory.
    async fn snapshot(&self) -> (Vec<String>, Vec<String>, u64, Vec<(String, Option<String>)>) {
        (
            self.record_names(),
            self.ingress(),
            self.tunnel_version(),
            self.b
                .managed("dns")
                .await
                .into_iter()
                .map(|(a, id, _)| (a, id))
                .collect(),
        )
    }

    /// One record per hostname, one rule per hostname, and the DNS inventory naming exactly them.
    async fn assert_consistent(&self, n: usize, what: &str) {
        let mut expected: Vec<String> = (0..n).map(|i| format!("h{i}.example.com")).collect();
        expected.sort();
        assert_eq!(self.record_names(), expected, "{what}: records");
        let mut ingress = self.ingress();
        ingress.sort();
        assert_eq!(ingress, expected, "{what}: ingress");
        let ids: BTreeSet<String> = self
            .fake
            .records(&self.zone)
            .into_iter()
            .map(|r| r.id)
            .collect();
        let managed: BTreeSet<String> = self
            .b
            .managed("dns")
            .await
            .into_iter()
            .filter_map(|m| m.1)
            .collect();
        assert_eq!(managed, ids, "{what}: DNS inventory");
    }
}

const DNS_RECORDS: &str = "/zones/*/dns_records";
const DNS_BATCH: &str = "/zones/*/dns_records/batch";
const TUNNEL_CONFIG: &str = "/accounts/*/cfd_tunnel/*/configurations";

async fn cloudflare_storms_converge_or_fail_cleanly(ws: Workspace) {
    use cf::Fault;
    let w = CfWorld::start(ws).await;

    // 429 with Retry-After on every kind of call, and a 503 with Retry-After: waited out, then done.
    w.hostnames(2);
    for (method, path) in [
        (Method::GET, "/zones"),
        (Method::GET, DNS_RECORDS),
        (Method::GET, TUNNEL_CONFIG),
        (Method::PUT, TUNNEL_CONFIG),
        (Method::POST, DNS_BATCH),
    ] {
        w.fake.inject(Fault::rate_limited(1).on(method, path));
    }
    w.fake
        .inject(Fault::unavailable(1).on(Method::GET, TUNNEL_CONFIG));
    let started = Instant::now();
    w.b.converges("429 storm").await;
    assert_eq!(
        w.fake.pending_faults(),
        0,
        "every fault was met: {:?}",
        w.fake.pending_fault_list()
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    w.assert_consistent(2, "429 storm").await;

    // A burst of 5xx within the retry budget (three, then the fourth attempt succeeds).
    w.hostnames(3);
    w.fake
        .inject(Fault::status(502).on(Method::GET, DNS_RECORDS).times(3));
    w.fake
        .inject(Fault::status(503).on(Method::PUT, TUNNEL_CONFIG).times(3));
    w.b.converges("5xx within the budget").await;
    assert_eq!(
        w.fake.pending_faults(),
        0,
        "{:?}",
        w.fake.pending_fault_list()
    );
    w.assert_consistent(3, "5xx within the budget").await;

    // Beyond the budget: planning fails naming the call, nothing changes; then the next run converges.
    w.hostnames(4);
    let before = w.snapshot().await;
    w.fake
        .inject(Fault::status(500).on(Method::GET, DNS_RECORDS).times(4));
    let e = w.b.fails("5xx beyond the budget (read)").await;
    assert!(
        e.contains("Cloudflare API: GET /zones/")
            && e.contains("/dns_records: server error (HTTP 500) after 4 attempt(s)"),
        "{e}"
    );
    assert_eq!(w.snapshot().await, before, "nothing changed");
    // … or applying fails at the tunnel write: ports are in, the tunnel and DNS untouched.
    w.fake
        .inject(Fault::status(503).on(Method::PUT, TUNNEL_CONFIG).times(4));
    let e = w.b.fails("5xx beyond the budget (write)").await;
    assert!(
        e.contains("PUT /accounts/") && e.contains("server error (HTTP 503) after 4 attempt(s)"),
        "{e}"
    );
    assert_eq!(w.snapshot().await, before, "nothing half-applied");
    w.b.converges("after the 5xx storm").await;
    w.assert_consistent(4, "after the 5xx storm").await;

    // Connection resets: before processing (retried or re-read), and after (the lost batch answer is
    // found by reading the zone again: no duplicate).
    w.hostnames(6);
    w.fake.inject(Fault::reset().on(Method::GET, DNS_RECORDS));
    w.fake.inject(Fault::reset().on(Method::PUT, TUNNEL_CONFIG));
    w.fake
        .inject(Fault::reset_after_apply().on(Method::POST, DNS_BATCH));
    w.b.converges("resets").await;
    assert_eq!(
        w.fake.pending_faults(),
        0,
        "{:?}",
        w.fake.pending_fault_list()
    );
    w.assert_consistent(6, "resets").await;
    w.hostnames(7);
    let mut log = w.fake.attempts();
    w.fake.clear_requests();
    w.fake.inject(Fault::reset().on(Method::POST, DNS_BATCH));
    w.b.converges("a reset batch, not applied").await;
    assert_eq!(
        w.fake.count(Method::POST, DNS_BATCH),
        2,
        "re-read, then sent once more"
    );
    w.assert_consistent(7, "a reset batch").await;

    // Answers slower than the timeout: a read is retried; a batch whose answer never came is looked
    // for in the zone and sent again — the late original then conflicts and applies nothing.
    w.hostnames(9);
    w.fake
        .inject(Fault::latency(Duration::from_millis(1500)).on(Method::GET, DNS_RECORDS));
    w.fake
        .inject(Fault::latency(Duration::from_millis(1200)).on(Method::POST, DNS_BATCH));
    w.b.converges("slow answers").await;
    // The late batch lands after the run: wait for it, then nothing is duplicated.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    w.assert_consistent(9, "slow answers").await;
    w.b.assert_empty_plan("after the late batch").await;

    // A batch failing midway: rejected as a whole, nothing applied, not resent; the next run converges.
    w.hostnames(11);
    let before = w.snapshot().await;
    w.fake.fail_next_batch_at(1);
    let e = w.b.fails("a batch failing midway").await;
    assert!(
        e.contains("2 changes starting at dns/h10.example.com") || e.contains("injected"),
        "{e}"
    );
    let after = w.snapshot().await;
    assert_eq!(
        (&after.0, &after.3),
        (&before.0, &before.3),
        "no record and no inventory entry from the failed batch"
    );
    w.b.converges("after the failed batch").await;
    w.assert_consistent(11, "after the failed batch").await;

    log.extend(w.fake.attempts());
    assert_retry_after_honoured("Cloudflare", &log);
    let (told, retried) = retry_after_count(&log);
    assert!(told >= 6 && retried >= 6, "{told} told, {retried} retried");
    let resets = log.iter().filter(|a| a.status == RESET).count();
    assert!(resets >= 4, "{resets} resets");
    eprintln!(
        "Cloudflare storms: {} requests, {told} answered with Retry-After and all {retried} retries waited for it, {resets} connections reset, {} 5xx",
        log.len(),
        log.iter().filter(|a| a.status >= 500).count()
    );
}

// ---------------------------------------------------------------------------------------------------
// Google Cloud

const INSTANCE: &str = "/compute/v1/projects/*/zones/*/instances/*";
const STOP: &str = "/compute/v1/projects/*/zones/*/instances/*/stop";
const START: &str = "/compute/v1/projects/*/zones/*/instances/*/start";
const SET_TYPE: &str = "/compute/v1/projects/*/zones/*/instances/*/setMachineType";
const WAIT: &str = "/compute/v1/projects/*/zones/*/operations/*/wait";
const KEYS: &str = "/v2/projects/*/locations/global/keys";
const KEY_STRING: &str = "/v2/projects/*/locations/global/keys/*/keyString";
const KEY_OPERATION: &str = "/v2/operations/*";

struct GWorld {
    b: Bench,
    fake: FakeGoogle,
}

impl GWorld {
    async fn start(ws: Workspace) -> GWorld {
        let b = Bench::start(ws).await;
        let fake = FakeGoogle::start().await;
        fake.set_durations(
            Duration::from_millis(100),
            Duration::from_millis(100),
            Duration::from_millis(50),
        );
        fake.set_key_operation_duration(Duration::from_millis(50));
        fake.add_instance(GCP_PROJECT, ZONE, "vm-a", "e2-standard-2", "RUNNING");
        let account = fake.service_account("supervisor@my-gcp-project.iam.gserviceaccount.com");
        b.set_secret(GCP_CREDS, &account.json).await;
        GWorld { b, fake }
    }

    /// `vm-a` at `machine_type`; project `shop` with keys `k0`…`k{n-1}`.
    fn declare(&self, machine_type: &str, keys: usize) {
        self.b.ws.write(
            "state/supervisor.yaml",
            &format!(
                "gcloud:\n  credentials: secret:{GCP_CREDS}\n  api_url: {}\n  monitoring_api_url: {}\n  apikeys_api_url: {}\n\
                 vms:\n  - name: vm-a\n    gcp_project: {GCP_PROJECT}\n    zone: {ZONE}\n    machine_type: {machine_type}\n",
                self.fake.compute_url(),
                self.fake.monitoring_url(),
                self.fake.apikeys_url(),
            ),
        );
        let mut text = "name: shop\n".to_string();
        if keys > 0 {
            text.push_str("api_keys:\n");
            for k in 0..keys {
                text.push_str(&format!(
                    "  - name: k{k}\n    gcp_project: {GCP_PROJECT}\n    restrict_apis: [maps-backend.googleapis.com]\n    store: project/shop/k{k}_key\n"
                ));
            }
        }
        self.b.ws.write("state/projects/shop.yaml", &text);
    }

    fn vm(&self) -> (String, String) {
        let i = self.fake.instance("vm-a");
        (i.machine_type, i.status)
    }

    /// One live key per declaration, its string in the vault; nothing else.
    async fn assert_keys(&self, n: usize, what: &str) {
        let live: Vec<gf::FakeKey> = self
            .fake
            .keys(GCP_PROJECT)
            .into_iter()
            .filter(|k| k.delete_time.is_none())
            .collect();
        let mut addresses: Vec<String> = live
            .iter()
            .map(|k| k.annotations["supervisor-address"].clone())
            .collect();
        addresses.sort();
        let expected: Vec<String> = (0..n).map(|k| format!("api_key/shop/k{k}")).collect();
        assert_eq!(addresses, expected, "{what}: one live key per declaration");
        for k in &live {
            let address = &k.annotations["supervisor-address"];
            let name = address.rsplit('/').next().unwrap();
            let stored = self
                .b
                .vault
                .get(
                    &SecretPath::parse(&format!("project/shop/{name}_key")).unwrap(),
                    &Actor::cli("storm"),
                )
                .await
                .unwrap_or_else(|e| panic!("{what}: the secret of {address}: {e}"));
            assert!(
                stored.value.expose() == k.key_string,
                "{what}: the vault holds another string than {address}'s key"
            );
        }
        let inventory: Vec<String> = self
            .b
            .managed("api_key")
            .await
            .into_iter()
            .map(|m| m.0)
            .collect();
        assert_eq!(inventory, expected, "{what}: API key inventory");
    }
}

async fn google_storms_converge_or_fail_cleanly(ws: Workspace) {
    use gf::Fault;
    let w = GWorld::start(ws).await;

    // 429 with Retry-After on the token endpoint, reads, mutations, operation waits, key creation and
    // the key string; a 503 with Retry-After on a read: waited out, then done.
    w.declare("e2-standard-4", 1);
    for (method, path) in [
        (Method::POST, "/token"),
        (Method::GET, INSTANCE),
        (Method::POST, STOP),
        (Method::POST, WAIT),
        (Method::POST, KEYS),
        (Method::GET, KEY_STRING),
    ] {
        w.fake.inject(Fault::rate_limited(1).on(method, path));
    }
    w.fake
        .inject(Fault::unavailable(1).on(Method::GET, INSTANCE));
    w.b.converges("429 storm").await;
    assert_eq!(
        w.fake.pending_faults(),
        0,
        "every fault was met: {:?}",
        w.fake.pending_fault_list()
    );
    assert_eq!(w.vm(), ("e2-standard-4".into(), "RUNNING".into()));
    w.assert_keys(1, "429 storm").await;

    // 5xx within the budget: reads retried; mutations carry a requestId, so a lost answer is resent
    // and applied once; a key creation's lost answer is looked up by its id, never created twice.
    w.declare("e2-standard-2", 2);
    w.fake
        .inject(Fault::status(503).on(Method::GET, INSTANCE).times(3));
    w.fake
        .inject(Fault::status_after_apply(503).on(Method::POST, SET_TYPE));
    w.fake
        .inject(Fault::status_after_apply(502).on(Method::POST, KEYS));
    w.b.converges("5xx within the budget").await;
    assert_eq!(
        w.fake.pending_faults(),
        0,
        "{:?}",
        w.fake.pending_fault_list()
    );
    assert_eq!(w.vm(), ("e2-standard-2".into(), "RUNNING".into()));
    assert_eq!(
        w.fake.operation_count("setMachineType", "vm-a"),
        2,
        "one per resize: the resent request was de-duplicated"
    );
    w.assert_keys(2, "5xx within the budget").await;

    // Beyond the budget: planning fails naming the call, nothing changes, the next run converges.
    w.declare("e2-standard-4", 2);
    w.fake
        .inject(Fault::status(500).on(Method::GET, INSTANCE).times(4));
    let e = w.b.fails("5xx beyond the budget").await;
    assert!(
        e.contains("Compute Engine API: GET /projects/")
            && e.contains("server error (HTTP 500) after 4 attempt(s)"),
        "{e}"
    );
    assert_eq!(w.vm(), ("e2-standard-2".into(), "RUNNING".into()));
    w.b.converges("after the 5xx storm").await;
    assert_eq!(w.vm(), ("e2-standard-4".into(), "RUNNING".into()));

    // Connection resets before and after processing: retried with the same requestId; a key
    // creation whose answer was reset is read by its id.
    w.declare("e2-standard-2", 3);
    w.fake.inject(Fault::reset().on(Method::GET, INSTANCE));
    w.fake
        .inject(Fault::reset_after_apply().on(Method::POST, STOP));
    w.fake.inject(Fault::reset().on(Method::POST, START));
    w.fake
        .inject(Fault::reset_after_apply().on(Method::POST, KEYS));
    w.b.converges("resets").await;
    assert_eq!(
        w.fake.pending_faults(),
        0,
        "{:?}",
        w.fake.pending_fault_list()
    );
    assert_eq!(w.vm(), ("e2-standard-2".into(), "RUNNING".into()));
    assert_eq!(
        w.fake.operation_count("stop", "vm-a"),
        4,
        "one stop per resize (this is the fourth)"
    );
    w.assert_keys(3, "resets").await;

    // Answers slower than the timeout: retried (a mutation with its requestId: applied once); an
    // operation poll reset or slow: polled again.
    w.declare("e2-standard-4", 4);
    w.fake.inject(Fault::reset().on(Method::GET, KEY_OPERATION));
    w.fake
        .inject(Fault::latency(Duration::from_millis(1500)).on(Method::GET, KEY_OPERATION));
    w.fake
        .inject(Fault::latency(Duration::from_millis(1500)).on(Method::GET, INSTANCE));
    w.fake
        .inject(Fault::latency(Duration::from_millis(1500)).on(Method::POST, STOP));
    w.b.converges("slow answers").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(w.vm(), ("e2-standard-4".into(), "RUNNING".into()));
    assert_eq!(
        w.fake.operation_count("stop", "vm-a"),
        5,
        "one stop per resize (this is the fifth)"
    );
    assert_eq!(
        w.fake.pending_faults(),
        0,
        "{:?}",
        w.fake.pending_fault_list()
    );
    w.assert_keys(4, "slow answers").await;
    w.b.assert_empty_plan("slow answers").await;

    // Removing keys under a storm: deleted keys lose their secrets, and no secret loses its key.
    w.declare("e2-standard-4", 1);
    w.fake.inject(
        Fault::status(503)
            .on(Method::DELETE, "/v2/projects/*/locations/global/keys/*")
            .times(2),
    );
    w.b.converges("deleting keys").await;
    w.assert_keys(1, "deleting keys").await;
    for k in [1, 2, 3] {
        assert!(
            w.b.store
                .get_secret(&format!("project/shop/k{k}_key"))
                .await
                .unwrap()
                .is_none(),
            "the secret of a deleted key is gone"
        );
    }

    let log = w.fake.attempts();
    assert_retry_after_honoured("Google Cloud", &log);
    let (told, retried) = retry_after_count(&log);
    assert!(told >= 7 && retried >= 7, "{told} told, {retried} retried");
    eprintln!(
        "Google storms: {} requests, {told} answered with Retry-After and all {retried} retries waited for it, {} connections reset, {} 5xx",
        log.len(),
        log.iter().filter(|a| a.status == RESET).count(),
        log.iter().filter(|a| a.status >= 500).count()
    );
}

async fn operations_that_never_finish_fail_clearly_and_the_next_run_finishes_them(ws: Workspace) {
    let w = GWorld::start(ws).await;
    w.declare("e2-standard-2", 0);
    w.b.converges("nothing to do").await;

    // A stop that never finishes: the wait is bounded and says what it waited for; the resize is
    // remembered, and once the operation is done the next run finishes it — one stop, no second.
    w.declare("e2-standard-4", 0);
    w.fake.set_durations(
        Duration::from_secs(3600),
        Duration::from_millis(100),
        Duration::from_millis(50),
    );
    let started = Instant::now();
    let e = w.b.fails("a stop that never finishes").await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        e.contains("vm/vm-a")
            && e.contains("(stop of vm-a) was not done after")
            && e.contains("it may still finish"),
        "{e}"
    );
    assert_eq!(w.vm(), ("e2-standard-2".into(), "STOPPING".into()));
    let record = &w.b.managed("vm").await[0].2;
    assert_ne!(record["resize"], Value::Null, "the resize is remembered");
    w.fake.set_durations(
        Duration::from_millis(100),
        Duration::from_millis(100),
        Duration::from_millis(50),
    );
    w.fake.finish_operations();
    w.b.converges("after the stop finished").await;
    assert_eq!(w.vm(), ("e2-standard-4".into(), "RUNNING".into()));
    assert_eq!(w.fake.operation_count("stop", "vm-a"), 1);

    // A key creation that never finishes: the entry stays `creating`, no secret is written; once the
    // operation is done the next run stores the key's string — one key, never a second.
    w.declare("e2-standard-4", 1);
    w.fake.set_key_operation_duration(Duration::from_secs(3600));
    let e = w.b.fails("a key creation that never finishes").await;
    assert!(
        e.contains("api_key/shop/k0") && e.contains("was not done after"),
        "{e}"
    );
    assert!(
        w.b.store
            .get_secret("project/shop/k0_key")
            .await
            .unwrap()
            .is_none()
    );
    w.fake.set_key_operation_duration(Duration::from_millis(50));
    w.fake.finish_operations();
    w.b.converges("after the key operation finished").await;
    w.assert_keys(1, "after the key operation finished").await;
    assert_eq!(w.fake.keys(GCP_PROJECT).len(), 1, "never a second key");
}

// ---------------------------------------------------------------------------------------------------
// Embeddings

fn embeddings_client(fake: &FakeEmbeddings) -> EmbeddingsClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    EmbeddingsClient::new(
        &fake.url,
        "text-embedding-3-small",
        Some(SecretString::from(emb::KEY.to_string())),
        None,
        storm_policy(),
    )
    .unwrap()
}

#[tokio::test]
async fn embeddings_storms_retry_within_the_budget_and_honour_retry_after() {
    use emb::Fault;
    let fake = FakeEmbeddings::start(&["text-embedding-3-small"]).await;
    let c = embeddings_client(&fake);
    let input = vec!["alpha beta".to_string(), "gamma".into()];
    let expected: Vec<Vec<f32>> = input
        .iter()
        .map(|t| emb::vector(t, emb::DIMENSIONS))
        .collect();

    // 429 and 503 with Retry-After, a reset, a 5xx, an answer slower than the timeout: four
    // attempts are enough for each, one fault per attempt.
    for (storm, faults) in [
        ("429", vec![Fault::RateLimited(1), Fault::RateLimited(1)]),
        ("503", vec![Fault::Unavailable(1)]),
        ("reset", vec![Fault::Reset, Fault::Reset]),
        (
            "5xx",
            vec![Fault::Status(502), Fault::Status(500), Fault::Status(503)],
        ),
        (
            "slow",
            vec![Fault::Latency(Duration::from_millis(1500)), Fault::Reset],
        ),
    ] {
        fake.inject(&faults);
        let got = c
            .embed(&input)
            .await
            .unwrap_or_else(|e| panic!("{storm}: {e}"));
        assert_eq!(got, expected, "{storm}");
        assert_eq!(fake.pending_faults(), 0, "{storm}");
    }

    // Beyond the budget: a clear error naming the call, never the key.
    fake.inject(&[Fault::Status(500); 4]);
    let e = c.embed(&input).await.unwrap_err();
    assert!(
        matches!(
            e,
            ApiError::Server {
                status: 500,
                attempts: 4,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().starts_with(
            "embeddings API: POST /embeddings: server error (HTTP 500) after 4 attempt(s)"
        ),
        "{e}"
    );
    fake.inject(&[Fault::Reset; 4]);
    let e = c.embed(&input).await.unwrap_err().to_string();
    assert!(
        e.starts_with("embeddings API: POST /embeddings:") && e.contains("after 4 attempt(s)"),
        "{e}"
    );
    let log = fake.attempts();
    assert_retry_after_honoured("embeddings", &log);
    let (told, retried) = retry_after_count(&log);
    assert_eq!((told, retried), (3, 3));

    // A Retry-After longer than the policy waits is returned to the caller, not ignored and not
    // waited out: for 429 and for 503. (The test calls again at once: a new call, not a retry.)
    fake.inject(&[Fault::RateLimited(30)]);
    let e = c.embed(&input).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(30)), "{e}");
    fake.inject(&[Fault::Unavailable(30)]);
    let e = c.embed(&input).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(30)), "{e}");
    assert!(e.to_string().contains("retry after 30 s"), "{e}");
    assert!(!e.to_string().contains(emb::KEY));
    assert_eq!(
        fake.attempts().len(),
        log.len() + 2,
        "each of the two calls ended at its first answer"
    );
}

async fn an_embedding_batch_failing_midway_writes_no_document_by_half(ws: Workspace) {
    use emb::Fault;
    let fake = FakeEmbeddings::start(&["text-embedding-3-small"]).await;
    let doc = |i: usize| {
        ws.write(
            &format!("docs/d{i}.md"),
            &format!("# Part {i}\n\nAlpha {i} text.\n\n# More {i}\n\nBeta {i} words.\n"),
        )
    };
    ws.write(
        "supervisor.toml",
        &format!(
            "[knowledge.endpoint]\nurl = \"{}\"\nmodel = \"text-embedding-3-small\"\napi_key = \"secret:meta/openai/api_key\"\nbatch_size = 2\n",
            fake.url
        ),
    );
    let run = |args: &[&str]| {
        ws.cmd()
            .env("SECRETS_ENCRYPTION_KEY", KEY)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let listed = || {
        let out = run(&["knowledge", "list", "--json"]);
        expect_code(&out, 0);
        let l: Value = serde_json::from_str(&stdout(&out)).unwrap();
        let s = &l["sources"][0];
        (s["documents"].as_i64(), s["chunks"].as_i64())
    };
    let key_file = ws.path().join("openai.key");
    std::fs::write(&key_file, emb::KEY).unwrap();
    expect_code(
        &run(&[
            "secrets",
            "set",
            "meta/openai/api_key",
            "--value-file",
            key_file.to_str().unwrap(),
        ]),
        0,
    );
    for i in 0..2 {
        doc(i);
    }
    expect_code(&run(&["knowledge", "index", "docs"]), 0);
    assert_eq!(listed(), (Some(2), Some(4)));

    // Four new documents, eight chunks in batches of two: the third call is rejected (400, not
    // retried) after two succeeded. The run fails naming the call; no new document is stored, not
    // even one whose vectors had arrived.
    for i in 2..6 {
        doc(i);
    }
    fake.inject(&[Fault::Pass, Fault::Pass, Fault::Status(400)]);
    let out = run(&["knowledge", "index", "docs", "--json"]);
    expect_code(&out, 1);
    let e = stderr(&out);
    assert!(
        e.contains("embeddings API: POST /embeddings: rejected (HTTP 400)"),
        "{e}"
    );
    assert!(!e.contains(emb::KEY) && !stdout(&out).contains(emb::KEY));
    assert_eq!(listed(), (Some(2), Some(4)), "nothing of the failed batch");

    // The next run embeds and stores the rest, each document whole; then nothing is left to do.
    let out = run(&["knowledge", "index", "docs", "--json"]);
    expect_code(&out, 0);
    let r: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (r["added"].as_i64(), r["chunks_embedded"].as_i64()),
        (Some(4), Some(8)),
        "{r}"
    );
    assert_eq!(listed(), (Some(6), Some(12)));
    let again: Value =
        serde_json::from_str(&stdout(&run(&["knowledge", "index", "docs", "--json"]))).unwrap();
    assert_eq!(again["chunks_embedded"].as_i64(), Some(0), "{again}");
}
