"""The gate end to end: baselines, regressions, outcomes, markers, determinism (SPEC §4, §5)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest
from conftest import outcomes

# Imported here, not inside a measured test: first imports are costly, and our own suite is
# gated too.
try:
    import hypothesis
except ImportError:
    hypothesis = None
try:
    import pytest_randomly
except ImportError:
    pytest_randomly = None
try:
    import xdist
except ImportError:
    xdist = None

needs_randomly = pytest.mark.skipif(
    pytest_randomly is None, reason="pytest-randomly is not installed"
)

MIB = 1 << 20

SIZED = """
import os
import shlex

def test_alloc():
    data = bytearray(int(os.environ.get("ALLOC", str(5 << 20))))
    assert data is not None

def test_small():
    assert sum(range(100)) == 4950
"""


def test_twenty_percent_fails_one_percent_passes(project, monkeypatch):
    project.pytester.makepyfile(test_sized=SIZED)
    monkeypatch.setenv("ALLOC", str(5 * MIB))
    assert project.run("--memcheck-update").ret == 0
    base = project.baselines("test_sized.toml")["test_alloc"]["peak"]
    assert 5 * MIB <= base < 5 * MIB + 1024

    monkeypatch.setenv("ALLOC", str(5 * MIB + 5 * MIB // 100))  # +1 %
    result = project.run("--memcheck")
    assert result.ret == 0, result.stdout.str()

    monkeypatch.setenv("ALLOC", str(6 * MIB))  # +20 %, +1 MiB
    result = project.run("--memcheck")
    assert result.ret == 1
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*memcheck: over budget",
            "*peak 6.00 MiB (629*B) is over its limit 5.56 MiB (58*B) = baseline 5.00 MiB"
            " × (1 + 10%) + floor 64.0 KiB; change +20.0%, +1.00 MiB (+1048576 B)",
            "*accept it: pytest --memcheck-update test_sized.py::test_alloc",
            "*confirmed by a second measurement*",
            "*FAILED test_sized.py::test_alloc - memcheck: over budget*",
        ]
    )
    # The failure is the test's own: JUnit XML sees it too.
    result = project.run("--memcheck", "--junitxml=out.xml")
    xml = (project.path / "out.xml").read_text()
    assert 'name="test_alloc"' in xml and "memcheck: over budget" in xml


def test_the_accept_hint_writes_where_the_run_reads(project, monkeypatch):
    """A run given --memcheck-baseline-dir (and a meter) on the command line prints an update
    with the same options: as printed, it turns the run green."""
    project.pytester.makepyfile(test_sized=SIZED)
    where = ("--memcheck-baseline-dir=elsewhere dir", "--memcheck-meter=tracemalloc")
    monkeypatch.setenv("ALLOC", str(5 * MIB))
    assert project.run("--memcheck-update", *where).ret == 0
    monkeypatch.setenv("ALLOC", str(6 * MIB))
    failed = project.run("--memcheck", *where)
    assert failed.ret == 1, failed.stdout.str()
    text = failed.stdout.str()
    hint = next(line for line in text.splitlines() if "accept it: " in line)
    command = shlex.split(hint.split("accept it: ", 1)[1])
    assert command == ["pytest", "--memcheck-update", *where, "test_sized.py::test_alloc"]
    assert project.run(*command[1:]).ret == 0
    assert not (project.path / "baselines").exists()
    again = project.run("--memcheck", *where)
    assert again.ret == 0, again.stdout.str()


def test_absolute_limits_from_markers(project):
    """Absolute limits need no baseline; the exact byte boundary is tested in src/gate.rs."""
    project.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.memcheck(peak="2 MiB")
        def test_within_memcheck_marker():
            bytearray(1 << 20)

        @pytest.mark.memcheck(peak="512 KiB")
        def test_over_memcheck_marker():
            bytearray(1 << 20)

        @pytest.mark.limit_memory("2 MB")
        def test_within_limit_memory():
            bytearray(1 << 20)

        @pytest.mark.limit_memory("1 MB")
        def test_over_limit_memory():
            bytearray(1 << 20)
        """
    )
    # Absolute limits are not baselines: an update does not accept what is over them.
    project.run("--memcheck-update").assert_outcomes(passed=2, failed=2)
    result = project.run("--memcheck")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*peak 1.00 MiB (104* B) is over its limit 512 KiB (524288 B), the absolute limit set by the memcheck marker",
            # pytest-memray's units: its "1 MB" is 1 MiB
            "*peak 1.00 MiB (104* B) is over its limit 1.00 MiB (1048576 B), the absolute limit set by limit_memory",
        ]
    )


def test_limit_leaks_and_retained(project):
    project.pytester.makepyfile(
        """
        import pytest
        CACHE = []

        @pytest.mark.limit_leaks("1 MB")
        def test_leaks():
            CACHE.append(bytearray(2_000_000))

        @pytest.mark.limit_leaks("1 MB")
        def test_clean():
            bytearray(2_000_000)
        """
    )
    result = project.run("--memcheck")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*retained 1.91 MiB (2000*B) is over its limit 1.00 MiB (1048576 B)*"]
    )


def test_unittest_testcases_are_measured_and_gated(project, monkeypatch):
    project.pytester.makepyfile(
        test_ut="""
        import os, unittest

        class TestCase(unittest.TestCase):
            def setUp(self):
                self.fixture = bytearray(8 << 20)  # set-up is not the test

            def test_alloc(self):
                data = bytearray(int(os.environ.get("ALLOC", str(2 << 20))))
                self.assertTrue(data is not None)
        """
    )
    assert project.run("--memcheck-update").ret == 0
    entry = project.baselines("test_ut.toml")["TestCase::test_alloc"]
    assert 2 * MIB <= entry["peak"] < 2 * MIB + 4096
    monkeypatch.setenv("ALLOC", str(4 * MIB))
    result = project.run("--memcheck")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*memcheck: over budget*", "*peak 4.00 MiB*"])


@needs_randomly
def test_pytest_randomly_adds_nothing(project):
    project.pytester.makepyfile(test_sized=SIZED)
    project.pytester.makepyfile(
        test_more="""
        import random

        def test_random_numbers():
            values = [random.random() for _ in range(1000)]
            assert len(values) == 1000
        """
    )
    args = ("--memcheck-update=all", "--memcheck-confirm=no")
    assert project.pytester.runpytest_subprocess("-p", "no:randomly", *args).ret == 0
    plain = project.text("test_sized.toml"), project.text("test_more.toml")
    result = project.pytester.runpytest_subprocess("-p", "randomly", "--randomly-seed=7", *args)
    assert result.ret == 0
    assert (project.text("test_sized.toml"), project.text("test_more.toml")) == plain


ORDINARY = """
import collections, json, re

class Record:
    def __init__(self, i):
        self.i = i
        self.name = f"record-{i}"

def test_objects():
    items = [Record(i) for i in range(2000)]
    assert len({r.name for r in items}) == 2000

def test_json_round_trip():
    data = {"k%d" % i: list(range(i % 10)) for i in range(500)}
    assert json.loads(json.dumps(data)) == data

def test_strings_and_dicts():
    counts = collections.Counter("".join(str(i) for i in range(5000)))
    assert sum(counts.values()) > 5000

def test_regex():
    assert re.findall(r"\\d+", "a1b22c333") == ["1", "22", "333"]

def test_sets():
    s = set(str(i) for i in range(3000))
    assert len(s) == 3000

def test_bytes():
    assert len(b"x" * 100_000) == 100_000
"""


@needs_randomly
def test_shuffled_runs_with_different_hash_seeds_write_identical_files(project, monkeypatch):
    for i in range(3):
        project.pytester.makepyfile(**{f"test_ordinary_{i}": ORDINARY})
    texts = []
    for seed in (1, 2, 3):
        monkeypatch.setenv("PYTHONHASHSEED", str(seed))
        result = project.pytester.runpytest_subprocess(
            "-p", "randomly", f"--randomly-seed={seed}", "--memcheck-update=all", "-v"
        )
        assert result.ret == 0, result.stdout.str()
        texts.append([project.text(f"test_ordinary_{i}.toml") for i in range(3)])

    for i in range(3):
        assert _gated(texts[0][i]) == _gated(texts[1][i]) == _gated(texts[2][i]), _diff(texts, i)


def _gated(text):
    # The gated values are byte-identical. `allocations` (informational, not gated) can move by a
    # couple of calls with test order (json's encoder state); see the README.
    return [line for line in text.splitlines() if not line.startswith("allocations")]


def _diff(texts, i):
    import difflib

    return "\n".join(
        difflib.unified_diff(
            texts[0][i].splitlines(),
            texts[1][i].splitlines() if texts[0][i] != texts[1][i] else texts[2][i].splitlines(),
            lineterm="",
        )
    )


def test_update_rewrites_only_what_moved(project, monkeypatch):
    project.pytester.makepyfile(test_sized=SIZED)
    assert project.run("--memcheck-update").ret == 0
    path = project.path / "baselines" / "test_sized.toml"
    before, mtime = path.read_text(), path.stat().st_mtime_ns
    monkeypatch.setenv("ALLOC", str(5 * MIB + 1000))
    result = project.run("--memcheck-update")
    result.stdout.fnmatch_lines(["*baselines unchanged*"])
    assert path.read_text() == before and path.stat().st_mtime_ns == mtime
    result = project.run("--memcheck-update=all")
    assert path.read_text() != before
    monkeypatch.setenv("ALLOC", str(8 * MIB))
    result = project.run("--memcheck-update")  # records the growth instead of failing on it
    assert result.ret == 0
    result.stdout.fnmatch_lines(["wrote baselines/test_sized.toml: 1 updated, 0 pruned"])
    assert project.baselines("test_sized.toml")["test_alloc"]["peak"] >= 8 * MIB


def test_stale_entries_are_pruned_only_by_complete_runs(project):
    project.pytester.makepyfile(test_sized=SIZED)
    project.pytester.makepyfile(test_other="def test_gone(): pass")
    assert project.run("--memcheck-update").ret == 0
    (project.path / "test_other.py").unlink()
    project.pytester.makepyfile(test_sized=SIZED.replace("def test_small", "def test_renamed"))
    # a partial run neither reports nor prunes
    result = project.run("--memcheck-update", "-k", "alloc")
    result.stdout.fnmatch_lines(["*not pruned: this run was partial (-k*"])
    assert "test_small" in project.baselines("test_sized.toml")
    result = project.run("--memcheck")
    result.stdout.fnmatch_lines(["*stale*test_other.py::test_gone*", "*2 stale*"])
    result = project.run("--memcheck-update")
    assert set(project.baselines("test_sized.toml")) == {"memcheck", "test_alloc", "test_renamed"}
    assert not (project.path / "baselines" / "test_other.toml").exists()
    result.stdout.fnmatch_lines(["*removed baselines/test_other.toml*"])


def test_outcomes_new_improved_strict_and_env_mismatch(project, monkeypatch):
    project.pytester.makepyfile(test_sized=SIZED)
    result = project.run("--memcheck")
    result.stdout.fnmatch_lines(["*2 measured: 2 new*"])
    assert result.ret == 0
    result = project.run("--memcheck", "--memcheck-strict")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*no baseline for this test (strict mode)*"])
    assert project.run("--memcheck-update").ret == 0
    monkeypatch.setenv("ALLOC", str(1 * MIB))
    result = project.run("--memcheck")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*improved*test_sized.py::test_alloc*", "*1 improved, 1 ok*"])
    path = project.path / "baselines" / "test_sized.toml"
    path.write_text(path.read_text().replace('python = "3.', 'python = "2.'))
    result = project.run("--memcheck")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*2 measured: 2 env-mismatch*"])
    assert project.run("--memcheck", "--memcheck-strict").ret == 1


def test_one_time_costs_are_told_from_regressions(project, monkeypatch):
    """A cache filled by whichever test runs first is not a regression: the second run shows it."""
    project.pytester.makepyfile(
        test_cache="""
        import os
        CACHE = {}

        def test_uses_cache():
            if "table" not in CACHE:  # one-time: the first run in a process fills it
                CACHE["table"] = bytearray(4 << 20)
            data = bytearray(int(os.environ.get("ALLOC", "1000")))
        """
    )
    assert project.run("--memcheck-update").ret == 0
    entry = project.baselines("test_cache.toml")["test_uses_cache"]
    assert entry["peak"] < 10_000 and entry["retained"] < 1000, "the warm value is recorded"
    result = project.run("--memcheck")
    assert result.ret == 0, result.stdout.str()
    monkeypatch.setenv("ALLOC", str(2 << 20))  # a real regression shows in both measurements
    result = project.run("--memcheck")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*confirmed by a second measurement: peak 6.00 MiB then 2.00 MiB*smaller values are judged"
        ]
    )
    assert project.run("--memcheck", "--memcheck-confirm=no", "--memcheck-floor=0").ret == 1


@pytest.mark.skipif(hypothesis is None, reason="hypothesis is not installed")
def test_hypothesis_tests_gate_peak_loosely_and_not_retained(project, monkeypatch):
    project.pytester.makepyfile(
        test_props="""
        import os
        from hypothesis import given, settings, strategies as st

        SEEN = []
        SIZE = int(os.environ.get("SIZE", str(1 << 20)))
        KEEP = int(os.environ.get("KEEP", "100"))

        @settings(max_examples=20, derandomize=True, database=None)
        @given(st.integers(0, 100))
        def test_property(n):
            SEEN.append(bytearray(KEEP))
            bytearray(SIZE)
        """
    )
    assert project.run("--memcheck-update").ret == 0
    monkeypatch.setenv("KEEP", "20000")  # retained grows 200-fold: Hypothesis-style, not gated
    assert project.run("--memcheck").ret == 0
    monkeypatch.delenv("KEEP")
    monkeypatch.setenv("SIZE", str(int(1.4 * (1 << 20))))  # +40 %: within the 50 % for Hypothesis
    assert project.run("--memcheck").ret == 0
    monkeypatch.setenv("SIZE", str(2 << 20))  # +100 %
    result = project.run("--memcheck")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*peak 2.*MiB*× (1 + 50%)*"])


def test_gate_retained_marker(project, monkeypatch):
    """gate_retained=False exempts retained alone; the same growth fails a test without it."""
    project.pytester.makepyfile(
        test_keep="""
        import os, pytest
        KEPT = []

        # An absolute peak limit: peak grows with what is kept, and is not what is tested here.
        @pytest.mark.memcheck(gate_retained=False, peak="16 MiB")
        def test_fills_a_cache():
            KEPT.append(bytearray(int(os.environ.get("KEEP", "10"))))

        @pytest.mark.memcheck(peak="16 MiB")
        def test_gated():
            KEPT.append(bytearray(int(os.environ.get("KEEP", "10"))))
        """
    )
    assert outcomes(project.run("--memcheck-update")) == {"passed": 2}
    assert outcomes(project.run("--memcheck")) == {"passed": 2}
    monkeypatch.setenv("KEEP", str(4 << 20))
    # Retained grows by 4 MiB, far past baseline + 10 % + 64 KiB: only the gated test fails.
    result = project.run("--memcheck")
    assert outcomes(result) == {"passed": 1, "failed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*retained 4.00 MiB*is over its limit*", "FAILED test_keep.py::test_gated - memcheck*"]
    )


def test_confirmation_of_a_test_that_cannot_run_twice(project):
    project.pytester.makepyfile(
        """
        import pytest
        RUNS = []

        def test_once():
            assert not RUNS, "ran twice"
            RUNS.append(bytearray(4 << 20))

        @pytest.mark.memcheck(confirm=False)
        def test_not_confirmed():
            data = bytearray(int(__import__("os").environ.get("ALLOC", "0")))
        """
    )
    assert project.run("--memcheck-update").ret == 0
    path = project.path / "baselines" / "test_confirmation_of_a_test_that_cannot_run_twice.toml"
    path.write_text(path.read_text().replace("peak = 4", "peak = 1", 1))
    result = project.run("--memcheck")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_once: the confirming second run raised AssertionError: ran twice*first measurement stands*"
        ]
    )
    assert "confirmed by a second measurement" not in result.stdout.str()


def test_failing_skipped_and_xfail_tests_are_not_gated_or_recorded(project):
    project.pytester.makepyfile(
        """
        import pytest

        def test_fails():
            data = bytearray(1 << 20)
            assert False

        @pytest.mark.xfail
        def test_xfail():
            assert False

        @pytest.mark.skip
        def test_skipped():
            pass

        @pytest.mark.memcheck(skip=True)
        def test_unmeasured():
            pass

        def test_ok():
            pass
        """
    )
    result = project.run("--memcheck-update")
    result.assert_outcomes(passed=2, failed=1, skipped=1, xfailed=1)
    keys = set(
        project.baselines("test_failing_skipped_and_xfail_tests_are_not_gated_or_recorded.toml")
    )
    assert keys == {"memcheck", "test_ok"}


def test_interrupted_run_writes_nothing(project):
    project.pytester.makepyfile(
        """
        def test_a():
            bytearray(1000)

        def test_b():
            raise KeyboardInterrupt
        """
    )
    result = project.run("--memcheck-update")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert not (project.path / "baselines").exists()


def test_ci_refuses_update_unless_allowed(project, monkeypatch):
    project.pytester.makepyfile(test_sized=SIZED)
    monkeypatch.setenv("CI", "true")
    result = project.run("--memcheck-update")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--memcheck-update does not write baselines in CI*"])
    assert not (project.path / "baselines").exists()
    assert project.run("--memcheck-update", "--memcheck-allow-ci-update").ret == 0
    monkeypatch.setenv("CI", "false")
    assert project.run("--memcheck-update").ret == 0


def test_config_table_and_placeholders(project):
    project.pytester.makepyfile(test_sized=SIZED)
    project.pytester.makefile(
        ".toml",
        pyproject="[tool.memcheck]\nbaseline-dir = 'mem/{implementation}-{python}'\ntolerance = '50%'\n",
    )
    result = project.run("--memcheck-update")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "memcheck: meter python, tolerance 50%, floor 64.0 KiB (pyproject.toml), "
            "baselines in mem/cpython-3.*/, update: changed"
        ]
    )
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert (project.path / "mem" / f"cpython-{py}" / "test_sized.toml").exists()


@pytest.mark.skipif(xdist is None, reason="pytest-xdist is not installed")
def test_xdist_gives_the_same_files(project, monkeypatch):
    # pytest-rerunfailures, when installed, talks to the controller over a socket from each
    # worker; with it the json test's peak was 56 B higher than serial (within the floor; not
    # explained yet, see README). This test is about xdist alone.
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:rerunfailures")
    project.pytester.makepyfile(test_sized=SIZED)
    project.pytester.makepyfile(test_ordinary=ORDINARY)
    assert project.run("--memcheck-update").ret == 0
    serial = project.text("test_sized.toml"), project.text("test_ordinary.toml")
    # Workers measure and gate; the controller alone writes. Allocations of execnet's I/O thread,
    # running before each window, are not the test's: fresh files match the serial ones.
    result = project.run("--memcheck-update", "-n", "2")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*8 measured: 8 ok*", "baselines unchanged"])
    assert (project.text("test_sized.toml"), project.text("test_ordinary.toml")) == serial
    for name in ("test_sized.toml", "test_ordinary.toml"):
        (project.path / "baselines" / name).unlink()
    result = project.run("--memcheck-update", "-n", "2")
    assert result.ret == 0, result.stdout.str()
    fresh = project.text("test_sized.toml"), project.text("test_ordinary.toml")
    assert [_gated(t) for t in fresh] == [_gated(t) for t in serial]
    result = project.run("--memcheck", "-n", "2")
    result.stdout.fnmatch_lines(["*8 measured: 8 ok*"])


def test_demo_script_runs(pytester):
    """The README's first command: the bundled example shows a pass, then a planted regression."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, os.path.join(root, "examples", "demo.py")],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the gate passed" in result.stdout
    assert "memcheck: over budget" in result.stdout


def test_the_accept_hint_works_from_a_subfolder(project, monkeypatch):
    """Node ids are relative to the root; run from a subfolder, the printed command goes there."""
    (project.path / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    sub = project.path / "tests"
    sub.mkdir()
    (sub / "test_sub.py").write_text(
        "import os\n\n\ndef test_grows():\n"
        "    data = bytearray(int(os.environ.get('SIZE', '100000')))\n    assert data\n"
    )
    assert project.run("--memcheck-update").ret == 0
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}
    env["SIZE"] = "3000000"
    plain = ["-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:memray"]

    def pytest_in(cwd, *args):
        return subprocess.run(
            [sys.executable, "-m", "pytest", *plain, *args],
            cwd=cwd, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip

    failed = pytest_in(sub, "--memcheck", "test_sub.py")
    assert failed.returncode == 1, failed.stdout
    hint = next(line for line in failed.stdout.splitlines() if "accept it: " in line)
    command = hint.split("accept it: ", 1)[1]
    assert command.startswith("cd ") and "tests/test_sub.py::test_grows" in command, command
    # the hint, run as printed (from the subfolder, by a shell), turns the gate green
    env["PYTEST_ADDOPTS"] = " ".join(plain)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    accepted = subprocess.run(command, shell=True, cwd=sub, env=env, capture_output=True,
                              text=True, check=False)  # fmt: skip
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert pytest_in(sub, "--memcheck", "test_sub.py").returncode == 0
