//! The HTTP policy shared by every API client: one `reqwest::Client` per API, timeouts on every call,
//! retries that never repeat a request which may already have been applied, `429 Retry-After`, and one
//! error type that says which call failed and what the API answered.
//!
//! Retry rules, by what a failure tells us about the request:
//!
//! | failure                         | idempotent request (GET, PUT, DELETE, declared PATCH) | other (POST…)          |
//! |---------------------------------|-------------------------------------------------------|------------------------|
//! | connection could not be opened  | retried                                               | retried (never sent)   |
//! | timeout, reset, unreadable body | retried                                               | [`ApiError::OutcomeUnknown`] |
//! | HTTP 5xx                        | retried (not before its `Retry-After`, if any)        | [`ApiError::OutcomeUnknown`] |
//! | HTTP 429                        | retried after `Retry-After`                           | retried after `Retry-After` |
//! | other HTTP 4xx                  | returned at once                                      | returned at once       |
//!
//! All retries share one budget ([`RetryPolicy::max_attempts`]). Backoff is capped exponential with full
//! jitter. No retry is sent before the `Retry-After` of the answer it repeats (a 429, or a 503 during
//! maintenance): one longer than [`RetryPolicy::max_retry_after`] is not waited for but ends the call
//! ([`ApiError::RateLimited`], or [`ApiError::Server`] carrying it), so a caller (the reconcile loop)
//! can schedule the retry instead of blocking.
//!
//! Logs: one `debug` event per attempt with method, path, status, attempt and latency. Headers, query
//! strings and bodies are never logged and never put in an error.

use std::fmt;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Timeouts and retries for one API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPolicy {
    /// Whole-request timeout (connect, send, wait, read the body), per attempt.
    pub timeout: Duration,
    /// Timeout for opening a connection.
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

/// How often and how patiently a failed request is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 = never retry). Shared by every kind of failure.
    pub max_attempts: u32,
    /// Backoff before the first retry; doubled for each later one.
    pub base_delay: Duration,
    /// Upper bound of the exponential backoff.
    pub max_delay: Duration,
    /// The longest `Retry-After` waited for; a longer one ends the call with [`ApiError::RateLimited`].
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Full-jitter backoff before retry number `retry` (1 for the first retry): a uniformly random delay
    /// in `[0, min(max_delay, base_delay * 2^(retry-1))]`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(32);
        let ceiling = self
            .base_delay
            .as_nanos()
            .saturating_mul(1u128 << exp)
            .min(self.max_delay.as_nanos());
        let ceiling = u64::try_from(ceiling).unwrap_or(u64::MAX);
        if ceiling == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::rng().random_range(0..=ceiling))
    }
}

/// Whether sending a request twice has the same effect as sending it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    Idempotent,
    NotIdempotent,
}

impl Idempotency {
    /// HTTP's own classification: GET, HEAD, OPTIONS, PUT and DELETE are idempotent; POST and PATCH are
    /// not (a PATCH that sets absolute values can be declared idempotent with
    /// [`ApiRequest::idempotent`]).
    pub fn of(method: &Method) -> Self {
        if matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
        ) {
            Idempotency::Idempotent
        } else {
            Idempotency::NotIdempotent
        }
    }
}

/// One API call: method, path segments below the base URL, query, optional JSON body.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    method: Method,
    segments: Vec<String>,
    query: Vec<(String, String)>,
    body: Option<Result<Vec<u8>, String>>,
    content_type: &'static str,
    idempotency: Idempotency,
    timeout: Option<Duration>,
}

impl ApiRequest {
    /// `segments` are raw path segments (`["zones", id, "dns_records"]`); they are percent-encoded when
    /// the URL is built, so an identifier can never change the route.
    pub fn new<I, S>(method: Method, segments: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let idempotency = Idempotency::of(&method);
        ApiRequest {
            method,
            segments: segments.into_iter().map(Into::into).collect(),
            query: Vec::new(),
            body: None,
            content_type: "application/json",
            idempotency,
            timeout: None,
        }
    }

    pub fn query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }

    /// Sets a JSON body. An encoding failure is reported by [`ApiTransport::send`].
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Self {
        self.body = Some(serde_json::to_vec(body).map_err(|e| e.to_string()));
        self.content_type = "application/json";
        self
    }

    /// Sets an `application/x-www-form-urlencoded` body (an OAuth token request). Like every body, it
    /// is never logged nor put in an error.
    pub fn form(mut self, pairs: &[(&str, &str)]) -> Self {
        let encoded = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.body = Some(Ok(encoded.into_bytes()));
        self.content_type = "application/x-www-form-urlencoded";
        self
    }

    /// A whole-request timeout for this call instead of the policy's (a call the server may hold
    /// open, such as Compute Engine's `operations.wait`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Declares the request safe to repeat (e.g. a PATCH that only sets absolute values).
    pub fn idempotent(mut self) -> Self {
        self.idempotency = Idempotency::Idempotent;
        self
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub fn idempotency(&self) -> Idempotency {
        self.idempotency
    }

    /// The path as shown in logs and errors: the segments below the base URL, without the query string.
    pub fn path(&self) -> String {
        let mut p = String::new();
        for s in &self.segments {
            p.push('/');
            p.push_str(s);
        }
        if p.is_empty() {
            p.push('/');
        }
        p
    }
}

/// A successful (2xx) response.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

/// One error or message reported by an API, e.g. Cloudflare's `{"code": 81058, "message": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiMessage {
    pub code: i64,
    pub message: String,
    /// Where in the request the problem is (a JSON pointer such as `/posts/0`), when the API says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
}

impl fmt::Display for ApiMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)?;
        if let Some(p) = &self.pointer {
            write!(f, " (at {p})")?;
        }
        Ok(())
    }
}

/// Formats a list of API messages for an error line.
struct Messages<'a>(&'a [ApiMessage]);

impl fmt::Display for Messages<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no error details in the response");
        }
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

/// `: <messages>` when there are any, nothing otherwise.
struct DetailsIfAny<'a>(&'a [ApiMessage]);

impl fmt::Display for DetailsIfAny<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, ": {}", Messages(self.0))
        }
    }
}

struct RetryAfterNote<'a>(&'a Option<Duration>);

impl fmt::Display for RetryAfterNote<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(
                f,
                "; the API asks to retry after {} s",
                d.as_secs_f64().ceil()
            ),
            None => Ok(()),
        }
    }
}

/// What went wrong below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Timeout,
    Connect,
    Body,
    Other,
}

impl TransportKind {
    fn of(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            TransportKind::Timeout
        } else if e.is_connect() {
            TransportKind::Connect
        } else if e.is_body() || e.is_decode() {
            TransportKind::Body
        } else {
            TransportKind::Other
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Timeout => "timed out",
            TransportKind::Connect => "could not connect",
            TransportKind::Body => "could not read the response",
            TransportKind::Other => "request failed",
        })
    }
}

/// Why the outcome of a non-idempotent request is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownCause {
    /// The server answered with this 5xx status.
    Status(u16),
    /// The request was sent but no complete answer came back.
    Transport(TransportKind),
}

impl fmt::Display for UnknownCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnknownCause::Status(s) => write!(f, "HTTP {s}"),
            UnknownCause::Transport(k) => write!(f, "{k}"),
        }
    }
}

/// An API call that failed. Every variant about a call names the API, the method and the path (never
/// the query string, headers or body).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{api}: invalid base URL {url}: {reason}")]
    InvalidBaseUrl {
        api: &'static str,
        url: String,
        reason: String,
    },
    #[error("{api}: cannot build the HTTP client: {detail}")]
    Build { api: &'static str, detail: String },
    #[error(
        "{api}: the API token cannot be sent in an HTTP header (it must be visible ASCII without line breaks)"
    )]
    InvalidToken { api: &'static str },
    #[error("{api}: {method} {path}: cannot encode the request body: {detail}")]
    Encode {
        api: &'static str,
        method: Method,
        path: String,
        detail: String,
    },
    #[error(
        "{api}: {method} {path}: authentication failed (HTTP {status}): {}; check that the API token is valid and has the needed permissions",
        Messages(.messages)
    )]
    Auth {
        api: &'static str,
        method: Method,
        path: String,
        status: u16,
        messages: Vec<ApiMessage>,
    },
    #[error("{api}: {method} {path}: rejected (HTTP {status}): {}", Messages(.messages))]
    Rejected {
        api: &'static str,
        method: Method,
        path: String,
        status: u16,
        messages: Vec<ApiMessage>,
    },
    #[error(
        "{api}: {method} {path}: server error (HTTP {status}) after {attempts} attempt(s): {}{}",
        Messages(.messages),
        RetryAfterNote(.retry_after)
    )]
    Server {
        api: &'static str,
        method: Method,
        path: String,
        status: u16,
        attempts: u32,
        messages: Vec<ApiMessage>,
        /// The last answer's `Retry-After` (a 503 during maintenance), when it had one.
        retry_after: Option<Duration>,
    },
    #[error(
        "{api}: {method} {path}: rate limited (HTTP 429) after {attempts} attempt(s){}",
        RetryAfterNote(.retry_after)
    )]
    RateLimited {
        api: &'static str,
        method: Method,
        path: String,
        attempts: u32,
        retry_after: Option<Duration>,
        messages: Vec<ApiMessage>,
    },
    #[error(
        "{api}: {method} {path}: outcome unknown ({cause}{}): the request may or may not have been applied; re-read the remote state before trying again",
        DetailsIfAny(.messages)
    )]
    OutcomeUnknown {
        api: &'static str,
        method: Method,
        path: String,
        cause: UnknownCause,
        messages: Vec<ApiMessage>,
    },
    #[error("{api}: {method} {path}: {kind} after {attempts} attempt(s): {detail}")]
    Transport {
        api: &'static str,
        method: Method,
        path: String,
        attempts: u32,
        kind: TransportKind,
        detail: String,
    },
    #[error("{api}: {method} {path}: unexpected response (HTTP {status}): {detail}")]
    Decode {
        api: &'static str,
        method: Method,
        path: String,
        status: u16,
        detail: String,
    },
}

impl ApiError {
    /// The API's own error messages, when it sent any.
    pub fn messages(&self) -> &[ApiMessage] {
        match self {
            ApiError::Auth { messages, .. }
            | ApiError::Rejected { messages, .. }
            | ApiError::Server { messages, .. }
            | ApiError::RateLimited { messages, .. }
            | ApiError::OutcomeUnknown { messages, .. } => messages,
            _ => &[],
        }
    }

    /// Whether the API reported this error code.
    pub fn has_code(&self, code: i64) -> bool {
        self.messages().iter().any(|m| m.code == code)
    }

    /// The final HTTP status, when a response arrived.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Auth { status, .. }
            | ApiError::Rejected { status, .. }
            | ApiError::Server { status, .. }
            | ApiError::Decode { status, .. } => Some(*status),
            ApiError::RateLimited { .. } => Some(429),
            ApiError::OutcomeUnknown {
                cause: UnknownCause::Status(s),
                ..
            } => Some(*s),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// How long the API asked to wait before the next try (`Retry-After` of a 429 or a 5xx), when the
    /// call ended with that answer.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after, .. } | ApiError::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// True when a non-idempotent request may or may not have been applied.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, ApiError::OutcomeUnknown { .. })
    }
}

/// Turns an error response body into the API's messages (empty when the body has none).
pub type ErrorParser = fn(&[u8]) -> Vec<ApiMessage>;

/// The HTTP side of one API client: base URL, `reqwest::Client`, policy and error parsing.
pub struct ApiTransport {
    api: &'static str,
    base: Url,
    client: reqwest::Client,
    policy: HttpPolicy,
    parse_errors: ErrorParser,
}

impl fmt::Debug for ApiTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiTransport")
            .field("api", &self.api)
            .field("base", &self.base.as_str())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ApiTransport {
    /// `api` names the API in errors and logs (e.g. `"Cloudflare API"`). The base URL must be `http` or
    /// `https`; its path is kept (`…/client/v4`) and request segments are appended to it.
    pub fn new(
        api: &'static str,
        base_url: &str,
        policy: HttpPolicy,
        parse_errors: ErrorParser,
    ) -> Result<Self, ApiError> {
        let base = Url::parse(base_url.trim()).map_err(|e| ApiError::InvalidBaseUrl {
            api,
            url: String::from("(unparseable)"),
            reason: e.to_string(),
        })?;
        let shown = {
            let mut u = base.clone();
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.set_query(None);
            u.to_string()
        };
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(ApiError::InvalidBaseUrl {
                api,
                url: shown,
                reason: "it must be an http:// or https:// URL".into(),
            });
        }
        if base.query().is_some() || base.password().is_some() || !base.username().is_empty() {
            return Err(ApiError::InvalidBaseUrl {
                api,
                url: shown,
                reason: "it must not carry credentials or a query string".into(),
            });
        }
        let client = reqwest::Client::builder()
            .timeout(policy.timeout)
            .connect_timeout(policy.connect_timeout)
            .user_agent(concat!("supervisor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Build {
                api,
                detail: error_chain(&e),
            })?;
        Ok(ApiTransport {
            api,
            base,
            client,
            policy,
            parse_errors,
        })
    }

    pub fn api(&self) -> &'static str {
        self.api
    }

    pub fn policy(&self) -> &HttpPolicy {
        &self.policy
    }

    /// Sends `req` under the policy and returns the 2xx response, or the error that ended the call.
    pub async fn send(
        &self,
        req: &ApiRequest,
        bearer: Option<&SecretString>,
    ) -> Result<ApiResponse, ApiError> {
        let path = req.path();
        let body = match &req.body {
            None => None,
            Some(Ok(b)) => Some(b.clone()),
            Some(Err(e)) => {
                return Err(ApiError::Encode {
                    api: self.api,
                    method: req.method.clone(),
                    path,
                    detail: e.clone(),
                });
            }
        };
        let auth = match bearer {
            None => None,
            Some(token) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                    .map_err(|_| ApiError::InvalidToken { api: self.api })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let url = self.url(req);
        let retry = &self.policy.retry;
        let max_attempts = retry.max_attempts.max(1);
        let idempotent = req.idempotency == Idempotency::Idempotent;

        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let mut rb = self.client.request(req.method.clone(), url.clone());
            if let Some(v) = &auth {
                rb = rb.header(AUTHORIZATION, v.clone());
            }
            if let Some(b) = &body {
                rb = rb
                    .header(CONTENT_TYPE, HeaderValue::from_static(req.content_type))
                    .body(b.clone());
            }
            if let Some(t) = req.timeout {
                rb = rb.timeout(t);
            }
            let outcome = match rb.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = parse_retry_after(resp.headers());
                    match resp.bytes().await {
                        Ok(bytes) => Ok((status, retry_after, bytes.to_vec())),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            let latency_ms = started.elapsed().as_millis() as u64;

            let (status, retry_after, bytes) = match outcome {
                Ok(x) => x,
                Err(e) => {
                    let kind = TransportKind::of(&e);
                    // A connection that could not be opened carried nothing: safe to repeat any request.
                    let never_sent = e.is_connect();
                    tracing::debug!(
                        api = self.api,
                        method = %req.method,
                        path = %path,
                        attempt,
                        latency_ms,
                        error = %kind,
                        "HTTP request failed"
                    );
                    if (idempotent || never_sent) && attempt < max_attempts {
                        self.pause(retry.backoff(attempt), req, &path, attempt)
                            .await;
                        continue;
                    }
                    if !idempotent && !never_sent {
                        return Err(ApiError::OutcomeUnknown {
                            api: self.api,
                            method: req.method.clone(),
                            path,
                            cause: UnknownCause::Transport(kind),
                            messages: Vec::new(),
                        });
                    }
                    return Err(ApiError::Transport {
                        api: self.api,
                        method: req.method.clone(),
                        path,
                        attempts: attempt,
                        kind,
                        detail: error_chain(&e),
                    });
                }
            };
            tracing::debug!(
                api = self.api,
                method = %req.method,
                path = %path,
                status = status.as_u16(),
                attempt,
                latency_ms,
                "HTTP response"
            );

            if status.is_success() {
                return Ok(ApiResponse {
                    status,
                    body: bytes,
                });
            }
            let messages = (self.parse_errors)(&bytes);
            if status == StatusCode::TOO_MANY_REQUESTS {
                // Not processed: safe to repeat for every method, once the API allows it.
                let wait = retry_after.unwrap_or_else(|| retry.backoff(attempt));
                if attempt < max_attempts && wait <= retry.max_retry_after {
                    self.pause(wait, req, &path, attempt).await;
                    continue;
                }
                return Err(ApiError::RateLimited {
                    api: self.api,
                    method: req.method.clone(),
                    path,
                    attempts: attempt,
                    retry_after,
                    messages,
                });
            }
            if status.is_server_error() {
                if !idempotent {
                    return Err(ApiError::OutcomeUnknown {
                        api: self.api,
                        method: req.method.clone(),
                        path,
                        cause: UnknownCause::Status(status.as_u16()),
                        messages,
                    });
                }
                // Never sooner than the server asked; longer than we wait is the caller's to schedule.
                let waitable = retry_after.is_none_or(|ra| ra <= retry.max_retry_after);
                if attempt < max_attempts && waitable {
                    let wait = retry.backoff(attempt).max(retry_after.unwrap_or_default());
                    self.pause(wait, req, &path, attempt).await;
                    continue;
                }
                return Err(ApiError::Server {
                    api: self.api,
                    method: req.method.clone(),
                    path,
                    status: status.as_u16(),
                    attempts: attempt,
                    messages,
                    retry_after,
                });
            }
            let variant = if matches!(status.as_u16(), 401 | 403) {
                ApiError::Auth {
                    api: self.api,
                    method: req.method.clone(),
                    path,
                    status: status.as_u16(),
                    messages,
                }
            } else {
                ApiError::Rejected {
                    api: self.api,
                    method: req.method.clone(),
                    path,
                    status: status.as_u16(),
                    messages,
                }
            };
            return Err(variant);
        }
    }

    /// An error for a 2xx response whose body is not what the API promises.
    pub fn decode_error(
        &self,
        req: &ApiRequest,
        status: StatusCode,
        detail: impl Into<String>,
    ) -> ApiError {
        ApiError::Decode {
            api: self.api,
            method: req.method.clone(),
            path: req.path(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    /// An error for a 2xx response in which the API nevertheless reports failure.
    pub fn rejected_error(
        &self,
        req: &ApiRequest,
        status: StatusCode,
        messages: Vec<ApiMessage>,
    ) -> ApiError {
        ApiError::Rejected {
            api: self.api,
            method: req.method.clone(),
            path: req.path(),
            status: status.as_u16(),
            messages,
        }
    }

    fn url(&self, req: &ApiRequest) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty();
            segs.extend(req.segments.iter());
        }
        if !req.query.is_empty() {
            url.query_pairs_mut().extend_pairs(req.query.iter());
        }
        url
    }

    async fn pause(&self, wait: Duration, req: &ApiRequest, path: &str, attempt: u32) {
        tracing::debug!(
            api = self.api,
            method = %req.method,
            path = %path,
            attempt,
            wait_ms = wait.as_millis() as u64,
            "retrying"
        );
        tokio::time::sleep(wait).await;
    }
}

/// `Retry-After` as delta-seconds (integer or decimal) or an HTTP date.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = raw.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Duration::try_from_secs_f64(secs).ok();
        }
        return None;
    }
    let date = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    let delta = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// The error and its causes on one line (reqwest's own message is generic; the cause says why). The
/// URL is removed first: errors name the path, never the query string.
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut first = true;
    while let Some(err) = cur {
        let msg = match err.downcast_ref::<reqwest::Error>() {
            Some(re) if re.url().is_some() => strip_url(re),
            _ => err.to_string(),
        };
        if !out.contains(&msg) {
            if !first {
                out.push_str(": ");
            }
            out.push_str(&msg);
            first = false;
        }
        cur = err.source();
    }
    out
}

fn strip_url(e: &reqwest::Error) -> String {
    let full = e.to_string();
    match e.url() {
        Some(u) => full
            .replace(&format!(" for url ({u})"), "")
            .replace(u.as_str(), "<url>"),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            max_retry_after: Duration::from_secs(1),
        };
        for _ in 0..200 {
            assert!(p.backoff(1) <= Duration::from_millis(100));
            assert!(p.backoff(2) <= Duration::from_millis(200));
            assert!(p.backoff(3) <= Duration::from_millis(350));
            assert!(p.backoff(40) <= Duration::from_millis(350));
        }
        // Full jitter: not always the ceiling.
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| p.backoff(3)).collect();
        assert!(distinct.len() > 1);
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("1.5"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(1500)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("-3"));
        assert_eq!(parse_retry_after(&h), None);
    }

    #[test]
    fn idempotency_follows_http() {
        assert_eq!(Idempotency::of(&Method::GET), Idempotency::Idempotent);
        assert_eq!(Idempotency::of(&Method::PUT), Idempotency::Idempotent);
        assert_eq!(Idempotency::of(&Method::DELETE), Idempotency::Idempotent);
        assert_eq!(Idempotency::of(&Method::POST), Idempotency::NotIdempotent);
        assert_eq!(Idempotency::of(&Method::PATCH), Idempotency::NotIdempotent);
        let r = ApiRequest::new(Method::PATCH, ["a"]).idempotent();
        assert_eq!(r.idempotency(), Idempotency::Idempotent);
    }

    #[test]
    fn path_has_no_query() {
        let r = ApiRequest::new(Method::GET, ["zones", "abc", "dns_records"]).query("name", "x");
        assert_eq!(r.path(), "/zones/abc/dns_records");
    }

    #[test]
    fn base_url_is_checked() {
        let e = ApiTransport::new("T", "ftp://x", HttpPolicy::default(), |_| Vec::new());
        assert!(matches!(e, Err(ApiError::InvalidBaseUrl { .. })));
        let e = ApiTransport::new(
            "T",
            "https://user:hunter2@x/v4",
            HttpPolicy::default(),
            |_| Vec::new(),
        );
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("credentials"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}
