//! Settings: `[tool.memcheck]` in pyproject.toml or `[memcheck]` in memcheck.toml, overridden by
//! pytest's ini keys (`memcheck_tolerance = 5%` in pytest.ini, …), overridden by `--memcheck-*`
//! options. Every key has one option; all are resolved here, in one place, and a bad value names
//! where it came from (the option, the ini key, or file:line:column).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::baseline::toml_error;
use crate::boundary::{plain_name, Boundary};
use crate::error::{Error, Result};
use crate::gate::{Tolerance, DEFAULT_TOLERANCE};
use crate::meter::MeterKind;
use crate::sizes::{parse_percent, parse_size};

/// A size or percentage may be written as a string (`"64 KiB"`) or a bare number.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
enum Quantity {
    Text(String),
    Integer(u64),
    Float(f64),
}

impl Quantity {
    fn text(&self) -> String {
        match self {
            Quantity::Text(s) => s.clone(),
            Quantity::Integer(i) => i.to_string(),
            Quantity::Float(f) => f.to_string(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileSettings {
    tolerance: Option<Spanned<Quantity>>,
    floor: Option<Spanned<Quantity>>,
    baseline_dir: Option<Spanned<String>>,
    meter: Option<Spanned<String>>,
    strict: Option<bool>,
    confirm: Option<bool>,
    gate_cycles: Option<bool>,
    allow_outside_root: Option<bool>,
    native: Option<bool>,
}

#[derive(Deserialize)]
struct Pyproject {
    tool: Option<PyprojectTool>,
}

#[derive(Deserialize)]
struct PyprojectTool {
    memcheck: Option<FileSettings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemcheckToml {
    memcheck: Option<FileSettings>,
}

/// The effective settings of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub tolerance: Tolerance,
    /// The baseline directory template, relative to `root` (may hold {python}, {platform}, {implementation}).
    pub baseline_dir: String,
    pub meter: MeterKind,
    pub strict: bool,
    /// Re-measure an over-budget test once before failing it.
    pub confirm: bool,
    pub gate_cycles: bool,
    /// Also count native memory (the malloc family called by extensions), Linux only.
    pub native: bool,
    /// Allow a baseline directory that resolves outside the project root (through `..`, an
    /// absolute path or a symlink). Only from the config file: a deliberate, reviewed choice.
    pub allow_outside_root: bool,
    /// The baseline directory was given on the command line for this run: an explicit choice,
    /// not something a checkout can plant, so it may point anywhere.
    pub baseline_dir_from_option: bool,
    /// The file the settings came from, if any.
    pub source: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tolerance: DEFAULT_TOLERANCE,
            baseline_dir: "baselines".into(),
            meter: MeterKind::Python,
            strict: false,
            confirm: true,
            gate_cycles: false,
            native: false,
            allow_outside_root: false,
            baseline_dir_from_option: false,
            source: None,
        }
    }
}

/// Option names as the user types them, keyed by setting.
pub const OPTIONS: [(&str, &str); 8] = [
    ("tolerance", "--memcheck-tolerance"),
    ("floor", "--memcheck-floor"),
    ("baseline-dir", "--memcheck-baseline-dir"),
    ("meter", "--memcheck-meter"),
    ("strict", "--memcheck-strict"),
    ("confirm", "--memcheck-confirm"),
    ("gate-cycles", "--memcheck-gate-cycles"),
    ("native", "--memcheck-native"),
];

fn parse_bool(text: &str, origin: &str) -> Result<bool> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::usage(
            origin,
            format!("expected true or false, got '{text}'"),
        )),
    }
}

/// Read the settings file in `root` (memcheck.toml first, then pyproject.toml) and apply the
/// command-line `overrides` (setting name → text) on top.
pub fn load(root: &Path, overrides: &BTreeMap<String, String>) -> Result<Settings> {
    load_layers(root, &BTreeMap::new(), overrides)
}

/// [`load`] with pytest's ini keys between the settings file and the command line: `ini` maps a
/// setting name to its text and where it was written (`memcheck_floor in pytest.ini`). An ini
/// file is part of the checkout like the settings file, so an ini `baseline-dir` is held inside
/// the root like one from `[tool.memcheck]`; only the command line may point elsewhere.
pub fn load_layers(
    root: &Path,
    ini: &BTreeMap<String, (String, String)>,
    overrides: &BTreeMap<String, String>,
) -> Result<Settings> {
    let mut s = settings_file(|name| {
        let path = root.join(name);
        if !path.is_file() {
            return Ok(None);
        }
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, "read", e))?;
        Ok(Some((path, text)))
    })?;
    for (name, (value, origin)) in ini {
        if !OPTIONS.iter().any(|(key, _)| key == name) {
            return Err(Error::usage(origin.clone(), "unknown setting"));
        }
        apply(&mut s, name, value, origin)?;
    }
    for (name, value) in overrides {
        let origin = OPTIONS
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, opt)| *opt)
            .ok_or_else(|| Error::usage(name.clone(), "unknown setting"))?;
        apply(&mut s, name, value, origin)?;
        s.baseline_dir_from_option |= name == "baseline-dir";
    }
    Ok(s)
}

/// The settings of the settings file (memcheck.toml first, then pyproject.toml) as committed at
/// `rev`, `root` being the project root relative to the repository's: what the gate applied
/// there, for `memcheck diff` to tell a raised tolerance or floor.
pub fn load_at(repo: &crate::git::Repo, rev: &str, root: &str) -> Result<Settings> {
    settings_file(|name| {
        let path = if root.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", root.trim_end_matches('/'))
        };
        Ok(repo
            .read_at(rev, &path)?
            .map(|text| (PathBuf::from(format!("{rev}:{path}")), text)))
    })
}

/// Defaults with the settings file applied; `read` gives a file of the project by name (its
/// path for messages, and its text), or None when it does not exist.
fn settings_file(read: impl Fn(&str) -> Result<Option<(PathBuf, String)>>) -> Result<Settings> {
    let mut s = Settings::default();
    if let Some((path, text)) = read("memcheck.toml")? {
        apply_file(&mut s, &path, &text, "[memcheck]", |text| {
            toml::from_str::<MemcheckToml>(text).map(|t| t.memcheck)
        })?;
    } else if let Some((path, text)) = read("pyproject.toml")? {
        apply_file(&mut s, &path, &text, "[tool.memcheck]", |text| {
            toml::from_str::<Pyproject>(text).map(|p| p.tool.and_then(|t| t.memcheck))
        })?;
    }
    Ok(s)
}

fn apply(s: &mut Settings, name: &str, value: &str, origin: &str) -> Result<()> {
    match name {
        "tolerance" => s.tolerance.relative = parse_percent(value, origin)?,
        "floor" => s.tolerance.floor = parse_size(value, origin)?,
        "baseline-dir" => {
            if value.trim().is_empty() {
                return Err(Error::usage(
                    origin,
                    "the baseline directory cannot be empty",
                ));
            }
            s.baseline_dir = value.to_string()
        }
        "meter" => s.meter = MeterKind::parse(value, origin)?,
        "strict" => s.strict = parse_bool(value, origin)?,
        "confirm" => s.confirm = parse_bool(value, origin)?,
        "gate-cycles" => s.gate_cycles = parse_bool(value, origin)?,
        "native" => s.native = parse_bool(value, origin)?,
        _ => return Err(Error::usage(origin, "unknown setting")),
    }
    Ok(())
}

fn apply_file(
    s: &mut Settings,
    path: &Path,
    text: &str,
    table: &str,
    parse: impl Fn(&str) -> std::result::Result<Option<FileSettings>, toml::de::Error>,
) -> Result<()> {
    let file = match parse(text) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(()),
        Err(e) => {
            let mut err = toml_error(path, text, &e);
            if let Error::File { message, .. } = &mut err {
                *message = format!("{table}: {message}");
            }
            return Err(err);
        }
    };
    s.source = Some(path.to_path_buf());
    // A value error points at the value in the file.
    let at = |span: std::ops::Range<usize>, key: &str, err: Error| -> Error {
        let message = match err {
            Error::Usage { message, .. } => message,
            other => other.to_string(),
        };
        Error::at_offset(path, text, span.start, format!("{table} {key}: {message}"))
    };
    let quantities = [("tolerance", &file.tolerance), ("floor", &file.floor)];
    for (key, value) in quantities {
        if let Some(v) = value {
            apply(s, key, &v.get_ref().text(), key).map_err(|e| at(v.span(), key, e))?;
        }
    }
    let strings = [("baseline-dir", &file.baseline_dir), ("meter", &file.meter)];
    for (key, value) in strings {
        if let Some(v) = value {
            apply(s, key, v.get_ref(), key).map_err(|e| at(v.span(), key, e))?;
        }
    }
    s.strict = file.strict.unwrap_or(s.strict);
    s.confirm = file.confirm.unwrap_or(s.confirm);
    s.gate_cycles = file.gate_cycles.unwrap_or(s.gate_cycles);
    s.native = file.native.unwrap_or(s.native);
    s.allow_outside_root = file.allow_outside_root.unwrap_or(s.allow_outside_root);
    Ok(())
}

/// The baseline directory `root/expanded` and the boundary its writes are kept in. From the
/// config (or the default) it must resolve inside the project root — no `..` out, no absolute
/// path elsewhere, no symlink out — unless the config says `allow-outside-root = true`: baselines
/// are written there, and a checkout must not be able to aim those writes at the rest of the
/// disk. A directory given on the command line is the user's explicit choice and may point
/// anywhere; either way, files under it stay under it.
pub fn baseline_dir(
    root: &Path,
    expanded: &str,
    settings: &Settings,
) -> Result<(PathBuf, Boundary)> {
    let dir = root.join(expanded);
    if settings.baseline_dir_from_option {
        let b = Boundary::chosen(
            &dir,
            "the baseline directory given with --memcheck-baseline-dir",
        )?;
        return Ok((dir, b));
    }
    if settings.allow_outside_root {
        let b = Boundary::chosen(&dir, "the baseline directory (allow-outside-root)")?;
        return Ok((dir, b));
    }
    let boundary = Boundary::project(root)?;
    let origin = format!("baseline-dir '{expanded}'");
    boundary
        .check(Path::new(expanded), &origin)
        .map_err(|mut e| {
            if let Error::Refused { message, .. } = &mut e {
                message.push_str(
                    "; set allow-outside-root = true in [tool.memcheck] if that is intended",
                );
            }
            e
        })?;
    Ok((dir, boundary))
}

/// Fill the placeholders of a baseline directory template. Each value must be a plain name
/// (`boundary::plain_name`): `origin` says where the values came from (this interpreter, or a
/// results file, which is untrusted input).
pub fn expand_dir(
    template: &str,
    python: &str,
    platform: &str,
    implementation: &str,
    origin: &str,
) -> Result<String> {
    let mut out = template.to_string();
    for (name, value) in [
        ("python", python),
        ("platform", platform),
        ("implementation", implementation),
    ] {
        let placeholder = format!("{{{name}}}");
        if out.contains(&placeholder) {
            plain_name(value, name, origin)?;
            out = out.replace(&placeholder, value);
        }
    }
    if let Some(start) = out.find('{') {
        let end = out[start..].find('}').map_or(out.len(), |e| start + e + 1);
        return Err(Error::usage(
            "baseline-dir",
            format!(
                "unknown placeholder '{}' in '{template}' (known: {{python}}, {{platform}}, {{implementation}})",
                &out[start..end]
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sizes::Percent;

    fn percent(p: u64) -> Percent {
        Percent::from_percent(p)
    }

    fn root_with(name: &str, text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(name), text).unwrap();
        dir
    }

    #[test]
    fn defaults_without_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = load(dir.path(), &BTreeMap::new()).unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn pyproject_table_and_overrides() {
        let dir = root_with(
            "pyproject.toml",
            "[project]\nname = 'x'\n\n[tool.memcheck]\ntolerance = '5%'\nfloor = 4096\nbaseline-dir = 'mem/{python}'\nstrict = true\n",
        );
        let s = load(dir.path(), &BTreeMap::new()).unwrap();
        assert_eq!(s.tolerance.relative, percent(5));
        assert_eq!(s.tolerance.floor, 4096);
        assert_eq!(s.baseline_dir, "mem/{python}");
        assert!(s.strict);
        let mut over = BTreeMap::new();
        over.insert("floor".to_string(), "1 KiB".to_string());
        over.insert("tolerance".to_string(), "2".to_string());
        let s = load(dir.path(), &over).unwrap();
        assert_eq!(s.tolerance.floor, 1024);
        assert_eq!(s.tolerance.relative, percent(2));
    }

    #[test]
    fn ini_between_file_and_command_line() {
        let dir = root_with(
            "pyproject.toml",
            "[tool.memcheck]\ntolerance = '5%'\nfloor = 4096\nstrict = true\n",
        );
        let ini_key = |name: &str, value: &str| {
            let origin = format!("memcheck_{name} in pytest.ini");
            (name.to_string(), (value.to_string(), origin))
        };
        let ini: BTreeMap<_, _> = [ini_key("floor", "2 KiB"), ini_key("tolerance", "7%")].into();
        let over: BTreeMap<_, _> = [("tolerance".to_string(), "9%".to_string())].into();
        let s = load_layers(dir.path(), &ini, &over).unwrap();
        assert_eq!(s.tolerance.floor, 2048); // ini over the file
        assert_eq!(s.tolerance.relative, percent(9)); // command line over ini
        assert!(s.strict); // the file where nothing else says
        let bad: BTreeMap<_, _> = [ini_key("floor", "12 parsecs")].into();
        let e = load_layers(dir.path(), &bad, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("memcheck_floor in pytest.ini: invalid size"),
            "{e}"
        );
        let dir_ini: BTreeMap<_, _> = [ini_key("baseline-dir", "/elsewhere")].into();
        let s = load_layers(dir.path(), &dir_ini, &BTreeMap::new()).unwrap();
        assert!(!s.baseline_dir_from_option);
    }

    #[test]
    fn memcheck_toml_wins() {
        let dir = root_with("memcheck.toml", "[memcheck]\nmeter = 'rss'\n");
        fs::write(
            dir.path().join("pyproject.toml"),
            "[tool.memcheck]\nmeter = 'python'\n",
        )
        .unwrap();
        assert_eq!(
            load(dir.path(), &BTreeMap::new()).unwrap().meter,
            MeterKind::Rss
        );
    }

    #[test]
    fn bad_values_name_file_line_column() {
        let dir = root_with("pyproject.toml", "[tool.memcheck]\nfloor = '12 parsecs'\n");
        let e = load(dir.path(), &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.ends_with("pyproject.toml:2:9: [tool.memcheck] floor: invalid size '12 parsecs': unknown unit 'parsecs' (write e.g. 123, 64 KiB, 1.5MB, 2 GiB)"), "{e}");
        let dir = root_with("pyproject.toml", "[tool.memcheck]\ntolerence = '5%'\n");
        let e = load(dir.path(), &BTreeMap::new()).unwrap_err().to_string();
        assert!(
            e.contains("pyproject.toml:2:1: [tool.memcheck]") && e.contains("tolerence"),
            "{e}"
        );
        let dir = root_with("pyproject.toml", "[tool.memcheck]\nstrict = 'yes'\n");
        let e = load(dir.path(), &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("pyproject.toml:2:10:"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let mut over = BTreeMap::new();
        over.insert("meter".to_string(), "valgrind".to_string());
        let e = load(dir.path(), &over).unwrap_err().to_string();
        assert_eq!(
            e,
            "--memcheck-meter: unknown meter 'valgrind' (choose from: python, tracemalloc, rss)"
        );
    }

    #[test]
    fn baseline_dir_must_stay_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let s = Settings::default();
        let rule = |e: Error| match e {
            Error::Refused { rule, message, .. } => {
                assert!(message.contains("allow-outside-root"), "{message}");
                rule
            }
            other => panic!("{other}"),
        };
        assert!(baseline_dir(root.path(), "baselines", &s).is_ok());
        assert!(baseline_dir(root.path(), "a/b/../c", &s).is_ok());
        for bad in ["../elsewhere", "a/../../x"] {
            let e = baseline_dir(root.path(), bad, &s).unwrap_err();
            assert!(
                e.to_string()
                    .contains("'..' leads outside the project root"),
                "{e}"
            );
            assert_eq!(rule(e), "no-parent");
        }
        let abs = outside.path().display().to_string();
        assert_eq!(
            rule(baseline_dir(root.path(), &abs, &s).unwrap_err()),
            "no-absolute"
        );
        // Windows needs a privilege to create symlinks; the check is the same code path.
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.path(), root.path().join("linked")).unwrap();
        #[cfg(windows)]
        if std::os::windows::fs::symlink_dir(outside.path(), root.path().join("linked")).is_err() {
            return;
        }
        let e = baseline_dir(root.path(), "linked", &s).unwrap_err();
        assert_eq!(rule(e), "no-symlink-out");
        let allowed = Settings {
            allow_outside_root: true,
            ..Settings::default()
        };
        assert!(baseline_dir(root.path(), "linked", &allowed).is_ok());
        let typed = Settings {
            baseline_dir_from_option: true,
            ..Settings::default()
        };
        assert!(baseline_dir(root.path(), &abs, &typed).is_ok());
    }

    #[test]
    fn placeholders() {
        assert_eq!(
            expand_dir(
                "b/{python}-{platform}",
                "3.11",
                "linux-x86_64",
                "cpython",
                "here"
            )
            .unwrap(),
            "b/3.11-linux-x86_64"
        );
        let e = expand_dir("b/{pyton}", "3.11", "l", "c", "here")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown placeholder '{pyton}'"), "{e}");
        // A value from a results file that would climb, root or nest is refused; one that the
        // template does not use is not looked at.
        for bad in ["../../../escaped", "/tmp", "a/b", "..", ""] {
            let e = expand_dir("b/{python}", bad, "l", "c", "ci.json environment")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("plain-placeholder") && e.contains("ci.json"),
                "{e}"
            );
            assert!(expand_dir("b/{platform}", bad, "l", "c", "x").is_ok());
        }
        assert!(expand_dir("b/{implementation}", "3.11", "l", "c/../..", "x").is_err());
    }
}
