//! The `memcheck` command: review and accept baselines outside pytest.
//!
//! Exit status: 0 success; 1 `check` found tests over budget, or there was nothing to show (no
//! baselines, a test with no history, results with no tests); 2 bad usage or bad input (a file
//! that cannot be read, an unknown revision...), with the reason on stderr.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use comfy_table::presets::{ASCII_MARKDOWN, UTF8_FULL_CONDENSED};
use comfy_table::{ColumnConstraint, ContentArrangement, Table};

use crate::baseline::{files_in, module_of, split_nodeid, BaselineFile, Entry, Environment};
use crate::boundary::slashed;
use crate::config::{self, Settings};
use crate::error::{Error, Result};
use crate::escape::{markdown, shell_word, terminal, terminal_text};
use crate::gate::{Metric, Outcome};
use crate::git::Repo;
use crate::meter::MeterKind;
use crate::results::Results;
use crate::session::Session;
use crate::sizes::{format_change, format_size};
use crate::store::{Coverage, UpdateMode};

#[derive(Parser, Debug)]
#[command(
    name = "memcheck",
    about = "Review and accept pytest-memcheck baselines",
    after_help = "Exit status: 0 success, 1 `check` found tests over budget or there was nothing \
                  to show, 2 bad usage or input."
)]
struct Cli {
    /// The project root (where pyproject.toml or memcheck.toml lives); by default found as pytest
    /// finds its rootdir, searching upward from the current directory.
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Table,
    Markdown,
    /// For scripts (the GitHub action): every change with its kind, values and limits.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the baselines as a table.
    Show {
        /// Read them as committed at this git revision instead of the work tree.
        #[arg(long = "ref")]
        rev: Option<String>,
    },
    /// Baseline changes between two git revisions, or a revision and the work tree: raised
    /// (accepted values grew, so their limits rose), new, lowered, removed.
    Diff {
        /// The old revision (default HEAD).
        old: Option<String>,
        /// The new revision (default: the work tree).
        new: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// One test's values through the commits that changed them, with a chart.
    Log {
        /// The test's node id, e.g. tests/test_io.py::test_read.
        nodeid: String,
    },
    /// Accept values measured elsewhere (CI): write them into the baseline files.
    Update {
        /// Results files of `pytest --memcheck-json`; shards are merged.
        #[arg(long = "from", required = true, num_args = 1..)]
        from: Vec<PathBuf>,
        /// Rewrite every entry, not only new ones and those outside their tolerance.
        #[arg(long)]
        all: bool,
        /// Re-record baseline files that were recorded in another environment.
        #[arg(long)]
        accept_environment: bool,
        /// The baseline directory to write, when the run was given one on pytest's command
        /// line (`--memcheck-baseline-dir`); by default the project's setting.
        #[arg(long, value_name = "DIR")]
        baseline_dir: Option<String>,
    },
    /// Gate merged results offline; exit 1 when a test is over budget, like pytest.
    Check {
        #[arg(long = "from", required = true, num_args = 1..)]
        from: Vec<PathBuf>,
    },
}

/// This interpreter, for placeholders in baseline-dir, computed as the plugin computes it.
pub struct Here {
    pub python: String,
    pub implementation: String,
    pub platform: String,
    /// See [`Environment::mode`].
    pub mode: String,
}

/// Run the command line; returns the exit status.
pub fn main(args: &[String], here: &Here) -> i32 {
    let cli = match Cli::try_parse_from(
        std::iter::once("memcheck".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match run(cli, here) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("memcheck: {}", terminal_text(&e.to_string()));
            2
        }
    }
}

/// The baseline directory (relative to root) for reading, with this interpreter's placeholders.
fn baseline_dir(root: &Path, env: &Environment) -> Result<PathBuf> {
    let settings = config::load(root, &BTreeMap::new())?;
    let dir = config::expand_dir(
        &settings.baseline_dir,
        &env.python,
        &env.platform,
        &env.implementation,
        "this interpreter",
    )?;
    Ok(PathBuf::from(dir))
}

/// The project root as pytest finds its rootdir: the nearest ancestor of `start` (itself
/// included) with a pytest or memcheck configuration, else the nearest with a pyproject.toml,
/// else `start`.
pub fn discover_root(start: &Path) -> PathBuf {
    let holds = |dir: &Path, name: &str, section: Option<&str>| {
        let path = dir.join(name);
        match section {
            None => path.is_file(),
            Some(section) => std::fs::read_to_string(&path).is_ok_and(|t| t.contains(section)),
        }
    };
    let configured = |dir: &Path| {
        holds(dir, "memcheck.toml", None)
            || holds(dir, "pytest.ini", None)
            || holds(dir, ".pytest.ini", None)
            || holds(dir, "pyproject.toml", Some("[tool.pytest.ini_options]"))
            || holds(dir, "pyproject.toml", Some("[tool.memcheck]"))
            || holds(dir, "tox.ini", Some("[pytest]"))
            || holds(dir, "setup.cfg", Some("[tool:pytest]"))
    };
    start
        .ancestors()
        .find(|dir| configured(dir))
        .or_else(|| {
            start
                .ancestors()
                .find(|dir| holds(dir, "pyproject.toml", None))
        })
        .unwrap_or(start)
        .to_path_buf()
}

/// Fit a table to the terminal it is printed on (`COLUMNS` wide when set, else the terminal's
/// width), never wrapping its first column: node ids are copied and grepped. Piped output is not
/// wrapped: one line per row.
fn fit(table: &mut Table) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        fit_to(
            table,
            std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()),
        );
    }
}

/// Wrap `table` within `width` (None: the terminal's), all columns but the first.
fn fit_to(table: &mut Table, width: Option<u16>) {
    if let Some(width) = width {
        table.set_width(width);
    }
    table.set_content_arrangement(ContentArrangement::Dynamic);
    if let Some(column) = table.column_mut(0) {
        column.set_constraint(ColumnConstraint::ContentWidth);
    }
}

fn run(cli: Cli, here: &Here) -> Result<i32> {
    let given = match cli.root {
        Some(root) => root,
        None => {
            let here = std::env::current_dir().map_err(|e| Error::io(Path::new("."), "open", e))?;
            discover_root(&here)
        }
    };
    let root = given
        .canonicalize()
        .map_err(|e| Error::io(&given, "open", e))?;
    let env = Environment {
        python: here.python.clone(),
        implementation: here.implementation.clone(),
        platform: here.platform.clone(),
        meter: String::new(),
        mode: here.mode.clone(),
    };
    match cli.command {
        Command::Show { rev } => {
            let dir = baseline_dir(&root, &env)?;
            let files = read_all(&root, &dir, rev.as_deref())?;
            if files.values().all(|f| f.entries.is_empty()) {
                eprintln!(
                    "memcheck: no baselines in {} (project root {}): record them with pytest --memcheck-update",
                    terminal(&dir.display().to_string()),
                    terminal(&root.display().to_string())
                );
                return Ok(1);
            }
            print!("{}", show(&files));
            Ok(0)
        }
        Command::Diff { old, new, format } => {
            let dir = baseline_dir(&root, &env)?;
            let old_rev = old.unwrap_or_else(|| "HEAD".into());
            let before = read_all(&root, &dir, Some(&old_rev))?;
            let after = read_all(&root, &dir, new.as_deref())?;
            // The limits each side implies under the settings the gate applied there: a raised
            // tolerance or floor raises every limit, with no baseline changed.
            let repo = Repo::discover(&root)?;
            let root_rel = repo.relative(&root)?;
            let old_settings = config::load_at(&repo, &old_rev, &root_rel)?;
            let new_settings = match &new {
                Some(rev) => config::load_at(&repo, rev, &root_rel)?,
                None => config::load(&root, &BTreeMap::new())?,
            };
            // The markers of the test modules with baselines: a marker's limit replaces the
            // baseline's, so a PR can loosen the gate there without touching a baseline.
            let modules: std::collections::BTreeSet<&String> =
                before.keys().chain(after.keys()).collect();
            let mut markers = Vec::new();
            for module in modules {
                let in_repo = slashed(&Path::new(&root_rel).join(module));
                let old_text = repo.read_at(&old_rev, &in_repo)?;
                let new_text = match &new {
                    Some(rev) => repo.read_at(rev, &in_repo)?,
                    None => std::fs::read_to_string(root.join(module)).ok(),
                };
                markers.extend(marker_change(module, old_text, new_text));
            }
            print!(
                "{}",
                diff(
                    &before,
                    &after,
                    format,
                    &old_settings,
                    &new_settings,
                    &markers
                )
            );
            Ok(0)
        }
        Command::Log { nodeid } => {
            let dir = baseline_dir(&root, &env)?;
            let repo = Repo::discover(&root)?;
            let (module, key) = split_nodeid(&nodeid);
            let path = crate::baseline::module_file(
                &Path::new(&repo.relative(&root)?).join(&dir),
                module,
            )?;
            let path = slashed(&path);
            match log(&repo.history(&path)?, key, &nodeid) {
                Some(text) => {
                    print!("{text}");
                    Ok(0)
                }
                None => {
                    // A bare test name, or a path from another directory: the ids of the work
                    // tree's baselines that end with what was typed.
                    let files = read_all(&root, &dir, None)?;
                    let near: Vec<String> = files
                        .iter()
                        .flat_map(|(m, f)| f.entries.keys().map(move |k| format!("{m}::{k}")))
                        .filter(|id| id.ends_with(&format!("::{nodeid}")) || id.ends_with(&nodeid))
                        .take(5)
                        .collect();
                    let hint = if near.is_empty() {
                        "node ids look like tests/test_io.py::test_read".to_string()
                    } else {
                        format!("did you mean {}?", near.join(", "))
                    };
                    eprintln!(
                        "memcheck: no baseline of {} in the history of {} ({})",
                        terminal(&nodeid),
                        terminal(&path),
                        terminal(&hint)
                    );
                    Ok(1)
                }
            }
        }
        Command::Update {
            from,
            all,
            accept_environment,
            baseline_dir,
        } => {
            let merged = merge(&from)?;
            // The results come from CI artifacts: untrusted. Their environment fills the
            // placeholders of baseline-dir, and every write stays inside the project.
            let overrides: BTreeMap<String, String> = baseline_dir
                .iter()
                .map(|d| ("baseline-dir".to_string(), d.clone()))
                .collect();
            let settings = config::load(&root, &overrides)?;
            let origin = format!("environment of {}", from[0].display());
            let mut session = Session::open(&root, settings, merged.environment.clone(), &origin)?;
            // After the boundary's checks of the directory itself (a refusal there says more).
            // The values belong in the directory the run read: a run given another one
            // (pytest's --memcheck-baseline-dir, an ini key) would otherwise be accepted
            // into files it was never compared with.
            let measured_against = &merged.gating.baseline_dir;
            if *measured_against != session.settings.baseline_dir {
                return Err(Error::usage(
                    "memcheck update",
                    format!(
                        "{} was measured against baseline-dir '{}', and this project's settings say '{}'; nothing was written. To write where that run read, add --baseline-dir {}",
                        from[0].display(),
                        measured_against,
                        session.settings.baseline_dir,
                        shell_word(measured_against),
                    ),
                ));
            }
            for t in merged.tests {
                session.record(t);
            }
            // As `pytest --memcheck-update`: results of a complete run re-record a file from
            // another environment (saying so); a partial run's need --accept-environment. The
            // CLI never prunes: it does not know which tests were collected.
            let coverage = Coverage {
                accept_environment: accept_environment || merged.complete,
                unsettled: true,
                ..Coverage::default()
            };
            let mode = if all {
                UpdateMode::All
            } else {
                UpdateMode::Changed
            };
            let changes = session.update(mode, &coverage)?;
            if changes.is_empty() {
                println!("baselines unchanged");
            }
            let mut refused = false;
            for c in changes {
                let rel = terminal(
                    &c.path
                        .strip_prefix(&root)
                        .unwrap_or(&c.path)
                        .display()
                        .to_string(),
                );
                if let Some(note) = &c.note {
                    println!("{rel}: {}", terminal(note));
                    refused |= note.contains("not rewritten");
                }
                if c.written > 0 {
                    println!("wrote {rel}: {} updated", c.written);
                }
            }
            Ok(if refused { 2 } else { 0 })
        }
        Command::Check { from } => {
            let merged = merge(&from)?;
            if merged.tests.is_empty() {
                eprintln!(
                    "memcheck: no test results in {}: was the run measured (pytest --memcheck --memcheck-json ...)?",
                    from.iter()
                        .map(|p| terminal(&p.display().to_string()))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return Ok(1);
            }
            let failed: Vec<_> = merged.tests.iter().filter(|t| t.failed).collect();
            // Node ids and messages come from the results files: shown, never acted on.
            for t in &failed {
                println!(
                    "FAILED {}\n{}\n",
                    terminal(&t.nodeid),
                    terminal_text(&t.message)
                );
            }
            if let Some(table) = crate::report::summary_table(
                &merged.tests,
                &merged.stale,
                false,
                MeterKind::named_counts_allocations(&merged.environment.meter),
            ) {
                println!("{table}");
            }
            println!(
                "{}",
                crate::report::totals_line(&merged.tests, merged.stale.len())
            );
            if failed.iter().any(|t| t.outcome == Outcome::Over) {
                // The messages' hint reruns pytest; from results files, this accepts them,
                // into the directory the run read (which the update checks).
                let mut words: Vec<String> = from
                    .iter()
                    .map(|p| shell_word(&p.display().to_string()))
                    .collect();
                let project = config::load(&root, &BTreeMap::new())?;
                if merged.gating.baseline_dir != project.baseline_dir {
                    words.push(format!(
                        "--baseline-dir {}",
                        shell_word(&merged.gating.baseline_dir)
                    ));
                }
                println!(
                    "if the growth is intended, accept these values: memcheck update --from {}",
                    terminal(&words.join(" "))
                );
            }
            Ok(if failed.is_empty() { 0 } else { 1 })
        }
    }
}

/// Merge shards: one environment, each test once.
fn merge(paths: &[PathBuf]) -> Result<Results> {
    let mut merged: Option<Results> = None;
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in paths {
        let shard = Results::read(path)?;
        for t in &shard.tests {
            if let Some(other) = seen.insert(t.nodeid.clone(), path.clone()) {
                return Err(Error::usage(
                    path.display().to_string(),
                    format!(
                        "{} was also measured in {}: shards must not overlap",
                        t.nodeid,
                        other.display()
                    ),
                ));
            }
        }
        match &mut merged {
            None => merged = Some(shard),
            Some(m) => {
                if m.environment != shard.environment {
                    return Err(Error::usage(
                        path.display().to_string(),
                        format!(
                            "measured on {}, the other shards on {}",
                            shard.environment, m.environment
                        ),
                    ));
                }
                m.complete &= shard.complete;
                m.tests.extend(shard.tests);
                m.stale.extend(shard.stale);
            }
        }
    }
    let mut m = merged.ok_or_else(|| Error::usage("--from", "no results file given"))?;
    m.tests.sort_by(|a, b| a.nodeid.cmp(&b.nodeid));
    m.stale.sort();
    m.stale.dedup();
    Ok(m)
}

/// Baseline files under `dir` (relative to root): at a revision, or in the work tree.
fn read_all(root: &Path, dir: &Path, rev: Option<&str>) -> Result<BTreeMap<String, BaselineFile>> {
    let mut out = BTreeMap::new();
    match rev {
        Some(rev) => {
            let repo = Repo::discover(root)?;
            let in_repo = Path::new(&repo.relative(root)?).join(dir);
            let in_repo = slashed(&in_repo);
            for (name, text) in repo.files_at(rev, &in_repo)? {
                let file =
                    BaselineFile::parse(&text, Path::new(&format!("{rev}:{in_repo}/{name}")))?;
                out.insert(module_of(&name), file);
            }
        }
        None => {
            for (name, path) in files_in(&root.join(dir)) {
                if let Some(file) = BaselineFile::read(&path)? {
                    out.insert(module_of(&name), file);
                }
            }
        }
    }
    Ok(out)
}

/// A baseline value as the gate reads it: the value, or `low–high` for an unstable test's spread.
fn spread_cell(low: u64, high: Option<u64>) -> String {
    match high {
        Some(high) => format!("{}–{}", format_size(low), format_size(high)),
        None => format_size(low),
    }
}

/// Whether the baseline holds the metric (native figures only when native memory was counted).
fn counted(metric: Metric, e: &Entry) -> bool {
    match metric {
        Metric::NativePeak => e.native_peak.is_some(),
        Metric::NativeRetained => e.native_retained.is_some(),
        _ => true,
    }
}

/// The value a metric's limit is computed from: the highest of a spread, else the value.
fn gated(metric: Metric, e: &Entry) -> u64 {
    metric.max_of(e).unwrap_or(metric.of(e))
}

fn show(files: &BTreeMap<String, BaselineFile>) -> String {
    let native = files
        .values()
        .flat_map(|f| f.entries.values())
        .any(|e| e.native_peak.is_some());
    let mut header = vec!["test", "peak", "retained"];
    if native {
        header.extend(["native peak", "native retained"]);
    }
    header.extend(["allocations", "cycles", "environment"]);
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(header);
    let mut n = 0;
    for (module, file) in files {
        for (key, e) in &file.entries {
            n += 1;
            let mut row = vec![
                terminal(&format!("{module}::{key}")),
                spread_cell(e.peak, e.peak_max),
                spread_cell(e.retained, e.retained_max),
            ];
            if native {
                let counted = |v: Option<u64>, high: Option<u64>| {
                    v.map(|v| spread_cell(v, high)).unwrap_or_default()
                };
                row.extend([
                    counted(e.native_peak, e.native_peak_max),
                    counted(e.native_retained, e.native_retained_max),
                ]);
            }
            row.extend([
                // 0 from a meter that does not count calls is no figure (tracemalloc, rss)
                if MeterKind::named_counts_allocations(&file.env.meter) {
                    e.allocations.to_string()
                } else {
                    "–".to_string()
                },
                e.cycles.to_string(),
                terminal(&file.env.to_string()),
            ]);
            table.add_row(row);
        }
    }
    fit(&mut table);
    format!(
        "{table}\n{} in {}\n",
        plural(n, "baseline"),
        plural(files.len(), "file")
    )
}

/// A change cell: before → after, each side a value or an unstable test's `low–high` spread;
/// the change is that of the gated (highest) values.
fn change(m: &MetricChange) -> String {
    let side = |gated: u64, low: Option<u64>| match low {
        Some(low) => spread_cell(low, Some(gated)),
        None => format_size(gated),
    };
    match (m.old, m.new) {
        (Some(a), Some(b)) if a == b && m.old_low == m.new_low => side(b, m.new_low),
        (Some(a), Some(b)) if a == b => format!("{} → {}", side(a, m.old_low), side(b, m.new_low)),
        (Some(a), Some(b)) => format!(
            "{} → {} ({})",
            side(a, m.old_low),
            side(b, m.new_low),
            format_change(b, a)
        ),
        (None, Some(b)) => format!("new: {}", side(b, m.new_low)),
        (Some(a), None) => format!("removed (was {})", side(a, m.old_low)),
        (None, None) => String::new(),
    }
}

/// How a test's baseline changed between two revisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    /// An accepted value grew: its limit rose. What a reviewer must look at first.
    Raised,
    /// A baseline that did not exist: the test is gated from now on.
    New,
    /// Values that fell (or allocations/cycles that changed with peak and retained kept).
    Lowered,
    /// A baseline that is gone: the test, if it still exists, is no longer gated against one.
    Removed,
}

/// The metrics whose growth raises a limit (cycles are gated only by exact equality, by choice).
const RAISABLE: [Metric; 4] = [
    Metric::Peak,
    Metric::Retained,
    Metric::NativePeak,
    Metric::NativeRetained,
];

impl Kind {
    fn of(old: Option<&Entry>, new: Option<&Entry>) -> Option<Kind> {
        match (old, new) {
            (Some(a), Some(b)) if a == b => None,
            (Some(a), Some(b))
                if RAISABLE
                    .iter()
                    .any(|m| counted(*m, a) && gated(*m, b) > gated(*m, a)) =>
            {
                Some(Kind::Raised)
            }
            // Native figures recorded for the first time (`--memcheck-native` switched on): gated
            // from now on, like a new baseline, not a raise of one.
            (Some(a), Some(b)) if a.native_peak.is_none() && b.native_peak.is_some() => {
                Some(Kind::New)
            }
            (Some(_), Some(_)) => Some(Kind::Lowered),
            (None, Some(_)) => Some(Kind::New),
            (Some(_), None) => Some(Kind::Removed),
            (None, None) => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Raised => "raised",
            Kind::New => "new",
            Kind::Lowered => "lowered",
            Kind::Removed => "removed",
        }
    }
}

/// One metric of a change in the JSON of `memcheck diff --format json`.
#[derive(serde::Serialize)]
struct MetricChange {
    /// The gated values: an unstable test's highest.
    old: Option<u64>,
    new: Option<u64>,
    /// The lowest value of an unstable test's spread, absent for a stable one.
    #[serde(skip_serializing_if = "Option::is_none")]
    old_low: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_low: Option<u64>,
    old_limit: Option<u64>,
    new_limit: Option<u64>,
}

#[derive(serde::Serialize)]
struct Change {
    test: String,
    kind: Kind,
    peak: MetricChange,
    retained: MetricChange,
    /// Present when either side counted native memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    native_peak: Option<MetricChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    native_retained: Option<MetricChange>,
}

/// A gate setting that differs between the two sides. One that loosens the gate (a higher
/// tolerance or floor, strict or cycle gating switched off) raises every limit at once.
#[derive(serde::Serialize)]
struct SettingChange {
    setting: &'static str,
    old: String,
    new: String,
    raised: bool,
}

/// A baseline file recorded in another environment than before (another Python, platform,
/// meter or interpreter mode): the gate of the old environment no longer judges its tests.
#[derive(serde::Serialize)]
struct EnvironmentChange {
    module: String,
    old: String,
    new: String,
}

/// The memory markers of a test module that differ between two revisions: lines holding
/// `mark.memcheck`, `mark.limit_memory` or `mark.limit_leaks`, compared as text. A marker can
/// loosen the gate as surely as a raised baseline (an absolute limit above it, `skip=True`,
/// `gate_retained=False`, a marker removed), and a text comparison cannot tell looser from
/// tighter: every change counts as a raise, for a reviewer to look at.
#[derive(serde::Serialize)]
struct MarkerChange {
    module: String,
    removed: Vec<String>,
    added: Vec<String>,
}

const MARKERS: [&str; 3] = ["mark.memcheck", "mark.limit_memory", "mark.limit_leaks"];

fn marker_lines(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && MARKERS.iter().any(|m| l.contains(m)))
        .map(str::to_string)
        .collect()
}

fn marker_change(module: &str, old: Option<String>, new: Option<String>) -> Option<MarkerChange> {
    let (old, new) = (marker_lines(old.as_deref()), marker_lines(new.as_deref()));
    // Multisets: a line kept but moved is no change; one more copy of it is.
    let minus = |a: &[String], b: &[String]| {
        let mut rest = b.to_vec();
        a.iter()
            .filter(|l| match rest.iter().position(|r| r == *l) {
                Some(i) => {
                    rest.remove(i);
                    false
                }
                None => true,
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    let (removed, added) = (minus(&old, &new), minus(&new, &old));
    (!removed.is_empty() || !added.is_empty()).then(|| MarkerChange {
        module: module.to_string(),
        removed,
        added,
    })
}

fn environment_changes(
    before: &BTreeMap<String, BaselineFile>,
    after: &BTreeMap<String, BaselineFile>,
) -> Vec<EnvironmentChange> {
    before
        .iter()
        .filter_map(|(module, old)| {
            let new = after.get(module)?;
            (old.env != new.env).then(|| EnvironmentChange {
                module: module.clone(),
                old: old.env.to_string(),
                new: new.env.to_string(),
            })
        })
        .collect()
}

fn setting_changes(old: &Settings, new: &Settings) -> Vec<SettingChange> {
    let mut out = Vec::new();
    let mut note = |setting, old: String, new: String, raised| {
        if old != new {
            out.push(SettingChange {
                setting,
                old,
                new,
                raised,
            });
        }
    };
    let (a, b) = (old.tolerance, new.tolerance);
    note(
        "tolerance",
        a.relative.to_string(),
        b.relative.to_string(),
        b.relative.ppm > a.relative.ppm,
    );
    note(
        "floor",
        format_size(a.floor),
        format_size(b.floor),
        b.floor > a.floor,
    );
    note(
        "strict",
        old.strict.to_string(),
        new.strict.to_string(),
        old.strict && !new.strict,
    );
    note(
        "gate-cycles",
        old.gate_cycles.to_string(),
        new.gate_cycles.to_string(),
        old.gate_cycles && !new.gate_cycles,
    );
    out
}

/// Every baseline that differs between `before` and `after`, raised first; limits under each
/// side's tolerance.
fn changes(
    before: &BTreeMap<String, BaselineFile>,
    after: &BTreeMap<String, BaselineFile>,
    old_tolerance: &crate::gate::Tolerance,
    tolerance: &crate::gate::Tolerance,
) -> Vec<Change> {
    let mut ids: BTreeMap<String, (Option<Entry>, Option<Entry>)> = BTreeMap::new();
    for (side, files) in [(0, before), (1, after)] {
        for (module, file) in files {
            for (key, e) in &file.entries {
                let slot = ids.entry(format!("{module}::{key}")).or_default();
                if side == 0 {
                    slot.0 = Some(*e);
                } else {
                    slot.1 = Some(*e);
                }
            }
        }
    }
    let metric = |old: Option<u64>, new: Option<u64>| MetricChange {
        old,
        new,
        old_low: None,
        new_low: None,
        old_limit: old.map(|b| old_tolerance.limit(b)),
        new_limit: new.map(|b| tolerance.limit(b)),
    };
    // The gated values, and the low end of a spread.
    let spread = |m: Metric, old: Option<Entry>, new: Option<Entry>| {
        let low = |e: Entry| m.max_of(&e).map(|_| m.of(&e));
        MetricChange {
            old_low: old.and_then(low),
            new_low: new.and_then(low),
            ..metric(old.map(|e| gated(m, &e)), new.map(|e| gated(m, &e)))
        }
    };
    // Native figures, where either side counted them: gated values and spreads as above.
    let native = |m: Metric, old: Option<Entry>, new: Option<Entry>| {
        let side = |e: Option<Entry>| e.filter(|e| counted(m, e));
        let (old, new) = (side(old), side(new));
        (old.is_some() || new.is_some()).then(|| spread(m, old, new))
    };
    let mut out: Vec<Change> = ids
        .into_iter()
        .filter_map(|(test, (old, new))| {
            Some(Change {
                kind: Kind::of(old.as_ref(), new.as_ref())?,
                // The gated values: an unstable test's highest, so a widened spread is a raise.
                peak: spread(Metric::Peak, old, new),
                retained: spread(Metric::Retained, old, new),
                native_peak: native(Metric::NativePeak, old, new),
                native_retained: native(Metric::NativeRetained, old, new),
                test,
            })
        })
        .collect();
    out.sort_by(|a, b| (a.kind, &a.test).cmp(&(b.kind, &b.test)));
    out
}

/// A limit cell: the limit after the change, and before it when it moved.
fn limit_cell(m: &MetricChange) -> String {
    match (m.old_limit, m.new_limit) {
        (Some(a), Some(b)) if a != b => format!("{} → {}", format_size(a), format_size(b)),
        (_, Some(b)) => format_size(b),
        (Some(a), None) => format!("(was {})", format_size(a)),
        (None, None) => String::new(),
    }
}

fn diff(
    before: &BTreeMap<String, BaselineFile>,
    after: &BTreeMap<String, BaselineFile>,
    format: Format,
    old_settings: &Settings,
    settings: &Settings,
    markers: &[MarkerChange],
) -> String {
    let changes = changes(before, after, &old_settings.tolerance, &settings.tolerance);
    let settings_changed = setting_changes(old_settings, settings);
    let environments = environment_changes(before, after);
    // A loosened setting raises every limit; a file moved to another environment un-gates its
    // tests where the old one runs; changed markers may loosen the gate: each counts as a raise.
    let settings_raised =
        settings_changed.iter().filter(|s| s.raised).count() + environments.len() + markers.len();
    if let Format::Json = format {
        let mut counts: BTreeMap<&str, usize> =
            [Kind::Raised, Kind::New, Kind::Lowered, Kind::Removed]
                .into_iter()
                .map(|k| (k.name(), 0))
                .collect();
        for c in &changes {
            *counts.entry(c.kind.name()).or_default() += 1;
        }
        counts.insert("settings_raised", settings_raised);
        let doc = serde_json::json!({
            "counts": counts,
            "changes": changes,
            "settings": settings_changed,
            "environments": environments,
            "markers": markers,
        });
        return serde_json::to_string_pretty(&doc).expect("diff serializes") + "\n";
    }
    let cell = |s: &str| match format {
        Format::Markdown => markdown(s),
        _ => terminal(s),
    };
    // Settings first: a raised tolerance or floor is a raise of every limit.
    let mut head = String::new();
    for s in &settings_changed {
        let what = if s.raised {
            "raised: every limit rises with it"
        } else {
            "tightened"
        };
        head.push_str(&format!(
            "setting {}: {} → {} ({what})\n",
            s.setting,
            cell(&s.old),
            cell(&s.new)
        ));
    }
    for e in &environments {
        head.push_str(&format!(
            "environment of {}: {} → {} (raised: the gate in the old environment no longer judges its tests)\n",
            cell(&e.module),
            cell(&e.old),
            cell(&e.new)
        ));
    }
    for m in markers {
        let lines: Vec<String> = m
            .removed
            .iter()
            .map(|l| format!("− {}", cell(l)))
            .chain(m.added.iter().map(|l| format!("+ {}", cell(l))))
            .collect();
        head.push_str(&format!(
            "markers of {}: {} (raised: a marker can loosen the gate; review it)\n",
            cell(&m.module),
            lines.join(", ")
        ));
    }
    if !head.is_empty() && matches!(format, Format::Markdown) {
        head.push('\n');
    }
    if changes.is_empty() {
        return format!("{head}no baseline changed\n");
    }
    let native = changes.iter().any(|c| c.native_peak.is_some());
    let mut table = Table::new();
    table
        .load_preset(match format {
            Format::Markdown => ASCII_MARKDOWN,
            _ => UTF8_FULL_CONDENSED,
        })
        .set_header({
            let mut header = vec!["test", "change", "peak", "retained"];
            if native {
                header.extend(["native peak", "native retained"]);
            }
            header.extend(["peak limit", "retained limit"]);
            header
        });
    for c in &changes {
        let mut row = vec![
            cell(&c.test),
            c.kind.name().to_string(),
            change(&c.peak),
            change(&c.retained),
        ];
        if native {
            for m in [&c.native_peak, &c.native_retained] {
                row.push(m.as_ref().map(change).unwrap_or_default());
            }
        }
        row.extend([limit_cell(&c.peak), limit_cell(&c.retained)]);
        table.add_row(row);
    }
    if let Format::Table = format {
        fit(&mut table);
    }
    let raised = changes.iter().filter(|c| c.kind == Kind::Raised).count();
    // In Markdown a line right below a table would be read as one more row.
    let gap = if let Format::Markdown = format {
        "\n"
    } else {
        ""
    };
    format!(
        "{head}{table}\n{gap}{} changed, {raised} raised\n",
        plural(changes.len(), "baseline")
    )
}

/// `1 file`, `2 files`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A one-line chart of `values`, oldest first.
fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (lo, hi) = (
        values.iter().copied().min().unwrap_or(0),
        values.iter().copied().max().unwrap_or(0),
    );
    values
        .iter()
        .map(|v| {
            if hi == lo {
                BARS[3]
            } else {
                BARS[((v - lo) * 7 / (hi - lo)) as usize]
            }
        })
        .collect()
}

#[allow(clippy::type_complexity)]
fn log(
    history: &[(String, String, i64, Option<String>)],
    key: &str,
    nodeid: &str,
) -> Option<String> {
    // Oldest first; keep the commits where this test's values changed.
    let mut points: Vec<(&str, &str, i64, Option<Entry>)> = Vec::new();
    for (id, summary, time, text) in history.iter().rev() {
        let entry = text
            .as_deref()
            .and_then(|t| BaselineFile::parse(t, Path::new("history")).ok())
            .and_then(|f| f.entries.get(key).copied());
        let shown = |e: Option<Entry>| e.map(|e| (e.peak, e.peak_max, e.retained, e.retained_max));
        let changed = match points.last() {
            Some(last) => shown(last.3) != shown(entry),
            None => entry.is_some(),
        };
        if changed {
            points.push((id, summary, *time, entry));
        }
    }
    if points.iter().all(|p| p.3.is_none()) {
        return None;
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["commit", "date", "peak", "retained", "summary"]);
    for (id, summary, time, entry) in &points {
        let date = format_date(*time);
        let (peak, retained) = match entry {
            Some(e) => (
                spread_cell(e.peak, e.peak_max),
                spread_cell(e.retained, e.retained_max),
            ),
            None => ("removed".into(), String::new()),
        };
        table.add_row([id.to_string(), date, peak, retained, terminal(summary)]);
    }
    fit(&mut table);
    let peaks: Vec<u64> = points.iter().filter_map(|p| p.3.map(|e| e.peak)).collect();
    Some(format!(
        "{}\n{table}\npeak over time: {}\n",
        terminal(nodeid),
        sparkline(&peaks)
    ))
}

/// `YYYY-MM-DD` of a Unix time (UTC), without a date crate.
fn format_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_charts() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(1_764_028_800), "2025-11-25");
        assert_eq!(sparkline(&[1, 5, 9]), "▁▄█");
        assert_eq!(sparkline(&[3, 3]), "▄▄");
    }

    #[test]
    fn the_root_is_found_upward_as_pytest_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let deep = root.join("tests/unit/deep");
        std::fs::create_dir_all(&deep).unwrap();
        // No configuration anywhere: the start itself.
        assert_eq!(discover_root(&deep), deep);
        // A bare pyproject.toml above: that directory.
        std::fs::write(root.join("pyproject.toml"), "[project]\nname = 'x'\n").unwrap();
        assert_eq!(discover_root(&deep), root);
        // A pytest configuration nearer wins over a bare pyproject.toml further up.
        std::fs::write(root.join("tests/pytest.ini"), "[pytest]\n").unwrap();
        assert_eq!(discover_root(&deep), root.join("tests"));
        std::fs::remove_file(root.join("tests/pytest.ini")).unwrap();
        // A pyproject.toml without a pytest or memcheck section is not a configuration.
        std::fs::write(root.join("tests/pyproject.toml"), "[project]\n").unwrap();
        std::fs::write(root.join("pyproject.toml"), "[tool.memcheck]\n").unwrap();
        assert_eq!(discover_root(&deep), root);
    }

    #[test]
    fn tables_fit_the_width_without_wrapping_node_ids() {
        let mut table = Table::new();
        table
            .load_preset(UTF8_FULL_CONDENSED)
            .set_header(["test", "summary"]);
        let id = "tests/test_module.py::test_with_a_rather_long_name[param]";
        table.add_row([id, &"a long commit summary ".repeat(6)]);
        fit_to(&mut table, Some(80));
        let text = table.to_string();
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
        assert!(text.contains(id), "{text}");
    }

    fn files(entries: &[(&str, u64, u64)]) -> BTreeMap<String, BaselineFile> {
        let mut text = String::from(
            "[memcheck]\nformat = 1\nimplementation = \"cpython\"\nmeter = \"python\"\nplatform = \"linux-x86_64\"\npython = \"3.11\"\n",
        );
        for (key, peak, retained) in entries {
            text.push_str(&format!(
                "\n[{key:?}]\npeak = {peak}\nretained = {retained}\n"
            ));
        }
        let file = BaselineFile::parse(&text, Path::new("t.toml")).unwrap();
        BTreeMap::from([("tests/test_a.py".to_string(), file)])
    }

    #[test]
    fn changes_are_classified_raised_first_with_their_limits() {
        let tolerance = crate::gate::DEFAULT_TOLERANCE;
        let before = files(&[
            ("up", 1 << 20, 0),
            ("down", 1 << 20, 0),
            ("same", 5, 5),
            ("gone", 7, 0),
        ]);
        let after = files(&[
            ("up", 2 << 20, 0),
            ("down", 1 << 19, 0),
            ("same", 5, 5),
            ("born", 9, 0),
        ]);
        let found = changes(&before, &after, &tolerance, &tolerance);
        let kinds: Vec<_> = found.iter().map(|c| (c.test.as_str(), c.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("tests/test_a.py::up", Kind::Raised),
                ("tests/test_a.py::born", Kind::New),
                ("tests/test_a.py::down", Kind::Lowered),
                ("tests/test_a.py::gone", Kind::Removed),
            ]
        );
        let up = &found[0].peak;
        assert_eq!(up.old_limit, Some(tolerance.limit(1 << 20)));
        assert_eq!(up.new_limit, Some(tolerance.limit(2 << 20)));
        assert_eq!(limit_cell(up), "1.16 MiB → 2.26 MiB");
        // A retained value that grew alone is a raise too; equal entries are no change.
        let before = files(&[("t", 100, 0)]);
        let after = files(&[("t", 90, 10)]);
        assert_eq!(
            changes(&before, &after, &tolerance, &tolerance)[0].kind,
            Kind::Raised
        );
        assert!(changes(&before, &before, &tolerance, &tolerance).is_empty());
        let md = diff(
            &before,
            &after,
            Format::Markdown,
            &Settings::default(),
            &Settings::default(),
            &[],
        );
        assert!(md.starts_with("| test"), "{md}");
        assert!(md.contains("| raised |"), "{md}");
        assert!(md.ends_with("1 baseline changed, 1 raised\n"), "{md}");
        let json: serde_json::Value = serde_json::from_str(&diff(
            &before,
            &after,
            Format::Json,
            &Settings::default(),
            &Settings::default(),
            &[],
        ))
        .unwrap();
        assert_eq!(json["counts"]["raised"], 1);
        assert_eq!(json["changes"][0]["retained"]["new"], 10);
    }

    /// A file whose entries are written as given (`key = value` lines after each table).
    fn raw(entries: &[(&str, &str)]) -> BTreeMap<String, BaselineFile> {
        let mut text = String::from(
            "[memcheck]\nformat = 1\nimplementation = \"cpython\"\nmeter = \"python\"\nplatform = \"linux-x86_64\"\npython = \"3.11\"\n",
        );
        for (key, body) in entries {
            text.push_str(&format!("\n[{key:?}]\n{body}\n"));
        }
        let file = BaselineFile::parse(&text, Path::new("t.toml")).unwrap();
        BTreeMap::from([("tests/test_a.py".to_string(), file)])
    }

    #[test]
    fn spreads_and_native_figures_are_shown_and_their_growth_is_a_raise() {
        let tolerance = crate::gate::DEFAULT_TOLERANCE;
        let before = raw(&[
            ("wobbly", "peak = 1000000\nretained = 0\npeak_max = 3000000"),
            (
                "native",
                "peak = 10\nretained = 0\nnative_peak = 1000\nnative_retained = 0",
            ),
        ]);
        // the spread widened (same low value) and the native figure grew: both raise a limit
        let after = raw(&[
            ("wobbly", "peak = 1000000\nretained = 0\npeak_max = 4000000"),
            (
                "native",
                "peak = 10\nretained = 0\nnative_peak = 900000\nnative_retained = 0",
            ),
        ]);
        let found = changes(&before, &after, &tolerance, &tolerance);
        assert!(
            found.iter().all(|c| c.kind == Kind::Raised),
            "{:?}",
            found.iter().map(|c| c.kind).collect::<Vec<_>>()
        );
        let wobbly = found.iter().find(|c| c.test.ends_with("wobbly")).unwrap();
        assert_eq!(wobbly.peak.new_limit, Some(tolerance.limit(4_000_000)));
        assert!(wobbly.native_peak.is_none());
        let table = diff(
            &before,
            &after,
            Format::Table,
            &Settings::default(),
            &Settings::default(),
            &[],
        );
        assert!(table.contains("native peak"), "{table}");
        // negative control: a narrower spread is no raise
        let narrower = raw(&[
            ("wobbly", "peak = 1000000\nretained = 0\npeak_max = 2000000"),
            (
                "native",
                "peak = 10\nretained = 0\nnative_peak = 1000\nnative_retained = 0",
            ),
        ]);
        let found = changes(&before, &narrower, &tolerance, &tolerance);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, Kind::Lowered);
        let shown = show(&before);
        assert!(shown.contains("977 KiB–2.86 MiB"), "{shown}");
        assert!(
            shown.contains("native peak") && shown.contains("1000 B"),
            "{shown}"
        );
        assert!(!show(&files(&[("t", 1, 1)])).contains("native"));
        // native figures recorded for the first time are new, not a raise; python figures that
        // grew beside them still are
        let python_only = raw(&[("native", "peak = 10\nretained = 0")]);
        let found = changes(&python_only, &before, &tolerance, &tolerance);
        assert_eq!(found[0].kind, Kind::New);
        let grown = raw(&[(
            "native",
            "peak = 900000\nretained = 0\nnative_peak = 1000\nnative_retained = 0",
        )]);
        assert_eq!(
            changes(&python_only, &grown, &tolerance, &tolerance)[0].kind,
            Kind::Raised
        );
    }

    #[test]
    fn log_shows_a_spread_and_its_changes() {
        let file = |body: &str| {
            Some(format!("[memcheck]\nformat = 1\npython = \"3.11\"\nimplementation = \"cpython\"\nplatform = \"linux-x86_64\"\nmeter = \"python\"\n\n[test_x]\n{body}\n"))
        };
        // newest first, as git gives it
        let history = vec![
            (
                "c3".into(),
                "widen".into(),
                86_400 * 2,
                file("peak = 1024\nretained = 0\npeak_max = 4096"),
            ),
            (
                "c2".into(),
                "spread".into(),
                86_400,
                file("peak = 1024\nretained = 0\npeak_max = 3072"),
            ),
            (
                "c1".into(),
                "first".into(),
                0,
                file("peak = 1024\nretained = 0"),
            ),
        ];
        let text = log(&history, "test_x", "t.py::test_x").unwrap();
        assert!(
            text.contains("1.00 KiB–3.00 KiB") && text.contains("1.00 KiB–4.00 KiB"),
            "{text}"
        );
        // every commit that moved the spread is listed, though the lowest value never moved
        assert!(
            text.contains("c1") && text.contains("c2") && text.contains("c3"),
            "{text}"
        );
    }

    #[test]
    fn a_loosened_setting_is_a_raise_a_tightened_one_is_not() {
        let base = Settings::default();
        let mut loose = Settings::default();
        loose.tolerance.relative = crate::sizes::parse_percent("50%", "t").unwrap();
        loose.tolerance.floor = 1 << 20;
        let found = setting_changes(&base, &loose);
        let shown: Vec<_> = found
            .iter()
            .map(|s| (s.setting, s.old.as_str(), s.new.as_str(), s.raised))
            .collect();
        assert_eq!(
            shown,
            [
                ("tolerance", "10%", "50%", true),
                ("floor", "64.0 KiB", "1.00 MiB", true)
            ]
        );
        assert!(setting_changes(&loose, &base).iter().all(|s| !s.raised));
        let strict = Settings {
            strict: true,
            ..Settings::default()
        };
        assert!(setting_changes(&strict, &base)[0].raised);
        assert!(!setting_changes(&base, &strict)[0].raised);
        // markers: changed lines, as multisets of trimmed lines; comments and moves are none
        let old = "import pytest\n\n@pytest.mark.memcheck(peak=\"1 MiB\")\ndef test_a(): pass\n\n@pytest.mark.limit_leaks(\"1 KB\")\ndef test_b(): pass\n";
        let moved = "import pytest\n\n@pytest.mark.limit_leaks(\"1 KB\")\ndef test_b(): pass\n\n  @pytest.mark.memcheck(peak=\"1 MiB\")\ndef test_a(): pass\n# @pytest.mark.memcheck(skip=True)\n";
        assert!(marker_change("t.py", Some(old.into()), Some(moved.into())).is_none());
        let loosened = old.replace("1 MiB", "1 GiB");
        let m = marker_change("t.py", Some(old.into()), Some(loosened)).unwrap();
        assert_eq!(m.removed, ["@pytest.mark.memcheck(peak=\"1 MiB\")"]);
        assert_eq!(m.added, ["@pytest.mark.memcheck(peak=\"1 GiB\")"]);
        let gone = marker_change("t.py", Some(old.into()), None).unwrap();
        assert_eq!((gone.removed.len(), gone.added.len()), (2, 0));
        let marked = diff(
            &BTreeMap::new(),
            &BTreeMap::new(),
            Format::Table,
            &base,
            &base,
            &[m],
        );
        assert!(
            marked.starts_with("markers of t.py: − @pytest.mark.memcheck(peak=\"1 MiB\"), + @pytest.mark.memcheck(peak=\"1 GiB\") (raised: a marker can loosen the gate; review it)\n"),
            "{marked}"
        );
        assert!(setting_changes(&base, &base).is_empty());
        // the diff says so even with no baseline changed, and counts it
        let files = BTreeMap::new();
        let text = diff(&files, &files, Format::Table, &base, &loose, &[]);
        assert!(
            text.starts_with("setting tolerance: 10% → 50% (raised: every limit rises with it)\n"),
            "{text}"
        );
        assert!(text.ends_with("no baseline changed\n"), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(&diff(&files, &files, Format::Json, &base, &loose, &[])).unwrap();
        assert_eq!(json["counts"]["settings_raised"], 2);
        // a file re-recorded in another environment is a raise too; the same file is not
        let before = raw(&[("t", "peak = 10\nretained = 0")]);
        let mut after = before.clone();
        after.get_mut("tests/test_a.py").unwrap().env.meter = "tracemalloc".into();
        let text = diff(&before, &after, Format::Table, &base, &base, &[]);
        assert!(
            text.contains("environment of tests/test_a.py: cpython 3.11 on linux-x86_64, meter python → cpython 3.11 on linux-x86_64, meter tracemalloc (raised"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&diff(&before, &after, Format::Json, &base, &base, &[])).unwrap();
        assert_eq!(json["counts"]["settings_raised"], 1);
        let json: serde_json::Value =
            serde_json::from_str(&diff(&before, &before, Format::Json, &base, &base, &[])).unwrap();
        assert_eq!(json["counts"]["settings_raised"], 0);
    }

    #[test]
    fn change_cells() {
        let m = |old: Option<u64>, new: Option<u64>, old_low: Option<u64>, new_low: Option<u64>| {
            change(&MetricChange {
                old,
                new,
                old_low,
                new_low,
                old_limit: None,
                new_limit: None,
            })
        };
        assert_eq!(
            m(Some(1024), Some(2048), None, None),
            "1.00 KiB → 2.00 KiB (+1.00 KiB +100.0%)"
        );
        assert_eq!(m(None, Some(10), None, None), "new: 10 B");
        assert_eq!(m(Some(10), None, None, None), "removed (was 10 B)");
        // an unstable test's spread shows both ends; the change is that of the highest
        assert_eq!(
            m(Some(3072), Some(4096), Some(1024), Some(1024)),
            "1.00 KiB–3.00 KiB → 1.00 KiB–4.00 KiB (+1.00 KiB +33.3%)"
        );
        // a spread that became stable at its highest value still shows as a change
        assert_eq!(
            m(Some(3072), Some(3072), Some(1024), None),
            "1.00 KiB–3.00 KiB → 3.00 KiB"
        );
    }
}
