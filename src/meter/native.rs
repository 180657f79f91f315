//! Native memory: the malloc family called by extension modules and the libraries they load.
//!
//! Opt-in (`--memcheck-native`). When switched on, the imported entries (GOT slots, and data
//! words that hold a function pointer) of `malloc`, `calloc`, `realloc`, `reallocarray`,
//! `free`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`, `strdup` and
//! `strndup` are redirected to the functions below in every loaded object but these:
//! - the interpreter: the main program and libpython (the object that holds `PyMem_RawMalloc`).
//!   Its calls are Python's; its RAW domain is already counted by the python meter;
//! - the C runtime (libc, the dynamic loader, libm, libpthread, libdl, librt, libutil, the
//!   vDSO) and the object that defines `malloc` itself: what libc allocates for itself (stdio
//!   buffers, locale data) is not the test's, and would vary with the order of first uses;
//! - ourselves, whose calls must reach the real allocator;
//! - objects that report their buffers with `PyTraceMalloc_Track` (numpy < 2.5): the python
//!   meter counts those buffers already, and counting their `malloc` too would count them twice.
//!
//! `PyEval_SaveThread` and `PyEval_RestoreThread` are redirected in the same objects, for the
//! diagnosis only (`native_sites.rs`: the Python frames of an allocation made without the
//! GIL); outside a diagnosing run they forward after one atomic load.
//!
//! `dlopen` is redirected in the interpreter only, whose imports call it with a full path, so an
//! extension imported inside a test is redirected as soon as it is loaded; what its constructors
//! allocate while it loads is not seen. It is not redirected in extensions: glibc searches a
//! bare name from the *calling* object's RUNPATH, which would become ours. Objects they load
//! (ctypes, plugins) are redirected at the next window, which scans again whenever the loader's
//! counters say something new was loaded.
//!
//! Counting follows the python meter's ledger (`ledger.rs`): a block is an address, counted from
//! its allocation inside the window to its free, with the size requested (not
//! `malloc_usable_size`), so the figures are deterministic. Frees of blocks the ledger does not
//! know (allocated before the window, or by the interpreter) are ignored. A `realloc` of such a
//! block is charged its growth: the new size less the old block's usable size (the only size
//! known for it), never below zero; a later free in the window returns that charge. Only the
//! outermost allocator call of a thread counts: a native call beneath one of the python meter's
//! hooks (an allocator an extension installed with `PyMem_SetAllocator`) is part of that block.
//! Threads that predate the run are left out, as in the python meter.
//!
//! Hazards: the redirections stay in place for the rest of the process once made (a thread may
//! be calling through a slot; a function pointer may have been copied), so every function here
//! forwards at once when no window is open: one atomic load. A failed redirection (mprotect
//! refused) is remembered: every later window's native figures are reported as disturbed.

#[cfg(all(target_os = "linux", target_pointer_width = "64", target_env = "gnu"))]
mod imp {
    use std::ffi::{c_char, c_int, c_void};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
    use std::sync::{Mutex, OnceLock};

    use super::super::elf::{each_object, load_counts, Object};
    use super::super::hooks::{counts_here, outermost};
    use super::super::ledger::{Ledger, Totals};
    use super::super::native_sites;
    use super::super::prior;

    /// Switched on for the run (the redirections were made).
    static ENABLED: AtomicBool = AtomicBool::new(false);
    /// A window is open: the functions below count.
    static ACTIVE: AtomicBool = AtomicBool::new(false);
    /// Slots that could not be written, ever.
    static FAILED: AtomicUsize = AtomicUsize::new(0);
    /// The loader's counters at the last scan.
    static SEEN: Mutex<(u64, u64)> = Mutex::new((0, 0));

    fn ledger() -> &'static Ledger {
        static LEDGER: OnceLock<Ledger> = OnceLock::new();
        LEDGER.get_or_init(Ledger::default)
    }

    extern "C" {
        fn valloc(size: usize) -> *mut c_void;
        fn pvalloc(size: usize) -> *mut c_void;
    }

    /// Whether an allocation by this call counts, holding the thread's outermost-call flag
    /// while it lives.
    #[inline(always)]
    fn counting() -> Option<impl Sized> {
        if !ACTIVE.load(Acquire) {
            return None;
        }
        let outer = outermost()?;
        counts_here().then_some(outer)
    }

    #[inline(always)]
    fn allocated(p: *mut c_void, size: usize) {
        if !p.is_null() {
            ledger().allocated(p as usize, size as u64);
            if native_sites::on() {
                native_sites::record(p as usize, size as u64);
            }
        }
    }

    extern "C" fn malloc(size: usize) -> *mut c_void {
        let counts = counting();
        // SAFETY: the C allocator, reached through our own (unredirected) import.
        let p = unsafe { libc::malloc(size) };
        if counts.is_some() {
            allocated(p, size);
        }
        p
    }

    extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
        let counts = counting();
        // SAFETY: as above.
        let p = unsafe { libc::calloc(n, size) };
        if counts.is_some() {
            allocated(p, n.saturating_mul(size));
        }
        p
    }

    /// `realloc` and `reallocarray`: `size` is None when `n × each` overflows (the call fails
    /// and leaves the block as it was).
    #[inline(always)]
    fn resize(
        ptr: *mut c_void,
        size: Option<usize>,
        call: impl FnOnce() -> *mut c_void,
    ) -> *mut c_void {
        if !ACTIVE.load(Acquire) {
            return call();
        }
        let Some(_outer) = outermost() else {
            return call();
        };
        let old = if ptr.is_null() {
            None
        } else {
            ledger().released(ptr as usize)
        };
        // A block from before the window: its growth is charged, against its usable size
        // (`Ledger::reallocated`, the Python ledger's rule); a block counted inside the window
        // passes on the credit it carries.
        let credit = match old {
            Some(old) => old.credit,
            None if !ptr.is_null() => prior::usable(ptr),
            None => 0,
        };
        let p = call();
        let moved = !p.is_null() || size == Some(0);
        if p.is_null() {
            // Failed (an overflowing reallocarray too): the block is untouched. Or
            // realloc(ptr, 0), which freed it.
            if let (Some(old), false) = (old, size == Some(0)) {
                ledger().restore(ptr as usize, old);
            }
        } else if counts_here() {
            let size = size.unwrap_or(0) as u64;
            ledger().reallocated(p as usize, size, credit);
            if native_sites::on() {
                if old.is_some() {
                    native_sites::released(ptr as usize);
                }
                native_sites::record(p as usize, size - credit.min(size));
            }
            return p;
        }
        if moved && old.is_some() && native_sites::on() {
            native_sites::released(ptr as usize);
        }
        p
    }

    extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
        // SAFETY: as above.
        resize(ptr, Some(size), || unsafe { libc::realloc(ptr, size) })
    }

    extern "C" fn reallocarray(ptr: *mut c_void, n: usize, each: usize) -> *mut c_void {
        // SAFETY: as above.
        resize(ptr, n.checked_mul(each), || unsafe {
            libc::reallocarray(ptr, n, each)
        })
    }

    extern "C" fn free(ptr: *mut c_void) {
        // Every free of a counted block removes it, before the address can be reused.
        if ACTIVE.load(Acquire)
            && !ptr.is_null()
            && ledger().released(ptr as usize).is_some()
            && native_sites::on()
        {
            native_sites::released(ptr as usize);
        }
        // SAFETY: as above.
        unsafe { libc::free(ptr) }
    }

    extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
        let counts = counting();
        // SAFETY: as above; `out` is the caller's.
        let r = unsafe { libc::posix_memalign(out, align, size) };
        if counts.is_some() && r == 0 {
            // SAFETY: written by posix_memalign on success.
            allocated(unsafe { *out }, size);
        }
        r
    }

    extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
        let counts = counting();
        // SAFETY: as above.
        let p = unsafe { libc::aligned_alloc(align, size) };
        if counts.is_some() {
            allocated(p, size);
        }
        p
    }

    extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
        let counts = counting();
        // SAFETY: as above.
        let p = unsafe { libc::memalign(align, size) };
        if counts.is_some() {
            allocated(p, size);
        }
        p
    }

    extern "C" fn valloc_hook(size: usize) -> *mut c_void {
        let counts = counting();
        // SAFETY: as above.
        let p = unsafe { valloc(size) };
        if counts.is_some() {
            allocated(p, size);
        }
        p
    }

    extern "C" fn pvalloc_hook(size: usize) -> *mut c_void {
        let counts = counting();
        // SAFETY: as above.
        let p = unsafe { pvalloc(size) };
        if counts.is_some() {
            allocated(p, size);
        }
        p
    }

    extern "C" fn strdup(s: *const c_char) -> *mut c_char {
        let counts = counting();
        // SAFETY: `s` is the caller's string; the length is read only when the copy succeeded.
        let p = unsafe { libc::strdup(s) };
        if counts.is_some() && !p.is_null() {
            allocated(p as *mut c_void, unsafe { libc::strlen(p) } + 1);
        }
        p
    }

    extern "C" fn strndup(s: *const c_char, n: usize) -> *mut c_char {
        let counts = counting();
        // SAFETY: as above; the copy is terminated.
        let p = unsafe { libc::strndup(s, n) };
        if counts.is_some() && !p.is_null() {
            allocated(p as *mut c_void, unsafe { libc::strlen(p) } + 1);
        }
        p
    }

    /// An extension releases the GIL (`Py_BEGIN_ALLOW_THREADS`): a diagnosing run keeps the
    /// Python frames of the moment for the allocations made without it (`native_sites`).
    extern "C" fn save_thread() -> *mut pyo3::ffi::PyThreadState {
        if native_sites::on() {
            native_sites::gil_released();
        }
        // SAFETY: the interpreter's own function, called as the extension called it.
        unsafe { pyo3::ffi::PyEval_SaveThread() }
    }

    extern "C" fn restore_thread(state: *mut pyo3::ffi::PyThreadState) {
        // SAFETY: as above.
        unsafe { pyo3::ffi::PyEval_RestoreThread(state) };
        if native_sites::on() {
            native_sites::gil_taken();
        }
    }

    extern "C" fn dlopen(name: *const c_char, flags: c_int) -> *mut c_void {
        // SAFETY: the loader's own function, with the caller's arguments.
        let handle = unsafe { libc::dlopen(name, flags) };
        if !handle.is_null() && ENABLED.load(Acquire) {
            scan();
        }
        handle
    }

    const DLOPEN: &[u8] = b"dlopen";
    const TRACK: &[u8] = b"PyTraceMalloc_Track";

    fn replacements() -> [(&'static [u8], usize); 15] {
        [
            (b"malloc", malloc as *const () as usize),
            (b"calloc", calloc as *const () as usize),
            (b"realloc", realloc as *const () as usize),
            (b"reallocarray", reallocarray as *const () as usize),
            (b"free", free as *const () as usize),
            (b"posix_memalign", posix_memalign as *const () as usize),
            (b"aligned_alloc", aligned_alloc as *const () as usize),
            (b"memalign", memalign as *const () as usize),
            (b"valloc", valloc_hook as *const () as usize),
            (b"pvalloc", pvalloc_hook as *const () as usize),
            (b"strdup", strdup as *const () as usize),
            (b"strndup", strndup as *const () as usize),
            (b"PyEval_SaveThread", save_thread as *const () as usize),
            (
                b"PyEval_RestoreThread",
                restore_thread as *const () as usize,
            ),
            (DLOPEN, dlopen as *const () as usize),
        ]
    }

    /// The C runtime's objects, by file name.
    pub(crate) const RUNTIME: [&[u8]; 10] = [
        b"libc.so",
        b"ld-linux",
        b"ld64.so",
        b"libm.so",
        b"libpthread.so",
        b"libdl.so",
        b"librt.so",
        b"libutil.so",
        b"linux-vdso",
        b"linux-gate",
    ];

    /// What is redirected in `object`: the malloc family (an extension or a library), `dlopen`
    /// (the interpreter), or nothing.
    #[derive(PartialEq, Eq)]
    enum Scope {
        Allocator,
        Dlopen,
        Nothing,
    }

    fn scope(object: &Object<'_>) -> Scope {
        let ours = malloc as *const () as usize;
        let file = object.file_name();
        if object.contains(ours)
            || object.contains(libc::malloc as *const () as usize)
            || RUNTIME.iter().any(|prefix| file.starts_with(prefix))
        {
            return Scope::Nothing;
        }
        if object.first || object.contains(pyo3::ffi::PyMem_RawMalloc as *const () as usize) {
            return Scope::Dlopen;
        }
        if object.imports.iter().any(|i| i.name == TRACK && !i.defined) {
            return Scope::Nothing;
        }
        Scope::Allocator
    }

    /// Redirect the objects loaded since the last scan.
    fn scan() {
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        let counts = load_counts();
        if counts == *seen {
            return;
        }
        let replacements = replacements();
        let mut wanted: Vec<&[u8]> = replacements.iter().map(|(n, _)| *n).collect();
        wanted.push(TRACK);
        let mut failed = 0;
        each_object(&wanted, &mut |object| {
            let scope = scope(object);
            if scope == Scope::Nothing {
                return;
            }
            for import in &object.imports {
                // A symbol the object defines itself is its own function (its own allocator).
                if import.defined {
                    continue;
                }
                let Some(&(name, value)) = replacements.iter().find(|(n, _)| *n == import.name)
                else {
                    continue;
                };
                // dlopen only in the interpreter (see the module docs), the rest only elsewhere.
                if (scope == Scope::Dlopen) != (name == DLOPEN) {
                    continue;
                }
                // SAFETY: a relocation slot of this object against the function of the same
                // name and signature as `value`.
                if !unsafe { object.patch(import.slot, value) } {
                    failed += 1;
                }
            }
        });
        *seen = counts;
        FAILED.fetch_add(failed, Relaxed);
    }

    /// The child of a `fork` in a window stops counting (see `hooks.rs`).
    extern "C" fn stop_in_child() {
        ACTIVE.store(false, Release);
    }

    pub fn enable() -> Result<(), String> {
        if !ENABLED.swap(true, AcqRel) {
            // SAFETY: registering a handler that only stores an atomic.
            unsafe { libc::pthread_atfork(None, None, Some(stop_in_child)) };
        }
        scan();
        failure().map_or(Ok(()), Err)
    }

    pub fn enabled() -> bool {
        ENABLED.load(Acquire)
    }

    fn failure() -> Option<String> {
        match FAILED.load(Relaxed) {
            0 => None,
            n => Some(format!(
                "{n} imports of the malloc family could not be redirected (mprotect refused): native memory is not counted"
            )),
        }
    }

    /// Start counting; returns why the native figures cannot be trusted, if they cannot.
    pub fn open() -> Option<String> {
        scan();
        ledger().reset();
        ACTIVE.store(true, Release);
        failure()
    }

    pub fn close() -> Totals {
        ACTIVE.store(false, Release);
        ledger().totals()
    }
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64", target_env = "gnu")))]
mod imp {
    use super::super::ledger::Totals;

    pub fn enable() -> Result<(), String> {
        Err(format!(
            "native memory is counted on Linux (64-bit, glibc) only; not on {}",
            std::env::consts::OS
        ))
    }

    pub fn enabled() -> bool {
        false
    }

    pub fn open() -> Option<String> {
        None
    }

    pub fn close() -> Totals {
        Totals::default()
    }
}

#[cfg(all(target_os = "linux", target_pointer_width = "64", target_env = "gnu"))]
pub(crate) use imp::RUNTIME;
pub use imp::{close, enable, enabled, open};
