//! The one way out: every file the product writes — baselines (pytest and `memcheck update`),
//! results JSON, heap dumps, the GitHub step summary — goes through a [`Boundary`].
//!
//! A boundary is a base directory; a write names a path under it. Whatever part of that path
//! comes from data (a config value, a results file downloaded from CI, a node id) must stay under
//! the base. Refused, each with its own rule named in the error:
//!
//! - `no-parent`: a `..` that climbs above the base;
//! - `no-absolute`: an absolute path that is not under the base;
//! - `no-symlink-out`: a symlink on the way (or the file itself) that leads outside the base, or
//!   that leads nowhere (a dangling link would be followed by the write);
//! - `plain-name`: a file or directory name holding a control character (NUL, ESC, CR, LF...);
//! - `plain-placeholder`: a `{python}`, `{platform}` or `{implementation}` value that is not a
//!   plain name (`[A-Za-z0-9._-]+`, not `.` or `..`), checked where the template is filled.
//!
//! Which base is trusted is decided by the callers, visibly: the project root for everything
//! that comes from files ([`Boundary::project`]); the directory itself for a place the user typed
//! on the command line (`--memcheck-baseline-dir`, `--memcheck-json`, `--memcheck-dump`), set in
//! the config with `allow-outside-root = true`, or named by the CI runner (`GITHUB_STEP_SUMMARY`)
//! ([`Boundary::chosen`]). Even then the file names under it are checked.
//!
//! `..` is resolved physically, as the kernel does: after a symlink, `..` is the parent of the
//! link's target, not of the link. Writes are atomic: a temporary file created exclusively
//! (never through a planted link) in the same directory, synced, then renamed into place, so
//! readers see the old file or the new one, never a part, and an interrupted run leaves nothing.

use std::fs;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// The rule that refused a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Parent,
    Absolute,
    Symlink,
    Name,
    Placeholder,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Parent => "no-parent",
            Rule::Absolute => "no-absolute",
            Rule::Symlink => "no-symlink-out",
            Rule::Name => "plain-name",
            Rule::Placeholder => "plain-placeholder",
        }
    }
}

/// A directory that writes are kept under.
#[derive(Clone, Debug)]
pub struct Boundary {
    /// The base as given: absolute paths under it are accepted as they are written.
    base: PathBuf,
    /// The base resolved through symlinks: what "under" is checked against.
    real: PathBuf,
    /// What the base is, for messages (`the project root /p`).
    what: String,
}

impl Boundary {
    /// The project root: writes whose paths come from files (config, results, node ids).
    pub fn project(root: &Path) -> Result<Self> {
        Self::new(root, "the project root")
    }

    /// A directory the user (or the CI runner) chose: it may be anywhere, even a symlink or not
    /// yet created; only the names under it are checked.
    pub fn chosen(dir: &Path, what: &str) -> Result<Self> {
        Self::new(dir, what)
    }

    fn new(base: &Path, what: &str) -> Result<Self> {
        let base = if base.is_absolute() {
            base.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io(base, "resolve", e))?
                .join(base)
        };
        let real = resolve_prefix(&base)?;
        Ok(Boundary {
            what: format!("{what} {}", real.display()),
            base,
            real,
        })
    }

    /// The base directory, resolved.
    pub fn resolved(&self) -> &Path {
        &self.real
    }

    fn refuse(&self, rule: Rule, path: &Path, origin: &str, why: String) -> Error {
        Error::Refused {
            rule: rule.name(),
            path: path.to_path_buf(),
            message: format!("{origin}: {why}"),
        }
    }

    /// Where `path` (relative to the base, or absolute under it) really is, or the rule it
    /// breaks. `origin` names where the path came from, for the message.
    pub fn check(&self, path: &Path, origin: &str) -> Result<PathBuf> {
        let rel = if path.is_absolute() {
            match path
                .strip_prefix(&self.base)
                .or_else(|_| path.strip_prefix(&self.real))
            {
                Ok(rel) => rel.to_path_buf(),
                Err(_) => {
                    return Err(self.refuse(
                        Rule::Absolute,
                        path,
                        origin,
                        format!("an absolute path outside {}", self.what),
                    ))
                }
            }
        } else {
            path.to_path_buf()
        };
        let mut at = self.real.clone();
        let mut depth = 0usize;
        for part in rel.components() {
            match part {
                Component::CurDir => {}
                Component::ParentDir => {
                    if depth == 0 {
                        return Err(self.refuse(
                            Rule::Parent,
                            path,
                            origin,
                            format!("'..' leads outside {}", self.what),
                        ));
                    }
                    at.pop();
                    depth -= 1;
                }
                Component::Normal(name) => {
                    let text = name.to_string_lossy();
                    if let Some(c) = text.chars().find(|c| c.is_control()) {
                        return Err(Error::Refused {
                            rule: Rule::Name.name(),
                            path: path.to_path_buf(),
                            message: format!(
                                "{origin}: the name '{}' holds the control character {}",
                                crate::escape::terminal(&text),
                                crate::escape::terminal(&c.to_string())
                            ),
                        });
                    }
                    at.push(name);
                    depth += 1;
                    let is_link =
                        fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink());
                    if is_link {
                        let link = at.clone();
                        let Ok(target) = fs::canonicalize(&link) else {
                            return Err(self.refuse(
                                Rule::Symlink,
                                path,
                                origin,
                                format!(
                                    "the symlink {} leads nowhere (a write would create its target, maybe outside {})",
                                    link.display(),
                                    self.what
                                ),
                            ));
                        };
                        let Ok(below) = target.strip_prefix(&self.real) else {
                            return Err(self.refuse(
                                Rule::Symlink,
                                path,
                                origin,
                                format!(
                                    "the symlink {} points to {}, outside {}",
                                    link.display(),
                                    target.display(),
                                    self.what
                                ),
                            ));
                        };
                        depth = below.components().count();
                        at = target;
                    }
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.refuse(
                        Rule::Absolute,
                        path,
                        origin,
                        format!("an absolute path outside {}", self.what),
                    ))
                }
            }
        }
        Ok(at)
    }

    /// The file `path` names, checked, and refused when it is the base directory itself.
    fn file(&self, path: &Path, origin: &str) -> Result<PathBuf> {
        let target = self.check(path, origin)?;
        if target == self.real {
            return Err(Error::usage(
                origin,
                format!("{} is a directory, not a file", path.display()),
            ));
        }
        Ok(target)
    }

    /// Replace the file at `path` with `data`, atomically. Returns where it was written.
    pub fn write(&self, path: &Path, data: &[u8], origin: &str) -> Result<PathBuf> {
        let target = self.file(path, origin)?;
        write_atomic(&target, data)?;
        Ok(target)
    }

    /// Like [`Boundary::write`], but touch nothing when the file already holds exactly `data`
    /// (so an unchanged baseline keeps its bytes and its time stamp). Returns whether it wrote.
    pub fn write_if_changed(&self, path: &Path, data: &[u8], origin: &str) -> Result<bool> {
        let target = self.file(path, origin)?;
        if fs::read(&target).is_ok_and(|old| old == data) {
            return Ok(false);
        }
        write_atomic(&target, data)?;
        Ok(true)
    }

    /// Append `data` to the file at `path` (created if missing): the step summary, which the
    /// runner collects from one file per step.
    pub fn append(&self, path: &Path, data: &[u8], origin: &str) -> Result<()> {
        let target = self.file(path, origin)?;
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create directory", e))?;
        }
        fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&target)
            .and_then(|mut f| f.write_all(data))
            .map_err(|e| Error::io(&target, "write", e))
    }

    /// Remove the file at `path`.
    pub fn remove(&self, path: &Path, origin: &str) -> Result<()> {
        let target = self.file(path, origin)?;
        fs::remove_file(&target).map_err(|e| Error::io(&target, "remove", e))
    }
}

/// `path` resolved through symlinks as far as it exists; the rest appended as written.
fn resolve_prefix(path: &Path) -> Result<PathBuf> {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while fs::symlink_metadata(&existing).is_err() {
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
    for part in rest.iter().rev() {
        match Path::new(part).components().next() {
            Some(Component::ParentDir) => {
                resolved.pop();
            }
            Some(Component::CurDir) | None => {}
            _ => resolved.push(part),
        }
    }
    Ok(resolved)
}

/// Check a value about to fill a placeholder of a path template: a plain name, so that it names
/// one directory and cannot climb, root or nest. `origin` says where the value came from.
pub fn plain_name(value: &str, placeholder: &str, origin: &str) -> Result<()> {
    let plain = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain {
        return Ok(());
    }
    Err(Error::Refused {
        rule: Rule::Placeholder.name(),
        path: PathBuf::from(value),
        message: format!(
            "{origin}: the {{{placeholder}}} value '{}' is not a plain name ([A-Za-z0-9._-]+, not '.' or '..')",
            crate::escape::terminal(value)
        ),
    })
}

/// Replace `path` with `data` so that readers see the old or the new file, never a part. The
/// only place that creates files; callers reach it through a checked [`Boundary`].
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create directory", e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A leftover of a killed run with our pid; `create_new` below refuses to follow or reuse
    // whatever is there, so clear it first (removing a planted link removes only the link).
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, "write", e));
    }
    Ok(())
}

// The ways out are built with Unix symlinks.
/// A relative path as git and baseline names write it: `/`-separated, no leading `/`.
pub fn slashed(path: &Path) -> String {
    path.to_string_lossy()
        .replace('\\', "/")
        .trim_start_matches('/')
        .to_string()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn rule_of(e: Error) -> &'static str {
        match e {
            Error::Refused { rule, .. } => rule,
            other => panic!("not a refusal: {other}"),
        }
    }

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, Boundary) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let b = Boundary::project(root.path()).unwrap();
        (root, outside, b)
    }

    #[test]
    fn inside_writes_land_where_named() {
        let (root, _outside, b) = setup();
        let at = b
            .write(Path::new("baselines/t/test_a.toml"), b"x", "t")
            .unwrap();
        assert_eq!(at, b.resolved().join("baselines/t/test_a.toml"));
        assert_eq!(
            fs::read(root.path().join("baselines/t/test_a.toml")).unwrap(),
            b"x"
        );
        // Absolute under the root, as given or resolved; `..` that stays inside.
        let abs = root.path().join("baselines/x.toml");
        b.write(&abs, b"y", "t").unwrap();
        assert!(b.check(Path::new("a/b/../c"), "t").is_ok());
        assert!(b.check(Path::new("."), "t").is_ok());
        let names: Vec<_> = fs::read_dir(root.path().join("baselines"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }

    #[test]
    fn each_way_out_is_refused_by_its_rule() {
        let (root, outside, b) = setup();
        let out = outside.path().display().to_string();
        let cases: Vec<(String, &str)> = vec![
            ("../x.toml".into(), "no-parent"),
            ("a/../../x.toml".into(), "no-parent"),
            (format!("{out}/x.toml"), "no-absolute"),
            ("a/\u{1b}[2J.toml".into(), "plain-name"),
            ("a/b\nc.toml".into(), "plain-name"),
        ];
        for (path, rule) in cases {
            let e = b.write(Path::new(&path), b"x", "t").unwrap_err();
            let text = e.to_string();
            assert_eq!(rule_of(e), rule, "{path}: {text}");
            assert!(text.contains("t: "), "{text}");
        }
        // A symlink out, as a directory, as the file itself, or dangling.
        symlink(outside.path(), root.path().join("linked")).unwrap();
        symlink(outside.path().join("f.toml"), root.path().join("file.toml")).unwrap();
        fs::write(outside.path().join("f.toml"), "keep").unwrap();
        symlink(root.path().join("nowhere"), root.path().join("dangling")).unwrap();
        for path in ["linked/x.toml", "file.toml", "dangling/x.toml", "dangling"] {
            let e = b.write(Path::new(path), b"x", "t").unwrap_err();
            let text = e.to_string();
            assert_eq!(rule_of(e), "no-symlink-out", "{path}: {text}");
            assert!(text.contains("symlink"), "{text}");
        }
        // `..` after a symlink is the parent of its target, as for the kernel.
        fs::create_dir(outside.path().join("sub")).unwrap();
        symlink(outside.path().join("sub"), root.path().join("in")).unwrap();
        assert_eq!(
            rule_of(b.check(Path::new("in/../x"), "t").unwrap_err()),
            "no-symlink-out"
        );
        assert_eq!(
            fs::read_to_string(outside.path().join("f.toml")).unwrap(),
            "keep"
        );
        let left: Vec<_> = fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "nothing written outside: {left:?}");
        // The negative control: a symlink that stays inside is followed.
        fs::create_dir(root.path().join("real")).unwrap();
        symlink(root.path().join("real"), root.path().join("alias")).unwrap();
        b.write(Path::new("alias/x.toml"), b"ok", "t").unwrap();
        assert_eq!(fs::read(root.path().join("real/x.toml")).unwrap(), b"ok");
    }

    #[test]
    fn a_chosen_directory_may_be_anywhere_but_names_under_it_are_checked() {
        let outside = tempfile::tempdir().unwrap();
        let dir = outside.path().join("dumps/new");
        let b = Boundary::chosen(&dir, "the --memcheck-dump directory").unwrap();
        b.write(Path::new("a.svg"), b"<svg/>", "dump").unwrap();
        assert!(dir.join("a.svg").exists());
        let e = b.write(Path::new("../a.svg"), b"x", "dump").unwrap_err();
        assert!(
            e.to_string().contains("the --memcheck-dump directory"),
            "{e}"
        );
        assert_eq!(rule_of(e), "no-parent");
        assert!(b.write(Path::new(""), b"x", "dump").is_err());
    }

    #[test]
    fn unchanged_files_keep_their_bytes_and_appends_append() {
        let (root, _o, b) = setup();
        let p = Path::new("b/t.toml");
        assert!(b.write_if_changed(p, b"same", "t").unwrap());
        let stamp = fs::metadata(root.path().join(p))
            .unwrap()
            .modified()
            .unwrap();
        assert!(!b.write_if_changed(p, b"same", "t").unwrap());
        assert_eq!(
            fs::metadata(root.path().join(p))
                .unwrap()
                .modified()
                .unwrap(),
            stamp
        );
        b.append(Path::new("s.md"), b"a", "t").unwrap();
        b.append(Path::new("s.md"), b"b", "t").unwrap();
        assert_eq!(fs::read(root.path().join("s.md")).unwrap(), b"ab");
        b.remove(p, "t").unwrap();
        assert!(!root.path().join(p).exists());
        assert!(b.remove(Path::new("../x"), "t").is_err());
    }

    #[test]
    fn a_planted_temporary_link_is_not_followed() {
        let (root, outside, b) = setup();
        let victim = outside.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        fs::create_dir(root.path().join("d")).unwrap();
        let tmp = root
            .path()
            .join(format!("d/.t.toml.{}.tmp", std::process::id()));
        symlink(&victim, &tmp).unwrap();
        b.write(Path::new("d/t.toml"), b"new", "t").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs::read(root.path().join("d/t.toml")).unwrap(), b"new");
    }

    #[test]
    fn placeholder_values_must_be_plain_names() {
        for good in [
            "3.11",
            "3.13t",
            "linux-x86_64",
            "macosx-14.0-arm64",
            "cpython",
            "win_amd64",
        ] {
            assert!(plain_name(good, "python", "t").is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../../escaped",
            "a/b",
            "a\\b",
            "/abs",
            "x\u{0}",
            "x y",
            "ü",
        ] {
            let e = plain_name(bad, "python", "results.json environment.python").unwrap_err();
            let text = e.to_string();
            assert_eq!(rule_of(e), "plain-placeholder", "{bad}");
            assert!(
                text.contains("{python}") && text.contains("results.json"),
                "{text}"
            );
        }
    }
}
