//! Baselines as committed in git, read with libgit2 (no checkout, no network).

use std::path::{Path, PathBuf};

use git2::{ObjectType, Repository, Sort, TreeWalkMode, TreeWalkResult};

use crate::boundary::slashed;
use crate::error::{Error, Result};

/// A repository and a path prefix: where the baseline directory sits inside it.
pub struct Repo {
    repo: Repository,
    pub workdir: PathBuf,
}

fn git_error(what: impl Into<String>, e: git2::Error) -> Error {
    Error::usage(what, e.message().to_string())
}

impl Repo {
    /// The repository that holds `path`.
    pub fn discover(path: &Path) -> Result<Repo> {
        let repo = Repository::discover(path).map_err(|e| {
            Error::usage(
                "git",
                format!(
                    "{} is not inside a git repository ({})",
                    path.display(),
                    e.message()
                ),
            )
        })?;
        let workdir = repo
            .workdir()
            .ok_or_else(|| Error::usage("git", "a bare repository has no work tree"))?
            .canonicalize()
            .map_err(|e| Error::io(path, "resolve", e))?;
        Ok(Repo { repo, workdir })
    }

    /// An existing `path` relative to the repository root, with `/` separators.
    pub fn relative(&self, path: &Path) -> Result<String> {
        let abs = path
            .canonicalize()
            .map_err(|e| Error::io(path, "resolve", e))?;
        let rel = abs.strip_prefix(&self.workdir).map_err(|_| {
            Error::usage(
                path.display().to_string(),
                format!("is outside the repository at {}", self.workdir.display()),
            )
        })?;
        Ok(slashed(rel))
    }

    /// The commit a revision names, with an error that says how to get it.
    pub fn commit(&self, rev: &str) -> Result<git2::Commit<'_>> {
        let object = self.repo.revparse_single(rev).map_err(|e| {
            let unborn = matches!(self.repo.head(), Err(e) if e.code() == git2::ErrorCode::UnbornBranch);
            let hint = if unborn {
                "the repository has no commit yet: commit the baseline files, and compare with them from then on"
            } else if self.repo.is_shallow() {
                "this is a shallow clone: fetch the history (`git fetch --unshallow`, or `fetch-depth: 0` in actions/checkout)"
            } else if rev.contains('/') {
                "fetch it first, e.g. `git fetch origin main`"
            } else {
                "check the name with `git rev-parse`"
            };
            Error::usage(
                format!("git revision '{rev}'"),
                format!("not found ({}); {hint}", e.message()),
            )
        })?;
        object
            .peel_to_commit()
            .map_err(|e| git_error(format!("git revision '{rev}'"), e))
    }

    /// The text of `path` (relative to the root) at `rev`; None when it does not exist there.
    pub fn read_at(&self, rev: &str, path: &str) -> Result<Option<String>> {
        let tree = self.commit(rev)?.tree().map_err(|e| git_error("git", e))?;
        let entry = match tree.get_path(Path::new(path)) {
            Ok(entry) => entry,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(git_error(path.to_string(), e)),
        };
        let blob = entry
            .to_object(&self.repo)
            .and_then(|o| o.peel_to_blob())
            .map_err(|e| git_error(path.to_string(), e))?;
        String::from_utf8(blob.content().to_vec())
            .map(Some)
            .map_err(|_| Error::usage(format!("{path} at {rev}"), "is not valid UTF-8"))
    }

    /// Every `.toml` file under `dir` (relative to the root) at `rev`: (path under dir, text).
    pub fn files_at(&self, rev: &str, dir: &str) -> Result<Vec<(String, String)>> {
        let tree = self.commit(rev)?.tree().map_err(|e| git_error("git", e))?;
        let sub = match tree.get_path(Path::new(dir)) {
            Ok(entry) => entry
                .to_object(&self.repo)
                .and_then(|o| o.peel_to_tree())
                .map_err(|e| git_error(dir.to_string(), e))?,
            Err(_) => return Ok(Vec::new()),
        };
        let mut found = Vec::new();
        sub.walk(TreeWalkMode::PreOrder, |parent, entry| {
            let name = entry.name().unwrap_or_default();
            if entry.kind() == Some(ObjectType::Blob) && name.ends_with(".toml") {
                found.push((format!("{parent}{name}"), entry.id()));
            }
            TreeWalkResult::Ok
        })
        .map_err(|e| git_error(dir.to_string(), e))?;
        let mut out = Vec::new();
        for (path, id) in found {
            let blob = self
                .repo
                .find_blob(id)
                .map_err(|e| git_error(path.clone(), e))?;
            out.push((path, String::from_utf8_lossy(blob.content()).into_owned()));
        }
        out.sort();
        Ok(out)
    }

    /// The commits (newest first) whose version of `path` differs from their parent's, with the
    /// text at each: (short id, summary, seconds since epoch, text or None if deleted).
    #[allow(clippy::type_complexity)]
    pub fn history(&self, path: &str) -> Result<Vec<(String, String, i64, Option<String>)>> {
        let mut walk = self.repo.revwalk().map_err(|e| git_error("git", e))?;
        walk.push_head().map_err(|e| git_error("git HEAD", e))?;
        walk.set_sorting(Sort::TIME | Sort::TOPOLOGICAL)
            .map_err(|e| git_error("git", e))?;
        let blob_of = |commit: &git2::Commit<'_>| -> Option<git2::Oid> {
            commit
                .tree()
                .ok()?
                .get_path(Path::new(path))
                .ok()
                .map(|e| e.id())
        };
        let mut out = Vec::new();
        for oid in walk {
            let oid = oid.map_err(|e| git_error("git", e))?;
            let commit = self
                .repo
                .find_commit(oid)
                .map_err(|e| git_error("git", e))?;
            let now = blob_of(&commit);
            let before = commit.parent(0).ok().and_then(|p| blob_of(&p));
            if now == before {
                continue;
            }
            let text = match now {
                Some(id) => Some(
                    String::from_utf8_lossy(
                        self.repo
                            .find_blob(id)
                            .map_err(|e| git_error("git", e))?
                            .content(),
                    )
                    .into_owned(),
                ),
                None => None,
            };
            out.push((
                oid.to_string()[..10].to_string(),
                commit.summary().ok().flatten().unwrap_or("").to_string(),
                commit.time().seconds(),
                text,
            ));
        }
        Ok(out)
    }
}
