//! Counting buffers that extensions report with `PyTraceMalloc_Track` / `PyTraceMalloc_Untrack`.
//!
//! numpy allocates array data with `malloc` and reports it through these two functions, which do
//! nothing unless tracemalloc is tracing. We redirect the imported entries of every loaded shared
//! object (its GOT slots for these symbols) to our own functions, which count the buffer while a
//! window is open and always forward to CPython's, so tracemalloc keeps working for whoever runs it.
//! Objects loaded later are patched at the next window; `dl_iterate_phdr`'s load counter makes the
//! check free when nothing new was loaded. Linux/ELF only; elsewhere extension buffers are not seen.

use std::ffi::{c_int, c_uint};

use super::hooks::{active, ledger};

extern "C" {
    fn PyTraceMalloc_Track(domain: c_uint, ptr: usize, size: usize) -> c_int;
    fn PyTraceMalloc_Untrack(domain: c_uint, ptr: usize) -> c_int;
}

extern "C" fn track(domain: c_uint, ptr: usize, size: usize) -> c_int {
    if active() && super::hooks::counts_here() {
        ledger().track(domain, ptr, size as u64);
    }
    // SAFETY: CPython's own function, reached through our (unpatched) import.
    let forwarded = unsafe { PyTraceMalloc_Track(domain, ptr, size) };
    if active() {
        0
    } else {
        forwarded
    }
}

extern "C" fn untrack(domain: c_uint, ptr: usize) -> c_int {
    if active() {
        ledger().untrack(domain, ptr);
    }
    // SAFETY: as above.
    let forwarded = unsafe { PyTraceMalloc_Untrack(domain, ptr) };
    if active() {
        0
    } else {
        forwarded
    }
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod elf {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Mutex;

    use super::super::elf::{each_object, load_counts};

    /// The loader's (adds, subs) counters at the last scan: unchanged means nothing new to patch.
    static SEEN: Mutex<(u64, u64)> = Mutex::new((0, 0));

    /// Patch objects loaded since the last call. Err with the number of slots that could not
    /// be patched, ever: a failure stays reported for every later window.
    pub fn redirect(track: usize, untrack: usize) -> Result<usize, usize> {
        static FAILED: AtomicUsize = AtomicUsize::new(0);
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        let replacements: [(&[u8], usize); 2] = [
            (b"PyTraceMalloc_Track", track),
            (b"PyTraceMalloc_Untrack", untrack),
        ];
        let wanted = replacements.map(|(name, _)| name);
        let (mut patched, mut failed) = (0, 0);
        let counts = load_counts();
        if counts != *seen {
            // Objects patched before are patched again with the same value: harmless, and
            // simpler than remembering which ones a reload may have replaced.
            each_object(&wanted, &mut |object| {
                // Skip ourselves: our imports must reach CPython's functions.
                if object.contains(track) {
                    return;
                }
                for import in &object.imports {
                    let Some(&(_, value)) = replacements.iter().find(|(n, _)| *n == import.name)
                    else {
                        continue;
                    };
                    // SAFETY: a slot of this object's relocation against the same-signature
                    // function we put there.
                    if unsafe { object.patch(import.slot, value) } {
                        patched += 1;
                    } else {
                        failed += 1;
                    }
                }
            });
            *seen = counts;
            FAILED.fetch_max(failed, Relaxed);
        }
        match FAILED.load(Relaxed) {
            0 => Ok(patched),
            n => Err(n),
        }
    }
}

/// Make loaded extensions report their buffers to us. Cheap when nothing new was loaded. Returns
/// why buffers reported by extensions cannot be counted, if they cannot.
pub(crate) fn redirect_extensions() -> Option<String> {
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    {
        elf::redirect(track as *const () as usize, untrack as *const () as usize)
            .err()
            .map(|n| {
                format!(
                    "{n} imports of PyTraceMalloc_Track/Untrack could not be redirected (mprotect refused): buffers that extensions report are not counted"
                )
            })
    }
    #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
    {
        None
    }
}
