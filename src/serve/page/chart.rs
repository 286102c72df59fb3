//! The page's pictures as inline SVG (no external asset, no script): a sparkline of a percentage, a
//! port block as a grid, and durations against their estimates. Pure functions of plain values.
//!
//! Each picture is `role="img"` with an `aria-label` that says in words what it shows; the numbers it
//! draws are also in a table or a sentence next to it, so nothing is only a picture and no state is
//! only a colour.

use maud::{Markup, html};

/// Formats a coordinate with at most one decimal (small, stable SVG).
fn c(x: f64) -> String {
    let r = (x * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{}", r as i64)
    } else {
        format!("{r:.1}")
    }
}

pub const SPARK_WIDTH: f64 = 160.0;
pub const SPARK_HEIGHT: f64 = 32.0;

/// A sparkline of percentages (0–100, oldest first), labelled `label` for screen readers. One point
/// or none draws what there is.
pub fn sparkline(values: &[f64], label: &str) -> Markup {
    let n = values.len();
    let x = |i: usize| {
        if n <= 1 {
            SPARK_WIDTH / 2.0
        } else {
            i as f64 * SPARK_WIDTH / (n - 1) as f64
        }
    };
    let y = |v: f64| SPARK_HEIGHT - 1.0 - v.clamp(0.0, 100.0) / 100.0 * (SPARK_HEIGHT - 2.0);
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{},{}", c(x(i)), c(y(*v))))
        .collect();
    let last = values.last().map(|v| (x(n - 1), y(*v)));
    html! {
        svg.spark role="img" aria-label=(label) viewBox={ "0 0 " (c(SPARK_WIDTH)) " " (c(SPARK_HEIGHT)) }
            width=(c(SPARK_WIDTH)) height=(c(SPARK_HEIGHT)) {
            line.axis x1="0" y1=(c(SPARK_HEIGHT - 1.0)) x2=(c(SPARK_WIDTH)) y2=(c(SPARK_HEIGHT - 1.0)) {}
            @if n > 1 {
                polyline points=(points.join(" ")) fill="none" stroke="currentColor" stroke-width="1.5" {}
            }
            @if let Some((lx, ly)) = last {
                circle cx=(c(lx)) cy=(c(ly)) r="2" fill="currentColor" {}
            }
        }
    }
}

/// What a port of a project's block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortCell {
    /// Allocated to a service and something listens on it.
    Listening,
    /// Allocated to a service; nothing listens.
    Idle,
    Free,
    /// A socket listens where it should not (unallocated, or another project's process).
    Conflict,
}

impl PortCell {
    pub fn label(self) -> &'static str {
        match self {
            PortCell::Listening => "used, listening",
            PortCell::Idle => "used, idle",
            PortCell::Free => "free",
            PortCell::Conflict => "conflicting listener",
        }
    }

    fn class(self) -> &'static str {
        match self {
            PortCell::Listening => "p-listen",
            PortCell::Idle => "p-idle",
            PortCell::Free => "p-free",
            PortCell::Conflict => "p-conflict",
        }
    }
}

const CELL: f64 = 14.0;
const GAP: f64 = 2.0;
const COLUMNS: usize = 10;

/// A block of ports (`first` upwards, one cell each, ten to a row) with a title per cell naming the port
/// and what it is (`used by api`). Conflicts are drawn with a cross as well as a colour.
pub fn port_grid(first: u16, cells: &[(PortCell, String)], label: &str) -> Markup {
    let rows = cells.len().div_ceil(COLUMNS).max(1);
    let width = COLUMNS as f64 * (CELL + GAP);
    let height = rows as f64 * (CELL + GAP);
    html! {
        svg.grid role="img" aria-label=(label) viewBox={ "0 0 " (c(width)) " " (c(height)) }
            width=(c(width)) height=(c(height)) {
            @for (i, (cell, what)) in cells.iter().enumerate() {
                @let (x, y) = ((i % COLUMNS) as f64 * (CELL + GAP), (i / COLUMNS) as f64 * (CELL + GAP));
                g class=(cell.class()) {
                    title { (u32::from(first) + i as u32) ": " (what) }
                    rect x=(c(x)) y=(c(y)) width=(c(CELL)) height=(c(CELL)) rx="2" {}
                    @if *cell == PortCell::Conflict {
                        path d={ "M" (c(x + 3.0)) " " (c(y + 3.0)) "l8 8M" (c(x + 11.0)) " " (c(y + 3.0)) "l-8 8" } {}
                    }
                    @if *cell == PortCell::Listening {
                        circle cx=(c(x + CELL / 2.0)) cy=(c(y + CELL / 2.0)) r="2.5" {}
                    }
                }
            }
        }
    }
}

/// One task in the durations chart.
#[derive(Debug, Clone, PartialEq)]
pub struct DurationBar {
    pub actual: f64,
    pub estimate: Option<f64>,
    /// The 95 % interval estimated at start.
    pub interval: Option<(f64, f64)>,
    /// Whether the actual duration fell inside it (as the timing service says).
    pub inside: Option<bool>,
}

const ROW: f64 = 14.0;
const CHART_WIDTH: f64 = 320.0;

/// Actual durations (bars) against the estimate (a tick) and its 95 % interval (a whisker), one row per
/// task, on a logarithmic scale shared by all rows.
pub fn durations(bars: &[DurationBar], label: &str) -> Markup {
    let values = bars.iter().flat_map(|b| {
        [
            Some(b.actual),
            b.estimate,
            b.interval.map(|i| i.0),
            b.interval.map(|i| i.1),
        ]
        .into_iter()
        .flatten()
    });
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo > hi {
        (1.0, 10.0)
    } else {
        ((lo / 1.5).max(0.1), (hi * 1.5).max(lo * 2.0))
    };
    let (l0, l1) = (lo.ln(), hi.ln());
    let x = |v: f64| ((v.max(lo).ln() - l0) / (l1 - l0) * CHART_WIDTH).clamp(0.0, CHART_WIDTH);
    let height = bars.len().max(1) as f64 * ROW;
    html! {
        svg.durations role="img" aria-label=(label) viewBox={ "0 0 " (c(CHART_WIDTH)) " " (c(height)) }
            width=(c(CHART_WIDTH)) height=(c(height)) {
            @for (i, b) in bars.iter().enumerate() {
                @let y = i as f64 * ROW;
                @let class = match b.inside { Some(true) => "in", Some(false) => "out", None => "none" };
                g class=(class) {
                    rect.bar x="0" y=(c(y + 3.0)) width=(c(x(b.actual).max(1.0))) height=(c(ROW - 6.0)) {}
                    @if let Some((a, z)) = b.interval {
                        line.whisker x1=(c(x(a))) y1=(c(y + ROW / 2.0)) x2=(c(x(z))) y2=(c(y + ROW / 2.0)) {}
                    }
                    @if let Some(e) = b.estimate {
                        line.tick x1=(c(x(e))) y1=(c(y + 1.0)) x2=(c(x(e))) y2=(c(y + ROW - 1.0)) {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkline_spans_its_width_and_clamps_percentages() {
        let svg = sparkline(&[0.0, 50.0, 150.0], "CPU").into_string();
        assert!(svg.contains(r#"role="img" aria-label="CPU""#), "{svg}");
        assert!(svg.contains(r#"points="0,31 80,16 160,1""#), "{svg}");
        let one = sparkline(&[20.0], "one sample").into_string();
        assert!(
            !one.contains("polyline") && one.contains("<circle"),
            "{one}"
        );
        assert!(!sparkline(&[], "none").into_string().contains("<circle"));
    }

    #[test]
    fn a_port_grid_names_every_port_and_marks_conflicts_twice() {
        let cells = vec![
            (PortCell::Listening, "api".to_string()),
            (PortCell::Free, "free".to_string()),
            (
                PortCell::Conflict,
                "node (pid 7), allocated to no service".to_string(),
            ),
        ];
        let svg = port_grid(3100, &cells, "3 ports").into_string();
        assert!(svg.contains("<title>3100: api</title>"), "{svg}");
        assert!(svg.contains("<title>3102: node (pid 7), allocated to no service</title>"));
        assert_eq!(svg.matches("<rect").count(), 3);
        assert_eq!(svg.matches("<path").count(), 1, "the cross of the conflict");
        assert!(svg.contains(r#"class="p-conflict""#));
    }

    #[test]
    fn durations_share_a_log_scale_and_show_whether_each_fell_inside() {
        let bars = [
            DurationBar {
                actual: 60.0,
                estimate: Some(50.0),
                interval: Some((20.0, 120.0)),
                inside: Some(true),
            },
            DurationBar {
                actual: 600.0,
                estimate: Some(50.0),
                interval: Some((20.0, 120.0)),
                inside: Some(false),
            },
            DurationBar {
                actual: 5.0,
                estimate: None,
                interval: None,
                inside: None,
            },
        ];
        let svg = durations(&bars, "3 tasks").into_string();
        assert_eq!(svg.matches(r#"class="in""#).count(), 1);
        assert_eq!(svg.matches(r#"class="out""#).count(), 1);
        assert_eq!(svg.matches("whisker").count(), 2);
        // The longest bar ends inside the chart, the shortest is still visible.
        assert!(!svg.contains(r#"width="0""#), "{svg}");
        assert!(svg.contains(r#"viewBox="0 0 320 42""#), "{svg}");
    }
}
