"""The `memcheck` console script: the command line lives in the Rust engine (src/cli.rs)."""

from __future__ import annotations

import sys

from pytest_memcheck import _engine, environment


def main(argv: list[str] | None = None) -> int:
    return _engine.cli(
        list(sys.argv[1:] if argv is None else argv),
        environment.python(),
        environment.implementation(),
        environment.platform(),
        environment.mode(),
    )


if __name__ == "__main__":
    sys.exit(main())
