"""pytest-memcheck: memory regression gating for pytest, with a Rust engine."""

from pytest_memcheck._engine import (
    FORMAT,
    FileFormatError,
    Measurement,
    MemcheckError,
    MeterError,
    UsageError,
    format_size,
    measure,
    parse_percent,
    parse_size,
)
from pytest_memcheck._warning import PytestMemcheckWarning

__all__ = [
    "FORMAT",
    "FileFormatError",
    "Measurement",
    "MemcheckError",
    "MeterError",
    "PytestMemcheckWarning",
    "UsageError",
    "format_size",
    "measure",
    "parse_percent",
    "parse_size",
]
