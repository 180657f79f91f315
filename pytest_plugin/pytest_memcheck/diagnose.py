"""Finding the cause of a failing test: allocation sites, growth by type, a back-reference chain.

Only tests the gate has failed come here, so passing tests pay nothing: the failing test's body
runs once more, in-process with the same fixtures, under tracemalloc (25 frames) with a profile
hook that snapshots the heap each time it reaches a new high at a function return (the peak's
sites), a snapshot after the collection (the retained sites), and gc.freeze() before it so that
gc.get_objects() afterwards holds exactly the objects the run left behind (growth by type).

A test failed on a native figure (`--memcheck-native`) also has its native allocations recorded
in that run by the engine (`_engine.native_diagnosis_start`/`_stop`): the native stack of each
counted malloc and the Python line that called into the extension, grouped by site.
"""

from __future__ import annotations

import ast
import functools
import gc
import linecache
import os
import sys
import time
import tracemalloc
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, Callable

import pytest

FRAMES = 25
# A test run again may fail or skip where its first run passed (pytest.warns of a warning that
# is only issued once, a pytest.fail on a state the first run changed): that is not the test's
# outcome, the first run's is.
RERUN_ERRORS = (Exception, pytest.fail.Exception, pytest.skip.Exception)
TOP = 5
# Native frames shown of a site (innermost first); the rest are elided.
NATIVE_FRAMES = 4
# The diagnosis run is bounded: peak snapshots (a profile hook, the costly part) stop after
# PROFILE_SECONDS of the run, and the back-reference search after CHAIN_SECONDS or CHAIN_OBJECTS.
PROFILE_SECONDS = 10.0
CHAIN_SECONDS = 2.0
CHAIN_OBJECTS = 20_000
# The peak's sites are said to cover the peak when their snapshot holds this share of it.
PEAK_COVERED = 0.9
# Frames of these are folded away: the site is the innermost frame of the user's own code.
FOLDED = (
    os.sep + "_pytest" + os.sep,
    os.sep + "pluggy" + os.sep,
    os.sep + "pytest_memcheck" + os.sep,
    # Another plugin's wrapper around the test (pytest-memray's) is not where memory went, nor
    # pytest-xdist's worker loop that runs it.
    os.sep + "pytest_memray" + os.sep,
    os.sep + "xdist" + os.sep,
    "tracemalloc.py",
    "<frozen ",
)


def _library_roots() -> tuple[str, ...]:
    """Where the standard library and installed packages live: their frames are folded into the
    user's line that called them (the site of a `json.dumps` regression is the test's call, not
    `json/encoder.py`), and kept in the site's stack."""
    import site
    import sysconfig

    paths = {sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(getattr(site, "getsitepackages", lambda: [])())
    return tuple(sorted(os.path.join(os.path.realpath(p), "") for p in paths if p))


LIBRARY = _library_roots()


@dataclass
class Site:
    path: str
    line: int
    function: str
    size: int
    count: int
    stack: list[tuple[str, int, str]] = field(default_factory=list)  # oldest first
    # The innermost frame, when it is library code folded into this site: `json/encoder.py:258`.
    via: str | None = None

    def show(self, root: Path) -> str:
        try:
            where = str(Path(self.path).resolve().relative_to(root))
        except ValueError:
            where = self.path
        via = f" (via {self.via})" if self.via else ""
        return (
            f"{where}:{self.line} in {self.function}{via}: "
            f"{_size(self.size)} in {_blocks(self.count)}"
        )


@dataclass
class NativeSite:
    """Native allocations of one site: the native frames (innermost first, the C runtime and
    our engine folded away) and the Python frames that were running (innermost first: the
    caller of the extension; empty when the thread did not hold the GIL)."""

    frames: list[str]
    python: list[tuple[str, int, str]]  # path, line, function
    retained: int
    retained_blocks: int
    peak: int
    peak_blocks: int

    def show(self, root: Path, size: int, blocks: int) -> str:
        frames = _compact(self.frames[:NATIVE_FRAMES]) or ["(no native frame)"]
        if len(self.frames) > NATIVE_FRAMES:
            frames.append("...")
        where = " ← ".join(frames)
        caller = _caller(self.python, root)
        if caller:
            where += f" ← called from {caller}"
        plural = "" if blocks == 1 else "s"
        return f"{_size(size)} in {blocks} block{plural}  {where}"


@dataclass
class NativeDiagnosis:
    peak: int
    retained: int
    sites: list[NativeSite]
    error: str | None = None
    past_budget: bool = False

    def lines(self, root: Path, metrics: set[str]) -> list[str]:
        if self.error:
            return [f"  (no native diagnosis: {self.error})"]
        lines = []
        if "native_retained" in metrics:
            kept = [s for s in self.sites if s.retained][:TOP]
            lines.append("  native, retained by site:")
            lines += [f"    {s.show(root, s.retained, s.retained_blocks)}" for s in kept]
            if not kept:
                lines.append("    (nothing retained in the diagnosing run)")
        if "native_peak" in metrics:
            top = sorted((s for s in self.sites if s.peak), key=lambda s: -s.peak)[:TOP]
            lines.append("  native, at the peak by site:")
            lines += [f"    {s.show(root, s.peak, s.peak_blocks)}" for s in top]
            if not top:
                lines.append("    (no native allocation in the diagnosing run)")
        if self.past_budget:
            lines.append(
                "  (native stacks recorded for the first 10 s of the run; later allocations "
                "are counted under one site)"
            )
        return lines


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root))
    except (ValueError, OSError):
        return path


def _compact(frames: list[str]) -> list[str]:
    """`lib.so: f (a.c:1)`, `lib.so: g (a.c:9)` -> `lib.so: f (a.c:1)`, `g (a.c:9)`: a frame
    in the same object as the one before it is shown without the object's name."""
    out, previous = [], None
    for frame in frames:
        obj, sep, rest = frame.partition(": ")
        if not sep:
            obj, sep, rest = frame.partition("+0x")
            rest = sep + rest
        if sep and obj == previous:
            out.append(rest)
        else:
            out.append(frame)
        previous = obj if sep else None
    return out


def _user_frame(python: list[tuple[str, int, str]]) -> tuple[str, int, str] | None:
    """The innermost Python frame of the user's code (else of a library), folded frames
    (pytest's, ours) left out."""
    own = [f for f in python if not any(x in f[0] for x in FOLDED)]
    users = [f for f in own if not _library(f[0])]
    return (users or own or [None])[0]


def _caller(python: list[tuple[str, int, str]], root: Path) -> str | None:
    """The Python line that called into the extension, as the Python sites name theirs: the
    innermost frame of the user's code, a library frame it called shown as `via`."""
    frame = _user_frame(python)
    if frame is None:
        return None
    path, line, function = frame
    where = f"{_relative(path, root)}:{line} in {function}"
    innermost = next(f for f in python if not any(x in f[0] for x in FOLDED))
    if innermost is not frame:
        where += f" (via {_short(innermost[0])}:{innermost[1]})"
    return where


@dataclass
class Diagnosis:
    peak_sites: list[Site]
    retained_sites: list[Site]
    growth: list[tuple[str, int]]
    chain: str | None
    error: str | None = None
    # Folded stacks (`frame;frame size` lines) for flame graphs, all sites.
    peak_folded: str = ""
    retained_folded: str = ""
    # Set when the diagnosis hit one of its bounds: what was left out.
    note: str | None = None
    # Set when the peak's sites do not account for the run's whole peak: what they cover.
    peak_note: str | None = None
    # The retained traces as they are, for pytest-memray's per-location rule (locations.py):
    # (frames oldest first as (filename, line), bytes, blocks, the stack's depth before
    # tracemalloc cut it), and the stack of the thread that ran the test, where the run began.
    retained_traces: list[tuple[tuple[tuple[str, int], ...], int, int, int]] = field(
        default_factory=list
    )
    caller: tuple[tuple[str, int], ...] = ()
    # Native allocation sites, when the test failed on a native figure.
    native: NativeDiagnosis | None = None

    def dump(self, directory: Path, nodeid: str, root: Path) -> None:
        """`--memcheck-dump`: folded stacks and flame graphs of the peak and the retained
        allocations, and a JSON of the top sites. Written by the engine's write boundary: under
        `directory` (the user's choice), atomically."""
        import json

        from pytest_memcheck import _engine

        stem = _engine.dump_stem(nodeid)
        for kind, folded in (("peak", self.peak_folded), ("retained", self.retained_folded)):
            if folded:
                _engine.write_flamegraph(
                    str(directory), f"{stem}.{kind}", folded, f"{nodeid}: {kind} allocations"
                )

        def sites(sites: list[Site]) -> list[dict[str, Any]]:
            return [
                {
                    "site": s.show(root),
                    "path": s.path,
                    "line": s.line,
                    "function": s.function,
                    "bytes": s.size,
                    "blocks": s.count,
                    "stack": [f"{p}:{n} in {f}" for p, n, f in s.stack],
                }
                for s in sites
            ]

        report = {
            "nodeid": nodeid,
            "peak_sites": sites(self.peak_sites),
            "retained_sites": sites(self.retained_sites),
            "growth": dict(self.growth),
            "held_by": self.chain,
        }
        if self.native is not None and not self.native.error:
            report["native_sites"] = [
                {
                    "frames": s.frames,
                    "python": [f"{p}:{n} in {f}" for p, n, f in s.python],
                    "retained_bytes": s.retained,
                    "retained_blocks": s.retained_blocks,
                    "peak_bytes": s.peak,
                    "peak_blocks": s.peak_blocks,
                }
                for s in self.native.sites[:TOP]
            ]
        _engine.write_dump_file(str(directory), f"{stem}.json", json.dumps(report, indent=2) + "\n")

    def text(self, root: Path, metrics: set[str], cycles: int) -> str:
        """The diagnosis for the failure message, escaped for the terminal: type names and paths
        are the test's data (`type("\\x1b[2J", (), {})` is a class name)."""
        from pytest_memcheck import _engine

        return _engine.escape_terminal(self._text(root, metrics, cycles))

    def _text(self, root: Path, metrics: set[str], cycles: int) -> str:
        lines = []
        if self.error:
            return f"  (no diagnosis: {self.error})"
        if "peak" in metrics and self.peak_sites:
            lines.append("  allocated at the peak, by site:")
            lines += [f"    {s.show(root)}" for s in self.peak_sites]
        if "peak" in metrics and self.peak_note:
            lines.append(f"  ({self.peak_note})")
        if "retained" in metrics and self.retained_sites:
            lines.append("  retained, by site:")
            lines += [f"    {s.show(root)}" for s in self.retained_sites]
        if "retained" in metrics and self.growth:
            lines.append(
                "  objects that grew: " + ", ".join(f"+{n} {name}" for name, n in self.growth)
            )
            if self.chain:
                lines.append(f"  held by: {self.chain}")
        if self.native is not None:
            lines += self.native.lines(root, metrics)
        if cycles:
            lines.append(
                f"  reference cycles: {cycles} objects were freed only by the cycle collector"
            )
        if self.note:
            lines.append(f"  ({self.note})")
        return "\n".join(lines)


def _blocks(n: int) -> str:
    return "1 block" if n == 1 else f"{n} blocks"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _function_at(path: str, line: int) -> str:
    """The name of the innermost function or class whose source, decorators included, holds
    path:line: a decorated test's allocations at its decorator line (its code's first line)
    are the test's, not `<module>`'s."""
    spans = _definitions(path)
    if spans is None:
        return "<unknown>"
    inside = [span for span in spans if span[0] <= line <= span[1]]
    # The innermost is the one that starts last (definitions nest, they never overlap).
    return max(inside)[2] if inside else "<module>"


@functools.lru_cache(maxsize=256)
def _definitions(path: str) -> list[tuple[int, int, str]] | None:
    """(first line, last line, name) of every function and class in a source file, or None
    when it cannot be read as Python."""
    source = "".join(linecache.getlines(path))
    if not source:
        return None
    try:
        tree = ast.parse(source, path)
    except (SyntaxError, ValueError):
        return None
    return [
        (
            min([node.lineno] + [d.lineno for d in node.decorator_list]),
            node.end_lineno or node.lineno,
            node.name,
        )
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    ]


def _own(frame: tracemalloc.Frame) -> bool:
    return not any(f in frame.filename for f in FOLDED)


def _library(filename: str) -> bool:
    return os.path.realpath(filename).startswith(LIBRARY)


def _short(filename: str) -> str:
    """A library file by its path under its root (`json/encoder.py`)."""
    real = os.path.realpath(filename)
    for root in LIBRARY:
        if real.startswith(root):
            return real[len(root) :]
    return filename


def _past(frames: list[tracemalloc.Frame], caller: tuple[tuple[str, int], ...]) -> list[Any]:
    """The frames of a stack past those it shares with the stack that began the run: a whole
    stack (locations.STACK_FRAMES) starts at pytest's entry point, which is no site."""
    common = 0
    while (
        common < min(len(frames), len(caller))
        and (frames[common].filename, frames[common].lineno) == caller[common]
    ):
        common += 1
    return frames[common:]


def _sites(snapshot: tracemalloc.Snapshot, caller: tuple[tuple[str, int], ...] = ()) -> list[Site]:
    """Group live blocks by their innermost frame in the user's code."""
    by_site: dict[tuple[str, int], Site] = {}
    for stat in snapshot.statistics("traceback"):
        frames = _past(list(stat.traceback), caller)  # oldest first
        own = [f for f in frames if _own(f)]
        if not own:
            continue
        # The innermost frame of the user's code, the library frames it called folded into it.
        users = [f for f in own if not _library(f.filename)]
        frame = users[-1] if users else own[-1]
        innermost = own[-1]
        key = (frame.filename, frame.lineno)
        site = by_site.get(key)
        if site is None:
            site = by_site[key] = Site(
                frame.filename,
                frame.lineno,
                _function_at(frame.filename, frame.lineno),
                0,
                0,
                [(f.filename, f.lineno, _function_at(f.filename, f.lineno)) for f in own],
                f"{_short(innermost.filename)}:{innermost.lineno}"
                if innermost is not frame
                else None,
            )
        site.size += stat.size
        site.count += stat.count
    return sorted(by_site.values(), key=lambda s: -s.size)


def _folded(snapshot: tracemalloc.Snapshot, caller: tuple[tuple[str, int], ...] = ()) -> str:
    """Folded stacks of the user's frames, oldest first, weighted by bytes."""
    weights: Counter[str] = Counter()
    for stat in snapshot.statistics("traceback"):
        own = [f for f in _past(list(stat.traceback), caller) if _own(f)]
        if own:
            stack = ";".join(
                f"{_function_at(f.filename, f.lineno)} ({f.filename}:{f.lineno})".replace(";", ":")
                for f in own
            )
            weights[stack] += stat.size
    return "".join(f"{stack} {size}\n" for stack, size in sorted(weights.items()))


def _type_name(obj: Any) -> str:
    t = type(obj)
    module = getattr(t, "__module__", "builtins")
    return t.__qualname__ if module == "builtins" else f"{module}.{t.__qualname__}"


class _SearchBound(Exception):
    """The back-reference search ran out of its budget."""


def _backref_chain(target: Any, ignore: set[int], depth: int = 10) -> str | None:
    """objgraph's find_backref_chain, briefly: a path from a module global to `target`. Bounded:
    at most CHAIN_OBJECTS referrers looked at, for at most CHAIN_SECONDS (then _SearchBound)."""
    deadline = time.perf_counter() + CHAIN_SECONDS
    visited = 0
    seen = {id(target)} | ignore
    queue: list[tuple[Any, list[str]]] = [(target, [_type_name(target)])]
    for _ in range(depth):
        nxt = []
        for obj, path in queue:
            visited += 1
            if visited > CHAIN_OBJECTS or time.perf_counter() > deadline:
                raise _SearchBound
            for ref in gc.get_referrers(obj):
                if id(ref) in seen or isinstance(ref, FrameType):
                    continue
                seen.add(id(ref))
                if isinstance(ref, dict):
                    for mod in (m for m in list(sys.modules.values()) if m is not None):
                        if getattr(mod, "__dict__", None) is ref:
                            name = next((k for k, v in ref.items() if v is obj), "?")
                            return f"{mod.__name__}.{name}" + "".join(
                                f" -> {t}" for t in reversed(path)
                            )
                if isinstance(ref, ModuleType):
                    continue
                nxt.append((ref, [*path, _type_name(ref)]))
        queue = nxt[:200]
        if not queue:
            break
    return None


class _Tracing:
    """One diagnosis run: `begin()` before the test body, `end()` after it (or `failed()`)."""

    def __init__(self, frames: int = FRAMES, native: bool = False) -> None:
        self.frames = frames
        self.caller: tuple[tuple[str, int], ...] = ()
        self.native = native
        self.native_error: str | None = None
        self.quiet = warnings.catch_warnings()
        self.peak: dict[str, Any] = {"bytes": 0, "snapshot": None}
        self.events = 0
        self.deadline = 0.0
        self.profile_stopped = False

    def _on_event(self, frame: FrameType, event: str, arg: Any) -> None:
        self.events += 1
        if self.events % 1024 == 0 and time.perf_counter() > self.deadline:
            # A loop-heavy test under a profile hook and repeated snapshots could run for
            # minutes: past the budget the run goes on under tracemalloc alone.
            sys.setprofile(None)
            self.profile_stopped = True
            return
        if event in ("return", "c_return"):
            current = tracemalloc.get_traced_memory()[0]
            # A new high, by enough to matter: snapshots are costly.
            if current > self.peak["bytes"] * 1.05 + 16384:
                self.peak["bytes"] = current
                self.peak["snapshot"] = tracemalloc.take_snapshot()

    def begin(self) -> Diagnosis | None:
        if tracemalloc.is_tracing():
            return Diagnosis([], [], [], None, "tracemalloc is already tracing")
        # The verdict is the test's outcome: warnings of this extra run are not (filters set
        # before tracing, so that they are not among the sites).
        self.quiet = warnings.catch_warnings()
        self.quiet.__enter__()
        warnings.simplefilter("ignore")
        # Everything that exists now, the diagnosis's own helpers (the filters above) included,
        # is frozen: what gc.get_objects() finds afterwards is what the run left behind.
        gc.collect()
        gc.freeze()
        self.caller = _stack(sys._getframe(1))
        tracemalloc.start(self.frames)
        self.deadline = time.perf_counter() + PROFILE_SECONDS
        if self.native:
            from pytest_memcheck import _engine

            try:
                _engine.native_diagnosis_start()
            except _engine.MeterError as e:
                self.native, self.native_error = False, str(e)
        sys.setprofile(self._on_event)
        return None

    def _stop_native(self) -> NativeDiagnosis | None:
        """The native sites of the run (after its collection), when they were recorded."""
        if self.native_error is not None:
            return NativeDiagnosis(0, 0, [], self.native_error)
        if not self.native:
            return None
        from pytest_memcheck import _engine

        self.native = False
        found = _engine.native_diagnosis_stop()
        sites = [
            NativeSite(
                list(s.frames),
                list(s.python),
                s.retained,
                s.retained_blocks,
                s.peak,
                s.peak_blocks,
            )
            for s in found.sites
        ]
        return NativeDiagnosis(found.peak, found.retained, sites, None, found.past_budget)

    def _stop(self) -> None:
        sys.setprofile(None)
        self._stop_native()
        tracemalloc.stop()
        self.quiet.__exit__(None, None, None)

    def failed(self, e: BaseException) -> Diagnosis:
        """The test cannot run again: say so, keep the verdict."""
        self._stop()
        gc.unfreeze()
        return Diagnosis([], [], [], None, f"the test raised {type(e).__name__} when run again")

    def end(self) -> Diagnosis:
        sys.setprofile(None)
        try:
            traced_peak = tracemalloc.get_traced_memory()[1]
            gc.collect()
            native = self._stop_native()
            retained = tracemalloc.take_snapshot()
        finally:
            self._stop()
        try:
            # What the run left behind, less the diagnosis's own objects made since the freeze
            # (the snapshots and what holds them); listed before anything else is made.
            everything = gc.get_objects()
            ours = _reachable([self.peak, retained])
            survivors = []
            for o in everything:
                if id(o) not in ours:
                    survivors.append(o)
            del everything
        finally:
            gc.unfreeze()  # get_referrers does not look into the frozen generation
        counts = Counter(_type_name(o) for o in survivors)
        growth = counts.most_common(TOP)
        chain = None
        bounded = False
        if growth:
            target = _first_of_type(survivors, growth[0][0])
            try:
                chain = _backref_chain(target, {id(survivors)} | ours)
            except _SearchBound:
                bounded = True
        del survivors
        filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
        snapshot = self.peak["snapshot"]
        at_peak = snapshot.filter_traces(filters) if snapshot else None
        retained = retained.filter_traces(filters)
        notes = []
        if self.profile_stopped:
            notes.append(f"peak sites from the first {PROFILE_SECONDS:g} s of the run")
        if bounded:
            notes.append(
                f"the search for a holder stopped at its bounds ({CHAIN_OBJECTS} objects, "
                f"{CHAIN_SECONDS:g} s)"
            )
        return Diagnosis(
            peak_note=_peak_coverage(self.peak["bytes"] if snapshot else 0, traced_peak),
            peak_sites=_sites(at_peak, self.caller)[:TOP] if at_peak else [],
            retained_sites=_sites(retained, self.caller)[:TOP],
            growth=growth,
            chain=chain,
            peak_folded=_folded(at_peak, self.caller) if at_peak else "",
            retained_folded=_folded(retained, self.caller),
            note="; ".join(notes) or None,
            retained_traces=[
                (
                    tuple((f.filename, f.lineno) for f in stat.traceback),
                    stat.size,
                    stat.count,
                    stat.traceback.total_nframe or len(stat.traceback),
                )
                for stat in retained.statistics("traceback")
            ],
            caller=self.caller,
            native=native,
        )


def _peak_coverage(snapshot_bytes: int, traced_peak: int) -> str | None:
    """What the peak's sites leave out, when it matters. The heap is snapshotted at a Python
    function's return, so a peak reached and left between two returns (a buffer made and freed
    inside one call) is caught only in part, or not at all."""
    if traced_peak <= 0 or snapshot_bytes >= traced_peak * PEAK_COVERED:
        return None
    if snapshot_bytes == 0:
        return (
            f"no sites at the peak: the run peaked at {_size(traced_peak)} between two Python "
            "function returns, where no snapshot is taken"
        )
    return (
        f"these sites cover {_size(snapshot_bytes)} of the run's peak of {_size(traced_peak)}: "
        "the rest was allocated and freed between two Python function returns, where no "
        "snapshot is taken"
    )


def diagnose(
    func: Callable[..., Any],
    args: tuple,
    kwargs: dict[str, Any],
    frames: int = FRAMES,
    native: bool = False,
) -> Diagnosis:
    """Run func once more under tracemalloc (keeping `frames` frames of each allocation's
    stack) and report where its memory came from; with `native`, where its native memory came
    from too."""
    run = _Tracing(frames, native)
    refused = run.begin()
    if refused is not None:
        return refused
    try:
        func(*args, **kwargs)
    except RERUN_ERRORS as e:
        return run.failed(e)
    return run.end()


async def diagnose_async(
    func: Callable[..., Any],
    args: tuple,
    kwargs: dict[str, Any],
    frames: int = FRAMES,
    native: bool = False,
) -> Diagnosis:
    """`diagnose` for a coroutine function: the run spans the awaited body."""
    run = _Tracing(frames, native)
    refused = run.begin()
    if refused is not None:
        return refused
    try:
        await func(*args, **kwargs)
    except RERUN_ERRORS as e:
        return run.failed(e)
    return run.end()


def _stack(frame: FrameType | None) -> tuple[tuple[str, int], ...]:
    """A thread's stack from `frame` down, oldest first, as tracemalloc records stacks."""
    frames = []
    while frame is not None:
        frames.append((frame.f_code.co_filename, frame.f_lineno))
        frame = frame.f_back
    return tuple(reversed(frames))


def _first_of_type(objects: list[Any], name: str) -> Any:
    # Not a generator expression in `end()`: its closure cell would be one of the survivors.
    for o in objects:
        if _type_name(o) == name:
            return o
    raise LookupError(name)


def _reachable(roots: list[Any]) -> set[int]:
    """Ids of the diagnosis's own snapshots and what they hold: tracemalloc objects, their
    attribute dicts, lists and tuples (not types or modules, which reach everything)."""
    seen: set[int] = {id(roots)}
    stack = [r for r in roots if r is not None]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        owner = type(obj).__module__ == "tracemalloc"
        for ref in gc.get_referents(obj):
            if isinstance(ref, (tuple, list)) or type(ref).__module__ == "tracemalloc":
                stack.append(ref)
            elif owner and isinstance(ref, dict):
                stack.append(ref)
    return seen
