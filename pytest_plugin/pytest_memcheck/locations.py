"""pytest-memray's per-location leak rule, judged on a run under tracemalloc.

`@pytest.mark.limit_leaks(location_limit, filter_fn=None, current_thread_only=False)` fails a
test when one allocation location leaks more than the limit; a location is the allocation's
whole call stack, and `filter_fn(stack)` picks the stacks that count. The test's total retained
memory is never below any location's (the meter ignores frees of blocks from before the window,
so every location retains >= 0): a total within the limit settles the rule at no extra cost.
Only a test over it runs once more under tracemalloc with whole stacks (`STACK_FRAMES`), and the
stacks of that run decide.

`filter_fn` receives what pytest-memray hands it: a `Stack` whose `frames` (most recent first)
have `function`, `filename` and `lineno`, from the allocating line up to the test function (for
a thread the test started, up to the thread's first frame). pytest-memray's stacks also hold the
native (C) frames beneath the Python line; tracemalloc's hold Python frames only, so two
allocations memray tells apart by their C callers are one location here: coarser, never laxer.
"""

from __future__ import annotations

import dis
import linecache
import os
import threading
import types
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from pytest_memcheck.diagnose import _blocks, _size

# tracemalloc's maximum: stacks are whole, so that one location is one stack and the thread that
# allocated is known from the stack's first frame (a truncated stack is reported as such).
STACK_FRAMES = 65535
# Our own frames between the test's thread and the test (the measured call, the diagnosis).
OWN = os.sep + "pytest_memcheck" + os.sep
THREADING = threading.__file__


@dataclass(frozen=True)
class StackFrame:
    """One frame of a call stack, as pytest-memray's `StackFrame`."""

    function: str
    """The function being executed (its code object's name), or ``"???"`` if unknown."""
    filename: str
    """The source file being executed, or ``"???"`` if unknown."""
    lineno: int
    """The line number of the executing line, or ``0`` if unknown."""


@dataclass(frozen=True)
class Stack:
    """The call stack that led to some memory allocation, as pytest-memray's `Stack`."""

    frames: tuple[StackFrame, ...]
    """The frames that make up the call stack, most recent first."""


@dataclass
class Leak:
    """One location's memory still live after the run."""

    stack: Stack
    size: int
    count: int
    # tracemalloc kept only the most recent STACK_FRAMES frames: the stack is cut, and the
    # thread that allocated is not known (it is counted).
    truncated: bool = False

    def show(self, root: Path, frames: int = 4) -> str:
        def where(f: StackFrame) -> str:
            try:
                path = str(Path(f.filename).resolve().relative_to(root))
            except (ValueError, OSError):
                from pytest_memcheck.diagnose import _short

                path = _short(f.filename)  # a library file by its path under its root
            return f"{path}:{f.lineno} in {f.function}"

        chain = " <- ".join(where(f) for f in self.stack.frames[:frames])
        if len(self.stack.frames) > frames:
            chain += f" <- ({len(self.stack.frames) - frames} more)"
        cut = " (stack cut by tracemalloc)" if self.truncated else ""
        return f"{chain}: {_size(self.size)} in {_blocks(self.count)}{cut}"


# One trace group of the run: its frames oldest first as (filename, lineno), bytes, blocks, and
# the stack's depth before tracemalloc cut it.
Trace = tuple[tuple[tuple[str, int], ...], int, int, int]


def leaks(
    traces: Sequence[Trace],
    caller: Sequence[tuple[str, int]],
    current_thread_only: bool,
) -> list[Leak]:
    """The run's live memory by location. `caller`: the stack (oldest first) of the thread that
    ran the test, where the run began; its frames are left out of the test thread's stacks."""
    mine = _thread_prefix(caller)
    by_stack: dict[tuple[StackFrame, ...], Leak] = {}
    for frames, size, count, depth in traces:
        truncated = depth > len(frames)
        if not truncated:
            in_thread = tuple(frames[: len(mine)]) == mine
            if current_thread_only and not in_thread:
                continue
        common = 0
        if not truncated:
            while common < min(len(frames), len(caller)) and frames[common] == caller[common]:
                common += 1
        # The test's own frames on: our measured call and the diagnosis are no location's part.
        own = [f for f in frames[common:] if OWN not in f[0]]
        if not own:
            continue
        stack = tuple(reversed(_named(tuple(own))))
        leak = by_stack.get(stack)
        if leak is None:
            leak = by_stack[stack] = Leak(Stack(stack), 0, 0, truncated)
        leak.size += size
        leak.count += count
    return sorted(by_stack.values(), key=lambda leak: -leak.size)


def over(found: list[Leak], limit: int, filter_fn: Callable[[Stack], Any] | None) -> list[Leak]:
    """The locations over the limit that `filter_fn` keeps: it is asked about those alone, as
    pytest-memray asks (a location within the limit is never passed to it)."""
    return [
        leak for leak in found if leak.size > limit and (filter_fn is None or filter_fn(leak.stack))
    ]


def _thread_prefix(caller: Sequence[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """The first frames every stack of the test's thread starts with: its first frame (pytest's
    entry point, which stays on that line while the test runs), and for a thread started by
    `threading`, its frames down to the first of its own code."""
    prefix = []
    for frame in caller:
        prefix.append(frame)
        if frame[0] != THREADING:
            break
    return tuple(prefix)


def _named(frames: tuple[tuple[str, int], ...]) -> list[StackFrame]:
    """StackFrames (oldest first) with the name of the function each line runs in: the
    innermost code object of the file that holds the line, except that a frame called from the
    same line of the same file (a comprehension's, a lambda's) is the one nested in its caller."""
    named: list[StackFrame] = []
    callee: types.CodeType | None = None
    for filename, lineno in reversed(frames):  # most recent first
        chain = _codes_at(filename, lineno)  # outermost first
        code = chain[-1] if chain else None
        if (
            callee is not None
            and named
            and (named[-1].filename, named[-1].lineno) == (filename, lineno)
            and callee in chain
        ):
            i = chain.index(callee)
            code = chain[i - 1] if i > 0 else code
        named.append(StackFrame(code.co_name if code else "???", filename, lineno))
        callee = code
    named.reverse()
    return named


def _codes_at(filename: str, lineno: int) -> list[types.CodeType]:
    """The code objects of `filename` whose lines include `lineno`, outermost first."""
    return [code for code, lines in _codes(filename) if lineno in lines]


@lru_cache(maxsize=256)
def _codes(filename: str) -> tuple[tuple[types.CodeType, frozenset], ...]:
    """Every code object of a source file (compiled again from its text, as the interpreter
    compiled it), each with its lines, outermost first; empty for a file without source."""
    source = "".join(linecache.getlines(filename))
    if not source:
        return ()
    try:
        top = compile(source, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return ()
    found = []
    stack = [top]
    while stack:
        code = stack.pop()
        lines = frozenset(line for _, line in dis.findlinestarts(code) if line is not None)
        found.append((code, lines))
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    # Outermost first: a code object comes after the one that holds it (depth-first order).
    return tuple(found)
