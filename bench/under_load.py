#!/usr/bin/env python3
"""The gate's defaults under load: no false alarm on thread-heavy tests, a real regression caught.

Builds a small suite in a temporary directory — a producer/consumer test whose queue backs up
depending on thread scheduling, threads whose allocations overlap or not, a thread pool, a
stable 4 MiB test and a few plain ones — then

  * one plain run without the plugin (every test must pass),
  * records baselines (``--memcheck-update``, pytest-randomly seed 1), without load,
  * runs the gate N times (default 5) with pytest-randomly seeds and ``PYTHONHASHSEED`` 2, 3, …
    while CPU burners (one per core but one) keep the other cores busy: a false alarm is a test
    the gate fails although nothing changed,
  * runs the gate N more times, same seeds and load, with a +20 % regression planted in the
    stable test (4 MiB → 4.8 MiB): it must fail every time, and nothing else.

Everything at the defaults (tolerance 10 %, floor 64 KiB). Stdlib only; it benchmarks the
interpreter that runs it, so use the project's venv (pytest-randomly installed):

    .venv/bin/python bench/under_load.py [--runs 5] [--burners N] [--keep]

Prints a Markdown report to stdout (progress on stderr); exit status 1 when there was a false
alarm or a missed regression.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

MIB = 1 << 20

SUITE = {
    "tests/test_threads.py": '''
import concurrent.futures
import os
import queue
import threading
import time

CHUNK = 64 * 1024


def test_producer_consumer():
    """The queue backs up as far as scheduling lets the producer run ahead: 1 to 25 MiB."""
    q = queue.Queue()

    def producer():
        for _ in range(400):
            q.put(bytes(CHUNK))
        q.put(None)

    def consumer():
        seen = 0
        while (item := q.get()) is not None:
            seen += len(item)
        assert seen == 400 * CHUNK

    threads = [threading.Thread(target=consumer), threading.Thread(target=producer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_threads_overlap_or_not():
    """Eight threads each hold 1 MiB for a while: how many at once depends on scheduling."""

    def work():
        block = bytearray(MIB)
        for i in range(0, MIB, 64 * 1024):
            block[i] = 1
            time.sleep(0)  # let the others run, or not
        return sum(block[::4096])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_pool_map():
    """Thread-heavy but stable: the results are held, 8 MiB whatever the order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        blocks = list(pool.map(bytes, [256 * 1024] * 32))
    assert sum(map(len, blocks)) == 8 * MIB


def test_stable():
    """4 MiB; GROW=1 plants a +20 % regression."""
    size = 4 * MIB * 6 // 5 if os.environ.get("GROW") == "1" else 4 * MIB
    data = bytearray(size)
    assert len(data) == size


MIB = 1 << 20
''',
    "tests/test_plain.py": """
import json


def test_dicts():
    d = {str(i): [i] * 10 for i in range(20000)}
    assert len(d) == 20000


def test_json_round_trip():
    doc = {"items": [{"id": i, "name": f"n{i}"} for i in range(5000)]}
    assert json.loads(json.dumps(doc)) == doc


def test_strings():
    s = "".join(str(i) for i in range(100000))
    assert len(s) > 100000
""",
    "pyproject.toml": """
[tool.pytest.ini_options]
testpaths = ["tests"]

[tool.memcheck]
""",
}

STABLE = "tests/test_threads.py::test_stable"


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def pytest(root: Path, *args: str, seed: int | None = None, grow: bool = False) -> dict:
    """One pytest run: its exit status, the tests it failed (from JUnit XML) with whether the
    failure is memcheck's, and the peaks of the results JSON."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS", "GROW")}
    env["PYTHONHASHSEED"] = str(seed or 0)
    if grow:
        env["GROW"] = "1"
    xml = root / "junit.xml"
    results = root / "results.json"
    for p in (xml, results):
        p.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:memray"]
    command += [f"--junitxml={xml}"]
    command += ["-p", "no:randomly"] if seed is None else [f"--randomly-seed={seed}"]
    command += list(args)
    started = time.monotonic()
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    took = time.monotonic() - started
    failed = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            nodeid = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
            failed[nodeid] = "memcheck" in (problem.get("message") or "")
    measured = {}
    unstable = []
    if results.exists():
        for t in json.loads(results.read_text())["tests"]:
            measured[t["nodeid"]] = t["measured"]["peak"]
            if t.get("unstable"):
                unstable.append(t["nodeid"])
    return {
        "ret": done.returncode,
        "failed": failed,
        "peaks": measured,
        "unstable": unstable,
        "took": took,
        "tail": (done.stdout + done.stderr)[-3000:],
    }


def burners(n: int) -> list[subprocess.Popen]:
    code = "while True: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--burners", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--keep", action="store_true", help="keep the generated directory")
    parser.add_argument(
        "--without-spread",
        action="store_true",
        help="negative control: drop the recorded spreads (peak_max, retained_max) before the "
        "gate runs, as if every test were recorded stable (the gate before unstable tests)",
    )
    opt = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="memcheck-under-load-"))
    for name, text in SUITE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text.lstrip())
    problems = []
    try:
        plain = pytest(root, "-p", "no:memcheck")
        if plain["ret"] != 0:
            log(plain["tail"])
            raise SystemExit("the suite does not pass without the plugin")
        log(f"plain run: {plain['took']:.1f} s")
        update = pytest(root, "--memcheck-update", f"--memcheck-json={root / 'results.json'}", seed=1)
        if update["ret"] != 0:
            log(update["tail"])
            raise SystemExit("--memcheck-update failed")
        log(f"baselines recorded ({update['took']:.1f} s); unstable: {update['unstable']}")
        path = root / "baselines/tests/test_threads.toml"
        baselines = path.read_text()
        if opt.without_spread:
            lines = baselines.splitlines(keepends=True)
            path.write_text("".join(line for line in lines if "_max = " not in line))

        rows = []
        for grow in (False, True):
            for i in range(opt.runs):
                seed = 2 + i
                load = burners(opt.burners)
                try:
                    time.sleep(0.2)  # the burners are running
                    run = pytest(
                        root,
                        "--memcheck",
                        f"--memcheck-json={root / 'results.json'}",
                        seed=seed,
                        grow=grow,
                    )
                finally:
                    stop(load)
                alarms = sorted(
                    n for n, ours in run["failed"].items() if ours and not (grow and n == STABLE)
                )
                other = sorted(n for n, ours in run["failed"].items() if not ours)
                caught = STABLE in run["failed"]
                rows.append((grow, seed, run, alarms, other, caught))
                log(
                    f"{'regression' if grow else 'gate'} seed {seed}: {run['took']:.1f} s, "
                    f"false alarms {alarms}, other failures {other}, stable failed {caught}"
                )
                if alarms or other:
                    problems.append(f"seed {seed}{' (+20 %)' if grow else ''}: {alarms or other}")
                    log(run["tail"])
                if grow and not caught:
                    problems.append(f"seed {seed}: the +20 % regression passed")
    finally:
        if opt.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    mib = lambda b: f"{b / MIB:.1f}"  # noqa: E731
    print(f"## Under load ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, {opt.burners} CPU burner(s) during the "
        f"gate runs, CPython {platform.python_version()}, defaults (tolerance 10 %, floor 64 KiB)."
        f" Baselines recorded without load (seed 1), {update['took']:.1f} s"
        + (", their spreads then dropped (--without-spread)" if opt.without_spread else "")
        + "; unstable: "
        + (", ".join(f"`{n.split('::')[1]}`" for n in update["unstable"]) or "none")
        + ".\n"
    )
    print("```toml\n" + baselines.split("\n\n", 1)[1].strip() + "\n```\n")
    print(
        "| run | seed | s | producer/consumer peak MiB | overlapping threads peak MiB "
        "| false alarms | stable +20 % failed |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for grow, seed, run, alarms, other, caught in rows:
        pc = run["peaks"].get("tests/test_threads.py::test_producer_consumer", 0)
        ov = run["peaks"].get("tests/test_threads.py::test_threads_overlap_or_not", 0)
        print(
            f"| {'+20 %' if grow else 'gate'} | {seed} | {run['took']:.1f} | {mib(pc)} | {mib(ov)} "
            f"| {len(alarms) + len(other)} | {('yes' if caught else 'NO') if grow else ''} |"
        )
    print()
    if problems:
        print("Problems: " + "; ".join(problems))
        return 1
    print("No false alarm; the +20 % regression failed every run.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
