//! CPython allocator hooks over the RAW, MEM and OBJ domains, feeding the `Ledger`.
//!
//! tracemalloc's model, which is the reference we are checked against:
//! - A block is a (domain, address) key; the three allocator domains are one key space
//!   (tracemalloc's domain 0), so a block freed through any domain stops counting.
//! - Only the outermost allocator call on a thread counts. pymalloc passing a large request to
//!   `PyMem_RawMalloc`, the debug hooks of `-X dev` wrapping every allocator (and moving the
//!   pointer), tracemalloc's own tables when it sits above us: all happen *inside* one of our
//!   calls, and a thread-local flag (`INSIDE`) makes them invisible, exactly as tracemalloc's
//!   re-entrancy flag does. No address coincidence is relied on.
//!
//! Hazards, and how they are met:
//! - The RAW domain is called without the GIL, from any thread, even while we swap allocators.
//!   `PyMem_SetAllocator` copies a struct of five words, so another thread may read our function
//!   with the old context. The hooks therefore ignore `ctx` and forward to the originals kept in
//!   statics, and they keep working after they are removed (a thread may still hold a pointer).
//! - A block is dropped from the table *before* it is freed, so no other thread can reuse the
//!   address while we still account for it. The allocation path takes no lock on the table, so a
//!   `fork` in a test cannot deadlock the child; the child stops counting (`pthread_atfork`).
//! - A test may install its own allocator (`tracemalloc.start()`) and leave it running. At the
//!   end of that window the numbers are reported as disturbed, and our hooks stay in the chain
//!   below it. Later windows install a second set of hooks *above* it, so its bookkeeping happens
//!   inside our outermost call and is not counted: those tests are measured exactly again.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Acquire, Ordering::Relaxed};
use std::sync::atomic::{AtomicPtr, Ordering::Release};
use std::sync::OnceLock;

use pyo3::ffi::{
    PyMemAllocatorDomain, PyMemAllocatorDomain::*, PyMemAllocatorEx, PyMem_GetAllocator,
    PyMem_SetAllocator,
};

use super::ledger::Ledger;
use super::prior;

/// Whether hooks count. Checked first in every hook so an idle hook costs one load.
static ACTIVE: AtomicBool = AtomicBool::new(false);

pub(crate) fn ledger() -> &'static Ledger {
    static LEDGER: OnceLock<Ledger> = OnceLock::new();
    LEDGER.get_or_init(Ledger::default)
}

#[inline(always)]
pub(crate) fn active() -> bool {
    ACTIVE.load(Acquire)
}

thread_local! {
    /// Set while this thread runs one of our hooks: allocator calls beneath it are parts of the
    /// outer block, not blocks of their own. A `const` Cell has no destructor, so it is usable
    /// until the thread is gone (CPython frees thread states through RAW at thread exit).
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// The outermost hook call on this thread; dropping it leaves.
struct Outermost;

impl Outermost {
    #[inline(always)]
    fn enter() -> Option<Outermost> {
        match INSIDE.try_with(|inside| inside.replace(true)) {
            Ok(false) => Some(Outermost),
            _ => None,
        }
    }
}

impl Drop for Outermost {
    #[inline(always)]
    fn drop(&mut self) {
        let _ = INSIDE.try_with(|inside| inside.set(false));
    }
}

/// The calling thread's id, as `threading.get_ident()` gives it.
#[inline(always)]
fn thread_ident() -> usize {
    #[cfg(unix)]
    {
        // SAFETY: pthread_self has no preconditions; it reads a register, no TLS lookup.
        unsafe { libc::pthread_self() as usize }
    }
    #[cfg(windows)]
    {
        extern "system" {
            fn GetCurrentThreadId() -> u32;
        }
        // SAFETY: no preconditions.
        unsafe { GetCurrentThreadId() as usize }
    }
}

/// Threads that were already running when the window opened (pytest-xdist's execnet I/O thread,
/// a server started by a fixture): their allocations are not the test's. Up to this many are
/// told apart; beyond, the window reports itself disturbed. Frees are always honoured.
pub(crate) const MAX_EXCLUDED: usize = 64;
static EXCLUDED: [AtomicUsize; MAX_EXCLUDED] = [const { AtomicUsize::new(0) }; MAX_EXCLUDED];
static EXCLUDED_COUNT: AtomicUsize = AtomicUsize::new(0);

/// `EXCLUDED_COUNT` when one thread alone counts (`count_only`): pytest-memray's
/// `current_thread_only=True`, measured exactly by a window of its own.
const ONLY: usize = usize::MAX;
static ONLY_THREAD: AtomicUsize = AtomicUsize::new(0);

/// Whether an allocation by the calling thread counts. One load when no other thread ran
/// before the window, the common case.
#[inline(always)]
pub(crate) fn counts_here() -> bool {
    let n = EXCLUDED_COUNT.load(Acquire);
    if n == 0 {
        return true;
    }
    let me = thread_ident();
    if n == ONLY {
        return ONLY_THREAD.load(Relaxed) == me;
    }
    !EXCLUDED[..n].iter().any(|t| t.load(Relaxed) == me)
}

/// Count the calling thread's allocations alone, until the next `exclude_threads`. Frees are
/// honoured from every thread as always: a block this thread allocated and another freed is gone.
pub(crate) fn count_only_this_thread() {
    ONLY_THREAD.store(thread_ident(), Relaxed);
    EXCLUDED_COUNT.store(ONLY, Release);
}

/// Set the threads (as `threading.get_ident()` gives them) to leave out. Err with the number of
/// threads when there are more than can be told apart.
pub(crate) fn exclude_threads(idents: &[usize]) -> Result<(), usize> {
    let n = idents.len().min(MAX_EXCLUDED);
    for (slot, ident) in EXCLUDED.iter().zip(idents) {
        slot.store(*ident, Relaxed);
    }
    EXCLUDED_COUNT.store(n, Release);
    if idents.len() > MAX_EXCLUDED {
        Err(idents.len())
    } else {
        Ok(())
    }
}

/// The allocators our hooks forward to, per domain: `LOWER` for hooks installed on the
/// interpreter's allocators, `UPPER` for hooks installed above a foreign allocator that sits on
/// top of our lower ones. A struct lives in a leaked box so a hook reads it with one atomic load;
/// it is replaced only when the chain changes (a few times a run at most) and never freed, since
/// a thread that loaded it just before may still read it.
fn publish(slot: &AtomicPtr<c_void>, a: PyMemAllocatorEx) {
    let old = slot.load(Acquire) as *const PyMemAllocatorEx;
    // SAFETY: a non-null slot points to a leaked, never-freed struct.
    if !old.is_null() && unsafe { same(&*old, &a) } {
        return;
    }
    slot.store(Box::into_raw(Box::new(a)) as *mut c_void, Release);
}

fn same(a: &PyMemAllocatorEx, b: &PyMemAllocatorEx) -> bool {
    let f = |a: &PyMemAllocatorEx| {
        (
            a.ctx as usize,
            a.malloc.map_or(0, |f| f as *const () as usize),
            a.calloc.map_or(0, |f| f as *const () as usize),
            a.realloc.map_or(0, |f| f as *const () as usize),
            a.free.map_or(0, |f| f as *const () as usize),
        )
    };
    f(a) == f(b)
}

static LOWER: [AtomicPtr<c_void>; 3] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 3];
static UPPER: [AtomicPtr<c_void>; 3] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 3];

#[inline(always)]
fn forward_to(table: &'static [AtomicPtr<c_void>; 3], domain: usize) -> &'static PyMemAllocatorEx {
    // SAFETY: set by `publish` before the hooks using it are installed; never freed.
    unsafe { &*(table[domain].load(Acquire) as *const PyMemAllocatorEx) }
}

pub(crate) const RAW: usize = 0;
const MEM: usize = 1;
const OBJ: usize = 2;

macro_rules! hooks {
    ($table:ident, $domain:expr, $malloc:ident, $calloc:ident, $realloc:ident, $free:ident) => {
        extern "C" fn $malloc(_ctx: *mut c_void, size: usize) -> *mut c_void {
            let o = forward_to(&$table, $domain);
            let malloc = o.malloc.expect("allocator");
            if !active() {
                return malloc(o.ctx, size);
            }
            let Some(_outer) = Outermost::enter() else {
                return malloc(o.ctx, size);
            };
            let p = malloc(o.ctx, size);
            if !p.is_null() && counts_here() {
                ledger().allocated(p as usize, size as u64);
            }
            p
        }

        extern "C" fn $calloc(_ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
            let o = forward_to(&$table, $domain);
            let calloc = o.calloc.expect("allocator");
            if !active() {
                return calloc(o.ctx, nelem, elsize);
            }
            let Some(_outer) = Outermost::enter() else {
                return calloc(o.ctx, nelem, elsize);
            };
            let p = calloc(o.ctx, nelem, elsize);
            if !p.is_null() && counts_here() {
                ledger().allocated(p as usize, nelem.saturating_mul(elsize) as u64);
            }
            p
        }

        extern "C" fn $realloc(_ctx: *mut c_void, ptr: *mut c_void, size: usize) -> *mut c_void {
            let o = forward_to(&$table, $domain);
            let realloc = o.realloc.expect("allocator");
            if !active() {
                return realloc(o.ctx, ptr, size);
            }
            let Some(_outer) = Outermost::enter() else {
                if $domain == RAW {
                    prior::seen_beneath(ptr);
                }
                return realloc(o.ctx, ptr, size);
            };
            // The old block stops counting; the new one counts beyond the bytes that predate
            // the window (`Ledger::reallocated`).
            let old = if ptr.is_null() {
                None
            } else {
                ledger().released(ptr as usize)
            };
            let asked = old.is_none() && !ptr.is_null() && counts_here();
            let prior = asked.then(|| prior::Asking::new($domain, ptr));
            let p = realloc(o.ctx, ptr, size);
            let credit = prior.map_or(0, |a| a.answer());
            if p.is_null() {
                if let Some(old) = old {
                    ledger().restore(ptr as usize, old);
                }
            } else if counts_here() {
                let credit = old.map_or(credit, |old| old.credit);
                ledger().reallocated(p as usize, size as u64, credit);
            }
            p
        }

        extern "C" fn $free(_ctx: *mut c_void, ptr: *mut c_void) {
            let o = forward_to(&$table, $domain);
            // As tracemalloc: every free of a counted key removes it, at any depth (beneath an
            // outer call the inner pointer is never a counted key of another live block).
            if active() && !ptr.is_null() {
                ledger().released(ptr as usize);
            }
            (o.free.expect("allocator"))(o.ctx, ptr)
        }
    };
}

hooks!(LOWER, RAW, raw_malloc, raw_calloc, raw_realloc, raw_free);
hooks!(LOWER, MEM, mem_malloc, mem_calloc, mem_realloc, mem_free);
hooks!(LOWER, OBJ, obj_malloc, obj_calloc, obj_realloc, obj_free);
hooks!(
    UPPER,
    RAW,
    up_raw_malloc,
    up_raw_calloc,
    up_raw_realloc,
    up_raw_free
);
hooks!(
    UPPER,
    MEM,
    up_mem_malloc,
    up_mem_calloc,
    up_mem_realloc,
    up_mem_free
);
hooks!(
    UPPER,
    OBJ,
    up_obj_malloc,
    up_obj_calloc,
    up_obj_realloc,
    up_obj_free
);

type Malloc = extern "C" fn(*mut c_void, usize) -> *mut c_void;
type Calloc = extern "C" fn(*mut c_void, usize, usize) -> *mut c_void;
type Realloc = extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void;
type Free = extern "C" fn(*mut c_void, *mut c_void);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Lower,
    Upper,
}

fn ours(domain: usize, layer: Layer) -> PyMemAllocatorEx {
    let (m, c, r, f): (Malloc, Calloc, Realloc, Free) = match (layer, domain) {
        (Layer::Lower, RAW) => (raw_malloc, raw_calloc, raw_realloc, raw_free),
        (Layer::Lower, MEM) => (mem_malloc, mem_calloc, mem_realloc, mem_free),
        (Layer::Lower, _) => (obj_malloc, obj_calloc, obj_realloc, obj_free),
        (Layer::Upper, RAW) => (up_raw_malloc, up_raw_calloc, up_raw_realloc, up_raw_free),
        (Layer::Upper, MEM) => (up_mem_malloc, up_mem_calloc, up_mem_realloc, up_mem_free),
        (Layer::Upper, _) => (up_obj_malloc, up_obj_calloc, up_obj_realloc, up_obj_free),
    };
    PyMemAllocatorEx {
        ctx: std::ptr::null_mut(),
        malloc: Some(m),
        calloc: Some(c),
        realloc: Some(r),
        free: Some(f),
    }
}

fn malloc_address(a: &PyMemAllocatorEx) -> usize {
    a.malloc.map_or(0, |f| f as *const () as usize)
}

/// Which of our layers `a` is for domain `i`, if any (compared by function address).
fn layer_of(a: &PyMemAllocatorEx, i: usize) -> Option<Layer> {
    let address = malloc_address(a);
    [Layer::Lower, Layer::Upper]
        .into_iter()
        .find(|&layer| address == malloc_address(&ours(i, layer)))
}

const DOMAINS: [(usize, PyMemAllocatorDomain); 3] = [
    (RAW, PYMEM_DOMAIN_RAW),
    (MEM, PYMEM_DOMAIN_MEM),
    (OBJ, PYMEM_DOMAIN_OBJ),
];

fn current(domain: PyMemAllocatorDomain) -> PyMemAllocatorEx {
    let mut a = PyMemAllocatorEx {
        ctx: std::ptr::null_mut(),
        malloc: None,
        calloc: None,
        realloc: None,
        free: None,
    };
    // SAFETY: GIL held by the caller; PyMem_GetAllocator only copies a struct.
    unsafe { PyMem_GetAllocator(domain, &mut a) };
    a
}

/// Per domain: our lower hooks are still in the allocator chain, below an allocator someone
/// installed over them during a window (tracemalloc.start() left running). Then they must never
/// be re-published over a new original: the chain would loop.
static BURIED: [AtomicBool; 3] = [const { AtomicBool::new(false) }; 3];

/// Which layer `install` put on top of each domain, for `uninstall`.
static INSTALLED: [AtomicUsize; 3] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];
const NONE: usize = 0;
const LOWER_ON: usize = 1;
const UPPER_ON: usize = 2;

/// The child of a `fork` inside a window must not keep counting into a ledger it shares with
/// nobody (and whose lock another thread of the parent may have held).
extern "C" fn stop_in_child() {
    ACTIVE.store(false, Release);
}

fn register_fork_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(unix)]
        // SAFETY: registering a handler that only stores an atomic.
        unsafe {
            libc::pthread_atfork(None, None, Some(stop_in_child));
        }
    });
}

/// Once, before our hooks first go in: how this process's allocators tell the size of a block
/// from before the window (`prior`).
fn probe_prior_sizes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let raw = current(PYMEM_DOMAIN_RAW);
        let (Some(malloc), Some(free)) = (raw.malloc, raw.free) else {
            return;
        };
        prior::probe(|n| malloc(raw.ctx, n), |p| free(raw.ctx, p));
    });
}

/// Start counting. Must be called with the GIL held.
pub(crate) fn install() {
    register_fork_handler();
    probe_prior_sizes();
    ledger().reset();
    for (i, domain) in DOMAINS {
        let now = current(domain);
        let layer = match layer_of(&now, i) {
            // Still ours (a foreign allocator above them was removed between windows): count
            // through them as they are.
            Some(_) => {
                INSTALLED[i].store(NONE, Relaxed);
                continue;
            }
            // A foreign allocator above our lower hooks: go above it, so its own bookkeeping
            // happens inside our outermost call.
            None if BURIED[i].load(Relaxed) => {
                publish(&UPPER[i], now);
                Layer::Upper
            }
            None => {
                publish(&LOWER[i], now);
                Layer::Lower
            }
        };
        INSTALLED[i].store(
            match layer {
                Layer::Lower => LOWER_ON,
                Layer::Upper => UPPER_ON,
            },
            Relaxed,
        );
        let mut hook = ours(i, layer);
        // SAFETY: GIL held.
        unsafe { PyMem_SetAllocator(domain, &mut hook) };
    }
    ACTIVE.store(true, Release);
}

/// Stop counting and remove the hooks. Returns false when the allocator chain changed during the
/// window (the test started or stopped tracemalloc, or installed an allocator of its own): a
/// foreign allocator is left in place on top (it forwards to ours, which forward on).
pub(crate) fn uninstall() -> bool {
    ACTIVE.store(false, Release);
    let mut intact = true;
    for (i, domain) in DOMAINS {
        let now = current(domain);
        let installed = INSTALLED[i].swap(NONE, Relaxed);
        match layer_of(&now, i) {
            Some(Layer::Upper) => {
                // Put the foreign allocator back on top, as it was before the window.
                let mut below = *forward_to(&UPPER, i);
                // SAFETY: GIL held.
                unsafe { PyMem_SetAllocator(domain, &mut below) };
            }
            Some(Layer::Lower) => {
                let mut original = *forward_to(&LOWER, i);
                // SAFETY: GIL held.
                unsafe { PyMem_SetAllocator(domain, &mut original) };
                BURIED[i].store(false, Relaxed);
                if installed == UPPER_ON {
                    // The allocator above our lower hooks went away (tracemalloc.stop()).
                    intact = false;
                }
            }
            None => {
                // Someone installed an allocator over ours during the window.
                intact = false;
                if installed == LOWER_ON {
                    BURIED[i].store(true, Relaxed);
                }
            }
        }
    }
    intact
}

/// For the native meter (`native.rs`): enter this thread's outermost allocator call, or None
/// when the thread is already inside one (a native call made beneath a Python allocator call
/// belongs to that call's block, not to native memory). Leaving happens when the value drops.
pub(crate) fn outermost() -> Option<impl Sized> {
    Outermost::enter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_alone_counts_until_the_next_exclusion() {
        count_only_this_thread();
        assert!(counts_here());
        assert!(!std::thread::spawn(counts_here).join().unwrap());
        // The next window's exclusions (none here) make every thread count again.
        exclude_threads(&[]).unwrap();
        assert!(counts_here());
        assert!(std::thread::spawn(counts_here).join().unwrap());
    }
}
