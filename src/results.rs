//! The results file of `--memcheck-json`: every measured test of a run, in a versioned schema
//! (`pytest_plugin/pytest_memcheck/results.schema.json`). Shards of a CI matrix each write one;
//! `memcheck update --from` and `memcheck check --from` read and merge them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::baseline::Environment;
use crate::boundary::Boundary;
use crate::error::{Error, Result};
use crate::gate::Outcome;
use crate::gate::TestResult;

/// The schema version this engine writes and reads.
pub const VERSION: u32 = 1;
pub const SCHEMA: &str = "pytest-memcheck/results";

/// The settings a run gated with, as written in the results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gating {
    pub tolerance: String,
    pub floor: u64,
    pub strict: bool,
    pub gate_cycles: bool,
    pub baseline_dir: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub schema: String,
    pub version: u32,
    pub environment: Environment,
    pub gating: Gating,
    /// Whether the run covered the whole suite (stale entries are only known then).
    pub complete: bool,
    pub totals: BTreeMap<String, usize>,
    pub tests: Vec<TestResult>,
    pub stale: Vec<String>,
}

impl Results {
    pub fn new(
        environment: Environment,
        gating: Gating,
        complete: bool,
        tests: Vec<TestResult>,
        stale: Vec<String>,
    ) -> Self {
        let mut totals = BTreeMap::new();
        for t in &tests {
            *totals.entry(t.outcome.name().to_string()).or_insert(0) += 1;
        }
        totals.insert(Outcome::Stale.name().to_string(), stale.len());
        totals.insert(
            "failed".to_string(),
            tests.iter().filter(|t| t.failed).count(),
        );
        // Not an outcome (an unstable test is also ok, over…): counted only when there is one,
        // so that a run of stable tests writes what it always wrote.
        let unstable = tests.iter().filter(|t| !t.unstable.is_empty()).count();
        if unstable > 0 {
            totals.insert("unstable".to_string(), unstable);
        }
        Results {
            schema: SCHEMA.to_string(),
            version: VERSION,
            environment,
            gating,
            complete,
            totals,
            tests,
            stale,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("results serialize") + "\n"
    }

    /// Write to `path` under `boundary`, atomically.
    pub fn write(&self, boundary: &Boundary, path: &Path) -> Result<()> {
        boundary.write(path, self.to_json().as_bytes(), "results file")?;
        Ok(())
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
        Self::parse(&text, path)
    }

    /// Parse the text of a results file read from `path` (untrusted: a CI artifact). Errors
    /// name the file, line and column.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let results: Results = serde_json::from_str(text).map_err(|e| {
            // serde_json counts columns from 0 at the start of a line (an error there, or at the
            // end of an empty file, says column 0) and repeats the position in its message.
            let (line, column) = (e.line().max(1), e.column().max(1));
            let message = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            Error::File {
                path: path.to_path_buf(),
                line,
                column,
                message: message
                    .strip_suffix(&suffix)
                    .unwrap_or(&message)
                    .to_string(),
            }
        })?;
        // A spread upside down (a hand-edited or crafted file) would be written into a baseline
        // file by `memcheck update --from`: refused here, at the test's node id.
        for t in &results.tests {
            let entries = [
                ("measured", Some(&t.measured)),
                ("baseline", t.baseline.as_ref()),
            ];
            for (what, entry) in entries {
                if let Some(why) = entry.and_then(|e| e.spread_error()) {
                    let id = serde_json::to_string(&t.nodeid).unwrap_or_default();
                    let offset = text.find(&id).unwrap_or(0);
                    return Err(Error::at_offset(
                        path,
                        text,
                        offset,
                        format!("test '{}', {what}: {why}", t.nodeid),
                    ));
                }
            }
        }
        if results.schema != SCHEMA || results.version > VERSION {
            return Err(Error::File {
                path: path.to_path_buf(),
                line: 1,
                column: 1,
                message: format!(
                    "not pytest-memcheck results of version ≤ {VERSION} (schema '{}', version {})",
                    results.schema, results.version
                ),
            });
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::Entry;

    use crate::baseline::test_env as env;

    fn gating() -> Gating {
        Gating {
            tolerance: "10%".into(),
            floor: 65536,
            strict: false,
            gate_cycles: false,
            baseline_dir: "baselines".into(),
        }
    }

    fn test(id: &str, outcome: Outcome, failed: bool) -> TestResult {
        TestResult {
            nodeid: id.into(),
            outcome,
            failed,
            recordable: true,
            disturbed: None,
            unstable: vec![],
            measured: Entry {
                peak: 10,
                retained: 1,
                allocations: 2,
                cycles: 0,
                ..Entry::default()
            },
            baseline: None,
            limits: BTreeMap::new(),
            location: None,
            site: None,
            message: String::new(),
            checks: vec![],
        }
    }

    #[test]
    fn round_trips_and_counts() {
        let r = Results::new(
            env(),
            gating(),
            true,
            vec![
                test("a.py::t", Outcome::Over, true),
                test("a.py::u", Outcome::New, false),
            ],
            vec!["a.py::gone".into()],
        );
        assert_eq!(r.totals["over"], 1);
        assert_eq!(r.totals["stale"], 1);
        assert_eq!(r.totals["failed"], 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        r.write(&Boundary::project(dir.path()).unwrap(), &path)
            .unwrap();
        let back = Results::read(&path).unwrap();
        assert_eq!(back.tests.len(), 2);
        assert_eq!(back.tests[0].outcome, Outcome::Over);
        assert_eq!(back.to_json(), r.to_json());
    }

    #[test]
    fn mode_is_written_only_when_not_normal() {
        let normal = Results::new(env(), gating(), true, vec![], vec![]).to_json();
        assert!(!normal.contains("\"mode\""), "{normal}");
        let mut dev_env = env();
        dev_env.mode = "dev".into();
        let dev = Results::new(dev_env.clone(), gating(), true, vec![], vec![]);
        assert!(
            dev.to_json().contains("\"mode\": \"dev\""),
            "{}",
            dev.to_json()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        dev.write(&Boundary::project(dir.path()).unwrap(), &path)
            .unwrap();
        assert_eq!(Results::read(&path).unwrap().environment, dev_env);
        std::fs::write(&path, &normal).unwrap();
        assert_eq!(Results::read(&path).unwrap().environment, env());
    }

    #[test]
    fn unstable_tests_are_marked_and_their_spread_checked() {
        let stable = Results::new(
            env(),
            gating(),
            true,
            vec![test("a.py::t", Outcome::Ok, false)],
            vec![],
        );
        let text = stable.to_json();
        assert!(
            !text.contains("unstable") && !text.contains("_max"),
            "{text}"
        );
        let mut t = test("a.py::u", Outcome::Ok, false);
        t.unstable = vec!["peak".into()];
        t.measured.peak_max = Some(50);
        let r = Results::new(env(), gating(), true, vec![t], vec![]);
        assert_eq!(r.totals["unstable"], 1);
        let text = r.to_json();
        assert!(
            text.contains("\"peak_max\": 50")
                && text.contains("\"unstable\": [\n        \"peak\"\n      ]"),
            "{text}"
        );
        let back = Results::parse(&text, Path::new("r.json")).unwrap();
        assert_eq!(back.tests[0].unstable, vec!["peak".to_string()]);
        assert_eq!(back.tests[0].measured.peak_max, Some(50));
        // Upside down: refused, at the test.
        let bad = text.replace("\"peak_max\": 50", "\"peak_max\": 5");
        let e = Results::parse(&bad, Path::new("r.json"))
            .unwrap_err()
            .to_string();
        let line = bad.lines().position(|l| l.contains("\"a.py::u\"")).unwrap() + 1;
        assert!(
            e.starts_with(&format!("r.json:{line}:"))
                && e.contains("test 'a.py::u', measured: peak_max = 5 is below peak = 10"),
            "{e}"
        );
    }

    #[test]
    fn foreign_or_future_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, "{\"schema\": 1}").unwrap();
        assert!(Results::read(&path)
            .unwrap_err()
            .to_string()
            .contains("r.json:1:"));
        // Found by src/fuzz.rs: serde_json's column 0, and its position repeated.
        let e = Results::parse("", &path).unwrap_err().to_string();
        assert!(e.ends_with("r.json:1:1: EOF while parsing a value"), "{e}");
        let mut r = Results::new(env(), gating(), true, vec![], vec![]);
        r.version = 99;
        std::fs::write(&path, r.to_json()).unwrap();
        assert!(Results::read(&path)
            .unwrap_err()
            .to_string()
            .contains("version 99"));
    }
}
