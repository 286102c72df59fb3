//! The Cloudflare API v4 client: zones, DNS records (one by one and in batches) and the remote
//! configuration of Cloudflare Tunnels.
//!
//! Shapes follow Cloudflare's published OpenAPI contract: every response is an envelope
//! `{success, errors, messages, result}` (lists add `result_info`), errors carry numeric codes
//! (`81058` identical record, `81053`/`81054` CNAME conflicts, `10000` authentication, …), which reach
//! the caller through [`ApiError::messages`] and [`CloudflareError::has_code`].
//!
//! What the client promises:
//! - Lists are read to the end: [`CloudflareClient::list_dns_records`] follows `result_info.total_pages`
//!   with a large page, and returns each record once.
//! - Records of types the client does not model are still returned (as [`RecordType::Other`]), so a
//!   listing never fails because a zone holds something new.
//! - A tunnel configuration survives a read-modify-write: `originRequest` blocks and keys the client
//!   does not know are kept as JSON and sent back as they came.
//! - Idempotent calls (GET, PUT, DELETE, the record PATCH) are retried under the [`HttpPolicy`];
//!   record creation and batches (POST) are not, and end in [`ApiError::OutcomeUnknown`] when the
//!   answer is lost.
//! - The API token only ever goes into the `Authorization` header; `Debug` of the client redacts it.

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, Utc};
use reqwest::Method;
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::http::{ApiError, ApiMessage, ApiRequest, ApiTransport, HttpPolicy};

/// Cloudflare's production API.
pub const DEFAULT_BASE_URL: &str = "https://api.cloudflare.com/client/v4";

/// Environment variable that points the client at another endpoint (a proxy, a fake in tests).
pub const BASE_URL_ENV: &str = "SUPERVISOR_CLOUDFLARE_API_URL";

/// The name the client uses in errors and logs.
const API: &str = "Cloudflare API";

/// Records per page when listing: large, so a zone is read in one or a few calls.
pub const DEFAULT_PAGE_SIZE: u32 = 5000;

/// `GET /zones` accepts at most 50 per page.
const ZONES_PAGE_SIZE: u32 = 50;

/// A runaway `total_pages` must not keep the client reading forever.
const MAX_PAGES: u64 = 100_000;

/// The base URL from [`BASE_URL_ENV`] when set and not empty, else [`DEFAULT_BASE_URL`].
pub fn base_url_from_env() -> String {
    match std::env::var(BASE_URL_ENV) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => DEFAULT_BASE_URL.to_string(),
    }
}

/// A failed Cloudflare call.
#[derive(Debug, thiserror::Error)]
pub enum CloudflareError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(
        "{API}: zone `{name}` not found: no zone of exactly that name is visible to this API token (check the name and the token's Zone:Read permission)"
    )]
    ZoneNotFound { name: String },
    #[error("{API}: zone name `{name}` is ambiguous: {} zones match ({})", .ids.len(), .ids.join(", "))]
    ZoneAmbiguous { name: String, ids: Vec<String> },
    #[error("{API}: GET {path}: the listing did not end after {pages} pages")]
    EndlessPagination { path: String, pages: u64 },
}

impl CloudflareError {
    /// The API's own error messages, when it sent any.
    pub fn messages(&self) -> &[ApiMessage] {
        match self {
            CloudflareError::Api(e) => e.messages(),
            _ => &[],
        }
    }

    /// Whether the API reported this error code (e.g. `81058`).
    pub fn has_code(&self, code: i64) -> bool {
        self.messages().iter().any(|m| m.code == code)
    }

    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, CloudflareError::Api(e) if e.is_outcome_unknown())
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, CloudflareError::Api(e) if e.is_not_found())
    }
}

// ---------------------------------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------------------------------

macro_rules! record_types {
    ($($variant:ident),* $(,)?) => {
        /// A DNS record type. Types the client does not know are kept by name in `Other`.
        #[allow(clippy::upper_case_acronyms)]
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum RecordType {
            $($variant,)*
            Other(String),
        }

        impl RecordType {
            pub fn as_str(&self) -> &str {
                match self {
                    $(RecordType::$variant => stringify!($variant),)*
                    RecordType::Other(s) => s,
                }
            }

            pub fn parse(s: &str) -> Self {
                match s {
                    $(stringify!($variant) => RecordType::$variant,)*
                    other => RecordType::Other(other.to_string()),
                }
            }
        }
    };
}

record_types!(
    A, AAAA, CAA, CERT, CNAME, DNSKEY, DS, HTTPS, LOC, MX, NAPTR, NS, OPENPGPKEY, PTR, SMIMEA, SRV,
    SSHFP, SVCB, TLSA, TXT, URI,
);

impl RecordType {
    /// Whether Cloudflare can proxy records of this type (only A, AAAA and CNAME).
    pub fn is_proxiable(&self) -> bool {
        matches!(self, RecordType::A | RecordType::AAAA | RecordType::CNAME)
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RecordType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RecordType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(RecordType::parse(&s))
    }
}

/// A zone, as `GET /zones` returns it (the fields the supervisor uses).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Zone {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub account: Option<ZoneAccount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ZoneAccount {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// A DNS record as the API returns it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DnsRecord {
    pub id: String,
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// Fully qualified, as Cloudflare stores it (lower case, no trailing dot).
    pub name: String,
    /// The record's value; for types with structured `data` (SRV, CAA, …) Cloudflare's text form.
    #[serde(default, deserialize_with = "null_as_default")]
    pub content: String,
    #[serde(default)]
    pub proxied: bool,
    /// 1 means automatic.
    #[serde(default = "ttl_auto")]
    pub ttl: u32,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub proxiable: bool,
    #[serde(default)]
    pub priority: Option<u16>,
    /// Structured content of SRV, CAA, … records, kept as the API sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default)]
    pub created_on: Option<DateTime<Utc>>,
    #[serde(default)]
    pub modified_on: Option<DateTime<Utc>>,
}

fn ttl_auto() -> u32 {
    1
}

/// A whole record as sent to create (`POST`) or overwrite (`PUT`) it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsRecordSpec {
    #[serde(rename = "type")]
    pub record_type: RecordType,
    pub name: String,
    pub content: String,
    /// 1 (automatic) or 60..=86400 seconds. Cloudflare ignores it for proxied records.
    pub ttl: u32,
    pub proxied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub tags: Vec<String>,
    /// Required for MX records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
}

impl DnsRecordSpec {
    /// A CNAME with automatic TTL, not proxied, without comment or tags.
    pub fn cname(name: impl Into<String>, target: impl Into<String>) -> Self {
        DnsRecordSpec {
            record_type: RecordType::CNAME,
            name: name.into(),
            content: target.into(),
            ttl: 1,
            proxied: false,
            comment: None,
            tags: Vec::new(),
            priority: None,
        }
    }

    pub fn proxied(mut self, proxied: bool) -> Self {
        self.proxied = proxied;
        self
    }

    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    pub fn ttl(mut self, ttl: u32) -> Self {
        self.ttl = ttl;
        self
    }
}

/// The fields to change with a `PATCH`; `None` leaves a field as it is. An empty comment clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DnsRecordPatch {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub record_type: Option<RecordType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxied: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
}

/// Filters for [`CloudflareClient::list_dns_records`]; all set filters must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsRecordFilter {
    /// Exact name (case-insensitive).
    pub name: Option<String>,
    pub record_type: Option<RecordType>,
    /// Exact content.
    pub content: Option<String>,
    /// Exact comment.
    pub comment: Option<String>,
    /// Substring of the comment (case-insensitive).
    pub comment_contains: Option<String>,
}

impl DnsRecordFilter {
    fn apply(&self, mut req: ApiRequest) -> ApiRequest {
        if let Some(v) = &self.name {
            req = req.query("name", v.as_str());
        }
        if let Some(v) = &self.record_type {
            req = req.query("type", v.as_str());
        }
        if let Some(v) = &self.content {
            req = req.query("content", v.as_str());
        }
        if let Some(v) = &self.comment {
            req = req.query("comment", v.as_str());
        }
        if let Some(v) = &self.comment_contains {
            req = req.query("comment.contains", v.as_str());
        }
        req
    }
}

/// The outcome of a delete. A record that is already gone is not an error: a retried `DELETE` whose
/// first attempt was applied finds nothing (`81044`), and the caller wanted it gone either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    AlreadyAbsent,
}

/// Changes to apply together in one transaction: Cloudflare runs deletes, then patches, then puts, then
/// posts, and applies nothing if any of them fails.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchRequest {
    pub deletes: Vec<BatchDelete>,
    pub patches: Vec<BatchPatch>,
    pub puts: Vec<BatchPut>,
    pub posts: Vec<DnsRecordSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchDelete {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchPatch {
    pub id: String,
    #[serde(flatten)]
    pub patch: DnsRecordPatch,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchPut {
    pub id: String,
    #[serde(flatten)]
    pub record: DnsRecordSpec,
}

impl BatchRequest {
    /// Number of records the batch touches (what Cloudflare's per-call limit counts).
    pub fn len(&self) -> usize {
        self.deletes.len() + self.patches.len() + self.puts.len() + self.posts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The records each part of a batch produced (deletes: the records as they were).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct BatchResult {
    #[serde(default, deserialize_with = "null_as_default")]
    pub deletes: Vec<DnsRecord>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub patches: Vec<DnsRecord>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub puts: Vec<DnsRecord>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub posts: Vec<DnsRecord>,
}

/// A Cloudflare Tunnel (`cfd_tunnel`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Tunnel {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub account_tag: Option<String>,
    /// `inactive`, `degraded`, `healthy` or `down`.
    #[serde(default)]
    pub status: Option<String>,
    /// `local` (configured by a file next to cloudflared) or `cloudflare` (remotely managed).
    #[serde(default)]
    pub config_src: Option<String>,
    #[serde(default)]
    pub tun_type: Option<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Tunnel {
    /// Whether the ingress rules live in Cloudflare (the configurations API) rather than in a file.
    pub fn is_remotely_managed(&self) -> bool {
        self.config_src.as_deref() == Some("cloudflare")
    }

    /// The target of the CNAME records that route a hostname into this tunnel.
    pub fn cname_target(&self) -> String {
        format!("{}.cfargotunnel.com", self.id)
    }
}

/// A tunnel's remote configuration with its version.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct TunnelConfiguration {
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub tunnel_id: String,
    /// Incremented by Cloudflare on every change.
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// Empty when the tunnel has never been configured remotely.
    #[serde(default, deserialize_with = "null_as_default")]
    pub config: TunnelConfig,
}

/// The configuration cloudflared receives: ingress rules plus settings the supervisor does not model,
/// which are kept verbatim so that writing the configuration back does not lose them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct TunnelConfig {
    #[serde(default, deserialize_with = "null_as_default")]
    pub ingress: Vec<IngressRule>,
    #[serde(
        rename = "originRequest",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub origin_request: Option<Value>,
    /// Every other key (`warp-routing`, future settings), as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One ingress rule. The last rule of a configuration must be the catch-all (no hostname, no path).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct IngressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(
        rename = "originRequest",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub origin_request: Option<Value>,
    /// Every other key of the rule, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl IngressRule {
    pub fn new(hostname: impl Into<String>, service: impl Into<String>) -> Self {
        IngressRule {
            hostname: Some(hostname.into()),
            service: service.into(),
            path: None,
            origin_request: None,
            other: Map::new(),
        }
    }

    /// The rule that matches everything else, e.g. `http_status:404`.
    pub fn catch_all(service: impl Into<String>) -> Self {
        IngressRule {
            hostname: None,
            service: service.into(),
            path: None,
            origin_request: None,
            other: Map::new(),
        }
    }
}

#[derive(Serialize)]
struct TunnelConfigBody<'a> {
    config: &'a TunnelConfig,
}

/// `result_info` of a list response. Cloudflare types these as JSON numbers, so floats are accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct ResultInfo {
    #[serde(default, deserialize_with = "lenient_u64")]
    pub page: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub per_page: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub count: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub total_count: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub total_pages: u64,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    success: Option<bool>,
    #[serde(default, deserialize_with = "null_as_default")]
    errors: Vec<WireMessage>,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    result_info: Option<ResultInfo>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    source: Option<WireSource>,
    #[serde(default, deserialize_with = "null_as_default")]
    error_chain: Vec<WireMessage>,
}

#[derive(Deserialize)]
struct WireSource {
    #[serde(default)]
    pointer: Option<String>,
}

fn flatten_messages(wire: Vec<WireMessage>, out: &mut Vec<ApiMessage>) {
    for m in wire {
        out.push(ApiMessage {
            code: m.code,
            message: m.message,
            pointer: m.source.and_then(|s| s.pointer),
        });
        flatten_messages(m.error_chain, out);
    }
}

/// The `errors` of a Cloudflare envelope, with any `error_chain` flattened after its parent.
pub fn parse_errors(body: &[u8]) -> Vec<ApiMessage> {
    match serde_json::from_slice::<Envelope>(body) {
        Ok(env) => {
            let mut out = Vec::new();
            flatten_messages(env.errors, &mut out);
            out
        }
        Err(_) => Vec::new(),
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .unwrap_or(0),
        _ => 0,
    })
}

// ---------------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------------

/// A Cloudflare API v4 client authenticated by an API token.
pub struct CloudflareClient {
    http: ApiTransport,
    token: SecretString,
    page_size: u32,
}

impl fmt::Debug for CloudflareClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudflareClient")
            .field("http", &self.http)
            .field("token", &"[REDACTED]")
            .field("page_size", &self.page_size)
            .finish()
    }
}

impl CloudflareClient {
    /// A client for the API at `base_url` (e.g. [`DEFAULT_BASE_URL`] or [`base_url_from_env`]).
    ///
    /// Needs a rustls crypto provider installed in the process (`main` installs ring).
    pub fn new(
        base_url: &str,
        api_token: SecretString,
        policy: HttpPolicy,
    ) -> Result<Self, ApiError> {
        Ok(CloudflareClient {
            http: ApiTransport::new(API, base_url, policy, parse_errors)?,
            token: api_token,
            page_size: DEFAULT_PAGE_SIZE,
        })
    }

    /// Records per page for listings (default [`DEFAULT_PAGE_SIZE`]; at least 1).
    pub fn with_page_size(mut self, per_page: u32) -> Self {
        self.page_size = per_page.max(1);
        self
    }

    /// The zone of exactly this name (case and a trailing dot do not matter).
    pub async fn zone_by_name(&self, name: &str) -> Result<Zone, CloudflareError> {
        let wanted = canonical_name(name);
        let req = ApiRequest::new(Method::GET, ["zones"]).query("name", wanted.as_str());
        let zones: Vec<Zone> = self.get_all(req, ZONES_PAGE_SIZE).await?;
        let mut matching: Vec<Zone> = zones
            .into_iter()
            .filter(|z| canonical_name(&z.name) == wanted)
            .collect();
        match matching.len() {
            0 => Err(CloudflareError::ZoneNotFound { name: wanted }),
            1 => Ok(matching.remove(0)),
            _ => Err(CloudflareError::ZoneAmbiguous {
                name: wanted,
                ids: matching.into_iter().map(|z| z.id).collect(),
            }),
        }
    }

    /// The id of the zone of exactly this name.
    pub async fn zone_id_by_name(&self, name: &str) -> Result<String, CloudflareError> {
        Ok(self.zone_by_name(name).await?.id)
    }

    /// Every record of the zone matching `filter`, all pages read, each record once.
    pub async fn list_dns_records(
        &self,
        zone_id: &str,
        filter: &DnsRecordFilter,
    ) -> Result<Vec<DnsRecord>, CloudflareError> {
        let req = filter.apply(ApiRequest::new(
            Method::GET,
            ["zones", zone_id, "dns_records"],
        ));
        let records: Vec<DnsRecord> = self.get_all(req, self.page_size).await?;
        // A record created or deleted between two pages shifts the pages: never return one twice.
        let mut seen = HashSet::new();
        Ok(records
            .into_iter()
            .filter(|r| seen.insert(r.id.clone()))
            .collect())
    }

    pub async fn dns_record(
        &self,
        zone_id: &str,
        record_id: &str,
    ) -> Result<DnsRecord, CloudflareError> {
        let req = ApiRequest::new(Method::GET, ["zones", zone_id, "dns_records", record_id]);
        self.call(&req).await
    }

    /// Creates a record. Not retried once sent: on a lost answer the error is `OutcomeUnknown`, and the
    /// caller should list the zone before trying again.
    pub async fn create_dns_record(
        &self,
        zone_id: &str,
        record: &DnsRecordSpec,
    ) -> Result<DnsRecord, CloudflareError> {
        let req = ApiRequest::new(Method::POST, ["zones", zone_id, "dns_records"]).json(record);
        self.call(&req).await
    }

    /// Changes the given fields of a record (`PATCH`). The patch sets absolute values, so it is safe to
    /// repeat and is retried like a `PUT`.
    pub async fn update_dns_record(
        &self,
        zone_id: &str,
        record_id: &str,
        patch: &DnsRecordPatch,
    ) -> Result<DnsRecord, CloudflareError> {
        let req = ApiRequest::new(Method::PATCH, ["zones", zone_id, "dns_records", record_id])
            .json(patch)
            .idempotent();
        self.call(&req).await
    }

    /// Replaces a record entirely (`PUT`): fields not given (comment, tags) are cleared.
    pub async fn overwrite_dns_record(
        &self,
        zone_id: &str,
        record_id: &str,
        record: &DnsRecordSpec,
    ) -> Result<DnsRecord, CloudflareError> {
        let req =
            ApiRequest::new(Method::PUT, ["zones", zone_id, "dns_records", record_id]).json(record);
        self.call(&req).await
    }

    /// Deletes a record; a record that does not exist (any more) is [`Deletion::AlreadyAbsent`].
    pub async fn delete_dns_record(
        &self,
        zone_id: &str,
        record_id: &str,
    ) -> Result<Deletion, CloudflareError> {
        let req = ApiRequest::new(Method::DELETE, ["zones", zone_id, "dns_records", record_id]);
        match self.call::<Value>(&req).await {
            Ok(_) => Ok(Deletion::Deleted),
            Err(e) if e.is_not_found() && e.has_code(RECORD_NOT_FOUND) => {
                Ok(Deletion::AlreadyAbsent)
            }
            Err(e) => Err(e),
        }
    }

    /// Applies a batch in one transaction (deletes → patches → puts → posts, all or nothing). Batches
    /// are not split: Cloudflare limits the records per call (200 on the Free plan), and splitting would
    /// give up the all-or-nothing guarantee, so the caller decides. An empty batch makes no call.
    pub async fn batch_dns_records(
        &self,
        zone_id: &str,
        batch: &BatchRequest,
    ) -> Result<BatchResult, CloudflareError> {
        if batch.is_empty() {
            return Ok(BatchResult::default());
        }
        let req =
            ApiRequest::new(Method::POST, ["zones", zone_id, "dns_records", "batch"]).json(batch);
        self.call(&req).await
    }

    pub async fn tunnel(
        &self,
        account_id: &str,
        tunnel_id: &str,
    ) -> Result<Tunnel, CloudflareError> {
        let req = ApiRequest::new(
            Method::GET,
            ["accounts", account_id, "cfd_tunnel", tunnel_id],
        );
        self.call(&req).await
    }

    /// The tunnel's remote configuration (version 0 and no rules when never configured).
    pub async fn tunnel_configuration(
        &self,
        account_id: &str,
        tunnel_id: &str,
    ) -> Result<TunnelConfiguration, CloudflareError> {
        let req = ApiRequest::new(
            Method::GET,
            [
                "accounts",
                account_id,
                "cfd_tunnel",
                tunnel_id,
                "configurations",
            ],
        );
        self.call(&req).await
    }

    /// Replaces the tunnel's remote configuration; returns it with its new version. Unknown keys kept
    /// in `config` (from a previous read) are sent back unchanged.
    pub async fn put_tunnel_configuration(
        &self,
        account_id: &str,
        tunnel_id: &str,
        config: &TunnelConfig,
    ) -> Result<TunnelConfiguration, CloudflareError> {
        let req = ApiRequest::new(
            Method::PUT,
            [
                "accounts",
                account_id,
                "cfd_tunnel",
                tunnel_id,
                "configurations",
            ],
        )
        .json(&TunnelConfigBody { config });
        self.call(&req).await
    }

    /// Sends one request and decodes its envelope's `result`.
    async fn call<T: DeserializeOwned>(&self, req: &ApiRequest) -> Result<T, CloudflareError> {
        let (result, _) = self.call_raw(req).await?;
        self.decode(req, result)
    }

    async fn call_raw(
        &self,
        req: &ApiRequest,
    ) -> Result<(Value, Option<ResultInfo>), CloudflareError> {
        let resp = self.http.send(req, Some(&self.token)).await?;
        let env: Envelope = serde_json::from_slice(&resp.body).map_err(|e| {
            self.http
                .decode_error(req, resp.status, format!("not a Cloudflare envelope: {e}"))
        })?;
        if env.success == Some(false) || !env.errors.is_empty() {
            let mut messages = Vec::new();
            flatten_messages(env.errors, &mut messages);
            return Err(self.http.rejected_error(req, resp.status, messages).into());
        }
        Ok((env.result, env.result_info))
    }

    fn decode<T: DeserializeOwned>(
        &self,
        req: &ApiRequest,
        result: Value,
    ) -> Result<T, CloudflareError> {
        serde_json::from_value(result).map_err(|e| {
            self.http
                .decode_error(req, reqwest::StatusCode::OK, format!("`result`: {e}"))
                .into()
        })
    }

    /// Reads every page of a list: `page` from 1 until `result_info.total_pages` (or a short page when
    /// the API gives no `result_info`).
    async fn get_all<T: DeserializeOwned>(
        &self,
        base: ApiRequest,
        per_page: u32,
    ) -> Result<Vec<T>, CloudflareError> {
        let mut out = Vec::new();
        let mut page: u64 = 1;
        loop {
            let req = base
                .clone()
                .query("page", page.to_string())
                .query("per_page", per_page.to_string());
            let (result, info) = self.call_raw(&req).await?;
            let items: Vec<T> = self.decode(&req, result)?;
            let n = items.len();
            out.extend(items);
            let last = match info {
                Some(i) if i.total_pages > 0 => page >= i.total_pages,
                _ => (n as u64) < u64::from(per_page),
            };
            if last || n == 0 {
                return Ok(out);
            }
            page += 1;
            if page > MAX_PAGES {
                return Err(CloudflareError::EndlessPagination {
                    path: base.path(),
                    pages: MAX_PAGES,
                });
            }
        }
    }
}

/// Cloudflare's "Record does not exist." code.
pub const RECORD_NOT_FOUND: i64 = 81044;

/// Lower case, no trailing dot: how Cloudflare names zones and records.
fn canonical_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_record_types_are_kept() {
        let r: DnsRecord = serde_json::from_value(json!({
            "id": "1", "type": "FUTURE", "name": "x.example.com", "content": null,
            "proxied": false, "ttl": 1, "comment": null, "tags": null, "meta": {}, "settings": {}
        }))
        .expect("decodes");
        assert_eq!(r.record_type, RecordType::Other("FUTURE".into()));
        assert_eq!(r.content, "");
        assert!(r.tags.is_empty());
        assert_eq!(
            serde_json::to_value(&r.record_type).expect("encodes"),
            json!("FUTURE")
        );
        assert_eq!(RecordType::parse("CNAME"), RecordType::CNAME);
    }

    #[test]
    fn tunnel_config_round_trips_unknown_keys() {
        let raw = json!({
            "ingress": [
                {"hostname": "a.example.com", "service": "http://localhost:1",
                 "originRequest": {"noTLSVerify": true, "futureKnob": [1, 2]}, "futureRuleKey": "x"},
                {"service": "http_status:404"}
            ],
            "originRequest": {"connectTimeout": 10},
            "warp-routing": {"enabled": false},
            "futureTopKey": {"a": 1}
        });
        let c: TunnelConfig = serde_json::from_value(raw.clone()).expect("decodes");
        assert_eq!(c.ingress.len(), 2);
        assert_eq!(c.ingress[1].hostname, None);
        assert_eq!(serde_json::to_value(&c).expect("encodes"), raw);
    }

    #[test]
    fn batch_serialises_in_contract_shape() {
        let b = BatchRequest {
            deletes: vec![BatchDelete { id: "d".into() }],
            patches: vec![BatchPatch {
                id: "p".into(),
                patch: DnsRecordPatch {
                    proxied: Some(true),
                    ..Default::default()
                },
            }],
            puts: vec![BatchPut {
                id: "u".into(),
                record: DnsRecordSpec::cname("a.example.com", "t.example.net"),
            }],
            posts: vec![DnsRecordSpec::cname("b.example.com", "t.example.net").comment("c")],
        };
        assert_eq!(b.len(), 4);
        assert_eq!(
            serde_json::to_value(&b).expect("encodes"),
            json!({
                "deletes": [{"id": "d"}],
                "patches": [{"id": "p", "proxied": true}],
                "puts": [{"id": "u", "type": "CNAME", "name": "a.example.com",
                          "content": "t.example.net", "ttl": 1, "proxied": false, "tags": []}],
                "posts": [{"type": "CNAME", "name": "b.example.com", "content": "t.example.net",
                           "ttl": 1, "proxied": false, "comment": "c", "tags": []}]
            })
        );
    }

    #[test]
    fn error_chain_is_flattened() {
        let body = br#"{"success":false,"errors":[{"code":1004,"message":"DNS Validation Error",
            "error_chain":[{"code":9021,"message":"Invalid TTL"}]}],"messages":[],"result":null}"#;
        let m = parse_errors(body);
        assert_eq!(
            m.iter().map(|m| m.code).collect::<Vec<_>>(),
            vec![1004, 9021]
        );
        assert!(parse_errors(b"<html>").is_empty());
    }

    #[test]
    fn result_info_accepts_floats() {
        let i: ResultInfo =
            serde_json::from_value(json!({"page": 1.0, "per_page": 20, "total_pages": 3.0}))
                .expect("decodes");
        assert_eq!((i.page, i.per_page, i.total_pages, i.count), (1, 20, 3, 0));
    }
}
