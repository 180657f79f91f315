"""CI output: the results JSON and GitHub Actions annotations and step summary (SPEC §7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_memcheck

try:  # imported here, not inside a measured test
    import jsonschema
except ImportError:
    jsonschema = None

SCHEMA = Path(pytest_memcheck.__file__).with_name("results.schema.json")

GROWING = """
import os

def test_alloc():
    bytearray(int(os.environ.get("ALLOC", str(1 << 20))))

def test_small():
    pass
"""


@pytest.mark.skipif(jsonschema is None, reason="jsonschema is not installed")
def test_results_json_follows_the_schema(project, monkeypatch):
    schema = json.loads(SCHEMA.read_text())
    project.pytester.makepyfile(test_grow=GROWING)
    assert project.run("--memcheck-update", "--memcheck-json=out/first.json").ret == 0
    first = json.loads((project.path / "out" / "first.json").read_text())
    jsonschema.validate(first, schema)
    assert first["totals"]["new"] == 2 and first["complete"] is True
    monkeypatch.setenv("ALLOC", str(4 << 20))
    assert project.run("--memcheck", "--memcheck-json=second.json").ret == 1
    second = json.loads((project.path / "second.json").read_text())
    jsonschema.validate(second, schema)
    over = [t for t in second["tests"] if t["outcome"] == "over"]
    assert [t["nodeid"] for t in over] == ["test_grow.py::test_alloc"]
    assert over[0]["failed"] and over[0]["measured"]["peak"] > over[0]["limits"]["peak"]
    assert over[0]["baseline"]["peak"] < 2 << 20
    assert over[0]["location"] == {"path": "test_grow.py", "line": 3}
    assert "memcheck: over budget" in over[0]["message"]
    # The schema really constrains: a broken document is refused.
    second["tests"][0]["outcome"] = "fine"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(second, schema)


def test_github_annotations_are_escaped(project, monkeypatch, tmp_path):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    project.pytester.makepyfile(
        test_hostile="""
        import pytest

        @pytest.mark.parametrize("x", ["100%,a:b\\r\\n::warning::pwned|x"])
        @pytest.mark.memcheck(peak="1 KiB")
        def test_evil(x):
            bytearray(1 << 20)
        """
    )
    result = project.run("--memcheck", "--memcheck-json=r.json")
    assert result.ret == 1
    lines = [line for line in result.stdout.lines if line.startswith("::")]
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(
        "::error file=test_hostile.py,line=3,title=memcheck%3A test_hostile.py%3A%3Atest_evil["
    )
    # pytest itself escapes CR/LF in ids (as \\r\\n); the multi-line message and the id's
    # %, comma and colons are escaped by us (raw CR/LF ids are covered in src/github.rs).
    assert "[100%25%2Ca%3Ab" in line and "%3A%3Awarning%3A%3Apwned" in line
    assert "memcheck: over budget%0A  peak" in line.split("::", 2)[2]
    assert "\r" not in line
    text = summary.read_text()
    assert "## pytest-memcheck" in text and "| over |" in text
    assert "pwned\\|x" in text, text
    assert "memcheck update --from r.json" in text


def test_no_github_output_outside_actions(project):
    project.pytester.makepyfile(test_grow=GROWING)
    result = project.run("--memcheck")
    assert not [line for line in result.stdout.lines if line.startswith("::")]
