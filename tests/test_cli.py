"""The `memcheck` command and `--memcheck-ref`, on real git repositories (SPEC §7)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import git, memcheck

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

SUITE = """
import os

def test_alloc():
    bytearray(int(os.environ.get("ALLOC", str(1 << 20))))

def test_other():
    bytearray(int(os.environ.get("OTHER", "1000")))
"""


@pytest.fixture
def repo(project, monkeypatch):
    """A git repository with three commits of baselines: 1 MiB, 2 MiB, then 3 MiB for test_alloc."""
    project.pytester.makepyfile(test_suite=SUITE)
    git(project.path, "init", "-q", "-b", "main")
    for size in (1, 2, 3):
        monkeypatch.setenv("ALLOC", str(size << 20))
        assert project.run("--memcheck-update").ret == 0
        git(project.path, "add", "-A")
        git(project.path, "commit", "-q", "-m", f"alloc {size} MiB")
    monkeypatch.delenv("ALLOC")
    return project


def test_show(repo):
    result = memcheck(repo.path, "show")
    assert result.returncode == 0, result.stderr
    assert "test_suite.py::test_alloc" in result.stdout and "3.00 MiB" in result.stdout
    assert "2 baselines in 1 file\n" in result.stdout
    result = memcheck(repo.path, "show", "--ref", "HEAD~2")
    assert "1.00 MiB" in result.stdout and "3.00 MiB" not in result.stdout


def test_diff_between_revisions_and_the_work_tree(repo, monkeypatch):
    result = memcheck(repo.path, "diff", "HEAD~2", "HEAD")
    assert result.returncode == 0, result.stderr
    assert "test_suite.py::test_alloc" in result.stdout
    assert "1.00 MiB → 3.00 MiB (+2.00 MiB +200.0%)" in result.stdout
    assert "1 baseline changed" in result.stdout
    result = memcheck(repo.path, "diff", "HEAD~1", "HEAD", "--format", "markdown")
    assert result.stdout.splitlines()[0].startswith("| test")
    assert "2.00 MiB → 3.00 MiB" in result.stdout
    assert memcheck(repo.path, "diff").stdout == "no baseline changed\n"
    monkeypatch.setenv("OTHER", str(5 << 20))
    assert repo.run("--memcheck-update").ret == 0
    result = memcheck(repo.path, "diff")  # HEAD against the work tree
    assert "test_suite.py::test_other" in result.stdout and "5.00 MiB" in result.stdout


def test_log_follows_a_test_through_history(repo):
    result = memcheck(repo.path, "log", "test_suite.py::test_alloc")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if "alloc " in line and "MiB" in line].__len__() == 3
    assert result.stdout.index("alloc 1 MiB") < result.stdout.index("alloc 3 MiB")
    assert "peak over time: ▁▄█" in result.stdout
    result = memcheck(repo.path, "log", "test_suite.py::test_missing")
    assert result.returncode == 1
    assert "no baseline of test_suite.py::test_missing" in result.stderr


def test_update_from_ci_results_merges_shards(repo, monkeypatch):
    monkeypatch.setenv("ALLOC", str(6 << 20))
    monkeypatch.setenv("OTHER", str(2 << 20))
    # Two shards of a CI matrix, each with its own results file.
    repo.run("--memcheck", "--memcheck-json=shard1.json", "-k", "alloc")
    repo.run("--memcheck", "--memcheck-json=shard2.json", "-k", "other")
    check = memcheck(repo.path, "check", "--from", "shard1.json", "shard2.json")
    assert check.returncode == 1
    assert "FAILED test_suite.py::test_alloc" in check.stdout
    assert "FAILED test_suite.py::test_other" in check.stdout
    # From results files, the hint that accepts them is the CLI's own; it is followed here.
    hint = "accept these values: memcheck update --from shard1.json shard2.json"
    assert hint in check.stdout
    result = memcheck(repo.path, *hint.split(": ", 1)[1].split()[1:])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wrote baselines/test_suite.toml: 2 updated" in result.stdout
    shown = memcheck(repo.path, "show").stdout
    assert "6.00 MiB" in shown and "2.00 MiB" in shown
    # The accepted values pass the gate now.
    assert repo.run("--memcheck").ret == 0
    # Overlapping shards are refused.
    result = memcheck(repo.path, "update", "--from", "shard1.json", "shard1.json")
    assert result.returncode == 2 and "shards must not overlap" in result.stderr


def test_update_re_records_another_environment_as_pytest_does(repo, monkeypatch):
    monkeypatch.setenv("ALLOC", str(6 << 20))
    baseline = repo.path / "baselines" / "test_suite.toml"
    for name, args in (("partial.json", ("-k", "alloc")), ("ci.json", ())):
        repo.run("--memcheck", f"--memcheck-json={name}", *args)
        data = json.loads((repo.path / name).read_text())
        data["environment"]["platform"] = "macosx-14-arm64"
        (repo.path / name).write_text(json.dumps(data))
    before = baseline.read_text()
    # a partial run's results do not replace another environment's file unless told
    result = memcheck(repo.path, "update", "--from", "partial.json")
    assert result.returncode == 2
    assert "not rewritten by a partial run" in result.stdout
    assert baseline.read_text() == before
    # a complete run's do, and say so, as `pytest --memcheck-update` on a complete run does
    result = memcheck(repo.path, "update", "--from", "ci.json")
    assert result.returncode == 0, result.stdout
    assert "re-recorded: was" in result.stdout
    assert "macosx-14-arm64" in baseline.read_text()
    (repo.path / "baselines" / "test_suite.toml").write_text(before)
    result = memcheck(repo.path, "update", "--from", "partial.json", "--accept-environment")
    assert result.returncode == 0, result.stdout
    assert "macosx-14-arm64" in baseline.read_text()
    # pytest's update on a complete run says the same of a file from elsewhere
    baseline.write_text(before.replace('platform = "', 'platform = "elsewhere-'))
    result = repo.run("--memcheck-update")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*test_suite.toml: re-recorded: was*elsewhere-*"])


def test_check_passes_clean_results_and_rejects_foreign_files(repo):
    repo.run("--memcheck", "--memcheck-json=ok.json")
    assert memcheck(repo.path, "check", "--from", "ok.json").returncode == 0
    (repo.path / "bad.json").write_text('{"schema": "something else"}')
    result = memcheck(repo.path, "check", "--from", "bad.json")
    assert result.returncode == 2 and "bad.json:1:" in result.stderr
    assert memcheck(repo.path, "check").returncode == 2  # --from is required


def test_memcheck_ref_reads_baselines_from_git(repo, monkeypatch):
    monkeypatch.setenv("ALLOC", str(2 << 20))
    # HEAD says 3 MiB (2 MiB is an improvement); HEAD~2 says 1 MiB (2 MiB is over).
    assert repo.run("--memcheck", "--memcheck-ref=HEAD").ret == 0
    result = repo.run("--memcheck", "--memcheck-ref=HEAD~2")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*baseline 1.00 MiB*"])
    # The work tree's files are not what was judged, and are left alone.
    assert "3145" in (repo.path / "baselines" / "test_suite.toml").read_text()
    result = repo.run("--memcheck", "--memcheck-ref=origin/main")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*git revision 'origin/main'*not found*git fetch origin main*"])
    result = repo.run("--memcheck-update", "--memcheck-ref=HEAD")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_memcheck_ref_in_a_shallow_clone_says_how_to_fetch(repo, tmp_path):
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo.path}", str(clone))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:randomly",
            "--memcheck",
            "--memcheck-ref=HEAD~2",
        ],
        cwd=clone,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "shallow clone" in result.stderr and "fetch-depth: 0" in result.stderr


def test_the_cli_finds_the_project_root_from_a_subfolder_as_pytest_does(repo):
    sub = repo.path / "docs" / "deep"
    sub.mkdir(parents=True)
    (repo.path / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    result = memcheck(sub, "show")
    assert result.returncode == 0, result.stderr
    assert "test_suite.py::test_alloc" in result.stdout
    assert memcheck(sub, "log", "test_suite.py::test_alloc").returncode == 0
    # The negative control: a root given explicitly where there are no baselines finds none,
    # and says so with a non-zero status instead of an empty table.
    empty = memcheck(sub, "--root", str(sub), "show")
    assert empty.returncode == 1
    assert "no baselines in baselines" in empty.stderr
    assert "pytest --memcheck-update" in empty.stderr


def test_unknown_ids_and_empty_results_exit_non_zero(repo, tmp_path):
    unknown = memcheck(repo.path, "log", "test_suite.py::test_nope")
    assert unknown.returncode == 1
    assert "no baseline of test_suite.py::test_nope" in unknown.stderr
    assert "node ids look like tests/test_io.py::test_read" in unknown.stderr
    # a bare test name is not an id, and the ids it could mean are offered
    bare = memcheck(repo.path, "log", "test_alloc")
    assert bare.returncode == 1
    assert "(did you mean test_suite.py::test_alloc?)" in bare.stderr, bare.stderr
    known = memcheck(repo.path, "log", "test_suite.py::test_alloc")
    assert known.returncode == 0
    results = tmp_path / "empty.json"
    assert repo.run("--memcheck", "--memcheck-json", str(results), "-k", "nothing_matches").ret == 5
    empty = memcheck(repo.path, "check", "--from", str(results))
    assert empty.returncode == 1, empty.stdout + empty.stderr
    assert "no test results" in empty.stderr


def _on_a_terminal(cwd, columns: int, *args: str) -> str:
    """The CLI's output when its standard output is a terminal `columns` wide."""
    import pty

    main, child = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_memcheck.cli", *args],
        cwd=cwd,
        stdout=child,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=30)
    os.close(main)
    return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.mark.skipif(sys.platform == "win32", reason="no pseudo-terminals")
def test_cli_tables_fit_the_terminal(repo):
    narrow = _on_a_terminal(repo.path, 60, "show")
    table = [line for line in narrow.splitlines() if line.startswith(("┌", "│", "└"))]
    assert table and all(len(line) <= 60 for line in table), narrow
    assert "test_suite.py::test_alloc" in narrow  # node ids are never wrapped
    wide = _on_a_terminal(repo.path, 200, "show")
    assert max(len(line) for line in wide.splitlines()) > 60
    # Piped, the same table is not wrapped whatever COLUMNS says: one line per row.
    piped = memcheck(repo.path, "show")
    rows = [line for line in piped.stdout.splitlines() if "test_suite.py::" in line]
    assert len(rows) == 2 and all("MiB" in row or "KiB" in row or " B " in row for row in rows)


def test_update_from_results_writes_where_the_run_read(project, monkeypatch):
    # A CI run given --memcheck-baseline-dir on pytest's command line: accepting its values
    # into the project's default directory would write files it was never compared with.
    project.pytester.makepyfile(test_suite=SUITE)
    dirs = ("--memcheck-baseline-dir=ci-baselines",)
    assert project.run("--memcheck-update", *dirs).ret == 0
    monkeypatch.setenv("ALLOC", str(3 << 20))
    summary = project.path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = project.run("--memcheck", *dirs, "--memcheck-json", "r.json")
    monkeypatch.delenv("GITHUB_ACTIONS")
    assert result.ret == 1
    # both hints name the directory: the step summary's and `memcheck check`'s
    assert "memcheck update --from r.json --baseline-dir ci-baselines" in summary.read_text()
    check = memcheck(project.path, "check", "--from", "r.json")
    hint = "accept these values: memcheck update --from r.json --baseline-dir ci-baselines"
    assert hint in check.stdout, check.stdout
    before = (project.path / "ci-baselines" / "test_suite.toml").read_text()
    refused = memcheck(project.path, "update", "--from", "r.json")
    assert refused.returncode == 2
    assert (
        "r.json was measured against baseline-dir 'ci-baselines', and this project's settings say "
        "'baselines'; nothing was written. To write where that run read, add --baseline-dir "
        "ci-baselines" in refused.stderr
    ), refused.stderr
    assert not (project.path / "baselines").exists()
    assert (project.path / "ci-baselines" / "test_suite.toml").read_text() == before
    # the command the hint gives accepts them, and the gate passes with what it wrote
    accepted = memcheck(
        project.path, "update", "--from", "r.json", "--baseline-dir", "ci-baselines"
    )
    assert accepted.returncode == 0, accepted.stderr
    assert not (project.path / "baselines").exists()
    assert project.run("--memcheck", *dirs).ret == 0


def test_diff_in_a_repository_without_commits_says_what_to_do(project):
    project.pytester.makepyfile(test_suite=SUITE)
    git(project.path, "init", "-q", "-b", "main")
    assert project.run("--memcheck-update").ret == 0
    result = memcheck(project.path, "diff")
    assert result.returncode == 2
    assert "the repository has no commit yet: commit the baseline files" in result.stderr, (
        result.stderr
    )
    git(project.path, "add", "-A")
    git(project.path, "commit", "-q", "-m", "baselines")
    assert memcheck(project.path, "diff").stdout == "no baseline changed\n"
