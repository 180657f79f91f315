//! Tests that start tracemalloc themselves. tracemalloc installs its allocators over ours and
//! takes its tables from the allocator it found (ours): a window in which the test started it
//! counts tracemalloc's own bookkeeping, even when the test stopped it again before the end, so
//! the allocator chain looks untouched. `tracemalloc.start` is watched (a pass-through that
//! raises a flag) so such a window is reported as disturbed instead.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};

static STARTED: AtomicBool = AtomicBool::new(false);
static ORIGINAL_START: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Start tracing Python memory allocations (tracemalloc.start, watched by pytest-memcheck).
#[pyfunction]
#[pyo3(name = "start", signature = (*args, **kwargs))]
fn watched_start<'py>(
    py: Python<'py>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    STARTED.store(true, Relaxed);
    let original = ORIGINAL_START
        .get(py)
        .expect("set before the watcher is installed");
    original.bind(py).call(args, kwargs)
}

/// Put the watcher in place of `_tracemalloc.start` and `tracemalloc.start` (once; a module
/// imported later copies it from `_tracemalloc`).
pub(crate) fn watch_tracemalloc(py: Python<'_>) -> PyResult<()> {
    if ORIGINAL_START.get(py).is_some() {
        return Ok(());
    }
    let native = py.import("_tracemalloc")?;
    let original = native.getattr("start")?;
    ORIGINAL_START.get_or_init(py, || original.clone().unbind());
    let watcher = wrap_pyfunction!(watched_start, py)?;
    native.setattr("start", &watcher)?;
    let modules = py.import("sys")?.getattr("modules")?;
    if let Ok(module) = modules.get_item("tracemalloc") {
        if module.getattr("start")?.is(&original) {
            module.setattr("start", &watcher)?;
        }
    }
    Ok(())
}

/// Forget earlier starts: called as a window opens.
pub(crate) fn reset() {
    STARTED.store(false, Relaxed);
}

/// Why the window just closed cannot be trusted, if the test started tracemalloc in it.
pub(crate) fn tracemalloc_touched() -> Option<String> {
    STARTED.swap(false, Relaxed).then(|| {
        "the test started tracemalloc, whose own tables were counted as the test's".to_string()
    })
}
