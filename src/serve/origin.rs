//! Which `Host` and `Origin` headers a request may carry: the DNS-rebinding and cross-site protection of
//! every route a browser can reach (MCP and the status page).
//!
//! One [`OriginPolicy`] is built per server from the loopback names and `[serve] allowed_hosts`. It gives
//! rmcp its allow lists (rmcp checks them again inside MCP) and checks page and MCP requests itself
//! ([`OriginPolicy::check`]), so both faces accept exactly the same hosts:
//!
//! * `Host` must name an allowed host (an entry without a port allows any port; `[::1]` and `::1` are the
//!   same host; case-insensitive). A request without `Host` is refused.
//! * `Origin`, when present, must be `http` or `https` on an allowed host. `Origin: null` (sandboxed
//!   frames, `file:` pages) is refused — unless the browser also says `Sec-Fetch-Site: same-origin`,
//!   as it does when it posts the page's own form under `Referrer-Policy: no-referrer`.
//! * [`OriginPolicy::check_same_origin`] — for state-changing form posts (`POST /login`,
//!   `POST /logout`) — additionally requires proof that the page itself posted: `Sec-Fetch-Site:
//!   same-origin`, or an `Origin` whose host and port are the request's own `Host`. A page served by
//!   another local program on another port cannot post to the supervisor.

use axum::http::{HeaderMap, header};

/// An allowed host: a name (lower case, without brackets) and, when given, the only port accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    host: String,
    port: Option<u16>,
}

/// Names a loopback client may use for this server.
const LOOPBACK: [&str; 4] = ["localhost", "127.0.0.1", "::1", "[::1]"];

/// Why a request's `Host` or `Origin` is refused (the message a client gets, with HTTP 403 — or 400 for
/// a malformed `Host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRefusal {
    /// No `Host`, or one that is not an authority.
    BadHost,
    HostNotAllowed(String),
    /// An `Origin` that is not an allowed `http(s)://host[:port]`.
    OriginNotAllowed(String),
    /// A form post without an `Origin`, or from another origin than the request's own host.
    CrossOrigin,
}

impl std::fmt::Display for OriginRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OriginRefusal::BadHost => f.write_str("the request has no valid Host header"),
            OriginRefusal::HostNotAllowed(h) => write!(
                f,
                "Host `{h}` is not allowed (add it to [serve] allowed_hosts in supervisor.toml)"
            ),
            OriginRefusal::OriginNotAllowed(o) => write!(
                f,
                "Origin `{o}` is not allowed (add its host to [serve] allowed_hosts in supervisor.toml)"
            ),
            OriginRefusal::CrossOrigin => f.write_str(
                "this form may only be posted from the supervisor's own page (the Origin header must match the Host)",
            ),
        }
    }
}

impl OriginRefusal {
    /// 400 for a missing or malformed `Host`, 403 otherwise.
    pub fn status(&self) -> axum::http::StatusCode {
        match self {
            OriginRefusal::BadHost => axum::http::StatusCode::BAD_REQUEST,
            _ => axum::http::StatusCode::FORBIDDEN,
        }
    }
}

/// The allowed hosts of one server (see the module documentation).
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    /// As configured (loopback names first), for rmcp.
    names: Vec<String>,
    allowed: Vec<Allowed>,
}

fn normalize(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// `host[:port]` → (host, port); `None` when it is not an authority.
fn authority(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let a: axum::http::uri::Authority = text.parse().ok()?;
    if a.as_str().contains('@') {
        return None;
    }
    Some((normalize(a.host()), a.port_u16()))
}

impl OriginPolicy {
    /// The loopback names and `extra` (`[serve] allowed_hosts`: `name` or `name:port`).
    pub fn new(extra: &[String]) -> Self {
        let names: Vec<String> = LOOPBACK
            .iter()
            .map(|h| h.to_string())
            .chain(extra.iter().map(|h| h.trim().to_string()))
            .filter(|h| !h.is_empty())
            .collect();
        let allowed = names
            .iter()
            .filter_map(|n| {
                authority(n)
                    .or_else(|| Some((normalize(n), None)))
                    .map(|(host, port)| Allowed { host, port })
            })
            .collect();
        OriginPolicy { names, allowed }
    }

    /// The `Host` allow list in rmcp's format.
    pub fn rmcp_hosts(&self) -> Vec<String> {
        self.names.clone()
    }

    /// The `Origin` allow list in rmcp's format: `http` and `https` on every allowed host, any port.
    pub fn rmcp_origins(&self) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.allowed {
            let host = if a.host.contains(':') {
                format!("[{}]", a.host)
            } else {
                a.host.clone()
            };
            let port = a.port.map_or_else(|| "*".to_string(), |p| p.to_string());
            for scheme in ["http", "https"] {
                let entry = format!("{scheme}://{host}:{port}");
                if !out.contains(&entry) {
                    out.push(entry);
                }
            }
        }
        out
    }

    fn allows(&self, host: &str, port: Option<u16>) -> bool {
        self.allowed
            .iter()
            .any(|a| a.host == host && a.port.is_none_or(|p| Some(p) == port))
    }

    /// The request's `Host`, normalised, when it is allowed.
    fn host(&self, headers: &HeaderMap) -> Result<(String, Option<u16>), OriginRefusal> {
        let raw = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .ok_or(OriginRefusal::BadHost)?;
        let (host, port) = authority(raw).ok_or(OriginRefusal::BadHost)?;
        if !self.allows(&host, port) {
            return Err(OriginRefusal::HostNotAllowed(capped(raw)));
        }
        Ok((host, port))
    }

    /// `Origin` as (scheme, host, port) when it names one, `None` when absent or `null` — `null` only
    /// from the page itself (see [`Self::check`]); a malformed or foreign one is refused.
    fn origin(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<(String, String, Option<u16>)>, OriginRefusal> {
        let Some(value) = headers.get(header::ORIGIN) else {
            return Ok(None);
        };
        let raw = value
            .to_str()
            .map_err(|_| OriginRefusal::OriginNotAllowed("(not text)".into()))?;
        let refused = || OriginRefusal::OriginNotAllowed(capped(raw));
        if raw.trim().eq_ignore_ascii_case("null") {
            // A sandboxed frame or a `file:` page sends `null`; so does a browser posting the page's
            // own form under `Referrer-Policy: no-referrer` — which it states in `Sec-Fetch-Site`.
            return if same_origin_fetch(headers) {
                Ok(None)
            } else {
                Err(refused())
            };
        }
        let uri: axum::http::Uri = raw.trim().parse().map_err(|_| refused())?;
        let scheme = uri.scheme_str().ok_or_else(refused)?.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(refused());
        }
        let a = uri.authority().ok_or_else(refused)?;
        let (host, port) = authority(a.as_str()).ok_or_else(refused)?;
        if !self.allows(&host, port) {
            return Err(refused());
        }
        Ok(Some((scheme, host, port)))
    }

    /// The DNS-rebinding check of every request: an allowed `Host`, and an allowed `Origin` if any.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), OriginRefusal> {
        self.host(headers)?;
        self.origin(headers)?;
        Ok(())
    }

    /// The check of a state-changing form post: [`Self::check`], and proof that the page itself posted
    /// it — the browser's `Sec-Fetch-Site: same-origin`, or (from a browser that sends no fetch
    /// metadata) an `Origin` that is the request's own host and port. An `Origin` naming another host
    /// or port is refused whatever else the request says.
    pub fn check_same_origin(&self, headers: &HeaderMap) -> Result<(), OriginRefusal> {
        let (host, port) = self.host(headers)?;
        let origin = self.origin(headers)?;
        if let Some((scheme, o_host, o_port)) = &origin {
            let default = if scheme == "https" { 443 } else { 80 };
            if *o_host != host || o_port.unwrap_or(default) != port.unwrap_or(default) {
                return Err(OriginRefusal::CrossOrigin);
            }
        }
        match headers.get("sec-fetch-site") {
            Some(_) if same_origin_fetch(headers) => Ok(()),
            Some(_) => Err(OriginRefusal::CrossOrigin),
            None if origin.is_some() => Ok(()),
            None => Err(OriginRefusal::CrossOrigin),
        }
    }

    /// Whether the request's `Host` is a loopback name (a browser on this machine or through an SSH
    /// tunnel, over plain HTTP).
    pub fn is_loopback_request(headers: &HeaderMap) -> bool {
        headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(authority)
            .is_some_and(|(h, _)| LOOPBACK.iter().any(|l| normalize(l) == h))
    }
}

/// The browser says the request comes from a page of this very origin (Fetch Metadata; a page cannot
/// set this header itself).
fn same_origin_fetch(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("same-origin"))
}

/// At most 100 characters of a header, for a message.
fn capped(s: &str) -> String {
    let mut out: String = s.chars().take(100).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(host: Option<&str>, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = host {
            h.insert(header::HOST, HeaderValue::from_str(v).unwrap());
        }
        if let Some(v) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn loopback_and_configured_hosts_pass_others_do_not() {
        let p = OriginPolicy::new(&[
            "Status.Example.com".into(),
            "tunnel.example.org:8443".into(),
        ]);
        for ok in [
            "localhost:8080",
            "127.0.0.1",
            "[::1]:9",
            "LOCALHOST:1",
            "status.example.com",
            "tunnel.example.org:8443",
        ] {
            assert_eq!(p.check(&headers(Some(ok), None)), Ok(()), "{ok}");
        }
        assert_eq!(
            p.check(&headers(Some("evil.example.com"), None)),
            Err(OriginRefusal::HostNotAllowed("evil.example.com".into()))
        );
        assert!(
            p.check(&headers(Some("tunnel.example.org:80"), None))
                .is_err()
        );
        assert_eq!(p.check(&headers(None, None)), Err(OriginRefusal::BadHost));
        assert_eq!(
            p.check(&headers(Some("user@localhost"), None)),
            Err(OriginRefusal::BadHost)
        );
        assert_eq!(
            p.check(&headers(
                Some("localhost:1"),
                Some("http://evil.example.com")
            )),
            Err(OriginRefusal::OriginNotAllowed(
                "http://evil.example.com".into()
            ))
        );
        assert!(p.check(&headers(Some("localhost"), Some("null"))).is_err());
        let mut own_form = headers(Some("localhost"), Some("null"));
        own_form.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert_eq!(
            p.check(&own_form),
            Ok(()),
            "the page's own post under no-referrer"
        );
        let mut framed = headers(Some("localhost"), Some("null"));
        framed.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(p.check(&framed).is_err(), "a sandboxed frame elsewhere");
        assert!(
            p.check(&headers(Some("localhost"), Some("file:///tmp/x.html")))
                .is_err()
        );
        assert_eq!(
            p.check(&headers(
                Some("localhost:1"),
                Some("https://status.example.com")
            )),
            Ok(())
        );
    }

    #[test]
    fn form_posts_need_their_own_origin() {
        let p = OriginPolicy::new(&[]);
        let own = headers(Some("127.0.0.1:8080"), Some("http://127.0.0.1:8080"));
        assert_eq!(p.check_same_origin(&own), Ok(()));
        for (host, origin) in [
            ("127.0.0.1:8080", None),
            ("127.0.0.1:8080", Some("http://127.0.0.1:9999")),
            ("127.0.0.1:8080", Some("http://localhost:8080")),
        ] {
            assert_eq!(
                p.check_same_origin(&headers(Some(host), origin)),
                Err(OriginRefusal::CrossOrigin),
                "{origin:?}"
            );
        }
        // Fetch metadata: the browser's word about where the post comes from.
        let with_site = |origin: Option<&str>, site: &'static str| {
            let mut h = headers(Some("127.0.0.1:8080"), origin);
            h.insert("sec-fetch-site", HeaderValue::from_static(site));
            h
        };
        assert_eq!(
            p.check_same_origin(&with_site(Some("null"), "same-origin")),
            Ok(())
        );
        assert_eq!(p.check_same_origin(&with_site(None, "same-origin")), Ok(()));
        assert_eq!(
            p.check_same_origin(&with_site(Some("null"), "same-site")),
            Err(OriginRefusal::OriginNotAllowed("null".into()))
        );
        assert_eq!(
            p.check_same_origin(&with_site(None, "cross-site")),
            Err(OriginRefusal::CrossOrigin)
        );
        assert_eq!(
            p.check_same_origin(&with_site(Some("http://127.0.0.1:9999"), "same-origin")),
            Err(OriginRefusal::CrossOrigin),
            "an Origin naming another port wins over the header"
        );
        // Behind a TLS proxy the browser's Host has no port: the Origin's scheme says which is implied.
        let q = OriginPolicy::new(&["status.example.com".into()]);
        for host in ["status.example.com", "status.example.com:443"] {
            assert_eq!(
                q.check_same_origin(&headers(Some(host), Some("https://status.example.com"))),
                Ok(()),
                "{host}"
            );
        }
        assert_eq!(
            q.check_same_origin(&headers(
                Some("status.example.com:8443"),
                Some("https://status.example.com")
            )),
            Err(OriginRefusal::CrossOrigin)
        );
    }

    #[test]
    fn rmcp_gets_the_same_lists() {
        let p = OriginPolicy::new(&["status.example.com".into()]);
        assert_eq!(
            p.rmcp_hosts(),
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "[::1]",
                "status.example.com"
            ]
        );
        assert_eq!(
            p.rmcp_origins(),
            [
                "http://localhost:*",
                "https://localhost:*",
                "http://127.0.0.1:*",
                "https://127.0.0.1:*",
                "http://[::1]:*",
                "https://[::1]:*",
                "http://status.example.com:*",
                "https://status.example.com:*"
            ]
        );
        assert!(OriginPolicy::is_loopback_request(&headers(
            Some("[::1]:8080"),
            None
        )));
        assert!(!OriginPolicy::is_loopback_request(&headers(
            Some("status.example.com"),
            None
        )));
    }
}
