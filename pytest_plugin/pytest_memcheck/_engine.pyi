"""Typed stubs of the Rust engine (src/python.rs)."""

from pathlib import Path
from typing import Any, Callable

FORMAT: int

class MemcheckError(Exception): ...
class UsageError(MemcheckError): ...
class FileFormatError(MemcheckError): ...
class MeterError(MemcheckError): ...

class Measurement:
    peak: int
    retained: int
    allocations: int
    cycles: int
    disturbed: str | None
    intact: bool
    peak_max: int | None
    retained_max: int | None
    native_peak: int | None
    native_retained: int | None
    def __init__(
        self,
        peak: int,
        retained: int,
        allocations: int = 0,
        cycles: int = 0,
        disturbed: str | None = None,
        *,
        peak_max: int | None = None,
        retained_max: int | None = None,
        native_peak: int | None = None,
        native_retained: int | None = None,
    ) -> None: ...
    def least(self, other: Measurement) -> Measurement: ...

class Window:
    """A measured window around a coroutine's execution: open() before, close() after."""
    def __init__(self, meter: str) -> None: ...
    def open(self) -> None: ...
    def close(self, completed: bool) -> Measurement: ...

class Verdict:
    outcome: str
    failed: bool
    message: str
    over: list[str]
    def fails(self, gated: bool) -> bool: ...
    def to_json(
        self,
        passed_own: bool,
        gated: bool = True,
        path: str | None = None,
        line: int | None = None,
        message: str | None = None,
        site: tuple[str, int] | None = None,
    ) -> str: ...

class Session:
    baseline_dir: Path
    meter: str
    strict: bool
    native: bool
    confirm: bool
    config_file: Path | None
    thresholds: str
    environment: str
    def __init__(
        self,
        root: str,
        overrides: dict[str, str],
        python: str,
        implementation: str,
        platform: str,
        git_ref: str | None = None,
        ini: dict[str, tuple[str, str]] = ...,
        *,
        mode: str = "",
    ) -> None: ...
    def preload(self, modules: list[str]) -> None: ...
    def check_markers(self, rules: dict[str, Any | None] = None) -> None: ...
    def judge(
        self,
        nodeid: str,
        measurement: Measurement,
        rules: dict[str, Any | None] = None,
        update_hint: str = "",
    ) -> Verdict: ...
    def settle(
        self, runs: list[Measurement], rules: dict[str, Any | None] = None
    ) -> tuple[Measurement, bool]: ...
    def record(self, result: str) -> None: ...
    def stale(self, complete: bool, collected: list[str], scope: list[str]) -> list[str]: ...
    def update(
        self, all: bool, complete: bool, collected: list[str], scope: list[str]
    ) -> list[tuple[Path, int, int, bool, str | None]]: ...
    def summary(self, stale: list[str], verbose: bool = False) -> str | None: ...
    def disturbed(self) -> list[str]: ...
    def unstable(self) -> list[str]: ...
    def ungated(self) -> tuple[str, bool] | None: ...
    def totals(self, stale: int) -> str: ...
    def write_json(self, path: str, stale: list[str], complete: bool) -> None: ...
    def github(self, stale: list[str], accept: str, prefix: str = "") -> tuple[list[str], str]: ...

def measure(
    meter: str,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any | None] = None,
) -> tuple[Any, Measurement]: ...
def meter_footprint() -> int: ...
def enable_native() -> None:
    """Count native memory in every later window of the python meter (MeterError if it cannot)."""

def native_diagnosis_start() -> None:
    """Open a native window that records the allocating stacks (MeterError if native memory
    is not counted)."""

def native_diagnosis_stop() -> tuple[
    int, int, list[tuple[list[str], list[tuple[str, int, str]], int, int, int, int]], bool
]:
    """Close it: (native peak, native retained, sites, past budget), a site being (native
    frames innermost first, the Python frames (path, line, function) innermost first, retained
    bytes, retained blocks, bytes at the peak, blocks at the peak), by retained bytes; past
    budget when the run outlasted the time stacks are recorded for."""

def exclude_threads_running_now() -> int: ...
def escape_command(text: str) -> str: ...
def escape_markdown(text: str) -> str: ...
def parse_size(text: str, origin: str = "size") -> int: ...
def parse_percent(text: str, origin: str = "percentage") -> float: ...
def format_size(bytes: int) -> str: ...
def cli(
    args: list[str], python: str, implementation: str, platform: str, mode: str = ""
) -> int: ...
def write_flamegraph(dir: str, stem: str, folded: str, title: str) -> None: ...
def write_dump_file(dir: str, name: str, text: str) -> None: ...
def append_step_summary(path: str, text: str) -> None: ...
def dump_stem(nodeid: str) -> str: ...
def escape_terminal(text: str) -> str: ...
