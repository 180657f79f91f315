"""Bad input gets a clear error naming where it came from, and loses nothing (SPEC §5, §8)."""

from __future__ import annotations

import pytest

SIMPLE = """
def test_a():
    bytearray(1000)
"""


def test_malformed_baseline_file_is_reported_and_untouched(project):
    project.pytester.makepyfile(test_simple=SIMPLE)
    broken = '[memcheck]\nformat = 1\npython = "3.11"\n\n[test_a]\npeak = "lots"\nretained = 0\n'
    path = project.path / "baselines" / "test_simple.toml"
    path.parent.mkdir()
    path.write_text(broken)
    for args in (["--memcheck"], ["--memcheck-update"], ["--memcheck-update=all"]):
        result = project.run(*args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, args
        result.stderr.fnmatch_lines(
            ["*cannot read the baselines, so no test was run: *baselines/test_simple.toml:*:*: *"]
        )
        assert path.read_text() == broken
        # said once, with what to do; no summary of nothing, no second message
        output = result.stdout.str() + result.stderr.str()
        assert "git checkout" in output and "--memcheck-update" in output
        assert "baselines not written" not in output and "0 measured" not in output, output


def test_field_error_names_line_and_column(project):
    project.pytester.makepyfile(test_simple=SIMPLE)
    project.run("--memcheck-update")
    path = project.path / "baselines" / "test_simple.toml"
    path.write_text(path.read_text().replace("retained = 0", "retained = -5"))
    result = project.run("--memcheck")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*baselines/test_simple.toml:12:12: *"])


def test_bad_size_option(project):
    project.pytester.makepyfile(test_simple=SIMPLE)
    result = project.run("--memcheck", "--memcheck-floor=12 parsecs")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--memcheck-floor: invalid size '12 parsecs': unknown unit 'parsecs'*"]
    )
    result = project.run("--memcheck", "--memcheck-tolerance=-5%")
    result.stderr.fnmatch_lines(["*--memcheck-tolerance: invalid percentage '-5%'*"])


def test_bad_config_value_names_file_line_column(project):
    project.pytester.makepyfile(test_simple=SIMPLE)
    project.pytester.makefile(".toml", pyproject="[tool.memcheck]\nfloor = '64 kilobytes'\n")
    result = project.run("--memcheck")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pyproject.toml:2:9: [[]tool.memcheck[]] floor: invalid size*"])
    project.pytester.makefile(".toml", pyproject="[tool.memcheck]\nflor = '64 KiB'\n")
    result = project.run("--memcheck")
    result.stderr.fnmatch_lines(["*pyproject.toml:2:1: *flor*"])


def test_a_fraction_of_a_byte_in_a_marker_is_refused_not_rounded(project):
    # `peak=1.5` once became a limit of 2 B: a unit was forgotten, and the test failed for
    # reasons its author could not see. A fraction of a unit is a size, and so is a whole
    # number written as a float (1048576.0 is 1 MiB).
    body = """
        import pytest

        @pytest.mark.memcheck(peak={})
        def test_a():
            pass
        """
    project.pytester.makepyfile(test_marked=body.format("1.5"))
    result = project.run("--memcheck")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*test_marked.py:3: memcheck marker of test_marked.py::test_a peak=: invalid size '1.5'"
            ": a number without a unit is bytes, and a fraction of a byte is no size; add the unit "
            "you mean, e.g. '1.5 MiB'*"
        ]
    )
    for fine in ("'1.5 MiB'", "1048576.0", "1_000_000"):
        project.pytester.makepyfile(test_marked=body.format(fine))
        assert project.run("--memcheck").ret == pytest.ExitCode.OK, fine


def test_bad_marker_names_the_test(project):
    project.pytester.makepyfile(
        test_marked="""
        import pytest

        @pytest.mark.memcheck(peak="huge")
        def test_a():
            pass
        """
    )
    result = project.run("--memcheck")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*test_marked.py:3: memcheck marker of test_marked.py::test_a peak=: invalid size 'huge'*"]
    )
    # said once: no memcheck section ("0 measured: nothing to report") before the error
    assert "memcheck ===" not in result.stdout.str() and "measured" not in result.stdout.str()
    project.pytester.makepyfile(
        test_marked="""
        import pytest

        @pytest.mark.memcheck(peek="1 MiB")
        def test_a():
            pass
        """
    )
    result = project.run("--memcheck")
    result.stderr.fnmatch_lines(
        ["*test_marked.py:3: memcheck marker of test_marked.py::test_a*peek*"]
    )


def test_bad_update_mode(project):
    project.pytester.makepyfile(test_simple=SIMPLE)
    result = project.run("--memcheck-update=some")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--memcheck-update*: ignored explicit argument 'some'*"])
    project.pytester.makeini("[pytest]\nmemcheck_update = some\n")
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*memcheck_update in tox.ini: expected one of changed, all*"])


def test_update_followed_by_a_test_path(project):
    project.pytester.makepyfile(test_simple=SIMPLE)
    project.pytester.mkdir("other")
    (project.path / "other" / "test_other.py").write_text("def test_b():\n    pass\n")
    result = project.run("--memcheck-update", "other")
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=1)  # only the path given
    assert (project.path / "baselines" / "other" / "test_other.toml").exists()
    assert not (project.path / "baselines" / "test_simple.toml").exists()
