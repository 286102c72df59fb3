//! The JSONL formats read by `timing import` and `timing estimate --batch`: one JSON object per line,
//! blank lines ignored, unknown fields refused (a misspelt field must not silently do nothing). A file
//! is parsed completely before anything happens: the first bad line is an error naming its line number
//! and nothing of the file is used.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{Result, TimingError};
use crate::store::timing::ImportedTask;

/// One line of `timing import`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryLine {
    task_id: String,
    description: String,
    task_type: String,
    project: String,
    duration_seconds: f64,
    #[serde(default)]
    started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    estimated_seconds: Option<f64>,
    #[serde(default)]
    success: Option<bool>,
}

/// One line of `timing estimate --batch`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstimateLine {
    pub task_id: String,
    pub description: String,
    pub task_type: String,
    pub project: String,
    #[serde(default)]
    pub agent_estimate_seconds: Option<f64>,
}

/// The text of a JSONL file read as bytes: bytes that are not UTF-8 are an error naming the file, the
/// line and the column where they start (`outcome` says what happened to the rest of the file).
pub fn utf8_text(file: &str, bytes: Vec<u8>, outcome: &'static str) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        line_error(file, line, outcome)(format!(
            "the line is not UTF-8 text (column {column}); JSONL is UTF-8"
        ))
    })
}

/// What an import of a history file that fails did: nothing.
pub const NOTHING_IMPORTED: &str = "nothing was imported";
/// What an estimate batch that fails did: nothing.
pub const NOTHING_ESTIMATED: &str = "nothing was estimated";

/// The lines of a JSONL text with their 1-based numbers, blank ones skipped.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
}

/// serde_json's message without its "at line 1 column N" (the position is within the line).
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    format!("{message} (column {})", e.column())
}

fn line_error(file: &str, line: usize, outcome: &'static str) -> impl Fn(String) -> TimingError {
    move |message| TimingError::Line {
        file: file.to_string(),
        line,
        message,
        outcome,
    }
}

/// Parses and checks a history file. Tasks without times end `now` (or at `started_at + duration`);
/// `success` defaults to true. Times that disagree with `duration_seconds` by more than a second (or
/// 1 %), a task id used twice, or any invalid field fail the whole file.
pub fn parse_history(file: &str, text: &str, now: DateTime<Utc>) -> Result<Vec<ImportedTask>> {
    const OUTCOME: &str = NOTHING_IMPORTED;
    let mut tasks = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (n, raw) in lines(text) {
        let err = line_error(file, n, OUTCOME);
        let l: HistoryLine = serde_json::from_str(raw).map_err(|e| err(json_message(&e)))?;
        let checked = (|| -> Result<ImportedTask> {
            let id = super::identifier("task_id", &l.task_id)?;
            let actual = super::seconds("duration_seconds", l.duration_seconds)?;
            let estimated = l
                .estimated_seconds
                .map(|e| super::seconds("estimated_seconds", e))
                .transpose()?;
            let span = chrono::Duration::microseconds((actual * 1e6).round() as i64);
            let (started_at, completed_at) = match (l.started_at, l.completed_at) {
                (Some(s), Some(c)) => {
                    let between = (c - s).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
                    if (between - actual).abs() > f64::max(1.0, actual / 100.0) {
                        return Err(TimingError::Invalid {
                            field: "duration_seconds",
                            message: format!(
                                "{actual} s, but completed_at - started_at is {between} s"
                            ),
                        });
                    }
                    (s, c)
                }
                (Some(s), None) => (s, s + span),
                (None, Some(c)) => (c - span, c),
                (None, None) => (now - span, now),
            };
            Ok(ImportedTask {
                id,
                project: super::project_name(&l.project)?,
                task_type: super::task_type(&l.task_type)?,
                description: super::description(&l.description)?,
                actual_seconds: actual,
                started_at,
                completed_at,
                estimated_seconds: estimated,
                success: l.success.unwrap_or(true),
            })
        })()
        .map_err(|e| err(e.to_string()))?;
        if let Some(first) = seen.insert(checked.id.clone(), n) {
            return Err(err(format!(
                "task_id `{}` is also on line {first}",
                checked.id
            )));
        }
        tasks.push(checked);
    }
    Ok(tasks)
}

/// Parses a batch of estimate requests (each line checked when it is estimated).
pub fn parse_estimate_batch(file: &str, text: &str) -> Result<Vec<(usize, EstimateLine)>> {
    lines(text)
        .map(|(n, raw)| {
            serde_json::from_str(raw)
                .map(|l| (n, l))
                .map_err(|e| line_error(file, n, NOTHING_ESTIMATED)(json_message(&e)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn history_lines_fill_in_times_and_defaults() {
        let text = r#"
{"task_id": "A-1", "description": "Fix login", "task_type": "Bug", "project": "shop", "duration_seconds": 3600}

{"task_id": "A-2", "description": "Add cart", "task_type": "feature", "project": "shop", "duration_seconds": 60, "started_at": "2026-10-01T10:00:00Z", "estimated_seconds": 30, "success": false}
{"task_id": "A-3", "description": "Docs", "task_type": "docs", "project": "shop", "duration_seconds": 120, "started_at": "2026-10-01T10:00:00Z", "completed_at": "2026-10-01T10:02:00.5Z"}
"#;
        let t = parse_history("h.jsonl", text, now()).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].task_type, "bug");
        assert_eq!(t[0].completed_at, now());
        assert_eq!(t[0].started_at, now() - chrono::Duration::hours(1));
        assert!(t[0].success);
        assert_eq!(
            t[1].completed_at,
            Utc.with_ymd_and_hms(2026, 10, 1, 10, 1, 0).unwrap()
        );
        assert_eq!((t[1].estimated_seconds, t[1].success), (Some(30.0), false));
        assert_eq!(t[2].actual_seconds, 120.0);
    }

    #[test]
    fn a_bad_line_names_its_number() {
        let ok = r#"{"task_id": "A-1", "description": "d", "task_type": "t", "project": "shop", "duration_seconds": 1}"#;
        let cases = [
            (
                "{not json",
                "h.jsonl:2: key must be a string (column 2); nothing was imported",
            ),
            (
                r#"{"task_id": "A-2", "description": "d", "task_type": "t", "project": "shop", "duration_seconds": -4}"#,
                "h.jsonl:2: invalid duration_seconds: -4 is not a positive number of seconds; nothing was imported",
            ),
            (
                r#"{"task_id": "A-2", "description": "d", "task_type": "t", "project": "shop", "duration": 4}"#,
                "h.jsonl:2: unknown field `duration`",
            ),
            (
                r#"{"task_id": "A-1", "description": "d", "task_type": "t", "project": "shop", "duration_seconds": 1}"#,
                "h.jsonl:2: task_id `A-1` is also on line 1; nothing was imported",
            ),
            (
                r#"{"task_id": "A-2", "description": "d", "task_type": "t", "project": "Shop!", "duration_seconds": 1}"#,
                "h.jsonl:2: invalid project: `Shop!` is not a project name",
            ),
            (
                r#"{"task_id": "A-2", "description": "d", "task_type": "t", "project": "shop", "duration_seconds": 10, "started_at": "2026-10-01T10:00:00Z", "completed_at": "2026-10-01T11:00:00Z"}"#,
                "h.jsonl:2: invalid duration_seconds: 10 s, but completed_at - started_at is 3600 s",
            ),
            (
                r#"{"task_id": "A-2", "description": " ", "task_type": "t", "project": "shop", "duration_seconds": 1}"#,
                "h.jsonl:2: invalid description: it is empty",
            ),
        ];
        for (line, want) in cases {
            let err = parse_history("h.jsonl", &format!("{ok}\n{line}\n"), now())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(want), "{err}\n  wanted: {want}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_name_their_line() {
        let ok = r#"{"task_id": "A-1", "description": "d", "task_type": "t", "project": "shop", "duration_seconds": 1}"#;
        let mut bytes = format!("{ok}\n\n{{\"task_id\": \"A-").into_bytes();
        bytes.extend([0xc3, b'"']);
        let err = utf8_text("h.jsonl", bytes, NOTHING_IMPORTED)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "h.jsonl:3: the line is not UTF-8 text (column 16); JSONL is UTF-8; nothing was imported"
        );
        assert_eq!(
            utf8_text("h.jsonl", ok.as_bytes().to_vec(), NOTHING_IMPORTED).unwrap(),
            ok
        );
    }

    #[test]
    fn estimate_batches_parse_with_line_numbers() {
        let text = "{\"task_id\": \"x\", \"description\": \"d\", \"task_type\": \"t\", \"project\": \"p\", \"agent_estimate_seconds\": 60}\n\n{\"task_id\": 1}\n";
        let err = parse_estimate_batch("b.jsonl", text)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("b.jsonl:3: invalid type: integer `1`"),
            "{err}"
        );
        let ok = parse_estimate_batch("b.jsonl", &text[..text.find('\n').unwrap()]).unwrap();
        assert_eq!(ok[0].0, 1);
        assert_eq!(ok[0].1.agent_estimate_seconds, Some(60.0));
    }
}
