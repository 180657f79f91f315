"""pytest-memray's markers as pytest-memray means them, in real pytest runs (`-p no:memray`, so
that pytest-memcheck alone measures): `limit_leaks` judges each allocation location on its own,
`filter_fn` picks the locations that count, `current_thread_only=True` counts the test's thread
alone. Every passing scenario has a control that fails, and the passing ones failed before these
rules were honoured (the test's total was judged)."""

from __future__ import annotations

import pytest
from conftest import outcomes

# Two locations of 600,000 B each: each under pytest-memray's "1 MB" (1 MiB), together over it.
TWO_SITES = """
import threading
import pytest

KEEP = []

def small_a():
    KEEP.append(bytearray(600_000))

def small_b():
    KEEP.append(bytearray(600_000))

def make_big():
    KEEP.append(bytearray(1_200_000))

def in_a_thread(func):
    t = threading.Thread(target=func)
    t.start()
    t.join()

@pytest.mark.limit_leaks("1 MB")
def test_two_locations_under_the_limit():
    small_a()
    small_b()

@pytest.mark.limit_leaks("1 MB")
def test_one_location_over_the_limit():
    small_a()
    make_big()

def not_make_big(stack):
    return not any(frame.function == "make_big" for frame in stack.frames)

def keeps_everything(stack):
    # pytest-memray's Stack: frames most recent first, with function, filename and lineno.
    innermost, outermost = stack.frames[0], stack.frames[-1]
    assert (innermost.function, outermost.function) == (
        "make_big", "test_filtered_out"
    ) or outermost.function == "test_filter_keeps_it", stack
    assert innermost.filename.endswith("test_sites.py") and innermost.lineno > 0, stack
    return True

@pytest.mark.limit_leaks("1 MB", filter_fn=not_make_big)
def test_filtered_out():
    make_big()

@pytest.mark.limit_leaks("1 MB", filter_fn=keeps_everything)
def test_filter_keeps_it():
    make_big()

@pytest.mark.limit_leaks("1 MB", current_thread_only=True)
def test_helper_thread_leaks_only_this_thread():
    in_a_thread(make_big)
    small_a()

@pytest.mark.limit_leaks("1 MB")
def test_helper_thread_leaks_every_thread():
    in_a_thread(make_big)
    small_a()

@pytest.mark.limit_leaks("1 MB", current_thread_only=True)
def test_thread_and_two_locations_only_this_thread():
    # This thread retains 1.2 MB in two locations under the limit; the helper one over it.
    in_a_thread(make_big)
    small_a()
    small_b()

@pytest.mark.limit_leaks("1 MB", current_thread_only=True)
def test_this_thread_over_only_this_thread():
    in_a_thread(small_a)
    make_big()

@pytest.mark.memcheck(confirm=False)
@pytest.mark.limit_leaks("1 MB")
def test_two_locations_run_once():
    small_a()
    small_b()

@pytest.mark.limit_memory("1 MB", current_thread_only=True)
def test_helper_thread_peaks_only_this_thread():
    in_a_thread(lambda: bytearray(2_000_000))
    bytearray(500_000)

@pytest.mark.limit_memory("1 MB")
def test_helper_thread_peaks_every_thread():
    in_a_thread(lambda: bytearray(2_000_000))
    bytearray(500_000)
"""


@pytest.fixture
def sites(project):
    project.pytester.makepyfile(test_sites=TWO_SITES)
    return project


def run(project, *tests: str, workers: tuple[str, ...] = ()):
    return project.run("--memcheck", *workers, *(f"test_sites.py::{t}" for t in tests))


# pytest-xdist's workers run the tests in their main thread, beside threads of their own.
XDIST = pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["no-xdist", "xdist"])


@XDIST
def test_limit_leaks_judges_each_location_not_the_total(sites, workers):
    result = run(
        sites,
        "test_two_locations_under_the_limit",
        "test_one_location_over_the_limit",
        workers=workers,
    )
    assert outcomes(result) == {"passed": 1, "failed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*test_one_location_over_the_limit*",
            "*retained * is over its limit 1.00 MiB (1048576 B), the absolute limit set by "
            "limit_leaks*",
            "*limit_leaks: 1 location(s) leaked more than 1.00 MiB each*",
            "    test_sites.py:13 in make_big <- test_sites.py:28 in "
            "test_one_location_over_the_limit: 1.1 MiB in 3 blocks",
        ]
    )
    # The location under the limit is not named as over it.
    assert "in small_a <-" not in result.stdout.str().split("limit_leaks: 1 location")[1]


def test_filter_fn_picks_the_locations_that_count(sites):
    result = run(sites, "test_filtered_out", "test_filter_keeps_it")
    assert outcomes(result) == {"passed": 1, "failed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "FAILED test_sites.py::test_filter_keeps_it - memcheck: over*",
        ]
    )
    result.stdout.fnmatch_lines(["*those filter_fn keeps*", "*in make_big <- *: 1.1 MiB*"])


@XDIST
def test_current_thread_only_leaves_out_a_helper_thread_s_leak(sites, workers):
    result = run(
        sites,
        "test_helper_thread_leaks_only_this_thread",
        "test_helper_thread_leaks_every_thread",
        "test_thread_and_two_locations_only_this_thread",
        "test_this_thread_over_only_this_thread",
        workers=workers,
    )
    assert outcomes(result) == {"passed": 2, "failed": 2}, result.stdout.str()
    for failed in (
        "test_helper_thread_leaks_every_thread",
        "test_this_thread_over_only_this_thread",
    ):
        result.stdout.fnmatch_lines([f"FAILED test_sites.py::{failed} - *"])  # in any order
    text = result.stdout.str()
    # Every thread counts without the option: the helper's location is named, from its thread.
    assert "in make_big <- " in text and "threading.py" in text, text
    result.stdout.fnmatch_lines(
        [
            "*the test's thread alone*",
            "*in make_big <- test_sites.py:* in test_this_thread_over_only_this_thread: 1.1 MiB*",
        ]
    )


def test_limit_memory_current_thread_only_counts_the_test_s_thread(sites):
    result = run(
        sites,
        "test_helper_thread_peaks_only_this_thread",
        "test_helper_thread_peaks_every_thread",
    )
    assert outcomes(result) == {"passed": 1, "failed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "FAILED test_sites.py::test_helper_thread_peaks_every_thread - memcheck: over*",
        ]
    )


def test_a_test_that_runs_once_is_judged_on_its_total_and_says_so(sites):
    result = run(sites, "test_two_locations_run_once")
    assert outcomes(result) == {"failed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*retained * is over its limit 1.00 MiB (1048576 B), the absolute limit set by "
            "limit_leaks*",
            "*(limit_leaks judged on the test's total: not run again: the test is marked "
            "confirm=False: it runs once)*",
        ]
    )


def test_current_thread_only_of_limit_memory_needs_the_python_meter(project):
    project.pytester.makepyfile(
        test_rss="""
        import pytest

        @pytest.mark.limit_memory("1 MB", current_thread_only=True)
        def test_x():
            pass
        """
    )
    result = project.run("--memcheck", "--memcheck-meter=rss")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "current_thread_only=True needs the python meter" in result.stderr.str()
    # the same marker under the python meter is honoured
    assert project.run("--memcheck").ret == 0


def test_frames_are_named_by_the_function_that_runs_the_line(tmp_path):
    """StackFrame.function as pytest-memray gives it (the code object's name), also for a frame
    called from the same line as its caller (a lambda, a comprehension): the callee is the inner
    function, the caller the outer one."""
    from pytest_memcheck import locations

    source = tmp_path / "named.py"
    source.write_text("class Box:\n    def make(self):\n        return (lambda: bytearray(10))()\n")
    path = str(source)
    frames = locations._named(((path, 3), (path, 3)))  # oldest first: make, then the lambda
    assert [(f.function, f.lineno) for f in frames] == [("make", 3), ("<lambda>", 3)]
    # A file without source is pytest-memray's unknown function.
    assert locations._named((("<string>", 1),))[0].function == "???"


ASYNC_SITES = """
import asyncio
import pytest

KEEP = []

def small():
    KEEP.append(bytearray(600_000))

async def leak_big():
    KEEP.append(bytearray(1_200_000))

@pytest.mark.asyncio
@pytest.mark.limit_leaks("1 MB")
async def test_two_locations_across_an_await():
    small()
    await asyncio.sleep(0)
    KEEP.append(bytearray(600_000))

@pytest.mark.asyncio
@pytest.mark.limit_leaks("1 MB", current_thread_only=True)
async def test_executor_thread_left_out():
    small()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: KEEP.append(bytearray(1_500_000)))
    KEEP.append(bytearray(600_000))

@pytest.mark.asyncio
@pytest.mark.limit_leaks("1 MB", current_thread_only=True)
async def test_task_on_this_thread_counts():
    await asyncio.create_task(leak_big())
"""


def test_async_tests_under_the_per_location_and_thread_rules(project):
    """The runs again of an async test await its body too: its locations across an await, a
    helper thread left out (asyncio's executor), and a task on the test's thread counted, as
    pytest-memray counts the thread's allocations whichever task makes them."""
    pytest.importorskip("pytest_asyncio")
    project.pytester.makepyfile(test_async_sites=ASYNC_SITES)
    result = project.run("--memcheck")
    assert outcomes(result) == {"passed": 2, "failed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "FAILED test_async_sites.py::test_task_on_this_thread_counts - memcheck: over*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["*the test's thread alone*", "*test_async_sites.py:10 in leak_big: 1.1 MiB*"]
    )
