//! Where native memory was allocated: the diagnosis of a test failed on a native figure.
//!
//! Only in the diagnosing run, never while measuring. `start` opens a native window (the same
//! ledger and redirections as `native.rs`) and switches recording on; from then on every counted
//! native allocation also records, in `record`:
//! - its native stack: return addresses from `backtrace::trace_unsynchronized` (libgcc's
//!   unwinder, DWARF CFI), innermost first, stopping at the first frame of the interpreter
//!   (the main program or libpython) or after `DEPTH` frames. Addresses only: symbols are looked
//!   up after the window (`stop`), with the `backtrace` crate (gimli/addr2line);
//! - the Python frame running at the time (the code object and its line), the caller of the
//!   extension, when the calling thread holds the GIL.
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
//! - Reading the Python frame may create its frame object (CPython makes them lazily), an
//!   allocation of the interpreter that could start a cyclic collection, and with it finalizers,
//!   in the middle of an extension's `malloc`: the collector is switched off around it. The code
//!   object is kept alive (a reference) until its names are read after the window.
//! - One lock over the tables; a thread that does not hold the GIL never touches Python.
//!
//! Normal windows pay one relaxed load per counted allocation (`on`).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// The Python frame that called into an extension: file, line, function.
pub type Caller = (String, u32, String);

/// One site of the diagnosis, after symbolisation: frames (innermost first) folded of the C
/// runtime and of our engine, the Python caller, and its bytes and blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NativeSite {
    /// `libfoo.so: leak_buffer (foo.c:12)`, innermost first, up to the interpreter.
    pub frames: Vec<String>,
    /// The Python frame that called into the extension: file, line, function.
    pub python: Option<Caller>,
    pub retained: u64,
    pub retained_blocks: u64,
    pub peak: u64,
    pub peak_blocks: u64,
}

/// What a diagnosing run found: its native totals and its sites (retained first).
#[derive(Clone, Debug, Default)]
pub struct NativeDiagnosis {
    pub peak: u64,
    pub retained: u64,
    pub sites: Vec<NativeSite>,
}

static ON: AtomicBool = AtomicBool::new(false);

/// Recording is on (a diagnosing run): one relaxed load, the normal path's only cost.
#[inline(always)]
pub(crate) fn on() -> bool {
    ON.load(Relaxed)
}

#[cfg(all(target_os = "linux", target_pointer_width = "64", target_env = "gnu"))]
mod imp {
    use std::collections::HashMap;
    use std::ffi::{c_void, CStr};
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Mutex;

    use pyo3::ffi;
    use pyo3::prelude::*;

    use super::super::elf::each_object;
    use super::super::native;
    use super::{Caller, NativeDiagnosis, NativeSite, ON};

    /// Native frames kept per allocation (before folding).
    const DEPTH: usize = 40;

    /// Bytes and blocks.
    #[derive(Clone, Copy, Default)]
    struct Amount {
        bytes: u64,
        blocks: u64,
    }

    struct Site {
        /// Return addresses, innermost first, then the code object's address and the line.
        key: Box<[usize]>,
        live: Amount,
        at_peak: Amount,
        /// The peak number at which `at_peak` was last brought up to date.
        seen: u64,
    }

    #[derive(Default)]
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
    }

    impl State {
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

    /// The running Python frame's code object (a new reference) and line, when this thread
    /// holds the GIL.
    fn python_caller() -> (usize, usize) {
        // SAFETY: PyGILState_Check may be called from any thread; the rest only with the GIL.
        unsafe {
            if ffi::PyGILState_Check() == 0 {
                return (0, 0);
            }
            // A frame object may be created: no collection (and no finalizer) in here.
            let collecting = ffi::PyGC_Disable();
            let frame = ffi::PyEval_GetFrame();
            let found = if frame.is_null() {
                (0, 0)
            } else {
                let code = ffi::PyFrame_GetCode(frame);
                let line = ffi::PyFrame_GetLineNumber(frame).max(0) as usize;
                (code as usize, line)
            };
            if collecting != 0 {
                ffi::PyGC_Enable();
            }
            found
        }
    }

    /// A counted native block of `bytes` at `addr`: called by the redirected allocator while
    /// it holds the thread's outermost-call flag.
    pub(crate) fn record(addr: usize, bytes: u64) {
        let mut guard = state();
        let Some(state) = guard.as_mut() else {
            return;
        };
        let mut key = [0usize; DEPTH + 2];
        let mut n = 0;
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
        let (code, line) = python_caller();
        key[n] = code;
        key[n + 1] = line;
        let key = &key[..n + 2];
        let site = match state.index.get(key) {
            Some(&site) => {
                if code != 0 {
                    // SAFETY: GIL held (python_caller found a frame); the site holds its own
                    // reference, this one is the frame's, still alive.
                    unsafe { ffi::Py_DECREF(code as *mut ffi::PyObject) };
                }
                site
            }
            None => {
                let site = state.sites.len() as u32;
                let key: Box<[usize]> = key.into();
                state.sites.push(Site {
                    key: key.clone(),
                    live: Amount::default(),
                    at_peak: Amount::default(),
                    seen: state.peaks,
                });
                state.index.insert(key, site);
                site
            }
        };
        // An address recorded twice without its free seen: never counted twice.
        state.remove(addr);
        state.blocks.insert(addr, (site, bytes));
        state.add(site, bytes);
    }

    /// A recorded block freed (or moved by realloc).
    pub(crate) fn released(addr: usize) {
        if let Some(state) = state().as_mut() {
            state.remove(addr);
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
        *state() = Some(State {
            interpreter,
            ..State::default()
        });
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
                let name = unsafe { CStr::from_ptr(info.dli_sname) }.to_string_lossy();
                out.push(format!("{object}: {name}"));
            } else if found {
                out.push(format!("{object}+{:#x}", ip - info.dli_fbase as usize));
            } else {
                out.push(format!("{ip:#x}"));
            }
        }
        out
    }

    /// The Python function, file and line of a code object (a reference, released here).
    fn python_frame(py: Python<'_>, code: usize, line: usize) -> Option<Caller> {
        if code == 0 {
            return None;
        }
        // SAFETY: a reference taken by `record`, handed over to this Bound.
        let code = unsafe { Bound::from_owned_ptr(py, code as *mut ffi::PyObject) };
        let file: String = code.getattr("co_filename").ok()?.extract().ok()?;
        let name: String = code.getattr("co_name").ok()?.extract().ok()?;
        Some((file, line as u32, name))
    }

    /// Close the window and name its sites. Must be called with the GIL held.
    pub fn stop(py: Python<'_>) -> NativeDiagnosis {
        let totals = native::close();
        let Some(state) = stop_recording() else {
            return NativeDiagnosis::default();
        };
        let objects = Objects::now();
        let mut names: HashMap<usize, Vec<String>> = HashMap::new();
        let mut grouped: HashMap<(Vec<String>, Option<Caller>), NativeSite> = HashMap::new();
        let peaks = state.peaks;
        for site in state.sites {
            let (ips, python) = site.key.split_at(site.key.len() - 2);
            let python = python_frame(py, python[0], python[1]);
            let at_peak = if site.seen == peaks {
                site.at_peak
            } else {
                site.live
            };
            if site.live.bytes == 0 && at_peak.bytes == 0 {
                continue;
            }
            let mut frames = Vec::new();
            for &ip in ips {
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
        }
    }
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64", target_env = "gnu")))]
mod imp {
    use super::NativeDiagnosis;
    use pyo3::prelude::*;

    pub(crate) fn record(_addr: usize, _bytes: u64) {}
    pub(crate) fn released(_addr: usize) {}

    pub fn start() -> Result<(), String> {
        Err("native memory is counted on Linux (64-bit, glibc) only".into())
    }

    pub fn stop(_py: Python<'_>) -> NativeDiagnosis {
        NativeDiagnosis::default()
    }
}

pub(crate) use imp::{record, released};
pub use imp::{start, stop};
