//! What the tunnel and DNS providers share: one connection to the Cloudflare API (base URL resolved
//! once, API token read once from the vault), the zone id (resolved once per run), the ownership
//! marker written into record comments, and hostname rules (normalisation, specificity order).
//!
//! Base URL precedence: the environment variable `SUPERVISOR_CLOUDFLARE_API_URL` wins over
//! `cloudflare.api_url` in `supervisor.yaml`, which wins over Cloudflare's production API. The token
//! is never held outside the client (which redacts it) and never appears in an error.

use std::sync::Arc;

use tokio::sync::OnceCell;

use super::ProviderContext;
use crate::clients::cloudflare::{
    BASE_URL_ENV, CloudflareClient, CloudflareError, DEFAULT_BASE_URL,
};
use crate::engine::ProviderError;
use crate::state::{Cloudflare, Hostname};

/// The marker the supervisor writes into the comment of the DNS records it creates (and of adopted
/// records on their next real update). The inventory, not the comment, decides ownership; the
/// comment tells people in the dashboard, and lets a crashed apply recognise its own records.
pub const OWNER_COMMENT: &str = "managed-by: supervisor";

/// Cloudflare's limit on record comments on the Free plan.
pub const COMMENT_MAX_LEN: usize = 100;

/// A connection to the Cloudflare API for one zone.
pub struct CloudflareApi {
    pub client: CloudflareClient,
    pub zone: String,
    pub base_url: String,
    zone_id: OnceCell<String>,
}

impl CloudflareApi {
    pub fn new(client: CloudflareClient, zone: &str, base_url: &str) -> Self {
        CloudflareApi {
            client,
            zone: zone.to_string(),
            base_url: base_url.to_string(),
            zone_id: OnceCell::new(),
        }
    }

    /// The zone's id, looked up by name (`GET /zones?name=`) on first use.
    pub async fn zone_id(&self) -> Result<String, ProviderError> {
        self.zone_id
            .get_or_try_init(|| async {
                self.client
                    .zone_id_by_name(&self.zone)
                    .await
                    .map_err(api_error)
            })
            .await
            .cloned()
    }
}

/// The API base URL: `SUPERVISOR_CLOUDFLARE_API_URL` (when set and not empty), else
/// `cloudflare.api_url`, else Cloudflare's production API.
pub fn base_url(cf: &Cloudflare, env: Option<&str>) -> String {
    env.map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .or_else(|| cf.api_url.clone())
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_string())
}

/// Reads the API token from the vault (once) and builds the client.
pub async fn connect(
    cf: &Cloudflare,
    ctx: &ProviderContext,
) -> Result<Arc<CloudflareApi>, ProviderError> {
    let path = &cf.api_token_secret;
    let Some(secrets) = &ctx.secrets else {
        return Err(ProviderError::Failed(format!(
            "the Cloudflare API token is read from the vault at `{path}` (cloudflare.api_token), but no encryption key is configured: set SECRETS_ENCRYPTION_KEY (or key_file in supervisor.toml), then store the token with `supervisor secrets set {path}`"
        )));
    };
    let token = secrets.read_secret(path, &ctx.actor).await.map_err(|e| {
        let e = e.to_string();
        let hint = if e.contains("supervisor secrets set") {
            String::new()
        } else {
            format!("; store it with `supervisor secrets set {path}`")
        };
        ProviderError::Failed(format!(
            "cannot read the Cloudflare API token (cloudflare.api_token): {e}{hint}"
        ))
    })?;
    let env = std::env::var(BASE_URL_ENV).ok();
    let url = base_url(cf, env.as_deref());
    let client = CloudflareClient::new(&url, token, ctx.http.clone())
        .map_err(|e| ProviderError::Failed(e.to_string()))?;
    Ok(Arc::new(CloudflareApi::new(client, &cf.zone, &url)))
}

/// A Cloudflare failure as a provider error (the client's messages name method and path, never
/// the token); an API error stays typed, so the reconcile loop can honour its `Retry-After`.
pub fn api_error(e: CloudflareError) -> ProviderError {
    match e {
        CloudflareError::Api(api) => ProviderError::from(api),
        other => ProviderError::Failed(other.to_string()),
    }
}

/// Lower case, no surrounding blanks, no trailing dot: how Cloudflare and cloudflared compare names
/// (the one normal form, [`Hostname::normalize`]).
pub fn normalize_host(h: &str) -> String {
    Hostname::normalize(h)
}

/// The sort key that puts more specific hostnames first: exact names before wildcards, and among
/// each, more labels first (`*.api.example.com` before `*.example.com`); rules without a hostname
/// last. Ties keep their order (the sort using it must be stable).
pub fn specificity(hostname: Option<&str>) -> (u8, std::cmp::Reverse<usize>) {
    match hostname {
        None | Some("*") => (2, std::cmp::Reverse(0)),
        Some(h) => (
            u8::from(h.starts_with("*.")),
            std::cmp::Reverse(h.split('.').count()),
        ),
    }
}

/// The comment to write when the supervisor updates a record whose comment is `current`: the
/// marker, added to what is there when it fits, so people's notes are kept.
pub fn marked_comment(current: Option<&str>) -> Option<String> {
    let current = current.map(str::trim).unwrap_or("");
    if current.contains(OWNER_COMMENT) {
        return Some(current.to_string());
    }
    if current.is_empty() {
        return Some(OWNER_COMMENT.to_string());
    }
    let joined = format!("{current}; {OWNER_COMMENT}");
    if joined.chars().count() <= COMMENT_MAX_LEN {
        Some(joined)
    } else {
        // No room for the marker: keep the person's note; the inventory still records ownership.
        Some(current.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Tunnel, TunnelMode};

    fn cf(api_url: Option<&str>) -> Cloudflare {
        Cloudflare {
            zone: "example.com".into(),
            account_id: None,
            api_token_secret: "meta/cloudflare/api_token".into(),
            api_url: api_url.map(str::to_string),
            tunnel: Tunnel {
                id: "t".into(),
                mode: TunnelMode::Remote,
                config_path: None,
                credentials_file: None,
                reload: None,
                target: "t.cfargotunnel.com".into(),
            },
        }
    }

    #[test]
    fn environment_wins_over_settings_over_default() {
        assert_eq!(base_url(&cf(None), None), DEFAULT_BASE_URL);
        assert_eq!(
            base_url(&cf(Some("http://file/v4")), None),
            "http://file/v4"
        );
        assert_eq!(
            base_url(&cf(Some("http://file/v4")), Some(" http://env/v4 ")),
            "http://env/v4"
        );
        assert_eq!(
            base_url(&cf(Some("http://file/v4")), Some("  ")),
            "http://file/v4",
            "an empty variable does not count"
        );
    }

    #[test]
    fn specific_before_wildcard_before_catch_all() {
        let mut hosts = vec![
            None,
            Some("*.example.com"),
            Some("a.example.com"),
            Some("*.api.example.com"),
            Some("x.api.example.com"),
        ];
        hosts.sort_by_key(|h| specificity(*h));
        assert_eq!(
            hosts,
            [
                Some("x.api.example.com"),
                Some("a.example.com"),
                Some("*.api.example.com"),
                Some("*.example.com"),
                None
            ]
        );
    }

    #[test]
    fn the_marker_joins_people_notes_when_it_fits() {
        assert_eq!(marked_comment(None).as_deref(), Some(OWNER_COMMENT));
        assert_eq!(marked_comment(Some("  ")).as_deref(), Some(OWNER_COMMENT));
        assert_eq!(
            marked_comment(Some("owned by ops")).as_deref(),
            Some("owned by ops; managed-by: supervisor")
        );
        assert_eq!(
            marked_comment(Some("x; managed-by: supervisor")).as_deref(),
            Some("x; managed-by: supervisor")
        );
        let long = "n".repeat(90);
        assert_eq!(marked_comment(Some(&long)).as_deref(), Some(long.as_str()));
    }
}
