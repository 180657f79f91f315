#!/usr/bin/env python
"""Wall-clock overhead benchmark for pytest-memcheck.

Generates three synthetic test suites in a temporary directory and times
each one under several contenders, every run in a fresh subprocess:

    plain        python -m pytest ... -p no:memcheck -p no:memray
    memcheck     ... --memcheck --memcheck-baseline-dir <empty tmp dir>
    memray       ... --memray                      (pytest-memray)
    tracemalloc  ... -p tm_plugin                  (tracemalloc start/stop per test)

Runs are interleaved (round-robin over contenders, starting contender
rotated per round) so that machine noise is shared. The median wall time
of each contender is reported together with its ratio to plain pytest, as
a Markdown table that can be pasted into the README.

Usage:
    python bench/overhead.py [--runs N] [--quick] [--scale K]
                             [--suites alloc_heavy,trivial,big_heap]
                             [--contenders plain,memcheck,memray,tracemalloc]

Stdlib only. The interpreter running this script is the one benchmarked
(use the project's venv, e.g. .venv/bin/python bench/overhead.py).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PY = sys.executable
BASE_CMD = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
ALL_SUITES = ["alloc_heavy", "trivial", "big_heap"]
ALL_CONTENDERS = ["plain", "memcheck", "memray", "tracemalloc"]
RUN_TIMEOUT = 1800  # seconds per single pytest run


# --------------------------------------------------------------------------
# suite generation
# --------------------------------------------------------------------------

ALLOC_TEST = '''
def test_alloc_{i}():
    # ~200k small objects: tuples, strs, dicts, lists; all dropped at the end
    keep = []
    for j in range(30_000):
        keep.append((j, str(j), {{"k": j, "v": [j]}}))
    d = {{str(j): [j, j + 1] for j in range(20_000)}}
    s = "-".join(str(x) for x in range(20_000))
    assert len(keep) == 30_000 and len(d) == 20_000 and s
    del keep, d, s
'''

BIG_HEAP_CONFTEST = '''
import pytest


@pytest.fixture(scope="session")
def big_heap():
    # 1.5M one-element tuples + 1.5M ints = ~3M small live objects (~120 MB),
    # alive for the whole session.
    return [(i,) for i in range(1_500_000)]
'''

BIG_HEAP_TEST = '''
def test_heap_{i}(big_heap):
    x = big_heap[{i} * 7001 % len(big_heap)][0]
    tmp = [str(x + k) for k in range(100)]
    assert len(tmp) == 100
'''

TM_PLUGIN = '''
"""Minimal per-test tracemalloc measurement plugin (benchmark contender)."""
import tracemalloc

import pytest

RESULTS = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    tracemalloc.start(1)
    try:
        yield
    finally:
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        RESULTS[item.nodeid] = (current, peak)
'''


def _write_module(path: Path, header: str, template: str, indices) -> None:
    parts = [header]
    for i in indices:
        parts.append(template.format(i=i))
    path.write_text("".join(parts))


def _write_tests(suite_dir: Path, template: str, n: int, per_file: int, prefix: str,
                 header: str = "") -> None:
    for f, start in enumerate(range(0, n, per_file)):
        _write_module(suite_dir / f"test_{prefix}_{f:03d}.py", header, template,
                      range(start, min(n, start + per_file)))


def generate_suites(root: Path, scale: int) -> dict[str, tuple[Path, int]]:
    suites: dict[str, tuple[Path, int]] = {}

    d = root / "alloc_heavy"
    d.mkdir()
    n = 32 * scale
    _write_tests(d, ALLOC_TEST, n, 8, "alloc")
    suites["alloc_heavy"] = (d, n)

    d = root / "trivial"
    d.mkdir()
    n = 500 * scale
    _write_tests(d, "\ndef test_{i}():\n    assert True\n", n, 100, "trivial")
    suites["trivial"] = (d, n)

    d = root / "big_heap"
    d.mkdir()
    (d / "conftest.py").write_text(BIG_HEAP_CONFTEST)
    n = 200 * scale
    _write_tests(d, BIG_HEAP_TEST, n, 50, "heap")
    suites["big_heap"] = (d, n)

    return suites


# --------------------------------------------------------------------------
# contender detection
# --------------------------------------------------------------------------

def _plugin_entry_names(dist_names: tuple[str, ...], default: str) -> list[str]:
    """pytest11 entry-point names registered by the given distributions."""
    try:
        from importlib.metadata import distribution, PackageNotFoundError
    except ImportError:  # pragma: no cover
        return [default]
    names: list[str] = []
    for dn in dist_names:
        try:
            dist = distribution(dn)
        except PackageNotFoundError:
            continue
        for ep in dist.entry_points:
            if ep.group == "pytest11" and ep.name not in names:
                names.append(ep.name)
    return names or [default]


def _help_text(env: dict) -> str:
    try:
        r = subprocess.run(BASE_CMD + ["--help"], capture_output=True, text=True,
                           env=env, timeout=120, cwd=tempfile.gettempdir())
        return r.stdout + r.stderr
    except Exception as e:  # pragma: no cover
        return f"<pytest --help failed: {e}>"


def _pytest_version() -> str:
    try:
        from importlib.metadata import version
        return version("pytest")
    except Exception:
        r = subprocess.run([PY, "-m", "pytest", "--version"], capture_output=True, text=True)
        return (r.stdout + r.stderr).strip()


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


def build_contenders(wanted: list[str], tmp: Path, plugin_dir: Path, base_env: dict):
    """Return (contenders, notes). contenders: name -> (extra_args, env) or None (n/a)."""
    memcheck_names = _plugin_entry_names(("pytest-memcheck", "pytest_memcheck"), "memcheck")
    memray_names = _plugin_entry_names(("pytest-memray", "pytest_memray"), "memray")
    no_memcheck = [a for n in memcheck_names for a in ("-p", f"no:{n}")]
    no_memray = [a for n in memray_names for a in ("-p", f"no:{n}")]

    help_txt = _help_text(base_env)
    notes: list[str] = []
    contenders: dict[str, tuple[list[str], dict] | None] = {}

    tm_env = dict(base_env)
    tm_env["PYTHONPATH"] = os.pathsep.join(
        [str(plugin_dir)] + ([base_env["PYTHONPATH"]] if base_env.get("PYTHONPATH") else []))

    baseline_dir = tmp / "memcheck-baselines"
    baseline_dir.mkdir(exist_ok=True)

    for name in wanted:
        if name == "plain":
            contenders[name] = (no_memcheck + no_memray, base_env)
        elif name == "memcheck":
            if "--memcheck" not in help_txt:
                contenders[name] = None
                notes.append("memcheck: `--memcheck` option not found in `pytest --help` "
                             "(pytest-memcheck not installed in this interpreter?) -> n/a")
            else:
                contenders[name] = (no_memray + ["--memcheck", "--memcheck-baseline-dir",
                                                 str(baseline_dir)], base_env)
        elif name == "memray":
            if "--memray" not in help_txt:
                contenders[name] = None
                notes.append("memray: pytest-memray not installed "
                             "(`pip install pytest-memray`) -> n/a")
            else:
                contenders[name] = (no_memcheck + ["--memray"], base_env)
        elif name == "tracemalloc":
            contenders[name] = (no_memcheck + no_memray + ["-p", "tm_plugin"], tm_env)
        else:
            raise SystemExit(f"unknown contender {name!r}")
    return contenders, notes


# --------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------

class RunError(Exception):
    pass


def run_once(suite_dir: Path, args: list[str], env: dict, cwd: Path) -> float:
    cmd = BASE_CMD + args + [str(suite_dir)]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd,
                           timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise RunError(f"timeout after {RUN_TIMEOUT}s: {' '.join(cmd)}") from e
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        tail = "\n".join((r.stdout + "\n" + r.stderr).strip().splitlines()[-40:])
        code = str(r.returncode)
        if r.returncode < 0:
            try:
                code += f" ({signal.Signals(-r.returncode).name})"
            except ValueError:
                pass
        raise RunError(f"exit code {code}: {' '.join(cmd)}\n{tail}")
    return dt


def machine_info() -> list[str]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = [
        f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} CPUs (nproc={_nproc()}), {cpu}, {platform.system()} {platform.release()}",
        f"- python: {platform.python_implementation()} {platform.python_version()} ({PY})",
        f"- pytest: {_pytest_version()}",
    ]
    for dist in ("pytest-memcheck", "pytest-memray", "memray"):
        v = _dist_version(dist)
        if v:
            info.append(f"- {dist}: {v}")
    return info


def _nproc() -> str:
    exe = shutil.which("nproc")
    if exe:
        try:
            return subprocess.run([exe], capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    return str(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else "?"


def fmt_cell(times: list[float] | None, plain_med: float | None, err: str | None,
             is_plain: bool = False) -> str:
    if err is not None:
        return "error"
    if times is None:
        return "n/a"
    med = statistics.median(times)
    if plain_med and plain_med > 0 and not is_plain:
        return f"{med:.2f} (×{med / plain_med:.2f})"
    return f"{med:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=None, help="runs per contender (default 5)")
    ap.add_argument("--quick", action="store_true", help="2 runs per contender")
    ap.add_argument("--scale", type=int, default=1,
                    help="multiply the number of tests in every suite (default 1)")
    ap.add_argument("--suites", default=",".join(ALL_SUITES),
                    help="comma-separated subset of: %(default)s")
    ap.add_argument("--contenders", default=",".join(ALL_CONTENDERS),
                    help="comma-separated subset of: %(default)s (plain is always run)")
    ap.add_argument("--keep", action="store_true", help="keep the generated temp dir")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the untimed warm-up run per suite/contender")
    opts = ap.parse_args(argv)

    runs = opts.runs if opts.runs is not None else (2 if opts.quick else 5)
    if runs < 1:
        ap.error("--runs must be >= 1")
    suites_wanted = [s.strip() for s in opts.suites.split(",") if s.strip()]
    for s in suites_wanted:
        if s not in ALL_SUITES:
            ap.error(f"unknown suite {s!r}")
    cont_wanted = [c.strip() for c in opts.contenders.split(",") if c.strip()]
    if "plain" not in cont_wanted:
        cont_wanted.insert(0, "plain")

    tmp = Path(tempfile.mkdtemp(prefix="memcheck-bench-"))
    try:
        plugin_dir = tmp / "plugins"
        plugin_dir.mkdir()
        (plugin_dir / "tm_plugin.py").write_text(textwrap.dedent(TM_PLUGIN))
        (tmp / "suites").mkdir()
        suites = generate_suites(tmp / "suites", opts.scale)
        work = tmp / "cwd"  # neutral cwd: no stray conftest/ini picked up
        work.mkdir()

        base_env = dict(os.environ)
        for k in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTHONTRACEMALLOC", "PYTHONDEVMODE"):
            base_env.pop(k, None)
        base_env["PYTHONDONTWRITEBYTECODE"] = "1"
        base_env.setdefault("PYTHONHASHSEED", "0")

        contenders, notes = build_contenders(cont_wanted, tmp, plugin_dir, base_env)
        active = [c for c in cont_wanted if contenders.get(c) is not None]

        print(f"# pytest-memcheck overhead benchmark: {runs} run(s) per contender, "
              f"scale {opts.scale}", file=sys.stderr)
        for n in notes:
            print(f"# note: {n}", file=sys.stderr)

        times: dict[tuple[str, str], list[float]] = {}
        errors: dict[tuple[str, str], str] = {}
        for suite in suites_wanted:
            sdir, ntests = suites[suite]
            for c in active:
                times[(suite, c)] = []
            # untimed warm-up: fills OS page cache, compiles nothing (no .pyc), but
            # also catches broken contenders early.
            if not opts.no_warmup:
                for c in active:
                    extra, env = contenders[c]
                    try:
                        run_once(sdir, extra, env, work)
                    except RunError as e:
                        errors[(suite, c)] = str(e)
                        print(f"# {suite}/{c}: FAILED\n{e}", file=sys.stderr)
            for r in range(runs):
                order = [c for c in active if (suite, c) not in errors]
                k = r % len(order) if order else 0
                order = order[k:] + order[:k]  # rotate start to spread drift
                for c in order:
                    extra, env = contenders[c]
                    try:
                        dt = run_once(sdir, extra, env, work)
                    except RunError as e:
                        errors[(suite, c)] = str(e)
                        print(f"# {suite}/{c}: FAILED\n{e}", file=sys.stderr)
                        continue
                    times[(suite, c)].append(dt)
                    print(f"# {suite:<12} run {r + 1}/{runs} {c:<12} {dt:7.2f}s",
                          file=sys.stderr, flush=True)

        # ---- report -------------------------------------------------------
        cols = ["plain", "memcheck", "memray", "tracemalloc"]
        cols = [c for c in cols if c in cont_wanted]
        header = ["suite"] + [("plain s" if c == "plain" else f"{c} s (×)") for c in cols]
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join(["---"] + ["---:"] * len(cols)) + "|"]
        for suite in suites_wanted:
            _, ntests = suites[suite]
            pt = times.get((suite, "plain"))
            plain_med = (statistics.median(pt) if pt and (suite, "plain") not in errors
                         else None)
            row = [f"{suite} ({ntests} tests)"]
            for c in cols:
                if contenders.get(c) is None:
                    row.append("n/a")
                    continue
                key = (suite, c)
                t = times.get(key)
                row.append(fmt_cell(t if t else None, plain_med, errors.get(key),
                                    is_plain=(c == "plain")))
            lines.append("| " + " | ".join(row) + " |")

        # secondary table: added wall time per test vs plain, in milliseconds
        others = [c for c in cols if c != "plain"]
        per_test = ["| suite | " + " | ".join(f"{c} ms/test" for c in others) + " |",
                    "|" + "|".join(["---"] + ["---:"] * len(others)) + "|"]
        for suite in suites_wanted:
            _, ntests = suites[suite]
            pt = times.get((suite, "plain"))
            plain_med = (statistics.median(pt) if pt and (suite, "plain") not in errors
                         else None)
            row = [suite]
            for c in others:
                t = times.get((suite, c))
                if contenders.get(c) is None:
                    row.append("n/a")
                elif (suite, c) in errors:
                    row.append("error")
                elif not t or plain_med is None:
                    row.append("n/a")
                else:
                    row.append(f"{(statistics.median(t) - plain_med) / ntests * 1000:+.2f}")
            per_test.append("| " + " | ".join(row) + " |")

        print()
        print("\n".join(lines))
        print()
        print(f"Median wall-clock seconds of `python -m pytest -q -p no:cacheprovider "
              f"-p no:randomly <suite>` over {runs} run(s), each in a fresh process "
              f"(interpreter start-up and collection included); (×) = ratio to plain.")
        print()
        print("Added wall time per test relative to plain (median difference / number of tests):")
        print()
        print("\n".join(per_test))
        print()
        print("\n".join(machine_info()))
        for n in notes:
            print(f"- note: {n}")
        if errors:
            print()
            print("Errors:")
            for (suite, c), e in errors.items():
                print(f"\n{suite} / {c}:\n```\n{e}\n```")
        return 1 if errors else 0
    finally:
        if opts.keep:
            print(f"# kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
