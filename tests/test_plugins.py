"""The plugins people run beside us, each the real one in a real pytest run: what counts, what
is pruned, what may run twice. Each scenario asserts exact counts, so that it fails where the
interplay is wrong, and has a control that shows the situation it guards against does happen."""

from __future__ import annotations

import json

import pytest
from conftest import ASYNCIO, memcheck, outcomes

pytest.importorskip("pytest_rerunfailures")
pytest.importorskip("pytest_timeout")
pytest.importorskip("xdist")
# Imported here, not inside a measured test: a first import would be counted as the test's.
hypothesis = pytest.importorskip("hypothesis")
pytest_randomly = pytest.importorskip("pytest_randomly")
pytest_cov = pytest.importorskip("pytest_cov")
pytest_memray = pytest.importorskip("pytest_memray")

FLAKY = """
import pytest

calls = []

@pytest.mark.memcheck(peak="1 MiB", confirm=False)
def test_flaky():
    # Over its 1 MiB limit on the first attempt only.
    calls.append(1)
    size = (4 << 20) if len(calls) == 1 else 1024
    assert len(bytearray(size)) == size

def test_steady():
    assert len([0] * 100) == 100
"""


TOTALS = {"failed": 0, "new": 2, "stale": 0}


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_rerunfailures_final_attempt_counts(project, workers):
    project.pytester.makepyfile(test_flaky=FLAKY)
    # Control: without reruns the first attempt is over its limit and fails.
    result = project.run("--memcheck", *workers)
    assert outcomes(result) == {"failed": 1, "passed": 1}
    result = project.run("--memcheck", "--reruns", "1", "--memcheck-json", "r.json", *workers)
    assert outcomes(result) == {"passed": 2, "rerun": 1}, result.stdout.str()
    data = json.loads((project.path / "r.json").read_text())
    ids = sorted(t["nodeid"] for t in data["tests"])
    assert ids == ["test_flaky.py::test_flaky", "test_flaky.py::test_steady"]
    flaky = next(t for t in data["tests"] if t["nodeid"].endswith("test_flaky"))
    # Within its absolute limit on the final attempt; no baseline yet: new.
    assert flaky["outcome"] == "new"
    assert data["totals"] == TOTALS, data["totals"]
    # The CLI accepts the file as one shard: no overlap.
    check = memcheck(project.path, "check", "--from", "r.json")
    assert check.returncode == 0, check.stdout + check.stderr
    update = memcheck(project.path, "update", "--from", "r.json")
    assert update.returncode == 0, update.stdout + update.stderr
    assert set(project.baselines("test_flaky.toml")) == {"memcheck", "test_flaky", "test_steady"}


DESELECTING_CONFTEST = """
import os

def pytest_collection_modifyitems(config, items):
    if not os.environ.get("DESELECT_ODD"):
        return
    odd = [i for i in items if i.name.startswith("test_odd")]
    items[:] = [i for i in items if not i.name.startswith("test_odd")]
    config.hook.pytest_deselected(items=odd)
"""

EIGHT = "\n".join(
    f"def test_{'odd' if n % 2 else 'even'}_{n}():\n    assert len([0] * {n + 1}) == {n + 1}\n"
    for n in range(8)
)


def test_xdist_deselection_in_workers_prunes_nothing(project, monkeypatch):
    project.pytester.makeconftest(DESELECTING_CONFTEST)
    project.pytester.makepyfile(test_eight=EIGHT)
    assert outcomes(project.run("--memcheck-update")) == {"passed": 8}
    assert len(project.baselines("test_eight.toml")) == 1 + 8
    monkeypatch.setenv("DESELECT_ODD", "1")
    result = project.run("--memcheck-update", "-n", "2")
    assert outcomes(result) == {"passed": 4}  # xdist's controller does not count deselection
    result.stdout.fnmatch_lines(["not pruned: this run was partial (*deselection*)"])
    assert len(project.baselines("test_eight.toml")) == 1 + 8
    # Control: a complete -n 2 run does prune a test that is gone.
    monkeypatch.delenv("DESELECT_ODD")
    project.pytester.makepyfile(test_eight=EIGHT.replace("def test_odd_7", "def renamed_7"))
    result = project.run("--memcheck-update", "-n", "2")
    assert outcomes(result) == {"passed": 7}
    assert len(project.baselines("test_eight.toml")) == 1 + 7


SLOW = """
import time

import pytest

@pytest.mark.timeout({timeout})
def test_slow():
    data = bytearray(1 << 20)
    time.sleep(0.6)
    assert len(data) == 1 << 20
"""


@pytest.mark.parametrize("method", ["signal", "thread"])
def test_timeout_no_second_run_past_half_the_budget(project, method):
    """A test using more than half of its timeout is not run a second time by an update."""
    project.pytester.makepyfile(test_slow=SLOW.format(timeout=1))
    assert outcomes(project.run(f"--timeout-method={method}")) == {"passed": 1}
    result = project.run("--memcheck-update", f"--timeout-method={method}")
    assert result.ret == 0, result.stdout.str()
    assert outcomes(result) == {"passed": 1, "warnings": 1}
    result.stdout.fnmatch_lines(
        [
            "*test_slow.py::test_slow: no confirming second run: its first run took 0.6* s and "
            "0.* s of its 1 s timeout are left; the first measurement stands*"
        ]
    )
    assert "test_slow" in project.baselines("test_slow.toml")
    # Control: with time to spare the update does confirm (the body runs twice: no note), and
    # pytest-timeout does fire when the test really takes too long.
    project.pytester.makepyfile(test_slow=SLOW.format(timeout=5))
    result = project.run("--memcheck-update", f"--timeout-method={method}")
    assert outcomes(result) == {"passed": 1}
    if method == "signal":
        project.pytester.makepyfile(test_slow=SLOW.format(timeout=0.3))
        assert outcomes(project.run("--memcheck-update")) == {"failed": 1}


COVERED = """
import os

def helper(n):
    return [str(i) for i in range(n)]

def test_list():
    assert len(helper(20000)) == 20000

def test_grows():
    extra = 1 << 20 if os.environ.get("GROW") else 0
    data = bytearray((1 << 20) + extra)
    assert len(data) == (1 << 20) + extra
"""


def test_coverage_adds_its_line_tables_within_the_floor(project, monkeypatch):
    """pytest-cov's tracer records the lines a test runs inside the test's window: a few KiB of
    peak and retained, well within the default floor; a real regression still fails."""
    project.pytester.makepyfile(test_covered=COVERED)
    assert outcomes(project.run("--memcheck-update")) == {"passed": 2}
    plain = project.run("--memcheck", "--memcheck-json", "plain.json")
    assert outcomes(plain) == {"passed": 2}
    result = project.run("--memcheck", "--cov=.", "--memcheck-json", "cov.json")
    assert outcomes(result) == {"passed": 2}, result.stdout.str()

    def retained(name):
        data = json.loads((project.path / name).read_text())
        return {t["nodeid"].split("::")[1]: t["measured"]["retained"] for t in data["tests"]}

    assert retained("plain.json")["test_list"] == 0
    assert 0 < retained("cov.json")["test_list"] < 16 * 1024
    # Control: under coverage, +1 MiB still fails.
    monkeypatch.setenv("GROW", "1")
    result = project.run("--memcheck", "--cov=.")
    assert outcomes(result) == {"passed": 1, "failed": 1}
    result.stdout.fnmatch_lines(["FAILED test_covered.py::test_grows - memcheck: over budget*"])


MEMRAY_MARKED = """
import pytest

@pytest.mark.limit_memory("1 MB")
def test_marked():
    assert len(bytearray(4 << 20)) == 4 << 20

def test_plain():
    assert len(bytearray(1024)) == 1024
"""


def test_memray_refused_at_start_with_a_clear_message(project):
    project.pytester.makepyfile(test_memray=MEMRAY_MARKED)
    run = project.pytester.runpytest_subprocess
    base = ("-p", "no:randomly", "-p", "no:cacheprovider")
    # --memray with our gate: refused before any test runs.
    result = run(*base, "--memcheck", "--memray", "-k", "plain")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--memray with pytest-memcheck*add -p no:memray*"])
    # Without --memray, pytest-memray still measures the tests with its markers: refused too.
    result = run(*base, "--memcheck")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*pytest-memray measures the 1 tests with its markers (e.g. test_memray.py::test_marked)*"]
    )
    assert "passed" not in result.stdout.str()
    # Controls: memray alone works as it does without us (its limit fails the marked test), and
    # with -p no:memray we honour its marker ourselves.
    result = run(*base, "--memray")
    assert outcomes(result) == {"passed": 1, "failed": 1}
    result.stdout.fnmatch_lines(["*MEMRAY REPORT*"])
    result = run(*base, "-p", "no:memray", "--memcheck")
    assert outcomes(result) == {"passed": 1, "failed": 1}
    result.stdout.fnmatch_lines(["FAILED test_memray.py::test_marked - memcheck: over budget*"])


PROPERTIES = """
from hypothesis import given, settings, strategies as st

@settings(max_examples=50, database=None)
@given(st.lists(st.integers(), max_size=50))
def test_sorted_is_idempotent(xs):
    assert sorted(sorted(xs)) == sorted(xs)

@settings(max_examples=50, database=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_fails_on_big_numbers(n):
    assert n < 5000

def test_plain():
    assert len(bytearray(2048)) == 2048
"""


@pytest.mark.parametrize("seed", ["1", "2"])
def test_hypothesis_and_randomly_keep_every_outcome(project, seed):
    """With pytest-randomly shuffling and reseeding, Hypothesis drawing examples, and warnings as
    errors: a run measured or updating has the outcomes of a plain run, the falsifying example
    included, and the gate finds nothing to fail on a second, reshuffled run."""
    project.pytester.makepyfile(test_props=PROPERTIES)
    project.pytester.makeini("[pytest]\nfilterwarnings =\n    error\n")
    run = project.pytester.runpytest_subprocess
    base = ("-p", "no:cacheprovider", "-p", "no:memray", "-p", "randomly", *ASYNCIO)
    plain = run(*base, f"--randomly-seed={seed}")
    assert outcomes(plain) == {"passed": 2, "failed": 1}
    plain.stdout.fnmatch_lines(["*Failing test case: test_fails_on_big_numbers(*", "*n=5000,*"])
    update = run(*base, f"--randomly-seed={seed}", "--memcheck-update")
    assert outcomes(update) == {"passed": 2, "failed": 1}
    update.stdout.fnmatch_lines(["*Failing test case: test_fails_on_big_numbers(*", "*n=5000,*"])
    assert set(project.baselines("test_props.toml")) == {
        "memcheck",
        "test_sorted_is_idempotent",
        "test_plain",
    }
    gated = run(*base, "--randomly-seed=99", "--memcheck")
    assert outcomes(gated) == {"passed": 2, "failed": 1}
    gated.stdout.fnmatch_lines(["*2 measured: 2 ok*"])


def test_pytest_memray_markers_are_read_with_pytest_memray_s_units(project):
    # pytest-memray's "1 MB" is 1 MiB (1,048,576 B): 1,040,000 B passes it, 1,100,000 B fails.
    project.pytester.makepyfile(
        test_units="""
        import pytest

        @pytest.mark.limit_memory("1 MB")
        def test_under_one_mib():
            data = bytearray(1_040_000)

        @pytest.mark.limit_memory("1MB")
        def test_over_one_mib():
            data = bytearray(1_100_000)

        @pytest.mark.limit_leaks(location_limit="0.5 KB")
        def test_leaks_over_half_a_kib():
            KEEP.append(bytearray(600))

        KEEP = []
        """
    )
    result = project.run("--memcheck")
    assert outcomes(result) == {"passed": 1, "failed": 2}, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*peak * is over its limit 1.00 MiB (1048576 B), the absolute limit set by limit_memory*",
            "*retained * is over its limit 512 B (512 B), the absolute limit set by limit_leaks*",
        ]
    )


@pytest.mark.parametrize(
    "marker, refused",
    [
        # pytest-memray's limit_memory takes no filter_fn: an error there, an error here.
        ('limit_memory("1 MB", filter_fn=lambda stack: True)', "unexpected arguments filter_fn"),
        ('limit_leaks("1 MB", filter_fn=3)', "filter_fn must be callable, got 3"),
        ('limit_leaks("1 MB", stacks=5)', "unexpected arguments stacks"),
        ('limit_memory("1 MiB")', "invalid size '1 MiB'"),
        ('limit_memory("1 MB", current_thread_only=True)', None),
        ('limit_leaks("1 MB", current_thread_only=False)', None),
        ('limit_leaks("1 MB", filter_fn=lambda stack: True, current_thread_only=True)', None),
    ],
)
def test_pytest_memray_marker_arguments_it_does_not_take_are_refused(project, marker, refused):
    project.pytester.makepyfile(
        test_opts=f"""
        import pytest

        @pytest.mark.{marker}
        def test_x():
            pass
        """
    )
    result = project.run("--memcheck")
    if refused is None:
        assert result.ret == 0, result.stdout.str()
    else:
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert refused in result.stderr.str(), result.stderr.str()


def test_markers_are_registered_once_with_pytest_memray_installed(project):
    result = project.pytester.runpytest_subprocess("-p", "no:randomly", "--markers")
    assert result.ret == 0
    lines = [line for line in result.stdout.lines if line.startswith("@pytest.mark.limit_memory")]
    assert len(lines) == 1, lines
    # and without pytest-memray, ours describe them
    result = project.run("--markers")
    lines = [line for line in result.stdout.lines if line.startswith("@pytest.mark.limit_memory")]
    assert len(lines) == 1 and "24 MiB" in lines[0], lines
