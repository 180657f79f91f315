"""Which threads count (README, "Threads"): all but the test run's own machinery."""

from __future__ import annotations

import json

import pytest
from conftest import outcomes

MIB4 = 4 * 1024 * 1024


def _tests(project, *args: str) -> dict[str, dict]:
    path = project.path / "results.json"
    result = project.run("--memcheck", "--memcheck-json", str(path), *args)
    assert result.ret == 0, result.stdout.str()
    return {
        t["nodeid"].split("::", 1)[1]: t["measured"] for t in json.loads(path.read_text())["tests"]
    }


def test_work_submitted_to_pools_that_predate_the_test_is_counted(project):
    project.pytester.makeconftest(
        """
        import concurrent.futures
        import pytest

        # A library-owned pool: made at import, its worker started by an earlier use.
        LIBRARY_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=1)

        @pytest.fixture(scope="session")
        def pool():
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                pool.submit(lambda: None).result()  # the worker thread predates every test
                yield pool
        """
    )
    project.pytester.makepyfile(
        test_pools="""
        import conftest

        KEEP = []

        def test_a_fixture_pool(pool):
            KEEP.append(pool.submit(bytearray, 4 * 1024 * 1024).result())

        def test_warm_the_library_pool():
            conftest.LIBRARY_POOL.submit(lambda: None).result()

        def test_a_library_pool():
            data = conftest.LIBRARY_POOL.submit(bytearray, 4 * 1024 * 1024).result()
            assert len(data) == 4 * 1024 * 1024
        """
    )
    tests = _tests(project)
    assert tests["test_a_fixture_pool"]["peak"] >= MIB4
    assert tests["test_a_fixture_pool"]["retained"] >= MIB4
    assert tests["test_a_library_pool"]["peak"] >= MIB4
    # and the warm-ups, which hand the pools no work of size, record none
    assert tests["test_warm_the_library_pool"]["peak"] < 64 * 1024


def test_work_submitted_to_asyncio_s_default_executor_is_counted(project):
    pytest.importorskip("pytest_asyncio")
    project.pytester.makepyfile(
        test_executor="""
        import asyncio
        import pytest

        @pytest.mark.asyncio(loop_scope="module")
        async def test_warm_the_default_executor():
            await asyncio.get_running_loop().run_in_executor(None, lambda: None)

        @pytest.mark.asyncio(loop_scope="module")
        async def test_the_default_executor():
            loop = asyncio.get_running_loop()
            data = await loop.run_in_executor(None, bytearray, 4 * 1024 * 1024)
            assert len(data) == 4 * 1024 * 1024
        """
    )
    tests = _tests(project)
    assert tests["test_the_default_executor"]["peak"] >= MIB4
    assert tests["test_warm_the_default_executor"]["peak"] < 64 * 1024


def test_threads_of_the_run_s_machinery_never_count(project):
    # A thread running before any test (as a plugin's would) allocating all the time: the
    # tests beside it measure exactly what they measure without it.
    body = """
        def test_work():
            items = [bytearray(1000) for _ in range(200)]
            assert items
        """
    project.pytester.makepyfile(test_work=body)
    alone = _tests(project)["test_work"]
    project.pytester.makeconftest(
        """
        import threading, time

        def _churn():
            while True:
                junk = [bytearray(5000) for _ in range(50)]
                time.sleep(0.0001)

        threading.Thread(target=_churn, daemon=True, name="plugin-machinery").start()
        """
    )
    for _ in range(3):
        beside = _tests(project)["test_work"]
        # Equal but for CPython's free lists, which every thread shares: an object the churn
        # freed can be reused by the test without an allocator call (README, "Threads"). One
        # round of the churn is 250 kB, so counting it would be far outside these margins.
        assert abs(beside["peak"] - alone["peak"]) <= 1024, (beside, alone)
        assert abs(beside["retained"] - alone["retained"]) <= 1024, (beside, alone)
        assert abs(beside["allocations"] - alone["allocations"]) <= 8, (beside, alone)


def test_a_thread_the_test_starts_counts_and_its_twin_without_it_does_not(project):
    project.pytester.makepyfile(
        test_started="""
        import threading

        def test_with_thread():
            box = []
            t = threading.Thread(target=lambda: box.append(bytearray(2_000_000)))
            t.start()
            t.join()

        def test_without_thread():
            box = []
            box.append(bytes(10))
        """
    )
    tests = _tests(project)
    assert tests["test_with_thread"]["peak"] >= 2_000_000
    assert tests["test_without_thread"]["peak"] < 10_000
    result = project.run("--memcheck")
    assert outcomes(result) == {"passed": 2}
