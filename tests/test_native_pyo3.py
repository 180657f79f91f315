"""Native memory of a pyo3 extension: a small crate built here with cargo (offline, the pyo3 of
our own Cargo.lock) allocates known sizes through Rust's global allocator (`System`: malloc,
calloc, realloc, posix_memalign, free, called through the cdylib's own imports), and
native_peak / native_retained equal them to the byte; pyo3's own machinery adds nothing."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from pytest_memcheck.plugin import native_limits

SUPPORTED = native_limits("python", sys.platform, sys.maxsize > 2**32, platform.libc_ver()[0])
pytestmark = pytest.mark.skipif(SUPPORTED is not None, reason=str(SUPPORTED))

ROOT = Path(__file__).resolve().parent.parent
# Read at import: pytester points HOME at its test directory, and rustup and cargo find their
# homes from HOME.
HOME = Path.home()
TOOLCHAIN = {
    "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", str(HOME / ".rustup")),
    "CARGO_HOME": os.environ.get("CARGO_HOME", str(HOME / ".cargo")),
}
# The crate and its target directory stay between runs: a second build only relinks, if that.
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or HOME / ".cache") / "pytest-memcheck" / "natrs"

MANIFEST = """
[package]
name = "natrs"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib"]

[dependencies]
pyo3 = { version = "=PYO3", features = ["extension-module"] }
"""

# Every block is a Vec<u8> or a raw allocation of an exact size. `KEPT` has room for every Vec a
# test keeps, reserved at import, so keeping one allocates nothing more.
SOURCE = r"""
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::alloc::{alloc, dealloc, Layout};
use std::hint::black_box;
use std::sync::Mutex;

static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn kept() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    KEPT.lock().unwrap()
}

/// malloc(n), kept.
#[pyfunction]
fn keep(n: usize) {
    kept().push(black_box(Vec::with_capacity(n)));
}

/// calloc(n, 1), kept.
#[pyfunction]
fn keep_zeroed(n: usize) {
    kept().push(black_box(vec![0u8; n]));
}

/// malloc(n) then free.
#[pyfunction]
fn alloc_free(n: usize) -> usize {
    let v = vec![1u8; n];
    black_box(&v).len()
}

/// malloc(a), then realloc to b (reserve_exact on an empty Vec), kept.
#[pyfunction]
fn grow(a: usize, b: usize) {
    let mut v: Vec<u8> = black_box(Vec::with_capacity(a));
    v.reserve_exact(b);
    kept().push(v);
}

/// The last kept Vec, shrunk to `n` bytes (realloc).
#[pyfunction]
fn shrink_last(n: usize) {
    let mut kept = kept();
    let last = kept.last_mut().unwrap();
    last.shrink_to(n);
}

/// Page-aligned, so System asks posix_memalign, then dealloc.
#[pyfunction]
fn aligned_free(n: usize) {
    let layout = Layout::from_size_align(n, 4096).unwrap();
    unsafe {
        let p = black_box(alloc(layout));
        dealloc(p, layout);
    }
}

/// pyo3's call machinery alone: argument extraction, the return value (a Python int, the
/// interpreter's memory).
#[pyfunction]
fn noop(n: usize) -> usize {
    n
}

/// An error raised from Rust: pyo3 boxes the lazy error state, and frees it as it raises.
#[pyfunction]
fn fail() -> PyResult<()> {
    Err(PyValueError::new_err("planned"))
}

#[pyfunction]
fn free_all() {
    kept().clear();
}

#[pymodule]
fn natrs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    kept().reserve(4096);
    m.add_function(wrap_pyfunction!(keep, m)?)?;
    m.add_function(wrap_pyfunction!(keep_zeroed, m)?)?;
    m.add_function(wrap_pyfunction!(alloc_free, m)?)?;
    m.add_function(wrap_pyfunction!(grow, m)?)?;
    m.add_function(wrap_pyfunction!(shrink_last, m)?)?;
    m.add_function(wrap_pyfunction!(aligned_free, m)?)?;
    m.add_function(wrap_pyfunction!(noop, m)?)?;
    m.add_function(wrap_pyfunction!(fail, m)?)?;
    m.add_function(wrap_pyfunction!(free_all, m)?)?;
    Ok(())
}
"""


def write(path: Path, text: str) -> None:
    """Write `text` unless the file holds it already (cargo rebuilds what is newer), whole at
    once: another session (an xdist worker) may be reading it."""
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(text)
        os.replace(temporary, path)


@pytest.fixture(scope="session")
def natrs() -> Path:
    """The extension `natrs`, built once a session with `cargo build --release --offline`."""
    cargo = shutil.which("cargo") or shutil.which("cargo", path=str(HOME / ".cargo" / "bin"))
    if cargo is None:
        pytest.skip("no cargo: the pyo3 extension cannot be built")
    lock = (ROOT / "Cargo.lock").read_text()
    pyo3 = re.search(r'name = "pyo3"\nversion = "([^"]+)"', lock).group(1)
    crate = CACHE / "crate"
    write(crate / "Cargo.toml", MANIFEST.replace("PYO3", pyo3))
    write(crate / "src" / "lib.rs", SOURCE)
    # The versions our own build uses, all in cargo's cache already (cargo trims it to the
    # crate's own, so it is written again each session: a change of ours is always followed).
    write(crate / "Cargo.lock", lock)
    target = CACHE / "target"
    env = {
        **os.environ,
        **TOOLCHAIN,
        "PYO3_PYTHON": sys.executable,
        "CARGO_TARGET_DIR": str(target),
    }
    done = subprocess.run(
        [cargo, "build", "--release", "--offline", "-q"],
        check=False,
        cwd=crate,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return target / "release" / "libnatrs.so"


@pytest.fixture
def rs_project(project, natrs):
    shutil.copy(natrs, project.path / f"natrs{sysconfig.get_config_var('EXT_SUFFIX')}")
    return project


KNOWN = """
import os
import pytest
import natrs

LEAK = int(os.environ.get("LEAK", "0"))
natrs.keep(1000)  # a block from before any window: its free is ignored

@pytest.fixture(autouse=True)
def clean():
    yield
    natrs.free_all()  # fixture teardown: outside the window

@pytest.mark.parametrize("n", [1, 100, 4096, 1_000_000])
def test_keep(n):
    natrs.keep(n + LEAK)

def test_keep_zeroed():
    natrs.keep_zeroed(3000)

def test_alloc_free():
    assert natrs.alloc_free(54_321) == 54_321

def test_grow():
    natrs.grow(1000, 300_000)

def test_grow_then_shrink():
    natrs.grow(1000, 300_000)
    natrs.shrink_last(20_000)

def test_aligned():
    natrs.aligned_free(10_000)

def test_many_calls():
    for i in range(1000):
        natrs.noop(i)
    natrs.keep(777)

def test_error():
    with pytest.raises(ValueError, match="planned"):
        natrs.fail()

def test_free_older():
    natrs.free_all()

def test_nothing():
    pass
"""

EXPECTED = {
    "test_keep[1]": (1, 1),
    "test_keep[100]": (100, 100),
    "test_keep[4096]": (4096, 4096),
    "test_keep[1000000]": (1_000_000, 1_000_000),
    "test_keep_zeroed": (3000, 3000),
    "test_alloc_free": (54_321, 0),
    # malloc(1000) then realloc to 300,000: the old block stops counting as it moves
    "test_grow": (300_000, 300_000),
    "test_grow_then_shrink": (300_000, 20_000),
    "test_aligned": (10_000, 0),
    # a thousand calls through pyo3 add nothing to the one block kept
    "test_many_calls": (777, 777),
    # PyValueError::new_err boxes its lazy state, a `&'static str` (16 B), freed as it is raised
    "test_error": (16, 0),
    "test_free_older": (0, 0),
    "test_nothing": (0, 0),
}


def native_entries(project, *args: str) -> dict:
    result = project.run("--memcheck-update", "--memcheck-native", "--memcheck-confirm=no", *args)
    assert result.ret == 0, result.stdout.str()
    data = project.baselines("test_known.toml")
    return {k: (v["native_peak"], v["native_retained"]) for k, v in data.items() if k != "memcheck"}


def test_pyo3_figures_equal_the_requested_sizes(rs_project):
    rs_project.pytester.makepyfile(test_known=KNOWN)
    assert native_entries(rs_project) == EXPECTED
    # The figures are native only: pyo3's return values are Python's, in peak.
    data = rs_project.baselines("test_known.toml")
    assert data["test_keep[1000000]"]["peak"] < 100_000


def test_a_planted_pyo3_leak_fails_at_the_exact_byte(rs_project, monkeypatch):
    rs_project.pytester.makepyfile(test_known=KNOWN)
    selected = ("-k", "keep and 1000000")
    assert native_entries(rs_project, *selected) == {"test_keep[1000000]": (1_000_000,) * 2}
    # limit = 1,000,000 × 1.10 + 64 KiB = 1,165,536 B: the limit passes, one byte more fails.
    monkeypatch.setenv("LEAK", str(165_536))
    passed = rs_project.run("--memcheck", "--memcheck-native", *selected)
    assert passed.ret == 0, passed.stdout.str()
    monkeypatch.setenv("LEAK", str(165_537))
    failed = rs_project.run("--memcheck", "--memcheck-native", *selected)
    assert failed.ret == 1, failed.stdout.str()
    text = failed.stdout.str()
    assert "native_retained 1.11 MiB (1165537 B) is over its limit 1.11 MiB (1165536 B)" in text
    assert "native_peak 1.11 MiB (1165537 B) is over its limit" in text
    # The diagnosis names the extension and the test's line that called into it.
    assert re.search(r"1\.1 MiB in 1 block  natrs\S*\.so: .*← called from test_known\.py", text)
    # Without --memcheck-native the same leak is invisible: the python figures did not move.
    blind = rs_project.run("--memcheck", *selected)
    assert blind.ret == 0, blind.stdout.str()
