"""Async tests are measured over the execution of their coroutine (SPEC §3), under every runner."""

from __future__ import annotations

import json

import pytest
from conftest import outcomes

pytest.importorskip("pytest_asyncio")
pytest.importorskip("anyio")

ASYNCIO_TESTS = """
import asyncio
import pytest

KEEP = []

@pytest.mark.asyncio
async def test_holds_10_mib():
    data = bytearray(10 * 1024 * 1024)
    await asyncio.sleep(0)
    assert len(data) == 10 * 1024 * 1024

@pytest.mark.asyncio
async def test_keeps_4_mib():
    await asyncio.sleep(0)
    KEEP.append(bytearray(4 * 1024 * 1024))

@pytest.mark.asyncio
async def test_gathers():
    async def part(n):
        await asyncio.sleep(0)
        return bytearray(n)
    parts = await asyncio.gather(*(part(500_000) for _ in range(4)))
    assert sum(map(len, parts)) == 2_000_000

@pytest.mark.asyncio
async def test_fails_on_its_own():
    await asyncio.sleep(0)
    assert False, "the test's own failure"

@pytest.mark.asyncio
async def test_skips():
    pytest.skip("skipped by the test")
"""


def _results(project, *args: str) -> dict[str, dict]:
    path = project.path / "results.json"
    result = project.run("--memcheck", "--memcheck-json", str(path), *args)
    tests = json.loads(path.read_text())["tests"]
    return result, {t["nodeid"].split("::", 1)[1]: t for t in tests}


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_pytest_asyncio_tests_are_measured_over_the_coroutine(project, mode):
    project.pytester.makepyfile(test_aio=ASYNCIO_TESTS)
    result, tests = _results(project, "-o", f"asyncio_mode={mode}")
    # The test behaves as without the plugin: one own failure, one skip.
    assert outcomes(result) == {"passed": 3, "failed": 1, "skipped": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(["*the test's own failure*"])
    held = tests["test_holds_10_mib"]["measured"]
    # Not the creation of the coroutine (a few hundred bytes): its execution.
    assert 10 * 1024 * 1024 <= held["peak"] < 10 * 1024 * 1024 + 64 * 1024, held
    assert held["retained"] < 4096
    kept = tests["test_keeps_4_mib"]["measured"]
    assert 4 * 1024 * 1024 <= kept["retained"] < 4 * 1024 * 1024 + 4096, kept
    # Work done in other tasks the test awaits is the test's.
    assert tests["test_gathers"]["measured"]["peak"] >= 2_000_000
    assert "test_fails_on_its_own" not in tests or not tests["test_fails_on_its_own"]["recordable"]


def test_an_async_regression_fails_and_its_unchanged_twin_passes(project):
    source = """
    import asyncio, pytest

    @pytest.mark.asyncio
    async def test_grows():
        await asyncio.sleep(0)
        data = bytearray(SIZE)
        await asyncio.sleep(0)
        assert data is not None

    @pytest.mark.asyncio
    async def test_stays():
        await asyncio.sleep(0)
        data = bytearray(1_000_000)
        assert data is not None
    """
    project.pytester.makepyfile(test_grow=source.replace("SIZE", "1_000_000"))
    assert project.run("--memcheck-update").ret == 0
    # Unchanged: passes. Then +30 % on 1 MB in one of the two: that one fails.
    assert project.run("--memcheck").ret == 0
    project.pytester.makepyfile(test_grow=source.replace("SIZE", "1_300_000"))
    result = project.run("--memcheck", "--memcheck-confirm=no")
    assert outcomes(result) == {"passed": 1, "failed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(["*peak*over its limit*", "*FAILED test_grow.py::test_grows*"])


def test_async_tests_equal_the_tracemalloc_meter_and_repeat_exactly(project):
    body = """
    @pytest.mark.asyncio(loop_scope="{scope}")
    async def test_work_{i}():
        await asyncio.sleep(0)
        items = [str(n) * 3 for n in range(5_000)]
        blob = bytearray(300_000)
        await asyncio.sleep(0)
        table = {{s: len(s) for s in items}}
        assert len(table) == 5_000 and blob is not None
    """
    source = "import asyncio\nimport pytest\n" + "".join(
        body.format(i=i, scope=scope).replace("\n    ", "\n")
        for i, scope in enumerate(["function", "function", "function", "module", "module"])
    )
    project.pytester.makepyfile(test_exact_async=source)
    project.pytester.makeconftest("import tracemalloc")
    figures = {}
    for meter in ("python", "tracemalloc"):
        result, tests = _results(project, f"--memcheck-meter={meter}")
        assert result.ret == 0, result.stdout.str()
        figures[meter] = {
            k: (v["measured"]["peak"], v["measured"]["retained"]) for k, v in tests.items()
        }
    assert figures["python"] == figures["tracemalloc"]
    # The first async test of a run is not charged the loop's one-time costs: the same body
    # gives the same numbers every time in a fresh loop, and the same peak in a shared one.
    python = figures["python"]
    assert python["test_work_0"] == python["test_work_1"] == python["test_work_2"], python
    peaks = [peak for peak, _ in python.values()]
    assert max(peaks) - min(peaks) < 1024, python
    assert python["test_work_0"][0] >= 300_000


def test_anyio_tests_run_and_are_measured(project):
    project.pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(params=["asyncio"] + (["trio"] if __import__("importlib").util.find_spec("trio") else []))
        def anyio_backend(request):
            return request.param
        """
    )
    project.pytester.makepyfile(
        test_any="""
        import anyio
        import pytest

        @pytest.mark.anyio
        async def test_holds():
            data = bytearray(3_000_000)
            await anyio.sleep(0)
            assert data is not None

        @pytest.mark.anyio
        async def test_fails():
            await anyio.sleep(0)
            assert False, "anyio's own failure"
        """
    )
    plain = project.run()
    result, tests = _results(project)
    # Exactly the outcomes of the same run without the plugin.
    assert outcomes(result) == outcomes(plain), result.stdout.str()
    assert outcomes(result)["failed"] == outcomes(result)["passed"] >= 1
    holds = [t for k, t in tests.items() if k.startswith("test_holds")]
    assert holds and all(t["measured"]["peak"] >= 3_000_000 for t in holds), holds


def test_isolated_asyncio_testcase_bodies_run_and_are_measured(project):
    project.pytester.makepyfile(
        test_case="""
        import asyncio
        import unittest

        class Case(unittest.IsolatedAsyncioTestCase):
            async def asyncSetUp(self):
                self.setup_data = bytearray(5_000_000)  # set-up is not the test's

            async def test_holds(self):
                data = bytearray(2_000_000)
                await asyncio.sleep(0)
                self.assertTrue(data is not None)

            async def test_fails(self):
                await asyncio.sleep(0)
                self.assertEqual(1, 2)
        """
    )
    result, tests = _results(project)
    assert outcomes(result) == {"passed": 1, "failed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(["*FAILED test_case.py::Case::test_fails*"])
    assert "never awaited" not in result.stdout.str() + result.stderr.str()
    peak = tests["Case::test_holds"]["measured"]["peak"]
    assert 2_000_000 <= peak < 5_000_000, peak


def test_hypothesis_async_tests_under_pytest_asyncio_run_every_example(project):
    pytest.importorskip("hypothesis")
    project.pytester.makepyfile(
        test_hyp="""
        import asyncio
        import pytest
        from hypothesis import given, settings, strategies as st

        SEEN = []

        @pytest.mark.asyncio
        @settings(max_examples=7, derandomize=True, database=None)
        @given(st.integers(0, 10))
        async def test_examples(n):
            await asyncio.sleep(0)
            SEEN.append(bytearray(100_000))

        def test_all_examples_ran():
            assert len(SEEN) >= 7
        """
    )
    plain = project.run()
    assert plain.ret == 0, plain.stdout.str()
    result, tests = _results(project, "--memcheck-confirm=no")
    assert outcomes(result) == {"passed": 2}, result.stdout.str()
    # The examples ran inside the window: their buffers are the test's peak.
    assert tests["test_examples"]["measured"]["peak"] >= 7 * 100_000
