//! Running statistics over log-durations, and the few distribution functions the estimator needs.
//!
//! Durations of work are log-normal (skewed, positive, spread over orders of magnitude), so every
//! statistic of "how long" is kept over `ln(seconds)`: count, mean and M2 (the sum of squared deviations)
//! updated one value at a time by Welford's method, and two summaries merged by Chan et al.'s formula —
//! the same merge the database applies in the completion's transaction
//! (`store::timing::STATS_MERGE_SQL`). Both are exact (no window, no decay) and numerically stable:
//! merging never subtracts two large sums. The store keeps these numbers
//! ([`crate::store::timing::StatsValues`]) and merges the deltas computed here ([`deltas`]).
//!
//! What is kept per (task type, project), and why:
//! * `n`, `mean`, `m2` of `ln(seconds)` of successful completions — the log-normal fit the estimator and
//!   `task_stats` use (median = `exp(mean)`, p95 = `exp(mean + 1.645 sd)`);
//! * `failed` — completions without success: they count for the success rate, but their durations say
//!   little about how long the work takes, so they are not in the duration statistics;
//! * `sum_seconds`, `min_seconds`, `max_seconds` — the exact arithmetic mean, minimum and maximum;
//! * `ratio` — the same log statistics of `ln(actual / caller's estimate)`: the caller's bias and spread
//!   (Evidence-Based Scheduling), for calibrating a caller's own estimate.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::timing::{StatsDelta, StatsValues};

/// Count, mean and M2 of a sample (of log-durations or log-ratios).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LogStats {
    pub n: i64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl LogStats {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut s = LogStats::default();
        for v in values {
            s.push(v);
        }
        s
    }

    /// Welford's update with one value.
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Chan et al.'s merge of two summaries (the order does not matter).
    pub fn merge(&self, other: &LogStats) -> LogStats {
        let n = self.n + other.n;
        if n == 0 {
            return LogStats::default();
        }
        let delta = other.mean - self.mean;
        let (na, nb) = (self.n as f64, other.n as f64);
        LogStats {
            n,
            mean: self.mean + delta * nb / n as f64,
            m2: self.m2 + other.m2 + delta * delta * na * nb / n as f64,
        }
    }

    /// The sample variance (n - 1 in the denominator); `None` below two values.
    pub fn variance(&self) -> Option<f64> {
        (self.n >= 2).then(|| (self.m2 / (self.n - 1) as f64).max(0.0))
    }

    pub fn sd(&self) -> Option<f64> {
        self.variance().map(f64::sqrt)
    }
}

/// Everything kept for one (task type, project) row.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct TaskStats {
    /// ln(seconds) of successful completions.
    pub log: LogStats,
    pub failed: i64,
    pub sum_seconds: f64,
    pub min_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
    /// ln(actual / caller's estimate) of successful completions that had one.
    pub ratio: LogStats,
}

impl TaskStats {
    /// The contribution of one completion: a successful one with its duration (and the caller's
    /// estimate, if it gave one), or a failed one (counted only).
    pub fn completion(seconds: f64, success: bool, own_estimate: Option<f64>) -> Self {
        if !success {
            return TaskStats {
                failed: 1,
                ..TaskStats::default()
            };
        }
        let mut s = TaskStats {
            log: LogStats::of([seconds.ln()]),
            sum_seconds: seconds,
            min_seconds: Some(seconds),
            max_seconds: Some(seconds),
            ..TaskStats::default()
        };
        if let Some(e) = own_estimate {
            s.ratio = LogStats::of([(seconds / e).ln()]);
        }
        s
    }

    pub fn merge(&self, o: &TaskStats) -> TaskStats {
        let pick = |a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64| match (a, b) {
            (Some(x), Some(y)) => Some(f(x, y)),
            (x, None) => x,
            (None, y) => y,
        };
        TaskStats {
            log: self.log.merge(&o.log),
            failed: self.failed + o.failed,
            sum_seconds: self.sum_seconds + o.sum_seconds,
            min_seconds: pick(self.min_seconds, o.min_seconds, f64::min),
            max_seconds: pick(self.max_seconds, o.max_seconds, f64::max),
            ratio: self.ratio.merge(&o.ratio),
        }
    }

    /// Completions, successful or not.
    pub fn completed(&self) -> i64 {
        self.log.n + self.failed
    }

    pub fn from_values(v: &StatsValues) -> Self {
        TaskStats {
            log: LogStats {
                n: v.sample_count,
                mean: v.mean_log,
                m2: v.m2_log,
            },
            failed: v.failed_count,
            sum_seconds: v.sum_seconds,
            min_seconds: v.min_seconds,
            max_seconds: v.max_seconds,
            ratio: LogStats {
                n: v.ratio_count,
                mean: v.ratio_mean_log,
                m2: v.ratio_m2_log,
            },
        }
    }

    pub fn values(&self) -> StatsValues {
        StatsValues {
            sample_count: self.log.n,
            mean_log: self.log.mean,
            m2_log: self.log.m2,
            failed_count: self.failed,
            sum_seconds: self.sum_seconds,
            min_seconds: self.min_seconds,
            max_seconds: self.max_seconds,
            ratio_count: self.ratio.n,
            ratio_mean_log: self.ratio.mean,
            ratio_m2_log: self.ratio.m2,
        }
    }
}

/// The statistics rows a set of contributions (task type, project, stats) touches — each contribution
/// goes to its (type, project) row and its (type, all projects) row — merged per row.
pub fn deltas<'a>(
    contributions: impl IntoIterator<Item = (&'a str, &'a str, TaskStats)>,
) -> Vec<StatsDelta> {
    let mut rows: BTreeMap<(String, String), TaskStats> = BTreeMap::new();
    for (task_type, project, s) in contributions {
        for p in [project, ""] {
            let e = rows
                .entry((task_type.to_string(), p.to_string()))
                .or_default();
            *e = e.merge(&s);
        }
    }
    rows.into_iter()
        .map(|((task_type, project), s)| StatsDelta {
            task_type,
            project,
            values: s.values(),
        })
        .collect()
}

/// The standard normal quantile used for 95 % two-sided intervals.
pub const Z_975: f64 = 1.959_963_984_540_054;
/// The standard normal 95th percentile (one-sided), for p95 of a log-normal fit.
pub const Z_95: f64 = 1.644_853_626_951_472_2;

/// The 0.975 quantile of Student's t with `dof` degrees of freedom (`dof >= 1`): exact for 1 and 2,
/// the Cornish–Fisher expansion beyond (error below 0.002 from 3 on, shrinking fast).
pub fn t_975(dof: f64) -> f64 {
    if !(dof.is_finite()) || dof > 1e6 {
        return Z_975;
    }
    let v = dof.max(1.0);
    if v < 1.5 {
        // tan(pi * (0.975 - 0.5))
        return (std::f64::consts::PI * 0.475).tan();
    }
    if v < 2.5 {
        let p: f64 = 0.975;
        return (2.0 * p - 1.0) / (2.0 * p * (1.0 - p)).sqrt();
    }
    let z = Z_975;
    let (z2, z3) = (z * z, z * z * z);
    let z5 = z3 * z2;
    let z7 = z5 * z2;
    let z9 = z7 * z2;
    z + (z3 + z) / (4.0 * v)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * v * v)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * v * v * v)
        + (79.0 * z9 + 776.0 * z7 + 1482.0 * z5 - 1920.0 * z3 - 945.0 * z) / (92160.0 * v.powi(4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn welford_matches_the_textbook_values() {
        let s = LogStats::of([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(s.n, 8);
        assert_eq!(s.mean, 5.0);
        assert_eq!(s.m2, 32.0);
        assert!(close(s.variance().unwrap(), 32.0 / 7.0, 1e-15));
        assert_eq!(LogStats::of([3.0]).variance(), None);
        assert_eq!(
            LogStats::default().merge(&LogStats::default()),
            LogStats::default()
        );
    }

    #[test]
    fn completions_contribute_what_the_schema_says() {
        let ok = TaskStats::completion(100.0, true, Some(50.0));
        assert_eq!(ok.log.n, 1);
        assert!(close(ok.log.mean, 100f64.ln(), 1e-15));
        assert!(close(ok.ratio.mean, 2f64.ln(), 1e-15));
        assert_eq!((ok.min_seconds, ok.max_seconds), (Some(100.0), Some(100.0)));
        let failed = TaskStats::completion(100.0, false, Some(50.0));
        assert_eq!(
            failed,
            TaskStats {
                failed: 1,
                ..TaskStats::default()
            }
        );
        let both = ok
            .merge(&failed)
            .merge(&TaskStats::completion(10.0, true, None));
        assert_eq!(both.completed(), 3);
        assert_eq!(both.log.n, 2);
        assert_eq!(both.ratio.n, 1);
        assert_eq!(both.sum_seconds, 110.0);
        assert_eq!(
            (both.min_seconds, both.max_seconds),
            (Some(10.0), Some(100.0))
        );
    }

    #[test]
    fn t_quantiles_match_tables() {
        // Student's t, 0.975 quantile (any statistics table).
        for (dof, want) in [
            (1.0, 12.7062),
            (2.0, 4.3027),
            (3.0, 3.1824),
            (4.0, 2.7764),
            (5.0, 2.5706),
            (10.0, 2.2281),
            (30.0, 2.0423),
            (120.0, 1.9799),
        ] {
            let got = t_975(dof);
            assert!(
                (got - want).abs() < 0.002 * want,
                "t(0.975, {dof}) = {got}, want {want}"
            );
        }
        assert_eq!(t_975(f64::INFINITY), Z_975);
    }

    #[test]
    fn deltas_go_to_the_project_and_the_all_project_rows() {
        let one = TaskStats::completion(60.0, true, None);
        let d = deltas([
            ("bug", "shop", one),
            ("bug", "blog", one),
            ("docs", "shop", one),
        ]);
        let keys: Vec<(&str, &str, i64)> = d
            .iter()
            .map(|d| {
                (
                    d.task_type.as_str(),
                    d.project.as_str(),
                    d.values.sample_count,
                )
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                ("bug", "", 2),
                ("bug", "blog", 1),
                ("bug", "shop", 1),
                ("docs", "", 1),
                ("docs", "shop", 1)
            ]
        );
        let s = TaskStats::completion(100.0, true, Some(50.0))
            .merge(&TaskStats::completion(5.0, false, None));
        assert_eq!(TaskStats::from_values(&s.values()), s);
    }

    proptest! {
        /// Merging two summaries equals summarising the concatenation (how imports and completions
        /// update the stored rows).
        #[test]
        fn merge_equals_summary_of_the_union(
            a in prop::collection::vec(-5.0f64..15.0, 0..40),
            b in prop::collection::vec(-5.0f64..15.0, 0..40),
        ) {
            let merged = LogStats::of(a.iter().copied()).merge(&LogStats::of(b.iter().copied()));
            let whole = LogStats::of(a.iter().chain(&b).copied());
            prop_assert_eq!(merged.n, whole.n);
            prop_assert!(close(merged.mean, whole.mean, 1e-9));
            prop_assert!(close(merged.m2, whole.m2, 1e-8));
            prop_assert!(merged.m2 >= -1e-9);
        }

        #[test]
        fn t_is_decreasing_toward_z(d in 1.0f64..500.0) {
            prop_assert!(t_975(d) >= t_975(d + 1.0) - 1e-9);
            prop_assert!(t_975(d) > Z_975);
        }
    }
}
