//! The gate: `limit = baseline × (1 + tolerance) + floor`, and the verdict of one test.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::baseline::Entry;
use crate::sizes::{format_delta, format_size, relative_change, Percent};

/// How far a value may move from its baseline before it counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tolerance {
    pub relative: Percent,
    /// Absolute slack in bytes (or objects, for cycles), so small tests are not judged on noise.
    pub floor: u64,
}

/// Defaults measured on real suites (see README, "Defaults"): they catch +20 % on 1 MiB
/// (limit 1.1 MiB + 64 KiB = 1.16 MiB) and leave the noise of small tests alone.
pub const DEFAULT_TOLERANCE: Tolerance = Tolerance {
    relative: Percent::from_percent(10),
    floor: 64 * 1024,
};

/// Defaults for the native figures: the same as the python meter's until real suites say
/// otherwise (README, "Native memory"); they catch +20 % on 1 MiB like the others.
pub const DEFAULT_NATIVE_TOLERANCE: Tolerance = Tolerance {
    relative: Percent::from_percent(10),
    floor: 64 * 1024,
};

impl Tolerance {
    /// The highest value that still passes.
    pub fn limit(&self, baseline: u64) -> u64 {
        baseline
            .saturating_add(self.relative.of(baseline))
            .saturating_add(self.floor)
    }

    /// Values below this are an improvement worth recording; `None` when none can be.
    pub fn improved_below(&self, baseline: u64) -> Option<u64> {
        baseline
            .checked_sub(self.relative.of(baseline))
            .and_then(|v| v.checked_sub(self.floor))
            .filter(|v| *v > 0)
    }

    /// Whether `value` is within tolerance of `baseline` in both directions.
    pub fn holds(&self, baseline: u64, value: u64) -> bool {
        value <= self.limit(baseline) && self.improved_below(baseline).is_none_or(|b| value >= b)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    Peak,
    Retained,
    Cycles,
    /// Native memory (`--memcheck-native`), gated only where both values exist.
    NativePeak,
    NativeRetained,
}

/// The metrics an update may record with a spread (README, "Unstable tests").
pub const SPREAD_METRICS: [Metric; 4] = [
    Metric::Peak,
    Metric::Retained,
    Metric::NativePeak,
    Metric::NativeRetained,
];

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Peak => "peak",
            Metric::Retained => "retained",
            Metric::Cycles => "cycles",
            Metric::NativePeak => "native_peak",
            Metric::NativeRetained => "native_retained",
        }
    }

    pub fn of(self, e: &Entry) -> u64 {
        match self {
            Metric::Peak => e.peak,
            Metric::Retained => e.retained,
            Metric::Cycles => e.cycles,
            Metric::NativePeak => e.native_peak.unwrap_or(0),
            Metric::NativeRetained => e.native_retained.unwrap_or(0),
        }
    }

    /// The highest value an update observed for an unstable test (README, "Unstable tests").
    pub fn max_of(self, e: &Entry) -> Option<u64> {
        match self {
            Metric::Peak => e.peak_max,
            Metric::Retained => e.retained_max,
            Metric::NativePeak => e.native_peak_max,
            Metric::NativeRetained => e.native_retained_max,
            Metric::Cycles => None,
        }
    }

    /// Bytes are shown as sizes, cycles as object counts.
    pub fn show(self, v: u64) -> String {
        match self {
            Metric::Cycles => format!("{v} objects"),
            _ => format_size(v),
        }
    }

    /// Human size with the exact byte count: `1.50 MiB (1572864 B)`.
    pub fn exact(self, v: u64) -> String {
        match self {
            Metric::Cycles => self.show(v),
            _ => format!("{} ({v} B)", format_size(v)),
        }
    }

    fn show_delta(self, d: i128) -> String {
        match self {
            Metric::Cycles => format!("{d:+} objects"),
            _ => format!("{} ({d:+} B)", format_delta(d)),
        }
    }
}

/// The change from `base` to `measured`: in units, and in percent (`from zero` when base is 0).
fn change_from(measured: u64, base: u64) -> (i128, String) {
    let delta = measured as i128 - base as i128;
    let relative = relative_change(measured, base).unwrap_or_else(|| "from zero".to_string());
    (delta, relative)
}

/// The outcome of a test, worst first (the order of the summary).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Over,
    /// The measurement cannot be trusted (SPEC §3): reported, not gated, not recorded.
    Disturbed,
    EnvMismatch,
    Stale,
    New,
    Improved,
    Ok,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Over => "over",
            Outcome::Improved => "improved",
            Outcome::New => "new",
            Outcome::Stale => "stale",
            Outcome::EnvMismatch => "env-mismatch",
            Outcome::Disturbed => "disturbed",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Ok,
            Outcome::Over,
            Outcome::Improved,
            Outcome::New,
            Outcome::Stale,
            Outcome::EnvMismatch,
            Outcome::Disturbed,
        ]
        .into_iter()
        .find(|o| o.name() == s)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a test is judged against, per metric: a baseline with a tolerance, or an absolute limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    Relative {
        baseline: u64,
        tolerance: Tolerance,
    },
    /// An unstable test's baseline: the lowest and highest values its update observed. The limit
    /// is built on the highest; an improvement is below the lowest.
    Spread {
        low: u64,
        high: u64,
        tolerance: Tolerance,
    },
    Absolute {
        limit: u64,
        origin: &'static str,
    },
}

/// One metric's judgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub metric: Metric,
    pub measured: u64,
    pub budget: Budget,
}

impl Check {
    pub fn limit(&self) -> u64 {
        match self.budget {
            Budget::Relative {
                baseline,
                tolerance,
            } => tolerance.limit(baseline),
            Budget::Spread {
                high, tolerance, ..
            } => tolerance.limit(high),
            Budget::Absolute { limit, .. } => limit,
        }
    }

    /// The baseline value the limit is built on (for a spread, its highest value).
    pub fn baseline(&self) -> Option<u64> {
        match self.budget {
            Budget::Relative { baseline, .. } => Some(baseline),
            Budget::Spread { high, .. } => Some(high),
            Budget::Absolute { .. } => None,
        }
    }

    pub fn over(&self) -> bool {
        self.measured > self.limit()
    }

    pub fn improved(&self) -> bool {
        match self.budget {
            Budget::Relative {
                baseline,
                tolerance,
            } => tolerance
                .improved_below(baseline)
                .is_some_and(|b| self.measured < b),
            Budget::Spread { low, tolerance, .. } => tolerance
                .improved_below(low)
                .is_some_and(|b| self.measured < b),
            Budget::Absolute { .. } => false,
        }
    }

    /// The failure line: metric, measured, limit and how it was made, change in % and bytes.
    pub fn explain(&self) -> String {
        let m = self.metric;
        let head = format!(
            "{} {} is over its limit {}",
            m.name(),
            m.exact(self.measured),
            m.exact(self.limit())
        );
        match self.budget {
            Budget::Relative {
                baseline,
                tolerance,
            } => {
                let (delta, pct) = change_from(self.measured, baseline);
                format!(
                    "{head} = baseline {} × (1 + {}) + floor {}; change {pct}, {}",
                    m.show(baseline),
                    tolerance.relative,
                    m.show(tolerance.floor),
                    m.show_delta(delta),
                )
            }
            Budget::Spread {
                low,
                high,
                tolerance,
            } => {
                let (delta, pct) = change_from(self.measured, high);
                format!(
                    "{head} = highest recorded {} × (1 + {}) + floor {}; unstable: its update measured {} to {}; change {pct} over the highest, {}",
                    m.show(high),
                    tolerance.relative,
                    m.show(tolerance.floor),
                    m.show(low),
                    m.show(high),
                    m.show_delta(delta),
                )
            }
            Budget::Absolute { origin, .. } => {
                format!("{head}, the absolute limit set by {origin}")
            }
        }
    }
}

/// The verdict of one measured test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub checks: Vec<Check>,
}

impl Verdict {
    pub fn failing(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.over())
    }
}

/// What the gate needs to know about one test besides its measurement.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub tolerance: Option<Tolerance>,
    pub cycles_tolerance: Option<Tolerance>,
    /// For native_peak and native_retained; DEFAULT_NATIVE_TOLERANCE when None.
    pub native_tolerance: Option<Tolerance>,
    pub peak_limit: Option<(u64, &'static str)>,
    pub retained_limit: Option<(u64, &'static str)>,
    /// Absolute limits of the native figures (the memcheck marker's `native_peak=`...), judged
    /// when this run counts native memory.
    pub native_peak_limit: Option<u64>,
    pub native_retained_limit: Option<u64>,
    pub gate_cycles: bool,
    /// Retained memory is recorded but not compared with its baseline (an absolute retained limit
    /// still applies): for tests whose retained memory is a library's cache, like Hypothesis's.
    pub retained_ungated: bool,
    /// A metric recorded with a spread (an unstable test) is not compared with its baseline
    /// (`@pytest.mark.memcheck(unstable="skip")`); absolute limits still apply.
    pub unstable_ungated: bool,
    pub strict: bool,
}

/// Judge `measured` against `baseline` (None: no baseline; `env_matches` false: a baseline from
/// another environment, which is reported but not gated unless strict).
pub fn judge(
    measured: &Entry,
    baseline: Option<&Entry>,
    env_matches: bool,
    rules: &Rules,
) -> Verdict {
    let tolerance = rules.tolerance.unwrap_or(DEFAULT_TOLERANCE);
    let mut checks = Vec::new();
    for (metric, absolute) in [
        (Metric::Peak, rules.peak_limit),
        (Metric::Retained, rules.retained_limit),
    ] {
        if let Some((limit, origin)) = absolute {
            checks.push(Check {
                metric,
                measured: metric.of(measured),
                budget: Budget::Absolute { limit, origin },
            });
        } else if metric == Metric::Retained && rules.retained_ungated {
            continue;
        } else if let (Some(b), true) = (baseline, env_matches) {
            let budget = match metric.max_of(b) {
                Some(_) if rules.unstable_ungated => continue,
                Some(high) => Budget::Spread {
                    low: metric.of(b),
                    high,
                    tolerance,
                },
                None => Budget::Relative {
                    baseline: metric.of(b),
                    tolerance,
                },
            };
            checks.push(Check {
                metric,
                measured: metric.of(measured),
                budget,
            });
        }
    }
    // Native figures: compared where this run counted them and the baseline holds them.
    let native_tolerance = rules.native_tolerance.unwrap_or(DEFAULT_NATIVE_TOLERANCE);
    for (metric, now, then, absolute) in [
        (
            Metric::NativePeak,
            measured.native_peak,
            baseline.and_then(|b| b.native_peak),
            rules.native_peak_limit,
        ),
        (
            Metric::NativeRetained,
            measured.native_retained,
            baseline.and_then(|b| b.native_retained),
            rules.native_retained_limit,
        ),
    ] {
        if let (Some(now), Some(limit)) = (now, absolute) {
            checks.push(Check {
                metric,
                measured: now,
                budget: Budget::Absolute {
                    limit,
                    origin: "the memcheck marker",
                },
            });
            continue;
        }
        if metric == Metric::NativeRetained && rules.retained_ungated {
            continue;
        }
        if let (Some(now), Some(then), true) = (now, then, env_matches) {
            let budget = match baseline.and_then(|b| metric.max_of(b)) {
                Some(_) if rules.unstable_ungated => continue,
                Some(high) => Budget::Spread {
                    low: then,
                    high,
                    tolerance: native_tolerance,
                },
                None => Budget::Relative {
                    baseline: then,
                    tolerance: native_tolerance,
                },
            };
            checks.push(Check {
                metric,
                measured: now,
                budget,
            });
        }
    }
    // Native figures counted now but absent from the baseline (recorded before native memory
    // was counted) have no baseline yet: the test is `new` until they are recorded, unless they
    // are within the floor (a pure-Python test's), which a zero baseline would allow too.
    let zero_allows = native_tolerance.limit(0);
    let native_new = env_matches
        && baseline.is_some_and(|b| b.native_peak.is_none())
        && [measured.native_peak, measured.native_retained]
            .into_iter()
            .flatten()
            .any(|v| v > zero_allows);
    if let (true, Some(b), true) = (rules.gate_cycles, baseline, env_matches) {
        checks.push(Check {
            metric: Metric::Cycles,
            measured: measured.cycles,
            budget: Budget::Relative {
                baseline: b.cycles,
                tolerance: rules.cycles_tolerance.unwrap_or(Tolerance {
                    relative: Percent::default(),
                    floor: 0,
                }),
            },
        });
    }
    let outcome = if checks.iter().any(Check::over) {
        Outcome::Over
    } else if baseline.is_none() || native_new {
        Outcome::New
    } else if !env_matches {
        Outcome::EnvMismatch
    } else if checks.iter().any(Check::improved) {
        Outcome::Improved
    } else {
        Outcome::Ok
    };
    Verdict { outcome, checks }
}

/// Whether an outcome fails the test.
pub fn fails(outcome: Outcome, strict: bool) -> bool {
    match outcome {
        Outcome::Over => true,
        Outcome::New | Outcome::EnvMismatch | Outcome::Disturbed => strict,
        _ => false,
    }
}

/// A place in a file of the project: where a test is defined, or where it allocated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub path: String,
    /// 1-based.
    pub line: u32,
}

/// One measured test and its verdict. It crosses from xdist workers and into the results JSON in
/// this serialized form.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestResult {
    pub nodeid: String,
    pub outcome: Outcome,
    /// Whether the verdict fails the test.
    pub failed: bool,
    /// The test passed its own assertions: its values may be written by an update.
    pub recordable: bool,
    pub measured: Entry,
    pub baseline: Option<Entry>,
    /// The limit of each gated metric.
    pub limits: BTreeMap<String, u64>,
    #[serde(default)]
    pub location: Option<Location>,
    /// The top allocation site of a failing test's diagnosis, when it is a file of the project
    /// (relative to the root like `location`): where the annotation points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<Location>,
    /// The failure message, empty when the test passes the gate.
    #[serde(default)]
    pub message: String,
    /// Why the measurement cannot be trusted (outcome `disturbed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disturbed: Option<String>,
    /// The metrics recorded with a spread (README, "Unstable tests"): by this update's
    /// measurements, or in the baseline judged. Absent for a stable test.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unstable: Vec<String>,
    #[serde(skip)]
    pub checks: Vec<Check>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn entry(peak: u64, retained: u64) -> Entry {
        Entry {
            peak,
            retained,
            ..Entry::default()
        }
    }

    #[test]
    fn default_limit_catches_twenty_percent_of_one_mib() {
        let t = DEFAULT_TOLERANCE;
        assert_eq!(t.limit(MIB), MIB + 104_857 + 65_536);
        assert!(t.limit(MIB) < MIB + MIB / 5, "+20% of 1 MiB must fail");
        assert!(t.limit(MIB) > MIB + MIB / 100, "+1% must pass");
        let v = judge(
            &entry(MIB + MIB / 5, 0),
            Some(&entry(MIB, 0)),
            true,
            &Rules::default(),
        );
        assert_eq!(v.outcome, Outcome::Over);
        let v = judge(
            &entry(MIB + MIB / 100, 0),
            Some(&entry(MIB, 0)),
            true,
            &Rules::default(),
        );
        assert_eq!(v.outcome, Outcome::Ok);
    }

    #[test]
    fn native_figures_are_gated_where_both_exist() {
        let native = |peak: u64, retained: u64| Entry {
            native_peak: Some(peak),
            native_retained: Some(retained),
            ..entry(1000, 0)
        };
        let rules = Rules::default();
        // limit = 1 MiB × 1.1 + 64 KiB, for each native figure
        let limit = MIB + MIB / 10 + 64 * 1024;
        let base = native(MIB, MIB);
        let v = judge(&native(limit, limit), Some(&base), true, &rules);
        assert_eq!(v.outcome, Outcome::Ok);
        assert_eq!(v.checks.len(), 4);
        let v = judge(&native(MIB, limit + 1), Some(&base), true, &rules);
        assert_eq!(v.outcome, Outcome::Over);
        assert_eq!(
            v.failing().map(|c| c.metric.name()).collect::<Vec<_>>(),
            ["native_retained"]
        );
        assert!(v.failing().next().unwrap().explain().starts_with(
            "native_retained 1.16 MiB (1218970 B) is over its limit 1.16 MiB (1218969 B)"
        ));
        // gate_retained=False spares native_retained too
        let spared = Rules {
            retained_ungated: true,
            ..Rules::default()
        };
        assert_eq!(
            judge(&native(MIB, 10 * MIB), Some(&base), true, &spared).outcome,
            Outcome::Ok
        );
        // counted now, absent from the baseline: new (its python figures are still gated)
        let old = entry(1000, 0);
        assert_eq!(
            judge(&native(MIB, MIB), Some(&old), true, &rules).outcome,
            Outcome::New
        );
        // ... unless within the floor a zero baseline allows (a pure-Python test's), byte-exact
        let floor = 64 * 1024;
        assert_eq!(
            judge(&native(floor, floor), Some(&old), true, &rules).outcome,
            Outcome::Ok
        );
        assert_eq!(
            judge(&native(0, floor + 1), Some(&old), true, &rules).outcome,
            Outcome::New
        );
        assert_eq!(
            judge(&entry(10 * MIB, 0), Some(&base), true, &rules).outcome,
            Outcome::Over
        );
        // not counted now: the baseline's native figures are not judged
        let v = judge(&entry(1000, 0), Some(&base), true, &rules);
        assert_eq!((v.outcome, v.checks.len()), (Outcome::Ok, 2));
    }

    #[test]
    fn native_marker_limits_are_absolute_and_need_native_figures() {
        let native = |peak: u64| Entry {
            native_peak: Some(peak),
            native_retained: Some(0),
            ..entry(1000, 0)
        };
        let rules = Rules {
            native_peak_limit: Some(MIB),
            ..Rules::default()
        };
        // without a baseline, at the byte
        assert_eq!(
            judge(&native(MIB), None, true, &rules).outcome,
            Outcome::New
        );
        let v = judge(&native(MIB + 1), None, true, &rules);
        assert_eq!(v.outcome, Outcome::Over);
        assert!(v.failing().next().unwrap().explain().starts_with(
            "native_peak 1.00 MiB (1048577 B) is over its limit 1.00 MiB (1048576 B)"
        ));
        // the absolute limit replaces the relative one: a baseline of 1 KiB does not fail 900 KiB
        let base = native(1024);
        assert_eq!(
            judge(&native(900 * 1024), Some(&base), true, &rules).outcome,
            Outcome::Ok
        );
        // not counted in this run: nothing to judge
        assert_eq!(
            judge(&entry(1000, 0), Some(&base), true, &rules).outcome,
            Outcome::Ok
        );
    }

    #[test]
    fn exact_byte_boundary() {
        let t = Tolerance {
            relative: Percent::from_percent(10),
            floor: 100,
        };
        let rules = Rules {
            tolerance: Some(t),
            ..Rules::default()
        };
        let base = entry(1000, 0);
        // limit = 1000 + 100 + 100 = 1200: 1200 passes, 1201 fails.
        assert_eq!(
            judge(&entry(1200, 0), Some(&base), true, &rules).outcome,
            Outcome::Ok
        );
        assert_eq!(
            judge(&entry(1201, 0), Some(&base), true, &rules).outcome,
            Outcome::Over
        );
        // improved below 1000 - 100 - 100 = 800.
        assert_eq!(
            judge(&entry(800, 0), Some(&base), true, &rules).outcome,
            Outcome::Ok
        );
        assert_eq!(
            judge(&entry(799, 0), Some(&base), true, &rules).outcome,
            Outcome::Improved
        );
    }

    #[test]
    fn absolute_limits_need_no_baseline() {
        let rules = Rules {
            peak_limit: Some((2048, "limit_memory")),
            ..Rules::default()
        };
        assert_eq!(
            judge(&entry(2048, 0), None, true, &rules).outcome,
            Outcome::New
        );
        let v = judge(&entry(2049, 0), None, true, &rules);
        assert_eq!(v.outcome, Outcome::Over);
        let msg = v.failing().next().unwrap().explain();
        assert!(msg.contains("absolute limit set by limit_memory"), "{msg}");
    }

    #[test]
    fn other_environment_is_reported_not_gated() {
        let v = judge(
            &entry(10 * MIB, 0),
            Some(&entry(MIB, 0)),
            false,
            &Rules::default(),
        );
        assert_eq!(v.outcome, Outcome::EnvMismatch);
        assert!(!fails(v.outcome, false));
        assert!(fails(v.outcome, true));
        assert!(fails(Outcome::New, true) && !fails(Outcome::New, false));
    }

    #[test]
    fn retained_can_be_left_ungated() {
        let rules = Rules {
            retained_ungated: true,
            ..Rules::default()
        };
        let v = judge(&entry(MIB, 10 * MIB), Some(&entry(MIB, 0)), true, &rules);
        assert_eq!(v.outcome, Outcome::Ok);
        let rules = Rules {
            retained_limit: Some((MIB, "the memcheck marker")),
            ..rules
        };
        let v = judge(&entry(MIB, 10 * MIB), Some(&entry(MIB, 0)), true, &rules);
        assert_eq!(v.outcome, Outcome::Over, "absolute limits still apply");
    }

    #[test]
    fn cycles_are_gated_only_when_asked() {
        let base = Entry {
            cycles: 2,
            ..entry(0, 0)
        };
        let now = Entry {
            cycles: 3,
            ..entry(0, 0)
        };
        assert_eq!(
            judge(&now, Some(&base), true, &Rules::default()).outcome,
            Outcome::Ok
        );
        let rules = Rules {
            gate_cycles: true,
            ..Rules::default()
        };
        let v = judge(&now, Some(&base), true, &rules);
        assert_eq!(v.outcome, Outcome::Over);
        let msg = v.failing().next().unwrap().explain();
        assert!(msg.starts_with("cycles 3 objects"), "{msg}");
    }

    #[test]
    fn explain_names_every_number() {
        let v = judge(
            &entry(2 * MIB, 0),
            Some(&entry(MIB, 0)),
            true,
            &Rules::default(),
        );
        let msg = v.failing().next().unwrap().explain();
        assert_eq!(
            msg,
            "peak 2.00 MiB (2097152 B) is over its limit 1.16 MiB (1218969 B) = baseline 1.00 MiB × (1 + 10%) + floor 64.0 KiB; change +100.0%, +1.00 MiB (+1048576 B)"
        );
    }

    #[test]
    fn an_unstable_baseline_is_judged_against_its_highest_value() {
        let t = Tolerance {
            relative: Percent::from_percent(10),
            floor: 100,
        };
        let rules = Rules {
            tolerance: Some(t),
            ..Rules::default()
        };
        let base = Entry {
            peak_max: Some(3000),
            ..entry(1000, 0)
        };
        // limit = 3000 + 300 + 100 = 3400: 3400 passes, 3401 fails.
        let v = judge(&entry(3400, 0), Some(&base), true, &rules);
        assert_eq!(v.outcome, Outcome::Ok);
        assert_eq!(v.checks[0].limit(), 3400);
        let v = judge(&entry(3401, 0), Some(&base), true, &rules);
        assert_eq!(v.outcome, Outcome::Over);
        assert_eq!(
            v.failing().next().unwrap().explain(),
            "peak 3.32 KiB (3401 B) is over its limit 3.32 KiB (3400 B) = highest recorded 2.93 KiB × (1 + 10%) + floor 100 B; unstable: its update measured 1000 B to 2.93 KiB; change +13.4% over the highest, +401 B (+401 B)"
        );
        // Improved is below the lowest: 1000 - 100 - 100 = 800.
        assert_eq!(
            judge(&entry(800, 0), Some(&base), true, &rules).outcome,
            Outcome::Ok
        );
        assert_eq!(
            judge(&entry(799, 0), Some(&base), true, &rules).outcome,
            Outcome::Improved
        );
        // Negative control: the same value against a stable baseline fails.
        assert_eq!(
            judge(&entry(3400, 0), Some(&entry(1000, 0)), true, &rules).outcome,
            Outcome::Over
        );
        // unstable="skip": the unstable metric is not gated; a stable one and absolute limits are.
        let skip = Rules {
            unstable_ungated: true,
            ..rules.clone()
        };
        let v = judge(&entry(1 << 30, 0), Some(&base), true, &skip);
        assert_eq!(v.outcome, Outcome::Ok);
        assert!(v.checks.iter().all(|c| c.metric != Metric::Peak));
        let v = judge(&entry(0, 5000), Some(&base), true, &skip);
        assert_eq!(v.outcome, Outcome::Over, "retained is stable: gated");
        let v = judge(
            &entry(1 << 30, 0),
            Some(&base),
            true,
            &Rules {
                peak_limit: Some((1 << 20, "the memcheck marker")),
                ..skip
            },
        );
        assert_eq!(v.outcome, Outcome::Over, "absolute limits still apply");
    }

    #[test]
    fn tolerance_holds_both_ways() {
        let t = DEFAULT_TOLERANCE;
        assert!(t.holds(MIB, MIB));
        assert!(!t.holds(MIB, 2 * MIB));
        assert!(!t.holds(MIB, 0));
        assert!(t.holds(0, 1000));
    }
}
