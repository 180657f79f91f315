"""Unstable tests (README, "Unstable tests"): an update whose measurements of a test differ by
more than the tolerance measures more and records the spread; the gate then judges a later value
against the highest value recorded. Instability is simulated deterministically: the test body
allocates the next size of a list, counted in a file, so every run of the body gets its own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import pytest_memcheck
from conftest import memcheck, outcomes

try:  # imported here, not inside a measured test
    import jsonschema
except ImportError:
    jsonschema = None
try:
    import xdist
except ImportError:
    xdist = None
try:
    import pytest_timeout
except ImportError:
    pytest_timeout = None

SCHEMA = Path(pytest_memcheck.__file__).with_name("results.schema.json")
MIB = 1 << 20

# Each test allocates the next size of its environment variable (comma-separated), counting its
# runs in a file beside the tests; without the variable, its default size.
NOISY = """
import os
import pathlib

import pytest

HERE = pathlib.Path(__file__).parent
MIB = 1 << 20


def next_size(name, default):
    sizes = [int(s) for s in os.environ.get(name, "").split(",") if s]
    counter = HERE / f"runs-{name}"
    n = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(n + 1))
    return sizes[n % len(sizes)] if sizes else default


def test_noisy():
    data = bytearray(next_size("NOISY", MIB))
    assert data is not None


def test_stable():
    data = bytearray(next_size("STABLE", 4 * MIB))
    assert data is not None
"""

# First measured 1 MiB, then 3 MiB, 2 MiB, 1 MiB, 1.5 MiB: a spread of 1 to 3 MiB.
SPREAD = ",".join(str(n) for n in (MIB, 3 * MIB, 2 * MIB, MIB, 3 * MIB // 2))


def runs(project, name: str) -> int:
    """How many times a test body ran since the last call, and reset the count."""
    counter = project.path / f"runs-{name}"
    n = int(counter.read_text()) if counter.exists() else 0
    counter.unlink(missing_ok=True)
    return n


def record(project, monkeypatch, *args: str) -> pytest.RunResult:
    project.pytester.makepyfile(test_noisy=NOISY)
    monkeypatch.setenv("NOISY", SPREAD)
    result = project.run("--memcheck-update", *args)
    assert result.ret == 0, result.stdout.str()
    monkeypatch.delenv("NOISY")
    return result


def test_an_unstable_test_is_recorded_with_its_spread_and_gated_against_it(project, monkeypatch):
    result = record(project, monkeypatch, "--memcheck-json=update.json")
    # The noisy test was measured five times, the stable one twice, as always.
    assert (runs(project, "NOISY"), runs(project, "STABLE")) == (5, 2)
    result.stdout.fnmatch_lines(
        [
            "unstable: test_noisy.py::test_noisy: peak 1.00 MiB to 3.00 MiB; measured by this "
            "update, which differed by more than the tolerance",
            "2 measured: 2 new; 1 unstable",
        ]
    )
    noisy = project.baselines("test_noisy.toml")["test_noisy"]
    assert MIB <= noisy["peak"] < MIB + 64 * 1024
    assert 3 * MIB <= noisy["peak_max"] < 3 * MIB + 64 * 1024
    assert "retained_max" not in noisy, "retained did not move"
    # The stable test's table is what it always was: the four keys, nothing else.
    text = project.text("test_noisy.toml")
    stable = text.split("\n[test_stable]\n", 1)[1]
    assert re.fullmatch(r"allocations = \d+\ncycles = 0\npeak = \d+\nretained = \d+\n", stable)
    update = json.loads((project.path / "update.json").read_text())
    tests = {t["nodeid"].split("::")[1]: t for t in update["tests"]}
    assert tests["test_noisy"]["unstable"] == ["peak"]
    assert tests["test_noisy"]["measured"]["peak_max"] == noisy["peak_max"]
    assert "unstable" not in tests["test_stable"] and "peak_max" not in tests["test_stable"]
    assert update["totals"]["unstable"] == 1

    # Gated: within the spread passes, whatever the lowest was; reported as unstable.
    monkeypatch.setenv("NOISY", str(3 * MIB))
    result = project.run("--memcheck", "--memcheck-json=gate.json")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "unstable: test_noisy.py::test_noisy: peak 1.00 MiB to 3.00 MiB (passes up to 3.36 "
            "MiB); recorded by an update; gated against the highest value",
            "2 measured: 2 ok; 1 unstable",
        ]
    )
    gate = json.loads((project.path / "gate.json").read_text())
    tests = {t["nodeid"].split("::")[1]: t for t in gate["tests"]}
    assert tests["test_noisy"]["unstable"] == ["peak"] and tests["test_noisy"]["outcome"] == "ok"
    assert tests["test_noisy"]["baseline"]["peak_max"] == noisy["peak_max"]
    assert tests["test_noisy"]["limits"]["peak"] == noisy["peak_max"] * 11 // 10 + 64 * 1024
    if jsonschema is not None:
        schema = json.loads(SCHEMA.read_text())
        jsonschema.validate(update, schema)
        jsonschema.validate(gate, schema)

    # Above the spread's limit (3 MiB × 1.1 + 64 KiB = 3.36 MiB) fails, confirmed.
    monkeypatch.setenv("NOISY", str(7 * MIB // 2))
    result = project.run("--memcheck")
    assert outcomes(result) == {"failed": 1, "passed": 1}
    result.stdout.fnmatch_lines(
        [
            "*peak 3.50 MiB (* B) is over its limit 3.36 MiB (* B) = highest recorded 3.00 MiB × "
            "(1 + 10%) + floor 64.0 KiB; unstable: its update measured 1.00 MiB to 3.00 MiB; "
            "change +16.*% over the highest*",
            "*confirmed by a second measurement*",
            "FAILED test_noisy.py::test_noisy - memcheck: over budget",
        ]
    )
    monkeypatch.delenv("NOISY")

    # Negative control: the stable test's +20 % still fails; +1 % passes.
    monkeypatch.setenv("STABLE", str(4 * MIB * 6 // 5))
    result = project.run("--memcheck")
    assert outcomes(result) == {"failed": 1, "passed": 1}
    result.stdout.fnmatch_lines(["FAILED test_noisy.py::test_stable - memcheck: over budget"])
    monkeypatch.setenv("STABLE", str(4 * MIB * 101 // 100))
    assert project.run("--memcheck").ret == 0


def test_a_stable_update_measures_twice_and_leaves_the_files_alone(project, monkeypatch):
    """Measurements that agree: two runs, the smaller values, the same bytes as before."""
    project.pytester.makepyfile(test_noisy=NOISY)
    # One-time costs in the first run only: warming up, not unstable.
    monkeypatch.setenv("NOISY", ",".join(str(n) for n in (3 * MIB, MIB, MIB, MIB, MIB)))
    result = project.run("--memcheck-update")
    assert result.ret == 0, result.stdout.str()
    assert "unstable" not in result.stdout.str()
    assert runs(project, "STABLE") == 2
    assert runs(project, "NOISY") == 5, "they differed: measured more, and found it warming up"
    text = project.text("test_noisy.toml")
    assert "_max" not in text
    assert MIB <= project.baselines("test_noisy.toml")["test_noisy"]["peak"] < MIB + 64 * 1024
    monkeypatch.delenv("NOISY")
    # Agreeing runs again: the file is byte-identical, two runs each.
    result = project.run("--memcheck-update")
    result.stdout.fnmatch_lines(["baselines unchanged"])
    assert (runs(project, "NOISY"), runs(project, "STABLE")) == (2, 2)
    assert project.text("test_noisy.toml") == text


def test_the_spread_is_kept_until_a_measurement_leaves_it(project, monkeypatch):
    record(project, monkeypatch)
    text = project.text("test_noisy.toml")
    # A later update measuring inside the spread keeps it: no churn.
    monkeypatch.setenv("NOISY", str(2 * MIB))
    result = project.run("--memcheck-update")
    result.stdout.fnmatch_lines(["baselines unchanged"])
    assert project.text("test_noisy.toml") == text
    # --memcheck-update=all records what was measured: stable now, no spread.
    result = project.run("--memcheck-update=all")
    assert result.ret == 0
    assert "peak_max" not in project.text("test_noisy.toml")


def test_unstable_skip_leaves_the_spread_ungated(project, monkeypatch):
    record(project, monkeypatch)
    project.pytester.makepyfile(
        test_noisy=NOISY.replace(
            "def test_noisy():", '@pytest.mark.memcheck(unstable="skip")\ndef test_noisy():'
        )
    )
    monkeypatch.setenv("NOISY", str(16 * MIB))
    result = project.run("--memcheck")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["unstable: test_noisy.py::test_noisy: peak * (not gated);*"])
    # Negative control: the stable test beside it is still gated.
    monkeypatch.setenv("STABLE", str(5 * MIB))
    assert outcomes(project.run("--memcheck")) == {"failed": 1, "passed": 1}
    # A value other than gate or skip is a usage error naming the test.
    project.pytester.makepyfile(
        test_noisy=NOISY.replace(
            "def test_noisy():", '@pytest.mark.memcheck(unstable="widen")\ndef test_noisy():'
        )
    )
    result = project.run("--memcheck")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*test_noisy.py:*: memcheck marker of test_noisy.py::test_noisy unstable=: "
            'expected "gate" or "skip", got \'widen\''
        ]
    )


def test_a_hand_edited_spread_upside_down_is_an_error_naming_the_line(project, monkeypatch):
    record(project, monkeypatch)
    path = project.path / "baselines" / "test_noisy.toml"
    text = path.read_text()
    bad = re.sub(r"peak_max = \d+", "peak_max = 1000", text)
    path.write_text(bad)
    line = bad.splitlines().index("peak_max = 1000") + 1
    result = project.run("--memcheck")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"*baselines/test_noisy.toml:{line}:1: test 'test_noisy': peak_max = 1000 is below "
            "peak = *: peak is the lowest value an update measured and peak_max the highest*"
        ]
    )
    assert path.read_text() == bad, "never overwritten"


@pytest.mark.skipif(xdist is None, reason="pytest-xdist is not installed")
def test_under_xdist_the_spread_is_the_same(project, monkeypatch):
    record(project, monkeypatch)
    serial = project.baselines("test_noisy.toml")
    (project.path / "baselines" / "test_noisy.toml").unlink()
    runs(project, "NOISY")
    runs(project, "STABLE")
    result = record(project, monkeypatch, "-n", "2")
    result.stdout.fnmatch_lines(
        ["unstable: test_noisy.py::test_noisy: peak 1.00 MiB to 3.00 MiB;*"]
    )
    parallel = project.baselines("test_noisy.toml")
    for key in ("peak", "peak_max"):
        assert abs(parallel["test_noisy"][key] - serial["test_noisy"][key]) < 4096
    monkeypatch.setenv("NOISY", str(3 * MIB))
    result = project.run("--memcheck", "-n", "2")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["unstable: test_noisy.py::test_noisy: *(passes up to 3.36 MiB)*"])


@pytest.mark.skipif(pytest_timeout is None, reason="pytest-timeout is not installed")
def test_no_more_measurements_than_the_timeout_leaves(project, monkeypatch):
    """Each run takes at least 0.4 s of a 1.5 s timeout: after two runs at most 0.7 s are left,
    less than the two more runs (one, and one of margin) a third measurement needs."""
    project.pytester.makepyfile(
        test_noisy=NOISY.replace(
            "def test_noisy():\n",
            "@pytest.mark.timeout(1.5)\ndef test_noisy():\n    __import__('time').sleep(0.4)\n",
        )
    )
    monkeypatch.setenv("NOISY", SPREAD)
    result = project.run("--memcheck-update", "--timeout-method=thread")
    assert result.ret == 0, result.stdout.str()
    assert runs(project, "NOISY") == 2
    result.stdout.fnmatch_lines(
        [
            "*test_noisy.py::test_noisy: its measurements differ by more than the tolerance; no "
            "more of them: its first run took * s and * s of its 1.5 s timeout are left; "
            "recorded from the 2 taken*"
        ]
    )
    # What two measurements show is recorded: the second one was the high one.
    assert project.baselines("test_noisy.toml")["test_noisy"]["peak_max"] >= 3 * MIB


def test_a_test_that_cannot_run_more_keeps_what_was_measured(project, monkeypatch):
    project.pytester.makepyfile(
        test_noisy=NOISY.replace(
            '    data = bytearray(next_size("NOISY", MIB))\n',
            '    data = bytearray(next_size("NOISY", MIB))\n'
            "    assert (HERE / 'runs-NOISY').read_text() != '3', 'a third run fails'\n",
        )
    )
    monkeypatch.setenv("NOISY", SPREAD)
    result = project.run("--memcheck-update")
    assert result.ret == 0, result.stdout.str()
    assert runs(project, "NOISY") == 3
    result.stdout.fnmatch_lines(
        [
            "*test_noisy.py::test_noisy: its measurements differ by more than the tolerance; no "
            "more of them: measurement 3 raised AssertionError: a third run fails*recorded from "
            "the 2 taken*"
        ]
    )
    assert project.baselines("test_noisy.toml")["test_noisy"]["peak_max"] >= 3 * MIB


def test_memcheck_update_from_results_writes_the_spread(project, monkeypatch):
    record(project, monkeypatch, "--memcheck-json=update.json")
    recorded = project.text("test_noisy.toml")
    (project.path / "baselines" / "test_noisy.toml").unlink()
    done = memcheck(project.path, "update", "--from", "update.json")
    assert done.returncode == 0, done.stderr
    assert project.text("test_noisy.toml") == recorded
    # A crafted results file with a spread upside down is refused, nothing written.
    update = json.loads((project.path / "update.json").read_text())
    noisy = next(t for t in update["tests"] if t["nodeid"].endswith("::test_noisy"))
    noisy["measured"]["peak_max"] = 1
    (project.path / "bad.json").write_text(json.dumps(update, indent=2))
    (project.path / "baselines" / "test_noisy.toml").unlink()
    done = memcheck(project.path, "update", "--from", "bad.json")
    assert done.returncode == 2
    assert "bad.json:" in done.stderr
    assert "test 'test_noisy.py::test_noisy', measured: peak_max = 1 is below peak" in done.stderr
    assert not (project.path / "baselines" / "test_noisy.toml").exists()


def test_memcheck_update_from_a_gate_run_keeps_the_spread(project, monkeypatch):
    record(project, monkeypatch)
    # A gate run measures once or twice: it cannot tell the test stable. Its 2 MiB lies inside
    # the spread; accepting every value of it with --all must not drop the spread.
    monkeypatch.setenv("NOISY", str(2 * MIB))
    assert project.run("--memcheck", "--memcheck-json=gate.json").ret == 0
    done = memcheck(project.path, "update", "--from", "gate.json", "--all")
    assert done.returncode == 0, done.stderr
    noisy = project.baselines("test_noisy.toml")["test_noisy"]
    assert MIB <= noisy["peak"] < MIB + 64 * 1024
    assert 3 * MIB <= noisy["peak_max"] < 3 * MIB + 64 * 1024
    # and a later 3 MiB still passes, as the spread promised
    monkeypatch.setenv("NOISY", str(3 * MIB))
    assert project.run("--memcheck").ret == 0
