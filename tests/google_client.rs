//! The Google Cloud clients (OAuth, Compute Engine, Monitoring, API Keys, operations) against the
//! stateful fake: contracts, the HTTP policy (retries, 429, requestId de-duplication) and faults.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use chrono::Utc;
use secrecy::ExposeSecret;
use supervisor::clients::HttpPolicy;
use supervisor::clients::google::apikeys::{ApiKeysClient, V2ApiTarget, V2Key, V2Restrictions};
use supervisor::clients::google::auth::{ServiceAccountKey, TokenSource};
use supervisor::clients::google::compute::ComputeClient;
use supervisor::clients::google::monitoring::{MonitoringClient, TimeSeriesQuery};
use supervisor::clients::google::operations::{
    OperationError, WaitPolicy, wait_key_operation, wait_zone_operation,
};
use supervisor::clients::google::{GoogleError, short_name};
use supervisor::clients::http::RetryPolicy;
use support::fake_google::{FakeGoogle, Fault, project_number};

const PROJECT: &str = "my-gcp-project";
const ZONE: &str = "us-central1-a";

struct Google {
    fake: FakeGoogle,
    auth: Arc<TokenSource>,
}

fn policy() -> HttpPolicy {
    HttpPolicy {
        retry: RetryPolicy {
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
        ..HttpPolicy::default()
    }
}

fn wait() -> WaitPolicy {
    WaitPolicy {
        timeout: Duration::from_secs(20),
        poll_interval: Duration::from_millis(20),
    }
}

impl Google {
    async fn start() -> Google {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fake = FakeGoogle::start().await;
        let account = fake.service_account("supervisor@my-gcp-project.iam.gserviceaccount.com");
        let key = ServiceAccountKey::from_json(&account.json).unwrap();
        let auth = Arc::new(TokenSource::new(key, policy()).unwrap());
        Google { fake, auth }
    }

    fn compute(&self) -> ComputeClient {
        ComputeClient::new(&self.fake.compute_url(), self.auth.clone(), policy()).unwrap()
    }

    fn monitoring(&self) -> MonitoringClient {
        MonitoringClient::new(&self.fake.monitoring_url(), self.auth.clone(), policy()).unwrap()
    }

    fn keys(&self) -> ApiKeysClient {
        ApiKeysClient::new(&self.fake.apikeys_url(), self.auth.clone(), policy()).unwrap()
    }

    fn token_requests(&self) -> usize {
        self.fake.count(Method::POST, "/token")
    }
}

fn request_id(n: u8) -> String {
    format!(
        "6f1d2c3b-4a59-4e68-9d7c-{:012x}",
        0xabcdef000000u64 + u64::from(n)
    )
}

#[tokio::test]
async fn tokens_are_signed_verified_cached_and_renewed_after_a_401() {
    let g = Google::start().await;
    g.fake
        .add_instance(PROJECT, ZONE, "host-1", "e2-standard-4", "RUNNING");
    let c = g.compute();
    for _ in 0..3 {
        c.get_instance(PROJECT, ZONE, "host-1").await.unwrap();
    }
    assert_eq!(g.token_requests(), 1, "one token for three calls");
    // A revoked token: the API answers 401, the client fetches a new token and succeeds.
    g.fake.revoke_tokens();
    c.get_instance(PROJECT, ZONE, "host-1").await.unwrap();
    assert_eq!(g.token_requests(), 2);
    // A short-lived token is renewed before it expires (a quarter of its life before).
    g.fake.set_token_lifetime(2);
    g.auth.invalidate().await;
    c.get_instance(PROJECT, ZONE, "host-1").await.unwrap();
    assert_eq!(g.token_requests(), 3);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    c.get_instance(PROJECT, ZONE, "host-1").await.unwrap();
    assert_eq!(g.token_requests(), 4, "renewed within the margin");
    // Another token source for the same account (a new connection in the same process) shares the
    // token.
    let again = ServiceAccountKey::from_json(
        &g.fake
            .service_account("supervisor@my-gcp-project.iam.gserviceaccount.com")
            .json,
    )
    .unwrap();
    let other = Arc::new(TokenSource::new(again, policy()).unwrap());
    ComputeClient::new(&g.fake.compute_url(), other, policy())
        .unwrap()
        .get_instance(PROJECT, ZONE, "host-1")
        .await
        .unwrap();
    assert_eq!(g.token_requests(), 4, "shared within the process");
}

#[tokio::test]
async fn an_unknown_service_account_is_refused_with_the_endpoints_reason() {
    let g = Google::start().await;
    let stranger = g
        .fake
        .unknown_service_account("stranger@elsewhere.iam.gserviceaccount.com");
    let auth = Arc::new(
        TokenSource::new(
            ServiceAccountKey::from_json(&stranger.json).unwrap(),
            policy(),
        )
        .unwrap(),
    );
    let c = ComputeClient::new(&g.fake.compute_url(), auth, policy()).unwrap();
    let e = c
        .get_instance(PROJECT, ZONE, "host-1")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "Google OAuth token endpoint: POST /token: rejected (HTTP 400): [0] invalid_grant: Invalid grant: account not found"
    );
}

#[tokio::test]
async fn instances_are_read_with_their_addresses_disks_and_machine_type() {
    let g = Google::start().await;
    let id = g
        .fake
        .add_instance(PROJECT, ZONE, "host-1", "e2-standard-4", "RUNNING");
    g.fake.add_disk("host-1", "data", 200);
    let c = g.compute();
    let i = c.get_instance(PROJECT, ZONE, "host-1").await.unwrap();
    assert_eq!(i.id, id);
    assert_eq!(i.status, "RUNNING");
    assert_eq!(i.machine_type_name(), "e2-standard-4");
    assert_eq!(i.zone_name(), ZONE);
    let nic = &i.network_interfaces[0];
    assert!(nic.network_ip.as_deref().unwrap().starts_with("10.128.0."));
    assert!(nic.access_configs[0].nat_ip.is_some());
    let disks: Vec<(Option<&str>, Option<&str>, bool)> = i
        .disks
        .iter()
        .map(|d| (d.device_name.as_deref(), d.disk_size_gb.as_deref(), d.boot))
        .collect();
    assert_eq!(
        disks,
        vec![
            (Some("host-1"), Some("50"), true),
            (Some("data"), Some("200"), false)
        ]
    );
    let t = c
        .get_machine_type(PROJECT, ZONE, "e2-standard-8")
        .await
        .unwrap();
    assert_eq!((t.guest_cpus, t.memory_mb), (8, 32768));
    let e = c.get_instance(PROJECT, ZONE, "nope").await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn a_resize_goes_stop_set_start_and_set_on_a_running_vm_is_refused() {
    let g = Google::start().await;
    g.fake
        .add_instance(PROJECT, ZONE, "host-1", "e2-standard-4", "RUNNING");
    let c = g.compute();
    let e = c
        .set_machine_type(PROJECT, ZONE, "host-1", "e2-standard-8", &request_id(1))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(
        e.to_string()
            .contains("Invalid resource usage: 'Instance should be in the STOPPED state.'"),
        "{e}"
    );

    let op = c
        .stop(PROJECT, ZONE, "host-1", &request_id(2))
        .await
        .unwrap();
    assert_eq!(op.operation_type.as_deref(), Some("stop"));
    assert_eq!(
        op.client_operation_id.as_deref(),
        Some(request_id(2).as_str())
    );
    assert_eq!(
        c.get_instance(PROJECT, ZONE, "host-1")
            .await
            .unwrap()
            .status,
        "STOPPING"
    );
    let done = wait_zone_operation(&c, PROJECT, ZONE, op, wait())
        .await
        .unwrap();
    assert!(done.is_done());
    assert_eq!(g.fake.instance("host-1").status, "TERMINATED");

    let op = c
        .set_machine_type(PROJECT, ZONE, "host-1", "e2-standard-8", &request_id(3))
        .await
        .unwrap();
    wait_zone_operation(&c, PROJECT, ZONE, op, wait())
        .await
        .unwrap();
    let op = c
        .start(PROJECT, ZONE, "host-1", &request_id(4))
        .await
        .unwrap();
    wait_zone_operation(&c, PROJECT, ZONE, op, wait())
        .await
        .unwrap();
    let i = g.fake.instance("host-1");
    assert_eq!(
        (i.status.as_str(), i.machine_type.as_str()),
        ("RUNNING", "e2-standard-8")
    );
    // `wait` was used, not a polling loop of GETs.
    assert_eq!(
        g.fake
            .count(Method::GET, "/compute/v1/projects/*/zones/*/operations/*"),
        0
    );
    assert!(
        g.fake.count(
            Method::POST,
            "/compute/v1/projects/*/zones/*/operations/*/wait"
        ) >= 3
    );
    let e = c
        .set_machine_type(PROJECT, ZONE, "host-1", "e2-gigantic-3", &request_id(5))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not exist in zone"), "{e}");
}

#[tokio::test]
async fn a_lost_answer_is_resent_with_the_same_request_id_and_applied_once() {
    let g = Google::start().await;
    g.fake
        .add_instance(PROJECT, ZONE, "host-1", "e2-standard-4", "RUNNING");
    g.fake.inject(Fault::status_after_apply(503).on(
        Method::POST,
        "/compute/v1/projects/*/zones/*/instances/*/stop",
    ));
    let c = g.compute();
    let op = c
        .stop(PROJECT, ZONE, "host-1", &request_id(7))
        .await
        .unwrap();
    let requests: Vec<String> = g
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/stop"))
        .map(|r| format!("{} {}", r.status, r.query))
        .collect();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests[0].starts_with("503 requestId="), "{requests:?}");
    assert_eq!(
        requests[0][4..],
        requests[1][4..],
        "the same requestId both times"
    );
    // Both answers name one operation: the second request was recognised, not executed.
    let done = wait_zone_operation(&c, PROJECT, ZONE, op.clone(), wait())
        .await
        .unwrap();
    assert_eq!(done.name, op.name);
    assert_eq!(g.fake.instance("host-1").status, "TERMINATED");
}

#[tokio::test]
async fn rate_limits_are_waited_out_and_server_errors_retried_on_reads() {
    let g = Google::start().await;
    g.fake
        .add_instance(PROJECT, ZONE, "host-1", "e2-standard-4", "RUNNING");
    g.fake.inject(
        Fault::rate_limited(1).on(Method::GET, "/compute/v1/projects/*/zones/*/instances/*"),
    );
    g.fake
        .inject(Fault::status(500).on(Method::GET, "/compute/v1/projects/*/zones/*/instances/*"));
    let c = g.compute();
    let started = Instant::now();
    c.get_instance(PROJECT, ZONE, "host-1").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    let statuses: Vec<u16> = g
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/host-1"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![429, 500, 200]);
}

#[tokio::test]
async fn an_operation_done_with_errors_fails_and_waits_are_bounded() {
    let g = Google::start().await;
    g.fake
        .add_instance(PROJECT, ZONE, "host-1", "e2-standard-8", "TERMINATED");
    g.fake.fail_starts(
        "host-1",
        Some("e2-standard-8"),
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        1,
    );
    let c = g.compute();
    let op = c
        .start(PROJECT, ZONE, "host-1", &request_id(1))
        .await
        .unwrap();
    let e = wait_zone_operation(&c, PROJECT, ZONE, op, wait())
        .await
        .unwrap_err();
    let GoogleError::Operation(oe) = &e else {
        panic!("{e}")
    };
    assert!(oe.is_capacity_or_quota(), "{e}");
    assert_eq!(oe.codes(), vec!["ZONE_RESOURCE_POOL_EXHAUSTED"]);
    assert!(
        e.to_string()
            .starts_with("Compute Engine API: operation operation-"),
        "{e}"
    );
    assert!(e.to_string().contains("(start of host-1) failed: [ZONE_RESOURCE_POOL_EXHAUSTED] The zone 'projects/my-gcp-project/zones/us-central1-a' does not have enough resources"), "{e}");
    assert_eq!(g.fake.instance("host-1").status, "TERMINATED");

    g.fake
        .fail_next_operation("setMachineType", "INTERNAL_ERROR", "backend hiccup");
    let op = c
        .set_machine_type(PROJECT, ZONE, "host-1", "e2-standard-4", &request_id(2))
        .await
        .unwrap();
    let e = wait_zone_operation(&c, PROJECT, ZONE, op, wait())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("[INTERNAL_ERROR] backend hiccup"),
        "{e}"
    );
    assert_eq!(
        g.fake.instance("host-1").machine_type,
        "e2-standard-8",
        "nothing changed"
    );

    // A slow start with a short bound: timed out, named, and the wait returned on time.
    g.fake.set_durations(
        Duration::from_secs(5),
        Duration::from_secs(5),
        Duration::from_secs(5),
    );
    g.fake.set_wait_max(Duration::from_millis(300));
    let op = c
        .start(PROJECT, ZONE, "host-1", &request_id(3))
        .await
        .unwrap();
    let started = Instant::now();
    let e = wait_zone_operation(
        &c,
        PROJECT,
        ZONE,
        op,
        WaitPolicy {
            timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(50),
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, GoogleError::Operation(OperationError::TimedOut { .. })),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        e.to_string()
            .contains("(start of host-1) was not done after 1 s"),
        "{e}"
    );
}

#[tokio::test]
async fn time_series_are_read_across_pages_and_aligned() {
    let g = Google::start().await;
    let id = g
        .fake
        .add_instance(PROJECT, ZONE, "host-1", "e2-standard-4", "RUNNING");
    let now = Utc::now();
    let at = |mins: i64| now - chrono::Duration::minutes(mins);
    g.fake.add_points(
        PROJECT,
        &id,
        "compute.googleapis.com/instance/cpu/utilization",
        &[],
        &[(at(1), 0.5), (at(2), 0.25), (at(3), 0.75)],
    );
    for (device, used) in [("sda1", 40.0), ("sdb", 90.0)] {
        g.fake.add_points(
            PROJECT,
            &id,
            "agent.googleapis.com/disk/percent_used",
            &[("device", device), ("state", "used")],
            &[(at(1), used)],
        );
    }
    g.fake.set_series_page_size(1);
    let m = g.monitoring();
    let q = |metric: &str, aligned: bool| TimeSeriesQuery {
        filter: format!("metric.type = \"{metric}\" AND resource.labels.instance_id = \"{id}\""),
        start: now - chrono::Duration::minutes(60),
        end: now,
        alignment_period_secs: aligned.then_some(3600),
        per_series_aligner: aligned.then(|| "ALIGN_MEAN".to_string()),
    };
    let cpu = m
        .list_time_series(
            PROJECT,
            &q("compute.googleapis.com/instance/cpu/utilization", false),
        )
        .await
        .unwrap();
    let values: Vec<f64> = cpu[0]
        .points
        .iter()
        .filter_map(|p| p.value.as_f64())
        .collect();
    assert_eq!(values, vec![0.5, 0.25, 0.75], "newest first");
    let mean = m
        .list_time_series(
            PROJECT,
            &q("compute.googleapis.com/instance/cpu/utilization", true),
        )
        .await
        .unwrap();
    assert_eq!(mean[0].points.len(), 1);
    assert_eq!(mean[0].points[0].value.as_f64(), Some(0.5));
    let disks = m
        .list_time_series(PROJECT, &q("agent.googleapis.com/disk/percent_used", false))
        .await
        .unwrap();
    let devices: Vec<&str> = disks
        .iter()
        .map(|s| s.metric.labels["device"].as_str())
        .collect();
    assert_eq!(devices, vec!["sda1", "sdb"], "two pages of one series each");
    assert_eq!(g.fake.count(Method::GET, "/v3/projects/*/timeSeries"), 4);
    let memory = m
        .list_time_series(
            PROJECT,
            &q("agent.googleapis.com/memory/percent_used", false),
        )
        .await
        .unwrap();
    assert!(memory.is_empty(), "no agent, no memory series");
}

#[tokio::test]
async fn api_keys_are_created_read_and_deleted_and_the_key_string_stays_secret() {
    let g = Google::start().await;
    let k = g.keys();
    let wanted = V2Key {
        display_name: Some("shop/maps".into()),
        restrictions: Some(V2Restrictions {
            api_targets: vec![V2ApiTarget {
                service: "maps-backend.googleapis.com".into(),
                methods: vec![],
            }],
            ..V2Restrictions::default()
        }),
        annotations: [("managed-by".to_string(), "supervisor".to_string())].into(),
        ..V2Key::default()
    };
    let op = k.create_key(PROJECT, "sv-maps-1", &wanted).await.unwrap();
    assert!(!op.done);
    let created = wait_key_operation(&k, op, "create key sv-maps-1", wait())
        .await
        .unwrap()
        .unwrap();
    let name = format!(
        "projects/{}/locations/global/keys/sv-maps-1",
        project_number(PROJECT)
    );
    assert_eq!(created.name, name);
    assert_eq!(created.key_id(), "sv-maps-1");
    assert_eq!(created.api_targets(), vec!["maps-backend.googleapis.com"]);
    let fake_key = g.fake.keys(PROJECT).remove(0);
    // The operation's answer carried the key string; nothing the client returns shows it.
    assert!(!format!("{created:?}").contains(&fake_key.key_string));
    let s = k.key_string(&name).await.unwrap();
    assert_eq!(s.expose_secret(), fake_key.key_string);
    assert!(!format!("{s:?}").contains(&fake_key.key_string));

    let e = k
        .create_key(PROJECT, "sv-maps-1", &wanted)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    let listed = k.list_keys(PROJECT, false).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        k.get_key(&name).await.unwrap().display_name.as_deref(),
        Some("shop/maps")
    );

    let op = k.delete_key(&name).await.unwrap();
    wait_key_operation(&k, op, "delete key", wait())
        .await
        .unwrap();
    assert!(k.list_keys(PROJECT, false).await.unwrap().is_empty());
    let with_deleted = k.list_keys(PROJECT, true).await.unwrap();
    assert!(with_deleted[0].delete_time.is_some());
    assert!(k.delete_key(&name).await.unwrap_err().is_not_found());

    g.fake
        .fail_next_key_operation(8, "Quota exceeded for API keys");
    let op = k.create_key(PROJECT, "sv-maps-2", &wanted).await.unwrap();
    let e = wait_key_operation(&k, op, "create key sv-maps-2", wait())
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .ends_with("(create key sv-maps-2) failed: [8] Quota exceeded for API keys"),
        "{e}"
    );
    assert_eq!(short_name(&name), "sv-maps-1");
}
