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
    use std::ffi::{c_int, c_void, CStr};
    use std::sync::Mutex;

    use libc::{
        dl_iterate_phdr, dl_phdr_info, Elf64_Rel, Elf64_Rela, Elf64_Sym, PT_DYNAMIC, PT_GNU_RELRO,
    };

    #[repr(C)]
    struct Elf64_Dyn {
        d_tag: i64,
        d_un: u64,
    }

    const DT_NULL: i64 = 0;
    const DT_PLTRELSZ: i64 = 2;
    const DT_STRTAB: i64 = 5;
    const DT_SYMTAB: i64 = 6;
    const DT_RELA: i64 = 7;
    const DT_RELASZ: i64 = 8;
    const DT_REL: i64 = 17;
    const DT_RELSZ: i64 = 18;
    const DT_PLTREL: i64 = 20;
    const DT_JMPREL: i64 = 23;

    /// The loader's (adds, subs) counters at the last scan: unchanged means nothing new to patch.
    static SEEN: Mutex<(u64, u64)> = Mutex::new((0, 0));

    struct Scan {
        replacements: [(&'static [u8], usize); 2],
        own: usize,
        counts: Option<(u64, u64)>,
        patched: usize,
        /// Slots we could not write (mprotect refused).
        failed: usize,
    }

    unsafe extern "C" fn first(info: *mut dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
        let scan = &mut *(data as *mut Scan);
        scan.counts = Some(((*info).dlpi_adds, (*info).dlpi_subs));
        1
    }

    unsafe extern "C" fn visit(info: *mut dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
        let scan = &mut *(data as *mut Scan);
        let info = &*info;
        let base = info.dlpi_addr as usize;
        let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
        // Skip ourselves: our imports must reach CPython's functions.
        let own = phdrs.iter().any(|ph| {
            let start = base + ph.p_vaddr as usize;
            ph.p_type == libc::PT_LOAD && (start..start + ph.p_memsz as usize).contains(&scan.own)
        });
        if own {
            return 0;
        }
        let mut relro = None;
        let mut dynamic = None;
        for ph in phdrs {
            if ph.p_type == PT_DYNAMIC {
                dynamic = Some((base + ph.p_vaddr as usize) as *const Elf64_Dyn);
            } else if ph.p_type == PT_GNU_RELRO {
                relro = Some((base + ph.p_vaddr as usize, ph.p_memsz as usize));
            }
        }
        let Some(mut d) = dynamic else { return 0 };
        let (mut strtab, mut symtab) = (0usize, 0usize);
        // (address, size, entries with addend): DT_RELA, DT_REL, then the PLT table, whose kind
        // DT_PLTREL gives (RELA on x86_64 and aarch64, REL elsewhere).
        let mut tables = [(0usize, 0usize, true), (0, 0, false), (0, 0, true)];
        // Some loaders relocate these addresses in place, some do not.
        let fix = |p: u64| {
            if (p as usize) < base {
                base + p as usize
            } else {
                p as usize
            }
        };
        while (*d).d_tag != DT_NULL {
            let v = (*d).d_un;
            match (*d).d_tag {
                DT_STRTAB => strtab = fix(v),
                DT_SYMTAB => symtab = fix(v),
                DT_RELA => tables[0].0 = fix(v),
                DT_RELASZ => tables[0].1 = v as usize,
                DT_REL => tables[1].0 = fix(v),
                DT_RELSZ => tables[1].1 = v as usize,
                DT_JMPREL => tables[2].0 = fix(v),
                DT_PLTRELSZ => tables[2].1 = v as usize,
                DT_PLTREL => tables[2].2 = v as i64 == DT_RELA,
                _ => {}
            }
            d = d.add(1);
        }
        if strtab == 0 || symtab == 0 {
            return 0;
        }
        for (table, size, with_addend) in tables {
            if table == 0 {
                continue;
            }
            // (r_offset, r_info) of each entry; the two layouts share their first two fields.
            let entries: Vec<(u64, u64)> = if with_addend {
                std::slice::from_raw_parts(
                    table as *const Elf64_Rela,
                    size / std::mem::size_of::<Elf64_Rela>(),
                )
                .iter()
                .map(|r| (r.r_offset, r.r_info))
                .collect()
            } else {
                std::slice::from_raw_parts(
                    table as *const Elf64_Rel,
                    size / std::mem::size_of::<Elf64_Rel>(),
                )
                .iter()
                .map(|r| (r.r_offset, r.r_info))
                .collect()
            };
            for (offset, info) in entries {
                let sym_index = (info >> 32) as usize;
                if sym_index == 0 {
                    continue;
                }
                let sym = &*((symtab as *const Elf64_Sym).add(sym_index));
                let name = CStr::from_ptr((strtab + sym.st_name as usize) as *const _).to_bytes();
                for (wanted, replacement) in scan.replacements {
                    if name == wanted {
                        let slot = base + offset as usize;
                        if patch(slot, replacement, relro) {
                            scan.patched += 1;
                        } else {
                            scan.failed += 1;
                        }
                    }
                }
            }
        }
        0
    }

    /// Write `value` into the GOT slot at `slot`; false when it could not be made writable.
    /// The loader made the pages wholly inside PT_GNU_RELRO read-only (it rounds the end down to
    /// a page: a partial last page stays writable); only those are unprotected and protected again.
    unsafe fn patch(slot: usize, value: usize, relro: Option<(usize, usize)>) -> bool {
        let page = 4096usize.max(libc::sysconf(libc::_SC_PAGESIZE) as usize);
        let start = slot & !(page - 1);
        let read_only = relro.is_some_and(|relro| super::loader_protected(start, relro, page));
        if read_only
            && libc::mprotect(
                start as *mut c_void,
                page,
                libc::PROT_READ | libc::PROT_WRITE,
            ) != 0
        {
            return false;
        }
        std::ptr::write_volatile(slot as *mut usize, value);
        if read_only {
            // Failing to protect it again leaves a writable page, not a wrong count.
            libc::mprotect(start as *mut c_void, page, libc::PROT_READ);
        }
        true
    }

    /// Patch objects loaded since the last call. Err with the number of slots that could not
    /// be patched, ever: a failure stays reported for every later window.
    pub fn redirect(track: usize, untrack: usize) -> Result<usize, usize> {
        static FAILED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        let mut scan = Scan {
            replacements: [
                (b"PyTraceMalloc_Track", track),
                (b"PyTraceMalloc_Untrack", untrack),
            ],
            own: track,
            counts: None,
            patched: 0,
            failed: 0,
        };
        // SAFETY: dl_iterate_phdr hands us the loader's own program headers.
        unsafe { dl_iterate_phdr(Some(first), &mut scan as *mut Scan as *mut c_void) };
        let counts = scan.counts.unwrap_or_default();
        if counts != *seen {
            // Objects patched before are patched again with the same value: harmless, and
            // simpler than remembering which ones a reload may have replaced.
            // SAFETY: as above; `visit` reads only mapped, loader-provided tables.
            unsafe { dl_iterate_phdr(Some(visit), &mut scan as *mut Scan as *mut c_void) };
            *seen = counts;
            FAILED.fetch_max(scan.failed, std::sync::atomic::Ordering::Relaxed);
        }
        match FAILED.load(std::sync::atomic::Ordering::Relaxed) {
            0 => Ok(scan.patched),
            n => Err(n),
        }
    }
}

/// Whether the loader made the page at `page_start` read-only for a PT_GNU_RELRO segment
/// `(start, len)`: it protects whole pages from the segment's start, rounded down, to its end,
/// rounded down, so a last partial page stays writable.
#[cfg_attr(
    not(all(target_os = "linux", target_pointer_width = "64")),
    allow(dead_code)
)]
fn loader_protected(page_start: usize, (start, len): (usize, usize), page: usize) -> bool {
    let first = start & !(page - 1);
    let end = (start + len) & !(page - 1);
    (first..end).contains(&page_start)
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

#[cfg(test)]
mod tests {
    use super::loader_protected;

    #[test]
    fn relro_protects_whole_pages_only() {
        let page = 4096;
        // A segment from 0x1010 to 0x3800: pages 0x1000 and 0x2000 are read-only, 0x3000
        // (partial: the loader rounds the end down) stays writable, as do pages outside.
        let relro = (0x1010, 0x27f0);
        assert!(loader_protected(0x1000, relro, page));
        assert!(loader_protected(0x2000, relro, page));
        assert!(!loader_protected(0x3000, relro, page));
        assert!(!loader_protected(0x0000, relro, page));
        assert!(!loader_protected(0x4000, relro, page));
        // A segment ending exactly on a page boundary protects that last page.
        assert!(loader_protected(0x1000, (0x1000, 0x1000), page));
        assert!(!loader_protected(0x2000, (0x1000, 0x1000), page));
    }
}
