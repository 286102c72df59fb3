//! `supervisor secrets …`: thin over [`crate::secrets::vault`], [`crate::secrets::scan`] and the
//! detector. Only `get` prints a value, on stdout, alone. Values are read from stdin or a file, never
//! from the command line (argv is visible to every user of the host).

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use zeroize::Zeroizing;

use super::output::Style;
use super::{Context, KeyArgs, SecretsCommand};
use crate::secrets::detector;
use crate::secrets::key::{EncryptionKey, KeyError};
use crate::secrets::legacy;
use crate::secrets::path::SecretPath;
use crate::secrets::scan;
use crate::secrets::vault::{self, Actor, Expiry, ListFilter, SecretValue, SetOptions, Vault};
use crate::store::{self, SecretScope, Store};

/// Largest input `set` and `detect` read.
const MAX_INPUT_BYTES: u64 = vault::MAX_VALUE_BYTES as u64 + 2;
const MAX_DETECT_BYTES: u64 = 16 << 20;

pub async fn run(ctx: &Context, command: SecretsCommand) -> anyhow::Result<ExitCode> {
    let actor = Actor::cli_current_user();
    match command {
        SecretsCommand::Get { path, key } => get(ctx, &path, &key, &actor).await,
        SecretsCommand::Set {
            path,
            value_file,
            description,
            expires,
            rotation_required,
            key,
        } => {
            let path = SecretPath::parse(&path)?;
            let options = SetOptions {
                description,
                expiry: match expires.as_deref() {
                    None => Expiry::Keep,
                    Some(text) => parse_expiry(text, Utc::now())?,
                },
                rotation_required,
            };
            let key = load_key(ctx, &key)?;
            let value = read_value(value_file.as_deref()).await?;
            let vault = Vault::new(open_store(ctx).await?, key);
            let written = vault.set(&path, &value, &options, &actor).await?;
            drop(value);
            if ctx.out.json {
                ctx.out.json(&serde_json::json!({
                    "format_version": crate::FORMAT_VERSION,
                    "path": path.as_str(),
                    "result": written,
                }))?;
            } else {
                let verb = match written {
                    vault::Written::Created => "created",
                    vault::Written::Updated => "updated",
                };
                ctx.out.text(&format!("{verb} {path}\n"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SecretsCommand::List { scope, project } => list(ctx, scope, project, &actor).await,
        SecretsCommand::Delete { path } => {
            let path = SecretPath::parse(&path)?;
            let store = open_store(ctx).await?;
            vault::delete(store.as_ref(), &path, &actor).await?;
            if ctx.out.json {
                ctx.out.json(&serde_json::json!({
                    "format_version": crate::FORMAT_VERSION,
                    "path": path.as_str(),
                    "result": "deleted",
                }))?;
            } else {
                ctx.out.text(&format!("deleted {path}\n"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SecretsCommand::RotateKey { new_key_file, key } => {
            let current = load_key(ctx, &key)?;
            let new_key = EncryptionKey::from_file(&new_key_file)?;
            let vault = Vault::new(open_store(ctx).await?, current);
            let report = vault.rotate_key(&new_key, &actor).await?;
            if ctx.out.json {
                ctx.out.json(&serde_json::json!({
                    "format_version": crate::FORMAT_VERSION,
                    "rotated": report.rotated,
                    "from_version": report.from_version,
                    "to_version": report.to_version,
                    "new_fingerprint": report.new_fingerprint,
                }))?;
            } else {
                ctx.out.text(&format!(
                    "re-encrypted {} secret(s) with key version {} (fingerprint {}).\n\
                     From now on use the new key: point --key-file / secrets_key_file at {} or put its \
                     contents in SECRETS_ENCRYPTION_KEY.\n",
                    report.rotated,
                    report.to_version,
                    report.new_fingerprint,
                    new_key_file.display()
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SecretsCommand::Scan { paths } => scan_files(ctx, paths).await,
        SecretsCommand::Detect { project } => detect(ctx, project.as_deref()).await,
        SecretsCommand::Audit { path, limit } => audit(ctx, path, limit, &actor).await,
        SecretsCommand::ImportLegacy {
            from,
            legacy_key_file,
            key,
        } => {
            let current = load_key(ctx, &key)?;
            let legacy_key = EncryptionKey::from_file(&legacy_key_file)?;
            let secrets = legacy::read(&from).await?;
            let vault = Vault::new(open_store(ctx).await?, current);
            let report = vault.import_legacy(&secrets, &legacy_key, &actor).await?;
            if ctx.out.json {
                ctx.out.json(&serde_json::json!({
                    "format_version": crate::FORMAT_VERSION,
                    "source": store::redact_url(&from),
                    "found": secrets.len(),
                    "imported": report.imported,
                    "key_version": report.key_version,
                }))?;
            } else {
                ctx.out.text(&format!(
                    "imported {} of {} secret(s) from {} (re-encrypted with key version {})\n",
                    report.imported,
                    secrets.len(),
                    store::redact_url(&from),
                    report.key_version
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--key-file` > `SECRETS_ENCRYPTION_KEY` > `secrets_key_file` in supervisor.toml.
fn load_key(ctx: &Context, args: &KeyArgs) -> anyhow::Result<EncryptionKey> {
    if let Some(file) = &args.key_file {
        return Ok(EncryptionKey::from_file(file)?);
    }
    if let Some(key) = EncryptionKey::load(None)? {
        return Ok(key);
    }
    match &ctx.settings.key_file {
        Some(file) => Ok(EncryptionKey::from_file(file)?),
        None => Err(KeyError::Missing.into()),
    }
}

async fn open_store(ctx: &Context) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    Ok(store::open(&ctx.settings.database).await?)
}

async fn get(ctx: &Context, path: &str, key: &KeyArgs, actor: &Actor) -> anyhow::Result<ExitCode> {
    let path = SecretPath::parse(path)?;
    let key = load_key(ctx, key)?;
    let vault = Vault::new(open_store(ctx).await?, key);
    let revealed = vault.get(&path, actor).await?;
    if revealed.expired()
        && let Some(at) = revealed.expires_at
    {
        eprintln!(
            "warning: the secret at {path} expired at {}; replace it with `supervisor secrets set {path}`",
            at.format("%Y-%m-%d %H:%M UTC")
        );
    }
    if revealed.rotation_required {
        eprintln!("warning: the secret at {path} is flagged for rotation");
    }
    if ctx.out.json {
        #[derive(Serialize)]
        struct Json<'a> {
            format_version: &'static str,
            path: &'a str,
            value: &'a str,
            expires_at: Option<DateTime<Utc>>,
            expired: bool,
            rotation_required: bool,
        }
        // Serialised straight into zeroizing memory: no copy of the value outlives the print.
        let mut text = Zeroizing::new(serde_json::to_string_pretty(&Json {
            format_version: crate::FORMAT_VERSION,
            path: path.as_str(),
            value: revealed.value.expose(),
            expires_at: revealed.expires_at,
            expired: revealed.expired(),
            rotation_required: revealed.rotation_required,
        })?);
        text.push('\n');
        ctx.out.text(&text)?;
    } else {
        let mut line = Zeroizing::new(String::with_capacity(revealed.value.len() + 1));
        line.push_str(revealed.value.expose());
        line.push('\n');
        ctx.out.text(&line)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The value from `file` or stdin: one trailing newline (`\n` or `\r\n`) removed, empty refused.
async fn read_value(file: Option<&Path>) -> anyhow::Result<SecretValue> {
    let file = file.map(Path::to_path_buf);
    let bytes = tokio::task::spawn_blocking(move || -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let mut bytes = Zeroizing::new(Vec::new());
        match &file {
            Some(f) => {
                std::fs::File::open(f)
                    .with_context(|| format!("cannot read the value file {}", f.display()))?
                    .take(MAX_INPUT_BYTES)
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("cannot read the value file {}", f.display()))?;
            }
            None => {
                let stdin = std::io::stdin();
                if stdin.is_terminal() {
                    bail!(
                        "stdin is a terminal: pipe the value in (e.g. `pbpaste | supervisor secrets set PATH`) \
                         or use --value-file FILE; values are never taken from the command line"
                    );
                }
                stdin
                    .lock()
                    .take(MAX_INPUT_BYTES)
                    .read_to_end(&mut bytes)
                    .context("cannot read the value from stdin")?;
            }
        }
        Ok(bytes)
    })
    .await
    .context("reading the value")??;
    let mut bytes = bytes;
    let newline = if bytes.ends_with(b"\r\n") {
        2
    } else {
        usize::from(bytes.ends_with(b"\n"))
    };
    let keep = bytes.len() - newline;
    bytes.truncate(keep);
    if bytes.is_empty() {
        bail!(
            "the value is empty; nothing was stored (pipe the value to stdin or use --value-file)"
        );
    }
    if bytes.len() > vault::MAX_VALUE_BYTES {
        bail!(
            "the value is larger than {} bytes; nothing was stored",
            vault::MAX_VALUE_BYTES
        );
    }
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => Zeroizing::new(t.to_string()),
        Err(_) => bail!("the value is not valid UTF-8 text; nothing was stored"),
    };
    Ok(SecretValue::new(text))
}

/// `2027-01-31T00:00:00Z`, `2027-01-31`, `90d` (days from now) or `never`.
fn parse_expiry(text: &str, now: DateTime<Utc>) -> anyhow::Result<Expiry> {
    Expiry::parse(text, now).map_err(|e| anyhow::anyhow!("invalid --expires: {e}"))
}

async fn list(
    ctx: &Context,
    scope: Option<String>,
    project: Option<String>,
    actor: &Actor,
) -> anyhow::Result<ExitCode> {
    let scope = match scope.as_deref() {
        None => None,
        Some(s) => Some(
            SecretScope::parse(s)
                .with_context(|| format!("invalid --scope `{s}`: use meta, project or service"))?,
        ),
    };
    let store = open_store(ctx).await?;
    let secrets = vault::list(store.as_ref(), &ListFilter { scope, project }, actor).await?;
    if ctx.out.json {
        ctx.out.json(&serde_json::json!({
            "format_version": crate::FORMAT_VERSION,
            "secrets": secrets,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if secrets.is_empty() {
        ctx.out.text("no secrets\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(vec![
        "PATH",
        "SCOPE",
        "CREATED",
        "UPDATED",
        "LAST ACCESSED",
        "READS",
        "EXPIRES",
        "FLAGS",
        "DESCRIPTION",
    ]);
    for s in &secrets {
        let mut flags = Vec::new();
        if s.expired {
            flags.push(ctx.out.paint("expired", Style::Red));
        }
        if s.rotation_required {
            flags.push(ctx.out.paint("rotate", Style::Yellow));
        }
        table.add_row(vec![
            s.path.clone(),
            s.scope.clone(),
            day(Some(s.created_at)),
            day(Some(s.updated_at)),
            minute(s.last_accessed_at),
            s.access_count.to_string(),
            day(s.expires_at),
            flags.join(","),
            s.description.clone().unwrap_or_default(),
        ]);
    }
    let text = table
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    ctx.out.text(&format!("{text}\n"))?;
    Ok(ExitCode::SUCCESS)
}

fn day(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d").to_string())
}

fn minute(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "never".into(),
        |t| t.format("%Y-%m-%d %H:%M").to_string(),
    )
}

async fn audit(
    ctx: &Context,
    path: Option<String>,
    limit: i64,
    actor: &Actor,
) -> anyhow::Result<ExitCode> {
    let path = path.as_deref().map(SecretPath::parse).transpose()?;
    let store = open_store(ctx).await?;
    let events = vault::audit_log(store.as_ref(), path.as_ref(), limit, actor).await?;
    if ctx.out.json {
        ctx.out.json(&serde_json::json!({
            "format_version": crate::FORMAT_VERSION,
            "events": events,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if events.is_empty() {
        ctx.out.text("no recorded access\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    for e in &events {
        out.push_str(&format!(
            "{}  {:<7} {:<13} {}  {}\n",
            e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
            e.action,
            e.outcome,
            e.path,
            e.actor
        ));
    }
    ctx.out.text(&out)?;
    Ok(ExitCode::SUCCESS)
}

async fn scan_files(ctx: &Context, paths: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    let report = tokio::task::spawn_blocking(move || scan::scan_paths(&paths))
        .await
        .context("scanning files")?;
    for e in &report.errors {
        eprintln!("warning: cannot scan {e}");
    }
    if ctx.out.json {
        #[derive(Serialize)]
        struct Json<'a> {
            format_version: &'static str,
            #[serde(flatten)]
            report: &'a scan::ScanReport,
        }
        ctx.out.json(&Json {
            format_version: crate::FORMAT_VERSION,
            report: &report,
        })?;
    } else {
        let mut out = String::new();
        for f in &report.findings {
            out.push_str(&format!(
                "{}:{}:{}: {} {}\n",
                f.file.display(),
                f.line,
                f.column,
                ctx.out.paint(f.kind.as_str(), Style::Bold),
                f.masked
            ));
        }
        let mut skipped = Vec::new();
        if report.skipped_binary > 0 {
            skipped.push(format!("{} binary", report.skipped_binary));
        }
        if report.skipped_large > 0 {
            skipped.push(format!("{} too large", report.skipped_large));
        }
        let skipped = if skipped.is_empty() {
            String::new()
        } else {
            format!(" (skipped {})", skipped.join(", "))
        };
        out.push_str(&format!(
            "{} credential(s) found in {} file(s) scanned{skipped}\n",
            report.findings.len(),
            report.files_scanned
        ));
        ctx.out.text(&out)?;
    }
    Ok(if report.findings.is_empty() && report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn detect(ctx: &Context, project: Option<&str>) -> anyhow::Result<ExitCode> {
    let text = tokio::task::spawn_blocking(|| -> anyhow::Result<Zeroizing<String>> {
        let mut bytes = Zeroizing::new(Vec::new());
        std::io::stdin()
            .lock()
            .take(MAX_DETECT_BYTES)
            .read_to_end(&mut bytes)
            .context("cannot read stdin")?;
        Ok(Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned()))
    })
    .await
    .context("reading stdin")??;
    let suggestions = detector::suggest(&text, project)?;
    drop(text);
    if ctx.out.json {
        let items: Vec<_> = suggestions
            .iter()
            .map(|s| {
                serde_json::json!({
                    "line": s.line,
                    "column": s.column,
                    "kind": s.finding.kind,
                    "masked": s.finding.masked(),
                    "suggested_path": s.path.as_str(),
                })
            })
            .collect();
        ctx.out.json(&serde_json::json!({
            "format_version": crate::FORMAT_VERSION,
            "credentials": items,
        }))?;
    } else if suggestions.is_empty() {
        ctx.out.text("no credentials found\n")?;
    } else {
        let mut out = String::new();
        for s in &suggestions {
            out.push_str(&format!(
                "{}:{}: {} {}  →  supervisor secrets set {}\n",
                s.line,
                s.column,
                s.finding.kind,
                s.finding.masked(),
                s.path
            ));
        }
        ctx.out.text(&out)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn expiry_forms() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        assert_eq!(parse_expiry("never", now).unwrap(), Expiry::Never);
        assert_eq!(
            parse_expiry("90d", now).unwrap(),
            Expiry::At(Utc.with_ymd_and_hms(2026, 4, 1, 12, 0, 0).unwrap())
        );
        assert_eq!(
            parse_expiry("2027-01-31", now).unwrap(),
            Expiry::At(Utc.with_ymd_and_hms(2027, 1, 31, 0, 0, 0).unwrap())
        );
        assert_eq!(
            parse_expiry("2027-01-31T10:00:00+02:00", now).unwrap(),
            Expiry::At(Utc.with_ymd_and_hms(2027, 1, 31, 8, 0, 0).unwrap())
        );
        let err = parse_expiry("soon", now).unwrap_err().to_string();
        assert!(err.contains("soon") && err.contains("90d"), "{err}");
    }
}
