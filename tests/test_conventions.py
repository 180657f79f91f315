"""pytest's conventions: our warning category, ini keys mirroring the options, negations, and
`--memcheck-update` that leaves the test paths alone."""

from __future__ import annotations

import json

import pytest
from conftest import outcomes

TWO = """
def test_small():
    assert len([0] * 10) == 10

def test_big():
    assert len(bytearray(4 << 20)) == 4 << 20
"""

# A test that passes on its first run and fails on a second one in the same process.
ONCE = """
import warnings

import pytest

seen = []

def warn_on_first_use():
    if not seen:
        seen.append(1)
        warnings.warn("first use", DeprecationWarning)

def test_warns_once():
    with pytest.warns(DeprecationWarning, match="first use"):
        warn_on_first_use()
    data = bytearray(1 << 20)
    assert len(data) == 1 << 20
"""


def test_warning_category_is_exported():
    import pytest_memcheck

    assert "PytestMemcheckWarning" in pytest_memcheck.__all__
    assert issubclass(pytest_memcheck.PytestMemcheckWarning, pytest.PytestWarning)


@pytest.mark.parametrize("how", ["-W error", "ini filterwarnings = error"])
def test_update_keeps_the_outcome_under_warnings_as_errors(project, how):
    """The second (confirming) run of an update fails a pytest.warns that only warns once: the
    first run's pass stands, and our note about it is shown, not raised."""
    project.pytester.makepyfile(test_once=ONCE)
    args = ["-W", "error"] if how == "-W error" else []
    if how != "-W error":
        project.pytester.makeini("[pytest]\nfilterwarnings =\n    error\n")
    plain = project.run(*args)
    assert outcomes(plain) == {"passed": 1}
    result = project.run("--memcheck-update", *args)
    assert result.ret == 0, result.stdout.str()
    assert outcomes(result) == {"passed": 1, "warnings": 1}
    result.stdout.fnmatch_lines(
        [
            "*PytestMemcheckWarning: memcheck: test_once.py::test_warns_once: the confirming "
            "second run raised Failed: DID NOT WARN*",
            "*= memcheck =*",
            "warning: memcheck: test_once.py::test_warns_once: the confirming second run*",
        ]
    )
    assert "test_warns_once" in project.baselines("test_once.toml")
    # The note goes through the filters: an ignore silences it.
    ignored = project.run(
        "--memcheck-update", *args, "-W", "ignore::pytest_memcheck.PytestMemcheckWarning"
    )
    assert outcomes(ignored) == {"passed": 1}
    assert "PytestMemcheckWarning" not in ignored.stdout.str()


def test_update_keeps_a_pass_when_the_second_run_fails(project):
    """Negative control of the above without warnings: a second run that calls pytest.fail."""
    project.pytester.makepyfile(
        test_fail_again="""
        import pytest
        runs = []
        def test_once():
            runs.append(1)
            if len(runs) > 1:
                pytest.fail("ran twice")
        """
    )
    result = project.run("--memcheck-update")
    assert outcomes(result) == {"passed": 1, "warnings": 1}
    result.stdout.fnmatch_lines(["*second run raised Failed: ran twice*"])
    # From an xdist worker the warning reaches the controller's summary and our section.
    result = project.run("--memcheck-update", "-n", "2", "-W", "error")
    assert outcomes(result) == {"passed": 1, "warnings": 1}
    result.stdout.fnmatch_lines(
        [
            "*PytestMemcheckWarning: memcheck: test_fail_again.py::test_once: the confirming*",
            "*= memcheck =*",
            "warning: memcheck: test_fail_again.py::test_once: the confirming second run raised*",
        ]
    )
    # Without confirmation, nothing runs twice: no note.
    result = project.run("--memcheck-update", "--memcheck-confirm=no")
    assert outcomes(result) == {"passed": 1}


def test_update_flag_leaves_the_test_path_alone(project):
    project.pytester.makepyfile(test_two=TWO)
    project.pytester.makepyfile(test_other="def test_other():\n    pass\n")
    result = project.run("--memcheck-update", "test_two.py")
    assert outcomes(result) == {"passed": 2}
    assert not (project.path / "baselines" / "test_other.toml").exists()
    before = project.text("test_two.toml")
    # =all rewrites every entry; the spelling of old (an option value) still works.
    for spelling in ("--memcheck-update=all", "--memcheck-update-all"):
        result = project.run(spelling, "test_two.py")
        assert outcomes(result) == {"passed": 2}
        result.stdout.fnmatch_lines(["*update: all*"])
    assert project.text("test_two.toml") == before
    assert not (project.path / "baselines" / "test_other.toml").exists()
    result = project.run("--memcheck-update", "test_other.py")
    assert outcomes(result) == {"passed": 1}
    assert (project.path / "baselines" / "test_other.toml").exists()


def _json(project, name="r.json"):
    return json.loads((project.path / name).read_text())


def test_ini_keys_mirror_the_options_and_negations_switch_them_off(project):
    project.pytester.makepyfile(test_two=TWO)
    project.pytester.makeini(
        "[pytest]\nmemcheck = true\nmemcheck_strict = true\nmemcheck_json = r.json\n"
    )
    # memcheck = true measures without the option; strict fails the new tests.
    result = project.run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert outcomes(result) == {"failed": 2}
    assert len(_json(project)["tests"]) == 2
    result = project.run("--no-memcheck-strict")
    assert outcomes(result) == {"passed": 2}
    (project.path / "r.json").unlink()
    result = project.run("--no-memcheck")
    assert outcomes(result) == {"passed": 2}
    assert "= memcheck =" not in result.stdout.str()
    assert not (project.path / "r.json").exists()


def test_precedence_command_line_ini_tool_table(project):
    """--memcheck-floor over ini memcheck_floor over [tool.memcheck] floor, as the header shows."""
    project.pytester.makepyfile(test_two=TWO)
    project.pytester.makepyprojecttoml(
        '[tool.memcheck]\nfloor = "1 KiB"\ntolerance = "3%"\n'
        '[tool.pytest.ini_options]\nmemcheck_floor = "2 KiB"\n'
    )
    header = "memcheck: meter python, tolerance {}, floor {} (pyproject.toml)*"
    result = project.run("--memcheck")
    result.stdout.fnmatch_lines([header.format("3%", "2.00 KiB")])
    result = project.run("--memcheck", "--memcheck-floor=4KiB")
    result.stdout.fnmatch_lines([header.format("3%", "4.00 KiB")])
    result = project.run("--memcheck", "-o", "memcheck_floor=8KiB")
    result.stdout.fnmatch_lines([header.format("3%", "8.00 KiB")])


def test_precedence_of_switches(project):
    """strict = true in [tool.memcheck] holds when no ini key is written (an unset ini key is
    not false), an ini false overrides it, and the command line overrides both."""
    project.pytester.makepyfile(test_two=TWO)
    project.pytester.makepyprojecttoml("[tool.memcheck]\nstrict = true\n")
    assert outcomes(project.run("--memcheck")) == {"failed": 2}
    assert outcomes(project.run("--memcheck", "--no-memcheck-strict")) == {"passed": 2}
    project.pytester.makepyprojecttoml(
        "[tool.memcheck]\nstrict = true\n[tool.pytest.ini_options]\nmemcheck_strict = false\n"
    )
    assert outcomes(project.run("--memcheck")) == {"passed": 2}
    assert outcomes(project.run("--memcheck", "--memcheck-strict")) == {"failed": 2}


def test_bad_ini_values_name_the_key(project):
    project.pytester.makepyfile(test_two=TWO)
    for line, message in (
        ("memcheck_floor = 12 parsecs", "*memcheck_floor in tox.ini: invalid size*parsecs*"),
        ("memcheck_leaks = 2", "*memcheck_leaks in tox.ini: expected W:R*"),
        ("memcheck_meter = valgrind", "*memcheck_meter in tox.ini: unknown meter 'valgrind'*"),
    ):
        project.pytester.makeini(f"[pytest]\nmemcheck = true\n{line}\n")
        result = project.run()
        assert result.ret == pytest.ExitCode.USAGE_ERROR, line
        result.stderr.fnmatch_lines([message])


def test_a_disturbed_measurement_does_not_fail_the_test_under_warnings_as_errors(project):
    """A test that starts tracemalloc cannot be measured; whatever we say about it is not raised
    into it (on main it was a UserWarning, an error under -W error)."""
    project.pytester.makepyfile(
        test_tm="""
        import tracemalloc

        def test_leaves_tracemalloc_running():
            tracemalloc.start()
            data = bytearray(5000)
            assert tracemalloc.get_traced_memory()[0] >= 5000

        def test_zz_stops_it():
            tracemalloc.stop()
        """
    )
    assert outcomes(project.run("-W", "error")) == {"passed": 2}
    for mode in ("--memcheck", "--memcheck-update"):
        result = project.run(mode, "-W", "error")
        assert result.parseoutcomes()["passed"] == 2, result.stdout.str()
        assert "failed" not in result.parseoutcomes()


def test_update_from_the_ini_and_its_negation(project):
    project.pytester.makepyfile(test_two=TWO)
    project.pytester.makeini("[pytest]\nmemcheck_update = all\n")
    result = project.run("--no-memcheck-update")
    assert outcomes(result) == {"passed": 2}
    assert not (project.path / "baselines").exists()
    result = project.run()
    result.stdout.fnmatch_lines(["memcheck: *update: all"])
    assert set(project.baselines("test_two.toml")) == {"memcheck", "test_small", "test_big"}


def test_our_options_without_memcheck_say_they_do_nothing(project):
    # `--memcheck-json r.json` alone used to be a silent no-op: no file, no word.
    project.pytester.makepyfile(test_a="def test_a():\n    pass\n")
    result = project.run("-q", "--memcheck-json", "r.json", "--memcheck-tolerance=5%")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "memcheck: --memcheck-json, --memcheck-tolerance given without --memcheck: nothing "
            "is measured or written (add --memcheck, or --memcheck-update to record)"
        ]
    )
    assert not (project.path / "r.json").exists()
    # Negative controls: with --memcheck they do what they say; without any, nothing is said.
    result = project.run("--memcheck", "--memcheck-json", "r.json")
    assert "given without --memcheck" not in result.stdout.str()
    assert (project.path / "r.json").exists()
    assert "given without --memcheck" not in project.run().stdout.str()


def test_the_update_mode_as_a_word_of_its_own_is_explained(project):
    project.pytester.makepyfile(test_a="def test_a():\n    pass\n")
    result = project.run("--memcheck-update", "all")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*'all' is not a file or directory: the update mode is written --memcheck-update=all, "
            "with '='"
        ]
    )
    # Negative control: the same word naming a directory that exists is a path, as pytest has it.
    (project.path / "all").mkdir()
    (project.path / "all" / "test_b.py").write_text("def test_b():\n    pass\n")
    assert project.run("--memcheck-update", "all").ret == 0
