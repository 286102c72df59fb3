//! Errors in state files, located at `file:line:col`, with a hint. All of a run's errors are collected
//! and reported together.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Whether a diagnostic stops loading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The state is invalid; nothing is loaded.
    #[default]
    Error,
    /// Loading goes on (a deprecated key that is still understood).
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    /// 1-based; 0 when the problem concerns the whole file.
    pub line: u64,
    pub column: u64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The offending source line (or an excerpt of a long one), for display.
    #[serde(skip)]
    pub source_line: Option<String>,
    /// Where the caret goes under `source_line` (1-based), when it is an excerpt; else `column`.
    #[serde(skip)]
    caret: Option<u64>,
}

/// The most characters of a message or hint kept (a message quoting a 90 KB value is cut).
const MESSAGE_MAX: usize = 300;
/// The most characters of the offending source line shown, around the column.
const SOURCE_MAX: usize = 120;

/// `text` cut to `max` characters, with `…` where it was cut.
fn capped(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

impl Diagnostic {
    pub fn new(file: &Path, at: serde_saphyr::Location, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.to_path_buf(),
            line: at.line(),
            column: at.column(),
            message: capped(message.into(), MESSAGE_MAX),
            hint: None,
            source_line: None,
            caret: None,
        }
    }

    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Diagnostic::new(file, serde_saphyr::Location::UNKNOWN, message)
    }

    pub fn at(file: &Path, line: u64, column: u64, message: impl Into<String>) -> Self {
        Diagnostic {
            line,
            column,
            ..Diagnostic::whole_file(file, message)
        }
    }

    /// The same diagnostic as a warning (it does not stop loading).
    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(capped(hint.into(), MESSAGE_MAX));
        self
    }

    /// Attaches the source line the diagnostic points at (when it has one): at most [`SOURCE_MAX`]
    /// characters of it, around the column (`…` marks what was cut; the caret still points right).
    pub(crate) fn with_source(mut self, source: &str) -> Self {
        if self.line == 0 {
            return self;
        }
        let Some(line) = source.lines().nth(self.line as usize - 1) else {
            return self;
        };
        let chars: Vec<char> = line.chars().collect();
        if chars.len() <= SOURCE_MAX {
            self.source_line = Some(line.to_string());
            return self;
        }
        let col = (self.column.max(1) - 1) as usize;
        let start = col
            .saturating_sub(SOURCE_MAX / 2)
            .min(chars.len() - SOURCE_MAX / 2);
        let end = (start + SOURCE_MAX).min(chars.len());
        let mut shown = String::new();
        if start > 0 {
            shown.push('…');
        }
        shown.extend(&chars[start..end]);
        if end < chars.len() {
            shown.push('…');
        }
        self.caret = Some((col - start + usize::from(start > 0) + 1) as u64);
        self.source_line = Some(shown);
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {label}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )?;
        } else {
            write!(f, "{}: {label}: {}", self.file.display(), self.message)?;
        }
        if let Some(src) = &self.source_line {
            let col = (self.caret.unwrap_or(self.column).max(1) - 1) as usize;
            let pad: String = src
                .chars()
                .take(col)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n    | {src}\n    | {pad}^")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// One or more diagnostics: the error of loading a state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let n = self.0.iter().filter(|d| d.is_error()).count();
        write!(
            f,
            "{n} error{} in the desired state; nothing was changed",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}
