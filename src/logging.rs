//! Logging: `tracing` to stderr, human or JSON, with every formatted line passed through the credential
//! detector before it is written — so a secret that reaches a log statement by mistake (a header, a URL,
//! an error from a library) is masked rather than leaked.
//!
//! Level: `LOG_LEVEL` (a level or full filter directives, e.g. `supervisor=debug,sqlx=warn`), else `warn`
//! raised by each `-v` (info, debug, trace) and lowered by `-q`. Format: `LOG_FORMAT=json` or `human`.
//!
//! **No payload reaches a log, whatever the level.** Some libraries log whole messages: rmcp logs every
//! JSON-RPC request and response (tool arguments such as `set_secret`'s value, results such as
//! `get_secret`'s) at debug, and parameter errors that quote the offending value at warn; sqlx logs an
//! unrecognised connection parameter with its value (`sslpassword=…`) at warn; axum logs rejection bodies
//! at trace. The detector cannot help there: an ordinary value ("correct horse battery staple") looks
//! like nothing. So those targets are capped ([`PAYLOAD_CAPS`]) by a second filter that is combined with
//! the user's directives (both must allow an event), so `LOG_LEVEL=trace` or `rmcp=trace` cannot lift the
//! cap. What the capped logs said usefully is logged by the supervisor itself without payloads: every MCP
//! tool call (tool, outcome, duration) at info. Checked and left alone: h2 (its frame `Debug` leaves out
//! header fields and data), hyper (its tracing is compiled out), reqwest and rustls (they log through the
//! `log` crate, which is not bridged), sqlx's statement logging (SQL text only; values are bound, and
//! secrets reach the database encrypted).

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::secrets::detector;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

impl LogFormat {
    pub fn from_env() -> Self {
        match std::env::var("LOG_FORMAT").as_deref() {
            Ok("json") => LogFormat::Json,
            _ => LogFormat::Human,
        }
    }
}

fn level_for(verbosity: i8) -> &'static str {
    match verbosity {
        i8::MIN..=-1 => "error",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// The filter: `LOG_LEVEL` when set, else the level chosen by `-v`/`-q`.
pub fn filter(verbosity: i8) -> EnvFilter {
    let directives = std::env::var("LOG_LEVEL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| level_for(verbosity).to_string());
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new(level_for(verbosity)))
}

/// Targets whose events can carry request or response payloads (secret values among them), and the most
/// they may log. Prefixes: `rmcp` covers every module of the crate.
pub const PAYLOAD_CAPS: &[(&str, LevelFilter)] = &[
    // Requests and responses at debug/trace; parameter errors quoting values at warn ("response
    // error"). Its error-level events carry I/O and session errors only.
    ("rmcp", LevelFilter::ERROR),
    // Rejection bodies (serde messages that can quote the input) at trace.
    ("axum::rejection", LevelFilter::OFF),
    // "ignoring unrecognized connect parameter" with the parameter's value (e.g. sslpassword) at warn.
    ("sqlx_postgres::options", LevelFilter::ERROR),
];

/// The cap on payload-carrying targets; everything else is left to the user's filter.
pub fn payload_cap() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(PAYLOAD_CAPS.iter().copied())
}

/// Installs the global subscriber. Safe to call once per process; later calls are ignored.
pub fn init(verbosity: i8, format: LogFormat) {
    init_with_writer(verbosity, format, RedactingStderr);
}

/// Installs the global subscriber writing through `writer` (redacted). Used by tests to capture logs.
pub fn init_with_writer<W>(verbosity: i8, format: LogFormat, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(true);
    let layer: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Human => fmt.with_ansi(false).boxed(),
    };
    // Both filters must allow an event: the user's directives cannot lift the payload cap.
    let filtered = layer.with_filter(filter(verbosity).and(payload_cap()));
    let _ = tracing_subscriber::registry().with(filtered).try_init();
}

/// Writes each formatted event to stderr after redaction. The fmt layer formats a whole event into one
/// buffer and writes it with one call, so a credential is never split across writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactingStderr;

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = Redacting<io::Stderr>;
    fn make_writer(&'a self) -> Self::Writer {
        Redacting(io::stderr())
    }
}

/// An `io::Write` that masks credentials in what passes through it.
pub struct Redacting<W: Write>(pub W);

impl<W: Write> Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(detector::redact(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_targets_stay_capped_whatever_the_directives() {
        use tracing::Level;
        let cap = payload_cap();
        let allows = |target: &str, level: Level| cap.would_enable(target, &level);
        assert!(!allows("rmcp::service", Level::DEBUG));
        assert!(!allows("rmcp::service", Level::WARN));
        assert!(allows("rmcp::service", Level::ERROR));
        assert!(!allows("axum::rejection", Level::ERROR));
        assert!(!allows("sqlx_postgres::options::parse", Level::WARN));
        assert!(allows("sqlx::query", Level::TRACE));
        assert!(allows("supervisor::serve", Level::TRACE));
    }

    #[test]
    fn redacting_writer_masks_credentials() {
        let mut out = Redacting(Vec::new());
        out.write_all(b"token ghp_1234567890abcdefghijABCDEFGHIJ123456 sent\n")
            .unwrap();
        let written = String::from_utf8(out.0).unwrap();
        assert_eq!(written, "token [REDACTED:github_token] sent\n");
    }
}
