//! Task timing and estimation: timers that are database rows, running statistics of durations, and an
//! estimator whose accuracy and interval coverage are measured on real data
//! (`examples/eval_estimation.rs`, figures in `docs/benchmarks.md`).
//!
//! * [`stats`] — log-space running statistics (Welford updates, Chan merges) and the t quantile: what
//!   `task_type_stats` keeps and why.
//! * [`estimate`] — the estimator as pure math (fallback levels with shrinkage, similar tasks,
//!   calibration of a caller's own estimate), unit- and property-tested with plain values.
//! * [`history`] — the JSONL formats of `timing import` and `timing estimate --batch`, parsed all or
//!   nothing with line numbers.
//! * [`service`] — [`Timing`]: the library calls the CLI and the MCP tools share (start, complete,
//!   estimate, stats, list, import, parallel groups), reading and writing through the store.
//!
//! Guarantees:
//! * A timer is a row from the moment it starts: a restart loses nothing. A timer never completed is
//!   reported as *abandoned* once older than a configurable age ([`DEFAULT_ABANDONED_AFTER`]) and is
//!   never dropped; it can still be completed.
//! * Completing is all or nothing: an unknown or already completed task, a task outside the caller's
//!   [`Scope`], a negative or absurd duration ([`MAX_DURATION_SECONDS`]) or any invalid field is an
//!   error that names it, and nothing is written. The statistics are merged in the completion's own
//!   transaction, so they always equal the completed rows.
//! * An import is one transaction and idempotent on `task_id`; a bad line names its line number and
//!   nothing of the file is imported.
//! * A [`Scope::Project`] caller (a project's MCP endpoint) reads and writes only that project's timers,
//!   groups and statistics, and sees no other project's task in `similar_tasks`; the fallback levels
//!   of an estimate (a type across projects, all tasks) are aggregates and reveal no task.
//! * Durations are seconds, positive and finite, everywhere.

pub mod estimate;
pub mod history;
pub mod service;
pub mod stats;

use std::time::Duration;

pub use service::Timing;

use crate::store::StoreError;

/// Longest duration accepted for a task (90 days): anything longer is a clock or unit mistake.
pub const MAX_DURATION_SECONDS: f64 = 90.0 * 86_400.0;
/// Default age after which a running timer is reported as abandoned.
pub const DEFAULT_ABANDONED_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How many similar tasks an estimate lists.
pub const SIMILAR_SHOWN: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum TimingError {
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("there is no task `{id}`{}", in_scope(scope))]
    UnknownTask { id: String, scope: Option<String> },
    #[error("task `{id}` is already {status} (at {completed_at}); a task is completed once")]
    AlreadyCompleted {
        id: String,
        status: String,
        completed_at: String,
    },
    #[error(
        "the timer of task `{id}` ran {seconds:.0} s, which is not a plausible duration ({why}); pass the real working time as duration_seconds"
    )]
    ImplausibleDuration {
        id: String,
        seconds: f64,
        why: &'static str,
    },
    #[error(
        "no completed tasks to estimate from yet: complete some timers or import history with `supervisor timing import`"
    )]
    NoHistory,
    #[error("there is no parallel group `{id}`{}", in_scope(scope))]
    UnknownGroup { id: String, scope: Option<String> },
    #[error("parallel group `{id}` is already completed")]
    GroupAlreadyCompleted { id: String },
    #[error("parallel group `{id}` cannot complete yet: {why}")]
    GroupNotDone { id: String, why: String },
    #[error("{file}:{line}: {message}; {outcome}")]
    Line {
        file: String,
        line: usize,
        message: String,
        /// What happened to the rest of the file ("nothing was imported").
        outcome: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn in_scope(scope: &Option<String>) -> String {
    match scope {
        Some(p) => format!(" in project `{p}`"),
        None => String::new(),
    }
}

pub type Result<T, E = TimingError> = std::result::Result<T, E>;

/// Whose timers a caller may see and write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The CLI and the meta endpoint.
    All,
    /// A project's MCP endpoint.
    Project(String),
}

impl Scope {
    pub fn project(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Project(p) => Some(p),
        }
    }

    pub fn allows(&self, project: Option<&str>) -> bool {
        match self {
            Scope::All => true,
            Scope::Project(p) => project == Some(p.as_str()),
        }
    }

    /// The project a call is about: the given one (checked), or the scope's own.
    pub fn resolve(&self, given: Option<&str>) -> Result<String> {
        match (self, given) {
            (Scope::Project(p), None) => Ok(p.clone()),
            (Scope::Project(p), Some(g)) if g == p => Ok(g.to_string()),
            (Scope::Project(p), Some(g)) => Err(invalid(
                "project",
                format!(
                    "this endpoint serves project `{p}` only; project `{g}` is not visible here"
                ),
            )),
            (Scope::All, Some(g)) => project_name(g),
            (Scope::All, None) => Err(invalid(
                "project",
                "name the project (every project is visible here, so none is implied)".into(),
            )),
        }
    }
}

fn invalid(field: &'static str, message: String) -> TimingError {
    TimingError::Invalid { field, message }
}

/// A project name as in state files (history may name projects that no longer exist in `state/`).
pub fn project_name(name: &str) -> Result<String> {
    if crate::state::is_valid_name(name) {
        Ok(name.to_string())
    } else {
        Err(invalid(
            "project",
            format!(
                "`{name}` is not a project name ({})",
                crate::state::NAME_HINT
            ),
        ))
    }
}

/// A task or group id: 1–200 printable characters without whitespace.
pub fn identifier(field: &'static str, id: &str) -> Result<String> {
    if id.is_empty() || id.chars().count() > 200 {
        return Err(invalid(field, "it must have 1 to 200 characters".into()));
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            field,
            format!(
                "`{}` contains whitespace or control characters",
                id.escape_debug()
            ),
        ));
    }
    Ok(id.to_string())
}

/// A task type: trimmed, lower-cased (types are case-insensitive), 1–100 characters.
pub fn task_type(t: &str) -> Result<String> {
    let t = t.trim().to_lowercase();
    if t.is_empty() || t.chars().count() > 100 || t.chars().any(char::is_control) {
        return Err(invalid(
            "task_type",
            "it must have 1 to 100 characters and no control characters".into(),
        ));
    }
    Ok(t)
}

/// A description: not blank, at most 100,000 characters (history holds long bug reports), no NUL.
pub fn description(d: &str) -> Result<String> {
    if d.trim().is_empty() {
        return Err(invalid("description", "it is empty".into()));
    }
    if d.contains('\0') {
        return Err(invalid("description", crate::store::NUL_IN_TEXT.into()));
    }
    if d.chars().count() > 100_000 {
        return Err(invalid(
            "description",
            "it is longer than 100,000 characters".into(),
        ));
    }
    Ok(d.to_string())
}

/// Free text (error messages, summaries, agent names): at most `max` characters, no NUL.
pub fn text(field: &'static str, t: Option<String>, max: usize) -> Result<Option<String>> {
    match t {
        Some(t) if t.chars().count() > max => Err(invalid(
            field,
            format!("it is longer than {max} characters"),
        )),
        Some(t) if t.contains('\0') => Err(invalid(field, crate::store::NUL_IN_TEXT.into())),
        other => Ok(other.filter(|t| !t.trim().is_empty())),
    }
}

/// A duration in seconds: finite, positive, at most [`MAX_DURATION_SECONDS`].
pub fn seconds(field: &'static str, s: f64) -> Result<f64> {
    if !s.is_finite() || s <= 0.0 {
        return Err(invalid(
            field,
            format!("{s} is not a positive number of seconds"),
        ));
    }
    if s > MAX_DURATION_SECONDS {
        return Err(invalid(
            field,
            format!("{s} s is more than 90 days; durations are in seconds"),
        ));
    }
    Ok(s)
}

/// A count (lines, files, tests, tokens, retries): not negative.
pub fn count(field: &'static str, n: Option<i64>) -> Result<Option<i64>> {
    match n {
        Some(n) if n < 0 => Err(invalid(field, format!("{n} is negative"))),
        other => Ok(other),
    }
}

/// How a task went in the specification's words.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Complexity {
    Simple,
    Medium,
    Complex,
}

impl Complexity {
    pub fn as_str(self) -> &'static str {
        match self {
            Complexity::Simple => "simple",
            Complexity::Medium => "medium",
            Complexity::Complex => "complex",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_lowercase().as_str() {
            "simple" => Ok(Complexity::Simple),
            "medium" => Ok(Complexity::Medium),
            "complex" => Ok(Complexity::Complex),
            other => Err(invalid(
                "complexity",
                format!("`{other}` is not one of simple, medium, complex"),
            )),
        }
    }
}

/// Parses a human duration: `90`, `90s`, `15m`, `2h`, `1d`, `1h30m`, `1.5h` (no unit = seconds).
pub fn parse_duration(text: &str) -> Result<f64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(s) = t.parse::<f64>() {
        return Ok(s);
    }
    let mut total = 0.0;
    let mut number = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86_400.0,
            _ => return Err(format!("`{t}`: unknown unit `{c}` (use s, m, h or d)")),
        };
        let n: f64 = number
            .parse()
            .map_err(|_| format!("`{t}`: a number must come before `{c}`"))?;
        total += n * unit;
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!("`{t}`: `{number}` has no unit"));
    }
    Ok(total)
}

/// A duration for people: `45 s`, `12 min`, `1 h 20 min`, `2 d 3 h` (two units at most, rounded).
pub fn human_duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "∞".into();
    }
    if seconds < 60.0 {
        return format!("{} s", format_significant(seconds));
    }
    let minutes = (seconds / 60.0).round() as u64;
    let (d, h, m) = (minutes / 1440, (minutes / 60) % 24, minutes % 60);
    match (d, h, m) {
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, 0, _) => format!("{d} d"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

fn format_significant(s: f64) -> String {
    if s >= 10.0 {
        format!("{s:.0}")
    } else if s >= 1.0 {
        format!("{s:.1}")
    } else {
        format!("{s:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_for_people() {
        assert_eq!(human_duration(0.5), "0.50 s");
        assert_eq!(human_duration(45.2), "45 s");
        assert_eq!(human_duration(720.0), "12 min");
        assert_eq!(human_duration(3600.0), "1 h");
        assert_eq!(human_duration(4800.0), "1 h 20 min");
        assert_eq!(
            human_duration(86_400.0 * 2.0 + 3.0 * 3600.0 + 59.0),
            "2 d 3 h"
        );
        assert_eq!(human_duration(86_400.0), "1 d");
        assert_eq!(human_duration(f64::INFINITY), "∞");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90"), Ok(90.0));
        assert_eq!(parse_duration("2.5"), Ok(2.5));
        assert_eq!(parse_duration("15m"), Ok(900.0));
        assert_eq!(parse_duration("1h30m"), Ok(5400.0));
        assert_eq!(parse_duration("1.5h"), Ok(5400.0));
        assert_eq!(parse_duration("2d"), Ok(172_800.0));
        assert!(
            parse_duration("5x")
                .unwrap_err()
                .contains("unknown unit `x`")
        );
        assert!(parse_duration("1h30").unwrap_err().contains("has no unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn inputs_are_checked() {
        assert_eq!(seconds("d", 1.5).unwrap(), 1.5);
        for bad in [
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            MAX_DURATION_SECONDS * 2.0,
        ] {
            assert!(seconds("duration_seconds", bad).is_err(), "{bad}");
        }
        assert!(
            seconds("duration_seconds", -3.0)
                .unwrap_err()
                .to_string()
                .starts_with("invalid duration_seconds: -3")
        );
        assert_eq!(task_type("  Feature ").unwrap(), "feature");
        assert!(task_type("  ").is_err());
        assert!(identifier("task_id", "a b").is_err());
        assert!(identifier("task_id", "").is_err());
        assert_eq!(identifier("task_id", "MESOS-313").unwrap(), "MESOS-313");
        assert!(description(" \n").is_err());
        assert_eq!(
            description("fix\0it").unwrap_err().to_string(),
            "invalid description: it contains a NUL character (\\u0000), which text cannot hold"
        );
        assert!(text("agent_model", Some("opus\0".into()), 200).is_err());
        assert!(project_name("Shop").is_err());
        assert_eq!(project_name("shop").unwrap(), "shop");
        assert!(count("lines_changed", Some(-1)).is_err());
        assert_eq!(text("error_message", Some("  ".into()), 10).unwrap(), None);
        assert!(text("error_message", Some("x".repeat(11)), 10).is_err());
        assert_eq!(Complexity::parse("Complex").unwrap(), Complexity::Complex);
        assert!(Complexity::parse("hard").is_err());
    }

    #[test]
    fn scopes_confine_projects() {
        let p = Scope::Project("shop".into());
        assert_eq!(p.resolve(None).unwrap(), "shop");
        assert_eq!(p.resolve(Some("shop")).unwrap(), "shop");
        assert!(
            p.resolve(Some("blog"))
                .unwrap_err()
                .to_string()
                .contains("serves project `shop` only")
        );
        assert!(Scope::All.resolve(None).is_err());
        assert!(Scope::All.resolve(Some("Bad Name")).is_err());
        assert!(p.allows(Some("shop")) && !p.allows(Some("blog")) && !p.allows(None));
        assert!(Scope::All.allows(None));
    }
}
