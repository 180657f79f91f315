//! The size of a block allocated before the window, asked for when the window reallocates it.
//!
//! The ledger only knows the blocks allocated inside the window. When a test grows a container
//! that existed before it (`REG.append(x)` on a module-level list), the allocator reallocates a
//! block the window never saw; counting the new block in full (tracemalloc's rule) charges the
//! test with the whole buffer, and with it only when the growth happens to fall in this test. We
//! charge the growth instead, which needs the old block's size. The allocators know it:
//! - under the debug hooks (`-X dev`, `PYTHONMALLOC=*_debug`), their header holds the requested
//!   size, exact;
//! - under the C library's malloc, `malloc_usable_size` gives the usable size (the requested size
//!   rounded up to the chunk, a few bytes more; up to a page more for blocks of mmap's size).
//!   pymalloc hands blocks over 512 bytes, the ones that matter, to `PyMem_RawRealloc`, where
//!   our RAW hook sees the same pointer beneath the outer call; a pymalloc pool block has no
//!   header we may read, so its size stays unknown and the new block counts in full, as before.
//!
//! Anything else (another allocator, a free-threaded build) answers 0: the old rule.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

use super::hooks::RAW;

/// How the sizes of blocks from before the window can be read in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Oracle {
    Unknown = 0,
    /// Every domain's blocks carry the debug hooks' header.
    Debug = 1,
    /// The RAW domain is the C library's malloc.
    Malloc = 2,
}

static ORACLE: AtomicU8 = AtomicU8::new(Oracle::Unknown as u8);

fn oracle() -> Oracle {
    match ORACLE.load(Relaxed) {
        1 => Oracle::Debug,
        2 => Oracle::Malloc,
        _ => Oracle::Unknown,
    }
}

thread_local! {
    /// The old block an outer realloc wants the size of, and the size found beneath it.
    static WANTED: Cell<usize> = const { Cell::new(0) };
    static FOUND: Cell<u64> = const { Cell::new(0) };
}

const SST: usize = std::mem::size_of::<usize>();
/// The API id the debug hooks write in each block's header, by our domain index (RAW, MEM, OBJ).
const DEBUG_API_ID: [u8; 3] = [b'r', b'm', b'o'];
const FORBIDDEN_BYTE: u8 = 0xFD;

/// The requested size in the debug hooks' header before `ptr`, when the header is theirs.
///
/// # Safety
/// The `2 * SST` bytes before `ptr` must be readable.
unsafe fn debug_size(ptr: *const c_void, domain: usize) -> Option<u64> {
    let head = (ptr as *const u8).sub(2 * SST);
    // The hooks write it big-endian, to be read in a memory dump.
    let nbytes = usize::from_be((head as *const usize).read_unaligned());
    let id = *head.add(SST);
    let pad = std::slice::from_raw_parts(head.add(SST + 1), SST - 1);
    (id == DEBUG_API_ID[domain] && pad.iter().all(|b| *b == FORBIDDEN_BYTE))
        .then_some(nbytes as u64)
}

/// The usable size of a live block of the C library's malloc.
#[cfg(target_os = "linux")]
pub(crate) fn usable(ptr: *mut c_void) -> u64 {
    // SAFETY: called only with live blocks of the C library's malloc (Oracle::Malloc, or the
    // native meter's redirected calls).
    unsafe { libc::malloc_usable_size(ptr) as u64 }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn usable(_ptr: *mut c_void) -> u64 {
    0
}

/// Decide the oracle once, from a block of the RAW domain's original allocator: a debug header
/// in front of it, or a malloc chunk of plausible usable size under an allocator setting that
/// makes RAW the C library's malloc.
pub(crate) fn probe(malloc: impl Fn(usize) -> *mut c_void, free: impl Fn(*mut c_void)) {
    const ASKED: usize = 40;
    let p = malloc(ASKED);
    if p.is_null() {
        return;
    }
    // Reading before the block only within its own page: always mapped.
    let same_page = p as usize % 4096 >= 2 * SST;
    // SAFETY: the bytes read are on p's page, which is mapped.
    let oracle = if same_page && unsafe { debug_size(p, RAW) } == Some(ASKED as u64) {
        Oracle::Debug
    } else if raw_is_malloc() && (ASKED as u64..ASKED as u64 + 32).contains(&usable(p)) {
        Oracle::Malloc
    } else {
        Oracle::Unknown
    };
    free(p);
    ORACLE.store(oracle as u8, Relaxed);
}

/// Whether the interpreter's RAW domain calls the C library's malloc: not under mimalloc (its
/// own setting or a free-threaded build), and only on Linux, where we read its chunk sizes.
fn raw_is_malloc() -> bool {
    // SAFETY: Py_GetVersion returns a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(pyo3::ffi::Py_GetVersion()) };
    if version.to_string_lossy().contains("free-threading") || !cfg!(target_os = "linux") {
        return false;
    }
    matches!(
        std::env::var("PYTHONMALLOC").as_deref(),
        Err(_) | Ok("") | Ok("pymalloc") | Ok("malloc")
    )
}

/// An outer realloc of a block the window never saw, asking for the block's size.
pub(crate) struct Asking {
    now: Option<u64>,
}

impl Asking {
    /// Read the size now where the pointer itself tells, or ask the RAW hook beneath.
    #[inline]
    pub(crate) fn new(domain: usize, ptr: *mut c_void) -> Asking {
        let now = match oracle() {
            // SAFETY: under the debug hooks every block of every domain has their header.
            Oracle::Debug => Some(unsafe { debug_size(ptr, domain) }.unwrap_or(0)),
            Oracle::Malloc if domain == RAW => Some(usable(ptr)),
            Oracle::Malloc => {
                let _ = WANTED.try_with(|w| w.set(ptr as usize));
                let _ = FOUND.try_with(|f| f.set(0));
                None
            }
            Oracle::Unknown => Some(0),
        };
        Asking { now }
    }

    /// The old block's size, 0 when it stayed unknown.
    #[inline]
    pub(crate) fn answer(self) -> u64 {
        self.now.unwrap_or_else(|| {
            let _ = WANTED.try_with(|w| w.set(0));
            FOUND.try_with(|f| f.get()).unwrap_or(0)
        })
    }
}

/// Called by the RAW realloc hook beneath an outer call: pymalloc handing the block on to the C
/// library, so `ptr` is a malloc chunk.
#[inline]
pub(crate) fn seen_beneath(ptr: *mut c_void) {
    if ptr.is_null() || WANTED.try_with(|w| w.get()) != Ok(ptr as usize) {
        return;
    }
    let size = usable(ptr);
    let _ = FOUND.try_with(|f| f.set(size));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_debug_header_is_read_and_a_foreign_one_is_not() {
        let mut block = [0u8; 2 * SST + 8];
        block[..SST].copy_from_slice(&1234usize.to_be_bytes());
        block[SST] = b'm';
        block[SST + 1..2 * SST].fill(FORBIDDEN_BYTE);
        let ptr = block[2 * SST..].as_ptr() as *const c_void;
        // SAFETY: the header lies inside `block`.
        unsafe {
            assert_eq!(debug_size(ptr, 1), Some(1234));
            assert_eq!(debug_size(ptr, 0), None, "another domain's id");
        }
        block[2 * SST - 1] = 0;
        let ptr = block[2 * SST..].as_ptr() as *const c_void;
        // SAFETY: as above.
        assert_eq!(
            unsafe { debug_size(ptr, 1) },
            None,
            "a pad byte that is not forbidden"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_raw_hook_beneath_answers_only_for_the_block_asked_about() {
        // SAFETY: plain libc allocations, freed below.
        let (a, b) = unsafe { (libc::malloc(1000), libc::malloc(3000)) };
        ORACLE.store(Oracle::Malloc as u8, Relaxed);
        let asking = Asking::new(1, a);
        seen_beneath(b);
        seen_beneath(a);
        let size = asking.answer();
        assert!((1000..1000 + 32).contains(&size), "{size}");
        // once answered, nothing is wanted any more
        let asking = Asking::new(1, b);
        assert_eq!(asking.answer(), 0, "never seen beneath");
        seen_beneath(a);
        assert_eq!(WANTED.with(|w| w.get()), 0);
        ORACLE.store(Oracle::Unknown as u8, Relaxed);
        // SAFETY: allocated above.
        unsafe {
            libc::free(a);
            libc::free(b);
        }
    }
}
