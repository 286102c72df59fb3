//! OAuth 2.0 for service accounts (RFC 7523 JWT bearer grant), as Google documents it: sign
//! `{"alg":"RS256","typ":"JWT"}` + `{iss: client_email, scope, aud: token_uri, iat, exp: iat+3600}`
//! with the key's RSA private key and POST `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&
//! assertion=<jwt>` to the key's own `token_uri`.
//!
//! Why a few lines of our own instead of `gcp_auth`: gcp_auth brings its own hyper client, so token
//! requests would bypass the HTTP policy every other call follows (timeouts, retries with backoff,
//! `Retry-After`, errors that name the call without its body) and could not be counted or
//! fault-injected like the rest in tests; its TLS stack is a second configuration to keep on the one
//! rustls provider. Signing needs one RSA PKCS#1 v1.5 SHA-256 signature, which `ring` — already the
//! process's rustls crypto provider — does in constant time. So the token request is an ordinary
//! [`ApiRequest`] through [`ApiTransport`], and no new TLS or RSA implementation enters the build.
//!
//! Guarantees:
//! - The key is checked when the [`TokenSource`] is built (JSON shape, `type: service_account`, a
//!   parsable RSA key), so a bad credential fails before any API call, with a message that never
//!   contains key material.
//! - A token is cached until [`refresh_margin`] before it expires; concurrent callers share one
//!   fetch. The cache is per process and per service account (its address, key id, token endpoint
//!   and a digest of its key — never the key), so every token source built for the same account —
//!   one per MCP call or plan in `serve` — shares one token. [`TokenSource::invalidate`] drops it (an
//!   API answered 401).
//! - The private key and tokens live in `SecretString`s; `Debug` of every type here is redacted. The
//!   token request's body (the signed assertion) is never logged.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::{Method, Url};
use ring::signature::RsaKeyPair;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::clients::HttpPolicy;
use crate::clients::http::{ApiError, ApiRequest, ApiTransport};

/// The scope every supervisor call needs (Compute, Monitoring and API Keys all accept it).
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// How long an assertion (and so the token asked for) is valid: Google's maximum.
const ASSERTION_LIFETIME_SECS: u64 = 3600;

const API: &str = "Google OAuth token endpoint";

/// Why no token could be had. Never contains key material or a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the Google service-account key is not usable: {0}")]
    InvalidKey(String),
    #[error("cannot sign the token request with the service-account key")]
    Sign,
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{API}: POST {path}: the answer has no usable access token: {detail}")]
    BadToken { path: String, detail: String },
}

/// The fields of a service-account key file (`gcloud iam service-accounts keys create`) the flow
/// needs. `Debug` shows the account, never the key.
#[derive(Clone)]
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key_id: Option<String>,
    pub project_id: Option<String>,
    pub token_uri: String,
    private_key: SecretString,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    client_email: Option<String>,
    #[serde(default)]
    private_key: Option<String>,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

impl ServiceAccountKey {
    /// Parses a key file's JSON. Errors say which field is wrong, never what it holds.
    pub fn from_json(text: &str) -> Result<Self, AuthError> {
        let file: KeyFile = serde_json::from_str(text).map_err(|e| {
            AuthError::InvalidKey(format!(
                "not a JSON key file (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        match file.kind.as_deref() {
            Some("service_account") => {}
            Some(other) => {
                return Err(AuthError::InvalidKey(format!(
                    "its type is `{other}`, not `service_account` (create a key for a service account: `gcloud iam service-accounts keys create`)"
                )));
            }
            None => return Err(AuthError::InvalidKey("it has no `type`".into())),
        }
        let need = |v: Option<String>, field: &str| {
            v.filter(|s| !s.trim().is_empty())
                .ok_or_else(|| AuthError::InvalidKey(format!("it has no `{field}`")))
        };
        let client_email = need(file.client_email, "client_email")?;
        let token_uri = need(file.token_uri, "token_uri")?;
        let private_key = SecretString::from(need(file.private_key, "private_key")?);
        match Url::parse(&token_uri) {
            Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => {}
            _ => {
                return Err(AuthError::InvalidKey(format!(
                    "its token_uri `{token_uri}` is not an http(s) URL"
                )));
            }
        }
        let key = ServiceAccountKey {
            client_email,
            private_key_id: file.private_key_id,
            project_id: file.project_id,
            token_uri,
            private_key,
        };
        key.key_pair()?;
        Ok(key)
    }

    /// The RSA key pair from the PEM `private_key` (PKCS#8, as Google issues them, or PKCS#1).
    fn key_pair(&self) -> Result<RsaKeyPair, AuthError> {
        let pem = self.private_key.expose_secret();
        let (label, der) = pem_decode(pem)
            .ok_or_else(|| AuthError::InvalidKey("its private_key is not a PEM block".into()))?;
        let parsed = match label.as_str() {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
            other => {
                return Err(AuthError::InvalidKey(format!(
                    "its private_key is a `{other}` PEM block, not an RSA private key"
                )));
            }
        };
        parsed.map_err(|e| {
            AuthError::InvalidKey(format!("its private_key is not a usable RSA key ({e})"))
        })
    }
}

/// `-----BEGIN X-----` base64 `-----END X-----` → (X, bytes).
fn pem_decode(pem: &str) -> Option<(String, zeroize::Zeroizing<Vec<u8>>)> {
    let begin = pem.find("-----BEGIN ")?;
    let rest = &pem[begin + "-----BEGIN ".len()..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let end = rest.find(&end_marker)?;
    let b64: zeroize::Zeroizing<String> = zeroize::Zeroizing::new(
        rest[body_start..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect(),
    );
    let der = STANDARD.decode(b64.as_bytes()).ok()?;
    Some((label, zeroize::Zeroizing::new(der)))
}

/// Refresh when less than this is left: five minutes, or a quarter of a short-lived token's life.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    Duration::from_secs(300).min(lifetime / 4)
}

struct Cached {
    token: SecretString,
    refresh_at: Instant,
}

type Slot = Arc<Mutex<Option<Cached>>>;

/// The token cache of every service account this process has used, by [`cache_key`].
static CACHE: LazyLock<std::sync::Mutex<HashMap<String, Slot>>> =
    LazyLock::new(|| std::sync::Mutex::new(HashMap::new()));

/// Identifies an account without holding its key: address, key id, token endpoint, key digest.
fn cache_key(key: &ServiceAccountKey) -> String {
    let digest = Sha256::digest(key.private_key.expose_secret().as_bytes());
    format!(
        "{}\0{}\0{}\0{}",
        key.client_email,
        key.private_key_id.as_deref().unwrap_or(""),
        key.token_uri,
        hex::encode(&digest[..16])
    )
}

fn shared_slot(key: &ServiceAccountKey) -> Slot {
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.entry(cache_key(key)).or_default().clone()
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    token_type: Option<String>,
}

/// Access tokens for one service account, fetched through the HTTP policy and cached.
pub struct TokenSource {
    key: ServiceAccountKey,
    signer: RsaKeyPair,
    http: ApiTransport,
    segments: Vec<String>,
    scope: String,
    cache: Slot,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("client_email", &self.key.client_email)
            .field("token_uri", &self.key.token_uri)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A token source for `key` with the cloud-platform scope.
    pub fn new(key: ServiceAccountKey, policy: HttpPolicy) -> Result<Self, AuthError> {
        let signer = key.key_pair()?;
        let url = Url::parse(&key.token_uri)
            .map_err(|_| AuthError::InvalidKey("its token_uri is not a URL".into()))?;
        let origin = url.origin().ascii_serialization();
        let segments: Vec<String> = url
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        let http = ApiTransport::new(API, &origin, policy, super::parse_errors)?;
        Ok(TokenSource {
            cache: shared_slot(&key),
            key,
            signer,
            http,
            segments,
            scope: CLOUD_PLATFORM_SCOPE.to_string(),
        })
    }

    pub fn client_email(&self) -> &str {
        &self.key.client_email
    }

    pub fn token_uri(&self) -> &str {
        &self.key.token_uri
    }

    pub fn project_id(&self) -> Option<&str> {
        self.key.project_id.as_deref()
    }

    /// A valid access token: the cached one, or a new one from the token endpoint.
    pub async fn token(&self) -> Result<SecretString, AuthError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.fetch().await?;
        let refresh_at = Instant::now() + lifetime.saturating_sub(refresh_margin(lifetime));
        *cache = Some(Cached {
            token: token.clone(),
            refresh_at,
        });
        Ok(token)
    }

    /// Forgets the cached token (an API refused it).
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    /// The signed assertion for `now` (seconds since the epoch).
    pub fn assertion(&self, now: u64) -> Result<String, AuthError> {
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key.private_key_id {
            header["kid"] = serde_json::Value::String(kid.clone());
        }
        let claims = serde_json::json!({
            "iss": self.key.client_email,
            "scope": self.scope,
            "aud": self.key.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.signer.public().modulus_len()];
        self.signer
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| AuthError::Sign)?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    async fn fetch(&self) -> Result<(SecretString, Duration), AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let assertion = zeroize::Zeroizing::new(self.assertion(now)?);
        // Exchanging an assertion has no side effect but a new token: safe to repeat.
        let req = ApiRequest::new(Method::POST, self.segments.clone())
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .idempotent();
        let resp = self.http.send(&req, None).await?;
        let bad = |detail: &str| AuthError::BadToken {
            path: req.path(),
            detail: detail.to_string(),
        };
        let answer: TokenAnswer = serde_json::from_slice(&resp.body)
            .map_err(|_| bad("the body is not the expected JSON"))?;
        if let Some(t) = &answer.token_type
            && !t.eq_ignore_ascii_case("bearer")
        {
            return Err(bad(&format!("token_type is `{t}`, not Bearer")));
        }
        let token = answer
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("no access_token"))?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(ASSERTION_LIFETIME_SECS));
        tracing::debug!(
            client_email = %self.key.client_email,
            expires_in_secs = lifetime.as_secs(),
            "fetched a Google access token"
        );
        Ok((SecretString::from(token), lifetime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_checked_without_echoing_them() {
        let e = ServiceAccountKey::from_json("{\"type\":\"authorized_user\"}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`authorized_user`, not `service_account`"),
            "{e}"
        );
        let e = ServiceAccountKey::from_json(
            "{\"type\":\"service_account\",\"client_email\":\"a@b\",\"token_uri\":\"https://o/token\",\"private_key\":\"-----BEGIN PRIVATE KEY-----\\nc2VjcmV0LW1hdGVyaWFs\\n-----END PRIVATE KEY-----\\n\"}",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a usable RSA key"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "{e}");
        let e = ServiceAccountKey::from_json("{\"private_key\": \"x\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the Google service-account key is not usable: not a JSON key file"),
            "{e}"
        );
        let e = ServiceAccountKey::from_json(
            "{\"type\":\"service_account\",\"client_email\":\"a@b\",\"token_uri\":\"file:///etc/passwd\",\"private_key\":\"k\"}",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("is not an http(s) URL"), "{e}");
    }

    #[test]
    fn margins() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3600)),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(8)),
            Duration::from_secs(2)
        );
    }
}
