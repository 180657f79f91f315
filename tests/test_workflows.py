"""Our GitHub workflow and composite action are clean under actionlint and zizmor (SPEC §7)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GITHUB = ROOT / ".github"
ACTION = GITHUB / "actions" / "memcheck" / "action.yml"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (./tasks.sh test installs it)")
    return path


def run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def test_actionlint_is_clean():
    workflows = sorted(str(p) for p in (GITHUB / "workflows").glob("*.yml"))
    assert workflows
    result = run(tool("actionlint"), *workflows)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_is_clean():
    result = run(tool("zizmor"), "--offline", str(GITHUB))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_zizmor_would_catch_an_injection(tmp_path):
    """The check above can fail: an untrusted expression inside run: is a finding."""
    bad = tmp_path / ".github" / "workflows"
    bad.mkdir(parents=True)
    (bad / "bad.yml").write_text(
        "on: pull_request_target\n"
        "permissions: {}\n"
        "jobs:\n"
        "  x:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n"
    )
    result = run(tool("zizmor"), "--offline", str(tmp_path / ".github"), cwd=tmp_path)
    assert result.returncode != 0
    assert "template-injection" in result.stdout + result.stderr


def run_scripts(text: str) -> list[str]:
    """The `run:` scripts of an action: `run: |` blocks and one-line `run:` values."""
    blocks = re.findall(r"run: \|\n((?:\s{8}.*\n|\n)+)", text)
    return blocks + re.findall(r"run: ([^|\n].*)", text)


def test_no_expression_inside_run_blocks_of_the_action():
    text = ACTION.read_text()
    scripts = run_scripts(text)
    assert len(scripts) >= 4, "the action runs its steps"
    for script in scripts:
        assert "${{" not in script, script
    assert sorted(re.findall(r"uses: [^.\s][^@\s]*@([0-9a-f]+)", text)) == [
        "5a3ec84eff668545956fd18022155c47e93e2684",  # actions/cache v4.2.3
        "ea165f8d65b6e75b540449e92b4886f43607fa02",  # actions/upload-artifact v4.6.2
    ], "actions are pinned to commit SHAs"
    # Negative control: an expression in a one-line run: is found.
    assert any("${{" in s for s in run_scripts("      run: echo ${{ inputs.x }}\n"))
    assert any("${{" in s for s in run_scripts("      run: |\n        echo ${{ inputs.x }}\n"))


WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))


def workflow_problems(text: str) -> list[str]:
    """Unpinned actions, missing version comments or top-level permissions, checkouts that keep
    their credentials."""
    problems = []
    for action, comment in re.findall(r"uses: ([^\s#]+)(.*)", text):
        if action.startswith("./"):
            continue
        if not re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", action):
            problems.append(f"{action}: not pinned to a commit SHA")
        elif not re.fullmatch(r" # v\d+(\.\d+)*", comment):
            problems.append(f"{action}: no version comment")
    if not re.search(r"^permissions:", text, re.M):
        problems.append("no top-level permissions")
    if text.count("persist-credentials: false") != text.count("actions/checkout@"):
        problems.append("a checkout keeps its credentials")
    return problems


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflows_pin_actions_and_keep_least_privilege(path):
    assert "uses: " in path.read_text()
    assert workflow_problems(path.read_text()) == []


def test_workflow_check_can_fail():
    bad = (
        "on: push\njobs:\n  x:\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "      - uses: actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065\n"
    )
    assert workflow_problems(bad) == [
        "actions/checkout@v4: not pinned to a commit SHA",
        "actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065: no version comment",
        "no top-level permissions",
        "a checkout keeps its credentials",
    ]


def test_release_builds_every_platform_and_publishes_by_trusted_publishing():
    text = (GITHUB / "workflows" / "release.yml").read_text()
    assert "INTERPRETERS: 3.9 3.10 3.11 3.12 3.13 3.14" in text
    for where in ("target: x86_64", "target: aarch64", "manylinux: auto", "macos-", "windows-"):
        assert where in text, where
    assert "command: sdist" in text
    assert "id-token: write" in text and "password" not in text
    assert "permissions: {}" in text
