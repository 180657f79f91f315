"""The pytest side of pytest-memcheck: options, markers, the measuring wrapper and the report.

Everything that decides anything (settings, sizes, baselines, the gate, the tables) lives in the
Rust engine; this module only connects it to pytest's hooks.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import re
import shlex
import sys
import time
import warnings
from collections.abc import Generator
from pathlib import Path
from typing import Any, Callable

import pytest

from pytest_memcheck import _engine, environment
from pytest_memcheck._warning import PytestMemcheckWarning
from pytest_memcheck.diagnose import RERUN_ERRORS

UPDATE_MODES = ("changed", "all")
METERS = ("python", "tracemalloc", "rss")
MARKER_KEYS = (
    "peak",
    "retained",
    "native_peak",
    "native_retained",
    "tolerance",
    "floor",
    "skip",
    "confirm",
    "gate_cycles",
    "gate_retained",
    "unstable",
)
# Hypothesis runs different random examples each run and keeps growing caches of its own: its
# tests' retained memory is not theirs, and their peak moved by up to +40 % between runs of real
# suites (attrs). Their defaults, unless a marker says otherwise:
HYPOTHESIS_RULES = {"gate_retained": False, "tolerance": "50%"}

VERDICT = pytest.StashKey[Any]()
LEAK = pytest.StashKey[str]()
LEAK_FLOOR = "256 B"
RULES = pytest.StashKey[Any]()
# pytest-timeout's timer for an item: (when it was set, time.monotonic(); its timeout in seconds).
TIMER = pytest.StashKey[tuple[float, float]]()
# What running a test again costs, in multiples of its first measured run: a confirming run, a
# diagnosis under tracemalloc with stack snapshots. Either is skipped when the test's timeout
# does not leave that much time, with a margin of one more run for its teardown.
RERUN_COST = 1.0
DIAGNOSIS_COST = 4.0


class _NoTime(Exception):
    pass


def _leak_runs(value: str) -> tuple[int, int, int]:
    """`W:R` or `W:R:FLOOR`: W unmeasured warm-up runs, R measured runs, the floor in bytes."""
    import argparse

    parts = value.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        warmups, runs = int(parts[0]), int(parts[1])
        if warmups < 0 or runs < 1:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected W:R or W:R:FLOOR (e.g. 2:3 or 2:3:1KiB), got {value!r}"
        ) from None
    try:
        floor = _engine.parse_size(parts[2] if len(parts) == 3 else LEAK_FLOOR, "--memcheck-leaks")
    except _engine.UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return warmups, runs, floor


def _yes_no(value: str) -> str:
    import argparse

    if value.lower() not in ("yes", "no", "true", "false", "1", "0", "on", "off"):
        raise argparse.ArgumentTypeError(f"expected yes or no, got {value!r}")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("memcheck", "memory regression gate (pytest-memcheck)")

    def option(*names: str, ini: str, ini_type: str = "string", **kwargs: Any) -> None:
        """A `--memcheck-*` option and the ini key that mirrors it (same name, underscores).
        Options default to None: unset, so that the ini key decides."""
        group.addoption(*names, dest=ini, default=None, **kwargs)
        text = kwargs.get("help", "").replace("%%", "%")
        # default=None: unset, not False, so that [tool.memcheck] decides
        parser.addini(ini, f"{text} (--{ini.replace('_', '-')})", type=ini_type, default=None)

    def negation(name: str, ini: str, what: str) -> None:
        group.addoption(
            f"--no-{name}", dest=ini, action="store_false", help=f"{what} (overrides {ini} in ini)"
        )

    option(
        "--memcheck",
        ini="memcheck",
        ini_type="bool",
        action="store_true",
        help="measure the peak and retained memory of every test and fail tests over their baseline",
    )
    negation("memcheck", "memcheck", "do not measure")
    # A flag, not an option with an optional value: `--memcheck-update tests/` must leave
    # `tests/` to pytest. `--memcheck-update=all` is an option of its own name (argparse matches
    # the whole word first), so the familiar spelling works without rewriting the arguments.
    option(
        "--memcheck-update",
        "--memcheck-update=changed",
        ini="memcheck_update",
        action="store_const",
        const="changed",
        help="measure and write baselines: new entries and entries outside their tolerance; "
        "refused in CI unless --memcheck-allow-ci-update (ini: changed or all)",
    )
    group.addoption(
        "--memcheck-update=all",
        "--memcheck-update-all",
        dest="memcheck_update",
        action="store_const",
        const="all",
        help="like --memcheck-update, but rewrite every entry",
    )
    group.addoption(
        "--no-memcheck-update",
        dest="memcheck_update",
        action="store_const",
        const=False,
        help="do not write baselines (overrides memcheck_update in ini)",
    )
    option(
        "--memcheck-allow-ci-update",
        ini="memcheck_allow_ci_update",
        ini_type="bool",
        action="store_true",
        help="allow --memcheck-update when the CI environment variable is set",
    )
    negation("memcheck-allow-ci-update", "memcheck_allow_ci_update", "refuse updates in CI")
    option(
        "--memcheck-strict",
        ini="memcheck_strict",
        ini_type="bool",
        action="store_true",
        help="also fail tests without a baseline or with one from another environment",
    )
    negation("memcheck-strict", "memcheck_strict", "do not fail new or env-mismatch tests")
    option(
        "--memcheck-meter",
        ini="memcheck_meter",
        choices=METERS,
        help="what to measure: python (exact, default), tracemalloc (reference), rss (coarse, sees native malloc)",
    )
    option(
        "--memcheck-tolerance",
        ini="memcheck_tolerance",
        metavar="PCT",
        help="relative slack above the baseline, e.g. 10%% (default 10%%)",
    )
    option(
        "--memcheck-floor",
        ini="memcheck_floor",
        metavar="SIZE",
        help="absolute slack above the baseline, e.g. 64KiB (default 64 KiB)",
    )
    option(
        "--memcheck-baseline-dir",
        ini="memcheck_baseline_dir",
        metavar="DIR",
        help="where baseline files live, relative to the rootdir (default baselines); "
        "may hold {python}, {platform}, {implementation}",
    )
    option(
        "--memcheck-ref",
        ini="memcheck_ref",
        metavar="REF",
        help="compare with the baselines as committed at a git revision (e.g. origin/main), "
        "read from git without a checkout",
    )
    option(
        "--memcheck-json",
        ini="memcheck_json",
        metavar="PATH",
        help="write every result of the run to PATH as JSON (schema: results.schema.json)",
    )
    option(
        "--memcheck-leaks",
        ini="memcheck_leaks",
        type=_leak_runs,
        metavar="W:R[:FLOOR]",
        help="leak hunt instead of the baseline gate: run each test W times unmeasured, then R "
        "times measured; a test leaks when all R retained deltas exceed FLOOR (default 256 B)",
    )
    option(
        "--memcheck-dump",
        ini="memcheck_dump",
        metavar="DIR",
        help="for tests over budget, write heap dumps to DIR: folded stacks and flame graph SVGs "
        "of the peak and retained allocations, and a JSON of the top sites",
    )
    option(
        "--memcheck-confirm",
        ini="memcheck_confirm",
        type=_yes_no,
        metavar="yes|no",
        help="re-measure an over-budget test once before failing it (default yes)",
    )
    option(
        "--memcheck-gate-cycles",
        ini="memcheck_gate_cycles",
        ini_type="bool",
        action="store_true",
        help="fail tests that leave more cyclic garbage than their baseline",
    )
    negation("memcheck-gate-cycles", "memcheck_gate_cycles", "do not gate cyclic garbage")
    option(
        "--memcheck-native",
        ini="memcheck_native",
        ini_type="bool",
        action="store_true",
        help="also count native memory: malloc, calloc, realloc, free... called by extension "
        "modules and the libraries they load (native_peak, native_retained; Linux, glibc)",
    )
    negation("memcheck-native", "memcheck_native", "do not count native memory")


# The settings the engine resolves (name in [tool.memcheck] → option dest and ini key).
ENGINE_SETTINGS = {
    "tolerance": "memcheck_tolerance",
    "floor": "memcheck_floor",
    "baseline-dir": "memcheck_baseline_dir",
    "meter": "memcheck_meter",
    "strict": "memcheck_strict",
    "confirm": "memcheck_confirm",
    "gate-cycles": "memcheck_gate_cycles",
    "native": "memcheck_native",
}


class Options:
    """The run's options, resolved in one place: the command line wins over pytest's ini keys,
    which win over [tool.memcheck] (the engine applies that last layer). A value from the ini is
    checked with the ini key named as its origin."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.enabled = self._bool("memcheck")
        update = self.get("memcheck_update")
        if isinstance(update, str) and update.strip().lower() in ("", "no", "false", "0", "off"):
            update = None
        if update not in (None, False, *UPDATE_MODES):
            raise pytest.UsageError(
                f"{self._origin('memcheck_update')}: expected one of {', '.join(UPDATE_MODES)}, "
                f"got {update!r}"
            )
        self.update: str | None = update or None
        self.allow_ci_update = self._bool("memcheck_allow_ci_update")
        leaks = self.get("memcheck_leaks")
        if isinstance(leaks, str):  # from the ini; the command line's went through its type=
            import argparse

            try:
                leaks = _leak_runs(leaks)
            except argparse.ArgumentTypeError as e:
                raise pytest.UsageError(f"{self._origin('memcheck_leaks')}: {e}") from None
        self.leaks: tuple[int, int, int] | None = leaks
        self.ref: str | None = self.get("memcheck_ref") or None
        self.json: Path | None = self._path("memcheck_json")
        self.dump: Path | None = self._path("memcheck_dump")

    def _ini(self, name: str) -> Any:
        try:
            value = self.config.getini(name)
        except ValueError as e:  # pytest's own parsing of a bool key
            raise pytest.UsageError(f"{self._origin(name)}: {e}") from None
        return None if value in (None, "", []) else value

    def get(self, name: str) -> Any:
        """A value from the command line, else the ini ([tool.memcheck] is the engine's)."""
        value = getattr(self.config.option, name, None)
        return value if value is not None else self._ini(name)

    def _origin(self, name: str) -> str:
        where = self.config.inipath.name if self.config.inipath else "the ini options"
        return f"{name} in {where}"

    def _bool(self, name: str) -> bool:
        value = self.get(name)
        if isinstance(value, str):
            try:
                value = _parse_bool(value)
            except ValueError as e:
                raise pytest.UsageError(f"{self._origin(name)}: {e}") from None
        return bool(value)

    def _path(self, name: str) -> Path | None:
        """A path from the command line is relative to the invocation directory, one from the
        ini to the ini file's directory (pytest's convention for paths in ini files)."""
        value = getattr(self.config.option, name, None)
        if value is not None:
            return Path(self.config.invocation_params.dir, value) if value else None
        value = self._ini(name)
        if value is None:
            return None
        base = self.config.inipath.parent if self.config.inipath else self.config.rootpath
        return Path(base, value)

    def engine_layers(self) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
        """(command-line overrides, ini values with their origin) for the engine's settings."""
        command_line: dict[str, str] = {}
        ini: dict[str, tuple[str, str]] = {}
        for setting, name in ENGINE_SETTINGS.items():
            value = getattr(self.config.option, name, None)
            if value is not None:
                command_line[setting] = _bool_text(value)
                continue
            value = self._ini(name)
            if value is not None:
                ini[setting] = (_bool_text(value), self._origin(name))
        return command_line, ini


def _parse_bool(value: str) -> bool:
    text = value.strip().lower()
    if text in ("yes", "true", "1", "on"):
        return True
    if text in ("no", "false", "0", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _bool_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "memcheck(peak=None, retained=None, tolerance=None, floor=None, skip=False, confirm=True, "
        "gate_cycles=None, gate_retained=None, unstable='gate'): per-test memory limits and "
        "settings of pytest-memcheck (unstable='skip': a metric recorded with a spread is not gated)",
    )
    if not config.pluginmanager.has_plugin("memray"):  # it registers its own markers
        config.addinivalue_line(
            "markers",
            "limit_memory(memory_limit, current_thread_only=False): fail the test if its peak "
            "memory exceeds the limit (pytest-memray's marker and units: '24 MB' is 24 MiB)",
        )
        config.addinivalue_line(
            "markers",
            "limit_leaks(location_limit, filter_fn=None, current_thread_only=False): fail the "
            "test if one allocation location (its whole stack) retains more than the limit "
            "(pytest-memray's marker and units: '1 MB' is 1 MiB)",
        )
    opt = Options(config)
    if not (opt.enabled or opt.update or opt.leaks):
        _say_options_unused(config)
        return
    if opt.update and opt.leaks:
        raise pytest.UsageError("--memcheck-leaks hunts leaks; it writes no baselines")
    for arg in config.args if opt.update else ():
        # `--memcheck-update all`: the mode as a word of its own is a path to pytest.
        if arg in UPDATE_MODES and not Path(config.invocation_params.dir, arg).exists():
            raise pytest.UsageError(
                f"'{arg}' is not a file or directory: the update mode is written "
                f"--memcheck-update={arg}, with '='"
            )
    if opt.update and _in_ci() and not opt.allow_ci_update:
        raise pytest.UsageError(
            "--memcheck-update does not write baselines in CI (CI is set): let CI measure with "
            "--memcheck and accept its values locally, or pass --memcheck-allow-ci-update"
        )
    if opt.update and opt.ref:
        raise pytest.UsageError(
            "--memcheck-update writes the work tree's baselines; it cannot be combined with "
            "--memcheck-ref"
        )
    _refuse_memray(config)
    overrides, ini = opt.engine_layers()
    try:
        engine = _engine.Session(
            str(config.rootpath),
            overrides,
            environment.python(),
            environment.implementation(),
            environment.platform(),
            opt.ref,
            ini,
            mode=environment.mode(),
        )
    except _engine.MemcheckError as e:
        raise pytest.UsageError(str(e)) from None
    if engine.meter != "rss" and sys.implementation.name != "cpython":
        raise pytest.UsageError("pytest-memcheck's python meter needs CPython")
    refusal, warning = platform_limits(engine.meter, sys.platform, sys.maxsize > 2**32, _numpy())
    if refusal:
        raise pytest.UsageError(refusal)
    distributing = (
        not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") != "no"
    )
    if engine.native:
        refusal = native_limits(engine.meter, sys.platform, sys.maxsize > 2**32, _libc())
        if refusal:
            raise pytest.UsageError(refusal)
        if not distributing:  # the xdist controller measures nothing; its workers count
            try:
                _engine.enable_native()
            except _engine.MeterError as e:
                raise pytest.UsageError(f"--memcheck-native: {e}") from None
    if distributing and sys.flags.dev_mode and not os.environ.get("PYTHONDEVMODE"):
        # The workers measure; they would run without -X dev under baselines labelled dev.
        raise pytest.UsageError(
            "pytest-xdist starts its workers without -X dev: set PYTHONDEVMODE=1 instead, so "
            "that the workers measure in the mode the baselines record"
        )
    manager = Manager(config, engine, opt)
    config.pluginmanager.register(manager, "memcheck-manager")
    if warning:
        manager._warn(warning)


MEMRAY_MARKERS = ("limit_memory", "limit_leaks", "limit_leaked_objects")
MEMRAY_ADVICE = (
    "pytest-memray and pytest-memcheck would both measure the test's call, each counting the "
    "other's bookkeeping (memray would report our meter's tables as the test's memory and could "
    "fail tests that pass without us). Measure with one of them per run: add -p no:memray "
    "(pytest-memcheck honours limit_memory and limit_leaks itself) or leave out the memcheck options"
)


def _memray_on(config: pytest.Config) -> bool:
    """pytest-memray is loaded and measures every test (--memray or its ini key)."""
    if not config.pluginmanager.has_plugin("memray"):
        return False
    value = config.getoption("memray", default=None)
    if value is None:
        try:
            value = config.getini("memray")
        except (KeyError, ValueError):
            value = None
    return bool(value)


def _refuse_memray(config: pytest.Config) -> None:
    if _memray_on(config):
        raise pytest.UsageError(f"--memray with pytest-memcheck: {MEMRAY_ADVICE}")


def platform_limits(
    meter: str, platform: str, is_64bit: bool, numpy: tuple[int, int] | None
) -> tuple[str | None, str | None]:
    """What a meter cannot count exactly here: (a refusal, a warning), never silent zeros (§9)."""
    linux = platform.startswith("linux")
    if meter == "rss" and not linux:
        return (
            f"the rss meter reads /proc/self (Linux only); on {platform} it would read zeros "
            "and pass every gate: use --memcheck-meter=python",
            None,
        )
    if meter == "python" and not (linux and is_64bit) and numpy is not None and numpy < (2, 5):
        # numpy < 2.5 allocates array data with malloc and reports it only through
        # PyTraceMalloc_Track; the meter redirects that call in 64-bit ELF objects alone.
        return None, (
            f"pytest-memcheck: on {platform} the python meter cannot redirect "
            f"PyTraceMalloc_Track: the data buffers of numpy {numpy[0]}.{numpy[1]} arrays (and of "
            "other extensions that report theirs that way) are not counted; numpy >= 2.5 "
            "allocates them through Python's allocator and is counted"
        )
    return None, None


def native_limits(meter: str, platform: str, is_64bit: bool, libc: str) -> str | None:
    """Why native memory cannot be counted here, if it cannot: refused at start, never zeros."""
    if not (platform.startswith("linux") and is_64bit and libc == "glibc"):
        where = f"{platform} ({libc or 'unknown C library'}, {'64' if is_64bit else '32'}-bit)"
        return (
            f"--memcheck-native counts the malloc family through ELF relocations, on 64-bit "
            f"Linux with glibc only; not on {where}: leave it off here"
        )
    if meter != "python":
        return (
            f"--memcheck-native counts beside the python meter; the {meter} meter does not "
            "tell native calls from the interpreter's: use --memcheck-meter=python"
        )
    return None


def _libc() -> str:
    import platform

    return platform.libc_ver()[0]


def _numpy() -> tuple[int, int] | None:
    """The installed numpy's major.minor, read without importing it."""
    from importlib import metadata

    try:
        major, minor = metadata.version("numpy").split(".")[:2]
        return int(major), int(minor)
    except (metadata.PackageNotFoundError, ValueError):
        return None


def _in_ci() -> bool:
    value = os.environ.get("CI")
    return value is not None and value.strip().lower() not in ("", "0", "false")


def _where(item: pytest.Item) -> str:
    """`path:line` of a test, for errors about its markers."""
    return f"{item.path}:{(item.location[1] or 0) + 1}"


# pytest-memray's size format, read as pytest-memray reads it: its KB, MB, GB... are powers of
# 1024 (its "1 MB" is 1,048,576 bytes), not the powers of 1000 of our own sizes.
MEMRAY_SIZE = re.compile(r"\s*(\+?\d*\.\d+|\+?\d+)\s*([KMGTP]?B)\s*", re.IGNORECASE)
MEMRAY_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40, "PB": 1 << 50}


@dataclasses.dataclass(frozen=True)
class MemrayRule:
    """The options of a pytest-memray marker whose limit a total alone cannot settle: honoured
    by measuring more only when the test's total is over the limit (MeasuredCall._memray)."""

    marker: str
    limit: int
    current_thread_only: bool = False
    filter_fn: Callable[[Any], Any] | None = None


# pytest-memray's keyword options of each marker (memray.marks.limit_memory / limit_leaks).
MEMRAY_OPTIONS = {
    "limit_memory": ("current_thread_only",),
    "limit_leaks": ("current_thread_only", "filter_fn"),
}
# Where a marker's rule is kept in the item's rules (read by the policy, not by the engine).
MEMRAY_RULE = {"peak": "memray_peak", "retained": "memray_retained"}


def _memray_limit(item: pytest.Item, mark: pytest.Mark, parameter: str) -> tuple[str, MemrayRule]:
    """The limit of a pytest-memray marker in bytes, as pytest-memray means it, and its
    options. An argument pytest-memray's marker does not take is refused, never ignored."""
    where = f"{_where(item)}: {mark.name} marker of {item.nodeid}"
    options = {k: v for k, v in mark.kwargs.items() if k not in (parameter, "limit")}
    current_thread_only = bool(options.pop("current_thread_only", False))
    filter_fn = options.pop("filter_fn", None) if "filter_fn" in MEMRAY_OPTIONS[mark.name] else None
    if filter_fn is not None and not callable(filter_fn):
        raise pytest.UsageError(f"{where}: filter_fn must be callable, got {filter_fn!r}")
    if options or len(mark.args) > 1:
        unknown = sorted(options) + [repr(a) for a in mark.args[1:]]
        raise pytest.UsageError(f"{where}: unexpected arguments {', '.join(unknown)}")
    limit = mark.args[0] if mark.args else mark.kwargs.get(parameter, mark.kwargs.get("limit"))
    if limit is None:
        raise pytest.UsageError(f"{where} needs a limit")
    match = MEMRAY_SIZE.fullmatch(str(limit))
    if match is None:
        raise pytest.UsageError(
            f"{where}: invalid size {limit!r} (pytest-memray's format: a number and B, KB, MB, "
            "GB, TB or PB, powers of 1024)"
        )
    quantity, unit = match.groups()
    limit = int(float(quantity) * MEMRAY_UNITS[unit.upper()])
    return str(limit), MemrayRule(mark.name, limit, current_thread_only, filter_fn)


def _engine_rules(rules: dict[str, Any]) -> _engine.MarkerRules:
    """What the engine judges by, of a test's marker settings (the rest, `confirm` and `skip`,
    are the plugin's own)."""
    return _engine.MarkerRules(**{k: v for k, v in rules.items() if k in _engine.MarkerRules.KEYS})


def _marker_rules(item: pytest.Item) -> dict[str, Any] | None:
    """The per-test settings of the item's markers, or None to leave it unmeasured."""
    rules: dict[str, Any] = {"origin": f"memcheck marker of {item.nodeid}"}
    for mark in reversed(list(item.iter_markers("memcheck"))):  # closest marker wins
        unknown = set(mark.kwargs) - set(MARKER_KEYS)
        if unknown or mark.args:
            raise pytest.UsageError(
                f"{_where(item)}: memcheck marker of {item.nodeid}: takes keyword arguments "
                f"{', '.join(MARKER_KEYS)}; got "
                + ", ".join([repr(a) for a in mark.args] + sorted(unknown))
            )
        rules.update(mark.kwargs)
    for name, metric, parameter in (
        ("limit_memory", "peak", "memory_limit"),
        ("limit_leaks", "retained", "location_limit"),
    ):
        mark = item.get_closest_marker(name)
        if mark is not None:
            limit, rule = _memray_limit(item, mark, parameter)
            if metric not in rules:  # a memcheck marker's own limit comes first
                rules[metric] = limit
                rules[f"{metric}_origin"] = name
                rules[MEMRAY_RULE[metric]] = rule
    if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
        for key, value in HYPOTHESIS_RULES.items():
            rules.setdefault(key, value)
    if rules.get("skip"):
        return None
    return rules


def _say_options_unused(config: pytest.Config) -> None:
    """Options of ours typed without --memcheck (or --memcheck-update, --memcheck-leaks) do
    nothing: said at the end of the run (shown under -q too, unlike the header; a line, not a
    warning, which -W error would turn into a failure), so that `--memcheck-json r.json` alone
    is not a silent no-op."""
    typed = sorted(
        "--" + dest.replace("_", "-")
        for dest, value in vars(config.option).items()
        if dest.startswith("memcheck_") and value not in (None, False)
    )
    if not typed:
        return

    class Unused:
        @staticmethod
        def pytest_terminal_summary(terminalreporter: Any) -> None:
            terminalreporter.write_line(
                f"memcheck: {', '.join(typed)} given without --memcheck: nothing is measured "
                "or written (add --memcheck, or --memcheck-update to record)",
                yellow=True,
            )

    config.pluginmanager.register(Unused(), "memcheck-unused-options")


class EndOfRunError:
    """An error of ours at the end of the run (baselines or results not written, a CI run that
    gated nothing), counted in pytest's final line: "15 passed, 1 memcheck error" in yellow, not
    a green line above a non-zero exit status. An object with attributes, as the plugins that
    read the terminal reporter's stats (Hypothesis) expect."""

    count_towards_summary = True

    def __init__(self, message: str) -> None:
        self.message = message


def _count_on_the_final_line(config: pytest.Config, errors: list[str]) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not errors:
        return
    key = "memcheck error" if len(errors) == 1 else "memcheck errors"
    reporter.stats.setdefault(key, []).extend(EndOfRunError(e) for e in errors)


class Manager:
    """The session's state; pytest's hooks are its methods."""

    def __init__(self, config: pytest.Config, engine: Any, options: Options) -> None:
        self.config = config
        self.engine = engine
        self.options = options
        self.update: str | None = options.update
        self.leaks: tuple[int, int, int] | None = options.leaks
        self.leaking: list[str] = []
        self.diagnosed = 0
        self.is_worker = hasattr(config, "workerinput")
        self.collected: list[str] = []
        self.incomplete_reasons: list[str] = []
        # Set when the run was refused at start (unreadable baselines): said once, nothing more.
        self.refused: str | None = None
        self.changes: list[_engine.FileChange] = []
        self.warnings: list[str] = []
        # The update raised: nothing was written, and "unchanged" would say otherwise.
        self.update_failed = False
        self.notes: list[str] = []
        self.stale: list[str] = []
        self.annotations: list[str] = []
        opt = config.option
        if opt.keyword:
            self.incomplete_reasons.append("-k")
        if opt.markexpr:
            self.incomplete_reasons.append("-m")
        if getattr(opt, "lf", False):
            self.incomplete_reasons.append("--lf")
        if getattr(opt, "deselect", None):
            self.incomplete_reasons.append("--deselect")
        if any("::" in a for a in config.args):
            self.incomplete_reasons.append("node-id selection")
        # Threads running before any test are the run's machinery (pytest-xdist's, a plugin's):
        # never counted. Every thread started later counts, pools and servers included.
        _engine.exclude_threads_running_now()
        # The xdist controller measures nothing and collects nothing: workers do both.
        self.distributed = not self.is_worker and getattr(opt, "dist", "no") != "no"
        if self.distributed:
            config.pluginmanager.register(XdistController(self), "memcheck-xdist-controller")

    # -- warnings --------------------------------------------------------------------------
    def _warn(self, message: str, item: pytest.Item | None = None) -> None:
        """Every warning of ours: a PytestMemcheckWarning in pytest's warnings summary. It goes
        through the warning filters in force (pytest's, the ini's, the test's marks), so an
        `ignore` silences it, but an `error` filter (`-W error`, `filterwarnings = error`) only
        shows it: a note about a measurement must never fail the test it is about."""
        warning = PytestMemcheckWarning(message)
        with warnings.catch_warnings(record=True) as seen:
            try:
                warnings.warn(warning, stacklevel=2)
            except PytestMemcheckWarning:
                seen.append(warnings.WarningMessage(warning, PytestMemcheckWarning, __file__, 0))
        for record in seen:
            self.config.hook.pytest_warning_recorded.call_historic(
                kwargs={
                    "warning_message": record,
                    "when": "runtest" if item is not None else "config",
                    "nodeid": item.nodeid if item is not None else "",
                    "location": None,
                }
            )

    # -- report header -------------------------------------------------------------------
    def pytest_report_header(self, config: pytest.Config) -> str:
        mode = f", update: {self.update}" if self.update else ""
        if self.engine.native:
            mode = f", native memory counted{mode}"
        if self.options.dump:
            # said where the run starts: the dumps are written test by test, on xdist's workers
            mode += f", heap dumps of failing tests in {self._rel(self.options.dump)}/"
        source = self.engine.config_file
        where = f" ({Path(source).name})" if source else ""
        return (
            f"memcheck: meter {self.engine.meter}, {self.engine.thresholds}{where}, "
            f"baselines in {self._rel(self.engine.baseline_dir)}/{mode}"
        )

    def _rel(self, path: Any) -> str:
        try:
            return str(Path(path).relative_to(self.config.rootpath))
        except ValueError:
            return str(path)

    # -- collection ----------------------------------------------------------------------
    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        if items:
            self.incomplete_reasons.append("deselection")

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.incomplete_reasons.append("collection error")

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        try:
            self._check_collected(items)
        except pytest.UsageError as e:
            # Said once, by pytest's usage error: no memcheck section before it.
            self.refused = self.refused or str(e)
            raise

    def _check_collected(self, items: list[pytest.Item]) -> None:
        """Markers read and checked, memray's markers refused, baselines read: all before the
        first test runs, so a mistake stops the run early."""
        if self.config.pluginmanager.has_plugin("memray"):
            # pytest-memray also measures, without --memray, every test with one of its markers.
            marked = [
                item.nodeid
                for item in items
                if any(item.get_closest_marker(name) for name in MEMRAY_MARKERS)
            ]
            if marked:
                raise pytest.UsageError(
                    f"pytest-memray measures the {len(marked)} tests with its markers "
                    f"(e.g. {marked[0]}): {MEMRAY_ADVICE}"
                )
        modules = set()
        native_limited = []
        for item in items:
            if isinstance(item, pytest.Function):
                rules = item.stash[RULES] = _marker_rules(item)
                if rules is not None:
                    try:
                        self.engine.check_markers(_engine_rules(rules))
                    except _engine.MemcheckError as e:
                        raise pytest.UsageError(f"{_where(item)}: {e}") from None
                    if rules.get("native_peak") or rules.get("native_retained"):
                        native_limited.append(item.nodeid)
                    self._check_memray_rules(item, rules)
            modules.add(item.nodeid.split("::", 1)[0])
        if native_limited and not self.engine.native:
            # A limit that is not judged must not look like one that passed.
            n = len(native_limited)
            self.notes.append(
                f"{n} {'test carries' if n == 1 else 'tests carry'} native_peak/native_retained "
                "limits "
                f"(e.g. {native_limited[0]}) that this run does not judge: native memory is "
                "counted with --memcheck-native"
            )
        try:
            self.engine.preload(sorted(modules))
        except (_engine.MemcheckError, OSError) as e:
            message = str(e)
            if "upgrade pytest-memcheck" in message:
                advice = ""  # a newer format: recording it again would downgrade the team's files
            else:
                path = shlex.quote(message.split(":", 1)[0])
                advice = (
                    f" Fix the file, restore it (git checkout -- {path}), or delete it and "
                    "record it again with --memcheck-update"
                )
            self.refused = f"memcheck: cannot read the baselines, so no test was run: {e}.{advice}"
            raise pytest.UsageError(self.refused) from None

    def _check_memray_rules(self, item: pytest.Item, rules: dict[str, Any]) -> None:
        """pytest-memray's current_thread_only is measured by a window that counts the test's
        thread alone: the python meter's hooks can; the others cannot tell threads apart."""
        for key in MEMRAY_RULE.values():
            rule = rules.get(key)
            if (
                rule is not None
                and rule.marker == "limit_memory"
                and rule.current_thread_only
                and self.engine.meter != "python"
            ):
                raise pytest.UsageError(
                    f"{_where(item)}: {rule.marker} marker of {item.nodeid}: "
                    f"current_thread_only=True needs the python meter; the {self.engine.meter} "
                    "meter cannot tell the test's thread from others"
                )

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if not self.distributed:
            self.collected = [item.nodeid for item in session.items]

    # -- pytest-timeout ------------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any) -> None:
        # pytest-timeout's public hook: note when its timer starts, leave setting it to it.
        if settings.timeout:
            item.stash[TIMER] = (time.monotonic(), float(settings.timeout))

    def _short_of_time(self, item: pytest.Item, took: float, cost: float) -> str | None:
        """Why running the test `cost` times more (plus once more for a margin) would not fit
        in what is left of its pytest-timeout, or None."""
        timer = item.stash.get(TIMER, None)
        if timer is None:
            return None
        started, timeout = timer
        left = timeout - (time.monotonic() - started)
        if took * (cost + 1) <= left:
            return None
        return (
            f"its first run took {took:.2f} s and {max(left, 0):.2f} s of its "
            f"{timeout:g} s timeout are left"
        )

    # -- measuring -----------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        # Read at collection (on this process: xdist workers collect too).
        rules = item.stash.get(RULES, None) if isinstance(item, pytest.Function) else None
        if rules is None:
            return (yield)
        original = item.obj
        stand_in = MeasuredCall(self, item, original, rules).stand_in()
        # unittest runs an async test method itself (IsolatedAsyncioTestCase looks the method up
        # on the instance), so the stand-in goes there too.
        is_async = _is_async(original)
        instance = getattr(item, "instance", None) if is_async and _is_unittest(item) else None
        item.obj = stand_in
        if instance is not None:
            setattr(instance, item.name, stand_in)
        try:
            return (yield)
        finally:
            item.obj = original
            if instance is not None:
                delattr(instance, item.name)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]):
        report = yield
        if call.when != "call":
            return report
        # Taken, not read: a test run again (pytest-rerunfailures) is judged on its own run.
        leak = item.stash.get(LEAK, None)
        measured = item.stash.get(VERDICT, None)
        for key in (LEAK, VERDICT):
            if key in item.stash:
                del item.stash[key]
        if leak is not None and report.passed:
            report.outcome = "failed"
            report.longrepr = leak
            self.leaking.append(item.nodeid)
            return report
        if measured is None:
            return report
        verdict, first, second, diagnosis, notes = measured
        # Tests that fail on their own, skip or xfail are not gated and not recorded; an update
        # records new values instead of failing on them.
        own_pass = report.passed and not hasattr(report, "wasxfail")
        gated = not self.update
        if own_pass and verdict.fails(gated):
            report.outcome = "failed"
            message = verdict.message
            if notes:
                message += "\n" + "\n".join(notes)
            if second is not None and verdict.outcome == "over":
                size = _engine.format_size
                native = ""
                if first.native_peak is not None and second.native_peak is not None:
                    native = (
                        f", native peak {size(first.native_peak)} then "
                        f"{size(second.native_peak)}, native retained "
                        f"{size(first.native_retained or 0)} then "
                        f"{size(second.native_retained or 0)}"
                    )
                message += (
                    f"\n  confirmed by a second measurement: peak {size(first.peak)} then "
                    f"{size(second.peak)}, retained {size(first.retained)} then "
                    f"{size(second.retained)}{native}; the smaller values are judged"
                )
            if diagnosis is not None:
                judged = first if second is None else first.least(second)
                message += "\n" + diagnosis.text(
                    self.config.rootpath, set(verdict.over), judged.cycles
                )
            report.longrepr = message
        else:
            message, diagnosis = None, None
        path, line, _ = item.location
        site = _project_site(diagnosis, verdict.over, self.config.rootpath)
        # A JSON string: it crosses to the xdist controller as it is. The message as the report
        # shows it (confirmation, diagnosis) goes into the results file and the annotation.
        report.memcheck = verdict.to_json(
            own_pass, gated, path, (line or 0) + 1, message and message.rstrip("\n"), site
        )
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, "memcheck", None)
        # pytest-rerunfailures reports each attempt but the last as "rerun": the final attempt
        # is the test's result, one entry per test.
        if report.when == "call" and data is not None and report.outcome != "rerun":
            self.engine.record(data)

    def pytest_warning_recorded(self, warning_message: Any, nodeid: str) -> None:
        # Ours, from this process or (under xdist) relayed from a worker: also in our section,
        # which --disable-warnings does not hide.
        if issubclass(warning_message.category, PytestMemcheckWarning) and not self.is_worker:
            self.notes.append(str(warning_message.message))

    # -- the end ---------------------------------------------------------------------------
    def _coverage(self, session: pytest.Session) -> tuple[bool, list[str]]:
        if self.distributed and not self.collected:
            self.incomplete_reasons.append("no collection from the xdist workers")
        complete = not self.incomplete_reasons and not session.shouldfail
        rootpath = self.config.rootpath
        scope = []
        for arg in self.config.args:
            path = Path(arg.split("::", 1)[0])
            path = path if path.is_absolute() else Path(self.config.invocation_params.dir, path)
            try:
                rel = path.resolve().relative_to(rootpath.resolve())
            except ValueError:
                continue
            scope.append("" if str(rel) == "." else rel.as_posix())
        return complete, scope

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker:
            # Sent to the controller with the worker's end (XdistController.pytest_testnodedown).
            self.config.workeroutput["memcheck_incomplete"] = list(self.incomplete_reasons)
            return
        if self.refused:
            return  # said once, by pytest's usage error; nothing was measured or written
        complete, scope = self._coverage(session)
        # What went wrong here ends the run with a non-zero status and on pytest's final line.
        errors: list[str] = []
        try:
            self.stale = self.engine.stale(complete, self.collected, scope)
        except (_engine.MemcheckError, OSError) as e:
            errors.append(f"stale baselines not listed: {e}")
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
        try:
            if self.update and exitstatus != pytest.ExitCode.INTERRUPTED:
                self.changes = self.engine.update(
                    self.update == "all", complete, self.collected, scope
                )
        except (_engine.MemcheckError, OSError) as e:
            self.update_failed = True
            errors.append(
                f"baselines not written, none changed: {e}; fix it and run the update again"
            )
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
        json_path = self.options.json
        if json_path:
            try:
                self.engine.write_json(str(json_path), self.stale, complete)
            except (_engine.MemcheckError, OSError) as e:
                errors.append(f"results not written: {e}")
                session.exitstatus = pytest.ExitCode.USAGE_ERROR
        ungated = self.engine.ungated(self.accept_command)
        if ungated and not self.update:
            message, none_gated = ungated
            self.warnings.append(message)
            if none_gated and _in_ci() and session.exitstatus == pytest.ExitCode.OK:
                # A gate that gates nothing must not look green on CI.
                errors.append("no test was gated, and this is CI: failing the run (CI is set)")
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        self.warnings += errors
        _count_on_the_final_line(self.config, errors)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            self._github_output()
            if ungated and not self.update:
                self._github_ungated(ungated[0])

    def _github_ungated(self, message: str) -> None:
        """Tests left ungated: a warning annotation, and a line in the step summary."""
        self.annotations.append(
            "::warning title=pytest-memcheck::" + _engine.escape_command(message)
        )
        summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary_path:
            try:
                _engine.append_step_summary(
                    summary_path, f"\n**Warning:** {_engine.escape_markdown(message)}\n"
                )
            except (OSError, _engine.MemcheckError) as e:
                self.warnings.append(f"step summary not written: {e}")

    @functools.cached_property
    def accept_command(self) -> str:
        """The update that accepts this run's figures: it must write where this run reads and
        measure as it measured, or it would never turn the run green. An update without
        --memcheck-native keeps the native baseline as it is, so that is repeated; so are a
        baseline directory, a meter and a confirm setting typed on the command line (from the
        ini or [tool.memcheck] they apply to the update by themselves): an update with confirm
        on records the smaller of two runs, which a run measured once may never come back to."""
        command = ["pytest", "--memcheck-update"]
        if self.engine.native:
            command.append("--memcheck-native")
        for name, dest in (
            ("--memcheck-baseline-dir", "memcheck_baseline_dir"),
            ("--memcheck-meter", "memcheck_meter"),
            ("--memcheck-confirm", "memcheck_confirm"),
        ):
            value = getattr(self.config.option, dest, None)
            if value is not None:
                # one word, as the rootdir lookup wants it (see bench/real_suites.py)
                command.append(shlex.quote(f"{name}={value}"))
        return " ".join(command)

    def _github_output(self) -> None:
        """Annotations on stdout (where the runner reads workflow commands) and the step summary."""
        json_path = self.options.json
        accept = self.accept_command
        if json_path:
            accept = f"memcheck update --from {shlex.quote(Path(json_path).name)}"
            # The CLI reads [tool.memcheck] only: a directory from the command line or the
            # ini is repeated, or the update would refuse (it checks the run's directory).
            typed = self.options.get("memcheck_baseline_dir")
            if typed is not None:
                accept += f" --baseline-dir {shlex.quote(typed)}"
        annotations, summary = self.engine.github(
            self.stale, accept, _repository_prefix(self.config)
        )
        self.annotations = annotations
        summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary_path:
            try:
                _engine.append_step_summary(summary_path, summary)
            except (OSError, _engine.MemcheckError) as e:
                self.warnings.append(f"step summary not written: {e}")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or self.refused:
            return
        tr = terminalreporter
        tr.write_sep("=", "memcheck")
        if self.leaks:
            w, r, floor = self.leaks
            tr.write_line(
                f"leak hunt {w}:{r} (floor {_engine.format_size(floor)}): "
                + (
                    f"{len(self.leaking)} leaking: " + ", ".join(self.leaking)
                    if self.leaking
                    else "no leaks"
                )
            )
        table = self.engine.summary(self.stale, self.config.option.verbose > 0)
        if table:
            tr.write_line(table)
        for line in self.engine.disturbed():
            tr.write_line(line, yellow=True)
        for line in self.engine.unstable():
            tr.write_line(line, yellow=True)
        tr.write_line(self.engine.totals(len(self.stale)))
        if not self.update and not self.is_worker:
            for line in self.engine.next_steps():
                tr.write_line(line)
        for change in self.changes:
            rel = self._rel(change.path)
            if change.deleted:
                tr.write_line(f"removed {rel} (no test of it was collected)")
            elif change.note:
                tr.write_line(f"{rel}: {change.note}")
            if change.written or change.pruned:
                tr.write_line(f"wrote {rel}: {change.written} updated, {change.pruned} pruned")
        if self.update and not self.changes and not self.update_failed:
            tr.write_line("baselines unchanged")
        if self.update and self.incomplete_reasons and not self.is_worker:
            tr.write_line(
                "not pruned: this run was partial (" + ", ".join(self.incomplete_reasons) + ")"
            )
        for note in self.notes:
            tr.write_line(f"warning: {note}", yellow=True)
        for w in self.warnings:
            tr.write_line(f"memcheck: {w}", red=True)
        for line in self.annotations:
            tr.write_line(line)


def _project_site(diagnosis: Any, over: list[str], root: Path) -> tuple[str, int] | None:
    """The top allocation site of a diagnosis that is a file of the project (under the root, not
    an installed package), relative to the root: where an annotation points. Retained sites
    first when retained memory is over its limit; only the sites of a metric over its limit.
    Peak sites that cover too little of the peak (`peak_note`: most of it was allocated and
    freed between two snapshots) point nowhere: the line that made the peak is not among them,
    and an annotation on one of them would blame an innocent line."""
    if diagnosis is None or diagnosis.error:
        return None
    for kind in sorted({"peak", "retained"} & set(over), reverse=True):
        if kind == "peak" and diagnosis.peak_note:
            continue
        for site in getattr(diagnosis, f"{kind}_sites"):
            try:
                rel = Path(site.path).resolve().relative_to(root.resolve())
            except (ValueError, OSError):
                continue
            if not {"site-packages", "dist-packages"} & set(rel.parts):
                return rel.as_posix(), site.line
    native = getattr(diagnosis, "native", None)
    if native is not None and not native.error and any(m.startswith("native_") for m in over):
        from pytest_memcheck.diagnose import _user_frame

        # The Python line that called into the extension, of the top native site.
        for site in native.sites:
            frame = _user_frame(site.python)
            if frame is None:
                continue
            try:
                rel = Path(frame[0]).resolve().relative_to(root.resolve())
            except (ValueError, OSError):
                continue
            if not {"site-packages", "dist-packages"} & set(rel.parts):
                return rel.as_posix(), frame[1]
    return None


def _repository_prefix(config: pytest.Config) -> str:
    """The project root relative to the repository checked out by GitHub Actions (annotations
    name files from there), or "" when it is the same or not under it."""
    workspace = os.environ.get("GITHUB_WORKSPACE")
    if not workspace:
        return ""
    try:
        rel = config.rootpath.resolve().relative_to(Path(workspace).resolve())
    except (ValueError, OSError):
        return ""
    return "" if str(rel) == "." else rel.as_posix()


MEASURE, MEASURE_AGAIN, CALL, DIAGNOSE = "measure", "measure again", "call", "diagnose"
# pytest-memray's rules, for a test over the limit of one of its markers: a measured run that
# counts the test's thread alone, and a diagnosis run that keeps whole stacks.
MEASURE_THREAD, STACKS = "measure this thread", "stacks"
# Each diagnosis runs a failing test once more under tracemalloc: a run with many failures
# (a baseline from elsewhere, a broad regression) gets the first ones diagnosed, not all.
MAX_DIAGNOSES = 10


def _is_async(func: Any) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__func__", None)
    )


def _from_the_meter(e: BaseException) -> bool:
    """Whether the meter refused to open a window (its error comes straight from the engine),
    rather than the test raising an error of ours from its own code."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is None or tb.tb_frame.f_code.co_filename == __file__


def _advance(steps: Generator[str, Any, Any], outcome: tuple[bool, Any]) -> tuple[bool, Any]:
    """Hand the policy what its last request gave (a value, or the exception it raised):
    (True, the test's result) when the policy is done, else (False, its next request)."""
    succeeded, value = outcome
    try:
        return False, (steps.send(value) if succeeded else steps.throw(value))
    except StopIteration as done:
        return True, done.value


def _is_unittest(item: pytest.Item) -> bool:
    unittest = sys.modules.get("_pytest.unittest")
    return unittest is not None and isinstance(item, unittest.TestCaseFunction)


class MeasuredCall:
    """The measured run of one test's body, in place of the test function.

    What is measured and when (measure, confirm, diagnose, hunt leaks) is one policy, `_steps`:
    a generator that asks for a measured run, a plain call or a diagnosis run and is handed the
    outcome. `run` serves it for a plain function; `run_async` for a coroutine function, awaiting
    the body inside the window, so the window spans the coroutine's execution (and the event
    loop's work for it between its steps), not the creation of the coroutine or of the loop.
    """

    def __init__(
        self, manager: Manager, item: pytest.Item, func: Callable[..., Any], rules: dict
    ) -> None:
        self.manager = manager
        self.item = item
        self.func = func
        self.rules = rules
        self.engine_rules = _engine_rules(rules)
        self.meter = manager.engine.meter
        self.took = 0.0  # seconds the first measured run took
        # The diagnosis also records native allocation sites (a native figure is over).
        self.native_diagnosis = False

    def stand_in(self) -> Callable[..., Any]:
        """What replaces the test function: a plain or an `async def` function as the test is
        (so async plugins recognise it), carrying the original's attributes (Hypothesis's
        `.hypothesis` handle, which pytest-asyncio reaches through the test function)."""
        if _is_async(self.func):

            async def stand_in(*args: Any, **kwargs: Any) -> Any:
                return await self.run_async(*args, **kwargs)
        else:

            def stand_in(*args: Any, **kwargs: Any) -> Any:
                return self.run(*args, **kwargs)

        functools.update_wrapper(stand_in, self.func)
        return stand_in

    # -- the two ways to serve the policy ---------------------------------------------------
    def run(self, *args: Any, **kwargs: Any) -> Any:
        def perform(request: str) -> Any:
            if request == MEASURE:
                return _engine.measure(self.meter, self.func, args, kwargs)
            if request == MEASURE_AGAIN:
                # The first run's outcome is the test's: the second one's warnings and errors
                # (a pytest.warns that only warns once, a pytest.fail) are not.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return _engine.measure(self.meter, self.func, args, kwargs)
            if request == MEASURE_THREAD:
                _engine.count_this_thread_only(True)
                try:
                    with warnings.catch_warnings():  # as for MEASURE_AGAIN
                        warnings.simplefilter("ignore")
                        return _engine.measure(self.meter, self.func, args, kwargs)
                finally:
                    _engine.count_this_thread_only(False)
            if request == CALL:
                return self.func(*args, **kwargs)
            from pytest_memcheck.diagnose import diagnose
            from pytest_memcheck.locations import STACK_FRAMES

            if request == STACKS:
                return diagnose(
                    self.func, args, kwargs, frames=STACK_FRAMES, native=self.native_diagnosis
                )
            return diagnose(self.func, args, kwargs, native=self.native_diagnosis)

        steps = self._steps()
        request = next(steps)
        while True:
            try:
                outcome: tuple[bool, Any] = (True, perform(request))
            except BaseException as e:
                outcome = (False, e)
            finished, request = _advance(steps, outcome)
            if finished:
                return request

    async def run_async(self, *args: Any, **kwargs: Any) -> Any:
        async def measure(this_thread_only: bool = False) -> Any:
            window = _engine.Window(self.meter)
            _engine.count_this_thread_only(this_thread_only)
            try:
                window.open()
            finally:
                _engine.count_this_thread_only(False)
            try:
                result = await self.func(*args, **kwargs)
            except BaseException:
                window.close(False)
                raise
            return result, window.close(True)

        async def perform(request: str) -> Any:
            if request == MEASURE:
                return await measure()
            if request == MEASURE_AGAIN:
                with warnings.catch_warnings():  # as in `run`
                    warnings.simplefilter("ignore")
                    return await measure()
            if request == MEASURE_THREAD:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return await measure(this_thread_only=True)
            if request == CALL:
                return await self.func(*args, **kwargs)
            from pytest_memcheck.diagnose import diagnose_async
            from pytest_memcheck.locations import STACK_FRAMES

            if request == STACKS:
                return await diagnose_async(
                    self.func, args, kwargs, frames=STACK_FRAMES, native=self.native_diagnosis
                )
            return await diagnose_async(self.func, args, kwargs, native=self.native_diagnosis)

        steps = self._steps()
        request = next(steps)
        while True:
            try:
                outcome: tuple[bool, Any] = (True, await perform(request))
            except BaseException as e:
                outcome = (False, e)
            finished, request = _advance(steps, outcome)
            if finished:
                return request

    # -- the policy ---------------------------------------------------------------------------
    def _steps(self) -> Generator[str, Any, Any]:
        manager, item, rules = self.manager, self.item, self.rules
        engine = manager.engine
        confirm = engine.confirm and rules.get("confirm", True) is not False
        if manager.leaks and confirm:
            return (yield from self._hunt_leak())
        hint = f"{manager.accept_command} " + shlex.quote(item.nodeid)
        # Node ids are relative to the root: from elsewhere, the command runs there.
        if Path.cwd().resolve() != manager.config.rootpath.resolve():
            hint = f"cd {shlex.quote(str(manager.config.rootpath))} && {hint}"
        started = time.monotonic()
        try:
            result, first = yield MEASURE
        except _engine.MeterError as e:
            if not _from_the_meter(e):
                raise  # the test's own (it measures by itself, nested in our window)
            manager._warn(f"memcheck: {item.nodeid} not measured: {e}", item)
            return (yield CALL)
        self.took = time.monotonic() - started
        verdict = engine.judge(item.nodeid, first, self.engine_rules, hint)
        judged = first
        # One-time costs (caches, first imports, compiled regexes) and scheduling accidents
        # land in one measurement, a regression in both: an over-budget test is measured again
        # and the smaller values are judged; an update records them too, so that baselines do
        # not depend on test order. A disturbed measurement is not repeated.
        second = None
        wanted = manager.update or (verdict.failed and verdict.outcome == "over")
        if first.intact and confirm and wanted:
            short = manager._short_of_time(item, self.took, RERUN_COST)
            try:
                if short:
                    raise _NoTime(short)
                result, second = yield MEASURE_AGAIN
            except _NoTime as e:
                manager._warn(
                    f"memcheck: {item.nodeid}: no confirming second run: {e}; the first "
                    "measurement stands",
                    item,
                )
            except RERUN_ERRORS as e:  # the test cannot run twice: judge the first measurement
                reason = (str(e).splitlines() or [""])[0][:200]
                manager._warn(
                    f"memcheck: {item.nodeid}: the confirming second run raised "
                    f"{type(e).__name__}: {reason}; the first measurement stands "
                    "(mark it @pytest.mark.memcheck(confirm=False) to skip the second run)",
                    item,
                )
            else:
                if second.intact and manager.update:
                    # Measurements that differ by more than the tolerance: measure more and
                    # record the spread (README, "Unstable tests"); else the smaller values.
                    judged = yield from self._settle([first, second])
                    verdict = engine.judge(item.nodeid, judged, self.engine_rules, hint)
                elif second.intact:
                    judged = first.least(second)
                    verdict = engine.judge(item.nodeid, judged, self.engine_rules, hint)
        notes: list[str] = []
        stacks = None
        if verdict.fails(not manager.update) and verdict.outcome == "over":
            verdict, notes, stacks = yield from self._memray(verdict, judged, hint, confirm)
        if not confirm and verdict.fails(not manager.update) and verdict.outcome == "over":
            # The baseline may be the smaller of two runs (an update with confirm on): a
            # one-time cost of this first run would then be the whole difference.
            notes.append(
                "  measured once (confirm is off): a one-time cost of a first run (a cache it "
                "fills, a first import) is judged too, while an update with confirm on records "
                "the smaller of two runs; record and gate with the same confirm setting"
            )
        diagnosis = None
        if verdict.fails(not manager.update) and verdict.outcome == "over" and verdict.over:
            # A native figure over its limit: the diagnosis names the native sites too.
            self.native_diagnosis = any(m.startswith("native_") for m in verdict.over)
            if stacks is not None and not stacks.error and not self.native_diagnosis:
                diagnosis = stacks  # the run with whole stacks is a diagnosis too
            else:
                diagnosis = yield from self._diagnosis(confirm)
            where = manager.options.dump
            if where and not diagnosis.error:
                try:
                    diagnosis.dump(where, item.nodeid, manager.config.rootpath)
                except (OSError, _engine.MemcheckError) as e:
                    manager._warn(f"memcheck: no dump for {item.nodeid}: {e}", item)
        item.stash[VERDICT] = (verdict, first, second, diagnosis, notes)
        return result

    def _runs_once(self) -> str:
        """Why the test is not run again: its marker, or confirm switched off for the run."""
        if self.rules.get("confirm", True) is False:
            return "the test is marked confirm=False: it runs once"
        return "confirm is off for this run (--memcheck-confirm=no or the confirm setting): it runs once"

    def _memray(
        self, verdict: Any, judged: Any, hint: str, may_run_again: bool
    ) -> Generator[str, Any, tuple[Any, list[str], Any]]:
        """pytest-memray's rules that a total cannot settle, for a test over the limit of one of
        its markers: `limit_leaks` judges each allocation location (its whole stack) on its own
        and asks `filter_fn` which count; `current_thread_only=True` counts the test's thread
        alone. A total is never below what these rules count (every location retains >= 0, the
        test's thread is one of the threads), so a test within the limit never comes here.
        Over it, the test runs again: counting its thread alone, or under tracemalloc keeping
        whole stacks. A rule that holds lifts the limit to what was measured (re-judged, so that
        every other check stands); one that does not names what broke it. Returns the verdict,
        lines for the failure message, and the run with whole stacks (a diagnosis) if made."""
        from pytest_memcheck import locations
        from pytest_memcheck.diagnose import TOP

        over = set(verdict.over)
        peak = self.rules.get(MEMRAY_RULE["peak"]) if "peak" in over else None
        if peak is not None and not peak.current_thread_only:
            peak = None  # limit_memory without options: the total is its rule
        leaks = self.rules.get(MEMRAY_RULE["retained"]) if "retained" in over else None
        if peak is None and leaks is None:
            return verdict, [], None
        size = _engine.format_size
        markers = " and ".join(r.marker for r in (peak, leaks) if r is not None)
        why = None if may_run_again else self._runs_once()
        why = why or self.manager._short_of_time(self.item, self.took, DIAGNOSIS_COST)
        if why:
            return (
                verdict,
                [f"  ({markers} judged on the test's total: not run again: {why})"],
                None,
            )
        lines: list[str] = []
        relieved: dict[str, int] = {}
        thread = stacks = None
        if peak is not None or (leaks is not None and leaks.current_thread_only):
            if self.meter == "python":
                try:
                    _, thread = yield MEASURE_THREAD
                except RERUN_ERRORS as e:
                    reason = (str(e).splitlines() or [""])[0][:200]
                    lines.append(
                        f"  (the run counting the test's thread alone raised "
                        f"{type(e).__name__}: {reason})"
                    )
                else:
                    if not thread.intact:
                        lines.append(
                            "  (the run counting the test's thread alone is disturbed: "
                            f"{thread.disturbed})"
                        )
                        thread = None
        if peak is not None and thread is not None:
            if thread.peak <= peak.limit:
                relieved["peak"] = judged.peak
            else:
                lines.append(
                    f"  limit_memory(current_thread_only=True): the test's thread alone peaked "
                    f"at {size(thread.peak)}, over {size(peak.limit)}"
                )
        if leaks is not None:
            if thread is not None and leaks.current_thread_only and thread.retained <= leaks.limit:
                relieved["retained"] = judged.retained  # no location of the thread can be over
            else:
                stacks = yield STACKS
                if stacks.error:
                    lines.append(
                        f"  (limit_leaks judged on the test's total: no run to find its "
                        f"locations: {stacks.error})"
                    )
                else:
                    found = locations.leaks(
                        stacks.retained_traces, stacks.caller, leaks.current_thread_only
                    )
                    bad = locations.over(found, leaks.limit, leaks.filter_fn)
                    if not bad:
                        relieved["retained"] = judged.retained
                    else:
                        which = ", the test's thread alone" if leaks.current_thread_only else ""
                        kept = ", those filter_fn keeps" if leaks.filter_fn is not None else ""
                        lines.append(
                            f"  limit_leaks: {len(bad)} location(s) leaked more than "
                            f"{size(leaks.limit)} each (pytest-memray's rule: each allocation "
                            f"stack on its own{which}{kept}):"
                        )
                        root = self.manager.config.rootpath
                        lines += [f"    {leak.show(root)}" for leak in bad[:TOP]]
                        if len(bad) > TOP:
                            lines.append(f"    ... and {len(bad) - TOP} more")
        if relieved:
            rules = {**self.rules, **{m: str(v) for m, v in relieved.items()}}
            verdict = self.manager.engine.judge(
                self.item.nodeid, judged, _engine_rules(rules), hint
            )
        return verdict, lines, stacks

    def _settle(self, runs: list[Any]) -> Generator[str, Any, Any]:
        """An update's measurements of one test, settled by the engine: while the first two
        differ by more than the tolerance, measure again (up to 5 in all, as far as
        pytest-timeout leaves the time), and return what to record — the smaller values, or the
        lowest and highest of an unstable test."""
        manager, item = self.manager, self.item
        while True:
            settled, more = manager.engine.settle(runs, self.engine_rules)
            if not more:
                return settled
            stop = manager._short_of_time(item, self.took, RERUN_COST)
            if stop is None:
                try:
                    _, again = yield MEASURE_AGAIN
                except RERUN_ERRORS as e:
                    reason = (str(e).splitlines() or [""])[0][:200]
                    stop = f"measurement {len(runs) + 1} raised {type(e).__name__}: {reason}"
                else:
                    if again.intact:
                        runs.append(again)
                        continue
                    stop = f"measurement {len(runs) + 1} is disturbed: {again.disturbed}"
            manager._warn(
                f"memcheck: {item.nodeid}: its measurements differ by more than the tolerance; "
                f"no more of them: {stop}; recorded from the {len(runs)} taken",
                item,
            )
            return settled

    def _diagnosis(self, may_run_again: bool) -> Generator[str, Any, Any]:
        """A run of the body under tracemalloc for the failure message: never for a test that
        must not run twice, and for at most MAX_DIAGNOSES tests a session."""
        from pytest_memcheck.diagnose import Diagnosis

        if not may_run_again:
            return Diagnosis([], [], [], None, self._runs_once())
        short = self.manager._short_of_time(self.item, self.took, DIAGNOSIS_COST)
        if short:
            return Diagnosis([], [], [], None, f"not run again: {short}")
        if self.manager.diagnosed >= MAX_DIAGNOSES:
            return Diagnosis(
                [], [], [], None, f"{MAX_DIAGNOSES} tests were diagnosed already in this run"
            )
        self.manager.diagnosed += 1
        return (yield DIAGNOSE)

    def _hunt_leak(self) -> Generator[str, Any, Any]:
        """CPython's regrtest -R rule: after warm-ups, a leak only if every measured run retained
        more than the floor. Fixtures are set up once, for all the runs."""
        warmups, runs, floor = self.manager.leaks
        result = None
        for _ in range(warmups):
            result = yield CALL
        deltas = []
        cycles = 0
        for _ in range(runs):
            result, m = yield MEASURE
            deltas.append(m.retained)
            cycles = m.cycles
        if all(d > floor for d in deltas):
            size = _engine.format_size
            message = (
                f"memcheck: leak: retained {', '.join(size(d) for d in deltas)} in {runs} runs "
                f"after {warmups} warm-up runs, every one above the floor {size(floor)}"
            )
            diagnosis = yield DIAGNOSE
            message += "\n" + diagnosis.text(self.manager.config.rootpath, {"retained"}, cycles)
            self.item.stash[LEAK] = message
        return result


class XdistController:
    """Registered on the xdist controller only: it never collects, the workers tell it what they did."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        # A worker that deselected tests (a plugin's pytest_collection_modifyitems) or failed to
        # collect some says so; one that went down without saying leaves the run partial too.
        reasons = getattr(node, "workeroutput", {}).get("memcheck_incomplete")
        if reasons is None:
            reasons = ["an xdist worker did not report its collection"]
        for reason in reasons:
            if reason not in self.manager.incomplete_reasons:
                self.manager.incomplete_reasons.append(reason)

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # Every worker collects the whole suite; one list is the collection.
        if not self.manager.collected:
            self.manager.collected = list(ids)
