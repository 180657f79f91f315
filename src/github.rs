//! GitHub Actions output: `::error` annotations and the step summary.
//!
//! Workflow commands are parsed from the job's output, so every value written into one is escaped
//! as GitHub's runner expects (`%`, CR and LF in data; also `:` and `,` in properties): a node id
//! or message can never end the command early or start another one. The step summary is
//! Markdown with inline HTML: every node id in it is escaped to render as text (`escape.rs`).

use std::fmt::Write as _;

use crate::escape::{command_data, command_property, markdown, markdown_code};
use crate::gate::Outcome;
use crate::gate::TestResult;
use crate::report::delta;
use crate::sizes::format_size;

/// GitHub shows at most this many error annotations per step.
pub const MAX_ERRORS: usize = 10;
/// GitHub refuses step summaries over 1 MiB; stay clearly below.
pub const MAX_SUMMARY: usize = 1000 * 1000;

/// One `::error` per test the gate failed, at most `MAX_ERRORS`, then one notice with the count
/// of the rest. It points at the allocation site of the test's diagnosis when that is a file of
/// the project (the message then names the test's own line), else at the test. `prefix` is the
/// project root relative to the repository's (`app` for a project in `app/`): GitHub reads the
/// paths of annotations from the repository's root.
pub fn annotations(results: &[TestResult], prefix: &str) -> Vec<String> {
    let failed: Vec<&TestResult> = results.iter().filter(|r| r.failed).collect();
    let in_repo = |path: &str| match prefix.trim_matches('/') {
        "" | "." => path.to_string(),
        prefix => format!("{prefix}/{path}"),
    };
    let mut lines = Vec::new();
    for r in failed.iter().take(MAX_ERRORS) {
        let mut props = String::new();
        let mut message = r.message.clone();
        if let Some(loc) = r.site.as_ref().or(r.location.as_ref()) {
            let _ = write!(
                props,
                "file={},line={},",
                command_property(&in_repo(&loc.path)),
                loc.line
            );
        }
        if let (Some(site), Some(test)) = (&r.site, &r.location) {
            if site != test {
                let _ = write!(
                    message,
                    "\n  the test: {}:{}",
                    in_repo(&test.path),
                    test.line
                );
            }
        }
        let title = format!("memcheck: {}", r.nodeid);
        let _ = write!(props, "title={}", command_property(&title));
        lines.push(format!("::error {props}::{}", command_data(&message)));
    }
    if failed.len() > MAX_ERRORS {
        lines.push(format!(
            "::notice title=memcheck::{}",
            command_data(&format!(
                "{} more tests failed the memory gate; the step summary lists them all",
                failed.len() - MAX_ERRORS
            ))
        ));
    }
    lines
}

/// The Markdown step summary: over budget first, then improved, new, other environments, stale;
/// the totals; and the command that accepts these values.
pub fn step_summary(
    results: &[TestResult],
    stale: &[String],
    totals: &str,
    accept: &str,
) -> String {
    let mut out = String::from("## pytest-memcheck\n\n");
    let _ = writeln!(out, "{}\n", markdown(totals));
    let mut rows: Vec<&TestResult> = results
        .iter()
        .filter(|r| r.outcome != Outcome::Ok)
        .collect();
    rows.sort_by(|a, b| (a.outcome, &a.nodeid).cmp(&(b.outcome, &b.nodeid)));
    // From a results file (`memcheck update --from`) the values are the ones measured here;
    // without one, only a run of pytest can record, which measures again where it runs.
    let how = if accept.starts_with("memcheck update --from") {
        "To accept the values measured here, download the results artifact and run:"
    } else {
        "No results file was written (`--memcheck-json`), so these values cannot be accepted as \
         measured here; to record baselines where you run it (they may differ from CI's), run:"
    };
    let footer = format!("\n{how}\n\n{}", markdown_code(accept, "sh"));
    if !rows.is_empty() || !stale.is_empty() {
        // Native columns only for runs that counted native memory (--memcheck-native).
        let native = rows.iter().any(|r| r.measured.native_peak.is_some());
        let (native_header, native_rule, native_blank) = if native {
            (
                " native peak | Δ native peak | native retained | Δ native retained |",
                "---:|---:|---:|---:|",
                " | | | |",
            )
        } else {
            ("", "", "")
        };
        let _ = writeln!(
            out,
            "| outcome | test | peak | Δ peak | retained | Δ retained |{native_header}"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|{native_rule}");
        let total = rows.len() + stale.len();
        let stale_rows = stale
            .iter()
            .map(|s| format!("| stale | {} | | | | |{native_blank}\n", markdown(s)));
        let test_rows = rows.iter().map(|r| {
            let b = r.baseline;
            let mut row = format!(
                "| {} | {} | {} | {} | {} | {} |",
                r.outcome.name(),
                markdown(&r.nodeid),
                format_size(r.measured.peak),
                delta(r.measured.peak, b.map(|b| b.peak_max.unwrap_or(b.peak))),
                format_size(r.measured.retained),
                delta(
                    r.measured.retained,
                    b.map(|b| b.retained_max.unwrap_or(b.retained))
                ),
            );
            if native {
                let m = r.measured;
                let cell = |now: Option<u64>, base: Option<u64>| match now {
                    Some(now) => (format_size(now), delta(now, base)),
                    None => (String::new(), String::new()),
                };
                let (peak, dpeak) = cell(m.native_peak, b.and_then(|b| b.native_peak));
                let (kept, dkept) = cell(m.native_retained, b.and_then(|b| b.native_retained));
                let _ = write!(row, " {peak} | {dpeak} | {kept} | {dkept} |");
            }
            row.push('\n');
            row
        });
        for (written, row) in test_rows.chain(stale_rows).enumerate() {
            if out.len() + row.len() + footer.len() + 200 > MAX_SUMMARY {
                let _ = writeln!(
                    out,
                    "\n… {} more rows left out to stay under GitHub's 1 MiB limit; the results JSON has them all.",
                    total - written
                );
                break;
            }
            out.push_str(&row);
        }
    }
    let disturbed: Vec<&TestResult> = results.iter().filter(|r| r.disturbed.is_some()).collect();
    if !disturbed.is_empty() {
        out.push_str("\nNot gated, the measurement cannot be trusted:\n\n");
        for r in disturbed {
            let line = format!(
                "- {}: {}\n",
                markdown(&r.nodeid),
                markdown(r.disturbed.as_deref().unwrap_or_default())
            );
            if out.len() + line.len() + footer.len() + 200 > MAX_SUMMARY {
                break;
            }
            out.push_str(&line);
        }
    }
    let unstable = crate::report::unstable_lines(results);
    if !unstable.is_empty() {
        out.push_str("\nUnstable: their measurements differed by more than the tolerance when recorded, and the gate judges them against the highest value recorded (README, \"Unstable tests\"):\n\n");
        for line in unstable {
            let line = format!(
                "- {}\n",
                markdown(line.strip_prefix("unstable: ").unwrap_or(&line))
            );
            if out.len() + line.len() + footer.len() + 200 > MAX_SUMMARY {
                break;
            }
            out.push_str(&line);
        }
    }
    out.push_str(&footer);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::Entry;
    use crate::gate::Location;

    fn failed(id: &str, message: &str) -> TestResult {
        TestResult {
            nodeid: id.into(),
            outcome: Outcome::Over,
            failed: true,
            recordable: true,
            disturbed: None,
            unstable: vec![],
            measured: Entry::default(),
            baseline: Some(Entry::default()),
            limits: Default::default(),
            location: Some(Location {
                path: "tests/t,1:x.py".into(),
                line: 7,
            }),
            site: None,
            message: message.into(),
            checks: vec![],
        }
    }

    #[test]
    fn hostile_node_ids_cannot_inject_commands() {
        let r = failed(
            "t.py::test[100%,a:b\r\n::warning::x]",
            "peak over\n::set-output name=x::y 50%",
        );
        let lines = annotations(&[r], "");
        assert_eq!(lines.len(), 1);
        assert_eq!(
            lines[0],
            "::error file=tests/t%2C1%3Ax.py,line=7,title=memcheck%3A t.py%3A%3Atest[100%25%2Ca%3Ab%0D%0A%3A%3Awarning%3A%3Ax]::peak over%0A::set-output name=x::y 50%25"
        );
        assert!(!lines[0].contains('\n') && !lines[0].contains('\r'));
    }

    #[test]
    fn annotations_point_at_the_allocation_site_from_the_repository_root() {
        let mut r = failed("t.py::t", "over");
        assert!(annotations(&[r.clone()], "app")[0]
            .starts_with("::error file=app/tests/t%2C1%3Ax.py,line=7,"));
        r.site = Some(Location {
            path: "pkg/cache.py".into(),
            line: 11,
        });
        let lines = annotations(&[r.clone()], "app/");
        assert_eq!(
            lines[0],
            "::error file=app/pkg/cache.py,line=11,title=memcheck%3A t.py%3A%3At::over%0A  the test: app/tests/t,1:x.py:7"
        );
        // At the root of the repository, paths are as they are.
        assert!(annotations(&[r], "")[0].starts_with("::error file=pkg/cache.py,line=11,"));
    }

    #[test]
    fn at_most_ten_errors_then_a_notice() {
        let rs: Vec<_> = (0..13)
            .map(|i| failed(&format!("t.py::t{i}"), "m"))
            .collect();
        let lines = annotations(&rs, ".");
        assert_eq!(lines.len(), 11);
        assert!(lines[..10].iter().all(|l| l.starts_with("::error ")));
        assert_eq!(
            lines[10],
            "::notice title=memcheck::3 more tests failed the memory gate; the step summary lists them all"
        );
    }

    #[test]
    fn summary_escapes_pipes_and_stays_under_a_mebibyte() {
        let s = step_summary(
            &[failed("t.py::t[a|b]", "m")],
            &[],
            "1 measured: 1 over",
            "memcheck update --from r.json",
        );
        assert!(s.contains("| over | t.py::t\\[a\\|b\\] |"), "{s}");
        assert!(s.contains("memcheck update --from r.json"));
        assert!(s.contains("download the results artifact and run:"), "{s}");
        // Without a results file there is no artifact: the summary says what the command does.
        let s = step_summary(
            &[failed("t.py::t", "m")],
            &[],
            "t",
            "pytest --memcheck-update",
        );
        assert!(!s.contains("artifact and run"), "{s}");
        assert!(
            s.contains("No results file was written (`--memcheck-json`)"),
            "{s}"
        );
        let many: Vec<_> = (0..20_000)
            .map(|i| failed(&format!("t.py::{}{i}", "x".repeat(60)), "m"))
            .collect();
        let s = step_summary(&many, &[], "t", "a");
        assert!(s.len() < MAX_SUMMARY, "{}", s.len());
        assert!(s.contains("more rows left out"));
    }

    #[test]
    fn native_figures_get_columns_only_when_counted() {
        let r = failed("t.py::t", "");
        let plain = step_summary(std::slice::from_ref(&r), &["t.py::gone".into()], "x", "a");
        assert!(!plain.contains("native"), "{plain}");
        let mut n = r;
        n.measured.native_peak = Some(3 << 20);
        n.measured.native_retained = Some(0);
        let s = step_summary(&[n], &["t.py::gone".into()], "x", "a");
        assert!(
            s.contains("| Δ retained | native peak | Δ native peak |"),
            "{s}"
        );
        assert!(s.contains("| 3.00 MiB |"), "{s}");
        // every row has as many cells as the header
        let cells = |line: &str| line.matches('|').count();
        let table: Vec<&str> = s.lines().filter(|l| l.starts_with('|')).collect();
        assert!(
            table.iter().all(|l| cells(l) == cells(table[0])),
            "{table:?}"
        );
    }

    #[test]
    fn unstable_tests_are_listed_in_the_summary() {
        let mut r = failed("t.py::t[<b>|x]", "");
        r.outcome = Outcome::Ok;
        r.failed = false;
        let plain = step_summary(&[r.clone()], &[], "1 measured: 1 ok", "a");
        assert!(!plain.contains("Unstable"), "{plain}");
        r.measured.peak_max = Some(4096);
        r.unstable = vec!["peak".into()];
        let s = step_summary(&[r], &[], "1 measured: 1 ok; 1 unstable", "a");
        assert!(s.contains("1 ok; 1 unstable"), "{s}");
        assert!(
            s.contains(
                "\n- t.py::t\\[&lt;b&gt;\\|x\\]: peak 0 B to 4.00 KiB; measured by this update"
            ),
            "{s}"
        );
    }

    /// The table rows of a summary, as cells split at unescaped pipes.
    fn rows(summary: &str) -> Vec<Vec<String>> {
        summary
            .lines()
            .filter(|l| l.starts_with('|'))
            .map(|l| {
                let mut cells = vec![String::new()];
                let mut chars = l.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            let last = cells.last_mut().unwrap();
                            last.push(c);
                            last.extend(chars.next());
                        }
                        '|' => cells.push(String::new()),
                        c => cells.last_mut().unwrap().push(c),
                    }
                }
                cells[1..cells.len() - 1].to_vec()
            })
            .collect()
    }

    #[test]
    fn hostile_ids_render_as_text_in_the_summary() {
        let long = format!("t.py::t[{}]", "<|`]%\r\n\0\u{1b}".repeat(250));
        let hostile = [
            "t.py::t[<script>alert(1)</script>]",
            "t.py::t[a|b|c|d]",
            "t.py::t[`code`]",
            "t.py::t[x](javascript:alert(1))",
            "t.py::t[100%]",
            "t.py::t[cr\rlf\n| row |]",
            "t.py::t[nul\0]",
            "t.py::t[\u{1b}[31mred\u{1b}[0m]",
            long.as_str(),
        ];
        let results: Vec<_> = hostile.iter().map(|id| failed(id, "m")).collect();
        let stale = vec!["t.py::gone[<img src=x onerror=alert(1)>|]".to_string()];
        let s = step_summary(
            &results,
            &stale,
            "9 measured: 9 over",
            "memcheck update --from 'r.json'\n```\nrm -rf ~",
        );
        assert!(!s.contains("<script") && !s.contains("<img"), "{s}");
        assert!(s.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!s.contains('\0') && !s.contains('\u{1b}') && !s.contains('\r'));
        assert!(s.contains("t.py::t\\[x\\](javascript:alert(1))"), "{s}");
        // Header, alignment, one row per test and per stale entry, six columns each.
        let table = rows(&s);
        assert_eq!(table.len(), 2 + hostile.len() + 1, "{s}");
        assert!(table.iter().all(|r| r.len() == 6), "{table:?}");
        assert!(
            s.contains("\n````sh\nmemcheck update --from 'r.json'\\x0a```\\x0arm -rf ~\n````\n"),
            "{s}"
        );
        // Negative control: a benign id is shown as it is, bar Markdown's own escapes.
        let s = step_summary(&[failed("t.py::test_ok[plain-1.5]", "m")], &[], "1", "a");
        assert!(
            s.contains("| over | t.py::test\\_ok\\[plain-1.5\\] |"),
            "{s}"
        );
        assert_eq!(rows(&s).len(), 3);
    }
}
