"""Engine micro-benchmarks: cost per allocation, fixed cost per test, meter memory per live block.

    python bench/engine.py

Prints a Markdown table. Loop timings are the best of 9 runs, per-test costs medians of 2000; the numbers go into the
README with the machine and date, never into a test.
"""

from __future__ import annotations

import gc
import platform
import statistics
import sys
import time

from pytest_memcheck import _engine

N = 1_000_000


def churn():
    # Small objects created and dropped: the allocator's hot path.
    for _ in range(N):
        _ = [None]


def keep_many():
    return [(i,) for i in range(N)]


def best_time(fn, repeat=9):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)  # the least disturbed run: microbenchmark convention


def main() -> None:
    rows = []
    # The rss meter runs the same window protocol without allocator hooks: the fair "plain".
    plain = best_time(lambda: _engine.measure("rss", churn, ()))
    _, m = _engine.measure("python", churn, ())
    python = best_time(lambda: _engine.measure("python", churn, ()))
    tm = best_time(lambda: _engine.measure("tracemalloc", churn, ()))
    per = lambda t: (t - plain) / m.allocations * 1e9  # noqa: E731
    rows.append(("allocations in the churn loop", f"{m.allocations:,}"))
    rows.append(("cost per allocation, python meter", f"{per(python):.1f} ns"))
    rows.append(("cost per allocation, tracemalloc (1 frame)", f"{per(tm):.1f} ns"))

    _, kept = _engine.measure("python", keep_many, ())
    footprint = _engine.meter_footprint()
    live_blocks = kept.allocations
    rows.append(("live blocks in one window", f"{live_blocks:,}"))
    rows.append(
        (
            "meter bookkeeping (shadow table)",
            f"{footprint / 2**20:.1f} MiB, {footprint / live_blocks:.1f} B per live block",
        )
    )

    def empty():
        pass

    for heap in (0, 3_000_000):
        big = [(i,) for i in range(heap)]
        _engine.measure("python", empty, ())  # first call freezes the heap
        times = []
        for _ in range(2000):
            t0 = time.perf_counter()
            _engine.measure("python", empty, ())
            times.append(time.perf_counter() - t0)
        rows.append(
            (f"fixed cost per test, {heap:,} live objects", f"{statistics.median(times) * 1e6:.0f} µs")
        )
        del big
        gc.unfreeze()
        gc.collect()

    print(f"engine benchmark — {platform.processor() or platform.machine()}, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}\n")
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
