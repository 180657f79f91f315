//! What the user reads: the failure message of a test and the terminal summary table. Node ids
//! and the update command (which holds one) are escaped for the terminal (`escape.rs`): an id
//! read from a baseline file or a parametrized value can hold ESC sequences or CR.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, ContentArrangement, Table};

use crate::escape::terminal;
use crate::gate::TestResult;
use crate::gate::{Outcome, SPREAD_METRICS};
use crate::sizes::{format_change, format_size};

/// The message of a test the gate fails.
pub fn failure_message(r: &TestResult, update_hint: &str) -> String {
    let update_hint = &terminal(update_hint);
    let mut lines = Vec::new();
    match r.outcome {
        Outcome::Over => {
            lines.push("memcheck: over budget".to_string());
            for c in r.checks.iter().filter(|c| c.over()) {
                lines.push(format!("  {}", c.explain()));
            }
            // Allocation calls only where counted (the python meter): 0 from another meter
            // would read as a figure.
            let calls = match r.measured.allocations {
                0 => String::new(),
                n => format!("{n} allocations, "),
            };
            lines.push(format!(
                "  measured: peak {}, retained {}, {calls}{} cycle objects",
                format_size(r.measured.peak),
                format_size(r.measured.retained),
                r.measured.cycles
            ));
            if let (Some(p), Some(k)) = (r.measured.native_peak, r.measured.native_retained) {
                let together = r.measured.combined_peak.map_or(String::new(), |c| {
                    format!("; python and native at one moment: at most {}", format_size(c))
                });
                lines.push(format!(
                    "  native (malloc family of extensions): peak {}, retained {}{together}",
                    format_size(p),
                    format_size(k)
                ));
            }
            if r.checks.iter().any(|c| c.over() && c.baseline().is_some()) {
                lines.push(format!("  if the growth is intended, accept it: {update_hint}"));
            }
        }
        Outcome::New => lines.push(format!(
            "memcheck: no baseline for this test (strict mode); record one: {update_hint}"
        )),
        Outcome::EnvMismatch => lines.push(format!(
            "memcheck: the baseline was recorded in another environment (strict mode); re-record it: {update_hint}"
        )),
        Outcome::Disturbed => lines.push(format!(
            "memcheck: the measurement cannot be trusted (strict mode): {}",
            r.disturbed.as_deref().unwrap_or("unknown reason")
        )),
        _ => {}
    }
    lines.join("\n")
}

/// The change from the baseline, empty without one.
pub fn delta(now: u64, base: Option<u64>) -> String {
    base.map(|b| format_change(now, b)).unwrap_or_default()
}

/// The summary table: tests over budget, improved, new, with other environments' baselines, and
/// stale entries; every test when `verbose`. The allocations column only when the meter counts
/// them (`MeterKind::counts_allocations`).
pub fn summary_table(
    results: &[TestResult],
    stale: &[String],
    verbose: bool,
    counts_allocations: bool,
) -> Option<String> {
    let mut rows: Vec<&TestResult> = results
        .iter()
        .filter(|r| verbose || r.outcome != Outcome::Ok)
        .collect();
    rows.sort_by(|a, b| (a.outcome, &a.nodeid).cmp(&(b.outcome, &b.nodeid)));
    if rows.is_empty() && stale.is_empty() {
        return None;
    }
    // Native columns only when this run counted native memory (`--memcheck-native`).
    let native = rows.iter().any(|r| r.measured.native_peak.is_some());
    let mut header = vec![
        "outcome",
        "test",
        "peak",
        "Δ peak",
        "retained",
        "Δ retained",
    ];
    if counts_allocations {
        header.push("allocations");
    }
    if native {
        header.extend([
            "native peak",
            "Δ native peak",
            "native retained",
            "Δ native retained",
        ]);
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        // Node ids stay on one line, whatever the terminal width: they are copied and grepped.
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.clone());
    for r in rows {
        let base = r.baseline;
        let mut row = vec![
            Cell::new(r.outcome.name()),
            Cell::new(terminal(&r.nodeid)),
            Cell::new(format_size(r.measured.peak)),
            Cell::new(delta(
                r.measured.peak,
                base.map(|b| b.peak_max.unwrap_or(b.peak)),
            )),
            Cell::new(format_size(r.measured.retained)),
            Cell::new(delta(
                r.measured.retained,
                base.map(|b| b.retained_max.unwrap_or(b.retained)),
            )),
        ];
        if counts_allocations {
            row.push(Cell::new(r.measured.allocations));
        }
        if native {
            let show = |v: Option<u64>| v.map(format_size).unwrap_or_default();
            let m = &r.measured;
            row.extend([
                Cell::new(show(m.native_peak)),
                Cell::new(m.native_peak.map_or(String::new(), |v| {
                    delta(v, base.and_then(|b| b.native_peak_max.or(b.native_peak)))
                })),
                Cell::new(show(m.native_retained)),
                Cell::new(m.native_retained.map_or(String::new(), |v| {
                    delta(
                        v,
                        base.and_then(|b| b.native_retained_max.or(b.native_retained)),
                    )
                })),
            ]);
        }
        table.add_row(row);
    }
    for s in stale {
        let mut row = vec![Cell::new("stale"), Cell::new(terminal(s))];
        row.resize_with(header.len(), || Cell::new(""));
        table.add_row(row);
    }
    Some(table.to_string())
}

/// Why each disturbed measurement cannot be trusted: one line per test.
pub fn disturbed_lines(results: &[TestResult]) -> Vec<String> {
    let mut lines: Vec<String> = results
        .iter()
        .filter_map(|r| {
            let reason = r.disturbed.as_deref()?;
            Some(format!(
                "disturbed: {}: {}; not gated",
                crate::escape::terminal(&r.nodeid),
                crate::escape::terminal(reason)
            ))
        })
        .collect();
    lines.sort();
    lines
}

/// One line per unstable test (README, "Unstable tests"): its spread, and what the gate does
/// with it. From an update's measurements (`measured` has the spread) or a baseline's.
pub fn unstable_lines(results: &[TestResult]) -> Vec<String> {
    let mut lines: Vec<String> = results
        .iter()
        .filter(|r| !r.unstable.is_empty())
        .map(|r| {
            let measured = r.measured.unstable();
            let spread = match (measured, r.baseline) {
                (true, _) => r.measured,
                (false, Some(b)) => b,
                (false, None) => r.measured,
            };
            let ranges: Vec<String> = SPREAD_METRICS
                .into_iter()
                .filter_map(|m| {
                    let high = m.max_of(&spread)?;
                    let mut range = format!(
                        "{} {} to {}",
                        m.name(),
                        format_size(m.of(&spread)),
                        format_size(high)
                    );
                    if !measured {
                        // `limits`, not `checks`: results from xdist workers carry only it.
                        match r.limits.get(m.name()) {
                            Some(limit) => {
                                range.push_str(&format!(" (passes up to {})", format_size(*limit)))
                            }
                            None => range.push_str(" (not gated)"),
                        }
                    }
                    Some(range)
                })
                .collect();
            let what = if measured {
                "measured by this update, which differed by more than the tolerance"
            } else {
                "recorded by an update; gated against the highest value"
            };
            format!(
                "unstable: {}: {}; {what}",
                terminal(&r.nodeid),
                ranges.join(", ")
            )
        })
        .collect();
    lines.sort();
    lines
}

/// Tests measured but not gated because their baselines come from another environment: said
/// loudly, never a quiet pass. Returns the message and whether no test at all was gated.
pub fn ungated(
    results: &[TestResult],
    here: &str,
    recorded: &[String],
    update_hint: &str,
) -> Option<(String, bool)> {
    let foreign = results
        .iter()
        .filter(|r| r.outcome == Outcome::EnvMismatch)
        .count();
    if foreign == 0 {
        return None;
    }
    let gated = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Ok | Outcome::Over | Outcome::Improved))
        .count();
    let message = format!(
        "{foreign} of {} measured tests were not gated: their baselines were recorded in another \
         environment ({}) than this one ({}). Record baselines here ({}, or \
         memcheck update --from the results of a CI run), or keep one set per platform with \
         baseline-dir = \"baselines/{{platform}}\"; jobs with another meter or interpreter mode \
         (-X dev, PYTHONMALLOC) get their own directory, e.g. --memcheck-baseline-dir=baselines-dev.",
        results.len(),
        crate::escape::terminal(&recorded.join("; ")),
        crate::escape::terminal(here),
        crate::escape::terminal(update_hint),
    );
    Some((message, gated == 0))
}

/// What to do next about tests that are neither failing nor fine: new ones have no baseline,
/// improved ones could have a lower one. Said after a gate run, not an update (which records).
pub fn next_steps(results: &[TestResult]) -> Vec<String> {
    let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
    let tests = |n: usize| {
        if n == 1 {
            "1 test".to_string()
        } else {
            format!("{n} tests")
        }
    };
    let mut lines = Vec::new();
    let new = count(Outcome::New);
    if new > 0 {
        lines.push(format!(
            "{} without a baseline, not gated: record {} with pytest --memcheck-update and commit the baseline files",
            tests(new),
            if new == 1 { "it" } else { "them" }
        ));
    }
    let improved = count(Outcome::Improved);
    if improved > 0 {
        lines.push(format!(
            "{} improved: pytest --memcheck-update records the lower values, so a later regression is caught from there",
            tests(improved)
        ));
    }
    lines
}

/// One line of totals: `12 measured: 1 over, 2 new, 9 ok`.
pub fn totals_line(results: &[TestResult], stale: usize) -> String {
    let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
    let mut parts = Vec::new();
    for o in [
        Outcome::Over,
        Outcome::Disturbed,
        Outcome::Improved,
        Outcome::New,
        Outcome::EnvMismatch,
        Outcome::Ok,
    ] {
        let n = count(o);
        if n > 0 {
            parts.push(format!("{n} {}", o.name()));
        }
    }
    if stale > 0 {
        parts.push(format!("{stale} stale"));
    }
    if parts.is_empty() {
        parts.push("nothing to report".into());
    }
    // Not an outcome: an unstable test is also counted as ok, over or improved above.
    let unstable = results.iter().filter(|r| !r.unstable.is_empty()).count();
    let unstable = if unstable > 0 {
        format!("; {unstable} unstable")
    } else {
        String::new()
    };
    format!("{} measured: {}{unstable}", results.len(), parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::Entry;
    use crate::gate::{judge, Rules};

    fn result(id: &str, peak: u64, base: Option<u64>) -> TestResult {
        let measured = Entry {
            peak,
            retained: 0,
            allocations: 3,
            cycles: 0,
            ..Entry::default()
        };
        let b = base.map(|p| Entry {
            peak: p,
            ..measured
        });
        let v = judge(&measured, b.as_ref(), true, &Rules::default());
        TestResult {
            nodeid: id.into(),
            outcome: v.outcome,
            measured,
            baseline: b,
            limits: Default::default(),
            location: None,
            site: None,
            message: String::new(),
            checks: v.checks,
            recordable: true,
            disturbed: None,
            unstable: vec![],
            failed: v.outcome == Outcome::Over,
        }
    }

    #[test]
    fn table_lists_what_needs_attention() {
        let rs = vec![
            result("t.py::ok", 100, Some(100)),
            result("t.py::over", 4 << 20, Some(1 << 20)),
            result("t.py::new", 10, None),
        ];
        let t = summary_table(&rs, &["t.py::gone".into()], false, true).unwrap();
        assert!(t.contains("t.py::over") && t.contains("t.py::new") && t.contains("t.py::gone"));
        assert!(!t.contains("t.py::ok"));
        assert!(
            t.find("over").unwrap() < t.find("t.py::new").unwrap(),
            "worst first"
        );
        assert!(t.contains("+3.00 MiB +300.0%"), "{t}");
        assert!(summary_table(&rs, &[], true, true)
            .unwrap()
            .contains("t.py::ok"));
        assert_eq!(
            totals_line(&rs, 1),
            "3 measured: 1 over, 1 new, 1 ok, 1 stale"
        );
        assert!(summary_table(&rs[..1], &[], false, true).is_none());
    }

    #[test]
    fn allocations_are_shown_only_where_counted() {
        let mut r = result("t.py::over", 4 << 20, Some(1 << 20));
        r.measured.allocations = 7;
        let counted = summary_table(std::slice::from_ref(&r), &[], true, true).unwrap();
        assert!(
            counted.contains("allocations") && counted.contains(" 7 "),
            "{counted}"
        );
        // tracemalloc and rss count no calls: their 0 is left out, not shown as a figure
        let uncounted = summary_table(std::slice::from_ref(&r), &[], true, false).unwrap();
        assert!(!uncounted.contains("allocations"), "{uncounted}");
        assert!(failure_message(&r, "hint").contains(", 7 allocations, "));
        r.measured.allocations = 0;
        assert!(!failure_message(&r, "hint").contains("allocations"));
    }

    #[test]
    fn failure_message_names_numbers_and_the_fix() {
        let r = result("t.py::over", 4 << 20, Some(1 << 20));
        let m = failure_message(&r, "pytest --memcheck-update 't.py::over'");
        assert!(
            m.starts_with("memcheck: over budget\n  peak 4.00 MiB (4194304 B) is over its limit"),
            "{m}"
        );
        assert!(
            m.contains("accept it: pytest --memcheck-update 't.py::over'"),
            "{m}"
        );
        let m = failure_message(&r, "pytest --memcheck-update 't.py::o[\u{1b}[2J\r]'");
        assert!(m.ends_with("'t.py::o[\\x1b[2J\\x0d]'"), "{m}");
    }

    #[test]
    fn unstable_tests_get_a_line_and_a_count() {
        let mut spread = result("t.py::spread", 100, None);
        spread.measured.peak_max = Some(3 << 20);
        spread.unstable = vec!["peak".into()];
        let base = Entry {
            peak: 1 << 20,
            peak_max: Some(3 << 20),
            ..Entry::default()
        };
        let gated = {
            let measured = Entry {
                peak: 2 << 20,
                ..Entry::default()
            };
            let v = judge(&measured, Some(&base), true, &Rules::default());
            TestResult {
                nodeid: "t.py::gated".into(),
                outcome: v.outcome,
                measured,
                baseline: Some(base),
                limits: v
                    .checks
                    .iter()
                    .map(|c| (c.metric.name().to_string(), c.limit()))
                    .collect(),
                checks: vec![],
                unstable: vec!["peak".into()],
                ..result("t.py::gated", 0, None)
            }
        };
        let rs = vec![result("t.py::stable", 100, Some(100)), spread, gated];
        assert_eq!(
            unstable_lines(&rs),
            vec![
                "unstable: t.py::gated: peak 1.00 MiB to 3.00 MiB (passes up to 3.36 MiB); recorded by an update; gated against the highest value",
                "unstable: t.py::spread: peak 100 B to 3.00 MiB; measured by this update, which differed by more than the tolerance",
            ]
        );
        assert_eq!(totals_line(&rs, 0), "3 measured: 1 new, 2 ok; 2 unstable");
        // Stable runs: no line, the totals they always had.
        assert!(unstable_lines(&rs[..1]).is_empty());
        assert_eq!(totals_line(&rs[..1], 0), "1 measured: 1 ok");
    }

    #[test]
    fn hostile_ids_cannot_drive_the_terminal() {
        let ids = [
            "t.py::t[\u{1b}[2J\u{1b}]0;pwned\u{7}]",
            "t.py::t[cr\rlf\nnul\0]",
            "t.py::t[csi\u{9b}31m]",
        ];
        let rs: Vec<_> = ids.iter().map(|id| result(id, 10, None)).collect();
        let stale = ["t.py::gone[\u{1b}[31m]".to_string()];
        let t = summary_table(&rs, &stale, true, true).unwrap();
        assert!(!t.chars().any(|c| c.is_control() && c != '\n'), "{t:?}");
        assert!(t.contains("t.py::t[\\x1b[2J\\x1b]0;pwned\\x07]"), "{t}");
        assert!(t.contains("t.py::gone[\\x1b[31m]"), "{t}");
        // One line per row: header, 3 tests, 1 stale, borders.
        assert_eq!(t.lines().count(), 4 + 4, "{t}");
        // Negative control: unicode ids are shown as they are.
        let t = summary_table(&[result("t.py::t[ü-π]", 10, None)], &[], true, true).unwrap();
        assert!(t.contains("t.py::t[ü-π]"), "{t}");
    }
}
