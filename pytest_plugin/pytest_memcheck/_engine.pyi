"""Typed stubs of the Rust engine (src/python.rs)."""

from pathlib import Path
from typing import Any, Callable, final

__all__ = [
    "Measurement",
    "Verdict",
    "Window",
    "Session",
    "MarkerRules",
    "FileChange",
    "NativeSite",
    "NativeDiagnosis",
    "native_diagnosis_start",
    "native_diagnosis_stop",
    "measure",
    "cli",
    "write_flamegraph",
    "write_dump_file",
    "append_step_summary",
    "dump_stem",
    "escape_terminal",
    "meter_footprint",
    "enable_native",
    "exclude_threads_running_now",
    "count_this_thread_only",
    "escape_command",
    "escape_markdown",
    "parse_size",
    "parse_percent",
    "format_size",
    "MemcheckError",
    "UsageError",
    "FileFormatError",
    "MeterError",
    "FORMAT",
]

FORMAT: int

class MemcheckError(Exception): ...
class UsageError(MemcheckError): ...
class FileFormatError(MemcheckError): ...
class MeterError(MemcheckError): ...

@final
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
    native_peak_max: int | None
    native_retained_max: int | None
    combined_peak: int | None
    def __new__(
        cls,
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
        native_peak_max: int | None = None,
        native_retained_max: int | None = None,
        combined_peak: int | None = None,
    ) -> Measurement: ...
    def least(self, other: Measurement) -> Measurement: ...

@final
class MarkerRules:
    """A test's rules from its markers; sizes and percentages as text or numbers."""

    KEYS: list[str]
    def __new__(
        cls,
        *,
        origin: str | None = None,
        peak: str | int | float | None = None,
        retained: str | int | float | None = None,
        native_peak: str | int | float | None = None,
        native_retained: str | int | float | None = None,
        tolerance: str | int | float | None = None,
        floor: str | int | float | None = None,
        gate_cycles: bool | None = None,
        gate_retained: bool | None = None,
        unstable: str | None = None,
        peak_origin: str | None = None,
        retained_origin: str | None = None,
    ) -> MarkerRules: ...

@final
class FileChange:
    """What an update did to one baseline file."""

    path: Path
    written: int
    pruned: int
    deleted: bool
    note: str | None

@final
class NativeSite:
    """One native allocation site of a diagnosing run."""

    frames: list[str]
    python: list[tuple[str, int, str]]
    retained: int
    retained_blocks: int
    peak: int
    peak_blocks: int

@final
class NativeDiagnosis:
    """What a diagnosing run found natively; past_budget when the run outlasted the time stacks
    are recorded for."""

    peak: int
    retained: int
    sites: list[NativeSite]
    past_budget: bool

@final
class Window:
    """A measured window around a coroutine's execution: open() before, close() after."""
    def __new__(cls, meter: str) -> Window: ...
    def open(self) -> None: ...
    def close(self, completed: bool) -> Measurement: ...

@final
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

@final
class Session:
    baseline_dir: Path
    meter: str
    strict: bool
    native: bool
    confirm: bool
    config_file: Path | None
    thresholds: str
    environment: str
    def __new__(
        cls,
        root: str,
        overrides: dict[str, str],
        python: str,
        implementation: str,
        platform: str,
        git_ref: str | None = None,
        ini: dict[str, tuple[str, str]] = ...,
        *,
        mode: str = ...,
    ) -> Session: ...
    def preload(self, modules: list[str]) -> None: ...
    def check_markers(self, rules: MarkerRules | None = None) -> None: ...
    def judge(
        self,
        nodeid: str,
        measurement: Measurement,
        rules: MarkerRules | None = None,
        update_hint: str = "",
    ) -> Verdict: ...
    def settle(
        self, runs: list[Measurement], rules: MarkerRules | None = None
    ) -> tuple[Measurement, bool]: ...
    def record(self, result: str) -> None: ...
    def stale(self, complete: bool, collected: list[str], scope: list[str]) -> list[str]: ...
    def update(
        self, all: bool, complete: bool, collected: list[str], scope: list[str]
    ) -> list[FileChange]: ...
    def summary(self, stale: list[str], verbose: bool = False) -> str | None: ...
    def disturbed(self) -> list[str]: ...
    def unstable(self) -> list[str]: ...
    def ungated(self, update_hint: str) -> tuple[str, bool] | None: ...
    def next_steps(self) -> list[str]: ...
    def totals(self, stale: int) -> str: ...
    def write_json(self, path: str, stale: list[str], complete: bool) -> None: ...
    def github(self, stale: list[str], accept: str, prefix: str = "") -> tuple[list[str], str]: ...

def measure(
    meter: str,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None = None,
) -> tuple[Any, Measurement]: ...
def meter_footprint() -> int: ...
def enable_native() -> None:
    """Count native memory in every later window of the python meter (MeterError if it cannot)."""

def native_diagnosis_start() -> None:
    """Open a native window that records the allocating stacks (MeterError if native memory
    is not counted)."""

def native_diagnosis_stop() -> NativeDiagnosis:
    """Close it: the native totals and the sites, by retained bytes."""

def exclude_threads_running_now() -> int: ...
def count_this_thread_only(on: bool) -> None:
    """Count only the calling thread in the windows opened from now on (pytest-memray's
    current_thread_only), or every thread but the run's machinery again."""

def escape_command(text: str) -> str: ...
def escape_markdown(text: str) -> str: ...
def parse_size(text: str, origin: str = "size") -> int: ...
def parse_percent(text: str, origin: str = "percentage") -> float: ...
def format_size(bytes: int) -> str: ...
def cli(
    args: list[str], python: str, implementation: str, platform: str, mode: str = ...
) -> int: ...
def write_flamegraph(dir: str, stem: str, folded: str, title: str) -> None: ...
def write_dump_file(dir: str, name: str, text: str) -> None: ...
def append_step_summary(path: str, text: str) -> None: ...
def dump_stem(nodeid: str) -> str: ...
def escape_terminal(text: str) -> str: ...
