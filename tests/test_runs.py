"""A test body runs no more often than needed, and the diagnosis run is bounded."""

from __future__ import annotations

from conftest import outcomes

COUNTED = """
import os
import pytest

def _count(name):
    path = f"runs-{name}.txt"
    with open(path, "a") as f:
        f.write("x")

{marker}
def test_grows():
    _count("grows")
    data = bytearray(int(os.environ.get("SIZE", "1000")))
    assert data is not None
"""


def _runs(project, name: str) -> int:
    path = project.path / f"runs-{name}.txt"
    runs = len(path.read_text()) if path.exists() else 0
    path.unlink(missing_ok=True)
    return runs


def _regress(project, monkeypatch, marker: str) -> object:
    project.pytester.makepyfile(test_runs=COUNTED.replace("{marker}", marker))
    assert project.run("--memcheck-update").ret == 0
    _runs(project, "grows")
    monkeypatch.setenv("SIZE", "5000000")
    return project.run("--memcheck")


def test_a_failing_test_runs_three_times_to_confirm_and_diagnose(project, monkeypatch):
    result = _regress(project, monkeypatch, "")
    assert outcomes(result) == {"failed": 1}, result.stdout.str()
    assert _runs(project, "grows") == 3  # measured, confirmed, diagnosed
    result.stdout.fnmatch_lines(["*confirmed by a second measurement*", "*allocated at the peak*"])
    assert "measured once" not in result.stdout.str()


def test_confirm_false_means_the_body_runs_once(project, monkeypatch):
    result = _regress(project, monkeypatch, "@pytest.mark.memcheck(confirm=False)")
    assert outcomes(result) == {"failed": 1}, result.stdout.str()
    assert _runs(project, "grows") == 1
    result.stdout.fnmatch_lines(
        [
            "*measured once (confirm is off): a one-time cost of a first run*same confirm setting",
            "*no diagnosis: the test is marked confirm=False: it runs once*",
        ]
    )
    assert "confirmed by a second measurement" not in result.stdout.str()


def test_confirm_off_for_the_run_is_repeated_in_the_accept_command(project, monkeypatch):
    # A first-run cost (a cache filled) lands in a run measured once; an update with confirm
    # on records the smaller of two runs, without it, and says "unchanged": the printed
    # command must measure as the gate did, or it never turns the run green.
    project.pytester.makepyfile(
        test_cache="""
        import os

        CACHE = []

        def test_cache():
            if not CACHE:
                CACHE.append(bytearray(int(os.environ.get("SIZE", "1000"))))
        """
    )
    assert project.run("--memcheck-update").ret == 0
    monkeypatch.setenv("SIZE", "800000")
    gate = ("--memcheck", "--memcheck-confirm=no")
    result = project.run(*gate)
    assert result.ret == 1, result.stdout.str()
    hint = "pytest --memcheck-update --memcheck-confirm=no test_cache.py::test_cache"
    result.stdout.fnmatch_lines(
        [
            f"*if the growth is intended, accept it: {hint}",
            "*(no diagnosis: confirm is off for this run (--memcheck-confirm=no or the confirm "
            "setting): it runs once)",
        ]
    )
    assert project.run(*hint.split()[1:]).ret == 0
    assert project.run(*gate).ret == 0


def test_diagnoses_are_capped_per_run(project):
    project.pytester.makepyfile(
        test_many="""
        import pytest

        @pytest.mark.parametrize("i", range(12))
        @pytest.mark.memcheck(peak="1 KiB", confirm=True)
        def test_over(i):
            data = bytearray(100_000)
            assert data is not None
        """
    )
    result = project.run("--memcheck")
    assert outcomes(result) == {"failed": 12}, result.stdout.str()
    text = result.stdout.str()
    assert text.count("allocated at the peak, by site:") == 10
    assert text.count("no diagnosis: 10 tests were diagnosed already in this run") == 2


def test_the_diagnosis_run_stops_profiling_after_its_budget(project):
    project.pytester.makeconftest(
        """
        import pytest_memcheck.diagnose as diagnose

        diagnose.PROFILE_SECONDS = 0.05
        """
    )
    project.pytester.makepyfile(
        test_loop="""
        import time
        import pytest

        def step(keep):
            keep.append(bytes(100))

        @pytest.mark.memcheck(peak="1 KiB")
        def test_loops():
            keep = []
            deadline = time.perf_counter() + 0.3
            while time.perf_counter() < deadline:
                step(keep)
        """
    )
    result = project.run("--memcheck")
    assert outcomes(result) == {"failed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(["*(peak sites from the first 0.05 s of the run*"])
