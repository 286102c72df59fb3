//! Database faults under a running `serve`:
//! - PostgreSQL restarted (a private server, started for this test from `SUPERVISOR_TEST_PG_BIN`):
//!   `/health` shows the outage while it lasts, MCP calls fail with an error that says so, the
//!   leader steps down, and once the server is back everything works again without a restart;
//! - the SQLite file removed, replaced or made read-only: `/health` says which, no call works on a
//!   silently created empty database or the unlinked file, and putting the file back heals it;
//! - leader failover between two `serve`s with an apply in flight (both backends): the survivor
//!   takes over, marks the killed run interrupted and finishes, with no port given twice.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Workspace;
use support::mcp::{McpClient, Server, eventually, http};

cli_conformance!(killing_the_leader_mid_apply_hands_the_work_to_the_other_server);

/// `/health` as (HTTP status, body).
async fn health(server: &Server) -> (u16, Value) {
    let r = http()
        .get(server.url("/health"))
        .send()
        .await
        .expect("GET /health");
    let status = r.status().as_u16();
    (status, r.json().await.expect("/health is JSON"))
}

// ---------------------------------------------------------------------------------------------------
// A private PostgreSQL

/// A PostgreSQL server of this test's own (the suite's shared one must not be restarted), from the
/// binaries `scripts/lib/postgres.sh` exports as `SUPERVISOR_TEST_PG_BIN`. As root it runs as the
/// unprivileged `supervisor-test` user that script creates (PostgreSQL refuses root).
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    user: Option<String>,
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let bin = PathBuf::from(std::env::var("SUPERVISOR_TEST_PG_BIN").unwrap_or_else(|_| {
            panic!(
                "SUPERVISOR_TEST_PG_BIN is not set: it names the PostgreSQL binaries (initdb, pg_ctl) this test \
                 starts its own server from. Run the suite with `scripts/test` (scripts/lib/postgres.sh exports it)."
            )
        }));
        assert!(
            bin.join("pg_ctl").exists() && bin.join("initdb").exists(),
            "SUPERVISOR_TEST_PG_BIN={} has no initdb/pg_ctl",
            bin.display()
        );
        let root = rustix::process::geteuid().is_root();
        let dir = tempfile::Builder::new()
            .prefix("supervisor-pg-restart.")
            .tempdir_in("/tmp")
            .unwrap();
        let user = root.then(|| "supervisor-test".to_string());
        if let Some(u) = &user {
            let uid = Command::new("id").args(["-u", u]).output().unwrap();
            assert!(
                uid.status.success(),
                "running as root needs the user `{u}` (scripts/lib/postgres.sh creates it): {}",
                String::from_utf8_lossy(&uid.stderr)
            );
            let uid: u32 = String::from_utf8_lossy(&uid.stdout).trim().parse().unwrap();
            std::os::unix::fs::chown(dir.path(), Some(uid), None).unwrap();
        }
        let pg = PrivatePostgres {
            port: support::mcp::free_port(),
            dir,
            bin,
            user,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd.args(args).output().expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{tool} {args:?} failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        );
    }

    fn down(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let data = self.data();
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let _ = cmd.args(["-D", &data, "-m", "immediate", "stop"]).output();
    }
}

async fn list_ports(client: &McpClient) -> Result<Value, String> {
    client.call("list_ports", json!({})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_serve_is_an_outage_in_health_then_heals() {
    let pg = PrivatePostgres::start();
    let ws = Workspace::new(Some(pg.url()));
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nservices:\n  - name: app\n",
    );
    let server = Server::start(&ws, &["--no-auth", "--auto-apply"]).await;
    let client = McpClient::connect(&server.url("/mcp/meta"), None).await;
    eventually(Duration::from_secs(10), || async {
        list_ports(&client)
            .await
            .ok()
            .filter(|p| p["ports"].as_array().is_some_and(|a| a.len() == 1))
    })
    .await
    .expect("the service is allocated");
    let (status, h) = health(&server).await;
    assert_eq!((status, &h["database"]["reachable"]), (200, &json!(true)));
    assert_eq!(h["reconcile"]["leader"], true);

    pg.down();
    let down = Instant::now();
    // The outage shows at once (the health check waits at most 2 s for the database).
    let (h, _) = eventually(Duration::from_secs(10), || async {
        let (status, h) = health(&server).await;
        (status == 503 && h["database"]["reachable"] == false).then_some(h)
    })
    .await
    .expect("/health did not show the outage");
    assert_eq!(h["status"], "degraded");
    assert!(
        h["database"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{h}"
    );
    // MCP calls fail, saying why, within the pool's wait.
    let started = Instant::now();
    let e = list_ports(&client)
        .await
        .expect_err("no database, no ports");
    let took = started.elapsed();
    assert!(
        e.contains("the database is unreachable") || e.contains("database"),
        "{e}"
    );
    assert!(took < Duration::from_secs(15), "the call took {took:?}");
    // The leader's lock lived in a session that is gone: it steps down instead of leading blind.
    eventually(Duration::from_secs(10), || async {
        (health(&server).await.1["reconcile"]["leader"] == false).then_some(())
    })
    .await
    .expect("the leader did not notice that its lock is gone");

    pg.up();
    let outage = down.elapsed();
    let (_, back) = eventually(Duration::from_secs(30), || async {
        let (status, h) = health(&server).await;
        (status == 200 && h["database"]["reachable"] == true).then_some(())
    })
    .await
    .expect("/health did not recover");
    let ports = list_ports(&client).await.expect("MCP works again");
    assert_eq!(ports["ports"].as_array().unwrap().len(), 1);
    // It leads again and reconciles: a new service is allocated.
    eventually(Duration::from_secs(15), || async {
        (health(&server).await.1["reconcile"]["leader"] == true).then_some(())
    })
    .await
    .expect("leadership is taken again");
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nservices:\n  - name: app\n  - name: late\n",
    );
    eventually(Duration::from_secs(10), || async {
        list_ports(&client)
            .await
            .ok()
            .filter(|p| p["ports"].as_array().is_some_and(|a| a.len() == 2))
    })
    .await
    .expect("the new service is allocated after the restart");
    eprintln!(
        "postgres restart: outage {outage:?}, failing MCP call answered in {took:?}, healthy again {back:?} after the restart"
    );
}

// ---------------------------------------------------------------------------------------------------
// SQLite file faults

fn sqlite_path(ws: &Workspace) -> PathBuf {
    match ws.location() {
        supervisor::store::Location::Sqlite(p) => p,
        other => panic!("not SQLite: {other:?}"),
    }
}

async fn until_health(server: &Server, what: &str, check: impl Fn(u16, &Value) -> bool) -> Value {
    match eventually(Duration::from_secs(10), || async {
        let (status, h) = health(server).await;
        check(status, &h).then_some(h)
    })
    .await
    {
        Some((h, _)) => h,
        None => panic!("/health never showed {what}: {}", health(server).await.1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_removed_or_replaced_under_serve_is_reported_not_forked() {
    let ws = Workspace::new(None);
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nservices:\n  - name: app\n",
    );
    let server = Server::start(&ws, &["--no-auth", "--auto-apply"]).await;
    let client = McpClient::connect(&server.url("/mcp/meta"), None).await;
    eventually(Duration::from_secs(10), || async {
        list_ports(&client)
            .await
            .ok()
            .filter(|p| p["ports"].as_array().is_some_and(|a| a.len() == 1))
    })
    .await
    .expect("the service is allocated");
    let db = sqlite_path(&ws);
    let kept = db.with_file_name("kept.db");

    // Removed (a hard link keeps the inode, to put it back afterwards).
    std::fs::hard_link(&db, &kept).unwrap();
    std::fs::remove_file(&db).unwrap();
    let h = until_health(&server, "the removed file", |s, h| {
        s == 503 && h["database"]["reachable"] == false
    })
    .await;
    let error = h["database"]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("the SQLite database ")
            && error
                .contains(".supervisor/supervisor.db was removed while this process had it open"),
        "{h}"
    );
    // Every call fails, saying so; none creates a new, empty database at the path.
    let e = list_ports(&client).await.expect_err("no database file");
    assert!(
        e.contains("was removed") || e.contains("unable to open database file"),
        "{e}"
    );
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nservices:\n  - name: app\n  - name: late\n",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !db.exists(),
        "a new database file was created in place of the removed one"
    );

    // Put back: healthy again, the data is there, the reconcile catches up.
    std::fs::rename(&kept, &db).unwrap();
    until_health(&server, "the file put back", |s, h| {
        s == 200 && h["database"]["reachable"] == true
    })
    .await;
    eventually(Duration::from_secs(15), || async {
        list_ports(&client)
            .await
            .ok()
            .filter(|p| p["ports"].as_array().is_some_and(|a| a.len() == 2))
    })
    .await
    .expect("works again once the file is back");

    // Replaced by another file (a copy: another inode): reported, and nothing reads or writes either.
    let copy = db.with_file_name("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    std::fs::rename(&copy, &db).unwrap();
    let h = until_health(&server, "the replaced file", |s, h| {
        s == 503 && h["database"]["reachable"] == false
    })
    .await;
    assert!(
        h["database"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("was replaced by another file")),
        "{h}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_made_read_only_under_serve_shows_in_health() {
    let ws = Workspace::new(None);
    ws.write("state/projects/notes.yaml", "name: notes\n");
    // Root may write a read-only file, so as root the server runs as `nobody` (it must be an
    // ordinary user for permissions to mean anything), in a workspace it owns.
    let root = rustix::process::geteuid().is_root();
    let mut cmd = ws.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--no-auth"]);
    if root {
        use std::os::unix::process::CommandExt;
        chown_tree(ws.path(), 65534, 65534);
        // The database is created by the first open; make it now, as that user.
        let mut init = ws.cmd();
        init.args(["status"]).uid(65534).gid(65534);
        let out = init.output().unwrap();
        assert!(out.status.success(), "{}", support::stderr(&out));
        cmd.uid(65534).gid(65534);
    } else {
        let out = ws.run(&["status"]);
        assert!(out.status.success(), "{}", support::stderr(&out));
    }
    let server = Server::spawn(cmd).await;
    let db = sqlite_path(&ws);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    let h = until_health(&server, "the read-only file", |s, h| {
        s == 503 && h["database"]["writable"] == false && h["database"]["reachable"] == true
    })
    .await;
    assert!(
        h["database"]["error"].as_str().is_some_and(|e| e.contains(
            ".supervisor/supervisor.db is not writable (file ./.supervisor/supervisor.db: Permission denied"
        )),
        "{h}"
    );
    assert_eq!(h["status"], "degraded");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    until_health(&server, "the writable file", |s, h| {
        s == 200 && h["database"]["writable"] == true
    })
    .await;
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Leader failover with work in flight

const PROJECTS: usize = 30;
const SERVICES: usize = 30;

async fn killing_the_leader_mid_apply_hands_the_work_to_the_other_server(ws: Workspace) {
    ws.write("state/projects/p000.yaml", "name: p000\n");
    let a = Server::start(&ws, &["--no-auth", "--auto-apply"]).await;
    eventually(Duration::from_secs(10), || async {
        (a.health().await["reconcile"]["leader"] == true).then_some(())
    })
    .await
    .expect("the first server leads");
    let b = Server::start(&ws, &["--no-auth", "--auto-apply"]).await;
    assert_eq!(b.health().await["reconcile"]["leader"], false);

    // A large change: the leader's apply takes a while.
    for p in 0..PROJECTS {
        let mut text = format!("name: p{p:03}\nservices:\n");
        for s in 0..SERVICES {
            text.push_str(&format!("  - name: s{s:02}\n"));
        }
        ws.write(&format!("state/projects/p{p:03}.yaml"), &text);
    }
    let store = supervisor::store::open(&ws.location()).await.unwrap();
    let total = PROJECTS * SERVICES;
    let (mid, _) = eventually(Duration::from_secs(30), || async {
        let n = store.port_registry("default").await.ok()?.allocations.len();
        (n > 0 && n < total / 2).then_some(n)
    })
    .await
    .expect("the leader's apply never got under way");
    let mut a = a;
    a.kill(); // kill -9 with the apply in flight
    let killed = Instant::now();

    let (_, took) = eventually(Duration::from_secs(60), || async {
        let reg = store.port_registry("default").await.ok()?;
        (reg.allocations.len() == total).then_some(())
    })
    .await
    .expect("the surviving server did not finish the work");
    eprintln!(
        "leader killed with {mid} of {total} ports allocated; the other server finished {took:?} later"
    );
    let hb = b.health().await;
    assert_eq!(hb["reconcile"]["leader"], true, "{hb}");
    let reg = store.port_registry("default").await.unwrap();
    let ports: std::collections::HashSet<i32> = reg.allocations.iter().map(|a| a.port).collect();
    assert_eq!(ports.len(), total, "no port given twice");
    assert_eq!(reg.ranges.len(), PROJECTS);
    let last = store.last_run().await.unwrap().unwrap();
    assert_eq!(
        (last.status.as_str(), last.actor.as_str()),
        ("succeeded", "serve:auto-apply")
    );
    // The killed run is recorded as interrupted, not left running.
    let runs = match ws.location() {
        supervisor::store::Location::Postgres(url) => {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query_as::<_, (String, i64)>(
                "SELECT status, count(*) FROM apply_runs GROUP BY status",
            )
            .fetch_all(&mut c)
            .await
            .unwrap()
        }
        supervisor::store::Location::Sqlite(p) => {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", p.display()))
                .await
                .unwrap();
            sqlx::query_as::<_, (String, i64)>(
                "SELECT status, count(*) FROM apply_runs GROUP BY status",
            )
            .fetch_all(&mut c)
            .await
            .unwrap()
        }
    };
    let runs: std::collections::BTreeMap<String, i64> = runs.into_iter().collect();
    assert_eq!(runs.get("running"), None, "{runs:?}");
    assert!(
        runs.get("interrupted").copied().unwrap_or(0) >= 1,
        "{runs:?}"
    );
    assert!(killed.elapsed() < Duration::from_secs(60));
}
