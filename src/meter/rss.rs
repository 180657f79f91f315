//! The `rss` meter: resident set size from /proc, per test.
//!
//! Writing "5" to /proc/self/clear_refs resets the peak (VmHWM) to the current RSS, so VmHWM after
//! the test is the test's peak. Coarse (pages, and the allocator keeps freed memory resident), but
//! it sees native allocations no Python hook can. Linux only; elsewhere it reads zeros.

#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    pub current: u64,
    pub peak: u64,
}

/// Current and peak RSS in bytes.
pub fn read() -> Rss {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    Rss {
        current: field("VmRSS:"),
        peak: field("VmHWM:"),
    }
}

/// Reset the peak to the current RSS; returns the reading right after.
pub fn reset_peak() -> Rss {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    read()
}
