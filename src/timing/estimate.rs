//! The estimator as pure math: evidence in (running statistics at three levels, similar completed tasks
//! with their text-search scores, optionally the caller's own estimate), an estimate with a 95 %
//! interval out. No I/O: the service (`service.rs`) gathers the evidence from the store.
//!
//! Everything happens on `ln(seconds)`; the point estimate is the median of the predictive log-normal
//! (`exp` of the log-space centre) and the interval is `exp(centre ± t·scale)`, so it is never negative
//! and is as asymmetric as durations are.
//!
//! 1. **Base distribution, with fallback.** Levels are (type, project) → (type, all projects) → all tasks.
//!    Each level's mean and variance are a conjugate (normal–inverse-gamma) update of its parent's
//!    posterior with the parent worth at most [`Params::prior_strength`] observations (5, the
//!    specification's fallback threshold): a level with fewer samples than that is dominated by its
//!    parent, one with many speaks for itself. The predictive distribution is Student's t with the
//!    posterior's degrees of freedom and scale `σ·√(1 + 1/κ)` — wide when evidence is thin, ±1.96 σ
//!    when it is plentiful.
//! 2. **Similar tasks.** The centre is a weighted mean of the similar tasks' log-durations (weight
//!    `(score / best score)^α`) and the base level's posterior mean (weight λ). Validation on Deep-SE
//!    (`examples/eval_estimation.rs --sweep`, 288 variants) chose α = 1, λ = 1 and 20 neighbours; a
//!    kernel on rank instead of score, a weighted median instead of the mean, and neighbours from every
//!    project shifted by the projects' mean difference did no better there, and weighting by recency
//!    did not help either (docs/benchmarks.md). The neighbours move the centre but do not narrow the
//!    interval: on later data their residual spread was close to the category's.
//! 3. **The caller's own estimate** (Evidence-Based Scheduling). The history of `ln(actual / own
//!    estimate)` at the same levels gives the caller's bias and spread (same conjugate chain). The
//!    calibrated own estimate `ln(own) + bias` and the estimate of steps 1–2 are combined by precision
//!    (inverse variance), which is the optimum for independent errors; the interval uses the smaller of
//!    the two degrees of freedom. Caveat: a caller's errors and the history's may be correlated in real
//!    use (both miss the same surprises); then the combined interval is too narrow.

use serde::Serialize;

use super::stats::{LogStats, TaskStats, t_975};

/// Tuning of the estimator (defaults chosen on the validation split of Deep-SE).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// How many observations a parent level is worth as prior of a child level (κ₀ = ν₀).
    pub prior_strength: f64,
    /// How many similar tasks to use at most.
    pub neighbours: usize,
    /// Exponent of the relative text-search score in a neighbour's weight.
    pub rank_power: f64,
    /// Weight of the base level's mean against the neighbours (in units of a best-matching neighbour).
    pub base_weight: f64,
    /// A level needs this many samples for similar tasks to be searched at it.
    pub min_samples: i64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            prior_strength: 5.0,
            neighbours: 20,
            rank_power: 1.0,
            base_weight: 1.0,
            min_samples: 5,
        }
    }
}

/// Which slice of history a figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    TypeProject,
    Type,
    All,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::TypeProject => "type_project",
            Level::Type => "type",
            Level::All => "all",
        }
    }
}

/// Running statistics at the three levels (None: no completed task there), and the rows beside them
/// that say how much the levels' children differ.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Levels {
    pub type_project: Option<TaskStats>,
    pub task_type: Option<TaskStats>,
    pub all: Option<TaskStats>,
    /// The task type in every project (this one included): how much projects differ within the type.
    pub type_by_project: Vec<TaskStats>,
    /// Every task type across projects: how much types differ.
    pub by_type: Vec<TaskStats>,
}

impl Levels {
    /// Most specific first.
    fn chain(&self) -> [(Level, Option<&TaskStats>); 3] {
        [
            (Level::TypeProject, self.type_project.as_ref()),
            (Level::Type, self.task_type.as_ref()),
            (Level::All, self.all.as_ref()),
        ]
    }

    /// The hierarchy of one statistic (`pick`: durations or estimate ratios), most specific first:
    /// each level with its siblings under the next level (the root has none).
    fn evidence(&self, pick: fn(&TaskStats) -> LogStats) -> [LevelEvidence; 3] {
        let siblings = |rows: &[TaskStats]| rows.iter().map(pick).collect::<Vec<_>>();
        [
            LevelEvidence {
                stats: self.type_project.as_ref().map(pick),
                siblings: siblings(&self.type_by_project),
            },
            LevelEvidence {
                stats: self.task_type.as_ref().map(pick),
                siblings: siblings(&self.by_type),
            },
            LevelEvidence {
                stats: self.all.as_ref().map(pick),
                siblings: Vec::new(),
            },
        ]
    }

    /// The most specific level with at least `min` successful completions: where similar tasks are
    /// searched (the specification's fallback rule).
    pub fn search_level(&self, min: i64) -> Option<Level> {
        self.chain()
            .into_iter()
            .find(|(_, s)| s.is_some_and(|s| s.log.n >= min))
            .map(|(l, _)| l)
            .or_else(|| {
                self.chain()
                    .into_iter()
                    .rev()
                    .find(|(_, s)| s.is_some_and(|s| s.log.n > 0))
                    .map(|(l, _)| l)
            })
    }
}

/// A completed task found by text search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    pub log_seconds: f64,
    /// Text-search score, higher is more similar (> 0).
    pub score: f64,
}

/// A posterior predictive in log space: Student's t with `dof`, `centre`, `scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Predictive {
    pub centre: f64,
    /// σ·√(1 + 1/κ): the spread of a new observation.
    pub scale: f64,
    pub dof: f64,
    /// Posterior mean's pseudo-count κ (observations + prior strength).
    pub kappa: f64,
}

impl Predictive {
    /// A weak default when no level has two observations: ±1 in log space, one degree of freedom.
    const VAGUE_SD: f64 = 1.0;
    /// No history is perfectly predictable: a spread below 1 % (identical durations, or a caller
    /// whose every estimate was off by exactly the same factor) is taken as 1 %.
    const MIN_SD: f64 = 0.01;

    fn half_width(&self) -> f64 {
        t_975(self.dof) * self.scale
    }
}

/// One level of a hierarchy: its statistics and its siblings — the children of the next, more general
/// level (itself included), which say how much such children differ.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LevelEvidence {
    pub stats: Option<LogStats>,
    pub siblings: Vec<LogStats>,
}

/// What a level's siblings say about a child of their parent: the pooled within-child variance (with
/// its degrees of freedom) and how many observations the parent's mean is worth as the child's prior
/// mean, κ₀ = σ²_within / τ²_between (one-way random-effects method of moments). `None` with fewer than
/// two siblings holding data: they say nothing beyond the child itself.
fn sibling_prior(siblings: &[LogStats]) -> Option<(f64, f64, f64)> {
    const KAPPA_MAX: f64 = 1000.0;
    let groups: Vec<&LogStats> = siblings.iter().filter(|s| s.n > 0).collect();
    let k = groups.len() as f64;
    let within_dof: f64 = groups.iter().map(|s| (s.n - 1) as f64).sum();
    if groups.len() < 2 || within_dof < 1.0 {
        return None;
    }
    let within = groups.iter().map(|s| s.m2).sum::<f64>() / within_dof;
    let n_total: f64 = groups.iter().map(|s| s.n as f64).sum();
    let grand = groups.iter().map(|s| s.n as f64 * s.mean).sum::<f64>() / n_total;
    let between_ms = groups
        .iter()
        .map(|s| s.n as f64 * (s.mean - grand).powi(2))
        .sum::<f64>()
        / (k - 1.0);
    let n0 =
        (n_total - groups.iter().map(|s| (s.n as f64).powi(2)).sum::<f64>() / n_total) / (k - 1.0);
    let tau2 = ((between_ms - within) / n0).max(0.0);
    let kappa0 = if tau2 > 0.0 {
        (within / tau2).min(KAPPA_MAX)
    } else {
        KAPPA_MAX
    };
    Some((within.max(Predictive::MIN_SD.powi(2)), within_dof, kappa0))
}

/// The posterior predictive of a hierarchy of log statistics (most specific first): the most general
/// level with data is taken as it is (vague when it has a single value); each more specific level with
/// data is shrunk toward the level above — its mean toward the parent's with the weight its siblings
/// justify (κ₀, [`sibling_prior`]; `prior_strength` when they cannot tell), its variance toward the
/// siblings' pooled within-child variance worth at most `prior_strength` observations (the parent's
/// own variance when the siblings cannot tell). The predictive is Student's t with
/// `n − 1 + ν₀` degrees of freedom and scale `s·√(1 + 1/(n + κ₀))`. Returns it with the index of the
/// level it rests on.
pub fn posterior(chain: &[LevelEvidence], prior_strength: f64) -> Option<(usize, Predictive)> {
    let mut post: Option<(f64, f64, f64, f64)> = None; // (mean, variance, kappa, nu)
    let mut level = None;
    for (i, l) in chain.iter().enumerate().rev() {
        let Some(s) = l.stats.filter(|s| s.n > 0) else {
            continue;
        };
        let n = s.n as f64;
        post = Some(match post {
            None => match s.variance() {
                Some(v) => (s.mean, v, n, n - 1.0),
                None => (s.mean, Predictive::VAGUE_SD.powi(2), n, 1.0),
            },
            Some((m0, v0, _, nu_parent)) => {
                let (prior_var, prior_dof, kappa0) = match sibling_prior(&l.siblings) {
                    Some((within, dof, kappa0)) => (within, dof, kappa0),
                    None => (v0, nu_parent, prior_strength),
                };
                let nu0 = prior_dof.min(prior_strength);
                let mean = (n * s.mean + kappa0 * m0) / (n + kappa0);
                let var = (s.m2 + nu0 * prior_var) / (n - 1.0 + nu0);
                (mean, var, n + kappa0, n - 1.0 + nu0)
            }
        });
        level = Some(i);
    }
    let (mean, var, kappa, nu) = post?;
    Some((
        level?,
        Predictive {
            centre: mean,
            scale: (var.max(Predictive::MIN_SD.powi(2)) * (1.0 + 1.0 / kappa)).sqrt(),
            dof: nu.max(1.0),
            kappa,
        },
    ))
}

/// What the estimator concluded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub estimated_seconds: f64,
    pub interval_low_seconds: f64,
    pub interval_high_seconds: f64,
    /// Successful completions at the level the estimate rests on.
    pub sample_size: i64,
    /// The level of history the estimate rests on.
    pub level: Level,
    /// How many similar tasks moved the centre.
    pub similar_used: usize,
    /// The caller's own estimate, calibrated, when one was given and history of the caller's estimates
    /// exists.
    pub calibration: Option<Calibration>,
    /// e.g. `similar+type_project`, `type`, `similar+type_project+calibrated_own_estimate`.
    pub method: String,
}

/// How a caller's own estimate was calibrated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Calibration {
    /// The estimate you gave.
    pub own_estimate_seconds: f64,
    /// How long tasks took relative to your estimates (geometric mean of actual / estimate, shrunk
    /// toward wider history when thin): the factor applied to your estimate.
    pub bias_factor: f64,
    /// Your estimate times the bias factor.
    pub calibrated_seconds: f64,
    /// Tasks with an own estimate at the level the calibration rests on.
    pub sample_size: i64,
    pub level: Level,
}

/// Estimates from the evidence; `None` when there is no completed task at all. The history of
/// `ln(actual / own estimate)` that calibrates `own_estimate_seconds` is the `ratio` of each level's
/// [`TaskStats`].
pub fn estimate(
    levels: &Levels,
    similar: &[Neighbour],
    own_estimate_seconds: Option<f64>,
    params: &Params,
) -> Option<Estimate> {
    let (idx, base) = posterior(&levels.evidence(|s| s.log), params.prior_strength)?;
    let level = levels.chain()[idx].0;
    let sample_size = levels.chain()[idx].1.map_or(0, |s| s.log.n);

    // Similar tasks move the centre.
    let used: Vec<&Neighbour> = similar
        .iter()
        .filter(|n| n.score > 0.0 && n.log_seconds.is_finite())
        .take(params.neighbours)
        .collect();
    let best = used.iter().map(|n| n.score).fold(0.0, f64::max);
    let mut centre = base.centre;
    if best > 0.0 {
        let (mut sum, mut weight) = (params.base_weight * base.centre, params.base_weight);
        for n in &used {
            let w = (n.score / best).powf(params.rank_power);
            sum += w * n.log_seconds;
            weight += w;
        }
        centre = sum / weight;
    }
    let mut method = if used.is_empty() {
        level.as_str().to_string()
    } else {
        format!("similar+{}", level.as_str())
    };
    let scale = base.scale;
    let mut half = base.half_width();
    let mut calibration = None;

    if let Some(own) = own_estimate_seconds.filter(|s| s.is_finite() && *s > 0.0)
        && let Some((ridx, ratio)) = posterior(&levels.evidence(|s| s.ratio), params.prior_strength)
    {
        let calibrated = own.ln() + ratio.centre;
        // Precision weighting of two independent estimates of the same log-duration.
        let (p1, p2) = (scale.powi(-2), ratio.scale.powi(-2));
        centre = (centre * p1 + calibrated * p2) / (p1 + p2);
        half = t_975(base.dof.min(ratio.dof)) * (p1 + p2).powf(-0.5);
        calibration = Some(Calibration {
            own_estimate_seconds: own,
            bias_factor: ratio.centre.exp(),
            calibrated_seconds: calibrated.exp(),
            sample_size: levels.chain()[ridx].1.map_or(0, |s| s.ratio.n),
            level: levels.chain()[ridx].0,
        });
        method.push_str("+calibrated_own_estimate");
    }
    Some(Estimate {
        estimated_seconds: centre.exp(),
        interval_low_seconds: (centre - half).exp(),
        interval_high_seconds: (centre + half).exp(),
        sample_size,
        level,
        similar_used: used.len(),
        calibration,
        method,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timing::stats::Z_975;
    use proptest::prelude::*;

    fn stats(values: &[f64]) -> TaskStats {
        values
            .iter()
            .map(|&s| TaskStats::completion(s, true, None))
            .fold(TaskStats::default(), |a, b| a.merge(&b))
    }

    fn stats_with_estimates(pairs: &[(f64, f64)]) -> TaskStats {
        pairs
            .iter()
            .map(|&(actual, own)| TaskStats::completion(actual, true, Some(own)))
            .fold(TaskStats::default(), |a, b| a.merge(&b))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn no_history_no_estimate() {
        assert_eq!(
            estimate(&Levels::default(), &[], Some(60.0), &Params::default()),
            None
        );
    }

    #[test]
    fn one_level_is_the_classic_predictive_interval() {
        // ln-durations 1..=10 (e^1 … e^10 seconds): mean 5.5, sd √(82.5/9).
        let values: Vec<f64> = (1..=10).map(|i| (i as f64).exp()).collect();
        let levels = Levels {
            all: Some(stats(&values)),
            ..Levels::default()
        };
        let e = estimate(&levels, &[], None, &Params::default()).unwrap();
        let sd = (82.5f64 / 9.0).sqrt();
        let half = t_975(9.0) * sd * (1.0 + 1.0 / 10.0f64).sqrt();
        assert!(close(e.estimated_seconds.ln(), 5.5));
        assert!(close(e.interval_low_seconds.ln(), 5.5 - half));
        assert!(close(e.interval_high_seconds.ln(), 5.5 + half));
        assert_eq!(
            (e.level, e.sample_size, e.method.as_str()),
            (Level::All, 10, "all")
        );
    }

    #[test]
    fn a_thin_level_is_shrunk_toward_its_parent_and_wider_than_a_thick_one() {
        let parent: Vec<f64> = (0..200)
            .map(|i| 600.0 * (1.0 + (i % 7) as f64 / 10.0))
            .collect();
        let thin = Levels {
            type_project: Some(stats(&[6000.0, 6000.0])),
            task_type: Some(stats(&parent)),
            all: Some(stats(&parent)),
            ..Levels::default()
        };
        let e = estimate(&thin, &[], None, &Params::default()).unwrap();
        assert_eq!(e.level, Level::TypeProject);
        assert_eq!(e.sample_size, 2);
        // Two samples at 6000 s against a parent near 800 s worth 5: the centre stays nearer the parent
        // than the two samples (in log space).
        let parent_mean = thin.task_type.unwrap().log.mean;
        let c = e.estimated_seconds.ln();
        assert!(c > parent_mean && c < 6000f64.ln());
        assert!(c - parent_mean < 6000f64.ln() - c, "{c}");
        // With the same mean and many samples, the interval is narrower.
        let thick_values: Vec<f64> = parent.iter().map(|s| s * 1.0).collect();
        let thick = Levels {
            type_project: Some(stats(&thick_values)),
            ..thin
        };
        let t = estimate(&thick, &[], None, &Params::default()).unwrap();
        let width = |e: &Estimate| (e.interval_high_seconds / e.interval_low_seconds).ln();
        assert!(width(&e) > width(&t), "{} vs {}", width(&e), width(&t));
    }

    #[test]
    fn similar_tasks_pull_the_centre_by_score() {
        let base: Vec<f64> = (0..50).map(|i| 100.0 * (1.0 + (i % 5) as f64)).collect();
        let levels = Levels {
            type_project: Some(stats(&base)),
            ..Levels::default()
        };
        let b = levels.type_project.unwrap().log.mean;
        let x = 10_000f64.ln();
        let n = [
            Neighbour {
                log_seconds: x,
                score: 8.0,
            },
            Neighbour {
                log_seconds: x,
                score: 4.0,
            },
        ];
        let e = estimate(&levels, &n, None, &Params::default()).unwrap();
        // weights: 1 and 1/2, base weight 1.
        let want = (1.0 * b + 1.0 * x + 0.5 * x) / 2.5;
        assert!(close(e.estimated_seconds.ln(), want));
        assert_eq!(e.similar_used, 2);
        assert_eq!(e.method, "similar+type_project");
        // The interval keeps the base level's width.
        let no_similar = estimate(&levels, &[], None, &Params::default()).unwrap();
        let width = |e: &Estimate| (e.interval_high_seconds / e.interval_low_seconds).ln();
        assert!(close(width(&e), width(&no_similar)));
    }

    #[test]
    fn a_calibrated_own_estimate_corrects_bias_and_narrows_the_interval() {
        // A caller that always says half the actual time, within ±10 %; durations spread widely.
        let pairs: Vec<(f64, f64)> = (0..60)
            .map(|i| {
                let actual = 60.0 * 1.5f64.powi(i % 12);
                (actual, actual / 2.0 * (1.0 + ((i % 3) as f64 - 1.0) / 10.0))
            })
            .collect();
        let levels = Levels {
            type_project: Some(stats_with_estimates(&pairs)),
            ..Levels::default()
        };
        let plain = estimate(&levels, &[], None, &Params::default()).unwrap();
        let own = estimate(&levels, &[], Some(1000.0), &Params::default()).unwrap();
        let c = own.calibration.unwrap();
        assert!((c.bias_factor - 2.0).abs() < 0.05, "{c:?}");
        assert!(
            (own.estimated_seconds / 2000.0 - 1.0).abs() < 0.05,
            "{own:?}"
        );
        assert!(own.interval_low_seconds < 2000.0 && own.interval_high_seconds > 2000.0);
        let width = |e: &Estimate| (e.interval_high_seconds / e.interval_low_seconds).ln();
        assert!(width(&own) < width(&plain) / 5.0, "{own:?} vs {plain:?}");
        assert_eq!(own.method, "type_project+calibrated_own_estimate");
        // Without any history of own estimates, the own estimate is not used.
        let no_ratio = Levels {
            type_project: Some(stats(&[100.0, 200.0, 300.0])),
            ..Levels::default()
        };
        let e = estimate(&no_ratio, &[], Some(5.0), &Params::default()).unwrap();
        assert_eq!(e.calibration, None);
        assert_eq!(e.method, "type_project");
    }

    #[test]
    fn search_level_follows_the_fallback_rule() {
        let four = stats(&[1.0, 2.0, 3.0, 4.0]);
        let five = stats(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        let levels = Levels {
            type_project: Some(four),
            task_type: Some(five),
            all: Some(five),
            ..Levels::default()
        };
        assert_eq!(levels.search_level(5), Some(Level::Type));
        let thin = Levels {
            type_project: Some(four),
            task_type: Some(four),
            all: Some(four),
            ..Levels::default()
        };
        // Nowhere 5: the widest level with data.
        assert_eq!(thin.search_level(5), Some(Level::All));
        assert_eq!(Levels::default().search_level(5), None);
    }

    #[test]
    fn posterior_of_a_single_value_is_vague() {
        let (i, p) = posterior(
            &[
                LevelEvidence::default(),
                LevelEvidence {
                    stats: Some(LogStats::of([3.0])),
                    siblings: vec![],
                },
            ],
            5.0,
        )
        .unwrap();
        assert_eq!(i, 1);
        assert_eq!((p.centre, p.dof), (3.0, 1.0));
        assert!(close(p.scale, (2.0f64).sqrt()));
        // Plentiful data: ±1.96 σ in the limit.
        let many = LogStats::of((0..100_000).map(|i| (i % 2) as f64));
        let (_, p) = posterior(
            &[LevelEvidence {
                stats: Some(many),
                siblings: vec![],
            }],
            5.0,
        )
        .unwrap();
        assert!((t_975(p.dof) - Z_975).abs() < 1e-4);
    }

    proptest! {
        /// Whatever the evidence, the interval contains the estimate, is positive and finite.
        #[test]
        fn intervals_are_ordered_positive_and_finite(
            tp in prop::collection::vec(1.0f64..1e6, 0..8),
            ty in prop::collection::vec(1.0f64..1e6, 0..30),
            all in prop::collection::vec(1.0f64..1e6, 1..30),
            similar in prop::collection::vec((1.0f64..1e6, 0.01f64..50.0), 0..10),
            own in prop::option::of((1.0f64..1e6, prop::collection::vec((1.0f64..1e6, 1.0f64..1e6), 0..10))),
        ) {
            let mut all_stats = stats(&all);
            if let Some((_, pairs)) = &own {
                all_stats = all_stats.merge(&stats_with_estimates(pairs));
            }
            let levels = Levels {
                type_project: (!tp.is_empty()).then(|| stats(&tp)),
                task_type: (!ty.is_empty()).then(|| stats(&ty)),
                all: Some(all_stats),
                ..Levels::default()
            };
            let n: Vec<Neighbour> = similar.iter().map(|&(s, score)| Neighbour { log_seconds: s.ln(), score }).collect();
            let e = estimate(&levels, &n, own.as_ref().map(|o| o.0), &Params::default()).unwrap();
            prop_assert!(e.interval_low_seconds > 0.0);
            prop_assert!(e.interval_high_seconds.is_finite());
            prop_assert!(e.interval_low_seconds <= e.estimated_seconds);
            prop_assert!(e.estimated_seconds <= e.interval_high_seconds);
        }
    }
}
