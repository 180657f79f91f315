//! The meter: one measured window around a test's body.
//!
//! The determinism protocol (SPEC §3): the plugin's own bookkeeping (collector statistics, the
//! thread list) comes first; then `gc.freeze()` and a `gc.collect()` (cheap, since everything is
//! frozen; it empties the free lists and the collector's counters) and a type-cache clear. The
//! window is exactly the call of the test function: arguments are laid out for a vectorcall
//! *before* the hooks go in, so not one byte of ours lands in the test's numbers. After the call,
//! `gc.collect()` and a type-cache clear still inside the window, so frees of the test's garbage
//! are seen; then retained is what is still live, and `gc.unfreeze()` hands every object back to
//! the collector, so garbage made outside windows (fixtures) is collected as without the plugin.
//! A real full collection, outside the window, runs when the heap grew since the last one
//! (`Collector::maybe_full_collect`), so a run does not hold more garbage than it would
//! unmeasured, and collections stay cheap.
//!
//! A window is opened and closed by `Window`; `measure` runs a synchronous call inside one, and
//! the plugin opens one around the execution of a coroutine for async tests.

//!
//! The plain part (which meter, what a window measured, the ledger) builds without Python; the
//! window itself and the hooks need the interpreter (`python` feature).

#[cfg(all(feature = "python", target_os = "linux", target_pointer_width = "64"))]
mod elf;
#[cfg(feature = "python")]
mod guard;
#[cfg(feature = "python")]
mod hooks;
pub mod ledger;
#[cfg(feature = "python")]
mod native;
#[cfg(feature = "python")]
pub mod native_sites;
#[cfg(feature = "python")]
mod prior;
#[cfg(feature = "python")]
mod rss;
#[cfg(feature = "python")]
mod track;
#[cfg(feature = "python")]
mod window;

#[cfg(feature = "python")]
pub use window::*;

use crate::baseline::Entry;
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

    /// Whether its figures include the count of allocation calls. tracemalloc and RSS give
    /// sizes only: their `allocations` is 0, which reports show as not counted, not as zero.
    pub fn counts_allocations(self) -> bool {
        self == MeterKind::Python
    }

    /// Of a meter named in a file: an unknown name (a newer version's) is assumed to count.
    pub fn named_counts_allocations(name: &str) -> bool {
        MeterKind::parse(name, "meter").map_or(true, Self::counts_allocations)
    }

    pub fn name(self) -> &'static str {
        match self {
            MeterKind::Python => "python",
            MeterKind::Tracemalloc => "tracemalloc",
            MeterKind::Rss => "rss",
        }
    }
}

/// What one window measured, or what an update settled on from several (`Session::settle`).
/// The one definition: Python sees it as `pytest_memcheck._engine.Measurement`.
#[cfg_attr(
    feature = "python",
    pyo3::pyclass(frozen, get_all, module = "pytest_memcheck._engine")
)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Measurement {
    pub peak: u64,
    pub retained: u64,
    pub allocations: u64,
    /// Objects that only the cycle collector freed.
    pub cycles: u64,
    /// Why the numbers cannot be trusted (the test started tracemalloc, replaced an allocator…);
    /// None for an intact measurement.
    pub disturbed: Option<String>,
    /// The highest values of an unstable test's measurements (`spread.rs`), set only by
    /// `Session::settle`; None for one window's measurement.
    pub peak_max: Option<u64>,
    pub retained_max: Option<u64>,
    /// Native memory (the malloc family called by extensions), when it is counted (`native.rs`).
    pub native_peak: Option<u64>,
    pub native_retained: Option<u64>,
    /// As `peak_max`, for the native figures.
    pub native_peak_max: Option<u64>,
    pub native_retained_max: Option<u64>,
    /// The highest total of python and native memory live at the same moment, when native
    /// memory is counted: informational, not gated (`ledger::start_combined`).
    pub combined_peak: Option<u64>,
}

impl Measurement {
    /// Whether the numbers can be trusted.
    pub fn intact(&self) -> bool {
        self.disturbed.is_none()
    }

    /// The smaller of two measurements of the same test, metric by metric: a one-time cost or a
    /// scheduling accident shows in one of them, a regression in both.
    pub fn least(&self, other: &Measurement) -> Measurement {
        Measurement {
            peak: self.peak.min(other.peak),
            retained: self.retained.min(other.retained),
            allocations: self.allocations.min(other.allocations),
            cycles: self.cycles.min(other.cycles),
            disturbed: self.disturbed.clone().or_else(|| other.disturbed.clone()),
            peak_max: None,
            retained_max: None,
            native_peak: least(self.native_peak, other.native_peak),
            native_retained: least(self.native_retained, other.native_retained),
            native_peak_max: None,
            native_retained_max: None,
            combined_peak: least(self.combined_peak, other.combined_peak),
        }
    }

    /// The figures the gate judges and a baseline records.
    pub fn entry(&self) -> Entry {
        Entry {
            peak: self.peak,
            retained: self.retained,
            allocations: self.allocations,
            cycles: self.cycles,
            peak_max: self.peak_max,
            retained_max: self.retained_max,
            native_peak: self.native_peak,
            native_retained: self.native_retained,
            native_peak_max: self.native_peak_max,
            native_retained_max: self.native_retained_max,
            combined_peak: self.combined_peak,
        }
    }

    /// A settled entry as a measurement, disturbed if any of its runs was.
    pub fn settled(e: Entry, disturbed: Option<String>) -> Measurement {
        Measurement {
            peak: e.peak,
            retained: e.retained,
            allocations: e.allocations,
            cycles: e.cycles,
            disturbed,
            peak_max: e.peak_max,
            retained_max: e.retained_max,
            native_peak: e.native_peak,
            native_retained: e.native_retained,
            native_peak_max: e.native_peak_max,
            native_retained_max: e.native_retained_max,
            combined_peak: e.combined_peak,
        }
    }
}

/// The smaller of two optional figures; one that was not counted stays not counted.
fn least(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        _ => a.or(b),
    }
}
