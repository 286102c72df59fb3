//! Prometheus metrics, hand-rolled (a few counters and histograms do not need a dependency):
//! reconcile runs, errors and duration; MCP calls by tool and outcome, with a latency histogram.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += s;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    reconcile_runs: u64,
    reconcile_errors: u64,
    reconcile_duration: Histogram,
    /// (tool, outcome) → calls
    calls: BTreeMap<(String, &'static str), u64>,
    latency: BTreeMap<String, Histogram>,
    http_rejections: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    pub fn reconcile(&self, took: Duration, ok: bool) {
        self.with(|m| {
            m.reconcile_runs += 1;
            if !ok {
                m.reconcile_errors += 1;
            }
            m.reconcile_duration.observe(took);
        });
    }

    /// `outcome`: `ok`, `error` (the tool reported a failure) or `denied` (scope).
    pub fn tool_call(&self, tool: &str, outcome: &'static str, took: Duration) {
        self.with(|m| {
            *m.calls.entry((tool.to_string(), outcome)).or_default() += 1;
            m.latency.entry(tool.to_string()).or_default().observe(took);
        });
    }

    /// `reason`: `unauthorized`, `forbidden`, `rate_limited`, `not_found`.
    pub fn rejected(&self, reason: &'static str) {
        self.with(|m| *m.http_rejections.entry(reason).or_default() += 1);
    }

    pub fn render(&self, uptime: Duration, leader: bool) -> String {
        let m = self.with(|m| {
            (
                m.reconcile_runs,
                m.reconcile_errors,
                m.reconcile_duration.clone(),
                m.calls.clone(),
                m.latency.clone(),
                m.http_rejections.clone(),
            )
        });
        let (runs, errors, duration, calls, latency, rejections) = m;
        let mut out = String::new();
        out.push_str("# HELP supervisor_up Whether the supervisor is serving.\n# TYPE supervisor_up gauge\nsupervisor_up 1\n");
        let _ = writeln!(
            out,
            "# HELP supervisor_uptime_seconds Seconds since start.\n# TYPE supervisor_uptime_seconds gauge\nsupervisor_uptime_seconds {}",
            uptime.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "# HELP supervisor_leader Whether this process runs the reconcile loop.\n# TYPE supervisor_leader gauge\nsupervisor_leader {}",
            u8::from(leader)
        );
        let _ = writeln!(
            out,
            "# HELP supervisor_reconcile_runs_total Reconcile runs.\n# TYPE supervisor_reconcile_runs_total counter\nsupervisor_reconcile_runs_total {runs}"
        );
        let _ = writeln!(
            out,
            "# HELP supervisor_reconcile_errors_total Reconcile runs that failed.\n# TYPE supervisor_reconcile_errors_total counter\nsupervisor_reconcile_errors_total {errors}"
        );
        out.push_str("# HELP supervisor_reconcile_duration_seconds Duration of reconcile runs.\n# TYPE supervisor_reconcile_duration_seconds histogram\n");
        duration.render(&mut out, "supervisor_reconcile_duration_seconds", "");
        out.push_str("# HELP supervisor_mcp_calls_total MCP tool calls by tool and outcome.\n# TYPE supervisor_mcp_calls_total counter\n");
        for ((tool, outcome), n) in &calls {
            let _ = writeln!(
                out,
                "supervisor_mcp_calls_total{{tool=\"{tool}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP supervisor_mcp_call_duration_seconds Latency of MCP tool calls.\n# TYPE supervisor_mcp_call_duration_seconds histogram\n");
        for (tool, h) in &latency {
            h.render(
                &mut out,
                "supervisor_mcp_call_duration_seconds",
                &format!("tool=\"{tool}\""),
            );
        }
        out.push_str("# HELP supervisor_http_rejections_total Requests refused before reaching MCP.\n# TYPE supervisor_http_rejections_total counter\n");
        for (reason, n) in &rejections {
            let _ = writeln!(
                out,
                "supervisor_http_rejections_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.tool_call("get_port", "ok", Duration::from_micros(700));
        m.tool_call("get_port", "error", Duration::from_millis(3));
        m.reconcile(Duration::from_millis(20), true);
        let text = m.render(Duration::from_secs(5), true);
        assert!(text.contains("supervisor_mcp_calls_total{tool=\"get_port\",outcome=\"ok\"} 1"));
        assert!(text.contains(
            "supervisor_mcp_call_duration_seconds_bucket{tool=\"get_port\",le=\"0.001\"} 1"
        ));
        assert!(text.contains("supervisor_mcp_call_duration_seconds_count{tool=\"get_port\"} 2"));
        assert!(text.contains("supervisor_reconcile_runs_total 1"));
        assert!(text.contains("supervisor_reconcile_duration_seconds_bucket{le=\"0.025\"} 1"));
    }
}
