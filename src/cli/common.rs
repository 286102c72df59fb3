//! What several commands share: loading desired state (with its diagnostics rendered), opening the
//! store, building the runtime (`ops::Runtime`), naming the actor.

use std::process::ExitCode;
use std::sync::Arc;

use super::Context;
use crate::ops::Runtime;
use crate::ops::runtime::VaultState;
use crate::state::{self, Desired, Diagnostics};
use crate::store::{self, Store};

/// Loads the desired state; on failure prints every diagnostic (text on stderr, or JSON on stdout)
/// and returns the exit code to use.
pub fn load_desired(ctx: &Context) -> Result<Desired, ExitCode> {
    let desired = state::load(&ctx.settings.state_dir).map_err(|diags| {
        print_diagnostics(ctx, &diags);
        ExitCode::from(1)
    })?;
    print_warnings(&desired);
    Ok(desired)
}

/// Warnings (deprecated keys) go to stderr in both modes: stdout stays one JSON document.
pub fn print_warnings(desired: &Desired) {
    for w in &desired.warnings {
        eprintln!("{w}");
    }
}

pub fn print_diagnostics(ctx: &Context, diags: &Diagnostics) {
    if ctx.out.json {
        let _ = ctx
            .out
            .json(&serde_json::json!({"valid": false, "errors": diags.0}));
    } else {
        eprintln!("{diags}");
    }
}

pub async fn open_store(ctx: &Context) -> anyhow::Result<Arc<dyn Store>> {
    Ok(store::open(&ctx.settings.database).await?)
}

/// The runtime of a command that plans or applies: desired state loaded (`Err(exit code)` after its
/// diagnostics were printed), the store opened, the vault loaded when a key is configured — a broken
/// key only stops the providers that need a credential (they say why).
pub async fn runtime(ctx: &Context) -> anyhow::Result<Result<Arc<Runtime>, ExitCode>> {
    let dir = ctx.settings.state_dir.clone();
    let desired = match tokio::task::spawn_blocking(move || state::load(&dir)).await? {
        Ok(d) => d,
        Err(diags) => {
            print_diagnostics(ctx, &diags);
            return Ok(Err(ExitCode::from(1)));
        }
    };
    print_warnings(&desired);
    let store = open_store(ctx).await?;
    let vault = VaultState::load(&ctx.settings, &store);
    Ok(Ok(Runtime::with_desired(
        ctx.settings.clone(),
        store,
        vault,
        desired,
        false,
    )))
}

/// `cli:<user>`, for the journal and the secret access log.
pub fn cli_actor() -> String {
    crate::secrets::vault::Actor::cli_current_user()
        .name()
        .to_string()
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
