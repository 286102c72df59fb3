//! Rendering to stdout: text for people, JSON (with a `format_version`) for programs. Colour only on a
//! terminal and never when `NO_COLOR` is set.

use std::io::{IsTerminal, Write};

use serde::Serialize;

#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    pub color: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        let color = !json
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Output { json, color }
    }

    /// Prints `value` as pretty JSON followed by a newline. Every JSON document a command prints is an
    /// object carrying `"format_version": "1"` (a string, [`crate::FORMAT_VERSION`]): added here when the
    /// document does not carry it (`docs/json-output.md`).
    pub fn json<T: Serialize>(&self, value: &T) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        write_enveloped(&mut out, value, true)?;
        writeln!(out)
    }

    /// Prints one JSON document on one line (the events of `apply --json`), in the same envelope.
    pub fn json_line<T: Serialize>(&self, value: &T) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        write_enveloped(&mut out, value, false)?;
        writeln!(out)?;
        out.flush()
    }

    /// Prints text as is.
    pub fn text(&self, text: &str) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }

    pub fn paint(&self, text: &str, style: Style) -> String {
        if !self.color {
            return text.to_string();
        }
        let code = match style {
            Style::Green => "32",
            Style::Yellow => "33",
            Style::Red => "31",
            Style::Bold => "1",
            Style::Dim => "2",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Style {
    Green,
    Yellow,
    Red,
    Bold,
    Dim,
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    format_version: &'static str,
    #[serde(flatten)]
    document: &'a T,
}

/// Writes `value` with `format_version` set: as is when it already carries the right one (field order
/// kept), otherwise with `format_version` first.
fn write_enveloped<T: Serialize>(
    out: &mut impl Write,
    value: &T,
    pretty: bool,
) -> std::io::Result<()> {
    let as_value = serde_json::to_value(value)?;
    let write = |out: &mut dyn Write, v: &dyn erased::Ser| -> std::io::Result<()> {
        if pretty {
            v.pretty(out)
        } else {
            v.compact(out)
        }
    };
    match as_value.get("format_version") {
        Some(serde_json::Value::String(v)) if v == crate::FORMAT_VERSION => write(out, &value),
        Some(other) => Err(std::io::Error::other(format!(
            "internal error: a JSON document carries format_version {other} instead of \"{}\"",
            crate::FORMAT_VERSION
        ))),
        None if as_value.is_object() => write(
            out,
            &Envelope {
                format_version: crate::FORMAT_VERSION,
                document: value,
            },
        ),
        None => write(
            out,
            &serde_json::json!({"format_version": crate::FORMAT_VERSION, "value": as_value}),
        ),
    }
}

/// Serialising through a trait object (so one writer serves each shape above).
mod erased {
    use std::io::Write;

    pub trait Ser {
        fn pretty(&self, out: &mut dyn Write) -> std::io::Result<()>;
        fn compact(&self, out: &mut dyn Write) -> std::io::Result<()>;
    }

    impl<T: serde::Serialize> Ser for T {
        fn pretty(&self, out: &mut dyn Write) -> std::io::Result<()> {
            serde_json::to_writer_pretty(out, self).map_err(std::io::Error::from)
        }
        fn compact(&self, out: &mut dyn Write) -> std::io::Result<()> {
            serde_json::to_writer(out, self).map_err(std::io::Error::from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render<T: Serialize>(v: &T) -> String {
        let mut out = Vec::new();
        write_enveloped(&mut out, v, false).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_document_carries_the_same_format_version() {
        #[derive(Serialize)]
        struct Doc {
            b: u8,
            a: u8,
        }
        assert_eq!(
            render(&Doc { b: 1, a: 2 }),
            r#"{"format_version":"1","b":1,"a":2}"#
        );
        assert_eq!(
            render(&serde_json::json!({"format_version": "1", "a": 2})),
            r#"{"a":2,"format_version":"1"}"#
        );
        assert_eq!(
            render(&serde_json::json!([1])),
            r#"{"format_version":"1","value":[1]}"#
        );
        let mut out = Vec::new();
        assert!(
            write_enveloped(&mut out, &serde_json::json!({"format_version": 1}), false).is_err()
        );
    }
}
