#!/usr/bin/env python
"""The same tests, side by side: pytest-memcheck's native_peak against pytest-memray's native
mode (`--memray --native`, "Total memory allocated" at the high watermark), over shuffled runs.

The suite uses real extensions (Pillow's image buffers, lxml's trees); each tool runs it in three
pytest-randomly orders (seeds and PYTHONHASHSEED 1, 2, 3). memray counts every allocation,
Python's included, so its figure is larger by design; what matters is whether it moves from run
to run. Prints a Markdown table.

    .venv/bin/python bench/native_figures.py      (needs Pillow, lxml, pytest-randomly, pytest-memray)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

SUITE = """
import pytest
from PIL import Image
from lxml import etree

KEPT = []
DOCUMENT = b"<a>" + b"<b x='1'>text</b>" * 2000 + b"</a>"

@pytest.mark.parametrize("size", [(64, 64), (500, 400), (1024, 768)])
def test_image(size):
    image = Image.new("RGB", size)
    KEPT.append(image.resize((size[0] // 2, size[1] // 2)))

def test_image_freed():
    image = Image.new("RGBA", (800, 600)).rotate(45)
    assert image.size == (800, 600)

def test_xml_tree_kept():
    KEPT.append(etree.fromstring(DOCUMENT))

def test_xml_tree_freed():
    assert len(etree.fromstring(DOCUMENT)) == 2000

def test_xml_serialised():
    assert etree.tostring(etree.fromstring(DOCUMENT)).startswith(b"<a>")
"""

BASE = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "randomly"]
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
MEMRAY = re.compile(
    r"Allocation results for test_real\.py::(\S+) at the high watermark\s+"
    r"\S* Total memory allocated: ([\d.]+)(B|KiB|MiB|GiB)"
)


def run(cwd: Path, seed: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    env.pop("CI", None)
    done = subprocess.run(
        [*BASE, f"--randomly-seed={seed}", *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{args} failed:\n{done.stdout}\n{done.stderr}")
    return done


def main() -> None:
    seeds = (1, 2, 3)
    ours: dict[str, list[int]] = {}
    theirs: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pyproject.toml").write_text("[tool.memcheck]\n")
        (root / "test_real.py").write_text(SUITE)
        for seed in seeds:
            run(root, seed, "-p", "no:memray", "--memcheck-update=all", "--memcheck-native")
            data = tomllib.loads((root / "baselines" / "test_real.toml").read_text())
            for test, entry in data.items():
                if test != "memcheck":
                    ours.setdefault(test, []).append(entry["native_peak"])
            out = run(
                root, seed, "-p", "no:memcheck", "--memray", "--native", "--most-allocations=0"
            ).stdout
            for test, amount, unit in MEMRAY.findall(out):
                theirs.setdefault(test, []).append(f"{amount} {unit}")
    print("| test | memcheck native_peak, runs 1 · 2 · 3 (B) | memray --native, runs 1 · 2 · 3 |")
    print("|---|---|---|")
    for test in sorted(ours):
        mine = " · ".join(f"{v:,}" for v in ours[test])
        print(f"| `{test}` | {mine} | {' · '.join(theirs.get(test, ['-']))} |")


if __name__ == "__main__":
    main()
