//! The meter's bookkeeping, plain Rust: which blocks were allocated inside the window and how big
//! they are, and the running totals. The allocator hooks (`hooks.rs`) call into one `Ledger`.
//!
//! Sizes live in a page-indexed shadow table, a three-level radix tree over the address space with
//! one `u32` per 16-byte slot (every block the CPython allocators hand out is 16-byte aligned on
//! 64-bit platforms). Looking a block up is three dependent loads and no hashing, and a slot is
//! owned by the live block at its address, so threads never contend on it: the only shared writes
//! are the totals. This was measured 5–7× faster than a hash map with millions of live blocks.
//! Odd addresses and sizes beyond `u32` go to a small locked side table, and so do the rare blocks
//! that carry a credit (a reallocated block of before the window, see `Ledger::reallocated`).

use std::alloc::{alloc_zeroed, Layout};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

const SLOT_SHIFT: u32 = 4;
const LEAF_BITS: u32 = 10;
const MID_BITS: u32 = 16;
const ADDRESS_BITS: u32 = 48;
const ROOT_BITS: u32 = ADDRESS_BITS - SLOT_SHIFT - LEAF_BITS - MID_BITS;
/// tracemalloc's domain of blocks from CPython's allocators (`PyMem_*`, `PyObject_*`).
pub const ALLOCATOR_DOMAIN: u32 = 0;
/// Slot value meaning "the size is in the side table".
const SIDE: u32 = u32::MAX;

/// What the ledger knows of one live block: the bytes it charges to the window, and the bytes of
/// it that were allocated before the window (its credit; 0 for a block allocated inside).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub charged: u64,
    pub credit: u64,
}

impl Entry {
    fn plain(size: u64) -> Self {
        Entry {
            charged: size,
            credit: 0,
        }
    }
}

struct Leaf {
    /// Set when a slot was written since the last reset; only dirty leaves are wiped.
    dirty: AtomicBool,
    slots: [AtomicU32; 1 << LEAF_BITS],
}

struct Mid {
    leaves: [AtomicPtr<Leaf>; 1 << MID_BITS],
}

/// Allocate a zeroed `T` from the system allocator (never from Python's, which we are hooking).
/// Zeroed atomics and null pointers are valid values of every type used here.
fn zeroed<T>() -> *mut T {
    let layout = Layout::new::<T>();
    // SAFETY: the layout is non-zero-sized; all-zero bytes are a valid T for Leaf, Mid and the root.
    let p = unsafe { alloc_zeroed(layout) } as *mut T;
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    p
}

/// Address → size of the blocks allocated inside the current window.
pub struct BlockTable {
    root: Box<[AtomicPtr<Mid>]>,
    dirty: Mutex<Vec<usize>>,
    side: Mutex<HashMap<usize, Entry>>,
    leaves: AtomicU64,
    mids: AtomicU64,
}

impl Default for BlockTable {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockTable {
    pub fn new() -> Self {
        let root = (0..1usize << ROOT_BITS)
            .map(|_| AtomicPtr::new(std::ptr::null_mut()))
            .collect();
        BlockTable {
            root,
            dirty: Mutex::new(Vec::new()),
            side: Mutex::new(HashMap::new()),
            leaves: AtomicU64::new(0),
            mids: AtomicU64::new(0),
        }
    }

    /// The slot for `addr`, creating the path to it when `create`; None for addresses the radix
    /// tree does not cover (odd or beyond 48 bits).
    #[inline(always)]
    fn slot(&self, addr: usize, create: bool) -> Option<&AtomicU32> {
        if addr & ((1 << SLOT_SHIFT) - 1) != 0 || (addr as u64) >> ADDRESS_BITS != 0 {
            return None;
        }
        let index = addr >> SLOT_SHIFT;
        let slot = index & ((1 << LEAF_BITS) - 1);
        let mid_i = (index >> LEAF_BITS) & ((1 << MID_BITS) - 1);
        let root_i = index >> (LEAF_BITS + MID_BITS);
        let mid = self.get_or_create(&self.root[root_i], create, &self.mids)?;
        // SAFETY: nodes are never freed while the table lives.
        let leaf_ptr = unsafe { &(*mid).leaves[mid_i] };
        let leaf = self.get_or_create(leaf_ptr, create, &self.leaves)?;
        // SAFETY: as above.
        let leaf = unsafe { &*leaf };
        if create && !leaf.dirty.load(Relaxed) && !leaf.dirty.swap(true, Relaxed) {
            self.dirty
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(leaf as *const Leaf as usize);
        }
        Some(&leaf.slots[slot])
    }

    #[inline(always)]
    fn get_or_create<T>(
        &self,
        cell: &AtomicPtr<T>,
        create: bool,
        count: &AtomicU64,
    ) -> Option<*mut T> {
        let p = cell.load(std::sync::atomic::Ordering::Acquire);
        if !p.is_null() {
            return Some(p);
        }
        if !create {
            return None;
        }
        let fresh = zeroed::<T>();
        match cell.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        ) {
            Ok(_) => {
                count.fetch_add(1, Relaxed);
                Some(fresh)
            }
            Err(winner) => {
                // SAFETY: `fresh` was allocated above with T's layout and never shared.
                unsafe { std::alloc::dealloc(fresh as *mut u8, Layout::new::<T>()) };
                Some(winner)
            }
        }
    }

    fn side(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Entry>> {
        self.side.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record `addr` with `size`; returns the size it replaces, if any.
    #[inline]
    pub fn insert(&self, addr: usize, size: u64) -> Option<u64> {
        self.insert_entry(addr, Entry::plain(size))
            .map(|old| old.charged)
    }

    /// Record `addr`; returns the entry it replaces, if any. Entries with a credit always go to
    /// the side table, so the hot paths only ever see plain sizes in the slots.
    #[inline]
    pub fn insert_entry(&self, addr: usize, entry: Entry) -> Option<Entry> {
        match self.slot(addr, true) {
            Some(slot) if entry.credit == 0 && entry.charged < (SIDE - 1) as u64 => {
                let old = slot.swap(entry.charged as u32 + 1, Relaxed);
                self.decode(addr, old)
            }
            Some(slot) => {
                let old = slot.swap(SIDE, Relaxed);
                let prev = self.decode(addr, old);
                self.side().insert(addr, entry);
                prev
            }
            None => self.side().insert(addr, entry),
        }
    }

    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        match self.slot(addr, false) {
            Some(slot) => slot.load(Relaxed) != 0,
            None => {
                if addr & ((1 << SLOT_SHIFT) - 1) == 0 && (addr as u64) >> ADDRESS_BITS == 0 {
                    false // in range but no leaf yet: never recorded
                } else {
                    self.side().contains_key(&addr)
                }
            }
        }
    }

    /// Forget `addr`, returning its size if it was recorded.
    #[inline]
    pub fn remove(&self, addr: usize) -> Option<u64> {
        self.remove_entry(addr).map(|old| old.charged)
    }

    /// Forget `addr`, returning its entry if it was recorded.
    #[inline]
    pub fn remove_entry(&self, addr: usize) -> Option<Entry> {
        match self.slot(addr, false) {
            Some(slot) => {
                if slot.load(Relaxed) == 0 {
                    return None;
                }
                let old = slot.swap(0, Relaxed);
                self.decode(addr, old)
            }
            None => {
                if addr & ((1 << SLOT_SHIFT) - 1) == 0 && (addr as u64) >> ADDRESS_BITS == 0 {
                    None
                } else {
                    self.side().remove(&addr)
                }
            }
        }
    }

    #[inline]
    /// The entry a slot held (its side-table entry is taken).
    fn decode(&self, addr: usize, value: u32) -> Option<Entry> {
        match value {
            0 => None,
            SIDE => self.side().remove(&addr),
            v => Some(Entry::plain((v - 1) as u64)),
        }
    }

    /// Forget every block. Costs in proportion to the leaves written since the last clear, not
    /// to the size of the heap.
    pub fn clear(&self) {
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()));
        for leaf in dirty {
            // SAFETY: dirty holds pointers to live leaves, never freed while the table lives.
            let leaf = unsafe { &*(leaf as *const Leaf) };
            for slot in &leaf.slots {
                slot.store(0, Relaxed);
            }
            leaf.dirty.store(false, Relaxed);
        }
        self.side().clear();
    }

    /// Bytes the table itself holds.
    pub fn footprint(&self) -> u64 {
        (self.root.len() * std::mem::size_of::<AtomicPtr<Mid>>()) as u64
            + self.mids.load(Relaxed) * std::mem::size_of::<Mid>() as u64
            + self.leaves.load(Relaxed) * std::mem::size_of::<Leaf>() as u64
    }
}

/// The running totals of a window.
#[derive(Default)]
pub struct Tally {
    current: AtomicU64,
    peak: AtomicU64,
    allocations: AtomicU64,
}

/// Python and native memory live together, while a window counts both (`--memcheck-native`):
/// every ledger's change goes here too, so its peak is the highest the two reached *at the
/// same moment* — at most `peak + native_peak`, less when their peaks came at different times.
static COMBINED: Tally = Tally::new();
static COMBINING: AtomicBool = AtomicBool::new(false);

/// Start counting the combined total from zero. Call it when every ledger is empty (a window
/// opening) and before any of them counts.
pub fn start_combined() {
    COMBINED.current.store(0, Relaxed);
    COMBINED.peak.store(0, Relaxed);
    COMBINING.store(true, Relaxed);
}

/// Stop counting the combined total.
pub fn stop_combined() {
    COMBINING.store(false, Relaxed);
}

/// The combined total's peak, of the last window that counted it.
pub fn combined_peak() -> u64 {
    COMBINED.peak.load(Relaxed)
}

/// What a window measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub current: u64,
    pub peak: u64,
    pub allocations: u64,
}

impl Tally {
    const fn new() -> Self {
        Tally {
            current: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            allocations: AtomicU64::new(0),
        }
    }

    #[inline]
    fn bump(&self, size: u64) {
        let now = self.current.fetch_add(size, Relaxed).wrapping_add(size);
        if now > self.peak.load(Relaxed) {
            self.peak.fetch_max(now, Relaxed);
        }
    }

    #[inline]
    fn add(&self, size: u64) {
        self.bump(size);
        if COMBINING.load(Relaxed) {
            COMBINED.bump(size);
        }
    }

    #[inline]
    fn sub(&self, size: u64) {
        self.current.fetch_sub(size, Relaxed);
        if COMBINING.load(Relaxed) {
            COMBINED.current.fetch_sub(size, Relaxed);
        }
    }
}

/// Blocks, blocks reported by extensions (`PyTraceMalloc_Track`), and totals: tracemalloc's
/// semantics, where a block counts from its allocation inside the window until it is freed.
#[derive(Default)]
pub struct Ledger {
    blocks: BlockTable,
    tracked: Mutex<HashMap<(u32, usize), u64>>,
    tally: Tally,
}

impl Ledger {
    /// A block allocated by the outermost allocator call of a thread. A key that is already
    /// live (a block freed outside our view, its address reused) is replaced, as in tracemalloc.
    #[inline]
    pub fn allocated(&self, addr: usize, size: u64) {
        if let Some(old) = self.blocks.insert(addr, size) {
            self.tally.sub(old);
        }
        self.tally.add(size);
        self.tally.allocations.fetch_add(1, Relaxed);
    }

    /// A block about to be freed or moved; returns its entry if it was counted.
    #[inline]
    pub fn released(&self, addr: usize) -> Option<Entry> {
        let entry = self.blocks.remove_entry(addr)?;
        self.tally.sub(entry.charged);
        Some(entry)
    }

    /// Undo `released` for a block whose realloc failed (the block is still live).
    pub fn restore(&self, addr: usize, entry: Entry) {
        self.blocks.insert_entry(addr, entry);
        // back to where it was before `released`: not a new high
        self.tally.current.fetch_add(entry.charged, Relaxed);
        if COMBINING.load(Relaxed) {
            COMBINED.current.fetch_add(entry.charged, Relaxed);
        }
    }

    /// The new block of a realloc, by the outermost call of a thread. `credit` is how many of
    /// its bytes were allocated before the window: the credit the old block carried, or the size
    /// of an old block the window never saw. The block charges only its size beyond that
    /// credit, so growing a container that existed before the test charges the test with the
    /// growth, not with the whole buffer (where tracemalloc counts the new block in full), and
    /// shrinking it charges nothing. A later realloc or free carries the credit on or drops it.
    #[inline]
    pub fn reallocated(&self, addr: usize, size: u64, credit: u64) {
        if credit == 0 {
            return self.allocated(addr, size);
        }
        if let Some(old) = self.blocks.remove_entry(addr) {
            self.tally.sub(old.charged);
        }
        self.put(addr, size, credit);
        self.tally.allocations.fetch_add(1, Relaxed);
    }

    /// Record a block of `size` bytes of which `credit` predate the window (a free slot).
    fn put(&self, addr: usize, size: u64, credit: u64) {
        let credit = credit.min(size);
        let entry = Entry {
            charged: size - credit,
            credit,
        };
        self.blocks.insert_entry(addr, entry);
        self.tally.add(entry.charged);
    }

    fn tracked(&self) -> std::sync::MutexGuard<'_, HashMap<(u32, usize), u64>> {
        self.tracked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `PyTraceMalloc_Track(domain, ptr, size)`: a buffer an extension reports. Domain 0 is the
    /// allocators' own key space: numpy ≥ 2.5 allocates through `PyMem_RawMalloc` *and* reports
    /// the block, which then replaces the live key instead of counting twice (tracemalloc's rule).
    pub fn track(&self, domain: u32, addr: usize, size: u64) {
        if domain == ALLOCATOR_DOMAIN {
            match self.blocks.remove_entry(addr) {
                // A block reallocated from before the window and then reported keeps its credit.
                Some(old) => {
                    self.tally.sub(old.charged);
                    self.put(addr, size, old.credit);
                }
                None => {
                    self.put(addr, size, 0);
                    self.tally.allocations.fetch_add(1, Relaxed);
                }
            }
            return;
        }
        match self.tracked().insert((domain, addr), size) {
            Some(old) => self.tally.sub(old),
            None => {
                self.tally.allocations.fetch_add(1, Relaxed);
            }
        }
        self.tally.add(size);
    }

    /// `PyTraceMalloc_Untrack(domain, ptr)`.
    pub fn untrack(&self, domain: u32, addr: usize) {
        let old = if domain == ALLOCATOR_DOMAIN {
            self.blocks.remove(addr)
        } else {
            self.tracked().remove(&(domain, addr))
        };
        if let Some(old) = old {
            self.tally.sub(old);
        }
    }

    /// Start a window: forget every block and zero the totals.
    pub fn reset(&self) {
        self.blocks.clear();
        self.tracked().clear();
        self.tally.current.store(0, Relaxed);
        self.tally.peak.store(0, Relaxed);
        self.tally.allocations.store(0, Relaxed);
    }

    pub fn totals(&self) -> Totals {
        Totals {
            current: self.tally.current.load(Relaxed),
            peak: self.tally.peak.load(Relaxed),
            allocations: self.tally.allocations.load(Relaxed),
        }
    }

    /// Bytes of the meter's own bookkeeping.
    pub fn footprint(&self) -> u64 {
        self.blocks.footprint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_records_and_forgets() {
        let t = BlockTable::new();
        assert!(!t.contains(0x1000));
        assert_eq!(t.insert(0x1000, 32), None);
        assert!(t.contains(0x1000));
        assert_eq!(t.insert(0x1000, 64), Some(32));
        assert_eq!(t.remove(0x1000), Some(64));
        assert_eq!(t.remove(0x1000), None);
        // zero-sized blocks are still present
        t.insert(0x2000, 0);
        assert!(t.contains(0x2000));
        assert_eq!(t.remove(0x2000), Some(0));
    }

    #[test]
    fn odd_addresses_high_addresses_and_huge_sizes_use_the_side_table() {
        let t = BlockTable::new();
        for (addr, size) in [(0x1008, 8u64), (1usize << 50, 16), (0x3000, 5 << 32)] {
            assert!(!t.contains(addr));
            assert_eq!(t.insert(addr, size), None);
            assert!(t.contains(addr));
            assert_eq!(t.remove(addr), Some(size));
            assert!(!t.contains(addr));
        }
    }

    #[test]
    fn clear_forgets_everything() {
        let t = BlockTable::new();
        for i in 0..10_000usize {
            t.insert(0x7f00_0000_0000 + i * 4096, i as u64);
        }
        t.insert(0x11, 1);
        t.clear();
        for i in 0..10_000usize {
            assert!(!t.contains(0x7f00_0000_0000 + i * 4096));
        }
        assert!(!t.contains(0x11));
        assert!(t.footprint() > 0);
    }

    #[test]
    fn ledger_follows_tracemalloc_semantics() {
        let l = Ledger::default();
        l.allocated(0x100, 100);
        l.allocated(0x200, 50);
        assert_eq!(
            l.totals(),
            Totals {
                current: 150,
                peak: 150,
                allocations: 2
            }
        );
        // a block freed that was allocated before the window is ignored
        assert_eq!(l.released(0x900), None);
        assert_eq!(l.released(0x100), Some(Entry::plain(100)));
        assert_eq!(l.totals().current, 50);
        assert_eq!(l.totals().peak, 150);
        // a live key allocated again (freed outside our view) is replaced, not added
        l.allocated(0x300, 1000);
        l.allocated(0x300, 1000);
        assert_eq!(
            l.totals(),
            Totals {
                current: 1050,
                peak: 1050,
                allocations: 4
            }
        );
        // extension buffers of their own domain count in the same totals
        l.track(389047, 0x300, 4000);
        assert_eq!(l.totals().current, 5050);
        l.untrack(389047, 0x300);
        l.untrack(389047, 0x300);
        assert_eq!(l.totals().current, 1050);
        // domain 0 is the allocators' key space: a block allocated and also reported counts once
        l.track(ALLOCATOR_DOMAIN, 0x300, 1000);
        assert_eq!(l.totals().current, 1050);
        assert_eq!(l.totals().allocations, 5);
        l.track(ALLOCATOR_DOMAIN, 0x500, 10);
        assert_eq!(l.totals().current, 1060);
        assert_eq!(l.totals().allocations, 6);
        l.untrack(ALLOCATOR_DOMAIN, 0x300);
        assert_eq!(l.totals().current, 60);
        assert_eq!(l.released(0x300), None);
        l.reset();
        assert_eq!(l.totals(), Totals::default());
        assert_eq!(l.released(0x300), None);
    }

    #[test]
    fn a_block_from_before_the_window_charges_its_growth_only() {
        let l = Ledger::default();
        // a list's 800 KB buffer from before the window grows to 900 KB: 100 KB charged
        assert_eq!(l.released(0x1000), None);
        l.reallocated(0x2000, 900_000, 800_000);
        assert_eq!(l.totals().current, 100_000);
        assert_eq!(l.totals().allocations, 1);
        // grown again inside the window: the credit moves with the block
        let old = l.released(0x2000).unwrap();
        assert_eq!(
            old,
            Entry {
                charged: 100_000,
                credit: 800_000
            }
        );
        l.reallocated(0x3000, 1_000_000, old.credit);
        assert_eq!(l.totals().current, 200_000);
        assert_eq!(l.totals().peak, 200_000);
        // shrunk below its credit: charges nothing, never less
        let old = l.released(0x3000).unwrap();
        l.reallocated(0x3000, 500_000, old.credit);
        assert_eq!(l.totals().current, 0);
        // reported to tracemalloc's domain 0 (numpy): replaced, keeping the credit
        l.track(ALLOCATOR_DOMAIN, 0x3000, 600_000);
        assert_eq!(l.totals().current, 100_000);
        // freed: the charge goes, nothing below zero
        assert_eq!(l.released(0x3000).map(|e| e.charged), Some(100_000));
        assert_eq!(l.totals().current, 0);
        assert_eq!(l.totals().peak, 200_000);
        // a failed realloc restores the block with its credit
        l.reallocated(0x4000, 300, 100);
        let old = l.released(0x4000).unwrap();
        assert_eq!(l.totals().current, 0);
        l.restore(0x4000, old);
        assert_eq!(l.totals().current, 200);
        assert_eq!(
            l.released(0x4000),
            Some(Entry {
                charged: 200,
                credit: 100
            })
        );
        // without a credit, the rule is tracemalloc's: the new block in full
        l.reallocated(0x5000, 700, 0);
        assert_eq!(l.totals().current, 700);
    }

    #[test]
    fn threads_share_one_table() {
        let l = std::sync::Arc::new(Ledger::default());
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000usize {
                        let addr = 0x5000_0000 + (t * 10_000 + i) * 16;
                        l.allocated(addr, 16);
                        if i % 2 == 0 {
                            l.released(addr);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(l.totals().current, 4 * 5_000 * 16);
        assert_eq!(l.totals().allocations, 40_000);
    }
}
