"""The pytest side of pytest-memcheck: options, markers, the measuring wrapper and the report.

Everything that decides anything (settings, sizes, baselines, the gate, the tables) lives in the
Rust engine; this module only connects it to pytest's hooks.
"""

from __future__ import annotations

import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest

from pytest_memcheck import _engine, environment

UPDATE_MODES = ("changed", "all")
METERS = ("python", "tracemalloc", "rss")
MARKER_KEYS = (
    "peak",
    "retained",
    "tolerance",
    "floor",
    "skip",
    "confirm",
    "gate_cycles",
    "gate_retained",
)
# Hypothesis runs different random examples each run and keeps growing caches of its own: its
# tests' retained memory is not theirs, and their peak moved by up to +40 % between runs of real
# suites (attrs). Their defaults, unless a marker says otherwise:
HYPOTHESIS_RULES = {"gate_retained": False, "tolerance": "50%"}

VERDICT = pytest.StashKey[Any]()
LEAK = pytest.StashKey[str]()
LEAK_FLOOR = "256 B"
RULES = pytest.StashKey[Any]()


def _take_update_value(config: pytest.Config) -> None:
    """`--memcheck-update tests/` must mean what the user meant: argparse hands the optional
    value `tests/` to the option, so a value that is not a mode but names a test path goes back
    to the test paths."""
    value = config.option.memcheck_update
    if value is None or value in UPDATE_MODES:
        return
    path = Path(config.invocation_params.dir, value.split("::", 1)[0])
    if not path.exists():
        raise pytest.UsageError(
            f"--memcheck-update: expected no value or one of {', '.join(UPDATE_MODES)}, "
            f"got {value!r} (and no such test path)"
        )
    config.option.memcheck_update = "changed"
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        config.args.append(value)
    else:
        config.args[:] = [value]
        config.args_source = pytest.Config.ArgsSource.ARGS


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
    group.addoption(
        "--memcheck",
        action="store_true",
        default=False,
        help="measure the peak and retained memory of every test and fail tests over their baseline",
    )
    group.addoption(
        "--memcheck-update",
        nargs="?",
        const="changed",
        default=None,
        metavar="all",
        help="measure and write baselines: new entries and entries outside their tolerance "
        "(=all: every entry). Refused in CI unless --memcheck-allow-ci-update.",
    )
    group.addoption(
        "--memcheck-allow-ci-update",
        action="store_true",
        default=False,
        help="allow --memcheck-update when the CI environment variable is set",
    )
    group.addoption(
        "--memcheck-strict",
        action="store_true",
        default=None,
        help="also fail tests without a baseline or with one from another environment",
    )
    group.addoption(
        "--memcheck-meter",
        choices=METERS,
        default=None,
        help="what to measure: python (exact, default), tracemalloc (reference), rss (coarse, sees native malloc)",
    )
    group.addoption(
        "--memcheck-tolerance",
        default=None,
        metavar="PCT",
        help="relative slack above the baseline, e.g. 10%% (default 10%%)",
    )
    group.addoption(
        "--memcheck-floor",
        default=None,
        metavar="SIZE",
        help="absolute slack above the baseline, e.g. 64KiB (default 64 KiB)",
    )
    group.addoption(
        "--memcheck-baseline-dir",
        default=None,
        metavar="DIR",
        help="where baseline files live, relative to the rootdir (default baselines); "
        "may hold {python}, {platform}, {implementation}",
    )
    group.addoption(
        "--memcheck-ref",
        default=None,
        metavar="REF",
        help="compare with the baselines as committed at a git revision (e.g. origin/main), "
        "read from git without a checkout",
    )
    group.addoption(
        "--memcheck-json",
        default=None,
        metavar="PATH",
        help="write every result of the run to PATH as JSON (schema: results.schema.json)",
    )
    group.addoption(
        "--memcheck-leaks",
        default=None,
        type=_leak_runs,
        metavar="W:R[:FLOOR]",
        help="leak hunt instead of the baseline gate: run each test W times unmeasured, then R "
        "times measured; a test leaks when all R retained deltas exceed FLOOR (default 256 B)",
    )
    group.addoption(
        "--memcheck-dump",
        default=None,
        metavar="DIR",
        help="for tests over budget, write heap dumps to DIR: folded stacks and flame graph SVGs "
        "of the peak and retained allocations, and a JSON of the top sites",
    )
    group.addoption(
        "--memcheck-confirm",
        default=None,
        type=_yes_no,
        metavar="yes|no",
        help="re-measure an over-budget test once before failing it (default yes)",
    )
    group.addoption(
        "--memcheck-gate-cycles",
        action="store_true",
        default=None,
        help="fail tests that leave more cyclic garbage than their baseline",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "memcheck(peak=None, retained=None, tolerance=None, floor=None, skip=False, confirm=True, "
        "gate_cycles=None): per-test memory limits and settings of pytest-memcheck",
    )
    config.addinivalue_line(
        "markers",
        "limit_memory(limit): fail the test if its peak memory exceeds limit (e.g. '24 MB')",
    )
    config.addinivalue_line(
        "markers", "limit_leaks(limit): fail the test if it retains more than limit (e.g. '1 MB')"
    )
    opt = config.option
    _take_update_value(config)
    if not (opt.memcheck or opt.memcheck_update or opt.memcheck_leaks):
        return
    if opt.memcheck_update and opt.memcheck_leaks:
        raise pytest.UsageError("--memcheck-leaks hunts leaks; it writes no baselines")
    if opt.memcheck_update and _in_ci() and not opt.memcheck_allow_ci_update:
        raise pytest.UsageError(
            "--memcheck-update does not write baselines in CI (CI is set): let CI measure with "
            "--memcheck and accept its values locally, or pass --memcheck-allow-ci-update"
        )
    if opt.memcheck_update and opt.memcheck_ref:
        raise pytest.UsageError(
            "--memcheck-update writes the work tree's baselines; it cannot be combined with "
            "--memcheck-ref"
        )
    overrides = {
        "tolerance": opt.memcheck_tolerance,
        "floor": opt.memcheck_floor,
        "baseline-dir": opt.memcheck_baseline_dir,
        "meter": opt.memcheck_meter,
        "strict": "true" if opt.memcheck_strict else None,
        "confirm": opt.memcheck_confirm,
        "gate-cycles": "true" if opt.memcheck_gate_cycles else None,
    }
    try:
        engine = _engine.Session(
            str(config.rootpath),
            {k: v for k, v in overrides.items() if v is not None},
            environment.python(),
            environment.implementation(),
            environment.platform(),
            opt.memcheck_ref,
            mode=environment.mode(),
        )
    except _engine.MemcheckError as e:
        raise pytest.UsageError(str(e)) from None
    if engine.meter != "rss" and sys.implementation.name != "cpython":
        raise pytest.UsageError("pytest-memcheck's python meter needs CPython")
    refusal, warning = platform_limits(engine.meter, sys.platform, sys.maxsize > 2**32, _numpy())
    if refusal:
        raise pytest.UsageError(refusal)
    if warning:
        config.issue_config_time_warning(pytest.PytestConfigWarning(warning), stacklevel=2)
    distributing = not hasattr(config, "workerinput") and getattr(opt, "dist", "no") != "no"
    if distributing and sys.flags.dev_mode and not os.environ.get("PYTHONDEVMODE"):
        # The workers measure; they would run without -X dev under baselines labelled dev.
        raise pytest.UsageError(
            "pytest-xdist starts its workers without -X dev: set PYTHONDEVMODE=1 instead, so "
            "that the workers measure in the mode the baselines record"
        )
    manager = Manager(config, engine)
    config.pluginmanager.register(manager, "memcheck-manager")


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
    for name, metric in (("limit_memory", "peak"), ("limit_leaks", "retained")):
        mark = item.get_closest_marker(name)
        if mark is not None:
            limit = mark.args[0] if mark.args else mark.kwargs.get("limit")
            if limit is None:
                raise pytest.UsageError(
                    f"{_where(item)}: {name} marker of {item.nodeid} needs a limit"
                )
            rules.setdefault(metric, limit)
            rules.setdefault(f"{metric}_origin", name)
    if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
        for key, value in HYPOTHESIS_RULES.items():
            rules.setdefault(key, value)
    if rules.get("skip"):
        return None
    return rules


class Manager:
    """The session's state; pytest's hooks are its methods."""

    def __init__(self, config: pytest.Config, engine: Any) -> None:
        self.config = config
        self.engine = engine
        self.update: str | None = config.option.memcheck_update
        self.leaks: tuple[int, int, int] | None = config.option.memcheck_leaks
        self.leaking: list[str] = []
        self.is_worker = hasattr(config, "workerinput")
        self.collected: list[str] = []
        self.incomplete_reasons: list[str] = []
        self.changes: list[tuple[Any, ...]] = []
        self.warnings: list[str] = []
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
        # The xdist controller measures nothing and collects nothing: workers do both.
        self.distributed = not self.is_worker and getattr(opt, "dist", "no") != "no"
        if self.distributed:
            config.pluginmanager.register(XdistController(self), "memcheck-xdist-controller")

    # -- report header -------------------------------------------------------------------
    def pytest_report_header(self, config: pytest.Config) -> str:
        mode = f", update: {self.update}" if self.update else ""
        source = self.engine.config_file
        where = f" ({Path(source).name})" if source else ""
        return (
            f"memcheck: meter {self.engine.meter}, {self.engine.thresholds}{where}, "
            f"baselines {self._rel(self.engine.baseline_dir)}{mode}"
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
        modules = set()
        for item in items:
            if isinstance(item, pytest.Function):
                rules = item.stash[RULES] = _marker_rules(item)
                if rules is not None:
                    try:
                        self.engine.check_markers(rules)
                    except _engine.MemcheckError as e:
                        raise pytest.UsageError(f"{_where(item)}: {e}") from None
            modules.add(item.nodeid.split("::", 1)[0])
        try:
            self.engine.preload(sorted(modules))
        except (_engine.MemcheckError, OSError) as e:
            raise pytest.UsageError(f"memcheck: {e}") from None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if not self.distributed:
            self.collected = [item.nodeid for item in session.items]

    # -- measuring -----------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        # Read at collection (on this process: xdist workers collect too).
        rules = item.stash.get(RULES, None) if isinstance(item, pytest.Function) else None
        if rules is None:
            return (yield)
        original = item.obj
        item.obj = self._measuring(item, original, rules)
        try:
            return (yield)
        finally:
            item.obj = original

    def _measuring(self, item: pytest.Item, func: Callable[..., Any], rules: dict[str, Any]):
        """A stand-in for the test function that runs it inside a measured window."""
        meter = self.engine.meter
        confirm = self.engine.confirm and rules.get("confirm", True) is not False
        hint = "pytest --memcheck-update " + shlex.quote(item.nodeid)

        def measured(*args: Any, **kwargs: Any) -> Any:
            if self.leaks and confirm:
                return self._hunt_leak(item, func, args, kwargs)
            try:
                result, first = _engine.measure(meter, func, args, kwargs)
            except _engine.MeterError as e:
                warnings.warn(f"memcheck: {item.nodeid} not measured: {e}", stacklevel=1)
                return func(*args, **kwargs)
            if not first.intact:
                warnings.warn(
                    f"memcheck: {item.nodeid} replaced the memory allocator while measured "
                    "(tracemalloc.start()?); its numbers are not gated",
                    stacklevel=1,
                )
                return result
            verdict = self.engine.judge(item.nodeid, first, rules, hint)
            # One-time costs (caches, first imports, compiled regexes) and scheduling accidents
            # land in one measurement, a regression in both: an over-budget test is measured again
            # and the smaller values are judged; an update records them too, so that baselines do
            # not depend on test order.
            second = None
            if confirm and (self.update or verdict.failed and verdict.outcome == "over"):
                try:
                    result, second = _engine.measure(meter, func, args, kwargs)
                except Exception as e:  # the test cannot run twice: judge the first measurement
                    reason = (str(e).splitlines() or [""])[0][:200]
                    warnings.warn(
                        f"memcheck: {item.nodeid}: the confirming second run raised "
                        f"{type(e).__name__}: {reason}; the first measurement stands "
                        "(mark it @pytest.mark.memcheck(confirm=False) to skip the second run)",
                        stacklevel=1,
                    )
                else:
                    if second.intact:
                        verdict = self.engine.judge(item.nodeid, first.least(second), rules, hint)
            diagnosis = None
            if verdict.fails(not self.update) and verdict.outcome == "over":
                from pytest_memcheck.diagnose import diagnose

                diagnosis = diagnose(func, args, kwargs)
                dump_dir = self.config.option.memcheck_dump
                if dump_dir and not diagnosis.error:
                    where = Path(self.config.invocation_params.dir, dump_dir)
                    try:
                        diagnosis.dump(where, item.nodeid, self.config.rootpath)
                    except (OSError, _engine.MemcheckError) as e:
                        warnings.warn(f"memcheck: no dump for {item.nodeid}: {e}", stacklevel=1)
            item.stash[VERDICT] = (verdict, first, second, diagnosis)
            return result

        measured.__name__ = getattr(func, "__name__", "measured")
        return measured

    def _hunt_leak(self, item: pytest.Item, func: Callable[..., Any], args: tuple, kwargs: dict):
        """CPython's regrtest -R rule: after warm-ups, a leak only if every measured run retained
        more than the floor. Fixtures are set up once, for all the runs."""
        warmups, runs, floor = self.leaks
        result = None
        for _ in range(warmups):
            result = func(*args, **kwargs)
        deltas = []
        for _ in range(runs):
            result, m = _engine.measure(self.engine.meter, func, args, kwargs)
            deltas.append(m.retained)
        if all(d > floor for d in deltas):
            from pytest_memcheck.diagnose import diagnose

            size = _engine.format_size
            message = (
                f"memcheck: leak: retained {', '.join(size(d) for d in deltas)} in {runs} runs "
                f"after {warmups} warm-up runs, every one above the floor {size(floor)}"
            )
            diagnosis = diagnose(func, args, kwargs)
            message += "\n" + diagnosis.text(self.config.rootpath, {"retained"}, m.cycles)
            item.stash[LEAK] = message
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]):
        report = yield
        if call.when == "call" and LEAK in item.stash and report.passed:
            report.outcome = "failed"
            report.longrepr = item.stash[LEAK]
            self.leaking.append(item.nodeid)
            return report
        if call.when != "call" or VERDICT not in item.stash:
            return report
        verdict, first, second, diagnosis = item.stash[VERDICT]
        # Tests that fail on their own, skip or xfail are not gated and not recorded; an update
        # records new values instead of failing on them.
        own_pass = report.passed and not hasattr(report, "wasxfail")
        gated = not self.update
        if own_pass and verdict.fails(gated):
            report.outcome = "failed"
            message = verdict.message
            if second is not None and verdict.outcome == "over":
                size = _engine.format_size
                message += (
                    f"\n  confirmed by a second measurement: peak {size(first.peak)} then "
                    f"{size(second.peak)}, retained {size(first.retained)} then "
                    f"{size(second.retained)}; the smaller values are judged"
                )
            if diagnosis is not None:
                judged = first if second is None else first.least(second)
                message += "\n" + diagnosis.text(
                    self.config.rootpath, set(verdict.over), judged.cycles
                )
            report.longrepr = message
        path, line, _ = item.location
        # A JSON string: it crosses to the xdist controller as it is.
        report.memcheck = verdict.to_json(own_pass, gated, path, (line or 0) + 1)
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, "memcheck", None)
        if report.when == "call" and data is not None:
            self.engine.record(data)

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
            return
        complete, scope = self._coverage(session)
        try:
            self.stale = self.engine.stale(complete, self.collected, scope)
            if self.update and exitstatus != pytest.ExitCode.INTERRUPTED:
                self.changes = self.engine.update(
                    self.update == "all", complete, self.collected, scope
                )
        except (_engine.MemcheckError, OSError) as e:
            self.warnings.append(f"baselines not written: {e}")
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
        json_path = self.config.option.memcheck_json
        if json_path:
            try:
                self.engine.write_json(
                    str(Path(self.config.invocation_params.dir, json_path)), self.stale, complete
                )
            except (_engine.MemcheckError, OSError) as e:
                self.warnings.append(f"results not written: {e}")
                session.exitstatus = pytest.ExitCode.USAGE_ERROR
        if os.environ.get("GITHUB_ACTIONS") == "true":
            self._github_output()

    def _github_output(self) -> None:
        """Annotations on stdout (where the runner reads workflow commands) and the step summary."""
        json_path = self.config.option.memcheck_json
        accept = (
            f"memcheck update --from {shlex.quote(Path(json_path).name)}"
            if json_path
            else "pytest --memcheck-update"
        )
        annotations, summary = self.engine.github(self.stale, accept)
        self.annotations = annotations
        summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary_path:
            try:
                with open(summary_path, "a", encoding="utf-8") as f:
                    f.write(summary)
            except OSError as e:
                self.warnings.append(f"step summary not written: {e}")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
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
        tr.write_line(self.engine.totals(len(self.stale)))
        for path, written, pruned, deleted, note in self.changes:
            rel = self._rel(path)
            if deleted:
                tr.write_line(f"removed {rel} (no test of it was collected)")
            elif note:
                tr.write_line(f"{rel}: {note}")
            if written or pruned:
                tr.write_line(f"wrote {rel}: {written} updated, {pruned} pruned")
        if self.update and not self.changes:
            tr.write_line("baselines unchanged")
        if self.update and self.incomplete_reasons and not self.is_worker:
            tr.write_line(
                "not pruned: this run was partial (" + ", ".join(self.incomplete_reasons) + ")"
            )
        for w in self.warnings:
            tr.write_line(f"memcheck: {w}", red=True)
        for line in self.annotations:
            tr.write_line(line)


class XdistController:
    """Registered on the xdist controller only: it never collects, the workers tell it what they did."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # Every worker collects the whole suite; one list is the collection.
        if not self.manager.collected:
            self.manager.collected = list(ids)
