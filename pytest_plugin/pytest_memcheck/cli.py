"""The `memcheck` console script: the command line lives in the Rust engine (src/cli.rs)."""

from __future__ import annotations

import sys
import sysconfig

from pytest_memcheck import _engine


def main(argv: list[str] | None = None) -> int:
    return _engine.cli(
        list(sys.argv[1:] if argv is None else argv),
        f"{sys.version_info[0]}.{sys.version_info[1]}",
        sys.implementation.name,
        sysconfig.get_platform(),
    )


if __name__ == "__main__":
    sys.exit(main())
