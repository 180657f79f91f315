//! The Python face of the engine: thin wrappers, no logic of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::baseline::{Entry, Environment};
use crate::boundary::Boundary;
use crate::config;
use crate::error::Error;
use crate::escape;
use crate::gate::{Location, TestResult};
use crate::markers::MarkerRules;
use crate::meter::native_sites::{self, NativeDiagnosis, NativeSite};
use crate::meter::{self, Measurement, MeterKind};
use crate::report;
use crate::store::{Coverage, UpdateMode};

#[pymethods]
impl Measurement {
    #[new]
    // Python's constructor: one keyword argument per figure, as the stub shows.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (peak, retained, allocations=0, cycles=0, disturbed=None, *, peak_max=None, retained_max=None, native_peak=None, native_retained=None, native_peak_max=None, native_retained_max=None, combined_peak=None))]
    fn new(
        peak: u64,
        retained: u64,
        allocations: u64,
        cycles: u64,
        disturbed: Option<String>,
        peak_max: Option<u64>,
        retained_max: Option<u64>,
        native_peak: Option<u64>,
        native_retained: Option<u64>,
        native_peak_max: Option<u64>,
        native_retained_max: Option<u64>,
        combined_peak: Option<u64>,
    ) -> Self {
        Measurement {
            peak,
            retained,
            allocations,
            cycles,
            disturbed,
            peak_max,
            retained_max,
            native_peak,
            native_retained,
            native_peak_max,
            native_retained_max,
            combined_peak,
        }
    }

    /// Whether the numbers can be trusted.
    #[getter(intact)]
    fn py_intact(&self) -> bool {
        self.intact()
    }

    /// The smaller of two measurements of the same test, metric by metric.
    #[pyo3(name = "least")]
    fn py_least(&self, other: &Measurement) -> Measurement {
        self.least(other)
    }

    fn __repr__(&self) -> String {
        let mut spread = String::new();
        if let Some(m) = self.peak_max {
            spread.push_str(&format!(", peak_max={m}"));
        }
        if let Some(m) = self.retained_max {
            spread.push_str(&format!(", retained_max={m}"));
        }
        if let (Some(p), Some(r)) = (self.native_peak, self.native_retained) {
            spread.push_str(&format!(", native_peak={p}, native_retained={r}"));
        }
        if let Some(c) = self.combined_peak {
            spread.push_str(&format!(", combined_peak={c}"));
        }
        format!(
            "Measurement(peak={}, retained={}, allocations={}, cycles={}, disturbed={:?}{spread})",
            self.peak, self.retained, self.allocations, self.cycles, self.disturbed
        )
    }
}

/// Call `func(*args, **kwargs)` inside a measured window; returns `(result, Measurement)`.
#[pyfunction]
#[pyo3(signature = (meter, func, args, kwargs=None))]
fn measure<'py>(
    py: Python<'py>,
    meter: &str,
    func: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<(Bound<'py, PyAny>, Measurement)> {
    let kind = MeterKind::parse(meter, "meter")?;
    let (result, m) = meter::measure(py, kind, func, args, kwargs)?;
    Ok((result, m))
}

/// A window opened and closed by hand, around the execution of a coroutine: `open()` before
/// its first step, `close(completed)` after its last. Whatever runs on this thread between the
/// two (the event loop's work for the test, other tasks) is counted.
#[pyclass(module = "pytest_memcheck._engine", unsendable)]
pub struct Window {
    kind: MeterKind,
    open: Option<meter::Window>,
}

#[pymethods]
impl Window {
    #[new]
    fn new(meter: &str) -> PyResult<Self> {
        Ok(Window {
            kind: MeterKind::parse(meter, "meter")?,
            open: None,
        })
    }

    fn open(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.open.is_some() {
            return Err(Error::Meter("this window is already open".into()).into());
        }
        self.open = Some(meter::Window::open(py, self.kind)?);
        Ok(())
    }

    /// Close the window; `completed` is false when the test raised (no numbers are read, and
    /// an exception being handled is kept).
    fn close(&mut self, py: Python<'_>, completed: bool) -> PyResult<Measurement> {
        let window = self
            .open
            .take()
            .ok_or_else(|| Error::Meter("this window is not open".into()))?;
        window.close(py, completed)
    }
}

/// Take the threads running now (but the calling one) as the test run's machinery, whose
/// allocations no measurement counts; returns how many. Called once, before the first test.
#[pyfunction]
fn exclude_threads_running_now(py: Python<'_>) -> PyResult<usize> {
    meter::exclude_threads_running_now(py)
}

/// Count only the calling thread's allocations in the windows opened from now on (`on`), or
/// every thread but the run's machinery (the default): pytest-memray's `current_thread_only`.
#[pyfunction]
fn count_this_thread_only(on: bool) {
    meter::count_this_thread_only(on)
}

/// Text escaped as the data of a GitHub workflow command.
#[pyfunction]
fn escape_command(text: &str) -> String {
    crate::escape::command_data(text)
}

/// Text escaped to render as itself in Markdown (the step summary).
#[pyfunction]
fn escape_markdown(text: &str) -> String {
    crate::escape::markdown(text)
}

/// Count native memory (the malloc family called by extensions) in every later window of the
/// python meter; raises MeterError saying why it cannot be counted here.
#[pyfunction]
fn enable_native() -> PyResult<()> {
    meter::enable_native().map_err(|e| Error::Meter(e).into())
}

/// Open a native window that records the allocating stacks (the diagnosing run only).
#[pyfunction]
fn native_diagnosis_start() -> PyResult<()> {
    native_sites::start().map_err(|e| Error::Meter(e).into())
}

/// Close it: the native totals and the sites, retained bytes first.
#[pyfunction]
fn native_diagnosis_stop(py: Python<'_>) -> NativeDiagnosis {
    native_sites::stop(py)
}

/// Bytes held by the python meter's own bookkeeping.
#[pyfunction]
fn meter_footprint() -> u64 {
    meter::footprint()
}

/// Parse a size (`64 KiB`) in bytes; errors name `origin`.
#[pyfunction]
#[pyo3(signature = (text, origin="size"))]
fn parse_size(text: &str, origin: &str) -> PyResult<u64> {
    Ok(crate::sizes::parse_size(text, origin)?)
}

/// Parse a percentage (`5%`) as a fraction; errors name `origin`.
#[pyfunction]
#[pyo3(signature = (text, origin="percentage"))]
fn parse_percent(text: &str, origin: &str) -> PyResult<f64> {
    Ok(crate::sizes::parse_percent(text, origin)?.ppm as f64 / 1_000_000.0)
}

#[pyfunction]
fn format_size(bytes: u64) -> String {
    crate::sizes::format_size(bytes)
}

/// The verdict of one test, as the plugin needs it.
#[pyclass(frozen, module = "pytest_memcheck._engine")]
pub struct Verdict {
    #[pyo3(get)]
    outcome: String,
    /// Whether the gate fails the test.
    #[pyo3(get)]
    failed: bool,
    #[pyo3(get)]
    message: String,
    result: TestResult,
}

#[pymethods]
impl Verdict {
    /// The metrics over their limit (`peak`, `retained`, `cycles`).
    #[getter]
    fn over(&self) -> Vec<&'static str> {
        self.result
            .checks
            .iter()
            .filter(|c| c.over())
            .map(|c| c.metric.name())
            .collect()
    }

    /// Whether the test fails: with `gated` false (an update), only absolute limits fail it,
    /// since the update records the new values instead.
    fn fails(&self, gated: bool) -> bool {
        if gated {
            self.result.failed
        } else {
            self.result
                .checks
                .iter()
                .any(|c| c.over() && c.baseline().is_none())
        }
    }

    /// The result as JSON, for the report (it crosses to the xdist controller as a string).
    /// A test that did not pass its own assertions is neither gated nor recorded; an update
    /// records instead of gating (`gated` false). `message`: the whole failure message as the
    /// test's report shows it (with the confirmation and the diagnosis), for the results file,
    /// `memcheck check` and the annotation; `site`: the diagnosis's top site in the project.
    #[pyo3(signature = (passed_own, gated=true, path=None, line=None, message=None, site=None))]
    fn to_json(
        &self,
        passed_own: bool,
        gated: bool,
        path: Option<String>,
        line: Option<u32>,
        message: Option<String>,
        site: Option<(String, u32)>,
    ) -> PyResult<String> {
        let mut r = self.result.clone();
        r.recordable = passed_own && r.disturbed.is_none();
        r.failed = passed_own && self.fails(gated);
        if !r.failed {
            r.message.clear();
        } else if let Some(message) = message {
            r.message = message;
        }
        r.location = path.map(|path| Location {
            path,
            line: line.unwrap_or(1),
        });
        r.site = site
            .filter(|_| r.failed)
            .map(|(path, line)| Location { path, line });
        serde_json::to_string(&r).map_err(|e| Error::Meter(e.to_string()).into())
    }
}

/// A marker value as the text the engine parses: sizes and percentages may be given as numbers.
fn marker_text(v: Option<Bound<'_, PyAny>>) -> PyResult<Option<String>> {
    v.filter(|v| !v.is_none())
        .map(|v| Ok(v.str()?.to_string()))
        .transpose()
}

#[pymethods]
impl MarkerRules {
    /// The keyword arguments the constructor takes: the plugin passes these of a test's marker
    /// settings and keeps the rest (`confirm`, `skip`) to itself.
    #[classattr]
    const KEYS: [&'static str; 12] = [
        "origin",
        "peak",
        "retained",
        "native_peak",
        "native_retained",
        "tolerance",
        "floor",
        "gate_cycles",
        "gate_retained",
        "unstable",
        "peak_origin",
        "retained_origin",
    ];

    #[new]
    #[pyo3(signature = (*, origin=None, peak=None, retained=None, native_peak=None, native_retained=None, tolerance=None, floor=None, gate_cycles=None, gate_retained=None, unstable=None, peak_origin=None, retained_origin=None))]
    #[allow(clippy::too_many_arguments)] // the keyword arguments of a Python constructor
    fn py_new(
        origin: Option<String>,
        peak: Option<Bound<'_, PyAny>>,
        retained: Option<Bound<'_, PyAny>>,
        native_peak: Option<Bound<'_, PyAny>>,
        native_retained: Option<Bound<'_, PyAny>>,
        tolerance: Option<Bound<'_, PyAny>>,
        floor: Option<Bound<'_, PyAny>>,
        gate_cycles: Option<bool>,
        gate_retained: Option<bool>,
        unstable: Option<String>,
        peak_origin: Option<String>,
        retained_origin: Option<String>,
    ) -> PyResult<Self> {
        let unmarked = MarkerRules::unmarked();
        Ok(MarkerRules {
            peak: marker_text(peak)?,
            retained: marker_text(retained)?,
            native_peak: marker_text(native_peak)?,
            native_retained: marker_text(native_retained)?,
            tolerance: marker_text(tolerance)?,
            floor: marker_text(floor)?,
            gate_cycles,
            gate_retained,
            unstable,
            origin: origin.unwrap_or(unmarked.origin),
            peak_origin: MarkerRules::limit_origin(peak_origin.as_deref()),
            retained_origin: MarkerRules::limit_origin(retained_origin.as_deref()),
        })
    }
}

/// The rules given, or those of a test without markers.
fn marker_rules(rules: Option<PyRef<'_, MarkerRules>>) -> MarkerRules {
    rules.map_or_else(MarkerRules::unmarked, |r| r.clone())
}

/// What an update did to one baseline file.
#[pyclass(frozen, get_all, module = "pytest_memcheck._engine")]
pub struct FileChange {
    path: PathBuf,
    /// Entries written.
    written: usize,
    /// Entries of tests no longer collected, removed.
    pruned: usize,
    /// The file was removed: no entry was left.
    deleted: bool,
    /// What else happened to it (re-recorded from another environment, or left alone), for
    /// the terminal.
    note: Option<String>,
}

fn coverage(complete: bool, collected: Vec<String>, scope: Vec<String>) -> Coverage {
    Coverage {
        complete,
        collected: collected.into_iter().collect::<BTreeSet<_>>(),
        scope,
        accept_environment: false,
        unsettled: false,
    }
}

/// One run's settings, baselines and results. Unsendable: it holds a git repository handle.
#[pyclass(module = "pytest_memcheck._engine", unsendable)]
pub struct Session {
    inner: crate::session::Session,
}

#[pymethods]
impl Session {
    /// Load the settings of the project at `root` with `overrides` from the command line
    /// (setting name → text) and `ini` from pytest's ini keys (setting name → (text, where it
    /// was written)), and point at its baseline directory.
    #[new]
    #[pyo3(signature = (root, overrides, python, implementation, platform, git_ref=None, ini=BTreeMap::new(), *, mode=String::new()))]
    #[allow(clippy::too_many_arguments)] // the keyword arguments of a Python constructor
    fn new(
        root: PathBuf,
        overrides: BTreeMap<String, String>,
        python: String,
        implementation: String,
        platform: String,
        git_ref: Option<String>,
        ini: BTreeMap<String, (String, String)>,
        mode: String,
    ) -> PyResult<Self> {
        let settings = config::load_layers(&root, &ini, &overrides)?;
        let env = Environment {
            python,
            implementation,
            platform,
            meter: settings.meter.name().to_string(),
            mode,
        };
        let mut inner = crate::session::Session::open(&root, settings, env, "this interpreter")?;
        if let Some(rev) = git_ref {
            inner.use_git_ref(&root, &rev)?;
        }
        Ok(Session { inner })
    }

    #[getter]
    fn baseline_dir(&self) -> PathBuf {
        self.inner.dir().to_path_buf()
    }

    #[getter]
    fn meter(&self) -> &'static str {
        self.inner.settings.meter.name()
    }

    /// Native memory is counted (`--memcheck-native`).
    #[getter]
    fn native(&self) -> bool {
        self.inner.settings.native
    }

    #[getter]
    fn strict(&self) -> bool {
        self.inner.settings.strict
    }

    #[getter]
    fn confirm(&self) -> bool {
        self.inner.settings.confirm
    }

    #[getter]
    fn config_file(&self) -> Option<PathBuf> {
        self.inner.settings.source.clone()
    }

    /// `tolerance 10%, floor 64.0 KiB` for the report header.
    #[getter]
    fn thresholds(&self) -> String {
        let t = self.inner.settings.tolerance;
        format!(
            "tolerance {}, floor {}",
            t.relative,
            crate::sizes::format_size(t.floor)
        )
    }

    #[getter]
    fn environment(&self) -> String {
        self.inner.env.to_string()
    }

    /// Read the baseline files of these modules now, so a malformed one stops the run early.
    fn preload(&mut self, modules: Vec<String>) -> PyResult<()> {
        for m in modules {
            self.inner.load(&m)?;
        }
        Ok(())
    }

    #[pyo3(signature = (rules=None))]
    fn check_markers(&self, rules: Option<PyRef<'_, MarkerRules>>) -> PyResult<()> {
        Ok(self.inner.check_markers(&marker_rules(rules))?)
    }

    /// Judge a measurement; `update_hint` is the command shown to accept a change.
    #[pyo3(signature = (nodeid, measurement, rules=None, update_hint=""))]
    fn judge(
        &mut self,
        nodeid: &str,
        measurement: &Measurement,
        rules: Option<PyRef<'_, MarkerRules>>,
        update_hint: &str,
    ) -> PyResult<Verdict> {
        let result = self.inner.judge(
            nodeid,
            measurement.entry(),
            measurement.disturbed.clone(),
            &marker_rules(rules),
            update_hint,
        )?;
        Ok(Verdict {
            outcome: result.outcome.name().to_string(),
            failed: result.failed,
            message: result.message.clone(),
            result,
        })
    }

    /// What an update records from the measurements of a test so far (in the order taken) and
    /// whether it wants another: (the measurement to judge and record, more wanted). See
    /// `spread.rs`; a test whose first two measurements agree gets their smaller values.
    #[pyo3(signature = (runs, rules=None))]
    fn settle(
        &self,
        runs: Vec<PyRef<'_, Measurement>>,
        rules: Option<PyRef<'_, MarkerRules>>,
    ) -> PyResult<(Measurement, bool)> {
        let entries: Vec<Entry> = runs.iter().map(|m| m.entry()).collect();
        let (e, more) = self.inner.settle(&entries, &marker_rules(rules))?;
        let disturbed = runs.iter().find_map(|m| m.disturbed.clone());
        Ok((Measurement::settled(e, disturbed), more))
    }

    /// Keep a result (JSON from `Verdict.to_json`, possibly from an xdist worker).
    fn record(&mut self, result: &str) -> PyResult<()> {
        let r: TestResult = serde_json::from_str(result)
            .map_err(|e| Error::usage("memcheck result from a worker", e.to_string()))?;
        self.inner.record(r);
        Ok(())
    }

    fn stale(
        &mut self,
        complete: bool,
        collected: Vec<String>,
        scope: Vec<String>,
    ) -> PyResult<Vec<String>> {
        Ok(self.inner.stale(&coverage(complete, collected, scope))?)
    }

    /// Write baselines; returns what changed, file by file.
    fn update(
        &mut self,
        all: bool,
        complete: bool,
        collected: Vec<String>,
        scope: Vec<String>,
    ) -> PyResult<Vec<FileChange>> {
        let mode = if all {
            UpdateMode::All
        } else {
            UpdateMode::Changed
        };
        let changes = self
            .inner
            .update(mode, &coverage(complete, collected, scope))?;
        // Notes quote environments read from baseline files: shown in the terminal.
        Ok(changes
            .into_iter()
            .map(|c| FileChange {
                note: c.note.as_deref().map(escape::terminal),
                path: c.path,
                written: c.written,
                pruned: c.pruned,
                deleted: c.deleted,
            })
            .collect())
    }

    #[pyo3(signature = (stale, verbose=false))]
    fn summary(&self, stale: Vec<String>, verbose: bool) -> Option<String> {
        report::summary_table(
            &self.inner.results,
            &stale,
            verbose,
            self.inner.settings.meter.counts_allocations(),
        )
    }

    /// One line per disturbed measurement, with its reason.
    fn disturbed(&self) -> Vec<String> {
        report::disturbed_lines(&self.inner.results)
    }

    /// One line per unstable test: its spread, and what the gate does with it.
    fn unstable(&self) -> Vec<String> {
        report::unstable_lines(&self.inner.results)
    }

    /// (message, no test gated at all) when tests went ungated for another environment's baselines.
    /// `update_hint`: the command that records baselines here, as the run was typed.
    fn ungated(&mut self, update_hint: &str) -> PyResult<Option<(String, bool)>> {
        let recorded = self.inner.foreign_environments()?;
        Ok(report::ungated(
            &self.inner.results,
            &self.inner.env.to_string(),
            &recorded,
            update_hint,
        ))
    }

    /// What to do about new and improved tests, after a gate run.
    fn next_steps(&self) -> Vec<String> {
        report::next_steps(&self.inner.results)
    }

    fn totals(&self, stale: usize) -> String {
        report::totals_line(&self.inner.results, stale)
    }

    /// Write every result of the run to `path` (the `--memcheck-json` schema). The path is the
    /// user's `--memcheck-json`: it may be anywhere.
    fn write_json(&self, path: PathBuf, stale: Vec<String>, complete: bool) -> PyResult<()> {
        let (dir, name) = split_file(&path)?;
        let boundary = Boundary::chosen(dir, "the --memcheck-json directory")?;
        let document = self.inner.results_document(stale, complete);
        Ok(document.write(&boundary, name)?)
    }

    /// GitHub Actions output: (annotation lines, step summary Markdown). `prefix`: the project
    /// root relative to the repository's (annotations name files from the repository's root).
    #[pyo3(signature = (stale, accept, prefix=""))]
    fn github(&self, stale: Vec<String>, accept: &str, prefix: &str) -> (Vec<String>, String) {
        let results = &self.inner.results;
        let totals = report::totals_line(results, stale.len());
        (
            crate::github::annotations(results, prefix),
            crate::github::step_summary(results, &stale, &totals, accept),
        )
    }
}

/// A path the user chose, as its directory and its file name.
fn split_file(path: &Path) -> PyResult<(&Path, &Path)> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok((dir, Path::new(name))),
        _ => Err(Error::usage(path.display().to_string(), "not a file name").into()),
    }
}

/// Write `<stem>.folded` and a flame graph `<stem>.svg` under `dir`, the `--memcheck-dump`
/// directory the user chose.
#[pyfunction]
fn write_flamegraph(dir: PathBuf, stem: &str, folded: &str, title: &str) -> PyResult<()> {
    let boundary = Boundary::chosen(&dir, "the --memcheck-dump directory")?;
    Ok(crate::dump::write_flamegraph(
        &boundary, stem, folded, title,
    )?)
}

/// Write `text` to the file `name` under `dir`, the `--memcheck-dump` directory (the JSON of a
/// heap dump): atomically, and refused if `name` leads out of `dir`.
#[pyfunction]
fn write_dump_file(dir: PathBuf, name: PathBuf, text: &str) -> PyResult<()> {
    let boundary = Boundary::chosen(&dir, "the --memcheck-dump directory")?;
    boundary.write(&name, text.as_bytes(), "heap dump")?;
    Ok(())
}

/// Append `text` to the file at `path`, named by the CI runner (`GITHUB_STEP_SUMMARY`).
#[pyfunction]
fn append_step_summary(path: PathBuf, text: &str) -> PyResult<()> {
    let (dir, name) = split_file(&path)?;
    let boundary = Boundary::chosen(dir, "the directory of GITHUB_STEP_SUMMARY")?;
    Ok(boundary.append(name, text.as_bytes(), "step summary")?)
}

/// Text for the terminal: control characters shown as `\xNN`, line breaks kept.
#[pyfunction]
fn escape_terminal(text: &str) -> String {
    escape::terminal_text(text)
}

/// A safe, distinct file name stem for a node id.
#[pyfunction]
fn dump_stem(nodeid: &str) -> String {
    crate::dump::file_stem(nodeid)
}

/// The `memcheck` command line; returns the exit status.
#[pyfunction]
#[pyo3(signature = (args, python, implementation, platform, mode=String::new()))]
fn cli(
    args: Vec<String>,
    python: String,
    implementation: String,
    platform: String,
    mode: String,
) -> i32 {
    crate::cli::main(
        &args,
        &crate::cli::Here {
            python,
            implementation,
            platform,
            mode,
        },
    )
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Measurement>()?;
    m.add_class::<Verdict>()?;
    m.add_class::<Window>()?;
    m.add_class::<Session>()?;
    m.add_class::<MarkerRules>()?;
    m.add_class::<FileChange>()?;
    m.add_class::<NativeSite>()?;
    m.add_class::<NativeDiagnosis>()?;
    m.add_function(wrap_pyfunction!(native_diagnosis_start, m)?)?;
    m.add_function(wrap_pyfunction!(native_diagnosis_stop, m)?)?;
    m.add_function(wrap_pyfunction!(measure, m)?)?;
    m.add_function(wrap_pyfunction!(cli, m)?)?;
    m.add_function(wrap_pyfunction!(write_flamegraph, m)?)?;
    m.add_function(wrap_pyfunction!(write_dump_file, m)?)?;
    m.add_function(wrap_pyfunction!(append_step_summary, m)?)?;
    m.add_function(wrap_pyfunction!(dump_stem, m)?)?;
    m.add_function(wrap_pyfunction!(escape_terminal, m)?)?;
    m.add_function(wrap_pyfunction!(meter_footprint, m)?)?;
    m.add_function(wrap_pyfunction!(enable_native, m)?)?;
    m.add_function(wrap_pyfunction!(exclude_threads_running_now, m)?)?;
    m.add_function(wrap_pyfunction!(count_this_thread_only, m)?)?;
    m.add_function(wrap_pyfunction!(escape_command, m)?)?;
    m.add_function(wrap_pyfunction!(escape_markdown, m)?)?;
    m.add_function(wrap_pyfunction!(parse_size, m)?)?;
    m.add_function(wrap_pyfunction!(parse_percent, m)?)?;
    m.add_function(wrap_pyfunction!(format_size, m)?)?;
    m.add(
        "MemcheckError",
        py.get_type::<crate::error::MemcheckError>(),
    )?;
    m.add("UsageError", py.get_type::<crate::error::UsageError>())?;
    m.add(
        "FileFormatError",
        py.get_type::<crate::error::FileFormatError>(),
    )?;
    m.add("MeterError", py.get_type::<crate::error::MeterError>())?;
    m.add("FORMAT", crate::baseline::FORMAT)?;
    Ok(())
}
