//! Providers: one per kind of reality, each implementing [`crate::engine::Provider`] — observe, diff
//! (a pure function, unit-tested with plain values), apply one change (or one batch).
//!
//! Providers know nothing of the CLI or MCP; API clients they use know nothing of plans.

pub mod adoption;
pub mod api_key;
pub mod cloudflare;
pub mod dns;
pub mod files;
pub mod gcloud;
pub mod instructions;
pub mod ports;
pub mod ports_audit;
pub mod secrets;
pub mod sockets;
pub mod tunnel;
pub mod vm;
pub mod vm_info;

use std::sync::Arc;

use crate::engine::{Provider, ProviderError};
use crate::secrets::{SecretSink, SecretSource};
use crate::state::Desired;
use crate::store::{DEFAULT_HOST, Store};

/// What providers are built from.
#[derive(Clone)]
pub struct ProviderContext {
    pub store: Arc<dyn Store>,
    /// Credentials by vault path; `None` when no encryption key is configured (providers that need a
    /// credential then fail to build with an error saying so).
    pub secrets: Option<Arc<dyn SecretSource>>,
    /// Where providers store secrets they create (API key strings), by vault path; `None` when no
    /// encryption key is configured.
    pub secret_sink: Option<Arc<dyn SecretSink>>,
    /// Hostnames whose existing, unmanaged DNS records may be adopted (`apply --adopt HOST`).
    pub adopt: Vec<String>,
    /// Who reads the credentials (`cli:<user>`, `serve`), for the secret access log.
    pub actor: String,
    /// Where agents reach this supervisor's MCP server (named in generated CLAUDE.md files).
    pub mcp_base_url: String,
    /// Timeouts and retries of every remote API call (Cloudflare, Google Cloud).
    pub http: crate::clients::HttpPolicy,
    /// How long Google Cloud operations are waited for.
    pub google_waits: gcloud::GoogleWaits,
}

/// The MCP base URL when none is configured (`serve`'s default listen address).
pub const DEFAULT_MCP_BASE_URL: &str = "http://127.0.0.1:8080";

impl ProviderContext {
    pub fn new(store: Arc<dyn Store>) -> Self {
        ProviderContext {
            store,
            secrets: None,
            secret_sink: None,
            adopt: Vec::new(),
            actor: "supervisor".into(),
            mcp_base_url: DEFAULT_MCP_BASE_URL.into(),
            http: crate::clients::HttpPolicy::default(),
            google_waits: gcloud::GoogleWaits::default(),
        }
    }
}

/// The providers for `desired`, in apply order: ports → tunnel → dns → vm → api_key →
/// instructions → secrets. Tunnel and DNS exist only when `cloudflare` is configured; building them
/// reads the API token from the vault once (an error names the secret's path and how to set it). VM
/// and API key providers exist when VMs or API keys are declared (or API keys are still in the
/// inventory); they share one Google Cloud connection, whose service-account key is read from the
/// vault once.
pub async fn for_desired(
    desired: &Desired,
    ctx: &ProviderContext,
) -> Result<Vec<Box<dyn Provider>>, ProviderError> {
    let mut providers: Vec<Box<dyn Provider>> = vec![Box::new(ports::PortsProvider::new(
        ctx.store.clone(),
        DEFAULT_HOST,
    ))];
    if let Some(cf) = &desired.cloudflare {
        let api = cloudflare::connect(cf, ctx).await?;
        providers.push(Box::new(tunnel::TunnelProvider::new(
            ctx.store.clone(),
            api.clone(),
            cf,
            &ctx.adopt,
        )));
        providers.push(Box::new(dns::DnsProvider::new(
            ctx.store.clone(),
            api,
            &ctx.adopt,
        )));
    }
    let declares_keys = desired.projects.values().any(|p| !p.api_keys.is_empty());
    let manages_keys = !ctx.store.list_managed(api_key::NAME).await?.is_empty();
    let cloud = match &desired.gcloud {
        Some(g) if !desired.vms.is_empty() || declares_keys || manages_keys => {
            Some(gcloud::connect(g, ctx).await?)
        }
        _ => None,
    };
    if let Some(cloud) = &cloud
        && !desired.vms.is_empty()
    {
        providers.push(Box::new(vm::VmProvider::new(
            ctx.store.clone(),
            cloud.clone(),
        )));
    }
    if declares_keys || manages_keys {
        providers.push(Box::new(api_key::ApiKeyProvider::new(
            ctx.store.clone(),
            cloud,
            ctx.secret_sink.clone(),
            &ctx.actor,
        )));
    }
    providers.push(Box::new(instructions::InstructionsProvider::new(
        ctx.store.clone(),
        crate::instructions::facts::Endpoint {
            base_url: ctx.mcp_base_url.clone(),
        },
    )));
    providers.push(Box::new(secrets::RequiredSecretsProvider::new(
        ctx.store.clone(),
    )));
    Ok(providers)
}
