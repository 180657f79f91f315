//! Unstable tests (README, "Unstable tests"): when the measurements of an update differ by more
//! than the test's tolerance, the update measures again, up to [`MAX_RUNS`] in all, and records
//! the spread — the lowest value as `peak`/`retained`, the highest as `peak_max`/`retained_max`,
//! and likewise for the native figures (`native_peak_max`, `native_retained_max`, judged with
//! the native tolerance) — so that the gate judges a later value against what was actually
//! observed. A test whose measurements agree is recorded exactly as before: the smaller of its
//! two measurements, no `_max` keys.

use crate::baseline::Entry;
use crate::gate::{Rules, Tolerance, DEFAULT_NATIVE_TOLERANCE, DEFAULT_TOLERANCE};

/// Measurements of one test an update takes at most (the first two included).
pub const MAX_RUNS: usize = 5;

/// Whether two measurements of a metric differ by more than the tolerance.
fn differs(a: u64, b: u64, t: &Tolerance) -> bool {
    a.max(b) > t.limit(a.min(b))
}

/// The smaller values, metric by metric, without a spread. Native figures stay absent unless
/// every measurement counted them.
fn least(runs: &[Entry]) -> Entry {
    let min = |f: fn(&Entry) -> u64| runs.iter().map(f).min().unwrap_or(0);
    let min_counted = |f: fn(&Entry) -> Option<u64>| {
        runs.iter()
            .map(f)
            .collect::<Option<Vec<u64>>>()
            .and_then(|v| v.into_iter().min())
    };
    Entry {
        peak: min(|e| e.peak),
        retained: min(|e| e.retained),
        allocations: min(|e| e.allocations),
        cycles: min(|e| e.cycles),
        native_peak: min_counted(|e| e.native_peak),
        native_retained: min_counted(|e| e.native_retained),
        combined_peak: min_counted(|e| e.combined_peak),
        ..Entry::default()
    }
}

/// One figure of an entry as settling sees it: its value (None when not counted), its spread,
/// and the tolerance it is judged with.
struct Figure {
    value: fn(&Entry) -> Option<u64>,
    high: fn(&Entry) -> Option<u64>,
    tolerance: Tolerance,
    /// Judged at all (retained figures are not under `gate_retained=False`).
    gated: bool,
}

fn figures(rules: &Rules) -> [Figure; 4] {
    let t = rules.tolerance.unwrap_or(DEFAULT_TOLERANCE);
    let native = rules.native_tolerance.unwrap_or(DEFAULT_NATIVE_TOLERANCE);
    let retained = !rules.retained_ungated;
    [
        Figure {
            value: |e| Some(e.peak),
            high: |e| e.peak_max,
            tolerance: t,
            gated: true,
        },
        Figure {
            value: |e| Some(e.retained),
            high: |e| e.retained_max,
            tolerance: t,
            gated: retained,
        },
        Figure {
            value: |e| e.native_peak,
            high: |e| e.native_peak_max,
            tolerance: native,
            gated: true,
        },
        Figure {
            value: |e| e.native_retained,
            high: |e| e.native_retained_max,
            tolerance: native,
            gated: retained,
        },
    ]
}

/// What an update records from the measurements of one test so far (in the order taken), and
/// whether it wants another one.
///
/// - Fewer than two: the measurement, nothing more wanted (a test that must not run twice).
/// - The first two agree within the tolerance (peak, retained when it is gated, and the native
///   figures when counted, with their own tolerance): the smaller values, as always, and
///   nothing more.
/// - They differ: more are wanted, up to [`MAX_RUNS`]. A figure is unstable when the highest of
///   the measurements after the first is above the lowest of all by more than the tolerance: it
///   is recorded as the lowest and the highest. The first measurement counts only for the lowest:
///   one-time costs (first imports, caches) land in it, and a test whose later runs agree is not
///   unstable but was warming up — it is recorded as before.
pub fn settle(runs: &[Entry], rules: &Rules) -> (Entry, bool) {
    if runs.len() < 2 {
        return (least(runs), false);
    }
    let figures = figures(rules);
    let (a, b) = (&runs[0], &runs[1]);
    let first_two_differ = figures.iter().any(|f| {
        f.gated && matches!(((f.value)(a), (f.value)(b)), (Some(x), Some(y)) if differs(x, y, &f.tolerance))
    });
    if !first_two_differ {
        return (least(&runs[..2]), false);
    }
    let more = runs.len() < MAX_RUNS;
    let low = least(runs);
    let [peak_max, retained_max, native_peak_max, native_retained_max] = figures.map(|f| {
        let lowest = (f.value)(&low).filter(|_| f.gated)?;
        let highest = runs[1..].iter().filter_map(f.value).max()?;
        Some(highest).filter(|h| *h > f.tolerance.limit(lowest))
    });
    if [peak_max, retained_max, native_peak_max, native_retained_max]
        .iter()
        .all(Option::is_none)
    {
        // Warming up, not unstable: what an update has always recorded.
        return (least(&runs[..2]), more);
    }
    let entry = Entry {
        peak_max,
        retained_max,
        native_peak_max,
        native_retained_max,
        ..low
    };
    (entry, more)
}

/// A measurement that was not settled by an update (a gate run's) joins the spread `old`
/// recorded: the lowest and the highest of both, so a spread is never dropped by one or two
/// measurements that happened to agree.
pub fn widen(measured: &mut Entry, old: &Entry) {
    if let Some(high) = old.peak_max {
        measured.peak_max = Some(high.max(measured.peak_max.unwrap_or(measured.peak)));
        measured.peak = measured.peak.min(old.peak);
    }
    if let Some(high) = old.retained_max {
        measured.retained_max = Some(high.max(measured.retained_max.unwrap_or(measured.retained)));
        measured.retained = measured.retained.min(old.retained);
    }
    // Native figures, where this measurement counted them.
    if let (Some(high), Some(now)) = (old.native_peak_max, measured.native_peak) {
        measured.native_peak_max = Some(high.max(measured.native_peak_max.unwrap_or(now)));
        measured.native_peak = Some(old.native_peak.map_or(now, |o| now.min(o)));
    }
    if let (Some(high), Some(now)) = (old.native_retained_max, measured.native_retained) {
        measured.native_retained_max = Some(high.max(measured.native_retained_max.unwrap_or(now)));
        measured.native_retained = Some(old.native_retained.map_or(now, |o| now.min(o)));
    }
}

/// Whether a recorded entry already accounts for a new measurement, so that an update leaves it
/// alone (files do not churn): every value of the new one, its spread included, passes the old
/// entry's gate and none is an improvement. For two stable entries this is
/// [`Tolerance::holds`] on peak and on retained (and on the native figures, with their own
/// tolerance: one this run did not count holds; one counted now and missing from the old entry
/// does not).
pub fn covers(old: &Entry, new: &Entry, rules: &Rules) -> bool {
    figures(&Rules {
        retained_ungated: false,
        ..rules.clone()
    })
    .into_iter()
    .all(|f| match ((f.value)(old), (f.value)(new)) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(low), Some(new_low)) => {
            let (high, new_high) = ((f.high)(old), (f.high)(new));
            let t = f.tolerance;
            new_high.unwrap_or(new_low) <= t.limit(high.unwrap_or(low))
                && t.improved_below(low).is_none_or(|b| new_low >= b)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    fn e(peak: u64, retained: u64) -> Entry {
        Entry {
            peak,
            retained,
            allocations: 7,
            ..Entry::default()
        }
    }

    #[test]
    fn a_gate_run_s_measurement_widens_a_spread_and_never_drops_it() {
        let old = Entry {
            peak_max: Some(3 * MIB),
            ..e(MIB, 0)
        };
        let mut inside = e(2 * MIB, 5);
        widen(&mut inside, &old);
        assert_eq!((inside.peak, inside.peak_max), (MIB, Some(3 * MIB)));
        assert_eq!(
            (inside.retained, inside.retained_max),
            (5, None),
            "retained was stable"
        );
        let mut above = e(4 * MIB, 0);
        widen(&mut above, &old);
        assert_eq!((above.peak, above.peak_max), (MIB, Some(4 * MIB)));
        let mut below = e(MIB / 2, 0);
        widen(&mut below, &old);
        assert_eq!((below.peak, below.peak_max), (MIB / 2, Some(3 * MIB)));
        // a stable entry stays stable
        let mut plain = e(2 * MIB, 0);
        widen(&mut plain, &e(MIB, 0));
        assert_eq!(plain, e(2 * MIB, 0));
    }

    #[test]
    fn agreeing_measurements_are_recorded_as_always() {
        let rules = Rules::default();
        let (entry, more) = settle(&[e(MIB + 10, 5), e(MIB, 6)], &rules);
        assert!(!more);
        assert_eq!(entry, e(MIB, 5));
        assert!(!entry.unstable());
        // One measurement (confirm=False): itself.
        assert_eq!(settle(&[e(3, 4)], &rules), (e(3, 4), false));
    }

    #[test]
    fn differing_measurements_ask_for_more_up_to_five() {
        let rules = Rules::default();
        let mut runs = vec![e(MIB, 0), e(3 * MIB, 0)];
        let (_, more) = settle(&runs, &rules);
        assert!(more);
        runs.push(e(2 * MIB, 0));
        runs.push(e(MIB, 0));
        assert!(settle(&runs, &rules).1);
        runs.push(e(MIB, 0));
        let (entry, more) = settle(&runs, &rules);
        assert!(!more, "five at most");
        assert_eq!(entry.peak, MIB);
        assert_eq!(entry.peak_max, Some(3 * MIB));
        assert_eq!(entry.retained_max, None, "retained was stable");
        assert!(entry.unstable());
    }

    #[test]
    fn a_first_run_with_one_time_costs_is_warming_up_not_unstable() {
        let rules = Rules::default();
        let runs = [
            e(4 * MIB, 2 * MIB),
            e(MIB, 0),
            e(MIB, 0),
            e(MIB + 1, 0),
            e(MIB, 0),
        ];
        let (entry, more) = settle(&runs, &rules);
        assert!(!more);
        // Exactly what two measurements give today: the smaller of the first two.
        assert_eq!(entry, e(MIB, 0));
        // Negative control: a later run that is high again makes it unstable.
        let runs = [e(4 * MIB, 0), e(MIB, 0), e(4 * MIB, 0)];
        assert_eq!(settle(&runs, &rules).0.peak_max, Some(4 * MIB));
    }

    #[test]
    fn the_tests_tolerance_decides_and_ungated_retained_is_left_out() {
        let loose = Rules {
            tolerance: Some(Tolerance {
                relative: crate::sizes::Percent::from_percent(300),
                floor: 0,
            }),
            ..Rules::default()
        };
        assert!(!settle(&[e(MIB, 0), e(3 * MIB, 0)], &loose).1);
        let ungated = Rules {
            retained_ungated: true,
            ..Rules::default()
        };
        let (entry, more) = settle(&[e(MIB, 0), e(MIB, 5 * MIB)], &ungated);
        assert!(!more && !entry.unstable());
        let (entry, more) = settle(&[e(MIB, 0), e(MIB, 5 * MIB)], &Rules::default());
        assert!(more);
        assert_eq!((entry.retained, entry.retained_max), (0, Some(5 * MIB)));
    }

    #[test]
    fn covers_is_holds_for_stable_entries_and_the_range_for_spreads() {
        let t = DEFAULT_TOLERANCE;
        let r = Rules::default();
        let spread = Entry {
            peak_max: Some(3 * MIB),
            ..e(MIB, 0)
        };
        assert!(covers(&spread, &e(3 * MIB, 0), &r));
        assert!(covers(&spread, &e(MIB, 0), &r));
        assert!(!covers(&spread, &e(4 * MIB, 0), &r), "above the spread");
        assert!(!covers(&spread, &e(MIB / 2, 0), &r), "an improvement");
        assert!(covers(&e(MIB, 0), &spread, &r) == t.holds(MIB, 3 * MIB));
        let narrow = Entry {
            peak_max: Some(MIB + MIB / 20),
            ..e(MIB, 0)
        };
        assert!(covers(&e(MIB, 0), &narrow, &r));
    }

    /// zstandard's `train_dictionary(threads=-1)`, as the real-suites trial saw it: native
    /// peaks of 12.2 MB or 18.5 MB, as libzstd's two workers overlap or not.
    #[test]
    fn a_varying_native_figure_is_recorded_as_a_spread_and_gated_by_it() {
        let n = |native_peak: u64| Entry {
            native_peak: Some(native_peak),
            native_retained: Some(0),
            ..e(MIB, 0)
        };
        let rules = Rules::default();
        let (low, high) = (12_160_977, 18_467_488);
        let (entry, more) = settle(&[n(low), n(high)], &rules);
        assert!(more, "the first two differ: measure again");
        assert_eq!(
            (entry.native_peak, entry.native_peak_max),
            (Some(low), Some(high))
        );
        assert_eq!((entry.peak_max, entry.native_retained_max), (None, None));
        // the gate judges by the highest recorded: the high value passes, beyond it fails
        let over = |m: u64, b: &Entry| {
            crate::gate::judge(&n(m), Some(b), true, &rules)
                .failing()
                .count()
                > 0
        };
        assert!(!over(high, &entry));
        assert!(!over(18_557_304, &entry));
        assert!(over(25_000_000, &entry));
        // negative control: agreeing native figures settle as before, without a spread
        let (stable, more) = settle(&[n(low), n(low + 100)], &rules);
        assert!(!more);
        assert_eq!(
            (stable.native_peak, stable.native_peak_max),
            (Some(low), None)
        );
        assert!(over(high, &stable));
        // an update's entry covers a later measurement inside the spread; a gate run widens it
        assert!(covers(&entry, &n(high), &rules));
        let mut later = n(20_033_844);
        widen(&mut later, &entry);
        assert_eq!(
            (later.native_peak, later.native_peak_max),
            (Some(low), Some(20_033_844))
        );
        assert_eq!(entry.spread_error(), None);
        let upside_down = Entry {
            native_peak_max: Some(1),
            ..entry
        };
        assert!(upside_down
            .spread_error()
            .unwrap()
            .starts_with("native_peak_max = 1 is below"));
    }

    proptest! {
        #[test]
        fn covers_equals_holds_without_spreads(a in 0u64..1 << 40, b in 0u64..1 << 40, c in 0u64..1 << 30, d in 0u64..1 << 30) {
            let t = DEFAULT_TOLERANCE;
            prop_assert_eq!(covers(&e(a, c), &e(b, d), &Rules::default()), t.holds(a, b) && t.holds(c, d));
        }

        #[test]
        fn two_agreeing_runs_are_always_least(p in 0u64..1 << 40, q in 0u64..1 << 40) {
            let rules = Rules::default();
            let (entry, _) = settle(&[e(p, q), e(p, q)], &rules);
            prop_assert_eq!(entry, e(p, q));
        }

        #[test]
        fn a_spread_is_ordered(runs in proptest::collection::vec((0u64..1 << 32, 0u64..1 << 32), 1..=5)) {
            let runs: Vec<Entry> = runs.into_iter().map(|(p, r)| e(p, r)).collect();
            let (entry, _) = settle(&runs, &Rules::default());
            prop_assert!(entry.spread_error().is_none());
            // Never above what the first two measurements give today.
            let today = runs.iter().take(2).map(|r| r.peak).min().unwrap();
            prop_assert!(entry.peak <= today);
        }
    }
}
