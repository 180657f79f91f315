"""Native memory (`--memcheck-native`): a C extension built here allocates known sizes with the
malloc family, and native_peak / native_retained equal them to the byte."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ASYNCIO
from pytest_memcheck.plugin import native_limits

SUPPORTED = native_limits("python", sys.platform, sys.maxsize > 2**32, platform.libc_ver()[0])
pytestmark = pytest.mark.skipif(SUPPORTED is not None, reason=str(SUPPORTED))

# Every allocation goes through a volatile pointer, so the compiler cannot pair a malloc with its
# free and drop both. `kept` holds the blocks a test keeps.
SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void *kept[4096];
static int nkept = 0;
static void *volatile sink;

static PyObject *keep(void *p) {
    if (!p) return PyErr_NoMemory();
    kept[nkept++] = p;
    Py_RETURN_NONE;
}
static size_t size_of(PyObject *arg) { return PyLong_AsSize_t(arg); }

static PyObject *malloc_keep(PyObject *m, PyObject *a) { return keep(malloc(size_of(a))); }
static PyObject *calloc_keep(PyObject *m, PyObject *a) { return keep(calloc(size_of(a), 1)); }
static PyObject *malloc_free(PyObject *m, PyObject *a) {
    sink = malloc(size_of(a));
    memset(sink, 1, size_of(a));
    free(sink);
    Py_RETURN_NONE;
}
static PyObject *realloc_keep(PyObject *m, PyObject *args) {
    Py_ssize_t a, b;
    if (!PyArg_ParseTuple(args, "nn", &a, &b)) return NULL;
    sink = malloc(a);
    return keep(realloc(sink, b));
}
static PyObject *realloc_kept(PyObject *m, PyObject *a) {
    kept[nkept - 1] = realloc(kept[nkept - 1], size_of(a));
    Py_RETURN_NONE;
}
static PyObject *aligned_keep(PyObject *m, PyObject *a) {
    void *p = NULL;
    if (posix_memalign(&p, 64, size_of(a))) return PyErr_NoMemory();
    keep(p);
    keep(aligned_alloc(64, 128));
    return keep(memalign(256, size_of(a)));
}
static PyObject *strdup_keep(PyObject *m, PyObject *a) { return keep(strdup(PyUnicode_AsUTF8(a))); }
static PyObject *pymem_keep(PyObject *m, PyObject *a) { return keep(PyMem_RawMalloc(size_of(a))); }
static PyObject *nogil_keep(PyObject *m, PyObject *a) {
    size_t n = size_of(a);
    void *p;
    Py_BEGIN_ALLOW_THREADS
    p = malloc(n);
    Py_END_ALLOW_THREADS
    return keep(p);
}
static PyObject *free_all(PyObject *m, PyObject *unused) {
    while (nkept) free(kept[--nkept]);
    Py_RETURN_NONE;
}
/* Mappings: `maps` holds the ones a test keeps. Python.h asks for 64-bit file offsets, so
   `mmap` here is glibc's `mmap64`; `plain_mmap` calls the symbol `mmap` itself. */
extern void *plain_mmap(void *, size_t, int, int, int, long) __asm__("mmap");
static void *maps[64];
static size_t maplens[64];
static int nmaps = 0;
static const int RW = PROT_READ | PROT_WRITE;

static PyObject *keep_map(void *p, size_t n) {
    if (p == MAP_FAILED) return PyErr_SetFromErrno(PyExc_OSError);
    maps[nmaps] = p;
    maplens[nmaps++] = n;
    Py_RETURN_NONE;
}
static PyObject *mmap_keep(PyObject *m, PyObject *a) {
    size_t n = size_of(a);
    return keep_map(mmap(NULL, n, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), n);
}
static PyObject *plain_mmap_keep(PyObject *m, PyObject *a) {
    size_t n = size_of(a);
    return keep_map(plain_mmap(NULL, n, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), n);
}
static PyObject *shared_mmap_keep(PyObject *m, PyObject *a) {
    size_t n = size_of(a);
    return keep_map(mmap(NULL, n, RW, MAP_SHARED | MAP_ANONYMOUS, -1, 0), n);
}
static PyObject *mmap_free(PyObject *m, PyObject *a) {
    size_t n = size_of(a);
    char *p = mmap(NULL, n, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return PyErr_SetFromErrno(PyExc_OSError);
    memset(p, 1, n);
    munmap(p, n);
    Py_RETURN_NONE;
}
/* Unmap [offset, offset + length) of the last kept mapping. */
static PyObject *munmap_part(PyObject *m, PyObject *args) {
    Py_ssize_t offset, length;
    if (!PyArg_ParseTuple(args, "nn", &offset, &length)) return NULL;
    if (munmap((char *)maps[nmaps - 1] + offset, length)) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}
/* Map anonymous (or, with a path, that file's first bytes) over [offset, offset + length) of
   the last kept mapping, MAP_FIXED. */
static PyObject *mmap_fixed(PyObject *m, PyObject *args) {
    Py_ssize_t offset, length;
    const char *path = NULL;
    if (!PyArg_ParseTuple(args, "nn|s", &offset, &length, &path)) return NULL;
    int fd = path ? open(path, O_RDONLY) : -1;
    int flags = MAP_PRIVATE | MAP_FIXED | (path ? 0 : MAP_ANONYMOUS);
    void *p = mmap((char *)maps[nmaps - 1] + offset, length, PROT_READ, flags, fd, 0);
    if (fd >= 0) close(fd);
    if (p == MAP_FAILED) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}
static PyObject *mremap_last(PyObject *m, PyObject *a) {
    size_t n = size_of(a);
    void *p = mremap(maps[nmaps - 1], maplens[nmaps - 1], n, MREMAP_MAYMOVE);
    if (p == MAP_FAILED) return PyErr_SetFromErrno(PyExc_OSError);
    maps[nmaps - 1] = p;
    maplens[nmaps - 1] = n;
    Py_RETURN_NONE;
}
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
/* Move the last kept mapping's pages, leaving its old range mapped: both kept. */
static PyObject *mremap_dontunmap_last(PyObject *m, PyObject *unused) {
    void *old = maps[nmaps - 1];
    size_t n = maplens[nmaps - 1];
    void *p = mremap(old, n, n, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
    if (p == MAP_FAILED) return PyErr_SetFromErrno(PyExc_OSError);
    return keep_map(p, n);
}
static PyObject *file_mmap_keep(PyObject *m, PyObject *args) {
    const char *path;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "sn", &path, &n)) return NULL;
    int fd = open(path, O_RDWR);
    if (fd < 0) return PyErr_SetFromErrno(PyExc_OSError);
    char *p = mmap(NULL, n, RW, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p != MAP_FAILED) p[0] = 'x'; /* a private copy of the written page: still the file's */
    return keep_map(p, n);
}
static PyObject *munmap_all(PyObject *m, PyObject *unused) {
    while (nmaps) {
        nmaps--;
        munmap(maps[nmaps], maplens[nmaps]);
    }
    Py_RETURN_NONE;
}
static PyObject *page_size(PyObject *m, PyObject *unused) {
    return PyLong_FromLong(sysconf(_SC_PAGESIZE));
}
static PyObject *usable(PyObject *m, PyObject *a) {
    void *p = malloc(size_of(a));
    size_t n = malloc_usable_size(p);
    free(p);
    return PyLong_FromSize_t(n);
}

static PyMethodDef methods[] = {
    {"malloc_keep", malloc_keep, METH_O, NULL},
    {"calloc_keep", calloc_keep, METH_O, NULL},
    {"malloc_free", malloc_free, METH_O, NULL},
    {"realloc_keep", realloc_keep, METH_VARARGS, NULL},
    {"realloc_kept", realloc_kept, METH_O, NULL},
    {"aligned_keep", aligned_keep, METH_O, NULL},
    {"strdup_keep", strdup_keep, METH_O, NULL},
    {"pymem_keep", pymem_keep, METH_O, NULL},
    {"nogil_keep", nogil_keep, METH_O, NULL},
    {"free_all", free_all, METH_NOARGS, NULL},
    {"usable", usable, METH_O, NULL},
    {"mmap_keep", mmap_keep, METH_O, NULL},
    {"plain_mmap_keep", plain_mmap_keep, METH_O, NULL},
    {"shared_mmap_keep", shared_mmap_keep, METH_O, NULL},
    {"mmap_free", mmap_free, METH_O, NULL},
    {"munmap_part", munmap_part, METH_VARARGS, NULL},
    {"mmap_fixed", mmap_fixed, METH_VARARGS, NULL},
    {"mremap_last", mremap_last, METH_O, NULL},
    {"mremap_dontunmap_last", mremap_dontunmap_last, METH_NOARGS, NULL},
    {"file_mmap_keep", file_mmap_keep, METH_VARARGS, NULL},
    {"munmap_all", munmap_all, METH_NOARGS, NULL},
    {"page_size", page_size, METH_NOARGS, NULL},
    {NULL},
};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, NAME_STR, NULL, -1, methods};
PyMODINIT_FUNC INIT(void) { return PyModule_Create(&module); }
"""


def build(directory: Path, name: str) -> Path:
    """Compile the extension `name` into `directory` with the C compiler and Python's headers."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    src = directory / f"{name}.c"
    src.write_text(SOURCE)
    out = directory / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run(
        [
            cc,
            "-O2",
            "-g",  # the diagnosis names its functions from the debug information
            "-shared",
            "-fPIC",
            f"-I{sysconfig.get_paths()['include']}",
            f'-DNAME_STR="{name}"',
            f"-DINIT=PyInit_{name}",
            "-o",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def extensions(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    directory = tmp_path_factory.mktemp("native")
    return [build(directory, "nat"), build(directory, "nat_late")]


@pytest.fixture
def native_project(project, extensions):
    for so in extensions:
        shutil.copy(so, project.path / so.name)
    return project


KNOWN = """
import os
import pytest
import nat

LEAK = int(os.environ.get("LEAK", "0"))
# A block from before any window: its free is ignored, its growth by realloc is charged.
nat.malloc_keep(1000)

@pytest.fixture(autouse=True)
def clean():
    yield
    nat.free_all()  # fixture teardown: outside the window

@pytest.mark.parametrize("n", [1, 100, 4096, 1_000_000])
def test_malloc_kept(n):
    nat.malloc_keep(n + LEAK)

def test_malloc_freed():
    nat.malloc_free(1_000_000)

def test_calloc():
    nat.calloc_keep(3000)

def test_realloc_in_window():
    nat.realloc_keep(1000, 300_000)

def test_realloc_then_free():
    nat.realloc_keep(50_000, 20_000)
    nat.free_all()

def test_aligned():
    nat.aligned_keep(100)

def test_strdup():
    nat.strdup_keep("hello")

def test_python_memory_is_not_native():
    data = bytearray(100_000)
    assert data

def test_pymem_from_an_extension_is_not_native():
    nat.pymem_keep(5000)

def test_nothing():
    pass
"""


def native_entries(project, *args: str) -> dict:
    result = project.run("--memcheck-update", "--memcheck-native", "--memcheck-confirm=no", *args)
    assert result.ret == 0, result.stdout.str()
    data = project.baselines("test_known.toml")
    return {k: (v["native_peak"], v["native_retained"]) for k, v in data.items() if k != "memcheck"}


def test_native_figures_equal_the_requested_sizes(native_project):
    native_project.pytester.makepyfile(test_known=KNOWN)
    got = native_entries(native_project)
    assert got == {
        "test_malloc_kept[1]": (1, 1),
        "test_malloc_kept[100]": (100, 100),
        "test_malloc_kept[4096]": (4096, 4096),
        "test_malloc_kept[1000000]": (1_000_000, 1_000_000),
        "test_malloc_freed": (1_000_000, 0),
        "test_calloc": (3000, 3000),
        # the 1000-byte block stops counting when realloc moves it: tracemalloc's rule
        "test_realloc_in_window": (300_000, 300_000),
        "test_realloc_then_free": (50_000, 0),
        # posix_memalign 100 + aligned_alloc 128 + memalign 100
        "test_aligned": (328, 328),
        "test_strdup": (6, 6),
        # the python meter counts these; they are not native
        "test_python_memory_is_not_native": (0, 0),
        "test_pymem_from_an_extension_is_not_native": (0, 0),
        "test_nothing": (0, 0),
    }
    data = native_project.baselines("test_known.toml")
    assert data["test_python_memory_is_not_native"]["peak"] >= 100_000
    assert data["test_pymem_from_an_extension_is_not_native"]["peak"] >= 5000


def test_the_combined_peak_is_what_was_live_at_one_moment(native_project):
    # Python and native memory of 1 MB each: at different moments the two live together reach
    # about 1 MB (less than peak + native_peak), at the same moment 2 MB.
    native_project.pytester.makepyfile(
        test_combined="""
        import nat

        def test_apart():
            data = bytearray(1_000_000)
            del data
            nat.malloc_free(1_000_000)

        def test_together():
            data = bytearray(1_000_000)
            nat.malloc_free(1_000_000)
            assert data

        def test_python_only():
            data = bytearray(1_000_000)
            assert data
        """
    )
    update = ("--memcheck-update", "--memcheck-native", "--memcheck-confirm=no")
    assert native_project.run(*update).ret == 0
    data = native_project.baselines("test_combined.toml")
    apart, together = data["test_apart"], data["test_together"]
    for e in (apart, together):
        assert e["native_peak"] == 1_000_000
        assert 1_000_000 <= e["peak"] < 1_010_000
        assert max(e["peak"], e["native_peak"]) <= e["combined_peak"] <= e["peak"] + 1_000_000
    assert apart["combined_peak"] < 1_010_000, apart
    assert together["combined_peak"] >= 2_000_000, together
    assert data["test_python_only"]["combined_peak"] == data["test_python_only"]["peak"]
    # without native counting there is no combined figure, and an update keeps the old one
    assert native_project.run("--memcheck-update=all", "--memcheck-confirm=no").ret == 0
    kept = native_project.baselines("test_combined.toml")["test_together"]["combined_peak"]
    assert kept == together["combined_peak"]


def test_a_native_figure_that_varies_is_recorded_as_a_spread(native_project, monkeypatch):
    # As libzstd's worker threads do (README, "Real suites"): a native peak of 1 MB in one
    # run, 2 MB in the next. Recorded as one value, every other run would fail.
    native_project.pytester.makepyfile(
        test_varies="""
        import os
        from pathlib import Path

        import nat

        def test_varies():
            runs = Path("runs.txt")
            n = len(runs.read_text()) if runs.exists() else 0
            runs.write_text("x" * (n + 1))
            top = int(os.environ.get("TOP", "2000000"))
            nat.malloc_free(1_000_000 if n % 2 == 0 else top)
        """
    )
    result = native_project.run("--memcheck-update", "--memcheck-native")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["unstable: test_varies.py::test_varies: native_peak 977 KiB to 1.91 MiB*"]
    )
    entry = native_project.baselines("test_varies.toml")["test_varies"]
    assert (entry["native_peak"], entry["native_peak_max"]) == (1_000_000, 2_000_000), entry
    assert "peak_max" not in entry  # python's figures did not move
    # the gate judges by the highest recorded: both values pass, in either order
    for _ in range(2):
        assert native_project.run("--memcheck", "--memcheck-native").ret == 0
    # negative control: beyond the spread fails
    monkeypatch.setenv("TOP", "3000000")
    (native_project.path / "runs.txt").write_text("x")  # the next run is the 3 MB one
    result = native_project.run("--memcheck", "--memcheck-native", "--memcheck-confirm=no")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*native_peak 2.86 MiB (3000000 B) is over its limit*highest recorded 1.91 MiB*"]
    )


def test_free_of_a_block_from_before_the_window_is_ignored(native_project):
    native_project.pytester.makepyfile(
        test_before="""
        import nat

        nat.malloc_keep(50_000)  # at import, before any window

        def test_free_older():
            nat.free_all()
        """
    )
    result = native_project.run("--memcheck-update", "--memcheck-native", "--memcheck-confirm=no")
    assert result.ret == 0, result.stdout.str()
    entry = native_project.baselines("test_before.toml")["test_free_older"]
    assert (entry["native_peak"], entry["native_retained"]) == (0, 0)


def test_realloc_of_a_block_from_before_the_window_is_charged_its_growth(native_project):
    native_project.pytester.makepyfile(
        test_grow="""
        import nat

        nat.malloc_keep(1000)
        USABLE = nat.usable(1000)

        def test_grow():
            nat.realloc_kept(100_000)

        def test_usable():
            print("USABLE", USABLE)
        """
    )
    result = native_project.run(
        "--memcheck-update", "--memcheck-native", "--memcheck-confirm=no", "-s"
    )
    assert result.ret == 0, result.stdout.str()
    usable = int(re.search(r"USABLE (\d+)", result.stdout.str()).group(1))
    entry = native_project.baselines("test_grow.toml")["test_grow"]
    assert 1000 <= usable < 1100
    assert (entry["native_peak"], entry["native_retained"]) == (100_000 - usable,) * 2


def test_an_extension_loaded_inside_the_test_is_counted(native_project):
    native_project.pytester.makepyfile(
        test_late="""
        def test_import_then_allocate():
            import nat_late  # first loaded here: dlopen inside the window

            nat_late.malloc_keep(12_345)
        """
    )
    result = native_project.run("--memcheck-update", "--memcheck-native", "--memcheck-confirm=no")
    assert result.ret == 0, result.stdout.str()
    entry = native_project.baselines("test_late.toml")["test_import_then_allocate"]
    assert entry["native_retained"] == 12_345
    assert entry["native_peak"] == 12_345


MAPPINGS = """
import mmap
import pytest
import nat

P = nat.page_size()
KEPT = []

@pytest.fixture(autouse=True)
def clean():
    yield
    nat.munmap_all()  # fixture teardown: outside the window
    nat.free_all()
    KEPT.clear()

def test_anonymous_kept():
    nat.mmap_keep(10_000)

def test_the_symbol_mmap():
    nat.plain_mmap_keep(5000)

def test_shared_anonymous():
    nat.shared_mmap_keep(2 * P + 1)

def test_mapped_and_unmapped():
    nat.mmap_free(1_000_000)

def test_partial_munmap():
    nat.mmap_keep(10 * P)
    nat.munmap_part(2 * P, 3 * P)  # a hole: two pieces left
    nat.munmap_part(0, P)  # the head
    nat.munmap_part(9 * P, P - 100)  # the tail, its length rounded up to the page

def test_munmap_across_mappings():
    nat.mmap_keep(8 * P)
    nat.mmap_fixed(2 * P, 2 * P)  # anonymous over pages 2-3: three mappings
    nat.munmap_part(P, 5 * P)  # pages 1-5, across all three

def test_a_file_mapped_over_anonymous_pages():
    nat.mmap_keep(4 * P)
    nat.mmap_fixed(P, P, __file__)  # page 1 is the file's now

def test_mremap_grow():
    nat.mmap_keep(2 * P)
    nat.mremap_last(5 * P)

def test_mremap_shrink():
    nat.mmap_keep(5 * P)
    nat.mremap_last(2 * P - 100)

def test_mremap_leaving_the_old_range_mapped():
    nat.mmap_keep(3 * P)
    try:
        nat.mremap_dontunmap_last()
    except OSError:
        pytest.skip("MREMAP_DONTUNMAP refused by this kernel")  # before Linux 5.7, or a sandbox's

def test_file_mapping():
    nat.file_mmap_keep(__file__, 2 * P)

def test_malloc_maps_its_own_big_blocks():
    nat.malloc_keep(10_000_000)  # glibc's mmap, unseen: the block counts, once

def test_pythons_mmap_module():
    KEPT.append(mmap.mmap(-1, 3 * P))
    with open(__file__, "rb") as f:
        KEPT.append(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
"""

OLDER = """
import nat_late

P = nat_late.page_size()
nat_late.mmap_keep(3 * P)  # before any window
nat_late.mmap_keep(2 * P)

def test_mremap_older():
    nat_late.mremap_last(6 * P)

def test_munmap_older():
    nat_late.munmap_all()
"""


def test_anonymous_mappings_count_in_whole_pages(native_project):
    """mmap (the symbol mmap64 too), partial munmap, MAP_FIXED over counted pages, mremap: to
    the byte, in pages; file mappings and glibc's own mappings never count."""
    native_project.pytester.makepyfile(test_maps=MAPPINGS, test_older=OLDER)
    result = native_project.run(
        "--memcheck-update", "--memcheck-native", "--memcheck-confirm=no", "-rs"
    )
    assert result.ret == 0, result.stdout.str()
    page = os.sysconf("SC_PAGE_SIZE")

    def up(n: int) -> int:
        return -(-n // page) * page

    got = {}
    for name in ("test_maps.toml", "test_older.toml"):
        data = native_project.baselines(name)
        got.update(
            {
                k: (v["native_peak"], v["native_retained"])
                for k, v in data.items()
                if k != "memcheck"
            }
        )
    # MREMAP_DONTUNMAP: the pages moved, the old range still mapped (to fault in anew).
    dontunmap = got.pop("test_mremap_leaving_the_old_range_mapped", None)
    if dontunmap is None:
        result.stdout.fnmatch_lines(["*SKIPPED*MREMAP_DONTUNMAP refused by this kernel*"])
    else:
        assert dontunmap == (6 * page, 6 * page)
    assert got == {
        "test_anonymous_kept": (up(10_000),) * 2,
        "test_the_symbol_mmap": (up(5000),) * 2,
        "test_shared_anonymous": (3 * page,) * 2,
        "test_mapped_and_unmapped": (up(1_000_000), 0),
        "test_partial_munmap": (10 * page, 5 * page),
        # MAP_FIXED replaces pages 2-3 (8 pages live throughout); 5 unmapped across three
        "test_munmap_across_mappings": (8 * page, 3 * page),
        "test_a_file_mapped_over_anonymous_pages": (4 * page, 3 * page),
        # the 2 old pages stop counting as the mapping moves or grows, as a realloc
        "test_mremap_grow": (5 * page, 5 * page),
        "test_mremap_shrink": (5 * page, 2 * page),
        "test_file_mapping": (0, 0),
        "test_malloc_maps_its_own_big_blocks": (10_000_000, 10_000_000),
        # the mmap module is an extension (lib-dynload): its anonymous map counts, the file's not
        "test_pythons_mmap_module": (3 * page, 3 * page),
        # a mapping from before the window: not known to be anonymous, so its mremap is not
        # counted, and its munmap is ignored
        "test_mremap_older": (0, 0),
        "test_munmap_older": (0, 0),
    }


MAPPED_LEAK = """
import os
import nat

P = nat.page_size()
LEAK = int(os.environ.get("LEAK", "0"))

def test_mapped():
    nat.mmap_keep((10 + LEAK) * P)
    nat.munmap_part(2 * P, 3 * P)  # a hole: two pieces left, still the mapping's site
"""


def test_a_mapping_regression_is_diagnosed_at_its_mmap(native_project, monkeypatch):
    native_project.pytester.makepyfile(test_mapped=MAPPED_LEAK)
    result = native_project.run("--memcheck-update", "--memcheck-native")
    assert result.ret == 0, result.stdout.str()
    page = os.sysconf("SC_PAGE_SIZE")
    entry = native_project.baselines("test_mapped.toml")["test_mapped"]
    assert (entry["native_peak"], entry["native_retained"]) == (10 * page, 7 * page)
    monkeypatch.setenv("LEAK", "100")
    failed = native_project.run("--memcheck", "--memcheck-native")
    assert failed.ret == 1, failed.stdout.str()
    text = failed.stdout.str()
    assert re.search(rf"native_retained \S+ \S+ \({107 * page} B\) is over its limit", text)
    retained = re.search(r"native, retained by site:\n(.*)\n", text)
    assert retained and re.search(
        r"in 2 blocks  nat\S*\.so: mmap_keep \(nat\.c:\d+\) ← called from test_mapped\.py:8",
        retained.group(1),
    ), text


def test_a_planted_native_leak_fails_at_the_exact_byte(native_project, monkeypatch):
    native_project.pytester.makepyfile(test_known=KNOWN)
    selected = ("-k", "malloc_kept and 1000000")
    native_entries(native_project, *selected)
    # limit = 1,000,000 × 1.10 + 64 KiB = 1,165,536 B: the limit passes, one byte more fails.
    monkeypatch.setenv("LEAK", str(165_536))
    passed = native_project.run("--memcheck", "--memcheck-native", *selected)
    assert passed.ret == 0, passed.stdout.str()
    monkeypatch.setenv("LEAK", str(165_537))
    failed = native_project.run("--memcheck", "--memcheck-native", *selected)
    assert failed.ret == 1, failed.stdout.str()
    text = failed.stdout.str()
    assert "native_retained 1.11 MiB (1165537 B) is over its limit 1.11 MiB (1165536 B)" in text
    assert "native_peak 1.11 MiB (1165537 B) is over its limit" in text
    assert "native peak 1.11 MiB then 1.11 MiB, native retained 1.11 MiB then 1.11 MiB" in text
    # The diagnosis names the C function that allocated, and the test's line that called it.
    assert "native, retained by site:" in text
    assert re.search(r"nat\S*\.so: malloc_keep \(nat\.c:\d+\) ← called from test_known\.py", text)
    # Without --memcheck-native the same leak is invisible: the python figures did not move.
    blind = native_project.run("--memcheck", *selected)
    assert blind.ret == 0, blind.stdout.str()
    # The printed hint turns the run green: it counts native memory too (an update without
    # --memcheck-native keeps the native baseline as it is).
    hint = next(line for line in text.splitlines() if "accept it: " in line)
    command = shlex.split(hint.split("accept it: ", 1)[1])
    assert command[:3] == ["pytest", "--memcheck-update", "--memcheck-native"], command
    accepted = native_project.run(*command[1:])
    assert accepted.ret == 0, accepted.stdout.str()
    again = native_project.run("--memcheck", "--memcheck-native", *selected)
    assert again.ret == 0, again.stdout.str()


LEAKY = """
import os
import pytest
import nat

LEAK = int(os.environ.get("LEAK", "0"))
KEPT = []

@pytest.fixture(autouse=True)
def clean():
    yield
    nat.free_all()  # fixture teardown: outside the window

def test_leak():
    nat.malloc_free(500_000)
    nat.malloc_keep(1000 + LEAK)

def test_after():
    nat.malloc_keep(100)

def test_leak_without_the_gil():
    nat.nogil_keep(1000 + LEAK // 2)

def test_python_grows():
    KEPT.append(bytearray(1000 + LEAK))
"""
LEAK_LINE = LEAKY.lstrip("\n").splitlines().index("    nat.malloc_keep(1000 + LEAK)") + 1
NOGIL_LINE = LEAKY.lstrip("\n").splitlines().index("    nat.nogil_keep(1000 + LEAK // 2)") + 1


def test_a_native_regression_is_diagnosed_by_native_site(native_project, monkeypatch):
    """The failure names the C function that allocated (from the extension's debug information)
    and the test's line that called into it, in the terminal and in the results file; the
    diagnosing run changes no verdict, neither this test's nor the next one's."""
    native_project.pytester.makepyfile(test_leaky=LEAKY)
    result = native_project.run("--memcheck-update", "--memcheck-native")
    assert result.ret == 0, result.stdout.str()
    monkeypatch.setenv("LEAK", str(2_000_000))
    selected = (
        "test_leaky.py::test_leak",
        "test_leaky.py::test_after",
        "test_leaky.py::test_leak_without_the_gil",
    )
    failed = native_project.run(
        "--memcheck", "--memcheck-native", "--memcheck-json=out.json", *selected
    )
    assert failed.ret == 1, failed.stdout.str()
    text = failed.stdout.str()
    assert "2 failed, 1 passed" in text
    # The verdict is the measurement's, to the byte: the diagnosis did not add to it.
    assert "native_retained 1.91 MiB (2001000 B) is over its limit" in text
    site = (
        r"1\.9 MiB in 1 block  nat\S*\.so: malloc_keep \(nat\.c:\d+\) "
        rf"← called from test_leaky\.py:{LEAK_LINE} in test_leak"
    )
    retained = re.search(r"native, retained by site:\n(.*)\n", text)
    assert retained and re.fullmatch(r"\s+" + site, retained.group(1)), text
    # At the peak the freed 500,000 B block had come and gone: the kept one is the peak's too.
    peak = re.search(r"native, at the peak by site:\n(.*)\n", text)
    assert peak and re.fullmatch(r"\s+" + site, peak.group(1)), text
    # Allocated with the GIL released: the Python line of the moment it was released.
    assert re.search(
        r"977\.5 KiB in 1 block  nat\S*\.so: nogil_keep \(nat\.c:\d+\) "
        rf"← called from test_leaky\.py:{NOGIL_LINE} in test_leak_without_the_gil",
        text,
    ), text
    # Python sites say nothing of native memory: only the native section is shown.
    assert "retained, by site:" not in text.replace("native, retained by site:", "")
    results = json.loads((native_project.path / "out.json").read_text())
    by_id = {t["nodeid"].split("::")[1]: t for t in results["tests"]}
    assert by_id["test_leak"]["outcome"] == "over"
    assert by_id["test_leak"]["measured"]["native_retained"] == 2_001_000
    assert re.search(site, by_id["test_leak"]["message"])
    # The next test, measured after the diagnosing run, is exact again.
    assert by_id["test_after"]["outcome"] == "ok"
    assert by_id["test_after"]["measured"]["native_retained"] == 100


def test_a_python_regression_has_no_native_diagnosis(native_project, monkeypatch):
    """Negative control: under --memcheck-native, a test over on Python memory alone gets the
    Python sites and no native section."""
    native_project.pytester.makepyfile(test_leaky=LEAKY)
    selected = ("test_leaky.py::test_python_grows",)
    result = native_project.run("--memcheck-update", "--memcheck-native", *selected)
    assert result.ret == 0, result.stdout.str()
    monkeypatch.setenv("LEAK", str(2_000_000))
    failed = native_project.run("--memcheck", "--memcheck-native", *selected)
    assert failed.ret == 1, failed.stdout.str()
    text = failed.stdout.str()
    assert "retained, by site:" in text
    assert "test_leaky.py:" in text
    assert "native," not in text
    assert "native diagnosis" not in text


def test_baselines_without_native_stay_as_they_were(native_project):
    native_project.pytester.makepyfile(test_known=KNOWN)
    result = native_project.run("--memcheck-update", "--memcheck-confirm=no")
    assert result.ret == 0, result.stdout.str()
    plain = native_project.text("test_known.toml")
    assert "native_peak" not in plain
    # Switched on, a test whose native figures are over the floor a zero baseline allows has no
    # baseline for them yet: new. The others (a pure-Python test's) stay ok, not new.
    gated = native_project.run("--memcheck", "--memcheck-native")
    assert gated.ret == 0, gated.stdout.str()
    assert "13 measured: 3 new, 10 ok" in gated.stdout.str()
    gated.stdout.fnmatch_lines(["*new*test_malloc_kept?1000000?*977 KiB*"])
    gated.stdout.no_fnmatch_line("*new*test_nothing*")
    native_entries(native_project)
    with_native = native_project.text("test_known.toml")
    assert with_native.count("native_peak =") == 13
    # A later run without it neither drops nor changes them.
    result = native_project.run("--memcheck-update", "--memcheck-confirm=no")
    assert result.ret == 0, result.stdout.str()
    assert native_project.text("test_known.toml") == with_native
    gated = native_project.run("--memcheck", "--memcheck-native")
    assert gated.ret == 0, gated.stdout.str()
    assert "13 ok" in gated.stdout.str()


@pytest.mark.skipif(
    importlib.util.find_spec("pytest_randomly") is None, reason="pytest-randomly is not installed"
)
def test_native_figures_are_deterministic_over_shuffled_runs(native_project, monkeypatch):
    native_project.pytester.makepyfile(test_known=KNOWN)
    runs, orders = [], set()
    for seed in (1, 2, 3):
        monkeypatch.setenv("PYTHONHASHSEED", str(seed))
        result = native_project.pytester.runpytest_subprocess(
            *("-p", "no:cacheprovider", "-p", "no:memray", *ASYNCIO, "-v"),
            *("-p", "randomly", f"--randomly-seed={seed}"),
            *("--memcheck-update=all", "--memcheck-native", "--memcheck-confirm=no"),
        )
        assert result.ret == 0, result.stdout.str()
        orders.add(tuple(line for line in result.outlines if " PASSED" in line))
        data = native_project.baselines("test_known.toml")
        runs.append({k: v for k, v in data.items() if k != "memcheck"})
    assert len(orders) == 3  # really shuffled
    assert runs[0] == runs[1] == runs[2]


def test_native_is_refused_where_it_cannot_count():
    assert "64-bit Linux with glibc only; not on darwin" in native_limits(
        "python", "darwin", True, ""
    )
    assert "musl" in native_limits("python", "linux", True, "musl")
    assert "the rss meter" in native_limits("rss", "linux", True, "glibc")
    assert native_limits("python", "linux", True, "glibc") is None


def test_native_beside_another_meter_is_a_usage_error(native_project):
    native_project.pytester.makepyfile(test_known=KNOWN)
    result = native_project.run("--memcheck", "--memcheck-native", "--memcheck-meter=tracemalloc")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--memcheck-native counts beside the python meter*"])


REAL = """
import pytest

PIL = pytest.importorskip("PIL.Image")
etree = pytest.importorskip("lxml.etree")

KEPT = []
DOCUMENT = b"<a>" + b"<b x='1'>text</b>" * 2000 + b"</a>"

@pytest.mark.parametrize("size", [(64, 64), (500, 400), (1024, 768)])
def test_image(size):
    image = PIL.new("RGB", size)
    KEPT.append(image.resize((size[0] // 2, size[1] // 2)))

def test_image_freed():
    image = PIL.new("RGBA", (800, 600)).rotate(45)
    assert image.size == (800, 600)

def test_xml_tree_kept():
    KEPT.append(etree.fromstring(DOCUMENT))

def test_xml_tree_freed():
    assert len(etree.fromstring(DOCUMENT)) == 2000

def test_xml_serialised():
    assert etree.tostring(etree.fromstring(DOCUMENT)).startswith(b"<a>")
"""


@pytest.mark.skipif(
    importlib.util.find_spec("pytest_randomly") is None
    or importlib.util.find_spec("PIL") is None
    or importlib.util.find_spec("lxml") is None,
    reason="needs pytest-randomly, Pillow and lxml",
)
def test_real_extensions_are_deterministic_and_gated(project, monkeypatch):
    """Pillow's image buffers and lxml's trees (libxml2) over shuffled runs: identical figures,
    and a gate that passes them all in every order."""
    project.pytester.makepyfile(test_real=REAL)
    runs = []
    for seed in (1, 2, 3):
        monkeypatch.setenv("PYTHONHASHSEED", str(seed))
        result = project.pytester.runpytest_subprocess(
            *("-p", "no:cacheprovider", "-p", "no:memray", *ASYNCIO),
            *("-p", "randomly", f"--randomly-seed={seed}"),
            *("--memcheck-update=all", "--memcheck-native"),
        )
        assert result.ret == 0, result.stdout.str()
        data = project.baselines("test_real.toml")
        runs.append(
            {
                k: (v["native_peak"], v["native_retained"])
                for k, v in data.items()
                if k != "memcheck"
            }
        )
    assert runs[0] == runs[1] == runs[2]
    figures = runs[0]
    # The buffers are real: a 1024×768 RGB image is 4 bytes a pixel in Pillow.
    assert figures["test_image[size2]"][0] >= 1024 * 768 * 4
    assert figures["test_image[size2]"][1] >= 512 * 384 * 4
    assert figures["test_xml_tree_kept"][1] > 100_000
    assert figures["test_xml_tree_freed"] == (figures["test_xml_tree_freed"][0], 0)
    assert figures["test_image_freed"][1] == 0
    for seed in (4, 5):
        result = project.pytester.runpytest_subprocess(
            *("-p", "no:cacheprovider", "-p", "no:memray", *ASYNCIO),
            *("-p", "randomly", f"--randomly-seed={seed}"),
            *("--memcheck", "--memcheck-native"),
        )
        assert result.ret == 0, result.stdout.str()
        assert "7 measured: 7 ok" in result.stdout.str()


@pytest.mark.skipif(importlib.util.find_spec("xdist") is None, reason="needs pytest-xdist")
def test_native_under_xdist_equals_serial(native_project):
    native_project.pytester.makepyfile(test_known=KNOWN)
    serial = native_entries(native_project)
    result = native_project.run(
        "--memcheck-update=all", "--memcheck-native", "--memcheck-confirm=no", "-n", "2"
    )
    assert result.ret == 0, result.stdout.str()
    data = native_project.baselines("test_known.toml")
    assert serial == {
        k: (v["native_peak"], v["native_retained"]) for k, v in data.items() if k != "memcheck"
    }


CPP_SOURCE = r"""
#include <Python.h>
#include <string>
#include <vector>

static char *kept[1024];
static int nkept = 0;

static PyObject *new_keep(PyObject *, PyObject *a) {
    kept[nkept++] = new char[PyLong_AsSize_t(a)];
    Py_RETURN_NONE;
}
static PyObject *vector_temporary(PyObject *, PyObject *a) {
    std::vector<char> v(PyLong_AsSize_t(a), 'x');
    return PyLong_FromSize_t(v.size());
}
static PyObject *delete_all(PyObject *, PyObject *) {
    while (nkept) delete[] kept[--nkept];
    Py_RETURN_NONE;
}
static PyMethodDef methods[] = {
    {"new_keep", new_keep, METH_O, nullptr},
    {"vector_temporary", vector_temporary, METH_O, nullptr},
    {"delete_all", delete_all, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};
static PyModuleDef module = {PyModuleDef_HEAD_INIT, "natcpp", nullptr, -1, methods};
PyMODINIT_FUNC PyInit_natcpp() { return PyModule_Create(&module); }
"""


def test_cpp_new_through_libstdcxx_is_counted(project, tmp_path):
    """operator new lives in libstdc++, a library the extension loads: its malloc is redirected."""
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    src = tmp_path / "natcpp.cpp"
    src.write_text(CPP_SOURCE)
    out = project.path / f"natcpp{sysconfig.get_config_var('EXT_SUFFIX')}"
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        [cxx, "-O2", "-shared", "-fPIC", f"-I{include}", "-o", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    project.pytester.makepyfile(
        test_cpp="""
        import natcpp

        def test_new():
            natcpp.new_keep(70_000)
            natcpp.new_keep(1)

        def test_vector():
            assert natcpp.vector_temporary(123_456) == 123_456

        def test_delete_in_window():
            natcpp.new_keep(5000)
            natcpp.delete_all()
        """
    )
    result = project.run("--memcheck-update", "--memcheck-native", "--memcheck-confirm=no")
    assert result.ret == 0, result.stdout.str()
    data = project.baselines("test_cpp.toml")
    got = {k: (v["native_peak"], v["native_retained"]) for k, v in data.items() if k != "memcheck"}
    assert got == {
        "test_new": (70_001, 70_001),
        "test_vector": (123_456, 0),
        # the two blocks of test_new are older: their delete is ignored
        "test_delete_in_window": (5000, 0),
    }


def test_a_native_marker_limit_is_judged_to_the_byte_and_never_silently_skipped(
    native_project, monkeypatch
):
    native_project.pytester.makepyfile(
        test_limits="""
        import os
        import pytest
        import nat

        SIZE = int(os.environ.get("SIZE", "500000"))

        @pytest.fixture(autouse=True)
        def clean():
            yield
            nat.free_all()

        @pytest.mark.memcheck(native_retained="500000")
        def test_kept():
            nat.malloc_keep(SIZE)
        """
    )
    # At the limit: passes without any baseline (an absolute limit needs none).
    at = native_project.run("--memcheck", "--memcheck-native")
    assert at.ret == 0, at.stdout.str()
    # One byte over: fails, naming the marker's limit.
    monkeypatch.setenv("SIZE", "500001")
    over = native_project.run("--memcheck", "--memcheck-native")
    assert over.ret == 1, over.stdout.str()
    over.stdout.fnmatch_lines(
        ["*native_retained 488 KiB (500001 B) is over its limit 488 KiB (500000 B)*"]
    )
    # Without --memcheck-native the limit cannot be judged: said, not a quiet pass.
    blind = native_project.run("--memcheck")
    assert blind.ret == 0, blind.stdout.str()
    blind.stdout.fnmatch_lines(
        [
            "*1 test carries native_peak/native_retained limits (e.g. test_limits.py::test_kept) "
            "that this run does not judge*"
        ]  # fmt: skip
    )
