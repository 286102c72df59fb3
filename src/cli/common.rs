//! What several commands share: loading desired state (with its diagnostics rendered), opening the
//! store, building the engine, naming the actor.

use std::process::ExitCode;
use std::sync::Arc;

use serde_json::json;

use super::Context;
use crate::engine::Engine;
use crate::providers::ProviderContext;
use crate::state::{self, Desired, Diagnostics};
use crate::store::{self, Store};

/// Loads the desired state; on failure prints every diagnostic (text on stderr, or JSON on stdout)
/// and returns the exit code to use.
pub fn load_desired(ctx: &Context) -> Result<Desired, ExitCode> {
    state::load(&ctx.settings.state_dir).map_err(|diags| {
        print_diagnostics(ctx, &diags);
        ExitCode::from(1)
    })
}

pub fn print_diagnostics(ctx: &Context, diags: &Diagnostics) {
    if ctx.out.json {
        let _ = ctx
            .out
            .json(&json!({"format_version": "1", "valid": false, "errors": diags.0}));
    } else {
        eprintln!("{diags}");
    }
}

pub async fn open_store(ctx: &Context) -> anyhow::Result<Arc<dyn Store>> {
    Ok(store::open(&ctx.settings.database).await?)
}

/// The engine with the providers `desired` needs. `adopt`: hostnames whose unmanaged DNS records may be
/// adopted.
pub async fn engine(
    desired: &Desired,
    store: Arc<dyn Store>,
    adopt: &[String],
) -> anyhow::Result<Engine> {
    let mut ctx = ProviderContext::new(store.clone());
    ctx.adopt = adopt.to_vec();
    ctx.actor = cli_actor();
    let providers = crate::providers::for_desired(desired, &ctx).await?;
    Ok(Engine::new(store, providers))
}

/// `cli:<user>`, for the journal and the secret access log.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty());
    let user = user.unwrap_or_else(|| {
        // No login name in the environment (cron, containers): fall back to the numeric uid.
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("Uid:")
                        .and_then(|r| r.split_whitespace().next().map(str::to_string))
                })
            });
        format!("uid-{}", uid.unwrap_or_else(|| "unknown".into()))
    });
    format!("cli:{user}")
}

/// The vault as a credential source, when an encryption key is configured (`None` otherwise: providers
/// that need a credential then say so).
pub async fn secret_source(
    ctx: &Context,
    _store: Arc<dyn Store>,
) -> anyhow::Result<Option<Arc<dyn crate::secrets::SecretSource>>> {
    let _key = crate::secrets::key::EncryptionKey::load(ctx.settings.key_file.as_deref())?;
    // The vault lands with the secrets work; until then no credentials are available.
    Ok(None)
}
