//! What several commands share: loading desired state (with its diagnostics rendered), opening the
//! store, building the engine, naming the actor.

use std::process::ExitCode;
use std::sync::Arc;

use serde_json::json;

use super::Context;
use crate::engine::Engine;
use crate::providers::ProviderContext;
use crate::secrets::{SecretSink, SecretSource};
use crate::state::{self, Desired, Diagnostics};
use crate::store::{self, Store};

/// Loads the desired state; on failure prints every diagnostic (text on stderr, or JSON on stdout)
/// and returns the exit code to use.
pub fn load_desired(ctx: &Context) -> Result<Desired, ExitCode> {
    let desired = state::load(&ctx.settings.state_dir).map_err(|diags| {
        print_diagnostics(ctx, &diags);
        ExitCode::from(1)
    })?;
    // Warnings (deprecated keys) go to stderr in both modes: stdout stays one JSON document.
    for w in &desired.warnings {
        eprintln!("{w}");
    }
    Ok(desired)
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
    ctx: &Context,
    desired: &Desired,
    store: Arc<dyn Store>,
    adopt: &[String],
) -> anyhow::Result<Engine> {
    let pctx = provider_context(ctx, store.clone(), adopt).await;
    let providers = crate::providers::for_desired(desired, &pctx).await?;
    Ok(Engine::new(store, providers))
}

/// What providers are built from on the command line: the store, the vault as credential source (when
/// an encryption key is configured), the hostnames to adopt, and the CLI user as actor.
pub async fn provider_context(
    ctx: &Context,
    store: Arc<dyn Store>,
    adopt: &[String],
) -> ProviderContext {
    let mut pctx = ProviderContext::new(store.clone());
    match vault(ctx, store).await {
        Ok(Some(v)) => {
            pctx.secrets = Some(v.clone() as Arc<dyn SecretSource>);
            pctx.secret_sink = Some(v as Arc<dyn SecretSink>);
        }
        Ok(None) => {}
        // A broken key only matters to providers that need a credential: they report it (with
        // why), everything else plans.
        Err(e) => {
            let unavailable = Arc::new(KeyUnavailable(format!("{e:#}")));
            pctx.secrets = Some(unavailable.clone() as Arc<dyn SecretSource>);
            pctx.secret_sink = Some(unavailable as Arc<dyn SecretSink>);
        }
    }
    pctx.adopt = adopt.to_vec();
    pctx.actor = cli_actor();
    pctx
}

/// `cli:<user>`, for the journal and the secret access log.
pub fn cli_actor() -> String {
    crate::secrets::vault::Actor::cli_current_user()
        .name()
        .to_string()
}

/// A credential source whose every read fails with why the encryption key could not be loaded.
struct KeyUnavailable(String);

#[async_trait::async_trait]
impl crate::secrets::SecretSource for KeyUnavailable {
    async fn read_secret(
        &self,
        path: &str,
        _actor: &str,
    ) -> Result<secrecy::SecretString, crate::secrets::SecretSourceError> {
        Err(crate::secrets::SecretSourceError {
            path: path.to_string(),
            reason: format!("the encryption key cannot be used: {}", self.0),
        })
    }
}

#[async_trait::async_trait]
impl crate::secrets::SecretSink for KeyUnavailable {
    async fn write_secret(
        &self,
        path: &str,
        _value: &secrecy::SecretString,
        _description: &str,
        _actor: &str,
    ) -> Result<(), crate::secrets::SecretSinkError> {
        Err(self.sink_error(path, "store"))
    }

    async fn delete_secret(
        &self,
        path: &str,
        _actor: &str,
    ) -> Result<bool, crate::secrets::SecretSinkError> {
        Err(self.sink_error(path, "delete"))
    }

    async fn secret_exists(
        &self,
        path: &str,
        _actor: &str,
    ) -> Result<bool, crate::secrets::SecretSinkError> {
        Err(self.sink_error(path, "look up"))
    }
}

impl KeyUnavailable {
    fn sink_error(&self, path: &str, action: &'static str) -> crate::secrets::SecretSinkError {
        crate::secrets::SecretSinkError {
            path: path.to_string(),
            action,
            reason: format!("the encryption key cannot be used: {}", self.0),
        }
    }
}

/// The vault, when an encryption key is configured (`None` otherwise: secret tools and providers that
/// need a credential then say so). A malformed key is an error.
pub async fn vault(
    ctx: &Context,
    store: Arc<dyn Store>,
) -> anyhow::Result<Option<Arc<crate::secrets::vault::Vault>>> {
    let key = crate::secrets::key::EncryptionKey::load(ctx.settings.key_file.as_deref())?;
    Ok(key.map(|k| Arc::new(crate::secrets::vault::Vault::new(store, k))))
}
