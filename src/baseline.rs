//! Baseline files: one TOML file per test module, committed in git.
//!
//! ```toml
//! [memcheck]
//! format = 1
//! implementation = "cpython"
//! meter = "python"
//! platform = "linux-x86_64"
//! python = "3.11"
//!
//! ["TestIO::test_read[utf-8]"]
//! allocations = 12
//! cycles = 0
//! peak = 4096
//! retained = 0
//! ```
//!
//! A test whose measurements differed by more than its tolerance when it was recorded (README,
//! "Unstable tests") also has `peak_max` and/or `retained_max`: the highest value observed, with
//! `peak`/`retained` the lowest. A stable test has neither key, so its table is what it always was.
//!
//! A run in an interpreter mode that can change the figures adds `mode` to the header, e.g.
//! `mode = "dev"` under `python -X dev` (see [`Environment::mode`]); a normal run writes no `mode`
//! key, so files recorded before the key existed stay byte-identical.
//!
//! Output is deterministic (keys sorted, no timestamps), so an unchanged value leaves the file
//! byte-identical and a diff shows exactly what moved. Files are written through the project's
//! write boundary (`boundary.rs`): atomically, and never outside it.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::fs;
use std::path::{Component, Path, PathBuf};

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::boundary::{slashed, Boundary};
use crate::error::{Error, Result};

/// The newest file format this engine reads and the one it writes.
pub const FORMAT: u32 = 1;
/// The name of the header table; no test can be keyed by it.
pub const HEADER: &str = "memcheck";

/// Where a baseline was measured: numbers only compare within the same environment.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub python: String,
    pub implementation: String,
    pub platform: String,
    pub meter: String,
    /// The interpreter modes that can change the figures, `+`-joined in a fixed order, empty for a
    /// normal run (and then absent from files): `debug-build`, `free-threaded`, `gil` (a
    /// free-threaded build running with the GIL), `dev` (`-X dev`), `pythonmalloc=NAME` (an
    /// allocator other than the build's default). The Python side computes it
    /// (`pytest_memcheck/environment.py`), for the plugin and the CLI alike.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} on {}, meter {}",
            self.implementation, self.python, self.platform, self.meter
        )?;
        if !self.mode.is_empty() {
            write!(f, ", mode {}", self.mode)?;
        }
        Ok(())
    }
}

/// The recorded values of one test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub peak: u64,
    pub retained: u64,
    #[serde(default)]
    pub allocations: u64,
    #[serde(default)]
    pub cycles: u64,
    /// The highest peak an update observed, when its measurements differed by more than the
    /// tolerance (an unstable test; `peak` is then the lowest). None for a stable test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_max: Option<u64>,
    /// As `peak_max`, for retained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_max: Option<u64>,
    /// Native memory (`--memcheck-native`): absent from entries recorded without it, so files
    /// of runs that do not count it stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_peak: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_retained: Option<u64>,
    /// As `peak_max`, for the native figures: a native figure can vary from run to run (an
    /// extension's worker threads whose buffers overlap or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_peak_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_retained_max: Option<u64>,
    /// Python and native memory live at the same moment, at most: recorded beside the native
    /// figures, informational like `allocations` (not gated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combined_peak: Option<u64>,
}

impl Entry {
    /// Whether an update recorded a spread for this test (README, "Unstable tests").
    pub fn unstable(&self) -> bool {
        self.peak_max.is_some()
            || self.retained_max.is_some()
            || self.native_peak_max.is_some()
            || self.native_retained_max.is_some()
    }

    /// What is wrong with a hand-edited spread: a highest value below the lowest.
    pub fn spread_error(&self) -> Option<String> {
        for (name, low, high) in [
            ("peak", self.peak, self.peak_max),
            ("retained", self.retained, self.retained_max),
            (
                "native_peak",
                self.native_peak.unwrap_or(0),
                self.native_peak_max,
            ),
            (
                "native_retained",
                self.native_retained.unwrap_or(0),
                self.native_retained_max,
            ),
        ] {
            if let Some(high) = high.filter(|h| *h < low) {
                return Some(format!(
                    "{name}_max = {high} is below {name} = {low}: {name} is the lowest value an update measured and {name}_max the highest; re-record the test with pytest --memcheck-update"
                ));
            }
        }
        None
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: u32,
    python: String,
    implementation: String,
    platform: String,
    meter: String,
    #[serde(default)]
    mode: String,
}

/// One module's baselines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaselineFile {
    pub env: Environment,
    pub entries: BTreeMap<String, Entry>,
}

/// What the top-level visitor found; the format check happens after, with the header's span.
struct RawFile {
    header: Option<Header>,
    entries: BTreeMap<String, Entry>,
    /// Where each test's table starts in the text, for errors found after parsing.
    spans: BTreeMap<String, std::ops::Range<usize>>,
}

impl<'de> Deserialize<'de> for RawFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct FileVisitor;
        impl<'de> Visitor<'de> for FileVisitor {
            type Value = RawFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a [memcheck] header table and one table per test")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RawFile, A::Error> {
                let mut raw = RawFile {
                    header: None,
                    entries: BTreeMap::new(),
                    spans: BTreeMap::new(),
                };
                while let Some(key) = map.next_key::<String>()? {
                    if key == HEADER {
                        raw.header = Some(map.next_value()?);
                    } else {
                        let entry: toml::Spanned<Entry> = map.next_value()?;
                        raw.spans.insert(key.clone(), entry.span());
                        raw.entries.insert(key, entry.into_inner());
                    }
                }
                Ok(raw)
            }
        }
        deserializer.deserialize_map(FileVisitor)
    }
}

impl BaselineFile {
    pub fn new(env: Environment) -> Self {
        BaselineFile {
            env,
            entries: BTreeMap::new(),
        }
    }

    /// Parse the text of `path`. Errors name the file, line and column.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw: RawFile = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let header = raw.header.ok_or_else(|| {
            Error::at_offset(path, text, 0, "missing the [memcheck] header table")
        })?;
        if header.format > FORMAT {
            let offset = text.find("format").unwrap_or(0);
            return Err(Error::at_offset(
                path,
                text,
                offset,
                format!(
                    "format {} was written by a newer pytest-memcheck; this one reads format {FORMAT}: upgrade pytest-memcheck",
                    header.format
                ),
            ));
        }
        for (key, entry) in &raw.entries {
            if let Some(why) = entry.spread_error() {
                // At the offending key when it can be found in the test's table.
                let span = raw.spans.get(key).cloned().unwrap_or(0..text.len());
                let name = if why.starts_with("peak") {
                    "peak_max"
                } else {
                    "retained_max"
                };
                // The span of a table is its header: its keys run to the next table.
                let start = span.start;
                let rest = text.get(start..).unwrap_or_default();
                let table = rest
                    .get(1..)
                    .and_then(|r| r.find("\n["))
                    .map_or(rest, |end| &rest[..end + 1]);
                let offset = table
                    .match_indices(name)
                    .map(|(i, _)| start + i)
                    .find(|&i| i == 0 || text.as_bytes()[i - 1] == b'\n')
                    .unwrap_or(start);
                return Err(Error::at_offset(
                    path,
                    text,
                    offset,
                    format!("test '{key}': {why}"),
                ));
            }
        }
        Ok(BaselineFile {
            env: Environment {
                python: header.python,
                implementation: header.implementation,
                platform: header.platform,
                meter: header.meter,
                mode: header.mode,
            },
            entries: raw.entries,
        })
    }

    /// Read `path`; `Ok(None)` when it does not exist.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, "read", e)),
        };
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            Error::at_offset(path, &text, valid, "the file is not valid UTF-8")
        })?;
        Self::parse(&text, path).map(Some)
    }

    /// The file's text: header first, then tests sorted by key, each key sorted inside.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let env = &self.env;
        let _ = writeln!(out, "[{HEADER}]");
        let _ = writeln!(out, "format = {FORMAT}");
        let _ = writeln!(out, "implementation = {}", quote(&env.implementation));
        let _ = writeln!(out, "meter = {}", quote(&env.meter));
        if !env.mode.is_empty() {
            let _ = writeln!(out, "mode = {}", quote(&env.mode));
        }
        let _ = writeln!(out, "platform = {}", quote(&env.platform));
        let _ = writeln!(out, "python = {}", quote(&env.python));
        for (key, e) in &self.entries {
            let _ = writeln!(out, "\n[{}]", toml_key(key));
            let _ = writeln!(out, "allocations = {}", e.allocations);
            if let Some(v) = e.combined_peak {
                let _ = writeln!(out, "combined_peak = {v}");
            }
            let _ = writeln!(out, "cycles = {}", e.cycles);
            if let Some(v) = e.native_peak {
                let _ = writeln!(out, "native_peak = {v}");
            }
            if let Some(v) = e.native_peak_max {
                let _ = writeln!(out, "native_peak_max = {v}");
            }
            if let Some(v) = e.native_retained {
                let _ = writeln!(out, "native_retained = {v}");
            }
            if let Some(v) = e.native_retained_max {
                let _ = writeln!(out, "native_retained_max = {v}");
            }
            let _ = writeln!(out, "peak = {}", e.peak);
            if let Some(max) = e.peak_max {
                let _ = writeln!(out, "peak_max = {max}");
            }
            let _ = writeln!(out, "retained = {}", e.retained);
            if let Some(max) = e.retained_max {
                let _ = writeln!(out, "retained_max = {max}");
            }
        }
        out
    }

    /// Write through `boundary`, atomically. Returns false, touching nothing, when the file
    /// already holds exactly this text.
    pub fn write(&self, boundary: &Boundary, path: &Path) -> Result<bool> {
        if let Some(bad) = self.entries.keys().find(|k| *k == HEADER) {
            return Err(Error::usage(
                path.display().to_string(),
                format!("a test keyed '{bad}' collides with the header table; rename the test"),
            ));
        }
        boundary.write_if_changed(path, self.render().as_bytes(), "baseline file")
    }
}

/// Turn a toml error into one that names file, line and column.
pub fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> Error {
    let offset = err.span().map_or(0, |s| s.start);
    // serde names Rust's types; a user wrote a TOML value.
    let message = err
        .message()
        .trim()
        .replace("expected u64", "expected a whole number (bytes or a count)")
        .replace("expected u32", "expected a whole number");
    Error::at_offset(path, text, offset, message)
}

/// A TOML basic string with every character that needs it escaped.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A table key: bare when TOML allows it, quoted otherwise.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        quote(key)
    }
}

/// The baseline files under `dir` in the work tree: (name relative to `dir` with `/`, path),
/// sorted; temporary files (names starting with `.`) are left out.
pub fn files_in(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "toml")
                && !e.file_name().to_string_lossy().starts_with('.')
            {
                let name = slashed(path.strip_prefix(dir).unwrap_or(&path));
                out.push((name, path));
            }
        }
    }
    out.sort();
    out
}

/// `tests/test_io.toml` (a name under the baseline directory) → `tests/test_io.py`.
pub fn module_of(name: &str) -> String {
    format!("{}.py", name.trim_end_matches(".toml"))
}

/// Split a pytest node id into its module path and the key after the first `::`.
pub fn split_nodeid(nodeid: &str) -> (&str, &str) {
    nodeid.split_once("::").unwrap_or((nodeid, ""))
}

/// `tests/test_io.py` → `<dir>/tests/test_io.toml`. Refuses paths that would leave `dir`.
pub fn module_file(dir: &Path, module: &str) -> Result<PathBuf> {
    let refuse = |why: &str| {
        Error::usage(
            format!("test module '{module}'"),
            format!(
                "{why}; its baselines would be written outside {}",
                dir.display()
            ),
        )
    };
    let rel = Path::new(module);
    let mut out = dir.to_path_buf();
    for part in rel.components() {
        match part {
            Component::Normal(p) => {
                if p.to_string_lossy().contains('\0') {
                    return Err(refuse("the path holds a NUL byte"));
                }
                out.push(p)
            }
            Component::CurDir => {}
            _ => return Err(refuse("the path is absolute or climbs out with '..'")),
        }
    }
    if out == dir {
        return Err(refuse("the path is empty"));
    }
    out.set_extension("toml");
    Ok(out)
}

/// The environment the unit tests of every module record in.
#[cfg(test)]
pub(crate) fn test_env() -> Environment {
    Environment {
        python: "3.11".into(),
        implementation: "cpython".into(),
        platform: "linux-x86_64".into(),
        meter: "python".into(),
        mode: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use super::test_env as env;

    fn sample() -> BaselineFile {
        let mut f = BaselineFile::new(env());
        let e = Entry {
            peak: 4096,
            retained: 0,
            allocations: 12,
            cycles: 0,
            ..Entry::default()
        };
        f.entries.insert("test_b".into(), e);
        f.entries
            .insert("TestIO::test_read[utf-8]".into(), Entry { peak: 1, ..e });
        f
    }

    #[test]
    fn renders_sorted_and_stable() {
        let text = sample().render();
        let expected = "[memcheck]\nformat = 1\nimplementation = \"cpython\"\nmeter = \"python\"\nplatform = \"linux-x86_64\"\npython = \"3.11\"\n\n[\"TestIO::test_read[utf-8]\"]\nallocations = 12\ncycles = 0\npeak = 1\nretained = 0\n\n[test_b]\nallocations = 12\ncycles = 0\npeak = 4096\nretained = 0\n";
        assert_eq!(text, expected);
        let back = BaselineFile::parse(&text, Path::new("x.toml")).unwrap();
        assert_eq!(back, sample());
        assert_eq!(back.render(), text);
    }

    #[test]
    fn mode_is_in_the_header_only_when_not_normal() {
        // A normal run: no `mode` key, the text of files written before it existed.
        let normal = sample().render();
        assert!(!normal.contains("mode"), "{normal}");
        let back = BaselineFile::parse(&normal, Path::new("x.toml")).unwrap();
        assert_eq!(back.env.mode, "");
        // Another mode: written in key order, read back, and a different environment.
        let mut dev = sample();
        dev.env.mode = "debug-build+dev+pythonmalloc=malloc".into();
        let text = dev.render();
        assert!(
            text.starts_with("[memcheck]\nformat = 1\nimplementation = \"cpython\"\nmeter = \"python\"\nmode = \"debug-build+dev+pythonmalloc=malloc\"\nplatform = "),
            "{text}"
        );
        let back = BaselineFile::parse(&text, Path::new("x.toml")).unwrap();
        assert_eq!(back, dev);
        assert_eq!(back.render(), text);
        assert_ne!(back.env, sample().env);
        assert_eq!(
            back.env.to_string(),
            "cpython 3.11 on linux-x86_64, meter python, mode debug-build+dev+pythonmalloc=malloc"
        );
        assert_eq!(
            sample().env.to_string(),
            "cpython 3.11 on linux-x86_64, meter python"
        );
    }

    #[test]
    fn write_is_atomic_and_skips_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/test_x.toml");
        let b = Boundary::project(dir.path()).unwrap();
        assert!(sample().write(&b, &path).unwrap());
        let modified = fs::metadata(&path).unwrap().modified().unwrap();
        assert!(!sample().write(&b, &path).unwrap());
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), modified);
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
        assert_eq!(BaselineFile::read(&path).unwrap().unwrap(), sample());
        assert!(BaselineFile::read(&dir.path().join("missing.toml"))
            .unwrap()
            .is_none());
    }

    fn parse_err(text: &str) -> String {
        BaselineFile::parse(text, Path::new("b/t.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn malformed_files_name_file_line_column() {
        let header = sample().render();
        let head: String = header.lines().take(6).collect::<Vec<_>>().join("\n");
        let e = parse_err(&format!(
            "{head}\n\n[test_a]\npeak = \"big\"\nretained = 0\n"
        ));
        assert!(e.starts_with("b/t.toml:9:8: "), "{e}");
        let e = parse_err(&format!("{head}\n\n[test_a]\npeak = -1\nretained = 0\n"));
        assert!(e.starts_with("b/t.toml:9:"), "{e}");
        let e = parse_err(&format!(
            "{head}\n\n[test_a]\npeak = 1\nretained = 0\npaek = 3\n"
        ));
        assert!(
            e.starts_with("b/t.toml:11:1: ") && e.contains("paek"),
            "{e}"
        );
        let e = parse_err(&format!(
            "{head}\n\n[test_a]\npeak = 1\npeak = 2\nretained = 0\n"
        ));
        assert!(
            e.starts_with("b/t.toml:10:1: ") && e.contains("duplicate"),
            "{e}"
        );
        let e = parse_err("[test_a]\npeak = 1\nretained = 0\n");
        assert!(e.contains("missing the [memcheck] header"), "{e}");
        let e = parse_err(&header.replace("format = 1", "format = 7"));
        assert!(
            e.starts_with("b/t.toml:2:1: format 7 was written by a newer"),
            "{e}"
        );
        let e = parse_err("[memcheck\n");
        assert!(e.starts_with("b/t.toml:1:"), "{e}");
    }

    #[test]
    fn a_spread_is_written_only_for_unstable_tests_and_checked_on_reading() {
        // Stable: the text of files written before spreads existed, byte for byte.
        let stable = sample().render();
        assert!(!stable.contains("_max"), "{stable}");
        let mut f = sample();
        f.entries.get_mut("test_b").unwrap().peak_max = Some(9000);
        f.entries.get_mut("test_b").unwrap().retained_max = Some(100);
        let text = f.render();
        assert!(
            text.ends_with("\n[test_b]\nallocations = 12\ncycles = 0\npeak = 4096\npeak_max = 9000\nretained = 0\nretained_max = 100\n"),
            "{text}"
        );
        assert_eq!(
            text.replace("peak_max = 9000\n", "")
                .replace("retained_max = 100\n", ""),
            stable,
            "only the two keys are added"
        );
        let back = BaselineFile::parse(&text, Path::new("x.toml")).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.render(), text);
        assert!(back.entries["test_b"].unstable());
        assert!(!back.entries["TestIO::test_read[utf-8]"].unstable());
        // A highest value below the lowest: an error at its line, the file's name first.
        let bad = text.replace("peak_max = 9000", "peak_max = 4095");
        let e = parse_err(&bad);
        assert!(
            e.starts_with("b/t.toml:18:1: test 'test_b': peak_max = 4095 is below peak = 4096"),
            "{e}"
        );
        let bad = text.replace("retained_max = 100", "retained_max = 0");
        assert!(
            BaselineFile::parse(&bad, Path::new("x.toml")).is_ok(),
            "equal is fine"
        );
        let bad = text
            .replace("retained = 0", "retained = 200")
            .replace("peak_max = 9000\n", "");
        let e = parse_err(&bad);
        assert!(
            e.starts_with(
                "b/t.toml:19:1: test 'test_b': retained_max = 100 is below retained = 200"
            ),
            "{e}"
        );
        let e = parse_err(&text.replace("peak_max = 9000", "peak_max = -1"));
        assert!(e.starts_with("b/t.toml:18:"), "{e}");
    }

    #[test]
    fn non_utf8_is_reported_with_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        fs::write(&path, b"[memcheck]\nformat = \xff\n").unwrap();
        let e = BaselineFile::read(&path).unwrap_err().to_string();
        assert!(
            e.ends_with("t.toml:2:10: the file is not valid UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn module_paths_stay_inside() {
        let dir = Path::new("baselines");
        assert_eq!(
            module_file(dir, "tests/test_io.py").unwrap(),
            Path::new("baselines/tests/test_io.toml")
        );
        for bad in ["../x.py", "/etc/passwd", "tests/../../x.py", ""] {
            assert!(module_file(dir, bad).is_err(), "{bad}");
        }
        assert_eq!(split_nodeid("a/t.py::C::t[x::y]"), ("a/t.py", "C::t[x::y]"));
    }

    #[test]
    fn header_key_is_reserved() {
        let mut f = sample();
        f.entries.insert(HEADER.into(), Entry::default());
        let dir = tempfile::tempdir().unwrap();
        let b = Boundary::project(dir.path()).unwrap();
        assert!(f.write(&b, &dir.path().join("t.toml")).is_err());
    }

    proptest! {
        #[test]
        fn any_node_id_round_trips(keys in proptest::collection::vec("\\PC*|[\\x00-\\x1f\"'\\\\\\[\\]:]{0,12}", 1..6), peak in 0u64..(i64::MAX as u64), spread in any::<bool>()) {
            let mut f = BaselineFile::new(env());
            for k in keys.iter().filter(|k| k.as_str() != HEADER) {
                let peak_max = spread.then_some(peak.saturating_add(peak / 3).min(i64::MAX as u64));
                f.entries.insert(k.clone(), Entry { peak, retained: peak / 2, allocations: 3, cycles: 1, peak_max, ..Entry::default() });
            }
            let text = f.render();
            let back = BaselineFile::parse(&text, Path::new("p.toml")).unwrap();
            prop_assert_eq!(&back, &f);
            prop_assert_eq!(back.render(), text);
        }
    }
}
