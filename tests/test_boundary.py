"""Every write stays inside the project, and output is escaped for its medium (SPEC §8).

Each way out is tried from pytest (`--memcheck-update`) and from `memcheck update --from` with a
crafted results file (CI artifacts are untrusted input), each with a negative control: the same
command with a safe value writes where expected.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import memcheck

SIMPLE = "def test_x():\n    bytearray(1000)\n"


def results(
    python: str = "3.11",
    nodeids: tuple[str, ...] = ("test_x.py::test_x",),
    baseline_dir: str = "baselines",
) -> dict:
    """A results file as `pytest --memcheck-json` writes it, of a run that read `baseline_dir`
    (`memcheck update` writes there only when the project's settings say the same)."""
    return {
        "schema": "pytest-memcheck/results",
        "version": 1,
        "environment": {
            "python": python,
            "implementation": "cpython",
            "platform": "linux-x86_64",
            "meter": "python",
        },
        "gating": {
            "tolerance": "10%",
            "floor": 65536,
            "strict": False,
            "gate_cycles": False,
            "baseline_dir": baseline_dir,
        },
        "complete": False,
        "totals": {"new": len(nodeids)},
        "tests": [
            {
                "nodeid": nodeid,
                "outcome": "new",
                "failed": False,
                "recordable": True,
                "measured": {"peak": 1105, "retained": 0, "allocations": 3, "cycles": 0},
                "baseline": None,
                "limits": {},
                "location": None,
                "message": "",
            }
            for nodeid in nodeids
        ],
        "stale": [],
    }


def files(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


@pytest.fixture
def cli_project(tmp_path: Path) -> tuple[Path, Path]:
    """A project root with a results file, and an empty directory beside it."""
    root, outside = tmp_path / "project", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "ci.json").write_text(json.dumps(results()))
    return root, outside


def config(root: Path, *lines: str) -> None:
    (root / "pyproject.toml").write_text("[tool.memcheck]\n" + "".join(f"{x}\n" for x in lines))


def baseline_dir_setting(way: str, root: Path, outside: Path) -> tuple[str, str]:
    """A baseline-dir value that leads outside by `way`, and the rule that refuses it."""
    if way == "parent":
        return "../outside", "no-parent"
    if way == "absolute":
        return str(outside), "no-absolute"
    (root / "linked").symlink_to(outside)
    return "linked", "no-symlink-out"


WAYS = ["parent", "absolute", "symlink"]


# -- memcheck update --from ----------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_cli_update_keeps_a_config_baseline_dir_inside(cli_project, way):
    root, outside = cli_project
    value, rule = baseline_dir_setting(way, root, outside)
    config(root, f"baseline-dir = {json.dumps(value)}")
    (root / "ci.json").write_text(json.dumps(results(baseline_dir=value)))
    result = memcheck(root, "update", "--from", "ci.json")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"refused by rule {rule}" in result.stderr, result.stderr
    assert "outside the project root" in result.stderr and "allow-outside-root" in result.stderr
    assert files(outside) == []
    # Negative control: a value inside the project is written where it says.
    config(root, 'baseline-dir = "inside"')
    (root / "ci.json").write_text(json.dumps(results(baseline_dir="inside")))
    result = memcheck(root, "update", "--from", "ci.json")
    assert result.returncode == 0, result.stderr
    assert "wrote inside/test_x.toml: 1 updated" in result.stdout
    assert (root / "inside" / "test_x.toml").is_file()


def test_cli_update_honours_allow_outside_root(cli_project):
    """The documented exception: a reviewed config setting."""
    root, outside = cli_project
    config(root, f"baseline-dir = {json.dumps(str(outside))}", "allow-outside-root = true")
    (root / "ci.json").write_text(json.dumps(results(baseline_dir=str(outside))))
    result = memcheck(root, "update", "--from", "ci.json")
    assert result.returncode == 0, result.stderr
    assert files(outside) == ["test_x.toml"]


@pytest.mark.parametrize("value", ["../../../escaped", "..", "/tmp/escaped", "a/b", "3.11\x1b[2J"])
def test_cli_update_refuses_a_crafted_placeholder_value(cli_project, value):
    root, _ = cli_project
    config(root, 'baseline-dir = "baselines/{python}"')
    (root / "ci.json").write_text(
        json.dumps(results(python=value, baseline_dir="baselines/{python}"))
    )
    before = files(root.parent)
    result = memcheck(root, "update", "--from", "ci.json")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refused by rule plain-placeholder" in result.stderr, result.stderr
    assert "{python} value" in result.stderr and "ci.json" in result.stderr
    assert "\x1b" not in result.stderr
    assert files(root.parent) == before, "nothing written anywhere"
    # Negative control: a plain value fills the placeholder.
    (root / "ci.json").write_text(
        json.dumps(results(python="3.12", baseline_dir="baselines/{python}"))
    )
    result = memcheck(root, "update", "--from", "ci.json")
    assert result.returncode == 0, result.stderr
    assert (root / "baselines" / "3.12" / "test_x.toml").is_file()


@pytest.mark.parametrize(
    "nodeid, refusal",
    [
        ("../../escaped.py::test_x", "climbs out with '..'"),
        ("/tmp/escaped.py::test_x", "absolute"),
        ("sub/\x1b[2J.py::test_x", "refused by rule plain-name"),
    ],
)
def test_cli_update_keeps_crafted_node_ids_inside(cli_project, nodeid, refusal):
    root, _ = cli_project
    (root / "ci.json").write_text(json.dumps(results(nodeids=("ok/test_ok.py::t", nodeid))))
    before = files(root.parent)
    result = memcheck(root, "update", "--from", "ci.json")
    assert result.returncode == 2, result.stdout + result.stderr
    assert refusal in result.stderr, result.stderr
    assert files(root.parent) == before, "nothing written, not even the valid module"
    # Negative control: the valid node id alone is written.
    (root / "ci.json").write_text(json.dumps(results(nodeids=("ok/test_ok.py::t",))))
    assert memcheck(root, "update", "--from", "ci.json").returncode == 0
    assert (root / "baselines" / "ok" / "test_ok.toml").is_file()


def test_cli_check_shows_hostile_ids_as_text(cli_project):
    root, _ = cli_project
    data = results(nodeids=("t.py::t[\x1b[2J\x1b]0;pwned\x07]", "t.py::t[benign-ü]"))
    for t in data["tests"]:
        t.update(outcome="over", failed=True, message="memcheck: over budget\n  \x1b[31mred")
    (root / "ci.json").write_text(json.dumps(data))
    result = memcheck(root, "check", "--from", "ci.json")
    assert result.returncode == 1, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "FAILED t.py::t[\\x1b[2J\\x1b]0;pwned\\x07]" in result.stdout
    assert "  \\x1b[31mred" in result.stdout
    # Negative control: a benign id, unicode included, is printed as it is.
    assert "FAILED t.py::t[benign-ü]" in result.stdout


# -- pytest --memcheck-update --------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_pytest_update_keeps_a_config_baseline_dir_inside(project, tmp_path_factory, way):
    outside = tmp_path_factory.mktemp("outside")
    project.pytester.makepyfile(test_x=SIMPLE)
    value, rule = baseline_dir_setting(way, project.path, outside)
    if way == "parent":  # pytester's project and the outside directory are siblings
        value = os.path.relpath(outside, project.path)
        assert value.startswith("..")
    config(project.path, f"baseline-dir = {json.dumps(value)}")
    result = project.run("--memcheck-update")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*outside the project root*refused by rule {rule}*"])
    assert files(outside) == []
    # Negative control: inside the project.
    config(project.path, 'baseline-dir = "inside"')
    assert project.run("--memcheck-update").ret == 0
    assert (project.path / "inside" / "test_x.toml").is_file()


@pytest.mark.parametrize("platform", ["../../escaped", "..", "/tmp/escaped", "a/b"])
def test_pytest_update_refuses_a_placeholder_value_that_is_not_a_name(project, platform):
    """The interpreter's values fill the placeholders too; a conftest can make them anything."""
    patch = "import sysconfig\nsysconfig.get_platform = lambda: {!r}\n"
    project.pytester.makepyfile(test_x=SIMPLE, conftest=patch.format(platform))
    config(project.path, 'baseline-dir = "baselines/{platform}"')
    result = project.run("--memcheck-update")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*{platform} value*refused by rule plain-placeholder*"])
    assert [f for f in files(project.path) if f.endswith("test_x.toml")] == []
    assert not (project.path.parent / "escaped").exists()
    # Negative control: a plain platform name fills the placeholder.
    project.pytester.makepyfile(conftest=patch.format("linux-custom_1.0"))
    assert project.run("--memcheck-update").ret == 0
    assert (project.path / "baselines" / "linux-custom_1.0" / "test_x.toml").is_file()


def test_pytest_command_line_paths_are_trusted(project, tmp_path_factory):
    """What the user types may point anywhere: the baseline directory and the results file."""
    outside = tmp_path_factory.mktemp("typed")
    project.pytester.makepyfile(test_x=SIMPLE)
    config(project.path, f"baseline-dir = {json.dumps(str(outside / 'b'))}")
    assert project.run("--memcheck-update").ret == pytest.ExitCode.USAGE_ERROR
    result = project.run(
        "--memcheck-update",
        f"--memcheck-baseline-dir={outside / 'b'}",
        f"--memcheck-json={outside / 'r.json'}",
    )
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert files(outside) == ["b/test_x.toml", "r.json"]


def test_pytest_update_refuses_a_symlink_out_under_the_baselines(project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    project.pytester.makepyfile(test_x=SIMPLE)
    (project.path / "sub").mkdir()
    (project.path / "sub" / "test_y.py").write_text(SIMPLE)
    (project.path / "baselines").mkdir()
    (project.path / "baselines" / "sub").symlink_to(outside)
    result = project.run("--memcheck-update")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*baselines not written*refused by rule no-symlink-out*"])
    # nothing was written: the run does not also say the baselines are merely unchanged, and
    # its final line is not the green one of a good run
    result.stdout.no_fnmatch_line("baselines unchanged")
    result.stdout.fnmatch_lines(["=* 2 passed, 1 memcheck error in *"])
    assert files(outside) == []
    assert files(project.path / "baselines") == [], "nothing written, not even test_x.toml"
    # Negative control: a link that stays inside the project is followed.
    (project.path / "baselines" / "sub").unlink()
    (project.path / "real").mkdir()
    (project.path / "baselines" / "sub").symlink_to(project.path / "real")
    result = project.run("--memcheck-update")
    assert result.ret == 0
    result.stdout.no_fnmatch_line("*memcheck error*")
    assert files(project.path / "real") == ["test_y.toml"]


# -- escaping, end to end ------------------------------------------------------------------

HOSTILE_IDS = """
import pytest

@pytest.mark.parametrize("x", ["<script>alert(1)</script>|`x`]", "plain"])
def test_id(x):
    bytearray(1000)
"""


def table_rows(markdown: str) -> list[list[str]]:
    """The rows of the Markdown tables, split at pipes that are not escaped."""
    rows = []
    for line in markdown.splitlines():
        if not line.startswith("|"):
            continue
        cells, cell, chars = [], "", iter(line)
        for c in chars:
            if c == "\\":
                cell += c + next(chars, "")
            elif c == "|":
                cells.append(cell)
                cell = ""
            else:
                cell += c
        rows.append(cells[1:])
    return rows


def test_step_summary_renders_hostile_ids_as_text(project, monkeypatch, tmp_path):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    project.pytester.makepyfile(test_hostile=HOSTILE_IDS)
    result = project.run("--memcheck")
    assert result.ret == 0, result.stdout.str()
    text = summary.read_text()
    assert "<script" not in text and "</script" not in text, text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\|\\`x\\`\\]" in text, text
    rows = table_rows(text)
    assert len(rows) == 2 + 2, rows  # header, alignment, two tests
    assert all(len(row) == 6 for row in rows), rows
    # Negative control: the benign id renders as it is (Markdown's own escapes aside).
    assert "| new | test\\_hostile.py::test\\_id\\[plain\\] |" in text, text


def test_terminal_report_shows_control_characters(project):
    project.pytester.makeini(
        "[pytest]\ndisable_test_id_escaping_and_forfeit_all_rights_to_community_support = true\n"
    )
    project.pytester.makepyfile(
        test_esc="""
        import pytest

        @pytest.mark.parametrize("x", ["\\x1b[2J\\x1b]0;pwned\\x07", "plain-ü"])
        def test_id(x):
            bytearray(1000)
        """
    )
    result = project.run("--memcheck", "-q")
    assert result.ret == 0, result.stdout.str()
    out = result.stdout.str()
    ours = out[out.index("= memcheck =") :]
    assert "\x1b" not in ours and "\x07" not in ours, ours
    assert "test_esc.py::test_id[\\x1b[2J\\x1b]0;pwned\\x07]" in ours, ours
    # Negative control: a benign id, unicode included, is shown as it is.
    assert "test_esc.py::test_id[plain-ü]" in ours, ours


def test_failure_diagnosis_shows_control_characters(project):
    """Type names in "objects that grew" are the test's data: a class can be named anything."""
    project.pytester.makepyfile(
        test_evil="""
        import pytest

        Evil = type("Evil\\x1b[2J\\r", (), {})
        KEPT = []

        @pytest.mark.memcheck(retained="1 KiB")
        def test_leak():
            KEPT.clear()  # runs up to three times (measure, confirm, diagnose): same growth each
            KEPT.extend(Evil() for _ in range(2000))
        """
    )
    result = project.run("--memcheck")
    assert result.ret == 1, result.stdout.str()
    out = result.stdout.str()
    assert "\x1b" not in out and "\r" not in out, out
    assert "test_evil.Evil\\x1b[2J\\x0d" in out, out
    # Negative control: the rest of the diagnosis reads as before.
    result.stdout.fnmatch_lines(
        ["*retained, by site:*", "*test_evil.py:9 in test_leak:*", "*objects that grew: +2000*"]
    )
