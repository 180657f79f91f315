//! Where native memory was allocated: the diagnosis of a test failed on a native figure.
//!
//! Only in the diagnosing run, never while measuring. `start` opens a native window (the same
//! ledger and redirections as `native.rs`) and switches recording on; from then on every counted
//! native allocation also records, in `record`:
//! - its native stack: return addresses from `backtrace::trace_unsynchronized` (libgcc's
//!   unwinder, DWARF CFI), innermost first, stopping at the first frame of the interpreter
//!   (the main program or libpython) or after `DEPTH` frames. Addresses only: symbols are looked
//!   up after the window (`stop`), with the `backtrace` crate (gimli/addr2line);
//! - the Python frames running at the time (code objects and lines, the innermost
//!   `PYTHON_DEPTH`), the caller of the extension first. A thread that released the GIL
//!   (`Py_BEGIN_ALLOW_THREADS`) cannot read them: the extension's `PyEval_SaveThread` is
//!   redirected too (`native.rs`) and, while recording, keeps the frames of the moment the GIL
//!   was released for the allocations made without it, until `PyEval_RestoreThread`.
//!
//! Allocations are grouped by site (the stack and the Python frame) with their bytes live now and
//! at the highest native total of the run (the peak), kept without snapshots: a site remembers
//! its value at the last peak, and is brought up to date lazily when it next changes.
//!
//! Hazards, and how they are met:
//! - `record` runs inside a redirected `malloc`, holding the thread's outermost-call flag
//!   (`hooks::outermost`): an allocation of the unwinder itself (libgcc's `malloc` is redirected
//!   like any library's) does not count and does not come back here. Our own tables are
//!   allocated by the Rust allocator, i.e. the C library's `malloc` through our own import,
//!   which is never redirected.
//! - Reading the Python frames may create their frame objects (CPython makes them lazily),
//!   allocations of the interpreter that could start a cyclic collection, and with it
//!   finalizers, in the middle of an extension's `malloc`: the collector is switched off around
//!   it. Each code object seen is kept alive (one reference, `State::pinned`) until its names
//!   are read after the window, so a thread without the GIL never touches a reference count.
//! - One lock over the tables; a thread that does not hold the GIL never touches Python.
//!
//! Recording costs a few microseconds an allocation: after `BUDGET` of a run, allocations are
//! still counted by site but no longer unwound (one site says so).
//!
//! Normal windows pay one relaxed load per counted allocation and per GIL release of an
//! extension (`on`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// The Python frame that called into an extension: file, line, function.
pub type Caller = (String, u32, String);

/// One site of the diagnosis, after symbolisation: frames (innermost first) folded of the C
/// runtime and of our engine, the Python caller, and its bytes and blocks.
#[pyo3::pyclass(frozen, get_all, module = "pytest_memcheck._engine")]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NativeSite {
    /// `libfoo.so: leak_buffer (foo.c:12)`, innermost first, up to the interpreter.
    pub frames: Vec<String>,
    /// The Python frames running when the extension allocated: file, line, function,
    /// innermost (the caller) first; empty when the thread did not hold the GIL.
    pub python: Vec<Caller>,
    pub retained: u64,
    pub retained_blocks: u64,
    pub peak: u64,
    pub peak_blocks: u64,
}

/// What a diagnosing run found: its native totals and its sites (retained first).
#[pyo3::pyclass(frozen, get_all, module = "pytest_memcheck._engine")]
#[derive(Clone, Debug, Default)]
pub struct NativeDiagnosis {
    pub peak: u64,
    pub retained: u64,
    pub sites: Vec<NativeSite>,
    /// The run outlasted the budget: later allocations' stacks were not recorded.
    pub past_budget: bool,
}

static ON: AtomicBool = AtomicBool::new(false);
/// The diagnosing run's number: frames a thread kept from an earlier run are not this one's.
static RUN: AtomicU64 = AtomicU64::new(0);

/// Recording is on (a diagnosing run): one relaxed load, the normal path's only cost.
#[inline(always)]
pub(crate) fn on() -> bool {
    ON.load(Relaxed)
}

#[cfg(all(target_os = "linux", target_pointer_width = "64", target_env = "gnu"))]
mod imp {
    use std::cell::Cell;
    use std::collections::{HashMap, HashSet};
    use std::ffi::{c_void, CStr};
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use pyo3::ffi;
    use pyo3::prelude::*;

    use super::super::elf::each_object;
    use super::super::native;
    use super::{Caller, NativeDiagnosis, NativeSite, ON, RUN};

    /// Native frames kept per allocation (before folding).
    const DEPTH: usize = 40;
    /// Python frames kept per allocation.
    const PYTHON_DEPTH: usize = 12;
    /// Between the native frames and the Python frames of a key.
    const SEPARATOR: usize = usize::MAX;
    /// The native frames of the site of allocations made after the budget was spent.
    const UNRECORDED: usize = usize::MAX - 1;
    /// How long a run records stacks.
    const BUDGET: Duration = Duration::from_secs(10);
    /// Frames shown for the allocations past the budget.
    pub(super) const PAST_BUDGET: &str = "(stack not recorded: the diagnosis's 10 s were spent)";

    /// Bytes and blocks.
    #[derive(Clone, Copy, Default)]
    struct Amount {
        bytes: u64,
        blocks: u64,
    }

    struct Site {
        /// Return addresses, innermost first, `SEPARATOR`, then (code object, line) pairs,
        /// innermost first.
        key: Box<[usize]>,
        live: Amount,
        at_peak: Amount,
        /// The peak number at which `at_peak` was last brought up to date.
        seen: u64,
    }

    struct State {
        sites: Vec<Site>,
        index: HashMap<Box<[usize]>, u32>,
        /// Live recorded blocks: address → (site, bytes charged).
        blocks: HashMap<usize, (u32, u64)>,
        total: u64,
        peak: u64,
        /// Incremented at every new peak.
        peaks: u64,
        /// The interpreter's segments: unwinding stops at the first frame in one.
        interpreter: Vec<(usize, usize)>,
        started: Instant,
        recorded: u64,
        past_budget: bool,
        /// Code objects referenced by keys, one reference each, released by `stop`.
        pinned: HashSet<usize>,
    }

    impl State {
        fn new(interpreter: Vec<(usize, usize)>) -> State {
            State {
                sites: Vec::new(),
                index: HashMap::new(),
                blocks: HashMap::new(),
                total: 0,
                peak: 0,
                peaks: 0,
                interpreter,
                started: Instant::now(),
                recorded: 0,
                past_budget: false,
                pinned: HashSet::new(),
            }
        }

        /// A new site for `key`.
        fn site(&mut self, key: &[usize]) -> u32 {
            let site = self.sites.len() as u32;
            let key: Box<[usize]> = key.into();
            self.sites.push(Site {
                key: key.clone(),
                live: Amount::default(),
                at_peak: Amount::default(),
                seen: self.peaks,
            });
            self.index.insert(key, site);
            site
        }

        /// A block of `bytes` at `addr` for `site` (an address recorded twice without its
        /// free seen is never counted twice).
        fn insert(&mut self, addr: usize, site: u32, bytes: u64) {
            self.remove(addr);
            self.blocks.insert(addr, (site, bytes));
            self.add(site, bytes);
        }

        /// What `site` held at the highest total.
        fn at_peak(&self, site: &Site) -> Amount {
            if site.seen == self.peaks {
                site.at_peak
            } else {
                site.live
            }
        }

        fn touch(&mut self, site: u32) -> &mut Site {
            let peaks = self.peaks;
            let s = &mut self.sites[site as usize];
            if s.seen != peaks {
                // Unchanged since before the last peak: its value then is its value now.
                s.at_peak = s.live;
                s.seen = peaks;
            }
            s
        }

        fn add(&mut self, site: u32, bytes: u64) {
            let s = self.touch(site);
            s.live.bytes += bytes;
            s.live.blocks += 1;
            self.total += bytes;
            if self.total > self.peak {
                self.peak = self.total;
                self.peaks += 1;
                let peaks = self.peaks;
                let s = &mut self.sites[site as usize];
                s.at_peak = s.live;
                s.seen = peaks;
            }
        }

        fn remove(&mut self, addr: usize) {
            if let Some((site, bytes)) = self.blocks.remove(&addr) {
                let s = self.touch(site);
                s.live.bytes -= bytes;
                s.live.blocks -= 1;
                self.total -= bytes;
            }
        }
    }

    static STATE: Mutex<Option<State>> = Mutex::new(None);

    fn state() -> std::sync::MutexGuard<'static, Option<State>> {
        STATE.lock().unwrap_or_else(|e| e.into_inner())
    }

    thread_local! {
        /// The frames of the moment this thread released the GIL: (run, words, pairs).
        static RELEASED: Cell<(u64, usize, [usize; 2 * PYTHON_DEPTH])> =
            const { Cell::new((0, 0, [0; 2 * PYTHON_DEPTH])) };
    }

    /// The running Python frames' code objects (pinned) and lines, innermost first, written as
    /// pairs into `out`; returns the words written, or None when this thread does not hold the
    /// GIL.
    fn python_stack(out: &mut [usize], pinned: &mut HashSet<usize>) -> Option<usize> {
        // SAFETY: PyGILState_Check may be called from any thread; the rest only with the GIL.
        // PyEval_GetFrame's frame is borrowed, PyFrame_GetBack's are new references, released
        // once their successor is taken (the running frames hold them too). PyFrame_GetCode's
        // reference is kept in `pinned`, once per code object.
        unsafe {
            if ffi::PyGILState_Check() == 0 {
                return None;
            }
            // Frame objects may be created: no collection (and no finalizer) in here.
            let collecting = ffi::PyGC_Disable();
            let mut frame = ffi::PyEval_GetFrame();
            let mut owned = false;
            let mut n = 0;
            while !frame.is_null() && n + 2 <= out.len() {
                let code = ffi::PyFrame_GetCode(frame);
                if !pinned.insert(code as usize) {
                    ffi::Py_DECREF(code as *mut ffi::PyObject);
                }
                out[n] = code as usize;
                out[n + 1] = ffi::PyFrame_GetLineNumber(frame).max(0) as usize;
                n += 2;
                let back = ffi::PyFrame_GetBack(frame);
                if owned {
                    ffi::Py_DECREF(frame as *mut ffi::PyObject);
                }
                frame = back;
                owned = true;
            }
            if owned && !frame.is_null() {
                ffi::Py_DECREF(frame as *mut ffi::PyObject);
            }
            if collecting != 0 {
                ffi::PyGC_Enable();
            }
            Some(n)
        }
    }

    /// The extension releases the GIL (its `PyEval_SaveThread`, GIL still held): keep this
    /// thread's frames for the allocations it makes without the GIL.
    pub(crate) fn gil_released() {
        let mut guard = state();
        let Some(state) = guard.as_mut() else {
            return;
        };
        let mut frames = [0usize; 2 * PYTHON_DEPTH];
        let n = python_stack(&mut frames, &mut state.pinned).unwrap_or(0);
        let _ = RELEASED.try_with(|r| r.set((RUN.load(Relaxed), n, frames)));
    }

    /// The extension took the GIL back.
    pub(crate) fn gil_taken() {
        let _ = RELEASED.try_with(|r| r.set((0, 0, [0; 2 * PYTHON_DEPTH])));
    }

    /// The frames kept when this thread released the GIL in this run, written into `out`.
    fn released_stack(out: &mut [usize]) -> usize {
        let (run, n, frames) =
            RELEASED
                .try_with(Cell::get)
                .unwrap_or((0, 0, [0; 2 * PYTHON_DEPTH]));
        if run == 0 || run != RUN.load(Relaxed) {
            return 0;
        }
        let n = n.min(out.len());
        out[..n].copy_from_slice(&frames[..n]);
        n
    }

    /// A counted native block of `bytes` at `addr`: called by the redirected allocator while
    /// it holds the thread's outermost-call flag.
    pub(crate) fn record(addr: usize, bytes: u64) {
        let mut guard = state();
        let Some(state) = guard.as_mut() else {
            return;
        };
        let mut key = [0usize; DEPTH + 1 + 2 * PYTHON_DEPTH];
        let mut n = 0;
        state.recorded += 1;
        if !state.past_budget && state.recorded % 1024 == 0 {
            state.past_budget = state.started.elapsed() > BUDGET;
        }
        if state.past_budget {
            key[0] = UNRECORDED;
            key[1] = SEPARATOR;
            n = 2;
        } else {
            let interpreter = &state.interpreter;
            // SAFETY: libgcc's unwinder is thread-safe; the closure only copies addresses.
            unsafe {
                backtrace::trace_unsynchronized(|frame| {
                    let ip = frame.ip() as usize;
                    if interpreter.iter().any(|&(s, e)| (s..e).contains(&ip)) {
                        return false;
                    }
                    key[n] = ip;
                    n += 1;
                    n < DEPTH
                });
            }
            key[n] = SEPARATOR;
            n += 1;
            n += match python_stack(&mut key[n..], &mut state.pinned) {
                Some(words) => words,
                None => released_stack(&mut key[n..]),
            };
        }
        let key = &key[..n];
        let site = match state.index.get(key) {
            Some(&site) => site,
            None => state.site(key),
        };
        state.insert(addr, site, bytes);
    }

    /// A recorded block freed (or moved by realloc).
    pub(crate) fn released(addr: usize) {
        if let Some(state) = state().as_mut() {
            state.remove(addr);
        }
    }

    /// A recorded mapping partly unmapped: what is left of it, `pieces` (address, bytes), stays
    /// its site's.
    pub(crate) fn carved(addr: usize, pieces: &[(usize, u64)]) {
        if let Some(state) = state().as_mut() {
            let site = state.blocks.get(&addr).map(|&(site, _)| site);
            state.remove(addr);
            for &(piece, bytes) in pieces {
                if let Some(site) = site {
                    state.insert(piece, site, bytes);
                }
            }
        }
    }

    /// Open a native window that records sites. Err when native memory is not counted.
    pub fn start() -> Result<(), String> {
        if !native::enabled() {
            return Err("native memory is not counted (--memcheck-native is off)".into());
        }
        let mut interpreter = Vec::new();
        let python = ffi::PyMem_RawMalloc as *const () as usize;
        each_object(&[], &mut |object| {
            if object.first || object.contains(python) {
                interpreter.extend_from_slice(object.segments());
            }
        });
        RUN.fetch_add(1, Relaxed);
        *state() = Some(State::new(interpreter));
        ON.store(true, Relaxed);
        if let Some(failure) = native::open() {
            stop_recording();
            return Err(failure);
        }
        Ok(())
    }

    fn stop_recording() -> Option<State> {
        ON.store(false, Relaxed);
        state().take()
    }

    /// What an object's frames are to a site.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Kind {
        /// An extension or a library: shown.
        Shown,
        /// The C runtime, the unwinder, our engine: folded away.
        Folded,
    }

    struct Loaded {
        segments: Vec<(usize, usize)>,
        name: String,
        kind: Kind,
    }

    struct Objects {
        list: Vec<Loaded>,
    }

    impl Objects {
        fn now() -> Objects {
            let ours = stop as *const () as usize;
            let mut list = Vec::new();
            each_object(&[], &mut |object| {
                let file = object.file_name();
                let folded = object.contains(ours)
                    || object.contains(libc::malloc as *const () as usize)
                    || native::RUNTIME.iter().any(|p| file.starts_with(p))
                    || file.starts_with(b"libgcc_s.so");
                let name = if object.first {
                    "python".to_string()
                } else {
                    String::from_utf8_lossy(file).into_owned()
                };
                let kind = if folded { Kind::Folded } else { Kind::Shown };
                list.push(Loaded {
                    segments: object.segments().to_vec(),
                    name,
                    kind,
                });
            });
            Objects { list }
        }

        fn find(&self, ip: usize) -> Option<(&str, Kind)> {
            self.list
                .iter()
                .find(|o| o.segments.iter().any(|&(s, e)| (s..e).contains(&ip)))
                .map(|o| (o.name.as_str(), o.kind))
        }
    }

    /// The frames at `ip` (several when functions were inlined), innermost first.
    fn symbolise(ip: usize, object: &str) -> Vec<String> {
        let mut out = Vec::new();
        // A return address: the call is the instruction before it.
        let at = (ip - 1) as *mut c_void;
        backtrace::resolve(at, |symbol| {
            let name = symbol
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".to_string());
            let place = match (symbol.filename(), symbol.lineno()) {
                (Some(f), Some(l)) => {
                    let f = f.file_name().map_or_else(
                        || f.to_string_lossy().into_owned(),
                        |n| n.to_string_lossy().into_owned(),
                    );
                    format!(" ({f}:{l})")
                }
                _ => String::new(),
            };
            out.push(format!("{object}: {name}{place}"));
        });
        if out.is_empty() {
            // No symbol table entry: the loader's nearest exported symbol, or the offset.
            let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
            // SAFETY: dladdr fills `info` for any address; the strings are the loader's.
            let found = unsafe { libc::dladdr(at, &mut info) } != 0;
            if found && !info.dli_sname.is_null() {
                // SAFETY: a NUL-terminated string of the loader's, alive while the object is.
                let raw = unsafe { CStr::from_ptr(info.dli_sname) }.to_bytes();
                // Demangled (C++ and Rust): `operator new(unsigned long)`, not `_Znwm`.
                let name = backtrace::SymbolName::new(raw);
                out.push(format!("{object}: {name}"));
            } else if found {
                out.push(format!("{object}+{:#x}", ip - info.dli_fbase as usize));
            } else {
                out.push(format!("{ip:#x}"));
            }
        }
        out
    }

    /// The Python function, file and line of a code object (pinned).
    fn python_frame(py: Python<'_>, code: usize, line: usize) -> Option<Caller> {
        // SAFETY: a code object kept alive by its reference in `State::pinned`.
        let code = unsafe { Bound::from_borrowed_ptr(py, code as *mut ffi::PyObject) };
        let file: String = code.getattr("co_filename").ok()?.extract().ok()?;
        let name: String = code.getattr("co_name").ok()?.extract().ok()?;
        Some((file, line as u32, name))
    }

    /// Close the window and name its sites. Must be called with the GIL held.
    pub fn stop(py: Python<'_>) -> NativeDiagnosis {
        let totals = native::close();
        let Some(mut state) = stop_recording() else {
            return NativeDiagnosis::default();
        };
        let objects = Objects::now();
        let mut names: HashMap<usize, Vec<String>> = HashMap::new();
        let mut grouped: HashMap<(Vec<String>, Vec<Caller>), NativeSite> = HashMap::new();
        let sites = std::mem::take(&mut state.sites);
        for site in sites {
            let split = site.key.iter().position(|&w| w == SEPARATOR).unwrap_or(0);
            let (ips, python) = (&site.key[..split], &site.key[split + 1..]);
            let python: Vec<Caller> = python
                .chunks(2)
                .filter_map(|pair| python_frame(py, pair[0], pair[1]))
                .collect();
            let at_peak = state.at_peak(&site);
            if site.live.bytes == 0 && at_peak.bytes == 0 {
                continue;
            }
            let mut frames = Vec::new();
            if ips == [UNRECORDED] {
                frames.push(PAST_BUDGET.to_string());
            }
            for &ip in ips.iter().filter(|&&ip| ip != UNRECORDED) {
                match objects.find(ip) {
                    Some((_, Kind::Folded)) => {}
                    Some((object, Kind::Shown)) => frames.extend(
                        names
                            .entry(ip)
                            .or_insert_with(|| symbolise(ip, object))
                            .iter()
                            .cloned(),
                    ),
                    None => frames.push(format!("{ip:#x}")),
                }
            }
            let entry = grouped.entry((frames, python)).or_default();
            entry.retained += site.live.bytes;
            entry.retained_blocks += site.live.blocks;
            entry.peak += at_peak.bytes;
            entry.peak_blocks += at_peak.blocks;
        }
        for code in state.pinned.drain() {
            // SAFETY: GIL held; the one reference `python_stack` kept of it.
            unsafe { ffi::Py_DECREF(code as *mut ffi::PyObject) };
        }
        let mut sites: Vec<NativeSite> = grouped
            .into_iter()
            .map(|((frames, python), mut site)| {
                site.frames = frames;
                site.python = python;
                site
            })
            .collect();
        sites.sort_by(|a, b| {
            (b.retained, b.peak)
                .cmp(&(a.retained, a.peak))
                .then_with(|| a.frames.cmp(&b.frames))
        });
        NativeDiagnosis {
            peak: totals.peak,
            retained: totals.current,
            sites,
            past_budget: state.past_budget,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn amounts(state: &State) -> Vec<(u64, u64)> {
            state
                .sites
                .iter()
                .map(|s| (s.live.bytes, state.at_peak(s).bytes))
                .collect()
        }

        #[test]
        fn sites_keep_their_bytes_at_the_highest_total_without_snapshots() {
            let mut state = State::new(Vec::new());
            let (a, b) = (state.site(&[1, SEPARATOR]), state.site(&[2, SEPARATOR]));
            state.insert(0x10, a, 100);
            state.insert(0x20, b, 50); // total 150: the peak
            state.remove(0x10);
            state.insert(0x30, b, 60); // total 110
            assert_eq!(amounts(&state), [(0, 100), (110, 50)]);
            assert_eq!((state.total, state.peak), (110, 150));
            state.insert(0x40, a, 200); // total 310: a new peak, b unchanged since
            state.remove(0x20);
            assert_eq!(amounts(&state), [(200, 200), (60, 110)]);
            // A block recorded twice at one address counts once; a free of an unknown one is
            // ignored.
            state.insert(0x40, a, 200);
            state.remove(0x99);
            assert_eq!(state.total, 260);
            assert_eq!(state.sites[a as usize].live.blocks, 1);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64", target_env = "gnu")))]
mod imp {
    use super::NativeDiagnosis;
    use pyo3::prelude::*;

    pub(crate) fn record(_addr: usize, _bytes: u64) {}
    pub(crate) fn gil_released() {}
    pub(crate) fn gil_taken() {}
    pub(crate) fn released(_addr: usize) {}
    pub(crate) fn carved(_addr: usize, _pieces: &[(usize, u64)]) {}

    pub fn start() -> Result<(), String> {
        Err("native memory is counted on Linux (64-bit, glibc) only".into())
    }

    pub fn stop(_py: Python<'_>) -> NativeDiagnosis {
        NativeDiagnosis::default()
    }
}

pub(crate) use imp::{carved, gil_released, gil_taken, record, released};
pub use imp::{start, stop};
