//! The vault through its library API, on SQLite and on PostgreSQL: encryption at rest, tamper and
//! wrong-key detection, auditing of every access, rotation and legacy import. Values are generated
//! fakes; none is printed.

mod support;

use std::sync::Arc;

use aes_gcm::aead::array::typenum::U16;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use chrono::{Duration, TimeZone, Utc};
use sqlx::Connection;
use supervisor::secrets::key::{EncryptionKey, KeySource};
use supervisor::secrets::path::SecretPath;
use supervisor::secrets::vault::{
    self, Actor, Diagnosis, Expiry, ListFilter, SecretValue, SetOptions, Vault, VaultError, Written,
};
use supervisor::store::{Location, SecretScope};
use support::db::TestDb;

conformance!(
    round_trip_keeps_metadata,
    raw_rows_never_contain_the_plaintext,
    swapped_ciphertexts_fail_to_decrypt_both,
    a_flipped_bit_is_detected_wherever_it_is,
    a_wrong_key_is_named_and_changes_nothing,
    every_access_is_audited_with_actor_and_outcome,
    concurrent_reads_are_each_audited,
    rotation_reencrypts_everything_with_the_next_version,
    rotation_with_an_unreadable_secret_changes_nothing,
    expiry_and_rotation_flags_are_reported,
    project_actors_reach_only_their_project,
    legacy_import_brings_values_and_metadata,
    legacy_import_is_all_or_nothing,
    bad_values_are_refused,
    every_secret_altered_does_not_block_the_right_key,
    a_wrong_key_deletes_nothing,
    rotation_moves_the_key_check_to_the_new_key,
    a_vault_without_a_check_value_gets_one_on_first_verification,
    an_emptied_vault_may_start_over_with_another_key,
);

fn key(seed: u8) -> EncryptionKey {
    let bytes: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(31).wrapping_add(seed))
        .collect();
    EncryptionKey::from_hex(&hex::encode(bytes), KeySource::Env).unwrap()
}

/// A generated, obviously fake value with a unique marker (so a leak is recognisable).
fn fake(label: &str) -> String {
    format!("fake-{label}-{}", uuid::Uuid::new_v4().simple())
}

fn path(p: &str) -> SecretPath {
    SecretPath::parse(p).unwrap()
}

fn value(v: &str) -> SecretValue {
    SecretValue::from(v.to_string())
}

fn cli() -> Actor {
    Actor::cli("tester")
}

fn vault(db: &TestDb, k: EncryptionKey) -> Vault {
    Vault::new(db.store.clone(), k)
}

async fn put(v: &Vault, p: &str, val: &str) {
    v.set(&path(p), &value(val), &SetOptions::default(), &cli())
        .await
        .unwrap();
}

async fn read(v: &Vault, p: &str) -> Result<String, VaultError> {
    v.get(&path(p), &cli())
        .await
        .map(|r| r.value.expose().to_string())
}

/// Rows as raw text straight from the database, bypassing the store: every column of every secret.
async fn raw_rows(db: &TestDb) -> Vec<(String, Vec<u8>, String)> {
    match &db.location {
        Location::Sqlite(file) => {
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
                .await
                .unwrap();
            let rows: Vec<(String, Vec<u8>, String)> = sqlx::query_as(
                "SELECT path, ciphertext, path || '|' || scope || '|' || coalesce(project, '') || '|' ||
                        coalesce(description, '') || '|' || hex(ciphertext) FROM secrets ORDER BY path",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
            rows
        }
        Location::Postgres(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            let rows =
                sqlx::query_as("SELECT path, ciphertext, s::text FROM secrets s ORDER BY path")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            conn.close().await.unwrap();
            rows
        }
    }
}

async fn set_raw_ciphertext(db: &TestDb, p: &str, ciphertext: &[u8]) {
    match &db.location {
        Location::Sqlite(file) => {
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
                .await
                .unwrap();
            sqlx::query("UPDATE secrets SET ciphertext = $1 WHERE path = $2")
                .bind(ciphertext)
                .bind(p)
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
        Location::Postgres(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query("UPDATE secrets SET ciphertext = $1 WHERE path = $2")
                .bind(ciphertext)
                .bind(p)
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
    }
}

/// Runs a statement on the test database directly, bypassing the store.
async fn raw_execute(db: &TestDb, sql: &'static str) {
    match &db.location {
        Location::Sqlite(file) => {
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
                .await
                .unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        Location::Postgres(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }
}

/// Flips the last bit of the stored ciphertext of `p`.
async fn corrupt(db: &TestDb, p: &str) {
    let mut c = ciphertexts(db)
        .await
        .into_iter()
        .find(|(q, _)| q == p)
        .unwrap()
        .1;
    let last = c.len() - 1;
    c[last] ^= 1;
    set_raw_ciphertext(db, p, &c).await;
}

async fn ciphertexts(db: &TestDb) -> Vec<(String, Vec<u8>)> {
    raw_rows(db)
        .await
        .into_iter()
        .map(|(p, c, _)| (p, c))
        .collect()
}

async fn round_trip_keeps_metadata(db: &TestDb) {
    let v = vault(db, key(1));
    let p = path("service/shop/api/stripe_key");
    let first = fake("one");
    let written = v
        .set(
            &p,
            &value(&first),
            &SetOptions {
                description: Some("Stripe key of the shop API".into()),
                expiry: Expiry::At(Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap()),
                rotation_required: false,
            },
            &cli(),
        )
        .await
        .unwrap();
    assert_eq!(written, Written::Created);
    assert_eq!(read(&v, p.as_str()).await.unwrap(), first);

    let listed = v.list(&ListFilter::default(), &cli()).await.unwrap();
    assert_eq!(listed.len(), 1);
    let info = &listed[0];
    assert_eq!(
        (
            info.scope.as_str(),
            info.project.as_deref(),
            info.service.as_deref()
        ),
        ("service", Some("shop"), Some("api"))
    );
    assert_eq!(
        info.description.as_deref(),
        Some("Stripe key of the shop API")
    );
    assert_eq!(info.access_count, 1);
    assert!(info.last_accessed_at.is_some());
    let created = info.created_at;

    // A new value keeps creation time, description and expiry unless told otherwise.
    let second = fake("two");
    let written = v
        .set(&p, &value(&second), &SetOptions::default(), &cli())
        .await
        .unwrap();
    assert_eq!(written, Written::Updated);
    assert_eq!(read(&v, p.as_str()).await.unwrap(), second);
    let info = &v.list(&ListFilter::default(), &cli()).await.unwrap()[0];
    assert_eq!(info.created_at, created);
    assert!(info.updated_at >= created);
    assert_eq!(
        info.description.as_deref(),
        Some("Stripe key of the shop API")
    );
    assert_eq!(
        info.expires_at,
        Some(Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap())
    );
    assert_eq!(info.access_count, 2, "statistics survive a new value");

    assert!(v.exists(&p, &cli()).await.unwrap());
    assert!(
        !v.exists(&path("service/shop/api/stripe"), &cli())
            .await
            .unwrap(),
        "a prefix is not a secret"
    );
    v.delete(&p, &cli()).await.unwrap();
    assert!(!v.exists(&p, &cli()).await.unwrap());
    assert!(matches!(
        v.get(&p, &cli()).await,
        Err(VaultError::NotFound { .. })
    ));
    assert!(matches!(
        v.delete(&p, &cli()).await,
        Err(VaultError::NotFound { .. })
    ));
}

async fn raw_rows_never_contain_the_plaintext(db: &TestDb) {
    let v = vault(db, key(2));
    let values: Vec<String> = (0..5).map(|i| fake(&format!("raw{i}"))).collect();
    for (i, val) in values.iter().enumerate() {
        put(&v, &format!("project/raw/secret_{i}"), val).await;
        // Read each back so the access path has touched the database too.
        assert_eq!(
            read(&v, &format!("project/raw/secret_{i}")).await.unwrap(),
            *val
        );
    }
    let rows = raw_rows(db).await;
    assert_eq!(rows.len(), 5);
    for (p, ciphertext, text) in &rows {
        assert_eq!(ciphertext[0], 1, "key version prefix of {p}");
        for val in &values {
            let needle = val.as_bytes();
            assert!(
                !ciphertext.windows(needle.len()).any(|w| w == needle),
                "plaintext in the ciphertext of {p}"
            );
            assert!(
                !text.contains(val.as_str()),
                "plaintext in the raw row of {p}"
            );
            assert!(
                !text
                    .to_ascii_lowercase()
                    .contains(&hex::encode(val.as_bytes())),
                "hex plaintext in the raw row of {p}"
            );
        }
    }
    // SQLite: not in the database file, nor in its write-ahead log, either.
    if let Location::Sqlite(file) = &db.location {
        for f in [file.clone(), file.with_extension("db-wal")] {
            if let Ok(bytes) = std::fs::read(&f) {
                for val in &values {
                    let needle = val.as_bytes();
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle),
                        "plaintext found in {}",
                        f.display()
                    );
                }
            }
        }
    }
}

async fn swapped_ciphertexts_fail_to_decrypt_both(db: &TestDb) {
    let v = vault(db, key(3));
    let (a, b, c) = (fake("a"), fake("b"), fake("c"));
    put(&v, "meta/swap/a", &a).await;
    put(&v, "meta/swap/b", &b).await;
    put(&v, "meta/swap/c", &c).await;
    let cts = ciphertexts(db).await;
    set_raw_ciphertext(db, "meta/swap/a", &cts[1].1).await;
    set_raw_ciphertext(db, "meta/swap/b", &cts[0].1).await;
    for (p, other) in [("meta/swap/a", &b), ("meta/swap/b", &a)] {
        let err = read(&v, p).await.unwrap_err();
        match &err {
            VaultError::Undecryptable {
                path, diagnosis, ..
            } => {
                assert_eq!(path, p);
                assert_eq!(*diagnosis, Diagnosis::AlteredOrMoved);
            }
            other => panic!("expected Undecryptable, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(p) && msg.contains("altered or moved"), "{msg}");
        assert!(!msg.contains(other.as_str()) && !msg.contains(&a) && !msg.contains(&b));
    }
    assert_eq!(read(&v, "meta/swap/c").await.unwrap(), c);
}

async fn a_flipped_bit_is_detected_wherever_it_is(db: &TestDb) {
    let v = vault(db, key(4));
    let val = fake("flip");
    put(&v, "meta/flip/x", &val).await;
    put(&v, "meta/flip/other", &fake("other")).await;
    let original = ciphertexts(db)
        .await
        .into_iter()
        .find(|(p, _)| p == "meta/flip/x")
        .unwrap()
        .1;
    // Version byte, nonce, body and tag.
    for byte in [0, 1, 12, 13, original.len() / 2, original.len() - 1] {
        for bit in [0, 7] {
            let mut flipped = original.clone();
            flipped[byte] ^= 1 << bit;
            set_raw_ciphertext(db, "meta/flip/x", &flipped).await;
            let err = read(&v, "meta/flip/x").await.unwrap_err();
            assert!(
                matches!(err, VaultError::Undecryptable { .. }),
                "byte {byte} bit {bit}: {err:?}"
            );
        }
    }
    set_raw_ciphertext(db, "meta/flip/x", &original).await;
    assert_eq!(read(&v, "meta/flip/x").await.unwrap(), val);
    // A truncated ciphertext is a clear error, not a panic.
    set_raw_ciphertext(db, "meta/flip/x", &original[..5]).await;
    let msg = read(&v, "meta/flip/x").await.unwrap_err().to_string();
    assert!(msg.contains("shorter than"), "{msg}");
}

async fn a_wrong_key_is_named_and_changes_nothing(db: &TestDb) {
    let right = vault(db, key(5));
    let val = fake("right");
    put(&right, "meta/k/a", &val).await;
    put(&right, "meta/k/b", &fake("b")).await;
    let before = ciphertexts(db).await;
    let stats_before = right.list(&ListFilter::default(), &cli()).await.unwrap();

    let wrong_key = key(6);
    let fingerprint = wrong_key.fingerprint();
    let wrong = vault(db, wrong_key.clone());
    let err = read(&wrong, "meta/k/a").await.unwrap_err();
    match &err {
        VaultError::Undecryptable { diagnosis, .. } => assert_eq!(*diagnosis, Diagnosis::WrongKey),
        other => panic!("expected Undecryptable, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&fingerprint) && msg.contains("it is the wrong key"),
        "{msg}"
    );
    assert!(!msg.contains(&val));

    let err = wrong
        .set(
            &path("meta/k/c"),
            &value(&fake("c")),
            &SetOptions::default(),
            &cli(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::KeyMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&fingerprint) && msg.contains("Nothing was changed"),
        "{msg}"
    );
    let err = wrong
        .set(
            &path("meta/k/a"),
            &value(&fake("overwrite")),
            &SetOptions::default(),
            &cli(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::KeyMismatch { .. }), "{err:?}");
    let err = wrong.rotate_key(&key(7), &cli()).await.unwrap_err();
    assert!(matches!(err, VaultError::KeyMismatch { .. }), "{err:?}");

    assert_eq!(ciphertexts(db).await, before, "nothing was rewritten");
    let stats_after = right.list(&ListFilter::default(), &cli()).await.unwrap();
    assert_eq!(
        stats_after
            .iter()
            .map(|s| (&s.path, s.access_count, s.key_version))
            .collect::<Vec<_>>(),
        stats_before
            .iter()
            .map(|s| (&s.path, s.access_count, s.key_version))
            .collect::<Vec<_>>(),
        "failed reads do not count as reads"
    );
    assert_eq!(read(&right, "meta/k/a").await.unwrap(), val);
}

async fn every_access_is_audited_with_actor_and_outcome(db: &TestDb) {
    let v = vault(db, key(8));
    let alice = Actor::cli("alice");
    let agent = Actor::mcp("/mcp/meta", Some("tok_7"), None);
    let p = path("meta/audit/x");
    v.set(&p, &value(&fake("x")), &SetOptions::default(), &alice)
        .await
        .unwrap();
    v.get(&p, &agent).await.unwrap();
    v.get(&p, &agent).await.unwrap();
    let missing = path("meta/audit/missing");
    assert!(v.get(&missing, &alice).await.is_err());
    v.delete(&p, &alice).await.unwrap();

    let log = v.audit_log(None, 100, &alice).await.unwrap();
    let seen: Vec<(&str, &str, &str, &str)> = log
        .iter()
        .map(|e| {
            (
                e.path.as_str(),
                e.action.as_str(),
                e.actor.as_str(),
                e.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("meta/audit/x", "delete", "cli:alice", "ok"),
            ("meta/audit/missing", "read", "cli:alice", "not_found"),
            ("meta/audit/x", "read", "mcp:/mcp/meta:tok_7", "ok"),
            ("meta/audit/x", "read", "mcp:/mcp/meta:tok_7", "ok"),
            ("meta/audit/x", "write", "cli:alice", "ok"),
        ]
    );
    assert!(log.windows(2).all(|w| w[0].at >= w[1].at));
    let only = v.audit_log(Some(&missing), 100, &alice).await.unwrap();
    assert_eq!(only.len(), 1);
}

async fn concurrent_reads_are_each_audited(db: &TestDb) {
    let v = Arc::new(vault(db, key(9)));
    let values: Vec<String> = (0..4).map(|i| fake(&format!("c{i}"))).collect();
    for (i, val) in values.iter().enumerate() {
        put(&v, &format!("meta/conc/s{i}"), val).await;
    }
    let values = Arc::new(values);
    let mut tasks = Vec::new();
    for reader in 0..10 {
        let v = v.clone();
        let values = values.clone();
        tasks.push(tokio::spawn(async move {
            let actor = Actor::mcp("/mcp/meta", Some(&format!("reader{reader}")), None);
            for i in 0..40 {
                let k = (reader + i) % 4;
                let got = v
                    .get(&path(&format!("meta/conc/s{k}")), &actor)
                    .await
                    .unwrap();
                assert_eq!(got.value.expose(), values[k]);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let listed = v.list(&ListFilter::default(), &cli()).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.access_count).sum::<i64>(), 400);
    assert!(listed.iter().all(|s| s.access_count == 100), "{listed:?}");
    let log = v.audit_log(None, 10_000, &cli()).await.unwrap();
    let reads = log.iter().filter(|e| e.action == "read").count();
    assert_eq!(reads, 400, "one access-log row per read");
    assert_eq!(
        log.iter()
            .filter(|e| e.actor == "mcp:/mcp/meta:reader3")
            .count(),
        40
    );
}

async fn rotation_reencrypts_everything_with_the_next_version(db: &TestDb) {
    let old = vault(db, key(10));
    let values: Vec<(String, String)> = ["meta/r/a", "project/p/b", "service/p/s/c"]
        .iter()
        .map(|p| (p.to_string(), fake(p)))
        .collect();
    for (p, val) in &values {
        put(&old, p, val).await;
    }
    let before = ciphertexts(db).await;
    let new_key = key(11);
    let report = old.rotate_key(&new_key, &cli()).await.unwrap();
    assert_eq!(
        (report.rotated, report.from_version, report.to_version),
        (3, Some(1), 2)
    );
    assert_eq!(report.new_fingerprint, new_key.fingerprint());
    let after = ciphertexts(db).await;
    for ((_, b), (p, a)) in before.iter().zip(&after) {
        assert_ne!(a, b, "{p} re-encrypted");
        assert_eq!(a[0], 2, "{p} carries key version 2");
    }
    let new = vault(db, new_key.clone());
    for (p, val) in &values {
        assert_eq!(read(&new, p).await.unwrap(), *val);
        assert!(
            read(&old, p).await.is_err(),
            "the old key no longer opens {p}"
        );
    }
    let listed = new.list(&ListFilter::default(), &cli()).await.unwrap();
    assert!(listed.iter().all(|s| s.key_version == 2));
    // New writes with the new key use version 2; a second rotation goes to 3.
    put(&new, "meta/r/d", &fake("d")).await;
    assert_eq!(
        ciphertexts(db)
            .await
            .iter()
            .find(|(p, _)| p == "meta/r/d")
            .unwrap()
            .1[0],
        2
    );
    assert!(matches!(
        new.rotate_key(&new_key, &cli()).await,
        Err(VaultError::SameKey { .. })
    ));
    let report = new.rotate_key(&key(12), &cli()).await.unwrap();
    assert_eq!((report.rotated, report.to_version), (4, 3));
    let log = new.audit_log(None, 100, &cli()).await.unwrap();
    assert_eq!(log.iter().filter(|e| e.action == "rotate").count(), 7);
}

async fn rotation_with_an_unreadable_secret_changes_nothing(db: &TestDb) {
    let old = vault(db, key(13));
    let values: Vec<(String, String)> = (0..6)
        .map(|i| (format!("meta/rb/s{i}"), fake(&format!("rb{i}"))))
        .collect();
    for (p, val) in &values {
        put(&old, p, val).await;
    }
    // One secret in the middle was altered: rotation must not half-happen.
    let mut broken = ciphertexts(db).await[3].1.clone();
    let last = broken.len() - 1;
    broken[last] ^= 0x10;
    set_raw_ciphertext(db, "meta/rb/s3", &broken).await;
    let before = ciphertexts(db).await;
    let err = old.rotate_key(&key(14), &cli()).await.unwrap_err();
    assert!(
        matches!(err, VaultError::RotationBlocked { count: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("meta/rb/s3"), "{err}");
    assert_eq!(ciphertexts(db).await, before, "nothing was changed");
    for (p, val) in &values {
        if p != "meta/rb/s3" {
            assert_eq!(
                read(&old, p).await.unwrap(),
                *val,
                "{p} still opens with the old key"
            );
        }
    }
    let new = vault(db, key(14));
    assert!(read(&new, "meta/rb/s0").await.is_err());
}

async fn expiry_and_rotation_flags_are_reported(db: &TestDb) {
    let v = vault(db, key(15));
    let past = Utc::now() - Duration::days(1);
    let future = Utc::now() + Duration::days(30);
    let expired_value = fake("expired");
    let set = |p: &'static str, val: String, expiry: Expiry, rotation_required: bool| {
        let v = &v;
        async move {
            v.set(
                &path(p),
                &value(&val),
                &SetOptions {
                    description: None,
                    expiry,
                    rotation_required,
                },
                &cli(),
            )
            .await
            .unwrap()
        }
    };
    set("meta/e/old", expired_value.clone(), Expiry::At(past), false).await;
    set("meta/e/fresh", fake("fresh"), Expiry::At(future), true).await;
    set("meta/e/plain", fake("plain"), Expiry::Keep, false).await;

    let listed = v.list(&ListFilter::default(), &cli()).await.unwrap();
    let flags: Vec<(&str, bool, bool)> = listed
        .iter()
        .map(|s| (s.path.as_str(), s.expired, s.rotation_required))
        .collect();
    assert_eq!(
        flags,
        [
            ("meta/e/fresh", false, true),
            ("meta/e/old", true, false),
            ("meta/e/plain", false, false)
        ]
    );
    // Still readable, but flagged.
    let got = v.get(&path("meta/e/old"), &cli()).await.unwrap();
    assert_eq!(got.value.expose(), expired_value);
    assert!(got.expired());
    let health = vault::health(db.store.as_ref()).await.unwrap();
    assert_eq!(health.total, 3);
    assert_eq!(health.expired, ["meta/e/old"]);
    assert_eq!(health.rotation_required, ["meta/e/fresh"]);
    // A new value clears the rotation flag; `never` clears the expiry.
    set("meta/e/fresh", fake("rotated"), Expiry::Keep, false).await;
    set("meta/e/old", fake("renewed"), Expiry::Never, false).await;
    let health = vault::health(db.store.as_ref()).await.unwrap();
    assert!(health.expired.is_empty() && health.rotation_required.is_empty());
}

async fn project_actors_reach_only_their_project(db: &TestDb) {
    let v = vault(db, key(16));
    put(&v, "project/shop/db", &fake("shop")).await;
    put(&v, "service/shop/api/key", &fake("shop-api")).await;
    put(&v, "project/blog/db", &fake("blog")).await;
    put(&v, "meta/cloudflare/api_token", &fake("cf")).await;
    let shop = Actor::mcp("/mcp/shop", Some("tok_shop"), Some("shop"));
    assert!(v.get(&path("project/shop/db"), &shop).await.is_ok());
    assert!(v.get(&path("service/shop/api/key"), &shop).await.is_ok());
    for other in ["project/blog/db", "meta/cloudflare/api_token"] {
        let err = v.get(&path(other), &shop).await.unwrap_err();
        assert!(matches!(err, VaultError::Denied { .. }), "{err:?}");
        assert!(
            v.set(&path(other), &value("x1"), &SetOptions::default(), &shop)
                .await
                .is_err()
        );
        assert!(v.delete(&path(other), &shop).await.is_err());
    }
    let visible: Vec<String> = v
        .list(&ListFilter::default(), &shop)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert_eq!(visible, ["project/shop/db", "service/shop/api/key"]);
    let other_project = ListFilter {
        project: Some("blog".into()),
        ..ListFilter::default()
    };
    assert!(v.list(&other_project, &shop).await.unwrap().is_empty());
    let scoped = ListFilter {
        scope: Some(SecretScope::Service),
        ..ListFilter::default()
    };
    assert_eq!(v.list(&scoped, &shop).await.unwrap().len(), 1);
    // Denials are audited, and the shop token sees only its own project's log.
    let log = v.audit_log(None, 100, &cli()).await.unwrap();
    assert_eq!(log.iter().filter(|e| e.outcome == "denied").count(), 6);
    let own = v.audit_log(None, 100, &shop).await.unwrap();
    assert!(!own.is_empty());
    assert!(own.iter().all(|e| e.path.contains("shop")), "{own:?}");
    assert!(
        v.audit_log(Some(&path("project/blog/db")), 10, &shop)
            .await
            .is_err()
    );
}

// ---------------------------------------------------------------------------------------------------
// Legacy import: a database of the original service, built here with its table shape and its value
// layout (IV 16 ‖ tag 16 ‖ ciphertext, AES-256-GCM without associated data).

fn legacy_seal(k: &EncryptionKey, plaintext: &str) -> Vec<u8> {
    let iv: [u8; 16] = rand::random();
    let ct = AesGcm::<Aes256, U16>::new(k.bytes().into())
        .encrypt(&Nonce::from(iv), plaintext.as_bytes())
        .unwrap();
    let (body, tag) = ct.split_at(ct.len() - 16);
    [&iv[..], tag, body].concat()
}

struct LegacyRow {
    key_path: &'static str,
    value: Vec<u8>,
    description: Option<&'static str>,
    access_count: i32,
    expires_in_days: Option<i64>,
    rotation_required: bool,
}

/// A legacy database of the same backend as `db`; returns its URL.
async fn legacy_database(db: &TestDb, rows: &[LegacyRow]) -> (String, Option<tempfile::TempDir>) {
    let created = Utc.with_ymd_and_hms(2026, 1, 18, 10, 0, 0).unwrap();
    match &db.location {
        Location::Sqlite(_) => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("legacy.db").display());
            let options: sqlx::sqlite::SqliteConnectOptions = url
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .unwrap()
                .create_if_missing(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            sqlx::query(
                "CREATE TABLE secrets (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    key_path TEXT NOT NULL UNIQUE,
                    encrypted_value BLOB NOT NULL,
                    description TEXT,
                    scope TEXT NOT NULL,
                    project_name TEXT,
                    service_name TEXT,
                    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
                    updated_at TEXT DEFAULT CURRENT_TIMESTAMP,
                    created_by TEXT DEFAULT 'supervisor',
                    last_accessed_at TEXT,
                    access_count INTEGER DEFAULT 0,
                    expires_at TEXT,
                    rotation_required INTEGER DEFAULT 0)",
            )
            .execute(&mut conn)
            .await
            .unwrap();
            for r in rows {
                sqlx::query(
                    "INSERT INTO secrets (key_path, encrypted_value, description, scope, created_at,
                                          updated_at, access_count, expires_at, rotation_required)
                     VALUES ($1, $2, $3, 'meta', $4, $4, $5, $6, $7)",
                )
                .bind(r.key_path)
                .bind(&r.value)
                .bind(r.description)
                .bind(created.format("%Y-%m-%d %H:%M:%S").to_string())
                .bind(r.access_count)
                .bind(r.expires_in_days.map(|d| (created + Duration::days(d)).to_rfc3339()))
                .bind(r.rotation_required)
                .execute(&mut conn)
                .await
                .unwrap();
            }
            conn.close().await.unwrap();
            (url, Some(dir))
        }
        Location::Postgres(_) => {
            let url = support::db::fresh_postgres_url().await;
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(
                "CREATE TABLE secrets (
                    id SERIAL PRIMARY KEY,
                    key_path TEXT NOT NULL UNIQUE,
                    encrypted_value BYTEA NOT NULL,
                    description TEXT,
                    scope TEXT NOT NULL,
                    project_name TEXT,
                    service_name TEXT,
                    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
                    updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
                    created_by TEXT DEFAULT 'supervisor',
                    last_accessed_at TIMESTAMP WITH TIME ZONE,
                    access_count INTEGER DEFAULT 0,
                    expires_at TIMESTAMP WITH TIME ZONE,
                    rotation_required BOOLEAN DEFAULT FALSE)",
            )
            .execute(&mut conn)
            .await
            .unwrap();
            for r in rows {
                sqlx::query(
                    "INSERT INTO secrets (key_path, encrypted_value, description, scope, created_at,
                                          updated_at, access_count, expires_at, rotation_required)
                     VALUES ($1, $2, $3, 'meta', $4, $4, $5, $6, $7)",
                )
                .bind(r.key_path)
                .bind(&r.value)
                .bind(r.description)
                .bind(created)
                .bind(r.access_count)
                .bind(r.expires_in_days.map(|d| created + Duration::days(d)))
                .bind(r.rotation_required)
                .execute(&mut conn)
                .await
                .unwrap();
            }
            conn.close().await.unwrap();
            (url, None)
        }
    }
}

async fn legacy_import_brings_values_and_metadata(db: &TestDb) {
    let legacy_key = key(20);
    let (a, b) = (fake("legacy-a"), fake("legacy-b"));
    let rows = [
        LegacyRow {
            key_path: "meta/cloudflare/api_token",
            value: legacy_seal(&legacy_key, &a),
            description: Some("Cloudflare token"),
            access_count: 12,
            expires_in_days: Some(365),
            rotation_required: false,
        },
        LegacyRow {
            key_path: "project/consilio/database_url",
            value: legacy_seal(&legacy_key, &b),
            description: None,
            access_count: 0,
            expires_in_days: None,
            rotation_required: true,
        },
    ];
    let (url, _dir) = legacy_database(db, &rows).await;
    let secrets = supervisor::secrets::legacy::read(&url).await.unwrap();
    assert_eq!(secrets.len(), 2);
    let v = vault(db, key(21));
    put(&v, "meta/already/here", &fake("here")).await;
    let report = v
        .import_legacy(&secrets, &legacy_key, &Actor::cli("importer"))
        .await
        .unwrap();
    assert_eq!((report.imported, report.key_version), (2, 1));
    assert_eq!(read(&v, "meta/cloudflare/api_token").await.unwrap(), a);
    assert_eq!(read(&v, "project/consilio/database_url").await.unwrap(), b);
    let listed = v.list(&ListFilter::default(), &cli()).await.unwrap();
    let cf = listed
        .iter()
        .find(|s| s.path == "meta/cloudflare/api_token")
        .unwrap();
    let created = Utc.with_ymd_and_hms(2026, 1, 18, 10, 0, 0).unwrap();
    assert_eq!(cf.description.as_deref(), Some("Cloudflare token"));
    assert_eq!(cf.created_at, created);
    assert_eq!(cf.expires_at, Some(created + Duration::days(365)));
    assert_eq!(cf.access_count, 13, "12 legacy reads + the one above");
    let consilio = listed
        .iter()
        .find(|s| s.path == "project/consilio/database_url")
        .unwrap();
    assert_eq!(
        (consilio.scope.as_str(), consilio.project.as_deref()),
        ("project", Some("consilio"))
    );
    assert!(consilio.rotation_required);
    // Imported rows are in the new format, bound to their path.
    for (p, ct) in ciphertexts(db).await {
        assert_eq!(ct[0], 1, "{p}");
    }
    let log = v.audit_log(None, 100, &cli()).await.unwrap();
    assert_eq!(
        log.iter()
            .filter(|e| e.action == "import" && e.actor == "cli:importer")
            .count(),
        2
    );
}

async fn legacy_import_is_all_or_nothing(db: &TestDb) {
    let legacy_key = key(22);
    let v = vault(db, key(23));
    put(&v, "meta/taken", &fake("taken")).await;
    let good = || LegacyRow {
        key_path: "meta/good/one",
        value: legacy_seal(&legacy_key, &fake("good")),
        description: None,
        access_count: 0,
        expires_in_days: None,
        rotation_required: false,
    };
    let cases: [(&str, LegacyRow); 4] = [
        (
            "cannot be decrypted with the legacy key",
            LegacyRow {
                key_path: "meta/bad/key",
                value: legacy_seal(&key(99), &fake("other-key")),
                ..good()
            },
        ),
        (
            "invalid paths",
            LegacyRow {
                // The old service allowed service/<service>/<name>, without the project.
                key_path: "service/storybook/auth_token",
                ..good()
            },
        ),
        (
            "already in the vault",
            LegacyRow {
                key_path: "meta/taken",
                ..good()
            },
        ),
        (
            "cannot be decrypted with the legacy key",
            LegacyRow {
                key_path: "meta/truncated",
                value: vec![1, 2, 3],
                ..good()
            },
        ),
    ];
    for (problem, bad) in cases {
        let bad_path = bad.key_path;
        let (url, _dir) = legacy_database(db, &[good(), bad]).await;
        let secrets = supervisor::secrets::legacy::read(&url).await.unwrap();
        let before = ciphertexts(db).await;
        let err = v
            .import_legacy(&secrets, &legacy_key, &cli())
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(problem) && msg.contains(bad_path) && msg.contains("Nothing was imported"),
            "{msg}"
        );
        assert_eq!(
            ciphertexts(db).await,
            before,
            "nothing imported ({problem})"
        );
        assert!(!v.exists(&path("meta/good/one"), &cli()).await.unwrap());
    }
    // A database that is not of the old service's shape is a clear error naming what was expected.
    let (url, _dir) = legacy_database(db, &[]).await;
    let empty = supervisor::secrets::legacy::read(&url).await.unwrap();
    assert!(empty.is_empty());
    let err = supervisor::secrets::legacy::read("mysql://u:pw@h/db")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unsupported") && !err.contains("pw@"), "{err}");
    let err = supervisor::secrets::legacy::read(&db.url())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("key_path, encrypted_value"), "{err}");
}

async fn bad_values_are_refused(db: &TestDb) {
    let v = vault(db, key(24));
    let p = path("meta/bad/value");
    let err = v
        .set(&p, &value(""), &SetOptions::default(), &cli())
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::EmptyValue { .. }), "{err:?}");
    let huge = "x".repeat(vault::MAX_VALUE_BYTES + 1);
    let err = v
        .set(&p, &value(&huge), &SetOptions::default(), &cli())
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::TooLarge { .. }), "{err:?}");
    assert!(!v.exists(&p, &cli()).await.unwrap());
    // A value of the largest allowed size and arbitrary Unicode round-trips.
    let big: String = "ä€𝄞x".repeat(1000);
    put(&v, "meta/bad/unicode", &big).await;
    assert_eq!(read(&v, "meta/bad/unicode").await.unwrap(), big);
    // Debug never shows a value.
    let shown = format!("{:?}", value("fake-debug-4711"));
    assert!(!shown.contains("4711"), "{shown}");
}

/// The key is checked against a per-key-version check value, not against the secrets: with every
/// stored ciphertext altered, the right key still writes, and each broken secret is reported as altered
/// (not as a wrong key), while a wrong key is still refused with certainty.
async fn every_secret_altered_does_not_block_the_right_key(db: &TestDb) {
    let right = vault(db, key(40));
    for i in 0..7 {
        put(&right, &format!("meta/alt/s{i}"), &fake("alt")).await;
    }
    for i in 0..7 {
        corrupt(db, &format!("meta/alt/s{i}")).await;
    }
    let fresh = fake("fresh");
    put(&right, "meta/alt/new", &fresh).await;
    assert_eq!(read(&right, "meta/alt/new").await.unwrap(), fresh);
    match read(&right, "meta/alt/s0").await.unwrap_err() {
        VaultError::Undecryptable { diagnosis, .. } => {
            assert_eq!(diagnosis, Diagnosis::AlteredOrMoved)
        }
        other => panic!("expected Undecryptable, got {other:?}"),
    }
    let wrong = vault(db, key(41));
    let before = ciphertexts(db).await;
    let err = wrong
        .set(
            &path("meta/alt/new"),
            &value(&fake("x")),
            &SetOptions::default(),
            &cli(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::KeyMismatch { .. }), "{err:?}");
    match read(&wrong, "meta/alt/new").await.unwrap_err() {
        VaultError::Undecryptable { diagnosis, .. } => assert_eq!(diagnosis, Diagnosis::WrongKey),
        other => panic!("expected Undecryptable, got {other:?}"),
    }
    let msg = read(&wrong, "meta/alt/new").await.unwrap_err().to_string();
    assert!(msg.contains("it is the wrong key"), "{msg}");
    assert_eq!(ciphertexts(db).await, before);
}

async fn a_wrong_key_deletes_nothing(db: &TestDb) {
    let right = vault(db, key(42));
    let val = fake("keep");
    put(&right, "meta/del/a", &val).await;
    let wrong = vault(db, key(43));
    let err = wrong.delete(&path("meta/del/a"), &cli()).await.unwrap_err();
    assert!(matches!(err, VaultError::KeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("Nothing was changed"), "{err}");
    assert_eq!(read(&right, "meta/del/a").await.unwrap(), val);
    let log = right.audit_log(None, 10, &cli()).await.unwrap();
    assert!(
        log.iter()
            .any(|e| e.action == "delete" && e.outcome == "key_mismatch"),
        "{log:?}"
    );
    right.delete(&path("meta/del/a"), &cli()).await.unwrap();
    assert!(matches!(
        read(&right, "meta/del/a").await,
        Err(VaultError::NotFound { .. })
    ));
}

async fn rotation_moves_the_key_check_to_the_new_key(db: &TestDb) {
    let old_key = key(44);
    let old = vault(db, old_key.clone());
    put(&old, "meta/rc/a", &fake("a")).await;
    let new_key = key(45);
    old.rotate_key(&new_key, &cli()).await.unwrap();
    let checks = db.store.key_checks().await.unwrap();
    assert_eq!(
        checks.iter().map(|c| c.key_version).collect::<Vec<_>>(),
        [2],
        "one check value, for the new key version"
    );
    // The old key is now refused for writes with certainty, even though the vault holds secrets of
    // no other version; the new key writes version 2.
    let err = old
        .set(
            &path("meta/rc/b"),
            &value(&fake("b")),
            &SetOptions::default(),
            &cli(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::KeyMismatch { .. }), "{err:?}");
    let new = vault(db, new_key);
    put(&new, "meta/rc/b", &fake("b")).await;
    let cts = ciphertexts(db).await;
    assert!(
        cts.iter().all(|(_, c)| c[0] == 2),
        "every secret at version 2"
    );
    // A failed rotation leaves the check value as it was.
    corrupt(db, "meta/rc/a").await;
    assert!(new.rotate_key(&key(46), &cli()).await.is_err());
    assert_eq!(db.store.key_checks().await.unwrap(), checks);
}

/// A vault written before check values existed: the first successful verification against its
/// secrets records one (and a wrong key records nothing).
async fn a_vault_without_a_check_value_gets_one_on_first_verification(db: &TestDb) {
    let right = vault(db, key(47));
    for i in 0..8 {
        put(&right, &format!("meta/old/s{i}"), &fake("old")).await;
    }
    raw_execute(db, "DELETE FROM secret_key_checks").await;
    // The newest secrets are damaged; an older one still opens: the right key is recognised.
    for i in 2..8 {
        corrupt(db, &format!("meta/old/s{i}")).await;
    }
    let wrong = vault(db, key(48));
    let err = wrong
        .set(
            &path("meta/old/x"),
            &value(&fake("x")),
            &SetOptions::default(),
            &cli(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::KeyMismatch { .. }), "{err:?}");
    assert!(db.store.key_checks().await.unwrap().is_empty());
    put(&right, "meta/old/x", &fake("x")).await;
    let checks = db.store.key_checks().await.unwrap();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].key_version, 1);
    // From now on the check value decides.
    assert!(matches!(
        wrong.delete(&path("meta/old/x"), &cli()).await,
        Err(VaultError::KeyMismatch { .. })
    ));
}

async fn an_emptied_vault_may_start_over_with_another_key(db: &TestDb) {
    let first = vault(db, key(49));
    put(&first, "meta/e/a", &fake("a")).await;
    first.delete(&path("meta/e/a"), &cli()).await.unwrap();
    // Nothing is left that the first key protects: a new key may take over.
    let second = vault(db, key(50));
    let val = fake("b");
    put(&second, "meta/e/b", &val).await;
    assert_eq!(read(&second, "meta/e/b").await.unwrap(), val);
    // …and from then on the first key is the wrong one.
    assert!(matches!(
        first
            .set(
                &path("meta/e/c"),
                &value(&fake("c")),
                &SetOptions::default(),
                &cli()
            )
            .await,
        Err(VaultError::KeyMismatch { .. })
    ));
}
