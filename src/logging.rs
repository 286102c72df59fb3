//! Logging: `tracing` to stderr, human or JSON, with every formatted line passed through the credential
//! detector before it is written — so a secret that reaches a log statement by mistake (a header, a URL,
//! an error from a library) is masked rather than leaked.
//!
//! Level: `LOG_LEVEL` (a level or full filter directives, e.g. `supervisor=debug,sqlx=warn`), else `warn`
//! raised by each `-v` (info, debug, trace) and lowered by `-q`. Format: `LOG_FORMAT=json` or `human`.

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

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

/// Installs the global subscriber. Safe to call once per process; later calls are ignored.
pub fn init(verbosity: i8, format: LogFormat) {
    init_with_writer(verbosity, format, RedactingStderr);
}

/// Installs the global subscriber writing through `writer` (redacted). Used by tests to capture logs.
pub fn init_with_writer<W>(verbosity: i8, format: LogFormat, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(verbosity))
        .with_writer(writer)
        .with_target(true);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.with_ansi(false).try_init(),
    };
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
    fn redacting_writer_masks_credentials() {
        let mut out = Redacting(Vec::new());
        out.write_all(b"token ghp_1234567890abcdefghijABCDEFGHIJ123456 sent\n")
            .unwrap();
        let written = String::from_utf8(out.0).unwrap();
        assert_eq!(written, "token [REDACTED:github_token] sent\n");
    }
}
