//! Imported-symbol slots of the loaded ELF objects (64-bit Linux), and writing them.
//!
//! Two meters redirect imports: `track.rs` (numpy's `PyTraceMalloc_Track`) and `native.rs` (the
//! malloc family). Both walk the loader's objects with `dl_iterate_phdr`, read each object's
//! dynamic section for its relocation tables (DT_RELA, DT_REL and the PLT table, whose kind
//! DT_PLTREL gives), and overwrite the slot of every relocation against a wanted symbol name.
//! A slot in a PT_GNU_RELRO page is made writable for the write and read-only again.

use std::ffi::{c_int, c_void, CStr};

use libc::{dl_iterate_phdr, dl_phdr_info, Elf64_Rel, Elf64_Rela, Elf64_Sym, PT_DYNAMIC};
use libc::{PT_GNU_RELRO, PT_LOAD};

#[repr(C)]
struct Elf64Dyn {
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
const SHN_UNDEF: u16 = 0;

/// One relocation against a wanted symbol.
pub(crate) struct Import<'a> {
    pub name: &'a [u8],
    /// The address the relocation writes (a GOT slot, or a data word for a function pointer).
    pub slot: usize,
    /// The object defines the symbol itself (its own calls to its own function).
    pub defined: bool,
}

/// One loaded object, as `visit` callbacks see it.
pub(crate) struct Object<'a> {
    /// Its path as the loader has it (empty for the main program).
    pub name: &'a [u8],
    /// Its first object in the loader's list (the main program).
    pub first: bool,
    segments: Vec<(usize, usize)>,
    relro: Option<(usize, usize)>,
    pub imports: Vec<Import<'a>>,
}

impl Object<'_> {
    /// Whether `addr` lies in one of its loaded segments.
    pub fn contains(&self, addr: usize) -> bool {
        self.segments.iter().any(|&(s, e)| (s..e).contains(&addr))
    }

    /// Its loaded segments: (start, end) addresses.
    pub fn segments(&self) -> &[(usize, usize)] {
        &self.segments
    }

    /// The file name of its path (`libc.so.6`).
    pub fn file_name(&self) -> &[u8] {
        self.name.rsplit(|&b| b == b'/').next().unwrap_or(self.name)
    }

    /// Write `value` into `slot`; false when the page could not be made writable.
    /// SAFETY (caller): `slot` is one of this object's `imports`, and `value` a function of the
    /// same signature as the one it replaces.
    pub unsafe fn patch(&self, slot: usize, value: usize) -> bool {
        patch(slot, value, self.relro)
    }
}

struct Walk<'w> {
    wanted: &'w [&'w [u8]],
    visit: &'w mut dyn FnMut(&Object<'_>),
    index: usize,
}

unsafe extern "C" fn visit(info: *mut dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
    let walk = &mut *(data as *mut Walk<'_>);
    let info = &*info;
    let first = walk.index == 0;
    walk.index += 1;
    let base = info.dlpi_addr as usize;
    let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
    let name = if info.dlpi_name.is_null() {
        &b""[..]
    } else {
        CStr::from_ptr(info.dlpi_name).to_bytes()
    };
    let mut object = Object {
        name,
        first,
        segments: Vec::new(),
        relro: None,
        imports: Vec::new(),
    };
    let mut dynamic = None;
    for ph in phdrs {
        let start = base + ph.p_vaddr as usize;
        match ph.p_type {
            PT_LOAD => object.segments.push((start, start + ph.p_memsz as usize)),
            PT_DYNAMIC => dynamic = Some(start as *const Elf64Dyn),
            PT_GNU_RELRO => object.relro = Some((start, ph.p_memsz as usize)),
            _ => {}
        }
    }
    if let Some(d) = dynamic {
        imports(base, d, walk.wanted, &mut object.imports);
    }
    (walk.visit)(&object);
    0
}

/// The relocations of the object at `base` (dynamic section `d`) against `wanted` names.
unsafe fn imports<'a>(
    base: usize,
    mut d: *const Elf64Dyn,
    wanted: &[&[u8]],
    out: &mut Vec<Import<'a>>,
) {
    let (mut strtab, mut symtab) = (0usize, 0usize);
    // (address, size, entries with addend): DT_RELA, DT_REL, then the PLT table.
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
        return;
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
            let name: &'a [u8] =
                CStr::from_ptr((strtab + sym.st_name as usize) as *const _).to_bytes();
            if wanted.contains(&name) {
                out.push(Import {
                    name,
                    slot: base + offset as usize,
                    defined: sym.st_shndx != SHN_UNDEF,
                });
            }
        }
    }
}

/// Call `visit` with every loaded object and its relocations against `wanted` names, under the
/// loader's lock (no object is loaded or unloaded meanwhile; `visit` must not call `dlopen`).
pub(crate) fn each_object(wanted: &[&[u8]], visit: &mut dyn FnMut(&Object<'_>)) {
    let mut walk = Walk {
        wanted,
        visit,
        index: 0,
    };
    // SAFETY: dl_iterate_phdr hands `visit` the loader's own program headers; `visit` reads
    // only mapped, loader-provided tables.
    unsafe { dl_iterate_phdr(Some(self::visit), &mut walk as *mut Walk<'_> as *mut c_void) };
}

/// The loader's (adds, subs) counters: unchanged means no object was loaded or unloaded.
pub(crate) fn load_counts() -> (u64, u64) {
    unsafe extern "C" fn first(info: *mut dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
        *(data as *mut (u64, u64)) = ((*info).dlpi_adds, (*info).dlpi_subs);
        1
    }
    let mut counts = (0u64, 0u64);
    // SAFETY: `first` writes the counters of the first object into `counts` and stops.
    unsafe { dl_iterate_phdr(Some(first), &mut counts as *mut (u64, u64) as *mut c_void) };
    counts
}

/// Write `value` into the slot at `slot`; false when it could not be made writable.
/// The loader made the pages wholly inside PT_GNU_RELRO read-only (it rounds the end down to
/// a page: a partial last page stays writable); only those are unprotected and protected again.
unsafe fn patch(slot: usize, value: usize, relro: Option<(usize, usize)>) -> bool {
    let page = 4096usize.max(libc::sysconf(libc::_SC_PAGESIZE) as usize);
    let start = slot & !(page - 1);
    let read_only = relro.is_some_and(|relro| loader_protected(start, relro, page));
    if read_only
        && libc::mprotect(
            start as *mut c_void,
            page,
            libc::PROT_READ | libc::PROT_WRITE,
        ) != 0
    {
        return false;
    }
    // An aligned word: other threads calling through the slot see the old or the new function.
    std::ptr::write_volatile(slot as *mut usize, value);
    if read_only {
        // Failing to protect it again leaves a writable page, not a wrong count.
        libc::mprotect(start as *mut c_void, page, libc::PROT_READ);
    }
    true
}

/// Whether the loader made the page at `page_start` read-only for a PT_GNU_RELRO segment
/// `(start, len)`: it protects whole pages from the segment's start, rounded down, to its end,
/// rounded down, so a last partial page stays writable.
pub(crate) fn loader_protected(
    page_start: usize,
    (start, len): (usize, usize),
    page: usize,
) -> bool {
    let first = start & !(page - 1);
    let end = (start + len) & !(page - 1);
    (first..end).contains(&page_start)
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

    #[test]
    fn finds_imports_of_this_test_binary() {
        // The test binary (or a library it loads) imports malloc somewhere.
        let mut found = 0;
        super::each_object(&[b"malloc"], &mut |o| {
            found += o.imports.iter().filter(|i| !i.defined).count()
        });
        assert!(found > 0);
        assert_ne!(super::load_counts(), (0, 0));
    }
}
