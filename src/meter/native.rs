//! Native memory: the malloc family called by extension modules and the libraries they load.
//!
//! Opt-in (`--memcheck-native`). When switched on, the imported entries (GOT slots, and data
//! words that hold a function pointer) of `malloc`, `calloc`, `realloc`, `reallocarray`,
//! `free`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`, `strdup`,
//! `strndup`, `mmap`, `mmap64`, `munmap` and `mremap` are redirected to the functions below in
//! every loaded object but these:
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
//! Anonymous mappings (`mmap` with MAP_ANONYMOUS, private or shared; `mmap64` is the name an
//! extension built with Python.h imports, its 64-bit file offsets asked for) count too, in the
//! same ledger under a key space of their own, by their length rounded up to whole pages (what
//! the kernel maps). A range map (`MAPS`) knows the counted pages: a `munmap` of part of a
//! mapping, or across several, leaves what is left of each counted; a mapping made over counted
//! pages (MAP_FIXED, a file's too) replaces them; `mremap` of a counted mapping counts it at its
//! new place and size, the old pages gone (as `realloc`). File mappings never count, nor a
//! mapping from before the window (an `mremap` of it included: whether it was anonymous is not
//! known). The C runtime's own mappings (glibc's `malloc` maps big blocks itself) are not seen,
//! as libc is not redirected: such a block counts once, by its `malloc`. Mapping calls take a
//! lock and are counted only at a thread's outermost allocator call, as the rest.
//!
//! Hazards: the redirections stay in place for the rest of the process once made (a thread may
//! be calling through a slot; a function pointer may have been copied), so every function here
//! forwards at once when no window is open: one atomic load. A failed redirection (mprotect
//! refused) is remembered: every later window's native figures are reported as disturbed.

#[cfg(all(target_os = "linux", target_pointer_width = "64", target_env = "gnu"))]
mod imp {
    use std::collections::BTreeMap;
    use std::ffi::{c_char, c_int, c_void};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
    use std::sync::{Mutex, MutexGuard, OnceLock};

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

    /// Anonymous mappings counted in the window: start → end, page-aligned, never overlapping.
    /// Each is an entry of the ledger's `MAPPED` key space, keyed by its start. Taken only in a
    /// thread's outermost allocator call, and held across the system call, so that no other
    /// thread maps the same addresses between the call and its bookkeeping. Our own calls made
    /// while it is held (the diagnosis's unwinder) are not outermost: they never wait on it.
    static MAPS: Mutex<BTreeMap<usize, usize>> = Mutex::new(BTreeMap::new());
    /// The ledger's key space for mappings, apart from the blocks of the malloc family.
    const MAPPED: u32 = u32::from_be_bytes(*b"mmap");

    fn maps() -> MutexGuard<'static, BTreeMap<usize, usize>> {
        MAPS.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `len` rounded up to whole pages, as the kernel maps and unmaps it.
    fn pages(len: usize) -> usize {
        static PAGE: OnceLock<usize> = OnceLock::new();
        // SAFETY: sysconf has no preconditions.
        let page = *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as usize,
            _ => 4096,
        });
        len.div_ceil(page).saturating_mul(page)
    }

    /// The counted pages of [start, end) are gone (unmapped, replaced, moved): a mapping wholly
    /// inside stops counting, one across an edge keeps counting what is left of it.
    fn forget(maps: &mut BTreeMap<usize, usize>, start: usize, end: usize) {
        // Ranges never overlap, so their ends rise with their starts: those that begin before
        // `end` and end after `start`, newest start first.
        let overlapping: Vec<(usize, usize)> = maps
            .range(..end)
            .rev()
            .take_while(|&(_, &e)| e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            maps.remove(&s);
            ledger().untrack(MAPPED, s);
            let mut pieces = [(0, 0); 2];
            let mut n = 0;
            for (from, to) in [(s, start), (end, e)] {
                if from < to {
                    maps.insert(from, to);
                    ledger().track(MAPPED, from, (to - from) as u64);
                    pieces[n] = (from, (to - from) as u64);
                    n += 1;
                }
            }
            if native_sites::on() {
                native_sites::carved(s, &pieces[..n]);
            }
        }
    }

    /// A new counted mapping.
    fn mapped(maps: &mut BTreeMap<usize, usize>, start: usize, len: usize) {
        maps.insert(start, start + len);
        ledger().track(MAPPED, start, len as u64);
        if native_sites::on() {
            native_sites::record(start, len as u64);
        }
    }

    /// `mmap` and `mmap64` (one function on 64-bit glibc): an anonymous mapping (private or
    /// shared) counts its length in whole pages; a file's does not. Whatever a mapping replaces
    /// (MAP_FIXED) is gone.
    extern "C" fn mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        offset: libc::off_t,
    ) -> *mut c_void {
        // SAFETY: the kernel's call, with the caller's arguments.
        let call = || unsafe { libc::mmap(addr, len, prot, flags, fd, offset) };
        mapping(call, |maps, p| {
            if p != libc::MAP_FAILED {
                let (start, len) = (p as usize, pages(len));
                forget(maps, start, start.saturating_add(len));
                if flags & libc::MAP_ANONYMOUS != 0 && counts_here() {
                    mapped(maps, start, len);
                }
            }
        })
    }

    /// A mapping call: straight through outside a window or beneath another allocator call;
    /// else made under the range map's lock, which `account` then updates with its result.
    #[inline(always)]
    fn mapping<T: Copy>(
        call: impl FnOnce() -> T,
        account: impl FnOnce(&mut BTreeMap<usize, usize>, T),
    ) -> T {
        if !ACTIVE.load(Acquire) {
            return call();
        }
        let Some(_outer) = outermost() else {
            return call();
        };
        let mut maps = maps();
        let result = call();
        account(&mut maps, result);
        result
    }

    /// Unmapped pages stop counting, whichever thread unmaps them, as a free.
    extern "C" fn munmap(addr: *mut c_void, len: usize) -> c_int {
        // SAFETY: as above.
        let call = || unsafe { libc::munmap(addr, len) };
        mapping(call, |maps, r| {
            if r == 0 {
                let start = addr as usize;
                forget(maps, start, start.saturating_add(pages(len)));
            }
        })
    }

    /// `mremap` is variadic in C (`new_address` follows `flags` only with MREMAP_FIXED). On the
    /// 64-bit Linux ABIs a variadic pointer argument travels where a fifth named one does, so
    /// this reads it as one and passes it on: the kernel reads it only with MREMAP_FIXED.
    ///
    /// A counted mapping keeps counting at its new place and size (its old pages are gone, as by
    /// `realloc`); a mapping the window did not count (from before it, or a file's) still does
    /// not: whether it was anonymous is not known.
    extern "C" fn mremap(
        old: *mut c_void,
        old_len: usize,
        new_len: usize,
        flags: c_int,
        new_address: *mut c_void,
    ) -> *mut c_void {
        // SAFETY: as above.
        let call = || unsafe { libc::mremap(old, old_len, new_len, flags, new_address) };
        mapping(call, |maps, p| {
            if p == libc::MAP_FAILED {
                return;
            }
            let from = old as usize;
            let counted = maps
                .range(..=from)
                .next_back()
                .is_some_and(|(_, &e)| e > from);
            // A zero old length duplicates a shared mapping, and MREMAP_DONTUNMAP moves the
            // pages but leaves the old range mapped (empty, to fault in anew): both keep it.
            if old_len > 0 && flags & libc::MREMAP_DONTUNMAP == 0 {
                forget(maps, from, from.saturating_add(pages(old_len)));
            }
            let (start, len) = (p as usize, pages(new_len));
            forget(maps, start, start.saturating_add(len));
            if counted && counts_here() {
                mapped(maps, start, len);
            }
        })
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

    fn replacements() -> [(&'static [u8], usize); 19] {
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
            (b"mmap", mmap as *const () as usize),
            (b"mmap64", mmap as *const () as usize),
            (b"munmap", munmap as *const () as usize),
            (b"mremap", mremap as *const () as usize),
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
        maps().clear();
        // The python ledger is empty and not counting yet either (it starts after this).
        super::super::ledger::start_combined();
        ACTIVE.store(true, Release);
        failure()
    }

    pub fn close() -> Totals {
        ACTIVE.store(false, Release);
        super::super::ledger::stop_combined();
        ledger().totals()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn unmapping_keeps_what_is_left_of_each_mapping() {
            let mut maps = BTreeMap::new();
            ledger().reset();
            mapped(&mut maps, 0x10000, 0x8000);
            mapped(&mut maps, 0x20000, 0x2000);
            forget(&mut maps, 0x12000, 0x14000); // a hole
            let left = [(0x10000, 0x12000), (0x14000, 0x18000), (0x20000, 0x22000)];
            assert_eq!(maps, BTreeMap::from(left));
            forget(&mut maps, 0x11000, 0x21000); // across all three
            assert_eq!(
                maps,
                BTreeMap::from([(0x10000, 0x11000), (0x21000, 0x22000)])
            );
            let totals = ledger().totals();
            assert_eq!((totals.current, totals.peak), (0x2000, 0xa000));
            forget(&mut maps, 0x30000, 0x40000); // nothing counted there
            forget(&mut maps, 0, usize::MAX);
            assert!(maps.is_empty());
            assert_eq!(ledger().totals().current, 0);
            ledger().reset();
        }

        #[test]
        fn lengths_round_up_to_whole_pages() {
            let page = pages(1);
            assert!(page >= 4096 && page.is_power_of_two());
            assert_eq!(
                (pages(0), pages(page), pages(page + 1)),
                (0, page, 2 * page)
            );
            assert_eq!(pages(usize::MAX), usize::MAX); // saturates: no mapping is that long
        }
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
