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
    intact: bool
    def __init__(
        self, peak: int, retained: int, allocations: int = 0, cycles: int = 0, intact: bool = True
    ) -> None: ...

class Verdict:
    outcome: str
    failed: bool
    message: str
    def to_dict(self) -> dict[str, Any]: ...

class Session:
    baseline_dir: Path
    meter: str
    strict: bool
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
    def record(self, result: dict[str, Any]) -> None: ...
    def results(self) -> list[dict[str, Any]]: ...
    def stale(self, complete: bool, collected: list[str], scope: list[str]) -> list[str]: ...
    def update(
        self, all: bool, complete: bool, collected: list[str], scope: list[str]
    ) -> list[tuple[Path, int, int, bool, str | None]]: ...
    def summary(self, stale: list[str], verbose: bool = False) -> str | None: ...
    def totals(self, stale: int) -> str: ...

def measure(
    meter: str,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any | None] = None,
) -> tuple[Any, Measurement]: ...
def meter_footprint() -> int: ...
def parse_size(text: str, origin: str = "size") -> int: ...
def parse_percent(text: str, origin: str = "percentage") -> float: ...
def format_size(bytes: int) -> str: ...
