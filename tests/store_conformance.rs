//! The store conformance suite: every test here runs against SQLite and against PostgreSQL, through
//! the same `Store` trait object. A backend that behaves differently fails here.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::json;
use supervisor::store::*;
use support::db::TestDb;

conformance!(
    opens_migrated_with_vectors_and_text_search,
    secrets_round_trip_keeps_creation_and_access_stats,
    secrets_filter_by_scope_project_and_prefix,
    access_is_logged_and_counted,
    rotation_replaces_all_ciphertexts_or_none,
    key_checks_are_one_per_version_and_reset_only_when_empty,
    large_access_batches_count_per_path,
    import_inserts_all_or_nothing,
    sample_is_newest_first,
    port_blocks_never_overlap,
    a_block_moves_in_one_statement_or_not_at_all,
    a_port_is_allocated_once_and_a_service_holds_one_port,
    concurrent_allocations_of_one_port_admit_exactly_one,
    allocations_move_and_are_released,
    shared_ports_are_unique,
    inventory_records_managed_objects,
    journal_tracks_runs_and_interruptions,
    apply_lock_is_exclusive_and_released,
    leadership_has_one_holder,
    tokens_are_found_by_hash_until_revoked,
);

fn secret(path: &str, scope: &str, project: Option<&str>, ct: &[u8]) -> SecretRow {
    let now = Utc::now();
    SecretRow {
        path: path.into(),
        scope: scope.into(),
        project: project.map(Into::into),
        service: None,
        description: Some("test".into()),
        ciphertext: ct.to_vec(),
        key_version: 1,
        created_at: now,
        updated_at: now,
        last_accessed_at: None,
        access_count: 0,
        expires_at: None,
        rotation_required: false,
    }
}

async fn opens_migrated_with_vectors_and_text_search(db: &TestDb) {
    let info = db.store.info().await.unwrap();
    assert_eq!(info.migrations_applied.len(), info.migrations_known);
    assert!(info.migrations_known >= 1);
    assert!(
        info.vector_extension.is_some(),
        "vector extension missing: {info:?}"
    );
    assert_ne!(info.full_text_search, "missing");
    // Opening again (migrations already applied) is a no-op.
    let again = open(&db.location).await.unwrap();
    assert_eq!(
        again.info().await.unwrap().migrations_applied.len(),
        info.migrations_known
    );
}

async fn secrets_round_trip_keeps_creation_and_access_stats(db: &TestDb) {
    let s = &db.store;
    let mut row = secret(
        "project/shop/stripe",
        "project",
        Some("shop"),
        b"\x01cipher-one",
    );
    row.created_at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    row.expires_at = Some(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
    s.put_secret(&row).await.unwrap();
    s.record_access(&[AccessEvent {
        path: row.path.clone(),
        action: "read".into(),
        actor: "cli:test".into(),
        outcome: "ok".into(),
        at: Utc::now(),
    }])
    .await
    .unwrap();

    let mut updated = secret(
        "project/shop/stripe",
        "project",
        Some("shop"),
        b"\x01cipher-two",
    );
    updated.description = Some("rotated".into());
    s.put_secret(&updated).await.unwrap();

    let got = s.get_secret("project/shop/stripe").await.unwrap().unwrap();
    assert_eq!(got.ciphertext, b"\x01cipher-two");
    assert_eq!(got.description.as_deref(), Some("rotated"));
    assert_eq!(
        got.created_at, row.created_at,
        "creation time survives an update"
    );
    assert_eq!(got.access_count, 1, "access statistics survive an update");
    assert!(got.last_accessed_at.is_some());
    assert_eq!(got.expires_at, None, "expiry follows the latest write");

    assert!(s.get_secret("project/shop/other").await.unwrap().is_none());
    assert!(s.delete_secret("project/shop/stripe").await.unwrap());
    assert!(!s.delete_secret("project/shop/stripe").await.unwrap());
    assert!(s.get_secret("project/shop/stripe").await.unwrap().is_none());
}

async fn secrets_filter_by_scope_project_and_prefix(db: &TestDb) {
    let s = &db.store;
    s.put_secret(&secret("meta/cloudflare/api_token", "meta", None, b"a"))
        .await
        .unwrap();
    s.put_secret(&secret("project/shop/a", "project", Some("shop"), b"b"))
        .await
        .unwrap();
    s.put_secret(&secret("project/shop_x/a", "project", Some("shop_x"), b"c"))
        .await
        .unwrap();
    let mut svc = secret("service/shop/api/key", "service", Some("shop"), b"d");
    svc.service = Some("api".into());
    s.put_secret(&svc).await.unwrap();

    let paths = |v: Vec<SecretMeta>| v.into_iter().map(|m| m.path).collect::<Vec<_>>();
    let all = paths(s.list_secrets(&SecretFilter::default()).await.unwrap());
    assert_eq!(
        all,
        [
            "meta/cloudflare/api_token",
            "project/shop/a",
            "project/shop_x/a",
            "service/shop/api/key"
        ]
    );
    let shop = paths(
        s.list_secrets(&SecretFilter {
            project: Some("shop".into()),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    assert_eq!(shop, ["project/shop/a", "service/shop/api/key"]);
    let meta = paths(
        s.list_secrets(&SecretFilter {
            scope: Some(SecretScope::Meta),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    assert_eq!(meta, ["meta/cloudflare/api_token"]);
    // A prefix is literal: `_` and `%` are not wildcards.
    let prefix = paths(
        s.list_secrets(&SecretFilter {
            path_prefix: Some("project/shop_".into()),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    assert_eq!(prefix, ["project/shop_x/a"]);
}

async fn access_is_logged_and_counted(db: &TestDb) {
    let s = &db.store;
    s.put_secret(&secret("meta/x", "meta", None, b"a"))
        .await
        .unwrap();
    let at = |secs: i64| Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap();
    let ev = |action: &str, outcome: &str, secs: i64| AccessEvent {
        path: "meta/x".into(),
        action: action.into(),
        actor: "mcp:token-1".into(),
        outcome: outcome.into(),
        at: at(secs),
    };
    s.record_access(&[
        ev("read", "ok", 1),
        ev("read", "ok", 2),
        ev("read", "denied", 3),
        ev("write", "ok", 4),
    ])
    .await
    .unwrap();
    let row = s.get_secret("meta/x").await.unwrap().unwrap();
    assert_eq!(row.access_count, 2, "only successful reads count");
    assert_eq!(row.last_accessed_at, Some(at(2)));
    let log = s.access_log(Some("meta/x"), 10).await.unwrap();
    let seen: Vec<_> = log
        .iter()
        .map(|e| (e.action.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("write", "ok"),
            ("read", "denied"),
            ("read", "ok"),
            ("read", "ok")
        ]
    );
    assert_eq!(s.access_log(None, 2).await.unwrap().len(), 2);
    assert!(
        s.access_log(Some("meta/none"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn rotation_replaces_all_ciphertexts_or_none(db: &TestDb) {
    let s = &db.store;
    s.put_secret(&secret("meta/a", "meta", None, b"old-a"))
        .await
        .unwrap();
    s.put_secret(&secret("meta/b", "meta", None, b"old-b"))
        .await
        .unwrap();
    assert!(s.insert_key_check(&check(1, b"check-1")).await.unwrap());
    let err = s
        .replace_ciphertexts(
            &[
                ("meta/a".into(), b"new-a".to_vec(), 2),
                ("meta/missing".into(), b"new-x".to_vec(), 2),
            ],
            &check(2, b"check-2"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("meta/missing"), "{err}");
    assert_eq!(
        s.get_secret("meta/a").await.unwrap().unwrap().ciphertext,
        b"old-a",
        "nothing half-applied"
    );
    assert_eq!(
        versions(&s.key_checks().await.unwrap()),
        [(1, b"check-1".to_vec())],
        "the key check is replaced in the same transaction, or not at all"
    );

    s.replace_ciphertexts(
        &[
            ("meta/a".into(), b"new-a".to_vec(), 2),
            ("meta/b".into(), b"new-b".to_vec(), 2),
        ],
        &check(2, b"check-2"),
    )
    .await
    .unwrap();
    assert_eq!(
        versions(&s.key_checks().await.unwrap()),
        [(2, b"check-2".to_vec())]
    );
    let all = s.all_secrets().await.unwrap();
    assert_eq!(
        all.iter()
            .map(|r| (r.ciphertext.clone(), r.key_version))
            .collect::<Vec<_>>(),
        [(b"new-a".to_vec(), 2), (b"new-b".to_vec(), 2)]
    );
}

fn check(version: i32, value: &[u8]) -> KeyCheck {
    KeyCheck {
        key_version: version,
        check_value: value.to_vec(),
        created_at: Utc::now(),
    }
}

fn versions(checks: &[KeyCheck]) -> Vec<(i32, Vec<u8>)> {
    checks
        .iter()
        .map(|c| (c.key_version, c.check_value.clone()))
        .collect()
}

async fn key_checks_are_one_per_version_and_reset_only_when_empty(db: &TestDb) {
    let s = &db.store;
    assert!(s.key_checks().await.unwrap().is_empty());
    assert!(s.insert_key_check(&check(1, b"first")).await.unwrap());
    // A second check for the same version (another process's key) is not recorded.
    assert!(!s.insert_key_check(&check(1, b"second")).await.unwrap());
    assert_eq!(
        versions(&s.key_checks().await.unwrap()),
        [(1, b"first".to_vec())]
    );
    // Resetting is for an empty vault only.
    s.put_secret(&secret("meta/a", "meta", None, b"x"))
        .await
        .unwrap();
    let err = s.reset_key_checks(&check(1, b"other")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        versions(&s.key_checks().await.unwrap()),
        [(1, b"first".to_vec())]
    );
    assert!(s.delete_secret("meta/a").await.unwrap());
    s.reset_key_checks(&check(1, b"other")).await.unwrap();
    assert_eq!(
        versions(&s.key_checks().await.unwrap()),
        [(1, b"other".to_vec())]
    );
}

async fn large_access_batches_count_per_path(db: &TestDb) {
    let s = &db.store;
    for p in ["meta/a", "meta/b", "meta/c"] {
        s.put_secret(&secret(p, "meta", None, b"x")).await.unwrap();
    }
    let at = |i: i64| Utc.timestamp_opt(1_800_000_000 + i, 0).unwrap();
    // 450 events: more than one multi-row insert chunk, three paths, a few failures.
    let events: Vec<AccessEvent> = (0..450)
        .map(|i| AccessEvent {
            path: ["meta/a", "meta/b", "meta/c"][i % 3].into(),
            action: "read".into(),
            actor: format!("cli:user{}", i % 7),
            outcome: if i % 50 == 0 { "not_found" } else { "ok" }.into(),
            at: at(i as i64),
        })
        .collect();
    s.record_access(&events).await.unwrap();
    let count = |p: &'static str| {
        let s = s.clone();
        async move { s.get_secret(p).await.unwrap().unwrap() }
    };
    let a = count("meta/a").await;
    let b = count("meta/b").await;
    let c = count("meta/c").await;
    // i % 50 == 0 hits i = 0, 150, 300 (all path a) and 50, 200, 350 (path c, since 50 % 3 == 2) …
    let expected = |k: usize| (0..450).filter(|i| i % 3 == k && i % 50 != 0).count() as i64;
    assert_eq!(
        (a.access_count, b.access_count, c.access_count),
        (expected(0), expected(1), expected(2))
    );
    assert_eq!(a.last_accessed_at, Some(at(447)));
    assert_eq!(c.last_accessed_at, Some(at(449)));
    let log = s.access_log(None, 1000).await.unwrap();
    assert_eq!(log.len(), 450);
    assert_eq!(log[0].at, at(449), "newest first, in insertion order");
    assert_eq!(log[449].actor, "cli:user0");
}

async fn import_inserts_all_or_nothing(db: &TestDb) {
    let s = &db.store;
    s.put_secret(&secret("meta/existing", "meta", None, b"e"))
        .await
        .unwrap();
    let mut imported = secret("project/shop/a", "project", Some("shop"), b"ia");
    imported.access_count = 17;
    imported.last_accessed_at = Some(Utc.with_ymd_and_hms(2025, 5, 6, 7, 8, 9).unwrap());
    imported.rotation_required = true;
    let clash = secret("meta/existing", "meta", None, b"ib");
    let err = s
        .import_secrets(&[imported.clone(), clash])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(err.to_string().contains("meta/existing"), "{err}");
    assert!(
        s.get_secret("project/shop/a").await.unwrap().is_none(),
        "nothing half-imported"
    );
    s.import_secrets(std::slice::from_ref(&imported))
        .await
        .unwrap();
    let got = s.get_secret("project/shop/a").await.unwrap().unwrap();
    assert_eq!(got.access_count, 17);
    assert_eq!(got.last_accessed_at, imported.last_accessed_at);
    assert!(got.rotation_required);
    assert_eq!(got.ciphertext, b"ia");
}

async fn sample_is_newest_first(db: &TestDb) {
    let s = &db.store;
    assert!(s.sample_secrets(3).await.unwrap().is_empty());
    for (i, p) in ["meta/a", "meta/b", "meta/c"].into_iter().enumerate() {
        let mut row = secret(p, "meta", None, b"x");
        row.updated_at = Utc.timestamp_opt(1_800_000_000 + i as i64, 0).unwrap();
        s.put_secret(&row).await.unwrap();
    }
    let paths: Vec<String> = s
        .sample_secrets(2)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(paths, ["meta/c", "meta/b"]);
}

fn range(project: &str, start: i32) -> PortRange {
    PortRange {
        host: DEFAULT_HOST.into(),
        project: project.into(),
        start_port: start,
        end_port: start + 99,
    }
}

fn alloc(project: &str, service: &str, port: i32) -> PortAllocation {
    PortAllocation {
        host: DEFAULT_HOST.into(),
        project: project.into(),
        service: service.into(),
        port,
    }
}

async fn port_blocks_never_overlap(db: &TestDb) {
    let s = &db.store;
    s.insert_port_range(&range("a", 3000)).await.unwrap();
    let err = s.insert_port_range(&range("b", 3000)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let err = s.insert_port_range(&range("a", 3100)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(_)),
        "a project holds one block: {err:?}"
    );
    // Another host has its own port space.
    s.insert_port_range(&PortRange {
        host: "host-2".into(),
        ..range("b", 3000)
    })
    .await
    .unwrap();
    let reg = s.port_registry(DEFAULT_HOST).await.unwrap();
    assert_eq!(reg.ranges, vec![range("a", 3000)]);
    assert!(s.delete_port_range(DEFAULT_HOST, "a").await.unwrap());
    assert!(
        s.port_registry(DEFAULT_HOST)
            .await
            .unwrap()
            .ranges
            .is_empty()
    );
}

/// Issue 10, defect 5: moving a block onto one that is taken fails and leaves both rows as they were
/// (it used to be a delete then an insert, and the failed insert lost the moved project's row).
async fn a_block_moves_in_one_statement_or_not_at_all(db: &TestDb) {
    let s = &db.store;
    s.insert_port_range(&range("a", 3000)).await.unwrap();
    s.insert_port_range(&range("b", 3100)).await.unwrap();
    let err = s.move_port_range(&range("a", 3100)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let reg = s.port_registry(DEFAULT_HOST).await.unwrap();
    assert_eq!(reg.ranges, vec![range("a", 3000), range("b", 3100)]);
    assert!(s.move_port_range(&range("a", 3200)).await.unwrap());
    assert!(
        !s.move_port_range(&range("nobody", 3300)).await.unwrap(),
        "no block to move"
    );
    let reg = s.port_registry(DEFAULT_HOST).await.unwrap();
    assert_eq!(reg.ranges, vec![range("b", 3100), range("a", 3200)]);
}

async fn a_port_is_allocated_once_and_a_service_holds_one_port(db: &TestDb) {
    let s = &db.store;
    s.insert_port_allocation(&alloc("a", "api", 3001))
        .await
        .unwrap();
    assert!(matches!(
        s.insert_port_allocation(&alloc("b", "web", 3001)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.insert_port_allocation(&alloc("a", "api", 3002)).await,
        Err(StoreError::Conflict(_))
    ));
    s.insert_port_allocation(&alloc("a", "web", 3002))
        .await
        .unwrap();
    let reg = s.port_registry(DEFAULT_HOST).await.unwrap();
    assert_eq!(
        reg.allocations,
        vec![alloc("a", "api", 3001), alloc("a", "web", 3002)]
    );
}

async fn concurrent_allocations_of_one_port_admit_exactly_one(db: &TestDb) {
    let store: Arc<dyn Store> = db.store.clone();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                s.insert_port_allocation(&alloc("p", &format!("svc{i}"), 4242))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(
        store
            .port_registry(DEFAULT_HOST)
            .await
            .unwrap()
            .allocations
            .len(),
        1
    );
}

async fn allocations_move_and_are_released(db: &TestDb) {
    let s = &db.store;
    s.insert_port_allocation(&alloc("a", "api", 3001))
        .await
        .unwrap();
    s.insert_port_allocation(&alloc("a", "web", 3002))
        .await
        .unwrap();
    assert!(
        s.update_port_allocation(&alloc("a", "api", 3005))
            .await
            .unwrap()
    );
    assert!(matches!(
        s.update_port_allocation(&alloc("a", "api", 3002)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        !s.update_port_allocation(&alloc("a", "none", 3009))
            .await
            .unwrap()
    );
    assert!(
        s.delete_port_allocation(DEFAULT_HOST, "a", "web")
            .await
            .unwrap()
    );
    assert!(
        !s.delete_port_allocation(DEFAULT_HOST, "a", "web")
            .await
            .unwrap()
    );
    assert_eq!(
        s.port_registry(DEFAULT_HOST).await.unwrap().allocations,
        vec![alloc("a", "api", 3005)]
    );
    // The single-row read agrees with the registry, and knows nothing of released or other services.
    assert_eq!(
        s.port_allocation(DEFAULT_HOST, "a", "api").await.unwrap(),
        Some(alloc("a", "api", 3005))
    );
    for (host, project, service) in [
        (DEFAULT_HOST, "a", "web"),
        (DEFAULT_HOST, "b", "api"),
        ("elsewhere", "a", "api"),
    ] {
        assert_eq!(
            s.port_allocation(host, project, service).await.unwrap(),
            None
        );
    }
}

async fn shared_ports_are_unique(db: &TestDb) {
    let s = &db.store;
    let sp = |name: &str, port| SharedPort {
        host: DEFAULT_HOST.into(),
        name: name.into(),
        port,
    };
    s.insert_shared_port(&sp("postgres", 9432)).await.unwrap();
    assert!(matches!(
        s.insert_shared_port(&sp("redis", 9432)).await,
        Err(StoreError::Conflict(_))
    ));
    s.insert_shared_port(&sp("redis", 9379)).await.unwrap();
    assert!(s.update_shared_port(&sp("redis", 9380)).await.unwrap());
    assert!(
        s.delete_shared_port(DEFAULT_HOST, "postgres")
            .await
            .unwrap()
    );
    assert_eq!(
        s.port_registry(DEFAULT_HOST).await.unwrap().shared,
        vec![sp("redis", 9380)]
    );
}

async fn inventory_records_managed_objects(db: &TestDb) {
    let s = &db.store;
    let obj = |addr: &str, attrs| ManagedObject {
        provider: "dns".into(),
        address: addr.into(),
        external_id: Some(format!("id-{addr}")),
        attributes: sqlx::types::Json(attrs),
        adopted: false,
    };
    s.upsert_managed(&obj("dns/a.example.com", json!({"proxied": true})))
        .await
        .unwrap();
    s.upsert_managed(&obj("dns/b.example.com", json!({"proxied": false})))
        .await
        .unwrap();
    let mut adopted = obj("dns/a.example.com", json!({"proxied": false, "ttl": 1}));
    adopted.adopted = true;
    s.upsert_managed(&adopted).await.unwrap();
    let list = s.list_managed("dns").await.unwrap();
    assert_eq!(
        list,
        vec![adopted, obj("dns/b.example.com", json!({"proxied": false}))]
    );
    assert!(s.list_managed("tunnel").await.unwrap().is_empty());
    assert!(s.delete_managed("dns", "dns/b.example.com").await.unwrap());
    assert_eq!(s.list_managed("dns").await.unwrap().len(), 1);
}

async fn journal_tracks_runs_and_interruptions(db: &TestDb) {
    let s = &db.store;
    let run = |id: &str| ApplyRun {
        id: id.into(),
        started_at: Utc::now(),
        finished_at: None,
        status: "running".into(),
        desired_revision: "sha256:abc".into(),
        git_revision: Some("0123abcd".into()),
        actor: "cli:test".into(),
        summary: sqlx::types::Json(json!({})),
    };
    s.begin_run(&run("r1")).await.unwrap();
    let intent = json!({"port": 3001});
    let j1 = s
        .journal_start("r1", 1, "ports/a/api", "ports", "create", &intent)
        .await
        .unwrap();
    s.journal_finish(j1, None).await.unwrap();
    let j2 = s
        .journal_start("r1", 2, "ports/a/web", "ports", "create", &intent)
        .await
        .unwrap();
    s.journal_finish(j2, Some("port taken")).await.unwrap();
    s.finish_run("r1", RunStatus::Failed, &json!({"add": 1}))
        .await
        .unwrap();

    // A run that died mid-change.
    tokio::time::sleep(Duration::from_millis(5)).await;
    s.begin_run(&run("r2")).await.unwrap();
    s.journal_start("r2", 1, "ports/a/web", "ports", "create", &intent)
        .await
        .unwrap();
    assert_eq!(s.mark_interrupted_runs().await.unwrap(), 1);

    let last = s.last_run().await.unwrap().unwrap();
    assert_eq!(
        (last.id.as_str(), last.status.as_str()),
        ("r2", "interrupted")
    );
    // The status page's recent runs (newest first, bounded) and a run by id.
    let recent: Vec<_> = s
        .recent_runs(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.status))
        .collect();
    assert_eq!(
        recent,
        [
            ("r2".to_string(), "interrupted".to_string()),
            ("r1".to_string(), "failed".to_string())
        ]
    );
    assert_eq!(s.recent_runs(1).await.unwrap().len(), 1);
    let r1 = s.apply_run("r1").await.unwrap().unwrap();
    assert_eq!(
        (r1.desired_revision.as_str(), r1.summary.0.clone()),
        ("sha256:abc", json!({"add": 1}))
    );
    assert!(s.apply_run("r9").await.unwrap().is_none());
    let latest = s.latest_journal_entries().await.unwrap();
    let seen: Vec<_> = latest
        .iter()
        .map(|e| (e.address.as_str(), e.status.as_str(), e.run_id.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("ports/a/api", "succeeded", "r1"),
            ("ports/a/web", "failed", "r2")
        ]
    );
    assert_eq!(latest[0].intent.0, intent);
    assert!(
        latest[1]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("interrupted")
    );
}

async fn apply_lock_is_exclusive_and_released(db: &TestDb) {
    let s = &db.store;
    let held = s.lock_apply(Duration::from_secs(5)).await.unwrap();
    let err = s.lock_apply(Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, StoreError::LockTimeout { .. }), "{err:?}");
    assert!(err.to_string().contains("--lock-timeout"), "{err}");
    // A waiter gets the lock as soon as the holder lets go.
    let store = db.store.clone();
    let waiter =
        tokio::spawn(async move { store.lock_apply(Duration::from_secs(10)).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    held.release().await;
    waiter.await.unwrap().unwrap();
}

async fn leadership_has_one_holder(db: &TestDb) {
    let s = &db.store;
    let mut leader = s.try_lead().await.unwrap().expect("first caller leads");
    assert!(leader.is_alive().await);
    assert!(s.try_lead().await.unwrap().is_none());
    // Leadership and the apply lock are independent.
    s.lock_apply(Duration::from_secs(1))
        .await
        .unwrap()
        .release()
        .await;
    leader.release().await;
    assert!(s.try_lead().await.unwrap().is_some());
}

async fn tokens_are_found_by_hash_until_revoked(db: &TestDb) {
    let s = &db.store;
    let row = |id: &str, project: Option<&str>| TokenRow {
        id: id.into(),
        project: project.map(Into::into),
        description: None,
        created_at: Utc::now(),
        last_used_at: None,
        revoked_at: None,
    };
    s.insert_token(&row("t1", None), "hash-1").await.unwrap();
    s.insert_token(&row("t2", Some("shop")), "hash-2")
        .await
        .unwrap();
    assert!(matches!(
        s.insert_token(&row("t3", None), "hash-1").await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.token_by_hash("hash-2")
            .await
            .unwrap()
            .unwrap()
            .project
            .as_deref(),
        Some("shop")
    );
    s.touch_token("t2", Utc::now()).await.unwrap();
    assert!(s.revoke_token("t2").await.unwrap());
    assert!(!s.revoke_token("t2").await.unwrap());
    assert!(s.token_by_hash("hash-2").await.unwrap().is_none());
    let list = s.list_tokens().await.unwrap();
    assert_eq!(list.len(), 2);
    assert!(list[1].revoked_at.is_some() && list[1].last_used_at.is_some());
}

/// Several processes opening one new SQLite database at once must not race on the migrations.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_first_opens_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::Sqlite(dir.path().join("new.db"));
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let l = location.clone();
            tokio::spawn(async move { open(&l).await.map(|_| ()) })
        })
        .collect();
    for o in opens {
        o.await.unwrap().unwrap();
    }
}
