//! `supervisor secrets …` through the real binary, on the embedded SQLite default and on PostgreSQL
//! (`DATABASE_URL`). Every value here is a generated fake; none is printed by the tests.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use aes_gcm::aead::array::typenum::U16;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use serde_json::Value;
use sqlx::Connection;
use support::{expect_code, stderr, stdout, supervisor};

/// Each named test body runs once on SQLite and once on PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::Env::new(None));
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let url = super::fresh_postgres();
                    super::$name(&super::Env::new(Some(url)));
                }
            )*
        }
    };
}

on_both_backends!(
    round_trip_set_get_list_audit_delete,
    set_strips_exactly_one_trailing_newline,
    values_never_come_from_the_command_line,
    key_problems_are_clear_errors_that_change_nothing,
    rotate_key_reencrypts_and_the_new_key_takes_over,
    expired_secrets_warn_on_get_and_in_doctor,
    import_legacy_brings_secrets_of_the_old_service,
    no_value_appears_in_any_output_or_log_at_trace_level,
);

fn fresh_postgres() -> String {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(support::db::fresh_postgres_url())
}

fn random_key_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn fake(label: &str) -> String {
    format!("fake-{label}-{}", uuid::Uuid::new_v4().simple())
}

struct Env {
    dir: tempfile::TempDir,
    database_url: Option<String>,
    key_hex: String,
}

impl Env {
    fn new(database_url: Option<String>) -> Env {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("state"),
            &dir.path().join("state"),
        );
        Env {
            dir,
            database_url,
            key_hex: random_key_hex(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The binary with this environment's database and key, as user `tester`.
    fn cmd(&self) -> Command {
        let mut c = self.bare();
        c.env("SECRETS_ENCRYPTION_KEY", &self.key_hex);
        c
    }

    /// The binary with this environment's database, without a key.
    fn bare(&self) -> Command {
        let mut c = supervisor(self.path());
        c.env("USER", "tester");
        if let Some(url) = &self.database_url {
            c.env("DATABASE_URL", url);
        }
        c
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    fn set(&self, path: &str, value: &str) {
        let out = run(
            self.cmd().args(["secrets", "set", path]),
            Some(value.as_bytes()),
        );
        expect_code(&out, 0);
    }

    fn get(&self, path: &str) -> Output {
        run(self.cmd().args(["secrets", "get", path]), None)
    }

    fn list_json(&self) -> Value {
        let out = run(self.bare().args(["secrets", "list", "--json"]), None);
        expect_code(&out, 0);
        serde_json::from_str(&stdout(&out)).unwrap()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn run(cmd: &mut Command, input: Option<&[u8]>) -> Output {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(bytes) = input {
        let mut stdin = child.stdin.take().unwrap();
        // A command that refuses its arguments exits without reading stdin.
        if let Err(e) = stdin.write_all(bytes) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
    }
    child.wait_with_output().unwrap()
}

fn round_trip_set_get_list_audit_delete(env: &Env) {
    let value = fake("round");
    let out = run(
        env.cmd().args([
            "secrets",
            "set",
            "project/shop/stripe_key",
            "--description",
            "Stripe (test mode)",
            "--expires",
            "2031-01-01",
        ]),
        Some(format!("{value}\n").as_bytes()),
    );
    expect_code(&out, 0);
    assert_eq!(stdout(&out), "created project/shop/stripe_key\n");

    let out = env.get("project/shop/stripe_key");
    expect_code(&out, 0);
    assert_eq!(stdout(&out), format!("{value}\n"), "the value alone");
    assert_eq!(stderr(&out), "");

    let out = run(
        env.cmd()
            .args(["--json", "secrets", "get", "project/shop/stripe_key"]),
        None,
    );
    expect_code(&out, 0);
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["value"], value.as_str());
    assert_eq!(json["expired"], false);

    let list = env.list_json();
    assert_eq!(list["format_version"], "1");
    let s = &list["secrets"][0];
    assert_eq!(s["path"], "project/shop/stripe_key");
    assert_eq!(s["scope"], "project");
    assert_eq!(s["project"], "shop");
    assert_eq!(s["description"], "Stripe (test mode)");
    assert_eq!(s["access_count"], 2);
    assert_eq!(s["expired"], false);
    assert_eq!(s["rotation_required"], false);
    assert!(s["expires_at"].as_str().unwrap().starts_with("2031-01-01"));
    assert!(s["last_accessed_at"].is_string() && s["created_at"].is_string());
    assert!(!list.to_string().contains(&value));

    let out = run(env.bare().args(["secrets", "list"]), None);
    expect_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("project/shop/stripe_key") && text.contains("2031-01-01"),
        "{text}"
    );
    let filtered = run(
        env.bare()
            .args(["secrets", "list", "--json", "--project", "blog"]),
        None,
    );
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&filtered)).unwrap()["secrets"],
        serde_json::json!([])
    );
    let bad_scope = run(env.bare().args(["secrets", "list", "--scope", "x"]), None);
    expect_code(&bad_scope, 1);
    assert!(stderr(&bad_scope).contains("meta, project or service"));

    let out = run(
        env.bare()
            .args(["secrets", "delete", "project/shop/stripe_key"]),
        None,
    );
    expect_code(&out, 0);
    let out = env.get("project/shop/stripe_key");
    expect_code(&out, 1);
    assert!(stderr(&out).contains("no secret at project/shop/stripe_key"));

    let audit = run(env.bare().args(["secrets", "audit", "--json"]), None);
    expect_code(&audit, 0);
    let events: Value = serde_json::from_str(&stdout(&audit)).unwrap();
    let seen: Vec<(String, String, String)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["actor"], "cli:tester");
            (
                e["path"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let p = "project/shop/stripe_key".to_string();
    assert_eq!(
        seen,
        [
            (p.clone(), "read".into(), "not_found".into()),
            (p.clone(), "delete".into(), "ok".into()),
            (p.clone(), "read".into(), "ok".into()),
            (p.clone(), "read".into(), "ok".into()),
            (p.clone(), "write".into(), "ok".into()),
        ]
    );
    let text = run(
        env.bare()
            .args(["secrets", "audit", "--path", "project/shop/stripe_key"]),
        None,
    );
    expect_code(&text, 0);
    assert_eq!(stdout(&text).lines().count(), 5);
}

fn set_strips_exactly_one_trailing_newline(env: &Env) {
    let value = fake("file");
    let file = env.write("value.txt", &format!("{value}\n\n"));
    let out = run(
        env.cmd()
            .args(["secrets", "set", "meta/file/v", "--value-file"])
            .arg(&file),
        None,
    );
    expect_code(&out, 0);
    assert_eq!(
        stdout(&env.get("meta/file/v")),
        format!("{value}\n\n"),
        "one newline kept"
    );
    let out = run(
        env.cmd().args(["secrets", "set", "meta/file/crlf"]),
        Some(format!("{value}\r\n").as_bytes()),
    );
    expect_code(&out, 0);
    assert_eq!(stdout(&env.get("meta/file/crlf")), format!("{value}\n"));
    // Multi-line values (a PEM key, a service-account JSON) round-trip byte for byte.
    let multi = format!("line one {value}\n  line two\ttab\nline three");
    env.set("meta/file/multi", &multi);
    assert_eq!(stdout(&env.get("meta/file/multi")), format!("{multi}\n"));
    let out = run(
        env.cmd()
            .args(["--json", "secrets", "set", "meta/file/multi"]),
        Some(b"replaced-fake-value"),
    );
    expect_code(&out, 0);
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["result"], "updated");
}

fn values_never_come_from_the_command_line(env: &Env) {
    let value = fake("argv");
    let out = run(
        env.cmd().args(["secrets", "set", "meta/argv/x", &value]),
        Some(b"ignored"),
    );
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("unexpected argument"),
        "{}",
        stderr(&out)
    );
    for input in [&b""[..], b"\n", b"\r\n"] {
        let out = run(
            env.cmd().args(["secrets", "set", "meta/argv/x"]),
            Some(input),
        );
        expect_code(&out, 1);
        assert!(
            stderr(&out).contains("the value is empty"),
            "{}",
            stderr(&out)
        );
    }
    let out = run(
        env.cmd().args(["secrets", "set", "meta/argv/x"]),
        Some(&[0xff, 0xfe, 0x41]),
    );
    expect_code(&out, 1);
    assert!(stderr(&out).contains("not valid UTF-8"));
    let out = run(
        env.cmd().args([
            "secrets",
            "set",
            "meta/argv/x",
            "--value-file",
            "missing.txt",
        ]),
        None,
    );
    expect_code(&out, 1);
    assert!(stderr(&out).contains("missing.txt"));
    let out = run(
        env.cmd().args(["secrets", "set", "Meta/../x"]),
        Some(b"v-fake"),
    );
    expect_code(&out, 1);
    assert!(stderr(&out).contains("invalid secret path"));
    let out = run(
        env.cmd()
            .args(["secrets", "set", "meta/argv/x", "--expires", "someday"]),
        Some(b"v-fake"),
    );
    expect_code(&out, 1);
    assert!(stderr(&out).contains("invalid --expires"));
    assert_eq!(env.list_json()["secrets"], serde_json::json!([]));
}

fn key_problems_are_clear_errors_that_change_nothing(env: &Env) {
    let db_file = env.path().join(".supervisor/supervisor.db");
    // No key: refused before the database is even opened.
    let out = run(
        env.bare().args(["secrets", "set", "meta/k/a"]),
        Some(b"fake-v1"),
    );
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("no encryption key"),
        "{}",
        stderr(&out)
    );
    if env.database_url.is_none() {
        assert!(!db_file.exists(), "a refused command created the database");
    }
    let out = run(
        env.bare()
            .env("SECRETS_ENCRYPTION_KEY", "0123abcd")
            .args(["secrets", "get", "meta/k/a"]),
        None,
    );
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("malformed") && err.contains("8 characters") && !err.contains("0123abcd"),
        "{err}"
    );
    let key_file = env.write("bad.key", "zz");
    let out = run(
        env.bare()
            .args(["secrets", "get", "meta/k/a", "--key-file"])
            .arg(&key_file),
        None,
    );
    expect_code(&out, 1);
    assert!(stderr(&out).contains("bad.key"), "{}", stderr(&out));

    let value = fake("keep");
    env.set("meta/k/a", &value);
    let before = env.list_json();
    let wrong = random_key_hex();
    let out = run(
        env.bare()
            .env("SECRETS_ENCRYPTION_KEY", &wrong)
            .args(["secrets", "get", "meta/k/a"]),
        None,
    );
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("cannot decrypt the secret at meta/k/a")
            && err.contains("fingerprint")
            && err.contains("it is the wrong key"),
        "{err}"
    );
    assert!(!err.contains(&wrong) && !err.contains(&value));
    let out = run(
        env.bare()
            .env("SECRETS_ENCRYPTION_KEY", &wrong)
            .args(["secrets", "set", "meta/k/b"]),
        Some(b"fake-other"),
    );
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("does not match this vault"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("Nothing was changed"));
    let new_key = env.write("new.key", &random_key_hex());
    let out = run(
        env.bare()
            .env("SECRETS_ENCRYPTION_KEY", &wrong)
            .args(["secrets", "rotate-key", "--new-key-file"])
            .arg(&new_key),
        None,
    );
    expect_code(&out, 1);
    assert!(stderr(&out).contains("does not match this vault"));
    // A wrong key deletes nothing either.
    let out = run(
        env.bare()
            .env("SECRETS_ENCRYPTION_KEY", &wrong)
            .args(["secrets", "delete", "meta/k/a"]),
        None,
    );
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("does not match this vault"),
        "{}",
        stderr(&out)
    );
    // A key file that never ends is refused after a few kilobytes, not read to exhaustion.
    let started = std::time::Instant::now();
    let out = run(
        env.bare()
            .args(["secrets", "get", "meta/k/a", "--key-file", "/dev/zero"]),
        None,
    );
    expect_code(&out, 1);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        stderr(&out).contains("/dev/zero") && stderr(&out).contains("larger than"),
        "{}",
        stderr(&out)
    );
    let after = env.list_json();
    assert_eq!(before, after, "paths, versions, counters unchanged");
    assert_eq!(stdout(&env.get("meta/k/a")), format!("{value}\n"));
}

fn rotate_key_reencrypts_and_the_new_key_takes_over(env: &Env) {
    let (a, b) = (fake("ra"), fake("rb"));
    env.set("meta/rot/a", &a);
    env.set("project/p/b", &b);
    let new_hex = random_key_hex();
    let new_key = env.write("new.key", &format!("{new_hex}\n"));
    let out = run(
        env.cmd()
            .args(["secrets", "rotate-key", "--new-key-file"])
            .arg(&new_key),
        None,
    );
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains("re-encrypted 2 secret(s) with key version 2"),
        "{}",
        stdout(&out)
    );
    expect_code(&env.get("meta/rot/a"), 1);
    let with_new = |p: &str| {
        run(
            env.bare()
                .args(["secrets", "get", p, "--key-file"])
                .arg(&new_key),
            None,
        )
    };
    assert_eq!(stdout(&with_new("meta/rot/a")), format!("{a}\n"));
    assert_eq!(stdout(&with_new("project/p/b")), format!("{b}\n"));
    let via_env = run(
        env.bare()
            .env("SECRETS_ENCRYPTION_KEY", &new_hex)
            .args(["secrets", "get", "project/p/b"]),
        None,
    );
    assert_eq!(stdout(&via_env), format!("{b}\n"));
    let list = env.list_json();
    assert!(
        list["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["key_version"] == 2)
    );
    // The same key again is refused.
    let out = run(
        env.bare()
            .args(["secrets", "rotate-key", "--new-key-file"])
            .arg(&new_key)
            .arg("--key-file")
            .arg(&new_key),
        None,
    );
    expect_code(&out, 1);
    assert!(stderr(&out).contains("already in use"));
}

fn expired_secrets_warn_on_get_and_in_doctor(env: &Env) {
    let value = fake("old");
    let out = run(
        env.cmd().args([
            "secrets",
            "set",
            "meta/exp/old",
            "--expires",
            "2020-01-01",
            "--rotation-required",
        ]),
        Some(value.as_bytes()),
    );
    expect_code(&out, 0);
    env.set("meta/exp/fine", &fake("fine"));
    let out = env.get("meta/exp/old");
    expect_code(&out, 0);
    assert_eq!(stdout(&out), format!("{value}\n"), "still readable");
    let err = stderr(&out);
    assert!(
        err.contains("warning: the secret at meta/exp/old expired at 2020-01-01"),
        "{err}"
    );
    assert!(err.contains("flagged for rotation"), "{err}");
    assert!(stderr(&env.get("meta/exp/fine")).is_empty());

    let list = env.list_json();
    let old = list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "meta/exp/old")
        .unwrap()
        .clone();
    assert_eq!(
        (old["expired"].clone(), old["rotation_required"].clone()),
        (true.into(), true.into())
    );

    let out = run(env.cmd().args(["doctor", "--json"]), None);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "secrets")
        .unwrap()
        .clone();
    assert_eq!(check["status"], "warn");
    assert_eq!(
        check["detail"],
        "2 stored; 1 expired (meta/exp/old); 1 flagged for rotation (meta/exp/old)"
    );
    let out = run(env.cmd().args(["doctor"]), None);
    assert!(stdout(&out).contains("warn  secrets"), "{}", stdout(&out));
}

fn legacy_seal(key_hex: &str, plaintext: &str) -> Vec<u8> {
    let key = hex::decode(key_hex).unwrap();
    let iv: [u8; 16] = rand::random();
    let ct = AesGcm::<Aes256, U16>::new(key.as_slice().try_into().unwrap())
        .encrypt(&Nonce::from(iv), plaintext.as_bytes())
        .unwrap();
    let (body, tag) = ct.split_at(ct.len() - 16);
    [&iv[..], tag, body].concat()
}

const LEGACY_TABLE: &str = "CREATE TABLE secrets (id INTEGER, key_path TEXT NOT NULL UNIQUE,
    encrypted_value {BLOB} NOT NULL, description TEXT, scope TEXT NOT NULL, project_name TEXT,
    service_name TEXT, created_at TIMESTAMP WITH TIME ZONE, updated_at TIMESTAMP WITH TIME ZONE,
    created_by TEXT, last_accessed_at TIMESTAMP WITH TIME ZONE, access_count INTEGER DEFAULT 0,
    expires_at TIMESTAMP WITH TIME ZONE, rotation_required BOOLEAN DEFAULT FALSE)";
const LEGACY_INSERT: &str = "INSERT INTO secrets (key_path, encrypted_value, description, scope)
    VALUES ($1, $2, 'legacy', 'meta')";

/// A database of the old service (same backend as `env`) holding `secrets`; returns its URL.
fn legacy_database(env: &Env, key_hex: &str, secrets: &[(&str, &str)]) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        match env.database_url {
            None => {
                let file = env
                    .path()
                    .join(format!("legacy-{}.db", uuid::Uuid::new_v4().simple()));
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&file)
                    .create_if_missing(true);
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .unwrap();
                sqlx::query(sqlx::AssertSqlSafe(LEGACY_TABLE.replace("{BLOB}", "BLOB")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                for (path, value) in secrets {
                    sqlx::query(LEGACY_INSERT)
                        .bind(*path)
                        .bind(legacy_seal(key_hex, value))
                        .execute(&mut conn)
                        .await
                        .unwrap();
                }
                conn.close().await.unwrap();
                format!("sqlite://{}", file.display())
            }
            Some(_) => {
                let url = support::db::fresh_postgres_url().await;
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(LEGACY_TABLE.replace("{BLOB}", "BYTEA")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                for (path, value) in secrets {
                    sqlx::query(LEGACY_INSERT)
                        .bind(*path)
                        .bind(legacy_seal(key_hex, value))
                        .execute(&mut conn)
                        .await
                        .unwrap();
                }
                conn.close().await.unwrap();
                url
            }
        }
    })
}

fn import_legacy_brings_secrets_of_the_old_service(env: &Env) {
    let legacy_hex = random_key_hex();
    let legacy_key = env.write("legacy.key", &legacy_hex);
    let (a, b) = (fake("legacy-a"), fake("legacy-b"));
    let url = legacy_database(
        env,
        &legacy_hex,
        &[("meta/openai/api_key", &a), ("project/consilio/db_url", &b)],
    );
    let out = run(
        env.cmd()
            .args([
                "secrets",
                "import-legacy",
                "--from",
                &url,
                "--legacy-key-file",
            ])
            .arg(&legacy_key),
        None,
    );
    expect_code(&out, 0);
    assert!(
        stdout(&out).starts_with("imported 2 of 2 secret(s) from "),
        "{}",
        stdout(&out)
    );
    assert_eq!(stdout(&env.get("meta/openai/api_key")), format!("{a}\n"));
    assert_eq!(
        stdout(&env.get("project/consilio/db_url")),
        format!("{b}\n")
    );
    // Running it again imports nothing: the paths exist now.
    let out = run(
        env.cmd()
            .args([
                "--json",
                "secrets",
                "import-legacy",
                "--from",
                &url,
                "--legacy-key-file",
            ])
            .arg(&legacy_key),
        None,
    );
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("2 already in the vault"),
        "{}",
        stderr(&out)
    );
    // The wrong legacy key: nothing imported, the paths named, no value shown.
    let other = env.write("other.key", &random_key_hex());
    let url2 = legacy_database(env, &legacy_hex, &[("meta/new/one", &fake("n"))]);
    let out = run(
        env.cmd()
            .args([
                "secrets",
                "import-legacy",
                "--from",
                &url2,
                "--legacy-key-file",
            ])
            .arg(&other),
        None,
    );
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("cannot be decrypted with the legacy key: meta/new/one"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.list_json()["secrets"].as_array().unwrap().len(), 2);
}

/// The acceptance test for leaks: known values set, every `secrets` subcommand and `doctor` run at
/// trace level; only `secrets get` may print a value — on stdout, alone.
fn no_value_appears_in_any_output_or_log_at_trace_level(env: &Env) {
    let plain = fake("leak");
    let multi = format!("-----BEGIN FAKE-----\n{}\n-----END FAKE-----", fake("pem"));
    let token_like = fake_github_token();
    let legacy_value = fake("legacy-leak");
    let legacy_hex = random_key_hex();
    let legacy_key = env.write("legacy.key", &legacy_hex);
    let legacy_url = legacy_database(env, &legacy_hex, &[("meta/legacy/leak", &legacy_value)]);
    let value_file = env.write("value.txt", &plain);
    let new_hex = random_key_hex();
    let new_key = env.write("new.key", &new_hex);
    // Values no credential detector recognises: only not logging them at all keeps them out.
    let ordinary = "correct horse battery staple 42".to_string();
    let on_argv = "purple monkey dishwasher 17".to_string();
    let over_mcp = "the quick brown fox jumps 29".to_string();
    let over_stdio = "lorem ipsum dolor sit amet 63".to_string();
    let numeric = "73914286150".to_string();
    // The values, and the keys themselves: none may appear anywhere but where allowed.
    let values = [
        plain.clone(),
        multi.clone(),
        token_like.clone(),
        legacy_value.clone(),
        env.key_hex.clone(),
        new_hex.clone(),
        legacy_hex.clone(),
        ordinary.clone(),
        on_argv.clone(),
        over_mcp.clone(),
        over_stdio.clone(),
        numeric.clone(),
    ];
    let notes = env.write(
        "notes.txt",
        &format!("deploy notes\nGITHUB_TOKEN={token_like}\nplain {plain}\n"),
    );

    let traced = |c: &mut Command| {
        c.env("LOG_LEVEL", "trace").arg("-vvv");
    };
    let check = |what: &str, out: &Output, allowed_stdout: Option<&str>| {
        let (so, se) = (stdout(out), stderr(out));
        for v in &values {
            for line in v.lines() {
                assert!(!se.contains(line), "{what}: a value appeared on stderr");
                if allowed_stdout != Some(v.as_str()) {
                    assert!(!so.contains(line), "{what}: a value appeared on stdout");
                }
            }
        }
        if let Some(v) = allowed_stdout {
            assert_eq!(so, format!("{v}\n"), "{what}: stdout is the value alone");
        }
    };

    let mut steps: Vec<(String, Output, Option<String>)> = Vec::new();
    let mut step = |name: &str, cmd: &mut Command, input: Option<&[u8]>, allowed: Option<&str>| {
        traced(cmd);
        let out = run(cmd, input);
        steps.push((name.to_string(), out, allowed.map(str::to_string)));
    };
    step(
        "set (stdin)",
        env.cmd()
            .args(["secrets", "set", "meta/leak/plain", "--description", "d"]),
        Some(plain.as_bytes()),
        None,
    );
    step(
        "set (file)",
        env.cmd()
            .args(["secrets", "set", "meta/leak/file", "--value-file"])
            .arg(&value_file),
        None,
        None,
    );
    step(
        "set (multi-line, expired)",
        env.cmd().args([
            "secrets",
            "set",
            "project/leak/pem",
            "--expires",
            "2020-01-01",
        ]),
        Some(multi.as_bytes()),
        None,
    );
    step(
        "set (token-like)",
        env.cmd().args(["secrets", "set", "meta/github/token"]),
        Some(token_like.as_bytes()),
        None,
    );
    step(
        "set (ordinary words)",
        env.cmd().args(["secrets", "set", "meta/leak/ordinary"]),
        Some(ordinary.as_bytes()),
        None,
    );
    step(
        "set (value on the command line)",
        env.cmd()
            .args(["secrets", "set", "meta/leak/argv", &on_argv]),
        None,
        None,
    );
    step(
        "get",
        env.cmd().args(["secrets", "get", "meta/leak/plain"]),
        None,
        Some(&plain),
    );
    step(
        "get (ordinary words)",
        env.cmd().args(["secrets", "get", "meta/leak/ordinary"]),
        None,
        Some(&ordinary),
    );
    step(
        "get (expired, multi-line)",
        env.cmd().args(["secrets", "get", "project/leak/pem"]),
        None,
        Some(&multi),
    );
    step(
        "get (wrong key)",
        env.bare()
            .env("SECRETS_ENCRYPTION_KEY", random_key_hex())
            .args(["secrets", "get", "meta/leak/plain"]),
        None,
        None,
    );
    step(
        "set (wrong key)",
        env.bare()
            .env("SECRETS_ENCRYPTION_KEY", random_key_hex())
            .args(["secrets", "set", "meta/leak/plain"]),
        Some(plain.as_bytes()),
        None,
    );
    step("list", env.cmd().args(["secrets", "list"]), None, None);
    step(
        "list --json",
        env.cmd().args(["secrets", "list", "--json"]),
        None,
        None,
    );
    step("audit", env.cmd().args(["secrets", "audit"]), None, None);
    step(
        "audit --json",
        env.cmd().args(["secrets", "audit", "--json"]),
        None,
        None,
    );
    step(
        "scan",
        env.cmd().args(["secrets", "scan"]).arg(&notes),
        None,
        None,
    );
    step(
        "detect",
        env.cmd().args(["secrets", "detect", "--project", "leak"]),
        Some(format!("export GITHUB_TOKEN={token_like}\n").as_bytes()),
        None,
    );
    step(
        "import-legacy",
        env.cmd()
            .args([
                "secrets",
                "import-legacy",
                "--from",
                &legacy_url,
                "--legacy-key-file",
            ])
            .arg(&legacy_key),
        None,
        None,
    );
    step(
        "rotate-key",
        env.cmd()
            .args(["secrets", "rotate-key", "--new-key-file"])
            .arg(&new_key),
        None,
        None,
    );
    step(
        "get (after rotation)",
        env.bare()
            .args(["secrets", "get", "meta/legacy/leak", "--key-file"])
            .arg(&new_key),
        None,
        Some(&legacy_value),
    );
    step(
        "delete",
        env.bare().args(["secrets", "delete", "meta/leak/file"]),
        None,
        None,
    );
    // The engine's commands, with a project that requires secrets (some set, one expired, one missing):
    // plans and status name paths, never values.
    env.write(
        "state/projects/leak.yaml",
        "name: leak\nservices:\n  - name: api\nsecrets:\n  required: [project/leak/pem, project/leak/missing]\n",
    );
    let fresh_state = env.path().join("fresh-state");
    let history = env
        .write(
            "history.jsonl",
            "{\"task_id\": \"leak-h1\", \"description\": \"leak test history\", \"task_type\": \"bugfix\", \"project\": \"leak\", \"duration_seconds\": 600}\n",
        )
        .display()
        .to_string();
    let docs = env.path().join("leak-docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("deploy.md"),
        "# Deploy\n\nDeploys happen on fridays.\n",
    )
    .unwrap();
    let docs = docs.display().to_string();
    step("init", env.cmd().arg("init").arg(&fresh_state), None, None);
    for (name, args) in [
        ("schema", &["schema"][..]),
        (
            "token create",
            &["token", "create", "--meta", "--description", "leak"],
        ),
        ("token list", &["token", "list"]),
        ("ports audit", &["ports", "audit"]),
        (
            "import cloudflare (not configured)",
            &["import", "cloudflare"],
        ),
        ("import ports (not implemented)", &["import", "ports"]),
        (
            "timing start",
            &[
                "timing",
                "start",
                "-d",
                "leak test task",
                "--type",
                "bugfix",
                "--project",
                "leak",
                "--task-id",
                "leak-1",
                "--estimate",
                "10m",
            ],
        ),
        (
            "timing complete",
            &["timing", "complete", "leak-1", "--summary", "done"],
        ),
        ("timing import", &["timing", "import", history.as_str()]),
        (
            "timing estimate",
            &[
                "timing",
                "estimate",
                "-d",
                "leak test",
                "--type",
                "bugfix",
                "--project",
                "leak",
            ],
        ),
        ("timing stats", &["timing", "stats"]),
        ("timing list", &["timing", "list"]),
        (
            "knowledge index",
            &["knowledge", "index", docs.as_str(), "--project", "leak"],
        ),
        (
            "knowledge learn",
            &[
                "knowledge",
                "learn",
                "--title",
                "deploys",
                "--text",
                "deploys happen on fridays",
                "--project",
                "leak",
            ],
        ),
        ("knowledge search", &["knowledge", "search", "deploy"]),
        ("knowledge list", &["knowledge", "list"]),
        ("vm get (not configured)", &["vm", "get", "host-1"]),
        ("vm health (not configured)", &["vm", "health", "host-1"]),
        ("instructions render", &["instructions", "render", "leak"]),
        (
            "instructions render --meta",
            &["instructions", "render", "--meta"],
        ),
        ("validate", &["validate"][..]),
        ("plan", &["plan"]),
        ("plan --json", &["plan", "--json"]),
        ("apply", &["apply", "--auto-approve"]),
        ("apply --json", &["apply", "--auto-approve", "--json"]),
        ("status", &["status"]),
        ("status --json", &["status", "--json"]),
        ("ports list", &["ports", "list"]),
        ("fmt --check", &["fmt", "--check"]),
    ] {
        step(name, env.cmd().args(args), None, None);
    }
    step("doctor", env.cmd().args(["doctor"]), None, None);
    step(
        "doctor --json",
        env.cmd().args(["doctor", "--json"]),
        None,
        None,
    );
    step(
        "instructions adapt",
        env.cmd().args(["instructions", "adapt"]).arg(env.path()),
        None,
        None,
    );
    let saved = env.path().join("saved.plan");
    step(
        "plan --out",
        env.cmd().arg("plan").arg("--out").arg(&saved),
        None,
        None,
    );
    step(
        "apply (saved plan)",
        env.cmd().arg("apply").arg(&saved).arg("--auto-approve"),
        None,
        None,
    );
    // A token to revoke, then its revocation.
    let traced_run = |args: &[&str]| {
        let mut c = env.cmd();
        traced(&mut c);
        run(c.args(args), None)
    };
    let created = traced_run(&["token", "create", "--meta", "--json"]);
    let id = serde_json::from_str::<Value>(&stdout(&created)).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    steps.push(("token create --json".into(), created, None));
    steps.push((
        "token revoke".into(),
        traced_run(&["token", "revoke", &id]),
        None,
    ));

    let mut trace_lines = 0;
    for (name, out, allowed) in &steps {
        check(name, out, allowed.as_deref());
        trace_lines += stderr(out).lines().filter(|l| l.contains("TRACE")).count();
    }
    assert!(trace_lines > 0, "trace logging was not on");
    // The commands that were meant to succeed did.
    for (name, out, _) in &steps {
        if name == "ports audit" {
            // Exit 1 when a socket on this machine conflicts with the registry: not ours to decide.
            assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(out));
            continue;
        }
        let expected = if name.contains("wrong key")
            || name == "scan"
            || name.contains("command line")
            || name.contains("not ")
        {
            1
        } else {
            0
        };
        assert_eq!(out.status.code(), Some(expected), "{name}: {}", stderr(out));
    }
    let argv = steps
        .iter()
        .find(|(n, _, _)| n.contains("command line"))
        .map(|(_, out, _)| stderr(out))
        .unwrap();
    assert!(
        argv.contains("unexpected argument") && argv.contains("--value-file"),
        "{argv}"
    );

    // `serve` at trace level, with MCP calls that carry values in both directions.
    // The key is the rotated one from here on.
    let log = serve_mcp_at_trace_level(env, &new_hex, &over_mcp, &numeric, &ordinary, &multi);
    for v in &values {
        for line in v.lines() {
            assert!(!log.contains(line), "serve: a value appeared in its log");
        }
    }
    assert!(
        log.lines()
            .any(|l| l.contains("DEBUG") || l.contains("TRACE")),
        "debug logging was not on in serve"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("MCP tool call") && l.contains("set_secret")),
        "serve logs which tools were called (never their arguments)"
    );

    // `mcp` over stdio at trace level.
    let stdio_log = stdio_mcp_at_trace_level(env, &new_hex, &over_stdio, &ordinary);
    for v in &values {
        for line in v.lines() {
            assert!(
                !stdio_log.contains(line),
                "mcp: a value appeared in its log"
            );
        }
    }
    assert!(
        stdio_log
            .lines()
            .any(|l| l.contains("MCP tool call") && l.contains("get_secret")),
        "mcp logs which tools were called: {stdio_log}"
    );
}

/// Runs `serve` at trace level (meta token), sets and reads secrets over MCP, sends a malformed
/// request and a wrongly typed value; returns everything the server logged.
fn serve_mcp_at_trace_level(
    env: &Env,
    key_hex: &str,
    value: &str,
    numeric: &str,
    existing: &str,
    multi_line: &str,
) -> String {
    let out = run(
        env.cmd().args(["token", "create", "--meta", "--json"]),
        None,
    );
    expect_code(&out, 0);
    let token: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut cmd = env.bare();
        cmd.env("SECRETS_ENCRYPTION_KEY", key_hex)
            .env("LOG_LEVEL", "trace")
            .args(["-vvv", "serve", "--listen", "127.0.0.1:0"]);
        let server = support::mcp::Server::spawn(cmd).await;
        let meta = support::mcp::McpClient::connect(&server.url("/mcp/meta"), Some(&token)).await;
        let set = meta
            .call(
                "set_secret",
                serde_json::json!({"path": "meta/leak/mcp", "value": value}),
            )
            .await
            .unwrap();
        assert_eq!(set["written"], "created");
        let got = meta
            .call("get_secret", serde_json::json!({"path": "meta/leak/mcp"}))
            .await
            .unwrap();
        assert_eq!(got["value"], value);
        let got = meta
            .call("get_secret", serde_json::json!({"path": "meta/leak/ordinary"}))
            .await
            .unwrap();
        assert_eq!(got["value"], existing);
        let got = meta
            .call("get_secret", serde_json::json!({"path": "project/leak/pem"}))
            .await
            .unwrap();
        assert_eq!(got["value"], multi_line);
        meta.call("list_secrets", serde_json::json!({}))
            .await
            .unwrap();
        // A value of the wrong type: the parameter error must not carry it into the log.
        let number: u64 = numeric.parse().unwrap();
        let wrong = meta
            .rpc(
                "tools/call",
                serde_json::json!({"name": "set_secret",
                                   "arguments": {"path": "meta/leak/number", "value": number}}),
            )
            .await;
        assert!(
            wrong.get("error").is_some() || wrong["result"]["isError"] == true,
            "{wrong}"
        );
        // A malformed request carrying a value.
        let truncated = format!(
            r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"set_secret","arguments":{{"path":"meta/leak/cut","value":"{value}"#
        );
        let r = support::mcp::http()
            .post(server.url("/mcp/meta"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(truncated)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        server.log()
    })
}

/// Runs `mcp --meta` over stdio at trace level: sets and reads a secret; returns its stderr.
fn stdio_mcp_at_trace_level(env: &Env, key_hex: &str, value: &str, existing: &str) -> String {
    let lines = [
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "leak-test", "version": "1"}}}),
        serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "set_secret", "arguments": {"path": "meta/leak/stdio", "value": value}}}),
        serde_json::json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "get_secret", "arguments": {"path": "meta/leak/stdio"}}}),
        serde_json::json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
            "params": {"name": "get_secret", "arguments": {"path": "meta/leak/ordinary"}}}),
    ];
    let mut child = env
        .bare()
        .env("SECRETS_ENCRYPTION_KEY", key_hex)
        .env("LOG_LEVEL", "trace")
        .args(["-vvv", "mcp", "--meta"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout_pipe = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout_pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    // One request at a time: the server handles requests concurrently.
    let mut answers = Vec::new();
    for l in &lines {
        writeln!(stdin, "{l}").unwrap();
        if l.get("id").is_some() {
            answers.push(
                rx.recv_timeout(std::time::Duration::from_secs(30))
                    .expect("an answer from supervisor mcp"),
            );
        }
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    let by_id = |id: i64| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no answer {id}: {answers:?}"))
    };
    assert_eq!(by_id(2)["result"]["isError"], false, "{:?}", by_id(2));
    assert_eq!(by_id(3)["result"]["structuredContent"]["value"], value);
    assert_eq!(by_id(4)["result"]["structuredContent"]["value"], existing);
    stderr(&out)
}

// ---------------------------------------------------------------------------------------------------
// scan and detect need no database.

/// A fake GitHub token of the real format (generated, never a real one).
fn fake_github_token() -> String {
    let mut s = String::from("ghp_");
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for _ in 0..36 {
        s.push(alphabet[rand::random_range(0..alphabet.len())] as char);
    }
    s
}

#[test]
fn scan_reports_file_line_kind_masked_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let token = fake_github_token();
    let root = dir.path();
    std::fs::create_dir_all(root.join("src/deep")).unwrap();
    std::fs::write(
        root.join("src/deep/config.py"),
        format!("# settings\n\nclient = Github(\n    token=\"{token}\")\n"),
    )
    .unwrap();
    std::fs::write(
        root.join("README.md"),
        "commit da39a3ee5e6b4b0d3255bfef95601890afd80709, id 123e4567-e89b-12d3-a456-426614174000\n",
    )
    .unwrap();
    for skipped in [".git", "target", "node_modules"] {
        std::fs::create_dir_all(root.join(skipped)).unwrap();
        std::fs::write(root.join(skipped).join("leak.txt"), &token).unwrap();
    }
    let mut binary = b"\x00\x01binary".to_vec();
    binary.extend_from_slice(token.as_bytes());
    std::fs::write(root.join("blob.bin"), binary).unwrap();

    let out = supervisor(root)
        .args(["secrets", "scan", "."])
        .output()
        .unwrap();
    expect_code(&out, 1);
    let text = stdout(&out);
    assert_eq!(
        text,
        "./src/deep/config.py:4:12: github_token ghp_…(40 chars)\n\
         1 credential(s) found in 2 file(s) scanned (skipped 1 binary)\n"
    );
    assert!(!text.contains(&token));

    let out = supervisor(root)
        .args(["secrets", "scan", "--json", "src", "README.md"])
        .output()
        .unwrap();
    expect_code(&out, 1);
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["format_version"], "1");
    assert_eq!(json["files_scanned"], 2);
    assert_eq!(
        json["findings"],
        serde_json::json!([{"file": "src/deep/config.py", "line": 4, "column": 12,
                             "kind": "github_token", "masked": "ghp_…(40 chars)"}])
    );
    // A path named explicitly is scanned even inside a skipped directory.
    let out = supervisor(root)
        .args(["secrets", "scan", "target/leak.txt"])
        .output()
        .unwrap();
    expect_code(&out, 1);
}

#[test]
fn scan_of_clean_files_exits_0_and_missing_paths_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("clean.rs"),
        "fn main() { println!(\"hello\"); }\n",
    )
    .unwrap();
    let out = supervisor(dir.path())
        .args(["secrets", "scan", "clean.rs"])
        .output()
        .unwrap();
    expect_code(&out, 0);
    assert_eq!(stdout(&out), "0 credential(s) found in 1 file(s) scanned\n");
    let out = supervisor(dir.path())
        .args(["secrets", "scan", "nope"])
        .output()
        .unwrap();
    expect_code(&out, 1);
    assert!(stderr(&out).contains("cannot scan nope"));
}

#[test]
fn detect_suggests_a_vault_path_per_credential() {
    let dir = tempfile::tempdir().unwrap();
    let token = fake_github_token();
    let input = format!("here is my token {token}\nand the AWS id AKIAZ7FAKEFAKEFAKE2Q\n");
    let out = run(
        supervisor(dir.path()).args(["secrets", "detect"]),
        Some(input.as_bytes()),
    );
    expect_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "1:18: github_token ghp_…(40 chars)  →  supervisor secrets set meta/github/github_token\n\
         2:16: aws_access_key_id AKIA…(20 chars)  →  supervisor secrets set meta/aws/aws_access_key_id\n"
    );
    let out = run(
        supervisor(dir.path()).args(["secrets", "detect", "--json", "--project", "shop"]),
        Some(input.as_bytes()),
    );
    expect_code(&out, 0);
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let paths: Vec<&str> = json["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["suggested_path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "project/shop/github_token",
            "project/shop/aws_access_key_id"
        ]
    );
    assert!(!stdout(&out).contains(&token));
    let out = run(
        supervisor(dir.path()).args(["secrets", "detect"]),
        Some(b"nothing to see here\n"),
    );
    expect_code(&out, 0);
    assert_eq!(stdout(&out), "no credentials found\n");
}
