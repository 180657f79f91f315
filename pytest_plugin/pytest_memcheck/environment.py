"""The environment a run measures in: figures compare only within the same one (SPEC §5).

`python`, `implementation` and `platform` name the interpreter; `mode()` names the interpreter
modes that change the figures. Debug hooks (`-X dev`, `PYTHONMALLOC=debug`, debug builds) add
their guard bytes to every block they pass on, another allocator or a free-threaded build
allocates differently: a baseline recorded in one mode says nothing about another, so the gate
reports it as `env-mismatch` instead of judging it. The plugin and the `memcheck` command line
both compute the environment here.
"""

from __future__ import annotations

import os
import sys
import sysconfig


def python() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def implementation() -> str:
    return sys.implementation.name


def platform() -> str:
    return sysconfig.get_platform()


def mode() -> str:
    """`+`-joined, in this order, empty for a normal run (then absent from baseline files):
    `debug-build`, `free-threaded`, `gil` (a free-threaded build running with the GIL), `dev`
    (`-X dev` or PYTHONDEVMODE), `pythonmalloc=NAME` (PYTHONMALLOC naming another allocator than
    the build's default)."""
    parts = []
    debug_build = hasattr(sys, "gettotalrefcount") or bool(sysconfig.get_config_var("Py_DEBUG"))
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    if debug_build:
        parts.append("debug-build")
    if free_threaded:
        parts.append("free-threaded")
        is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
        if is_gil_enabled is not None and is_gil_enabled():
            parts.append("gil")
    if sys.flags.dev_mode:
        parts.append("dev")
    allocator = _pythonmalloc(debug_build, free_threaded)
    if allocator:
        parts.append(f"pythonmalloc={allocator}")
    return "+".join(parts)


def _pythonmalloc(debug_build: bool, free_threaded: bool) -> str:
    """The allocator PYTHONMALLOC selected at start-up, when it is not the build's default."""
    if sys.flags.ignore_environment:  # -E and -I: CPython did not read it either
        return ""
    value = os.environ.get("PYTHONMALLOC", "")
    if not value:
        return ""
    if free_threaded:
        default = "mimalloc"
    elif sysconfig.get_config_var("WITH_PYMALLOC") == 0:
        default = "malloc"
    else:
        default = "pymalloc"
    if value == "debug":  # debug hooks on the default allocator
        value = f"{default}_debug"
    return "" if value == (f"{default}_debug" if debug_build else default) else value
