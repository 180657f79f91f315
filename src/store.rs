//! Baseline storage: the files of one baseline directory (the work tree's, or as committed at
//! a git revision), each read once, and the update policy that writes them: which entries are
//! rewritten, which are pruned, and when another environment's file is re-recorded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::baseline::{
    files_in, module_file, module_of, split_nodeid, BaselineFile, Entry, Environment,
};
use crate::boundary::{slashed, Boundary};
use crate::config::Settings;
use crate::error::Result;
use crate::gate::TestResult;
use crate::git::Repo;

/// How much of the suite a run covered, for stale reports and pruning.
#[derive(Clone, Debug, Default)]
pub struct Coverage {
    /// No -k/-m/node-id selection, deselection, collection error or early stop.
    pub complete: bool,
    /// Node ids collected.
    pub collected: BTreeSet<String>,
    /// Module path prefixes (relative to the root) the run's arguments cover; empty = everything.
    pub scope: Vec<String>,
    /// Re-record files from another environment even on a partial run (`--accept-environment`).
    pub accept_environment: bool,
    /// The results were not settled by an update (a gate run's, given to `memcheck update
    /// --from`): one or two measurements cannot tell a test stable, so a recorded spread is
    /// widened by them, never dropped.
    pub unsettled: bool,
}

impl Coverage {
    fn covers(&self, module: &str) -> bool {
        self.scope.is_empty()
            || self.scope.iter().any(|p| {
                p.is_empty()
                    || module == p
                    || module.starts_with(&format!("{}/", p.trim_end_matches('/')))
            })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateMode {
    /// Only new entries and entries outside their tolerance.
    Changed,
    /// Every measured entry.
    All,
}

/// What an update did to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange {
    pub path: PathBuf,
    pub written: usize,
    pub pruned: usize,
    pub deleted: bool,
    pub note: Option<String>,
}

/// Baselines as committed at a git revision instead of the work tree (`--memcheck-ref`).
pub struct GitSource {
    pub repo: Repo,
    pub rev: String,
    /// The baseline directory relative to the repository root.
    pub dir: String,
}

/// The baseline files of one directory.
pub struct Store {
    /// The baseline directory, expanded and absolute.
    pub dir: PathBuf,
    /// Every baseline file is written and removed through it.
    pub boundary: Boundary,
    pub source: Option<GitSource>,
    files: HashMap<String, Option<BaselineFile>>,
}

impl Store {
    pub fn new(dir: PathBuf, boundary: Boundary) -> Self {
        Store {
            dir,
            boundary,
            source: None,
            files: HashMap::new(),
        }
    }

    /// Read baselines as committed at `rev` in the repository holding `root`.
    pub fn use_git_ref(&mut self, root: &Path, rev: &str) -> Result<()> {
        let repo = Repo::discover(root)?;
        let root_rel = repo.relative(root)?;
        let rel_dir = self.dir.strip_prefix(root).unwrap_or(&self.dir);
        let dir = slashed(&Path::new(&root_rel).join(rel_dir));
        repo.commit(rev)?;
        self.source = Some(GitSource {
            repo,
            rev: rev.to_string(),
            dir,
        });
        self.files.clear();
        Ok(())
    }

    /// Load (once) the baselines of `module`. A malformed file is an error, never overwritten.
    pub fn load(&mut self, module: &str) -> Result<Option<&BaselineFile>> {
        if !self.files.contains_key(module) {
            let file = match &self.source {
                None => BaselineFile::read(&module_file(&self.dir, module)?)?,
                Some(git) => {
                    let path = module_file(Path::new(&git.dir), module)?;
                    let path = slashed(&path);
                    match git.repo.read_at(&git.rev, &path)? {
                        Some(text) => Some(BaselineFile::parse(
                            &text,
                            Path::new(&format!("{}:{path}", git.rev)),
                        )?),
                        None => None,
                    }
                }
            };
            self.files.insert(module.to_string(), file);
        }
        Ok(self.files[module].as_ref())
    }

    /// The baseline of a node id, and whether it was recorded in this environment.
    pub fn baseline(&mut self, nodeid: &str, env: &Environment) -> Result<Option<(Entry, bool)>> {
        let (module, key) = split_nodeid(nodeid);
        Ok(self
            .load(module)?
            .and_then(|f| f.entries.get(key).map(|e| (*e, f.env == *env))))
    }

    /// Every baseline file under the directory, as (module path with `.py`, file path).
    fn baseline_files(&self) -> Vec<(String, PathBuf)> {
        let files = match &self.source {
            Some(git) => git
                .repo
                .files_at(&git.rev, &git.dir)
                .unwrap_or_default()
                .into_iter()
                .filter(|(name, _)| !name.rsplit('/').next().unwrap_or("").starts_with('.'))
                .map(|(name, _)| {
                    let path = self.dir.join(&name);
                    (name, path)
                })
                .collect(),
            None => files_in(&self.dir),
        };
        files
            .into_iter()
            .map(|(name, path)| (module_of(&name), path))
            .collect()
    }

    /// Baseline entries whose test was not collected by a complete run, sorted.
    pub fn stale(&mut self, coverage: &Coverage) -> Result<Vec<String>> {
        if !coverage.complete {
            return Ok(Vec::new());
        }
        let mut stale = Vec::new();
        for (module, _) in self.baseline_files() {
            if !coverage.covers(&module) {
                continue;
            }
            if let Some(file) = self.load(&module)? {
                for key in file.entries.keys() {
                    let nodeid = format!("{module}::{key}");
                    if !coverage.collected.contains(&nodeid) {
                        stale.push(nodeid);
                    }
                }
            }
        }
        Ok(stale)
    }

    /// Write the results of this run into the baseline files. Entries of tests that were not
    /// collected are pruned only after a complete run. Returns the files that changed.
    pub fn update(
        &mut self,
        results: &[TestResult],
        env: &Environment,
        settings: &Settings,
        mode: UpdateMode,
        coverage: &Coverage,
    ) -> Result<Vec<FileChange>> {
        let mut by_module: BTreeMap<String, Vec<&TestResult>> = BTreeMap::new();
        for r in results.iter().filter(|r| r.recordable) {
            by_module
                .entry(split_nodeid(&r.nodeid).0.to_string())
                .or_default()
                .push(r);
        }
        let mut modules: BTreeSet<String> = by_module.keys().cloned().collect();
        if coverage.complete {
            modules.extend(
                self.baseline_files()
                    .into_iter()
                    .map(|(m, _)| m)
                    .filter(|m| coverage.covers(m)),
            );
        }
        // Read and check everything first: one malformed file, or one path the boundary refuses,
        // stops the update before anything is written.
        let mut existing = BTreeMap::new();
        for module in &modules {
            let path = module_file(&self.dir, module)?;
            self.boundary.check(&path, "baseline file")?;
            existing.insert(module.clone(), (path.clone(), BaselineFile::read(&path)?));
        }
        // The settings' tolerance for peak and retained, the native default for the native
        // figures (`spread::covers`).
        let rules = crate::gate::Rules {
            tolerance: Some(settings.tolerance),
            ..Default::default()
        };
        let mut changes = Vec::new();
        for (module, (path, old)) in existing {
            let results = by_module.get(&module).map(Vec::as_slice).unwrap_or(&[]);
            let mut note = None;
            let mut file = match old.clone() {
                Some(f) if f.env == *env => f,
                Some(f) => {
                    if !coverage.complete && !coverage.accept_environment {
                        changes.push(FileChange {
                            path,
                            written: 0,
                            pruned: 0,
                            deleted: false,
                            note: Some(format!(
                                "recorded on {}, this run is {}: not rewritten by a partial run; re-record it with a complete run (or accept the environment), or use {{python}}/{{platform}} in baseline-dir",
                                f.env, env
                            )),
                        });
                        continue;
                    }
                    note = Some(format!("re-recorded: was {}", f.env));
                    BaselineFile::new(env.clone())
                }
                None => BaselineFile::new(env.clone()),
            };
            let mut written = 0;
            for r in results {
                let key = split_nodeid(&r.nodeid).1.to_string();
                let mut measured = r.measured;
                if coverage.unsettled {
                    if let Some(old) = file.entries.get(&key) {
                        crate::spread::widen(&mut measured, old);
                    }
                }
                let keep = match file.entries.get(&key) {
                    Some(old) => {
                        // Stable entries: within tolerance both ways, peak and retained.
                        mode == UpdateMode::Changed
                            && crate::spread::covers(old, &measured, &rules)
                            && (!settings.gate_cycles || old.cycles == measured.cycles)
                    }
                    None => false,
                };
                if measured.native_peak.is_none() {
                    // A run that did not count native memory keeps the native baseline as it is.
                    if let Some(old) = file.entries.get(&key) {
                        measured.native_peak = old.native_peak;
                        measured.native_retained = old.native_retained;
                        measured.native_peak_max = old.native_peak_max;
                        measured.native_retained_max = old.native_retained_max;
                        measured.combined_peak = old.combined_peak;
                    }
                }
                if !keep && file.entries.get(&key) != Some(&measured) {
                    file.entries.insert(key, measured);
                    written += 1;
                }
            }
            let mut pruned = 0;
            if coverage.complete {
                let before = file.entries.len();
                file.entries
                    .retain(|key, _| coverage.collected.contains(&format!("{module}::{key}")));
                pruned = before - file.entries.len();
            }
            let deleted = file.entries.is_empty() && old.is_some() && coverage.complete;
            let changed = if deleted {
                self.boundary.remove(&path, "baseline file")?;
                true
            } else {
                !file.entries.is_empty() && file.write(&self.boundary, &path)?
            };
            if !changed && note.is_none() {
                continue;
            }
            self.files
                .insert(module.clone(), if deleted { None } else { Some(file) });
            changes.push(FileChange {
                path,
                written,
                pruned,
                deleted,
                note,
            });
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::Outcome;
    use crate::markers::MarkerRules;
    use std::fs;

    use std::collections::BTreeMap;

    use crate::session::tests::{entry, session};

    fn run(
        dir: &Path,
        values: &[(&str, u64)],
        coverage: &Coverage,
        mode: UpdateMode,
    ) -> Vec<FileChange> {
        let mut s = session(dir);
        for (id, peak) in values {
            let r = s
                .judge(id, entry(*peak), None, &MarkerRules::default(), "")
                .unwrap();
            s.record(r);
        }
        s.update(mode, coverage).unwrap()
    }

    fn complete(ids: &[&str]) -> Coverage {
        Coverage {
            complete: true,
            collected: ids.iter().map(|s| s.to_string()).collect(),
            scope: vec![],
            accept_environment: false,
            unsettled: false,
        }
    }

    #[test]
    fn native_figures_are_written_only_when_counted_and_kept_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let id = "tests/test_n.py::test_x";
        let cov = complete(&[id]);
        let update = |measured: Entry, mode: UpdateMode| {
            let mut s = session(dir.path());
            let r = s
                .judge(id, measured, None, &MarkerRules::default(), "")
                .unwrap();
            s.record(r);
            s.update(mode, &cov).unwrap()
        };
        let path = dir.path().join("tests/test_n.toml");
        update(entry(1000), UpdateMode::Changed);
        let plain = fs::read_to_string(&path).unwrap();
        assert!(!plain.contains("native"), "{plain}");
        // counted: the entry gains its native figures, though its python ones hold
        let native = Entry {
            native_peak: Some(5000),
            native_retained: Some(10),
            ..entry(1000)
        };
        assert_eq!(update(native, UpdateMode::Changed)[0].written, 1);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("native_peak = 5000\nnative_retained = 10\n"),
            "{text}"
        );
        // not counted: neither dropped nor churned, even when the entry is rewritten
        assert!(update(entry(1000), UpdateMode::Changed).is_empty());
        assert!(update(entry(1000), UpdateMode::All).is_empty());
        assert_eq!(update(entry(9_000_000), UpdateMode::Changed)[0].written, 1);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("native_peak = 5000\n"), "{text}");
        assert!(text.contains("peak = 9000000\n"), "{text}");
    }

    #[test]
    fn update_writes_new_then_only_changed() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ["tests/test_a.py::test_x", "tests/test_a.py::test_y"];
        let cov = complete(&ids);
        let ch = run(
            dir.path(),
            &[(ids[0], 1_000_000), (ids[1], 10)],
            &cov,
            UpdateMode::Changed,
        );
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].written, 2);
        let path = dir.path().join("tests/test_a.toml");
        let text = fs::read_to_string(&path).unwrap();
        // +1% is within tolerance: nothing churns.
        let ch = run(
            dir.path(),
            &[(ids[0], 1_010_000), (ids[1], 11)],
            &cov,
            UpdateMode::Changed,
        );
        assert!(ch.is_empty(), "{ch:?}");
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        // all rewrites every entry that differs
        let ch = run(
            dir.path(),
            &[(ids[0], 1_010_000), (ids[1], 11)],
            &cov,
            UpdateMode::All,
        );
        assert_eq!(ch[0].written, 2);
        // +50% is rewritten by a plain update
        let ch = run(
            dir.path(),
            &[(ids[0], 1_500_000), (ids[1], 11)],
            &cov,
            UpdateMode::Changed,
        );
        assert_eq!(ch[0].written, 1);
    }

    #[test]
    fn pruning_needs_a_complete_run() {
        let dir = tempfile::tempdir().unwrap();
        let ids = [
            "t/test_a.py::test_x",
            "t/test_a.py::test_y",
            "t/test_b.py::test_z",
        ];
        run(
            dir.path(),
            &[(ids[0], 1), (ids[1], 2), (ids[2], 3)],
            &complete(&ids),
            UpdateMode::Changed,
        );
        let partial = Coverage {
            complete: false,
            collected: [ids[0].to_string()].into(),
            scope: vec![],
            accept_environment: false,
            unsettled: false,
        };
        let ch = run(dir.path(), &[(ids[0], 1)], &partial, UpdateMode::Changed);
        assert!(ch.is_empty());
        let mut s = session(dir.path());
        assert!(s.stale(&partial).unwrap().is_empty());
        let cov = complete(&ids[..1]);
        assert_eq!(
            s.stale(&cov).unwrap(),
            vec![ids[1].to_string(), ids[2].to_string()]
        );
        let ch = run(dir.path(), &[(ids[0], 1)], &cov, UpdateMode::Changed);
        assert_eq!(ch.len(), 2);
        assert!(ch
            .iter()
            .any(|c| c.deleted && c.path.ends_with("t/test_b.toml")));
        assert!(!dir.path().join("t/test_b.toml").exists());
        assert!(ch.iter().any(|c| c.pruned == 1 && !c.deleted));
    }

    #[test]
    fn scope_limits_pruning_to_the_run_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ["a/test_a.py::test_x", "b/test_b.py::test_z"];
        run(
            dir.path(),
            &[(ids[0], 1), (ids[1], 3)],
            &complete(&ids),
            UpdateMode::Changed,
        );
        let cov = Coverage {
            complete: true,
            collected: [ids[0].to_string()].into(),
            scope: vec!["a".into()],
            accept_environment: false,
            unsettled: false,
        };
        run(dir.path(), &[(ids[0], 1)], &cov, UpdateMode::Changed);
        assert!(dir.path().join("b/test_b.toml").exists());
    }

    #[test]
    fn malformed_file_stops_update_and_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t/test_a.toml");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "[memcheck\nbroken").unwrap();
        let mut s = session(dir.path());
        let e = s
            .judge(
                "t/test_a.py::test_x",
                entry(1),
                None,
                &MarkerRules::default(),
                "",
            )
            .unwrap_err();
        assert!(e.to_string().contains("test_a.toml:1:"), "{e}");
        s.results.push(TestResult {
            nodeid: "t/test_a.py::test_x".into(),
            outcome: Outcome::New,
            measured: entry(1),
            baseline: None,
            limits: BTreeMap::new(),
            location: None,
            site: None,
            message: String::new(),
            checks: vec![],
            recordable: true,
            disturbed: None,
            unstable: vec![],
            failed: false,
        });
        assert!(s
            .update(UpdateMode::All, &complete(&["t/test_a.py::test_x"]))
            .is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "[memcheck\nbroken");
    }

    #[cfg(unix)]
    #[test]
    fn a_refused_path_stops_the_update_before_any_write() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("z")).unwrap();
        let mut s = session(dir.path());
        for id in ["a/test_a.py::t", "z/test_z.py::t"] {
            let r = s
                .judge(id, entry(1), None, &MarkerRules::default(), "")
                .unwrap();
            s.record(r);
        }
        let e = s.update(UpdateMode::All, &Coverage::default()).unwrap_err();
        assert!(e.to_string().contains("no-symlink-out"), "{e}");
        assert!(
            !dir.path().join("a/test_a.toml").exists(),
            "nothing written"
        );
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        // Negative control: without the link, both are written.
        fs::remove_file(dir.path().join("z")).unwrap();
        assert_eq!(
            s.update(UpdateMode::All, &Coverage::default())
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn other_environment_is_kept_on_partial_runs() {
        let dir = tempfile::tempdir().unwrap();
        let id = "t/test_a.py::test_x";
        run(
            dir.path(),
            &[(id, 100)],
            &complete(&[id]),
            UpdateMode::Changed,
        );
        let path = dir.path().join("t/test_a.toml");
        let before = fs::read_to_string(&path).unwrap();
        let mut s = session(dir.path());
        s.env.python = "3.12".into();
        let r = s
            .judge(id, entry(5000), None, &MarkerRules::default(), "")
            .unwrap();
        assert_eq!(r.outcome, Outcome::EnvMismatch);
        s.record(r);
        let ch = s.update(UpdateMode::Changed, &Coverage::default()).unwrap();
        assert!(ch[0]
            .note
            .as_ref()
            .unwrap()
            .contains("not rewritten by a partial run"));
        assert_eq!(fs::read_to_string(&path).unwrap(), before);
        let ch = s.update(UpdateMode::Changed, &complete(&[id])).unwrap();
        assert!(ch[0].note.as_ref().unwrap().contains("re-recorded"));
        assert!(fs::read_to_string(&path)
            .unwrap()
            .contains("python = \"3.12\""));
    }

    #[test]
    fn after_an_update_a_result_is_unstable_by_the_baseline_written() {
        let dir = tempfile::tempdir().unwrap();
        let id = "t/test_a.py::test_x";
        let cov = complete(&[id]);
        let update = |measured: Entry| {
            let mut s = session(dir.path());
            let r = s
                .judge(id, measured, None, &MarkerRules::default(), "")
                .unwrap();
            let before = r.unstable.clone();
            s.record(r);
            s.update(UpdateMode::Changed, &cov).unwrap();
            (before, s.results[0].unstable.clone())
        };
        let wide = Entry {
            peak_max: Some(3 << 20),
            ..entry(1 << 20)
        };
        assert_eq!(
            update(wide),
            (vec!["peak".to_string()], vec!["peak".into()])
        );
        // a stable measurement outside the spread replaces it: judged against the spread
        // (unstable), reported after the update as what is now recorded (stable)
        assert_eq!(update(entry(5 << 20)), (vec!["peak".to_string()], vec![]));
        // negative control: one inside the spread keeps it, and the report says so
        update(wide);
        assert_eq!(
            update(entry(2 << 20)),
            (vec!["peak".to_string()], vec!["peak".into()])
        );
    }

    #[test]
    fn an_update_writes_a_spread_only_when_it_is_not_covered() {
        let dir = tempfile::tempdir().unwrap();
        let id = "t/test_a.py::test_x";
        let cov = complete(&[id]);
        run(dir.path(), &[(id, 1 << 20)], &cov, UpdateMode::Changed);
        let path = dir.path().join("t/test_a.toml");
        let stable = fs::read_to_string(&path).unwrap();
        let record = |measured: Entry| {
            let mut s = session(dir.path());
            let r = s
                .judge(id, measured, None, &MarkerRules::default(), "")
                .unwrap();
            let unstable = r.unstable.clone();
            s.record(r);
            (s.update(UpdateMode::Changed, &cov).unwrap(), unstable)
        };
        // A spread within the stable entry's tolerance: nothing churns.
        let narrow = Entry {
            peak_max: Some((1 << 20) + 1000),
            ..entry(1 << 20)
        };
        let (ch, unstable) = record(narrow);
        assert!(ch.is_empty() && unstable == ["peak"], "{ch:?}");
        assert_eq!(fs::read_to_string(&path).unwrap(), stable);
        // A spread beyond it is written, beside peak.
        let wide = Entry {
            peak_max: Some(3 << 20),
            ..entry(1 << 20)
        };
        let (ch, _) = record(wide);
        assert_eq!(ch[0].written, 1);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            stable.replace("peak = 1048576\n", "peak = 1048576\npeak_max = 3145728\n")
        );
        // A later stable measurement inside the spread leaves it; the gate reports it unstable.
        let (ch, unstable) = record(entry(2 << 20));
        assert!(ch.is_empty() && unstable == ["peak"], "{ch:?}");
        let mut s = session(dir.path());
        let r = s
            .judge(id, entry(3 << 20), None, &MarkerRules::default(), "")
            .unwrap();
        assert_eq!((r.outcome, r.limits["peak"]), (Outcome::Ok, 3_525_836));
        let r = s
            .judge(id, entry(3_525_837), None, &MarkerRules::default(), "")
            .unwrap();
        assert_eq!(r.outcome, Outcome::Over);
        assert!(
            r.message
                .contains("unstable: its update measured 1.00 MiB to 3.00 MiB"),
            "{}",
            r.message
        );
        // unstable="skip": not gated; anything else is refused, naming the marker.
        let skip = MarkerRules {
            unstable: Some("skip".into()),
            origin: "memcheck marker of t/test_a.py::test_x".into(),
            ..MarkerRules::default()
        };
        let r = s.judge(id, entry(1 << 30), None, &skip, "").unwrap();
        assert_eq!(r.outcome, Outcome::Ok);
        let bad = MarkerRules {
            unstable: Some("widen".into()),
            ..skip
        };
        let e = s
            .judge(id, entry(1), None, &bad, "")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "memcheck marker of t/test_a.py::test_x unstable=: expected \"gate\" or \"skip\", got 'widen'"
        );
        // --memcheck-update=all records what was measured: stable again, no spread.
        let mut s = session(dir.path());
        let r = s
            .judge(id, entry(1 << 20), None, &MarkerRules::default(), "")
            .unwrap();
        s.record(r);
        s.update(UpdateMode::All, &cov).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), stable);
    }
}
