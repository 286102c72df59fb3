//! Google Cloud API clients: Compute Engine (instances, zonal operations, machine types), Cloud
//! Monitoring (time series), API Keys (keys and their long-running operations), and the OAuth 2.0
//! service-account flow they all authenticate with.
//!
//! Every call goes through the shared HTTP policy ([`super::http`]): per-attempt timeouts, retries of
//! idempotent calls on 5xx and transport errors, `429 Retry-After`, and no blind resend of a call that
//! may have been applied. Compute Engine mutations (`stop`, `start`, `setMachineType`) carry a
//! `requestId` chosen by the caller; Google ignores a repeated request with the same id once the first
//! was received, so those POSTs are declared idempotent and retried like GETs. API key creation has no
//! such id and is never resent: a lost answer ends in [`ApiError::OutcomeUnknown`] and the caller
//! re-reads the key by its name first.
//!
//! Guarantees and caveats:
//! - Errors name the API, the method and the path (never the query string, a header, a token or a
//!   body) and carry Google's own error status and reason ([`parse_errors`]).
//! - An access token is fetched with the service account's key ([`auth::TokenSource`]), cached until
//!   shortly before it expires, and fetched once more when an API answers 401 (a revoked or rotated
//!   token); it only ever travels in a sensitive `Authorization` header.
//! - Long-running operations are waited for with a bound ([`operations`]); an operation that ends
//!   `DONE` with `error` is a failure, whatever else it says.
//! - Key strings of API keys are returned as `SecretString` and never deserialized into a type that
//!   can be printed.
//! - These clients know nothing of plans, desired state or the engine.

pub mod apikeys;
pub mod auth;
pub mod compute;
pub mod monitoring;
pub mod operations;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::http::{ApiError, ApiMessage, ApiRequest, ApiResponse, ApiTransport};
use auth::{AuthError, TokenSource};

/// Compute Engine API v1.
pub const COMPUTE_DEFAULT_URL: &str = "https://compute.googleapis.com/compute/v1";
/// Overrides the Compute Engine base URL (a proxy, a fake in tests); wins over `gcloud.api_url`.
pub const COMPUTE_URL_ENV: &str = "SUPERVISOR_GCE_API_URL";
/// Cloud Monitoring API v3.
pub const MONITORING_DEFAULT_URL: &str = "https://monitoring.googleapis.com/v3";
/// Overrides the Monitoring base URL; wins over `gcloud.monitoring_api_url`.
pub const MONITORING_URL_ENV: &str = "SUPERVISOR_MONITORING_API_URL";
/// API Keys API v2.
pub const APIKEYS_DEFAULT_URL: &str = "https://apikeys.googleapis.com/v2";
/// Overrides the API Keys base URL; wins over `gcloud.apikeys_api_url`.
pub const APIKEYS_URL_ENV: &str = "SUPERVISOR_APIKEYS_API_URL";

/// A runaway `nextPageToken` must not keep a client reading forever.
const MAX_PAGES: usize = 10_000;

/// The base URL to use: the environment variable (when set and not blank), else the state file's
/// setting, else Google's production endpoint.
pub fn resolve_base_url(env: Option<&str>, setting: Option<&str>, default: &str) -> String {
    env.map(str::trim)
        .filter(|v| !v.is_empty())
        .or(setting.map(str::trim).filter(|v| !v.is_empty()))
        .unwrap_or(default)
        .to_string()
}

/// A failed Google API call.
#[derive(Debug, thiserror::Error)]
pub enum GoogleError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Operation(#[from] operations::OperationError),
    #[error("{api}: GET {path}: the listing did not end after {pages} pages")]
    EndlessPagination {
        api: &'static str,
        path: String,
        pages: usize,
    },
}

impl GoogleError {
    /// The HTTP status of the final answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            GoogleError::Api(e) => e.status(),
            GoogleError::Auth(AuthError::Api(e)) => e.status(),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// True when a non-idempotent call may or may not have been applied.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, GoogleError::Api(e) if e.is_outcome_unknown())
    }

    /// How long the API asked to wait before trying again, when it did (a 429 or 503 whose
    /// `Retry-After` was longer than the policy waits).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GoogleError::Api(e) | GoogleError::Auth(AuthError::Api(e)) => e.retry_after(),
            _ => None,
        }
    }

    /// The typed HTTP error inside, if this is one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            GoogleError::Api(e) | GoogleError::Auth(AuthError::Api(e)) => Some(e),
            _ => None,
        }
    }
}

/// Google's error envelope: `{"error": {"code": 400, "message": "…", "status": "FAILED_PRECONDITION",
/// "errors": [{"reason": "…", "message": "…"}]}}`, or the OAuth endpoint's
/// `{"error": "invalid_grant", "error_description": "…"}`.
#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorBody {
    Rpc(RpcError),
    OAuth(String),
}

#[derive(Deserialize)]
struct RpcError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    errors: Vec<RpcErrorItem>,
}

#[derive(Deserialize)]
struct RpcErrorItem {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct OAuthDescription {
    #[serde(default)]
    error_description: Option<String>,
}

/// Turns a Google error body into messages: `[400] FAILED_PRECONDITION (resourceNotReady): …`.
pub fn parse_errors(body: &[u8]) -> Vec<ApiMessage> {
    let Ok(env) = serde_json::from_slice::<ErrorEnvelope>(body) else {
        return Vec::new();
    };
    match env.error {
        ErrorBody::Rpc(e) => {
            let mut label = e.status.unwrap_or_default();
            let reasons: Vec<String> = e.errors.into_iter().filter_map(|i| i.reason).collect();
            if !reasons.is_empty() {
                if !label.is_empty() {
                    label.push(' ');
                }
                label.push_str(&format!("({})", reasons.join(", ")));
            }
            let message = if label.is_empty() {
                e.message
            } else {
                format!("{label}: {}", e.message)
            };
            vec![ApiMessage {
                code: e.code,
                message,
                pointer: None,
            }]
        }
        ErrorBody::OAuth(kind) => {
            let description = serde_json::from_slice::<OAuthDescription>(body)
                .ok()
                .and_then(|d| d.error_description)
                .unwrap_or_default();
            vec![ApiMessage {
                code: 0,
                message: if description.is_empty() {
                    kind
                } else {
                    format!("{kind}: {description}")
                },
                pointer: None,
            }]
        }
    }
}

/// One Google API: its HTTP transport and the token source that authenticates it.
pub(crate) struct GoogleApi {
    http: ApiTransport,
    auth: Arc<TokenSource>,
}

impl GoogleApi {
    pub(crate) fn new(
        api: &'static str,
        base_url: &str,
        auth: Arc<TokenSource>,
        policy: super::HttpPolicy,
    ) -> Result<Self, ApiError> {
        Ok(GoogleApi {
            http: ApiTransport::new(api, base_url, policy, parse_errors)?,
            auth,
        })
    }

    pub(crate) fn api(&self) -> &'static str {
        self.http.api()
    }

    /// Sends with a bearer token; a 401 (token revoked or expired early) fetches a new token and
    /// sends once more.
    pub(crate) async fn send(&self, req: &ApiRequest) -> Result<ApiResponse, GoogleError> {
        let token = self.auth.token().await?;
        match self.http.send(req, Some(&token)).await {
            Err(ApiError::Auth { status: 401, .. }) => {
                self.auth.invalidate().await;
                let token = self.auth.token().await?;
                Ok(self.http.send(req, Some(&token)).await?)
            }
            other => Ok(other?),
        }
    }

    /// Sends and decodes the JSON answer.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        req: &ApiRequest,
    ) -> Result<T, GoogleError> {
        let resp = self.send(req).await?;
        serde_json::from_slice(&resp.body)
            .map_err(|e| GoogleError::Api(self.http.decode_error(req, resp.status, e.to_string())))
    }

    /// Follows `nextPageToken` until the listing ends; `page` builds the request for a token.
    pub(crate) async fn paged<P, T>(
        &self,
        page: impl Fn(Option<&str>) -> ApiRequest,
        mut take: impl FnMut(P) -> (Vec<T>, Option<String>),
    ) -> Result<Vec<T>, GoogleError>
    where
        P: DeserializeOwned,
    {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let req = page(token.as_deref());
            let (items, next) = take(self.json::<P>(&req).await?);
            out.extend(items);
            match next.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
        Err(GoogleError::EndlessPagination {
            api: self.api(),
            path: page(None).path(),
            pages: MAX_PAGES,
        })
    }
}

/// The last segment of a resource URL: `…/zones/us-central1-a/machineTypes/e2-standard-4` →
/// `e2-standard-4`. Compute Engine returns full URLs where requests take short names.
pub fn short_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_errors_become_messages() {
        let body = br#"{"error":{"code":400,"message":"Invalid resource usage: 'Instance should be in the STOPPED state.'","status":"FAILED_PRECONDITION","errors":[{"message":"x","domain":"global","reason":"resourceNotReady"}]}}"#;
        let m = parse_errors(body);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].code, 400);
        assert_eq!(
            m[0].message,
            "FAILED_PRECONDITION (resourceNotReady): Invalid resource usage: 'Instance should be in the STOPPED state.'"
        );
        let oauth = br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
        assert_eq!(
            parse_errors(oauth)[0].message,
            "invalid_grant: Invalid JWT Signature."
        );
        assert!(parse_errors(b"<html>").is_empty());
    }

    #[test]
    fn base_urls_environment_then_setting_then_default() {
        assert_eq!(resolve_base_url(None, None, "d"), "d");
        assert_eq!(resolve_base_url(None, Some("s"), "d"), "s");
        assert_eq!(resolve_base_url(Some(" e "), Some("s"), "d"), "e");
        assert_eq!(resolve_base_url(Some(" "), Some("s"), "d"), "s");
    }

    #[test]
    fn short_names_of_resource_urls() {
        assert_eq!(
            short_name(
                "https://www.googleapis.com/compute/v1/projects/p/zones/us-central1-a/machineTypes/e2-standard-4"
            ),
            "e2-standard-4"
        );
        assert_eq!(
            short_name("zones/z/machineTypes/n2-highmem-8/"),
            "n2-highmem-8"
        );
        assert_eq!(short_name("e2-micro"), "e2-micro");
    }
}
