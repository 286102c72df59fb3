//! The binary's foundation: doctor on both backends, help for every command, honest "not implemented".

mod support;

use std::path::Path;

use serde_json::Value;
use support::{expect_code, stdout, supervisor};

fn copy_example_state(to: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("state");
    copy_dir(&src, &to.join("state"));
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

fn doctor_json(cwd: &Path, database_url: Option<&str>) -> Value {
    let mut cmd = supervisor(cwd);
    cmd.args(["doctor", "--json"]);
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    let out = cmd.output().unwrap();
    expect_code(&out, 0);
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn doctor_on_the_embedded_default_needs_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    copy_example_state(dir.path());
    let report = doctor_json(dir.path(), None);
    assert_eq!(report["format_version"], "1");
    assert_eq!(report["ok"], true);
    assert_eq!(report["database"]["backend"], "sqlite");
    assert!(
        report["database"]["vector_extension"]
            .as_str()
            .unwrap()
            .starts_with('v')
    );
    assert_eq!(
        report["database"]["migrations_applied"]
            .as_array()
            .unwrap()
            .len(),
        report["database"]["migrations_known"].as_u64().unwrap() as usize
    );
    assert_eq!(report["encryption_key"]["present"], false);
    // The database file was created next to the state directory.
    assert!(dir.path().join(".supervisor/supervisor.db").is_file());
    let state = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "state")
        .unwrap();
    assert!(
        state["detail"]
            .as_str()
            .unwrap()
            .contains("2 projects, 5 services"),
        "{state}"
    );
}

#[tokio::test]
async fn doctor_against_postgres_reports_pgvector_and_migrations() {
    let url = support::db::fresh_postgres_url().await;
    let dir = tempfile::tempdir().unwrap();
    copy_example_state(dir.path());
    let report = doctor_json(dir.path(), Some(&url));
    assert_eq!(report["database"]["backend"], "postgres");
    assert!(
        report["database"]["vector_extension"].is_string(),
        "{report}"
    );
    assert!(report["database"]["server_version"].as_str().unwrap().len() >= 2);
    assert_eq!(report["database"]["migrations_applied"][0]["version"], 1);
}

#[test]
fn doctor_fails_with_the_fix_named_when_something_required_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let out = supervisor(dir.path())
        .args(["doctor"])
        .env("SECRETS_ENCRYPTION_KEY", "not-a-key")
        .output()
        .unwrap();
    expect_code(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("FAIL  state"), "{text}");
    assert!(text.contains("supervisor init"), "{text}");
    assert!(
        text.contains("FAIL  encryption key") && text.contains("64 hex characters"),
        "{text}"
    );
    assert!(
        !text.contains("not-a-key"),
        "the key's value is never printed: {text}"
    );
}

#[test]
fn a_malformed_config_file_is_an_error_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("supervisor.toml"), "databse_url = \"x\"\n").unwrap();
    let out = supervisor(dir.path()).args(["doctor"]).output().unwrap();
    expect_code(&out, 1);
    let err = support::stderr(&out);
    assert!(
        err.contains("supervisor.toml") && err.contains("databse_url"),
        "{err}"
    );
}

#[test]
fn every_command_has_help() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in [
        vec!["--help"],
        vec!["init", "--help"],
        vec!["validate", "--help"],
        vec!["fmt", "--help"],
        vec!["plan", "--help"],
        vec!["apply", "--help"],
        vec!["status", "--help"],
        vec!["serve", "--help"],
        vec!["mcp", "--help"],
        vec!["secrets", "--help"],
        vec!["ports", "--help"],
        vec!["timing", "--help"],
        vec!["knowledge", "--help"],
        vec!["instructions", "--help"],
        vec!["import", "--help"],
        vec!["token", "--help"],
        vec!["doctor", "--help"],
        vec!["schema", "--help"],
    ] {
        let out = supervisor(dir.path()).args(&cmd).output().unwrap();
        expect_code(&out, 0);
        assert!(stdout(&out).contains("Usage:"), "{cmd:?}");
    }
}

#[test]
fn usage_errors_exit_1_not_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = supervisor(dir.path())
        .args(["plan", "--no-such-flag"])
        .output()
        .unwrap();
    expect_code(&out, 1);
}

#[test]
fn unbuilt_commands_say_so_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = supervisor(dir.path())
        .args(["timing", "stats"])
        .output()
        .unwrap();
    expect_code(&out, 1);
    assert!(support::stderr(&out).contains("not implemented yet: timing"));
}

#[test]
fn the_shipped_example_state_is_valid_and_canonical() {
    let dir = tempfile::tempdir().unwrap();
    copy_example_state(dir.path());
    let out = supervisor(dir.path()).args(["validate"]).output().unwrap();
    expect_code(&out, 0);
    let out = supervisor(dir.path())
        .args(["fmt", "--check"])
        .output()
        .unwrap();
    expect_code(&out, 0);
}

#[test]
fn schema_describes_both_file_kinds_and_init_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out = supervisor(dir.path()).args(["schema"]).output().unwrap();
    expect_code(&out, 0);
    let schema: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let project = &schema["project"];
    assert_eq!(project["title"], "project");
    for key in [
        "name",
        "path",
        "port_range",
        "services",
        "secrets",
        "checks",
    ] {
        assert!(
            project["properties"].get(key).is_some(),
            "project schema lacks {key}"
        );
    }
    assert_eq!(
        project["additionalProperties"], false,
        "unknown keys are errors in the schema too"
    );
    assert!(
        schema["supervisor.yaml"]["properties"]
            .get("cloudflare")
            .is_some()
    );

    expect_code(&supervisor(dir.path()).args(["init"]).output().unwrap(), 0);
    let out = supervisor(dir.path()).args(["init"]).output().unwrap();
    expect_code(&out, 1);
    assert!(
        support::stderr(&out).contains("already exists"),
        "{}",
        support::stderr(&out)
    );
    expect_code(
        &supervisor(dir.path()).args(["validate"]).output().unwrap(),
        0,
    );
}
