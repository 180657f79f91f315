"""What a test does to the interpreter never makes a figure silently wrong, and nothing the plugin
does to the interpreter outlives a window (SPEC §3)."""

from __future__ import annotations

import json

from conftest import outcomes

LATER = """
def test_later():
    items = [bytearray(100_000) for _ in range(3)]
    table = {str(i): i for i in range(2_000)}
    assert items and table
"""


USES_TRACEMALLOC = """
import tracemalloc

def test_uses_tracemalloc():
    tracemalloc.start()
    tracemalloc.stop()

def test_plain():
    data = bytearray(5000)
"""


def _tests(project, *args: str) -> tuple:
    path = project.path / "results.json"
    result = project.run("--memcheck", "--memcheck-json", str(path), *args)
    data = json.loads(path.read_text())
    return result, {t["nodeid"].split("::", 1)[1]: t for t in data["tests"]}, data["totals"]


def test_tracemalloc_in_a_test_is_reported_and_later_tests_are_exact_again(project):
    project.pytester.makeconftest("import tracemalloc")
    project.pytester.makepyfile(
        test_a_left="""
        import tracemalloc

        def test_starts_and_leaves_it_running():
            tracemalloc.start(5)
            data = bytearray(1000)
        """,
        test_b_later=LATER,
        test_c_stops="""
        import tracemalloc

        def test_stops_it():
            tracemalloc.stop()
        """,
        test_d_both="""
        import tracemalloc

        def test_starts_and_stops():
            tracemalloc.start()
            data = bytearray(5000)
            tracemalloc.stop()
        """,
        test_e_later=LATER,
        test_f_untouched="""
        def test_plain():
            data = bytearray(5000)
        """,
    )
    result, tests, totals = _tests(project)
    assert result.ret == 0, result.stdout.str()
    for name in ("test_starts_and_leaves_it_running", "test_stops_it", "test_starts_and_stops"):
        assert tests[name]["outcome"] == "disturbed", (name, tests[name])
        assert not tests[name]["recordable"]
        assert "tracemalloc" in tests[name]["disturbed"]
    # The negative control: a test that does not touch tracemalloc is intact.
    assert tests["test_plain"]["outcome"] == "new"
    assert "disturbed" not in tests["test_plain"]
    assert totals.get("disturbed") == 3, totals
    result.stdout.fnmatch_lines(["*disturbed: test_a_left.py::*tracemalloc*not gated*"])
    # While tracemalloc ran (left by an earlier test), and after, a test measures exactly what
    # it measures in a run where nobody touched tracemalloc.
    alone = project.pytester.mkdir("alone")
    (alone / "test_b_later.py").write_text(LATER)
    (alone / "conftest.py").write_text("import tracemalloc\n")
    path = project.path / "alone.json"
    assert project.run("--memcheck", "--memcheck-json", str(path), str(alone)).ret == 0
    [reference] = json.loads(path.read_text())["tests"]
    for name in ("test_b_later.py::test_later", "test_e_later.py::test_later"):
        later = next(
            t
            for t in json.loads((project.path / "results.json").read_text())["tests"]
            if t["nodeid"] == name
        )
        assert later["outcome"] == "new"
        assert later["measured"] == reference["measured"], (name, later, reference)


def test_a_disturbed_test_is_not_written_by_an_update_and_fails_only_when_strict(project):
    project.pytester.makepyfile(test_tm=USES_TRACEMALLOC)
    assert project.run("--memcheck-update").ret == 0
    written = project.baselines("test_tm.toml")
    assert "test_plain" in written and "test_uses_tracemalloc" not in written
    strict = project.run("--memcheck", "--memcheck-strict")
    assert outcomes(strict) == {"passed": 1, "failed": 1}, strict.stdout.str()
    strict.stdout.fnmatch_lines(["*cannot be trusted (strict mode)*tracemalloc*"])


def test_fixture_garbage_is_collected_as_without_the_plugin(project):
    # 300 tests whose fixture leaves cyclic garbage: measured, the run must not keep it.
    project.pytester.makeconftest(
        """
        import gc

        def pytest_sessionfinish(session):
            import test_garbage
            alive = sum(1 for o in gc.get_objects() if type(o) is test_garbage.Node)
            print(f"\\nNODES ALIVE {alive} FROZEN {gc.get_freeze_count()}")
        """
    )
    project.pytester.makepyfile(
        test_garbage="""
        import pytest

        class Node:
            def __init__(self):
                self.me = self
                self.payload = [bytes(1024) for _ in range(1024)]  # 1 MiB

        @pytest.fixture
        def garbage():
            yield Node()

        @pytest.mark.parametrize("i", range(300))
        def test_uses(garbage, i):
            assert garbage.me is garbage
        """
    )

    def alive(*args: str) -> tuple[int, int]:
        result = project.run("-s", *args)
        assert result.ret == 0, result.stdout.str()
        line = next(x for x in result.stdout.lines if x.startswith("NODES ALIVE"))
        _, _, nodes, _, frozen = line.split()
        return int(nodes), int(frozen)

    plain_nodes, _ = alive()
    nodes, frozen = alive("--memcheck")
    assert frozen == 0  # no gc.freeze() outlives a window
    # Garbage waits for a full collection, which runs when resident memory grew by a sixteenth
    # (+2 MiB): a few MiB not yet collected, never the 300 MiB a frozen heap would keep.
    assert nodes <= plain_nodes + 20, (nodes, plain_nodes)


def test_a_users_own_gc_freeze_is_left_alone(project):
    project.pytester.makeconftest(
        """
        import gc

        KEEP = [[i] for i in range(1000)]
        gc.freeze()

        def pytest_sessionfinish(session):
            print(f"\\nFROZEN {gc.get_freeze_count()}")
        """
    )
    project.pytester.makepyfile(test_x="def test_x():\n    assert [1]\n")
    result = project.run("-s", "--memcheck")
    assert result.ret == 0, result.stdout.str()
    frozen = int(next(x for x in result.stdout.lines if x.startswith("FROZEN")).split()[1])
    assert frozen >= 1000


def test_more_threads_than_can_be_told_apart_is_disturbed_not_silent(project):
    # Threads running before the first test are the run's machinery: their allocations are left
    # out, up to 64 of them. Past that a window says it cannot tell them apart.
    conftest = """
        import threading

        STOP = threading.Event()
        for _ in range({n}):
            threading.Thread(target=STOP.wait, daemon=True).start()
        """
    project.pytester.makepyfile(test_many="def test_x():\n    data = bytearray(10_000)\n")
    outcome = {}
    for n in (60, 70):
        project.pytester.makeconftest(conftest.format(n=n))
        result, tests, _ = _tests(project)
        assert result.ret == 0, result.stdout.str()
        outcome[n] = tests["test_x"]
    assert outcome[60]["outcome"] == "new"
    assert outcome[70]["outcome"] == "disturbed", outcome[70]
    assert "cannot be told apart" in outcome[70]["disturbed"]


def test_github_output_lists_disturbed_tests_with_their_reason(project, monkeypatch):
    project.pytester.makepyfile(test_tm=USES_TRACEMALLOC)
    summary = project.path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert project.run("--memcheck").ret == 0
    text = summary.read_text()
    assert "Not gated, the measurement cannot be trusted:" in text
    lines = [x for x in text.splitlines() if x.startswith("- ")]
    assert len(lines) == 1 and "test\\_uses\\_tracemalloc" in lines[0], text
    assert "started tracemalloc" in lines[0]
