//! GitHub Actions output: `::error` annotations and the step summary.
//!
//! Workflow commands are parsed from the job's output, so every value written into one is escaped
//! as GitHub's runner expects (`%`, CR and LF in data; also `:` and `,` in properties): a node id
//! or message can never end the command early or start another one.

use std::fmt::Write as _;

use crate::gate::Outcome;
use crate::session::TestResult;
use crate::sizes::{format_delta, format_size};

/// GitHub shows at most this many error annotations per step.
pub const MAX_ERRORS: usize = 10;
/// GitHub refuses step summaries over 1 MiB; stay clearly below.
pub const MAX_SUMMARY: usize = 1000 * 1000;

pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// One `::error` per test the gate failed (at its file and line), at most `MAX_ERRORS`, then one
/// notice with the count of the rest.
pub fn annotations(results: &[TestResult]) -> Vec<String> {
    let failed: Vec<&TestResult> = results.iter().filter(|r| r.failed).collect();
    let mut lines = Vec::new();
    for r in failed.iter().take(MAX_ERRORS) {
        let mut props = String::new();
        if let Some(loc) = &r.location {
            let _ = write!(
                props,
                "file={},line={},",
                escape_property(&loc.path),
                loc.line
            );
        }
        let title = format!("memcheck: {}", r.nodeid);
        let _ = write!(props, "title={}", escape_property(&title));
        lines.push(format!("::error {props}::{}", escape_data(&r.message)));
    }
    if failed.len() > MAX_ERRORS {
        lines.push(format!(
            "::notice title=memcheck::{}",
            escape_data(&format!(
                "{} more tests failed the memory gate; the step summary lists them all",
                failed.len() - MAX_ERRORS
            ))
        ));
    }
    lines
}

fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

fn delta(now: u64, base: Option<u64>) -> String {
    base.map(|b| format_delta(now as i128 - b as i128))
        .unwrap_or_default()
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
    let _ = writeln!(out, "{}\n", cell(totals));
    let mut rows: Vec<&TestResult> = results
        .iter()
        .filter(|r| r.outcome != Outcome::Ok)
        .collect();
    rows.sort_by(|a, b| (a.outcome, &a.nodeid).cmp(&(b.outcome, &b.nodeid)));
    let footer = format!(
        "\nTo accept the values measured here, download the results artifact and run:\n\n```sh\n{accept}\n```\n"
    );
    if !rows.is_empty() || !stale.is_empty() {
        out.push_str("| outcome | test | peak | Δ peak | retained | Δ retained |\n");
        out.push_str("|---|---|---:|---:|---:|---:|\n");
        let total = rows.len() + stale.len();
        let stale_rows = stale
            .iter()
            .map(|s| format!("| stale | {} | | | | |\n", cell(s)));
        let test_rows = rows.iter().map(|r| {
            let b = r.baseline;
            format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.outcome.name(),
                cell(&r.nodeid),
                format_size(r.measured.peak),
                delta(r.measured.peak, b.map(|b| b.peak)),
                format_size(r.measured.retained),
                delta(r.measured.retained, b.map(|b| b.retained)),
            )
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
    out.push_str(&footer);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::Entry;
    use crate::session::Location;

    fn failed(id: &str, message: &str) -> TestResult {
        TestResult {
            nodeid: id.into(),
            outcome: Outcome::Over,
            failed: true,
            recordable: true,
            disturbed: None,
            measured: Entry::default(),
            baseline: Some(Entry::default()),
            limits: Default::default(),
            location: Some(Location {
                path: "tests/t,1:x.py".into(),
                line: 7,
            }),
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
        let lines = annotations(&[r]);
        assert_eq!(lines.len(), 1);
        assert_eq!(
            lines[0],
            "::error file=tests/t%2C1%3Ax.py,line=7,title=memcheck%3A t.py%3A%3Atest[100%25%2Ca%3Ab%0D%0A%3A%3Awarning%3A%3Ax]::peak over%0A::set-output name=x::y 50%25"
        );
        assert!(!lines[0].contains('\n') && !lines[0].contains('\r'));
    }

    #[test]
    fn at_most_ten_errors_then_a_notice() {
        let rs: Vec<_> = (0..13)
            .map(|i| failed(&format!("t.py::t{i}"), "m"))
            .collect();
        let lines = annotations(&rs);
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
        assert!(s.contains("| over | t.py::t[a\\|b] |"), "{s}");
        assert!(s.contains("memcheck update --from r.json"));
        let many: Vec<_> = (0..20_000)
            .map(|i| failed(&format!("t.py::{}{i}", "x".repeat(60)), "m"))
            .collect();
        let s = step_summary(&many, &[], "t", "a");
        assert!(s.len() < MAX_SUMMARY, "{}", s.len());
        assert!(s.contains("more rows left out"));
    }
}
