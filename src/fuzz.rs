//! Property-based fuzzing (proptest) of every reader of untrusted input: baseline files
//! (committed, hand-edited, changed by a pull request), results files (CI artifacts), sizes and
//! percentages (options, config, markers), the config file, and the write boundary that results
//! files and config values drive. cargo-fuzz needs a nightly toolchain; these run in `cargo test`.
//!
//! A panic in any reader fails its property (proptest catches it and shrinks the input); every
//! error must name where it is (file:line:column, or the origin). Case counts are set per
//! property in `CASES`; `PROPTEST_CASES` does not override them.

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::baseline::{BaselineFile, Entry, Environment};
use crate::config;
use crate::error::Error;
use crate::gate::Outcome;
use crate::gate::TestResult;
use crate::results::{Gating, Results};
use crate::sizes::{parse_percent, parse_size};

/// Cases per property, reported in the README.
const TEXT: u32 = 5_000;
const PARSER: u32 = 20_000;
const FILES: u32 = 500;

fn run<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

/// Any text: every character, controls and line breaks included.
fn any_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(|v| v.into_iter().collect())
}

/// Text made of the pieces of a syntax, so that the parser goes deep instead of stopping at
/// the first character.
fn pieces(alphabet: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(alphabet), 0..max).prop_map(|v| v.concat())
}

const TOML_PIECES: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "\n",
    "\r\n",
    " ",
    "=",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    ",",
    ".",
    "{",
    "}",
    "#",
    "\\",
    "\\u",
    "memcheck",
    "format",
    "python",
    "implementation",
    "platform",
    "meter",
    "peak",
    "retained",
    "allocations",
    "cycles",
    "test_a",
    "\"TestIO::t[x]\"",
    "1",
    "0",
    "-1",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "1.5",
    "1e3",
    "inf",
    "nan",
    "true",
    "false",
    "0x10",
    "1979-05-27",
    "\"3.11\"",
    "\u{0}",
    "\u{1b}",
    "é",
];

const JSON_PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    " ",
    "\n",
    "\\",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1.5e400",
    "18446744073709551616",
    "\"schema\"",
    "\"pytest-memcheck/results\"",
    "\"version\"",
    "1",
    "\"environment\"",
    "\"python\"",
    "\"tests\"",
    "\"nodeid\"",
    "\"outcome\"",
    "\"over\"",
    "\"measured\"",
    "\"peak\"",
    "\"stale\"",
    "\"gating\"",
    "\"complete\"",
    "\"totals\"",
    "\u{1b}",
    "é",
];

/// An edit of a valid document: insert, delete or replace a few characters somewhere.
#[derive(Clone, Debug)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    Replace(usize, String),
}

fn edits(alphabet: &'static [&'static str]) -> impl Strategy<Value = Vec<Edit>> {
    let piece = prop_oneof![any_text(3), pieces(alphabet, 2)];
    let edit = prop_oneof![
        (any::<usize>(), piece.clone()).prop_map(|(at, s)| Edit::Insert(at, s)),
        (any::<usize>(), 1..8usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), piece).prop_map(|(at, s)| Edit::Replace(at, s)),
    ];
    prop::collection::vec(edit, 1..6)
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        let len = chars.len().max(1);
        match edit {
            Edit::Insert(at, s) => {
                let at = at % (chars.len() + 1);
                chars.splice(at..at, s.chars());
            }
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(chars.len());
                chars.drain(at.min(end)..end);
            }
            Edit::Replace(at, s) => {
                let at = at % len;
                let end = (at + s.chars().count()).min(chars.len());
                chars.splice(at.min(end)..end, s.chars());
            }
        }
    }
    chars.into_iter().collect()
}

/// An error that names a position inside `text` of the file it was read from.
fn located(e: &Error, text: &str, file: &str) -> Result<(), TestCaseError> {
    match e {
        Error::File {
            path, line, column, ..
        } => {
            prop_assert_eq!(path, Path::new(file));
            prop_assert!(*line >= 1 && *column >= 1, "{}", e);
            prop_assert!(*line <= text.split('\n').count() + 1, "{} of {:?}", e, text);
            Ok(())
        }
        other => Err(TestCaseError::fail(format!("not located: {other}"))),
    }
}

fn node_id() -> impl Strategy<Value = String> {
    prop_oneof![
        any_text(24),
        pieces(
            &["t", "::", "[", "]", "\"", "'", "\\", "|", "<", ">", "%", "\n", "\u{0}", "é"],
            8
        ),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        0..=i64::MAX as u64,
        0..=i64::MAX as u64,
        0..1000u64,
        0..10u64,
        // An unstable test's spread: the highest value at or above the lowest.
        prop::option::of(0..=i64::MAX as u64),
        prop::option::of(0..=i64::MAX as u64),
    )
        .prop_map(
            |(peak, retained, allocations, cycles, peak_max, retained_max)| Entry {
                peak,
                retained,
                allocations,
                cycles,
                peak_max: peak_max.map(|m| m.max(peak)),
                retained_max: retained_max.map(|m| m.max(retained)),
                // Native figures, present in about half the entries, so both forms round-trip.
                native_peak: (cycles % 2 == 1).then_some(peak / 3),
                native_retained: (cycles % 2 == 1).then_some(retained / 3),
                native_peak_max: (cycles == 3).then_some(peak / 3 + 1),
                native_retained_max: (cycles == 3).then_some(retained / 3 + 1),
                combined_peak: (cycles % 2 == 1).then_some(peak / 2),
            },
        )
}

fn valid_baseline() -> impl Strategy<Value = BaselineFile> {
    (
        prop::collection::btree_map(node_id(), entry(), 0..5),
        any_text(8),
    )
        .prop_map(|(entries, python)| {
            let mut f = BaselineFile::new(Environment {
                python,
                implementation: "cpython".into(),
                platform: "linux-x86_64".into(),
                meter: "python".into(),
                mode: String::new(),
            });
            f.entries = entries
                .into_iter()
                .filter(|(k, _)| k != crate::baseline::HEADER)
                .collect();
            f
        })
}

/// Whatever a baseline reader accepts renders to a file it reads back the same; whatever it
/// refuses is refused with a position.
fn baseline_holds(text: &str) -> Result<(), TestCaseError> {
    match BaselineFile::parse(text, Path::new("b/t.toml")) {
        Ok(f) => {
            let again = BaselineFile::parse(&f.render(), Path::new("b/t.toml"));
            prop_assert!(again.is_ok(), "{:?}", again.err().map(|e| e.to_string()));
            prop_assert_eq!(again.unwrap(), f);
            Ok(())
        }
        Err(e) => located(&e, text, "b/t.toml"),
    }
}

#[test]
fn baseline_files_any_text() {
    run(TEXT, any_text(400), |t| baseline_holds(&t));
}

#[test]
fn baseline_files_toml_pieces() {
    run(TEXT, pieces(TOML_PIECES, 80), |t| baseline_holds(&t));
}

#[test]
fn baseline_files_edited() {
    run(TEXT, (valid_baseline(), edits(TOML_PIECES)), |(f, e)| {
        baseline_holds(&apply(&f.render(), &e))
    });
}

#[test]
fn deeply_nested_input_is_an_error_not_a_crash() {
    let text = format!("[memcheck]\nformat = {}", "[".repeat(100_000));
    assert!(BaselineFile::parse(&text, Path::new("t.toml")).is_err());
    let text = format!("x = {}1{}", "{a = ".repeat(50_000), "}".repeat(50_000));
    assert!(BaselineFile::parse(&text, Path::new("t.toml")).is_err());
    let text = "[".repeat(100_000);
    assert!(Results::parse(&text, Path::new("r.json")).is_err());
}

fn valid_results() -> impl Strategy<Value = Results> {
    let test = (node_id(), entry(), any::<bool>(), any_text(30)).prop_map(
        |(nodeid, measured, failed, message)| TestResult {
            nodeid,
            outcome: if failed { Outcome::Over } else { Outcome::New },
            failed,
            recordable: true,
            disturbed: None,
            unstable: vec![],
            measured,
            baseline: None,
            limits: Default::default(),
            location: None,
            site: None,
            message,
            checks: vec![],
        },
    );
    (
        prop::collection::vec(test, 0..4),
        prop::collection::vec(node_id(), 0..3),
    )
        .prop_map(|(tests, stale)| {
            Results::new(
                crate::baseline::test_env(),
                Gating {
                    tolerance: "10%".into(),
                    floor: 65536,
                    strict: false,
                    gate_cycles: false,
                    baseline_dir: "baselines".into(),
                },
                true,
                tests,
                stale,
            )
        })
}

fn results_hold(text: &str) -> Result<(), TestCaseError> {
    match Results::parse(text, Path::new("r.json")) {
        Ok(r) => {
            let again = Results::parse(&r.to_json(), Path::new("r.json"));
            prop_assert!(again.is_ok(), "{:?}", again.err().map(|e| e.to_string()));
            prop_assert_eq!(again.unwrap().to_json(), r.to_json());
            Ok(())
        }
        Err(e) => located(&e, text, "r.json"),
    }
}

#[test]
fn results_files_any_text() {
    run(TEXT, any_text(400), |t| results_hold(&t));
}

#[test]
fn results_files_json_pieces() {
    run(TEXT, pieces(JSON_PIECES, 80), |t| results_hold(&t));
}

#[test]
fn results_files_edited() {
    run(TEXT, (valid_results(), edits(JSON_PIECES)), |(r, e)| {
        results_hold(&apply(&r.to_json(), &e))
    });
}

/// Sizes: any text is a value or an error naming its origin, never a panic.
#[test]
fn sizes_and_percentages_any_text() {
    run(PARSER, any_text(60), |t| {
        for e in [
            parse_size(&t, "fuzz").err(),
            parse_percent(&t, "fuzz").err(),
        ]
        .into_iter()
        .flatten()
        {
            prop_assert!(e.to_string().starts_with("fuzz: invalid "), "{}", e);
        }
        Ok(())
    });
}

/// Well-formed sizes, long numbers included, equal an independent computation (quotient and
/// remainder, so no intermediate can overflow) or are refused as too large.
#[test]
fn sizes_are_exact() {
    const UNITS: &[(&str, u128)] = &[
        ("", 1),
        ("B", 1),
        ("kb", 1_000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("TB", 1_000_000_000_000),
        ("KiB", 1 << 10),
        ("mib", 1 << 20),
        ("GiB", 1 << 30),
        ("TiB", 1 << 40),
    ];
    let strategy = (
        "[0-9]{1,30}",
        "[0-9]{0,29}",
        prop::sample::select(UNITS),
        "[ \t]{0,2}",
    );
    run(PARSER, strategy, |(int, frac, (unit, mult), space)| {
        let frac = &frac[..frac.len().min(30 - int.len())];
        let text = if frac.is_empty() {
            format!("{int}{space}{unit}")
        } else {
            format!("{int}.{frac}{space}{unit}")
        };
        let digits: u128 = format!("{int}{frac}").parse().unwrap();
        let divisor = 10u128.pow(frac.len() as u32);
        let expected = digits.checked_mul(mult).and_then(|scaled| {
            let (q, r) = (scaled / divisor, scaled % divisor);
            let rounded = q + u128::from(r >= divisor - r);
            u64::try_from(rounded).ok()
        });
        // A fraction of a byte is refused, whatever else holds.
        let fraction_of_a_byte = mult == 1 && digits % divisor != 0;
        match (parse_size(&text, "fuzz"), expected) {
            (Err(e), _) if fraction_of_a_byte => {
                prop_assert!(e.to_string().contains("a fraction of a byte"), "{}", e)
            }
            (Ok(got), Some(want)) if !fraction_of_a_byte => {
                prop_assert_eq!(got as u128, want as u128, "{}", text)
            }
            (Err(e), None) => prop_assert!(e.to_string().contains("too large"), "{}", e),
            (got, want) => {
                return Err(TestCaseError::fail(format!(
                    "{text}: got {:?}, expected {want:?}",
                    got.map_err(|e| e.to_string())
                )))
            }
        }
        Ok(())
    });
}

#[test]
fn percentages_are_exact() {
    run(
        PARSER,
        ("[0-9]{1,6}", "[0-9]{0,5}", "( ?%)?"),
        |(int, frac, pct)| {
            let text = if frac.is_empty() {
                format!("{int}{pct}")
            } else {
                format!("{int}.{frac}{pct}")
            };
            let ppm = format!("{int}{frac:0<4}").parse::<u128>().unwrap();
            match parse_percent(&text, "fuzz") {
                Ok(p) => {
                    prop_assert!(frac.len() <= 4 && ppm <= 100_000_000, "{}", text);
                    prop_assert!(!pct.is_empty() || ppm == 0 || int.parse::<u64>().unwrap() > 0);
                    prop_assert_eq!(p.ppm as u128, ppm);
                }
                Err(e) => {
                    // a bare fraction (no %) is refused as ambiguous
                    let bare_fraction =
                        pct.is_empty() && ppm > 0 && int.parse::<u64>().unwrap() == 0;
                    prop_assert!(
                        frac.len() > 4 || ppm > 100_000_000 || bare_fraction,
                        "{}: {}",
                        text,
                        e
                    )
                }
            }
            Ok(())
        },
    );
}

/// The config file: any value of any key is a setting or an error at its file:line:column.
#[test]
fn config_values() {
    let dir = tempfile::tempdir().unwrap();
    let keys = prop::sample::select(
        &[
            "tolerance",
            "floor",
            "baseline-dir",
            "meter",
            "strict",
            "allow-outside-root",
        ][..],
    );
    let value = prop_oneof![
        any_text(20).prop_map(|s| crate::baseline::quote(&s)),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        pieces(TOML_PIECES, 6),
    ];
    let path = dir.path().join("pyproject.toml");
    run(FILES * 4, (keys, value), |(key, value)| {
        let text = format!("[tool.memcheck]\n{key} = {value}\n");
        fs::write(&path, &text).unwrap();
        if let Err(e) = config::load(dir.path(), &Default::default()) {
            located(&e, &text, path.to_str().unwrap())?;
        }
        Ok(())
    });
}

/// The boundary, on a tree of Unix symlinks.
#[cfg(unix)]
mod links {
    use super::*;

    use std::path::PathBuf;

    use crate::boundary::Boundary;
    use crate::config::Settings;
    use crate::session::Session;
    use crate::store::{Coverage, UpdateMode};

    /// A tree with links in and out of the root, for the boundary properties.
    struct Tree {
        _tmp: tempfile::TempDir,
        top: PathBuf,
        root: PathBuf,
    }

    fn tree() -> Tree {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().canonicalize().unwrap();
        let root = top.join("p");
        for d in ["p/a/b", "p/real", "out/x"] {
            fs::create_dir_all(top.join(d)).unwrap();
        }
        symlink(top.join("out"), root.join("lo")).unwrap();
        symlink(top.join("p/real"), root.join("li")).unwrap();
        symlink(top.join("out/x"), root.join("a/lo2")).unwrap();
        symlink(top.join("nowhere"), root.join("dangling")).unwrap();
        Tree {
            _tmp: tmp,
            top,
            root,
        }
    }

    const COMPONENTS: &[&str] = &[
        "a", "b", "real", "new", "lo", "li", "lo2", "dangling", "..", ".", "", "/", "\u{1b}",
        "\u{0}", "x\ny", "é",
    ];

    fn components() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(COMPONENTS), 0..7).prop_map(|v| v.join("/"))
    }

    /// Checked paths are physical paths under the root; paths made only of plain names and links
    /// that stay inside are never refused (the negative control).
    #[test]
    fn boundary_paths() {
        let t = tree();
        let b = Boundary::project(&t.root).unwrap();
        run(TEXT, components(), |rel| {
            let safe = rel
                .split('/')
                .all(|c| matches!(c, "a" | "b" | "real" | "new" | "li" | "é" | "." | ""))
                && !rel.starts_with('/');
            match b.check(Path::new(&rel), "fuzz") {
                Ok(at) => {
                    prop_assert!(at.starts_with(&t.root), "{:?} → {:?}", rel, at);
                    let mut prefix = t.root.clone();
                    for part in at.strip_prefix(&t.root).unwrap().components() {
                        prefix.push(part);
                        let link =
                            fs::symlink_metadata(&prefix).is_ok_and(|m| m.file_type().is_symlink());
                        prop_assert!(!link, "{:?} → {:?} goes through a link", rel, at);
                    }
                }
                Err(Error::Refused { .. }) => prop_assert!(!safe, "{:?} refused", rel),
                Err(e) => return Err(TestCaseError::fail(format!("{rel:?}: {e}"))),
            }
            Ok(())
        });
    }

    /// `memcheck update --from` with a crafted environment and node ids, and any baseline-dir:
    /// whatever is written lands under the project root.
    #[test]
    fn crafted_results_write_only_inside() {
        let t = tree();
        let value = || {
            prop_oneof![
                Just("3.11".to_string()),
                pieces(
                    &["..", ".", "/", "\\", "a", "\u{0}", "\u{1b}", "~", "C:", "lo"],
                    4
                ),
            ]
        };
        let template = prop::sample::select(
            &[
                "baselines",
                "baselines/{python}",
                "{python}/{platform}",
                "b/{implementation}/{python}",
                "lo/{python}",
                "../out/{python}",
            ][..],
        );
        let ids = prop::collection::vec(
            (components(), node_id()).prop_map(|(m, k)| format!("{m}.py::{k}")),
            1..4,
        );
        run(
            FILES,
            (value(), value(), value(), template, ids),
            |(py, pl, im, tpl, ids)| {
                let settings = Settings {
                    baseline_dir: tpl.to_string(),
                    ..Settings::default()
                };
                let env = Environment {
                    python: py,
                    implementation: im,
                    platform: pl,
                    meter: "python".into(),
                    mode: String::new(),
                };
                if let Ok(mut s) = Session::open(&t.root, settings, env, "fuzz.json") {
                    for (i, id) in ids.into_iter().enumerate() {
                        s.record(TestResult {
                            nodeid: id,
                            outcome: Outcome::New,
                            failed: false,
                            recordable: true,
                            disturbed: None,
                            unstable: vec![],
                            measured: Entry {
                                peak: i as u64,
                                ..Entry::default()
                            },
                            baseline: None,
                            limits: Default::default(),
                            location: None,
                            site: None,
                            message: String::new(),
                            checks: vec![],
                        });
                    }
                    let _ = s.update(UpdateMode::All, &Coverage::default());
                }
                let outside: Vec<_> = walk(&t.top)
                    .into_iter()
                    .filter(|p| !p.starts_with(&t.root))
                    .collect();
                prop_assert!(outside.is_empty(), "written outside: {:?}", outside);
                Ok(())
            },
        );
    }

    /// Files under `dir`, not following links.
    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                let kind = e.file_type().unwrap();
                if kind.is_dir() {
                    stack.push(e.path());
                } else if kind.is_file() {
                    out.push(e.path());
                }
            }
        }
        out
    }
}
