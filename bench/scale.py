"""The plugin at scale: N test modules of 10 tests each, with N baseline files.

    python bench/scale.py [--modules 100,1000]

For each size: plain pytest, `--memcheck-update` (writes N files), then `--memcheck` against them;
wall time and the pytest process's peak RSS (ru_maxrss of the child). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS_PER_MODULE = 10


def run(cwd: Path, *args: str) -> tuple[float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin"},
    )
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(after, before)  # KiB; ru_maxrss of children is a running maximum


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modules", default="100,1000")
    sizes = [int(n) for n in parser.parse_args().modules.split(",")]
    print("| tests | baseline files | plain s | update s | gated s | gated s per test |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "pytest.ini").write_text("[pytest]\n")
            tests = root / "tests"
            tests.mkdir()
            for m in range(n):
                body = "".join(
                    f"def test_{t}():\n    assert len([{t}] * {t + 10}) == {t + 10}\n\n"
                    for t in range(TESTS_PER_MODULE)
                )
                (tests / f"test_m{m:05}.py").write_text(body)
            plain, _ = run(root, "-p", "no:memcheck", "tests")
            update, _ = run(root, "--memcheck-update", "tests")
            gated, _ = run(root, "--memcheck", "tests")
            files = len(list((root / "baselines").rglob("*.toml")))
            count = n * TESTS_PER_MODULE
            print(f"| {count:,} | {files:,} | {plain:.1f} | {update:.1f} | {gated:.1f} | {gated / count * 1000:.2f} ms |")


if __name__ == "__main__":
    main()
