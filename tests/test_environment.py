"""Runs in different interpreter modes are told apart: like is compared with like (SPEC §5, §9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_memcheck

try:  # imported here, not inside a measured test
    import jsonschema
except ImportError:
    jsonschema = None
try:
    import numpy
except ImportError:
    numpy = None
try:
    import xdist
except ImportError:
    xdist = None

SCHEMA = Path(pytest_memcheck.__file__).with_name("results.schema.json")

# Allocates far more under -X dev: compared with a normal run's baseline it would be `over`.
MODAL = """
import sys

def test_alloc():
    data = bytearray(4_000_000 if sys.flags.dev_mode else 100_000)
    assert data is not None
"""


def mode_of(*flags: str, **env: str) -> str:
    """environment.mode() in a fresh interpreter started with these flags and variables."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONDEVMODE", "PYTHONMALLOC")}
    result = subprocess.run(
        [
            sys.executable,
            *flags,
            "-c",
            "from pytest_memcheck import environment as e; print(e.mode())",
        ],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.mark.skipif(
    hasattr(sys, "gettotalrefcount") or sys.flags.dev_mode, reason="needs a normal release build"
)
def test_mode_names_what_changes_the_figures():
    assert mode_of() == ""
    assert mode_of("-X", "dev") == "dev"
    assert mode_of(PYTHONDEVMODE="1") == "dev"
    assert mode_of(PYTHONMALLOC="malloc") == "pythonmalloc=malloc"
    assert mode_of(PYTHONMALLOC="debug") == "pythonmalloc=pymalloc_debug"
    assert mode_of("-X", "dev", PYTHONMALLOC="malloc") == "dev+pythonmalloc=malloc"
    # The build's default allocator named explicitly is the normal mode.
    assert mode_of(PYTHONMALLOC="pymalloc") == ""
    # -E: CPython ignores PYTHON* variables, and so does the mode.
    assert mode_of("-E", PYTHONMALLOC="malloc") == ""


@pytest.mark.parametrize(
    "flags, env",
    [
        ((), {}),
        (("-X", "dev"), {}),
        ((), {"PYTHONMALLOC": "malloc"}),
        ((), {"PYTHONMALLOC": "debug"}),
        ((), {"PYTHONMALLOC": "malloc_debug"}),
        (("-X", "dev"), {"PYTHONMALLOC": "malloc"}),
        (("-E",), {"PYTHONMALLOC": "malloc"}),
    ],
)
def test_mode_agrees_with_the_allocator_cpython_reports(flags, env):
    """Where CPython's test module names the allocator in use (3.9–3.12), the mode matches it."""
    probe = "import _testcapi; print(_testcapi.pymem_getallocatorsname())"
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONDEVMODE", "PYTHONMALLOC")}

    def allocator_of(*flags: str, **env: str) -> str:
        result = subprocess.run(
            [sys.executable, *flags, "-c", probe],
            env={**clean, **env},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip("this CPython does not name its allocator (_testcapi)")
        return result.stdout.strip()

    allocator = allocator_of(*flags, **env)
    mode = mode_of(*flags, **env).split("+")
    named = [m.split("=", 1)[1] for m in mode if m.startswith("pythonmalloc=")]
    if named:
        assert named == [allocator]
    elif "dev" in mode or "debug-build" in mode:
        assert allocator.endswith("_debug")
    else:
        assert allocator == allocator_of()  # the build's default: a normal run


def test_dev_mode_run_against_normal_baselines_is_env_mismatch_not_over(project, monkeypatch):
    project.pytester.makepyfile(test_modal=MODAL)
    monkeypatch.delenv("PYTHONDEVMODE", raising=False)
    monkeypatch.delenv("PYTHONMALLOC", raising=False)
    assert project.run("--memcheck-update").ret == 0
    # A normal run writes no mode key: files recorded before it existed stay byte-identical.
    assert "mode" not in project.text("test_modal.toml")
    assert "mode" not in project.baselines("test_modal.toml")["memcheck"]

    # Negative control: the same mode is judged (and a real regression there is caught).
    result = project.run("--memcheck")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*1 measured: 1 ok*"])

    # -X dev against normal baselines: reported as env-mismatch, not judged, not a false `over`.
    monkeypatch.setenv("PYTHONDEVMODE", "1")
    result = project.run("--memcheck", "--memcheck-json=dev.json")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*1 measured: 1 env-mismatch*"])
    result.stdout.no_fnmatch_line("*over budget*")
    results = json.loads((project.path / "dev.json").read_text())
    assert results["environment"]["mode"] == "dev"
    assert [t["outcome"] for t in results["tests"]] == ["env-mismatch"]
    if jsonschema is not None:
        jsonschema.validate(results, json.loads(SCHEMA.read_text()))
    # Strict mode fails it, as any other environment's baseline.
    assert project.run("--memcheck", "--memcheck-strict").ret == 1

    # Re-recorded under -X dev, the header says so, and the dev run is judged again.
    assert project.run("--memcheck-update").ret == 0
    assert project.baselines("test_modal.toml")["memcheck"]["mode"] == "dev"
    assert project.baselines("test_modal.toml")["test_alloc"]["peak"] >= 4_000_000
    result = project.run("--memcheck")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*1 measured: 1 ok*"])

    # And now a normal run is the other environment.
    monkeypatch.delenv("PYTHONDEVMODE")
    result = project.run("--memcheck", "--memcheck-json=normal.json")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*1 measured: 1 env-mismatch*"])
    results = json.loads((project.path / "normal.json").read_text())
    assert "mode" not in results["environment"]


def test_cli_shows_the_mode_of_a_baseline(project, monkeypatch):
    project.pytester.makepyfile(test_modal=MODAL)
    monkeypatch.setenv("PYTHONDEVMODE", "1")
    assert project.run("--memcheck-update").ret == 0
    result = subprocess.run(
        [sys.executable, "-m", "pytest_memcheck.cli", "show"],
        cwd=project.path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "mode dev" in result.stdout, result.stdout


def test_meters_that_cannot_be_exact_here_say_so():
    from pytest_memcheck.plugin import platform_limits

    refusal, _ = platform_limits("rss", "darwin", True, None)
    assert refusal and "Linux only" in refusal and "zeros" in refusal
    assert platform_limits("rss", "win32", True, (2, 5))[0]
    _, warning = platform_limits("python", "darwin", True, (2, 4))
    assert warning and "numpy 2.4" in warning and "not counted" in warning
    assert platform_limits("python", "win32", True, (1, 26))[1]
    assert platform_limits("python", "linux", False, (1, 26))[1]  # the redirection is 64-bit ELF
    # Negative controls: where the meter is exact, nothing is said.
    for case in [
        ("python", "darwin", True, (2, 5)),
        ("python", "darwin", True, None),
        ("python", "linux", True, (1, 26)),
        ("rss", "linux", True, (1, 26)),
        ("tracemalloc", "darwin", True, (1, 26)),
    ]:
        assert platform_limits(*case) == (None, None), case


PRETEND_MACOS = """
import sys, sysconfig

import pytest

sysconfig.get_config_vars()  # read this build's variables first: sysconfig looks them up by platform
REAL, sys.platform = sys.platform, "darwin"


@pytest.hookimpl(trylast=True)
def pytest_configure(config):  # after the plugin's: it saw darwin, the rest of the run is real
    sys.platform = REAL
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pretends to leave Linux")
def test_meter_limits_are_told_at_start(project):
    # conftest.py is imported before the plugins' pytest_configure: it pretends to be macOS there.
    project.pytester.makeconftest(PRETEND_MACOS)
    project.pytester.makepyfile("def test_x():\n    pass\n")
    result = project.run("--memcheck", "--memcheck-meter=rss")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*rss meter reads /proc/self (Linux only); on darwin*"])
    result = project.run("--memcheck", "--memcheck-meter=python")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    if numpy is not None and tuple(map(int, numpy.__version__.split(".")[:2])) < (2, 5):
        result.stdout.fnmatch_lines(["*on darwin the python meter cannot redirect*"])
    # Negative control: on Linux itself, rss runs and nothing is said.
    (project.path / "conftest.py").unlink()
    result = project.run("--memcheck", "--memcheck-meter=rss")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.no_fnmatch_line("*cannot redirect*")


@pytest.mark.skipif(xdist is None, reason="pytest-xdist is not installed")
def test_xdist_under_dash_x_dev_is_refused_not_mislabelled(project, monkeypatch):
    """xdist's workers do not inherit -X dev: their figures would be filed under mode dev."""
    project.pytester.makepyfile(test_modal=MODAL)
    monkeypatch.delenv("PYTHONDEVMODE", raising=False)
    args = ("-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "-n", "2")
    result = project.pytester.run(sys.executable, "-X", "dev", *args, "--memcheck-update")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*workers without -X dev: set PYTHONDEVMODE=1*"])
    # Negative controls: PYTHONDEVMODE reaches the workers; -X dev without xdist is fine.
    monkeypatch.setenv("PYTHONDEVMODE", "1")
    result = project.pytester.run(sys.executable, *args, "--memcheck-update")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert project.baselines("test_modal.toml")["test_alloc"]["peak"] >= 4_000_000
    assert project.baselines("test_modal.toml")["memcheck"]["mode"] == "dev"
    monkeypatch.delenv("PYTHONDEVMODE")
    result = project.pytester.run(sys.executable, "-X", "dev", *args[:-2], "--memcheck")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*1 measured: 1 ok*"])


def test_baselines_of_another_environment_are_never_a_quiet_pass(project, monkeypatch):
    project.pytester.makepyfile(
        test_env="""
        import os

        def test_grows():
            data = bytearray(int(os.environ.get("SIZE", "100000")))
        """
    )
    assert project.run("--memcheck-update").ret == 0
    path = project.path / "baselines" / "test_env.toml"
    path.write_text(path.read_text().replace('python = "', 'python = "2.'))
    monkeypatch.setenv("SIZE", "1000000")  # 10x: would fail, were it gated
    local = project.run("--memcheck")
    assert local.ret == 0, local.stdout.str()
    local.stdout.fnmatch_lines(
        ["*memcheck: 1 of 1 measured tests were not gated*another environment*"]
    )
    # both environments are named: the file's, and this one
    text = " ".join(local.stdout.str().split())
    assert "another environment (cpython 2.3." in text and ") than this one (cpython 3." in text
    # what to do, for platforms and for interpreter modes alike
    assert 'baseline-dir = "baselines/{platform}"' in local.stdout.str()
    assert "--memcheck-baseline-dir=baselines-dev" in local.stdout.str()
    assert "Record baselines here (pytest --memcheck-update, or memcheck update" in text
    # the command to record repeats what the run was given: a meter typed measures as typed
    other = " ".join(project.run("--memcheck", "--memcheck-meter=tracemalloc").stdout.str().split())
    assert (
        "Record baselines here (pytest --memcheck-update --memcheck-meter=tracemalloc, or" in other
    )
    # On CI a gate that gates nothing fails, with the annotation and the summary line.
    summary = project.path / "summary.md"
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    ci = project.run("--memcheck")
    assert ci.ret == 1, ci.stdout.str()
    ci.stdout.fnmatch_lines(
        ["*no test was gated, and this is CI*", "::warning title=pytest-memcheck::1 of 1 measured*"]
    )
    assert "**Warning:** 1 of 1 measured tests were not gated" in summary.read_text()
    # The negative control: baselines of this environment gate, and the 10x growth fails.
    monkeypatch.delenv("CI")
    monkeypatch.delenv("SIZE")
    assert project.run("--memcheck-update=all").ret == 0
    monkeypatch.setenv("SIZE", "1000000")
    gated = project.run("--memcheck")
    assert gated.ret == 1
    assert "were not gated" not in gated.stdout.str()
