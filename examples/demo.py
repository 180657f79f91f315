"""The gate on the bundled example project: a passing run, then a planted regression failing.

Run by `./tasks.sh demo`. Works on a copy of examples/shop in a temporary directory, so the
committed example stays as it is. Exits 0 when the gate behaved as it should.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pytest(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    # As a project with pytest-memcheck and nothing else installed sees it: the development
    # environment's other plugins (pytest-asyncio's deprecation warning, pytest-memray...)
    # are left out; pytest-memcheck is loaded by name instead of by its entry point.
    cmd = [sys.executable, "-m", "pytest", "-p", "pytest_memcheck.plugin", "-p", "no:cacheprovider"]
    print(f"\n$ {' '.join(['pytest', *args])}" + "".join(f"   ({k}={v})" for k, v in env.items()))
    cmd += args
    run_env = {**os.environ, **env, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    run_env.pop("CI", None)
    result = subprocess.run(cmd, cwd=cwd, env=run_env, capture_output=True, text=True, check=False)
    print(result.stdout + result.stderr)
    return result


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        shop = Path(tmp) / "shop"
        shutil.copytree(HERE / "shop", shop)
        print("1. The example project, gated against its committed baselines/:")
        ok = pytest(shop, "--memcheck")
        if ok.returncode == 0 and "were not gated" in ok.stdout:
            # The committed baselines were recorded on CPython 3.11, Linux x86_64: another
            # interpreter or platform records its own first (in the copy), as a team would.
            print("-> baselines from another environment gate nothing: recording this one's\n")
            if pytest(shop, "--memcheck-update").returncode != 0:
                print("demo: recording the baselines failed", file=sys.stderr)
                return 1
            ok = pytest(shop, "--memcheck")
        if ok.returncode != 0 or "were not gated" in ok.stdout:
            print("demo: expected the gate to pass on the unchanged project", file=sys.stderr)
            return 1
        print("-> the gate passed\n")
        print("2. A regression is planted: every receipt is now archived fifty times over.")
        bad = pytest(shop, "--memcheck", SHOP_PLANT_REGRESSION="1")
        if bad.returncode != 1 or "memcheck: over budget" not in bad.stdout:
            print("demo: expected the planted regression to fail the gate", file=sys.stderr)
            return 1
        print("-> the gate failed the test that grew, with the numbers and the fix\n")
        return 0


if __name__ == "__main__":
    sys.exit(main())
