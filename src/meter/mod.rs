//! The meter: one measured window around a test's body.
//!
//! The determinism protocol (SPEC §3): before the window, `gc.collect()` (which also empties the
//! free lists) and `gc.freeze()` (later collections then only scan what the test made) and clear
//! the type attribute cache. The window is exactly the call of the test function: arguments are
//! laid out for a vectorcall *before* the hooks go in, so not one byte of ours lands in the test's
//! numbers. After the call, `gc.collect()` and a type-cache clear still inside the window, so
//! frees of the test's garbage are seen; then retained is what is still live.

mod hooks;
pub mod ledger;
mod rss;
mod track;

use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};

use crate::error::Error;

/// Which counter runs during the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeterKind {
    /// Our allocator hooks: exact, deterministic, cheap.
    Python,
    /// CPython's tracemalloc over the same window: the reference we are checked against.
    Tracemalloc,
    /// Resident set size from /proc: coarse, but sees native malloc.
    Rss,
}

impl MeterKind {
    pub const NAMES: [&'static str; 3] = ["python", "tracemalloc", "rss"];

    pub fn parse(name: &str, origin: &str) -> Result<Self, Error> {
        match name {
            "python" => Ok(MeterKind::Python),
            "tracemalloc" => Ok(MeterKind::Tracemalloc),
            "rss" => Ok(MeterKind::Rss),
            other => Err(Error::usage(
                origin,
                format!("unknown meter '{other}' (choose from: python, tracemalloc, rss)"),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MeterKind::Python => "python",
            MeterKind::Tracemalloc => "tracemalloc",
            MeterKind::Rss => "rss",
        }
    }
}

/// What one window measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Measurement {
    pub peak: u64,
    pub retained: u64,
    pub allocations: u64,
    /// Objects that only the cycle collector freed.
    pub cycles: u64,
    /// False when the test replaced the allocator during the window (tracemalloc.start()...).
    pub intact: bool,
}

static BUSY: AtomicBool = AtomicBool::new(false);

/// Releases the meter when the window ends, however it ends.
struct Busy;
impl Busy {
    fn take() -> Result<Busy, Error> {
        if BUSY.swap(true, Ordering::AcqRel) {
            return Err(Error::Meter(
                "a measurement is already running in this process (a test that runs pytest --memcheck in-process?); nested measurements are not supported".into(),
            ));
        }
        Ok(Busy)
    }
}
impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.store(false, Ordering::Release);
    }
}

fn cached<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &str,
    name: &str,
) -> PyResult<Bound<'py, PyAny>> {
    cell.import(py, module, name).cloned()
}

/// Total objects collected by the cycle collector so far (sum over generations).
fn collected_so_far(py: Python<'_>) -> PyResult<u64> {
    static GET_STATS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let stats = cached(py, &GET_STATS, "gc", "get_stats")?.call0()?;
    let mut total = 0u64;
    for generation in stats.try_iter()? {
        total += generation?.get_item("collected")?.extract::<u64>()?;
    }
    Ok(total)
}

/// Idents of the Python threads other than this one, already running before the window.
fn running_threads(py: Python<'_>) -> PyResult<Vec<usize>> {
    static ACTIVE_COUNT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static ENUMERATE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static GET_IDENT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    if cached(py, &ACTIVE_COUNT, "threading", "active_count")?
        .call0()?
        .extract::<usize>()?
        <= 1
    {
        return Ok(Vec::new());
    }
    let me: usize = cached(py, &GET_IDENT, "threading", "get_ident")?
        .call0()?
        .extract()?;
    let mut idents = Vec::new();
    for thread in cached(py, &ENUMERATE, "threading", "enumerate")?
        .call0()?
        .try_iter()?
    {
        if let Ok(ident) = thread?.getattr("ident")?.extract::<usize>() {
            if ident != me {
                idents.push(ident);
            }
        }
    }
    Ok(idents)
}

/// A test function's arguments, laid out for `PyObject_Vectorcall` ahead of the window.
struct Call<'py> {
    /// Slot 0 is free for PY_VECTORCALL_ARGUMENTS_OFFSET (bound methods use it, no allocation).
    slots: Vec<*mut ffi::PyObject>,
    positional: usize,
    names: Option<Bound<'py, PyTuple>>,
    _keep: Vec<Bound<'py, PyAny>>,
}

impl<'py> Call<'py> {
    fn new(args: &Bound<'py, PyTuple>, kwargs: Option<&Bound<'py, PyDict>>) -> PyResult<Self> {
        let mut keep: Vec<Bound<'py, PyAny>> = args.iter().collect();
        let positional = keep.len();
        let mut names = Vec::new();
        if let Some(kwargs) = kwargs {
            for (k, v) in kwargs.iter() {
                names.push(k);
                keep.push(v);
            }
        }
        let mut slots = Vec::with_capacity(keep.len() + 1);
        slots.push(ptr::null_mut());
        slots.extend(keep.iter().map(|o| o.as_ptr()));
        let names = if names.is_empty() {
            None
        } else {
            Some(PyTuple::new(args.py(), names)?)
        };
        Ok(Call {
            slots,
            positional,
            names,
            _keep: keep,
        })
    }

    /// Call `func`; the returned pointer is a new reference or null with the error set.
    fn invoke(&mut self, func: &Bound<'py, PyAny>) -> *mut ffi::PyObject {
        let names = self.names.as_ref().map_or(ptr::null_mut(), |n| n.as_ptr());
        // SAFETY: slots[1..] are borrowed references kept alive by `_keep`; slot 0 is scratch.
        unsafe {
            ffi::PyObject_Vectorcall(
                func.as_ptr(),
                self.slots.as_mut_ptr().add(1),
                self.positional | ffi::PY_VECTORCALL_ARGUMENTS_OFFSET,
                names,
            )
        }
    }
}

/// Threads of this process, from /proc (None where there is no /proc).
fn os_threads() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 20; fields after the command name (which may hold spaces) start after the last ')'.
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(17)?
        .parse()
        .ok()
}

/// A thread the test started and joined frees its thread state *after* join() returns, without
/// the GIL. Wait (briefly, bounded) for such threads to be gone so that free lands in the window
/// every time, not only when the race goes one way.
fn wait_for_threads(before: Option<u64>) {
    let Some(before) = before else { return };
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(20);
    while os_threads().is_some_and(|now| now > before) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// Collect garbage and clear the type cache: the end of every window, and the start.
fn settle() {
    // SAFETY: GIL held by the caller. PyGC_Collect saves and restores a pending exception.
    unsafe {
        ffi::PyGC_Collect();
        ffi::PyType_ClearCache();
    }
}

/// Run `func(*args, **kwargs)` inside a measured window. Returns the function's result and the
/// measurement; an exception of the function is raised after the hooks are removed.
pub fn measure<'py>(
    py: Python<'py>,
    kind: MeterKind,
    func: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<(Bound<'py, PyAny>, Measurement)> {
    static FREEZE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let _busy = Busy::take()?;
    let mut call = Call::new(args, kwargs)?;
    let freeze = cached(py, &FREEZE, "gc", "freeze")?;
    let tracemalloc = match kind {
        MeterKind::Tracemalloc => Some(Tracemalloc::resolve(py)?),
        _ => None,
    };
    settle();
    freeze.call0()?;
    let cycles_before = collected_so_far(py)?;
    let threads = os_threads();
    hooks::exclude_threads(&running_threads(py)?);

    let (result, mut m) = match kind {
        MeterKind::Python => window_python(&mut call, func, threads),
        MeterKind::Tracemalloc => {
            let tm = tracemalloc.as_ref().expect("resolved above");
            window_tracemalloc(py, tm, &mut call, func, threads)?
        }
        MeterKind::Rss => window_rss(&mut call, func),
    };
    // SAFETY: `result` is a new reference or null with the Python error set.
    let result = unsafe { Bound::from_owned_ptr_or_err(py, result) }?;
    m.cycles = collected_so_far(py)?.saturating_sub(cycles_before);
    Ok((result, m))
}

fn window_python<'py>(
    call: &mut Call<'py>,
    func: &Bound<'py, PyAny>,
    threads: Option<u64>,
) -> (*mut ffi::PyObject, Measurement) {
    track::redirect_extensions();
    hooks::install();
    let result = call.invoke(func);
    if !result.is_null() {
        wait_for_threads(threads);
        settle();
    }
    let totals = hooks::ledger().totals();
    let intact = hooks::uninstall();
    let m = Measurement {
        peak: totals.peak,
        retained: totals.current,
        allocations: totals.allocations,
        cycles: 0,
        intact,
    };
    (result, m)
}

/// tracemalloc's functions, resolved before the window so the import stays out of it.
struct Tracemalloc<'py> {
    start: Bound<'py, PyAny>,
    stop: Bound<'py, PyAny>,
    traced: Bound<'py, PyAny>,
}

impl<'py> Tracemalloc<'py> {
    fn resolve(py: Python<'py>) -> PyResult<Self> {
        static IS_TRACING: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        static START: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        static STOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        static TRACED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        if cached(py, &IS_TRACING, "tracemalloc", "is_tracing")?
            .call0()?
            .is_truthy()?
        {
            return Err(Error::Meter(
                "the tracemalloc meter cannot run while tracemalloc is already tracing".into(),
            )
            .into());
        }
        Ok(Tracemalloc {
            start: cached(py, &START, "tracemalloc", "start")?,
            stop: cached(py, &STOP, "tracemalloc", "stop")?,
            traced: cached(py, &TRACED, "tracemalloc", "get_traced_memory")?,
        })
    }
}

fn window_tracemalloc<'py>(
    py: Python<'py>,
    tm: &Tracemalloc<'py>,
    call: &mut Call<'py>,
    func: &Bound<'py, PyAny>,
    threads: Option<u64>,
) -> PyResult<(*mut ffi::PyObject, Measurement)> {
    // SAFETY: GIL held; a plain no-argument call whose result (None) is released at once.
    unsafe {
        let r = ffi::PyObject_CallNoArgs(tm.start.as_ptr());
        if r.is_null() {
            return Err(PyErr::fetch(py));
        }
        ffi::Py_DECREF(r);
    }
    let result = call.invoke(func);
    let mut m = Measurement {
        intact: true,
        ..Measurement::default()
    };
    if result.is_null() {
        // Keep the test's exception across the stop() call.
        let err = PyErr::fetch(py);
        tm.stop.call0()?;
        err.restore(py);
    } else {
        wait_for_threads(threads);
        settle();
        let (current, peak): (u64, u64) = tm.traced.call0()?.extract()?;
        m.peak = peak;
        m.retained = current;
        tm.stop.call0()?;
    }
    Ok((result, m))
}

fn window_rss<'py>(
    call: &mut Call<'py>,
    func: &Bound<'py, PyAny>,
) -> (*mut ffi::PyObject, Measurement) {
    let before = rss::reset_peak();
    let result = call.invoke(func);
    let mut m = Measurement {
        intact: true,
        ..Measurement::default()
    };
    if !result.is_null() {
        settle();
        let after = rss::read();
        m.peak = after.peak.saturating_sub(before.current);
        m.retained = after.current.saturating_sub(before.current);
    }
    (result, m)
}

/// Bytes of the python meter's own bookkeeping (its shadow table).
pub fn footprint() -> u64 {
    hooks::ledger().footprint()
}
