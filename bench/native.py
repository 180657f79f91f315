#!/usr/bin/env python
"""What counting native memory costs: `--memcheck-native` against plain pytest, `--memcheck`
without it, and pytest-memray's native mode (`--memray --native`), on suites built here.

    alloc_native   32 tests; each makes 200,000 malloc/free pairs of 64 B-4 KiB from a C
                   extension compiled here (every buffer written once, as real code does),
                   and keeps 1,000 blocks until the test ends
    churn_native   the same number of calls with nothing written: the allocator's cost alone,
                   the worst case for any interposer
    trivial        500 tests that allocate nothing natively: the fixed cost of switching it on

Every run is a fresh `python -m pytest`; contenders are interleaved round-robin, rotated per
round, and the median of `--runs` wall times is reported with its ratio to plain pytest, as a
Markdown table. Needs a C compiler and Python's headers (sysconfig); Linux with glibc.

    .venv/bin/python bench/native.py [--runs 5] [--suites alloc_native,churn_native,trivial]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

PY = sys.executable
BASE = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]

SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

static void *volatile sink;

/* n malloc/free pairs of 64 B-4 KiB; written when `touch`; `keep` blocks live until the end */
static PyObject *work(PyObject *m, PyObject *args) {
    Py_ssize_t n, keep;
    int touch;
    if (!PyArg_ParseTuple(args, "nnp", &n, &keep, &touch)) return NULL;
    void **kept = malloc(sizeof(void *) * (keep + 1));
    for (Py_ssize_t i = 0; i < keep; i++) kept[i] = malloc(64 + (i * 37) % 4032);
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t size = 64 + (i * 131) % 4032;
        sink = malloc(size);
        if (touch) memset(sink, (int)i, size);
        free(sink);
    }
    for (Py_ssize_t i = 0; i < keep; i++) free(kept[i]);
    free(kept);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {{"work", work, METH_VARARGS, NULL}, {NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "benchnat", NULL, -1, methods};
PyMODINIT_FUNC PyInit_benchnat(void) { return PyModule_Create(&module); }
"""

SUITES = {
    "alloc_native": (32, "benchnat.work(200_000, 1_000, True)"),
    "churn_native": (32, "benchnat.work(200_000, 1_000, False)"),
    "trivial": (500, "x = [1, 2, 3]"),
}

CONTENDERS = {
    "plain": ["-p", "no:memcheck", "-p", "no:memray"],
    "memcheck": ["-p", "no:memray", "--memcheck", "--memcheck-baseline-dir", "{baselines}"],
    "memcheck native": [
        *("-p", "no:memray", "--memcheck", "--memcheck-native"),
        *("--memcheck-baseline-dir", "{baselines}"),
    ],
    "memray native": ["-p", "no:memcheck", "--memray", "--native"],
}


def build(directory: Path) -> None:
    src = directory / "benchnat.c"
    src.write_text(SOURCE)
    out = directory / f"benchnat{sysconfig.get_config_var('EXT_SUFFIX')}"
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        ["cc", "-O2", "-shared", "-fPIC", f"-I{include}", "-o", str(out), str(src)], check=True
    )


def make_suite(root: Path, name: str) -> Path:
    count, body = SUITES[name]
    suite = root / name
    suite.mkdir()
    (suite / "pyproject.toml").write_text("[tool.memcheck]\n")
    lines = ["import benchnat", ""]
    for i in range(count):
        lines += [f"def test_{i}():", f"    {body}", ""]
    (suite / f"test_{name}.py").write_text("\n".join(lines))
    return suite


def run(suite: Path, contender: str, env: dict[str, str]) -> float:
    args = [a.format(baselines=str(suite / "empty-baselines")) for a in CONTENDERS[contender]]
    started = time.perf_counter()
    done = subprocess.run(
        [*BASE, *args], check=False, cwd=suite, env=env, capture_output=True, text=True
    )
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{contender} on {suite.name} failed:\n{done.stdout}\n{done.stderr}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--suites", default=",".join(SUITES))
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    opts = parser.parse_args()
    suites = opts.suites.split(",")
    contenders = opts.contenders.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root)
        env = {**os.environ, "PYTHONPATH": str(root)}
        env.pop("CI", None)
        times: dict[tuple[str, str], list[float]] = {}
        for name in suites:
            suite = make_suite(root, name)
            for r in range(opts.runs):
                order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
                for contender in order:
                    t = run(suite, contender, env)
                    times.setdefault((name, contender), []).append(t)
                    print(f"  {name:13} {contender:16} {t:6.2f} s", file=sys.stderr)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"\n{now}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"CPython {platform.python_version()}, median of {opts.runs} runs\n"
    )
    print("| suite | " + " | ".join(f"{c} s (×)" for c in contenders) + " |")
    print("|---|" + "---:|" * len(contenders))
    for name in suites:
        plain = statistics.median(times[(name, "plain")]) if "plain" in contenders else None
        cells = []
        for c in contenders:
            m = statistics.median(times[(name, c)])
            cells.append(f"{m:.2f}" + (f" (×{m / plain:.2f})" if plain else ""))
        print(f"| {name} ({SUITES[name][0]} tests) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
