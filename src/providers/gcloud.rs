//! What the VM and API key providers (and the `vm` read tools) share: one connection to Google
//! Cloud built from the desired state and the vault — the service-account key read once from the
//! vault path in `gcloud.credentials`, one token source, and the Compute Engine, Monitoring and API
//! Keys clients.
//!
//! Base URLs: `SUPERVISOR_GCE_API_URL`, `SUPERVISOR_MONITORING_API_URL` and
//! `SUPERVISOR_APIKEYS_API_URL` win over `gcloud.api_url`, `gcloud.monitoring_api_url` and
//! `gcloud.apikeys_api_url`, which win over Google's endpoints. The token endpoint is the key's own
//! `token_uri`. The key is never held outside the token source (which redacts it) and never appears
//! in an error.

use std::sync::Arc;
use std::time::Duration;

use super::ProviderContext;
use crate::clients::HttpPolicy;
use crate::clients::google::apikeys::ApiKeysClient;
use crate::clients::google::auth::{ServiceAccountKey, TokenSource};
use crate::clients::google::compute::ComputeClient;
use crate::clients::google::monitoring::MonitoringClient;
use crate::clients::google::operations::WaitPolicy;
use crate::clients::google::{
    APIKEYS_DEFAULT_URL, APIKEYS_URL_ENV, COMPUTE_DEFAULT_URL, COMPUTE_URL_ENV, GoogleError,
    MONITORING_DEFAULT_URL, MONITORING_URL_ENV, resolve_base_url,
};
use crate::engine::ProviderError;
use crate::state::Gcloud;

/// The endpoints a connection uses (for `doctor`, plan headers and messages).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Endpoints {
    pub compute: String,
    pub monitoring: String,
    pub apikeys: String,
    pub token: String,
}

impl Endpoints {
    /// The base URLs for `g`, with the environment's overrides.
    pub fn resolve(g: &Gcloud, token_uri: &str) -> Endpoints {
        let env = |name: &str| std::env::var(name).ok();
        Endpoints {
            compute: resolve_base_url(
                env(COMPUTE_URL_ENV).as_deref(),
                g.api_url.as_deref(),
                COMPUTE_DEFAULT_URL,
            ),
            monitoring: resolve_base_url(
                env(MONITORING_URL_ENV).as_deref(),
                g.monitoring_api_url.as_deref(),
                MONITORING_DEFAULT_URL,
            ),
            apikeys: resolve_base_url(
                env(APIKEYS_URL_ENV).as_deref(),
                g.apikeys_api_url.as_deref(),
                APIKEYS_DEFAULT_URL,
            ),
            token: token_uri.to_string(),
        }
    }
}

/// How long Google Cloud operations are waited for. Past a bound the change fails with
/// [`OperationError::TimedOut`](crate::clients::google::operations::OperationError) naming the
/// operation — it may still finish, and the next plan re-reads the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoogleWaits {
    /// Compute Engine operations (stop, start, setMachineType).
    pub compute: WaitPolicy,
    /// API Keys operations (create, delete).
    pub key: WaitPolicy,
    /// A status transition (STOPPING → TERMINATED, STAGING → RUNNING) once its operation is done.
    pub settle: WaitPolicy,
}

impl Default for GoogleWaits {
    fn default() -> Self {
        GoogleWaits {
            compute: WaitPolicy {
                timeout: Duration::from_secs(15 * 60),
                poll_interval: Duration::from_secs(2),
            },
            key: WaitPolicy {
                timeout: Duration::from_secs(5 * 60),
                poll_interval: Duration::from_millis(500),
            },
            settle: WaitPolicy {
                timeout: Duration::from_secs(5 * 60),
                poll_interval: Duration::from_millis(500),
            },
        }
    }
}

/// A connection to Google Cloud for one service account.
pub struct GoogleCloud {
    pub auth: Arc<TokenSource>,
    pub compute: ComputeClient,
    pub monitoring: MonitoringClient,
    pub apikeys: ApiKeysClient,
    pub endpoints: Endpoints,
    /// Bounds of Compute Engine operation waits (stop, start, setMachineType).
    pub compute_wait: WaitPolicy,
    /// Bounds of API Keys operation waits.
    pub key_wait: WaitPolicy,
    /// How long a status transition (STOPPING → TERMINATED, STAGING → RUNNING) may take once its
    /// operation is done, and how often it is re-read.
    pub settle: WaitPolicy,
}

impl GoogleCloud {
    /// Builds the clients for the service-account key `json`.
    pub fn new(
        g: &Gcloud,
        json: &str,
        policy: HttpPolicy,
        waits: GoogleWaits,
    ) -> Result<GoogleCloud, ProviderError> {
        let key = ServiceAccountKey::from_json(json).map_err(|e| {
            ProviderError::Failed(format!(
                "gcloud.credentials ({}): {e}",
                g.credentials_secret
            ))
        })?;
        let endpoints = Endpoints::resolve(g, &key.token_uri);
        let auth = Arc::new(
            TokenSource::new(key, policy.clone())
                .map_err(|e| ProviderError::Failed(format!("gcloud.credentials: {e}")))?,
        );
        let failed = |e: crate::clients::ApiError| ProviderError::Failed(e.to_string());
        Ok(GoogleCloud {
            compute: ComputeClient::new(&endpoints.compute, auth.clone(), policy.clone())
                .map_err(failed)?,
            monitoring: MonitoringClient::new(&endpoints.monitoring, auth.clone(), policy.clone())
                .map_err(failed)?,
            apikeys: ApiKeysClient::new(&endpoints.apikeys, auth.clone(), policy)
                .map_err(failed)?,
            auth,
            endpoints,
            compute_wait: waits.compute,
            key_wait: waits.key,
            settle: waits.settle,
        })
    }

    /// Exchanges the key for a token now (for `doctor`): proves the key and the token endpoint.
    pub async fn check_token(&self) -> Result<(), GoogleError> {
        self.auth
            .token()
            .await
            .map(|_| ())
            .map_err(GoogleError::from)
    }
}

/// Reads the service-account key from the vault (once) and connects.
pub async fn connect(g: &Gcloud, ctx: &ProviderContext) -> Result<Arc<GoogleCloud>, ProviderError> {
    let path = &g.credentials_secret;
    let Some(secrets) = &ctx.secrets else {
        return Err(ProviderError::Failed(format!(
            "the Google service-account key is read from the vault at `{path}` (gcloud.credentials), but no encryption key is configured: set SECRETS_ENCRYPTION_KEY (or secrets_key_file in supervisor.toml), then store the key file with `supervisor secrets set {path} --value-file key.json`"
        )));
    };
    let json = secrets.read_secret(path, &ctx.actor).await.map_err(|e| {
        let e = e.to_string();
        let hint = if e.contains("supervisor secrets set") {
            String::new()
        } else {
            format!("; store it with `supervisor secrets set {path} --value-file key.json`")
        };
        ProviderError::Failed(format!(
            "cannot read the Google service-account key (gcloud.credentials): {e}{hint}"
        ))
    })?;
    use secrecy::ExposeSecret;
    Ok(Arc::new(GoogleCloud::new(
        g,
        json.expose_secret(),
        ctx.http.clone(),
        ctx.google_waits,
    )?))
}

/// A Google failure as a provider error, with what was being done.
pub fn google_error(context: impl Into<String>, source: GoogleError) -> ProviderError {
    ProviderError::Google {
        context: context.into(),
        source: Box::new(source),
    }
}
