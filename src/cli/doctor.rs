//! `supervisor doctor`: what is configured, reachable and missing. Exit 1 when something required is
//! broken; each problem names its fix.

use std::process::ExitCode;

use serde::Serialize;

use super::Context;
use super::output::Style;
use crate::secrets::key::EncryptionKey;
use crate::secrets::vault;
use crate::store::{self, DatabaseInfo};

#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Error,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    status: Status,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    format_version: &'static str,
    ok: bool,
    state_dir: String,
    config_file: Option<String>,
    database: Option<DatabaseInfo>,
    encryption_key: KeyReport,
    checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
struct KeyReport {
    present: bool,
    source: Option<String>,
    fingerprint: Option<String>,
}

pub async fn run(ctx: &Context) -> anyhow::Result<ExitCode> {
    let s = &ctx.settings;
    let mut checks = Vec::new();

    checks.push(match crate::state::summary(&s.state_dir) {
        Ok(summary) => Check {
            name: "state",
            status: Status::Ok,
            detail: format!("{} ({summary})", s.state_dir.display()),
            fix: None,
        },
        Err(problem) => Check {
            name: "state",
            status: Status::Error,
            detail: format!("{}: {problem}", s.state_dir.display()),
            fix: Some(format!(
                "run `supervisor init {}` to scaffold it, or point --state / SUPERVISOR_STATE_DIR at your state directory",
                s.state_dir.display()
            )),
        },
    });

    let opened = store::open(&s.database).await;
    let database = match &opened {
        Ok(db) => match db.info().await {
            Ok(info) => {
                checks.push(database_check(&info));
                checks.push(vector_check(&info));
                checks.push(secrets_check(db.as_ref()).await);
                Some(info)
            }
            Err(e) => {
                checks.push(Check {
                    name: "database",
                    status: Status::Error,
                    detail: e.to_string(),
                    fix: None,
                });
                None
            }
        },
        Err(e) => {
            checks.push(Check {
                name: "database",
                status: Status::Error,
                detail: format!("{} — {e}", s.database),
                fix: Some(match s.database.backend() {
                    store::Backend::Postgres => {
                        "check DATABASE_URL / --database-url, that the server is up, and that the `vector` extension (pgvector) is installed".into()
                    }
                    store::Backend::Sqlite => {
                        "check that the directory is writable, or set DATABASE_URL to another location".into()
                    }
                }),
            });
            None
        }
    };

    let encryption_key = match EncryptionKey::load(s.key_file.as_deref()) {
        Ok(Some(key)) => {
            checks.push(Check {
                name: "encryption key",
                status: Status::Ok,
                detail: format!(
                    "present ({}, fingerprint {})",
                    key.source(),
                    key.fingerprint()
                ),
                fix: None,
            });
            KeyReport {
                present: true,
                source: Some(key.source().to_string()),
                fingerprint: Some(key.fingerprint()),
            }
        }
        Ok(None) => {
            checks.push(Check {
                name: "encryption key",
                status: Status::Warn,
                detail: "absent: secrets cannot be read or written".into(),
                fix: Some(
                    "set SECRETS_ENCRYPTION_KEY (e.g. `openssl rand -hex 32`) or secrets_key_file in supervisor.toml".into(),
                ),
            });
            KeyReport {
                present: false,
                source: None,
                fingerprint: None,
            }
        }
        Err(e) => {
            checks.push(Check {
                name: "encryption key",
                status: Status::Error,
                detail: e.to_string(),
                fix: Some("provide exactly 64 hex characters (32 bytes)".into()),
            });
            KeyReport {
                present: false,
                source: None,
                fingerprint: None,
            }
        }
    };

    checks.extend(provider_checks(&s.state_dir));
    if let Ok(db) = &opened
        && let Some(check) = cloudflare_check(ctx, db.clone()).await
    {
        checks.push(check);
    }
    if let Ok(db) = &opened
        && let Some(check) = gcloud_check(ctx, db.clone()).await
    {
        checks.push(check);
    }

    let ok = checks.iter().all(|c| c.status != Status::Error);
    let report = Report {
        format_version: crate::FORMAT_VERSION,
        ok,
        state_dir: s.state_dir.display().to_string(),
        config_file: s.config_path.as_ref().map(|p| p.display().to_string()),
        database,
        encryption_key,
        checks,
    };
    if ctx.out.json {
        ctx.out.json(&report)?;
    } else {
        ctx.out.text(&render(ctx, &report))?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn database_check(info: &DatabaseInfo) -> Check {
    let applied = info.migrations_applied.len();
    let names: Vec<String> = info
        .migrations_applied
        .iter()
        .map(|m| format!("{:04} {}", m.version, m.description))
        .collect();
    let complete = applied == info.migrations_known;
    Check {
        name: "database",
        status: if complete { Status::Ok } else { Status::Error },
        detail: format!(
            "{} {} at {}; migrations {applied} of {} applied ({})",
            info.backend,
            info.server_version,
            info.location,
            info.migrations_known,
            names.join(", ")
        ),
        fix: (!complete)
            .then(|| "run any supervisor command against this database to migrate it".into()),
    }
}

fn vector_check(info: &DatabaseInfo) -> Check {
    match &info.vector_extension {
        Some(v) => Check {
            name: "vectors",
            status: Status::Ok,
            detail: format!(
                "{} {v}; text search: {}",
                match info.backend {
                    store::Backend::Postgres => "pgvector",
                    store::Backend::Sqlite => "sqlite-vec",
                },
                info.full_text_search
            ),
            fix: None,
        },
        None => Check {
            name: "vectors",
            status: Status::Error,
            detail: "no vector extension".into(),
            fix: Some("install pgvector on the server (CREATE EXTENSION vector)".into()),
        },
    }
}

/// Expired and rotation-required secrets: a warning naming the paths (never values).
async fn secrets_check(db: &dyn store::Store) -> Check {
    match vault::health(db).await {
        Err(e) => Check {
            name: "secrets",
            status: Status::Error,
            detail: e.to_string(),
            fix: None,
        },
        Ok(h) if h.expired.is_empty() && h.rotation_required.is_empty() => Check {
            name: "secrets",
            status: Status::Ok,
            detail: format!("{} stored; none expired or flagged for rotation", h.total),
            fix: None,
        },
        Ok(h) => {
            let mut parts = Vec::new();
            if !h.expired.is_empty() {
                parts.push(format!(
                    "{} expired ({})",
                    h.expired.len(),
                    shorten(&h.expired)
                ));
            }
            if !h.rotation_required.is_empty() {
                parts.push(format!(
                    "{} flagged for rotation ({})",
                    h.rotation_required.len(),
                    shorten(&h.rotation_required)
                ));
            }
            Check {
                name: "secrets",
                status: Status::Warn,
                detail: format!("{} stored; {}", h.total, parts.join("; ")),
                fix: Some(
                    "store a new value with `supervisor secrets set PATH` (optionally --expires)"
                        .into(),
                ),
            }
        }
    }
}

fn shorten(paths: &[String]) -> String {
    let shown = paths.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if paths.len() > 5 {
        format!("{shown} and {} more", paths.len() - 5)
    } else {
        shown
    }
}

/// Whether the configured Cloudflare zone answers with the stored token (a real API call, bounded to
/// 20 s). `None` when Cloudflare is not configured or the state is invalid.
async fn cloudflare_check(ctx: &Context, store: std::sync::Arc<dyn store::Store>) -> Option<Check> {
    let desired = crate::state::load(&ctx.settings.state_dir).ok()?;
    let cf = desired.cloudflare.clone()?;
    let vault = crate::ops::runtime::VaultState::load(&ctx.settings, &store);
    let rt = crate::ops::Runtime::with_desired(ctx.settings.clone(), store, vault, desired, false);
    let pctx = rt.provider_context(&super::common::cli_actor(), &[]);
    let cf = &cf;
    let probe = async {
        let api = crate::providers::cloudflare::connect(cf, &pctx).await?;
        api.zone_id()
            .await
            .map(|id| (id, crate::store::redact_url(&api.base_url)))
    };
    Some(
        match tokio::time::timeout(std::time::Duration::from_secs(20), probe).await {
            Ok(Ok((id, url))) => Check {
                name: "cloudflare api",
                status: Status::Ok,
                detail: format!("zone {} reachable at {url} (id {id})", cf.zone),
                fix: None,
            },
            Ok(Err(e)) => Check {
                name: "cloudflare api",
                status: Status::Error,
                detail: e.to_string(),
                fix: Some(format!(
                    "check the token stored at {} (supervisor secrets set {}), the zone name and SUPERVISOR_CLOUDFLARE_API_URL",
                    cf.api_token_secret, cf.api_token_secret
                )),
            },
            Err(_) => Check {
                name: "cloudflare api",
                status: Status::Error,
                detail: "no answer from the Cloudflare API within 20 s".into(),
                fix: Some(
                    "check the network and SUPERVISOR_CLOUDFLARE_API_URL / cloudflare.api_url"
                        .into(),
                ),
            },
        },
    )
}

/// Whether the Google service-account key is in the vault and the token exchange works against its
/// `token_uri` (a real exchange, bounded to 20 s). `None` when gcloud is not configured or the state
/// is invalid.
async fn gcloud_check(ctx: &Context, store: std::sync::Arc<dyn store::Store>) -> Option<Check> {
    let desired = crate::state::load(&ctx.settings.state_dir).ok()?;
    let g = desired.gcloud.clone()?;
    let g = &g;
    let vault = crate::ops::runtime::VaultState::load(&ctx.settings, &store);
    let rt = crate::ops::Runtime::with_desired(ctx.settings.clone(), store, vault, desired, false);
    let pctx = rt.provider_context(&super::common::cli_actor(), &[]);
    let path = g.credentials_secret.clone();
    let probe = async {
        let cloud = crate::providers::gcloud::connect(g, &pctx).await?;
        cloud
            .check_token()
            .await
            .map_err(|e| crate::providers::gcloud::google_error("token exchange", e))?;
        Ok::<_, crate::engine::ProviderError>(cloud)
    };
    Some(
        match tokio::time::timeout(std::time::Duration::from_secs(20), probe).await {
            Ok(Ok(cloud)) => Check {
                name: "gcloud api",
                status: Status::Ok,
                detail: format!(
                    "credentials for {} from secret {path}; token exchange at {} works; Compute Engine at {}",
                    cloud.auth.client_email(),
                    cloud.endpoints.token,
                    cloud.endpoints.compute
                ),
                fix: None,
            },
            Ok(Err(e)) => Check {
                name: "gcloud api",
                status: Status::Error,
                detail: e.to_string(),
                fix: Some(format!(
                    "store the service-account key file with `supervisor secrets set {path} --value-file key.json`, and check that the account is enabled and its key not revoked"
                )),
            },
            Err(_) => Check {
                name: "gcloud api",
                status: Status::Error,
                detail: "no answer from the Google token endpoint within 20 s".into(),
                fix: Some("check the network and the key's token_uri".into()),
            },
        },
    )
}

fn provider_checks(state_dir: &std::path::Path) -> Vec<Check> {
    crate::state::configured_providers(state_dir)
        .into_iter()
        .map(|(name, detail)| Check {
            name,
            status: Status::Ok,
            detail,
            fix: None,
        })
        .collect()
}

fn render(ctx: &Context, r: &Report) -> String {
    let mut out = String::new();
    for c in &r.checks {
        let mark = match c.status {
            Status::Ok => ctx.out.paint("ok   ", Style::Green),
            Status::Warn => ctx.out.paint("warn ", Style::Yellow),
            Status::Error => ctx.out.paint("FAIL ", Style::Red),
        };
        out.push_str(&format!("{mark} {:<15} {}\n", c.name, c.detail));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("      {:<15} fix: {fix}\n", ""));
        }
    }
    if let Some(p) = &r.config_file {
        out.push_str(&format!("      {:<15} {p}\n", "config file"));
    }
    out.push_str(if r.ok {
        "\nAll required checks passed.\n"
    } else {
        "\nSome required checks failed.\n"
    });
    out
}
