//! The state of one run: its settings and environment, the baseline store it reads and writes
//! (`store.rs`), and the results. Plain Rust; the pytest plugin drives it through `python.rs`
//! and the `memcheck` command through `cli.rs`.

use std::path::{Path, PathBuf};

use crate::baseline::{Entry, Environment};
use crate::boundary::Boundary;
use crate::config::{self, Settings};
use crate::error::Result;
use crate::gate::{fails, judge, Outcome, TestResult, SPREAD_METRICS};
use crate::markers::MarkerRules;
use crate::store::{Coverage, FileChange, Store, UpdateMode};

pub struct Session {
    pub settings: Settings,
    pub env: Environment,
    pub store: Store,
    pub results: Vec<TestResult>,
}

impl Session {
    /// The run over the project at `root`, for pytest and the `memcheck` command alike: the
    /// baseline directory of the settings, its placeholders filled from `env` (whose values came
    /// from `env_origin`: this interpreter, or a results file), and its write boundary.
    pub fn open(
        root: &Path,
        settings: Settings,
        env: Environment,
        env_origin: &str,
    ) -> Result<Self> {
        let expanded = config::expand_dir(
            &settings.baseline_dir,
            &env.python,
            &env.platform,
            &env.implementation,
            env_origin,
        )?;
        let (dir, boundary) = config::baseline_dir(root, &expanded, &settings)?;
        Ok(Session::new(settings, env, dir, boundary))
    }

    /// `dir` is the baseline directory, already expanded and absolute, and `boundary` the
    /// directory its files must stay in.
    pub fn new(settings: Settings, env: Environment, dir: PathBuf, boundary: Boundary) -> Self {
        Session {
            settings,
            env,
            store: Store::new(dir, boundary),
            results: Vec::new(),
        }
    }

    /// The baseline directory, expanded and absolute.
    pub fn dir(&self) -> &Path {
        &self.store.dir
    }

    /// Read baselines as committed at `rev` in the repository holding `root`.
    pub fn use_git_ref(&mut self, root: &Path, rev: &str) -> Result<()> {
        self.store.use_git_ref(root, rev)
    }

    /// Load (once) the baselines of `module`. A malformed file is an error, never overwritten.
    pub fn load(&mut self, module: &str) -> Result<()> {
        self.store.load(module).map(|_| ())
    }

    fn rules(&self, marks: &MarkerRules) -> Result<crate::gate::Rules> {
        marks.rules(&self.settings)
    }

    /// What an update records from the measurements of a test so far, and whether it wants
    /// another (`spread::settle`, with the test's tolerance).
    pub fn settle(&self, runs: &[Entry], marks: &MarkerRules) -> Result<(Entry, bool)> {
        Ok(crate::spread::settle(runs, &self.rules(marks)?))
    }

    /// Check marker values without judging anything (at collection, so errors come early).
    pub fn check_markers(&self, marks: &MarkerRules) -> Result<()> {
        self.rules(marks).map(|_| ())
    }

    /// Judge a measurement against its baseline and the test's markers.
    pub fn judge(
        &mut self,
        nodeid: &str,
        measured: Entry,
        disturbed: Option<String>,
        marks: &MarkerRules,
        update_hint: &str,
    ) -> Result<TestResult> {
        let rules = self.rules(marks)?;
        let found = self.store.baseline(nodeid, &self.env)?;
        let verdict = match disturbed {
            // Numbers that cannot be trusted are neither gated nor recorded.
            Some(_) => crate::gate::Verdict {
                outcome: Outcome::Disturbed,
                checks: Vec::new(),
            },
            None => judge(
                &measured,
                found.as_ref().map(|(e, _)| e),
                found.is_none_or(|(_, same_env)| same_env),
                &rules,
            ),
        };
        let unstable = SPREAD_METRICS
            .into_iter()
            .filter(|m| {
                m.max_of(&measured).is_some()
                    || found.is_some_and(|(b, same_env)| same_env && m.max_of(&b).is_some())
            })
            .map(|m| m.name().to_string())
            .collect();
        let mut result = TestResult {
            nodeid: nodeid.to_string(),
            failed: fails(verdict.outcome, rules.strict),
            outcome: verdict.outcome,
            measured,
            baseline: found.map(|(e, _)| e),
            limits: verdict
                .checks
                .iter()
                .map(|c| (c.metric.name().to_string(), c.limit()))
                .collect(),
            location: None,
            site: None,
            message: String::new(),
            checks: verdict.checks,
            recordable: disturbed.is_none(),
            disturbed,
            unstable,
        };
        if result.failed {
            result.message = crate::report::failure_message(&result, update_hint);
        }
        Ok(result)
    }

    pub fn record(&mut self, result: TestResult) {
        self.results.push(result);
    }

    /// The run's results in the `--memcheck-json` form.
    pub fn results_document(&self, stale: Vec<String>, complete: bool) -> crate::results::Results {
        let t = self.settings.tolerance;
        let gating = crate::results::Gating {
            tolerance: t.relative.to_string(),
            floor: t.floor,
            strict: self.settings.strict,
            gate_cycles: self.settings.gate_cycles,
            baseline_dir: self.settings.baseline_dir.clone(),
        };
        let mut tests = self.results.clone();
        tests.sort_by(|a, b| a.nodeid.cmp(&b.nodeid));
        crate::results::Results::new(self.env.clone(), gating, complete, tests, stale)
    }

    /// The environments the baselines of tests judged `env-mismatch` were recorded in.
    pub fn foreign_environments(&mut self) -> Result<Vec<String>> {
        let mut found = std::collections::BTreeSet::new();
        let ids: Vec<String> = self
            .results
            .iter()
            .filter(|r| r.outcome == Outcome::EnvMismatch)
            .map(|r| r.nodeid.clone())
            .collect();
        for id in ids {
            let (module, _) = crate::baseline::split_nodeid(&id);
            if let Some(file) = self.store.load(module)? {
                found.insert(file.env.to_string());
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Baseline entries whose test was not collected by a complete run, sorted.
    pub fn stale(&mut self, coverage: &Coverage) -> Result<Vec<String>> {
        self.store.stale(coverage)
    }

    /// Write the results of this run into the baseline files (`Store::update`). The results
    /// then say which metrics are unstable by the baselines just written, not the ones replaced.
    pub fn update(&mut self, mode: UpdateMode, coverage: &Coverage) -> Result<Vec<FileChange>> {
        let changes =
            self.store
                .update(&self.results, &self.env, &self.settings, mode, coverage)?;
        for r in self.results.iter_mut().filter(|r| r.recordable) {
            if let Some((entry, true)) = self.store.baseline(&r.nodeid, &self.env)? {
                r.unstable = unstable_metrics(&entry);
            }
        }
        Ok(changes)
    }
}

/// The metrics an entry holds with a spread.
fn unstable_metrics(e: &Entry) -> Vec<String> {
    SPREAD_METRICS
        .into_iter()
        .filter(|m| m.max_of(e).is_some())
        .map(|m| m.name().to_string())
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use crate::baseline::test_env as env;

    /// A measurement of `peak` bytes (the other figures fixed), for the tests of a run.
    pub(crate) fn entry(peak: u64) -> Entry {
        Entry {
            peak,
            retained: 0,
            allocations: 1,
            cycles: 0,
            ..Entry::default()
        }
    }

    /// A run with the default settings over baselines in `dir`.
    pub(crate) fn session(dir: &Path) -> Session {
        let boundary = Boundary::project(dir).unwrap();
        Session::new(Settings::default(), env(), dir.to_path_buf(), boundary)
    }

    #[test]
    fn a_disturbed_measurement_is_reported_not_gated_nor_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = session(dir.path());
        let marks = MarkerRules {
            peak: Some("1 KiB".into()),
            origin: "memcheck marker of t.py::test_a".into(),
            ..MarkerRules::default()
        };
        // Far over its absolute limit, but the numbers cannot be trusted.
        let r = s
            .judge(
                "t.py::test_a",
                entry(1 << 30),
                Some("why".into()),
                &marks,
                "",
            )
            .unwrap();
        assert_eq!(r.outcome, Outcome::Disturbed);
        assert!(!r.failed && !r.recordable);
        assert_eq!(r.disturbed.as_deref(), Some("why"));
        // The same numbers, intact, fail.
        let r = s
            .judge("t.py::test_a", entry(1 << 30), None, &marks, "")
            .unwrap();
        assert_eq!(r.outcome, Outcome::Over);
        assert!(r.failed && r.recordable);
        // Strict mode fails a disturbed test, with the reason.
        s.settings.strict = true;
        let r = s
            .judge("t.py::test_a", entry(1), Some("why".into()), &marks, "")
            .unwrap();
        assert!(r.failed);
        assert!(
            r.message.contains("cannot be trusted (strict mode): why"),
            "{}",
            r.message
        );
    }

    #[test]
    fn settle_uses_the_tests_own_tolerance() {
        let dir = tempfile::tempdir().unwrap();
        let s = session(dir.path());
        let runs = [entry(1 << 20), entry(2 << 20)];
        assert!(s.settle(&runs, &MarkerRules::default()).unwrap().1);
        let loose = MarkerRules {
            tolerance: Some("150%".into()),
            ..MarkerRules::default()
        };
        assert!(!s.settle(&runs, &loose).unwrap().1);
    }

    #[test]
    fn marker_values_are_checked_with_their_origin() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = session(dir.path());
        let marks = MarkerRules {
            peak: Some("lots".into()),
            origin: "memcheck marker of t.py::test_a".into(),
            ..MarkerRules::default()
        };
        let e = s
            .judge("t.py::test_a", entry(1), None, &marks, "")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("memcheck marker of t.py::test_a peak=: invalid size 'lots'"),
            "{e}"
        );
    }
}
