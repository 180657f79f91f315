"""Shared helpers: every scenario is a real pytest run of small test files, in a subprocess."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # ./tasks.sh matrix installs tomli on 3.9 and 3.10
    import tomli as tomllib

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Our own CI sets CI=true, which makes --memcheck-update refuse; scenarios opt in explicitly.
    for name in ("CI", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Our scenarios build state in their pytester directories: they cannot run twice, so the gate
    # that measures our own suite must not re-run them to confirm or warm up.
    for item in items:
        item.add_marker(pytest.mark.memcheck(confirm=False))


# pytest-asyncio warns at start when its fixture loop scope is unset, which `-W error` scenarios
# would turn into an error that is not ours.
ASYNCIO = (
    ("-o", "asyncio_default_fixture_loop_scope=function")
    if importlib.util.find_spec("pytest_asyncio")
    else ()
)


class Project:
    """A pytester project with helpers to run pytest on it and read its baseline files."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.path = Path(pytester.path)

    def run(self, *args: str) -> pytest.RunResult:
        # pytest-memray measures the tests with its markers (limit_memory, ...) whenever it is
        # installed; our scenarios use those markers for pytest-memcheck alone.
        return self.pytester.runpytest_subprocess(
            "-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:memray", *ASYNCIO, *args
        )

    def baselines(self, name: str, dir: str = "baselines") -> dict:
        with open(self.path / dir / name, "rb") as f:
            return tomllib.load(f)

    def text(self, name: str, dir: str = "baselines") -> str:
        return (self.path / dir / name).read_text()


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    return Project(pytester)


def outcomes(result: pytest.RunResult) -> dict[str, int]:
    return result.parseoutcomes()


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def git(cwd: Path, *args: str) -> str:
    """A git command in `cwd` with a fixed identity; its stdout."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout


def memcheck(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The `memcheck` command in `cwd`, as this interpreter runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_memcheck.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
