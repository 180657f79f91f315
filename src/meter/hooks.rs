//! CPython allocator hooks over the RAW, MEM and OBJ domains, feeding the `Ledger`.
//!
//! Hazards, and how they are met:
//! - The RAW domain is called without the GIL, from any thread, even while we swap allocators.
//!   `PyMem_SetAllocator` copies a struct of five words, so another thread may read our function
//!   with the old context. The hooks therefore ignore `ctx` and forward to the originals kept in
//!   statics, and they keep working after they are removed (a thread may still hold a pointer).
//! - pymalloc serves large requests by calling `PyMem_RawMalloc`, so one block passes through two
//!   of our hooks. The raw hook counts it; the outer hook counts only blocks not yet in the table
//!   (`Ledger::allocated_outer`). A block is dropped from the table *before* it is freed, so no
//!   other thread can reuse the address while we still account for it. No thread-local state.
//! - A test may install its own allocator (tracemalloc.start()). When our hooks are not the
//!   installed ones at the end of a window, we leave whatever is installed in place and report the
//!   measurement as disturbed, rather than unhooking someone else's allocator.

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

use pyo3::ffi::{
    PyMemAllocatorDomain, PyMemAllocatorDomain::*, PyMemAllocatorEx, PyMem_GetAllocator,
    PyMem_SetAllocator,
};

use super::ledger::Ledger;

/// Whether hooks count. Checked first in every hook so an idle hook costs one load.
static ACTIVE: AtomicBool = AtomicBool::new(false);

pub(crate) fn ledger() -> &'static Ledger {
    static LEDGER: OnceLock<Ledger> = OnceLock::new();
    LEDGER.get_or_init(Ledger::default)
}

#[inline(always)]
pub(crate) fn active() -> bool {
    ACTIVE.load(Relaxed)
}

/// Threads that were already running when the window opened (pytest-xdist's execnet I/O thread,
/// a server started by a fixture): their allocations are not the test's. Up to this many are
/// told apart; frees are always honoured, whoever makes them.
const MAX_EXCLUDED: usize = 16;
static EXCLUDED: [AtomicUsize; MAX_EXCLUDED] = [const { AtomicUsize::new(0) }; MAX_EXCLUDED];
static EXCLUDED_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Whether an allocation by the calling thread counts. One load when no other thread ran
/// before the window, the common case; `pthread_self` reads a register, no TLS lookup.
#[inline(always)]
pub(crate) fn counts_here() -> bool {
    let n = EXCLUDED_COUNT.load(Relaxed);
    if n == 0 {
        return true;
    }
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() } as usize;
    !EXCLUDED[..n].iter().any(|t| t.load(Relaxed) == me)
}

/// Set the threads (pthread ids, as `threading.get_ident()` gives them) to leave out.
pub(crate) fn exclude_threads(idents: &[usize]) {
    let n = idents.len().min(MAX_EXCLUDED);
    for (slot, ident) in EXCLUDED.iter().zip(idents) {
        slot.store(*ident, Relaxed);
    }
    EXCLUDED_COUNT.store(n, Relaxed);
}

struct Originals(UnsafeCell<[PyMemAllocatorEx; 3]>);
// SAFETY: written only in `install` (GIL held, our hooks not installed); read by the hooks.
unsafe impl Sync for Originals {}

const EMPTY: PyMemAllocatorEx = PyMemAllocatorEx {
    ctx: std::ptr::null_mut(),
    malloc: None,
    calloc: None,
    realloc: None,
    free: None,
};
static ORIGINALS: Originals = Originals(UnsafeCell::new([EMPTY; 3]));

#[inline(always)]
fn original(domain: usize) -> &'static PyMemAllocatorEx {
    // SAFETY: see `Originals`.
    unsafe { &(*ORIGINALS.0.get())[domain] }
}

const RAW: usize = 0;
const MEM: usize = 1;
const OBJ: usize = 2;

macro_rules! hooks {
    ($malloc:ident, $calloc:ident, $realloc:ident, $free:ident, $domain:expr, $record:ident) => {
        extern "C" fn $malloc(_ctx: *mut c_void, size: usize) -> *mut c_void {
            let o = original($domain);
            // SAFETY: forwarding to the allocator that was installed before us.
            let p = (o.malloc.expect("allocator"))(o.ctx, size);
            if active() && !p.is_null() && counts_here() {
                ledger().$record(p as usize, size as u64);
            }
            p
        }

        extern "C" fn $calloc(_ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
            let o = original($domain);
            let p = (o.calloc.expect("allocator"))(o.ctx, nelem, elsize);
            if active() && !p.is_null() && counts_here() {
                ledger().$record(p as usize, nelem.saturating_mul(elsize) as u64);
            }
            p
        }

        extern "C" fn $realloc(_ctx: *mut c_void, ptr: *mut c_void, size: usize) -> *mut c_void {
            let o = original($domain);
            if !active() {
                return (o.realloc.expect("allocator"))(o.ctx, ptr, size);
            }
            // tracemalloc's rule: the old block stops counting, the new one counts in full.
            let old = if ptr.is_null() {
                None
            } else {
                ledger().released(ptr as usize)
            };
            let p = (o.realloc.expect("allocator"))(o.ctx, ptr, size);
            if p.is_null() {
                if let Some(old) = old {
                    ledger().restore(ptr as usize, old);
                }
            } else if counts_here() {
                ledger().$record(p as usize, size as u64);
            }
            p
        }

        extern "C" fn $free(_ctx: *mut c_void, ptr: *mut c_void) {
            let o = original($domain);
            if active() && !ptr.is_null() {
                ledger().released(ptr as usize);
            }
            (o.free.expect("allocator"))(o.ctx, ptr)
        }
    };
}

hooks!(
    raw_malloc,
    raw_calloc,
    raw_realloc,
    raw_free,
    RAW,
    allocated
);
hooks!(
    mem_malloc,
    mem_calloc,
    mem_realloc,
    mem_free,
    MEM,
    allocated_outer
);
hooks!(
    obj_malloc,
    obj_calloc,
    obj_realloc,
    obj_free,
    OBJ,
    allocated_outer
);

type Malloc = extern "C" fn(*mut c_void, usize) -> *mut c_void;
type Calloc = extern "C" fn(*mut c_void, usize, usize) -> *mut c_void;
type Realloc = extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void;
type Free = extern "C" fn(*mut c_void, *mut c_void);

fn ours(domain: usize) -> PyMemAllocatorEx {
    let (m, c, r, f): (Malloc, Calloc, Realloc, Free) = match domain {
        RAW => (raw_malloc, raw_calloc, raw_realloc, raw_free),
        MEM => (mem_malloc, mem_calloc, mem_realloc, mem_free),
        _ => (obj_malloc, obj_calloc, obj_realloc, obj_free),
    };
    PyMemAllocatorEx {
        ctx: std::ptr::null_mut(),
        malloc: Some(m),
        calloc: Some(c),
        realloc: Some(r),
        free: Some(f),
    }
}

/// Whether `a` is our hook for domain `i` (compared by address: the same function).
fn is_ours(a: &PyMemAllocatorEx, i: usize) -> bool {
    let address = |a: &PyMemAllocatorEx| a.malloc.map(|f| f as *const () as usize);
    address(a) == address(&ours(i))
}

const DOMAINS: [(usize, PyMemAllocatorDomain); 3] = [
    (RAW, PYMEM_DOMAIN_RAW),
    (MEM, PYMEM_DOMAIN_MEM),
    (OBJ, PYMEM_DOMAIN_OBJ),
];

fn current(domain: PyMemAllocatorDomain) -> PyMemAllocatorEx {
    let mut a = EMPTY;
    // SAFETY: GIL held by the caller; PyMem_GetAllocator only copies a struct.
    unsafe { PyMem_GetAllocator(domain, &mut a) };
    a
}

/// Per domain: the allocator someone installed over ours during a window (tracemalloc.start()
/// left running), which still forwards to our hooks. Zero when our hooks are on top or out.
static FOREIGN_ON_TOP: [AtomicUsize; 3] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];

fn malloc_address(a: &PyMemAllocatorEx) -> usize {
    a.malloc.map_or(0, |f| f as *const () as usize)
}

/// Start counting. Must be called with the GIL held.
pub(crate) fn install() {
    ledger().reset();
    let mut install = [true; 3];
    for (i, domain) in DOMAINS {
        let now = current(domain);
        if is_ours(&now, i) {
            continue;
        }
        if malloc_address(&now) == FOREIGN_ON_TOP[i].load(Relaxed) {
            // Our hooks are still in the chain below that allocator: counting through it is
            // right, and taking it as our "original" would make the chain a loop.
            install[i] = false;
            continue;
        }
        FOREIGN_ON_TOP[i].store(0, Relaxed);
        // SAFETY: GIL held and our hooks are not installed, so no hook reads ORIGINALS for
        // this domain through the allocator now (stale readers see the same value).
        unsafe { (*ORIGINALS.0.get())[i] = now };
    }
    ACTIVE.store(true, Relaxed);
    for (i, domain) in DOMAINS {
        if install[i] {
            let mut hook = ours(i);
            // SAFETY: GIL held.
            unsafe { PyMem_SetAllocator(domain, &mut hook) };
        }
    }
}

/// Stop counting and remove the hooks. Returns false when something else replaced our hooks
/// during the window: its allocator is left in place (it forwards to ours, which forward on).
pub(crate) fn uninstall() -> bool {
    ACTIVE.store(false, Relaxed);
    let mut intact = true;
    for (i, domain) in DOMAINS {
        let now = current(domain);
        if is_ours(&now, i) {
            let mut original = *original(i);
            // SAFETY: GIL held.
            unsafe { PyMem_SetAllocator(domain, &mut original) };
            FOREIGN_ON_TOP[i].store(0, Relaxed);
        } else {
            // Someone installed an allocator during the window (or had one on top of ours
            // from an earlier window): the numbers are not to be trusted this time.
            if FOREIGN_ON_TOP[i].load(Relaxed) != malloc_address(&now) {
                intact = false;
            }
            FOREIGN_ON_TOP[i].store(malloc_address(&now), Relaxed);
        }
    }
    intact
}
