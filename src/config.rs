//! Settings: `[tool.memcheck]` in pyproject.toml or `[memcheck]` in memcheck.toml, overridden by
//! `--memcheck-*` options. Every key has one option; both are resolved here, in one place, and a
//! bad value names where it came from (the option, or file:line:column).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::baseline::toml_error;
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
            allow_outside_root: false,
            baseline_dir_from_option: false,
            source: None,
        }
    }
}

/// Option names as the user types them, keyed by setting.
pub const OPTIONS: [(&str, &str); 7] = [
    ("tolerance", "--memcheck-tolerance"),
    ("floor", "--memcheck-floor"),
    ("baseline-dir", "--memcheck-baseline-dir"),
    ("meter", "--memcheck-meter"),
    ("strict", "--memcheck-strict"),
    ("confirm", "--memcheck-confirm"),
    ("gate-cycles", "--memcheck-gate-cycles"),
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
    let mut s = Settings::default();
    let memcheck_toml = root.join("memcheck.toml");
    let pyproject = root.join("pyproject.toml");
    if memcheck_toml.is_file() {
        apply_file(&mut s, &memcheck_toml, "[memcheck]", |text| {
            toml::from_str::<MemcheckToml>(text).map(|t| t.memcheck)
        })?;
    } else if pyproject.is_file() {
        apply_file(&mut s, &pyproject, "[tool.memcheck]", |text| {
            toml::from_str::<Pyproject>(text).map(|p| p.tool.and_then(|t| t.memcheck))
        })?;
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
        _ => return Err(Error::usage(origin, "unknown setting")),
    }
    Ok(())
}

fn apply_file(
    s: &mut Settings,
    path: &Path,
    table: &str,
    parse: impl Fn(&str) -> std::result::Result<Option<FileSettings>, toml::de::Error>,
) -> Result<()> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
    let file = match parse(&text) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(()),
        Err(e) => {
            let mut err = toml_error(path, &text, &e);
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
        Error::at_offset(path, &text, span.start, format!("{table} {key}: {message}"))
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
    s.allow_outside_root = file.allow_outside_root.unwrap_or(s.allow_outside_root);
    Ok(())
}

/// The baseline directory `root/template`, refused when it resolves outside `root` (a `..`, an
/// absolute path, or a symlink pointing elsewhere) unless the config allows it: baselines are
/// written there, and a checkout must not be able to aim those writes at the rest of the disk.
pub fn baseline_dir(root: &Path, expanded: &str, settings: &Settings) -> Result<PathBuf> {
    let dir = root.join(expanded);
    if settings.allow_outside_root || settings.baseline_dir_from_option {
        return Ok(dir);
    }
    let real_root = root
        .canonicalize()
        .map_err(|e| Error::io(root, "resolve", e))?;
    // `..` first, lexically; then symlinks, through the longest prefix that exists.
    let mut lexical = real_root.clone();
    for part in Path::new(expanded).components() {
        match part {
            std::path::Component::Normal(p) => lexical.push(p),
            std::path::Component::ParentDir => {
                lexical.pop();
            }
            std::path::Component::RootDir | std::path::Component::Prefix(_) => {
                lexical = PathBuf::from(part.as_os_str())
            }
            std::path::Component::CurDir => {}
        }
    }
    let mut existing = lexical.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut resolved = existing
        .canonicalize()
        .map_err(|e| Error::io(&existing, "resolve", e))?;
    resolved.extend(rest.iter().rev());
    if !resolved.starts_with(&real_root) {
        return Err(Error::usage(
            "baseline-dir",
            format!(
                "'{expanded}' resolves to {}, outside the project root {}; set allow-outside-root = true in [tool.memcheck] if that is intended",
                resolved.display(),
                real_root.display()
            ),
        ));
    }
    Ok(dir)
}

/// Fill the placeholders of a baseline directory template.
pub fn expand_dir(
    template: &str,
    python: &str,
    platform: &str,
    implementation: &str,
) -> Result<String> {
    let out = template
        .replace("{python}", python)
        .replace("{platform}", platform)
        .replace("{implementation}", implementation);
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
        assert!(baseline_dir(root.path(), "baselines", &s).is_ok());
        assert!(baseline_dir(root.path(), "a/b/../c", &s).is_ok());
        for bad in ["../elsewhere", "a/../../x"] {
            let e = baseline_dir(root.path(), bad, &s).unwrap_err().to_string();
            assert!(e.contains("outside the project root"), "{e}");
        }
        let abs = outside.path().display().to_string();
        assert!(baseline_dir(root.path(), &abs, &s).is_err());
        // Windows needs a privilege to create symlinks; the check is the same code path.
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.path(), root.path().join("linked")).unwrap();
        #[cfg(windows)]
        if std::os::windows::fs::symlink_dir(outside.path(), root.path().join("linked")).is_err() {
            return;
        }
        let e = baseline_dir(root.path(), "linked", &s)
            .unwrap_err()
            .to_string();
        assert!(e.contains("allow-outside-root"), "{e}");
        let allowed = Settings {
            allow_outside_root: true,
            ..Settings::default()
        };
        assert!(baseline_dir(root.path(), "linked", &allowed).is_ok());
    }

    #[test]
    fn placeholders() {
        assert_eq!(
            expand_dir("b/{python}-{platform}", "3.11", "linux-x86_64", "cpython").unwrap(),
            "b/3.11-linux-x86_64"
        );
        let e = expand_dir("b/{pyton}", "3.11", "l", "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown placeholder '{pyton}'"), "{e}");
    }
}
