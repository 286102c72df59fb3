//! The credential detector: recognises secrets in text by their published formats, by assignment
//! context (`password = …`), and — as a fallback — by entropy.
//!
//! One pattern set serves four uses: `secrets scan` of files, refusing literal secrets in `state/`,
//! the `detect_secrets` tool and `secrets detect` (which suggest a vault path per finding), and the
//! log redaction layer (every formatted log line passes through [`redact`]).
//!
//! Precision matters as much as recall: a detector that flags every UUID, git hash or base64 image is
//! switched off by its users. The fallback therefore demands length, mixed character classes and high
//! Shannon entropy, and skips shapes that are known not to be secrets (UUIDs, hex digests, data URLs,
//! paths). Values are only ever returned masked ([`Finding::masked`]).

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::path::{PathError, SecretPath};

/// What kind of credential a finding is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    AnthropicApiKey,
    OpenaiApiKey,
    StripeSecretKey,
    StripeWebhookSecret,
    GithubToken,
    GithubFineGrainedToken,
    GitlabToken,
    AwsAccessKeyId,
    AwsSecretAccessKey,
    GoogleApiKey,
    GoogleServiceAccount,
    CloudflareApiToken,
    SlackToken,
    SlackWebhook,
    PrivateKey,
    Jwt,
    UrlCredentials,
    AssignedSecret,
    HighEntropy,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::AnthropicApiKey => "anthropic_api_key",
            SecretKind::OpenaiApiKey => "openai_api_key",
            SecretKind::StripeSecretKey => "stripe_secret_key",
            SecretKind::StripeWebhookSecret => "stripe_webhook_secret",
            SecretKind::GithubToken => "github_token",
            SecretKind::GithubFineGrainedToken => "github_fine_grained_token",
            SecretKind::GitlabToken => "gitlab_token",
            SecretKind::AwsAccessKeyId => "aws_access_key_id",
            SecretKind::AwsSecretAccessKey => "aws_secret_access_key",
            SecretKind::GoogleApiKey => "google_api_key",
            SecretKind::GoogleServiceAccount => "google_service_account",
            SecretKind::CloudflareApiToken => "cloudflare_api_token",
            SecretKind::SlackToken => "slack_token",
            SecretKind::SlackWebhook => "slack_webhook",
            SecretKind::PrivateKey => "private_key",
            SecretKind::Jwt => "jwt",
            SecretKind::UrlCredentials => "url_credentials",
            SecretKind::AssignedSecret => "assigned_secret",
            SecretKind::HighEntropy => "high_entropy",
        }
    }

    /// The last path segment `secrets detect` suggests for a credential of this kind.
    pub fn suggested_name(self) -> &'static str {
        match self {
            SecretKind::AnthropicApiKey => "anthropic_api_key",
            SecretKind::OpenaiApiKey => "openai_api_key",
            SecretKind::StripeSecretKey => "stripe_secret_key",
            SecretKind::StripeWebhookSecret => "stripe_webhook_secret",
            SecretKind::GithubToken | SecretKind::GithubFineGrainedToken => "github_token",
            SecretKind::GitlabToken => "gitlab_token",
            SecretKind::AwsAccessKeyId => "aws_access_key_id",
            SecretKind::AwsSecretAccessKey => "aws_secret_access_key",
            SecretKind::GoogleApiKey => "google_api_key",
            SecretKind::GoogleServiceAccount => "service_account",
            SecretKind::CloudflareApiToken => "api_token",
            SecretKind::SlackToken => "slack_token",
            SecretKind::SlackWebhook => "slack_webhook_url",
            SecretKind::PrivateKey => "private_key",
            SecretKind::Jwt => "jwt",
            SecretKind::UrlCredentials => "database_url",
            SecretKind::AssignedSecret | SecretKind::HighEntropy => "secret",
        }
    }

    /// The vault folder a credential of this kind usually belongs in (`meta/<vendor>/…`).
    pub fn vendor(self) -> &'static str {
        match self {
            SecretKind::AnthropicApiKey => "anthropic",
            SecretKind::OpenaiApiKey => "openai",
            SecretKind::StripeSecretKey | SecretKind::StripeWebhookSecret => "stripe",
            SecretKind::GithubToken | SecretKind::GithubFineGrainedToken => "github",
            SecretKind::GitlabToken => "gitlab",
            SecretKind::AwsAccessKeyId | SecretKind::AwsSecretAccessKey => "aws",
            SecretKind::GoogleApiKey | SecretKind::GoogleServiceAccount => "gcloud",
            SecretKind::CloudflareApiToken => "cloudflare",
            SecretKind::SlackToken | SecretKind::SlackWebhook => "slack",
            SecretKind::PrivateKey => "keys",
            SecretKind::Jwt => "tokens",
            SecretKind::UrlCredentials => "database",
            SecretKind::AssignedSecret | SecretKind::HighEntropy => "misc",
        }
    }
}

impl std::fmt::Display for SecretKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A credential found in a text: byte range and kind. The value itself is only available masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: SecretKind,
    /// Byte offsets of the secret value within the scanned text.
    pub start: usize,
    pub end: usize,
    masked: String,
}

impl Finding {
    /// The value with all but a short, non-identifying prefix hidden: `sk-ant-…(108 chars)`.
    pub fn masked(&self) -> &str {
        &self.masked
    }
}

struct Pattern {
    kind: SecretKind,
    regex: Regex,
    /// Which capture group holds the value (0 = whole match).
    group: usize,
}

fn pattern(kind: SecretKind, group: usize, re: &str) -> Pattern {
    Pattern {
        kind,
        group,
        regex: Regex::new(re)
            .unwrap_or_else(|e| panic!("detector pattern for {kind} is invalid: {e}")),
    }
}

/// Boundaries: a token must not continue a longer word on either side.
const L: &str = r"(?:^|[^A-Za-z0-9_\-])";
const R: &str = r"(?:$|[^A-Za-z0-9_\-])";

/// A PEM private key: the header, then the body up to the first footer after it (or, with no footer,
/// up to [`PEM_BODY_WITHOUT_FOOTER`] characters that can be base64 or line breaks). Found in two steps
/// (see [`private_keys`]) rather than by one regex with a lazy body: that regex scanned to the end of
/// the text for every header without a footer (quadratic on a text of headers).
static PEM_HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
        .unwrap_or_else(|e| panic!("private key header regex: {e}"))
});
static PEM_FOOTER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
        .unwrap_or_else(|e| panic!("private key footer regex: {e}"))
});
/// The most characters of a body taken after a header without a footer.
const PEM_BODY_WITHOUT_FOOTER: usize = 8192;

/// Every private key in `text`, in order, not overlapping: `(start, end)` byte ranges. Linear: the
/// footers are found once, and each header takes the first footer after it.
fn private_keys(text: &str) -> Vec<(usize, usize)> {
    let footers: Vec<(usize, usize)> = PEM_FOOTER
        .find_iter(text)
        .map(|m| (m.start(), m.end()))
        .collect();
    let mut next_footer = 0;
    let mut found: Vec<(usize, usize)> = Vec::new();
    for header in PEM_HEADER.find_iter(text) {
        if found.last().is_some_and(|&(_, end)| header.start() < end) {
            continue; // inside the key before it
        }
        while next_footer < footers.len() && footers[next_footer].0 < header.end() {
            next_footer += 1;
        }
        let end = match footers.get(next_footer) {
            Some(&(_, footer_end)) => footer_end,
            None => {
                let body = text[header.end()..]
                    .char_indices()
                    .take(PEM_BODY_WITHOUT_FOOTER)
                    .find(|&(_, c)| {
                        !(c.is_ascii_alphanumeric()
                            || matches!(c, '+' | '/' | '=' | '\\')
                            || c.is_whitespace())
                    })
                    .map_or_else(
                        || {
                            text[header.end()..]
                                .char_indices()
                                .nth(PEM_BODY_WITHOUT_FOOTER)
                                .map_or(text.len() - header.end(), |(i, _)| i)
                        },
                        |(i, _)| i,
                    );
                header.end() + body
            }
        };
        found.push((header.start(), end));
    }
    found
}

static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    use SecretKind::*;
    vec![
        pattern(
            GoogleServiceAccount,
            1,
            r#""private_key_id"\s*:\s*"([0-9a-f]{40})""#,
        ),
        pattern(
            AnthropicApiKey,
            1,
            &format!(r"{L}(sk-ant-(?:api|admin|oat)\d{{2}}-[A-Za-z0-9_\-]{{80,120}}){R}"),
        ),
        pattern(
            OpenaiApiKey,
            1,
            &format!(
                r"{L}(sk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{{40,200}}|sk-[A-Za-z0-9]{{20}}T3BlbkFJ[A-Za-z0-9]{{20}}|sk-[A-Za-z0-9]{{48}}){R}"
            ),
        ),
        pattern(
            StripeSecretKey,
            1,
            &format!(r"{L}((?:sk|rk)_(?:live|test)_[A-Za-z0-9]{{20,247}}){R}"),
        ),
        pattern(
            StripeWebhookSecret,
            1,
            &format!(r"{L}(whsec_[A-Za-z0-9+/=]{{32,}}){R}"),
        ),
        pattern(
            GithubFineGrainedToken,
            1,
            &format!(r"{L}(github_pat_[A-Za-z0-9]{{22}}_[A-Za-z0-9]{{59}}){R}"),
        ),
        pattern(
            GithubToken,
            1,
            &format!(r"{L}(gh[pousr]_[A-Za-z0-9]{{36,251}}){R}"),
        ),
        pattern(
            GitlabToken,
            1,
            &format!(
                r"{L}((?:glpat|gldt|glrt|glptt|glft|glsoat|glcbt|glimt|gloas)-[A-Za-z0-9_\-]{{20,}}(?:\.[0-9a-z]{{2}}\.[0-9a-z]{{9}})?){R}"
            ),
        ),
        pattern(
            AwsAccessKeyId,
            1,
            r"(?:^|[^A-Z0-9])((?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})(?:$|[^A-Z0-9])",
        ),
        pattern(
            AwsSecretAccessKey,
            1,
            r#"(?i:aws.{0,20}?(?:secret|private)[_\-\s]?(?:access)?[_\-\s]?key)["']?\s*[:=]\s*["']?([A-Za-z0-9/+]{40})(?:$|[^A-Za-z0-9/+=])"#,
        ),
        pattern(
            GoogleApiKey,
            1,
            &format!(r"{L}(AIza[0-9A-Za-z_\-]{{35}}){R}"),
        ),
        pattern(
            CloudflareApiToken,
            1,
            r#"(?i:(?:cloudflare|cf)[_\-]?(?:api)?[_\-]?(?:token|key))["']?\s*[:=]\s*["']?([A-Za-z0-9_\-]{37,40})(?:$|[^A-Za-z0-9_\-])"#,
        ),
        pattern(
            CloudflareApiToken,
            1,
            &format!(r"{L}(cf(?:ut|at|k)_[A-Za-z0-9]{{40,60}}){R}"),
        ),
        pattern(
            SlackWebhook,
            0,
            r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_\-]{20,}",
        ),
        pattern(
            SlackToken,
            1,
            &format!(
                r"{L}(xox[abposr]-(?:\d+-)?[0-9A-Za-z\-]{{10,}}|xapp-\d-[A-Z0-9]+-\d+-[a-z0-9]+){R}"
            ),
        ),
        pattern(
            Jwt,
            1,
            &format!(
                r"{L}(eyJ[A-Za-z0-9_\-]{{10,}}\.eyJ[A-Za-z0-9_\-]{{10,}}\.[A-Za-z0-9_\-]{{10,}}){R}"
            ),
        ),
        pattern(
            UrlCredentials,
            1,
            r"[a-zA-Z][a-zA-Z0-9+.\-]{1,20}://[^\s:/@]{1,64}:([^\s:/@]{3,128})@[A-Za-z0-9.\-\[\]]+",
        ),
        pattern(
            AssignedSecret,
            1,
            r#"(?i:(?:password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?key|private[_\-]?key|client[_\-]?secret|auth[_\-]?token|credentials?))["']?\s*(?:[:=]|=>)\s*["']([^\s"']{8,200})["']"#,
        ),
        pattern(
            AssignedSecret,
            1,
            r#"(?im:^\s*(?:export\s+)?[A-Z0-9_]*(?:PASSWORD|SECRET|TOKEN|API_KEY|APIKEY|ACCESS_KEY|PRIVATE_KEY)[A-Z0-9_]*\s*=\s*([^\s"']{8,200})(?:\s+#.*)?\s*$)"#,
        ),
    ]
});

/// Candidate tokens for the entropy fallback (`=` only as base64 padding, so `NAME=value` splits).
static TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9+/_\-.~]{24,}={0,2}").unwrap_or_else(|e| panic!("token regex: {e}"))
});

static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
        .unwrap_or_else(|e| panic!("uuid regex: {e}"))
});

/// The `$id$params$` prefix of a crypt(3)-style password hash, right before a token.
static PASSWORD_HASH_PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$(?:2[abxy]?\$\d{2}|argon2(?:id|i|d)\$[^\s]*|[56]\$(?:rounds=\d+\$)?[^$\s]*)\$$")
        .unwrap_or_else(|e| panic!("password hash regex: {e}"))
});

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Values an assignment may hold that are obviously not secrets.
fn is_placeholder(value: &str) -> bool {
    let v = value.trim_matches(|c| c == '"' || c == '\'');
    let lower = v.to_ascii_lowercase();
    lower.starts_with("secret:")
        || lower.starts_with("${")
        || lower.starts_with("$(")
        || lower.starts_with("{{")
        || lower.starts_with('<')
        || lower.starts_with("env:")
        || lower.contains("example")
        || lower.contains("changeme")
        || lower.contains("placeholder")
        || lower.contains("your_")
        || lower.contains("your-")
        || lower.contains("xxxx")
        || lower.contains("...")
        || lower.contains('…')
        || lower.chars().all(|c| c == '*' || c == 'x' || c == '.')
        || v.chars().collect::<std::collections::HashSet<_>>().len() < 4
}

/// Shannon entropy in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    for b in s.bytes() {
        counts[b as usize] += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let n = f64::from(n);
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// The fallback: long, mixed-class, high-entropy tokens that have no known non-secret shape.
/// `chunk_start`: where the run of text the token is in begins (after the last whitespace, quote,
/// parenthesis or `<` before it); `has_scheme`: whether the run before the token holds a `://`.
fn looks_random(
    token: &str,
    text: &str,
    start: usize,
    chunk_start: usize,
    has_scheme: bool,
) -> bool {
    let t = token.trim_end_matches(['=', '.']);
    // Blobs (images, fonts, source maps) are long; the tokens this fallback is for are not.
    if t.len() < 32 || t.len() > 200 {
        return false;
    }
    if UUID.is_match(t) || t.chars().all(|c| c.is_ascii_hexdigit()) {
        return false; // UUIDs, git hashes and hex digests
    }
    // Subresource-integrity and lockfile hashes (`sha512-…`), base64 of well-known file types.
    if ["sha1-", "sha256-", "sha384-", "sha512-"]
        .iter()
        .any(|p| t.starts_with(p))
        || [
            "iVBORw0KGgo",
            "/9j/",
            "R0lGOD",
            "UklGR",
            "PHN2Zy",
            "JVBERi0",
            "AAAA",
        ]
        .iter()
        .any(|p| t.starts_with(p))
    {
        return false;
    }
    // Public by design: Stripe publishable keys.
    if t.starts_with("pk_live_") || t.starts_with("pk_test_") {
        return false;
    }
    // base64 data URLs (images, fonts), paths, dotted identifiers; labelled digests (go.sum `h1:`,
    // `sha256:`) and password hashes (bcrypt `$2b$12$…`, argon2 `$argon2id$…$`), which are not
    // credentials.
    let before = &text[floor_char_boundary(text, start.saturating_sub(40))..start];
    if before.contains("base64,")
        || before.ends_with('/')
        || before.ends_with("://")
        || ["h1:", "sha1:", "sha256:", "sha384:", "sha512:", "md5:"]
            .iter()
            .any(|p| before.ends_with(p))
        || PASSWORD_HASH_PREFIX.is_match(before)
    {
        return false;
    }
    if in_url_but_not_a_credential_parameter(text, start, chunk_start, has_scheme) {
        return false;
    }
    if t.contains('/') && t.split('/').filter(|s| !s.is_empty()).all(|s| s.len() < 24) {
        return false;
    }
    if t.contains('.') && t.split('.').all(|s| s.len() < 20) {
        return false;
    }
    let upper = t.chars().any(|c| c.is_ascii_uppercase());
    let lower = t.chars().any(|c| c.is_ascii_lowercase());
    let digits = t.chars().filter(|c| c.is_ascii_digit()).count();
    if !(upper && lower && digits >= 2) {
        return false;
    }
    // Words glued with separators (`this_is_a_long_identifier_name`) are not random.
    let longest_alpha_run = t
        .split(|c: char| !c.is_ascii_alphabetic())
        .map(str::len)
        .max()
        .unwrap_or(0);
    if longest_alpha_run > 20 && t.contains(['_', '-']) {
        return false;
    }
    if decodes_to_text(t) {
        return false; // base64 of ordinary text
    }
    // A random string's entropy grows with its length (bounded by log2 of it): demand what 99 % of
    // random base62 strings of that length reach, so short random tokens are not missed and long
    // structured ones are not flagged.
    let threshold = (4.1 + 0.028 * (t.len() as f64 - 32.0)).min(4.8);
    entropy(t) >= threshold
}

/// The longest query parameter name looked at.
const PARAMETER_NAME_MAX: usize = 256;

/// Whether a character ends the run of text a URL can be part of.
fn is_chunk_delimiter(c: char) -> bool {
    c.is_whitespace() || c == '"' || c == '\'' || c == '(' || c == '<'
}

/// Whether the token at `start` sits in a URL where it is not the value of a credential-like query
/// parameter (`?token=…`, `&key=…`): path segments, host names and ordinary parameters are not secrets.
/// `chunk_start` is where the run of text before the token begins (see [`is_chunk_delimiter`]).
/// `has_scheme`: whether that run holds a `://`.
fn in_url_but_not_a_credential_parameter(
    text: &str,
    start: usize,
    chunk_start: usize,
    has_scheme: bool,
) -> bool {
    let chunk = &text[chunk_start..start];
    if chunk.ends_with(':') && text[start..].starts_with("//") {
        return true; // the token is the URL itself (`https:` + `//host/path…`)
    }
    if !has_scheme {
        return false;
    }
    let Some(name) = chunk.strip_suffix('=') else {
        return true;
    };
    // The parameter's name: after the last `?`, `&` or `;` — names are short, so only the end of
    // the run is looked at.
    let name = &name[floor_char_boundary(name, name.len().saturating_sub(PARAMETER_NAME_MAX))..];
    let name = name
        .rsplit(['?', '&', ';'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    const CREDENTIAL_PARAMETERS: [&str; 10] = [
        "token",
        "key",
        "secret",
        "sig",
        "signature",
        "password",
        "pass",
        "auth",
        "credential",
        "code",
    ];
    !CREDENTIAL_PARAMETERS.iter().any(|p| name.contains(p))
}

/// Whether `t` is valid base64 whose decoded bytes are ordinary text (encoded prose, JSON, config).
fn decodes_to_text(t: &str) -> bool {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        })
    }
    let body = t.trim_end_matches('=');
    let mut bytes = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in body.bytes() {
        let Some(v) = sextet(c) else {
            return false;
        };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bytes.len() < 12 {
        return false;
    }
    let printable = bytes
        .iter()
        .filter(|&&b| (0x20..0x7f).contains(&b) || b == b'\n' || b == b'\t')
        .count();
    printable * 100 >= bytes.len() * 95 && bytes.contains(&b' ')
}

fn mask(value: &str) -> String {
    let shown: String = value.chars().take(4).collect();
    format!("{shown}…({} chars)", value.chars().count())
}

/// Findings so far, by start: they never overlap, so a range overlaps one of them exactly when it
/// overlaps the last one that starts before its end (a lookup, not a scan: texts of thousands of
/// credentials stay linear).
#[derive(Default)]
struct Found(std::collections::BTreeMap<usize, Finding>);

impl Found {
    fn overlaps(&self, start: usize, end: usize) -> bool {
        self.0
            .range(..end)
            .next_back()
            .is_some_and(|(_, f)| start < f.end)
    }

    fn add(&mut self, kind: SecretKind, start: usize, end: usize, value: &str) {
        self.0.insert(
            start,
            Finding {
                kind,
                start,
                end,
                masked: mask(value),
            },
        );
    }
}

/// Every credential in `text`, in order, without overlaps (a known format wins over context, context
/// over entropy). Time is linear in the text (each pattern is one pass; `tests/hostile_input.rs` and
/// `benches/hostile.rs` feed it texts made of near-matches).
pub fn scan(text: &str) -> Vec<Finding> {
    let mut found = Found::default();
    for (start, end) in private_keys(text) {
        found.add(SecretKind::PrivateKey, start, end, &text[start..end]);
    }
    for p in PATTERNS.iter() {
        for caps in p.regex.captures_iter(text) {
            let Some(m) = caps.get(p.group) else { continue };
            if found.overlaps(m.start(), m.end()) {
                continue;
            }
            if matches!(
                p.kind,
                SecretKind::AssignedSecret | SecretKind::UrlCredentials
            ) && is_placeholder(m.as_str())
            {
                continue;
            }
            found.add(p.kind, m.start(), m.end(), m.as_str());
        }
    }
    // Where the run of text before each token starts, found by one forward pass over the text
    // (tokens come in order), not by looking back from every token: a text without delimiters would
    // make that quadratic.
    let (mut scanned, mut chunk_start, mut has_scheme) = (0, 0, false);
    for m in TOKEN.find_iter(text) {
        let from = match text[scanned..m.start()].rfind(is_chunk_delimiter) {
            Some(i) => {
                let delimiter = scanned + i;
                chunk_start =
                    delimiter + text[delimiter..].chars().next().map_or(1, char::len_utf8);
                has_scheme = false;
                chunk_start
            }
            // `://` may straddle where the last pass stopped.
            None => floor_char_boundary(text, scanned.saturating_sub(2)).max(chunk_start),
        };
        has_scheme = has_scheme || text[from..m.start()].contains("://");
        scanned = m.start();
        if found.overlaps(m.start(), m.end()) {
            continue;
        }
        if looks_random(m.as_str(), text, m.start(), chunk_start, has_scheme) {
            found.add(SecretKind::HighEntropy, m.start(), m.end(), m.as_str());
        }
    }
    found.0.into_values().collect()
}

/// `text` with every credential replaced by `[REDACTED:<kind>]`. Borrowed when nothing was found.
pub fn redact(text: &str) -> Cow<'_, str> {
    let found = scan(text);
    if found.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in &found {
        out.push_str(&text[at..f.start]);
        out.push_str("[REDACTED:");
        out.push_str(f.kind.as_str());
        out.push(']');
        at = f.end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// Where a credential found in pasted text could be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    pub finding: Finding,
    /// 1-based line and column (in characters) of the credential in the text.
    pub line: usize,
    pub column: usize,
    pub path: SecretPath,
}

impl SecretKind {
    /// The secret's name inside a project folder: the vendor is kept in the name there
    /// (`project/p/cloudflare_api_token`) since the folder no longer says it.
    fn project_name(self) -> String {
        let (vendor, name) = (self.vendor(), self.suggested_name());
        if name.starts_with(vendor) || matches!(vendor, "keys" | "tokens" | "misc" | "database") {
            name.to_string()
        } else {
            format!("{vendor}_{name}")
        }
    }
}

/// Finds the credentials in `text` and suggests a vault path for each: `meta/<vendor>/<name>`, or
/// `project/<project>/<name>` when a project is given. Names repeat with a suffix (`_2`, `_3`).
pub fn suggest(text: &str, project: Option<&str>) -> Result<Vec<Suggestion>, PathError> {
    if let Some(p) = project {
        SecretPath::parse(&format!("project/{p}/x"))?;
    }
    let lines = LineIndex::new(text);
    let mut used: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for finding in scan(text) {
        let base = match project {
            Some(p) => format!("project/{p}/{}", finding.kind.project_name()),
            None => format!(
                "meta/{}/{}",
                finding.kind.vendor(),
                finding.kind.suggested_name()
            ),
        };
        let n = used.entry(base.clone()).or_insert(0);
        *n += 1;
        let path = if *n == 1 { base } else { format!("{base}_{n}") };
        let (line, column) = lines.position(text, finding.start);
        out.push(Suggestion {
            path: SecretPath::parse(&path)?,
            finding,
            line,
            column,
        });
    }
    Ok(out)
}

/// Byte offset → 1-based line and column (in characters).
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    pub fn position(&self, text: &str, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let column = text.get(start..offset).map_or(1, |s| s.chars().count() + 1);
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<SecretKind> {
        scan(text).into_iter().map(|f| f.kind).collect()
    }

    #[test]
    fn known_formats() {
        let anthropic = format!("sk-ant-api03-{}AA", "a1B2c3D4e5".repeat(9) + "xyz");
        assert_eq!(
            kinds(&format!("key: {anthropic}")),
            vec![SecretKind::AnthropicApiKey]
        );
        assert_eq!(
            kinds(&format!(
                "OPENAI=sk-proj-{}",
                "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z".repeat(3)
            )),
            vec![SecretKind::OpenaiApiKey]
        );
        assert_eq!(
            kinds("ghp_1234567890abcdefghijABCDEFGHIJ123456"),
            vec![SecretKind::GithubToken]
        );
        assert_eq!(
            kinds("id AKIAIOSFODNN7EXAMPLE here"),
            vec![SecretKind::AwsAccessKeyId]
        );
        assert_eq!(
            kinds("AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
            vec![SecretKind::GoogleApiKey]
        );
        assert_eq!(
            kinds("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"),
            vec![SecretKind::PrivateKey]
        );
        assert_eq!(
            kinds("postgres://app:s3cr3tP4ss@db:5432/app"),
            vec![SecretKind::UrlCredentials]
        );
    }

    #[test]
    fn lookalikes_are_not_secrets() {
        assert!(scan("id 123e4567-e89b-12d3-a456-426614174000").is_empty());
        assert!(scan("commit da39a3ee5e6b4b0d3255bfef95601890afd80709").is_empty());
        assert!(scan("api_token: secret:meta/cloudflare/api_token").is_empty());
        assert!(scan("password = \"changeme\"").is_empty());
        assert!(scan("see /usr/share/doc/supervisor/examples/systemd/serve.service").is_empty());
        assert!(scan("postgres://postgres@127.0.0.1:5432/postgres").is_empty());
    }

    #[test]
    fn redact_replaces_only_the_value() {
        let line = "connecting to postgres://app:hunter2hunter2@db/app now";
        assert_eq!(
            redact(line),
            "connecting to postgres://app:[REDACTED:url_credentials]@db/app now"
        );
        assert!(matches!(redact("nothing to hide"), Cow::Borrowed(_)));
    }

    #[test]
    fn suggestions_name_a_vault_path_per_credential() {
        let text = "first ghp_1234567890abcdefghijABCDEFGHIJ123456\n  and ghp_abcdefghij1234567890ABCDEFGHIJ654321 then\nAKIAIOSFODNN7EXAMPLE";
        let paths: Vec<(String, usize, usize)> = suggest(text, None)
            .unwrap()
            .into_iter()
            .map(|s| (s.path.to_string(), s.line, s.column))
            .collect();
        assert_eq!(
            paths,
            [
                ("meta/github/github_token".to_string(), 1, 7),
                ("meta/github/github_token_2".to_string(), 2, 7),
                ("meta/aws/aws_access_key_id".to_string(), 3, 1),
            ]
        );
        let in_project: Vec<String> = suggest(
            "CLOUDFLARE_API_TOKEN=abcdefghijklmnopqrstuvwxyz0123456789ABCD",
            Some("shop"),
        )
        .unwrap()
        .into_iter()
        .map(|s| s.path.to_string())
        .collect();
        assert_eq!(in_project, ["project/shop/cloudflare_api_token"]);
        assert!(suggest("x", Some("Bad Name")).is_err());
    }

    #[test]
    fn a_token_after_wide_whitespace_does_not_panic() {
        // Found by tests/hostile_input.rs: the URL check looked for the run of text before a token
        // from one byte after the last whitespace — inside U+3000 (three bytes), which panicked
        // slicing the text (and `redact` runs on every log line).
        let token = "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF";
        for space in ["\u{3000}", "\u{a0}", "\u{2028}", " "] {
            let text = format!("key{space}{token} https://x.example/a{space}{token}");
            let found = scan(&text);
            assert_eq!(found.len(), 2, "{text:?}");
            assert!(
                found
                    .iter()
                    .all(|f| f.kind == SecretKind::HighEntropy && &text[f.start..f.end] == token)
            );
        }
    }

    #[test]
    fn texts_made_of_near_matches() {
        // Headers without footers used to make the private-key regex scan to the end of the text
        // for each of them; a text without whitespace made every token look back to its start
        // (quadratic: 64 KB of either took seconds). The time on 1 MB of each is measured by
        // benches/hostile.rs; here, what is found.
        let headers = "-----BEGIN PRIVATE KEY-----\n".repeat(4_000);
        let found = scan(&headers);
        assert_eq!(found.len(), 4_000);
        assert!(found.iter().all(|f| f.kind == SecretKind::PrivateKey));
        let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----BEGIN X-----\n-----END RSA PRIVATE KEY-----";
        assert_eq!(
            redact(&format!("a {key} b {key}")),
            "a [REDACTED:private_key] b [REDACTED:private_key]"
        );
        let tokens = "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF,".repeat(4_000);
        assert_eq!(scan(&tokens).len(), 4_000);
    }

    #[test]
    fn masked_values_do_not_reveal_the_secret() {
        let f = &scan("ghp_1234567890abcdefghijABCDEFGHIJ123456")[0];
        assert_eq!(f.masked(), "ghp_…(40 chars)");
    }
}
