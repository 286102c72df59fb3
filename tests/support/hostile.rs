//! What the hostile-input tests share: a workspace with two projects whose data is marked (every piece
//! of `beta`'s data carries the word [`BETA_MARK`], every secret value [`SECRET_MARK`]), and a
//! fingerprint of what a refused call must leave as it was — the state files and every row of the
//! database but the secret access log (reads and denials are audited, which is a write on purpose).

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::Workspace;

/// In every piece of beta's data (secret values, task descriptions, learnings); nothing alpha's
/// endpoint returns may contain it.
pub const BETA_MARK: &str = "zebra";
/// In every secret value; only `get_secret` may return it.
pub const SECRET_MARK: &str = "s3cr3t-value";

pub const ALPHA_FILE: &str = "state/projects/alpha.yaml";
pub const BETA_FILE: &str = "state/projects/beta.yaml";

/// (path, value) of the seeded secrets.
pub const SECRETS: [(&str, &str); 4] = [
    ("project/alpha/api_key", "alpha-s3cr3t-value-0001"),
    ("project/beta/db_password", "zebra-s3cr3t-value-0002"),
    ("service/beta/db/password", "zebra-s3cr3t-value-0003"),
    ("meta/cloudflare/api_token", "meta-s3cr3t-value-0004"),
];

/// Two applied projects with secrets, timing history, running timers and learnings; a key file
/// configured in `supervisor.toml`. Returns the key file's path.
pub fn seed(ws: &Workspace) -> std::path::PathBuf {
    let root = ws.path().canonicalize().unwrap();
    let key = root.join("secrets.key");
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    ws.write(
        "supervisor.toml",
        &format!("secrets_key_file = \"{}\"\n", key.display()),
    );
    ws.write(
        "state/supervisor.yaml",
        "ports:\n  projects: { start: 20000, end: 20999, block: 100 }\n  shared: { start: 9000, end: 9099 }\nshared_services:\n  - name: redis\n    port: 9079\n",
    );
    for p in ["alpha-src", "beta-src"] {
        std::fs::create_dir_all(root.join(p)).unwrap();
    }
    ws.write(
        ALPHA_FILE,
        &format!(
            "name: alpha\npath: {}\nport_range: 20000\nservices:\n  - name: api\n    port: 20001\n  - name: web\nchecks: [\"true\", \"printf checked\"]\n",
            root.join("alpha-src").display()
        ),
    );
    ws.write(
        BETA_FILE,
        &format!(
            "name: beta\npath: {}\nport_range: 20100\nservices:\n  - name: db\n    prevent_destroy: true\n  - name: app\nchecks: [\"true\"]\nsecrets:\n  required: [project/beta/db_password]\n",
            root.join("beta-src").display()
        ),
    );
    ws.ok(&["apply", "--auto-approve"], 0);
    for (path, value) in SECRETS {
        let file = root.join("value.txt");
        std::fs::write(&file, value).unwrap();
        ws.ok(
            &[
                "secrets",
                "set",
                path,
                "--value-file",
                file.to_str().unwrap(),
            ],
            0,
        );
        std::fs::remove_file(file).unwrap();
    }
    let mut history = String::new();
    for i in 0..6 {
        for (project, words, secs) in [
            ("alpha", "alpha payment form bug", 600 + i * 60),
            ("beta", "zebra refund crash", 6000 + i * 60),
        ] {
            history.push_str(
                &serde_json::json!({
                    "task_id": format!("{project}-h{i}"),
                    "description": format!("{words} number {i}"),
                    "task_type": "bugfix",
                    "project": project,
                    "duration_seconds": secs,
                })
                .to_string(),
            );
            history.push('\n');
        }
    }
    ws.write("history.jsonl", &history);
    ws.ok(&["timing", "import", "history.jsonl"], 0);
    for (project, id, words) in [
        ("beta", "b-1", "zebra refund"),
        ("alpha", "a-run", "alpha form"),
    ] {
        ws.ok(
            &[
                "timing",
                "start",
                "-d",
                words,
                "--type",
                "bugfix",
                "--project",
                project,
                "--task-id",
                id,
            ],
            0,
        );
    }
    for (project, text) in [
        ("beta", "The zebra deploy needs the blue-green script."),
        ("alpha", "The alpha deploy pushes to the pages branch."),
    ] {
        ws.ok(
            &[
                "knowledge",
                "learn",
                "--title",
                "deploys",
                "--text",
                text,
                "--project",
                project,
            ],
            0,
        );
    }
    key
}

/// The tables a refused call must leave as they were (all but `secret_access_log`), and which of them
/// hold rows of one project (a `project` column).
const TABLES: [(&str, bool); 15] = [
    ("apply_journal", false),
    ("apply_runs", false),
    ("check_runs", true),
    ("knowledge_chunks", true),
    ("knowledge_documents", true),
    ("managed_objects", false),
    ("mcp_tokens", true),
    ("parallel_executions", true),
    ("port_allocations", true),
    ("project_port_ranges", true),
    ("secret_key_checks", false),
    ("secrets", true),
    ("shared_service_ports", false),
    ("task_executions", true),
    ("task_type_stats", true),
];

pub enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// What a call could change: the state files and the database rows.
pub struct World {
    db: Db,
    state: std::path::PathBuf,
}

/// Per table (and per state file): a digest of its content.
pub type Fingerprint = BTreeMap<String, String>;

fn digest(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..12])
}

impl World {
    pub async fn open(ws: &Workspace) -> World {
        let db = match ws.location() {
            supervisor::store::Location::Sqlite(path) => Db::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(path))
                    .await
                    .expect("open the SQLite database"),
            ),
            supervisor::store::Location::Postgres(url) => Db::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&url)
                    .await
                    .expect("connect to the test database"),
            ),
        };
        World {
            db,
            state: ws.state(),
        }
    }

    /// Every table and state file; with `project`, only that project's rows and state file.
    pub async fn fingerprint(&self, project: Option<&str>) -> Fingerprint {
        let mut out = Fingerprint::new();
        for (table, has_project) in TABLES {
            if project.is_some() && !has_project {
                continue;
            }
            out.insert(table.to_string(), self.table(table, project).await);
        }
        let mut files = Vec::new();
        collect_files(&self.state, &mut files);
        for path in files {
            let rel = path
                .strip_prefix(&self.state)
                .unwrap()
                .display()
                .to_string();
            if rel.ends_with(".edit.lock") {
                continue;
            }
            if project.is_some_and(|p| rel != format!("projects/{p}.yaml")) {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap_or_default();
            out.insert(format!("state/{rel}"), digest(&bytes));
        }
        out
    }

    async fn table(&self, table: &str, project: Option<&str>) -> String {
        let filter = if project.is_some() {
            " WHERE project = $1"
        } else {
            ""
        };
        match &self.db {
            Db::Postgres(pool) => {
                let sql = format!(
                    "SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {table} t{filter}"
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                if let Some(p) = project {
                    q = q.bind(p);
                }
                let row = q.fetch_one(pool).await.expect("fingerprint a table");
                row.get::<String, _>(0)
            }
            Db::Sqlite(pool) => {
                let columns: Vec<String> = sqlx::query("SELECT name FROM pragma_table_info(?1)")
                    .bind(table)
                    .fetch_all(pool)
                    .await
                    .expect("columns")
                    .iter()
                    .map(|r| r.get::<String, _>(0))
                    .collect();
                let row_text = columns
                    .iter()
                    .map(|c| format!("quote(\"{c}\")"))
                    .collect::<Vec<_>>()
                    .join(" || '|' || ");
                let sql = format!(
                    "SELECT coalesce(group_concat(r, char(10)), '') FROM (SELECT {row_text} AS r FROM {table}{} ORDER BY r)",
                    filter.replace("$1", "?1")
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                if let Some(p) = project {
                    q = q.bind(p);
                }
                let row = q.fetch_one(pool).await.expect("fingerprint a table");
                digest(row.get::<String, _>(0).as_bytes())
            }
        }
    }
}

fn collect_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The tables and files that differ between two fingerprints.
pub fn changed(before: &Fingerprint, after: &Fingerprint) -> Vec<String> {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect()
}
