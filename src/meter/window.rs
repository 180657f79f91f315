//! The measured window (see the meter's module comment): the allocator hooks, the collector
//! protocol and the thread rules, around a call or a coroutine. Needs the interpreter.

use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};

use super::{guard, hooks, native, rss, track, Measurement, MeterKind};
use crate::error::Error;

/// Count native memory in every later window of the python meter (`native.rs`): redirects the
/// malloc family of the loaded extensions, once and for the rest of the process. Err says why
/// it cannot be counted here.
pub fn enable_native() -> Result<(), String> {
    native::enable()
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

/// Threads of the test run's own machinery, running before any test (pytest-xdist's, a
/// plugin's): their allocations are never a test's. Every other thread counts, as in
/// tracemalloc: the ones a test starts, and the pools and servers that fixtures or earlier tests
/// started, whose work for the test is the test's memory.
static INFRASTRUCTURE: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

/// Take the threads running now (but this one) as the run's infrastructure; returns how many.
pub fn exclude_threads_running_now(py: Python<'_>) -> PyResult<usize> {
    let threads = running_threads(py)?;
    let n = threads.len();
    *INFRASTRUCTURE.lock().unwrap_or_else(|e| e.into_inner()) = threads;
    Ok(n)
}

/// Set while the windows opened count the opening thread's allocations alone (pytest-memray's
/// `current_thread_only=True`); every other thread's are left out, not only the run's machinery.
static THIS_THREAD_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Make the windows opened from now on count the opening thread alone (`on`), or every thread
/// but the run's machinery again (the default).
pub fn count_this_thread_only(on: bool) {
    THIS_THREAD_ONLY.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// The infrastructure threads still running (a dead thread's id may be reused by a new one).
fn infrastructure_running(py: Python<'_>) -> PyResult<Vec<usize>> {
    let infrastructure = INFRASTRUCTURE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if infrastructure.is_empty() {
        return Ok(infrastructure);
    }
    let running = running_threads(py)?;
    Ok(infrastructure
        .into_iter()
        .filter(|t| running.contains(t))
        .collect())
}

/// Idents of the Python threads other than this one.
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

/// Collect garbage and clear the type cache: the end of every window, and the start. Returns the
/// number of objects the collection found unreachable.
fn settle() -> u64 {
    // SAFETY: GIL held by the caller. PyGC_Collect saves and restores a pending exception.
    unsafe {
        let found = ffi::PyGC_Collect();
        ffi::PyType_ClearCache();
        found.max(0) as u64
    }
}

/// Keeps `gc.freeze()` from outliving a window, and collections cheap: see the module docs.
struct Collector;

/// Bytes the C allocator has handed out and not taken back (large Python blocks go there): glibc
/// counts them; elsewhere resident memory stands in.
fn malloc_in_use() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: no preconditions; it walks glibc's arenas under their locks.
        let info = unsafe { libc::mallinfo2() };
        (info.uordblks + info.hblkhd) as u64
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        rss::read().current
    }
}

/// The last real full collection: the heap right after it (pymalloc blocks, malloc's bytes),
/// when it ended and how long it took.
struct LastFull {
    blocks: u64,
    malloc: u64,
    ended: std::time::Instant,
    took: std::time::Duration,
}

static LAST_FULL: std::sync::Mutex<Option<LastFull>> = std::sync::Mutex::new(None);
/// Objects were frozen before our first window (a conftest that calls `gc.freeze()` itself):
/// then we never unfreeze, which would undo the user's own freeze.
static USER_FROZE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
/// CPython 3.12 starts with a few hundred objects of its own in the permanent generation; a
/// `gc.freeze()` after a project's imports holds tens of thousands.
const INTERPRETER_FROZEN: u64 = 2_000;
/// Full collections take at most about 1/`TIME_SHARE` of the run's time.
const TIME_SHARE: u32 = 50;

impl Collector {
    fn heap(py: Python<'_>) -> PyResult<(u64, u64)> {
        static BLOCKS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let blocks = cached(py, &BLOCKS, "sys", "getallocatedblocks")?
            .call0()?
            .extract::<u64>()?;
        Ok((blocks, malloc_in_use()))
    }

    /// Before a window (and before the plugin's bookkeeping): a real full collection, outside
    /// the window. Objects that lived through a window come back from `gc.unfreeze()` in the
    /// oldest generation, so fixture garbage would wait for CPython's rare full collections:
    /// we run one when the heap grew by a quarter (CPython's rule for objects, here counted in
    /// pymalloc blocks) or by an eighth plus 2 MiB of bytes in malloc's hands, or when one
    /// fiftieth of the time since the last one is what it took. That keeps the garbage of a
    /// run near what it is unmeasured, for at most ~2 % of its time.
    fn maybe_full_collect(py: Python<'_>) -> PyResult<()> {
        static GET_FREEZE_COUNT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        if *USER_FROZE.get_or_init(|| {
            cached(py, &GET_FREEZE_COUNT, "gc", "get_freeze_count")
                .and_then(|f| f.call0()?.extract::<u64>())
                .is_ok_and(|n| n > INTERPRETER_FROZEN)
        }) {
            return Ok(());
        }
        let (blocks, malloc) = Self::heap(py)?;
        let mut last = LAST_FULL.lock().unwrap_or_else(|e| e.into_inner());
        let due = match &*last {
            None => true,
            Some(l) => {
                blocks > l.blocks + l.blocks / 4 + 10_000
                    || malloc > l.malloc + l.malloc / 8 + (2 << 20)
                    || l.ended.elapsed() > l.took * TIME_SHARE
            }
        };
        if due {
            let started = std::time::Instant::now();
            settle();
            let took = started.elapsed();
            let (blocks, malloc) = Self::heap(py)?;
            *last = Some(LastFull {
                blocks,
                malloc,
                ended: std::time::Instant::now(),
                took,
            });
        }
        Ok(())
    }

    fn freeze(py: Python<'_>) -> PyResult<()> {
        static FREEZE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        cached(py, &FREEZE, "gc", "freeze")?.call0()?;
        Ok(())
    }

    fn unfreeze(py: Python<'_>) -> PyResult<()> {
        static UNFREEZE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        if USER_FROZE.get() == Some(&true) {
            return Ok(());
        }
        cached(py, &UNFREEZE, "gc", "unfreeze")?.call0()?;
        Ok(())
    }
}

/// One measured window. Opening it does the determinism protocol and installs the meter;
/// closing it (always, also when the test raised) reads the numbers and removes the meter.
pub struct Window {
    kind: MeterKind,
    _busy: Busy,
    cycles_before: u64,
    threads: Option<u64>,
    tracemalloc: Option<Tracemalloc>,
    rss_before: rss::Rss,
    disturbed: Option<String>,
    /// Still counting: a window dropped without `close` (an abandoned coroutine) removes the
    /// hooks all the same.
    counting: bool,
    /// Native memory is counted in this window.
    native: bool,
}

impl Drop for Window {
    fn drop(&mut self) {
        if self.counting && self.kind == MeterKind::Python {
            hooks::uninstall();
        }
        if self.counting && self.native {
            native::close();
        }
    }
}

impl Window {
    pub fn open(py: Python<'_>, kind: MeterKind) -> PyResult<Window> {
        let busy = Busy::take()?;
        let tracemalloc = match kind {
            MeterKind::Tracemalloc => Some(Tracemalloc::resolve(py)?),
            _ => None,
        };
        if kind == MeterKind::Python {
            guard::watch_tracemalloc(py)?;
        }
        // Our own bookkeeping first: whatever it allocates and frees refills free lists, which
        // the collection below empties again.
        Collector::maybe_full_collect(py)?;
        let idents = infrastructure_running(py)?;
        let stats_before = collected_so_far(py)?;
        let mut disturbed = None;
        if THIS_THREAD_ONLY.load(std::sync::atomic::Ordering::Relaxed) {
            hooks::count_only_this_thread();
        } else if let Err(n) = hooks::exclude_threads(&idents) {
            disturbed = Some(format!(
                "{n} threads of the test run's machinery are running; the allocations of more than {} cannot be told apart from the test's",
                hooks::MAX_EXCLUDED
            ));
        }
        let threads = os_threads();
        Collector::freeze(py)?;
        let cycles_before = stats_before + settle();
        let mut rss_before = rss::Rss::default();
        let native = kind == MeterKind::Python && native::enabled();
        match kind {
            MeterKind::Python => {
                if let Some(failure) = track::redirect_extensions() {
                    disturbed.get_or_insert(failure);
                }
                guard::reset();
                if native {
                    if let Some(failure) = native::open() {
                        disturbed.get_or_insert(failure);
                    }
                }
                hooks::install();
            }
            MeterKind::Tracemalloc => {
                let tm = tracemalloc.as_ref().expect("resolved above");
                // SAFETY: GIL held; a plain no-argument call whose result (None) is released.
                unsafe {
                    let r = ffi::PyObject_CallNoArgs(tm.start.as_ptr());
                    if r.is_null() {
                        let err = PyErr::fetch(py);
                        Collector::unfreeze(py)?;
                        return Err(err);
                    }
                    ffi::Py_DECREF(r);
                }
            }
            MeterKind::Rss => rss_before = rss::reset_peak(),
        }
        Ok(Window {
            kind,
            _busy: busy,
            cycles_before,
            threads,
            tracemalloc,
            rss_before,
            disturbed,
            counting: true,
            native,
        })
    }

    /// Close the window: `completed` is false when the test raised (its exception may be
    /// pending; it is kept). The numbers of a test that raised are not read.
    pub fn close(mut self, py: Python<'_>, completed: bool) -> PyResult<Measurement> {
        let mut m = Measurement::default();
        self.counting = false;
        if completed {
            wait_for_threads(self.threads);
        }
        match self.kind {
            MeterKind::Python => {
                if completed {
                    settle();
                }
                let totals = hooks::ledger().totals();
                if self.native {
                    let native = native::close();
                    m.native_peak = Some(native.peak);
                    m.native_retained = Some(native.current);
                    m.combined_peak = Some(super::ledger::combined_peak());
                }
                let intact = hooks::uninstall();
                m.peak = totals.peak;
                m.retained = totals.current;
                m.allocations = totals.allocations;
                if !intact {
                    m.disturbed = Some(
                        "the test changed the memory allocator (tracemalloc.start() or stop(), or an allocator of its own)".into(),
                    );
                }
            }
            MeterKind::Tracemalloc => {
                let tm = self.tracemalloc.as_ref().expect("resolved at open");
                let pending = PyErr::take(py);
                if completed && pending.is_none() {
                    settle();
                    let (current, peak): (u64, u64) = tm.traced.call0(py)?.extract(py)?;
                    m.peak = peak;
                    m.retained = current;
                }
                tm.stop.call0(py)?;
                if let Some(err) = pending {
                    err.restore(py);
                }
            }
            MeterKind::Rss => {
                if completed {
                    settle();
                    let after = rss::read();
                    m.peak = after.peak.saturating_sub(self.rss_before.current);
                    m.retained = after.current.saturating_sub(self.rss_before.current);
                }
            }
        }
        // From here on the hooks are out: Python calls are free again. Keep the test's error.
        let pending = PyErr::take(py);
        Collector::unfreeze(py)?;
        m.cycles = collected_so_far(py)?.saturating_sub(self.cycles_before);
        if self.kind == MeterKind::Python {
            if let Some(reason) = guard::tracemalloc_touched() {
                m.disturbed.get_or_insert(reason);
            }
        }
        m.disturbed = m.disturbed.or(self.disturbed.take());
        if let Some(err) = pending {
            err.restore(py);
        }
        Ok(m)
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
    let mut call = Call::new(args, kwargs)?;
    let window = Window::open(py, kind)?;
    let result = call.invoke(func);
    let m = window.close(py, !result.is_null())?;
    // SAFETY: `result` is a new reference or null with the Python error set.
    let result = unsafe { Bound::from_owned_ptr_or_err(py, result) }?;
    Ok((result, m))
}

/// tracemalloc's functions, resolved before the window so the import stays out of it.
struct Tracemalloc {
    start: Py<PyAny>,
    stop: Py<PyAny>,
    traced: Py<PyAny>,
}

impl Tracemalloc {
    fn resolve(py: Python<'_>) -> PyResult<Self> {
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
            start: cached(py, &START, "tracemalloc", "start")?.unbind(),
            stop: cached(py, &STOP, "tracemalloc", "stop")?.unbind(),
            traced: cached(py, &TRACED, "tracemalloc", "get_traced_memory")?.unbind(),
        })
    }
}

/// Bytes of the python meter's own bookkeeping (its shadow table).
pub fn footprint() -> u64 {
    hooks::ledger().footprint()
}
